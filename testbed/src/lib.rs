//! linkpool-testbed: co-ops in network namespaces with emulated links, for end-to-end
//! tests, benchmarks and the demo.
//!
//! A co-op built from a [`Topology`] has, for each member router `rN`, a LAN client `cN`
//! (`eth0` ↔ the router's `br-lan`), an ISP link (router `wan` ↔ core) and a port on the
//! community mesh (router `mesh0` ↔ bridge `br0` in the mesh namespace); the internet
//! core routes between the WANs, the remote proxy's host (`eth0`) and the internet host
//! (`eth0`: HTTP on port 80, DNS on 53 over UDP and TCP, iperf3 from port 5201). Every
//! link except the LAN is emulated ([`Link`]): delay, jitter, loss, rate and outages,
//! changeable at run time. IPv4 and IPv6 everywhere:
//!
//! | what | IPv4 | IPv6 |
//! | --- | --- | --- |
//! | LAN of rN (router, client) | 192.168.N.1, .100 /24 | fd00:N::1, ::100 /64 |
//! | WAN of rN (router, core) | 100.64.N.2, .1 /24 | 2001:db8:N::2, ::1 /64 |
//! | mesh (rN) | 10.254.0.N/24 | fd00:fe::N/64 |
//! | proxy (host, core) | 203.0.113.10, .1 /24 | 2001:db8:ff00::10, ::1 /64 |
//! | internet host (host, core) | 198.51.100.80, .1 /24 | 2001:db8:ff01::80, ::1 /64 |
//! | rN behind carrier NAT: seen as | 192.0.2.N | 2001:db8:ffff::N |
//!
//! ```no_run
//! use linkpool_testbed::{Coop, LinkParams, Topology};
//! use std::time::Duration;
//!
//! let coop = Coop::build(&Topology::coop(3)).unwrap();
//! let file = coop.internet().serve_file("20M.bin", 20 << 20).unwrap();
//! coop.link("r1-wan").unwrap().set(LinkParams { delay: Duration::from_millis(20), ..Default::default() });
//! let out = coop.client(1).exec(&["curl", "-s", &coop.internet().url_v4(&file.path())]).unwrap();
//! # let _ = out;
//! ```
//!
//! Everything is removed when the [`Coop`] is dropped (also when a test panics); what a
//! killed run left behind is removed by [`cleanup`] (`linkpool-testbed cleanup`).

#![warn(missing_docs)]

pub mod attack;
pub mod bench;
mod control;
mod coop;
pub mod demo;
mod emulator;
pub mod failover_bench;
pub mod netns;
mod params;
pub mod pool;
mod process;
pub mod scenario;
pub mod scenario_bench;
mod servers;
mod topology;

pub use control::{find_socket, request};
pub use coop::{
    CleanupReport, Coop, Host, IPERF3_PORT, Iface, Internet, KEEP_ENV, Node, PREFIX_STEM, RUN_ROOT,
    Router, addrs, cleanup, live_prefixes,
};
pub use emulator::{Direction, DirectionStats, Emulator, Link};
pub use params::{LinkParams, LinkSpec, parse_duration, parse_loss, parse_rate};
pub use process::{Process, cpu_seconds};
pub use servers::{HttpRequest, ServedFile, hex};
pub use topology::{MAX_ROUTERS, RouterSpec, Topology};

use std::fmt;

/// Environment variable naming the directory that holds the linkpool binaries (default:
/// the cargo target directory the running executable was built into).
pub const BIN_DIR_ENV: &str = "LINKPOOL_BIN_DIR";

/// Path of a workspace binary (`linkpool`, `linkpool-proxy`, `linkpool-testbed`) for
/// starting it inside a namespace: from `LINKPOOL_BIN_DIR`, else next to the running
/// executable (`target/<profile>/`, also from `target/<profile>/deps/` for tests).
pub fn workspace_binary(name: &str) -> Result<std::path::PathBuf, Error> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        candidates.push(std::path::PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(name));
        }
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::new(format!(
            "binary `{name}` not found (looked at {}); build it first (`cargo build --workspace`) or set {BIN_DIR_ENV}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// A testbed error: a sentence that says what failed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    #[test]
    fn handles_can_be_shared_between_test_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::Coop>();
        shareable::<crate::Link>();
        shareable::<crate::Process>();
    }

    #[test]
    fn finds_workspace_binaries_or_says_how_to_get_them() {
        let err = crate::workspace_binary("no-such-binary").unwrap_err();
        assert!(err.to_string().contains("cargo build"), "{err}");
    }
}
