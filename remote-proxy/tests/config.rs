//! Proxy configuration: what is accepted, and how mistakes are reported.

use linkpool_os::config_file::ConfigError;
use linkpool_protocol::bundle::{CipherChoice, MemberBundle};
use linkpool_protocol::flow::{Mode, Modes};
use linkpool_proxy::admin;
use linkpool_proxy::config::ProxyConfig;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lp-proxy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const KEY: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";
const MESH: &str = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=";
const ALICE: &str = "zo060cy2M+x7cMF4FKXHbs0CloUFDTRHRboFhw5YfVk=";
const BOB: &str = "pOCSkrZRwni5dyxWn1+puxPZBrRqtoyd+dwrRAn4ogk=";

fn with_key(dir: &TempDir) -> PathBuf {
    let key = dir.0.join("proxy.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir.0.join("proxy.toml")
}

/// As configurations were written before mesh credentials: with a `mesh_key`, now ignored.
fn base() -> String {
    format!(
        "endpoints = [\"203.0.113.10:7117\"]\nprivate_key_file = \"proxy.key\"\nmesh_key = \"{MESH}\"\n"
    )
}

fn parse(dir: &TempDir, text: &str) -> Result<ProxyConfig, ConfigError> {
    let path = with_key(dir);
    ProxyConfig::from_toml_str(&path, text)
}

#[test]
fn the_example_configuration_is_valid() {
    let dir = TempDir::new("example");
    let key = with_key(&dir).with_file_name("proxy.key");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("linkpool-proxy.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // Only the key file's location differs from a real installation.
    let text = text.replace("/etc/linkpool-proxy/proxy.key", key.to_str().unwrap());
    let c = ProxyConfig::from_toml_str(&example, &text).unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.tunnel.device, "lpproxy0");
    assert_eq!(c.mesh_credential_lifetime_s, 900);
    assert_eq!(c.members.len(), 1);
    assert_eq!(c.members[0].name, "alice");
    assert_eq!(c.members[0].cipher, Some(CipherChoice::ChaCha20Poly1305));
    assert!(c.members[0].psk.is_some());
    assert_eq!(c.spreading, Modes::default());
    assert_eq!(
        c.members[0].spreading,
        Some(Modes {
            bulk: Mode::Session,
            ..Modes::default()
        })
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults() {
    let dir = TempDir::new("defaults");
    let c = parse(&dir, &base()).unwrap();
    assert_eq!(
        c.listen,
        [
            "0.0.0.0:7117".parse().unwrap(),
            "[::]:7117".parse().unwrap()
        ]
    );
    assert_eq!(c.tunnel.ipv4_pool.to_string(), "10.77.0.0/16");
    assert_eq!(c.tunnel.ipv6_pool.unwrap().to_string(), "fd77::/64");
    assert_eq!(c.tunnel.egress_device, None);
    assert_eq!(c.tunnel.mtu, 1381);
    assert_eq!(c.private_key.to_base64(), KEY);
    assert_eq!(c.spreading, Modes::default(), "all auto");
    let nat = c.nat();
    assert_eq!(nat.ipv4_pool, ("10.77.0.0".parse().unwrap(), 16));
    // Without the old `mesh_key`, and with any value in it: it is not read.
    let without = base().replace(&format!("mesh_key = \"{MESH}\"\n"), "");
    assert!(!without.contains("mesh_key"));
    assert_eq!(parse(&dir, &without).unwrap().private_key.to_base64(), KEY);
    assert!(parse(&dir, &base().replace(MESH, "short")).is_ok());
}

#[test]
fn errors_name_file_line_key_and_reason() {
    let dir = TempDir::new("errors");
    let b = base();
    let member = |name: &str, key: &str, addr: &str| {
        format!("\n[[member]]\nname = \"{name}\"\npublic_key = \"{key}\"\naddress = [{addr}]\n")
    };
    let cases: Vec<(String, Option<usize>, &str, &str)> = vec![
        (
            b.replace("endpoints = [\"203.0.113.10:7117\"]\n", ""),
            None,
            "endpoints",
            "missing",
        ),
        (
            b.replace("[\"203.0.113.10:7117\"]", "[]"),
            Some(1),
            "endpoints",
            "is empty",
        ),
        (
            b.replace("203.0.113.10:7117", "2001:db8::1:7117"),
            Some(1),
            "endpoints",
            "brackets",
        ),
        (
            b.replace("proxy.key", "nope.key"),
            Some(2),
            "private_key_file",
            "cannot read",
        ),
        (
            b.replace("proxy.key", "proxy.toml.bad"),
            Some(2),
            "private_key_file",
            "does not hold a private key",
        ),
        (
            format!("{b}listen = \"0.0.0.0:1\"\n"),
            Some(4),
            "listen",
            "invalid type: string",
        ),
        (
            format!("{b}listen = [\"0.0.0.0\"]\n"),
            Some(4),
            "listen",
            "not an address:port",
        ),
        (format!("{b}colour = 1\n"), Some(4), "colour", "unknown key"),
        (
            format!("{b}mesh_credential_lifetime_s = 30\n"),
            Some(4),
            "mesh_credential_lifetime_s",
            "30 is out of range: use 60 to 86400 seconds",
        ),
        (
            format!("{b}[tunnel]\nipv4_pool = \"10.77.0.1/16\"\n"),
            Some(5),
            "tunnel.ipv4_pool",
            "host bits",
        ),
        (
            format!("{b}[tunnel]\nipv4_pool = \"fd77::/64\"\n"),
            Some(5),
            "tunnel.ipv4_pool",
            "not an IPv4 prefix",
        ),
        (
            format!("{b}[tunnel]\nmtu = 1000\n"),
            Some(5),
            "tunnel.mtu",
            "1000 is out of range: use 1280 to 1977 (1280 is the IPv6 minimum, and tunnel.ipv6_pool is on)",
        ),
        (
            format!("{b}[tunnel]\nmtu = 9000\n"),
            Some(5),
            "tunnel.mtu",
            "9000 is out of range: use 1280 to 1977 (a datagram is at most 2048 bytes, 71 of them linkpool's headers on a relayed path)",
        ),
        (
            format!("{b}[tunnel]\nmtu = 65535\n"),
            Some(5),
            "tunnel.mtu",
            "65535 is out of range",
        ),
        (
            format!("{b}[tunnel]\nmtu = 70000\n"),
            Some(5),
            "tunnel.mtu",
            "70000 is out of range",
        ),
        (
            format!("{b}[tunnel]\nipv6_pool = \"\"\nmtu = 500\n"),
            Some(6),
            "tunnel.mtu",
            "500 is out of range: use 576 to 1977 (576 is the IPv4 minimum)",
        ),
        (
            format!("{b}{}", member("a", ALICE, "\"10.78.0.2\"")),
            Some(8),
            "member[0].address",
            "not a member address of the pool 10.77.0.0/16",
        ),
        (
            format!("{b}{}", member("a", ALICE, "\"10.77.0.1\"")),
            Some(8),
            "member[0].address",
            "proxy's",
        ),
        (
            format!("{b}{}", member("a", ALICE, "")),
            Some(8),
            "member[0].address",
            "is empty",
        ),
        (
            format!(
                "{b}{}{}",
                member("a", ALICE, "\"10.77.0.2\""),
                member("a", BOB, "\"10.77.0.3\"")
            ),
            Some(11),
            "member[1].name",
            "defined twice",
        ),
        (
            format!(
                "{b}{}{}",
                member("a", ALICE, "\"10.77.0.2\""),
                member("b", ALICE, "\"10.77.0.3\"")
            ),
            Some(12),
            "member[1].public_key",
            "same key",
        ),
        (
            format!(
                "{b}{}{}",
                member("a", ALICE, "\"10.77.0.2\""),
                member("b", BOB, "\"10.77.0.2\"")
            ),
            Some(13),
            "member[1].address",
            "already member `a`'s",
        ),
        (
            format!(
                "{b}{}cipher = \"des\"\n",
                member("a", ALICE, "\"10.77.0.2\"")
            ),
            Some(9),
            "member[0].cipher",
            "unknown cipher",
        ),
        (
            format!(
                "{b}[tunnel]\nipv6_pool = \"\"\n{}",
                member("a", ALICE, "\"fd77::2\"")
            ),
            Some(10),
            "member[0].address",
            "ipv6_pool is off",
        ),
        (
            format!("{b}\n[[member]]\nname = \"a\"\naddress = [\"10.77.0.2\"]\n"),
            Some(5),
            "member[0].public_key",
            "missing",
        ),
        (
            format!("{b}{}", member("a b", ALICE, "\"10.77.0.2\"")),
            Some(6),
            "member[0].name",
            "contains ` `",
        ),
        (
            format!("{b}\n[spreading]\nbulk = \"fast\"\n"),
            Some(6),
            "spreading.bulk",
            "unknown flow mode `fast` (expected auto, session, packet or redundant)",
        ),
        (
            format!("{b}[spreading]\nbulk = \"session\"\nvideo = \"packet\"\n"),
            Some(6),
            "spreading.video",
            "unknown key (known keys: one of `interactive`, `bulk`, `default`)",
        ),
        (
            format!(
                "{b}{}spreading = {{ interactive = \"session\", bulk = \"Packet\" }}\n",
                member("a", ALICE, "\"10.77.0.2\"")
            ),
            Some(9),
            "member[0].spreading.bulk",
            "unknown flow mode `Packet` (expected auto, session, packet or redundant)",
        ),
        (
            format!(
                "{b}{}{}[member.spreading]\ndefault = \"duplicate\"\n",
                member("a", ALICE, "\"10.77.0.2\""),
                member("b", BOB, "\"10.77.0.3\"")
            ),
            Some(15),
            "member[1].spreading.default",
            "unknown flow mode `duplicate` (expected auto, session, packet or redundant)",
        ),
        (
            format!(
                "{b}{}spreading = {{ bulky = \"packet\" }}\n",
                member("a", ALICE, "\"10.77.0.2\"")
            ),
            Some(9),
            "member[0].spreading.bulky",
            "unknown key",
        ),
        (
            format!(
                "{b}{}spreading = \"packet\"\n",
                member("a", ALICE, "\"10.77.0.2\"")
            ),
            Some(9),
            "member[0].spreading",
            "invalid type: string \"packet\", expected struct SpreadingTable",
        ),
    ];
    std::fs::write(dir.0.join("proxy.toml.bad"), "not a key\n").unwrap();
    for (text, line, key, reason) in cases {
        let e = parse(&dir, &text).expect_err(&text);
        assert_eq!(e.file, dir.0.join("proxy.toml"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}\n--- in ---\n{text}");
        assert_eq!(e.line, line, "{e}\n--- in ---\n{text}");
        assert!(e.reason.contains(reason), "{e}\n--- in ---\n{text}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn spreading_proxy_wide_and_per_member() {
    let dir = TempDir::new("spreading");
    let text = format!(
        "{}\n[spreading]\ninteractive = \"session\"\nbulk = \"packet\"\n\n\
         [[member]]\nname = \"a\"\npublic_key = \"{ALICE}\"\naddress = [\"10.77.0.2\"]\n\
         spreading = {{ bulk = \"session\", default = \"redundant\" }}\n\n\
         [[member]]\nname = \"b\"\npublic_key = \"{BOB}\"\naddress = [\"10.77.0.3\"]\n\
         [member.spreading]\ninteractive = \"auto\"\n",
        base()
    );
    let mut c = parse(&dir, &text).unwrap();
    let proxy = Modes {
        interactive: Mode::Session,
        bulk: Mode::Packet,
        default: Mode::Auto,
    };
    assert_eq!(c.spreading, proxy);
    // A member's table replaces the classes it names; the others follow [spreading]
    // (`auto` named is auto, not "as the proxy says").
    assert_eq!(
        c.members[0].spreading,
        Some(Modes {
            interactive: Mode::Session,
            bulk: Mode::Session,
            default: Mode::Redundant,
        })
    );
    assert_eq!(
        c.members[1].spreading,
        Some(Modes {
            interactive: Mode::Auto,
            ..proxy
        })
    );
    // Without a table of its own, a member has none: the core applies the proxy's.
    let text = text.replace("[member.spreading]\ninteractive = \"auto\"\n", "");
    c = parse(&dir, &text).unwrap();
    assert_eq!(c.members[1].spreading, None);

    // `member add` and `member remove` keep the other members' tables.
    let path = with_key(&dir);
    let added = admin::add_member(&path, &text, "c", None, false).unwrap();
    let c = ProxyConfig::from_toml_str(&path, &added.config_text).unwrap();
    assert_eq!(c.members[0].spreading.unwrap().default, Mode::Redundant);
    assert_eq!(c.members[2].spreading, None);
    let removed = admin::remove_member(&path, &added.config_text, "b").unwrap();
    let c = ProxyConfig::from_toml_str(&path, &removed).unwrap();
    assert_eq!(c.spreading, proxy);
    assert_eq!(c.members[0].spreading.unwrap().bulk, Mode::Session);
}

#[test]
fn a_readable_key_file_is_a_warning() {
    let dir = TempDir::new("perm");
    let path = with_key(&dir);
    std::fs::set_permissions(
        dir.0.join("proxy.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let c = ProxyConfig::from_toml_str(&path, &base()).unwrap();
    let key = dir.0.join("proxy.key");
    assert_eq!(
        c.warnings,
        [format!(
            "{} holds the proxy's private key, but other users can read or change it (mode 0644): chmod 600 {}",
            key.display(),
            key.display()
        )]
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = ProxyConfig::from_toml_str(&path, &base()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn mtu_in_range_is_accepted() {
    let dir = TempDir::new("mtu");
    let path = with_key(&dir);
    for (mtu, want) in [(1280, 1280), (1977, 1977)] {
        let c = ProxyConfig::from_toml_str(&path, &format!("{}[tunnel]\nmtu = {mtu}\n", base()))
            .unwrap();
        assert_eq!(c.tunnel.mtu, want);
    }
}

#[test]
fn member_add_appends_keeps_comments_and_takes_the_next_free_addresses() {
    let dir = TempDir::new("add");
    let path = with_key(&dir);
    let original = format!(
        "# The co-op's proxy.\n{}# members below\n[[member]]\nname = \"first\" # hand-written\npublic_key = \"{ALICE}\"\naddress = [\"10.77.0.2\", \"fd77::3\"]",
        base()
    );
    let added = admin::add_member(
        &path,
        &original,
        "second",
        Some(CipherChoice::ChaCha20Poly1305),
        true,
    )
    .unwrap();
    assert!(
        added.config_text.starts_with(&original),
        "the user's text is kept as it was"
    );
    let c = ProxyConfig::from_toml_str(&path, &added.config_text).unwrap();
    let second = c.members.iter().find(|m| m.name == "second").unwrap();
    let want: Vec<IpAddr> = vec!["10.77.0.3".parse().unwrap(), "fd77::2".parse().unwrap()];
    assert_eq!(second.addresses, want, "lowest free address of each pool");
    assert_eq!(second.public_key, added.bundle.private_key.public_key());
    assert_eq!(second.cipher, Some(CipherChoice::ChaCha20Poly1305));
    assert_eq!(second.psk, added.bundle.psk);

    let b = &added.bundle;
    assert_eq!(b.member, "second");
    assert_eq!(b.proxy_public_key, c.private_key.public_key());
    assert_eq!(b.proxy_endpoints, ["203.0.113.10:7117"]);
    assert_eq!(b.addresses, want);
    assert_eq!(MemberBundle::parse(&b.render()).unwrap(), *b);

    let again = admin::add_member(&path, &added.config_text, "second", None, false).unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let bad = admin::add_member(&path, &added.config_text, "no/slash", None, false).unwrap_err();
    assert!(bad.to_string().contains("contains `/`"), "{bad}");
}

#[test]
fn member_remove_takes_out_that_member_only_and_keeps_the_rest_of_the_text() {
    let dir = TempDir::new("remove");
    let path = with_key(&dir);
    let original = format!(
        "# The co-op's proxy.\n{}\n# Alice, router in the bakery\n[[member]]\nname = \"alice\" # hand-written\npublic_key = \"{ALICE}\"\naddress = [\"10.77.0.2\"]\n\n# Bob\n[[member]]\nname = \"bob\"\npublic_key = \"{BOB}\"\naddress = [\"10.77.0.3\"]\n",
        base()
    );
    let text = admin::remove_member(&path, &original, "alice").unwrap();
    let c = ProxyConfig::from_toml_str(&path, &text).unwrap();
    let names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["bob"]);
    assert!(!text.contains(ALICE) && !text.contains("bakery"), "{text}");
    assert!(
        text.starts_with(&format!("# The co-op's proxy.\n{}", base())),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "# Bob\n[[member]]\nname = \"bob\"\npublic_key = \"{BOB}\"\naddress = [\"10.77.0.3\"]\n"
        )),
        "{text}"
    );

    let e = admin::remove_member(&path, &text, "alice").unwrap_err();
    assert!(e.to_string().contains("no member `alice`"), "{e}");
    // The file itself, through the command's own path.
    std::fs::write(&path, &original).unwrap();
    admin::remove_member_from_file(&path, "bob").unwrap();
    let c = ProxyConfig::load(&path).unwrap();
    assert_eq!(c.members.len(), 1);
    assert_eq!(c.members[0].name, "alice");
}

#[test]
fn member_add_refuses_when_the_pool_is_full() {
    let dir = TempDir::new("full");
    let path = with_key(&dir);
    let text = format!(
        "{}[tunnel]\nipv4_pool = \"192.168.9.0/30\"\nipv6_pool = \"\"\n[[member]]\nname = \"a\"\npublic_key = \"{ALICE}\"\naddress = [\"192.168.9.2\"]\n",
        base()
    );
    let e = admin::add_member(&path, &text, "b", None, false).unwrap_err();
    assert!(e.to_string().contains("no free address"), "{e}");
}

#[test]
fn init_writes_a_valid_config_and_key_and_refuses_to_overwrite() {
    let dir = TempDir::new("init");
    let path = dir.0.join("sub/proxy.toml");
    let key = admin::init(&path, &["proxy.example.org:7200".into()], None).unwrap();
    assert_eq!(key, dir.0.join("sub/proxy.key"));
    for p in [&path, &key] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let c = ProxyConfig::load(&path).unwrap();
    assert_eq!(
        c.listen,
        [
            "0.0.0.0:7200".parse().unwrap(),
            "[::]:7200".parse().unwrap()
        ]
    );
    assert_eq!(c.endpoints, ["proxy.example.org:7200"]);
    assert!(c.members.is_empty());
    let before = std::fs::read(&key).unwrap();
    let e = admin::init(&path, &["p:1".into()], None).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was not replaced"
    );
    assert!(admin::init(&dir.0.join("other.toml"), &[], None).is_err());
}
