//! A member reaching the proxy only through a neighbour's relay, the three cores driven
//! in one process as their daemons drive them: the consumer's datagrams go over the mesh
//! to the relay's `relay_up`, out of the relay's own line to the proxy; the proxy's
//! replies come back to the relay's line, out of its `handle_datagram` as
//! `Received::Relay`, and over the mesh to the consumer. Delivery is instant: this is
//! about who accepts what, not about timing.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::pair::{INTERNET_IP, MEMBER_IP, MTU, packet, sharing};
use linkpool_protocol::client::{self, Client, ClientConfig, Received};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{self, MemberId, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::Limits;
use linkpool_protocol::usage::{UpDown, Usage};
use linkpool_protocol::wire::{MAX_DATAGRAM, RELAY_HEADER_LEN};
use linkpool_protocol::{CipherSuite, DropReason, PathId};

const CONSUMER: MemberId = MemberId(0);
const RELAY: MemberId = MemberId(1);
/// The relay member's tunnel address.
const RELAY_IP: [u8; 4] = [10, 77, 0, 3];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The proxy, and where the relay's line and the two routers' mesh sockets are.
struct Net {
    start: Instant,
    now: Instant,
    proxy_addr: SocketAddr,
    relay_wan: SocketAddr,
    relay_mesh: SocketAddr,
    consumer_mesh: SocketAddr,
    server: Server,
    consumer: Client,
    relay: Client,
    /// The consumer's static public key.
    consumer_key: linkpool_protocol::keys::PublicKey,
    /// The consumer's path through the relay; the relay's own line.
    consumer_path: PathId,
    relay_path: PathId,
    /// Inner packets out of each end.
    at_proxy: Vec<Vec<u8>>,
    at_consumer: Vec<Vec<u8>>,
    /// Where the relay sent what it relayed up (it must only ever be the proxy).
    relayed_to: Vec<SocketAddr>,
    /// Flips this bit of the next envelope relayed up, on its way from the relay to the
    /// proxy (counted modulo the envelope's length).
    flip: Option<usize>,
    /// Wire bytes (IPv4 and UDP headers included) of the consumer's datagrams on the
    /// relay's line: up as the relay sent them, down as it passed them on to the consumer.
    line: UpDown,
    /// Envelopes relayed up, as they left the relay (for replays).
    captured: Vec<Vec<u8>>,
    /// The relay keeps (does not pass on) every `n`th datagram it gets for the consumer.
    withhold_down: Option<u64>,
    relayed_down: u64,
    /// Wire bytes the proxy sent the relay for the consumer (what it was offered down).
    offered_down: u64,
}

fn client(key: SecretKey, proxy: &SecretKey) -> ClientConfig {
    ClientConfig {
        static_key: key,
        proxy_key: proxy.public_key(),
        psk: None,
        suite: CipherSuite::ChaCha20Poly1305,
        limits: Limits::default(),
        mtu: MTU,
        queue_slots: client::DEFAULT_QUEUE_SLOTS,
    }
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let (consumer_key, relay_key) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let member = |key: &SecretKey, ip: [u8; 4]| MemberKey {
            public_key: key.public_key(),
            psk: None,
            addresses: vec![ip.into()],
        };
        let server = Server::new(
            ServerConfig {
                static_key: proxy_key.clone(),
                members: vec![
                    member(&consumer_key, MEMBER_IP),
                    member(&relay_key, RELAY_IP),
                ],
                limits: Limits::default(),
                handshakes_per_second: 50,
                mtu: MTU,
                queue_slots: server::DEFAULT_QUEUE_SLOTS,
            },
            now,
            [7; 32],
        );
        let proxy_addr = addr("203.0.113.10:7117");
        let relay_mesh = addr("10.99.0.2:7118");
        let consumer_mesh = addr("10.99.0.3:40001");
        let mut relay = Client::new(client(relay_key, &proxy_key), now, 1_000_000, 1);
        let relay_path = relay.open_path(now, proxy_addr, PathSettings::default());
        relay.relay_mut().set_policy(sharing());
        let consumer_public = consumer_key.public_key();
        let mut consumer = Client::new(client(consumer_key, &proxy_key), now, 1_000_000, 2);
        let consumer_path =
            consumer.open_relayed_path(now, relay_mesh, RELAY.0, PathSettings::default());
        Net {
            consumer_key: consumer_public,
            start: now,
            now,
            proxy_addr,
            relay_wan: addr("198.51.100.2:40000"),
            relay_mesh,
            consumer_mesh,
            server,
            consumer,
            relay,
            consumer_path,
            relay_path,
            at_proxy: Vec::new(),
            at_consumer: Vec::new(),
            relayed_to: Vec::new(),
            flip: None,
            line: UpDown::default(),
            captured: Vec::new(),
            withhold_down: None,
            relayed_down: 0,
            offered_down: 0,
        }
    }

    /// Carries everything every core wants sent until nothing moves, then advances the
    /// clock by `step` and runs the timers.
    fn run(&mut self, step: Duration) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut moved = true;
        while moved {
            moved = false;
            // The relay's own traffic goes straight to the proxy.
            while let Some(t) = self.relay.poll_transmit(self.now, &mut buf) {
                moved = true;
                assert_eq!(t.remote, self.proxy_addr);
                let _ =
                    self.server
                        .handle_datagram(self.now, self.relay_wan, None, &mut buf[..t.len]);
            }
            // The consumer's goes over the mesh to the relay, read after room for the
            // envelope's header, and on from there.
            let mut mesh = vec![0u8; MAX_DATAGRAM];
            while let Some(t) = self
                .consumer
                .poll_transmit(self.now, &mut mesh[RELAY_HEADER_LEN..])
            {
                moved = true;
                assert_eq!(t.remote, self.relay_mesh);
                if let Ok(up) = self
                    .relay
                    .relay_up(self.now, self.consumer_mesh, &mut mesh, t.len)
                {
                    self.relayed_to.push(up.remote);
                    self.line.up += up.len as u64 + 28;
                    self.captured.push(mesh[..up.len].to_vec());
                    if let Some(bit) = self.flip.take() {
                        let bit = bit % (up.len * 8);
                        mesh[bit / 8] ^= 1 << (bit % 8);
                    }
                    let _ = self.server.handle_datagram(
                        self.now,
                        self.relay_wan,
                        None,
                        &mut mesh[..up.len],
                    );
                }
            }
            // The proxy answers the relay's line, for the relay or for its neighbour.
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                moved = true;
                assert_eq!(t.remote, self.relay_wan, "the proxy answers where it heard");
                if let Ok(Received::Relay { to, start, len }) =
                    self.relay
                        .handle_datagram(self.now, self.relay_path, &mut buf[..t.len])
                {
                    assert_eq!(to, self.consumer_mesh);
                    self.relayed_down += 1;
                    self.offered_down += t.len as u64 + 28;
                    if self
                        .withhold_down
                        .is_some_and(|n| self.relayed_down % n == 0)
                    {
                        continue;
                    }
                    self.line.down += t.len as u64 + 28;
                    let _ = self.consumer.handle_datagram(
                        self.now,
                        self.consumer_path,
                        &mut buf[start..start + len],
                    );
                }
            }
            let mut inner = vec![0u8; MAX_DATAGRAM];
            while let Some(n) = self.server.poll_packet(&mut inner) {
                self.at_proxy.push(inner[..n].to_vec());
            }
            while let Some(n) = self.consumer.poll_packet(&mut inner) {
                self.at_consumer.push(inner[..n].to_vec());
            }
        }
        self.now += step;
        self.relay.handle_timeout(self.now);
        self.consumer.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    fn connect(&mut self) {
        for _ in 0..50 {
            self.run(Duration::from_millis(10));
        }
        assert!(self.relay.is_connected(), "the relay's own session");
        // The relay admits its neighbour once the mesh found it a member.
        self.relay.relay_mut().admit(self.consumer_mesh).unwrap();
        for _ in 0..100 {
            self.run(Duration::from_millis(10));
            if self.consumer.is_connected() {
                return;
            }
        }
        panic!(
            "the consumer never connected through the relay: {:?} {:?}",
            self.relay.stats().drops,
            self.server.stats().drops
        );
    }

    fn send_up(&mut self, seq: u32) {
        let mut p = vec![0u8; 600];
        packet(&mut p, 600, true, seq);
        self.consumer.handle_packet(self.now, &p).unwrap();
    }

    fn send_down(&mut self, seq: u32) {
        let mut p = vec![0u8; 600];
        packet(&mut p, 600, false, seq);
        self.server.handle_packet(self.now, &p).unwrap();
    }
}

#[test]
fn a_member_reaches_the_proxy_only_through_its_neighbour() {
    let mut net = Net::new();
    for _ in 0..20 {
        net.run(Duration::from_millis(10));
    }
    // Not yet admitted: the relay carries nothing for it, and says why.
    assert!(!net.consumer.is_connected());
    assert!(net.relay.stats().drops.get(DropReason::NotANeighbour) > 0);
    net.connect();
    for seq in 0..20 {
        net.send_up(seq);
        net.send_down(seq);
        net.run(Duration::from_millis(5));
    }
    assert_eq!(net.at_proxy.len(), 20, "upstream through the relay");
    assert!(
        net.at_proxy
            .iter()
            .all(|p| p[12..16] == MEMBER_IP && p[16..20] == INTERNET_IP)
    );
    assert_eq!(net.at_consumer.len(), 20, "downstream through the relay");
    // The relay sent everything it relayed to its proxy, and counted it.
    assert!(net.relayed_to.iter().all(|&a| a == net.proxy_addr));
    let carried = *net.relay.relay().totals();
    assert!(
        carried.up_packets >= 20 && carried.down_packets >= 20,
        "{carried:?}"
    );
    // At the proxy the consumer's path is its own, through the relay's slot.
    let path = &net.server.member(CONSUMER).unwrap().paths[0];
    let hop = path.endpoint().relay.expect("a relayed path");
    assert_eq!(hop.relay, RELAY.0);
    assert_eq!(Some(hop.slot), net.relay.relay().slot_of(net.consumer_mesh));
    assert_eq!(path.endpoint().remote, net.relay_wan);
    assert_eq!(
        net.server.stats().drops.total(),
        0,
        "{:?}",
        net.server.stats().drops
    );
}

/// The relay can neither read nor alter what it carries: a bit flipped anywhere in a
/// relayed datagram on the relay's line, or by the relay itself before it tags it, is
/// refused by the proxy and counted; what reaches the Internet is only ever what the
/// member sent, byte for byte (a refused datagram's packet may come through a repair).
#[test]
fn a_flipped_bit_anywhere_in_a_relayed_datagram_is_refused() {
    let mut net = Net::new();
    net.connect();
    let mut sent = Vec::new();
    let mut send = |net: &mut Net, seq: u32| {
        let mut p = vec![0u8; 600];
        packet(&mut p, 600, true, seq);
        net.consumer.handle_packet(net.now, &p).unwrap();
        sent.push(p);
    };
    // On the wire, after the relay's tag: every bit position of the envelope's header,
    // the carried datagram's first bytes, and the tag (counted from the end).
    let bits = (0..(RELAY_HEADER_LEN + 48) * 8).chain((0..16 * 8).map(|b| usize::MAX - b));
    for bit in bits {
        let refused = net.server.stats().drops.total();
        net.flip = Some(bit);
        send(&mut net, 1000);
        net.run(Duration::from_millis(1));
        assert!(net.flip.is_none(), "nothing was relayed");
        assert!(
            net.server.stats().drops.total() > refused,
            "a flip of bit {bit} was accepted"
        );
        for _ in 0..20 {
            net.run(Duration::from_millis(5));
        }
    }
    let drops = &net.server.stats().drops;
    assert!(drops.get(DropReason::BadRelayTag) > 0, "{drops:?}");
    // A relay that flips a bit of what it carries and tags the result as its own: the
    // member's own seal refuses it.
    let before = net.server.stats().drops.get(DropReason::BadTag);
    let mut mesh = vec![0u8; MAX_DATAGRAM];
    send(&mut net, 5000);
    let t = net
        .consumer
        .poll_transmit(net.now, &mut mesh[RELAY_HEADER_LEN..])
        .expect("the packet goes out");
    mesh[RELAY_HEADER_LEN + t.len - 5] ^= 0x10;
    let up = net
        .relay
        .relay_up(net.now, net.consumer_mesh, &mut mesh, t.len)
        .unwrap();
    assert!(
        net.server
            .handle_datagram(net.now, net.relay_wan, None, &mut mesh[..up.len])
            .is_err()
    );
    assert_eq!(net.server.stats().drops.get(DropReason::BadTag), before + 1);
    for _ in 0..20 {
        net.run(Duration::from_millis(5));
    }
    // The path still works for what is not tampered with.
    send(&mut net, 6000);
    net.run(Duration::from_millis(5));
    assert_eq!(net.at_proxy.last(), sent.last());
    for p in &net.at_proxy {
        assert!(sent.contains(p), "a packet the member never sent came out");
    }
}

/// A relay passes on only what a proxy takes from a member, and only to its own proxy;
/// a member cannot relay for itself to be credited for its own traffic; a neighbour
/// that left gets nothing more.
#[test]
fn a_relay_is_never_an_open_relay() {
    let mut net = Net::new();
    net.connect();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Junk, an envelope in an envelope, a hello: refused before any tag is spent on them.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[2u8, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8][..],
        &[2u8, 8, 0, 0][..],
    ] {
        buf[RELAY_HEADER_LEN..][..junk.len()].copy_from_slice(junk);
        assert!(
            net.relay
                .relay_up(net.now, net.consumer_mesh, &mut buf, junk.len())
                .is_err()
        );
    }
    // The relay's own datagram, wrapped by itself: refused at the proxy.
    let mut p = vec![0u8; 600];
    packet(&mut p, 600, true, 1);
    p[12..16].copy_from_slice(&RELAY_IP);
    net.relay.handle_packet(net.now, &p).unwrap();
    let t = net
        .relay
        .poll_transmit(net.now, &mut buf[RELAY_HEADER_LEN..])
        .unwrap();
    net.relay.relay_mut().admit(net.relay_mesh).unwrap();
    let up = net
        .relay
        .relay_up(net.now, net.relay_mesh, &mut buf, t.len)
        .unwrap();
    assert_eq!(
        net.server
            .handle_datagram(net.now, net.relay_wan, None, &mut buf[..up.len]),
        Err(DropReason::RelayedForItself)
    );
    // The neighbour leaves the mesh: what it sends is refused at the relay, and what the
    // proxy still sends for it is dropped there.
    net.relay.relay_mut().expel(net.consumer_mesh);
    let delivered = (net.at_proxy.len(), net.at_consumer.len());
    for seq in 0..5 {
        net.send_up(seq);
        net.send_down(seq);
        net.run(Duration::from_millis(5));
    }
    assert_eq!((net.at_proxy.len(), net.at_consumer.len()), delivered);
    assert!(net.relay.stats().drops.get(DropReason::UnknownRelaySlot) > 0);
    assert!(net.relay.stats().drops.get(DropReason::NotANeighbour) > 0);
}

/// Every connected member gets a mesh credential through its tunnel, for its own key,
/// signed by its proxy, with the proxy's clock; renewed at half its lifetime; a member
/// removed from the proxy's configuration gets no more.
#[test]
fn members_get_their_mesh_credentials_through_the_tunnel() {
    let mut net = Net::new();
    net.server.set_wall_clock(net.now, 1_800_000_000);
    net.server.set_credential_lifetime(600);
    net.connect();
    for _ in 0..10 {
        net.run(Duration::from_millis(10));
    }
    let issuer = net.server.credential_issuer();
    for (member, client) in [(CONSUMER, &net.consumer), (RELAY, &net.relay)] {
        let g = client.mesh_grant().expect("a grant through the tunnel");
        assert_eq!(g.credential.member(), member.0);
        assert_eq!(g.issuer, issuer);
        assert!(issuer.verify(&g.credential).is_ok());
        assert_eq!(g.credential.expires_at() - g.credential.issued_at(), 600);
        // The clients' wall clock started at 1 s after the epoch: the offset is the
        // proxy's clock less that.
        let offset = 1_800_000_000 - 1;
        assert!(
            (g.clock_offset_s - offset).abs() <= 2,
            "{}",
            g.clock_offset_s
        );
        let proxy_now = 1_800_000_000 + (net.now - net.start).as_secs();
        let told = client.proxy_clock_s(net.now).unwrap();
        assert!(told.abs_diff(proxy_now) <= 2, "{told} vs {proxy_now}");
    }
    let first = net.consumer.mesh_grant().unwrap().credential;
    // Half the lifetime later (the sessions rekey meanwhile): a new credential.
    for _ in 0..310 {
        net.run(Duration::from_secs(1));
    }
    let renewed = net.consumer.mesh_grant().unwrap().credential;
    assert!(renewed.issued_at() > first.issued_at());
    assert!(renewed.expires_at() > first.expires_at());
    // The relay member is removed from the proxy's configuration: no more credentials
    // for it, however long it waits.
    let relay_last = net.relay.mesh_grant().unwrap().credential;
    net.server
        .set_members(vec![linkpool_protocol::server::MemberKey {
            public_key: net.consumer_key,
            psk: None,
            addresses: vec![MEMBER_IP.into()],
        }]);
    for _ in 0..700 {
        net.run(Duration::from_secs(1));
    }
    assert_eq!(
        net.relay.mesh_grant().unwrap().credential.issued_at(),
        relay_last.issued_at()
    );
    assert!(relay_last.expires_at() < 1_800_000_000 + (net.now - net.start).as_secs());
}

impl Net {
    /// The usage the proxy counted since the last take, by member.
    fn take_usage(&mut self) -> [Usage; 2] {
        let mut all = [Usage::default(), Usage::default()];
        self.server
            .take_usage(self.now, |id, u| all[id.0 as usize].merge(u));
        all
    }
}

/// What the consumer's traffic took on the relay's line, as the proxy counts it.
fn borrowed_from_relay(u: &Usage) -> UpDown {
    u.borrowed
        .iter()
        .filter(|(r, _)| *r == RELAY.0)
        .fold(UpDown::default(), |mut all, (_, b)| {
            all.add(*b);
            all
        })
}

/// The ledger pays the relay for every byte its line carried for the consumer, headers
/// and envelope included: upstream exactly; downstream all that the consumer confirmed,
/// which is all but the pure acks (not acknowledged themselves). The consumer is counted
/// what it sent and got, inner and on the wire; the relay's own traffic is its own.
#[test]
fn the_ledger_counts_the_wire_bytes_a_relay_carried() {
    let mut net = Net::new();
    net.connect();
    net.take_usage();
    net.line = UpDown::default();
    for seq in 0..200 {
        net.send_down(seq);
        if seq % 4 == 0 {
            net.send_up(seq);
        }
        net.run(Duration::from_millis(2));
    }
    for _ in 0..50 {
        net.run(Duration::from_millis(10));
    }
    let [consumer, relay] = net.take_usage();
    let carried = borrowed_from_relay(&consumer);
    assert_eq!(
        carried.up, net.line.up,
        "every relayed byte up, as it arrived"
    );
    assert!(
        carried.down <= net.line.down,
        "{carried:?} vs {:?}",
        net.line
    );
    assert!(
        carried.down as f64 >= 0.99 * net.line.down as f64,
        "confirmed {} of {} bytes carried down",
        carried.down,
        net.line.down
    );
    assert_eq!(
        consumer.own,
        UpDown::default(),
        "it has no line of its own here"
    );
    assert_eq!(consumer.wire(), carried);
    assert_eq!(
        consumer.inner,
        UpDown {
            up: 50 * 600,
            down: 200 * 600
        }
    );
    assert!(relay.borrowed.is_empty() && relay.own.up > 0, "{relay:?}");
    assert_eq!(net.at_consumer.len(), 200);
}

/// A relay earns nothing for what it does not deliver, and nothing for datagrams
/// replayed or tampered with on its line; each is refused with its reason.
#[test]
fn a_relay_earns_only_what_it_truly_carried() {
    let mut net = Net::new();
    net.connect();
    net.take_usage();
    net.line = UpDown::default();
    // Half of what it gets for the consumer, it keeps.
    net.withhold_down = Some(2);
    for seq in 0..200 {
        net.send_down(seq);
        net.run(Duration::from_millis(2));
    }
    for _ in 0..50 {
        net.run(Duration::from_millis(10));
    }
    let carried = borrowed_from_relay(&net.take_usage()[0]);
    assert!(
        carried.down <= net.line.down && carried.down as f64 >= 0.97 * net.line.down as f64,
        "paid for {} bytes, delivered {}",
        carried.down,
        net.line.down
    );
    net.withhold_down = None;
    // Every datagram it relayed up so far, replayed on its line: refused, unpaid.
    let replays = std::mem::take(&mut net.captured);
    let before = net.server.stats().drops.get(DropReason::Replay);
    for mut d in replays.clone() {
        let _ = net
            .server
            .handle_datagram(net.now, net.relay_wan, None, &mut d);
    }
    assert!(
        net.server.stats().drops.get(DropReason::Replay) >= before + replays.len() as u64 / 2,
        "{:?}",
        net.server.stats().drops
    );
    // A fresh datagram altered on the relay's line: refused, unpaid.
    let refused = net.server.stats().drops.total();
    net.flip = Some(8 * RELAY_HEADER_LEN + 3);
    net.send_up(1);
    net.run(Duration::from_millis(1));
    assert!(net.flip.is_none(), "nothing was relayed");
    assert_eq!(net.server.stats().drops.get(DropReason::BadRelayTag), 1);
    assert_eq!(net.server.stats().drops.total(), refused + 1);
    let [consumer, _] = net.take_usage();
    assert_eq!(borrowed_from_relay(&consumer).up, 0, "{consumer:?}");
}

/// The proxy rates a relay by what it delivered of what it was offered, both ways, in
/// the wire bytes its line really carried, and by its time up; the rating reaches the
/// relay signed, verifies there, and is what its discovery hellos will carry. One past
/// its expiry is refused.
#[test]
fn a_relay_is_rated_by_what_it_delivered_and_gets_its_rating_signed() {
    use linkpool_protocol::statement::Rating;
    let mut net = Net::new();
    let wall = |net: &Net| 1_800_000_000 + (net.now - net.start).as_secs();
    net.server.set_wall_clock(net.now, 1_800_000_000);
    net.connect();
    // The relay carries for a second, then withholds every third datagram down.
    net.take_usage();
    net.line = UpDown::default();
    net.offered_down = 0;
    let mut seq = 0;
    for phase in [None, Some(3)] {
        net.withhold_down = phase;
        for _ in 0..300 {
            net.send_down(seq);
            seq += 1;
            net.run(Duration::from_millis(3));
            if seq % 100 == 0 {
                net.take_usage();
            }
        }
    }
    net.withhold_down = None;
    for _ in 0..50 {
        net.run(Duration::from_millis(10));
    }
    net.take_usage();
    let rating = net
        .server
        .relay_rating(net.now, wall(&net), RELAY)
        .expect("rated");
    let offered = net.line.up + net.offered_down;
    let delivered = net.line.up + net.line.down;
    assert!(
        rating.bytes_delivered <= delivered
            && rating.bytes_delivered as f64 >= 0.97 * delivered as f64,
        "{rating:?}: delivered {delivered}"
    );
    assert!(
        (rating.bytes_offered as f64 - offered as f64).abs() <= 0.03 * offered as f64,
        "{rating:?}: offered {offered}"
    );
    let truth = delivered * 1000 / offered;
    let permille = u64::from(rating.delivered_permille().unwrap());
    assert!(
        permille.abs_diff(truth) <= 20,
        "{permille} ‰ rated, {truth} ‰ true"
    );
    assert!(
        (750..=900).contains(&permille),
        "{permille} ‰: a sixth lost down"
    );
    assert!(rating.uptime_permille >= 990, "{rating:?}");
    assert!(rating.line_rate > 0, "{rating:?}");
    // Signed, through its tunnel, verified against the key its credential came with.
    net.server.send_rating(net.now, RELAY, &rating);
    for _ in 0..5 {
        net.run(Duration::from_millis(10));
    }
    let got = net.relay.rating().expect("the rating through the tunnel");
    assert_eq!(got.rating, rating);
    assert!(net.consumer.rating().is_none());
    // One that expired (a proxy clock gone wrong): refused, the good one kept.
    let stale = Rating {
        issued_at: wall(&net) - 4000,
        expires_at: wall(&net) - 2000,
        ..rating
    };
    net.server.send_rating(net.now, RELAY, &stale);
    for _ in 0..5 {
        net.run(Duration::from_millis(10));
    }
    assert_eq!(net.relay.stats().drops.get(DropReason::StaleRating), 1);
    assert_eq!(net.relay.rating().unwrap().rating, rating);
}

/// The proxy's statement of a member's account reaches the member through its tunnel,
/// signed with the key its mesh credentials are signed with, and verifies there; a newer
/// one replaces it.
#[test]
fn statements_reach_the_member_and_verify() {
    use linkpool_protocol::statement::Statement;
    let mut net = Net::new();
    net.server.set_wall_clock(net.now, 1_800_000_000);
    net.connect();
    for _ in 0..10 {
        net.run(Duration::from_millis(10));
    }
    assert!(net.consumer.statement().is_none());
    let mut statement = Statement {
        member: 99,
        period_start: 1_798_761_600,
        period_end: 1_801_440_000,
        consumed_up: 1_000,
        consumed_down: 20_000,
        carried_up: 0,
        carried_down: 0,
        earned: 0,
        spent: 7,
        balance: 2_493,
        issued_at: 1_800_000_010,
    };
    for round in 0..2 {
        net.server.send_statement(net.now, CONSUMER, &statement);
        for _ in 0..5 {
            net.run(Duration::from_millis(10));
        }
        let got = net
            .consumer
            .statement()
            .expect("a statement through the tunnel");
        assert!(got.verified, "round {round}: {got:?}");
        // The proxy names the member itself, whatever the caller said.
        assert_eq!(got.statement.member, CONSUMER.0);
        assert_eq!(got.statement.balance, statement.balance);
        assert_eq!(got.statement.issued_at, statement.issued_at);
        statement.issued_at += 60;
        statement.balance -= 5;
    }
    assert_eq!(net.consumer.stats().drops.get(DropReason::BadStatement), 0);
    // The relay member got none of it.
    assert!(net.relay.statement().is_none());
}

/// Below the co-op's floor a member uses only its own line: the proxy sends it nothing
/// through a neighbour's (here its only path) until its balance is back above.
#[test]
fn below_the_floor_nothing_comes_through_a_neighbours_line() {
    use linkpool_protocol::credits::Contention;
    let mut net = Net::new();
    net.connect();
    net.server
        .set_credit_rules(Contention::default(), Some(-5_000));
    net.server.set_balance(CONSUMER, -5_001);
    for _ in 0..3 {
        net.run(Duration::from_millis(20));
    }
    for seq in 0..10 {
        net.send_down(seq);
        net.run(Duration::from_millis(5));
    }
    assert!(
        net.at_consumer.is_empty(),
        "{} came through",
        net.at_consumer.len()
    );
    net.server.set_balance(CONSUMER, -5_000);
    for _ in 0..20 {
        net.run(Duration::from_millis(20));
    }
    assert_eq!(
        net.at_consumer.len(),
        10,
        "what waited comes once it may borrow again"
    );
}

/// A statement that comes before the member's first grant (both are sent as it connects)
/// is checked once the grant, with the key, is there: not counted as bad.
#[test]
fn a_statement_before_the_grant_verifies_when_the_grant_comes() {
    use linkpool_protocol::statement::Statement;
    let mut net = Net::new();
    // No wall clock yet: the proxy grants no credential until it has one.
    net.connect();
    assert!(net.consumer.mesh_grant().is_none());
    let statement = Statement {
        member: 0,
        period_start: 1_798_761_600,
        period_end: 1_801_440_000,
        consumed_up: 1,
        consumed_down: 2,
        carried_up: 0,
        carried_down: 0,
        earned: 0,
        spent: 0,
        balance: 0,
        issued_at: 1_800_000_001,
    };
    net.server.send_statement(net.now, CONSUMER, &statement);
    for _ in 0..20 {
        net.run(Duration::from_millis(10));
    }
    let waiting = net.consumer.statement().expect("a statement");
    assert!(!waiting.verified, "no key to check it with yet");
    net.server.set_wall_clock(net.now, 1_800_000_000);
    for _ in 0..20 {
        net.run(Duration::from_millis(10));
    }
    assert!(net.consumer.mesh_grant().is_some());
    let got = net.consumer.statement().expect("a statement");
    assert!(got.verified, "{got:?}");
    assert_eq!(net.consumer.stats().drops.get(DropReason::BadStatement), 0);
}
