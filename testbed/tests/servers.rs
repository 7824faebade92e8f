//! The internet host's servers answer real clients (curl, dig), over IPv4 and IPv6, and
//! the co-op's addressing works (LAN masquerade, carrier NAT, the mesh segment).

mod common;

use common::{coop1, warm_up};
use linkpool_testbed::{Coop, Topology};

#[test]
fn http_serves_files_with_the_promised_checksum_over_v4_v6_and_by_name() {
    let coop = coop1();
    let inet = coop.internet();
    let file = inet.serve_file("5M.bin", 5 << 20).unwrap();
    let c1 = coop.client(1);
    for url in [
        inet.url_v4(&file.path()),
        inet.url_v6(&file.path()),
        inet.url_name(&file.path()),
    ] {
        let out = c1
            .exec_ok(&[
                "sh",
                "-c",
                &format!("curl -sS --fail --max-time 30 {url} | sha256sum"),
            ])
            .unwrap();
        assert_eq!(
            out.split_whitespace().next(),
            Some(file.sha256.as_str()),
            "{url}"
        );
    }
    // The client's LAN is masqueraded by its router, as on OpenWrt: the host sees the WAN.
    let seen = c1.exec_ok(&["curl", "-sS", &inet.url_v4("/ip")]).unwrap();
    assert_eq!(seen.trim(), coop.router(1).wan_addr_v4().to_string());
    let seen6 = c1.exec_ok(&["curl", "-sS", &inet.url_v6("/ip")]).unwrap();
    assert_eq!(seen6.trim(), coop.router(1).wan_addr_v6().to_string());
    let log = inet.http_requests();
    assert!(
        log.iter()
            .any(|r| r.path == file.path() && r.bytes == file.size && r.status == 200),
        "{log:?}"
    );
    let missing = c1
        .exec(&["curl", "-sS", "--fail", &inet.url_v4("/files/nope")])
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn dns_answers_a_and_aaaa_over_udp_and_tcp() {
    let coop = coop1();
    let inet = coop.internet();
    let c1 = coop.client(1);
    let servers = [inet.addr_v4().to_string(), inet.addr_v6().to_string()];
    for server in &servers {
        for transport in ["+notcp", "+tcp"] {
            let at = format!("@{server}");
            let a = c1
                .exec_ok(&[
                    "dig",
                    "+short",
                    "+time=2",
                    transport,
                    &at,
                    inet.dns_name(),
                    "A",
                ])
                .unwrap();
            assert_eq!(
                a.trim(),
                inet.addr_v4().to_string(),
                "A via {server} {transport}"
            );
            let aaaa = c1
                .exec_ok(&[
                    "dig",
                    "+short",
                    "+time=2",
                    transport,
                    &at,
                    inet.dns_name(),
                    "AAAA",
                ])
                .unwrap();
            assert_eq!(
                aaaa.trim(),
                inet.addr_v6().to_string(),
                "AAAA via {server} {transport}"
            );
        }
    }
    // Nodes resolve through it by default (resolv.conf of the namespace).
    let out = c1.exec_ok(&["getent", "ahosts", inet.dns_name()]).unwrap();
    assert!(out.contains(&inet.addr_v4().to_string()), "{out}");
}

#[test]
fn mesh_nat_and_reachability_follow_the_topology() {
    let topology = Topology::parse(
        "[[router]]\nnat = true\n[[router]]\nmesh = { delay = \"1ms\" }\n",
        "inline",
    )
    .unwrap();
    let mut coop =
        Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    // Roaming: the carrier NAT is renumbered; the Internet sees r1 from a new address.
    let before = coop.router(1).public_addrs();
    let after = coop.rebind_nat(1).unwrap();
    assert_ne!(before.0, after.0);
    assert_ne!(before.1, after.1);
    assert!(coop.rebind_nat(2).is_err(), "r2 is not behind NAT");
    let (r1, r2) = (coop.router(1), coop.router(2));
    let inet = coop.internet();
    // r1 is behind a carrier NAT: the Internet sees the NAT's address, not its WAN.
    let seen = r1.exec_ok(&["curl", "-sS", &inet.url_v4("/ip")]).unwrap();
    assert_eq!(seen.trim(), r1.public_addrs().0.to_string());
    assert_ne!(r1.public_addrs().0, r1.wan_addr_v4());
    let seen6 = r1.exec_ok(&["curl", "-sS", &inet.url_v6("/ip")]).unwrap();
    assert_eq!(seen6.trim(), r1.public_addrs().1.to_string());
    // The proxy reaches the internet host over both families.
    warm_up(coop.proxy(), &inet.addr_v4().to_string());
    warm_up(coop.proxy(), &inet.addr_v6().to_string());
    // Routers see each other on the mesh segment, v4 and v6 (through the bridge).
    warm_up(r1, &r2.mesh().v4.to_string());
    warm_up(r1, &r2.mesh().v6.to_string());
    // The mesh link's frames went through the emulator.
    assert!(
        coop.link("r2-mesh")
            .unwrap()
            .stats(linkpool_testbed::Direction::Downstream)
            .frames_out
            > 0
    );
    assert!(coop.link("nope").is_err());
}

#[test]
fn spawned_processes_log_and_stop() {
    let coop = coop1();
    let mut p = coop
        .client(1)
        .spawn(&[
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done",
        ])
        .unwrap();
    p.wait_for_log("started", std::time::Duration::from_secs(5))
        .unwrap();
    let status = p.stop(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "SIGTERM reached the process: {}",
        p.log()
    );
    assert!(p.log().contains("bye"));
    let mut quick = coop.client(1).spawn(&["true"]).unwrap();
    let err = quick
        .wait_for_log("never", std::time::Duration::from_secs(5))
        .unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
}

#[test]
fn full_size_frames_cross_emulated_links_and_bigger_ones_do_not() {
    let coop = coop1();
    let c1 = coop.client(1);
    let inet = coop.internet();
    warm_up(c1, &inet.addr_v4().to_string());
    // 1500-byte IP packets (don't fragment) through LAN, r1-wan and internet links.
    c1.exec_ok(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1472",
        &inet.addr_v4().to_string(),
    ])
    .unwrap();
    c1.exec_ok(&[
        "ping",
        "-n",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1452",
        &inet.addr_v6().to_string(),
    ])
    .unwrap();
    // One byte more does not fit the path MTU of 1500.
    let out = c1
        .exec(&[
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1473",
            &inet.addr_v4().to_string(),
        ])
        .unwrap();
    assert!(
        !out.status.success(),
        "a 1501-byte packet with DF crossed a 1500-byte path"
    );
    let stats = coop
        .link("r1-wan")
        .unwrap()
        .stats(linkpool_testbed::Direction::Upstream);
    assert_eq!(
        stats.dropped_other, 0,
        "no frame too big or refused: {stats:?}"
    );
}
