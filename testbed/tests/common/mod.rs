//! Helpers shared by the testbed's integration tests (run as root; they fail, never skip,
//! when namespaces cannot be built).
#![allow(dead_code)]

use linkpool_testbed::bench::{ping_rtts, quantile};
use linkpool_testbed::{Coop, Node, Topology};

/// A one-router co-op; panics with the reason when it cannot be built (not root, ...).
pub fn coop1() -> Coop {
    Coop::build(&Topology::coop(1)).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"))
}

/// Sends `count` pings `interval` seconds apart from `node` to `addr`; returns the RTTs (ms)
/// and the raw output.
pub fn ping(node: &Node, addr: &str, count: usize, interval: &str) -> (Vec<f64>, String) {
    let out = node
        .exec(&[
            "ping",
            "-n",
            "-i",
            interval,
            "-c",
            &count.to_string(),
            "-W",
            "2",
            addr,
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (ping_rtts(&text), text)
}

/// Makes sure neighbour discovery is done before measuring.
pub fn warm_up(node: &Node, addr: &str) {
    node.exec_ok(&["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "5", addr])
        .unwrap_or_else(|e| panic!("warm-up ping: {e}"));
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

pub fn stddev(v: &[f64]) -> f64 {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// A topology shipped in `testbed/topologies/` (`NAME.toml`).
pub fn shipped_topology(name: &str) -> Topology {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(format!("{name}.toml"));
    Topology::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Co-ops whose members pool each other's lines over the mesh.
pub mod mesh;

/// (packets, bytes) of the nftables counter `name` in table `inet TABLE` on `node`.
pub fn nft_counter(node: &Node, table: &str, name: &str) -> (u64, u64) {
    nft_counter_in(node, "inet", table, name)
}

/// [`nft_counter`] in a table of `family`.
pub fn nft_counter_in(node: &Node, family: &str, table: &str, name: &str) -> (u64, u64) {
    let text = node
        .exec_ok(&["nft", "list", "counter", family, table, name])
        .unwrap();
    let after = |key: &str| -> u64 {
        text.split(key)
            .nth(1)
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (after("packets "), after("bytes "))
}

/// Installs the nftables `ruleset` on `node`, from a file `NAME.nft` in the co-op's run
/// directory; panics with nft's message when it is refused.
pub fn nft_install(coop: &Coop, node: &Node, name: &str, ruleset: &str) {
    let file = coop.write_file(&format!("{name}.nft"), ruleset).unwrap();
    node.exec_ok(&["nft", "-f", file.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("cannot install {name}.nft: {e}"));
}
