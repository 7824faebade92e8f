//! How reliably each member's relay carries, as the proxy measures it: the figures of a
//! [`Rating`] the proxy signs and sends the relay, which hands it to its neighbours.
//!
//! Per relaying member, over two buckets of [`RATING_BUCKET`] (the one filling and the
//! one before it, so a rating always covers at least a full bucket once there is one):
//! wire bytes offered to its line and delivered by it (from [`Usage`]: downstream, sent
//! through it against acknowledged; upstream, arrived against arrived plus what the
//! consumers' packet numbers skipped), how long it was connected to the proxy, and the
//! highest rate the proxy measured on its own line.

use std::time::{Duration, Instant};

use crate::statement::Rating;
use crate::usage::Usage;

/// A rating's figures are kept in buckets this long; a rating covers the bucket filling
/// and the one before it.
pub const RATING_BUCKET: Duration = Duration::from_secs(600);
/// How long a signed rating counts after it is issued: neighbours refuse it after.
pub const RATING_VALID_S: u64 = 1800;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    offered: u64,
    delivered: u64,
    /// Time connected, and time observed.
    up: Duration,
    seen: Duration,
    /// Highest rate seen on its own line, bytes/s.
    line_rate: u64,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.offered += other.offered;
        self.delivered += other.delivered;
        self.up += other.up;
        self.seen += other.seen;
        self.line_rate = self.line_rate.max(other.line_rate);
    }
}

/// One member's record as a relay.
#[derive(Debug, Clone, Copy)]
pub struct RelayRecord {
    /// When the filling bucket started.
    since: Instant,
    previous: Option<(Instant, Bucket)>,
    current: Bucket,
    /// When it was last observed.
    observed: Instant,
}

impl RelayRecord {
    /// A record starting empty at `now`.
    pub fn new(now: Instant) -> RelayRecord {
        RelayRecord {
            since: now,
            previous: None,
            current: Bucket::default(),
            observed: now,
        }
    }

    fn roll(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.since);
        if age < RATING_BUCKET {
            return;
        }
        // Two buckets or more ago: the filling one is too old to be the previous.
        self.previous = (age < 2 * RATING_BUCKET).then_some((self.since, self.current));
        self.since = now;
        self.current = Bucket::default();
    }

    /// Observes the member at `now`: whether it is connected to the proxy, and its own
    /// line's measured rate (bytes/s).
    pub fn observe(&mut self, now: Instant, connected: bool, line_rate: u64) {
        self.roll(now);
        let elapsed = now.saturating_duration_since(self.observed);
        self.observed = now;
        self.current.seen += elapsed;
        if connected {
            self.current.up += elapsed;
        }
        self.current.line_rate = self.current.line_rate.max(line_rate);
    }

    /// A rate (bytes/s) measured on its line by a path through its relay.
    pub fn observe_line_rate(&mut self, rate: u64) {
        self.current.line_rate = self.current.line_rate.max(rate);
    }

    /// Adds wire bytes its relay was offered and delivered (of one consumer's usage).
    pub fn add(&mut self, now: Instant, offered: u64, delivered: u64) {
        self.roll(now);
        // Acks of datagrams offered before the bucket began.
        self.current.offered += offered.max(delivered);
        self.current.delivered += delivered;
    }

    /// Its rating at `now` (`unix_now` in the proxy's wall clock) as member `member`:
    /// unsigned, valid for [`RATING_VALID_S`].
    pub fn rating(&self, now: Instant, unix_now: u64, member: u32) -> Rating {
        let mut all = self.current;
        let mut start = self.since;
        if let Some((since, previous)) = self.previous {
            all.add(&previous);
            start = since;
        }
        let ago = |t: Instant| unix_now.saturating_sub(now.saturating_duration_since(t).as_secs());
        let uptime = if all.seen.is_zero() {
            0
        } else {
            (all.up.as_millis() * 1000 / all.seen.as_millis().max(1)).min(1000) as u16
        };
        Rating {
            member,
            window_start: ago(start),
            window_end: unix_now,
            bytes_offered: all.offered,
            bytes_delivered: all.delivered.min(all.offered),
            uptime_permille: uptime,
            line_rate: all.line_rate.min(u64::from(u32::MAX)) as u32,
            issued_at: unix_now,
            expires_at: unix_now + RATING_VALID_S,
        }
    }
}

/// What one member's `usage` offered to each relay it used and had delivered by it, in
/// wire bytes: (relay's member id, offered, delivered), for [`RelayRecord::add`].
pub fn by_relay(usage: &Usage) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
    usage.offered.iter().map(|&(relay, offered)| {
        let delivered = usage
            .borrowed
            .iter()
            .find(|(r, _)| *r == relay)
            .map_or(0, |(_, b)| b.up + b.down);
        (relay, offered.up + offered.down, delivered)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rating_counts_what_was_offered_and_delivered_and_the_time_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = RelayRecord::new(t0);
        r.observe(t0, true, 1_000_000);
        // Up for 30 s, down for 10 s; half of what it was offered delivered.
        r.observe(t0 + s(30), true, 2_000_000);
        r.add(t0 + s(30), 10_000, 5_000);
        r.observe(t0 + s(40), false, 0);
        let rating = r.rating(t0 + s(40), 10_040, 3);
        assert_eq!(rating.member, 3);
        assert_eq!(rating.window_start, 10_000);
        assert_eq!(rating.window_end, 10_040);
        assert_eq!(
            (rating.bytes_offered, rating.bytes_delivered),
            (10_000, 5_000)
        );
        assert_eq!(rating.delivered_permille(), Some(500));
        assert_eq!(rating.uptime_permille, 750);
        assert_eq!(rating.line_rate, 2_000_000);
        assert_eq!(rating.expires_at, 10_040 + RATING_VALID_S);
        rating.check().unwrap();
    }

    #[test]
    fn a_rating_covers_the_bucket_filling_and_the_one_before() {
        let t0 = Instant::now();
        let mut r = RelayRecord::new(t0);
        r.add(t0, 1_000, 0);
        // The next bucket: the first still counts.
        let t1 = t0 + RATING_BUCKET;
        r.add(t1, 1_000, 1_000);
        let rating = r.rating(t1, 5_000, 1);
        assert_eq!(
            (rating.bytes_offered, rating.bytes_delivered),
            (2_000, 1_000)
        );
        assert_eq!(rating.window_start, 5_000 - RATING_BUCKET.as_secs());
        // Two buckets on, the first is gone.
        let t2 = t1 + RATING_BUCKET;
        r.add(t2, 1_000, 1_000);
        let rating = r.rating(t2, 5_600, 1);
        assert_eq!(
            (rating.bytes_offered, rating.bytes_delivered),
            (2_000, 2_000)
        );
        // Long silent: nothing of the past counts.
        let t3 = t2 + 5 * RATING_BUCKET;
        r.observe(t3, true, 0);
        let rating = r.rating(t3, 9_000, 1);
        assert_eq!(rating.bytes_offered, 0);
        assert_eq!(rating.delivered_permille(), None);
    }

    #[test]
    fn usage_reaches_the_relays_it_used_and_never_rates_over_a_thousand() {
        use crate::usage::UpDown;
        let t0 = Instant::now();
        let mut records = [RelayRecord::new(t0), RelayRecord::new(t0)];
        let usage = Usage {
            // Relay 1: acks of datagrams sent before (more delivered than offered now);
            // relay 5 is not a member.
            offered: vec![
                (1, UpDown { up: 50, down: 50 }),
                (5, UpDown { up: 9, down: 9 }),
            ],
            borrowed: vec![
                (1, UpDown { up: 50, down: 250 }),
                (5, UpDown { up: 9, down: 0 }),
            ],
            ..Usage::default()
        };
        for (relay, offered, delivered) in by_relay(&usage) {
            if let Some(r) = records.get_mut(relay as usize) {
                r.add(t0, offered, delivered);
            }
        }
        let rating = records[1].rating(t0, 1, 1);
        assert_eq!((rating.bytes_offered, rating.bytes_delivered), (300, 300));
        assert_eq!(rating.delivered_permille(), Some(1000));
        rating.check().unwrap();
        assert_eq!(records[0].rating(t0, 1, 0).bytes_offered, 0);
    }
}
