//! The proxy side: one [`Server`] holds every member's session.
//!
//! Members are known by their static keys; where to answer each of a member's paths is
//! learnt from authenticated packets only (roaming), never from configuration. Driven as
//! the client is: [`Server::handle_datagram`] and [`Server::handle_packet`] in,
//! [`Server::poll_transmit`] and [`Server::poll_packet`] out, [`Server::handle_timeout`]
//! at [`Server::poll_timeout`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::credits::{Consumer, Contention, MAX_BID_PER_GB, MilliCredits, may_borrow};
use crate::crypto;

use crate::flow::{FlowTable, Modes};
use crate::keys::{PublicKey, SecretKey, SharedSecret};
use crate::mesh::{CredentialIssuer, DEFAULT_CREDENTIAL_LIFETIME_S};
use crate::path::{Endpoint, Path, PathSettings, RelayHop};
use crate::rating::{self, RelayRecord};
use crate::relay::{RelayKey, spare_for_relayed};
use crate::session::{self, Keypair, Limits};
use crate::statement::{Rating, SignedRating, SignedStatement, Statement};
use crate::transport::SpreadCounters;
use crate::transport::Transport;
pub use crate::transport::{PathEvent, Transmit};
use crate::usage::Usage;
use crate::wire::{
    self, COOKIE_REPLY_LEN, HANDSHAKE_RESPONSE_LEN, MAC_LEN, Message, MessageType,
    RELAY_HEADER_LEN, RELAY_OVERHEAD,
};
use crate::{DropCounters, DropReason, SplitMix};

/// A member as the proxy's configuration knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    /// The member's static public key.
    pub public_key: PublicKey,
    /// Optional pre-shared key.
    pub psk: Option<SharedSecret>,
    /// The member's tunnel addresses: packets for them go to it, and it may send only
    /// from them.
    pub addresses: Vec<IpAddr>,
}

/// The proxy's configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The proxy's static private key.
    pub static_key: SecretKey,
    /// Every member.
    pub members: Vec<MemberKey>,
    /// Timers and limits.
    pub limits: Limits,
    /// Handshakes per second before the proxy considers itself under load and asks for
    /// cookies (and rate-limits per source). Set it from what a handshake costs on this
    /// machine ([`handshake_budget`]), so that handshakes never take more than a small
    /// share of a core, whatever floods the proxy.
    pub handshakes_per_second: u32,
    /// The largest inner packet (the tunnel MTU).
    pub mtu: u16,
    /// Send-queue slots per connected member (allocated while it is connected).
    pub queue_slots: usize,
}

/// Send-queue slots per member unless told otherwise.
pub const DEFAULT_QUEUE_SLOTS: usize = 512;
/// How often the proxy's answers to a member's pings carry a ping of their own. It never
/// pings an idle path by itself (only a suspect one): the member's probing interval,
/// slow on a metered line, is all an idle path costs.
const PROXY_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A member's path dead this long is forgotten (a gateway that restarted numbers its
/// paths afresh).
const FORGET_DEAD_PATHS: Duration = Duration::from_secs(60);
/// How often the spare capacity of relays' lines is worked out again.
const RELAY_CAP_INTERVAL: Duration = Duration::from_millis(10);
/// A path sending at this share of its cap or more on a contended line would take more.
const CONTENDED_USE: f64 = 0.5;
/// Room to grow (bytes a second) given a path that sends less than its share: its next
/// burst is not held back before the next division shows it wants more.
const CONTENTION_HEADROOM: u64 = 12_500;
/// A contended path's cap is trimmed by what it sends over its award, at most this far.
const MIN_CAP_TRIM: f64 = 0.8;
/// A queue this long on a contended relay line says it is full.
const CONTENTION_QUEUE: Duration = Duration::from_millis(15);
/// Lines through relays the proxy works out the spare capacity of at most.
const MAX_RELAY_LINES: usize = 1024;

/// One relay's line, as the proxy sees it: how fast it is, what its owner sends on it,
/// and how many relayed paths share what is left.
#[derive(Debug, Clone, Copy)]
struct RelayLine {
    relay: u32,
    remote: SocketAddr,
    capacity: u64,
    own: u64,
    relayed: u64,
    /// Its paths' caps were set by dividing it among busy members.
    shared: bool,
}

/// Handshake and cookie answers waiting for `poll_transmit`; beyond this they are dropped
/// (the daemon sends them after each datagram, so this only bounds a misuse).
const MAX_ANSWERS: usize = 64;

/// The share of one core the proxy spends on handshakes before it asks for cookies.
pub const HANDSHAKE_SHARE: u32 = 8;

/// Handshakes per second the proxy allows itself before asking for cookies, from what one
/// costs on this machine (measured by the daemon): one [`HANDSHAKE_SHARE`]-th of a core.
pub fn handshake_budget(cost: Duration) -> u32 {
    let per_core = 1.0 / cost.as_secs_f64().max(1e-7);
    ((per_core / f64::from(HANDSHAKE_SHARE)) as u32).max(1)
}

/// Index of a member in [`ServerConfig::members`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u32);

/// What an accepted datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A handshake initiation, answered (`member` is known) or asked for a cookie.
    Handshake {
        /// The member, when the answer is a handshake response.
        member: Option<MemberId>,
    },
    /// Transport from `member`: inner packets (if any) wait in [`Server::poll_packet`].
    Transport {
        /// Who sent it.
        member: MemberId,
    },
}

/// Something that happened, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// A member's new keys were confirmed by its first packet on them.
    Connected(MemberId),
    /// A member's session expired.
    Disconnected(MemberId),
    /// One of a member's paths changed state.
    Path(MemberId, PathEvent),
}

/// A handshake or cookie answer waiting to be sent.
struct Answer {
    bytes: [u8; ANSWER_LEN],
    len: usize,
    /// Where the initiation came from (through a relay, the answer goes back through it).
    to: Endpoint,
}

const ANSWER_LEN: usize = if HANDSHAKE_RESPONSE_LEN > COOKIE_REPLY_LEN {
    HANDSHAKE_RESPONSE_LEN
} else {
    COOKIE_REPLY_LEN
};

struct Member {
    key: MemberKey,
    current: Option<Keypair>,
    previous: Option<Keypair>,
    /// Responder keys not yet confirmed by a packet from the member.
    pending: Option<Keypair>,
    last_timestamp_us: u64,
    last_received: Option<Instant>,
    /// Paths, queue and estimates: from the first confirmed session on.
    transport: Option<Transport>,
    /// On the list of members with packets for the TUN.
    ready: bool,
    /// How its flows are spread, if not as the proxy's default.
    spreading: Option<Modes>,
    /// When (proxy seconds) its mesh credential is to be renewed.
    credential_refresh_at: Option<u64>,
    /// What a transport let go since the ledger last took the usage left here.
    usage: Usage,
    /// Its credit balance, as the ledger last had it.
    balance: MilliCredits,
    /// Its record as a relay, from the first usage taken on.
    relay: Option<RelayRecord>,
    /// The most it pays per GB of a contended relay line, as its gateway last said
    /// (milli-credits; 0 until it says).
    bid: MilliCredits,
}

impl Member {
    fn new(key: MemberKey) -> Self {
        Member {
            key,
            current: None,
            previous: None,
            pending: None,
            last_timestamp_us: 0,
            last_received: None,
            transport: None,
            ready: false,
            spreading: None,
            credential_refresh_at: None,
            usage: Usage::default(),
            balance: 0,
            relay: None,
            bid: 0,
        }
    }

    fn keypairs(&self) -> impl Iterator<Item = &Keypair> {
        [&self.current, &self.previous, &self.pending]
            .into_iter()
            .flatten()
    }
}

/// A read-only view of one member, for status, metrics and the ledger.
#[derive(Debug, Clone)]
pub struct MemberStatus<'a> {
    /// Whether a confirmed session exists.
    pub connected: bool,
    /// When the session's keys were made.
    pub session_started: Option<Instant>,
    /// Last authenticated packet.
    pub last_received: Option<Instant>,
    /// The member's paths.
    pub paths: &'a [Path],
    /// Inner packets waiting to be sent to it.
    pub queued: usize,
    /// Its flows downstream, once it has a session.
    pub flows: Option<&'a FlowTable>,
    /// What the scheduler did downstream.
    pub spread: SpreadCounters,
    /// The reorder buffer for what the member sends up, once it has a session.
    pub reorder: Option<&'a crate::reorder::Reorder>,
    /// Its credit balance, as the ledger last told the core.
    pub balance: MilliCredits,
}

/// Counters of the whole proxy.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Drops by reason.
    pub drops: DropCounters,
    /// Handshakes answered.
    pub handshakes: u64,
    /// Cookie replies sent.
    pub cookies_sent: u64,
    /// Initiations that passed the cheap checks and cost a Diffie-Hellman (answered or
    /// not): what the load limit bounds.
    pub handshakes_processed: u64,
}

/// Token bucket over `now`, in whole tokens.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f32,
    at: Option<Instant>,
}

impl TokenBucket {
    const fn new() -> Self {
        TokenBucket {
            tokens: 0.0,
            at: None,
        }
    }

    fn take(&mut self, now: Instant, rate: f32, burst: f32) -> bool {
        let elapsed = self.at.map_or(burst / rate.max(1e-3), |t| {
            now.saturating_duration_since(t).as_secs_f32()
        });
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source handshake buckets, hashed into a fixed table: bounded memory under a flood.
const SOURCE_BUCKETS: usize = 256;
/// Handshakes per second one source may make while the proxy is under load.
const SOURCE_RATE: f32 = 2.0;
/// Cookie secrets change this often; cookies from the previous secret still count.
const COOKIE_ROTATION: Duration = Duration::from_secs(120);
/// The load bucket holds this share of a second's handshakes: a burst of handshakes never
/// holds the data path for more than a few milliseconds.
const LOAD_BURST_DIVISOR: f32 = 25.0;
/// Ephemeral keys of the last initiations that cost a Diffie-Hellman: a replay of any of
/// them is refused by a lookup. Older replays cost one DH and fail the timestamp rule.
const SEEN_EPHEMERALS: usize = 8192;

/// A bounded set of recently used initiation ephemerals, oldest evicted first.
struct SeenEphemerals {
    set: std::collections::HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl SeenEphemerals {
    fn new() -> Self {
        SeenEphemerals {
            set: std::collections::HashSet::with_capacity(SEEN_EPHEMERALS + 1),
            order: std::collections::VecDeque::with_capacity(SEEN_EPHEMERALS + 1),
        }
    }

    fn contains(&self, e: &[u8; 32]) -> bool {
        self.set.contains(e)
    }

    fn insert(&mut self, e: [u8; 32]) {
        if !self.set.insert(e) {
            return;
        }
        self.order.push_back(e);
        if self.order.len() > SEEN_EPHEMERALS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The proxy's sessions with all members.
pub struct Server {
    static_key: SecretKey,
    mac1_key: crypto::MacKey,
    cookie_key: [u8; 32],
    limits: Limits,
    handshakes_per_second: u32,
    members: Vec<Member>,
    by_key: HashMap<PublicKey, MemberId>,
    by_index: HashMap<u32, MemberId>,
    rng: SplitMix,
    /// Keys the flow tables' hash: packets from the Internet must not aim collisions.
    flow_seed: u64,
    /// How each class of flow is spread towards members.
    spreading: Modes,
    random: [u8; 32],
    origin: Instant,
    cookie_nonce: u64,
    load: TokenBucket,
    sources: Box<[TokenBucket; SOURCE_BUCKETS]>,
    seen: SeenEphemerals,
    /// Cookie secrets by epoch parity: (epoch, secret).
    cookie_secrets: [(Option<u64>, [u8; 32]); 2],
    by_address: HashMap<IpAddr, MemberId>,
    mtu: u16,
    queue_slots: usize,
    answers: VecDeque<Answer>,
    /// Members with inner packets for the TUN, in arrival order.
    inbound: VecDeque<MemberId>,
    /// Where `poll_transmit` looks first, so no member starves the others.
    cursor: usize,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
    /// Relays' lines, worked out every [`RELAY_CAP_INTERVAL`] (kept to reuse its memory).
    relay_lines: Vec<RelayLine>,
    /// The members on one contended line (kept to reuse its memory).
    consumers: Vec<Consumer>,
    /// What contended relay lines have for relayed traffic, as tracked (relay, its
    /// address, bytes a second).
    line_rates: Vec<(u32, SocketAddr, u64)>,
    contention: Contention,
    floor: Option<MilliCredits>,
    next_relay_caps: Instant,
    /// Signs members' mesh credentials.
    issuer: CredentialIssuer,
    credential_lifetime_s: u64,
    /// The wall clock (seconds since the Unix epoch) at an instant: without it, no
    /// credentials (their expiry is in wall-clock time).
    wall_clock: Option<(Instant, u64)>,
}

impl Server {
    /// A server. `random` must be fresh random bytes (seeds session indices, cookie
    /// secrets and cookie nonces).
    pub fn new(config: ServerConfig, now: Instant, random: [u8; 32]) -> Self {
        let public = config.static_key.public_key();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&random[..8]);
        let issuer = CredentialIssuer::from_proxy_key(&config.static_key);
        let mut server = Server {
            mac1_key: crypto::MacKey::new(&session::mac1_key(&public)),
            cookie_key: session::cookie_key(&public),
            static_key: config.static_key,
            limits: config.limits,
            handshakes_per_second: config.handshakes_per_second.max(1),
            members: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            rng: SplitMix(u64::from_le_bytes(seed)),
            flow_seed: u64::from_le_bytes(seed).rotate_left(17) ^ 0x6c70_6f6f_6c5f_6671,
            spreading: Modes::default(),
            random,
            origin: now,
            cookie_nonce: 0,
            load: TokenBucket::new(),
            sources: Box::new([TokenBucket::new(); SOURCE_BUCKETS]),
            seen: SeenEphemerals::new(),
            cookie_secrets: [(None, [0; 32]); 2],
            by_address: HashMap::new(),
            mtu: config.mtu,
            queue_slots: config.queue_slots,
            answers: VecDeque::new(),
            inbound: VecDeque::new(),
            cursor: 0,
            events: VecDeque::new(),
            stats: ServerStats::default(),
            relay_lines: Vec::new(),
            consumers: Vec::new(),
            line_rates: Vec::new(),
            contention: Contention::default(),
            floor: None,
            next_relay_caps: now,
            issuer,
            credential_lifetime_s: DEFAULT_CREDENTIAL_LIFETIME_S,
            wall_clock: None,
        };
        server.set_members(config.members);
        server
    }

    /// Replaces the member list (config reload). Members whose key is unchanged keep their
    /// sessions; members removed lose them. Ids become indices into the new list: take the
    /// usage ([`Server::take_usage`]) first, its ids are the old ones.
    pub fn set_members(&mut self, members: Vec<MemberKey>) {
        let mut old: HashMap<PublicKey, Member> = self
            .members
            .drain(..)
            .map(|m| (m.key.public_key, m))
            .collect();
        self.by_key.clear();
        self.by_index.clear();
        self.by_address.clear();
        self.inbound.clear();
        // A member is on the list at most once.
        self.inbound.reserve(members.len());
        for (i, key) in members.into_iter().enumerate() {
            let id = MemberId(i as u32);
            let mut member = match old.remove(&key.public_key) {
                // A changed PSK invalidates the old sessions.
                Some(m) if m.key == key => m,
                _ => Member::new(key),
            };
            // The list was emptied: put it back on when its packets wait.
            member.ready = false;
            if member
                .transport
                .as_ref()
                .is_some_and(|t| t.waiting_inbound() > 0)
            {
                member.ready = true;
                self.inbound.push_back(id);
            }
            for k in member.keypairs() {
                self.by_index.insert(k.local_index, id);
            }
            self.by_key.insert(member.key.public_key, id);
            for a in &member.key.addresses {
                self.by_address.insert(*a, id);
            }
            self.members.push(member);
        }
    }

    /// Number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Tells the proxy the wall clock (seconds since the Unix epoch) at `now`. From then
    /// on every connected member gets a mesh credential through its tunnel, renewed at
    /// half its lifetime: what lets it take part in the mesh. A member removed from the
    /// configuration gets no more, and is locked out of the mesh when its last expires.
    pub fn set_wall_clock(&mut self, now: Instant, unix_s: u64) {
        self.wall_clock = Some((now, unix_s));
    }

    /// How long mesh credentials last (seconds; at least one minute).
    pub fn set_credential_lifetime(&mut self, seconds: u64) {
        self.credential_lifetime_s = seconds.max(60);
    }

    /// The key members check credentials with.
    pub fn credential_issuer(&self) -> crate::mesh::IssuerKey {
        self.issuer.issuer_key()
    }

    fn wall_clock_s(&self, now: Instant) -> Option<u64> {
        let (at, s) = self.wall_clock?;
        Some(s + now.saturating_duration_since(at).as_secs())
    }

    /// Issues a member a fresh credential when it has none or its own is half spent.
    fn grant_credentials(&mut self, now: Instant) {
        let Some(clock) = self.wall_clock_s(now) else {
            return;
        };
        let issuer_key = self.issuer.issuer_key().to_bytes();
        for (i, m) in self.members.iter_mut().enumerate() {
            let (Some(t), true) = (m.transport.as_mut(), m.current.is_some()) else {
                m.credential_refresh_at = None;
                continue;
            };
            if m.credential_refresh_at.is_some_and(|at| clock < at) {
                continue;
            }
            let credential = self.issuer.issue(
                i as u32,
                &m.key.public_key,
                clock,
                self.credential_lifetime_s,
            );
            m.credential_refresh_at = Some(credential.refresh_at());
            let mut body = Box::new([0u8; crate::frame::MESH_GRANT_LEN]);
            let n = crate::mesh::CREDENTIAL_LEN;
            body[..n].copy_from_slice(credential.as_bytes());
            body[n..n + 32].copy_from_slice(&issuer_key);
            t.set_grant(now, body, clock);
        }
    }

    /// How each class of flow is spread over members' paths (all `auto` unless set), for
    /// the members without modes of their own.
    pub fn set_spreading(&mut self, modes: Modes) {
        self.spreading = modes;
        for m in &mut self.members {
            let modes = m.spreading.unwrap_or(modes);
            if let Some(t) = m.transport.as_mut() {
                t.set_modes(modes);
            }
        }
    }

    /// How member `id`'s flows are spread downstream; `None`: as [`Server::set_spreading`]
    /// says for all. Kept across reloads while the member stays.
    pub fn set_member_spreading(&mut self, id: MemberId, modes: Option<Modes>) {
        let default = self.spreading;
        if let Some(m) = self.members.get_mut(id.0 as usize) {
            m.spreading = modes;
            if let Some(t) = m.transport.as_mut() {
                t.set_modes(modes.unwrap_or(default));
            }
        }
    }

    /// How member `id`'s flows are spread downstream.
    pub fn member_spreading(&self, id: MemberId) -> Modes {
        self.members
            .get(id.0 as usize)
            .and_then(|m| m.spreading)
            .unwrap_or(self.spreading)
    }

    /// A member's status.
    pub fn member(&self, id: MemberId) -> Option<MemberStatus<'_>> {
        let m = self.members.get(id.0 as usize)?;
        Some(MemberStatus {
            connected: m.current.is_some(),
            session_started: m.current.as_ref().map(|k| k.created),
            last_received: m.last_received,
            paths: m.transport.as_ref().map_or(&[][..], |t| t.paths()),
            queued: m.transport.as_ref().map_or(0, |t| t.waiting()),
            flows: m.transport.as_ref().map(|t| t.flows()),
            spread: m
                .transport
                .as_ref()
                .map_or_else(SpreadCounters::default, |t| *t.spread_counters()),
            reorder: m.transport.as_ref().map(|t| t.reorder()),
            balance: m.balance,
        })
    }

    /// The relay tag keys (upstream, downstream) of the session a relay's envelope names
    /// by `relay_index`, and the relay member.
    pub fn relay_keys(&self, relay_index: u32) -> Option<(MemberId, RelayKey, RelayKey)> {
        let id = *self.by_index.get(&relay_index)?;
        let k = self.members[id.0 as usize]
            .keypairs()
            .find(|k| k.local_index == relay_index)?;
        Some((id, RelayKey(k.relay_up_key), RelayKey(k.relay_down_key)))
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Gives `f` each member's usage since the last take, and zeroes it: what the ledger
    /// counts. Relays in it are member ids, as the current member list numbers them.
    /// Each member's record as a relay takes it too (call about once a second: it also
    /// times who is connected).
    pub fn take_usage(&mut self, now: Instant, mut f: impl FnMut(MemberId, &Usage)) {
        for m in &mut self.members {
            if let Some(u) = m.transport.as_mut().and_then(|t| t.usage_mut()) {
                m.usage.merge(u);
                u.clear();
            }
            // Its own line's rate, as the proxy measures it towards the member.
            let line_rate = m.transport.as_ref().map_or(0, |t| {
                t.paths()
                    .iter()
                    .filter(|p| p.endpoint().relay.is_none())
                    .map(Path::line_bandwidth)
                    .max()
                    .unwrap_or(0)
            });
            m.relay
                .get_or_insert_with(|| RelayRecord::new(now))
                .observe(now, m.current.is_some(), line_rate);
        }
        // And as measured on the paths through it.
        for i in 0..self.members.len() {
            let paths = self.members[i]
                .transport
                .as_ref()
                .map_or(0, |t| t.paths().len());
            for j in 0..paths {
                let Some(p) = self.members[i].transport.as_ref().map(|t| &t.paths()[j]) else {
                    continue;
                };
                let (Some(hop), rate) = (p.endpoint().relay, p.line_bandwidth()) else {
                    continue;
                };
                if let Some(r) = self
                    .members
                    .get_mut(hop.relay as usize)
                    .and_then(|m| m.relay.as_mut())
                {
                    r.observe_line_rate(rate);
                }
            }
        }
        for i in 0..self.members.len() {
            if self.members[i].usage.is_empty() {
                continue;
            }
            let mut usage = std::mem::take(&mut self.members[i].usage);
            f(MemberId(i as u32), &usage);
            for (relay, offered, delivered) in rating::by_relay(&usage) {
                if let Some(r) = self
                    .members
                    .get_mut(relay as usize)
                    .and_then(|m| m.relay.as_mut())
                {
                    r.add(now, offered, delivered);
                }
            }
            // Its memory back, for the next.
            usage.clear();
            self.members[i].usage = usage;
        }
    }

    /// Member `id`'s rating as a relay at `now` (`unix_now`: the proxy's wall clock), from
    /// what [`Server::take_usage`] saw; `None` before it saw the member.
    pub fn relay_rating(&self, now: Instant, unix_now: u64, id: MemberId) -> Option<Rating> {
        let record = self.members.get(id.0 as usize)?.relay.as_ref()?;
        Some(record.rating(now, unix_now, id.0))
    }

    /// Signs `rating` (of member `id`'s relay) with the credential issuer's key and sends
    /// it to the member through its tunnel, now and every few seconds while it is the
    /// latest, for its mesh hellos. Nothing for a member without a session.
    pub fn send_rating(&mut self, now: Instant, id: MemberId, rating: &Rating) {
        let rating = Rating {
            member: id.0,
            ..*rating
        };
        self.send_signed(id, |issuer, t| {
            let signed = SignedRating::sign(issuer, &rating);
            t.set_rating(now, Box::new(signed.to_bytes()));
        });
    }

    /// Gives `send` the key the proxy signs with and member `id`'s transport, if it had a
    /// session (nothing is signed for one that did not).
    fn send_signed(&mut self, id: MemberId, send: impl FnOnce(&CredentialIssuer, &mut Transport)) {
        if let Some(t) = self
            .members
            .get_mut(id.0 as usize)
            .and_then(|m| m.transport.as_mut())
        {
            send(&self.issuer, t);
        }
    }

    /// Handles a datagram that came from `remote` to our `local` address (when the
    /// daemon knows it: answers leave from it), decrypting in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        buf: &mut [u8],
    ) -> Result<Accepted, DropReason> {
        let r = self.handle_inner(now, remote, local, buf);
        self.stats.drops.record(r)
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        buf: &mut [u8],
    ) -> Result<Accepted, DropReason> {
        match Message::parse(buf)? {
            Message::HandshakeInit(init) => {
                let mut answer = Answer {
                    bytes: [0; ANSWER_LEN],
                    len: 0,
                    to: Endpoint::direct(remote, local),
                };
                let (len, member) =
                    self.handle_initiation(now, &answer.to, &init, &mut answer.bytes)?;
                answer.len = len;
                if self.answers.len() < MAX_ANSWERS {
                    self.answers.push_back(answer);
                }
                Ok(Accepted::Handshake { member })
            }
            Message::Transport(_) => {
                self.handle_transport(now, Endpoint::direct(remote, local), buf)
            }
            Message::Relay(envelope) if envelope.kind() == MessageType::RelayUp => {
                let (relay, up_key, _) = self
                    .relay_keys(envelope.relay_index())
                    .ok_or(DropReason::UnknownRelay)?;
                crate::relay::verify_envelope(&up_key, &envelope)?;
                let hop = RelayHop {
                    relay: relay.0,
                    slot: envelope.slot(),
                };
                let from = Endpoint {
                    remote,
                    local,
                    relay: Some(hop),
                };
                let end = buf.len() - MAC_LEN;
                let inner = &mut buf[RELAY_HEADER_LEN..end];
                match Message::parse(inner)? {
                    Message::Transport(_) => self.handle_transport(now, from, inner),
                    Message::HandshakeInit(init) => {
                        let mut answer = Answer {
                            bytes: [0; ANSWER_LEN],
                            len: 0,
                            to: from,
                        };
                        let (len, member) =
                            self.handle_initiation(now, &from, &init, &mut answer.bytes)?;
                        if member.is_some_and(|m| m == relay) {
                            return Err(DropReason::RelayedForItself);
                        }
                        answer.len = len;
                        if self.answers.len() < MAX_ANSWERS {
                            self.answers.push_back(answer);
                        }
                        Ok(Accepted::Handshake { member })
                    }
                    _ => Err(DropReason::Unexpected),
                }
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// A transport datagram that came from `from` (straight, or through a relay).
    fn handle_transport(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &mut [u8],
    ) -> Result<Accepted, DropReason> {
        let Message::Transport(header) = Message::parse(buf)? else {
            return Err(DropReason::Unexpected);
        };
        let id = *self
            .by_index
            .get(&header.receiver_index)
            .ok_or(DropReason::UnknownSession)?;
        if from.relay.is_some_and(|hop| hop.relay == id.0) {
            // A member credited for carrying its own traffic is what this refuses.
            return Err(DropReason::RelayedForItself);
        }
        let limits = self.limits;
        let (mtu, slots) = (usize::from(self.mtu), self.queue_slots);
        // A new seed for every member's core this proxy makes: a member forgotten
        // and back gets other flow hashes and slot sequences than before.
        let flow_seed = crate::SplitMix(self.flow_seed).next_u64();
        let member = &mut self.members[id.0 as usize];
        let spreading = member.spreading.unwrap_or(self.spreading);
        let slot = [
            &mut member.current,
            &mut member.previous,
            &mut member.pending,
        ]
        .into_iter()
        .position(|k| {
            k.as_ref()
                .is_some_and(|k| k.local_index == header.receiver_index)
        })
        .ok_or(DropReason::UnknownSession)?;
        let keypair = match slot {
            0 => member.current.as_mut(),
            1 => member.previous.as_mut(),
            _ => member.pending.as_mut(),
        }
        .expect("found above");
        let range = keypair.open(&header, buf, now, &limits)?;
        let keys = keypair.local_index;
        if slot == 2 {
            // First packet on the new keys: the member has them, switch over.
            if let Some(old) = member.previous.take() {
                self.by_index.remove(&old.local_index);
            }
            member.previous = member.current.take();
            member.current = member.pending.take();
            if member.previous.is_none() {
                push_event(&mut self.events, ServerEvent::Connected(id));
            }
            // New keys: a credential goes with the session they start.
            member.credential_refresh_at = None;
        }
        member.last_received = Some(now);
        if member.transport.is_none() {
            self.flow_seed = flow_seed;
        }
        let transport = member.transport.get_or_insert_with(|| {
            let mut t = Transport::new(now, mtu, slots, flow_seed);
            t.set_modes(spreading);
            t.forget_dead_paths_after(FORGET_DEAD_PATHS);
            t.passive_paths();
            t.count_usage();
            t
        });
        if transport.path(header.path).is_none() {
            let settings = PathSettings {
                probe_interval: PROXY_PROBE_INTERVAL,
            };
            transport.add_path(now, header.path, from, settings);
        }
        let addresses = &member.key.addresses;
        let r = transport.on_packet(now, header.path, keys, Some(from), buf, range, |packet| {
            // A member may only speak from its own tunnel addresses: no spoofing
            // other members (or anyone) through the proxy.
            match crate::ip::source(packet) {
                Some(a) if addresses.contains(&a) => Ok(()),
                _ => Err(DropReason::SpoofedSource),
            }
        });
        // Even when this packet was refused, others may have come out of the
        // reorder buffer with it.
        if transport.waiting_inbound() > 0 && !member.ready {
            member.ready = true;
            self.inbound.push_back(id);
        }
        while let Some(e) = transport.poll_event() {
            push_event(&mut self.events, ServerEvent::Path(id, e));
        }
        if let Some(bid) = transport.take_bid() {
            member.bid = bid.clamp(0, MAX_BID_PER_GB);
        }
        r?;
        Ok(Accepted::Transport { member: id })
    }

    /// An IP packet from the Internet: queued for the member that owns its destination.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<MemberId, DropReason> {
        let r = self.route(now, packet);
        self.stats.drops.record(r)
    }

    fn route(&mut self, now: Instant, packet: &[u8]) -> Result<MemberId, DropReason> {
        let destination = crate::ip::destination(packet).ok_or(DropReason::BadInnerPacket)?;
        let id = *self
            .by_address
            .get(&destination)
            .ok_or(DropReason::NoMember)?;
        let limits = self.limits;
        let m = &mut self.members[id.0 as usize];
        let live = m.current.as_ref().is_some_and(|k| !k.expired(now, &limits));
        match (&mut m.transport, live) {
            (Some(t), true) if !t.paths().is_empty() => {
                let r = t.push_packet(now, packet).map(|_| id);
                t.record_queue_drops(&mut self.stats.drops);
                r
            }
            _ => Err(DropReason::MemberOffline),
        }
    }

    /// The next inner packet for the TUN, written into `buf`; its length.
    pub fn poll_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(&id) = self.inbound.front() {
            let member = &mut self.members[id.0 as usize];
            if let Some(n) = member.transport.as_mut().and_then(|t| t.poll_packet(buf)) {
                return Some(n);
            }
            member.ready = false;
            self.inbound.pop_front();
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send, written at the start of `buf` (which should hold
    /// [`wire::MAX_DATAGRAM`] bytes): handshake answers first, then each member's acks,
    /// pings and packets in turn. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(a) = self.answers.pop_front() {
            buf[..a.len].copy_from_slice(&a.bytes[..a.len]);
            // Handshakes belong to no path yet.
            let answer = Transmit {
                path: wire::PathId(0),
                remote: a.to.remote,
                local: a.to.local,
                len: a.len,
            };
            match self.through_relay(now, a.to.relay, answer, buf) {
                Ok(t) => return Some(t),
                Err(reason) => self.stats.drops.count(reason),
            }
        }
        if now >= self.next_relay_caps {
            self.next_relay_caps = now + RELAY_CAP_INTERVAL;
            self.cap_relayed_paths(now);
            self.grant_credentials(now);
        }
        let n = self.members.len();
        let limits = self.limits;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let m = &mut self.members[i];
            let (Some(keys), Some(t)) = (m.current.as_mut(), m.transport.as_mut()) else {
                continue;
            };
            if keys.expired(now, &limits) {
                continue;
            }
            let r = t.poll_transmit(now, keys, &limits, buf);
            t.record_queue_drops(&mut self.stats.drops);
            match r {
                Ok(Some(transmit)) => {
                    // The next call starts with the next member: one packet each in turn.
                    self.cursor = (i + 1) % n;
                    let hop = t.path(transmit.path).and_then(|p| p.endpoint().relay);
                    match self.through_relay(now, hop, transmit, buf) {
                        Ok(t) => return Some(t),
                        Err(reason) => self.stats.drops.count(reason),
                    }
                }
                Ok(None) => {}
                Err(reason) => self.stats.drops.count(reason),
            }
        }
        None
    }

    /// The owner's traffic comes first on its line: a path relayed through a member's
    /// line may send only into what the owner's own traffic leaves of it (the proxy sends
    /// both, so it sees both), shared equally among the paths relayed there. The line's
    /// rate is the most any path on it measured.
    fn cap_relayed_paths(&mut self, now: Instant) {
        self.relay_lines.clear();
        for m in &self.members {
            for p in m.transport.iter().flat_map(|t| t.paths()) {
                let Some(hop) = p.endpoint().relay else {
                    continue;
                };
                let remote = p.endpoint().remote;
                let found = self
                    .relay_lines
                    .iter()
                    .position(|l| l.relay == hop.relay && l.remote == remote);
                let i = match found {
                    Some(i) => i,
                    None if self.relay_lines.len() < MAX_RELAY_LINES => {
                        self.relay_lines.push(RelayLine {
                            relay: hop.relay,
                            remote,
                            capacity: 0,
                            own: 0,
                            relayed: 0,
                            shared: false,
                        });
                        self.relay_lines.len() - 1
                    }
                    None => continue,
                };
                let line = &mut self.relay_lines[i];
                line.capacity = line.capacity.max(p.line_bandwidth());
                line.relayed += 1;
            }
        }
        if self.relay_lines.is_empty() {
            return;
        }
        for line in &mut self.relay_lines {
            let own = self
                .members
                .get(line.relay as usize)
                .and_then(|m| m.transport.as_ref())
                .into_iter()
                .flat_map(|t| t.paths())
                .filter(|p| p.endpoint().relay.is_none() && p.endpoint().remote == line.remote);
            for p in own {
                line.capacity = line.capacity.max(p.line_bandwidth());
                line.own += p.send_rate(now);
            }
        }
        // Contended lines first: whether a path wants more is told by its current cap.
        for i in 0..self.relay_lines.len() {
            if self.relay_lines[i].relayed > 1 {
                self.relay_lines[i].shared = self.share_line(now, i);
            }
        }
        let (lines, floor) = (&self.relay_lines, self.floor);
        for m in &mut self.members {
            let barred = !may_borrow(m.balance, floor);
            for p in m.transport.iter_mut().flat_map(|t| t.paths_mut()) {
                let Some(hop) = p.endpoint().relay else {
                    continue;
                };
                // Below the co-op's floor: its own line only (its paths through others'
                // are kept alive by their probes, no more).
                p.set_standby(barred);
                let remote = p.endpoint().remote;
                let line = lines
                    .iter()
                    .find(|l| l.relay == hop.relay && l.remote == remote);
                if line.is_some_and(|l| l.shared) {
                    continue;
                }
                p.set_rate_cap(line.and_then(|l| spare_for_relayed(l.capacity, l.own)));
                p.set_price_per_gb(None);
            }
        }
    }

    /// Divides what relay line `i` has for relayed paths among the members whose paths
    /// use it, the co-op's way ([`Contention`]): by default in shares weighted by their
    /// balances. A member that uses less than its share says so by its sending rate, and
    /// what it leaves goes to the others. Returns whether it capped the line's paths (not
    /// when fewer than two members are busy on it).
    fn share_line(&mut self, now: Instant, i: usize) -> bool {
        let line = self.relay_lines[i];
        let on_line = |p: &Path| {
            p.endpoint()
                .relay
                .is_some_and(|hop| hop.relay == line.relay && p.endpoint().remote == line.remote)
        };
        // The shares hold only while the caps bind: their sum must be what the line
        // really has for relayed traffic, which no path measures alone (each sees its
        // share; bandwidth estimates are maxima and add up to more). So the line's rate
        // is tracked here: it creeps up while the paths fill their caps, and comes down
        // to a little below what they carry once the line's queue builds (the paths'
        // one-way delay above their base). So the caps sum to at most a twentieth over
        // the line, the little that keeps it full.
        let (mut carried, mut queue) = (0u64, Duration::ZERO);
        for p in self
            .members
            .iter()
            .flat_map(|m| m.transport.iter().flat_map(|t| t.paths()))
            .filter(|p| on_line(p))
        {
            carried += p.send_rate(now);
            queue = queue.max(p.queue_delay());
        }
        let k = match self
            .line_rates
            .iter()
            .position(|r| r.0 == line.relay && r.1 == line.remote)
        {
            Some(k) => k,
            None => {
                if self.line_rates.len() == MAX_RELAY_LINES {
                    self.line_rates.remove(0);
                }
                self.line_rates.push((line.relay, line.remote, carried));
                self.line_rates.len() - 1
            }
        };
        let rate = &mut self.line_rates[k].2;
        *rate = if queue > CONTENTION_QUEUE {
            (carried - carried / 16).min(*rate - *rate / 64)
        } else if carried + carried / 20 >= *rate {
            // The caps bind: the line may have more.
            (*rate + *rate / 200).max(carried)
        } else {
            *rate
        };
        let available = spare_for_relayed(line.capacity, line.own).unwrap_or(*rate);
        if available == 0 {
            return false;
        }
        self.consumers.clear();
        for (id, m) in self.members.iter().enumerate() {
            let backlog = m.transport.as_ref().is_some_and(|t| t.waiting() > 0);
            for p in m
                .transport
                .iter()
                .flat_map(|t| t.paths())
                .filter(|p| on_line(p))
            {
                let sent = p.send_rate(now);
                // Packets waiting for it, or sending near its cap (or uncapped): it would
                // take more. (A TCP flow's rate swings below its cap between losses.)
                // One held to the least rate (an auction it lost, or a tiny share) that
                // uses it still wants more: it must stay in the division, or the line
                // would look uncontended and it would take it back at once.
                let held_down = p.rate_cap().is_some_and(|cap| cap <= CONTENTION_HEADROOM);
                let wants_more = (sent > CONTENTION_HEADROOM || held_down)
                    && (backlog
                        || p.rate_cap()
                            .is_none_or(|cap| sent as f64 >= CONTENDED_USE * cap as f64));
                self.consumers.push(Consumer {
                    member: id as u32,
                    demand: if wants_more {
                        available
                    } else {
                        sent + sent / 4 + CONTENTION_HEADROOM
                    },
                    balance: m.balance,
                    ceiling_per_gb: m.bid,
                });
            }
        }
        // One member busy on the line: nothing to divide, its congestion control finds
        // what the line has (as on a line nobody shares).
        let busy = self
            .consumers
            .iter()
            .filter(|c| c.demand == available)
            .map(|c| c.member)
            .fold((None, false), |(first, two), m| {
                (first.or(Some(m)), two || first.is_some_and(|f| f != m))
            });
        if !busy.1 {
            return false;
        }
        let awards = self
            .contention
            .divide(available, &self.consumers, self.floor);
        let mut awards = awards.iter();
        for m in &mut self.members {
            for p in m
                .transport
                .iter_mut()
                .flat_map(|t| t.paths_mut())
                .filter(|p| on_line(p))
            {
                if let Some(a) = awards.next() {
                    // The pacer lets a path run a little over its cap (a burst after each
                    // lull), more so a slow one: what it sends over its award comes off
                    // its cap, so the shares are what goes on the line.
                    let sent = p.send_rate(now).max(1);
                    let trim = (a.bytes as f64 / sent as f64).clamp(MIN_CAP_TRIM, 1.0);
                    p.set_rate_cap(Some((a.bytes as f64 * trim) as u64));
                    // At an auction, what it carries now costs the price its award paid.
                    p.set_price_per_gb(a.price_per_gb());
                }
            }
        }
        true
    }

    /// How the co-op divides a relay's line among members that want more than it has,
    /// and the balance below which a member uses only its own line.
    pub fn set_credit_rules(&mut self, contention: Contention, floor: Option<MilliCredits>) {
        self.contention = contention;
        self.floor = floor;
    }

    /// Signs `statement` (of member `id`'s account; its `member` is set to `id`) with the
    /// key mesh credentials are signed with, and sends it to the member through its
    /// tunnel, now and every few seconds while it is the latest. Nothing for a member
    /// without a session: the next call, after it connects, brings it one.
    pub fn send_statement(&mut self, now: Instant, id: MemberId, statement: &Statement) {
        let statement = Statement {
            member: id.0,
            ..*statement
        };
        self.send_signed(id, |issuer, t| {
            let signed = SignedStatement::sign(issuer, &statement);
            t.set_statement(now, Box::new(signed.to_bytes()));
        });
    }

    /// A member's credit balance, as the ledger has it.
    pub fn set_balance(&mut self, id: MemberId, balance: MilliCredits) {
        if let Some(m) = self.members.get_mut(id.0 as usize) {
            m.balance = balance;
        }
    }

    /// Wraps a datagram for a path through a relay in an envelope for the relay's slot,
    /// tagged with the relay's current session, addressed to the relay.
    fn through_relay(
        &self,
        now: Instant,
        hop: Option<RelayHop>,
        transmit: Transmit,
        buf: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        let Some(hop) = hop else {
            return Ok(transmit);
        };
        let keys = self
            .members
            .get(hop.relay as usize)
            .and_then(|m| m.current.as_ref())
            .filter(|k| !k.expired(now, &self.limits))
            .ok_or(DropReason::RelayOffline)?;
        if transmit.len + RELAY_OVERHEAD > buf.len() {
            return Err(DropReason::PacketTooLarge);
        }
        buf.copy_within(..transmit.len, RELAY_HEADER_LEN);
        let len = crate::relay::seal_envelope(
            &RelayKey(keys.relay_down_key),
            MessageType::RelayDown,
            keys.remote_index,
            hop.slot,
            buf,
            transmit.len,
        )?;
        Ok(Transmit { len, ..transmit })
    }

    fn handle_initiation(
        &mut self,
        now: Instant,
        from: &Endpoint,
        init: &wire::HandshakeInit<'_>,
        reply: &mut [u8],
    ) -> Result<(usize, Option<MemberId>), DropReason> {
        // Cheap checks first: a flood must not cost us a Diffie-Hellman per packet.
        if !crypto::mac_eq(&self.mac1_key.mac(&[init.mac1_input()]), init.mac1()) {
            return Err(DropReason::BadMac1);
        }
        // A replay of a recent initiation costs this lookup: no cookie, no Diffie-Hellman.
        let ephemeral: [u8; 32] = init.noise()[..32].try_into().expect("fixed length");
        if self.seen.contains(&ephemeral) {
            return Err(DropReason::ReplayedHandshake);
        }
        let rate = self.handshakes_per_second as f32;
        let burst = (rate / LOAD_BURST_DIVISOR).max(1.0);
        if !self.load.take(now, rate, burst) {
            // Under a flood this runs for every datagram: one MAC for the cookie, the
            // previous epoch's only when the current one fails, none for an empty mac2.
            let epoch = self.cookie_epoch(now);
            let current = self.cookie(from, epoch);
            let mac2_ok = |cookie: &[u8; 16]| {
                crypto::mac_eq(&crypto::mac(cookie, &[init.mac2_input()]), init.mac2())
            };
            let valid = init.mac2().iter().any(|&b| b != 0)
                && (mac2_ok(&current) || mac2_ok(&self.cookie(from, epoch.wrapping_sub(1))));
            if !valid {
                let len = self.write_cookie_reply(&current, init, reply)?;
                self.stats.cookies_sent += 1;
                self.stats.drops.count(DropReason::CookieRequired);
                return Ok((len, None));
            }
            let bucket = &mut self.sources[source_hash(from, &self.random) % SOURCE_BUCKETS];
            if !bucket.take(now, SOURCE_RATE, SOURCE_RATE) {
                return Err(DropReason::RateLimited);
            }
        }
        // Only initiations that cost a Diffie-Hellman are remembered: a flood answered with
        // cookies cannot push the real ones out.
        self.seen.insert(ephemeral);
        self.stats.handshakes_processed += 1;
        let received = session::receive_initiation(&self.static_key, init)?;
        let id = *self
            .by_key
            .get(&received.member_key)
            .ok_or(DropReason::UnknownMember)?;
        let member = &mut self.members[id.0 as usize];
        // WireGuard's rule: only an initiation newer than any accepted before. Gateways
        // keep their timestamps rising across reboots (a persisted floor), so a replayed
        // old initiation can never displace a member's pending keys.
        if received.timestamp_us <= member.last_timestamp_us {
            return Err(DropReason::StaleHandshake);
        }
        let mut index = self.rng.next_u32();
        while self.by_index.contains_key(&index) {
            index = self.rng.next_u32();
        }
        let timestamp = received.timestamp_us;
        let keypair = session::respond(received, member.key.psk.as_ref(), index, now, reply)?;
        member.last_timestamp_us = timestamp;
        if let Some(old) = member.pending.replace(keypair) {
            self.by_index.remove(&old.local_index);
        }
        self.by_index.insert(index, id);
        self.stats.handshakes += 1;
        Ok((HANDSHAKE_RESPONSE_LEN, Some(id)))
    }

    fn cookie_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / COOKIE_ROTATION.as_secs()
    }

    /// The cookie for a source address in an epoch: only that address can learn it. The
    /// epoch's secret is derived once and kept (for this epoch and the one before).
    fn cookie(&mut self, from: &Endpoint, epoch: u64) -> [u8; 16] {
        let slot = &mut self.cookie_secrets[(epoch % 2) as usize];
        if slot.0 != Some(epoch) {
            *slot = (
                Some(epoch),
                crypto::derive(&self.random, &epoch.to_be_bytes()),
            );
        }
        crypto::mac(&slot.1, &[&source_bytes(from)])
    }

    fn write_cookie_reply(
        &mut self,
        cookie: &[u8; 16],
        init: &wire::HandshakeInit<'_>,
        reply: &mut [u8],
    ) -> Result<usize, DropReason> {
        use chacha20poly1305::aead::AeadInPlace;
        let out = reply
            .get_mut(..COOKIE_REPLY_LEN)
            .ok_or(DropReason::PacketTooLarge)?;
        out[0] = wire::VERSION;
        out[1] = MessageType::CookieReply as u8;
        out[2] = 0;
        out[3] = 0;
        out[4..8].copy_from_slice(&init.sender_index().to_be_bytes());
        // Nonces never repeat under this key: a per-start random prefix and a counter.
        self.cookie_nonce += 1;
        out[8..12].copy_from_slice(&self.random[8..12]);
        out[12..20].copy_from_slice(&self.cookie_nonce.to_be_bytes());
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&out[8..20]);
        out[20..36].copy_from_slice(cookie);
        let mac1: [u8; MAC_LEN] = init.mac1().try_into().expect("checked length");
        let tag = crypto::cookie_cipher(&self.cookie_key)
            .encrypt_in_place_detached((&nonce).into(), &mac1, &mut out[20..36])
            .map_err(|_| DropReason::PacketTooLarge)?;
        out[36..52].copy_from_slice(&tag);
        Ok(COOKIE_REPLY_LEN)
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.limits.reject_after_time;
        self.members
            .iter()
            .flat_map(|m| {
                let keys = m.keypairs().map(move |k| k.created + expiry);
                // Path timers only with keys to send what they ask for.
                let paths = m
                    .transport
                    .as_ref()
                    .filter(|_| m.current.is_some())
                    .and_then(|t| t.poll_timeout());
                keys.chain(paths)
            })
            .min()
    }

    /// Runs the paths' timers and expires old keys.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.grant_credentials(now);
        let limits = self.limits;
        for (i, m) in self.members.iter_mut().enumerate() {
            let id = MemberId(i as u32);
            let had = m.current.is_some();
            for slot in [&mut m.current, &mut m.previous, &mut m.pending] {
                if slot.as_ref().is_some_and(|k| k.expired(now, &limits)) {
                    let k = slot.take().expect("checked");
                    self.by_index.remove(&k.local_index);
                }
            }
            if had && m.current.is_none() {
                // Nothing to seal with: what waits for the member goes, and its memory;
                // what it counted stays for the ledger.
                if let Some(u) = m.transport.take().as_mut().and_then(|t| t.usage_mut()) {
                    m.usage.merge(u);
                }
                push_event(&mut self.events, ServerEvent::Disconnected(id));
            }
            if let (Some(t), true) = (&mut m.transport, m.current.is_some()) {
                // Gaps the reorder buffer gives up release packets for the TUN too.
                t.handle_timeout(now);
                if t.waiting_inbound() > 0 && !m.ready {
                    m.ready = true;
                    self.inbound.push_back(id);
                }
                while let Some(e) = t.poll_event() {
                    push_event(&mut self.events, ServerEvent::Path(id, e));
                }
            }
        }
    }
}

fn push_event(events: &mut VecDeque<ServerEvent>, e: ServerEvent) {
    if events.len() == 256 {
        events.pop_front();
    }
    events.push_back(e);
}

/// Who a handshake came from, for its cookie and its rate limit: the source address, or
/// behind a relay the relay and its slot (every member behind one relay shares its
/// address, and must not share its bucket).
fn source_bytes(from: &Endpoint) -> [u8; 19] {
    let mut b = [0u8; 19];
    match from.relay {
        Some(hop) => {
            b[0] = 1;
            b[1..5].copy_from_slice(&hop.relay.to_be_bytes());
            b[5..9].copy_from_slice(&hop.slot.to_be_bytes());
        }
        None => {
            let ip = match from.remote.ip() {
                std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(a) => a.octets(),
            };
            b[1..17].copy_from_slice(&ip);
            b[17..].copy_from_slice(&from.remote.port().to_be_bytes());
        }
    }
    b
}

fn source_hash(from: &Endpoint, random: &[u8; 32]) -> usize {
    // Keyed, so an attacker cannot aim many addresses at one legitimate source's bucket.
    // A direct source's port is left out: one host, one bucket.
    let mut b = source_bytes(from);
    if from.relay.is_none() {
        b[17..].fill(0);
    }
    let m = crypto::mac(random, &[&b]);
    usize::from(u16::from_be_bytes([m[0], m[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_budget_is_an_eighth_of_a_core() {
        // 1 ms a handshake: 1000 a second on one core, 125 before cookies.
        assert_eq!(handshake_budget(Duration::from_millis(1)), 125);
        assert_eq!(handshake_budget(Duration::from_micros(100)), 1250);
        // However slow the machine, some handshakes get through without cookies.
        assert_eq!(handshake_budget(Duration::from_secs(10)), 1);
        assert!(handshake_budget(Duration::ZERO) > 1_000_000);
    }

    /// Every member behind one relay shares the relay's address: each gets its own cookie
    /// and handshake bucket (keyed by relay and slot; these eight land in eight of the 256
    /// buckets), wherever the relay's line comes
    /// from, and never the relay's own as a direct source; a direct host gets one bucket
    /// whatever its port.
    #[test]
    fn members_behind_one_relay_get_a_cookie_and_a_bucket_each() {
        let random = [5u8; 32];
        let wan: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        let behind = |slot| Endpoint {
            remote: wan,
            local: None,
            relay: Some(RelayHop { relay: 3, slot }),
        };
        let direct = |port| Endpoint::direct(SocketAddr::new(wan.ip(), port), None);
        assert_ne!(source_bytes(&behind(1)), source_bytes(&behind(2)));
        let moved = Endpoint {
            remote: "203.0.113.9:1".parse().unwrap(),
            ..behind(1)
        };
        assert_eq!(source_bytes(&moved), source_bytes(&behind(1)));
        let other_relay = Endpoint {
            relay: Some(RelayHop { relay: 4, slot: 1 }),
            ..behind(1)
        };
        assert_ne!(source_bytes(&other_relay), source_bytes(&behind(1)));
        assert_ne!(source_bytes(&behind(1)), source_bytes(&direct(40000)));
        let bucket = |e: &Endpoint| source_hash(e, &random) % SOURCE_BUCKETS;
        let mut slots: Vec<usize> = (1..=8).map(|s| bucket(&behind(s))).collect();
        slots.push(bucket(&direct(40000)));
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 9, "a bucket shared: {slots:?}");
        assert!((1..=8).all(|p| bucket(&direct(p)) == bucket(&direct(40000))));
    }

    #[test]
    fn seen_ephemerals_forget_the_oldest_first() {
        let mut seen = SeenEphemerals::new();
        let key = |i: usize| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        for i in 0..SEEN_EPHEMERALS + 10 {
            seen.insert(key(i));
        }
        assert!(!seen.contains(&key(9)));
        assert!(seen.contains(&key(10)));
        assert!(seen.contains(&key(SEEN_EPHEMERALS + 9)));
        assert_eq!(seen.set.len(), SEEN_EPHEMERALS);
    }
}
