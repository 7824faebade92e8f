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
//!
//! A path through a neighbour (`via`) is that neighbour's line behind its relay and mesh
//! hop ([`pool`]); alone, it is the mesh hop and the line in series, as one bare link. With
//! `owners_busy` the neighbours' owners download through their own lines meanwhile, and
//! the floor is the member's best own line (owner first: the neighbours' lines are theirs).

use std::time::Duration;

use linkpool_protocol::relay::RelayPolicy;
use linkpool_sim::cores::{self, ProxyCore};
use linkpool_sim::pool::{NeighbourSpec, PoolGateway, neighbour_lan, pool};
use linkpool_sim::{
    BareLink, Direction, Endpoint, FlowId, LinkParams, LinkSpec, PathSpec, Sim, SimConfig, TcpFlow,
};
use linkpool_testbed::scenario::{Event, Scenario};

/// The transfers start once the cores have a session (through neighbours, later if their
/// paths through them are not up yet).
const START: Duration = Duration::from_millis(500);
/// Through neighbours, the transfers start once the member's paths through them are up,
/// at the latest this long in.
const MESH_UP_WITHIN: Duration = Duration::from_secs(3);
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
    /// When the transfers started.
    start: Duration,
    mbit: f64,
    rtos: u64,
    longest_stall: Duration,
    /// With `owners_busy`: each neighbour's owner's download (or upload).
    owners_mbit: Vec<f64>,
}

fn directions(e: &Event) -> &'static [Direction] {
    match e.direction {
        Some(Direction::Upstream) => &[Direction::Upstream],
        Some(Direction::Downstream) => &[Direction::Downstream],
        None => &Direction::BOTH,
    }
}

/// One TCP transfer of `s.seconds` through the pool, with the scenario's events.
fn pooled(s: &Scenario, seed: u64, upload: bool) -> Run {
    // The simulator's paths: the member's own lines, then the neighbours'.
    let order: Vec<usize> = s
        .own_paths()
        .chain(s.neighbours().map(|(k, _)| k))
        .collect();
    let mut cfg = SimConfig::new(seed);
    for &k in &order {
        cfg = cfg.path(PathSpec::from_spec(s.paths[k]));
    }
    let neighbours: Vec<NeighbourSpec> = s
        .neighbours()
        .map(|(_, v)| NeighbourSpec {
            mesh: v.mesh,
            // Sharing with no cap, as the gateway's `[sharing] enabled = true` alone.
            policy: RelayPolicy {
                sharing: true,
                up_total: u64::MAX / 8,
                down_total: u64::MAX / 8,
                up_per_neighbour: u64::MAX / 8,
                down_per_neighbour: u64::MAX / 8,
            },
        })
        .collect();
    if neighbours.is_empty() {
        let (g, p) = cores::pair(&cfg);
        transfer(Sim::new(cfg, g, p), s, &order, START, upload, |_, _, _| {
            unreachable!("a mesh event without a neighbour is refused by the parser")
        })
    } else {
        let (g, p) = pool(&cfg, order.len() - neighbours.len(), &neighbours);
        let own = order.len() - neighbours.len();
        let mut sim = Sim::new(cfg, g, p);
        // The member's paths through its neighbours are the ones its mesh opens once the
        // proxy granted the credentials and the hellos crossed (0.2 s in, a second later
        // when a lossy hop loses a hello): the transfers start once they are up.
        while !sim.gateway().relayed_paths_active() {
            assert!(
                sim.elapsed() < MESH_UP_WITHIN,
                "{}: the member's paths through its neighbours are not up",
                s.name
            );
            sim.run_for(Duration::from_millis(10));
        }
        let up = Duration::from_millis(sim.elapsed().as_millis().div_ceil(100) as u64 * 100);
        let start = START.max(up);
        transfer(
            sim,
            s,
            &order,
            start,
            upload,
            |sim: &mut Sim<PoolGateway, ProxyCore>, e: &Event, k: usize| {
                let j = order[own..]
                    .iter()
                    .position(|&p| p == k)
                    .expect("a neighbour");
                let now = sim.now();
                let settings = e.settings.clone();
                sim.gateway_mut()
                    .change_mesh(now, j, directions(e), |p: &mut LinkParams| {
                        p.apply(settings.iter().map(String::as_str))
                            .expect("checked when the scenario was parsed")
                    });
            },
        )
    }
}

fn transfer<G: Endpoint>(
    mut sim: Sim<G, ProxyCore>,
    s: &Scenario,
    order: &[usize],
    start: Duration,
    upload: bool,
    mut on_mesh: impl FnMut(&mut Sim<G, ProxyCore>, &Event, usize),
) -> Run {
    for e in s.events.iter().filter(|e| !e.mesh) {
        let settings = e.settings.clone();
        let path = order.iter().position(|&k| k == e.path).expect("a path");
        sim.at(start + e.at, path, directions(e), move |p| {
            p.apply(settings.iter().map(String::as_str))
                .expect("checked when the scenario was parsed")
        });
    }
    let owners: Vec<FlowId<TcpFlow>> = match s.owners_busy {
        true => (0..s.neighbours().count())
            .map(|j| sim.add_from(tcp(upload).start_at(start), neighbour_lan(j)))
            .collect(),
        false => Vec::new(),
    };
    let flow = sim.add(tcp(upload).start_at(start));
    for e in s.events.iter().filter(|e| e.mesh) {
        sim.run_until(start + e.at);
        on_mesh(&mut sim, e, e.path);
    }
    let end = start + s.seconds;
    sim.run_until(end);
    let f = sim.flow(flow);
    Run {
        start,
        mbit: f.goodput_bps(start + WARM_UP, end) / 1e6,
        rtos: f.stats().rto_count,
        longest_stall: f
            .delivered()
            .longest_stall_between(start + WARM_UP, end)
            .map_or(Duration::ZERO, |s| s.len),
        owners_mbit: owners
            .iter()
            .map(|&o| sim.flow(o).goodput_bps(start + WARM_UP, end) / 1e6)
            .collect(),
    }
}

/// A neighbour's line reached over its mesh hop, as one bare link: the delays and jitters
/// add up, the losses compound, the slower rate and the line's queue hold.
fn series(line: LinkSpec, mesh: LinkSpec) -> LinkSpec {
    let join = |l: LinkParams, m: LinkParams| LinkParams {
        rate_bps: match (l.rate_bps, m.rate_bps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        delay: l.delay + m.delay,
        jitter: l.jitter + m.jitter,
        loss: 1.0 - (1.0 - l.loss) * (1.0 - m.loss),
        ..l
    };
    LinkSpec {
        upstream: join(line.upstream, mesh.upstream),
        downstream: join(line.downstream, mesh.downstream),
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
        "{:<16} {:>4}  {:>7} {:>7} {:>7} {:>7}  {:>6} {:>6}  RTOs  longest stall",
        "scenario", "dir", "pool", "best", "sum", "rates", "/best", "/sum"
    );
    for s in &scenarios {
        let rates: f64 = s.sum_rate_bps().map_or(f64::NAN, |b| b as f64 / 1e6);
        for upload in [false, true] {
            let seed = 1;
            let singles: Vec<f64> = s
                .paths
                .iter()
                .zip(&s.via)
                .map(|(&p, via)| {
                    let p = via.map_or(p, |v| series(p, v.mesh));
                    single(p, s.seconds, seed, upload)
                })
                .collect();
            let best = singles.iter().copied().fold(0.0, f64::max);
            let sum: f64 = singles.iter().sum();
            let run = pooled(s, seed, upload);
            let dir = if upload { "up" } else { "down" };
            println!(
                "{:<16} {dir:>4}  {:>7.1} {best:>7.1} {sum:>7.1} {rates:>7.1}  {:>6.2} {:>6.2}  {:>4}  {:?}{}{}",
                s.name,
                run.mbit,
                run.mbit / best,
                run.mbit / sum,
                run.rtos,
                run.longest_stall,
                if run.owners_mbit.is_empty() {
                    String::new()
                } else {
                    format!("; owners meanwhile {:.1?} Mbit/s", run.owners_mbit)
                },
                if run.start == START {
                    String::new()
                } else {
                    format!("; started at {:?}, once the mesh was up", run.start)
                }
            );
            // With a path cut, the best single path is the one that stays; with the
            // owners busy, the member's own.
            let floor = (0..s.paths.len())
                .filter(|&k| s.events.iter().all(|e| e.path != k))
                .filter(|&k| !s.owners_busy || s.via[k].is_none())
                .map(|k| singles[k])
                .fold(0.0, f64::max);
            // Upstream, a busy owner's relay tells its neighbours what its line has spare in
            // its mesh hellos, and they pace their paths through it to that: the upload with
            // the owners busy is held to the member's own line too.
            if run.mbit < FRAMING * floor {
                failures.push(format!(
                    "{} {dir}: {:.1} Mbit/s through the pool, below its best single path's {floor:.1} \
                     (the best that has no event{})",
                    s.name,
                    run.mbit,
                    if s.owners_busy { ", of the member's own" } else { "" }
                ));
            }
            if run.rtos > 0 {
                failures.push(format!("{} {dir}: {} RTOs", s.name, run.rtos));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
