//! Routers with several ISP links (`isp = [ {...}, {...} ]`, `topologies/twowan.toml`):
//! each WAN device reaches the proxy on its own, over its own emulated link, and each link
//! can be taken down by itself; the pool gives the gateway one uplink per WAN.

mod common;

use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Direction, Router};

fn build() -> Coop {
    Coop::build(&common::shipped_topology("twowan"))
        .unwrap_or_else(|e| panic!("cannot build the testbed: {e}"))
}

/// Frames that went up each of r1's ISP links so far.
fn upstream_frames(coop: &Coop) -> (u64, u64) {
    let frames = |name: &str| {
        coop.link(name)
            .unwrap()
            .stats(Direction::Upstream)
            .frames_out
    };
    (frames("r1-wan"), frames("r1-wan2"))
}

/// `ping -I FROM` (a device or a source address) from the router: the RTTs (ms) of the
/// replies and the output.
fn ping_from(r: &Router, from: &str, to: &str, count: usize) -> (Vec<f64>, String) {
    let out = r
        .exec(&[
            "ping",
            "-n",
            "-I",
            from,
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            to,
        ])
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (linkpool_testbed::bench::ping_rtts(&text), text)
}

#[test]
fn each_wan_of_a_two_isp_router_reaches_the_proxy_on_its_own() {
    let coop = build();
    let r1 = coop.router(1);
    let devices: Vec<&str> = r1.wans().iter().map(|w| w.device()).collect();
    assert_eq!(devices, ["wan", "wan2"]);
    assert_eq!(r1.wan_links(), ["r1-wan", "r1-wan2"]);
    assert_eq!(r1.wan_device(), "wan", "the first WAN keeps its name");
    let (wan, wan2) = (r1.wan_number(1), r1.wan_number(2));
    assert_ne!(wan.addr_v4(), wan2.addr_v4());
    assert_ne!(wan.addr_v6(), wan2.addr_v6());
    let described = coop.describe();
    assert!(
        described.contains("link r1-wan2") && described.contains(&wan2.addr_v4().to_string()),
        "{described}"
    );

    // twowan.toml: wan 10 ms, wan2 30 ms one way, the proxy's link 5 ms: RTTs 30 and 70 ms.
    let proxy = coop.proxy();
    let sources = [
        ("wan".to_string(), 0, 30.0),
        ("wan2".to_string(), 1, 70.0),
        // Bound to an address rather than a device: the main default route takes wan's,
        // the policy route of wan2's addresses takes them out through wan2.
        (wan.addr_v4().to_string(), 0, 30.0),
        (wan2.addr_v4().to_string(), 1, 70.0),
        (wan.addr_v6().to_string(), 0, 30.0),
        (wan2.addr_v6().to_string(), 1, 70.0),
    ];
    for target in [proxy.addr_v4().to_string(), proxy.addr_v6().to_string()] {
        for (from, link, expected_ms) in &sources {
            let is_address = from.contains('.') || from.contains(':');
            if is_address && from.contains(':') != target.contains(':') {
                continue; // an address of the other family
            }
            let before = upstream_frames(&coop);
            let (rtts, out) = ping_from(r1, from, &target, 10);
            let after = upstream_frames(&coop);
            assert_eq!(rtts.len(), 10, "ping -I {from} {target}:\n{out}");
            let median = common::median(&rtts);
            println!("ping -I {from} {target}: median {median:.1} ms");
            assert!(
                median >= expected_ms - 1.0 && median < expected_ms + 15.0,
                "ping -I {from} {target}: median {median:.1} ms, expected ~{expected_ms} ms:\n{out}"
            );
            let sent = [after.0 - before.0, after.1 - before.1];
            // Every echo request crossed this WAN's link; (next to) nothing the other.
            assert!(
                sent[*link] >= 10 && sent[1 - link] <= 2,
                "ping -I {from} {target}: frames up r1-wan, r1-wan2: {sent:?}"
            );
        }
    }

    // What the internet sees from each WAN device: its own address.
    let inet = coop.internet();
    for w in r1.wans() {
        for (url, addr) in [
            (inet.url_v4("/ip"), w.addr_v4().to_string()),
            (inet.url_v6("/ip"), w.addr_v6().to_string()),
        ] {
            let seen = r1
                .exec_ok(&[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    "--interface",
                    w.device(),
                    &url,
                ])
                .unwrap();
            assert_eq!(seen.trim(), addr, "curl --interface {} {url}", w.device());
        }
    }

    // Taking r1-wan2 down stops wan2 only.
    let target = proxy.addr_v4().to_string();
    coop.link("r1-wan2").unwrap().down();
    let (rtts, out) = ping_from(r1, "wan2", &target, 5);
    assert!(
        rtts.is_empty(),
        "wan2 still answers with r1-wan2 down:\n{out}"
    );
    let (rtts, out) = ping_from(r1, "wan", &target, 5);
    assert_eq!(rtts.len(), 5, "wan lost packets with r1-wan2 down:\n{out}");
    let (rtts, out) = ping_from(r1, "wan2", &proxy.addr_v6().to_string(), 3);
    assert!(rtts.is_empty(), "wan2 still answers over IPv6:\n{out}");
    // ... and the same for r1-wan: wan2 works alone.
    coop.link("r1-wan2").unwrap().up();
    coop.link("r1-wan").unwrap().down();
    let (rtts, out) = ping_from(r1, "wan2", &target, 5);
    assert_eq!(rtts.len(), 5, "wan2 with r1-wan down:\n{out}");
    let (rtts, out) = ping_from(r1, "wan", &target, 3);
    assert!(rtts.is_empty(), "wan answers with r1-wan down:\n{out}");
    coop.link("r1-wan").unwrap().up();
    let (rtts, out) = ping_from(r1, "wan", &target, 3);
    assert_eq!(rtts.len(), 3, "wan after r1-wan came back:\n{out}");
}

#[test]
fn carrier_nat_rewrites_each_wan_to_its_own_public_address() {
    let mut topology = common::shipped_topology("twowan");
    topology.routers[0].nat = true;
    let mut coop =
        Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let inet_ip = coop.internet().url_v4("/ip");
    let seen = |coop: &Coop, dev: &str| {
        coop.router(1)
            .exec_ok(&[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "--interface",
                dev,
                &inet_ip,
            ])
            .unwrap()
            .trim()
            .to_string()
    };
    let public: Vec<String> = coop
        .router(1)
        .wans()
        .iter()
        .map(|w| w.public_addrs().0.to_string())
        .collect();
    assert_ne!(public[0], public[1]);
    assert_eq!(seen(&coop, "wan"), public[0]);
    assert_eq!(seen(&coop, "wan2"), public[1]);
    coop.rebind_nat(1).unwrap();
    let renumbered: Vec<String> = coop
        .router(1)
        .wans()
        .iter()
        .map(|w| w.public_addrs().0.to_string())
        .collect();
    assert!(renumbered[0] != public[0] && renumbered[1] != public[1]);
    assert_eq!(seen(&coop, "wan"), renumbered[0]);
    assert_eq!(seen(&coop, "wan2"), renumbered[1]);
}

#[test]
fn the_pool_gives_a_two_wan_gateway_one_uplink_per_wan() {
    let coop = build();
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let config = std::fs::read_to_string(pool.gateway_config(1)).unwrap();
    assert_eq!(config.matches("[[uplink]]").count(), 2, "{config}");
    assert!(
        config.contains("device = \"wan\"") && config.contains("device = \"wan2\""),
        "{config}"
    );
    // Both uplinks' sockets are open (bound to their devices).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = pool.gateway_status(&coop, 1, true).unwrap();
        let compact: String = status.split_whitespace().collect();
        let ready = |dev: &str| {
            // `"device":"wan", ..., "ready":true, ...}`: one uplink's object (no nesting).
            compact.split("\"device\":").any(|s| {
                let object = s.split('}').next().unwrap_or_default();
                object.starts_with(&format!("\"{dev}\",")) && object.contains("\"ready\":true")
            })
        };
        if ready("wan") && ready("wan2") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "both uplinks should be ready:\n{status}\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{status}");
    // The LAN goes through the proxy.
    let seen = coop
        .client(1)
        .exec_ok(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &coop.internet().url_name("/ip"),
        ])
        .unwrap();
    assert_eq!(
        seen.trim(),
        coop.proxy().addr_v4().to_string(),
        "{}",
        pool.logs()
    );
}
