//! The gateway's OS side: TUN device with the member's tunnel addresses, policy routing
//! and nftables, all removed again when [`GatewayOs`] is dropped.

use crate::config::GatewayConfig;
use linkpool_os::OsError;
use linkpool_os::routing::GatewayRouting;
use linkpool_os::tun::{AsyncTun, Tun};
use std::net::IpAddr;
use tracing::{info, warn};

/// Bytes a sealed packet adds on the wire, worst case (relayed, over IPv6). Used for the
/// automatic tunnel MTU.
pub const ENCAPSULATION_OVERHEAD: u16 = linkpool_protocol::wire::WORST_CASE_OVERHEAD as u16;

/// MTU assumed for an uplink whose device cannot be read (not up yet).
const ASSUMED_UPLINK_MTU: u16 = 1500;

/// The MTU of a network device, from sysfs.
pub fn device_mtu(device: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{device}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The tunnel MTU: the configured one, or the worst uplink's MTU minus the encapsulation,
/// never below what the tunnel's address families need (1280 with IPv6, 576 without) and
/// never above what a datagram carries ([`crate::config::MAX_MTU`]: jumbo-frame uplinks).
pub fn tunnel_mtu(config: &GatewayConfig) -> u16 {
    let automatic = automatic_mtu(config);
    match config.tunnel.mtu {
        Some(m) if m > automatic => {
            warn!(
                "tunnel MTU {m} is above what the worst uplink carries after the \
                 encapsulation ({automatic}): full-size packets will leave as fragments, which \
                 some networks drop; leave the MTU automatic (0) unless you know better"
            );
            m
        }
        Some(m) => m,
        None => automatic,
    }
}

fn automatic_mtu(config: &GatewayConfig) -> u16 {
    let worst = config
        .uplinks
        .iter()
        .map(|u| device_mtu(&u.device).unwrap_or(ASSUMED_UPLINK_MTU))
        .min()
        .unwrap_or(ASSUMED_UPLINK_MTU);
    let floor = if config.bundle.addresses.iter().any(IpAddr::is_ipv6) {
        1280
    } else {
        576
    };
    worst
        .saturating_sub(ENCAPSULATION_OVERHEAD)
        .clamp(floor, crate::config::MAX_MTU)
}

/// The TUN device and routing in place. Dropping it removes the routing (then the device).
#[derive(Debug)]
pub struct GatewayOs {
    /// The TUN device, registered with tokio.
    pub tun: AsyncTun,
    /// The tunnel MTU in use.
    pub mtu: u16,
    routing: GatewayRouting,
}

impl GatewayOs {
    /// The routing that is in place.
    pub fn routing(&self) -> &GatewayRouting {
        &self.routing
    }
}

/// Creates the TUN device, gives it the member's tunnel addresses and steers LAN traffic
/// into it. Must run inside a tokio runtime.
pub fn setup(config: &GatewayConfig) -> Result<GatewayOs, OsError> {
    let mtu = tunnel_mtu(config);
    let tun = Tun::create(&config.tunnel.device)?;
    let addresses: Vec<(IpAddr, u8)> = config
        .bundle
        .addresses
        .iter()
        .map(|&a| (a, if a.is_ipv6() { 128 } else { 32 }))
        .collect();
    tun.configure(mtu, &addresses)?;
    let routing = config.routing(mtu);
    routing.apply()?;
    info!(
        device = %config.tunnel.device,
        mtu,
        table = config.tunnel.table,
        lan = ?config.tunnel.lan_devices,
        "tunnel device and routing set up"
    );
    let tun = AsyncTun::new(tun)
        .map_err(|e| OsError::io("registering the TUN device with the event loop", e))?;
    Ok(GatewayOs { tun, mtu, routing })
}

impl Drop for GatewayOs {
    fn drop(&mut self) {
        match self.routing.teardown() {
            Ok(()) => info!("routing removed"),
            Err(e) => warn!("removing routing: {e}"),
        }
    }
}
