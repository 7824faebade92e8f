//! What a sealed transport packet carries: a per-path packet number, then frames.
//!
//! ```text
//! plaintext = packet number (u32, per path and direction, truncated) , frame*
//! frame     = 0x00 padding
//!           | 0x01 ping                      ack-eliciting, no body
//!           | 0x02 ack  path u16, largest v, delay v (µs), received_at v (µs), count v,
//!                       first v, (gap v, length v){count}
//!           | 0x03 receipt path u16, packets v, bytes v
//!           | 0x04 packet                    the rest is one inner IP packet
//!           | 0x05 spread packet, seq u32    the rest is one inner IP packet, spread over
//!                                            paths: the receiver reorders on `seq`
//!           | 0x40..=0xff type, length v, body   extensions: skipped when unknown
//!             0x40 mesh grant (proxy to member: credential, issuer key, proxy clock)
//!             0x41 statement (proxy to member: its signed account, 153 bytes)
//!             0x42 rating (proxy to a relaying member: its signed rating, 127 bytes)
//!             0x43 bid (member to proxy: the most it pays per GB at a relay's auction,
//!                  milli-credits, i64)
//!             0x44 standby (member to proxy: the ids (u16) of its own paths to hold to
//!                  probes, at most 16; none: hold none)
//! v         = QUIC variable-length integer (RFC 9000 §16)
//! ```
//!
//! Acknowledgement ranges follow RFC 9000 §19.3.1. Every path's packets are numbered from
//! zero in each direction; an ack names the path whose packets it acknowledges, so it may
//! travel on another path. A packet with a ping or an inner packet is ack-eliciting.

use crate::DropReason;
use crate::wire::PathId;

/// Bytes of the packet number at the start of every plaintext.
pub const PACKET_NUMBER_LEN: usize = 4;

/// Frame types.
const PADDING: u8 = 0x00;
const PING: u8 = 0x01;
const ACK: u8 = 0x02;
const RECEIPT: u8 = 0x03;
const PACKET: u8 = 0x04;
/// A packet of a flow spread per packet: the far end puts it back in order.
const SPREAD_PACKET: u8 = 0x05;
/// A packet sent on more than one path: the far end delivers the first copy at once.
const DUPLICATED_PACKET: u8 = 0x06;
/// From here on every frame type carries its length, so older builds can skip it.
const FIRST_EXTENSION: u8 = 0x40;
/// The proxy's grant of a mesh credential to a member (an extension).
const MESH_GRANT: u8 = 0x40;
/// A mesh grant's body: the credential, the key it is signed with, and the proxy's clock
/// when the frame left (seconds since the Unix epoch, u64): the member checks its
/// neighbours' credentials in proxy time, whatever its own clock says.
pub const MESH_GRANT_LEN: usize = crate::mesh::CREDENTIAL_LEN + 32 + 8;
/// The proxy's signed statement of a member's account (an extension): a
/// [`SignedStatement`](crate::statement::SignedStatement), whole.
const STATEMENT: u8 = 0x41;
/// A statement frame's body.
pub const STATEMENT_LEN: usize = crate::statement::STATEMENT_LEN;
/// The proxy's signed rating of a member's relay (an extension): a
/// [`SignedRating`](crate::statement::SignedRating), whole, for its mesh hellos.
const RATING: u8 = 0x42;
/// A rating frame's body.
pub const RATING_LEN: usize = crate::statement::RATING_LEN;
/// A member's bid for contended relay lines (an extension): the most its owner pays per
/// GB, in milli-credits.
const BID: u8 = 0x43;
/// A bid frame's body.
pub const BID_LEN: usize = 8;
/// The member's own paths it asks the proxy to hold to probes (a metered line low on
/// allowance), as path ids: its body is 2 bytes per path.
const STANDBY: u8 = 0x44;
/// Most path ids a standby frame names.
pub const MAX_STANDBY: usize = 16;

/// Most ranges one ack frame carries (the newest ones): bounded work and size.
pub const MAX_ACK_RANGES: usize = 16;
/// Largest encoded ack frame.
pub const MAX_ACK_LEN: usize = 1 + 2 + 4 * 8 + 2 * MAX_ACK_RANGES * 8;
/// Bytes a packet frame puts before an inner packet: its type.
pub const PACKET_FRAME_LEN: usize = 1;
/// Same for a spread or duplicated packet: its type, its flow and its sequence.
pub const SPREAD_PACKET_FRAME_LEN: usize = 1 + 2 + 4;

/// Where an inner packet stands in its flow, for the far end's reorder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// The sender's flow slot ([`crate::flow`]): the far end keeps order per slot.
    pub flow: u16,
    /// The slot's sequence number (it keeps counting when the slot gets a new flow).
    pub seq: u32,
    /// Hold for order (a flow spread per packet), or deliver at once and only refuse a
    /// second copy (a packet duplicated on two paths).
    pub hold: bool,
}

/// Largest value a variable-length integer holds.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Acknowledged packet numbers of one path: `ranges[..count]`, newest first, each
/// inclusive (`start..=end`), disjoint, descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Whose packets are acknowledged.
    pub path: PathId,
    /// How long the acknowledger held the largest before sending this, in microseconds.
    pub delay_us: u64,
    /// The acknowledger's clock (microseconds since its own origin) when the largest
    /// arrived: only differences between samples mean anything.
    pub received_at_us: u64,
    ranges: [(u64, u64); MAX_ACK_RANGES],
    count: usize,
}

impl Ack {
    /// An ack of `ranges` (newest first, inclusive, disjoint, descending; at most
    /// [`MAX_ACK_RANGES`] are kept).
    pub fn new(path: PathId, delay_us: u64, received_at_us: u64, ranges: &[(u64, u64)]) -> Ack {
        let mut a = Ack {
            path,
            delay_us,
            received_at_us,
            ranges: [(0, 0); MAX_ACK_RANGES],
            count: ranges.len().min(MAX_ACK_RANGES),
        };
        a.ranges[..a.count].copy_from_slice(&ranges[..a.count]);
        a
    }

    /// The ranges, newest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    /// The largest packet number acknowledged.
    pub fn largest(&self) -> Option<u64> {
        self.ranges().first().map(|r| r.1)
    }

    fn encode(&self, out: &mut Writer<'_>) -> Option<()> {
        let (first, rest) = self.ranges().split_first()?;
        out.u8(ACK)?;
        out.u16(self.path.0)?;
        out.varint(first.1)?;
        out.varint(self.delay_us.min(VARINT_MAX))?;
        out.varint(self.received_at_us.min(VARINT_MAX))?;
        out.varint(rest.len() as u64)?;
        out.varint(first.1 - first.0)?;
        let mut smallest = first.0;
        for r in rest {
            // RFC 9000: gap = packets between the ranges minus one; length = size minus one.
            out.varint(smallest - r.1 - 2)?;
            out.varint(r.1 - r.0)?;
            smallest = r.0;
        }
        Some(())
    }

    fn decode(r: &mut Reader<'_>) -> Result<Ack, DropReason> {
        let bad = DropReason::BadFrame;
        let path = PathId(r.u16().ok_or(bad)?);
        let largest = r.varint().ok_or(bad)?;
        let delay_us = r.varint().ok_or(bad)?;
        let received_at_us = r.varint().ok_or(bad)?;
        let extra = r.varint().ok_or(bad)?;
        let first = r.varint().ok_or(bad)?;
        let mut ack = Ack {
            path,
            delay_us,
            received_at_us,
            ranges: [(0, 0); MAX_ACK_RANGES],
            count: 0,
        };
        let mut smallest = largest.checked_sub(first).ok_or(bad)?;
        ack.ranges[0] = (smallest, largest);
        ack.count = 1;
        for _ in 0..extra {
            let gap = r.varint().ok_or(bad)?;
            let len = r.varint().ok_or(bad)?;
            let end = smallest.checked_sub(gap + 2).ok_or(bad)?;
            let start = end.checked_sub(len).ok_or(bad)?;
            smallest = start;
            // Ranges beyond what we keep are read (to find the next frame) and ignored:
            // old news about old packets.
            if ack.count < MAX_ACK_RANGES {
                ack.ranges[ack.count] = (start, end);
                ack.count += 1;
            }
        }
        Ok(ack)
    }
}

/// One decoded frame. Inner packets are given as a range of the plaintext.
// An ack is a few hundred bytes on the stack: no allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Asks for an acknowledgement; nothing else.
    Ping,
    /// Acknowledgements for one path.
    Ack(Ack),
    /// Receiver feedback: what arrived on a path so far (cumulative). Downstream receipts
    /// from members are what the proxy will credit relays for.
    Receipt {
        /// The path being reported.
        path: PathId,
        /// Inner packets received on it.
        packets: u64,
        /// Inner bytes received on it.
        bytes: u64,
    },
    /// A mesh grant from the proxy ([`MESH_GRANT_LEN`] bytes) at this range of the
    /// plaintext.
    MeshGrant {
        /// Where its body is, relative to the start of the plaintext.
        range: (usize, usize),
    },
    /// A signed statement from the proxy ([`STATEMENT_LEN`] bytes) at this range of the
    /// plaintext.
    Statement {
        /// Where its body is, relative to the start of the plaintext.
        range: (usize, usize),
    },
    /// A signed rating from the proxy ([`RATING_LEN`] bytes) at this range of the
    /// plaintext.
    Rating {
        /// Where its body is, relative to the start of the plaintext.
        range: (usize, usize),
    },
    /// The member's own paths to hold to probes: `count` path ids (u16) at this range.
    Standby {
        /// Where its body is, relative to the start of the plaintext.
        range: (usize, usize),
    },
    /// A member's bid: the most it pays per GB of a contended relay line (milli-credits).
    Bid {
        /// Milli-credits per GB.
        per_gb: i64,
    },
    /// An inner IP packet at this range of the plaintext; `spread` is its place in its
    /// flow when the flow is spread over several paths or the packet duplicated.
    Packet {
        /// Flow and sequence, if any.
        spread: Option<Spread>,
        /// Where the packet is, relative to the start of the plaintext.
        range: (usize, usize),
    },
}

impl Frame {
    /// Whether a packet holding this frame must be acknowledged.
    pub fn is_ack_eliciting(&self) -> bool {
        matches!(self, Frame::Ping | Frame::Packet { .. })
    }
}

/// Writes the frame header of an inner packet at the start of `out`; the packet itself
/// follows it and ends the plaintext. Returns the header's length.
pub fn write_packet_header(out: &mut [u8], spread: Option<Spread>) -> Option<usize> {
    match spread {
        None => {
            *out.first_mut()? = PACKET;
            Some(PACKET_FRAME_LEN)
        }
        Some(s) => {
            let out = out.get_mut(..SPREAD_PACKET_FRAME_LEN)?;
            out[0] = if s.hold {
                SPREAD_PACKET
            } else {
                DUPLICATED_PACKET
            };
            out[1..3].copy_from_slice(&s.flow.to_be_bytes());
            out[3..7].copy_from_slice(&s.seq.to_be_bytes());
            Some(SPREAD_PACKET_FRAME_LEN)
        }
    }
}

/// Reads a plaintext: its packet number, then its frames in order.
pub struct Frames<'a> {
    r: Reader<'a>,
}

impl<'a> Frames<'a> {
    /// Starts reading `plaintext`; returns its truncated packet number and the frames.
    pub fn parse(plaintext: &'a [u8]) -> Result<(u32, Frames<'a>), DropReason> {
        let mut r = Reader {
            bytes: plaintext,
            at: 0,
        };
        let pn = r.u32().ok_or(DropReason::BadFrame)?;
        Ok((pn, Frames { r }))
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let kind = self.r.u8()?;
            let bad = Some(Err(DropReason::BadFrame));
            return Some(Ok(match kind {
                PADDING => continue,
                PING => Frame::Ping,
                ACK => match Ack::decode(&mut self.r) {
                    Ok(a) => Frame::Ack(a),
                    Err(e) => return Some(Err(e)),
                },
                RECEIPT => {
                    let (Some(path), Some(packets), Some(bytes)) =
                        (self.r.u16(), self.r.varint(), self.r.varint())
                    else {
                        return bad;
                    };
                    Frame::Receipt {
                        path: PathId(path),
                        packets,
                        bytes,
                    }
                }
                PACKET | SPREAD_PACKET | DUPLICATED_PACKET => {
                    let spread = if kind == PACKET {
                        None
                    } else {
                        match (self.r.u16(), self.r.u32()) {
                            (Some(flow), Some(seq)) => Some(Spread {
                                flow,
                                seq,
                                hold: kind == SPREAD_PACKET,
                            }),
                            _ => return bad,
                        }
                    };
                    let range = (self.r.at, self.r.bytes.len());
                    if range.0 == range.1 {
                        return bad;
                    }
                    self.r.at = self.r.bytes.len();
                    Frame::Packet { spread, range }
                }
                FIRST_EXTENSION.. => {
                    let Some(len) = self.r.varint() else {
                        return bad;
                    };
                    let body = self.r.at;
                    if self.r.skip(len).is_none() {
                        return bad;
                    }
                    let whole = match kind {
                        MESH_GRANT => MESH_GRANT_LEN,
                        STATEMENT => STATEMENT_LEN,
                        RATING => RATING_LEN,
                        BID => BID_LEN,
                        // Any number of ids up to the most: its own length.
                        STANDBY if len % 2 == 0 && len <= 2 * MAX_STANDBY as u64 => len as usize,
                        STANDBY => return bad,
                        _ => continue,
                    };
                    // A known extension must be whole.
                    if len != whole as u64 {
                        return bad;
                    }
                    let range = (body, body + whole);
                    match kind {
                        MESH_GRANT => Frame::MeshGrant { range },
                        STATEMENT => Frame::Statement { range },
                        RATING => Frame::Rating { range },
                        STANDBY => Frame::Standby { range },
                        _ => Frame::Bid {
                            per_gb: i64::from_be_bytes(
                                self.r.bytes[body..body + BID_LEN]
                                    .try_into()
                                    .expect("8 bytes"),
                            ),
                        },
                    }
                }
                _ => return bad,
            }));
        }
    }
}

/// Writes a plaintext into a buffer: the packet number first, then frames.
pub struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    /// Starts a plaintext with packet number `pn` (truncated to its low 32 bits).
    pub fn new(out: &'a mut [u8], pn: u64) -> Option<Writer<'a>> {
        let mut w = Writer { out, at: 0 };
        w.u32(pn as u32)?;
        Some(w)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.at
    }

    /// Whether nothing was written (never true: the packet number is always there).
    pub fn is_empty(&self) -> bool {
        self.at == 0
    }

    /// A ping frame.
    pub fn ping(&mut self) -> Option<()> {
        self.u8(PING)
    }

    /// An ack frame.
    pub fn ack(&mut self, ack: &Ack) -> Option<()> {
        let at = self.at;
        let r = ack.encode(self);
        if r.is_none() {
            self.at = at;
        }
        r
    }

    /// A receipt frame.
    pub fn receipt(&mut self, path: PathId, packets: u64, bytes: u64) -> Option<()> {
        let at = self.at;
        let r = (|| {
            self.u8(RECEIPT)?;
            self.u16(path.0)?;
            self.varint(packets.min(VARINT_MAX))?;
            self.varint(bytes.min(VARINT_MAX))
        })();
        if r.is_none() {
            self.at = at;
        }
        r
    }

    /// A mesh grant frame.
    pub fn mesh_grant(&mut self, body: &[u8; MESH_GRANT_LEN]) -> Option<()> {
        self.extension(MESH_GRANT, body)
    }

    /// A statement frame.
    pub fn statement(&mut self, body: &[u8; STATEMENT_LEN]) -> Option<()> {
        self.extension(STATEMENT, body)
    }

    /// A rating frame.
    pub fn rating(&mut self, body: &[u8; RATING_LEN]) -> Option<()> {
        self.extension(RATING, body)
    }

    /// A bid frame.
    pub fn bid(&mut self, per_gb: i64) -> Option<()> {
        self.extension(BID, &per_gb.to_be_bytes())
    }

    /// A standby frame naming `paths` (at most [`MAX_STANDBY`]; more are left out).
    pub fn standby(&mut self, paths: impl IntoIterator<Item = PathId>) -> Option<()> {
        let mut body = [0u8; 2 * MAX_STANDBY];
        let mut n = 0;
        for p in paths.into_iter().take(MAX_STANDBY) {
            body[2 * n..2 * n + 2].copy_from_slice(&p.0.to_be_bytes());
            n += 1;
        }
        self.extension(STANDBY, &body[..2 * n])
    }

    /// An extension frame: its type, its length, its body.
    fn extension(&mut self, kind: u8, body: &[u8]) -> Option<()> {
        let at = self.at;
        let r = (|| {
            self.u8(kind)?;
            self.varint(body.len() as u64)?;
            let out = self.out.get_mut(self.at..self.at + body.len())?;
            out.copy_from_slice(body);
            self.at += body.len();
            Some(())
        })();
        if r.is_none() {
            self.at = at;
        }
        r
    }

    /// Pads with padding frames up to `len` bytes in all.
    pub fn pad_to(&mut self, len: usize) -> Option<()> {
        while self.at < len {
            self.u8(PADDING)?;
        }
        Some(())
    }

    fn u8(&mut self, v: u8) -> Option<()> {
        *self.out.get_mut(self.at)? = v;
        self.at += 1;
        Some(())
    }

    fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }

    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + b.len())?
            .copy_from_slice(b);
        self.at += b.len();
        Some(())
    }

    fn varint(&mut self, v: u64) -> Option<()> {
        debug_assert!(v <= VARINT_MAX);
        match v {
            0..=0x3f => self.u8(v as u8),
            0x40..=0x3fff => self.u16(0x4000 | v as u16),
            0x4000..=0x3fff_ffff => self.u32(0x8000_0000 | v as u32),
            _ => self.bytes(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.bytes.get(self.at..self.at + N)?;
        self.at += N;
        b.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        if end > self.bytes.len() {
            return None;
        }
        self.at = end;
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let first = *self.bytes.get(self.at)?;
        let len = 1usize << (first >> 6);
        let b = self.bytes.get(self.at..self.at + len)?;
        self.at += len;
        let mut v = u64::from(first & 0x3f);
        for &x in &b[1..] {
            v = (v << 8) | u64::from(x);
        }
        Some(v)
    }
}

/// The full packet number a truncated one stands for, given the largest received so far
/// on that path (RFC 9000 §A.3, with 32 bits).
pub fn expand_packet_number(largest: Option<u64>, truncated: u32) -> u64 {
    let Some(largest) = largest else {
        return u64::from(truncated);
    };
    const WIN: u64 = 1 << 32;
    const HALF: u64 = WIN / 2;
    let expected = largest + 1;
    let candidate = (expected & !(WIN - 1)) | u64::from(truncated);
    if candidate + HALF <= expected && candidate < (1 << 62) - WIN {
        candidate + WIN
    } else if candidate > expected + HALF && candidate >= WIN {
        candidate - WIN
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(ranges: &[(u64, u64)]) -> Ack {
        let ack = Ack::new(PathId(9), 1234, 5_000_000, ranges);
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf, 77).unwrap();
        w.ack(&ack).unwrap();
        w.ping().unwrap();
        let n = w.len();
        let (pn, frames) = Frames::parse(&buf[..n]).unwrap();
        assert_eq!(pn, 77);
        let frames: Vec<_> = frames.collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], Frame::Ping);
        match frames[0] {
            Frame::Ack(a) => a,
            _ => panic!(),
        }
    }

    #[test]
    fn acks_round_trip() {
        let ranges = [(90, 100), (50, 60), (10, 10), (0, 1)];
        let a = roundtrip(&ranges);
        assert_eq!(a.ranges(), &ranges);
        assert_eq!(a.largest(), Some(100));
        assert_eq!((a.delay_us, a.received_at_us), (1234, 5_000_000));
        let big = [(u64::from(u32::MAX) * 7, u64::from(u32::MAX) * 7 + 3)];
        assert_eq!(roundtrip(&big).ranges(), &big);
    }

    #[test]
    fn malformed_acks_are_refused() {
        // first range longer than largest.
        let bad = [0, 0, 0, 0, ACK, 0, 1, 5, 0, 0, 0, 6];
        let (_, mut f) = Frames::parse(&bad).unwrap();
        assert_eq!(f.next(), Some(Err(DropReason::BadFrame)));
        // truncated.
        let (_, mut f) = Frames::parse(&bad[..7]).unwrap();
        assert_eq!(f.next(), Some(Err(DropReason::BadFrame)));
        // a gap that runs below zero.
        let bad = [0, 0, 0, 0, ACK, 0, 1, 5, 0, 0, 1, 1, 9, 0];
        let (_, mut f) = Frames::parse(&bad).unwrap();
        assert_eq!(f.next(), Some(Err(DropReason::BadFrame)));
    }

    #[test]
    fn packets_receipts_extensions_and_unknown_frames() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf, 1).unwrap();
        w.receipt(PathId(2), 10, 14_000).unwrap();
        let mut at = w.len();
        let spread = Spread {
            flow: 0x1234,
            seq: 0xdead_beef,
            hold: true,
        };
        at += write_packet_header(&mut buf[at..], Some(spread)).unwrap();
        buf[at..at + 3].copy_from_slice(b"ip!");
        let plain = &buf[..at + 3];
        let (_, f) = Frames::parse(plain).unwrap();
        let f: Vec<_> = f.collect::<Result<_, _>>().unwrap();
        assert_eq!(
            f,
            [
                Frame::Receipt {
                    path: PathId(2),
                    packets: 10,
                    bytes: 14_000
                },
                Frame::Packet {
                    spread: Some(spread),
                    range: (at, at + 3)
                }
            ]
        );
        let copy = Spread {
            hold: false,
            ..spread
        };
        let n = write_packet_header(&mut buf[4..], Some(copy)).unwrap();
        buf[4 + n] = 9;
        let (_, mut f) = Frames::parse(&buf[..5 + n]).unwrap();
        assert_eq!(
            f.next(),
            Some(Ok(Frame::Packet {
                spread: Some(copy),
                range: (4 + n, 5 + n)
            }))
        );
        // An extension frame of a later version is skipped; an unknown old-style one is not.
        let ext = [0, 0, 0, 0, 0x4f, 2, 0xaa, 0xbb, PING];
        let (_, f) = Frames::parse(&ext).unwrap();
        assert_eq!(f.collect::<Vec<_>>(), [Ok(Frame::Ping)]);
        let (_, mut f) = Frames::parse(&[0, 0, 0, 0, 0x3f]).unwrap();
        assert_eq!(f.next(), Some(Err(DropReason::BadFrame)));
        // An empty packet frame is malformed.
        let (_, mut f) = Frames::parse(&[0, 0, 0, 0, PACKET]).unwrap();
        assert_eq!(f.next(), Some(Err(DropReason::BadFrame)));
        assert!(Frames::parse(&[0, 0, 0]).is_err());
    }

    /// A mesh grant round-trips; one of another length is refused, not skipped: a known
    /// extension must be whole.
    #[test]
    fn mesh_grants_round_trip_and_must_be_whole() {
        let mut body = [0u8; MESH_GRANT_LEN];
        for (i, b) in body.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf, 5).unwrap();
        w.mesh_grant(&body).unwrap();
        w.ping().unwrap();
        let len = w.len();
        let (_, frames) = Frames::parse(&buf[..len]).unwrap();
        let frames: Vec<_> = frames.collect::<Result<_, _>>().unwrap();
        let Frame::MeshGrant { range } = frames[0] else {
            panic!("{frames:?}");
        };
        assert_eq!(&buf[range.0..range.1], &body[..]);
        assert_eq!(frames[1], Frame::Ping);
        // Its length field says one byte less.
        let mut short = buf;
        short[5] = 0x40;
        short[6] = (MESH_GRANT_LEN - 1) as u8;
        let (_, mut frames) = Frames::parse(&short[..len]).unwrap();
        assert_eq!(frames.next(), Some(Err(DropReason::BadFrame)));
        // Cut short.
        let (_, mut frames) = Frames::parse(&buf[..len - 10]).unwrap();
        assert_eq!(frames.next(), Some(Err(DropReason::BadFrame)));
    }

    #[test]
    fn statements_ratings_and_bids_round_trip_beside_grants() {
        let mut statement = [0u8; STATEMENT_LEN];
        statement[7] = 9;
        let rating = [7u8; RATING_LEN];
        let grant = [3u8; MESH_GRANT_LEN];
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf, 5).unwrap();
        w.statement(&statement).unwrap();
        w.mesh_grant(&grant).unwrap();
        w.rating(&rating).unwrap();
        w.bid(-2_500).unwrap();
        w.standby([PathId(7), PathId(0x1234)]).unwrap();
        w.standby([]).unwrap();
        let len = w.len();
        let (_, frames) = Frames::parse(&buf[..len]).unwrap();
        let frames: Vec<_> = frames.collect::<Result<_, _>>().unwrap();
        let [
            Frame::Statement { range: s },
            Frame::MeshGrant { range: g },
            Frame::Rating { range: r },
            Frame::Bid { per_gb: -2_500 },
            Frame::Standby { range: b },
            Frame::Standby { range: e },
        ] = frames[..]
        else {
            panic!("{frames:?}");
        };
        assert_eq!(&buf[s.0..s.1], &statement[..]);
        assert_eq!(&buf[g.0..g.1], &grant[..]);
        assert_eq!(&buf[r.0..r.1], &rating[..]);
        assert_eq!(&buf[b.0..b.1], &[0, 7, 0x12, 0x34]);
        assert_eq!(e.0, e.1);
        // An odd length, or more ids than a frame may name: malformed.
        for len in [3u8, 2 * MAX_STANDBY as u8 + 2] {
            let mut bad = [0u8; 64];
            let mut w = Writer::new(&mut bad, 5).unwrap();
            w.ping();
            let at = w.len();
            bad[at..at + 2].copy_from_slice(&[STANDBY, len]);
            let (_, mut frames) = Frames::parse(&bad[..at + 2 + len as usize]).unwrap();
            assert_eq!(frames.nth(1), Some(Err(DropReason::BadFrame)), "{len}");
        }
    }

    #[test]
    fn varints_cover_every_length() {
        for v in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            VARINT_MAX,
        ] {
            let mut buf = [0u8; 16];
            let mut w = Writer::new(&mut buf, 0).unwrap();
            w.varint(v).unwrap();
            let n = w.len();
            let mut r = Reader {
                bytes: &buf[..n],
                at: 4,
            };
            assert_eq!(r.varint(), Some(v));
            assert_eq!(r.at, n);
        }
    }

    #[test]
    fn packet_numbers_expand_across_the_32_bit_wrap() {
        assert_eq!(expand_packet_number(None, 5), 5);
        assert_eq!(expand_packet_number(Some(10), 11), 11);
        // Late packet from just before the wrap, after it.
        let w = 1u64 << 32;
        assert_eq!(expand_packet_number(Some(w + 3), u32::MAX), w - 1);
        // Early packet after the wrap.
        assert_eq!(expand_packet_number(Some(w - 2), 1), w + 1);
        assert_eq!(expand_packet_number(Some(7 * w + 100), 90), 7 * w + 90);
    }
}
