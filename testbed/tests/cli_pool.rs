//! `linkpool-testbed up --pool`: the README's `up` + `exec c1 -- curl http://files.test/ip`
//! shows the proxy's address (the LAN goes through linkpool), and `down` ends the run.
//! Needs the daemons' debug builds next to the testbed (`cargo build --workspace --bins`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linkpool_testbed::netns;

const BIN: &str = env!("CARGO_BIN_EXE_linkpool-testbed");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn up_with_pool_takes_lan_clients_through_the_proxy_and_down_ends_it() {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["up", "--pool"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start linkpool-testbed up --pool");
    let mut text = String::new();
    let mut prefix = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("(prefix ").nth(1) {
            prefix = rest.split(',').next().map(String::from);
        }
        text += &line;
        text.push('\n');
        if line.starts_with("ready") {
            break;
        }
    }
    let ready = text.contains("\nready");
    let Some(prefix) = prefix.filter(|_| ready) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`up --pool` did not become ready:\n{text}");
    };
    println!(
        "{text}(ready after {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    std::thread::spawn(move || for _ in lines {});
    assert!(text.contains("proxy up at 203.0.113.10:7117"), "{text}");
    for n in 1..=3 {
        assert!(
            text.contains(&format!("r{n}: session with the proxy after")),
            "{text}"
        );
    }
    assert!(text.contains("every gateway is connected"), "{text}");
    let pids: Vec<i32> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .flat_map(|n| netns::pids(&n))
        .collect();

    // The README's command, through the pool: the internet sees the proxy.
    for client in ["c1", "c2", "c3"] {
        let (ok, out, err) = run(&[
            "exec",
            "--prefix",
            &prefix,
            client,
            "--",
            "curl",
            "-s",
            "--max-time",
            "10",
            "http://files.test/ip",
        ]);
        assert!(ok, "exec {client} curl: {err}");
        assert_eq!(
            out.trim(),
            "203.0.113.10",
            "{client}'s requests left by the proxy"
        );
    }

    let (ok, out, err) = run(&["down", "--prefix", &prefix]);
    assert!(ok, "down: {err}");
    assert!(out.contains("torn down"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "`up` still runs after `down`");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "up exited with {status}");
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {pid} (a daemon or server of the run) still runs: {stat}"
        );
    }
    // Nothing left to take down.
    let (ok, _, err) = run(&["down", "--prefix", &prefix]);
    assert!(!ok && err.contains(&prefix), "{err}");
}

#[test]
fn pool_is_an_option_of_up_only() {
    let (ok, _, err) = run(&["links", "--pool"]);
    assert!(!ok && err.contains("--pool goes with `up` only"), "{err}");
    let (ok, out, _) = run(&["--help"]);
    assert!(ok && out.contains("up [--pool]") && out.contains("linkpool-testbed down"));
}
