//! The linkpool gateway: configuration (TOML and UCI), OS set-up and the daemon.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod daemon;
pub mod ledger;
pub mod netifd;
pub mod proxy_target;
pub mod setup;
pub mod state;
pub mod uci;
