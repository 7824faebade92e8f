//! The sans-IO core of linkpool.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread: every entry point takes
//! `now`, `handle_*` calls feed datagrams in and `poll_*` calls take out what to send and
//! when to wake up. The daemons are thin I/O shells around it.
//!
//! * [`wire`]: every message on the wire, parsed once and checked; [`frame`]: what a
//!   sealed transport packet holds (per-path packet numbers, acks, pings, packets).
//! * [`path::Path`]: one path's state machine, estimates and counters, at either end.
//! * [`client::Client`]: a member's session with the proxy, over any number of paths.
//! * [`server::Server`]: the proxy's sessions with all members.
//! * [`relay`]: relay envelopes.
//! * [`mesh`]: who is a neighbour: proxy-signed credentials, authenticated hellos.
//! * [`usage`]: the bytes each member's traffic took and on whose line, for the ledger.
//! * [`keys`], [`bundle`]: static keys and the member bundle a co-op hands out.
#![warn(missing_docs, unreachable_pub)]

pub mod bundle;
pub mod calendar;
pub mod client;
pub mod credits;
mod crypto;
pub mod devices;
mod drop;
pub mod flow;
pub mod forecast;
pub mod fq;
pub mod frame;
pub mod ip;
pub mod keys;
pub mod mesh;
pub mod metered;
pub mod path;
mod queue;
pub mod rating;
pub mod relay;
pub mod reorder;
mod replay;
pub mod server;
pub mod session;
pub mod sharing;
pub mod statement;
mod transport;
pub mod usage;
pub mod wire;

pub use drop::{DropCounters, DropReason};
pub use replay::{ReplayWindow, WINDOW as REPLAY_WINDOW};
pub use transport::{FLOW_SLOTS, MAX_PATHS, PathEvent, SpreadCounters, Transmit};
pub use wire::{CipherSuite, PathId};

/// Small deterministic generator for session indices (not for keys: those come from the
/// OS through snow).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
