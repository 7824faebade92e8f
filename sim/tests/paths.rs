//! The real cores ([`GatewayCore`], [`ProxyCore`]) over simulated paths: what a path cut
//! costs a download, a path coming back, the per-path estimates against the simulator's
//! truth, a NAT rebinding, and how often the cores ask to be woken.
//!
//! Two paths unless said otherwise: path 0 at 20 Mbit/s and 10 ms each way, path 1 at
//! 10 Mbit/s and 30 ms, both with 50 ms of queue. Every figure a test checks is printed
//! (`cargo test -p linkpool-sim --test paths -- --nocapture`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{ms, secs, wan};

use linkpool_protocol::PathEvent;
use linkpool_protocol::client::Event;
use linkpool_protocol::flow::{Mode, Modes};
use linkpool_protocol::path::{Path, PathState};
use linkpool_sim::cores::{self, GatewayCore, ProxyCore};
use linkpool_sim::{
    Direction, FlowId, LinkParams, PathSpec, PathTruth, Side, Sim, SimConfig, TcpFlow, UdpStream,
};

/// The configured two-way delays of the two paths.
const TWO_WAY: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(60)];

fn two_paths_with(seed: u64, p0: LinkParams, p1: LinkParams) -> Sim<GatewayCore, ProxyCore> {
    let cfg = SimConfig::new(seed)
        .path(PathSpec::new(p0))
        .path(PathSpec::new(p1));
    let (g, p) = cores::pair(&cfg);
    Sim::new(cfg, g, p)
}

fn two_paths(seed: u64) -> Sim<GatewayCore, ProxyCore> {
    two_paths_with(seed, wan(20, 10), wan(10, 30))
}

/// The proxy's path for simulated path `i`.
fn proxy_path(sim: &Sim<GatewayCore, ProxyCore>, i: usize) -> &Path {
    let id = sim.gateway().path_id(i);
    sim.proxy()
        .member()
        .paths
        .iter()
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("the proxy has no path {i} ({id:?})"))
}

/// Datagram bytes delivered in `[from, to)`.
fn bytes_between(t: &PathTruth, from: Duration, to: Duration) -> u64 {
    t.deliveries_between(from, to)
        .iter()
        .map(|d| d.len as u64)
        .sum()
}

/// The one-way delay of the last delivery before `t`.
fn last_delay_before(t: &PathTruth, at: Duration) -> Duration {
    t.deliveries_between(Duration::ZERO, at)
        .last()
        .expect("a delivery")
        .delay()
}

fn within(estimate: f64, truth: f64, tolerance: f64) -> bool {
    (estimate - truth).abs() <= tolerance * truth.abs()
}

fn states(sim: &Sim<GatewayCore, ProxyCore>) -> String {
    let g: Vec<_> = (0..2)
        .map(|i| sim.gateway().path(i).state().name())
        .collect();
    let p: Vec<_> = (0..2).map(|i| proxy_path(sim, i).state().name()).collect();
    format!("gateway {g:?}, proxy {p:?}")
}

#[test]
fn the_cores_connect_and_carry_a_download() {
    let mut sim = two_paths(1);
    let dl = sim.add(TcpFlow::download().start_at(ms(500)));
    sim.run_until(secs(3));
    println!(
        "{}; goodput {:.1} Mbit/s; {:?}",
        states(&sim),
        sim.flow(dl).goodput_bps(secs(1), secs(3)) / 1e6,
        sim.flow(dl).stats()
    );
    assert!(sim.gateway().client().is_connected());
    assert!(
        sim.gateway()
            .client()
            .paths()
            .iter()
            .all(|p| p.state() == PathState::Active)
    );
    assert!(sim.proxy().member().paths.len() == 2);
    assert!(sim.flow(dl).goodput_bps(secs(1), secs(3)) > 15e6);
    assert_eq!(sim.gateway().stats().datagrams_refused, 0);
    assert_eq!(sim.proxy().stats().datagrams_refused, 0);
}

/// Path 0 is cut both ways for 1 s under a download, at a time that varies with the
/// seed (so the cut finds the download in different phases).
const OUTAGE: Duration = Duration::from_secs(1);
/// The runs of the cut tests: seeds, and when path 0 is cut.
const CUTS: [(u64, u64); 4] = [(1, 3000), (2, 3370), (3, 4110), (4, 5530)];

/// Both paths with 2 ms of jitter (seeded, never reordering), so that seeds differ.
fn jittery(seed: u64) -> Sim<GatewayCore, ProxyCore> {
    let j = |p: LinkParams| LinkParams { jitter: ms(2), ..p };
    two_paths_with(seed, j(wan(20, 10)), j(wan(10, 30)))
}

fn cut_download(seed: u64, cut: Duration) -> (Sim<GatewayCore, ProxyCore>, FlowId<TcpFlow>) {
    let mut sim = jittery(seed);
    let dl = sim.add(TcpFlow::download().start_at(ms(500)));
    sim.outage(0, cut, OUTAGE);
    (sim, dl)
}

/// (1) A cut of the path that carries a download costs it no retransmission timeout: the
/// proxy suspects the path within about two RTTs and re-sends what was in flight on the
/// other, so TCP sees at most a fast retransmit, and in-order delivery stalls for less
/// than two of the cut path's RTTs (as it is when cut: its queue full of the download)
/// and 100 ms (the re-send's trip over path 1, 30 ms, and TCP's own recovery).
///
/// Sixteen cuts, at times that find the download in different phases: no RTO and every
/// stall within its bound (they are 73-117 ms). TCP's own retransmissions jump their
/// flow's queue in the core: the download's window was sized for both paths, what it sent
/// at that rate waits there for path 1 alone, and a retransmission behind it waited for
/// all of it (stalls of 150-300 ms in 5 of these 16 cuts, one RTO).
///
/// The re-sends are clocked by their acks on path 1 (a slow-start window): poured on it
/// in one burst (120 packets, ~165 kB, into ~44 packets of queue) they were dropped,
/// TCP's retransmissions of the holes were dropped too, and it timed out (two of four
/// runs, a ~268 ms stall). Now path 1 drops none.
#[test]
fn a_path_cut_costs_a_download_no_timeout() {
    let mut failures = Vec::new();
    for seed in 1..=16 {
        let cut = ms(3000 + seed * 377 % 3000);
        let (mut sim, dl) = cut_download(seed, cut);
        sim.run_until(cut);
        let down = |sim: &Sim<_, _>, i| {
            bytes_between(sim.truth(i, Direction::Downstream), cut - secs(1), cut)
        };
        let (on0, on1) = (down(&sim, 0), down(&sim, 1));
        // Spread per packet over both, the faster carrying the larger share.
        assert!(
            on0 > on1 && on1 > 0,
            "seed {seed}: the download is not spread with path 0 first before the cut \
             ({on0} vs {on1} bytes)"
        );
        let rtt = last_delay_before(sim.truth(0, Direction::Downstream), cut)
            + last_delay_before(sim.truth(0, Direction::Upstream), cut);
        sim.run_until(cut + OUTAGE + secs(2));
        let tcp = sim.flow(dl);
        let stall = tcp
            .delivered()
            .longest_stall_between(cut - ms(500), cut + OUTAGE)
            .map_or(Duration::ZERO, |s| s.len);
        let bound = 2 * rtt + ms(100);
        let resent = proxy_path(&sim, 0).counters().resent_elsewhere;
        let queue_drops = sim.truth(1, Direction::Downstream).link.dropped_queue;
        println!(
            "seed {seed}, cut at {cut:?}: cut path RTT {rtt:?} (unloaded {:?}); stall {stall:?}, \
             bound {bound:?}; RTOs {}, fast retransmits {}, retransmits {}; the proxy re-sent \
             {resent} elsewhere, path 1 dropped {queue_drops} in its queue",
            TWO_WAY[0],
            tcp.stats().rto_count,
            tcp.stats().fast_retransmits,
            tcp.stats().retransmits
        );
        if tcp.stats().rto_count != 0 {
            failures.push(format!("seed {seed}: RTOs {:?}", tcp.events()));
        }
        if stall >= bound {
            failures.push(format!("seed {seed}: stall {stall:?} >= {bound:?}"));
        }
        assert!(
            tcp.goodput_bps(cut + ms(300), cut + OUTAGE) > 6e6,
            "seed {seed}: path 1 does not carry the download during the cut"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// (2) A path that comes back is used again: once path 0 answers after its outage both
/// cores make it active, and the download, spread per packet, goes back to carrying
/// most of it over path 0 (the faster: two thirds of the pool). How fast the download
/// itself grows back is its TCP's affair: its round trip is now the slower path's.
#[test]
fn a_path_that_comes_back_carries_the_download_again() {
    for (seed, cut) in CUTS {
        let (mut sim, dl) = cut_download(seed, ms(cut));
        let back = ms(cut) + OUTAGE;
        sim.run_until(back);
        let mid = states(&sim);
        assert_ne!(
            sim.gateway().path(0).state(),
            PathState::Active,
            "seed {seed}"
        );
        sim.run_until(back + secs(3));
        let id = sim.gateway().path_id(0);
        let active_again = sim
            .gateway()
            .events()
            .iter()
            .find(|(t, e)| {
                *t >= back
                    && *e
                        == Event::Path(PathEvent {
                            path: id,
                            state: PathState::Active,
                        })
            })
            .map(|(t, _)| *t - back);
        let from = back + secs(1);
        let to = back + secs(3);
        let on0 = bytes_between(sim.truth(0, Direction::Downstream), from, to);
        let on1 = bytes_between(sim.truth(1, Direction::Downstream), from, to);
        let share = on0 as f64 / (on0 + on1) as f64;
        println!(
            "seed {seed}: at the end of the outage {mid}; gateway path 0 active again after \
             {active_again:?}; path 0 carries {:.1} % of the download 1-3 s after; {}; goodput {:.1} Mbit/s",
            share * 100.0,
            states(&sim),
            sim.flow(dl).goodput_bps(from, to) / 1e6
        );
        assert!(
            active_again.is_some(),
            "seed {seed}: path 0 never active again"
        );
        assert_eq!(
            sim.gateway().path(0).state(),
            PathState::Active,
            "seed {seed}"
        );
        assert_eq!(
            proxy_path(&sim, 0).state(),
            PathState::Active,
            "seed {seed}"
        );
        assert!(share > 0.5, "seed {seed}: path 0 carries {share}");
        // Data, not probes, in each second.
        let before = bytes_between(sim.truth(0, Direction::Downstream), from, from + secs(1));
        let after = bytes_between(sim.truth(0, Direction::Downstream), to - secs(1), to);
        assert!(
            before > 500_000 && after > 500_000,
            "seed {seed}: {before} {after}"
        );
    }
}

/// (3a) The gateway's RTT estimates of idle paths (its pings only) are the paths'
/// two-way delays within 10 %.
#[test]
fn the_gateway_measures_idle_rtts() {
    let mut sim = two_paths(3);
    sim.run_until(secs(10));
    for (i, truth) in TWO_WAY.into_iter().enumerate() {
        let p = sim.gateway().path(i);
        let (srtt, min) = (p.srtt().unwrap(), p.min_rtt().unwrap());
        println!("gateway path {i}: srtt {srtt:?}, min_rtt {min:?}, truth {truth:?}");
        assert!(within(srtt.as_secs_f64(), truth.as_secs_f64(), 0.1));
        assert!(within(min.as_secs_f64(), truth.as_secs_f64(), 0.1));
    }
}

/// (3b) The same at the proxy, which pings an idle path itself only in its answers.
///
/// Fails: each end acknowledges the other's ping only after `MAX_ACK_DELAY` (10 ms;
/// `Path::on_received`: an in-order ack-eliciting packet below `ACK_EVERY` waits), so
/// every RTT sample the proxy gets is 10 ms long. The gateway's first sample is the
/// handshake's round trip (no ack delay), so its `min_rtt` is right and RFC 9002's
/// adjustment takes the reported ack delay off its later samples; the proxy's first
/// sample already has the 10 ms in it, so its `min_rtt` has too, and the adjustment
/// (`rtt >= min_rtt + ack_delay`) never applies: 30 ms on a 20 ms path, 70 on 60.
#[test]
fn the_proxy_measures_idle_rtts() {
    let mut sim = two_paths(3);
    sim.run_until(secs(10));
    for (i, truth) in TWO_WAY.into_iter().enumerate() {
        let p = proxy_path(&sim, i);
        let (srtt, min) = (p.srtt().unwrap(), p.min_rtt().unwrap());
        println!("proxy path {i}: srtt {srtt:?}, min_rtt {min:?}, truth {truth:?}");
        assert!(
            within(srtt.as_secs_f64(), truth.as_secs_f64(), 0.1),
            "proxy path {i}: srtt {srtt:?}, truth {truth:?}"
        );
        assert!(
            within(min.as_secs_f64(), truth.as_secs_f64(), 0.1),
            "proxy path {i}: min_rtt {min:?}, truth {truth:?}"
        );
    }
}

/// (3c) Under a download, the min_rtt of the loaded path is still its two-way delay (the
/// first packets found the queue empty), at both ends.
#[test]
fn min_rtt_of_a_loaded_path() {
    let mut sim = two_paths(4);
    sim.add(TcpFlow::download().start_at(ms(500)));
    sim.run_until(secs(5));
    let truth = TWO_WAY[0];
    let g = sim.gateway().path(0).min_rtt().unwrap();
    let p = proxy_path(&sim, 0).min_rtt().unwrap();
    println!(
        "loaded path 0: gateway min_rtt {g:?} (srtt {:?}), proxy min_rtt {p:?} (srtt {:?}), truth {truth:?}",
        sim.gateway().path(0).srtt().unwrap(),
        proxy_path(&sim, 0).srtt().unwrap()
    );
    assert!(within(g.as_secs_f64(), truth.as_secs_f64(), 0.1));
    assert!(within(p.as_secs_f64(), truth.as_secs_f64(), 0.1));
}

/// (3d) Loss: path 0 drops 2 % both ways and carries 8 Mbit/s of UDP each way for 30 s.
/// Each end's cumulative count of its packets lost, lost / (lost + acked), is the
/// truth's loss fraction of the direction it sends on within 10 % (the truth counts every
/// datagram, acks too; the core its ack-eliciting ones: the same link, other samples).
#[test]
fn loss_estimates_match_the_truth() {
    let lossy = LinkParams {
        loss: 0.02,
        ..wan(20, 10)
    };
    let mut sim = two_paths_with(5, lossy, wan(10, 30));
    sim.add(UdpStream::bulk(Side::Proxy, 8_000_000, 1200).start_at(ms(500)));
    sim.add(UdpStream::bulk(Side::Gateway, 8_000_000, 1200).start_at(ms(500)));
    sim.run_until(secs(30));
    let ends = [
        (Side::Gateway, sim.gateway().path(0), Direction::Upstream),
        (Side::Proxy, proxy_path(&sim, 0), Direction::Downstream),
    ];
    for (side, p, dir) in ends {
        let c = p.counters();
        let estimate = c.lost as f64 / (c.lost + c.acked) as f64;
        let truth = sim.truth(0, dir).loss_fraction();
        println!(
            "{side} path 0: lost {} of {} ({:.3} %), windowed {:.3} %; truth {:.3} % of {} datagrams {dir:?}",
            c.lost,
            c.lost + c.acked,
            estimate * 100.0,
            p.loss() * 100.0,
            truth * 100.0,
            sim.truth(0, dir).sent
        );
        // The streams are spread over both paths: path 0 carries about two thirds.
        assert!(c.lost + c.acked > 15_000, "{side}: too few packets");
        assert!(
            within(estimate, truth, 0.1),
            "{side}: {estimate} vs {truth}"
        );
        let clean = match side {
            Side::Gateway => sim.gateway().path(1),
            Side::Proxy => proxy_path(&sim, 1),
        };
        // Path 1 drops nothing but what its queue overflows with (none: the sender's
        // congestion control keeps it short), and the core counts no more than that.
        let overflow = sim.truth(1, dir).link.dropped_queue;
        println!(
            "{side} path 1: lost {}, queue drops {overflow}",
            clean.counters().lost
        );
        assert_eq!(overflow, 0, "{side}: path 1's queue overflowed");
        assert_eq!(clean.counters().lost, 0, "{side}: loss on the clean path 1");
    }
}

/// (3e) Delivery rate: a download pinned to path 0 saturates it (downstream) and an
/// upload does so upstream. The sender's estimate (datagram bytes per second) is within 10 % of the
/// truth's rate of the last second and of what the link carries of datagram bytes: its
/// 20 Mbit/s counts the simulator's 28 bytes of IPv4 and UDP headers per datagram too.
#[test]
fn delivery_rate_of_a_saturated_path() {
    for upload in [false, true] {
        let mut sim = two_paths(6);
        // One path, saturated: the flow pinned to it rather than spread.
        let pinned = Modes {
            bulk: Mode::Session,
            ..Modes::default()
        };
        sim.gateway_mut().client_mut().set_spreading(pinned);
        sim.proxy_mut().server_mut().set_spreading(pinned);
        let flow = if upload {
            TcpFlow::upload()
        } else {
            TcpFlow::download()
        };
        sim.add(flow.start_at(ms(500)));
        let end = secs(6);
        sim.run_until(end);
        let (side, dir, p) = if upload {
            (Side::Gateway, Direction::Upstream, sim.gateway().path(0))
        } else {
            (Side::Proxy, Direction::Downstream, proxy_path(&sim, 0))
        };
        let estimate = p.delivery_rate() as f64;
        let truth = sim.truth(0, dir);
        let window = truth.deliveries_between(end - secs(1), end);
        let bytes: u64 = window.iter().map(|d| d.len as u64).sum();
        let measured = bytes as f64;
        let mean_len = bytes as f64 / window.len() as f64;
        let link = 20e6 / 8.0 * mean_len / (mean_len + 28.0);
        println!(
            "{side} path 0 ({dir:?}): delivery rate {:.3} MB/s; truth {:.3} MB/s of datagrams \
             (mean {mean_len:.0} bytes), link {:.3} MB/s of datagram bytes",
            estimate / 1e6,
            measured / 1e6,
            link / 1e6
        );
        assert!(within(estimate, measured, 0.1), "{side}: vs truth");
        assert!(within(estimate, link, 0.1), "{side}: vs link");
    }
}

/// The address path 0's NAT moves the gateway to.
fn rebound() -> SocketAddr {
    "100.64.0.99:41234".parse().unwrap()
}

/// (4) Roaming: at 2 s path 0's NAT maps the gateway to a new address. Three datagrams
/// sent through the old mapping arrive after the first ones from the new address. The
/// proxy's endpoint of path 0 follows the new address at its first datagram, stays there
/// (the late ones have lower packet numbers), and the download goes on over path 0.
#[test]
fn roaming_follows_the_new_address_and_ignores_late_packets() {
    let mut sim = two_paths(7);
    let dl = sim.add(TcpFlow::download().start_at(ms(500)));
    let at = secs(2);
    let t = sim.instant(at);
    sim.proxy_mut().rebind(0, t, rebound(), 3);
    sim.run_until(at);
    let old = proxy_path(&sim, 0).endpoint().remote;
    assert_eq!(old, cores::gateway_remote(0));
    let mut moved = None;
    let mut back = Vec::new();
    let end = at + secs(3);
    while sim.elapsed() < end {
        sim.run_for(ms(1));
        let remote = proxy_path(&sim, 0).endpoint().remote;
        match (moved, remote == rebound()) {
            (None, true) => moved = Some(sim.elapsed() - at),
            (Some(_), false) => back.push((sim.elapsed(), remote)),
            _ => {}
        }
    }
    let tcp = sim.flow(dl);
    let on0 = bytes_between(sim.truth(0, Direction::Downstream), at + secs(1), end);
    println!(
        "moved after {moved:?}; moved back {back:?}; late datagrams handed over {}, sent to the \
         old mapping {}; refused by the proxy {} {:?}; goodput after {:.1} Mbit/s, path 0 {:.1} Mbit/s; \
         longest stall from 100 ms before {:?}; RTOs {}",
        sim.proxy().late_delivered(),
        sim.proxy().sent_to_stale(),
        sim.proxy().stats().datagrams_refused,
        sim.proxy().stats().last_reasons,
        tcp.goodput_bps(at + secs(1), end) / 1e6,
        on0 as f64 * 8.0 / 2.0 / 1e6,
        tcp.delivered().longest_stall_between(at - ms(100), end),
        tcp.stats().rto_count,
    );
    assert!(moved.is_some_and(|d| d < ms(50)), "never moved: {moved:?}");
    assert!(back.is_empty(), "moved back: {back:?}");
    assert_eq!(sim.proxy().late_delivered(), 3);
    assert_eq!(proxy_path(&sim, 0).endpoint().remote, rebound());
    assert_eq!(proxy_path(&sim, 0).state(), PathState::Active);
    // No gap of 50 ms or more in the download around the rebinding.
    let around = tcp
        .delivered()
        .longest_stall_between(at - ms(50), at + ms(500));
    assert!(
        around.is_none(),
        "the rebinding stalled the download: {around:?}"
    );
    assert!(tcp.goodput_bps(at + secs(1), end) > 15e6);
    assert!(on0 as f64 * 8.0 / 2.0 > 15e6, "path 0 no longer carries it");
}

/// (5) Wake-ups (timer calls at distinct instants; `run_until` fails on a spin). Idle,
/// per path the gateway wakes for its ping every probe interval (100 ms) and for the
/// delayed ack (10 ms later) of the proxy's ping (about once a second); the proxy, whose
/// own pings ride on its answers, wakes for the delayed ack of each of the gateway's
/// pings (10 a second); silence timers are moved by the answers before they are due. So
/// at most 2 timers × 10 a second × 2 paths = 40 a second at either end (measured: ~22
/// and ~20), far below the 100/s of a 10 ms tick. A dead path is pinged once a second:
/// fewer. Under a download spread over both paths, acknowledgements go out after every
/// 4th packet or after the 10 ms ack delay (a timer per path), and the sender's pacer
/// wakes once per quantum (a millisecond's worth, two packets at least) per busy path:
/// a bound of one wake-up per four datagrams an end sends or receives, plus the idle 40.
/// (The simulator counts an ack made due at once by an arrival as a wake-up too; an event
/// loop sends it with its answer.)
#[test]
fn the_cores_wake_only_for_their_timers() {
    let mut sim = two_paths(8);
    sim.try_run_until(secs(12)).expect("no spin");
    let (from, to) = (secs(2), secs(12));
    let g = sim.endpoint_stats(Side::Gateway).wakeups_per_sec(from, to);
    let p = sim.endpoint_stats(Side::Proxy).wakeups_per_sec(from, to);
    println!("idle: wake-ups/s gateway {g:.1}, proxy {p:.1}");
    assert!(g <= 40.0, "gateway idle {g}");
    assert!(p <= 40.0, "proxy idle {p}");

    // Idle with path 0 down from 2 s: suspect (pinged fast, backing off), then dead
    // (pinged every second), and nothing else to wake for.
    let mut sim = two_paths(8);
    sim.down_at(secs(2), 0, &Direction::BOTH);
    sim.try_run_until(secs(12)).expect("no spin");
    let g = sim.endpoint_stats(Side::Gateway).wakeups_per_sec(from, to);
    let p = sim.endpoint_stats(Side::Proxy).wakeups_per_sec(from, to);
    println!(
        "idle, path 0 down: wake-ups/s gateway {g:.1}, proxy {p:.1}; {}",
        states(&sim)
    );
    assert_eq!(sim.gateway().path(0).state(), PathState::Dead);
    assert!(g <= 40.0, "gateway idle, path 0 down {g}");
    assert!(p <= 40.0, "proxy idle, path 0 down {p}");

    let mut sim = two_paths(8);
    let dl = sim.add(TcpFlow::download().start_at(ms(500)));
    sim.try_run_until(secs(12)).expect("no spin");
    let gs = sim.endpoint_stats(Side::Gateway);
    let ps = sim.endpoint_stats(Side::Proxy);
    let g = gs.wakeups_per_sec(from, to);
    let p = ps.wakeups_per_sec(from, to);
    let arrivals = gs.datagrams_in as f64 / 12.0;
    let traffic =
        |s: &linkpool_sim::EndpointStats| (s.datagrams_in + s.datagrams_out) as f64 / 12.0;
    let (gt, pt) = (traffic(gs), traffic(ps));
    println!(
        "download ({:.1} Mbit/s): wake-ups/s gateway {g:.1}, proxy {p:.1}; datagrams in/s \
         gateway {arrivals:.0}, proxy {:.0}; in and out/s gateway {gt:.0}, proxy {pt:.0}",
        sim.flow(dl).goodput_bps(from, to) / 1e6,
        ps.datagrams_in as f64 / 12.0
    );
    assert!(g <= gt / 4.0 + 40.0, "gateway under a download {g}");
    assert!(p <= pt / 4.0 + 40.0, "proxy under a download {p}");
}

/// A metered line pays for its own probing interval only: with the gateway pinging path 0
/// every 10 s, an idle minute carries about one ping, one answer (with the proxy's ping
/// riding on it) and one ack each 10 s, and the proxy sends nothing of its own between.
/// The other path, at the default 100 ms, shows what the default costs.
#[test]
fn a_slow_probing_interval_is_all_an_idle_path_costs() {
    let mut sim = two_paths(5);
    sim.run_until(secs(2));
    let id = sim.gateway().path_id(0);
    sim.gateway_mut().client_mut().set_path_settings(
        id,
        linkpool_protocol::path::PathSettings {
            probe_interval: secs(10),
        },
    );
    sim.run_until(secs(12));
    let count = |sim: &Sim<GatewayCore, ProxyCore>, i, dir| {
        let t = sim.truth(i, dir);
        (t.sent, t.sent_bytes)
    };
    let before =
        [0, 1].map(|i| [Direction::Upstream, Direction::Downstream].map(|d| count(&sim, i, d)));
    sim.run_until(secs(72));
    let after =
        [0, 1].map(|i| [Direction::Upstream, Direction::Downstream].map(|d| count(&sim, i, d)));
    let delta = |i: usize, d: usize| {
        (
            after[i][d].0 - before[i][d].0,
            after[i][d].1 - before[i][d].1,
        )
    };
    let (up0, down0) = (delta(0, 0), delta(0, 1));
    let (up1, down1) = (delta(1, 0), delta(1, 1));
    println!(
        "idle minute: path 0 (10 s) up {} datagrams / {} B, down {} / {} B; path 1 (100 ms) up {} / {} B, down {} / {} B",
        up0.0, up0.1, down0.0, down0.1, up1.0, up1.1, down1.0, down1.1
    );
    // 6 pings and 6 acks of the proxy's pings up, 6 answers down, each ± one for where
    // the minute falls.
    assert!((10..=14).contains(&up0.0), "{up0:?}");
    assert!((5..=7).contains(&down0.0), "{down0:?}");
    // The default: ten pings a second and their answers, about 600 each way.
    assert!(up1.0 > 550 && down1.0 > 550, "{up1:?} {down1:?}");
    assert_eq!(sim.gateway().path(0).state(), PathState::Active);
    assert_eq!(proxy_path(&sim, 0).state(), PathState::Active);
}
