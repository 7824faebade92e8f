//! The link emulator keeps its promises: delay, jitter, loss, outages and rate, measured
//! with real tools (ping, iperf3) through real namespaces.

mod common;

use std::time::{Duration, Instant};

use common::{coop1, median, ping, stddev, warm_up};
use linkpool_testbed::bench::iperf3_received_bps;
use linkpool_testbed::{Direction, LinkParams};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn delay_gives_the_promised_round_trip_time() {
    let coop = coop1();
    let r1 = coop.router(1);
    let core = r1.wan_gateway().0.to_string();
    warm_up(r1, &core);
    let (base, _) = ping(r1, &core, 50, "0.01");
    let link = coop.link("r1-wan").unwrap();
    link.set(LinkParams {
        delay: ms(20),
        ..Default::default()
    });
    let (rtts, out) = ping(r1, &core, 200, "0.01");
    assert!(
        rtts.len() >= 198,
        "lost pings without loss configured:\n{out}"
    );
    let m = median(&rtts) - median(&base);
    assert!(
        (m - 40.0).abs() < 2.0,
        "median RTT {m:.2} ms, want 40 ± 2 ms"
    );
    let p10 = linkpool_testbed::bench::quantile(&rtts, 0.1);
    assert!(p10 > 39.5, "10th percentile {p10:.2} ms: frames left early");

    // IPv6 crosses the same emulated wire.
    let (rtts6, out6) = ping(r1, &r1.wan_gateway().1.to_string(), 50, "0.01");
    assert!(rtts6.len() >= 49, "{out6}");
    assert!(
        (median(&rtts6) - 40.0).abs() < 2.0,
        "IPv6 median {:.2} ms",
        median(&rtts6)
    );

    // One direction only.
    link.set_direction(Direction::Downstream, LinkParams::default());
    let (rtts, _) = ping(r1, &core, 50, "0.01");
    assert!(
        (median(&rtts) - 20.0).abs() < 2.0,
        "one-way 20 ms: median {:.2}",
        median(&rtts)
    );
}

#[test]
fn jitter_spreads_delays_within_bounds() {
    let coop = coop1();
    let r1 = coop.router(1);
    let core = r1.wan_gateway().0.to_string();
    warm_up(r1, &core);
    coop.link("r1-wan").unwrap().set(LinkParams {
        delay: ms(20),
        jitter: ms(5),
        ..Default::default()
    });
    let (rtts, _) = ping(r1, &core, 300, "0.02");
    assert!(rtts.len() >= 295);
    // RTT = 40 ms + two independent uniform offsets in ±5 ms: spread 5·√(2/3) ≈ 4.1 ms.
    let sd = stddev(&rtts);
    assert!(
        (3.2..5.2).contains(&sd),
        "RTT stddev {sd:.2} ms, want about 4.1"
    );
    assert!(
        (median(&rtts) - 40.0).abs() < 2.0,
        "median {:.2}",
        median(&rtts)
    );
    let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        min > 29.5,
        "RTT {min:.2} ms is below delay - jitter on both ways"
    );
}

#[test]
fn loss_rate_is_within_statistical_tolerance() {
    let coop = coop1();
    let r1 = coop.router(1);
    let core = r1.wan_gateway().0.to_string();
    warm_up(r1, &core);
    let link = coop.link("r1-wan").unwrap();
    link.set_direction(
        Direction::Upstream,
        LinkParams {
            loss: 0.10,
            ..Default::default()
        },
    );
    let before = link.stats(Direction::Upstream);
    let (rtts, out) = ping(r1, &core, 2000, "0.002");
    let after = link.stats(Direction::Upstream);
    let lost = 1.0 - rtts.len() as f64 / 2000.0;
    // Binomial(2000, 0.1): sigma 0.67 %, so ±3 % is more than 4 sigma.
    assert!(
        (0.07..=0.13).contains(&lost),
        "loss {:.1} %, want 10 ± 3 %\n{}",
        lost * 100.0,
        out.lines().last().unwrap_or("")
    );
    let counted = after.dropped_loss - before.dropped_loss;
    // The counter also sees neighbour discovery, and ping may miss a late reply: close, not equal.
    let lost_pings = 2000 - rtts.len() as u64;
    assert!(
        counted.abs_diff(lost_pings) <= 5,
        "emulator counted {counted} losses, ping lost {lost_pings}"
    );
}

#[test]
fn outage_drops_everything_and_recovery_works() {
    let coop = coop1();
    let r1 = coop.router(1);
    let core = r1.wan_gateway().0.to_string();
    warm_up(r1, &core);
    let link = coop.link("r1-wan").unwrap();

    // Frames already on the wire are lost too.
    link.set(LinkParams {
        delay: ms(150),
        ..Default::default()
    });
    let mut inflight = r1
        .spawn(&["ping", "-n", "-c", "1", "-W", "1", &core])
        .unwrap();
    std::thread::sleep(ms(60));
    link.down();
    let status = inflight
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("ping ends");
    assert!(
        !status.success(),
        "a ping in flight when the link went down got its reply"
    );

    let (rtts, _) = ping(r1, &core, 50, "0.01");
    assert!(rtts.is_empty(), "{} replies during an outage", rtts.len());
    let s = link.stats(Direction::Upstream);
    assert!(
        s.dropped_outage >= 50,
        "outage drops counted: {}",
        s.dropped_outage
    );
    assert!(!link.params(Direction::Downstream).up);

    link.up();
    link.set(LinkParams {
        delay: ms(5),
        ..Default::default()
    });
    let t = Instant::now();
    warm_up(r1, &core);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "recovery took {:?}",
        t.elapsed()
    );
    let (rtts, _) = ping(r1, &core, 20, "0.01");
    assert!(
        rtts.len() >= 19 && (median(&rtts) - 10.0).abs() < 2.0,
        "after recovery: {rtts:?}"
    );
}

#[test]
fn rate_limit_is_measured_by_iperf3_within_15_percent() {
    let coop = coop1();
    let r1 = coop.router(1);
    let inet = coop.internet();
    warm_up(r1, &inet.addr_v4().to_string());
    let link = coop.link("r1-wan").unwrap();
    link.set(LinkParams {
        rate_bps: Some(20_000_000),
        delay: ms(5),
        ..Default::default()
    });
    let port = inet.iperf3_ports()[0].to_string();
    for (label, reverse) in [("upload", false), ("download", true)] {
        let mut argv = vec![
            "iperf3",
            "--client",
            "198.51.100.80",
            "--port",
            &port,
            "--time",
            "3",
            "--omit",
            "1",
            "--json",
        ];
        if reverse {
            argv.push("--reverse");
        }
        let out = r1
            .exec_ok(&argv)
            .unwrap_or_else(|e| panic!("iperf3 {label}: {e}"));
        let bps = iperf3_received_bps(&out).expect("iperf3 JSON has end.sum_received");
        let mbit = bps / 1e6;
        assert!(
            (17.0..=23.0).contains(&mbit),
            "{label}: {mbit:.2} Mbit/s through a 20 Mbit/s link"
        );
    }
    let s = link.stats(Direction::Upstream);
    assert!(
        s.bytes_out > 5_000_000,
        "upload went through the emulator: {s:?}"
    );
}
