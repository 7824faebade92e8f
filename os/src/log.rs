//! Logging to stderr (procd forwards it to logd on OpenWrt).

use std::io::IsTerminal as _;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, reload};

/// Environment variable: `0` drops timestamps (logd adds its own), `1` forces them.
/// Without it, timestamps are left out when stderr is not a terminal and the parent is
/// init (procd, systemd), which stamp lines themselves.
pub const TIMESTAMPS_ENV: &str = "LINKPOOL_LOG_TIMESTAMPS";

/// Handle to change the log level later (on SIGHUP).
#[derive(Clone)]
pub struct LogHandle {
    level: reload::Handle<LevelFilter, tracing_subscriber::Registry>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogHandle")
    }
}

impl LogHandle {
    /// Changes the level from now on.
    pub fn set_level(&self, level: LevelFilter) {
        let _ = self.level.modify(|l| *l = level);
    }
}

fn want_timestamps() -> bool {
    match std::env::var(TIMESTAMPS_ENV).as_deref() {
        Ok("0") | Ok("false") | Ok("no") => false,
        Ok(_) => true,
        Err(_) => std::io::stderr().is_terminal() || nix::unistd::getppid().as_raw() != 1,
    }
}

/// Parses a level name: `error`, `warn`, `info`, `debug`, `trace` (or `off`).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => {
            s.parse().map_err(|_| format!("unknown log level `{s}`"))
        }
        _ => Err(format!(
            "unknown log level `{s}` (expected error, warn, info, debug or trace)"
        )),
    }
}

/// Installs the global subscriber writing to stderr at `level`. Call once.
pub fn init(level: LevelFilter) -> LogHandle {
    let (filter, handle) = reload::Layer::new(level);
    let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    // The two branches differ in type, so each installs its own subscriber.
    let _ = if want_timestamps() {
        registry.with(layer).try_init()
    } else {
        registry.with(layer.without_time()).try_init()
    };
    LogHandle { level: handle }
}
