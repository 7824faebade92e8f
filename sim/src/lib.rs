//! linkpool-sim: a deterministic, in-process simulator for linkpool's sans-IO cores, and
//! the link model it shares with the testbed's emulator.
//!
//! * [`link`]: [`LinkModel`], one direction of a link as a pure function of its
//!   [`LinkParams`] (rate with a tail-drop queue, delay ± jitter without reordering, loss,
//!   outages), a seed and the times passed in. The testbed's emulator asks it about every
//!   frame; the simulator about every datagram.
//! * [`Sim`]: two [`Endpoint`]s (a gateway core and a proxy core, behind small adapters,
//!   or [`BareLink`] for no protocol at all) over N paths, each with a [`LinkModel`] per
//!   direction and an MTU, path changes at given times (outages, new parameters, a path
//!   coming back), and [`traffic`] models on both sides: paced UDP ([`UdpStream`]),
//!   pings ([`Ping`]) and TCP NewReno ([`TcpFlow`]), all as real IPv4 packets from the LAN
//!   host 10.77.0.2 to the Internet host 198.51.100.7 and back.
//!
//! Time is `SimConfig::base` plus a simulated offset: the simulator always jumps to the
//! earliest of the endpoints' `poll_timeout()`, the next arrival, the next traffic event
//! and the next path change, so simulated seconds take milliseconds, and a run is exactly
//! reproducible from its seed (nothing reads the clock, nothing iterates a hash map).
//! Everything is measured: per path and direction the truth ([`PathTruth`]: datagrams
//! sent, delivered, dropped by reason, the one-way delay of each delivery), per endpoint
//! its wake-ups ([`EndpointStats`]; an endpoint whose timer stays in the past is reported
//! as a spin), per flow its own statistics (goodput per 10 ms, the longest stall, RTTs,
//! losses, reordering, timeouts and fast retransmits).
//!
//! A test builds a [`SimConfig`] with its paths, creates the two endpoints (a core's
//! adapter takes `cfg.base` as its start and forwards the six [`Endpoint`] calls to the
//! core, mapping path indexes to the core's paths), adds traffic, schedules changes,
//! runs, and reads the statistics. `run_until` can be called again and again: run in
//! steps (say 100 ms) to sample a core's estimates against [`Sim::truth`] over time, or
//! to change something the schedule cannot express. [`Sim::try_run_until`] returns a
//! spin or livelock as a [`SimError`] instead of panicking.
//!
//! ```
//! use std::time::Duration;
//! use linkpool_sim::{BareLink, LinkParams, PathSpec, Side, Sim, SimConfig, TcpFlow, UdpStream};
//!
//! let ms = Duration::from_millis;
//! let wan = LinkParams { rate_bps: Some(10_000_000), delay: ms(20), ..Default::default() };
//! let cfg = SimConfig::new(1).path(PathSpec::new(wan));
//! let mut sim = Sim::new(cfg, BareLink::new(), BareLink::new());
//! let download = sim.add(TcpFlow::download());
//! let voip = sim.add(UdpStream::cbr(Side::Gateway, 64_000, 200));
//! sim.outage(0, ms(2000), ms(300));
//! sim.run_until(ms(4000));
//!
//! let tcp = sim.flow(download);
//! assert!(tcp.goodput_bps(ms(500), ms(2000)) > 8e6);
//! assert!(tcp.stats().rto_count >= 1);
//! assert!(tcp.delivered().longest_stall().len >= ms(300));
//! assert!(sim.flow(voip).lost() >= 12); // 300 ms of 200-byte packets at 64 kbit/s
//! ```

#![warn(missing_docs)]

pub mod cores;
pub mod endpoint;
pub mod link;
pub mod packet;
pub mod pool;
mod sim;
pub mod traffic;

pub use endpoint::{BareLink, BareMultiLink, Endpoint};
pub use link::{Direction, DropReason, LinkCounters, LinkModel, LinkParams, LinkSpec, Verdict};
pub use sim::{
    BUFFER, Delivery, DirSpec, EndpointStats, FlowId, PathSpec, PathTruth, Side, Sim, SimConfig,
    SimError, Strays,
};
pub use traffic::{
    DeliveryLog, Ping, Stall, TcpConfig, TcpEvent, TcpFlow, TcpStats, Traffic, UdpStream,
    percentile,
};
