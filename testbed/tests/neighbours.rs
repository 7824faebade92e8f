//! Pooling the neighbours' lines, on the real daemons, real TUN, real curl and the real
//! mesh (a bridge between the routers' `mesh0`, through the link emulator) in a namespace
//! co-op: three members, one 10 Mbit/s line each, all sharing. The gateways meet by their
//! hellos (with the credentials their proxy granted through their tunnels), and one
//! download from r1's LAN client goes over r1's own line and through r2's and r3's relays
//! and lines, each carrying a real share of it, counted on the emulated links, and arrives
//! whole.

mod common;

use std::time::Duration;

use common::mesh::{
    Download, down_bytes, plug_in_a_stranger, relayed_bytes, status, three_members_met,
};

#[test]
fn a_download_goes_over_the_neighbours_lines_too() {
    let (coop, pool) = three_members_met("neighbours.rs");
    let links: Vec<String> = (1..=3).map(|n| format!("r{n}-wan")).collect();
    let before: Vec<u64> = links.iter().map(|l| down_bytes(&coop, l)).collect();
    // What relaying costs r2's gateway: its CPU time over what it relayed.
    let cpu = || linkpool_testbed::cpu_seconds(pool.gateways[1].pid());
    let relayed = || relayed_bytes(&status(&coop, &pool, 2));
    let (cpu_before, relayed_before) = (cpu(), relayed());
    let d = Download::start(&coop, 1, "pooled.bin", 16 << 20);
    let done = d.finish(&coop, &pool, Duration::from_secs(120));
    let carried: Vec<u64> = links
        .iter()
        .zip(&before)
        .map(|(l, b)| down_bytes(&coop, l) - b)
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
        done.mbit_s(),
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
    let (coop, pool) = three_members_met("neighbours.rs");
    let mut d = Download::start(&coop, 1, "vanish.bin", 24 << 20);
    d.wait_for_bytes(6 << 20, Duration::from_secs(30), &pool);
    let (r2_before, r3_before) = (down_bytes(&coop, "r2-wan"), down_bytes(&coop, "r3-wan"));
    // r2's router goes away.
    pool.gateways[1].signal(9).unwrap();
    let done = d.finish(&coop, &pool, Duration::from_secs(90));
    let r2 = down_bytes(&coop, "r2-wan") - r2_before;
    let r3 = down_bytes(&coop, "r3-wan") - r3_before;
    eprintln!(
        "r2 switched off mid-download: longest stall {} ms; r2's line carried {} kB more \
         (datagrams in flight and the proxy's probes), r3's {} MB",
        done.longest_stall.as_millis(),
        r2 / 1000,
        r3 / 1_000_000
    );
    assert!(
        r3 > 2 << 20,
        "the other neighbour carried only {r3} bytes after"
    );
}

/// A device on the mesh that is not a member gets nothing relayed: what it sends to a
/// member's relay port, shaped as linkpool's own datagrams, is refused there and counted,
/// and nothing of it reaches the proxy.
#[test]
fn a_device_on_the_mesh_that_is_not_a_member_gets_nothing_relayed() {
    let (coop, pool) = three_members_met("neighbours.rs");
    // A stranger plugged into the mesh's bridge, with an address on its subnet.
    let (stranger, ns) = plug_in_a_stranger(&coop);
    let unknown = |status: &str, reason: &str| -> u64 {
        status
            .split(&format!("\"{reason}\":"))
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    };
    let proxy_before = pool.proxy_status(&coop, true).unwrap();
    let relay = std::net::SocketAddr::from((coop.router(2).mesh().v4, 7118));
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
