//! Two members on one mesh, each with its own line, finding each other by their hellos
//! and pooling: the cores driven in one process as their daemons drive them, with the
//! proxy granting each its mesh credential through its tunnel. Delivery is instant.
//!
//! Each router has one mesh socket (hellos, relaying, and its paths through neighbours,
//! all on its relay port) and one uplink. What the proxy sends to a router's line goes to
//! its `handle_datagram`; what comes out as `Received::Relay` crosses the mesh.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::pair::{MEMBER_IP, MTU, packet, sharing};
use linkpool_protocol::client::{
    self, Client, ClientConfig, HelloDestination, MeshReceived, Received,
};
use linkpool_protocol::keys::SecretKey;
use linkpool_protocol::path::{PathSettings, PathState};
use linkpool_protocol::relay::seal_envelope;
use linkpool_protocol::server::{self, MemberKey, Server, ServerConfig};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{MAX_DATAGRAM, MessageType, RELAY_HEADER_LEN, RELAY_OVERHEAD};
use linkpool_protocol::{CipherSuite, DropReason};

const PROXY: &str = "203.0.113.10:7117";
const RELAY_PORT: u16 = 7118;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Router {
    core: Client,
    /// Its line's address as the proxy sees it, and its mesh socket's.
    wan: SocketAddr,
    mesh: SocketAddr,
}

struct Coop {
    now: Instant,
    server: Server,
    routers: Vec<Router>,
    /// Inner packets out of the proxy.
    at_proxy: Vec<Vec<u8>>,
    /// Datagrams that crossed the mesh (hellos excepted), by sender.
    mesh_datagrams: [u64; 2],
    /// What the second router does to what it relays for the first.
    mischief: Mischief,
    /// What it relayed, kept to replay.
    relayed: Vec<Vec<u8>>,
}

/// A relay that misbehaves with what it carries towards the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mischief {
    None,
    /// Drops everything, handshakes included.
    Drop,
    /// Sends everything twice, and an earlier datagram again each time.
    Replay,
    /// Sends, beside each, a burst of junk tagged as its own.
    Flood,
}

impl Coop {
    /// Two members (the first with tunnel address [`MEMBER_IP`]), both sharing, and a
    /// device on the mesh that is none (`stranger`'s key is not the proxy's member's).
    fn new() -> Coop {
        let now = Instant::now();
        let proxy_key = SecretKey::generate().unwrap();
        let keys = [
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        ];
        let ips = [MEMBER_IP, [10, 77, 0, 3]];
        let mut server = Server::new(
            ServerConfig {
                static_key: proxy_key.clone(),
                members: keys
                    .iter()
                    .zip(ips)
                    .map(|(k, ip)| MemberKey {
                        public_key: k.public_key(),
                        psk: None,
                        addresses: vec![ip.into()],
                    })
                    .collect(),
                limits: Limits::default(),
                handshakes_per_second: 50,
                mtu: MTU,
                queue_slots: server::DEFAULT_QUEUE_SLOTS,
            },
            now,
            [9; 32],
        );
        server.set_wall_clock(now, 1_800_000_000);
        let routers = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let config = ClientConfig {
                    static_key: key,
                    proxy_key: proxy_key.public_key(),
                    psk: None,
                    suite: CipherSuite::ChaCha20Poly1305,
                    limits: Limits::default(),
                    mtu: MTU,
                    queue_slots: client::DEFAULT_QUEUE_SLOTS,
                };
                // Their clocks are far off the proxy's, and each other's.
                let mut core = Client::new(config, now, (i as u64 + 1) * 3_600_000_000, i as u64);
                core.open_path(now, addr(PROXY), PathSettings::default());
                core.relay_mut().set_policy(sharing());
                core.enable_mesh(now, RELAY_PORT, PathSettings::default());
                Router {
                    core,
                    wan: addr(&format!("198.51.100.{}:40000", i + 2)),
                    mesh: addr(&format!("10.99.0.{}:{RELAY_PORT}", i + 2)),
                }
            })
            .collect();
        Coop {
            now,
            server,
            routers,
            at_proxy: Vec::new(),
            mesh_datagrams: [0; 2],
            mischief: Mischief::None,
            relayed: Vec::new(),
        }
    }

    /// Hands a datagram that crossed the mesh from router `from` to router `to`.
    fn across_mesh(&mut self, from: usize, to: usize, buf: &mut [u8], len: usize) {
        let (src, dst) = (self.routers[from].mesh, self.routers[to].mesh);
        let now = self.now;
        match self.routers[to]
            .core
            .handle_mesh_datagram(now, src, dst, buf, len)
        {
            Ok(MeshReceived::Relay(t)) => {
                assert_eq!(t.remote, addr(PROXY), "a relay sent elsewhere");
                let wan = self.routers[to].wan;
                let mischief = if to == 1 {
                    self.mischief
                } else {
                    Mischief::None
                };
                if mischief == Mischief::Drop {
                    return;
                }
                if mischief == Mischief::Replay {
                    self.relayed.push(buf[..t.len].to_vec());
                    let mut copy = buf[..t.len].to_vec();
                    let _ = self.server.handle_datagram(now, wan, None, &mut copy);
                    let mut again = self.relayed[self.relayed.len() / 2].clone();
                    let _ = self.server.handle_datagram(now, wan, None, &mut again);
                }
                let _ = self
                    .server
                    .handle_datagram(now, wan, None, &mut buf[..t.len]);
                if mischief == Mischief::Flood {
                    // Junk in the member's datagram's place, in an envelope the relay tags
                    // as its own (it cannot seal for the member).
                    let (index, up, _) = self.routers[1].core.relay_keys().expect("a session");
                    let slot = u32::from_be_bytes(buf[8..12].try_into().unwrap());
                    let inner = t.len - RELAY_OVERHEAD;
                    for k in 0..20u8 {
                        let mut junk = buf[..t.len].to_vec();
                        for b in &mut junk[RELAY_HEADER_LEN + 16..RELAY_HEADER_LEN + inner] {
                            *b = b.wrapping_mul(31).wrapping_add(k);
                        }
                        // Counters far ahead: were they believed, the member's next
                        // packets would look old.
                        let counter = (RELAY_HEADER_LEN + 8)..(RELAY_HEADER_LEN + 16);
                        junk[counter].copy_from_slice(&(1u64 << 40 | u64::from(k)).to_be_bytes());
                        let kind = MessageType::RelayUp;
                        let n = seal_envelope(&up, kind, index, slot, &mut junk, inner).unwrap();
                        let _ = self.server.handle_datagram(now, wan, None, &mut junk[..n]);
                    }
                }
            }
            Ok(MeshReceived::Taken) | Err(_) => {}
        }
    }

    fn run(&mut self, step: Duration) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut moved = true;
        while moved {
            moved = false;
            for i in 0..2 {
                let now = self.now;
                // Hellos: to everyone on the mesh, or to one neighbour.
                while let Some(h) = self.routers[i]
                    .core
                    .poll_mesh_transmit(now, &mut buf[RELAY_HEADER_LEN..])
                {
                    moved = true;
                    let to = match h.destination {
                        HelloDestination::Mesh => 1 - i,
                        HelloDestination::Neighbour { remote, .. } => {
                            assert_eq!(remote, self.routers[1 - i].mesh);
                            1 - i
                        }
                    };
                    self.across_mesh(i, to, &mut buf, h.len);
                }
                while let Some(t) = self.routers[i]
                    .core
                    .poll_transmit(now, &mut buf[RELAY_HEADER_LEN..])
                {
                    moved = true;
                    if t.remote == addr(PROXY) {
                        let wan = self.routers[i].wan;
                        buf.copy_within(RELAY_HEADER_LEN..RELAY_HEADER_LEN + t.len, 0);
                        let _ = self
                            .server
                            .handle_datagram(now, wan, None, &mut buf[..t.len]);
                    } else {
                        // To the neighbour (its relay's port may differ from its hellos').
                        let to = self.routers[1 - i].mesh.ip();
                        assert_eq!(t.remote.ip(), to, "a path to nowhere");
                        self.mesh_datagrams[i] += 1;
                        self.across_mesh(i, 1 - i, &mut buf, t.len);
                    }
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                moved = true;
                let i = self
                    .routers
                    .iter()
                    .position(|r| r.wan == t.remote)
                    .expect("the proxy answers a router's line");
                let now = self.now;
                let own = path_of(&self.routers[i].core);
                if let Ok(Received::Relay { to, start, len }) = self.routers[i]
                    .core
                    .handle_datagram(now, own, &mut buf[..t.len])
                {
                    assert_eq!(to, self.routers[1 - i].mesh);
                    self.mesh_datagrams[i] += 1;
                    buf.copy_within(start..start + len, RELAY_HEADER_LEN);
                    self.across_mesh(i, 1 - i, &mut buf, len);
                }
            }
            let mut inner = vec![0u8; MAX_DATAGRAM];
            while let Some(n) = self.server.poll_packet(&mut inner) {
                self.at_proxy.push(inner[..n].to_vec());
            }
            for r in &mut self.routers {
                while r.core.poll_packet(&mut inner).is_some() {}
            }
        }
        self.now += step;
        for r in &mut self.routers {
            r.core.handle_timeout(self.now);
        }
        self.server.handle_timeout(self.now);
    }
}

/// A router's own line's path.
fn path_of(core: &Client) -> linkpool_protocol::PathId {
    core.paths()
        .iter()
        .find(|p| p.endpoint().relay.is_none())
        .expect("its own line")
        .id()
}

/// Two members on the mesh, each granted its credential by the proxy through its own
/// line, find each other by their hellos, open a path through each other's relay, and
/// the first one's packets reach the proxy over both lines.
#[test]
fn neighbours_found_on_the_mesh_pool_their_lines() {
    let mut coop = Coop::new();
    for _ in 0..300 {
        coop.run(Duration::from_millis(10));
    }
    for (i, r) in coop.routers.iter().enumerate() {
        assert!(r.core.is_connected(), "router {i}");
        let n = r.core.neighbours().expect("the mesh runs once granted");
        let usable: Vec<_> = n
            .neighbours()
            .filter(|x| x.usable())
            .map(|x| x.member())
            .collect();
        assert_eq!(usable, [1 - i as u32], "router {i}'s neighbours");
        let relayed = r
            .core
            .paths()
            .iter()
            .filter(|p| p.endpoint().relay.is_some())
            .count();
        assert_eq!(relayed, 1, "router {i}: a path through its neighbour");
        assert_eq!(
            r.core.relay().neighbours().count(),
            1,
            "router {i}: a relay slot"
        );
    }
    // The first member sends; the proxy hears it on its own line and through the other's.
    let mut p = vec![0u8; 1200];
    for seq in 0..400 {
        packet(&mut p, 1200, true, seq);
        coop.routers[0].core.handle_packet(coop.now, &p).unwrap();
        coop.run(Duration::from_millis(1));
    }
    assert!(
        coop.at_proxy.len() >= 395,
        "{} of 400 arrived",
        coop.at_proxy.len()
    );
    let member = coop.server.member(server::MemberId(0)).unwrap();
    let relayed = member
        .paths
        .iter()
        .find(|p| p.endpoint().relay.is_some())
        .expect("the proxy has the relayed path");
    assert!(
        relayed.counters().rx_packets > 0,
        "nothing came through the neighbour"
    );
    assert!(coop.mesh_datagrams[0] > 0);
    assert_eq!(coop.server.stats().drops.get(DropReason::BadRelayTag), 0);
}

/// A neighbour whose relay drops, replays or floods what it carries (handshakes included)
/// costs the member that one path: its session holds on its own line, through rekeys,
/// and its packets arrive, whatever the relay does.
#[test]
fn a_malicious_relay_costs_its_neighbour_only_that_path() {
    for mischief in [Mischief::Drop, Mischief::Replay, Mischief::Flood] {
        let mut coop = Coop::new();
        for _ in 0..300 {
            coop.run(Duration::from_millis(10));
        }
        let relayed = |c: &Coop| {
            c.routers[0]
                .core
                .paths()
                .iter()
                .filter(|p| p.endpoint().relay.is_some())
                .count()
        };
        assert_eq!(relayed(&coop), 1);
        coop.mischief = mischief;
        let handshakes = coop.routers[0].core.stats().handshakes_completed;
        let mut p = vec![0u8; 600];
        let mut sent = 0u64;
        // Five minutes: two rekeys, on whichever path each tries first.
        for second in 0..300u32 {
            for k in 0..5 {
                packet(&mut p, 600, true, second * 10 + k);
                if coop.routers[0].core.handle_packet(coop.now, &p).is_ok() {
                    sent += 1;
                }
                coop.run(Duration::from_millis(200));
            }
            assert!(
                coop.routers[0].core.is_connected(),
                "{mischief:?}: session lost at {second} s"
            );
        }
        let r = &coop.routers[0].core;
        assert!(
            r.stats().handshakes_completed >= handshakes + 2,
            "{mischief:?}: no rekey ({handshakes} then {})",
            r.stats().handshakes_completed
        );
        // Nearly all arrived: what went to the relay before its path was suspected was
        // re-sent on the member's own line.
        let arrived = coop.at_proxy.len() as u64;
        assert!(
            arrived >= sent * 95 / 100,
            "{mischief:?}: {arrived} of {sent} arrived"
        );
        for p in &coop.at_proxy {
            assert_eq!(
                &p[12..16],
                &MEMBER_IP,
                "{mischief:?}: a packet from elsewhere"
            );
        }
        let drops = &coop.server.stats().drops;
        match mischief {
            Mischief::Replay => assert!(drops.get(DropReason::Replay) > 0, "{drops:?}"),
            Mischief::Flood => assert!(drops.get(DropReason::BadTag) > 0, "{drops:?}"),
            _ => {}
        }
        println!(
            "{mischief:?}: {arrived} of {sent} arrived, {} handshakes, proxy drops {:?}",
            r.stats().handshakes_completed - handshakes,
            drops.iter().collect::<Vec<_>>()
        );
    }
}

/// A relay tells its neighbours in its hellos what its line has spare upstream, and they
/// pace their paths through it to that: while its owner's own traffic fills the line, a
/// trickle; once the owner is idle, the owner's cap again.
#[test]
fn a_busy_owner_offers_its_neighbours_only_what_its_line_has_spare() {
    let mut coop = Coop::new();
    for _ in 0..300 {
        coop.run(Duration::from_millis(10));
    }
    let cap = |coop: &Coop| {
        coop.routers[0]
            .core
            .paths()
            .iter()
            .find(|p| p.endpoint().relay.is_some())
            .expect("a path through the neighbour")
            .rate_cap()
    };
    let policy = sharing().up_per_neighbour;
    assert_eq!(cap(&coop), Some(policy), "the owner's cap while it is idle");
    // The second member's owner sends 1 200-byte packets, one a millisecond, for 2 s: all
    // its line carries (deliveries are instant here, so the line is as fast as it sends).
    let mut p = vec![0u8; 1200];
    for seq in 0..2000 {
        packet(&mut p, 1200, true, seq);
        coop.routers[1].core.handle_packet(coop.now, &p).unwrap();
        coop.run(Duration::from_millis(1));
    }
    // What the line's estimate leaves beside the owner's 1.2 MB/s (instant deliveries
    // make that estimate about twice the rate sent): well under the owner's cap.
    let busy = cap(&coop).expect("a cap");
    assert!(
        busy < policy / 4,
        "{busy} B/s offered while the owner is busy"
    );
    for _ in 0..300 {
        coop.run(Duration::from_millis(10));
    }
    assert_eq!(
        cap(&coop),
        Some(policy),
        "the owner's cap once it is idle again"
    );
}

/// A neighbour whose relay moves to another port than its hellos' says so in them: the
/// path through it follows, and still carries.
#[test]
fn a_path_follows_its_neighbours_relay_to_a_new_port() {
    let mut coop = Coop::new();
    for _ in 0..300 {
        coop.run(Duration::from_millis(10));
    }
    let relayed = |coop: &Coop| {
        coop.routers[0]
            .core
            .paths()
            .iter()
            .find(|p| p.endpoint().relay.is_some())
            .map(|p| p.endpoint().remote)
    };
    assert_eq!(relayed(&coop), Some(coop.routers[1].mesh));
    let moved = SocketAddr::new(coop.routers[1].mesh.ip(), RELAY_PORT + 1);
    let now = coop.now;
    coop.routers[1]
        .core
        .enable_mesh(now, RELAY_PORT + 1, PathSettings::default());
    for _ in 0..100 {
        coop.run(Duration::from_millis(10));
    }
    assert_eq!(relayed(&coop), Some(moved));
    let before = coop.mesh_datagrams[0];
    let mut p = vec![0u8; 1200];
    for seq in 0..200 {
        packet(&mut p, 1200, true, seq);
        coop.routers[0].core.handle_packet(coop.now, &p).unwrap();
        coop.run(Duration::from_millis(1));
    }
    assert!(
        coop.mesh_datagrams[0] > before,
        "nothing went through the neighbour"
    );
}

/// A relay the proxy rates as dropping what it was given is held to probes by its
/// neighbours: the rating goes from the proxy to the relay through its tunnel, from the
/// relay to its neighbour in its discovery hellos, is checked there, and the neighbour's
/// path through it carries nothing while another is usable; a good rating brings it back.
#[test]
fn neighbours_prefer_relays_the_proxy_rates_well() {
    use linkpool_protocol::statement::Rating;
    let mut coop = Coop::new();
    for _ in 0..300 {
        coop.run(Duration::from_millis(10));
    }
    let relayed = |coop: &Coop| {
        coop.routers[0]
            .core
            .paths()
            .iter()
            .find(|p| p.endpoint().relay.is_some())
            .map(|p| (p.state(), p.standby()))
            .expect("a path through the neighbour")
    };
    assert_eq!(relayed(&coop), (PathState::Active, false));
    let wall = |coop: &Coop| coop.routers[1].core.proxy_clock_s(coop.now).unwrap();
    let rate = |coop: &mut Coop, delivered: u64| {
        let now = wall(coop);
        let rating = Rating {
            member: 1,
            window_start: now - 600,
            window_end: now,
            bytes_offered: 10_000_000,
            bytes_delivered: delivered,
            uptime_permille: 1000,
            line_rate: 1_000_000,
            issued_at: now,
            expires_at: now + 1800,
        };
        coop.server
            .send_rating(coop.now, server::MemberId(1), &rating);
        // Through the relay's tunnel, then its next discovery hello (one a second).
        for _ in 0..150 {
            coop.run(Duration::from_millis(10));
        }
        let seen = coop.routers[0]
            .core
            .neighbours()
            .unwrap()
            .neighbour(1)
            .and_then(|n| n.rating(wall(coop)).copied());
        assert_eq!(seen, Some(rating), "the neighbour holds the relay's rating");
    };
    // Half of what it was given delivered: held to probes.
    rate(&mut coop, 5_000_000);
    assert_eq!(relayed(&coop), (PathState::Active, true));
    let mut p = vec![0u8; 1200];
    let before = coop.mesh_datagrams[0];
    for seq in 0..200 {
        packet(&mut p, 1200, true, seq);
        coop.routers[0].core.handle_packet(coop.now, &p).unwrap();
        coop.run(Duration::from_millis(2));
    }
    let through = coop.mesh_datagrams[0] - before;
    assert!(
        through < 20,
        "{through} datagrams through the poorly rated relay"
    );
    // Rated well again: it carries again.
    rate(&mut coop, 9_990_000);
    assert_eq!(relayed(&coop), (PathState::Active, false));
}
