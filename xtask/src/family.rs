//! The router families linkpool is built for, and how this machine builds for each.
//!
//! Every family is built with `cargo-zigbuild`: zig links static musl binaries for every
//! target and is also the C cross compiler that dependencies with C code need (snow's
//! `std` feature pulls in `ring`). Targets without a rustup-provided std (32-bit ARM
//! hard-float, MIPS) build std from source (`-Z build-std` on the stable toolchain,
//! allowed by `RUSTC_BOOTSTRAP=1`, needs the `rust-src` component) and use zig's musl
//! (`-C link-self-contained=no`), which gives true soft-float MIPS32r2 binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, workspace_root};

/// Where a family's standard library comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StdSource {
    /// `rustup target add TRIPLE` provides a prebuilt std.
    Rustup,
    /// No prebuilt std can be had: `-Z build-std` compiles it from `rust-src`.
    BuildStd,
}

/// A qemu-user emulator that runs a family's binaries on this machine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Qemu {
    /// The emulator binary (Debian's `qemu-user`).
    pub(crate) binary: &'static str,
    /// The CPU to emulate, the oldest the family's routers have.
    pub(crate) cpu: &'static str,
}

/// One router family: an OpenWrt package architecture and the Rust target for it.
#[derive(Debug)]
pub(crate) struct Family {
    /// OpenWrt's package architecture (`Architecture:` of an .ipk).
    pub(crate) arch: &'static str,
    /// The Rust target triple OpenWrt's rust-package.mk uses for this architecture.
    pub(crate) triple: &'static str,
    /// Where std comes from.
    pub(crate) std: StdSource,
    /// Target rustflags: static musl everywhere, zig's musl where std is built here.
    pub(crate) rustflags: &'static str,
    /// How to run the family's binaries here.
    pub(crate) qemu: Qemu,
    /// ELF `e_machine` of the family's binaries.
    pub(crate) elf_machine: u16,
    /// True for big-endian families.
    pub(crate) big_endian: bool,
}

const STATIC: &str = "-C target-feature=+crt-static";
/// std features where std is built here (`-Z build-std-features`).
pub(crate) const STD_FEATURES: &str = "optimize_for_size";
const STATIC_ZIG_LIBC: &str = "-C target-feature=+crt-static -C link-self-contained=no";

/// The five families linkpool ships for, smallest routers last.
pub(crate) const FAMILIES: &[Family] = &[
    Family {
        arch: "x86_64",
        triple: "x86_64-unknown-linux-musl",
        std: StdSource::Rustup,
        rustflags: STATIC,
        qemu: Qemu {
            binary: "qemu-x86_64",
            cpu: "qemu64",
        },
        elf_machine: crate::elf::EM_X86_64,
        big_endian: false,
    },
    Family {
        arch: "aarch64_cortex-a53",
        triple: "aarch64-unknown-linux-musl",
        std: StdSource::Rustup,
        rustflags: STATIC,
        qemu: Qemu {
            binary: "qemu-aarch64",
            cpu: "cortex-a53",
        },
        elf_machine: crate::elf::EM_AARCH64,
        big_endian: false,
    },
    Family {
        arch: "arm_cortex-a7_neon-vfpv4",
        triple: "armv7-unknown-linux-musleabihf",
        std: StdSource::BuildStd,
        rustflags: STATIC_ZIG_LIBC,
        qemu: Qemu {
            binary: "qemu-arm",
            cpu: "cortex-a7",
        },
        elf_machine: crate::elf::EM_ARM,
        big_endian: false,
    },
    Family {
        arch: "mipsel_24kc",
        triple: "mipsel-unknown-linux-musl",
        std: StdSource::BuildStd,
        rustflags: STATIC_ZIG_LIBC,
        qemu: Qemu {
            binary: "qemu-mipsel",
            cpu: "24Kc",
        },
        elf_machine: crate::elf::EM_MIPS,
        big_endian: false,
    },
    Family {
        arch: "mips_24kc",
        triple: "mips-unknown-linux-musl",
        std: StdSource::BuildStd,
        rustflags: STATIC_ZIG_LIBC,
        qemu: Qemu {
            binary: "qemu-mips",
            cpu: "24Kc",
        },
        elf_machine: crate::elf::EM_MIPS,
        big_endian: true,
    },
];

/// The Cargo packages whose binaries every family build produces.
pub(crate) const CARGO_PACKAGES: &[&str] = &["linkpool-gateway", "linkpool-proxy"];

/// The binaries those packages produce, each printing `NAME VERSION` for `--version`.
pub(crate) const BINARIES: &[&str] = &["linkpool", "linkpool-proxy"];

/// Finds a family by OpenWrt architecture or Rust triple.
pub(crate) fn find(name: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.arch == name || f.triple == name)
        .ok_or_else(|| {
            let known: Vec<_> = FAMILIES.iter().map(|f| f.arch).collect();
            format!(
                "unknown target '{name}': use one of {} (or 'all')",
                known.join(", ")
            )
            .into()
        })
}

/// Resolves `--target` values (none or `all` = every family).
pub(crate) fn select(names: &[String]) -> Result<Vec<&'static Family>> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(FAMILIES.iter().collect());
    }
    names.iter().map(|n| find(n)).collect()
}

/// The Cargo profiles a family can be built with.
pub(crate) fn check_profile(profile: &str) -> Result<()> {
    match profile {
        "release" | "openwrt" => Ok(()),
        other => Err(format!(
            "unknown profile '{other}': use 'release' (panic=abort, the .ipk build) or \
             'openwrt' (panic=unwind and overflow checks, as OpenWrt's rust-package.mk builds)"
        )
        .into()),
    }
}

/// Cross builds share one target dir, apart from the host build, so neither evicts the other.
pub(crate) fn cross_target_dir() -> PathBuf {
    workspace_root().join("target").join("cross")
}

impl Family {
    /// The directory the family's binaries land in for `profile`.
    pub(crate) fn out_dir(&self, profile: &str) -> PathBuf {
        cross_target_dir().join(self.triple).join(profile)
    }

    /// The path of one of the family's binaries.
    pub(crate) fn binary(&self, profile: &str, name: &str) -> PathBuf {
        self.out_dir(profile).join(name)
    }

    fn env_key(&self) -> String {
        self.triple.to_uppercase().replace('-', "_")
    }

    /// The qemu command line that runs this family's binaries (`qemu-mipsel -cpu 24Kc`).
    pub(crate) fn runner(&self) -> Vec<String> {
        vec![self.qemu.binary.into(), "-cpu".into(), self.qemu.cpu.into()]
    }

    /// A `cargo-zigbuild SUBCOMMAND` for this family with its target, flags and std.
    fn cargo_zigbuild(&self, subcommand: &str, profile: Option<&str>) -> Result<Command> {
        self.check_toolchain()?;
        let mut cmd = Command::new("cargo-zigbuild");
        cmd.current_dir(workspace_root());
        cmd.arg(subcommand).arg("--target").arg(self.triple);
        cmd.arg("--target-dir").arg(cross_target_dir());
        if let Some(profile) = profile {
            cmd.arg("--profile").arg(profile);
        }
        if self.std == StdSource::BuildStd {
            // panic_abort alongside std (which brings panic_unwind) serves both profiles.
            cmd.arg("-Z").arg("build-std=std,panic_abort");
            // Smaller implementations inside std, no change in behaviour: 17% off the
            // MIPS gateway binary (1.44 -> 1.19 MiB measured at 0.1.0).
            cmd.arg("-Z")
                .arg(format!("build-std-features={STD_FEATURES}"));
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        // Global RUSTFLAGS would override the target's (and drop crt-static).
        cmd.env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd.env(
            format!("CARGO_TARGET_{}_RUSTFLAGS", self.env_key()),
            self.rustflags,
        );
        Ok(cmd)
    }

    /// Builds the daemons for this family.
    pub(crate) fn build(&self, profile: &str) -> Result<()> {
        let mut cmd = self.cargo_zigbuild("zigbuild", Some(profile))?;
        for package in CARGO_PACKAGES {
            cmd.arg("-p").arg(package);
        }
        eprintln!(
            "xtask: building {} ({}, profile {profile})",
            self.arch, self.triple
        );
        crate::run(&mut cmd)
    }

    /// Runs `cargo test` for `packages` on this family, the test binaries under qemu.
    pub(crate) fn test(&self, packages: &[String], test_args: &[String]) -> Result<()> {
        let mut cmd = self.cargo_zigbuild("test", None)?;
        for package in packages {
            cmd.arg("-p").arg(package);
        }
        if !self.runs_natively() {
            cmd.env(
                format!("CARGO_TARGET_{}_RUNNER", self.env_key()),
                self.runner().join(" "),
            );
        }
        // Under qemu, unoptimised crypto and packet loops make the session tests take
        // minutes; optimising keeps debug assertions and overflow checks on.
        cmd.env("CARGO_PROFILE_DEV_OPT_LEVEL", "2");
        if !test_args.is_empty() {
            cmd.arg("--").args(test_args);
        }
        eprintln!(
            "xtask: testing {} on {} under {}",
            packages.join(", "),
            self.arch,
            self.runner().join(" ")
        );
        crate::run(&mut cmd)
    }

    /// True when this machine runs the family's binaries without an emulator.
    pub(crate) fn runs_natively(&self) -> bool {
        self.arch == std::env::consts::ARCH
    }

    /// A command that runs `binary` here: directly or under qemu.
    pub(crate) fn run_command(&self, binary: &Path) -> Command {
        if self.runs_natively() {
            Command::new(binary)
        } else {
            let runner = self.runner();
            let mut cmd = Command::new(&runner[0]);
            cmd.args(&runner[1..]).arg(binary);
            cmd
        }
    }

    /// Fails early, with the command that fixes it, when the toolchain lacks this target.
    fn check_toolchain(&self) -> Result<()> {
        let sysroot = crate::output(Command::new("rustc").args(["--print", "sysroot"]))?;
        let rustlib = Path::new(sysroot.trim()).join("lib").join("rustlib");
        match self.std {
            StdSource::Rustup if !rustlib.join(self.triple).join("lib").is_dir() => {
                Err(format!("the toolchain has no std for {}: run `rustup target add {}`", self.triple, self.triple).into())
            }
            StdSource::BuildStd if !rustlib.join("src").join("rust").join("library").is_dir() => Err(format!(
                "building std for {} needs the Rust sources: run `rustup component add rust-src`",
                self.triple
            )
            .into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_match_openwrt_triples() {
        // The mapping OpenWrt's rust-values.mk derives from REAL_GNU_TARGET_NAME.
        let expected = [
            ("x86_64", "x86_64-unknown-linux-musl"),
            ("aarch64_cortex-a53", "aarch64-unknown-linux-musl"),
            ("arm_cortex-a7_neon-vfpv4", "armv7-unknown-linux-musleabihf"),
            ("mipsel_24kc", "mipsel-unknown-linux-musl"),
            ("mips_24kc", "mips-unknown-linux-musl"),
        ];
        let actual: Vec<_> = FAMILIES.iter().map(|f| (f.arch, f.triple)).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_family_links_static() {
        for family in FAMILIES {
            assert!(family.rustflags.contains("+crt-static"), "{}", family.arch);
            if family.std == StdSource::BuildStd {
                assert!(
                    family.rustflags.contains("link-self-contained=no"),
                    "{}",
                    family.arch
                );
            }
        }
    }

    #[test]
    fn targets_resolve_by_arch_triple_or_all() {
        assert_eq!(
            find("mipsel_24kc").unwrap().triple,
            "mipsel-unknown-linux-musl"
        );
        assert_eq!(find("mips-unknown-linux-musl").unwrap().arch, "mips_24kc");
        assert_eq!(select(&["all".into()]).unwrap().len(), FAMILIES.len());
        assert_eq!(select(&[]).unwrap().len(), FAMILIES.len());
        let err = find("mips64").unwrap_err().to_string();
        assert!(
            err.contains("unknown target 'mips64'") && err.contains("mipsel_24kc"),
            "{err}"
        );
        assert!(check_profile("debug").is_err());
    }

    #[test]
    fn mips_runs_on_the_24kc_cpu() {
        let runner = find("mipsel_24kc").unwrap().runner();
        assert_eq!(runner, ["qemu-mipsel", "-cpu", "24Kc"]);
        assert_eq!(
            find("mips_24kc").unwrap().runner(),
            ["qemu-mips", "-cpu", "24Kc"]
        );
    }
}
