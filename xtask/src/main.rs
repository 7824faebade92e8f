//! `cargo xtask`: cross builds for router families, `.ipk` packages and size reports.
//!
//! ```text
//! cargo xtask build  [--target FAMILY]... [--profile release|openwrt]
//! cargo xtask smoke  [--target FAMILY]... [--no-build]   # --version of both daemons under qemu
//! cargo xtask test   --target FAMILY [-p PACKAGE]... [-- TEST_ARGS]   # tests under qemu
//! cargo xtask ipk    [--target FAMILY]... [--no-build] [--out DIR]
//! cargo xtask verify-ipk FILE...
//! cargo xtask size   [--target FAMILY]... [--no-build]
//! cargo xtask families
//! ```
//! FAMILY is an OpenWrt architecture (x86_64, aarch64_cortex-a53, arm_cortex-a7_neon-vfpv4,
//! mipsel_24kc, mips_24kc), its Rust triple, or `all` (the default).

mod elf;
mod family;
mod ipk;
mod package;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use family::Family;
use package::{Arch, PACKAGES};

/// Errors are messages for the person at the terminal.
pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: cargo xtask <build|smoke|test|ipk|verify-ipk|size|families> [options]

  build       [--target FAMILY]... [--profile release|openwrt]
  smoke       [--target FAMILY]... [--no-build]      run both daemons' --version under qemu
  test        --target FAMILY [-p PACKAGE]... [-- ARGS]   cargo test, test binaries under qemu
                                                     (default package: linkpool-protocol)
  ipk         [--target FAMILY]... [--no-build] [--out DIR]   write and verify .ipk files
  verify-ipk  FILE...                                check .ipk files structurally
  size        [--target FAMILY]... [--no-build]      stripped binary and .ipk sizes
  families                                           list the router families

FAMILY: x86_64, aarch64_cortex-a53, arm_cortex-a7_neon-vfpv4, mipsel_24kc, mips_24kc,
a Rust target triple, or all (the default). Output goes to target/cross/.";

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command, inheriting stdio; fails with the command line if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| spawn_error(cmd, &e))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)).into())
    }
}

/// Runs a command and returns its stdout; fails with its stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| spawn_error(cmd, &e))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_error(cmd: &Command, e: &std::io::Error) -> String {
    let program = cmd.get_program().to_string_lossy();
    let hint = match program.as_ref() {
        "cargo-zigbuild" => " (install: pip install ziglang cargo-zigbuild)",
        p if p.starts_with("qemu-") => " (install: apt-get install qemu-user)",
        _ => "",
    };
    format!("cannot run {program}: {e}{hint}")
}

/// Options shared by the subcommands.
#[derive(Default)]
struct Options {
    targets: Vec<String>,
    profile: Option<String>,
    no_build: bool,
    out: Option<PathBuf>,
    packages: Vec<String>,
    /// Positional arguments: .ipk files, or test arguments after `--`.
    files: Vec<PathBuf>,
}

fn parse_options(mut parser: lexopt::Parser) -> Result<Options> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("target") | Short('t') => o.targets.push(parser.value()?.string()?),
            Long("profile") => o.profile = Some(parser.value()?.string()?),
            Long("no-build") => o.no_build = true,
            Long("out") => o.out = Some(parser.value()?.into()),
            Long("package") | Short('p') => o.packages.push(parser.value()?.string()?),
            Value(v) => o.files.push(v.into()),
            Long("help") | Short('h') => return Err(USAGE.into()),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let mut parser = lexopt::Parser::from_env();
    let command = match parser.next()? {
        Some(lexopt::Arg::Value(v)) => lexopt::ValueExt::string(v)?,
        _ => return Err(USAGE.into()),
    };
    let o = parse_options(parser)?;
    let profile = o.profile.clone().unwrap_or_else(|| "release".into());
    family::check_profile(&profile)?;
    match command.as_str() {
        "build" => {
            for family in family::select(&o.targets)? {
                family.build(&profile)?;
            }
            Ok(())
        }
        "smoke" => smoke(&family::select(&o.targets)?, &profile, o.no_build),
        "test" => {
            let families = family::select(&o.targets)?;
            if o.targets.is_empty() {
                return Err("test needs --target FAMILY (e.g. --target mipsel_24kc)".into());
            }
            let packages = if o.packages.is_empty() {
                vec!["linkpool-protocol".to_string()]
            } else {
                o.packages.clone()
            };
            let test_args: Vec<String> = o
                .files
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .collect();
            for family in families {
                family.test(&packages, &test_args)?;
            }
            Ok(())
        }
        "ipk" => {
            let out = o
                .out
                .clone()
                .unwrap_or_else(|| family::cross_target_dir().join("ipk"));
            for path in ipk_command(&family::select(&o.targets)?, &profile, o.no_build, &out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        "verify-ipk" => {
            if o.files.is_empty() {
                return Err("verify-ipk needs one or more .ipk files".into());
            }
            let mut failures = Vec::new();
            for file in &o.files {
                match ipk::verify(file) {
                    Ok(ipk) => println!(
                        "ok {} ({} files, Installed-Size {})",
                        file.display(),
                        ipk.files().len(),
                        ipk.field("Installed-Size").unwrap_or("?")
                    ),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("\n").into())
            }
        }
        "size" => size(&family::select(&o.targets)?, &profile, o.no_build),
        "families" => {
            println!(
                "{:<26} {:<32} {:<10} qemu",
                "OpenWrt arch", "Rust target", "std"
            );
            for f in family::FAMILIES {
                let std = match f.std {
                    family::StdSource::Rustup => "rustup",
                    family::StdSource::BuildStd => "build-std",
                };
                println!(
                    "{:<26} {:<32} {:<10} {}",
                    f.arch,
                    f.triple,
                    std,
                    f.runner().join(" ")
                );
            }
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n\n{USAGE}").into()),
    }
}

/// Runs `NAME --version` of both daemons for each family and checks the answer.
fn smoke(families: &[&Family], profile: &str, no_build: bool) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let mut failures = Vec::new();
    for family in families {
        if !no_build {
            family.build(profile)?;
        }
        for name in family::BINARIES {
            let binary = family.binary(profile, name);
            let expected = format!("{name} {version}");
            let how = if family.runs_natively() {
                "natively".to_string()
            } else {
                format!("under {}", family.runner().join(" "))
            };
            match output(family.run_command(&binary).arg("--version")) {
                Ok(out) if out.trim() == expected => {
                    println!("ok {} {name} --version {how}: {}", family.arch, out.trim())
                }
                Ok(out) => failures.push(format!(
                    "{} {name} --version {how} printed {:?}, expected {expected:?}",
                    family.arch,
                    out.trim()
                )),
                Err(e) => failures.push(format!("{} {name} --version {how}: {e}", family.arch)),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

/// Builds (unless told not to), writes and verifies every package for `families`.
fn ipk_command(
    families: &[&Family],
    profile: &str,
    no_build: bool,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mtime = package::source_date_epoch();
    let mut written = Vec::new();
    for spec in PACKAGES {
        match spec.arch {
            Arch::All => written.push(spec.write_ipk(None, profile, out, mtime)?),
            Arch::PerFamily => {
                for family in families {
                    if !no_build {
                        family.build(profile)?;
                    }
                    written.push(spec.write_ipk(Some(family), profile, out, mtime)?);
                }
            }
        }
    }
    for path in &written {
        ipk::verify(path)?;
    }
    Ok(written)
}

/// The stripped size the gateway binary should stay under on MIPS routers (16 MB flash).
const MIPS_BUDGET: u64 = 2 * 1024 * 1024;

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Prints stripped binary and package sizes per family.
fn size(families: &[&Family], profile: &str, no_build: bool) -> Result<()> {
    let out = family::cross_target_dir().join("ipk");
    let packages = ipk_command(families, profile, no_build, &out)?;
    println!("| family | linkpool | linkpool-proxy | linkpool .ipk | checks |");
    println!("|---|---|---|---|---|");
    for family in families {
        let mut sizes = Vec::new();
        let mut checks = Vec::new();
        for name in family::BINARIES {
            let path = family.binary(profile, name);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            sizes.push(format!("{} ({} B)", mib(bytes.len() as u64), bytes.len()));
            let info = elf::inspect(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            if *name == "linkpool" {
                checks.push(if info.stripped {
                    "stripped"
                } else {
                    "NOT stripped"
                });
                checks.push(if info.is_static { "static" } else { "DYNAMIC" });
                match info.mips_soft_float {
                    Some(true) => checks.push("soft-float"),
                    Some(false) => checks.push("HARD-FLOAT"),
                    None => {}
                }
                if family.elf_machine == elf::EM_MIPS && bytes.len() as u64 > MIPS_BUDGET {
                    checks.push("OVER the 2 MiB MIPS budget");
                }
            }
        }
        let ipk_name = package::find("linkpool")
            .map(|p| p.file_name(family.arch))
            .unwrap_or_default();
        let ipk_size = packages
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == ipk_name)
            })
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| format!("{} ({} B)", mib(m.len()), m.len()))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} | {} | {ipk_size} | {} |",
            family.arch,
            sizes[0],
            sizes[1],
            checks.join(", ")
        );
    }
    println!();
    println!("Budget: <= 2 MiB stripped on MIPS, <= 8 MiB resident. Resident memory under load is");
    println!(
        "measured by the testbed (gateway RSS while it carries traffic), not by this command."
    );
    Ok(())
}

#[cfg(test)]
mod tests;
