//! What a handshake costs the proxy, on one core: a member's initiation answered in full,
//! a forged one (random keys, valid mac1) refused after its first Diffie-Hellman, and the
//! cheap refusals a flood meets first (bad mac1, a replay, a cookie reply under load).
//! Release profile. Prints figures; asserts nothing.
//!
//!   cargo bench -p linkpool-protocol --bench handshake

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{self, Client, ClientConfig};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{self, Accepted, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::{self, Limits};
use linkpool_protocol::wire::{HANDSHAKE_INIT_LEN, MAX_DATAGRAM};
use linkpool_protocol::{CipherSuite, DropReason};

const BUDGET: Duration = Duration::from_secs(1);

fn server(proxy: &SecretKey, member: &SecretKey, handshakes_per_second: u32) -> Server {
    Server::new(
        ServerConfig {
            static_key: proxy.clone(),
            members: vec![MemberKey {
                public_key: member.public_key(),
                psk: None,
                addresses: vec!["10.77.0.2".parse().unwrap()],
            }],
            limits: Limits::default(),
            handshakes_per_second,
            mtu: 1400,
            queue_slots: server::DEFAULT_QUEUE_SLOTS,
        },
        Instant::now(),
        [7; 32],
    )
}

/// Runs `f` for about [`BUDGET`]; returns calls per second.
fn rate(f: impl FnMut(u64)) -> f64 {
    rate_at_most(u64::MAX, f)
}

/// The same, for at most `max` calls (about: in steps of 16).
fn rate_at_most(max: u64, mut f: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < BUDGET && n < max {
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
    let proxy_addr: SocketAddr = "203.0.113.1:7117".parse().unwrap();
    let now = Instant::now();
    let mut reply = [0u8; MAX_DATAGRAM];
    // The proxy queues its answers (responses, cookie replies) for `poll_transmit`: the
    // daemon sends them after each datagram, and so does every figure here.
    let mut answer = |s: &mut Server| {
        while s.poll_transmit(now, &mut reply).is_some() {}
    };
    println!("proxy handshake work on one core, {BUDGET:?} per figure (release profile)");

    // Real initiations, made beforehand: only the proxy's side is timed.
    let mut client = Client::new(
        ClientConfig {
            static_key: member.clone(),
            proxy_key: proxy.public_key(),
            psk: None,
            suite: CipherSuite::Aes256Gcm,
            limits: Limits::default(),
            mtu: 1400,
            queue_slots: client::DEFAULT_QUEUE_SLOTS,
        },
        now,
        1,
        1,
    );
    client.open_path(now, proxy_addr, PathSettings::default());
    // Each answered once: a second time it would be a replay, refused by a lookup.
    let initiations: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            let mut buf = [0u8; MAX_DATAGRAM];
            client.restart_handshake(now);
            let t = client.poll_transmit(now, &mut buf).unwrap();
            buf[..t.len].to_vec()
        })
        .collect();
    let mut s = server(&proxy, &member, u32::MAX);
    let mut next = initiations.iter();
    let full = rate_at_most(initiations.len() as u64, |_| {
        let mut d = next.next().unwrap().clone();
        let r = s.handle_datagram(now, from, Some(proxy_addr), &mut d);
        debug_assert!(matches!(r, Ok(Accepted::Handshake { member: Some(_) })));
        answer(&mut s);
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
        let _ = s.handle_datagram(now, from, Some(proxy_addr), &mut forged);
        answer(&mut s);
    });
    println!("  forged (random keys, mac1)     {random:>10.0} /s");

    let mut s = server(&proxy, &member, u32::MAX);
    let mut captured = initiations[0].clone();
    s.handle_datagram(now, from, Some(proxy_addr), &mut captured.clone())
        .unwrap();
    answer(&mut s);
    let replay = rate(|_| {
        let r = s.handle_datagram(now, from, Some(proxy_addr), &mut captured);
        debug_assert_eq!(r, Err(DropReason::ReplayedHandshake));
        answer(&mut s);
    });
    println!("  replay refused                 {replay:>10.0} /s");

    let mut bad = initiations[1].clone();
    bad[40] ^= 1;
    let bad_mac1 = rate(|_| {
        let _ = s.handle_datagram(now, from, Some(proxy_addr), &mut bad);
        answer(&mut s);
    });
    println!("  bad mac1 refused               {bad_mac1:>10.0} /s");

    // Under load (a budget of 1/s, spent): every fresh initiation gets a cookie reply.
    let mut s = server(&proxy, &member, 1);
    let cookie = rate(|n| {
        let mut d = initiations[n as usize % initiations.len()].clone();
        let _ = s.handle_datagram(now, from, Some(proxy_addr), &mut d);
        answer(&mut s);
    });
    println!("  cookie reply under load        {cookie:>10.0} /s");
    println!(
        "  budget from the member figure: {} handshakes/s before cookies",
        linkpool_protocol::server::handshake_budget(Duration::from_secs_f64(1.0 / full))
    );
}
