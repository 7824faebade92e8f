//! The owner's lending policy on the real kernel: a daily allowance is never exceeded on
//! the wire, not even by a datagram, and outside the owner's hours nothing is relayed.
//! r2 lends its fast line to r1 (whose own line is slow); nftables on r2 count what it
//! relayed: the envelopes it sent up to the proxy on its WAN, and the datagrams it passed
//! down to r1 on the mesh, which is what the allowance counts (the UDP payloads, down
//! with the envelope they came in).

mod common;

use std::time::Duration;

use common::mesh::{Download, active_path_via, status, wait_until};
use linkpool_protocol::wire::RELAY_OVERHEAD;
use linkpool_testbed::pool::{PROXY_PORT, Pool};
use linkpool_testbed::{Coop, Router, Topology};
use serde_json::Value;

const TWO: &str = r#"
name = "lending"

[[router]]
isp = { rate = "4mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "20mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

const TABLE: &str = "lpt_lending";
const MB: u64 = 1_000_000;
/// IPv4 and UDP headers, which nftables counts and the allowance does not.
const HEADERS: u64 = 28;

/// The co-op with `policy` (lines of `[sharing]`) in r2's configuration, once r1 has an
/// active path through r2 (unless `meets` is false: then once r1 is connected).
fn lend_with(policy: &str, meets: bool) -> (Coop, Pool) {
    let topology = Topology::parse(TWO, "lending.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::configure_lending(&coop, &[2]).unwrap_or_else(|e| panic!("{e}"));
    let conf = pool.gateway_config(2);
    let text = std::fs::read_to_string(&conf).unwrap();
    let with = text.replace(
        "[sharing]\nenabled = true\n",
        &format!("[sharing]\nenabled = true\n{policy}\n"),
    );
    assert_ne!(text, with, "r2's configuration has no [sharing] to add to");
    std::fs::write(&conf, with).unwrap();
    let pool = pool.start_all(&coop).unwrap_or_else(|e| panic!("{e}"));
    if meets {
        wait_until(
            &coop,
            &pool,
            Duration::from_secs(20),
            "r1 to use r2's line",
            || active_path_via(&coop, &status(&coop, &pool, 1), 2),
        );
    }
    (coop, pool)
}

/// Counters on r2 of what it relayed: envelopes up to the proxy on its WAN (message type
/// 6 at byte 1 of the UDP payload), transport datagrams (type 4) down to r1 on the mesh.
fn count_relayed(coop: &Coop, r2: &Router) {
    let wan = r2.wans()[0].device().to_string();
    let mesh = r2.mesh_device();
    let r1 = coop.router(1).mesh().v4;
    let ruleset = format!(
        "table inet {TABLE} {{
            counter up {{ }}
            counter down {{ }}
            chain post {{
                type filter hook postrouting priority 300; policy accept;
                oifname \"{wan}\" udp dport {PROXY_PORT} @th,72,8 6 counter name up
                oifname \"{mesh}\" ip daddr {r1} @th,72,8 4 counter name down
            }}
        }}"
    );
    common::nft_install(coop, r2, "lending", &ruleset);
}

/// What r2 relayed so far as its allowance counts it, from the counters.
fn relayed(r2: &Router) -> u64 {
    let (up_packets, up_bytes) = common::nft_counter(r2, TABLE, "up");
    let (down_packets, down_bytes) = common::nft_counter(r2, TABLE, "down");
    (up_bytes - HEADERS * up_packets)
        + (down_bytes - HEADERS * down_packets)
        + RELAY_OVERHEAD as u64 * down_packets
}

fn lending(coop: &Coop, pool: &Pool) -> Value {
    status(coop, pool, 2)["mesh"]["lending"].clone()
}

/// r1 downloads 12 MB while r2 lends under `policy`, an allowance of 3 MB: what r2
/// relayed on the wire stays within what was left of it, to the datagram, and uses it up;
/// its meter (`lent`, the status field) agrees, and it then says why it lends no more.
fn an_allowance_holds_on_the_wire(policy: &str, lent: &str, why_not: &str) {
    let (coop, pool) = lend_with(policy, true);
    let r2 = coop.router(2);
    // The meter first, then the counters: what is lent between is in the meter only, so
    // the counters can only come out under what is left.
    let before = lending(&coop, &pool);
    let lent_before = before[lent].as_u64().unwrap();
    count_relayed(&coop, r2);
    let left = 3 * MB - lent_before;
    let took = Download::start(&coop, 1, "allowance.bin", 12 * MB).finish(
        &coop,
        &pool,
        Duration::from_secs(90),
    );
    let after = lending(&coop, &pool);
    let on_wire = relayed(r2);
    let lent_after = after[lent].as_u64().unwrap();
    eprintln!(
        "{policy}: 12 MB at {:.1} Mbit/s; r2's allowance of 3 MB, {lent_before} B used before: \
         relayed {on_wire} B on the wire ({} B left of the allowance), its meter says \
         {lent_after} B; refused over the allowance: {}; lending now: {}",
        took.mbit_s(),
        left as i64 - on_wire as i64,
        after["refused"][why_not],
        after["why_not"]
    );
    assert!(
        on_wire <= left,
        "r2 relayed {on_wire} B with {left} B left of its allowance"
    );
    assert!(
        lent_after <= 3 * MB,
        "r2's meter says {lent_after} B lent of 3 MB"
    );
    // It lent what it had: less than two of the largest datagrams are left.
    assert!(
        left - on_wire < 2 * 2048,
        "r2 relayed {on_wire} B of the {left} B it had left"
    );
    assert_eq!(after["why_not"], why_not, "{after}");
    assert_eq!(after["now"], false);
}

#[test]
fn a_daily_allowance_holds_on_the_wire_to_the_datagram() {
    an_allowance_holds_on_the_wire("daily_mb = 3", "lent_today_bytes", "over_daily");
}

#[test]
fn a_monthly_allowance_holds_on_the_wire_to_the_datagram() {
    an_allowance_holds_on_the_wire(
        "monthly_mb = 3\nmonthly_reset_day = 1",
        "lent_month_bytes",
        "over_monthly",
    );
}

#[test]
fn outside_its_hours_a_router_lends_nothing_and_inside_them_it_does() {
    // Hours that do not hold now, in the routers' time (UTC: no TZ in the namespaces).
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24;
    let (from, to) = ((hour + 2) % 24, (hour + 3) % 24);
    let (coop, pool) = lend_with(&format!("hours = \"{from:02}:00-{to:02}:00\""), false);
    pool.wait_connected(&coop, Duration::from_secs(20)).unwrap();
    let r2 = coop.router(2);
    count_relayed(&coop, r2);
    let off = lending(&coop, &pool);
    assert_eq!(off["in_schedule"], false, "{off}");
    assert_eq!(off["now"], false, "{off}");
    let took = Download::start(&coop, 1, "off-hours.bin", 2 * MB).finish(
        &coop,
        &pool,
        Duration::from_secs(60),
    );
    let on_wire = relayed(r2);
    eprintln!(
        "outside its hours ({from:02}:00-{to:02}:00 UTC): 2 MB at {:.1} Mbit/s over r1's own \
         line, r2 relayed {on_wire} B",
        took.mbit_s()
    );
    assert_eq!(on_wire, 0, "r2 relayed outside its hours");
    assert!(!active_path_via(&coop, &status(&coop, &pool, 1), 2));
    // The owner widens the hours to now (a reload): r1's path through r2 comes up and
    // carries.
    let conf = pool.gateway_config(2);
    let text = std::fs::read_to_string(&conf).unwrap();
    let all_day = text.replace(&format!("\"{from:02}:00-{to:02}:00\""), "\"00:00-24:00\"");
    std::fs::write(&conf, all_day).unwrap();
    pool.gateways[1].signal(libc::SIGHUP).unwrap();
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(20),
        "r1 to use r2's line",
        || active_path_via(&coop, &status(&coop, &pool, 1), 2),
    );
    Download::start(&coop, 1, "in-hours.bin", 4 * MB).finish(&coop, &pool, Duration::from_secs(60));
    let relayed_in = relayed(r2);
    eprintln!("inside its hours: r2 relayed {relayed_in} B of r1's 4 MB download");
    assert!(
        relayed_in > MB,
        "r2 relayed only {relayed_in} B in its hours"
    );
}
