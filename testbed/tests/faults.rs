//! Faults on the real daemons in a namespace co-op: a crashed proxy, a proxy that drops off
//! the network. Run as root; these fail, never skip, when the testbed cannot be built.
//! Each test prints the figures it measures (`--nocapture` shows them).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::coop1;
use linkpool_protocol::session::Limits;
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

/// Whether `needle` occurs in `log` past its first `skip` bytes (what was logged since).
fn appears_after(log: &str, skip: usize, needle: &str) -> bool {
    log.get(skip..).is_some_and(|rest| rest.contains(needle))
}

/// The proxy's link goes down for 30 s. The gateway must notice within `dead_after` (its
/// log says the session was lost; its status shows it lost, not connected, for the rest
/// of the outage), stay idle meanwhile (no timer spinning: under 2 % of a core), and the
/// member recover by itself once the link is back: its pings pass again within 3 s (it
/// still holds the session's keys and the proxy never lost them, so the first packet
/// should do; 0.56 s was measured before).
#[test]
fn a_30s_proxy_outage_costs_the_gateway_no_cpu_and_the_member_recovers() {
    const OUTAGE: Duration = Duration::from_secs(30);
    const LOST: &str = "session with the proxy lost";
    let dead_after = Limits::default().dead_after;
    // Time for the timer to fire and the line to reach the log file, and for this loop to
    // see it (it looks every 20 ms).
    let noticed_slack = Duration::from_millis(500);
    let max_recovery = Duration::from_secs(3);

    let coop = coop1();
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let client = coop.client(1);
    assert!(eventually(
        Duration::from_secs(5),
        Duration::from_millis(250),
        || reaches_internet(&coop, client)
    ));
    let link = coop.link("proxy").unwrap();
    let gw = &pool.gateways[0];
    let pid = gw.pid();
    let status = || {
        pool.gateway_status(&coop, 1, true)
            .unwrap_or_else(|e| panic!("linkpool status: {e}"))
    };
    let up_status = status();
    assert!(
        up_status.contains("\"session\":\"up\"") && up_status.contains("\"connected\":true"),
        "before the outage the gateway's status should say connected: {up_status}"
    );
    let log_before = gw.log().len();

    link.down();
    let (start, cpu_start) = (Instant::now(), cpu_time(pid));
    // Noticed: the log line, then the status.
    let mut noticed = None;
    while start.elapsed() < dead_after + Duration::from_secs(5) {
        if appears_after(&gw.log(), log_before, LOST) {
            noticed = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let lost_status = status();
    std::thread::sleep(OUTAGE.saturating_sub(start.elapsed() + Duration::from_secs(2)));
    let late_status = status();
    std::thread::sleep(OUTAGE.saturating_sub(start.elapsed()));
    let (wall, cpu) = (start.elapsed(), cpu_time(pid) - cpu_start);

    // Recovery: pings every 20 ms, started just before the link is back, each reply
    // stamped with the wall clock (-D); the first reply's stamp is when the member got
    // through.
    let target = coop.internet().addr_v4().to_string();
    let mut ping = client
        .spawn(&[
            "ping", "-n", "-D", "-i", "0.02", "-W", "1", "-w", "11", &target,
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let back_wall = std::time::SystemTime::now();
    link.up();
    let back = Instant::now();
    let first_reply = || {
        ping.log()
            .lines()
            .find(|l| l.contains("bytes from"))
            .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
    };
    let mut replied_at = None;
    while back.elapsed() < Duration::from_secs(10) && replied_at.is_none() {
        replied_at = first_reply();
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovery = replied_at.map(|t| {
        let up = back_wall
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        Duration::from_secs_f64((t - up).max(0.0))
    });
    let answers_again = gw
        .log()
        .get(log_before..)
        .is_some_and(|l| l.contains("the proxy answers again"));
    let _ = ping.stop(Duration::from_secs(1));
    let recovered_status = pool.gateway_status(&coop, 1, true).unwrap_or_default();

    let percent = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "outage: the gateway logged `{LOST}` {} after the link went down (dead_after {dead_after:?})",
        noticed.map_or("never".into(), |d| format!("{d:.2?}"))
    );
    eprintln!("gateway CPU during the {wall:.1?} outage: {cpu:.2?}, {percent:.2} % of a core");
    eprintln!(
        "member recovered (first ping reply) {} after the link came back; the gateway logged \
         `the proxy answers again`: {answers_again}",
        recovery.map_or("never (10 s)".into(), |d| format!("{d:.2?}"))
    );
    let logs = || format!("{}\n--- ping\n{}", pool.logs(), ping.log());
    let noticed = noticed.unwrap_or_else(|| {
        panic!(
            "the gateway never logged `{LOST}` within {:?} of the outage\n{}",
            dead_after + Duration::from_secs(5),
            logs()
        )
    });
    assert!(
        noticed <= dead_after + noticed_slack,
        "the gateway noticed the dead proxy only {noticed:.2?} into the outage (dead_after \
         {dead_after:?})\n{}",
        logs()
    );
    for (when, s) in [
        ("just after", &lost_status),
        ("late in the outage", &late_status),
    ] {
        assert!(
            s.contains("\"session\":\"lost\"") && s.contains("\"connected\":false"),
            "{when} the gateway noticed, its status does not show the session lost: {s}"
        );
    }
    let recovery = recovery.unwrap_or_else(|| {
        panic!(
            "no ping got through within 10 s of the link coming back\n{}",
            logs()
        )
    });
    assert!(
        recovery <= max_recovery,
        "the member needed {recovery:.2?} to reach the internet again (at most {max_recovery:?})\n{}",
        logs()
    );
    assert!(
        recovered_status.contains("\"connected\":true"),
        "after recovery the gateway's status does not say connected: {recovered_status}"
    );
    assert!(
        percent < 2.0,
        "the gateway used {percent:.1} % of a core while the proxy was unreachable"
    );
}

/// A gateway whose bundle the proxy does not know (a removed member's: the proxy runs and
/// receives every initiation, but answers none) must say so: after
/// `UNANSWERED_LOG_AFTER` (15 s in gateway/src/daemon.rs) its log warns that handshakes go
/// unanswered, and its status counts the initiations it sent and those unanswered.
#[test]
fn a_gateway_whose_handshakes_go_unanswered_says_so() {
    const WARNING: &str = "handshakes to the proxy at";
    let coop = coop1();
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    let stranger = pool
        .add_member("stranger")
        .unwrap_or_else(|e| panic!("{e}"));
    pool.remove_member("stranger")
        .unwrap_or_else(|e| panic!("{e}"));
    pool.give_bundle(1, &stranger)
        .unwrap_or_else(|e| panic!("{e}"));
    pool.start_proxy(&coop).unwrap_or_else(|e| panic!("{e}"));
    let conf = pool.gateway_config(1);
    let started = Instant::now();
    let gw = coop
        .router(1)
        .spawn(&[
            pool.linkpool_bin().to_str().unwrap(),
            "run",
            "-c",
            conf.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    pool.gateways.push(gw);
    let gw = &mut pool.gateways[0];
    let waited = gw
        .wait_for_log(WARNING, Duration::from_secs(25))
        .map(|()| started.elapsed());
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_default()
        .to_string();
    let json = pool.gateway_status(&coop, 1, true);
    let text = pool.gateway_status(&coop, 1, false).unwrap_or_default();
    let proxy = pool.proxy_status(&coop, true).unwrap_or_default();
    eprintln!(
        "unanswered handshakes: warning {} after the gateway's start: {line}\nstatus: {text}",
        match &waited {
            Ok(d) => format!("{d:.1?}"),
            Err(_) => "never".into(),
        }
    );
    if let Err(e) = waited {
        panic!("{e}\n{}", pool.logs());
    }
    assert!(
        line.contains("unanswered in"),
        "the warning does not say the handshakes went unanswered: {line}"
    );
    let json = json.unwrap_or_else(|e| panic!("linkpool status: {e}"));
    let number = |key: &str| -> u64 {
        json.split_once(&format!("\"{key}\":"))
            .and_then(|(_, rest)| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no `{key}` number in the status: {json}"))
    };
    let (sent, unanswered) = (number("handshakes_sent"), number("handshakes_unanswered"));
    assert!(sent > 0, "status shows no handshakes sent: {json}");
    assert!(
        unanswered > 0,
        "status shows no unanswered handshakes: {json}"
    );
    assert_eq!(
        number("handshakes_completed"),
        0,
        "the proxy answered a removed member: {json}"
    );
    assert!(
        json.contains("\"connected\":false"),
        "status says connected: {json}"
    );
    assert!(
        text.contains("handshakes unanswered for"),
        "the text status does not show the unanswered handshakes:\n{text}"
    );
    // The initiations did reach the proxy: it refused an unknown member, it was not the
    // network.
    assert!(
        proxy.contains("\"unknown_member\":"),
        "the proxy counted no initiation from an unknown member: {proxy}"
    );
}
