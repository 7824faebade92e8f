//! `linkpool-testbed demo`: the one-command demonstration.
//!
//! Today it builds the three-member co-op of `topologies/coop3.toml`, downloads a file from
//! every member's LAN client and prints what each uplink carried. The daemons are not wired
//! yet: the place where `linkpool-proxy` and `linkpool` start is marked below
//! (`WIRE THE DAEMONS HERE`); once they carry traffic the same download goes through the
//! tunnel and the report shows the proxy's address as the source.

use std::time::{Duration, Instant};

use crate::bench::quantile;
use crate::{Coop, Direction, Error, Topology};

/// The topology the demo uses, shipped in the binary.
pub const COOP3: &str = include_str!("../topologies/coop3.toml");

/// Runs the demo, printing progress and a report to stdout.
pub fn run() -> Result<(), Error> {
    let topology = Topology::parse(COOP3, "topologies/coop3.toml")?;
    println!(
        "[1/4] building co-op `{}` ({} routers, proxy, internet host)...",
        topology.name,
        topology.routers.len()
    );
    let started = Instant::now();
    let coop = Coop::build(&topology)?;
    println!(
        "      built in {:.1} s\n{}",
        started.elapsed().as_secs_f64(),
        coop.describe()
    );
    let file = coop.internet().serve_file("demo-8M.bin", 8 << 20)?;

    println!("[2/4] starting the daemons...");
    // WIRE THE DAEMONS HERE: write the proxy config with `coop.write_file`, start
    // `linkpool-proxy run` with `coop.proxy().spawn(..)`, add a member per router, start
    // `linkpool run` on each router (uplink `wan`, LAN `br-lan`) and wait for the handshakes.
    println!("      (not wired yet: traffic goes straight out of each router's WAN)");

    println!(
        "[3/4] downloading {} ({} bytes) from each member's LAN client...",
        file.name, file.size
    );
    let mut rows = Vec::new();
    for (i, router) in coop.routers().iter().enumerate() {
        let client = coop.client(i + 1);
        let t = Instant::now();
        let out = client.exec_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{speed_download}",
            &coop.internet().url_name(&file.path()),
        ])?;
        let mut words = out.split_whitespace();
        let bytes: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        println!(
            "      {} -> {:.1} MB in {:.1} s",
            client.role(),
            bytes / 1e6,
            t.elapsed().as_secs_f64()
        );
        rows.push((router.role().to_string(), bytes, t.elapsed()));
    }
    let seen: Vec<String> = coop
        .internet()
        .http_requests()
        .iter()
        .map(|r| r.peer.to_string())
        .collect();

    println!("[4/4] report");
    println!(
        "  {:<8} {:>12} {:>14} {:>14}",
        "member", "Mbit/s", "wan up bytes", "wan down bytes"
    );
    for (role, bytes, took) in &rows {
        let link = coop.link(&format!("{role}-wan"))?;
        println!(
            "  {:<8} {:>12.1} {:>14} {:>14}",
            role,
            bytes * 8.0 / took.as_secs_f64().max(1e-3) / 1e6,
            link.stats(Direction::Upstream).bytes_out,
            link.stats(Direction::Downstream).bytes_out
        );
    }
    let rates: Vec<f64> = rows
        .iter()
        .map(|(_, b, t)| b * 8.0 / t.as_secs_f64().max(1e-3) / 1e6)
        .collect();
    println!(
        "  median per-member throughput {:.1} Mbit/s",
        quantile(&rates, 0.5)
    );
    println!("  the internet host saw requests from: {}", seen.join(", "));
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
