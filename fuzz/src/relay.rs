//! The `relay_envelope` harness: a consumer reaching the proxy only through a neighbour's
//! relay (as `protocol/tests/relay.rs` drives them), the three cores in one process with
//! fixed keys and seeds, connected once per process and kept from one input to the next
//! (neither `Client` nor `Server` is `Clone`): state drifts only by counters and what the
//! proxy remembers of initiations, since the fuzzer cannot forge a tag or a seal.
//!
//! Time stands still at the instant the consumer connected (no key ages, no timer runs),
//! and the relay's caps are so large that no input runs out of them: what a datagram
//! meets depends on its bytes only.
//!
//! Each input, whole, is
//!
//! * (a) a datagram from the consumer (an admitted neighbour) on the mesh, to the relay's
//!   `relay_up`: when relayed, it goes to the proxy on the relay's own path, carried
//!   untouched, and the proxy's `handle_datagram` takes or refuses it; from a stranger it
//!   is always refused;
//! * (b) a datagram to the proxy from the relay's WAN address;
//! * (c) a datagram from the proxy on the relay's own path (a RelayDown): when it goes on
//!   to a neighbour, that neighbour holds the slot it names;
//! * (d) a datagram on the mesh to the relay's and to the consumer's
//!   `handle_mesh_datagram` (from each other's mesh address; a stranger's is never
//!   relayed).
//!
//! With an odd first byte and at least 5 bytes, `slot:u32be inner` after it is also sealed
//! with the relay session's real tag keys (which the fuzzer cannot find): as a RelayDown to
//! the relay (delivered exactly when `slot` is a slot the relay gave out and still holds,
//! to that neighbour, `inner` untouched; else refused as `unknown_relay_slot`), and as a
//! RelayUp to the proxy (past the tag: the carried datagram's own checks).
//!
//! Throughout: no panic; every `Err(reason)` of `relay_up`, `handle_datagram` (relay and
//! proxy) is counted once under that reason; no drop counter, relay counter or proxy
//! counter ever goes back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, MeshReceived, Received, Transmit};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::relay::{self, RelayCounters, RelayPolicy};
use linkpool_protocol::server::{self, Accepted, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{MAX_DATAGRAM, MessageType, RELAY_HEADER_LEN, RELAY_OVERHEAD};
use linkpool_protocol::{CipherSuite, DropCounters, DropReason, PathId};

use crate::session::ipv4_packet;

/// The consumer's static secret (tunnel address 10.77.0.2, as `session::ipv4_packet`'s).
pub const CONSUMER_KEY: [u8; 32] = [0x61; 32];
/// The relay member's static secret.
pub const RELAY_KEY: [u8; 32] = [0x62; 32];
/// The proxy's static secret.
pub const PROXY_KEY: [u8; 32] = [0x63; 32];
/// The relay's member id at the proxy.
pub const RELAY_MEMBER: u32 = 1;
/// Clients' wall clock at the start, µs.
pub const WALL_CLOCK_US: u64 = 1_700_000_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

/// The proxy's address.
pub fn proxy_addr() -> SocketAddr {
    addr("203.0.113.10:7117")
}
/// The relay's line, as the proxy sees it.
pub fn relay_wan() -> SocketAddr {
    addr("198.51.100.2:40000")
}
/// The relay's mesh socket.
pub fn relay_mesh() -> SocketAddr {
    addr("10.99.0.2:7118")
}
/// The consumer's mesh socket (admitted).
pub fn consumer_mesh() -> SocketAddr {
    addr("10.99.0.3:40001")
}
/// A second admitted neighbour (it sends nothing).
pub fn other_mesh() -> SocketAddr {
    addr("10.99.0.4:40001")
}
/// A neighbour admitted once and expelled before the consumer took its slot.
pub fn gone_mesh() -> SocketAddr {
    addr("10.99.0.5:40001")
}
/// Someone on the mesh the relay never admitted.
pub fn stranger() -> SocketAddr {
    addr("10.99.0.66:40001")
}

fn config(key: [u8; 32]) -> ClientConfig {
    ClientConfig {
        static_key: SecretKey::from_bytes(key),
        proxy_key: SecretKey::from_bytes(PROXY_KEY).public_key(),
        psk: None,
        suite: CipherSuite::ChaCha20Poly1305,
        limits: Limits::default(),
        mtu: 1400,
        queue_slots: 64,
    }
}

/// Caps no input gets near (a bucket holds 10 ms of the rate).
const UNLIMITED: u64 = 1 << 50;

/// Every drop counter, and the relay's and proxy's own counters, at one moment.
#[derive(Clone)]
struct Snapshot {
    relay_drops: DropCounters,
    consumer_drops: DropCounters,
    proxy_drops: DropCounters,
    relay_totals: RelayCounters,
    per_neighbour: Vec<(SocketAddr, RelayCounters)>,
    proxy: [u64; 4],
}

fn counters_le(a: &RelayCounters, b: &RelayCounters) -> bool {
    a.up_packets <= b.up_packets
        && a.up_bytes <= b.up_bytes
        && a.down_packets <= b.down_packets
        && a.down_bytes <= b.down_bytes
        && a.over_cap <= b.over_cap
        && a.owner_first <= b.owner_first
}

fn drops_le(what: &str, a: &DropCounters, b: &DropCounters) {
    for reason in DropReason::ALL {
        let (x, y) = (a.get(reason), b.get(reason));
        assert!(x <= y, "{what} drops for {reason:?} went back: {x} to {y}");
    }
}

/// The consumer, its relay and the proxy, connected.
pub struct Relayed {
    /// The instant everything happens at.
    pub now: Instant,
    /// The proxy.
    pub server: Server,
    /// The member that reaches the proxy through the relay.
    pub consumer: Client,
    /// The member that relays.
    pub relay: Client,
    /// The relay's own line.
    pub relay_path: PathId,
    /// The consumer's path through the relay.
    pub consumer_path: PathId,
    /// The relay's index at the proxy for its session (what a RelayUp names).
    pub relay_index_up: u32,
    /// The relay's own index for its session (what a RelayDown names).
    pub relay_index_down: u32,
    /// The slot the expelled neighbour had (the consumer's, a generation before).
    pub stale_slot: u32,
    /// Real datagrams seen while connecting: the consumer's on the mesh, the relay's
    /// envelopes up, the proxy's envelopes down.
    pub captured: Captured,
}

/// Datagrams seen while connecting (for seeds).
#[derive(Default)]
pub struct Captured {
    /// What the consumer sent on the mesh (transport and initiations).
    pub mesh: Vec<Vec<u8>>,
    /// RelayUp envelopes the relay sent.
    pub up: Vec<Vec<u8>>,
    /// RelayDown envelopes the proxy sent.
    pub down: Vec<Vec<u8>>,
}

impl Relayed {
    /// Builds the three and connects them (a few handshakes: milliseconds under the
    /// fuzzer's instrumentation, once per process).
    pub fn new() -> Relayed {
        let start = Instant::now();
        let proxy = SecretKey::from_bytes(PROXY_KEY);
        let member = |key: [u8; 32], ip: [u8; 4]| MemberKey {
            public_key: SecretKey::from_bytes(key).public_key(),
            psk: None,
            addresses: vec![ip.into()],
        };
        let server = Server::new(
            ServerConfig {
                static_key: proxy,
                members: vec![
                    member(CONSUMER_KEY, [10, 77, 0, 2]),
                    member(RELAY_KEY, [10, 77, 0, 3]),
                ],
                limits: Limits::default(),
                handshakes_per_second: 50,
                mtu: 1400,
                queue_slots: server::DEFAULT_QUEUE_SLOTS,
            },
            start,
            [7; 32],
        );
        let mut relay = Client::new(config(RELAY_KEY), start, WALL_CLOCK_US, 1);
        let relay_path = relay.open_path(start, proxy_addr(), PathSettings::default());
        relay.relay_mut().set_policy(RelayPolicy {
            sharing: true,
            up_total: UNLIMITED,
            down_total: UNLIMITED,
            up_per_neighbour: UNLIMITED,
            down_per_neighbour: UNLIMITED,
        });
        let mut consumer = Client::new(config(CONSUMER_KEY), start, WALL_CLOCK_US, 2);
        let consumer_path =
            consumer.open_relayed_path(start, relay_mesh(), RELAY_MEMBER, PathSettings::default());
        let mut r = Relayed {
            now: start,
            server,
            consumer,
            relay,
            relay_path,
            consumer_path,
            relay_index_up: 0,
            relay_index_down: 0,
            stale_slot: 0,
            captured: Captured::default(),
        };
        for _ in 0..50 {
            r.run(Duration::from_millis(10));
        }
        assert!(r.relay.is_connected(), "the relay's own session");
        // A neighbour that came and went: the consumer gets its slot's next generation.
        r.stale_slot = r.relay.relay_mut().admit(gone_mesh()).expect("a slot");
        r.relay.relay_mut().expel(gone_mesh());
        let slot = r.relay.relay_mut().admit(consumer_mesh()).expect("a slot");
        assert_eq!(slot & 0xff, r.stale_slot & 0xff);
        r.relay.relay_mut().admit(other_mesh()).expect("a slot");
        for _ in 0..100 {
            r.run(Duration::from_millis(10));
            if r.consumer.is_connected() {
                break;
            }
        }
        assert!(r.consumer.is_connected(), "the consumer, through the relay");
        // Traffic both ways, so that envelopes both ways are seen.
        for seq in 0..3 {
            let p = ipv4_packet(100, seq);
            r.consumer.handle_packet(r.now, &p).expect("a LAN packet");
            let d = crate::session::downstream(&p);
            r.server
                .handle_packet(r.now, &d)
                .expect("an Internet packet");
            r.run(Duration::from_millis(5));
        }
        r.run(Duration::ZERO);
        let (index, _, _) = r.relay.relay_keys().expect("the relay's session");
        r.relay_index_up = index;
        let down = r.captured.down.first().expect("a RelayDown was seen");
        r.relay_index_down = u32::from_be_bytes(down[4..8].try_into().expect("4 bytes"));
        r
    }

    /// Carries what each core sends until nothing moves, then advances the clock by `step`
    /// and runs the timers (while connecting only).
    fn run(&mut self, step: Duration) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(t) = self.relay.poll_transmit(self.now, &mut buf) {
                moved = true;
                let _ = self
                    .server
                    .handle_datagram(self.now, relay_wan(), None, &mut buf[..t.len]);
            }
            let mut mesh = vec![0u8; MAX_DATAGRAM];
            while let Some(t) = self
                .consumer
                .poll_transmit(self.now, &mut mesh[RELAY_HEADER_LEN..])
            {
                moved = true;
                self.captured
                    .mesh
                    .push(mesh[RELAY_HEADER_LEN..][..t.len].to_vec());
                if let Ok(up) = self
                    .relay
                    .relay_up(self.now, consumer_mesh(), &mut mesh, t.len)
                {
                    self.captured.up.push(mesh[..up.len].to_vec());
                    let _ = self.server.handle_datagram(
                        self.now,
                        relay_wan(),
                        None,
                        &mut mesh[..up.len],
                    );
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                moved = true;
                if buf[1] == MessageType::RelayDown as u8 {
                    self.captured.down.push(buf[..t.len].to_vec());
                }
                if let Ok(Received::Relay { start, len, .. }) =
                    self.relay
                        .handle_datagram(self.now, self.relay_path, &mut buf[..t.len])
                {
                    let _ = self.consumer.handle_datagram(
                        self.now,
                        self.consumer_path,
                        &mut buf[start..start + len],
                    );
                }
            }
            let mut inner = vec![0u8; MAX_DATAGRAM];
            while self.server.poll_packet(&mut inner).is_some() {}
            while self.consumer.poll_packet(&mut inner).is_some() {}
            while self.server.poll_event().is_some() {}
            while self.consumer.poll_event().is_some() {}
            while self.relay.poll_event().is_some() {}
        }
        self.now += step;
        self.relay.handle_timeout(self.now);
        self.consumer.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    fn snapshot(&self) -> Snapshot {
        let s = self.server.stats();
        Snapshot {
            relay_drops: self.relay.stats().drops.clone(),
            consumer_drops: self.consumer.stats().drops.clone(),
            proxy_drops: s.drops.clone(),
            relay_totals: *self.relay.relay().totals(),
            per_neighbour: self.relay.relay().neighbours().collect(),
            proxy: [
                s.handshakes,
                s.handshakes_processed,
                s.cookies_sent,
                self.relay.stats().handshakes_completed,
            ],
        }
    }

    fn check_forward(&self, before: &Snapshot) {
        let now = self.snapshot();
        drops_le("relay", &before.relay_drops, &now.relay_drops);
        drops_le("consumer", &before.consumer_drops, &now.consumer_drops);
        drops_le("proxy", &before.proxy_drops, &now.proxy_drops);
        assert!(
            counters_le(&before.relay_totals, &now.relay_totals),
            "relay totals went back: {:?} to {:?}",
            before.relay_totals,
            now.relay_totals
        );
        for (n, c) in &before.per_neighbour {
            let (_, d) = now
                .per_neighbour
                .iter()
                .find(|(m, _)| m == n)
                .expect("no neighbour is expelled while fuzzing");
            assert!(counters_le(c, d), "{n}'s counters went back");
        }
        for (a, b) in before.proxy.iter().zip(&now.proxy) {
            assert!(a <= b, "a proxy counter went back");
        }
    }

    /// The neighbours the relay holds a slot for.
    fn admitted(&self) -> [SocketAddr; 2] {
        [consumer_mesh(), other_mesh()]
    }

    /// A datagram `relay_up` or `handle_mesh_datagram` produced from `inner` (a
    /// neighbour's datagram of `len` bytes at `buf[RELAY_HEADER_LEN..]`): it goes to the
    /// proxy on the relay's own line, carrying `inner` untouched; the proxy may refuse it,
    /// and counts it once if it does.
    fn relayed(&mut self, t: Transmit, buf: &mut [u8], inner: &[u8], from: SocketAddr) {
        assert!(
            self.admitted().contains(&from),
            "relayed for {from}, never admitted"
        );
        assert_eq!(t.path, self.relay_path, "relayed on another path");
        assert_eq!(t.remote, proxy_addr(), "relayed to {}", t.remote);
        assert_eq!(t.len, inner.len() + RELAY_OVERHEAD);
        assert!(t.len <= MAX_DATAGRAM);
        assert_eq!(&buf[RELAY_HEADER_LEN..][..inner.len()], inner, "altered");
        assert_eq!(buf[1], MessageType::RelayUp as u8);
        let slot = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
        assert_eq!(self.relay.relay().slot_of(from), Some(slot));
        let _ = self.deliver_to_proxy(&mut buf[..t.len]);
    }

    /// `datagram` to the proxy from the relay's line; a refusal is counted once.
    fn deliver_to_proxy(&mut self, datagram: &mut [u8]) -> Result<Accepted, DropReason> {
        let before = self.server.stats().drops.clone();
        let r = self
            .server
            .handle_datagram(self.now, relay_wan(), None, datagram);
        counted_once("proxy", &before, &self.server.stats().drops, r)
    }

    /// `datagram` to the relay on its own line.
    fn deliver_to_relay(&mut self, datagram: &mut [u8]) -> Result<Received, DropReason> {
        let before = self.relay.stats().drops.clone();
        let r = self
            .relay
            .handle_datagram(self.now, self.relay_path, datagram);
        let r = counted_once("relay", &before, &self.relay.stats().drops, r);
        if let Ok(Received::Relay { to, start, len }) = r {
            assert!(self.admitted().contains(&to), "sent on to {to}");
            assert!(start + len <= datagram.len());
        }
        r
    }

    /// `data` from `from` on the mesh, to the relay's `relay_up`.
    fn up_from(&mut self, from: SocketAddr, data: &[u8]) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let fits = data.len().min(MAX_DATAGRAM - RELAY_HEADER_LEN);
        buf[RELAY_HEADER_LEN..][..fits].copy_from_slice(&data[..fits]);
        let before = self.relay.stats().drops.clone();
        let r = self.relay.relay_up(self.now, from, &mut buf, data.len());
        let r = counted_once("relay_up", &before, &self.relay.stats().drops, r);
        if let Ok(t) = r {
            assert!(from != stranger(), "relayed for a stranger");
            self.relayed(t, &mut buf, data, from);
        }
    }

    /// `data` on the mesh, to the relay from `from` and to the consumer from the relay.
    fn mesh(&mut self, from: SocketAddr, data: &[u8]) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let fits = data.len().min(MAX_DATAGRAM - RELAY_HEADER_LEN);
        buf[RELAY_HEADER_LEN..][..fits].copy_from_slice(&data[..fits]);
        if let Ok(MeshReceived::Relay(t)) =
            self.relay
                .handle_mesh_datagram(self.now, from, relay_mesh(), &mut buf, data.len())
        {
            assert!(from != stranger(), "relayed for a stranger");
            self.relayed(t, &mut buf, data, from);
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[RELAY_HEADER_LEN..][..fits].copy_from_slice(&data[..fits]);
        let r = self.consumer.handle_mesh_datagram(
            self.now,
            relay_mesh(),
            consumer_mesh(),
            &mut buf,
            data.len(),
        );
        // The consumer relays for nobody (its owner does not share).
        assert!(!matches!(r, Ok(MeshReceived::Relay(_))), "{r:?}");
    }

    /// One input.
    pub fn run_input(&mut self, data: &[u8]) {
        let before = self.snapshot();
        // (a) From the admitted consumer, and from a stranger.
        self.up_from(consumer_mesh(), data);
        self.up_from(stranger(), data);
        // (b) To the proxy from the relay's line.
        if data.len() <= MAX_DATAGRAM {
            let mut d = data.to_vec();
            let _ = self.deliver_to_proxy(&mut d);
        }
        // (c) To the relay from the proxy.
        let mut d = data.to_vec();
        let _ = self.deliver_to_relay(&mut d);
        // (d) On the mesh.
        self.mesh(consumer_mesh(), data);
        self.mesh(stranger(), data);
        // Sealed with the real keys.
        if let [mode, a, b, c, d, inner @ ..] = data
            && mode % 2 == 1
        {
            self.sealed(u32::from_be_bytes([*a, *b, *c, *d]), inner);
        }
        self.drain();
        self.check_forward(&before);
    }

    /// `inner` sealed for `slot` as the proxy would send it down, and as the relay would
    /// send it up.
    fn sealed(&mut self, slot: u32, inner: &[u8]) {
        let inner = &inner[..inner.len().min(MAX_DATAGRAM - RELAY_OVERHEAD)];
        let (_, up_key, down_key) = self.relay.relay_keys().expect("the relay's session");
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[RELAY_HEADER_LEN..][..inner.len()].copy_from_slice(inner);
        let Ok(n) = relay::seal_envelope(
            &down_key,
            MessageType::RelayDown,
            self.relay_index_down,
            slot,
            &mut buf,
            inner.len(),
        ) else {
            return;
        };
        let holder = self
            .admitted()
            .into_iter()
            .find(|&a| self.relay.relay().slot_of(a) == Some(slot));
        let r = self.deliver_to_relay(&mut buf[..n]);
        if n < RELAY_OVERHEAD + 4 {
            assert_eq!(r, Err(DropReason::TooShort));
        } else {
            match holder {
                Some(to) => assert_eq!(
                    r,
                    Ok(Received::Relay {
                        to,
                        start: RELAY_HEADER_LEN,
                        len: inner.len()
                    }),
                    "slot {slot:#x}"
                ),
                None => assert_eq!(r, Err(DropReason::UnknownRelaySlot), "slot {slot:#x}"),
            }
            if r.is_ok() {
                assert_eq!(&buf[RELAY_HEADER_LEN..][..inner.len()], inner);
            }
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[RELAY_HEADER_LEN..][..inner.len()].copy_from_slice(inner);
        if let Ok(n) = relay::seal_envelope(
            &up_key,
            MessageType::RelayUp,
            self.relay_index_up,
            slot,
            &mut buf,
            inner.len(),
        ) {
            let r = self.deliver_to_proxy(&mut buf[..n]);
            // Past the tag, the carried datagram has its own checks: the fuzzer has no
            // member's keys, and what the relay itself sealed is never credited to it.
            if let Ok(a) = r {
                assert!(
                    !matches!(a, Accepted::Transport { member } if member.0 == RELAY_MEMBER),
                    "the relay credited for its own traffic"
                );
            }
        }
    }

    /// Whatever the proxy wants to send (cookie replies and the like) is dropped, at the
    /// same instant: only so that its queues do not fill.
    fn drain(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..16 {
            if self.server.poll_transmit(self.now, &mut buf).is_none() {
                break;
            }
        }
        while self.server.poll_event().is_some() {}
        while self.relay.poll_event().is_some() {}
        while self.consumer.poll_event().is_some() {}
        while self.server.poll_packet(&mut buf).is_some() {}
        while self.consumer.poll_packet(&mut buf).is_some() {}
    }

    /// Seed inputs from what was seen while connecting: `(name, bytes)`.
    pub fn seeds(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let c = &self.captured;
        let transport = c.mesh.iter().find(|d| d[1] == MessageType::Transport as u8);
        if let Some(d) = transport {
            out.push(("consumer-transport".to_string(), d.clone()));
        }
        if let Some(d) = c.up.iter().find(|d| d[RELAY_HEADER_LEN + 1] == 4) {
            out.push(("relay-up-transport".to_string(), d.clone()));
        }
        if let Some(d) = c.up.iter().find(|d| d[RELAY_HEADER_LEN + 1] == 1) {
            out.push(("relay-up-initiation".to_string(), d.clone()));
        }
        if let Some(d) = c.down.iter().find(|d| d[RELAY_HEADER_LEN + 1] == 4) {
            out.push(("relay-down-transport".to_string(), d.clone()));
        }
        let slot = self.relay.relay().slot_of(consumer_mesh()).expect("a slot");
        let inner = transport.cloned().unwrap_or_else(|| vec![2, 4, 0, 0]);
        for (name, s) in [
            ("sealed-consumer-slot", slot),
            ("sealed-stale-slot", self.stale_slot),
            (
                "sealed-other-slot",
                self.relay.relay().slot_of(other_mesh()).expect("a slot"),
            ),
        ] {
            let mut d = vec![1];
            d.extend(s.to_be_bytes());
            d.extend(&inner);
            out.push((name.to_string(), d));
        }
        // An initiation's shape (its mac1 wrong), and a neighbour hello's.
        let mut init = vec![0u8; linkpool_protocol::wire::HANDSHAKE_INIT_LEN];
        init[..2].copy_from_slice(&[2, 1]);
        out.push(("initiation-shape".to_string(), init));
        let mut hello = vec![0u8; linkpool_protocol::wire::NEIGHBOUR_HELLO_LEN];
        hello[..2].copy_from_slice(&[2, 9]);
        out.push(("hello-shape".to_string(), hello));
        out
    }
}

impl Default for Relayed {
    fn default() -> Self {
        Relayed::new()
    }
}

/// `r` checked to be counted in `after` exactly once under its reason if it is an error.
fn counted_once<T>(
    what: &str,
    before: &DropCounters,
    after: &DropCounters,
    r: Result<T, DropReason>,
) -> Result<T, DropReason> {
    if let Err(reason) = r {
        assert_eq!(
            after.get(reason),
            before.get(reason) + 1,
            "{what}: {reason:?} not counted once"
        );
    }
    r
}
