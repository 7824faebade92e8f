//! The `session_pair` harness: a gateway (client) and a proxy (server) with fixed keys,
//! connected once per process, then fed whatever the fuzzer makes up, as a script of
//! operations.
//!
//! What makes it fast: a handshake costs about ten X25519 multiplications, and under the
//! fuzzer's instrumentation that is milliseconds, against a tenth of that for everything
//! else an input does. So the pair is built and connected once and kept from one input to
//! the next, and only inputs that ask for handshakes (first byte odd) can cause any: a
//! sleep past the dead-peer timeout, lost probes, a forged or twin initiation, `REKEY`;
//! at most [`MAX_HANDSHAKES_PER_INPUT`] handshake messages. With the first byte even,
//! those operations do nothing, and the input runs on the connected session alone.
//!
//! Live time runs as an event loop does, from one timer to the next with every probe
//! answered at once, so a session that is not disturbed stays up without handshakes. It is
//! capped at [`MAX_LIVE_PER_INPUT`] (a probe is a wake-up a second), and the pair's keys
//! last longer than the daemons' ([`limits`]), so that the key age live time adds up across
//! inputs brings a rekey rarely. Rekeying, key expiry and the dead-peer timeout are reached
//! by jumps (a gateway that slept), which cost one handshake whatever their length.
//!
//! Input format: one mode byte (odd: handshakes allowed), then operations until the input
//! runs out (lengths are clamped to what is left). Operations marked * do nothing in
//! an input whose mode byte is even (their bodies are still read).
//!
//! | op (byte % 12) | body                                  | what it does                                  |
//! |----------------|---------------------------------------|-----------------------------------------------|
//! | 0 `TO_SERVER`  | from:u8 len:u16le bytes               | raw datagram to the proxy, from address `from % 4` |
//! | 1 `TO_CLIENT`  | path:u8 len:u16le bytes               | raw datagram to the gateway on path `path % 2` |
//! | 2 `SEAL_UP`    | len:u16le bytes                       | gateway seals `bytes` as an IP packet, proxy opens it |
//! | 3 `SEAL_DOWN`  | len:u16le bytes                       | proxy seals, gateway opens                    |
//! | 4 `MUTATE`     | dir:u8 idx:u8 at:u16le cut:u8 n:u8 mask | a captured datagram, `mask` XORed in at `at`, `cut` bytes cut off the end, delivered again |
//! | 5 `ADVANCE`    | t:u16le                               | time moves `8 * (t & 0x7fff)` ms live (timers run as they fall due, both sides exchange what they send; at most [`MAX_LIVE_PER_INPUT`] in all), or, with bit 15 set (*), `32 * (t & 0x7fff)` ms in one jump with no timers run until the next `PUMP` or live `ADVANCE` (a gateway that slept; [`MAX_JUMPS_PER_INPUT`]) |
//! | 6 `PUMP`       | (none)                                | due timers run, both sides exchange, time stands |
//! | 7 `EXTEND`     | dir:u8 idx:u8 len:u16le bytes         | a captured datagram with `bytes` appended, delivered again |
//! | 8 `FORGE`*     | from:u8 idx:u8 at:u16le n:u8 mask     | a captured datagram to the proxy, cut or zero-padded to an initiation's length, `mask` XORed in at `at`, a valid mac1 written (anyone can: [`session::write_mac1`]), sent from `from % 4`: reaches the Noise code, the load limit and cookies |
//! | 9 `LOSE`*      | up:u8 down:u8                         | the next `up` datagrams the gateway sends while pumping and the next `down` answers to them are lost (still captured, for `MUTATE`/`EXTEND` to deliver late) |
//! | 10 `REKEY`*    | (none)                                | the gateway starts a handshake (sent at the next exchange) |
//! | 11 `TWIN`*     | from:u8 clock:u16le                   | a second gateway with the same keys and a clock `clock as i16` ms (at most 1000) off the gateway's (a clone of the router, or one whose clock went back) sends one initiation from `from % 4` (the answer is captured) |
//!
//! `dir` 0 means "towards the proxy", 1 "towards the gateway". Captured datagrams are the
//! ones seen while connecting (kept for the life of the process) plus the ones this input
//! produced.
//!
//! What one input may spend ([`MAX_LIVE_PER_INPUT`], [`MAX_WAKEUPS_PER_INPUT`],
//! [`MAX_JUMPS_PER_INPUT`], [`MAX_HANDSHAKES_PER_INPUT`]): the input ends where a budget
//! runs out. After each input the pair is brought back to a working session (a handshake
//! if the input broke it, then a second of live time after any handshake, so that the next
//! input needs no cookie; rebuilt as a last resort), so an input starts connected, but not
//! from the same state as in a fresh process (key age, counters, the proxy's memory of
//! initiations).
//!
//! What every delivery checks (a failed check panics, which the fuzzer reports):
//! * every `Err(reason)` is counted exactly once under `reason`, and nothing else is counted
//!   (a cookie reply, the one `Ok` that counts a `cookie_required` drop, excepted);
//! * a packet handed out passes [`ip::check`] and lies inside the buffer; replies fit theirs;
//! * a transport datagram accepted once is never accepted again (replay protection);
//! * a packet one side sealed reaches the other side byte for byte, or is refused only for
//!   a reason a working session can have (keys gone or expired, not an IP packet);
//! * once due timers have run and the gateway has sent all it wants, neither side offers a
//!   timer at or before now (an event loop would wake up at once for it; see
//!   [`strict_timers`]), and the gateway does not want to send more than
//!   [`MAX_TRANSMITS_AT_ONCE`] datagrams at one instant.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, ClientStats, Received, SEAL_OFFSET};
use linkpool_protocol::keys::{PublicKey, SecretKey, SharedSecret};
use linkpool_protocol::server::{
    MemberId, MemberKey, Server, ServerConfig, ServerEvent, ServerStats,
};
use linkpool_protocol::session::{self, Limits};
use linkpool_protocol::wire::{HANDSHAKE_INIT_LEN, MAX_DATAGRAM, MessageType};
use linkpool_protocol::{CipherSuite, DropCounters, DropReason, PathId, ip};

/// Operation codes of the input script (see the module docs).
pub mod op {
    /// Raw datagram to the proxy.
    pub const TO_SERVER: u8 = 0;
    /// Raw datagram to the gateway.
    pub const TO_CLIENT: u8 = 1;
    /// Gateway seals an IP packet for the proxy.
    pub const SEAL_UP: u8 = 2;
    /// Proxy seals an IP packet for the gateway.
    pub const SEAL_DOWN: u8 = 3;
    /// Replay a captured datagram with bits flipped / bytes cut.
    pub const MUTATE: u8 = 4;
    /// Move time and run timers.
    pub const ADVANCE: u8 = 5;
    /// Run due timers and exchange pending datagrams.
    pub const PUMP: u8 = 6;
    /// Replay a captured datagram with bytes appended.
    pub const EXTEND: u8 = 7;
    /// An initiation with a valid mac1 made from a captured datagram.
    pub const FORGE: u8 = 8;
    /// Lose the next datagrams of an exchange.
    pub const LOSE: u8 = 9;
    /// The gateway handshakes again.
    pub const REKEY: u8 = 10;
    /// A second gateway with the same keys handshakes once.
    pub const TWIN: u8 = 11;
    /// Number of operations: an op byte is taken modulo this.
    pub const COUNT: u8 = 12;
}

/// The gateway's fixed static key.
pub const MEMBER_KEY: [u8; 32] = [0x11; 32];
/// The proxy's fixed static key.
pub const PROXY_KEY: [u8; 32] = [0x22; 32];
/// The member's fixed PSK.
pub const PSK: [u8; 32] = [0x33; 32];
/// The gateway's wall clock when the pair is built (microseconds since the Unix epoch).
pub const WALL_CLOCK_US: u64 = 1_700_000_000_000_000;

/// Simulated time one input may pass with live `ADVANCE`s (later ones are cut short):
/// past the dead-peer timeout, with room for the probes and retries of an outage.
pub const MAX_LIVE_PER_INPUT: Duration = Duration::from_secs(8);
/// Timer wake-ups one input may cause with live `ADVANCE`s.
pub const MAX_WAKEUPS_PER_INPUT: u32 = 48;
/// `ADVANCE` jumps one input may make (later ones are skipped), of any length: each
/// costs a handshake at the next exchange.
pub const MAX_JUMPS_PER_INPUT: u32 = 2;
/// Handshake messages that cost Diffie-Hellmans one input may cause: initiations the
/// gateway (or its twin) sent, plus initiations the proxy processed. A clean handshake
/// is 2, one through a cookie 3, a forged or twin initiation 1 or 2.
pub const MAX_HANDSHAKES_PER_INPUT: u64 = 4;
/// The same for an input without handshakes (even mode byte): the one rekey that the
/// key age added up over many inputs may bring.
pub const MAX_HANDSHAKES_CONNECTED: u64 = 2;
/// More datagrams than this from the gateway at one instant is a spin.
pub const MAX_TRANSMITS_AT_ONCE: usize = 256;

const P0: PathId = PathId(0);
const P1: PathId = PathId(1);
const TO_SERVER: usize = 0;
const TO_CLIENT: usize = 1;
/// Datagrams one input may capture per direction.
const RECENT_CAP: usize = 32;

const SOURCES: [SocketAddr; 4] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 5555),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        40000,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40001),
];

/// The pair's timers: the daemons' defaults (probes every second, dead after 6 s,
/// handshake retries 1 s to 8 s), but keys last four times longer (rekey after 8
/// minutes, refused after 12): live time adds up across inputs, and every rekey it
/// brings is a handshake some input pays for. Jumps reach both.
pub fn limits() -> Limits {
    Limits {
        rekey_after_time: Duration::from_secs(480),
        reject_after_time: Duration::from_secs(720),
        ..Limits::default()
    }
}

/// A minimal well-formed IPv4/UDP packet of `len` bytes (at least 28).
pub fn ipv4_packet(len: usize, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; len.max(28)];
    let len = p.len();
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 77, 0, 2]);
    p[16..20].copy_from_slice(&[192, 0, 2, 1]);
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

/// A minimal well-formed IPv6/UDP packet of `len` bytes (at least 48).
pub fn ipv6_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(48)];
    let payload = (p.len() - 40) as u16;
    p[0] = 0x60;
    p[4..6].copy_from_slice(&payload.to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8] = 0xfd;
    p[23] = 2;
    p[24] = 0x20;
    p[25] = 0x01;
    p[39] = 1;
    p
}

fn is_transport(d: &[u8]) -> bool {
    d.len() > 1 && (d[1] == MessageType::Data as u8 || d[1] == MessageType::Control as u8)
}

/// Checks the drop accounting of one `handle_datagram` call. `cookie` is true when the
/// call returned a cookie reply, which counts one `cookie_required` drop.
fn check_counted<T: std::fmt::Debug>(
    side: &str,
    before: &DropCounters,
    after: &DropCounters,
    result: &Result<T, DropReason>,
    cookie: bool,
) {
    match result {
        Err(reason) => {
            assert_eq!(
                after.get(*reason),
                before.get(*reason) + 1,
                "{side}: Err({reason}) not counted under its reason"
            );
            assert_eq!(
                after.total(),
                before.total() + 1,
                "{side}: Err({reason}) counted more than once"
            );
        }
        Ok(_) if cookie => {
            assert_eq!(
                after.get(DropReason::CookieRequired),
                before.get(DropReason::CookieRequired) + 1,
                "{side}: cookie reply without a cookie_required drop"
            );
            assert_eq!(after.total(), before.total() + 1, "{side}: cookie reply");
        }
        Ok(ok) => assert_eq!(
            after.total(),
            before.total(),
            "{side}: Ok({ok:?}) counted a drop"
        ),
    }
}

/// Why an input stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// [`MAX_WAKEUPS_PER_INPUT`] spent.
    Wakeups,
    /// [`MAX_HANDSHAKES_PER_INPUT`] spent.
    Handshakes,
}

/// What one input cost (for the `replay` example and for tuning the budgets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Handshake messages that cost Diffie-Hellmans (see [`MAX_HANDSHAKES_PER_INPUT`]),
    /// during the input.
    pub handshakes: u64,
    /// ... while bringing the pair back to a working session after it.
    pub settle_handshakes: u64,
    /// Whether the pair had to be rebuilt before it.
    pub rebuilt: bool,
    /// Timer wake-ups of live `ADVANCE`s.
    pub wakeups: u32,
    /// Simulated time passed.
    pub simulated: Duration,
    /// Where a budget ran out, if one did.
    pub stopped: Option<Stop>,
    /// Times a timer in the past survived `handle_timeout` and `poll_transmit` once (see
    /// [`strict_timers`]).
    pub late_timers: u32,
}

/// Whether a timer in the past that survives one round of `handle_timeout` and
/// `poll_transmit` fails the input (the default), or is only counted in
/// [`Cost::late_timers`] (`LINKPOOL_FUZZ_LENIENT_TIMERS` set to anything, to look past
/// one). One that survives two rounds always fails.
pub fn strict_timers() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("LINKPOOL_FUZZ_LENIENT_TIMERS").is_none())
}

/// What all inputs so far cost, summed (kept across rebuilds of the pair).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs that cost any Diffie-Hellman (in them or after them).
    pub with_handshakes: u64,
    /// Handshake messages that cost Diffie-Hellmans, in inputs and after them.
    pub handshakes: u64,
    /// Inputs a budget stopped.
    pub stopped: u64,
    /// Times the pair was rebuilt.
    pub rebuilt: u64,
    /// Timers in the past that survived one round.
    pub late_timers: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inputs.max(1) as f64;
        write!(
            f,
            "{} inputs, {:.1} % with handshakes, {:.3} handshake messages per input, {} stopped \
             by a budget, {} rebuilds, {} late timers",
            self.inputs,
            100.0 * self.with_handshakes as f64 / n,
            self.handshakes as f64 / n,
            self.stopped,
            self.rebuilt,
            self.late_timers
        )
    }
}

/// What the current input may still spend.
#[derive(Debug, Clone, Copy)]
struct Budget {
    live: Duration,
    wakeups: u32,
    jumps: u32,
    /// [`Pair::handshake_cost`] at which the input stops.
    handshakes_until: u64,
}

impl Budget {
    fn unlimited() -> Self {
        Budget {
            live: Duration::MAX,
            wakeups: u32::MAX,
            jumps: u32::MAX,
            handshakes_until: u64::MAX,
        }
    }
}

/// A connected gateway/proxy pair and what they said to each other.
pub struct Pair {
    now: Instant,
    origin: Instant,
    client: Client,
    server: Server,
    proxy_public: PublicKey,
    /// Datagrams seen while connecting, per direction; kept for the process's life.
    baseline: [Vec<Vec<u8>>; 2],
    /// Datagrams seen during the current input, per direction.
    recent: [Vec<Vec<u8>>; 2],
    /// Transport datagrams accepted so far, per direction (replay check).
    accepted: [HashSet<Vec<u8>>; 2],
    /// What `accepted` holds from connecting; restored at each input's start.
    accepted_baseline: [HashSet<Vec<u8>>; 2],
    /// Datagrams still to lose while pumping: (towards the proxy, towards the gateway).
    lose: (u8, u8),
    /// Whether the current input may cause handshakes (its mode byte is odd).
    handshakes_allowed: bool,
    /// Initiations sent by twins (see `TWIN`).
    twin_handshakes: u64,
    budget: Budget,
    cost: Cost,
    totals: Totals,
    /// Scratch buffers: transmit, reply.
    buf: Vec<u8>,
    reply: Vec<u8>,
}

impl Pair {
    /// Builds the pair with the fixed keys and connects it (one handshake, one probe
    /// exchange, one data packet each way), keeping what went over the wire.
    pub fn new() -> Pair {
        let now = Instant::now();
        let member_key = SecretKey::from_bytes(MEMBER_KEY);
        let proxy_key = SecretKey::from_bytes(PROXY_KEY);
        let proxy_public = proxy_key.public_key();
        let psk = SharedSecret::from_bytes(PSK);
        let server = Server::new(
            ServerConfig {
                static_key: proxy_key,
                members: vec![MemberKey {
                    public_key: member_key.public_key(),
                    psk: Some(psk.clone()),
                }],
                limits: limits(),
                // Low, so that a second handshake within half a second (a REKEY, a twin,
                // a forged initiation) puts the proxy under load and the cookie exchange
                // is reachable.
                handshakes_per_second: 2,
            },
            now,
            [7; 32],
        );
        let client = Client::new(client_config(proxy_public), now, WALL_CLOCK_US, 1);
        let mut pair = Pair {
            now,
            origin: now,
            client,
            server,
            proxy_public,
            baseline: Default::default(),
            recent: Default::default(),
            accepted: Default::default(),
            accepted_baseline: Default::default(),
            lose: (0, 0),
            handshakes_allowed: true,
            twin_handshakes: 0,
            budget: Budget::unlimited(),
            cost: Cost::default(),
            totals: Totals::default(),
            buf: vec![0; MAX_DATAGRAM],
            reply: vec![0; MAX_DATAGRAM],
        };
        pair.client.add_path(P0, now);
        pair.client.add_path(P1, now);
        pair.pump().expect("no budget while connecting");
        assert!(pair.connected(), "fixed-key pair did not connect");
        let up = ipv4_packet(60, 1);
        pair.seal_up(&up);
        let down = ipv6_packet(80);
        pair.seal_down(&down);
        pair.live(Duration::from_millis(1000))
            .expect("no budget while connecting");
        assert!(pair.connected(), "fixed-key pair lost its session");
        pair.baseline = std::mem::take(&mut pair.recent);
        pair.accepted_baseline = pair.accepted.clone();
        pair
    }

    /// Whether both sides have a session.
    pub fn connected(&self) -> bool {
        self.client.is_connected() && self.server.member(MemberId(0)).is_some_and(|m| m.connected)
    }

    /// Handshakes so far: (initiations the gateway sent, initiations the proxy answered).
    pub fn handshakes(&self) -> (u64, u64) {
        (
            self.client.stats().handshakes_sent,
            self.server.stats().handshakes,
        )
    }

    /// Handshake messages so far that cost Diffie-Hellmans: initiations the gateway and
    /// its twins sent, and initiations the proxy processed.
    pub fn handshake_cost(&self) -> u64 {
        self.client.stats().handshakes_sent
            + self.twin_handshakes
            + self.server.stats().handshakes_processed
    }

    /// What the last input cost.
    pub fn last_cost(&self) -> Cost {
        self.cost
    }

    /// What all inputs so far cost.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Drop counters so far: (gateway, proxy).
    pub fn drops(&self) -> (&DropCounters, &DropCounters) {
        (&self.client.stats().drops, &self.server.stats().drops)
    }

    /// Counters so far: (gateway, proxy).
    pub fn stats(&self) -> (&ClientStats, &ServerStats) {
        (self.client.stats(), self.server.stats())
    }

    /// Cookie replies the proxy sent and the gateway received so far.
    pub fn cookies(&self) -> (u64, u64) {
        (
            self.server.stats().cookies_sent,
            self.client.stats().cookies_received,
        )
    }

    /// The datagrams captured while connecting: (towards the proxy, towards the gateway).
    pub fn baseline(&self) -> (&[Vec<u8>], &[Vec<u8>]) {
        (&self.baseline[TO_SERVER], &self.baseline[TO_CLIENT])
    }

    fn record(&mut self, dir: usize, d: &[u8]) {
        if self.recent[dir].len() < RECENT_CAP {
            self.recent[dir].push(d.to_vec());
        }
    }

    fn captured(&self, dir: usize, idx: u8) -> Option<Vec<u8>> {
        let n = self.baseline[dir].len() + self.recent[dir].len();
        if n == 0 {
            return None;
        }
        let i = usize::from(idx) % n;
        let d = match self.baseline[dir].get(i) {
            Some(d) => d,
            None => &self.recent[dir][i - self.baseline[dir].len()],
        };
        Some(d.clone())
    }

    fn note_accepted(&mut self, dir: usize, sealed: Vec<u8>) {
        if is_transport(&sealed) {
            assert!(
                !self.accepted[dir].contains(&sealed),
                "replayed transport datagram accepted twice (dir {dir}): {}",
                hex(&sealed)
            );
            self.accepted[dir].insert(sealed);
        }
    }

    /// Delivers a datagram to the proxy, with every accounting check; a reply goes on to
    /// the gateway (unless `lose` says it is lost).
    fn deliver_to_server(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<ServerEvent, DropReason> {
        let (r, reply) = self.server_handles(from, datagram);
        if let Some(mut d) = reply {
            if self.lose.1 > 0 {
                self.lose.1 -= 1;
            } else {
                let _ = self.deliver_to_client(P0, &mut d);
            }
        }
        r
    }

    /// The proxy handles a datagram, with every accounting check; returns its reply.
    fn server_handles(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> (Result<ServerEvent, DropReason>, Option<Vec<u8>>) {
        let sealed = datagram.to_vec();
        let before = self.server.stats().drops.clone();
        let r = self
            .server
            .handle_datagram(self.now, from, datagram, &mut self.reply);
        let cookie = matches!(r, Ok(ServerEvent::Reply { member: None, .. }));
        check_counted("server", &before, &self.server.stats().drops, &r, cookie);
        let mut reply = None;
        match &r {
            Ok(ServerEvent::Packet { range, .. }) => {
                assert!(
                    range.end <= datagram.len(),
                    "packet range {range:?} outside buffer"
                );
                ip::check(&datagram[range.clone()])
                    .expect("server handed out a malformed IP packet");
                self.note_accepted(TO_SERVER, sealed);
            }
            Ok(ServerEvent::Reply { len, member }) => {
                assert!(*len <= MAX_DATAGRAM, "reply of {len} bytes");
                if member.is_some() {
                    // A probe answered: the datagram was accepted.
                    self.note_accepted(TO_SERVER, sealed);
                }
                let d = self.reply[..*len].to_vec();
                self.record(TO_CLIENT, &d);
                reply = Some(d);
            }
            Ok(ServerEvent::Consumed) => self.note_accepted(TO_SERVER, sealed),
            Err(_) => {}
        }
        (r, reply)
    }

    /// Delivers a datagram to the gateway, with every accounting check.
    fn deliver_to_client(
        &mut self,
        path: PathId,
        datagram: &mut [u8],
    ) -> Result<Received, DropReason> {
        let sealed = datagram.to_vec();
        let before = self.client.stats().drops.clone();
        let r = self.client.handle_datagram(self.now, path, datagram);
        check_counted("client", &before, &self.client.stats().drops, &r, false);
        match &r {
            Ok(Received::Packet(range)) => {
                assert!(
                    range.end <= datagram.len(),
                    "packet range {range:?} outside buffer"
                );
                ip::check(&datagram[range.clone()])
                    .expect("client handed out a malformed IP packet");
                self.note_accepted(TO_CLIENT, sealed);
            }
            Ok(Received::Control) => self.note_accepted(TO_CLIENT, sealed),
            Ok(Received::Connected | Received::Cookie) | Err(_) => {}
        }
        r
    }

    fn check_handshakes(&self) -> Result<(), Stop> {
        if self.handshake_cost() > self.budget.handshakes_until {
            Err(Stop::Handshakes)
        } else {
            Ok(())
        }
    }

    /// Runs due timers and delivers everything the gateway wants to send (and the proxy's
    /// answers), without moving time; then checks that no timer is left in the past.
    pub fn pump(&mut self) -> Result<(), Stop> {
        let from = SOURCES[0];
        let now = self.now;
        let mut late: Option<String> = None;
        for _ in 0..MAX_TRANSMITS_AT_ONCE {
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            let Some(t) = self.client.poll_transmit(now, &mut self.buf) else {
                let Some(what) = self.timer_in_the_past() else {
                    return Ok(());
                };
                // An event loop wakes up again at once. Once is a wasted wake-up (counted,
                // and fatal unless LINKPOOL_FUZZ_LENIENT_TIMERS is set); twice is a spin.
                if let Some(first) = late {
                    panic!("{what}, even after a second round ({first})");
                }
                if strict_timers() {
                    panic!("{what}");
                }
                self.cost.late_timers += 1;
                late = Some(what);
                continue;
            };
            assert!(t.len <= MAX_DATAGRAM, "transmit of {} bytes", t.len);
            let mut d = self.buf[..t.len].to_vec();
            self.record(TO_SERVER, &d);
            if self.lose.0 > 0 {
                self.lose.0 -= 1;
            } else {
                let _ = self.deliver_to_server(from, &mut d);
            }
            self.check_handshakes()?;
        }
        panic!(
            "the gateway wants to send more than {MAX_TRANSMITS_AT_ONCE} datagrams at one instant"
        );
    }

    /// After due timers ran and the gateway sent all it wanted, a timer offered for now or
    /// earlier (an event loop would wake up at once for it), described.
    fn timer_in_the_past(&self) -> Option<String> {
        if let Some(t) = self.client.poll_timeout().filter(|&t| t <= self.now) {
            return Some(format!(
                "gateway: a timer {:?} in the past survived handle_timeout and poll_transmit \
                 ({:?}, connected {}, unanswered handshakes {:?})",
                self.now - t,
                self.client.liveness(),
                self.client.is_connected(),
                self.client.unanswered_handshakes(self.now),
            ));
        }
        if let Some(t) = self.server.poll_timeout().filter(|&t| t <= self.now) {
            return Some(format!(
                "proxy: a timer {:?} in the past survived handle_timeout",
                self.now - t
            ));
        }
        None
    }

    /// Moves time forward as an event loop would: from one timer to the next, exchanging
    /// what is due at each (every probe is answered at once, so the session stays up).
    pub fn live(&mut self, by: Duration) -> Result<(), Stop> {
        let end = self.now + by;
        self.pump()?;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next.filter(|&t| t < end) else {
                break;
            };
            if self.budget.wakeups == 0 {
                return Err(Stop::Wakeups);
            }
            self.budget.wakeups -= 1;
            self.cost.wakeups += 1;
            self.now = t;
            self.pump()?;
        }
        self.now = end;
        self.pump()
    }

    /// The gateway seals `packet`; the proxy must deliver it intact or refuse it for a
    /// reason a working session can have.
    fn seal_up(&mut self, packet: &[u8]) {
        let packet = &packet[..packet.len().min(MAX_DATAGRAM - SEAL_OFFSET)];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(packet);
        let before = self.client.stats().drops.clone();
        let sealed = self
            .client
            .seal_packet(self.now, P0, &mut buf, packet.len());
        check_counted(
            "client seal",
            &before,
            &self.client.stats().drops,
            &sealed,
            false,
        );
        let Ok(n) = sealed else { return };
        let mut d = buf[..n].to_vec();
        self.record(TO_SERVER, &d);
        match self.deliver_to_server(SOURCES[0], &mut d) {
            Ok(ServerEvent::Packet { member, range }) => {
                assert_eq!(member, MemberId(0));
                assert_eq!(&d[range], packet, "upstream packet changed in transit");
            }
            Err(DropReason::BadInnerPacket) => {
                assert!(ip::check(packet).is_err(), "well-formed packet refused")
            }
            Err(DropReason::UnknownSession | DropReason::Expired) => {}
            other => panic!("gateway-sealed packet came out as {other:?}"),
        }
    }

    /// The proxy seals `packet`; the gateway must deliver it intact or refuse it for a
    /// reason a working session can have.
    fn seal_down(&mut self, packet: &[u8]) {
        let packet = &packet[..packet.len().min(MAX_DATAGRAM - SEAL_OFFSET)];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(packet);
        let before = self.server.stats().drops.clone();
        let sealed = self
            .server
            .seal_packet(self.now, MemberId(0), &mut buf, packet.len());
        check_counted(
            "server seal",
            &before,
            &self.server.stats().drops,
            &sealed,
            false,
        );
        let Ok((_, n)) = sealed else { return };
        let mut d = buf[..n].to_vec();
        self.record(TO_CLIENT, &d);
        match self.deliver_to_client(P0, &mut d) {
            Ok(Received::Packet(range)) => {
                assert_eq!(&d[range], packet, "downstream packet changed in transit")
            }
            Err(DropReason::BadInnerPacket) => {
                assert!(ip::check(packet).is_err(), "well-formed packet refused")
            }
            Err(DropReason::UnknownSession | DropReason::Expired) => {}
            other => panic!("proxy-sealed packet came out as {other:?}"),
        }
    }

    /// `FORGE`: a captured datagram to the proxy (or zeros) made an initiation's length,
    /// `mask` XORed in at `at`, with the mac1 anyone can compute.
    fn forge(&mut self, from: SocketAddr, idx: u8, at: usize, mask: &[u8]) {
        let mut d = self.captured(TO_SERVER, idx).unwrap_or_default();
        d.resize(HANDSHAKE_INIT_LEN, 0);
        for (i, m) in mask.iter().enumerate() {
            d[(at + i) % HANDSHAKE_INIT_LEN] ^= m;
        }
        session::write_mac1(&self.proxy_public, &mut d);
        self.record(TO_SERVER, &d);
        let _ = self.deliver_to_server(from, &mut d);
    }

    /// `TWIN`: a second gateway with the same keys, its clock `offset_ms` off the
    /// gateway's, sends one initiation from `from`. The proxy's answer is only captured:
    /// the twin never confirms, so the proxy keeps the gateway's session (and the gateway
    /// stays connected, which spares the next input a handshake).
    fn twin(&mut self, from: SocketAddr, offset_ms: i16) {
        let wall = WALL_CLOCK_US + (self.now - self.origin).as_micros() as u64;
        let wall = wall.saturating_add_signed(i64::from(offset_ms) * 1000);
        let mut twin = Client::new(client_config(self.proxy_public), self.now, wall, 2);
        twin.add_path(P0, self.now);
        let Some(t) = twin.poll_transmit(self.now, &mut self.buf) else {
            return;
        };
        self.twin_handshakes += twin.stats().handshakes_sent;
        let mut d = self.buf[..t.len].to_vec();
        self.record(TO_SERVER, &d);
        let _ = self.server_handles(from, &mut d);
    }

    /// Brings the pair back to a working session after an input: a new handshake if the
    /// input broke it (with time running), rebuilt as a last resort.
    fn settle(&mut self) {
        self.forget_input();
        self.lose = (0, 0);
        let start = self.handshake_cost();
        self.budget = Budget {
            live: Duration::MAX,
            wakeups: 64,
            jumps: 0,
            handshakes_until: start + 8,
        };
        // Timers the input left in the past (it ended with a jump) run now, so that what
        // they cost is this input's, not the next one's.
        let mut ok = self.pump().is_ok() && self.connected() && self.works();
        if !ok {
            // A second's pause first: the proxy's load limit (2 handshakes a second)
            // refills, so the handshake needs no cookie, and a twin's clock ahead of ours
            // has passed. Then a handshake at once rather than after the retry backoff.
            self.now += Duration::from_secs(1);
            self.client.restart_handshake(self.now);
            for _ in 0..20 {
                if self.live(Duration::from_secs(1)).is_err() {
                    break;
                }
                if self.connected() && self.works() {
                    ok = true;
                    break;
                }
            }
        }
        if ok && self.cost.handshakes + self.handshake_cost() - start > 0 {
            // After handshakes, a second of live time: the proxy's load limits refill and
            // retries still due run, so that the next input finds no cookie needed and no
            // handshake pending (and allocates no more than it frees, which would make
            // libFuzzer run it twice to look for leaks).
            ok = self.live(Duration::from_secs(1)).is_ok() && self.connected() && self.works();
        }
        self.cost.settle_handshakes = self.handshake_cost() - start;
        // What settling captured is no input's to replay.
        self.forget_input();
        if ok {
            return;
        }
        let cost = Cost {
            rebuilt: true,
            ..self.cost
        };
        let totals = self.totals;
        *self = Pair::new();
        self.cost = cost;
        self.totals = totals;
    }

    /// Drops what was captured since the pair connected, without allocating: an input
    /// that frees what it allocated does not send libFuzzer hunting for leaks.
    fn forget_input(&mut self) {
        for dir in [TO_SERVER, TO_CLIENT] {
            self.recent[dir].clear();
            let baseline = &self.accepted_baseline[dir];
            self.accepted[dir].retain(|d| baseline.contains(d));
        }
    }

    /// Whether a packet gets through both ways right now.
    fn works(&mut self) -> bool {
        let packet = ipv4_packet(40, 0xfeed);
        let mut ok = true;
        self.buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(&packet);
        match self
            .client
            .seal_packet(self.now, P0, &mut self.buf, packet.len())
        {
            Ok(n) => {
                let mut d = self.buf[..n].to_vec();
                ok &= matches!(
                    self.deliver_to_server(SOURCES[0], &mut d),
                    Ok(ServerEvent::Packet { .. })
                );
            }
            Err(_) => ok = false,
        }
        self.buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(&packet);
        match self
            .server
            .seal_packet(self.now, MemberId(0), &mut self.buf, packet.len())
        {
            Ok((_, n)) => {
                let mut d = self.buf[..n].to_vec();
                ok &= matches!(self.deliver_to_client(P0, &mut d), Ok(Received::Packet(_)));
            }
            Err(_) => ok = false,
        }
        ok
    }

    /// Runs one fuzz input (see the module docs for its format).
    pub fn run(&mut self, input: &[u8]) {
        self.cost = Cost::default();
        let (mode, ops) = input
            .split_first()
            .map_or((0, input), |(&m, rest)| (m, rest));
        self.handshakes_allowed = mode & 1 == 1;
        let start = self.handshake_cost();
        self.budget = Budget {
            live: MAX_LIVE_PER_INPUT,
            wakeups: MAX_WAKEUPS_PER_INPUT,
            jumps: MAX_JUMPS_PER_INPUT,
            handshakes_until: start
                + if self.handshakes_allowed {
                    MAX_HANDSHAKES_PER_INPUT
                } else {
                    MAX_HANDSHAKES_CONNECTED
                },
        };
        let t0 = self.now;
        if let Err(stop) = self.script(ops) {
            self.cost.stopped = Some(stop);
        }
        self.cost.handshakes = self.handshake_cost() - start;
        self.cost.simulated = self.now - t0;
        // Here rather than before the next input: what it costs, covers or breaks belongs
        // to this input, so a failure in it reproduces from this input alone more often.
        self.settle();
        let c = self.cost;
        let t = &mut self.totals;
        t.inputs += 1;
        t.with_handshakes += u64::from(c.handshakes + c.settle_handshakes > 0);
        t.handshakes += c.handshakes + c.settle_handshakes;
        t.stopped += u64::from(c.stopped.is_some());
        t.rebuilt += u64::from(c.rebuilt);
        t.late_timers += u64::from(c.late_timers);
    }

    fn script(&mut self, input: &[u8]) -> Result<(), Stop> {
        let mut r = Reader(input);
        while let Some(code) = r.u8() {
            match code % op::COUNT {
                op::TO_SERVER => {
                    let from = SOURCES[usize::from(r.u8().unwrap_or(0)) % 4];
                    let mut d = r.bytes_u16().to_vec();
                    let _ = self.deliver_to_server(from, &mut d);
                }
                op::TO_CLIENT => {
                    let path = if r.u8().unwrap_or(0) % 2 == 0 { P0 } else { P1 };
                    let mut d = r.bytes_u16().to_vec();
                    let _ = self.deliver_to_client(path, &mut d);
                }
                op::SEAL_UP => {
                    let p = r.bytes_u16().to_vec();
                    self.seal_up(&p);
                }
                op::SEAL_DOWN => {
                    let p = r.bytes_u16().to_vec();
                    self.seal_down(&p);
                }
                op::MUTATE => {
                    let dir = usize::from(r.u8().unwrap_or(0) % 2);
                    let idx = r.u8().unwrap_or(0);
                    let at = usize::from(r.u16().unwrap_or(0));
                    let cut = usize::from(r.u8().unwrap_or(0));
                    let n = usize::from(r.u8().unwrap_or(0));
                    let mask = r.take(n).to_vec();
                    let Some(mut d) = self.captured(dir, idx) else {
                        continue;
                    };
                    for (i, m) in mask.iter().enumerate() {
                        if !d.is_empty() {
                            let j = (at + i) % d.len();
                            d[j] ^= m;
                        }
                    }
                    d.truncate(d.len().saturating_sub(cut));
                    self.deliver(dir, &mut d);
                }
                op::ADVANCE => {
                    let arg = r.u16().unwrap_or(0);
                    let t = u64::from(arg & 0x7fff);
                    if arg & 0x8000 != 0 {
                        let by = Duration::from_millis(t * 32);
                        // A sleep means a new handshake: a few per input will do.
                        if !self.handshakes_allowed || self.budget.jumps == 0 {
                            continue;
                        }
                        self.budget.jumps -= 1;
                        // Nothing runs until the next exchange: datagrams can arrive at a
                        // peer whose timers have not fired yet.
                        self.now += by;
                    } else {
                        let by = Duration::from_millis(t * 8).min(self.budget.live);
                        self.budget.live -= by;
                        self.live(by)?;
                    }
                }
                op::PUMP => self.pump()?,
                op::EXTEND => {
                    let dir = usize::from(r.u8().unwrap_or(0) % 2);
                    let idx = r.u8().unwrap_or(0);
                    let tail = r.bytes_u16().to_vec();
                    let Some(mut d) = self.captured(dir, idx) else {
                        continue;
                    };
                    d.extend_from_slice(&tail);
                    self.deliver(dir, &mut d);
                }
                op::FORGE => {
                    let from = SOURCES[usize::from(r.u8().unwrap_or(0)) % 4];
                    let idx = r.u8().unwrap_or(0);
                    let at = usize::from(r.u16().unwrap_or(0));
                    let n = usize::from(r.u8().unwrap_or(0));
                    let mask = r.take(n).to_vec();
                    if self.handshakes_allowed {
                        self.forge(from, idx, at, &mask);
                    }
                }
                op::LOSE => {
                    let up = r.u8().unwrap_or(0);
                    let down = r.u8().unwrap_or(0);
                    if self.handshakes_allowed {
                        self.lose = (up, down);
                    }
                }
                op::REKEY => {
                    if self.handshakes_allowed {
                        self.client.restart_handshake(self.now);
                    }
                }
                op::TWIN => {
                    let from = SOURCES[usize::from(r.u8().unwrap_or(0)) % 4];
                    // At most 1 s ahead: the gateway's own initiations are stale until
                    // its clock catches up, and each costs two Diffie-Hellmans.
                    let offset = (r.u16().unwrap_or(0) as i16).min(1000);
                    if self.handshakes_allowed {
                        self.twin(from, offset);
                    }
                }
                _ => unreachable!("op % COUNT"),
            }
            self.check_handshakes()?;
        }
        Ok(())
    }

    fn deliver(&mut self, dir: usize, d: &mut [u8]) {
        if dir == TO_SERVER {
            let _ = self.deliver_to_server(SOURCES[0], d);
        } else {
            let _ = self.deliver_to_client(P0, d);
        }
    }
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

fn client_config(proxy_key: PublicKey) -> ClientConfig {
    ClientConfig {
        static_key: SecretKey::from_bytes(MEMBER_KEY),
        proxy_key,
        psk: Some(SharedSecret::from_bytes(PSK)),
        suite: CipherSuite::Aes256Gcm,
        limits: limits(),
    }
}

/// Lower-case hex, for messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let lo = self.u8()?;
        let hi = self.u8().unwrap_or(0);
        Some(u16::from_le_bytes([lo, hi]))
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn bytes_u16(&mut self) -> &[u8] {
        let n = usize::from(self.u16().unwrap_or(0));
        self.take(n)
    }
}

/// Encoders for the input script, for seeds and tests.
pub mod script {
    use super::op;

    /// A new script: its mode byte, odd when the script may cause handshakes.
    pub fn start(handshakes: bool) -> Vec<u8> {
        vec![u8::from(handshakes)]
    }

    /// `TO_SERVER`.
    pub fn to_server(out: &mut Vec<u8>, from: u8, d: &[u8]) {
        out.extend([op::TO_SERVER, from]);
        len_bytes(out, d);
    }

    /// `TO_CLIENT`.
    pub fn to_client(out: &mut Vec<u8>, path: u8, d: &[u8]) {
        out.extend([op::TO_CLIENT, path]);
        len_bytes(out, d);
    }

    /// `SEAL_UP`.
    pub fn seal_up(out: &mut Vec<u8>, packet: &[u8]) {
        out.push(op::SEAL_UP);
        len_bytes(out, packet);
    }

    /// `SEAL_DOWN`.
    pub fn seal_down(out: &mut Vec<u8>, packet: &[u8]) {
        out.push(op::SEAL_DOWN);
        len_bytes(out, packet);
    }

    /// `MUTATE`.
    pub fn mutate(out: &mut Vec<u8>, dir: u8, idx: u8, at: u16, cut: u8, mask: &[u8]) {
        out.extend([op::MUTATE, dir, idx]);
        out.extend(at.to_le_bytes());
        out.extend([cut, mask.len() as u8]);
        out.extend(mask);
    }

    /// `ADVANCE` live by `8 * t` milliseconds, or with bit 15 set, a jump by
    /// `32 * (t & 0x7fff)` milliseconds.
    pub fn advance(out: &mut Vec<u8>, t: u16) {
        out.push(op::ADVANCE);
        out.extend(t.to_le_bytes());
    }

    /// `PUMP`.
    pub fn pump(out: &mut Vec<u8>) {
        out.push(op::PUMP);
    }

    /// `EXTEND`.
    pub fn extend(out: &mut Vec<u8>, dir: u8, idx: u8, tail: &[u8]) {
        out.extend([op::EXTEND, dir, idx]);
        len_bytes(out, tail);
    }

    /// `FORGE`.
    pub fn forge(out: &mut Vec<u8>, from: u8, idx: u8, at: u16, mask: &[u8]) {
        out.extend([op::FORGE, from, idx]);
        out.extend(at.to_le_bytes());
        out.push(mask.len() as u8);
        out.extend(mask);
    }

    /// `LOSE`.
    pub fn lose(out: &mut Vec<u8>, up: u8, down: u8) {
        out.extend([op::LOSE, up, down]);
    }

    /// `REKEY`.
    pub fn rekey(out: &mut Vec<u8>) {
        out.push(op::REKEY);
    }

    /// `TWIN` with a clock `offset_ms` off the gateway's.
    pub fn twin(out: &mut Vec<u8>, from: u8, offset_ms: i16) {
        out.extend([op::TWIN, from]);
        out.extend(offset_ms.to_le_bytes());
    }

    fn len_bytes(out: &mut Vec<u8>, d: &[u8]) {
        out.extend((d.len() as u16).to_le_bytes());
        out.extend(d);
    }
}
