//! `bundle::MemberBundle::parse` on anything: no panic, and a bundle that parses renders to
//! a bundle that parses to the same thing.
//!
//! First byte `T`: the rest is bundle *text*, wrapped here as `LP1:` + base64 so that the
//! fuzzer works on the key/value lines; anything else: the rest is parsed as given.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use linkpool_protocol::bundle::{BUNDLE_PREFIX, MemberBundle};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode == b'T' {
        format!("{BUNDLE_PREFIX}{}", STANDARD.encode(rest))
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
