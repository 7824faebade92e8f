//! The link model: what one direction of a link does to the datagrams (or Ethernet
//! frames) offered to it, as a pure function of the parameters, a seed and the times
//! passed in. No clock reads, no threads, no I/O: the testbed's threaded emulator and the
//! in-process simulator both ask a [`LinkModel`] for every decision.
//!
//! The model, per direction, in this order:
//!
//! 1. an outage (`up = false`) drops everything, and starting one also loses what is in
//!    flight;
//! 2. loss: a frame is dropped with probability `loss` (seeded SplitMix64 PRNG; one draw
//!    per frame, only while `loss > 0`);
//! 3. a serialising bottleneck at `rate_bps` with a tail-drop queue: a frame that would
//!    wait longer than `queue` behind the frames before it is dropped; otherwise it leaves
//!    the bottleneck when its last bit is serialised;
//! 4. delay ± jitter (uniform, one draw per frame while `jitter > 0`), never earlier than
//!    leaving the bottleneck and never earlier than the frame before it: frames do not
//!    reorder.
//!
//! Parameters have a text form shared by topology files and the testbed's `link` command:
//! `delay=20ms jitter=2ms loss=1% rate=20mbit queue=100ms down`.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// What an emulated link does to the frames of one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within `delay ± jitter` (never below zero).
    /// Frames are never reordered: a frame leaves no earlier than the one before it.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a frame is dropped.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// How much backlog the bottleneck queue holds, as time at `rate_bps`, before it drops
    /// arriving frames (tail drop). Ignored without a rate.
    pub queue: Duration,
    /// `false` is an outage: every frame is dropped, including those in flight.
    pub up: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue: Duration::from_millis(100),
            up: true,
        }
    }
}

/// The parameters of both directions of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkSpec {
    /// From the node (router, proxy, internet host) towards the core or the mesh.
    pub upstream: LinkParams,
    /// Towards the node.
    pub downstream: LinkParams,
}

impl LinkSpec {
    /// The same parameters both ways.
    pub fn both(params: LinkParams) -> LinkSpec {
        LinkSpec {
            upstream: params,
            downstream: params,
        }
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.upstream == self.downstream {
            write!(f, "{}", self.upstream)
        } else {
            write!(
                f,
                "upstream {} / downstream {}",
                self.upstream, self.downstream
            )
        }
    }
}

impl LinkParams {
    /// Applies `key=value` settings (and the bare words `up`/`down`) to `self`.
    ///
    /// Keys: `delay`, `jitter`, `queue` (durations such as `20ms`, `1.5ms`, `300us`, `1s`),
    /// `loss` (`1%` or `0.01`), `rate` (`20mbit`, `512kbit`, `1gbit`, `100000bit`, or
    /// `0`/`unlimited`).
    pub fn apply<'a>(&mut self, settings: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        for setting in settings {
            match setting {
                "up" => self.up = true,
                "down" => self.up = false,
                _ => {
                    let (key, value) = setting.split_once('=').ok_or_else(|| {
                        format!("`{setting}`: expected key=value, `up` or `down`")
                    })?;
                    self.set(key, value)?;
                }
            }
        }
        Ok(())
    }

    /// Sets one parameter from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bad = |why: String| format!("`{key}`: {why}");
        match key {
            "delay" => self.delay = parse_duration(value).map_err(bad)?,
            "jitter" => self.jitter = parse_duration(value).map_err(bad)?,
            "queue" => self.queue = parse_duration(value).map_err(bad)?,
            "loss" => self.loss = parse_loss(value).map_err(bad)?,
            "rate" => self.rate_bps = parse_rate(value).map_err(bad)?,
            _ => {
                return Err(format!(
                    "unknown link parameter `{key}` (known: delay, jitter, loss, rate, queue, up, down)"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for LinkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={} jitter={} loss={}% rate={} queue={} {}",
            format_duration(self.delay),
            format_duration(self.jitter),
            self.loss * 100.0,
            match self.rate_bps {
                None => "unlimited".to_string(),
                Some(bps) => format_rate(bps),
            },
            format_duration(self.queue),
            if self.up { "up" } else { "down" }
        )
    }
}

/// Parses `20ms`, `1.5ms`, `300us`, `2s`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use us, ms or s)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by a unit"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use us, ms or s)")),
    };
    let seconds = number * scale;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 3600 s)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `1%`, `0.5%` or a fraction such as `0.01`.
pub fn parse_loss(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a loss rate (e.g. 1% or 0.01)"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{text}` is not between 0% and 100%"));
    }
    Ok(value)
}

/// Parses a rate in tc's units (`kbit`, `mbit`, `gbit`, `bit`); `0`, `unlimited` and `none`
/// mean no limit.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if matches!(text, "0" | "unlimited" | "none") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use bit, kbit, mbit or gbit)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by a unit"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use bit, kbit, mbit or gbit)"
            ));
        }
    };
    let bps = number * scale;
    if !(1000.0..=100e9).contains(&bps) {
        return Err(format!("`{text}` is out of range (1kbit to 100gbit)"));
    }
    Ok(Some(bps as u64))
}

fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn format_rate(bps: u64) -> String {
    if bps % 1_000_000 == 0 {
        format!("{}mbit", bps / 1_000_000)
    } else if bps % 1000 == 0 {
        format!("{}kbit", bps / 1000)
    } else {
        format!("{bps}bit")
    }
}

/// A direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the member's side towards the core: in the testbed from a link's A end (the
    /// node: router, proxy, internet host) to its B end; in the simulator from the
    /// gateway to the proxy.
    Upstream = 0,
    /// The other way: towards the node, or from the proxy to the gateway.
    Downstream = 1,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Upstream, Direction::Downstream];

    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Upstream => Direction::Downstream,
            Direction::Downstream => Direction::Upstream,
        }
    }
}

/// A small, fast, seedable PRNG (Steele et al.'s SplitMix64); good enough for loss and
/// jitter, and the same sequence on every platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Why the model dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The loss draw.
    Loss,
    /// The bottleneck queue was full (tail drop), or the caller had no room.
    Queue,
    /// The link is down.
    Outage,
}

/// What the model decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The frame arrives at the far end at this time (never earlier than the frame
    /// before it).
    Deliver(Instant),
    /// The frame is lost.
    Dropped(DropReason),
}

/// Counters of one [`LinkModel`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames offered.
    pub offered: u64,
    /// Bytes of the frames offered (as passed to [`LinkModel::offer`]).
    pub offered_bytes: u64,
    /// Frames given a due time ([`Verdict::Deliver`]).
    pub accepted: u64,
    /// Their bytes.
    pub accepted_bytes: u64,
    /// Frames dropped by the loss draw.
    pub dropped_loss: u64,
    /// Frames dropped because the bottleneck queue was full.
    pub dropped_queue: u64,
    /// Frames dropped because the link was down when they were offered.
    pub dropped_outage: u64,
    /// Accepted frames that were still in flight (due later than the change) when an
    /// outage started: lost too.
    pub lost_in_flight: u64,
}

/// One direction of a link, as a pure model: time is always an argument.
///
/// ```
/// use std::time::{Duration, Instant};
/// use linkpool_sim::link::{LinkModel, LinkParams, Verdict};
///
/// let t0 = Instant::now();
/// let params = LinkParams { delay: Duration::from_millis(20), rate_bps: Some(8_000_000), ..Default::default() };
/// let mut link = LinkModel::new(params, 1);
/// // 1000 bytes at 8 Mbit/s take 1 ms to serialise, then 20 ms of delay.
/// assert_eq!(link.offer(t0, 1000), Verdict::Deliver(t0 + Duration::from_millis(21)));
/// assert_eq!(link.offer(t0, 1000), Verdict::Deliver(t0 + Duration::from_millis(22)));
/// ```
#[derive(Clone, Debug)]
pub struct LinkModel {
    params: LinkParams,
    rng: SplitMix64,
    /// When the bottleneck finishes serialising what it holds (`None`: never used).
    wire_free_at: Option<Instant>,
    /// Due time of the newest frame (frames never overtake each other).
    last_due: Option<Instant>,
    /// Due times of the accepted frames that may still be in flight, oldest first
    /// (non-decreasing, since frames do not reorder).
    in_flight: VecDeque<Instant>,
    counters: LinkCounters,
}

impl LinkModel {
    /// A link with these parameters; `seed` makes loss and jitter reproducible.
    pub fn new(params: LinkParams, seed: u64) -> LinkModel {
        LinkModel {
            params,
            rng: SplitMix64(seed),
            wire_free_at: None,
            last_due: None,
            in_flight: VecDeque::new(),
            counters: LinkCounters::default(),
        }
    }

    /// Makes room for `n` datagrams in flight at once, so that offering up to that many
    /// allocates nothing (a harness that checks the data path's allocations needs that).
    pub fn reserve(&mut self, n: usize) {
        self.in_flight
            .reserve(n.saturating_sub(self.in_flight.len()));
    }

    /// The current parameters.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// The counters so far.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Changes the parameters at `now`. Parameters that leave the link down start (or
    /// continue) an outage: what is in flight (due after `now`) is lost, and the
    /// bottleneck is empty afterwards. Returns how many frames were lost that way.
    /// Other changes apply to the frames offered from now on; frames already accepted
    /// keep their due times.
    pub fn set_params(&mut self, now: Instant, params: LinkParams) -> u64 {
        self.params = params;
        if params.up {
            return 0;
        }
        let delivered = self.in_flight.partition_point(|&due| due <= now);
        let lost = (self.in_flight.len() - delivered) as u64;
        self.counters.lost_in_flight += lost;
        self.in_flight.clear();
        self.wire_free_at = Some(now);
        self.last_due = Some(now);
        lost
    }

    /// How many accepted frames are still in flight at `now` (due after it).
    pub fn in_flight(&self, now: Instant) -> usize {
        self.in_flight.len() - self.in_flight.partition_point(|&due| due <= now)
    }

    /// How long a frame offered at `now` would wait in the bottleneck queue before its
    /// serialisation starts (zero without a rate).
    pub fn backlog(&self, now: Instant) -> Duration {
        match (self.params.rate_bps, self.wire_free_at) {
            (Some(_), Some(free)) => free.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    /// Decides the fate of a frame of `len` bytes offered at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        self.offer_if(now, len, true)
    }

    /// Like [`offer`](Self::offer), for a caller with its own bound on frames in flight:
    /// when `room` is false, a frame that passed the loss draw is dropped as
    /// [`DropReason::Queue`] without occupying the bottleneck (the emulator's memory
    /// bound).
    pub fn offer_if(&mut self, now: Instant, len: usize, room: bool) -> Verdict {
        let verdict = self.decide(now, len, room);
        let c = &mut self.counters;
        c.offered += 1;
        c.offered_bytes += len as u64;
        match verdict {
            Verdict::Deliver(due) => {
                c.accepted += 1;
                c.accepted_bytes += len as u64;
                while self.in_flight.front().is_some_and(|&d| d <= now) {
                    self.in_flight.pop_front();
                }
                self.in_flight.push_back(due);
            }
            Verdict::Dropped(DropReason::Loss) => c.dropped_loss += 1,
            Verdict::Dropped(DropReason::Queue) => c.dropped_queue += 1,
            Verdict::Dropped(DropReason::Outage) => c.dropped_outage += 1,
        }
        verdict
    }

    fn decide(&mut self, arrival: Instant, len: usize, room: bool) -> Verdict {
        let p = self.params;
        if !p.up {
            return Verdict::Dropped(DropReason::Outage);
        }
        if p.loss > 0.0 && self.rng.next_f64() < p.loss {
            return Verdict::Dropped(DropReason::Loss);
        }
        if !room {
            return Verdict::Dropped(DropReason::Queue);
        }
        let mut leaves_bottleneck = arrival;
        if let Some(rate) = p.rate_bps {
            let start = self.wire_free_at.map_or(arrival, |free| free.max(arrival));
            if start.duration_since(arrival) > p.queue {
                return Verdict::Dropped(DropReason::Queue);
            }
            let bits = len as u128 * 8;
            let serialise = Duration::from_nanos((bits * 1_000_000_000 / rate as u128) as u64);
            let free = start + serialise;
            self.wire_free_at = Some(free);
            leaves_bottleneck = free;
        }
        let mut due = leaves_bottleneck + p.delay;
        if !p.jitter.is_zero() {
            let offset = p.jitter.as_secs_f64() * (2.0 * self.rng.next_f64() - 1.0);
            due = if offset >= 0.0 {
                due + Duration::from_secs_f64(offset)
            } else {
                due.checked_sub(Duration::from_secs_f64(-offset))
                    .unwrap_or(leaves_bottleneck)
                    .max(leaves_bottleneck)
            };
        }
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        Verdict::Deliver(due)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings() {
        let mut p = LinkParams::default();
        p.apply([
            "delay=20ms",
            "jitter=1.5ms",
            "loss=10%",
            "rate=20mbit",
            "down",
        ])
        .unwrap();
        assert_eq!(p.delay, Duration::from_millis(20));
        assert_eq!(p.jitter, Duration::from_micros(1500));
        assert!((p.loss - 0.1).abs() < 1e-12);
        assert_eq!(p.rate_bps, Some(20_000_000));
        assert!(!p.up);
        p.apply(["up", "rate=unlimited", "loss=0.5"]).unwrap();
        assert!(p.up);
        assert_eq!(p.rate_bps, None);
        assert_eq!(p.loss, 0.5);
        assert_eq!(
            p.to_string(),
            "delay=20ms jitter=1500us loss=50% rate=unlimited queue=100ms up"
        );
    }

    #[test]
    fn rejects_bad_settings_with_reason() {
        let mut p = LinkParams::default();
        let err = p.apply(["delay=20"]).unwrap_err();
        assert!(err.contains("delay") && err.contains("no unit"), "{err}");
        let err = p.apply(["loss=150%"]).unwrap_err();
        assert!(err.contains("between"), "{err}");
        let err = p.apply(["rate=20mbps"]).unwrap_err();
        assert!(err.contains("unknown unit"), "{err}");
        let err = p.apply(["colour=blue"]).unwrap_err();
        assert!(err.contains("unknown link parameter"), "{err}");
        let err = p.apply(["sideways"]).unwrap_err();
        assert!(err.contains("key=value"), "{err}");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn due(v: Verdict) -> Instant {
        match v {
            Verdict::Deliver(due) => due,
            Verdict::Dropped(why) => panic!("dropped: {why:?}"),
        }
    }

    #[test]
    fn prng_is_uniform_enough() {
        let mut rng = SplitMix64(7);
        let n = 100_000;
        let below = (0..n).filter(|_| rng.next_f64() < 0.1).count();
        assert!((9_500..10_500).contains(&below), "{below}");
    }

    #[test]
    fn rate_serialises_frames_back_to_back() {
        let t0 = Instant::now();
        // 1500 bytes at 12 Mbit/s: 1 ms each.
        let p = LinkParams {
            delay: ms(10),
            rate_bps: Some(12_000_000),
            ..Default::default()
        };
        let mut link = LinkModel::new(p, 1);
        for k in 0..5 {
            assert_eq!(due(link.offer(t0, 1500)), t0 + ms(11 + k));
        }
        assert_eq!(link.backlog(t0), ms(5));
        assert_eq!(link.backlog(t0 + ms(2)), ms(3));
        // An idle bottleneck serialises a frame from its arrival.
        assert_eq!(due(link.offer(t0 + ms(100), 1500)), t0 + ms(111));
        // Small frames take proportionally less: 150 bytes, 100 µs.
        assert_eq!(
            due(link.offer(t0 + ms(200), 150)),
            t0 + ms(210) + Duration::from_micros(100)
        );
        // Without a rate, only the delay.
        link.set_params(
            t0 + ms(300),
            LinkParams {
                delay: ms(10),
                ..Default::default()
            },
        );
        assert_eq!(due(link.offer(t0 + ms(300), 65535)), t0 + ms(310));
        assert_eq!(link.counters().accepted, 8);
    }

    #[test]
    fn tail_drop_at_the_queue_limit() {
        let t0 = Instant::now();
        // 1000 bytes at 8 Mbit/s: 1 ms each; the queue holds 10 ms.
        let p = LinkParams {
            rate_bps: Some(8_000_000),
            queue: ms(10),
            ..Default::default()
        };
        let mut link = LinkModel::new(p, 1);
        let verdicts: Vec<Verdict> = (0..20).map(|_| link.offer(t0, 1000)).collect();
        // Frame k would start serialising after k ms of waiting: 0..=10 ms fit.
        for (k, v) in verdicts.iter().enumerate() {
            if k <= 10 {
                assert_eq!(*v, Verdict::Deliver(t0 + ms(k as u64 + 1)), "frame {k}");
            } else {
                assert_eq!(*v, Verdict::Dropped(DropReason::Queue), "frame {k}");
            }
        }
        let c = link.counters();
        assert_eq!((c.offered, c.accepted, c.dropped_queue), (20, 11, 9));
        // Once the queue drained by 1 ms, one more fits.
        assert_eq!(due(link.offer(t0 + ms(1), 1000)), t0 + ms(12));
        assert_eq!(
            link.offer(t0 + ms(1), 1000),
            Verdict::Dropped(DropReason::Queue)
        );
        // The caller's own bound counts as a full queue and leaves the bottleneck alone.
        assert_eq!(
            link.offer_if(t0 + ms(50), 1000, false),
            Verdict::Dropped(DropReason::Queue)
        );
        assert_eq!(due(link.offer(t0 + ms(50), 1000)), t0 + ms(51));
    }

    #[test]
    fn jitter_spreads_delay_but_never_reorders() {
        let t0 = Instant::now();
        let p = LinkParams {
            delay: ms(20),
            jitter: ms(10),
            ..Default::default()
        };
        // Frames far apart see the whole spread, uniformly.
        let mut link = LinkModel::new(p, 42);
        let delays: Vec<Duration> = (0..2000u32)
            .map(|k| {
                let at = t0 + ms(50) * k;
                due(link.offer(at, 100)) - at
            })
            .collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= ms(10) && min < ms(11), "min delay {min:?}");
        assert!(max <= ms(30) && max > ms(29), "max delay {max:?}");
        let below_20 = delays.iter().filter(|d| **d < ms(20)).count();
        assert!(
            (900..1100).contains(&below_20),
            "{below_20} of 2000 below 20 ms"
        );
        // Frames 0.1 ms apart: never overtaking, so mostly held back by their predecessor.
        let mut link = LinkModel::new(p, 42);
        let mut last = t0;
        let mut held = 0;
        for k in 0..10_000u32 {
            let at = t0 + Duration::from_micros(100) * k;
            let d = due(link.offer(at, 100));
            assert!(d >= last, "frame {k} overtook the one before it");
            assert!(d - at <= ms(30), "frame {k} delayed beyond delay + jitter");
            if d == last {
                held += 1;
            }
            last = d;
        }
        assert!(held > 5_000, "{held} frames held back");
    }

    #[test]
    fn loss_fraction_follows_the_seed() {
        let t0 = Instant::now();
        let p = LinkParams {
            loss: 0.1,
            ..Default::default()
        };
        let mut link = LinkModel::new(p, 7);
        for _ in 0..100_000 {
            link.offer(t0, 100);
        }
        let c = *link.counters();
        assert!((9_500..10_500).contains(&c.dropped_loss), "{c:?}");
        assert_eq!(c.accepted + c.dropped_loss, 100_000);
        // No loss configured: no draw and no drop.
        let mut clean = LinkModel::new(LinkParams::default(), 7);
        assert!((0..1000).all(|_| clean.offer(t0, 100) == Verdict::Deliver(t0)));
    }

    #[test]
    fn outage_drops_what_is_in_flight() {
        let t0 = Instant::now();
        let p = LinkParams {
            delay: ms(20),
            rate_bps: Some(8_000_000),
            ..Default::default()
        };
        let mut link = LinkModel::new(p, 1);
        // 1000 bytes, 1 ms each, sent at 0..10 ms: due at 21..30 ms.
        for k in 0..10 {
            assert_eq!(due(link.offer(t0 + ms(k), 1000)), t0 + ms(21 + k));
        }
        // Plus a backlog: 5 more at 10 ms, due 31..35 ms.
        for _ in 0..5 {
            link.offer(t0 + ms(10), 1000);
        }
        assert_eq!(link.in_flight(t0 + ms(25)), 10);
        let lost = link.set_params(t0 + ms(25), LinkParams { up: false, ..p });
        // Due at 21..=25 ms had arrived; 26..35 ms are lost.
        assert_eq!(lost, 10);
        assert_eq!(link.in_flight(t0 + ms(25)), 0);
        assert_eq!(
            link.offer(t0 + ms(26), 1000),
            Verdict::Dropped(DropReason::Outage)
        );
        // Back up: the bottleneck starts empty, the delay is as before.
        assert_eq!(link.set_params(t0 + ms(40), p), 0);
        assert_eq!(due(link.offer(t0 + ms(40), 1000)), t0 + ms(61));
        let c = link.counters();
        assert_eq!(
            (c.lost_in_flight, c.dropped_outage, c.accepted),
            (10, 1, 16)
        );
    }

    #[test]
    fn same_seed_same_verdicts() {
        let t0 = Instant::now();
        let p = LinkParams {
            delay: ms(5),
            jitter: ms(3),
            loss: 0.2,
            rate_bps: Some(10_000_000),
            queue: ms(5),
            up: true,
        };
        let run = |seed| {
            let mut link = LinkModel::new(p, seed);
            (0..5000u32)
                .map(|k| link.offer(t0 + Duration::from_micros(500) * k, 1200 + (k as usize % 7)))
                .collect::<Vec<_>>()
        };
        let a = run(9);
        assert_eq!(a, run(9));
        assert_ne!(a, run(10));
        let dropped =
            |v: &[Verdict], why| v.iter().filter(|x| **x == Verdict::Dropped(why)).count();
        assert!(dropped(&a, DropReason::Loss) > 800);
        assert!(dropped(&a, DropReason::Queue) > 0);
    }
}
