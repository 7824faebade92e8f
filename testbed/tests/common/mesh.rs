//! Helpers for tests of a co-op whose members pool each other's lines over the mesh: the
//! three-member co-op, gateway status read as JSON, and a download watched as it goes
//! (its longest stall, its bytes checked at the end).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Direction, Process, ServedFile, Topology};
use serde_json::Value;

/// Three members, one 10 Mbit/s line each, all sharing, on a 1 ms mesh.
pub const THREE_MEMBERS: &str = r#"
name = "pool3"

[[router]]
isp = { rate = "10mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "10mbit", delay = "15ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "10mbit", delay = "20ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

/// Router `n`'s gateway status, parsed (`Value::Null` when it does not answer).
pub fn status(coop: &Coop, pool: &Pool, n: usize) -> Value {
    pool.gateway_status(coop, n, true)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// The entries of `mesh.KEY` (`neighbours`, `paths`, `relayed_for`) of a gateway status.
pub fn mesh_list<'a>(status: &'a Value, key: &str) -> &'a [Value] {
    status["mesh"][key].as_array().map_or(&[], Vec::as_slice)
}

/// The entry of router `n` in a gateway status's `mesh.neighbours[]` (by its address).
pub fn neighbour<'a>(coop: &Coop, status: &'a Value, n: usize) -> Option<&'a Value> {
    let addrs = relay_addresses(coop, n);
    mesh_list(status, "neighbours").iter().find(|e| {
        let address = e["address"].as_str().unwrap_or_default();
        addrs.iter().any(|a| address.starts_with(a.as_str()))
    })
}

/// Whether a gateway status lists router `n` as a usable neighbour.
pub fn usable(coop: &Coop, status: &Value, n: usize) -> bool {
    neighbour(coop, status, n).is_some_and(|e| e["usable"] == true)
}

/// The addresses of router `n`'s relay as neighbours see it (`ADDR:PORT` strings).
pub fn relay_addresses(coop: &Coop, n: usize) -> [String; 2] {
    let mesh = coop.router(n).mesh();
    [format!("{}:", mesh.v4), format!("[{}", mesh.v6)]
}

/// The state (`probing`, `active`, `suspect`, `dead`) of the path through router `n`'s
/// relay in a gateway status, if it has one.
pub fn path_state_via<'a>(coop: &Coop, status: &'a Value, n: usize) -> Option<&'a str> {
    let addrs = relay_addresses(coop, n);
    mesh_list(status, "paths")
        .iter()
        .find(|p| {
            let relay = p["relay"].as_str().unwrap_or_default();
            addrs.iter().any(|a| relay.starts_with(a.as_str()))
        })
        .and_then(|p| p["state"].as_str())
}

/// Whether `status` has a path through router `n`'s relay that is active.
pub fn active_path_via(coop: &Coop, status: &Value, n: usize) -> bool {
    path_state_via(coop, status, n) == Some("active")
}

/// Bytes relayed (up and down) for every neighbour, from a gateway status's
/// `mesh.relayed_for[]`.
pub fn relayed_bytes(status: &Value) -> u64 {
    mesh_list(status, "relayed_for")
        .iter()
        .map(|e| e["up_bytes"].as_u64().unwrap_or(0) + e["down_bytes"].as_u64().unwrap_or(0))
        .sum()
}

/// The three members' co-op with linkpool running, every member sharing, once r1 has an
/// active path through both neighbours.
pub fn three_members_met(name: &str) -> (Coop, Pool) {
    let topology = Topology::parse(THREE_MEMBERS, name).unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start_sharing(&coop).unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        &coop,
        &pool,
        Duration::from_secs(15),
        "r1 to meet r2 and r3",
        || {
            let s = status(&coop, &pool, 1);
            active_path_via(&coop, &s, 2) && active_path_via(&coop, &s, 3)
        },
    );
    (coop, pool)
}

/// Polls `done` every 50 ms until it holds; panics (with r1's status and the daemons' logs)
/// after `timeout`. Returns how long it took.
pub fn wait_until(
    coop: &Coop,
    pool: &Pool,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "waited {timeout:?} for {what}; r1's status:\n{}\n{}",
            pool.gateway_status(coop, 1, false).unwrap_or_default(),
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A stranger plugged into the mesh's bridge, with an address of its own on the mesh's
/// subnet (`.250`): returns that address and the namespace it sends from.
pub fn plug_in_a_stranger(coop: &Coop) -> (std::net::Ipv4Addr, String) {
    let mesh = coop.router(2).mesh().clone();
    let stranger = std::net::Ipv4Addr::from(u32::from(mesh.v4) & !0xff | 250);
    let ns = coop.mesh_segment().ns().to_string();
    let address = format!("{stranger}/{}", mesh.v4_prefix);
    coop.exec(&ns, &["ip", "addr", "add", &address, "dev", "br0"])
        .unwrap();
    (stranger, ns)
}

/// Bytes a link delivered downstream (towards its router) so far.
pub fn down_bytes(coop: &Coop, link: &str) -> u64 {
    coop.link(link)
        .unwrap()
        .stats(Direction::Downstream)
        .bytes_out
}

/// A download by curl from a LAN client, watched: how far it got, its longest stall.
pub struct Download {
    curl: Process,
    /// The client's number.
    client: usize,
    out: PathBuf,
    file: ServedFile,
    started: Instant,
    /// Bytes seen last, and when they grew to that.
    last: (u64, Instant),
    longest_stall: Duration,
    /// When curl was seen to have exited.
    done: Option<Instant>,
}

/// How a watched download ended.
pub struct Finished {
    pub took: Duration,
    /// The longest time the file did not grow, once its first bytes had come.
    pub longest_stall: Duration,
    pub size: u64,
}

impl Finished {
    /// Mbit/s over the whole download.
    pub fn mbit_s(&self) -> f64 {
        self.size as f64 * 8.0 / 1e6 / self.took.as_secs_f64()
    }
}

impl Download {
    /// Serves `size` bytes of a fresh file `name` on the internet host and starts client
    /// `n`'s curl on it (IPv4).
    pub fn start(coop: &Coop, n: usize, name: &str, size: u64) -> Download {
        let file = coop.internet().serve_file(name, size).unwrap();
        let out = coop.run_dir().join(format!("{name}.download"));
        let curl = coop
            .client(n)
            .spawn(&[
                "curl",
                "-sS",
                "--fail",
                "-m",
                "120",
                "-o",
                out.to_str().unwrap(),
                &coop.internet().url_v4(&file.path()),
            ])
            .unwrap();
        let now = Instant::now();
        Download {
            curl,
            client: n,
            out,
            file,
            started: now,
            last: (0, now),
            longest_stall: Duration::ZERO,
            done: None,
        }
    }

    /// Bytes downloaded so far.
    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0)
    }

    /// The longest stall so far.
    pub fn longest_stall(&self) -> Duration {
        self.longest_stall
    }

    /// Looks at the file once: records growth and stalls; true once curl has exited.
    fn poll(&mut self) -> bool {
        if self.done.is_none() && self.curl.try_wait().unwrap().is_some() {
            self.done = Some(Instant::now());
        }
        let (n, now) = (self.bytes(), Instant::now());
        if n != self.last.0 {
            if self.last.0 > 0 {
                self.longest_stall = self.longest_stall.max(now - self.last.1);
            }
            self.last = (n, now);
        } else if n > 0 && self.done.is_none() {
            self.longest_stall = self.longest_stall.max(now - self.last.1);
        }
        self.done.is_some()
    }

    /// Watches the download for `d` (or until curl exits).
    pub fn watch_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.poll() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Watches the download until `bytes` have come; panics if curl exits first or after
    /// `timeout`.
    pub fn wait_for_bytes(&mut self, bytes: u64, timeout: Duration, pool: &Pool) {
        let start = Instant::now();
        while self.bytes() < bytes {
            assert!(
                !self.poll(),
                "curl exited at {} of {bytes} bytes: {}\n{}",
                self.bytes(),
                self.curl.log(),
                pool.logs()
            );
            assert!(
                start.elapsed() < timeout,
                "the download got only {} of {bytes} bytes in {timeout:?}\n{}",
                self.bytes(),
                pool.logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Watches the download to its end; asserts curl succeeded (no connection lost) and
    /// the bytes are the served file's.
    pub fn finish(mut self, coop: &Coop, pool: &Pool, timeout: Duration) -> Finished {
        let start = Instant::now();
        while !self.poll() {
            assert!(
                start.elapsed() < timeout,
                "the download never finished ({} of {} bytes)\n{}",
                self.bytes(),
                self.file.size,
                pool.logs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = self.done.expect("curl exited") - self.started;
        let status = self.curl.try_wait().unwrap().expect("curl exited");
        assert!(
            status.success(),
            "curl failed ({status}): the connection was lost\n{}\n{}",
            self.curl.log(),
            pool.logs()
        );
        assert_eq!(self.bytes(), self.file.size, "wrong length");
        let got = coop
            .client(self.client)
            .exec_ok(&["sha256sum", self.out.to_str().unwrap()])
            .unwrap();
        assert_eq!(
            got.split_whitespace().next().unwrap_or_default(),
            self.file.sha256,
            "wrong bytes"
        );
        Finished {
            took,
            longest_stall: self.longest_stall,
            size: self.file.size,
        }
    }
}
