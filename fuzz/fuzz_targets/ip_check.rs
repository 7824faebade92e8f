//! `ip::check` on anything: no panic, and what passes is an IPv4 or IPv6 packet whose
//! header length fields match the buffer, with addresses readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpool_protocol::ip;

fuzz_target!(|data: &[u8]| {
    if ip::check(data).is_err() {
        return;
    }
    match data[0] >> 4 {
        4 => {
            assert!(data.len() >= 20);
            assert_eq!(
                usize::from(u16::from_be_bytes([data[2], data[3]])),
                data.len()
            );
        }
        6 => {
            assert!(data.len() >= 40);
            assert_eq!(
                usize::from(u16::from_be_bytes([data[4], data[5]])) + 40,
                data.len()
            );
        }
        v => panic!("version {v} passed"),
    }
    assert!(ip::source(data).is_some());
    assert!(ip::destination(data).is_some());
});
