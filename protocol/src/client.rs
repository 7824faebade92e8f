//! The member side of a session: what a gateway runs, whatever its paths are.
//!
//! Drive it like quinn-proto: feed datagrams with [`Client::handle_datagram`], seal LAN
//! packets with [`Client::seal_packet`], take handshakes and probes out with
//! [`Client::poll_transmit`], and call [`Client::handle_timeout`] at
//! [`Client::poll_timeout`].

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::crypto;
use crate::keys::{PublicKey, SecretKey, SharedSecret};
use crate::path::PathState;
use crate::relay::RelayKey;
use crate::session::{self, Initiation, Keypair, Limits};
use crate::wire::{self, CipherSuite, Control, Message, MessageType, PathId, TRANSPORT_HEADER_LEN};
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
}

/// A datagram [`Client::poll_transmit`] wrote: send `buf[..len]` on `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Path to send it on.
    pub path: PathId,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

/// What an accepted datagram was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An IP packet for the LAN, at this range of the caller's buffer.
    Packet(Range<usize>),
    /// A control message, handled.
    Control,
    /// A handshake completed: the session is (re)established.
    Connected,
    /// A cookie arrived; the handshake is retried with it.
    Cookie,
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
    /// A probe went unanswered: probing fast and handshaking again, still sending on the
    /// keys we have (a proxy that restarted answers the handshake at once; one that is
    /// only late answers the probes).
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
    paths: Vec<PathState>,
    current: Option<Keypair>,
    previous: Option<Keypair>,
    handshake: Option<Initiation>,
    /// When the next initiation should go out; `None` when none is wanted.
    handshake_due: Option<Instant>,
    handshake_attempts: u32,
    handshake_path_cursor: usize,
    cookie: Option<([u8; 16], Instant)>,
    /// The new keys must be confirmed to the proxy by a first packet.
    confirm_on: Option<PathId>,
    last_received: Option<Instant>,
    liveness: Liveness,
    /// Handshakes sent since the last one answered, and when the first of them went out.
    unanswered: Option<(u32, Instant)>,
    stats: ClientStats,
}

impl Client {
    /// A client that will connect as soon as it has a path. `wall_clock_us` is the wall
    /// clock at `now` (microseconds since the Unix epoch): handshakes carry it so that the
    /// proxy can reject replayed initiations. `seed` seeds session indices.
    pub fn new(config: ClientConfig, now: Instant, wall_clock_us: u64, seed: u64) -> Self {
        let mac1_key = session::mac1_key(&config.static_key.public_key());
        Client {
            config,
            mac1_key,
            origin: now,
            wall_at_origin_us: wall_clock_us,
            last_timestamp_us: 0,
            rng: SplitMix(seed),
            paths: Vec::new(),
            current: None,
            previous: None,
            handshake: None,
            handshake_due: Some(now),
            handshake_attempts: 0,
            handshake_path_cursor: 0,
            cookie: None,
            confirm_on: None,
            last_received: None,
            liveness: Liveness::Connecting,
            unanswered: None,
            stats: ClientStats::default(),
        }
    }

    /// Adds a path (an uplink, or a relay); probing starts at once.
    pub fn add_path(&mut self, path: PathId, now: Instant) {
        if !self.paths.iter().any(|p| p.id == path) {
            self.paths.push(PathState::new(path, now));
        }
    }

    /// Starts the handshake over now, with the retry backoff from its first step: the
    /// caller now sends to another of the proxy's addresses. A session that is up stays up.
    pub fn restart_handshake(&mut self, now: Instant) {
        self.handshake_attempts = 0;
        self.handshake_due = Some(now);
    }

    /// Removes a path (its uplink went away).
    pub fn remove_path(&mut self, path: PathId) {
        self.paths.retain(|p| p.id != path);
    }

    /// Live estimates of a path.
    pub fn path(&self, path: PathId) -> Option<&PathState> {
        self.paths.iter().find(|p| p.id == path)
    }

    /// All paths.
    pub fn paths(&self) -> &[PathState] {
        &self.paths
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

    /// Handles one datagram received on `path`, decrypting in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        path: PathId,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
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
                self.confirm_on = Some(path);
                self.stats.handshakes_completed += 1;
                for p in &mut self.paths {
                    p.next_probe = now;
                }
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
                self.cookie = Some((cookie, now));
                self.stats.cookies_received += 1;
                // Retry at once with the cookie: it proves our address to a busy proxy.
                self.handshake_due = Some(now);
                Ok(Received::Cookie)
            }
            Message::Transport(header) => {
                let keypair = [self.current.as_mut(), self.previous.as_mut()]
                    .into_iter()
                    .flatten()
                    .find(|k| k.local_index == header.receiver_index)
                    .ok_or(DropReason::UnknownSession)?;
                let range = keypair.open(&header, buf, now, &self.config.limits)?;
                self.heard(now);
                if header.kind == MessageType::Data {
                    crate::ip::check(&buf[range.clone()])?;
                    if let Some(p) = self.paths.iter_mut().find(|p| p.id == path) {
                        p.on_data_received(now, range.len(), header.counter);
                    }
                    return Ok(Received::Packet(range));
                }
                let control = Control::decode(&buf[range])?;
                let micros = micros(self.origin, now);
                if let Some(p) = self.paths.iter_mut().find(|p| p.id == path) {
                    p.on_control(now, control, micros);
                }
                Ok(Received::Control)
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// Seals the IP packet at `buf[SEAL_OFFSET..SEAL_OFFSET + len]` for `path`, in place.
    /// Returns the datagram length (it starts at `buf[0]`).
    pub fn seal_packet(
        &mut self,
        now: Instant,
        path: PathId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, DropReason> {
        let r = self.seal(now, MessageType::Data, path, buf, len);
        if r.is_ok() {
            if let Some(p) = self.paths.iter_mut().find(|p| p.id == path) {
                p.on_data_sent(len);
            }
        }
        self.stats.drops.record(r)
    }

    fn seal(
        &mut self,
        now: Instant,
        kind: MessageType,
        path: PathId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, DropReason> {
        let limits = self.config.limits;
        let keypair = self.current.as_mut().ok_or(DropReason::NoSession)?;
        if keypair.expired(now, &limits) {
            return Err(DropReason::NoSession);
        }
        let n = keypair.seal(kind, path, buf, len, &limits)?;
        if keypair.send_counter >= limits.rekey_after_messages
            && self.handshake.is_none()
            && self.handshake_due.is_none()
        {
            self.handshake_due = Some(now);
        }
        Ok(n)
    }

    fn seal_control(
        &mut self,
        now: Instant,
        path: PathId,
        control: Control,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let len = control.encode(buf.get_mut(TRANSPORT_HEADER_LEN..)?);
        let len = self.seal(now, MessageType::Control, path, buf, len).ok()?;
        Some(Transmit { path, len })
    }

    /// The next datagram the client wants sent, written at the start of `buf` (which
    /// should hold [`wire::MAX_DATAGRAM`] bytes). Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.handshake_due.is_some_and(|t| t <= now) && !self.paths.is_empty() {
            return self.send_initiation(now, buf);
        }
        self.current.as_ref()?;
        if let Some(path) = self.confirm_on.take() {
            if let Some(t) = self.seal_control(now, path, Control::Keepalive, buf) {
                return Some(t);
            }
        }
        let micros = self.micros(now);
        let interval = self.probe_interval();
        for i in 0..self.paths.len() {
            let p = &mut self.paths[i];
            let control = if let Some(ack) = p.pending_ack.take() {
                ack
            } else if p.next_probe <= now {
                p.next_probe = now + interval;
                p.probe(micros)
            } else if p.receipt_due() {
                p.receipt()
            } else {
                continue;
            };
            let id = p.id;
            return self.seal_control(now, id, control, buf);
        }
        None
    }

    fn send_initiation(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let path = self.paths[self.handshake_path_cursor % self.paths.len()].id;
        // Rotate paths on retries: one dead uplink must not stall the handshake.
        self.handshake_path_cursor = self.handshake_path_cursor.wrapping_add(1);
        let index = self.rng.next_u32();
        let timestamp = (self.wall_at_origin_us + self.micros(now)).max(self.last_timestamp_us + 1);
        self.last_timestamp_us = timestamp;
        let cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
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
                self.stats.handshakes_sent += 1;
                let (n, since) = self.unanswered.unwrap_or((0, now));
                self.unanswered = Some((n + 1, since));
                Some(Transmit {
                    path,
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
    /// that `handle_timeout` (or `poll_transmit`, for probes and handshakes) acts on and
    /// moves forward: a time in the past never survives them, so an event loop cannot spin.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        let mut next = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if !self.paths.is_empty() {
            // With no path nothing can be sent: adding one wakes the loop anyway.
            if let Some(t) = self.handshake_due {
                consider(t);
            }
        }
        if let Some(k) = &self.current {
            if self.handshake_due.is_none() {
                consider(k.created + limits.rekey_after_time);
            }
            consider(k.created + limits.reject_after_time);
            for p in &self.paths {
                consider(p.next_probe);
            }
            if let Some(t) = self.last_received {
                match self.liveness {
                    Liveness::Up => consider(t + self.suspect_after()),
                    Liveness::Suspect => consider(t + limits.dead_after),
                    Liveness::Connecting | Liveness::Lost => {}
                }
            }
        }
        if let Some(k) = &self.previous {
            consider(k.created + limits.reject_after_time);
        }
        next
    }

    /// Runs timers: rekeying, retries, expiry, dead-proxy detection.
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
        }
        let silent = self
            .last_received
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if self.current.is_some() {
            if self.liveness == Liveness::Up && silent >= self.suspect_after() {
                self.liveness = Liveness::Suspect;
                // Probe fast from now on, and handshake again at once: a proxy that
                // restarted has forgotten our keys and answers only a handshake.
                for p in &mut self.paths {
                    p.next_probe = p.next_probe.min(now);
                }
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

    /// Silence after which the proxy is suspect: one probe interval, plus the time its
    /// answer may take (RFC 6298's RTO over the best path, at least 200 ms).
    fn suspect_after(&self) -> Duration {
        let rto = self
            .paths
            .iter()
            .filter_map(|p| p.srtt().map(|s| s + 4 * p.rttvar()))
            .min()
            .unwrap_or(Duration::from_secs(1));
        self.config.limits.probe_interval + rto.max(SUSPECT_MARGIN)
    }

    /// Probing interval now: faster while the proxy is suspect.
    fn probe_interval(&self) -> Duration {
        match self.liveness {
            Liveness::Suspect => self.config.limits.probe_interval / 5,
            _ => self.config.limits.probe_interval,
        }
    }

    fn micros(&self, now: Instant) -> u64 {
        micros(self.origin, now)
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

pub(crate) fn micros(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

/// Where a gateway reads an IP packet into its buffer so that sealing needs no copy.
pub const SEAL_OFFSET: usize = TRANSPORT_HEADER_LEN;

/// Least time an answer to a probe is given before the proxy is suspect.
const SUSPECT_MARGIN: Duration = Duration::from_millis(200);

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
