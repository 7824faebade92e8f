//! Gateway configuration from TOML and UCI files: what is accepted, and how mistakes are
//! reported (file, line, key, reason).

use linkpool_gateway::config::{ConfigSource, GatewayConfig, Loaded};
use linkpool_os::config_file::ConfigError;
use linkpool_protocol::bundle::CipherChoice;
use std::path::{Path, PathBuf};

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
"#,
        bundle()
    );
    let c = toml(&text).unwrap();
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
            "invalid type: string \"big\", expected u16",
        ),
        (
            format!("bundle = \"{b}\"\n[tunnel]\nmtu = 70000\n[[uplink]]\ndevice = \"eth1\"\n"),
            Some(3),
            "tunnel.mtu",
            "u16",
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
            "below 1280",
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
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
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
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
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
            "bundle is not valid base64",
        ),
        (
            "bad-mtu.uci",
            4,
            Some("linkpool.main.mtu"),
            "expected an integer from 0 to 65535, got `auto`",
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
}
