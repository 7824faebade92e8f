//! Metered uplinks on the real kernel, the real daemons and real curl.
//!
//! * **Only the surplus is lent.** r2's line is metered; its forecaster's state file is
//!   *seeded* before the gateway starts (a week of hours learned at no use, so the
//!   forecaster is confident and forecasts no further use): a 40 MB allowance with a
//!   10 MB threshold leaves a known small surplus of about 29 MB (less 2 % of the
//!   allowance kept back for what the carrier counts unseen). r1, whose own line is slow,
//!   downloads through r2 for longer than the surplus lasts: what r2 lent (its status,
//!   and on the wire, what its mesh link carried to and from r1) never exceeds the
//!   surplus it started with, and then it offers nothing.
//! * **Own traffic moves off.** r1 of `twowan` has its second line metered with a seeded
//!   state: 60 MB of a 100 MB allowance used, under its 50 MB threshold. During a
//!   download, what the gateway sends (the download's acknowledgements) goes over the
//!   first line only (its status's inner packets per uplink). Downstream is the proxy's
//!   choice, and the proxy is not told (yet): what the second line carried down, and the
//!   per-path acknowledgements that go back up it, are printed from the emulated links,
//!   not asserted. With the first line down, the second carries the traffic again.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mesh::{Download, active_path_via, status, wait_until};
use linkpool_protocol::forecast::{Forecaster, MeteredLine};
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Direction, Topology};
use serde_json::Value;

const LENDER: &str = r#"
name = "metered"

[[router]]
isp = { rate = "2mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "20mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

const MB: u64 = 1_000_000;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// IP bytes an emulated link delivered both ways (Ethernet headers taken off).
fn ip_bytes(coop: &Coop, link: &str) -> u64 {
    Direction::BOTH
        .iter()
        .map(|&d| ip_bytes_to(coop, link, d))
        .sum()
}

/// IP bytes an emulated link delivered one way.
fn ip_bytes_to(coop: &Coop, link: &str, d: Direction) -> u64 {
    let s = coop.link(link).unwrap().stats(d);
    s.bytes_out - 14 * s.frames_out
}

/// Appends a metered line to the last `[[uplink]]` of gateway `n`'s configuration.
fn meter_last_uplink(pool: &Pool, n: usize, options: &str) {
    let conf = pool.gateway_config(n);
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}{options}\n")).unwrap();
}

/// The forecaster state file of gateway `n`'s uplink `uplink` (beside its state file).
fn forecast_file(pool: &Pool, n: usize, uplink: &str) -> std::path::PathBuf {
    let conf = pool.gateway_config(n);
    conf.with_file_name(format!("{}.{uplink}.forecast", Pool::member_name(n)))
}

fn metered<'a>(s: &'a Value, uplink: &str) -> &'a Value {
    s["uplinks"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == uplink))
        .map_or(&Value::Null, |u| &u["metered"])
}

#[test]
fn a_metered_line_is_never_lent_beyond_its_forecast_surplus() {
    let topology = Topology::parse(LENDER, "metered.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::configure_lending(&coop, &[2]).unwrap();
    meter_last_uplink(
        &pool,
        2,
        "metered = true\nallowance_mb = 40\nthreshold_mb = 10\nbilling_day = 1",
    );
    // Seeded: eight days of hours learned at no use.
    let line = MeteredLine::new(40 * MB, 1, 10 * MB).unwrap();
    let now = unix_now();
    let mut f = Forecaster::new(line, now - 8 * 86_400, 0);
    let mut t = now - 8 * 86_400;
    while t < now {
        t += 600;
        f.record(t, 0, 0);
    }
    assert!(f.confident());
    std::fs::write(forecast_file(&pool, 2, "wan"), f.to_bytes()).unwrap();
    let pool = pool.start_all(&coop).unwrap_or_else(|e| panic!("{e}"));

    wait_until(
        &coop,
        &pool,
        Duration::from_secs(20),
        "r1 to use r2's metered line",
        || active_path_via(&coop, &status(&coop, &pool, 1), 2),
    );
    let start = status(&coop, &pool, 2);
    let m = metered(&start, "wan");
    assert_eq!(m["confident"], true, "{m}");
    let surplus = m["forecast_surplus"].as_u64().unwrap();
    let lent_before = m["lent"].as_u64().unwrap();
    assert!(
        (25 * MB..=30 * MB).contains(&(surplus + lent_before)),
        "the seeded surplus: {m}"
    );
    let (mesh0, wan0) = (ip_bytes(&coop, "r2-mesh"), ip_bytes(&coop, "r2-wan"));
    let began = Instant::now();

    // r1 wants more than the surplus: 64 MB, mostly through r2 (its own line is 2 Mbit/s).
    let download = Download::start(&coop, 1, "metered.bin", 64 * MB);
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(60),
        "r2 to have lent its surplus",
        || metered(&status(&coop, &pool, 2), "wan")["offered_bps"] == 0,
    );
    // The tail: what the proxy still sends down before it learns r1 left the path.
    std::thread::sleep(Duration::from_secs(5));
    let end = status(&coop, &pool, 2);
    let (mesh, wan) = (
        ip_bytes(&coop, "r2-mesh") - mesh0,
        ip_bytes(&coop, "r2-wan") - wan0,
    );
    drop(download);
    let m = metered(&end, "wan");
    let lent = m["lent"].as_u64().unwrap() - lent_before;
    let refused = &end["mesh"]["lending"]["refused"];
    eprintln!(
        "r2's metered line: surplus {:.2} MB at the start; in {:.0} s lent {:.2} MB (status), its \
         mesh link carried {:.2} MB (IP bytes, both ways, hellos included), its WAN {:.2} MB; \
         refused {} over the surplus; now {m}",
        surplus as f64 / 1e6,
        began.elapsed().as_secs_f64(),
        lent as f64 / 1e6,
        mesh as f64 / 1e6,
        wan as f64 / 1e6,
        refused["over_surplus"]
    );
    assert!(lent <= surplus, "lent {lent} beyond the surplus {surplus}");
    // On the wire: what crossed r2's mesh link (r1's datagrams without r2's envelope, and
    // the hellos) is at most what was lent.
    assert!(
        mesh <= surplus,
        "r2's mesh link carried {mesh}, surplus {surplus}"
    );
    // And it did lend: the surplus, not something else, stopped it.
    assert!(lent >= surplus * 8 / 10, "lent only {lent} of {surplus}");
    assert_eq!(m["offered_bps"], 0, "{m}");
    assert!(m["forecast_surplus"].as_u64().unwrap() < 2 * MB, "{m}");
}

#[test]
fn own_traffic_moves_off_a_metered_line_below_its_threshold() {
    let coop = Coop::build(&common::shipped_topology("twowan"))
        .unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let mut pool = Pool::configure(&coop).unwrap();
    meter_last_uplink(
        &pool,
        1,
        "metered = true\nallowance_mb = 100\nthreshold_mb = 50\nbilling_day = 1",
    );
    // Seeded: 60 MB of this period's 100 used (40 left, under the 50 MB threshold).
    let line = MeteredLine::new(100 * MB, 1, 50 * MB).unwrap();
    let now = unix_now();
    let mut f = Forecaster::new(line, now, 0);
    f.resume(now, 0, 60 * MB);
    std::fs::write(forecast_file(&pool, 1, "wan2"), f.to_bytes()).unwrap();
    pool.start_proxy(&coop).unwrap();
    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("{e}\n{}", pool.logs()));
    let wan2_held = |s: &Value| {
        s["uplinks"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == "wan2"))
            .is_some_and(|u| u["standby"] == true && u["metered"]["moved_off"] == true)
    };
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(20),
        "wan2 to be moved off",
        || wan2_held(&status(&coop, &pool, 1)),
    );

    let before = status(&coop, &pool, 1);
    let up = Direction::Upstream;
    let wan0 = ip_bytes_to(&coop, "r1-wan", up);
    let wan20 = ip_bytes_to(&coop, "r1-wan2", up);
    let down20 = ip_bytes_to(&coop, "r1-wan2", Direction::Downstream);
    let took =
        Download::start(&coop, 1, "own.bin", 16 * MB).finish(&coop, &pool, Duration::from_secs(60));
    let wan = ip_bytes_to(&coop, "r1-wan", up) - wan0;
    let wan2 = ip_bytes_to(&coop, "r1-wan2", up) - wan20;
    let wan2_down = ip_bytes_to(&coop, "r1-wan2", Direction::Downstream) - down20;
    eprintln!(
        "16 MB at {:.1} Mbit/s with wan2 moved off: upstream wan {:.3} MB, wan2 {:.3} MB; \
         downstream wan2 {:.3} MB",
        took.mbit_s(),
        wan as f64 / 1e6,
        wan2 as f64 / 1e6,
        wan2_down as f64 / 1e6,
    );
    // The gateway told the proxy, which holds its end of wan2 too: the download came
    // down wan, and wan2 carried only probes each way (the proxy answers them).
    assert!(
        wan2_down < MB / 10,
        "the proxy sent {wan2_down} bytes down the moved-off line"
    );
    assert!(wan2 < MB / 20, "wan2 carried {wan2} bytes up");
    // The gateway's own data (the download's TCP acknowledgements, inner packets) went
    // on wan only.
    let sent = |s: &Value, uplink: &str| {
        s["uplinks"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == uplink))
            .map_or(0, |u| u["tx_packets"].as_u64().unwrap_or(0))
    };
    let after = status(&coop, &pool, 1);
    let (data, data2) = (
        sent(&after, "wan") - sent(&before, "wan"),
        sent(&after, "wan2") - sent(&before, "wan2"),
    );
    eprintln!("inner packets sent: wan {data}, wan2 {data2}");
    assert!(data > 1000, "wan sent {data} packets");
    assert!(data2 * 100 <= data, "wan2 sent {data2} packets, wan {data}");
    assert!(wan >= MB / 5, "wan carried {wan} up");
    assert!(wan2_held(&status(&coop, &pool, 1)));

    // Nothing else usable: the metered line carries the traffic again.
    coop.link("r1-wan").unwrap().down();
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(20),
        "wan2 to carry again",
        || !wan2_held(&status(&coop, &pool, 1)),
    );
    let wan20 = ip_bytes(&coop, "r1-wan2");
    let took = Download::start(&coop, 1, "fallback.bin", 4 * MB).finish(
        &coop,
        &pool,
        Duration::from_secs(60),
    );
    let wan2 = ip_bytes(&coop, "r1-wan2") - wan20;
    eprintln!(
        "with wan down: 4 MB at {:.1} Mbit/s over wan2 ({:.2} MB on it)",
        took.mbit_s(),
        wan2 as f64 / 1e6
    );
    assert!(wan2 >= 4 * MB, "wan2 carried {wan2}");
    let m = metered(&status(&coop, &pool, 1), "wan2").clone();
    assert_eq!(m["moved_off"], true, "still below its threshold: {m}");
    coop.link("r1-wan").unwrap().up();
}
