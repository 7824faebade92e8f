//! `bench-failover`: how long traffic stalls when a router's active WAN dies, through
//! linkpool and, as the reference, through kernel MPTCP over the same two emulated links
//! in the same co-op (`topologies/twowan.toml`: `r1-wan` 20 Mbit/s 10 ms, `r1-wan2`
//! 10 Mbit/s 30 ms). Prints figures; asserts nothing about them.
//!
//! Every run has four scenarios, each with its own cut of `r1-wan` (the active line) a
//! few seconds in; after each, the link comes back up and the next one waits until the
//! gateway's status shows both uplinks active again:
//!
//! 1. **TCP download through linkpool**: c1 reads a byte stream from the internet host (a
//!    sender thread in the internet namespace writing as fast as TCP takes it), through
//!    the gateway and the proxy. Every byte is checked against the sent pattern.
//! 2. **`ping -i 0.01` through linkpool**, from c1 to the internet host.
//! 3. **The same download over kernel MPTCP**, without linkpool: from r1 itself, its two
//!    WANs as subflows (`ip mptcp endpoint add <wan2 address> dev wan2 subflow`), to an
//!    MPTCP listener on the internet host; the same sender and reader code, only the
//!    socket's protocol differs (`IPPROTO_MPTCP`). The run fails, rather than print a
//!    figure, when MPTCP cannot be set up, falls back to TCP or has not opened its second
//!    subflow by the cut.
//! 4. **An echo every 10 ms over kernel MPTCP** from r1, the counterpart of the ping.
//!
//! The stall of a download: the received bytes in 10 ms bins from the cut on (each read
//! timestamped when it returns), the longest run of empty bins. Of a ping or an echo: the
//! longest time between two consecutive replies, the later one after the cut. The gateway
//! keeps running during the MPTCP scenarios (its idle probes are a few packets a second);
//! their traffic does not go through it.
//!
//! The sockets are opened with `libc` (`socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)`) and
//! then used as std's `TcpStream`/`TcpListener`, in threads that entered the namespace
//! ([`crate::netns`]).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::{ping_transmitted, quantile};
use crate::pool::Pool;
use crate::{Coop, Direction, Error, Link, Topology, netns};

/// The topology the benchmark builds, shipped in the binary.
pub const TWOWAN: &str = include_str!("../topologies/twowan.toml");

/// `IPPROTO_MPTCP`.
pub const IPPROTO_MPTCP: libc::c_int = 262;
const SOL_MPTCP: libc::c_int = 284;
const MPTCP_INFO: libc::c_int = 1;
const MPTCP_INFO_FLAG_FALLBACK: u32 = 1;

/// Width of the bins a download's received bytes are counted in.
pub const BIN: Duration = Duration::from_millis(10);
/// Interval of the ping and of the echo.
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// Length of the repeating byte pattern the downloads carry (a prime, so a lost or
/// duplicated chunk shifts it).
const PATTERN_LEN: usize = 1_000_003;
/// A download or echo silent this long after the cut counts as a lost connection.
const GIVE_UP: Duration = Duration::from_secs(20);

const DOWNLOAD_PORT: u16 = 9100;
const MPTCP_DOWNLOAD_PORT: u16 = 9101;
const MPTCP_ECHO_PORT: u16 = 9102;

/// What `bench-failover` does.
#[derive(Clone, Debug)]
pub struct FailoverBenchOptions {
    /// Runs of the four scenarios.
    pub runs: usize,
    /// From the first byte (or reply) to the cut.
    pub cut_after: Duration,
    /// How long to measure after the cut (longer while data has not resumed, up to 20 s).
    pub after_cut: Duration,
}

impl Default for FailoverBenchOptions {
    fn default() -> Self {
        FailoverBenchOptions {
            runs: 3,
            cut_after: Duration::from_secs(2),
            after_cut: Duration::from_secs(4),
        }
    }
}

/// One of the measured scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A TCP download from the internet host to c1, through linkpool.
    LinkpoolDownload,
    /// `ping -i 0.01` from c1 to the internet host, through linkpool.
    LinkpoolPing,
    /// The same download over kernel MPTCP from r1, without linkpool.
    MptcpDownload,
    /// An 8-byte echo every 10 ms over kernel MPTCP from r1.
    MptcpEcho,
}

impl Scenario {
    /// Every scenario, in the order a run measures them.
    pub const ALL: [Scenario; 4] = [
        Scenario::LinkpoolDownload,
        Scenario::LinkpoolPing,
        Scenario::MptcpDownload,
        Scenario::MptcpEcho,
    ];

    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::LinkpoolDownload => "TCP download, linkpool",
            Scenario::LinkpoolPing => "ping -i 0.01, linkpool",
            Scenario::MptcpDownload => "TCP download, kernel MPTCP",
            Scenario::MptcpEcho => "echo every 10 ms, kernel MPTCP",
        }
    }

    /// The MPTCP scenario a linkpool one is compared with.
    pub fn reference(self) -> Option<Scenario> {
        match self {
            Scenario::LinkpoolDownload => Some(Scenario::MptcpDownload),
            Scenario::LinkpoolPing => Some(Scenario::MptcpEcho),
            _ => None,
        }
    }
}

/// What one scenario of one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Longest stall after the cut (downloads: 10 ms bins; ping and echo: the longest time
    /// between two replies); `None` when nothing arrived after the cut.
    pub stall: Option<Duration>,
    /// Requests sent and answered (ping, echo).
    pub replies: Option<(u64, u64)>,
    /// The connection went on after the cut with the right bytes (ping: replies resumed).
    pub survived: bool,
    /// What the run saw: links used, MPTCP subflows, errors.
    pub note: String,
}

/// Everything `bench-failover` measured.
#[derive(Clone, Debug)]
pub struct FailoverReport {
    /// The setup, one line each (links, sender congestion control, MPTCP endpoints).
    pub header: Vec<String>,
    /// Every scenario with its outcomes, one per run.
    pub results: Vec<(Scenario, Vec<Outcome>)>,
}

impl FailoverReport {
    /// The outcomes of one scenario.
    pub fn outcomes(&self, scenario: Scenario) -> &[Outcome] {
        self.results
            .iter()
            .find(|(s, _)| *s == scenario)
            .map_or(&[], |(_, o)| o.as_slice())
    }

    /// Median and max of the stalls of the runs that resumed, in ms.
    pub fn stall_ms(&self, scenario: Scenario) -> Option<(f64, f64)> {
        let v: Vec<f64> = self
            .outcomes(scenario)
            .iter()
            .filter_map(|o| o.stall)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        (!v.is_empty()).then(|| (quantile(&v, 0.5), quantile(&v, 1.0)))
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let runs = self.results.first().map_or(0, |(_, o)| o.len());
        let _ = writeln!(
            out,
            "longest stall after the cut of r1-wan, {runs} run{}:",
            if runs == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "  {:<32} {:>10} {:>9} {:>14} {:>9}  linkpool/MPTCP (median, max)",
            "scenario", "median ms", "max ms", "lost", "survived"
        );
        for (scenario, outcomes) in &self.results {
            let (median, max) = match self.stall_ms(*scenario) {
                Some((m, x)) => (format!("{m:.0}"), format!("{x:.0}")),
                None => ("-".into(), "-".into()),
            };
            let lost = match outcomes
                .iter()
                .filter_map(|o| o.replies)
                .reduce(|a, b| (a.0 + b.0, a.1 + b.1))
            {
                Some((sent, answered)) => format!("{} of {sent}", sent.saturating_sub(answered)),
                None => "-".into(),
            };
            let survived = format!(
                "{} of {}",
                outcomes.iter().filter(|o| o.survived).count(),
                outcomes.len()
            );
            let ratio = match scenario
                .reference()
                .and_then(|r| Some((self.stall_ms(*scenario)?, self.stall_ms(r)?)))
            {
                Some(((m, x), (rm, rx))) => format!("{:.2}, {:.2}", m / rm, x / rx),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<32} {median:>10} {max:>9} {lost:>14} {survived:>9}  {ratio}",
                scenario.label()
            );
        }
        out += "  (download: longest run of empty 10 ms bins of received bytes; ping and echo: \
                longest time between two replies; lost: requests never answered)\n";
        out
    }
}

impl std::fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.header {
            writeln!(f, "{line}")?;
        }
        f.write_str(&self.table())
    }
}

/// Runs the benchmark, telling `say` what each run measured as it goes.
pub fn bench_failover(
    options: &FailoverBenchOptions,
    mut say: impl FnMut(&str),
) -> Result<FailoverReport, Error> {
    if options.runs == 0 {
        return Err(Error::new("bench-failover: give at least one run"));
    }
    let topology = Topology::parse(TWOWAN, "topologies/twowan.toml")?;
    let coop = Coop::build(&topology)?;
    let (cut, spare) = (coop.link("r1-wan")?, coop.link("r1-wan2")?);
    let mut header = vec![
        format!(
            "bench-failover: co-op `{}` ({}); r1-wan {} / r1-wan2 {}",
            topology.name,
            coop.prefix(),
            cut.params(Direction::Downstream),
            spare.params(Direction::Downstream)
        ),
        format!(
            "  r1-wan goes down {:?} after the first byte or reply, measured until {:?} after the cut; \
             the sender's congestion control: {}",
            options.cut_after,
            options.after_cut,
            coop.internet()
                .exec_ok(&["sysctl", "-n", "net.ipv4.tcp_congestion_control"])?
                .trim()
        ),
    ];
    header.push(format!("  {}", setup_mptcp(&coop)?));
    for line in &header {
        say(line);
    }
    let pool = Pool::start(&coop)?;
    let took = wait_uplinks_active(&pool, &coop, Duration::from_secs(20))?;
    say(&format!(
        "  linkpool up ({}), both uplinks active after {:.1} s",
        pool.linkpool_bin().display(),
        took.as_secs_f64()
    ));
    let mut results: Vec<(Scenario, Vec<Outcome>)> =
        Scenario::ALL.iter().map(|&s| (s, Vec::new())).collect();
    for run in 1..=options.runs {
        for (scenario, outcomes) in &mut results {
            let outcome = match scenario {
                Scenario::LinkpoolDownload => {
                    download(&coop, coop.client(1).ns(), Proto::Tcp, options)?
                }
                Scenario::LinkpoolPing => ping(&coop, options)?,
                Scenario::MptcpDownload => {
                    download(&coop, coop.router(1).ns(), Proto::Mptcp, options)?
                }
                Scenario::MptcpEcho => echo(&coop, options)?,
            };
            cut.up();
            let back = wait_uplinks_active(&pool, &coop, Duration::from_secs(30))?;
            say(&format!(
                "  run {run}/{}: {}: {}; {}; r1-wan up, both uplinks active again after {:.1} s",
                options.runs,
                scenario.label(),
                describe(&outcome),
                outcome.note,
                back.as_secs_f64()
            ));
            outcomes.push(outcome);
        }
    }
    Ok(FailoverReport { header, results })
}

fn describe(o: &Outcome) -> String {
    let stall = match o.stall {
        Some(d) => format!("longest stall {:.0} ms", d.as_secs_f64() * 1e3),
        None => "nothing arrived after the cut".to_string(),
    };
    let replies = match o.replies {
        Some((sent, got)) => format!(", {got} of {sent} answered"),
        None => String::new(),
    };
    format!(
        "{stall}{replies}, {}",
        if o.survived { "survived" } else { "LOST" }
    )
}

/// Turns on kernel MPTCP in r1 and on the internet host, each of r1's WANs after the first
/// (`wan2`, `wan3`, ...) as a subflow endpoint (the first subflow goes out of `wan`, the
/// default route); returns a line saying what was set.
pub fn setup_mptcp(coop: &Coop) -> Result<String, Error> {
    let r1 = coop.router(1);
    if r1.wans().len() < 2 {
        return Err(Error::new("bench-failover: r1 has no second WAN"));
    }
    let endpoints: Vec<(Ipv4Addr, String)> = r1.wans()[1..]
        .iter()
        .map(|w| (w.addr_v4(), w.device().to_string()))
        .collect();
    setup_mptcp_over(coop, &endpoints)
}

/// [`setup_mptcp`] with r1's further subflows from these (address, device) endpoints.
pub fn setup_mptcp_over(coop: &Coop, endpoints: &[(Ipv4Addr, String)]) -> Result<String, Error> {
    let r1 = coop.router(1);
    let inet = coop.internet();
    let fail = |e: Error| Error::new(format!("cannot set up kernel MPTCP: {e}"));
    // Subflows besides the first: one per endpoint (the kernel allows up to 8).
    let limit = endpoints.len().clamp(2, 8).to_string();
    for node in [&**r1, &***inet] {
        node.exec_ok(&["sysctl", "-q", "-w", "net.mptcp.enabled=1"])
            .map_err(fail)?;
        node.exec_ok(&[
            "ip",
            "mptcp",
            "limits",
            "set",
            "subflow",
            &limit,
            "add_addr_accepted",
            &limit,
        ])
        .map_err(fail)?;
    }
    r1.exec_ok(&["ip", "mptcp", "endpoint", "flush"])
        .map_err(fail)?;
    for (addr, device) in endpoints {
        let addr = addr.to_string();
        r1.exec_ok(&[
            "ip", "mptcp", "endpoint", "add", &addr, "dev", device, "subflow",
        ])
        .map_err(fail)?;
    }
    let shown = r1
        .exec_ok(&["ip", "mptcp", "endpoint", "show"])
        .map_err(fail)?;
    for (addr, _) in endpoints {
        let addr = addr.to_string();
        if !shown.contains(&addr) {
            return Err(fail(Error::new(format!(
                "r1's MPTCP endpoints do not list {addr}: {shown}"
            ))));
        }
    }
    // Fails here, clearly, when the kernel has no MPTCP.
    netns::within(r1.ns(), || stream_socket(Proto::Mptcp).map(drop)).map_err(|e| {
        fail(Error::new(format!(
            "socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP): {e}"
        )))
    })?;
    Ok(format!(
        "kernel MPTCP: net.mptcp.enabled=1 in r1 and internet, limits subflow {limit} \
         add_addr_accepted {limit}, r1's endpoints: {}",
        shown
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// Waits until the gateway's status shows every uplink (at least two) `active`; returns
/// how long that took.
fn wait_uplinks_active(pool: &Pool, coop: &Coop, timeout: Duration) -> Result<Duration, Error> {
    let start = Instant::now();
    loop {
        let status = pool.gateway_status(coop, 1, true);
        if let Ok(json) = &status {
            let (active, total) = uplinks_active(json);
            if total >= 2 && active == total {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::new(format!(
                "the gateway's uplinks are not all active {timeout:?} after r1-wan came back; status: {}",
                match status {
                    Ok(json) => json,
                    Err(e) => e.to_string(),
                }
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Uplinks whose state is `active`, and all uplinks, in a gateway's `status --json`.
pub fn uplinks_active(json: &str) -> (usize, usize) {
    let compact: String = json.split_whitespace().collect();
    let Some(start) = compact.find("\"uplinks\":[") else {
        return (0, 0);
    };
    let list = &compact[start..];
    let list = &list[..list.find(']').unwrap_or(list.len())];
    (
        list.matches("\"state\":\"active\"").count(),
        list.matches("\"device\":").count(),
    )
}

/// The longest run of empty `bin`s, from the cut to the bin of the last arrival, given
/// arrival times after the cut (sorted); `None` when nothing arrived.
pub fn longest_stall(arrivals: &[Duration], bin: Duration) -> Option<Duration> {
    let bin_ns = bin.as_nanos().max(1);
    let mut previous: i128 = -1;
    let mut longest = 0i128;
    for t in arrivals {
        let b = (t.as_nanos() / bin_ns) as i128;
        longest = longest.max(b - previous - 1);
        previous = previous.max(b);
    }
    (previous >= 0).then(|| bin * longest as u32)
}

/// The longest time between two consecutive replies (times in seconds, sorted) whose later
/// one came at or after `cut` (from the cut, when none came before it); `None` when none
/// came after it.
pub fn longest_gap_after(times: &[f64], cut: f64) -> Option<f64> {
    let mut longest: Option<f64> = None;
    let mut previous: Option<f64> = None;
    for &t in times {
        if t >= cut {
            let gap = t - previous.unwrap_or(cut).min(t);
            longest = Some(longest.map_or(gap, |l| l.max(gap)));
        }
        previous = Some(t);
    }
    longest
}

/// Reception times (seconds since the epoch) of the replies in `ping -D` output
/// (`[1733126400.123456] 64 bytes from ...`).
pub fn ping_reply_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// Number of replies `ping` says it received.
pub fn ping_received(output: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    line.split(',')
        .find(|part| part.trim_end().ends_with("received"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The protocol of a stream socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Plain TCP.
    Tcp,
    /// Kernel MPTCP (`IPPROTO_MPTCP`).
    Mptcp,
}

impl Proto {
    fn number(self) -> libc::c_int {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP,
            Proto::Mptcp => IPPROTO_MPTCP,
        }
    }
}

fn stream_socket(proto: Proto) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            proto.number(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A listening socket on `port` of every address (call inside the namespace).
fn listen(proto: Proto, port: u16) -> io::Result<TcpListener> {
    let fd = stream_socket(proto)?;
    let one: libc::c_int = 1;
    let sa = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    // SAFETY: valid fd, option and address buffers of the sizes given.
    unsafe {
        check(libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        check(libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        check(libc::listen(fd.as_raw_fd(), 8))?;
    }
    Ok(TcpListener::from(fd))
}

/// A socket connected from `local` (any local address when `None`), so that a router's
/// policy rules send it out of the WAN that address belongs to (call inside the
/// namespace).
pub fn connect_from(
    proto: Proto,
    local: Option<Ipv4Addr>,
    to: SocketAddrV4,
) -> io::Result<TcpStream> {
    let fd = stream_socket(proto)?;
    if let Some(local) = local {
        let sa = sockaddr(SocketAddrV4::new(local, 0));
        // SAFETY: valid fd and address buffer of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
    }
    let sa = sockaddr(to);
    // SAFETY: valid fd and address buffer of the size given.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check(rc)?;
    Ok(TcpStream::from(fd))
}

/// Sets a connection's TCP congestion control (`TCP_CONGESTION`; any the kernel has, with
/// CAP_NET_ADMIN, where a namespace's `net.ipv4.tcp_congestion_control` is bounded by
/// the host's allowed list) and reads it back.
pub fn set_congestion_control(stream: &TcpStream, name: &str) -> io::Result<()> {
    // SAFETY: valid fd; the buffer and its length describe the name.
    check(unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("TCP_CONGESTION {name}: {e}")))?;
    let now = congestion_control(stream)?;
    if now != name {
        return Err(io::Error::other(format!(
            "TCP_CONGESTION {name}: the connection uses {now}"
        )));
    }
    Ok(())
}

/// A connection's TCP congestion control.
pub fn congestion_control(stream: &TcpStream) -> io::Result<String> {
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd; buf and len describe a writable buffer.
    check(unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    let name = &buf[..(len as usize).min(buf.len())];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// What `MPTCP_INFO` says of a connection.
#[derive(Clone, Copy, Debug)]
pub struct MptcpInfo {
    /// Subflows besides the first.
    pub subflows: u8,
    /// The connection fell back to plain TCP.
    pub fallback: bool,
}

/// `MPTCP_INFO` of an MPTCP connection.
pub fn mptcp_info(stream: &TcpStream) -> io::Result<MptcpInfo> {
    // struct mptcp_info: six u8 (mptcpi_subflows first), then u32 mptcpi_flags at 8.
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: valid fd; buf and len describe a writable buffer.
    check(unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            SOL_MPTCP,
            MPTCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    if len < 12 {
        return Err(io::Error::other(format!("MPTCP_INFO returned {len} bytes")));
    }
    Ok(MptcpInfo {
        subflows: buf[0],
        fallback: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]) & MPTCP_INFO_FLAG_FALLBACK
            != 0,
    })
}

/// The bytes a download carries: a pseudo-random block repeated.
pub fn pattern() -> Arc<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    Arc::new(
        (0..PATTERN_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect(),
    )
}

/// Checks a received stream against [`pattern`].
pub struct PatternCheck {
    block: Arc<Vec<u8>>,
    /// Bytes checked so far.
    pub offset: u64,
}

impl Default for PatternCheck {
    fn default() -> Self {
        PatternCheck::new()
    }
}

impl PatternCheck {
    /// A check from the stream's first byte.
    pub fn new() -> PatternCheck {
        PatternCheck {
            block: pattern(),
            offset: 0,
        }
    }

    /// Whether `data` is what comes next; advances.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let start = (self.offset % PATTERN_LEN as u64) as usize;
            let take = data.len().min(PATTERN_LEN - start);
            if data[..take] != self.block[start..start + take] {
                return false;
            }
            self.offset += take as u64;
            data = &data[take..];
        }
        true
    }
}

/// What a [`Server`] does with its connection.
#[derive(Clone, Copy)]
pub enum Serve {
    /// Write the pattern as fast as the socket takes it.
    Bulk,
    /// Write back what arrives.
    Echo,
}

/// One connection served by a thread in the internet host's namespace.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<u64>>>,
}

impl Server {
    /// Listens on `port` of the internet host and serves the first connection (MPTCP's
    /// further subflows join it through the same listener) until [`Server::finish`].
    pub fn start(coop: &Coop, proto: Proto, port: u16, serve: Serve) -> Result<Server, Error> {
        Server::start_with(coop, proto, port, serve, None)
    }

    /// [`Server::start`] with the connection's TCP congestion control set (`cubic`, ...;
    /// for MPTCP on every subflow): the thread fails at once, closing the connection, when
    /// the kernel refuses it.
    pub fn start_with(
        coop: &Coop,
        proto: Proto,
        port: u16,
        serve: Serve,
        congestion_control: Option<String>,
    ) -> Result<Server, Error> {
        let listener = netns::within(coop.internet().ns(), || listen(proto, port))
            .map_err(|e| Error::new(format!("listening on the internet host, port {port}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || -> io::Result<u64> {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if flag.load(Ordering::Relaxed) || Instant::now() > deadline {
                            return Ok(0);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            };
            // The listener stays open: MPTCP's second subflow (MP_JOIN) arrives through it.
            stream.set_nonblocking(false)?;
            if let Some(name) = &congestion_control {
                set_congestion_control(&stream, name)?;
            }
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(Duration::from_millis(200)))?;
            stream.set_read_timeout(Some(Duration::from_millis(200)))?;
            let block = pattern();
            let mut buf = vec![0u8; 64 << 10];
            let mut moved = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let result = match serve {
                    Serve::Bulk => {
                        let start = (moved % PATTERN_LEN as u64) as usize;
                        let end = (start + (64 << 10)).min(PATTERN_LEN);
                        stream.write(&block[start..end])
                    }
                    Serve::Echo => match stream.read(&mut buf) {
                        Ok(0) => return Ok(moved),
                        Ok(n) => stream.write_all(&buf[..n]).map(|()| n),
                        Err(e) => Err(e),
                    },
                };
                match result {
                    Ok(n) => moved += n as u64,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    // The client went away: the measurement is over.
                    Err(_) if flag.load(Ordering::Relaxed) => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(moved)
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops serving; returns what the server moved, or its error.
    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(n))) => Ok(n),
            Some(Ok(Err(e))) => Err(e.to_string()),
            _ => Err("server thread panicked".into()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes delivered towards r1 on both its WAN links so far.
fn downstream_bytes(cut: &Link, spare: &Link) -> [u64; 2] {
    [
        cut.stats(Direction::Downstream).bytes_out,
        spare.stats(Direction::Downstream).bytes_out,
    ]
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Connects from `client_ns` to the internet host with `proto`; for MPTCP checks that the
/// connection did not fall back to TCP.
pub fn open(coop: &Coop, client_ns: &str, proto: Proto, port: u16) -> Result<TcpStream, Error> {
    open_from(coop, client_ns, proto, port, None)
}

/// [`open`] from a local address of the namespace (a WAN's, to go out of that WAN).
pub fn open_from(
    coop: &Coop,
    client_ns: &str,
    proto: Proto,
    port: u16,
    local: Option<Ipv4Addr>,
) -> Result<TcpStream, Error> {
    let to = SocketAddrV4::new(coop.internet().addr_v4(), port);
    let stream = netns::within(client_ns, || connect_from(proto, local, to)).map_err(|e| {
        Error::new(format!(
            "cannot connect{} to {to}: {e}",
            if proto == Proto::Mptcp {
                " over MPTCP from r1"
            } else {
                ""
            }
        ))
    })?;
    if proto == Proto::Mptcp {
        let info = mptcp_info(&stream)
            .map_err(|e| Error::new(format!("MPTCP_INFO on the connection to {to}: {e}")))?;
        if info.fallback {
            return Err(Error::new(format!(
                "the MPTCP connection to {to} fell back to plain TCP: kernel MPTCP is not in use"
            )));
        }
    }
    Ok(stream)
}

/// Fails unless the MPTCP connection has its second subflow (the one over wan2) now.
fn require_second_subflow(stream: &TcpStream, coop: &Coop) -> Result<u8, Error> {
    let info = mptcp_info(stream).map_err(|e| Error::new(format!("MPTCP_INFO: {e}")))?;
    if info.fallback || info.subflows < 1 {
        let show = |node: &crate::Node, argv: &[&str]| {
            node.exec_ok(argv)
                .unwrap_or_else(|e| e.to_string())
                .trim()
                .to_string()
        };
        let (r1, inet) = (&**coop.router(1), &***coop.internet());
        let joins = ["nstat", "-az", "MPTcpExtMPJoin*"];
        return Err(Error::new(format!(
            "kernel MPTCP did not open its second subflow over wan2 before the cut ({info:?}); \
             r1's endpoints: {}; limits: {}\n`ss -Mni` in r1:\n{}\n`ss -tni` in r1:\n{}\n\
             join counters in r1:\n{}\nand on the internet host:\n{}",
            show(r1, &["ip", "mptcp", "endpoint", "show"]),
            show(r1, &["ip", "mptcp", "limits", "show"]),
            show(r1, &["ss", "-Mni"]),
            show(r1, &["ss", "-tni"]),
            show(r1, &joins),
            show(inet, &joins),
        )));
    }
    Ok(info.subflows + 1)
}

/// A download from the internet host to `client_ns` across a cut of r1-wan.
fn download(
    coop: &Coop,
    client_ns: &str,
    proto: Proto,
    options: &FailoverBenchOptions,
) -> Result<Outcome, Error> {
    let (cut, spare) = (coop.link("r1-wan")?, coop.link("r1-wan2")?);
    let port = match proto {
        Proto::Tcp => DOWNLOAD_PORT,
        Proto::Mptcp => MPTCP_DOWNLOAD_PORT,
    };
    let server = Server::start(coop, proto, port, Serve::Bulk)?;
    let at_start = downstream_bytes(cut, spare);
    let mut stream = open(coop, client_ns, proto, port)?;
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| Error::new(format!("read timeout: {e}")))?;
    let mut check = PatternCheck {
        block: pattern(),
        offset: 0,
    };
    let mut buf = vec![0u8; 256 << 10];
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut cut_at: Option<(Instant, [u64; 2])> = None;
    let mut subflows = None;
    let mut arrivals: Vec<Duration> = Vec::new();
    let mut bytes_after = 0u64;
    let ended: Result<(), String> = loop {
        let now = Instant::now();
        match (cut_at, first) {
            (None, Some(f)) if now - f >= options.cut_after => {
                if proto == Proto::Mptcp {
                    subflows = Some(require_second_subflow(&stream, coop)?);
                }
                let before = downstream_bytes(cut, spare);
                cut.down();
                cut_at = Some((Instant::now(), before));
            }
            (None, None) if now - start > Duration::from_secs(10) => {
                return Err(Error::new(format!(
                    "the download to {client_ns} did not start within 10 s"
                )));
            }
            (Some((c, _)), _) => {
                let since = now - c;
                let last = arrivals.last().map(|&t| c + t);
                let flowing = last.is_some_and(|l| now - l < Duration::from_millis(50));
                let resumed_long_ago = arrivals
                    .first()
                    .is_some_and(|&t| since - t >= Duration::from_secs(1));
                if since >= options.after_cut && flowing && resumed_long_ago {
                    break Ok(());
                }
                if now - last.unwrap_or(c) > GIVE_UP {
                    break Err(format!(
                        "no data for {GIVE_UP:?}{}",
                        if last.is_some() { "" } else { " after the cut" }
                    ));
                }
            }
            _ => {}
        }
        match stream.read(&mut buf) {
            Ok(0) => break Err("the sender closed the connection".into()),
            Ok(n) => {
                let t = Instant::now();
                if !check.next(&buf[..n]) {
                    break Err(format!("wrong bytes near offset {}", check.offset));
                }
                first.get_or_insert(t);
                if let Some((c, _)) = cut_at {
                    arrivals.push(t - c);
                    bytes_after += n as u64;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(format!("connection lost: {e}")),
        }
    };
    let at_end = downstream_bytes(cut, spare);
    drop(stream);
    let served = server.finish();
    let Some((_, before)) = cut_at else {
        return Err(Error::new(format!(
            "the download to {client_ns} ended before the cut, after {}: {}{}",
            mb(check.offset),
            ended.err().unwrap_or_default(),
            served
                .err()
                .map(|e| format!("; sender: {e}"))
                .unwrap_or_default()
        )));
    };
    let mut note = format!(
        "{} received, {} after the cut; before it r1-wan carried {}, r1-wan2 {}, after it r1-wan2 {}",
        mb(check.offset),
        mb(bytes_after),
        mb(before[0] - at_start[0]),
        mb(before[1] - at_start[1]),
        mb(at_end[1] - before[1]),
    );
    if let Some(n) = subflows {
        let wan2_before = before[1] - at_start[1];
        let _ = write!(
            note,
            " (MPTCP: {n} subflows at the cut; {})",
            if wan2_before >= 100_000 {
                "both carried data before it"
            } else {
                "only r1-wan's carried data before it"
            }
        );
    }
    if let Err(e) = &ended {
        let _ = write!(note, "; {e}");
    }
    if let Err(e) = served {
        let _ = write!(note, "; sender: {e}");
    }
    Ok(Outcome {
        stall: longest_stall(&arrivals, BIN),
        replies: None,
        survived: ended.is_ok() && !arrivals.is_empty(),
        note,
    })
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `ping -i 0.01` from c1 to the internet host, through linkpool, across a cut of r1-wan.
fn ping(coop: &Coop, options: &FailoverBenchOptions) -> Result<Outcome, Error> {
    let cut = coop.link("r1-wan")?;
    let total = options.cut_after + options.after_cut;
    let count = (total.as_millis() / PING_INTERVAL.as_millis()).to_string();
    let target = coop.internet().addr_v4().to_string();
    let mut ping = coop.client(1).spawn(&[
        "ping", "-D", "-n", "-i", "0.01", "-c", &count, "-W", "1", &target,
    ])?;
    ping.wait_for_log(" bytes from ", Duration::from_secs(10))?;
    std::thread::sleep(options.cut_after);
    cut.down();
    let cut_wall = SystemTime::now();
    let status = ping
        .wait_timeout(total + Duration::from_secs(20))
        .map_err(|e| Error::new(format!("waiting for ping: {e}")))?;
    if status.is_none() {
        return Err(Error::new(format!(
            "ping did not end; its output:\n{}",
            ping.log()
        )));
    }
    let log = ping.log();
    let times = ping_reply_times(&log);
    let sent = ping_transmitted(&log).unwrap_or(0);
    let got = ping_received(&log).unwrap_or(times.len() as u64);
    let cut_s = epoch_seconds(cut_wall);
    let after = times.iter().filter(|&&t| t >= cut_s).count();
    let gap = longest_gap_after(&times, cut_s);
    Ok(Outcome {
        stall: gap.map(Duration::from_secs_f64),
        replies: Some((sent, got)),
        survived: after > 0,
        note: format!("{after} replies after the cut"),
    })
}

/// An 8-byte echo every 10 ms over MPTCP from r1 across a cut of r1-wan.
fn echo(coop: &Coop, options: &FailoverBenchOptions) -> Result<Outcome, Error> {
    let (cut, spare) = (coop.link("r1-wan")?, coop.link("r1-wan2")?);
    let server = Server::start(coop, Proto::Mptcp, MPTCP_ECHO_PORT, Serve::Echo)?;
    let mut stream = open(coop, coop.router(1).ns(), Proto::Mptcp, MPTCP_ECHO_PORT)?;
    let setup = |s: &TcpStream| -> io::Result<TcpStream> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(10)))?;
        s.try_clone()
    };
    let mut writer = setup(&stream).map_err(|e| Error::new(format!("echo socket: {e}")))?;
    let total = options.cut_after + options.after_cut;
    let count = (total.as_millis() / PING_INTERVAL.as_millis()) as u64;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> io::Result<u64> {
        for seq in 0..count {
            let due = start + PING_INTERVAL * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            writer.write_all(&seq.to_be_bytes())?;
        }
        Ok(count)
    });
    let mut arrivals: Vec<f64> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut cut_at: Option<(Instant, [u64; 2])> = None;
    let mut subflows = 0;
    let mut problem: Option<String> = None;
    let give_up = start + total + Duration::from_secs(5);
    while (arrivals.len() as u64) < count && Instant::now() < give_up {
        if cut_at.is_none() && start.elapsed() >= options.cut_after {
            subflows = require_second_subflow(&stream, coop)?;
            let before = downstream_bytes(cut, spare);
            cut.down();
            cut_at = Some((Instant::now(), before));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                problem = Some("the server closed the connection".into());
                break;
            }
            Ok(n) => {
                let t = start.elapsed().as_secs_f64();
                pending.extend_from_slice(&buf[..n]);
                let whole = pending.len() / 8 * 8;
                for record in pending[..whole].chunks_exact(8) {
                    let seq = u64::from_be_bytes(record.try_into().expect("8 bytes"));
                    if seq != arrivals.len() as u64 {
                        problem = Some(format!(
                            "echo {seq} arrived where {} was due",
                            arrivals.len()
                        ));
                    }
                    arrivals.push(t);
                }
                pending.drain(..whole);
                if problem.is_some() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                problem = Some(format!("connection lost: {e}"));
                break;
            }
        }
    }
    let at_end = downstream_bytes(cut, spare);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = match sender.join() {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            problem.get_or_insert(format!("sending: {e}"));
            count
        }
        Err(_) => count,
    };
    drop(stream);
    let _ = server.finish();
    let Some((c, before)) = cut_at else {
        return Err(Error::new(format!(
            "the echo ended before the cut: {}",
            problem.unwrap_or_default()
        )));
    };
    let cut_s = (c - start).as_secs_f64();
    let after = arrivals.iter().filter(|&&t| t >= cut_s).count();
    let mut note = format!(
        "{after} echoes after the cut; after it r1-wan2 carried {} kB towards r1 (MPTCP: {subflows} subflows at the cut)",
        (at_end[1] - before[1]) / 1000
    );
    if let Some(p) = &problem {
        let _ = write!(note, "; {p}");
    }
    Ok(Outcome {
        stall: longest_gap_after(&arrivals, cut_s).map(Duration::from_secs_f64),
        replies: Some((sent, arrivals.len() as u64)),
        survived: problem.is_none() && after > 0,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn the_longest_stall_is_the_longest_run_of_empty_bins_from_the_cut() {
        // Data at 1, 3, 12 ms, then nothing until 205 ms: bins 2..=19 empty (180 ms).
        assert_eq!(
            longest_stall(&ms(&[1, 3, 12, 205, 207, 215]), BIN),
            Some(Duration::from_millis(180))
        );
        // Nothing until 230 ms after the cut: bins 0..=22 empty.
        assert_eq!(
            longest_stall(&ms(&[230, 231, 245]), BIN),
            Some(Duration::from_millis(230))
        );
        // Data in every bin: no stall.
        assert_eq!(
            longest_stall(&ms(&[0, 9, 10, 25]), BIN),
            Some(Duration::ZERO)
        );
        assert_eq!(longest_stall(&[], BIN), None);
    }

    #[test]
    fn the_longest_gap_ends_after_the_cut() {
        let replies = [0.00, 0.01, 0.02, 0.03, 0.21, 0.22, 0.50, 0.51];
        // 0.03 -> 0.21 spans the cut at 0.025; 0.22 -> 0.50 is longer and after it.
        assert!((longest_gap_after(&replies, 0.025).unwrap() - 0.28).abs() < 1e-9);
        // A longer gap before the cut does not count.
        assert!((longest_gap_after(&[0.0, 1.0, 1.01], 1.005).unwrap() - 0.01).abs() < 1e-9);
        // Nothing before the cut: from the cut.
        assert!((longest_gap_after(&[2.5, 2.6], 2.0).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(longest_gap_after(&[0.1, 0.2], 0.3), None);
    }

    #[test]
    fn parses_ping_with_timestamps() {
        let out = "PING 198.51.100.80 (198.51.100.80) 56(84) bytes of data.\n\
                   [1733126400.123456] 64 bytes from 198.51.100.80: icmp_seq=1 ttl=61 time=33.1 ms\n\
                   [1733126400.133501] 64 bytes from 198.51.100.80: icmp_seq=2 ttl=61 time=33.0 ms\n\
                   \n--- 198.51.100.80 ping statistics ---\n\
                   600 packets transmitted, 585 received, 2.5% packet loss, time 6012ms\n";
        let t = ping_reply_times(out);
        assert_eq!(t.len(), 2);
        assert!((t[1] - t[0] - 0.010045).abs() < 1e-6);
        assert_eq!(ping_received(out), Some(585));
        assert_eq!(ping_transmitted(out), Some(600));
        let dup = "10 packets transmitted, 9 received, +1 duplicates, 10% packet loss, time 90ms";
        assert_eq!(ping_received(dup), Some(9));
    }

    #[test]
    fn counts_active_uplinks_in_a_gateway_status() {
        let json = r#"{"connected":true,"session":"up","uplinks":[{"device":"wan","path":1,"state":"active"},{"device":"wan2","state":"dead","state_for_s":2}],"uptime_s":3}"#;
        assert_eq!(uplinks_active(json), (1, 2));
        assert_eq!(
            uplinks_active(&json.replace("\"dead\"", "\"active\"")),
            (2, 2)
        );
        assert_eq!(
            uplinks_active("{\"uplinks\": [ {\"device\": \"wan\", \"state\": \"active\"} ]}"),
            (1, 1)
        );
        assert_eq!(uplinks_active("{}"), (0, 0));
    }

    #[test]
    fn the_pattern_check_finds_a_missing_byte() {
        let block = pattern();
        let stream: Vec<u8> = block.iter().chain(block.iter()).copied().collect();
        let mut ok = PatternCheck {
            block: block.clone(),
            offset: 0,
        };
        // In odd pieces, across the block's end.
        for piece in stream[..PATTERN_LEN + 5000].chunks(65_521) {
            assert!(ok.next(piece));
        }
        let mut bad = PatternCheck { block, offset: 0 };
        assert!(bad.next(&stream[..1000]));
        assert!(!bad.next(&stream[1001..3000]));
    }

    #[test]
    fn the_table_compares_with_mptcp() {
        let outcome = |ms: u64, replies| Outcome {
            stall: Some(Duration::from_millis(ms)),
            replies,
            survived: true,
            note: String::new(),
        };
        let report = FailoverReport {
            header: vec![],
            results: vec![
                (
                    Scenario::LinkpoolDownload,
                    vec![outcome(200, None), outcome(100, None), outcome(300, None)],
                ),
                (Scenario::LinkpoolPing, vec![outcome(150, Some((600, 590)))]),
                (
                    Scenario::MptcpDownload,
                    vec![
                        outcome(2000, None),
                        outcome(1000, None),
                        outcome(3000, None),
                    ],
                ),
                (Scenario::MptcpEcho, vec![outcome(1500, Some((600, 600)))]),
            ],
        };
        assert_eq!(
            report.stall_ms(Scenario::LinkpoolDownload),
            Some((200.0, 300.0))
        );
        let table = report.table();
        let row = table
            .lines()
            .find(|l| l.contains("TCP download, linkpool"))
            .unwrap();
        assert!(row.contains("0.10, 0.10"), "{table}");
        assert!(row.contains("3 of 3"), "{table}");
        let ping = table.lines().find(|l| l.contains("ping")).unwrap();
        assert!(ping.contains("10 of 600"), "{table}");
    }
}
