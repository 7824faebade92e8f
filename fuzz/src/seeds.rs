//! Seed inputs made from real messages: what the protocol core itself writes, and the
//! repository's own config files. `cargo run --example seeds` writes them out.

use std::path::Path;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use linkpool_protocol::CipherSuite;
use linkpool_protocol::bundle::MemberBundle;
use linkpool_protocol::client::{Client, ClientConfig};
use linkpool_protocol::keys::{SecretKey, SharedSecret};
use linkpool_protocol::mesh::NEIGHBOUR_HELLO_INTERVAL;
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{Accepted, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{self, MAX_DATAGRAM, MessageType};

use crate::session::{Pair, downstream, ipv4_packet, ipv6_packet, script};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target. `repo` is the repository root, for the config files kept
/// there (missing ones are skipped).
pub fn all(repo: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    wire(&mut out);
    frames(&mut out);
    bundles(&mut out);
    mesh(&mut out);
    for (name, bytes) in crate::relay::Relayed::new().seeds() {
        out.push(("relay_envelope", name, bytes));
    }
    ip(&mut out);
    session(&mut out);
    configs(repo, &mut out);
    out
}

fn push(out: &mut Vec<Seed>, target: &'static str, name: &str, bytes: Vec<u8>) {
    out.push((target, name.to_string(), bytes));
}

/// Datagrams of each type seen while connecting, kept for `wire_message`.
const WIRE_PER_TYPE: usize = 3;

/// Handshake initiation, response, cookie reply, transport packets and a relay envelope,
/// as a real client and server write them.
fn wire(out: &mut Vec<Seed>) {
    let pair = Pair::new();
    let (up, down) = pair.baseline();
    for (dir, datagrams) in [("up", &up), ("down", &down)] {
        let mut per_type = [0usize; 256];
        for (i, d) in datagrams.iter().enumerate() {
            let n = &mut per_type[usize::from(d[1])];
            if *n < WIRE_PER_TYPE {
                *n += 1;
                push(
                    out,
                    "wire_message",
                    &format!("{dir}-{i}-type{}", d[1]),
                    d.to_vec(),
                );
            }
        }
    }
    if let Some(cookie) = cookie_reply() {
        push(out, "wire_message", "cookie-reply", cookie);
    }
    // A relay envelope around the first upstream transport packet.
    if let Some(inner) = up.iter().find(|d| d[1] == MessageType::Transport as u8) {
        let mut env = vec![wire::VERSION, MessageType::RelayUp as u8, 0, 0];
        env.extend([0, 0, 0, 9, 0, 0, 0, 1]);
        env.extend(*inner);
        env.extend([0xa5; 16]);
        push(out, "wire_message", "relay-up", env);
    }
    let (discovery, hello) = mesh_hellos();
    push(out, "wire_message", "mesh-discovery", discovery);
    push(out, "wire_message", "neighbour-hello", hello);
}

/// A cookie reply from a proxy that thinks itself under load (one handshake per second,
/// several initiations at once).
fn cookie_reply() -> Option<Vec<u8>> {
    let now = Instant::now();
    let proxy = SecretKey::from_bytes([0x55; 32]);
    let member = SecretKey::from_bytes([0x66; 32]);
    let mut server = Server::new(
        ServerConfig {
            static_key: proxy.clone(),
            members: vec![MemberKey {
                public_key: member.public_key(),
                psk: None,
                addresses: vec!["10.77.0.9".parse().expect("literal")],
            }],
            limits: Limits::default(),
            handshakes_per_second: 1,
            mtu: 1280,
            queue_slots: 4,
        },
        now,
        [3; 32],
    );
    let from = "192.0.2.50:1000".parse().expect("literal");
    let proxy_addr = "192.0.2.1:7117".parse().expect("literal");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for seed in 0..4 {
        let mut client = Client::new(
            ClientConfig {
                static_key: member.clone(),
                proxy_key: proxy.public_key(),
                psk: None,
                suite: CipherSuite::ChaCha20Poly1305,
                limits: Limits::default(),
                mtu: 1280,
                queue_slots: 4,
            },
            now,
            1_700_000_000_000_000 + seed,
            seed,
        );
        client.open_path(now, proxy_addr, PathSettings::default());
        let t = client.poll_transmit(now, &mut buf)?;
        let r = server.handle_datagram(now, from, None, &mut buf[..t.len]);
        // The answer to this initiation, whatever it is, leaves the proxy's queue.
        let answer = server.poll_transmit(now, &mut buf);
        if let (Ok(Accepted::Handshake { member: None }), Some(a)) = (r, answer) {
            return Some(buf[..a.len].to_vec());
        }
    }
    None
}

/// Plaintexts of transport packets, written by hand from `frame.rs`'s format: packet
/// number (u32), then frames (variable-length integers as in RFC 9000).
fn frames(out: &mut Vec<Seed>) {
    let ipv4_header = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 2, 192, 0, 2, 1,
    ];
    // Packet number 7, a ping.
    push(out, "frame_decode", "ping", vec![0, 0, 0, 7, 0x01]);
    // Packet number 42, an ack of path 1: largest 100 (2-byte varint), delay 250 µs,
    // received at 5 s (4-byte varint), 2 more ranges; first 10 (90..=100), then gap 29
    // and length 9 (50..=59), gap 37 and length 1 (10..=11); then a ping.
    let mut ack = vec![0, 0, 0, 42, 0x02, 0x00, 0x01, 0x40, 100, 0x40, 250];
    ack.extend([0x80, 0x4c, 0x4b, 0x40, 2, 10, 29, 9, 37, 1, 0x01]);
    push(out, "frame_decode", "ack-ping", ack);
    // Packet number 1: a receipt for path 2 (10 packets, 14000 bytes), then an IPv4
    // packet.
    let mut packet = vec![0, 0, 0, 1, 0x03, 0x00, 0x02, 10, 0x76, 0xb0, 0x04];
    packet.extend(ipv4_header);
    push(out, "frame_decode", "receipt-packet", packet);
    // Packet number just below the 32-bit wrap: a spread packet, sequence 0xdeadbeef.
    let mut spread = vec![0xff, 0xff, 0xff, 0xfe, 0x05, 0xde, 0xad, 0xbe, 0xef];
    spread.extend(ipv4_header);
    push(out, "frame_decode", "spread-packet", spread);
    // Padding, an extension frame (type 0x41, 2 bytes) a newer build may send, a ping,
    // more padding.
    push(
        out,
        "frame_decode",
        "padding-extension",
        vec![
            0, 0, 0, 5, 0x00, 0x00, 0x41, 0x02, 0xaa, 0xbb, 0x01, 0x00, 0x00,
        ],
    );
    // An ack of path 0xbeef whose largest (7 * 2^32 + 3) takes an 8-byte varint, one
    // range of 4, no delay; a receipt with 8-byte counts; a ping.
    let mut big = vec![0, 0, 0, 3, 0x02, 0xbe, 0xef];
    big.extend([0xc0, 0, 0, 0x07, 0, 0, 0, 0x03, 0, 0, 0, 3]);
    big.extend([0x03, 0xbe, 0xef]);
    big.extend([0xc0, 0, 0, 0x01, 0, 0, 0, 0]);
    big.extend([0xc0, 0, 0, 0x02, 0, 0, 0, 0]);
    big.push(0x01);
    push(out, "frame_decode", "ack-receipt-8-byte", big);
    // Everything at once: two acks (paths 1 and 2), a receipt, a ping, a packet.
    let mut all = vec![0, 0, 0x12, 0x34];
    all.extend([0x02, 0x00, 0x01, 0x05, 0x00, 0x00, 0x00, 0x05]);
    all.extend([
        0x02, 0x00, 0x02, 0x40, 0x80, 0x0a, 0x14, 0x01, 0x04, 0x00, 0x70,
    ]);
    all.extend([0x03, 0x00, 0x01, 0x01, 0x40, 0x40, 0x01, 0x04]);
    all.extend(ipv4_header);
    push(out, "frame_decode", "all-frames", all);
}

fn sample_bundle(psk: bool, v6: bool) -> MemberBundle {
    MemberBundle {
        member: "alice".into(),
        private_key: SecretKey::from_bytes([1; 32]),
        proxy_public_key: SecretKey::from_bytes([2; 32]).public_key(),
        proxy_endpoints: vec!["203.0.113.10:7117".into(), "[2001:db8::10]:7117".into()],
        cipher: if psk {
            CipherSuite::ChaCha20Poly1305
        } else {
            CipherSuite::Aes256Gcm
        },
        psk: psk.then(|| SharedSecret::from_bytes([3; 32])),
        addresses: if v6 {
            vec![
                "10.77.0.2".parse().expect("literal"),
                "fd77::2".parse().expect("literal"),
            ]
        } else {
            vec!["10.77.0.2".parse().expect("literal")]
        },
    }
}

/// Bundles: the `LP1:` form as rendered (first byte `R`: parsed as is), and the decoded
/// text (first byte `T`: the target base64-wraps it, so the fuzzer works on the text).
fn bundles(out: &mut Vec<Seed>) {
    for (i, (psk, v6)) in [(false, false), (true, true)].into_iter().enumerate() {
        let rendered = sample_bundle(psk, v6).render();
        let mut raw = b"R".to_vec();
        raw.extend(rendered.as_bytes());
        push(out, "bundle_parse", &format!("rendered-{i}"), raw);
        let text = STANDARD
            .decode(&rendered[linkpool_protocol::bundle::BUNDLE_PREFIX.len()..])
            .expect("rendered bundle is base64");
        let mut t = b"T".to_vec();
        t.extend(text);
        push(out, "bundle_parse", &format!("text-{i}"), t);
    }
}

/// A's discovery hello and a neighbour hello A wrote for B (not yet seen by B), from
/// the pair of `src/mesh.rs`.
fn mesh_hellos() -> (Vec<u8>, Vec<u8>) {
    let mut m = crate::mesh::met();
    let mut buf = [0u8; MAX_DATAGRAM];
    let at = m.start + NEIGHBOUR_HELLO_INTERVAL;
    let (mut discovery, mut hello) = (Vec::new(), Vec::new());
    while let Some(t) = m.a.poll_hello(at, crate::mesh::T0, &mut buf) {
        match t.len {
            wire::MESH_DISCOVERY_LEN => discovery = buf[..t.len].to_vec(),
            wire::NEIGHBOUR_HELLO_LEN => hello = buf[..t.len].to_vec(),
            _ => {}
        }
    }
    if discovery.is_empty() {
        let mut d = vec![0u8; wire::MESH_DISCOVERY_LEN];
        wire::write_mesh_discovery(
            7118,
            &crate::mesh::OFFER,
            m.a.credential().as_bytes(),
            None,
            &mut d,
        );
        discovery = d;
    }
    (discovery, hello)
}

/// Mesh seeds. `mesh_hello`: A's next hello to B (first byte even: given to B as is) and a
/// script (odd: hellos both ways, a replay, a flipped bit, another address, time passing
/// past the silence timeout and back). `mesh_discovery`: A's discovery hello (even) and a
/// new member's fields (odd). `mesh_credential`: A's credential (even) and fields (odd).
fn mesh(out: &mut Vec<Seed>) {
    let (discovery, hello) = mesh_hellos();
    let mut raw = vec![0u8];
    raw.extend(&hello);
    push(out, "mesh_hello", "fresh", raw);
    let script = vec![
        1u8, 0, 25, 1, 25, 2, 0, 3, 40, 4, 0, 4, 1, 4, 2, 5, 30, 0, 10, 1, 10,
    ];
    push(out, "mesh_hello", "script", script);
    let mut raw = vec![0u8];
    raw.extend(&discovery);
    push(out, "mesh_discovery", "member-a", raw);
    // Member 0x2a, key 0x33.., issued at the proxy's now, for 900 s, no bit flipped.
    let mut fields = vec![1u8, 0, 0, 0, 0x2a];
    fields.extend([0x33; 32]);
    fields.extend([0x80, 0x00, 0x03, 0x84, 0xff, 0xff]);
    push(out, "mesh_discovery", "new-member", fields);
    let mut raw = vec![0u8];
    raw.extend(&discovery[16..]);
    push(out, "mesh_credential", "member-a", raw);
    let mut fields = vec![1u8, 0, 0, 0, 7];
    fields.extend([0x33; 32]);
    fields.extend(crate::mesh::T0.to_be_bytes());
    fields.extend([0x03, 0x84, 0x01, 0x00]);
    push(out, "mesh_credential", "fields", fields);
}

fn ip(out: &mut Vec<Seed>) {
    push(out, "ip_check", "ipv4-udp", ipv4_packet(60, 1));
    push(out, "ip_check", "ipv6-udp", ipv6_packet(80));
    let mut opts = ipv4_packet(64, 2);
    opts[0] = 0x46;
    push(out, "ip_check", "ipv4-options", opts);
}

/// Scripts for `session_pair`: real traffic, replays, tampering, time passing, and (mode
/// byte odd) handshakes: cookies, forged and twin initiations, losses, sleeps.
fn session(out: &mut Vec<Seed>) {
    let mut s = script::start(false);
    script::seal_up(&mut s, &ipv4_packet(100, 1));
    script::seal_down(&mut s, &downstream(&ipv6_packet(120)));
    script::advance(&mut s, 125); // 1 s, live
    push(out, "session_pair", "traffic", s);

    let mut s = script::start(false);
    script::seal_up(&mut s, &ipv4_packet(80, 3));
    // The datagram just sealed is the first recent capture after the baseline.
    for idx in 0..8 {
        script::mutate(&mut s, 0, idx, 0, 0, &[]);
        script::mutate(&mut s, 1, idx, 0, 0, &[]);
    }
    push(out, "session_pair", "replays", s);

    let mut s = script::start(false);
    for idx in 0..4 {
        script::mutate(&mut s, 0, idx, 20, 0, &[0x01]);
        script::mutate(&mut s, 1, idx, 3, 0, &[0x80]);
        script::mutate(&mut s, 0, idx, 0, 5, &[]);
        script::extend(&mut s, 1, idx, &[0; 8]);
    }
    push(out, "session_pair", "tamper", s);

    let mut s = script::start(true);
    script::advance(&mut s, 1000); // 8 s live (the most an input gets)
    script::seal_up(&mut s, &ipv4_packet(60, 9));
    script::advance(&mut s, 0x8000 | 250); // 8 s asleep: past dead-after
    script::seal_up(&mut s, &ipv4_packet(60, 10));
    script::pump(&mut s);
    script::advance(&mut s, 0x8000 | 25_000); // 800 s asleep: past reject-after-time
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 11)));
    script::pump(&mut s);
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 12)));
    push(out, "session_pair", "time", s);

    // A datagram sealed this input (the first capture after the baseline) with its
    // counter moved ahead: fresh for the replay window, so the AEAD must catch it.
    let mut s = script::start(false);
    script::seal_up(&mut s, &ipv4_packet(60, 4));
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 5)));
    for idx in 0..12 {
        script::mutate(&mut s, 0, idx, 15, 0, &[0x01]);
        script::mutate(&mut s, 1, idx, 15, 0, &[0x01]);
        // The packet number, right after the header: the AEAD covers it too.
        script::mutate(&mut s, 1, idx, 19, 0, &[0x01]);
    }
    push(out, "session_pair", "tamper-fresh", s);

    let mut s = script::start(false);
    script::seal_up(&mut s, &[0x45, 0, 0, 99]);
    script::seal_down(&mut s, &[0x60; 41]);
    // A packet from someone else's address (refused by the proxy: spoofed), one for an
    // address no member has, one too large for the tunnel.
    let mut spoofed = ipv4_packet(60, 6);
    spoofed[15] = 3;
    script::seal_up(&mut s, &spoofed);
    script::seal_down(&mut s, &ipv4_packet(60, 7));
    script::seal_up(&mut s, &ipv4_packet(1500, 8));
    script::to_server(&mut s, 2, &[wire::VERSION, 4, 0, 0, 0, 0, 0, 1]);
    script::to_client(&mut s, 1, &[wire::VERSION, 4, 0, 0]);
    // Version 1's data type.
    script::to_client(&mut s, 0, &[1, 4, 0, 0, 0, 0, 0, 1]);
    push(out, "session_pair", "garbage", s);

    // The uplinks' NAT bindings move (one to the other port, one to IPv6) while traffic
    // flows: the proxy answers each path at its new address.
    let mut s = script::start(false);
    script::seal_up(&mut s, &ipv4_packet(60, 20));
    script::rebind(&mut s, 0);
    script::seal_up(&mut s, &ipv4_packet(60, 21));
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 22)));
    script::rebind(&mut s, 1);
    script::advance(&mut s, 25); // 200 ms live: pings on both paths
    script::seal_down(&mut s, &downstream(&ipv6_packet(90)));
    // A datagram from before the move, late.
    script::mutate(&mut s, 0, 0xff, 0, 0, &[]);
    push(out, "session_pair", "roaming", s);

    // An uplink's path is closed and a new one opened: the proxy learns it from its first
    // packet and keeps the old one until it dies.
    let mut s = script::start(false);
    script::repath(&mut s, 1);
    script::seal_up(&mut s, &ipv4_packet(60, 30));
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 31)));
    script::advance(&mut s, 250); // 2 s live
    script::repath(&mut s, 0);
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 32)));
    script::advance(&mut s, 63); // 0.5 s live
    script::seal_up(&mut s, &ipv4_packet(60, 33));
    push(out, "session_pair", "repath", s);

    // Two handshakes at one instant: the proxy (2 a second) answers the second with a
    // cookie, and the gateway retries with it at once.
    let mut s = script::start(true);
    script::rekey(&mut s);
    script::pump(&mut s);
    script::rekey(&mut s);
    script::pump(&mut s);
    push(out, "session_pair", "cookie", s);

    // Everything the gateway sends is lost for 8 s: its probes go unanswered (suspect,
    // fast probes, a handshake at once), its handshakes too, and after 6 s the proxy is
    // dead to it. Then the last datagram it sent arrives late.
    let mut s = script::start(true);
    script::lose(&mut s, 255, 0);
    script::advance(&mut s, 1000); // 8 s live
    script::mutate(&mut s, 0, 0xff, 0, 0, &[]);
    script::pump(&mut s);
    push(out, "session_pair", "loss", s);

    // The answer to the gateway's handshake is lost; it arrives after the retry went out.
    let mut s = script::start(true);
    script::lose(&mut s, 0, 1);
    script::rekey(&mut s);
    script::pump(&mut s);
    script::advance(&mut s, 125); // 1 s live: the retry
    script::mutate(&mut s, 1, 0, 0, 0, &[]);
    push(out, "session_pair", "late-response", s);

    // A second router with the same keys: one whose clock is behind (stale), one ahead
    // (accepted: its keys wait as the member's pending ones).
    let mut s = script::start(true);
    script::twin(&mut s, 1, -5000);
    script::advance(&mut s, 125); // 1 s live: the proxy's load limit refills
    script::twin(&mut s, 2, 500);
    script::seal_up(&mut s, &ipv4_packet(60, 13));
    script::seal_down(&mut s, &downstream(&ipv4_packet(60, 14)));
    push(out, "session_pair", "twin", s);

    let pair = Pair::new();
    let (up, down) = pair.baseline();
    if let Some(init) = up.first() {
        // An initiation of another run (older than any the proxy accepted: stale), before
        // and after the gateway slept; the gateway's own first initiation replayed (seen:
        // refused by a lookup).
        let mut s = script::start(true);
        script::to_server(&mut s, 1, init);
        script::advance(&mut s, 0x8000 | 250); // 8 s asleep
        script::to_server(&mut s, 0, init);
        script::pump(&mut s);
        script::mutate(&mut s, 0, 0, 0, 0, &[]);
        push(out, "session_pair", "handshake-replay", s);

        // The gateway's first initiation with a byte of its ephemeral changed and a valid
        // mac1 (anyone can compute it): Noise fails at the static key. Two use up the
        // proxy's load limit, so the second and the gateway's handshake after them get
        // cookies; the gateway retries with its cookie.
        let mut s = script::start(true);
        for at in [8 + 5, 8 + 6] {
            script::forge(&mut s, 0, 0, at, &[0x40]);
        }
        script::rekey(&mut s);
        script::pump(&mut s);
        push(out, "session_pair", "forge", s);
    }
    if let Some(resp) = down.first() {
        let mut s = script::start(false);
        script::to_client(&mut s, 0, resp);
        push(out, "session_pair", "response-replay", s);
    }
}

/// The repository's own config files.
fn configs(repo: &Path, out: &mut Vec<Seed>) {
    let uci = [
        "openwrt/linkpool/files/linkpool.config",
        "gateway/tests/data/openwrt.uci",
        "gateway/tests/data/typo.uci",
        "gateway/tests/data/unterminated.uci",
    ];
    for f in uci {
        if let Ok(b) = std::fs::read(repo.join(f)) {
            let name = f.rsplit('/').next().unwrap_or(f);
            push(out, "uci_parse", name, b);
        }
    }
    if let Ok(b) = std::fs::read(repo.join("gateway/linkpool.example.toml")) {
        push(out, "gateway_toml", "linkpool.example.toml", b);
    }
}
