//! A connected gateway/proxy pair over one path or more, and packets to send through it:
//! shared by the allocation test and the throughput benchmark.
//!
//! Driven as a daemon drives the core: LAN packets in with `handle_packet`, everything
//! `poll_transmit` writes carried to the other side's `handle_datagram`, inner packets out
//! with `poll_packet`, `handle_timeout` when `poll_timeout` is due, events drained.
//!
//! The path is the shared link model (`linkpool_sim::link::LinkModel`, the one the
//! testbed's emulator and the simulator use), one per direction: it decides when each
//! datagram arrives (or that it is lost); the bytes wait in this harness's own ring,
//! allocated once.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{self, Client, ClientConfig};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{self, MemberId, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_protocol::{CipherSuite, PathId};
use linkpool_sim::link::{LinkModel, LinkParams, Verdict};

pub const MEMBER: MemberId = MemberId(0);
/// The largest inner packet both ends take.
pub const MTU: u16 = 1400;
/// The member's tunnel address.
pub const MEMBER_IP: [u8; 4] = [10, 77, 0, 2];
/// Somewhere on the Internet.
pub const INTERNET_IP: [u8; 4] = [192, 0, 2, 1];

/// What went through the pair in each direction, and how.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// Datagrams the client sent and the proxy accepted.
    pub up_datagrams: u64,
    /// Datagrams the proxy sent and the client accepted.
    pub down_datagrams: u64,
    /// Inner packets out of the proxy's `poll_packet`.
    pub up_packets: u64,
    /// Inner packets out of the client's `poll_packet`.
    pub down_packets: u64,
    /// Datagrams either side refused.
    pub refused: u64,
    /// Datagrams the link lost (either way).
    pub lost: u64,
}

pub struct Pair {
    pub client: Client,
    pub server: Server,
    /// Every path, in the order opened.
    pub paths: Vec<PathId>,
    /// The proxy's address.
    pub proxy: SocketAddr,
    pub now: Instant,
    pub carried: Carried,
    /// Per path: the member's address as the proxy sees it, and the link each way, its
    /// parameters fixed for the pair's life (an outage would have to take what it loses
    /// out of the ring too).
    links: Vec<Link>,
    /// Scratch buffers, allocated once.
    buf: Box<[u8; MAX_DATAGRAM]>,
    inner: Box<[u8; MAX_DATAGRAM]>,
}

/// Datagrams on the link, in a ring allocated once (the harness must not allocate
/// either: the allocation test counts everything). The link model gives each its due
/// time; it never reorders, so the ring stays in arrival order.
struct Held {
    bytes: Box<[u8]>,
    /// (arrival, length) per slot, oldest first.
    queue: VecDeque<(Instant, usize)>,
    head: usize,
}

const HELD_SLOTS: usize = 4096;

/// One path's link.
struct Link {
    from: SocketAddr,
    upstream: LinkModel,
    downstream: LinkModel,
    to_server: Held,
    to_client: Held,
}

impl Held {
    fn new() -> Held {
        Held {
            bytes: vec![0; HELD_SLOTS * MAX_DATAGRAM].into_boxed_slice(),
            queue: VecDeque::with_capacity(HELD_SLOTS),
            head: 0,
        }
    }

    fn push(&mut self, due: Instant, datagram: &[u8]) {
        assert!(self.queue.len() < HELD_SLOTS, "link full");
        debug_assert!(self.queue.back().is_none_or(|&(last, _)| last <= due));
        let slot = (self.head + self.queue.len()) % HELD_SLOTS;
        self.bytes[slot * MAX_DATAGRAM..][..datagram.len()].copy_from_slice(datagram);
        self.queue.push_back((due, datagram.len()));
    }

    /// The oldest datagram if it is due by `now`, copied into `out`; its length.
    fn pop(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let &(due, len) = self.queue.front()?;
        if due > now {
            return None;
        }
        self.queue.pop_front();
        out[..len].copy_from_slice(&self.bytes[self.head * MAX_DATAGRAM..][..len]);
        self.head = (self.head + 1) % HELD_SLOTS;
        Some(len)
    }
}

impl Pair {
    /// A pair over an instant, lossless link with a session up (both ends confirmed, the
    /// path active), at `now`.
    pub fn connected(suite: CipherSuite) -> Pair {
        Pair::connected_over(suite, Duration::ZERO)
    }

    /// The same over a lossless link with a one-way `delay`.
    pub fn connected_over(suite: CipherSuite, delay: Duration) -> Pair {
        let link = LinkParams {
            delay,
            ..LinkParams::default()
        };
        Pair::connected_with(suite, link, link)
    }

    /// The same over a link with these parameters each way (the handshake must get
    /// through them within the warm-up).
    pub fn connected_with(
        suite: CipherSuite,
        upstream: LinkParams,
        downstream: LinkParams,
    ) -> Pair {
        Pair::connected_over_paths(suite, &[(upstream, downstream)])
    }

    /// The same over one path per entry of `links` (upstream, downstream).
    pub fn connected_over_paths(suite: CipherSuite, links: &[(LinkParams, LinkParams)]) -> Pair {
        let start = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let member_key = SecretKey::generate().unwrap();
        let limits = Limits::default();
        let server = Server::new(
            ServerConfig {
                static_key: proxy_key.clone(),
                members: vec![MemberKey {
                    public_key: member_key.public_key(),
                    psk: None,
                    addresses: vec!["10.77.0.2".parse().unwrap()],
                }],
                limits,
                handshakes_per_second: 50,
                mtu: MTU,
                queue_slots: server::DEFAULT_QUEUE_SLOTS,
            },
            start,
            [7; 32],
        );
        let mut client = Client::new(
            ClientConfig {
                static_key: member_key,
                proxy_key: proxy_key.public_key(),
                psk: None,
                suite,
                limits,
                mtu: MTU,
                queue_slots: client::DEFAULT_QUEUE_SLOTS,
            },
            start,
            1_700_000_000_000_000,
            3,
        );
        let proxy: SocketAddr = "203.0.113.1:7117".parse().unwrap();
        let paths: Vec<PathId> = links
            .iter()
            .map(|_| client.open_path(start, proxy, PathSettings::default()))
            .collect();
        let mut pair = Pair {
            client,
            server,
            paths: paths.clone(),
            proxy,
            now: start,
            carried: Carried::default(),
            links: links
                .iter()
                .zip(1u64..)
                .map(|(&(upstream, downstream), k)| Link {
                    from: SocketAddr::from(([198, 51, 100, 7], 40000 + k as u16)),
                    upstream: preallocated(upstream, 2 * k),
                    downstream: preallocated(downstream, 2 * k + 1),
                    to_server: Held::new(),
                    to_client: Held::new(),
                })
                .collect(),
            buf: Box::new([0; MAX_DATAGRAM]),
            inner: Box::new([0; MAX_DATAGRAM]),
        };
        // The handshake, then the first pings confirm the keys and the paths.
        let rtt = links
            .iter()
            .map(|(up, down)| up.delay + down.delay)
            .max()
            .unwrap_or_default();
        for _ in 0..20 + 4 * rtt.as_millis() {
            pair.exchange();
            pair.now += Duration::from_millis(1);
        }
        assert!(pair.client.is_connected(), "{suite:?}: no session");
        assert!(
            pair.server.member(MEMBER).unwrap().connected,
            "{suite:?}: the proxy has no confirmed session"
        );
        for path in paths {
            assert_eq!(
                pair.client.path(path).unwrap().state(),
                linkpool_protocol::path::PathState::Active,
                "{suite:?}"
            );
        }
        pair
    }

    /// Delivers what the link has due, runs both sides' timers that are due, and puts
    /// everything either side wants sent on the link (what is due at once is delivered
    /// at once, until neither side has anything more).
    pub fn exchange(&mut self) {
        let now = self.now;
        self.arrive();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        while self.up() | self.down() {}
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
    }

    /// Hands every datagram due on the link to its receiver, in a batch as a daemon's
    /// `recvmmsg` would, and then takes the inner packets out.
    fn arrive(&mut self) {
        let now = self.now;
        for i in 0..self.links.len() {
            while let Some(len) = self.links[i].to_server.pop(now, &mut self.buf[..]) {
                self.at_server(i, len);
            }
        }
        self.packets_at_server();
        for i in 0..self.links.len() {
            while let Some(len) = self.links[i].to_client.pop(now, &mut self.buf[..]) {
                self.at_client(i, len);
            }
        }
        self.packets_at_client();
    }

    /// The proxy receives `buf[..len]` on path `i`.
    fn at_server(&mut self, i: usize, len: usize) {
        let now = self.now;
        let from = self.links[i].from;
        match self
            .server
            .handle_datagram(now, from, Some(self.proxy), &mut self.buf[..len])
        {
            Ok(_) => self.carried.up_datagrams += 1,
            Err(_) => self.carried.refused += 1,
        }
    }

    fn packets_at_server(&mut self) {
        while self.server.poll_packet(&mut self.inner[..]).is_some() {
            self.carried.up_packets += 1;
        }
    }

    /// The client receives `buf[..len]` on path `i`.
    fn at_client(&mut self, i: usize, len: usize) {
        let now = self.now;
        match self
            .client
            .handle_datagram(now, self.paths[i], &mut self.buf[..len])
        {
            Ok(_) => self.carried.down_datagrams += 1,
            Err(_) => self.carried.refused += 1,
        }
    }

    fn packets_at_client(&mut self) {
        while self.client.poll_packet(&mut self.inner[..]).is_some() {
            self.carried.down_packets += 1;
        }
    }

    /// Sends everything the client has to send on the link (what is due at once, as over
    /// an instant link, is received at once). Returns whether anything was sent.
    pub fn up(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        while let Some(t) = self.client.poll_transmit(now, &mut self.buf[..]) {
            any = true;
            debug_assert_eq!(t.remote, self.proxy);
            let i = self
                .paths
                .iter()
                .position(|&p| p == t.path)
                .expect("a path");
            let link = &mut self.links[i];
            match link.upstream.offer(now, t.len) {
                // Nothing of the link's is waiting before it (it never reorders).
                Verdict::Deliver(due) if due <= now && link.to_server.queue.is_empty() => {
                    self.at_server(i, t.len);
                    self.packets_at_server();
                }
                Verdict::Deliver(due) => link.to_server.push(due, &self.buf[..t.len]),
                Verdict::Dropped(_) => self.carried.lost += 1,
            }
        }
        any
    }

    /// Sends everything the proxy has to send on the link (what is due at once is
    /// received at once). Returns whether anything was sent.
    pub fn down(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf[..]) {
            any = true;
            debug_assert_eq!(t.local, Some(self.proxy));
            let i = self
                .links
                .iter()
                .position(|l| l.from == t.remote)
                .expect("a member address");
            let link = &mut self.links[i];
            match link.downstream.offer(now, t.len) {
                Verdict::Deliver(due) if due <= now && link.to_client.queue.is_empty() => {
                    self.at_client(i, t.len);
                    self.packets_at_client();
                }
                Verdict::Deliver(due) => link.to_client.push(due, &self.buf[..t.len]),
                Verdict::Dropped(_) => self.carried.lost += 1,
            }
        }
        any
    }
}

/// A link model with room for as many datagrams in flight as the ring holds: the
/// allocation test must see none from the model either.
fn preallocated(params: LinkParams, seed: u64) -> LinkModel {
    let mut link = LinkModel::new(params, seed);
    link.reserve(HELD_SLOTS);
    link
}

/// Writes a UDP/IPv4 packet of `len` bytes between the member's tunnel address and the
/// Internet at the start of `buf`; returns `len`.
pub fn packet(buf: &mut [u8], len: usize, upstream: bool, seq: u32) -> usize {
    let p = &mut buf[..len];
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    let (src, dst) = if upstream {
        (MEMBER_IP, INTERNET_IP)
    } else {
        (INTERNET_IP, MEMBER_IP)
    };
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    len
}

/// A packet of one UDP flow (`port` at both ends), its `seq` in the payload; see
/// [`packet`].
pub fn flow_packet(buf: &mut [u8], len: usize, upstream: bool, port: u16, seq: u32) -> usize {
    packet(buf, len, upstream, 0);
    buf[20..22].copy_from_slice(&port.to_be_bytes());
    buf[22..24].copy_from_slice(&port.to_be_bytes());
    buf[28..32].copy_from_slice(&seq.to_be_bytes());
    len
}

/// A neighbour's owner sharing 10 MB/s each way, with every neighbour and in all.
pub fn sharing() -> linkpool_protocol::relay::RelayPolicy {
    linkpool_protocol::relay::RelayPolicy {
        sharing: true,
        up_total: 10_000_000,
        down_total: 10_000_000,
        up_per_neighbour: 10_000_000,
        down_per_neighbour: 10_000_000,
    }
}
