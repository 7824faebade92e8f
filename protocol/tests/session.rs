//! Gateway and proxy sessions driven in one process over a simulated link: time is
//! stepped by hand, so every run is the same.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, Received, SEAL_OFFSET};
use linkpool_protocol::keys::{SecretKey, SharedSecret};
use linkpool_protocol::server::{MemberId, MemberKey, Server, ServerConfig, ServerEvent};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{self, MAX_DATAGRAM};
use linkpool_protocol::{CipherSuite, DropReason, PathId};

const P0: PathId = PathId(0);

fn ipv4(len: usize, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 77, 0, 2]);
    p[16..20].copy_from_slice(&[192, 0, 2, 1]);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[20..24].try_into().unwrap())
}

/// One member, one proxy, one path with a fixed one-way delay.
struct Net {
    proxy_key: SecretKey,
    members: Vec<MemberKey>,
    limits: Limits,
    now: Instant,
    client: Client,
    server: Server,
    member_addr: SocketAddr,
    delay: Duration,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    /// IP packets that came out of each side.
    at_server: Vec<Vec<u8>>,
    at_client: Vec<Vec<u8>>,
    /// Attack traffic the proxy gets before the member's, a burst per step.
    flood: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Datagrams the client's own machinery sent (handshakes, probes, receipts, acks).
    client_control_sent: usize,
}

impl Net {
    fn new(suite: CipherSuite, psk: bool, limits: Limits) -> Net {
        let now = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let member_key = SecretKey::generate().unwrap();
        let psk = psk.then(|| SharedSecret::generate().unwrap());
        let members = vec![MemberKey {
            public_key: member_key.public_key(),
            psk: psk.clone(),
        }];
        let server = server(&proxy_key, members.clone(), limits, now, 9);
        let mut client = Client::new(
            ClientConfig {
                static_key: member_key,
                proxy_key: proxy_key.public_key(),
                psk,
                suite,
                limits,
            },
            now,
            1_700_000_000_000_000,
            1,
        );
        client.add_path(P0, now);
        Net {
            proxy_key,
            members,
            limits,
            now,
            client,
            server,
            member_addr: "198.51.100.7:40000".parse().unwrap(),
            delay: Duration::from_millis(15),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            at_server: Vec::new(),
            at_client: Vec::new(),
            flood: VecDeque::new(),
            client_control_sent: 0,
        }
    }

    /// Moves time forward by `step`, delivering what is due and running both timers.
    fn step(&mut self, step: Duration) {
        self.now += step;
        let now = self.now;
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(t) = self.client.poll_transmit(now, &mut buf) {
            self.client_control_sent += 1;
            self.to_server
                .push_back((now + self.delay, buf[..t.len].to_vec()));
        }
        for (from, mut d) in self.flood.drain(..self.flood.len().min(100)) {
            let mut reply = [0u8; MAX_DATAGRAM];
            let _ = self.server.handle_datagram(now, from, &mut d, &mut reply);
        }
        while self.to_server.front().is_some_and(|(t, _)| *t <= now) {
            let (_, mut d) = self.to_server.pop_front().unwrap();
            let mut reply = [0u8; MAX_DATAGRAM];
            match self
                .server
                .handle_datagram(now, self.member_addr, &mut d, &mut reply)
            {
                Ok(ServerEvent::Packet { range, .. }) => self.at_server.push(d[range].to_vec()),
                Ok(ServerEvent::Reply { len, .. }) => self
                    .to_client
                    .push_back((now + self.delay, reply[..len].to_vec())),
                _ => {}
            }
        }
        while self.to_client.front().is_some_and(|(t, _)| *t <= now) {
            let (_, mut d) = self.to_client.pop_front().unwrap();
            if let Ok(Received::Packet(r)) = self.client.handle_datagram(now, P0, &mut d) {
                self.at_client.push(d[r].to_vec());
            }
        }
    }

    fn connect(&mut self) {
        for _ in 0..100 {
            self.step(Duration::from_millis(5));
            if self.client.is_connected() && self.server.member(MemberId(0)).unwrap().connected {
                return;
            }
        }
        panic!("no session after 500 ms");
    }

    fn send_up(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(packet);
        let n = self
            .client
            .seal_packet(self.now, P0, &mut buf, packet.len())?;
        self.to_server
            .push_back((self.now + self.delay, buf[..n].to_vec()));
        Ok(())
    }

    fn send_down(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(packet);
        let (to, n) = self
            .server
            .seal_packet(self.now, MemberId(0), &mut buf, packet.len())?;
        assert_eq!(to, self.member_addr);
        self.to_client
            .push_back((self.now + self.delay, buf[..n].to_vec()));
        Ok(())
    }

    /// A sealed upstream datagram, not sent.
    fn sealed_up(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(packet);
        let n = self
            .client
            .seal_packet(self.now, P0, &mut buf, packet.len())
            .unwrap();
        buf[..n].to_vec()
    }

    fn deliver_up(&mut self, mut d: Vec<u8>) -> Result<ServerEvent, DropReason> {
        let mut reply = [0u8; MAX_DATAGRAM];
        self.server
            .handle_datagram(self.now, self.member_addr, &mut d, &mut reply)
    }
}

#[test]
fn handshake_and_round_trip_with_both_ciphers() {
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        for psk in [false, true] {
            let mut net = Net::new(suite, psk, Limits::default());
            net.connect();
            for i in 0..50 {
                net.send_up(&ipv4(100 + i * 20, i as u32)).unwrap();
                net.send_down(&ipv4(1400 - i * 20, 1000 + i as u32))
                    .unwrap();
            }
            net.step(Duration::from_millis(20));
            assert_eq!(net.at_server.len(), 50, "{suite:?} psk={psk}");
            assert_eq!(net.at_client.len(), 50, "{suite:?} psk={psk}");
            for (i, p) in net.at_server.iter().enumerate() {
                assert_eq!(p, &ipv4(100 + i * 20, i as u32));
            }
            for (i, p) in net.at_client.iter().enumerate() {
                assert_eq!(p, &ipv4(1400 - i * 20, 1000 + i as u32));
            }
            assert_eq!(net.server.stats().drops.total(), 0);
            assert_eq!(net.client.stats().drops.total(), 0);
        }
    }
}

#[test]
fn wrong_psk_or_unknown_member_never_connects() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, true, Limits::default());
    // The proxy expects a different PSK for this member.
    let mut members = net.members.clone();
    members[0].psk = Some(SharedSecret::generate().unwrap());
    net.server = server(&net.proxy_key, members, net.limits, net.now, 2);
    for _ in 0..300 {
        net.step(Duration::from_millis(10));
    }
    assert!(!net.client.is_connected(), "PSK mismatch must not connect");
    assert!(net.client.stats().drops.get(DropReason::HandshakeFailed) > 0);

    // A static key that is not a member at all.
    net.client = Client::new(
        ClientConfig {
            static_key: SecretKey::generate().unwrap(),
            proxy_key: net.proxy_key.public_key(),
            psk: None,
            suite: CipherSuite::Aes256Gcm,
            limits: net.limits,
        },
        net.now,
        1,
        3,
    );
    net.client.add_path(P0, net.now);
    for _ in 0..300 {
        net.step(Duration::from_millis(10));
    }
    assert!(!net.client.is_connected());
    assert!(net.server.stats().drops.get(DropReason::UnknownMember) > 0);
}

#[test]
fn out_of_order_within_window_accepted_replays_rejected() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let sealed: Vec<Vec<u8>> = (0..3000).map(|i| net.sealed_up(&ipv4(60, i))).collect();
    // Deliver in reverse: everything is within the window, each arrives once.
    for d in sealed.iter().rev() {
        assert!(matches!(
            net.deliver_up(d.clone()),
            Ok(ServerEvent::Packet { .. })
        ));
    }
    // Every one of them again: replays.
    for d in sealed.iter().step_by(97) {
        assert_eq!(net.deliver_up(d.clone()), Err(DropReason::Replay));
    }
    let replays = net.server.stats().drops.get(DropReason::Replay);
    assert_eq!(replays, sealed.iter().step_by(97).count() as u64);
}

#[test]
fn packets_older_than_the_window_rejected() {
    let mut net = Net::new(CipherSuite::ChaCha20Poly1305, false, Limits::default());
    net.connect();
    let first = net.sealed_up(&ipv4(60, 0));
    let mut last = None;
    for i in 0..(linkpool_protocol::REPLAY_WINDOW + 10) {
        last = Some(net.sealed_up(&ipv4(60, i as u32)));
    }
    net.deliver_up(last.unwrap()).unwrap();
    assert_eq!(net.deliver_up(first), Err(DropReason::TooOld));
}

#[test]
fn malformed_datagrams_are_counted_by_reason() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let good = net.sealed_up(&ipv4(200, 1));

    let mut tampered = good.clone();
    tampered[40] ^= 1;
    assert_eq!(net.deliver_up(tampered), Err(DropReason::BadTag));

    let mut tampered_header = good.clone();
    tampered_header[2] ^= 1; // path id is authenticated
    assert_eq!(net.deliver_up(tampered_header), Err(DropReason::BadTag));

    let truncated = good[..20].to_vec();
    assert_eq!(net.deliver_up(truncated), Err(DropReason::TooShort));
    assert_eq!(
        net.deliver_up(good[..3].to_vec()),
        Err(DropReason::TooShort)
    );

    let oversized = vec![1u8; MAX_DATAGRAM + 1];
    assert_eq!(net.deliver_up(oversized), Err(DropReason::Oversized));

    let mut version = good.clone();
    version[0] = 2;
    assert_eq!(net.deliver_up(version), Err(DropReason::UnknownVersion));

    let mut kind = good.clone();
    kind[1] = 99;
    assert_eq!(net.deliver_up(kind), Err(DropReason::UnknownType));

    let mut session = good.clone();
    session[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(net.deliver_up(session), Err(DropReason::UnknownSession));

    let short_init = {
        let mut d = vec![0u8; wire::HANDSHAKE_INIT_LEN - 1];
        d[0] = wire::VERSION;
        d[1] = 1;
        d
    };
    assert_eq!(net.deliver_up(short_init), Err(DropReason::TooShort));
    let bad_mac = {
        let mut d = vec![0u8; wire::HANDSHAKE_INIT_LEN];
        d[0] = wire::VERSION;
        d[1] = 1;
        d
    };
    assert_eq!(net.deliver_up(bad_mac), Err(DropReason::BadMac1));

    // A sealed packet whose plaintext is not IP.
    let garbage = net.sealed_up(&[0x45, 0, 0, 99, 1, 2, 3]);
    assert_eq!(net.deliver_up(garbage), Err(DropReason::BadInnerPacket));

    // The good one still goes through after all that.
    assert!(matches!(
        net.deliver_up(good),
        Ok(ServerEvent::Packet { .. })
    ));
    let d = &net.server.stats().drops;
    for r in [
        DropReason::BadTag,
        DropReason::TooShort,
        DropReason::Oversized,
        DropReason::UnknownVersion,
        DropReason::UnknownType,
        DropReason::UnknownSession,
        DropReason::BadMac1,
        DropReason::BadInnerPacket,
    ] {
        assert!(d.get(r) > 0, "{r:?} not counted");
    }
    assert_eq!(d.get(DropReason::BadTag), 2);
    assert_eq!(d.get(DropReason::TooShort), 3);
}

#[test]
fn random_garbage_never_panics() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let mut x: u64 = 0x1234_5678;
    for i in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8 ^ j as u8).collect();
        if d.len() > 2 {
            d[0] = wire::VERSION;
            d[1] = (i % 9) as u8;
        }
        let mut reply = [0u8; MAX_DATAGRAM];
        let _ = net
            .server
            .handle_datagram(net.now, net.member_addr, &mut d.clone(), &mut reply);
        let _ = net.client.handle_datagram(net.now, P0, &mut d);
    }
    assert!(net.client.is_connected());
}

#[test]
fn rekey_under_steady_traffic_loses_nothing() {
    let limits = Limits {
        rekey_after_time: Duration::from_secs(20),
        reject_after_time: Duration::from_secs(30),
        ..Limits::default()
    };
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.delay = Duration::from_millis(40);
    net.connect();
    let mut sent = 0u32;
    // Two minutes at 500 packets/s each way, across six rekeys.
    for _ in 0..(120 * 100) {
        for _ in 0..5 {
            net.send_up(&ipv4(120, sent)).unwrap();
            net.send_down(&ipv4(120, sent)).unwrap();
            sent += 1;
        }
        net.step(Duration::from_millis(10));
    }
    for _ in 0..20 {
        net.step(Duration::from_millis(10));
    }
    assert!(
        net.client.stats().handshakes_completed >= 6,
        "{:?}",
        net.client.stats()
    );
    assert_eq!(net.at_server.len() as u32, sent);
    assert_eq!(net.at_client.len() as u32, sent);
    assert!(
        net.at_server
            .iter()
            .enumerate()
            .all(|(i, p)| seq_of(p) == i as u32)
    );
    assert_eq!(
        net.server.stats().drops.total(),
        0,
        "{:?}",
        net.server.stats().drops
    );
    assert_eq!(
        net.client.stats().drops.total(),
        0,
        "{:?}",
        net.client.stats().drops
    );
}

#[test]
fn rekey_on_message_count() {
    let limits = Limits {
        rekey_after_messages: 1000,
        ..Limits::default()
    };
    let mut net = Net::new(CipherSuite::ChaCha20Poly1305, false, limits);
    net.connect();
    for i in 0..5000 {
        net.send_up(&ipv4(80, i)).unwrap();
        if i % 50 == 0 {
            net.step(Duration::from_millis(10));
        }
    }
    for _ in 0..10 {
        net.step(Duration::from_millis(10));
    }
    assert!(net.client.stats().handshakes_completed >= 4);
    assert_eq!(net.at_server.len(), 5000);
}

#[test]
fn gateway_recovers_when_proxy_restarts() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    // The proxy restarts: same key and members, every session forgotten, and it is
    // unreachable for 20 s meanwhile.
    net.server = server(&net.proxy_key, net.members.clone(), net.limits, net.now, 7);
    let mut sent = 0;
    let restart = net.now;
    for _ in 0..4000 {
        // The LAN keeps sending; upstream packets are dropped by the fresh proxy.
        if net.client.is_connected() {
            net.send_up(&ipv4(80, sent)).unwrap();
            sent += 1;
        }
        if net.now - restart < Duration::from_secs(20) {
            net.to_server.clear();
        }
        net.step(Duration::from_millis(10));
        if net.server.member(MemberId(0)).unwrap().connected && !net.at_server.is_empty() {
            break;
        }
    }
    assert!(
        net.server.member(MemberId(0)).unwrap().connected,
        "member never came back"
    );
    assert!(net.client.stats().handshakes_completed >= 2);
}

#[test]
fn handshake_flood_does_not_stop_a_member() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    let proxy_public = net.proxy_key.public_key();
    // 2000 initiations with a valid mac1 (the proxy's public key is in every bundle)
    // from spoofed sources, interleaved with a real member's handshake.
    let flood: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            let mut c = Client::new(
                ClientConfig {
                    static_key: SecretKey::generate().unwrap(),
                    proxy_key: proxy_public,
                    psk: None,
                    suite: CipherSuite::Aes256Gcm,
                    limits: net.limits,
                },
                net.now,
                1,
                i,
            );
            c.add_path(P0, net.now);
            let mut buf = [0u8; MAX_DATAGRAM];
            let t = c.poll_transmit(net.now, &mut buf).unwrap();
            buf[..t.len].to_vec()
        })
        .collect();
    for (i, d) in flood.into_iter().enumerate() {
        let from: SocketAddr = format!("203.0.113.{}:{}", i % 200, 1000 + i)
            .parse()
            .unwrap();
        net.flood.push_back((from, d));
    }
    let flood_start = net.now;
    while !net.flood.is_empty() {
        net.step(Duration::from_millis(5));
    }
    assert!(
        net.client.is_connected(),
        "member must get through the flood"
    );
    let stats = net.server.stats();
    // Diffie-Hellmans stay within the budget (50/s here, a burst of 2) plus the member's
    // own, whatever the flood.
    let elapsed = (net.now - flood_start).as_secs_f64();
    assert!(
        stats.handshakes_processed as f64 <= 50.0 * elapsed + 2.0 + 3.0,
        "{} handshakes in {elapsed} s",
        stats.handshakes_processed
    );
    // Only the first burst (the rate allowance) cost a Diffie-Hellman; the rest got
    // cookies, and a spoofed source cannot use its cookie.
    assert!(stats.cookies_sent >= 1900, "{stats:?}");
    assert!(
        stats.drops.get(DropReason::UnknownMember) <= 100,
        "{stats:?}"
    );
    assert!(net.client.stats().cookies_received >= 1);
}

fn server(
    proxy_key: &SecretKey,
    members: Vec<MemberKey>,
    limits: Limits,
    now: Instant,
    seed: u8,
) -> Server {
    Server::new(
        ServerConfig {
            static_key: proxy_key.clone(),
            members,
            limits,
            handshakes_per_second: 50,
        },
        now,
        [seed; 32],
    )
}

#[test]
fn receipts_report_downstream_once_per_probe_interval() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let control_before = net.client_control_sent;
    // 3 seconds of downstream traffic: 1000 packets.
    for i in 0..300 {
        for j in 0..10 {
            net.send_down(&ipv4(500, i * 10 + j)).unwrap();
        }
        net.step(Duration::from_millis(10));
    }
    for _ in 0..200 {
        net.step(Duration::from_millis(10));
    }
    let path = &net.server.member(MemberId(0)).unwrap().paths[0];
    // The member confirmed every packet and byte it got, and the proxy recorded it.
    assert_eq!(path.receipt, Some((3000, 3000 * 500)));
    assert_eq!(net.at_client.len(), 3000);
    // Control traffic stayed small: a probe and a receipt per second, not one per packet.
    let control = net.client_control_sent - control_before;
    assert!(control <= 2 * 5 + 2, "{control} control datagrams in 5 s");
}

#[test]
fn proxy_follows_a_member_whose_address_changes() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    net.send_up(&ipv4(100, 1)).unwrap();
    net.step(Duration::from_millis(20));
    // The member's WAN gets a new address (DHCP renewal, LTE reconnect, NAT rebinding).
    let old = net.member_addr;
    net.member_addr = "192.0.2.200:51000".parse().unwrap();
    // Before it says anything from there, replies still go to the old address.
    let mut buf = [0u8; MAX_DATAGRAM];
    buf[SEAL_OFFSET..SEAL_OFFSET + 60].copy_from_slice(&ipv4(60, 2));
    let (to, _) = net
        .server
        .seal_packet(net.now, MemberId(0), &mut buf, 60)
        .unwrap();
    assert_eq!(to, old);
    // One authenticated packet from the new address moves the path.
    net.send_up(&ipv4(100, 3)).unwrap();
    net.step(Duration::from_millis(20));
    net.send_down(&ipv4(100, 4)).unwrap(); // asserts it goes to the new address
    // A forged packet from elsewhere does not move it.
    let forged_from: SocketAddr = "203.0.113.66:666".parse().unwrap();
    let mut forged = net.sealed_up(&ipv4(100, 5));
    forged[30] ^= 0xff;
    let mut reply = [0u8; MAX_DATAGRAM];
    assert_eq!(
        net.server
            .handle_datagram(net.now, forged_from, &mut forged, &mut reply),
        Err(DropReason::BadTag)
    );
    net.send_down(&ipv4(100, 6)).unwrap();
    assert_eq!(
        net.server.member(MemberId(0)).unwrap().paths[0].endpoint,
        net.member_addr
    );
}

#[test]
fn relay_tags_verify_only_with_the_relays_own_session_keys() {
    use linkpool_protocol::relay::{seal_envelope, verify_envelope};
    use linkpool_protocol::wire::{Message, MessageType, RELAY_HEADER_LEN};
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    // This member relays a neighbour's sealed datagram (opaque bytes to it).
    let (index, up, _down) = net.client.relay_keys().unwrap();
    let carried = net.sealed_up(&ipv4(200, 1));
    let mut buf = [0u8; MAX_DATAGRAM];
    buf[RELAY_HEADER_LEN..RELAY_HEADER_LEN + carried.len()].copy_from_slice(&carried);
    let n = seal_envelope(
        &up,
        MessageType::RelayUp,
        index,
        42,
        &mut buf,
        carried.len(),
    )
    .unwrap();
    // The proxy finds the relay's keys from the envelope and checks the tag.
    let Ok(Message::Relay(env)) = Message::parse(&buf[..n]) else {
        panic!("not an envelope")
    };
    let (relay, proxy_up, _) = net.server.relay_keys(env.relay_index()).unwrap();
    assert_eq!(relay, MemberId(0));
    assert_eq!(env.slot(), 42);
    assert_eq!(env.inner(), &carried[..]);
    verify_envelope(&proxy_up, &env).unwrap();
    // Any change to what it carried, or to the slot, breaks the tag.
    for at in [9, RELAY_HEADER_LEN + 20, n - 1] {
        let mut bad = buf;
        bad[at] ^= 1;
        let Ok(Message::Relay(env)) = Message::parse(&bad[..n]) else {
            panic!()
        };
        assert_eq!(
            verify_envelope(&proxy_up, &env),
            Err(DropReason::BadRelayTag)
        );
    }
    // A device without the relay's session cannot make a valid tag, even knowing the
    // index: the other direction's key (or any other) does not verify.
    let (_, _, proxy_down) = net.server.relay_keys(env.relay_index()).unwrap();
    assert_eq!(
        verify_envelope(&proxy_down, &env),
        Err(DropReason::BadRelayTag)
    );
}

#[test]
fn unanswered_handshakes_back_off_and_rotate_over_paths() {
    let limits = Limits::default();
    let start = Instant::now();
    let mut client = Client::new(
        ClientConfig {
            static_key: SecretKey::generate().unwrap(),
            proxy_key: SecretKey::generate().unwrap().public_key(),
            psk: None,
            suite: CipherSuite::Aes256Gcm,
            limits,
        },
        start,
        1_700_000_000_000_000,
        1,
    );
    client.add_path(P0, start);
    client.add_path(PathId(1), start);
    // Nobody answers: run the client by its own timers for a minute and note every
    // initiation it sends.
    let mut sent: Vec<(Duration, PathId)> = Vec::new();
    let mut now = start;
    let mut buf = [0u8; MAX_DATAGRAM];
    while now < start + Duration::from_secs(60) {
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            assert_eq!(
                t.len,
                wire::HANDSHAKE_INIT_LEN,
                "only handshakes before a session"
            );
            sent.push((now - start, t.path));
        }
        now = client
            .poll_timeout()
            .expect("a client without a session keeps trying");
        client.handle_timeout(now);
    }
    let gaps: Vec<u64> = sent
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs())
        .collect();
    // Doubling from the first retry interval up to the cap, then steady at the cap.
    let expected: Vec<u64> = (0..gaps.len())
        .map(|i| {
            (limits.handshake_retry_initial.as_secs() << i.min(16))
                .min(limits.handshake_retry_max.as_secs())
        })
        .collect();
    assert!(gaps.len() >= 6, "{gaps:?}");
    assert_eq!(gaps, expected);
    // One dead uplink cannot stall the handshake: retries alternate between the paths.
    assert!(
        sent.windows(2).all(|w| w[0].1 != w[1].1),
        "retries stayed on one path: {sent:?}"
    );
    assert_eq!(client.stats().handshakes_sent as usize, sent.len());
    assert!(!client.is_connected());
}

impl Net {
    /// Runs both ends by their own timers until `end`, as an event loop would: time jumps
    /// to the earliest wake-up or arrival. While `proxy_gone`, nothing reaches the proxy.
    /// Returns the client's wake-ups. Panics if a wake-up time in the past survives
    /// `handle_timeout` and `poll_transmit` (a spinning event loop).
    fn run_until(&mut self, end: Instant, proxy_gone: bool) -> usize {
        let mut wakeups = 0;
        while self.now < end {
            let next = [
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                self.to_server.front().map(|(t, _)| *t),
                self.to_client.front().map(|(t, _)| *t),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .min(end);
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                wakeups += 1;
            }
            let dt = next.saturating_duration_since(self.now);
            let arrivals = self.to_client.iter().filter(|(t, _)| *t <= next).count();
            self.step(dt);
            if proxy_gone {
                self.to_server.clear();
            }
            // What arrived may have made something due now (a probe after a handshake):
            // the daemon sends it before it sleeps again. Timers alone never may.
            if arrivals > 0 && self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.step(Duration::ZERO);
                if proxy_gone {
                    self.to_server.clear();
                }
            }
            if let Some(t) = self.client.poll_timeout() {
                assert!(
                    t > self.now,
                    "a wake-up {:?} in the past survived the client's timers",
                    self.now - t
                );
            }
        }
        wakeups
    }
}

#[test]
fn no_timer_in_the_past_survives_while_the_proxy_is_gone() {
    // Outages starting at any point of the session's life, the rekey window included.
    for outage_at in [0, 30, 117, 125] {
        let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
        net.connect();
        let start = net.now;
        net.run_until(start + Duration::from_secs(outage_at), false);
        assert!(net.client.is_connected());
        let gone = net.now;
        let wakeups = net.run_until(gone + Duration::from_secs(300), true);
        // Probes (fast while suspect, then one a second), handshake retries and key
        // expiry: a few wake-ups a second at most, never a spin.
        let per_second = wakeups as f64 / 300.0;
        assert!(
            per_second <= 2.0,
            "{wakeups} wake-ups in 300 s (outage at {outage_at} s)"
        );
        assert!(!net.client.is_connected());
    }
}

#[test]
fn a_silent_proxy_is_noticed_within_dead_after_and_a_returning_one_at_once() {
    use linkpool_protocol::client::Liveness;
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.connect();
    net.run_until(net.now + Duration::from_secs(5), false);
    let sent_before = net.client.stats().handshakes_sent;
    let gone = net.now;
    // A probe goes unanswered: suspect, a new handshake at once, fast probes.
    net.run_until(gone + Duration::from_millis(1500), true);
    assert_eq!(net.client.liveness(), Liveness::Suspect);
    assert!(net.client.is_connected());
    assert!(net.client.stats().handshakes_sent > sent_before);
    // Within dead_after of the last answer (still in flight when the proxy went).
    net.run_until(gone + limits.dead_after + net.delay * 2, true);
    assert_eq!(net.client.liveness(), Liveness::Lost);
    assert!(!net.client.is_connected(), "not noticed within dead_after");
    assert_eq!(net.client.stats().sessions_lost, 1);
    let (unanswered, _) = net.client.unanswered_handshakes(net.now).unwrap();
    assert!(unanswered >= 2, "{unanswered}");
    // The link comes back 30 s into the outage with the proxy's session intact: the
    // next packet on the old keys (or the pending handshake) brings it back.
    net.run_until(gone + Duration::from_secs(30), true);
    let back = net.now;
    net.run_until(back + Duration::from_secs(10), false);
    assert!(net.client.is_connected());
    net.at_server.clear();
    net.send_up(&ipv4(100, 1)).unwrap();
    net.run_until(net.now + Duration::from_millis(100), false);
    assert_eq!(net.at_server.len(), 1);
}

#[test]
fn a_restarted_proxy_gets_a_handshake_within_one_probe_interval() {
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.connect();
    net.run_until(net.now + Duration::from_secs(3), false);
    // A crash and an immediate restart: the proxy forgets every session, but answers.
    net.server = server(&net.proxy_key, net.members.clone(), limits, net.now, 7);
    let restart = net.now;
    while !net.server.member(MemberId(0)).unwrap().connected {
        assert!(
            net.now - restart < limits.probe_interval * 2,
            "no new session {:?} after the restart",
            net.now - restart
        );
        net.run_until(net.now + Duration::from_millis(10), false);
    }
    eprintln!("new session {:?} after the restart", net.now - restart);
}

#[test]
fn replayed_initiations_cost_no_handshake_even_from_an_idle_member() {
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    // Capture the member's first initiation on its way to the proxy.
    net.step(Duration::ZERO);
    let captured = net.to_server.front().unwrap().1.clone();
    assert_eq!(captured.len(), wire::HANDSHAKE_INIT_LEN);
    net.connect();
    let stats = net.server.stats().clone();
    // The member goes quiet for longer than dead_after (the old code then skipped the
    // timestamp check): replays from anywhere are refused by a lookup.
    net.run_until(net.now + Duration::from_secs(3), false);
    net.run_until(net.now + limits.dead_after * 2, true);
    for i in 0..100u16 {
        let from: SocketAddr = format!("203.0.113.9:{}", 1000 + i).parse().unwrap();
        let mut reply = [0u8; MAX_DATAGRAM];
        let r = net
            .server
            .handle_datagram(net.now, from, &mut captured.clone(), &mut reply);
        assert_eq!(r, Err(DropReason::ReplayedHandshake));
    }
    let after = net.server.stats();
    assert_eq!(after.handshakes, stats.handshakes);
    assert_eq!(after.handshakes_processed, stats.handshakes_processed);
    assert_eq!(after.cookies_sent, stats.cookies_sent);
    assert_eq!(after.drops.get(DropReason::ReplayedHandshake), 100);
    // The member comes back and carries traffic on its session.
    net.run_until(net.now + Duration::from_secs(3), false);
    assert!(net.client.is_connected());
    net.send_up(&ipv4(100, 7)).unwrap();
    net.run_until(net.now + Duration::from_millis(100), false);
    assert_eq!(net.at_server.last().map(|p| seq_of(p)), Some(7));
}

#[test]
fn an_initiation_older_than_the_last_accepted_is_refused() {
    // Two initiations of one member, delivered newest first to a proxy that has not seen
    // either ephemeral (as after they fell out of its memory): the older one is stale.
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.step(Duration::ZERO);
    let older = net.to_server.pop_front().unwrap().1;
    net.client
        .restart_handshake(net.now + Duration::from_secs(1));
    net.step(Duration::from_secs(1));
    let newer = net.to_server.pop_front().unwrap().1;
    assert!(matches!(
        net.deliver_up(newer),
        Ok(ServerEvent::Reply { .. })
    ));
    // Even once the member has been silent for a long time.
    net.now += limits.dead_after * 10;
    assert_eq!(net.deliver_up(older), Err(DropReason::StaleHandshake));
}
