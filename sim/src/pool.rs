//! A member and its neighbours behind one gateway side of the simulator: the member's
//! own uplinks, and its neighbours' uplinks reached over the mesh through their relays.
//!
//! [`PoolGateway`] holds a core per router: the measured member ([`PoolGateway::member`],
//! tunnel address `cfg.gateway_addr`, mesh address [`MEMBER_MESH`]) and each neighbour
//! (tunnel address [`neighbour_lan`]`(j)`, mesh address [`neighbour_mesh`]`(j)`), each a
//! real [`Client`] running the real mesh: the proxy grants every router its mesh
//! credential through its tunnel, and each router's core takes part in the mesh
//! ([`Client::enable_mesh`]) with its relay port and its owner's policy (a neighbour's
//! [`NeighbourSpec::policy`]; the member lends nothing unless told to,
//! [`PoolGateway::set_member_policy`]). The routers find each other by their hellos
//! ([`Client::poll_mesh_transmit`] / [`Client::handle_mesh_datagram`]), and the member's
//! paths through its neighbours are the ones its mesh opens, paced to what each relay
//! offers in its hellos (what its line has spare upstream beside its owner's traffic).
//! They appear a second or two in (credentials come after the session, discovery hellos
//! every second): [`PoolGateway::relayed_paths_active`] says when they carry traffic.
//!
//! The mesh is a star around the member: each neighbour has its own hop to the member
//! ([`NeighbourSpec::mesh`], one [`LinkModel`] each way, the simulator's link model), and
//! the neighbours do not hear each other. Everything on the mesh crosses these hops:
//! hellos (the member's broadcast goes on every neighbour's hop, a neighbour's reaches the
//! member), the member's datagrams on its path through a neighbour (which that neighbour's
//! core relays, as [`MeshReceived::Relay`], on its own line), and the replies the
//! neighbour's core hands back as [`Received::Relay`]. Each router believes its own mesh
//! address to be the one above, and each hello or datagram arrives from the sender's to
//! the receiver's (a hello's MAC binds both).
//!
//! The simulated paths are, in order, the member's own uplinks, then each neighbour's
//! uplink: a neighbour's line carries its own traffic to the proxy and what it relays for
//! the member, as one link. Traffic models for a neighbour's own LAN are added with
//! [`crate::Sim::add_from`] and [`neighbour_lan`].
//!
//! The proxy side is a [`ProxyCore::with_members`] that knows every router, with its wall
//! clock set so that it grants mesh credentials ([`pool`]).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use linkpool_protocol::client::{
    self, Client, ClientConfig, HelloDestination, MeshReceived, Received,
};
use linkpool_protocol::keys::{PublicKey, SecretKey};
use linkpool_protocol::path::{PathSettings, PathState};
use linkpool_protocol::relay::RelayPolicy;
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::RELAY_HEADER_LEN;
use linkpool_protocol::{CipherSuite, PathId, Transmit};

use crate::cores::{AdapterStats, MTU, PROXY_ADDR, ProxyCore, WALL_CLOCK_US, mix};
use crate::endpoint::Endpoint;
use crate::link::{Direction, LinkModel, LinkParams, LinkSpec, Verdict};
use crate::sim::SimConfig;

/// The port every router's mesh socket (hellos, relaying, its paths through neighbours)
/// listens on, as the gateway daemon's.
pub const RELAY_PORT: u16 = 7118;

/// Neighbour `j`'s LAN host (and tunnel address): 10.77.1.`j + 2`.
pub fn neighbour_lan(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1, u8::try_from(j + 2).expect("few neighbours"))
}

/// Neighbour `j`'s mesh socket (its relay listens there): 10.99.0.`j + 2`:[`RELAY_PORT`].
pub fn neighbour_mesh(j: usize) -> SocketAddr {
    let j = u8::try_from(j + 2).expect("few neighbours");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, j)), RELAY_PORT)
}

/// The member's mesh socket: 10.99.0.1:[`RELAY_PORT`].
pub const MEMBER_MESH: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), RELAY_PORT);

/// One neighbour: its mesh hop to the member, and what its owner shares.
#[derive(Clone, Copy, Debug)]
pub struct NeighbourSpec {
    /// The mesh hop: `upstream` from the member to the neighbour.
    pub mesh: LinkSpec,
    /// What the owner lets the member use of its line.
    pub policy: RelayPolicy,
}

/// The proxy's wall clock at the simulation's start (seconds since the epoch), from which
/// it grants mesh credentials (and the routers learn their offset to it).
const PROXY_WALL_CLOCK_S: u64 = WALL_CLOCK_US / 1_000_000 + 17;

/// A pool: the gateway side with `own` uplinks of the member's and one per neighbour
/// (`cfg.paths` has `own + neighbours.len()` entries, in that order), and a proxy that
/// knows every router (the member is [`crate::cores::MEMBER`], neighbour `j` member
/// `j + 1`) and grants them their mesh credentials.
pub fn pool(cfg: &SimConfig, own: usize, neighbours: &[NeighbourSpec]) -> (PoolGateway, ProxyCore) {
    assert_eq!(
        cfg.paths.len(),
        own + neighbours.len(),
        "a simulated path per own uplink and per neighbour"
    );
    let key = || SecretKey::generate().expect("randomness for a key");
    let proxy = key();
    let member = key();
    let mut members = vec![(member.public_key(), cfg.gateway_addr)];
    let mut keys = Vec::new();
    for j in 0..neighbours.len() {
        let k = key();
        members.push((k.public_key(), neighbour_lan(j)));
        keys.push(k);
    }
    let mut proxy_core = ProxyCore::with_members(cfg, proxy.clone(), &members);
    proxy_core
        .server_mut()
        .set_wall_clock(cfg.base, PROXY_WALL_CLOCK_S);
    let gateway = PoolGateway::new(cfg, own, member, keys, neighbours, proxy.public_key());
    (gateway, proxy_core)
}

/// Which router on the mesh: the member, or neighbour `j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Router {
    Member,
    Neighbour(usize),
}

struct Neighbour {
    core: Client,
    /// Its own line: the simulated path, and its core's path.
    wan: usize,
    own_path: PathId,
    /// The mesh hop between it and the member, each way.
    up: LinkModel,
    down: LinkModel,
    /// Datagrams on the mesh hop each way, with when they arrive (in order: the model
    /// never reorders).
    to_relay: VecDeque<(Instant, Vec<u8>)>,
    to_member: VecDeque<(Instant, Vec<u8>)>,
    /// Still there: a neighbour that vanished sends and takes nothing.
    present: bool,
    stats: AdapterStats,
}

/// The gateway side of a pool; see the module.
pub struct PoolGateway {
    member: Client,
    /// The member's core path for each of its own uplinks.
    own: Vec<PathId>,
    neighbours: Vec<Neighbour>,
    /// Datagrams ready for the simulated paths (relayed ones, once across the mesh).
    ready: VecDeque<(usize, Vec<u8>)>,
    stats: AdapterStats,
    buf: Vec<u8>,
}

fn core(cfg: &SimConfig, key: SecretKey, proxy: PublicKey, salt: u64) -> Client {
    let config = ClientConfig {
        static_key: key,
        proxy_key: proxy,
        psk: None,
        suite: CipherSuite::default(),
        limits: Limits::default(),
        mtu: MTU,
        queue_slots: cfg.queue_slots.unwrap_or(client::DEFAULT_QUEUE_SLOTS),
    };
    Client::new(config, cfg.base, WALL_CLOCK_US, mix(cfg.seed, salt))
}

/// A router's mesh address.
fn mesh_addr(r: Router) -> SocketAddr {
    match r {
        Router::Member => MEMBER_MESH,
        Router::Neighbour(j) => neighbour_mesh(j),
    }
}

/// The router at a mesh address.
fn router_at(addr: SocketAddr, neighbours: usize) -> Option<Router> {
    if addr == MEMBER_MESH {
        return Some(Router::Member);
    }
    (0..neighbours)
        .find(|&j| neighbour_mesh(j) == addr)
        .map(Router::Neighbour)
}

impl PoolGateway {
    fn new(
        cfg: &SimConfig,
        own: usize,
        member_key: SecretKey,
        keys: Vec<SecretKey>,
        specs: &[NeighbourSpec],
        proxy: PublicKey,
    ) -> PoolGateway {
        let start = cfg.base;
        let mut member = core(cfg, member_key, proxy, 1);
        let own_paths = (0..own)
            .map(|_| member.open_path(start, PROXY_ADDR, PathSettings::default()))
            .collect();
        // The member lends nothing unless told to.
        member.relay_mut().set_policy(RelayPolicy::OFF);
        member.enable_mesh(start, RELAY_PORT, PathSettings::default());
        let neighbours = keys
            .into_iter()
            .zip(specs)
            .enumerate()
            .map(|(j, (key, spec))| {
                let mut core = core(cfg, key, proxy, 1000 + j as u64);
                let own_path = core.open_path(start, PROXY_ADDR, PathSettings::default());
                core.relay_mut().set_policy(spec.policy);
                core.enable_mesh(start, RELAY_PORT, PathSettings::default());
                Neighbour {
                    core,
                    wan: own + j,
                    own_path,
                    up: LinkModel::new(spec.mesh.upstream, mix(cfg.seed, 2000 + j as u64)),
                    down: LinkModel::new(spec.mesh.downstream, mix(cfg.seed, 3000 + j as u64)),
                    to_relay: VecDeque::new(),
                    to_member: VecDeque::new(),
                    present: true,
                    stats: AdapterStats::default(),
                }
            })
            .collect();
        PoolGateway {
            member,
            own: own_paths,
            neighbours,
            ready: VecDeque::new(),
            stats: AdapterStats::default(),
            buf: vec![0; crate::sim::BUFFER],
        }
    }

    /// The measured member's core.
    pub fn member(&self) -> &Client {
        &self.member
    }

    /// What the member's owner lends its neighbours from `now` on (nothing at first).
    pub fn set_member_policy(&mut self, now: Instant, policy: RelayPolicy) {
        self.member.relay_mut().set_policy(policy);
        self.member
            .enable_mesh(now, RELAY_PORT, PathSettings::default());
    }

    /// What neighbour `j`'s owner lends from `now` on (its offer in its next hellos).
    pub fn set_neighbour_policy(&mut self, now: Instant, j: usize, policy: RelayPolicy) {
        let core = &mut self.neighbours[j].core;
        core.relay_mut().set_policy(policy);
        core.enable_mesh(now, RELAY_PORT, PathSettings::default());
    }

    /// Neighbour `j`'s member id at the proxy, once the proxy granted it its credential.
    pub fn neighbour_member_id(&self, j: usize) -> Option<u32> {
        let grant = self.neighbours[j].core.mesh_grant()?;
        Some(grant.credential.member())
    }

    /// The member's path through neighbour `j`'s relay, once its mesh opened one.
    pub fn relayed_path(&self, j: usize) -> Option<&linkpool_protocol::path::Path> {
        let relay = self.neighbour_member_id(j)?;
        self.member
            .paths()
            .iter()
            .find(|p| p.endpoint().relay.is_some_and(|h| h.relay == relay))
    }

    /// Whether the member has an active path through every neighbour still there whose
    /// owner shares its line: what the pool needs before its transfers are measured.
    pub fn relayed_paths_active(&self) -> bool {
        (0..self.neighbours.len())
            .filter(|&j| self.neighbours[j].present)
            .filter(|&j| self.neighbours[j].core.relay().policy().sharing)
            .all(|j| {
                self.relayed_path(j)
                    .is_some_and(|p| p.state() == PathState::Active)
            })
    }

    /// The member's core path on simulated path `i` (its own uplink, or its path through
    /// the neighbour whose line path `i` is). Panics if the member's mesh has no path
    /// through that neighbour (yet, or any more).
    pub fn path_id(&self, i: usize) -> PathId {
        match i.checked_sub(self.own.len()) {
            None => self.own[i],
            Some(j) => self
                .relayed_path(j)
                .unwrap_or_else(|| panic!("the member has no path through neighbour {j}"))
                .id(),
        }
    }

    /// Neighbour `j`'s core.
    pub fn neighbour(&self, j: usize) -> &Client {
        &self.neighbours[j].core
    }

    /// Neighbour `j`'s core, mutable. Its relay policy is also its mesh offer: change it
    /// with [`PoolGateway::set_neighbour_policy`].
    pub fn neighbour_mut(&mut self, j: usize) -> &mut Client {
        &mut self.neighbours[j].core
    }

    /// What the member's core refused (on the mesh included).
    pub fn stats(&self) -> &AdapterStats {
        &self.stats
    }

    /// What neighbour `j`'s core refused (relaying and the mesh included).
    pub fn neighbour_stats(&self, j: usize) -> &AdapterStats {
        &self.neighbours[j].stats
    }

    /// Neighbour `j` vanishes (its router is switched off): it sends and takes nothing
    /// more, and what was on its mesh hop is lost.
    pub fn remove_neighbour(&mut self, j: usize) {
        let n = &mut self.neighbours[j];
        n.present = false;
        n.to_relay.clear();
        n.to_member.clear();
    }

    /// Changes neighbour `j`'s mesh hop in `dirs` at `now` (`upstream` is from the member
    /// to the neighbour): a hop set down drops what it carries until it is set up again.
    pub fn change_mesh(
        &mut self,
        now: Instant,
        j: usize,
        dirs: &[Direction],
        change: impl Fn(&mut LinkParams),
    ) {
        let n = &mut self.neighbours[j];
        for &d in dirs {
            let (link, crossing) = match d {
                Direction::Upstream => (&mut n.up, &mut n.to_relay),
                Direction::Downstream => (&mut n.down, &mut n.to_member),
            };
            let mut params = *link.params();
            change(&mut params);
            link.set_params(now, params);
            if !params.up {
                // What the model lost in flight is still queued here.
                crossing.retain(|(due, _)| *due <= now);
            }
        }
    }

    /// Puts `d` on the mesh from `from` to `to` at `now`: on the hop between the member
    /// and a neighbour (the neighbours do not hear each other).
    fn send_mesh(&mut self, now: Instant, from: Router, to: Router, d: &[u8]) {
        let (j, upstream) = match (from, to) {
            (Router::Member, Router::Neighbour(j)) => (j, true),
            (Router::Neighbour(j), Router::Member) => (j, false),
            _ => panic!("no mesh hop from {from:?} to {to:?}"),
        };
        let n = &mut self.neighbours[j];
        if !n.present {
            return;
        }
        let (link, queue) = match upstream {
            true => (&mut n.up, &mut n.to_relay),
            false => (&mut n.down, &mut n.to_member),
        };
        if let Verdict::Deliver(due) = link.offer(now, d.len()) {
            queue.push_back((due, d.to_vec()));
        }
    }

    /// The simulated path a router's own line is, for a datagram its core sends there.
    fn line_of(&self, r: Router, t: &Transmit) -> usize {
        assert_eq!(t.remote, PROXY_ADDR, "{r:?} sent elsewhere: {t:?}");
        match r {
            Router::Member => self
                .own
                .iter()
                .position(|&p| p == t.path)
                .unwrap_or_else(|| panic!("the member sent on a path it never opened: {t:?}")),
            Router::Neighbour(j) => {
                let n = &self.neighbours[j];
                assert_eq!(
                    t.path, n.own_path,
                    "neighbour {j} sent on another line: {t:?}"
                );
                n.wan
            }
        }
    }

    /// A datagram that crossed the mesh from `from` reaches `to` (in `self.buf`, at
    /// [`RELAY_HEADER_LEN`], `len` bytes): a hello, a reply for one of its paths through
    /// a neighbour, or one it relays on its own line.
    fn mesh_arrival(&mut self, now: Instant, from: Router, to: Router, len: usize) {
        let (src, dst) = (mesh_addr(from), mesh_addr(to));
        let (core, stats) = match to {
            Router::Member => (&mut self.member, &mut self.stats),
            Router::Neighbour(j) => {
                let n = &mut self.neighbours[j];
                (&mut n.core, &mut n.stats)
            }
        };
        match core.handle_mesh_datagram(now, src, dst, &mut self.buf, len) {
            Ok(MeshReceived::Taken) => {}
            Ok(MeshReceived::Relay(t)) => {
                let line = self.line_of(to, &t);
                self.ready.push_back((line, self.buf[..t.len].to_vec()));
            }
            Err(e) => stats.refused(e, true),
        }
    }

    /// Moves what crossed the mesh by `now` into the cores at the far end.
    fn cross_mesh(&mut self, now: Instant) {
        for j in 0..self.neighbours.len() {
            loop {
                let n = &mut self.neighbours[j];
                let (from, to, datagram) = if n.to_relay.front().is_some_and(|(d, _)| *d <= now) {
                    let (_, d) = n.to_relay.pop_front().expect("checked");
                    (Router::Member, Router::Neighbour(j), d)
                } else if n.to_member.front().is_some_and(|(d, _)| *d <= now) {
                    let (_, d) = n.to_member.pop_front().expect("checked");
                    (Router::Neighbour(j), Router::Member, d)
                } else {
                    break;
                };
                let len = datagram.len();
                self.buf[RELAY_HEADER_LEN..][..len].copy_from_slice(&datagram);
                self.mesh_arrival(now, from, to, len);
            }
        }
    }

    /// Sends every router's hellos that are due.
    fn hellos(&mut self, now: Instant, buf: &mut [u8]) {
        let routers: Vec<Router> = std::iter::once(Router::Member)
            .chain(
                (0..self.neighbours.len())
                    .filter(|&j| self.neighbours[j].present)
                    .map(Router::Neighbour),
            )
            .collect();
        for from in routers {
            loop {
                let core = match from {
                    Router::Member => &mut self.member,
                    Router::Neighbour(j) => &mut self.neighbours[j].core,
                };
                let Some(h) = core.poll_mesh_transmit(now, buf) else {
                    break;
                };
                let hello = &buf[..h.len];
                match h.destination {
                    HelloDestination::Mesh => match from {
                        // Broadcast: every neighbour hears the member, the member hears
                        // each neighbour (a star).
                        Router::Member => {
                            for j in 0..self.neighbours.len() {
                                self.send_mesh(now, from, Router::Neighbour(j), hello);
                            }
                        }
                        Router::Neighbour(_) => self.send_mesh(now, from, Router::Member, hello),
                    },
                    HelloDestination::Neighbour { remote, local, .. } => {
                        assert_eq!(local, mesh_addr(from), "{from:?} believes it is elsewhere");
                        let to = router_at(remote, self.neighbours.len())
                            .unwrap_or_else(|| panic!("a hello to nobody: {remote}"));
                        self.send_mesh(now, from, to, hello);
                    }
                }
            }
        }
    }

    /// A datagram a router's core sends on its path through another router's relay.
    fn through_relay(&mut self, now: Instant, from: Router, t: &Transmit, d: &[u8]) {
        let to = router_at(t.remote, self.neighbours.len())
            .unwrap_or_else(|| panic!("{from:?} sent to nobody on the mesh: {t:?}"));
        self.send_mesh(now, from, to, d);
    }
}

impl Endpoint for PoolGateway {
    fn handle_packet(&mut self, now: Instant, packet: &[u8]) {
        let source = linkpool_protocol::ip::source(packet);
        let core = match self
            .neighbours
            .iter_mut()
            .enumerate()
            .find(|(j, _)| source == Some(IpAddr::V4(neighbour_lan(*j))))
        {
            Some((_, n)) if !n.present => return,
            Some((_, n)) => &mut n.core,
            None => &mut self.member,
        };
        if let Err(e) = core.handle_packet(now, packet) {
            self.stats.refused(e, false);
        }
    }

    fn handle_datagram(&mut self, now: Instant, path: usize, datagram: &mut [u8]) {
        let (r, result) = match path.checked_sub(self.own.len()) {
            None => {
                let r = self.member.handle_datagram(now, self.own[path], datagram);
                (Router::Member, r)
            }
            Some(j) => {
                let n = &mut self.neighbours[j];
                if !n.present {
                    return;
                }
                (
                    Router::Neighbour(j),
                    n.core.handle_datagram(now, n.own_path, datagram),
                )
            }
        };
        match result {
            Ok(Received::Relay { to, start, len }) => {
                // For a neighbour of `r`'s: across the mesh to it.
                let dest = router_at(to, self.neighbours.len())
                    .unwrap_or_else(|| panic!("{r:?} passed a reply to nobody: {to}"));
                self.send_mesh(now, r, dest, &datagram[start..start + len]);
            }
            Ok(_) => {}
            Err(e) => match r {
                Router::Member => self.stats.refused(e, true),
                Router::Neighbour(j) => self.neighbours[j].stats.refused(e, true),
            },
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.cross_mesh(now);
        self.hellos(now, buf);
        loop {
            if let Some((path, d)) = self.ready.pop_front() {
                buf[..d.len()].copy_from_slice(&d);
                return Some((path, d.len()));
            }
            // Each neighbour's own traffic, then the member's.
            let mut sent = None;
            for (j, n) in self.neighbours.iter_mut().enumerate() {
                if !n.present {
                    continue;
                }
                if let Some(t) = n.core.poll_transmit(now, buf) {
                    sent = Some((Router::Neighbour(j), t));
                    break;
                }
            }
            let (r, t) = match sent {
                Some(s) => s,
                None => (Router::Member, self.member.poll_transmit(now, buf)?),
            };
            if t.remote == PROXY_ADDR {
                return Some((self.line_of(r, &t), t.len));
            }
            self.through_relay(now, r, &t, &buf[..t.len]);
        }
    }

    fn poll_packet(&mut self, _now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(n) = self.member.poll_packet(buf) {
            return Some(n);
        }
        self.neighbours
            .iter_mut()
            .filter(|n| n.present)
            .find_map(|n| n.core.poll_packet(buf))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mesh = self.neighbours.iter().flat_map(|n| {
            [n.to_relay.front(), n.to_member.front()]
                .into_iter()
                .flatten()
                .map(|(due, _)| *due)
        });
        let cores = self
            .neighbours
            .iter()
            .filter(|n| n.present)
            .filter_map(|n| n.core.poll_timeout());
        mesh.chain(cores).chain(self.member.poll_timeout()).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.cross_mesh(now);
        self.member.handle_timeout(now);
        for n in self.neighbours.iter_mut().filter(|n| n.present) {
            n.core.handle_timeout(now);
        }
    }
}
