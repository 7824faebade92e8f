//! Fixed wire-format vectors: a change that breaks compatibility fails here.

use linkpool_protocol::keys::SharedSecret;
use linkpool_protocol::relay::MeshKey;
use linkpool_protocol::wire::{Control, MeshHello, Message, MessageType, PathId, TransportHeader};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn transport_header() {
    let mut out = [0u8; 16];
    TransportHeader {
        kind: MessageType::Control,
        path: PathId(9),
        receiver_index: 0xdead_beef,
        counter: 0x0102_0304_0506_0708,
    }
    .write(&mut out);
    assert_eq!(hex(&out), "01050900deadbeef0102030405060708");
}

#[test]
fn control_messages() {
    let cases = [
        (Control::Keepalive, "00".to_string()),
        (
            Control::Probe {
                seq: 5,
                sent_at_us: 1_000_000,
            },
            "0100000005".to_string() + "00000000000f4240",
        ),
        (
            Control::ProbeAck {
                seq: 5,
                echo_sent_at_us: 1,
                received_at_us: 2,
            },
            "0200000005".to_string() + "0000000000000001" + "0000000000000002",
        ),
        (
            Control::Receipt {
                path: PathId(2),
                packets: 3,
                bytes: 4500,
                highest_counter: 7,
            },
            "0302".to_string() + "0000000000000003" + "0000000000001194" + "0000000000000007",
        ),
    ];
    for (control, expect) in cases {
        let mut out = [0u8; Control::MAX_LEN];
        let n = control.encode(&mut out);
        assert_eq!(hex(&out[..n]), expect, "{control:?}");
        assert_eq!(Control::decode(&out[..n]), Ok(control));
        assert!(Control::decode(&out[..n - 1]).is_err() || n == 1);
    }
}

#[test]
fn mesh_hello() {
    let key = MeshKey::new(&SharedSecret::from_bytes([0x42; 32]));
    let hello = MeshHello {
        member: [0x11; 32],
        relay_port: 7118,
        offered_kbit: 20_000,
        sent_at_ms: 1_700_000_000_000,
    };
    let mut out = [0u8; 128];
    let n = key.seal_hello(&hello, &mut out).unwrap();
    assert_eq!(
        hex(&out[..n - 16]),
        "01080000".to_string() + &"11".repeat(32) + "1bce0000" + "00004e20" + "0000018bcfe56800"
    );
    assert_eq!(key.open_hello(&out[..n]), Ok(hello));
    let mut forged = out;
    forged[40] ^= 1;
    assert!(key.open_hello(&forged[..n]).is_err());
    // Another co-op's key does not verify.
    let other = MeshKey::new(&SharedSecret::from_bytes([0x43; 32]));
    assert!(other.open_hello(&out[..n]).is_err());
    assert!(matches!(
        Message::parse(&out[..n]),
        Ok(Message::MeshHello(..))
    ));
}
