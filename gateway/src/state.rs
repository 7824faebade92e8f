//! What the gateway keeps across reboots: the floor under its handshake timestamps.
//!
//! The proxy accepts an initiation only with a timestamp newer than any it accepted from
//! the member before (so a replayed one is refused), and a router may boot with its clock
//! behind (no real-time clock; OpenWrt restores the time of the newest file in /etc). So
//! the gateway reserves timestamps ahead: the file says "none at or above this were used",
//! and after a reboot timestamps start from there. It lives on flash, so it is rewritten
//! only when half the reservation is used up (about once every half hour of uptime) and at
//! start, never per handshake.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How far ahead of the timestamps in use the file reserves.
pub const RESERVATION: Duration = Duration::from_secs(3600);

const KEY: &str = "handshake_timestamp_floor_us";

/// The state file and what it reserves.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Timestamps below this may be used; none at or above it were.
    reserved_us: u64,
}

impl StateFile {
    /// Reads the floor from `path`. A missing file is a floor of zero (a new router); an
    /// unreadable or garbled one is too, with the reason as a warning.
    pub fn load(path: &Path) -> (StateFile, Option<String>) {
        let (floor, warning) = match std::fs::read_to_string(path) {
            Ok(text) => match parse(&text) {
                Some(v) => (v, None),
                None => (
                    0,
                    Some(format!(
                        "{}: no valid `{KEY} = N` line; starting from the clock",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, None),
            Err(e) => (
                0,
                Some(format!("{}: {e}; starting from the clock", path.display())),
            ),
        };
        let state = StateFile {
            path: path.to_path_buf(),
            reserved_us: floor,
        };
        (state, warning)
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

fn half_reservation_us() -> u64 {
    RESERVATION.as_micros() as u64 / 2
}

fn parse(text: &str) -> Option<u64> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == KEY).then(|| v.trim().parse().ok())?
        })
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
