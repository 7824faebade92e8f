//! Congestion control and pacing of one path: how much may be in flight on it, and how
//! fast it is sent.
//!
//! Model-based, after BBR: the path's bottleneck rate is the most it delivered lately,
//! its base RTT the least it took lately; their product is what the path holds without a
//! queue. The sender paces at about that rate and keeps about two of it in flight, probing
//! a little above now and then, so the ISP's buffer stays nearly empty and what waits,
//! waits in the core's own queue (`crate::fq`), where interactive flows pass bulk ones.
//! Random loss does not slow it (a lossy LTE line is still worth its rate); loss of more
//! than [`LOSS_THRESHOLD`] in a round whose queue grew caps what is in flight, as BBRv2
//! does, never below one bandwidth-delay product. While it finds the rate (startup) it
//! stays a step ahead of the flows it carries, whose own slow start must not end on a
//! queue of ours.
//!
//! A path through a neighbour's line is also a scavenger ([`Scavenger`], LEDBAT++ style):
//! traffic the pool cannot see shares that line (the owner's devices that bypass the pool,
//! the ISP's other users), and only the queueing delay tells of it. While that delay stays
//! under [`SCAVENGER_TARGET`] the path sends as any other; above it, the path gives way.

use std::time::{Duration, Instant};

/// In startup the pacer sends at least this many windows a round trip (Linux's
/// `tcp_pacing_ss_ratio`, 200 %).
const SLOW_START_PACING: f64 = 2.0;
/// Startup's gain, 2/ln 2: the rate doubles every round trip, as in slow start.
const STARTUP_GAIN: f64 = 2.885;
/// Startup's gain when probing found much more room later: a path that carries traffic
/// has a queue a round at 2.885 would overflow (half a path's holding queues per round).
const REGROW_GAIN: f64 = 1.5;
/// Bytes in flight are bounded by this many times the estimated bandwidth-delay product,
/// so acks that come in bursts do not starve the pacer.
const CWND_GAIN: f64 = 2.0;
/// ProbeBW's pacing gains, one round trip each: probe up, drain what that queued, cruise.
const PROBE_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The bottleneck rate is the most delivered over this many round trips.
const BW_ROUNDS: usize = 10;
/// The base RTT is the least of two halves of this window, so a path whose delay grows
/// for good (a new route) is believed within a window.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Startup ends after this many rounds without the rate growing by a quarter.
const FULL_BW_ROUNDS: u32 = 3;
/// Loss in a round above this caps what may be in flight (BBRv2's loss threshold).
const LOSS_THRESHOLD: f64 = 0.02;
/// Loss counts as congestion only in a round whose queueing delay rose this much above
/// the line's own jitter.
const LOSS_QUEUE_MARGIN: Duration = Duration::from_millis(5);
/// What is kept of the in-flight bytes at a round with too much loss (BBRv2's beta).
const LOSS_BETA: f64 = 0.7;
/// Never less in flight than this many full packets.
const MIN_CWND_PACKETS: u64 = 4;
/// Startup ends, app-limited or not, once a round takes a quarter more than the base RTT
/// plus this (timer and pacing noise): the path's queue is filling.
const STARTUP_QUEUE_MARGIN: Duration = Duration::from_millis(2);
/// A path sent data this recently carries traffic (for startup's delay exit).
const CARRYING: Duration = Duration::from_secs(1);
/// In flight before the first measurement.
const INITIAL_CWND_PACKETS: u64 = 16;
/// The pacer lets this much sending time accumulate (an event loop wakes a little late).
const PACING_BURST: Duration = Duration::from_millis(2);
/// When the pacer is due, what it would let go within this time, or within two packets'
/// time if that is longer, goes at once: one wake-up sends a few packets, not one (a
/// router's CPU should go to packets, not to timers).
const PACING_QUANTUM: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup,
    Drain,
    /// `probed_from`: the bandwidth when the current probe up began.
    ProbeBw {
        cycle: usize,
        since: Instant,
        probed_from: u64,
    },
}

/// What a path's congestion control is doing, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CongestionState {
    /// Finding the path's rate: the rate doubles every round trip.
    Startup,
    /// Emptying the queue startup built.
    Drain,
    /// At the path's rate, probing above it now and then.
    Cruise,
}

impl CongestionState {
    /// A stable name for status output.
    pub fn name(self) -> &'static str {
        match self {
            CongestionState::Startup => "startup",
            CongestionState::Drain => "drain",
            CongestionState::Cruise => "cruise",
        }
    }
}

/// LEDBAT++'s target queueing delay (draft-irtf-iccrg-ledbat-plus-plus §4.1; RFC 6817
/// allows at most 100 ms): a scavenger gives way when its line queues longer than this.
pub const SCAVENGER_TARGET: Duration = Duration::from_millis(60);
/// LEDBAT++'s gain is 1 / min(this, ⌈2 × target / base delay⌉): slower growth where the
/// round trip is short against the target, so the share grows about as fast per second on
/// any line. The base here is the least round trip (a round's growth is per round trip).
const SCAVENGER_GAIN_DIVISOR: f64 = 16.0;
/// LEDBAT++ cuts at most half its window a round trip.
const SCAVENGER_MAX_CUT: f64 = 0.5;
/// The least share of its own rate a scavenger keeps (LEDBAT++ keeps two packets in
/// flight): its data keeps measuring the delay, so it grows back when the queue goes.
const SCAVENGER_FLOOR: f64 = 1.0 / 32.0;

/// The lowest cap on a path's pacing rate, bytes per second (100 kbit/s: a full packet
/// every 110 ms).
pub(crate) const MIN_RATE_CAP: u64 = 12_500;

/// A scavenger's share of its own rate (LEDBAT++ on top of the model: the model still
/// finds the line's rate, the share says how much of it the scavenger takes).
///
/// Above the target the share is cut by (delay / target − 1) a round trip, at most by
/// half; at or below it, it grows by LEDBAT++'s reduced gain a round trip. Both in
/// proportion to the time since the last sample, as LEDBAT++ moves its window by the
/// bytes each ack acknowledges. The growth is multiplicative, as LEDBAT++'s slow start,
/// not its one packet a round trip: from the floor that took minutes on a fast line, and
/// an idle neighbour's line is worth its whole rate. LEDBAT++'s periodic slowdowns are
/// not done: the base delay is the path's one-way-delay history, which its pings measure
/// while it is idle (a queue standing for longer than that history becomes the base).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scavenger {
    /// Of the model's rate, [`SCAVENGER_FLOOR`] ..= 1.
    share: f64,
    /// When the share last moved.
    at: Option<Instant>,
    /// In a spell above the target (it ends when the delay falls to half the target).
    over: bool,
}

impl Scavenger {
    fn new() -> Scavenger {
        Scavenger {
            share: 1.0,
            at: None,
            over: false,
        }
    }

    /// A queueing-delay sample `delay` at `now`; `rtt` is a round trip, `base_rtt` the
    /// least lately. Returns whether a spell above the target began.
    fn on_delay(
        &mut self,
        now: Instant,
        delay: Duration,
        rtt: Duration,
        base_rtt: Duration,
    ) -> bool {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.at = Some(now);
        // The part of a round trip since the last sample: no more than one counts.
        let round = (elapsed.as_secs_f64() / rtt.as_secs_f64().max(1e-3)).min(1.0);
        let target = SCAVENGER_TARGET.as_secs_f64();
        let ratio = delay.as_secs_f64() / target;
        let began = ratio > 1.0 && !self.over;
        if ratio > 1.0 {
            self.over = true;
            let cut = (ratio - 1.0).min(SCAVENGER_MAX_CUT);
            self.share *= 1.0 - cut * round;
        } else {
            if ratio <= 0.5 {
                self.over = false;
            }
            let divisor = (2.0 * target / base_rtt.as_secs_f64().max(1e-3))
                .ceil()
                .min(SCAVENGER_GAIN_DIVISOR);
            self.share *= 1.0 + round / divisor;
        }
        self.share = self.share.clamp(SCAVENGER_FLOOR, 1.0);
        began
    }
}

/// One path's congestion control and pacer (sender side).
#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    mtu: u64,
    /// A cap on the pacing rate set from outside ([`Congestion::set_rate_cap`]).
    rate_cap: Option<u64>,
    /// Set on a path through a neighbour's line ([`Congestion::set_scavenger`]).
    scavenger: Option<Scavenger>,
    phase: Phase,
    /// Startup's gain: [`STARTUP_GAIN`] at first, [`REGROW_GAIN`] after.
    startup_gain: f64,
    /// Bytes of ack-eliciting packets sent and neither acknowledged nor lost.
    in_flight: u64,
    /// Most delivered per round, for the last [`BW_ROUNDS`] rounds that gave a sample
    /// (round, bytes/s): an app-limited spell ages nothing.
    bw_rounds: [(u64, u64); BW_ROUNDS],
    /// The round of the newest sample taken.
    bw_round: u64,
    /// Least RTT of the current and the previous half window.
    min_rtt: [(Instant, Option<Duration>); 2],
    /// Round trips counted by deliveries (BBR's packet-timed rounds).
    round: u64,
    next_round_delivered: u64,
    full_bw: u64,
    full_bw_rounds: u32,
    /// Lost and delivered bytes in the current round, and the most queueing delay seen.
    round_lost: u64,
    round_delivered: u64,
    round_queueing: Duration,
    /// When data (not a ping) last went out.
    last_data_sent: Option<Instant>,
    /// Startup found the path's queue filling at this round: it grows no more, and
    /// drains once a round at that rate has measured it.
    full_since_round: Option<u64>,
    /// The most queueing delay seen while the path carried no data, decaying: its
    /// jitter, which startup's delay exit must not take for a queue.
    idle_noise: Duration,
    idle_noise_at: Instant,
    /// Cap on in-flight bytes after heavy loss; lifted while probing finds room.
    inflight_cap: Option<u64>,
    /// Deliveries below this count were sent while nothing waited to be sent: their rate
    /// samples say how much was offered, not what the path can do.
    app_limited_until: u64,
    /// When the pacer lets the next packet go.
    next_send: Instant,
    /// When the pacer last let a packet go that was due: what follows within the quantum
    /// goes with it.
    quantum_start: Instant,
    /// The window and pacing rate the model set; 0: not yet.
    cwnd: u64,
    pacing: u64,
}

impl Congestion {
    pub(crate) fn new(now: Instant, mtu: usize) -> Congestion {
        Congestion {
            mtu: mtu as u64,
            rate_cap: None,
            scavenger: None,
            phase: Phase::Startup,
            startup_gain: STARTUP_GAIN,
            in_flight: 0,
            bw_rounds: [(0, 0); BW_ROUNDS],
            bw_round: 0,
            min_rtt: [(now, None); 2],
            round: 0,
            next_round_delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            round_lost: 0,
            round_delivered: 0,
            round_queueing: Duration::ZERO,
            last_data_sent: None,
            full_since_round: None,
            idle_noise: Duration::ZERO,
            idle_noise_at: now,
            inflight_cap: None,
            app_limited_until: 0,
            next_send: now,
            quantum_start: now,
            cwnd: INITIAL_CWND_PACKETS * mtu as u64,
            pacing: 0,
        }
    }

    /// The same path afresh (what was learnt of it no longer holds), keeping what was set
    /// from outside: the cap is the owner's, and whether it scavenges is where it goes.
    pub(crate) fn restart(&self, now: Instant) -> Congestion {
        let mut cc = Congestion::new(now, self.mtu());
        cc.set_rate_cap(self.rate_cap);
        cc.set_scavenger(self.scavenger.is_some());
        cc
    }

    /// The largest datagram it counts with.
    pub(crate) fn mtu(&self) -> usize {
        self.mtu as usize
    }

    /// Estimated bottleneck rate in bytes per second (zero before any sample).
    pub(crate) fn bandwidth(&self) -> u64 {
        self.bw_rounds
            .iter()
            .filter(|(r, _)| *r + BW_ROUNDS as u64 > self.bw_round)
            .map(|b| b.1)
            .max()
            .unwrap_or(0)
    }

    /// The least RTT lately.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        match (self.min_rtt[0].1, self.min_rtt[1].1) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn state(&self) -> CongestionState {
        match self.phase {
            Phase::Startup => CongestionState::Startup,
            Phase::Drain => CongestionState::Drain,
            Phase::ProbeBw { .. } => CongestionState::Cruise,
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    fn bdp(&self, fallback_rtt: Duration) -> Option<u64> {
        let bw = self.bandwidth();
        (bw > 0).then(|| {
            let rtt = self.min_rtt().unwrap_or(fallback_rtt);
            (bw as f64 * rtt.as_secs_f64()) as u64
        })
    }

    /// The most bytes that may be in flight.
    pub(crate) fn window(&self, _srtt: Duration) -> u64 {
        let w = self
            .inflight_cap
            .map_or(self.cwnd, |cap| self.cwnd.min(cap));
        w.max(MIN_CWND_PACKETS * self.mtu)
    }

    /// Pacing rate in bytes per second: the path's own, or less under a cap or while it
    /// scavenges.
    pub(crate) fn pacing_rate(&self, srtt: Duration) -> u64 {
        let rate = self.scavenged(self.own_pacing_rate(srtt));
        self.rate_cap.map_or(rate, |cap| rate.min(cap))
    }

    /// What a scavenger takes of `rate`: all of it at full share; never less than
    /// [`MIN_RATE_CAP`] (or `rate`, if lower), as the cap.
    fn scavenged(&self, rate: u64) -> u64 {
        match self.scavenger {
            Some(s) if s.share < 1.0 => {
                ((rate as f64 * s.share) as u64).max(MIN_RATE_CAP.min(rate))
            }
            _ => rate,
        }
    }

    /// The bottleneck rate it may count on: its estimate, less what it gives way while
    /// it scavenges, and under its cap.
    pub(crate) fn usable_bandwidth(&self) -> u64 {
        let bw = self.scavenged(self.bandwidth());
        self.rate_cap.map_or(bw, |cap| bw.min(cap))
    }

    /// Makes it a scavenger (a path through a neighbour's line) or not. Turning it on
    /// again keeps its share.
    pub(crate) fn set_scavenger(&mut self, on: bool) {
        match (on, self.scavenger) {
            (true, None) => self.scavenger = Some(Scavenger::new()),
            (false, Some(_)) => self.scavenger = None,
            _ => {}
        }
    }

    /// A scavenger's share of its own rate now (`None`: not a scavenger).
    pub(crate) fn scavenger_share(&self) -> Option<f64> {
        self.scavenger.map(|s| s.share)
    }

    /// The queueing delay on the way out (filtered, over the rolling base) at `now`: a
    /// scavenger gives way above [`SCAVENGER_TARGET`], and takes its share back below.
    /// Returns whether it began to give way.
    pub(crate) fn on_queue_delay(&mut self, now: Instant, delay: Duration, srtt: Duration) -> bool {
        let base = self.min_rtt().unwrap_or(srtt);
        self.scavenger
            .as_mut()
            .is_some_and(|s| s.on_delay(now, delay, srtt, base))
    }

    /// A cap on the pacing rate, from outside the path (the spare capacity of the line a
    /// relayed path shares with its owner). Never below [`MIN_RATE_CAP`]: a pacer slower
    /// than that would hold the next packet longer than the cap's next update.
    pub(crate) fn set_rate_cap(&mut self, cap: Option<u64>) {
        self.rate_cap = cap.map(|c| c.max(MIN_RATE_CAP));
    }

    /// The cap on the pacing rate, if any.
    pub(crate) fn rate_cap(&self) -> Option<u64> {
        self.rate_cap
    }

    /// Whether the cap, or giving way as a scavenger, holds the pacer below the path's
    /// own rate (what it sends then says nothing of the path's rate).
    pub(crate) fn capped(&self, srtt: Duration) -> bool {
        self.pacing_rate(srtt) < self.own_pacing_rate(srtt)
    }

    fn own_pacing_rate(&self, srtt: Duration) -> u64 {
        if self.phase == Phase::Startup {
            // The flows a path carries find their own rate in slow start, doubling what
            // they send every round trip; a pacer that follows the path's delivery rate
            // (a round behind) holds their bursts in the core's queue, and the delay it
            // adds ends their slow start (HyStart) at a fraction of the path. In startup
            // the window, which grows with every ack faster than theirs, may go out in
            // half a round trip, as Linux paces its own slow start.
            let rtt = srtt.max(Duration::from_millis(1));
            // Once a queue showed, a round at the window's own rate measures the path
            // without filling that queue further.
            let gain = if self.full_since_round.is_some() {
                1.0
            } else {
                SLOW_START_PACING
            };
            let window = self.window(srtt) as f64 * gain / rtt.as_secs_f64();
            return (window as u64).max(self.model_pacing_rate(srtt));
        }
        self.model_pacing_rate(srtt)
    }

    fn model_pacing_rate(&self, srtt: Duration) -> u64 {
        if self.pacing > 0 {
            // Never so slow that the smallest window takes more than a round trip.
            let floor = (MIN_CWND_PACKETS * self.mtu) as f64 / srtt.as_secs_f64().max(1e-3);
            return self.pacing.max(floor as u64);
        }
        // No sample yet: the initial window over the RTT, as QUIC paces it.
        let rtt = srtt.max(Duration::from_millis(1));
        ((STARTUP_GAIN * (INITIAL_CWND_PACKETS * self.mtu) as f64 / rtt.as_secs_f64()) as u64)
            .max(self.mtu)
    }

    fn pacing_gain(&self) -> f64 {
        match self.phase {
            Phase::Startup => self.startup_gain,
            Phase::Drain => 1.0 / self.startup_gain,
            Phase::ProbeBw { cycle, .. } => PROBE_GAINS[cycle],
        }
    }

    /// Sets the window and pacing rate from the model after an ack of `acked` bytes, as
    /// Linux's BBR does: until the rate is found they only grow (early samples are few
    /// and small), then they follow the model.
    fn update_control(&mut self, acked: u64, srtt: Duration) {
        let found = self.phase != Phase::Startup;
        let bw = self.bandwidth();
        let rate = ((bw as f64 * self.pacing_gain()) as u64).max(self.mtu);
        if bw > 0 && (found || rate > self.model_pacing_rate(srtt)) {
            self.pacing = rate;
        }
        let gain = if found { CWND_GAIN } else { self.startup_gain };
        let target = self
            .bdp(srtt)
            .map_or(INITIAL_CWND_PACKETS * self.mtu, |bdp| {
                ((bdp as f64 * gain) as u64).max(MIN_CWND_PACKETS * self.mtu)
            });
        self.cwnd = if found {
            (self.cwnd + acked).min(target)
        } else if self.full_since_round.is_some() {
            self.cwnd
        } else {
            // Slow start, a step ahead of the flows it carries: they grow by what was
            // delivered each, so the path grows by twice that (a window level with theirs
            // queues their bursts in the core, and the delay ends their slow start). Up to
            // the model's target, or twice what is in flight while the model lags.
            let room = target.max(2 * self.in_flight + INITIAL_CWND_PACKETS * self.mtu);
            self.cwnd.max((self.cwnd + 2 * acked).min(room))
        }
        .max(MIN_CWND_PACKETS * self.mtu);
    }

    /// Whether `bytes` more may go in flight now (window and pacer).
    pub(crate) fn can_send(&self, now: Instant, bytes: u64, srtt: Duration) -> bool {
        if self.in_flight + bytes > self.window(srtt).max(bytes) {
            return false;
        }
        if self.next_send <= now {
            return true;
        }
        // Within the quantum of a packet that was due.
        let rate = self.pacing_rate(srtt).max(1);
        let two_packets = Duration::from_nanos(2 * self.mtu * 1_000_000_000 / rate);
        self.next_send <= self.quantum_start + PACING_QUANTUM.max(two_packets)
    }

    /// Whether the window has room for `bytes` (the pacer aside).
    pub(crate) fn has_room(&self, bytes: u64, srtt: Duration) -> bool {
        self.in_flight + bytes <= self.window(srtt).max(bytes)
    }

    /// When the pacer lets the next packet go.
    pub(crate) fn next_send(&self) -> Instant {
        self.next_send
    }

    /// An ack-eliciting packet of `bytes` went out (`paced`: data, which the pacer spaces;
    /// pings and acks go when due).
    pub(crate) fn on_sent(&mut self, now: Instant, bytes: u64, paced: bool, srtt: Duration) {
        self.in_flight += bytes;
        if paced {
            self.last_data_sent = Some(now);
            if self.next_send <= now {
                // A wake-up's quantum starts.
                self.quantum_start = now;
            }
            let start = self
                .next_send
                .max(now.checked_sub(PACING_BURST).unwrap_or(now));
            let rate = self.pacing_rate(srtt).max(1);
            self.next_send = start + Duration::from_nanos(bytes * 1_000_000_000 / rate);
        }
    }

    /// Nothing waits to be sent while the window has room: rate samples of what is in
    /// flight now, and of what is sent before any of it is delivered, are app-limited
    /// (Linux's `tcp_rate_check_app_limited`).
    pub(crate) fn on_app_limited(&mut self, delivered: u64) {
        self.app_limited_until = delivered + self.in_flight + 1;
    }

    /// Whether a packet sent when `delivered` bytes had been delivered was app-limited.
    pub(crate) fn app_limited(&self, delivered: u64) -> bool {
        delivered < self.app_limited_until
    }

    /// Packets of `bytes` left flight without being acknowledged (lost, or forgotten).
    pub(crate) fn on_gone(&mut self, bytes: u64) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    /// Packets of `bytes` were declared lost.
    pub(crate) fn on_lost(&mut self, bytes: u64) {
        self.on_gone(bytes);
        self.round_lost += bytes;
    }

    /// An acknowledgement: `acked` bytes newly delivered (the path's count is now
    /// `delivered`); the newest packet it acknowledged was sent when `sent_delivered` had
    /// been, took `rtt`, and gives the delivery-rate sample `rate` (bytes/s;
    /// `app_limited` if it was sent with nothing waiting); `queueing` is the queueing
    /// delay on the way out, from the one-way-delay trend.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        acked: u64,
        delivered: u64,
        sent_delivered: u64,
        rtt: Option<Duration>,
        rate: Option<u64>,
        app_limited: bool,
        queueing: Duration,
        srtt: Duration,
    ) {
        self.in_flight = self.in_flight.saturating_sub(acked);
        self.round_delivered += acked;
        self.round_queueing = self.round_queueing.max(queueing);
        if let Some(rtt) = rtt {
            self.on_rtt(now, rtt);
        }
        let round_start = sent_delivered >= self.next_round_delivered;
        if round_start {
            self.next_round_delivered = delivered;
            self.round += 1;
            self.on_round_end(srtt);
        }
        if let Some(rate) = rate {
            let bw = self.bandwidth();
            let slot = &mut self.bw_rounds[(self.round % BW_ROUNDS as u64) as usize];
            if slot.0 != self.round && (!app_limited || rate > bw) {
                *slot = (self.round, 0);
            }
            if !app_limited || rate > bw {
                slot.1 = slot.1.max(rate);
                self.bw_round = self.round;
            }
        }
        // A relay is rarely the sender's bottleneck: the flows it carries are clocked by
        // the path itself, so what it sends looks app-limited while the ISP's queue fills.
        // A one-way delay grown well above its base says the path is full all the same,
        // while it carries data: an idle path's pings on a jittery line say nothing of its
        // rate, and leaving startup on them held the first download to the pings' rate.
        // One way, not the round trip: a download's queue on the way back made the round
        // trip of the path carrying its acks grow, and that path left startup at the acks'
        // first rate, then paced the next acks to it.
        let carrying = self
            .last_data_sent
            .is_some_and(|t| now.saturating_duration_since(t) < CARRYING);
        if !carrying {
            self.on_idle_noise(now, queueing);
        }
        let noise = self.idle_noise + STARTUP_QUEUE_MARGIN;
        let queue_building =
            carrying && self.min_rtt().is_some_and(|min| queueing > min / 4 + noise);
        if self.phase == Phase::Startup {
            if queue_building && self.full_since_round.is_none() {
                // Startup's window would pour up to twice the path's holding into its
                // queue: stop growing now, as HyStart does on a rising delay. On any ack,
                // not only at a round's end: on a long path a round of startup filled a
                // 100 ms queue from a quarter of the base RTT to overflowing.
                self.full_since_round = Some(self.round);
            } else if self.full_since_round.is_some_and(|r| self.round > r + 1) {
                // A round at the rate that filled the queue measured the path's rate (the
                // samples taken so far lag it by a round: draining from them held the
                // flows to a third of the path, and their slow start ended on the delay).
                self.phase = Phase::Drain;
            } else if round_start && !app_limited && self.full_since_round.is_none() {
                self.check_full_bw();
            }
        }
        self.advance_phase(now, srtt);
        self.update_control(acked, srtt);
    }

    /// A queueing-delay sample while the path carried nothing but pings: no queue of
    /// ours, so what it shows is the line's jitter. Kept as a maximum that halves every
    /// [`MIN_RTT_WINDOW`].
    fn on_idle_noise(&mut self, now: Instant, queueing: Duration) {
        let halvings = now
            .saturating_duration_since(self.idle_noise_at)
            .as_secs_f64()
            / MIN_RTT_WINDOW.as_secs_f64();
        if halvings >= 1.0 / 16.0 {
            self.idle_noise = self.idle_noise.mul_f64(0.5f64.powf(halvings));
            self.idle_noise_at = now;
        }
        self.idle_noise = self.idle_noise.max(queueing);
    }

    fn on_round_end(&mut self, srtt: Duration) {
        let total = self.round_lost + self.round_delivered;
        // Loss with the path's queue empty is the line's, not congestion: a full queue
        // drops at its tail, and its packets waited first. (An LTE line losing 3 % at
        // random was otherwise held to a few packets in flight, and to a fiftieth of its
        // rate.) A policer drops without a queue; pacing at the delivery rate it allows
        // keeps that loss to the probes.
        let congested = self.round_queueing > self.idle_noise + LOSS_QUEUE_MARGIN;
        if total > 0 && congested && self.round_lost as f64 > LOSS_THRESHOLD * total as f64 {
            // Too much loss for chance: hold what is in flight below where it happened,
            // but not below one bandwidth-delay product: the pacer keeps the ISP's queue
            // empty at that, and less would make the path, not the flows it carries,
            // the bottleneck (after startup's overshoot, the flows' own back-off already
            // keeps them about there, and what the cap withheld waited in the core's queue
            // long enough to time a flow out).
            let cap = ((self.in_flight + self.round_lost) as f64 * LOSS_BETA) as u64;
            let floor = self.bdp(srtt).unwrap_or(0).max(MIN_CWND_PACKETS * self.mtu);
            self.inflight_cap = Some(cap.max(floor));
            if self.phase == Phase::Startup {
                self.phase = Phase::Drain;
            }
        } else if let Some(cap) = self.inflight_cap {
            // A clean round: let it grow again, a little faster each time, as BBRv2 does.
            let grown = cap + cap / 8 + self.mtu;
            self.inflight_cap =
                (grown < (self.bdp(srtt).unwrap_or(0) as f64 * CWND_GAIN) as u64).then_some(grown);
        }
        self.round_lost = 0;
        self.round_delivered = 0;
        self.round_queueing = Duration::ZERO;
    }

    fn check_full_bw(&mut self) {
        let bw = self.bandwidth();
        if bw as f64 >= self.full_bw as f64 * 1.25 {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        if self.full_bw_rounds >= FULL_BW_ROUNDS {
            self.phase = Phase::Drain;
        }
    }

    fn advance_phase(&mut self, now: Instant, srtt: Duration) {
        match self.phase {
            Phase::Startup => {}
            Phase::Drain => {
                if self.in_flight <= self.bdp(srtt).unwrap_or(0) {
                    self.phase = Phase::ProbeBw {
                        cycle: 2,
                        since: now,
                        probed_from: self.bandwidth(),
                    };
                }
            }
            Phase::ProbeBw {
                cycle,
                since,
                probed_from,
            } => {
                let rtt = self.min_rtt().unwrap_or(srtt);
                if now.saturating_duration_since(since) < rtt {
                    return;
                }
                if cycle == 0 && self.bandwidth() as f64 >= probed_from as f64 * 1.25 {
                    // Probing found a quarter more: the path has much more room than we
                    // thought (traffic came back after a quiet spell). Find it as fast as
                    // at the start, not a quarter every eight round trips.
                    self.phase = Phase::Startup;
                    self.startup_gain = REGROW_GAIN;
                    self.full_since_round = None;
                    self.full_bw = self.bandwidth();
                    self.full_bw_rounds = 0;
                    return;
                }
                // Probing up ends early when it queued nothing more: nothing to learn.
                // Draining lasts until the queue it built is gone.
                let next = match cycle {
                    1 if self.in_flight > self.bdp(srtt).unwrap_or(0) => return,
                    _ => (cycle + 1) % PROBE_GAINS.len(),
                };
                self.phase = Phase::ProbeBw {
                    cycle: next,
                    since: now,
                    probed_from: if next == 0 {
                        self.bandwidth()
                    } else {
                        probed_from
                    },
                };
            }
        }
    }

    fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        let half = MIN_RTT_WINDOW / 2;
        if now.saturating_duration_since(self.min_rtt[0].0) >= half {
            self.min_rtt = [(now, Some(rtt)), self.min_rtt[0]];
            return;
        }
        let cur = &mut self.min_rtt[0].1;
        *cur = Some(cur.map_or(rtt, |m| m.min(rtt)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: usize = 1400;

    /// A path of `rate` bytes/s, base `rtt` and a buffer of one bandwidth-delay product,
    /// driven a round at a time: what the sender offers in a round (its window, at most
    /// its pacing rate for a round) joins the queue; the path delivers a round's worth of
    /// it, acknowledged at the round's end; what overflows the buffer is lost.
    fn drive(cc: &mut Congestion, t0: Instant, rate: u64, rtt: Duration, rounds: u32) -> Instant {
        let mut now = t0;
        let mut delivered = 0u64;
        let per_round = (rate as f64 * rtt.as_secs_f64()) as u64;
        let mut queue = 0u64;
        for _ in 0..rounds {
            let room = cc.window(rtt).saturating_sub(cc.in_flight());
            let offered = room.min((cc.pacing_rate(rtt) as f64 * rtt.as_secs_f64()) as u64);
            let sent_delivered = delivered;
            cc.on_sent(now, offered, true, rtt);
            let queued_before = queue;
            queue += offered;
            let carried = queue.min(per_round);
            queue -= carried;
            let lost = queue.saturating_sub(per_round);
            queue -= lost;
            let sample_rtt = rtt + Duration::from_secs_f64(queued_before as f64 / rate as f64);
            now += rtt;
            delivered += carried;
            cc.on_lost(lost);
            cc.on_ack(
                now,
                carried,
                delivered,
                sent_delivered,
                Some(sample_rtt),
                Some((carried as f64 / rtt.as_secs_f64()) as u64),
                false,
                sample_rtt - rtt,
                rtt,
            );
        }
        now
    }

    /// As [`drive`], beside traffic the path cannot see that queues `unseen` on its line
    /// (it adds to the delay, not to what is lost), with the scavenger fed the queueing
    /// delay; what is sent under a cap or a scavenger's share is app-limited, as a path
    /// marks it.
    fn drive_beside(
        cc: &mut Congestion,
        t0: Instant,
        rate: u64,
        rtt: Duration,
        rounds: u32,
        unseen: Duration,
    ) -> Instant {
        let mut now = t0;
        let mut delivered = 1_000_000_000u64;
        let per_round = (rate as f64 * rtt.as_secs_f64()) as u64;
        let mut queue = 0u64;
        for _ in 0..rounds {
            let room = cc.window(rtt).saturating_sub(cc.in_flight());
            let offered = room.min((cc.pacing_rate(rtt) as f64 * rtt.as_secs_f64()) as u64);
            let app_limited = cc.capped(rtt);
            let sent_delivered = delivered;
            cc.on_sent(now, offered, true, rtt);
            let queued_before = queue;
            queue += offered;
            let carried = queue.min(per_round);
            queue -= carried;
            let lost = queue.saturating_sub(per_round);
            queue -= lost;
            let queueing = Duration::from_secs_f64(queued_before as f64 / rate as f64) + unseen;
            now += rtt + unseen;
            delivered += carried;
            cc.on_lost(lost);
            cc.on_ack(
                now,
                carried,
                delivered,
                sent_delivered,
                Some(rtt + queueing),
                Some((carried as f64 / rtt.as_secs_f64()) as u64),
                app_limited,
                queueing,
                rtt,
            );
            cc.on_queue_delay(now, queueing, rtt + unseen);
        }
        now
    }

    /// A scavenger gives way to a queue above the target that it did not build (traffic
    /// the pool cannot see), in proportion to how far above, down to its floor, and takes
    /// its share back once the queue falls below the target; a path that is no scavenger
    /// takes no notice, as before.
    #[test]
    fn a_scavenger_gives_way_above_the_target_and_takes_its_rate_back_below() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(40);
        let rate = 1_250_000; // 10 Mbit/s
        let mut normal = Congestion::new(t0, MTU);
        let mut scavenger = Congestion::new(t0, MTU);
        scavenger.set_scavenger(true);
        let run = |cc: &mut Congestion, from: Instant, rounds: u32, unseen: Duration| {
            drive_beside(cc, from, rate, rtt, rounds, unseen)
        };
        // No queue but its own: the same rate as any path.
        let now = run(&mut normal, t0, 40, Duration::ZERO);
        run(&mut scavenger, t0, 40, Duration::ZERO);
        let full = normal.usable_bandwidth();
        assert_eq!(scavenger.usable_bandwidth(), full);
        assert_eq!(scavenger.pacing_rate(rtt), normal.pacing_rate(rtt));
        assert_eq!(scavenger.scavenger_share(), Some(1.0));
        // 45 ms of queue: below the target, nothing changes.
        let now2 = run(&mut normal, now, 20, Duration::from_millis(45));
        run(&mut scavenger, now, 20, Duration::from_millis(45));
        assert_eq!(scavenger.scavenger_share(), Some(1.0));
        // 70 ms (a sixth above the target): it gives way, a little a round trip.
        let mut mild = scavenger.clone();
        run(&mut mild, now2, 3, Duration::from_millis(70));
        let mild_share = mild.scavenger_share().unwrap();
        assert!((0.5..0.9).contains(&mild_share), "{mild_share}");
        // 150 ms: half a round trip, down to the floor; the normal path ignores it.
        let now3 = run(&mut normal, now2, 20, Duration::from_millis(150));
        let mut backoffs = 0;
        let mut t = now2;
        for _ in 0..20 {
            backoffs += u32::from(scavenger.scavenger_share() == Some(1.0));
            t = run(&mut scavenger, t, 1, Duration::from_millis(150));
        }
        assert_eq!(backoffs, 1);
        assert_eq!(scavenger.scavenger_share(), Some(SCAVENGER_FLOOR));
        let low = scavenger.pacing_rate(rtt);
        assert!(low <= normal.pacing_rate(rtt) / 16, "{low}");
        assert!(low >= MIN_RATE_CAP);
        assert_eq!(
            normal.usable_bandwidth(),
            full,
            "a normal path ignores the delay"
        );
        // Its estimate of the line is kept: what it sent while giving way was held back.
        assert_eq!(scavenger.bandwidth(), full);
        // The queue goes: the share comes back, within a few seconds.
        let mut t = now3;
        let mut rounds = 0;
        while scavenger.scavenger_share() < Some(1.0) {
            t = run(&mut scavenger, t, 1, Duration::ZERO);
            rounds += 1;
            assert!(rounds < 100, "{:?}", scavenger.scavenger_share());
        }
        println!("back to its full share in {rounds} round trips of {rtt:?}");
        assert!(rounds >= 10, "{rounds}: LEDBAT++'s gain is slow");
        assert_eq!(scavenger.usable_bandwidth(), full);
    }

    #[test]
    fn a_scavenger_restarted_stays_one_and_keeps_the_cap() {
        let t0 = Instant::now();
        let mut cc = Congestion::new(t0, MTU);
        cc.set_scavenger(true);
        cc.set_rate_cap(Some(100_000));
        drive_beside(
            &mut cc,
            t0,
            1_250_000,
            Duration::from_millis(20),
            30,
            Duration::from_millis(200),
        );
        assert!(cc.scavenger_share() < Some(1.0));
        let fresh = cc.restart(t0 + Duration::from_secs(10));
        assert_eq!(fresh.scavenger_share(), Some(1.0));
        assert_eq!(fresh.rate_cap(), Some(100_000));
        cc.set_scavenger(false);
        assert_eq!(cc.restart(t0).scavenger_share(), None);
    }

    #[test]
    fn startup_finds_the_rate_then_cruises_at_it() {
        let t0 = Instant::now();
        let mut cc = Congestion::new(t0, MTU);
        let rate = 2_500_000; // 20 Mbit/s
        let rtt = Duration::from_millis(20);
        assert_eq!(cc.state(), CongestionState::Startup);
        drive(&mut cc, t0, rate, rtt, 40);
        assert_eq!(cc.state(), CongestionState::Cruise);
        let bw = cc.bandwidth();
        assert!((rate * 9 / 10..=rate).contains(&bw), "{bw}");
        // About two bandwidth-delay products may be in flight, not more.
        let bdp = rate as f64 * rtt.as_secs_f64();
        let w = cc.window(rtt) as f64;
        assert!(w >= 1.5 * bdp && w <= 2.5 * bdp, "{w} against {bdp}");
        assert_eq!(cc.min_rtt(), Some(rtt));
    }

    #[test]
    fn loss_caps_the_window_only_with_a_queue_and_not_below_the_path() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(20);
        let mut cc = Congestion::new(t0, MTU);
        let mut now = drive(&mut cc, t0, 2_500_000, rtt, 30);
        let before = cc.window(rtt);
        let bdp = cc.bdp(rtt).unwrap();
        let mut delivered = 10_000_000;
        // A round that loses `lost` of `sent` bytes while the path's queue is `queueing`.
        let mut round = |cc: &mut Congestion, sent: u64, lost: u64, queueing: Duration| {
            cc.on_sent(now, sent, true, rtt);
            cc.on_lost(lost);
            now += rtt;
            delivered += sent - lost;
            cc.on_ack(
                now,
                sent - lost,
                delivered,
                delivered,
                Some(rtt + queueing),
                None,
                false,
                queueing,
                rtt,
            );
        };
        // 1 % of a round lost: no cap.
        round(&mut cc, 100_000, 1_000, Duration::ZERO);
        assert!(cc.inflight_cap.is_none());
        // 10 % lost with the queue empty: the line's own loss, no cap either.
        round(&mut cc, before, before / 10, Duration::ZERO);
        assert!(cc.inflight_cap.is_none());
        assert_eq!(cc.window(rtt), before);
        // 10 % lost from a full queue: capped below what was in flight, but not below
        // what the path holds without a queue.
        round(&mut cc, before, before / 10, Duration::from_millis(20));
        let w = cc.window(rtt);
        assert!(w < before, "{w} < {before}");
        assert!(w >= bdp, "{w} >= {bdp}");
    }

    #[test]
    fn the_pacer_spaces_packets_at_the_rate_and_allows_a_short_burst() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(20);
        let mut cc = Congestion::new(t0, MTU);
        drive(&mut cc, t0, 1_250_000, rtt, 40);
        let now = t0 + Duration::from_secs(10);
        let rate = cc.pacing_rate(rtt);
        // After an idle spell, only the burst goes at once.
        let mut sent = 0u64;
        while cc.can_send(now, MTU as u64, rtt) && sent < 1_000_000 {
            cc.on_sent(now, MTU as u64, true, rtt);
            cc.on_gone(MTU as u64);
            sent += MTU as u64;
        }
        // The burst, and the quantum a wake-up sends with the packet that was due.
        let burst = rate as f64 * PACING_BURST.as_secs_f64();
        let quantum = (rate as f64 * PACING_QUANTUM.as_secs_f64()).max(2.0 * MTU as f64);
        let most = burst + quantum + MTU as f64;
        assert!((sent as f64) <= most, "{sent} > {most}");
        assert!(cc.next_send() > now);
        assert!(!cc.can_send(now, MTU as u64, rtt));
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_rate() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(20);
        let mut cc = Congestion::new(t0, MTU);
        let mut now = drive(&mut cc, t0, 2_500_000, rtt, 40);
        let bw = cc.bandwidth();
        for i in 0..30u64 {
            now += rtt;
            let d = 1_000_000_000 + i * 1000;
            cc.on_sent(now, 1000, false, rtt);
            cc.on_ack(
                now + rtt,
                1000,
                d + 1000,
                d,
                Some(rtt),
                Some(50_000),
                true,
                Duration::ZERO,
                rtt,
            );
        }
        assert_eq!(cc.bandwidth(), bw);
    }

    /// Startup ends on a queue building on the way out, not on a round trip that grows
    /// from a queue on the way back (the path carrying a download's acks).
    #[test]
    fn startup_ends_on_its_own_queue_not_the_way_backs() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(20);
        let run = |queueing: Duration| {
            let mut cc = Congestion::new(t0, MTU);
            let mut now = t0;
            for i in 0..20u64 {
                now += rtt;
                let d = i * 10_000;
                cc.on_sent(now, 10_000, true, rtt);
                // The round trip doubles from the second round: the way back is queued.
                let sample = if i == 0 { rtt } else { 2 * rtt };
                cc.on_ack(
                    now + sample,
                    10_000,
                    d + 10_000,
                    d,
                    Some(sample),
                    Some(100_000 * (i + 1)),
                    true,
                    if i == 0 { Duration::ZERO } else { queueing },
                    rtt,
                );
            }
            cc.state()
        };
        assert_eq!(run(Duration::ZERO), CongestionState::Startup);
        assert_ne!(run(rtt), CongestionState::Startup);
    }

    /// A path of 40 ms idle but for pings showing `jitter` of one-way delay, then six
    /// rounds of 10 kB each, acked a round trip later, from the second with `queueing`.
    fn startup_rounds(cc: &mut Congestion, t0: Instant, jitter: Duration, queueing: Duration) {
        let rtt = Duration::from_millis(40);
        let mut now = t0;
        // Pings while idle: what the line's jitter alone shows.
        for i in 0..10u64 {
            now += rtt;
            let d = if i % 2 == 0 { jitter } else { Duration::ZERO };
            cc.on_ack(now, 0, 0, 0, Some(rtt + d), None, true, d, rtt);
        }
        now += Duration::from_secs(1);
        for i in 0..6u64 {
            let d = i * 10_000;
            cc.on_sent(now, 10_000, true, rtt);
            now += rtt;
            let q = if i == 0 { Duration::ZERO } else { queueing };
            let rate = 1_000_000 << i;
            cc.on_ack(
                now,
                10_000,
                d + 10_000,
                d,
                Some(rtt + q),
                Some(rate),
                false,
                q,
                rtt,
            );
        }
    }

    #[test]
    fn startup_takes_no_jitter_for_a_queue_and_measures_a_round_before_draining() {
        let t0 = Instant::now();
        // 15 ms of one-way queueing on a 40 ms path: above a quarter of it, a queue.
        let mut cc = Congestion::new(t0, MTU);
        startup_rounds(&mut cc, t0, Duration::ZERO, Duration::from_millis(15));
        assert_ne!(cc.state(), CongestionState::Startup);
        // The window stopped growing at the first sign of it, and the rate samples of
        // the round after were taken before draining.
        let mut once = Congestion::new(t0, MTU);
        startup_rounds(&mut once, t0, Duration::ZERO, Duration::ZERO);
        assert!(cc.cwnd < once.cwnd, "{} < {}", cc.cwnd, once.cwnd);
        // The same delays on a line whose pings already jittered by 20 ms: no queue.
        let mut jittery = Congestion::new(t0, MTU);
        startup_rounds(
            &mut jittery,
            t0,
            Duration::from_millis(20),
            Duration::from_millis(15),
        );
        assert_eq!(jittery.state(), CongestionState::Startup);
        assert!(jittery.full_since_round.is_none());
    }

    #[test]
    fn the_base_rtt_follows_a_longer_route_within_the_window() {
        let t0 = Instant::now();
        let mut cc = Congestion::new(t0, MTU);
        cc.on_rtt(t0, Duration::from_millis(20));
        let mut t = t0;
        while t < t0 + MIN_RTT_WINDOW + Duration::from_secs(1) {
            t += Duration::from_millis(100);
            cc.on_rtt(t, Duration::from_millis(80));
        }
        assert_eq!(cc.min_rtt(), Some(Duration::from_millis(80)));
    }
}
