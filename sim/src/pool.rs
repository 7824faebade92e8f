//! A member and its neighbours behind one gateway side of the simulator: the member's
//! own uplinks, and its neighbours' uplinks reached over the mesh through their relays.
//!
//! [`PoolGateway`] holds a core per router: the measured member ([`PoolGateway::member`],
//! tunnel address `cfg.gateway_addr`) and each neighbour (tunnel address
//! [`neighbour_lan`]`(j)`), each a real [`Client`]. The simulated paths are, in order, the
//! member's own uplinks, then each neighbour's uplink: a neighbour's line carries its own
//! traffic to the proxy and what it relays for the member, as one link. The member reaches
//! a neighbour's relay over a mesh hop of its own ([`NeighbourSpec::mesh`], one
//! [`LinkModel`] each way, the simulator's link model): its datagrams for that path cross
//! the hop to the neighbour's `relay_up`, and what the neighbour's core hands back as
//! [`Received::Relay`] crosses it back. Traffic models for a neighbour's own LAN are added
//! with [`crate::Sim::add_from`] and [`neighbour_lan`].
//!
//! The proxy side is a [`ProxyCore::with_members`] that knows every router ([`pool`]).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use linkpool_protocol::client::{self, Client, ClientConfig, Received};
use linkpool_protocol::keys::{PublicKey, SecretKey};
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::relay::RelayPolicy;
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::RELAY_HEADER_LEN;
use linkpool_protocol::{CipherSuite, PathId};

use crate::cores::{AdapterStats, MTU, PROXY_ADDR, ProxyCore, WALL_CLOCK_US, mix};
use crate::endpoint::Endpoint;
use crate::link::{Direction, LinkModel, LinkParams, LinkSpec, Verdict};
use crate::sim::SimConfig;

/// Neighbour `j`'s LAN host (and tunnel address): 10.77.1.`j + 2`.
pub fn neighbour_lan(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1, u8::try_from(j + 2).expect("few neighbours"))
}

/// Where neighbour `j`'s relay listens on the mesh.
pub fn neighbour_mesh(j: usize) -> SocketAddr {
    let j = u8::try_from(j + 2).expect("few neighbours");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, j)), 7118)
}

/// Where the member's mesh socket is.
pub const MEMBER_MESH: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), 40000);

/// One neighbour: its mesh hop to the member, and what its owner shares.
#[derive(Clone, Copy, Debug)]
pub struct NeighbourSpec {
    /// The mesh hop: `upstream` from the member to the neighbour.
    pub mesh: LinkSpec,
    /// What the owner lets the member use of its line.
    pub policy: RelayPolicy,
}

/// A pool: the gateway side with `own` uplinks of the member's and one per neighbour
/// (`cfg.paths` has `own + neighbours.len()` entries, in that order), and a proxy that
/// knows every router.
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
    let proxy_core = ProxyCore::with_members(cfg, proxy.clone(), &members);
    let gateway = PoolGateway::new(cfg, own, member, keys, neighbours, proxy.public_key());
    (gateway, proxy_core)
}

struct Neighbour {
    core: Client,
    /// Its own line: the simulated path, and its core's path.
    wan: usize,
    own_path: PathId,
    /// The member's path through it.
    member_path: PathId,
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
        let neighbours = keys
            .into_iter()
            .zip(specs)
            .enumerate()
            .map(|(j, (key, spec))| {
                let mut core = core(cfg, key, proxy, 1000 + j as u64);
                let own_path = core.open_path(start, PROXY_ADDR, PathSettings::default());
                core.relay_mut().set_policy(spec.policy);
                core.relay_mut()
                    .admit(MEMBER_MESH)
                    .expect("room for the member");
                let member_path = member.open_relayed_path(
                    start,
                    neighbour_mesh(j),
                    j as u32 + 1,
                    PathSettings::default(),
                );
                Neighbour {
                    core,
                    wan: own + j,
                    own_path,
                    member_path,
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

    /// The member's core path on simulated path `i` (its own uplink, or its path through
    /// the neighbour whose line path `i` is).
    pub fn path_id(&self, i: usize) -> PathId {
        match i.checked_sub(self.own.len()) {
            None => self.own[i],
            Some(j) => self.neighbours[j].member_path,
        }
    }

    /// Neighbour `j`'s core.
    pub fn neighbour(&self, j: usize) -> &Client {
        &self.neighbours[j].core
    }

    /// Neighbour `j`'s core, mutable (its relay policy).
    pub fn neighbour_mut(&mut self, j: usize) -> &mut Client {
        &mut self.neighbours[j].core
    }

    /// What the member's core refused.
    pub fn stats(&self) -> &AdapterStats {
        &self.stats
    }

    /// What neighbour `j`'s core refused (relaying included).
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

    /// Moves what crossed the mesh by `now`: to a relay, on to its line; to the member,
    /// into its core.
    fn cross_mesh(&mut self, now: Instant) {
        for n in &mut self.neighbours {
            while n.to_relay.front().is_some_and(|(due, _)| *due <= now) {
                let (_, datagram) = n.to_relay.pop_front().expect("checked");
                let len = datagram.len();
                self.buf[RELAY_HEADER_LEN..][..len].copy_from_slice(&datagram);
                match n.core.relay_up(now, MEMBER_MESH, &mut self.buf, len) {
                    Ok(t) => {
                        assert_eq!(t.path, n.own_path, "a relay sent on another line: {t:?}");
                        assert_eq!(t.remote, PROXY_ADDR, "a relay sent elsewhere: {t:?}");
                        self.ready.push_back((n.wan, self.buf[..t.len].to_vec()));
                    }
                    Err(e) => n.stats.refused(e, true),
                }
            }
            while n.to_member.front().is_some_and(|(due, _)| *due <= now) {
                let (_, mut datagram) = n.to_member.pop_front().expect("checked");
                if let Err(e) = self
                    .member
                    .handle_datagram(now, n.member_path, &mut datagram)
                {
                    self.stats.refused(e, true);
                }
            }
        }
    }
}

fn offer(link: &mut LinkModel, queue: &mut VecDeque<(Instant, Vec<u8>)>, now: Instant, d: &[u8]) {
    if let Verdict::Deliver(due) = link.offer(now, d.len()) {
        queue.push_back((due, d.to_vec()));
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
        let Some(j) = path.checked_sub(self.own.len()) else {
            if let Err(e) = self.member.handle_datagram(now, self.own[path], datagram) {
                self.stats.refused(e, true);
            }
            return;
        };
        let n = &mut self.neighbours[j];
        if !n.present {
            return;
        }
        match n.core.handle_datagram(now, n.own_path, datagram) {
            Ok(Received::Relay { to, start, len }) => {
                assert_eq!(
                    to, MEMBER_MESH,
                    "a relay passed a reply to another neighbour"
                );
                offer(
                    &mut n.down,
                    &mut n.to_member,
                    now,
                    &datagram[start..start + len],
                );
            }
            Ok(_) => {}
            Err(e) => n.stats.refused(e, true),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(usize, usize)> {
        self.cross_mesh(now);
        loop {
            if let Some((path, d)) = self.ready.pop_front() {
                buf[..d.len()].copy_from_slice(&d);
                return Some((path, d.len()));
            }
            // Each neighbour's own traffic, on its own line.
            for n in self.neighbours.iter_mut().filter(|n| n.present) {
                if let Some(t) = n.core.poll_transmit(now, buf) {
                    assert_eq!(t.path, n.own_path);
                    return Some((n.wan, t.len));
                }
            }
            let t = self.member.poll_transmit(now, buf)?;
            if let Some(i) = self.own.iter().position(|&p| p == t.path) {
                assert_eq!(t.remote, PROXY_ADDR, "the member sent elsewhere: {t:?}");
                return Some((i, t.len));
            }
            let n = self
                .neighbours
                .iter_mut()
                .find(|n| n.member_path == t.path)
                .unwrap_or_else(|| panic!("the member sent on a path it never opened: {t:?}"));
            if n.present {
                offer(&mut n.up, &mut n.to_relay, now, &buf[..t.len]);
            }
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
