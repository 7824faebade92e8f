use std::collections::BTreeMap;
use std::time::Duration;

use super::{DeliveryLog, Emit, Traffic};
use crate::Side;
use crate::packet::{Parsed, Proto, SackBlocks, TcpHeader, tcp_flags};

/// Initial sequence numbers of the data and the acknowledgements (the connection is
/// established from the start: no handshake, no FIN).
const ISN_DATA: u32 = 0x1000_0000;
const ISN_ACKS: u32 = 0x2000_0000;
/// Window scale both ends assume.
const WSCALE: u32 = 7;
/// Clock granularity G of RFC 6298.
const CLOCK_GRANULARITY: Duration = Duration::from_millis(1);

/// Parameters of a [`TcpFlow`]; the defaults are Linux's where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Payload bytes per segment (derived from the tunnel MTU: 1300 leaves room for the
    /// IPv4 and TCP headers with timestamps and the tunnel's own overhead).
    pub mss: usize,
    /// Initial congestion window in segments (Linux: 10).
    pub initial_window: u32,
    /// The receiver acknowledges every this many in-order segments (1 or 2), at once for
    /// anything out of order, and after `delayed_ack` otherwise.
    pub ack_every: u32,
    /// Delayed acknowledgement timer (Linux's minimum: 40 ms).
    pub delayed_ack: Duration,
    /// Least margin of the retransmission timeout over the smoothed RTT (Linux: 200 ms).
    pub rto_min: Duration,
    /// Retransmission timeout before the first RTT sample (RFC 6298: 1 s).
    pub rto_initial: Duration,
    /// Upper bound of the backed-off retransmission timeout.
    pub rto_max: Duration,
    /// The receiver's window in bytes.
    pub rwnd: u64,
    /// Selective acknowledgements (RFC 2018) and SACK-based loss recovery (RFC 6675:
    /// every hole the SACKs reveal is resent within a round trip), as Linux does.
    /// Without them, NewReno (RFC 6582) resends one hole per round trip, and a window
    /// with many holes ends in a timeout.
    pub sack: bool,
    /// Leave slow start when the RTT grows within a round (HyStart++, RFC 9406, without
    /// its conservative phase), as Linux does, instead of only at the first loss (a deep
    /// queue otherwise overflows by half a window at the start).
    pub hystart: bool,
    /// CUBIC congestion avoidance (RFC 9438, Linux's default) instead of Reno's one
    /// segment per round trip: after an early slow-start exit, or a loss on a long path,
    /// the window grows back in seconds, not in minutes.
    pub cubic: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1300,
            initial_window: 10,
            ack_every: 2,
            delayed_ack: Duration::from_millis(40),
            rto_min: Duration::from_millis(200),
            rto_initial: Duration::from_secs(1),
            rto_max: Duration::from_secs(60),
            rwnd: 16 << 20,
            sack: true,
            hystart: true,
            cubic: true,
        }
    }
}

/// A loss event at the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// Three duplicate acknowledgements (or, with SACK, enough data SACKed above a hole):
    /// fast retransmit and recovery.
    FastRetransmit {
        /// The congestion window before, in bytes.
        cwnd: u64,
        /// The new slow-start threshold.
        ssthresh: u64,
    },
    /// HyStart++ ended slow start (the RTT grew by at least `eta` within a round).
    SlowStartExit {
        /// The congestion window (the new slow-start threshold).
        cwnd: u64,
    },
    /// The retransmission timer fired.
    Rto {
        /// How often it had fired in a row before (0: the first time).
        backoff: u32,
        /// The timeout that expired.
        rto: Duration,
    },
}

/// Counters of a [`TcpFlow`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Data segments sent, retransmissions included.
    pub segments_sent: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Segments sent again (fast retransmit, partial acknowledgements, after a timeout).
    pub retransmits: u64,
    /// Fast retransmits (entries into fast recovery).
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub rto_count: u64,
    /// Acknowledgements the sender received.
    pub acks_received: u64,
    /// Of those, duplicates.
    pub dup_acks_received: u64,
    /// Data segments the receiver received.
    pub segments_received: u64,
    /// Of those, entirely old data.
    pub dup_segments: u64,
    /// Of those, beyond a hole.
    pub ooo_segments: u64,
    /// Acknowledgements the receiver sent.
    pub acks_sent: u64,
    /// Packets of the flow that came out where they should not have, or did not parse
    /// as its segments.
    pub misrouted: u64,
    /// Largest congestion window, bytes.
    pub max_cwnd: u64,
    /// When the receiver had all the bytes of a sized transfer.
    pub completed_at: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
struct Sender {
    una: u64,
    nxt: u64,
    max: u64,
    cwnd: u64,
    ssthresh: u64,
    ca_acked: u64,
    dupacks: u32,
    /// In fast recovery until this is acknowledged.
    recovery: Option<u64>,
    /// RFC 6582's `recover`: no new fast retransmit until the acknowledgement passes it.
    recover: Option<u64>,
    /// NewReno: a partial acknowledgement came during this recovery.
    partial_acked: bool,
    /// SACK recovery: the holes below this were resent.
    high_rxt: u64,
    /// SACKed ranges above `una`: start -> end.
    sacked: BTreeMap<u64, u64>,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
    rto_at: Option<Duration>,
    rwnd: u64,
    ts_recent: u32,
    /// HyStart++: the round ends when this is acknowledged.
    round_end: u64,
    last_round_min: Option<Duration>,
    round_min: Option<Duration>,
    round_samples: u32,
    cubic: Cubic,
}

/// CUBIC's state (RFC 9438), windows in segments.
#[derive(Clone, Debug, Default, PartialEq)]
struct Cubic {
    /// The window before the last reduction (fast convergence applied).
    w_max: f64,
    /// When the current avoidance epoch began: the first acknowledgement after a
    /// reduction or a slow-start exit.
    epoch: Option<Duration>,
    /// Time to reach `origin` again, seconds.
    k: f64,
    /// The plateau of this epoch's cubic curve.
    origin: f64,
    /// The Reno-friendly estimate.
    w_est: f64,
    /// Growth owed below a byte.
    carry: f64,
}

/// RFC 9438's constants (Linux's too: beta 717/1024, C 0.4).
const CUBIC_BETA: f64 = 0.7;
const CUBIC_C: f64 = 0.4;

#[derive(Clone, Debug, PartialEq)]
struct Receiver {
    nxt: u64,
    /// Out-of-order data: start -> end.
    ooo: BTreeMap<u64, u64>,
    unacked: u32,
    delack_at: Option<Duration>,
    ts_recent: u32,
    last_ack_sent: u64,
    /// Start of the out-of-order segment received last (its block is SACKed first).
    last_ooo: Option<u64>,
}

impl Sender {
    /// Adds a SACKed range (clipped to what is outstanding); returns the bytes it added.
    fn add_sack(&mut self, start: u64, end: u64) -> u64 {
        let (start, end) = (start.max(self.una), end.min(self.max));
        if start >= end {
            return 0;
        }
        let known = self.sacked_in(start, end);
        let (mut a, mut b) = (start, end);
        if let Some((&ps, &pe)) = self.sacked.range(..=a).next_back() {
            if pe >= a {
                a = ps;
                b = b.max(pe);
                self.sacked.remove(&ps);
            }
        }
        while let Some((&ns, &ne)) = self.sacked.range(a..).next() {
            if ns > b {
                break;
            }
            b = b.max(ne);
            self.sacked.remove(&ns);
        }
        self.sacked.insert(a, b);
        (end - start) - known
    }

    /// Forgets what `una` passed.
    fn prune_sacked(&mut self) {
        while let Some((&s, &e)) = self.sacked.first_key_value() {
            if s >= self.una {
                break;
            }
            self.sacked.pop_first();
            if e > self.una {
                self.sacked.insert(self.una, e);
                break;
            }
        }
    }

    fn sacked_in(&self, a: u64, b: u64) -> u64 {
        self.sacked
            .iter()
            .map(|(&s, &e)| e.min(b).saturating_sub(s.max(a)))
            .sum()
    }

    fn unsacked(&self, a: u64, b: u64) -> u64 {
        if a >= b {
            return 0;
        }
        (b - a) - self.sacked_in(a, b)
    }

    /// Below this, what is not SACKed is lost (RFC 6675's IsLost: more than two
    /// segments' worth, or three blocks, SACKed above it); `una` when nothing is.
    fn lost_edge(&self, mss: u64) -> u64 {
        let (mut bytes, mut blocks) = (0, 0);
        for (&s, &e) in self.sacked.iter().rev() {
            bytes += e - s;
            blocks += 1;
            if bytes > 2 * mss || blocks >= 3 {
                return s;
            }
        }
        self.una
    }

    /// Bytes in the network (RFC 6675's pipe): outstanding, not SACKed, and in recovery
    /// not lost unless resent; outside recovery what was sent up to `nxt` (after a
    /// timeout, the rest counts as lost).
    fn pipe(&self, mss: u64) -> u64 {
        if self.recovery.is_none() {
            return self.unsacked(self.una, self.nxt);
        }
        let lost = self.lost_edge(mss);
        let unrepaired = self.unsacked(self.high_rxt.max(self.una), lost);
        self.unsacked(self.una, self.max) - unrepaired
    }

    /// The first range at or after `from` and below `limit` that is not SACKed, at most
    /// `mss` long.
    fn next_hole(&self, from: u64, limit: u64, mss: u64) -> Option<(u64, u64)> {
        let mut x = from;
        let mut hole_end = limit;
        for (&s, &e) in self.sacked.range(..) {
            if e <= x {
                continue;
            }
            if s <= x {
                x = e;
                continue;
            }
            hole_end = s.min(limit);
            break;
        }
        (x < hole_end).then(|| (x, (hole_end - x).min(mss)))
    }
}

/// A TCP connection carried as inner IPv4/TCP packets: a NewReno sender (slow start,
/// congestion avoidance, fast retransmit on 3 duplicate acks with NewReno's partial
/// acknowledgements, RFC 6298 timeouts with a 200 ms minimum and backoff, go-back-N after
/// a timeout; no SACK, no pacing) at side `from`, and a receiver at the other side that
/// reassembles and acknowledges every 2nd segment (configurable). Segments carry the
/// timestamps option, which gives an RTT sample per acknowledgement.
///
/// It reports bytes delivered in order over time ([`delivered`](Self::delivered): goodput
/// and the longest stall), timeouts, fast retransmits and the other [`TcpStats`].
#[derive(Clone, Debug, PartialEq)]
pub struct TcpFlow {
    cfg: TcpConfig,
    from: Side,
    start: Duration,
    size: Option<u64>,
    port: u16,
    started: bool,
    snd: Sender,
    rcv: Receiver,
    stats: TcpStats,
    events: Vec<(Duration, TcpEvent)>,
    delivered: DeliveryLog,
    zeros: Vec<u8>,
}

fn tsval(now: Duration) -> u32 {
    // Never 0, which would read as "no echo".
    (now.as_micros() as u32).wrapping_add(1)
}

/// The 64-bit sequence number closest to `reference` whose low 32 bits (after `isn`)
/// are `value`; `None` below zero.
fn unwrap(reference: u64, isn: u32, value: u32) -> Option<u64> {
    let offset = value.wrapping_sub(isn);
    let diff = offset.wrapping_sub(reference as u32) as i32;
    reference.checked_add_signed(i64::from(diff))
}

impl TcpFlow {
    /// An unlimited transfer from side `from`, with the default configuration.
    pub fn new(from: Side) -> TcpFlow {
        TcpFlow::with_config(from, TcpConfig::default())
    }

    /// From the Internet to the LAN (the proxy side sends).
    pub fn download() -> TcpFlow {
        TcpFlow::new(Side::Proxy)
    }

    /// From the LAN to the Internet (the gateway side sends).
    pub fn upload() -> TcpFlow {
        TcpFlow::new(Side::Gateway)
    }

    /// An unlimited transfer from side `from` with `cfg`.
    pub fn with_config(from: Side, cfg: TcpConfig) -> TcpFlow {
        assert!(cfg.mss > 0 && cfg.mss <= 65535 - 52, "mss {}", cfg.mss);
        assert!(cfg.ack_every >= 1, "ack_every must be at least 1");
        let mss = cfg.mss as u64;
        TcpFlow {
            cfg,
            from,
            start: Duration::ZERO,
            size: None,
            port: 80,
            started: false,
            snd: Sender {
                una: 0,
                nxt: 0,
                max: 0,
                cwnd: u64::from(cfg.initial_window) * mss,
                ssthresh: u64::MAX,
                ca_acked: 0,
                dupacks: 0,
                recovery: None,
                recover: None,
                partial_acked: false,
                high_rxt: 0,
                sacked: BTreeMap::new(),
                srtt: None,
                rttvar: Duration::ZERO,
                backoff: 0,
                rto_at: None,
                rwnd: cfg.rwnd,
                ts_recent: 0,
                round_end: 0,
                last_round_min: None,
                round_min: None,
                round_samples: 0,
                cubic: Cubic::default(),
            },
            rcv: Receiver {
                nxt: 0,
                ooo: BTreeMap::new(),
                unacked: 0,
                delack_at: None,
                ts_recent: 0,
                last_ack_sent: 0,
                last_ooo: None,
            },
            stats: TcpStats::default(),
            events: Vec::new(),
            delivered: DeliveryLog::default(),
            zeros: vec![0; cfg.mss],
        }
    }

    /// Sends `bytes` in all, then stops.
    pub fn size(mut self, bytes: u64) -> TcpFlow {
        self.size = Some(bytes);
        self
    }

    /// Starts at `t` (elapsed).
    pub fn start_at(mut self, t: Duration) -> TcpFlow {
        self.start = t;
        self
    }

    /// The Internet-side port (80 by default).
    pub fn port(mut self, port: u16) -> TcpFlow {
        self.port = port;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.cfg
    }

    /// The sending side.
    pub fn source(&self) -> Side {
        self.from
    }

    /// Counters.
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Loss events at the sender, in order.
    pub fn events(&self) -> &[(Duration, TcpEvent)] {
        &self.events
    }

    /// Payload bytes delivered in order to the receiving application, over time.
    pub fn delivered(&self) -> &DeliveryLog {
        &self.delivered
    }

    /// Bytes delivered in order so far.
    pub fn bytes_delivered(&self) -> u64 {
        self.rcv.nxt
    }

    /// Goodput (in-order payload) over `[from, to)`, bits per second.
    pub fn goodput_bps(&self, from: Duration, to: Duration) -> f64 {
        self.delivered.rate_bps(from, to)
    }

    /// The congestion window, bytes.
    pub fn cwnd(&self) -> u64 {
        self.snd.cwnd
    }

    /// The smoothed RTT, once sampled.
    pub fn srtt(&self) -> Option<Duration> {
        self.snd.srtt
    }

    /// The current retransmission timeout, backoff included.
    pub fn rto(&self) -> Duration {
        let base = match self.snd.srtt {
            None => self.cfg.rto_initial,
            // Linux keeps its variance term at least `rto_min` (tcp_rtt_estimator's
            // mdev_max), so its timeout is the RTT plus 200 ms at least, not RFC 6298's
            // floor of 200 ms in all: a long path's flow does not time out on a queue
            // that grows by a fraction of its RTT.
            Some(srtt) => {
                srtt + (self.snd.rttvar * 4)
                    .max(CLOCK_GRANULARITY)
                    .max(self.cfg.rto_min)
            }
        };
        base.checked_mul(1 << self.snd.backoff.min(16))
            .unwrap_or(self.cfg.rto_max)
            .min(self.cfg.rto_max)
    }

    fn receiver_side(&self) -> Side {
        match self.from {
            Side::Gateway => Side::Proxy,
            Side::Proxy => Side::Gateway,
        }
    }

    fn end(&self) -> u64 {
        self.size.unwrap_or(u64::MAX)
    }

    fn emit_segment(&mut self, now: Duration, seq: u64, len: u64, out: &mut Emit<'_>) {
        let header = TcpHeader {
            seq: ISN_DATA.wrapping_add(seq as u32),
            ack: ISN_ACKS,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: u16::MAX,
            timestamps: Some((tsval(now), self.snd.ts_recent)),
            sack: SackBlocks::default(),
        };
        out.tcp(self.from, &header, &self.zeros[..len as usize]);
        self.stats.segments_sent += 1;
        self.stats.bytes_sent += len;
        if seq < self.snd.max {
            self.stats.retransmits += 1;
        }
        if self.snd.rto_at.is_none() {
            self.snd.rto_at = Some(now + self.rto());
        }
    }

    /// Outside SACK recovery: sends from `nxt` what the windows allow: new data, or
    /// after a timeout again what was not SACKed.
    fn send_what_fits(&mut self, now: Duration, out: &mut Emit<'_>) {
        let mss = self.cfg.mss as u64;
        let end = self.end();
        let window = self.snd.cwnd.min(self.snd.rwnd);
        while self.snd.nxt < end {
            let s = &mut self.snd;
            let (seq, len) = if s.nxt < s.max {
                match s.next_hole(s.nxt, s.max, mss) {
                    Some(hole) => hole,
                    None => {
                        s.nxt = s.max;
                        continue;
                    }
                }
            } else {
                (s.nxt, (end - s.nxt).min(mss))
            };
            s.nxt = seq;
            if s.unsacked(s.una, seq) + len > window {
                break;
            }
            self.emit_segment(now, seq, len, out);
            let s = &mut self.snd;
            s.nxt = seq + len;
            s.max = s.max.max(s.nxt);
        }
    }

    /// In SACK recovery: resends the lost holes, then new data, while the pipe allows.
    fn send_in_recovery(&mut self, now: Duration, out: &mut Emit<'_>) {
        let mss = self.cfg.mss as u64;
        let end = self.end();
        loop {
            let s = &self.snd;
            let pipe = s.pipe(mss);
            let lost = s.lost_edge(mss);
            if let Some((seq, len)) = s.next_hole(s.high_rxt.max(s.una), lost, mss) {
                if pipe + len > s.cwnd {
                    return;
                }
                self.emit_segment(now, seq, len, out);
                self.snd.high_rxt = seq + len;
                continue;
            }
            let s = &mut self.snd;
            s.nxt = s.nxt.max(s.max);
            if s.nxt >= end {
                return;
            }
            let len = (end - s.nxt).min(mss);
            if pipe + len > s.cwnd || s.nxt - s.una + len > s.rwnd {
                return;
            }
            let seq = s.nxt;
            self.emit_segment(now, seq, len, out);
            let s = &mut self.snd;
            s.nxt = seq + len;
            s.max = s.nxt;
        }
    }

    fn send(&mut self, now: Duration, out: &mut Emit<'_>) {
        if self.cfg.sack && self.snd.recovery.is_some() {
            self.send_in_recovery(now, out);
        } else {
            self.send_what_fits(now, out);
        }
    }

    fn note_cwnd(&mut self) {
        self.stats.max_cwnd = self.stats.max_cwnd.max(self.snd.cwnd);
    }

    fn sample_rtt(&mut self, now: Duration, tsecr: u32) {
        if tsecr == 0 {
            return;
        }
        let micros = tsval(now).wrapping_sub(tsecr);
        if micros > 1 << 31 {
            return;
        }
        let r = Duration::from_micros(u64::from(micros));
        self.hystart(now, r);
        let s = &mut self.snd;
        match s.srtt {
            None => {
                s.srtt = Some(r);
                s.rttvar = r / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(r);
                s.rttvar = (s.rttvar * 3 + err) / 4;
                s.srtt = Some((srtt * 7 + r) / 8);
            }
        }
    }

    /// HyStart++'s delay increase test (RFC 9406 section 4.2), on each RTT sample in
    /// slow start.
    fn hystart(&mut self, now: Duration, rtt: Duration) {
        let mss = self.cfg.mss as u64;
        let s = &mut self.snd;
        if !self.cfg.hystart || s.cwnd >= s.ssthresh || s.recovery.is_some() {
            return;
        }
        if s.una >= s.round_end {
            s.round_end = s.max;
            s.last_round_min = s.round_min;
            s.round_min = None;
            s.round_samples = 0;
        }
        s.round_min = Some(s.round_min.map_or(rtt, |m| m.min(rtt)));
        s.round_samples += 1;
        let (Some(last), Some(current)) = (s.last_round_min, s.round_min) else {
            return;
        };
        let eta = (last / 8).clamp(Duration::from_millis(4), Duration::from_millis(16));
        if s.round_samples >= 8 && current >= last + eta && s.cwnd >= 16 * mss {
            s.ssthresh = s.cwnd;
            self.events
                .push((now, TcpEvent::SlowStartExit { cwnd: s.cwnd }));
        }
    }

    fn on_ack(&mut self, now: Duration, header: &TcpHeader, out: &mut Emit<'_>) {
        let mss = self.cfg.mss as u64;
        self.stats.acks_received += 1;
        let Some(ack) = unwrap(self.snd.una, ISN_DATA, header.ack) else {
            self.stats.misrouted += 1;
            return;
        };
        if ack > self.snd.max {
            self.stats.misrouted += 1;
            return;
        }
        self.snd.rwnd = u64::from(header.window) << WSCALE;
        if let Some((ts, _)) = header.timestamps {
            self.snd.ts_recent = ts;
        }
        let mut newly_sacked = 0;
        if self.cfg.sack {
            for &(left, right) in header.sack.blocks() {
                let edges =
                    unwrap(self.snd.una, ISN_DATA, left).zip(unwrap(self.snd.una, ISN_DATA, right));
                if let Some((left, right)) = edges.filter(|(l, r)| l < r) {
                    newly_sacked += self.snd.add_sack(left, right);
                }
            }
        }
        if ack > self.snd.una {
            let acked = ack - self.snd.una;
            self.snd.una = ack;
            self.snd.nxt = self.snd.nxt.max(ack);
            self.snd.high_rxt = self.snd.high_rxt.max(ack);
            self.snd.prune_sacked();
            if let Some((_, tsecr)) = header.timestamps {
                self.sample_rtt(now, tsecr);
            }
            self.snd.backoff = 0;
            self.snd.dupacks = 0;
            match self.snd.recovery {
                Some(point) if ack >= point => {
                    // Full acknowledgement: recovery is over.
                    self.snd.recovery = None;
                    if !self.cfg.sack {
                        // NewReno deflates what the duplicates inflated.
                        let flight = self.snd.nxt - self.snd.una;
                        self.snd.cwnd = self.snd.ssthresh.min(flight + mss).max(mss);
                    }
                }
                Some(_) if self.cfg.sack => {}
                Some(_) => {
                    // NewReno's partial acknowledgement: the next hole is lost too.
                    let una = self.snd.una;
                    let len = (self.end() - una).min(mss);
                    self.emit_segment(now, una, len, out);
                    self.snd.cwnd = self.snd.cwnd.saturating_sub(acked).max(mss);
                    if acked >= mss {
                        self.snd.cwnd += mss;
                    }
                    // RFC 6582's "impatient" variant: only the first partial
                    // acknowledgement restarts the timer, so that a window with many
                    // holes ends in a timeout and go-back-N rather than one hole per RTT.
                    if !self.snd.partial_acked {
                        self.snd.partial_acked = true;
                        self.snd.rto_at = Some(now + self.rto());
                    }
                }
                None if self.snd.cwnd < self.snd.ssthresh => {
                    // Slow start, counting bytes (the rest of a crossing into avoidance).
                    let room = self.snd.ssthresh - self.snd.cwnd;
                    self.snd.cwnd += acked.min(room);
                    self.snd.ca_acked += acked.saturating_sub(room);
                }
                None => self.snd.ca_acked += acked,
            }
            if self.snd.recovery.is_none() && self.snd.cwnd >= self.snd.ssthresh {
                if self.cfg.cubic {
                    let acked = std::mem::take(&mut self.snd.ca_acked);
                    self.cubic_growth(now, acked);
                } else {
                    while self.snd.ca_acked >= self.snd.cwnd {
                        self.snd.ca_acked -= self.snd.cwnd;
                        self.snd.cwnd += mss;
                    }
                }
            }
            self.note_cwnd();
            if self.snd.una >= self.snd.max {
                self.snd.rto_at = None;
            } else if self.cfg.sack || self.snd.recovery.is_none() {
                self.snd.rto_at = Some(now + self.rto());
            }
        } else if ack == self.snd.una
            && self.snd.una < self.snd.max
            && (!self.cfg.sack || newly_sacked > 0 || header.sack.is_empty())
        {
            self.stats.dup_acks_received += 1;
            self.snd.dupacks += 1;
            if self.snd.recovery.is_some() && !self.cfg.sack {
                self.snd.cwnd += mss; // inflation: one segment left the network
                self.note_cwnd();
            }
        }
        let s = &self.snd;
        let lost = self.cfg.sack && s.lost_edge(mss) > s.una;
        if s.recovery.is_none()
            && s.una < s.max
            && (s.dupacks >= 3 || lost)
            && s.recover.is_none_or(|r| s.una > r)
        {
            self.enter_recovery(now, out);
        }
        self.send(now, out);
    }

    fn enter_recovery(&mut self, now: Duration, out: &mut Emit<'_>) {
        let mss = self.cfg.mss as u64;
        let flight = self.snd.max - self.snd.una;
        let before = self.snd.cwnd;
        self.snd.ssthresh = self.reduced(flight);
        let s = &mut self.snd;
        s.recovery = Some(s.max);
        s.recover = Some(s.max);
        s.partial_acked = false;
        s.high_rxt = s.una;
        self.stats.fast_retransmits += 1;
        self.events.push((
            now,
            TcpEvent::FastRetransmit {
                cwnd: before,
                ssthresh: self.snd.ssthresh,
            },
        ));
        // The first hole goes at once, whatever the window.
        let s = &self.snd;
        let first = (s.una, (self.end() - s.una).min(mss));
        let (seq, len) = s.next_hole(s.una, s.max, mss).unwrap_or(first);
        self.emit_segment(now, seq, len, out);
        let s = &mut self.snd;
        s.high_rxt = seq + len;
        s.cwnd = if self.cfg.sack {
            s.ssthresh
        } else {
            s.ssthresh + 3 * mss
        };
        self.note_cwnd();
    }

    /// The slow-start threshold after a congestion event with `flight` bytes out: half
    /// of it for Reno; for CUBIC the window times beta, remembering the window it fell
    /// from (RFC 9438 section 4.6, with fast convergence).
    fn reduced(&mut self, flight: u64) -> u64 {
        let mss = self.cfg.mss as u64;
        if !self.cfg.cubic {
            return (flight / 2).max(2 * mss);
        }
        let s = &mut self.snd;
        let w = s.cwnd as f64 / mss as f64;
        s.cubic.w_max = if w < s.cubic.w_max {
            w * (1.0 + CUBIC_BETA) / 2.0
        } else {
            w
        };
        s.cubic.epoch = None;
        ((s.cwnd as f64 * CUBIC_BETA) as u64).max(2 * mss)
    }

    /// CUBIC's window growth in congestion avoidance for `acked` new bytes (RFC 9438
    /// section 4.2-4.4): toward the cubic curve's value one round trip ahead, at most
    /// half the window per round trip, never below the Reno-friendly estimate.
    fn cubic_growth(&mut self, now: Duration, acked: u64) {
        let mss = self.cfg.mss as f64;
        let s = &mut self.snd;
        let cwnd = s.cwnd as f64 / mss;
        let c = &mut s.cubic;
        let epoch = *c.epoch.get_or_insert_with(|| {
            // A slow-start exit with no loss behind it starts at the window's own level.
            if cwnd < c.w_max {
                c.k = ((c.w_max - cwnd) / CUBIC_C).cbrt();
                c.origin = c.w_max;
            } else {
                c.k = 0.0;
                c.origin = cwnd;
            }
            c.w_est = cwnd;
            now
        });
        let rtt = s.srtt.unwrap_or_default().as_secs_f64();
        let t = (now - epoch).as_secs_f64() + rtt;
        let cubic = CUBIC_C * (t - c.k).powi(3) + c.origin;
        let acked_segments = acked as f64 / mss;
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        c.w_est += alpha * acked_segments / cwnd;
        let mut growth = if cubic < c.w_est {
            (c.w_est - cwnd).max(0.0) * mss
        } else {
            let target = cubic.clamp(cwnd, 1.5 * cwnd);
            (target - cwnd) / cwnd * acked as f64
        };
        if c.w_max == 0.0 {
            // No loss yet (slow start ended on delay): the rate is still unknown, and
            // Linux grows the window by 5 % a round trip at least.
            growth = growth.max(acked as f64 / 20.0);
        }
        c.carry += growth;
        let whole = c.carry.floor();
        c.carry -= whole;
        s.cwnd += whole as u64;
    }

    fn on_rto(&mut self, now: Duration, out: &mut Emit<'_>) {
        let mss = self.cfg.mss as u64;
        self.stats.rto_count += 1;
        self.events.push((
            now,
            TcpEvent::Rto {
                backoff: self.snd.backoff,
                rto: self.rto(),
            },
        ));
        if self.snd.backoff == 0 {
            let flight = self.snd.nxt - self.snd.una;
            self.snd.ssthresh = self.reduced(flight);
            // Linux's CUBIC starts afresh after a timeout (bictcp_reset on entering the
            // loss state): the window it fell from is no longer a guide.
            self.snd.cubic = Cubic::default();
        }
        let s = &mut self.snd;
        s.cwnd = mss;
        s.ca_acked = 0;
        s.recovery = None;
        s.recover = Some(s.max);
        s.dupacks = 0;
        s.high_rxt = s.una;
        s.nxt = s.una; // go back N (skipping what was SACKed)
        s.backoff += 1;
        s.rto_at = None;
        self.send_what_fits(now, out);
        self.snd.rto_at = Some(now + self.rto());
    }

    fn send_ack(&mut self, now: Duration, out: &mut Emit<'_>) {
        let mut sack = SackBlocks::default();
        if self.cfg.sack && !self.rcv.ooo.is_empty() {
            // The block of the latest segment first (RFC 2018), then the highest ones.
            let r = &self.rcv;
            let latest = r
                .last_ooo
                .and_then(|seq| r.ooo.range(..=seq).next_back())
                .filter(|(_, e)| r.last_ooo.is_some_and(|seq| seq < **e))
                .map(|(&s, &e)| (s, e));
            let others = r
                .ooo
                .iter()
                .rev()
                .map(|(&s, &e)| (s, e))
                .filter(|b| Some(*b) != latest);
            for (s, e) in latest.into_iter().chain(others).take(3) {
                sack.push(
                    ISN_DATA.wrapping_add(s as u32),
                    ISN_DATA.wrapping_add(e as u32),
                );
            }
        }
        let header = TcpHeader {
            seq: ISN_ACKS,
            ack: ISN_DATA.wrapping_add(self.rcv.nxt as u32),
            flags: tcp_flags::ACK,
            window: (self.cfg.rwnd >> WSCALE).min(u64::from(u16::MAX)) as u16,
            timestamps: Some((tsval(now), self.rcv.ts_recent)),
            sack,
        };
        out.tcp(self.receiver_side(), &header, &[]);
        self.stats.acks_sent += 1;
        self.rcv.last_ack_sent = self.rcv.nxt;
        self.rcv.unacked = 0;
        self.rcv.delack_at = None;
    }

    fn on_segment(&mut self, now: Duration, header: &TcpHeader, len: usize, out: &mut Emit<'_>) {
        self.stats.segments_received += 1;
        let Some(seq) = unwrap(self.rcv.nxt, ISN_DATA, header.seq) else {
            self.stats.misrouted += 1;
            return;
        };
        let end = seq + len as u64;
        if let Some((ts, _)) = header.timestamps {
            // RFC 7323: remember the timestamp of the segment the next ACK acknowledges.
            if seq <= self.rcv.last_ack_sent && ts.wrapping_sub(self.rcv.ts_recent) as i32 >= 0 {
                self.rcv.ts_recent = ts;
            }
        }
        let r = &mut self.rcv;
        if end <= r.nxt {
            self.stats.dup_segments += 1;
            self.send_ack(now, out);
            return;
        }
        if seq > r.nxt {
            self.stats.ooo_segments += 1;
            r.last_ooo = Some(seq);
            let (mut s, mut e) = (seq, end);
            if let Some((&ps, &pe)) = r.ooo.range(..=s).next_back() {
                if pe >= s {
                    s = ps;
                    e = e.max(pe);
                    r.ooo.remove(&ps);
                }
            }
            while let Some((&ns, &ne)) = r.ooo.range(s..).next() {
                if ns > e {
                    break;
                }
                e = e.max(ne);
                r.ooo.remove(&ns);
            }
            r.ooo.insert(s, e);
            self.send_ack(now, out);
            return;
        }
        let before = r.nxt;
        let had_hole = !r.ooo.is_empty();
        r.nxt = end;
        while let Some((&s, &e)) = r.ooo.first_key_value() {
            if s > r.nxt {
                break;
            }
            r.nxt = r.nxt.max(e);
            r.ooo.pop_first();
        }
        let advanced = r.nxt - before;
        let still_hole = !r.ooo.is_empty();
        self.delivered.record(now, advanced);
        if self.size.is_some_and(|n| self.rcv.nxt >= n) && self.stats.completed_at.is_none() {
            self.stats.completed_at = Some(now);
        }
        self.rcv.unacked += 1;
        if had_hole || still_hole || self.rcv.unacked >= self.cfg.ack_every {
            self.send_ack(now, out);
        } else if self.rcv.delack_at.is_none() {
            self.rcv.delack_at = Some(now + self.cfg.delayed_ack);
        }
    }
}

impl Traffic for TcpFlow {
    fn proto(&self) -> Proto {
        Proto::Tcp
    }

    fn internet_port(&self) -> u16 {
        self.port
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let start = (!self.started).then_some(self.start);
        [start, self.snd.rto_at, self.rcv.delack_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Duration, out: &mut Emit<'_>) {
        if !self.started && now >= self.start {
            self.started = true;
            self.note_cwnd();
            self.send(now, out);
        }
        if self.rcv.delack_at.is_some_and(|t| t <= now) {
            self.send_ack(now, out);
        }
        if self.snd.rto_at.is_some_and(|t| t <= now) {
            self.on_rto(now, out);
        }
    }

    fn handle_packet(&mut self, now: Duration, at: Side, packet: &Parsed<'_>, out: &mut Emit<'_>) {
        let Some(header) = packet.tcp else {
            self.stats.misrouted += 1;
            return;
        };
        if at == self.from {
            if !packet.payload.is_empty() || header.flags & tcp_flags::ACK == 0 {
                self.stats.misrouted += 1;
                return;
            }
            self.on_ack(now, &header, out);
        } else {
            if packet.payload.is_empty() {
                self.stats.misrouted += 1;
                return;
            }
            self.on_segment(now, &header, packet.payload.len(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_around_the_reference() {
        assert_eq!(unwrap(0, 100, 100), Some(0));
        assert_eq!(unwrap(0, 100, 1400), Some(1300));
        assert_eq!(unwrap(1300, 100, 100), Some(0));
        assert_eq!(unwrap(0, 100, 99), None);
        let big = (1u64 << 32) + 5;
        assert_eq!(unwrap(big, 0, 10), Some(big + 5));
        assert_eq!(unwrap(big, 0, u32::MAX), Some((1 << 32) - 1));
    }
}
