//! Fixed wire-format vectors: a change that breaks compatibility fails here. The expected
//! bytes are written from the format docs (`wire.rs`, `frame.rs`), not from the encoder:
//! if one of these changes, old and new builds can no longer talk, and `wire::VERSION`
//! must be bumped instead of the vector edited.

use linkpool_protocol::DropReason;
use linkpool_protocol::frame::{self, Ack, Frame, Frames, Writer};
use linkpool_protocol::mesh::{CREDENTIAL_LEN, Offer};
use linkpool_protocol::wire::{self, Message, MessageType, PathId, TransportHeader};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn version_and_sizes() {
    assert_eq!(wire::VERSION, 2);
    assert_eq!(MessageType::Transport as u8, 4);
    assert_eq!(wire::TRANSPORT_HEADER_LEN, 16);
    // Header, packet number, spread-packet frame header, tag.
    assert_eq!(wire::TRANSPORT_OVERHEAD, 16 + 4 + 7 + 16);
    // Header, packet number, tag: an empty plaintext but for its packet number.
    assert_eq!(wire::MIN_TRANSPORT_LEN, 36);
}

#[test]
fn transport_header() {
    // version 2, type 4, path u16, receiver index u32, counter u64; all big-endian.
    let expect = "02040109deadbeef0102030405060708";
    let header = TransportHeader {
        path: PathId(0x0109),
        receiver_index: 0xdead_beef,
        counter: 0x0102_0304_0506_0708,
    };
    let mut out = [0u8; 16];
    header.write(&mut out);
    assert_eq!(hex(&out), expect);
    // And back, from a datagram of the shortest transport length.
    let mut datagram = unhex(expect);
    datagram.resize(wire::MIN_TRANSPORT_LEN, 0);
    match Message::parse(&datagram) {
        Ok(Message::Transport(h)) => assert_eq!(h, header),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Message::parse(&datagram[..wire::MIN_TRANSPORT_LEN - 1]).err(),
        Some(DropReason::TooShort)
    );
    // Version 1's transport types are gone: a v1 data (4) or control (5) datagram is
    // refused by its version; type 5 is unknown in version 2.
    let mut v1 = datagram.clone();
    v1[0] = 1;
    assert_eq!(Message::parse(&v1).err(), Some(DropReason::UnknownVersion));
    let mut control = datagram;
    control[1] = 5;
    assert_eq!(
        Message::parse(&control).err(),
        Some(DropReason::UnknownType)
    );
}

/// The first frame of a plaintext (which must have its packet number).
fn first(plain: &[u8]) -> Option<Result<Frame, DropReason>> {
    Frames::parse(plain).unwrap().1.next()
}

/// Parses a plaintext vector whole.
fn parse(plain: &[u8]) -> (u32, Vec<Frame>) {
    let (pn, frames) = Frames::parse(plain).unwrap();
    (pn, frames.collect::<Result<_, _>>().unwrap())
}

#[test]
fn packet_numbers_and_pings() {
    // The packet number is 4 bytes, truncated to its low 32 bits.
    let mut buf = [0u8; 16];
    let mut w = Writer::new(&mut buf, (7 << 32) + 5).unwrap();
    w.ping().unwrap();
    let n = w.len();
    assert_eq!(hex(&buf[..n]), "00000005".to_string() + "01");
    assert_eq!(parse(&buf[..n]), (5, vec![Frame::Ping]));
    assert_eq!(
        frame::expand_packet_number(Some((7 << 32) + 3), 5),
        (7 << 32) + 5
    );
    // Padding is skipped wherever it is.
    let mut w = Writer::new(&mut buf, 0xfffe).unwrap();
    w.ping().unwrap();
    w.pad_to(10).unwrap();
    assert_eq!(
        hex(&buf[..10]),
        "0000fffe".to_string() + "01" + "0000000000"
    );
    assert_eq!(parse(&buf[..10]), (0xfffe, vec![Frame::Ping]));
    assert_eq!(parse(&unhex("00000001000001")), (1, vec![Frame::Ping]));
    assert!(Frames::parse(&[0, 0, 0]).is_err(), "no packet number");
}

#[test]
fn acks() {
    let cases = [
        // One range, one-byte varints: path 3, largest 9, delay 0, received at 0, no
        // extra ranges, first range 9 long (0..=9).
        (
            Ack::new(PathId(3), 0, 0, &[(0, 9)]),
            "02".to_string() + "0003" + "09" + "00" + "00" + "00" + "09",
        ),
        // Three ranges, RFC 9000 gaps: 90..=100, 50..=60, 10..=10. largest 100 (2-byte
        // varint 0x4064), delay 1234 µs (0x44d2), received at 5 s (4-byte 0x804c4b40),
        // 2 extra ranges, first 10; gap 90-60-2 = 28, length 10; gap 50-10-2 = 38,
        // length 0.
        (
            Ack::new(PathId(2), 1234, 5_000_000, &[(90, 100), (50, 60), (10, 10)]),
            "02".to_string()
                + "0002"
                + "4064"
                + "44d2"
                + "804c4b40"
                + "02"
                + "0a"
                + "1c"
                + "0a"
                + "26"
                + "00",
        ),
        // Eight-byte varints: largest 2^40, received at 2^62 - 1 (the largest).
        (
            Ack::new(PathId(0xffff), 0, frame::VARINT_MAX, &[(1 << 40, 1 << 40)]),
            "02".to_string()
                + "ffff"
                + "c000010000000000"
                + "00"
                + "ffffffffffffffff"
                + "00"
                + "00",
        ),
    ];
    for (ack, body) in cases {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf, 1).unwrap();
        w.ack(&ack).unwrap();
        let n = w.len();
        let expect = "00000001".to_string() + &body;
        assert_eq!(hex(&buf[..n]), expect, "{ack:?}");
        assert_eq!(parse(&buf[..n]), (1, vec![Frame::Ack(ack)]));
        // Cut anywhere inside the frame: malformed, never a panic or a shorter ack.
        for cut in 5..n {
            assert_eq!(
                first(&buf[..cut]),
                Some(Err(DropReason::BadFrame)),
                "{ack:?} cut at {cut}"
            );
        }
    }
    // A first range longer than the largest, and a gap below zero.
    for bad in [
        "00000001".to_string() + "02" + "0001" + "05" + "00" + "00" + "00" + "06",
        "00000001".to_string() + "02" + "0001" + "05" + "00" + "00" + "01" + "01" + "09" + "00",
    ] {
        assert_eq!(
            first(&unhex(&bad)),
            Some(Err(DropReason::BadFrame)),
            "{bad}"
        );
    }
}

#[test]
fn receipts() {
    // path 7, 3000 packets (0x4bb8), 1.5 MB (0x8016e360).
    let mut buf = [0u8; 32];
    let mut w = Writer::new(&mut buf, 2).unwrap();
    w.receipt(PathId(7), 3000, 1_500_000).unwrap();
    let n = w.len();
    assert_eq!(
        hex(&buf[..n]),
        "00000002".to_string() + "03" + "0007" + "4bb8" + "8016e360"
    );
    assert_eq!(
        parse(&buf[..n]),
        (
            2,
            vec![Frame::Receipt {
                path: PathId(7),
                packets: 3000,
                bytes: 1_500_000
            }]
        )
    );
    assert_eq!(first(&buf[..n - 1]), Some(Err(DropReason::BadFrame)));
}

#[test]
fn packets_and_spread_packets() {
    let inner = unhex("4500001400000000401100000a4d0002c0000201");
    // A packet frame: type 4, then the packet to the end of the plaintext.
    let mut buf = [0u8; 64];
    let n = frame::write_packet_header(&mut buf[4..], None).unwrap();
    assert_eq!(n, frame::PACKET_FRAME_LEN);
    buf[..4].copy_from_slice(&9u32.to_be_bytes());
    buf[4 + n..4 + n + inner.len()].copy_from_slice(&inner);
    let plain = &buf[..4 + n + inner.len()];
    assert_eq!(hex(plain), "00000009".to_string() + "04" + &hex(&inner));
    assert_eq!(
        parse(plain),
        (
            9,
            vec![Frame::Packet {
                spread: None,
                range: (5, plain.len())
            }]
        )
    );
    // After an ack (a packet frame always comes last).
    let mut w = Writer::new(&mut buf, 10).unwrap();
    w.ack(&Ack::new(PathId(1), 0, 0, &[(4, 4)])).unwrap();
    let at = w.len();
    let spread = frame::Spread {
        flow: 0x0102,
        seq: 0xdead_beef,
        hold: true,
    };
    let n = frame::write_packet_header(&mut buf[at..], Some(spread)).unwrap();
    assert_eq!(n, frame::SPREAD_PACKET_FRAME_LEN);
    buf[at + n..at + n + inner.len()].copy_from_slice(&inner);
    let plain = &buf[..at + n + inner.len()];
    assert_eq!(
        hex(plain),
        "0000000a".to_string() + "02000104000000" + "00" + "050102deadbeef" + &hex(&inner)
    );
    let (_, frames) = parse(plain);
    assert_eq!(
        frames[1],
        Frame::Packet {
            spread: Some(spread),
            range: (at + 7, plain.len())
        }
    );
    assert!(!frames[0].is_ack_eliciting() && frames[1].is_ack_eliciting());
    // A duplicated packet (type 6) is delivered at once by the far end: hold is off.
    let copy = unhex(&("00000001".to_string() + "060102deadbeef" + &hex(&inner)));
    assert_eq!(
        parse(&copy).1,
        vec![Frame::Packet {
            spread: Some(frame::Spread {
                hold: false,
                ..spread
            }),
            range: (11, copy.len())
        }]
    );
    // An empty packet frame, and a spread header cut short, are malformed.
    for bad in ["0000000104", "0000000105dead", "00000001060102dead"] {
        assert_eq!(first(&unhex(bad)), Some(Err(DropReason::BadFrame)), "{bad}");
    }
}

#[test]
fn extensions_are_skipped_and_unknown_frames_refused() {
    // 0x40 and up carry their length: a later version's frame is skipped.
    let plain = unhex(&("00000003".to_string() + "4f" + "02" + "aabb" + "01" + "ff" + "00"));
    assert_eq!(parse(&plain), (3, vec![Frame::Ping]));
    // An extension longer than what is left is malformed.
    assert_eq!(
        first(&unhex("000000034f05aabb")),
        Some(Err(DropReason::BadFrame))
    );
    // Below 0x40 every type is known to this version: the rest cannot be skipped.
    for t in [0x07u8, 0x3f] {
        assert_eq!(
            first(&[0, 0, 0, 3, t, 0]),
            Some(Err(DropReason::BadFrame)),
            "{t:#x}"
        );
    }
}

/// The mesh hellos' layouts. Their credentials, MACs and pairwise key have vectors of
/// their own, with fixed keys, in `protocol/src/mesh.rs` (`mesh::tests::vectors`).
#[test]
fn mesh_hellos() {
    assert_eq!(MessageType::MeshDiscovery as u8, 8);
    assert_eq!(MessageType::NeighbourHello as u8, 9);
    assert_eq!(CREDENTIAL_LEN, 120);
    assert_eq!(wire::MESH_DISCOVERY_LEN, 136);
    assert_eq!(wire::NEIGHBOUR_HELLO_LEN, 44);
    let offer = Offer {
        sharing: true,
        up_kbit: 20_000,
        down_kbit: 0x0102_0304,
    };
    let credential = [0x11; CREDENTIAL_LEN];
    let mut out = [0u8; wire::MESH_DISCOVERY_LEN];
    wire::write_mesh_discovery(7118, &offer, &credential, None, &mut out).unwrap();
    // version, type 8, flags (sharing), reserved, relay port, reserved, up, down, credential.
    assert_eq!(
        hex(&out),
        "020801001bce000000004e2001020304".to_string() + &"11".repeat(CREDENTIAL_LEN)
    );
    match Message::parse(&out) {
        Ok(Message::MeshDiscovery(d)) => {
            assert_eq!((d.relay_port(), d.offer()), (7118, offer));
            assert_eq!(d.credential(), &credential);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Message::parse(&out[..135]).err(),
        Some(DropReason::TooShort)
    );
    // With a rating: flag bit 1, the rating's bytes after the credential.
    let rating = [0x22; linkpool_protocol::statement::RATING_LEN];
    let mut rated = [0u8; wire::MESH_DISCOVERY_RATED_LEN];
    let len = wire::write_mesh_discovery(7118, &offer, &credential, Some(&rating), &mut rated);
    assert_eq!(len, Some(wire::MESH_DISCOVERY_RATED_LEN));
    assert_eq!(
        hex(&rated),
        "020803001bce000000004e2001020304".to_string()
            + &"11".repeat(CREDENTIAL_LEN)
            + &"22".repeat(rating.len())
    );
    match Message::parse(&rated) {
        Ok(Message::MeshDiscovery(d)) => assert_eq!(d.rating(), Some(&rating)),
        other => panic!("{other:?}"),
    }
    // The flag without the rating, or a rating without the flag: refused.
    rated[2] = 1;
    assert_eq!(Message::parse(&rated).err(), Some(DropReason::BadLength));
    out[2] |= 2;
    assert_eq!(Message::parse(&out).err(), Some(DropReason::TooShort));
    let mut out = [0u8; wire::NEIGHBOUR_HELLO_LEN];
    wire::write_neighbour_hello(7, 0x0102_0304_0506_0708, 7118, &offer, &mut out[..28]);
    out[28..].copy_from_slice(&[0xaa; 16]);
    // version, type 9, flags, reserved, sender, counter, relay port, reserved, up, down, MAC.
    assert_eq!(
        hex(&out),
        "020901000000000701020304050607081bce000000004e2001020304".to_string() + &"aa".repeat(16)
    );
    match Message::parse(&out) {
        Ok(Message::NeighbourHello(h)) => {
            assert_eq!((h.sender(), h.counter()), (7, 0x0102_0304_0506_0708));
            assert_eq!((h.relay_port(), h.offer()), (7118, offer));
            assert_eq!(h.mac_input(), &out[..28]);
            assert_eq!(h.mac(), &[0xaa; 16]);
        }
        other => panic!("{other:?}"),
    }
    let mut long = [0u8; 45];
    long[..44].copy_from_slice(&out);
    assert_eq!(Message::parse(&long).err(), Some(DropReason::BadLength));
}

/// The relay envelope's layout. Its tag, with fixed keys, has a vector of its own in
/// `protocol/src/relay/slots.rs` (`relay::slots::tests::relay_tag_vectors`): a
/// `RelayKey` cannot be made from bytes outside the crate.
#[test]
fn relay_envelopes() {
    assert_eq!(MessageType::RelayUp as u8, 6);
    assert_eq!(MessageType::RelayDown as u8, 7);
    assert_eq!(wire::RELAY_HEADER_LEN, 12);
    assert_eq!(wire::RELAY_OVERHEAD, 12 + 16);
    // version, type, reserved (2), relay index, slot; then the carried datagram, untouched,
    // and the 16-byte tag.
    let inner = "02040109deadbeef0000000000000001a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
    for (kind, header) in [
        (MessageType::RelayUp, "020600000102030400000501"),
        (MessageType::RelayDown, "020700000102030400000501"),
    ] {
        let mut out = [0u8; wire::RELAY_HEADER_LEN];
        wire::write_relay_header(kind, 0x0102_0304, 0x0000_0501, &mut out);
        assert_eq!(hex(&out), header);
        let envelope = unhex(&(header.to_string() + inner + &"5a".repeat(16)));
        match Message::parse(&envelope) {
            Ok(Message::Relay(e)) => {
                assert_eq!(e.kind(), kind);
                assert_eq!((e.relay_index(), e.slot()), (0x0102_0304, 0x0000_0501));
                assert_eq!(hex(e.inner()), inner);
                assert_eq!(e.tag_input(), &envelope[..envelope.len() - 16]);
                assert_eq!(e.tag(), &[0x5a; 16]);
            }
            other => panic!("{other:?}"),
        }
        // The shortest envelope carries 4 bytes.
        let shortest = unhex(&(header.to_string() + "02040000" + &"5a".repeat(16)));
        assert!(matches!(Message::parse(&shortest), Ok(Message::Relay(_))));
        assert_eq!(
            Message::parse(&shortest[..shortest.len() - 1]).err(),
            Some(DropReason::TooShort)
        );
    }
}
