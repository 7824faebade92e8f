//! Relay envelopes at all three ends of a relayed path (`src/relay.rs`): a consumer, its
//! neighbour's relay and the proxy, connected once per process with fixed keys and kept
//! from input to input. Each input is a neighbour's datagram to the relay's `relay_up`
//! (from the admitted consumer and from a stranger), a datagram to the proxy from the
//! relay's line, one to the relay from the proxy, and one on the mesh to both routers'
//! `handle_mesh_datagram`; with an odd first byte, `slot:u32be inner` after it is also
//! sealed with the relay session's real tag keys, both ways.
//!
//! Checked: no panic; a relayed datagram goes only to the proxy on the relay's own line,
//! untouched, and only for an admitted neighbour; a RelayDown goes only to the neighbour
//! holding the slot it names; every refusal is counted once under its reason; no counter
//! goes back.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use linkpool_fuzz::relay::Relayed;

static NET: OnceLock<Mutex<Relayed>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let net = NET.get_or_init(|| Mutex::new(Relayed::new()));
    // A panic in an earlier input poisons the lock; libFuzzer stops at the first anyway.
    let mut net = net.lock().unwrap_or_else(|e| e.into_inner());
    net.run_input(data);
});
