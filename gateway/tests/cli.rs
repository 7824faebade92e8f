//! The `linkpool` binary: keys, check-config and run, as the init script and a member use
//! them. `run` is exercised in a network namespace of its own (needs root; fails, never
//! skips, without it).

use linkpool_os::netns::NetNs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_linkpool");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lp-gw-cli-{tag}-{}", std::process::id()));
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

fn linkpool(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run linkpool")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn assert_one_line_error(out: &Output, starts: &str, contains: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with(starts), "{e}");
    assert!(e.contains(contains), "{e}");
}

#[test]
fn version() {
    let out = linkpool(&["--version"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "linkpool 0.1.0\n");
}

#[test]
fn keygen_and_pubkey_agree() {
    let key = text(&linkpool(&["keygen"]).stdout);
    let mut child = Command::new(BIN)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let secret = linkpool_protocol::keys::SecretKey::from_base64(key.trim()).unwrap();
    assert_eq!(text(&out.stdout).trim(), secret.public_key().to_base64());

    let mut child = Command::new(BIN)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not a key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_one_line_error(&out, "linkpool: stdin is not a private key", "base64");
}

/// The path a co-op member follows: the proxy operator runs `member add`, the member puts
/// the bundle into the gateway's configuration, and `check-config` accepts it.
#[test]
fn a_bundle_from_member_add_passes_check_config() {
    let dir = TempDir::new("bundle");
    let proxy_config = dir.path("proxy.toml");
    linkpool_proxy::admin::init(&proxy_config, &["proxy.example.org:7117".into()], None).unwrap();
    let bundle_file = dir.path("member.bundle");
    let bundle = linkpool_proxy::admin::add_member_to_file(
        &proxy_config,
        "alice",
        None,
        false,
        Some(&bundle_file),
    )
    .unwrap();

    let gw = dir.path("gateway.toml");
    std::fs::write(
        &gw,
        "bundle_file = \"member.bundle\"\n[[uplink]]\nname = \"wan\"\ndevice = \"eth1\"\n",
    )
    .unwrap();
    let out = linkpool(&["check-config", "-c", gw.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok (member alice, 1 uplink(s), LAN br-lan)"),
        "{}",
        text(&out.stdout)
    );

    // The same bundle pasted inline, and through UCI.
    std::fs::write(
        &gw,
        format!(
            "bundle = \"{}\"\n[[uplink]]\ndevice = \"eth1\"\n",
            bundle.render()
        ),
    )
    .unwrap();
    assert!(
        linkpool(&["check-config", "-c", gw.to_str().unwrap()])
            .status
            .success()
    );
    let uci = dir.path("linkpool");
    std::fs::write(
        &uci,
        format!("config gateway 'main'\n\toption enabled '1'\n\toption bundle '{}'\n\tlist lan_network 'lan'\n\nconfig uplink 'wan'\n\toption network 'wan'\n", bundle.render()),
    )
    .unwrap();
    let out = linkpool(&[
        "check-config",
        "--uci",
        uci.to_str().unwrap(),
        "--resolve",
        "lan=br-lan",
        "--resolve",
        "wan=eth1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(&bundle.private_key.to_base64()));

    // A bundle damaged in the copy is refused, naming the key inside it.
    let mut damaged = bundle.clone();
    damaged.addresses.clear();
    std::fs::write(&bundle_file, damaged.render()).unwrap();
    std::fs::write(
        &gw,
        "bundle_file = \"member.bundle\"\n[[uplink]]\ndevice = \"eth1\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &linkpool(&["check-config", "-c", gw.to_str().unwrap()]),
        &format!("linkpool: {}:1: key `bundle_file`: ", gw.display()),
        "bundle key `address`: missing",
    );
}

#[test]
fn config_errors_are_one_line_with_file_line_key_and_reason() {
    let typo = data("typo.uci");
    for cmd in ["check-config", "run"] {
        assert_one_line_error(
            &linkpool(&[cmd, "--uci", &typo, "--resolve", "wan=eth1"]),
            &format!("linkpool: {typo}:4: key `linkpool.main.mut`: "),
            "unknown option",
        );
    }
    let dir = TempDir::new("errors");
    let gw = dir.path("gateway.toml");
    std::fs::write(
        &gw,
        "bundle_file = \"member.bundle\"\n[[uplink]]\ndevice = \"eth1\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &linkpool(&["run", "-c", gw.to_str().unwrap()]),
        &format!(
            "linkpool: {}:1: key `bundle_file`: cannot read bundle file",
            gw.display()
        ),
        "No such file",
    );
    std::fs::write(&gw, "[tunnel]\nmtu = \"auto\"\n").unwrap();
    assert_one_line_error(
        &linkpool(&["check-config", "-c", gw.to_str().unwrap()]),
        &format!("linkpool: {}:2: key `tunnel.mtu`: ", gw.display()),
        "invalid type",
    );
}

#[test]
fn disabled_uci_exits_0() {
    let out = linkpool(&["check-config", "--uci", &data("disabled.uci")]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("disabled"),
        "{}",
        text(&out.stdout)
    );
    let out = linkpool(&["run", "--uci", &data("no-bundle.uci")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("disabled: no member bundle set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["run"],
        &["run", "-c", "a", "--uci", "b"],
        &["run", "-c", "a", "--resolve", "lan=br-lan"],
        &["check-config", "--uci", "a", "--resolve", "lan"],
        &["keygen", "extra"],
    ] {
        let out = linkpool(args);
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
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Ok(Some(status)) = self.0.as_mut().unwrap().try_wait() {
                let log = std::fs::read_to_string(&self.1).unwrap_or_default();
                self.0 = None;
                panic!("daemon exited ({status}) before {what}; its log:\n{log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
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

fn in_ns(ns: &NetNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn run_from_uci_sets_up_and_removes_everything_on_sigterm() {
    let dir = TempDir::new("run");
    let ns = NetNs::new("gwrun");
    for dev in ["br-lan", "br-guest", "eth1"] {
        let peer = format!("{dev}-p");
        let ok = Command::new("ip")
            .args([
                "-n",
                ns.name(),
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Command::new("ip")
            .args(["-n", ns.name(), "link", "set", dev, "up"])
            .status()
            .unwrap();
    }
    let before = in_ns(&ns, &["ip", "rule", "show"]) + &in_ns(&ns, &["ip", "-6", "rule", "show"]);
    // The fixture with a control socket and state file of this test's own.
    let socket = dir.path("linkpool.sock");
    let fixture = std::fs::read_to_string(data("openwrt.uci")).unwrap();
    let uci_text = fixture.replacen(
        "config gateway 'main'\n",
        &format!(
            "config gateway 'main'\n\toption control_socket '{}'\n\toption state_file '{}'\n",
            socket.display(),
            dir.path("state").display()
        ),
        1,
    );
    assert_ne!(uci_text, fixture);
    let uci = dir.path("linkpool");
    std::fs::write(&uci, &uci_text).unwrap();
    let log = dir.path("log");
    let mut daemon = Daemon(
        Some(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns.name(),
                    BIN,
                    "run",
                    "--uci",
                    uci.to_str().unwrap(),
                ])
                .args([
                    "--resolve",
                    "lan=br-lan",
                    "--resolve",
                    "guest=br-guest",
                    "--resolve",
                    "wan=eth1",
                ])
                .env("LINKPOOL_LOG_TIMESTAMPS", "0")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        ),
        log.clone(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap();
    daemon.wait_until("the set-up", || {
        read_log().contains("tunnel device and routing set up")
    });

    let link = in_ns(&ns, &["ip", "-d", "link", "show", "linkpool0"]);
    assert!(link.contains("mtu 1400") && link.contains("tun"), "{link}");
    let addrs = in_ns(&ns, &["ip", "addr", "show", "dev", "linkpool0"]);
    assert!(
        addrs.contains("inet 10.77.0.2/32") && addrs.contains("inet6 fd77::2/128"),
        "{addrs}"
    );
    let rules = in_ns(&ns, &["ip", "rule", "show"]);
    for want in [
        "iif bat0 [detached] lookup 7117",
        "iif br-lan lookup 7117",
        "iif br-guest lookup 7117",
        "fwmark 0x7117 lookup main",
    ] {
        assert!(rules.contains(want), "missing `{want}`:\n{rules}");
    }
    assert!(in_ns(&ns, &["nft", "list", "table", "inet", "linkpool"]).contains("masquerade"));
    let l = read_log();
    let secret = linkpool_protocol::bundle::MemberBundle::parse(
        &std::fs::read_to_string(data("member.bundle")).unwrap(),
    )
    .unwrap()
    .private_key
    .to_base64();
    assert!(!l.contains(&secret), "the private key is in the log");

    // Status: the spreading modes as configured (the fixture pins bulk flows), a path's
    // congestion fields, flows, spread counters and the reorder buffer.
    let status_json = || {
        let out = linkpool(&["status", "--socket", socket.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let s = status_json();
    let classes = &s["flows"]["classes"];
    assert_eq!(classes["bulk"]["configured"], "session", "{s}");
    assert_eq!(classes["bulk"]["mode"], "session");
    assert_eq!(classes["interactive"]["mode"], "redundant");
    assert_eq!(classes["default"]["mode"], "session");
    for key in [
        "cc_state",
        "send_share",
        "tx_share",
        "bandwidth_bps",
        "cwnd_bytes",
    ] {
        assert!(s["uplinks"][0].get(key).is_some(), "no {key}: {s}");
    }
    assert_eq!(s["spread"]["duplicated_packets"], 0);
    assert!(s["reorder"]["timeout_ms"].as_f64().unwrap() > 0.0, "{s}");
    let out = linkpool(&["status", "--socket", socket.to_str().unwrap()]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(
            "\nflows 0  interactive 0 redundant (auto)  bulk 0 session  default 0 session (auto)\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("\nspread 0 pkts  duplicated 0 pkts"),
        "{shown}"
    );
    assert!(shown.contains("\nreorder timeout "), "{shown}");

    // A reload (SIGHUP) applies new modes to the running session.
    std::fs::write(
        &uci,
        uci_text.replace("option spread_bulk session", "option spread_bulk 'packet'"),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_until("the reload", || {
        read_log().contains("configuration re-read")
    });
    assert!(
        read_log().contains("spreading modes changed"),
        "{}",
        read_log()
    );
    assert_eq!(
        status_json()["flows"]["classes"]["bulk"]["configured"],
        "packet"
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait();
    assert!(status.success(), "{}", read_log());
    assert!(read_log().contains("routing removed"));
    let after = in_ns(&ns, &["ip", "rule", "show"]) + &in_ns(&ns, &["ip", "-6", "rule", "show"]);
    assert_eq!(after, before, "rules left behind");
    assert_eq!(
        in_ns(&ns, &["nft", "list", "ruleset"]),
        "",
        "nft table left behind"
    );
    assert_eq!(
        in_ns(&ns, &["ip", "link", "show", "linkpool0"]),
        "",
        "TUN left behind"
    );
}

/// Runs `args` with stdout and stderr on a pipe nobody reads (`2>&1 | true`).
fn with_closed_output(bin: &str, args: &[&str]) -> std::process::ExitStatus {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let write2 = write.try_clone().unwrap();
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .status()
        .unwrap()
}

/// `linkpool frobnicate 2>&1 | true` exited 134 (a panic on EPIPE); it is a usage error,
/// exit 2, whatever became of the message. Output that cannot be written is status 1.
#[test]
fn a_closed_stdout_or_stderr_is_no_panic() {
    for (args, code) in [
        (&["frobnicate"][..], 2),
        (&[][..], 2),
        (&["run"][..], 2),
        (&["--help"][..], 1),
        (&["--version"][..], 1),
        (&["keygen"][..], 1),
        (&["check-config", "-c", "/nonexistent.toml"][..], 1),
    ] {
        let status = with_closed_output(BIN, args);
        assert_eq!(status.code(), Some(code), "{args:?}: {status:?}");
    }
}

/// README step 4 on the shipped config, as typed there (no --resolve). Off OpenWrt the
/// networks cannot be resolved: the error says which, and how.
#[test]
fn check_config_on_the_shipped_uci_file_as_the_readme_runs_it() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shipped =
        std::fs::read_to_string(repo.join("openwrt/linkpool/files/linkpool.config")).unwrap();
    let dir = TempDir::new("shipped");
    let bundle_file = dir.path("member.bundle");
    std::fs::copy(data("member.bundle"), &bundle_file).unwrap();
    std::fs::set_permissions(
        &bundle_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let conf = dir.path("linkpool");
    std::fs::write(
        &conf,
        shipped
            .replace("option enabled '0'", "option enabled '1'")
            .replace(
                "#option bundle_file '/etc/linkpool/member.bundle'",
                &format!("option bundle_file '{}'", bundle_file.display()),
            ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let lan_line = 1 + shipped
        .lines()
        .position(|l| l.trim() == "list lan_network 'lan'")
        .unwrap();
    if !Path::new(linkpool_gateway::netifd::NETWORK_SH).exists() {
        let out = linkpool(&["check-config", "--uci", c]);
        assert_eq!(out.status.code(), Some(1));
        let e = text(&out.stderr);
        assert!(
            e.contains(
                "names logical networks (lan, wan), and /lib/functions/network.sh is not here"
            ),
            "{e}"
        );
        assert!(
            e.contains(&format!("{c}:{lan_line}: key `linkpool.main.lan_network`: no LAN device: network `lan` is not resolved to a device")),
            "{e}"
        );
        assert!(e.contains("Give --resolve lan=DEVICE"), "{e}");
        assert!(!e.contains("is empty"), "{e}");
    }
    let out = linkpool(&[
        "check-config",
        "--uci",
        c,
        "--resolve",
        "lan=br-lan",
        "--resolve",
        "wan=eth1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{c}: ok (member alice, 1 uplink(s), LAN br-lan)\n")
    );
    assert_eq!(
        text(&out.stderr),
        "",
        "no warning for an LP2 bundle in a 0600 file"
    );
}
