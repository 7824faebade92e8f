//! One path between a member and the proxy, as either end sees it: where it goes, what
//! it is worth (RTT, loss, delivery rate, queueing delay), how it stands (probing →
//! active → suspect → dead → probing), and what it carried.
//!
//! Every packet on a path has a packet number of that path, and the far end acknowledges
//! them ([`crate::frame`]), so the estimates move with every packet rather than with
//! probes. Idle paths are pinged often enough that a death shows within a few hundred
//! milliseconds.

mod cc;

use cc::Congestion;
pub use cc::CongestionState;
pub use cc::SCAVENGER_TARGET;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::frame::{Ack, MAX_ACK_RANGES};
use crate::wire::PathId;

/// How a path stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Not (or no longer) confirmed: pinged until enough pings are answered.
    Probing,
    /// Answers: carries traffic.
    Active,
    /// Something sent on it went unanswered for about two RTTs: no new traffic, what was
    /// in flight is re-sent on the others, pinged fast.
    Suspect,
    /// Unanswered for [`DEAD_AFTER`] as suspect: pinged slowly until it answers again.
    Dead,
}

impl PathState {
    /// A stable name for status output.
    pub fn name(self) -> &'static str {
        match self {
            PathState::Probing => "probing",
            PathState::Active => "active",
            PathState::Suspect => "suspect",
            PathState::Dead => "dead",
        }
    }
}

/// Per-path settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    /// An idle path is pinged this often. Each ping and its answer cost about 150 bytes
    /// on the wire both ways together (see docs/probing.md): slow it on metered lines.
    pub probe_interval: Duration,
}

impl Default for PathSettings {
    fn default() -> Self {
        PathSettings {
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}

/// How often an idle path is pinged unless its settings say otherwise.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Suspect this long without an answer: dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(1500);
/// A dead path is pinged at most this often (or at its probe interval, if slower).
pub const DEAD_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest an acknowledgement waits for more packets to acknowledge with it.
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(10);
/// Acknowledge at once after this many ack-eliciting packets (RFC 9000's 2). With 4, a
/// path that carried nothing the other way (a download's slower path, its acks all on the
/// faster one) was acknowledged in coarse steps, and a fibre + LTE download on the real
/// kernel fell from 0.93 to 0.71-0.79 of kernel MPTCP.
const ACK_EVERY: u32 = 2;
/// RTT assumed before a path's first sample (RFC 9002's initial RTT).
const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Never suspect a path sooner than this after sending (timer granularity, scheduling).
const MIN_SUSPECT_AFTER: Duration = Duration::from_millis(25);
/// Never suspect a busy path for an ack gap shorter than this.
const MIN_ACK_GAP: Duration = Duration::from_millis(30);
/// Packets in flight that make a path busy enough to judge by its ack clock: the peer acks
/// every [`ACK_EVERY`], so with fewer no ack need come before the ack delay.
const ACK_CLOCK_IN_FLIGHT: usize = 2 * ACK_EVERY as usize;
/// Answered pings a path that died needs before it carries traffic again.
const CONFIRMATIONS_AFTER_DEAD: u32 = 3;
/// Packets sent and not yet acknowledged that a path remembers at most; older ones are
/// forgotten (counted neither acked nor lost). At 100 Mbit/s of full packets this is
/// 500 ms. Each core sizes its paths from its send queue.
pub const MAX_SENT: usize = 4096;
/// A path reports what it received (for the ledger) at most this often.
const RECEIPT_INTERVAL: Duration = Duration::from_secs(1);
/// Entries of a path's record of packets in flight kept free of data for pings.
const SENT_RESERVED_FOR_PINGS: usize = 8;
/// Lost packets waiting for a repair at most; more are left to the flows' own recovery.
const MAX_REPAIRS: usize = 256;
/// Packet-number reordering that means loss (RFC 9002's kPacketThreshold).
const PACKET_THRESHOLD: u64 = 3;
/// Base-delay history (RFC 6817 §3.4.2): minima of this many intervals...
const BASE_HISTORY: usize = 10;
/// ... each this long. Ten 30 s minima: a clock drift of 100 ppm between the two ends
/// shows as at most 30 ms of false queueing delay, where a minimum kept forever grows
/// without bound.
const BASE_INTERVAL_US: u64 = 30_000_000;
/// The current delay is the minimum of this many recent samples (RFC 6817's CURRENT_FILTER).
const CURRENT_FILTER: usize = 4;
/// Delivery-rate samples are kept as maxima of time buckets of this length...
const RATE_BUCKET: Duration = Duration::from_millis(125);
/// ... this many of them.
const RATE_BUCKETS: usize = 8;
/// Weight of each resolved packet in the windowed loss estimate.
const LOSS_GAIN: f64 = 1.0 / 256.0;

/// Where a path goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The far end's address (at the proxy, for a relayed path: the relay's).
    pub remote: SocketAddr,
    /// Our address this path uses, when it matters (the proxy answers from the address a
    /// path reached; a gateway's uplink socket is bound to its device instead).
    pub local: Option<SocketAddr>,
    /// At the proxy, the neighbour that relays this path: what goes on it is wrapped for
    /// that relay's slot and sent to `remote`.
    pub relay: Option<RelayHop>,
}

impl Endpoint {
    /// A path straight to `remote`.
    pub fn direct(remote: SocketAddr, local: Option<SocketAddr>) -> Endpoint {
        Endpoint {
            remote,
            local,
            relay: None,
        }
    }
}

/// A relayed path's hop at the proxy: which member relays it, under which of its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayHop {
    /// The relaying member (its id at the proxy).
    pub relay: u32,
    /// The relay's handle for the member it carries for.
    pub slot: u32,
}

/// Counters of one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounters {
    /// Inner packets sent on it (re-sent ones included).
    pub tx_packets: u64,
    /// Inner bytes sent on it.
    pub tx_bytes: u64,
    /// Inner packets received on it.
    pub rx_packets: u64,
    /// Inner bytes received on it.
    pub rx_bytes: u64,
    /// Datagrams sent (data, pings, acks).
    pub tx_datagrams: u64,
    /// Their bytes on the wire (UDP payload).
    pub tx_datagram_bytes: u64,
    /// Datagrams received and authenticated.
    pub rx_datagrams: u64,
    /// Ack-eliciting packets the far end acknowledged.
    pub acked: u64,
    /// Their datagram bytes.
    pub acked_bytes: u64,
    /// Ack-eliciting packets declared lost.
    pub lost: u64,
    /// Inner packets that were in flight here when it turned suspect and were re-sent on
    /// another path.
    pub resent_elsewhere: u64,
    /// Times it turned suspect.
    pub suspected: u64,
    /// Times, as a scavenger (a path through a neighbour's line), it began to give way to
    /// a queue above [`SCAVENGER_TARGET`]: traffic the pool cannot see on that line.
    pub scavenger_backoffs: u64,
}

/// An ack-eliciting packet sent and not yet resolved.
#[derive(Debug, Clone, Copy)]
struct Sent {
    pn: u64,
    at: Instant,
    /// Datagram bytes.
    size: u32,
    /// The inner packet's slot in the core's ring, for a re-send elsewhere.
    packet: Option<u64>,
    /// Sent while nothing else waited: its delivery-rate sample is app-limited.
    app_limited: bool,
    /// Re-sent once, on whichever path delivers soonest, if lost here.
    repair: bool,
    /// Bytes delivered on this path when it was sent, and when that count last moved.
    delivered: u64,
    delivered_at: Instant,
    acked: bool,
    lost: bool,
}

/// One path, at either end.
#[derive(Debug, Clone)]
pub struct Path {
    id: PathId,
    endpoint: Endpoint,
    settings: PathSettings,
    state: PathState,
    state_since: Instant,
    /// Answered pings since the path was last dead.
    confirmations: u32,
    origin: Instant,

    // Sending.
    next_pn: u64,
    sent: VecDeque<Sent>,
    largest_acked: Option<u64>,
    last_ack_eliciting_sent: Option<Instant>,
    next_ping: Instant,
    /// Pings sent since the last answer, for the suspect-state backoff.
    unanswered_pings: u32,
    /// Pinged only when suspect, or along with an answer to the far end's ping: the
    /// proxy's side of a member's path, so that the member's probing interval (slow on a
    /// metered line) is the only one that costs it traffic.
    passive: bool,
    /// Congestion control and pacer: how much may be in flight, and how fast.
    cc: Congestion,
    /// Slots of lost packets marked for repair, for the core to re-send once.
    repairs: VecDeque<u64>,
    /// Data bytes sent lately, for the share of a new flow's path choice.
    sent_rate: RateMeter,
    /// The core's scheduling epoch when this path last found nothing it may send.
    starved_epoch: Option<u64>,
    /// Kept alive by probes but given no data: the line it goes through has nothing spare
    /// for it (a neighbour whose owner fills its line).
    standby: bool,
    /// When an ack last acknowledged something new, and the longest gap between such acks
    /// lately while the path was busy: the ack clock, which stops when the path dies
    /// whatever its queue holds.
    last_ack_at: Option<Instant>,
    ack_interval: Option<Duration>,

    // Estimates.
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    latest_rtt: Duration,
    delivered: u64,
    delivered_at: Instant,
    rate_buckets: [(u64, u64); RATE_BUCKETS],
    loss: f64,
    delay: DelayTrend,

    // Receiving.
    received: Received,
    /// Ack-eliciting packets received since our last ack.
    unacked: u32,
    ack_due: Option<Instant>,
    /// When an authenticated packet last arrived on it.
    last_received: Option<Instant>,
    /// See [`Path::price_per_gb`].
    price_per_gb: Option<i64>,
    /// At the proxy, what the ledger paid for it so far through a relay, down.
    down_pay: crate::usage::DownPay,
    /// The size of its datagrams received, as a moving average (0 before the first).
    typical_rx: u32,
    /// Highest packet number that moved the remote endpoint (roaming).
    largest_from_endpoint: Option<u64>,
    /// The session keys (our index) the last two keypairs' packets came under.
    rx_keys: [Option<u32>; 2],

    counters: PathCounters,
    /// What the far end last reported receiving from us on this path (packets, bytes).
    peer_receipt: Option<(u64, u64)>,
    receipt_reported: u64,
    /// Not before this is the next receipt sent.
    next_receipt: Instant,
    /// Ack-eliciting packets remembered at most (the ring below is allocated once).
    max_sent: usize,
}

impl Path {
    /// A path that remembers up to `max_sent` packets in flight (clamped to 64 ..=
    /// [`MAX_SENT`]; allocated now, never grown), of at most `max_datagram` bytes.
    pub(crate) fn new(
        id: PathId,
        endpoint: Endpoint,
        settings: PathSettings,
        now: Instant,
        origin: Instant,
        max_sent: usize,
        max_datagram: usize,
    ) -> Path {
        let max_sent = max_sent.clamp(64, MAX_SENT);
        let mut cc = Congestion::new(now, max_datagram);
        // A neighbour's line carries traffic the pool cannot see: give way to it.
        cc.set_scavenger(endpoint.relay.is_some());
        Path {
            id,
            endpoint,
            settings,
            state: PathState::Probing,
            state_since: now,
            confirmations: 0,
            origin,
            next_pn: 0,
            sent: VecDeque::with_capacity(max_sent),
            largest_acked: None,
            last_ack_eliciting_sent: None,
            next_ping: now,
            unanswered_pings: 0,
            passive: false,
            cc,
            repairs: VecDeque::with_capacity(MAX_REPAIRS),
            sent_rate: RateMeter::default(),
            starved_epoch: None,
            standby: false,
            last_ack_at: None,
            ack_interval: None,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            latest_rtt: Duration::ZERO,
            delivered: 0,
            delivered_at: now,
            rate_buckets: [(0, 0); RATE_BUCKETS],
            loss: 0.0,
            delay: DelayTrend::default(),
            received: Received::default(),
            unacked: 0,
            ack_due: None,
            last_received: None,
            price_per_gb: None,
            down_pay: crate::usage::DownPay::default(),
            typical_rx: 0,
            largest_from_endpoint: None,
            rx_keys: [None; 2],
            counters: PathCounters::default(),
            peer_receipt: None,
            receipt_reported: 0,
            next_receipt: now + RECEIPT_INTERVAL,
            max_sent,
        }
    }

    /// Its id on the wire. Ids are never reused for another path in one session.
    pub fn id(&self) -> PathId {
        self.id
    }

    /// Where it goes.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// How it stands.
    pub fn state(&self) -> PathState {
        self.state
    }

    /// Since when.
    pub fn state_since(&self) -> Instant {
        self.state_since
    }

    /// Its settings.
    pub fn settings(&self) -> PathSettings {
        self.settings
    }

    /// Smoothed round-trip time (RFC 9002), once a packet was acknowledged.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation (RFC 9002).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// Smallest RTT seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Recent fraction of ack-eliciting packets lost (0.0 ..= 1.0), weighted towards the
    /// last few hundred.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Delivery rate: the most bytes per second acknowledged over about one second
    /// (datagram bytes, as the link carries them). Zero before any sample.
    pub fn delivery_rate(&self) -> u64 {
        let now_bucket = self.rate_buckets.iter().map(|b| b.0).max().unwrap_or(0);
        self.rate_buckets
            .iter()
            .filter(|b| b.0 + RATE_BUCKETS as u64 > now_bucket)
            .map(|b| b.1)
            .max()
            .unwrap_or(0)
    }

    /// Queueing delay on the way out, from the one-way-delay trend over a rolling base
    /// (RFC 6817).
    pub fn queue_delay(&self) -> Duration {
        self.delay.queue_delay()
    }

    /// Counters.
    pub fn counters(&self) -> &PathCounters {
        &self.counters
    }

    /// What the far end last reported receiving on this path (packets, bytes).
    pub fn peer_receipt(&self) -> Option<(u64, u64)> {
        self.peer_receipt
    }

    /// When an authenticated packet last arrived on it.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// Ack-eliciting packets in flight.
    pub fn in_flight(&self) -> usize {
        self.sent.iter().filter(|s| !s.acked && !s.lost).count()
    }

    /// Bytes in flight (datagram bytes).
    pub fn bytes_in_flight(&self) -> u64 {
        self.cc.in_flight()
    }

    /// What its congestion control is doing.
    pub fn congestion_state(&self) -> CongestionState {
        self.cc.state()
    }

    /// The most bytes its congestion control lets be in flight.
    pub fn congestion_window(&self) -> u64 {
        self.cc.window(self.srtt_or_initial())
    }

    /// The rate it is paced at, bytes per second.
    pub fn pacing_rate(&self) -> u64 {
        self.cc.pacing_rate(self.srtt_or_initial())
    }

    /// Its estimated bottleneck rate, bytes per second of datagrams (zero before a sample),
    /// or its cap if that is lower, less what it gives way as a scavenger: what the
    /// scheduler may count on.
    pub fn bandwidth(&self) -> u64 {
        self.cc.usable_bandwidth()
    }

    /// Its estimated bottleneck rate, whatever its cap.
    pub fn line_bandwidth(&self) -> u64 {
        self.cc.bandwidth()
    }

    /// Caps the rate it sends at (bytes per second of datagrams): at the proxy, a relayed
    /// path gets only the spare capacity of the relay's line.
    pub(crate) fn set_rate_cap(&mut self, cap: Option<u64>) {
        self.cc.set_rate_cap(cap);
    }

    /// Its cap, if it has one.
    pub fn rate_cap(&self) -> Option<u64> {
        self.cc.rate_cap()
    }

    /// At the proxy, a path through a relay whose line is auctioned: the price per GB
    /// (milli-credits) its member's award paid; what it carries is charged at it.
    pub(crate) fn set_price_per_gb(&mut self, price: Option<i64>) {
        self.price_per_gb = price;
    }

    /// The auction's price of what it carries now, if any.
    pub fn price_per_gb(&self) -> Option<i64> {
        self.price_per_gb
    }

    /// The size its received datagrams usually have, before one of `len` bytes that came
    /// now (which then counts in it): what a datagram that never came is taken to be.
    pub(crate) fn typical_datagram(&mut self, len: usize) -> usize {
        let len = len.min(u32::MAX as usize) as u32;
        let typical = if self.typical_rx == 0 {
            len
        } else {
            self.typical_rx
        };
        self.typical_rx = typical - typical / 8 + len / 8;
        typical as usize
    }

    /// What the ledger paid for it so far, down, when it goes through a relay.
    pub(crate) fn down_pay_mut(&mut self) -> &mut crate::usage::DownPay {
        &mut self.down_pay
    }

    /// As a scavenger (a path through a neighbour's line, at both ends), the share of its
    /// own rate it takes now, 0 to 1: 1 while that line queues less than
    /// [`SCAVENGER_TARGET`], less while traffic the pool cannot see fills it. `None` for a
    /// path that is not a scavenger.
    pub fn scavenger_share(&self) -> Option<f64> {
        self.cc.scavenger_share()
    }

    /// The least RTT lately (a window of seconds), as congestion control sees it.
    pub fn base_rtt(&self) -> Option<Duration> {
        self.cc.min_rtt().or(self.min_rtt)
    }

    fn srtt_or_initial(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    /// Whether a data packet of `bytes` may go now: window and pacer.
    pub(crate) fn can_send_data(&self, now: Instant, bytes: usize) -> bool {
        self.has_room(bytes) && self.cc.can_send(now, bytes as u64, self.srtt_or_initial())
    }

    /// Whether the window has room for `bytes`, whatever the pacer says. Never more in
    /// flight than the path can keep track of (pings keep some room).
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.sent.len() + SENT_RESERVED_FOR_PINGS < self.max_sent
            && self.cc.has_room(bytes as u64, self.srtt_or_initial())
    }

    /// When the pacer lets the next data packet go.
    pub(crate) fn next_send_time(&self) -> Instant {
        self.cc.next_send()
    }

    /// Data bytes per second sent on it lately.
    pub fn send_rate(&self, now: Instant) -> u64 {
        self.sent_rate.rate(now)
    }

    pub(crate) fn starved_epoch(&self) -> Option<u64> {
        self.starved_epoch
    }

    pub(crate) fn set_starved_epoch(&mut self, epoch: u64) {
        self.starved_epoch = Some(epoch);
    }

    /// The next lost packet to repair (its slot in the core's ring).
    pub(crate) fn take_repair(&mut self) -> Option<u64> {
        self.repairs.pop_front()
    }

    /// The window had room and nothing waited to be sent on this path.
    pub(crate) fn on_app_limited(&mut self) {
        self.cc.on_app_limited(self.delivered);
    }

    /// Whether what is in flight now was sent with room to spare: its rate estimate is
    /// only what it was offered, so it cannot be called busy.
    pub(crate) fn app_limited(&self) -> bool {
        self.cc.app_limited(self.delivered)
    }

    /// Whether new traffic may go on it.
    pub(crate) fn usable(&self) -> bool {
        self.state == PathState::Active && !self.standby
    }

    /// Whether it is held to probes only ([`Path::set_standby`]).
    pub fn standby(&self) -> bool {
        self.standby
    }

    /// Holds the path to probes (or lets it carry data again): its state and estimates go
    /// on, but no traffic goes on it.
    pub(crate) fn set_standby(&mut self, standby: bool) {
        self.standby = standby;
    }

    pub(crate) fn set_remote(&mut self, remote: SocketAddr) {
        self.endpoint.remote = remote;
    }

    pub(crate) fn set_settings(&mut self, settings: PathSettings) {
        self.settings = settings;
        self.next_ping = self
            .next_ping
            .min(self.last_activity() + settings.probe_interval);
    }

    fn last_activity(&self) -> Instant {
        self.last_ack_eliciting_sent.unwrap_or(self.state_since)
    }

    /// A packet authenticated on this path came from `from` to `local`: the endpoint moves
    /// only on the highest packet number yet, so a late packet from an old NAT binding
    /// cannot move it back.
    pub(crate) fn on_authenticated_from(&mut self, pn: u64, from: Endpoint) {
        if self.largest_from_endpoint.is_none_or(|l| pn > l) {
            self.largest_from_endpoint = Some(pn);
            self.endpoint = from;
            // Relayed now, or direct now: a scavenger only on a neighbour's line.
            self.cc.set_scavenger(from.relay.is_some());
        }
    }

    // ---- sending ----

    /// The packet number the next packet on this path gets.
    pub(crate) fn next_packet_number(&self) -> u64 {
        self.next_pn
    }

    /// Records a packet sent (its number was [`Path::next_packet_number`]).
    pub(crate) fn on_sent(
        &mut self,
        now: Instant,
        size: usize,
        ack_eliciting: bool,
        packet: Option<(u64, usize)>,
    ) {
        self.on_sent_with(now, size, ack_eliciting, packet, false)
    }

    /// As [`Path::on_sent`], saying whether to hand the packet back for a repair if it is
    /// lost (`repair`).
    pub(crate) fn on_sent_with(
        &mut self,
        now: Instant,
        size: usize,
        ack_eliciting: bool,
        packet: Option<(u64, usize)>,
        repair: bool,
    ) {
        let pn = self.next_pn;
        self.next_pn += 1;
        self.counters.tx_datagrams += 1;
        self.counters.tx_datagram_bytes += size as u64;
        if let Some((_, len)) = packet {
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += len as u64;
            self.sent_rate.add(now, size);
        }
        if !ack_eliciting {
            return;
        }
        if self.sent.len() == self.max_sent {
            if let Some(s) = self.sent.pop_front().filter(|s| !s.acked && !s.lost) {
                self.cc.on_gone(u64::from(s.size));
            }
        }
        if packet.is_none() || self.cc.capped(self.srtt_or_initial()) {
            // A ping: the path has nothing better to do; neither it nor what is in flight
            // says anything of the path's rate. Nor does what a cap holds back.
            self.cc
                .on_app_limited(self.delivered + u64::from(size as u32));
        }
        if self.in_flight_is_empty() {
            // Delivery rate counts from when the path became busy again, not from the
            // last ack before an idle gap.
            self.delivered_at = now;
        }
        self.sent.push_back(Sent {
            pn,
            at: now,
            size: size as u32,
            packet: packet.map(|p| p.0),
            repair,
            app_limited: self.cc.app_limited(self.delivered),
            delivered: self.delivered,
            delivered_at: self.delivered_at,
            acked: false,
            lost: false,
        });
        self.last_ack_eliciting_sent = Some(now);
        self.next_ping = now + self.ping_interval();
        let srtt = self.srtt_or_initial();
        self.cc.on_sent(now, size as u64, packet.is_some(), srtt);
    }

    fn in_flight_is_empty(&self) -> bool {
        self.sent.iter().all(|s| s.acked || s.lost)
    }

    /// Whether a ping of its own is due now.
    pub(crate) fn ping_due(&self, now: Instant) -> bool {
        self.next_ping <= now && self.pings_by_itself()
    }

    /// Whether a ping should ride along with an answer sent now: its own is half due, or
    /// the path is not confirmed.
    pub(crate) fn ping_along(&self, now: Instant) -> bool {
        self.next_ping <= now + self.settings.probe_interval / 2 || self.state != PathState::Active
    }

    fn pings_by_itself(&self) -> bool {
        !self.passive || self.state == PathState::Suspect
    }

    /// Makes the path [passive](Path::passive).
    pub(crate) fn set_passive(&mut self) {
        self.passive = true;
    }

    /// Asks for a ping now.
    pub(crate) fn ping_now(&mut self, now: Instant) {
        self.next_ping = now;
    }

    /// A ping went out (in a packet recorded with [`Path::on_sent`]).
    pub(crate) fn on_ping_sent(&mut self, now: Instant) {
        self.unanswered_pings += 1;
        self.next_ping = now + self.ping_interval();
    }

    /// Time between pings in the current state.
    fn ping_interval(&self) -> Duration {
        let idle = self.settings.probe_interval;
        match self.state {
            PathState::Active => idle,
            PathState::Probing => idle.min(self.suspect_after()),
            // Fast while suspect, backing off: answer or die quickly.
            PathState::Suspect => self
                .suspect_after()
                .saturating_mul(1 << self.unanswered_pings.min(4))
                .min(DEAD_AFTER / 3),
            PathState::Dead => idle.max(DEAD_PROBE_INTERVAL),
        }
    }

    /// How long an ack-eliciting packet may go unanswered before the path is suspect:
    /// about two RTTs, plus the peer's ack delay.
    pub fn suspect_after(&self) -> Duration {
        let Some(srtt) = self.srtt else {
            return INITIAL_RTT * 2;
        };
        (2 * srtt + 4 * self.rttvar + MAX_ACK_DELAY).max(MIN_SUSPECT_AFTER)
    }

    /// Applies an acknowledgement of this path's packets. Returns whether it acknowledged
    /// anything new.
    pub(crate) fn on_ack(&mut self, now: Instant, ack: &Ack) -> bool {
        let Some(largest) = ack.largest() else {
            return false;
        };
        if largest >= self.next_pn {
            // Acks a packet never sent: a confused peer. Ignore it whole.
            return false;
        }
        let mut newly = false;
        let mut largest_newly: Option<Sent> = None;
        let mut acked_bytes = 0u64;
        // Bytes congestion control still counted in flight (not those declared lost).
        let mut cc_acked = 0u64;
        for &(start, end) in ack.ranges() {
            let from = self.sent.partition_point(|s| s.pn < start);
            for s in self.sent.range_mut(from..) {
                if s.pn > end {
                    break;
                }
                if s.acked {
                    continue;
                }
                if s.lost {
                    // Declared lost, arrived after all: the estimate was wrong once.
                    self.counters.lost = self.counters.lost.saturating_sub(1);
                    s.lost = false;
                } else {
                    cc_acked += u64::from(s.size);
                }
                s.acked = true;
                newly = true;
                self.counters.acked += 1;
                self.counters.acked_bytes += u64::from(s.size);
                self.loss *= 1.0 - LOSS_GAIN;
                acked_bytes += u64::from(s.size);
                if largest_newly.is_none_or(|l| s.pn > l.pn) {
                    largest_newly = Some(*s);
                }
            }
        }
        if !newly {
            return false;
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        self.delivered += acked_bytes;
        self.delivered_at = now;
        let newest = largest_newly.expect("newly acked");
        if let Some(prev) = self.last_ack_at {
            // Only a gap the newest packet was in flight for says how often acks come.
            let gap = now.saturating_duration_since(prev);
            if newest.at <= prev && gap < self.srtt.unwrap_or(INITIAL_RTT) {
                // The longest gap lately, decaying: acks come in bursts (delayed acks, a
                // receiver reading a batch), and the clock is stopped only when nothing
                // comes for well over the longest of them.
                self.ack_interval = Some(match self.ack_interval {
                    None => gap,
                    Some(i) => gap.max(i - i / 8),
                });
            }
        }
        self.last_ack_at = Some(now);
        let mut rtt_sample = None;
        let delay_sampled = newest.pn == largest;
        if delay_sampled {
            let delay = Duration::from_micros(ack.delay_us).min(MAX_ACK_DELAY);
            let rtt = now.saturating_duration_since(newest.at);
            rtt_sample = Some(rtt);
            self.on_rtt_sample(rtt, delay);
            let sent_us = micros(self.origin, newest.at) as i64;
            self.delay.on_sample(
                micros(self.origin, now),
                ack.received_at_us as i64 - sent_us,
            );
        }
        // Delivery rate (as BBR): what was delivered since the newest acked packet left,
        // over the time that took.
        let elapsed = now.saturating_duration_since(newest.delivered_at);
        let mut rate_sample = None;
        if elapsed >= Duration::from_millis(1) {
            let rate = (self.delivered - newest.delivered) as u128 * 1_000_000
                / elapsed.as_micros().max(1);
            self.on_rate_sample(now, rate as u64);
            rate_sample = Some(rate as u64);
        }
        let srtt = self.srtt_or_initial();
        self.cc.on_ack(
            now,
            cc_acked,
            self.delivered,
            newest.delivered,
            rtt_sample,
            rate_sample,
            newest.app_limited,
            self.delay.latest(),
            srtt,
        );
        // The filtered delay (RFC 6817's current delay), not the newest sample: one late
        // ack is no queue.
        if delay_sampled && self.cc.on_queue_delay(now, self.delay.queue_delay(), srtt) {
            self.counters.scavenger_backoffs += 1;
        }
        self.detect_losses(now);
        self.unanswered_pings = 0;
        self.on_answered(now);
        true
    }

    fn detect_losses(&mut self, now: Instant) {
        let Some(largest) = self.largest_acked else {
            return;
        };
        let threshold = self.loss_delay();
        for s in &mut self.sent {
            if s.pn >= largest {
                break;
            }
            if s.acked || s.lost {
                continue;
            }
            if largest - s.pn >= PACKET_THRESHOLD
                || now.saturating_duration_since(s.at) >= threshold
            {
                s.lost = true;
                self.counters.lost += 1;
                self.cc.on_lost(u64::from(s.size));
                if s.repair {
                    if let Some(slot) = s.packet.take() {
                        if self.repairs.len() < self.repairs.capacity() {
                            self.repairs.push_back(slot);
                        }
                    }
                }
                self.loss = self.loss * (1.0 - LOSS_GAIN) + LOSS_GAIN;
            }
        }
        while self.sent.front().is_some_and(|s| s.acked || s.lost) {
            self.sent.pop_front();
        }
    }

    /// How long after a later packet was acknowledged an earlier one counts as lost
    /// (RFC 9002 §6.1.2).
    fn loss_delay(&self) -> Duration {
        self.srtt
            .unwrap_or(INITIAL_RTT)
            .max(self.latest_rtt)
            .mul_f64(9.0 / 8.0)
    }

    /// When the oldest packet overtaken by an acknowledged one counts as lost by time
    /// (RFC 9002's loss timer): with nothing sent after it, no ack would ever say so.
    fn loss_time(&self) -> Option<Instant> {
        let largest = self.largest_acked?;
        let s = self
            .sent
            .iter()
            .take_while(|s| s.pn < largest)
            .find(|s| !s.acked && !s.lost)?;
        Some(s.at + self.loss_delay())
    }

    fn on_answered(&mut self, now: Instant) {
        match self.state {
            PathState::Active => {}
            PathState::Suspect => self.set_state(now, PathState::Active),
            PathState::Probing | PathState::Dead => {
                self.confirmations += 1;
                let needed = if self.counters.suspected == 0 {
                    1
                } else {
                    CONFIRMATIONS_AFTER_DEAD
                };
                if self.confirmations >= needed {
                    self.set_state(now, PathState::Active);
                } else {
                    self.set_state(now, PathState::Probing);
                    // Confirm quickly.
                    self.next_ping = now;
                }
            }
        }
    }

    fn set_state(&mut self, now: Instant, state: PathState) {
        if state == self.state {
            return;
        }
        if state == PathState::Suspect {
            self.counters.suspected += 1;
        }
        if state == PathState::Dead {
            self.confirmations = 0;
            // Persistent congestion (RFC 9002 §7.6): what was learnt of the path no longer
            // holds; it starts afresh when it answers again.
            // A cap is the owner's, not learnt of the path, and where it goes says whether
            // it scavenges: both stay.
            self.cc = self.cc.restart(now);
        }
        self.state = state;
        self.state_since = now;
        self.next_ping = self.next_ping.min(now + self.ping_interval());
    }

    fn on_rtt_sample(&mut self, rtt: Duration, ack_delay: Duration) {
        self.latest_rtt = rtt;
        let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
        self.min_rtt = Some(min);
        // RFC 9002 §5.3: the peer's ack delay is taken off, but never below min_rtt.
        let adjusted = if rtt >= min + ack_delay {
            rtt - ack_delay
        } else {
            rtt
        };
        match self.srtt {
            None => {
                self.srtt = Some(adjusted);
                self.rttvar = adjusted / 2;
            }
            Some(srtt) => {
                self.rttvar = (self.rttvar * 3 + srtt.abs_diff(adjusted)) / 4;
                self.srtt = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// An RTT measured outside the ack machinery (the handshake's round trip).
    pub(crate) fn on_handshake_rtt(&mut self, now: Instant, rtt: Duration) {
        if self.srtt.is_none() {
            self.on_rtt_sample(rtt, Duration::ZERO);
        }
        self.on_answered(now);
    }

    fn on_rate_sample(&mut self, now: Instant, rate: u64) {
        let bucket = (now.saturating_duration_since(self.origin).as_micros()
            / RATE_BUCKET.as_micros()) as u64;
        let slot = &mut self.rate_buckets[(bucket % RATE_BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0);
        }
        slot.1 = slot.1.max(rate);
    }

    /// Runs the state machine: suspect on silence, dead on long silence. Returns the
    /// slots of inner packets to re-send elsewhere when the path just turned suspect.
    /// `elsewhere` is when the peer was last heard on any other path of the session.
    pub(crate) fn on_timeout(
        &mut self,
        now: Instant,
        elsewhere: Option<Instant>,
        resend: &mut impl FnMut(u64),
    ) {
        if self.loss_time().is_some_and(|t| t <= now) {
            self.detect_losses(now);
        }
        if self.state == PathState::Suspect
            && now.saturating_duration_since(self.state_since) >= DEAD_AFTER
        {
            self.set_state(now, PathState::Dead);
        }
        if let Some(t) = self.suspect_at(elsewhere) {
            if t <= now {
                self.set_state(now, PathState::Suspect);
                self.next_ping = now;
                for s in &mut self.sent {
                    if !s.acked && !s.lost {
                        // Resolved now: it is not waited for again here.
                        s.lost = true;
                        self.cc.on_gone(u64::from(s.size));
                        if let Some(slot) = s.packet.take() {
                            self.counters.resent_elsewhere += 1;
                            resend(slot);
                        }
                    }
                }
                while self.sent.front().is_some_and(|s| s.acked || s.lost) {
                    self.sent.pop_front();
                }
            }
        }
    }

    /// When an unanswered packet makes an active (or confirming) path suspect.
    fn suspect_at(&self, elsewhere: Option<Instant>) -> Option<Instant> {
        if !matches!(self.state, PathState::Active | PathState::Probing) {
            return None;
        }
        if self.state == PathState::Probing && self.counters.acked == 0 && self.srtt.is_none() {
            // Never answered yet: nothing to suspect, it is still being found.
            return None;
        }
        // Only a packet no later one overtook: one that was is a loss on a live path (the
        // loss timer's), and after it the path may rightly have nothing in flight.
        let overtaken = |s: &Sent| self.largest_acked.is_some_and(|l| s.pn < l);
        let mut waiting = self
            .sent
            .iter()
            .filter(|s| !s.acked && !s.lost && !overtaken(s));
        let oldest = waiting.next()?;
        let mut by_rtt = oldest.at + self.suspect_after();
        if oldest.packet.is_none() && !waiting.clone().any(|s| s.packet.is_some()) {
            // Only pings: while the peer's packets keep coming on the path, the line is
            // alive and the answer waits behind them (a download's queue) or was dropped
            // with them; it is suspect once they stop too.
            if let Some(heard) = self.last_received.filter(|&r| r > oldest.at) {
                by_rtt = by_rtt.max(heard + self.suspect_after());
            }
            return Some(by_rtt);
        }
        // The ack clock: from when an ack for the oldest packet could first come (or the
        // last ack, if later), acks should keep coming about as often as they did. With
        // the ISP's queue full the RTT is long, but the acks still come every few
        // milliseconds until the line dies. Only while the path is busy: a lone ping (a
        // download's slower line, its acks on the faster one) has no clock, and its answer
        // may wait behind that download's queue on the way back.
        let busy = waiting.take(ACK_CLOCK_IN_FLIGHT - 1).count() == ACK_CLOCK_IN_FLIGHT - 1;
        let (true, Some(last), Some(interval), Some(min_rtt)) =
            (busy, self.last_ack_at, self.ack_interval, self.min_rtt)
        else {
            return Some(by_rtt);
        };
        let quiet_from = last.max(oldest.at + min_rtt);
        let limit = self.ack_gap_limit(interval);
        // A peer whose other paths fell silent with this one stalled as a whole (a busy
        // router's process, not its line): only the round trip judges it, as moving its
        // packets elsewhere helps nothing. Heard since on another path, or with no other
        // path busy to compare, the clock stands.
        let stalled =
            elsewhere.is_some_and(|h| h + limit > quiet_from && h < quiet_from + limit / 2);
        if stalled {
            return Some(by_rtt);
        }
        Some(by_rtt.min(quiet_from + limit))
    }

    /// How long without an ack a busy path may go: twice the longest recent gap, the
    /// peer's ack delay, and room for the RTT's variation.
    fn ack_gap_limit(&self, longest: Duration) -> Duration {
        (2 * longest + MAX_ACK_DELAY + 4 * self.rttvar).max(MIN_ACK_GAP)
    }

    /// The next time [`Path::on_timeout`] or a ping needs this path.
    pub(crate) fn next_timeout(&self, elsewhere: Option<Instant>) -> Option<Instant> {
        let mut t = self.pings_by_itself().then_some(self.next_ping);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t: Instant| t.min(x)));
            }
        };
        consider(self.suspect_at(elsewhere));
        consider(self.loss_time());
        consider(self.ack_due);
        consider(self.receipt_pending().then_some(self.next_receipt));
        if self.state == PathState::Suspect {
            consider(Some(self.state_since + DEAD_AFTER));
        }
        t
    }

    // ---- receiving ----

    /// Records an authenticated packet `pn` (full packet number) received now; returns
    /// false if it was seen before. `ping` packets are acknowledged at once: a ping measures
    /// the round trip, and holding its answer would add the ack delay to a first sample
    /// (which nothing can subtract: the least RTT seen would hold it).
    pub(crate) fn on_received(
        &mut self,
        now: Instant,
        pn: u64,
        ack_eliciting: bool,
        ping: bool,
    ) -> bool {
        let in_order = self.received.largest().is_none_or(|l| pn == l + 1);
        if !self.received.insert(pn, now) {
            return false;
        }
        self.last_received = Some(now);
        self.counters.rx_datagrams += 1;
        if ack_eliciting {
            self.unacked += 1;
            if ping || self.unacked >= ACK_EVERY || !in_order {
                self.ack_due = Some(now);
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + MAX_ACK_DELAY);
            }
        }
        true
    }

    /// A packet `pn` opened with the keys we index as `keys`. The first packet under new
    /// keys always has a higher number than any before it on this path, unless the peer
    /// numbers afresh (it restarted and lost its paths): then what was received is
    /// forgotten, or its packets would all look old.
    pub(crate) fn on_keys(&mut self, keys: u32, pn: u64) {
        if self.rx_keys.contains(&Some(keys)) {
            return;
        }
        self.rx_keys = [Some(keys), self.rx_keys[0]];
        if self.received.largest().is_some_and(|l| pn <= l) {
            self.received = Received::default();
            self.largest_from_endpoint = None;
            self.unacked = 0;
            self.ack_due = None;
        }
    }

    /// The largest packet number received, for expanding truncated ones.
    pub(crate) fn largest_received(&self) -> Option<u64> {
        self.received.largest()
    }

    pub(crate) fn on_inner_received(&mut self, len: usize) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += len as u64;
    }

    /// Whether an ack-only packet must go out now.
    pub(crate) fn ack_due(&self, now: Instant) -> bool {
        self.ack_due.is_some_and(|t| t <= now)
    }

    /// Whether an ack would tell the peer something new (to piggyback one).
    pub(crate) fn has_unacked(&self) -> bool {
        self.received.changed
    }

    /// The acknowledgement to send now, if anything was received.
    pub(crate) fn ack(&self, now: Instant) -> Option<Ack> {
        let (largest_at, ranges) = self.received.ranges()?;
        Some(Ack::new(
            self.id,
            micros(largest_at, now),
            micros(self.origin, largest_at),
            ranges,
        ))
    }

    /// The acknowledgement from [`Path::ack`] went out.
    pub(crate) fn on_ack_sent(&mut self) {
        self.unacked = 0;
        self.ack_due = None;
        self.received.changed = false;
    }

    /// Inner packets arrived since the last receipt.
    fn receipt_pending(&self) -> bool {
        self.counters.rx_packets != self.receipt_reported
    }

    /// A receipt is due: something to report, and a second since the last one.
    pub(crate) fn receipt_due(&self, now: Instant) -> bool {
        self.receipt_pending() && self.next_receipt <= now
    }

    pub(crate) fn take_receipt(&mut self, now: Instant) -> (u64, u64) {
        self.receipt_reported = self.counters.rx_packets;
        self.next_receipt = now + RECEIPT_INTERVAL;
        (self.counters.rx_packets, self.counters.rx_bytes)
    }

    pub(crate) fn on_receipt(&mut self, packets: u64, bytes: u64) {
        self.peer_receipt = Some((packets, bytes));
    }
}

/// Bytes per second over the last fraction of a second: two windows of [`RATE_WINDOW`],
/// the finished one and the one filling.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateMeter {
    start: Option<Instant>,
    current: u64,
    previous: u64,
}

/// One window of a [`RateMeter`].
const RATE_WINDOW: Duration = Duration::from_millis(200);

impl RateMeter {
    pub(crate) fn add(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.current += bytes as u64;
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= 2 * RATE_WINDOW {
            self.previous = 0;
            self.current = 0;
            self.start = Some(now);
        } else if elapsed >= RATE_WINDOW {
            self.previous = self.current;
            self.current = 0;
            self.start = Some(start + RATE_WINDOW);
        }
    }

    /// Bytes per second: the last full window, or the one filling when it says more.
    pub(crate) fn rate(&self, now: Instant) -> u64 {
        let Some(start) = self.start else { return 0 };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= 2 * RATE_WINDOW {
            return 0;
        }
        let (previous, current) = if elapsed >= RATE_WINDOW {
            (self.current, 0)
        } else {
            (self.previous, self.current)
        };
        let window = RATE_WINDOW.as_secs_f64();
        let filling = elapsed.as_secs_f64().rem_euclid(window).max(window / 4.0);
        ((previous as f64 / window).max(current as f64 / filling)) as u64
    }
}

pub(crate) fn micros(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_micros()).unwrap_or(u64::MAX)
}

/// Received packet numbers of one path: the newest [`MAX_ACK_RANGES`] ranges.
#[derive(Debug, Clone, Default)]
struct Received {
    /// Inclusive ranges, newest (highest) first.
    ranges: [(u64, u64); MAX_ACK_RANGES],
    count: usize,
    largest_at: Option<Instant>,
    changed: bool,
}

impl Received {
    fn largest(&self) -> Option<u64> {
        (self.count > 0).then(|| self.ranges[0].1)
    }

    /// Adds `pn`; false if it was already there (or is too old to tell: refused too).
    fn insert(&mut self, pn: u64, now: Instant) -> bool {
        let r = &mut self.ranges;
        let n = self.count;
        // Position: first range whose start <= pn (ranges descend).
        let i = r[..n].iter().position(|&(s, _)| s <= pn).unwrap_or(n);
        if i < n && pn <= r[i].1 {
            return false;
        }
        if i == n && n == MAX_ACK_RANGES {
            // Older than everything we remember.
            return false;
        }
        self.changed = true;
        if i == 0 {
            self.largest_at = Some(now);
        }
        let joins_above = i > 0 && r[i - 1].0 == pn + 1;
        let joins_below = i < n && r[i].1 + 1 == pn;
        match (joins_above, joins_below) {
            (true, true) => {
                r[i - 1].0 = r[i].0;
                r.copy_within(i + 1..n, i);
                self.count -= 1;
            }
            (true, false) => r[i - 1].0 = pn,
            (false, true) => r[i].1 = pn,
            (false, false) => {
                let keep = n.min(MAX_ACK_RANGES - 1);
                if i <= keep {
                    r.copy_within(i..keep, i + 1);
                    r[i] = (pn, pn);
                    self.count = keep + 1;
                }
            }
        }
        true
    }

    fn ranges(&self) -> Option<(Instant, &[(u64, u64)])> {
        Some((self.largest_at?, &self.ranges[..self.count]))
    }
}

/// One-way-delay trend over a rolling base (RFC 6817 §3.4.2). Samples are (receiver's
/// clock − sender's clock), so they hold the clocks' offset: only differences matter.
#[derive(Debug, Clone, Default)]
struct DelayTrend {
    /// Minimum per [`BASE_INTERVAL_US`], newest at `base_at % BASE_HISTORY`.
    base: [Option<i64>; BASE_HISTORY],
    base_interval: u64,
    current: [i64; CURRENT_FILTER],
    samples: usize,
}

impl DelayTrend {
    fn on_sample(&mut self, now_us: u64, offset: i64) {
        let interval = now_us / BASE_INTERVAL_US;
        if self.samples == 0 {
            self.base_interval = interval;
        }
        if interval > self.base_interval {
            // Intervals start empty; after a long pause every slot is stale.
            let steps = (interval - self.base_interval).min(BASE_HISTORY as u64);
            for k in 1..=steps {
                self.base[((self.base_interval + k) % BASE_HISTORY as u64) as usize] = None;
            }
            self.base_interval = interval;
        }
        let slot = &mut self.base[(interval % BASE_HISTORY as u64) as usize];
        *slot = Some(slot.map_or(offset, |b| b.min(offset)));
        self.current[self.samples % CURRENT_FILTER] = offset;
        self.samples += 1;
    }

    fn queue_delay(&self) -> Duration {
        if self.samples == 0 {
            return Duration::ZERO;
        }
        let n = self.samples.min(CURRENT_FILTER);
        let current = self.current[..n].iter().min().copied().unwrap_or(0);
        self.above_base(current)
    }

    /// The newest sample's queueing delay, unfiltered (as an RTT sample is).
    fn latest(&self) -> Duration {
        if self.samples == 0 {
            return Duration::ZERO;
        }
        self.above_base(self.current[(self.samples - 1) % CURRENT_FILTER])
    }

    fn above_base(&self, sample: i64) -> Duration {
        let base = self.base.iter().flatten().min().copied().unwrap_or(sample);
        Duration::from_micros(sample.saturating_sub(base).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(now: Instant) -> Path {
        let endpoint = Endpoint::direct("192.0.2.1:7117".parse().unwrap(), None);
        Path::new(
            PathId(1),
            endpoint,
            PathSettings::default(),
            now,
            now,
            64,
            1500,
        )
    }

    #[test]
    fn received_ranges_merge_and_stay_bounded() {
        let t = Instant::now();
        let mut r = Received::default();
        for pn in [0, 1, 2, 5, 4, 9] {
            assert!(r.insert(pn, t));
        }
        assert!(!r.insert(4, t));
        assert_eq!(&r.ranges[..r.count], &[(9, 9), (4, 5), (0, 2)]);
        assert!(r.insert(3, t));
        assert_eq!(&r.ranges[..r.count], &[(9, 9), (0, 5)]);
        // Many gaps: only the newest ranges are kept, older packets are refused.
        for pn in (10..200).step_by(2) {
            r.insert(pn, t);
        }
        assert_eq!(r.count, MAX_ACK_RANGES);
        assert_eq!(r.largest(), Some(198));
        assert!(!r.insert(1, t));
    }

    #[test]
    fn acks_measure_rtt_and_losses_and_silence_makes_it_suspect_then_dead() {
        let t0 = Instant::now();
        let mut p = path(t0);
        let ms = Duration::from_millis;
        // Ten packets 1 ms apart, each acked 20 ms after it left, except number 3.
        for i in 0..10u64 {
            assert_eq!(p.next_packet_number(), i);
            p.on_sent(t0 + ms(i), 1200, true, Some((i, 1100)));
        }
        let acked: Vec<(u64, u64)> = vec![(4, 9), (0, 2)];
        let ack = Ack::new(PathId(1), 0, 0, &acked);
        assert!(p.on_ack(t0 + ms(29), &ack));
        assert_eq!(p.state(), PathState::Active);
        assert_eq!(p.srtt(), Some(ms(20)));
        assert_eq!(p.counters().lost, 1);
        assert_eq!(p.counters().acked, 9);
        assert_eq!(p.in_flight(), 0);
        // Silence after the next packet: suspect after about two RTTs, and what was in
        // flight is handed back for a re-send.
        p.on_sent(t0 + ms(30), 1200, true, Some((10, 1100)));
        let at = p.next_timeout(None).unwrap();
        // One sample: 2 × 20 ms + 4 × the first variation (10 ms) + the ack delay.
        assert_eq!(p.suspect_after(), ms(90));
        assert_eq!(at, t0 + ms(30) + p.suspect_after());
        let mut resent = Vec::new();
        p.on_timeout(at, None, &mut |s| resent.push(s));
        assert_eq!(p.state(), PathState::Suspect);
        assert_eq!(resent, [10]);
        let mut again = Vec::new();
        p.on_timeout(at + ms(500), None, &mut |s| again.push(s));
        assert!(again.is_empty(), "a packet is re-sent once");
        p.on_timeout(at + DEAD_AFTER, None, &mut |_| {});
        assert_eq!(p.state(), PathState::Dead);
        // It answers again: probing, then active after three answers.
        for i in 0..CONFIRMATIONS_AFTER_DEAD as u64 {
            let pn = p.next_packet_number();
            let t = at + DEAD_AFTER + ms(100 * i);
            p.on_sent(t, 60, true, None);
            p.on_ping_sent(t);
            p.on_ack(t + ms(20), &Ack::new(PathId(1), 0, 0, &[(pn, pn)]));
        }
        assert_eq!(p.state(), PathState::Active);
    }

    /// A packet lost at the tail of a burst, overtaken by a later one that was acked, is a
    /// loss on a live path: it is declared lost on the loss timer, and the silence after
    /// it (nothing else in flight) never makes the path suspect. Seen on the real kernel:
    /// startup's last packet on a slow line tail-dropped, the line suspected 62 ms after
    /// its last ack by the ack clock of a busy path.
    #[test]
    fn an_overtaken_packet_is_a_loss_not_a_silent_path() {
        let t0 = Instant::now();
        let mut p = path(t0);
        // The proxy's side, which was suspected: it pings only when in doubt.
        p.set_passive();
        let ms = Duration::from_millis;
        // A busy path: a packet every 2 ms, each acked 40 ms later.
        let mut pn = 0;
        while pn < 50 {
            p.on_sent(t0 + ms(2 * pn), 1200, true, Some((pn, 1100)));
            if pn >= 20 {
                p.on_ack(t0 + ms(2 * pn), &Ack::new(PathId(1), 0, 0, &[(0, pn - 20)]));
            }
            pn += 1;
        }
        let acked = p.counters().acked;
        // The burst's last two packets: the first is lost, the second acked.
        let t = t0 + ms(100);
        p.on_sent(t, 1200, true, Some((pn, 1100)));
        p.on_sent(t + ms(1), 1200, true, Some((pn + 1, 1100)));
        p.on_ack(
            t + ms(41),
            &Ack::new(PathId(1), 0, 0, &[(pn + 1, pn + 1), (0, pn - 1)]),
        );
        assert_eq!(p.counters().acked, acked + 21);
        assert_eq!(
            p.counters().lost,
            0,
            "not yet: too soon for the time threshold"
        );
        // Nothing else is sent. Run every timer the path asks for, for a second.
        let mut resent = Vec::new();
        while let Some(at) = p.next_timeout(None).filter(|&at| at < t + ms(1000)) {
            p.on_timeout(at, None, &mut |s| resent.push(s));
            assert_eq!(p.state(), PathState::Active, "suspected at {:?}", at - t);
        }
        assert_eq!(p.counters().lost, 1);
        assert_eq!(p.counters().suspected, 0);
        assert!(
            resent.is_empty(),
            "a loss is repaired, not re-sent elsewhere"
        );
    }

    /// The ack clock judges a busy path, not a lone ping, and a ping waits while the line
    /// delivers. Seen on the real kernel: a download's slower line carried nothing upstream
    /// but pings, and the answer to one waited behind the download's startup queue on the
    /// way back (or was dropped there), and the line was suspected while it delivered.
    #[test]
    fn the_ack_clock_judges_a_busy_path_and_a_ping_waits_while_the_line_delivers() {
        let ms = Duration::from_millis;
        // A busy path: a packet every 2 ms, each acked 40 ms later.
        let busy = |t0: Instant| {
            let mut p = path(t0);
            for pn in 0..50 {
                p.on_sent(t0 + ms(2 * pn), 1200, true, Some((pn, 1100)));
                if pn >= 20 {
                    p.on_ack(t0 + ms(2 * pn), &Ack::new(PathId(1), 0, 0, &[(0, pn - 20)]));
                }
            }
            p.on_ack(t0 + ms(140), &Ack::new(PathId(1), 0, 0, &[(0, 49)]));
            assert_eq!(p.in_flight(), 0);
            p
        };
        let t0 = Instant::now();
        let mut p = busy(t0);
        let srtt = p.srtt().unwrap();
        // A lone ping, answered after the RTT and 40 ms of queue: never suspected.
        let t = t0 + ms(300);
        p.on_sent(t, 60, true, None);
        p.on_ping_sent(t);
        while let Some(at) = p.next_timeout(None).filter(|&at| at < t + ms(80)) {
            p.on_timeout(at, None, &mut |_| {});
            assert_eq!(p.state(), PathState::Active, "suspected at {:?}", at - t);
        }
        p.on_ack(t + ms(80), &Ack::new(PathId(1), 0, 0, &[(50, 50)]));
        assert_eq!(p.counters().suspected, 0);
        // A ping whose answer is lost in the download's queue, the download still coming
        // on the path: not suspected until the download stops too.
        let t = t + ms(200);
        p.on_sent(t, 60, true, None);
        p.on_ping_sent(t);
        let mut pn = 0;
        let mut at = t;
        while at < t + ms(500) {
            at += ms(2);
            p.on_received(at, pn, true, false);
            pn += 1;
            p.on_timeout(at, None, &mut |_| {});
            assert_eq!(p.state(), PathState::Active, "suspected at {:?}", at - t);
        }
        let due = p.next_timeout(None).unwrap();
        assert!(due <= at + p.suspect_after(), "{:?}", due - at);
        p.on_timeout(at + p.suspect_after(), None, &mut |_| {});
        assert_eq!(p.state(), PathState::Suspect);
        // Busy again, and the acks stop: suspected by the clock, well before two RTTs.
        let mut p = busy(t0);
        let t = t0 + ms(300);
        for pn in 50..60 {
            p.on_sent(t + ms(2 * (pn - 50)), 1200, true, Some((pn, 1100)));
        }
        let at = p.next_timeout(None).unwrap();
        assert!(at < t + 2 * srtt, "{:?}", at - t);
        p.on_timeout(at, None, &mut |_| {});
        assert_eq!(p.state(), PathState::Suspect);
    }

    /// A busy path's acks stop. If the peer fell silent on its other path at the same
    /// moment, it stalled (a loaded router's process, seen in CI: a steady download's
    /// fast path suspected and its packets re-sent) and only the round trip judges it;
    /// if the other path still hears it, this line died and the clock suspects it at once.
    #[test]
    fn a_stalled_peer_is_judged_by_the_round_trip_and_a_dead_line_by_its_clock() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let busy = || {
            let mut p = path(t0);
            for pn in 0..60 {
                p.on_sent(t0 + ms(2 * pn), 1200, true, Some((pn, 1100)));
                if pn >= 20 {
                    p.on_ack(t0 + ms(2 * pn), &Ack::new(PathId(1), 0, 0, &[(0, pn - 20)]));
                }
            }
            p
        };
        // The last ack came at 118 ms; the other path's last packet at 119 ms.
        let together = Some(t0 + ms(119));
        let p = busy();
        let by_clock = p.next_timeout(None).unwrap();
        let stalled = p.next_timeout(together).unwrap();
        assert!(by_clock < t0 + ms(118) + p.suspect_after());
        assert!(
            stalled > by_clock,
            "{:?} vs {:?}",
            stalled - t0,
            by_clock - t0
        );
        let mut p = busy();
        p.on_timeout(by_clock, together, &mut |_| {});
        assert_eq!(p.state(), PathState::Active);
        // The peer is back: its acks come, nothing was suspected.
        p.on_ack(by_clock + ms(5), &Ack::new(PathId(1), 0, 0, &[(0, 59)]));
        assert_eq!(p.counters().suspected, 0);
        // The other path hears the peer on: this line is dead, suspected by the clock.
        let mut p = busy();
        let heard = Some(by_clock - ms(1));
        assert_eq!(p.next_timeout(heard), Some(by_clock));
        p.on_timeout(by_clock, heard, &mut |_| {});
        assert_eq!(p.state(), PathState::Suspect);
    }

    #[test]
    fn a_peer_that_numbers_afresh_under_new_keys_is_heard_again() {
        let t = Instant::now();
        let mut p = path(t);
        for pn in 0..100 {
            p.on_keys(7, pn);
            assert!(p.on_received(t, pn, true, false));
        }
        // A reordered old packet under the same keys is still a duplicate.
        p.on_keys(7, 50);
        assert!(!p.on_received(t, 50, true, false));
        // New keys, numbers continuing (a rekey): nothing forgotten.
        p.on_keys(8, 100);
        assert!(p.on_received(t, 100, true, false));
        assert_eq!(p.largest_received(), Some(100));
        // New keys from zero (the proxy restarted): heard, not refused as old.
        p.on_keys(9, 0);
        assert!(p.on_received(t, 0, true, false));
        assert_eq!(p.largest_received(), Some(0));
    }

    #[test]
    fn an_ack_of_packets_never_sent_is_ignored() {
        let t0 = Instant::now();
        let mut p = path(t0);
        p.on_sent(t0, 100, true, None);
        assert!(!p.on_ack(t0, &Ack::new(PathId(1), 0, 0, &[(0, 5)])));
        assert_eq!(p.counters().acked, 0);
    }

    #[test]
    fn the_base_delay_rolls_so_a_clock_drift_does_not_grow_without_bound() {
        // The far end's clock runs 100 ppm fast; the true queueing delay is zero.
        let mut d = DelayTrend::default();
        let hour_us = 3_600_000_000u64;
        let mut t = 0;
        while t <= hour_us {
            d.on_sample(t, 5_000 + (t / 10_000) as i64);
            t += 100_000;
        }
        // A minimum kept forever would report 360 ms here.
        let q = d.queue_delay();
        assert!(q <= Duration::from_millis(31), "{q:?}");
        // And a real standing queue still shows.
        let mut d = DelayTrend::default();
        for i in 0..100 {
            d.on_sample(i * 10_000, if i < 50 { 1_000 } else { 41_000 });
        }
        assert_eq!(d.queue_delay(), Duration::from_millis(40));
    }

    /// A path of 40 ms sending a packet a millisecond, each acked with the far end's
    /// receive time: from packet `from` on, the line queues `queue` more (traffic the path
    /// cannot see).
    fn busy_line(p: &mut Path, t0: Instant, packets: u64, from: u64, queue: Duration) {
        let ms = Duration::from_millis;
        let queue_of = |pn: u64| if pn >= from { queue } else { Duration::ZERO };
        let mut acked = 0;
        for pn in 0..packets {
            let now = t0 + ms(pn);
            p.on_sent(now, 1200, true, Some((pn, 1100)));
            // Acks in order as they come back by now (the queue only grows).
            while acked <= pn && t0 + ms(acked + 40) + queue_of(acked) <= now {
                let received = micros(t0, t0 + ms(acked + 20) + queue_of(acked));
                p.on_ack(now, &Ack::new(PathId(1), 0, received, &[(0, acked)]));
                acked += 1;
            }
        }
    }

    /// Relayed paths are scavengers at both ends, direct ones are not, and a path whose
    /// endpoint moves between a relay and a direct address follows it.
    #[test]
    fn a_path_through_a_neighbours_line_scavenges_and_counts_its_backoffs() {
        let t0 = Instant::now();
        let relayed = Endpoint {
            remote: "192.0.2.2:7117".parse().unwrap(),
            local: None,
            relay: Some(RelayHop { relay: 3, slot: 1 }),
        };
        let new = |endpoint| {
            Path::new(
                PathId(1),
                endpoint,
                PathSettings::default(),
                t0,
                t0,
                1024,
                1500,
            )
        };
        let mut p = new(relayed);
        assert_eq!(p.scavenger_share(), Some(1.0));
        // 30 ms of queue: below the target, nothing given up.
        busy_line(&mut p, t0, 2000, 500, Duration::from_millis(30));
        assert_eq!(p.scavenger_share(), Some(1.0));
        assert_eq!(p.counters().scavenger_backoffs, 0);
        let mut q = new(relayed);
        busy_line(&mut q, t0, 2000, 500, Duration::from_millis(150));
        assert_eq!(q.counters().scavenger_backoffs, 1);
        let share = q.scavenger_share().unwrap();
        assert!(share < 0.5, "{share}");
        assert!(q.pacing_rate() < p.pacing_rate() / 2);
        // A direct path on the same line takes no notice.
        let mut d = new(Endpoint::direct("192.0.2.1:7117".parse().unwrap(), None));
        busy_line(&mut d, t0, 2000, 500, Duration::from_millis(150));
        assert_eq!(d.scavenger_share(), None);
        assert_eq!(d.counters().scavenger_backoffs, 0);
        // At the proxy a member's path may move from a relay to its own address and back.
        q.on_authenticated_from(
            1000,
            Endpoint::direct("192.0.2.9:4000".parse().unwrap(), None),
        );
        assert_eq!(q.scavenger_share(), None);
        q.on_authenticated_from(1001, relayed);
        assert_eq!(q.scavenger_share(), Some(1.0));
    }

    #[test]
    fn acks_are_due_after_two_packets_or_the_ack_delay_or_a_gap() {
        let t0 = Instant::now();
        let mut p = path(t0);
        p.on_received(t0, 0, true, false);
        assert!(!p.ack_due(t0));
        assert!(p.ack_due(t0 + MAX_ACK_DELAY));
        p.on_received(t0, 1, true, false);
        assert!(p.ack_due(t0));
        let a = p.ack(t0 + Duration::from_millis(2)).unwrap();
        p.on_ack_sent();
        assert!(!p.ack_due(t0 + MAX_ACK_DELAY));
        assert_eq!(a.ranges(), &[(0, 1)]);
        assert_eq!(a.delay_us, 2000);
        p.on_received(t0, 6, true, false);
        assert!(p.ack_due(t0), "a gap is acknowledged at once");
    }
}
