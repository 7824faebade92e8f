//! What the gateway keeps across reboots: the floor under its handshake timestamps, and
//! the sharing meter (what was lent to neighbours today and this month).
//!
//! The proxy accepts an initiation only with a timestamp newer than any it accepted from
//! the member before (so a replayed one is refused), and a router may boot with its clock
//! behind (no real-time clock; OpenWrt restores the time of the newest file in /etc). So
//! the gateway reserves timestamps ahead: the file says "none at or above this were used",
//! and after a reboot timestamps start from there. It lives on flash, so it is rewritten
//! only when half the reservation is used up (about once every half hour of uptime) and at
//! start, never per handshake.
//!
//! The sharing meter rides along: a [`MeterRecord`] (one versioned, checked line) that
//! reserves bytes ahead of what was lent, the same way. The daemon writes the file when
//! either needs it (for the meter: half its reservation used, at most about every ten
//! minutes while lending, or a new day or month lent in) and at a clean stop; see
//! [`linkpool_protocol::sharing`] for what a crash can forget.
//!
//! So do the counts of the owner's devices with limits of their own: one
//! [`DeviceRecord`] line per device, written with the rest when the device table asks
//! (about every ten minutes while devices are counted, at once when one goes over a
//! threshold) and at a clean stop; see [`linkpool_protocol::devices`].

use linkpool_protocol::devices::DeviceRecord;
use linkpool_protocol::sharing::MeterRecord;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How far ahead of the timestamps in use the file reserves.
pub const RESERVATION: Duration = Duration::from_secs(3600);

const KEY: &str = "handshake_timestamp_floor_us";
const METER_KEY: &str = "sharing_meter";
const DEVICE_KEY: &str = "device_meter";

/// The sharing meter as the file held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterState {
    /// No meter in the file (a new router, or an older gateway's file).
    None,
    /// A record.
    Record(MeterRecord),
    /// A line that is not a record: the reason.
    Garbled(String),
}

/// The state file and what it reserves.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Timestamps below this may be used; none at or above it were.
    reserved_us: u64,
    /// The sharing meter: as read, then as last given to write.
    meter: MeterState,
    /// The devices' counts: as read, then as last given to write.
    devices: Vec<DeviceRecord>,
    /// Device lines that could not be read, with the reason.
    garbled_devices: Vec<String>,
}

impl StateFile {
    /// Reads the floor from `path`. A missing file is a floor of zero (a new router); an
    /// unreadable or garbled one is too, with the reason as a warning.
    pub fn load(path: &Path) -> (StateFile, Option<String>) {
        let mut devices = (Vec::new(), Vec::new());
        let (floor, meter, warning) = match std::fs::read_to_string(path) {
            Ok(text) => {
                devices = parse_devices(&text);
                let meter = parse_meter(&text);
                match parse(&text) {
                    Some(v) => (v, meter, None),
                    None => (
                        0,
                        meter,
                        Some(format!(
                            "{}: no valid `{KEY} = N` line; starting from the clock",
                            path.display()
                        )),
                    ),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, MeterState::None, None),
            Err(e) => (
                0,
                MeterState::Garbled(e.to_string()),
                Some(format!("{}: {e}; starting from the clock", path.display())),
            ),
        };
        let state = StateFile {
            path: path.to_path_buf(),
            reserved_us: floor,
            meter,
            devices: devices.0,
            garbled_devices: devices.1,
        };
        (state, warning)
    }

    /// The sharing meter the file held at load (or was given since).
    pub fn meter(&self) -> &MeterState {
        &self.meter
    }

    /// The sharing meter to write with the next [`StateFile::reserve`].
    pub fn set_meter(&mut self, record: MeterRecord) {
        self.meter = MeterState::Record(record);
    }

    /// The devices' counts the file held at load (or were given since).
    pub fn devices(&self) -> &[DeviceRecord] {
        &self.devices
    }

    /// The device lines of the file that could not be read at load: why, each.
    pub fn garbled_devices(&self) -> &[String] {
        &self.garbled_devices
    }

    /// The devices' counts to write with the next [`StateFile::reserve`] (they replace
    /// all the earlier ones: a device no longer configured is left out).
    pub fn set_devices(&mut self, records: Vec<DeviceRecord>) {
        self.devices = records;
    }

    /// Where timestamps must start: above anything a previous run may have used.
    pub fn floor_us(&self) -> u64 {
        self.reserved_us
    }

    /// Whether timestamps up to `used_us` are close enough to the reservation that it
    /// should be moved ahead.
    pub fn needs_reservation(&self, used_us: u64) -> bool {
        used_us.saturating_add(half_reservation_us()) >= self.reserved_us
    }

    /// Reserves timestamps up to `used_us` + [`RESERVATION`], writing the file atomically
    /// (a new file renamed over the old one: a power cut leaves one or the other).
    pub fn reserve(&mut self, used_us: u64) -> io::Result<()> {
        let until = used_us.saturating_add(RESERVATION.as_micros() as u64);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(
                f,
                "# linkpool state: kept across reboots; do not copy to another router"
            )?;
            writeln!(f, "{KEY} = {until}")?;
            if let MeterState::Record(r) = &self.meter {
                writeln!(f, "{METER_KEY} = {r}")?;
            }
            for r in &self.devices {
                writeln!(f, "{DEVICE_KEY} = {r}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.reserved_us = until;
        Ok(())
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The file a metered uplink's forecaster is kept in, beside the state file: `linkpool.state`
/// and uplink `lte` give `linkpool.lte.forecast`. Characters other than letters, digits,
/// `-`, `_` and `.` in the name are written `_` (the name is free text in TOML).
pub fn forecast_file(state_file: &Path, uplink: &str) -> PathBuf {
    let stem = state_file
        .file_stem()
        .map_or("linkpool".into(), |s| s.to_string_lossy());
    let name: String = uplink
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    state_file.with_file_name(format!("{stem}.{name}.forecast"))
}

/// Writes `bytes` to `path` atomically: a new file, synced, renamed over the old one (a
/// power cut leaves one or the other).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn half_reservation_us() -> u64 {
    RESERVATION.as_micros() as u64 / 2
}

fn parse(text: &str) -> Option<u64> {
    value_of(text, KEY)?.parse().ok()
}

fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
}

/// Every device line: the records, and the reasons of those that are not.
fn parse_devices(text: &str) -> (Vec<DeviceRecord>, Vec<String>) {
    let (mut records, mut garbled) = (Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        let Some((k, v)) = l.split_once('=').filter(|_| !l.starts_with('#')) else {
            continue;
        };
        if k.trim() != DEVICE_KEY {
            continue;
        }
        match DeviceRecord::parse(v) {
            Ok(r) => records.push(r),
            Err(e) => garbled.push(format!("line {}: `{DEVICE_KEY}`: {e}", i + 1)),
        }
    }
    (records, garbled)
}

fn parse_meter(text: &str) -> MeterState {
    match value_of(text, METER_KEY) {
        None => MeterState::None,
        Some(v) => match MeterRecord::parse(v) {
            Ok(r) => MeterState::Record(r),
            Err(e) => MeterState::Garbled(format!("`{METER_KEY}`: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("linkpool-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("linkpool.state")
    }

    #[test]
    fn a_new_router_starts_at_zero_and_a_reservation_survives_a_restart() {
        let path = scratch("roundtrip");
        let (mut s, warning) = StateFile::load(&path);
        assert_eq!((s.floor_us(), warning), (0, None));
        s.reserve(1_000).unwrap();
        let (again, warning) = StateFile::load(&path);
        assert_eq!(warning, None);
        assert_eq!(again.floor_us(), 1_000 + RESERVATION.as_micros() as u64);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn rewritten_only_when_half_the_reservation_is_used() {
        let path = scratch("rarely");
        let (mut s, _) = StateFile::load(&path);
        let start = 1_700_000_000_000_000u64;
        s.reserve(start).unwrap();
        let hour = RESERVATION.as_micros() as u64;
        // A day of handshakes every two minutes: the file is written about twice an hour.
        let mut writes = 0;
        for minute in (0..24 * 60).step_by(2) {
            let used = start + minute * 60_000_000;
            assert!(used < s.floor_us(), "a timestamp beyond the reservation");
            if s.needs_reservation(used) {
                s.reserve(used).unwrap();
                writes += 1;
            }
        }
        assert!((47..=49).contains(&writes), "{writes} writes a day");
        assert!(s.floor_us() <= start + 24 * 60 * 60_000_000 + hour);
    }

    fn record(day_bytes: u64) -> MeterRecord {
        MeterRecord {
            day: "2024-05-10".parse().unwrap(),
            day_bytes,
            month: "2024-05-01".parse().unwrap(),
            month_bytes: 2 * day_bytes,
            line_up: 125_000,
            line_down: 1_250_000,
        }
    }

    #[test]
    fn the_sharing_meter_survives_a_restart() {
        let path = scratch("meter");
        let (mut s, _) = StateFile::load(&path);
        assert_eq!(s.meter(), &MeterState::None);
        s.set_meter(record(7_000));
        s.reserve(1_000).unwrap();
        let (again, warning) = StateFile::load(&path);
        assert_eq!(warning, None);
        assert_eq!(again.meter(), &MeterState::Record(record(7_000)));
        assert_eq!(again.floor_us(), 1_000 + RESERVATION.as_micros() as u64);
        // An older gateway's file: no meter, and the floor still read.
        std::fs::write(&path, "handshake_timestamp_floor_us = 5\n").unwrap();
        let (old, warning) = StateFile::load(&path);
        assert_eq!(
            (old.floor_us(), old.meter(), warning),
            (5, &MeterState::None, None)
        );
    }

    #[test]
    fn a_garbled_meter_is_told_apart() {
        let path = scratch("garbled-meter");
        let (mut s, _) = StateFile::load(&path);
        s.set_meter(record(7_000));
        s.reserve(1_000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("day_bytes=7000", "day_bytes=1")).unwrap();
        let (s, warning) = StateFile::load(&path);
        assert_eq!(warning, None, "the floor is fine");
        match s.meter() {
            MeterState::Garbled(why) => assert!(why.contains("does not match"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    fn device(name: &str, day_bytes: u64) -> DeviceRecord {
        DeviceRecord {
            name: name.into(),
            day: "2024-05-10".parse().unwrap(),
            day_bytes,
            month: "2024-05-01".parse().unwrap(),
            month_bytes: 3 * day_bytes,
        }
    }

    /// Every device's counts come back after a restart, beside the meter; a damaged line
    /// is told apart and the others are still read.
    #[test]
    fn the_devices_counts_survive_a_restart() {
        let path = scratch("devices");
        let (mut s, _) = StateFile::load(&path);
        assert!(s.devices().is_empty());
        s.set_meter(record(7_000));
        s.set_devices(vec![device("kid", 5), device("tv", 9)]);
        s.reserve(1_000).unwrap();
        let (again, warning) = StateFile::load(&path);
        assert_eq!(warning, None);
        assert_eq!(again.devices(), [device("kid", 5), device("tv", 9)]);
        assert_eq!(again.meter(), &MeterState::Record(record(7_000)));
        assert!(again.garbled_devices().is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("device_meter = v1 name=").count(), 2);
        std::fs::write(
            &path,
            text.replace(
                "name=kid day=2024-05-10 day_bytes=5",
                "name=kid day=2024-05-10 day_bytes=6",
            ),
        )
        .unwrap();
        let (damaged, warning) = StateFile::load(&path);
        assert_eq!(warning, None, "the floor is fine");
        assert_eq!(damaged.devices(), [device("tv", 9)]);
        assert_eq!(damaged.garbled_devices().len(), 1);
        assert!(
            damaged.garbled_devices()[0].contains("does not match"),
            "{:?}",
            damaged.garbled_devices()
        );
        // Fewer devices next time: only theirs are written.
        let (mut s, _) = StateFile::load(&path);
        s.set_devices(vec![device("tv", 10)]);
        s.reserve(2_000).unwrap();
        assert_eq!(StateFile::load(&path).0.devices(), [device("tv", 10)]);
    }

    #[test]
    fn a_garbled_file_is_named_and_starts_from_the_clock() {
        let path = scratch("garbled");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "handshake_timestamp_floor_us = soon\n").unwrap();
        let (s, warning) = StateFile::load(&path);
        assert_eq!(s.floor_us(), 0);
        assert!(warning.unwrap().contains(&path.display().to_string()));
    }
}
