//! The proxy's OS side: the TUN device holding the pools' first addresses (so the kernel
//! routes the pools to it), NAT to the world, and the listening sockets. All removed again
//! when [`ProxyOs`] is dropped.

use crate::config::ProxyConfig;
use linkpool_os::OsError;
use linkpool_os::routing::{ForwardingState, ProxyNat};
use linkpool_os::socket::listen_socket;
use linkpool_os::tun::{AsyncTun, Tun};
use std::net::SocketAddr;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// The OS side in place.
#[derive(Debug)]
pub struct ProxyOs {
    /// The TUN device, registered with tokio.
    pub tun: AsyncTun,
    /// One socket per `listen` address.
    pub sockets: Vec<(SocketAddr, UdpSocket)>,
    nat: ProxyNat,
    forwarding: ForwardingState,
}

/// Opens the listening sockets, creates the TUN device and installs NAT. Must run inside a
/// tokio runtime.
pub fn setup(config: &ProxyConfig) -> Result<ProxyOs, OsError> {
    // Sockets first: a port already in use is the most likely failure, and needs no cleanup.
    let mut sockets = Vec::new();
    for &addr in &config.listen {
        let s = listen_socket(addr).map_err(|e| OsError::io(format!("listen {addr}"), e))?;
        sockets.push((addr, s));
    }
    // NAT before the TUN device: the pools are routed once the device has its addresses,
    // and nothing from them may reach the world unmasqueraded. After a crash the old NAT
    // table stays in force until `apply` replaces it, in one transaction: connection
    // tracking never stops, so the members' established flows resume where they were.
    let nat = config.nat();
    let forwarding = nat.apply()?;
    let tun = match create_tun(config) {
        Ok(t) => t,
        Err(e) => {
            let _ = nat.teardown(&forwarding);
            return Err(e);
        }
    };
    info!(
        device = %config.tunnel.device,
        mtu = config.tunnel.mtu,
        ipv4_pool = %config.tunnel.ipv4_pool,
        ipv6_pool = ?config.tunnel.ipv6_pool.map(|p| p.to_string()),
        listen = ?config.listen,
        "tunnel device, NAT and sockets set up"
    );
    let tun = match AsyncTun::new(tun) {
        Ok(t) => t,
        Err(e) => {
            let _ = nat.teardown(&forwarding);
            return Err(OsError::io(
                "registering the TUN device with the event loop",
                e,
            ));
        }
    };
    Ok(ProxyOs {
        tun,
        sockets,
        nat,
        forwarding,
    })
}

/// The TUN device with the pools' first addresses, up.
fn create_tun(config: &ProxyConfig) -> Result<Tun, OsError> {
    let tun = Tun::create(&config.tunnel.device)?;
    let mut addresses = vec![(
        config.tunnel.ipv4_pool.proxy_address(),
        config.tunnel.ipv4_pool.prefix_len,
    )];
    if let Some(p) = config.tunnel.ipv6_pool {
        addresses.push((p.proxy_address(), p.prefix_len));
    }
    tun.configure(config.tunnel.mtu, &addresses)?;
    Ok(tun)
}

impl Drop for ProxyOs {
    fn drop(&mut self) {
        match self.nat.teardown(&self.forwarding) {
            Ok(()) => info!("NAT removed"),
            Err(e) => warn!("removing NAT: {e}"),
        }
    }
}
