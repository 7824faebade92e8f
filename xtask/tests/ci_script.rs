//! `scripts/test` (what CI runs) must run every step it names: the cross builds
//! (`.ci/cross.sh`) and the fuzz smoke run (`fuzz/smoke.sh`) run even when they lost their
//! executable bit, and a missing one fails the script instead of being skipped.
//!
//! Each test copies `scripts/test` into a temporary tree where every command it runs is a
//! stub that records that it ran: `scripts/install-deps`, `openwrt/tests/run.sh`, a fake
//! `cargo` first on `PATH`, and the two step scripts, written without the executable bit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary copy of the repository's CI entry point with stubbed steps.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "linkpool-ci-script-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let tree = Tree { root };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test");
        let text = std::fs::read_to_string(&script)
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        tree.write("scripts/test", &text, true);
        // What scripts/test calls directly must be executable, as in the repository.
        tree.write("scripts/install-deps", &tree.recorder("install-deps"), true);
        // Called with `sh`: mode does not matter.
        tree.write(
            "openwrt/tests/run.sh",
            &tree.recorder("openwrt-tests"),
            false,
        );
        tree.write("bin/cargo", &tree.recorder("cargo"), true);
        // The two steps under test, deliberately NOT executable.
        tree.write(".ci/cross.sh", &tree.recorder("cross"), false);
        tree.write("fuzz/smoke.sh", &tree.recorder("fuzz-smoke"), false);
        tree
    }

    /// A shell script that appends `NAME ARGS...` to the tree's log and exits 0.
    fn recorder(&self, name: &str) -> String {
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 0\n",
            self.log_path().display()
        )
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("ran.log")
    }

    fn write(&self, relative: &str, text: &str, executable: bool) {
        let path = self.root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Runs the copied scripts/test with the fake cargo first on PATH.
    fn run(&self) -> Output {
        let path = format!(
            "{}:{}",
            self.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(self.root.join("scripts/test"))
            .current_dir(&self.root)
            .env("PATH", path)
            .output()
            .expect("run bash scripts/test")
    }

    /// The steps that ran, in order (first word of each log line), and the whole log.
    fn ran(&self) -> (Vec<String>, String) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let steps = log
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        (steps, log)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn describe(out: &Output, log: &str) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- steps that ran\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ci_runs_the_cross_and_fuzz_steps_even_without_their_executable_bit() {
    let tree = Tree::new();
    let out = tree.run();
    let (steps, log) = tree.ran();
    let why = describe(&out, &log);
    assert!(out.status.success(), "scripts/test failed:\n{why}");
    for step in ["install-deps", "openwrt-tests", "cross", "fuzz-smoke"] {
        assert_eq!(
            steps.iter().filter(|s| *s == step).count(),
            1,
            "step `{step}` should run exactly once:\n{why}"
        );
    }
    // The cargo steps ran through the fake cargo (so this really was the whole script).
    for args in ["cargo fmt", "cargo clippy", "cargo test --workspace"] {
        assert!(log.contains(args), "`{args}` did not run:\n{why}");
    }
    // In the order the script gives.
    let order: Vec<&str> = steps
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "cargo")
        .collect();
    assert_eq!(
        order,
        ["install-deps", "openwrt-tests", "cross", "fuzz-smoke"],
        "{why}"
    );
}

#[test]
fn ci_fails_when_a_step_script_is_missing() {
    // (missing script, the step that must have run before it, one that must not run after)
    for (missing, before, after) in [
        ("fuzz/smoke.sh", "cross", None),
        (".ci/cross.sh", "openwrt-tests", Some("fuzz-smoke")),
    ] {
        let tree = Tree::new();
        std::fs::remove_file(tree.root.join(missing)).unwrap();
        let out = tree.run();
        let (steps, log) = tree.ran();
        let why = describe(&out, &log);
        assert!(
            !out.status.success(),
            "scripts/test passed with {missing} missing:\n{why}"
        );
        assert!(
            steps.iter().any(|s| s == before),
            "`{before}` should have run before {missing} was found missing:\n{why}"
        );
        if let Some(after) = after {
            assert!(
                !steps.iter().any(|s| s == after),
                "`{after}` ran after {missing} was found missing:\n{why}"
            );
        }
    }
}
