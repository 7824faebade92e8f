//! The OS layer, exercised in real network namespaces. Needs root: without it these tests
//! fail (they never skip).

use linkpool_os::cmd::{ip, run};
use linkpool_os::netns::NetNs;
use linkpool_os::routing::{GatewayRouting, ProxyNat};
use linkpool_os::socket::{listen_socket, uplink_socket};
use linkpool_os::tun::{AsyncTun, Tun};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn nft_table(family_table: &str) -> Option<String> {
    run("nft", &["list", "table", "inet", family_table], None).ok()
}

#[test]
fn tun_is_created_configured_and_removed_on_drop() {
    let ns = NetNs::new("tun");
    ns.run_blocking(|| {
        let tun = Tun::create("lptest0").unwrap();
        assert_eq!(tun.name(), "lptest0");
        tun.configure(
            1400,
            &[
                ("10.9.0.2".parse().unwrap(), 32),
                ("fd09::2".parse().unwrap(), 128),
            ],
        )
        .unwrap();
        let link = ip(&["-d", "link", "show", "dev", "lptest0"]).unwrap();
        assert!(link.contains("mtu 1400"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        assert!(link.contains("tun type tun pi off"), "{link}");
        let addrs = ip(&["addr", "show", "dev", "lptest0"]).unwrap();
        assert!(addrs.contains("inet 10.9.0.2/32"), "{addrs}");
        assert!(addrs.contains("inet6 fd09::2/128"), "{addrs}");
        // Configuring twice is not an error (restart without a crash in between).
        tun.configure(1400, &[("10.9.0.2".parse().unwrap(), 32)])
            .unwrap();
        drop(tun);
        assert!(
            ip(&["link", "show", "dev", "lptest0"]).is_err(),
            "device left behind"
        );
    });
}

#[test]
fn tun_names_are_checked() {
    assert!(Tun::create("this-name-is-too-long").is_err());
    assert!(Tun::create("a/b").is_err());
}

/// An IPv4/UDP packet with a correct header checksum and no UDP checksum (allowed in IPv4).
fn udp4_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// The next IPv4/UDP packet from the TUN, skipping what the kernel sends on its own
/// (IPv6 router solicitations and the like).
async fn recv_udp4(tun: &AsyncTun, buf: &mut [u8]) -> usize {
    loop {
        let n = tun.recv(buf).await.unwrap();
        if n >= 28 && buf[0] >> 4 == 4 && buf[9] == 17 {
            return n;
        }
    }
}

#[test]
fn tun_carries_packets_both_ways() {
    let ns = NetNs::new("tunio");
    ns.run_async(|| async {
        let tun = Tun::create("lptest1").unwrap();
        tun.configure(1420, &[("10.9.1.1".parse().unwrap(), 24)])
            .unwrap();
        let tun = AsyncTun::new(tun).unwrap();

        // Kernel → TUN: a datagram to a peer in the TUN's subnet comes out as a packet.
        let sock = tokio::net::UdpSocket::bind("10.9.1.1:4000").await.unwrap();
        sock.send_to(b"to the tunnel", "10.9.1.5:5000")
            .await
            .unwrap();
        let mut buf = [0u8; 2000];
        let n = tokio::time::timeout(Duration::from_secs(5), recv_udp4(&tun, &mut buf))
            .await
            .expect("no packet on the TUN");
        assert_eq!(&buf[16..20], &[10, 9, 1, 5]);
        assert_eq!(&buf[28..n], b"to the tunnel");

        // TUN → kernel: a packet written to the TUN reaches a local socket.
        let pkt = udp4_packet(
            "10.9.1.5".parse().unwrap(),
            "10.9.1.1".parse().unwrap(),
            5000,
            4000,
            b"from the tunnel",
        );
        assert_eq!(tun.send(&pkt).await.unwrap(), pkt.len());
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("packet from the TUN not delivered")
            .unwrap();
        assert_eq!(&buf[..n], b"from the tunnel");
        assert_eq!(from, "10.9.1.5:5000".parse::<SocketAddr>().unwrap());
    });
}

/// A device to hang rules on (this kernel has no dummy driver; veth works).
fn veth(name: &str) {
    ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{name}p"),
    ])
    .unwrap();
}

fn gateway_routing() -> GatewayRouting {
    GatewayRouting {
        tun_device: "lp0".into(),
        mtu: 1400,
        table: 7117,
        rule_priority: 7117,
        fwmark: 0x7117,
        lan_devices: vec!["lan0".into(), "mesh0".into()],
        ipv6: true,
    }
}

/// Everything the gateway routing set-up can change, as text.
fn gateway_snapshot() -> String {
    let mut s = String::new();
    for fam in ["-4", "-6"] {
        s += &ip(&[fam, "rule", "show"]).unwrap();
        // An empty table does not exist for the kernel: that is an error for `ip`.
        s += &ip(&[fam, "route", "show", "table", "7117"]).unwrap_or_default();
        s += &ip(&[fam, "route", "show", "table", "main"]).unwrap();
    }
    s += &run("nft", &["list", "ruleset"], None).unwrap();
    s
}

#[test]
fn gateway_routing_applies_idempotently_and_tears_down_completely() {
    let ns = NetNs::new("gwroute");
    ns.run_blocking(|| {
        for dev in ["lan0", "mesh0"] {
            veth(dev);
            ip(&["link", "set", dev, "up"]).unwrap();
        }
        ip(&["addr", "add", "192.168.1.1/24", "dev", "lan0"]).unwrap();
        ip(&["addr", "add", "fd00:1::1/64", "dev", "lan0"]).unwrap();
        // Someone else's rule and table must survive us.
        ip(&["rule", "add", "pref", "100", "iif", "lan0", "lookup", "100"]).unwrap();
        linkpool_os::cmd::nft_script(
            "table inet other { chain c { type filter hook input priority 0; }; }\n",
        )
        .unwrap();
        let before = gateway_snapshot();

        let tun = Tun::create("lp0").unwrap();
        tun.configure(
            1400,
            &[
                ("10.77.0.2".parse().unwrap(), 32),
                ("fd77::2".parse().unwrap(), 128),
            ],
        )
        .unwrap();
        let routing = gateway_routing();
        routing.apply().unwrap();

        let rules = ip(&["-4", "rule", "show"]).unwrap();
        for want in [
            "7117:\tfrom all fwmark 0x7117 lookup main",
            "7118:\tfrom all iif lan0 lookup main suppress_prefixlength 0",
            "7118:\tfrom all iif mesh0 lookup main suppress_prefixlength 0",
            "7119:\tfrom all iif lan0 lookup 7117",
            "7119:\tfrom all iif mesh0 lookup 7117",
        ] {
            assert!(rules.contains(want), "missing `{want}` in\n{rules}");
        }
        // The order matters: the mark and suppress rules come before the pool's table.
        assert!(rules.find("fwmark").unwrap() < rules.find("lookup 7117").unwrap());
        let rules6 = ip(&["-6", "rule", "show"]).unwrap();
        assert!(
            rules6.contains("7119:\tfrom all iif lan0 lookup 7117"),
            "{rules6}"
        );
        assert_eq!(
            ip(&["-4", "route", "show", "table", "7117"])
                .unwrap()
                .trim(),
            "default dev lp0 scope link"
        );
        assert!(
            ip(&["-6", "route", "show", "table", "7117"])
                .unwrap()
                .contains("default dev lp0")
        );
        let nft = nft_table("linkpool").expect("nft table inet linkpool");
        assert!(nft.contains("oifname \"lp0\" masquerade"), "{nft}");
        assert!(nft.contains("tcp option maxseg size set rt mtu"), "{nft}");
        assert!(
            nft.contains("tcp option maxseg size > 1360 tcp option maxseg size set 1360"),
            "{nft}"
        );
        assert!(
            nft.contains("tcp option maxseg size > 1340 tcp option maxseg size set 1340"),
            "{nft}"
        );

        // Applying again (a restart after a crash) gives exactly the same state.
        let once = gateway_snapshot();
        routing.apply().unwrap();
        assert_eq!(gateway_snapshot(), once);

        routing.teardown().unwrap();
        routing.teardown().unwrap();
        assert!(nft_table("linkpool").is_none());
        drop(tun);
        assert_eq!(
            gateway_snapshot(),
            before,
            "teardown left something behind or removed too much"
        );
    });
}

#[test]
fn gateway_teardown_clears_a_previous_configuration_with_other_lan_devices() {
    let ns = NetNs::new("gwleft");
    ns.run_blocking(|| {
        veth("lan0");
        veth("old0");
        let tun = Tun::create("lp0").unwrap();
        tun.configure(1400, &[("10.77.0.2".parse().unwrap(), 32)])
            .unwrap();
        let old = GatewayRouting {
            lan_devices: vec!["old0".into()],
            ..gateway_routing()
        };
        old.apply().unwrap();
        // The daemon crashed; the new configuration no longer names old0.
        let new = GatewayRouting {
            lan_devices: vec!["lan0".into()],
            ipv6: false,
            ..gateway_routing()
        };
        new.apply().unwrap();
        let rules = ip(&["rule", "show"]).unwrap() + &ip(&["-6", "rule", "show"]).unwrap();
        assert!(!rules.contains("old0"), "{rules}");
        assert!(rules.contains("iif lan0 lookup 7117"), "{rules}");
        new.teardown().unwrap();
        let rules = ip(&["rule", "show"]).unwrap() + &ip(&["-6", "rule", "show"]).unwrap();
        assert!(!rules.contains("711"), "{rules}");
    });
}

/// A LAN client's packets to the Internet enter the TUN, masqueraded to the tunnel
/// address; its packets to the router itself do not; and an uplink socket bound to the
/// WAN leaves through the WAN even when a route would send its destination into the TUN.
#[test]
fn lan_traffic_enters_the_tunnel_and_uplink_sockets_do_not() {
    let router = NetNs::new("router");
    let client = NetNs::new("client");
    let isp = NetNs::new("isp");
    ip(&[
        "link",
        "add",
        "lan0",
        "netns",
        router.name(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        client.name(),
    ])
    .unwrap();
    ip(&[
        "link",
        "add",
        "wan0",
        "netns",
        router.name(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        isp.name(),
    ])
    .unwrap();
    let sh = |ns: &NetNs, args: &[&str]| {
        let mut full = vec!["-n", ns.name()];
        full.extend_from_slice(args);
        ip(&full).unwrap();
    };
    sh(&router, &["addr", "add", "192.168.50.1/24", "dev", "lan0"]);
    sh(&router, &["link", "set", "lan0", "up"]);
    sh(&router, &["addr", "add", "203.0.113.2/24", "dev", "wan0"]);
    sh(&router, &["link", "set", "wan0", "up"]);
    sh(&router, &["route", "add", "default", "via", "203.0.113.1"]);
    sh(&client, &["addr", "add", "192.168.50.2/24", "dev", "eth0"]);
    sh(&client, &["link", "set", "eth0", "up"]);
    sh(&client, &["route", "add", "default", "via", "192.168.50.1"]);
    sh(&isp, &["addr", "add", "203.0.113.1/24", "dev", "eth0"]);
    sh(&isp, &["addr", "add", "198.51.100.10/32", "dev", "lo"]);
    sh(&isp, &["link", "set", "eth0", "up"]);

    let isp_sock = isp.run_blocking(|| std::net::UdpSocket::bind("198.51.100.10:7117").unwrap());
    isp_sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    router.run_async(|| async {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        let tun = Tun::create("lp0").unwrap();
        tun.configure(1400, &[("10.77.0.2".parse().unwrap(), 32)])
            .unwrap();
        let tun = AsyncTun::new(tun).unwrap();
        let routing = GatewayRouting {
            lan_devices: vec!["lan0".into()],
            ipv6: false,
            ..gateway_routing()
        };
        routing.apply().unwrap();

        client.run_blocking(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"to the router", "192.168.50.1:9").unwrap();
            s.send_to(b"to the internet", "198.51.100.77:5000").unwrap();
        });
        let mut buf = [0u8; 2000];
        let n = tokio::time::timeout(Duration::from_secs(5), recv_udp4(&tun, &mut buf))
            .await
            .expect("the client's packet did not enter the TUN");
        assert_eq!(
            &buf[28..n],
            b"to the internet",
            "only Internet-bound traffic enters the TUN"
        );
        assert_eq!(
            &buf[12..16],
            &[10, 77, 0, 2],
            "source not masqueraded to the tunnel address"
        );
        assert_eq!(&buf[16..20], &[198, 51, 100, 77]);

        // Worst case: the proxy's network routed into the TUN in the main table. The uplink
        // socket, bound to wan0 and marked, still leaves through the WAN.
        ip(&["route", "add", "198.51.100.0/24", "dev", "lp0"]).unwrap();
        let up = uplink_socket(Some("wan0"), 0x7117).unwrap();
        let s2 = socket2::SockRef::from(&up);
        assert_eq!(s2.mark().unwrap(), 0x7117);
        assert_eq!(s2.device().unwrap().as_deref(), Some(&b"wan0"[..]));
        up.send_to(b"sealed", "198.51.100.10:7117").await.unwrap();
        // Also an IPv4 destination written as an IPv4-mapped IPv6 address.
        up.send_to(b"sealed again", "[::ffff:198.51.100.10]:7117")
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), recv_udp4(&tun, &mut buf))
                .await
                .is_err(),
            "an uplink datagram entered the TUN"
        );
        routing.teardown().unwrap();
    });
    let mut buf = [0u8; 100];
    let (n, from) = isp_sock
        .recv_from(&mut buf)
        .expect("uplink datagram did not reach the ISP side");
    assert_eq!(&buf[..n], b"sealed");
    assert_eq!(from.ip(), IpAddr::from([203, 0, 113, 2]));
    let (n, _) = isp_sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"sealed again");
}

fn proxy_nat() -> ProxyNat {
    ProxyNat {
        tun_device: "lpproxy0".into(),
        mtu: 1420,
        ipv4_pool: ("10.77.0.0".parse().unwrap(), 16),
        ipv6_pool: Some(("fd77::".parse().unwrap(), 64)),
        egress_device: None,
    }
}

#[test]
fn proxy_nat_applies_idempotently_and_tears_down_completely() {
    let ns = NetNs::new("proxy");
    ns.run_blocking(|| {
        let fwd = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_string();
        let (v4, v6) = (
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        );
        assert_eq!((fwd(v4).as_str(), fwd(v6).as_str()), ("0", "0"));
        let ruleset_before = run("nft", &["list", "ruleset"], None).unwrap();

        let tun = Tun::create("lpproxy0").unwrap();
        tun.configure(
            1420,
            &[
                ("10.77.0.1".parse().unwrap(), 16),
                ("fd77::1".parse().unwrap(), 64),
            ],
        )
        .unwrap();
        let routes = ip(&["route", "show"]).unwrap() + &ip(&["-6", "route", "show"]).unwrap();
        assert!(routes.contains("10.77.0.0/16 dev lpproxy0"), "{routes}");
        assert!(routes.contains("fd77::/64 dev lpproxy0"), "{routes}");

        let nat = proxy_nat();
        let state = nat.apply().unwrap();
        assert_eq!((fwd(v4).as_str(), fwd(v6).as_str()), ("1", "1"));
        let table = nft_table("linkpool_proxy").expect("nft table inet linkpool_proxy");
        assert!(
            table.contains("ip saddr 10.77.0.0/16 oifname != \"lpproxy0\" masquerade"),
            "{table}"
        );
        assert!(
            table.contains("ip6 saddr fd77::/64 oifname != \"lpproxy0\" masquerade"),
            "{table}"
        );
        assert!(
            table.contains("tcp option maxseg size set rt mtu"),
            "{table}"
        );

        // A second apply (restart after a crash) gives the same table.
        let second = nat.apply().unwrap();
        assert_eq!(nft_table("linkpool_proxy").unwrap(), table);
        nat.teardown(&second).unwrap();
        nat.teardown(&state).unwrap();
        assert!(nft_table("linkpool_proxy").is_none());
        assert_eq!(
            (fwd(v4).as_str(), fwd(v6).as_str()),
            ("0", "0"),
            "forwarding not restored"
        );
        assert_eq!(
            run("nft", &["list", "ruleset"], None).unwrap(),
            ruleset_before
        );

        let with_egress = ProxyNat {
            egress_device: Some("eth0".into()),
            ..proxy_nat()
        };
        assert!(
            with_egress
                .nft_body()
                .contains("ip saddr 10.77.0.0/16 oifname \"eth0\" masquerade")
        );
    });
}

#[test]
fn listen_sockets_share_a_port_across_families() {
    let ns = NetNs::new("listen");
    ns.run_async(|| async {
        let a = listen_socket("0.0.0.0:7117".parse().unwrap()).unwrap();
        let b = listen_socket("[::]:7117".parse().unwrap()).unwrap();
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"v4", "127.0.0.1:7117").await.unwrap();
        let mut buf = [0u8; 10];
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"v4");
        let d = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        d.send_to(b"v6", "[::1]:7117").await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"v6");
        assert!(listen_socket("0.0.0.0:7117".parse().unwrap()).is_err());
    });
}

/// `nft monitor`, killed when dropped (also when a test panics).
struct NftMonitor(std::process::Child);

impl Drop for NftMonitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `nft monitor` reports while `f` runs, one list of lines per committed transaction.
fn nft_transactions(f: impl FnOnce()) -> Vec<Vec<String>> {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    // Line-buffered: nft buffers its output when it is not a terminal.
    let mut monitor = NftMonitor(
        std::process::Command::new("stdbuf")
            .args(["-oL", "nft", "monitor"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (out, lines) = (monitor.0.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    // The monitor listens only once it has started: poke until it reports something.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lines.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "nft monitor is silent"
        );
        linkpool_os::cmd::nft_script("table inet lpwarm\ndelete table inet lpwarm\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // A marker transaction before and after, so nothing is missed at either end.
    let mark = |script: &str| {
        linkpool_os::cmd::nft_script(&format!("{script}\n")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !lines.lock().unwrap().iter().any(|l| l == script) {
            assert!(
                std::time::Instant::now() < deadline,
                "nft monitor did not report `{script}`"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    mark("add table inet lpmark");
    f();
    mark("delete table inet lpmark");
    drop(monitor);
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let start = lines
        .iter()
        .position(|l| l == "add table inet lpmark")
        .unwrap();
    let mut transactions = vec![Vec::new()];
    for line in &lines[start..] {
        if line.starts_with("# new generation") {
            transactions.push(Vec::new());
        } else if line == "delete table inet lpmark" {
            break;
        } else {
            transactions.last_mut().unwrap().push(line.clone());
        }
    }
    // The first one is the marker's own.
    transactions.remove(0);
    transactions.retain(|t| !t.is_empty());
    transactions
}

/// Set-up over a leftover table (a crash, a restart) replaces it in one transaction: the
/// namespace is never without our NAT, so the kernel never switches connection tracking
/// off under established flows (they would lose their TCP window state and stall for
/// good: their ACKs turn INVALID and leave unmasqueraded).
#[test]
fn set_up_over_leftovers_replaces_the_nat_table_in_one_transaction() {
    let ns = NetNs::new("nftx");
    ns.run_blocking(|| {
        veth("lan0");
        let tun = Tun::create("lp0").unwrap();
        tun.configure(1400, &[("10.77.0.2".parse().unwrap(), 32)])
            .unwrap();
        let routing = GatewayRouting {
            lan_devices: vec!["lan0".into()],
            ipv6: false,
            ..gateway_routing()
        };
        let nat = proxy_nat();
        routing.apply().unwrap();
        let state = nat.apply().unwrap();
        let transactions = nft_transactions(|| {
            routing.apply().unwrap();
            nat.apply().unwrap();
        });
        for table in ["linkpool", "linkpool_proxy"] {
            let (deleted, added) = (
                format!("delete table inet {table}"),
                format!("add table inet {table}"),
            );
            let replacing: Vec<_> = transactions
                .iter()
                .filter(|t| t.contains(&deleted))
                .collect();
            assert!(
                !replacing.is_empty(),
                "{table} was not replaced: {transactions:#?}"
            );
            assert!(
                replacing.iter().all(|t| t.contains(&added)),
                "{table} deleted in a transaction of its own: {transactions:#?}"
            );
        }
        nat.teardown(&state).unwrap();
        routing.teardown().unwrap();
    });
}
