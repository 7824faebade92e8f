//! The simulator's own tests, with endpoints that carry no protocol ([`BareLink`],
//! [`BareMultiLink`]) or misbehave on purpose.

use std::time::{Duration, Instant};

use linkpool_sim::{
    BareLink, BareMultiLink, Direction, Endpoint, LinkParams, PathSpec, Ping, Side, Sim, SimConfig,
    SimError, TcpConfig, TcpEvent, TcpFlow, UdpStream,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn wan(mbit: u64, delay_ms: u64) -> LinkParams {
    LinkParams {
        rate_bps: Some(mbit * 1_000_000),
        delay: ms(delay_ms),
        ..Default::default()
    }
}

fn bare(seed: u64, path: LinkParams) -> Sim<BareLink, BareLink> {
    let cfg = SimConfig::new(seed).path(PathSpec::new(path));
    Sim::new(cfg, BareLink::new(), BareLink::new())
}

/// Inner IP bytes the link carries per second at `rate`, for `size`-byte packets (each
/// datagram also carries the simulator's 28 bytes of IPv4 and UDP headers).
fn inner_rate(rate: f64, size: usize) -> f64 {
    rate * size as f64 / (size + 28) as f64
}

#[test]
fn bulk_udp_delivers_the_link_rate() {
    let mut sim = bare(1, wan(10, 10));
    let bulk = sim.add(UdpStream::bulk(Side::Proxy, 12_000_000, 1228));
    sim.run_until(secs(3));
    let b = sim.flow(bulk);
    let got = b.delivered().rate_bps(secs(1), secs(3));
    let want = inner_rate(10e6, 1228);
    assert!(
        (got / want - 1.0).abs() < 0.01,
        "bulk goodput {got:.0} bit/s, link carries {want:.0}"
    );
    // The rest was tail-dropped, in order, and nothing went upstream.
    let down = sim.truth(0, Direction::Downstream);
    assert!(down.link.dropped_queue > 0);
    assert_eq!(b.reordered() + b.duplicated() + b.misrouted(), 0);
    assert_eq!(
        b.lost(),
        down.dropped() + sim.in_flight(0, Direction::Downstream) as u64
    );
    assert_eq!(sim.truth(0, Direction::Upstream).sent, 0);
    // A full queue: 100 ms of it, plus the delay and one packet's serialisation.
    let worst = *b.one_way_delays().iter().max().unwrap();
    assert!(
        worst > ms(109) && worst <= ms(112),
        "worst one-way delay {worst:?}"
    );
}

#[test]
fn tcp_reaches_the_link_rate() {
    let mut sim = bare(2, wan(20, 20));
    let tcp = sim.add(TcpFlow::download());
    sim.run_until(secs(8));
    let t = sim.flow(tcp);
    // Payload over the wire: 1300 of 1300 + 52 (IPv4, TCP with timestamps) + 28.
    let capacity = 20e6 * 1300.0 / 1380.0;
    let got = t.goodput_bps(secs(3), secs(8));
    eprintln!(
        "TCP on 20 Mbit/s, 20 ms: {:.2} Mbit/s of {:.2} after 3 s, {:?}, srtt {:?}",
        got / 1e6,
        capacity / 1e6,
        t.stats(),
        t.srtt()
    );
    assert!(got > 0.9 * capacity, "{got:.0} bit/s of {capacity:.0}");
    assert!(got <= capacity * 1.001);
    // HyStart++ left slow start before the 100 ms queue overflowed.
    assert_eq!(t.stats().rto_count, 0, "{:?}", t.events());
    assert!(matches!(t.events()[0].1, TcpEvent::SlowStartExit { .. }));
    assert_eq!(t.stats().misrouted, 0);
    // The srtt sees the path's 40 ms and some of the 100 ms queue.
    let srtt = t.srtt().unwrap();
    assert!(srtt > ms(40) && srtt < ms(150), "srtt {srtt:?}");
}

#[test]
fn tcp_goodput_reflects_loss() {
    let lossy = LinkParams {
        loss: 0.01,
        ..wan(20, 20)
    };
    let mut sim = Sim::new(
        SimConfig::new(3).path(PathSpec {
            downstream: linkpool_sim::DirSpec {
                link: lossy,
                mtu: 1500,
            },
            ..PathSpec::new(wan(20, 20))
        }),
        BareLink::new(),
        BareLink::new(),
    );
    let tcp = sim.add(TcpFlow::download());
    sim.run_until(secs(12));
    let t = sim.flow(tcp);
    let got = t.goodput_bps(secs(2), secs(12));
    // Mathis et al.: MSS / RTT * sqrt(3/2) / sqrt(p), with RTT 40 ms and p 1 %.
    let mathis = 1300.0 * 8.0 / 0.040 * (1.5f64).sqrt() / 0.1;
    eprintln!(
        "TCP with 1 % loss: {:.2} Mbit/s (Mathis: {:.2}), {:?}",
        got / 1e6,
        mathis / 1e6,
        t.stats()
    );
    assert!(
        got > 0.5 * mathis && got < 1.5 * mathis,
        "{got:.0} bit/s, Mathis {mathis:.0}"
    );
    assert!(t.stats().fast_retransmits > 20, "{:?}", t.stats());
    let truth = sim.truth(0, Direction::Downstream);
    let p = truth.link.dropped_loss as f64 / truth.link.offered as f64;
    assert!((0.008..0.012).contains(&p), "loss {p}");
}

#[test]
fn outage_is_a_stall_for_udp_and_timeouts_for_tcp() {
    // Paced UDP below the rate: its stall is the outage plus nothing.
    let mut sim = bare(4, wan(10, 20));
    let udp = sim.add(UdpStream::cbr(Side::Proxy, 2_000_000, 1000).stop_at(ms(3900)));
    sim.outage(0, secs(2), ms(500));
    sim.run_until(secs(4));
    let u = sim.flow(udp);
    let stall = u.delivered().longest_stall();
    eprintln!("UDP across a 500 ms outage: {stall:?}, lost {}", u.lost());
    // The last packet before the outage arrived by 2 s; the first after it left at 2.5 s
    // and takes 20 ms and its serialisation (0.8 ms), and packets leave every 4 ms.
    assert!(
        stall.len > ms(516) && stall.len < ms(525),
        "longest stall {stall:?}"
    );
    assert!(stall.start > ms(1990) && stall.start <= secs(2));
    // 125 packets sent during the outage, 5 more were on the wire.
    assert!((125..=131).contains(&u.lost()), "lost {}", u.lost());
    let down = sim.truth(0, Direction::Downstream);
    assert_eq!(
        down.link.lost_in_flight + down.link.dropped_outage,
        u.lost()
    );

    // TCP: a timeout (or more, backed off), then back to the link rate.
    let mut sim = bare(4, wan(10, 20));
    let tcp = sim.add(TcpFlow::download());
    sim.outage(0, secs(3), ms(500));
    sim.run_until(secs(8));
    let t = sim.flow(tcp);
    let stall = t.delivered().longest_stall();
    let in_outage: Vec<_> = t
        .events()
        .iter()
        .filter(|(at, e)| *at >= secs(3) && *at < ms(3600) && matches!(e, TcpEvent::Rto { .. }))
        .collect();
    eprintln!(
        "TCP across a 500 ms outage: stall {stall:?}, timeouts {in_outage:?}, {:?}",
        t.stats()
    );
    assert!(!in_outage.is_empty(), "{:?}", t.events());
    assert!(stall.len >= ms(500) && stall.start >= ms(2900), "{stall:?}");
    let after = t.goodput_bps(secs(5), secs(8));
    assert!(
        after > 0.85 * 10e6 * 1300.0 / 1380.0,
        "{after:.0} bit/s after"
    );
}

#[test]
fn sack_recovers_a_burst_of_losses_where_newreno_times_out() {
    // Without HyStart, slow start overflows the 100 ms queue by half a window. Reno's
    // halving: the subject is the recovery, not CUBIC's gentler back-off.
    let run = |sack| {
        let cfg = TcpConfig {
            hystart: false,
            cubic: false,
            sack,
            ..TcpConfig::default()
        };
        let mut sim = bare(13, wan(10, 20));
        let tcp = sim.add(TcpFlow::with_config(Side::Proxy, cfg));
        sim.run_until(secs(3));
        let t = sim.flow(tcp);
        let dropped = sim.truth(0, Direction::Downstream).link.dropped_queue;
        (
            t.stats().rto_count,
            t.stats().fast_retransmits,
            dropped,
            t.goodput_bps(ms(500), secs(3)),
        )
    };
    let (sack_rtos, sack_frs, sack_dropped, sack_rate) = run(true);
    let (reno_rtos, _, reno_dropped, reno_rate) = run(false);
    eprintln!(
        "slow-start overshoot: SACK {sack_rtos} timeouts, {sack_dropped} dropped, {:.2} Mbit/s; \
         NewReno {reno_rtos} timeouts, {reno_dropped} dropped, {:.2} Mbit/s",
        sack_rate / 1e6,
        reno_rate / 1e6
    );
    assert!(sack_dropped > 50 && reno_dropped > 50);
    assert_eq!(sack_rtos, 0);
    assert!(sack_frs >= 1);
    assert!(reno_rtos >= 1);
    assert!(sack_rate > 0.95 * 10e6 * 1300.0 / 1380.0, "{sack_rate}");
    assert!(reno_rate < 0.8 * sack_rate, "{reno_rate} vs {sack_rate}");
}

#[test]
fn a_sized_upload_completes_intact() {
    let mut sim = bare(14, wan(10, 10));
    let cfg = TcpConfig {
        ack_every: 1,
        ..TcpConfig::default()
    };
    let size = 2_000_000;
    let tcp = sim.add(
        TcpFlow::with_config(Side::Gateway, cfg)
            .size(size)
            .start_at(ms(100)),
    );
    sim.run_until(secs(3));
    let t = sim.flow(tcp);
    assert_eq!(t.bytes_delivered(), size);
    let done = t.stats().completed_at.expect("completed");
    // 2 MB at 9.4 Mbit/s of payload is 1.7 s, plus slow start.
    assert!(done > ms(1800) && done < ms(2300), "{done:?}");
    // Nothing sent twice but what CUBIC's probing lost in the queue.
    let resent = t.stats().bytes_sent - size;
    assert!(
        resent <= t.stats().retransmits * 1300,
        "{resent} bytes sent twice"
    );
    assert_eq!(t.stats().acks_sent, t.stats().segments_received);
    assert_eq!(t.delivered().first().map(|f| f > ms(110)), Some(true));
    // Nothing is sent after it, nothing is pending.
    let sent = sim.endpoint_stats(Side::Gateway).packets_in;
    sim.run_until(secs(4));
    assert_eq!(sim.endpoint_stats(Side::Gateway).packets_in, sent);
}

#[test]
fn tcp_spread_over_unequal_paths_without_a_reorder_buffer_suffers() {
    // The reference for a scheduler: two 10 Mbit/s paths, 10 and 40 ms, packets in turn.
    let cfg = SimConfig::new(15)
        .path(PathSpec::new(wan(10, 10)))
        .path(PathSpec::new(wan(10, 40)));
    let mut sim = Sim::new(cfg, BareMultiLink::new(2), BareMultiLink::new(2));
    let tcp = sim.add(TcpFlow::download());
    sim.run_until(secs(5));
    let spread = sim.flow(tcp);
    let mut single = bare(15, wan(10, 10));
    let one = single.add(TcpFlow::download());
    single.run_until(secs(5));
    let one = single.flow(one);
    let (a, b) = (
        spread.goodput_bps(secs(1), secs(5)),
        one.goodput_bps(secs(1), secs(5)),
    );
    eprintln!(
        "TCP spread over 10 + 40 ms: {:.2} Mbit/s, {} fast retransmits; on the 10 ms path alone: {:.2} Mbit/s",
        a / 1e6,
        spread.stats().fast_retransmits,
        b / 1e6
    );
    assert!(spread.stats().fast_retransmits > 10);
    assert!(a < b, "spreading without reordering was faster ({a} > {b})");
}

#[test]
fn same_seed_same_statistics() {
    let run = |seed| {
        let path = LinkParams {
            jitter: ms(5),
            loss: 0.02,
            queue: ms(50),
            ..wan(10, 15)
        };
        let cfg = SimConfig::new(seed)
            .path(PathSpec::new(path))
            .path(PathSpec::new(wan(5, 40)));
        let mut sim = Sim::new(cfg, BareMultiLink::new(2), BareMultiLink::new(2));
        let tcp = sim.add(TcpFlow::download());
        let ping = sim.add(Ping::new(Side::Gateway));
        let cbr = sim.add(UdpStream::cbr(Side::Gateway, 1_000_000, 500));
        sim.outage(1, secs(1), ms(300));
        sim.run_until(secs(3));
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            sim.flow(tcp),
            sim.flow(ping),
            sim.flow(cbr),
            sim.truth(0, Direction::Downstream),
            sim.truth(1, Direction::Upstream),
            sim.endpoint_stats(Side::Proxy)
        )
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
}

/// A BareLink whose timer is always due and never consumed.
struct Spinner {
    inner: BareLink,
    at: Instant,
}

impl Endpoint for Spinner {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.inner.handle_packet(now, packet)
    }
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        self.inner.handle_datagram(now, path, datagram)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.inner.poll_transmit(now, buf)
    }
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.inner.poll_packet(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.at)
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

#[test]
fn a_spinning_endpoint_is_reported() {
    let cfg = SimConfig::new(5).path(PathSpec::new(wan(10, 10)));
    let spinner = Spinner {
        inner: BareLink::new(),
        at: cfg.base + secs(1),
    };
    let mut sim = Sim::new(cfg, spinner, BareLink::new());
    let ping = sim.add(Ping::new(Side::Gateway));
    let err = sim.try_run_until(secs(2)).unwrap_err();
    match err {
        SimError::Spin {
            side,
            at,
            timeout,
            timeouts,
        } => {
            assert_eq!(
                (side, at, timeout, timeouts),
                (Side::Gateway, secs(1), secs(1), 5)
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains("gateway endpoint spins at 1s"),
        "{err}"
    );
    // Until then it worked: the ping sent at 980 ms is answered after 1 s.
    assert_eq!(sim.flow(ping).answers(), 49);
}

#[test]
#[should_panic(expected = "the proxy endpoint spins")]
fn run_until_panics_on_a_spin() {
    let cfg = SimConfig::new(5).path(PathSpec::new(wan(10, 10)));
    let spinner = Spinner {
        inner: BareLink::new(),
        at: cfg.base,
    };
    let mut sim = Sim::new(cfg, BareLink::new(), spinner);
    sim.run_until(secs(1));
}

/// A BareLink with a 10 ms timer.
struct Ticker {
    inner: BareLink,
    next: Instant,
}

impl Endpoint for Ticker {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.inner.handle_packet(now, packet)
    }
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        self.inner.handle_datagram(now, path, datagram)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.inner.poll_transmit(now, buf)
    }
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.inner.poll_packet(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
    fn handle_timeout(&mut self, now: Instant) {
        while self.next <= now {
            self.next += ms(10);
        }
    }
}

#[test]
fn wakeups_are_counted() {
    let cfg = SimConfig::new(6).path(PathSpec::new(wan(10, 10)));
    let ticker = Ticker {
        inner: BareLink::new(),
        next: cfg.base + ms(5),
    };
    let mut sim = Sim::new(cfg, ticker, BareLink::new());
    let ping = sim.add(Ping::new(Side::Proxy));
    sim.run_until(secs(2));
    let g = sim.endpoint_stats(Side::Gateway);
    assert_eq!(g.timeouts, 200);
    assert_eq!(g.wakeups, 200);
    assert_eq!(g.wakeups_between(secs(1), secs(2)), 100);
    assert_eq!(g.wakeups_per_sec(Duration::ZERO, secs(2)), 100.0);
    // Its timer never coincides with the pings' arrivals (every 20 ms from 10.1 ms on,
    // the ticks at 5 ms + 10 ms * k): each arrival (echoed at once) is a wake-up of its own.
    let ping = sim.flow(ping);
    let arrived = ping.echoed();
    assert_eq!(arrived, 100);
    assert_eq!(g.busy_instants, 200 + arrived);
    assert_eq!(g.datagrams_in, arrived);
    let p = sim.endpoint_stats(Side::Proxy);
    assert_eq!((p.timeouts, p.wakeups), (0, 0));
    assert_eq!(p.packets_in, ping.sent());
    assert_eq!(p.datagrams_in, ping.answers());
}

#[test]
fn datagrams_over_the_mtu_are_dropped_and_counted() {
    let cfg = SimConfig::new(7).path(PathSpec::new(wan(10, 10)).mtu(1000));
    let mut sim = Sim::new(cfg, BareLink::new(), BareLink::new());
    let big = sim.add(UdpStream::cbr(Side::Gateway, 1_000_000, 973));
    let fits = sim.add(UdpStream::cbr(Side::Gateway, 1_000_000, 972).stop_at(ms(900)));
    sim.run_until(secs(1));
    assert_eq!(sim.flow(big).received(), 0);
    assert_eq!(sim.flow(fits).lost(), 0);
    let up = sim.truth(0, Direction::Upstream);
    assert_eq!(up.dropped_mtu, sim.flow(big).sent());
    assert_eq!(up.delivered, sim.flow(fits).sent());
}

#[test]
fn ping_measures_the_round_trip_and_losses() {
    let mut sim = bare(8, wan(2, 10));
    let ping = sim.add(Ping::new(Side::Gateway).stop_at(secs(2)));
    sim.run_until(ms(2100));
    let p = sim.flow(ping);
    assert_eq!((p.sent(), p.answers(), p.lost()), (100, 100, 0));
    // 20 ms of delay and twice 228 bytes at 2 Mbit/s.
    let rtt = ms(20) + Duration::from_micros(2 * 912);
    assert_eq!(p.rtt_percentile(0.0), Some(rtt));
    assert_eq!(p.rtt_percentile(1.0), Some(rtt));

    let lossy = LinkParams {
        loss: 0.1,
        ..wan(2, 10)
    };
    let mut sim = bare(8, lossy);
    let ping = sim.add(Ping::new(Side::Gateway).interval(ms(5)).stop_at(secs(10)));
    sim.run_until(ms(10100));
    let p = sim.flow(ping);
    // Lost either way: 1 - 0.9² = 19 %.
    let lost = p.lost() as f64 / p.sent() as f64;
    assert!((0.17..0.21).contains(&lost), "{lost}");
    assert_eq!(p.lost_between(Duration::ZERO, secs(10)), p.lost());
    assert_eq!(p.echoed(), sim.truth(0, Direction::Upstream).delivered);
}

#[test]
fn two_paths_reorder_and_the_truth_tells_them_apart() {
    let cfg = SimConfig::new(9)
        .path(PathSpec::new(wan(10, 10)))
        .path(PathSpec::new(wan(10, 30)));
    let mut sim = Sim::new(cfg, BareMultiLink::new(2), BareMultiLink::new(2));
    let cbr = sim.add(UdpStream::cbr(Side::Gateway, 2_000_000, 500).stop_at(secs(2)));
    sim.run_until(ms(2100));
    let c = sim.flow(cbr);
    assert_eq!(c.lost(), 0);
    assert!(c.reordered() > 400, "{}", c.reordered());
    let serialise = Duration::from_nanos(528 * 8 * 100);
    for (path, delay) in [(0, ms(10)), (1, ms(30))] {
        let t = sim.truth(path, Direction::Upstream);
        assert_eq!(t.delivered, c.sent() / 2);
        assert!(t.deliveries.iter().all(|d| d.delay() == delay + serialise));
        let rate = t.delivery_rate_bps(ms(100), ms(1100));
        assert!((rate - 1e6).abs() < 1e4, "path {path}: {rate}");
    }
}

#[test]
fn scheduled_changes_apply_at_their_time() {
    let mut sim = bare(10, wan(10, 10));
    let bulk = sim.add(UdpStream::bulk(Side::Proxy, 20_000_000, 1228));
    sim.at(secs(1), 0, &[Direction::Downstream], |p| {
        p.rate_bps = Some(5_000_000)
    });
    sim.set_params_at(secs(2), 0, &Direction::BOTH, wan(2, 50));
    sim.set_mtu_at(secs(3), 0, &[Direction::Downstream], 1200);
    sim.run_until(secs(4));
    let b = sim.flow(bulk).delivered();
    let rate = |a, z| b.rate_bps(ms(a), ms(z)) / inner_rate(1e6, 1228);
    // The 100 ms queue drains at the new rate.
    assert!((rate(200, 1000) - 10.0).abs() < 0.1);
    assert!((rate(1200, 2000) - 5.0).abs() < 0.1);
    assert!((rate(2300, 3000) - 2.0).abs() < 0.1);
    assert_eq!(b.bytes_between(ms(3200), secs(4)), 0);
    assert_eq!(sim.params(0, Direction::Upstream).delay, ms(50));
    assert_eq!(sim.mtu(0, Direction::Downstream), 1200);
    assert_eq!(sim.mtu(0, Direction::Upstream), 1500);
}

#[test]
fn packets_no_flow_takes_are_strays() {
    let mut sim = bare(11, wan(10, 10));
    sim.inject_packet(Side::Gateway, &[0x45, 0, 0, 3]);
    let mut ok = Vec::new();
    linkpool_sim::packet::build_udp(
        &mut ok,
        "10.77.0.2:1".parse().unwrap(),
        "198.51.100.7:2".parse().unwrap(),
        0,
        b"x",
    );
    sim.inject_packet(Side::Gateway, &ok);
    sim.inject_packet(Side::Proxy, &ok); // from the LAN address, out of the gateway
    sim.run_until(secs(1));
    let at_proxy = sim.endpoint_stats(Side::Proxy).strays;
    assert_eq!((at_proxy.malformed, at_proxy.unknown_flow), (1, 1));
    assert_eq!(sim.endpoint_stats(Side::Gateway).strays.wrong_address, 1);
}

#[test]
fn simulated_seconds_are_cheap() {
    let start = Instant::now();
    let mut sim = bare(12, wan(20, 20));
    sim.add(TcpFlow::download());
    sim.add(Ping::new(Side::Gateway));
    sim.run_until(secs(5));
    let wall = start.elapsed();
    eprintln!("5 simulated seconds of a 20 Mbit/s TCP download and a ping: {wall:?}");
    assert!(wall < secs(2), "{wall:?}");
}

/// Sends every packet twice, over paths in turn (duplicates and reordering).
struct Duplicator(BareMultiLink);

impl Endpoint for Duplicator {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        self.0.handle_packet(now, packet);
        self.0.handle_packet(now, packet);
    }
    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        self.0.handle_datagram(now, path, datagram)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.0.poll_transmit(now, buf)
    }
    fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.0.poll_packet(now, buf)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

#[test]
fn tcp_survives_reordering_duplicates_loss_and_outages() {
    for seed in 0..6 {
        for sack in [true, false] {
            let lossy = |mbit, delay, jitter| LinkParams {
                jitter: ms(jitter),
                loss: 0.03,
                queue: ms(30),
                ..wan(mbit, delay)
            };
            let cfg = SimConfig::new(seed)
                .path(PathSpec::new(lossy(8, 10, 5)))
                .path(PathSpec::new(lossy(3, 35, 20)))
                .path(PathSpec::new(lossy(20, 5, 0)));
            let mut sim = Sim::new(
                cfg,
                Duplicator(BareMultiLink::new(3)),
                BareMultiLink::new(3),
            );
            let size = 400_000;
            let tcp_cfg = TcpConfig {
                sack,
                ..TcpConfig::default()
            };
            let down = sim.add(TcpFlow::with_config(Side::Proxy, tcp_cfg).size(size));
            let up = sim.add(TcpFlow::with_config(Side::Gateway, tcp_cfg).size(size));
            sim.outage(2, ms(300), ms(700));
            sim.run_until(secs(30));
            for (name, id) in [("download", down), ("upload", up)] {
                let t = sim.flow(id);
                assert_eq!(
                    (t.bytes_delivered(), t.stats().misrouted),
                    (size, 0),
                    "seed {seed}, sack {sack}, {name}: {:?}",
                    t.stats()
                );
                assert!(t.stats().completed_at.is_some());
            }
            // The upload's data went twice (to the gateway's duplicator), its acks once.
            assert!(sim.flow(up).stats().dup_segments > 0);
        }
    }
}

/// The TCP model's congestion avoidance is Linux's CUBIC: a loss takes the window to 0.7 of
/// what it was (Reno: half), and before any loss (slow start ended on a rising delay) the
/// window grows by 5 % a round trip at least, so a long fat path is filled in seconds.
#[test]
fn tcp_backs_off_and_grows_as_linux_cubic() {
    let run = |cubic| {
        let cfg = TcpConfig {
            cubic,
            ..TcpConfig::default()
        };
        let mut sim = bare(21, wan(100, 40));
        let tcp = sim.add(TcpFlow::with_config(Side::Proxy, cfg));
        sim.run_until(secs(20));
        let t = sim.flow(tcp);
        (t.events().to_vec(), t.goodput_bps(secs(2), secs(20)))
    };
    let (cubic, cubic_rate) = run(true);
    let (reno, reno_rate) = run(false);
    eprintln!(
        "100 Mbit/s, 80 ms: CUBIC {:.1} Mbit/s, Reno {:.1}; CUBIC's events {cubic:?}",
        cubic_rate / 1e6,
        reno_rate / 1e6
    );
    let backoffs = |events: &[(Duration, TcpEvent)]| -> Vec<f64> {
        events
            .iter()
            .filter_map(|e| match e.1 {
                TcpEvent::FastRetransmit { cwnd, ssthresh } => Some(ssthresh as f64 / cwnd as f64),
                _ => None,
            })
            .collect()
    };
    let cubic_backoffs = backoffs(&cubic);
    assert!(!cubic_backoffs.is_empty(), "{cubic:?}");
    assert!(
        cubic_backoffs.iter().all(|b| (0.6..=0.71).contains(b)),
        "{cubic_backoffs:?}"
    );
    assert!(backoffs(&reno).iter().all(|&b| b <= 0.51), "{reno:?}");
    // Slow start ended on delay at a third of the path; the window then more than doubled
    // within 3 s (Reno's segment a round trip would add 5 %).
    let exit = cubic.iter().find_map(|e| match e.1 {
        TcpEvent::SlowStartExit { cwnd } => Some((e.0, cwnd)),
        _ => None,
    });
    let first_loss = cubic.iter().find_map(|e| match e.1 {
        TcpEvent::FastRetransmit { cwnd, .. } => Some((e.0, cwnd)),
        _ => None,
    });
    let ((t0, w0), (t1, w1)) = exit.zip(first_loss).expect("an exit, then a loss");
    assert!(
        t1 - t0 < secs(3) && w1 > 2 * w0,
        "{w0} at {t0:?}, {w1} at {t1:?}"
    );
    assert!(cubic_rate > 1.05 * reno_rate, "{cubic_rate} vs {reno_rate}");
}
