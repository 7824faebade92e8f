//! The ledger: per member and hour, what its traffic took and what its line carried for
//! others, in SQLite (WAL journal).
//!
//! The event loop takes the core's usage once a second into a [`Batch`] and hands it to a
//! writer thread; it never waits for the disk (a full hand-over queue only makes the next
//! batch bigger). Each batch is one transaction, so the rows always add up: a member's
//! `carried_*` for an hour is the sum of the `carried` rows naming it as relay, its
//! `borrowed_*` the sum of those naming it as consumer. A clean stop writes the last
//! batch before exiting; a crash (`kill -9`) loses what was counted since the last batch
//! was handed over, at most [`FLUSH_INTERVAL`], plus a batch the writer had not committed
//! yet.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linkpool_protocol::calendar::{civil_from_days, days_from_civil};
use linkpool_protocol::credits::{MilliCredits, Tariff};
use linkpool_protocol::usage::{UpDown, Usage};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use tracing::{error, info};

/// How often the event loop hands what it counted to the writer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often members' statements are worked out and sent.
pub const STATEMENT_INTERVAL: Duration = Duration::from_secs(60);
/// Batches waiting for the writer at most; beyond, the event loop keeps adding to its own.
const QUEUED_BATCHES: usize = 8;
/// An hour, in seconds: the ledger's grain.
pub const HOUR_S: i64 = 3600;

/// Schema migrations, in order: `PRAGMA user_version` says how many a file has had.
const MIGRATIONS: &[&str] = &[
    // 1: usage per member and hour; what each relay carried for each consumer.
    "CREATE TABLE usage (
        hour INTEGER NOT NULL,
        member TEXT NOT NULL,
        inner_up INTEGER NOT NULL DEFAULT 0,
        inner_down INTEGER NOT NULL DEFAULT 0,
        own_up INTEGER NOT NULL DEFAULT 0,
        own_down INTEGER NOT NULL DEFAULT 0,
        borrowed_up INTEGER NOT NULL DEFAULT 0,
        borrowed_down INTEGER NOT NULL DEFAULT 0,
        carried_up INTEGER NOT NULL DEFAULT 0,
        carried_down INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, member)
    ) WITHOUT ROWID;
    CREATE TABLE carried (
        hour INTEGER NOT NULL,
        relay TEXT NOT NULL,
        consumer TEXT NOT NULL,
        up INTEGER NOT NULL DEFAULT 0,
        down INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, relay, consumer)
    ) WITHOUT ROWID;",
    // 2: credits. Each usage row holds what its carried bytes earned and its borrowed
    // bytes cost (milli-credits, at the rates of that hour), `balances` their sums and
    // the admin's adjustments, kept in the same transactions so they always agree.
    "ALTER TABLE usage ADD COLUMN earned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE adjustments (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        member TEXT NOT NULL,
        amount INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE balances (
        member TEXT PRIMARY KEY,
        earned INTEGER NOT NULL DEFAULT 0,
        spent INTEGER NOT NULL DEFAULT 0,
        adjusted INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;",
    // 3: auctions. Of a usage row's borrowed bytes, those bought at a relay line's
    // auction, and what they cost in nano-credits (10^-9): charged so instead of at the
    // tariff, the row's spent credits being the tariff of the rest plus that cost.
    "ALTER TABLE usage ADD COLUMN auctioned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN auction_nano INTEGER NOT NULL DEFAULT 0;",
];

/// Nano-credits in a milli-credit.
const NANO_PER_MILLI: i64 = 1_000_000;

/// A ledger that could not be opened, read or written.
#[derive(Debug)]
pub struct LedgerError {
    file: PathBuf,
    reason: String,
}

impl LedgerError {
    fn new(file: &Path, reason: impl fmt::Display) -> Self {
        LedgerError {
            file: file.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ledger {}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for LedgerError {}

/// One member's counts for one hour, in bytes. Wire bytes include every header the line
/// carried (see [`linkpool_protocol::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Inner bytes it sent and got (the IP packets themselves).
    pub inner: Pair,
    /// Wire bytes over its own line, for itself.
    pub own: Pair,
    /// Wire bytes of its traffic over neighbours' lines.
    pub borrowed: Pair,
    /// Wire bytes its line carried for neighbours.
    pub carried: Pair,
}

/// Bytes up (from the member) and down (to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// From the member towards the Internet.
    pub up: u64,
    /// From the Internet to the member.
    pub down: u64,
}

impl From<UpDown> for Pair {
    fn from(b: UpDown) -> Pair {
        Pair {
            up: b.up,
            down: b.down,
        }
    }
}

impl Pair {
    fn add(&mut self, o: Pair) {
        self.up += o.up;
        self.down += o.down;
    }
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.inner.add(o.inner);
        self.own.add(o.own);
        self.borrowed.add(o.borrowed);
        self.carried.add(o.carried);
    }
}

/// What was counted since the last hand-over, by hour.
#[derive(Debug, Default)]
pub struct Batch {
    usage: BTreeMap<(i64, String), Counts>,
    /// (hour, relay, consumer) → wire bytes.
    carried: BTreeMap<(i64, String, String), Pair>,
    /// (hour, member) → borrowed bytes bought at auctions, and their cost (bytes × milli-
    /// credits per GB).
    auctioned: BTreeMap<(i64, String), (u64, u128)>,
    /// When its oldest counts were taken.
    since: Option<Instant>,
    /// The rates its bytes are charged at, and the co-op's UTC offset for peak hours.
    tariff: Tariff,
    utc_offset_s: i32,
}

impl Batch {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty()
    }

    /// Adds `member`'s usage in the hour starting at `hour`; `name` names relays by the
    /// member ids the usage uses (a relay no longer configured is named `?ID`).
    pub fn add(
        &mut self,
        now: Instant,
        hour: i64,
        member: &str,
        usage: &Usage,
        name: impl Fn(u32) -> String,
    ) {
        self.since.get_or_insert(now);
        let mut mine = Counts {
            inner: usage.inner.into(),
            own: usage.own.into(),
            ..Counts::default()
        };
        for &(relay, bytes) in &usage.borrowed {
            let bytes = Pair::from(bytes);
            mine.borrowed.add(bytes);
            let relay = name(relay);
            self.usage
                .entry((hour, relay.clone()))
                .or_default()
                .carried
                .add(bytes);
            self.carried
                .entry((hour, relay, member.to_string()))
                .or_default()
                .add(bytes);
        }
        self.usage
            .entry((hour, member.to_string()))
            .or_default()
            .add(&mine);
        for (_, a) in &usage.auctioned {
            let e = self
                .auctioned
                .entry((hour, member.to_string()))
                .or_default();
            e.0 += a.bytes;
            e.1 += a.value;
        }
    }

    fn merge(&mut self, other: Batch) {
        for (k, c) in other.usage {
            self.usage.entry(k).or_default().add(&c);
        }
        for (k, p) in other.carried {
            self.carried.entry(k).or_default().add(p);
        }
        for (k, (bytes, value)) in other.auctioned {
            let e = self.auctioned.entry(k).or_default();
            e.0 += bytes;
            e.1 += value;
        }
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (self.tariff, self.utc_offset_s) = (other.tariff, other.utc_offset_s);
    }

    /// Charges its bytes at `tariff`, peak hours in local time `utc_offset_s` east of UTC.
    pub fn set_tariff(&mut self, tariff: Tariff, utc_offset_s: i32) {
        (self.tariff, self.utc_offset_s) = (tariff, utc_offset_s);
    }
}

/// The start of the hour `unix_s` falls in.
pub fn hour_of(unix_s: i64) -> i64 {
    unix_s.div_euclid(HOUR_S) * HOUR_S
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The ledger file.
pub struct Ledger {
    file: PathBuf,
    conn: Connection,
}

impl Ledger {
    /// Opens (creating it and its directory if need be) and migrates the ledger at `file`.
    pub fn open(file: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::new(file, e))?;
        }
        let conn = Connection::open(file).map_err(|e| LedgerError::new(file, e))?;
        let mut ledger = Ledger {
            file: file.to_path_buf(),
            conn,
        };
        ledger.setup().map_err(|e| LedgerError::new(file, e))?;
        Ok(ledger)
    }

    /// Opens an existing ledger to read it (while the proxy writes it, too).
    pub fn open_read_only(file: &Path) -> Result<Ledger, LedgerError> {
        if !file.exists() {
            return Err(LedgerError::new(
                file,
                "does not exist (the proxy creates it when it starts)",
            ));
        }
        let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| LedgerError::new(file, e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| LedgerError::new(file, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| LedgerError::new(file, e))?;
        if version as usize > MIGRATIONS.len() {
            return Err(LedgerError::new(
                file,
                format!(
                    "schema version {version} is newer than this linkpool-proxy knows ({})",
                    MIGRATIONS.len()
                ),
            ));
        }
        Ok(Ledger {
            file: file.to_path_buf(),
            conn,
        })
    }

    fn setup(&mut self) -> rusqlite::Result<()> {
        // WAL: readers (the CLI, the admin API) never block the writer. FULL: a commit is
        // on disk before the next batch, power loss included; one fsync a second.
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "schema version {version} is newer than this linkpool-proxy knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            info!(version = i + 1, "ledger schema migrated");
        }
        Ok(())
    }

    /// Adds a batch's counts, all in one transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), LedgerError> {
        self.apply_inner(batch)
            .map_err(|e| LedgerError::new(&self.file, e))
    }

    fn apply_inner(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut row = tx.prepare_cached(
                "SELECT carried_up + carried_down, borrowed_up + borrowed_down, auctioned,
                    auction_nano FROM usage WHERE hour = ?1 AND member = ?2",
            )?;
            let mut balance = tx.prepare_cached(
                "INSERT INTO balances (member, earned, spent) VALUES (?1, ?2, ?3)
                 ON CONFLICT (member) DO UPDATE SET
                    earned = earned + excluded.earned, spent = spent + excluded.spent",
            )?;
            let mut usage = tx.prepare_cached(
                "INSERT INTO usage (hour, member, inner_up, inner_down, own_up, own_down,
                    borrowed_up, borrowed_down, carried_up, carried_down, earned, spent,
                    auctioned, auction_nano)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (hour, member) DO UPDATE SET
                    auctioned = auctioned + excluded.auctioned,
                    auction_nano = auction_nano + excluded.auction_nano,
                    earned = earned + excluded.earned,
                    spent = spent + excluded.spent,
                    inner_up = inner_up + excluded.inner_up,
                    inner_down = inner_down + excluded.inner_down,
                    own_up = own_up + excluded.own_up,
                    own_down = own_down + excluded.own_down,
                    borrowed_up = borrowed_up + excluded.borrowed_up,
                    borrowed_down = borrowed_down + excluded.borrowed_down,
                    carried_up = carried_up + excluded.carried_up,
                    carried_down = carried_down + excluded.carried_down",
            )?;
            for ((hour, member), c) in &batch.usage {
                let (carried, borrowed, auctioned, nano): (i64, i64, i64, i64) = row
                    .query_row(params![hour, member], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?
                    .unwrap_or((0, 0, 0, 0));
                let (a_bytes, a_value) = batch
                    .auctioned
                    .get(&(*hour, member.clone()))
                    .copied()
                    .unwrap_or((0, 0));
                // Bytes × milli-credits per GB is 10^9 milli-credits, 10^3 nano-credits.
                let a_nano = i64::try_from(a_value / 1000).unwrap_or(i64::MAX);
                // The row's credit stays exactly the tariff of its total, whatever the
                // batches it came in.
                let local_hour = (hour + i64::from(batch.utc_offset_s)).rem_euclid(86_400) / 3600;
                let t = &batch.tariff;
                let earned = t.earned_on_row(
                    carried as u64,
                    c.carried.up + c.carried.down,
                    local_hour as u8,
                );
                // The tariff charges what was not bought at an auction; the auctions' cost
                // is charged in whole milli-credits of the row's total, rounded up.
                let tariffed_before = (borrowed - auctioned).max(0) as u64;
                let tariffed = (c.borrowed.up + c.borrowed.down).saturating_sub(a_bytes);
                let ceil_milli =
                    |nano: i64| (nano.max(0) as u64).div_ceil(NANO_PER_MILLI as u64) as i64;
                let spent = t.spent_on_row(tariffed_before, tariffed, local_hour as u8)
                    + ceil_milli(nano.saturating_add(a_nano))
                    - ceil_milli(nano);
                balance.execute(params![member, earned, spent])?;
                usage.execute(params![
                    hour,
                    member,
                    c.inner.up as i64,
                    c.inner.down as i64,
                    c.own.up as i64,
                    c.own.down as i64,
                    c.borrowed.up as i64,
                    c.borrowed.down as i64,
                    c.carried.up as i64,
                    c.carried.down as i64,
                    earned,
                    spent,
                    a_bytes as i64,
                    a_nano,
                ])?;
            }
            let mut carried = tx.prepare_cached(
                "INSERT INTO carried (hour, relay, consumer, up, down)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hour, relay, consumer) DO UPDATE SET
                    up = up + excluded.up, down = down + excluded.down",
            )?;
            for ((hour, relay, consumer), p) in &batch.carried {
                carried.execute(params![hour, relay, consumer, p.up as i64, p.down as i64])?;
            }
        }
        tx.commit()
    }

    /// Usage rows in `[since, until)` (hour starts), for one member or all, oldest first.
    pub fn usage(&self, filter: &Filter) -> Result<Vec<UsageRow>, LedgerError> {
        self.usage_inner(filter)
            .map_err(|e| LedgerError::new(&self.file, e))
    }

    fn usage_inner(&self, filter: &Filter) -> rusqlite::Result<Vec<UsageRow>> {
        let mut q = self.conn.prepare(
            "SELECT hour, member, inner_up, inner_down, own_up, own_down, borrowed_up,
                borrowed_down, carried_up, carried_down, earned, spent, auctioned FROM usage
             WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR member = ?3)
             ORDER BY hour, member",
        )?;
        let n = |r: &rusqlite::Row<'_>, i| r.get::<_, i64>(i).map(|v| v as u64);
        let rows = q.query_map(params![filter.since, filter.until, filter.member], |r| {
            Ok(UsageRow {
                hour: r.get(0)?,
                member: r.get(1)?,
                counts: Counts {
                    inner: Pair {
                        up: n(r, 2)?,
                        down: n(r, 3)?,
                    },
                    own: Pair {
                        up: n(r, 4)?,
                        down: n(r, 5)?,
                    },
                    borrowed: Pair {
                        up: n(r, 6)?,
                        down: n(r, 7)?,
                    },
                    carried: Pair {
                        up: n(r, 8)?,
                        down: n(r, 9)?,
                    },
                },
                earned: r.get(10)?,
                spent: r.get(11)?,
                auctioned: n(r, 12)?,
            })
        })?;
        rows.collect()
    }

    /// What each relay carried for each consumer in `[since, until)`, for rows where the
    /// member (if any) is the relay or the consumer.
    pub fn carried(&self, filter: &Filter) -> Result<Vec<CarriedRow>, LedgerError> {
        self.carried_inner(filter)
            .map_err(|e| LedgerError::new(&self.file, e))
    }

    fn carried_inner(&self, filter: &Filter) -> rusqlite::Result<Vec<CarriedRow>> {
        let mut q = self.conn.prepare(
            "SELECT hour, relay, consumer, up, down FROM carried
             WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR relay = ?3 OR consumer = ?3)
             ORDER BY hour, relay, consumer",
        )?;
        let rows = q.query_map(params![filter.since, filter.until, filter.member], |r| {
            Ok(CarriedRow {
                hour: r.get(0)?,
                relay: r.get(1)?,
                consumer: r.get(2)?,
                bytes: Pair {
                    up: r.get::<_, i64>(3)? as u64,
                    down: r.get::<_, i64>(4)? as u64,
                },
            })
        })?;
        rows.collect()
    }
}

impl Ledger {
    /// Every member's balance, by name.
    pub fn balances(&self) -> Result<Vec<Balance>, LedgerError> {
        let read = || -> rusqlite::Result<Vec<Balance>> {
            let mut q = self.conn.prepare_cached(
                "SELECT member, earned, spent, adjusted FROM balances ORDER BY member",
            )?;
            let rows = q.query_map([], |r| {
                let (earned, spent, adjusted): (i64, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
                Ok(Balance {
                    member: r.get(0)?,
                    earned,
                    spent,
                    adjusted,
                    balance: earned - spent + adjusted,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| LedgerError::new(&self.file, e))
    }

    /// Grants `member` `amount` milli-credits (takes them, if negative) at `at` (unix
    /// seconds), for `reason`, which stays in the ledger.
    pub fn adjust(
        &mut self,
        at: i64,
        member: &str,
        amount: MilliCredits,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let file = self.file.clone();
        let mut write = || -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            tx.execute(
                "INSERT INTO adjustments (at, member, amount, reason) VALUES (?1, ?2, ?3, ?4)",
                params![at, member, amount, reason],
            )?;
            tx.execute(
                "INSERT INTO balances (member, adjusted) VALUES (?1, ?2)
                 ON CONFLICT (member) DO UPDATE SET adjusted = adjusted + excluded.adjusted",
                params![member, amount],
            )?;
            tx.commit()
        };
        write().map_err(|e| LedgerError::new(&file, e))
    }

    /// The admin's adjustments in `[since, until)`, for one member or all, oldest first.
    pub fn adjustments(&self, filter: &Filter) -> Result<Vec<Adjustment>, LedgerError> {
        let read = || -> rusqlite::Result<Vec<Adjustment>> {
            let mut q = self.conn.prepare(
                "SELECT at, member, amount, reason FROM adjustments
                 WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR member = ?3) ORDER BY id",
            )?;
            let rows = q.query_map(params![filter.since, filter.until, filter.member], |r| {
                Ok(Adjustment {
                    at: r.get(0)?,
                    member: r.get(1)?,
                    amount: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| LedgerError::new(&self.file, e))
    }
}

impl Ledger {
    /// Every member's account in `[start, end)` (hour starts, unix seconds): what it
    /// consumed and carried, earned and spent, with its balance now.
    pub fn accounts(&self, start: i64, end: i64) -> Result<Vec<Account>, LedgerError> {
        let balances = self.balances()?;
        let read = || -> rusqlite::Result<Vec<Account>> {
            let mut q = self.conn.prepare_cached(
                "SELECT member, SUM(inner_up), SUM(inner_down), SUM(carried_up),
                    SUM(carried_down), SUM(earned), SUM(spent)
                 FROM usage WHERE hour >= ?1 AND hour < ?2 GROUP BY member",
            )?;
            let n = |r: &rusqlite::Row<'_>, i| r.get::<_, i64>(i);
            let rows = q.query_map(params![start, end], |r| {
                let member: String = r.get(0)?;
                Ok(Account {
                    balance: balances
                        .iter()
                        .find(|b| b.member == member)
                        .map_or(0, |b| b.balance),
                    member,
                    period_start: start,
                    period_end: end,
                    consumed: Pair {
                        up: n(r, 1)? as u64,
                        down: n(r, 2)? as u64,
                    },
                    carried: Pair {
                        up: n(r, 3)? as u64,
                        down: n(r, 4)? as u64,
                    },
                    earned: n(r, 5)?,
                    spent: n(r, 6)?,
                })
            })?;
            let mut accounts: Vec<Account> = rows.collect::<rusqlite::Result<_>>()?;
            // Members with a balance and no traffic in the period have an account too.
            for b in &balances {
                if !accounts.iter().any(|a| a.member == b.member) {
                    accounts.push(Account {
                        member: b.member.clone(),
                        period_start: start,
                        period_end: end,
                        consumed: Pair::default(),
                        carried: Pair::default(),
                        earned: 0,
                        spent: 0,
                        balance: b.balance,
                    });
                }
            }
            Ok(accounts)
        };
        read().map_err(|e| LedgerError::new(&self.file, e))
    }
}

/// The calendar month (UTC) `unix_s` falls in: its first second, and the next month's.
pub fn month_of(unix_s: i64) -> (i64, i64) {
    let (y, m, _) = civil_from_days(unix_s.div_euclid(86_400));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (
        days_from_civil(y, m, 1) * 86_400,
        days_from_civil(ny, nm, 1) * 86_400,
    )
}

/// A member's account over a period: what its statement says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The member's name.
    pub member: String,
    /// The period, unix seconds: `[start, end)`.
    pub period_start: i64,
    /// See `period_start`.
    pub period_end: i64,
    /// Inner bytes it consumed.
    pub consumed: Pair,
    /// Wire bytes its line carried for others.
    pub carried: Pair,
    /// Milli-credits earned and spent in the period.
    pub earned: MilliCredits,
    /// See `earned`.
    pub spent: MilliCredits,
    /// Its balance now.
    pub balance: MilliCredits,
}

/// A member's credit, in milli-credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The member's name.
    pub member: String,
    /// Earned carrying for others, all time.
    pub earned: MilliCredits,
    /// Spent on others' lines, all time.
    pub spent: MilliCredits,
    /// Granted (or taken) by the co-op's admin.
    pub adjusted: MilliCredits,
    /// `earned - spent + adjusted`.
    pub balance: MilliCredits,
}

/// An admin's grant or adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adjustment {
    /// When (unix seconds).
    pub at: i64,
    /// Whose balance.
    pub member: String,
    /// Milli-credits added (negative: taken).
    pub amount: MilliCredits,
    /// Why, as the admin said.
    pub reason: String,
}

/// Which rows to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this member's.
    pub member: Option<String>,
    /// From this hour on (unix seconds; rows whose hour starts at or after it).
    pub since: i64,
    /// Before this (unix seconds).
    pub until: i64,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter {
            member: None,
            since: i64::MIN,
            until: i64::MAX,
        }
    }
}

/// One member's hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Start of the hour, unix seconds (UTC).
    pub hour: i64,
    /// The member's name.
    pub member: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Milli-credits its line earned carrying for others this hour.
    pub earned: MilliCredits,
    /// Milli-credits its traffic cost on others' lines this hour.
    pub spent: MilliCredits,
    /// Of its borrowed bytes, those bought at a contended line's auction (charged at the
    /// auction's price, not the tariff).
    pub auctioned: u64,
}

/// What one relay's line carried for one consumer in an hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarriedRow {
    /// Start of the hour, unix seconds (UTC).
    pub hour: i64,
    /// The member whose line carried it.
    pub relay: String,
    /// The member whose traffic it was.
    pub consumer: String,
    /// Wire bytes.
    #[serde(flatten)]
    pub bytes: Pair,
}

/// The event loop's side of the ledger: it gathers counts and hands them to the writer
/// thread without ever waiting for it.
pub struct LedgerWriter {
    to_writer: Option<SyncSender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    pending: Batch,
    tariff: (Tariff, i32),
    /// How old (ms) the counts in the last committed batch were when committed.
    lag_ms: Arc<AtomicU32>,
    /// The balances as of the last commit, and this month's accounts.
    balances: Arc<Mutex<Published>>,
}

/// What the writer publishes after each batch (or each second without one).
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Every member's balance.
    pub balances: Vec<Balance>,
    /// Every member's account this month (UTC).
    pub accounts: Vec<Account>,
}

impl LedgerWriter {
    /// Opens the ledger at `file` and starts its writer thread; bytes are charged at
    /// `tariff`, peak hours in local time `utc_offset_s` east of UTC.
    pub fn start(
        file: &Path,
        tariff: Tariff,
        utc_offset_s: i32,
    ) -> Result<LedgerWriter, LedgerError> {
        let ledger = Ledger::open(file)?;
        let balances = Arc::new(Mutex::new(Published::default()));
        let (to_writer, batches) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
        let lag_ms = Arc::new(AtomicU32::new(0));
        let (lag, published) = (lag_ms.clone(), balances.clone());
        let writer = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || write_batches(ledger, batches, lag, published))
            .map_err(|e| LedgerError::new(file, e))?;
        Ok(LedgerWriter {
            to_writer: Some(to_writer),
            writer: Some(writer),
            pending: Batch::default(),
            tariff: (tariff, utc_offset_s),
            lag_ms,
            balances,
        })
    }

    /// Charges what is counted from now on at `tariff` (a configuration reload).
    pub fn set_tariff(&mut self, tariff: Tariff, utc_offset_s: i32) {
        self.tariff = (tariff, utc_offset_s);
    }

    /// The members' balances as of the last batch written (adjustments made meanwhile by
    /// `linkpool-proxy credits grant` included).
    pub fn balances(&self) -> Vec<Balance> {
        self.balances
            .lock()
            .map(|p| p.balances.clone())
            .unwrap_or_default()
    }

    /// Every member's account this month (UTC), as of the last batch written.
    pub fn accounts(&self) -> Vec<Account> {
        self.balances
            .lock()
            .map(|p| p.accounts.clone())
            .unwrap_or_default()
    }

    /// Where counts are gathered until the next hand-over.
    pub fn pending(&mut self) -> &mut Batch {
        &mut self.pending
    }

    /// Hands what was gathered to the writer, if it has room; otherwise keeps it for the
    /// next time (nothing is dropped, the next batch is bigger).
    pub fn hand_over(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(to_writer) = &self.to_writer else {
            return;
        };
        self.pending.set_tariff(self.tariff.0, self.tariff.1);
        match to_writer.try_send(std::mem::take(&mut self.pending)) {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => self.pending = batch,
            Err(TrySendError::Disconnected(batch)) => {
                self.pending = batch;
                error!("the ledger writer stopped: counts are kept in memory only");
                self.to_writer = None;
            }
        }
    }

    /// The age of the counts in the last batch written, when written.
    pub fn flush_lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed).into())
    }

    /// Writes everything gathered and waits for the writer: for a clean stop (dropping
    /// it does the same).
    pub fn close(&mut self) {
        if let Some(to_writer) = self.to_writer.take() {
            self.pending.set_tariff(self.tariff.0, self.tariff.1);
            let batch = std::mem::take(&mut self.pending);
            if !batch.is_empty() && to_writer.send(batch).is_err() {
                error!("the ledger writer stopped before the last batch");
            }
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_batches(
    mut ledger: Ledger,
    batches: Receiver<Batch>,
    lag_ms: Arc<AtomicU32>,
    balances: Arc<Mutex<Published>>,
) {
    // Balances after every batch (one row a member); the month's accounts, which add up
    // a month of rows, at most once a statement interval.
    let mut accounts_at: Option<Instant> = None;
    let mut publish = |ledger: &Ledger| {
        let accounts = if accounts_at.is_none_or(|t| t.elapsed() >= STATEMENT_INTERVAL) {
            accounts_at = Some(Instant::now());
            let (start, end) = month_of(unix_now());
            Some(ledger.accounts(start, end))
        } else {
            None
        };
        match (ledger.balances(), accounts) {
            (Ok(b), accounts) => {
                if let Ok(mut published) = balances.lock() {
                    published.balances = b;
                    match accounts {
                        Some(Ok(a)) => published.accounts = a,
                        Some(Err(e)) => error!("{e}"),
                        None => {}
                    }
                }
            }
            (Err(e), _) => error!("{e}"),
        }
    };
    publish(&ledger);
    // A batch that failed (disk full, ...) is kept and retried with the next one.
    let mut failed: Option<Batch> = None;
    loop {
        let batch = match batches.recv_timeout(FLUSH_INTERVAL) {
            Ok(batch) => batch,
            // Nothing counted: the admin may still have granted credits meanwhile.
            Err(RecvTimeoutError::Timeout) => {
                publish(&ledger);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let batch = match failed.take() {
            Some(mut old) => {
                old.merge(batch);
                old
            }
            None => batch,
        };
        match ledger.apply(&batch) {
            Ok(()) => {
                let age = batch.since.map_or(Duration::ZERO, |t| t.elapsed());
                lag_ms.store(
                    age.as_millis().min(u32::MAX.into()) as u32,
                    Ordering::Relaxed,
                );
                publish(&ledger);
            }
            Err(e) => {
                error!("{e}: kept, retried with the next batch");
                failed = Some(batch);
            }
        }
    }
    if let Some(batch) = failed {
        if let Err(e) = ledger.apply(&batch) {
            error!("{e}: the last counts are lost");
        }
    }
}

/// `unix_s` as `YYYY-MM-DDTHH:MMZ`.
pub fn format_time(unix_s: i64) -> String {
    let (y, m, d) = civil_from_days(unix_s.div_euclid(86_400));
    let s = unix_s.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}Z", s / 3600, s % 3600 / 60)
}

/// Reads a time for `--since`/`--until`: seconds since the Unix epoch, or a UTC date
/// `YYYY-MM-DD`, optionally with `THH:MM[:SS]` (a space for the `T` and a final `Z` too).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || {
        format!("`{text}` is not a time: use 2026-12-07, 2026-12-07T18:00 (UTC) or unix seconds")
    };
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let num = |s: &str, max: u32| -> Result<u32, String> {
        let n: u32 = s.parse().map_err(|_| bad())?;
        if s.len() == 2 && n <= max {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let y: i64 = if y.len() == 4 {
        y.parse().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    let (m, d) = (num(m, 12)?, num(d, 31)?);
    if m == 0 || d == 0 || civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
        return Err(format!("`{text}`: there is no such day"));
    }
    let mut seconds = 0i64;
    if let Some(time) = time {
        let f: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&f.len()) {
            return Err(bad());
        }
        seconds = i64::from(num(f[0], 23)?) * 3600 + i64::from(num(f[1], 59)?) * 60;
        if let Some(sec) = f.get(2) {
            seconds += i64::from(num(sec, 59)?);
        }
    }
    Ok(days_from_civil(y, m, d) * 86_400 + seconds)
}

/// Bytes for people: `12.3 MB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Milli-credits as credits: `-1.5`, `0.001`, `12`.
pub fn credits(milli: MilliCredits) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let (whole, frac) = (milli.unsigned_abs() / 1000, milli.unsigned_abs() % 1000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let frac = format!("{frac:03}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// Credits as a person writes them (`1.5`, `-20`) to milli-credits: at most three
/// decimals, within ±10^12.
pub fn parse_credits(text: &str) -> Result<MilliCredits, String> {
    let bad = || format!("`{text}` is not an amount of credits like 12, -1.5 or 0.001");
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 3
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if whole > 1_000_000_000_000 {
        return Err(format!("`{text}` is more than 10^12 credits"));
    }
    let frac: i64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    let milli = whole * 1000 + frac;
    Ok(if negative { -milli } else { milli })
}

/// What `linkpool-proxy credits` prints: every member's balance, and the admin's
/// adjustments in `filter`'s range.
pub fn credits_report(ledger: &Ledger, filter: &Filter, json: bool) -> Result<String, LedgerError> {
    let mut balances = ledger.balances()?;
    if let Some(m) = &filter.member {
        balances.retain(|b| &b.member == m);
    }
    let adjustments = ledger.adjustments(filter)?;
    if json {
        let doc = serde_json::json!({
            "version": 1,
            "unit": "milli-credits",
            "balances": balances,
            "adjustments": adjustments,
        });
        return Ok(serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:>14} {:>14} {:>14} {:>14}\n",
        "member", "earned", "spent", "adjusted", "balance"
    );
    for b in &balances {
        let _ = writeln!(
            out,
            "{:<16} {:>14} {:>14} {:>14} {:>14}",
            b.member,
            credits(b.earned),
            credits(b.spent),
            credits(b.adjusted),
            credits(b.balance)
        );
    }
    if !adjustments.is_empty() {
        let _ = writeln!(out, "\nadjustments:");
        for a in &adjustments {
            let _ = writeln!(
                out,
                "{:<18} {:<16} {:>12}  {}",
                format_time(a.at),
                a.member,
                credits(a.amount),
                a.reason
            );
        }
    }
    Ok(out)
}

/// How `linkpool-proxy ledger` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A table for people.
    Text,
    /// One JSON document: `usage` and `carried` rows, exact bytes.
    Json,
    /// The usage rows as CSV, exact bytes.
    Csv,
}

/// The ledger's rows for `filter`, printed as `report` asks.
pub fn report(ledger: &Ledger, filter: &Filter, report: Report) -> Result<String, LedgerError> {
    let usage = ledger.usage(filter)?;
    let carried = ledger.carried(filter)?;
    let mut out = String::new();
    use std::fmt::Write as _;
    match report {
        Report::Json => {
            let doc = serde_json::json!({
                "version": 1,
                "usage": usage,
                "carried": carried,
            });
            out = serde_json::to_string_pretty(&doc).unwrap_or_default();
        }
        Report::Csv => {
            out.push_str(
                "hour,member,inner_up,inner_down,own_up,own_down,borrowed_up,borrowed_down,carried_up,carried_down,earned,spent,auctioned\n",
            );
            for r in &usage {
                let c = &r.counts;
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    format_time(r.hour),
                    r.member,
                    c.inner.up,
                    c.inner.down,
                    c.own.up,
                    c.own.down,
                    c.borrowed.up,
                    c.borrowed.down,
                    c.carried.up,
                    c.carried.down,
                    credits(r.earned),
                    credits(r.spent),
                    r.auctioned
                );
            }
        }
        Report::Text => {
            let _ = writeln!(
                out,
                "{:<18} {:<16} {:>21} {:>21} {:>21} {:>21} {:>19}",
                "hour (UTC)",
                "member",
                "consumed up/down",
                "own line up/down",
                "borrowed up/down",
                "carried up/down",
                "credits +/-"
            );
            let pair = |p: Pair| format!("{}/{}", human(p.up), human(p.down));
            for r in &usage {
                let c = &r.counts;
                let _ = writeln!(
                    out,
                    "{:<18} {:<16} {:>21} {:>21} {:>21} {:>21} {:>19}",
                    format_time(r.hour),
                    r.member,
                    pair(c.inner),
                    pair(c.own),
                    pair(c.borrowed),
                    pair(c.carried),
                    format!("+{}/-{}", credits(r.earned), credits(r.spent))
                );
            }
            if !carried.is_empty() {
                let _ = writeln!(out, "\nwhose line carried whose traffic (wire bytes):");
                let _ = writeln!(
                    out,
                    "{:<18} {:<16} {:<16} {:>21}",
                    "hour (UTC)", "relay", "for", "up/down"
                );
                for c in &carried {
                    let _ = writeln!(
                        out,
                        "{:<18} {:<16} {:<16} {:>21}",
                        format_time(c.hour),
                        c.relay,
                        c.consumer,
                        pair(c.bytes)
                    );
                }
            }
            if usage.is_empty() {
                out.push_str("(no rows)\n");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;
    use linkpool_protocol::usage::UpDown;

    fn usage(inner: u64, own: u64, borrowed: &[(u32, u64, u64)]) -> Usage {
        Usage {
            inner: UpDown {
                up: inner,
                down: 2 * inner,
            },
            own: UpDown { up: own, down: own },
            borrowed: borrowed
                .iter()
                .map(|&(r, up, down)| (r, UpDown { up, down }))
                .collect(),
            ..Usage::default()
        }
    }

    fn name(id: u32) -> String {
        ["alice", "bob", "carol"][id as usize].to_string()
    }

    #[test]
    fn batches_add_up_per_hour_and_relays_are_credited_what_consumers_borrowed() {
        let dir = TempDir::new("ledger");
        let file = dir.join("ledger.sqlite");
        let mut ledger = Ledger::open(&file).unwrap();
        let now = Instant::now();
        let mut b = Batch::default();
        b.add(now, 3600, "alice", &usage(100, 50, &[(1, 10, 20)]), name);
        b.add(
            now,
            3600,
            "carol",
            &usage(5, 5, &[(1, 1, 2), (0, 3, 4)]),
            name,
        );
        ledger.apply(&b).unwrap();
        let mut b = Batch::default();
        b.add(now, 3600, "alice", &usage(100, 50, &[(1, 10, 20)]), name);
        b.add(now, 7200, "alice", &usage(1, 1, &[]), name);
        ledger.apply(&b).unwrap();
        let rows = ledger.usage(&Filter::all()).unwrap();
        let get = |hour, m: &str| rows.iter().find(|r| r.hour == hour && r.member == m);
        let alice = get(3600, "alice").unwrap().counts;
        assert_eq!(alice.inner, Pair { up: 200, down: 400 });
        assert_eq!(alice.own, Pair { up: 100, down: 100 });
        assert_eq!(alice.borrowed, Pair { up: 20, down: 40 });
        assert_eq!(alice.carried, Pair { up: 3, down: 4 });
        let bob = get(3600, "bob").unwrap().counts;
        assert_eq!(bob.carried, Pair { up: 21, down: 42 });
        assert_eq!(bob.inner, Pair::default());
        assert_eq!(get(7200, "alice").unwrap().counts.inner.up, 1);
        // Every hour adds up: carried by a relay = what consumers borrowed through it.
        let carried = ledger.carried(&Filter::all()).unwrap();
        for r in &rows {
            let as_relay = carried
                .iter()
                .filter(|c| c.hour == r.hour && c.relay == r.member)
                .fold(Pair::default(), |mut a, c| {
                    a.add(c.bytes);
                    a
                });
            assert_eq!(as_relay, r.counts.carried, "{r:?}");
        }
        let only_bob = Filter {
            member: Some("bob".into()),
            ..Filter::all()
        };
        assert_eq!(ledger.usage(&only_bob).unwrap().len(), 1);
        assert_eq!(ledger.carried(&only_bob).unwrap().len(), 2);
        let later = Filter {
            since: 7200,
            ..Filter::all()
        };
        assert_eq!(ledger.usage(&later).unwrap().len(), 1);
    }

    #[test]
    fn the_writer_loses_nothing_on_a_clean_stop_and_reopening_keeps_the_schema() {
        let dir = TempDir::new("ledger");
        let file = dir.join("sub/ledger.sqlite");
        let mut w = LedgerWriter::start(&file, tariff(), 0).unwrap();
        let now = Instant::now();
        for i in 0..1000 {
            w.pending()
                .add(now, 0, "alice", &usage(1, 1, &[(1, 1, 1)]), name);
            if i % 10 == 0 {
                w.hand_over();
            }
        }
        w.close();
        let ledger = Ledger::open(&file).unwrap();
        let rows = ledger.usage(&Filter::all()).unwrap();
        assert_eq!(rows[0].counts.inner.up, 1000);
        assert_eq!(rows[1].counts.carried.up, 1000);
        let version: i64 = ledger
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = ledger
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_ledger_from_a_newer_proxy_is_refused_with_a_clear_error() {
        let dir = TempDir::new("ledger");
        let file = dir.join("ledger.sqlite");
        drop(Ledger::open(&file).unwrap());
        let conn = Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = Ledger::open(&file).err().unwrap().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
        let e = Ledger::open_read_only(&dir.join("nothing.sqlite"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    /// 1 credit per GB carried, 2 per GB borrowed; 3 and 4 from 18:00 to 22:59.
    fn tariff() -> Tariff {
        use linkpool_protocol::credits::{Peak, PeakHours, Rates};
        Tariff {
            off_peak: Rates {
                earn_per_gb: 1000,
                spend_per_gb: 2000,
            },
            peak: Some(Peak {
                hours: PeakHours::new(18, 23).unwrap(),
                rates: Rates {
                    earn_per_gb: 3000,
                    spend_per_gb: 4000,
                },
            }),
        }
    }

    #[test]
    fn credits_follow_each_hours_bytes_exactly_at_that_hours_rates() {
        let dir = TempDir::new("ledger");
        let mut ledger = Ledger::open(&dir.join("l.sqlite")).unwrap();
        let now = Instant::now();
        // Alice borrows 1.5 GB from bob in 3000 pieces at 10:00, 1 GB at 19:00 (peak);
        // each piece alone would round to a fraction of a milli-credit.
        let (ten, seven_pm) = (10 * HOUR_S, 19 * HOUR_S);
        for _ in 0..3000 {
            let mut b = Batch::default();
            b.set_tariff(tariff(), 0);
            b.add(
                now,
                ten,
                "alice",
                &usage(0, 0, &[(1, 250_000, 250_000)]),
                name,
            );
            ledger.apply(&b).unwrap();
        }
        let mut b = Batch::default();
        b.set_tariff(tariff(), 0);
        b.add(
            now,
            seven_pm,
            "alice",
            &usage(0, 0, &[(1, 0, 1_000_000_000)]),
            name,
        );
        ledger.apply(&b).unwrap();
        let rows = ledger.usage(&Filter::all()).unwrap();
        let row = |hour, m: &str| {
            rows.iter()
                .find(|r| r.hour == hour && r.member == m)
                .unwrap()
        };
        assert_eq!(
            (row(ten, "alice").spent, row(ten, "bob").earned),
            (3000, 1500)
        );
        assert_eq!(
            (row(seven_pm, "alice").spent, row(seven_pm, "bob").earned),
            (4000, 3000)
        );
        // In the co-op's time two hours east of UTC, 19:00 UTC is 21:00, still peak; 10:00
        // UTC is noon, off-peak.
        let mut b = Batch::default();
        b.set_tariff(tariff(), 2 * 3600);
        b.add(
            now,
            17 * HOUR_S,
            "carol",
            &usage(0, 0, &[(1, 0, 1_000_000_000)]),
            name,
        );
        ledger.apply(&b).unwrap();
        let carol = ledger
            .usage(&Filter {
                member: Some("carol".into()),
                ..Filter::all()
            })
            .unwrap();
        assert_eq!(carol[0].spent, 4000, "17:00 UTC is 19:00 there: peak");
        // The admin grants and takes, with reasons that stay.
        ledger
            .adjust(100, "alice", 10_000, "welcome credit")
            .unwrap();
        ledger.adjust(200, "alice", -500, "refund to bob").unwrap();
        let balances = ledger.balances().unwrap();
        let alice = balances.iter().find(|b| b.member == "alice").unwrap();
        assert_eq!(
            (alice.earned, alice.spent, alice.adjusted, alice.balance),
            (0, 7000, 9500, 2500)
        );
        let bob = balances.iter().find(|b| b.member == "bob").unwrap();
        assert_eq!(
            (bob.earned, bob.balance),
            (7500, 7500),
            "1.5 + 3 + 3 credits"
        );
        let adjustments = ledger.adjustments(&Filter::all()).unwrap();
        assert_eq!(adjustments.len(), 2);
        assert_eq!(adjustments[1].reason, "refund to bob");
        assert_eq!(adjustments[1].amount, -500);
        // The balances are the sums of the rows and adjustments.
        let rows = ledger.usage(&Filter::all()).unwrap();
        for b in &balances {
            let mine = rows.iter().filter(|r| r.member == b.member);
            let (earned, spent) = mine.fold((0, 0), |(e, s), r| (e + r.earned, s + r.spent));
            assert_eq!((earned, spent), (b.earned, b.spent), "{b:?}");
        }
    }

    /// Bytes bought at a relay line's auction cost what the auction charged, the rest of
    /// the borrowed bytes the tariff, exactly however they are batched; the relay earns
    /// the tariff for all it carried.
    #[test]
    fn auctioned_bytes_cost_their_price_and_the_rest_the_tariff() {
        use linkpool_protocol::usage::Auctioned;
        let dir = TempDir::new("ledger");
        let mut ledger = Ledger::open(&dir.join("l.sqlite")).unwrap();
        let now = Instant::now();
        let ten = 10 * HOUR_S;
        // 2000 pieces of 1 MB borrowed from bob, 600 kB of each bought at 2.5 credits/GB
        // (a price a piece alone would round away).
        for _ in 0..2000 {
            let mut u = usage(0, 0, &[(1, 0, 1_000_000)]);
            u.auctioned = vec![(
                1,
                Auctioned {
                    bytes: 600_000,
                    value: 600_000 * 2_500,
                },
            )];
            let mut b = Batch::default();
            b.set_tariff(tariff(), 0);
            b.add(now, ten, "alice", &u, name);
            ledger.apply(&b).unwrap();
        }
        let rows = ledger.usage(&Filter::all()).unwrap();
        let row = |m: &str| rows.iter().find(|r| r.member == m).unwrap();
        // 0.8 GB at the tariff's 2 credits, 1.2 GB at 2.5: 1600 + 3000 milli-credits.
        assert_eq!(row("alice").spent, 4600);
        assert_eq!(row("alice").auctioned, 1_200_000_000);
        assert_eq!(row("alice").counts.borrowed.down, 2_000_000_000);
        assert_eq!(
            row("bob").earned,
            2000,
            "2 GB carried at the tariff's 1 credit"
        );
        let balances = ledger.balances().unwrap();
        let alice = balances.iter().find(|b| b.member == "alice").unwrap();
        assert_eq!(alice.spent, 4600);
    }

    #[test]
    fn credits_read_and_print_as_people_write_them() {
        for (text, milli) in [
            ("12", 12_000),
            ("-1.5", -1500),
            ("0.001", 1),
            ("+2.25", 2250),
            (".5", 500),
        ] {
            assert_eq!(parse_credits(text), Ok(milli), "{text}");
        }
        for bad in ["", "-", "1.0001", "1e3", "abc", "1.2.3", "2000000000000"] {
            assert!(parse_credits(bad).is_err(), "{bad}");
        }
        assert_eq!(credits(-1500), "-1.5");
        assert_eq!(credits(12_000), "12");
        assert_eq!(credits(1), "0.001");
    }

    #[test]
    fn times_read_and_print_in_utc() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400));
        assert_eq!(parse_time("2026-12-07T18:30"), Ok(1_796_668_200));
        assert_eq!(parse_time("2026-12-07 18:30:15Z"), Ok(1_796_668_215));
        assert_eq!(parse_time("2024-02-29"), Ok(1_709_164_800));
        assert!(
            parse_time("2025-02-29")
                .unwrap_err()
                .contains("no such day")
        );
        for bad in [
            "",
            "yesterday",
            "2026-1-07",
            "2026-12-07T25:00",
            "2026-12-07T18",
            "-5",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(1_796_668_215), "2026-12-07T18:30Z");
        assert_eq!(format_time(hour_of(1_796_668_215)), "2026-12-07T18:00Z");
        for day in [-800_000i64, -1, 0, 59, 10_000, 20_794, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn reports_give_exact_bytes_to_machines_and_units_to_people() {
        let dir = TempDir::new("ledger");
        let mut ledger = Ledger::open(&dir.join("l.sqlite")).unwrap();
        let mut b = Batch::default();
        b.add(
            Instant::now(),
            3600,
            "alice",
            &usage(1_234_567, 10, &[(1, 7, 9)]),
            name,
        );
        ledger.apply(&b).unwrap();
        let all = Filter::all();
        let csv = report(&ledger, &all, Report::Csv).unwrap();
        assert!(csv.starts_with("hour,member,inner_up"), "{csv}");
        assert!(
            csv.contains("1970-01-01T01:00Z,alice,1234567,2469134,10,10,7,9,0,0,0,0"),
            "{csv}"
        );
        assert!(
            csv.contains("1970-01-01T01:00Z,bob,0,0,0,0,0,0,7,9,0,0"),
            "{csv}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&report(&ledger, &all, Report::Json).unwrap()).unwrap();
        assert_eq!(json["usage"][0]["inner"]["down"], 2_469_134);
        assert_eq!(json["carried"][0]["relay"], "bob");
        assert_eq!(json["carried"][0]["up"], 7);
        let text = report(&ledger, &all, Report::Text).unwrap();
        assert!(text.contains("1.2 MB/2.5 MB"), "{text}");
        assert!(text.contains("whose line carried"), "{text}");
    }
}
