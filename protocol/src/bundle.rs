//! Member bundles: what the co-op hands a member to join.
//!
//! A bundle is one line, `LP2:` followed by the standard base64 (with padding, no line
//! breaks) of a small `key = value` text whose last line is a checksum:
//!
//! ```text
//! member = alice
//! private_key = <base64 32 bytes>
//! proxy_public_key = <base64 32 bytes>
//! proxy_endpoint = 203.0.113.10:7117      (one or more)
//! cipher = aes-256-gcm | chacha20-poly1305
//! psk = <base64 32 bytes>                 (optional)
//! address = 10.77.0.2                     (one or more: the member's tunnel addresses)
//! checksum = <16 hex digits>              (always last)
//! ```
//!
//! The checksum is the first 8 bytes of SHA-256 over `LP2:` and every byte of the text
//! before the `checksum` line. It is not a signature (anyone can compute it): it is there
//! so that a bundle damaged in copying (one character changed, two swapped, the end cut
//! off) is refused as damaged instead of passing as another valid bundle with a wrong
//! address or key. A change to base64 characters changes the decoded bytes (the decoder
//! refuses non-canonical padding and trailing bits), so every such change is caught
//! except with probability 2^-64.
//!
//! The first format, `LP1:`, is the same text without the checksum line. It is still
//! read ([`BundleFormat::Legacy`]); callers tell the user to get a new bundle. Bundles made
//! before mesh credentials also carry a co-op-wide `mesh_key` line: it is read and ignored
//! (the proxy grants each member its own credential through its tunnel instead).
//!
//! It is deliberately not serde: the format is tiny, and the gateway should not carry a
//! second text format for it.

use crate::keys::{KeyError, PublicKey, SecretKey, SharedSecret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// What every bundle starts with; the digit is the format version.
pub const BUNDLE_PREFIX: &str = "LP2:";
/// The first format, without a checksum: still read, never written.
pub const LEGACY_BUNDLE_PREFIX: &str = "LP1:";
/// Bytes of SHA-256 kept as the checksum (written as twice as many hex digits).
pub const CHECKSUM_LEN: usize = 8;
/// The key of the checksum line.
const CHECKSUM_KEY: &[u8] = b"checksum = ";

/// What to tell the user about an `LP1:` bundle (check-config and the daemon's log).
pub const LEGACY_WARNING: &str = "this bundle has no checksum (an `LP1:` bundle: a mistake made in copying it would go unnoticed); ask your co-op for a new one";

pub use crate::wire::{CipherSuite as CipherChoice, UnknownCipher};

/// Which format a bundle was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFormat {
    /// `LP2:`, with a checksum.
    Checked,
    /// `LP1:`, without one: worth a warning ([`LEGACY_WARNING`]).
    Legacy,
}

impl BundleFormat {
    /// The warning to show for this format, if any.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            BundleFormat::Checked => None,
            BundleFormat::Legacy => Some(LEGACY_WARNING),
        }
    }
}

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
    /// The member's tunnel addresses (normally one IPv4 and one IPv6).
    pub addresses: Vec<IpAddr>,
}

/// Why a bundle was refused. `Display` says what is wrong and, for a bundle damaged in
/// copying, that it was damaged in copying (and how, where that can be told).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The text does not start with `LP2:` or `LP1:` (or is empty).
    NotABundle,
    /// It starts with `LP<n>:` for a version this build does not know.
    UnsupportedVersion(String),
    /// An intact `LP2:` bundle behind a damaged prefix (what it starts with instead).
    WrongPrefix(String),
    /// A character that cannot be in a bundle.
    BadCharacter {
        /// The character.
        found: char,
        /// 1-based position in the bundle, not counting whitespace.
        position: usize,
    },
    /// The base64 does not come out even: characters lost or added, or the end cut off.
    BadLength,
    /// The checksum line at the end is missing or cut short: the end was cut off.
    Truncated,
    /// The checksum does not match what it covers: the bundle was altered.
    ChecksumMismatch,
    /// What follows the prefix is not base64 for another reason.
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

impl BundleError {
    /// Whether the error means the bundle was damaged on its way (cut, altered), as opposed
    /// to a bundle that is whole but wrong or not a bundle at all.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            BundleError::WrongPrefix(_)
                | BundleError::BadCharacter { .. }
                | BundleError::BadLength
                | BundleError::Truncated
                | BundleError::ChecksumMismatch
                | BundleError::BadBase64
        )
    }
}

const COPY_AGAIN: &str =
    "copy the whole line again exactly as you received it, or ask your co-op for a new one";

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
            BundleError::WrongPrefix(found) if found.is_empty() => write!(
                f,
                "bundle was altered in copying: its `{BUNDLE_PREFIX}` prefix is missing; {COPY_AGAIN}"
            ),
            BundleError::WrongPrefix(found) => write!(
                f,
                "bundle was altered in copying: it starts with `{}` instead of `{BUNDLE_PREFIX}`; {COPY_AGAIN}",
                found.escape_debug()
            ),
            BundleError::BadCharacter { found, position } => write!(
                f,
                "bundle was altered in copying: `{}` (character {position}, not counting spaces and line breaks) cannot be part of a bundle; {COPY_AGAIN}",
                found.escape_debug()
            ),
            BundleError::BadLength => write!(
                f,
                "bundle was cut short or altered in copying: its length is wrong (characters lost or added, or the end cut off); {COPY_AGAIN}"
            ),
            BundleError::Truncated => write!(
                f,
                "bundle was cut short in copying: its end (the checksum) is missing; {COPY_AGAIN}"
            ),
            BundleError::ChecksumMismatch => write!(
                f,
                "bundle was altered in copying: its checksum does not match its content; {COPY_AGAIN}"
            ),
            BundleError::BadBase64 => write!(
                f,
                "bundle is not valid base64 after its prefix (was it cut or altered when copied?); {COPY_AGAIN}"
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

/// The checksum of `text` as written in a bundle: 16 lowercase hex digits.
fn checksum_hex(text: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(BUNDLE_PREFIX.as_bytes())
        .chain_update(text)
        .finalize();
    digest[..CHECKSUM_LEN]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `LP2:` + base64 of `text` with its checksum line appended (a line break is added first
/// when `text` does not end with one). [`MemberBundle::render`] uses it; so can tests and
/// fuzzers that want a well-formed bundle around arbitrary text.
pub fn wrap_text(text: &[u8]) -> String {
    let mut payload = text.to_vec();
    if !payload.is_empty() && !payload.ends_with(b"\n") {
        payload.push(b'\n');
    }
    let sum = checksum_hex(&payload);
    payload.extend_from_slice(CHECKSUM_KEY);
    payload.extend_from_slice(sum.as_bytes());
    payload.push(b'\n');
    format!("{BUNDLE_PREFIX}{}", STANDARD.encode(payload))
}

/// Base64-decodes what follows a prefix of `offset` characters, naming what is wrong.
fn decode(payload: &str, offset: usize) -> Result<Vec<u8>, BundleError> {
    use base64::DecodeError as E;
    STANDARD.decode(payload).map_err(|e| match e {
        // Offsets are in bytes; report characters (a pasted non-ASCII character).
        E::InvalidByte(at, _) => BundleError::BadCharacter {
            found: payload
                .get(at..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER),
            position: offset + payload.get(..at).map_or(at, |p| p.chars().count()) + 1,
        },
        E::InvalidLength(_) | E::InvalidPadding => BundleError::BadLength,
        E::InvalidLastSymbol(..) => BundleError::ChecksumMismatch,
    })
}

/// Decodes an `LP2:` payload and checks its checksum; returns the text before it.
fn open_checked(payload: &str) -> Result<Vec<u8>, BundleError> {
    let mut bytes = decode(payload, BUNDLE_PREFIX.len())?;
    // The checksum line is the last line: find where it starts.
    let start = (0..=bytes.len().saturating_sub(CHECKSUM_KEY.len()))
        .rev()
        .find(|&i| bytes[i..].starts_with(CHECKSUM_KEY) && (i == 0 || bytes[i - 1] == b'\n'));
    let Some(start) = start else {
        return Err(BundleError::Truncated);
    };
    let written = &bytes[start + CHECKSUM_KEY.len()..];
    let want_len = 2 * CHECKSUM_LEN + 1;
    if written.len() != want_len || written[want_len - 1] != b'\n' {
        let cut = written.len() < want_len && written.iter().all(u8::is_ascii_hexdigit);
        return Err(if cut {
            BundleError::Truncated
        } else {
            BundleError::ChecksumMismatch
        });
    }
    if written[..want_len - 1] != *checksum_hex(&bytes[..start]).as_bytes() {
        return Err(BundleError::ChecksumMismatch);
    }
    bytes.truncate(start);
    Ok(bytes)
}

/// An intact `LP2:` payload behind a damaged prefix: what stands in front of it.
fn damaged_prefix(compact: &str) -> Option<String> {
    let n = BUNDLE_PREFIX.len();
    let split = |s: &str, len: usize| s.char_indices().nth(len).map(|(i, _)| i);
    // The prefix altered, one character of it lost or one added, or all of it lost.
    let found = [n, n - 1, n + 1, 0].into_iter().find_map(|len| {
        let (head, rest) = compact.split_at(split(compact, len)?);
        open_checked(rest).ok().map(|_| head.to_string())
    });
    if found.is_some() {
        return found;
    }
    // Its `:` moved: `LP2b:WVt...` for `LP2:bWVt...`.
    let colon = compact
        .char_indices()
        .take(n + 2)
        .find(|&(_, c)| c == ':')?
        .0;
    let without = format!("{}{}", &compact[..colon], &compact[colon + 1..]);
    let rest = &without[split(&without, n - 1)?..];
    open_checked(rest)
        .ok()
        .map(|_| compact[..=colon].to_string())
}

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
    /// The one-line `LP2:...` form, with its checksum.
    pub fn render(&self) -> String {
        wrap_text(self.text().as_bytes())
    }

    /// The `key = value` text inside the bundle (without a checksum line).
    fn text(&self) -> String {
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
        for a in &self.addresses {
            line("address", &a.to_string());
        }
        text
    }

    /// Parses a bundle, `LP2:` or `LP1:` (see [`MemberBundle::parse_with_format`] to know
    /// which). Whitespace anywhere (a bundle pasted from a mail with line breaks, or with a
    /// trailing newline) is ignored.
    pub fn parse(input: &str) -> Result<Self, BundleError> {
        Self::parse_with_format(input).map(|(b, _)| b)
    }

    /// Parses a bundle and says which format it was in: an `LP1:` bundle has no checksum,
    /// and the caller should pass [`LEGACY_WARNING`] on to the user.
    pub fn parse_with_format(input: &str) -> Result<(Self, BundleFormat), BundleError> {
        let compact: String = input.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return Err(BundleError::NotABundle);
        }
        if let Some(payload) = compact.strip_prefix(BUNDLE_PREFIX) {
            let text =
                String::from_utf8(open_checked(payload)?).map_err(|_| BundleError::NotUtf8)?;
            return Ok((Self::parse_text(&text)?, BundleFormat::Checked));
        }
        // Before anything else: a whole LP2 bundle whose prefix was damaged (including
        // `LP2:` turned into `LP1:`, which would otherwise be read without a checksum).
        if let Some(found) = damaged_prefix(&compact) {
            return Err(BundleError::WrongPrefix(found));
        }
        if let Some(payload) = compact.strip_prefix(LEGACY_BUNDLE_PREFIX) {
            let bytes = decode(payload, LEGACY_BUNDLE_PREFIX.len())?;
            let text = String::from_utf8(bytes).map_err(|_| BundleError::NotUtf8)?;
            return Ok((Self::parse_text(&text)?, BundleFormat::Legacy));
        }
        let version = compact.split(':').next().unwrap_or("");
        if compact.contains(':')
            && version.len() > 2
            && version.starts_with("LP")
            && version[2..].chars().all(|c| c.is_ascii_digit())
        {
            return Err(BundleError::UnsupportedVersion(format!("{version}:")));
        }
        Err(BundleError::NotABundle)
    }

    fn parse_text(text: &str) -> Result<Self, BundleError> {
        let mut member = None;
        let mut private_key = None;
        let mut proxy_public_key = None;
        let mut proxy_endpoints = Vec::new();
        let mut cipher = None;
        let mut psk = None;
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
                // Older bundles' co-op-wide mesh key: nothing uses it any more.
                "mesh_key" => {}
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
            addresses: vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()],
        }
    }

    /// Known bundle → known text. If this changes, bundles already handed to members break.
    /// (The checksum was computed apart from this code: Python's hashlib.sha256 over `LP2:`
    /// and the text, first 8 bytes; the line is `checksum = ce2e28906e3ee927`.)
    const FIXED_VECTOR: &str = "LP2:bWVtYmVyID0gYWxpY2UKcHJpdmF0ZV9rZXkgPSBBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFPQpwcm94eV9wdWJsaWNfa2V5ID0gQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnST0KcHJveHlfZW5kcG9pbnQgPSAyMDMuMC4xMTMuMTA6NzExNwpwcm94eV9lbmRwb2ludCA9IFsyMDAxOmRiODo6MTBdOjcxMTcKY2lwaGVyID0gY2hhY2hhMjAtcG9seTEzMDUKcHNrID0gQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TT0KYWRkcmVzcyA9IDEwLjc3LjAuMgphZGRyZXNzID0gZmQ3Nzo6MgpjaGVja3N1bSA9IGNlMmUyODkwNmUzZWU5MjcK";

    /// The same bundle as `member add` wrote it before mesh credentials, with the co-op's
    /// `mesh_key` (checksum `45ae1510ccc74e16`): members hold bundles like this one.
    const MESH_KEY_VECTOR: &str = "LP2:bWVtYmVyID0gYWxpY2UKcHJpdmF0ZV9rZXkgPSBBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFPQpwcm94eV9wdWJsaWNfa2V5ID0gQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnST0KcHJveHlfZW5kcG9pbnQgPSAyMDMuMC4xMTMuMTA6NzExNwpwcm94eV9lbmRwb2ludCA9IFsyMDAxOmRiODo6MTBdOjcxMTcKY2lwaGVyID0gY2hhY2hhMjAtcG9seTEzMDUKcHNrID0gQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TT0KbWVzaF9rZXkgPSBCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRPQphZGRyZXNzID0gMTAuNzcuMC4yCmFkZHJlc3MgPSBmZDc3OjoyCmNoZWNrc3VtID0gNDVhZTE1MTBjY2M3NGUxNgo=";

    /// The same bundle in the first format, as `member add` wrote it before LP2: members
    /// hold bundles like this one, so it must keep parsing.
    const LEGACY_VECTOR: &str = "LP1:bWVtYmVyID0gYWxpY2UKcHJpdmF0ZV9rZXkgPSBBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFPQpwcm94eV9wdWJsaWNfa2V5ID0gQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnSUNBZ0lDQWdJQ0FnST0KcHJveHlfZW5kcG9pbnQgPSAyMDMuMC4xMTMuMTA6NzExNwpwcm94eV9lbmRwb2ludCA9IFsyMDAxOmRiODo6MTBdOjcxMTcKY2lwaGVyID0gY2hhY2hhMjAtcG9seTEzMDUKcHNrID0gQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNREF3TT0KbWVzaF9rZXkgPSBCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRPQphZGRyZXNzID0gMTAuNzcuMC4yCmFkZHJlc3MgPSBmZDc3OjoyCg==";

    /// An `LP2:` bundle (with a valid checksum) around `text`.
    fn encode(text: &str) -> String {
        wrap_text(text.as_bytes())
    }

    fn legacy_text() -> String {
        let payload = LEGACY_VECTOR.strip_prefix(LEGACY_BUNDLE_PREFIX).unwrap();
        String::from_utf8(STANDARD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn fixed_vector_renders_and_parses() {
        assert_eq!(fixed().render(), FIXED_VECTOR);
        assert_eq!(
            MemberBundle::parse_with_format(FIXED_VECTOR).unwrap(),
            (fixed(), BundleFormat::Checked)
        );
        let text = String::from_utf8(
            STANDARD
                .decode(FIXED_VECTOR.strip_prefix(BUNDLE_PREFIX).unwrap())
                .unwrap(),
        )
        .unwrap();
        let without_mesh_key: String = legacy_text()
            .lines()
            .filter(|l| !l.starts_with("mesh_key"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            text,
            format!("{without_mesh_key}checksum = ce2e28906e3ee927\n")
        );
        assert_eq!(checksum_hex(legacy_text().as_bytes()), "45ae1510ccc74e16");
        // A bundle from before mesh credentials is the same bundle: its key is ignored.
        assert_eq!(
            MemberBundle::parse_with_format(MESH_KEY_VECTOR).unwrap(),
            (fixed(), BundleFormat::Checked)
        );
    }

    #[test]
    fn legacy_bundles_still_parse_and_say_they_have_no_checksum() {
        let (b, format) = MemberBundle::parse_with_format(LEGACY_VECTOR).unwrap();
        assert_eq!(b, fixed());
        assert_eq!(format, BundleFormat::Legacy);
        let w = format.warning().unwrap();
        assert!(w.contains("no checksum") && w.contains("ask your co-op for a new one"));
        assert_eq!(BundleFormat::Checked.warning(), None);
        // Rendering it again gives the checked format.
        assert_eq!(b.render(), FIXED_VECTOR);
    }

    /// What the issue found: `fd77::2` → `fd70::2` inside an LP1 bundle is another valid
    /// bundle (nothing can tell); inside an LP2 bundle it is refused as altered.
    #[test]
    fn an_altered_address_is_refused() {
        let altered = legacy_text().replace("fd77::2", "fd70::2");
        let lp1 = format!("{LEGACY_BUNDLE_PREFIX}{}", STANDARD.encode(&altered));
        assert!(MemberBundle::parse(&lp1).is_ok(), "LP1 cannot tell");
        let payload = STANDARD
            .decode(FIXED_VECTOR.strip_prefix(BUNDLE_PREFIX).unwrap())
            .unwrap();
        let payload = String::from_utf8(payload)
            .unwrap()
            .replace("fd77::2", "fd70::2");
        let lp2 = format!("{BUNDLE_PREFIX}{}", STANDARD.encode(payload));
        let e = MemberBundle::parse(&lp2).unwrap_err();
        assert_eq!(e, BundleError::ChecksumMismatch);
        assert!(
            e.to_string()
                .starts_with("bundle was altered in copying: its checksum does not match"),
            "{e}"
        );
    }

    /// Characters a substitution is tried with at every position: base64 letters of each
    /// kind, the padding, the prefix's own characters, and some a paste brings in.
    const SUBSTITUTES: &[char] = &[
        'A', 'B', 'Q', 'g', 'w', 'z', '0', '1', '2', '9', '+', '/', '=', 'L', 'P', ':', '-', '_',
        '.', '*', 'é', ' ', '\u{0}',
    ];

    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    fn assert_damage(input: &str, what: &str) {
        match MemberBundle::parse(input) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => {
                assert!(e.is_damage(), "{what}: {e:?}");
                let msg = e.to_string();
                assert!(msg.contains("in copying"), "{what}: {msg}");
                assert!(
                    !msg.contains(&fixed().private_key.to_base64()),
                    "{what}: the message shows the key"
                );
            }
        }
    }

    #[test]
    fn every_single_character_substitution_is_refused() {
        let chars: Vec<char> = FIXED_VECTOR.chars().collect();
        let mut tried = 0;
        for i in 0..chars.len() {
            // The next character of the base64 alphabet too: the smallest change there is.
            let neighbour = ALPHABET
                .find(chars[i])
                .map(|p| ALPHABET.as_bytes()[(p + 1) % 64] as char);
            for &c in SUBSTITUTES.iter().chain(neighbour.iter()) {
                if c == chars[i] {
                    continue;
                }
                let mut v = chars.clone();
                v[i] = c;
                let s: String = v.into_iter().collect();
                assert_damage(&s, &format!("position {i}: {:?} -> {c:?}", chars[i]));
                tried += 1;
            }
        }
        assert!(tried > 20 * FIXED_VECTOR.len(), "{tried}");
    }

    #[test]
    fn transpositions_deletions_and_insertions_are_refused() {
        let chars: Vec<char> = FIXED_VECTOR.chars().collect();
        for i in 0..chars.len() {
            if i + 1 < chars.len() && chars[i] != chars[i + 1] {
                let mut v = chars.clone();
                v.swap(i, i + 1);
                assert_damage(&v.iter().collect::<String>(), &format!("swap at {i}"));
            }
            let mut v = chars.clone();
            v.remove(i);
            assert_damage(&v.iter().collect::<String>(), &format!("delete {i}"));
            let mut v = chars.clone();
            v.insert(i, 'A');
            assert_damage(&v.iter().collect::<String>(), &format!("insert at {i}"));
        }
    }

    #[test]
    fn truncation_is_refused_and_said_to_be() {
        for len in 1..FIXED_VECTOR.len() {
            let cut = &FIXED_VECTOR[..len];
            let e = MemberBundle::parse(cut).unwrap_err();
            if len < BUNDLE_PREFIX.len() {
                assert_eq!(e, BundleError::NotABundle, "{cut}");
                continue;
            }
            // Cut at a whole base64 group, the text decodes but its end is missing;
            // elsewhere, the base64 does not come out even.
            let want = if (len - BUNDLE_PREFIX.len()) % 4 == 0 {
                BundleError::Truncated
            } else {
                BundleError::BadLength
            };
            assert_eq!(e, want, "cut to {len}");
            assert!(e.to_string().contains("cut short"), "{e}");
        }
        // Cut at the front: the prefix is missing, the rest whole.
        let e = MemberBundle::parse(&FIXED_VECTOR[BUNDLE_PREFIX.len()..]).unwrap_err();
        assert_eq!(e, BundleError::WrongPrefix(String::new()));
        assert!(e.to_string().contains("`LP2:` prefix is missing"), "{e}");
    }

    #[test]
    fn damage_messages_say_what_happened() {
        let with = |i: usize, c: char| {
            let mut v: Vec<char> = FIXED_VECTOR.chars().collect();
            v[i] = c;
            MemberBundle::parse(&v.into_iter().collect::<String>()).unwrap_err()
        };
        // The prefix: a whole bundle behind it, so it is the prefix that was damaged.
        assert_eq!(with(0, 'X'), BundleError::WrongPrefix("XP2:".into()));
        assert_eq!(with(2, '1'), BundleError::WrongPrefix("LP1:".into()));
        assert_eq!(
            with(2, '1').to_string(),
            "bundle was altered in copying: it starts with `LP1:` instead of `LP2:`; copy the whole line again exactly as you received it, or ask your co-op for a new one"
        );
        assert_eq!(with(2, '3'), BundleError::WrongPrefix("LP3:".into()));
        // A character that base64 has not.
        assert_eq!(
            with(10, '%'),
            BundleError::BadCharacter {
                found: '%',
                position: 11
            }
        );
        assert!(
            with(10, '%')
                .to_string()
                .starts_with("bundle was altered in copying: `%` (character 11, not counting spaces and line breaks) cannot be part of a bundle"),
        );
        assert_eq!(
            with(10, 'é'),
            BundleError::BadCharacter {
                found: 'é',
                position: 11
            }
        );
        // A base64 character for another.
        assert_eq!(with(100, 'A'), BundleError::ChecksumMismatch);
        // Positions do not count the whitespace a paste adds.
        let wrapped = format!(
            "{}\n  {}%{}",
            &FIXED_VECTOR[..8],
            &FIXED_VECTOR[8..20],
            &FIXED_VECTOR[21..]
        );
        assert_eq!(
            MemberBundle::parse(&wrapped),
            Err(BundleError::BadCharacter {
                found: '%',
                position: 21
            })
        );
        // The checksum line itself: cut inside it, or altered.
        let text = legacy_text();
        let cut = format!(
            "{BUNDLE_PREFIX}{}",
            STANDARD.encode(format!("{text}checksum = 45ae15"))
        );
        assert_eq!(MemberBundle::parse(&cut), Err(BundleError::Truncated));
        let bad = format!(
            "{BUNDLE_PREFIX}{}",
            STANDARD.encode(format!("{text}checksum = 45ae1510ccc74e1x\n"))
        );
        assert_eq!(
            MemberBundle::parse(&bad),
            Err(BundleError::ChecksumMismatch)
        );
        let none = format!("{BUNDLE_PREFIX}{}", STANDARD.encode(&text));
        assert_eq!(MemberBundle::parse(&none), Err(BundleError::Truncated));
        let after = format!(
            "{BUNDLE_PREFIX}{}",
            STANDARD.encode(format!(
                "{text}checksum = 45ae1510ccc74e16\naddress = 10.0.0.9\n"
            ))
        );
        assert_eq!(
            MemberBundle::parse(&after),
            Err(BundleError::ChecksumMismatch)
        );
    }

    #[test]
    fn wrap_text_adds_the_line_break_and_checksum() {
        let a = wrap_text(b"member = a");
        let b = wrap_text(b"member = a\n");
        assert_eq!(a, b);
        // Its text parses as far as the keys go (no keys missing here but the others).
        assert_eq!(
            MemberBundle::parse(&a),
            Err(BundleError::MissingKey("proxy_endpoint"))
        );
        assert_eq!(
            MemberBundle::parse(&wrap_text(b"")),
            Err(BundleError::MissingKey("proxy_endpoint"))
        );
        assert_eq!(
            MemberBundle::parse(&wrap_text(&[0xff, 0xfe])),
            Err(BundleError::NotUtf8)
        );
    }

    #[test]
    fn round_trip_with_generated_keys_and_no_psk() {
        let b = MemberBundle {
            psk: None,
            cipher: CipherChoice::Aes256Gcm,
            private_key: SecretKey::generate().unwrap(),
            proxy_endpoints: vec!["proxy.example.org:7117".into()],
            ..fixed()
        };
        let s = b.render();
        assert!(s.starts_with("LP2:") && !s.contains(char::is_whitespace));
        assert_eq!(
            MemberBundle::parse_with_format(&s).unwrap(),
            (b, BundleFormat::Checked)
        );
    }

    #[test]
    fn whitespace_pasted_around_and_inside_is_ignored() {
        for s in [FIXED_VECTOR, LEGACY_VECTOR] {
            let wrapped = format!("\n  {}\r\n{}\n\t{}  \n\n", &s[..30], &s[30..100], &s[100..]);
            assert_eq!(MemberBundle::parse(&wrapped).unwrap(), fixed());
        }
    }

    /// Also: a bundle from before mesh credentials, with its co-op-wide `mesh_key`, loads.
    #[test]
    fn cipher_defaults_to_aes_and_comments_are_allowed() {
        let text = "# made by hand\nmember = bob\nprivate_key = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nproxy_public_key = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\nproxy_endpoint = proxy.example.org:7117\nmesh_key = BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=\naddress = 10.77.0.3\n";
        for s in [
            encode(text),
            format!("{LEGACY_BUNDLE_PREFIX}{}", STANDARD.encode(text)),
        ] {
            let b = MemberBundle::parse(&s).unwrap();
            assert_eq!(b.cipher, CipherChoice::Aes256Gcm);
            assert_eq!(b.member, "bob");
            assert_eq!(b.psk, None);
        }
    }

    fn with_line_replaced(key: &str, new: Option<&str>) -> String {
        let text = legacy_text();
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
                "LP3:AAAA".into(),
                BundleError::UnsupportedVersion("LP3:".into()),
            ),
            (
                "LP1:***".into(),
                BundleError::BadCharacter {
                    found: '*',
                    position: 5,
                },
            ),
            ("LP1:AAA".into(), BundleError::BadLength),
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
                with_line_replaced("proxy_public_key", None),
                BundleError::MissingKey("proxy_public_key"),
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
