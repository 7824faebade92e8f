//! The OpenWrt packages linkpool ships, and writing them as `.ipk` files.
//!
//! An `.ipk` is written here the way OpenWrt's `scripts/ipkg-build` writes it: a gzip'd
//! GNU tar of `./debian-binary`, `./data.tar.gz` and `./control.tar.gz`, names sorted,
//! numeric owner root, one fixed mtime, `Installed-Size` = the byte length of the
//! uncompressed data tar (what opkg compares with free flash). nfpm was tried first: it
//! writes `Installed-Size` in KiB and drops a user-given one, which would make opkg
//! underestimate the space needed by 1024 times, on routers where flash is what runs out.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::family::Family;
use crate::{Result, workspace_root};

/// Which architectures a package is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arch {
    /// One package per router family, holding that family's binaries.
    PerFamily,
    /// One package for every router (`Architecture: all`): scripts, LuCI views.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for luci-app-linkpool (a later issue); tested now"
        )
    )]
    All,
}

/// Where an installed file comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A binary of the family build (`target/cross/TRIPLE/PROFILE/NAME`).
    Binary(&'static str),
    /// A file of the repository, relative to the workspace root.
    Repo(&'static str),
    /// Every file under a repository directory, installed below `dest` (a LuCI app's
    /// `htdocs/` → `/www`), modes kept as 0755 for executables and 0644 otherwise.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for luci-app-linkpool (a later issue); tested now"
        )
    )]
    RepoTree(&'static str),
}

/// One file (or tree) a package installs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Install {
    /// Where it comes from.
    pub(crate) source: Source,
    /// Absolute path on the router (a directory for `RepoTree`).
    pub(crate) dest: &'static str,
    /// File mode, as OpenWrt's INSTALL_BIN (0755), INSTALL_CONF (0600), INSTALL_DATA (0644).
    pub(crate) mode: u32,
    /// Listed in `conffiles`: opkg keeps the user's version on upgrade.
    pub(crate) conffile: bool,
}

/// An OpenWrt package: control fields and contents.
#[derive(Debug)]
pub(crate) struct PackageSpec {
    /// `Package:`.
    pub(crate) name: &'static str,
    /// Built per family or once for all.
    pub(crate) arch: Arch,
    /// OpenWrt's PKG_RELEASE: the version is `CARGO_PKG_VERSION-rRELEASE`.
    pub(crate) release: u32,
    /// `Depends:` (opkg package names).
    pub(crate) depends: &'static [&'static str],
    /// `Section:`.
    pub(crate) section: &'static str,
    /// `Source:`: where the package's Makefile lives in a feed, as the SDK writes it.
    pub(crate) feed_path: &'static str,
    /// `Description:`, may span lines.
    pub(crate) description: &'static str,
    /// What it installs.
    pub(crate) files: &'static [Install],
}

const BIN: u32 = 0o755;
const CONF: u32 = 0o600;
const DATA: u32 = 0o644;

/// Everything linkpool ships for OpenWrt. A LuCI app is one more entry with
/// `arch: Arch::All` and `RepoTree` sources.
pub(crate) const PACKAGES: &[PackageSpec] = &[PackageSpec {
    name: "linkpool",
    arch: Arch::PerFamily,
    release: 1,
    // Static binaries here need no libc package; the SDK build (dynamic musl) adds `libc`.
    depends: &["kmod-tun", "ip-full", "firewall4", "kmod-nft-nat"],
    section: "net",
    feed_path: "feeds/linkpool/linkpool",
    description: "linkpool lets the routers of a community Wi-Fi co-op pool their members'\n\
                  Internet uplinks: LAN traffic is sealed with Noise sessions and spread over\n\
                  the router's own WAN and its neighbours' WANs to the co-op's remote proxy.",
    files: &[
        Install {
            source: Source::Binary("linkpool"),
            dest: "/usr/sbin/linkpool",
            mode: BIN,
            conffile: false,
        },
        Install {
            source: Source::Repo("openwrt/linkpool/files/linkpool.config"),
            dest: "/etc/config/linkpool",
            mode: CONF,
            conffile: true,
        },
        Install {
            source: Source::Repo("openwrt/linkpool/files/linkpool.init"),
            dest: "/etc/init.d/linkpool",
            mode: BIN,
            conffile: false,
        },
        Install {
            source: Source::Repo("openwrt/linkpool/files/linkpool.uci-defaults"),
            dest: "/etc/uci-defaults/90-linkpool",
            mode: BIN,
            conffile: false,
        },
        Install {
            source: Source::Repo("openwrt/linkpool/files/linkpool.keep"),
            dest: "/lib/upgrade/keep.d/linkpool",
            mode: DATA,
            conffile: false,
        },
    ],
}];

/// The license of every package: the workspace's.
pub(crate) const LICENSE: &str = "Apache-2.0 OR MIT";
/// `Maintainer:` of every package.
pub(crate) const MAINTAINER: &str = "linkpool co-op developers <dev@linkpool.invalid>";

/// OpenWrt's standard postinst: enable and start init scripts, run uci-defaults.
pub(crate) const POSTINST: &str = "#!/bin/sh\n\
[ \"${IPKG_NO_SCRIPT}\" = \"1\" ] && exit 0\n\
[ -s \"${IPKG_INSTROOT}/lib/functions.sh\" ] || exit 0\n\
. \"${IPKG_INSTROOT}/lib/functions.sh\"\n\
default_postinst \"$0\" \"$@\"\n";

/// OpenWrt's standard prerm: stop and disable init scripts.
pub(crate) const PRERM: &str = "#!/bin/sh\n\
[ -s \"${IPKG_INSTROOT}/lib/functions.sh\" ] || exit 0\n\
. \"${IPKG_INSTROOT}/lib/functions.sh\"\n\
default_prerm \"$0\" \"$@\"\n";

/// A file ready to go into `data.tar.gz`.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Absolute path on the router.
    pub(crate) path: String,
    /// Mode bits.
    pub(crate) mode: u32,
    /// Contents.
    pub(crate) bytes: Vec<u8>,
    /// Listed in conffiles.
    pub(crate) conffile: bool,
}

impl PackageSpec {
    /// `VERSION-rRELEASE`, OpenWrt's version format since 21.02.
    pub(crate) fn version(&self) -> String {
        format!("{}-r{}", env!("CARGO_PKG_VERSION"), self.release)
    }

    /// The `Architecture:` value for a family (or `all`).
    pub(crate) fn arch_name(&self, family: Option<&Family>) -> Result<&'static str> {
        match (self.arch, family) {
            (Arch::All, _) => Ok("all"),
            (Arch::PerFamily, Some(f)) => Ok(f.arch),
            (Arch::PerFamily, None) => {
                Err(format!("package {} is built per family: give a target", self.name).into())
            }
        }
    }

    /// `NAME_VERSION_ARCH.ipk`.
    pub(crate) fn file_name(&self, arch: &str) -> String {
        format!("{}_{}_{arch}.ipk", self.name, self.version())
    }

    /// Reads every installed file: binaries from `binary_dir`, the rest from the repository.
    pub(crate) fn collect(&self, root: &Path, binary_dir: Option<&Path>) -> Result<Vec<DataFile>> {
        let mut out = Vec::new();
        for install in self.files {
            match install.source {
                Source::Binary(name) => {
                    let dir = binary_dir
                        .ok_or_else(|| format!("package {} needs built binaries", self.name))?;
                    let path = dir.join(name);
                    let bytes = fs::read(&path)
                        .map_err(|e| format!("reading {}: {e} (build it first)", path.display()))?;
                    out.push(DataFile {
                        path: install.dest.into(),
                        mode: install.mode,
                        bytes,
                        conffile: install.conffile,
                    });
                }
                Source::Repo(rel) => {
                    let path = root.join(rel);
                    let bytes =
                        fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                    out.push(DataFile {
                        path: install.dest.into(),
                        mode: install.mode,
                        bytes,
                        conffile: install.conffile,
                    });
                }
                Source::RepoTree(rel) => {
                    let dir = root.join(rel);
                    let mut files = Vec::new();
                    walk(&dir, &mut files)?;
                    for file in files {
                        let relative = file.strip_prefix(&dir).expect("walked below dir");
                        let bytes = fs::read(&file)
                            .map_err(|e| format!("reading {}: {e}", file.display()))?;
                        let executable = is_executable(&file)?;
                        out.push(DataFile {
                            path: format!(
                                "{}/{}",
                                install.dest.trim_end_matches('/'),
                                relative.to_string_lossy()
                            ),
                            mode: if executable { 0o755 } else { 0o644 },
                            bytes,
                            conffile: install.conffile,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The `control` file.
    pub(crate) fn control(&self, arch: &str, installed_size: u64) -> String {
        let mut description = String::new();
        for (i, line) in self.description.lines().enumerate() {
            let line = line.trim();
            if i > 0 {
                description.push_str("\n ");
            }
            description.push_str(if line.is_empty() { "." } else { line });
        }
        format!(
            "Package: {}\nVersion: {}\nDepends: {}\nSource: {}\nSourceName: {}\nLicense: {LICENSE}\n\
             Section: {}\nMaintainer: {MAINTAINER}\nArchitecture: {arch}\nInstalled-Size: {installed_size}\n\
             Description: {description}\n",
            self.name,
            self.version(),
            self.depends.join(", "),
            self.feed_path,
            self.name,
            self.section,
        )
    }

    /// Writes the package for `family` (None for `Architecture: all`) into `out_dir`.
    pub(crate) fn write_ipk(
        &self,
        family: Option<&Family>,
        profile: &str,
        out_dir: &Path,
        mtime: u64,
    ) -> Result<PathBuf> {
        let arch = self.arch_name(family)?;
        let binary_dir = family.map(|f| f.out_dir(profile));
        let files = self.collect(&workspace_root(), binary_dir.as_deref())?;
        let bytes = build_ipk(self, arch, &files, mtime)?;
        fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
        let path = out_dir.join(self.file_name(arch));
        fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| format!("reading directory {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading directory {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?
        } else {
            out.push(path)
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(meta.permissions().mode() & 0o111 != 0)
}

/// Appends one entry to a tar in ipkg-build's style (GNU format, numeric root owner).
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    bytes: &[u8],
    is_dir: bool,
    mtime: u64,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(if is_dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(bytes.len() as u64);
    // The name is written as given: the tar crate would drop the leading "./" that
    // ipkg-build's entries carry. Our paths are short enough for the 100-byte field.
    let name = &mut header.as_old_mut().name;
    if path.len() >= name.len() {
        return Err(format!("path {path} is too long for a tar header").into());
    }
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_cksum();
    tar.append(&header, bytes)
        .map_err(|e| format!("adding {path} to a tar: {e}"))?;
    Ok(())
}

fn finish(tar: tar::Builder<Vec<u8>>) -> Result<Vec<u8>> {
    Ok(tar
        .into_inner()
        .map_err(|e| format!("finishing a tar: {e}"))?)
}

/// gzip without a file name or time stamp in its header (`gzip -n`), best compression.
pub(crate) fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).map_err(|e| format!("gzip: {e}"))?;
    Ok(encoder.finish().map_err(|e| format!("gzip: {e}"))?)
}

/// The data tar: every parent directory, then the files, in name order.
pub(crate) fn data_tar(files: &[DataFile], mtime: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Option<&DataFile>)> = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let mut parent = Path::new(&file.path).parent();
        while let Some(dir) = parent {
            if dir != Path::new("/") {
                dirs.insert(format!(".{}/", dir.display()));
            }
            parent = dir.parent();
        }
        entries.push((format!(".{}", file.path), Some(file)));
    }
    entries.extend(dirs.into_iter().map(|d| (d, None)));
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tar = tar::Builder::new(Vec::new());
    for (path, file) in entries {
        match file {
            Some(file) => append(&mut tar, &path, file.mode, &file.bytes, false, mtime)?,
            None => append(&mut tar, &path, 0o755, &[], true, mtime)?,
        }
    }
    finish(tar)
}

/// Assembles an `.ipk` from its parts.
pub(crate) fn build_ipk(
    spec: &PackageSpec,
    arch: &str,
    files: &[DataFile],
    mtime: u64,
) -> Result<Vec<u8>> {
    let data = data_tar(files, mtime)?;
    let control = spec.control(arch, data.len() as u64);
    let conffiles: String = files
        .iter()
        .filter(|f| f.conffile)
        .map(|f| format!("{}\n", f.path))
        .collect();

    let mut control_tar = tar::Builder::new(Vec::new());
    if !conffiles.is_empty() {
        append(
            &mut control_tar,
            "./conffiles",
            0o644,
            conffiles.as_bytes(),
            false,
            mtime,
        )?;
    }
    append(
        &mut control_tar,
        "./control",
        0o644,
        control.as_bytes(),
        false,
        mtime,
    )?;
    append(
        &mut control_tar,
        "./postinst",
        0o755,
        POSTINST.as_bytes(),
        false,
        mtime,
    )?;
    append(
        &mut control_tar,
        "./prerm",
        0o755,
        PRERM.as_bytes(),
        false,
        mtime,
    )?;
    let control_tar = finish(control_tar)?;

    let mut outer = tar::Builder::new(Vec::new());
    append(&mut outer, "./debian-binary", 0o644, b"2.0\n", false, mtime)?;
    append(
        &mut outer,
        "./data.tar.gz",
        0o644,
        &gzip(&data)?,
        false,
        mtime,
    )?;
    append(
        &mut outer,
        "./control.tar.gz",
        0o644,
        &gzip(&control_tar)?,
        false,
        mtime,
    )?;
    gzip(&finish(outer)?)
}

/// The time stamp of every archive entry: $SOURCE_DATE_EPOCH, else the last commit's time,
/// so that rebuilding the same commit gives the same bytes.
pub(crate) fn source_date_epoch() -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return epoch;
    }
    std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Finds a package spec by name.
pub(crate) fn find(name: &str) -> Option<&'static PackageSpec> {
    PACKAGES.iter().find(|p| p.name == name)
}
