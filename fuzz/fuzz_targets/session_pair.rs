//! A connected gateway/proxy pair (fixed keys, built once) fed scripts of raw, replayed,
//! tampered and sealed datagrams and passing time. See `src/session.rs` for the script
//! format and what each delivery asserts (drops counted, replays refused, sealed packets
//! delivered intact).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use linkpool_fuzz::session::Pair;

static PAIR: OnceLock<Mutex<Pair>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let pair = PAIR.get_or_init(|| Mutex::new(Pair::new()));
    // A panic in an earlier input poisons the lock; libFuzzer stops at the first anyway.
    let mut pair = pair.lock().unwrap_or_else(|e| e.into_inner());
    pair.run(data);
});
