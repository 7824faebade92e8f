//! `linkpool-testbed demo`: the one-command demonstration.
//!
//! It builds the three-member co-op of `topologies/coop3.toml`, starts the proxy and a
//! gateway on every router, all sharing their lines on the mesh, downloads a file on every
//! member's LAN client at once through linkpool while printing each uplink's throughput
//! every second, shows pooling on the member with two uplinks and on the member with the
//! slowest line (the same download on its own line alone, then through the pool, with
//! each line's share, its neighbours' included), and reports what each uplink carried,
//! what the internet saw, and what the daemons say about themselves.

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

/// A download to nowhere that prints its size and time; the URL follows.
const CURL_TIMED: [&str; 8] = [
    "curl",
    "-sS",
    "--max-time",
    "120",
    "-o",
    "/dev/null",
    "-w",
    "%{size_download} %{time_total}\n",
];

/// [`CURL_TIMED`] of `url`.
fn curl_timed(url: &str) -> Vec<&str> {
    CURL_TIMED.iter().copied().chain([url]).collect()
}

/// What a [`CURL_TIMED`] printed: (bytes, seconds).
fn curl_figures(log: &str) -> Option<(f64, f64)> {
    let mut words = log.split_whitespace();
    let size = words.next()?.parse().ok()?;
    Some((size, words.next()?.parse().ok()?))
}

/// Waits for a [`CURL_TIMED`]: (bytes, seconds), `None` if it failed.
fn timed_download(spawn: Result<Process, Error>) -> Result<Option<(f64, f64)>, Error> {
    let mut curl = spawn?;
    let done = curl
        .wait_timeout(Duration::from_secs(125))
        .map_err(|e| Error::new(format!("waiting for curl: {e}")))?;
    Ok(curl_figures(&curl.log()).filter(|_| done.is_some_and(|s| s.success())))
}

/// Router `i`: the same download on its best uplink alone (the router's own traffic,
/// which does not go through the pool, leaves by its first WAN), then from its LAN client
/// through the pool, with what each of `names` (its uplinks, or every line of the co-op)
/// carried of it. Prints both; returns a failure if the pooled download failed or fewer
/// than `busy` of the lines `names` for which `counts` holds carried a real part of it
/// (5 %).
fn side_by_side(
    coop: &Coop,
    i: usize,
    url: &str,
    names: &[String],
    (busy, counts): (usize, &dyn Fn(&str) -> bool),
) -> Result<Option<String>, Error> {
    let router = coop.router(i);
    let alone = timed_download(router.spawn(&curl_timed(url)))?;
    let links: Vec<Link> = names
        .iter()
        .map(|n| coop.link(n).cloned())
        .collect::<Result<_, _>>()?;
    let before: Vec<u64> = links.iter().map(|l| bytes(l).1).collect();
    let pooled = timed_download(coop.client(i).spawn(&curl_timed(url)))?;
    let carried: Vec<u64> = links
        .iter()
        .zip(&before)
        .map(|(l, b)| bytes(l).1 - b)
        .collect();
    let total = carried.iter().sum::<u64>().max(1) as f64;
    let mbit = |(size, secs): (f64, f64)| size * 8.0 / secs / 1e6;
    let line = |what: &str, figures: Option<(f64, f64)>| match figures {
        Some((size, secs)) => format!(
            "  {what:<34} {size:>10} bytes in {secs:>5.1} s = {:>5.1} Mbit/s",
            mbit((size, secs))
        ),
        None => format!("  {what:<34} failed"),
    };
    let own = &router.wan_links()[0];
    println!("{}", line(&format!("r{i} alone, on {own}"), alone));
    let shares: Vec<String> = names
        .iter()
        .zip(&carried)
        .map(|(n, c)| format!("{n} {:.0} %", *c as f64 * 100.0 / total))
        .collect();
    let gain = alone
        .zip(pooled)
        .map(|(a, p)| format!(" ({:.2}x)", mbit(p) / mbit(a)))
        .unwrap_or_default();
    println!(
        "{}{gain}; shares {}",
        line(&format!("c{i} through the pool"), pooled),
        shares.join(", ")
    );
    Ok(if pooled.is_none() {
        Some(format!("r{i}'s pooled download failed"))
    } else if names
        .iter()
        .zip(&carried)
        .filter(|&(n, &c)| counts(n) && (c as f64) >= 0.05 * total)
        .count()
        < busy
    {
        Some(format!(
            "r{i}'s pooled download left lines idle: {}",
            shares.join(", ")
        ))
    } else {
        None
    })
}

/// Runs the demo, printing progress and a report to stdout.
pub fn run() -> Result<(), Error> {
    let topology = Topology::parse(COOP3, "topologies/coop3.toml")?;
    println!(
        "[1/6] building co-op `{}` ({} routers, proxy, internet host)...",
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

    println!(
        "[2/6] starting linkpool: the proxy, then a gateway on every router, each lending \
         its line to its neighbours on the mesh..."
    );
    let pool = Pool::start_reporting_sharing(&coop, true, |line| println!("      {line}"))?;

    println!(
        "[3/6] downloading {} ({} bytes) on every member's LAN client at once...",
        file.name, file.size
    );
    let uplinks: Vec<String> = coop.routers().iter().flat_map(|r| r.wan_links()).collect();
    let mut meter = TrafficMeter::new(&coop, &uplinks)?;
    let url = coop.internet().url_name(&file.path());
    let mut downloads: Vec<(String, Process)> = Vec::new();
    for i in 1..=coop.routers().len() {
        let client = coop.client(i);
        let p = client.spawn(&curl_timed(&url))?;
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

    let mut failures = Vec::new();
    // The routers' own downloads, measured on their uplink alone, are the ones allowed to
    // show a router's address.
    let mut own = Vec::new();
    let url_v4 = coop.internet().url_v4(&file.path());
    if let Some(i) = coop.routers().iter().position(|r| r.wan_links().len() > 1) {
        let names = coop.router(i + 1).wan_links();
        println!(
            "[4/6] pooling: r{} has {} uplinks ({}); the same download on its best uplink \
             alone, then from its LAN client through the pool (its neighbours' lines too)",
            i + 1,
            names.len(),
            names.join(", ")
        );
        let every = |_: &str| true;
        failures.extend(side_by_side(
            &coop,
            i + 1,
            &url_v4,
            &names,
            (names.len(), &every),
        )?);
        own.push(coop.router(i + 1).public_addrs().0.to_string());
    }
    // The last member with a single line (the mobile one in coop3), through its
    // neighbours' lines.
    let single = coop
        .routers()
        .iter()
        .rfind(|r| r.wan_links().len() == 1)
        .map(|r| r.index())
        .filter(|_| coop.routers().len() > 1);
    if let Some(i) = single {
        let names: Vec<String> = coop.routers().iter().flat_map(|r| r.wan_links()).collect();
        println!(
            "[5/6] neighbours: r{i} lends and borrows on the mesh; the same download on its \
             own line alone, then from its LAN client over its own line and its \
             neighbours' ({})",
            names.join(", ")
        );
        // At least one neighbour's line (a relay lends its best one; the member's own,
        // slower, is used only when it delivers sooner than waiting for the faster).
        let own_lines = coop.router(i).wan_links();
        let neighbours = |n: &str| !own_lines.iter().any(|o| o == n);
        failures.extend(side_by_side(&coop, i, &url_v4, &names, (1, &neighbours))?);
        own.push(coop.router(i).public_addrs().0.to_string());
    }

    println!("[6/6] report");
    println!(
        "  {:<8} {:>12} {:>9} {:>12}",
        "member", "bytes", "seconds", "Mbit/s"
    );
    for (role, p) in &mut downloads {
        let status = p.kill()?;
        let (size, secs) = curl_figures(&p.log()).unwrap_or((0.0, f64::NAN));
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
        .filter(|a| !own.contains(a))
        .collect();
    if exposed.is_empty() {
        let own = if own.is_empty() {
            String::new()
        } else {
            format!(
                " and {} (the routers' own downloads, not through the pool)",
                own.join(", ")
            )
        };
        println!(
            "  the internet host saw requests from: {} (the proxy{own}: no member's LAN \
             traffic left by a router's own address)",
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
