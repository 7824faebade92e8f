use linkpool_sim::cores::{self};
use linkpool_sim::{Direction, LinkParams, PathSpec, Sim, SimConfig, TcpFlow};
use std::time::Duration;

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

#[test]
fn explore() {
    for (a, b) in [
        ((20, 10), (10, 30)),
        ((20, 20), (20, 20)),
        ((100, 8), (10, 40)),
    ] {
        let cfg = SimConfig::new(1)
            .path(PathSpec::new(wan(a.0, a.1)))
            .path(PathSpec::new(wan(b.0, b.1)));
        let (g, p) = cores::pair(&cfg);
        let mut sim = Sim::new(cfg, g, p);
        if std::env::var("CUT").is_ok() {
            sim.outage(0, ms(3000), ms(1000));
        }
        let dl = sim.add(
            if std::env::var("UP").is_ok() {
                TcpFlow::upload()
            } else {
                TcpFlow::download()
            }
            .start_at(ms(500)),
        );
        let mut line = String::new();
        for s in 1..=10u64 {
            sim.run_until(Duration::from_secs(s));
            let f = sim.flow(dl);
            let from = Duration::from_secs(s - 1);
            let to = Duration::from_secs(s);
            let b0: u64 = sim
                .truth(
                    0,
                    if std::env::var("UP").is_ok() {
                        Direction::Upstream
                    } else {
                        Direction::Downstream
                    },
                )
                .deliveries_between(from, to)
                .iter()
                .map(|d| d.len as u64)
                .sum();
            let b1: u64 = sim
                .truth(
                    1,
                    if std::env::var("UP").is_ok() {
                        Direction::Upstream
                    } else {
                        Direction::Downstream
                    },
                )
                .deliveries_between(from, to)
                .iter()
                .map(|d| d.len as u64)
                .sum();
            let m = sim.proxy().member();
            let ps: Vec<String> = m
                .paths
                .iter()
                .map(|p| {
                    format!(
                        "[bw {:.1} pace {:.1} cwnd {} inf {} {} srtt {:?} min {:?}]",
                        p.bandwidth() as f64 * 8e-6,
                        p.pacing_rate() as f64 * 8e-6,
                        p.congestion_window(),
                        p.bytes_in_flight(),
                        p.congestion_state().name(),
                        p.srtt(),
                        p.base_rtt()
                    )
                })
                .collect();
            line += &format!("\n  {} queued {}", ps.join(" "), m.queued);
            let c = sim.gateway().client();
            let gp: Vec<String> = c
                .paths()
                .iter()
                .map(|p| {
                    format!(
                        "[{} bw {:.1} cwnd {} inf {} {} srtt {:?}]",
                        p.state().name(),
                        p.bandwidth() as f64 * 8e-6,
                        p.congestion_window(),
                        p.bytes_in_flight(),
                        p.congestion_state().name(),
                        p.srtt()
                    )
                })
                .collect();
            line += &format!(
                "\n  GW {} waiting {} drops {:?} spread {:?}",
                gp.join(" "),
                c.queued(),
                c.stats().drops,
                c.spread_counters()
            );
            line += &format!(
                "\n  reorder {:?} skew {:?} {:?}",
                sim.gateway().client().reorder().timeout(),
                sim.gateway().client().reorder().skew(),
                sim.gateway().client().reorder().counters()
            );
            line += &format!(
                "\n  t={s}: {:.1} Mbit/s (p0 {:.1} p1 {:.1}) cwnd {} srtt {:?}",
                f.goodput_bps(from, to) / 1e6,
                b0 as f64 * 8e-6,
                b1 as f64 * 8e-6,
                f.cwnd(),
                f.srtt()
            );
        }
        let st = sim.flow(dl).stats();
        let r = sim.gateway().client().reorder();
        println!("  reorder timeout {:?} {:?}", r.timeout(), r.counters());
        let pc = format!(
            "{:?} drops {:?}",
            sim.proxy().member().spread,
            sim.proxy().server().stats().drops
        );
        println!(
            "{a:?}+{b:?}:{line}\n  rto {} fr {} retx {} ooo {} dup {} q drops p0 {} p1 {}\n  {pc}",
            st.rto_count,
            st.fast_retransmits,
            st.retransmits,
            st.ooo_segments,
            st.dup_segments,
            sim.truth(0, Direction::Downstream).link.dropped_queue,
            sim.truth(1, Direction::Downstream).link.dropped_queue
        );
    }
}
