//! `linkpool-testbed bench`: the scenario benchmark. For each [`Scenario`] (the uplinks of
//! one member router, [`crate::scenario`]) one co-op is built, the proxy and the gateway
//! are started, and in that same run it measures, one transfer after the other, each
//! `seconds` long, each replaying the scenario's events on its own clock (from its first
//! byte):
//!
//! | figure | how |
//! | --- | --- |
//! | `tcp_mbit` | one TCP download from the internet host to c1, through linkpool: bytes read within `seconds` of the first byte (every byte checked against the sent pattern) |
//! | `tcp8_mbit` | 8 such downloads at once, their sum |
//! | `udp_mbit` | `iperf3 -u -R` from c1, offered at the sum of the paths' rates (datagrams sized to the tunnel MTU), what c1 received |
//! | `mptcp_mbit` | the same download as `tcp_mbit` over kernel MPTCP from r1 itself (no linkpool), one subflow per path (`mptcp_subflows`) |
//! | `single_mbit`, `best_single_mbit`, `sum_single_mbit` | the same download as plain TCP from r1 bound to each WAN in turn: each path alone |
//! | `sum_rate_mbit` | the sum of the paths' downstream rates as configured |
//! | `failover_gap_ms` | the longest run of empty 10 ms bins of bytes received by `tcp_mbit`'s download from the first event on (`mptcp_failover_gap_ms`: of MPTCP's) |
//! | `connections_broken` | linkpool downloads (1 + 8 + the loaded-RTT one) that failed, got wrong bytes, or had no data in the transfer's last second and none in the 10 s after |
//! | `rtt_idle_ms`, `rtt_loaded_ms` | median RTT of `ping -i 0.01` from c1 through linkpool, idle, and during a further single download from 1 s after its first byte |
//! | `redundancy_overhead` | the spread counters' `redundancy_overhead_pct` ÷ 100 from the proxy's (else the gateway's) `status --json` at the end; `null` while the daemons report none |
//! | `gateway_cpu_s_per_gb`, `proxy_cpu_s_per_gb` | utime + stime of the daemons (`/proc/PID/stat`) over the linkpool transfers ÷ the GB (10⁹ bytes) those delivered |
//! | `path_share`, `wire_overhead` | per path, its share of the downstream bytes the emulated links carried during `tcp_mbit`'s download; those bytes (Ethernet frames) ÷ the goodput − 1 (and the same for MPTCP) |
//! | `via` | per path, the neighbour whose line it is (`r2`), `null` for the member's own |
//! | `relay_cpu_s_per_gb` | utime + stime of the neighbours' gateways over the linkpool transfers ÷ the GB they relayed (their status' `relayed_for` bytes, up and down) |
//! | `owner_alone_mbit`, `owner_lending_mbit` | with `owners_busy`: per neighbour, its owner's download (from the internet host to its client, through its own gateway and line) in a transfer's window alone, and while the member's `tcp_mbit` download borrows its line (`mptcp_owner_lending_mbit`: while the MPTCP one does); `owner_lending_vs_alone`: the lowest ratio |
//!
//! A path through a neighbour (`via`) is reached over the mesh: linkpool relays through the
//! neighbour's gateway; MPTCP and the path alone go from r1 out of an address of its own
//! (`10.253.N.1` on `mesh0`) that r1 routes to neighbour N, which forwards and masquerades
//! it out of its WAN (each neighbour routing one subflow, as OpenMPTCProuter would need).
//!
//! Between transfers every link is set back to the scenario's parameters, and the next
//! waits until the gateway shows every uplink active and queues have drained. Prints
//! figures; asserts nothing about them.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::bench::{ping_rtts, ping_transmitted, quantile};
use crate::failover_bench::{
    BIN, PatternCheck, Proto, Serve, Server, longest_stall, mptcp_info, open_from, ping_received,
    setup_mptcp_over, uplinks_active,
};
use crate::pool::Pool;
use crate::scenario::{Event, Scenario, format_seconds};
use crate::{Coop, Direction, Error, Link, cpu_seconds};

/// Parallel flows of `tcp8_mbit`.
pub const PARALLEL_FLOWS: usize = 8;
/// A download silent in its last second is given this long to resume before it counts
/// as broken.
const RESUME_GRACE: Duration = Duration::from_secs(10);
/// First port of the download servers on the internet host (one per flow).
const DOWNLOAD_PORT: u16 = 9200;
/// First port of the neighbours' owners' downloads (`owners_busy`).
const OWNER_PORT: u16 = 9300;
/// The owners' downloads start this long before the measured one (TCP out of slow start).
const OWNER_LEAD: Duration = Duration::from_secs(2);
/// Interval of the RTT pings.
const PING_INTERVAL_S: &str = "0.01";
/// Pings of the idle RTT (10 ms apart).
const IDLE_PINGS: usize = 200;
/// Rate assumed for a path without a rate limit when offering UDP.
const UNLIMITED_PATH_BPS: u64 = 100_000_000;

/// What `bench` runs.
#[derive(Clone, Debug)]
pub struct ScenarioBenchOptions {
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Each transfer's length instead of the files' `seconds` (events scaled with it).
    pub seconds: Option<Duration>,
    /// The senders' TCP congestion control (set on the internet host, which sends every
    /// download): `cubic`, `bbr`, `reno`, ...
    pub congestion_control: String,
}

impl ScenarioBenchOptions {
    /// The senders' congestion control unless told otherwise: Linux's default, what most
    /// servers run (the machine's own default may differ: BBR on the development VM).
    pub const DEFAULT_CONGESTION_CONTROL: &str = "cubic";
}

/// The figures of one scenario; `None` where not measured.
#[derive(Clone, Debug, Default)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its file.
    pub origin: String,
    /// Each transfer's length, seconds.
    pub seconds: f64,
    /// Wall-clock seconds the scenario took, co-op built and torn down included.
    pub run_seconds: f64,
    /// Each path's parameters, as text.
    pub paths: Vec<String>,
    /// Per path, the neighbour whose line it is (`r2`).
    pub via: Vec<Option<String>>,
    /// Its events, as text (at their times in this run).
    pub events: Vec<String>,
    /// The gateway's tunnel MTU.
    pub tunnel_mtu: Option<u64>,
    /// One TCP download through linkpool, Mbit/s.
    pub tcp_mbit: Option<f64>,
    /// 8 parallel downloads through linkpool, Mbit/s in all.
    pub tcp8_mbit: Option<f64>,
    /// One UDP flow through linkpool, received Mbit/s.
    pub udp_mbit: Option<f64>,
    /// What the UDP flow was offered, Mbit/s.
    pub udp_offered_mbit: Option<f64>,
    /// Share of the UDP datagrams lost.
    pub udp_loss: Option<f64>,
    /// The download over kernel MPTCP, Mbit/s.
    pub mptcp_mbit: Option<f64>,
    /// Subflows MPTCP had at most (the first included).
    pub mptcp_subflows: Option<u64>,
    /// Each path alone, Mbit/s.
    pub single_mbit: Vec<Option<f64>>,
    /// The sum of the paths' downstream rates, Mbit/s.
    pub sum_rate_mbit: Option<f64>,
    /// Longest stall of the linkpool download from the first event on, ms.
    pub failover_gap_ms: Option<f64>,
    /// The same of the MPTCP download.
    pub mptcp_failover_gap_ms: Option<f64>,
    /// Linkpool downloads that broke.
    pub connections_broken: Option<u64>,
    /// MPTCP downloads that broke (of 1).
    pub mptcp_connections_broken: Option<u64>,
    /// Idle RTT through linkpool, median, ms.
    pub rtt_idle_ms: Option<f64>,
    /// RTT through linkpool under a saturating download, median, ms.
    pub rtt_loaded_ms: Option<f64>,
    /// Its 90th percentile.
    pub rtt_loaded_p90_ms: Option<f64>,
    /// Share of the loaded pings unanswered.
    pub rtt_loaded_lost: Option<f64>,
    /// Redundant bytes over data bytes, from the daemons' status.
    pub redundancy_overhead: Option<f64>,
    /// Gateway CPU seconds per GB delivered through linkpool.
    pub gateway_cpu_s_per_gb: Option<f64>,
    /// Proxy CPU seconds per GB.
    pub proxy_cpu_s_per_gb: Option<f64>,
    /// The neighbours' gateways' CPU seconds per GB they relayed.
    pub relay_cpu_s_per_gb: Option<f64>,
    /// With `owners_busy`, per neighbour: its owner's download alone, Mbit/s.
    pub owner_alone_mbit: Option<Vec<f64>>,
    /// The same while the member's linkpool download borrows the neighbour's line.
    pub owner_lending_mbit: Option<Vec<f64>>,
    /// The same while the member's MPTCP download does.
    pub mptcp_owner_lending_mbit: Option<Vec<f64>>,
    /// Each path's share of the downstream link bytes of the linkpool download.
    pub path_share: Vec<f64>,
    /// The same for MPTCP.
    pub mptcp_path_share: Vec<f64>,
    /// Link bytes over goodput − 1, linkpool download.
    pub wire_overhead: Option<f64>,
    /// The same for MPTCP.
    pub mptcp_wire_overhead: Option<f64>,
    /// What went wrong or looked odd (broken connections, missing subflows, ...).
    pub notes: Vec<String>,
    /// Why the scenario could not be measured, if it could not.
    pub error: Option<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl ScenarioResult {
    /// The best path alone, Mbit/s.
    pub fn best_single_mbit(&self) -> Option<f64> {
        let v: Option<Vec<f64>> = self.single_mbit.iter().copied().collect();
        v.filter(|v| !v.is_empty())
            .map(|v| v.into_iter().fold(0.0, f64::max))
    }

    /// The owners' lowest throughput while lending over alone.
    pub fn owner_lending_vs_alone(&self) -> Option<f64> {
        let (alone, lending) = (
            self.owner_alone_mbit.as_ref()?,
            self.owner_lending_mbit.as_ref()?,
        );
        alone
            .iter()
            .zip(lending)
            .filter_map(|(&a, &l)| ratio(Some(l), Some(a)))
            .reduce(f64::min)
    }

    /// The paths alone, summed, Mbit/s.
    pub fn sum_single_mbit(&self) -> Option<f64> {
        let v: Option<Vec<f64>> = self.single_mbit.iter().copied().collect();
        v.filter(|v| !v.is_empty()).map(|v| v.into_iter().sum())
    }

    /// The figures as a JSON object (the keys of issue 9, and more).
    pub fn json(&self) -> Value {
        let best = self.best_single_mbit();
        let sum = self.sum_single_mbit();
        let mut m = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            m.insert(key.to_string(), rounded(value));
        };
        put("name", json!(self.name));
        put("description", json!(self.description));
        put("file", json!(self.origin));
        put("seconds", json!(self.seconds));
        put("run_seconds", json!(self.run_seconds));
        put("paths", json!(self.paths));
        put("via", json!(self.via));
        put("events", json!(self.events));
        put("tunnel_mtu", json!(self.tunnel_mtu));
        put("tcp_mbit", json!(self.tcp_mbit));
        put("tcp8_mbit", json!(self.tcp8_mbit));
        put("udp_mbit", json!(self.udp_mbit));
        put("udp_offered_mbit", json!(self.udp_offered_mbit));
        put("udp_loss", json!(self.udp_loss));
        put("mptcp_mbit", json!(self.mptcp_mbit));
        put("mptcp_subflows", json!(self.mptcp_subflows));
        put("single_mbit", json!(self.single_mbit));
        put("best_single_mbit", json!(best));
        put("sum_single_mbit", json!(sum));
        put("sum_rate_mbit", json!(self.sum_rate_mbit));
        put("tcp_vs_mptcp", json!(ratio(self.tcp_mbit, self.mptcp_mbit)));
        put("tcp_vs_best_single", json!(ratio(self.tcp_mbit, best)));
        put("tcp_vs_sum_single", json!(ratio(self.tcp_mbit, sum)));
        put(
            "tcp_vs_sum_rate",
            json!(ratio(self.tcp_mbit, self.sum_rate_mbit)),
        );
        put("udp_vs_best_single", json!(ratio(self.udp_mbit, best)));
        put("udp_vs_sum_single", json!(ratio(self.udp_mbit, sum)));
        put("failover_gap_ms", json!(self.failover_gap_ms));
        put("mptcp_failover_gap_ms", json!(self.mptcp_failover_gap_ms));
        put("connections_broken", json!(self.connections_broken));
        put(
            "mptcp_connections_broken",
            json!(self.mptcp_connections_broken),
        );
        put("rtt_idle_ms", json!(self.rtt_idle_ms));
        put("rtt_loaded_ms", json!(self.rtt_loaded_ms));
        put("rtt_loaded_p90_ms", json!(self.rtt_loaded_p90_ms));
        put("rtt_loaded_lost", json!(self.rtt_loaded_lost));
        put("redundancy_overhead", json!(self.redundancy_overhead));
        put("gateway_cpu_s_per_gb", json!(self.gateway_cpu_s_per_gb));
        put("proxy_cpu_s_per_gb", json!(self.proxy_cpu_s_per_gb));
        put("relay_cpu_s_per_gb", json!(self.relay_cpu_s_per_gb));
        put("owner_alone_mbit", json!(self.owner_alone_mbit));
        put("owner_lending_mbit", json!(self.owner_lending_mbit));
        put(
            "mptcp_owner_lending_mbit",
            json!(self.mptcp_owner_lending_mbit),
        );
        put(
            "owner_lending_vs_alone",
            json!(self.owner_lending_vs_alone()),
        );
        put("path_share", json!(self.path_share));
        put("mptcp_path_share", json!(self.mptcp_path_share));
        put("wire_overhead", json!(self.wire_overhead));
        put("mptcp_wire_overhead", json!(self.mptcp_wire_overhead));
        put("notes", json!(self.notes));
        put("error", json!(self.error));
        Value::Object(m)
    }
}

/// Numbers (also in arrays) to 4 decimals: measurements, not float noise.
fn rounded(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map(|x| json!((x * 1e4).round() / 1e4))
            .unwrap_or(Value::Null),
        Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
        other => other,
    }
}

/// Everything `bench` measured.
#[derive(Clone, Debug)]
pub struct ScenarioBenchReport {
    /// The setup, one line each.
    pub header: Vec<String>,
    /// One result per scenario, in order.
    pub results: Vec<ScenarioResult>,
    /// Wall-clock seconds of the whole run.
    pub run_seconds: f64,
    /// When it started, seconds since the epoch.
    pub started_unix: f64,
    /// The senders' congestion control.
    pub congestion_control: String,
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "-".to_string(),
    }
}

/// `, failover gap 120 ms`, or nothing without events.
fn gap_text(gap_ms: Option<f64>) -> String {
    gap_ms.map_or(String::new(), |g| format!(", failover gap {g:.0} ms"))
}

fn shares(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|s| format!("{:.0}", s * 100.0))
        .collect::<Vec<_>>()
        .join("/")
}

impl ScenarioBenchReport {
    /// Whether every scenario was measured.
    pub fn complete(&self) -> bool {
        self.results.iter().all(|r| r.error.is_none())
    }

    /// The whole report as JSON: `{"scenarios": [...], "run_seconds": ..., ...}`.
    pub fn json(&self) -> Value {
        json!({
            "started_unix": self.started_unix,
            "congestion_control": self.congestion_control,
            "run_seconds": rounded(json!(self.run_seconds)),
            "setup": self.header,
            "scenarios": self.results.iter().map(ScenarioResult::json).collect::<Vec<_>>(),
        })
    }

    /// Two Markdown tables (goodput and ratios; the rest), and the notes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let secs: Vec<String> = {
            let mut v: Vec<String> = self
                .results
                .iter()
                .map(|r| format!("{}", r.seconds))
                .collect();
            v.dedup();
            v
        };
        let _ = writeln!(
            out,
            "bench: {} scenario{}, {} s per transfer, {:.0} s in all; senders' congestion control {}",
            self.results.len(),
            if self.results.len() == 1 { "" } else { "s" },
            secs.join("/"),
            self.run_seconds,
            self.congestion_control
        );
        out += "\nGoodput of downloads, Mbit/s (linkpool: from c1 through the gateway and the proxy; \
                MPTCP and single paths: from r1 over the same emulated links):\n\n";
        out += "| scenario | linkpool TCP | 8 flows | UDP | MPTCP | best single | sum single | sum of rates \
                | linkpool/MPTCP | linkpool/best | linkpool/sum | UDP/best |\n";
        out += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for r in &self.results {
            let (best, sum) = (r.best_single_mbit(), r.sum_single_mbit());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                num(r.tcp_mbit, 1),
                num(r.tcp8_mbit, 1),
                num(r.udp_mbit, 1),
                num(r.mptcp_mbit, 1),
                num(best, 1),
                num(sum, 1),
                num(r.sum_rate_mbit, 0),
                num(ratio(r.tcp_mbit, r.mptcp_mbit), 2),
                num(ratio(r.tcp_mbit, best), 2),
                num(ratio(r.tcp_mbit, sum), 2),
                num(ratio(r.udp_mbit, best), 2),
            );
        }
        out += "\n| scenario | failover gap ms (MPTCP) | broken (MPTCP) | RTT idle / loaded ms | \
                redundancy | CPU s/GB gateway / proxy | path shares % linkpool (MPTCP) | wire overhead (MPTCP) |\n";
        out += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for r in &self.results {
            let broken = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
            let _ = writeln!(
                out,
                "| {} | {} ({}) | {} ({}) | {} / {} | {} | {} / {} | {} ({}) | {} ({}) |",
                r.name,
                num(r.failover_gap_ms, 0),
                num(r.mptcp_failover_gap_ms, 0),
                broken(r.connections_broken),
                broken(r.mptcp_connections_broken),
                num(r.rtt_idle_ms, 1),
                num(r.rtt_loaded_ms, 1),
                num(r.redundancy_overhead, 3),
                num(r.gateway_cpu_s_per_gb, 1),
                num(r.proxy_cpu_s_per_gb, 1),
                shares(&r.path_share),
                shares(&r.mptcp_path_share),
                num(r.wire_overhead.map(|w| w * 100.0), 1) + "%",
                num(r.mptcp_wire_overhead.map(|w| w * 100.0), 1) + "%",
            );
        }
        if self
            .results
            .iter()
            .any(|r| r.via.iter().any(Option::is_some))
        {
            out += "\nThrough neighbours (owners: each neighbour's own download through its own \
                    gateway, alone and while the member borrows its line):\n\n";
            out += "| scenario | via | relay CPU s/GB | owners alone Mbit/s | owners lending: linkpool (MPTCP) | \
                    lending/alone |\n";
            out += "| --- | --- | ---: | ---: | ---: | ---: |\n";
            let owners = |v: &Option<Vec<f64>>| v.as_deref().map_or("-".to_string(), list);
            for r in self
                .results
                .iter()
                .filter(|r| r.via.iter().any(Option::is_some))
            {
                let via: Vec<&str> = r
                    .via
                    .iter()
                    .map(|v| v.as_deref().unwrap_or("own"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} ({}) | {} |",
                    r.name,
                    via.join("/"),
                    num(r.relay_cpu_s_per_gb, 1),
                    owners(&r.owner_alone_mbit),
                    owners(&r.owner_lending_mbit),
                    owners(&r.mptcp_owner_lending_mbit),
                    num(r.owner_lending_vs_alone(), 2),
                );
            }
        }
        let mut notes = String::new();
        for r in &self.results {
            if let Some(e) = &r.error {
                let _ = writeln!(notes, "  {}: NOT MEASURED: {e}", r.name);
            }
            for n in &r.notes {
                let _ = writeln!(notes, "  {}: {n}", r.name);
            }
        }
        if !notes.is_empty() {
            out += "\nnotes:\n";
            out += &notes;
        }
        out += "\n(every transfer replays the scenario's events from its first byte; failover gap: \
                longest run of empty 10 ms bins of received bytes from the first event on; \
                RTT: median of ping -i 0.01 through linkpool; redundancy: `-` = no counter in \
                the daemons' status; wire overhead: Ethernet frame bytes on the paths ÷ goodput − 1)\n";
        out
    }
}

impl std::fmt::Display for ScenarioBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.header {
            writeln!(f, "{line}")?;
        }
        f.write_str(&self.table())
    }
}

/// Runs the benchmark, telling `say` what it measured as it goes.
pub fn bench_scenarios(
    options: &ScenarioBenchOptions,
    mut say: impl FnMut(&str),
) -> Result<ScenarioBenchReport, Error> {
    if options.scenarios.is_empty() {
        return Err(Error::new("bench: no scenario to run"));
    }
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let gateway = crate::workspace_binary("linkpool")?;
    let header = vec![
        format!(
            "bench: {} scenario{}; daemons {} ({}); machine: {} cores, load average {}, kernel {}",
            options.scenarios.len(),
            if options.scenarios.len() == 1 {
                ""
            } else {
                "s"
            },
            gateway.display(),
            if gateway.to_string_lossy().contains("/debug/") {
                "debug build"
            } else {
                "not a debug build"
            },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        ),
        format!(
            "  {}; the downloads' TCP congestion control (set on the sending sockets): {}",
            match options.seconds {
                Some(s) => format!(
                    "transfers of {} each (--seconds; event times scaled with it)",
                    format_seconds(s)
                ),
                None => "transfers as long as each file's `seconds`".to_string(),
            },
            options.congestion_control
        ),
    ];
    for line in &header {
        say(line);
    }
    let mut results = Vec::new();
    for scenario in &options.scenarios {
        let scenario = match options.seconds {
            Some(s) => scenario.with_seconds(s),
            None => scenario.clone(),
        };
        let begun = Instant::now();
        let mut result = ScenarioResult {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            origin: scenario.origin.clone(),
            seconds: scenario.seconds.as_secs_f64(),
            paths: scenario
                .paths
                .iter()
                .zip(&scenario.via)
                .map(|(p, via)| match via {
                    None => p.to_string(),
                    Some(v) => format!("{p}; via r{} (mesh {})", v.router, v.mesh),
                })
                .collect(),
            via: scenario
                .via
                .iter()
                .map(|v| v.map(|v| format!("r{}", v.router)))
                .collect(),
            events: scenario.events.iter().map(Event::describe).collect(),
            sum_rate_mbit: scenario.sum_rate_bps().map(|b| b as f64 / 1e6),
            single_mbit: vec![None; scenario.paths.len()],
            ..ScenarioResult::default()
        };
        say(&format!(
            "scenario {} ({}): {}{}",
            scenario.name,
            scenario.origin,
            scenario.description,
            if result.events.is_empty() {
                String::new()
            } else {
                format!("; events: {}", result.events.join(", "))
            }
        ));
        if let Err(e) = run_scenario(
            &scenario,
            &options.congestion_control,
            &mut result,
            &mut say,
        ) {
            say(&format!("  {}: NOT MEASURED: {e}", scenario.name));
            result.error = Some(e.to_string());
        }
        result.run_seconds = begun.elapsed().as_secs_f64();
        say(&format!(
            "  {} done in {:.0} s",
            scenario.name, result.run_seconds
        ));
        results.push(result);
    }
    Ok(ScenarioBenchReport {
        header,
        results,
        run_seconds: started.elapsed().as_secs_f64(),
        started_unix,
        congestion_control: options.congestion_control.clone(),
    })
}

/// One running scenario: its co-op, daemons and links.
struct Run<'a> {
    scenario: &'a Scenario,
    /// Set on every download's sending socket (the namespace's default is bounded by the
    /// host's `tcp_allowed_congestion_control`).
    congestion_control: &'a str,
    coop: &'a Coop,
    pool: &'a Pool,
    /// Each path's line in path order: `r1-wan`, `r1-wan2`, ... or a neighbour's `rN-wan`.
    links: Vec<Link>,
    /// The mesh hop (`rN-mesh`) of each path through a neighbour.
    mesh_links: Vec<Option<Link>>,
    /// CPU seconds (gateway, proxy) and bytes delivered over the linkpool transfers.
    cpu: [f64; 2],
    carried: u64,
    /// CPU seconds of the neighbours' gateways over the linkpool transfers, and the bytes
    /// they relayed.
    relay_cpu: f64,
    relayed: u64,
}

fn run_scenario(
    scenario: &Scenario,
    congestion_control: &str,
    result: &mut ScenarioResult,
    say: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let coop = Coop::build(&scenario.topology())?;
    let r1 = coop.router(1);
    let mut own = r1.wans().iter();
    // Per path: its line, and where r1's own traffic over it (MPTCP, the path alone) leaves
    // from.
    let mut links = Vec::new();
    let mut sources = Vec::new();
    for via in &scenario.via {
        match via {
            None => {
                let wan = own
                    .next()
                    .ok_or_else(|| Error::new("r1 has fewer WANs than own paths"))?;
                links.push(coop.link(wan.link())?.clone());
                sources.push((wan.addr_v4(), wan.device().to_string()));
            }
            Some(v) => {
                links.push(coop.link(&format!("r{}-wan", v.router))?.clone());
                sources.push((
                    route_through(&coop, v.router)?,
                    r1.mesh_device().to_string(),
                ));
            }
        }
    }
    let mesh_links = scenario
        .via
        .iter()
        .map(|v| {
            v.map(|v| coop.link(&format!("r{}-mesh", v.router)).cloned())
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mptcp = if links.len() >= 2 {
        let line = setup_mptcp_over(&coop, &sources[1..])?;
        say(&format!("  {line}"));
        true
    } else {
        result
            .notes
            .push("one path: no MPTCP reference".to_string());
        false
    };
    let neighbours: Vec<usize> = scenario.neighbours().map(|(_, v)| v.router).collect();
    // The neighbours lend; the measured member only borrows (so an owner's download alone
    // is not helped by r1's idle line).
    let pool = if neighbours.is_empty() {
        Pool::start(&coop)?
    } else {
        Pool::start_lending(&coop, &neighbours)?
    };
    let mut run = Run {
        scenario,
        congestion_control,
        coop: &coop,
        pool: &pool,
        links,
        mesh_links,
        cpu: [0.0; 2],
        carried: 0,
        relay_cpu: 0.0,
        relayed: 0,
    };
    let took = run.settle()?;
    let status = pool.gateway_status(&coop, 1, true)?;
    let status: Value = serde_json::from_str(&status)
        .map_err(|e| Error::new(format!("the gateway's status --json: {e}: {status}")))?;
    result.tunnel_mtu = status["tunnel"]["mtu"].as_u64();
    say(&format!(
        "  co-op {} built, linkpool up, all {} paths active after {:.1} s; tunnel MTU {}",
        coop.prefix(),
        run.links.len(),
        took.as_secs_f64(),
        num(result.tunnel_mtu.map(|m| m as f64), 0)
    ));

    // Idle RTT first, while nothing else runs.
    let target = coop.internet().addr_v4().to_string();
    coop.client(1).exec_ok(&[
        "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", &target,
    ])?;
    let out = coop.client(1).exec(&[
        "ping",
        "-n",
        "-i",
        PING_INTERVAL_S,
        "-c",
        &IDLE_PINGS.to_string(),
        "-W",
        "1",
        &target,
    ])?;
    let idle = ping_rtts(&String::from_utf8_lossy(&out.stdout));
    result.rtt_idle_ms = (!idle.is_empty()).then(|| quantile(&idle, 0.5));
    say(&format!(
        "  idle RTT through linkpool: median {} ms ({} of {IDLE_PINGS} answered)",
        num(result.rtt_idle_ms, 2),
        idle.len()
    ));

    let mut broken = 0u64;
    let c1 = coop.client(1).ns().to_string();
    if scenario.owners_busy {
        let load = OwnerLoad::start(&run, &neighbours)?;
        std::thread::sleep(OWNER_LEAD);
        let from = Instant::now();
        std::thread::sleep(scenario.seconds);
        let alone = load.finish(from, scenario.seconds);
        say(&format!(
            "  the neighbours' owners' downloads alone (r{}): {} Mbit/s",
            neighbours
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", r"),
            list(&alone)
        ));
        result.owner_alone_mbit = Some(alone);
        run.settle()?;
    }
    // One download through linkpool (the owners downloading meanwhile, if busy).
    let load = match scenario.owners_busy {
        true => Some(OwnerLoad::start(&run, &neighbours)?),
        false => None,
    };
    if load.is_some() {
        std::thread::sleep(OWNER_LEAD);
    }
    let d = run.linkpool(|run| run.download(&c1, Proto::Tcp, 1, None, None))?;
    if let Some(load) = load {
        let lending = load.finish(d.t0, scenario.seconds);
        say(&format!(
            "  the owners' downloads meanwhile: {} Mbit/s",
            list(&lending)
        ));
        result.owner_lending_mbit = Some(lending);
    }
    result.tcp_mbit = Some(d.mbit(scenario));
    result.failover_gap_ms = d.gap_ms(scenario);
    result.path_share = d.shares();
    result.wire_overhead = d.wire_overhead();
    broken += d.broken.len() as u64;
    for b in &d.broken {
        result.notes.push(format!("linkpool download: {b}"));
    }
    say(&format!(
        "  linkpool, 1 TCP flow: {} Mbit/s, path shares {} %{}{}",
        num(result.tcp_mbit, 1),
        shares(&result.path_share),
        gap_text(result.failover_gap_ms),
        d.broken_text()
    ));
    run.settle()?;

    let d = run.linkpool(|run| run.download(&c1, Proto::Tcp, PARALLEL_FLOWS, None, None))?;
    result.tcp8_mbit = Some(d.mbit(scenario));
    broken += d.broken.len() as u64;
    for b in &d.broken {
        result
            .notes
            .push(format!("linkpool, {PARALLEL_FLOWS} flows: {b}"));
    }
    say(&format!(
        "  linkpool, {PARALLEL_FLOWS} TCP flows: {} Mbit/s, path shares {} %{}",
        num(result.tcp8_mbit, 1),
        shares(&d.shares()),
        d.broken_text()
    ));
    run.settle()?;

    let udp = run.linkpool(|run| run.udp(result.tunnel_mtu))?;
    result.udp_mbit = Some(udp.received_bps / 1e6);
    result.udp_offered_mbit = Some(udp.offered_bps as f64 / 1e6);
    result.udp_loss = udp.loss;
    say(&format!(
        "  linkpool, 1 UDP flow offered {} Mbit/s in {}-byte datagrams: {} Mbit/s received, {} % lost",
        num(result.udp_offered_mbit, 1),
        udp.length,
        num(result.udp_mbit, 1),
        num(udp.loss.map(|l| l * 100.0), 1)
    ));
    run.settle()?;

    let (d, pings) = run.linkpool(|run| run.loaded_rtt(&c1))?;
    broken += d.broken.len() as u64;
    for b in &d.broken {
        result
            .notes
            .push(format!("linkpool download under ping: {b}"));
    }
    result.rtt_loaded_ms = (!pings.rtts.is_empty()).then(|| quantile(&pings.rtts, 0.5));
    result.rtt_loaded_p90_ms = (!pings.rtts.is_empty()).then(|| quantile(&pings.rtts, 0.9));
    result.rtt_loaded_lost = match (pings.sent, pings.received) {
        (Some(sent), Some(received)) if sent > 0 => {
            Some(sent.saturating_sub(received) as f64 / sent as f64)
        }
        _ => None,
    };
    if pings.duplicates > 0 {
        result.notes.push(format!(
            "ping under load: {} duplicate replies (a request delivered twice)",
            pings.duplicates
        ));
    }
    say(&format!(
        "  RTT through linkpool under a download of {} Mbit/s: median {} ms, p90 {} ms, {} of {} answered, {} duplicates{}",
        num(Some(d.mbit(scenario)), 1),
        num(result.rtt_loaded_ms, 2),
        num(result.rtt_loaded_p90_ms, 2),
        pings.received.unwrap_or(0),
        pings.sent.unwrap_or(0),
        pings.duplicates,
        d.broken_text()
    ));
    result.connections_broken = Some(broken);
    result.gateway_cpu_s_per_gb =
        (run.carried > 0).then(|| run.cpu[0] / (run.carried as f64 / 1e9));
    result.proxy_cpu_s_per_gb = (run.carried > 0).then(|| run.cpu[1] / (run.carried as f64 / 1e9));
    if !neighbours.is_empty() {
        result.relay_cpu_s_per_gb =
            (run.relayed > 0).then(|| run.relay_cpu / (run.relayed as f64 / 1e9));
        say(&format!(
            "  the neighbours' gateways relayed {:.0} MB with {:.2} s of CPU ({} s per GB)",
            run.relayed as f64 / 1e6,
            run.relay_cpu,
            num(result.relay_cpu_s_per_gb, 1)
        ));
    }
    say(&format!(
        "  daemons over the linkpool transfers ({:.0} MB): gateway {:.2} s, proxy {:.2} s of CPU \
         ({} / {} s per GB)",
        run.carried as f64 / 1e6,
        run.cpu[0],
        run.cpu[1],
        num(result.gateway_cpu_s_per_gb, 1),
        num(result.proxy_cpu_s_per_gb, 1)
    ));
    result.redundancy_overhead = redundancy_overhead(&pool, &coop);
    if result.redundancy_overhead.is_none() {
        result.notes.push(
            "redundancy overhead: no `redundancy_overhead_pct` in the proxy's or the gateway's status --json"
                .to_string(),
        );
    }
    run.settle()?;

    if mptcp {
        let r1 = coop.router(1).ns().to_string();
        let load = match scenario.owners_busy {
            true => Some(OwnerLoad::start(&run, &neighbours)?),
            false => None,
        };
        if load.is_some() {
            std::thread::sleep(OWNER_LEAD);
        }
        let d = run.download(&r1, Proto::Mptcp, 1, None, None)?;
        if let Some(load) = load {
            let lending = load.finish(d.t0, scenario.seconds);
            say(&format!(
                "  the owners' downloads meanwhile: {} Mbit/s",
                list(&lending)
            ));
            result.mptcp_owner_lending_mbit = Some(lending);
        }
        result.mptcp_mbit = Some(d.mbit(scenario));
        result.mptcp_subflows = d.subflows.map(u64::from);
        result.mptcp_failover_gap_ms = d.gap_ms(scenario);
        result.mptcp_path_share = d.shares();
        result.mptcp_wire_overhead = d.wire_overhead();
        result.mptcp_connections_broken = Some(d.broken.len() as u64);
        for b in &d.broken {
            result.notes.push(format!("MPTCP download: {b}"));
        }
        if d.subflows.is_some_and(|n| (n as usize) < run.links.len()) {
            result.notes.push(format!(
                "kernel MPTCP had at most {} subflows for {} paths",
                d.subflows.unwrap_or(0),
                run.links.len()
            ));
        }
        say(&format!(
            "  kernel MPTCP from r1: {} Mbit/s over {} subflows, path shares {} %{}{}",
            num(result.mptcp_mbit, 1),
            d.subflows.unwrap_or(0),
            shares(&result.mptcp_path_share),
            gap_text(result.mptcp_failover_gap_ms),
            d.broken_text()
        ));
        run.settle()?;
    }

    for (k, (source, device)) in sources.iter().enumerate() {
        let r1 = coop.router(1).ns().to_string();
        let d = run.download(&r1, Proto::Tcp, 1, Some(*source), None)?;
        result.single_mbit[k] = Some(d.mbit(scenario));
        for b in &d.broken {
            result.notes.push(format!("path {} alone: {b}", k + 1));
        }
        let own = d.shares().get(k).copied().unwrap_or(0.0);
        if own < 0.99 {
            result.notes.push(format!(
                "path {} alone: only {:.0} % of the bytes went over its link",
                k + 1,
                own * 100.0
            ));
        }
        say(&format!(
            "  path {} ({}{}) alone, TCP from r1: {} Mbit/s{}",
            k + 1,
            device,
            scenario.via[k].map_or(String::new(), |v| format!(" to r{}", v.router)),
            num(result.single_mbit[k], 1),
            d.broken_text()
        ));
        run.settle()?;
    }
    Ok(())
}

/// What a set of downloads measured.
struct Downloads {
    /// Bytes read within the transfer's `seconds` from the first byte, all flows.
    bytes: u64,
    /// Every read within that window, from the first byte (all flows, sorted).
    arrivals: Vec<Duration>,
    /// Downstream bytes each path's link delivered within the window.
    path_bytes: Vec<u64>,
    /// Why connections broke, one entry each.
    broken: Vec<String>,
    /// Bytes read in all (also after the window).
    total: u64,
    /// MPTCP: most subflows seen, the first included.
    subflows: Option<u8>,
    /// The first byte.
    t0: Instant,
}

impl Downloads {
    fn mbit(&self, scenario: &Scenario) -> f64 {
        self.bytes as f64 * 8.0 / scenario.seconds.as_secs_f64() / 1e6
    }

    /// The longest stall from the first event on, ms; `None` without events.
    fn gap_ms(&self, scenario: &Scenario) -> Option<f64> {
        let first = scenario.events.first()?.at;
        let mut after: Vec<Duration> = self
            .arrivals
            .iter()
            .filter(|&&t| t >= first)
            .map(|&t| t - first)
            .collect();
        // The transfer's end closes a silence that lasts until then.
        after.push(scenario.seconds.saturating_sub(first));
        longest_stall(&after, BIN).map(|d| d.as_secs_f64() * 1e3)
    }

    fn shares(&self) -> Vec<f64> {
        let total: u64 = self.path_bytes.iter().sum();
        if total == 0 {
            return Vec::new();
        }
        self.path_bytes
            .iter()
            .map(|&b| b as f64 / total as f64)
            .collect()
    }

    fn wire_overhead(&self) -> Option<f64> {
        let wire: u64 = self.path_bytes.iter().sum();
        (self.bytes > 0).then(|| wire as f64 / self.bytes as f64 - 1.0)
    }

    fn broken_text(&self) -> String {
        if self.broken.is_empty() {
            String::new()
        } else {
            format!("; BROKEN: {}", self.broken.join("; "))
        }
    }
}

struct Udp {
    offered_bps: u64,
    length: u64,
    received_bps: f64,
    loss: Option<f64>,
    bytes: u64,
}

struct Pings {
    /// RTTs of the replies, duplicates left out.
    rtts: Vec<f64>,
    sent: Option<u64>,
    /// Requests answered (duplicates left out).
    received: Option<u64>,
    /// Duplicate replies (`DUP!`): one request delivered twice.
    duplicates: usize,
}

impl Pings {
    fn from_output(log: &str) -> Pings {
        let unique: String = log
            .lines()
            .filter(|l| !l.contains("DUP!"))
            .flat_map(|l| [l, "\n"])
            .collect();
        let rtts = ping_rtts(&unique);
        Pings {
            sent: ping_transmitted(log),
            received: ping_received(log).or(Some(rtts.len() as u64)),
            rtts,
            duplicates: log.lines().filter(|l| l.contains("DUP!")).count(),
        }
    }
}

/// What one reader thread saw.
struct ReaderOutcome {
    /// (time, bytes) of every read.
    reads: Vec<(Instant, usize)>,
    total: u64,
    broken: Option<String>,
}

/// Something that moved bytes through linkpool (for the CPU per GB).
trait Carried {
    fn carried(&self) -> u64;
}

impl Carried for Downloads {
    fn carried(&self) -> u64 {
        self.total
    }
}

impl Carried for Udp {
    fn carried(&self) -> u64 {
        self.bytes
    }
}

impl Carried for (Downloads, Pings) {
    fn carried(&self) -> u64 {
        self.0.total
    }
}

impl Run<'_> {
    /// Sets every path back to the scenario's parameters; waits until the gateway shows
    /// every uplink that is up as active, then lets queues drain. Returns how long it took.
    fn settle(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let scenario = self.scenario;
        for (link, spec) in self.links.iter().zip(&scenario.paths) {
            link.set_direction(Direction::Upstream, spec.upstream);
            link.set_direction(Direction::Downstream, spec.downstream);
        }
        for (link, via) in self.mesh_links.iter().zip(&scenario.via) {
            if let (Some(link), Some(via)) = (link, via) {
                link.set_direction(Direction::Upstream, via.mesh.upstream);
                link.set_direction(Direction::Downstream, via.mesh.downstream);
            }
        }
        let up = |p: &crate::LinkSpec| p.upstream.up && p.downstream.up;
        let want_own = scenario
            .own_paths()
            .filter(|&k| up(&scenario.paths[k]))
            .count();
        let want_relayed = scenario
            .neighbours()
            .filter(|&(k, v)| up(&scenario.paths[k]) && up(&v.mesh))
            .count();
        let timeout = Duration::from_secs(30);
        loop {
            let status = self.pool.gateway_status(self.coop, 1, true);
            if let Ok(json) = &status {
                if uplinks_active(json).0 >= want_own && relayed_active(json) >= want_relayed {
                    break;
                }
            }
            if start.elapsed() > timeout {
                return Err(Error::new(format!(
                    "the gateway's paths are not all active {timeout:?} after the links were \
                     set back; status: {}",
                    match status {
                        Ok(json) => json,
                        Err(e) => e.to_string(),
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Nothing is left of the last transfer on the paths (a closed connection's sender
        // may still empty its buffers): at most probes for 300 ms.
        let quiet_since = Instant::now();
        let mut last = self.downstream_bytes();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.downstream_bytes();
            let moved: u64 = now.iter().zip(&last).map(|(a, b)| a - b).sum();
            if moved < 20_000 {
                break;
            }
            if quiet_since.elapsed() > Duration::from_secs(15) {
                return Err(Error::new(format!(
                    "the paths still carry {} kB per 300 ms 15 s after a transfer ended",
                    moved / 1000
                )));
            }
            last = now;
        }
        // Queues drain (at most `queue` each) and late frames arrive.
        let longest = self
            .scenario
            .paths
            .iter()
            .copied()
            .chain(scenario.neighbours().map(|(_, v)| v.mesh))
            .flat_map(|p| [p.upstream, p.downstream])
            .map(|p| p.queue + p.delay + p.jitter)
            .max()
            .unwrap_or_default();
        std::thread::sleep(Duration::from_millis(200) + longest);
        Ok(start.elapsed())
    }

    /// Runs `f` as a linkpool transfer: counts the daemons' CPU time over it and the bytes
    /// it delivered.
    fn linkpool<T: Carried>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let pids = [
            self.pool.gateways.first().map(|p| p.pid()),
            self.pool.proxy.as_ref().map(|p| p.pid()),
        ];
        let cpu = |pid: Option<u32>| pid.map_or(0.0, cpu_seconds);
        let before = [cpu(pids[0]), cpu(pids[1])];
        let relays = self.relay_figures();
        let out = f(self)?;
        for (i, pid) in pids.iter().enumerate() {
            self.cpu[i] += cpu(*pid) - before[i];
        }
        self.carried += out.carried();
        let after = self.relay_figures();
        self.relay_cpu += after.0 - relays.0;
        self.relayed += after.1.saturating_sub(relays.1);
        Ok(out)
    }

    /// The neighbours' gateways: CPU seconds so far, and bytes relayed (up and down).
    fn relay_figures(&self) -> (f64, u64) {
        let mut figures = (0.0, 0);
        for (_, v) in self.scenario.neighbours() {
            if let Some(p) = self.pool.gateways.get(v.router - 1) {
                figures.0 += cpu_seconds(p.pid());
            }
            let status = self.pool.gateway_status(self.coop, v.router, true);
            let json: Value = status
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            for r in json["mesh"]["relayed_for"].as_array().into_iter().flatten() {
                figures.1 +=
                    r["up_bytes"].as_u64().unwrap_or(0) + r["down_bytes"].as_u64().unwrap_or(0);
            }
        }
        figures
    }

    fn downstream_bytes(&self) -> Vec<u64> {
        self.links
            .iter()
            .map(|l| l.stats(Direction::Downstream).bytes_out)
            .collect()
    }

    /// `flows` downloads at once from the internet host to `ns` (from `local`, if given),
    /// for the scenario's `seconds` from the first byte, replaying its events; `tick` is
    /// called every few ms with the time since the first byte.
    fn download(
        &self,
        ns: &str,
        proto: Proto,
        flows: usize,
        local: Option<Ipv4Addr>,
        mut tick: Option<&mut dyn FnMut(Duration) -> Result<(), Error>>,
    ) -> Result<Downloads, Error> {
        let seconds = self.scenario.seconds;
        let servers = (0..flows)
            .map(|i| {
                Server::start_with(
                    self.coop,
                    proto,
                    DOWNLOAD_PORT + i as u16,
                    Serve::Bulk,
                    Some(self.congestion_control.to_string()),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut streams = Vec::new();
        for i in 0..flows {
            streams.push(open_from(
                self.coop,
                ns,
                proto,
                DOWNLOAD_PORT + i as u16,
                local,
            )?);
        }
        let probe: Option<TcpStream> = match proto {
            Proto::Mptcp => Some(
                streams[0]
                    .try_clone()
                    .map_err(|e| Error::new(format!("MPTCP socket: {e}")))?,
            ),
            Proto::Tcp => None,
        };
        let first: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let abort = Arc::new(AtomicBool::new(false));
        let readers: Vec<JoinHandle<ReaderOutcome>> = streams
            .into_iter()
            .map(|stream| {
                let (first, abort) = (first.clone(), abort.clone());
                std::thread::spawn(move || read_download(stream, &first, seconds, &abort))
            })
            .collect();
        // Wait for the first byte of any flow.
        let waited = Instant::now();
        let t0 = loop {
            if let Some(t) = first.get() {
                break *t;
            }
            if waited.elapsed() > Duration::from_secs(10) {
                abort.store(true, Ordering::Relaxed);
                for r in readers {
                    let _ = r.join();
                }
                let senders: Vec<String> = servers
                    .into_iter()
                    .filter_map(|s| s.finish().err())
                    .collect();
                return Err(Error::new(format!(
                    "{}: the download to {ns} did not start within 10 s{}",
                    self.scenario.name,
                    if senders.is_empty() {
                        String::new()
                    } else {
                        format!("; its sender: {}", senders.join("; "))
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let at_start = self.downstream_bytes();
        let mut events = EventClock::new(&self.scenario.events);
        let mut subflows: Option<u8> = None;
        let mut next_probe = t0;
        let mut at_end = None;
        let mut failure = None;
        loop {
            let elapsed = t0.elapsed();
            if elapsed >= seconds {
                at_end = Some(self.downstream_bytes());
                break;
            }
            if let Err(e) = events.apply_due(elapsed, &self.links, &self.mesh_links) {
                failure = Some(e);
                break;
            }
            if let Some(tick) = tick.as_mut() {
                if let Err(e) = tick(elapsed) {
                    failure = Some(e);
                    break;
                }
            }
            if let Some(p) = &probe {
                if Instant::now() >= next_probe {
                    if let Ok(info) = mptcp_info(p) {
                        let n = info.subflows.saturating_add(1);
                        subflows = Some(subflows.map_or(n, |s| s.max(n)));
                    }
                    next_probe += Duration::from_millis(100);
                }
            }
            let wait = events.next_at().map_or(Duration::from_millis(5), |at| {
                at.saturating_sub(elapsed).min(Duration::from_millis(5))
            });
            std::thread::sleep(wait);
        }
        if failure.is_some() {
            abort.store(true, Ordering::Relaxed);
        }
        let outcomes: Vec<ReaderOutcome> = readers
            .into_iter()
            .map(|r| {
                r.join().unwrap_or_else(|_| ReaderOutcome {
                    reads: Vec::new(),
                    total: 0,
                    broken: Some("reader thread panicked".into()),
                })
            })
            .collect();
        drop(probe);
        let mut refused = None;
        for s in servers {
            // A sender that failed while its reader was fine shows in the reader's outcome
            // (no data); one that could not set the congestion control fails the run.
            if let Err(e) = s.finish() {
                if e.contains("TCP_CONGESTION") {
                    refused = Some(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(e) = refused {
            return Err(Error::new(format!(
                "the download's sender on the internet host: {e} (available: {})",
                std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                    .unwrap_or_default()
                    .trim()
            )));
        }
        let end = t0 + seconds;
        let mut arrivals = Vec::new();
        let mut bytes = 0u64;
        for o in &outcomes {
            for &(t, n) in &o.reads {
                if t <= end {
                    bytes += n as u64;
                    arrivals.push(t.saturating_duration_since(t0));
                }
            }
        }
        arrivals.sort();
        let at_end = at_end.unwrap_or_else(|| self.downstream_bytes());
        Ok(Downloads {
            bytes,
            arrivals,
            path_bytes: at_end.iter().zip(&at_start).map(|(a, b)| a - b).collect(),
            broken: outcomes
                .iter()
                .enumerate()
                .filter_map(|(i, o)| {
                    o.broken
                        .as_ref()
                        .map(|b| format!("flow {} of {flows}: {b}", i + 1))
                })
                .collect(),
            total: outcomes.iter().map(|o| o.total).sum(),
            subflows,
            t0,
        })
    }

    /// One download through linkpool with `ping -i 0.01` from c1 from 1 s after its first
    /// byte (a quarter of the transfer if that is shorter) to its end.
    fn loaded_rtt(&self, c1: &str) -> Result<(Downloads, Pings), Error> {
        let seconds = self.scenario.seconds;
        let warm_up = (seconds / 4).min(Duration::from_secs(1));
        let count = ((seconds - warm_up).as_secs_f64() / 0.01).floor().max(1.0) as u64;
        // ping slows down while replies are missing (a cut): the deadline ends it anyway.
        let deadline = (seconds - warm_up).as_secs_f64().ceil().max(1.0) as u64;
        let target = self.coop.internet().addr_v4().to_string();
        let mut ping = None;
        let client = self.coop.client(1);
        let mut tick = |elapsed: Duration| -> Result<(), Error> {
            if ping.is_none() && elapsed >= warm_up {
                ping = Some(client.spawn(&[
                    "ping",
                    "-n",
                    "-i",
                    PING_INTERVAL_S,
                    "-c",
                    &count.to_string(),
                    "-w",
                    &deadline.to_string(),
                    "-W",
                    "1",
                    &target,
                ])?);
            }
            Ok(())
        };
        let d = self.download(c1, Proto::Tcp, 1, None, Some(&mut tick))?;
        let Some(mut ping) = ping else {
            return Err(Error::new("the ping under load never started"));
        };
        if !matches!(ping.wait_timeout(Duration::from_secs(3)), Ok(Some(_))) {
            // SIGINT: ping prints its statistics and exits.
            let _ = ping.signal(libc::SIGINT);
            let _ = ping.wait_timeout(Duration::from_secs(2));
        }
        Ok((d, Pings::from_output(&ping.log())))
    }

    /// `iperf3 -u -R` from c1 through linkpool at the sum of the paths' rates, datagrams
    /// that fill the tunnel MTU; the events run from the first data on the paths.
    fn udp(&self, tunnel_mtu: Option<u64>) -> Result<Udp, Error> {
        let seconds = self.scenario.seconds;
        let offered_bps: u64 = self
            .scenario
            .paths
            .iter()
            .map(|p| p.downstream.rate_bps.unwrap_or(UNLIMITED_PATH_BPS))
            .sum();
        // IPv4 and UDP headers inside the tunnel.
        let length = tunnel_mtu.unwrap_or(1400).saturating_sub(28).max(100);
        let inet = self.coop.internet();
        let port = inet.iperf3_ports()[0].to_string();
        let before = self.downstream_bytes().iter().sum::<u64>();
        let mut iperf = self.coop.client(1).spawn(&[
            "iperf3",
            "--client",
            &inet.addr_v4().to_string(),
            "--port",
            &port,
            "--udp",
            "--reverse",
            "--bitrate",
            &offered_bps.to_string(),
            "--length",
            &length.to_string(),
            "--time",
            &format!("{}", seconds.as_secs_f64().ceil() as u64),
            "--json",
        ])?;
        // The events' clock starts with the data (probes move a few hundred bytes).
        let waited = Instant::now();
        let t0 = loop {
            if self.downstream_bytes().iter().sum::<u64>() - before > 30_000 {
                break Instant::now();
            }
            if waited.elapsed() > Duration::from_secs(10) {
                return Err(Error::new(format!(
                    "iperf3 -u sent nothing within 10 s; its output:\n{}",
                    iperf.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut events = EventClock::new(&self.scenario.events);
        while t0.elapsed() < seconds {
            events.apply_due(t0.elapsed(), &self.links, &self.mesh_links)?;
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = iperf
            .wait_timeout(Duration::from_secs(15))
            .map_err(|e| Error::new(format!("waiting for iperf3: {e}")))?;
        let log = iperf.log();
        if !status.is_some_and(|s| s.success()) {
            return Err(Error::new(format!(
                "iperf3 -u failed ({status:?}); its output:\n{log}"
            )));
        }
        let json: Value = log
            .find('{')
            .and_then(|i| serde_json::from_str(&log[i..]).ok())
            .ok_or_else(|| Error::new(format!("iperf3 -u: no JSON in its output:\n{log}")))?;
        let received = &json["end"]["sum_received"];
        let received_bps = received["bits_per_second"]
            .as_f64()
            .or_else(|| json["end"]["sum"]["bits_per_second"].as_f64())
            .ok_or_else(|| Error::new(format!("iperf3 -u: no received rate in:\n{log}")))?;
        Ok(Udp {
            offered_bps,
            length,
            received_bps,
            loss: json["end"]["sum"]["lost_percent"]
                .as_f64()
                .map(|p| p / 100.0),
            bytes: received["bytes"]
                .as_u64()
                .or_else(|| json["end"]["sum"]["bytes"].as_u64())
                .unwrap_or(0),
        })
    }
}

/// Reads one download until `seconds` after the first byte of any flow (`first`, set by
/// whichever reader gets a byte first), checking every byte. A flow silent in the last
/// second of the window gets [`RESUME_GRACE`] to resume before it counts as broken.
fn read_download(
    mut stream: TcpStream,
    first: &OnceLock<Instant>,
    seconds: Duration,
    abort: &AtomicBool,
) -> ReaderOutcome {
    let mut out = ReaderOutcome {
        reads: Vec::new(),
        total: 0,
        broken: None,
    };
    if let Err(e) = stream.set_read_timeout(Some(Duration::from_millis(20))) {
        out.broken = Some(format!("read timeout: {e}"));
        return out;
    }
    let mut check = PatternCheck::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut last: Option<Instant> = None;
    while !abort.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Some(&t0) = first.get() {
            let end = t0 + seconds;
            if now >= end {
                let recent = last.is_some_and(|l| l + Duration::from_secs(1) >= end);
                let resumed = last.is_some_and(|l| l > end);
                if recent || resumed {
                    break;
                }
                if now >= end + RESUME_GRACE {
                    out.broken = Some(match last {
                        Some(l) => format!(
                            "no data for the last {:.1} s of the transfer and the {} s after it",
                            (end - l).as_secs_f64(),
                            RESUME_GRACE.as_secs()
                        ),
                        None => format!(
                            "no data at all within the transfer and the {} s after it",
                            RESUME_GRACE.as_secs()
                        ),
                    });
                    break;
                }
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                out.broken = Some("the sender closed the connection".into());
                break;
            }
            Ok(n) => {
                let t = Instant::now();
                let _ = first.set(t);
                if !check.next(&buf[..n]) {
                    out.broken = Some(format!("wrong bytes near offset {}", check.offset));
                    break;
                }
                out.reads.push((t, n));
                out.total += n as u64;
                last = Some(t);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                out.broken = Some(format!("connection lost: {e}"));
                break;
            }
        }
    }
    out
}

/// Routes r1's traffic from an address of its own through neighbour `n` over the mesh, as
/// a router would to give a subflow that neighbour's line: `10.253.N.1` on r1's mesh
/// device, a source rule to a table whose default route is neighbour `n`, and a route back
/// at the neighbour, which forwards and masquerades it out of its WAN. Returns the address.
fn route_through(coop: &Coop, n: usize) -> Result<Ipv4Addr, Error> {
    let (r1, neighbour) = (coop.router(1), coop.router(n));
    let source = Ipv4Addr::new(10, 253, n as u8, 1);
    let (src, table) = (source.to_string(), (300 + n).to_string());
    let mesh = r1.mesh_device();
    let fail = |e: Error| Error::new(format!("routing r1's {src} through r{n}: {e}"));
    r1.exec_ok(&["ip", "addr", "add", &format!("{src}/32"), "dev", mesh])
        .map_err(fail)?;
    r1.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &neighbour.mesh().v4.to_string(),
        "dev",
        mesh,
        "table",
        &table,
    ])
    .map_err(fail)?;
    r1.exec_ok(&[
        "ip", "rule", "add", "from", &src, "lookup", &table, "priority", &table,
    ])
    .map_err(fail)?;
    neighbour
        .exec_ok(&[
            "ip",
            "route",
            "add",
            &format!("{src}/32"),
            "via",
            &r1.mesh().v4.to_string(),
            "dev",
            neighbour.mesh_device(),
        ])
        .map_err(fail)?;
    Ok(source)
}

/// Paths through neighbours that the gateway's status shows active.
fn relayed_active(status: &str) -> usize {
    let json: Value = serde_json::from_str(status).unwrap_or_default();
    json["mesh"]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "active")
        .count()
}

/// `7.1, 9.3`
fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The neighbours' owners downloading from the internet host to their clients, through
/// their own gateways, for as long as it runs (`owners_busy`).
struct OwnerLoad {
    readers: Vec<JoinHandle<ReaderOutcome>>,
    abort: Arc<AtomicBool>,
    _servers: Vec<Server>,
}

impl OwnerLoad {
    fn start(run: &Run<'_>, neighbours: &[usize]) -> Result<OwnerLoad, Error> {
        let abort = Arc::new(AtomicBool::new(false));
        let mut load = OwnerLoad {
            readers: Vec::new(),
            abort: abort.clone(),
            _servers: Vec::new(),
        };
        for (j, &n) in neighbours.iter().enumerate() {
            let port = OWNER_PORT + j as u16;
            load._servers.push(Server::start_with(
                run.coop,
                Proto::Tcp,
                port,
                Serve::Bulk,
                Some(run.congestion_control.to_string()),
            )?);
            let stream = open_from(run.coop, run.coop.client(n).ns(), Proto::Tcp, port, None)?;
            let abort = abort.clone();
            load.readers.push(std::thread::spawn(move || {
                // Runs until aborted: the window is cut out of its reads afterwards.
                read_download(stream, &OnceLock::new(), Duration::from_secs(3600), &abort)
            }));
        }
        Ok(load)
    }

    /// Stops the downloads; each one's Mbit/s within `seconds` from `from`.
    fn finish(self, from: Instant, seconds: Duration) -> Vec<f64> {
        self.abort.store(true, Ordering::Relaxed);
        self.readers
            .into_iter()
            .map(|r| {
                let reads = r.join().map(|o| o.reads).unwrap_or_default();
                let bytes: usize = reads
                    .iter()
                    .filter(|(t, _)| *t >= from && *t <= from + seconds)
                    .map(|(_, n)| n)
                    .sum();
                bytes as f64 * 8.0 / seconds.as_secs_f64() / 1e6
            })
            .collect()
    }
}

/// Applies a scenario's events as their times come.
struct EventClock<'a> {
    events: &'a [Event],
    next: usize,
}

impl<'a> EventClock<'a> {
    fn new(events: &'a [Event]) -> Self {
        EventClock { events, next: 0 }
    }

    /// The time of the next event not applied yet.
    fn next_at(&self) -> Option<Duration> {
        self.events.get(self.next).map(|e| e.at)
    }

    /// Applies every event due at `elapsed`.
    fn apply_due(
        &mut self,
        elapsed: Duration,
        links: &[Link],
        mesh_links: &[Option<Link>],
    ) -> Result<(), Error> {
        while let Some(e) = self.events.get(self.next) {
            if e.at > elapsed {
                break;
            }
            let link = if e.mesh {
                mesh_links.get(e.path).and_then(Option::as_ref)
            } else {
                links.get(e.path)
            }
            .ok_or_else(|| Error::new(format!("event {}: no such link", e.describe())))?;
            let settings: Vec<&str> = e.settings.iter().map(String::as_str).collect();
            match e.direction {
                None => link.apply(&settings),
                Some(d) => link.apply_direction(d, &settings),
            }
            .map_err(|why| Error::new(format!("event {}: {why}", e.describe())))?;
            self.next += 1;
        }
        Ok(())
    }
}

/// The spread counters' `redundancy_overhead_pct` (a percentage) anywhere in the proxy's
/// `status --json` (downloads are copied by the proxy), else in the gateway's, as a share.
fn redundancy_overhead(pool: &Pool, coop: &Coop) -> Option<f64> {
    [
        pool.proxy_status(coop, true),
        pool.gateway_status(coop, 1, true),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .filter_map(|text| serde_json::from_str::<Value>(&text).ok())
    .find_map(|v| find_number(&v, "redundancy_overhead_pct"))
    .map(|pct| pct / 100.0)
}

/// The first number under `key` in a JSON value, depth first.
fn find_number(v: &Value, key: &str) -> Option<f64> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_f64)
            .or_else(|| map.values().find_map(|v| find_number(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find_number(v, key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_redundancy_counter_anywhere_in_a_status() {
        let v: Value = serde_json::from_str(
            r#"{"members":[{"name":"m","paths":[]},{"sched":{"redundancy_overhead":0.021}}]}"#,
        )
        .unwrap();
        assert_eq!(find_number(&v, "redundancy_overhead"), Some(0.021));
        let v: Value = serde_json::from_str(r#"{"uplinks":[{"tx_bytes":5}]}"#).unwrap();
        assert_eq!(find_number(&v, "redundancy_overhead"), None);
    }

    fn result() -> ScenarioResult {
        ScenarioResult {
            name: "pair".into(),
            seconds: 10.0,
            tcp_mbit: Some(27.0),
            tcp8_mbit: Some(28.5),
            udp_mbit: Some(26.0),
            mptcp_mbit: Some(27.6),
            mptcp_subflows: Some(2),
            single_mbit: vec![Some(19.0), Some(9.5)],
            sum_rate_mbit: Some(30.0),
            failover_gap_ms: Some(120.0),
            connections_broken: Some(0),
            path_share: vec![0.66, 0.34],
            ..ScenarioResult::default()
        }
    }

    #[test]
    fn json_has_every_key_and_null_where_not_measured() {
        let report = ScenarioBenchReport {
            header: vec![],
            results: vec![result()],
            run_seconds: 61.0,
            started_unix: 0.0,
            congestion_control: "cubic".into(),
        };
        let v = report.json();
        let s = &v["scenarios"][0];
        for key in [
            "name",
            "tcp_mbit",
            "tcp8_mbit",
            "udp_mbit",
            "mptcp_mbit",
            "best_single_mbit",
            "sum_single_mbit",
            "sum_rate_mbit",
            "failover_gap_ms",
            "connections_broken",
            "rtt_idle_ms",
            "rtt_loaded_ms",
            "redundancy_overhead",
            "gateway_cpu_s_per_gb",
            "proxy_cpu_s_per_gb",
        ] {
            assert!(s.get(key).is_some(), "no `{key}` in {s}");
        }
        assert_eq!(s["best_single_mbit"], 19.0);
        assert_eq!(s["sum_single_mbit"], 28.5);
        assert!(s["redundancy_overhead"].is_null());
        assert!(s["rtt_idle_ms"].is_null());
        assert!((s["tcp_vs_mptcp"].as_f64().unwrap() - 27.0 / 27.6).abs() < 1e-4);
        assert_eq!(v["run_seconds"], 61.0);
        let mut r = result();
        r.failover_gap_ms = Some(1359.9999999999998);
        r.path_share = vec![0.123456789, 0.876543211];
        let s = r.json();
        assert_eq!(s["failover_gap_ms"], 1360.0);
        assert_eq!(s["path_share"][0], 0.1235);
        assert_eq!(s["connections_broken"], 0);
        // One path not measured: no best, no sum.
        let mut r = result();
        r.single_mbit[1] = None;
        assert_eq!(r.best_single_mbit(), None);
        assert_eq!(r.sum_single_mbit(), None);
    }

    #[test]
    fn the_table_shows_figures_and_ratios() {
        let mut bad = ScenarioResult {
            name: "broken".into(),
            error: Some("no MPTCP".into()),
            ..ScenarioResult::default()
        };
        bad.notes.push("something odd".into());
        let report = ScenarioBenchReport {
            header: vec![],
            results: vec![result(), bad],
            run_seconds: 61.0,
            started_unix: 0.0,
            congestion_control: "cubic".into(),
        };
        assert!(!report.complete());
        let table = report.table();
        let row = table
            .lines()
            .find(|l| l.starts_with("| pair | 27.0"))
            .unwrap();
        // linkpool/MPTCP, /best, /sum, UDP/best.
        assert!(row.contains("| 0.98 | 1.42 | 0.95 | 1.37 |"), "{table}");
        let row = table
            .lines()
            .find(|l| l.starts_with("| pair | 120"))
            .unwrap();
        assert!(row.contains("| 66/34 (-) |"), "{table}");
        assert!(table.contains("broken: NOT MEASURED: no MPTCP"), "{table}");
        assert!(table.contains("broken: something odd"), "{table}");
        assert!(table.contains("61 s in all"), "{table}");
    }

    #[test]
    fn pings_leave_duplicates_out() {
        let out = "64 bytes from 1.2.3.4: icmp_seq=1 ttl=61 time=20.1 ms\n\
                   64 bytes from 1.2.3.4: icmp_seq=2 ttl=61 time=90.5 ms\n\
                   64 bytes from 1.2.3.4: icmp_seq=2 ttl=61 time=91.0 ms (DUP!)\n\
                   \n--- 1.2.3.4 ping statistics ---\n\
                   3 packets transmitted, 2 received, +1 duplicates, 33.3333% packet loss, time 20ms\n";
        let p = Pings::from_output(out);
        assert_eq!(p.rtts, vec![20.1, 90.5]);
        assert_eq!((p.sent, p.received, p.duplicates), (Some(3), Some(2), 1));
    }

    #[test]
    fn the_gap_counts_from_the_first_event() {
        let scenario = Scenario::parse(
            "name = \"t\"\nseconds = 2\n[[path]]\n[[path]]\n\
             [[event]]\nat = \"1s\"\npath = 1\nset = \"down\"\n",
            "t.toml",
        )
        .unwrap();
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        let d = Downloads {
            bytes: 1,
            arrivals: ms(&[5, 500, 999, 1003, 1250, 1260, 1990]),
            path_bytes: vec![3, 1],
            broken: vec![],
            total: 1,
            subflows: None,
            t0: Instant::now(),
        };
        // 1003 -> 1250: bins 1..=24 empty after the event; 1260 -> 1990: bins 27..=98.
        assert_eq!(d.gap_ms(&scenario), Some(720.0));
        assert_eq!(d.shares(), vec![0.75, 0.25]);
        let none = Scenario::parse("name = \"t\"\nseconds = 2\n[[path]]\n", "t.toml").unwrap();
        assert_eq!(d.gap_ms(&none), None);
        let silent = Downloads {
            arrivals: ms(&[5, 900]),
            ..d
        };
        assert_eq!(silent.gap_ms(&scenario), Some(1000.0));
    }
}
