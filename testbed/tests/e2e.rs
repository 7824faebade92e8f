//! End to end: real gateways and a real proxy in a namespace co-op, real clients (curl,
//! dig, ping) on the LANs, real servers on the internet host. Run as root; these fail,
//! never skip, when the testbed cannot be built.

use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Node, Topology};

fn build(routers: usize) -> Coop {
    Coop::build(&Topology::coop(routers))
        .unwrap_or_else(|e| panic!("cannot build the testbed: {e}"))
}

/// Downloads `url` from `client` and returns the body's SHA-256.
fn download_sha256(client: &Node, url: &str) -> String {
    let out = client
        .exec_ok(&[
            "sh",
            "-c",
            &format!("curl -sS --fail -m 120 -g '{url}' | sha256sum"),
        ])
        .unwrap();
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The address the internet host sees `node`'s HTTP requests come from.
fn public_address(coop: &Coop, node: &Node) -> String {
    node.exec_ok(&["curl", "-sS", "-m", "10", &coop.internet().url_v4("/ip")])
        .unwrap()
        .trim()
        .to_string()
}

/// One ping from `node` to the internet host gets an answer within a second.
fn reaches_internet(coop: &Coop, node: &Node) -> bool {
    let target = coop.internet().addr_v4().to_string();
    node.exec_ok(&["ping", "-n", "-c", "1", "-W", "1", &target])
        .is_ok()
}

/// Retries `f` until it succeeds or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn lan_traffic_goes_through_the_tunnel_v4_and_v6() {
    let coop = build(1);
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    let net = coop.internet();
    let file = net.serve_file("twenty.bin", 20 << 20).unwrap();

    let got = download_sha256(client, &net.url_v4(&file.path()));
    assert_eq!(got, file.sha256, "IPv4 download corrupted\n{}", pool.logs());
    let small = net.serve_file("five.bin", 5 << 20).unwrap();
    let got = download_sha256(client, &net.url_v6(&small.path()));
    assert_eq!(
        got,
        small.sha256,
        "IPv6 download corrupted\n{}",
        pool.logs()
    );

    client
        .exec_ok(&[
            "ping",
            "-n",
            "-c",
            "3",
            "-W",
            "2",
            &net.addr_v4().to_string(),
        ])
        .unwrap();
    client
        .exec_ok(&[
            "ping",
            "-6",
            "-n",
            "-c",
            "3",
            "-W",
            "2",
            &net.addr_v6().to_string(),
        ])
        .unwrap();
    for (rtype, expect) in [
        ("A", net.addr_v4().to_string()),
        ("AAAA", net.addr_v6().to_string()),
    ] {
        let answer = client
            .exec_ok(&[
                "dig",
                "+short",
                "+notcp",
                "+time=2",
                "+tries=2",
                &format!("@{}", net.addr_v4()),
                net.dns_name(),
                rtype,
            ])
            .unwrap();
        assert_eq!(answer.trim(), expect, "DNS {rtype} over UDP");
    }
    let answer = client
        .exec_ok(&[
            "dig",
            "+short",
            "+notcp",
            "+time=2",
            "+tries=2",
            &format!("@{}", net.addr_v6()),
            net.dns_name(),
            "AAAA",
        ])
        .unwrap();
    assert_eq!(answer.trim(), net.addr_v6().to_string(), "DNS over IPv6");

    // The internet saw only the proxy, never the member's own WAN address.
    let requests = net.http_requests();
    assert!(requests.len() >= 2);
    let proxy = coop.proxy();
    let r1 = coop.router(1);
    for req in &requests {
        assert!(
            req.peer == proxy.addr_v4() || req.peer == proxy.addr_v6(),
            "internet host saw {} (router WAN {} / {})",
            req.peer,
            r1.wan_addr_v4(),
            r1.wan_addr_v6()
        );
    }
    // And it really went through the tunnel: the gateway's TUN carried the bytes.
    let stats = r1
        .exec_ok(&["cat", "/sys/class/net/linkpool0/statistics/rx_bytes"])
        .unwrap();
    let tun_rx: u64 = stats.trim().parse().unwrap();
    assert!(tun_rx > 25 << 20, "TUN received only {tun_rx} bytes");

    // `linkpool status` reports the session and what the uplink carried.
    let json = pool.gateway_status(&coop, 1, true).unwrap();
    assert!(json.contains("\"connected\":true"), "{json}");
    let rx = json_number(&json, "rx_bytes");
    assert!(
        rx > 25 << 20,
        "status says the uplink received {rx} bytes: {json}"
    );
    let text = pool.gateway_status(&coop, 1, false).unwrap();
    assert!(text.contains("member member1  connected"), "{text}");
    let proxy_text = pool.proxy_status(&coop, false).unwrap();
    assert!(
        proxy_text.contains("member member1 connected"),
        "{proxy_text}"
    );
    // A clean run drops nothing, on either side, but what the core's queue drops to slow
    // a download down (the queue is the core's, so that is where a saturating flow meets
    // it): not even the kernel's link-local chatter on the tunnel devices, which never
    // belongs in the tunnel.
    assert!(
        faults(&json).is_empty(),
        "gateway dropped: {json}\n{}",
        pool.logs()
    );
    let proxy_json = pool.proxy_status(&coop, true).unwrap();
    assert!(
        faults(&proxy_json).is_empty(),
        "proxy dropped: {proxy_json}"
    );
}

/// The drops in a daemon's JSON status (`"drops":{"reason":n,...}`) other than the
/// queue's congestion signals: `queue_delay` (CoDel) and `queue_full` (the fattest flow
/// loses packets when the queue is full).
fn faults(json: &str) -> Vec<String> {
    let at = json.find("\"drops\":{").expect("a drops object") + "\"drops\":{".len();
    let body = &json[at..at + json[at..].find('}').expect("the object ends")];
    body.split(',')
        .filter(|kv| {
            !kv.is_empty()
                && !kv.starts_with("\"queue_delay\":")
                && !kv.starts_with("\"queue_full\":")
        })
        .map(str::to_string)
        .collect()
}

/// The first number after `"key":` in a JSON text.
fn json_number(json: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn two_members_at_once_without_interference() {
    let coop = build(2);
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let net = coop.internet();
    let a = net.serve_file("a.bin", 8 << 20).unwrap();
    let b = net.serve_file("b.bin", 8 << 20).unwrap();
    let (ua, ub) = (net.url_v4(&a.path()), net.url_v4(&b.path()));
    let (c1, c2) = (coop.client(1).clone(), coop.client(2).clone());
    let t = std::thread::spawn(move || download_sha256(&c2, &ub));
    let got_a = download_sha256(&c1, &ua);
    let got_b = t.join().unwrap();
    assert_eq!(got_a, a.sha256, "{}", pool.logs());
    assert_eq!(got_b, b.sha256, "{}", pool.logs());
    // Each member's replies reached its own LAN: both clients saw the proxy as peer.
    for n in [1, 2] {
        assert_eq!(
            public_address(&coop, coop.client(n)),
            coop.proxy().addr_v4().to_string()
        );
    }
}

#[test]
fn member_recovers_by_itself_when_the_proxy_restarts() {
    let coop = build(1);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    let ping = |c: &Node| reaches_internet(&coop, c);
    assert!(eventually(Duration::from_secs(5), || ping(client)));

    // A crash, not a clean stop: the proxy forgets every session.
    pool.proxy.take().unwrap().kill().unwrap();
    assert!(!ping(client), "traffic flowed with the proxy down");
    std::thread::sleep(Duration::from_secs(2));
    pool.start_proxy(&coop).unwrap();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || ping(client)),
        "no traffic 30 s after the proxy came back\n{}",
        pool.logs()
    );
    eprintln!(
        "recovered {:?} after the proxy restarted",
        started.elapsed()
    );
    // The gateway was not restarted: it reconnected by itself.
    assert!(pool.gateways[0].try_wait().unwrap().is_none());
    assert!(
        pool.gateways[0]
            .log()
            .matches("session with the proxy established")
            .count()
            >= 2
            || pool.gateways[0].log().contains("session rekeyed")
    );
}

#[test]
fn gateway_stop_removes_everything_it_added() {
    let coop = build(1);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let r1 = coop.router(1);
    let rules_before_stop = r1.exec_ok(&["ip", "rule"]).unwrap();
    assert!(rules_before_stop.contains("lookup 7117"));
    let mut gw = pool.gateways.pop().unwrap();
    gw.signal(15).unwrap();
    let status = gw
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("gateway did not stop");
    assert!(status.success(), "{}", gw.log());
    let rules = r1.exec_ok(&["ip", "rule"]).unwrap();
    assert!(!rules.contains("7117"), "{rules}");
    assert!(r1.exec_ok(&["ip", "link", "show", "linkpool0"]).is_err());
    let tables = r1.exec_ok(&["nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("linkpool"), "{tables}");
    // LAN traffic now takes the plain WAN again (the router routes without linkpool).
    assert_ne!(
        public_address(&coop, coop.client(1)),
        coop.proxy().addr_v4().to_string()
    );
}

#[test]
fn proxy_follows_a_member_whose_public_address_changes() {
    let mut topology = Topology::coop(1);
    topology.routers[0].nat = true;
    let mut coop =
        Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    assert!(eventually(Duration::from_secs(5), || {
        reaches_internet(&coop, coop.client(1))
    }));
    let before = pool.proxy_status(&coop, true).unwrap();
    // The carrier renumbers the member's line: its tunnel now arrives from elsewhere.
    let (new_v4, _) = coop.rebind_nat(1).unwrap();
    assert!(!before.contains(&new_v4.to_string()));
    assert!(
        eventually(Duration::from_secs(10), || reaches_internet(
            &coop,
            coop.client(1)
        )),
        "no traffic after the member's address changed\n{}",
        pool.logs()
    );
    let after = pool.proxy_status(&coop, true).unwrap();
    assert!(
        after.contains(&format!("\"endpoint\":\"{new_v4}:")),
        "proxy did not follow the member to {new_v4}: {after}"
    );
    // Same session: no new handshake was needed.
    assert_eq!(json_number(&after, "handshakes"), 1, "{after}");
}

#[test]
fn member_recovers_by_itself_when_its_wan_comes_back() {
    let coop = build(1);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    let ping = |c: &Node| reaches_internet(&coop, c);
    assert!(eventually(Duration::from_secs(5), || ping(client)));

    // Longer than the gateway waits before it declares the proxy silent and handshakes
    // again (Limits::dead_after, 6 s), with those handshakes lost on the dead WAN.
    let wan = coop.link(&coop.router(1).wan_link()).unwrap();
    wan.down();
    assert!(!ping(client), "traffic flowed with the WAN down");
    std::thread::sleep(Duration::from_secs(10));
    wan.up();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || ping(client)),
        "no traffic 30 s after the WAN came back\n{}",
        pool.logs()
    );
    eprintln!("recovered {:?} after the WAN came back", started.elapsed());
    assert!(pool.gateways[0].try_wait().unwrap().is_none());
    let status = pool.gateway_status(&coop, 1, true).unwrap();
    assert!(status.contains("\"connected\":true"), "{status}");
}

#[test]
fn proxy_reload_admits_a_new_member_and_keeps_live_sessions() {
    let coop = build(2);
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    pool.start_proxy(&coop).unwrap();
    pool.start_gateway(&coop, 1).unwrap();

    // The admin adds a member to the running proxy's configuration; router 2 is given it.
    let late = pool.add_member("late").unwrap();
    pool.give_bundle(2, &late).unwrap();

    let proxy = pool.proxy.as_mut().unwrap();
    proxy.signal(libc::SIGHUP).unwrap();
    proxy
        .wait_for_log("configuration re-read", Duration::from_secs(10))
        .unwrap();
    // Only a proxy that learned the new member completes this handshake.
    pool.start_gateway(&coop, 2)
        .unwrap_or_else(|e| panic!("new member not admitted after reload: {e}"));

    assert_eq!(
        public_address(&coop, coop.client(2)),
        coop.proxy().addr_v4().to_string()
    );
    assert_eq!(
        public_address(&coop, coop.client(1)),
        coop.proxy().addr_v4().to_string()
    );
    // Member 1 kept its session: two handshakes in all, one per member.
    let status = pool.proxy_status(&coop, true).unwrap();
    assert_eq!(json_number(&status, "handshakes"), 2, "{status}");
    assert!(status.contains("\"name\":\"late\""), "{status}");
}

/// The README's demo, run to the end as a user runs it (the debug build here).
#[test]
fn the_demo_runs_to_the_end_and_reports_every_uplink() {
    let bin = linkpool_testbed::workspace_binary("linkpool-testbed").unwrap();
    let out = std::process::Command::new(bin)
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The member with two uplinks: its download alone on the better one, then pooled,
    // both uplinks carrying part of it (the demo fails otherwise).
    let pooling = text
        .split("[4/6] pooling")
        .nth(1)
        .unwrap_or_else(|| panic!("no pooling step\n{text}"));
    let pooled = pooling
        .lines()
        .find(|l| l.trim_start().starts_with("c2 through the pool"))
        .unwrap_or_else(|| panic!("no pooled download\n{text}"));
    assert!(pooled.contains("shares r2-wan "), "{pooled}");
    // The member with one line: through its neighbours' lines too, each carrying part.
    let neighbours = text
        .split("[5/6] neighbours")
        .nth(1)
        .unwrap_or_else(|| panic!("no neighbours step\n{text}"));
    let pooled = neighbours
        .lines()
        .find(|l| l.trim_start().starts_with("c3 through the pool"))
        .unwrap_or_else(|| panic!("no download through the neighbours\n{text}"));
    assert!(
        pooled.contains("r1-wan ") && pooled.contains("r2-wan "),
        "{pooled}"
    );
    let report = text
        .split("[6/6] report")
        .nth(1)
        .unwrap_or_else(|| panic!("no report\n{text}"));
    let mut total = 0;
    for n in 1..=3 {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("r{n}-wan ")))
            .unwrap_or_else(|| panic!("no report line for r{n}-wan\n{text}"));
        // Each line carried a real part of the members' downloads (theirs and their
        // neighbours', all sharing).
        let down: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(down > 2 << 20, "{line}");
        total += down;
        assert!(
            text.contains(&format!("member member{n}  connected")),
            "{text}"
        );
    }
    // Three members' 8 MiB at once, then the two side-by-side downloads through the pool.
    assert!(
        total > 5 * (8 << 20),
        "the lines carried {total} bytes\n{text}"
    );
    assert!(text.contains("demo ok"), "{text}");
    assert!(!text.contains("(failed)"), "{text}");
    // Nothing dropped but the queue's congestion signals (`dropped queue_delay N, ...`)
    // and the second arrivals of copies sent on purpose: redundancy (the member with two
    // uplinks), repairs and re-sends from a path suspected under load. No more duplicates
    // than copies sent, at both ends together.
    let number_after = |line: &str, word: &str| -> u64 {
        line.split(word)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or(0)
    };
    let copies: u64 = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("spread ") {
                number_after(l, " duplicated ") + number_after(l, " repaired ")
            } else {
                // A path that stopped answering for a moment: what it had in flight was
                // re-sent on another, and may arrive twice.
                number_after(l, " resent elsewhere ")
            }
        })
        .sum();
    let drop_lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("dropped "))
        .collect();
    let duplicates: u64 = drop_lines
        .iter()
        .map(|l| number_after(&format!(" {l}"), " duplicate "))
        .sum();
    let unexpected: Vec<&str> = drop_lines
        .iter()
        .flat_map(|list| list.split(", "))
        .filter(|d| {
            // On the mesh: a relay refuses what its owner's own traffic needs the line
            // for, a neighbour's first datagrams while it has not yet heard its hellos, and
            // the neighbours' hellos while its own credential has not come yet.
            ![
                "queue_delay ",
                "queue_full ",
                "duplicate ",
                "owner_first ",
                "not_a_neighbour ",
                "not_on_mesh ",
            ]
            .iter()
            .any(|ok| d.starts_with(ok))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "a daemon dropped packets: {unexpected:?}\n{text}"
    );
    assert!(
        duplicates <= copies,
        "{duplicates} duplicates refused, {copies} copies sent\n{text}"
    );
}

/// `mss:N` of every established TCP connection `node` has with `peer`.
fn tcp_mss(node: &Node, peer: &str) -> Vec<u32> {
    let out = node
        .exec_ok(&["ss", "-tinH", "state", "established", "dst", peer])
        .unwrap();
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix("mss:"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn tcp_mss_is_clamped_to_the_tunnel_mtu_both_ways_v4_and_v6() {
    let coop = build(1);
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let net = coop.internet();
    let file = net.serve_file("slow.bin", 4 << 20).unwrap();
    let client = coop.client(1);
    let status = pool.gateway_status(&coop, 1, true).unwrap();
    let mtu = u32::try_from(json_number(&status, "mtu")).unwrap();
    // Interfaces on both ends are 1500 bytes: unclamped, each side would use 1448.
    for (url, server_sees, client_sees, header) in [
        (
            net.url_v4(&file.path()),
            coop.proxy().addr_v4().to_string(),
            net.addr_v4().to_string(),
            40,
        ),
        (
            net.url_v6(&file.path()),
            // ss wants IPv6 addresses in brackets.
            format!("[{}]", coop.proxy().addr_v6()),
            format!("[{}]", net.addr_v6()),
            60,
        ),
    ] {
        // Slow, so the connection is still open while we look at it.
        let mut curl = client
            .spawn(&[
                "curl",
                "-sS",
                "-g",
                "--limit-rate",
                "200k",
                "-o",
                "/dev/null",
                &url,
            ])
            .unwrap();
        let mut seen = (Vec::new(), Vec::new());
        assert!(
            eventually(Duration::from_secs(5), || {
                seen = (tcp_mss(net, &server_sees), tcp_mss(client, &client_sees));
                !seen.0.is_empty() && !seen.1.is_empty()
            }),
            "no established connection to look at ({url})\n{}",
            pool.logs()
        );
        curl.kill().unwrap();
        let limit = mtu - header;
        for (side, mss) in [("internet host", &seen.0), ("LAN client", &seen.1)] {
            assert!(
                mss.iter().all(|&m| m <= limit),
                "{side} uses MSS {mss:?} over a {mtu}-byte tunnel ({url}); at most {limit}"
            );
        }
    }
}

/// Moves router `n`'s WAN address and default route onto a new macvlan device `dev`
/// over its WAN: what a PPPoE line looks like to the router, a device that disappears
/// and comes back (with a new index) on every reconnection.
fn wan_on_new_device(coop: &Coop, n: usize, dev: &str) {
    let r = coop.router(n);
    let (gw4, _) = r.wan_gateway();
    let addr = format!("{}/24", r.wan_addr_v4());
    for argv in [
        &[
            "ip",
            "link",
            "add",
            "link",
            r.wan_device(),
            "name",
            dev,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ][..],
        &["ip", "-4", "addr", "flush", "dev", r.wan_device()],
        &["ip", "addr", "add", &addr, "dev", dev],
        &["ip", "link", "set", dev, "up"],
        &[
            "ip",
            "route",
            "replace",
            "default",
            "via",
            &gw4.to_string(),
            "dev",
            dev,
        ],
    ] {
        r.exec_ok(argv).unwrap();
    }
}

#[test]
fn member_recovers_when_its_wan_device_is_replaced() {
    let coop = build(1);
    wan_on_new_device(&coop, 1, "ppp0");
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    let conf = pool.gateway_config(1);
    let text = std::fs::read_to_string(&conf).unwrap();
    let wan = format!("device = {:?}", coop.router(1).wan_device());
    assert!(text.contains(&wan), "{text}");
    std::fs::write(&conf, text.replace(&wan, "device = \"ppp0\"")).unwrap();
    pool.start_proxy(&coop).unwrap();
    pool.start_gateway(&coop, 1).unwrap();
    let client = coop.client(1);
    let ping = |c: &Node| reaches_internet(&coop, c);
    assert!(eventually(Duration::from_secs(5), || ping(client)));

    // The line reconnects: the device goes away and a new one of the same name comes
    // up. No signal tells the gateway; it must notice by itself.
    coop.router(1)
        .exec_ok(&["ip", "link", "del", "ppp0"])
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    wan_on_new_device(&coop, 1, "ppp0");
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || ping(client)),
        "no traffic 20 s after the WAN device came back\n{}",
        pool.logs()
    );
    eprintln!(
        "recovered {:?} after the WAN device came back",
        started.elapsed()
    );
    assert!(pool.gateways[0].try_wait().unwrap().is_none());
}

#[test]
fn a_crashed_gateway_restarts_over_its_own_leftovers() {
    let coop = build(1);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let r1 = coop.router(1);
    let state = || {
        let rules = r1.exec_ok(&["ip", "rule"]).unwrap();
        let rules6 = r1.exec_ok(&["ip", "-6", "rule"]).unwrap();
        let nft = r1.exec_ok(&["nft", "list", "tables"]).unwrap();
        (rules, rules6, nft)
    };
    let running = state();
    assert!(running.0.contains("lookup 7117"), "{running:?}");

    // A crash: no chance to clean up. Rules and the nft table stay behind.
    pool.gateways.pop().unwrap().kill().unwrap();
    let after_crash = state();
    assert!(after_crash.0.contains("lookup 7117"), "{after_crash:?}");

    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("restart over leftovers: {e}"));
    assert_eq!(state(), running, "leftovers were not replaced one for one");
    assert_eq!(
        public_address(&coop, coop.client(1)),
        coop.proxy().addr_v4().to_string()
    );

    // And a clean stop still leaves nothing.
    let mut gw = pool.gateways.pop().unwrap();
    gw.signal(libc::SIGTERM).unwrap();
    assert!(
        gw.wait_timeout(Duration::from_secs(10))
            .unwrap()
            .is_some_and(|s| s.success()),
        "{}",
        gw.log()
    );
    let (rules, rules6, nft) = state();
    assert!(
        !rules.contains("7117") && !rules6.contains("7117"),
        "{rules}{rules6}"
    );
    assert!(!nft.contains("linkpool"), "{nft}");
}

#[test]
fn gateway_reload_keeps_its_session_and_survives_a_bad_config() {
    let coop = build(1);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let conf = pool.gateway_config(1);
    let good = std::fs::read_to_string(&conf).unwrap();
    let client = coop.client(1);
    let url = coop.internet().url_v4("/ip");
    let through_pool = || {
        client
            .exec_ok(&["curl", "-sS", "-m", "10", &url])
            .is_ok_and(|ip| ip.trim() == coop.proxy().addr_v4().to_string())
    };
    assert!(through_pool());

    // A broken edit: the running configuration stays, and so does the traffic.
    std::fs::write(&conf, format!("{good}\nlog_level = 7\n")).unwrap();
    let gw = &mut pool.gateways[0];
    gw.signal(libc::SIGHUP).unwrap();
    gw.wait_for_log("configuration not reloaded", Duration::from_secs(10))
        .unwrap();
    assert!(gw.try_wait().unwrap().is_none(), "{}", gw.log());
    assert!(through_pool());

    // A good edit (one more uplink, on the mesh device): re-read, same session.
    let mesh = coop.router(1).mesh_device().to_string();
    std::fs::write(
        &conf,
        format!("{good}\n[[uplink]]\nname = \"spare\"\ndevice = {mesh:?}\n"),
    )
    .unwrap();
    gw.signal(libc::SIGHUP).unwrap();
    gw.wait_for_log("configuration re-read", Duration::from_secs(10))
        .unwrap();
    let status = pool.gateway_status(&coop, 1, true).unwrap();
    assert!(status.contains("\"name\":\"spare\""), "{status}");
    assert!(status.contains("\"connected\":true"), "{status}");
    assert_eq!(json_number(&status, "handshakes_completed"), 1, "{status}");
    assert!(through_pool());
}

#[test]
fn a_removed_member_is_cut_off_on_reload_and_cannot_come_back() {
    let coop = build(2);
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let ping = |n: usize| reaches_internet(&coop, coop.client(n));
    assert!(eventually(Duration::from_secs(5), || ping(1) && ping(2)));

    // The admin revokes member 2 (a stolen router, say) and reloads the proxy.
    pool.remove_member(&Pool::member_name(2)).unwrap();
    let proxy = pool.proxy.as_mut().unwrap();
    proxy.signal(libc::SIGHUP).unwrap();
    proxy
        .wait_for_log("configuration re-read", Duration::from_secs(10))
        .unwrap();

    assert!(
        eventually(Duration::from_secs(5), || !ping(2)),
        "the removed member still reaches the Internet\n{}",
        pool.logs()
    );
    // Past the gateway's silence timeout its new handshakes are refused, every one.
    std::thread::sleep(Duration::from_secs(8));
    assert!(!ping(2), "the removed member came back\n{}", pool.logs());
    let status = pool.proxy_status(&coop, true).unwrap();
    assert!(
        json_number(&status, "unknown_member") >= 1,
        "no refused handshake counted: {status}"
    );
    assert!(!status.contains("\"name\":\"member2\""), "{status}");
    // Member 1 noticed nothing.
    assert!(ping(1));
    assert_eq!(json_number(&status, "handshakes"), 2, "{status}");
}

#[test]
fn a_gateway_tries_the_proxys_next_endpoint_when_the_first_does_not_answer() {
    let coop = build(1);
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    // The co-op lists an address where nothing answers first (a retired server), then
    // the real one; a member with that bundle must still get through.
    let conf = pool.proxy_config();
    let text = std::fs::read_to_string(&conf).unwrap();
    let real = format!("\"{}:7117\"", coop.proxy().addr_v4());
    let dead = "\"203.0.113.99:7117\"";
    assert!(text.contains(&format!("[{real}]")), "{text}");
    std::fs::write(
        &conf,
        text.replace(&format!("[{real}]"), &format!("[{dead}, {real}]")),
    )
    .unwrap();
    let bundle = pool.add_member("twoway").unwrap();
    pool.give_bundle(1, &bundle).unwrap();

    pool.start_proxy(&coop).unwrap();
    let took = pool
        .start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("never reached the second endpoint: {e}"));
    eprintln!("session after {took:?}, past the dead endpoint");
    let log = pool.gateways[0].log();
    assert!(
        log.contains("trying its next address"),
        "no failover logged:\n{log}"
    );
    let status = pool.gateway_status(&coop, 1, true).unwrap();
    assert!(status.contains(&format!("\"proxy\":{real}")), "{status}");
}
