//! Pooling the neighbours' lines, on the real daemons, real TUN, real curl and the real
//! mesh (a bridge between the routers' `mesh0`, through the link emulator) in a namespace
//! co-op: three members, one 10 Mbit/s line each, all sharing. The gateways meet by their
//! hellos (with the credentials their proxy granted through their tunnels), and one
//! download from r1's LAN client goes over r1's own line and through r2's and r3's relays
//! and lines, each carrying a real share of it, counted on the emulated links, and arrives
//! whole.

mod common;

use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Direction, Topology};

const THREE_MEMBERS: &str = r#"
name = "pool3"

[[router]]
isp = { rate = "10mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "10mbit", delay = "15ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "10mbit", delay = "20ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

/// How many of a gateway's paths go through neighbours, from its status.
fn relayed_paths(status: &str) -> usize {
    status.matches("\"via\":").count() - status.matches("\"via\":null").count()
}

/// The three members' co-op with linkpool running, every member sharing, once r1 has met
/// both neighbours on the mesh (their credentials came through their tunnels) and has a
/// path through each.
fn met() -> (Coop, Pool) {
    let topology = Topology::parse(THREE_MEMBERS, "neighbours.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start_sharing(&coop).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = pool.gateway_status(&coop, 1, true).unwrap_or_default();
        if relayed_paths(&status) == 2 {
            return (coop, pool);
        }
        assert!(
            Instant::now() < deadline,
            "r1 has no paths through both neighbours:\n{status}\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_download_goes_over_the_neighbours_lines_too() {
    let (coop, pool) = met();
    let links: Vec<String> = (1..=3).map(|n| format!("r{n}-wan")).collect();
    let down = |name: &String| {
        coop.link(name)
            .unwrap()
            .stats(Direction::Downstream)
            .bytes_out
    };
    let file = coop.internet().serve_file("pooled.bin", 16 << 20).unwrap();
    let out = coop.run_dir().join("pooled.download");
    let before: Vec<u64> = links.iter().map(down).collect();
    // What relaying costs r2's gateway: its CPU time over what it relayed.
    let cpu = || linkpool_testbed::cpu_seconds(pool.gateways[1].pid());
    let relayed = || {
        let status = pool.gateway_status(&coop, 2, true).unwrap_or_default();
        ["\"up_bytes\":", "\"down_bytes\":"]
            .iter()
            .flat_map(|k| {
                status
                    .split(k)
                    .skip(1)
                    .filter_map(|s| {
                        s.split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
            .sum::<u64>()
    };
    let (cpu_before, relayed_before) = (cpu(), relayed());
    let client = coop.client(1);
    let speed = client
        .exec_ok(&[
            "curl",
            "-sS",
            "--fail",
            "-m",
            "120",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{speed_download}",
            &coop.internet().url_v4(&file.path()),
        ])
        .unwrap_or_else(|e| panic!("the download failed: {e}\n{}", pool.logs()));
    let got = client
        .exec_ok(&["sha256sum", out.to_str().unwrap()])
        .unwrap();
    assert_eq!(
        got.split_whitespace().next().unwrap_or_default(),
        file.sha256,
        "wrong bytes"
    );
    let carried: Vec<u64> = links
        .iter()
        .zip(&before)
        .map(|(l, b)| down(l) - b)
        .collect();
    let total: u64 = carried.iter().sum();
    let shares: Vec<String> = links
        .iter()
        .zip(&carried)
        .map(|(l, c)| format!("{l} {:.1} %", *c as f64 * 100.0 / total as f64))
        .collect();
    let gb = (relayed() - relayed_before) as f64 / 1e9;
    eprintln!(
        "16 MiB from r1's client through r1's, r2's and r3's lines at {:.1} Mbit/s (each line \
         10); downstream shares {}; r2's gateway: {:.1} CPU s per GB relayed ({:.0} MB)",
        speed.trim().parse::<f64>().unwrap_or(f64::NAN) * 8.0 / 1e6,
        shares.join(", "),
        (cpu() - cpu_before) / gb.max(1e-9),
        gb * 1e3
    );
    for (link, &c) in links.iter().zip(&carried) {
        assert!(
            c as f64 >= 0.1 * total as f64,
            "{link} carried {c} of {total} bytes: {}\n{}\n{}",
            shares.join(", "),
            pool.gateway_status(&coop, 1, false).unwrap_or_default(),
            pool.gateway_status(&coop, 2, false).unwrap_or_default()
        );
    }
}

/// A neighbour's router switched off mid-download (its gateway killed): the download goes
/// on over the member's own line and the other neighbour's, and arrives whole. The longest
/// stall is printed (`--nocapture`), not asserted.
#[test]
fn a_neighbour_vanishing_mid_download_costs_no_connection() {
    let (coop, pool) = met();
    let file = coop.internet().serve_file("vanish.bin", 24 << 20).unwrap();
    let out = coop.run_dir().join("vanish.download");
    let client = coop.client(1);
    let mut curl = client
        .spawn(&[
            "curl",
            "-sS",
            "--fail",
            "-m",
            "120",
            "-o",
            out.to_str().unwrap(),
            &coop.internet().url_v4(&file.path()),
        ])
        .unwrap();
    let len = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let start = Instant::now();
    while len() < 6 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the download did not get going\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r2_before = coop
        .link("r2-wan")
        .unwrap()
        .stats(Direction::Downstream)
        .bytes_out;
    // r2's router goes away.
    let cut_at = Instant::now();
    pool.gateways[1].signal(9).unwrap();
    let (mut last, mut longest) = ((len(), cut_at), Duration::ZERO);
    let status = loop {
        if let Some(status) = curl.try_wait().unwrap() {
            break status;
        }
        let (n, now) = (len(), Instant::now());
        if n != last.0 {
            longest = longest.max(now - last.1);
            last = (n, now);
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(90),
            "the download never finished\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(
        status.success(),
        "curl failed: the connection was lost\n{}\n{}",
        curl.log(),
        pool.logs()
    );
    let got = client
        .exec_ok(&["sha256sum", out.to_str().unwrap()])
        .unwrap();
    assert_eq!(
        got.split_whitespace().next().unwrap_or_default(),
        file.sha256,
        "wrong bytes"
    );
    let r2_after = coop
        .link("r2-wan")
        .unwrap()
        .stats(Direction::Downstream)
        .bytes_out
        - r2_before;
    let r3 = coop
        .link("r3-wan")
        .unwrap()
        .stats(Direction::Downstream)
        .bytes_out;
    eprintln!(
        "r2 switched off mid-download: longest stall {} ms (10 ms bins); r2's line carried {} kB \
         more (datagrams in flight and the proxy's probes), r3's {} MB in all",
        longest.as_millis().div_ceil(10) * 10,
        r2_after / 1000,
        r3 / 1_000_000
    );
    assert!(r3 > 2 << 20, "the other neighbour carried only {r3} bytes");
}

/// A device on the mesh that is not a member gets nothing relayed: what it sends to a
/// member's relay port, shaped as linkpool's own datagrams, is refused there and counted,
/// and nothing of it reaches the proxy.
#[test]
fn a_device_on_the_mesh_that_is_not_a_member_gets_nothing_relayed() {
    let (coop, pool) = met();
    // A stranger plugged into the mesh's bridge, with an address on its subnet.
    let mesh = coop.router(2).mesh().clone();
    let stranger = std::net::Ipv4Addr::from(u32::from(mesh.v4) & !0xff | 250);
    let ns = coop.mesh_segment().ns().to_string();
    coop.exec(
        &ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{stranger}/{}", mesh.v4_prefix),
            "dev",
            "br0",
        ],
    )
    .unwrap();
    let unknown = |status: &str, reason: &str| -> u64 {
        status
            .split(&format!("\"{reason}\":"))
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    };
    let proxy_before = pool.proxy_status(&coop, true).unwrap();
    let relay = std::net::SocketAddr::from((mesh.v4, 7118));
    const SENT: u64 = 200;
    linkpool_testbed::netns::within(&ns, || {
        let socket = std::net::UdpSocket::bind((stranger, 0))?;
        for i in 0..SENT {
            // A transport header (version 2, type 4, path, receiver index, counter), then
            // what would be ciphertext.
            let mut d = vec![2u8, 4, 0, 1];
            d.extend_from_slice(&(i as u32).to_be_bytes());
            d.extend_from_slice(&i.to_be_bytes());
            d.extend_from_slice(&[0x5a; 100]);
            socket.send_to(&d, relay)?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r2 = pool.gateway_status(&coop, 2, true).unwrap();
    assert!(
        unknown(&r2, "not_a_neighbour") >= SENT,
        "r2 did not refuse them all:\n{r2}"
    );
    assert!(
        !r2.contains(&format!("\"address\":\"{stranger}:")),
        "r2 relays for the stranger:\n{r2}"
    );
    let proxy_after = pool.proxy_status(&coop, true).unwrap();
    for reason in [
        "unknown_session",
        "unknown_relay",
        "bad_relay_tag",
        "bad_tag",
    ] {
        assert_eq!(
            unknown(&proxy_after, reason),
            unknown(&proxy_before, reason),
            "the proxy saw some of the stranger's datagrams ({reason})"
        );
    }
}
