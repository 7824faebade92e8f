//! The owner's lending policy and its meter: what a router's owner lets neighbours use of
//! its line beyond the plain rate caps of [`RelayPolicy`](crate::relay::RelayPolicy).
//!
//! * a share of the line's measured capacity each way ([`Share`], [`LineEstimate`]);
//! * byte allowances per day and per month, the month starting on a reset day
//!   ([`SharePolicy::daily_bytes`], [`SharePolicy::monthly_bytes`], [`ResetDay`]);
//! * the hours and days lending is allowed ([`Schedule`]).
//!
//! [`Lending`] holds the policy, the meter, the line estimate and the wall clock; the
//! [`Relay`](crate::relay::Relay) asks it about every datagram it would forward. Like the
//! rest of the core it reads no clock: the daemon gives it the wall clock
//! ([`Lending::set_clock`], unix seconds and the UTC offset), and every call takes `now`.
//! Days and months are the router's local ones, computed here without a date crate
//! ([`Date`], after Howard Hinnant's `days_from_civil`).
//!
//! **Never over.** A datagram of `n` bytes is forwarded only if `n` still fits in what
//! remains of every allowance, so what was given never exceeds an allowance, not even by
//! one datagram. Bytes are counted on the wire as the relay's line carries them: each
//! datagram with the relay's envelope, upstream and downstream added together (IP and
//! UDP headers are not counted).
//!
//! **Across reboots.** The meter's counts go into the gateway's state file as a
//! [`MeterRecord`]. It lives on flash, so it is written rarely: the record reserves bytes
//! ahead ([`Lending::checkpoint`]), as if they were lent already, and is written again only
//! when half of that reservation is used (the reservation grows with the lending rate, so
//! that at a steady rate this is at most every [`SAVE_EVERY`]), when a new day or month
//! starts, and at a clean stop (exactly, [`Lending::checkpoint_exact`]). A crash therefore
//! forgets nothing that was lent: after it, the meter resumes from the reservation, which
//! costs the owner at most one reservation of unlent allowance. The exceptions are what is
//! lent between a new day or month starting and the next check (the daemon checks every
//! two seconds), and anything when the file cannot be written (the daemon logs it).

use std::fmt;
use std::time::{Duration, Instant};

use crate::calendar::{self, weekday};

/// Seconds in a day.
pub(crate) const DAY_S: i64 = 86_400;
const MINUTES_PER_DAY: usize = 24 * 60;
const MINUTES_PER_WEEK: usize = 7 * MINUTES_PER_DAY;
const SCHEDULE_WORDS: usize = MINUTES_PER_WEEK.div_ceil(64);

/// At a steady lending rate, the state file is written about this often while lending.
pub const SAVE_EVERY: Duration = Duration::from_secs(600);
/// The least a [`MeterRecord`] reserves ahead of what was lent.
pub const RESERVE_MIN: u64 = 10_000_000;
/// The most a [`MeterRecord`] reserves ahead of what was lent.
pub const RESERVE_MAX: u64 = 1_000_000_000_000;
/// A measured line rate that is not measured again halves in this long (a line that got
/// slower is believed within a few of these; one that got faster at once).
pub const LINE_HALF_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
/// An allowance with less than this left (a largest datagram) is offered as used up.
pub const LEAST_OFFERED: u64 = crate::wire::MAX_DATAGRAM as u64;

// ---------------------------------------------------------------------------------------
// Calendar

/// A date of the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year (astronomical: 0 is 1 BC).
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
}

impl Date {
    /// The date `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let (year, month, day) = calendar::civil_from_days(days);
        Date {
            year: year as i32,
            month: month as u8,
            day: day as u8,
        }
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        calendar::days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }

    /// A valid date, or `None`.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month))
            .then_some(Date { year, month, day })
    }

    /// Day of the week, 0 for Monday to 6 for Sunday.
    pub fn weekday(self) -> usize {
        weekday(self.days())
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::str::FromStr for Date {
    type Err = ();

    /// `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Date, ()> {
        let mut it = s.splitn(3, '-');
        let mut num = |len: usize| {
            it.next()
                .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or(())
        };
        let (y, m, d) = (num(4)?, num(2)?, num(2)?);
        Date::new(y, m as u8, d as u8).ok_or(())
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    calendar::days_in_month(i64::from(year), u32::from(month)) as u8
}

/// The wall clock as the daemon reads it: what the core needs to know the router's local
/// day, month and hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Seconds since 1970-01-01 00:00 UTC.
    pub unix_s: i64,
    /// Local time minus UTC, in seconds (+3600 in Paris in winter).
    pub utc_offset_s: i32,
}

impl WallClock {
    /// Local seconds since 1970-01-01 00:00 local time.
    fn local_s(self) -> i64 {
        self.unix_s + i64::from(self.utc_offset_s)
    }

    /// The local date.
    pub fn date(self) -> Date {
        Date::from_days(self.local_s().div_euclid(DAY_S))
    }
}

/// A time zone as a POSIX `TZ` string gives it (what OpenWrt keeps in `/etc/TZ`, e.g.
/// `CET-1CEST,M3.5.0,M10.5.0/3`): a standard offset and, optionally, daylight saving time
/// with the rules of its start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixTz {
    /// Standard time minus UTC, seconds (POSIX writes it the other way round: `CET-1`).
    pub std_offset_s: i32,
    dst: Option<Dst>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dst {
    offset_s: i32,
    start: (DateRule, i32),
    end: (DateRule, i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateRule {
    /// `Jn`: day 1..=365 of the year, February 29 never counted.
    Julian(u16),
    /// `n`: day 0..=365 of the year, February 29 counted.
    Zero(u16),
    /// `Mm.w.d`: weekday `d` (0 Sunday) of week `w` (5 = the last) of month `m`.
    Month(u8, u8, u8),
}

impl PosixTz {
    /// UTC.
    pub const UTC: PosixTz = PosixTz {
        std_offset_s: 0,
        dst: None,
    };

    /// Parses a POSIX TZ string. `None` for what it is not (an Olson name such as
    /// `Europe/Paris` or `:/etc/localtime`, which OpenWrt does not use).
    pub fn parse(s: &str) -> Option<PosixTz> {
        let s = s.trim();
        let (rest, _) = tz_name(s)?;
        let (rest, std) = tz_offset(rest)?;
        let std_offset_s = -std;
        if rest.is_empty() {
            return Some(PosixTz {
                std_offset_s,
                dst: None,
            });
        }
        let (rest, _) = tz_name(rest)?;
        let (rest, dst_offset_s) = match rest.chars().next() {
            Some(',') | None => (rest, std_offset_s + 3600),
            _ => {
                let (rest, o) = tz_offset(rest)?;
                (rest, -o)
            }
        };
        // No rule: the US rule, as glibc and musl assume.
        let rules = if rest.is_empty() {
            ",M3.2.0,M11.1.0"
        } else {
            rest
        };
        let mut parts = rules.strip_prefix(',')?.split(',');
        let start = tz_rule(parts.next()?)?;
        let end = tz_rule(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(PosixTz {
            std_offset_s,
            dst: Some(Dst {
                offset_s: dst_offset_s,
                start,
                end,
            }),
        })
    }

    /// Local time minus UTC at `unix_s`, daylight saving time included.
    pub fn offset_at(&self, unix_s: i64) -> i32 {
        let Some(dst) = self.dst else {
            return self.std_offset_s;
        };
        let year = Date::from_days((unix_s + i64::from(self.std_offset_s)).div_euclid(DAY_S)).year;
        // The start is given in standard time, the end in daylight saving time.
        let start = rule_day(dst.start.0, year) * DAY_S + i64::from(dst.start.1)
            - i64::from(self.std_offset_s);
        let end =
            rule_day(dst.end.0, year) * DAY_S + i64::from(dst.end.1) - i64::from(dst.offset_s);
        let summer = if start < end {
            (start..end).contains(&unix_s)
        } else {
            // Southern hemisphere: daylight saving time spans the new year.
            !(end..start).contains(&unix_s)
        };
        if summer {
            dst.offset_s
        } else {
            self.std_offset_s
        }
    }

    /// The wall clock at `unix_s` in this zone.
    pub fn clock(&self, unix_s: i64) -> WallClock {
        WallClock {
            unix_s,
            utc_offset_s: self.offset_at(unix_s),
        }
    }
}

/// A zone name: three or more letters, or anything between `<` and `>`.
fn tz_name(s: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = s.strip_prefix('<') {
        let end = quoted.find('>')?;
        return Some((&quoted[end + 1..], &quoted[..end]));
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    (end >= 3).then(|| (&s[end..], &s[..end]))
}

/// `[+-]hh[:mm[:ss]]`, in seconds.
fn tz_offset(s: &str) -> Option<(&str, i32)> {
    let (sign, s) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let (rest, secs) = tz_hms(s)?;
    Some((rest, sign * secs))
}

fn tz_hms(s: &str) -> Option<(&str, i32)> {
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != ':')
        .unwrap_or(s.len());
    let mut secs = 0;
    let mut fields = 0;
    for (i, part) in s[..end].split(':').enumerate() {
        let v: i32 = part.parse().ok().filter(|_| part.len() <= 3)?;
        if i > 0 && v > 59 {
            return None;
        }
        secs += v * [3600, 60, 1].get(i)?;
        fields += 1;
    }
    (fields > 0 && secs <= 167 * 3600).then(|| (&s[end..], secs))
}

/// `date[/time]`, the time in seconds (02:00 unless given).
fn tz_rule(s: &str) -> Option<(DateRule, i32)> {
    let (date, time) = match s.split_once('/') {
        Some((d, t)) => {
            let (rest, secs) = tz_offset(t)?;
            if !rest.is_empty() {
                return None;
            }
            (d, secs)
        }
        None => (s, 7200),
    };
    let num = |p: &str| p.parse::<u16>().ok().filter(|_| !p.is_empty());
    let rule = if let Some(n) = date.strip_prefix('J') {
        DateRule::Julian(num(n).filter(|n| (1..=365).contains(n))?)
    } else if let Some(m) = date.strip_prefix('M') {
        let mut it = m.split('.');
        let (m, w, d) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
        if it.next().is_some() || !(1..=12).contains(&m) || !(1..=5).contains(&w) || d > 6 {
            return None;
        }
        DateRule::Month(m as u8, w as u8, d as u8)
    } else {
        DateRule::Zero(num(date).filter(|n| *n <= 365)?)
    };
    Some((rule, time))
}

/// The day (since 1970-01-01) a rule names in `year`.
fn rule_day(rule: DateRule, year: i32) -> i64 {
    let jan1 = Date {
        year,
        month: 1,
        day: 1,
    }
    .days();
    match rule {
        DateRule::Julian(n) => {
            jan1 + i64::from(n) - 1 + i64::from(calendar::is_leap_year(i64::from(year)) && n >= 60)
        }
        DateRule::Zero(n) => jan1 + i64::from(n),
        DateRule::Month(m, w, d) => {
            let first = Date {
                year,
                month: m,
                day: 1,
            }
            .days();
            // Sunday-based weekday of the first of the month.
            let first_wd = (weekday(first) as i64 + 1) % 7;
            let mut day = first + (i64::from(d) - first_wd).rem_euclid(7) + 7 * (i64::from(w) - 1);
            let last = first + i64::from(days_in_month(year, m)) - 1;
            while day > last {
                day -= 7;
            }
            day
        }
    }
}

// ---------------------------------------------------------------------------------------
// Policy

/// A share of a line's measured capacity, in tenths of a percent (1 to 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(u16);

impl Share {
    /// `percent` (above 0, at most 100), to the nearest tenth of a percent.
    pub fn from_percent(percent: f64) -> Option<Share> {
        (percent > 0.0 && percent <= 100.0).then(|| Share(((percent * 10.0).round() as u16).max(1)))
    }

    /// The share in percent.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// This share of `rate`.
    pub fn of(self, rate: u64) -> u64 {
        (u128::from(rate) * u128::from(self.0) / 1000) as u64
    }
}

/// The day of the month a monthly allowance starts again (1 to 28, so that every month
/// has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetDay(u8);

impl ResetDay {
    /// The first of the month.
    pub const FIRST: ResetDay = ResetDay(1);

    /// Day `day` of the month, 1 to 28.
    pub fn new(day: u8) -> Option<ResetDay> {
        (1..=28).contains(&day).then_some(ResetDay(day))
    }

    /// The day of the month.
    pub fn day(self) -> u8 {
        self.0
    }

    /// The month period `date` belongs to, as months since year 0 of the month it starts
    /// in.
    fn period(self, date: Date) -> i64 {
        let month = i64::from(date.year) * 12 + i64::from(date.month) - 1;
        month - i64::from(date.day < self.0)
    }

    /// The first day of month period `period`.
    fn start(self, period: i64) -> Date {
        Date {
            year: period.div_euclid(12) as i32,
            month: (period.rem_euclid(12) + 1) as u8,
            day: self.0,
        }
    }
}

/// When lending is allowed: a set of minutes of the week, in local time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Bit `m` set: minute `m` of the week (Monday 00:00 is 0) is allowed.
    minutes: [u64; SCHEDULE_WORDS],
}

/// A mistake in a schedule, and which setting it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// In the days (`mon-fri,sun`).
    Days(String),
    /// In the hours (`08:00-23:00`, `mon-fri 18:00-23:00; sat,sun 08:00-23:00`).
    Hours(String),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Days(r) | ScheduleError::Hours(r) => f.write_str(r),
        }
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Schedule {
    /// Every minute of every day.
    pub const ALWAYS: Schedule = Schedule {
        minutes: Schedule::all_minutes(),
    };

    const fn all_minutes() -> [u64; SCHEDULE_WORDS] {
        let mut w = [u64::MAX; SCHEDULE_WORDS];
        let rem = MINUTES_PER_WEEK % 64;
        if rem != 0 {
            w[SCHEDULE_WORDS - 1] = (1u64 << rem) - 1;
        }
        w
    }

    /// A schedule from the owner's words: `days` (`mon-fri,sun`; unset: every day) and
    /// `hours` (unset: all day), either ranges for every allowed day (`08:00-23:00`,
    /// `06:00-08:00,18:00-23:30`) or items for some days separated by `;`
    /// (`mon-fri 18:00-23:00; sat,sun 08:00-23:00`). A range whose end is not after its
    /// start runs past midnight, and belongs to the day it starts on: `fri 22:00-06:00`
    /// allows Friday 22:00 to Saturday 06:00. `24:00` ends a day.
    pub fn parse(days: Option<&str>, hours: Option<&str>) -> Result<Schedule, ScheduleError> {
        let allowed_days = match days {
            None => [true; 7],
            Some(d) => parse_days(d).map_err(ScheduleError::Days)?,
        };
        let mut s = Schedule {
            minutes: [0; SCHEDULE_WORDS],
        };
        let Some(hours) = hours else {
            for (day, _) in allowed_days.iter().enumerate().filter(|(_, a)| **a) {
                s.set(day * MINUTES_PER_DAY, (day + 1) * MINUTES_PER_DAY);
            }
            return Ok(s);
        };
        let items: Vec<&str> = hours.split(';').map(str::trim).collect();
        if items.iter().all(|i| i.is_empty()) {
            return Err(ScheduleError::Hours(
                "is empty (give ranges such as 08:00-23:00, or leave it unset for all day)".into(),
            ));
        }
        for item in items.into_iter().filter(|i| !i.is_empty()) {
            let (item_days, ranges) = match item.split_once(char::is_whitespace) {
                Some((d, r)) if !d.contains(':') => {
                    (parse_days(d).map_err(ScheduleError::Hours)?, r.trim())
                }
                _ => ([true; 7], item),
            };
            for range in ranges.split(',').map(str::trim) {
                let (from, to) = parse_range(range).map_err(ScheduleError::Hours)?;
                let to = if to > from { to } else { to + MINUTES_PER_DAY };
                for day in (0..7).filter(|&d| allowed_days[d] && item_days[d]) {
                    let start = day * MINUTES_PER_DAY;
                    s.set(start + from, start + to);
                }
            }
        }
        if s.minutes.iter().all(|w| *w == 0) {
            return Err(ScheduleError::Hours(
                "allows no time at all on the days given".into(),
            ));
        }
        Ok(s)
    }

    /// Allows minutes `from..to` of the week (`to` may run into the next week).
    fn set(&mut self, from: usize, to: usize) {
        for m in from..to {
            let m = m % MINUTES_PER_WEEK;
            self.minutes[m / 64] |= 1 << (m % 64);
        }
    }

    /// Whether lending is allowed at `clock`.
    pub fn allows(&self, clock: WallClock) -> bool {
        let local = clock.local_s();
        let day = local.div_euclid(DAY_S);
        let minute = weekday(day) * MINUTES_PER_DAY + (local.rem_euclid(DAY_S) / 60) as usize;
        self.minutes[minute / 64] & (1 << (minute % 64)) != 0
    }

    /// Whether every minute is allowed.
    pub fn is_always(&self) -> bool {
        *self == Schedule::ALWAYS
    }

    /// Minutes allowed a week.
    pub fn minutes_a_week(&self) -> u32 {
        self.minutes.iter().map(|w| w.count_ones()).sum()
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::ALWAYS
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({} minutes a week)", self.minutes_a_week())
    }
}

fn day_index(name: &str) -> Result<usize, String> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        .or_else(|| DAY_FULL_NAMES.iter().position(|d| *d == lower))
        .ok_or_else(|| {
            format!(
                "unknown day `{name}` (expected mon, tue, wed, thu, fri, sat or sun, or a range such as mon-fri)"
            )
        })
}

/// `mon-fri,sun`: the days named; a range may wrap (`fri-mon`).
fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "`{s}` has an empty day (expected days such as mon-fri,sun)"
            ));
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (day_index(a.trim())?, day_index(b.trim())?),
            None => {
                let d = day_index(part)?;
                (d, d)
            }
        };
        let mut d = a;
        loop {
            days[d] = true;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

/// `HH:MM-HH:MM`, as minutes of the day (the end may be 1440, `24:00`).
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not a time range (expected HH:MM-HH:MM, such as 08:00-23:00)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let time = |t: &str| -> Option<usize> {
        let (h, m) = t.trim().split_once(':')?;
        let ok = |p: &str, max: usize| {
            (!p.is_empty() && p.len() <= 2 && p.bytes().all(|c| c.is_ascii_digit()))
                .then(|| p.parse::<usize>().ok())
                .flatten()
                .filter(|v| *v <= max)
        };
        let (h, m) = (ok(h, 24)?, ok(m, 59)?);
        (h < 24 || m == 0).then_some(h * 60 + m)
    };
    let (from, to) = (time(a).ok_or_else(bad)?, time(b).ok_or_else(bad)?);
    if from == MINUTES_PER_DAY {
        return Err(format!("`{s}` starts at 24:00 (write 00:00)"));
    }
    if from == to {
        return Err(format!("`{s}` is empty (00:00-24:00 is the whole day)"));
    }
    Ok((from, to % (MINUTES_PER_DAY + 1)))
}

/// What a router's owner lends beyond the rate caps of
/// [`RelayPolicy`](crate::relay::RelayPolicy): shares of the measured line, allowances
/// and a schedule. [`SharePolicy::UNLIMITED`] adds no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharePolicy {
    /// The most given upstream, all neighbours together and each, as a share of the line's
    /// measured upstream capacity ([`LineEstimate`]).
    pub up_share: Option<Share>,
    /// The same downstream.
    pub down_share: Option<Share>,
    /// Bytes given a (local) day, up and down together, on the wire.
    pub daily_bytes: Option<u64>,
    /// Bytes given a month, from the reset day on.
    pub monthly_bytes: Option<u64>,
    /// Where the month starts.
    pub monthly_reset_day: ResetDay,
    /// When lending is allowed.
    pub schedule: Schedule,
}

impl SharePolicy {
    /// No limits beyond the rate caps.
    pub const UNLIMITED: SharePolicy = SharePolicy {
        up_share: None,
        down_share: None,
        daily_bytes: None,
        monthly_bytes: None,
        monthly_reset_day: ResetDay::FIRST,
        schedule: Schedule::ALWAYS,
    };

    /// Whether the policy depends on the time of day or the date.
    pub fn needs_clock(&self) -> bool {
        self.daily_bytes.is_some() || self.monthly_bytes.is_some() || !self.schedule.is_always()
    }
}

impl Default for SharePolicy {
    fn default() -> Self {
        SharePolicy::UNLIMITED
    }
}

/// Why the owner's policy refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the owner's hours and days, or before the daemon told the router the time.
    OffSchedule,
    /// Today's allowance would be exceeded.
    OverDaily,
    /// This month's allowance would be exceeded.
    OverMonthly,
    /// A metered line's forecast surplus would be exceeded
    /// ([`MeteredUplink`](crate::metered::MeteredUplink)).
    OverSurplus,
}

impl Refusal {
    /// The counter's name in status.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::OffSchedule => "off_schedule",
            Refusal::OverDaily => "over_daily",
            Refusal::OverMonthly => "over_monthly",
            Refusal::OverSurplus => "over_surplus",
        }
    }
}

/// A direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From neighbours towards the proxy.
    Up,
    /// From the proxy towards neighbours.
    Down,
}

// ---------------------------------------------------------------------------------------
// Line estimate

/// The line's capacity as this router measured it, bytes per second each way: what a
/// [`Share`] is a share of.
///
/// * Upstream: the congestion controller's bottleneck rate of the router's own best
///   uplink (`Path::line_bandwidth`: the most it delivered over the last round trips
///   that filled it; rounds that did not fill it never lower it).
/// * Downstream: the highest rate the router's own uplinks were seen receiving at (its
///   owner's traffic and what it relayed down), averaged over the daemon's two-second
///   tick: a lower bound of the capacity, that rises as the line is used.
///
/// Each is held as a peak that halves over [`LINE_HALF_LIFE`] without a new one, and is
/// kept across reboots in the [`MeterRecord`]. Until a direction was measured, a share of
/// it is nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineEstimate {
    /// Upstream, bytes per second.
    pub up: u64,
    /// Downstream, bytes per second.
    pub down: u64,
    at: Option<Instant>,
    received: Option<(Instant, u64)>,
}

impl LineEstimate {
    /// Takes a measurement: the upstream capacity estimate, and the bytes received so far
    /// (a running total; one that goes down starts over).
    fn observe(&mut self, now: Instant, up_capacity: u64, received: u64) {
        let decay = self.at.map_or(1.0, |t| {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            0.5f64.powf(dt / LINE_HALF_LIFE.as_secs_f64())
        });
        self.at = Some(now);
        let mut down_rate = 0;
        match self.received {
            Some((t, bytes)) if received >= bytes => {
                let dt = now.saturating_duration_since(t);
                if dt < Duration::from_secs(1) {
                    // Too short to average over: wait for the next one.
                    down_rate = 0;
                } else {
                    down_rate = ((received - bytes) as f64 / dt.as_secs_f64()) as u64;
                    self.received = Some((now, received));
                }
            }
            _ => self.received = Some((now, received)),
        }
        self.up = up_capacity.max((self.up as f64 * decay) as u64);
        self.down = down_rate.max((self.down as f64 * decay) as u64);
    }
}

// ---------------------------------------------------------------------------------------
// Meter and record

/// What the meter keeps across reboots: bytes lent on a day and in a month period, and the
/// line's measured rates. Written as one versioned line of `key=value` words:
///
/// ```text
/// v1 day=2024-02-29 day_bytes=1234 month=2024-02-15 month_bytes=56789 line_up=1250000 line_down=6250000 check=…
/// ```
///
/// `check` is 16 hex digits of FNV-1a over what comes before it, so that a damaged
/// record is refused rather than half read.
///
/// `month` is the first day of the month period (its day is the reset day in force when
/// the record was written). Counts may include a reservation ahead of what was lent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterRecord {
    /// The local day the day count is for.
    pub day: Date,
    /// Bytes lent that day (at most).
    pub day_bytes: u64,
    /// The first day of the month period the month count is for.
    pub month: Date,
    /// Bytes lent in that period (at most).
    pub month_bytes: u64,
    /// Upstream line estimate, bytes per second.
    pub line_up: u64,
    /// Downstream line estimate, bytes per second.
    pub line_down: u64,
}

impl fmt::Display for MeterRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_record(
            f,
            format_args!(
                "day={} day_bytes={} month={} month_bytes={} line_up={} line_down={}",
                self.day,
                self.day_bytes,
                self.month,
                self.month_bytes,
                self.line_up,
                self.line_down
            ),
        )
    }
}

/// The state-file records' format version.
const RECORD_VERSION: &str = "v1";

/// FNV-1a, 64 bits: enough to tell a damaged record (flash, a hand edit) from a good one.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a state-file record: the version, `fields` (`key=value` words), and a check
/// over both.
pub(crate) fn write_record(f: &mut fmt::Formatter<'_>, fields: fmt::Arguments<'_>) -> fmt::Result {
    let body = format!("{RECORD_VERSION} {fields}");
    write!(f, "{body} check={:016x}", fnv1a(body.as_bytes()))
}

/// The fields of a record [`write_record`] wrote, by key, each present once.
pub(crate) struct RecordFields<'a, const N: usize> {
    keys: [&'static str; N],
    values: [&'a str; N],
}

impl<'a, const N: usize> RecordFields<'a, N> {
    /// Reads a `what` record (for messages) with exactly `keys`; the reason when it is
    /// not one.
    pub(crate) fn read(s: &'a str, what: &str, keys: [&'static str; N]) -> Result<Self, String> {
        let s = s.trim();
        let (body, check) = s
            .rsplit_once(" check=")
            .ok_or_else(|| "no `check=` at its end: cut short or edited".to_string())?;
        let check = (check.len() == 16)
            .then(|| u64::from_str_radix(check, 16).ok())
            .flatten()
            .ok_or_else(|| format!("`check={check}` is not 16 hex digits"))?;
        if check != fnv1a(body.as_bytes()) {
            return Err("its check does not match: damaged or edited".into());
        }
        let mut words = body.split_whitespace();
        match words.next() {
            Some(RECORD_VERSION) => {}
            Some(v) => return Err(format!("unknown {what} record version `{v}`")),
            None => return Err(format!("empty {what} record")),
        }
        let mut values: [Option<&str>; N] = [None; N];
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("`{w}` is not key=value"))?;
            let i = keys
                .iter()
                .position(|x| *x == k)
                .ok_or_else(|| format!("unknown key `{k}`"))?;
            if values[i].replace(v).is_some() {
                return Err(format!("`{k}` given twice"));
            }
        }
        let mut all = [""; N];
        for (i, v) in values.iter().enumerate() {
            all[i] = v.ok_or_else(|| format!("`{}` missing", keys[i]))?;
        }
        Ok(RecordFields { keys, values: all })
    }

    /// The value of key `i`, as written.
    pub(crate) fn text(&self, i: usize) -> &'a str {
        self.values[i]
    }

    /// The value of key `i`, a date.
    pub(crate) fn date(&self, i: usize) -> Result<Date, String> {
        let v = self.values[i];
        v.parse()
            .map_err(|()| format!("`{}={v}` is not a date (YYYY-MM-DD)", self.keys[i]))
    }

    /// The value of key `i`, a count.
    pub(crate) fn count(&self, i: usize) -> Result<u64, String> {
        let v = self.values[i];
        v.parse()
            .map_err(|_| format!("`{}={v}` is not a count", self.keys[i]))
    }

    /// A day and the start of the month period it falls in, at keys `day` and `month`:
    /// the period must hold the day.
    pub(crate) fn periods(&self, day: usize, month: usize) -> Result<(Date, Date), String> {
        let (day, month) = (self.date(day)?, self.date(month)?);
        if month > day || day.days() - month.days() > 31 {
            return Err(format!(
                "the month period from {month} does not hold the day {day}"
            ));
        }
        Ok((day, month))
    }
}

impl MeterRecord {
    /// Reads a record written by [`fmt::Display`]; the reason when it is not one.
    pub fn parse(s: &str) -> Result<MeterRecord, String> {
        let r = RecordFields::read(
            s,
            "meter",
            [
                "day",
                "day_bytes",
                "month",
                "month_bytes",
                "line_up",
                "line_down",
            ],
        )?;
        let (day, month) = r.periods(0, 2)?;
        Ok(MeterRecord {
            day,
            day_bytes: r.count(1)?,
            month,
            month_bytes: r.count(3)?,
            line_up: r.count(4)?,
            line_down: r.count(5)?,
        })
    }
}

/// Bytes lent on the current day and in the current month period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meter {
    /// Local days since 1970-01-01 of the day counted; `None` before the first clock.
    day: Option<i64>,
    /// The month period counted ([`ResetDay::period`]).
    month: Option<i64>,
    lent_day: u64,
    lent_month: u64,
    /// Since the last checkpoint.
    since_save: u64,
    saved_at: Option<Instant>,
    saved_periods: (Option<i64>, Option<i64>),
    /// What the last checkpoint reserved ahead.
    reserve: u64,
}

impl Meter {
    const NEW: Meter = Meter {
        day: None,
        month: None,
        lent_day: 0,
        lent_month: 0,
        since_save: 0,
        saved_at: None,
        saved_periods: (None, None),
        reserve: 0,
    };

    /// Counts in the periods of `date`. Periods never go back: a clock set back (or
    /// behind after a reboot) keeps counting in the later period, which only makes the
    /// meter stricter.
    fn roll(&mut self, date: Date, reset: ResetDay) {
        let day = date.days();
        if self.day.is_none_or(|d| day > d) {
            self.day = Some(day);
            self.lent_day = 0;
        }
        let month = reset.period(date);
        if self.month.is_none_or(|m| month > m) {
            self.month = Some(month);
            self.lent_month = 0;
        }
    }

    /// What was lent in the periods of `date` (without moving to them).
    fn lent_on(&self, date: Date, reset: ResetDay) -> (u64, u64) {
        let day = if self.day.is_some_and(|d| d >= date.days()) {
            self.lent_day
        } else {
            0
        };
        let month = if self.month.is_some_and(|m| m >= reset.period(date)) {
            self.lent_month
        } else {
            0
        };
        (day, month)
    }
}

/// A snapshot of the meter for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterStatus {
    /// The local date now, if the router knows the time.
    pub today: Option<Date>,
    /// Bytes lent today (`u64::MAX`: unknown, taken as all of it).
    pub lent_today: u64,
    /// Bytes lent in this month period.
    pub lent_month: u64,
    /// The first day of this month period.
    pub month_start: Option<Date>,
    /// Whether the schedule allows lending now.
    pub in_schedule: bool,
    /// Whether the router lends now (sharing aside): in the schedule, with allowance left.
    pub lending: bool,
    /// Why not, when it does not.
    pub why_not: Option<Refusal>,
}

/// The owner's lending policy with its meter, the line estimate and the wall clock: what
/// the [`Relay`](crate::relay::Relay) asks about every datagram.
#[derive(Debug, Clone)]
pub struct Lending {
    policy: SharePolicy,
    /// The wall clock at an instant: the clock at a later instant is reckoned from it.
    clock: Option<(Instant, WallClock)>,
    meter: Meter,
    line: LineEstimate,
}

impl Default for Lending {
    fn default() -> Self {
        Lending::new(SharePolicy::UNLIMITED)
    }
}

impl Lending {
    /// Nothing lent yet, no clock yet.
    pub fn new(policy: SharePolicy) -> Lending {
        Lending {
            policy,
            clock: None,
            meter: Meter::NEW,
            line: LineEstimate::default(),
        }
    }

    /// The owner's policy.
    pub fn policy(&self) -> &SharePolicy {
        &self.policy
    }

    /// A new policy: it holds from the next datagram; what was lent stays counted.
    pub fn set_policy(&mut self, policy: SharePolicy) {
        self.policy = policy;
    }

    /// The wall clock at `now`. The daemon sets it at start and then often (every tick),
    /// so that a clock that is stepped (NTP) or a new UTC offset (daylight saving time)
    /// is followed; between two calls the clock is reckoned from `now`.
    pub fn set_clock(&mut self, now: Instant, clock: WallClock) {
        self.clock = Some((now, clock));
    }

    /// The wall clock at `now`, if the daemon gave it.
    pub fn clock(&self, now: Instant) -> Option<WallClock> {
        let (at, c) = self.clock?;
        let unix_s = match now.checked_duration_since(at) {
            Some(d) => c.unix_s.saturating_add(d.as_secs() as i64),
            None => c
                .unix_s
                .saturating_sub(at.duration_since(now).as_secs() as i64),
        };
        Some(WallClock { unix_s, ..c })
    }

    /// Whether `len` more bytes on the wire may be lent at `now` (the rate caps aside):
    /// in the schedule, and within both allowances. Takes nothing: call
    /// [`Lending::lend`] once the datagram goes.
    pub fn check(&mut self, now: Instant, len: u64) -> Result<(), Refusal> {
        if !self.policy.needs_clock() {
            // Counted for status when the time is known; nothing to refuse.
            if let Some(c) = self.clock(now) {
                self.meter.roll(c.date(), self.policy.monthly_reset_day);
            }
            return Ok(());
        }
        let clock = self.clock(now).ok_or(Refusal::OffSchedule)?;
        if !self.policy.schedule.allows(clock) {
            return Err(Refusal::OffSchedule);
        }
        self.meter.roll(clock.date(), self.policy.monthly_reset_day);
        let fits = |lent: u64, allowance: Option<u64>| {
            allowance.is_none_or(|a| lent.checked_add(len).is_some_and(|n| n <= a))
        };
        if !fits(self.meter.lent_month, self.policy.monthly_bytes) {
            return Err(Refusal::OverMonthly);
        }
        if !fits(self.meter.lent_day, self.policy.daily_bytes) {
            return Err(Refusal::OverDaily);
        }
        Ok(())
    }

    /// Counts `len` bytes lent (after [`Lending::check`] passed them).
    pub fn lend(&mut self, len: u64) {
        if self.meter.day.is_none() {
            // No clock: nothing to count them in (and nothing to refuse them by).
            return;
        }
        self.meter.lent_day = self.meter.lent_day.saturating_add(len);
        self.meter.lent_month = self.meter.lent_month.saturating_add(len);
        self.meter.since_save = self.meter.since_save.saturating_add(len);
    }

    /// The meter at `now`, for status and the hellos' offer.
    pub fn status(&self, now: Instant) -> MeterStatus {
        let reset = self.policy.monthly_reset_day;
        let Some(clock) = self.clock(now) else {
            let lending = !self.policy.needs_clock();
            return MeterStatus {
                today: None,
                lent_today: 0,
                lent_month: 0,
                month_start: None,
                in_schedule: lending,
                lending,
                why_not: (!lending).then_some(Refusal::OffSchedule),
            };
        };
        let date = clock.date();
        let (lent_today, lent_month) = self.meter.lent_on(date, reset);
        let month = reset.period(date).max(self.meter.month.unwrap_or(i64::MIN));
        let in_schedule = self.policy.schedule.allows(clock);
        let left = |lent: u64, allowance: Option<u64>| {
            allowance.is_none_or(|a| a.saturating_sub(lent) >= LEAST_OFFERED)
        };
        let why_not = if !in_schedule {
            Some(Refusal::OffSchedule)
        } else if !left(lent_month, self.policy.monthly_bytes) {
            Some(Refusal::OverMonthly)
        } else if !left(lent_today, self.policy.daily_bytes) {
            Some(Refusal::OverDaily)
        } else {
            None
        };
        MeterStatus {
            today: Some(date),
            lent_today,
            lent_month,
            month_start: Some(reset.start(month)),
            in_schedule,
            lending: why_not.is_none(),
            why_not,
        }
    }

    /// Whether the router lends at `now` (sharing and rate caps aside): what the hellos
    /// offer neighbours. An allowance with less than a largest datagram left counts as
    /// used up.
    pub fn lending_now(&self, now: Instant) -> bool {
        self.status(now).lending
    }

    /// The most relayed traffic may use one way: `cap` (the owner's rate cap, bytes per
    /// second), or less when the owner gave a share of the line.
    pub fn cap(&self, direction: Direction, cap: u64) -> u64 {
        let (share, line) = match direction {
            Direction::Up => (self.policy.up_share, self.line.up),
            Direction::Down => (self.policy.down_share, self.line.down),
        };
        share.map_or(cap, |s| cap.min(s.of(line)))
    }

    /// A measurement of the line (see [`LineEstimate`]): its upstream capacity estimate,
    /// and all bytes its uplinks received so far.
    pub fn observe_line(&mut self, now: Instant, up_capacity: u64, received: u64) {
        self.line.observe(now, up_capacity, received);
    }

    /// The line as measured.
    pub fn line(&self) -> &LineEstimate {
        &self.line
    }

    /// Whether the meter should be written to the state file now: never written since
    /// the start (once the router knows the time); half the reservation used; or
    /// something lent in a day or month the last record does not cover.
    pub fn needs_save(&self) -> bool {
        let m = &self.meter;
        if m.saved_at.is_none() {
            return self.clock.is_some();
        }
        m.since_save > 0
            && (m.since_save.saturating_mul(2) >= m.reserve || m.saved_periods != (m.day, m.month))
    }

    /// A record to write now, reserving ahead of what was lent: as much as would be lent
    /// in twice [`SAVE_EVERY`] at the rate since the last record, from [`RESERVE_MIN`] to
    /// [`RESERVE_MAX`], and never beyond the allowances. `None` before the router knows
    /// the time. The meter takes it as written.
    pub fn checkpoint(&mut self, now: Instant) -> Option<MeterRecord> {
        let elapsed = self
            .meter
            .saved_at
            .map_or(SAVE_EVERY, |t| now.saturating_duration_since(t))
            .max(Duration::from_secs(1));
        let rate = self.meter.since_save as f64 / elapsed.as_secs_f64();
        let reserve =
            ((rate * 2.0 * SAVE_EVERY.as_secs_f64()) as u64).clamp(RESERVE_MIN, RESERVE_MAX);
        self.record(now, reserve)
    }

    /// A record of exactly what was lent (at a clean stop).
    pub fn checkpoint_exact(&mut self, now: Instant) -> Option<MeterRecord> {
        self.record(now, 0)
    }

    fn record(&mut self, now: Instant, reserve: u64) -> Option<MeterRecord> {
        let clock = self.clock(now)?;
        let reset = self.policy.monthly_reset_day;
        self.meter.roll(clock.date(), reset);
        let m = &mut self.meter;
        let (day, month) = (m.day?, m.month?);
        let ahead = |lent: u64, allowance: Option<u64>| {
            lent.saturating_add(reserve)
                .min(allowance.unwrap_or(u64::MAX).max(lent))
        };
        let record = MeterRecord {
            day: Date::from_days(day),
            day_bytes: ahead(m.lent_day, self.policy.daily_bytes),
            month: reset.start(month),
            month_bytes: ahead(m.lent_month, self.policy.monthly_bytes),
            line_up: self.line.up,
            line_down: self.line.down,
        };
        m.since_save = 0;
        m.saved_at = Some(now);
        m.saved_periods = (m.day, m.month);
        m.reserve = reserve;
        Some(record)
    }

    /// Takes up the counts of a record read at start: they count in their day and month
    /// (and in later ones only once those start).
    pub fn restore(&mut self, record: &MeterRecord) {
        let m = &mut self.meter;
        let day = record.day.days();
        let month = i64::from(record.month.year) * 12 + i64::from(record.month.month) - 1;
        if m.day.is_none_or(|d| day >= d) {
            m.lent_day = if m.day == Some(day) {
                m.lent_day.max(record.day_bytes)
            } else {
                record.day_bytes
            };
            m.day = Some(day);
        }
        if m.month.is_none_or(|x| month >= x) {
            m.lent_month = if m.month == Some(month) {
                m.lent_month.max(record.month_bytes)
            } else {
                record.month_bytes
            };
            m.month = Some(month);
        }
        self.line.up = self.line.up.max(record.line_up);
        self.line.down = self.line.down.max(record.line_down);
    }

    /// After a record that could not be read: today's and this month's allowances count
    /// as used up (a meter that forgot must not lend what may have been lent already).
    /// Call it once the clock is set: without one, it holds only until the first.
    pub fn assume_used_up(&mut self, now: Instant) {
        if let Some(c) = self.clock(now) {
            self.meter.roll(c.date(), self.policy.monthly_reset_day);
        }
        self.meter.day.get_or_insert(i64::MIN);
        self.meter.month.get_or_insert(i64::MIN);
        self.meter.lent_day = u64::MAX;
        self.meter.lent_month = u64::MAX;
    }
}

/// Dates and clocks for the unit tests of what counts by local day and month.
#[cfg(test)]
pub(crate) mod test_clock {
    use super::{DAY_S, Date, WallClock};

    pub(crate) fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    /// Unix seconds of a UTC date and time.
    pub(crate) fn at(d: &str, h: i64, m: i64) -> i64 {
        date(d).days() * DAY_S + h * 3600 + m * 60
    }

    pub(crate) fn utc(unix_s: i64) -> WallClock {
        WallClock {
            unix_s,
            utc_offset_s: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_clock::{at, date, utc};
    use super::*;

    #[test]
    fn the_calendar_without_a_date_crate() {
        assert_eq!(Date::from_days(0), date("1970-01-01"));
        assert_eq!(date("1970-01-01").weekday(), 3, "a Thursday");
        assert_eq!(date("2000-03-01").days(), 11_017);
        assert_eq!(date("2024-02-29").weekday(), 3);
        assert_eq!(date("2024-03-01").days() - date("2024-02-28").days(), 2);
        assert_eq!(date("2023-03-01").days() - date("2023-02-28").days(), 1);
        assert_eq!(date("2100-03-01").days() - date("2100-02-28").days(), 1);
        assert_eq!(Date::from_days(-1), date("1969-12-31"));
        // Every day round trips over four centuries (leap rules of 100 and 400 included).
        let start = date("1900-01-01").days();
        let mut prev = Date::from_days(start - 1);
        for d in start..start + 146_097 {
            let date = Date::from_days(d);
            assert_eq!(date.days(), d);
            assert!(date > prev);
            assert!(Date::new(date.year, date.month, date.day).is_some());
            prev = date;
        }
        assert!("2023-02-29".parse::<Date>().is_err());
        assert!("2024-13-01".parse::<Date>().is_err());
        assert!("24-01-01".parse::<Date>().is_err());
        assert_eq!(date("2024-02-29").to_string(), "2024-02-29");
    }

    #[test]
    fn posix_time_zones() {
        let paris = PosixTz::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(paris.std_offset_s, 3600);
        // 2024: summer time from Sunday March 31 01:00 UTC to Sunday October 27 01:00 UTC.
        assert_eq!(paris.offset_at(at("2024-03-31", 0, 59)), 3600);
        assert_eq!(paris.offset_at(at("2024-03-31", 1, 0)), 7200);
        assert_eq!(paris.offset_at(at("2024-10-27", 0, 59)), 7200);
        assert_eq!(paris.offset_at(at("2024-10-27", 1, 0)), 3600);
        let new_york = PosixTz::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(new_york.offset_at(at("2024-01-15", 12, 0)), -5 * 3600);
        assert_eq!(new_york.offset_at(at("2024-07-15", 12, 0)), -4 * 3600);
        // No rule: the US one.
        assert_eq!(PosixTz::parse("EST5EDT"), Some(new_york));
        // Southern hemisphere: summer spans the new year.
        let sydney = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(sydney.offset_at(at("2024-01-15", 0, 0)), 11 * 3600);
        assert_eq!(sydney.offset_at(at("2024-07-15", 0, 0)), 10 * 3600);
        let india = PosixTz::parse("<+0530>-5:30").unwrap();
        assert_eq!(india.offset_at(0), 5 * 3600 + 1800);
        assert_eq!(PosixTz::parse("UTC0"), Some(PosixTz::UTC));
        assert_eq!(
            PosixTz::parse("GMT0")
                .unwrap()
                .offset_at(at("2024-07-01", 0, 0)),
            0
        );
        for bad in [
            "",
            "Europe/Paris",
            ":/etc/localtime",
            "CET",
            "CE-1",
            "CET-1CEST,M13.1.0,M1.1.0",
        ] {
            assert_eq!(PosixTz::parse(bad), None, "{bad}");
        }
        let c = paris.clock(at("2024-07-01", 22, 30));
        assert_eq!((c.date(), c.utc_offset_s), (date("2024-07-02"), 7200));
    }

    #[test]
    fn schedules_by_day_and_hour_wrapping_midnight() {
        // 2024-01-01 is a Monday.
        let monday = |h: i64, m: i64| utc(at("2024-01-01", h, m));
        let day = |d: i64, h: i64| utc(at("2024-01-01", h, 0) + d * DAY_S);
        let s = Schedule::parse(None, Some("08:00-23:00")).unwrap();
        assert!(!s.allows(monday(7, 59)));
        assert!(s.allows(monday(8, 0)));
        assert!(s.allows(monday(22, 59)));
        assert!(!s.allows(monday(23, 0)));
        assert_eq!(s.minutes_a_week(), 7 * 15 * 60);
        // Past midnight: Friday's night runs into Saturday morning, Sunday's into Monday's.
        let s = Schedule::parse(Some("fri,sun"), Some("22:00-06:00")).unwrap();
        assert!(s.allows(day(4, 23)));
        assert!(s.allows(day(5, 5)), "Saturday 05:00 is Friday's night");
        assert!(!s.allows(day(5, 23)), "not Saturday's own night");
        assert!(s.allows(day(7, 3)), "Monday 03:00 is Sunday's night");
        assert!(!s.allows(day(1, 3)));
        // Days only; wrapping day ranges; per-day hours.
        let s = Schedule::parse(Some("sat-mon"), None).unwrap();
        assert!(s.allows(day(0, 12)) && s.allows(day(5, 0)) && s.allows(day(6, 23)));
        assert!(!s.allows(day(1, 12)));
        let s = Schedule::parse(None, Some("mon-fri 18:00-23:00; sat,sun 08:00-24:00")).unwrap();
        assert!(s.allows(day(2, 19)) && !s.allows(day(2, 9)));
        assert!(s.allows(day(6, 9)) && s.allows(utc(at("2024-01-07", 23, 59))));
        // `days` restricts the items.
        let s = Schedule::parse(Some("mon"), Some("mon-fri 18:00-19:00")).unwrap();
        assert_eq!(s.minutes_a_week(), 60);
        // In local time.
        let s = Schedule::parse(None, Some("08:00-09:00")).unwrap();
        let c = WallClock {
            unix_s: at("2024-01-01", 7, 30),
            utc_offset_s: 3600,
        };
        assert!(s.allows(c));
        assert!(Schedule::parse(None, None).unwrap().is_always());
        assert!(
            Schedule::parse(Some("mon-sun"), Some("00:00-24:00"))
                .unwrap()
                .is_always()
        );
    }

    #[test]
    fn schedule_mistakes_say_what_is_wrong() {
        let days = |d: &str| match Schedule::parse(Some(d), None) {
            Err(ScheduleError::Days(r)) => r,
            other => panic!("{d}: {other:?}"),
        };
        let hours = |h: &str| match Schedule::parse(None, Some(h)) {
            Err(ScheduleError::Hours(r)) => r,
            other => panic!("{h}: {other:?}"),
        };
        assert!(days("mo-fr").contains("unknown day `mo`"));
        assert!(days("mon,,sun").contains("empty day"));
        assert!(hours("8h-23h").contains("not a time range"));
        assert!(hours("08:00-25:00").contains("not a time range"));
        assert!(hours("08:00-08:00").contains("is empty"));
        assert!(hours("24:00-08:00").contains("starts at 24:00"));
        assert!(hours("").contains("is empty"));
        assert!(hours("xyz 08:00-09:00").contains("unknown day `xyz`"));
    }

    fn policy() -> SharePolicy {
        SharePolicy::UNLIMITED
    }

    /// A lending set to `unix_s` at `t0`.
    fn lending(policy: SharePolicy, t0: Instant, unix_s: i64) -> Lending {
        let mut l = Lending::new(policy);
        l.set_clock(t0, utc(unix_s));
        l
    }

    fn lend(l: &mut Lending, now: Instant, len: u64) -> Result<(), Refusal> {
        l.check(now, len)?;
        l.lend(len);
        Ok(())
    }

    /// The daily allowance holds to the byte, and a new local day gives it back.
    #[test]
    fn daily_allowance_never_over_by_a_byte() {
        let t0 = Instant::now();
        let mut l = lending(
            SharePolicy {
                daily_bytes: Some(10_000),
                ..policy()
            },
            t0,
            at("2024-05-10", 23, 0),
        );
        let mut given = 0;
        for len in [1400u64, 1400, 1400, 1400, 1400, 1400, 1400, 100, 1] {
            if lend(&mut l, t0, len).is_ok() {
                given += len;
            }
        }
        // 7 × 1400 = 9800, then 100 fits exactly to 9900, then 1 to 9901.
        assert_eq!(given, 9901);
        assert_eq!(lend(&mut l, t0, 100), Err(Refusal::OverDaily));
        assert_eq!(lend(&mut l, t0, 99), Ok(()));
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OverDaily));
        assert_eq!(l.status(t0).lent_today, 10_000);
        assert!(!l.lending_now(t0));
        assert_eq!(l.status(t0).why_not, Some(Refusal::OverDaily));
        // Midnight, local time: a new allowance.
        let t1 = t0 + Duration::from_secs(3600);
        assert!(l.lending_now(t1));
        assert_eq!(lend(&mut l, t1, 1400), Ok(()));
        assert_eq!(l.status(t1).lent_today, 1400);
        assert_eq!(l.status(t1).lent_month, 11_400);
    }

    /// Local midnight, not UTC's.
    #[test]
    fn days_are_local() {
        let t0 = Instant::now();
        let mut l = Lending::new(SharePolicy {
            daily_bytes: Some(1000),
            ..policy()
        });
        // 22:30 UTC is 00:30 the next day at UTC+2.
        l.set_clock(
            t0,
            WallClock {
                unix_s: at("2024-05-10", 22, 30),
                utc_offset_s: 7200,
            },
        );
        assert_eq!(l.status(t0).today, Some(date("2024-05-11")));
    }

    /// The month starts again on the reset day, across a month's end and a leap February.
    #[test]
    fn monthly_allowance_resets_on_its_day() {
        let t0 = Instant::now();
        let days = |n: u64| t0 + Duration::from_secs(n * 86_400);
        let mut l = lending(
            SharePolicy {
                monthly_bytes: Some(5_000),
                monthly_reset_day: ResetDay::new(28).unwrap(),
                ..policy()
            },
            t0,
            at("2024-01-27", 12, 0),
        );
        assert_eq!(l.status(t0).month_start, Some(date("2023-12-28")));
        assert_eq!(lend(&mut l, t0, 5_000), Ok(()));
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OverMonthly));
        // January 28: a new month period.
        assert_eq!(lend(&mut l, days(1), 3_000), Ok(()));
        assert_eq!(l.status(days(1)).month_start, Some(date("2024-01-28")));
        // February 27, 28, 29 (leap), March 1: the 28th starts the next one.
        assert_eq!(l.status(days(31)).today, Some(date("2024-02-27")));
        assert_eq!(lend(&mut l, days(31), 2_000), Ok(()));
        assert_eq!(lend(&mut l, days(31), 1), Err(Refusal::OverMonthly));
        assert_eq!(lend(&mut l, days(32), 5_000), Ok(()), "Feb 28: new period");
        assert_eq!(l.status(days(33)).today, Some(date("2024-02-29")));
        assert_eq!(lend(&mut l, days(33), 1), Err(Refusal::OverMonthly));
        assert_eq!(l.status(days(34)).today, Some(date("2024-03-01")));
        assert_eq!(lend(&mut l, days(34), 1), Err(Refusal::OverMonthly));
        assert_eq!(l.status(days(60)).today, Some(date("2024-03-27")));
        assert_eq!(lend(&mut l, days(60), 1), Err(Refusal::OverMonthly));
        assert_eq!(lend(&mut l, days(61), 1), Ok(()), "March 28");
        assert_eq!(l.status(days(61)).month_start, Some(date("2024-03-28")));
        // Reset on the 1st: a month is a calendar month.
        let mut l = lending(
            SharePolicy {
                monthly_bytes: Some(100),
                ..policy()
            },
            t0,
            at("2024-02-29", 23, 59),
        );
        assert_eq!(lend(&mut l, t0, 100), Ok(()));
        assert_eq!(
            lend(&mut l, t0 + Duration::from_secs(30), 1),
            Err(Refusal::OverMonthly)
        );
        assert_eq!(lend(&mut l, t0 + Duration::from_secs(60), 100), Ok(()));
    }

    /// Monthly is reported before daily: it is the one that lasts.
    #[test]
    fn both_allowances_hold() {
        let t0 = Instant::now();
        let mut l = lending(
            SharePolicy {
                daily_bytes: Some(3_000),
                monthly_bytes: Some(4_000),
                ..policy()
            },
            t0,
            at("2024-05-10", 12, 0),
        );
        assert_eq!(lend(&mut l, t0, 3_000), Ok(()));
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OverDaily));
        let tomorrow = t0 + Duration::from_secs(86_400);
        assert_eq!(lend(&mut l, tomorrow, 1_000), Ok(()));
        assert_eq!(lend(&mut l, tomorrow, 1), Err(Refusal::OverMonthly));
    }

    #[test]
    fn off_schedule_and_without_a_clock() {
        let t0 = Instant::now();
        let p = SharePolicy {
            schedule: Schedule::parse(Some("mon-fri"), Some("22:00-06:00")).unwrap(),
            ..policy()
        };
        // Friday 23:00 and Saturday 05:59 lend; Saturday 06:00 does not.
        let mut l = lending(p, t0, at("2024-01-05", 23, 0));
        assert_eq!(lend(&mut l, t0, 1), Ok(()));
        let sat = |h: u64, m: u64| t0 + Duration::from_secs((h + 1) * 3600 + m * 60);
        assert_eq!(lend(&mut l, sat(5, 59), 1), Ok(()));
        assert_eq!(lend(&mut l, sat(6, 0), 1), Err(Refusal::OffSchedule));
        assert!(!l.lending_now(sat(6, 0)));
        // Unknown time: a schedule cannot be kept, so nothing is lent.
        let mut l = Lending::new(p);
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OffSchedule));
        assert!(!l.lending_now(t0));
        // Without limits that need it, no clock is needed.
        let mut l = Lending::new(policy());
        assert_eq!(lend(&mut l, t0, 1), Ok(()));
        assert!(l.lending_now(t0));
    }

    /// A clock set back never reopens an allowance.
    #[test]
    fn periods_never_go_back() {
        let t0 = Instant::now();
        let mut l = lending(
            SharePolicy {
                daily_bytes: Some(100),
                ..policy()
            },
            t0,
            at("2024-05-10", 12, 0),
        );
        assert_eq!(lend(&mut l, t0, 100), Ok(()));
        l.set_clock(t0, utc(at("2024-05-09", 12, 0)));
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OverDaily));
    }

    #[test]
    fn shares_of_the_measured_line() {
        let t0 = Instant::now();
        let mut l = Lending::new(SharePolicy {
            up_share: Share::from_percent(30.0),
            down_share: Share::from_percent(12.5),
            ..policy()
        });
        // Not measured yet: nothing.
        assert_eq!(l.cap(Direction::Up, u64::MAX), 0);
        l.observe_line(t0, 1_000_000, 0);
        l.observe_line(t0 + Duration::from_secs(2), 900_000, 16_000_000);
        // A peak is held (it decays by a few parts in a million over two seconds).
        assert!(
            (999_990..=1_000_000).contains(&l.line().up),
            "{:?}",
            l.line()
        );
        assert_eq!(l.line().down, 8_000_000);
        assert!((299_990..=300_000).contains(&l.cap(Direction::Up, u64::MAX)));
        assert_eq!(l.cap(Direction::Down, u64::MAX), 1_000_000);
        assert_eq!(l.cap(Direction::Up, 200_000), 200_000, "the lesser cap");
        // A week later, not measured again: half.
        l.observe_line(t0 + LINE_HALF_LIFE, 0, 16_000_000);
        assert!((499_000..=501_000).contains(&l.line().up), "{:?}", l.line());
        assert!((3_990_000..=4_010_000).contains(&l.line().down));
        // A running total that goes down (a path closed) starts over.
        l.observe_line(t0 + LINE_HALF_LIFE * 2, 0, 5);
        assert!(l.line().down > 0);
        assert_eq!(Share::from_percent(0.0), None);
        assert_eq!(Share::from_percent(100.5), None);
        assert_eq!(Share::from_percent(100.0).unwrap().of(7), 7);
        assert_eq!(Share::from_percent(0.01).unwrap().percent(), 0.1);
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let r = MeterRecord {
            day: date("2024-02-29"),
            day_bytes: 1234,
            month: date("2024-02-15"),
            month_bytes: 56_789,
            line_up: 1_250_000,
            line_down: 6_250_000,
        };
        let text = r.to_string();
        let body = "v1 day=2024-02-29 day_bytes=1234 month=2024-02-15 month_bytes=56789 line_up=1250000 line_down=6250000";
        assert_eq!(
            text,
            format!("{body} check={:016x}", fnv1a(body.as_bytes()))
        );
        assert_eq!(MeterRecord::parse(&text), Ok(r));
        assert_eq!(MeterRecord::parse(&format!(" {text}\n")), Ok(r));
        // Damaged anywhere: refused by the check.
        let damaged = text.replace("1234", "1235");
        assert!(
            MeterRecord::parse(&damaged)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            MeterRecord::parse(body)
                .unwrap_err()
                .contains("no `check=`")
        );
        assert!(MeterRecord::parse("").unwrap_err().contains("no `check=`"));
        let short = &text[..text.len() - 1];
        assert!(
            MeterRecord::parse(short)
                .unwrap_err()
                .contains("16 hex digits")
        );
        // Well checked but wrong inside: refused naming what.
        let signed = |b: &str| format!("{b} check={:016x}", fnv1a(b.as_bytes()));
        for (bad, why) in [
            ("v2 day=2024-02-29", "version `v2`"),
            (
                "v1 day=2024-02-30 day_bytes=1 month=2024-02-15 month_bytes=1 line_up=0 line_down=0",
                "not a date",
            ),
            (
                "v1 day=2024-02-29 day_bytes=-1 month=2024-02-15 month_bytes=1 line_up=0 line_down=0",
                "not a count",
            ),
            (
                "v1 day=2024-02-29 month=2024-02-15 month_bytes=1 line_up=0 line_down=0",
                "`day_bytes` missing",
            ),
            (
                "v1 day=2024-02-29 day=2024-02-29 day_bytes=1 month=2024-02-15 month_bytes=1 line_up=0 line_down=0",
                "twice",
            ),
            (
                "v1 day=2024-02-29 day_bytes=1 month=2024-02-15 month_bytes=1 line_up=0 line_down=0 x=1",
                "unknown key",
            ),
            (
                "v1 day=2024-02-29 day_bytes=1 month=2023-02-15 month_bytes=1 line_up=0 line_down=0",
                "does not hold",
            ),
            (
                "v1 day=2024-02-29 day_bytes=1 month=2024-02-15 month_bytes 1 line_up=0 line_down=0",
                "key=value",
            ),
        ] {
            let e = MeterRecord::parse(&signed(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Truncated anywhere: refused, never half-read.
        for n in 0..text.len() {
            if let Ok(r2) = MeterRecord::parse(&text[..n]) {
                panic!("{n}: {r2:?}");
            }
        }
    }

    /// What was lent survives a restart: a clean stop keeps it exactly; a crash keeps at
    /// least it (the reservation), so it never lends more than allowed.
    #[test]
    fn the_meter_survives_a_restart_and_a_crash_never_over() {
        let t0 = Instant::now();
        let p = SharePolicy {
            daily_bytes: Some(100_000_000),
            monthly_bytes: Some(1_000_000_000),
            ..policy()
        };
        let noon = at("2024-05-10", 12, 0);
        assert!(
            !Lending::new(p).needs_save(),
            "nothing to write before the time is known"
        );
        assert_eq!(Lending::new(p).checkpoint(t0), None);
        let mut l = lending(p, t0, noon);
        l.observe_line(t0, 1_000_000, 0);
        assert!(l.needs_save(), "never written this run");
        let first = l.checkpoint(t0).unwrap();
        assert_eq!(first.day_bytes, RESERVE_MIN, "the reservation ahead");
        assert!(!l.needs_save());
        lend(&mut l, t0, 3_000_000).unwrap();
        assert!(!l.needs_save(), "within half the reservation");
        lend(&mut l, t0, 2_000_000).unwrap();
        assert!(l.needs_save(), "half of it used");
        // Crash after this checkpoint: the next run starts at least where this one was.
        let t1 = t0 + Duration::from_secs(10);
        let crash = l.checkpoint(t1).unwrap();
        lend(&mut l, t1, 1_000_000).unwrap();
        assert!(crash.day_bytes >= 6_000_000);
        let mut after = lending(p, t1, noon + 10);
        after.restore(&MeterRecord::parse(&crash.to_string()).unwrap());
        assert!(after.status(t1).lent_today >= l.status(t1).lent_today);
        assert_eq!(after.line().up, 1_000_000);
        // A clean stop: exact.
        let exact = l.checkpoint_exact(t1).unwrap();
        assert_eq!((exact.day_bytes, exact.month_bytes), (6_000_000, 6_000_000));
        assert_eq!(exact.month, date("2024-05-01"));
        let mut again = lending(p, t1, noon + 10);
        again.restore(&exact);
        assert_eq!(again.status(t1).lent_today, 6_000_000);
        assert_eq!(lend(&mut again, t1, 94_000_000), Ok(()));
        assert_eq!(lend(&mut again, t1, 1), Err(Refusal::OverDaily));
        // A record of yesterday counts for the month only.
        let mut tomorrow = lending(p, t1, noon + 86_400);
        tomorrow.restore(&exact);
        let s = tomorrow.status(t1);
        assert_eq!((s.lent_today, s.lent_month), (0, 6_000_000));
        // A reservation never goes beyond an allowance.
        let mut small = lending(
            SharePolicy {
                daily_bytes: Some(1000),
                ..policy()
            },
            t0,
            noon,
        );
        lend(&mut small, t0, 10).unwrap();
        assert_eq!(small.checkpoint(t0).unwrap().day_bytes, 1000);
        // A new day to count in: written at once, not after half a reservation.
        let mut l = lending(p, t0, at("2024-05-10", 23, 59));
        l.checkpoint(t0).unwrap();
        let next_day = t0 + Duration::from_secs(120);
        lend(&mut l, next_day, 1).unwrap();
        assert!(l.needs_save());
    }

    /// At a steady rate, the record is written about every ten minutes, whatever the rate.
    #[test]
    fn written_rarely_while_lending() {
        for rate in [10_000u64, 1_000_000, 50_000_000] {
            let t0 = Instant::now();
            let mut l = lending(policy(), t0, at("2024-05-10", 0, 0));
            l.checkpoint(t0).unwrap();
            let mut writes = 0;
            // Two hours in two-second ticks.
            for tick in 1..=3600u64 {
                let now = t0 + Duration::from_secs(2 * tick);
                lend(&mut l, now, rate * 2).unwrap();
                if l.needs_save() {
                    l.checkpoint(now).unwrap();
                    writes += 1;
                }
            }
            assert!(writes <= 16, "{rate} B/s: {writes} writes in two hours");
        }
    }

    #[test]
    fn a_garbled_record_lends_nothing_until_the_next_reset() {
        let t0 = Instant::now();
        let mut l = lending(
            SharePolicy {
                daily_bytes: Some(1_000_000),
                ..policy()
            },
            t0,
            at("2024-05-10", 12, 0),
        );
        l.assume_used_up(t0);
        assert_eq!(lend(&mut l, t0, 1), Err(Refusal::OverDaily));
        assert!(!l.lending_now(t0));
        let tomorrow = t0 + Duration::from_secs(86_400);
        assert_eq!(lend(&mut l, tomorrow, 1), Ok(()));
    }
}
