//! `wire::Control::decode` on anything: no panic, and what decodes encodes back to the
//! same bytes (the format has no slack).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::wire::Control;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::decode(data) {
        let mut out = [0u8; Control::MAX_LEN];
        let n = c.encode(&mut out);
        assert_eq!(&out[..n], data, "{c:?} does not round-trip");
        assert_eq!(Control::decode(&out[..n]), Ok(c));
    }
});
