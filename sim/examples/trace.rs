//! One TCP transfer through the pool over the paths given, traced step by step: the
//! inner TCP's goodput, window, RTT and loss events; each path's state, congestion phase,
//! rate estimate, pacing, window, losses and what it carried; the reorder buffer's
//! counters. The tool to find out why a path set is slow (the spreading property test's
//! sets, a bench scenario) one seed at a time.
//!
//! ```text
//! cargo run --release -p linkpool-sim --example trace -- [--up] [--seed N] [--start MS]
//!     [--step MS] [--until MS] [--bare] "rate=24mbit delay=75ms jitter=19ms queue=50ms" ...
//! ```
//!
//! Each path is a link in the testbed's text form (both directions alike). `--bare` runs
//! the same transfer over the first path alone, without a tunnel, for comparison.

use std::process::ExitCode;
use std::time::Duration;

use linkpool_sim::cores::{self, GatewayCore, ProxyCore};
use linkpool_sim::{BareLink, Direction, LinkParams, PathSpec, Sim, SimConfig, TcpFlow};

struct Args {
    upload: bool,
    bare: bool,
    seed: u64,
    start: Duration,
    step: Duration,
    until: Duration,
    paths: Vec<LinkParams>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        upload: false,
        bare: false,
        seed: 1,
        start: Duration::from_secs(2),
        step: Duration::from_secs(1),
        until: Duration::from_secs(20),
        paths: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let ms = |v: Option<String>, name: &str| -> Result<Duration, String> {
        v.and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .ok_or(format!("{name} wants milliseconds"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--up" => a.upload = true,
            "--bare" => a.bare = true,
            "--seed" => {
                a.seed = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--seed wants a number")?
            }
            "--start" => a.start = ms(it.next(), "--start")?,
            "--step" => a.step = ms(it.next(), "--step")?,
            "--until" => a.until = ms(it.next(), "--until")?,
            link => {
                let mut p = LinkParams::default();
                p.apply(link.split_whitespace())
                    .map_err(|e| format!("path {}: {e}", a.paths.len() + 1))?;
                a.paths.push(p);
            }
        }
    }
    if a.paths.is_empty() || a.step.is_zero() {
        return Err("give at least one path, e.g. \"rate=20mbit delay=10ms\"".into());
    }
    Ok(a)
}

fn tcp(upload: bool, start: Duration) -> TcpFlow {
    let t = if upload {
        TcpFlow::upload()
    } else {
        TcpFlow::download()
    };
    t.start_at(start)
}

fn mbit(bytes_per_s: f64) -> f64 {
    bytes_per_s * 8.0 / 1e6
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("trace: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = SimConfig::new(a.seed).queue_slots(8192);
    if a.bare {
        cfg = cfg.path(PathSpec::new(a.paths[0]));
        let mut sim = Sim::new(cfg, BareLink::new(), BareLink::new());
        let f = sim.add(tcp(a.upload, a.start));
        sim.run_until(a.until);
        let t = sim.flow(f);
        println!(
            "bare path 1: {:.1} Mbit/s from {:?} on; {:?}",
            t.goodput_bps(a.start, a.until) / 1e6,
            a.start,
            t.events()
        );
        return ExitCode::SUCCESS;
    }
    for &p in &a.paths {
        cfg = cfg.path(PathSpec::new(p));
    }
    let (g, p) = cores::pair(&cfg);
    let mut sim: Sim<GatewayCore, ProxyCore> = Sim::new(cfg, g, p);
    let f = sim.add(tcp(a.upload, a.start));
    let dir = if a.upload {
        Direction::Upstream
    } else {
        Direction::Downstream
    };
    let mut carried = vec![0u64; a.paths.len()];
    let mut events = 0;
    let mut t = a.step;
    while t <= a.until {
        sim.run_until(t);
        let flow = sim.flow(f);
        print!(
            "{:6.2}s {:6.1} Mbit/s  tcp window {:5} segments srtt {:?}",
            t.as_secs_f64(),
            flow.goodput_bps(t - a.step, t) / 1e6,
            flow.cwnd() / flow.config().mss as u64,
            flow.srtt()
        );
        for e in &flow.events()[events..] {
            print!("  [{:.3}s {:?}]", e.0.as_secs_f64(), e.1);
        }
        events = flow.events().len();
        println!();
        // The sending end's view of each path (the proxy's paths are in the order they
        // reached it: matched to the links by their base RTT, not by index).
        let paths: Vec<_> = if a.upload {
            (0..a.paths.len())
                .map(|i| sim.gateway().path(i).clone())
                .collect()
        } else {
            sim.proxy().member().paths.to_vec()
        };
        for (i, path) in paths.iter().enumerate() {
            let c = path.counters();
            let sent = c.tx_bytes - carried[i];
            carried[i] = c.tx_bytes;
            println!(
                "    path {}: {:6.1} Mbit/s {:?} {:?}  rate {:.1} pacing {:.1} Mbit/s  window {} in flight {}  srtt {:?} base {:?}  lost {} resent elsewhere {}",
                i + 1,
                mbit(sent as f64 / a.step.as_secs_f64()),
                path.state(),
                path.congestion_state(),
                mbit(path.bandwidth() as f64),
                mbit(path.pacing_rate() as f64),
                path.congestion_window(),
                path.bytes_in_flight(),
                path.srtt(),
                path.min_rtt(),
                c.lost,
                c.resent_elsewhere,
            );
        }
        for i in 0..a.paths.len() {
            print!("    link {} queue {:?}", i + 1, sim.backlog(i, dir));
        }
        println!();
        let reorder = if a.upload {
            sim.proxy().member().reorder.map(|r| r.counters().clone())
        } else {
            Some(sim.gateway().client().reorder().counters().clone())
        };
        println!("    reorder at the receiving end: {reorder:?}");
        t += a.step;
    }
    let flow = sim.flow(f);
    println!(
        "{:.1} Mbit/s from {:?} to {:?}; {:?}",
        flow.goodput_bps(a.start, a.until) / 1e6,
        a.start,
        a.until,
        flow.stats()
    );
    ExitCode::SUCCESS
}
