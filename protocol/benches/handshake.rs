//! What a handshake costs the proxy, on one core: a member's initiation answered in full,
//! a forged one (random keys, valid mac1) refused after its first Diffie-Hellman, and the
//! cheap refusals a flood meets first (bad mac1, a replay, a cookie reply under load).
//! Release profile. Prints figures; asserts nothing.
//!
//!   cargo bench -p linkpool-protocol --bench handshake

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::server::{MemberKey, Server, ServerConfig};
use linkpool_protocol::session::{self, Limits};
use linkpool_protocol::wire::{HANDSHAKE_INIT_LEN, MAX_DATAGRAM};
use linkpool_protocol::{CipherSuite, DropReason, PathId};

const BUDGET: Duration = Duration::from_secs(1);

fn server(proxy: &SecretKey, member: &SecretKey, handshakes_per_second: u32) -> Server {
    Server::new(
        ServerConfig {
            static_key: proxy.clone(),
            members: vec![MemberKey {
                public_key: member.public_key(),
                psk: None,
            }],
            limits: Limits::default(),
            handshakes_per_second,
        },
        Instant::now(),
        [7; 32],
    )
}

/// Runs `f` for about [`BUDGET`]; returns calls per second.
fn rate(mut f: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < BUDGET {
        for _ in 0..16 {
            f(n);
            n += 1;
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let proxy = SecretKey::generate().unwrap();
    let member = SecretKey::generate().unwrap();
    let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let now = Instant::now();
    let mut reply = [0u8; MAX_DATAGRAM];
    println!("proxy handshake work on one core, {BUDGET:?} per figure (release profile)");

    // Real initiations, made beforehand: only the proxy's side is timed.
    let mut client = Client::new(
        ClientConfig {
            static_key: member.clone(),
            proxy_key: proxy.public_key(),
            psk: None,
            suite: CipherSuite::Aes256Gcm,
            limits: Limits::default(),
        },
        now,
        1,
        1,
    );
    client.add_path(PathId(0), now);
    let initiations: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            let mut buf = [0u8; MAX_DATAGRAM];
            client.restart_handshake(now);
            let t = client.poll_transmit(now, &mut buf).unwrap();
            buf[..t.len].to_vec()
        })
        .collect();
    let mut s = server(&proxy, &member, u32::MAX);
    let mut next = initiations.iter().cycle();
    let full = rate(|_| {
        let mut d = next.next().unwrap().clone();
        let _ = s.handle_datagram(now, from, &mut d, &mut reply);
    });
    println!("  member handshake answered      {full:>10.0} /s");

    let mut forged = [0u8; HANDSHAKE_INIT_LEN];
    let mut s = server(&proxy, &member, u32::MAX);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random = rate(|_| {
        for b in forged.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        forged[..4].copy_from_slice(&[1, 1, 0, 0]);
        session::write_mac1(&proxy.public_key(), &mut forged);
        let _ = s.handle_datagram(now, from, &mut forged, &mut reply);
    });
    println!("  forged (random keys, mac1)     {random:>10.0} /s");

    let mut s = server(&proxy, &member, u32::MAX);
    let mut captured = initiations[0].clone();
    s.handle_datagram(now, from, &mut captured.clone(), &mut reply)
        .unwrap();
    let replay = rate(|_| {
        let r = s.handle_datagram(now, from, &mut captured, &mut reply);
        debug_assert_eq!(r, Err(DropReason::ReplayedHandshake));
    });
    println!("  replay refused                 {replay:>10.0} /s");

    let mut bad = initiations[1].clone();
    bad[40] ^= 1;
    let bad_mac1 = rate(|_| {
        let _ = s.handle_datagram(now, from, &mut bad, &mut reply);
    });
    println!("  bad mac1 refused               {bad_mac1:>10.0} /s");

    // Under load (a budget of 1/s, spent): every fresh initiation gets a cookie reply.
    let mut s = server(&proxy, &member, 1);
    let cookie = rate(|n| {
        let mut d = initiations[n as usize % initiations.len()].clone();
        let _ = s.handle_datagram(now, from, &mut d, &mut reply);
    });
    println!("  cookie reply under load        {cookie:>10.0} /s");
    println!(
        "  budget from the member figure: {} handshakes/s before cookies",
        linkpool_protocol::server::handshake_budget(Duration::from_secs_f64(1.0 / full))
    );
}
