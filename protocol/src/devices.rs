//! Per-device limits on the owner's LAN: a device (a phone, a games console) may be given
//! its own daily and monthly thresholds; once over one, its traffic is policed to a floor
//! rate while the owner's other devices go on unlimited.
//!
//! [`DeviceLimits`] is a bounded table of at most [`MAX_DEVICES`] devices, each in a fixed
//! slot ([`DeviceId`]). The daemon hands it every packet either way at the tunnel device
//! ([`DeviceLimits::handle_up`] before the core takes it, [`DeviceLimits::handle_down`]
//! before it goes to the LAN); the answer is a [`Verdict`]: pass, or drop. Nothing is
//! allocated per packet.
//!
//! **Which device a packet is of.** By its address when it carries one of a device's
//! (upstream the source, downstream the destination; the daemon tells the table which
//! addresses are whose, [`DeviceLimits::set_addresses`]). But the gateway masquerades its
//! LAN to the member's tunnel address *before* the tunnel device, so what the gateway's
//! core sees carries that address, not the device's. For those packets the device is told
//! by the port: the gateway's nftables masquerade each device's addresses into a block of
//! ports of its own ([`DeviceLimits::nat_ports`], [`NAT_FIRST_PORT`] up), and everyone
//! else's into [`NAT_OTHER_PORTS`], so for a packet with the tunnel address
//! ([`DeviceLimits::set_nat_addresses`]) a TCP or UDP port (upstream the source,
//! downstream the destination) or an ICMP echo identifier names the device. A packet of no device
//! (another device's, a protocol without ports, a fragment after the first) passes
//! untouched and uncounted.
//!
//! **Counting.** Bytes of whole IP packets, up and down together, per local day and per
//! month from the device's reset day, in the router's local time (the daemon gives the
//! wall clock, [`DeviceLimits::set_clock`]; days and months as in [`crate::sharing`]). A
//! new day starts at local midnight even between two of the daemon's clock ticks. Periods
//! never go back: a clock set back keeps counting in the later day or month.
//!
//! **Policing.** Below its thresholds a device passes freely. Once today's count reached
//! the daily threshold or the month's the monthly one, each direction has a token bucket
//! at the device's floor rate holding [`BURST_TIME`] of it (at least [`MIN_BURST`]): a
//! packet that finds enough tokens passes (and counts), one that does not is dropped
//! (and counted as dropped). TCP takes the drops as congestion and settles near the
//! floor; a sender that does not back off (UDP) just loses what is above it.
//!
//! **Across reboots.** The counts go into the gateway's state file as [`DeviceRecord`]s,
//! written rarely (flash): [`DeviceLimits::needs_save`] asks for a write once something
//! was counted and [`SAVE_EVERY`] has passed since the last, or at once when a device went
//! over a threshold; the daemon writes at a clean stop too. A crash therefore forgets at
//! most the last [`SAVE_EVERY`] of counting (and what was counted in the two seconds
//! before the daemon's next check), never that a device went over: a device over its
//! threshold before a crash is over it after.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::flow::FlowKey;
use crate::sharing::{DAY_S, Date, RecordFields, ResetDay, WallClock, write_record};

/// The most devices the table holds (each has a block of [`NAT_BLOCK_PORTS`] ports).
pub const MAX_DEVICES: usize = 32;
/// The most addresses the table holds, all devices together.
pub const MAX_ADDRESSES: usize = 256;
/// The most addresses one device holds.
pub const MAX_ADDRESSES_PER_DEVICE: usize = 16;
/// The most addresses the LAN is masqueraded to (the member's tunnel addresses).
pub const MAX_NAT_ADDRESSES: usize = 4;
/// The first port of the devices' blocks: device `i` masquerades to ports
/// `NAT_FIRST_PORT + i * NAT_BLOCK_PORTS` and the [`NAT_BLOCK_PORTS`] − 1 after it.
pub const NAT_FIRST_PORT: u16 = 32768;
/// Ports in one device's block: as many connections to one server's port at once.
pub const NAT_BLOCK_PORTS: u16 = 1024;
/// Where the gateway masquerades the traffic of everyone else on the LAN, so that it
/// never takes a port of a device's block.
pub const NAT_OTHER_PORTS: RangeInclusive<u16> = 1024..=(NAT_FIRST_PORT - 1);
/// A policed direction's bucket holds this much of the floor rate...
pub const BURST_TIME: Duration = Duration::from_millis(200);
/// ... and at least this many bytes (ten full-size packets).
pub const MIN_BURST: u64 = 15_000;
/// The floor unless configured: 1 Mbit/s, in bytes per second.
pub const DEFAULT_FLOOR: u64 = 125_000;
/// While devices are counted, the state file is written about this often.
pub const SAVE_EVERY: Duration = Duration::from_secs(600);

const MICROS: u128 = 1_000_000;

/// What a device may use before it is policed, and the rate it is policed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePolicy {
    /// Bytes a local day (up and down together) before the floor applies.
    pub daily_bytes: Option<u64>,
    /// Bytes a month, from the reset day on, before the floor applies.
    pub monthly_bytes: Option<u64>,
    /// Where the device's month starts.
    pub monthly_reset_day: ResetDay,
    /// The floor, bytes per second each way, once over a threshold.
    pub floor: u64,
}

impl Default for DevicePolicy {
    /// No threshold (counted, never policed), the default floor.
    fn default() -> Self {
        DevicePolicy {
            daily_bytes: None,
            monthly_bytes: None,
            monthly_reset_day: ResetDay::FIRST,
            floor: DEFAULT_FLOOR,
        }
    }
}

/// A device's slot in the table: also its block of NAT ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(u8);

impl DeviceId {
    /// The slot, 0 to [`MAX_DEVICES`] − 1.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Let it through (counted, if it is a device's).
    Pass,
    /// Drop it: its device is over a threshold and above its floor.
    Drop,
}

/// Which threshold a device is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Today's.
    Daily,
    /// This month's (reported first when both are reached: it lasts longer).
    Monthly,
}

impl Over {
    /// Its name in status.
    pub fn name(self) -> &'static str {
        match self {
            Over::Daily => "over_daily",
            Over::Monthly => "over_monthly",
        }
    }
}

/// Why a device or an address was not taken into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFull {
    /// [`MAX_DEVICES`] devices already.
    Devices,
    /// A device of that name already.
    NameTaken,
}

/// One direction of a device's traffic since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets passed.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets dropped over the floor.
    pub dropped_packets: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

/// A device's counts now, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceReport {
    /// The local date, if the router knows the time.
    pub today: Option<Date>,
    /// Bytes today, up and down together.
    pub today_bytes: u64,
    /// The first day of the month period counted.
    pub month_start: Option<Date>,
    /// Bytes in this month period.
    pub month_bytes: u64,
    /// Whether it is policed to its floor now, and why.
    pub over: Option<Over>,
    /// Upstream since the start.
    pub up: Traffic,
    /// Downstream since the start.
    pub down: Traffic,
}

/// A token bucket in micro-bytes; `None` at: full.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tokens: u128,
    at: Option<Instant>,
}

impl Bucket {
    /// Takes `len` bytes at `rate` bytes per second holding at most `burst`; false when
    /// there are not enough.
    fn take(&mut self, now: Instant, rate: u64, burst: u64, len: u64) -> bool {
        let cap = u128::from(burst) * MICROS;
        self.tokens = match self.at {
            None => cap,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_micros();
                cap.min(
                    self.tokens
                        .saturating_add(u128::from(rate).saturating_mul(dt)),
                )
            }
        };
        self.at = Some(now);
        let need = u128::from(len) * MICROS;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

/// Months since year 0 of the month period `date` is in, for a month starting on `reset`.
fn month_period(date: Date, reset: ResetDay) -> i64 {
    let month = i64::from(date.year) * 12 + i64::from(date.month) - 1;
    month - i64::from(date.day < reset.day())
}

/// The first day of month period `period`.
fn period_start(period: i64, reset: ResetDay) -> Date {
    Date {
        year: period.div_euclid(12) as i32,
        month: (period.rem_euclid(12) + 1) as u8,
        day: reset.day(),
    }
}

/// A device's bytes in its current day and month period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Meter {
    /// Local days since 1970-01-01 of the day counted.
    day: Option<i64>,
    /// The month period counted ([`month_period`]).
    month: Option<i64>,
    day_bytes: u64,
    month_bytes: u64,
}

impl Meter {
    /// Counts in the periods of `date`; never goes back.
    fn roll(&mut self, date: Date, reset: ResetDay) {
        let day = date.days();
        if self.day.is_none_or(|d| day > d) {
            self.day = Some(day);
            self.day_bytes = 0;
        }
        let month = month_period(date, reset);
        if self.month.is_none_or(|m| month > m) {
            self.month = Some(month);
            self.month_bytes = 0;
        }
    }

    /// The counts in the periods of `date`, without moving to them.
    fn on(&self, date: Date, reset: ResetDay) -> (u64, u64) {
        let day = if self.day.is_some_and(|d| d >= date.days()) {
            self.day_bytes
        } else {
            0
        };
        let month = if self.month.is_some_and(|m| m >= month_period(date, reset)) {
            self.month_bytes
        } else {
            0
        };
        (day, month)
    }
}

#[derive(Debug, Clone)]
struct Device {
    name: String,
    policy: DevicePolicy,
    meter: Meter,
    up: Bucket,
    down: Bucket,
    traffic_up: Traffic,
    traffic_down: Traffic,
    /// Went over a threshold since the last checkpoint.
    crossed: bool,
}

/// Which threshold counts of `day` and `month` bytes reach under `policy`.
fn over(policy: &DevicePolicy, day: u64, month: u64) -> Option<Over> {
    let reached = |count: u64, threshold: Option<u64>| threshold.is_some_and(|t| count >= t);
    if reached(month, policy.monthly_bytes) {
        Some(Over::Monthly)
    } else if reached(day, policy.daily_bytes) {
        Some(Over::Daily)
    } else {
        None
    }
}

impl Device {
    fn over(&self) -> Option<Over> {
        over(&self.policy, self.meter.day_bytes, self.meter.month_bytes)
    }

    fn burst(&self) -> u64 {
        let burst = u128::from(self.policy.floor) * BURST_TIME.as_micros() / MICROS;
        (burst as u64).max(MIN_BURST)
    }
}

/// Upstream or downstream, at the tunnel device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Up,
    Down,
}

/// The owner's devices with their limits, counts and buckets. See the [module](self).
#[derive(Debug, Clone)]
pub struct DeviceLimits {
    /// [`MAX_DEVICES`] slots.
    slots: Vec<Option<Device>>,
    /// Sorted by address; at most [`MAX_ADDRESSES`].
    addresses: Vec<(IpAddr, DeviceId)>,
    /// What the LAN is masqueraded to: packets with these addresses are told by port.
    nat_addresses: Vec<IpAddr>,
    /// The wall clock at an instant.
    clock: Option<(Instant, WallClock)>,
    /// The next local midnight: periods roll over then.
    rollover: Option<Instant>,
    /// Counted since the last checkpoint (any device).
    since_save: u64,
    saved_at: Option<Instant>,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits::new()
    }
}

impl DeviceLimits {
    /// An empty table (every slot and the address table allocated now, once).
    pub fn new() -> DeviceLimits {
        DeviceLimits {
            slots: vec![None; MAX_DEVICES],
            addresses: Vec::with_capacity(MAX_ADDRESSES),
            nat_addresses: Vec::with_capacity(MAX_NAT_ADDRESSES),
            clock: None,
            rollover: None,
            since_save: 0,
            saved_at: None,
        }
    }

    /// Makes the table hold exactly `devices` (names are unique; at most
    /// [`MAX_DEVICES`]; more are left out). A device already there by that name keeps its
    /// slot, its counts and its addresses, and takes the new policy; the others start
    /// from zero in the first free slots; those no longer named are forgotten. Returns
    /// each one's slot, in `devices` order.
    pub fn configure(&mut self, devices: &[(String, DevicePolicy)]) -> Vec<DeviceId> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot
                .as_ref()
                .is_some_and(|d| !devices.iter().any(|(n, _)| *n == d.name))
            {
                *slot = None;
                self.addresses.retain(|(_, id)| id.index() != i);
            }
        }
        let mut ids = Vec::with_capacity(devices.len());
        for (name, policy) in devices {
            let id = match self.find(name) {
                Some(id) => {
                    if let Some(d) = self.slots[id.index()].as_mut() {
                        d.policy = *policy;
                    }
                    Ok(id)
                }
                None => self.add(name, *policy),
            };
            if let Ok(id) = id {
                ids.push(id);
            }
        }
        ids
    }

    /// Adds a device in the first free slot, counting from zero.
    pub fn add(&mut self, name: &str, policy: DevicePolicy) -> Result<DeviceId, TableFull> {
        if self.find(name).is_some() {
            return Err(TableFull::NameTaken);
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(TableFull::Devices)?;
        let mut device = Device {
            name: name.to_string(),
            policy,
            meter: Meter::default(),
            up: Bucket::default(),
            down: Bucket::default(),
            traffic_up: Traffic::default(),
            traffic_down: Traffic::default(),
            crossed: false,
        };
        if let Some((_, clock)) = self.clock {
            device.meter.roll(clock.date(), policy.monthly_reset_day);
        }
        self.slots[free] = Some(device);
        Ok(DeviceId(free as u8))
    }

    /// The device named `name`.
    pub fn find(&self, name: &str) -> Option<DeviceId> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|d| d.name == name))
            .map(|i| DeviceId(i as u8))
    }

    /// Every device, by slot.
    pub fn ids(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| DeviceId(i as u8))
    }

    /// Whether the table holds no device.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// A device's name.
    pub fn name(&self, id: DeviceId) -> Option<&str> {
        self.device(id).map(|d| d.name.as_str())
    }

    /// A device's policy.
    pub fn policy(&self, id: DeviceId) -> Option<&DevicePolicy> {
        self.device(id).map(|d| &d.policy)
    }

    fn device(&self, id: DeviceId) -> Option<&Device> {
        self.slots.get(id.index())?.as_ref()
    }

    /// The ports a device's traffic is masqueraded to (its slot's block).
    pub fn nat_ports(id: DeviceId) -> RangeInclusive<u16> {
        let first = NAT_FIRST_PORT + id.0 as u16 * NAT_BLOCK_PORTS;
        first..=first + (NAT_BLOCK_PORTS - 1)
    }

    /// The device whose block holds `port`.
    fn by_port(&self, port: u16) -> Option<DeviceId> {
        let slot = usize::from(port.checked_sub(NAT_FIRST_PORT)? / NAT_BLOCK_PORTS);
        self.slots.get(slot)?.as_ref().map(|_| DeviceId(slot as u8))
    }

    /// Makes `addresses` the ones device `id` uses (in order, up to
    /// [`MAX_ADDRESSES_PER_DEVICE`] of them, and while the table has room). An address
    /// another device holds stays that device's. Returns how many were taken.
    pub fn set_addresses(&mut self, id: DeviceId, addresses: &[IpAddr]) -> usize {
        if self.device(id).is_none() {
            return 0;
        }
        self.addresses.retain(|(_, d)| *d != id);
        let mut taken = 0;
        for &a in addresses {
            if taken == MAX_ADDRESSES_PER_DEVICE || self.addresses.len() == MAX_ADDRESSES {
                break;
            }
            let a = canonical(a);
            if let Err(at) = self.addresses.binary_search_by(|(x, _)| x.cmp(&a)) {
                self.addresses.insert(at, (a, id));
                taken += 1;
            }
        }
        taken
    }

    /// The addresses the gateway masquerades its LAN to (the member's tunnel addresses,
    /// at most [`MAX_NAT_ADDRESSES`]): a packet with one of them (upstream its source,
    /// downstream its destination) is told by its port. A packet with an address that is
    /// neither a device's nor one of these is no device's.
    pub fn set_nat_addresses(&mut self, addresses: &[IpAddr]) {
        self.nat_addresses.clear();
        for &a in addresses.iter().take(MAX_NAT_ADDRESSES) {
            self.nat_addresses.push(canonical(a));
        }
    }

    /// The addresses device `id` uses, in address order.
    pub fn addresses(&self, id: DeviceId) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .filter(move |(_, d)| *d == id)
            .map(|(a, _)| *a)
    }

    /// The device using `address`.
    pub fn by_address(&self, address: IpAddr) -> Option<DeviceId> {
        let a = canonical(address);
        self.addresses
            .binary_search_by(|(x, _)| x.cmp(&a))
            .ok()
            .map(|i| self.addresses[i].1)
    }

    /// The wall clock at `now`. The daemon sets it at start and then every tick; between
    /// two, the clock is reckoned from `now`.
    pub fn set_clock(&mut self, now: Instant, clock: WallClock) {
        self.clock = Some((now, clock));
        self.roll(now);
    }

    /// The wall clock at `now`, if the daemon gave it.
    fn clock(&self, now: Instant) -> Option<WallClock> {
        let (at, c) = self.clock?;
        let unix_s = match now.checked_duration_since(at) {
            Some(d) => c.unix_s.saturating_add(d.as_secs() as i64),
            None => c
                .unix_s
                .saturating_sub(at.duration_since(now).as_secs() as i64),
        };
        Some(WallClock { unix_s, ..c })
    }

    /// Moves every device to the periods of `now`, and finds the next local midnight.
    fn roll(&mut self, now: Instant) {
        let Some(clock) = self.clock(now) else {
            return;
        };
        let date = clock.date();
        for d in self.slots.iter_mut().flatten() {
            d.meter.roll(date, d.policy.monthly_reset_day);
        }
        let local = clock.unix_s + i64::from(clock.utc_offset_s);
        // Seconds are whole in the clock: the next midnight is at most a second late.
        let left = DAY_S - local.rem_euclid(DAY_S);
        self.rollover = Some(now + Duration::from_secs(left as u64));
    }

    /// A packet from the LAN towards the Internet (at the tunnel device, before the core).
    pub fn handle_up(&mut self, now: Instant, packet: &[u8]) -> Verdict {
        self.handle(now, packet, Way::Up)
    }

    /// A packet from the Internet for the LAN (out of the core, before the tunnel device).
    pub fn handle_down(&mut self, now: Instant, packet: &[u8]) -> Verdict {
        self.handle(now, packet, Way::Down)
    }

    fn handle(&mut self, now: Instant, packet: &[u8], way: Way) -> Verdict {
        let Some(id) = self.classify(packet, way) else {
            return Verdict::Pass;
        };
        if self.rollover.is_some_and(|t| now >= t) {
            self.roll(now);
        }
        let Some(d) = self.slots[id.index()].as_mut() else {
            return Verdict::Pass;
        };
        let len = packet.len() as u64;
        let was_over = d.over();
        let (floor, burst) = (d.policy.floor, d.burst());
        let (bucket, traffic) = match way {
            Way::Up => (&mut d.up, &mut d.traffic_up),
            Way::Down => (&mut d.down, &mut d.traffic_down),
        };
        if was_over.is_some() {
            if !bucket.take(now, floor, burst, len) {
                traffic.dropped_packets += 1;
                traffic.dropped_bytes += len;
                return Verdict::Drop;
            }
        } else {
            // Full when the floor starts to apply.
            *bucket = Bucket::default();
        }
        traffic.packets += 1;
        traffic.bytes += len;
        d.meter.day_bytes = d.meter.day_bytes.saturating_add(len);
        d.meter.month_bytes = d.meter.month_bytes.saturating_add(len);
        if was_over.is_none() && d.over().is_some() {
            d.crossed = true;
        }
        self.since_save = self.since_save.saturating_add(len);
        Verdict::Pass
    }

    /// The device a packet is of: by its address, else by its masqueraded port.
    fn classify(&self, packet: &[u8], way: Way) -> Option<DeviceId> {
        let (key, _) = FlowKey::parse(packet)?;
        let (address, port) = match way {
            Way::Up => (key.src(), key.src_port()),
            Way::Down => (key.dst(), key.dst_port()),
        };
        if let Some(id) = self.by_address(address) {
            return Some(id);
        }
        if !self.nat_addresses.contains(&canonical(address)) {
            return None;
        }
        // Masquerading maps TCP and UDP ports and ICMP echo identifiers (an echo's key
        // ports; other ICMP, later fragments and cut headers have 0, in no block).
        match key.protocol() {
            TCP | UDP | ICMP | ICMPV6 => self.by_port(port),
            _ => None,
        }
    }

    /// A device's counts at `now`.
    pub fn report(&self, id: DeviceId, now: Instant) -> Option<DeviceReport> {
        let d = self.device(id)?;
        let reset = d.policy.monthly_reset_day;
        let date = self.clock(now).map(|c| c.date());
        let (today_bytes, month_bytes) = match date {
            Some(date) => d.meter.on(date, reset),
            None => (d.meter.day_bytes, d.meter.month_bytes),
        };
        let month = match date {
            Some(date) => Some(month_period(date, reset).max(d.meter.month.unwrap_or(i64::MIN))),
            None => d.meter.month,
        };
        Some(DeviceReport {
            today: date,
            today_bytes,
            month_start: month.map(|m| period_start(m, reset)),
            month_bytes,
            over: over(&d.policy, today_bytes, month_bytes),
            up: d.traffic_up,
            down: d.traffic_down,
        })
    }

    /// Whether the counts should be written to the state file now: once the router knows
    /// the time, if never written since the start; then when something was counted and
    /// either [`SAVE_EVERY`] passed or a device went over a threshold.
    pub fn needs_save(&self, now: Instant) -> bool {
        if self.clock.is_none() || self.is_empty() {
            return false;
        }
        let Some(saved) = self.saved_at else {
            return true;
        };
        self.since_save > 0
            && (now.saturating_duration_since(saved) >= SAVE_EVERY
                || self.slots.iter().flatten().any(|d| d.crossed))
    }

    /// The records to write now: every device's counts, exactly. Empty before the router
    /// knows the time. The table takes them as written.
    pub fn checkpoint(&mut self, now: Instant) -> Vec<DeviceRecord> {
        if self.clock.is_none() {
            return Vec::new();
        }
        self.roll(now);
        let mut records = Vec::new();
        for d in self.slots.iter_mut().flatten() {
            d.crossed = false;
            let (Some(day), Some(month)) = (d.meter.day, d.meter.month) else {
                continue;
            };
            records.push(DeviceRecord {
                name: d.name.clone(),
                day: Date::from_days(day),
                day_bytes: d.meter.day_bytes,
                month: period_start(month, d.policy.monthly_reset_day),
                month_bytes: d.meter.month_bytes,
            });
        }
        self.since_save = 0;
        self.saved_at = Some(now);
        records
    }

    /// Takes up the counts of records read at start, by name (records of devices no
    /// longer configured are left out). Counts in their day and month, and in later ones
    /// only once those start. Returns how many were taken.
    pub fn restore(&mut self, records: &[DeviceRecord]) -> usize {
        let mut taken = 0;
        for r in records {
            let Some(id) = self.find(&r.name) else {
                continue;
            };
            let Some(d) = self.slots[id.index()].as_mut() else {
                continue;
            };
            let m = &mut d.meter;
            let day = r.day.days();
            if m.day.is_none_or(|d| day >= d) {
                m.day_bytes = if m.day == Some(day) {
                    m.day_bytes.max(r.day_bytes)
                } else {
                    r.day_bytes
                };
                m.day = Some(day);
            }
            let month = i64::from(r.month.year) * 12 + i64::from(r.month.month) - 1;
            if m.month.is_none_or(|x| month >= x) {
                m.month_bytes = if m.month == Some(month) {
                    m.month_bytes.max(r.month_bytes)
                } else {
                    r.month_bytes
                };
                m.month = Some(month);
            }
            taken += 1;
        }
        taken
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

// ---------------------------------------------------------------------------------------
// Records

/// What the state file keeps of a device: its bytes on a day and in a month period. One
/// versioned line of `key=value` words:
///
/// ```text
/// v1 name=tablet day=2024-02-29 day_bytes=1234 month=2024-02-15 month_bytes=56789 check=…
/// ```
///
/// `check` is 16 hex digits of FNV-1a over what comes before it, so that a damaged record
/// is refused rather than half read. `month` is the first day of the month period (its day
/// is the reset day in force when the record was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The local day the day count is for.
    pub day: Date,
    /// Bytes that day.
    pub day_bytes: u64,
    /// The first day of the month period the month count is for.
    pub month: Date,
    /// Bytes in that period.
    pub month_bytes: u64,
}

/// Whether `name` can name a device (in the state file, status and logs): 1 to 32
/// letters, digits, `-`, `_` and `.`.
pub fn is_device_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Display for DeviceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_record(
            f,
            format_args!(
                "name={} day={} day_bytes={} month={} month_bytes={}",
                self.name, self.day, self.day_bytes, self.month, self.month_bytes
            ),
        )
    }
}

impl DeviceRecord {
    /// Reads a record written by [`fmt::Display`]; the reason when it is not one.
    pub fn parse(s: &str) -> Result<DeviceRecord, String> {
        let r = RecordFields::read(
            s,
            "device",
            ["name", "day", "day_bytes", "month", "month_bytes"],
        )?;
        let name = r.text(0);
        if !is_device_name(name) {
            return Err(format!("`name={name}` is not a device name"));
        }
        let (day, month) = r.periods(1, 3)?;
        Ok(DeviceRecord {
            name: name.to_string(),
            day,
            day_bytes: r.count(2)?,
            month,
            month_bytes: r.count(4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::fnv1a;
    use crate::sharing::test_clock::{at, date, utc};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TUNNEL: [u8; 4] = [10, 77, 0, 2];
    const SERVER: [u8; 4] = [198, 51, 100, 80];

    /// An IPv4 packet of `len` bytes of `protocol`, ports (or echo id) as given.
    fn v4(len: usize, src: [u8; 4], dst: [u8; 4], protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; len.max(28)];
        p[0] = 0x45;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// An ICMP message of `kind` with identifier `id`.
    fn icmp4(src: [u8; 4], dst: [u8; 4], kind: u8, id: [u8; 2]) -> Vec<u8> {
        let mut p = v4(84, src, dst, ICMP, u16::from(kind) << 8, 0);
        p[24..26].copy_from_slice(&id);
        p
    }

    /// An upstream TCP packet masqueraded to the tunnel address, from `port`.
    fn up(len: usize, port: u16) -> Vec<u8> {
        v4(len, TUNNEL, SERVER, TCP, port, 443)
    }

    /// A downstream TCP packet for the tunnel address, to `port`.
    fn down(len: usize, port: u16) -> Vec<u8> {
        v4(len, SERVER, TUNNEL, TCP, 443, port)
    }

    /// The tunnel addresses the LAN is masqueraded to.
    fn nat() -> [IpAddr; 2] {
        [IpAddr::V4(TUNNEL.into()), "fd77::2".parse().unwrap()]
    }

    fn policy(daily_mb: Option<u64>, monthly_mb: Option<u64>, reset: u8) -> DevicePolicy {
        DevicePolicy {
            daily_bytes: daily_mb.map(|m| m * 1_000_000),
            monthly_bytes: monthly_mb.map(|m| m * 1_000_000),
            monthly_reset_day: ResetDay::new(reset).unwrap(),
            floor: DEFAULT_FLOOR,
        }
    }

    /// A table with one device `kid` (slot 0) at `unix_s` at `t0`.
    fn table(p: DevicePolicy, t0: Instant, unix_s: i64) -> (DeviceLimits, DeviceId) {
        let mut t = DeviceLimits::new();
        let id = t.add("kid", p).unwrap();
        t.set_nat_addresses(&nat());
        t.set_clock(t0, utc(unix_s));
        (t, id)
    }

    fn port_of(id: DeviceId) -> u16 {
        *DeviceLimits::nat_ports(id).start() + 7
    }

    /// Sends `bytes` downstream in 1500-byte packets all at `now`; returns what passed.
    fn pour(t: &mut DeviceLimits, now: Instant, port: u16, bytes: u64) -> u64 {
        let p = down(1500, port);
        let mut passed = 0;
        for _ in 0..bytes / 1500 {
            if t.handle_down(now, &p) == Verdict::Pass {
                passed += 1500;
            }
        }
        passed
    }

    #[test]
    fn ports_blocks_and_names() {
        let first = DeviceLimits::nat_ports(DeviceId(0));
        assert_eq!(first, 32768..=33791);
        assert_eq!(
            DeviceLimits::nat_ports(DeviceId(MAX_DEVICES as u8 - 1)),
            64512..=65535,
            "the last block ends at the last port"
        );
        assert!(*NAT_OTHER_PORTS.end() < *first.start());
        assert!(is_device_name("kids-tablet_2.lan"));
        assert!(!is_device_name("") && !is_device_name("a b") && !is_device_name("x=y"));
        assert!(!is_device_name(&"a".repeat(33)));
    }

    /// Below its daily threshold a device passes everything and counts it, up and down
    /// together; the packet that reaches it passes too, and the floor applies from then on.
    #[test]
    fn the_daily_threshold_starts_the_floor() {
        let t0 = Instant::now();
        let (mut t, id) = table(policy(Some(2), None, 1), t0, at("2024-05-10", 12, 0));
        let port = port_of(id);
        // 1.5 MB down and 0.4 MB up in one instant: all of it passes, under the threshold.
        assert_eq!(pour(&mut t, t0, port, 1_500_000), 1_500_000);
        for _ in 0..(400_000 / 1000) {
            assert_eq!(t.handle_up(t0, &up(1000, port)), Verdict::Pass);
        }
        let r = t.report(id, t0).unwrap();
        assert_eq!(
            (r.today_bytes, r.month_bytes, r.over),
            (1_900_000, 1_900_000, None)
        );
        assert_eq!(r.today, Some(date("2024-05-10")));
        assert_eq!(r.month_start, Some(date("2024-05-01")));
        // 100 kB more reaches 2 MB exactly: over, from the next packet on.
        assert_eq!(pour(&mut t, t0, port, 100_500), 100_500);
        let r = t.report(id, t0).unwrap();
        assert_eq!((r.today_bytes, r.over), (2_000_500, Some(Over::Daily)));
        // A burst of the floor's bucket passes, the rest of this instant's flood is dropped.
        let passed = pour(&mut t, t0, port, 1_500_000);
        assert!(
            (MIN_BURST..MIN_BURST + 30_000).contains(&passed),
            "{passed}"
        );
        let r = t.report(id, t0).unwrap();
        assert_eq!(r.down.dropped_bytes, 1_500_000 - passed);
        assert_eq!(
            r.today_bytes,
            2_000_500 + passed,
            "what passed over counts too"
        );
        assert!(t.needs_save(t0), "going over is written at once");
    }

    /// The monthly threshold holds across days; a new day does not lift it.
    #[test]
    fn the_monthly_threshold_outlasts_the_day() {
        let t0 = Instant::now();
        let (mut t, id) = table(policy(None, Some(3), 1), t0, at("2024-05-10", 23, 0));
        let port = port_of(id);
        pour(&mut t, t0, port, 3_000_000);
        assert_eq!(t.report(id, t0).unwrap().over, Some(Over::Monthly));
        let t1 = t0 + Duration::from_secs(2 * 3600);
        let r = t.report(id, t1).unwrap();
        assert_eq!((r.today, r.today_bytes), (Some(date("2024-05-11")), 0));
        assert_eq!((r.month_bytes, r.over), (3_000_000, Some(Over::Monthly)));
        assert!(pour(&mut t, t1, port, 1_000_000) < 100_000);
    }

    /// A new local day starts at the device's local midnight, even between clock ticks,
    /// and lifts a daily threshold.
    #[test]
    fn a_new_day_at_local_midnight() {
        let t0 = Instant::now();
        let mut t = DeviceLimits::new();
        let id = t.add("kid", policy(Some(1), None, 1)).unwrap();
        t.set_nat_addresses(&nat());
        // 22:59:30 UTC is 23:59:30 in UTC+1.
        t.set_clock(
            t0,
            WallClock {
                unix_s: at("2024-05-10", 22, 59) + 30,
                utc_offset_s: 3600,
            },
        );
        let port = port_of(id);
        pour(&mut t, t0, port, 1_000_500);
        assert_eq!(t.report(id, t0).unwrap().over, Some(Over::Daily));
        let before = t0 + Duration::from_secs(29);
        assert!(pour(&mut t, before, port, 600_000) < 100_000, "still today");
        // No set_clock: the table knows when midnight is.
        let after = t0 + Duration::from_secs(30);
        assert_eq!(pour(&mut t, after, port, 600_000), 600_000);
        let r = t.report(id, after).unwrap();
        assert_eq!(
            (r.today, r.today_bytes, r.over),
            (Some(date("2024-05-11")), 600_000, None)
        );
    }

    /// The month starts again on the reset day, across month ends of 28 to 31 days and
    /// the year's end, and in local time.
    #[test]
    fn the_month_resets_on_its_day_across_month_ends() {
        let t0 = Instant::now();
        for (reset, last_of_period, first_of_next) in [
            (28, "2024-02-27", "2024-02-28"),
            (1, "2024-02-29", "2024-03-01"),
            (1, "2023-12-31", "2024-01-01"),
            (15, "2024-01-14", "2024-01-15"),
            (28, "2023-12-27", "2023-12-28"),
            (1, "2024-04-30", "2024-05-01"),
            (1, "2025-02-28", "2025-03-01"),
        ] {
            let (mut t, id) = table(
                policy(None, Some(1), reset),
                t0,
                at(last_of_period, 23, 59) + 59,
            );
            let port = port_of(id);
            pour(&mut t, t0, port, 1_000_500);
            let r = t.report(id, t0).unwrap();
            assert_eq!(r.over, Some(Over::Monthly), "{last_of_period}");
            assert!(r.month_start < Some(date(first_of_next)));
            let t1 = t0 + Duration::from_secs(1);
            let r = t.report(id, t1).unwrap();
            assert_eq!(
                (r.month_start, r.month_bytes, r.over),
                (Some(date(first_of_next)), 0, None),
                "reset day {reset} at {first_of_next}"
            );
            assert_eq!(pour(&mut t, t1, port, 600_000), 600_000);
        }
        // The day before the reset day belongs to the period that started last month.
        let (t, id) = table(policy(None, Some(1), 15), t0, at("2024-03-14", 12, 0));
        assert_eq!(
            t.report(id, t0).unwrap().month_start,
            Some(date("2024-02-15"))
        );
        // In local time: 23:30 UTC on the 14th is already the 15th in UTC+1.
        let mut t = DeviceLimits::new();
        let id = t.add("kid", policy(None, Some(1), 15)).unwrap();
        t.set_clock(
            t0,
            WallClock {
                unix_s: at("2024-03-14", 23, 30),
                utc_offset_s: 3600,
            },
        );
        assert_eq!(
            t.report(id, t0).unwrap().month_start,
            Some(date("2024-03-15"))
        );
    }

    /// A clock set back keeps counting in the later day: the threshold is not lifted.
    #[test]
    fn periods_never_go_back() {
        let t0 = Instant::now();
        let (mut t, id) = table(policy(Some(1), None, 1), t0, at("2024-05-11", 0, 10));
        pour(&mut t, t0, port_of(id), 1_000_500);
        t.set_clock(t0, utc(at("2024-05-10", 23, 50)));
        let r = t.report(id, t0).unwrap();
        assert_eq!((r.today_bytes, r.over), (1_000_500, Some(Over::Daily)));
    }

    /// Over a threshold, a flood well above the floor gets the floor: measured over ten
    /// simulated seconds, each way on its own.
    #[test]
    fn over_a_threshold_the_floor_is_kept_in_simulated_time() {
        for floor in [125_000u64, 1_250_000, 12_500] {
            let t0 = Instant::now();
            let (mut t, id) = table(
                DevicePolicy {
                    floor,
                    ..policy(Some(1), None, 1)
                },
                t0,
                at("2024-05-10", 12, 0),
            );
            let port = port_of(id);
            pour(&mut t, t0, port, 1_000_500);
            // Offered: 1500-byte packets at ten times the floor, both ways, for 10 s.
            let gap = Duration::from_nanos(1500 * 1_000_000_000 / (10 * floor));
            let (mut now, end) = (t0, t0 + Duration::from_secs(10));
            let (mut passed_down, mut passed_up) = (0u64, 0u64);
            let (d, u) = (down(1500, port), up(1500, port));
            while now < end {
                if t.handle_down(now, &d) == Verdict::Pass {
                    passed_down += 1500;
                }
                if t.handle_up(now, &u) == Verdict::Pass {
                    passed_up += 1500;
                }
                now += gap;
            }
            let burst = floor * BURST_TIME.as_millis() as u64 / 1000;
            for passed in [passed_down, passed_up] {
                let rate = (passed - burst.max(MIN_BURST)) as f64 / 10.0;
                let error = (rate / floor as f64 - 1.0).abs();
                assert!(error < 0.02, "floor {floor} B/s: {rate:.0} B/s passed");
            }
            let r = t.report(id, end).unwrap();
            assert!(r.down.dropped_packets > 0 && r.up.dropped_packets > 0);
        }
    }

    /// Packets of no device pass untouched and uncounted: other ports, other blocks, no
    /// ports at all, later fragments, garbage.
    #[test]
    fn what_is_no_devices_passes_uncounted() {
        let t0 = Instant::now();
        let (mut t, id) = table(policy(Some(1), None, 1), t0, at("2024-05-10", 12, 0));
        pour(&mut t, t0, port_of(id), 1_000_500);
        let others = [
            // Everyone else's ports; the block of a slot no device holds.
            down(1500, 2000),
            down(1500, 40_000),
            // No ports (GRE).
            v4(1500, SERVER, TUNNEL, 47, 0, 0),
            // Neither a device's address nor the tunnel's, whatever its port.
            v4(1500, [192, 168, 1, 7], SERVER, UDP, port_of(id), 53),
            v4(1500, SERVER, [192, 168, 1, 7], UDP, 53, port_of(id)),
            // Not IP.
            vec![0x45, 0, 0],
            vec![],
            vec![0x99; 60],
        ];
        let mut fragment = down(1500, port_of(id));
        fragment[6] = 0x00;
        fragment[7] = 0xb9; // offset 185 × 8
        for p in others.iter().chain([&fragment]) {
            for _ in 0..100 {
                assert_eq!(t.handle_down(t0, p), Verdict::Pass);
                assert_eq!(t.handle_up(t0, p), Verdict::Pass);
            }
        }
        let r = t.report(id, t0).unwrap();
        assert_eq!(r.today_bytes, 1_000_500, "nothing of theirs counted");
        assert_eq!(r.down.dropped_packets, 0);
    }

    /// By address (IPv4, IPv6, IPv4-mapped), by masqueraded port (TCP, UDP), by echo
    /// identifier (ICMP, ICMPv6), past IPv6 extension headers.
    #[test]
    fn packets_are_told_by_address_port_or_echo_id_in_both_families() {
        let t0 = Instant::now();
        let mut t = DeviceLimits::new();
        let kid = t.add("kid", policy(None, None, 1)).unwrap();
        let tv = t.add("tv", policy(None, None, 1)).unwrap();
        t.set_nat_addresses(&nat());
        t.set_clock(t0, utc(at("2024-05-10", 12, 0)));
        let kid_v6: IpAddr = "fd00:1::100".parse().unwrap();
        assert_eq!(
            t.set_addresses(kid, &["192.168.1.100".parse().unwrap(), kid_v6]),
            2
        );
        assert_eq!(
            t.set_addresses(tv, &["::ffff:192.168.1.50".parse().unwrap(), kid_v6]),
            1,
            "the kid's address stays the kid's"
        );
        assert_eq!(t.by_address("192.168.1.50".parse().unwrap()), Some(tv));
        assert_eq!(t.addresses(kid).count(), 2);

        let v6 = |src: &str, dst: &str, next: u8, l4: &[u8], ext: Option<u8>| {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
            p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
            match ext {
                Some(h) => {
                    p[6] = h;
                    p.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
                None => p[6] = next,
            }
            p.extend_from_slice(l4);
            let len = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
            p
        };
        let tunnel6 = "fd77::2";
        let server6 = "2001:db8:ff01::80";
        let kid_port = port_of(kid).to_be_bytes();
        let tv_port = port_of(tv).to_be_bytes();
        let cases: Vec<(Vec<u8>, Way, DeviceId)> = vec![
            (
                v4(100, [192, 168, 1, 100], SERVER, UDP, 5000, 53),
                Way::Up,
                kid,
            ),
            (
                v4(100, SERVER, [192, 168, 1, 50], TCP, 443, 5000),
                Way::Down,
                tv,
            ),
            (
                v6("fd00:1::100", server6, TCP, &[0; 20], None),
                Way::Up,
                kid,
            ),
            (
                v6(server6, "fd00:1::100", UDP, &[0; 8], None),
                Way::Down,
                kid,
            ),
            (v4(100, TUNNEL, SERVER, UDP, port_of(tv), 53), Way::Up, tv),
            (
                v6(
                    tunnel6,
                    server6,
                    UDP,
                    &[kid_port[0], kid_port[1], 0, 53, 0, 8, 0, 0],
                    None,
                ),
                Way::Up,
                kid,
            ),
            (
                v6(
                    server6,
                    tunnel6,
                    TCP,
                    &[
                        1, 187, tv_port[0], tv_port[1], 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0,
                        0, 0, 0,
                    ],
                    Some(60),
                ),
                Way::Down,
                tv,
            ),
            // Echo request up (type 8, id at 4), echo reply down (type 0).
            (icmp4(TUNNEL, SERVER, 8, kid_port), Way::Up, kid),
            (icmp4(SERVER, TUNNEL, 0, tv_port), Way::Down, tv),
            (
                v6(
                    tunnel6,
                    server6,
                    ICMPV6,
                    &[128, 0, 0, 0, tv_port[0], tv_port[1], 0, 1],
                    None,
                ),
                Way::Up,
                tv,
            ),
            (
                v6(
                    server6,
                    tunnel6,
                    ICMPV6,
                    &[129, 0, 0, 0, kid_port[0], kid_port[1], 0, 1],
                    None,
                ),
                Way::Down,
                kid,
            ),
        ];
        for (i, (p, way, want)) in cases.iter().enumerate() {
            assert_eq!(t.classify(p, *way), Some(*want), "case {i}");
        }
        // An ICMP error (type 3) has no identifier of its own; a later IPv6 fragment no
        // transport header.
        let unreachable = icmp4(SERVER, TUNNEL, 3, kid_port);
        assert_eq!(t.classify(&unreachable, Way::Down), None);
        let mut later = v6(
            server6,
            tunnel6,
            UDP,
            &[1, 187, kid_port[0], kid_port[1], 0, 8, 0, 0],
            Some(44),
        );
        later[42] = 0x01; // fragment offset 32
        assert_eq!(t.classify(&later, Way::Down), None);
        let mut first = later.clone();
        first[42] = 0;
        assert_eq!(t.classify(&first, Way::Down), Some(kid));
        // Counted where they belong.
        for (p, way, _) in &cases {
            let _ = match way {
                Way::Up => t.handle_up(t0, p),
                Way::Down => t.handle_down(t0, p),
            };
        }
        let r = t.report(tv, t0).unwrap();
        assert_eq!(r.up.packets + r.down.packets, 5);
    }

    /// The table is bounded: devices, addresses per device and in all.
    #[test]
    fn the_table_is_bounded() {
        let mut t = DeviceLimits::new();
        for i in 0..MAX_DEVICES {
            t.add(&format!("d{i}"), DevicePolicy::default()).unwrap();
        }
        assert_eq!(
            t.add("one-more", DevicePolicy::default()),
            Err(TableFull::Devices)
        );
        assert_eq!(
            t.add("d3", DevicePolicy::default()),
            Err(TableFull::NameTaken)
        );
        let many: Vec<IpAddr> = (0..40u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        assert_eq!(
            t.set_addresses(DeviceId(0), &many),
            MAX_ADDRESSES_PER_DEVICE
        );
        let mut held = MAX_ADDRESSES_PER_DEVICE;
        for (i, id) in t.ids().collect::<Vec<_>>().into_iter().enumerate().skip(1) {
            let addrs: Vec<IpAddr> = (0..MAX_ADDRESSES_PER_DEVICE as u32)
                .map(|k| IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (i as u32) * 256 + k)))
                .collect();
            held += t.set_addresses(id, &addrs);
        }
        assert_eq!(held, MAX_ADDRESSES, "no more than the table holds");
        assert_eq!(t.addresses.capacity(), MAX_ADDRESSES, "never grown");
        // Reconfiguring keeps a device's slot and counts, frees the others'.
        let t0 = Instant::now();
        t.set_nat_addresses(&nat());
        t.set_clock(t0, utc(at("2024-05-10", 12, 0)));
        let d5 = t.find("d5").unwrap();
        let _ = t.handle_down(t0, &down(1000, port_of(d5)));
        let ids = t.configure(&[
            ("new".into(), DevicePolicy::default()),
            ("d5".into(), policy(Some(1), None, 1)),
        ]);
        assert_eq!(ids[1], d5, "d5 keeps its slot, so its port block");
        assert_eq!(ids[0], DeviceId(0), "the first free slot");
        assert_eq!(t.ids().count(), 2);
        assert_eq!(t.report(d5, t0).unwrap().today_bytes, 1000);
        assert_eq!(t.policy(d5).unwrap().daily_bytes, Some(1_000_000));
        assert_eq!(
            t.addresses(DeviceId(0)).count(),
            0,
            "d0's addresses went with it"
        );
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let r = DeviceRecord {
            name: "kids-tablet".into(),
            day: date("2024-02-29"),
            day_bytes: 1234,
            month: date("2024-02-15"),
            month_bytes: 56_789,
        };
        let text = r.to_string();
        assert!(text.starts_with("v1 name=kids-tablet day=2024-02-29 day_bytes=1234 "));
        assert_eq!(DeviceRecord::parse(&text), Ok(r.clone()));
        let cases = [
            (text.replace("1234", "1235"), "does not match"),
            (text[..text.len() - 20].to_string(), "check"),
            (String::new(), "check"),
            (text.replace("check=", "check=zz"), "hex"),
        ];
        for (bad, why) in cases {
            let e = DeviceRecord::parse(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let resealed = |body: &str| format!("{body} check={:016x}", fnv1a(body.as_bytes()));
        for (body, why) in [
            ("v2 name=a", "version"),
            ("v1 name=a b day=2024-01-01", "not key=value"),
            (
                "v1 name=a day=2024-01-01 day_bytes=1 month=2024-01-01",
                "`month_bytes` missing",
            ),
            (
                "v1 name=a day=2024-01-01 day_bytes=1 month=2024-02-01 month_bytes=1",
                "does not hold",
            ),
            (
                "v1 name=a/b day=2024-01-01 day_bytes=1 month=2024-01-01 month_bytes=1",
                "not a device name",
            ),
            (
                "v1 name=a day=2024-01-01 day_bytes=x month=2024-01-01 month_bytes=1",
                "not a count",
            ),
        ] {
            let e = DeviceRecord::parse(&resealed(body)).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
    }

    /// Written at once when a device goes over, then no more than every ten minutes while
    /// counting; a restart restores the counts (and so the floor); a record of an earlier
    /// day keeps only its month.
    #[test]
    fn the_counts_survive_a_restart_and_are_written_rarely() {
        let t0 = Instant::now();
        let (mut t, id) = table(policy(Some(2), Some(10), 1), t0, at("2024-05-10", 12, 0));
        assert!(t.needs_save(t0), "first write once the time is known");
        assert!(t.checkpoint(t0).len() == 1);
        assert!(!t.needs_save(t0 + SAVE_EVERY), "nothing counted");
        let port = port_of(id);
        pour(&mut t, t0, port, 1_500_000);
        assert!(!t.needs_save(t0 + Duration::from_secs(60)));
        assert!(t.needs_save(t0 + SAVE_EVERY));
        pour(&mut t, t0, port, 600_000);
        assert!(t.needs_save(t0 + Duration::from_secs(1)), "over: at once");
        // 2 MB reached with the 334th packet, then a bucket's worth (16 packets).
        let counted = 1_500_000 + 334 * 1500 + 16 * 1500;
        let records = t.checkpoint(t0 + Duration::from_secs(1));
        assert_eq!(
            records,
            [DeviceRecord {
                name: "kid".into(),
                day: date("2024-05-10"),
                day_bytes: counted,
                month: date("2024-05-01"),
                month_bytes: counted,
            }]
        );
        assert!(!t.needs_save(t0 + Duration::from_secs(2)));

        // A restart the same day: over again at once.
        let (mut again, id2) = table(policy(Some(2), Some(10), 1), t0, at("2024-05-10", 13, 0));
        assert_eq!(again.restore(&records), 1);
        let r = again.report(id2, t0).unwrap();
        assert_eq!((r.today_bytes, r.over), (counted, Some(Over::Daily)));
        // The next day: the day's count is gone, the month's stays.
        let (mut next, id3) = table(policy(Some(2), Some(10), 1), t0, at("2024-05-11", 9, 0));
        next.restore(&records);
        let r = next.report(id3, t0).unwrap();
        assert_eq!((r.today_bytes, r.month_bytes, r.over), (0, counted, None));
        // Next month: nothing. Unknown names: left out.
        let (mut june, id4) = table(policy(Some(2), Some(10), 1), t0, at("2024-06-01", 0, 1));
        june.restore(&records);
        assert_eq!(june.report(id4, t0).unwrap().month_bytes, 0);
        let mut other = records[0].clone();
        other.name = "gone".into();
        assert_eq!(june.restore(&[other]), 0);
        // Restored before the clock is known: the clock then moves on from the record.
        let mut early = DeviceLimits::new();
        let id5 = early.add("kid", policy(Some(2), None, 1)).unwrap();
        early.restore(&records);
        early.set_clock(t0, utc(at("2024-05-10", 14, 0)));
        assert_eq!(early.report(id5, t0).unwrap().over, Some(Over::Daily));
    }
}
