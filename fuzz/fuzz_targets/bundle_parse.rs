//! `bundle::MemberBundle::parse` on anything: no panic, and a bundle that parses renders to
//! a bundle that parses to the same thing.
//!
//! First byte `T`: the rest is bundle *text*, wrapped here as an `LP2:` bundle with its
//! checksum (`bundle::wrap_text`) so that the fuzzer works on the key/value lines past the
//! checksum; anything else: the rest is parsed as given (`LP2:`, `LP1:`, damaged, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::bundle::{MemberBundle, wrap_text};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode == b'T' {
        wrap_text(rest)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    let Ok(bundle) = MemberBundle::parse(&input) else {
        return;
    };
    let rendered = bundle.render();
    let again = MemberBundle::parse(&rendered)
        .unwrap_or_else(|e| panic!("rendered bundle does not parse: {e}\n{rendered}"));
    assert_eq!(again, bundle, "bundle changed in a render/parse round trip");
    assert_eq!(again.render(), rendered);
});
