//! Gateway and proxy sessions driven in one process over simulated links: time is
//! stepped by hand, so every run is the same. The links are the shared link model
//! (`linkpool_sim::link::LinkModel`, the one the testbed's emulator and the simulator
//! use), one per direction of each uplink: every datagram the harness carries is offered
//! to it, and it decides when the datagram arrives or that it is lost.
//!
//! The harness drives both ends as their daemons do: time moves, datagrams that are due
//! arrive (`handle_datagram`: at the client with the path of the uplink they came in on,
//! at the proxy with the member's address and the proxy's own), timers run when due
//! (`handle_timeout`), and everything `poll_transmit` writes goes on the link its
//! `Transmit` names. Inner packets go in with `handle_packet` and come out of
//! `poll_packet`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{self, Client, ClientConfig, Event, Liveness};
use linkpool_protocol::frame;
use linkpool_protocol::keys::{SecretKey, SharedSecret};
use linkpool_protocol::path::{PathSettings, PathState};
use linkpool_protocol::server::{
    self, Accepted, MemberId, MemberKey, Server, ServerConfig, ServerEvent,
};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{self, MAX_DATAGRAM, MessageType};
use linkpool_protocol::{CipherSuite, DropReason, PathId, Transmit};
use linkpool_sim::link::{LinkModel, LinkParams, Verdict};

const MEMBER: MemberId = MemberId(0);
/// The member's tunnel address, and somewhere on the Internet.
const MEMBER_IP: [u8; 4] = [10, 77, 0, 2];
const INTERNET_IP: [u8; 4] = [192, 0, 2, 1];
const MTU: u16 = 1400;

fn ipv4(len: usize, src: [u8; 4], dst: [u8; 4], seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

/// A packet from the member's LAN to the Internet.
fn up(len: usize, seq: u32) -> Vec<u8> {
    ipv4(len, MEMBER_IP, INTERNET_IP, seq)
}

/// A packet from the Internet to the member.
fn down(len: usize, seq: u32) -> Vec<u8> {
    ipv4(len, INTERNET_IP, MEMBER_IP, seq)
}

fn seq_of(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[20..24].try_into().unwrap())
}

/// One of the member's uplinks: a client path, the member's address on it as the proxy
/// sees it, the proxy address it goes to, and the link model of each direction.
struct Link {
    path: PathId,
    member_addr: SocketAddr,
    proxy_addr: SocketAddr,
    /// From the member to the proxy.
    upstream: LinkModel,
    /// From the proxy to the member.
    downstream: LinkModel,
}

impl Link {
    /// The round trip over the link when nothing waits: both directions' delays.
    fn rtt(&self) -> Duration {
        self.upstream.params().delay + self.downstream.params().delay
    }
}

/// The parameters of a lossless link with this one-way delay (no rate limit, no jitter).
fn link_params(delay: Duration) -> LinkParams {
    LinkParams {
        delay,
        ..LinkParams::default()
    }
}

/// A datagram the link model accepted, carried by the harness until it is due.
struct InFlight {
    due: Instant,
    link: usize,
    bytes: Vec<u8>,
}

/// One member, one proxy, the member's uplinks between them.
struct Net {
    proxy_key: SecretKey,
    members: Vec<MemberKey>,
    limits: Limits,
    now: Instant,
    client: Client,
    server: Server,
    links: Vec<Link>,
    to_server: Vec<InFlight>,
    to_client: Vec<InFlight>,
    /// Inner packets that came out of each side.
    at_server: Vec<Vec<u8>>,
    at_client: Vec<Vec<u8>>,
    /// Attack traffic the proxy gets before the member's, a burst per step.
    flood: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Everything each side sent.
    client_sent: Vec<(Instant, Transmit)>,
    server_sent: Vec<(Instant, Transmit)>,
    client_events: Vec<(Instant, Event)>,
    server_events: Vec<(Instant, ServerEvent)>,
    /// Datagrams the proxy sent to an address no uplink has.
    nowhere: usize,
}

fn client_config(static_key: SecretKey, proxy: &SecretKey, limits: Limits) -> ClientConfig {
    ClientConfig {
        static_key,
        proxy_key: proxy.public_key(),
        psk: None,
        suite: CipherSuite::Aes256Gcm,
        limits,
        mtu: MTU,
        queue_slots: client::DEFAULT_QUEUE_SLOTS,
    }
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
            mtu: MTU,
            queue_slots: server::DEFAULT_QUEUE_SLOTS,
        },
        now,
        [seed; 32],
    )
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
            addresses: vec!["10.77.0.2".parse().unwrap()],
        }];
        let server = server(&proxy_key, members.clone(), limits, now, 9);
        let client = Client::new(
            ClientConfig {
                psk,
                suite,
                ..client_config(member_key, &proxy_key, limits)
            },
            now,
            1_700_000_000_000_000,
            1,
        );
        let mut net = Net {
            proxy_key,
            members,
            limits,
            now,
            client,
            server,
            links: Vec::new(),
            to_server: Vec::new(),
            to_client: Vec::new(),
            at_server: Vec::new(),
            at_client: Vec::new(),
            flood: VecDeque::new(),
            client_sent: Vec::new(),
            server_sent: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            nowhere: 0,
        };
        net.add_link(
            "198.51.100.7:40000".parse().unwrap(),
            Duration::from_millis(15),
        );
        net
    }

    /// Opens a client path over a new uplink, lossless with a one-way `delay` each way;
    /// returns its index in `links`.
    fn add_link(&mut self, member_addr: SocketAddr, delay: Duration) -> usize {
        let proxy_addr: SocketAddr = "203.0.113.1:7117".parse().unwrap();
        let path = self
            .client
            .open_path(self.now, proxy_addr, PathSettings::default());
        // Seeded by position: the same links, the same draws, every run.
        let seed = 2 * self.links.len() as u64;
        self.links.push(Link {
            path,
            member_addr,
            proxy_addr,
            upstream: LinkModel::new(link_params(delay), seed),
            downstream: LinkModel::new(link_params(delay), seed + 1),
        });
        self.links.len() - 1
    }

    /// The first uplink's path.
    fn p0(&self) -> PathId {
        self.links[0].path
    }

    /// Gives every link this one-way delay each way, from now on.
    fn set_delay(&mut self, delay: Duration) {
        for i in 0..self.links.len() {
            self.set_link_delay(i, delay);
        }
    }

    /// Gives link `i` this one-way delay each way, from now on (what is in flight keeps
    /// its due time; the model never reorders, so nothing overtakes it).
    fn set_link_delay(&mut self, i: usize, delay: Duration) {
        let now = self.now;
        let link = &mut self.links[i];
        for model in [&mut link.upstream, &mut link.downstream] {
            let params = LinkParams {
                delay,
                ..*model.params()
            };
            model.set_params(now, params);
        }
    }

    /// Takes a direction of link `i` down (an outage: what is in flight that way is
    /// lost) or brings it back up, as the testbed's `link` command does.
    fn set_up(&mut self, i: usize, upstream: bool, up: bool) {
        let now = self.now;
        let link = &mut self.links[i];
        let model = if upstream {
            &mut link.upstream
        } else {
            &mut link.downstream
        };
        if model.params().up == up {
            return;
        }
        let params = LinkParams {
            up,
            ..*model.params()
        };
        let lost = model.set_params(now, params);
        // The model's verdict on what was in flight, applied to the bytes carried here.
        let queue = if upstream {
            &mut self.to_server
        } else {
            &mut self.to_client
        };
        let before = queue.len();
        queue.retain(|f| f.link != i || f.due <= now);
        assert_eq!(
            (before - queue.len()) as u64,
            lost,
            "the harness carried what the link model had in flight"
        );
    }

    /// The proxy's view of the member's path over link `i`.
    fn server_path(&self, i: usize) -> linkpool_protocol::path::Path {
        let id = self.links[i].path;
        self.server
            .member(MEMBER)
            .unwrap()
            .paths
            .iter()
            .find(|p| p.id() == id)
            .expect("the proxy knows the path")
            .clone()
    }

    fn client_path(&self, i: usize) -> &linkpool_protocol::path::Path {
        self.client.path(self.links[i].path).unwrap()
    }

    /// Moves time forward by `step`: the flood, then every datagram that is due, in
    /// order, then the timers that are due, then whatever both sides want sent.
    fn step(&mut self, step: Duration) {
        // Every arrival and timer before the end of the step is handled at its own time,
        // as an event loop would (the cores pace what they send).
        let target = self.now + step;
        for _ in 0..1_000_000 {
            let due = self
                .to_server
                .iter()
                .chain(&self.to_client)
                .map(|f| f.due)
                .chain(self.client.poll_timeout())
                .chain(self.server.poll_timeout())
                .min();
            match due {
                Some(t) if t < target => {
                    self.now = self.now.max(t);
                    self.settle();
                }
                _ => {
                    self.now = target;
                    for (from, mut d) in self
                        .flood
                        .drain(..self.flood.len().min(100))
                        .collect::<Vec<_>>()
                    {
                        let _ = self.at_server(from, self.links[0].proxy_addr, &mut d);
                        // The daemon sends the proxy's answers after each datagram.
                        self.pump();
                    }
                    self.settle();
                    return;
                }
            }
        }
        panic!(
            "a core asks to be woken again and again at {:?}: it spins",
            self.now
        );
    }

    /// Hands over what has arrived by now, runs the timers due, sends what is ready.
    fn settle(&mut self) {
        while let Some((to_server, f)) = self.next_arrival() {
            let link = &self.links[f.link];
            let mut d = f.bytes;
            if to_server {
                let (from, local) = (link.member_addr, link.proxy_addr);
                let _ = self.at_server(from, local, &mut d);
            } else {
                let path = link.path;
                let _ = self.at_client(path, &mut d);
            }
        }
        let now = self.now;
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        self.pump();
    }

    /// The earliest datagram due by now, either way (the one sent first among equals).
    fn next_arrival(&mut self) -> Option<(bool, InFlight)> {
        let now = self.now;
        let earliest = |q: &Vec<InFlight>| {
            (0..q.len())
                .filter(|&i| q[i].due <= now)
                .min_by_key(|&i| (q[i].due, i))
        };
        let up = earliest(&self.to_server);
        let down = earliest(&self.to_client);
        match (up, down) {
            (Some(u), Some(d)) if self.to_client[d].due < self.to_server[u].due => {
                Some((false, self.to_client.remove(d)))
            }
            (Some(u), _) => Some((true, self.to_server.remove(u))),
            (None, Some(d)) => Some((false, self.to_client.remove(d))),
            (None, None) => None,
        }
    }

    /// The proxy receives a datagram from `from` at its address `local`; inner packets
    /// are taken out.
    fn at_server(
        &mut self,
        from: SocketAddr,
        local: SocketAddr,
        d: &mut [u8],
    ) -> Result<Accepted, DropReason> {
        let r = self.server.handle_datagram(self.now, from, Some(local), d);
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(n) = self.server.poll_packet(&mut buf) {
            self.at_server.push(buf[..n].to_vec());
        }
        r
    }

    /// The client receives a datagram on `path`; inner packets are taken out.
    fn at_client(&mut self, path: PathId, d: &mut [u8]) -> Result<client::Received, DropReason> {
        let r = self.client.handle_datagram(self.now, path, d);
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(n) = self.client.poll_packet(&mut buf) {
            self.at_client.push(buf[..n].to_vec());
        }
        r
    }

    /// Puts everything both sides want sent on the links.
    fn pump(&mut self) {
        let now = self.now;
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some(t) = self.client.poll_transmit(now, &mut buf) {
            self.client_sent.push((now, t));
            let i = self
                .links
                .iter()
                .position(|l| l.path == t.path)
                .expect("the client sends only on its paths");
            let link = &mut self.links[i];
            assert_eq!(t.remote, link.proxy_addr, "sent where the path goes");
            if let Verdict::Deliver(due) = link.upstream.offer(now, t.len) {
                self.to_server.push(InFlight {
                    due,
                    link: i,
                    bytes: buf[..t.len].to_vec(),
                });
            }
        }
        while let Some(t) = self.server.poll_transmit(now, &mut buf) {
            self.server_sent.push((now, t));
            let Some(i) = self.links.iter().position(|l| l.member_addr == t.remote) else {
                self.nowhere += 1;
                continue;
            };
            let link = &mut self.links[i];
            // The proxy answers from the address the member reached, and each path on
            // that path.
            assert_eq!(t.local, Some(link.proxy_addr));
            if buf[1] == MessageType::Transport as u8 {
                assert_eq!(t.path, link.path, "answered on another path");
            }
            if let Verdict::Deliver(due) = link.downstream.offer(now, t.len) {
                self.to_client.push(InFlight {
                    due,
                    link: i,
                    bytes: buf[..t.len].to_vec(),
                });
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push((now, e));
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push((now, e));
        }
    }

    /// Runs until the session is up at both ends and every path is active at both.
    fn connect(&mut self) {
        for _ in 0..100 {
            self.step(Duration::from_millis(5));
            let member = self.server.member(MEMBER).unwrap();
            let active = |p: Option<&linkpool_protocol::path::Path>| {
                p.is_some_and(|p| p.state() == PathState::Active)
            };
            if self.client.is_connected()
                && member.connected
                && self.links.iter().all(|l| {
                    active(self.client.path(l.path))
                        && active(member.paths.iter().find(|p| p.id() == l.path))
                })
            {
                return;
            }
        }
        panic!("no session after 500 ms");
    }

    /// An inner packet from the LAN, sent as soon as the client wants to.
    fn send_up(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        self.client.handle_packet(self.now, packet)?;
        self.pump();
        Ok(())
    }

    /// An inner packet from the Internet for the member.
    fn send_down(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        assert_eq!(self.server.handle_packet(self.now, packet)?, MEMBER);
        self.pump();
        Ok(())
    }

    /// The datagram the client seals `packet` into, taken off the link (not sent).
    fn sealed_up(&mut self, packet: &[u8]) -> Vec<u8> {
        // Whatever else is due goes first, so the next datagram is the packet's.
        self.pump();
        self.client.handle_packet(self.now, packet).unwrap();
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = loop {
            match self.client.poll_transmit(self.now, &mut buf) {
                // Its datagram; an ack or ping that came due meanwhile is dropped.
                Some(t) if t.len > wire::TRANSPORT_HEADER_LEN + packet.len() => break t,
                Some(_) => continue,
                None => {}
            }
            // Paced: the packet goes when the pacer lets it.
            self.now = self
                .client
                .poll_timeout()
                .expect("a pacing time")
                .max(self.now);
            self.client.handle_timeout(self.now);
        };
        assert!(t.len >= wire::TRANSPORT_HEADER_LEN + 4 + 1 + packet.len() + wire::TAG_LEN);
        assert_eq!(self.client.queued(), 0);
        buf[..t.len].to_vec()
    }

    /// Takes off the link, unsent, the datagrams the client seals of packets
    /// `up(60, next..end)`: as many as its path's congestion window and pacer let go in
    /// a millisecond. Acks and pings sealed meanwhile are
    /// lost.
    fn sealed_up_round(&mut self, next: &mut u32, end: u32) -> Vec<Vec<u8>> {
        let data = wire::TRANSPORT_HEADER_LEN + 4 + frame::SPREAD_PACKET_FRAME_LEN + 60;
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        let room = |c: &Client| {
            let p = &c.paths()[0];
            p.bytes_in_flight() + 2 * data as u64 <= p.congestion_window()
        };
        // A round takes at most a millisecond: unacknowledged for longer, the path would
        // soon be suspect.
        let start = self.now;
        while *next < end && room(&self.client) && self.now < start + Duration::from_millis(1) {
            self.client.handle_packet(self.now, &up(60, *next)).unwrap();
            *next += 1;
            while self.client.queued() > 0 {
                match self.client.poll_transmit(self.now, &mut buf) {
                    Some(t) if t.len >= data + wire::TAG_LEN => out.push(buf[..t.len].to_vec()),
                    Some(_) => {}
                    None => {
                        self.now = self.client.poll_timeout().expect("paced").max(self.now);
                        self.client.handle_timeout(self.now);
                    }
                }
            }
        }
        out
    }

    /// The same downstream.
    fn sealed_down(&mut self, packet: &[u8]) -> Vec<u8> {
        self.pump();
        self.server.handle_packet(self.now, packet).unwrap();
        let mut buf = [0u8; MAX_DATAGRAM];
        let t = loop {
            match self.server.poll_transmit(self.now, &mut buf) {
                // Its datagram; an ack or ping that came due meanwhile is dropped.
                Some(t) if t.len > wire::TRANSPORT_HEADER_LEN + packet.len() => break t,
                Some(_) => continue,
                None => {}
            }
            self.now = self
                .server
                .poll_timeout()
                .expect("a pacing time")
                .max(self.now);
            self.server.handle_timeout(self.now);
        };
        assert!(t.len >= wire::TRANSPORT_HEADER_LEN + 4 + 1 + packet.len() + wire::TAG_LEN);
        buf[..t.len].to_vec()
    }

    /// A datagram arrives at the proxy now over the first uplink.
    fn deliver_up(&mut self, mut d: Vec<u8>) -> Result<Accepted, DropReason> {
        let (from, local) = (self.links[0].member_addr, self.links[0].proxy_addr);
        let r = self.at_server(from, local, &mut d);
        self.pump();
        r
    }
}

#[test]
fn handshake_and_round_trip_with_both_ciphers() {
    for suite in [CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305] {
        for psk in [false, true] {
            let mut net = Net::new(suite, psk, Limits::default());
            net.connect();
            assert!(
                net.server_events
                    .iter()
                    .any(|(_, e)| *e == ServerEvent::Connected(MEMBER))
            );
            assert!(
                net.client_events
                    .iter()
                    .any(|(_, e)| *e == Event::Handshake)
            );
            for i in 0..50 {
                net.send_up(&up(100 + i * 20, i as u32)).unwrap();
                net.send_down(&down(1400 - i * 20, 1000 + i as u32))
                    .unwrap();
            }
            // Within a few round trips: the paths' congestion control starts with a window
            // of 16 packets, paced.
            net.step(Duration::from_millis(100));
            assert_eq!(net.at_server.len(), 50, "{suite:?} psk={psk}");
            assert_eq!(net.at_client.len(), 50, "{suite:?} psk={psk}");
            for (i, p) in net.at_server.iter().enumerate() {
                assert_eq!(p, &up(100 + i * 20, i as u32));
            }
            for (i, p) in net.at_client.iter().enumerate() {
                assert_eq!(p, &down(1400 - i * 20, 1000 + i as u32));
            }
            assert_eq!(net.server.stats().drops.total(), 0);
            assert_eq!(net.client.stats().drops.total(), 0);
            // The acks come back (pings may be in flight by then, not data).
            for _ in 0..3 {
                net.step(Duration::from_millis(20));
            }
            assert!(net.client_path(0).bytes_in_flight() < 100);
            assert!(net.server_path(0).bytes_in_flight() < 100);
            // Both ends counted the packets on the path, and nothing waits.
            let (c, s) = (
                *net.client_path(0).counters(),
                *net.server_path(0).counters(),
            );
            assert_eq!((c.tx_packets, c.rx_packets), (50, 50), "{c:?}");
            assert_eq!((s.tx_packets, s.rx_packets), (50, 50), "{s:?}");
            let up_bytes: u64 = (0..50).map(|i| 100 + i * 20).sum();
            assert_eq!((c.tx_bytes, s.rx_bytes), (up_bytes, up_bytes));
            assert_eq!(net.client.queued(), 0);
            assert_eq!(net.server.member(MEMBER).unwrap().queued, 0);
            assert_eq!(net.client_path(0).state(), PathState::Active);
            assert_eq!(net.server_path(0).state(), PathState::Active);
        }
    }
}

#[test]
fn inner_packets_are_checked_routed_and_bounded() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    // Before the handshake neither end takes packets.
    assert_eq!(
        net.client.handle_packet(net.now, &up(100, 0)),
        Err(DropReason::NoSession)
    );
    assert_eq!(
        net.server.handle_packet(net.now, &down(100, 0)),
        Err(DropReason::MemberOffline)
    );
    net.connect();
    // Only whole IP packets, and none larger than the tunnel MTU.
    for bad in [&[0x45, 0, 0, 99, 1, 2, 3][..], &[0x60; 30], &[]] {
        assert_eq!(
            net.client.handle_packet(net.now, bad),
            Err(DropReason::BadInnerPacket)
        );
        assert_eq!(
            net.server.handle_packet(net.now, bad),
            Err(DropReason::BadInnerPacket)
        );
    }
    let big = usize::from(MTU) + 1;
    assert_eq!(
        net.client.handle_packet(net.now, &up(big, 0)),
        Err(DropReason::PacketTooLarge)
    );
    assert_eq!(
        net.server.handle_packet(net.now, &down(big, 0)),
        Err(DropReason::PacketTooLarge)
    );
    // The proxy routes by destination: an address no member has is refused.
    assert_eq!(
        net.server
            .handle_packet(net.now, &ipv4(100, INTERNET_IP, [10, 77, 0, 3], 0)),
        Err(DropReason::NoMember)
    );
    // A member speaks only from its own tunnel addresses.
    let spoofed = net.sealed_up(&ipv4(100, [10, 77, 0, 3], INTERNET_IP, 1));
    assert_eq!(net.deliver_up(spoofed), Err(DropReason::SpoofedSource));
    assert!(net.at_server.is_empty());
    assert_eq!(net.server.stats().drops.get(DropReason::SpoofedSource), 1);
    // The send queues are bounded: what the uplinks do not take is refused, not kept.
    let slots = client::DEFAULT_QUEUE_SLOTS;
    for i in 0..slots {
        net.client
            .handle_packet(net.now, &up(60, i as u32))
            .unwrap();
    }
    assert_eq!(net.client.queued(), slots);
    // Full: the flow with the most waiting pays (FQ-CoDel): here one the table put in
    // the same queue as another, or the new packet's own.
    assert_eq!(net.client.handle_packet(net.now, &up(60, 0)), Ok(()));
    assert!(net.client.queued() <= slots);
    let client_dropped = net.client.stats().drops.get(DropReason::QueueFull);
    assert!(client_dropped >= 1);
    let slots = server::DEFAULT_QUEUE_SLOTS;
    for i in 0..slots {
        net.server
            .handle_packet(net.now, &down(60, i as u32))
            .unwrap();
    }
    assert_eq!(net.server.member(MEMBER).unwrap().queued, slots);
    assert_eq!(net.server.handle_packet(net.now, &down(60, 0)), Ok(MEMBER));
    assert!(net.server.member(MEMBER).unwrap().queued <= slots);
    let server_dropped = net.server.stats().drops.get(DropReason::QueueFull);
    assert!(server_dropped >= 1);
    // And all the rest goes out once the uplinks take it: every packet is delivered or
    // counted as dropped.
    for _ in 0..100 {
        net.step(Duration::from_millis(5));
    }
    let pushed = |slots: usize| slots as u64 + 1;
    assert_eq!(
        net.at_server.len() as u64,
        pushed(client::DEFAULT_QUEUE_SLOTS) - client_dropped
    );
    assert_eq!(
        net.at_client.len() as u64,
        pushed(server::DEFAULT_QUEUE_SLOTS) - server_dropped
    );
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
    assert!(!net.server.member(MEMBER).unwrap().connected);

    // A static key that is not a member at all.
    net.client = Client::new(
        client_config(SecretKey::generate().unwrap(), &net.proxy_key, net.limits),
        net.now,
        1,
        3,
    );
    net.links.clear();
    net.add_link(
        "198.51.100.7:40000".parse().unwrap(),
        Duration::from_millis(15),
    );
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
    // Rounds of as many packets as the path's congestion window lets go at once (it
    // grows as the rounds are acknowledged), each round delivered in reverse.
    let mut sealed = Vec::new();
    let mut rounds = Vec::new();
    let mut next = 0;
    while sealed.len() < 3000 {
        let round = net.sealed_up_round(&mut next, 3000);
        assert!(!round.is_empty());
        for d in round.iter().rev() {
            assert_eq!(
                net.deliver_up(d.clone()),
                Ok(Accepted::Transport { member: MEMBER })
            );
        }
        rounds.push(round.len());
        sealed.extend(round);
        net.step(Duration::from_millis(20));
    }
    eprintln!("rounds: {rounds:?}");
    assert!(
        rounds.iter().filter(|&&n| n >= 8).count() >= 10,
        "{rounds:?}"
    );
    let mut expected = Vec::new();
    let mut at = 0u32;
    for n in rounds {
        expected.extend((at..at + n as u32).rev());
        at += n as u32;
    }
    let seqs: Vec<u32> = net.at_server.iter().map(|p| seq_of(p)).collect();
    assert_eq!(seqs, expected);
    // Every one of them again: replays.
    for d in sealed.iter().step_by(97) {
        assert_eq!(net.deliver_up(d.clone()), Err(DropReason::Replay));
    }
    let replays = net.server.stats().drops.get(DropReason::Replay);
    assert_eq!(replays, sealed.iter().step_by(97).count() as u64);
    assert_eq!(net.at_server.len(), 3000);
    // The path took each once too, and the proxy's acks settle every one.
    assert_eq!(net.server_path(0).counters().rx_packets, 3000);
    net.step(Duration::from_millis(20));
    let c = *net.client_path(0).counters();
    assert!(net.client_path(0).bytes_in_flight() < 100);
    assert!(c.acked + c.lost >= 3000, "{c:?}");
}

#[test]
fn packets_older_than_the_window_rejected() {
    let mut net = Net::new(CipherSuite::ChaCha20Poly1305, false, Limits::default());
    net.connect();
    // One datagram held back while more than a window's worth after it arrive.
    let first = net.sealed_up(&up(60, 0));
    let mut delivered = 0;
    let mut next = 1;
    while delivered < linkpool_protocol::REPLAY_WINDOW + 10 {
        let round = net.sealed_up_round(&mut next, u32::MAX);
        for d in round {
            net.deliver_up(d).unwrap();
            delivered += 1;
        }
        net.step(Duration::from_millis(20));
    }
    assert_eq!(net.deliver_up(first), Err(DropReason::TooOld));
}

#[test]
fn malformed_datagrams_are_counted_by_reason() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let good = net.sealed_up(&up(200, 1));

    let mut tampered = good.clone();
    tampered[40] ^= 1;
    assert_eq!(net.deliver_up(tampered), Err(DropReason::BadTag));

    let mut tampered_header = good.clone();
    tampered_header[2] ^= 1; // the path id is authenticated
    assert_eq!(net.deliver_up(tampered_header), Err(DropReason::BadTag));

    let truncated = good[..wire::MIN_TRANSPORT_LEN - 1].to_vec();
    assert_eq!(net.deliver_up(truncated), Err(DropReason::TooShort));
    assert_eq!(
        net.deliver_up(good[..3].to_vec()),
        Err(DropReason::TooShort)
    );

    let oversized = vec![1u8; MAX_DATAGRAM + 1];
    assert_eq!(net.deliver_up(oversized), Err(DropReason::Oversized));

    // A version 1 datagram (the data type was 4 then too).
    let mut version = good.clone();
    version[0] = 1;
    assert_eq!(net.deliver_up(version), Err(DropReason::UnknownVersion));

    let mut kind = good.clone();
    kind[1] = 99;
    assert_eq!(net.deliver_up(kind), Err(DropReason::UnknownType));
    // Version 1's control type is no type in version 2.
    let mut control = good.clone();
    control[1] = 5;
    assert_eq!(net.deliver_up(control), Err(DropReason::UnknownType));

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

    // A packet that is not IP is refused before it is ever sealed.
    assert_eq!(
        net.client
            .handle_packet(net.now, &[0x45, 0, 0, 99, 1, 2, 3]),
        Err(DropReason::BadInnerPacket)
    );
    assert_eq!(net.client.stats().drops.get(DropReason::BadInnerPacket), 1);

    // The client takes a path's datagrams only on that path.
    let mut downstream = net.sealed_down(&down(100, 9));
    let elsewhere = PathId(net.p0().0.wrapping_add(1));
    assert_eq!(
        net.client
            .handle_datagram(net.now, elsewhere, &mut downstream.clone()),
        Err(DropReason::Unexpected)
    );
    let p0 = net.p0();
    assert_eq!(
        net.at_client(p0, &mut downstream),
        Ok(client::Received::Transport)
    );
    assert_eq!(net.at_client.len(), 1);

    // The good one still goes through after all that.
    assert_eq!(
        net.deliver_up(good),
        Ok(Accepted::Transport { member: MEMBER })
    );
    assert_eq!(net.at_server.len(), 1);
    let d = &net.server.stats().drops;
    for r in [
        DropReason::BadTag,
        DropReason::TooShort,
        DropReason::Oversized,
        DropReason::UnknownVersion,
        DropReason::UnknownType,
        DropReason::UnknownSession,
        DropReason::BadMac1,
    ] {
        assert!(d.get(r) > 0, "{r:?} not counted");
    }
    assert_eq!(d.get(DropReason::BadTag), 2);
    assert_eq!(d.get(DropReason::TooShort), 3);
    assert_eq!(d.get(DropReason::UnknownType), 2);
    assert_eq!(net.client.stats().drops.get(DropReason::Unexpected), 1);
}

#[test]
fn random_garbage_never_panics() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    // Real headers, so that some garbage reaches the AEAD of a live session.
    let up_header = net.sealed_up(&up(100, 0))[..16].to_vec();
    let down_header = net.sealed_down(&down(100, 0))[..16].to_vec();
    let (from, local, p0) = (net.links[0].member_addr, net.links[0].proxy_addr, net.p0());
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
        let mut to_server = d.clone();
        if i % 7 == 0 && len >= 16 {
            to_server[..16].copy_from_slice(&up_header);
            d[..16].copy_from_slice(&down_header);
        }
        let _ = net
            .server
            .handle_datagram(net.now, from, Some(local), &mut to_server);
        let _ = net.client.handle_datagram(net.now, p0, &mut d);
    }
    assert!(net.client.stats().drops.get(DropReason::BadTag) > 100);
    assert!(net.server.stats().drops.get(DropReason::BadTag) > 100);
    // None of it moved or broke anything: the session still carries traffic both ways.
    net.at_server.clear();
    net.at_client.clear();
    assert!(net.client.is_connected());
    net.send_up(&up(100, 1)).unwrap();
    net.send_down(&down(100, 2)).unwrap();
    net.step(Duration::from_millis(20));
    assert_eq!(net.at_server, [up(100, 1)]);
    assert_eq!(net.at_client, [down(100, 2)]);
    assert_eq!(net.server_path(0).endpoint().remote, from);
}

#[test]
fn rekey_under_steady_traffic_loses_nothing() {
    let limits = Limits {
        rekey_after_time: Duration::from_secs(20),
        reject_after_time: Duration::from_secs(30),
        ..Limits::default()
    };
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.set_delay(Duration::from_millis(40));
    net.connect();
    let mut sent = 0u32;
    // Two minutes at 500 packets/s each way, across six rekeys.
    for _ in 0..(120 * 100) {
        for _ in 0..5 {
            net.send_up(&up(120, sent)).unwrap();
            net.send_down(&down(120, sent)).unwrap();
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
    assert!(
        net.at_client
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
    // The path carried on across the rekeys: never suspected.
    assert_eq!(net.client_path(0).counters().suspected, 0);
    assert_eq!(net.server_path(0).counters().suspected, 0);
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
        net.send_up(&up(80, i)).unwrap();
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
            net.send_up(&up(80, sent)).unwrap();
            sent += 1;
        }
        let reachable = net.now - restart >= Duration::from_secs(20);
        net.set_up(0, true, reachable);
        net.step(Duration::from_millis(10));
        if net.server.member(MEMBER).unwrap().connected && !net.at_server.is_empty() {
            break;
        }
    }
    assert!(
        net.server.member(MEMBER).unwrap().connected,
        "member never came back"
    );
    assert!(net.client.stats().handshakes_completed >= 2);
    // What it sent on the old keys, the fresh proxy could not even look up (the outage
    // lost what was in flight at the restart: these are the pings on its dead path once
    // the link is back).
    assert!(net.server.stats().drops.get(DropReason::UnknownSession) > 0);
}

#[test]
fn handshake_flood_does_not_stop_a_member() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    // 2000 initiations with a valid mac1 (the proxy's public key is in every bundle)
    // from spoofed sources, interleaved with a real member's handshake.
    let flood: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            let mut c = Client::new(
                ClientConfig {
                    queue_slots: 1,
                    ..client_config(SecretKey::generate().unwrap(), &net.proxy_key, net.limits)
                },
                net.now,
                1,
                i,
            );
            c.open_path(net.now, net.links[0].proxy_addr, PathSettings::default());
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
    // The cookie replies went to the spoofed sources, not to the member.
    assert!(net.nowhere >= 1900, "{}", net.nowhere);
}

/// Whenever the proxy's record of what the member received over link `i` changes.
fn receipt_changes(net: &Net, i: usize, seen: &mut Vec<(Instant, (u64, u64))>) {
    let now = net.server_path(i).peer_receipt();
    if let Some(r) = now {
        if seen.last().map(|s| s.1) != Some(r) {
            seen.push((net.now, r));
        }
    }
}

// Was: receipts once per probe interval, and a probe and a receipt per second in all.
// Now receipts go once per second per path, and the member's other datagrams are acks
// (at most one per 4 packets, or per 10 ms) and pings of an idle path.
#[test]
fn receipts_report_downstream_once_per_second() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    let sent_before = net.client_sent.len();
    let mut receipts = Vec::new();
    // 3 seconds of downstream traffic: 3000 packets.
    for i in 0..300 {
        for j in 0..10 {
            net.send_down(&down(500, i * 10 + j)).unwrap();
        }
        net.step(Duration::from_millis(10));
        receipt_changes(&net, 0, &mut receipts);
    }
    for _ in 0..200 {
        net.step(Duration::from_millis(10));
        receipt_changes(&net, 0, &mut receipts);
    }
    // The member confirmed every packet and byte it got, and the proxy recorded it.
    assert_eq!(net.at_client.len(), 3000);
    assert_eq!(net.server_path(0).peer_receipt(), Some((3000, 3000 * 500)));
    assert_eq!(
        net.client_path(0).counters().rx_packets,
        3000,
        "the receipt is what the path received"
    );
    // Once a second while packets arrive, and not again once they stop.
    let gaps: Vec<Duration> = receipts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!((3..=5).contains(&receipts.len()), "{receipts:?}");
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_secs(1)),
        "{receipts:?}"
    );
    // The rest of what the member sent: acks (one per step here, as the step's 10
    // packets arrive together) and pings, not a datagram per packet.
    let sent = net.client_sent.len() - sent_before;
    assert!(sent <= 300 + 5 * 10 + 5, "{sent} datagrams in 5 s");
    eprintln!(
        "{sent} datagrams from the member for 3000 packets in 5 s; receipts at {:?}",
        receipts
            .iter()
            .map(|(t, r)| (*t - receipts[0].0, r.0))
            .collect::<Vec<_>>()
    );
}

#[test]
fn proxy_follows_a_member_whose_address_changes() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    net.send_up(&up(100, 1)).unwrap();
    net.step(Duration::from_millis(20));
    let proxy = net.links[0].proxy_addr;
    assert_eq!(
        net.server_path(0).endpoint().remote,
        net.links[0].member_addr
    );
    assert_eq!(net.server_path(0).endpoint().local, Some(proxy));
    // A datagram sealed now, still in flight from the old address when the address
    // changes.
    let late = net.sealed_up(&up(100, 2));
    // The member's WAN gets a new address (DHCP renewal, LTE reconnect, NAT rebinding).
    let old = net.links[0].member_addr;
    let new: SocketAddr = "192.0.2.200:51000".parse().unwrap();
    net.links[0].member_addr = new;
    // Before it says anything from there, packets for it still go to the old address.
    net.send_down(&down(60, 3)).unwrap();
    assert_eq!(net.server_sent.last().unwrap().1.remote, old);
    // One authenticated packet from the new address moves the path.
    net.send_up(&up(100, 4)).unwrap();
    net.step(Duration::from_millis(20));
    assert_eq!(net.server_path(0).endpoint().remote, new);
    net.at_client.clear();
    net.send_down(&down(100, 5)).unwrap();
    assert_eq!(net.server_sent.last().unwrap().1.remote, new);
    net.step(Duration::from_millis(20));
    assert_eq!(net.at_client, [down(100, 5)]);
    // The late packet from the old address is authentic and new: delivered, but it does
    // not move the path back.
    let mut late = late;
    assert_eq!(
        net.at_server(old, proxy, &mut late),
        Ok(Accepted::Transport { member: MEMBER })
    );
    assert_eq!(seq_of(net.at_server.last().unwrap()), 2);
    assert_eq!(net.server_path(0).endpoint().remote, new);
    // A forged packet from elsewhere does not move it.
    let forged_from: SocketAddr = "203.0.113.66:666".parse().unwrap();
    let genuine = net.sealed_up(&up(100, 6));
    let mut forged = genuine.clone();
    forged[30] ^= 0xff;
    assert_eq!(
        net.at_server(forged_from, proxy, &mut forged),
        Err(DropReason::BadTag)
    );
    // Nor does a genuine one replayed from elsewhere.
    assert_eq!(
        net.deliver_up(genuine.clone()),
        Ok(Accepted::Transport { member: MEMBER })
    );
    assert_eq!(
        net.at_server(forged_from, proxy, &mut genuine.clone()),
        Err(DropReason::Replay)
    );
    assert_eq!(net.server_path(0).endpoint().remote, new);
    net.send_down(&down(100, 7)).unwrap();
    assert_eq!(net.server_sent.last().unwrap().1.remote, new);
}

#[test]
fn relay_tags_verify_only_with_the_relays_own_session_keys() {
    use linkpool_protocol::relay::{seal_envelope, verify_envelope};
    use linkpool_protocol::wire::{Message, RELAY_HEADER_LEN};
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.connect();
    // This member relays a neighbour's sealed datagram (opaque bytes to it).
    let (index, up_key, _down) = net.client.relay_keys().unwrap();
    let carried = net.sealed_up(&up(200, 1));
    let mut buf = [0u8; MAX_DATAGRAM];
    buf[RELAY_HEADER_LEN..RELAY_HEADER_LEN + carried.len()].copy_from_slice(&carried);
    let n = seal_envelope(
        &up_key,
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
    assert_eq!(relay, MEMBER);
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
    let proxy = SecretKey::generate().unwrap();
    let mut client = Client::new(
        client_config(SecretKey::generate().unwrap(), &proxy, limits),
        start,
        1_700_000_000_000_000,
        1,
    );
    // Two uplinks, each to one of the proxy's addresses.
    let remotes: [SocketAddr; 2] = [
        "203.0.113.1:7117".parse().unwrap(),
        "[2001:db8::1]:7117".parse().unwrap(),
    ];
    let paths = remotes.map(|r| client.open_path(start, r, PathSettings::default()));
    assert_ne!(paths[0], paths[1]);
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
            let i = paths.iter().position(|p| *p == t.path).unwrap();
            assert_eq!(t.remote, remotes[i], "sent where its path goes");
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
    let (unanswered, since) = client.unanswered_handshakes(now).unwrap();
    assert_eq!(unanswered as usize, sent.len());
    assert!(since >= Duration::from_secs(59), "{since:?}");
    assert!(!client.is_connected());
    assert_eq!(client.liveness(), Liveness::Connecting);
}

impl Net {
    /// Runs both ends by their own timers until `end`, as an event loop would: time jumps
    /// to the earliest wake-up or arrival. While `proxy_gone`, every link is down both
    /// ways: nothing reaches the proxy, nothing it sends arrives, and what was in flight
    /// either way when it went is lost.
    /// Returns how often the client's timers woke it. Panics if a wake-up time in the
    /// past survives `handle_timeout` and `poll_transmit` at either end (a spinning
    /// event loop).
    fn run_until(&mut self, end: Instant, proxy_gone: bool) -> usize {
        for i in 0..self.links.len() {
            self.set_up(i, true, !proxy_gone);
            self.set_up(i, false, !proxy_gone);
        }
        let mut wakeups = 0;
        while self.now < end {
            let next = [
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                self.to_server.iter().map(|f| f.due).min(),
                self.to_client.iter().map(|f| f.due).min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .min(end);
            if self.client.poll_timeout().is_some_and(|t| t <= next) {
                wakeups += 1;
            }
            self.step(next.saturating_duration_since(self.now));
            for (side, t) in [
                ("client", self.client.poll_timeout()),
                ("proxy", self.server.poll_timeout()),
            ] {
                if let Some(t) = t {
                    assert!(
                        t > self.now,
                        "a wake-up {:?} in the past survived the {side}'s timers",
                        self.now - t
                    );
                }
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
        let wakeups = net.run_until(start + Duration::from_secs(outage_at), false);
        eprintln!("idle session: {wakeups} wake-ups in {outage_at} s");
        assert!(net.client.is_connected());
        // An idle session: a ping every 100 ms, and the acks' timers.
        assert!(
            wakeups as u64 <= outage_at * 25 + 10,
            "{wakeups} wake-ups in {outage_at} s of idle session"
        );
        let gone = net.now;
        let wakeups = net.run_until(gone + Duration::from_secs(300), true);
        // Pings (fast while suspect, then one a second while dead), handshake retries
        // and key expiry: a few wake-ups a second at most, never a spin.
        let per_second = wakeups as f64 / 300.0;
        assert!(
            per_second <= 2.0,
            "{wakeups} wake-ups in 300 s (outage at {outage_at} s)"
        );
        // It never gives up: a handshake at least every handshake_retry_max.
        assert!(wakeups >= 300 / 8, "{wakeups}");
        eprintln!("outage at {outage_at} s: {wakeups} wake-ups in 300 s");
        assert!(!net.client.is_connected());
    }
}

#[test]
fn a_silent_proxy_is_noticed_within_dead_after_and_a_returning_one_at_once() {
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.connect();
    net.run_until(net.now + Duration::from_secs(5), false);
    let sent_before = net.client.stats().handshakes_sent;
    let gone = net.now;
    // The path notices first, within a few round trips (pings every 100 ms, suspect
    // after about two RTTs unanswered): the session is still up.
    net.run_until(gone + Duration::from_millis(400), true);
    assert_eq!(net.client_path(0).state(), PathState::Suspect);
    assert_eq!(net.client.liveness(), Liveness::Up);
    assert_eq!(net.client.stats().handshakes_sent, sent_before);
    // After Limits::suspect_after of silence on every path (the last answer arrived
    // before the proxy went): suspect, a new handshake at once.
    net.run_until(gone + limits.suspect_after, true);
    assert_eq!(net.client.liveness(), Liveness::Suspect);
    assert!(net.client.is_connected());
    assert!(net.client.stats().handshakes_sent > sent_before);
    // Suspect for path::DEAD_AFTER: the path is dead.
    net.run_until(
        gone + Duration::from_millis(400) + linkpool_protocol::path::DEAD_AFTER,
        true,
    );
    assert_eq!(net.client_path(0).state(), PathState::Dead);
    // Within dead_after of the last answer, which arrived before the proxy went (the
    // outage lost what was in flight, as a cut link does).
    net.run_until(gone + limits.dead_after, true);
    assert_eq!(net.client.liveness(), Liveness::Lost);
    assert!(!net.client.is_connected(), "not noticed within dead_after");
    assert_eq!(net.client.stats().sessions_lost, 1);
    let (unanswered, _) = net.client.unanswered_handshakes(net.now).unwrap();
    assert!(unanswered >= 2, "{unanswered}");
    let states: Vec<PathState> = net
        .client_events
        .iter()
        .filter(|(t, _)| *t >= gone)
        .filter_map(|(_, e)| match e {
            Event::Path(p) => Some(p.state),
            Event::Handshake | Event::MeshGrant | Event::Statement | Event::Rating => None,
        })
        .collect();
    assert_eq!(states, [PathState::Suspect, PathState::Dead]);
    // The link comes back 30 s into the outage with the proxy's session intact: the
    // next ping on the old keys (or the pending handshake) brings it back.
    net.run_until(gone + Duration::from_secs(30), true);
    let back = net.now;
    net.run_until(back + Duration::from_secs(10), false);
    assert!(net.client.is_connected());
    assert_eq!(net.client.liveness(), Liveness::Up);
    assert_eq!(net.client_path(0).state(), PathState::Active);
    net.at_server.clear();
    net.send_up(&up(100, 1)).unwrap();
    net.run_until(net.now + Duration::from_millis(100), false);
    assert_eq!(net.at_server.len(), 1);
}

// Was: "a restarted proxy gets a handshake within one probe interval". Probes are now
// per-path pings that a restarted proxy cannot even open, so what brings the session back
// is the member's silence rule: nothing authenticated heard on any path for
// Limits::suspect_after, then a handshake at once. Within suspect_after (counted from the
// last answer, which left the proxy before the restart) plus a round trip, then.
#[test]
fn a_restarted_proxy_gets_a_handshake_within_suspect_after() {
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    net.connect();
    net.run_until(net.now + Duration::from_secs(3), false);
    // A crash and an immediate restart: the proxy forgets every session, but answers.
    net.server = server(&net.proxy_key, net.members.clone(), limits, net.now, 7);
    let restart = net.now;
    let bound = limits.suspect_after + net.links[0].rtt() + Duration::from_millis(20);
    while !net.server.member(MEMBER).unwrap().connected {
        assert!(
            net.now - restart < bound,
            "no new session {:?} after the restart",
            net.now - restart
        );
        net.run_until(net.now + Duration::from_millis(10), false);
    }
    eprintln!("new session {:?} after the restart", net.now - restart);
    // And it carries traffic.
    net.at_server.clear();
    net.send_up(&up(100, 1)).unwrap();
    net.run_until(net.now + Duration::from_millis(100), false);
    assert_eq!(net.at_server, [up(100, 1)]);
}

#[test]
fn replayed_initiations_cost_no_handshake_even_from_an_idle_member() {
    let limits = Limits::default();
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, limits);
    // Capture the member's first initiation on its way to the proxy.
    net.step(Duration::ZERO);
    let captured = net.to_server[0].bytes.clone();
    assert_eq!(captured.len(), wire::HANDSHAKE_INIT_LEN);
    net.connect();
    let stats = net.server.stats().clone();
    // The member goes quiet for longer than dead_after (the old code then skipped the
    // timestamp check): replays from anywhere are refused by a lookup.
    net.run_until(net.now + Duration::from_secs(3), false);
    net.run_until(net.now + limits.dead_after * 2, true);
    let proxy = net.links[0].proxy_addr;
    for i in 0..100u16 {
        let from: SocketAddr = format!("203.0.113.9:{}", 1000 + i).parse().unwrap();
        let r = net
            .server
            .handle_datagram(net.now, from, Some(proxy), &mut captured.clone());
        assert_eq!(r, Err(DropReason::ReplayedHandshake));
    }
    let mut buf = [0u8; MAX_DATAGRAM];
    assert_eq!(
        net.server.poll_transmit(net.now, &mut buf),
        None,
        "nothing is answered"
    );
    let after = net.server.stats();
    assert_eq!(after.handshakes, stats.handshakes);
    assert_eq!(after.handshakes_processed, stats.handshakes_processed);
    assert_eq!(after.cookies_sent, stats.cookies_sent);
    assert_eq!(after.drops.get(DropReason::ReplayedHandshake), 100);
    // The member comes back and carries traffic on its session.
    net.run_until(net.now + Duration::from_secs(3), false);
    assert!(net.client.is_connected());
    net.send_up(&up(100, 7)).unwrap();
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
    let older = net.to_server.remove(0).bytes;
    net.client
        .restart_handshake(net.now + Duration::from_secs(1));
    net.step(Duration::from_secs(1));
    let newer = net.to_server.remove(0).bytes;
    assert_eq!(
        net.deliver_up(newer),
        Ok(Accepted::Handshake {
            member: Some(MEMBER)
        })
    );
    // Even once the member has been silent for a long time.
    net.now += limits.dead_after * 10;
    assert_eq!(net.deliver_up(older), Err(DropReason::StaleHandshake));
}

impl Net {
    /// Cuts link `i` both ways (what is on it is lost), or restores it.
    fn cut(&mut self, i: usize, cut: bool) {
        self.set_up(i, true, !cut);
        self.set_up(i, false, !cut);
    }

    /// The states link `i`'s path went through at the client since `since`.
    fn client_states(&self, i: usize, since: Instant) -> Vec<PathState> {
        let id = self.links[i].path;
        self.client_events
            .iter()
            .filter(|(t, _)| *t >= since)
            .filter_map(|(_, e)| match e {
                Event::Path(p) if p.path == id => Some(p.state),
                _ => None,
            })
            .collect()
    }
}

/// Every sequence number below `n` is there at least once; returns the duplicates.
fn all_there(packets: &[Vec<u8>], n: u32) -> usize {
    let mut seen = vec![0u32; n as usize];
    for p in packets {
        seen[seq_of(p) as usize] += 1;
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "missing {} packets: {missing:?}",
        missing.len()
    );
    packets.len() - n as usize
}

#[test]
fn a_dead_uplink_fails_over_without_losing_packets_and_comes_back() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    // A second, slower uplink.
    net.add_link(
        "192.0.2.77:40001".parse().unwrap(),
        Duration::from_millis(40),
    );
    net.connect();
    let mut seq = 0u32;
    let mut traffic = |net: &mut Net, ms: u64| {
        for _ in 0..ms / 5 {
            for _ in 0..5 {
                net.send_up(&up(300, seq)).unwrap();
                net.send_down(&down(300, seq)).unwrap();
                seq += 1;
            }
            net.step(Duration::from_millis(5));
        }
        seq
    };
    traffic(&mut net, 1000);
    // Both paths answer; new flows are pinned to either, by spare capacity.
    for i in 0..2 {
        assert_eq!(net.client_path(i).state(), PathState::Active, "path {i}");
        assert_eq!(net.server_path(i).state(), PathState::Active, "path {i}");
    }
    let tx = |net: &Net, i: usize| {
        (
            net.client_path(i).counters().tx_packets,
            net.server_path(i).counters().tx_packets,
        )
    };
    assert!(
        tx(&net, 0).0 > 100 && tx(&net, 0).1 > 100,
        "{:?}",
        tx(&net, 0)
    );
    // The fast uplink dies, with what is on it.
    let cut = net.now;
    net.cut(0, true);
    let link = &net.links[0];
    assert!(
        link.upstream.counters().lost_in_flight > 0
            && link.downstream.counters().lost_in_flight > 0,
        "nothing was in flight at the cut"
    );
    let before = (tx(&net, 0), tx(&net, 1));
    traffic(&mut net, 300);
    // Suspect within a few round trips at both ends; what was in flight on it is sent
    // again on the other, and so is new traffic.
    assert_eq!(net.client_path(0).state(), PathState::Suspect);
    assert_eq!(net.server_path(0).state(), PathState::Suspect);
    assert!(net.client_path(0).counters().resent_elsewhere > 0);
    assert!(net.server_path(0).counters().resent_elsewhere > 0);
    assert!(tx(&net, 1).0 > before.1.0 && tx(&net, 1).1 > before.1.1);
    traffic(&mut net, 2000);
    assert_eq!(net.client_path(0).state(), PathState::Dead);
    assert_eq!(
        net.client_states(0, cut),
        [PathState::Suspect, PathState::Dead]
    );
    // Nothing was lost either way, and what arrived twice is at most what was in flight.
    let n = traffic(&mut net, 0);
    let drain = |net: &mut Net| {
        for _ in 0..40 {
            net.step(Duration::from_millis(5));
        }
    };
    drain(&mut net);
    let dup_up = all_there(&net.at_server, n);
    let dup_down = all_there(&net.at_client, n);
    assert!(
        dup_up <= 50 && dup_down <= 50,
        "{dup_up} {dup_down} duplicates"
    );
    // The uplink comes back: probing, three answered pings, then it carries the traffic
    // again.
    let back = net.now;
    net.cut(0, false);
    let before = (tx(&net, 0), tx(&net, 1));
    traffic(&mut net, 2000);
    assert_eq!(
        net.client_states(0, back),
        [PathState::Probing, PathState::Active]
    );
    assert_eq!(net.client_path(0).state(), PathState::Active);
    assert_eq!(net.server_path(0).state(), PathState::Active);
    assert!(tx(&net, 0).0 > before.0.0 + 300 && tx(&net, 0).1 > before.0.1 + 300);
    let n = traffic(&mut net, 0);
    drain(&mut net);
    all_there(&net.at_server, n);
    all_there(&net.at_client, n);
    eprintln!(
        "failover: {dup_up} packets up and {dup_down} down delivered twice; path states \
         after the cut {:?}",
        net.client_events
            .iter()
            .filter(|(t, _)| *t >= cut)
            .map(|(t, e)| (*t - cut, *e))
            .collect::<Vec<_>>()
    );
    // Receipts: within a second of the traffic stopping, the proxy knows what the member
    // got on each path.
    for _ in 0..220 {
        net.step(Duration::from_millis(5));
    }
    for i in 0..2 {
        let c = *net.client_path(i).counters();
        assert_eq!(
            net.server_path(i).peer_receipt(),
            Some((c.rx_packets, c.rx_bytes)),
            "path {i}"
        );
        let s = *net.server_path(i).counters();
        assert_eq!(
            net.client_path(i).peer_receipt(),
            Some((s.rx_packets, s.rx_bytes)),
            "path {i}"
        );
    }
}

// Receipts go once per second per path (each path its own), whichever paths carry the
// traffic.
#[test]
fn receipts_report_every_path_once_per_second() {
    let mut net = Net::new(CipherSuite::Aes256Gcm, false, Limits::default());
    net.add_link(
        "192.0.2.77:40001".parse().unwrap(),
        Duration::from_millis(25),
    );
    net.connect();
    // Traffic both ways for 4 s; after 2 s the second uplink gets faster and takes the
    // traffic over.
    let mut seq = 0;
    let mut history = [Vec::new(), Vec::new()];
    let mut last_rx = [None, None];
    let start = net.now;
    for ms in (0..4000).step_by(5) {
        if ms == 2000 {
            net.set_link_delay(1, Duration::from_millis(5));
        }
        for _ in 0..2 {
            net.send_up(&up(200, seq)).unwrap();
            net.send_down(&down(200, seq)).unwrap();
            seq += 1;
        }
        net.step(Duration::from_millis(5));
        for (i, h) in history.iter_mut().enumerate() {
            receipt_changes(&net, i, h);
            let rx = net.client_path(i).counters().rx_packets;
            if last_rx[i].is_none_or(|(_, n)| n != rx) {
                last_rx[i] = Some((net.now, rx));
            }
        }
    }
    for _ in 0..300 {
        net.step(Duration::from_millis(5));
        for (i, h) in history.iter_mut().enumerate() {
            receipt_changes(&net, i, h);
        }
    }
    let at = |h: &Vec<(Instant, (u64, u64))>| {
        h.iter().map(|(t, r)| (*t - start, r.0)).collect::<Vec<_>>()
    };
    eprintln!(
        "receipts of path 0 {:?}, of path 1 {:?}",
        at(&history[0]),
        at(&history[1])
    );
    for i in 0..2 {
        let c = *net.client_path(i).counters();
        let s = *net.server_path(i).counters();
        assert!(
            c.rx_packets > 100 && s.rx_packets > 100,
            "path {i}: {c:?} {s:?}"
        );
        // Every packet and byte reported, at both ends.
        assert_eq!(
            (
                net.server_path(i).peer_receipt(),
                net.client_path(i).peer_receipt()
            ),
            (
                Some((c.rx_packets, c.rx_bytes)),
                Some((s.rx_packets, s.rx_bytes))
            ),
            "path {i}"
        );
        // The last of it within a second (and a round trip) of the last packet.
        let (last, _) = last_rx[i].unwrap();
        let reported = history[i].last().unwrap().0;
        assert!(
            reported - last <= Duration::from_millis(1100),
            "path {i}: its last packet came {:?} after the start, the receipt for it {:?}",
            last - start,
            reported - start
        );
        // And while the traffic lasted, one a second.
        let gaps: Vec<Duration> = history[i].windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(950)),
            "path {i}: receipts {gaps:?} apart"
        );
    }
}
