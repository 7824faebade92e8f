//! `frame::Frames::parse` on anything, as the plaintext of a transport packet: no panic,
//! and what decodes is what the format says:
//!
//! * only a plaintext shorter than its packet number is refused outright;
//! * every ack has 1 to `MAX_ACK_RANGES` ranges, each `start <= end`, descending and
//!   disjoint with at least one packet number missing between two (a gap of 0 means one),
//!   within the variable-length integers' range, and its largest is its first range's end;
//! * a packet frame is a non-empty range that ends the plaintext, and nothing follows it;
//! * a plaintext whose frames all decode re-encodes (`frame::Writer`) into no more bytes
//!   than it had (padding, extensions, longer-than-needed integers and ranges beyond
//!   `MAX_ACK_RANGES` drop out), decodes back to the same frames, and re-encodes from
//!   those to the same bytes again (the canonical form is a fixed point);
//! * packet numbers expand (`frame::expand_packet_number`) to a number with the same low
//!   32 bits, within 2^31 of the one expected after each ack's largest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::DropReason;
use linkpool_protocol::frame::{
    self, Frame, Frames, MAX_ACK_RANGES, PACKET_NUMBER_LEN, VARINT_MAX, Writer,
};

/// A frame with its inner packet as bytes rather than a range of one plaintext.
// An ack is a few hundred bytes, as in `Frame` itself.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
enum Owned<'a> {
    Frame(Frame),
    Packet(Option<frame::Spread>, &'a [u8]),
    Grant(&'a [u8]),
    Statement(&'a [u8]),
    Rating(&'a [u8]),
    Standby(&'a [u8]),
}

/// Decodes `plain` whole, checking each frame; `None` if a frame is malformed.
fn decode(plain: &[u8]) -> Option<(u32, Vec<Owned<'_>>)> {
    let (pn, mut frames) = match Frames::parse(plain) {
        Ok(x) => x,
        Err(e) => {
            assert_eq!(e, DropReason::BadFrame);
            assert!(
                plain.len() < PACKET_NUMBER_LEN,
                "{} bytes refused",
                plain.len()
            );
            return None;
        }
    };
    assert!(plain.len() >= PACKET_NUMBER_LEN);
    assert_eq!(pn.to_be_bytes(), plain[..PACKET_NUMBER_LEN]);
    let mut out = Vec::new();
    while let Some(f) = frames.next() {
        let f = match f {
            Ok(f) => f,
            Err(e) => {
                // The transport drops the whole packet at the first bad frame.
                assert_eq!(e, DropReason::BadFrame);
                return None;
            }
        };
        assert_eq!(
            f.is_ack_eliciting(),
            matches!(f, Frame::Ping | Frame::Packet { .. })
        );
        match f {
            Frame::Ack(a) => {
                let r = a.ranges();
                assert!(!r.is_empty() && r.len() <= MAX_ACK_RANGES, "{a:?}");
                assert_eq!(a.largest(), Some(r[0].1));
                assert!(r[0].1 <= VARINT_MAX, "{a:?}");
                assert!(a.delay_us <= VARINT_MAX && a.received_at_us <= VARINT_MAX);
                for &(start, end) in r {
                    assert!(start <= end, "range {start}..={end} backwards: {a:?}");
                }
                for w in r.windows(2) {
                    assert!(
                        w[1].1 + 2 <= w[0].0,
                        "ranges {:?} and {:?} not descending and disjoint: {a:?}",
                        w[0],
                        w[1]
                    );
                }
                check_expand(a.largest().expect("checked"), pn);
                out.push(Owned::Frame(f));
            }
            Frame::Packet { spread, range } => {
                assert!(range.0 < range.1, "empty packet {range:?}");
                assert_eq!(
                    range.1,
                    plain.len(),
                    "packet {range:?} does not end the plaintext"
                );
                assert!(range.0 > PACKET_NUMBER_LEN);
                assert_eq!(frames.next(), None, "a frame after the packet");
                out.push(Owned::Packet(spread, &plain[range.0..range.1]));
                break;
            }
            Frame::MeshGrant { range } => {
                assert_eq!(range.1 - range.0, frame::MESH_GRANT_LEN, "{range:?}");
                out.push(Owned::Grant(&plain[range.0..range.1]));
            }
            Frame::Statement { range } => {
                assert_eq!(range.1 - range.0, frame::STATEMENT_LEN, "{range:?}");
                out.push(Owned::Statement(&plain[range.0..range.1]));
            }
            Frame::Rating { range } => {
                assert_eq!(range.1 - range.0, frame::RATING_LEN, "{range:?}");
                out.push(Owned::Rating(&plain[range.0..range.1]));
            }
            Frame::Standby { range } => {
                let len = range.1 - range.0;
                assert!(len % 2 == 0 && len <= 2 * frame::MAX_STANDBY, "{range:?}");
                out.push(Owned::Standby(&plain[range.0..range.1]));
            }
            Frame::Ping | Frame::Receipt { .. } | Frame::Bid { .. } => out.push(Owned::Frame(f)),
        }
    }
    Some((pn, out))
}

/// The canonical encoding of `frames` with packet number `pn`, in at most `room` bytes.
fn encode(pn: u32, frames: &[Owned<'_>], room: usize) -> Vec<u8> {
    let mut buf = vec![0u8; room];
    let mut w = Writer::new(&mut buf, u64::from(pn)).expect("room for the packet number");
    let mut packet = None;
    for f in frames {
        let ok = match f {
            Owned::Frame(Frame::Ping) => w.ping(),
            Owned::Frame(Frame::Ack(a)) => w.ack(a),
            Owned::Frame(Frame::Bid { per_gb }) => w.bid(*per_gb),
            Owned::Frame(Frame::Receipt {
                path,
                packets,
                bytes,
            }) => w.receipt(*path, *packets, *bytes),
            Owned::Frame(Frame::Packet { .. }) => unreachable!("kept as Owned::Packet"),
            Owned::Frame(Frame::MeshGrant { .. }) => unreachable!("kept as Owned::Grant"),
            Owned::Frame(Frame::Statement { .. }) => unreachable!("kept as Owned::Statement"),
            Owned::Frame(Frame::Rating { .. }) => unreachable!("kept as Owned::Rating"),
            Owned::Frame(Frame::Standby { .. }) => unreachable!("kept as Owned::Standby"),
            Owned::Grant(body) => w.mesh_grant((*body).try_into().expect("checked length")),
            Owned::Statement(body) => w.statement((*body).try_into().expect("checked length")),
            Owned::Rating(body) => w.rating((*body).try_into().expect("checked length")),
            Owned::Standby(ids) => w.standby(
                ids.chunks_exact(2)
                    .map(|c| linkpool_protocol::PathId(u16::from_be_bytes([c[0], c[1]]))),
            ),
            Owned::Packet(spread, p) => {
                packet = Some((*spread, *p));
                Some(())
            }
        };
        assert!(
            ok.is_some(),
            "re-encoding {f:?} needs more room than the plaintext it was read from"
        );
    }
    let mut len = w.len();
    if let Some((spread, p)) = packet {
        let n = frame::write_packet_header(&mut buf[len..], spread)
            .expect("room for the packet frame header");
        len += n;
        buf[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    buf.truncate(len);
    buf
}

/// `expand_packet_number` against the largest received `largest`.
fn check_expand(largest: u64, truncated: u32) {
    let full = frame::expand_packet_number(Some(largest), truncated);
    assert_eq!(full as u32, truncated, "{largest} {truncated} -> {full}");
    const WIN: u64 = 1 << 32;
    let expected = largest + 1;
    if expected >= WIN / 2 && expected + 2 * WIN < VARINT_MAX {
        assert!(
            full.abs_diff(expected) <= WIN / 2,
            "packet number {truncated:#x} after {largest} expanded to {full}"
        );
    }
    assert_eq!(
        frame::expand_packet_number(None, truncated),
        u64::from(truncated)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((pn, frames)) = decode(data) else {
        return;
    };
    let once = encode(pn, &frames, data.len());
    assert!(once.len() <= data.len());
    let Some((pn2, again)) = decode(&once) else {
        panic!("re-encoded frames do not decode: {once:02x?} (from {data:02x?})");
    };
    assert_eq!(pn2, pn);
    assert_eq!(again, frames, "frames changed in a round trip");
    let twice = encode(pn2, &again, once.len());
    assert_eq!(twice, once, "the canonical encoding is not a fixed point");
});
