//! Link parameters (delay, jitter, loss, rate, queue, up/down) and their text form.
//!
//! The text form is shared by topology files and the `link` command:
//! `delay=20ms jitter=2ms loss=1% rate=20mbit queue=100ms down`.
//!
//! They live in `linkpool-sim` ([`linkpool_sim::link`]) with the link model the emulator
//! and the in-process simulator share; this module re-exports them.

pub use linkpool_sim::link::{LinkParams, LinkSpec, parse_duration, parse_loss, parse_rate};
