//! A malicious neighbour, on the real daemons, real TUN, real curl and the real mesh, in
//! the three-member namespace co-op (one 10 Mbit/s line each, all sharing; c1 downloads
//! through r1's gateway, which pools r1's own line and r2's and r3's through their relays).
//! r2 turns against r1 in the middle of a download, at the door of its own line, where a
//! relay's owner could: an nftables rule in r2's namespace on what leaves its WAN for the
//! proxy as `RelayUp` (r1's datagrams, handshakes included) —
//!
//! * **drops** all of it: r1's path through r2 dies;
//! * **replays** all of it: `dup` sends every one twice (the proxy refuses the copies);
//! * **floods**: beside them, r2 sends the proxy thousands of forged envelopes of its own.
//!
//! Each time the download completes with the right bytes, r1's session with the proxy is
//! never lost (`sessions_lost` stays 0), and r1's own line and r3's keep carrying: r2's
//! mischief costs r1 only its path through r2. A rule counter proves the mischief really
//! hit r1's datagrams; the proxy's drop counters show what it refused. Stalls are printed
//! (`--nocapture`), not asserted.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::mesh::{
    Download, active_path_via, down_bytes, relayed_bytes, status, three_members_met, wait_until,
};
use linkpool_protocol::wire::{RELAY_HEADER_LEN, VERSION};
use linkpool_testbed::pool::{PROXY_PORT, Pool};
use linkpool_testbed::{Coop, netns};
use serde_json::Value;

/// `RelayUp` in the envelope's type byte (the second of the UDP payload).
const RELAY_UP: u8 = 6;
/// The nftables table of r2's mischief.
const TABLE: &str = "lpt_evil";
/// Forged envelopes of the flood.
const FLOOD: usize = 6_000;

#[derive(Clone, Copy, Debug)]
enum Mischief {
    Drop,
    Replay,
    Flood,
}

/// Installs `mischief` at r2's WAN (for `Flood`, a rule that only counts what it floods
/// beside); the rule counts the relayed datagrams it acted on.
fn turn_evil(coop: &Coop, mischief: Mischief) {
    let r2 = coop.router(2);
    let action = match mischief {
        Mischief::Drop => "drop".to_string(),
        Mischief::Replay => format!("dup to {}", r2.wans()[0].gateway().0),
        Mischief::Flood => String::new(),
    };
    let rules = format!(
        "table ip {TABLE} {{\n chain out {{\n type filter hook output priority 0; policy accept;\n \
         oifname \"{wan}\" udp dport {PROXY_PORT} @th,72,8 {RELAY_UP} counter {action}\n }}\n}}\n",
        wan = r2.wans()[0].device()
    );
    let file = coop.run_dir().join("evil.nft");
    std::fs::write(&file, rules).unwrap();
    r2.exec_ok(&["nft", "-f", file.to_str().unwrap()]).unwrap();
}

fn turn_good(coop: &Coop) {
    coop.router(2)
        .exec_ok(&["nft", "delete", "table", "ip", TABLE])
        .unwrap();
}

/// Relayed datagrams r2's rule acted on.
fn evil_count(coop: &Coop) -> u64 {
    let out = coop
        .router(2)
        .exec_ok(&["nft", "list", "table", "ip", TABLE])
        .unwrap();
    out.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The proxy's drops by reason.
fn proxy_drops(coop: &Coop, pool: &Pool) -> Value {
    let text = pool.proxy_status(coop, true).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["drops"].clone()
}

fn drop_count(drops: &Value, reason: &str) -> u64 {
    drops[reason].as_u64().unwrap_or(0)
}

/// Starts sending `count` forged `RelayUp` envelopes from r2's WAN address to the proxy,
/// about 2 000 a second: junk under r2's own envelope header, for a slot r2 never gave
/// anyone. The thread returns how many went out.
fn flood(coop: &Coop, count: usize) -> std::thread::JoinHandle<usize> {
    let r2 = coop.router(2);
    let from = SocketAddr::from((r2.wans()[0].addr_v4(), 0));
    let to = SocketAddr::from((coop.proxy().addr_v4(), PROXY_PORT));
    let ns = r2.ns().to_string();
    std::thread::spawn(move || {
        netns::within(&ns, move || {
            let socket = UdpSocket::bind(from)?;
            let mut datagram = vec![0u8; 300];
            let mut sent = 0;
            for i in 0..count {
                datagram[0] = VERSION;
                datagram[1] = RELAY_UP;
                for (k, b) in datagram[4..].iter_mut().enumerate() {
                    *b = (i * 31 + k * 7) as u8;
                }
                datagram[RELAY_HEADER_LEN] = VERSION;
                datagram[RELAY_HEADER_LEN + 1] = 4;
                if socket.send_to(&datagram, to).is_ok() {
                    sent += 1;
                }
                // About 2 000 a second: 4.8 Mbit/s of r2's 10.
                if i % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Ok(sent)
        })
        .unwrap()
    })
}

#[test]
fn a_malicious_relay_costs_its_neighbour_only_its_path() {
    let (coop, pool) = three_members_met("malicious_relay.rs");
    let lost = |coop: &Coop| {
        status(coop, &pool, 1)["sessions_lost"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(lost(&coop), 0);
    for mischief in [Mischief::Drop, Mischief::Replay, Mischief::Flood] {
        let drops_before = proxy_drops(&coop, &pool);
        let mut d = Download::start(&coop, 1, &format!("{mischief:?}.bin"), 12 << 20);
        d.wait_for_bytes(2 << 20, Duration::from_secs(30), &pool);
        let own = ["r1-wan", "r3-wan"].map(|l| down_bytes(&coop, l));
        let relayed_before = relayed_bytes(&status(&coop, &pool, 2));
        turn_evil(&coop, mischief);
        let evil_at = Instant::now();
        let flooding = matches!(mischief, Mischief::Flood).then(|| flood(&coop, FLOOD));
        let finished = d.finish(&coop, &pool, Duration::from_secs(60));
        if let Some(f) = flooding {
            let sent = f.join().unwrap();
            assert!(sent >= FLOOD * 9 / 10, "flooded {sent} of {FLOOD}");
        }
        let acted_on = evil_count(&coop);
        turn_good(&coop);
        let drops = proxy_drops(&coop, &pool);
        let refused = |reason: &str| drop_count(&drops, reason) - drop_count(&drops_before, reason);
        let carried = ["r1-wan", "r3-wan"].map(|l| down_bytes(&coop, l));
        println!(
            "{mischief:?}: {:.1} Mbit/s, longest stall {:?}, r2's rule acted on {acted_on} \
             envelopes in {:.1} s; r1's line and r3's carried {:.1} / {:.1} MB meanwhile; the proxy refused: \
             replay {}, replayed_handshake {}, bad_relay_tag {}, unknown_relay_slot {}, \
             unknown_relay {}",
            finished.mbit_s(),
            finished.longest_stall,
            evil_at.elapsed().as_secs_f64(),
            (carried[0] - own[0]) as f64 / 1e6,
            (carried[1] - own[1]) as f64 / 1e6,
            refused("replay"),
            refused("replayed_handshake"),
            refused("bad_relay_tag"),
            refused("unknown_relay_slot"),
            refused("unknown_relay"),
        );
        // The mischief really hit r1's datagrams through r2 (dropped: until r1 gave up the
        // path, then its probes); beside the flood, r1's kept going through r2.
        let relayed = relayed_bytes(&status(&coop, &pool, 2)) - relayed_before;
        match mischief {
            Mischief::Flood => assert!(relayed > 200_000, "r2 relayed {relayed} B"),
            _ => assert!(acted_on > 10, "{mischief:?}: r2's rule acted on {acted_on}"),
        }
        assert_eq!(lost(&coop), 0, "{mischief:?}: r1 lost its session");
        // Its other lines kept carrying.
        for (i, line) in ["r1-wan", "r3-wan"].iter().enumerate() {
            assert!(
                carried[i] - own[i] > 500_000,
                "{mischief:?}: {line} carried {} bytes",
                carried[i] - own[i]
            );
        }
        match mischief {
            // The rule counts each datagram and its copy.
            Mischief::Replay => assert!(
                refused("replay") > acted_on / 4,
                "the proxy took replayed datagrams: {drops}"
            ),
            Mischief::Flood => {
                let forged: u64 = ["bad_relay_tag", "unknown_relay_slot", "unknown_relay"]
                    .iter()
                    .map(|r| refused(r))
                    .sum();
                assert!(
                    forged >= (FLOOD * 8 / 10) as u64,
                    "the proxy took forged envelopes: {drops}"
                );
            }
            Mischief::Drop => {}
        }
        // r2 behaves again: r1's path through it comes back.
        wait_until(
            &coop,
            &pool,
            Duration::from_secs(15),
            "r1's path through r2 to be active again",
            || active_path_via(&coop, &status(&coop, &pool, 1), 2),
        );
    }
}
