//! Flows: the 5-tuple of an inner packet, a bounded table of the flows seen, and the class
//! each falls in from what it does (interactive, bulk, default).
//!
//! [`FlowKey::parse`] reads the 5-tuple (and what classification needs, [`PacketInfo`])
//! from an inner IPv4 or IPv6 packet without allocating and without trusting any length in
//! it. [`FlowTable`] holds a fixed number of flows, allocated once: it hashes keys with a
//! secret seed (the proxy classifies packets from the Internet, whose senders must not be
//! able to aim collisions), looks at most [`PROBE_LIMIT`] slots per packet, and when those
//! are all taken evicts the one seen least recently there. Flows idle for
//! [`IDLE_TIMEOUT`] give their slot up.
//!
//! Classes follow what a flow does, re-evaluated on every packet over a sliding window of
//! [`RATE_WINDOW`]: a flow turns bulk as soon as it has been fast with large packets for
//! [`BULK_SUSTAIN`], and interactive at once when a port says so or after a few small,
//! sparse packets. Leaving either takes a hold time of not looking like it any more
//! ([`BULK_HOLD`], [`INTERACTIVE_HOLD`]), and the thresholds to stay are looser than those
//! to enter, so a flow near a threshold does not flap. [`Modes`] turns a class into how
//! the scheduler spreads the flow.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::SplitMix;
use crate::wire::PathId;

/// Slots looked at per packet: CAKE's flow hash is 8-way set-associative for the same
/// reason (collisions stay rare at high load, the work per packet stays bounded).
pub const PROBE_LIMIT: usize = 8;
/// A flow silent this long gives its slot up. Linux conntrack forgets a UDP flow after
/// 30 s too, and VoIP and games keep their NAT bindings alive more often than that.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// ... and this long once it sent a FIN or RST: its last packets follow within an RTT or
/// two (conntrack's TCP `close` timeout).
pub const CLOSED_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Rates, packet rates and mean sizes are measured over this much recent time: long
/// enough to hold a few RTTs of TCP, short enough that a new rate shows within two
/// windows (half a second).
pub const RATE_WINDOW: Duration = Duration::from_millis(250);
/// A young flow's rate is taken over at least this long: one packet is not a rate.
const MIN_RATE_SPAN: Duration = Duration::from_millis(20);

/// Bulk: at least this rate (1 Mbit/s, in bytes/s), above any voice codec (Opus tops at
/// 510 kbit/s, G.711 with headers is 87 kbit/s) or game ...
pub const BULK_MIN_RATE: u64 = 125_000;
/// ... with packets of this mean size: full TCP segments and QUIC packets are 1200–1460
/// bytes inside the tunnel; voice, games and acks are well under.
pub const BULK_MIN_MEAN: u64 = 900;
/// ... for this long without a break. A web object of a few tens of kilobytes is over
/// sooner and would gain nothing from spreading (MPTCP measurements: short flows do not
/// benefit from a second path); a 10 Mbit/s download turns bulk after about 100 ms.
pub const BULK_SUSTAIN: Duration = Duration::from_millis(100);
/// Bulk too, whatever its rate: this many bytes in large packets (at least
/// [`BULK_MIN_MEAN`] each) since its class last changed, while its packets are large.
pub const BULK_MIN_BYTES: u64 = 256 * 1024;
/// A bulk flow stays bulk while it sends at least half of [`BULK_MIN_RATE`] ...
const BULK_KEEP_RATE: u64 = BULK_MIN_RATE / 2;
/// ... or packets of at least this mean size (the band below [`BULK_MIN_MEAN`] keeps a
/// download whose acks or pauses thin its window from flapping).
const BULK_KEEP_MEAN: u64 = 600;
/// A bulk flow that no longer looks bulk leaves the class after this long: longer than a
/// TCP pause between application writes or a loss recovery on any uplink the pool sees.
pub const BULK_HOLD: Duration = Duration::from_secs(1);

/// Interactive: packets of at most this mean size (voice is 60–220 bytes, game state
/// 50–300, SSH keystrokes about 90) ...
pub const INTERACTIVE_MAX_MEAN: u64 = 300;
/// ... at most this rate (1 Mbit/s, in bytes/s) ...
pub const INTERACTIVE_MAX_RATE: u64 = 125_000;
/// ... and at most this many packets per second: voice sends 50, games at most their
/// tick rate (≤ 128); the ack stream of a download beyond ~10 Mbit/s sends more, and
/// duplicating it would only cost the upstream.
pub const INTERACTIVE_MAX_PPS: u64 = 250;
/// ... seen over at least this many packets (160 ms of 20 ms voice). A port that says
/// interactive needs none: DNS is interactive from its first packet.
pub const INTERACTIVE_MIN_PACKETS: u64 = 8;
/// A TCP flow fewer of whose recent packets than this share (percent) carry data is
/// acknowledging a transfer the other way: never interactive by its packets' size.
pub const ACKING_MAX_CARRYING_PCT: u64 = 25;
/// An interactive flow stays interactive within these looser bounds (the band above the
/// entry ones keeps a talk spurt or a burst of game state from flapping).
const INTERACTIVE_KEEP_MEAN: u64 = 400;
const INTERACTIVE_KEEP_RATE: u64 = INTERACTIVE_MAX_RATE * 3 / 2;
const INTERACTIVE_KEEP_PPS: u64 = 400;
/// An interactive flow that no longer looks it leaves the class after this long.
pub const INTERACTIVE_HOLD: Duration = Duration::from_secs(1);

/// Extension headers walked at most before giving up on the ports (RFC 8200 §4.1 lists
/// fewer kinds than this in one packet).
const MAX_EXTENSION_HEADERS: usize = 16;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const DCCP: u8 = 33;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const UDP_LITE: u8 = 136;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const DESTINATION_OPTIONS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

/// The 5-tuple of an inner packet: addresses, upper-layer protocol and ports.
///
/// Packets without ports are keyed with ports 0: protocols without them, IP fragments
/// after the first, and packets whose transport header is cut short. ICMP and ICMPv6
/// echoes carry their identifier as both ports, so a ping is one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv4 addresses take the first four octets, the rest stay zero.
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    /// 4 or 6: an IPv4 key never equals an IPv6 one.
    version: u8,
}

/// What one packet tells the classifier besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The whole packet, IP header included (the buffer: the data plane checks that it
    /// agrees with the IP header's length, see [`crate::ip::check`]).
    pub len: u32,
    /// Bytes after the transport header (after the IP and extension headers when the
    /// protocol is not one whose header is parsed here, or the packet is a later
    /// fragment); 0 when the header is cut short.
    pub payload: u32,
    /// The TCP flags, when the packet is TCP with a whole header.
    pub tcp_flags: Option<TcpFlags>,
    /// The TCP sequence number, when the packet is TCP with a whole header.
    pub tcp_seq: Option<u32>,
    /// The ECN field (RFC 3168): 0 not ECN-capable, 1 ECT(1), 2 ECT(0), 3 CE.
    pub ecn: u8,
    /// The DSCP (RFC 2474).
    pub dscp: u8,
    /// A fragment after the first: no transport header, the key has ports 0.
    pub later_fragment: bool,
}

/// The flags octet of a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// The sender is done.
    pub fn fin(self) -> bool {
        self.0 & 0x01 != 0
    }

    /// Opens a connection.
    pub fn syn(self) -> bool {
        self.0 & 0x02 != 0
    }

    /// Aborts a connection.
    pub fn rst(self) -> bool {
        self.0 & 0x04 != 0
    }

    /// Acknowledges (set on everything but a connection's first SYN).
    pub fn ack(self) -> bool {
        self.0 & 0x10 != 0
    }
}

/// Where the upper-layer header starts and whether it may be read.
struct Upper {
    protocol: u8,
    at: usize,
    /// False for later fragments, and when the headers before it are cut short or too
    /// many: then the key has ports 0.
    readable: bool,
    later_fragment: bool,
}

impl FlowKey {
    /// The key of `packet` and what the classifier needs of it. `None` only when there is
    /// no whole IPv4 or IPv6 header; anything cut short after it gives a key with ports 0
    /// (and the protocol of the header that was cut). Never panics.
    pub fn parse(packet: &[u8]) -> Option<(FlowKey, PacketInfo)> {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        let (version, traffic_class, upper) = match packet.first()? >> 4 {
            4 => {
                let header = packet.get(..20)?;
                let ihl = usize::from(header[0] & 0x0f) * 4;
                if ihl < 20 || packet.len() < ihl {
                    return None;
                }
                src[..4].copy_from_slice(&header[12..16]);
                dst[..4].copy_from_slice(&header[16..20]);
                // Only the first fragment has the transport header: later ones are keyed
                // by addresses and protocol, so they at least stay together.
                let later = u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0;
                let upper = Upper {
                    protocol: header[9],
                    at: ihl,
                    readable: !later,
                    later_fragment: later,
                };
                (4, header[1], upper)
            }
            6 => {
                let header = packet.get(..40)?;
                src.copy_from_slice(&header[8..24]);
                dst.copy_from_slice(&header[24..40]);
                let traffic_class = ((header[0] & 0x0f) << 4) | (header[1] >> 4);
                (6, traffic_class, ipv6_upper(packet))
            }
            _ => return None,
        };
        let l4 = packet.get(upper.at..).unwrap_or(&[]);
        let mut key = FlowKey {
            src,
            dst,
            src_port: 0,
            dst_port: 0,
            protocol: upper.protocol,
            version,
        };
        let mut tcp_flags = None;
        let mut tcp_seq = None;
        // The transport header's length, when it is there whole.
        let mut header_len = 0;
        if upper.readable {
            let ports = |min: usize| -> Option<(u16, u16)> {
                let h = l4.get(..min)?;
                Some((
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                ))
            };
            let found = match upper.protocol {
                TCP => ports(20).map(|p| {
                    tcp_flags = Some(TcpFlags(l4[13]));
                    tcp_seq = Some(u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]));
                    let offset = usize::from(l4[12] >> 4) * 4;
                    (p, offset.clamp(20, l4.len()))
                }),
                UDP | UDP_LITE => ports(8).map(|p| (p, 8)),
                SCTP => ports(12).map(|p| (p, 12)),
                // DCCP's data offset counts 32-bit words (RFC 4340 §5.1).
                DCCP => ports(12).map(|p| (p, (usize::from(l4[4]) * 4).clamp(12, l4.len()))),
                ICMP | ICMPV6 => l4.get(..8).map(|h| {
                    let echo =
                        matches!((upper.protocol, h[0]), (ICMP, 0 | 8) | (ICMPV6, 128 | 129));
                    let id = if echo {
                        u16::from_be_bytes([h[4], h[5]])
                    } else {
                        0
                    };
                    ((id, id), 8)
                }),
                _ => None,
            };
            if let Some(((s, d), len)) = found {
                key.src_port = s;
                key.dst_port = d;
                header_len = len;
            }
        }
        let info = PacketInfo {
            len: saturating_u32(packet.len()),
            payload: saturating_u32(l4.len().saturating_sub(header_len)),
            tcp_flags,
            tcp_seq,
            ecn: traffic_class & 0x03,
            dscp: traffic_class >> 2,
            later_fragment: upper.later_fragment,
        };
        Some((key, info))
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.address(&self.src)
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.address(&self.dst)
    }

    fn address(&self, a: &[u8; 16]) -> IpAddr {
        if self.version == 4 {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*a))
        }
    }

    /// The upper-layer protocol (IANA number: 6 TCP, 17 UDP, ...), past any IPv6
    /// extension headers.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Source port (0 when the packet has none; an ICMP echo's identifier).
    pub fn src_port(&self) -> u16 {
        self.src_port
    }

    /// Destination port (0 when the packet has none; an ICMP echo's identifier).
    pub fn dst_port(&self) -> u16 {
        self.dst_port
    }

    fn has_port(&self, port: u16) -> bool {
        self.src_port == port || self.dst_port == port
    }

    /// Keyed SipHash-1-3 (the standard library's `HashMap` hash) over the key as five
    /// words. The input always has the same length, so the length block is left out.
    fn hash(&self, k0: u64, k1: u64) -> u64 {
        let word = |b: &[u8; 16], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let last = u64::from(self.version) << 40
            | u64::from(self.protocol) << 32
            | u64::from(self.src_port) << 16
            | u64::from(self.dst_port);
        let mut v = [
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ];
        for m in [
            word(&self.src, 0),
            word(&self.src, 8),
            word(&self.dst, 0),
            word(&self.dst, 8),
            last,
        ] {
            v[3] ^= m;
            sip_round(&mut v);
            v[0] ^= m;
        }
        v[2] ^= 0xff;
        for _ in 0..3 {
            sip_round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            TCP => f.write_str("tcp")?,
            UDP => f.write_str("udp")?,
            UDP_LITE => f.write_str("udplite")?,
            SCTP => f.write_str("sctp")?,
            DCCP => f.write_str("dccp")?,
            ICMP => f.write_str("icmp")?,
            ICMPV6 => f.write_str("icmpv6")?,
            other => write!(f, "proto {other}")?,
        }
        let end = |f: &mut fmt::Formatter<'_>, a: IpAddr, port: u16| match a {
            IpAddr::V4(a) => write!(f, "{a}:{port}"),
            IpAddr::V6(a) => write!(f, "[{a}]:{port}"),
        };
        f.write_str(" ")?;
        end(f, self.src(), self.src_port)?;
        f.write_str(" > ")?;
        end(f, self.dst(), self.dst_port)
    }
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// Walks an IPv6 packet's extension headers (at least 40 bytes are there).
fn ipv6_upper(packet: &[u8]) -> Upper {
    let cut = |protocol, later_fragment| Upper {
        protocol,
        at: packet.len(),
        readable: false,
        later_fragment,
    };
    let mut next = packet[6];
    let mut at = 40;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match next {
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS | MOBILITY | HIP | SHIM6 => {
                match packet.get(at + 1) {
                    Some(&l) => (usize::from(l) + 1) * 8,
                    None => return cut(next, false),
                }
            }
            // RFC 4302 §2.2: AH counts 4-octet units, minus 2.
            AUTHENTICATION => match packet.get(at + 1) {
                Some(&l) => (usize::from(l) + 2) * 4,
                None => return cut(next, false),
            },
            FRAGMENT => {
                let Some(h) = packet.get(at..at + 8) else {
                    return cut(next, false);
                };
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    // A later fragment: what follows is the middle of the payload. Its
                    // next header names the first header of the fragmentable part.
                    return Upper {
                        protocol: h[0],
                        at: at + 8,
                        readable: false,
                        later_fragment: true,
                    };
                }
                8
            }
            // ESP, no next header (59) and the upper layers end the walk.
            _ => {
                return Upper {
                    protocol: next,
                    at,
                    readable: true,
                    later_fragment: false,
                };
            }
        };
        if packet.len() < at + len {
            return cut(next, false);
        }
        next = packet[at];
        at += len;
    }
    cut(next, false)
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What a flow is, from what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowClass {
    /// Small packets at a low rate, or a port that says so (DNS, NTP, STUN, ping, SSH
    /// while its packets are small): latency matters more than bytes.
    Interactive,
    /// Sustained rate of large packets: throughput matters.
    Bulk,
    /// Everything else, and every new flow that no port marks interactive.
    Default,
}

impl FlowClass {
    /// A stable name for status output.
    pub fn name(self) -> &'static str {
        match self {
            FlowClass::Interactive => "interactive",
            FlowClass::Bulk => "bulk",
            FlowClass::Default => "default",
        }
    }
}

impl fmt::Display for FlowClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the scheduler spreads a flow over the paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// By its class: see [`Modes::resolve`].
    Auto,
    /// Pinned to one path while the flow lasts.
    Session,
    /// Spread per packet, a slower path taken only when it delivers sooner.
    Packet,
    /// On the lowest-latency path, duplicated or re-injected on a second one when at risk.
    Redundant,
}

impl Mode {
    /// Every mode, in the order the error for an unknown name lists them.
    pub const ALL: [Mode; 4] = [Mode::Auto, Mode::Session, Mode::Packet, Mode::Redundant];

    /// The name used in configs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Session => "session",
            Mode::Packet => "packet",
            Mode::Redundant => "redundant",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is none of `auto`, `session`, `packet`, `redundant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown flow mode `{}` (expected auto, session, packet or redundant)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// The mode of each class, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Mode of interactive flows.
    pub interactive: Mode,
    /// Mode of bulk flows.
    pub bulk: Mode,
    /// Mode of default flows.
    pub default: Mode,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            interactive: Mode::Auto,
            bulk: Mode::Auto,
            default: Mode::Auto,
        }
    }
}

impl Modes {
    /// The mode a flow of `class` is spread by; never [`Mode::Auto`], which means
    /// interactive → redundant, bulk → per packet, default → per session.
    pub fn resolve(&self, class: FlowClass) -> Mode {
        let (configured, auto) = match class {
            FlowClass::Interactive => (self.interactive, Mode::Redundant),
            FlowClass::Bulk => (self.bulk, Mode::Packet),
            FlowClass::Default => (self.default, Mode::Session),
        };
        if configured == Mode::Auto {
            auto
        } else {
            configured
        }
    }
}

/// The slot a flow holds in its [`FlowTable`]; it goes on the wire with spread packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowSlot(pub u16);

impl fmt::Display for FlowSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Bytes and packets over the last [`RATE_WINDOW`]: the current window and the one
/// before it, weighted by how much of it is still within reach (a sliding window counter).
#[derive(Debug, Clone, Copy)]
struct RateWindow {
    start: Instant,
    /// The flow's first window: nothing came before it, so its span is its age.
    first: bool,
    bytes: u64,
    packets: u64,
    /// Packets with a payload (for TCP: not pure acknowledgements).
    carrying: u64,
    prev_bytes: u64,
    prev_packets: u64,
    prev_carrying: u64,
}

/// A flow's recent behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Recent {
    /// Bytes/s.
    rate: u64,
    /// Packets/s.
    pps: u64,
    /// Mean packet size, bytes.
    mean: u64,
    /// Share of the packets with a payload, in percent.
    carrying_pct: u64,
}

impl RateWindow {
    fn new(now: Instant) -> Self {
        RateWindow {
            start: now,
            first: true,
            bytes: 0,
            packets: 0,
            carrying: 0,
            prev_bytes: 0,
            prev_packets: 0,
            prev_carrying: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= 2 * RATE_WINDOW {
            *self = RateWindow {
                first: false,
                ..RateWindow::new(now)
            };
        } else if elapsed >= RATE_WINDOW {
            self.start += RATE_WINDOW;
            self.first = false;
            self.prev_bytes = self.bytes;
            self.prev_packets = self.packets;
            self.prev_carrying = self.carrying;
            self.bytes = 0;
            self.packets = 0;
            self.carrying = 0;
        }
    }

    /// As of `now`, once rolled to it.
    fn recent(&self, now: Instant) -> Recent {
        let window = micros(RATE_WINDOW);
        let elapsed = micros(now.saturating_duration_since(self.start)).min(window);
        let (bytes, packets, carrying, span) = if self.first {
            (
                self.bytes.saturating_mul(window),
                self.packets.saturating_mul(window),
                self.carrying.saturating_mul(window),
                elapsed.max(micros(MIN_RATE_SPAN)),
            )
        } else {
            // The previous window counts for the part of it still within reach.
            let reach = window - elapsed;
            let weigh = |prev: u64, now: u64| {
                (prev.saturating_mul(reach)).saturating_add(now.saturating_mul(window))
            };
            (
                weigh(self.prev_bytes, self.bytes),
                weigh(self.prev_packets, self.packets),
                weigh(self.prev_carrying, self.carrying),
                window,
            )
        };
        // `bytes` and `packets` are scaled by `window` (µs) so that the weighting keeps
        // its fractions until the division.
        Recent {
            rate: (bytes / window).saturating_mul(1_000_000) / span,
            pps: packets.saturating_mul(1_000_000) / (window * span),
            mean: bytes.checked_div(packets).unwrap_or(0),
            carrying_pct: carrying
                .saturating_mul(100)
                .checked_div(packets)
                .unwrap_or(0),
        }
    }
}

/// One flow and its statistics.
#[derive(Debug, Clone)]
pub struct Flow {
    key: FlowKey,
    class: FlowClass,
    /// Holds its slot (not expired by [`FlowTable::expire`]).
    held: bool,
    /// Sent a FIN or RST: its slot is free after [`CLOSED_IDLE_TIMEOUT`], and a new SYN
    /// on the same key is a new flow.
    closing: bool,
    since: Instant,
    last_seen: Instant,
    class_since: Instant,
    /// When what the flow does last backed its class: the hold counts from here.
    confirmed: Instant,
    /// Since when it has looked fast with large packets without a break.
    fast_since: Option<Instant>,
    packets: u64,
    bytes: u64,
    /// Bytes in large packets since the class last changed.
    large_bytes: u64,
    window: RateWindow,
    recent: Recent,
    /// TCP: the sequence number after the newest data seen.
    tcp_next: Option<u32>,
    /// TCP: the last packet carried only data seen before (a retransmission).
    resent: bool,
    /// The path the scheduler pinned this flow to. The table only sets it to `None` when
    /// the slot gets a new flow.
    pub path: Option<PathId>,
    /// The next spread sequence number of this **slot**. The table never changes it, and
    /// it carries over unchanged when the slot is reused for another flow: the far end
    /// keeps its reorder state per slot and expects the sequence to keep counting up.
    pub seq: u32,
}

impl Flow {
    fn new(now: Instant, key: FlowKey, seq: u32) -> Flow {
        Flow {
            key,
            class: FlowClass::Default,
            held: true,
            closing: false,
            since: now,
            last_seen: now,
            class_since: now,
            confirmed: now,
            fast_since: None,
            packets: 0,
            bytes: 0,
            large_bytes: 0,
            window: RateWindow::new(now),
            recent: Recent::default(),
            tcp_next: None,
            resent: false,
            path: None,
            seq,
        }
    }

    /// Its 5-tuple.
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// Its class now.
    pub fn class(&self) -> FlowClass {
        self.class
    }

    /// When its class last changed (when it was first seen, if never).
    pub fn class_changed_at(&self) -> Instant {
        self.class_since
    }

    /// When it was first seen.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Whether its last packet was a TCP retransmission: it carried only data the flow
    /// had sent before.
    pub fn resent(&self) -> bool {
        self.resent
    }

    /// When its last packet was seen.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// Packets seen.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes seen (whole IP packets).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes/s over the last [`RATE_WINDOW`], as of its last packet.
    pub fn rate(&self) -> u64 {
        self.recent.rate
    }

    /// Bytes/s over the last [`RATE_WINDOW`] as of `now`: falls to 0 when it goes silent.
    pub fn rate_at(&self, now: Instant) -> u64 {
        let mut w = self.window;
        w.roll(now);
        w.recent(now).rate
    }

    /// Packets/s over the last [`RATE_WINDOW`], as of its last packet.
    pub fn packet_rate(&self) -> u64 {
        self.recent.pps
    }

    /// Mean packet size in bytes over the last [`RATE_WINDOW`], as of its last packet
    /// (what the classifier looks at; [`Flow::bytes`] / [`Flow::packets`] is the mean
    /// over its life).
    pub fn mean_size(&self) -> u64 {
        self.recent.mean
    }

    /// Silent long enough that its slot is free for another flow.
    pub fn is_idle(&self, now: Instant) -> bool {
        let timeout = if self.closing {
            CLOSED_IDLE_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        now.saturating_duration_since(self.last_seen) >= timeout
    }

    /// Counts a packet and re-classifies; true when the class changed.
    fn on_packet(&mut self, now: Instant, info: &PacketInfo) -> bool {
        let len = u64::from(info.len);
        self.last_seen = self.last_seen.max(now);
        self.packets += 1;
        self.bytes += len;
        if len >= BULK_MIN_MEAN {
            self.large_bytes += len;
        }
        if info.tcp_flags.is_some_and(|f| f.fin() || f.rst()) {
            self.closing = true;
        }
        self.resent = false;
        if let Some(seq) = info.tcp_seq.filter(|_| info.payload > 0) {
            let end = seq.wrapping_add(info.payload);
            match self.tcp_next {
                // At or before the newest data: seen before (RFC 1982 comparison).
                Some(next) if next.wrapping_sub(end) as i32 >= 0 => self.resent = true,
                _ => self.tcp_next = Some(end),
            }
        }
        self.window.roll(now);
        self.window.bytes += len;
        self.window.packets += 1;
        self.window.carrying += u64::from(info.payload > 0);
        self.recent = self.window.recent(now);
        self.classify(now)
    }

    fn classify(&mut self, now: Instant) -> bool {
        let r = self.recent;
        if r.rate >= BULK_MIN_RATE && r.mean >= BULK_MIN_MEAN {
            self.fast_since.get_or_insert(now);
        } else {
            self.fast_since = None;
        }
        let bulk = self
            .fast_since
            .is_some_and(|t| now.saturating_duration_since(t) >= BULK_SUSTAIN)
            || (self.large_bytes >= BULK_MIN_BYTES && r.mean >= BULK_MIN_MEAN);
        let keep_bulk = r.rate >= BULK_KEEP_RATE || r.mean >= BULK_KEEP_MEAN;

        let by_port = interactive_port(&self.key);
        let ssh = self.key.protocol == TCP && self.key.has_port(22);
        // Mostly pure acknowledgements: the other half of a transfer going the other way,
        // small packets at a low rate all the same. Copied as a call would be, a
        // download's acks took twice their share of a 2 Mbit/s DSL uplink.
        let acking = self.key.protocol == TCP && r.carrying_pct < ACKING_MAX_CARRYING_PCT;
        let interactive = by_port
            || (ssh && r.mean <= INTERACTIVE_MAX_MEAN)
            || (self.packets >= INTERACTIVE_MIN_PACKETS
                && !acking
                && r.mean <= INTERACTIVE_MAX_MEAN
                && r.rate <= INTERACTIVE_MAX_RATE
                && r.pps <= INTERACTIVE_MAX_PPS);
        let keep_interactive = by_port
            || (ssh && r.mean <= INTERACTIVE_KEEP_MEAN)
            || (!acking
                && r.mean <= INTERACTIVE_KEEP_MEAN
                && r.rate <= INTERACTIVE_KEEP_RATE
                && r.pps <= INTERACTIVE_KEEP_PPS);

        let held_for = |hold| now.saturating_duration_since(self.confirmed) >= hold;
        let next = match self.class {
            _ if bulk => FlowClass::Bulk,
            FlowClass::Default if interactive => FlowClass::Interactive,
            FlowClass::Default => FlowClass::Default,
            FlowClass::Interactive if keep_interactive || !held_for(INTERACTIVE_HOLD) => {
                FlowClass::Interactive
            }
            FlowClass::Interactive => FlowClass::Default,
            FlowClass::Bulk if keep_bulk || !held_for(BULK_HOLD) => FlowClass::Bulk,
            FlowClass::Bulk if interactive => FlowClass::Interactive,
            FlowClass::Bulk => FlowClass::Default,
        };
        let backed = match next {
            FlowClass::Bulk => bulk || keep_bulk,
            FlowClass::Interactive => keep_interactive,
            FlowClass::Default => true,
        };
        if backed {
            self.confirmed = now;
        }
        if next == self.class {
            return false;
        }
        self.class = next;
        self.class_since = now;
        self.confirmed = now;
        self.large_bytes = 0;
        true
    }
}

/// DNS, NTP, STUN/TURN (plain and over TLS/DTLS), and ICMP (pings above all).
fn interactive_port(key: &FlowKey) -> bool {
    match key.protocol {
        ICMP | ICMPV6 => true,
        TCP | UDP => [53, 123, 3478, 5349].into_iter().any(|p| key.has_port(p)),
        _ => false,
    }
}

/// What a [`FlowTable`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows that took a slot (a new SYN after a FIN or RST on the same key included).
    pub inserted: u64,
    /// Flows still live pushed out because every slot they could take was live.
    pub evicted: u64,
    /// Idle flows whose slot was taken or freed.
    pub expired: u64,
    /// Class changes after a flow's first packet.
    pub reclassified: u64,
}

/// A fixed number of flows, allocated once.
pub struct FlowTable {
    /// `None` until a flow first takes the slot; then the flow stays (held or not) so
    /// that its `seq` carries over to the next one.
    slots: Box<[Option<Flow>]>,
    k0: u64,
    k1: u64,
    held: usize,
    counters: FlowCounters,
}

impl fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity())
            .field("len", &self.held)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// A table of `capacity` flows (1 ..= 65535: slots are `u16` on the wire), hashed
    /// with keys derived from `seed`. The seed must be secret (from the OS's random
    /// source), or a sender on the Internet could aim its flows at one probe window.
    pub fn new(capacity: usize, seed: u64) -> FlowTable {
        assert!(
            (1..=usize::from(u16::MAX)).contains(&capacity),
            "flow table capacity {capacity} not in 1..=65535"
        );
        let mut rng = SplitMix(seed);
        FlowTable {
            slots: vec![None; capacity].into_boxed_slice(),
            k0: rng.next_u64(),
            k1: rng.next_u64(),
            held: 0,
            counters: FlowCounters::default(),
        }
    }

    /// Counts `packet` to its flow, taking a slot if it is new, and re-classifies the
    /// flow. `None` only if the packet has no whole IP header. Allocates nothing.
    pub fn on_packet(&mut self, now: Instant, packet: &[u8]) -> Option<FlowSlot> {
        let (key, info) = FlowKey::parse(packet)?;
        let i = self.place(now, &key, &info);
        let flow = self.slots[i].as_mut().expect("placed");
        let first = flow.packets == 0;
        if flow.on_packet(now, &info) && !first {
            self.counters.reclassified += 1;
        }
        Some(FlowSlot(i as u16))
    }

    /// The slot of `key`'s flow, found or given.
    fn place(&mut self, now: Instant, key: &FlowKey, info: &PacketInfo) -> usize {
        let capacity = self.slots.len();
        let start = ((u128::from(key.hash(self.k0, self.k1)) * capacity as u128) >> 64) as usize;
        let mut free = None;
        let mut oldest: Option<(usize, Instant)> = None;
        for i in 0..capacity.min(PROBE_LIMIT) {
            let s = (start + i) % capacity;
            match &self.slots[s] {
                Some(f) if f.held && f.key == *key => {
                    let reopened = f.closing && info.tcp_flags.is_some_and(|t| t.syn() && !t.ack());
                    if f.is_idle(now) {
                        self.counters.expired += 1;
                        self.start_flow(s, now, key);
                    } else if reopened {
                        self.start_flow(s, now, key);
                    }
                    return s;
                }
                Some(f) if f.held && !f.is_idle(now) => {
                    if oldest.is_none_or(|(_, seen)| f.last_seen < seen) {
                        oldest = Some((s, f.last_seen));
                    }
                }
                _ => {
                    if free.is_none() {
                        free = Some(s);
                    }
                }
            }
        }
        let s = match (free, oldest) {
            (Some(s), _) => {
                match &self.slots[s] {
                    Some(f) if f.held => self.counters.expired += 1,
                    _ => self.held += 1,
                }
                s
            }
            (None, Some((s, _))) => {
                self.counters.evicted += 1;
                s
            }
            (None, None) => unreachable!("a probe window has at least one slot"),
        };
        self.start_flow(s, now, key);
        s
    }

    fn start_flow(&mut self, s: usize, now: Instant, key: &FlowKey) {
        // A slot's first sequence is drawn from the table's keys, as TCP draws its ISN: a
        // peer restarted (a new table) lands far from where the far end's reorder state
        // for the slot stands, which resyncs on it instead of refusing its first packets
        // as copies of the old ones.
        let first = || SplitMix(self.k1 ^ s as u64).next_u64() as u32;
        let seq = self.slots[s].as_ref().map_or_else(first, |f| f.seq);
        self.slots[s] = Some(Flow::new(now, *key, seq));
        self.counters.inserted += 1;
    }

    /// Frees the slots of flows idle at `now` (their `seq` stays for the next flow);
    /// returns how many. Slots are also taken back lazily by [`FlowTable::on_packet`], so
    /// this is only for [`FlowTable::len`] and [`FlowTable::iter`] to leave idle flows out:
    /// call it from a timer, about once a second (it looks at every slot).
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for f in self.slots.iter_mut().flatten() {
            if f.held && f.is_idle(now) {
                f.held = false;
                n += 1;
            }
        }
        self.held -= n;
        self.counters.expired += n as u64;
        n
    }

    /// The flow in `slot`, if one holds it.
    pub fn get(&self, slot: FlowSlot) -> Option<&Flow> {
        self.slots
            .get(usize::from(slot.0))?
            .as_ref()
            .filter(|f| f.held)
    }

    /// The flow in `slot`, for the scheduler to set its `path` and `seq`.
    pub fn get_mut(&mut self, slot: FlowSlot) -> Option<&mut Flow> {
        self.slots
            .get_mut(usize::from(slot.0))?
            .as_mut()
            .filter(|f| f.held)
    }

    /// The flows holding a slot, for status (idle ones until [`FlowTable::expire`] or a
    /// new flow takes their slot: see [`Flow::is_idle`]).
    pub fn iter(&self) -> impl Iterator<Item = (FlowSlot, &Flow)> {
        self.slots.iter().enumerate().filter_map(|(i, f)| {
            f.as_ref()
                .filter(|f| f.held)
                .map(|f| (FlowSlot(i as u16), f))
        })
    }

    /// Flows holding a slot.
    pub fn len(&self) -> usize {
        self.held
    }

    /// No flow holds a slot.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Slots in all.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// What the table did so far.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A4: [u8; 4] = [10, 0, 0, 1];
    const B4: [u8; 4] = [192, 0, 2, 9];
    const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn v4(protocol: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = crate::ip::tests::ipv4(20 + l4.len(), src, dst);
        p[9] = protocol;
        p[20..].copy_from_slice(l4);
        p
    }

    /// An IPv6 packet whose first header after the fixed one is `next`.
    fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&A6);
        p[24..40].copy_from_slice(&B6);
        p.extend_from_slice(rest);
        p
    }

    fn tcp(sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
        let mut h = vec![0u8; 20 + payload];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        h
    }

    fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut h = vec![0u8; 8 + payload];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        h
    }

    fn echo(ty: u8, id: u16) -> Vec<u8> {
        let mut h = vec![0u8; 16];
        h[0] = ty;
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h
    }

    /// An extension header of `units` 8-octet units beyond the first, then `rest`.
    fn ext(next: u8, units: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[0] = next;
        h[1] = units;
        h.extend_from_slice(rest);
        h
    }

    fn fragment(next: u8, offset: u16, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![next, 0, 0, 0, 0, 0, 0x12, 0x34];
        h[2..4].copy_from_slice(&((offset << 3) | 1).to_be_bytes());
        h.extend_from_slice(rest);
        h
    }

    /// A TCP/IPv4 packet of `len` bytes in all.
    fn tcp4(sport: u16, dport: u16, flags: u8, len: usize) -> Vec<u8> {
        v4(TCP, A4, B4, &tcp(sport, dport, flags, len - 40))
    }

    fn udp4(sport: u16, dport: u16, len: usize) -> Vec<u8> {
        v4(UDP, A4, B4, &udp(sport, dport, len - 28))
    }

    const ACK: u8 = 0x10;
    const SYN: u8 = 0x02;
    const FIN: u8 = 0x01;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_ipv4_tcp_udp_icmp() {
        let mut p = tcp4(443, 51000, SYN | ACK, 100);
        p[1] = (46 << 2) | 3;
        let (k, info) = FlowKey::parse(&p).unwrap();
        assert_eq!(k.src(), IpAddr::from(A4));
        assert_eq!(k.dst(), IpAddr::from(B4));
        assert_eq!(
            (k.protocol(), k.src_port(), k.dst_port()),
            (TCP, 443, 51000)
        );
        assert_eq!(
            (info.len, info.payload, info.ecn, info.dscp),
            (100, 60, 3, 46)
        );
        let flags = info.tcp_flags.unwrap();
        assert!(flags.syn() && flags.ack() && !flags.fin() && !flags.rst());
        assert_eq!(k.to_string(), "tcp 10.0.0.1:443 > 192.0.2.9:51000");

        let (k, info) = FlowKey::parse(&udp4(5060, 5062, 200)).unwrap();
        assert_eq!(
            (k.protocol(), k.src_port(), k.dst_port()),
            (UDP, 5060, 5062)
        );
        assert_eq!((info.payload, info.tcp_flags), (172, None));

        // Request and reply of one ping share the identifier as "ports".
        let (req, _) = FlowKey::parse(&v4(ICMP, A4, B4, &echo(8, 0x4242))).unwrap();
        let (rep, _) = FlowKey::parse(&v4(ICMP, B4, A4, &echo(0, 0x4242))).unwrap();
        assert_eq!((req.src_port(), req.dst_port()), (0x4242, 0x4242));
        assert_eq!(rep.src_port(), 0x4242);
        // Not an echo (destination unreachable): no identifier.
        let (unreach, _) = FlowKey::parse(&v4(ICMP, A4, B4, &echo(3, 0x4242))).unwrap();
        assert_eq!((unreach.src_port(), unreach.dst_port()), (0, 0));

        // SCTP and a protocol without ports (GRE).
        let (k, _) = FlowKey::parse(&v4(SCTP, A4, B4, &udp(36412, 36412, 8))).unwrap();
        assert_eq!(k.src_port(), 36412);
        let (k, info) = FlowKey::parse(&v4(47, A4, B4, &[1; 30])).unwrap();
        assert_eq!((k.protocol(), k.src_port(), info.payload), (47, 0, 30));

        // An IPv4 header with options.
        let mut p = v4(UDP, A4, B4, &[0; 4]);
        p.extend_from_slice(&udp(1000, 2000, 0));
        p[0] = 0x46;
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let (k, _) = FlowKey::parse(&p).unwrap();
        assert_eq!((k.src_port(), k.dst_port()), (1000, 2000));
    }

    #[test]
    fn parses_ipv6_and_walks_extension_headers() {
        let mut p = v6(TCP, &tcp(22, 40000, ACK, 10));
        p[0] = 0x60 | 0x0b; // traffic class 0xb9: DSCP 46, ECN 1
        p[1] = 0x90;
        let (k, info) = FlowKey::parse(&p).unwrap();
        assert_eq!(k.src(), IpAddr::from(A6));
        assert_eq!((k.protocol(), k.src_port(), k.dst_port()), (TCP, 22, 40000));
        assert_eq!((info.payload, info.ecn, info.dscp), (10, 1, 46));
        assert_eq!(k.to_string(), "tcp [2001:db8::1]:22 > [2001:db8::2]:40000");

        // Hop-by-hop, then a first fragment, then destination options, then UDP.
        let chain = ext(
            FRAGMENT,
            0,
            &fragment(DESTINATION_OPTIONS, 0, &ext(UDP, 1, &udp(53, 3333, 30))),
        );
        let (k, info) = FlowKey::parse(&v6(HOP_BY_HOP, &chain)).unwrap();
        assert_eq!((k.protocol(), k.src_port(), k.dst_port()), (UDP, 53, 3333));
        assert_eq!((info.payload, info.later_fragment), (30, false));

        // AH counts 4-octet units minus 2: length 4 is 24 bytes.
        let mut ah = vec![TCP, 4];
        ah.resize(24, 0);
        ah.extend_from_slice(&tcp(80, 8080, ACK, 0));
        let (k, _) = FlowKey::parse(&v6(AUTHENTICATION, &ah)).unwrap();
        assert_eq!((k.protocol(), k.src_port()), (TCP, 80));

        // Routing, mobility, HIP, shim6 all use 8-octet units.
        for h in [ROUTING, MOBILITY, HIP, SHIM6] {
            let (k, _) = FlowKey::parse(&v6(h, &ext(UDP, 2, &udp(7, 9, 0)))).unwrap();
            assert_eq!(
                (k.protocol(), k.src_port(), k.dst_port()),
                (UDP, 7, 9),
                "{h}"
            );
        }

        let (k, _) = FlowKey::parse(&v6(ICMPV6, &echo(128, 7))).unwrap();
        assert_eq!((k.protocol(), k.src_port(), k.dst_port()), (ICMPV6, 7, 7));
        // ESP ends the walk: no ports readable.
        let (k, _) = FlowKey::parse(&v6(50, &[9; 40])).unwrap();
        assert_eq!((k.protocol(), k.src_port()), (50, 0));
    }

    #[test]
    fn later_fragments_have_no_ports() {
        // IPv4: offset 185 (×8 bytes); the payload is the middle of a UDP datagram.
        let mut p = udp4(5000, 6000, 100);
        p[6..8].copy_from_slice(&185u16.to_be_bytes());
        let (k, info) = FlowKey::parse(&p).unwrap();
        assert_eq!((k.protocol(), k.src_port(), k.dst_port()), (UDP, 0, 0));
        assert!(info.later_fragment);
        assert_eq!(info.payload, 80);
        // The first fragment (MF set, offset 0) has its ports.
        let mut p = udp4(5000, 6000, 100);
        p[6] = 0x20;
        assert_eq!(FlowKey::parse(&p).unwrap().0.src_port(), 5000);

        // IPv6: a later fragment behind hop-by-hop.
        let p = v6(
            HOP_BY_HOP,
            &ext(FRAGMENT, 0, &fragment(UDP, 100, &udp(5000, 6000, 20))),
        );
        let (k, info) = FlowKey::parse(&p).unwrap();
        assert_eq!((k.protocol(), k.src_port(), k.dst_port()), (UDP, 0, 0));
        assert!(info.later_fragment);
        assert_eq!(info.payload, 28);
        let (first, _) =
            FlowKey::parse(&v6(FRAGMENT, &fragment(UDP, 0, &udp(5000, 6000, 20)))).unwrap();
        assert_eq!(first.src_port(), 5000);
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let packets = [
            tcp4(443, 51000, ACK, 60),
            udp4(53, 4000, 40),
            v4(ICMP, A4, B4, &echo(8, 1)),
            v6(
                HOP_BY_HOP,
                &ext(
                    FRAGMENT,
                    0,
                    &fragment(DESTINATION_OPTIONS, 0, &ext(TCP, 1, &tcp(1, 2, SYN, 4))),
                ),
            ),
            v6(
                AUTHENTICATION,
                &[UDP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 8],
            ),
        ];
        let t = Instant::now();
        let mut table = FlowTable::new(16, 1);
        for p in &packets {
            for n in 0..=p.len() {
                let parsed = FlowKey::parse(&p[..n]);
                let header = if p[0] >> 4 == 4 { 20 } else { 40 };
                assert_eq!(parsed.is_some(), n >= header, "prefix {n} of {p:?}");
                if let Some((k, info)) = parsed {
                    assert_eq!(info.len as usize, n);
                    // Cut short before the ports: a ports-0 key, never a wrong one.
                    if n < p.len() && k.src_port() != 0 {
                        assert_eq!(Some(k), FlowKey::parse(p).map(|x| x.0));
                    }
                }
                assert_eq!(table.on_packet(t, &p[..n]).is_some(), n >= header);
            }
        }
        // A TCP header cut short has ports 0 and no flags.
        let (k, info) = FlowKey::parse(&tcp4(1, 2, SYN, 60)[..39]).unwrap();
        assert_eq!((k.src_port(), info.tcp_flags, info.payload), (0, None, 19));

        // Lies in the headers: IHL past the end, IHL < 5, extension lengths past the end,
        // a TCP data offset past the end.
        let mut p = tcp4(1, 2, 0, 40);
        p[0] = 0x4f;
        assert_eq!(FlowKey::parse(&p), None);
        p[0] = 0x44;
        assert_eq!(FlowKey::parse(&p), None);
        let (k, _) = FlowKey::parse(&v6(HOP_BY_HOP, &ext(UDP, 0, &[0; 4])[..8])).unwrap();
        assert_eq!((k.protocol(), k.src_port()), (UDP, 0));
        let mut long = ext(UDP, 0, &udp(1, 2, 0));
        long[1] = 200;
        let (k, _) = FlowKey::parse(&v6(HOP_BY_HOP, &long)).unwrap();
        assert_eq!((k.protocol(), k.src_port()), (HOP_BY_HOP, 0));
        let mut p = tcp4(1, 2, 0, 40);
        p[32] = 0xf0;
        assert_eq!(FlowKey::parse(&p).unwrap().1.payload, 0);
        // Endless destination options: the walk stops.
        let mut chain = udp(1, 2, 0);
        for _ in 0..40 {
            chain = ext(DESTINATION_OPTIONS, 0, &chain);
        }
        let (k, _) = FlowKey::parse(&v6(DESTINATION_OPTIONS, &chain)).unwrap();
        assert_eq!((k.protocol(), k.src_port()), (DESTINATION_OPTIONS, 0));

        let mut rng = SplitMix(7);
        let mut buf = [0u8; 200];
        for round in 0..20_000u32 {
            for b in buf.iter_mut() {
                *b = rng.next_u32() as u8;
            }
            // Mostly plausible versions, so the walk gets exercised.
            buf[0] = (buf[0] & 0x0f) | if round % 2 == 0 { 0x40 } else { 0x60 };
            let n = (rng.next_u32() as usize) % buf.len();
            let _ = FlowKey::parse(&buf[..n]);
            let _ = table.on_packet(t + ms(u64::from(round)), &buf[..n]);
        }
    }

    /// Feeds `n` packets from `make`, one every `gap`, from `t`; returns the time after
    /// the last and when the flow's class first became `want`, if it did.
    fn feed(
        table: &mut FlowTable,
        t: Instant,
        gap: Duration,
        n: u32,
        packet: &[u8],
        want: FlowClass,
    ) -> (Instant, Option<Instant>) {
        let mut turned = None;
        let mut now = t;
        for _ in 0..n {
            let slot = table.on_packet(now, packet).unwrap();
            if turned.is_none() && table.get(slot).unwrap().class() == want {
                turned = Some(now);
            }
            now += gap;
        }
        (now, turned)
    }

    fn class_of(table: &FlowTable, packet: &[u8]) -> FlowClass {
        let (key, _) = FlowKey::parse(packet).unwrap();
        table
            .iter()
            .find(|(_, f)| *f.key() == key)
            .unwrap()
            .1
            .class()
    }

    /// 1400-byte packets at 10 Mbit/s.
    const BULK_GAP: Duration = Duration::from_micros(1120);

    #[test]
    fn a_download_turns_bulk_and_voice_turns_interactive() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(64, 42);
        let download = tcp4(443, 51000, ACK, 1400);
        let slot = table
            .on_packet(t0, &tcp4(443, 51000, SYN | ACK, 60))
            .unwrap();
        assert_eq!(table.get(slot).unwrap().class(), FlowClass::Default);
        let (end, turned) = feed(&mut table, t0, BULK_GAP, 900, &download, FlowClass::Bulk);
        let after = turned.unwrap() - t0;
        assert!(after >= ms(50) && after <= ms(200), "bulk after {after:?}");
        let flow = table.get(slot).unwrap();
        assert_eq!(flow.class(), FlowClass::Bulk);
        let rate = flow.rate();
        assert!((1_200_000..=1_300_000).contains(&rate), "rate {rate}");
        assert_eq!(flow.mean_size(), 1400);
        assert_eq!(flow.packets(), 901);
        assert_eq!(table.counters().reclassified, 1);
        // Silence: the rate falls to nothing within two windows.
        assert_eq!(flow.rate_at(end + 2 * RATE_WINDOW), 0);
        // Slowed to 1 Mbit/s: the rate shows it within a second.
        feed(
            &mut table,
            end,
            BULK_GAP * 10,
            90,
            &download,
            FlowClass::Bulk,
        );
        let rate = table.get(slot).unwrap().rate();
        assert!((112_000..=138_000).contains(&rate), "rate {rate}");

        // RTP: 160 bytes at 50 pps, interactive after a few packets, never bulk.
        let rtp = udp4(40000, 16000, 160);
        let (_, turned) = feed(&mut table, t0, ms(20), 250, &rtp, FlowClass::Interactive);
        let after = turned.unwrap() - t0;
        assert_eq!(after, ms(20) * (INTERACTIVE_MIN_PACKETS as u32 - 1));
        let (slot, flow) = table
            .iter()
            .find(|(_, f)| f.key().dst_port() == 16000)
            .unwrap();
        assert_eq!(flow.class(), FlowClass::Interactive);
        assert_eq!(flow.class_changed_at(), t0 + after);
        assert!(
            (7_000..=9_000).contains(&flow.rate()),
            "rate {}",
            flow.rate()
        );
        assert!((45..=55).contains(&flow.packet_rate()));
        assert_eq!(table.get(slot).unwrap().bytes(), 250 * 160);
    }

    #[test]
    fn ports_say_interactive_from_the_first_packet() {
        let t = Instant::now();
        let mut table = FlowTable::new(64, 3);
        for p in [
            udp4(40000, 53, 60),
            tcp4(40001, 53, SYN, 60),
            udp4(123, 123, 76),
            udp4(40002, 3478, 100),
            tcp4(40003, 5349, SYN, 60),
            v4(ICMP, A4, B4, &echo(8, 9)),
            v6(ICMPV6, &echo(129, 9)),
            tcp4(40004, 22, SYN, 60),
        ] {
            let slot = table.on_packet(t, &p).unwrap();
            assert_eq!(
                table.get(slot).unwrap().class(),
                FlowClass::Interactive,
                "{p:?}"
            );
        }
        // A new TCP flow on another port starts default; so does a big first packet.
        let slot = table.on_packet(t, &tcp4(40005, 443, SYN, 60)).unwrap();
        assert_eq!(table.get(slot).unwrap().class(), FlowClass::Default);
        let slot = table.on_packet(t, &udp4(40006, 443, 1350)).unwrap();
        assert_eq!(table.get(slot).unwrap().class(), FlowClass::Default);
        // First classifications are not re-classifications.
        assert_eq!(table.counters().reclassified, 0);
    }

    #[test]
    fn bulk_turns_interactive_after_the_hold_and_ssh_turns_bulk_with_scp() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(64, 5);
        // One UDP flow: a second of 10 Mbit/s, then voice.
        let big = udp4(40000, 9000, 1400);
        let small = udp4(40000, 9000, 160);
        let (t1, _) = feed(&mut table, t0, BULK_GAP, 900, &big, FlowClass::Bulk);
        assert_eq!(class_of(&table, &big), FlowClass::Bulk);
        // A short lull of small packets keeps it bulk.
        let (t2, _) = feed(&mut table, t1, ms(20), 30, &small, FlowClass::Default);
        assert_eq!(class_of(&table, &big), FlowClass::Bulk);
        let (_, turned) = feed(&mut table, t2, ms(20), 100, &small, FlowClass::Interactive);
        let after = turned.unwrap() - t1;
        // Looks bulk for about two windows more, then the hold.
        assert!(
            after >= BULK_HOLD && after <= BULK_HOLD + ms(600),
            "after {after:?}"
        );
        assert_eq!(table.counters().reclassified, 2);
        // Its rate followed the change within a second.
        let flow = table.iter().next().unwrap().1;
        assert!(
            (7_000..=9_000).contains(&flow.rate()),
            "rate {}",
            flow.rate()
        );

        // An SSH session: keystrokes for two seconds, then an scp at 10 Mbit/s.
        let keys = tcp4(40001, 22, ACK, 100);
        let scp = tcp4(40001, 22, ACK, 1400);
        let (t3, _) = feed(&mut table, t0, ms(50), 40, &keys, FlowClass::Interactive);
        assert_eq!(class_of(&table, &keys), FlowClass::Interactive);
        let (_, turned) = feed(&mut table, t3, BULK_GAP, 300, &scp, FlowClass::Bulk);
        let after = turned.unwrap() - t3;
        assert!(after <= ms(200), "bulk after {after:?}");
    }

    #[test]
    fn interactive_holds_through_a_burst_and_leaves_when_it_grows() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(8, 5);
        let voice = udp4(40000, 16000, 160);
        let keyframe = udp4(40000, 16000, 1000);
        // Voice with a 100 ms burst of larger packets every 2 s: stays interactive.
        let (mut t, _) = feed(&mut table, t0, ms(20), 10, &voice, FlowClass::Default);
        for _ in 0..5 {
            (t, _) = feed(&mut table, t, ms(10), 10, &keyframe, FlowClass::Default);
            (t, _) = feed(&mut table, t, ms(20), 95, &voice, FlowClass::Default);
            assert_eq!(class_of(&table, &voice), FlowClass::Interactive);
        }
        assert_eq!(table.counters().reclassified, 1);
        let changed = table.iter().next().unwrap().1.class_changed_at();
        assert_eq!(changed, t0 + ms(20) * (INTERACTIVE_MIN_PACKETS as u32 - 1));

        // Turned into 600-byte packets at 480 kbit/s (video): default after the hold.
        let video = udp4(40000, 16000, 600);
        let (_, turned) = feed(&mut table, t, ms(10), 300, &video, FlowClass::Default);
        let after = turned.unwrap() - t;
        assert!(
            after >= INTERACTIVE_HOLD && after <= INTERACTIVE_HOLD + ms(500),
            "after {after:?}"
        );
        let flow = table.iter().next().unwrap().1;
        assert_eq!(
            (flow.class(), flow.class_changed_at()),
            (FlowClass::Default, t + after)
        );
    }

    #[test]
    fn many_large_packets_turn_bulk_at_a_low_rate() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(8, 5);
        // 1400 bytes every 20 ms: 560 kbit/s, bulk after 256 KiB (about 190 packets).
        let p = udp4(40000, 9000, 1400);
        let (_, turned) = feed(&mut table, t0, ms(20), 400, &p, FlowClass::Bulk);
        let packets = (turned.unwrap() - t0).as_millis() / 20 + 1;
        assert_eq!(packets as u64, BULK_MIN_BYTES.div_ceil(1400));
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_seen() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(8, 11);
        let flow = |n: u16| udp4(10_000 + n, 80, 100);
        let mut slots = Vec::new();
        for n in 0..8 {
            slots.push(table.on_packet(t0 + ms(u64::from(n)), &flow(n)).unwrap());
        }
        assert_eq!((table.len(), table.counters().evicted), (8, 0));
        for (i, s) in slots.iter().enumerate() {
            let f = table.get_mut(*s).unwrap();
            f.seq = 1000 + i as u32;
            f.path = Some(PathId(i as u16));
        }
        // Flow 0 is seen again: flow 1 is now the least recently seen, and goes.
        table.on_packet(t0 + ms(10), &flow(0)).unwrap();
        let s = table.on_packet(t0 + ms(11), &flow(100)).unwrap();
        assert_eq!(s, slots[1]);
        let f = table.get(s).unwrap();
        assert_eq!(f.key().src_port(), 10_100);
        assert_eq!((f.seq, f.path, f.packets()), (1001, None, 1));
        assert_eq!(table.counters().evicted, 1);
        assert!(table.iter().any(|(_, f)| f.key().src_port() == 10_000));
        assert!(!table.iter().any(|(_, f)| f.key().src_port() == 10_001));

        // A hundred more: each takes the slot of the least recent one.
        for n in 200..300 {
            table.on_packet(t0 + ms(u64::from(n)), &flow(n)).unwrap();
        }
        let c = table.counters();
        assert_eq!((c.evicted, c.inserted, table.len()), (101, 109, 8));
        let mut seqs: Vec<u32> = table.iter().map(|(_, f)| f.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1000..1008).collect::<Vec<_>>());
        assert!(
            table
                .iter()
                .all(|(_, f)| f.path.is_none() && f.key().src_port() >= 10_292)
        );
    }

    #[test]
    fn idle_flows_free_their_slots() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(1, 2);
        let a = udp4(1, 2, 100);
        let b = udp4(3, 4, 100);
        let s = table.on_packet(t0, &a).unwrap();
        table.get_mut(s).unwrap().seq = 77;
        table.get_mut(s).unwrap().path = Some(PathId(3));
        // Still live: b evicts it.
        table.on_packet(t0 + ms(10_000), &b).unwrap();
        assert_eq!(table.counters().evicted, 1);
        // Idle: a takes the slot back without an eviction, with the slot's sequence.
        let s = table.on_packet(t0 + ms(10_000) + IDLE_TIMEOUT, &a).unwrap();
        let c = table.counters();
        assert_eq!((c.evicted, c.expired, table.len()), (1, 1, 1));
        assert_eq!(table.get(s).unwrap().seq, 77);
        // The same key after the timeout is a new flow too.
        table.get_mut(s).unwrap().path = Some(PathId(3));
        let s = table
            .on_packet(t0 + ms(10_000) + 2 * IDLE_TIMEOUT, &a)
            .unwrap();
        let f = table.get(s).unwrap();
        assert_eq!((f.path, f.packets(), f.seq), (None, 1, 77));

        // The timer's sweep.
        let mut table = FlowTable::new(16, 2);
        for n in 0..3 {
            table.on_packet(t0, &udp4(n, 9, 100)).unwrap();
        }
        assert_eq!(table.expire(t0 + ms(29_000)), 0);
        assert_eq!(table.expire(t0 + IDLE_TIMEOUT), 3);
        assert!(table.is_empty() && table.iter().next().is_none());
        assert!(table.get(FlowSlot(0)).is_none());
        assert_eq!(table.counters().expired, 3);
        assert!(
            table
                .on_packet(t0 + IDLE_TIMEOUT, &udp4(0, 9, 100))
                .is_some()
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_closed_connection_leaves_sooner_and_a_new_syn_is_a_new_flow() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(1, 9);
        let s = table.on_packet(t0, &tcp4(5000, 443, SYN, 60)).unwrap();
        // A retransmitted SYN is the same flow.
        table
            .on_packet(t0 + ms(1000), &tcp4(5000, 443, SYN, 60))
            .unwrap();
        assert_eq!(table.get(s).unwrap().packets(), 2);
        table.get_mut(s).unwrap().path = Some(PathId(1));
        table
            .on_packet(t0 + ms(1100), &tcp4(5000, 443, FIN | ACK, 60))
            .unwrap();
        assert_eq!(table.get(s).unwrap().packets(), 3);
        // The port is reused by a new connection: a new flow in the same slot.
        table
            .on_packet(t0 + ms(1200), &tcp4(5000, 443, SYN, 60))
            .unwrap();
        let f = table.get(s).unwrap();
        assert_eq!((f.packets(), f.path, f.since()), (1, None, t0 + ms(1200)));
        table
            .on_packet(t0 + ms(1300), &tcp4(5000, 443, RST_ACK, 60))
            .unwrap();
        // Closed: another flow takes the slot after CLOSED_IDLE_TIMEOUT, no eviction.
        table
            .on_packet(t0 + ms(1300) + CLOSED_IDLE_TIMEOUT, &udp4(1, 2, 60))
            .unwrap();
        let c = table.counters();
        assert_eq!((c.inserted, c.evicted, c.expired), (3, 0, 1));
    }

    const RST_ACK: u8 = 0x14;

    #[test]
    fn seeds_place_flows_differently_and_everything_fits_somewhere() {
        let t = Instant::now();
        let mut a = FlowTable::new(1024, 1);
        let mut b = FlowTable::new(1024, 2);
        let mut differ = 0;
        for n in 0..2000u16 {
            let p = udp4(n, 53, 80);
            let (sa, sb) = (a.on_packet(t, &p).unwrap(), b.on_packet(t, &p).unwrap());
            assert!(usize::from(sa.0) < 1024 && usize::from(sb.0) < 1024);
            differ += usize::from(sa != sb);
        }
        assert!(differ > 1500, "{differ}");
        for table in [&a, &b] {
            let c = table.counters();
            assert_eq!(c.inserted, 2000);
            assert_eq!(c.evicted as usize + table.len(), 2000);
            assert!(table.len() > 900, "{}", table.len());
        }
        let mut c = FlowTable::new(65535, 0);
        assert!(c.on_packet(t, &udp4(1, 2, 80)).is_some());
        assert_eq!(c.capacity(), 65535);
    }

    /// A restarted peer's table (another seed) starts each slot's sequence far from the
    /// old one's, so the far end's reorder buffer resyncs (beyond
    /// [`crate::reorder::MAX_DISTANCE`]) instead of refusing its first packets as copies.
    #[test]
    fn slot_sequences_start_far_apart_in_each_table() {
        let t = Instant::now();
        let p = udp4(1, 2, 80);
        let mut near = 0;
        for seed in 0..200u64 {
            let mut a = FlowTable::new(64, seed);
            let mut b = FlowTable::new(64, seed + 1000);
            let (sa, sb) = (a.on_packet(t, &p).unwrap(), b.on_packet(t, &p).unwrap());
            let (qa, qb) = (a.get(sa).unwrap().seq, b.get(sb).unwrap().seq);
            near += usize::from(
                qa.wrapping_sub(qb).min(qb.wrapping_sub(qa)) < crate::reorder::MAX_DISTANCE,
            );
        }
        assert!(
            near <= 1,
            "{near} of 200 restarts land within reorder distance"
        );
    }

    #[test]
    #[should_panic(expected = "capacity")]
    fn a_table_has_room() {
        FlowTable::new(0, 0);
    }

    #[test]
    fn modes_parse_and_resolve() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
        }
        let err = "spread".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown flow mode `spread` (expected auto, session, packet or redundant)"
        );
        let auto = Modes::default();
        assert_eq!(auto.resolve(FlowClass::Interactive), Mode::Redundant);
        assert_eq!(auto.resolve(FlowClass::Bulk), Mode::Packet);
        assert_eq!(auto.resolve(FlowClass::Default), Mode::Session);
        let set = Modes {
            interactive: Mode::Session,
            ..Modes::default()
        };
        assert_eq!(set.resolve(FlowClass::Interactive), Mode::Session);
        let names: Vec<_> = [FlowClass::Interactive, FlowClass::Bulk, FlowClass::Default]
            .into_iter()
            .map(FlowClass::name)
            .collect();
        assert_eq!(names, ["interactive", "bulk", "default"]);
    }
    fn with_seq(mut packet: Vec<u8>, seq: u32) -> Vec<u8> {
        packet[24..28].copy_from_slice(&seq.to_be_bytes());
        packet
    }

    /// A TCP packet that carries only data its flow sent before is a retransmission:
    /// across the sequence space's wrap too; acks, new data and a partly new segment are
    /// not.
    #[test]
    fn tcp_retransmissions_are_told_apart() {
        let t = Instant::now();
        let mut table = FlowTable::new(16, 1);
        let mut resent = |seq: u32, total: usize| {
            let slot = table.on_packet(t, &with_seq(tcp4(4000, 443, 0x10, total), seq));
            table.get(slot.unwrap()).unwrap().resent()
        };
        let start = u32::MAX - 2000; // 1 000 bytes a segment: the third wraps
        assert!(!resent(start, 1040));
        assert!(!resent(start.wrapping_add(1000), 1040));
        assert!(!resent(start.wrapping_add(2000), 1040));
        assert!(resent(start, 1040), "the first segment again");
        assert!(
            resent(start.wrapping_add(2000), 1040),
            "the wrapped one again"
        );
        assert!(!resent(start.wrapping_add(2500), 1040), "half new");
        assert!(!resent(start.wrapping_add(3500), 40), "a pure ack");
        assert!(!resent(start.wrapping_add(3500), 1040), "new data");
    }
    /// A download's acks (pure acknowledgements: small packets at a low rate) are not
    /// interactive, and are not copied onto a second path; the same packets carrying a
    /// few bytes each (keystrokes) are.
    #[test]
    fn a_downloads_acks_are_not_interactive() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(16, 1);
        let class = |table: &mut FlowTable, sport: u16, len: usize| {
            let mut slot = None;
            for i in 0..200u64 {
                let now = t0 + Duration::from_millis(10 * i);
                slot = table.on_packet(now, &tcp4(sport, 443, 0x18, len));
            }
            table.get(slot.unwrap()).unwrap().class()
        };
        assert_eq!(class(&mut table, 40000, 40), FlowClass::Default);
        assert_eq!(class(&mut table, 40001, 60), FlowClass::Interactive);
    }
}
