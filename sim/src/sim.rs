//! The discrete-event driver: two [`Endpoint`]s, N paths of two [`LinkModel`]s each,
//! scheduled path changes, and the traffic models.

use std::any::{Any, type_name};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::endpoint::Endpoint;
use crate::link::{Direction, LinkCounters, LinkModel, LinkParams, LinkSpec, SplitMix64, Verdict};
use crate::packet::{self, PacketError, Proto};
use crate::traffic::{Emit, FlowAddr, Traffic};

/// Size of the buffers handed to `poll_transmit` and `poll_packet`.
pub const BUFFER: usize = 65535;

/// One side of the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The member's end: the gateway endpoint, its LAN behind it.
    Gateway = 0,
    /// The far end: the proxy endpoint, the Internet behind it.
    Proxy = 1,
}

impl Side {
    /// Both sides.
    pub const BOTH: [Side; 2] = [Side::Gateway, Side::Proxy];

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Gateway => Side::Proxy,
            Side::Proxy => Side::Gateway,
        }
    }

    /// The direction of what this side's endpoint sends.
    pub fn sends(self) -> Direction {
        match self {
            Side::Gateway => Direction::Upstream,
            Side::Proxy => Direction::Downstream,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Gateway => "gateway",
            Side::Proxy => "proxy",
        })
    }
}

/// One direction of a path: the link model's parameters and the MTU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DirSpec {
    /// Rate, delay, jitter, loss, queue, up.
    pub link: LinkParams,
    /// Largest IP packet the path carries: a datagram of `len` bytes is `len +
    /// SimConfig::overhead` on the wire, and dropped (counted) when that is larger.
    pub mtu: usize,
}

/// A path between the two endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathSpec {
    /// Gateway to proxy.
    pub upstream: DirSpec,
    /// Proxy to gateway.
    pub downstream: DirSpec,
}

impl PathSpec {
    /// The same parameters both ways, MTU 1500.
    pub fn new(link: LinkParams) -> PathSpec {
        let d = DirSpec { link, mtu: 1500 };
        PathSpec {
            upstream: d,
            downstream: d,
        }
    }

    /// Each direction's parameters (as a testbed link), MTU 1500.
    pub fn from_spec(spec: LinkSpec) -> PathSpec {
        PathSpec {
            upstream: DirSpec {
                link: spec.upstream,
                mtu: 1500,
            },
            downstream: DirSpec {
                link: spec.downstream,
                mtu: 1500,
            },
        }
    }

    /// Sets the MTU of both directions.
    pub fn mtu(mut self, mtu: usize) -> PathSpec {
        self.upstream.mtu = mtu;
        self.downstream.mtu = mtu;
        self
    }

    /// One direction.
    pub fn dir(&self, dir: Direction) -> &DirSpec {
        match dir {
            Direction::Upstream => &self.upstream,
            Direction::Downstream => &self.downstream,
        }
    }

    fn dir_mut(&mut self, dir: Direction) -> &mut DirSpec {
        match dir {
            Direction::Upstream => &mut self.upstream,
            Direction::Downstream => &mut self.downstream,
        }
    }
}

/// What the simulation is made of (besides its endpoints and traffic).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every link model (each path and direction gets its own stream).
    pub seed: u64,
    /// The instant simulated time starts at. [`SimConfig::new`] reads the clock once for
    /// it; nothing else does, and nothing depends on its value.
    pub base: Instant,
    /// The paths, index 0..N.
    pub paths: Vec<PathSpec>,
    /// Bytes each datagram takes on the wire besides itself, for the MTU and the rate
    /// (28: IPv4 and UDP headers).
    pub overhead: usize,
    /// The LAN host's address (all flows' gateway-side end).
    pub gateway_addr: Ipv4Addr,
    /// The Internet host's address.
    pub internet_addr: Ipv4Addr,
    /// An endpoint still due after this many `handle_timeout` calls at one instant
    /// without new input is a spin.
    pub spin_limit: u32,
    /// Loop turns at one instant before the simulation gives up (a livelock).
    pub max_turns: u64,
    /// Send-queue slots of the cores ([`crate::cores`]); `None`: their defaults. A
    /// session has at most this many packets in flight and queued, so paths whose
    /// bandwidth-delay product exceeds it need more.
    pub queue_slots: Option<usize>,
}

impl SimConfig {
    /// No paths yet, seed `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            base: Instant::now(),
            paths: Vec::new(),
            overhead: 28,
            queue_slots: None,
            gateway_addr: Ipv4Addr::new(10, 77, 0, 2),
            internet_addr: Ipv4Addr::new(198, 51, 100, 7),
            spin_limit: 5,
            max_turns: 100_000,
        }
    }

    /// Adds a path.
    pub fn path(mut self, path: PathSpec) -> SimConfig {
        self.paths.push(path);
        self
    }

    /// Gives the cores `slots` send-queue slots.
    pub fn queue_slots(mut self, slots: usize) -> SimConfig {
        self.queue_slots = Some(slots);
        self
    }

    /// Sets the per-datagram overhead.
    pub fn overhead(mut self, bytes: usize) -> SimConfig {
        self.overhead = bytes;
        self
    }
}

/// One datagram delivered by a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When the endpoint sent it (elapsed).
    pub sent: Duration,
    /// When it arrived (elapsed).
    pub arrived: Duration,
    /// Datagram bytes (without the overhead).
    pub len: usize,
}

impl Delivery {
    /// Its one-way delay.
    pub fn delay(&self) -> Duration {
        self.arrived - self.sent
    }
}

/// The truth about one direction of one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathTruth {
    /// Datagrams the endpoint sent on it.
    pub sent: u64,
    /// Their bytes (without the overhead).
    pub sent_bytes: u64,
    /// Dropped for being larger than the MTU (never offered to the link).
    pub dropped_mtu: u64,
    /// The link model's counters (its bytes include the overhead).
    pub link: LinkCounters,
    /// Datagrams delivered to the far endpoint.
    pub delivered: u64,
    /// Their bytes (without the overhead).
    pub delivered_bytes: u64,
    /// Every delivery, in order.
    pub deliveries: Vec<Delivery>,
}

impl PathTruth {
    /// Datagrams lost on the way (MTU, loss, queue, outage, in flight at an outage).
    pub fn dropped(&self) -> u64 {
        let l = &self.link;
        self.dropped_mtu + l.dropped_loss + l.dropped_queue + l.dropped_outage + l.lost_in_flight
    }

    /// Dropped over sent (0 before any).
    pub fn loss_fraction(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.dropped() as f64 / self.sent as f64
    }

    /// Deliveries that arrived in `[from, to)`.
    pub fn deliveries_between(&self, from: Duration, to: Duration) -> &[Delivery] {
        let a = self.deliveries.partition_point(|d| d.arrived < from);
        let b = self.deliveries.partition_point(|d| d.arrived < to);
        &self.deliveries[a..b.max(a)]
    }

    /// Datagram bytes delivered in `[from, to)`, as bits per second.
    pub fn delivery_rate_bps(&self, from: Duration, to: Duration) -> f64 {
        let secs = to.saturating_sub(from).as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        let bytes: usize = self
            .deliveries_between(from, to)
            .iter()
            .map(|d| d.len)
            .sum();
        bytes as f64 * 8.0 / secs
    }

    /// One-way delays of the deliveries that arrived in `[from, to)`.
    pub fn delays_between(&self, from: Duration, to: Duration) -> Vec<Duration> {
        self.deliveries_between(from, to)
            .iter()
            .map(Delivery::delay)
            .collect()
    }
}

/// What the simulator saw of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Calls of `handle_timeout`.
    pub timeouts: u64,
    /// Distinct instants at which `handle_timeout` was called (an event loop's timer
    /// wake-ups).
    pub wakeups: u64,
    /// Those instants (elapsed), in order.
    pub wakeup_times: Vec<Duration>,
    /// Distinct instants at which the endpoint was called at all (timer, datagram or
    /// packet): a real event loop's wake-ups.
    pub busy_instants: u64,
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams taken from `poll_transmit`.
    pub datagrams_out: u64,
    /// Their bytes.
    pub datagram_bytes_out: u64,
    /// Inner packets handed to `handle_packet`.
    pub packets_in: u64,
    /// Inner packets taken from `poll_packet`.
    pub packets_out: u64,
    /// Of those, packets no flow took (see [`Strays`]).
    pub strays: Strays,
}

impl EndpointStats {
    /// Timer wake-ups in `[from, to)`.
    pub fn wakeups_between(&self, from: Duration, to: Duration) -> u64 {
        let a = self.wakeup_times.partition_point(|t| *t < from);
        let b = self.wakeup_times.partition_point(|t| *t < to);
        b.saturating_sub(a) as u64
    }

    /// Timer wake-ups per second over `[from, to)`.
    pub fn wakeups_per_sec(&self, from: Duration, to: Duration) -> f64 {
        let secs = to.saturating_sub(from).as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        self.wakeups_between(from, to) as f64 / secs
    }
}

/// Inner packets an endpoint handed out that no traffic model took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Strays {
    /// They did not parse (not IPv4, wrong lengths or checksums, not UDP or TCP).
    pub malformed: u64,
    /// Their addresses were not the flow's ends for that side.
    pub wrong_address: u64,
    /// No flow with that protocol and port.
    pub unknown_flow: u64,
    /// The last parse error.
    pub last_error: Option<PacketError>,
}

impl Strays {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.malformed + self.wrong_address + self.unknown_flow
    }
}

/// Why a simulation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// An endpoint's `poll_timeout` stayed at or before `now` after `handle_timeout` and
    /// draining, `timeouts` times at the same instant with nothing new for it.
    Spin {
        /// Which endpoint.
        side: Side,
        /// The instant (elapsed).
        at: Duration,
        /// Its timeout, elapsed (before `at`: in the past).
        timeout: Duration,
        /// How many `handle_timeout` calls in a row left it due.
        timeouts: u32,
    },
    /// More than `max_turns` loop turns at one instant (e.g. endpoints bouncing
    /// datagrams over zero-delay paths forever).
    Livelock {
        /// The instant (elapsed).
        at: Duration,
        /// Turns taken.
        turns: u64,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Spin {
                side,
                at,
                timeout,
                timeouts,
            } => write!(
                f,
                "the {side} endpoint spins at {at:?}: its poll_timeout() ({timeout:?}) was still due \
                 after {timeouts} calls of handle_timeout() at that instant with no new input \
                 (a timer at or before `now` must be consumed)"
            ),
            SimError::Livelock { at, turns } => write!(
                f,
                "livelock at {at:?}: {turns} loop turns at the same instant and still work to do"
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// A typed handle to a traffic model added with [`Sim::add`].
pub struct FlowId<T> {
    index: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for FlowId<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for FlowId<T> {}

impl<T> fmt::Debug for FlowId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowId({})", self.index)
    }
}

impl<T> FlowId<T> {
    /// The flow's index (in the order flows were added).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A traffic model, usable as `dyn Any` (trait upcasting is newer than Rust 1.85).
trait AnyTraffic: Traffic {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Traffic> AnyTraffic for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct FlowSlot {
    model: Box<dyn AnyTraffic>,
    addr: FlowAddr,
    ip_id: u16,
    name: &'static str,
    /// Traffic the endpoints cannot see: its packets cross this path's links directly
    /// ([`Sim::add_unseen`]).
    unseen: Option<usize>,
}

struct InFlight {
    due: Instant,
    sent: Instant,
    data: Vec<u8>,
    /// A packet of an unseen flow: it arrives at the flow, not at the endpoint.
    unseen: bool,
}

struct Pipe {
    model: LinkModel,
    mtu: usize,
    fifo: VecDeque<InFlight>,
    truth: PathTruth,
}

enum ChangeKind {
    Params(Box<dyn FnMut(&mut LinkParams)>),
    Mtu(usize),
}

struct Change {
    path: usize,
    dirs: Vec<Direction>,
    kind: ChangeKind,
}

#[derive(Default)]
struct EndpointState {
    stats: EndpointStats,
    /// `handle_timeout` calls at the current instant since its last input.
    idle_timeouts: u32,
    /// The last instant it was woken by a timer / called at all.
    last_wakeup: Option<Instant>,
    last_busy: Option<Instant>,
}

/// The simulator: a gateway endpoint `G` and a proxy endpoint `P` over the configured
/// paths, with traffic models on both sides. Deterministic for a seed: nothing reads the
/// clock (but [`SimConfig::new`], once, for the base instant) and everything happens in
/// a fixed order.
pub struct Sim<G, P> {
    cfg: SimConfig,
    now: Instant,
    gateway: G,
    proxy: P,
    /// `pipes[path][direction]`.
    pipes: Vec<[Pipe; 2]>,
    changes: BTreeMap<(Instant, u64), Change>,
    change_seq: u64,
    flows: Vec<FlowSlot>,
    routes: BTreeMap<(Proto, u16), usize>,
    next_port: u16,
    pending: VecDeque<(Side, Vec<u8>)>,
    /// What unseen flows emitted (the side they entered at), and on which path it goes.
    unseen_out: VecDeque<(Side, Vec<u8>)>,
    unseen_pending: VecDeque<(usize, Side, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    buf: Vec<u8>,
    endpoints: [EndpointState; 2],
}

impl<G: Endpoint, P: Endpoint> Sim<G, P> {
    /// A simulation at time zero (`cfg.base`).
    pub fn new(cfg: SimConfig, gateway: G, proxy: P) -> Sim<G, P> {
        assert!(
            !cfg.paths.is_empty(),
            "a simulation needs at least one path"
        );
        let mut seeds = SplitMix64(cfg.seed);
        let pipes = cfg
            .paths
            .iter()
            .map(|p| {
                Direction::BOTH.map(|d| Pipe {
                    model: LinkModel::new(p.dir(d).link, seeds.next_u64()),
                    mtu: p.dir(d).mtu,
                    fifo: VecDeque::new(),
                    truth: PathTruth::default(),
                })
            })
            .collect();
        Sim {
            now: cfg.base,
            cfg,
            gateway,
            proxy,
            pipes,
            changes: BTreeMap::new(),
            change_seq: 0,
            flows: Vec::new(),
            routes: BTreeMap::new(),
            next_port: 40000,
            pending: VecDeque::new(),
            unseen_out: VecDeque::new(),
            unseen_pending: VecDeque::new(),
            spare: Vec::new(),
            buf: vec![0; BUFFER],
            endpoints: Default::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.cfg.base
    }

    /// The instant `t` after the start.
    pub fn instant(&self, t: Duration) -> Instant {
        self.cfg.base + t
    }

    /// The gateway endpoint.
    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    /// The gateway endpoint, mutable (e.g. to reconfigure it between runs).
    pub fn gateway_mut(&mut self) -> &mut G {
        &mut self.gateway
    }

    /// The proxy endpoint.
    pub fn proxy(&self) -> &P {
        &self.proxy
    }

    /// The proxy endpoint, mutable.
    pub fn proxy_mut(&mut self) -> &mut P {
        &mut self.proxy
    }

    /// Adds a traffic model; its gateway-side port is allocated (40000, 40001, ...).
    pub fn add<T: Traffic>(&mut self, model: T) -> FlowId<T> {
        while self.routes.contains_key(&(model.proto(), self.next_port)) {
            self.next_port += 1;
        }
        let port = self.next_port;
        self.next_port += 1;
        self.add_on_port(model, port)
    }

    /// Adds a traffic model for another LAN host than the member's own (a neighbour's, in
    /// a pool); its port is allocated as [`Sim::add`]'s.
    pub fn add_from<T: Traffic>(&mut self, model: T, lan: Ipv4Addr) -> FlowId<T> {
        let id = self.add(model);
        self.flows[id.index].addr.gateway.set_ip(lan);
        id
    }

    /// Adds traffic the endpoints cannot see on path `path`: its packets cross that path's
    /// links directly, sharing their queues with the endpoints' datagrams, without passing
    /// either endpoint (a device on a neighbour's LAN that bypasses the pool, the ISP's
    /// other users on the line). `lan` is its LAN host; its port is allocated as
    /// [`Sim::add`]'s. What it sends is in the path's link counters
    /// ([`PathTruth::link`]), not in the rest of its [`PathTruth`], which stays the
    /// endpoints' datagrams.
    pub fn add_unseen<T: Traffic>(&mut self, model: T, path: usize, lan: Ipv4Addr) -> FlowId<T> {
        assert!(path < self.pipes.len(), "no path {path}");
        let id = self.add_from(model, lan);
        self.flows[id.index].unseen = Some(path);
        id
    }

    /// Adds a traffic model whose gateway-side (LAN) port is `port`.
    pub fn add_on_port<T: Traffic>(&mut self, model: T, port: u16) -> FlowId<T> {
        let proto = model.proto();
        let index = self.flows.len();
        let previous = self.routes.insert((proto, port), index);
        assert!(previous.is_none(), "two flows on {proto:?} port {port}");
        let addr = FlowAddr {
            proto,
            gateway: SocketAddrV4::new(self.cfg.gateway_addr, port),
            internet: SocketAddrV4::new(self.cfg.internet_addr, model.internet_port()),
        };
        self.flows.push(FlowSlot {
            model: Box::new(model),
            addr,
            ip_id: 0,
            name: type_name::<T>(),
            unseen: None,
        });
        FlowId {
            index,
            _type: PhantomData,
        }
    }

    /// A traffic model, with its statistics.
    pub fn flow<T: Traffic>(&self, id: FlowId<T>) -> &T {
        self.flows[id.index]
            .model
            .as_any()
            .downcast_ref()
            .expect("FlowId of this simulation")
    }

    /// A traffic model, mutable.
    pub fn flow_mut<T: Traffic>(&mut self, id: FlowId<T>) -> &mut T {
        self.flows[id.index]
            .model
            .as_any_mut()
            .downcast_mut()
            .expect("FlowId of this simulation")
    }

    /// The addresses of a flow.
    pub fn flow_addr<T: Traffic>(&self, id: FlowId<T>) -> FlowAddr {
        self.flows[id.index].addr
    }

    /// At `at` (elapsed), changes the parameters of path `path` in `dirs` with `change`.
    /// Changes at the same instant apply in the order they were scheduled, after the
    /// datagrams due at that instant arrived.
    pub fn at(
        &mut self,
        at: Duration,
        path: usize,
        dirs: &[Direction],
        change: impl FnMut(&mut LinkParams) + 'static,
    ) {
        self.schedule(at, path, dirs, ChangeKind::Params(Box::new(change)));
    }

    /// At `at`, sets the parameters of path `path` in `dirs`.
    pub fn set_params_at(
        &mut self,
        at: Duration,
        path: usize,
        dirs: &[Direction],
        params: LinkParams,
    ) {
        self.at(at, path, dirs, move |p| *p = params);
    }

    /// At `at`, sets the MTU of path `path` in `dirs`.
    pub fn set_mtu_at(&mut self, at: Duration, path: usize, dirs: &[Direction], mtu: usize) {
        self.schedule(at, path, dirs, ChangeKind::Mtu(mtu));
    }

    /// Path `path` goes down both ways at `from` (losing what is in flight) and comes
    /// back `len` later.
    pub fn outage(&mut self, path: usize, from: Duration, len: Duration) {
        self.down_at(from, path, &Direction::BOTH);
        self.up_at(from + len, path, &Direction::BOTH);
    }

    /// Path `path` goes down in `dirs` at `at`.
    pub fn down_at(&mut self, at: Duration, path: usize, dirs: &[Direction]) {
        self.at(at, path, dirs, |p| p.up = false);
    }

    /// Path `path` comes back in `dirs` at `at`.
    pub fn up_at(&mut self, at: Duration, path: usize, dirs: &[Direction]) {
        self.at(at, path, dirs, |p| p.up = true);
    }

    fn schedule(&mut self, at: Duration, path: usize, dirs: &[Direction], kind: ChangeKind) {
        assert!(path < self.pipes.len(), "no path {path}");
        let at = self.cfg.base + at;
        assert!(at >= self.now, "a change in the past ({at:?})");
        self.change_seq += 1;
        self.changes.insert(
            (at, self.change_seq),
            Change {
                path,
                dirs: dirs.to_vec(),
                kind,
            },
        );
    }

    /// The current parameters of one direction of a path.
    pub fn params(&self, path: usize, dir: Direction) -> &LinkParams {
        self.pipes[path][dir as usize].model.params()
    }

    /// The current MTU of one direction of a path.
    pub fn mtu(&self, path: usize, dir: Direction) -> usize {
        self.pipes[path][dir as usize].mtu
    }

    /// The truth about one direction of a path.
    pub fn truth(&self, path: usize, dir: Direction) -> &PathTruth {
        &self.pipes[path][dir as usize].truth
    }

    /// Datagrams in flight on one direction of a path.
    pub fn in_flight(&self, path: usize, dir: Direction) -> usize {
        self.pipes[path][dir as usize].fifo.len()
    }

    /// How long a datagram sent now on one direction of a path would queue at its
    /// bottleneck.
    pub fn backlog(&self, path: usize, dir: Direction) -> Duration {
        self.pipes[path][dir as usize].model.backlog(self.now)
    }

    /// What the simulator saw of an endpoint.
    pub fn endpoint_stats(&self, side: Side) -> &EndpointStats {
        &self.endpoints[side as usize].stats
    }

    /// Hands an inner packet to the endpoint at `side` now (as if from its LAN or the
    /// Internet), before the next run.
    pub fn inject_packet(&mut self, side: Side, packet: &[u8]) {
        self.pending.push_back((side, packet.to_vec()));
    }

    /// Runs until `t` after the start; panics with the reason if the simulation fails
    /// (see [`try_run_until`](Self::try_run_until)).
    pub fn run_until(&mut self, t: Duration) {
        if let Err(e) = self.try_run_until(t) {
            panic!("simulation failed: {e}");
        }
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.elapsed() + d;
        self.run_until(t);
    }

    /// Runs until `t` after the start: handles everything due up to and including then,
    /// stepping time to the earliest of the endpoints' timeouts, the next arrival, the
    /// next traffic event and the next path change.
    pub fn try_run_until(&mut self, t: Duration) -> Result<(), SimError> {
        let end = self.cfg.base + t;
        loop {
            self.settle()?;
            match self.next_event() {
                Some(next) if next <= end => self.now = next.max(self.now),
                _ => {
                    self.now = end.max(self.now);
                    return Ok(());
                }
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let base = self.cfg.base;
        let arrivals = self
            .pipes
            .iter()
            .flatten()
            .filter_map(|p| p.fifo.front().map(|f| f.due));
        let flows = self
            .flows
            .iter()
            .filter_map(|f| f.model.poll_timeout().map(|t| base + t));
        let changes = self.changes.keys().next().map(|(t, _)| *t);
        [
            self.gateway.poll_timeout(),
            self.proxy.poll_timeout(),
            changes,
        ]
        .into_iter()
        .flatten()
        .chain(arrivals)
        .chain(flows)
        .min()
    }

    /// Handles everything due at `now`, turn after turn, until nothing is.
    fn settle(&mut self) -> Result<(), SimError> {
        let mut turns = 0;
        for e in &mut self.endpoints {
            e.idle_timeouts = 0;
        }
        loop {
            let mut progress = self.deliver_arrivals();
            progress |= self.apply_changes();
            progress |= self.endpoint_timeouts()?;
            progress |= self.flow_timeouts();
            progress |= self.feed_unseen();
            progress |= self.feed_packets();
            progress |= self.drain_transmits()?;
            progress |= self.drain_packets();
            if !progress {
                return Ok(());
            }
            turns += 1;
            if turns > self.cfg.max_turns {
                return Err(SimError::Livelock {
                    at: self.elapsed(),
                    turns,
                });
            }
        }
    }

    fn mark_busy(&mut self, side: Side) {
        let now = self.now;
        let e = &mut self.endpoints[side as usize];
        e.idle_timeouts = 0;
        if e.last_busy != Some(now) {
            e.last_busy = Some(now);
            e.stats.busy_instants += 1;
        }
    }

    fn deliver_arrivals(&mut self) -> bool {
        let mut progress = false;
        loop {
            // The earliest due head; ties by path, then direction.
            let mut best: Option<(Instant, usize, usize)> = None;
            for (path, pipes) in self.pipes.iter().enumerate() {
                for (dir, pipe) in pipes.iter().enumerate() {
                    if let Some(f) = pipe.fifo.front() {
                        if f.due <= self.now && best.is_none_or(|(due, _, _)| f.due < due) {
                            best = Some((f.due, path, dir));
                        }
                    }
                }
            }
            let Some((_, path, dir)) = best else {
                return progress;
            };
            progress = true;
            let base = self.cfg.base;
            let now = self.now;
            let pipe = &mut self.pipes[path][dir];
            let mut f = pipe.fifo.pop_front().expect("a head");
            let to = if dir == Direction::Upstream as usize {
                Side::Proxy
            } else {
                Side::Gateway
            };
            if f.unseen {
                // Out at the far side of the line, to its flow: no endpoint saw it.
                self.route(to, &f.data);
                self.recycle(f.data);
                continue;
            }
            let len = f.data.len();
            pipe.truth.delivered += 1;
            pipe.truth.delivered_bytes += len as u64;
            pipe.truth.deliveries.push(Delivery {
                sent: f.sent - base,
                arrived: now - base,
                len,
            });
            self.mark_busy(to);
            self.endpoints[to as usize].stats.datagrams_in += 1;
            match to {
                Side::Proxy => self.proxy.handle_datagram(now, path, &mut f.data),
                Side::Gateway => self.gateway.handle_datagram(now, path, &mut f.data),
            }
            self.recycle(f.data);
        }
    }

    fn apply_changes(&mut self) -> bool {
        let mut progress = false;
        while let Some(entry) = self.changes.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let mut change = entry.remove();
            progress = true;
            for &dir in &change.dirs {
                let now = self.now;
                let pipe = &mut self.pipes[change.path][dir as usize];
                match &mut change.kind {
                    ChangeKind::Mtu(mtu) => {
                        pipe.mtu = *mtu;
                        self.cfg.paths[change.path].dir_mut(dir).mtu = *mtu;
                    }
                    ChangeKind::Params(f) => {
                        let mut params = *pipe.model.params();
                        f(&mut params);
                        let lost = pipe.model.set_params(now, params);
                        pipe.truth.link = *pipe.model.counters();
                        if !params.up {
                            assert_eq!(
                                lost as usize,
                                pipe.fifo.len(),
                                "the link model and the simulator disagree on what is in flight"
                            );
                            let dropped: Vec<InFlight> = pipe.fifo.drain(..).collect();
                            for f in dropped {
                                self.recycle(f.data);
                            }
                        }
                    }
                }
            }
        }
        progress
    }

    fn endpoint_timeouts(&mut self) -> Result<bool, SimError> {
        let mut progress = false;
        for side in Side::BOTH {
            let timeout = match side {
                Side::Gateway => self.gateway.poll_timeout(),
                Side::Proxy => self.proxy.poll_timeout(),
            };
            let Some(timeout) = timeout.filter(|t| *t <= self.now) else {
                continue;
            };
            let now = self.now;
            let e = &mut self.endpoints[side as usize];
            if e.idle_timeouts >= self.cfg.spin_limit {
                return Err(SimError::Spin {
                    side,
                    at: now - self.cfg.base,
                    timeout: timeout.saturating_duration_since(self.cfg.base),
                    timeouts: e.idle_timeouts,
                });
            }
            progress = true;
            let idle = e.idle_timeouts;
            self.mark_busy(side);
            let e = &mut self.endpoints[side as usize];
            e.idle_timeouts = idle + 1;
            e.stats.timeouts += 1;
            if e.last_wakeup != Some(now) {
                e.last_wakeup = Some(now);
                e.stats.wakeups += 1;
                e.stats.wakeup_times.push(now - self.cfg.base);
            }
            match side {
                Side::Gateway => self.gateway.handle_timeout(now),
                Side::Proxy => self.proxy.handle_timeout(now),
            }
        }
        Ok(progress)
    }

    fn flow_timeouts(&mut self) -> bool {
        let mut progress = false;
        let now = self.elapsed();
        for slot in &mut self.flows {
            let mut calls = 0;
            while slot.model.poll_timeout().is_some_and(|t| t <= now) {
                calls += 1;
                assert!(
                    calls <= 1000,
                    "traffic model {} stays due at {now:?}",
                    slot.name
                );
                let mut out = Emit {
                    addr: slot.addr,
                    ip_id: &mut slot.ip_id,
                    out: if slot.unseen.is_some() {
                        &mut self.unseen_out
                    } else {
                        &mut self.pending
                    },
                    spare: &mut self.spare,
                };
                slot.model.handle_timeout(now, &mut out);
                if let Some(path) = slot.unseen {
                    let out = self.unseen_out.drain(..);
                    self.unseen_pending
                        .extend(out.map(|(side, p)| (path, side, p)));
                }
                progress = true;
            }
        }
        progress
    }

    /// Puts what unseen flows sent straight on their path's links.
    fn feed_unseen(&mut self) -> bool {
        let mut progress = false;
        while let Some((path, side, packet)) = self.unseen_pending.pop_front() {
            progress = true;
            let now = self.now;
            let pipe = &mut self.pipes[path][side.sends() as usize];
            // An IP packet on the line as it is: no tunnel around it.
            match pipe.model.offer(now, packet.len()) {
                Verdict::Deliver(due) => pipe.fifo.push_back(InFlight {
                    due,
                    sent: now,
                    data: packet,
                    unseen: true,
                }),
                Verdict::Dropped(_) => self.spare.push(packet),
            }
            pipe.truth.link = *pipe.model.counters();
        }
        progress
    }

    fn feed_packets(&mut self) -> bool {
        let mut progress = false;
        while let Some((side, packet)) = self.pending.pop_front() {
            progress = true;
            self.mark_busy(side);
            self.endpoints[side as usize].stats.packets_in += 1;
            match side {
                Side::Gateway => self.gateway.handle_packet(self.now, &packet),
                Side::Proxy => self.proxy.handle_packet(self.now, &packet),
            }
            self.recycle(packet);
        }
        progress
    }

    fn drain_transmits(&mut self) -> Result<bool, SimError> {
        let mut progress = false;
        for side in Side::BOTH {
            let mut count = 0u64;
            loop {
                let now = self.now;
                let sent = match side {
                    Side::Gateway => self.gateway.poll_transmit(now, &mut self.buf),
                    Side::Proxy => self.proxy.poll_transmit(now, &mut self.buf),
                };
                let Some((path, len)) = sent else {
                    break;
                };
                progress = true;
                count += 1;
                if count > self.cfg.max_turns * 10 {
                    return Err(SimError::Livelock {
                        at: self.elapsed(),
                        turns: count,
                    });
                }
                assert!(
                    path < self.pipes.len(),
                    "the {side} endpoint sent on path {path} of {}",
                    self.pipes.len()
                );
                assert!(len <= BUFFER, "the {side} endpoint sent {len} bytes");
                let stats = &mut self.endpoints[side as usize].stats;
                stats.datagrams_out += 1;
                stats.datagram_bytes_out += len as u64;
                let overhead = self.cfg.overhead;
                let mut data = self.spare.pop().unwrap_or_default();
                let pipe = &mut self.pipes[path][side.sends() as usize];
                pipe.truth.sent += 1;
                pipe.truth.sent_bytes += len as u64;
                if len + overhead > pipe.mtu {
                    pipe.truth.dropped_mtu += 1;
                    self.spare.push(data);
                    continue;
                }
                match pipe.model.offer(now, len + overhead) {
                    Verdict::Deliver(due) => {
                        data.clear();
                        data.extend_from_slice(&self.buf[..len]);
                        pipe.fifo.push_back(InFlight {
                            due,
                            sent: now,
                            data,
                            unseen: false,
                        });
                    }
                    Verdict::Dropped(_) => self.spare.push(data),
                }
                pipe.truth.link = *pipe.model.counters();
            }
        }
        Ok(progress)
    }

    fn drain_packets(&mut self) -> bool {
        let mut progress = false;
        let mut buf = std::mem::take(&mut self.buf);
        for side in Side::BOTH {
            loop {
                let now = self.now;
                let got = match side {
                    Side::Gateway => self.gateway.poll_packet(now, &mut buf),
                    Side::Proxy => self.proxy.poll_packet(now, &mut buf),
                };
                let Some(len) = got else {
                    break;
                };
                progress = true;
                self.endpoints[side as usize].stats.packets_out += 1;
                self.route(side, &buf[..len]);
            }
        }
        self.buf = buf;
        progress
    }

    /// Hands an inner packet that came out at `side` to its flow.
    fn route(&mut self, side: Side, packet: &[u8]) {
        let strays = &mut self.endpoints[side as usize].stats.strays;
        let parsed = match packet::parse(packet) {
            Ok(p) => p,
            Err(e) => {
                strays.malformed += 1;
                strays.last_error = Some(e);
                return;
            }
        };
        // Out of the proxy: towards the Internet, from the LAN host. Out of the gateway:
        // towards the LAN host.
        let (lan, internet) = match side {
            Side::Proxy => (parsed.src, parsed.dst),
            Side::Gateway => (parsed.dst, parsed.src),
        };
        if *internet.ip() != self.cfg.internet_addr {
            strays.wrong_address += 1;
            return;
        }
        let Some(&index) = self.routes.get(&(parsed.proto, lan.port())) else {
            strays.unknown_flow += 1;
            return;
        };
        let slot = &mut self.flows[index];
        if lan.ip() != slot.addr.gateway.ip() {
            strays.wrong_address += 1;
            return;
        }
        if internet.port() != slot.addr.internet.port() {
            strays.unknown_flow += 1;
            return;
        }
        let now = self.now - self.cfg.base;
        let mut out = Emit {
            addr: slot.addr,
            ip_id: &mut slot.ip_id,
            out: if slot.unseen.is_some() {
                &mut self.unseen_out
            } else {
                &mut self.pending
            },
            spare: &mut self.spare,
        };
        slot.model.handle_packet(now, side, &parsed, &mut out);
        if let Some(path) = slot.unseen {
            let out = self.unseen_out.drain(..);
            self.unseen_pending
                .extend(out.map(|(side, p)| (path, side, p)));
        }
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.spare.len() < 4096 {
            self.spare.push(v);
        }
    }
}
