//! `relay::MeshKey::open_hello` on anything: no panic; a hello sealed with the key opens to
//! the same hello, and one bit flipped anywhere in it is refused.
//!
//! First byte even: the rest is opened as a datagram. Odd: the rest gives a hello's fields
//! (bytes 4.. of a hello), which is sealed, opened, then tampered with at `rest[0]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::wire::{MESH_HELLO_LEN, MeshHello};

fuzz_target!(|data: &[u8]| {
    let key = linkpool_fuzz::mesh_key();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(hello) = key.open_hello(rest) {
            // Only a hello with a valid tag opens: it must be one we could have sealed.
            let mut out = [0u8; MESH_HELLO_LEN];
            key.seal_hello(&hello, &mut out).expect("fits");
            assert_eq!(out[4..38], rest[4..38]);
            assert_eq!(out[40..52], rest[40..52]);
        }
        return;
    }
    let mut f = [0u8; 48];
    let n = rest.len().min(48);
    f[..n].copy_from_slice(&rest[..n]);
    let hello = MeshHello {
        member: f[..32].try_into().expect("32 bytes"),
        relay_port: u16::from_be_bytes([f[32], f[33]]),
        offered_kbit: u32::from_be_bytes(f[36..40].try_into().expect("4 bytes")),
        sent_at_ms: u64::from_be_bytes(f[40..48].try_into().expect("8 bytes")),
    };
    let mut out = [0u8; MESH_HELLO_LEN];
    let len = key.seal_hello(&hello, &mut out).expect("fits");
    assert_eq!(len, MESH_HELLO_LEN);
    assert_eq!(key.open_hello(&out), Ok(hello));
    let flip = usize::from(rest.first().copied().unwrap_or(0)) % (MESH_HELLO_LEN * 8);
    // Bytes 2-3 and 38-39 are reserved and not read; any other flip must be caught (by the
    // MAC, or by the parser for the header bytes).
    let byte = flip / 8;
    if !matches!(byte, 2 | 3 | 38 | 39) {
        out[byte] ^= 1 << (flip % 8);
        assert!(
            key.open_hello(&out).is_err(),
            "tampered hello accepted (bit {flip})"
        );
    }
});
