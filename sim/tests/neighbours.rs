//! The neighbours' lines in the pool, on the real cores: a member with its own line and
//! two neighbours' lines reached over the mesh through their relays ([`pool`]), the paths
//! through them opened by the member's mesh (credentials from the proxy, hellos over the
//! mesh hops: active 0.17 s in, before any transfer starts).
//!
//! Each line 10 Mbit/s and 20 ms each way with 50 ms of queue; the mesh hop 1 ms each way
//! at 100 Mbit/s. Every figure a test checks is printed
//! (`cargo test -p linkpool-sim --test neighbours -- --nocapture`).

mod common;

use std::time::Duration;

use common::{ms, secs, wan};

use linkpool_protocol::relay::RelayPolicy;
use linkpool_sim::cores::ProxyCore;
use linkpool_sim::pool::{NeighbourSpec, PoolGateway, neighbour_lan, pool};
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

/// The owner's traffic comes first on its line, both ways: a neighbour's owner
/// downloading (uploading) through its own line keeps at least 95 % of what it gets alone
/// while the member borrows that line the same way, whether the owner started first, at
/// the same time or after the member's transfer had taken the whole line; the member
/// still gets at least its own line. Downstream the proxy caps the relayed path at what
/// the owner's traffic leaves; upstream the relay forwards only that much.
#[test]
fn an_owner_keeps_its_line_while_lending_it() {
    let window = (secs(4), secs(9));
    for (way, transfer) in [
        ("down", TcpFlow::download as fn() -> TcpFlow),
        ("up", TcpFlow::upload),
    ] {
        let goodput = |owner_start: Option<Duration>, member: bool| {
            let mut sim = three_lines(1);
            let owner =
                owner_start.map(|at| sim.add_from(transfer().start_at(at), neighbour_lan(0)));
            let mine = member.then(|| sim.add(transfer().start_at(ms(1000))));
            sim.run_until(window.1);
            (
                owner.map_or(0.0, |f| sim.flow(f).goodput_bps(window.0, window.1)),
                mine.map_or(0.0, |f| sim.flow(f).goodput_bps(window.0, window.1)),
            )
        };
        let (alone, _) = goodput(Some(ms(1000)), false);
        // The member alone on its own line: what it must never fall below.
        let own_line = {
            let cfg = SimConfig::new(1).path(PathSpec::new(wan(10, 20)));
            let (g, p) = linkpool_sim::cores::pair(&cfg);
            let mut sim = Sim::new(cfg, g, p);
            let mine = sim.add(transfer().start_at(ms(1000)));
            sim.run_until(window.1);
            sim.flow(mine).goodput_bps(window.0, window.1)
        };
        for (case, start) in [
            ("first", ms(500)),
            ("with the member", ms(1000)),
            ("after", ms(3000)),
        ] {
            let (owner, member) = goodput(Some(start), true);
            println!(
                "{way}: owner starting {case}: {:.1} Mbit/s, {:.2} of alone ({:.1}); member {:.1} (own line alone {:.1})",
                owner / 1e6,
                owner / alone,
                alone / 1e6,
                member / 1e6,
                own_line / 1e6
            );
            assert!(
                owner >= 0.95 * alone,
                "{way}, owner starting {case}: {owner} of {alone}"
            );
            assert!(
                member >= 0.95 * own_line,
                "{way}, owner starting {case}: member {member}"
            );
        }
    }
}

/// The member's paths through its neighbours are the ones its mesh opens: the proxy
/// grants every router its credential through its tunnel, the routers find each other by
/// their hellos over the mesh hops, and within a second the member has an active path
/// through each neighbour's relay (the neighbour's member id at the proxy), paced to what
/// the relay offers: its owner's cap while the owner is idle, much less while the owner's
/// own upload fills its line, the cap again once it is idle.
#[test]
fn the_mesh_opens_the_paths_through_the_neighbours_paced_to_their_offers() {
    let mut sim = three_lines(1);
    while !sim.gateway().relayed_paths_active() {
        assert!(sim.elapsed() < secs(1), "no paths through the neighbours");
        sim.run_for(ms(10));
    }
    let up = sim.elapsed();
    let policy = sharing().up_per_neighbour;
    let cap = |sim: &Sim<PoolGateway, ProxyCore>, j: usize| {
        sim.gateway().relayed_path(j).and_then(|p| p.rate_cap())
    };
    for j in 0..2 {
        let relay = sim.gateway().neighbour_member_id(j);
        assert_eq!(relay, Some(j as u32 + 1), "neighbour {j}'s member id");
        let id = sim.gateway().path_id(1 + j);
        let path = sim.gateway().member().path(id).expect("the path");
        assert_eq!(path.endpoint().relay.map(|h| h.relay), relay);
        assert_eq!(cap(&sim, j), Some(policy), "neighbour {j} idle");
    }
    // Neighbour 0's owner uploads 3 MB through its own line from 1 s (until about 4 s).
    let owner = TcpFlow::upload().size(3_000_000).start_at(ms(1000));
    let owner = sim.add_from(owner, neighbour_lan(0));
    sim.run_until(secs(3));
    let busy = cap(&sim, 0).expect("a cap");
    let other = cap(&sim, 1);
    let standby = |sim: &Sim<PoolGateway, ProxyCore>, j: usize| {
        sim.gateway().relayed_path(j).is_some_and(|p| p.standby())
    };
    // Next to nothing spare: probes only through neighbour 0, not through neighbour 1.
    assert!(
        busy >= 25_000 || standby(&sim, 0),
        "{busy} B/s and still sent data on"
    );
    assert!(!standby(&sim, 1));
    sim.run_until(secs(8));
    assert!(!standby(&sim, 0), "held to probes once the owner is idle");
    assert_eq!(sim.flow(owner).bytes_delivered(), 3_000_000);
    let idle = cap(&sim, 0);
    println!(
        "paths through both neighbours active at {up:?}; the member's cap through neighbour \
         0 while its owner uploads {} kbit/s (through neighbour 1 {:?}), once it is idle again \
         {:?} (the owners' cap {}; the floor of a cap is 100)",
        busy * 8 / 1000,
        other.map(|c| c * 8 / 1000),
        idle.map(|c| c * 8 / 1000),
        policy * 8 / 1000
    );
    assert!(
        busy < policy / 4,
        "{busy} B/s offered while the owner is busy"
    );
    assert_eq!(other, Some(policy), "neighbour 1 is idle");
    assert_eq!(idle, Some(policy), "the owner's cap once it is idle again");
}
