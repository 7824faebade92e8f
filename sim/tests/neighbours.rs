//! The neighbours' lines in the pool, on the real cores: a member with its own line and
//! two neighbours' lines reached over the mesh through their relays ([`pool`]).
//!
//! Each line 10 Mbit/s and 20 ms each way with 50 ms of queue; the mesh hop 1 ms each way
//! at 100 Mbit/s. Every figure a test checks is printed
//! (`cargo test -p linkpool-sim --test neighbours -- --nocapture`).

mod common;

use std::time::Duration;

use common::{ms, secs, wan};

use linkpool_protocol::relay::RelayPolicy;
use linkpool_sim::cores::ProxyCore;
use linkpool_sim::pool::{NeighbourSpec, PoolGateway, pool};
use linkpool_sim::{Direction, LinkParams, LinkSpec, PathSpec, Sim, SimConfig, TcpFlow};

fn mesh() -> LinkSpec {
    LinkSpec::both(LinkParams {
        rate_bps: Some(100_000_000),
        delay: ms(1),
        ..Default::default()
    })
}

fn sharing() -> RelayPolicy {
    RelayPolicy {
        sharing: true,
        up_total: 12_500_000,
        down_total: 12_500_000,
        up_per_neighbour: 12_500_000,
        down_per_neighbour: 12_500_000,
    }
}

/// The member's line and two neighbours', each 10 Mbit/s.
fn three_lines(seed: u64) -> Sim<PoolGateway, ProxyCore> {
    let cfg = SimConfig::new(seed)
        .path(PathSpec::new(wan(10, 20)))
        .path(PathSpec::new(wan(10, 20)))
        .path(PathSpec::new(wan(10, 20)));
    let neighbour = NeighbourSpec {
        mesh: mesh(),
        policy: sharing(),
    };
    let (g, p) = pool(&cfg, 1, &[neighbour, neighbour]);
    Sim::new(cfg, g, p)
}

fn down_bytes(sim: &Sim<PoolGateway, ProxyCore>, path: usize, from: Duration, to: Duration) -> u64 {
    sim.truth(path, Direction::Downstream)
        .deliveries_between(from, to)
        .iter()
        .map(|d| d.len as u64)
        .sum()
}

/// One download through the member's own line and two neighbours' lines: each line
/// carries a real share, the download is faster than the member's own line, and when a
/// neighbour's router vanishes mid-download the connection goes on over the other two
/// without a timeout.
#[test]
fn a_download_uses_the_neighbours_lines_and_survives_one_vanishing() {
    let mut sim = three_lines(1);
    let dl = sim.add(TcpFlow::download().start_at(ms(1000)));
    sim.run_until(secs(6));
    assert!(sim.gateway().member().is_connected());
    let (from, to) = (secs(3), secs(6));
    let shares: Vec<u64> = (0..3).map(|i| down_bytes(&sim, i, from, to)).collect();
    let total: u64 = shares.iter().sum();
    let goodput = sim.flow(dl).goodput_bps(from, to);
    println!(
        "3-6 s: goodput {:.1} Mbit/s; line shares {:?} %",
        goodput / 1e6,
        shares
            .iter()
            .map(|&b| b * 100 / total.max(1))
            .collect::<Vec<_>>()
    );
    for (i, &b) in shares.iter().enumerate() {
        assert!(
            b * 100 / total >= 15,
            "line {i} carried {b} of {total} bytes"
        );
    }
    assert!(goodput > 15e6, "{goodput}: not above the member's own line");
    for j in 0..2 {
        let carried = sim.gateway().neighbour(j).relay().totals();
        assert!(
            carried.down_packets > 1000,
            "neighbour {j} relayed {carried:?}"
        );
    }
    // Neighbour 1 (line 2) is switched off.
    sim.gateway_mut().remove_neighbour(1);
    sim.run_until(secs(10));
    let tcp = sim.flow(dl);
    let stall = tcp
        .delivered()
        .longest_stall_between(secs(6), secs(10))
        .map_or(Duration::ZERO, |s| s.len);
    let after = tcp.goodput_bps(secs(7), secs(10));
    println!(
        "after the neighbour vanished at 6 s: longest stall {stall:?}, goodput 7-10 s {:.1} Mbit/s, RTOs {}",
        after / 1e6,
        tcp.stats().rto_count
    );
    assert_eq!(tcp.stats().rto_count, 0, "{:?}", tcp.events());
    assert!(stall < ms(500), "{stall:?}");
    assert!(
        after > 12e6,
        "{after}: the two lines left are not both used"
    );
    // Only the proxy's probes of the dead path still go that way.
    let probes = down_bytes(&sim, 2, secs(7), secs(10));
    assert!(
        probes < 1000,
        "{probes} bytes still sent towards the vanished neighbour"
    );
}
