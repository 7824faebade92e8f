//! The real cores over simulated paths.

use std::time::Duration;

use linkpool_protocol::path::PathState;
use linkpool_sim::cores::{self, GatewayCore, ProxyCore};
use linkpool_sim::{Direction, LinkParams, PathSpec, Side, Sim, SimConfig, TcpFlow};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn wan(mbit: u64, delay_ms: u64) -> LinkParams {
    LinkParams {
        rate_bps: Some(mbit * 1_000_000),
        delay: ms(delay_ms),
        queue: ms(50),
        ..Default::default()
    }
}

fn two_paths(seed: u64) -> Sim<GatewayCore, ProxyCore> {
    let cfg = SimConfig::new(seed)
        .path(PathSpec::new(wan(20, 10)))
        .path(PathSpec::new(wan(10, 30)));
    let (g, p) = cores::pair(&cfg);
    Sim::new(cfg, g, p)
}

#[test]
fn the_cores_connect_and_carry_a_download() {
    let mut sim = two_paths(1);
    let dl = sim.add(TcpFlow::download().start_at(ms(500)));
    for step in 1..=30 {
        sim.run_until(ms(100 * step));
        let g = sim.gateway();
        let states: Vec<_> = g
            .client()
            .paths()
            .iter()
            .map(|p| (p.state(), p.srtt(), p.min_rtt()))
            .collect();
        println!(
            "{:?} conn={} {:?} dl={} down0={} down1={}",
            sim.elapsed(),
            g.client().is_connected(),
            states,
            sim.flow(dl).bytes_delivered(),
            sim.truth(0, Direction::Downstream).delivered,
            sim.truth(1, Direction::Downstream).delivered
        );
    }
    println!("{:?}", sim.flow(dl).stats());
    println!("g {:?} p {:?}", sim.gateway().stats(), sim.proxy().stats());
    println!("gw {:?}", sim.endpoint_stats(Side::Gateway).wakeups);
    assert!(
        sim.gateway()
            .client()
            .paths()
            .iter()
            .all(|p| p.state() == PathState::Active)
    );
    assert!(sim.flow(dl).goodput_bps(ms(1000), ms(3000)) > 15e6);
}
