//! The thin OS layer both daemons share.
//!
//! Everything here is a small wrapper around one kernel facility: a TUN device
//! ([`tun`]), policy routing and nftables set-up through the `ip` and `nft` tools
//! ([`routing`]), UDP sockets bound to an uplink ([`socket`]), logging ([`log`]) and
//! signals ([`signal`]). Routing and firewall changes are applied atomically where the
//! tools allow it and removed completely at stop; teardown also runs before every apply,
//! so leftovers of a crash are cleared. Both daemons also share how configuration files
//! are read ([`config_file`]) and what status says of spreading ([`status`]).
#![warn(missing_docs, unreachable_pub)]

pub mod cli;
pub mod cmd;
pub mod config_file;
pub mod control;
pub mod event;
pub mod log;
pub mod netns;
pub mod routing;
pub mod signal;
pub mod socket;
pub mod status;
pub mod tun;

pub use cmd::OsError;
