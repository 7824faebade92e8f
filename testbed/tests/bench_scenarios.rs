//! `linkpool-testbed bench --scenario FILE --seconds 3 --json F`, end to end (about 40 s
//! on the 2-core VM): a two-path scenario whose first path is cut for a second of every
//! transfer. What it checks: the command works and prints its tables; the JSON has every
//! key of issue 9 for the scenario, with figures where they must be (goodputs through
//! linkpool, of MPTCP and of each path alone, RTTs, CPU per GB); the MPTCP reference really
//! ran over both paths (two subflows, each path carried part of it); no linkpool
//! connection broke on the cut. The figures themselves (linkpool against MPTCP, the sum,
//! the failover gap) are benchmark results, printed with `--nocapture`, not asserted: a
//! loaded CI machine must not turn them into failures. Needs the daemons' debug builds
//! next to the testbed (`cargo build --workspace --bins`).

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linkpool-testbed");

const SCENARIO: &str = r#"
name = "test-pair"
description = "10 + 10 Mbit/s at 5 / 15 ms; path 1 down from 1 s to 2 s"
seconds = 3

[[path]]
rate = "10mbit"
delay = "5ms"

[[path]]
rate = "10mbit"
delay = "15ms"

[[event]]
at = "1s"
path = 1
set = "down"

[[event]]
at = "2s"
path = 1
set = "up"
"#;

/// The keys issue 9 asks for, and which of them must be positive numbers here.
const KEYS: &[(&str, bool)] = &[
    ("name", false),
    ("tcp_mbit", true),
    ("tcp8_mbit", true),
    ("udp_mbit", true),
    ("mptcp_mbit", true),
    ("best_single_mbit", true),
    ("sum_single_mbit", true),
    ("sum_rate_mbit", true),
    ("failover_gap_ms", false),
    ("connections_broken", false),
    ("rtt_idle_ms", true),
    ("rtt_loaded_ms", true),
    ("redundancy_overhead", false),
    ("gateway_cpu_s_per_gb", true),
    ("proxy_cpu_s_per_gb", true),
];

#[test]
fn bench_runs_a_scenario_file_and_writes_every_figure() {
    let dir = std::env::temp_dir().join(format!("lpt-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("test-pair.toml");
    let json_path = dir.join("bench.json");
    std::fs::write(&file, SCENARIO).unwrap();

    let out = Command::new(BIN)
        .arg("bench")
        .arg("--scenario")
        .arg(&file)
        .args(["--seconds", "3", "--json"])
        .arg(&json_path)
        .output()
        .expect("run linkpool-testbed bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");

    // The tables, with a row for the scenario in each.
    assert!(
        stdout.contains("| scenario | linkpool TCP | 8 flows | UDP | MPTCP |"),
        "no goodput table:\n{stdout}"
    );
    assert!(
        stdout.contains("| scenario | failover gap ms (MPTCP) |"),
        "no second table:\n{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("| test-pair |"))
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("s in all"), "no run time:\n{stdout}");

    let text = std::fs::read_to_string(&json_path).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert!(
        json["run_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{json}"
    );
    let scenarios = json["scenarios"].as_array().expect("`scenarios` array");
    assert_eq!(scenarios.len(), 1, "{json}");
    let s = &scenarios[0];
    for &(key, positive) in KEYS {
        let value = s
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` in the JSON:\n{s:#}"));
        if positive {
            assert!(
                value.as_f64().is_some_and(|v| v > 0.0),
                "`{key}` is {value}, not a positive number:\n{s:#}"
            );
        }
    }
    assert_eq!(s["name"], "test-pair");
    assert_eq!(s["seconds"], 3.0);
    assert!(s["error"].is_null(), "{s:#}");
    // Not a target, a sanity check of the measurement: the pool moved bytes, and the cut
    // broke no connection through it.
    assert_eq!(s["connections_broken"], 0, "{s:#}");
    let gap = s["failover_gap_ms"]
        .as_f64()
        .expect("a failover gap: there is an event");
    assert!((0.0..=3000.0).contains(&gap), "{s:#}");
    assert!(
        s["redundancy_overhead"].is_null() || s["redundancy_overhead"].is_number(),
        "{s:#}"
    );
    assert_eq!(s["sum_rate_mbit"], 20.0);
    let single: Vec<f64> = s["single_mbit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(single.len(), 2);
    let sum = s["sum_single_mbit"].as_f64().unwrap();
    assert!((sum - single.iter().sum::<f64>()).abs() < 1e-3, "{s:#}");
    // The reference really was multipath: two subflows, each path carried part of it.
    assert_eq!(s["mptcp_subflows"], 2, "{s:#}");
    assert_eq!(s["mptcp_connections_broken"], 0, "{s:#}");
    let shares: Vec<f64> = s["mptcp_path_share"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        shares.len() == 2 && shares.iter().all(|&x| x > 0.05),
        "MPTCP did not use both paths: {shares:?}\n{s:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_refuses_a_bad_scenario_file_before_building_anything() {
    let dir = std::env::temp_dir().join(format!("lpt-bench-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\nseconds = 3\n[[path]]\n[[path]]\n\
         [[event]]\nat = \"1s\"\npath = 3\nset = \"down\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .arg("--scenario")
        .arg(&file)
        .output()
        .expect("run linkpool-testbed bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("`event[0].path`")
            && stderr.contains("no path 3"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args(["bench", "--scenario", "no-such-scenario"])
        .output()
        .expect("run linkpool-testbed bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("path-cut"),
        "the error should list the built-in scenarios: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
