//! Member bundles: what the co-op hands a member to join.
//!
//! A bundle is one line, `LP1:` followed by the standard base64 (with padding, no line
//! breaks) of a small `key = value` text:
//!
//! ```text
//! member = alice
//! private_key = <base64 32 bytes>
//! proxy_public_key = <base64 32 bytes>
//! proxy_endpoint = 203.0.113.10:7117      (one or more)
//! cipher = aes-256-gcm | chacha20-poly1305
//! psk = <base64 32 bytes>                 (optional)
//! mesh_key = <base64 32 bytes>
//! address = 10.77.0.2                     (one or more: the member's tunnel addresses)
//! ```
//!
//! It is deliberately not serde: the format is tiny, and the gateway should not carry a
//! second text format for it.

use crate::keys::{KeyError, PublicKey, SecretKey, SharedSecret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// What every bundle starts with; the digit is the format version.
pub const BUNDLE_PREFIX: &str = "LP1:";

pub use crate::wire::{CipherSuite as CipherChoice, UnknownCipher};

/// Everything a gateway needs to join the co-op as one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberBundle {
    /// The member's name in the proxy's registry.
    pub member: String,
    /// The member's static private key.
    pub private_key: SecretKey,
    /// The proxy's static public key.
    pub proxy_public_key: PublicKey,
    /// Where the proxy listens: `host:port`, `[v6]:port`; the host may be a DNS name.
    pub proxy_endpoints: Vec<String>,
    /// The AEAD of the member's session.
    pub cipher: CipherChoice,
    /// Optional Noise pre-shared key.
    pub psk: Option<SharedSecret>,
    /// The co-op-wide key that authenticates mesh hellos.
    pub mesh_key: SharedSecret,
    /// The member's tunnel addresses (normally one IPv4 and one IPv6).
    pub addresses: Vec<IpAddr>,
}

/// Why a bundle was refused. `Display` names the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The text does not start with `LP1:` (or is empty).
    NotABundle,
    /// It starts with `LP<n>:` for a version this build does not know.
    UnsupportedVersion(String),
    /// What follows `LP1:` is not base64.
    BadBase64,
    /// The decoded text is not UTF-8.
    NotUtf8,
    /// A line without `=`.
    BadLine {
        /// 1-based line number inside the decoded text.
        line: usize,
    },
    /// A key this version does not know.
    UnknownKey(String),
    /// A required key is absent.
    MissingKey(&'static str),
    /// A key that may appear once appears again.
    DuplicateKey(&'static str),
    /// A key whose value is wrong.
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotABundle => {
                write!(f, "not a member bundle (expected `{BUNDLE_PREFIX}...`)")
            }
            BundleError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "bundle format `{v}` is not supported by this version (expected `{BUNDLE_PREFIX}`)"
                )
            }
            BundleError::BadBase64 => f.write_str(
                "bundle is not valid base64 after `LP1:` (was it cut or altered when copied?)",
            ),
            BundleError::NotUtf8 => f.write_str("bundle content is not UTF-8 text"),
            BundleError::BadLine { line } => {
                write!(f, "bundle line {line}: expected `key = value`")
            }
            BundleError::UnknownKey(k) => write!(f, "bundle key `{k}`: unknown key"),
            BundleError::MissingKey(k) => write!(f, "bundle key `{k}`: missing"),
            BundleError::DuplicateKey(k) => write!(f, "bundle key `{k}`: given more than once"),
            BundleError::BadValue { key, reason } => write!(f, "bundle key `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for BundleError {}

/// Checks a member name: 1 to 32 characters of `A-Z a-z 0-9 . _ -`, not starting with
/// `.` or `-` (names end up in file names, logs and status output).
pub fn check_member_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("member name is empty".into());
    }
    if name.len() > 32 {
        return Err(format!("member name `{name}` is longer than 32 characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "member name `{name}` must not start with `.` or `-`"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "member name `{name}` contains `{c}` (allowed: letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

/// Checks a proxy endpoint: `host:port` with a DNS name or IPv4 address, or `[ipv6]:port`.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let port = if let Some(rest) = endpoint.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("endpoint `{endpoint}`: expected `[ipv6]:port`"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("endpoint `{endpoint}`: `{v6}` is not an IPv6 address"))?;
        port
    } else {
        let (host, port) = endpoint
            .rsplit_once(':')
            .ok_or_else(|| format!("endpoint `{endpoint}`: expected `host:port`"))?;
        if host.contains(':') {
            return Err(format!(
                "endpoint `{endpoint}`: IPv6 addresses need brackets, as in `[{host}]:{port}`"
            ));
        }
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !host_ok {
            return Err(format!(
                "endpoint `{endpoint}`: `{host}` is not a host name or address"
            ));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!(
            "endpoint `{endpoint}`: `{port}` is not a port (1-65535)"
        )),
    }
}

impl MemberBundle {
    /// The one-line `LP1:...` form.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut line = |k: &str, v: &str| {
            text.push_str(k);
            text.push_str(" = ");
            text.push_str(v);
            text.push('\n');
        };
        line("member", &self.member);
        line("private_key", &self.private_key.to_base64());
        line("proxy_public_key", &self.proxy_public_key.to_base64());
        for e in &self.proxy_endpoints {
            line("proxy_endpoint", e);
        }
        line("cipher", self.cipher.as_str());
        if let Some(psk) = &self.psk {
            line("psk", &psk.to_base64());
        }
        line("mesh_key", &self.mesh_key.to_base64());
        for a in &self.addresses {
            line("address", &a.to_string());
        }
        format!("{BUNDLE_PREFIX}{}", STANDARD.encode(text))
    }

    /// Parses a bundle. Whitespace anywhere (a bundle pasted from a mail with line breaks,
    /// or with a trailing newline) is ignored.
    pub fn parse(input: &str) -> Result<Self, BundleError> {
        let compact: String = input.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return Err(BundleError::NotABundle);
        }
        let Some(payload) = compact.strip_prefix(BUNDLE_PREFIX) else {
            let version = compact.split(':').next().unwrap_or("");
            if compact.contains(':')
                && version.len() > 2
                && version.starts_with("LP")
                && version[2..].chars().all(|c| c.is_ascii_digit())
            {
                return Err(BundleError::UnsupportedVersion(format!("{version}:")));
            }
            return Err(BundleError::NotABundle);
        };
        let bytes = STANDARD
            .decode(payload)
            .map_err(|_| BundleError::BadBase64)?;
        let text = String::from_utf8(bytes).map_err(|_| BundleError::NotUtf8)?;
        Self::parse_text(&text)
    }

    fn parse_text(text: &str) -> Result<Self, BundleError> {
        let mut member = None;
        let mut private_key = None;
        let mut proxy_public_key = None;
        let mut proxy_endpoints = Vec::new();
        let mut cipher = None;
        let mut psk = None;
        let mut mesh_key = None;
        let mut addresses = Vec::new();

        fn once<T>(slot: &mut Option<T>, key: &'static str, v: T) -> Result<(), BundleError> {
            if slot.replace(v).is_some() {
                return Err(BundleError::DuplicateKey(key));
            }
            Ok(())
        }
        fn key_err(key: &'static str) -> impl Fn(KeyError) -> BundleError {
            move |e| BundleError::BadValue {
                key,
                reason: e.to_string(),
            }
        }

        for (i, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (k, v) = l
                .split_once('=')
                .ok_or(BundleError::BadLine { line: i + 1 })?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "member" => {
                    check_member_name(v).map_err(|reason| BundleError::BadValue {
                        key: "member",
                        reason,
                    })?;
                    once(&mut member, "member", v.to_string())?
                }
                "private_key" => once(
                    &mut private_key,
                    "private_key",
                    SecretKey::from_base64(v).map_err(key_err("private_key"))?,
                )?,
                "proxy_public_key" => once(
                    &mut proxy_public_key,
                    "proxy_public_key",
                    PublicKey::from_base64(v).map_err(key_err("proxy_public_key"))?,
                )?,
                "proxy_endpoint" => {
                    check_endpoint(v).map_err(|reason| BundleError::BadValue {
                        key: "proxy_endpoint",
                        reason,
                    })?;
                    proxy_endpoints.push(v.to_string());
                }
                "cipher" => once(
                    &mut cipher,
                    "cipher",
                    v.parse()
                        .map_err(|e: UnknownCipher| BundleError::BadValue {
                            key: "cipher",
                            reason: e.to_string(),
                        })?,
                )?,
                "psk" => once(
                    &mut psk,
                    "psk",
                    SharedSecret::from_base64(v).map_err(key_err("psk"))?,
                )?,
                "mesh_key" => once(
                    &mut mesh_key,
                    "mesh_key",
                    SharedSecret::from_base64(v).map_err(key_err("mesh_key"))?,
                )?,
                "address" => {
                    let a: IpAddr = v.parse().map_err(|_| BundleError::BadValue {
                        key: "address",
                        reason: format!("`{v}` is not an IP address"),
                    })?;
                    if addresses.contains(&a) {
                        return Err(BundleError::BadValue {
                            key: "address",
                            reason: format!("`{a}` given twice"),
                        });
                    }
                    addresses.push(a);
                }
                other => return Err(BundleError::UnknownKey(other.to_string())),
            }
        }
        if proxy_endpoints.is_empty() {
            return Err(BundleError::MissingKey("proxy_endpoint"));
        }
        if addresses.is_empty() {
            return Err(BundleError::MissingKey("address"));
        }
        Ok(MemberBundle {
            member: member.ok_or(BundleError::MissingKey("member"))?,
            private_key: private_key.ok_or(BundleError::MissingKey("private_key"))?,
            proxy_public_key: proxy_public_key
                .ok_or(BundleError::MissingKey("proxy_public_key"))?,
            proxy_endpoints,
            cipher: cipher.unwrap_or_default(),
            psk,
            mesh_key: mesh_key.ok_or(BundleError::MissingKey("mesh_key"))?,
            addresses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> MemberBundle {
        MemberBundle {
            member: "alice".into(),
            private_key: SecretKey::from_bytes([1; 32]),
            proxy_public_key: PublicKey([2; 32]),
            proxy_endpoints: vec!["203.0.113.10:7117".into(), "[2001:db8::10]:7117".into()],
            cipher: CipherChoice::ChaCha20Poly1305,
            psk: Some(SharedSecret::from_bytes([3; 32])),
            mesh_key: SharedSecret::from_bytes([4; 32]),
            addresses: vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()],
        }
    }

    /// Known bundle → known text. If this changes, bundles already handed to members break.
    const FIXED_VECTOR: &str = "LP1:bWVtYmVyID0gYWxpY2UKcHJpdmF0ZV9rZXkgPSBBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFPQpwcm94eV9wdWJsaWNfa2V5ID0gQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnST0KcHJveHlfZW5kcG9pbnQgPSAyMDMuMC4xMTMuMTA6NzExNwpwcm94eV9lbmRwb2ludCA9IFsyMDAxOmRiODo6MTBdOjcxMTcKY2lwaGVyID0gY2hhY2hhMjAtcG9seTEzMDUKcHNrID0gQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TT0KbWVzaF9rZXkgPSBCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRPQphZGRyZXNzID0gMTAuNzcuMC4yCmFkZHJlc3MgPSBmZDc3OjoyCg==";

    fn encode(text: &str) -> String {
        format!("LP1:{}", STANDARD.encode(text))
    }

    #[test]
    fn fixed_vector_renders_and_parses() {
        assert_eq!(fixed().render(), FIXED_VECTOR);
        assert_eq!(MemberBundle::parse(FIXED_VECTOR).unwrap(), fixed());
    }

    #[test]
    fn round_trip_with_generated_keys_and_no_psk() {
        let b = MemberBundle {
            psk: None,
            cipher: CipherChoice::Aes256Gcm,
            private_key: SecretKey::generate().unwrap(),
            mesh_key: SharedSecret::generate().unwrap(),
            proxy_endpoints: vec!["proxy.example.org:7117".into()],
            ..fixed()
        };
        let s = b.render();
        assert!(s.starts_with("LP1:") && !s.contains(char::is_whitespace));
        assert_eq!(MemberBundle::parse(&s).unwrap(), b);
    }

    #[test]
    fn whitespace_pasted_around_and_inside_is_ignored() {
        let s = FIXED_VECTOR;
        let wrapped = format!("\n  {}\r\n{}\n\t{}  \n\n", &s[..30], &s[30..100], &s[100..]);
        assert_eq!(MemberBundle::parse(&wrapped).unwrap(), fixed());
    }

    #[test]
    fn cipher_defaults_to_aes_and_comments_are_allowed() {
        let text = "# made by hand\nmember = bob\nprivate_key = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nproxy_public_key = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nproxy_endpoint = proxy.example.org:7117\nmesh_key = BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=\naddress = 10.77.0.3\n";
        let b = MemberBundle::parse(&encode(text)).unwrap();
        assert_eq!(b.cipher, CipherChoice::Aes256Gcm);
        assert_eq!(b.member, "bob");
        assert_eq!(b.psk, None);
    }

    fn with_line_replaced(key: &str, new: Option<&str>) -> String {
        let text = String::from_utf8(
            STANDARD
                .decode(FIXED_VECTOR.strip_prefix("LP1:").unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut out = String::new();
        let mut replaced = false;
        for l in text.lines() {
            if l.starts_with(&format!("{key} =")) && !replaced {
                replaced = true;
                if let Some(n) = new {
                    out.push_str(n);
                    out.push('\n');
                }
            } else {
                out.push_str(l);
                out.push('\n');
            }
        }
        assert!(replaced, "no line for {key}");
        encode(&out)
    }

    #[test]
    fn errors_name_the_key_and_reason() {
        let cases: Vec<(String, BundleError)> = vec![
            ("".into(), BundleError::NotABundle),
            ("hello".into(), BundleError::NotABundle),
            (
                "LP2:AAAA".into(),
                BundleError::UnsupportedVersion("LP2:".into()),
            ),
            ("LP1:***".into(), BundleError::BadBase64),
            (
                format!("LP1:{}", STANDARD.encode([0xff, 0xfe])),
                BundleError::NotUtf8,
            ),
            (
                encode("member = a\nnonsense\n"),
                BundleError::BadLine { line: 2 },
            ),
            (
                with_line_replaced("member", Some("colour = blue")),
                BundleError::UnknownKey("colour".into()),
            ),
            (
                with_line_replaced("mesh_key", None),
                BundleError::MissingKey("mesh_key"),
            ),
            (
                with_line_replaced("member", None),
                BundleError::MissingKey("member"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(MemberBundle::parse(&input), Err(want), "input {input:?}");
        }

        let bad = |key: &'static str, line: &str| match MemberBundle::parse(&with_line_replaced(
            key,
            Some(line),
        )) {
            Err(BundleError::BadValue { key: k, reason }) => {
                assert_eq!(k, key);
                reason
            }
            other => panic!("{key}: expected a bad value, got {other:?}"),
        };
        assert!(bad("private_key", "private_key = !!!").contains("base64"));
        assert!(bad("proxy_public_key", "proxy_public_key = AAAA").contains("3 bytes"));
        assert!(bad("address", "address = 10.77.0.300").contains("not an IP address"));
        assert!(bad("cipher", "cipher = rot13").contains("unknown cipher"));
        assert!(bad("proxy_endpoint", "proxy_endpoint = 2001:db8::1:7117").contains("brackets"));
        assert!(bad("proxy_endpoint", "proxy_endpoint = host:0").contains("port"));
        assert!(bad("member", "member = ../etc").contains("must not start"));

        let dup = with_line_replaced("cipher", Some("cipher = aes-256-gcm\ncipher = aes-256-gcm"));
        assert_eq!(
            MemberBundle::parse(&dup),
            Err(BundleError::DuplicateKey("cipher"))
        );

        let text = "member = a\nprivate_key = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nproxy_public_key = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nproxy_endpoint = p:1\nmesh_key = BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=\n";
        assert_eq!(
            MemberBundle::parse(&encode(text)),
            Err(BundleError::MissingKey("address"))
        );
        let msg = BundleError::MissingKey("address").to_string();
        assert_eq!(msg, "bundle key `address`: missing");
    }

    #[test]
    fn endpoints_and_names() {
        for ok in [
            "203.0.113.10:7117",
            "[2001:db8::1]:1",
            "proxy.example.org:65535",
            "p:1",
        ] {
            check_endpoint(ok).unwrap();
        }
        for bad in [
            "",
            ":7117",
            "host",
            "host:",
            "host:70000",
            "[::1:7117",
            "[zz]:1",
            "a..b:1",
            "a b:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        for ok in ["alice", "node-7", "a.b_c"] {
            check_member_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(33)] {
            assert!(check_member_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cipher_names() {
        for c in [CipherChoice::Aes256Gcm, CipherChoice::ChaCha20Poly1305] {
            assert_eq!(c.to_string().parse::<CipherChoice>().unwrap(), c);
        }
        assert!("AES".parse::<CipherChoice>().is_err());
    }
}
