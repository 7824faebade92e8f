//! The member side of a session: what a gateway runs, whatever its paths are.
//!
//! Drive it like quinn-proto: open a path per uplink with [`Client::open_path`], give it
//! LAN packets with [`Client::handle_packet`] and datagrams with
//! [`Client::handle_datagram`], send everything [`Client::poll_transmit`] writes (data,
//! handshakes, acks, pings) where its [`Transmit`] says, write what
//! [`Client::poll_packet`] gives to the TUN, and call [`Client::handle_timeout`] at
//! [`Client::poll_timeout`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::credits::MilliCredits;
use crate::crypto;
use crate::flow::{FlowTable, Modes};
use crate::frame::MESH_GRANT_LEN;
use crate::keys::{PublicKey, SecretKey, SharedSecret};
use crate::mesh::RATING_SKEW_S;
use crate::mesh::{
    CREDENTIAL_LEN, Credential, HelloTransmit, IssuerKey, MeshConfig, NeighbourEvent, Neighbours,
    Offer,
};
use crate::metered::{self, MeteredUplink};
use crate::path::{Endpoint, Path, PathSettings, PathState, RelayHop};
use crate::relay::{self, Relay, RelayKey};
use crate::session::{self, Initiation, Keypair, Limits};
use crate::sharing::WallClock;
use crate::statement::{Rating, SignedRating, SignedStatement, Statement};
use crate::transport::SpreadCounters;
use crate::transport::Transport;
pub use crate::transport::{PathEvent, Transmit};
use crate::wire::{
    self, CipherSuite, Message, MessageType, PathId, RELAY_HEADER_LEN, RELAY_OVERHEAD,
};
use crate::{DropCounters, DropReason, SplitMix};

/// What a member needs to reach its proxy.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The member's static private key.
    pub static_key: SecretKey,
    /// The proxy's static public key.
    pub proxy_key: PublicKey,
    /// Optional pre-shared key for this member.
    pub psk: Option<SharedSecret>,
    /// AEAD for transport packets.
    pub suite: CipherSuite,
    /// Timers and limits.
    pub limits: Limits,
    /// The largest inner packet (the tunnel MTU).
    pub mtu: u16,
    /// Packets the send queue holds; sent ones stay in it for re-sends until their slot
    /// is needed. About a path's worth of bytes in flight over two RTTs.
    pub queue_slots: usize,
}

/// Send-queue slots a gateway gets unless told otherwise: at 1400 bytes, 1.4 MB, what
/// 100 Mbit/s puts in flight in about 110 ms.
pub const DEFAULT_QUEUE_SLOTS: usize = 1024;

/// What an accepted datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Transport: inner packets (if any) wait in [`Client::poll_packet`].
    Transport,
    /// A handshake completed: the session is (re)established.
    Connected,
    /// A cookie arrived; the handshake is retried with it.
    Cookie,
    /// A datagram from the proxy for a neighbour this router relays for: send
    /// `buf[start..start + len]`, untouched, to `to` on the mesh.
    Relay {
        /// The neighbour.
        to: SocketAddr,
        /// Where the datagram starts in the buffer.
        start: usize,
        /// Its length.
        len: usize,
    },
}

/// Something that happened, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A handshake completed (a new session, or a rekey of the current one).
    Handshake,
    /// A path changed state.
    Path(PathEvent),
    /// The proxy granted a (new) mesh credential: [`Client::mesh_grant`].
    MeshGrant,
    /// The proxy sent a (new) signed statement of the member's account:
    /// [`Client::statement`].
    Statement,
    /// The proxy sent a (new) signed rating of this router's relay: [`Client::rating`].
    Rating,
}

/// Counters of a client, for status and tests.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Handshake initiations sent.
    pub handshakes_sent: u64,
    /// Handshakes completed (first one and every rekey).
    pub handshakes_completed: u64,
    /// Cookie replies received.
    pub cookies_received: u64,
    /// Times the proxy went silent for [`Limits::dead_after`] while a session was up.
    pub sessions_lost: u64,
}

/// How the session with the proxy stands, as far as the member can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No keys yet (or they expired): handshaking.
    Connecting,
    /// Keys are up and the proxy answers.
    Up,
    /// Nothing heard on any path for [`Limits::suspect_after`]: handshaking again, still
    /// sending on the keys we have (a proxy that restarted answers the handshake at once;
    /// one that is only late answers the pings).
    Suspect,
    /// Nothing heard for [`Limits::dead_after`]: the proxy is unreachable or lost the
    /// session. Packets are still sealed on the last keys, so that a proxy that comes
    /// back with the session carries traffic again at once.
    Lost,
}

/// The member side of a session with the proxy.
pub struct Client {
    config: ClientConfig,
    mac1_key: [u8; 32],
    origin: Instant,
    wall_at_origin_us: u64,
    last_timestamp_us: u64,
    rng: SplitMix,
    transport: Transport,
    /// The next path id to give out: ids count up and are never reused.
    next_path_id: u16,
    current: Option<Keypair>,
    previous: Option<Keypair>,
    handshake: Option<Initiation>,
    /// When and on which path the pending initiation went out (its answer is an RTT).
    handshake_sent: Option<(Instant, PathId)>,
    /// When the next initiation should go out; `None` when none is wanted.
    handshake_due: Option<Instant>,
    handshake_attempts: u32,
    /// A busy proxy's cookie, when it came, and the path it came on: it is bound to that
    /// path's address, so the retry goes there.
    cookie: Option<([u8; 16], Instant, PathId)>,
    last_received: Option<Instant>,
    liveness: Liveness,
    /// Handshakes sent since the last one answered, and when the first of them went out.
    unanswered: Option<(u32, Instant)>,
    events: std::collections::VecDeque<Event>,
    stats: ClientStats,
    /// The neighbours this router relays for.
    relay: Relay,
    /// The mesh credential the proxy granted, newest first.
    grant: Option<MeshGrant>,
    /// The statement of its account the proxy sent last.
    statement: Option<ReceivedStatement>,
    /// Its relay's rating the proxy sent last.
    rating: Option<ReceivedRating>,
    /// The mesh, once enabled ([`Client::enable_mesh`]) and granted a credential.
    mesh: Option<Mesh>,
    /// The metered uplinks, by their path.
    metered: Vec<(PathId, MeteredUplink)>,
}

/// This router on the mesh: its neighbour table, and the paths it has through them.
struct Mesh {
    relay_port: u16,
    offer: Offer,
    neighbours: Option<Neighbours>,
    /// Our path through each neighbour that offers its line: (member, path).
    paths: Vec<(u32, PathId)>,
    settings: PathSettings,
}

/// What a datagram from the mesh was ([`Client::handle_mesh_datagram`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshReceived {
    /// A hello, or a reply for one of our paths through a neighbour: taken.
    Taken,
    /// A neighbour's datagram for the proxy: send `buf[..len]` as this says (on one of
    /// this router's own lines).
    Relay(Transmit),
}

/// Where a hello from [`Client::poll_mesh_transmit`] goes.
pub use crate::mesh::HelloDestination;

/// A statement of the member's account, as the proxy signed and sent it.
#[derive(Debug, Clone)]
pub struct ReceivedStatement {
    /// Its figures.
    pub statement: Statement,
    /// As signed, to show or hand on.
    pub signed: Box<SignedStatement>,
    /// Whether the proxy's signature verified and it is this member's.
    pub verified: bool,
}

/// This router's relay rating, as the proxy signed and sent it (verified), handed to
/// neighbours in its discovery hellos.
#[derive(Debug, Clone)]
pub struct ReceivedRating {
    /// Its figures.
    pub rating: Rating,
    /// As signed.
    pub signed: SignedRating,
}

/// A mesh credential from the proxy, through the tunnel: what lets this router take part
/// in the mesh, the key its neighbours' credentials are checked with, and how far the
/// proxy's clock (in which credentials expire) is from this router's.
#[derive(Debug, Clone)]
pub struct MeshGrant {
    /// This member's credential.
    pub credential: Credential,
    /// The proxy's key.
    pub issuer: IssuerKey,
    /// The proxy's clock less this router's wall clock (as given to [`Client::new`]),
    /// seconds.
    pub clock_offset_s: i64,
}

impl Client {
    /// A client that will connect as soon as it has a path. `wall_clock_us` is the wall
    /// clock at `now` (microseconds since the Unix epoch): handshakes carry it so that the
    /// proxy can reject replayed initiations. `seed` seeds session indices and path ids.
    pub fn new(config: ClientConfig, now: Instant, wall_clock_us: u64, seed: u64) -> Self {
        let mac1_key = session::mac1_key(&config.static_key.public_key());
        let mut rng = SplitMix(seed);
        let next_path_id = rng.next_u32() as u16;
        let flow_seed = rng.next_u64();
        let transport = Transport::new(now, usize::from(config.mtu), config.queue_slots, flow_seed);
        Client {
            config,
            mac1_key,
            origin: now,
            wall_at_origin_us: wall_clock_us,
            last_timestamp_us: 0,
            rng,
            transport,
            next_path_id,
            current: None,
            previous: None,
            handshake: None,
            handshake_sent: None,
            handshake_due: Some(now),
            handshake_attempts: 0,
            cookie: None,
            last_received: None,
            liveness: Liveness::Connecting,
            unanswered: None,
            events: std::collections::VecDeque::new(),
            stats: ClientStats::default(),
            relay: Relay::default(),
            grant: None,
            statement: None,
            rating: None,
            mesh: None,
            metered: Vec::new(),
        }
    }

    /// Opens a path (an uplink) to the proxy at `remote`; probing starts at once. Returns
    /// its id, which no other path of this client will ever have.
    pub fn open_path(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        settings: PathSettings,
    ) -> PathId {
        open(
            &mut self.transport,
            &mut self.next_path_id,
            now,
            Endpoint::direct(remote, None),
            settings,
        )
    }

    /// Opens a path through a neighbour: its datagrams go to the neighbour's relay at
    /// `relay` on the mesh, which forwards them to the proxy. `neighbour` is the
    /// neighbour's member id (for status). Returns its id.
    pub fn open_relayed_path(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        neighbour: u32,
        settings: PathSettings,
    ) -> PathId {
        open_relayed(
            &mut self.transport,
            &mut self.next_path_id,
            now,
            relay,
            neighbour,
            settings,
        )
    }

    /// Closes a path (its uplink went away). A metered line on it is dropped: take it
    /// first ([`Client::unmeter_path`]) to keep what it learned.
    pub fn close_path(&mut self, path: PathId) {
        self.metered.retain(|(id, _)| *id != path);
        self.transport.remove_path(path);
    }

    /// Path `path`'s uplink is metered: what crosses it is counted into `line`, it is lent
    /// only from its surplus, and the owner's traffic moves off it below its threshold
    /// ([`crate::metered`]). Replaces what the path had.
    pub fn meter_path(&mut self, now: Instant, path: PathId, line: MeteredUplink) {
        match self.metered.iter_mut().find(|(id, _)| *id == path) {
            Some((_, m)) => *m = line,
            None => self.metered.push((path, line)),
        }
        self.hold_metered(now);
    }

    /// Path `path`'s uplink is no longer metered (or goes away): its line, to keep.
    pub fn unmeter_path(&mut self, now: Instant, path: PathId) -> Option<MeteredUplink> {
        let i = self.metered.iter().position(|(id, _)| *id == path)?;
        let (_, line) = self.metered.swap_remove(i);
        self.transport.hold_own_path(now, path, false);
        Some(line)
    }

    /// The metered line on path `path`, if it is one.
    pub fn metered(&self, path: PathId) -> Option<&MeteredUplink> {
        self.metered
            .iter()
            .find(|(id, _)| *id == path)
            .map(|(_, m)| m)
    }

    /// The state of the metered line on path `path` was written at `clock`.
    pub fn persisted_meter(&mut self, path: PathId, clock: WallClock) {
        if let Some((_, m)) = self.metered.iter_mut().find(|(id, _)| *id == path) {
            m.persisted(clock);
        }
    }

    /// Hands what crossed each metered line to its forecaster and forecasts again (what
    /// may be lent and offered, whether the owner moves off). `clock` is the wall clock
    /// now; call it every few seconds ([`MeteredUplink::tick`]).
    pub fn handle_meter_tick(&mut self, now: Instant, clock: WallClock) {
        for (_, m) in &mut self.metered {
            m.tick(clock);
        }
        self.hold_metered(now);
    }

    /// Holds the path of each metered line below its threshold to probes while another
    /// path is usable; it carries traffic again when none is. The proxy is told, and
    /// holds its end too.
    fn hold_metered(&mut self, now: Instant) {
        for i in 0..self.metered.len() {
            let (id, moved_off) = (self.metered[i].0, self.metered[i].1.moved_off());
            let others = self
                .transport
                .paths()
                .iter()
                .any(|p| p.id() != id && p.state() == PathState::Active && !p.standby());
            self.transport.hold_own_path(now, id, moved_off && others);
        }
    }

    /// Counts `len` bytes to or from `remote` on path `path`, if its line is metered.
    fn count_wire(&mut self, path: PathId, len: usize) {
        if self.metered.is_empty() {
            return;
        }
        let Some((_, m)) = self.metered.iter_mut().find(|(id, _)| *id == path) else {
            return;
        };
        if let Some(p) = self.transport.path(path) {
            m.on_wire(metered::wire_len(p.endpoint().remote, len));
        }
    }

    /// Points a path at another address of the proxy.
    pub fn set_path_remote(&mut self, path: PathId, remote: SocketAddr) {
        if let Some(p) = self.transport.path_mut(path) {
            p.set_remote(remote);
        }
    }

    /// Changes a path's settings (its probing interval).
    pub fn set_path_settings(&mut self, path: PathId, settings: PathSettings) {
        if let Some(p) = self.transport.path_mut(path) {
            p.set_settings(settings);
        }
    }

    /// Starts the handshake over now, with the retry backoff from its first step: the
    /// caller now sends to another of the proxy's addresses. A session that is up stays up.
    pub fn restart_handshake(&mut self, now: Instant) {
        self.handshake_attempts = 0;
        self.handshake_due = Some(now);
    }

    /// A path's state, estimates and counters.
    pub fn path(&self, path: PathId) -> Option<&Path> {
        self.transport.path(path)
    }

    /// All paths.
    pub fn paths(&self) -> &[Path] {
        self.transport.paths()
    }

    /// Whether a session is up and the proxy answers (within [`Limits::dead_after`]).
    pub fn is_connected(&self) -> bool {
        self.current.is_some() && self.liveness != Liveness::Lost
    }

    /// How the session stands.
    pub fn liveness(&self) -> Liveness {
        if self.current.is_none() {
            Liveness::Connecting
        } else {
            self.liveness
        }
    }

    /// Handshakes sent since one was last answered, and how long ago the first of them
    /// went out: a proxy that never answers (wrong address, port closed, bundle not
    /// known to it) shows here.
    pub fn unanswered_handshakes(&self, now: Instant) -> Option<(u32, Duration)> {
        self.unanswered
            .map(|(n, since)| (n, now.saturating_duration_since(since)))
    }

    /// The last handshake timestamp sent (microseconds since the Unix epoch, on the
    /// member's clock as given to [`Client::new`]); the proxy accepts only newer ones, so
    /// a gateway persists how far it got across restarts.
    pub fn last_timestamp_us(&self) -> u64 {
        self.last_timestamp_us
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Inner packets waiting to be sent.
    pub fn queued(&self) -> usize {
        self.transport.waiting()
    }

    /// How each class of flow is spread over the paths (all `auto` unless set).
    pub fn set_spreading(&mut self, modes: Modes) {
        self.transport.set_modes(modes);
    }

    /// How each class of flow is spread.
    pub fn spreading(&self) -> &Modes {
        self.transport.modes()
    }

    /// The flows seen lately, by class.
    pub fn flows(&self) -> &FlowTable {
        self.transport.flows()
    }

    /// The reorder buffer of flows the proxy spreads per packet: its timeout and counters.
    pub fn reorder(&self) -> &crate::reorder::Reorder {
        self.transport.reorder()
    }

    /// What the scheduler did.
    pub fn spread_counters(&self) -> &SpreadCounters {
        self.transport.spread_counters()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.transport.poll_event().map(Event::Path)
    }

    /// An IP packet from the LAN for the Internet: queued for the best path.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        let r = match &self.current {
            Some(k) if !k.expired(now, &self.config.limits) => {
                let r = self.transport.push_packet(now, packet);
                self.transport.record_queue_drops(&mut self.stats.drops);
                r
            }
            _ => Err(DropReason::NoSession),
        };
        self.stats.drops.record(r)
    }

    /// The next inner packet for the LAN, written into `buf`; its length.
    pub fn poll_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.transport.poll_packet(buf)
    }

    /// Handles one datagram received on `path`, decrypting in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        path: PathId,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
        // It crossed the line whatever becomes of it.
        self.count_wire(path, buf.len());
        let r = self.handle_inner(now, path, buf);
        self.stats.drops.record(r)
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        path: PathId,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
        match Message::parse(buf)? {
            Message::HandshakeResponse(resp) => {
                let pending = self
                    .handshake
                    .as_ref()
                    .ok_or(DropReason::NoPendingHandshake)?;
                if resp.receiver_index() != pending.local_index {
                    return Err(DropReason::NoPendingHandshake);
                }
                if !crypto::mac_eq(
                    &crypto::mac(&self.mac1_key, &[resp.mac1_input()]),
                    resp.mac1(),
                ) {
                    return Err(DropReason::BadMac1);
                }
                let init = self.handshake.take().expect("checked above");
                let keypair = match session::complete(init, &resp, now) {
                    Ok(k) => k,
                    Err(e) => {
                        // A forged response spoils the Noise state: start over soon.
                        self.handshake_due = Some(now);
                        return Err(e);
                    }
                };
                self.previous = self.current.replace(keypair);
                self.handshake_due = None;
                self.handshake_attempts = 0;
                self.unanswered = None;
                self.heard(now);
                self.stats.handshakes_completed += 1;
                if let Some((sent, on)) = self.handshake_sent.take() {
                    if let Some(p) = self.transport.path_mut(on).filter(|_| on == path) {
                        p.on_handshake_rtt(now, now.saturating_duration_since(sent));
                    }
                }
                // Every path confirms the new keys to the proxy and is measured at once.
                self.transport.ping_all(now);
                self.push_event(Event::Handshake);
                Ok(Received::Connected)
            }
            Message::CookieReply(reply) => {
                let pending = self
                    .handshake
                    .as_ref()
                    .ok_or(DropReason::NoPendingHandshake)?;
                if reply.receiver_index() != pending.local_index {
                    return Err(DropReason::NoPendingHandshake);
                }
                let cookie = open_cookie(&self.config.proxy_key, &pending.mac1, &reply)?;
                self.cookie = Some((cookie, now, path));
                self.stats.cookies_received += 1;
                // Retry at once with the cookie: it proves our address to a busy proxy.
                self.handshake_due = Some(now);
                Ok(Received::Cookie)
            }
            Message::Transport(header) => {
                if header.path != path {
                    // The proxy answers each path on that path: anything else is confused.
                    return Err(DropReason::Unexpected);
                }
                let keypair = [self.current.as_mut(), self.previous.as_mut()]
                    .into_iter()
                    .flatten()
                    .find(|k| k.local_index == header.receiver_index)
                    .ok_or(DropReason::UnknownSession)?;
                let range = keypair.open(&header, buf, now, &self.config.limits)?;
                let keys = keypair.local_index;
                self.heard(now);
                let r = self
                    .transport
                    .on_packet(now, header.path, keys, None, buf, range, |_| Ok(()));
                if let Some(body) = self.transport.take_grant() {
                    self.take_grant(now, &body);
                }
                if let Some(body) = self.transport.take_statement() {
                    self.take_statement(&body);
                }
                if let Some(body) = self.transport.take_rating() {
                    self.take_rating(now, &body);
                }
                r?;
                Ok(Received::Transport)
            }
            Message::Relay(envelope) if envelope.kind() == MessageType::RelayDown => {
                // For a neighbour: checked to come from the proxy through this router's own
                // session, then passed on unread.
                let key = [self.current.as_ref(), self.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|k| k.local_index == envelope.relay_index())
                    .map(|k| RelayKey(k.relay_down_key))
                    .ok_or(DropReason::UnknownRelay)?;
                relay::verify_envelope(&key, &envelope)?;
                let len = buf.len() - RELAY_OVERHEAD;
                let wire = self
                    .transport
                    .path(path)
                    .map_or(0, |p| metered::wire_len(p.endpoint().remote, buf.len()));
                let line = self
                    .metered
                    .iter_mut()
                    .find(|(id, _)| *id == path)
                    .map(|(_, m)| (m, wire));
                let to = self.relay.down_over(now, envelope.slot(), len, line)?;
                Ok(Received::Relay {
                    to,
                    start: RELAY_HEADER_LEN,
                    len,
                })
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// Relays a neighbour's datagram to the proxy: `buf[RELAY_HEADER_LEN..][..len]` holds
    /// what `neighbour` sent on the mesh (read there, so that wrapping it copies nothing).
    /// It goes, in an envelope tagged with this router's own session, on this router's
    /// own best line to its own proxy: nowhere else, whatever it holds. Returns where to
    /// send `buf[..transmit.len]`.
    pub fn relay_up(
        &mut self,
        now: Instant,
        neighbour: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Transmit, DropReason> {
        let r = self.relay_up_inner(now, neighbour, buf, len);
        self.stats.drops.record(r)
    }

    fn relay_up_inner(
        &mut self,
        now: Instant,
        neighbour: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Transmit, DropReason> {
        self.relay.carries_for(neighbour)?;
        let inner = buf
            .get(RELAY_HEADER_LEN..RELAY_HEADER_LEN + len)
            .ok_or(DropReason::PacketTooLarge)?;
        // Only what the proxy takes from a member, so nothing else rides on the tag.
        match Message::parse(inner)? {
            Message::Transport(_) | Message::HandshakeInit(_) => {}
            _ => return Err(DropReason::Unexpected),
        }
        let limits = self.config.limits;
        let keys = self
            .current
            .as_ref()
            .filter(|k| !k.expired(now, &limits))
            .ok_or(DropReason::NoSession)?;
        // This router's own line: never on through another neighbour.
        let own = self.lending_path().ok_or(DropReason::NoSession)?;
        let path = &self.transport.paths()[own];
        let (id, remote) = (path.id(), path.endpoint().remote);
        // The owner's own traffic first: what is relayed gets what it leaves of the line.
        let spare = relay::spare_for_relayed(path.line_bandwidth(), path.send_rate(now));
        let wire = metered::wire_len(remote, len + RELAY_OVERHEAD);
        let line = self
            .metered
            .iter_mut()
            .find(|(p, _)| *p == id)
            .map(|(_, m)| (m, wire));
        let slot = self
            .relay
            .up_over(now, neighbour, len + RELAY_OVERHEAD, spare, line)?;
        let len = relay::seal_envelope(
            &RelayKey(keys.relay_up_key),
            MessageType::RelayUp,
            keys.remote_index,
            slot,
            buf,
            len,
        )?;
        self.count_wire(id, len);
        Ok(Transmit {
            path: id,
            remote,
            local: None,
            len,
        })
    }

    /// The own line neighbours' datagrams go out on: the best active line not metered
    /// (lending it costs the owner nothing), else the best own line.
    fn lending_path(&self) -> Option<usize> {
        let direct = |p: &Path| p.endpoint().relay.is_none();
        let metered = |p: &Path| self.metered.iter().any(|(id, _)| *id == p.id());
        self.transport
            .best_path_where(|p| direct(p) && p.state() == PathState::Active && !metered(p))
            .or_else(|| self.transport.best_path_where(direct))
    }

    /// A mesh grant from the proxy: kept if it is this member's, signed by the key it
    /// comes with, and not older than the one kept.
    fn take_grant(&mut self, now: Instant, body: &[u8; MESH_GRANT_LEN]) {
        let n = CREDENTIAL_LEN;
        let parsed = Credential::from_bytes(&body[..n]).and_then(|c| {
            let key: &[u8; 32] = body[n..n + 32].try_into().expect("32 bytes");
            let issuer = IssuerKey::from_bytes(key)?;
            issuer.verify(&c)?;
            Ok((c, issuer))
        });
        let (credential, issuer) = match parsed {
            Ok(g) if g.0.public_key() == self.config.static_key.public_key() => g,
            Ok(_) => return self.stats.drops.count(DropReason::BadCredential),
            Err(e) => return self.stats.drops.count(e),
        };
        if self
            .grant
            .as_ref()
            .is_some_and(|g| g.credential.issued_at() > credential.issued_at())
        {
            return;
        }
        let clock = u64::from_be_bytes(body[n + 32..].try_into().expect("8 bytes"));
        let own = (self.wall_at_origin_us + micros(self.origin, now)) / 1_000_000;
        let first = self.grant.is_none();
        self.grant = Some(MeshGrant {
            credential,
            issuer,
            clock_offset_s: clock as i64 - own as i64,
        });
        self.push_event(Event::MeshGrant);
        self.grant_to_mesh(now);
        // A statement that came before the first grant can be checked now.
        if let Some(waiting) = self.statement.take_if(|s| first && !s.verified) {
            self.take_statement(&waiting.signed.to_bytes());
        }
    }

    /// Takes part in the mesh: neighbours' hellos are answered and sent, relays found,
    /// paths opened through those that offer their line (with `settings`), and the owner's
    /// [`RelayPolicy`](crate::relay::RelayPolicy) offered. The mesh starts once the proxy
    /// granted a credential.
    pub fn enable_mesh(&mut self, now: Instant, relay_port: u16, settings: PathSettings) {
        let policy = *self.relay.policy();
        let offer = Offer {
            sharing: policy.sharing,
            up_kbit: kbit(policy.up_total.min(policy.up_per_neighbour)),
            down_kbit: kbit(policy.down_total.min(policy.down_per_neighbour)),
        };
        match self.mesh.as_mut() {
            Some(m) => {
                m.relay_port = relay_port;
                m.offer = offer;
                m.settings = settings;
                if let Some(n) = m.neighbours.as_mut() {
                    n.set_offer(offer, relay_port);
                }
            }
            None => {
                self.mesh = Some(Mesh {
                    relay_port,
                    offer,
                    neighbours: None,
                    paths: Vec::new(),
                    settings,
                });
                self.grant_to_mesh(now);
            }
        }
    }

    /// Gives the mesh the credential granted last.
    fn grant_to_mesh(&mut self, now: Instant) {
        let (Some(mesh), Some(grant)) = (self.mesh.as_mut(), self.grant.as_ref()) else {
            return;
        };
        let result = match mesh.neighbours.as_mut() {
            Some(n) => {
                n.set_issuers(vec![grant.issuer]);
                n.set_credential(grant.credential)
            }
            None => Neighbours::new(
                MeshConfig {
                    static_key: self.config.static_key.clone(),
                    credential: grant.credential,
                    issuers: vec![grant.issuer],
                    relay_port: mesh.relay_port,
                    offer: mesh.offer,
                    hello_counter_start: (self.wall_at_origin_us + micros(self.origin, now))
                        .saturating_add_signed(grant.clock_offset_s.saturating_mul(1_000_000)),
                },
                now,
            )
            .map(|n| mesh.neighbours = Some(n)),
        };
        if let Err(reason) = result {
            self.stats.drops.count(reason);
        }
        self.rating_to_mesh();
    }

    /// The mesh's neighbour table, once the mesh runs.
    pub fn neighbours(&self) -> Option<&Neighbours> {
        self.mesh.as_ref()?.neighbours.as_ref()
    }

    /// A datagram from the mesh, from `from` to our address `to` on that link: a hello, a
    /// reply through a neighbour's relay for one of our paths, or a neighbour's datagram
    /// for this router to relay (which it forwards only if the neighbour is a member the
    /// mesh found, and its owner shares). `buf[RELAY_HEADER_LEN..][..len]` holds it.
    pub fn handle_mesh_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Result<MeshReceived, DropReason> {
        let datagram = buf
            .get(RELAY_HEADER_LEN..RELAY_HEADER_LEN + len)
            .ok_or(DropReason::PacketTooLarge)?;
        let r = match Message::parse(datagram) {
            Ok(Message::MeshDiscovery(_) | Message::NeighbourHello(..)) => {
                let clock = self.proxy_clock_s(now).unwrap_or(0);
                let Some(n) = self.mesh.as_mut().and_then(|m| m.neighbours.as_mut()) else {
                    // Not on the mesh (yet): no credential, or no mesh configured.
                    self.stats.drops.count(DropReason::NotOnMesh);
                    return Err(DropReason::NotOnMesh);
                };
                // The table counts its own refusals.
                let r = n.handle_hello(now, clock, from, to, datagram);
                self.mesh_events(now);
                return r.map(|()| MeshReceived::Taken);
            }
            Ok(Message::Transport(header))
                if [self.current.as_ref(), self.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|k| k.local_index == header.receiver_index) =>
            {
                // For us, through a neighbour's relay: on our path through it.
                let path = self
                    .transport
                    .paths()
                    .iter()
                    .find(|p| p.endpoint().relay.is_some() && p.endpoint().remote == from)
                    .map(|p| p.id())
                    .ok_or(DropReason::NotANeighbour)?;
                let datagram = &mut buf[RELAY_HEADER_LEN..RELAY_HEADER_LEN + len];
                return self
                    .handle_datagram(now, path, datagram)
                    .map(|_| MeshReceived::Taken);
            }
            Ok(_) => self
                .relay_up_inner(now, from, buf, len)
                .map(MeshReceived::Relay),
            Err(e) => Err(e),
        };
        self.stats.drops.record(r)
    }

    /// The next hello for the mesh, written at the start of `buf`.
    pub fn poll_mesh_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<HelloTransmit> {
        let clock = self.proxy_clock_s(now)?;
        let offer = self.live_offer(now)?;
        let mesh = self.mesh.as_mut()?;
        let n = mesh.neighbours.as_mut()?;
        n.set_offer(offer, mesh.relay_port);
        n.poll_hello(now, clock, buf)
    }

    /// What this router offers its neighbours now: the owner's caps (or the share of the
    /// measured line it gives, when less), and upstream no more than the owner's own
    /// traffic leaves of the line (the rule [`Client::relay_up`] enforces), so that
    /// neighbours send only what will be carried. Outside the owner's schedule or with an
    /// allowance used up, nothing at all: neighbours stop routing through this router at
    /// their next hello from it instead of having datagrams refused.
    fn live_offer(&self, now: Instant) -> Option<Offer> {
        let mut offer = self.mesh.as_ref()?.offer;
        if offer.sharing && !self.relay.lends_now(now) {
            return Some(Offer {
                sharing: false,
                up_kbit: 0,
                down_kbit: 0,
            });
        }
        let (up, down) = self.relay.caps();
        offer.up_kbit = offer.up_kbit.min(kbit(up));
        offer.down_kbit = offer.down_kbit.min(kbit(down));
        let own = self.lending_path().map(|i| &self.transport.paths()[i]);
        // A metered line: no more than its surplus sustains, nothing without one.
        if let Some(m) = own.and_then(|p| self.metered(p.id())) {
            if offer.sharing && m.offer() == 0 {
                return Some(Offer {
                    sharing: false,
                    up_kbit: 0,
                    down_kbit: 0,
                });
            }
            offer.up_kbit = offer.up_kbit.min(kbit(m.offer()));
            offer.down_kbit = offer.down_kbit.min(kbit(m.offer()));
        }
        if let Some(spare) =
            own.and_then(|p| relay::spare_for_relayed(p.line_bandwidth(), p.send_rate(now)))
        {
            offer.up_kbit = offer.up_kbit.min(kbit(spare));
        }
        Some(offer)
    }

    /// Acts on what the mesh found: a neighbour that became usable gets a slot at our
    /// relay and, if it offers its line, a path of ours through it; one that was lost
    /// loses both.
    fn mesh_events(&mut self, now: Instant) {
        let proxy_now = self.proxy_clock_s(now).unwrap_or(0);
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        let Some(n) = mesh.neighbours.as_mut() else {
            return;
        };
        while let Some(e) = n.poll_event() {
            match e {
                NeighbourEvent::Seen { member, address } => {
                    if let Err(reason) = self.relay.admit(address) {
                        self.stats.drops.count(reason);
                    }
                    let lends = lending(n, member, proxy_now);
                    let ids = (&mut self.transport, &mut self.next_path_id);
                    follow_neighbour(ids, &mut mesh.paths, mesh.settings, now, member, lends);
                }
                NeighbourEvent::Lost { member, address } => {
                    self.relay.expel(address);
                    let ids = (&mut self.transport, &mut self.next_path_id);
                    follow_neighbour(ids, &mut mesh.paths, mesh.settings, now, member, None);
                }
                NeighbourEvent::Moved { member, from, to } => {
                    self.relay.expel(from);
                    if let Err(reason) = self.relay.admit(to) {
                        self.stats.drops.count(reason);
                    }
                    let relay = n.neighbour(member).and_then(|x| x.relay_endpoint());
                    if let (Some((_, id)), Some(relay)) =
                        (mesh.paths.iter().find(|(m, _)| *m == member), relay)
                    {
                        if let Some(p) = self.transport.path_mut(*id) {
                            p.set_remote(relay);
                        }
                    }
                }
                NeighbourEvent::OfferChanged { member } => {
                    let lends = lending(n, member, proxy_now);
                    let ids = (&mut self.transport, &mut self.next_path_id);
                    follow_neighbour(ids, &mut mesh.paths, mesh.settings, now, member, lends);
                }
            }
        }
    }

    /// The mesh credential the proxy granted last, if any.
    pub fn mesh_grant(&self) -> Option<&MeshGrant> {
        self.grant.as_ref()
    }

    /// The statement of its account the proxy sent last, if any.
    pub fn statement(&self) -> Option<&ReceivedStatement> {
        self.statement.as_ref()
    }

    /// A statement from the proxy: kept when newer than the one kept, with whether its
    /// signature verified against the key the proxy grants credentials with (learnt
    /// through this same tunnel) and it is this member's. One that does not is counted
    /// (`bad_statement`) and kept only to be shown as unverified; one that comes before
    /// the first grant waits for it ([`Client::take_grant`] checks it then).
    fn take_statement(&mut self, body: &[u8; crate::frame::STATEMENT_LEN]) {
        let Ok(signed) = SignedStatement::from_bytes(body) else {
            return self.stats.drops.count(DropReason::BadStatement);
        };
        let mine = |s: &Statement, g: &MeshGrant| s.member == g.credential.member();
        let verified = self
            .grant
            .as_ref()
            .and_then(|g| signed.verify(&g.issuer).ok().filter(|s| mine(s, g)));
        let statement = match verified {
            Some(s) => s,
            None => {
                if self.grant.is_some() {
                    self.stats.drops.count(DropReason::BadStatement);
                }
                signed.unverified()
            }
        };
        if self
            .statement
            .as_ref()
            .is_some_and(|s| s.verified && s.statement.issued_at > statement.issued_at)
        {
            return;
        }
        self.statement = Some(ReceivedStatement {
            statement,
            signed: Box::new(signed),
            verified: verified.is_some(),
        });
        self.push_event(Event::Statement);
    }

    /// The most the owner pays per GB (milli-credits) when a neighbour's line is
    /// auctioned among those who want more of it than it has: the bid the proxy holds
    /// for this member, sent now and every few seconds.
    pub fn set_bid(&mut self, now: Instant, per_gb: MilliCredits) {
        self.transport.set_bid(now, per_gb);
    }

    /// Its relay's rating the proxy sent last, verified, if any.
    pub fn rating(&self) -> Option<&ReceivedRating> {
        self.rating.as_ref()
    }

    /// A rating of this router's relay from the proxy: kept if the key the proxy grants
    /// credentials with signed it, for this member, and it holds now in proxy time; then
    /// handed to the mesh for our discovery hellos. One that comes before the first grant
    /// is left for the next copy (the proxy re-sends it every few seconds).
    fn take_rating(&mut self, now: Instant, body: &[u8; crate::frame::RATING_LEN]) {
        use crate::statement::VerifyError;
        let Ok(signed) = SignedRating::from_bytes(body) else {
            return self.stats.drops.count(DropReason::BadRating);
        };
        if self.rating.as_ref().is_some_and(|r| r.signed == signed) {
            return;
        }
        let (Some(grant), Some(proxy_now)) = (self.grant.as_ref(), self.proxy_clock_s(now)) else {
            return;
        };
        let rating = match signed.verify_fresh(&grant.issuer, proxy_now, RATING_SKEW_S) {
            Ok(r) if r.member == grant.credential.member() => r,
            Err(VerifyError::Expired | VerifyError::FromTheFuture) => {
                return self.stats.drops.count(DropReason::StaleRating);
            }
            _ => return self.stats.drops.count(DropReason::BadRating),
        };
        self.rating = Some(ReceivedRating { rating, signed });
        self.rating_to_mesh();
        self.push_event(Event::Rating);
    }

    /// Our rating into our discovery hellos.
    fn rating_to_mesh(&mut self) {
        let rating = self.rating.as_ref().map(|r| r.signed);
        if let Some(n) = self.mesh.as_mut().and_then(|m| m.neighbours.as_mut()) {
            n.set_rating(rating);
        }
    }

    /// The proxy's clock now (seconds since the Unix epoch), as far as its last grant
    /// told: what neighbours' credentials expire by.
    pub fn proxy_clock_s(&self, now: Instant) -> Option<u64> {
        let g = self.grant.as_ref()?;
        let own = (self.wall_at_origin_us + micros(self.origin, now)) / 1_000_000;
        Some((own as i64 + g.clock_offset_s).max(0) as u64)
    }

    /// The neighbours this router relays for, and what it carried for them.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Admits and expels neighbours, and sets what the owner shares.
    pub fn relay_mut(&mut self) -> &mut Relay {
        &mut self.relay
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() < 16 {
            self.events.push_back(e);
        }
    }

    /// The next datagram the client wants sent, written at the start of `buf` (which
    /// should hold [`wire::MAX_DATAGRAM`] bytes). Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let t = self.poll_transmit_inner(now, buf)?;
        self.count_wire(t.path, t.len);
        Some(t)
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.handshake_due.is_some_and(|t| t <= now) && !self.transport.paths().is_empty() {
            if let Some(t) = self.send_initiation(now, buf) {
                return Some(t);
            }
        }
        let limits = self.config.limits;
        let keys = self.current.as_mut().filter(|k| !k.expired(now, &limits))?;
        let r = self.transport.poll_transmit(now, keys, &limits, buf);
        self.transport.record_queue_drops(&mut self.stats.drops);
        if keys.send_counter >= limits.rekey_after_messages
            && self.handshake.is_none()
            && self.handshake_due.is_none()
        {
            self.handshake_due = Some(now);
        }
        match r {
            Ok(t) => t,
            Err(reason) => {
                self.stats.drops.count(reason);
                None
            }
        }
    }

    fn send_initiation(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        // The best path first; retries rotate, so one dead uplink cannot stall it.
        let paths = self.transport.paths();
        let best = self.transport.best_path(None)?;
        let fresh = self
            .cookie
            .filter(|(_, at, _)| now.saturating_duration_since(*at) < COOKIE_LIFETIME);
        // With a cookie, from the path it came on (it proves that address only).
        let path = fresh
            .and_then(|(_, _, on)| self.transport.path(on))
            .unwrap_or(&paths[(best + self.handshake_attempts as usize) % paths.len()]);
        let (id, remote) = (path.id(), path.endpoint().remote);
        let index = self.rng.next_u32();
        let timestamp =
            (self.wall_at_origin_us + micros(self.origin, now)).max(self.last_timestamp_us + 1);
        self.last_timestamp_us = timestamp;
        let cookie = fresh.filter(|(_, _, on)| *on == id).map(|(c, _, _)| c);
        let init = session::initiate(
            &self.config.static_key,
            &self.config.proxy_key,
            self.config.psk.as_ref(),
            self.config.suite,
            index,
            timestamp,
            cookie.as_ref(),
            buf,
        );
        let limits = &self.config.limits;
        let backoff = limits
            .handshake_retry_initial
            .saturating_mul(1u32 << self.handshake_attempts.min(16))
            .min(limits.handshake_retry_max);
        self.handshake_attempts = self.handshake_attempts.saturating_add(1);
        self.handshake_due = Some(now + backoff);
        match init {
            Ok(init) => {
                self.handshake = Some(init);
                self.handshake_sent = Some((now, id));
                self.stats.handshakes_sent += 1;
                let (n, since) = self.unanswered.unwrap_or((0, now));
                self.unanswered = Some((n + 1, since));
                Some(Transmit {
                    path: id,
                    remote,
                    local: None,
                    len: wire::HANDSHAKE_INIT_LEN,
                })
            }
            Err(reason) => {
                self.stats.drops.count(reason);
                None
            }
        }
    }

    /// When [`Client::handle_timeout`] should next be called. Every time offered is one
    /// that `handle_timeout` (or `poll_transmit`, for pings, acks and handshakes) acts on
    /// and moves forward: a time in the past never survives them, so an event loop cannot
    /// spin.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        let mut next = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if !self.transport.paths().is_empty() {
            // With no path nothing can be sent: opening one wakes the loop anyway.
            if let Some(t) = self.handshake_due {
                consider(t);
            }
        }
        if let Some(k) = &self.current {
            if self.handshake_due.is_none() {
                consider(k.created + limits.rekey_after_time);
            }
            consider(k.created + limits.reject_after_time);
            // Path timers only with keys: without them nothing they ask for can be sent.
            if let Some(t) = self.transport.poll_timeout() {
                consider(t);
            }
            if let Some(t) = self.last_received {
                match self.liveness {
                    Liveness::Up => consider(t + limits.suspect_after),
                    Liveness::Suspect => consider(t + limits.dead_after),
                    Liveness::Connecting | Liveness::Lost => {}
                }
            }
        }
        if let Some(k) = &self.previous {
            consider(k.created + limits.reject_after_time);
        }
        if let Some(t) = self.neighbours().and_then(Neighbours::poll_timeout) {
            consider(t);
        }
        next
    }

    /// Runs timers: paths' silence and probing, rekeying, retries, expiry, a dead proxy.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limits = self.config.limits;
        if self
            .previous
            .as_ref()
            .is_some_and(|k| k.expired(now, &limits))
        {
            self.previous = None;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|k| k.expired(now, &limits))
        {
            // Expired keys open nothing either: dropped, not kept as the previous ones
            // (whose expiry would then be offered again, already due).
            self.current = None;
            self.transport.clear_queue();
        }
        if self.current.is_some() {
            self.transport.handle_timeout(now);
        }
        if !self.metered.is_empty() {
            // A path that died leaves a metered line the only one: it carries again.
            self.hold_metered(now);
        }
        let clock = self.proxy_clock_s(now).unwrap_or(0);
        if let Some(n) = self.mesh.as_mut().and_then(|m| m.neighbours.as_mut()) {
            n.handle_timeout(now, clock);
            self.mesh_events(now);
        }
        let silent = self
            .last_received
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if self.current.is_some() {
            if self.liveness == Liveness::Up && silent >= limits.suspect_after {
                self.liveness = Liveness::Suspect;
                // Handshake again at once: a proxy that restarted has forgotten our keys
                // and answers only a handshake.
                self.want_handshake(now);
            }
            if self.liveness == Liveness::Suspect && silent >= limits.dead_after {
                self.liveness = Liveness::Lost;
                self.stats.sessions_lost += 1;
            }
        }
        let stale = match &self.current {
            None => true,
            Some(k) => {
                now.saturating_duration_since(k.created) >= limits.rekey_after_time
                    || k.send_counter >= limits.rekey_after_messages
            }
        };
        if stale {
            self.want_handshake(now);
        }
    }

    /// Schedules a handshake now, unless one is already under way (its retries have
    /// their own times).
    fn want_handshake(&mut self, now: Instant) {
        if self.handshake_due.is_none() {
            self.handshake_attempts = 0;
            self.handshake_due = Some(now);
        }
    }

    /// Something authenticated came from the proxy.
    fn heard(&mut self, now: Instant) {
        self.last_received = Some(now);
        self.liveness = Liveness::Up;
    }

    /// This member's relay tag keys (upstream, downstream) and the proxy's index for its
    /// current session: what it needs to relay for neighbours.
    pub fn relay_keys(&self) -> Option<(u32, RelayKey, RelayKey)> {
        let k = self.current.as_ref()?;
        Some((
            k.remote_index,
            RelayKey(k.relay_up_key),
            RelayKey(k.relay_down_key),
        ))
    }
}

pub(crate) use crate::path::micros;

/// Opens a path with the next id no path of this client had.
fn open(
    transport: &mut Transport,
    next_id: &mut u16,
    now: Instant,
    endpoint: Endpoint,
    settings: PathSettings,
) -> PathId {
    let mut id = PathId(*next_id);
    while transport.path(id).is_some() {
        *next_id = next_id.wrapping_add(1);
        id = PathId(*next_id);
    }
    *next_id = next_id.wrapping_add(1);
    transport.add_path(now, id, endpoint, settings);
    id
}

/// Below this upstream offer (bytes per second, 200 kbit/s) a path through a neighbour is
/// held to probes; it carries data again from [`STANDBY_UNTIL`] (400 kbit/s).
const STANDBY_BELOW: u64 = 25_000;
const STANDBY_UNTIL: u64 = 50_000;

/// A kbit/s figure for an offer from bytes per second (an unlimited cap is `u32::MAX`).
fn kbit(bytes_per_s: u64) -> u32 {
    (bytes_per_s.saturating_mul(8) / 1000).min(u32::MAX.into()) as u32
}

/// A relay the proxy rated as delivering less than this share (thousandths) of at least
/// [`RATING_EVIDENCE_BYTES`] it was offered is held to probes: neighbours prefer relays
/// that deliver. Unused, its next ratings have nothing offered, and it is tried again.
const POOR_DELIVERY_PERMILLE: u16 = 900;
const RATING_EVIDENCE_BYTES: u64 = 1_000_000;

/// What a neighbour lends: its relay, its offer, and whether the proxy's rating of it (as
/// of `proxy_now_s`) says it delivers poorly.
#[derive(Debug, Clone, Copy)]
struct Lends {
    relay: SocketAddr,
    offer: Offer,
    poorly_rated: bool,
}

/// Neighbour `member`'s relay and offer, while it lends its line.
fn lending(n: &Neighbours, member: u32, proxy_now_s: u64) -> Option<Lends> {
    let x = n.neighbour(member).filter(|x| x.offer().sharing)?;
    let poorly_rated = x.rating(proxy_now_s).is_some_and(|r| {
        r.bytes_offered >= RATING_EVIDENCE_BYTES
            && r.delivered_permille()
                .is_some_and(|p| p < POOR_DELIVERY_PERMILLE)
    });
    Some(Lends {
        relay: x.relay_endpoint()?,
        offer: x.offer(),
        poorly_rated,
    })
}

/// Keeps our path through neighbour `member` in step with what it offers: one through its
/// relay while it lends its line, paced to no more than it offers upstream; none
/// otherwise.
fn follow_neighbour(
    (transport, next_id): (&mut Transport, &mut u16),
    paths: &mut Vec<(u32, PathId)>,
    settings: PathSettings,
    now: Instant,
    member: u32,
    lends: Option<Lends>,
) {
    let ours = paths.iter().position(|(m, _)| *m == member);
    let id = match (lends, ours) {
        (Some(l), None) => {
            let id = open_relayed(transport, next_id, now, l.relay, member, settings);
            paths.push((member, id));
            id
        }
        (None, Some(i)) => {
            let (_, id) = paths.swap_remove(i);
            transport.remove_path(id);
            return;
        }
        (Some(_), Some(i)) => paths[i].1,
        (None, None) => return,
    };
    if let (Some(l), Some(path)) = (lends, transport.path_mut(id)) {
        // The neighbour's relay may have moved to another port.
        if path.endpoint().remote != l.relay {
            path.set_remote(l.relay);
        }
        let cap = (l.offer.up_kbit != u32::MAX).then(|| u64::from(l.offer.up_kbit) * 125);
        path.set_rate_cap(cap);
        // Next to nothing spare: what we sent would mostly be refused by the relay (its
        // owner first), and each refusal is a loss our flows feel. Probes only, until the
        // offer is clearly back.
        let standby = match cap {
            Some(c) if c < STANDBY_BELOW => true,
            Some(c) if c < STANDBY_UNTIL => path.standby(),
            _ => false,
        };
        // A relay the proxy found dropping what it was given: the others first.
        path.set_standby(standby || l.poorly_rated);
    }
}

/// Opens a path through neighbour `neighbour`'s relay at `relay`.
fn open_relayed(
    transport: &mut Transport,
    next_id: &mut u16,
    now: Instant,
    relay: SocketAddr,
    neighbour: u32,
    settings: PathSettings,
) -> PathId {
    let hop = RelayHop {
        relay: neighbour,
        slot: 0,
    };
    let endpoint = Endpoint {
        remote: relay,
        local: None,
        relay: Some(hop),
    };
    open(transport, next_id, now, endpoint, settings)
}

/// How long a cookie from a busy proxy stays usable.
pub(crate) const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

fn open_cookie(
    proxy: &PublicKey,
    mac1: &[u8; 16],
    reply: &wire::CookieReply<'_>,
) -> Result<[u8; 16], DropReason> {
    use chacha20poly1305::aead::AeadInPlace;
    let cipher = crypto::cookie_cipher(&session::cookie_key(proxy));
    let sealed = reply.sealed_cookie();
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&sealed[..16]);
    cipher
        .decrypt_in_place_detached(reply.nonce().into(), mac1, &mut cookie, sealed[16..].into())
        .map_err(|_| DropReason::BadTag)?;
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayPolicy;
    use crate::sharing::{Schedule, Share, SharePolicy, WallClock};

    /// The hellos offer what the owner's policy lets through now: a share of the measured
    /// line when that is less than the caps, and nothing outside the schedule or with an
    /// allowance used up.
    #[test]
    fn the_live_offer_follows_the_owners_policy() {
        let t0 = Instant::now();
        let mut c = Client::new(
            ClientConfig {
                static_key: SecretKey::from_bytes([1; 32]),
                proxy_key: SecretKey::from_bytes([2; 32]).public_key(),
                psk: None,
                suite: CipherSuite::ChaCha20Poly1305,
                limits: Limits::default(),
                mtu: 1400,
                queue_slots: 16,
            },
            t0,
            1_700_000_000_000_000,
            1,
        );
        c.relay_mut().set_policy(RelayPolicy {
            sharing: true,
            up_total: 1_000_000,
            down_total: 2_000_000,
            up_per_neighbour: 1_000_000,
            down_per_neighbour: 2_000_000,
        });
        let relay = c.relay_mut();
        relay.lending_mut().set_policy(SharePolicy {
            down_share: Share::from_percent(10.0),
            daily_bytes: Some(100_000),
            schedule: Schedule::parse(None, Some("08:00-20:00")).unwrap(),
            ..SharePolicy::UNLIMITED
        });
        // 2024-05-10 12:00 UTC, at UTC+2.
        relay.lending_mut().set_clock(
            t0,
            WallClock {
                unix_s: 1_715_342_400,
                utc_offset_s: 7200,
            },
        );
        relay.observe_line(t0, 5_000_000, 0);
        relay.observe_line(t0 + Duration::from_secs(2), 5_000_000, 20_000_000);
        c.enable_mesh(t0, 7118, PathSettings::default());
        let offer = c.live_offer(t0).unwrap();
        assert!(offer.sharing);
        assert_eq!(offer.up_kbit, 8_000, "the owner's cap");
        assert_eq!(offer.down_kbit, 8_000, "10 % of a line measured at 10 MB/s");
        // 20:00 local time: off schedule.
        let evening = t0 + Duration::from_secs(6 * 3600);
        assert_eq!(
            c.live_offer(evening),
            Some(Offer {
                sharing: false,
                up_kbit: 0,
                down_kbit: 0
            })
        );
        // The day's allowance: offered until less than a datagram is left.
        let a = c
            .relay_mut()
            .admit(SocketAddr::from(([10, 0, 0, 2], 7118)))
            .unwrap();
        let mut t = t0;
        let mut downs = 0;
        for _ in 0..200 {
            t += Duration::from_millis(10);
            if c.relay_mut().down(t, a, 1372).is_ok() {
                downs += 1;
            }
        }
        assert_eq!(downs, 100_000 / 1400, "1400 bytes each on the line");
        assert!(!c.live_offer(t).unwrap().sharing);
        assert_eq!(c.relay().totals().over_daily, 200 - downs);
    }
}
