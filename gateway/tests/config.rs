//! Gateway configuration from TOML and UCI files: what is accepted, and how mistakes are
//! reported (file, line, key, reason).

use linkpool_gateway::config::{ConfigSource, GatewayConfig, Loaded};
use linkpool_os::config_file::ConfigError;
use linkpool_protocol::bundle::CipherChoice;
use linkpool_protocol::flow::{Mode, Modes};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn bundle() -> String {
    std::fs::read_to_string(data("member.bundle"))
        .unwrap()
        .trim()
        .to_string()
}

fn resolve(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect()
}

/// The warnings but the one about a fixture's file mode (git checks files out 0644, and
/// the UCI fixtures hold their bundle inline).
fn not_about_permissions(warnings: &[String]) -> Vec<&String> {
    warnings
        .iter()
        .filter(|w| !w.contains("can be read by other users"))
        .collect()
}

fn toml(text: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_toml_str(Path::new("/etc/linkpool/gateway.toml"), text)
}

fn toml_err(text: &str) -> ConfigError {
    toml(text).expect_err("expected a configuration error")
}

fn minimal() -> String {
    format!(
        "bundle = \"{}\"\n\n[[uplink]]\nname = \"wan\"\ndevice = \"eth1\"\n",
        bundle()
    )
}

#[test]
fn toml_with_every_key() {
    let text = format!(
        r#"bundle = "{}"
log_level = "debug"
control_socket = "/tmp/lp.sock"

[tunnel]
device = "lp1"
mtu = 1400
table = 100
rule_priority = 500
fwmark = 0x10
lan_devices = ["br-lan", "bat0"]
mesh_devices = ["bat0"]

[[uplink]]
name = "wan"
device = "eth1"

[[uplink]]
device = "wwan0"
probe_interval_ms = 5000

[spreading]
interactive = "session"
bulk = "redundant"
default = "packet"
"#,
        bundle()
    );
    let c = toml(&text).unwrap();
    assert_eq!(
        c.spreading,
        Modes {
            interactive: Mode::Session,
            bulk: Mode::Redundant,
            default: Mode::Packet,
        }
    );
    assert_eq!(c.uplinks[0].probe_interval, Duration::from_millis(100));
    assert_eq!(c.uplinks[1].probe_interval, Duration::from_secs(5));
    assert_eq!(c.bundle.member, "alice");
    assert_eq!(c.bundle.cipher, CipherChoice::ChaCha20Poly1305);
    assert_eq!(c.log_level, tracing::level_filters::LevelFilter::DEBUG);
    assert_eq!(c.control_socket, PathBuf::from("/tmp/lp.sock"));
    assert_eq!(c.tunnel.device, "lp1");
    assert_eq!(c.tunnel.mtu, Some(1400));
    assert_eq!(
        (c.tunnel.table, c.tunnel.rule_priority, c.tunnel.fwmark),
        (100, 500, 0x10)
    );
    assert_eq!(c.tunnel.lan_devices, ["br-lan", "bat0"]);
    assert_eq!(c.tunnel.mesh_devices, ["bat0"]);
    assert_eq!(c.uplinks.len(), 2);
    assert_eq!(
        (c.uplinks[1].name.as_str(), c.uplinks[1].device.as_str()),
        ("wwan0", "wwan0")
    );
    let r = c.routing(1400);
    assert!(r.ipv6, "the bundle has an IPv6 address");
    assert_eq!(r.lan_devices, ["br-lan", "bat0"]);
}

#[test]
fn toml_defaults() {
    let c = toml(&minimal()).unwrap();
    assert_eq!(c.tunnel.device, "linkpool0");
    assert_eq!(c.tunnel.mtu, None);
    assert_eq!(
        (c.tunnel.table, c.tunnel.rule_priority, c.tunnel.fwmark),
        (7117, 7117, 0x7117)
    );
    assert_eq!(c.tunnel.lan_devices, ["br-lan"]);
    assert!(c.tunnel.mesh_devices.is_empty());
    assert_eq!(c.control_socket, PathBuf::from("/var/run/linkpool.sock"));
    assert_eq!(c.log_level, tracing::level_filters::LevelFilter::INFO);
    assert_eq!(c.spreading, Modes::default(), "all auto");
    // A table naming some classes leaves the others auto.
    let c = toml(&format!("{}[spreading]\nbulk = \"session\"\n", minimal())).unwrap();
    assert_eq!(
        c.spreading,
        Modes {
            bulk: Mode::Session,
            ..Modes::default()
        }
    );
}

#[test]
fn toml_bundle_file_relative_to_the_config() {
    let c = GatewayConfig::from_toml_str(
        &data("gateway.toml"),
        "bundle_file = \"member.bundle\"\n[[uplink]]\ndevice = \"eth1\"\n",
    )
    .unwrap();
    assert_eq!(c.bundle.member, "alice");
}

#[test]
fn toml_errors_name_file_line_key_and_reason() {
    let b = bundle();
    let cases: Vec<(String, Option<usize>, &str, &str)> = vec![
        // (text, line, key, part of the reason)
        (
            "[[uplink]]\ndevice = \"eth1\"\n".into(),
            None,
            "bundle",
            "missing",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = \"big\"\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "invalid type: string \"big\", expected i64",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 70000\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "70000 is out of range: use 0 (automatic) or 1280 to 1977 (a datagram is at most 2048 bytes, 71 of them linkpool's headers on a relayed path)",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 9000\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "9000 is out of range: use 0 (automatic) or 1280 to 1977",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 65535\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "65535 is out of range",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 1989\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "1989 is out of range",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = -1\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "-1 is out of range",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[tunnel]\n\ncolour = \"blue\"\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(4),
            "tunnel.colour",
            "unknown key",
        ),
        (
            format!("bundel = \"{b}\"\n"),
            Some(1),
            "bundel",
            "unknown key",
        ),
        (
            format!("bundle = \"{b}\"\n[[uplink]]\nname = \"wan\"\ndevise = \"eth1\"\n"),
            Some(4),
            "uplink[0].devise",
            "unknown key",
        ),
        (
            format!("bundle = \"{b}\"\n[[uplink]]\nname = \"wan\"\n"),
            Some(2),
            "uplink[0].device",
            "missing",
        ),
        (
            format!("bundle = \"{b}\"\n"),
            None,
            "uplink",
            "at least one uplink",
        ),
        (
            format!("bundle = \"{b}\"\nbundle_file = \"x\"\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(2),
            "bundle_file",
            "not both",
        ),
        (
            "bundle = \"LP1://79\"\n[[uplink]]\ndevice = \"eth1\"\n".into(),
            Some(1),
            "bundle",
            "bundle content is not UTF-8",
        ),
        (
            "bundle = \"hello\"\n[[uplink]]\ndevice = \"eth1\"\n".into(),
            Some(1),
            "bundle",
            "not a member bundle",
        ),
        (
            "bundle_file = \"/nonexistent/member.bundle\"\n[[uplink]]\ndevice = \"eth1\"\n".into(),
            Some(1),
            "bundle_file",
            "cannot read bundle file /nonexistent/member.bundle: No such file",
        ),
        (
            format!("bundle = \"{b}\"\nlog_level = \"loud\"\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(2),
            "log_level",
            "unknown log level `loud`",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 1000\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "1000 is out of range: use 0 (automatic) or 1280 to 1977 (1280 is the IPv6 minimum, and the bundle has an IPv6 address)",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\ntable = 254\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.table",
            "reserved",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[tunnel]\nrule_priority = 32765\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(3),
            "tunnel.rule_priority",
            "out of range",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nfwmark = 0\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.fwmark",
            "must not be 0",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[tunnel]\ndevice = \"a-very-long-name0\"\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(3),
            "tunnel.device",
            "longer than 15",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[tunnel]\nlan_devices = []\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(3),
            "tunnel.lan_devices",
            "is empty",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[[uplink]]\nname = \"a\"\ndevice = \"eth1\"\n[[uplink]]\nname = \"a\"\ndevice = \"eth2\"\n"
            ),
            Some(6),
            "uplink[1].name",
            "used twice",
        ),
        (
            format!("bundle = \"{b}\"\n[[uplink]]\ndevice = \"br-lan\"\n"),
            Some(3),
            "uplink[0].device",
            "a LAN or a mesh device",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[tunnel]\nmesh_devices = [\"bat0\", \"bat0\"]\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(3),
            "tunnel.mesh_devices",
            "listed twice",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[[uplink]]\ndevice = \"eth1\"\n\n[spreading]\ninteractive = \"auto\"\nbulk = \"fast\"\n"
            ),
            Some(7),
            "spreading.bulk",
            "unknown flow mode `fast` (expected auto, session, packet or redundant)",
        ),
        (
            format!(
                "bundle = \"{b}\"\nspreading = {{ default = \"Packet\" }}\n[[uplink]]\ndevice = \"eth1\"\n"
            ),
            Some(2),
            "spreading.default",
            "unknown flow mode `Packet` (expected auto, session, packet or redundant)",
        ),
        (
            format!(
                "bundle = \"{b}\"\n[[uplink]]\ndevice = \"eth1\"\n[spreading]\nvideo = \"packet\"\n"
            ),
            Some(5),
            "spreading.video",
            "unknown key (known keys: one of `interactive`, `bulk`, `default`)",
        ),
        (
            format!("bundle = \"{b}\"\n[[uplink]]\ndevice = \"eth1\"\n[spreading]\nbulk = true\n"),
            Some(5),
            "spreading.bulk",
            "invalid type: boolean `true`, expected a string",
        ),
    ];
    for (text, line, key, reason) in cases {
        let e = toml_err(&text);
        assert_eq!(e.file, PathBuf::from("/etc/linkpool/gateway.toml"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}\n--- in ---\n{text}");
        assert_eq!(e.line, line, "{e}\n--- in ---\n{text}");
        assert!(e.reason.contains(reason), "{e}\n--- in ---\n{text}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn the_probe_interval_is_checked_in_both_formats() {
    let text = minimal() + "probe_interval_ms = 50\n";
    let e = toml_err(&text).to_string();
    assert!(
        e.contains(":6: key `uplink[0].probe_interval_ms`: 50 is out of range: use 100 to 60000"),
        "{e}"
    );
    let uci = |value: &str| {
        GatewayConfig::from_uci_str(
            Path::new("/etc/config/linkpool"),
            &format!(
                "config gateway 'main'\n\toption bundle '{}'\n\nconfig uplink 'lte'\n\t\
                 option device 'wwan0'\n\toption probe_interval_ms '{value}'\n",
                bundle()
            ),
            &[],
        )
    };
    match uci("10000").unwrap() {
        Loaded::Enabled(c) => assert_eq!(c.uplinks[0].probe_interval, Duration::from_secs(10)),
        other => panic!("{other:?}"),
    }
    let e = uci("70000").unwrap_err().to_string();
    assert!(
        e.contains(":6: key `linkpool.lte.probe_interval_ms`: 70000 is out of range"),
        "{e}"
    );
    let e = uci("1s").unwrap_err().to_string();
    assert!(
        e.contains("linkpool.lte.probe_interval_ms`: expected an integer (milliseconds), got `1s`"),
        "{e}"
    );
}

#[test]
fn spreading_modes_in_uci() {
    let uci = |options: &str| {
        GatewayConfig::from_uci_str(
            Path::new("/etc/config/linkpool"),
            &format!(
                "config gateway 'main'\n\toption bundle '{}'\n{options}\nconfig uplink 'wan'\n\toption device 'eth1'\n",
                bundle()
            ),
            &[],
        )
    };
    let modes = |options: &str| match uci(options).unwrap() {
        Loaded::Enabled(c) => c.spreading,
        other => panic!("{other:?}"),
    };
    assert_eq!(modes(""), Modes::default());
    assert_eq!(
        modes(
            "\toption spread_interactive 'redundant'\n\toption spread_bulk 'session'\n\toption spread_default 'packet'"
        ),
        Modes {
            interactive: Mode::Redundant,
            bulk: Mode::Session,
            default: Mode::Packet,
        }
    );
    // Empty, as `uci set linkpool.main.spread_bulk=''` leaves it: the default.
    assert_eq!(
        modes("\toption spread_bulk ''\n\toption spread_default 'auto'"),
        Modes::default()
    );

    for (options, line, key, reason) in [
        (
            "\toption spread_bulk 'fast'",
            3,
            "linkpool.main.spread_bulk",
            "unknown flow mode `fast` (expected auto, session, packet or redundant)",
        ),
        (
            "\n\toption spread_interactive 'Redundant'",
            4,
            "linkpool.main.spread_interactive",
            "unknown flow mode `Redundant` (expected auto, session, packet or redundant)",
        ),
        (
            "\tlist spread_default 'packet'",
            3,
            "linkpool.main.spread_default",
            "is a list; expected a single `option`",
        ),
        (
            "\toption spread_video 'packet'",
            3,
            "linkpool.main.spread_video",
            "unknown option (known: ",
        ),
    ] {
        let e = uci(options).unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some(key), Some(line)), "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/config/linkpool:{line}: key `{key}`: ")),
            "{e}"
        );
    }
    let e = uci("\toption spread_video 'packet'").unwrap_err();
    assert!(
        e.reason
            .contains("spread_interactive, spread_bulk, spread_default"),
        "the known options list them: {e}"
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    let e = toml_err("bundle = \"x\"\n[tunnel\nmtu = 1\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert_eq!(e.key, None);
    assert!(
        e.to_string().starts_with("/etc/linkpool/gateway.toml:2: "),
        "{e}"
    );
}

#[test]
fn a_bad_bundle_names_the_bundle_key_inside() {
    let e = toml_err(&minimal().replace(
        &bundle()[..40],
        "LP1:bWVtYmVyID0gYWxpY2UKcHJpdmF0ZV9rZXkgPSAhISEKcH",
    ));
    assert_eq!(e.key.as_deref(), Some("bundle"));
    assert!(e.reason.starts_with("bundle "), "{e}");
}

#[test]
fn unreadable_file() {
    let e = GatewayConfig::load_toml(Path::new("/nonexistent/gateway.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/gateway.toml: cannot read the file: No such file or directory (os error 2)"
    );
}

#[test]
fn openwrt_uci_file_with_comments_and_odd_quoting() {
    let loaded = GatewayConfig::load_uci(
        &data("openwrt.uci"),
        &resolve(&[
            ("lan", "br-lan"),
            ("guest", "br-guest"),
            ("wan", "eth1"),
            ("mesh", "wlan1-mesh"),
        ]),
    )
    .unwrap();
    let Loaded::Enabled(c) = loaded else {
        panic!("disabled: {loaded:?}")
    };
    assert_eq!(c.bundle.member, "alice");
    assert_eq!(c.log_level, tracing::level_filters::LevelFilter::DEBUG);
    assert_eq!(c.tunnel.mtu, Some(1400));
    assert_eq!(c.tunnel.fwmark, 0x7117);
    assert_eq!(c.tunnel.lan_devices, ["bat0", "br-lan", "br-guest"]);
    assert_eq!(c.tunnel.mesh_devices, ["bat0", "wlan1-mesh"]);
    assert_eq!(
        c.spreading,
        Modes {
            bulk: Mode::Session,
            ..Modes::default()
        }
    );
    let uplinks: Vec<(&str, &str)> = c
        .uplinks
        .iter()
        .map(|u| (u.name.as_str(), u.device.as_str()))
        .collect();
    assert_eq!(
        uplinks,
        [("wan", "eth1"), ("neighbour_lte", "wwan0")],
        "the disabled uplink is left out"
    );
    assert!(
        not_about_permissions(&c.warnings).is_empty(),
        "{:?}",
        c.warnings
    );
}

#[test]
fn uci_unresolved_networks_are_skipped_with_a_warning() {
    let Loaded::Enabled(c) =
        GatewayConfig::load_uci(&data("openwrt.uci"), &resolve(&[("lan", "br-lan")])).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        c.uplinks.len(),
        1,
        "the WAN is not resolved, the device-based uplink stays"
    );
    assert_eq!(c.tunnel.lan_devices, ["bat0", "br-lan"]);
    assert_eq!(
        not_about_permissions(&c.warnings).len(),
        3,
        "{:?}",
        c.warnings
    );
    assert!(c.warnings.iter().any(|w| w.contains("mesh network `mesh`")));
    assert!(c.warnings.iter().any(|w| w.contains("network `guest`")));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("uplink `wan` skipped"))
    );

    // With no uplink left, it is an error that says why.
    let text = std::fs::read_to_string(data("openwrt.uci"))
        .unwrap()
        .replace("option device \"wwan0\"", "option network 'lte'");
    let e =
        GatewayConfig::from_uci_str(&data("openwrt.uci"), &text, &resolve(&[("lan", "br-lan")]))
            .unwrap_err();
    assert!(e.reason.contains("at least one uplink"), "{e}");
    assert!(e.reason.contains("network `wan` was not resolved"), "{e}");
}

#[test]
fn uci_disabled_or_without_bundle() {
    for (file, why) in [
        ("disabled.uci", "enabled is '0'"),
        ("no-bundle.uci", "no member bundle"),
    ] {
        match GatewayConfig::load_uci(&data(file), &[]).unwrap() {
            Loaded::Disabled { reason } => assert!(reason.contains(why), "{file}: {reason}"),
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn uci_errors_name_file_line_key_and_reason() {
    let cases = [
        ("typo.uci", 4, Some("linkpool.main.mut"), "unknown option"),
        (
            "bad-bundle.uci",
            4,
            Some("linkpool.main.bundle"),
            "bundle was cut short in copying",
        ),
        (
            "bad-mtu.uci",
            4,
            Some("linkpool.main.mtu"),
            "expected an integer (0 for automatic, or a size up to 1977), got `auto`",
        ),
        ("unterminated.uci", 3, None, "EOF with unterminated '"),
    ];
    for (file, line, key, reason) in cases {
        let e =
            GatewayConfig::load_uci(&data(file), &resolve(&[("lan", "br-lan"), ("wan", "eth1")]))
                .expect_err(file);
        assert_eq!(e.file, data(file));
        assert_eq!(e.line, Some(line), "{file}: {e}");
        assert_eq!(e.key.as_deref(), key, "{file}: {e}");
        assert!(e.reason.contains(reason), "{file}: {e}");
    }
}

#[test]
fn uci_shape_errors() {
    let b = bundle();
    let path = Path::new("/etc/config/linkpool");
    let r = resolve(&[("lan", "br-lan"), ("wan", "eth1")]);
    let err = |text: String| GatewayConfig::from_uci_str(path, &text, &r).expect_err(&text);
    let e = err(format!(
        "config gateway 'main'\n option bundle '{b}'\n list mtu '1'\nconfig uplink 'wan'\n option network 'wan'\n"
    ));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("linkpool.main.mtu"), Some(3))
    );
    assert!(e.reason.contains("is a list"), "{e}");
    let e = err(format!(
        "config gateway 'main'\n option bundle '{b}'\nconfig wan 'x'\n"
    ));
    assert_eq!((e.key.as_deref(), e.line), (Some("linkpool.x"), Some(3)));
    assert!(e.reason.contains("unknown section type `wan`"), "{e}");
    let e = err(format!(
        "config gateway 'main'\n option bundle '{b}'\nconfig uplink\n option name 'x'\n"
    ));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("linkpool.@uplink[0].network"), Some(3))
    );
    let e = err(format!(
        "config gateway 'a'\n option bundle '{b}'\nconfig gateway 'b'\n"
    ));
    assert_eq!(e.line, Some(3));
    assert!(e.reason.contains("second `config gateway`"), "{e}");
    let e = err("config uplink 'wan'\n".into());
    assert!(e.reason.contains("no `config gateway` section"), "{e}");
    let e = err(format!(
        "config gateway 'main'\n option bundle '{b}'\n option table '253'\nconfig uplink 'wan'\n option network 'wan'\n"
    ));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("linkpool.main.table"), Some(3))
    );
    let e = err(format!(
        "config gateway 'main'\n option bundle '{b}'\n option enabled 'perhaps'\n"
    ));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("linkpool.main.enabled"), Some(3))
    );
}

#[test]
fn config_source_reloads_the_same_way() {
    let src = ConfigSource::Uci {
        path: data("openwrt.uci"),
        resolve: resolve(&[("lan", "br-lan"), ("wan", "eth1")]),
    };
    assert!(matches!(src.load().unwrap(), Loaded::Enabled(c) if c.uplinks.len() == 2));
    assert_eq!(src.path(), data("openwrt.uci"));
}

#[test]
fn the_example_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("linkpool.example.toml");
    let c = GatewayConfig::load_toml(&path).unwrap();
    assert_eq!(c.tunnel.device, "linkpool0");
    assert_eq!(c.uplinks[0].device, "eth1");
    assert_eq!(
        c.spreading,
        Modes::default(),
        "the example sets every class to auto"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for class in ["interactive", "bulk", "default"] {
        assert!(
            text.contains(&format!("\n{class} = \"auto\"\n")),
            "the example shows `{class}`"
        );
    }
}

/// A scratch directory, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lp-gw-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// Writes `name` with `text` and `mode`; returns its path.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_bundle_file(
    dir: &TempDir,
    bundle_text: &str,
    mode: u32,
) -> Result<GatewayConfig, ConfigError> {
    dir.file("member.bundle", bundle_text, mode);
    let conf = dir.file(
        "gateway.toml",
        "bundle_file = \"member.bundle\"\n[[uplink]]\ndevice = \"eth1\"\n",
        0o600,
    );
    GatewayConfig::load_toml(&conf)
}

#[test]
fn a_legacy_bundle_is_accepted_with_a_warning() {
    let dir = TempDir::new("legacy");
    let legacy = std::fs::read_to_string(data("legacy.bundle")).unwrap();
    assert!(legacy.trim().starts_with("LP1:"));
    let c = with_bundle_file(&dir, &legacy, 0o600).unwrap();
    assert_eq!(c.bundle.member, "alice");
    let bundle_path = dir.0.join("member.bundle");
    assert_eq!(
        c.warnings,
        [format!(
            "{}: this bundle has no checksum (an `LP1:` bundle: a mistake made in copying it would go unnoticed); ask your co-op for a new one",
            bundle_path.display()
        )]
    );
    // The same bundle inline: the warning names the key.
    let c = toml(&format!(
        "bundle = \"{}\"\n[[uplink]]\ndevice = \"eth1\"\n",
        legacy.trim()
    ))
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0]
            .starts_with("`bundle` in /etc/linkpool/gateway.toml: this bundle has no checksum"),
        "{:?}",
        c.warnings
    );
    // An LP2 bundle: no warning.
    let c = with_bundle_file(&dir, &bundle(), 0o600).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// The issue's case: `fd77::2` → `fd70::2` in the bundle passed as "ok".
#[test]
fn a_bundle_altered_in_copying_is_refused_saying_so() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let dir = TempDir::new("altered");
    let b = bundle();
    let text = String::from_utf8(STANDARD.decode(&b[4..]).unwrap()).unwrap();
    let altered = format!(
        "LP2:{}",
        STANDARD.encode(text.replace("fd77::2", "fd70::2"))
    );
    let e = with_bundle_file(&dir, &altered, 0o600).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("bundle_file"));
    assert!(
        e.reason
            .contains("bundle was altered in copying: its checksum does not match"),
        "{e}"
    );
    // One character of the line itself changed, as a mistyped copy would.
    let mut chars: Vec<char> = b.chars().collect();
    chars[200] = if chars[200] == 'x' { 'y' } else { 'x' };
    let e = with_bundle_file(&dir, &chars.iter().collect::<String>(), 0o600).unwrap_err();
    assert!(e.reason.contains("altered in copying"), "{e}");
    // Cut short.
    let e = with_bundle_file(&dir, &b[..b.len() - 8], 0o600).unwrap_err();
    assert!(e.reason.contains("cut short in copying"), "{e}");
}

#[test]
fn a_bundle_file_others_can_read_is_a_warning() {
    let dir = TempDir::new("mode");
    for (mode, warned) in [
        (0o600, false),
        (0o400, false),
        (0o644, true),
        (0o640, true),
        (0o604, true),
        (0o620, true),
    ] {
        let c = with_bundle_file(&dir, &bundle(), mode).unwrap();
        let p = dir.0.join("member.bundle");
        if warned {
            assert_eq!(
                c.warnings,
                [format!(
                    "{} holds the member's private key, but other users can read or change it (mode {mode:04o}): chmod 600 {}",
                    p.display(),
                    p.display()
                )],
                "{mode:o}"
            );
        } else {
            assert!(c.warnings.is_empty(), "{mode:o}: {:?}", c.warnings);
        }
    }
    // A bundle inline in a configuration file others can read.
    let conf = dir.file(
        "inline.toml",
        &format!("bundle = \"{}\"\n[[uplink]]\ndevice = \"eth1\"\n", bundle()),
        0o644,
    );
    let c = GatewayConfig::load_toml(&conf).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains(&format!("`bundle` holds the member's private key, but {} can be read by other users (mode 0644)", conf.display())), "{:?}", c.warnings);
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(GatewayConfig::load_toml(&conf).unwrap().warnings.is_empty());
}

#[test]
fn mtu_bounds_in_uci() {
    let b = bundle();
    let path = Path::new("/etc/config/linkpool");
    let r = resolve(&[("lan", "br-lan"), ("wan", "eth1")]);
    let uci = |mtu: &str| {
        GatewayConfig::from_uci_str(
            path,
            &format!(
                "config gateway 'main'\n option bundle '{b}'\n option mtu '{mtu}'\nconfig uplink 'wan'\n option network 'wan'\n"
            ),
            &r,
        )
    };
    for bad in ["9000", "65535", "70000", "1989", "0x7d0", "100"] {
        let e = uci(bad).expect_err(bad);
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("linkpool.main.mtu"), Some(3)),
            "{e}"
        );
        assert!(
            e.reason
                .contains("is out of range: use 0 (automatic) or 1280 to 1977"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("/etc/config/linkpool:3: key `linkpool.main.mtu`: "),
            "{e}"
        );
    }
    for (good, want) in [
        ("0", None),
        ("1280", Some(1280)),
        ("1977", Some(1977)),
        ("0x500", Some(1280)),
    ] {
        match uci(good).expect(good) {
            Loaded::Enabled(c) => assert_eq!(c.tunnel.mtu, want, "{good}"),
            other => panic!("{other:?}"),
        }
    }
    // Without IPv6 in the bundle, 576 is the floor.
    assert_eq!(linkpool_gateway::config::check_mtu(576, false), Ok(576));
    assert!(
        linkpool_gateway::config::check_mtu(575, false)
            .unwrap_err()
            .contains("use 0 (automatic) or 576 to 1977")
    );
}

/// README step 4 on the shipped /etc/config/linkpool: enabled, a bundle file, nothing
/// else changed. Its networks resolve the way the init script resolves them.
#[test]
fn the_shipped_uci_config_after_readme_step_4() {
    use linkpool_gateway::netifd;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shipped =
        std::fs::read_to_string(repo.join("openwrt/linkpool/files/linkpool.config")).unwrap();
    let dir = TempDir::new("shipped");
    let bundle_file = dir.file("member.bundle", &bundle(), 0o600);
    let edited = shipped
        .replace("option enabled '0'", "option enabled '1'")
        .replace(
            "#option bundle_file '/etc/linkpool/member.bundle'",
            &format!("option bundle_file '{}'", bundle_file.display()),
        );
    assert_ne!(edited, shipped);
    let conf = dir.file("linkpool", &edited, 0o644);
    assert_eq!(netifd::uci_networks(&edited), ["lan", "wan"]);

    // Unresolved (what `check-config` without --resolve got): an error that says which
    // network and how to resolve it, not "is empty".
    let e = GatewayConfig::load_uci(&conf, &[]).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("linkpool.main.lan_network"), "{e}");
    assert!(
        e.reason
            .contains("network `lan` is not resolved to a device"),
        "{e}"
    );
    assert!(e.reason.contains("--resolve lan=DEVICE"), "{e}");

    // Resolved through OpenWrt's network_get_device (the tests' stand-in for it, which
    // reads netifd's state from $STANDIN_NETWORK_STATE).
    let state = dir.file("netstate", "lan br-lan br-lan\nwan pppoe-wan eth1\n", 0o644);
    let standin = repo.join("openwrt/tests/standin/lib/functions/network.sh");
    let script = dir.file(
        "network.sh",
        &format!(
            "STANDIN_NETWORK_STATE='{}'\n. '{}'\n",
            state.display(),
            standin.display()
        ),
        0o644,
    );
    let networks = netifd::uci_networks(&edited);
    let resolved = netifd::resolve_with(&script, &networks).unwrap();
    assert_eq!(
        resolved,
        resolve(&[("lan", "br-lan"), ("wan", "pppoe-wan")])
    );
    let Loaded::Enabled(c) = GatewayConfig::load_uci(&conf, &resolved).unwrap() else {
        panic!("disabled")
    };
    assert_eq!(c.tunnel.lan_devices, ["br-lan"]);
    assert_eq!(c.uplinks[0].device, "pppoe-wan");
    assert_eq!(c.spreading, Modes::default());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    for class in ["interactive", "bulk", "default"] {
        assert!(
            shipped.contains(&format!("\toption spread_{class} 'auto'\n")),
            "the shipped file shows spread_{class}"
        );
    }

    // A network that is down is left out, as the init script leaves it out.
    std::fs::write(&state, "lan br-lan br-lan\n").unwrap();
    assert_eq!(
        netifd::resolve_with(&script, &networks).unwrap(),
        resolve(&[("lan", "br-lan")])
    );
    // A library that does not load is an error, not "nothing resolved".
    assert!(netifd::resolve_with(&dir.0.join("missing.sh"), &networks).is_err());
}

/// Sharing is off unless the owner turns it on; caps in Mbit/s each way, else the whole
/// line; a bad value names its key in either format.
#[test]
fn sharing_in_both_formats() {
    let policy = |c: GatewayConfig| c.sharing;
    let off = policy(toml(&minimal()).unwrap());
    assert!(!off.sharing);
    let on = policy(
        toml(&(minimal() + "\n[sharing]\nenabled = true\nup_mbit = 2\ndown_mbit = 8.5\n")).unwrap(),
    );
    assert!(on.sharing);
    assert_eq!((on.up_total, on.down_total), (250_000, 1_062_500));
    assert_eq!(
        (on.up_per_neighbour, on.down_per_neighbour),
        (250_000, 1_062_500)
    );
    let whole = policy(toml(&(minimal() + "\n[sharing]\nenabled = true\n")).unwrap());
    assert!(whole.up_total > 1 << 40, "uncapped: the whole line");
    let e = toml_err(&(minimal() + "\n[sharing]\nenabled = true\nup_mbit = 0\n")).to_string();
    assert!(
        e.contains("key `sharing.up_mbit`: 0 is out of range"),
        "{e}"
    );
    let uci = |options: &str| {
        GatewayConfig::from_uci_str(
            Path::new("/etc/config/linkpool"),
            &format!(
                "config gateway 'main'\n\toption bundle '{}'\n{options}\nconfig uplink 'wan'\n\toption device 'eth1'\n",
                bundle()
            ),
            &[],
        )
    };
    match uci("\toption share '1'\n\toption share_down_mbit '20'").unwrap() {
        Loaded::Enabled(c) => {
            assert!(c.sharing.sharing);
            assert_eq!(c.sharing.down_total, 2_500_000);
        }
        other => panic!("{other:?}"),
    }
    let e = uci("\toption share 'sometimes'").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("linkpool.main.share"), "{e}");
    let e = uci("\toption share '1'\n\toption share_up_mbit 'fast'").unwrap_err();
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("linkpool.main.share_up_mbit"), Some(4)),
        "{e}"
    );
    let e = uci("\toption share '1'\n\toption share_up_mbit '-3'").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("linkpool.main.share_up_mbit"), "{e}");
}
