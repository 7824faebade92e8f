//! Metered uplinks in the core: an uplink the owner pays per byte (an LTE line with a data
//! cap) is watched by a [`Forecaster`], lent to neighbours only from its forecast surplus,
//! and left by the owner's own traffic when little of its allowance remains.
//!
//! * **Fed on the wire.** Every datagram that crosses the line, either way, is counted with
//!   its IP and UDP headers ([`wire_len`]): the carrier counts both directions and every
//!   header. What neighbours were lent is counted apart, so that the forecaster learns only
//!   the owner's own pattern ([`Forecaster::record`] for the rest,
//!   [`Forecaster::record_lent`] for it). Counts are handed over at each tick
//!   ([`MeteredUplink::tick`]): per datagram there is only an addition.
//! * **Only the surplus is lent.** At each tick the forecast's surplus (what the allowance
//!   leaves beyond the owner's forecast use, its margin and the threshold; 0 until the
//!   forecaster is confident) is what may be lent until the next tick. A datagram to lend
//!   goes only if it fits in what is left of it, so the line is never lent beyond the
//!   surplus, not even by one datagram. Since the surplus is reckoned after what was lent,
//!   over a period this is: lent ≤ lent so far + surplus, at every tick.
//! * **The offer.** Neighbours are offered the surplus spread over [`OFFER_HORIZON_S`]
//!   (not over the rest of the period: a month's surplus spread over a month is a rate
//!   under what a neighbour's path takes as worth using, 200 kbit/s, for any surplus
//!   under about 65 GB). The offer is advice; the byte check above is the guarantee.
//! * **Moving off.** Below the threshold the owner's traffic should leave the line: the
//!   client holds its path to probes while another path is usable, and lets it carry
//!   traffic again when none is, or when a new period starts.
//!
//! Sans-IO: the wall clock comes with each tick, as unix seconds and the UTC offset.

use std::net::SocketAddr;

use crate::forecast::{Forecast, ForecastError, Forecaster, MeteredLine};
use crate::sharing::WallClock;

/// The surplus is offered as the rate that would lend it all in this long: a neighbour
/// can use the line at once, and the offer falls as the surplus is lent (hellos carry it
/// anew every few seconds).
pub const OFFER_HORIZON_S: u64 = 60;
/// A datagram of `len` bytes to or from `remote`, as the line carries it: with its IP and
/// UDP headers (link-layer framing aside: the forecaster keeps a reserve for it).
pub fn wire_len(remote: SocketAddr, len: usize) -> u64 {
    len as u64 + crate::usage::ip_udp_headers(remote)
}

/// One metered uplink: its forecaster and what it may lend and offer until the next tick.
#[derive(Debug, Clone)]
pub struct MeteredUplink {
    forecaster: Forecaster,
    /// Wire bytes since the last tick, both ways, the owner's and lent.
    wire: u64,
    /// Of them, lent to neighbours.
    lent: u64,
    /// What may be lent until the next tick: the surplus at the last tick.
    room: u64,
    /// Bytes per second offered to neighbours now.
    offer: u64,
    moved_off: bool,
    /// The last tick's forecast, for status.
    forecast: Option<Forecast>,
}

impl MeteredUplink {
    /// A line watched from `clock` on, with nothing learned: it lends nothing until its
    /// forecaster is confident (a week of use).
    pub fn new(line: MeteredLine, clock: WallClock) -> MeteredUplink {
        let (unix_s, off) = unix(clock);
        MeteredUplink::with(Forecaster::new(line, unix_s, off))
    }

    /// A line whose forecaster state was read back from flash: the time since it was
    /// written is not learned. A changed configuration (`line`) is taken over, keeping
    /// what was learned. An unreadable state is refused: start with [`MeteredUplink::new`].
    pub fn restore(
        bytes: &[u8],
        line: MeteredLine,
        clock: WallClock,
    ) -> Result<MeteredUplink, ForecastError> {
        let mut forecaster = Forecaster::from_bytes(bytes)?;
        if forecaster.line() != line {
            forecaster.set_line(line);
        }
        let (unix_s, off) = unix(clock);
        forecaster.resume(unix_s, off, 0);
        Ok(MeteredUplink::with(forecaster))
    }

    fn with(forecaster: Forecaster) -> MeteredUplink {
        MeteredUplink {
            forecaster,
            wire: 0,
            lent: 0,
            room: 0,
            offer: 0,
            moved_off: false,
            forecast: None,
        }
    }

    /// The forecaster, for its state.
    pub fn forecaster(&self) -> &Forecaster {
        &self.forecaster
    }

    /// A changed configuration: learning is kept; it holds from the next tick.
    pub fn set_line(&mut self, line: MeteredLine) {
        if self.forecaster.line() != line {
            self.forecaster.set_line(line);
        }
    }

    /// `wire` bytes crossed the line (see [`wire_len`]).
    pub fn on_wire(&mut self, wire: u64) {
        self.wire = self.wire.saturating_add(wire);
    }

    /// Whether `wire` more bytes may be lent over the line now.
    pub fn may_lend(&self, wire: u64) -> bool {
        self.lent.checked_add(wire).is_some_and(|n| n <= self.room)
    }

    /// `wire` bytes were lent (after [`MeteredUplink::may_lend`]); they crossed the line
    /// too ([`MeteredUplink::on_wire`] is the caller's).
    pub fn lend(&mut self, wire: u64) {
        self.lent = self.lent.saturating_add(wire);
    }

    /// Hands what crossed the line since the last tick to the forecaster and forecasts
    /// again: what may be lent and offered until the next tick, and whether the owner's
    /// traffic should move off. Call it regularly (the daemon does every two seconds):
    /// an interval over six hours is taken as not watched.
    pub fn tick(&mut self, clock: WallClock) {
        let (unix_s, off) = unix(clock);
        let lent = self.lent.min(self.wire);
        self.forecaster.record(unix_s, off, self.wire - lent);
        if lent > 0 {
            self.forecaster.record_lent(unix_s, off, lent);
        }
        self.wire = 0;
        self.lent = 0;
        let f = self.forecaster.forecast(unix_s, off);
        self.room = f.surplus;
        self.moved_off = self.forecaster.below_threshold(unix_s, off);
        self.offer = if self.moved_off {
            0
        } else {
            f.surplus / OFFER_HORIZON_S
        };
        self.forecast = Some(f);
    }

    /// Bytes per second neighbours are offered over this line now (0: nothing).
    pub fn offer(&self) -> u64 {
        self.offer
    }

    /// Whether less than the threshold remains: the owner's own traffic leaves the line
    /// while another path is usable.
    pub fn moved_off(&self) -> bool {
        self.moved_off
    }

    /// Whether the forecaster state should be written to flash now.
    pub fn persist_due(&self, clock: WallClock) -> bool {
        self.forecaster.persist_due(unix(clock).0)
    }

    /// The state to write ([`Forecaster::to_bytes`]).
    pub fn state(&self) -> Vec<u8> {
        self.forecaster.to_bytes()
    }

    /// The state was written at `clock`.
    pub fn persisted(&mut self, clock: WallClock) {
        self.forecaster.mark_persisted(unix(clock).0);
    }

    /// The line as of the last tick, with what was lent since; `None` before the first.
    pub fn status(&self) -> Option<MeteredStatus> {
        let f = self.forecast?;
        let line = self.forecaster.line();
        Some(MeteredStatus {
            allowance: line.allowance(),
            billing_day: line.billing_day(),
            threshold: line.threshold(),
            period_start: f.period_start,
            period_end: f.period_end,
            used: f.used,
            remaining: f.remaining,
            expected_more: f.expected_more,
            surplus: f.surplus.saturating_sub(self.lent),
            error: f.error,
            confident: f.confident,
            lent: f.lent.saturating_add(self.lent),
            offer: self.offer,
            moved_off: self.moved_off,
        })
    }
}

/// A metered line for status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeteredStatus {
    /// Bytes per billing period.
    pub allowance: u64,
    /// Day of the month the period starts.
    pub billing_day: u8,
    /// Remaining bytes below which the owner's traffic moves off.
    pub threshold: u64,
    /// This period's start and end (unix seconds).
    pub period_start: u64,
    /// The next period's start.
    pub period_end: u64,
    /// Bytes on the line this period, the owner's and lent.
    pub used: u64,
    /// What the allowance has left.
    pub remaining: u64,
    /// The owner's forecast use until the period ends.
    pub expected_more: u64,
    /// What may still be lent this period.
    pub surplus: u64,
    /// The forecast's relative error so far.
    pub error: Option<f64>,
    /// Whether enough was learned to lend anything.
    pub confident: bool,
    /// Bytes lent this period.
    pub lent: u64,
    /// Bytes per second offered to neighbours now.
    pub offer: u64,
    /// Whether the owner's traffic has moved off the line.
    pub moved_off: bool,
}

fn unix(clock: WallClock) -> (u64, i32) {
    (clock.unix_s.max(0) as u64, clock.utc_offset_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;
    const HOUR: i64 = 3600;

    /// 2024-05-06 (a Monday) 00:00 UTC.
    const MONDAY: i64 = 1_714_953_600;

    fn utc(unix_s: i64) -> WallClock {
        WallClock {
            unix_s,
            utc_offset_s: 0,
        }
    }

    /// A line that learned `weeks` weeks of 10 MB an hour, ticked every 10 minutes, from
    /// MONDAY on; returns it and the time it got to.
    fn learned(line: MeteredLine, weeks: i64) -> (MeteredUplink, i64) {
        let mut m = MeteredUplink::new(line, utc(MONDAY));
        let mut t = MONDAY;
        while t < MONDAY + weeks * 7 * 24 * HOUR {
            t += 600;
            m.on_wire(10_000_000 / 6);
            m.tick(utc(t));
        }
        (m, t)
    }

    fn line(allowance: u64, billing_day: u8, threshold: u64) -> MeteredLine {
        MeteredLine::new(allowance, billing_day, threshold).unwrap()
    }

    #[test]
    fn wire_bytes_count_their_headers() {
        let v4: SocketAddr = "192.0.2.1:7117".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:7117".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:7117".parse().unwrap();
        assert_eq!(wire_len(v4, 1000), 1028);
        assert_eq!(wire_len(mapped, 1000), 1028);
        assert_eq!(wire_len(v6, 1000), 1048);
    }

    /// A new router lends and offers nothing, however large the allowance.
    #[test]
    fn a_new_line_lends_nothing() {
        let mut m = MeteredUplink::new(line(1000 * GB, 1, 0), utc(MONDAY));
        m.tick(utc(MONDAY + 600));
        assert!(!m.may_lend(1));
        assert_eq!(m.offer(), 0);
        let s = m.status().unwrap();
        assert!(!s.confident);
        assert_eq!(s.surplus, 0);
        // Six days in, still not a week.
        let (m, _) = learned(line(1000 * GB, 1, 0), 0);
        assert!(!m.may_lend(1));
    }

    /// Once confident, what passes between two ticks is that tick's surplus and not a
    /// datagram more; lent bytes count against the next tick's surplus, so the period's
    /// lending ends at what the allowance leaves beyond the owner's forecast use, its
    /// margin and the threshold.
    #[test]
    fn never_lent_beyond_the_surplus() {
        // 10 MB an hour is 7.2 GB a month: a 20 GB allowance leaves a surplus.
        let (mut m, mut t) = learned(line(20 * GB, 1, GB), 2);
        let first = m.status().unwrap();
        assert!(first.confident);
        assert!(first.surplus > GB && first.surplus < 13 * GB, "{first:?}");
        assert_eq!(m.offer(), first.surplus / OFFER_HORIZON_S);
        // Neighbours ask for 1400-byte datagrams as fast as they can, the owner keeps to
        // its 10 MB an hour; ticks every 2 s.
        let (mut lent, mut refused) = (0u64, 0u64);
        for _ in 0..20_000 {
            let room = m.status().unwrap().surplus;
            let mut this_tick = 0;
            for _ in 0..1000 {
                if m.may_lend(1428) {
                    m.lend(1428);
                    m.on_wire(1428);
                    this_tick += 1428;
                } else {
                    refused += 1;
                }
            }
            assert!(this_tick <= room, "{this_tick} lent, {room} surplus");
            lent += this_tick;
            m.on_wire(10_000_000 / 1800);
            t += 2;
            m.tick(utc(t));
        }
        assert!(refused > 0);
        let s = m.status().unwrap();
        assert_eq!(s.lent, lent);
        // The forecast held steady (the owner kept to its pattern): what was lent is the
        // first surplus, give or take the margin on the hours that passed.
        assert!(
            lent.abs_diff(first.surplus) < first.surplus / 100,
            "{lent} of {first:?}"
        );
        assert!(s.surplus < 3 * 1428, "{s:?}");
        assert_eq!(m.offer(), s.surplus / OFFER_HORIZON_S);
        assert!(s.remaining >= s.expected_more + GB, "{s:?}");
    }

    /// Below the threshold the owner's traffic moves off, and nothing is lent or offered;
    /// a new period brings it back.
    #[test]
    fn below_the_threshold_the_owner_moves_off_until_the_period_ends() {
        // Billing day the 1st; the history ends on Monday 2024-05-20.
        let (mut m, mut t) = learned(line(20 * GB, 1, 2 * GB), 2);
        assert!(!m.moved_off());
        // The owner downloads 17.5 GB: 20 - 2.x - 17.5 < 2 GB remain.
        m.on_wire(17_500_000_000);
        t += 600;
        m.tick(utc(t));
        assert!(m.moved_off());
        assert_eq!(m.offer(), 0);
        assert!(!m.may_lend(1));
        assert!(m.status().unwrap().moved_off);
        // Until the end of May.
        let june = 1_717_200_000; // 2024-06-01 00:00 UTC
        while t < june - 600 {
            t += 600;
            m.tick(utc(t));
            assert!(m.moved_off());
        }
        m.tick(utc(june + 1));
        assert!(!m.moved_off());
        let s = m.status().unwrap();
        assert_eq!(s.period_start, june as u64);
        assert_eq!(s.remaining, 20 * GB);
    }

    /// A state written and read back keeps what was learned and this period's counts.
    #[test]
    fn restored_state_keeps_learning_and_counts() {
        let (mut m, t) = learned(line(20 * GB, 1, GB), 2);
        m.lend(1000);
        m.on_wire(1000);
        m.tick(utc(t + 2));
        assert!(m.persist_due(utc(t + 2)));
        let bytes = m.state();
        m.persisted(utc(t + 2));
        assert!(!m.persist_due(utc(t + 4)));
        let mut back = MeteredUplink::restore(&bytes, line(20 * GB, 1, GB), utc(t + 60)).unwrap();
        back.tick(utc(t + 62));
        let (a, b) = (m.status().unwrap(), back.status().unwrap());
        assert_eq!(a.lent, b.lent);
        assert_eq!(a.used, b.used);
        assert!(b.confident);
        // A new threshold from the configuration is taken over.
        let moved = MeteredUplink::restore(&bytes, line(20 * GB, 1, 19 * GB), utc(t + 60)).unwrap();
        assert_eq!(moved.forecaster().line().threshold(), 19 * GB);
        // Damaged: refused, never a panic.
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert!(MeteredUplink::restore(&bad, line(20 * GB, 1, GB), utc(t)).is_err());
        assert!(MeteredUplink::restore(&bytes[..10], line(20 * GB, 1, GB), utc(t)).is_err());
        assert!(MeteredUplink::restore(&[], line(20 * GB, 1, GB), utc(t)).is_err());
    }
}
