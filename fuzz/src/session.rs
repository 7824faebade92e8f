//! The `session_pair` harness: a gateway (client) and a proxy (server) with fixed keys,
//! connected once per process, then fed whatever the fuzzer makes up, as a script of
//! operations.
//!
//! The gateway has two uplinks, each with one path to the proxy. Uplink `k` reaches the
//! proxy from one of two NAT bindings (`BINDINGS[k]`, addresses in `SOURCES`); the proxy
//! answers a path at the address it last heard it from, and whatever it sends to either
//! binding of an uplink reaches the gateway on that uplink's path (as a daemon's socket
//! per uplink would). Nothing is delayed: an exchange delivers at once, and only `LOSE`
//! loses anything.
//!
//! What makes it fast: a handshake costs about ten X25519 multiplications, and under the
//! fuzzer's instrumentation that is milliseconds, against a tenth of that for everything
//! else an input does. So the pair is built and connected once and kept from one input to
//! the next, and only inputs that ask for handshakes (first byte odd) can cause any: a
//! sleep past the gateway's `suspect_after`, lost datagrams, a forged or twin initiation,
//! `REKEY`; at most [`MAX_HANDSHAKES_PER_INPUT`] handshake messages. With the first byte
//! even, those operations do nothing, and the input runs on the connected session alone.
//!
//! Live time runs as an event loop does, from one timer to the next with everything either
//! side sends delivered at once, so a session that is not disturbed stays up without
//! handshakes. It is capped at [`MAX_LIVE_PER_INPUT`] and [`MAX_WAKEUPS_PER_INPUT`] (the
//! gateway pings each idle path every 100 ms, the proxy acknowledges 10 ms later: about
//! 20 wake-ups a second), and the pair's keys last longer than the daemons' ([`limits`]),
//! so that the key age live time adds up across inputs brings a rekey rarely. Rekeying,
//! key expiry and the dead-proxy timeout are reached by jumps (a gateway that slept), which
//! cost one handshake whatever their length.
//!
//! Input format: one mode byte (odd: handshakes allowed), then operations until the input
//! runs out (lengths are clamped to what is left). Operations marked * do nothing in
//! an input whose mode byte is even (their bodies are still read).
//!
//! | op (byte % 14) | body                                  | what it does                                  |
//! |----------------|---------------------------------------|-----------------------------------------------|
//! | 0 `TO_SERVER`  | from:u8 len:u16le bytes               | raw datagram to the proxy, from address `from % 4` (its answers go on to the gateway) |
//! | 1 `TO_CLIENT`  | up:u8 len:u16le bytes                 | raw datagram to the gateway on uplink `up % 2`'s path |
//! | 2 `SEAL_UP`    | len:u16le bytes                       | the gateway is given `bytes` as a LAN packet (`handle_packet`), then both sides send what they want, without running timers; the proxy must hand the packet out intact |
//! | 3 `SEAL_DOWN`  | len:u16le bytes                       | the same from the proxy (`handle_packet`, routed by destination) to the gateway |
//! | 4 `MUTATE`     | dir:u8 idx:u8 at:u16le cut:u8 n:u8 mask | a captured datagram, `mask` XORed in at `at`, `cut` bytes cut off the end, delivered again where it was captured |
//! | 5 `ADVANCE`    | t:u16le                               | time moves `8 * (t & 0x7fff)` ms live (timers run as they fall due, both sides exchange what they send; at most [`MAX_LIVE_PER_INPUT`] in all), or, with bit 15 set (*), `32 * (t & 0x7fff)` ms in one jump with no timers run until the next `PUMP` or live `ADVANCE` (a gateway that slept; [`MAX_JUMPS_PER_INPUT`]) |
//! | 6 `PUMP`       | (none)                                | due timers run, both sides exchange, time stands |
//! | 7 `EXTEND`     | dir:u8 idx:u8 len:u16le bytes         | a captured datagram with `bytes` appended, delivered again |
//! | 8 `FORGE`*     | from:u8 idx:u8 at:u16le n:u8 mask     | a captured datagram to the proxy, cut or zero-padded to an initiation's length, `mask` XORed in at `at`, a valid mac1 written (anyone can: [`session::write_mac1`]), sent from `from % 4`: reaches the Noise code, the load limit and cookies |
//! | 9 `LOSE`*      | up:u8 down:u8                         | the next `up` datagrams the gateway sends and the next `down` the proxy sends are lost (still captured, for `MUTATE`/`EXTEND` to deliver late) |
//! | 10 `REKEY`*    | (none)                                | the gateway starts a handshake (sent at the next exchange) |
//! | 11 `TWIN`*     | from:u8 clock:u16le                   | a second gateway with the same keys and a clock `clock as i16` ms (at most 1000) off the gateway's (a clone of the router, or one whose clock went back) sends one initiation from `from % 4` (the answer is captured) |
//! | 12 `REBIND`    | up:u8                                 | uplink `up % 2`'s NAT binding moves to its other address: the proxy must follow (roaming) |
//! | 13 `REPATH`    | up:u8                                 | the gateway closes uplink `up % 2`'s path and opens a new one for it (a new path id; the proxy still has the old one) |
//!
//! `dir` 0 means "towards the proxy", 1 "towards the gateway". Captured datagrams are the
//! ones seen while connecting (kept for the life of the process) plus the ones this input
//! produced, each with where it was seen (the sender's address, the uplink it reached).
//!
//! What one input may spend ([`MAX_LIVE_PER_INPUT`], [`MAX_WAKEUPS_PER_INPUT`],
//! [`MAX_JUMPS_PER_INPUT`], [`MAX_HANDSHAKES_PER_INPUT`]): the input ends where a budget
//! runs out. After each input the pair is brought back to a working session (a handshake
//! if the input broke it, then a second of live time after any handshake, so that the next
//! input needs no cookie; rebuilt as a last resort), so an input starts connected, but not
//! from the same state as in a fresh process (key age, counters, paths, the proxy's memory
//! of initiations).
//!
//! What every step checks (a failed check panics, which the fuzzer reports):
//! * every `Err(reason)` of a `handle_datagram` or `handle_packet` is counted exactly once
//!   under `reason`, and nothing else is counted (a cookie reply, the one `Ok` that counts
//!   a `cookie_required` drop, excepted); `poll_transmit` never counts a drop (with this
//!   pair's MTU and buffers, nothing the core decides to send can fail to seal);
//! * an inner packet handed out (`poll_packet`) passes [`ip::check`], is one the other side
//!   was given (`handle_packet`, among the last [`PUT_IN_KEPT`]), and has the member's
//!   address as its source (at the proxy: no spoofing) or destination (at the gateway);
//! * a transport datagram accepted once is never accepted again (replay protection);
//! * a packet one side was given is refused only for a reason it can have (not an IP
//!   packet, too large, no session, no such member), and once accepted reaches the other
//!   side byte for byte in the same exchange, unless a datagram of that exchange was lost
//!   or refused for a reason a working session can have (keys gone or expired, a spoofed
//!   source, a path the gateway closed);
//! * every datagram goes where it should: the gateway's to the proxy, on one of its current
//!   paths; the proxy's to an address it heard from, from the address it was reached at,
//!   and a path's datagrams to an address of that path's uplink;
//! * what the proxy reports receiving on a path (receipts) is never more than the gateway
//!   sent on it; path events name paths the gateway opened; loss estimates stay in 0..=1;
//! * once due timers have run and both sides have sent all they want, neither side offers
//!   a timer at or before now (an event loop would wake up at once for it; see
//!   [`strict_timers`]), and neither side wants to send more than
//!   [`MAX_TRANSMITS_AT_ONCE`] datagrams at one instant.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, ClientStats, Event, Received};
use linkpool_protocol::keys::{PublicKey, SecretKey, SharedSecret};
use linkpool_protocol::path::PathSettings;
use linkpool_protocol::server::{
    Accepted, MemberId, MemberKey, Server, ServerConfig, ServerEvent, ServerStats,
};
use linkpool_protocol::session::{self, Limits};
use linkpool_protocol::wire::{HANDSHAKE_INIT_LEN, MAX_DATAGRAM, MessageType};
use linkpool_protocol::{CipherSuite, DropCounters, DropReason, PathId, Transmit, ip};

/// Operation codes of the input script (see the module docs).
pub mod op {
    /// Raw datagram to the proxy.
    pub const TO_SERVER: u8 = 0;
    /// Raw datagram to the gateway.
    pub const TO_CLIENT: u8 = 1;
    /// The gateway is given an IP packet for the proxy.
    pub const SEAL_UP: u8 = 2;
    /// The proxy is given an IP packet for the gateway.
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
    /// An uplink's NAT binding moves.
    pub const REBIND: u8 = 12;
    /// An uplink's path is closed and a new one opened.
    pub const REPATH: u8 = 13;
    /// Number of operations: an op byte is taken modulo this.
    pub const COUNT: u8 = 14;
}

/// The gateway's fixed static key.
pub const MEMBER_KEY: [u8; 32] = [0x11; 32];
/// The proxy's fixed static key.
pub const PROXY_KEY: [u8; 32] = [0x22; 32];
/// The member's fixed PSK.
pub const PSK: [u8; 32] = [0x33; 32];
/// The gateway's wall clock when the pair is built (microseconds since the Unix epoch).
pub const WALL_CLOCK_US: u64 = 1_700_000_000_000_000;
/// The tunnel MTU of both sides (the largest inner packet).
pub const MTU: u16 = 1400;
/// Send-queue slots of both sides.
pub const QUEUE_SLOTS: usize = 64;
/// Inner packets given to a side that are remembered, to check that what comes out of the
/// other side was put in: a re-send can only come from a queue slot still holding its
/// packet, and a queue has [`QUEUE_SLOTS`].
pub const PUT_IN_KEPT: usize = 4 * QUEUE_SLOTS;
/// Each uplink's probe interval: the default on uplink 0, a metered line's on uplink 1
/// (pinged once a second).
pub const PROBE_INTERVALS: [Duration; 2] = [
    linkpool_protocol::path::DEFAULT_PROBE_INTERVAL,
    Duration::from_secs(1),
];
/// Initiations the gateway may send at one instant: one, and its retry with a cookie.
/// More is a handshake loop (see [`strict_handshakes`]).
pub const MAX_INITIATIONS_AT_ONCE: u64 = 2;
/// The proxy's address, as the gateway's paths know it.
pub const PROXY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 7117);
/// The member's tunnel addresses.
pub const ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
];

/// Simulated time one input may pass with live `ADVANCE`s (later ones are cut short):
/// past the dead-proxy timeout, with room for the pings and retries of an outage.
pub const MAX_LIVE_PER_INPUT: Duration = Duration::from_secs(8);
/// Timer wake-ups one input may cause with live `ADVANCE`s (about 8 s of a quiet session).
pub const MAX_WAKEUPS_PER_INPUT: u32 = 200;
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
/// More datagrams than this from one side at one instant is a spin.
pub const MAX_TRANSMITS_AT_ONCE: usize = 256;

const TO_SERVER: usize = 0;
const TO_CLIENT: usize = 1;
/// Datagrams one input may capture per direction.
const RECENT_CAP: usize = 32;
/// Inner packets one exchange remembers as arrived, per direction.
const ARRIVED_CAP: usize = 256;
/// Path ids the gateway opened that are remembered for the check that none is given out
/// again (ids are 16 bits: they come round after 65536 paths).
const OPENED_KEPT: usize = 256;

/// Where datagrams to the proxy come from: the two uplinks' NAT bindings (see
/// [`BINDINGS`]), two of them on one address with different ports.
pub const SOURCES: [SocketAddr; 4] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 5555),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
        40000,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40001),
];

/// Each uplink's two NAT bindings, as indices into [`SOURCES`]: uplink 0 is
/// 198.51.100.7:40000 or :40001 (a NAT that rebinds the port), uplink 1 203.0.113.9:5555
/// or [2001:db8::7]:40000 (one that moves to the other family).
pub const BINDINGS: [[usize; 2]; 2] = [[0, 3], [1, 2]];

/// The uplink an address of [`SOURCES`] belongs to.
fn uplink_of(addr: SocketAddr) -> Option<usize> {
    (0..2).find(|&k| BINDINGS[k].iter().any(|&i| SOURCES[i] == addr))
}

/// The pair's timers: the daemons' defaults (paths pinged every 100 ms, a handshake after
/// 1.2 s without a word from the proxy, dead after 6 s, handshake retries 1 s to 8 s), but
/// keys last four times longer (rekey after 8 minutes, refused after 12): live time adds
/// up across inputs, and every rekey it brings is a handshake some input pays for. Jumps
/// reach both.
pub fn limits() -> Limits {
    Limits {
        rekey_after_time: Duration::from_secs(480),
        reject_after_time: Duration::from_secs(720),
        ..Limits::default()
    }
}

/// A minimal well-formed IPv4/UDP packet of `len` bytes (at least 28), from the member
/// (10.77.0.2) to 192.0.2.1.
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

/// A minimal well-formed IPv6/UDP packet of `len` bytes (at least 48), from the member
/// (fd00::2) to 2001::1.
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

/// `packet` with its source and destination addresses swapped: the answer to a packet
/// from the member, which the proxy routes to it.
pub fn downstream(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let src: [u8; 4] = p[12..16].try_into().expect("4 bytes");
            p.copy_within(16..20, 12);
            p[16..20].copy_from_slice(&src);
        }
        Some(6) if p.len() >= 40 => {
            let src: [u8; 16] = p[8..24].try_into().expect("16 bytes");
            p.copy_within(24..40, 8);
            p[24..40].copy_from_slice(&src);
        }
        _ => {}
    }
    p
}

fn is_transport(d: &[u8]) -> bool {
    d.len() > 1 && d[1] == MessageType::Transport as u8
}

fn is_member(a: Option<IpAddr>) -> bool {
    a.is_some_and(|a| ADDRESSES.contains(&a))
}

fn digest(p: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// Checks the drop accounting of one `handle_*` call. `cookie` is true when the call
/// queued a cookie reply, which counts one `cookie_required` drop.
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

/// The drop reasons whose counters moved from `before` to `after`, for messages.
fn moved(before: &DropCounters, after: &DropCounters) -> Vec<DropReason> {
    after
        .iter()
        .filter(|&(r, n)| n > before.get(r))
        .map(|(r, _)| r)
        .collect()
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
    /// Exchanges in which the gateway sent more than [`MAX_INITIATIONS_AT_ONCE`]
    /// initiations (see [`strict_handshakes`]).
    pub handshake_loops: u32,
}

/// Whether a timer in the past that survives one round of `handle_timeout` and
/// `poll_transmit` fails the input (the default), or is only counted in
/// [`Cost::late_timers`] (`LINKPOOL_FUZZ_LENIENT_TIMERS` set to anything, to look past
/// one). One that survives two rounds always fails.
pub fn strict_timers() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("LINKPOOL_FUZZ_LENIENT_TIMERS").is_none())
}

/// Whether the gateway sending more than [`MAX_INITIATIONS_AT_ONCE`] initiations at one
/// instant fails the input (the default), or is only counted in
/// [`Cost::handshake_loops`] (`LINKPOOL_FUZZ_LENIENT_HANDSHAKES` set to anything); the
/// handshake budget stops the loop either way.
pub fn strict_handshakes() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("LINKPOOL_FUZZ_LENIENT_HANDSHAKES").is_none())
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
    /// Inputs with handshake loops.
    pub handshake_loops: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inputs.max(1) as f64;
        write!(
            f,
            "{} inputs, {:.1} % with handshakes, {:.3} handshake messages per input, {} stopped \
             by a budget, {} rebuilds, {} late timers, {} with handshake loops",
            self.inputs,
            100.0 * self.with_handshakes as f64 / n,
            self.handshakes as f64 / n,
            self.stopped,
            self.rebuilt,
            self.late_timers,
            self.handshake_loops
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

/// A captured datagram and where it was seen: the index in [`SOURCES`] it came from
/// (towards the proxy), or the uplink it reached (towards the gateway).
#[derive(Debug, Clone)]
struct Capture {
    on: usize,
    bytes: Vec<u8>,
}

/// Digests of the last [`PUT_IN_KEPT`] inner packets one side was given (allocated once).
struct PutIn {
    counts: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

impl PutIn {
    fn new() -> Self {
        PutIn {
            counts: HashMap::with_capacity(PUT_IN_KEPT + 1),
            order: VecDeque::with_capacity(PUT_IN_KEPT + 1),
        }
    }

    fn insert(&mut self, packet: &[u8]) {
        let d = digest(packet);
        *self.counts.entry(d).or_insert(0) += 1;
        self.order.push_back(d);
        if self.order.len() > PUT_IN_KEPT {
            let old = self.order.pop_front().expect("not empty");
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }

    fn contains(&self, packet: &[u8]) -> bool {
        self.counts.contains_key(&digest(packet))
    }
}

/// What happened to the datagrams both sides sent in one exchange, for the check that a
/// packet one side accepted comes out of the other.
#[derive(Debug, Default)]
struct Trace {
    /// Datagrams `LOSE` lost, per direction.
    lost: [u32; 2],
    /// Why datagrams a side sent were refused, per direction: a bit per reason.
    refused: [u64; 2],
    /// Inner packets handed out, per direction (towards the proxy: by the proxy).
    arrived: [Vec<Vec<u8>>; 2],
}

impl Trace {
    fn refuse(&mut self, dir: usize, reason: DropReason) {
        self.refused[dir] |= 1 << reason as u8;
    }

    fn refused(&self, dir: usize, reason: DropReason) -> bool {
        self.refused[dir] & (1 << reason as u8) != 0
    }

    /// The reasons datagrams a side sent were refused, for messages.
    fn refusals(&self, dir: usize) -> Vec<DropReason> {
        DropReason::ALL
            .into_iter()
            .filter(|&r| self.refused(dir, r))
            .collect()
    }

    fn clear(&mut self) {
        self.lost = [0; 2];
        self.refused = [0; 2];
        for a in &mut self.arrived {
            a.clear();
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
    /// Each uplink's path.
    paths: [PathId; 2],
    /// Each uplink's current NAT binding (index into its [`BINDINGS`]).
    binding: [usize; 2],
    /// Path ids the gateway opened, the newest [`OPENED_KEPT`] (none is given out again).
    opened: VecDeque<PathId>,
    /// Every path id the gateway opened (path events name one of them).
    ever_opened: HashSet<PathId>,
    /// Datagrams seen while connecting, per direction; kept for the process's life.
    baseline: [Vec<Capture>; 2],
    /// Datagrams seen during the current input, per direction.
    recent: [Vec<Capture>; 2],
    /// Transport datagrams accepted so far, per direction (replay check).
    accepted: [HashSet<Vec<u8>>; 2],
    /// What `accepted` holds from connecting; restored at each input's start.
    accepted_baseline: [HashSet<Vec<u8>>; 2],
    /// Inner packets given to each side: towards the proxy (given to the gateway), towards
    /// the gateway (given to the proxy).
    put_in: [PutIn; 2],
    trace: Trace,
    /// Datagrams still to lose: (from the gateway, from the proxy).
    lose: (u8, u8),
    /// Whether the current input may cause handshakes (its mode byte is odd).
    handshakes_allowed: bool,
    /// Initiations sent by twins (see `TWIN`).
    twin_handshakes: u64,
    budget: Budget,
    cost: Cost,
    totals: Totals,
    /// Scratch buffers: transmit, inner packet.
    buf: Vec<u8>,
    packet: Vec<u8>,
}

impl Pair {
    /// Builds the pair with the fixed keys and connects it (one handshake, a data packet
    /// each way, a second of live time), keeping what went over the wire.
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
                    addresses: ADDRESSES.to_vec(),
                }],
                limits: limits(),
                // Low, so that a second handshake within half a second (a REKEY, a twin,
                // a forged initiation) puts the proxy under load and the cookie exchange
                // is reachable.
                handshakes_per_second: 2,
                mtu: MTU,
                queue_slots: QUEUE_SLOTS,
            },
            now,
            [7; 32],
        );
        let mut client = Client::new(
            client_config(proxy_public, QUEUE_SLOTS),
            now,
            WALL_CLOCK_US,
            1,
        );
        let paths = [0, 1].map(|k| client.open_path(now, PROXY, settings(k)));
        let mut pair = Pair {
            now,
            origin: now,
            client,
            server,
            proxy_public,
            paths,
            binding: [0; 2],
            opened: paths.into_iter().collect(),
            ever_opened: paths.into_iter().collect(),
            baseline: Default::default(),
            recent: Default::default(),
            accepted: Default::default(),
            accepted_baseline: Default::default(),
            put_in: [PutIn::new(), PutIn::new()],
            trace: Trace::default(),
            lose: (0, 0),
            handshakes_allowed: true,
            twin_handshakes: 0,
            budget: Budget::unlimited(),
            cost: Cost::default(),
            totals: Totals::default(),
            buf: vec![0; MAX_DATAGRAM],
            packet: vec![0; MAX_DATAGRAM],
        };
        pair.pump().expect("no budget while connecting");
        assert!(pair.connected(), "fixed-key pair did not connect");
        pair.seal_up(&ipv4_packet(60, 1))
            .expect("no budget while connecting");
        pair.seal_down(&downstream(&ipv6_packet(80)))
            .expect("no budget while connecting");
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
    pub fn baseline(&self) -> (Vec<&[u8]>, Vec<&[u8]>) {
        let [up, down] = &self.baseline;
        (
            up.iter().map(|c| &c.bytes[..]).collect(),
            down.iter().map(|c| &c.bytes[..]).collect(),
        )
    }

    fn record(&mut self, dir: usize, on: usize, d: &[u8]) {
        if self.recent[dir].len() < RECENT_CAP {
            self.recent[dir].push(Capture {
                on,
                bytes: d.to_vec(),
            });
        }
    }

    fn captured(&self, dir: usize, idx: u8) -> Option<Capture> {
        let n = self.baseline[dir].len() + self.recent[dir].len();
        if n == 0 {
            return None;
        }
        let i = usize::from(idx) % n;
        let c = match self.baseline[dir].get(i) {
            Some(c) => c,
            None => &self.recent[dir][i - self.baseline[dir].len()],
        };
        Some(c.clone())
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

    fn note_opened(&mut self, id: PathId) {
        assert!(
            !self.opened.contains(&id),
            "gateway gave path id {id} out again"
        );
        if self.opened.len() == OPENED_KEPT {
            self.opened.pop_front();
        }
        self.opened.push_back(id);
        self.ever_opened.insert(id);
    }

    /// Inner packets the proxy hands out, checked: well-formed, from the member, put in at
    /// the gateway.
    fn drain_server_packets(&mut self) {
        while let Some(n) = self.server.poll_packet(&mut self.packet) {
            let p = &self.packet[..n];
            check_handed_out(&self.put_in, &mut self.trace, TO_SERVER, p);
        }
    }

    /// The same for the gateway: well-formed, for the member, put in at the proxy.
    fn drain_client_packets(&mut self) {
        while let Some(n) = self.client.poll_packet(&mut self.packet) {
            let p = &self.packet[..n];
            check_handed_out(&self.put_in, &mut self.trace, TO_CLIENT, p);
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            if let Event::Path(e) = e {
                assert!(
                    self.ever_opened.contains(&e.path),
                    "gateway event for a path it never opened: {e:?}"
                );
            }
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::Connected(m) | ServerEvent::Disconnected(m) => {
                    assert_eq!(m, MemberId(0), "{e:?}")
                }
                ServerEvent::Path(m, p) => {
                    assert_eq!(m, MemberId(0), "{e:?}");
                    assert!(
                        self.ever_opened.contains(&p.path),
                        "proxy event for a path the gateway never opened: {e:?}"
                    );
                }
            }
        }
    }

    /// What each side knows of its paths agrees with what happened.
    fn check_paths(&self) {
        for p in self.client.paths() {
            assert!(
                (0.0..=1.0).contains(&p.loss()),
                "gateway path loss {}",
                p.loss()
            );
            if let Some((packets, bytes)) = p.peer_receipt() {
                let c = p.counters();
                assert!(
                    packets <= c.tx_packets && bytes <= c.tx_bytes,
                    "proxy reports receiving {packets} packets, {bytes} bytes on path {}, which \
                     carried {} packets, {} bytes",
                    p.id(),
                    c.tx_packets,
                    c.tx_bytes
                );
            }
        }
        if let Some(m) = self.server.member(MemberId(0)) {
            for p in m.paths {
                assert!(
                    (0.0..=1.0).contains(&p.loss()),
                    "proxy path loss {}",
                    p.loss()
                );
            }
        }
    }

    /// The gateway's next datagram, checked: nothing dropped on the way out, sent to the
    /// proxy on one of its paths.
    fn client_transmit(&mut self) -> Option<(Transmit, Vec<u8>)> {
        let before = self.client.stats().drops.clone();
        let t = self.client.poll_transmit(self.now, &mut self.buf);
        let after = &self.client.stats().drops;
        assert_eq!(
            after.total(),
            before.total(),
            "gateway: poll_transmit dropped what it meant to send: {:?}",
            moved(&before, after)
        );
        let t = t?;
        assert!(t.len <= MAX_DATAGRAM, "transmit of {} bytes", t.len);
        assert_eq!(t.remote, PROXY, "gateway sent {t:?} elsewhere");
        assert!(
            self.paths.contains(&t.path),
            "gateway sent {t:?} on a path it does not have ({:?})",
            self.paths
        );
        Some((t, self.buf[..t.len].to_vec()))
    }

    /// The proxy's next datagram, checked the same way, with the uplink it reaches.
    fn server_transmit(&mut self) -> Option<(Transmit, usize, Vec<u8>)> {
        let before = self.server.stats().drops.clone();
        let t = self.server.poll_transmit(self.now, &mut self.buf);
        let after = &self.server.stats().drops;
        assert_eq!(
            after.total(),
            before.total(),
            "proxy: poll_transmit dropped what it meant to send: {:?}",
            moved(&before, after)
        );
        let t = t?;
        assert!(t.len <= MAX_DATAGRAM, "transmit of {} bytes", t.len);
        assert_eq!(t.local, Some(PROXY), "proxy sent {t:?} from elsewhere");
        let k = uplink_of(t.remote)
            .unwrap_or_else(|| panic!("proxy sent {t:?} to an address it never heard from"));
        let d = self.buf[..t.len].to_vec();
        if is_transport(&d) && self.paths.contains(&t.path) {
            assert_eq!(
                self.paths[k], t.path,
                "proxy sent path {}'s datagram to uplink {k}'s address {}",
                t.path, t.remote
            );
        }
        Some((t, k, d))
    }

    /// The proxy handles a datagram, with every accounting check; what it hands out is
    /// drained (its answers are not).
    fn server_handles(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Accepted, DropReason> {
        let sealed = datagram.to_vec();
        let before = self.server.stats().drops.clone();
        let r = self
            .server
            .handle_datagram(self.now, from, Some(PROXY), datagram);
        let cookie = matches!(r, Ok(Accepted::Handshake { member: None }));
        check_counted("proxy", &before, &self.server.stats().drops, &r, cookie);
        match r {
            Ok(Accepted::Transport { member }) => {
                assert_eq!(member, MemberId(0));
                self.note_accepted(TO_SERVER, sealed);
            }
            Ok(Accepted::Handshake { member }) => {
                assert!(member.is_none_or(|m| m == MemberId(0)), "{r:?}");
            }
            Err(_) => {}
        }
        self.drain_server_packets();
        self.drain_events();
        r
    }

    /// Delivers a datagram to the proxy, then everything the proxy wants to send then
    /// (answers, acks) to the gateway (unless `lose` says it is lost). `sent` is true for
    /// a datagram the gateway sent (a refusal is then noted for the exchange's checks).
    fn deliver_to_server(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        sent: bool,
    ) -> Result<Accepted, DropReason> {
        let r = self.server_handles(from, datagram);
        if let (Err(e), true) = (r, sent) {
            self.trace.refuse(TO_SERVER, e);
        }
        self.drain_server();
        r
    }

    /// Delivers everything the proxy wants to send now to the gateway; returns how many.
    fn drain_server(&mut self) -> usize {
        let mut n = 0;
        while let Some((_, k, mut d)) = self.server_transmit() {
            n += 1;
            assert!(
                n <= MAX_TRANSMITS_AT_ONCE,
                "the proxy wants to send more than {MAX_TRANSMITS_AT_ONCE} datagrams at one \
                 instant"
            );
            self.record(TO_CLIENT, k, &d);
            if self.lose.1 > 0 {
                self.lose.1 -= 1;
                self.trace.lost[TO_CLIENT] += 1;
                continue;
            }
            let r = self.deliver_to_client(k, &mut d);
            if let Err(e) = r {
                self.trace.refuse(TO_CLIENT, e);
            }
        }
        n
    }

    /// Delivers a datagram to the gateway on uplink `k`'s path, with every accounting
    /// check.
    fn deliver_to_client(&mut self, k: usize, datagram: &mut [u8]) -> Result<Received, DropReason> {
        let sealed = datagram.to_vec();
        let before = self.client.stats().drops.clone();
        let r = self
            .client
            .handle_datagram(self.now, self.paths[k], datagram);
        check_counted("gateway", &before, &self.client.stats().drops, &r, false);
        if let Ok(Received::Transport) = r {
            self.note_accepted(TO_CLIENT, sealed);
        }
        self.drain_client_packets();
        self.drain_events();
        r
    }

    /// Sends a datagram the gateway wrote on its path `t.path` (lost if `lose` says so).
    fn send_up(&mut self, t: Transmit, mut d: Vec<u8>) {
        let k = if self.paths[0] == t.path { 0 } else { 1 };
        let from = BINDINGS[k][self.binding[k]];
        self.record(TO_SERVER, from, &d);
        if self.lose.0 > 0 {
            self.lose.0 -= 1;
            self.trace.lost[TO_SERVER] += 1;
            return;
        }
        let _ = self.deliver_to_server(SOURCES[from], &mut d, true);
    }

    fn check_handshakes(&self) -> Result<(), Stop> {
        if self.handshake_cost() > self.budget.handshakes_until {
            Err(Stop::Handshakes)
        } else {
            Ok(())
        }
    }

    /// Both sides send what they want and get what the other sent, until neither wants
    /// to send more. With `timers`, due timers run first, and after it no timer may be
    /// left in the past.
    fn exchange(&mut self, timers: bool) -> Result<(), Stop> {
        let now = self.now;
        let mut late: Option<String> = None;
        let (mut from_client, mut from_server) = (0usize, 0usize);
        let initiations = self.client.stats().handshakes_sent;
        let mut looped = false;
        loop {
            if timers {
                if self.client.poll_timeout().is_some_and(|t| t <= now) {
                    self.client.handle_timeout(now);
                }
                if self.server.poll_timeout().is_some_and(|t| t <= now) {
                    self.server.handle_timeout(now);
                }
                self.drain_events();
            }
            if let Some((t, d)) = self.client_transmit() {
                from_client += 1;
                assert!(
                    from_client <= MAX_TRANSMITS_AT_ONCE,
                    "the gateway wants to send more than {MAX_TRANSMITS_AT_ONCE} datagrams at \
                     one instant"
                );
                self.send_up(t, d);
                let n = self.client.stats().handshakes_sent - initiations;
                if n > MAX_INITIATIONS_AT_ONCE && !looped {
                    looped = true;
                    self.handshake_loop(n);
                }
                self.check_handshakes()?;
                continue;
            }
            let n = self.drain_server();
            if n > 0 {
                from_server += n;
                assert!(
                    from_server <= MAX_TRANSMITS_AT_ONCE,
                    "the proxy wants to send more than {MAX_TRANSMITS_AT_ONCE} datagrams at one \
                     instant"
                );
                continue;
            }
            self.check_paths();
            if !timers {
                return Ok(());
            }
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
        }
    }

    /// The gateway sent `n` initiations at one instant: each retry was answered at once with
    /// something that made it retry again (a cookie for another address, say). An event
    /// loop would spin on it at the speed of the round trip.
    fn handshake_loop(&mut self, n: u64) {
        let what = format!(
            "handshake loop: the gateway sent {n} initiations at one instant ({} cookie replies \
             taken so far; liveness {:?}; paths {:?})",
            self.client.stats().cookies_received,
            self.client.liveness(),
            self.paths,
        );
        if strict_handshakes() {
            panic!("{what}");
        }
        // Once per process: the fuzzer finds many.
        static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("session_pair: {what} (counted from now on, not reported again)");
        }
        self.cost.handshake_loops += 1;
    }

    /// Runs due timers and delivers everything both sides want to send, without moving
    /// time; then checks that no timer is left in the past.
    pub fn pump(&mut self) -> Result<(), Stop> {
        self.exchange(true)
    }

    /// After due timers ran and both sides sent all they wanted, a timer offered for now
    /// or earlier (an event loop would wake up at once for it), described.
    fn timer_in_the_past(&self) -> Option<String> {
        if let Some(t) = self.client.poll_timeout().filter(|&t| t <= self.now) {
            return Some(format!(
                "gateway: a timer {:?} in the past survived handle_timeout and poll_transmit \
                 ({:?}, connected {}, unanswered handshakes {:?}, paths {:?})",
                self.now - t,
                self.client.liveness(),
                self.client.is_connected(),
                self.client.unanswered_handshakes(self.now),
                self.client
                    .paths()
                    .iter()
                    .map(|p| (p.id(), p.state()))
                    .collect::<Vec<_>>(),
            ));
        }
        if let Some(t) = self.server.poll_timeout().filter(|&t| t <= self.now) {
            return Some(format!(
                "proxy: a timer {:?} in the past survived handle_timeout and poll_transmit \
                 (member {:?})",
                self.now - t,
                self.server.member(MemberId(0)).map(|m| (
                    m.connected,
                    m.paths
                        .iter()
                        .map(|p| (p.id(), p.state()))
                        .collect::<Vec<_>>()
                ))
            ));
        }
        None
    }

    /// Moves time forward as an event loop would: from one timer to the next, exchanging
    /// what is due at each (everything is delivered at once, so the session stays up).
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

    /// Gives the gateway `packet` from the LAN, checking why it is refused if it is.
    fn put_up(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let before = self.client.stats().drops.clone();
        let queued = self.client.queued();
        let r = self.client.handle_packet(self.now, packet);
        check_counted(
            "gateway handle_packet",
            &before,
            &self.client.stats().drops,
            &r,
            false,
        );
        match r {
            Ok(()) => self.put_in[TO_SERVER].insert(packet),
            Err(DropReason::BadInnerPacket) => {
                assert!(ip::check(packet).is_err(), "well-formed packet refused")
            }
            Err(DropReason::PacketTooLarge) => assert!(
                ip::check(packet).is_ok() && packet.len() > usize::from(MTU),
                "packet of {} bytes refused as too large",
                packet.len()
            ),
            Err(DropReason::QueueFull) => {
                assert!(queued >= QUEUE_SLOTS, "queue full with {queued} packets")
            }
            Err(DropReason::NoSession) => {}
            Err(other) => panic!("gateway refused a LAN packet as {other}"),
        }
        r
    }

    /// Gives the proxy `packet` from the Internet, checking why it is refused if it is.
    fn put_down(&mut self, packet: &[u8]) -> Result<(), DropReason> {
        let before = self.server.stats().drops.clone();
        let queued = self.server.member(MemberId(0)).map_or(0, |m| m.queued);
        let r = self.server.handle_packet(self.now, packet);
        check_counted(
            "proxy handle_packet",
            &before,
            &self.server.stats().drops,
            &r,
            false,
        );
        match r {
            Ok(m) => {
                assert_eq!(m, MemberId(0));
                assert!(is_member(ip::destination(packet)), "misrouted");
                self.put_in[TO_CLIENT].insert(packet);
            }
            Err(DropReason::BadInnerPacket) => {
                assert!(ip::check(packet).is_err(), "well-formed packet refused")
            }
            Err(DropReason::PacketTooLarge) => assert!(
                ip::check(packet).is_ok() && packet.len() > usize::from(MTU),
                "packet of {} bytes refused as too large",
                packet.len()
            ),
            Err(DropReason::QueueFull) => {
                assert!(queued >= QUEUE_SLOTS, "queue full with {queued} packets")
            }
            Err(DropReason::NoMember) => assert!(
                !is_member(ip::destination(packet)),
                "packet for the member refused as for no member"
            ),
            Err(DropReason::MemberOffline) => {
                assert!(is_member(ip::destination(packet)), "misrouted")
            }
            Err(other) => panic!("proxy refused an Internet packet as {other}"),
        }
        r.map(|_| ())
    }

    /// After an exchange, a packet one side accepted must have come out of the other,
    /// unless something on the way was lost or refused for a reason that explains it.
    fn check_arrived(&self, dir: usize, packet: &[u8]) {
        if self.trace.arrived[dir].iter().any(|p| p == packet) {
            assert!(
                dir == TO_CLIENT || is_member(ip::source(packet)),
                "spoofed packet delivered"
            );
            return;
        }
        if self.trace.lost[dir] > 0 {
            return;
        }
        let t = &self.trace;
        let excused = t.refused(dir, DropReason::UnknownSession)
            || t.refused(dir, DropReason::Expired)
            || (dir == TO_SERVER
                && t.refused(dir, DropReason::SpoofedSource)
                && !is_member(ip::source(packet)))
            // Sent on a path the gateway closed (a current path's datagram reaching another
            // uplink fails `server_transmit`'s check).
            || (dir == TO_CLIENT && t.refused(dir, DropReason::Unexpected));
        assert!(
            excused,
            "{} packet accepted by the {} never came out of the {} (nothing lost; \
             refusals {:?}): {}",
            ["upstream", "downstream"][dir],
            ["gateway", "proxy"][dir],
            ["proxy", "gateway"][dir],
            t.refusals(dir),
            hex(packet)
        );
    }

    /// A packet that did not come out at once may wait, legitimately, in its sender's
    /// pacer or window, or in the receiver's reorder buffer behind one that does: the
    /// timers let it out within the reorder buffer's longest wait.
    fn let_out(&mut self, dir: usize, packet: &[u8]) -> Result<(), Stop> {
        if self.trace.arrived[dir].iter().any(|p| p == packet) {
            return Ok(());
        }
        self.live(Duration::from_millis(1100))
    }

    /// The gateway is given `packet`; the proxy must hand it out intact, or it is refused
    /// (or lost) for a reason it can have.
    fn seal_up(&mut self, packet: &[u8]) -> Result<(), Stop> {
        self.trace.clear();
        if self.put_up(packet).is_err() {
            return Ok(());
        }
        self.exchange(false)?;
        self.let_out(TO_SERVER, packet)?;
        self.check_arrived(TO_SERVER, packet);
        Ok(())
    }

    /// The proxy is given `packet`; the gateway must hand it out intact, or it is refused
    /// (or lost) for a reason it can have.
    fn seal_down(&mut self, packet: &[u8]) -> Result<(), Stop> {
        self.trace.clear();
        if self.put_down(packet).is_err() {
            return Ok(());
        }
        self.exchange(false)?;
        self.let_out(TO_CLIENT, packet)?;
        self.check_arrived(TO_CLIENT, packet);
        Ok(())
    }

    /// `FORGE`: a captured datagram to the proxy (or zeros) made an initiation's length,
    /// `mask` XORed in at `at`, with the mac1 anyone can compute.
    fn forge(&mut self, from: usize, idx: u8, at: usize, mask: &[u8]) {
        let mut d = self
            .captured(TO_SERVER, idx)
            .map(|c| c.bytes)
            .unwrap_or_default();
        d.resize(HANDSHAKE_INIT_LEN, 0);
        for (i, m) in mask.iter().enumerate() {
            d[(at + i) % HANDSHAKE_INIT_LEN] ^= m;
        }
        session::write_mac1(&self.proxy_public, &mut d);
        self.record(TO_SERVER, from, &d);
        let _ = self.deliver_to_server(SOURCES[from], &mut d, false);
    }

    /// `TWIN`: a second gateway with the same keys, its clock `offset_ms` off the
    /// gateway's, sends one initiation from `from`. The proxy's answer is only captured:
    /// the twin never confirms, so the proxy keeps the gateway's session (and the gateway
    /// stays connected, which spares the next input a handshake).
    fn twin(&mut self, from: usize, offset_ms: i16) {
        let wall = WALL_CLOCK_US + (self.now - self.origin).as_micros() as u64;
        let wall = wall.saturating_add_signed(i64::from(offset_ms) * 1000);
        let mut twin = Client::new(client_config(self.proxy_public, 1), self.now, wall, 2);
        twin.open_path(self.now, PROXY, PathSettings::default());
        let Some(t) = twin.poll_transmit(self.now, &mut self.buf) else {
            return;
        };
        self.twin_handshakes += twin.stats().handshakes_sent;
        let mut d = self.buf[..t.len].to_vec();
        self.record(TO_SERVER, from, &d);
        if let Ok(Accepted::Handshake { .. }) = self.server_handles(SOURCES[from], &mut d) {
            // Answers come first out of the proxy: this one is the twin's.
            if let Some((_, k, answer)) = self.server_transmit() {
                self.record(TO_CLIENT, k, &answer);
            }
        }
    }

    /// `REPATH`: uplink `k`'s path is closed and a new one opened in its place.
    fn repath(&mut self, k: usize) {
        self.client.close_path(self.paths[k]);
        let id = self.client.open_path(self.now, PROXY, settings(k));
        assert!(
            !self.paths.contains(&id),
            "gateway gave path id {id} to two paths"
        );
        self.note_opened(id);
        self.paths[k] = id;
    }

    /// Brings the pair back to a working session after an input: a new handshake if the
    /// input broke it (with time running), rebuilt as a last resort.
    fn settle(&mut self) {
        self.forget_input();
        self.lose = (0, 0);
        let start = self.handshake_cost();
        self.budget = Budget {
            live: Duration::MAX,
            wakeups: 1000,
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
        self.trace.clear();
    }

    /// Whether a packet gets through both ways right now.
    fn works(&mut self) -> bool {
        let up = ipv4_packet(40, 0xfeed);
        let down = downstream(&up);
        for (dir, packet) in [(TO_SERVER, &up), (TO_CLIENT, &down)] {
            self.trace.clear();
            let put = if dir == TO_SERVER {
                self.put_up(packet)
            } else {
                self.put_down(packet)
            };
            if put.is_err() || self.exchange(false).is_err() {
                return false;
            }
            if !self.trace.arrived[dir].contains(packet) {
                return false;
            }
        }
        true
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
        t.handshake_loops += u64::from(c.handshake_loops > 0);
    }

    fn script(&mut self, input: &[u8]) -> Result<(), Stop> {
        let mut r = Reader(input);
        while let Some(code) = r.u8() {
            match code % op::COUNT {
                op::TO_SERVER => {
                    let from = SOURCES[usize::from(r.u8().unwrap_or(0)) % 4];
                    let mut d = r.bytes_u16().to_vec();
                    let _ = self.deliver_to_server(from, &mut d, false);
                }
                op::TO_CLIENT => {
                    let k = usize::from(r.u8().unwrap_or(0) % 2);
                    let mut d = r.bytes_u16().to_vec();
                    let _ = self.deliver_to_client(k, &mut d);
                }
                op::SEAL_UP => {
                    let p = r.bytes_u16().to_vec();
                    self.seal_up(&p)?;
                }
                op::SEAL_DOWN => {
                    let p = r.bytes_u16().to_vec();
                    self.seal_down(&p)?;
                }
                op::MUTATE => {
                    let dir = usize::from(r.u8().unwrap_or(0) % 2);
                    let idx = r.u8().unwrap_or(0);
                    let at = usize::from(r.u16().unwrap_or(0));
                    let cut = usize::from(r.u8().unwrap_or(0));
                    let n = usize::from(r.u8().unwrap_or(0));
                    let mask = r.take(n).to_vec();
                    let Some(Capture { on, bytes: mut d }) = self.captured(dir, idx) else {
                        continue;
                    };
                    for (i, m) in mask.iter().enumerate() {
                        if !d.is_empty() {
                            let j = (at + i) % d.len();
                            d[j] ^= m;
                        }
                    }
                    d.truncate(d.len().saturating_sub(cut));
                    self.deliver(dir, on, &mut d);
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
                    let Some(Capture { on, bytes: mut d }) = self.captured(dir, idx) else {
                        continue;
                    };
                    d.extend_from_slice(&tail);
                    self.deliver(dir, on, &mut d);
                }
                op::FORGE => {
                    let from = usize::from(r.u8().unwrap_or(0)) % 4;
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
                    let from = usize::from(r.u8().unwrap_or(0)) % 4;
                    // At most 1 s ahead: the gateway's own initiations are stale until
                    // its clock catches up, and each costs two Diffie-Hellmans.
                    let offset = (r.u16().unwrap_or(0) as i16).min(1000);
                    if self.handshakes_allowed {
                        self.twin(from, offset);
                    }
                }
                op::REBIND => {
                    let k = usize::from(r.u8().unwrap_or(0) % 2);
                    self.binding[k] ^= 1;
                }
                op::REPATH => {
                    let k = usize::from(r.u8().unwrap_or(0) % 2);
                    self.repath(k);
                }
                _ => unreachable!("op % COUNT"),
            }
            self.check_handshakes()?;
        }
        Ok(())
    }

    /// Delivers a captured (and perhaps altered) datagram where it was captured.
    fn deliver(&mut self, dir: usize, on: usize, d: &mut [u8]) {
        if dir == TO_SERVER {
            let _ = self.deliver_to_server(SOURCES[on], d, false);
        } else {
            let _ = self.deliver_to_client(on, d);
        }
    }
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

/// An inner packet one side handed out towards `dir`: well-formed, from (to the proxy) or
/// for (to the gateway) the member, and one the other side was given.
fn check_handed_out(put_in: &[PutIn; 2], trace: &mut Trace, dir: usize, p: &[u8]) {
    let (side, other) = if dir == TO_SERVER {
        ("proxy", "gateway")
    } else {
        ("gateway", "proxy")
    };
    ip::check(p).unwrap_or_else(|e| panic!("{side} handed out a malformed IP packet: {e}"));
    let member_end = if dir == TO_SERVER {
        ip::source(p)
    } else {
        ip::destination(p)
    };
    assert!(
        is_member(member_end),
        "{side} handed out a packet with the member's end {member_end:?}: {}",
        hex(p)
    );
    assert!(
        put_in[dir].contains(p),
        "{side} handed out a packet the {other} was never given: {}",
        hex(p)
    );
    if trace.arrived[dir].len() < ARRIVED_CAP {
        trace.arrived[dir].push(p.to_vec());
    }
}

fn settings(uplink: usize) -> PathSettings {
    PathSettings {
        probe_interval: PROBE_INTERVALS[uplink],
    }
}

fn client_config(proxy_key: PublicKey, queue_slots: usize) -> ClientConfig {
    ClientConfig {
        static_key: SecretKey::from_bytes(MEMBER_KEY),
        proxy_key,
        psk: Some(SharedSecret::from_bytes(PSK)),
        suite: CipherSuite::Aes256Gcm,
        limits: limits(),
        mtu: MTU,
        queue_slots,
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
    pub fn to_client(out: &mut Vec<u8>, uplink: u8, d: &[u8]) {
        out.extend([op::TO_CLIENT, uplink]);
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

    /// `REBIND`.
    pub fn rebind(out: &mut Vec<u8>, uplink: u8) {
        out.extend([op::REBIND, uplink]);
    }

    /// `REPATH`.
    pub fn repath(out: &mut Vec<u8>, uplink: u8) {
        out.extend([op::REPATH, uplink]);
    }

    fn len_bytes(out: &mut Vec<u8>, d: &[u8]) {
        out.extend((d.len() as u16).to_le_bytes());
        out.extend(d);
    }
}
