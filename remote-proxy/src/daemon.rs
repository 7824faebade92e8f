//! STUB — the lead replaces this module with the proxy's event loop.
//!
//! Contract: `run` gets the validated configuration, the OS side already set up (TUN, NAT,
//! listening sockets; removed when `os` is dropped) and the configuration file to read
//! again on SIGHUP (new members without dropping sessions). It returns when the daemon
//! should stop.
//!
//! Until then it only waits for signals, so that everything around it can be tested.

use crate::config::ProxyConfig;
use crate::setup::ProxyOs;
use linkpool_os::log::LogHandle;
use linkpool_os::signal::{Signal, Signals};
use tracing::{error, info};

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ProxyConfig, os: ProxyOs, log: LogHandle) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    info!(
        members = config.members.len(),
        tun = %os.tun.get_ref().name(),
        "running (stub daemon: no traffic is forwarded yet)"
    );
    loop {
        match signals.recv().await {
            Signal::Terminate => {
                info!("stopping");
                return Ok(());
            }
            Signal::Reload => match ProxyConfig::load(&config.file) {
                Ok(new) => {
                    log.set_level(new.log_level);
                    info!(members = new.members.len(), "configuration re-read");
                }
                Err(e) => error!("configuration not reloaded: {e}"),
            },
        }
    }
}
