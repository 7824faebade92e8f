//! `bench-link`: how accurately the emulator keeps a delay, idle and under load. Prints
//! figures; asserts nothing. Also the measuring helpers the tests share.

use std::fmt::Write as _;
use std::time::Duration;

use crate::{Coop, Direction, Error, LinkParams, Topology, cpu_seconds};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// One-way delay set on the measured link.
    pub delay: Duration,
    /// Background load (UDP, bits per second) sent through the link during the loaded phase.
    pub load_bps: u64,
    /// Pings per phase (10 ms apart).
    pub pings: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            delay: Duration::from_millis(10),
            load_bps: 100_000_000,
            pings: 500,
        }
    }
}

/// RTTs in milliseconds from `ping` output (`time=12.3 ms`).
pub fn ping_rtts(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Number of echo requests `ping` says it sent.
pub fn ping_transmitted(output: &str) -> Option<u64> {
    output
        .lines()
        .find(|l| l.contains("packets transmitted"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The receiver's throughput in bits/s from `iperf3 --json` output (`end.sum_received`).
pub fn iperf3_received_bps(json: &str) -> Option<f64> {
    // `sum_received` appears only in the final `end` section (TCP); UDP's is the last `sum`.
    let sum = &json[json
        .rfind("\"sum_received\"")
        .or_else(|| json.rfind("\"sum\""))?..];
    let field = &sum[sum.find("\"bits_per_second\"")? + "\"bits_per_second\"".len()..];
    let number: String = field
        .trim_start_matches([' ', '\t', ':'])
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        .collect();
    number.parse().ok()
}

/// The `q` quantile (0..=1) of `values` (sorted copy, nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs the benchmark on a one-router co-op (link `r1-wan`; ping from the router to the
/// core, so only that link is crossed) and returns the report.
pub fn bench_link(options: &BenchOptions) -> Result<String, Error> {
    let coop = Coop::build(&Topology::coop(1))?;
    let router = coop.router(1);
    let link = coop.link("r1-wan")?;
    let core_addr = router.wan_gateway().0.to_string();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "bench-link: link r1-wan, delay {:?} each way, {} pings 10 ms apart per phase",
        options.delay, options.pings
    );
    let count = options.pings.to_string();
    let ping = || -> Result<Vec<f64>, Error> {
        let out = router.exec_ok(&["ping", "-n", "-q", "-c", "1", "-w", "2", &core_addr])?;
        drop(out);
        let out = router.exec(&[
            "ping", "-n", "-i", "0.01", "-c", &count, "-W", "2", &core_addr,
        ])?;
        Ok(ping_rtts(&String::from_utf8_lossy(&out.stdout)))
    };
    let base = ping()?;
    let _ = writeln!(
        report,
        "  base RTT without emulated delay: median {:.3} ms, p99 {:.3} ms",
        quantile(&base, 0.5),
        quantile(&base, 0.99)
    );
    let base_median = quantile(&base, 0.5);

    link.set(LinkParams {
        delay: options.delay,
        ..LinkParams::default()
    });
    let expected = 2.0 * options.delay.as_secs_f64() * 1e3 + base_median;
    let phase = |label: &str, rtts: Vec<f64>| {
        let errors: Vec<f64> = rtts.iter().map(|r| r - expected).collect();
        format!(
            "  {label}: {} replies; RTT error vs {:.3} ms: p1 {:+.3} p50 {:+.3} p90 {:+.3} p99 {:+.3} max {:+.3} ms\n",
            rtts.len(),
            expected,
            quantile(&errors, 0.01),
            quantile(&errors, 0.5),
            quantile(&errors, 0.9),
            quantile(&errors, 0.99),
            quantile(&errors, 1.0)
        )
    };
    link.reset_lateness();
    report += &phase("idle  ", ping()?);
    let _ = writeln!(report, "  emulator lateness (idle): {}", lateness(link));

    let inet = coop.internet();
    link.reset_lateness();
    let port = inet.iperf3_ports()[0].to_string();
    let seconds = ((options.pings as f64 * 0.012) as u64 + 2).to_string();
    let load = router.spawn(&[
        "iperf3",
        "--client",
        &inet.addr_v4().to_string(),
        "--port",
        &port,
        "--udp",
        "--bitrate",
        &options.load_bps.to_string(),
        "--length",
        "1400",
        "--time",
        &seconds,
        "--json",
    ])?;
    std::thread::sleep(Duration::from_millis(500));
    let before = link.stats(Direction::Upstream);
    let started = std::time::Instant::now();
    let rtts = ping()?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = link.stats(Direction::Upstream);
    drop(load);
    let label = format!("load {} Mbit/s", options.load_bps / 1_000_000);
    report += &phase(&label, rtts);
    let _ = writeln!(
        report,
        "  emulator lateness (loaded): {}; upstream carried {} frames, {:.1} Mbit/s during the pings",
        lateness(link),
        after.frames_out - before.frames_out,
        (after.bytes_out - before.bytes_out) as f64 * 8.0 / elapsed / 1e6
    );

    // Rate: TCP through a 100 Mbit/s bottleneck (Ethernet, IP and TCP headers make about
    // 95 % of the link rate the best possible goodput).
    link.set(LinkParams {
        delay: options.delay,
        rate_bps: Some(100_000_000),
        ..LinkParams::default()
    });
    for (label, reverse) in [("upload", false), ("download", true)] {
        let mut argv = vec![
            "iperf3",
            "--client",
            "198.51.100.80",
            "--port",
            &port,
            "--time",
            "4",
            "--omit",
            "1",
            "--json",
        ];
        if reverse {
            argv.push("--reverse");
        }
        let out = router.exec_ok(&argv)?;
        let bps = iperf3_received_bps(&out).unwrap_or(f64::NAN);
        let _ = writeln!(
            report,
            "  rate 100mbit, delay {:?}: iperf3 TCP {label} {:.1} Mbit/s ({:.1} % of the link rate)",
            options.delay,
            bps / 1e6,
            bps / 1e6
        );
    }
    Ok(report)
}

fn lateness(link: &crate::Link) -> String {
    let q = [0.5, 0.9, 0.99, 0.999, 1.0];
    let fmt = |d: Option<Vec<Duration>>| match d {
        None => "no frames".to_string(),
        Some(v) => format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {} µs",
            v[0].as_micros(),
            v[1].as_micros(),
            v[2].as_micros(),
            v[3].as_micros(),
            v[4].as_micros()
        ),
    };
    format!(
        "up {} / down {}",
        fmt(link.lateness_percentiles(Direction::Upstream, &q)),
        fmt(link.lateness_percentiles(Direction::Downstream, &q))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_and_iperf3_output() {
        let ping = "64 bytes from 1.2.3.4: icmp_seq=1 ttl=63 time=40.1 ms\n64 bytes from 1.2.3.4: icmp_seq=2 ttl=63 time=39.9 ms\n\n--- x ---\n5 packets transmitted, 2 received, 60% packet loss\n";
        assert_eq!(ping_rtts(ping), vec![40.1, 39.9]);
        assert_eq!(ping_transmitted(ping), Some(5));
        let json = r#"{"intervals":[{"sum":{"bits_per_second":1}}],"end":{"sum_sent":{"bits_per_second":2.1e7},"sum_received":{"bits_per_second":\t19500000.5}}}"#.replace("\\t", "\t");
        assert_eq!(iperf3_received_bps(&json), Some(19_500_000.5));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }
}

/// What `bench-pool` measures on.
#[derive(Clone, Debug)]
pub struct PoolBenchOptions {
    /// The member's uplink rate, bits per second (0: unlimited).
    pub rate_bps: u64,
    /// The uplink's one-way delay.
    pub delay: Duration,
    /// Seconds per iperf3 run.
    pub seconds: u32,
}

impl Default for PoolBenchOptions {
    fn default() -> Self {
        PoolBenchOptions {
            rate_bps: 100_000_000,
            delay: Duration::from_millis(10),
            seconds: 8,
        }
    }
}

/// `bench-pool`: TCP throughput through linkpool against the same uplink used directly
/// (the reference, measured in the same run), both directions, and the gateway's and
/// proxy's resident memory and CPU time under that load. Prints figures; asserts nothing.
pub fn bench_pool(options: &PoolBenchOptions) -> Result<String, Error> {
    use crate::pool::Pool;
    let mut topology = Topology::coop(1);
    topology.routers[0].isp = crate::LinkSpec::both(LinkParams {
        rate_bps: (options.rate_bps > 0).then_some(options.rate_bps),
        delay: options.delay,
        ..LinkParams::default()
    });
    let coop = Coop::build(&topology)?;
    let pool = Pool::start(&coop)?;
    let target = coop.internet().addr_v4().to_string();
    let port = coop.internet().iperf3_ports()[0].to_string();
    let secs = options.seconds.to_string();
    let iperf = |node: &crate::Node, reverse: bool| -> Result<f64, Error> {
        let mut argv = vec!["iperf3", "-J", "-c", &target, "-p", &port, "-t", &secs];
        if reverse {
            argv.push("-R");
        }
        let out = node.exec_ok(&argv)?;
        iperf3_received_bps(&out).ok_or_else(|| Error::new(format!("no iperf3 result in: {out}")))
    };
    let pids: Vec<u32> = pool
        .gateways
        .iter()
        .chain(pool.proxy.as_ref())
        .map(|p| p.pid())
        .collect();
    let mut out = format!(
        "bench-pool: one member, uplink {} at {:?} one-way, {} s per run\n",
        if options.rate_bps > 0 {
            format!("{} Mbit/s", options.rate_bps / 1_000_000)
        } else {
            "unlimited".to_string()
        },
        options.delay,
        options.seconds
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>16} {:>16} {:>8}",
        "direction", "direct Mbit/s", "linkpool Mbit/s", "ratio"
    );
    let mut peak_rss = [0u64; 2];
    for (label, reverse) in [("download", true), ("upload", false)] {
        let direct = iperf(coop.router(1), reverse)?;
        let sampler = RssSampler::start(&pids);
        let pooled = iperf(coop.client(1), reverse)?;
        for (peak, rss) in peak_rss.iter_mut().zip(sampler.stop()) {
            *peak = (*peak).max(rss);
        }
        let _ = writeln!(
            out,
            "  {label:<10} {:>16.1} {:>16.1} {:>8.2}",
            direct / 1e6,
            pooled / 1e6,
            pooled / direct
        );
    }
    let cpu: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let _ = writeln!(
        out,
        "  gateway: peak resident {} KiB, {:.1} s CPU; proxy: peak resident {} KiB, {:.1} s CPU",
        peak_rss[0],
        cpu[0],
        peak_rss[1],
        cpu.get(1).copied().unwrap_or(0.0)
    );
    let _ = writeln!(
        out,
        "  (direct = iperf3 from the router itself over the same emulated uplink)\n  \
         daemons: {} ({}=target/cross/x86_64-unknown-linux-musl/release measures the router build)",
        pool.linkpool_bin().display(),
        crate::BIN_DIR_ENV
    );
    Ok(out)
}

/// Samples the resident set (VmRSS, KiB) of processes every 100 ms in a thread.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pids: &[u32]) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pids = pids.to_vec();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(rss_kib(*pid));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        RssSampler { stop, thread }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
