//! Reading `.ipk` files back and checking them the way opkg and OpenWrt expect them.
//!
//! The checks are structural, from the bytes alone: the outer gzip'd tar and its three
//! members, the control fields, `Installed-Size` against the data tar, conffiles against
//! the data, the maintainer scripts, owners and modes, and that binaries are ELF files for
//! the package's architecture (static, stripped, soft-float on MIPS).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::package::{PackageSpec, Source};
use crate::{Result, elf, family};

/// Control fields every linkpool package must carry (OpenWrt writes all of them).
pub(crate) const REQUIRED_FIELDS: &[&str] = &[
    "Package",
    "Version",
    "Depends",
    "Source",
    "License",
    "Section",
    "Architecture",
    "Installed-Size",
    "Description",
];

/// One entry of `data.tar.gz`.
#[derive(Debug, Clone)]
pub(crate) struct DataEntry {
    /// Path as stored (`./usr/sbin/linkpool`).
    pub(crate) path: String,
    /// True for directories.
    pub(crate) is_dir: bool,
    /// Mode bits.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u64,
    /// Group.
    pub(crate) gid: u64,
    /// Contents (empty for directories).
    pub(crate) bytes: Vec<u8>,
}

impl DataEntry {
    /// The path on the router (`/usr/sbin/linkpool`).
    pub(crate) fn router_path(&self) -> String {
        format!(
            "/{}",
            self.path.trim_start_matches("./").trim_end_matches('/')
        )
    }
}

/// A control-archive script.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// Mode bits.
    pub(crate) mode: u32,
    /// Text.
    pub(crate) text: String,
}

/// An `.ipk` read back into its parts.
#[derive(Debug)]
pub(crate) struct Ipk {
    /// The file name it was read from.
    pub(crate) file_name: String,
    /// Members of the outer archive, in order, without `./`.
    pub(crate) members: Vec<String>,
    /// `debian-binary`.
    pub(crate) debian_binary: Vec<u8>,
    /// The `control` text as stored.
    pub(crate) control_text: String,
    /// Control fields, in order (continuation lines joined with `\n`).
    pub(crate) fields: Vec<(String, String)>,
    /// Lines of `conffiles`.
    pub(crate) conffiles: Vec<String>,
    /// `postinst`, `prerm`, ... by name.
    pub(crate) scripts: BTreeMap<String, Script>,
    /// Entries of `data.tar.gz`.
    pub(crate) data: Vec<DataEntry>,
    /// Byte length of the uncompressed data tar.
    pub(crate) data_tar_len: u64,
}

fn gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).map_err(|e| {
        format!(
            "{what} is not gzip data ({e}); an .ipk for opkg is a gzip'd tar, not an ar archive"
        )
    })?;
    Ok(out)
}

/// Every entry of a tar: (name, is_dir, mode, uid, gid, bytes).
type TarEntry = (String, bool, u32, u64, u64, Vec<u8>);

fn untar(bytes: &[u8], what: &str) -> Result<Vec<TarEntry>> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("{what} is not a tar: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("{what}: bad tar entry: {e}"))?;
        let header = entry.header();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let is_dir = header.entry_type().is_dir();
        let mode = header
            .mode()
            .map_err(|e| format!("{what}: {name}: bad mode: {e}"))?;
        let uid = header
            .uid()
            .map_err(|e| format!("{what}: {name}: bad uid: {e}"))?;
        let gid = header
            .gid()
            .map_err(|e| format!("{what}: {name}: bad gid: {e}"))?;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("{what}: {name}: {e}"))?;
        out.push((name, is_dir, mode, uid, gid, data));
    }
    Ok(out)
}

fn parse_fields(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(last) = fields.last_mut() else {
                return Err(format!(
                    "control line {}: continuation line before any field",
                    n + 1
                ));
            };
            last.1.push('\n');
            last.1.push_str(line.trim());
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!(
                "control line {}: not 'Field: value': {line:?}",
                n + 1
            ));
        };
        if key.is_empty() || key.contains(' ') {
            return Err(format!("control line {}: bad field name {key:?}", n + 1));
        }
        if fields.iter().any(|(k, _)| k == key) {
            return Err(format!("control line {}: field {key} given twice", n + 1));
        }
        fields.push((key.to_string(), value.trim().to_string()));
    }
    Ok(fields)
}

/// Reads an `.ipk` file.
pub(crate) fn read(path: &Path) -> Result<Ipk> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&bytes, &name).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Parses `.ipk` bytes (structure only; [`Ipk::problems`] checks the content).
pub(crate) fn parse(bytes: &[u8], file_name: &str) -> Result<Ipk> {
    let outer = untar(&gunzip(bytes, "the package")?, "the package")?;
    let mut members = Vec::new();
    let (mut debian_binary, mut control_gz, mut data_gz) = (None, None, None);
    for (name, _, _, _, _, data) in outer {
        let short = name.trim_start_matches("./").to_string();
        match short.as_str() {
            "debian-binary" => debian_binary = Some(data),
            "control.tar.gz" => control_gz = Some(data),
            "data.tar.gz" => data_gz = Some(data),
            _ => {}
        }
        members.push(short);
    }
    let missing = |m: &str| format!("no {m} in the package (members: {})", members.join(", "));
    let debian_binary = debian_binary.ok_or_else(|| missing("debian-binary"))?;
    let control_tar = gunzip(
        &control_gz.ok_or_else(|| missing("control.tar.gz"))?,
        "control.tar.gz",
    )?;
    let data_tar = gunzip(
        &data_gz.ok_or_else(|| missing("data.tar.gz"))?,
        "data.tar.gz",
    )?;

    let mut control_text = None;
    let mut conffiles = Vec::new();
    let mut scripts = BTreeMap::new();
    for (name, is_dir, mode, _, _, data) in untar(&control_tar, "control.tar.gz")? {
        if is_dir {
            continue;
        }
        let text = String::from_utf8(data)
            .map_err(|_| format!("control.tar.gz: {name} is not UTF-8 text"))?;
        match name.trim_start_matches("./") {
            "control" => control_text = Some(text),
            "conffiles" => {
                conffiles = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect()
            }
            other => {
                scripts.insert(other.to_string(), Script { mode, text });
            }
        }
    }
    let control_text = control_text.ok_or("control.tar.gz has no control file")?;
    let fields = parse_fields(&control_text)?;
    let data = untar(&data_tar, "data.tar.gz")?
        .into_iter()
        .map(|(path, is_dir, mode, uid, gid, bytes)| DataEntry {
            path,
            is_dir,
            mode,
            uid,
            gid,
            bytes,
        })
        .collect();
    Ok(Ipk {
        file_name: file_name.to_string(),
        members,
        debian_binary,
        control_text,
        fields,
        conffiles,
        scripts,
        data,
        data_tar_len: data_tar.len() as u64,
    })
}

/// Directories whose files must be executable.
const EXECUTABLE_DIRS: &[&str] = &[
    "/usr/sbin/",
    "/usr/bin/",
    "/sbin/",
    "/bin/",
    "/etc/init.d/",
    "/etc/uci-defaults/",
];

impl Ipk {
    /// A control field's value.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The regular files of the data archive, by router path.
    pub(crate) fn files(&self) -> BTreeMap<String, &DataEntry> {
        self.data
            .iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.router_path(), e))
            .collect()
    }

    /// Everything wrong with this package by itself; empty when it is sound.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut members = self.members.clone();
        members.sort();
        if members != ["control.tar.gz", "data.tar.gz", "debian-binary"] {
            problems.push(format!("outer archive must hold exactly debian-binary, control.tar.gz, data.tar.gz; has {members:?}"));
        }
        if self.debian_binary != b"2.0\n" {
            problems.push(format!(
                "debian-binary is {:?}, not \"2.0\\n\"",
                String::from_utf8_lossy(&self.debian_binary)
            ));
        }
        if !self.control_text.ends_with('\n') {
            problems.push("control does not end with a newline".into());
        }
        for field in REQUIRED_FIELDS {
            match self.field(field) {
                None => problems.push(format!("control has no {field} field")),
                Some("") => problems.push(format!("control field {field} is empty")),
                Some(_) => {}
            }
        }
        match self.field("Installed-Size").map(str::parse::<u64>) {
            Some(Ok(size)) if size != self.data_tar_len => problems.push(format!(
                "Installed-Size is {size}, but the data tar is {} bytes (OpenWrt's ipkg-build writes its length)",
                self.data_tar_len
            )),
            Some(Err(_)) => problems.push("Installed-Size is not a number".into()),
            _ => {}
        }
        if let (Some(p), Some(v), Some(a)) = (
            self.field("Package"),
            self.field("Version"),
            self.field("Architecture"),
        ) {
            let expected = format!("{p}_{v}_{a}.ipk");
            if self.file_name != expected {
                problems.push(format!(
                    "file is named {}, but its control fields say {expected}",
                    self.file_name
                ));
            }
            let known = a == "all" || family::FAMILIES.iter().any(|f| f.arch == a);
            if !known {
                problems.push(format!("Architecture {a} is not one linkpool builds for"));
            }
        }

        let files = self.files();
        for conffile in &self.conffiles {
            if !conffile.starts_with('/') {
                problems.push(format!("conffile {conffile} is not an absolute path"));
            } else if !files.contains_key(conffile) {
                problems.push(format!("conffile {conffile} is not in data.tar.gz"));
            }
        }
        for (name, call) in [("postinst", "default_postinst"), ("prerm", "default_prerm")] {
            match self.scripts.get(name) {
                None => problems.push(format!("control.tar.gz has no {name}")),
                Some(script) => {
                    if !script.text.starts_with("#!/bin/sh\n") {
                        problems.push(format!("{name} does not start with #!/bin/sh"));
                    }
                    if !script.text.contains(call) || !script.text.contains("/lib/functions.sh") {
                        problems.push(format!(
                            "{name} does not source /lib/functions.sh and call {call}"
                        ));
                    }
                    if script.mode & 0o111 == 0 {
                        problems.push(format!("{name} is not executable (mode {:o})", script.mode));
                    }
                }
            }
        }
        for entry in &self.data {
            if !entry.path.starts_with("./") || entry.path.split('/').any(|c| c == "..") {
                problems.push(format!(
                    "data entry {} is not a relative path below ./",
                    entry.path
                ));
            }
            if entry.uid != 0 || entry.gid != 0 {
                problems.push(format!(
                    "{} is owned by {}:{}, not root",
                    entry.router_path(),
                    entry.uid,
                    entry.gid
                ));
            }
            let path = entry.router_path();
            if !entry.is_dir
                && EXECUTABLE_DIRS.iter().any(|d| path.starts_with(d))
                && entry.mode & 0o111 == 0
            {
                problems.push(format!("{path} is not executable (mode {:o})", entry.mode));
            }
        }
        if let Some(arch) = self.field("Architecture") {
            problems.extend(self.binary_problems(arch));
        }
        problems
    }

    /// ELF files must suit the package architecture; an `all` package holds none.
    fn binary_problems(&self, arch: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let family = family::FAMILIES.iter().find(|f| f.arch == arch);
        for (path, entry) in self.files() {
            if !elf::is_elf(&entry.bytes) {
                continue;
            }
            let Some(family) = family else {
                problems.push(format!(
                    "{path} is an ELF binary in an Architecture: {arch} package"
                ));
                continue;
            };
            match elf::inspect(&entry.bytes) {
                Err(e) => problems.push(format!("{path}: {e}")),
                Ok(info) => {
                    if info.machine != family.elf_machine || info.big_endian != family.big_endian {
                        problems.push(format!(
                            "{path} is for ELF machine {} ({}), not {arch}",
                            info.machine,
                            if info.big_endian {
                                "big-endian"
                            } else {
                                "little-endian"
                            }
                        ));
                    }
                    if !info.is_static {
                        problems.push(format!(
                            "{path} needs a dynamic loader (not linked statically)"
                        ));
                    }
                    if !info.stripped {
                        problems.push(format!("{path} is not stripped"));
                    }
                    if info.mips_soft_float == Some(false) {
                        problems.push(format!(
                            "{path} uses hard float; {arch} routers have no FPU"
                        ));
                    }
                }
            }
        }
        problems
    }

    /// Differences between this package and what `spec` says it holds for `arch`.
    pub(crate) fn differences(&self, spec: &PackageSpec, arch: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let expect = [
            ("Package", spec.name.to_string()),
            ("Version", spec.version()),
            ("Architecture", arch.to_string()),
            ("Depends", spec.depends.join(", ")),
            ("Section", spec.section.to_string()),
            ("License", crate::package::LICENSE.to_string()),
            ("Source", spec.feed_path.to_string()),
        ];
        for (field, value) in expect {
            if self.field(field) != Some(value.as_str()) {
                problems.push(format!(
                    "{field} is {:?}, expected {value:?}",
                    self.field(field).unwrap_or("(missing)")
                ));
            }
        }
        let files = self.files();
        let mut expected_paths = Vec::new();
        for install in spec.files {
            if let Source::RepoTree(_) = install.source {
                // A tree's file list is whatever the directory holds; check it is not empty.
                if !files
                    .keys()
                    .any(|p| p.starts_with(&format!("{}/", install.dest.trim_end_matches('/'))))
                {
                    problems.push(format!("nothing installed below {}", install.dest));
                }
                continue;
            }
            expected_paths.push(install.dest.to_string());
            match files.get(install.dest) {
                None => problems.push(format!("{} is missing", install.dest)),
                Some(entry) if entry.mode & 0o7777 != install.mode => problems.push(format!(
                    "{} has mode {:o}, expected {:o}",
                    install.dest,
                    entry.mode & 0o7777,
                    install.mode
                )),
                Some(_) => {}
            }
        }
        let has_trees = spec
            .files
            .iter()
            .any(|i| matches!(i.source, Source::RepoTree(_)));
        if !has_trees {
            for path in files.keys() {
                if !expected_paths.contains(path) {
                    problems.push(format!("{path} is in the package but not in its spec"));
                }
            }
        }
        let mut expected_conffiles: Vec<String> = spec
            .files
            .iter()
            .filter(|i| i.conffile && !matches!(i.source, Source::RepoTree(_)))
            .map(|i| i.dest.to_string())
            .collect();
        expected_conffiles.sort();
        let mut conffiles = self.conffiles.clone();
        conffiles.sort();
        if !has_trees && conffiles != expected_conffiles {
            problems.push(format!(
                "conffiles are {conffiles:?}, expected {expected_conffiles:?}"
            ));
        }
        problems
    }
}

/// Checks a package file: its structure, and against its spec when it is one of ours.
pub(crate) fn verify(path: &Path) -> Result<Ipk> {
    let ipk = read(path)?;
    let mut problems = ipk.problems();
    if let (Some(name), Some(arch)) = (ipk.field("Package"), ipk.field("Architecture")) {
        match crate::package::find(name) {
            Some(spec) => problems.extend(ipk.differences(spec, arch)),
            None => problems.push(format!("Package {name} is not one linkpool builds")),
        }
    }
    if problems.is_empty() {
        Ok(ipk)
    } else {
        Err(format!("{}:\n  {}", path.display(), problems.join("\n  ")).into())
    }
}
