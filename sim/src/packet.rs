//! Inner packets: well-formed IPv4 packets carrying UDP or TCP (correct header and
//! transport checksums), as the traffic models send them into the endpoints, and their
//! parser for what comes out.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Length of the IPv4 header the models write (no options).
pub const IPV4_HEADER: usize = 20;
/// Length of a UDP header.
pub const UDP_HEADER: usize = 8;
/// Length of a TCP header without options.
pub const TCP_HEADER: usize = 20;
/// Length of the TCP timestamps option as Linux sends it (NOP, NOP, kind 8, length 10).
pub const TCP_TIMESTAMPS: usize = 12;

/// TCP flags.
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement field is valid.
    pub const ACK: u8 = 0x10;
}

/// A transport protocol the models use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// IP protocol 6.
    Tcp = 6,
    /// IP protocol 17.
    Udp = 17,
}

/// Up to four SACK blocks (RFC 2018: left edge, right edge), as carried by a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    len: u8,
    blocks: [(u32, u32); 4],
}

impl SackBlocks {
    /// Adds a block; false when four are there already.
    pub fn push(&mut self, left: u32, right: u32) -> bool {
        if usize::from(self.len) == self.blocks.len() {
            return false;
        }
        self.blocks[usize::from(self.len)] = (left, right);
        self.len += 1;
        true
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }

    /// No blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The TCP header fields the models use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHeader {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags ([`tcp_flags`]).
    pub flags: u8,
    /// Receive window (unscaled field value).
    pub window: u16,
    /// Timestamps option (TSval, TSecr), if present.
    pub timestamps: Option<(u32, u32)>,
    /// SACK option (as many blocks as fit: three with timestamps).
    pub sack: SackBlocks,
}

/// A parsed inner packet.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// Transport protocol.
    pub proto: Proto,
    /// The TCP header, for TCP.
    pub tcp: Option<TcpHeader>,
    /// The transport payload.
    pub payload: &'a [u8],
    /// The IP packet's total length.
    pub len: usize,
}

/// Why an inner packet did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Not IPv4 (or too short for its header).
    NotIpv4,
    /// The total length or a header length does not match the packet.
    BadLength,
    /// The IPv4 header checksum is wrong.
    BadHeaderChecksum,
    /// The UDP or TCP checksum is wrong.
    BadChecksum,
    /// A fragment.
    Fragment,
    /// Neither UDP nor TCP.
    UnknownProtocol(u8),
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::NotIpv4 => write!(f, "not an IPv4 packet"),
            PacketError::BadLength => write!(f, "lengths do not match the packet"),
            PacketError::BadHeaderChecksum => write!(f, "wrong IPv4 header checksum"),
            PacketError::BadChecksum => write!(f, "wrong transport checksum"),
            PacketError::Fragment => write!(f, "a fragment"),
            PacketError::UnknownProtocol(p) => write!(f, "protocol {p}, neither UDP nor TCP"),
        }
    }
}

/// Adds `data` as big-endian 16-bit words to a ones' complement sum (not yet folded).
/// Blocks of zeros (the models' payloads) are skipped with a `memcmp`: the simulator's
/// tests run unoptimised, and summing every byte was most of their time.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    const ZEROS: [u8; 64] = [0; 64];
    let mut rest = data;
    while rest.len() >= ZEROS.len() {
        let (block, tail) = rest.split_at(ZEROS.len());
        if block != ZEROS {
            acc = sum_words(block, acc);
        }
        rest = tail;
    }
    sum_words(rest, acc)
}

fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: Proto, len: usize) -> u64 {
    let mut acc = sum(&src.octets(), 0);
    acc = sum(&dst.octets(), acc);
    acc + proto as u64 + len as u64
}

fn write_ipv4(out: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: Proto, id: u16, len: usize) {
    let total = len as u16;
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x40, 0, 64, proto as u8, 0, 0]); // DF, TTL 64
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let start = out.len() - IPV4_HEADER;
    let c = checksum(&out[start..]);
    out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

/// Appends an IPv4/UDP packet to `out` (cleared first).
pub fn build_udp(out: &mut Vec<u8>, src: SocketAddrV4, dst: SocketAddrV4, id: u16, payload: &[u8]) {
    out.clear();
    let udp_len = UDP_HEADER + payload.len();
    write_ipv4(
        out,
        *src.ip(),
        *dst.ip(),
        Proto::Udp,
        id,
        IPV4_HEADER + udp_len,
    );
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let acc = pseudo_header(*src.ip(), *dst.ip(), Proto::Udp, udp_len);
    let mut c = fold(sum(&out[IPV4_HEADER..], acc));
    if c == 0 {
        c = 0xffff;
    }
    out[IPV4_HEADER + 6..IPV4_HEADER + 8].copy_from_slice(&c.to_be_bytes());
}

/// Appends an IPv4/TCP packet to `out` (cleared first).
pub fn build_tcp(
    out: &mut Vec<u8>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    id: u16,
    header: &TcpHeader,
    payload: &[u8],
) {
    out.clear();
    let ts_len = if header.timestamps.is_some() {
        TCP_TIMESTAMPS
    } else {
        0
    };
    let sack = &header.sack.blocks()[..header.sack.blocks().len().min((40 - ts_len - 4) / 8)];
    let options = ts_len
        + if sack.is_empty() {
            0
        } else {
            4 + 8 * sack.len()
        };
    let tcp_len = TCP_HEADER + options + payload.len();
    write_ipv4(
        out,
        *src.ip(),
        *dst.ip(),
        Proto::Tcp,
        id,
        IPV4_HEADER + tcp_len,
    );
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.ack.to_be_bytes());
    out.push((((TCP_HEADER + options) / 4) as u8) << 4);
    out.push(header.flags);
    out.extend_from_slice(&header.window.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if let Some((tsval, tsecr)) = header.timestamps {
        out.extend_from_slice(&[1, 1, 8, 10]);
        out.extend_from_slice(&tsval.to_be_bytes());
        out.extend_from_slice(&tsecr.to_be_bytes());
    }
    if !sack.is_empty() {
        out.extend_from_slice(&[1, 1, 5, (2 + 8 * sack.len()) as u8]);
        for (left, right) in sack {
            out.extend_from_slice(&left.to_be_bytes());
            out.extend_from_slice(&right.to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    let acc = pseudo_header(*src.ip(), *dst.ip(), Proto::Tcp, tcp_len);
    let c = fold(sum(&out[IPV4_HEADER..], acc));
    out[IPV4_HEADER + 16..IPV4_HEADER + 18].copy_from_slice(&c.to_be_bytes());
}

/// Parses and checks an inner packet: IPv4 without options, UDP or TCP, all checksums.
pub fn parse(packet: &[u8]) -> Result<Parsed<'_>, PacketError> {
    if packet.len() < IPV4_HEADER || packet[0] >> 4 != 4 {
        return Err(PacketError::NotIpv4);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < IPV4_HEADER || total != packet.len() || total < ihl {
        return Err(PacketError::BadLength);
    }
    if checksum(&packet[..ihl]) != 0 {
        return Err(PacketError::BadHeaderChecksum);
    }
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if frag & 0x3fff != 0 {
        return Err(PacketError::Fragment);
    }
    let src_ip = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst_ip = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let proto = match packet[9] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        other => return Err(PacketError::UnknownProtocol(other)),
    };
    let l4 = &packet[ihl..];
    let min = if proto == Proto::Tcp {
        TCP_HEADER
    } else {
        UDP_HEADER
    };
    if l4.len() < min {
        return Err(PacketError::BadLength);
    }
    let port = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    let (src_port, dst_port) = (port(0), port(2));
    let acc = pseudo_header(src_ip, dst_ip, proto, l4.len());
    let (tcp, payload) = match proto {
        Proto::Udp => {
            if usize::from(port(4)) != l4.len() {
                return Err(PacketError::BadLength);
            }
            if port(6) != 0 && fold(sum(l4, acc)) != 0 {
                return Err(PacketError::BadChecksum);
            }
            (None, &l4[UDP_HEADER..])
        }
        Proto::Tcp => {
            let offset = usize::from(l4[12] >> 4) * 4;
            if offset < TCP_HEADER || offset > l4.len() {
                return Err(PacketError::BadLength);
            }
            if fold(sum(l4, acc)) != 0 {
                return Err(PacketError::BadChecksum);
            }
            let word = |i: usize| u32::from_be_bytes([l4[i], l4[i + 1], l4[i + 2], l4[i + 3]]);
            let (timestamps, sack) = tcp_options(&l4[TCP_HEADER..offset]);
            let header = TcpHeader {
                seq: word(4),
                ack: word(8),
                flags: l4[13],
                window: port(14),
                timestamps,
                sack,
            };
            (Some(header), &l4[offset..])
        }
    };
    Ok(Parsed {
        src: SocketAddrV4::new(src_ip, src_port),
        dst: SocketAddrV4::new(dst_ip, dst_port),
        proto,
        tcp,
        payload,
        len: total,
    })
}

/// The timestamps and SACK options; malformed options end the parse (what was read
/// stays).
fn tcp_options(mut options: &[u8]) -> (Option<(u32, u32)>, SackBlocks) {
    let mut timestamps = None;
    let mut sack = SackBlocks::default();
    let word = |o: &[u8]| u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
    while let Some(&kind) = options.first() {
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ => {
                let Some(&len) = options.get(1) else {
                    break;
                };
                let len = usize::from(len);
                if len < 2 || len > options.len() {
                    break;
                }
                let body = &options[2..len];
                if kind == 8 && len == 10 {
                    timestamps = Some((word(body), word(&body[4..])));
                } else if kind == 5 && (len - 2) % 8 == 0 {
                    for block in body.chunks_exact(8) {
                        sack.push(word(block), word(&block[4..]));
                    }
                }
                options = &options[len..];
            }
        }
    }
    (timestamps, sack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddrV4, SocketAddrV4) {
        (
            "10.77.0.2:40000".parse().unwrap(),
            "198.51.100.7:80".parse().unwrap(),
        )
    }

    #[test]
    fn udp_round_trip_with_checksums() {
        let (a, b) = addrs();
        let mut p = Vec::new();
        build_udp(&mut p, a, b, 7, b"hello world");
        assert_eq!(p.len(), 20 + 8 + 11);
        assert_eq!(checksum(&p[..20]), 0);
        let parsed = parse(&p).unwrap();
        assert_eq!((parsed.src, parsed.dst, parsed.proto), (a, b, Proto::Udp));
        assert_eq!(parsed.payload, b"hello world");
        p[30] ^= 1;
        assert_eq!(parse(&p).unwrap_err(), PacketError::BadChecksum);
        p[30] ^= 1;
        p[8] = 63; // TTL
        assert_eq!(parse(&p).unwrap_err(), PacketError::BadHeaderChecksum);
    }

    #[test]
    fn checksum_skips_zeros_exactly() {
        let mut data = vec![0u8; 1000];
        for (i, b) in data.iter_mut().enumerate().filter(|(i, _)| i % 97 == 0) {
            *b = i as u8;
        }
        data.push(0xab);
        let slow = fold(sum_words(&data, 0));
        assert_eq!(checksum(&data), slow);
        assert_eq!(checksum(&[0u8; 130]), 0xffff);
    }

    #[test]
    fn tcp_round_trip_with_timestamps() {
        let (a, b) = addrs();
        let h = TcpHeader {
            seq: 0xdead_beef,
            ack: 12345,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: 512,
            timestamps: Some((1, 2)),
            sack: SackBlocks::default(),
        };
        let mut p = Vec::new();
        build_tcp(&mut p, b, a, 1, &h, &[0u8; 1300]);
        assert_eq!(p.len(), 20 + 32 + 1300);
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.tcp, Some(h));
        assert_eq!(parsed.payload.len(), 1300);
        // An odd length checks the trailing byte.
        build_tcp(&mut p, b, a, 1, &h, &[9u8; 13]);
        assert_eq!(parse(&p).unwrap().payload, &[9u8; 13]);
        let n = p.len();
        p[n - 1] = 8;
        assert_eq!(parse(&p).unwrap_err(), PacketError::BadChecksum);
        // SACK blocks: three fit with the timestamps (a 60-byte header), the fourth not.
        let mut h = h;
        for k in 0..4 {
            assert!(h.sack.push(k * 10, k * 10 + 5));
        }
        assert!(!h.sack.push(1, 2));
        build_tcp(&mut p, a, b, 2, &h, &[]);
        assert_eq!(p.len(), 20 + 60);
        let parsed = parse(&p).unwrap().tcp.unwrap();
        assert_eq!(parsed.sack.blocks(), &h.sack.blocks()[..3]);
        assert_eq!(parsed.timestamps, Some((1, 2)));
        h.timestamps = None;
        build_tcp(&mut p, a, b, 2, &h, &[]);
        assert_eq!(parse(&p).unwrap().tcp.unwrap().sack, h.sack);
    }
}
