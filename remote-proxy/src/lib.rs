//! The linkpool remote proxy: configuration, administration commands, OS set-up and the
//! daemon.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod admin_http;
pub mod config;
pub mod daemon;
pub mod ledger;
pub mod setup;
