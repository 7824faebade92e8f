//! The `linkpool-proxy` binary: init, member add/list, check-config and run, as an operator
//! uses them. `run` is exercised in a network namespace of its own (needs root; fails,
//! never skips, without it).

use linkpool_os::netns::NetNs;
use linkpool_protocol::bundle::{CipherChoice, MemberBundle};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_linkpool-proxy");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lp-proxy-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn proxy(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run linkpool-proxy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn init(dir: &TempDir) -> PathBuf {
    let config = dir.path("proxy.toml");
    let out = proxy(&[
        "init",
        "-c",
        config.to_str().unwrap(),
        "--endpoint",
        "192.0.2.1:7117",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    config
}

#[test]
fn version() {
    let out = proxy(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("linkpool-proxy {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn keygen_prints_a_key() {
    let out = proxy(&["keygen"]);
    assert!(out.status.success());
    let key = text(&out.stdout);
    linkpool_protocol::keys::SecretKey::from_base64(key.trim()).unwrap();
    assert_ne!(key, text(&proxy(&["keygen"]).stdout), "two keys differ");
}

#[test]
fn init_member_add_list_and_check() {
    let dir = TempDir::new("flow");
    let config = init(&dir);
    let c = config.to_str().unwrap();
    assert_eq!(
        std::fs::metadata(dir.path("proxy.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Refuses to overwrite.
    let again = proxy(&["init", "-c", c, "--endpoint", "192.0.2.1:7117"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    // A comment of the operator's survives member add.
    let mut t = std::fs::read_to_string(&config).unwrap();
    t.push_str("# operator's note: alice is in flat 3\n");
    std::fs::write(&config, &t).unwrap();

    let out = proxy(&["member", "add", "alice", "-c", c]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alice = MemberBundle::parse(&text(&out.stdout)).unwrap();
    assert_eq!(alice.member, "alice");
    assert_eq!(
        alice.addresses,
        [
            "10.77.0.2".parse::<std::net::IpAddr>().unwrap(),
            "fd77::2".parse().unwrap()
        ]
    );
    assert_eq!(alice.proxy_endpoints, ["192.0.2.1:7117"]);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains(&alice.private_key.to_base64()),
        "no key on stderr: {stderr}"
    );

    let out_file = dir.path("bob.bundle");
    let out = proxy(&[
        "member",
        "add",
        "bob",
        "-c",
        c,
        "--out",
        out_file.to_str().unwrap(),
        "--cipher",
        "chacha20-poly1305",
        "--psk",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "the bundle goes to the file only");
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bob = MemberBundle::parse(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(bob.cipher, CipherChoice::ChaCha20Poly1305);
    assert!(bob.psk.is_some());
    assert_eq!(
        bob.addresses[0],
        "10.77.0.3".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(bob.proxy_public_key, alice.proxy_public_key);

    let after = std::fs::read_to_string(&config).unwrap();
    assert!(
        after.starts_with(&t),
        "the file was rewritten, not appended to"
    );
    assert!(after.contains("# operator's note"));

    let dup = proxy(&["member", "add", "bob", "-c", c]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(text(&dup.stderr).contains("member `bob` already exists"));

    let list = proxy(&["member", "list", "-c", c]);
    assert!(list.status.success());
    let list = text(&list.stdout);
    assert!(
        list.contains("alice") && list.contains("10.77.0.2,fd77::2"),
        "{list}"
    );
    assert!(
        list.contains("bob") && list.contains("chacha20-poly1305"),
        "{list}"
    );
    assert!(
        list.contains(&alice.private_key.public_key().to_base64()),
        "{list}"
    );

    let check = proxy(&["check-config", "-c", c]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("ok (2 member(s)"),
        "{}",
        text(&check.stdout)
    );
}

fn assert_one_line_error(out: &Output, starts: &str, contains: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with(starts), "{e}");
    assert!(e.contains(contains), "{e}");
}

#[test]
fn config_errors_are_one_line_with_file_line_key_and_reason() {
    let dir = TempDir::new("errors");
    let config = init(&dir);
    let c = config.to_str().unwrap();
    let good = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, good.replace("mtu = 1381", "mtu = \"big\"")).unwrap();
    let line = good.lines().position(|l| l.starts_with("mtu =")).unwrap() + 1;
    for cmd in ["check-config", "run"] {
        assert_one_line_error(
            &proxy(&[cmd, "-c", c]),
            &format!("linkpool-proxy: {c}:{line}: key `tunnel.mtu`: "),
            "invalid type",
        );
    }
    std::fs::write(&config, good.replace("proxy.key", "missing.key")).unwrap();
    assert_one_line_error(
        &proxy(&["check-config", "-c", c]),
        "linkpool-proxy: ",
        "key `private_key_file`: cannot read",
    );
    std::fs::write(
        &config,
        format!(
            "{good}\n[[member]]\nname = \"x\"\npublic_key = \"AAAA\"\naddress = [\"10.77.0.2\"]\n"
        ),
    )
    .unwrap();
    assert_one_line_error(
        &proxy(&["member", "list", "-c", c]),
        "linkpool-proxy: ",
        "key `member[0].public_key`: decodes to 3 bytes",
    );
    assert_one_line_error(
        &proxy(&["check-config", "-c", "/nonexistent.toml"]),
        "linkpool-proxy: /nonexistent.toml: cannot read",
        "No such file",
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["member"],
        &["member", "add", "x"],
        &["run"],
        &["init", "-c", "x", "--out", "y"],
    ] {
        let out = proxy(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("usage:"));
    }
}

/// A daemon started by a test; killed if the test fails half-way.
struct Daemon(Option<Child>, PathBuf);

impl Daemon {
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.as_ref().unwrap().id() as i32)
    }

    /// Waits until `ready` holds, failing with the daemon's log if it exits first.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Ok(Some(_)) = self.0.as_mut().unwrap().try_wait() {
                let status = self.0.take().unwrap().wait().unwrap();
                let log = std::fs::read_to_string(&self.1).unwrap_or_default();
                panic!("daemon exited ({status}) before {what}; its log:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    fn wait(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn in_ns(ns: &NetNs, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn run_sets_up_tun_and_nat_and_removes_them_on_sigterm() {
    let dir = TempDir::new("run");
    let config = init(&dir);
    let out = proxy(&["member", "add", "alice", "-c", config.to_str().unwrap()]);
    assert!(out.status.success());
    // Its own control socket, and modes of its own for alice (her table is the last).
    let socket = dir.path("proxy.sock");
    let text_before = std::fs::read_to_string(&config).unwrap();
    let edited = text_before.replace(
        "control_socket = \"/var/run/linkpool-proxy.sock\"",
        &format!("control_socket = \"{}\"", socket.display()),
    ) + "spreading = { bulk = \"session\" }\n";
    std::fs::write(&config, &edited).unwrap();
    let ns = NetNs::new("proxyrun");
    let mut daemon = Daemon(
        Some(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns.name(),
                    BIN,
                    "run",
                    "-c",
                    config.to_str().unwrap(),
                ])
                .env("LINKPOOL_LOG_TIMESTAMPS", "0")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path("log")).unwrap())
                .spawn()
                .unwrap(),
        ),
        dir.path("log"),
    );
    let log = || std::fs::read_to_string(dir.path("log")).unwrap();
    // The last line before the event loop, logged once signals are caught: the device,
    // NAT and sockets are all in place by then.
    daemon.wait_until("the set-up", || log().contains("handshakes: cookies asked"));
    assert!(
        in_ns(&ns, &["nft", "list", "table", "inet", "linkpool_proxy"])
            .status
            .success(),
        "NAT table"
    );
    let addrs = text(&in_ns(&ns, &["ip", "addr", "show", "dev", "lpproxy0"]).stdout);
    assert!(
        addrs.contains("inet 10.77.0.1/16") && addrs.contains("inet6 fd77::1/64"),
        "{addrs}"
    );
    let socks = text(&in_ns(&ns, &["ss", "-uln"]).stdout);
    assert!(
        socks.contains("0.0.0.0:7117") && socks.contains("[::]:7117"),
        "{socks}"
    );
    // `ip netns exec` execs the daemon: the signals below reach it directly.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", daemon.pid()))
            .unwrap()
            .trim(),
        "linkpool-proxy"
    );

    // Status, as JSON: alice's modes as configured, the rest auto.
    let status_json = || {
        let out = proxy(&["status", "-c", config.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let s = status_json();
    let alice = &s["members"][0];
    assert_eq!(alice["name"], "alice");
    let classes = &alice["flows"]["classes"];
    assert_eq!(classes["bulk"]["configured"], "session", "{s}");
    assert_eq!(classes["bulk"]["mode"], "session");
    assert_eq!(classes["interactive"]["configured"], "auto");
    assert_eq!(classes["interactive"]["mode"], "redundant");
    assert_eq!(alice["flows"]["live"], 0);
    assert_eq!(alice["spread"]["packets"], 0);
    assert_eq!(alice["spread"]["redundancy_overhead_pct"], 0.0);
    let out = proxy(&["status", "-c", config.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("member alice offline  balance 0\n"),
        "{}",
        text(&out.stdout)
    );

    // A reload applies new modes: proxy-wide, and alice's own.
    std::fs::write(
        &config,
        edited
            .replace("default = \"auto\"", "default = \"redundant\"")
            .replace("{ bulk = \"session\" }", "{ bulk = \"packet\" }"),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_until("the reload", || log().contains("configuration re-read"));
    let s = status_json();
    let classes = &s["members"][0]["flows"]["classes"];
    assert_eq!(classes["bulk"]["configured"], "packet", "{s}");
    assert_eq!(classes["default"]["configured"], "redundant", "{s}");
    assert_eq!(classes["default"]["mode"], "redundant");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let out = daemon.wait();
    let log = log();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("configuration re-read"), "{log}");
    assert!(log.contains("NAT removed"), "{log}");
    assert!(
        !log.contains(
            &std::fs::read_to_string(dir.path("proxy.key"))
                .unwrap()
                .trim()
                .to_string()
        ),
        "no key in the log"
    );
    assert!(
        !in_ns(&ns, &["nft", "list", "table", "inet", "linkpool_proxy"])
            .status
            .success(),
        "NAT table left behind"
    );
    assert!(
        !in_ns(&ns, &["ip", "link", "show", "lpproxy0"])
            .status
            .success(),
        "TUN left behind"
    );
    assert_eq!(
        text(&in_ns(&ns, &["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout).trim(),
        "0",
        "forwarding restored"
    );
}

/// The shipped unit, with the binary where this build put it: systemd finds no unknown
/// key, no bad value and no missing executable in it.
#[test]
fn the_systemd_unit_verifies() {
    let dir = TempDir::new("unit");
    let unit =
        include_str!("../linkpool-proxy.service").replace("/usr/local/sbin/linkpool-proxy", BIN);
    let path = dir.path("linkpool-proxy.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    let complaints = text(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

/// `linkpool-proxy frobnicate 2>&1 | true`: a usage error exits 2, even with nowhere to
/// say so; output that cannot be written is status 1, never a panic.
#[test]
fn a_closed_stdout_or_stderr_is_no_panic() {
    let dir = TempDir::new("epipe");
    let config = init(&dir);
    let c = config.to_str().unwrap();
    for (args, code) in [
        (&["frobnicate"][..], 2),
        (&[][..], 2),
        (&["member"][..], 2),
        (&["--help"][..], 1),
        (&["keygen"][..], 1),
        (&["member", "list", "-c", c][..], 1),
        (&["check-config", "-c", c][..], 1),
    ] {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let write2 = write.try_clone().unwrap();
        let status = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code), "{args:?}: {status:?}");
    }

    // `member add` whose bundle cannot be printed says the member is in the file anyway.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(BIN)
        .args(["member", "add", "carol", "-c", c])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("member carol was added to") && e.contains("member remove carol"),
        "{e}"
    );
}
