//! The `session_pair` harness: a gateway (client) and a proxy (server) with fixed keys,
//! connected once, then fed whatever the fuzzer makes up, as a script of operations.
//!
//! Input format, read until the input runs out (lengths are clamped to what is left):
//!
//! | op (byte % 8) | body                                   | what it does                                  |
//! |---------------|----------------------------------------|-----------------------------------------------|
//! | 0 `TO_SERVER` | from:u8 len:u16le bytes                | raw datagram to the proxy, from address `from % 4` |
//! | 1 `TO_CLIENT` | path:u8 len:u16le bytes                | raw datagram to the gateway on path `path % 2` |
//! | 2 `SEAL_UP`   | len:u16le bytes                        | gateway seals `bytes` as an IP packet, proxy opens it |
//! | 3 `SEAL_DOWN` | len:u16le bytes                        | proxy seals, gateway opens                    |
//! | 4 `MUTATE`    | dir:u8 idx:u8 at:u16le cut:u8 n:u8 mask| a captured datagram, `mask` XORed in at `at`, `cut` bytes cut off the end, delivered again |
//! | 5 `ADVANCE`   | t:u16le                                | time moves `8 * (t & 0x7fff)` ms (at most 10 minutes per input in all): live, in 2 s steps at which timers run and both sides exchange what is due; or, with bit 15 set, in one jump with no timers run until the next `PUMP` (a gateway that slept; 4 jumps per input at most) |
//! | 6 `PUMP`      | (none)                                 | exchange without moving time                  |
//! | 7 `EXTEND`    | dir:u8 idx:u8 len:u16le bytes          | a captured datagram with `bytes` appended, delivered again |
//!
//! `dir` 0 means "towards the proxy", 1 "towards the gateway". Captured datagrams are the
//! ones seen while connecting (kept for the life of the process) plus the ones this input
//! produced.
//!
//! What every delivery checks (a failed check panics, which the fuzzer reports):
//! * every `Err(reason)` is counted exactly once under `reason`, and nothing else is counted
//!   (a cookie reply, the one `Ok` that counts a `cookie_required` drop, excepted);
//! * a packet handed out passes [`ip::check`] and lies inside the buffer; replies fit theirs;
//! * a transport datagram accepted once is never accepted again (replay protection);
//! * a packet one side sealed reaches the other side byte for byte, or is refused only for
//!   a reason a working session can have (keys gone or expired, not an IP packet).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_protocol::client::{Client, ClientConfig, Received, SEAL_OFFSET};
use linkpool_protocol::keys::{SecretKey, SharedSecret};
use linkpool_protocol::server::{MemberId, MemberKey, Server, ServerConfig, ServerEvent};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::{MAX_DATAGRAM, MessageType};
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
    /// Exchange pending datagrams.
    pub const PUMP: u8 = 6;
    /// Replay a captured datagram with bytes appended.
    pub const EXTEND: u8 = 7;
}

/// The gateway's fixed static key.
pub const MEMBER_KEY: [u8; 32] = [0x11; 32];
/// The proxy's fixed static key.
pub const PROXY_KEY: [u8; 32] = [0x22; 32];
/// The member's fixed PSK.
pub const PSK: [u8; 32] = [0x33; 32];

const P0: PathId = PathId(0);
const P1: PathId = PathId(1);
const TO_SERVER: usize = 0;
const TO_CLIENT: usize = 1;
/// Simulated time one input may pass with `ADVANCE`: a few rekeys and key expiries.
const MAX_TIME_PER_INPUT: Duration = Duration::from_secs(600);
/// `ADVANCE` jumps one input may make (later ones are skipped).
const MAX_JUMPS_PER_INPUT: u32 = 4;
/// Time step of a live `ADVANCE`: below [`Limits::dead_after`].
const LIVE_STEP: Duration = Duration::from_secs(2);
/// Datagrams one input may capture per direction.
const RECENT_CAP: usize = 32;

fn sources() -> [SocketAddr; 4] {
    [
        "198.51.100.7:40000".parse().expect("literal"),
        "203.0.113.9:5555".parse().expect("literal"),
        "[2001:db8::7]:40000".parse().expect("literal"),
        "198.51.100.7:40001".parse().expect("literal"),
    ]
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

/// A connected gateway/proxy pair and what they said to each other.
pub struct Pair {
    now: Instant,
    client: Client,
    server: Server,
    /// Datagrams seen while connecting, per direction; kept for the process's life.
    baseline: [Vec<Vec<u8>>; 2],
    /// Datagrams seen during the current input, per direction.
    recent: [Vec<Vec<u8>>; 2],
    /// Transport datagrams accepted so far, per direction (replay check).
    accepted: [HashSet<Vec<u8>>; 2],
    /// What `accepted` holds from connecting; restored at each input's start.
    accepted_baseline: [HashSet<Vec<u8>>; 2],
}

impl Pair {
    /// Builds the pair with the fixed keys and connects it (one handshake, one probe
    /// exchange, one data packet each way), keeping what went over the wire.
    pub fn new() -> Pair {
        let now = Instant::now();
        let member_key = SecretKey::from_bytes(MEMBER_KEY);
        let proxy_key = SecretKey::from_bytes(PROXY_KEY);
        let psk = SharedSecret::from_bytes(PSK);
        let limits = Limits::default();
        let server = Server::new(
            ServerConfig {
                static_key: proxy_key.clone(),
                members: vec![MemberKey {
                    public_key: member_key.public_key(),
                    psk: Some(psk.clone()),
                }],
                limits,
                // Low, so that a few replayed initiations put the proxy under load and
                // the cookie exchange is reachable.
                handshakes_per_second: 2,
            },
            now,
            [7; 32],
        );
        let mut client = Client::new(
            ClientConfig {
                static_key: member_key,
                proxy_key: proxy_key.public_key(),
                psk: Some(psk),
                suite: CipherSuite::Aes256Gcm,
                limits,
            },
            now,
            1_700_000_000_000_000,
            1,
        );
        client.add_path(P0, now);
        client.add_path(P1, now);
        let mut pair = Pair {
            now,
            client,
            server,
            baseline: Default::default(),
            recent: Default::default(),
            accepted: Default::default(),
            accepted_baseline: Default::default(),
        };
        pair.pump();
        assert!(pair.connected(), "fixed-key pair did not connect");
        let up = ipv4_packet(60, 1);
        pair.seal_up(&up);
        let down = ipv6_packet(80);
        pair.seal_down(&down);
        pair.advance(Duration::from_millis(1000));
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

    /// Drop counters so far: (gateway, proxy).
    pub fn drops(&self) -> (&DropCounters, &DropCounters) {
        (&self.client.stats().drops, &self.server.stats().drops)
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
        let all: Vec<&Vec<u8>> = self.baseline[dir]
            .iter()
            .chain(self.recent[dir].iter())
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[usize::from(idx) % all.len()].clone())
    }

    fn note_accepted(&mut self, dir: usize, sealed: Vec<u8>) {
        if is_transport(&sealed) {
            assert!(
                self.accepted[dir].insert(sealed.clone()),
                "replayed transport datagram accepted twice (dir {dir}): {}",
                hex(&sealed)
            );
        }
    }

    /// Delivers a datagram to the proxy, with every accounting check; a reply goes on to
    /// the gateway.
    fn deliver_to_server(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<ServerEvent, DropReason> {
        let sealed = datagram.to_vec();
        let mut reply = vec![0u8; MAX_DATAGRAM];
        let before = self.server.stats().drops.clone();
        let r = self
            .server
            .handle_datagram(self.now, from, datagram, &mut reply);
        let cookie = matches!(r, Ok(ServerEvent::Reply { member: None, .. }));
        check_counted("server", &before, &self.server.stats().drops, &r, cookie);
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
                let mut d = reply[..*len].to_vec();
                self.record(TO_CLIENT, &d);
                let _ = self.deliver_to_client(P0, &mut d);
            }
            Ok(ServerEvent::Consumed) => self.note_accepted(TO_SERVER, sealed),
            Err(_) => {}
        }
        r
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

    /// Runs due timers and delivers everything the gateway wants to send (and the proxy's
    /// answers), without moving time.
    pub fn pump(&mut self) {
        let from = sources()[0];
        for _ in 0..64 {
            let now = self.now;
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let Some(t) = self.client.poll_transmit(now, &mut buf) else {
                break;
            };
            assert!(t.len <= MAX_DATAGRAM, "transmit of {} bytes", t.len);
            let mut d = buf[..t.len].to_vec();
            self.record(TO_SERVER, &d);
            let _ = self.deliver_to_server(from, &mut d);
        }
    }

    /// Moves time forward and exchanges what is due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.pump();
    }

    /// Moves time forward in steps shorter than the dead-peer timeout, exchanging what
    /// is due at each (probes keep the session alive, as on a live link).
    pub fn live(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            let step = (end - self.now).min(LIVE_STEP);
            self.advance(step);
        }
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
        match self.deliver_to_server(sources()[0], &mut d) {
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

    /// Brings the pair back to a working session before an input: lets timers run (a
    /// gateway that hears nothing handshakes again), and rebuilds it as a last resort.
    fn settle(&mut self) {
        self.forget_input();
        for _ in 0..40 {
            if self.connected() && self.works() {
                return;
            }
            self.advance(Duration::from_millis(500));
        }
        *self = Pair::new();
    }

    /// Drops what one input captured, without allocating: an input that frees what it
    /// allocated does not send libFuzzer hunting for leaks.
    fn forget_input(&mut self) {
        for dir in [TO_SERVER, TO_CLIENT] {
            self.recent[dir].clear();
            let baseline = &self.accepted_baseline[dir];
            self.accepted[dir].retain(|d| baseline.contains(d));
        }
    }

    /// Whether a packet gets through both ways right now.
    fn works(&mut self) -> bool {
        let mut ok = true;
        let packet = ipv4_packet(40, 0xfeed);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(&packet);
        match self
            .client
            .seal_packet(self.now, P0, &mut buf, packet.len())
        {
            Ok(n) => {
                let mut d = buf[..n].to_vec();
                ok &= matches!(
                    self.deliver_to_server(sources()[0], &mut d),
                    Ok(ServerEvent::Packet { .. })
                );
            }
            Err(_) => ok = false,
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[SEAL_OFFSET..SEAL_OFFSET + packet.len()].copy_from_slice(&packet);
        match self
            .server
            .seal_packet(self.now, MemberId(0), &mut buf, packet.len())
        {
            Ok((_, n)) => {
                let mut d = buf[..n].to_vec();
                ok &= matches!(self.deliver_to_client(P0, &mut d), Ok(Received::Packet(_)));
            }
            Err(_) => ok = false,
        }
        ok
    }

    /// Runs one fuzz input (see the module docs for its format).
    pub fn run(&mut self, input: &[u8]) {
        self.settle();
        // Each key lifetime passed costs a handshake (two Diffie-Hellmans per side);
        // without a cap the fuzzer learns that hundreds of them make "new" inputs.
        let mut time_left = MAX_TIME_PER_INPUT;
        let mut jumps_left = MAX_JUMPS_PER_INPUT;
        let mut r = Reader(input);
        while let Some(code) = r.u8() {
            match code % 8 {
                op::TO_SERVER => {
                    let from = sources()[usize::from(r.u8().unwrap_or(0)) % 4];
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
                    let by = Duration::from_millis(u64::from(arg & 0x7fff) * 8).min(time_left);
                    time_left -= by;
                    if arg & 0x8000 != 0 {
                        // A long sleep means a new handshake: a few per input will do.
                        if jumps_left == 0 {
                            continue;
                        }
                        jumps_left -= 1;
                        // Nothing runs until the next PUMP (or the next input): datagrams
                        // can arrive at a peer whose timers have not fired yet.
                        self.now += by;
                    } else {
                        self.live(by);
                    }
                }
                op::PUMP => self.pump(),
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
                _ => unreachable!("op % 8"),
            }
        }
        self.forget_input();
    }

    fn deliver(&mut self, dir: usize, d: &mut [u8]) {
        if dir == TO_SERVER {
            let _ = self.deliver_to_server(sources()[0], d);
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

    /// `ADVANCE` by `8 * (t & 0x7fff)` milliseconds; live unless bit 15 is set.
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

    fn len_bytes(out: &mut Vec<u8>, d: &[u8]) {
        out.extend((d.len() as u16).to_le_bytes());
        out.extend(d);
    }
}
