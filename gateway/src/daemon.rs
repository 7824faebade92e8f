//! STUB — the lead replaces this module with the gateway's event loop.
//!
//! Contract: `run` gets the validated configuration, the OS side already set up (TUN,
//! routing; removed when `os` is dropped) and the way to read the configuration again on
//! SIGHUP. It returns when the daemon should stop. Uplink sockets are opened here (not in
//! set-up) with [`linkpool_os::socket::uplink_socket`], because an uplink's device may
//! appear later than the daemon starts.
//!
//! Until then it only waits for signals, so that everything around it can be tested.

use crate::config::{ConfigSource, GatewayConfig, Loaded};
use crate::setup::GatewayOs;
use linkpool_os::log::LogHandle;
use linkpool_os::signal::{Signal, Signals};
use tracing::{error, info, warn};

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    config: GatewayConfig,
    os: GatewayOs,
    source: ConfigSource,
    log: LogHandle,
) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    for uplink in &config.uplinks {
        match linkpool_os::socket::uplink_socket(Some(&uplink.device), config.tunnel.fwmark) {
            Ok(_socket) => {
                info!(uplink = %uplink.name, device = %uplink.device, "uplink socket open")
            }
            Err(e) => warn!(uplink = %uplink.name, "uplink socket: {e}"),
        }
    }
    info!(
        member = %config.bundle.member,
        tun = %os.tun.get_ref().name(),
        "running (stub daemon: no traffic is forwarded yet)"
    );
    loop {
        match signals.recv().await {
            Signal::Terminate => {
                info!("stopping");
                return Ok(());
            }
            Signal::Reload => match source.load() {
                Ok(Loaded::Enabled(new)) => {
                    log.set_level(new.log_level);
                    info!("configuration re-read");
                }
                Ok(Loaded::Disabled { reason }) => info!("configuration now disabled ({reason})"),
                Err(e) => error!("configuration not reloaded: {e}"),
            },
        }
    }
}
