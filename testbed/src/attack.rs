//! An attacker for the testbed: floods the proxy's UDP port from inside a namespace, and
//! captures a real handshake initiation to replay.
//!
//! Kinds of flood ([`FloodKind`]):
//!
//! * `random`: random bytes of random length (1–256 B); every second datagram starts with
//!   the protocol's version byte and a valid message type, so it gets past the first check;
//! * `replay`: exact copies of a captured initiation;
//! * `mangled`: copies of a captured initiation in turn exact, truncated (to a random
//!   length) and bit-flipped (one random bit);
//! * `mac1`: initiations with random ephemeral and static parts and a valid mac1, which
//!   anyone who knows the proxy's public key (it is in every bundle) can compute.
//!
//! A flood is paced (`sendmmsg` batches of at most [`BATCH`], at most about 2 000 wake-ups
//! a second) at a bounded rate for a bounded time, and only from a testbed namespace, so
//! its traffic never leaves the co-op. The report says the rate really reached, and what
//! the proxy answered (handshake responses, cookie replies).
//!
//! A capture ([`Capture`]) is an AF_PACKET socket on a node's interface (the proxy's
//! `eth0` by default) that keeps the first UDP payload to the proxy's port that has the
//! length, version and type of a handshake initiation: one a real gateway sent.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use linkpool_protocol::keys::PublicKey;
use linkpool_protocol::wire::{self, HANDSHAKE_INIT_LEN, MessageType};

use crate::{Error, PREFIX_STEM, netns};

/// Datagrams handed to the kernel in one `sendmmsg`.
pub const BATCH: usize = 64;
/// Highest flood rate the tool accepts, datagrams per second.
pub const MAX_RATE: u64 = 200_000;
/// Longest flood the tool accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// Most source sockets (ports) one flood may use.
pub const MAX_SOURCES: usize = 64;
/// Longest random datagram of a `random` flood.
const RANDOM_MAX_LEN: usize = 256;
/// Shortest sleep between batches: bounds the attacker's own wake-ups.
const MIN_SLEEP: Duration = Duration::from_micros(500);

/// What a flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// Random datagrams.
    Random,
    /// Exact copies of a captured initiation.
    Replay,
    /// Exact, truncated and bit-flipped copies of a captured initiation, in turn.
    Mangled,
    /// Initiations with random keys and a valid mac1.
    Mac1,
}

impl FloodKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [FloodKind; 4] = [
        FloodKind::Random,
        FloodKind::Replay,
        FloodKind::Mangled,
        FloodKind::Mac1,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Random => "random",
            FloodKind::Replay => "replay",
            FloodKind::Mangled => "mangled",
            FloodKind::Mac1 => "mac1",
        }
    }

    /// Whether it needs a captured initiation.
    pub fn needs_packet(self) -> bool {
        matches!(self, FloodKind::Replay | FloodKind::Mangled)
    }

    /// Whether it needs the proxy's public key.
    pub fn needs_proxy_key(self) -> bool {
        self == FloodKind::Mac1
    }

    /// Names of the variants counted in [`FloodReport::variants`].
    fn variant_names(self) -> &'static [&'static str] {
        match self {
            FloodKind::Random => &["raw", "typed"],
            FloodKind::Replay => &["exact"],
            FloodKind::Mangled => &["exact", "truncated", "flipped"],
            FloodKind::Mac1 => &["forged"],
        }
    }
}

impl fmt::Display for FloodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FloodKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        FloodKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::new(format!(
                    "unknown flood kind `{s}` (known: random, replay, mangled, mac1)"
                ))
            })
    }
}

/// What to send, where, how fast, for how long.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// The kind of datagrams.
    pub kind: FloodKind,
    /// Where to (the proxy's address and port).
    pub target: SocketAddr,
    /// Datagrams per second (1 to [`MAX_RATE`]).
    pub rate: u64,
    /// How long (up to [`MAX_DURATION`]).
    pub duration: Duration,
    /// The captured initiation (`replay`, `mangled`).
    pub packet: Option<Vec<u8>>,
    /// The proxy's public key (`mac1`).
    pub proxy_key: Option<PublicKey>,
    /// Number of source sockets (ports), used in turn batch by batch.
    pub sources: usize,
    /// Seeds the random parts (0: from the clock).
    pub seed: u64,
}

impl FloodSpec {
    /// A spec with one source socket and a clock seed; set `packet` or `proxy_key` as the
    /// kind needs.
    pub fn new(kind: FloodKind, target: SocketAddr, rate: u64, duration: Duration) -> FloodSpec {
        FloodSpec {
            kind,
            target,
            rate,
            duration,
            packet: None,
            proxy_key: None,
            sources: 1,
            seed: 0,
        }
    }

    fn check(&self) -> Result<(), Error> {
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(Error::new(format!(
                "flood rate {} /s: give 1 to {MAX_RATE}",
                self.rate
            )));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(Error::new(format!(
                "flood duration {:?}: give more than 0 and at most {MAX_DURATION:?}",
                self.duration
            )));
        }
        if !(1..=MAX_SOURCES).contains(&self.sources) {
            return Err(Error::new(format!(
                "{} sources: give 1 to {MAX_SOURCES}",
                self.sources
            )));
        }
        if self.kind.needs_packet() {
            match &self.packet {
                None => {
                    return Err(Error::new(format!(
                        "a {} flood needs a captured initiation (`attack capture`)",
                        self.kind
                    )));
                }
                Some(p) if p.is_empty() || p.len() > wire::MAX_DATAGRAM => {
                    return Err(Error::new(format!(
                        "captured packet of {} bytes: not a datagram",
                        p.len()
                    )));
                }
                Some(_) => {}
            }
        }
        if self.kind.needs_proxy_key() && self.proxy_key.is_none() {
            return Err(Error::new(
                "a mac1 flood needs the proxy's public key (a member bundle has it)",
            ));
        }
        Ok(())
    }
}

/// What a flood did.
#[derive(Debug, Clone)]
pub struct FloodReport {
    /// The kind.
    pub kind: FloodKind,
    /// The target.
    pub target: SocketAddr,
    /// The rate asked for, datagrams per second.
    pub rate_asked: u64,
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Their bytes (UDP payload).
    pub bytes: u64,
    /// Datagrams the kernel refused (e.g. ICMP port unreachable reported on a send).
    pub send_errors: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// Sent per variant of the kind (e.g. exact, truncated, flipped).
    pub variants: Vec<(&'static str, u64)>,
    /// Handshake responses the proxy sent back.
    pub responses: u64,
    /// Cookie replies the proxy sent back.
    pub cookies: u64,
    /// Other datagrams the proxy sent back.
    pub other_replies: u64,
    /// Replies (counted above too) that came from another address than the target: a
    /// multi-homed proxy answering from the wrong address (the gateway would drop them).
    pub replies_from_elsewhere: u64,
    /// CPU time the flooding thread used (user + system: making and sending datagrams).
    pub cpu: Duration,
}

impl FloodReport {
    /// The rate really reached, datagrams per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for FloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variants: Vec<String> = self
            .variants
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        write!(
            f,
            "{} flood to {}: {} datagrams ({}) in {:.2} s = {:.0}/s (asked {}/s), {:.1} Mbit/s, \
             {} send errors, attacker CPU {:.0} % of a core; proxy answered {} handshake responses, {} cookie replies, {} other ({} from another address)",
            self.kind,
            self.target,
            self.sent,
            variants.join(", "),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.rate_asked,
            self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6,
            self.send_errors,
            self.cpu.as_secs_f64() * 100.0 / self.elapsed.as_secs_f64().max(1e-9),
            self.responses,
            self.cookies,
            self.other_replies,
            self.replies_from_elsewhere
        )
    }
}

/// A small seedable PRNG (SplitMix64): the datagrams need variety, not secrecy.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let seed = if seed != 0 {
            seed
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                ^ (u64::from(std::process::id()) << 32)
        };
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is negligible for small n).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

/// mac1 of initiations to one proxy, as `session::write_mac1` computes it (HMAC-SHA256
/// with a key derived by HKDF-SHA256, truncated), but with the key derived once and the
/// hash compiled optimised: `write_mac1` derives the key on every call, and its generic
/// HMAC is compiled in the protocol crate at that crate's opt-level (0 in debug builds
/// until the workspace's Cargo.toml raised it to 2: about 40 µs a datagram then, too slow
/// to forge 20 000 a second). snow's SHA-256 behind its `Hash` trait object is compiled in
/// snow, optimised with the other dependencies. [`Generator::new`] checks it against `write_mac1` before use.
struct FastMac1 {
    hash: Box<dyn snow::types::Hash>,
    key: [u8; 32],
}

impl FastMac1 {
    fn new(proxy: &PublicKey) -> Option<FastMac1> {
        use snow::resolvers::CryptoResolver as _;
        let mut hash =
            snow::resolvers::DefaultResolver.resolve_hash(&snow::params::HashChoice::SHA256)?;
        // HKDF-SHA256 (RFC 5869) of the proxy's key, salt "linkpool v1", info "mac1":
        // PRK = HMAC(salt, key), OKM = HMAC(PRK, info || 1), one block of 32 bytes.
        let mut prk = [0u8; 32];
        hash.hmac(b"linkpool v1", &proxy.0, &mut prk);
        let mut key = [0u8; 32];
        hash.hmac(&prk, b"mac1\x01", &mut key);
        Some(FastMac1 { hash, key })
    }

    fn write(&mut self, init: &mut [u8]) {
        let m1_at = HANDSHAKE_INIT_LEN - 2 * wire::MAC_LEN;
        let mut full = [0u8; 32];
        self.hash.hmac(&self.key, &init[..m1_at], &mut full);
        init[m1_at..m1_at + wire::MAC_LEN].copy_from_slice(&full[..wire::MAC_LEN]);
        init[m1_at + wire::MAC_LEN..HANDSHAKE_INIT_LEN].fill(0);
    }
}

/// Makes the datagrams of one kind.
struct Generator {
    kind: FloodKind,
    packet: Vec<u8>,
    proxy_key: Option<PublicKey>,
    /// The fast mac1, when it agrees with `write_mac1`.
    fast_mac1: Option<FastMac1>,
    rng: Rng,
    n: u64,
}

impl Generator {
    fn new(kind: FloodKind, packet: Vec<u8>, proxy_key: Option<PublicKey>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let fast_mac1 = proxy_key.as_ref().and_then(|key| {
            let mut fast = FastMac1::new(key)?;
            let mut a = [0u8; HANDSHAKE_INIT_LEN];
            rng.fill(&mut a);
            let mut b = a;
            linkpool_protocol::session::write_mac1(key, &mut a);
            fast.write(&mut b);
            (a == b).then_some(fast)
        });
        Generator {
            kind,
            packet,
            proxy_key,
            fast_mac1,
            rng,
            n: 0,
        }
    }

    /// Writes the next datagram into `buf`; returns its length and variant index.
    fn next(&mut self, buf: &mut [u8]) -> (usize, usize) {
        let n = self.n;
        self.n += 1;
        match self.kind {
            FloodKind::Random => {
                let len = 1 + self.rng.below(RANDOM_MAX_LEN);
                self.rng.fill(&mut buf[..len]);
                let typed = n % 2 == 1;
                if typed {
                    buf[0] = wire::VERSION;
                    if len > 1 {
                        // Message types are 1 to 8.
                        buf[1] = 1 + self.rng.below(8) as u8;
                    }
                }
                (len, usize::from(typed))
            }
            FloodKind::Replay => {
                buf[..self.packet.len()].copy_from_slice(&self.packet);
                (self.packet.len(), 0)
            }
            FloodKind::Mangled => {
                let len = self.packet.len();
                buf[..len].copy_from_slice(&self.packet);
                match n % 3 {
                    0 => (len, 0),
                    1 if len > 1 => (1 + self.rng.below(len - 1), 1),
                    1 => (len, 0),
                    _ => {
                        let bit = self.rng.below(len * 8);
                        buf[bit / 8] ^= 1 << (bit % 8);
                        (len, 2)
                    }
                }
            }
            FloodKind::Mac1 => {
                let buf = &mut buf[..HANDSHAKE_INIT_LEN];
                self.rng.fill(buf);
                // The header as session::initiate writes it: version, type, suite
                // (AES-256-GCM), a reserved zero, then a random sender index.
                buf[0] = wire::VERSION;
                buf[1] = MessageType::HandshakeInit as u8;
                buf[2] = wire::CipherSuite::Aes256Gcm.to_byte();
                buf[3] = 0;
                if let Some(fast) = &mut self.fast_mac1 {
                    fast.write(buf);
                } else if let Some(key) = &self.proxy_key {
                    linkpool_protocol::session::write_mac1(key, buf);
                }
                (HANDSHAKE_INIT_LEN, 0)
            }
        }
    }
}

/// Runs a flood from inside namespace `ns` (a testbed namespace: its traffic stays in the
/// co-op) until its duration has passed or `stop` is set. Blocks.
pub fn flood(ns: &str, spec: &FloodSpec, stop: &AtomicBool) -> Result<FloodReport, Error> {
    spec.check()?;
    if !ns.starts_with(PREFIX_STEM) {
        return Err(Error::new(format!(
            "flood: `{ns}` is not a testbed namespace (they start with `{PREFIX_STEM}`)"
        )));
    }
    netns::within(ns, || run_flood(spec, stop))
        .map_err(|e| Error::new(format!("flood from {ns} to {}: {e}", spec.target)))
}

fn run_flood(spec: &FloodSpec, stop: &AtomicBool) -> io::Result<FloodReport> {
    let any: SocketAddr = match spec.target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut sockets = Vec::with_capacity(spec.sources);
    for _ in 0..spec.sources {
        // Not connected: a connected socket would hide replies the proxy sends from
        // another of its addresses (a multi-homed proxy answering from the wrong one).
        sockets.push(UdpSocket::bind(any)?);
    }
    let target = SockAddr::from(spec.target);
    // SAFETY: setting our own thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let mut generator = Generator::new(
        spec.kind,
        spec.packet.clone().unwrap_or_default(),
        spec.proxy_key,
        spec.seed,
    );
    let names = spec.kind.variant_names();
    let mut report = FloodReport {
        kind: spec.kind,
        target: spec.target,
        rate_asked: spec.rate,
        sent: 0,
        bytes: 0,
        send_errors: 0,
        elapsed: Duration::ZERO,
        variants: names.iter().map(|&n| (n, 0)).collect(),
        responses: 0,
        cookies: 0,
        other_replies: 0,
        replies_from_elsewhere: 0,
        cpu: Duration::ZERO,
    };
    let cpu_start = thread_cpu();
    let mut bufs = vec![[0u8; wire::MAX_DATAGRAM]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut kinds = [0usize; BATCH];
    let mut replies = [0u8; wire::MAX_DATAGRAM];
    // Datagrams per wake-up at least: bounds wake-ups to about 2 000 a second.
    let chunk = (spec.rate / 2000).clamp(1, BATCH as u64);
    let start = Instant::now();
    let mut next_socket = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= spec.duration || stop.load(Ordering::Relaxed) {
            report.elapsed = elapsed.min(spec.duration);
            break;
        }
        for s in &sockets {
            drain_replies(s, spec.target, &mut replies, &mut report);
        }
        // Datagrams (sent or refused) due by now.
        let due = (spec.rate as f64 * elapsed.as_secs_f64()) as u64;
        let done = report.sent + report.send_errors;
        if due < done + chunk {
            let next = start + Duration::from_secs_f64((done + chunk) as f64 / spec.rate as f64);
            let now = Instant::now();
            std::thread::sleep(next.saturating_duration_since(now).max(MIN_SLEEP));
            continue;
        }
        let n = ((due - done) as usize).min(BATCH);
        for i in 0..n {
            (lens[i], kinds[i]) = generator.next(&mut bufs[i]);
        }
        let socket = &sockets[next_socket];
        next_socket = (next_socket + 1) % sockets.len();
        let mut at = 0;
        while at < n {
            match send_batch(socket, &target, &bufs[at..n], &lens[at..n]) {
                Ok(k) => {
                    for i in at..at + k {
                        report.sent += 1;
                        report.bytes += lens[i] as u64;
                        report.variants[kinds[i]].1 += 1;
                    }
                    at += k.max(1);
                    if k == 0 {
                        report.send_errors += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The first datagram was refused (e.g. a pending ICMP error); go on.
                    report.send_errors += 1;
                    at += 1;
                }
            }
        }
    }
    // What the proxy answered to the last datagrams.
    std::thread::sleep(Duration::from_millis(50));
    for s in &sockets {
        drain_replies(s, spec.target, &mut replies, &mut report);
    }
    report.cpu = thread_cpu().saturating_sub(cpu_start);
    Ok(report)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: zeroed rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD on the calling thread with a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A socket address as the kernel takes it.
struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        // SAFETY: a zeroed sockaddr_storage is valid; we fill the family's fields.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

impl SockAddr {
    fn to_std(&self) -> Option<SocketAddr> {
        match i32::from(self.storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says it is a sockaddr_in.
                let sin = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says it is a sockaddr_in6.
                let sin6 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
            }
            _ => None,
        }
    }
}

/// One `sendmmsg` of datagrams to `to`; returns how many the kernel took.
fn send_batch(
    socket: &UdpSocket,
    to: &SockAddr,
    bufs: &[[u8; wire::MAX_DATAGRAM]],
    lens: &[usize],
) -> io::Result<usize> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .zip(lens)
        .map(|(b, &len)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: a zeroed msghdr is valid; we point it at one live iovec.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            // The kernel only reads the address.
            hdr.msg_name = &to.storage as *const _ as *mut libc::c_void;
            hdr.msg_namelen = to.len;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: msgs and the buffers they point to live for the duration of the call.
    let rc = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Counts (and discards) what came back, without blocking.
fn drain_replies(socket: &UdpSocket, target: SocketAddr, buf: &mut [u8], report: &mut FloodReport) {
    loop {
        let mut from = SockAddr::from(target);
        from.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: receiving into a live buffer and address of the given lengths.
        let n = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from.storage as *mut libc::sockaddr_storage).cast(),
                &mut from.len,
            )
        };
        if n < 0 {
            return; // EAGAIN: drained (or a transient error: next time).
        }
        let n = n as usize;
        if from.to_std() != Some(target) {
            report.replies_from_elsewhere += 1;
        }
        match (n >= 2).then(|| buf[1]) {
            Some(t) if t == MessageType::HandshakeResponse as u8 => report.responses += 1,
            Some(t) if t == MessageType::CookieReply as u8 => report.cookies += 1,
            _ => report.other_replies += 1,
        }
    }
}

/// The proxy's public key from a member bundle file (every member has one).
pub fn proxy_key_from_bundle(path: &Path) -> Result<PublicKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    linkpool_protocol::bundle::MemberBundle::parse(text.trim())
        .map(|b| b.proxy_public_key)
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// A captured datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The UDP payload.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub from: SocketAddr,
    /// Where to.
    pub to: SocketAddr,
}

/// An AF_PACKET socket on one interface of a node, watching for handshake initiations to
/// a UDP port. Open it before the gateway whose initiation you want starts.
pub struct Capture {
    fd: OwnedFd,
    port: u16,
    source: Option<IpAddr>,
    label: String,
}

impl Capture {
    /// Watches `device` in namespace `ns` for initiations to UDP port `port` (frames the
    /// interface receives or sends).
    pub fn open(ns: &str, device: &str, port: u16) -> Result<Capture, Error> {
        let label = format!("capture on {device} in {ns}");
        let fd = netns::within(ns, || open_packet_socket(device))
            .map_err(|e| Error::new(format!("{label}: {e}")))?;
        Ok(Capture {
            fd,
            port,
            source: None,
            label,
        })
    }

    /// Keeps only initiations from `source` (e.g. one router's WAN address).
    pub fn from_source(mut self, source: IpAddr) -> Capture {
        self.source = Some(source);
        self
    }

    /// Waits up to `timeout` for the next handshake initiation.
    pub fn next_initiation(&self, timeout: Duration) -> Result<Captured, Error> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(format!(
                    "{}: no handshake initiation to port {}{} within {timeout:?}",
                    self.label,
                    self.port,
                    self.source
                        .map(|s| format!(" from {s}"))
                        .unwrap_or_default()
                )));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: zeroed sockaddr_ll is valid; recvfrom fills it.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut addr_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address are live and sized as passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut addr as *mut libc::sockaddr_ll).cast(),
                    &mut addr_len,
                )
            };
            if n <= 0 {
                continue;
            }
            let Some(c) = parse_udp(u16::from_be(addr.sll_protocol), &buf[..n as usize]) else {
                continue;
            };
            let is_init = c.payload.len() == HANDSHAKE_INIT_LEN
                && c.payload[0] == wire::VERSION
                && c.payload[1] == MessageType::HandshakeInit as u8;
            if is_init && c.to.port() == self.port && self.source.is_none_or(|s| s == c.from.ip()) {
                return Ok(c);
            }
        }
    }
}

/// A cooked (`SOCK_DGRAM`) packet socket on `device` of the calling thread's namespace.
fn open_packet_socket(device: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(device).map_err(|_| io::Error::other("NUL in name"))?;
    // SAFETY: c string is NUL-terminated.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface `{device}`")));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::emulator::bind_packet_socket(fd, ifindex)?;
    Ok(sock)
}

/// The UDP datagram in an IPv4 or IPv6 packet (unfragmented, no IPv6 extension headers).
fn parse_udp(ethertype: u16, ip: &[u8]) -> Option<Captured> {
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let (src, dst, udp): (IpAddr, IpAddr, &[u8]) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)).min(ip.len());
            let fragmented = be16(ip, 6) & 0x3fff != 0;
            if ip[9] != 17 || fragmented || ihl < 20 || total < ihl {
                return None;
            }
            let a: [u8; 4] = ip[12..16].try_into().ok()?;
            let b: [u8; 4] = ip[16..20].try_into().ok()?;
            (a.into(), b.into(), &ip[ihl..total])
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            if ip[6] != 17 {
                return None;
            }
            let total = (40 + usize::from(be16(ip, 4))).min(ip.len());
            let a: [u8; 16] = ip[8..24].try_into().ok()?;
            let b: [u8; 16] = ip[24..40].try_into().ok()?;
            (a.into(), b.into(), &ip[40..total])
        }
        _ => return None,
    };
    if udp.len() < 8 {
        return None;
    }
    let len = usize::from(be16(udp, 4)).min(udp.len());
    if len < 8 {
        return None;
    }
    Some(Captured {
        payload: udp[8..len].to_vec(),
        from: SocketAddr::new(src, be16(udp, 0)),
        to: SocketAddr::new(dst, be16(udp, 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(kind: FloodKind, packet: Vec<u8>) -> Generator {
        Generator::new(kind, packet, Some(PublicKey([7; 32])), 42)
    }

    #[test]
    fn fast_mac1_is_write_mac1() {
        let mut rng = Rng::new(9);
        for _ in 0..20 {
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            let key = PublicKey(key);
            let mut fast = FastMac1::new(&key).expect("snow has SHA-256");
            let mut a = [0u8; HANDSHAKE_INIT_LEN];
            rng.fill(&mut a);
            let mut b = a;
            linkpool_protocol::session::write_mac1(&key, &mut a);
            fast.write(&mut b);
            assert_eq!(a, b);
        }
        assert!(generator(FloodKind::Mac1, Vec::new()).fast_mac1.is_some());
    }

    #[test]
    fn mangled_copies_are_exact_truncated_and_flipped_in_turn() {
        let packet: Vec<u8> = (0..HANDSHAKE_INIT_LEN as u8).collect();
        let mut g = generator(FloodKind::Mangled, packet.clone());
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        for round in 0..30 {
            let (len, variant) = g.next(&mut buf);
            assert_eq!(variant, round % 3);
            match variant {
                0 => assert_eq!(&buf[..len], &packet[..]),
                1 => {
                    assert!(len < packet.len() && len >= 1);
                    assert_eq!(&buf[..len], &packet[..len]);
                }
                _ => {
                    assert_eq!(len, packet.len());
                    let flipped: u32 = buf[..len]
                        .iter()
                        .zip(&packet)
                        .map(|(a, b)| (a ^ b).count_ones())
                        .sum();
                    assert_eq!(flipped, 1);
                }
            }
        }
    }

    #[test]
    fn forged_initiations_parse_and_carry_a_header_like_a_gateways() {
        let mut g = generator(FloodKind::Mac1, Vec::new());
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        let (len, _) = g.next(&mut buf);
        let (len2, _) = g.next(&mut buf[1024..]);
        assert_eq!((len, len2), (HANDSHAKE_INIT_LEN, HANDSHAKE_INIT_LEN));
        assert_ne!(buf[..len], buf[1024..1024 + len], "keys are random");
        assert_eq!(&buf[..4], &[wire::VERSION, 1, 0, 0]);
        assert!(matches!(
            wire::Message::parse(&buf[..len]),
            Ok(wire::Message::HandshakeInit(_))
        ));
        // mac2 is cleared, as a gateway without a cookie sends it.
        assert!(buf[len - wire::MAC_LEN..len].iter().all(|&b| b == 0));
    }

    #[test]
    fn random_datagrams_are_short_and_half_typed() {
        let mut g = generator(FloodKind::Random, Vec::new());
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        for n in 0..100 {
            let (len, typed) = g.next(&mut buf);
            assert!((1..=RANDOM_MAX_LEN).contains(&len));
            assert_eq!(typed, n % 2);
            if typed == 1 {
                assert_eq!(buf[0], wire::VERSION);
            }
        }
    }

    #[test]
    fn udp_payload_is_found_in_v4_and_v6_packets() {
        let mut v4 = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 100, 64, 2, 2, 203, 0, 113, 10,
        ];
        v4.extend_from_slice(&[0x30, 0x39, 0x1b, 0xcd, 0, 11, 0, 0, 1, 2, 3]);
        let total = v4.len() as u16;
        v4[2..4].copy_from_slice(&total.to_be_bytes());
        let c = parse_udp(0x0800, &v4).unwrap();
        assert_eq!(c.payload, [1, 2, 3]);
        assert_eq!(c.from, "100.64.2.2:12345".parse().unwrap());
        assert_eq!(c.to, "203.0.113.10:7117".parse().unwrap());
        let mut v6 = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        v6.extend_from_slice(&"2001:db8:2::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8:ff00::10".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x30, 0x39, 0x1b, 0xcd, 0, 10, 0, 0, 9, 9]);
        let c = parse_udp(0x86dd, &v6).unwrap();
        assert_eq!(c.payload, [9, 9]);
        assert_eq!(c.to.port(), 7117);
        // A fragment is not a datagram.
        v4[6] = 0x20;
        assert!(parse_udp(0x0800, &v4).is_none());
    }

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["203.0.113.10:7117", "[2001:db8:ff00::10]:7117"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(SockAddr::from(a).to_std(), Some(a));
        }
    }

    #[test]
    fn specs_are_bounded() {
        let to: SocketAddr = "203.0.113.10:7117".parse().unwrap();
        let ok = FloodSpec::new(FloodKind::Random, to, 1000, Duration::from_secs(1));
        assert!(ok.check().is_ok());
        for bad in [
            FloodSpec::new(FloodKind::Random, to, 0, Duration::from_secs(1)),
            FloodSpec::new(FloodKind::Random, to, MAX_RATE + 1, Duration::from_secs(1)),
            FloodSpec::new(FloodKind::Random, to, 10, MAX_DURATION * 2),
            FloodSpec::new(FloodKind::Replay, to, 10, Duration::from_secs(1)),
            FloodSpec::new(FloodKind::Mac1, to, 10, Duration::from_secs(1)),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let stop = AtomicBool::new(false);
        assert!(flood("not-a-testbed-ns", &ok, &stop).is_err());
    }
}
