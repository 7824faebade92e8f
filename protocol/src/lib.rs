//! The sans-IO core of linkpool.
//!
//! Nothing here opens a socket, reads a clock or spawns a thread: every entry point takes
//! `now`, `handle_*` calls feed datagrams in and `poll_*` calls take out what to send and
//! when to wake up. The daemons are thin I/O shells around it.
#![warn(missing_docs, unreachable_pub)]

pub mod bundle;
pub mod keys;
pub mod session;
