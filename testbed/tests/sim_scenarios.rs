//! The benchmark's built-in scenarios (`testbed/scenarios/*.toml`) in the in-process
//! simulator: the real gateway and proxy cores over the link model the testbed's emulator
//! runs, in simulated time (no namespaces; a few seconds in all).
//!
//! For every scenario, one TCP download and one TCP upload through the pool, against the
//! same transfer over each path alone with no tunnel (the best single path). Spreading
//! must never make a flow slower than its best single path: the pool's goodput is at least
//! that path's, less the tunnel's framing. Where a scenario cuts a path, the transfer
//! survives without a retransmission timeout. Every figure is printed
//! (`cargo test -p linkpool-testbed --test sim_scenarios -- --nocapture`).

use std::time::Duration;

use linkpool_sim::cores::{self, GatewayCore, ProxyCore};
use linkpool_sim::{BareLink, Direction, LinkSpec, PathSpec, Sim, SimConfig, TcpFlow};
use linkpool_testbed::scenario::Scenario;

/// The transfers start once the cores have a session.
const START: Duration = Duration::from_millis(500);
/// Goodput is measured from this long into a transfer (TCP's startup is not the pool's).
const WARM_UP: Duration = Duration::from_secs(2);
/// What the tunnel's framing may cost against a bare path: a full-size inner packet of
/// 1 383 bytes rides in 1 500 (the bare path's TCP segments use all of it).
const FRAMING: f64 = 0.92;

fn tcp(upload: bool) -> TcpFlow {
    if upload {
        TcpFlow::upload()
    } else {
        TcpFlow::download()
    }
}

struct Run {
    mbit: f64,
    rtos: u64,
    longest_stall: Duration,
}

/// One TCP transfer of `s.seconds` through the pool, with the scenario's events.
fn pooled(s: &Scenario, seed: u64, upload: bool) -> Run {
    let mut cfg = SimConfig::new(seed);
    for spec in &s.paths {
        cfg = cfg.path(PathSpec::from_spec(*spec));
    }
    let (g, p) = cores::pair(&cfg);
    let mut sim: Sim<GatewayCore, ProxyCore> = Sim::new(cfg, g, p);
    for e in &s.events {
        let dirs: &[Direction] = match e.direction {
            Some(Direction::Upstream) => &[Direction::Upstream],
            Some(Direction::Downstream) => &[Direction::Downstream],
            None => &Direction::BOTH,
        };
        let settings = e.settings.clone();
        sim.at(START + e.at, e.path, dirs, move |p| {
            p.apply(settings.iter().map(String::as_str))
                .expect("checked when the scenario was parsed")
        });
    }
    let flow = sim.add(tcp(upload).start_at(START));
    let end = START + s.seconds;
    sim.run_until(end);
    let f = sim.flow(flow);
    Run {
        mbit: f.goodput_bps(START + WARM_UP, end) / 1e6,
        rtos: f.stats().rto_count,
        longest_stall: f
            .delivered()
            .longest_stall_between(START + WARM_UP, end)
            .map_or(Duration::ZERO, |s| s.len),
    }
}

/// The same transfer over one path alone, without a tunnel.
fn single(spec: LinkSpec, seconds: Duration, seed: u64, upload: bool) -> f64 {
    let cfg = SimConfig::new(seed).path(PathSpec::from_spec(spec));
    let mut sim = Sim::new(cfg, BareLink::new(), BareLink::new());
    let flow = sim.add(tcp(upload).start_at(START));
    let end = START + seconds;
    sim.run_until(end);
    sim.flow(flow).goodput_bps(START + WARM_UP, end) / 1e6
}

#[test]
fn every_scenario_is_at_least_its_best_single_path() {
    let scenarios = Scenario::builtin().expect("the built-in scenarios parse");
    assert!(scenarios.len() >= 6);
    let mut failures = Vec::new();
    println!(
        "{:<14} {:>4}  {:>7} {:>7} {:>7} {:>7}  {:>6} {:>6}  RTOs  longest stall",
        "scenario", "dir", "pool", "best", "sum", "rates", "/best", "/sum"
    );
    for s in &scenarios {
        let rates: f64 = s.sum_rate_bps().map_or(f64::NAN, |b| b as f64 / 1e6);
        for upload in [false, true] {
            let seed = 1;
            let singles: Vec<f64> = s
                .paths
                .iter()
                .map(|&p| single(p, s.seconds, seed, upload))
                .collect();
            let best = singles.iter().copied().fold(0.0, f64::max);
            let sum: f64 = singles.iter().sum();
            let run = pooled(s, seed, upload);
            let dir = if upload { "up" } else { "down" };
            println!(
                "{:<14} {dir:>4}  {:>7.1} {best:>7.1} {sum:>7.1} {rates:>7.1}  {:>6.2} {:>6.2}  {:>4}  {:?}",
                s.name,
                run.mbit,
                run.mbit / best,
                run.mbit / sum,
                run.rtos,
                run.longest_stall
            );
            // With a path cut, the best single path is the one that stays.
            let floor = if s.events.is_empty() {
                best
            } else {
                s.paths
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| s.events.iter().all(|e| e.path != *i))
                    .map(|(i, _)| singles[i])
                    .fold(0.0, f64::max)
            };
            if run.mbit < FRAMING * floor {
                failures.push(format!(
                    "{} {dir}: {:.1} Mbit/s through the pool, below its best single path's {floor:.1}",
                    s.name, run.mbit
                ));
            }
            if run.rtos > 0 {
                failures.push(format!("{} {dir}: {} RTOs", s.name, run.rtos));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
