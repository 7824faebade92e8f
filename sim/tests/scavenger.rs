//! Relayed paths are scavengers: a neighbour's line also carries traffic the pool cannot
//! see (its owner's devices that bypass the pool, the ISP's other users), and the only
//! sign of it is the line's queueing delay. A path through that line gives way when the
//! delay passes the target (60 ms, LEDBAT++), and takes the line back when it falls.
//!
//! A member with its own line (or one that is out) and one neighbour's, each 10 Mbit/s
//! and 20 ms each way; the member's line has 50 ms of queue, the neighbour's 200 ms (a
//! bloated DSL or cable line, where a loss-based download keeps a deep standing queue).
//! The unseen traffic crosses the neighbour's line directly ([`Sim::add_unseen`]). Every
//! figure a test checks is printed (`cargo test --release -p linkpool-sim --test
//! scavenger -- --nocapture`); the figures without the scavenger, noted beside the
//! checks, were measured with relayed paths that do not scavenge.

mod common;

use std::time::Duration;

use common::{ms, secs, wan};

use linkpool_protocol::path::SCAVENGER_TARGET;
use linkpool_protocol::relay::RelayPolicy;
use linkpool_sim::cores::ProxyCore;
use linkpool_sim::pool::{NeighbourSpec, PoolGateway, neighbour_lan, pool};
use linkpool_sim::{
    Direction, LinkParams, LinkSpec, PathSpec, Side, Sim, SimConfig, TcpFlow, UdpStream, percentile,
};

/// The neighbour's line beside the member's own: simulated path 1.
const LINE: usize = 1;

fn neighbour() -> NeighbourSpec {
    NeighbourSpec {
        mesh: LinkSpec::both(LinkParams {
            rate_bps: Some(100_000_000),
            delay: ms(1),
            ..Default::default()
        }),
        policy: RelayPolicy {
            sharing: true,
            up_total: 12_500_000,
            down_total: 12_500_000,
            up_per_neighbour: 12_500_000,
            down_per_neighbour: 12_500_000,
        },
    }
}

/// The member's line of `own` Mbit/s (50 ms of queue) and the neighbour's (10 Mbit/s,
/// `queue` of it). With `own` none, the member's line is out: a member needs its own
/// line to get its mesh credential from the proxy (and so its path through the
/// neighbour), so it has a 10 Mbit/s one that goes down for good as soon as its path
/// through the neighbour is active (about 0.2 s in), long before any traffic starts.
fn lines(seed: u64, own: Option<u64>, queue: Duration) -> Sim<PoolGateway, ProxyCore> {
    let cfg = SimConfig::new(seed)
        .path(PathSpec::new(wan(own.unwrap_or(10), 20)))
        .path(PathSpec::new(LinkParams {
            queue,
            ..wan(10, 20)
        }));
    let (g, p) = pool(&cfg, 1, &[neighbour()]);
    let mut sim = Sim::new(cfg, g, p);
    if own.is_none() {
        while !sim.gateway().relayed_paths_active() {
            assert!(sim.elapsed() < secs(1), "no path through the neighbour");
            sim.run_for(ms(10));
        }
        let now = sim.elapsed();
        sim.at(now, 0, &Direction::BOTH, |p| p.up = false);
    }
    sim
}

/// The member's line and the neighbour's.
fn two_lines(seed: u64, queue: Duration) -> Sim<PoolGateway, ProxyCore> {
    lines(seed, Some(10), queue)
}

/// The neighbour's line's queueing delay downstream (its bottleneck's backlog), sampled
/// every 10 ms from `from` to `to`: median, 95th percentile and most.
fn queue_delays(
    sim: &mut Sim<PoolGateway, ProxyCore>,
    line: usize,
    from: Duration,
    to: Duration,
) -> [Duration; 3] {
    sim.run_until(from);
    let mut samples = Vec::new();
    while sim.elapsed() < to {
        sim.run_for(ms(10));
        samples.push(sim.backlog(line, Direction::Downstream));
    }
    let most = samples.iter().max().copied().unwrap_or_default();
    [
        percentile(&samples, 0.5).unwrap_or_default(),
        percentile(&samples, 0.95).unwrap_or_default(),
        most,
    ]
}

/// What the member's path through the neighbour's line did at the proxy (downstream):
/// its scavenger share and back-offs, and the relayed bytes it delivered per second from
/// `from` to `to`.
fn relayed(
    sim: &Sim<PoolGateway, ProxyCore>,
    line: usize,
    from: Duration,
    to: Duration,
) -> (f64, u64, f64) {
    let id = sim.gateway().path_id(line);
    let path = sim
        .proxy()
        .member()
        .paths
        .iter()
        .find(|p| p.id() == id)
        .expect("the member's path through its neighbour");
    let bytes: usize = sim
        .truth(line, Direction::Downstream)
        .deliveries_between(from, to)
        .iter()
        .map(|d| d.len)
        .sum();
    (
        path.scavenger_share().expect("a relayed path scavenges"),
        path.counters().scavenger_backoffs,
        bytes as f64 * 8.0 / (to - from).as_secs_f64(),
    )
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

/// The owner's laptop downloads past the pool (CUBIC, keeping the line's deep queue
/// full) while the member, whose own line is out, downloads through the neighbour's: the
/// member's path gives way, so the laptop keeps nearly what it gets alone, whether the
/// member's download started first (and had the whole line) or after the laptop's. The
/// pool learnt the line's base delay from its pings before the laptop started.
#[test]
fn a_download_the_pool_cannot_see_keeps_the_neighbours_line() {
    let window = (secs(7), secs(14));
    let laptop_start = secs(3);
    let run = |member: Option<Duration>| {
        let mut sim = lines(1, None, ms(200));
        let laptop = sim.add_unseen(
            TcpFlow::download().start_at(laptop_start),
            LINE,
            neighbour_lan(0),
        );
        // A download manager's four connections.
        let mine: Vec<_> = member
            .into_iter()
            .flat_map(|at| (0..4).map(move |_| TcpFlow::download().start_at(at)))
            .map(|f| sim.add(f))
            .collect();
        let delays = queue_delays(&mut sim, LINE, window.0, window.1);
        let unseen = sim.flow(laptop).goodput_bps(window.0, window.1);
        let mine: f64 = mine
            .into_iter()
            .map(|f| sim.flow(f).goodput_bps(window.0, window.1))
            .sum();
        let (share, backoffs, _) = relayed(&sim, LINE, window.0, window.1);
        (unseen, mine, delays, share, backoffs)
    };
    let (alone, _, delays_alone, _, _) = run(None);
    println!(
        "the laptop alone: {:.1} Mbit/s, queue median {:?} p95 {:?}",
        mbit(alone),
        delays_alone[0],
        delays_alone[1],
    );
    for (case, at) in [("first", secs(1)), ("after the laptop", secs(5))] {
        let (unseen, mine, delays, share, backoffs) = run(Some(at));
        println!(
            "member downloading {case}: laptop {:.1} Mbit/s ({:.2} of alone), queue median \
             {:?} p95 {:?}; member {:.2} Mbit/s, share {share:.3}, back-offs {backoffs}",
            mbit(unseen),
            unseen / alone,
            delays[0],
            delays[1],
            mbit(mine),
        );
        // Without the scavenger: 0.86 of alone with the member first, 0.97 after.
        assert!(unseen >= 0.95 * alone, "{case}: laptop {unseen} of {alone}");
        assert!(backoffs >= 1, "{case}");
        assert!(share <= 0.1, "{case}: share {share}");
    }
}

/// No traffic but the pool's on the neighbour's line: the member's download through it
/// is as fast as without the scavenger (and the neighbours test's figures are unchanged),
/// and the relayed path ends at its full share. On the deep line, its own startup's queue
/// passed the target once.
#[test]
fn an_idle_neighbours_line_is_fully_used() {
    let window = (secs(3), secs(8));
    for queue in [ms(50), ms(200)] {
        let mut sim = two_lines(1, queue);
        let dl = sim.add(TcpFlow::download().start_at(ms(1000)));
        let delays = queue_delays(&mut sim, LINE, window.0, window.1);
        let goodput = sim.flow(dl).goodput_bps(window.0, window.1);
        let (share, backoffs, through) = relayed(&sim, LINE, window.0, window.1);
        println!(
            "neighbour's line with {queue:?} of queue, nothing unseen: download {:.1} Mbit/s, \
             {:.1} through the line, share {share:.3}, back-offs {backoffs}, queue median \
             {:?} p95 {:?} most {:?}",
            mbit(goodput),
            mbit(through),
            delays[0],
            delays[1],
            delays[2]
        );
        // Without the scavenger: 17.0 Mbit/s, 9.2 through the line, both queues.
        assert!(goodput >= 16e6, "{queue:?}: {goodput}");
        assert!(through >= 8.5e6, "{queue:?}: {through}");
        assert_eq!(share, 1.0, "{queue:?}");
    }
}

/// The ISP's other users arrive on the neighbour's line at a steady 6 Mbit/s while the
/// member's download has the whole line: the relayed path gives way, and the line's queue
/// settles at or below the target instead of at its 200 ms; the other users lose little.
#[test]
fn steady_unseen_traffic_leaves_the_line_near_the_target() {
    let mut sim = two_lines(1, ms(200));
    let dl = sim.add(TcpFlow::download().start_at(ms(1000)));
    let others = sim.add_unseen(
        UdpStream::cbr(Side::Proxy, 6_000_000, 1200).start_at(secs(5)),
        LINE,
        neighbour_lan(0),
    );
    let before = queue_delays(&mut sim, LINE, secs(3), secs(5));
    let (_, _, through_before) = relayed(&sim, LINE, secs(3), secs(5));
    let settling = queue_delays(&mut sim, LINE, secs(5), secs(7));
    let after = queue_delays(&mut sim, LINE, secs(7), secs(14));
    let (share, backoffs, through) = relayed(&sim, LINE, secs(7), secs(14));
    let goodput = sim.flow(dl).goodput_bps(secs(7), secs(14));
    let u = sim.flow(others);
    println!(
        "before: queue median {:?} p95 {:?}, {:.1} Mbit/s through the line",
        before[0],
        before[1],
        mbit(through_before)
    );
    println!(
        "6 Mbit/s unseen from 5 s: 5-7 s queue median {:?} p95 {:?} most {:?}; 7-14 s queue \
         median {:?} p95 {:?} most {:?}; {:.1} Mbit/s through the line, share {share:.3}, \
         back-offs {backoffs}; download {:.1} Mbit/s; unseen lost {} of {}",
        settling[0],
        settling[1],
        settling[2],
        after[0],
        after[1],
        after[2],
        mbit(through),
        mbit(goodput),
        u.lost(),
        u.sent()
    );
    // Without the scavenger: 7-14 s median 78 ms, p95 165 ms, most 187 ms; the other
    // users lost 121 packets; the download 10.6 Mbit/s.
    assert!(backoffs >= 1);
    assert!(after[0] <= SCAVENGER_TARGET * 5 / 4, "{after:?}");
    assert!(after[1] <= SCAVENGER_TARGET * 3 / 2, "{after:?}");
    assert!(
        through >= 3e6,
        "{through}: the spare of the line is still used"
    );
    assert!(
        u.lost() * 100 <= u.sent() * 3 / 2,
        "{} of {}",
        u.lost(),
        u.sent()
    );
    assert!(goodput >= 10e6, "{goodput}");
}
