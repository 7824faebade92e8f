//! Nothing leaks: not on panic inside a test, not when the CLI gets SIGINT, and
//! `cleanup` removes what a SIGKILLed run left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linkpool_testbed::{Coop, RUN_ROOT, Topology, netns};

const BIN: &str = env!("CARGO_BIN_EXE_linkpool-testbed");

fn topology_file() -> String {
    format!("{}/topologies/coop3.toml", env!("CARGO_MANIFEST_DIR"))
}

/// Asserts that nothing of run `prefix` is left: namespaces, processes, run directory,
/// /etc/netns entries.
fn assert_gone(prefix: &str, pids: &[i32]) {
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for pid in pids {
        // A zombie is dead (its parent, possibly an init that does not reap, has not
        // collected it yet); anything else is a leak.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {pid} still runs: {stat}"
        );
    }
    assert!(
        !Path::new(RUN_ROOT).join(prefix).exists(),
        "run directory left"
    );
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !etc.iter().any(|e| e.starts_with(&format!("{prefix}-"))),
        "/etc/netns left: {etc:?}"
    );
    // Everything is created inside the run's namespaces; nothing of ours in the root one.
    let root = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let ours: Vec<String> = String::from_utf8_lossy(&root.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| {
            matches!(n.as_str(), "wan" | "mesh0" | "br-lan" | "lan1" | "br0")
                || (n.starts_with('e')
                    && (n.ends_with('a') || n.ends_with('b'))
                    && n[1..n.len() - 1].chars().all(|c| c.is_ascii_digit())
                    && n.len() > 2)
        })
        .collect();
    assert!(
        ours.is_empty(),
        "testbed interfaces in the root namespace: {ours:?}"
    );
}

fn pids_of(prefix: &str) -> Vec<i32> {
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .flat_map(|n| netns::pids(&n))
        .collect()
}

#[test]
fn a_panic_inside_a_topology_leaks_nothing() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let coop = Coop::build(&Topology::coop(2)).unwrap_or_else(|e| panic!("cannot build: {e}"));
        // A process nobody holds a handle to any more, and one that is held.
        let orphan = coop.client(1).spawn(&["sleep", "600"]).unwrap();
        std::mem::forget(orphan);
        let _held = coop.router(2).spawn(&["sleep", "600"]).unwrap();
        let pids = pids_of(coop.prefix());
        assert!(
            pids.len() >= 4,
            "dnsmasq, iperf3 and sleeps should run: {pids:?}"
        );
        tx.send((coop.prefix().to_string(), pids)).unwrap();
        panic!("deliberate panic inside a topology");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let (prefix, pids) = rx.recv().unwrap();
    // The forgotten child is a zombie of this process until reaped; its namespace is gone.
    let zombies_reaped = Instant::now() + Duration::from_secs(2);
    let live: Vec<i32> = loop {
        let live: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false)
            })
            .collect();
        if live.is_empty() || Instant::now() > zombies_reaped {
            break live;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        live.is_empty(),
        "processes still running after the panic: {live:?}"
    );
    assert_gone(&prefix, &[]);
}

/// Starts `linkpool-testbed up`, waits for "ready", returns the child, its prefix and the
/// pids inside its namespaces.
fn start_cli() -> (std::process::Child, String, Vec<i32>) {
    let mut child = Command::new(BIN)
        .args(["up", &topology_file()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start linkpool-testbed up");
    let mut prefix = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("(prefix ").nth(1) {
            prefix = rest.split(',').next().map(String::from);
        }
        if line.starts_with("ready") {
            break;
        }
    }
    let prefix = prefix.expect("`up` printed its prefix and became ready");
    std::thread::spawn(move || for _ in lines {});
    let pids = pids_of(&prefix);
    assert!(
        pids.len() >= 4,
        "servers should run in the namespaces: {pids:?}"
    );
    (child, prefix, pids)
}

#[test]
fn the_cli_killed_with_sigint_leaves_nothing() {
    let (mut child, prefix, pids) = start_cli();
    // The CLI's control socket works while it runs.
    let out = Command::new(BIN)
        .args(["link", "--prefix", &prefix, "r2-wan", "delay=33ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delay=33ms"));
    let out = Command::new(BIN)
        .args([
            "exec", "--prefix", &prefix, "c1", "--", "ip", "-br", "addr", "show", "eth0",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("192.168.1.100"),
        "{out:?}"
    );
    let out = Command::new(BIN)
        .args([
            "link",
            "--prefix",
            &prefix,
            "r2-wan",
            "downstream",
            "rate=5mbit",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (up_line, down_line) = text.split_once('\n').unwrap_or_default();
    assert!(
        up_line.contains("rate=2mbit") && down_line.contains("rate=5mbit"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["link", "--prefix", &prefix, "r2-wan", "delay=fast"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("delay"),
        "{out:?}"
    );

    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    assert_gone(&prefix, &pids);
}

#[test]
fn cleanup_removes_what_a_killed_run_left() {
    let (mut child, prefix, pids) = start_cli();
    child.kill().unwrap(); // SIGKILL: no chance to tear down
    child.wait().unwrap();
    assert!(
        !pids_of(&prefix).is_empty(),
        "a SIGKILLed run leaves its servers behind"
    );
    let out = Command::new(BIN)
        .args(["cleanup", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{prefix}-r1")), "{text}");
    assert_gone(&prefix, &pids);
}

#[test]
fn workspace_binaries_are_found_from_tests() {
    let path = linkpool_testbed::workspace_binary("linkpool-testbed").unwrap();
    assert_eq!(path, Path::new(BIN));
}

#[test]
fn the_demo_interrupted_midway_leaves_nothing() {
    let mut child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start linkpool-testbed demo");
    let mut prefix = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("(prefix ").nth(1) {
            prefix = rest.split(',').next().map(String::from);
        }
        if line.starts_with("[3/") {
            break;
        }
    }
    let prefix = prefix.expect("the demo printed its prefix");
    let pids = pids_of(&prefix);
    assert!(!pids.is_empty(), "the demo's servers run");
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status}");
    assert_gone(&prefix, &pids);
}

#[test]
fn cleanup_leaves_live_runs_alone() {
    let coop = Coop::build(&Topology::coop(1)).unwrap_or_else(|e| panic!("cannot build: {e}"));
    let before: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", coop.prefix())))
        .collect();
    let out = Command::new(BIN).arg("cleanup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ns in &before {
        assert!(
            netns::list().contains(ns),
            "cleanup removed {ns} of a live run"
        );
    }
    assert!(Path::new(RUN_ROOT).join(coop.prefix()).exists());
    // Bad prefixes are refused, not guessed at.
    let out = Command::new(BIN)
        .args(["cleanup", "--prefix", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not start with"));
}
