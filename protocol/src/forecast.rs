//! How much of a metered uplink's allowance will be left at the end of its billing period,
//! so that neighbours borrow only that surplus.
//!
//! An owner may mark an uplink as metered: an allowance in bytes per billing period, a
//! billing day on which the period resets, and a threshold below which the owner's own
//! traffic moves off the line. The [`Forecaster`] learns the owner's own usage and, at any
//! time, forecasts what the owner will still use until the period ends. What the
//! allowance leaves beyond that (less a safety margin that grows with the forecaster's
//! measured error, and less the owner's threshold) is the surplus, offered to neighbours
//! as a rate spread over the rest of the period.
//!
//! Sans-IO: the shell feeds byte counts with the time (unix seconds and the UTC offset in
//! force), asks for a [`Forecast`], and writes [`Forecaster::to_bytes`] to flash when
//! [`Forecaster::persist_due`] says so. Nothing allocates except `to_bytes`.
//!
//! What is learned:
//!
//! * per hour of the week (168 buckets, local time, Monday 00:00 first): the owner's usage
//!   in that hour. Weekday evenings and weekend afternoons are separate buckets, so the
//!   pattern of a week is captured whatever its shape.
//! * per day of the billing period (up to 31): how far that day's usage departed from what
//!   the hour-of-week profile said, in the last [`DAY_RATIO_PERIODS`] periods, so that a
//!   monthly event (a backup on the first of the period) is foreseen.
//!
//! Only watched hours are learned. A [`Forecaster::record`] says the line was watched
//! since the previous call; [`Forecaster::resume`] (after a restart) and any interval
//! longer than [`MAX_WATCHED_INTERVAL_S`] say it was not, and those hours stay unknown
//! rather than being learned as hours without use. An hour watched for less than
//! [`MIN_WATCHED_S`] is not learned either. Unknown buckets are forecast from the busiest
//! learned bucket at the same hour of the day: guessing high costs only some sharing.

use std::fmt;

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

/// Hours in a week: one learned bucket each.
pub const WEEK_HOURS: usize = 168;
/// Longest billing period, in days.
pub const MAX_PERIOD_DAYS: usize = 31;
/// A [`Forecaster::record`] covering more than this since the previous call is taken as a
/// gap (router off, shell stopped), not as watched time: a day without calls must not be
/// learned as a day without use. Any rhythm up to this is watched; bytes of a call are
/// spread evenly over its interval, so a rhythm of an hour or less keeps hours apart.
pub const MAX_WATCHED_INTERVAL_S: u64 = 6 * 3600;
/// An hour is learned only if watched at least this long (its bytes then scaled to the
/// whole hour): the ten minutes after a boot say little about their hour.
pub const MIN_WATCHED_S: u32 = 45 * 60;
/// Learned hours needed before anything is offered: a week's worth.
pub const CONFIDENT_HOURS: u32 = WEEK_HOURS as u32;
/// Hour-of-week buckets that must have been learned before anything is offered. Not all
/// of them: a router switched off every Sunday would otherwise never offer anything; its
/// unknown buckets are forecast high instead (see [`Forecaster::forecast`]).
pub const CONFIDENT_BUCKETS: usize = WEEK_HOURS * 3 / 4;
/// Completed periods whose per-day ratios are kept; their median is used once all are
/// known, so a one-off day (a holiday) never moves a later period, while a monthly event
/// seen in two periods of three does.
pub const DAY_RATIO_PERIODS: usize = 3;
/// How often the state is worth writing to flash (also written at each period rollover).
///
/// The state is about 2.3 KB. Four writes a day is about 1,500 a year: nothing for the
/// wear-levelled overlay (UBIFS/JFFS2) of an OpenWrt router, whose erase blocks last
/// 10⁴–10⁵ cycles each. A power loss costs at most this much of learning and of the
/// period's usage count (the shell can report what the line's own counter says through
/// [`Forecaster::resume`]).
pub const PERSIST_INTERVAL_S: u64 = 6 * 3600;
/// Version byte of [`Forecaster::to_bytes`].
pub const STATE_VERSION: u8 = 1;
/// Length of [`Forecaster::to_bytes`] for [`STATE_VERSION`].
pub const STATE_LEN: usize = 4 // magic
    + 1 // version
    + 8 + 1 + 8 // line
    + 8 + 4 + 8 + 8 + 4 // watching: last call, offset, open hour, its bytes and seconds
    + 8 + 8 + 8 + 8 + 8 + 8 + 4 // period, used, lent, predicted, actual, error hours
    + 1 + 8 // previous period's error
    + 4 // learned hours
    + WEEK_HOURS * (8 + 1)
    + MAX_PERIOD_DAYS * DAY_RATIO_PERIODS * 2
    + MAX_PERIOD_DAYS * (8 + 8 + 1)
    + 4; // CRC-32

const MAGIC: [u8; 4] = *b"LPfc";
const HOUR_S: i64 = 3600;
const DAY_S: i64 = 86_400;
/// Once a bucket has this many samples, one more weighs 1/4: a month of weeks.
const SMOOTHING_WEEKS: u64 = 4;
/// The least a sample may pull a bucket up beyond twice its estimate (bytes): a bucket
/// learned as empty must still be able to learn use.
const MIN_STEP_FLOOR: u64 = 1_000_000;
/// A day of the period gives a ratio only if this many of its hours were learned.
const MIN_DAY_HOURS: u8 = 20;
const PER_MILLE: u64 = 1000;
/// Ratios are kept in per mille within these bounds; 0 means unknown.
const RATIO_MIN: u16 = 100;
const RATIO_MAX: u16 = 10_000;
/// A day ratio never lowers a day's forecast below half its profile: lowering is the
/// direction that costs the owner money.
const FACTOR_MIN_APPLIED: u64 = 500;
/// The current period's error counts once this many hours were compared.
const MIN_ERROR_HOURS: u32 = 24;
/// The error assumed while none has been measured yet (for the margin only).
const UNKNOWN_ERROR: f64 = 0.5;
/// Keeps a nonsense error (a profile of zeros) finite.
const MAX_ERROR: f64 = 1000.0;
/// The margin: this share of the expected use, plus `MARGIN_PER_ERROR` times the error.
const MARGIN_BASE: f64 = 0.10;
const MARGIN_PER_ERROR: f64 = 2.0;
/// Kept back from every allowance: the carrier counts headers and retransmissions the
/// shell may not see.
const COUNTING_RESERVE_PER_MILLE: u64 = 20;
/// Times past this (year ~36,800) are clamped, so no arithmetic can overflow.
const MAX_UNIX: u64 = 1 << 40;
const MAX_OFFSET_S: i64 = 24 * 3600;

/// Why a metered line was refused or a stored state could not be restored. For a state,
/// any of these means the shell starts a fresh [`Forecaster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForecastError {
    /// Configuration: the billing day is not 1..=31.
    BadBillingDay(u8),
    /// The state is shorter than its format (the write was cut, e.g. by a power loss).
    Truncated {
        /// Bytes found.
        len: usize,
        /// Bytes the format has.
        expected: usize,
    },
    /// The state is longer than its format: not written by this code.
    TrailingBytes {
        /// Bytes found.
        len: usize,
        /// Bytes the format has.
        expected: usize,
    },
    /// The bytes do not start with the state's magic: not a forecaster state.
    NotAState,
    /// A state of a version this build does not read.
    UnsupportedVersion(u8),
    /// The checksum does not match: the flash returned altered bytes.
    ChecksumMismatch {
        /// The checksum stored at the end.
        stored: u32,
        /// The checksum of what it covers.
        computed: u32,
    },
    /// An intact state with a value out of range: written by a faulty build.
    BadField(&'static str),
}

impl fmt::Display for ForecastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForecastError::BadBillingDay(day) => {
                write!(f, "billing day {day} is not a day of the month (1..=31)")
            }
            ForecastError::Truncated { len, expected } => write!(
                f,
                "forecast state cut short: {len} of {expected} bytes (write interrupted?)"
            ),
            ForecastError::TrailingBytes { len, expected } => write!(
                f,
                "forecast state too long: {len} bytes, the format has {expected}"
            ),
            ForecastError::NotAState => f.write_str("not a forecast state (wrong magic)"),
            ForecastError::UnsupportedVersion(v) => write!(
                f,
                "forecast state version {v} is not supported (this build reads {STATE_VERSION})"
            ),
            ForecastError::ChecksumMismatch { stored, computed } => write!(
                f,
                "forecast state corrupt: checksum {stored:08x} stored, {computed:08x} computed"
            ),
            ForecastError::BadField(field) => {
                write!(f, "forecast state intact but `{field}` is out of range")
            }
        }
    }
}

impl std::error::Error for ForecastError {}

/// An uplink the owner pays per byte: what the carrier allows per period, when the period
/// resets, and how much the owner keeps for themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeteredLine {
    allowance: u64,
    billing_day: u8,
    threshold: u64,
}

impl MeteredLine {
    /// A line with `allowance` bytes per period, starting at local midnight of
    /// `billing_day` every month. A billing day past the end of a short month starts the
    /// period on that month's last day (31 → 28 February, 30 April), as carriers do.
    /// When less than `threshold` bytes remain, the owner's own traffic should move off the
    /// line; nothing of the threshold is ever lent.
    pub fn new(allowance: u64, billing_day: u8, threshold: u64) -> Result<Self, ForecastError> {
        if !(1..=31).contains(&billing_day) {
            return Err(ForecastError::BadBillingDay(billing_day));
        }
        Ok(MeteredLine {
            allowance,
            billing_day,
            threshold,
        })
    }

    /// Bytes per billing period.
    pub fn allowance(&self) -> u64 {
        self.allowance
    }

    /// The day of the month (1..=31) the period starts on.
    pub fn billing_day(&self) -> u8 {
        self.billing_day
    }

    /// Remaining bytes below which the owner's traffic should leave the line.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The billing period holding `unix_s`: its start and end in unix seconds (local
    /// midnights under `utc_offset_s`).
    pub fn period(&self, unix_s: u64, utc_offset_s: i32) -> (u64, u64) {
        let off = offset(utc_offset_s);
        let p = Period::containing(local_day(clamp_unix(unix_s) + off), self.billing_day);
        (p.start_unix(off), p.end_unix(off))
    }
}

/// What the forecaster says at one moment about the current billing period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Start of the period (unix seconds, local midnight of the billing day).
    pub period_start: u64,
    /// End of the period, the next one's start (unix seconds).
    pub period_end: u64,
    /// Bytes used on the line this period: the owner's and those lent.
    pub used: u64,
    /// Of `used`, bytes neighbours carried ([`Forecaster::record_lent`]).
    pub lent: u64,
    /// `allowance − used`, 0 once the allowance is spent.
    pub remaining: u64,
    /// Bytes the owner is expected to use from now to the period's end.
    pub expected_more: u64,
    /// Held back for forecast error: 10 % of `expected_more` plus twice the error times
    /// it, plus 2 % of the allowance for what the carrier counts and the shell does not.
    pub margin: u64,
    /// What may still be lent: `remaining − expected_more − margin − threshold`, and 0
    /// unless `confident`.
    pub surplus: u64,
    /// `surplus` spread over the seconds left in the period, to offer in hellos.
    pub offer_bytes_per_s: u64,
    /// Relative error of the forecast so far: |actual − predicted| / predicted over the
    /// learned hours of this period (of the last one until a day has been compared).
    /// `None` before anything could be compared.
    pub error: Option<f64>,
    /// Whether enough was learned to offer anything ([`CONFIDENT_HOURS`],
    /// [`CONFIDENT_BUCKETS`]).
    pub confident: bool,
}

/// One hour of the week as learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Bytes in this hour, robustly smoothed over weeks.
    estimate: u64,
    /// Hours learned into it (saturating): 0 means unknown.
    samples: u8,
}

/// A billing period as local day numbers (days since 1970-01-01, local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    start_day: i64,
    end_day: i64,
}

impl Period {
    fn containing(day: i64, billing_day: u8) -> Period {
        let (y, m, d) = civil_from_days(day);
        let start_day = if d >= start_in_month(y, m, billing_day) {
            days_from_civil(y, m, start_in_month(y, m, billing_day))
        } else {
            let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
            days_from_civil(py, pm, start_in_month(py, pm, billing_day))
        };
        Period::starting(start_day, billing_day)
    }

    fn starting(start_day: i64, billing_day: u8) -> Period {
        let (y, m, _) = civil_from_days(start_day);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Period {
            start_day,
            end_day: days_from_civil(ny, nm, start_in_month(ny, nm, billing_day)),
        }
    }

    fn start_unix(&self, off: i64) -> u64 {
        (self.start_day * DAY_S - off).max(0) as u64
    }

    fn end_unix(&self, off: i64) -> u64 {
        (self.end_day * DAY_S - off).max(0) as u64
    }
}

/// The day of month `billing_day` starts a period in year `y`, month `m`: clamped to the
/// month's last day.
fn start_in_month(y: i64, m: u32, billing_day: u8) -> u32 {
    u32::from(billing_day).min(days_in_month(y, m))
}

/// Learns an owner's usage of a metered line and forecasts the period's surplus.
///
/// The estimator, per hour-of-week bucket, is an exponentially weighted mean whose
/// samples are first clamped to [estimate / 2, 2 × estimate + a floor], with the weight of
/// one sample 1/n for the first samples and then 1/4. The mean, not a median: hourly use
/// is bursty, and the sum of the remaining hours (what is forecast) is a sum of means. The
/// clamp bounds what one week can do: a week at 10 % lowers a bucket by at most 12.5 %,
/// a week at 3× raises it by at most about 25 % (plus a quarter of the floor), and a
/// lasting change is still followed within a few weeks. Bursts the clamp cuts off show up
/// as measured error, which widens the margin.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecaster {
    line: MeteredLine,
    profile: [Bucket; WEEK_HOURS],
    /// Hours learned into the profile, ever.
    learned_hours: u32,
    /// Per day of the period: actual / profile of the last periods, per mille, newest
    /// first, 0 where unknown.
    day_ratios: [[u16; DAY_RATIO_PERIODS]; MAX_PERIOD_DAYS],

    /// Time of the last `record` or `resume`: where the next watched interval starts.
    last_unix: i64,
    /// False after [`Forecaster::from_bytes`] until the next call: the time since the
    /// state was written was not watched, whether or not the shell says so.
    watching: bool,
    last_offset: i64,
    /// The local hour (hours since 1970-01-01 local) bytes are being gathered for.
    open_hour: i64,
    open_bytes: u64,
    open_watched_s: u32,

    period: Period,
    /// All bytes on the line this period, the owner's and lent.
    used: u64,
    lent: u64,
    /// Over this period's learned hours that had a forecast: what it said and what came.
    predicted: u64,
    actual: u64,
    compared_hours: u32,
    previous_error: Option<f64>,
    /// Per day of this period, over its learned hours with a forecast: actual bytes,
    /// the profile's bytes (without day ratio) and how many hours.
    day_actual: [u64; MAX_PERIOD_DAYS],
    day_profile: [u64; MAX_PERIOD_DAYS],
    day_hours: [u8; MAX_PERIOD_DAYS],

    last_persist: Option<i64>,
    rolled_since_persist: bool,
}

impl Forecaster {
    /// A forecaster that has learned nothing, watching `line` from `unix_s` on.
    pub fn new(line: MeteredLine, unix_s: u64, utc_offset_s: i32) -> Self {
        let t = clamp_unix(unix_s);
        let off = offset(utc_offset_s);
        let local = t + off;
        Forecaster {
            line,
            profile: [Bucket::default(); WEEK_HOURS],
            learned_hours: 0,
            day_ratios: [[0; DAY_RATIO_PERIODS]; MAX_PERIOD_DAYS],
            last_unix: t,
            watching: true,
            last_offset: off,
            open_hour: local.div_euclid(HOUR_S),
            open_bytes: 0,
            open_watched_s: 0,
            period: Period::containing(local_day(local), line.billing_day),
            used: 0,
            lent: 0,
            predicted: 0,
            actual: 0,
            compared_hours: 0,
            previous_error: None,
            day_actual: [0; MAX_PERIOD_DAYS],
            day_profile: [0; MAX_PERIOD_DAYS],
            day_hours: [0; MAX_PERIOD_DAYS],
            last_persist: None,
            rolled_since_persist: false,
        }
    }

    /// The line's configuration.
    pub fn line(&self) -> MeteredLine {
        self.line
    }

    /// Takes a changed configuration, keeping what was learned. A new billing day moves
    /// the current period's bounds but keeps its usage count (counting too much is the
    /// safe side until the next rollover).
    pub fn set_line(&mut self, line: MeteredLine) {
        let moved = line.billing_day != self.line.billing_day;
        self.line = line;
        if moved {
            let day = local_day(self.last_unix + self.last_offset);
            self.period = Period::containing(day, line.billing_day);
            // Day indices no longer line up with this period's days.
            self.day_actual = [0; MAX_PERIOD_DAYS];
            self.day_profile = [0; MAX_PERIOD_DAYS];
            self.day_hours = [0; MAX_PERIOD_DAYS];
            self.rolled_since_persist = true;
        }
    }

    /// The owner used `bytes` on the line since the previous call (or since
    /// [`Forecaster::new`] / [`Forecaster::resume`]), and the line was watched all along.
    /// Any rhythm works; an interval longer than [`MAX_WATCHED_INTERVAL_S`], or the first
    /// after [`Forecaster::from_bytes`], counts its bytes but is not learned.
    pub fn record(&mut self, unix_s: u64, utc_offset_s: i32, bytes: u64) {
        let t = clamp_unix(unix_s);
        let off = offset(utc_offset_s);
        let since = t - self.last_unix;
        if since == 0 {
            self.open_bytes = self.open_bytes.saturating_add(bytes);
            self.used = self.used.saturating_add(bytes);
            return;
        }
        if since < 0 {
            // The clock stepped back: the open hour's gathering no longer matches any
            // hour, so it is dropped from learning and watching restarts at `t`.
            self.used = self.used.saturating_add(bytes);
            self.open_hour = (t + off).div_euclid(HOUR_S);
            self.open_bytes = 0;
            self.open_watched_s = 0;
            self.last_unix = t;
            self.last_offset = off;
            return;
        }
        if !self.watching || since as u64 > MAX_WATCHED_INTERVAL_S {
            self.skip_to(t, off, bytes);
            return;
        }
        self.last_offset = off;
        let end = t + off;
        let mut pos = end - since;
        let mut left = bytes;
        while pos < end {
            let hour = pos.div_euclid(HOUR_S);
            let hour_end = (hour + 1) * HOUR_S;
            let seg_end = hour_end.min(end);
            let share = if seg_end == end {
                left
            } else {
                mul_div(bytes, (seg_end - pos) as u64, since as u64)
            };
            left = left.saturating_sub(share);
            // An hour before the open one comes from an offset that moved back (end of
            // summer time): it is gathered into the open hour, never reopened.
            if hour > self.open_hour {
                self.close_open_hour();
                self.open(hour);
            }
            self.open_bytes = self.open_bytes.saturating_add(share);
            self.used = self.used.saturating_add(share);
            self.open_watched_s = (self.open_watched_s + (seg_end - pos) as u32).min(3600);
            if hour == self.open_hour && seg_end == hour_end {
                self.close_open_hour();
                self.open(hour + 1);
            }
            pos = seg_end;
        }
        self.last_unix = t;
    }

    /// The shell was not watching since the previous call (it restarted, the router was
    /// off): nothing about that time is learned. `bytes` used in it, if the shell knows
    /// (e.g. from the modem's own counter), count against the period; 0 if unknown.
    /// Call it first after [`Forecaster::from_bytes`].
    pub fn resume(&mut self, unix_s: u64, utc_offset_s: i32, bytes: u64) {
        let t = clamp_unix(unix_s);
        if t <= self.last_unix {
            self.used = self.used.saturating_add(bytes);
            self.watching = true;
            return;
        }
        self.skip_to(t, offset(utc_offset_s), bytes);
    }

    /// Neighbours carried `bytes` over the line: they count against the allowance but are
    /// not the owner's pattern, so nothing is learned from them.
    pub fn record_lent(&mut self, unix_s: u64, utc_offset_s: i32, bytes: u64) {
        let local = clamp_unix(unix_s) + offset(utc_offset_s);
        self.roll_to(local_day(local));
        self.used = self.used.saturating_add(bytes);
        self.lent = self.lent.saturating_add(bytes);
    }

    /// Hours learned so far.
    pub fn learned_hours(&self) -> u32 {
        self.learned_hours
    }

    /// Whether enough was learned to lend anything: [`CONFIDENT_HOURS`] learned hours
    /// covering at least [`CONFIDENT_BUCKETS`] hours of the week.
    pub fn confident(&self) -> bool {
        let buckets = self.profile.iter().filter(|b| b.samples > 0).count();
        self.learned_hours >= CONFIDENT_HOURS && buckets >= CONFIDENT_BUCKETS
    }

    /// The forecast for the period holding `unix_s`.
    ///
    /// The owner's further use is the sum, over the rest of the period, of each hour's
    /// bucket times its day-of-period ratio. A bucket never learned counts as the busiest
    /// learned bucket at the same hour of the day (or of the week).
    pub fn forecast(&self, unix_s: u64, utc_offset_s: i32) -> Forecast {
        let off = offset(utc_offset_s);
        let local = clamp_unix(unix_s) + off;
        let day = local_day(local);
        // No call yet in a new period: it starts empty.
        let rolled = day >= self.period.end_day;
        let period = if rolled {
            Period::containing(day, self.line.billing_day)
        } else {
            self.period
        };
        let (used, lent) = if rolled {
            (0, 0)
        } else {
            (self.used, self.lent)
        };
        let estimates = self.estimates();
        let expected_more = self.expected_use(&estimates, period, local, period.end_day * DAY_S);

        let (this_period, before) = if rolled {
            (None, self.period_error().or(self.previous_error))
        } else {
            (self.period_error(), self.previous_error)
        };
        let margin_error = match (this_period, before) {
            (None, None) => UNKNOWN_ERROR,
            (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
        };
        let allowance = self.line.allowance;
        let margin =
            ((expected_more as f64) * (MARGIN_BASE + MARGIN_PER_ERROR * margin_error)) as u64;
        let margin =
            margin.saturating_add(mul_div(allowance, COUNTING_RESERVE_PER_MILLE, PER_MILLE));
        let remaining = allowance.saturating_sub(used);
        let confident = self.confident();
        let surplus = if confident {
            remaining
                .saturating_sub(expected_more)
                .saturating_sub(margin)
                .saturating_sub(self.line.threshold)
        } else {
            0
        };
        let seconds_left = (period.end_day * DAY_S - local).max(1) as u64;
        Forecast {
            period_start: period.start_unix(off),
            period_end: period.end_unix(off),
            used,
            lent,
            remaining,
            expected_more,
            margin,
            surplus,
            offer_bytes_per_s: surplus / seconds_left,
            error: this_period.or(before),
            confident,
        }
    }

    /// Bytes of the allowance left in the period holding `unix_s`.
    pub fn remaining(&self, unix_s: u64, utc_offset_s: i32) -> u64 {
        let local = clamp_unix(unix_s) + offset(utc_offset_s);
        if local_day(local) >= self.period.end_day {
            self.line.allowance
        } else {
            self.line.allowance.saturating_sub(self.used)
        }
    }

    /// Whether less than the line's threshold remains: the owner's own traffic should move
    /// off the line.
    pub fn below_threshold(&self, unix_s: u64, utc_offset_s: i32) -> bool {
        self.remaining(unix_s, utc_offset_s) < self.line.threshold
    }

    /// Whether the shell should write [`Forecaster::to_bytes`] now: never written, a
    /// period rolled over since, or [`PERSIST_INTERVAL_S`] passed (either way, for a clock
    /// that stepped back).
    pub fn persist_due(&self, unix_s: u64) -> bool {
        match self.last_persist {
            None => true,
            Some(last) => {
                self.rolled_since_persist || clamp_unix(unix_s).abs_diff(last) >= PERSIST_INTERVAL_S
            }
        }
    }

    /// The shell wrote the state at `unix_s`.
    pub fn mark_persisted(&mut self, unix_s: u64) {
        self.last_persist = Some(clamp_unix(unix_s));
        self.rolled_since_persist = false;
    }

    /// The state to keep on flash: [`STATE_LEN`] bytes, a magic, [`STATE_VERSION`], the
    /// fields little-endian and a CRC-32 of all before it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.line.allowance.to_le_bytes());
        out.push(self.line.billing_day);
        out.extend_from_slice(&self.line.threshold.to_le_bytes());
        out.extend_from_slice(&self.last_unix.to_le_bytes());
        out.extend_from_slice(&(self.last_offset as i32).to_le_bytes());
        out.extend_from_slice(&self.open_hour.to_le_bytes());
        out.extend_from_slice(&self.open_bytes.to_le_bytes());
        out.extend_from_slice(&self.open_watched_s.to_le_bytes());
        out.extend_from_slice(&self.period.start_day.to_le_bytes());
        out.extend_from_slice(&self.period.end_day.to_le_bytes());
        out.extend_from_slice(&self.used.to_le_bytes());
        out.extend_from_slice(&self.lent.to_le_bytes());
        out.extend_from_slice(&self.predicted.to_le_bytes());
        out.extend_from_slice(&self.actual.to_le_bytes());
        out.extend_from_slice(&self.compared_hours.to_le_bytes());
        out.push(u8::from(self.previous_error.is_some()));
        out.extend_from_slice(&self.previous_error.unwrap_or(0.0).to_bits().to_le_bytes());
        out.extend_from_slice(&self.learned_hours.to_le_bytes());
        for b in &self.profile {
            out.extend_from_slice(&b.estimate.to_le_bytes());
            out.push(b.samples);
        }
        for ratios in &self.day_ratios {
            for r in ratios {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        for d in 0..MAX_PERIOD_DAYS {
            out.extend_from_slice(&self.day_actual[d].to_le_bytes());
            out.extend_from_slice(&self.day_profile[d].to_le_bytes());
            out.push(self.day_hours[d]);
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), STATE_LEN);
        out
    }

    /// Restores a state written by [`Forecaster::to_bytes`]. Anything cut, altered or of
    /// another version is refused; the shell then starts fresh. The time since the state
    /// was written is unknown: call [`Forecaster::resume`] next.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ForecastError> {
        let (len, expected) = (bytes.len(), STATE_LEN);
        if len < MAGIC.len() + 1 {
            return Err(ForecastError::Truncated { len, expected });
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(ForecastError::NotAState);
        }
        if bytes[MAGIC.len()] != STATE_VERSION {
            return Err(ForecastError::UnsupportedVersion(bytes[MAGIC.len()]));
        }
        if len < expected {
            return Err(ForecastError::Truncated { len, expected });
        }
        if len > expected {
            return Err(ForecastError::TrailingBytes { len, expected });
        }
        let (body, tail) = bytes.split_at(expected - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crc32(body);
        if stored != computed {
            return Err(ForecastError::ChecksumMismatch { stored, computed });
        }

        let mut r = Reader {
            bytes: body,
            pos: MAGIC.len() + 1,
        };
        let allowance = r.u64()?;
        let billing_day = r.u8()?;
        let threshold = r.u64()?;
        let line = MeteredLine::new(allowance, billing_day, threshold)
            .map_err(|_| ForecastError::BadField("billing_day"))?;
        let last_unix = r.i64()?;
        let last_offset = i64::from(r.i32()?);
        let open_hour = r.i64()?;
        let open_bytes = r.u64()?;
        let open_watched_s = r.u32()?;
        let period = Period {
            start_day: r.i64()?,
            end_day: r.i64()?,
        };
        let used = r.u64()?;
        let lent = r.u64()?;
        let predicted = r.u64()?;
        let actual = r.u64()?;
        let compared_hours = r.u32()?;
        let has_error = r.u8()?;
        let error = f64::from_bits(r.u64()?);
        let learned_hours = r.u32()?;
        let mut profile = [Bucket::default(); WEEK_HOURS];
        for b in &mut profile {
            b.estimate = r.u64()?;
            b.samples = r.u8()?;
        }
        let mut day_ratios = [[0; DAY_RATIO_PERIODS]; MAX_PERIOD_DAYS];
        for ratios in &mut day_ratios {
            for ratio in ratios {
                *ratio = r.u16()?;
            }
        }
        let mut day_actual = [0; MAX_PERIOD_DAYS];
        let mut day_profile = [0; MAX_PERIOD_DAYS];
        let mut day_hours = [0; MAX_PERIOD_DAYS];
        for d in 0..MAX_PERIOD_DAYS {
            day_actual[d] = r.u64()?;
            day_profile[d] = r.u64()?;
            day_hours[d] = r.u8()?;
        }

        if !(0..=MAX_UNIX as i64).contains(&last_unix) {
            return Err(ForecastError::BadField("last_unix"));
        }
        if last_offset.abs() > MAX_OFFSET_S {
            return Err(ForecastError::BadField("utc_offset"));
        }
        // Day and hour numbers within the clamped time range: no arithmetic overflows.
        let max_day = (MAX_UNIX as i64 + MAX_OFFSET_S) / DAY_S + 1;
        if !(-2 * MAX_PERIOD_DAYS as i64..=max_day).contains(&period.start_day) {
            return Err(ForecastError::BadField("period"));
        }
        if !(-48..=max_day * 24).contains(&open_hour) {
            return Err(ForecastError::BadField("open_hour"));
        }
        if open_watched_s > 3600 {
            return Err(ForecastError::BadField("open_watched_s"));
        }
        if !(28..=31).contains(&(period.end_day - period.start_day)) {
            return Err(ForecastError::BadField("period"));
        }
        if lent > used {
            return Err(ForecastError::BadField("lent"));
        }
        let previous_error = match has_error {
            0 => None,
            1 if error.is_finite() && error >= 0.0 => Some(error),
            _ => return Err(ForecastError::BadField("previous_error")),
        };
        if day_ratios
            .iter()
            .flatten()
            .any(|&r| r != 0 && !(RATIO_MIN..=RATIO_MAX).contains(&r))
        {
            return Err(ForecastError::BadField("day_ratios"));
        }
        if day_hours.iter().any(|&h| h > 24) {
            return Err(ForecastError::BadField("day_hours"));
        }
        Ok(Forecaster {
            line,
            profile,
            learned_hours,
            day_ratios,
            last_unix,
            watching: false,
            last_offset,
            open_hour,
            open_bytes,
            open_watched_s,
            period,
            used,
            lent,
            predicted,
            actual,
            compared_hours,
            previous_error,
            day_actual,
            day_profile,
            day_hours,
            // What was read is what is on flash.
            last_persist: Some(last_unix),
            rolled_since_persist: false,
        })
    }

    /// Jumps to `t` without watching the time in between: the open hour is closed (learned
    /// if watched long enough), the bytes counted in the period holding `t`.
    fn skip_to(&mut self, t: i64, off: i64, bytes: u64) {
        let hour = (t + off).div_euclid(HOUR_S);
        if hour > self.open_hour {
            self.close_open_hour();
            self.open(hour);
        }
        self.roll_to(local_day(t + off));
        self.used = self.used.saturating_add(bytes);
        self.last_unix = t;
        self.last_offset = off;
        self.watching = true;
    }

    /// Starts gathering `hour`, rolling the period over if the hour is in a later one.
    fn open(&mut self, hour: i64) {
        self.roll_to(hour.div_euclid(24));
        self.open_hour = hour;
        self.open_bytes = 0;
        self.open_watched_s = 0;
    }

    fn close_open_hour(&mut self) {
        if self.open_watched_s >= MIN_WATCHED_S {
            let bytes = mul_div(self.open_bytes, 3600, u64::from(self.open_watched_s));
            self.learn(self.open_hour, bytes);
        }
        self.open_bytes = 0;
        self.open_watched_s = 0;
    }

    /// Compares the hour with what was forecast for it, then learns it.
    fn learn(&mut self, hour: i64, bytes: u64) {
        let how = hour_of_week(hour);
        let bucket = self.profile[how];
        let day = hour.div_euclid(24) - self.period.start_day;
        if bucket.samples > 0 {
            if let Some(d) = day_index(day) {
                let forecast = apply_factor(bucket.estimate, self.day_factor(day));
                self.predicted = self.predicted.saturating_add(forecast);
                self.actual = self.actual.saturating_add(bytes);
                self.compared_hours = self.compared_hours.saturating_add(1);
                self.day_profile[d] = self.day_profile[d].saturating_add(bucket.estimate);
                self.day_actual[d] = self.day_actual[d].saturating_add(bytes);
                self.day_hours[d] = self.day_hours[d].saturating_add(1);
            }
        }

        let estimate = if bucket.samples == 0 {
            bytes
        } else {
            let m = bucket.estimate;
            let floor = self.typical_hour().max(MIN_STEP_FLOOR);
            let sample = bytes.clamp(m / 2, m.saturating_mul(2).saturating_add(floor));
            let weight = (u64::from(bucket.samples) + 1).min(SMOOTHING_WEEKS);
            if sample >= m {
                m + (sample - m) / weight
            } else {
                m - (m - sample) / weight
            }
        };
        self.profile[how] = Bucket {
            estimate,
            samples: bucket.samples.saturating_add(1),
        };
        self.learned_hours = self.learned_hours.saturating_add(1);
    }

    /// Moves to the period holding local `day` if it is past the current one.
    fn roll_to(&mut self, day: i64) {
        if day < self.period.end_day {
            return;
        }
        if let Some(e) = self.period_error() {
            self.previous_error = Some(e);
        }
        for d in 0..MAX_PERIOD_DAYS {
            if self.day_hours[d] >= MIN_DAY_HOURS && self.day_profile[d] > 0 {
                let ratio = mul_div(self.day_actual[d], PER_MILLE, self.day_profile[d]);
                let ratio = ratio.clamp(u64::from(RATIO_MIN), u64::from(RATIO_MAX)) as u16;
                let ratios = &mut self.day_ratios[d];
                ratios.copy_within(..DAY_RATIO_PERIODS - 1, 1);
                ratios[0] = ratio;
            }
        }
        self.period = Period::containing(day, self.line.billing_day);
        self.used = 0;
        self.lent = 0;
        self.predicted = 0;
        self.actual = 0;
        self.compared_hours = 0;
        self.day_actual = [0; MAX_PERIOD_DAYS];
        self.day_profile = [0; MAX_PERIOD_DAYS];
        self.day_hours = [0; MAX_PERIOD_DAYS];
        self.rolled_since_persist = true;
    }

    /// This period's relative error, once enough hours were compared.
    fn period_error(&self) -> Option<f64> {
        if self.compared_hours < MIN_ERROR_HOURS {
            return None;
        }
        let miss = self.actual.abs_diff(self.predicted) as f64;
        Some((miss / self.predicted.max(1) as f64).min(MAX_ERROR))
    }

    /// Day `day` of the period's ratio to the profile, per mille: the median of the last
    /// periods once all are known, else 1.
    fn day_factor(&self, day: i64) -> u64 {
        let Some(ratios) = day_index(day).map(|d| self.day_ratios[d]) else {
            return PER_MILLE;
        };
        if ratios.contains(&0) {
            return PER_MILLE;
        }
        let mut sorted = ratios;
        sorted.sort_unstable();
        u64::from(sorted[DAY_RATIO_PERIODS / 2]).max(FACTOR_MIN_APPLIED)
    }

    /// Mean of the learned buckets: how far one sample may lift a quiet bucket.
    fn typical_hour(&self) -> u64 {
        let (sum, n) = self
            .profile
            .iter()
            .filter(|b| b.samples > 0)
            .fold((0u64, 0u64), |(s, n), b| {
                (s.saturating_add(b.estimate), n + 1)
            });
        sum / n.max(1)
    }

    /// What each hour of the week is expected to use, unknown ones filled in high.
    fn estimates(&self) -> [u64; WEEK_HOURS] {
        let learned = |how: usize| Some(self.profile[how]).filter(|b| b.samples > 0);
        let busiest = (0..WEEK_HOURS)
            .filter_map(learned)
            .map(|b| b.estimate)
            .max()
            .unwrap_or(0);
        let mut out = [0; WEEK_HOURS];
        for (how, slot) in out.iter_mut().enumerate() {
            *slot = match learned(how) {
                Some(b) => b.estimate,
                None => (how % 24..WEEK_HOURS)
                    .step_by(24)
                    .filter_map(learned)
                    .map(|b| b.estimate)
                    .max()
                    .unwrap_or(busiest),
            };
        }
        out
    }

    /// The owner's expected use between two local times inside `period`.
    fn expected_use(
        &self,
        estimates: &[u64; WEEK_HOURS],
        period: Period,
        from_local: i64,
        to_local: i64,
    ) -> u64 {
        let mut pos = from_local.max(period.start_day * DAY_S);
        let end = to_local.min(period.end_day * DAY_S);
        let mut total = 0u64;
        while pos < end {
            let hour = pos.div_euclid(HOUR_S);
            let seg_end = ((hour + 1) * HOUR_S).min(end);
            let factor = self.day_factor(hour.div_euclid(24) - period.start_day);
            let per_hour = apply_factor(estimates[hour_of_week(hour)], factor);
            total = total.saturating_add(mul_div(per_hour, (seg_end - pos) as u64, 3600));
            pos = seg_end;
        }
        total
    }
}

/// Checked reads over a state whose length was already checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ForecastError> {
        let chunk = self
            .bytes
            .get(self.pos..self.pos + N)
            .ok_or(ForecastError::Truncated {
                len: self.bytes.len(),
                expected: STATE_LEN,
            })?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(chunk);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ForecastError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ForecastError> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, ForecastError> {
        self.take().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> Result<i32, ForecastError> {
        self.take().map(i32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, ForecastError> {
        self.take().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, ForecastError> {
        self.take().map(i64::from_le_bytes)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as in zlib): catches every burst of up to 32 flipped
/// bits. Bitwise: it runs a few times a day over 2 KB.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn clamp_unix(unix_s: u64) -> i64 {
    unix_s.min(MAX_UNIX) as i64
}

fn offset(utc_offset_s: i32) -> i64 {
    i64::from(utc_offset_s).clamp(-MAX_OFFSET_S, MAX_OFFSET_S)
}

fn local_day(local_s: i64) -> i64 {
    local_s.div_euclid(DAY_S)
}

/// Bucket of a local hour: Monday 00:00 is 0 (1970-01-01 was a Thursday).
fn hour_of_week(local_hour: i64) -> usize {
    let weekday = (local_hour.div_euclid(24) + 3).rem_euclid(7);
    (weekday * 24 + local_hour.rem_euclid(24)) as usize
}

fn day_index(day: i64) -> Option<usize> {
    usize::try_from(day).ok().filter(|&d| d < MAX_PERIOD_DAYS)
}

fn apply_factor(bytes: u64, per_mille: u64) -> u64 {
    mul_div(bytes, per_mille, PER_MILLE)
}

/// `a × b / c` without overflow, saturating.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    (u128::from(a) * u128::from(b) / u128::from(c.max(1))).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;
    const GB: u64 = 1_000_000_000;
    const CET: i32 = 3600;

    /// The owner's bytes per hour: quiet nights, light weekday days, heavy weekday
    /// evenings, busy weekend afternoons.
    fn pattern(how: usize) -> u64 {
        let weekend = how / 24 >= 5;
        match (weekend, how % 24) {
            (_, 0..=6) => 5 * MB,
            (false, 7..=17) => 20 * MB,
            (false, 18..=22) => 400 * MB,
            (true, 9..=22) => 250 * MB,
            _ => 50 * MB,
        }
    }

    fn midnight(y: i64, m: u32, d: u32, off: i32) -> u64 {
        (days_from_civil(y, m, d) * DAY_S - i64::from(off)) as u64
    }

    /// What `rate` uses between two times, split at local hours.
    fn use_between(from: u64, to: u64, off: i32, rate: &dyn Fn(usize) -> u64) -> u64 {
        let mut pos = from as i64 + i64::from(off);
        let end = to as i64 + i64::from(off);
        let mut total = 0;
        while pos < end {
            let hour = pos.div_euclid(HOUR_S);
            let seg_end = ((hour + 1) * HOUR_S).min(end);
            total += rate(hour_of_week(hour)) * (seg_end - pos) as u64 / 3600;
            pos = seg_end;
        }
        total
    }

    /// Records `rate` from `from` to `to`, one call every `step` seconds.
    fn feed(
        f: &mut Forecaster,
        from: u64,
        to: u64,
        off: i32,
        step: u64,
        rate: &dyn Fn(usize) -> u64,
    ) {
        let mut t = from;
        while t < to {
            let next = (t + step).min(to);
            f.record(next, off, use_between(t, next, off, rate));
            t = next;
        }
    }

    fn line(allowance: u64, billing_day: u8, threshold: u64) -> MeteredLine {
        MeteredLine::new(allowance, billing_day, threshold).unwrap()
    }

    fn week_total(rate: &dyn Fn(usize) -> u64) -> u64 {
        (0..WEEK_HOURS).map(rate).sum()
    }

    /// The forecaster's expected use between two times, across periods.
    fn expected_between(f: &Forecaster, from: u64, to: u64, off: i32) -> u64 {
        let off = i64::from(off);
        let (mut local, end) = (from as i64 + off, to as i64 + off);
        let mut total = 0;
        while local < end {
            let period = Period::containing(local_day(local), f.line.billing_day);
            total += f.expected_use(&f.estimates(), period, local, end);
            local = period.end_day * DAY_S;
        }
        total
    }

    fn rel(a: u64, b: u64) -> f64 {
        a.abs_diff(b) as f64 / b as f64
    }

    #[test]
    fn hours_of_the_week_start_at_monday_midnight() {
        // 2024-03-04 was a Monday: its midnight is bucket 0; 1970-01-01 a Thursday.
        assert_eq!(hour_of_week(days_from_civil(2024, 3, 4) * 24), 0);
        assert_eq!(hour_of_week(0), 3 * 24);
        assert_eq!(hour_of_week(days_from_civil(2024, 3, 10) * 24 + 23), 167);
    }

    #[test]
    fn billing_day_past_month_end_clamps_to_last_day() {
        let day = |y, m, d| days_from_civil(y, m, d);
        let period = |y, m, d, bd| Period::containing(day(y, m, d), bd);
        // Day 31: 31 Jan → 28 Feb (2023) → 31 Mar.
        assert_eq!(
            period(2023, 2, 15, 31),
            Period::starting(day(2023, 1, 31), 31)
        );
        assert_eq!(period(2023, 2, 15, 31).end_day, day(2023, 2, 28));
        assert_eq!(period(2023, 3, 1, 31).start_day, day(2023, 2, 28));
        assert_eq!(period(2023, 3, 1, 31).end_day, day(2023, 3, 31));
        // Leap year: 29 Feb starts the period for days 29, 30 and 31.
        for bd in [29, 30, 31] {
            assert_eq!(period(2024, 3, 10, bd).start_day, day(2024, 2, 29), "{bd}");
        }
        assert_eq!(period(2024, 3, 10, 30).end_day, day(2024, 3, 30));
        assert_eq!(period(2023, 3, 10, 29).start_day, day(2023, 2, 28));
        assert_eq!(period(2023, 3, 10, 29).end_day, day(2023, 3, 29));
        // 30 Apr for day 31, then 31 May; December to January crosses the year.
        assert_eq!(period(2024, 5, 5, 31).start_day, day(2024, 4, 30));
        assert_eq!(period(2024, 12, 31, 31).end_day, day(2025, 1, 31));
        assert_eq!(period(2025, 1, 3, 15).start_day, day(2024, 12, 15));
        // Every period is 28..=31 days and they tile time.
        for bd in 1..=31 {
            let mut p = Period::containing(day(2023, 1, 1), bd);
            for _ in 0..30 {
                assert!((28..=31).contains(&(p.end_day - p.start_day)));
                let next = Period::containing(p.end_day, bd);
                assert_eq!(next.start_day, p.end_day);
                p = next;
            }
        }
        assert_eq!(
            MeteredLine::new(1, 0, 0),
            Err(ForecastError::BadBillingDay(0))
        );
        assert_eq!(
            MeteredLine::new(1, 32, 0),
            Err(ForecastError::BadBillingDay(32))
        );
    }

    #[test]
    fn utc_offset_moves_period_start() {
        let l = line(10 * GB, 1, 0);
        // 31 March 23:30 UTC is still March in London but already April in Paris.
        let t = midnight(2024, 4, 1, 0) - 1800;
        assert_eq!(
            l.period(t, 0),
            (midnight(2024, 3, 1, 0), midnight(2024, 4, 1, 0))
        );
        assert_eq!(
            l.period(t, CET),
            (midnight(2024, 4, 1, CET), midnight(2024, 5, 1, CET))
        );
        assert_eq!(midnight(2024, 4, 1, CET), midnight(2024, 4, 1, 0) - 3600);
        // 1 April 03:00 UTC is still 31 March in New York (UTC−5).
        let t = midnight(2024, 4, 1, 0) + 3 * 3600;
        assert_eq!(l.period(t, -5 * 3600).1, midnight(2024, 4, 1, -5 * 3600));

        // The forecaster rolls over at local midnight: usage starts again from 0.
        let mut f = Forecaster::new(l, midnight(2024, 3, 31, CET), CET);
        feed(
            &mut f,
            midnight(2024, 3, 31, CET),
            midnight(2024, 4, 1, CET) - 60,
            CET,
            60,
            &pattern,
        );
        assert!(f.forecast(midnight(2024, 4, 1, CET) - 60, CET).used > 0);
        f.mark_persisted(midnight(2024, 4, 1, CET) - 60);
        f.record(midnight(2024, 4, 1, CET) + 60, CET, MB);
        let fc = f.forecast(midnight(2024, 4, 1, CET) + 60, CET);
        assert_eq!(fc.period_start, midnight(2024, 4, 1, CET));
        assert_eq!(fc.used, MB / 2, "the minute after midnight only");
        assert!(
            f.persist_due(midnight(2024, 4, 1, CET) + 60),
            "rollover is written"
        );
    }

    #[test]
    fn weekday_weekend_pattern_forecast_and_surplus() {
        let allowance = 120 * GB;
        let threshold = 5 * GB;
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(allowance, 1, threshold), start, CET);
        let now = midnight(2024, 3, 25, CET);
        feed(&mut f, start, now, CET, 60, &pattern);

        let fc = f.forecast(now, CET);
        let end = midnight(2024, 4, 1, CET);
        let truth = use_between(now, end, CET, &pattern);
        assert!(fc.confident);
        assert!(
            rel(fc.expected_more, truth) < 0.10,
            "{} vs {truth}",
            fc.expected_more
        );
        assert!(rel(fc.used, use_between(start, now, CET, &pattern)) < 1e-4);
        let error = fc.error.expect("two weeks compared");
        assert!(error < 0.01, "{error}");
        assert_eq!(
            fc.surplus,
            allowance - fc.used - fc.expected_more - fc.margin - threshold
        );
        assert!(fc.surplus > 10 * GB, "{fc:?}");
        assert_eq!(fc.offer_bytes_per_s, fc.surplus / (end - now));
        assert_eq!(fc.remaining, allowance - fc.used);

        // Had neighbours taken all of it, the owner's own week still fits, threshold kept.
        let mut g = f.clone();
        g.record_lent(now, CET, fc.surplus);
        feed(&mut g, now, end - 60, CET, 60, &pattern);
        assert!(g.forecast(end - 60, CET).remaining >= threshold);
        // What was lent is not learned as the owner's.
        assert_eq!(g.forecast(end - 60, CET).lent, fc.surplus);
        assert!(
            rel(
                expected_between(&g, end, end + 7 * 86_400, CET),
                week_total(&pattern)
            ) < 0.01
        );
    }

    #[test]
    fn holiday_weeks_do_not_swing_the_forecast() {
        let start = midnight(2024, 1, 1, CET);
        let weeks = |n: u64| start + n * 7 * 86_400;
        let mut base = Forecaster::new(line(500 * GB, 1, 0), start, CET);
        feed(&mut base, start, weeks(4), CET, 900, &pattern);
        let normal = week_total(&pattern);

        let mut quiet = base.clone();
        feed(&mut quiet, weeks(4), weeks(5), CET, 900, &|h| {
            pattern(h) / 10
        });
        let after = expected_between(&quiet, weeks(5), weeks(6), CET);
        assert!(after as f64 >= 0.8 * normal as f64, "{after} vs {normal}");
        println!(
            "after a week at 10 %: {:.3} of normal",
            after as f64 / normal as f64
        );

        let mut busy = base.clone();
        feed(&mut busy, weeks(4), weeks(5), CET, 900, &|h| pattern(h) * 3);
        let after = expected_between(&busy, weeks(5), weeks(6), CET);
        assert!(after as f64 <= 1.5 * normal as f64, "{after} vs {normal}");
        println!(
            "after a week at 3×: {:.3} of normal",
            after as f64 / normal as f64
        );

        // And normal weeks bring it back: a quarter of the gap closes each week.
        feed(&mut quiet, weeks(5), weeks(9), CET, 900, &pattern);
        let back = expected_between(&quiet, weeks(9), weeks(10), CET);
        assert!(rel(back, normal) < 0.05, "{back} vs {normal}");
    }

    #[test]
    fn new_router_offers_nothing_until_a_week_is_learned() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(500 * GB, 1, 0), start, CET);
        let fc = f.forecast(start, CET);
        assert!(!fc.confident);
        assert_eq!((fc.surplus, fc.offer_bytes_per_s, fc.error), (0, 0, None));

        feed(&mut f, start, start + 6 * 86_400, CET, 60, &pattern);
        let fc = f.forecast(start + 6 * 86_400, CET);
        assert!(!fc.confident && fc.expected_more > 0);
        assert_eq!((fc.surplus, fc.offer_bytes_per_s), (0, 0));

        feed(
            &mut f,
            start + 6 * 86_400,
            start + 8 * 86_400,
            CET,
            60,
            &pattern,
        );
        let fc = f.forecast(start + 8 * 86_400, CET);
        assert!(
            fc.confident && fc.surplus > 0 && fc.offer_bytes_per_s > 0,
            "{fc:?}"
        );
        assert_eq!(f.learned_hours(), 8 * 24);
    }

    #[test]
    fn owner_using_the_whole_allowance_leaves_no_surplus() {
        let start = midnight(2024, 3, 4, CET);
        let allowance = 60 * GB;
        let mut f = Forecaster::new(line(allowance, 1, 2 * GB), start, CET);
        let now = midnight(2024, 3, 25, CET);
        feed(&mut f, start, now, CET, 600, &pattern);
        let fc = f.forecast(now, CET);
        assert!(fc.confident && fc.used + fc.expected_more > allowance);
        assert_eq!((fc.surplus, fc.offer_bytes_per_s), (0, 0));
        assert!(!f.below_threshold(now, CET));

        // Past the allowance: nothing remains, nothing is offered, the owner moves off.
        feed(&mut f, now, now + 4 * 86_400, CET, 600, &pattern);
        let fc = f.forecast(now + 4 * 86_400, CET);
        assert!(fc.used > allowance);
        assert_eq!((fc.remaining, fc.surplus, fc.offer_bytes_per_s), (0, 0, 0));
        assert_eq!(f.remaining(now + 4 * 86_400, CET), 0);
        assert!(f.below_threshold(now + 4 * 86_400, CET));
        // The next period starts full.
        let april = midnight(2024, 4, 1, CET) + 10;
        assert_eq!(f.remaining(april, CET), allowance);
        assert!(!f.below_threshold(april, CET));
    }

    #[test]
    fn error_grows_when_usage_departs_from_the_pattern() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(300 * GB, 1, 0), start, CET);
        let t1 = start + 14 * 86_400;
        feed(&mut f, start, t1, CET, 300, &pattern);
        let before = f.forecast(t1, CET);
        let e0 = before.error.unwrap();
        assert!(e0 < 0.01, "{e0}");

        let t2 = t1 + 3 * 86_400;
        feed(&mut f, t1, t2, CET, 300, &|h| pattern(h) * 5 / 2);
        let after = f.forecast(t2, CET);
        let e1 = after.error.unwrap();
        assert!(e1 > e0 + 0.2, "{e0} → {e1}");
        // The margin widens with it.
        let share = |fc: &Forecast| (fc.margin - 6 * GB) as f64 / fc.expected_more as f64;
        assert!(share(&after) > share(&before) + 0.4, "{before:?} {after:?}");
    }

    #[test]
    fn router_off_for_a_day_is_not_learned_as_no_use() {
        let start = midnight(2024, 3, 4, CET);
        let mut base = Forecaster::new(line(300 * GB, 1, 0), start, CET);
        let tuesday = midnight(2024, 3, 19, CET);
        feed(&mut base, start, tuesday, CET, 60, &pattern);
        let tuesday_wednesday = 24..3 * 24;
        let learned = base.profile;
        let hours = base.learned_hours();
        let thursday = tuesday + 2 * 86_400;

        // Off from Tuesday midnight to Thursday midnight: the shell says so on boot.
        let mut resumed = base.clone();
        resumed.resume(thursday, CET, 0);
        feed(&mut resumed, thursday, thursday + 3600, CET, 60, &pattern);
        // The shell forgot to say so: a single call after the gap.
        let mut forgot = base.clone();
        forgot.record(thursday, CET, 0);
        feed(&mut forgot, thursday, thursday + 3600, CET, 60, &pattern);
        for f in [&resumed, &forgot] {
            assert_eq!(
                f.profile[tuesday_wednesday.clone()],
                learned[tuesday_wednesday.clone()]
            );
            assert_eq!(f.learned_hours(), hours + 1);
            let next_wednesday = tuesday + 8 * 86_400;
            let day = expected_between(f, next_wednesday, next_wednesday + 86_400, CET);
            assert!(rel(day, use_between(tuesday + 86_400, thursday, CET, &pattern)) < 0.01);
        }
        // Up but idle, and the shell says so by calling: that is learned.
        let mut idle = base.clone();
        feed(&mut idle, tuesday, thursday, CET, 60, &|_| 0);
        assert_eq!(idle.learned_hours(), hours + 48);
        let evening = 2 * 24 + 20;
        // Two samples so far: the third weighs 1/3, clamped to half the estimate.
        let m = learned[evening].estimate;
        assert_eq!(idle.profile[evening].estimate, m - (m - m / 2) / 3);
    }

    #[test]
    fn any_call_rhythm_learns_the_same_week() {
        let start = midnight(2024, 3, 4, CET);
        let end = start + 8 * 86_400 + 3600;
        let learn = |step: u64| {
            let mut f = Forecaster::new(line(300 * GB, 1, 0), start, CET);
            feed(&mut f, start, end, CET, step, &pattern);
            f
        };
        let minute = learn(60);
        let normal = week_total(&pattern);
        for step in [60, 17 * 60, 3600, 3 * 3600] {
            let f = learn(step);
            let week = expected_between(&f, end, end + 7 * 86_400, CET);
            assert!(rel(week, normal) < 0.02, "step {step}: {week} vs {normal}");
            assert!(rel(f.forecast(end, CET).used, minute.forecast(end, CET).used) < 1e-4);
            if 3600 % step == 0 {
                for (a, b) in f.profile.iter().zip(&minute.profile) {
                    assert_eq!(a.samples, b.samples);
                    assert!(rel(a.estimate, b.estimate) < 1e-4, "step {step}");
                }
            }
        }
        // Irregular calls: 7 minutes, 53 minutes, 2 hours, over and over.
        let mut f = Forecaster::new(line(300 * GB, 1, 0), start, CET);
        let mut t = start;
        for step in [420, 3180, 7200].into_iter().cycle() {
            if t >= end {
                break;
            }
            let next = (t + step).min(end);
            f.record(next, CET, use_between(t, next, CET, &pattern));
            t = next;
        }
        let week = expected_between(&f, end, end + 7 * 86_400, CET);
        assert!(rel(week, normal) < 0.02, "{week} vs {normal}");
        assert!(f.confident());
    }

    #[test]
    fn summer_time_change_counts_every_byte_once() {
        let start = midnight(2024, 3, 25, CET);
        let mut f = Forecaster::new(line(300 * GB, 1, 0), start, CET);
        let mut total = 0;
        let mut t = start;
        // CET, then CEST (+2 h) from Sunday 31 March 01:00 UTC, then CET again a day later.
        let spring = midnight(2024, 3, 31, 0) + 3600;
        let off_at = |t: u64| {
            if (spring..spring + 86_400).contains(&t) {
                7200
            } else {
                CET
            }
        };
        // April starts at midnight summer time.
        let april = midnight(2024, 4, 1, 7200);
        while t < start + 14 * 86_400 {
            t += 60;
            f.record(t, off_at(t), MB);
            total += MB;
            if t == april - 60 {
                assert_eq!(f.forecast(t, 7200).used, total);
            }
        }
        assert_eq!(f.forecast(t, CET).used, (t - april) / 60 * MB);
        assert!(f.learned_hours() <= 14 * 24);
    }

    #[test]
    fn monthly_event_is_learned_per_day_of_period_one_offs_are_not() {
        let start = midnight(2024, 1, 1, CET);
        // A 3 GB backup on every first of the month at 02:00; a one-off burst on 11 March.
        let backup = |t0: u64, t1: u64| {
            let (y, m, d) = civil_from_days(local_day(t1 as i64 + i64::from(CET) - 1));
            let hour = (t1 as i64 + i64::from(CET) - 1).rem_euclid(DAY_S) / 3600;
            let extra = match (y, m, d, hour) {
                (_, _, 1, 2) => 3 * GB,
                (2024, 3, 11, 20) => 20 * GB,
                _ => 0,
            };
            extra * (t1 - t0) / 3600
        };
        let mut f = Forecaster::new(line(500 * GB, 1, 0), start, CET);
        let may = midnight(2024, 5, 1, CET);
        let mut t = start;
        while t < may {
            let next = t + 900;
            f.record(
                next,
                CET,
                use_between(t, next, CET, &pattern) + backup(t, next),
            );
            t = next;
        }
        let day = |d: u32| {
            let t = midnight(2024, 5, d, CET);
            (
                expected_between(&f, t, t + 86_400, CET),
                use_between(t, t + 86_400, CET, &pattern),
            )
        };
        // May 1st (a Wednesday): the backup is foreseen.
        let (first, plain) = day(1);
        assert!(first >= plain + 2 * GB, "{first} vs {plain}");
        // May 11th: the March burst left nothing behind.
        let (eleventh, plain) = day(11);
        assert!(rel(eleventh, plain) < 0.10, "{eleventh} vs {plain}");
    }

    #[test]
    fn lent_bytes_count_against_the_allowance_only() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(100 * GB, 1, 0), start, CET);
        feed(&mut f, start, start + 86_400, CET, 60, &|_| 0);
        f.record_lent(start + 86_400, CET, 10 * GB);
        let fc = f.forecast(start + 86_400, CET);
        assert_eq!(
            (fc.used, fc.lent, fc.remaining),
            (10 * GB, 10 * GB, 90 * GB)
        );
        assert!(f.profile.iter().all(|b| b.estimate == 0));
    }

    #[test]
    fn state_round_trips_and_rejects_damage() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(120 * GB, 12, 3 * GB), start, CET);
        let now = start + 16 * 86_400 + 1234;
        feed(&mut f, start, now, CET, 300, &pattern);
        let bytes = f.to_bytes();
        println!("forecast state: {} bytes", bytes.len());
        assert_eq!(bytes.len(), STATE_LEN);
        assert!(bytes.len() < 4096);

        let g = Forecaster::from_bytes(&bytes).unwrap();
        assert_eq!(g.to_bytes(), bytes);
        assert_eq!(g.forecast(now, CET), f.forecast(now, CET));
        assert!(!g.persist_due(now), "just read from flash");

        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                assert!(
                    Forecaster::from_bytes(&bad).is_err(),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
        let mut bad = bytes.clone();
        bad[100] ^= 4;
        let err = Forecaster::from_bytes(&bad).unwrap_err();
        assert!(
            matches!(err, ForecastError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("corrupt"));

        for len in 0..bytes.len() {
            let err = Forecaster::from_bytes(&bytes[..len]).unwrap_err();
            assert_eq!(
                err,
                ForecastError::Truncated {
                    len,
                    expected: STATE_LEN
                }
            );
        }
        assert!(
            Forecaster::from_bytes(&[])
                .unwrap_err()
                .to_string()
                .contains("cut short")
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Forecaster::from_bytes(&long),
            Err(ForecastError::TrailingBytes { .. })
        ));
        let mut other = bytes.clone();
        other[4] = 2;
        assert_eq!(
            Forecaster::from_bytes(&other),
            Err(ForecastError::UnsupportedVersion(2))
        );
        assert_eq!(
            Forecaster::from_bytes(b"hello world"),
            Err(ForecastError::NotAState)
        );

        // Intact but nonsense: a billing day of 0, checksum recomputed.
        let mut nonsense = bytes.clone();
        nonsense[13] = 0;
        let crc = crc32(&nonsense[..STATE_LEN - 4]);
        nonsense[STATE_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Forecaster::from_bytes(&nonsense),
            Err(ForecastError::BadField("billing_day"))
        );
    }

    #[test]
    fn restored_state_resumes_without_learning_the_gap() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(120 * GB, 1, 0), start, CET);
        feed(&mut f, start, start + 9 * 86_400, CET, 60, &pattern);
        let mut g = Forecaster::from_bytes(&f.to_bytes()).unwrap();
        let hours = g.learned_hours();
        let boot = start + 10 * 86_400 + 600;
        g.resume(boot, CET, 2 * GB);
        assert_eq!(g.learned_hours(), hours);
        assert_eq!(
            g.forecast(boot, CET).used,
            f.forecast(boot, CET).used + 2 * GB
        );
        assert!(g.persist_due(boot));

        // The shell forgot `resume`: its first call after the restart is not learned
        // (its 50 MB cover 20 minutes, not the half day since the state was written).
        let mut h = Forecaster::from_bytes(&f.to_bytes()).unwrap();
        h.record(boot, CET, 50 * MB);
        assert_eq!(h.learned_hours(), hours);
        feed(&mut h, boot, boot + 2 * 3600, CET, 60, &pattern);
        // 00:10–01:00 (50 minutes watched) and 01:00–02:00 are.
        assert_eq!(h.learned_hours(), hours + 2);
    }

    #[test]
    fn clock_stepping_back_is_counted_not_learned() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(120 * GB, 1, 0), start, CET);
        let t = start + 9 * 86_400 + 1800;
        feed(&mut f, start, t, CET, 60, &pattern);
        let (hours, used) = (f.learned_hours(), f.forecast(t, CET).used);
        let profile = f.profile;
        // NTP pulls the clock back three hours: bytes count, nothing is learned from the
        // step, and watching goes on from the new time.
        let back = t - 3 * 3600;
        f.record(back, CET, 10 * MB);
        assert_eq!(f.forecast(t, CET).used, used + 10 * MB);
        assert_eq!((f.learned_hours(), f.profile), (hours, profile));
        feed(&mut f, back, back + 3 * 3600, CET, 60, &pattern);
        assert_eq!(f.learned_hours(), hours + 2);
        for (a, b) in f.profile.iter().zip(&profile) {
            assert!(rel(a.estimate, b.estimate.max(1)) < 1e-4);
        }
    }

    #[test]
    fn persisting_is_rare() {
        let start = midnight(2024, 3, 4, CET);
        let mut f = Forecaster::new(line(120 * GB, 1, 0), start, CET);
        assert!(f.persist_due(start));
        f.mark_persisted(start);
        let mut writes = 0;
        let mut t = start;
        while t < start + 7 * 86_400 {
            t += 60;
            f.record(t, CET, MB);
            if f.persist_due(t) {
                f.mark_persisted(t);
                writes += 1;
            }
        }
        assert_eq!(writes, 7 * 4);
        assert!(!f.persist_due(t + 3600));
        assert!(f.persist_due(t + PERSIST_INTERVAL_S));
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
