//! Tests of package writing and checking, and of the tables against the OpenWrt Makefile
//! and Cross.toml. The `.ipk` tests use synthetic ELF binaries, so they need no cross build.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::elf::synth::Synth;
use crate::elf::{EM_MIPS, EM_X86_64};
use crate::family::{self, FAMILIES};
use crate::ipk;
use crate::package::{self, Arch, DataFile, Install, PACKAGES, PackageSpec, Source};
use crate::workspace_root;

const MTIME: u64 = 1_767_225_600;

fn linkpool() -> &'static PackageSpec {
    package::find("linkpool").expect("linkpool package")
}

/// A scratch directory of this test process, removed first if left over.
fn scratch(name: &str) -> PathBuf {
    // Unique per call: tests run in parallel and several use the same family.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xtask-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The linkpool package's files with a synthetic binary for `family_arch`.
fn linkpool_files(family_arch: &str) -> Vec<DataFile> {
    let family = family::find(family_arch).unwrap();
    let bits = if family.triple.starts_with("x86_64") || family.triple.starts_with("aarch64") {
        64
    } else {
        32
    };
    let mut synth = Synth::new(bits, family.big_endian, family.elf_machine);
    if family.elf_machine == EM_MIPS {
        synth.mips_fp_abi = Some(3);
    }
    let dir = scratch(&format!("bin-{family_arch}"));
    std::fs::write(dir.join("linkpool"), synth.build()).unwrap();
    let files = linkpool().collect(&workspace_root(), Some(&dir)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    files
}

fn good_ipk(arch: &str) -> (Vec<u8>, String) {
    let bytes = package::build_ipk(linkpool(), arch, &linkpool_files(arch), MTIME).unwrap();
    (bytes, linkpool().file_name(arch))
}

#[test]
fn written_package_reads_back_clean_for_every_family() {
    for family in FAMILIES {
        let (bytes, name) = good_ipk(family.arch);
        let ipk = ipk::parse(&bytes, &name).unwrap();
        assert_eq!(ipk.problems(), Vec::<String>::new(), "{name}");
        assert_eq!(
            ipk.differences(linkpool(), family.arch),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(ipk.field("Architecture"), Some(family.arch));
    }
}

#[test]
fn control_has_openwrt_fields_and_installed_size_in_bytes() {
    let (bytes, name) = good_ipk("mipsel_24kc");
    let ipk = ipk::parse(&bytes, &name).unwrap();
    assert_eq!(
        name,
        format!("linkpool_{}-r1_mipsel_24kc.ipk", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(ipk.field("Package"), Some("linkpool"));
    assert_eq!(
        ipk.field("Version"),
        Some(format!("{}-r1", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        ipk.field("Depends"),
        Some("kmod-tun, ip-full, firewall4, kmod-nft-nat")
    );
    assert_eq!(ipk.field("Source"), Some("feeds/linkpool/linkpool"));
    assert_eq!(ipk.field("License"), Some("Apache-2.0 OR MIT"));
    assert_eq!(ipk.field("Section"), Some("net"));
    // Installed-Size is the uncompressed data tar, a multiple of tar's 512-byte blocks.
    let size: u64 = ipk.field("Installed-Size").unwrap().parse().unwrap();
    assert_eq!(size, ipk.data_tar_len);
    assert_eq!(size % 512, 0);
    // Multi-line description: continuation lines start with a space.
    assert!(
        ipk.control_text
            .contains("\nDescription: linkpool lets the routers"),
        "{}",
        ipk.control_text
    );
    assert!(
        ipk.control_text.contains("\n Internet uplinks:"),
        "{}",
        ipk.control_text
    );
    assert_eq!(ipk.conffiles, ["/etc/config/linkpool"]);
    assert!(
        ipk.scripts["postinst"]
            .text
            .contains("default_postinst \"$0\" \"$@\"")
    );
    assert!(
        ipk.scripts["prerm"]
            .text
            .contains("default_prerm \"$0\" \"$@\"")
    );
    let files = ipk.files();
    assert_eq!(files["/usr/sbin/linkpool"].mode & 0o7777, 0o755);
    assert_eq!(files["/etc/config/linkpool"].mode & 0o7777, 0o600);
    assert_eq!(files["/etc/uci-defaults/90-linkpool"].mode & 0o7777, 0o755);
    // Parent directories are in the archive, as ipkg-build's tar of the tree has them.
    let dirs: Vec<_> = ipk
        .data
        .iter()
        .filter(|e| e.is_dir)
        .map(|e| e.path.as_str())
        .collect();
    assert!(
        dirs.contains(&"./etc/") && dirs.contains(&"./usr/sbin/"),
        "{dirs:?}"
    );
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let (a, _) = good_ipk("mips_24kc");
    let (b, _) = good_ipk("mips_24kc");
    assert!(a == b, "two builds of the same package differ");
}

// --- defects the checker must catch --------------------------------------------------

fn tar_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_size(bytes.len() as u64);
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, *bytes).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Takes a good package apart so one piece can be spoiled, then puts it back together.
struct Pieces {
    debian_binary: Vec<u8>,
    control: String,
    conffiles: String,
    postinst: (u32, String),
    prerm: (u32, String),
    data_tar: Vec<u8>,
}

impl Pieces {
    fn of(arch: &str) -> Pieces {
        let files = linkpool_files(arch);
        let data_tar = package::data_tar(&files, MTIME).unwrap();
        Pieces {
            debian_binary: b"2.0\n".to_vec(),
            control: linkpool().control(arch, data_tar.len() as u64),
            conffiles: "/etc/config/linkpool\n".into(),
            postinst: (0o755, package::POSTINST.into()),
            prerm: (0o755, package::PRERM.into()),
            data_tar,
        }
    }

    fn problems(&self, name: &str) -> Vec<String> {
        let control_tar = tar_of(&[
            ("./control", 0o644, self.control.as_bytes()),
            ("./conffiles", 0o644, self.conffiles.as_bytes()),
            ("./postinst", self.postinst.0, self.postinst.1.as_bytes()),
            ("./prerm", self.prerm.0, self.prerm.1.as_bytes()),
        ]);
        let outer = tar_of(&[
            ("./debian-binary", 0o644, &self.debian_binary),
            (
                "./data.tar.gz",
                0o644,
                &package::gzip(&self.data_tar).unwrap(),
            ),
            (
                "./control.tar.gz",
                0o644,
                &package::gzip(&control_tar).unwrap(),
            ),
        ]);
        let ipk = ipk::parse(&package::gzip(&outer).unwrap(), name).unwrap();
        let mut problems = ipk.problems();
        problems.extend(ipk.differences(linkpool(), "mipsel_24kc"));
        problems
    }
}

fn assert_caught(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:?}"
    );
}

fn mipsel_name() -> String {
    linkpool().file_name("mipsel_24kc")
}

#[test]
fn unspoiled_pieces_pass() {
    assert_eq!(
        Pieces::of("mipsel_24kc").problems(&mipsel_name()),
        Vec::<String>::new()
    );
}

#[test]
fn catches_every_missing_required_field() {
    for field in ipk::REQUIRED_FIELDS {
        let mut pieces = Pieces::of("mipsel_24kc");
        pieces.control = pieces
            .control
            .lines()
            .filter(|l| !l.starts_with(&format!("{field}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        if *field == "Description" {
            // Its continuation lines would now hang off the previous field.
            pieces.control = pieces
                .control
                .lines()
                .filter(|l| !l.starts_with(' '))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        assert_caught(
            &pieces.problems(&mipsel_name()),
            &format!("no {field} field"),
        );
    }
}

#[test]
fn catches_wrong_installed_size() {
    let mut pieces = Pieces::of("mipsel_24kc");
    let size = pieces.data_tar.len();
    pieces.control = pieces.control.replace(
        &format!("Installed-Size: {size}"),
        &format!("Installed-Size: {}", size / 1024),
    );
    assert_caught(&pieces.problems(&mipsel_name()), "Installed-Size is");
}

#[test]
fn catches_scripts_that_skip_openwrt_defaults() {
    let mut pieces = Pieces::of("mipsel_24kc");
    pieces.postinst.1 = "#!/bin/sh\n/etc/init.d/linkpool enable\n".into();
    pieces.prerm.0 = 0o644;
    let problems = pieces.problems(&mipsel_name());
    assert_caught(
        &problems,
        "postinst does not source /lib/functions.sh and call default_postinst",
    );
    assert_caught(&problems, "prerm is not executable");
}

#[test]
fn catches_conffile_not_in_data_and_bad_debian_binary() {
    let mut pieces = Pieces::of("mipsel_24kc");
    pieces.conffiles.push_str("/etc/linkpool/member.bundle\n");
    pieces.debian_binary = b"2.1\n".to_vec();
    let problems = pieces.problems(&mipsel_name());
    assert_caught(
        &problems,
        "conffile /etc/linkpool/member.bundle is not in data.tar.gz",
    );
    assert_caught(&problems, "debian-binary is");
}

#[test]
fn catches_binary_for_another_architecture() {
    let mut pieces = Pieces::of("mipsel_24kc");
    let mut files = linkpool_files("mipsel_24kc");
    let binary = files
        .iter_mut()
        .find(|f| f.path == "/usr/sbin/linkpool")
        .unwrap();
    binary.bytes = Synth::new(64, false, EM_X86_64).build();
    pieces.data_tar = package::data_tar(&files, MTIME).unwrap();
    pieces.control = linkpool().control("mipsel_24kc", pieces.data_tar.len() as u64);
    assert_caught(
        &pieces.problems(&mipsel_name()),
        "/usr/sbin/linkpool is for ELF machine 62",
    );
}

#[test]
fn catches_hard_float_dynamic_unstripped_mips_binary() {
    let mut pieces = Pieces::of("mipsel_24kc");
    let mut files = linkpool_files("mipsel_24kc");
    let mut synth = Synth::new(32, false, EM_MIPS);
    synth.mips_fp_abi = Some(1);
    synth.interp = true;
    synth.symtab = true;
    files
        .iter_mut()
        .find(|f| f.path == "/usr/sbin/linkpool")
        .unwrap()
        .bytes = synth.build();
    pieces.data_tar = package::data_tar(&files, MTIME).unwrap();
    pieces.control = linkpool().control("mipsel_24kc", pieces.data_tar.len() as u64);
    let problems = pieces.problems(&mipsel_name());
    assert_caught(&problems, "uses hard float");
    assert_caught(&problems, "needs a dynamic loader");
    assert_caught(&problems, "is not stripped");
}

#[test]
fn catches_missing_and_unexpected_files_and_wrong_modes() {
    let mut pieces = Pieces::of("mipsel_24kc");
    let mut files = linkpool_files("mipsel_24kc");
    files.retain(|f| f.path != "/etc/init.d/linkpool");
    files.push(DataFile {
        path: "/etc/extra".into(),
        mode: 0o644,
        bytes: b"x".to_vec(),
        conffile: false,
    });
    files
        .iter_mut()
        .find(|f| f.path == "/etc/uci-defaults/90-linkpool")
        .unwrap()
        .mode = 0o644;
    pieces.data_tar = package::data_tar(&files, MTIME).unwrap();
    pieces.control = linkpool().control("mipsel_24kc", pieces.data_tar.len() as u64);
    let problems = pieces.problems(&mipsel_name());
    assert_caught(&problems, "/etc/init.d/linkpool is missing");
    assert_caught(
        &problems,
        "/etc/extra is in the package but not in its spec",
    );
    assert_caught(&problems, "/etc/uci-defaults/90-linkpool is not executable");
}

#[test]
fn catches_file_name_that_disagrees_with_control() {
    let problems = Pieces::of("mipsel_24kc").problems("linkpool_0.0.1-r1_mipsel_24kc.ipk");
    assert_caught(&problems, "but its control fields say linkpool_");
}

#[test]
fn rejects_ar_archives() {
    // Debian's .deb layout; opkg on OpenWrt wants a gzip'd tar.
    let err = ipk::parse(
        b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n",
        "x.ipk",
    )
    .unwrap_err();
    assert!(err.to_string().contains("not an ar archive"), "{err}");
}

// --- Architecture: all ---------------------------------------------------------------

#[test]
fn architecture_all_package_is_one_more_table_entry() {
    // What luci-app-linkpool will look like: a tree of views, no binaries.
    let root = scratch("luci-root");
    std::fs::create_dir_all(root.join("luci-app/htdocs/luci-static/resources/view/linkpool"))
        .unwrap();
    std::fs::write(
        root.join("luci-app/htdocs/luci-static/resources/view/linkpool/status.js"),
        "'use strict';\n",
    )
    .unwrap();
    static FILES: &[Install] = &[Install {
        source: Source::RepoTree("luci-app/htdocs"),
        dest: "/www",
        mode: 0o644,
        conffile: false,
    }];
    let spec = PackageSpec {
        name: "luci-app-linkpool",
        arch: Arch::All,
        release: 1,
        depends: &["luci-base", "linkpool"],
        section: "luci",
        feed_path: "feeds/linkpool/luci-app-linkpool",
        description: "LuCI support for linkpool",
        files: FILES,
    };
    assert_eq!(spec.arch_name(Some(&FAMILIES[3])).unwrap(), "all");
    let files = spec.collect(&root, None).unwrap();
    assert_eq!(
        files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["/www/luci-static/resources/view/linkpool/status.js"]
    );
    let name = spec.file_name("all");
    let ipk = ipk::parse(
        &package::build_ipk(&spec, "all", &files, MTIME).unwrap(),
        &name,
    )
    .unwrap();
    assert_eq!(ipk.problems(), Vec::<String>::new());
    assert_eq!(ipk.differences(&spec, "all"), Vec::<String>::new());
    assert!(name.ends_with("_all.ipk"), "{name}");
    std::fs::remove_dir_all(root).unwrap();
}

// --- the tables agree with the OpenWrt Makefile and Cross.toml -----------------------

/// What the feed Makefile says: `NAME:=VALUE` assignments, install lines
/// (macro, source, destination) and conffiles.
struct Makefile {
    vars: BTreeMap<String, String>,
    installs: Vec<(String, String, String)>,
    conffiles: Vec<String>,
}

fn makefile() -> Makefile {
    let text = std::fs::read_to_string(workspace_root().join("openwrt/linkpool/Makefile")).unwrap();
    let mut m = Makefile {
        vars: BTreeMap::new(),
        installs: Vec::new(),
        conffiles: Vec::new(),
    };
    let mut in_conffiles = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == "define Package/linkpool/conffiles" {
            in_conffiles = true;
            continue;
        }
        if in_conffiles {
            if trimmed == "endef" {
                in_conffiles = false;
            } else {
                m.conffiles.push(trimmed.to_string());
            }
            continue;
        }
        if let Some((name, value)) = trimmed.split_once(":=") {
            m.vars
                .insert(name.trim().to_string(), value.trim().to_string());
        }
        // $(INSTALL_BIN) SOURCE $(1)/DEST
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if let [macro_, source, dest] = words.as_slice() {
            if macro_.starts_with("$(INSTALL_") && *macro_ != "$(INSTALL_DIR)" {
                m.installs.push((
                    macro_.to_string(),
                    source.to_string(),
                    dest.trim_start_matches("$(1)").to_string(),
                ));
            }
        }
    }
    m
}

#[test]
fn openwrt_makefile_installs_what_the_ipk_holds() {
    let Makefile {
        vars,
        installs,
        conffiles,
    } = makefile();
    let spec = linkpool();
    assert_eq!(vars["PKG_NAME"], spec.name);
    assert_eq!(
        vars["PKG_VERSION"],
        env!("CARGO_PKG_VERSION"),
        "bump PKG_VERSION with the workspace version"
    );
    assert_eq!(vars["PKG_RELEASE"], spec.release.to_string());
    assert_eq!(vars["PKG_LICENSE"], package::LICENSE);
    let depends: Vec<&str> = vars["DEPENDS"]
        .split_whitespace()
        .filter_map(|d| d.strip_prefix('+'))
        .collect();
    assert_eq!(depends, spec.depends);

    let mut expected = Vec::new();
    for install in spec.files {
        let macro_ = match install.mode {
            0o755 => "$(INSTALL_BIN)",
            0o600 => "$(INSTALL_CONF)",
            0o644 => "$(INSTALL_DATA)",
            other => panic!("no OpenWrt install macro for mode {other:o}"),
        };
        let source = match install.source {
            Source::Binary(name) => format!("$(PKG_INSTALL_DIR)/bin/{name}"),
            Source::Repo(path) => format!(
                "./{}",
                path.strip_prefix("openwrt/linkpool/")
                    .expect("file of the feed package")
            ),
            Source::RepoTree(_) => unreachable!("linkpool has no trees"),
        };
        expected.push((macro_.to_string(), source, install.dest.to_string()));
    }
    assert_eq!(installs, expected);
    let expected_conffiles: Vec<_> = spec
        .files
        .iter()
        .filter(|i| i.conffile)
        .map(|i| i.dest.to_string())
        .collect();
    assert_eq!(conffiles, expected_conffiles);
}

#[test]
fn every_package_file_exists_in_the_repository() {
    for spec in PACKAGES {
        for install in spec.files {
            if let Source::Repo(path) | Source::RepoTree(path) = install.source {
                assert!(
                    workspace_root().join(path).exists(),
                    "{}: {path} is missing",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn cross_toml_covers_the_families_cross_can_build() {
    let text = std::fs::read_to_string(workspace_root().join("Cross.toml")).unwrap();
    let targets: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[target."))
        .map(|t| t.trim_end_matches(']').trim_matches('"'))
        .collect();
    let expected: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.triple)
        .filter(|t| !t.starts_with("mips"))
        .collect();
    let mut sorted = targets.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted, "Cross.toml targets");
    assert!(
        text.contains("1422"),
        "Cross.toml must say why MIPS is missing (cross-rs issue 1422)"
    );
}
