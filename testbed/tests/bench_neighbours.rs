//! `linkpool-testbed bench` on a scenario with paths through neighbours, end to end (about
//! 80 s on the 2-core VM): the member's own 10 Mbit/s line and two neighbours' lines over
//! the mesh, the neighbours' owners downloading meanwhile, and one neighbour gone from the
//! mesh for a second of every transfer. What it checks: each `via` path became that
//! neighbour's line (the neighbour routers exist, their WAN links carried the member's
//! traffic alone and under MPTCP, one subflow each); the owners' downloads were measured
//! alone and while lending; the relays' CPU per GB relayed; no connection broke. The figures
//! (linkpool against MPTCP, the owners' throughput) are printed with `--nocapture`, not
//! asserted. Needs the daemons' debug builds next to the testbed.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_linkpool-testbed");

const SCENARIO: &str = r#"
name = "test-neighbours"
description = "own 10 Mbit/s + r2's and r3's 10 Mbit/s over the mesh; owners busy; r3 off the mesh 1-2 s"
seconds = 3
owners_busy = true

[[path]]
rate = "10mbit"
delay = "5ms"

[[path]]
via = "r2"
rate = "10mbit"
delay = "10ms"
mesh = { delay = "1ms" }

[[path]]
via = "r3"
rate = "10mbit"
delay = "15ms"
mesh = { delay = "1ms" }

[[event]]
at = "1s"
path = 3
set = "mesh down"

[[event]]
at = "2s"
path = 3
set = "mesh up"
"#;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
        .collect()
}

#[test]
fn bench_runs_paths_through_neighbours_with_their_owners_busy() {
    let dir = std::env::temp_dir().join(format!("lpt-bench-nb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("test-neighbours.toml");
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
    assert!(
        stdout.contains("| scenario | via | relay CPU s/GB |"),
        "no neighbours table:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json_path).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let s = &json["scenarios"][0];
    assert!(s["error"].is_null(), "{s:#}");
    assert_eq!(s["via"], serde_json::json!([null, "r2", "r3"]), "{s:#}");
    assert_eq!(s["connections_broken"], 0, "{s:#}");
    assert!(s["tcp_mbit"].as_f64().is_some_and(|x| x > 0.0), "{s:#}");
    // Each path alone went over its own line: the neighbours' through them.
    let single = numbers(&s["single_mbit"]);
    assert!(
        single.len() == 3 && single.iter().all(|&x| x > 1.0),
        "{s:#}"
    );
    // MPTCP's reference had a subflow through each neighbour, and each line carried part.
    assert_eq!(s["mptcp_subflows"], 3, "{s:#}");
    assert_eq!(s["mptcp_connections_broken"], 0, "{s:#}");
    let shares = numbers(&s["mptcp_path_share"]);
    assert!(
        shares.len() == 3 && shares.iter().all(|&x| x > 0.05),
        "MPTCP did not use every line: {shares:?}\n{s:#}"
    );
    // The neighbours relayed for the member, and what that cost them was measured.
    assert!(
        s["relay_cpu_s_per_gb"].as_f64().is_some_and(|x| x > 0.0),
        "{s:#}"
    );
    // Each owner's download was measured alone, and while lending to linkpool and to
    // MPTCP (what it keeps then is a figure: MPTCP may squeeze it to nearly nothing).
    let alone = numbers(&s["owner_alone_mbit"]);
    assert!(
        alone.len() == 2 && alone.iter().all(|&x| x > 1.0),
        "the owners' downloads alone: {alone:?}\n{s:#}"
    );
    for key in ["owner_lending_mbit", "mptcp_owner_lending_mbit"] {
        let owners = numbers(&s[key]);
        assert!(
            owners.len() == 2 && owners.iter().all(|&x| x >= 0.0),
            "`{key}`: {owners:?}\n{s:#}"
        );
    }
    assert!(s["owner_lending_vs_alone"].as_f64().is_some(), "{s:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
