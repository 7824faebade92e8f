//! Neighbours on an IPv6 link-local-only mesh, on the real daemons, real TUN and real curl:
//! two members sharing their 10 Mbit/s lines, whose routers' `mesh0` have no IPv4 address
//! and no global IPv6 one, only their `fe80::` addresses (as on many babel, batman-adv or
//! OLSR meshes). The gateways meet by hellos to the link-local group `ff02::7118`, and a
//! download from r1's LAN client goes over r2's line too, through r2's relay reached at its
//! link-local address.

mod common;

use std::time::Duration;

use common::mesh::{Download, down_bytes, mesh_list, status, wait_until};
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Topology};

const TWO_MEMBERS: &str = r#"
name = "mesh6"

[[router]]
isp = { rate = "10mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "10mbit", delay = "15ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

/// Takes every IPv4 and global IPv6 address off each router's `mesh0`, leaving its
/// link-local one (the testbed turns DAD off, so it is usable at once), and checks that
/// this is all the device has.
fn make_the_mesh_link_local_only(coop: &Coop) {
    for r in coop.routers() {
        let dev = r.mesh_device();
        r.exec_ok(&["ip", "addr", "flush", "dev", dev, "scope", "global"])
            .unwrap();
        let v4 = r
            .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", dev])
            .unwrap();
        assert!(v4.trim().is_empty(), "IPv4 left on {dev}: {v4}");
        let v6 = r
            .exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", dev])
            .unwrap();
        assert!(
            !v6.trim().is_empty() && v6.lines().all(|l| l.contains(" fe80::")),
            "{dev} of r{} should have its link-local address only: {v6}",
            r.index()
        );
    }
}

#[test]
fn neighbours_meet_and_relay_over_ipv6_link_local() {
    let topology = Topology::parse(TWO_MEMBERS, "mesh_ipv6.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    make_the_mesh_link_local_only(&coop);
    let pool = Pool::start_sharing(&coop).unwrap_or_else(|e| panic!("{e}"));

    // r1 finds r2 usable on the mesh, at a link-local address, and has a path through it.
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(15),
        "r1 to meet r2 over IPv6 link-local",
        || {
            let s = status(&coop, &pool, 1);
            let usable = mesh_list(&s, "neighbours")
                .iter()
                .any(|n| n["usable"] == true);
            usable && mesh_list(&s, "paths").len() == 1
        },
    );
    let met = status(&coop, &pool, 1);
    let mesh = &met["mesh"];
    let ours = mesh["devices"][0]["address"].as_str().unwrap_or_default();
    let theirs = mesh["neighbours"][0]["address"]
        .as_str()
        .unwrap_or_default();
    let relay = mesh["paths"][0]["relay"].as_str().unwrap_or_default();
    eprintln!("r1 on the mesh at {ours}; r2 heard at {theirs}, its relay at {relay}");
    for (what, a) in [("ours", ours), ("r2's", theirs), ("r2's relay", relay)] {
        assert!(
            a.starts_with("[fe80::"),
            "{what} address is not link-local: {a}"
        );
        assert!(
            a.ends_with("]:7118"),
            "{what} address is not on the relay port: {a}"
        );
    }
    // Discovery hellos go to the link-local group, which each gateway joined on mesh0.
    for r in coop.routers() {
        let groups = r
            .exec_ok(&["ip", "-6", "maddr", "show", "dev", r.mesh_device()])
            .unwrap();
        assert!(
            groups.contains("ff02::7118"),
            "r{} did not join ff02::7118 on {}: {groups}",
            r.index(),
            r.mesh_device()
        );
    }
    // r2 relays for r1, known by its link-local address.
    let r2 = status(&coop, &pool, 2);
    assert_eq!(r2["mesh"]["neighbours"][0]["usable"], true, "r2: {r2:#}");

    // A download from r1's client takes r2's line too.
    let links = ["r1-wan", "r2-wan"];
    let before: Vec<u64> = links.iter().map(|l| down_bytes(&coop, l)).collect();
    let done = Download::start(&coop, 1, "mesh6.bin", 8 << 20).finish(
        &coop,
        &pool,
        Duration::from_secs(60),
    );
    let carried: Vec<u64> = links
        .iter()
        .zip(&before)
        .map(|(l, b)| down_bytes(&coop, l) - b)
        .collect();
    let total: u64 = carried.iter().sum();
    let relayed_for = status(&coop, &pool, 2)["mesh"]["relayed_for"].clone();
    eprintln!(
        "8 MiB from r1's client at {:.1} Mbit/s (two 10 Mbit/s lines, IPv6 link-local mesh): \
         r1-wan {:.1} %, r2-wan {:.1} % of {} kB downstream; r2 relayed for {relayed_for}",
        done.mbit_s(),
        carried[0] as f64 * 100.0 / total as f64,
        carried[1] as f64 * 100.0 / total as f64,
        total / 1000
    );
    assert!(
        carried[1] as f64 >= 0.1 * total as f64,
        "r2's line carried {} of {total} bytes\n{:#}\n{r2:#}",
        carried[1],
        status(&coop, &pool, 1)
    );
    let relayed_down = relayed_for[0]["down_bytes"].as_u64().unwrap_or(0);
    let from = relayed_for[0]["address"].as_str().unwrap_or_default();
    assert!(
        relayed_down > 1 << 20 && from.starts_with("[fe80::"),
        "r2 relayed {relayed_down} bytes down for {from}"
    );
}
