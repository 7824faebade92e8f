//! Faults on the real daemons in a namespace co-op: a crashed proxy, a proxy that drops off
//! the network. Run as root; these fail, never skip, when the testbed cannot be built.
//! Each test prints the figures it measures (`--nocapture` shows them).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::coop1;
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Node};

/// Retries `f` every `step` until it succeeds or `timeout` passes.
fn eventually(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(step);
    }
    false
}

/// One ping from `node` to the internet host gets an answer within a second.
fn reaches_internet(coop: &Coop, node: &Node) -> bool {
    let target = coop.internet().addr_v4().to_string();
    node.exec_ok(&["ping", "-n", "-c", "1", "-W", "1", &target])
        .is_ok()
}

/// The proxy's connection tracking table (for failure messages and `--nocapture`).
fn conntrack(coop: &Coop) -> String {
    match coop.proxy().exec(&["conntrack", "-L"]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("conntrack -L: {e}"),
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// CPU time (user + system) of process `pid` so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    Duration::from_secs_f64(linkpool_testbed::cpu_seconds(pid))
}

/// A download from the internet host runs while the proxy is killed (SIGKILL: no cleanup)
/// and started again 0.5 s later with the same configuration. The download's TCP
/// connection must survive it: it resumes by itself within 2 s of the restart and completes
/// with the right bytes. (It used to stay at 0 bit/s for good: the proxy's start-up removed
/// its leftover NAT table in one nft transaction and added it back in the next, conntrack
/// went off and on in between and lost the flow's window state, and the member's ACKs were
/// then INVALID and left unmasqueraded.)
#[test]
fn a_download_survives_a_proxy_kill_and_restart() {
    let coop = coop1();
    // Slow enough that the download is still running when the proxy dies.
    let wan = coop.link(&coop.router(1).wan_link()).unwrap();
    wan.apply(&["rate=20mbit"]).unwrap();
    let mut pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    assert!(eventually(
        Duration::from_secs(5),
        Duration::from_millis(250),
        || reaches_internet(&coop, client)
    ));
    let net = coop.internet();
    // About 16 s at 20 Mbit/s.
    let file = net.serve_file("big.bin", 40 << 20).unwrap();
    let out = coop.run_dir().join("big.download");
    let mut curl = client
        .spawn(&[
            "curl",
            "-sS",
            "--fail",
            "-m",
            "120",
            "-o",
            out.to_str().unwrap(),
            &net.url_v4(&file.path()),
        ])
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), Duration::from_millis(20), || {
            file_len(&out) > 6 << 20
        }),
        "the download did not get going\n{}\n{}",
        curl.log(),
        pool.logs()
    );
    let before = conntrack(&coop);

    let killed = Instant::now();
    let at_kill = file_len(&out);
    let old = pool.proxy.take().unwrap();
    let old_log = old.log();
    drop(old); // SIGKILL, reaped
    std::thread::sleep(Duration::from_millis(500));
    let stalled = file_len(&out);
    // What the server sent meanwhile, de-NATed to the member, was dropped at the proxy
    // host by the NAT table the crash left, not sent out its default route.
    let guard = coop
        .proxy()
        .exec_ok(&[
            "nft",
            "list",
            "chain",
            "inet",
            "linkpool_proxy",
            "pool_guard",
        ])
        .unwrap();
    let guarded: u64 = guard
        .split("counter packets ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        guarded > 0,
        "no reply for the member was stopped while the proxy was down:\n{guard}"
    );
    pool.start_proxy(&coop).unwrap();
    let restarted = Instant::now();
    let after_restart = conntrack(&coop);

    // Resumed: bytes flow into the file again. Also noted: when the gateway has its new
    // session (what the resumption waits for first; the sender's retransmission timer is
    // the rest).
    let sessions = |pool: &Pool| {
        pool.gateways[0]
            .log()
            .matches("session with the proxy established")
            .count()
    };
    let sessions_before = sessions(&pool);
    let mut session_back = None;
    let resumed = eventually(Duration::from_secs(60), Duration::from_millis(10), || {
        if session_back.is_none() && sessions(&pool) > sessions_before {
            session_back = Some(restarted.elapsed());
        }
        file_len(&out) > stalled + 64 * 1024
    });
    let resumed_at = Instant::now();
    let resume = resumed_at - restarted;
    let later = conntrack(&coop);
    let sockets = format!(
        "internet host: {}\nclient: {}\nproxy status: {}\ngateway status: {}",
        net.exec_ok(&["ss", "-tin"]).unwrap_or_default(),
        client.exec_ok(&["ss", "-tin"]).unwrap_or_default(),
        pool.proxy_status(&coop, true).unwrap_or_default(),
        pool.gateway_status(&coop, 1, true).unwrap_or_default(),
    );
    let finished = curl.wait_timeout(Duration::from_secs(100)).unwrap();
    let diag = || {
        format!(
            "curl: {}\nproxy conntrack before the kill:\n{before}\njust after the restart:\n\
             {after_restart}\nafter the resume (or not):\n{later}\n{sockets}\n--- old proxy\n{old_log}\n{}",
            curl.log(),
            pool.logs()
        )
    };
    assert!(resumed, "the download never resumed\n{}", diag());
    eprintln!(
        "download resumed {resume:.2?} after the proxy's restart ({:.2?} after the kill; \
         the gateway's new session {} after the restart); \
         {at_kill} of {} bytes were in when it was killed",
        resumed_at - killed,
        session_back.map_or("not seen".into(), |d| format!("{d:.2?}")),
        file.size
    );
    let status = finished.unwrap_or_else(|| panic!("the download did not finish\n{}", diag()));
    assert!(status.success(), "curl failed ({status})\n{}", diag());
    let got = client
        .exec_ok(&["sha256sum", out.to_str().unwrap()])
        .unwrap();
    assert_eq!(
        got.split_whitespace().next().unwrap_or_default(),
        file.sha256,
        "the download is corrupted\n{}",
        diag()
    );
    assert!(
        resume <= Duration::from_secs(2),
        "the download resumed only {resume:.2?} after the proxy's restart (at most 2 s)\n{}",
        diag()
    );
    drop(curl);
}

/// The proxy's link goes down for 30 s. The gateway must stay idle meanwhile (no timer
/// spinning: under 2 % of a core) and the member recover by itself once the link is back
/// (within 10 s: the gateway's longest handshake backoff is 8 s).
#[test]
fn a_30s_proxy_outage_costs_the_gateway_no_cpu_and_the_member_recovers() {
    let coop = coop1();
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    assert!(eventually(
        Duration::from_secs(5),
        Duration::from_millis(250),
        || reaches_internet(&coop, client)
    ));
    let link = coop.link("proxy").unwrap();
    let pid = pool.gateways[0].pid();

    link.down();
    let (start, cpu_start) = (Instant::now(), cpu_time(pid));
    std::thread::sleep(Duration::from_secs(30));
    let (wall, cpu) = (start.elapsed(), cpu_time(pid) - cpu_start);
    link.up();
    let back = Instant::now();
    let percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!("gateway CPU during the {wall:.1?} outage: {cpu:.2?}, {percent:.2} % of a core");
    let recovered = eventually(Duration::from_secs(10), Duration::from_millis(100), || {
        reaches_internet(&coop, client)
    });
    eprintln!(
        "member reached the internet {:.2?} after the link came back",
        back.elapsed()
    );
    assert!(
        recovered,
        "no traffic 10 s after the link came back\n{}",
        pool.logs()
    );
    assert!(
        percent < 2.0,
        "the gateway used {percent:.1} % of a core while the proxy was unreachable"
    );
}
