//! The relay's side of relaying: which neighbours it carries for, under which slot, and
//! within what its owner allows.
//!
//! A neighbour gets a slot when the mesh says it is a member ([`Relay::admit`]) and loses
//! it when it goes away ([`Relay::expel`]). What a neighbour sends is wrapped with its
//! slot and goes to this router's proxy only; what the proxy sends back names the slot,
//! and goes to that neighbour only. A slot number carries a generation, so a reply for a
//! neighbour that left never reaches the one that took its place.
//!
//! Beyond the rate caps of [`RelayPolicy`], every datagram either way passes the owner's
//! [`Lending`]: outside the schedule it is refused; it goes only if it fits in what is
//! left of the day's and the month's allowances (checked before, counted once it goes,
//! so an allowance is never exceeded, not even by one datagram); and a share of the
//! measured line lowers the caps. Each refusal is counted by its reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::DropReason;
use crate::metered::MeteredUplink;
use crate::sharing::{Direction, Lending, Refusal};
use crate::wire::RELAY_OVERHEAD;

/// Neighbours a relay carries for at most (as many as the mesh keeps).
pub const MAX_RELAY_SLOTS: usize = 32;
/// How much of its rate a cap lets through at once: a neighbour's burst of this long at
/// the full rate passes, beyond it the cap holds on the wire within one datagram.
pub const RELAY_BURST: Duration = Duration::from_millis(10);

/// The share of a line its owner's traffic may always take: what is relayed over it gets
/// what is left once the owner's traffic is served.
pub const OWNER_SHARE: f64 = 0.95;
/// An owner sending less than this share of its line leaves it all to what is relayed.
pub const OWNER_ACTIVE: f64 = 0.05;

/// What relayed traffic may use of a line of `capacity` bytes per second on which the
/// owner's own traffic sends `own`: `None` while the owner sends (nearly) nothing (what is
/// relayed then finds the line's rate itself). The one rule at both ends: the proxy
/// downstream, the relay upstream.
pub fn spare_for_relayed(capacity: u64, own: u64) -> Option<u64> {
    if own as f64 <= OWNER_ACTIVE * capacity as f64 {
        return None;
    }
    Some(((capacity as f64 * OWNER_SHARE) as u64).saturating_sub(own))
}

/// What a router's owner lets neighbours use of its line, as wire bytes per second (every
/// header the line carries included). Zero means nothing. The rest of the owner's policy
/// (shares of the measured line, allowances, a schedule) is a
/// [`SharePolicy`](crate::sharing::SharePolicy), in the relay's [`Lending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPolicy {
    /// Whether this router relays at all.
    pub sharing: bool,
    /// All neighbours together, towards the proxy.
    pub up_total: u64,
    /// All neighbours together, from the proxy.
    pub down_total: u64,
    /// Any one neighbour, towards the proxy.
    pub up_per_neighbour: u64,
    /// Any one neighbour, from the proxy.
    pub down_per_neighbour: u64,
}

impl RelayPolicy {
    /// Relays nothing.
    pub const OFF: RelayPolicy = RelayPolicy {
        sharing: false,
        up_total: 0,
        down_total: 0,
        up_per_neighbour: 0,
        down_per_neighbour: 0,
    };
}

/// What a relay carried, for one neighbour or all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams forwarded to the proxy.
    pub up_packets: u64,
    /// Their bytes, envelope included.
    pub up_bytes: u64,
    /// Datagrams forwarded to the neighbour.
    pub down_packets: u64,
    /// Their bytes, as sent on the mesh.
    pub down_bytes: u64,
    /// Datagrams refused by the owner's caps, either way.
    pub over_cap: u64,
    /// Datagrams refused upstream because the owner's own traffic needed the line.
    pub owner_first: u64,
    /// Datagrams refused outside the owner's hours and days (or before the router knew
    /// the time), either way.
    pub off_schedule: u64,
    /// Datagrams refused because they would have gone beyond today's allowance.
    pub over_daily: u64,
    /// Datagrams refused because they would have gone beyond this month's allowance.
    pub over_monthly: u64,
    /// Datagrams refused because they would have gone beyond a metered line's forecast
    /// surplus.
    pub over_surplus: u64,
}

impl RelayCounters {
    fn refused(&mut self, r: Refusal) {
        match r {
            Refusal::OffSchedule => self.off_schedule += 1,
            Refusal::OverDaily => self.over_daily += 1,
            Refusal::OverMonthly => self.over_monthly += 1,
            Refusal::OverSurplus => self.over_surplus += 1,
        }
    }
}

/// The drop reason a refusal of the owner's policy is counted as among the core's drops
/// (the relay's counters tell them apart).
fn drop_reason(r: Refusal) -> DropReason {
    match r {
        // Not lending now.
        Refusal::OffSchedule => DropReason::NotRelaying,
        // Beyond what the owner allows.
        Refusal::OverDaily | Refusal::OverMonthly | Refusal::OverSurplus => {
            DropReason::RelayOverCap
        }
    }
}

/// A byte bucket: `rate` bytes a second, at most `burst` at once.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    bytes: u64,
    at: Option<Instant>,
}

impl Bucket {
    const fn new() -> Self {
        Bucket { bytes: 0, at: None }
    }

    /// Fills the bucket up to now; whether `len` bytes may pass.
    fn has(&mut self, now: Instant, rate: u64, len: u64) -> bool {
        let burst = (rate as u128 * RELAY_BURST.as_nanos() / 1_000_000_000) as u64;
        let burst = burst.max(len);
        let refill = self.at.map_or(burst, |t| {
            let ns = now.saturating_duration_since(t).as_nanos();
            (rate as u128 * ns / 1_000_000_000).min(u128::from(u64::MAX)) as u64
        });
        self.bytes = self.bytes.saturating_add(refill).min(burst);
        self.at = Some(now);
        self.bytes >= len
    }
}

/// Takes `len` bytes from both buckets if both have them (a neighbour over its own cap
/// takes nothing from the total the others share). A cap of 0 lets nothing through (a
/// share of a line not measured yet).
fn take_both(now: Instant, own: (&mut Bucket, u64), all: (&mut Bucket, u64), len: u64) -> bool {
    if own.1 == 0 || all.1 == 0 {
        return false;
    }
    let ok = own.0.has(now, own.1, len) & all.0.has(now, all.1, len);
    if ok {
        own.0.bytes -= len;
        all.0.bytes -= len;
    }
    ok
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    neighbour: SocketAddr,
    up: Bucket,
    down: Bucket,
    counters: RelayCounters,
}

/// The neighbours a relay carries for, each in a slot.
#[derive(Debug, Clone)]
pub struct Relay {
    policy: RelayPolicy,
    slots: [Option<Slot>; MAX_RELAY_SLOTS],
    /// Bumped each time a slot is given to a neighbour.
    generations: [u32; MAX_RELAY_SLOTS],
    up: Bucket,
    down: Bucket,
    /// What the owner's own traffic leaves of the line, upstream.
    spare: Bucket,
    totals: RelayCounters,
    /// The owner's shares, allowances and schedule, with their meter.
    lending: Lending,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new(RelayPolicy::OFF)
    }
}

impl Relay {
    /// A relay with no neighbours yet.
    pub fn new(policy: RelayPolicy) -> Self {
        Relay {
            policy,
            slots: [None; MAX_RELAY_SLOTS],
            generations: [0; MAX_RELAY_SLOTS],
            up: Bucket::new(),
            down: Bucket::new(),
            spare: Bucket::new(),
            totals: RelayCounters::default(),
            lending: Lending::default(),
        }
    }

    /// The owner's policy.
    pub fn policy(&self) -> &RelayPolicy {
        &self.policy
    }

    /// Changes the owner's policy; it holds from the next datagram.
    pub fn set_policy(&mut self, policy: RelayPolicy) {
        self.policy = policy;
    }

    /// The owner's shares, allowances and schedule, with their meter, the line's estimate
    /// and the wall clock.
    pub fn lending(&self) -> &Lending {
        &self.lending
    }

    /// Sets the owner's [`SharePolicy`](crate::sharing::SharePolicy) and the wall clock,
    /// restores the meter, takes it for the state file.
    pub fn lending_mut(&mut self) -> &mut Lending {
        &mut self.lending
    }

    /// A measurement of this router's line for the shares of it
    /// ([`LineEstimate`](crate::sharing::LineEstimate)): the upstream capacity estimate of
    /// its best own uplink, and the bytes its own uplinks received so far (what was relayed
    /// down is added here: it came over the same line).
    pub fn observe_line(&mut self, now: Instant, up_capacity: u64, received: u64) {
        let envelopes = self
            .totals
            .down_packets
            .saturating_mul(RELAY_OVERHEAD as u64);
        let relayed = self.totals.down_bytes.saturating_add(envelopes);
        self.lending
            .observe_line(now, up_capacity, received.saturating_add(relayed));
    }

    /// The most relayed traffic may use now, all neighbours together, each way (bytes per
    /// second on the wire): the owner's caps, or less for a share of the measured line.
    pub fn caps(&self) -> (u64, u64) {
        let p = &self.policy;
        (
            self.lending
                .cap(Direction::Up, p.up_total.min(p.up_per_neighbour)),
            self.lending
                .cap(Direction::Down, p.down_total.min(p.down_per_neighbour)),
        )
    }

    /// Whether neighbours may send through this router now: sharing on, in the owner's
    /// schedule and within the allowances (what the hellos offer).
    pub fn lends_now(&self, now: Instant) -> bool {
        self.policy.sharing && self.lending.lending_now(now)
    }

    /// Gives a neighbour the mesh found to be a member a slot (its own, if it has one).
    pub fn admit(&mut self, neighbour: SocketAddr) -> Result<u32, DropReason> {
        if let Some(slot) = self.slot_of(neighbour) {
            return Ok(slot);
        }
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(DropReason::RelayTableFull)?;
        self.generations[i] = self.generations[i].wrapping_add(1) & 0x00ff_ffff;
        self.slots[i] = Some(Slot {
            neighbour,
            up: Bucket::new(),
            down: Bucket::new(),
            counters: RelayCounters::default(),
        });
        Ok(slot_number(i, self.generations[i]))
    }

    /// Takes a neighbour's slot away (it left the mesh, or is no longer a member): what it
    /// sends is refused, and replies for it are dropped.
    pub fn expel(&mut self, neighbour: SocketAddr) {
        for s in &mut self.slots {
            if s.is_some_and(|s| s.neighbour == neighbour) {
                *s = None;
            }
        }
    }

    /// The slot a neighbour holds.
    pub fn slot_of(&self, neighbour: SocketAddr) -> Option<u32> {
        self.slots.iter().enumerate().find_map(|(i, s)| {
            s.filter(|s| s.neighbour == neighbour)
                .map(|_| slot_number(i, self.generations[i]))
        })
    }

    /// Every neighbour with a slot, and what it carried for each.
    pub fn neighbours(&self) -> impl Iterator<Item = (SocketAddr, RelayCounters)> + '_ {
        self.slots
            .iter()
            .flatten()
            .map(|s| (s.neighbour, s.counters))
    }

    /// What it carried for all neighbours.
    pub fn totals(&self) -> &RelayCounters {
        &self.totals
    }

    /// Whether this router carries for `neighbour` at all (before anything is spent on
    /// what it sent).
    pub(crate) fn carries_for(&self, neighbour: SocketAddr) -> Result<(), DropReason> {
        if !self.policy.sharing {
            return Err(DropReason::NotRelaying);
        }
        self.slot_of(neighbour)
            .map(|_| ())
            .ok_or(DropReason::NotANeighbour)
    }

    /// A datagram of `wire_len` bytes (as it will leave, envelope included) from
    /// `neighbour` towards the proxy: its slot, if it may go.
    /// `spare`: what the owner's own traffic leaves of the line it goes on
    /// ([`spare_for_relayed`]), if it leaves only part of it.
    #[cfg(test)]
    pub(crate) fn up(
        &mut self,
        now: Instant,
        neighbour: SocketAddr,
        wire_len: usize,
        spare: Option<u64>,
    ) -> Result<u32, DropReason> {
        self.up_over(now, neighbour, wire_len, spare, None)
    }

    /// [`Relay::up`] on a line that may be metered: `metered` is the line and the
    /// datagram's bytes on it, headers included; it goes only within the line's surplus.
    pub(crate) fn up_over(
        &mut self,
        now: Instant,
        neighbour: SocketAddr,
        wire_len: usize,
        spare: Option<u64>,
        metered: Option<(&mut MeteredUplink, u64)>,
    ) -> Result<u32, DropReason> {
        if !self.policy.sharing {
            return Err(DropReason::NotRelaying);
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|s| s.neighbour == neighbour))
            .ok_or(DropReason::NotANeighbour)?;
        let slot = self.slots[i].as_mut().expect("found above");
        let len = wire_len as u64;
        if let Err(r) = self
            .lending
            .check(now, len)
            .and_then(|()| surplus_check(metered.as_ref()))
        {
            slot.counters.refused(r);
            self.totals.refused(r);
            return Err(drop_reason(r));
        }
        if let Some(spare) = spare {
            if !self.spare.has(now, spare, len) {
                self.totals.owner_first += 1;
                slot.counters.owner_first += 1;
                return Err(DropReason::OwnerFirst);
            }
        }
        let own = self
            .lending
            .cap(Direction::Up, self.policy.up_per_neighbour);
        let all = self.lending.cap(Direction::Up, self.policy.up_total);
        if !take_both(now, (&mut slot.up, own), (&mut self.up, all), len) {
            slot.counters.over_cap += 1;
            self.totals.over_cap += 1;
            return Err(DropReason::RelayOverCap);
        }
        if spare.is_some() {
            self.spare.bytes -= len;
        }
        if let Some((line, wire)) = metered {
            line.lend(wire);
        }
        self.lending.lend(len);
        slot.counters.up_packets += 1;
        slot.counters.up_bytes += len;
        self.totals.up_packets += 1;
        self.totals.up_bytes += len;
        Ok(slot_number(i, self.generations[i]))
    }

    /// A datagram of `wire_len` bytes from the proxy for `slot`: the neighbour to send it
    /// to, if it may go.
    #[cfg(test)]
    pub(crate) fn down(
        &mut self,
        now: Instant,
        slot: u32,
        wire_len: usize,
    ) -> Result<SocketAddr, DropReason> {
        self.down_over(now, slot, wire_len, None)
    }

    /// [`Relay::down`] of a datagram that came over a line that may be metered (see
    /// [`Relay::up_over`]).
    pub(crate) fn down_over(
        &mut self,
        now: Instant,
        slot: u32,
        wire_len: usize,
        metered: Option<(&mut MeteredUplink, u64)>,
    ) -> Result<SocketAddr, DropReason> {
        let i = (slot & 0xff) as usize;
        let s = match self.slots.get_mut(i) {
            Some(Some(s)) if slot_number(i, self.generations[i]) == slot => s,
            _ => return Err(DropReason::UnknownRelaySlot),
        };
        if !self.policy.sharing {
            return Err(DropReason::NotRelaying);
        }
        let len = wire_len as u64;
        // The allowances count what the line carried: the envelope too.
        let carried = len + RELAY_OVERHEAD as u64;
        if let Err(r) = self
            .lending
            .check(now, carried)
            .and_then(|()| surplus_check(metered.as_ref()))
        {
            s.counters.refused(r);
            self.totals.refused(r);
            return Err(drop_reason(r));
        }
        let own = self
            .lending
            .cap(Direction::Down, self.policy.down_per_neighbour);
        let all = self.lending.cap(Direction::Down, self.policy.down_total);
        if !take_both(now, (&mut s.down, own), (&mut self.down, all), len) {
            s.counters.over_cap += 1;
            self.totals.over_cap += 1;
            return Err(DropReason::RelayOverCap);
        }
        if let Some((line, wire)) = metered {
            line.lend(wire);
        }
        self.lending.lend(carried);
        s.counters.down_packets += 1;
        s.counters.down_bytes += len;
        self.totals.down_packets += 1;
        self.totals.down_bytes += len;
        Ok(s.neighbour)
    }
}

/// Whether a datagram fits in its metered line's surplus (any fits on a line not metered).
fn surplus_check(metered: Option<&(&mut MeteredUplink, u64)>) -> Result<(), Refusal> {
    match metered {
        Some((line, wire)) if !line.may_lend(*wire) => Err(Refusal::OverSurplus),
        _ => Ok(()),
    }
}

/// A slot's number on the wire: its index in the low byte, its generation above.
fn slot_number(index: usize, generation: u32) -> u32 {
    generation << 8 | index as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 99, 0, i], 7118))
    }

    fn open(rate: u64) -> RelayPolicy {
        RelayPolicy {
            sharing: true,
            up_total: rate,
            down_total: rate,
            up_per_neighbour: rate,
            down_per_neighbour: rate,
        }
    }

    #[test]
    fn only_admitted_neighbours_are_carried_and_replies_reach_only_them() {
        let t = Instant::now();
        let mut r = Relay::new(open(1 << 30));
        assert_eq!(r.up(t, addr(1), 100, None), Err(DropReason::NotANeighbour));
        let a = r.admit(addr(1)).unwrap();
        assert_eq!(r.admit(addr(1)), Ok(a), "one slot per neighbour");
        let b = r.admit(addr(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.up(t, addr(1), 100, None), Ok(a));
        assert_eq!(r.down(t, b, 100), Ok(addr(2)));
        // A neighbour that leaves: its slot goes to a newcomer under a new number, and a
        // late reply for the old one reaches nobody.
        r.expel(addr(1));
        assert_eq!(r.up(t, addr(1), 100, None), Err(DropReason::NotANeighbour));
        let c = r.admit(addr(3)).unwrap();
        assert_eq!(c & 0xff, a & 0xff);
        assert_ne!(c, a);
        assert_eq!(r.down(t, a, 100), Err(DropReason::UnknownRelaySlot));
        assert_eq!(r.down(t, c, 100), Ok(addr(3)));
        assert_eq!(
            r.down(t, 0xdead_beef, 100),
            Err(DropReason::UnknownRelaySlot)
        );
        // Sharing off: nothing either way, slots kept.
        r.set_policy(RelayPolicy::OFF);
        assert_eq!(r.up(t, addr(2), 100, None), Err(DropReason::NotRelaying));
        assert_eq!(r.down(t, b, 100), Err(DropReason::NotRelaying));
        assert_eq!(r.totals().up_packets, 1);
        assert_eq!(r.totals().down_packets, 2);
    }

    /// An owner who uses its line leaves relayed traffic 95 % of it less what it sends;
    /// one who sends (nearly) nothing leaves it all, uncapped.
    #[test]
    fn relayed_traffic_gets_what_the_owner_leaves() {
        assert_eq!(spare_for_relayed(1_000_000, 0), None);
        assert_eq!(spare_for_relayed(1_000_000, 50_000), None);
        assert_eq!(spare_for_relayed(1_000_000, 300_000), Some(650_000));
        assert_eq!(spare_for_relayed(1_000_000, 990_000), Some(0));
        let t0 = Instant::now();
        let mut r = Relay::new(open(1 << 30));
        r.admit(addr(1)).unwrap();
        let mut passed = 0u64;
        for i in 0..1000u64 {
            let t = t0 + Duration::from_millis(i);
            if r.up(t, addr(1), 1000, Some(200_000)).is_ok() {
                passed += 1000;
            }
        }
        assert!((198_000..=204_000).contains(&passed), "{passed}");
        assert!(r.totals().owner_first > 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = Relay::new(open(1 << 30));
        for i in 0..MAX_RELAY_SLOTS {
            r.admit(SocketAddr::from(([10, 99, 1, i as u8], 1)))
                .unwrap();
        }
        assert_eq!(r.admit(addr(1)), Err(DropReason::RelayTableFull));
        r.expel(SocketAddr::from(([10, 99, 1, 7], 1)));
        assert!(r.admit(addr(1)).is_ok());
    }

    /// The owner's caps hold on the wire: over any second, what passes is the rate and at
    /// most one burst; one neighbour over its own cap leaves the total to the others.
    #[test]
    fn caps_hold_on_the_wire() {
        let t0 = Instant::now();
        let rate = 1_000_000; // 8 Mbit/s
        let mut r = Relay::new(RelayPolicy {
            up_per_neighbour: rate / 2,
            ..open(rate)
        });
        r.admit(addr(1)).unwrap();
        r.admit(addr(2)).unwrap();
        // Neighbour 1 offers 4 MB/s for 2 s in 1400-byte datagrams; neighbour 2 a steady
        // 0.3 MB/s.
        let (mut one, mut two) = (0u64, 0u64);
        let mut t = Duration::ZERO;
        let mut next_two = Duration::ZERO;
        while t < Duration::from_secs(2) {
            if r.up(t0 + t, addr(1), 1400, None).is_ok() {
                one += 1400;
            }
            if t >= next_two {
                if r.up(t0 + t, addr(2), 1400, None).is_ok() {
                    two += 1400;
                }
                next_two += Duration::from_micros(4667);
            }
            t += Duration::from_micros(350);
        }
        let burst = rate / 100;
        assert!(
            one <= rate + burst && one >= rate - burst,
            "neighbour 1: {one}"
        );
        assert!(two >= 580_000, "neighbour 2 kept its share: {two}");
        assert!(one + two <= 2 * rate + burst, "total {}", one + two);
        assert!(r.totals().over_cap > 0);
    }

    fn wall(unix_s: i64) -> crate::sharing::WallClock {
        crate::sharing::WallClock {
            unix_s,
            utc_offset_s: 0,
        }
    }

    /// 2024-05-10 (a Friday) at `h`:`m` UTC.
    fn friday(h: i64, m: i64) -> i64 {
        1_715_299_200 + h * 3600 + m * 60
    }

    /// The daily allowance counts both ways on the wire (the envelope of what comes down
    /// included) and is never exceeded, not even by one datagram; refusals are counted
    /// per reason, per neighbour and in all.
    #[test]
    fn the_daily_allowance_holds_to_the_byte_both_ways() {
        use crate::sharing::SharePolicy;
        let t0 = Instant::now();
        let mut r = Relay::new(open(1 << 30));
        r.lending_mut().set_policy(SharePolicy {
            daily_bytes: Some(10_000),
            ..SharePolicy::UNLIMITED
        });
        r.lending_mut().set_clock(t0, wall(friday(12, 0)));
        let a = r.admit(addr(1)).unwrap();
        r.admit(addr(2)).unwrap();
        let mut given = 0u64;
        let mut t = t0;
        for i in 0..40u64 {
            t += Duration::from_millis(50);
            if r.up(t, addr(1 + (i % 2) as u8), 1400, None).is_ok() {
                given += 1400;
            }
            // Downstream, 1000 bytes on the mesh are 1000 + the envelope on the line.
            if r.down(t, a, 1000).is_ok() {
                given += 1000 + RELAY_OVERHEAD as u64;
            }
        }
        assert!(given <= 10_000, "{given}");
        assert!(
            given > 10_000 - 1400 - 1000 - RELAY_OVERHEAD as u64,
            "{given}"
        );
        assert_eq!(r.lending().status(t).lent_today, given);
        let up_refused = r.up(t, addr(1), 1400, None);
        assert_eq!(up_refused, Err(DropReason::RelayOverCap));
        // What is left still goes, to the byte; then not even an empty datagram.
        let left = 10_000 - given;
        assert!(left > RELAY_OVERHEAD as u64, "{left}");
        assert!(
            r.down(t, a, (left - RELAY_OVERHEAD as u64) as usize)
                .is_ok()
        );
        assert_eq!(r.lending().status(t).lent_today, 10_000);
        assert_eq!(r.down(t, a, 0), Err(DropReason::RelayOverCap));
        let totals = *r.totals();
        assert!(totals.over_daily >= 2);
        assert_eq!(
            (totals.over_cap, totals.over_monthly, totals.off_schedule),
            (0, 0, 0)
        );
        let per: u64 = r.neighbours().map(|(_, c)| c.over_daily).sum();
        assert_eq!(per, totals.over_daily);
        assert!(!r.lends_now(t), "the hellos offer nothing");
        // The next local day: lending again.
        let tomorrow = t0 + Duration::from_secs(12 * 3600);
        assert!(r.lends_now(tomorrow));
        assert!(r.up(tomorrow, addr(1), 1400, None).is_ok());
    }

    /// Outside the owner's hours nothing goes, either way, and the hellos offer nothing.
    #[test]
    fn nothing_goes_off_schedule() {
        use crate::sharing::{Schedule, SharePolicy};
        let t0 = Instant::now();
        let mut r = Relay::new(open(1 << 30));
        r.lending_mut().set_policy(SharePolicy {
            schedule: Schedule::parse(Some("mon-fri"), Some("22:00-07:00")).unwrap(),
            ..SharePolicy::UNLIMITED
        });
        let a = r.admit(addr(1)).unwrap();
        // No clock yet: the router cannot keep a schedule, so it lends nothing.
        assert_eq!(r.up(t0, addr(1), 100, None), Err(DropReason::NotRelaying));
        r.lending_mut().set_clock(t0, wall(friday(21, 59)));
        assert_eq!(r.up(t0, addr(1), 100, None), Err(DropReason::NotRelaying));
        assert_eq!(r.down(t0, a, 100), Err(DropReason::NotRelaying));
        assert!(!r.lends_now(t0));
        // Friday 22:00 until Saturday 07:00.
        let at = |s: u64| t0 + Duration::from_secs(60 + s);
        assert!(r.lends_now(at(0)));
        assert!(r.up(at(0), addr(1), 100, None).is_ok());
        assert!(r.down(at(9 * 3600 - 61), a, 100).is_ok(), "Saturday 06:59");
        assert_eq!(r.down(at(9 * 3600), a, 100), Err(DropReason::NotRelaying));
        let c = r.totals();
        assert_eq!((c.off_schedule, c.up_packets, c.down_packets), (4, 1, 1));
        // Sharing off beats everything.
        r.set_policy(RelayPolicy::OFF);
        assert!(!r.lends_now(at(0)));
    }

    /// A cap as a share of the measured line: 30 % of a line measured at 1 MB/s lets
    /// 300 kB/s through (and the owner's absolute cap still holds when lower).
    #[test]
    fn a_share_of_the_measured_line() {
        use crate::sharing::{Share, SharePolicy};
        let t0 = Instant::now();
        let mut r = Relay::new(open(1 << 30));
        r.lending_mut().set_policy(SharePolicy {
            up_share: Share::from_percent(30.0),
            down_share: Share::from_percent(50.0),
            ..SharePolicy::UNLIMITED
        });
        let a = r.admit(addr(1)).unwrap();
        // Not measured yet: a share of nothing.
        assert_eq!(r.caps(), (0, 0));
        assert_eq!(r.up(t0, addr(1), 1000, None), Err(DropReason::RelayOverCap));
        r.observe_line(t0, 1_000_000, 0);
        r.observe_line(t0 + Duration::from_secs(2), 1_000_000, 8_000_000);
        let (up, down) = r.caps();
        assert!((299_990..=300_000).contains(&up), "{up}");
        assert_eq!(down, 2_000_000);
        let mut passed = 0u64;
        for i in 0..1000u64 {
            let t = t0 + Duration::from_secs(2) + Duration::from_millis(i);
            // 1.4 MB/s offered.
            if r.up(t, addr(1), 1400, None).is_ok() {
                passed += 1400;
            }
        }
        assert!((295_000..=306_000).contains(&passed), "{passed}");
        assert!(r.totals().over_cap > 0);
        // The owner's own cap, when lower, wins.
        r.set_policy(RelayPolicy {
            down_total: 500_000,
            ..open(1 << 30)
        });
        assert_eq!(r.caps().1, 500_000);
        assert!(r.down(t0 + Duration::from_secs(3), a, 1000).is_ok());
    }

    /// A fixed vector for the relay tag: HMAC-SHA256 with the session's relay key over the
    /// envelope's header and the carried datagram, truncated to 16 bytes. The expected
    /// bytes were computed outside this crate (Python's `hmac`/`hashlib`, and
    /// `openssl dgst -sha256 -mac HMAC`), not by the encoder: if they change, relays and
    /// proxies of different builds no longer credit each other.
    #[test]
    fn relay_tag_vectors() {
        use crate::relay::{RelayKey, seal_envelope, verify_envelope};
        use crate::wire::{MAC_LEN, Message, MessageType, RELAY_HEADER_LEN, RELAY_OVERHEAD};

        fn unhex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }

        // Keys 00 01 .. 1f (up) and 20 21 .. 3f (down); the proxy's index for the relay's
        // session 0x01020304; slot 0x501 (generation 5, index 1); the carried datagram a
        // shortest transport message (header for path 0x0109, receiver 0xdeadbeef,
        // counter 1; then 20 bytes a0 .. b3).
        let up_key = RelayKey(std::array::from_fn(|i| i as u8));
        let down_key = RelayKey(std::array::from_fn(|i| 32 + i as u8));
        let (relay_index, slot) = (0x0102_0304, 0x0000_0501);
        let inner = "02040109deadbeef0000000000000001a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
        let cases = [
            (
                MessageType::RelayUp,
                &up_key,
                "020600000102030400000501".to_string() + inner + "4836c53efdf32c4b230d96fccd4d86dc",
            ),
            (
                MessageType::RelayDown,
                &down_key,
                "020700000102030400000501".to_string() + inner + "dc05885ca0b23d7834bdfba6485bd102",
            ),
        ];
        let inner = unhex(inner);
        for (kind, key, expect) in cases {
            let mut buf = [0u8; 128];
            buf[RELAY_HEADER_LEN..][..inner.len()].copy_from_slice(&inner);
            let n = seal_envelope(key, kind, relay_index, slot, &mut buf, inner.len()).unwrap();
            assert_eq!(n, inner.len() + RELAY_OVERHEAD);
            assert_eq!(hex(&buf[..n]), expect, "{kind:?}");
            let envelope = unhex(&expect);
            let Ok(Message::Relay(e)) = Message::parse(&envelope) else {
                panic!("{kind:?}: not an envelope");
            };
            assert_eq!(
                (e.kind(), e.relay_index(), e.slot()),
                (kind, relay_index, slot)
            );
            assert_eq!(e.inner(), &inner[..]);
            assert_eq!(e.tag(), &envelope[n - MAC_LEN..]);
            assert_eq!(verify_envelope(key, &e), Ok(()), "{kind:?}");
            // The other direction's key does not check it.
            let other = if key == &up_key { &down_key } else { &up_key };
            assert_eq!(verify_envelope(other, &e), Err(DropReason::BadRelayTag));
            // Every single-bit flip is refused: one that leaves an envelope by its tag (a
            // flip of the type between up and down included); the others no longer parse
            // as one (version, unknown type, or another message: type 6 to 4 is a
            // transport header, which the session's AEAD checks).
            for bit in 0..n * 8 {
                let mut flipped = envelope.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                match Message::parse(&flipped) {
                    Ok(Message::Relay(e)) => assert_eq!(
                        verify_envelope(key, &e),
                        Err(DropReason::BadRelayTag),
                        "{kind:?}: bit {bit}"
                    ),
                    Ok(_) | Err(_) => assert!(bit < 16, "{kind:?}: bit {bit}"),
                }
            }
        }
        // Only the two relay types are sealed.
        let mut buf = [0u8; 128];
        assert_eq!(
            seal_envelope(&up_key, MessageType::Transport, 1, 1, &mut buf, 36),
            Err(DropReason::Unexpected)
        );
    }
}
