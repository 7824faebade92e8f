//! `linkpool-testbed demo`: the one-command demonstration.
//!
//! It builds the three-member co-op of `topologies/coop3.toml`, starts the proxy and a
//! gateway on every router, downloads a file on every member's LAN client at once through
//! linkpool while printing each uplink's throughput every second, and reports what each
//! uplink carried, what the internet saw, and what the daemons say about themselves.

use std::fmt::Write as _;

use crate::pool::Pool;
use std::time::{Duration, Instant};

use crate::{Coop, Direction, Error, Link, Process, Topology};

/// The topology the demo uses, shipped in the binary.
pub const COOP3: &str = include_str!("../topologies/coop3.toml");

/// Throughput of a set of links between samples, for progress lines and reports.
pub struct TrafficMeter {
    links: Vec<(String, Link)>,
    last: Vec<(u64, u64)>,
    first: Vec<(u64, u64)>,
    /// Each link's highest one-sample rate (down + up), Mbit/s.
    peak: Vec<f64>,
    last_at: Instant,
    started: Instant,
}

impl TrafficMeter {
    /// Starts measuring the named links of `coop` (e.g. every `rN-wan`).
    pub fn new(coop: &Coop, names: &[String]) -> Result<TrafficMeter, Error> {
        let links: Vec<(String, Link)> = names
            .iter()
            .map(|n| Ok((n.clone(), coop.link(n)?.clone())))
            .collect::<Result<_, Error>>()?;
        let now = links.iter().map(|(_, l)| bytes(l)).collect::<Vec<_>>();
        Ok(TrafficMeter {
            links,
            first: now.clone(),
            peak: vec![0.0; now.len()],
            last: now,
            last_at: Instant::now(),
            started: Instant::now(),
        })
    }

    /// One line: each link's downstream/upstream Mbit/s since the previous sample, and the
    /// total.
    pub fn sample(&mut self) -> String {
        let now = Instant::now();
        let secs = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let mut line = format!("{:>5.1}s ", now.duration_since(self.started).as_secs_f64());
        let mut total = 0.0;
        for (((name, link), last), peak) in self
            .links
            .iter()
            .zip(self.last.iter_mut())
            .zip(self.peak.iter_mut())
        {
            let (up, down) = bytes(link);
            let down_mbit = (down - last.1) as f64 * 8.0 / secs / 1e6;
            let up_mbit = (up - last.0) as f64 * 8.0 / secs / 1e6;
            total += down_mbit + up_mbit;
            *peak = peak.max(down_mbit + up_mbit);
            let _ = write!(line, " {name} ↓{down_mbit:6.1} ↑{up_mbit:5.1}");
            *last = (up, down);
        }
        self.last_at = now;
        let _ = write!(line, "  total {total:6.1} Mbit/s");
        line
    }

    /// A table of what each link carried since the meter started, with its peak rate,
    /// and the total with its average rate over the whole time.
    pub fn report(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut out = format!(
            "  {:<9} {:>14} {:>14} {:>16}\n",
            "uplink", "down bytes", "up bytes", "peak Mbit/s"
        );
        let mut total = 0u64;
        for (((name, link), first), peak) in self.links.iter().zip(&self.first).zip(&self.peak) {
            let (up, down) = bytes(link);
            total += (up - first.0) + (down - first.1);
            let _ = writeln!(
                out,
                "  {name:<9} {:>14} {:>14} {peak:>16.1}",
                down - first.1,
                up - first.0,
            );
        }
        let _ = writeln!(
            out,
            "  {:<9} {:>29} {:>16}",
            "total",
            total,
            format!("avg {:.1}", total as f64 * 8.0 / secs / 1e6)
        );
        out
    }
}

fn bytes(link: &Link) -> (u64, u64) {
    (
        link.stats(Direction::Upstream).bytes_out,
        link.stats(Direction::Downstream).bytes_out,
    )
}

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

    println!("[2/4] starting linkpool: the proxy, then a gateway on every router...");
    let pool = Pool::start_reporting(&coop, |line| println!("      {line}"))?;

    println!(
        "[3/4] downloading {} ({} bytes) on every member's LAN client at once...",
        file.name, file.size
    );
    let uplinks: Vec<String> = coop.routers().iter().flat_map(|r| r.wan_links()).collect();
    let mut meter = TrafficMeter::new(&coop, &uplinks)?;
    let url = coop.internet().url_name(&file.path());
    let mut downloads: Vec<(String, Process)> = Vec::new();
    for i in 1..=coop.routers().len() {
        let client = coop.client(i);
        let p = client.spawn(&[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}\n",
            &url,
        ])?;
        downloads.push((client.role().to_string(), p));
    }
    let deadline = Instant::now() + Duration::from_secs(130);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!("      {}", meter.sample());
        let mut running = 0;
        for (_, p) in downloads.iter_mut() {
            if p.try_wait().ok().flatten().is_none() {
                running += 1;
            }
        }
        if running == 0 || Instant::now() > deadline {
            break;
        }
    }

    println!("[4/4] report");
    let mut failures = Vec::new();
    println!(
        "  {:<8} {:>12} {:>9} {:>12}",
        "member", "bytes", "seconds", "Mbit/s"
    );
    for (role, p) in &mut downloads {
        let status = p.kill()?;
        let log = p.log();
        let mut words = log.split_whitespace();
        let size: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        let secs: f64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(f64::NAN);
        let ok = if status.success() && size as u64 == file.size {
            ""
        } else {
            failures.push(format!("{role}'s download failed"));
            "  (failed)"
        };
        println!(
            "  {role:<8} {size:>12} {secs:>9.1} {:>12.1}{ok}",
            size * 8.0 / secs / 1e6
        );
    }
    print!("{}", meter.report());
    let mut seen: Vec<String> = coop
        .internet()
        .http_requests()
        .iter()
        .map(|r| r.peer.to_string())
        .collect();
    seen.sort();
    seen.dedup();
    let proxy = coop.proxy();
    let exposed: Vec<&String> = seen
        .iter()
        .filter(|a| **a != proxy.addr_v4().to_string() && **a != proxy.addr_v6().to_string())
        .collect();
    if exposed.is_empty() {
        println!(
            "  the internet host saw requests from: {} (the proxy: no router's own WAN address appears)",
            seen.join(", ")
        );
    } else {
        failures.push(format!(
            "the internet host saw addresses other than the proxy's: {exposed:?}"
        ));
    }
    println!("\n  what each gateway says (`linkpool status`):");
    for i in 1..=coop.routers().len() {
        for line in pool.gateway_status(&coop, i, false)?.lines() {
            println!("    {line}");
        }
    }
    println!("\n  what the proxy says (`linkpool-proxy status`):");
    for line in pool.proxy_status(&coop, false)?.lines() {
        println!("    {line}");
    }
    if failures.is_empty() {
        println!("\n  demo ok: every member's download went through the pool");
        Ok(())
    } else {
        Err(Error::new(format!("demo failed: {}", failures.join("; "))))
    }
}
