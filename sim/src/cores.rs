//! Adapters that drive the real protocol cores through the simulator's [`Endpoint`]
//! trait: [`GatewayCore`] around [`linkpool_protocol::client::Client`] and [`ProxyCore`]
//! around [`linkpool_protocol::server::Server`] with one member.
//!
//! The gateway opens one core path per simulated path at construction, all to the
//! proxy's address [`PROXY_ADDR`]; a [`Transmit`]'s path id says which simulated path a
//! datagram goes on, and a datagram arriving on simulated path `i` is handed to the
//! core's path `i`. At the proxy, every simulated path has its own gateway-side address
//! ([`gateway_remote`]: `100.64.i.2:40000`, as the member's NAT on that uplink would
//! show it), a datagram arriving on path `i` comes from that address to [`PROXY_ADDR`],
//! and a [`Transmit`]'s `remote` says which path it goes on.
//!
//! [`ProxyCore::rebind`] changes the address one path's datagrams come from (a NAT
//! rebinding), with a few datagrams of the old binding held back and handed over late,
//! after the new binding's first ones: the proxy must follow the new address and not go
//! back for the late ones. Datagrams the proxy sends to a binding that is gone are lost
//! (counted in [`ProxyCore::sent_to_stale`]), as the NAT would drop them.
//!
//! ```
//! use std::time::Duration;
//! use linkpool_sim::cores;
//! use linkpool_sim::{LinkParams, PathSpec, Sim, SimConfig, TcpFlow};
//!
//! let wan = LinkParams { rate_bps: Some(10_000_000), delay: Duration::from_millis(10), ..Default::default() };
//! let cfg = SimConfig::new(7).path(PathSpec::new(wan));
//! let (gateway, proxy) = cores::pair(&cfg);
//! let mut sim = Sim::new(cfg, gateway, proxy);
//! let download = sim.add(TcpFlow::download().start_at(Duration::from_millis(200)));
//! sim.run_until(Duration::from_secs(2));
//! assert!(sim.gateway().client().is_connected());
//! assert!(sim.flow(download).bytes_delivered() > 500_000);
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use linkpool_protocol::client::{self, Client, ClientConfig, Event};
use linkpool_protocol::keys::{PublicKey, SecretKey};
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{self, MemberId, MemberKey, Server, ServerConfig, ServerEvent};
use linkpool_protocol::session::Limits;
use linkpool_protocol::{CipherSuite, DropReason, PathId, Transmit};

use crate::endpoint::Endpoint;
use crate::sim::SimConfig;

/// The proxy's address, as every gateway path sends to it and the proxy answers from it.
pub const PROXY_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 7117);

/// The tunnel MTU both cores get (the largest inner packet): the TCP model's 1300-byte
/// segments with headers fit, and so does a datagram with linkpool's overhead in a
/// 1500-byte path MTU less the simulator's 28 bytes.
pub const MTU: u16 = 1400;

/// The member id of the one member a [`ProxyCore`] has.
pub const MEMBER: MemberId = MemberId(0);

/// The wall clock the gateway starts at (microseconds since the epoch; arbitrary).
pub(crate) const WALL_CLOCK_US: u64 = 1_700_000_000_000_000;

/// The gateway-side address simulated path `i` shows at the proxy: `100.64.i.2:40000`.
pub fn gateway_remote(path: usize) -> SocketAddr {
    let i = u8::try_from(path).expect("at most 256 paths");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(100, 64, i, 2)), 40000)
}

/// A gateway and a proxy core for `cfg` (its paths, its gateway address, its seed), with
/// fresh keys that know each other.
pub fn pair(cfg: &SimConfig) -> (GatewayCore, ProxyCore) {
    let member = SecretKey::generate().expect("randomness for a key");
    let proxy = SecretKey::generate().expect("randomness for a key");
    let member_public = member.public_key();
    let proxy_public = proxy.public_key();
    (
        GatewayCore::new(cfg, member, proxy_public),
        ProxyCore::new(cfg, proxy, member_public),
    )
}

/// SplitMix64, for seeds derived from the simulation's.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one adapter refused or could not carry, for the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterStats {
    /// Inner packets the core refused in `handle_packet`, with the last reason.
    pub packets_refused: u64,
    /// Datagrams the core refused in `handle_datagram`.
    pub datagrams_refused: u64,
    /// The last reasons, newest last (at most 16).
    pub last_reasons: VecDeque<DropReason>,
}

impl AdapterStats {
    pub(crate) fn refused(&mut self, reason: DropReason, datagram: bool) {
        if datagram {
            self.datagrams_refused += 1;
        } else {
            self.packets_refused += 1;
        }
        if self.last_reasons.len() == 16 {
            self.last_reasons.pop_front();
        }
        self.last_reasons.push_back(reason);
    }
}

/// The gateway's core ([`Client`]) as an [`Endpoint`]: one core path per simulated path.
pub struct GatewayCore {
    client: Client,
    /// `paths[i]`: the core's path for simulated path `i`.
    paths: Vec<PathId>,
    start: Instant,
    events: Vec<(Duration, Event)>,
    stats: AdapterStats,
}

impl GatewayCore {
    /// A client with `key`, for a proxy with `proxy`, started at `cfg.base`, with a path
    /// to [`PROXY_ADDR`] per simulated path (default settings), seeded from `cfg.seed`.
    pub fn new(cfg: &SimConfig, key: SecretKey, proxy: PublicKey) -> GatewayCore {
        let config = ClientConfig {
            static_key: key,
            proxy_key: proxy,
            psk: None,
            suite: CipherSuite::default(),
            limits: Limits::default(),
            mtu: MTU,
            queue_slots: cfg.queue_slots.unwrap_or(client::DEFAULT_QUEUE_SLOTS),
        };
        let start = cfg.base;
        let mut client = Client::new(config, start, WALL_CLOCK_US, mix(cfg.seed, 1));
        let paths = (0..cfg.paths.len())
            .map(|_| client.open_path(start, PROXY_ADDR, PathSettings::default()))
            .collect();
        GatewayCore {
            client,
            paths,
            start,
            events: Vec::new(),
            stats: AdapterStats::default(),
        }
    }

    /// The core.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The core, mutable.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The core's path id of simulated path `i`.
    pub fn path_id(&self, i: usize) -> PathId {
        self.paths[i]
    }

    /// The core's path for simulated path `i`.
    pub fn path(&self, i: usize) -> &linkpool_protocol::path::Path {
        self.client.path(self.paths[i]).expect("an open path")
    }

    /// The simulated path of a core path id.
    pub fn index_of(&self, id: PathId) -> Option<usize> {
        self.paths.iter().position(|p| *p == id)
    }

    /// The core's events so far, with when (elapsed) the adapter took them.
    pub fn events(&self) -> &[(Duration, Event)] {
        &self.events
    }

    /// What the core refused.
    pub fn stats(&self) -> &AdapterStats {
        &self.stats
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(e) = self.client.poll_event() {
            self.events.push((now - self.start, e));
        }
    }
}

impl Endpoint for GatewayCore {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        if let Err(e) = self.client.handle_packet(now, packet) {
            self.stats.refused(e, false);
        }
    }

    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        let id = self.paths[path];
        if let Err(e) = self.client.handle_datagram(now, id, datagram) {
            self.stats.refused(e, true);
        }
        self.drain_events(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        let t: Transmit = self.client.poll_transmit(now, buf)?;
        self.drain_events(now);
        let index = self
            .index_of(t.path)
            .unwrap_or_else(|| panic!("the gateway sent on a path it never opened: {t:?}"));
        assert_eq!(t.remote, PROXY_ADDR, "the gateway sent elsewhere: {t:?}");
        Some((index, t.len))
    }

    fn poll_packet(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.client.poll_packet(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.drain_events(now);
    }
}

/// One gateway-side address the proxy knows of, and the simulated path it belongs to.
#[derive(Clone, Copy, Debug)]
struct Binding {
    addr: SocketAddr,
    path: usize,
    /// Still mapped by the NAT: what is sent to it arrives.
    live: bool,
}

/// A NAT rebinding under way on one path.
#[derive(Clone, Debug)]
struct Rebind {
    path: usize,
    at: Instant,
    old: SocketAddr,
    new: SocketAddr,
    /// Datagrams of the old binding still to hold back.
    hold: usize,
    held: VecDeque<Vec<u8>>,
    /// Datagrams from the new address handed over so far.
    new_seen: u64,
}

/// The proxy's core ([`Server`]) with one member as an [`Endpoint`]; the member's tunnel
/// address is the simulation's `gateway_addr`.
pub struct ProxyCore {
    server: Server,
    /// `remotes[i]`: where simulated path `i`'s datagrams come from now.
    remotes: Vec<SocketAddr>,
    bindings: Vec<Binding>,
    rebinds: Vec<Rebind>,
    start: Instant,
    events: Vec<(Duration, ServerEvent)>,
    stats: AdapterStats,
    sent_to_stale: u64,
    late_delivered: u64,
}

impl ProxyCore {
    /// A server with `key` and one member (`member`, tunnel address `cfg.gateway_addr`),
    /// started at `cfg.base`, seeded from `cfg.seed`.
    pub fn new(cfg: &SimConfig, key: SecretKey, member: PublicKey) -> ProxyCore {
        ProxyCore::with_members(cfg, key, &[(member, cfg.gateway_addr)])
    }

    /// A server with `key` and these members (key, tunnel address), in this order: the
    /// first is [`MEMBER`].
    pub fn with_members(
        cfg: &SimConfig,
        key: SecretKey,
        members: &[(PublicKey, Ipv4Addr)],
    ) -> ProxyCore {
        let config = ServerConfig {
            static_key: key,
            members: members
                .iter()
                .map(|&(public_key, addr)| MemberKey {
                    public_key,
                    psk: None,
                    addresses: vec![IpAddr::V4(addr)],
                })
                .collect(),
            limits: Limits::default(),
            handshakes_per_second: 1000,
            mtu: MTU,
            queue_slots: cfg.queue_slots.unwrap_or(server::DEFAULT_QUEUE_SLOTS),
        };
        let mut random = [0u8; 32];
        for (i, chunk) in random.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(cfg.seed, 100 + i as u64).to_le_bytes());
        }
        let server = Server::new(config, cfg.base, random);
        let remotes: Vec<SocketAddr> = (0..cfg.paths.len()).map(gateway_remote).collect();
        let bindings = remotes
            .iter()
            .enumerate()
            .map(|(path, &addr)| Binding {
                addr,
                path,
                live: true,
            })
            .collect();
        ProxyCore {
            server,
            remotes,
            bindings,
            rebinds: Vec::new(),
            start: cfg.base,
            events: Vec::new(),
            stats: AdapterStats::default(),
            sent_to_stale: 0,
            late_delivered: 0,
        }
    }

    /// The core.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The core, mutable.
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The member's status.
    pub fn member(&self) -> server::MemberStatus<'_> {
        self.server.member(MEMBER).expect("one member")
    }

    /// The core's events so far, with when (elapsed) the adapter took them.
    pub fn events(&self) -> &[(Duration, ServerEvent)] {
        &self.events
    }

    /// What the core refused.
    pub fn stats(&self) -> &AdapterStats {
        &self.stats
    }

    /// Where simulated path `i`'s datagrams come from now.
    pub fn remote(&self, path: usize) -> SocketAddr {
        self.remotes[path]
    }

    /// Datagrams the proxy sent to a binding the NAT no longer has (lost).
    pub fn sent_to_stale(&self) -> u64 {
        self.sent_to_stale
    }

    /// Datagrams of an old binding handed over late, after the new binding's first.
    pub fn late_delivered(&self) -> u64 {
        self.late_delivered
    }

    /// From `at` on, path `path`'s datagrams come from `new` (a NAT rebinding): the old
    /// binding is gone (what the proxy sends to it is lost). The first `late` datagrams
    /// arriving on the path from `at` on were sent through the old binding: they are held
    /// back and handed over from the old address one after each datagram from the new
    /// one, once the new address was seen (late packets of the old binding arriving
    /// after the new binding's).
    pub fn rebind(&mut self, path: usize, at: Instant, new: SocketAddr, late: usize) {
        assert!(
            self.bindings.iter().all(|b| b.addr != new),
            "{new} is already a binding"
        );
        self.bindings.push(Binding {
            addr: new,
            path,
            live: true,
        });
        self.rebinds.push(Rebind {
            path,
            at,
            old: self.remotes[path],
            new,
            hold: late,
            held: VecDeque::new(),
            new_seen: 0,
        });
    }

    fn deliver(&mut self, now: Instant, remote: SocketAddr, datagram: &mut [u8]) {
        if let Err(e) = self
            .server
            .handle_datagram(now, remote, Some(PROXY_ADDR), datagram)
        {
            self.stats.refused(e, true);
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(e) = self.server.poll_event() {
            self.events.push((now - self.start, e));
        }
    }

    /// Applies the rebindings due at `now` (the address switch itself).
    fn apply_rebinds(&mut self, now: Instant) {
        for r in &self.rebinds {
            if r.at <= now && self.remotes[r.path] == r.old {
                self.remotes[r.path] = r.new;
                for b in &mut self.bindings {
                    if b.addr == r.old {
                        b.live = false;
                    }
                }
            }
        }
    }
}

impl Endpoint for ProxyCore {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        if let Err(e) = self.server.handle_packet(now, packet) {
            self.stats.refused(e, false);
        }
    }

    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        self.apply_rebinds(now);
        let mut release = None;
        if let Some(r) = self
            .rebinds
            .iter_mut()
            .find(|r| r.path == path && r.at <= now)
        {
            if r.hold > 0 {
                // Sent through the old binding, arriving late.
                r.hold -= 1;
                r.held.push_back(datagram.to_vec());
                return;
            }
            r.new_seen += 1;
            release = r.held.pop_front().map(|d| (r.old, d));
        }
        let remote = self.remotes[path];
        self.deliver(now, remote, datagram);
        if let Some((old, mut late)) = release {
            self.late_delivered += 1;
            self.deliver(now, old, &mut late);
        }
        self.drain_events(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.apply_rebinds(now);
        loop {
            let t = self.server.poll_transmit(now, buf)?;
            self.drain_events(now);
            assert_eq!(
                t.local,
                Some(PROXY_ADDR),
                "the proxy answered from another address: {t:?}"
            );
            let binding = self
                .bindings
                .iter()
                .find(|b| b.addr == t.remote)
                .unwrap_or_else(|| panic!("the proxy sent to an address it never heard: {t:?}"));
            if !binding.live {
                self.sent_to_stale += 1;
                continue;
            }
            return Some((binding.path, t.len));
        }
    }

    fn poll_packet(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.server.poll_packet(buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.drain_events(now);
    }
}
