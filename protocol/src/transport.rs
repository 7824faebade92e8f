//! The data plane both ends share: a session's paths, its flows and their queue, the
//! scheduler that spreads them, re-sends, reordering, and what goes into each sealed
//! packet.
//!
//! The client ([`crate::client`]) and the server ([`crate::server`]) own the keys and the
//! handshakes; everything that is sent once a session is up is decided here, the same way
//! upstream at the gateway and downstream at the proxy.
//!
//! An inner packet is classified into its flow ([`crate::flow`]) and waits in the core's
//! queue ([`crate::fq`]). A path takes the next packet when its congestion control and
//! pacer let it; which flows a path may take is the scheduler's rule:
//! * per session: a flow is pinned to one path, chosen by spare capacity when it starts,
//!   and moves only when that path stops being active;
//! * per packet: any path whose packets arrive soonest, and a slower one too while the
//!   bulk flows want more than the faster paths carry (the earliest-delivery rule, as ECF
//!   and BLEST); the far end puts them back in order ([`crate::reorder`]);
//! * redundant: the lowest-latency path, and a copy on the next one within a byte budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::DropReason;
use crate::flow::{FlowClass, FlowSlot, FlowTable, Mode, Modes};
use crate::fq::{CodelParams, FlowQueues};
use crate::frame::{self, Frame, Frames, Spread, Writer};
use crate::path::{Endpoint, Path, PathSettings, PathState, RateMeter};
use crate::queue::PacketRing;
use crate::reorder::Reorder;
use crate::session::{Keypair, Limits};
use crate::usage::Usage;
use crate::wire::{PathId, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD};

/// Bound on paths per session: memory stays fixed whatever a peer sends.
pub const MAX_PATHS: usize = 16;
/// Path events kept for [`crate::client::Client::poll_event`] and the server's; older
/// ones are dropped first.
const MAX_EVENTS: usize = 64;
/// A path heard nothing from for this long is forgotten where paths are forgotten (the
/// proxy): longer than the slowest idle probing a member may configure (60 s).
const FORGET_SILENT: Duration = Duration::from_secs(150);
/// Flows a session tells apart. Slots are u16 on the wire.
pub const FLOW_SLOTS: usize = 1024;
/// A path sending this share of its estimated rate is busy: new flows pinned per session
/// go elsewhere if they can.
const BUSY_SHARE: f64 = 0.75;
/// A slower path takes bulk packets while the bulk flows offer at least this share of
/// what the faster paths carry: a flow that fills them wants more.
const DEMAND_SHARE: f64 = 0.85;
/// A path this much slower (one way) than the fastest is not worth spreading over: the
/// far end would hold everything else for that long.
const MAX_SKEW: Duration = Duration::from_millis(250);
/// Duplicates may cost this share of the data bytes sent...
const REDUNDANCY_SHARE: f64 = 0.03;
/// ... plus this many bytes per second, so a call alone on the pool is duplicated whole.
const REDUNDANCY_FLOOR: f64 = 16_000.0;
/// Unspent budget kept at most.
const REDUNDANCY_BURST: f64 = 64_000.0;
/// Packets the reorder buffer holds at most (fewer with a smaller send queue).
const REORDER_BUFFERS: usize = 512;
/// The reorder timeout beyond the measured skew: timer granularity, the peer's pacing.
const REORDER_MARGIN: Duration = Duration::from_millis(5);
/// The reorder timeout at most: beyond it a gap is given up whatever the paths say.
const REORDER_MAX: Duration = Duration::from_secs(1);
/// CoDel's interval follows the paths' round trips up to this.
const MAX_CODEL_INTERVAL: Duration = Duration::from_millis(500);

/// A path changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEvent {
    /// Which path.
    pub path: PathId,
    /// Its new state.
    pub state: PathState,
}

/// A datagram written by a `poll_transmit`: send `buf[..len]` on `path`, to `remote`,
/// from `local` (when given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The path it belongs to. The proxy's handshake and cookie answers belong to no path
    /// yet: theirs is `PathId(0)` and means nothing; `remote` and `local` say where.
    pub path: PathId,
    /// Where it goes.
    pub remote: std::net::SocketAddr,
    /// The local address to send it from, when it matters.
    pub local: Option<std::net::SocketAddr>,
    /// Its length at the start of the caller's buffer.
    pub len: usize,
}

/// A mesh grant the proxy sends a member.
#[derive(Debug)]
struct GrantOut {
    body: Box<[u8; frame::MESH_GRANT_LEN]>,
    /// The proxy's clock (seconds) at `read_at`.
    clock_s: u64,
    read_at: Instant,
    /// When it goes (again).
    next: Instant,
}

/// How often the proxy sends a member its mesh grant again.
pub(crate) const GRANT_RESEND: Duration = Duration::from_secs(10);

/// What the scheduler did, for status and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpreadCounters {
    /// Inner packets sent once (re-sends and copies not counted).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets sent a second time on another path, as redundancy.
    pub duplicated_packets: u64,
    /// Their bytes.
    pub duplicated_bytes: u64,
    /// Spread packets lost on one path and re-sent on another.
    pub repaired: u64,
    /// Packets sent per class (interactive, bulk, default).
    pub by_class: [u64; 3],
}

/// Decides where duplicates may go and keeps them within their budget.
#[derive(Debug, Clone)]
struct RedundancyBudget {
    tokens: f64,
    last: Instant,
}

impl RedundancyBudget {
    fn earn(&mut self, now: Instant, data_bytes: usize) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + REDUNDANCY_FLOOR * elapsed + REDUNDANCY_SHARE * data_bytes as f64)
                .min(REDUNDANCY_BURST);
    }

    fn spend(&mut self, bytes: usize) -> bool {
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// What the scheduler knows of one path for one round of sending.
#[derive(Debug, Clone, Copy)]
struct Lane {
    id: PathId,
    /// Estimated one-way delay (half the smoothed RTT).
    owd: Duration,
    /// How long until the path may send again.
    wait: Duration,
    /// Bytes per second it carries.
    rate: f64,
}

impl Lane {
    fn arrival(&self) -> Duration {
        self.owd + self.wait
    }
}

pub(crate) struct Transport {
    origin: Instant,
    mtu: usize,
    paths: Vec<Path>,
    flows: FlowTable,
    modes: Modes,
    queue: FlowQueues,
    /// Copies of what was sent, for re-sends on another path, and what they carried.
    kept: PacketRing,
    /// Where each kept copy stood in its flow, by slot of `kept`.
    kept_spread: Box<[Option<Spread>]>,
    /// Slots of `kept` to re-send: from paths that turned suspect, then lost spread
    /// packets, then copies for redundancy (with the path the original went on).
    resend: VecDeque<u64>,
    repairs: VecDeque<u64>,
    duplicates: VecDeque<(u64, PathId)>,
    resend_capacity: usize,
    inbound: PacketRing,
    reorder: Reorder,
    budget: RedundancyBudget,
    /// Inner bytes per second the bulk flows offer.
    bulk_demand: RateMeter,
    counters: SpreadCounters,
    /// The queue's overflow and CoDel drops already handed to the caller's counters.
    queue_drops_reported: (u64, u64),
    /// Bumped whenever what a path may send could have changed: a path that found nothing
    /// it may send remembers the epoch, and is not woken for its pacer until it moves.
    epoch: u64,
    events: VecDeque<PathEvent>,
    /// The mesh grant to send.
    grant_out: Option<GrantOut>,
    /// The last mesh grant received, not yet taken.
    grant_in: Option<Box<[u8; frame::MESH_GRANT_LEN]>>,
    /// The signed statement to send, and when it goes (again).
    statement_out: Option<(Box<[u8; frame::STATEMENT_LEN]>, Instant)>,
    /// The last statement received, not yet taken.
    statement_in: Option<Box<[u8; frame::STATEMENT_LEN]>>,
    /// The signed rating of the member's relay to send, and when it goes (again).
    rating_out: Option<(Box<[u8; frame::RATING_LEN]>, Instant)>,
    /// The last rating received, not yet taken.
    rating_in: Option<Box<[u8; frame::RATING_LEN]>>,
    /// Our bid for contended relay lines (milli-credits per GB), and when it goes (again).
    bid_out: Option<(i64, Instant)>,
    /// The last bid received, not yet taken.
    bid_in: Option<i64>,
    /// When our own paths held to probes are next told to the proxy (set as they change,
    /// then every [`GRANT_RESEND`] while any is held).
    standby_out: Option<Instant>,
    /// Where the search for due acks and pings starts, so no path starves the others.
    cursor: usize,
    /// New paths are passive ([`Transport::passive_paths`]).
    passive: bool,
    /// What the member's traffic took, for the ledger (the proxy's side only).
    usage: Option<Usage>,
    /// Paths dead this long are removed (at the proxy: a member that restarted numbers its
    /// paths afresh, and the old ones would be pinged for ever).
    forget_dead_after: Option<Duration>,
}

impl Transport {
    /// `mtu` is the largest inner packet; `slots` how many the send queue holds (as many
    /// copies of sent packets are kept for re-sends); `seed` keys the flow hash.
    pub(crate) fn new(origin: Instant, mtu: usize, slots: usize, seed: u64) -> Transport {
        let resend_capacity = slots.min(1024);
        Transport {
            origin,
            mtu,
            paths: Vec::new(),
            flows: FlowTable::new(FLOW_SLOTS, seed),
            modes: Modes::default(),
            queue: FlowQueues::new(slots, mtu, FLOW_SLOTS, CodelParams::default()),
            kept: PacketRing::new(slots, mtu),
            kept_spread: vec![None; slots].into_boxed_slice(),
            resend: VecDeque::with_capacity(resend_capacity),
            repairs: VecDeque::with_capacity(resend_capacity),
            duplicates: VecDeque::with_capacity(resend_capacity),
            resend_capacity,
            // Room for all the reorder buffer may release at once, and some.
            inbound: PacketRing::new(slots.min(REORDER_BUFFERS) + 64, mtu),
            reorder: Reorder::new(FLOW_SLOTS, slots.min(REORDER_BUFFERS), mtu),
            budget: RedundancyBudget {
                tokens: REDUNDANCY_BURST,
                last: origin,
            },
            bulk_demand: RateMeter::default(),
            counters: SpreadCounters::default(),
            queue_drops_reported: (0, 0),
            epoch: 0,
            events: VecDeque::new(),
            grant_out: None,
            grant_in: None,
            statement_out: None,
            statement_in: None,
            rating_out: None,
            rating_in: None,
            bid_out: None,
            bid_in: None,
            standby_out: None,
            cursor: 0,
            passive: false,
            forget_dead_after: None,
            usage: None,
        }
    }

    /// How each class of flow is spread.
    pub(crate) fn set_modes(&mut self, modes: Modes) {
        self.modes = modes;
    }

    pub(crate) fn modes(&self) -> &Modes {
        &self.modes
    }

    /// Paths from now on ping only when suspect or along with answers (the proxy's side).
    pub(crate) fn passive_paths(&mut self) {
        self.passive = true;
    }

    /// Counts what the traffic takes, for the ledger ([`Transport::usage_mut`]).
    pub(crate) fn count_usage(&mut self) {
        self.usage.get_or_insert_with(Usage::default);
    }

    /// What the traffic took since the caller last cleared it, if counted.
    pub(crate) fn usage_mut(&mut self) -> Option<&mut Usage> {
        self.usage.as_mut()
    }

    /// Removes paths that stay dead for `after`.
    pub(crate) fn forget_dead_paths_after(&mut self, after: Duration) {
        self.forget_dead_after = Some(after);
    }

    pub(crate) fn paths(&self) -> &[Path] {
        &self.paths
    }

    pub(crate) fn path(&self, id: PathId) -> Option<&Path> {
        self.paths.iter().find(|p| p.id() == id)
    }

    pub(crate) fn paths_mut(&mut self) -> &mut [Path] {
        &mut self.paths
    }

    /// Sends a mesh grant now, and again every [`GRANT_RESEND`] (it is small, and a lost
    /// one needs no recovery of its own). `clock_s` is the proxy's clock now: the frame
    /// carries it as it is when the frame leaves.
    pub(crate) fn set_grant(
        &mut self,
        now: Instant,
        body: Box<[u8; frame::MESH_GRANT_LEN]>,
        clock_s: u64,
    ) {
        self.grant_out = Some(GrantOut {
            body,
            clock_s,
            read_at: now,
            next: now,
        });
    }

    /// The mesh grant received last, once.
    pub(crate) fn take_grant(&mut self) -> Option<Box<[u8; frame::MESH_GRANT_LEN]>> {
        self.grant_in.take()
    }

    /// Sends a signed statement now, and again every [`GRANT_RESEND`] (small; a lost one
    /// needs no recovery of its own).
    pub(crate) fn set_statement(&mut self, now: Instant, body: Box<[u8; frame::STATEMENT_LEN]>) {
        self.statement_out = Some((body, now));
    }

    /// The statement received last, once.
    pub(crate) fn take_statement(&mut self) -> Option<Box<[u8; frame::STATEMENT_LEN]>> {
        self.statement_in.take()
    }

    /// Sends a signed rating now, and again every [`GRANT_RESEND`], as a statement.
    pub(crate) fn set_rating(&mut self, now: Instant, body: Box<[u8; frame::RATING_LEN]>) {
        self.rating_out = Some((body, now));
    }

    /// The rating received last, once.
    pub(crate) fn take_rating(&mut self) -> Option<Box<[u8; frame::RATING_LEN]>> {
        self.rating_in.take()
    }

    /// Sends our bid now, and again every [`GRANT_RESEND`] (the proxy forgets it with the
    /// session).
    pub(crate) fn set_bid(&mut self, now: Instant, per_gb: i64) {
        self.bid_out = Some((per_gb, now));
    }

    /// The bid received last, once.
    pub(crate) fn take_bid(&mut self) -> Option<i64> {
        self.bid_in.take()
    }

    /// Holds our own path `id` to probes, or not, and tells the proxy (which then holds
    /// its end too: a metered line low on allowance carries nothing either way).
    pub(crate) fn hold_own_path(&mut self, now: Instant, id: PathId, standby: bool) {
        if let Some(p) = self.path_mut(id) {
            if p.standby() != standby {
                p.set_standby(standby);
                self.standby_out = Some(now);
            }
        }
    }

    /// Our own paths (not through a neighbour) held to probes.
    fn own_standby(&self) -> impl Iterator<Item = PathId> + '_ {
        self.paths
            .iter()
            .filter(|p| p.standby() && p.endpoint().relay.is_none())
            .map(Path::id)
    }

    pub(crate) fn path_mut(&mut self, id: PathId) -> Option<&mut Path> {
        self.paths.iter_mut().find(|p| p.id() == id)
    }

    pub(crate) fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub(crate) fn reorder(&self) -> &Reorder {
        &self.reorder
    }

    pub(crate) fn spread_counters(&self) -> &SpreadCounters {
        &self.counters
    }

    /// Adds a path; with [`MAX_PATHS`] already, the one heard from least recently goes.
    pub(crate) fn add_path(
        &mut self,
        now: Instant,
        id: PathId,
        endpoint: Endpoint,
        settings: PathSettings,
    ) -> &mut Path {
        if let Some(i) = self.paths.iter().position(|p| p.id() == id) {
            return &mut self.paths[i];
        }
        if self.paths.len() == MAX_PATHS {
            let oldest = (0..self.paths.len())
                .min_by_key(|&i| (self.paths[i].usable(), self.paths[i].state_since()))
                .expect("full");
            self.paths.remove(oldest);
        }
        let max_sent = self.kept.capacity();
        let max_datagram = self.mtu + TRANSPORT_OVERHEAD;
        let mut path = Path::new(
            id,
            endpoint,
            settings,
            now,
            self.origin,
            max_sent,
            max_datagram,
        );
        if self.passive {
            path.set_passive();
        }
        self.epoch += 1;
        self.paths.push(path);
        self.paths.last_mut().expect("just pushed")
    }

    pub(crate) fn remove_path(&mut self, id: PathId) {
        self.paths.retain(|p| p.id() != id);
        self.epoch += 1;
    }

    pub(crate) fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    fn note(&mut self, i: usize, was: PathState) {
        let p = &self.paths[i];
        if p.state() != was {
            self.epoch += 1;
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(PathEvent {
                path: p.id(),
                state: p.state(),
            });
        }
    }

    /// Queues an inner packet for sending: classifies its flow, pins a new per-session
    /// flow to a path, and puts it in the flow's queue.
    pub(crate) fn push_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), DropReason> {
        crate::ip::check(packet)?;
        let slot = self
            .flows
            .on_packet(now, packet)
            .ok_or(DropReason::BadInnerPacket)?;
        let flow = self.flows.get(slot).expect("just seen");
        let resent = flow.resent();
        let mode = self.modes.resolve(flow.class());
        if mode == Mode::Packet {
            self.bulk_demand.add(now, packet.len());
        }
        let pinned = flow
            .path
            .filter(|&id| self.path(id).is_some_and(|p| p.usable()));
        if mode == Mode::Session && pinned.is_none() {
            let choice = self.roomiest_path(now);
            if let Some(flow) = self.flows.get_mut(slot) {
                flow.path = choice;
            }
        }
        if self.queue.waiting() == 0 {
            // A packet found nothing waiting: what the paths deliver now is what they were
            // offered, even if the pacer holds this one a moment (Linux's rule; without it
            // a thin flow's pacing looked like a full path and its rate estimate sank).
            self.mark_app_limited();
        }
        let r = if resent {
            self.queue.enqueue_first(now, slot.0, packet)
        } else {
            self.queue.enqueue(now, slot.0, packet)
        };
        if r == Err(DropReason::QueueFull) {
            // The queue counted the refused packet too; the caller counts it as refused.
            self.queue_drops_reported.0 += 1;
        }
        r?;
        self.epoch += 1;
        Ok(())
    }

    /// Nothing waits: the usable paths with room in their window are app-limited.
    fn mark_app_limited(&mut self) {
        let mtu = self.mtu + TRANSPORT_OVERHEAD;
        for p in &mut self.paths {
            if p.usable() && p.has_room(mtu) {
                p.on_app_limited();
            }
        }
    }

    /// Adds the packets the queue dropped since the last call to `drops`: those of the
    /// fattest flow when it was full, and those CoDel dropped for waiting too long.
    pub(crate) fn record_queue_drops(&mut self, drops: &mut crate::DropCounters) {
        let c = self.queue.counters();
        let (full, late) = self.queue_drops_reported;
        drops.add(DropReason::QueueFull, c.overflow_drops.saturating_sub(full));
        drops.add(DropReason::QueueDelay, c.codel_drops.saturating_sub(late));
        self.queue_drops_reported = (c.overflow_drops.max(full), c.codel_drops);
    }

    /// Where a new flow pinned per session goes: the active path with the least base RTT
    /// that is not busy, else the one with the most spare capacity. Busy: sending at least
    /// [`BUSY_SHARE`] of its estimated rate with nothing to spare (a path that had room
    /// while nothing waited only knows the rate it was offered). The base RTT, not the
    /// smoothed one: a path's own traffic raises the latter, and would push new flows to
    /// and fro.
    fn roomiest_path(&self, now: Instant) -> Option<PathId> {
        let usable = || self.paths.iter().filter(|p| p.usable());
        let busy = |p: &Path| {
            let bw = p.bandwidth();
            bw > 0 && !p.app_limited() && p.send_rate(now) as f64 >= BUSY_SHARE * bw as f64
        };
        usable()
            .filter(|p| !busy(p))
            .min_by_key(|p| p.base_rtt().unwrap_or(Duration::MAX))
            .or_else(|| usable().max_by_key(|p| p.bandwidth().saturating_sub(p.send_rate(now))))
            .map(|p| p.id())
    }

    /// Packets waiting to be sent.
    pub(crate) fn waiting(&self) -> usize {
        self.queue.waiting() + self.resend.len() + self.repairs.len()
    }

    /// Inner packets waiting for the TUN.
    pub(crate) fn waiting_inbound(&self) -> usize {
        self.inbound.waiting()
    }

    /// Forgets everything queued (the session is gone).
    pub(crate) fn clear_queue(&mut self) {
        self.queue.clear();
        self.kept.clear();
        self.resend.clear();
        self.repairs.clear();
        self.duplicates.clear();
    }

    /// The next inner packet for the TUN.
    pub(crate) fn poll_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (_, packet) = self.inbound.pop()?;
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Some(n)
    }

    /// Handles the opened plaintext `buf[range]` of a transport packet that arrived on
    /// path `id` from `from`, opened with our keys `keys`. An inner packet goes to the TUN
    /// queue (through the reorder buffer when it is spread) if `accept` takes it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        id: PathId,
        keys: u32,
        from: Option<Endpoint>,
        buf: &[u8],
        range: std::ops::Range<usize>,
        accept: impl Fn(&[u8]) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let plain = &buf[range.clone()];
        let (truncated, frames) = Frames::parse(plain)?;
        // All frames are checked before any is acted on: a malformed packet changes nothing.
        let (mut eliciting, mut ping) = (false, false);
        for f in frames {
            let f = f?;
            eliciting |= f.is_ack_eliciting();
            ping |= f == Frame::Ping;
        }
        let i = self
            .paths
            .iter()
            .position(|p| p.id() == id)
            .ok_or(DropReason::UnknownSession)?;
        let largest = self.paths[i].largest_received();
        let pn = frame::expand_packet_number(largest, truncated);
        // The numbers passed over: datagrams the member sent that never came (or not
        // yet: a late one was counted with the gap it filled).
        let skipped = match largest {
            Some(l) => pn.saturating_sub(l).saturating_sub(1),
            None => pn,
        };
        self.paths[i].on_keys(keys, pn);
        if !self.paths[i].on_received(now, pn, eliciting, ping) {
            return Err(DropReason::Replay);
        }
        if let Some(from) = from {
            self.paths[i].on_authenticated_from(pn, from);
            let typical = self.paths[i].typical_datagram(buf.len());
            if let Some(u) = &mut self.usage {
                // Sealed by the member, not seen before: a verified datagram, on
                // whichever line (a relay's, whose tag the caller checked) it came by.
                u.on_received(buf.len(), &from, skipped, typical);
            }
        }
        let (_, frames) = Frames::parse(plain)?;
        for f in frames {
            match f? {
                Frame::Ping => {}
                Frame::Ack(ack) => {
                    if let Some(j) = self.paths.iter().position(|p| p.id() == ack.path) {
                        let was = self.paths[j].state();
                        let before = *self.paths[j].counters();
                        self.paths[j].on_ack(now, &ack);
                        if let Some(u) = &mut self.usage {
                            let after = *self.paths[j].counters();
                            let p = &mut self.paths[j];
                            let (to, price) = (p.endpoint(), p.price_per_gb());
                            u.on_acknowledged(
                                after.acked - before.acked,
                                after.acked_bytes - before.acked_bytes,
                                &to,
                                price,
                                p.down_pay_mut(),
                            );
                        }
                        while let Some(slot) = self.paths[j].take_repair() {
                            if self.repairs.len() < self.resend_capacity {
                                self.repairs.push_back(slot);
                            }
                        }
                        self.epoch += 1;
                        self.note(j, was);
                    }
                }
                Frame::Receipt {
                    path,
                    packets,
                    bytes,
                } => {
                    if let Some(p) = self.paths.iter_mut().find(|p| p.id() == path) {
                        p.on_receipt(packets, bytes);
                        if let Some(u) = &mut self.usage {
                            let c = *p.counters();
                            let to = p.endpoint();
                            let sent = (c.tx_packets, c.tx_bytes);
                            u.on_receipt((packets, bytes), sent, &to, p.down_pay_mut());
                        }
                    }
                }
                Frame::Statement { range: r } => {
                    let mut body = Box::new([0u8; frame::STATEMENT_LEN]);
                    body.copy_from_slice(&plain[r.0..r.1]);
                    self.statement_in = Some(body);
                }
                Frame::Rating { range: r } => {
                    let mut body = Box::new([0u8; frame::RATING_LEN]);
                    body.copy_from_slice(&plain[r.0..r.1]);
                    self.rating_in = Some(body);
                }
                Frame::Bid { per_gb } => self.bid_in = Some(per_gb),
                // The member's own paths it holds to probes: the proxy holds its end too.
                // (Paths through neighbours are the proxy's own to hold.)
                Frame::Standby { range: r } if self.passive => {
                    let ids = &plain[r.0..r.1];
                    let held = |id: PathId| {
                        ids.chunks_exact(2)
                            .any(|c| u16::from_be_bytes([c[0], c[1]]) == id.0)
                    };
                    for p in &mut self.paths {
                        if p.endpoint().relay.is_none() {
                            p.set_standby(held(p.id()));
                        }
                    }
                    self.epoch += 1;
                }
                Frame::Standby { .. } => {}
                Frame::MeshGrant { range: r } => {
                    let mut body = Box::new([0u8; frame::MESH_GRANT_LEN]);
                    body.copy_from_slice(&plain[r.0..r.1]);
                    self.grant_in = Some(body);
                }
                Frame::Packet { spread, range: r } => {
                    let packet = &plain[r.0..r.1];
                    crate::ip::check(packet)?;
                    accept(packet)?;
                    self.paths[i].on_inner_received(packet.len());
                    if let Some(u) = &mut self.usage {
                        u.inner.up += packet.len() as u64;
                    }
                    let Some(s) = spread else {
                        // Full means the TUN side is not keeping up: the newest is dropped.
                        self.inbound.push(packet)?;
                        continue;
                    };
                    let inbound = &mut self.inbound;
                    let mut full = false;
                    self.reorder
                        .push(now, s.flow, s.seq, s.hold, packet, &mut |p: &[u8]| {
                            full |= inbound.push(p).is_err();
                        })?;
                    if full {
                        return Err(DropReason::QueueFull);
                    }
                }
            }
        }
        Ok(())
    }

    /// Pings every path now (new keys: each path confirms them and is measured).
    pub(crate) fn ping_all(&mut self, now: Instant) {
        for p in &mut self.paths {
            p.ping_now(now);
        }
    }

    /// Runs the paths' timers (queues re-sends from paths that just turned suspect) and
    /// the reorder buffer's.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let heard_elsewhere = self.heard_elsewhere();
        for i in 0..self.paths.len() {
            let was = self.paths[i].state();
            let elsewhere = heard_elsewhere(i);
            let resend = &mut self.resend;
            let capacity = self.resend_capacity;
            self.paths[i].on_timeout(now, elsewhere, &mut |slot| {
                if resend.len() == capacity {
                    resend.pop_front();
                }
                resend.push_back(slot);
            });
            self.note(i, was);
        }
        if let Some(after) = self.forget_dead_after {
            // Dead for long, or silent for longer than any member pings an idle path: a
            // passive path never pings, so one the member closed would stay active.
            self.paths.retain(|p| {
                let dead = p.state() == PathState::Dead
                    && now.saturating_duration_since(p.state_since()) >= after;
                let silent = p
                    .last_received()
                    .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_SILENT);
                !dead && !silent
            });
        }
        self.reorder.set_timeout(self.reorder_timeout());
        self.queue.set_codel(self.codel_params(now));
        let inbound = &mut self.inbound;
        self.reorder.handle_timeout(now, &mut |p: &[u8]| {
            // Full: the TUN side is not keeping up; the packet is lost as on a full queue.
            let _ = inbound.push(p);
        });
    }

    /// CoDel's target: RFC 8289's 5 ms, or while bulk flows are spread per packet, the
    /// one-way skew between the fastest path and the slowest worth spreading over. A
    /// packet that waits that long in the core arrives no later than one sent on the
    /// slower path at once, and ECF's rule (see [`Transport::send_queued`]) takes the
    /// slower path only while the backlog is at least that long: a shorter target would
    /// drain the backlog by dropping, and leave the slower paths idle.
    ///
    /// Its interval is RFC 8289's "worst-case RTT" of the flows: 100 ms, or the slowest
    /// usable path's base round trip when that is longer. A flow over a 150 ms path in
    /// slow start keeps a queue for more than 100 ms at each doubling, and a drop there
    /// ended its slow start at a tenth of the path.
    fn codel_params(&self, now: Instant) -> CodelParams {
        let mut base = CodelParams::default();
        let slowest = self
            .paths
            .iter()
            .filter(|p| p.usable())
            .filter_map(|p| p.base_rtt())
            .max();
        base.interval = base
            .interval
            .max(slowest.unwrap_or_default().min(MAX_CODEL_INTERVAL));
        if self.bulk_demand.rate(now) == 0 {
            return base;
        }
        let usable = || self.paths.iter().filter(|p| p.usable());
        let Some(fastest) = usable().filter_map(|p| p.base_rtt()).min() else {
            return base;
        };
        let owd = |p: &Path| p.base_rtt().map(|r| (r - fastest) / 2);
        let Some(skew) = usable().filter_map(owd).filter(|&s| s <= MAX_SKEW).max() else {
            return base;
        };
        // The backlog drains through all of them, the faster ones carry their share.
        let rate = |slower: bool| -> f64 {
            usable()
                .filter(|p| owd(p).is_some_and(|s| s <= MAX_SKEW && (s < skew || !slower)))
                .map(|p| p.bandwidth() as f64)
                .sum()
        };
        let (faster, all) = (rate(true), rate(false));
        let share = if all > 0.0 { faster / all } else { 1.0 };
        CodelParams {
            target: base.target.max(skew.mul_f64(share)),
            interval: base.interval,
        }
    }

    /// How long a gap in a spread flow is waited for: the slowest path's round trip as
    /// this end measures it (the far end spreads over the same paths) and the fastest's,
    /// their variation and a margin. That is the skew between the paths, and two round
    /// trips of the fastest more: the sender finds a packet lost about a round trip after
    /// it went, and its repair (or, when the path was cut, its re-send) is worth waiting
    /// for, and so is a second repair when the first was lost too. Given up before it
    /// came, the gap sent TCP into a needless recovery, and with the re-sends arriving
    /// late, to a timeout.
    fn reorder_timeout(&self) -> Duration {
        let mut slowest = Duration::ZERO;
        let mut fastest: Option<Duration> = None;
        let mut var = Duration::ZERO;
        for p in self.paths.iter().filter(|p| p.usable()) {
            let Some(srtt) = p.srtt() else { continue };
            slowest = slowest.max(srtt);
            fastest = Some(fastest.map_or(srtt, |f| f.min(srtt)));
            var = var.max(p.rttvar());
        }
        // A fastest round trip more: for a repair lost in turn.
        let again = fastest.unwrap_or_default();
        (slowest + again + 2 * var + REORDER_MARGIN).min(REORDER_MAX)
    }

    /// When the peer was last heard on a path other than the `i`th, for each `i`: from
    /// the latest two, in one pass.
    fn heard_elsewhere(&self) -> impl Fn(usize) -> Option<Instant> + use<> {
        let mut latest: [Option<(usize, Instant)>; 2] = [None, None];
        for (i, p) in self.paths.iter().enumerate() {
            let Some(t) = p.last_received() else { continue };
            if latest[0].is_none_or(|(_, l)| t > l) {
                latest = [Some((i, t)), latest[0]];
            } else if latest[1].is_none_or(|(_, l)| t > l) {
                latest[1] = Some((i, t));
            }
        }
        move |i| match latest {
            [Some((j, _)), other] if j == i => other.map(|(_, t)| t),
            [first, _] => first.map(|(_, t)| t),
        }
    }

    /// The earliest time a path needs attention (pings, acks, silence, pacing) or the
    /// reorder buffer gives up on a gap.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let heard_elsewhere = self.heard_elsewhere();
        let mut t = (0..self.paths.len())
            .filter_map(|i| self.paths[i].next_timeout(heard_elsewhere(i)))
            .min();
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t: Instant| t.min(x)));
            }
        };
        consider(self.reorder.poll_timeout());
        if self.paths.iter().any(Path::usable) {
            consider(self.grant_out.as_ref().map(|g| g.next));
            consider(self.statement_out.as_ref().map(|s| s.1));
            consider(self.rating_out.as_ref().map(|r| r.1));
            consider(self.bid_out.as_ref().map(|b| b.1));
            consider(self.standby_out);
        }
        if self.waiting() > 0 || !self.duplicates.is_empty() {
            // Paced paths with room: when the pacer lets them go. A path that found nothing
            // it may take waits for something to change instead (no spinning on it).
            let mtu = self.mtu + TRANSPORT_OVERHEAD;
            for p in &self.paths {
                if p.usable() && p.has_room(mtu) && p.starved_epoch() != Some(self.epoch) {
                    consider(Some(p.next_send_time()));
                }
            }
        }
        t
    }

    /// The path new traffic goes on when nothing else decides: the active one with the
    /// lowest RTT; without one, the one most likely to deliver (probing before suspect
    /// before dead). The RTT compared is the least seen: a path's own traffic queues in
    /// its ISP's buffer and raises its smoothed RTT, which would send the traffic to and
    /// fro between paths.
    pub(crate) fn best_path(&self, exclude: Option<PathId>) -> Option<usize> {
        self.best_path_where(|p| Some(p.id()) != exclude)
    }

    /// [`Transport::best_path`] among the paths `keep` keeps.
    pub(crate) fn best_path_where(&self, keep: impl Fn(&Path) -> bool) -> Option<usize> {
        let rank = |p: &Path| match p.state() {
            PathState::Active => 0,
            PathState::Probing => 1,
            PathState::Suspect => 2,
            PathState::Dead => 3,
        };
        (0..self.paths.len())
            .filter(|&i| keep(&self.paths[i]))
            .min_by_key(|&i| {
                let p = &self.paths[i];
                (rank(p), p.min_rtt().unwrap_or(Duration::MAX))
            })
    }

    /// The usable paths as the scheduler sees them now, soonest arrival first.
    fn lanes(&self, now: Instant, out: &mut [Option<(usize, Lane)>; MAX_PATHS]) -> usize {
        let mtu = self.mtu + TRANSPORT_OVERHEAD;
        // With no path active (a session just back, its paths still confirming), traffic
        // goes on the one most likely to deliver rather than wait for three answers; never
        // on one held to probes (a line that gives us nothing now).
        let fallback = if self.paths.iter().any(Path::usable) {
            None
        } else {
            self.best_path_where(|p| !p.standby())
        };
        let mut n = 0;
        for (i, p) in self.paths.iter().enumerate() {
            if (!p.usable() && Some(i) != fallback) || n == MAX_PATHS {
                continue;
            }
            let srtt = p
                .srtt()
                .or(p.min_rtt())
                .unwrap_or(Duration::from_millis(333));
            let rate = (p.bandwidth().max(1)) as f64;
            let wait = if p.has_room(mtu) {
                p.next_send_time().saturating_duration_since(now)
            } else {
                // Full: room comes back as acks return, about a packet's time per packet.
                let over = (p.bytes_in_flight() + mtu as u64).saturating_sub(p.congestion_window());
                Duration::from_secs_f64(over as f64 / rate).min(srtt)
            };
            out[n] = Some((
                i,
                Lane {
                    id: p.id(),
                    owd: srtt / 2,
                    wait,
                    rate,
                },
            ));
            n += 1;
        }
        out[..n].sort_by_key(|l| l.map(|(_, l)| l.arrival()));
        n
    }

    /// Writes the next datagram, sealed with `keys`: due acks and pings first (round robin
    /// over paths), then re-sends, repairs and copies, then queued packets as the
    /// scheduler spreads them.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let n = self.paths.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let p = &self.paths[i];
            let ping = p.ping_due(now);
            let ack = p.ack_due(now) || (ping && p.has_unacked());
            let receipt = p.receipt_due(now);
            let grant = p.usable()
                && (self.grant_out.as_ref().is_some_and(|g| g.next <= now)
                    || self.statement_out.as_ref().is_some_and(|s| s.1 <= now)
                    || self.rating_out.as_ref().is_some_and(|r| r.1 <= now)
                    || self.bid_out.as_ref().is_some_and(|b| b.1 <= now)
                    || self.standby_out.is_some_and(|t| t <= now));
            if ping || ack || receipt || grant {
                self.cursor = (i + 1) % n;
                return self.send_control(now, i, ping, ack, receipt, keys, limits, buf);
            }
        }
        let sent = self.send_data(now, keys, limits, buf)?;
        if sent.is_none() {
            // Nothing may go now: a path whose pacer is due waits for something to change
            // (a packet, an ack, a path's state), so poll_timeout offers no time in the past.
            let epoch = self.epoch;
            for p in &mut self.paths {
                if p.next_send_time() <= now {
                    p.set_starved_epoch(epoch);
                }
            }
        }
        Ok(sent)
    }

    /// Re-sends, repairs and copies, then queued packets as the scheduler spreads them.
    fn send_data(
        &mut self,
        now: Instant,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let mut lanes = [None; MAX_PATHS];
        let count = self.lanes(now, &mut lanes);
        let lanes = &lanes[..count];
        let mtu = self.mtu + TRANSPORT_OVERHEAD;
        // Re-sends of a failed path's packets and repairs of lost ones go on the path that
        // delivers soonest; nowhere to go: they had their chance.
        for repair in [false, true] {
            loop {
                let queue = if repair {
                    &mut self.repairs
                } else {
                    &mut self.resend
                };
                let Some(&slot) = queue.front() else { break };
                let Some(len) = self.kept.get(slot).map(|p| p.len()) else {
                    // Its copy was overwritten by newer traffic: too old to matter.
                    queue.pop_front();
                    continue;
                };
                // Only to a path that answers: with none active, the likeliest one may be
                // the very path the packet is in flight on, and a copy there is a duplicate.
                let Some(&(i, _)) = lanes
                    .first()
                    .and_then(|l| l.as_ref())
                    .filter(|&&(i, _)| self.paths[i].usable())
                else {
                    queue.pop_front();
                    continue;
                };
                if !self.paths[i].can_send_data(now, len + TRANSPORT_OVERHEAD) {
                    break;
                }
                queue.pop_front();
                if repair {
                    self.counters.repaired += 1;
                }
                return self.send_kept(now, i, slot, keys, limits, buf).map(Some);
            }
        }
        while let Some(&(slot, original)) = self.duplicates.front() {
            let target = lanes
                .iter()
                .flatten()
                .find(|(_, l)| l.id != original)
                .map(|&(i, _)| i);
            let (Some(i), Some(len)) = (target, self.kept.get(slot).map(|p| p.len())) else {
                self.duplicates.pop_front();
                continue;
            };
            if !self.paths[i].has_room(len + TRANSPORT_OVERHEAD) {
                break;
            }
            self.duplicates.pop_front();
            self.counters.duplicated_packets += 1;
            self.counters.duplicated_bytes += len as u64;
            return self.send_kept(now, i, slot, keys, limits, buf).map(Some);
        }
        if self.queue.waiting() == 0 {
            self.mark_app_limited();
            return Ok(None);
        }
        for (k, &(i, _)) in lanes.iter().flatten().enumerate() {
            if !self.paths[i].can_send_data(now, mtu)
                || self.paths[i].starved_epoch() == Some(self.epoch)
            {
                continue;
            }
            if let Some(t) = self.send_queued(now, i, k, lanes, keys, limits, buf)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_control(
        &mut self,
        now: Instant,
        i: usize,
        ping: bool,
        ack: bool,
        receipt: bool,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        // Our own paths held to probes, when they are due to be told.
        let mut held = [PathId(0); frame::MAX_STANDBY];
        let mut held_count = 0;
        if self.standby_out.is_some_and(|t| t <= now) {
            for id in self.own_standby().take(frame::MAX_STANDBY) {
                held[held_count] = id;
                held_count += 1;
            }
        }
        let p = &mut self.paths[i];
        // Each extension takes its type and a two-byte length besides its body.
        let room = frame::MAX_ACK_LEN
            + 64
            + [
                frame::MESH_GRANT_LEN,
                frame::STATEMENT_LEN,
                frame::RATING_LEN,
                frame::BID_LEN,
                2 * frame::MAX_STANDBY,
            ]
            .iter()
            .map(|len| len + 3)
            .sum::<usize>();
        let plain = buf
            .get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + room)
            .ok_or(DropReason::PacketTooLarge)?;
        let mut w = Writer::new(plain, p.next_packet_number()).ok_or(DropReason::PacketTooLarge)?;
        // An answer that is due anyway asks for one back when our own ping is half due
        // (or the path is not confirmed): one round trip then measures both directions.
        let ping = ping || (ack && p.ping_along(now));
        if ack {
            if let Some(a) = p.ack(now) {
                w.ack(&a).ok_or(DropReason::PacketTooLarge)?;
                p.on_ack_sent();
            }
        }
        if ping {
            w.ping();
        }
        if receipt {
            let (packets, bytes) = p.take_receipt(now);
            w.receipt(p.id(), packets, bytes);
        }
        if p.usable() {
            if let Some(g) = self.grant_out.as_mut().filter(|g| g.next <= now) {
                // The clock as it is when the frame leaves.
                let clock = g.clock_s + now.saturating_duration_since(g.read_at).as_secs();
                g.body[frame::MESH_GRANT_LEN - 8..].copy_from_slice(&clock.to_be_bytes());
                w.mesh_grant(&g.body);
                g.next = now + GRANT_RESEND;
            }
            if let Some((body, next)) = self.statement_out.as_mut().filter(|s| s.1 <= now) {
                w.statement(body);
                *next = now + GRANT_RESEND;
            }
            if let Some((body, next)) = self.rating_out.as_mut().filter(|r| r.1 <= now) {
                w.rating(body);
                *next = now + GRANT_RESEND;
            }
            if let Some((per_gb, next)) = self.bid_out.as_mut().filter(|b| b.1 <= now) {
                w.bid(*per_gb);
                *next = now + GRANT_RESEND;
            }
            if self.standby_out.is_some_and(|t| t <= now) {
                let n = held_count;
                w.standby(held[..n].iter().copied());
                // Said again while any is held (a proxy restart forgets); none: said once.
                self.standby_out = (n > 0).then_some(now + GRANT_RESEND);
            }
        }
        let len = w.len();
        let total = keys.seal(p.id(), buf, len, limits)?;
        let p = &mut self.paths[i];
        p.on_sent(now, total, ping, None);
        if ping {
            p.on_ping_sent(now);
        }
        Ok(Some(self.transmit(i, total)))
    }

    /// Sends the next queued packet path `i` may take (the `k`-th of `lanes`), if any.
    #[allow(clippy::too_many_arguments)]
    fn send_queued(
        &mut self,
        now: Instant,
        i: usize,
        k: usize,
        lanes: &[Option<(usize, Lane)>],
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, DropReason> {
        let id = self.paths[i].id();
        let body = TRANSPORT_HEADER_LEN + frame::PACKET_NUMBER_LEN + frame::SPREAD_PACKET_FRAME_LEN;
        let out = buf
            .get_mut(body..body + self.mtu)
            .ok_or(DropReason::PacketTooLarge)?;
        // A slower path takes bulk packets while the bulk flows want more than the paths
        // that deliver sooner carry, and the far end need not hold the rest too long.
        let faster: f64 = lanes[..k].iter().flatten().map(|(_, l)| l.rate).sum();
        let lane = lanes[k].expect("a lane").1;
        let first = lanes[0].expect("a lane").1;
        // A faster path still in startup has not found its rate: what it carries is no
        // measure of what it could.
        let faster_found = lanes[..k].iter().flatten().all(|&(j, _)| {
            self.paths[j].congestion_state() != crate::path::CongestionState::Startup
        });
        let worth_it = faster_found && lane.owd.saturating_sub(first.owd) <= MAX_SKEW;
        let spread_here =
            k == 0 || (worth_it && self.bulk_demand.rate(now) as f64 >= DEMAND_SHARE * faster);
        let lowest_latency = lanes
            .iter()
            .flatten()
            .min_by_key(|(_, l)| l.owd)
            .map(|(_, l)| l.id);
        let usable = |p: PathId| lanes.iter().flatten().any(|(_, l)| l.id == p);
        let (flows, modes) = (&self.flows, &self.modes);
        // Or, as ECF: this flow's backlog would take the faster paths longer to carry
        // than this one's extra delay. Not while a faster path is in startup: its rate
        // is still doubling, and a backlog measured against it was why a TCP flow's
        // first packets went to a slow lossy line, and a loss there ended its slow start
        // at a tenth of the fast line's rate.
        let extra = lane.arrival().saturating_sub(first.arrival()).as_secs_f64();
        let backlogged = |bytes: usize| faster > 0.0 && bytes as f64 / faster > extra;
        let eligible = |q: u16, bytes: usize| {
            let Some(f) = flows.get(FlowSlot(q)) else {
                return true;
            };
            match modes.resolve(f.class()) {
                Mode::Packet => spread_here || (worth_it && backlogged(bytes)),
                Mode::Redundant => Some(id) == lowest_latency,
                Mode::Session | Mode::Auto => match f.path {
                    Some(p) if usable(p) => p == id,
                    // Its path failed or was never chosen: the first to have room takes it.
                    _ => true,
                },
            }
        };
        let spreadable = lanes.iter().flatten().count() > 1;
        let Some(d) = self.queue.dequeue(now, eligible, out) else {
            return Ok(None);
        };
        let slot = FlowSlot(d.queue);
        let (mode, class, spread) = match self.flows.get_mut(slot) {
            Some(f) => {
                let mode = self.modes.resolve(f.class());
                if mode != Mode::Packet {
                    f.path = Some(id);
                }
                let spread = Spread {
                    flow: d.queue,
                    seq: f.seq,
                    // Held for order, and repaired if lost, while there is more than one
                    // path (a pinned flow's loss too: a repair costs TCP no window cut).
                    // Not an interactive flow, which must never wait: its copies on a
                    // second path cover its losses. On one path a gap is a loss, TCP's
                    // own to recover, and holding the packets behind it only delays them.
                    hold: spreadable
                        && mode != Mode::Redundant
                        && f.class() != FlowClass::Interactive,
                };
                f.seq = f.seq.wrapping_add(1);
                (mode, f.class(), spread)
            }
            None => (
                Mode::Session,
                FlowClass::Default,
                Spread {
                    flow: d.queue,
                    seq: 0,
                    hold: false,
                },
            ),
        };
        let len = d.len;
        // The copy kept for re-sends.
        let kept = self.keep(&buf[body..body + len], spread);
        self.counters.packets += 1;
        self.counters.bytes += len as u64;
        if let Some(u) = &mut self.usage {
            u.inner.down += len as u64;
        }
        self.counters.by_class[class as usize] += 1;
        self.budget.earn(now, len);
        if mode == Mode::Redundant
            && spreadable
            && self.duplicates.len() < self.resend_capacity
            && self.budget.spend(len)
        {
            self.duplicates.push_back((kept, id));
        }
        // The packet number, and an ack where the packet leaves room for one (the packet
        // moves up to make room).
        let p = &mut self.paths[i];
        let mut head = [0u8; frame::PACKET_NUMBER_LEN + frame::MAX_ACK_LEN];
        let mut head_len = frame::PACKET_NUMBER_LEN;
        {
            let mut w =
                Writer::new(&mut head, p.next_packet_number()).ok_or(DropReason::PacketTooLarge)?;
            if let Some(a) = p.ack(now).filter(|_| p.has_unacked()) {
                if w.ack(&a).is_some() && w.len() - frame::PACKET_NUMBER_LEN <= self.mtu - len {
                    head_len = w.len();
                    p.on_ack_sent();
                }
            }
        }
        if head_len > frame::PACKET_NUMBER_LEN {
            let shift = head_len - frame::PACKET_NUMBER_LEN;
            buf.copy_within(body..body + len, body + shift);
        }
        buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + head_len]
            .copy_from_slice(&head[..head_len]);
        frame::write_packet_header(&mut buf[TRANSPORT_HEADER_LEN + head_len..], Some(spread))
            .ok_or(DropReason::PacketTooLarge)?;
        let plain_len = head_len + frame::SPREAD_PACKET_FRAME_LEN + len;
        let total = keys.seal(id, buf, plain_len, limits)?;
        let p = &mut self.paths[i];
        p.on_sent_with(now, total, true, Some((kept, len)), spread.hold);
        Ok(Some(self.transmit(i, total)))
    }

    /// Keeps a copy of a packet being sent, for a re-send elsewhere; returns its slot.
    fn keep(&mut self, packet: &[u8], spread: Spread) -> u64 {
        let slot = self.kept.push(packet).expect("copies never wait");
        self.kept.pop();
        let cap = self.kept_spread.len() as u64;
        self.kept_spread[(slot % cap) as usize] = Some(spread);
        slot
    }

    /// Sends the kept copy `slot` again on path `i`.
    #[allow(clippy::too_many_arguments)]
    fn send_kept(
        &mut self,
        now: Instant,
        i: usize,
        slot: u64,
        keys: &mut Keypair,
        limits: &Limits,
        buf: &mut [u8],
    ) -> Result<Transmit, DropReason> {
        let cap = self.kept_spread.len() as u64;
        let spread = self.kept_spread[(slot % cap) as usize];
        let packet = self.kept.get(slot).ok_or(DropReason::PacketTooLarge)?;
        let len = packet.len();
        let p = &mut self.paths[i];
        let plain = buf
            .get_mut(TRANSPORT_HEADER_LEN..)
            .ok_or(DropReason::PacketTooLarge)?;
        let w = Writer::new(plain, p.next_packet_number()).ok_or(DropReason::PacketTooLarge)?;
        let at = w.len();
        let header = frame::write_packet_header(&mut plain[at..], spread)
            .ok_or(DropReason::PacketTooLarge)?;
        plain
            .get_mut(at + header..at + header + len)
            .ok_or(DropReason::PacketTooLarge)?
            .copy_from_slice(packet);
        let plain_len = at + header + len;
        let id = p.id();
        let total = keys.seal(id, buf, plain_len, limits)?;
        let p = &mut self.paths[i];
        // A repair lost in turn is repaired again while the far end still holds its gap
        // (once only, about one loss in thirty on a 3 % line reached TCP).
        let repair = spread.is_some_and(|s| s.hold);
        p.on_sent_with(now, total, true, Some((slot, len)), repair);
        Ok(self.transmit(i, total))
    }

    fn transmit(&mut self, i: usize, len: usize) -> Transmit {
        let e = self.paths[i].endpoint();
        if let Some(u) = &mut self.usage {
            u.on_sent(len, &e);
        }
        Transmit {
            path: self.paths[i].id(),
            remote: e.remote,
            local: e.local,
            len,
        }
    }
}
