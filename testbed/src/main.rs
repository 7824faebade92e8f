//! `linkpool-testbed`: build co-ops in network namespaces, change their links while they
//! run, clean up leftovers, benchmark the link emulator, run the demo.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use linkpool_testbed::bench::{BenchOptions, bench_link};
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{
    Coop, Error, PREFIX_STEM, Topology, cleanup, find_socket, live_prefixes, netns, parse_duration,
    parse_rate, request,
};

const USAGE: &str = "\
linkpool-testbed: co-ops in network namespaces with emulated links

usage:
  linkpool-testbed up [--pool] [TOPOLOGY.toml]
                                         build it (default: the demo's coop3), print names and
                                         addresses, wait for Ctrl-C, SIGTERM or `down`;
                                         --pool: also start the proxy and a gateway on every
                                         router (LAN clients then go through linkpool, over
                                         their own line and their neighbours', all sharing
                                         on the mesh) and wait until every gateway is
                                         connected
  linkpool-testbed down                  tear a running `up` down, as Ctrl-C would
  linkpool-testbed link NAME [upstream|downstream] SETTING...
                                         change a running link (rN-wan, rN-wan2 for a second
                                         ISP link, rN-mesh, proxy, internet; both directions
                                         unless one is named): delay=30ms jitter=2ms loss=1%
                                         rate=20mbit queue=100ms, or down / up
  linkpool-testbed links                 the running links with parameters and counters
  linkpool-testbed exec ROLE -- CMD...   run CMD in a running node (r1, c1, proxy, internet, core)
  linkpool-testbed cleanup [--all]       remove leftovers of runs that are no longer alive
                                         (--all: also of live ones)
  linkpool-testbed attack capture --out FILE [--from proxy] [--device eth0] [--source ADDR]
                         [--timeout 60s]
                                         keep the next handshake initiation a real gateway
                                         sends to the proxy's port (AF_PACKET on the device)
  linkpool-testbed attack random|replay|mangled|mac1 [--rate 20000] [--duration 5s]
                         [--from attacker] [--to 203.0.113.10:7117] [--sources 1]
                         [--packet FILE] [--bundle FILE | --proxy-key BASE64]
                                         flood the proxy from a node (the attacker host,
                                         wired straight to the proxy; datagrams per second,
                                         paced, reports the rate reached): random datagrams,
                                         exact copies of a captured initiation (--packet),
                                         exact/truncated/bit-flipped copies of it, or
                                         initiations with random keys and a valid mac1
                                         (the proxy's key from --bundle or --proxy-key)
  linkpool-testbed bench [--scenario FILE.toml|NAME]... [--seconds N] [--json FILE] [--cc cubic]
                                         the scenario benchmark: for each scenario (default:
                                         the built-in ones, testbed/scenarios/*.toml; a
                                         scenario is a file or a built-in's name, repeat
                                         --scenario or give a comma-separated list) one
                                         TCP download, 8 at once and a UDP flow through
                                         linkpool against kernel MPTCP and each path alone
                                         over the same emulated links, the failover gap
                                         across the scenario's events, RTT idle and under
                                         load, the daemons' CPU per GB; prints Markdown
                                         tables, --json writes every figure; --seconds:
                                         each transfer's length (event times scaled);
                                         --cc: the senders' TCP congestion control
                                         (default cubic)
  linkpool-testbed bench-pool [--rate 100mbit|unlimited] [--delay 10ms]
                                         throughput through linkpool against the same
                                         uplink used directly, memory and CPU of the daemons
  linkpool-testbed bench-failover [--runs 3]
                                         the failover gap when r1's active WAN dies (co-op
                                         twowan: 20mbit/10ms + 10mbit/30ms): a TCP download
                                         and a ping flood through linkpool against kernel
                                         MPTCP over the same links, longest stall per run
  linkpool-testbed bench-link [--delay 10ms] [--load 100mbit] [--pings 500]
                                         print the emulator's delay accuracy
  linkpool-testbed demo                  the linkpool demo
options:
  --prefix lptPID-N                      which run (down, link, links, exec, cleanup)
  --version, --help
";

fn main() -> ExitCode {
    // With panic=abort (release builds) no destructor runs: remove our namespaces here.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        for prefix in live_prefixes() {
            let _ = cleanup(Some(&prefix), true);
        }
    }));
    let code = run();
    let _exiting = EXITING.lock();
    match code {
        Ok(code) => code,
        Err(e) => {
            eprintln!("linkpool-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut command: Option<String> = None;
    let mut positional: Vec<String> = Vec::new();
    let mut prefix: Option<String> = None;
    let mut all = false;
    let mut with_pool = false;
    let mut bench = BenchOptions::default();
    let mut bench_rate: Option<u64> = None;
    let mut runs: Option<usize> = None;
    let mut scenarios: Vec<String> = Vec::new();
    let mut json_out: Option<PathBuf> = None;
    let mut seconds: Option<Duration> = None;
    let mut cc: Option<String> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let bad = |e: lexopt::Error| Error::new(format!("{e}\n\n{USAGE}"));
    while let Some(arg) = parser.next().map_err(bad)? {
        match arg {
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Long("version") => {
                println!("linkpool-testbed {}", env!("CARGO_PKG_VERSION"));
                return Ok(ExitCode::SUCCESS);
            }
            Long("prefix") => prefix = Some(parser.value().map_err(bad)?.string().map_err(bad)?),
            Long("all") => all = true,
            Long("pool") => with_pool = true,
            Long("delay") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                bench.delay =
                    parse_duration(&v).map_err(|e| Error::new(format!("--delay: {e}")))?;
            }
            Long("load") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                bench.load_bps = parse_rate(&v)
                    .map_err(|e| Error::new(format!("--load: {e}")))?
                    .ok_or_else(|| Error::new("--load: give a rate such as 100mbit"))?;
            }
            Long("rate") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                bench_rate = Some(
                    parse_rate(&v)
                        .map_err(|e| Error::new(format!("--rate: {e}")))?
                        .unwrap_or(0),
                );
            }
            Long("runs") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                runs = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| (1..=100).contains(&n))
                        .ok_or_else(|| {
                            Error::new(format!("--runs: `{v}` is not a number from 1 to 100"))
                        })?,
                );
            }
            Long("scenario") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                scenarios.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
            Long("json") => json_out = Some(parser.value().map_err(bad)?.into()),
            Long("cc") => cc = Some(parser.value().map_err(bad)?.string().map_err(bad)?),
            Long("seconds") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                let max = linkpool_testbed::scenario::MAX_SECONDS;
                let n: f64 = v
                    .parse()
                    .ok()
                    .filter(|n| (1.0..=max).contains(n))
                    .ok_or_else(|| {
                        Error::new(format!("--seconds: `{v}` is not a number from 1 to {max}"))
                    })?;
                seconds = Some(Duration::from_secs_f64(n));
            }
            Long("pings") => {
                let v = parser.value().map_err(bad)?.string().map_err(bad)?;
                bench.pings = v
                    .parse()
                    .ok()
                    .filter(|&n| (10..=100_000).contains(&n))
                    .ok_or_else(|| {
                        Error::new(format!("--pings: `{v}` is not a number from 10 to 100000"))
                    })?;
            }
            Value(v) if command.is_none() => command = Some(v.string().map_err(bad)?),
            Value(v) => {
                let v = v.string().map_err(bad)?;
                if v == "--" {
                    rest.extend(parser.raw_args().map_err(bad)?);
                } else {
                    positional.push(v);
                }
            }
            Short('-') => {}
            _ => return Err(bad(arg.unexpected())),
        }
        if command.as_deref() == Some("attack") {
            // `attack` has options of its own (`--rate` is datagrams per second there).
            rest = parser.raw_args().map_err(bad)?.collect();
            break;
        }
        if command.as_deref() == Some("exec") && positional.len() == 1 {
            // Everything after the role (and an optional `--`) is the command.
            let raw: Vec<OsString> = parser.raw_args().map_err(bad)?.collect();
            rest = raw;
            if rest.first().is_some_and(|a| a == "--") {
                rest.remove(0);
            }
            if rest.first().is_some_and(|a| a == "--prefix") && rest.len() >= 2 {
                prefix = Some(rest[1].to_string_lossy().into_owned());
                rest.drain(..2);
                if rest.first().is_some_and(|a| a == "--") {
                    rest.remove(0);
                }
            }
            break;
        }
    }
    if runs.is_some() && command.as_deref() != Some("bench-failover") {
        return Err(Error::new(format!(
            "--runs goes with `bench-failover` only\n\n{USAGE}"
        )));
    }
    if (!scenarios.is_empty() || json_out.is_some() || seconds.is_some() || cc.is_some())
        && command.as_deref() != Some("bench")
    {
        return Err(Error::new(format!(
            "--scenario, --seconds, --json and --cc go with `bench` only\n\n{USAGE}"
        )));
    }
    if with_pool && command.as_deref() != Some("up") {
        return Err(Error::new(format!("--pool goes with `up` only\n\n{USAGE}")));
    }
    match command.as_deref() {
        Some("up") => {
            let topology = match positional.as_slice() {
                [] => Topology::parse(linkpool_testbed::demo::COOP3, "topologies/coop3.toml")?,
                [path] => Topology::from_file(&PathBuf::from(path))?,
                _ => {
                    return Err(Error::new(format!(
                        "up: give at most one topology file\n\n{USAGE}"
                    )));
                }
            };
            up(topology, with_pool, handle_signals())
        }
        Some("down") => {
            if !positional.is_empty() {
                return Err(Error::new(
                    "down: takes no arguments (--prefix picks the run)",
                ));
            }
            down(prefix.as_deref())
        }
        Some("link") => {
            if positional.len() < 2 {
                return Err(Error::new(
                    "link: give a link name and settings, e.g. `link r1-wan delay=30ms loss=1%`",
                ));
            }
            let socket = find_socket(prefix.as_deref())?;
            print!(
                "{}",
                request(&socket, &format!("link {}", positional.join(" ")))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("links") => {
            let socket = find_socket(prefix.as_deref())?;
            print!("{}", request(&socket, "links")?);
            Ok(ExitCode::SUCCESS)
        }
        Some("exec") => {
            let [role] = positional.as_slice() else {
                return Err(Error::new(
                    "exec: give a role and a command, e.g. `exec c1 -- ping 198.51.100.80`",
                ));
            };
            if rest.is_empty() {
                return Err(Error::new("exec: give a command after the role"));
            }
            let socket = find_socket(prefix.as_deref())?;
            let ns = request(&socket, &format!("ns {role}"))?;
            let err = std::process::Command::new("ip")
                .args(["netns", "exec", ns.trim()])
                .args(&rest)
                .exec();
            Err(Error::new(format!("cannot run ip netns exec: {err}")))
        }
        Some("cleanup") => {
            let report = cleanup(prefix.as_deref(), all)?;
            println!(
                "removed {} namespaces ({} processes killed), {} run directories",
                report.namespaces.len(),
                report.processes,
                report.run_dirs.len()
            );
            for ns in &report.namespaces {
                println!("  {ns}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("attack") => {
            let _signals = handle_signals();
            attack(rest, prefix)
        }
        Some("bench") => {
            if !positional.is_empty() {
                return Err(Error::new(format!(
                    "bench: give scenarios with --scenario FILE.toml\n\n{USAGE}"
                )));
            }
            let _signals = handle_signals();
            bench_command(&scenarios, seconds, json_out, cc)
        }
        Some("bench-pool") => {
            let _signals = handle_signals();
            let mut options = linkpool_testbed::bench::PoolBenchOptions::default();
            if let Some(r) = bench_rate {
                options.rate_bps = r;
            }
            options.delay = bench.delay;
            print!("{}", linkpool_testbed::bench::bench_pool(&options)?);
            Ok(ExitCode::SUCCESS)
        }
        Some("bench-failover") => {
            let _signals = handle_signals();
            let mut options = linkpool_testbed::failover_bench::FailoverBenchOptions::default();
            if let Some(n) = runs {
                options.runs = n;
            }
            let report = linkpool_testbed::failover_bench::bench_failover(&options, |line| {
                println!("{line}")
            })?;
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        Some("bench-link") => {
            let _signals = handle_signals();
            print!("{}", bench_link(&bench)?);
            Ok(ExitCode::SUCCESS)
        }
        Some("demo") => {
            let _signals = handle_signals();
            linkpool_testbed::demo::run()?;
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(Error::new(format!("unknown command `{other}`\n\n{USAGE}"))),
        None => Err(Error::new(format!("give a command\n\n{USAGE}"))),
    }
}

/// `bench`: resolves the scenarios (files, or built-in names; none: every built-in one),
/// runs them, prints the tables and writes the JSON. Fails when a scenario could not be
/// measured (after printing and writing what was).
fn bench_command(
    names: &[String],
    seconds: Option<Duration>,
    json_out: Option<PathBuf>,
    cc: Option<String>,
) -> Result<ExitCode, Error> {
    use linkpool_testbed::scenario::{BUILTIN, Scenario};
    use linkpool_testbed::scenario_bench::{ScenarioBenchOptions, bench_scenarios};
    let scenarios = if names.is_empty() {
        Scenario::builtin()?
    } else {
        names
            .iter()
            .map(|name| {
                let path = PathBuf::from(name);
                if path.is_file() {
                    Scenario::from_file(&path)
                } else if let Some(s) = Scenario::builtin_named(name) {
                    s
                } else {
                    Err(Error::new(format!(
                        "--scenario: `{name}` is neither a file nor a built-in scenario ({})",
                        BUILTIN
                            .iter()
                            .map(|(f, _)| f.trim_end_matches(".toml"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    // Fail on an unwritable JSON file now, not after a quarter of an hour.
    if let Some(path) = &json_out {
        std::fs::write(path, "")
            .map_err(|e| Error::new(format!("--json {}: {e}", path.display())))?;
    }
    let congestion_control =
        cc.unwrap_or_else(|| ScenarioBenchOptions::DEFAULT_CONGESTION_CONTROL.to_string());
    if congestion_control.is_empty()
        || !congestion_control
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::new(format!(
            "--cc: `{congestion_control}` is not a congestion control name (cubic, bbr, reno, ...)"
        )));
    }
    let options = ScenarioBenchOptions {
        scenarios,
        seconds,
        congestion_control,
    };
    let report = bench_scenarios(&options, |line| println!("{line}"))?;
    println!();
    print!("{}", report.table());
    if let Some(path) = &json_out {
        let text = serde_json::to_string_pretty(&report.json())
            .map_err(|e| Error::new(format!("--json: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Error::new(format!("--json {}: {e}", path.display())))?;
        println!("figures written to {}", path.display());
    }
    if report.complete() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::new(
            "bench: some scenarios could not be measured (see the notes)",
        ))
    }
}

/// Set while `up` waits for its signal; otherwise a signal means "clean up and exit now".
static UP_WAITING: AtomicBool = AtomicBool::new(false);
/// Taken by the signal thread while it cleans up and exits, and by `main` before returning.
static EXITING: Mutex<()> = Mutex::new(());

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread (threads inherit the mask; children
/// get a clean mask from std) and takes them on a dedicated thread: `up` gets them through
/// the returned channel for an orderly teardown; during a build, `bench-link` or `demo`
/// the run's namespaces and processes are removed and the process exits.
fn handle_signals() -> mpsc::Receiver<i32> {
    let (tx, rx) = mpsc::channel();
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the calling thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        loop {
            let mut signal: libc::c_int = 0;
            // SAFETY: set is a valid sigset; signal receives the number.
            if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                continue;
            }
            if UP_WAITING.load(Ordering::Acquire) {
                let _ = tx.send(signal);
                continue;
            }
            // Held until exit: main must not return (with the error of a command whose
            // processes we just killed) before the cleanup is complete.
            let _exiting = EXITING.lock();
            eprintln!("linkpool-testbed: signal {signal}: removing the namespaces of this run");
            for prefix in live_prefixes() {
                let _ = cleanup(Some(&prefix), true);
            }
            std::process::exit(128 + signal);
        }
    });
    rx
}

/// Builds the co-op (and with `with_pool` starts linkpool on it) and waits for
/// SIGINT/SIGTERM/SIGHUP; tears down either way.
fn up(
    topology: Topology,
    with_pool: bool,
    signals: mpsc::Receiver<i32>,
) -> Result<ExitCode, Error> {
    let mut coop = Coop::build(&topology)?;
    coop.add_attacker()?;
    let socket = coop.serve_control()?;
    print!("{}", coop.describe());
    println!("control socket {}", socket.display());
    let mut pool = None;
    if with_pool {
        println!("starting linkpool: the proxy, then a gateway on every router...");
        pool = Some(Pool::start_reporting_sharing(&coop, true, |line| {
            println!("  {line}")
        })?);
        println!(
            "every gateway is connected: LAN clients reach the internet through the proxy ({})",
            coop.proxy().addr_v4()
        );
    }
    UP_WAITING.store(true, Ordering::Release);
    println!(
        "ready; Ctrl-C, SIGTERM or `linkpool-testbed down --prefix {}` tears everything down",
        coop.prefix()
    );
    let signal = signals.recv().unwrap_or(0);
    println!("signal {signal}: tearing down {}", coop.prefix());
    if let Some(mut pool) = pool {
        // Gateways first, each cleaning up after itself, then the proxy.
        for g in pool.gateways.iter_mut().rev() {
            let _ = g.stop(Duration::from_secs(2));
        }
        if let Some(p) = pool.proxy.as_mut() {
            let _ = p.stop(Duration::from_secs(2));
        }
    }
    coop.teardown();
    Ok(ExitCode::SUCCESS)
}

/// Tears down a running `up`: SIGTERM to its process (the pid is in the run's prefix,
/// `lpt<pid>-<n>`), then waits until its namespaces are gone and it has exited.
fn down(prefix: Option<&str>) -> Result<ExitCode, Error> {
    let socket = find_socket(prefix)?;
    let run = socket
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid: i32 = run
        .strip_prefix(PREFIX_STEM)
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::new(format!("down: `{run}` is not a run prefix (lpt<pid>-<n>)")))?;
    let running = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.starts_with(" Z"))
        })
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_up = argv
        .first()
        .is_some_and(|a| a.ends_with("linkpool-testbed"))
        && argv.iter().any(|a| a == "up");
    if !running(pid) || !is_up {
        return Err(Error::new(format!(
            "down: run {run} is not held by a running `linkpool-testbed up` (process {pid}: {}); \
             `linkpool-testbed cleanup --prefix {run}` removes its leftovers",
            if argv.join(" ").trim().is_empty() {
                "gone".to_string()
            } else {
                argv.join(" ")
            }
        )));
    }
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(Error::new(format!(
            "down: cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mine = format!("{run}-");
    loop {
        let left = netns::list()
            .iter()
            .filter(|n| n.starts_with(&mine))
            .count();
        if left == 0 && !running(pid) {
            println!("{run}: torn down");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "down: {run} still has {left} namespaces 60 s after SIGTERM (process {pid} {})",
                if running(pid) { "still runs" } else { "exited" }
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `attack capture ...` and `attack KIND ...`, against a running `up`.
fn attack(args: Vec<OsString>, mut prefix: Option<String>) -> Result<ExitCode, Error> {
    use lexopt::prelude::*;
    use linkpool_testbed::attack::{self, Capture, FloodKind, FloodSpec};
    use linkpool_testbed::pool::PROXY_PORT;
    let mut parser = lexopt::Parser::from_args(args);
    let bad = |e: lexopt::Error| Error::new(format!("attack: {e}\n\n{USAGE}"));
    let mut what: Option<String> = None;
    let mut from: Option<String> = None;
    let mut device = "eth0".to_string();
    let mut out: Option<PathBuf> = None;
    let mut source: Option<std::net::IpAddr> = None;
    let mut timeout = std::time::Duration::from_secs(60);
    let mut to: std::net::SocketAddr = ([203, 0, 113, 10], PROXY_PORT).into();
    let mut rate: u64 = 20_000;
    let mut duration = std::time::Duration::from_secs(5);
    let mut sources = 1;
    let mut packet: Option<PathBuf> = None;
    let mut bundle: Option<PathBuf> = None;
    let mut proxy_key: Option<String> = None;
    let value = |parser: &mut lexopt::Parser| -> Result<String, Error> {
        parser.value().map_err(bad)?.string().map_err(bad)
    };
    while let Some(arg) = parser.next().map_err(bad)? {
        match arg {
            Long("prefix") => prefix = Some(value(&mut parser)?),
            Long("from") => from = Some(value(&mut parser)?),
            Long("device") => device = value(&mut parser)?,
            Long("out") => out = Some(value(&mut parser)?.into()),
            Long("packet") => packet = Some(value(&mut parser)?.into()),
            Long("bundle") => bundle = Some(value(&mut parser)?.into()),
            Long("proxy-key") => proxy_key = Some(value(&mut parser)?),
            Long("source") => {
                let v = value(&mut parser)?;
                source =
                    Some(v.parse().map_err(|_| {
                        Error::new(format!("--source: `{v}` is not an IP address"))
                    })?);
            }
            Long("to") => {
                let v = value(&mut parser)?;
                to = v.parse().map_err(|_| {
                    Error::new(format!("--to: `{v}` is not ADDRESS:PORT ([v6]:port)"))
                })?;
            }
            Long("timeout") => {
                timeout = parse_duration(&value(&mut parser)?)
                    .map_err(|e| Error::new(format!("--timeout: {e}")))?;
            }
            Long("duration") => {
                duration = parse_duration(&value(&mut parser)?)
                    .map_err(|e| Error::new(format!("--duration: {e}")))?;
            }
            Long("rate") => {
                let v = value(&mut parser)?;
                rate = v.trim_end_matches("/s").parse().map_err(|_| {
                    Error::new(format!("--rate: `{v}` is not datagrams per second"))
                })?;
            }
            Long("sources") => {
                let v = value(&mut parser)?;
                sources = v
                    .parse()
                    .map_err(|_| Error::new(format!("--sources: `{v}` is not a number")))?;
            }
            Value(v) if what.is_none() => what = Some(v.string().map_err(bad)?),
            _ => return Err(bad(arg.unexpected())),
        }
    }
    let socket = find_socket(prefix.as_deref())?;
    let ns_of = |role: &str| -> Result<String, Error> {
        Ok(request(&socket, &format!("ns {role}"))?.trim().to_string())
    };
    match what.as_deref() {
        Some("capture") => {
            let out = out.ok_or_else(|| Error::new("attack capture: give --out FILE"))?;
            let role = from.unwrap_or_else(|| "proxy".into());
            let mut capture = Capture::open(&ns_of(&role)?, &device, to.port())?;
            if let Some(s) = source {
                capture = capture.from_source(s);
            }
            println!("waiting up to {timeout:?} for a handshake initiation on {role} {device}");
            let c = capture.next_initiation(timeout)?;
            std::fs::write(&out, &c.payload)
                .map_err(|e| Error::new(format!("{}: {e}", out.display())))?;
            println!(
                "captured a {}-byte initiation from {} to {} into {}",
                c.payload.len(),
                c.from,
                c.to,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(kind) => {
            let kind: FloodKind = kind.parse()?;
            let mut spec = FloodSpec::new(kind, to, rate, duration);
            spec.sources = sources;
            if let Some(p) = packet {
                spec.packet = Some(
                    std::fs::read(&p).map_err(|e| Error::new(format!("{}: {e}", p.display())))?,
                );
            }
            spec.proxy_key = match (bundle, proxy_key) {
                (Some(b), _) => Some(attack::proxy_key_from_bundle(&b)?),
                (None, Some(k)) => Some(
                    linkpool_protocol::keys::PublicKey::from_base64(&k)
                        .map_err(|e| Error::new(format!("--proxy-key: {e}")))?,
                ),
                (None, None) => None,
            };
            let role = from.unwrap_or_else(|| "attacker".into());
            let stop = AtomicBool::new(false);
            let report = attack::flood(&ns_of(&role)?, &spec, &stop)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        None => Err(Error::new(format!(
            "attack: give capture or a flood kind (random, replay, mangled, mac1)\n\n{USAGE}"
        ))),
    }
}
