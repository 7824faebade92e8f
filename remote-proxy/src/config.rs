//! The proxy's configuration (`linkpool-proxy run -c FILE`): TOML read into a validated
//! [`ProxyConfig`], with errors that name the file, the line, the key and the reason.

use linkpool_os::config_file::{
    ConfigError, SpreadingTable, parse_toml, read_config_file, toml_key_line,
};
use linkpool_os::log::parse_level;
use linkpool_os::tun::check_ifname;
use linkpool_protocol::bundle::{CipherChoice, check_endpoint, check_member_name};
use linkpool_protocol::credits::{
    Contention, DEFAULT_MIN_WEIGHT, MAX_BID_PER_GB, MilliCredits, Peak, PeakHours, Rates, Tariff,
};
use linkpool_protocol::flow::Modes;
use linkpool_protocol::keys::{PublicKey, SecretKey, SharedSecret};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tracing::level_filters::LevelFilter;

/// Default listening addresses.
pub const DEFAULT_LISTEN: [&str; 2] = ["0.0.0.0:7117", "[::]:7117"];
/// Default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/linkpool-proxy.sock";
/// Default TUN device.
pub const DEFAULT_DEVICE: &str = "lpproxy0";
/// Default ledger file, relative to the configuration file.
pub const DEFAULT_LEDGER: &str = "ledger.sqlite";
/// Default member IPv4 pool.
pub const DEFAULT_IPV4_POOL: &str = "10.77.0.0/16";
/// Default member IPv6 pool.
pub const DEFAULT_IPV6_POOL: &str = "fd77::/64";
/// Default MTU of the proxy's TUN device: what a gateway on a 1500-byte uplink gets.
pub const DEFAULT_MTU: u16 = 1500 - linkpool_protocol::wire::WORST_CASE_OVERHEAD as u16;

/// An address pool: the first host address is the proxy's own, members get the next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPool {
    /// The network address (host bits zero).
    pub network: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl IpPool {
    fn bits(&self) -> u32 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    fn to_u128(a: IpAddr) -> u128 {
        match a {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn address_at(&self, n: u128) -> IpAddr {
        match self.network {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    /// How many addresses the pool spans.
    fn size(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix_len);
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    /// Whether `a` lies in the pool.
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.network.is_ipv4() && {
            let off = Self::to_u128(a).wrapping_sub(Self::to_u128(self.network));
            Self::to_u128(a) >= Self::to_u128(self.network) && off < self.size()
        }
    }

    /// The proxy's own address: the first host address.
    pub fn proxy_address(&self) -> IpAddr {
        self.address_at(Self::to_u128(self.network) + 1)
    }

    /// Whether `a` may be given to a member: inside, not the network, not the proxy's,
    /// and for IPv4 not the broadcast address.
    pub fn is_member_address(&self, a: IpAddr) -> bool {
        let off = Self::to_u128(a).wrapping_sub(Self::to_u128(self.network));
        self.contains(a) && off >= 2 && !(a.is_ipv4() && off == self.size() - 1)
    }

    /// The lowest member address not in `used`, if the pool has one left.
    pub fn next_free(&self, used: &[IpAddr]) -> Option<IpAddr> {
        let base = Self::to_u128(self.network);
        // Skipping used addresses ends after at most used.len() + 1 steps.
        (2..self.size())
            .take(used.len() + 2)
            .map(|off| self.address_at(base + off))
            .find(|a| self.is_member_address(*a) && !used.contains(a))
    }
}

impl fmt::Display for IpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for IpPool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix like 10.77.0.0/16"))?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        let max = if network.is_ipv4() { 30 } else { 126 };
        if prefix_len > max || prefix_len < if network.is_ipv4() { 8 } else { 48 } {
            return Err(format!(
                "prefix length {prefix_len} is out of range ({} to {max})",
                if network.is_ipv4() { 8 } else { 48 }
            ));
        }
        let pool = IpPool {
            network,
            prefix_len,
        };
        let host_bits = pool.bits() - u32::from(prefix_len);
        if Self::to_u128(network) & ((1u128 << host_bits) - 1) != 0 {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(pool)
    }
}

/// How long mesh credentials may last, in seconds: a minute to a day.
pub const MESH_CREDENTIAL_LIFETIME_S: std::ops::RangeInclusive<i64> = 60..=86_400;

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// UDP addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// What bundles tell members to use (`host:port`).
    pub endpoints: Vec<String>,
    /// Where the private key was read from.
    pub private_key_file: PathBuf,
    /// The proxy's static private key.
    pub private_key: SecretKey,
    /// How long the mesh credentials the proxy grants members last, in seconds: a member
    /// removed from the configuration is locked out of the mesh at the latest this long
    /// after (credentials are renewed at half their life).
    pub mesh_credential_lifetime_s: u64,
    /// Log level.
    pub log_level: LevelFilter,
    /// Unix socket for the CLI.
    pub control_socket: PathBuf,
    /// TUN device and NAT.
    pub tunnel: ProxyTunnel,
    /// How each class of flow is spread over members' paths, for members without a
    /// `spreading` of their own (`[spreading]`; all `auto` unless set).
    pub spreading: Modes,
    /// The members.
    pub members: Vec<MemberConfig>,
    /// The ledger's SQLite file (`[ledger] path`).
    pub ledger_file: PathBuf,
    /// The admin HTTP API (`[admin]`), when `listen` is set; off otherwise.
    pub admin: Option<AdminConfig>,
    /// The co-op's credit rules (`[credits]`).
    pub credits: CreditsConfig,
    /// Worth a log line, not fatal (a private key file others can read, ...).
    pub warnings: Vec<String>,
}

/// The `[tunnel]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTunnel {
    /// TUN device name.
    pub device: String,
    /// Member IPv4 pool.
    pub ipv4_pool: IpPool,
    /// Member IPv6 pool, if IPv6 is offered.
    pub ipv6_pool: Option<IpPool>,
    /// Masquerade only out of this device (`None` = any device but the TUN).
    pub egress_device: Option<String>,
    /// TUN MTU.
    pub mtu: u16,
}

/// The `[admin]` table: the admin HTTP API and Prometheus metrics (docs/admin-api.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where it listens (TCP).
    pub listen: SocketAddr,
    /// Whether `listen` may be other than a loopback address.
    pub allow_remote: bool,
    /// Where the token was read from.
    pub token_file: PathBuf,
    /// What every request must carry as `Authorization: Bearer TOKEN`.
    pub token: AdminToken,
}

/// Fewest characters an admin token may have: a shorter one could be guessed.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// The admin API's bearer token: visible ASCII, at least [`ADMIN_TOKEN_MIN_LEN`]
/// characters. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Checks a token as read from its file (surrounding whitespace and the final newline
    /// are not part of it).
    pub fn new(text: &str) -> Result<AdminToken, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "holds spaces or characters other than visible ASCII (it goes in an HTTP header)"
                    .into(),
            );
        }
        if t.len() < ADMIN_TOKEN_MIN_LEN {
            return Err(format!(
                "is {} characters long: use at least {ADMIN_TOKEN_MIN_LEN} (`head -c 32 /dev/urandom | base64`)",
                t.len()
            ));
        }
        Ok(AdminToken(t.to_string()))
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// One `[[member]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// Unique name.
    pub name: String,
    /// The member's static public key.
    pub public_key: PublicKey,
    /// The member's tunnel addresses, inside the pools.
    pub addresses: Vec<IpAddr>,
    /// The member's cipher, if set (the member's bundle says which one it uses).
    pub cipher: Option<CipherChoice>,
    /// Optional Noise pre-shared key.
    pub psk: Option<SharedSecret>,
    /// This member's spreading modes when its `spreading` table names any: the proxy-wide
    /// ones with the classes it names replaced. `None`: the proxy-wide ones.
    pub spreading: Option<Modes>,
}

impl ProxyConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let text = read_config_file(path)?;
        Self::from_toml_str(path, &text)
    }

    /// Validates TOML text read from `path` (a relative `private_key_file` is relative to
    /// `path`'s directory).
    pub fn from_toml_str(path: &Path, text: &str) -> Result<ProxyConfig, ConfigError> {
        let raw: RawProxy = parse_toml(path, text)?;
        let err = |key: String, reason: String| {
            let line = toml_key_line(text, &key).or_else(|| {
                key.rsplit_once('.')
                    .and_then(|(t, _)| toml_key_line(text, t))
            });
            ConfigError::key(path, key, line, reason)
        };
        let mut warnings = Vec::new();

        let listen_raw = raw
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect());
        if listen_raw.is_empty() {
            return Err(err("listen".into(), "is empty".into()));
        }
        let mut listen = Vec::new();
        for l in &listen_raw {
            let a: SocketAddr = l.parse().map_err(|_| {
                err(
                    "listen".into(),
                    format!("`{l}` is not an address:port (use [v6]:port for IPv6)"),
                )
            })?;
            if listen.contains(&a) {
                return Err(err("listen".into(), format!("`{a}` is listed twice")));
            }
            listen.push(a);
        }

        if raw.endpoints.is_empty() {
            return Err(err(
                "endpoints".into(),
                "is empty: bundles must tell members where the proxy is".into(),
            ));
        }
        for e in &raw.endpoints {
            check_endpoint(e).map_err(|r| err("endpoints".into(), r))?;
        }

        let key_path = resolve_relative(path, &raw.private_key_file);
        let key_text = std::fs::read_to_string(&key_path).map_err(|e| {
            err(
                "private_key_file".into(),
                format!("cannot read {}: {e}", key_path.display()),
            )
        })?;
        let private_key = SecretKey::from_base64(key_text.trim()).map_err(|e| {
            err(
                "private_key_file".into(),
                format!("{} does not hold a private key: {e}", key_path.display()),
            )
        })?;
        if let Ok(meta) = std::fs::metadata(&key_path) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o066 != 0 {
                warnings.push(format!(
                    "{} holds the proxy's private key, but other users can read or change it (mode {mode:04o}): chmod 600 {}",
                    key_path.display(),
                    key_path.display()
                ));
            }
        }
        let mesh_credential_lifetime_s = match raw.mesh_credential_lifetime_s {
            None => linkpool_protocol::mesh::DEFAULT_CREDENTIAL_LIFETIME_S,
            Some(s) if MESH_CREDENTIAL_LIFETIME_S.contains(&s) => s as u64,
            Some(s) => {
                return Err(err(
                    "mesh_credential_lifetime_s".into(),
                    format!(
                        "{s} is out of range: use {} to {} seconds",
                        MESH_CREDENTIAL_LIFETIME_S.start(),
                        MESH_CREDENTIAL_LIFETIME_S.end()
                    ),
                ));
            }
        };

        let log_level = match &raw.log_level {
            None => LevelFilter::INFO,
            Some(l) => parse_level(l).map_err(|r| err("log_level".into(), r))?,
        };
        let control_socket = match raw.control_socket.as_deref() {
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
            Some("") => return Err(err("control_socket".into(), "is empty".into())),
            Some(p) => PathBuf::from(p),
        };

        let t = raw.tunnel.unwrap_or_default();
        let device = t.device.unwrap_or_else(|| DEFAULT_DEVICE.into());
        check_ifname(&device).map_err(|r| err("tunnel.device".into(), r))?;
        let ipv4_pool: IpPool = t
            .ipv4_pool
            .as_deref()
            .unwrap_or(DEFAULT_IPV4_POOL)
            .parse()
            .map_err(|r| err("tunnel.ipv4_pool".into(), r))?;
        if !ipv4_pool.network.is_ipv4() {
            return Err(err(
                "tunnel.ipv4_pool".into(),
                format!("`{ipv4_pool}` is not an IPv4 prefix"),
            ));
        }
        let ipv6_pool = match t.ipv6_pool.as_deref().unwrap_or(DEFAULT_IPV6_POOL) {
            "" => None,
            s => {
                let p: IpPool = s.parse().map_err(|r| err("tunnel.ipv6_pool".into(), r))?;
                if p.network.is_ipv4() {
                    return Err(err(
                        "tunnel.ipv6_pool".into(),
                        format!("`{p}` is not an IPv6 prefix"),
                    ));
                }
                Some(p)
            }
        };
        let egress_device = match t.egress_device.as_deref() {
            None | Some("") => None,
            Some(d) => {
                check_ifname(d).map_err(|r| err("tunnel.egress_device".into(), r))?;
                if d == device {
                    return Err(err(
                        "tunnel.egress_device".into(),
                        "is the tunnel device itself".into(),
                    ));
                }
                Some(d.to_string())
            }
        };
        let mtu = check_mtu(t.mtu.unwrap_or(DEFAULT_MTU.into()), ipv6_pool.is_some())
            .map_err(|r| err("tunnel.mtu".into(), r))?;

        let spreading = raw.spreading.unwrap_or_default().over(Modes::default());
        let ledger_file = match raw.ledger.unwrap_or_default().path.as_deref() {
            None => resolve_relative(path, DEFAULT_LEDGER),
            Some("") => return Err(err("ledger.path".into(), "is empty".into())),
            Some(p) => resolve_relative(path, p),
        };

        let admin = check_admin(
            path,
            text,
            raw.admin.unwrap_or_default(),
            &mut warnings,
            &err,
        )?;

        let own_public = private_key.public_key();
        let mut members: Vec<MemberConfig> = Vec::new();
        for (i, m) in raw.member.into_iter().enumerate() {
            let key = |k: &str| format!("member[{i}].{k}");
            check_member_name(&m.name).map_err(|r| err(key("name"), r))?;
            if members.iter().any(|o| o.name == m.name) {
                return Err(err(
                    key("name"),
                    format!("member `{}` is defined twice", m.name),
                ));
            }
            let public_key = PublicKey::from_base64(&m.public_key)
                .map_err(|e| err(key("public_key"), e.to_string()))?;
            if public_key == own_public {
                return Err(err(
                    key("public_key"),
                    "is the proxy's own public key".into(),
                ));
            }
            if let Some(o) = members.iter().find(|o| o.public_key == public_key) {
                return Err(err(
                    key("public_key"),
                    format!("member `{}` has the same key", o.name),
                ));
            }
            if m.address.is_empty() {
                return Err(err(
                    key("address"),
                    "is empty: a member needs a tunnel address".into(),
                ));
            }
            let mut addresses = Vec::new();
            for a in &m.address {
                let ip: IpAddr = a
                    .parse()
                    .map_err(|_| err(key("address"), format!("`{a}` is not an IP address")))?;
                let pool = if ip.is_ipv4() {
                    Some(ipv4_pool)
                } else {
                    ipv6_pool
                };
                match pool {
                    Some(p) if p.is_member_address(ip) => {}
                    Some(p) => {
                        return Err(err(
                            key("address"),
                            format!(
                                "`{ip}` is not a member address of the pool {p} (the first address, {}, is the proxy's)",
                                p.proxy_address()
                            ),
                        ));
                    }
                    None => {
                        return Err(err(
                            key("address"),
                            format!("`{ip}` is IPv6 but tunnel.ipv6_pool is off"),
                        ));
                    }
                }
                if let Some(o) = members.iter().find(|o| o.addresses.contains(&ip)) {
                    return Err(err(
                        key("address"),
                        format!("`{ip}` is already member `{}`'s", o.name),
                    ));
                }
                if addresses.contains(&ip) {
                    return Err(err(key("address"), format!("`{ip}` is listed twice")));
                }
                addresses.push(ip);
            }
            let cipher = m
                .cipher
                .as_deref()
                .map(str::parse::<CipherChoice>)
                .transpose()
                .map_err(|e| err(key("cipher"), e.to_string()))?;
            let psk = m
                .psk
                .as_deref()
                .map(SharedSecret::from_base64)
                .transpose()
                .map_err(|e| err(key("psk"), e.to_string()))?;
            members.push(MemberConfig {
                name: m.name,
                public_key,
                addresses,
                cipher,
                psk,
                spreading: m.spreading.map(|t| t.over(spreading)),
            });
        }

        let credits = credits_config(raw.credits.unwrap_or_default())
            .map_err(|(key, reason)| err(format!("credits.{key}"), reason))?;

        Ok(ProxyConfig {
            credits,
            file: path.to_path_buf(),
            listen,
            endpoints: raw.endpoints,
            private_key_file: key_path,
            private_key,
            mesh_credential_lifetime_s,
            log_level,
            control_socket,
            tunnel: ProxyTunnel {
                device,
                ipv4_pool,
                ipv6_pool,
                egress_device,
                mtu,
            },
            spreading,
            members,
            ledger_file,
            admin,
            warnings,
        })
    }

    /// The member with this public key.
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.public_key == *key)
    }

    /// The NAT set-up for this configuration.
    pub fn nat(&self) -> linkpool_os::routing::ProxyNat {
        let v4 = match self.tunnel.ipv4_pool.network {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("validated as IPv4"),
        };
        linkpool_os::routing::ProxyNat {
            tun_device: self.tunnel.device.clone(),
            mtu: self.tunnel.mtu,
            ipv4_pool: (v4, self.tunnel.ipv4_pool.prefix_len),
            ipv6_pool: self.tunnel.ipv6_pool.and_then(|p| match p.network {
                IpAddr::V6(a) => Some((a, p.prefix_len)),
                IpAddr::V4(_) => None,
            }),
            egress_device: self.tunnel.egress_device.clone(),
        }
    }
}

/// The co-op's credit rules: what carrying earns, what borrowing costs, and how a relay's
/// contended line is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditsConfig {
    /// Rates per GB of wire bytes, by the co-op's local hour.
    pub tariff: Tariff,
    /// The co-op's local time (for the peak hours), seconds east of UTC.
    pub utc_offset_s: i32,
    /// How a relay's line is shared among consumers that want more than it has.
    pub contention: Contention,
    /// Below this balance a member uses only its own line (none by default).
    pub floor: Option<MilliCredits>,
}

/// Credits as configured (`1.5`) to milli-credits, checked.
fn milli(
    value: f64,
    key: &'static str,
    signed: bool,
) -> Result<MilliCredits, (&'static str, String)> {
    let limit = 1e12;
    if !value.is_finite() || value.abs() > limit || (!signed && value < 0.0) {
        let range = if signed { "-1e12 to 1e12" } else { "0 to 1e12" };
        return Err((key, format!("{value} is out of range: use {range} credits")));
    }
    Ok((value * 1000.0).round() as MilliCredits)
}

/// `"+01:00"`, `"-05:30"`, `"+2"` → seconds east of UTC.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let bad = || format!("`{text}` is not a UTC offset like +01:00 or -05:30");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

fn credits_config(raw: RawCredits) -> Result<CreditsConfig, (&'static str, String)> {
    let rate = |v: Option<f64>, key, default: f64| milli(v.unwrap_or(default), key, false);
    let off_peak = Rates {
        earn_per_gb: rate(raw.earn_per_gb, "earn_per_gb", 1.0)?,
        spend_per_gb: rate(raw.spend_per_gb, "spend_per_gb", 1.0)?,
    };
    let peak = match raw.peak_hours.as_deref() {
        None | Some("") => {
            for (v, key) in [
                (raw.peak_earn_per_gb, "peak_earn_per_gb"),
                (raw.peak_spend_per_gb, "peak_spend_per_gb"),
            ] {
                if v.is_some() {
                    return Err((key, "is set but peak_hours is not".into()));
                }
            }
            None
        }
        Some(text) => {
            let bad = || {
                (
                    "peak_hours",
                    format!("`{text}` is not an hour range like \"18-23\" (from 18:00 to 22:59)"),
                )
            };
            let (a, b) = text.split_once('-').ok_or_else(bad)?;
            let (a, b): (u8, u8) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            let hours = PeakHours::new(a, b % 24).filter(|_| b <= 24 && a != b % 24);
            Some(Peak {
                hours: hours.ok_or_else(bad)?,
                rates: Rates {
                    earn_per_gb: rate(
                        raw.peak_earn_per_gb,
                        "peak_earn_per_gb",
                        off_peak.earn_per_gb as f64 / 1000.0,
                    )?,
                    spend_per_gb: rate(
                        raw.peak_spend_per_gb,
                        "peak_spend_per_gb",
                        off_peak.spend_per_gb as f64 / 1000.0,
                    )?,
                },
            })
        }
    };
    let utc_offset_s = match raw.utc_offset.as_deref() {
        None => 0,
        Some(t) => parse_utc_offset(t).map_err(|e| ("utc_offset", e))?,
    };
    let contention = match raw.contention.as_deref() {
        None | Some("balance") => {
            if raw.reserve_per_gb.is_some() {
                return Err((
                    "reserve_per_gb",
                    "is set but contention is not \"auction\"".into(),
                ));
            }
            let min_weight = match raw.min_weight {
                None => DEFAULT_MIN_WEIGHT,
                Some(w) => milli(w, "min_weight", false)?.max(1),
            };
            Contention::ByBalance { min_weight }
        }
        Some("auction") => {
            if raw.min_weight.is_some() {
                return Err(("min_weight", "is set but contention is \"auction\"".into()));
            }
            let reserve = milli(raw.reserve_per_gb.unwrap_or(0.0), "reserve_per_gb", false)?;
            if reserve > MAX_BID_PER_GB {
                return Err((
                    "reserve_per_gb",
                    format!(
                        "is above the highest bid a member can make ({} credits per GB)",
                        MAX_BID_PER_GB / 1000
                    ),
                ));
            }
            Contention::Auction {
                reserve_per_gb: reserve,
            }
        }
        Some(other) => {
            return Err((
                "contention",
                format!(
                    "`{other}` is not \"balance\" (weighted fair shares, the default) or \"auction\""
                ),
            ));
        }
    };
    let floor = raw.floor.map(|f| milli(f, "floor", true)).transpose()?;
    Ok(CreditsConfig {
        tariff: Tariff { off_peak, peak },
        utc_offset_s,
        contention,
        floor,
    })
}

impl Default for CreditsConfig {
    fn default() -> Self {
        credits_config(RawCredits::default()).expect("the defaults are valid")
    }
}

/// Validates the `[admin]` table: off without `listen`; a loopback address unless
/// `allow_remote`; a token file that holds a usable token (a warning when others can read
/// it).
fn check_admin(
    path: &Path,
    text: &str,
    raw: RawAdmin,
    warnings: &mut Vec<String>,
    err: &dyn Fn(String, String) -> ConfigError,
) -> Result<Option<AdminConfig>, ConfigError> {
    let listen = match raw.listen.as_deref() {
        None | Some("") => {
            if raw.token_file.is_some() {
                warnings.push(
                    "admin.token_file is set but admin.listen is not: the admin API is off".into(),
                );
            }
            return Ok(None);
        }
        Some(l) => l,
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        err(
            "admin.listen".into(),
            format!("`{listen}` is not an address:port (use [v6]:port for IPv6)"),
        )
    })?;
    let allow_remote = raw.allow_remote.unwrap_or(false);
    if !listen.ip().to_canonical().is_loopback() && !allow_remote {
        return Err(err(
            "admin.listen".into(),
            format!(
                "`{listen}` is not a loopback address: the admin API speaks plain HTTP, so its \
                 token and the members' data would cross the network readable; listen on \
                 127.0.0.1 or [::1] (and reach it through SSH or a TLS proxy), or set \
                 admin.allow_remote = true"
            ),
        ));
    }
    let token_file = match raw.token_file.as_deref() {
        None | Some("") => {
            return Err(ConfigError::key(
                path,
                "admin.token_file",
                toml_key_line(text, "admin.listen"),
                "is required when admin.listen is set: a file holding the bearer token \
                 (`head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`)",
            ));
        }
        Some(f) => resolve_relative(path, f),
    };
    let token_text = std::fs::read_to_string(&token_file).map_err(|e| {
        err(
            "admin.token_file".into(),
            format!("cannot read {}: {e}", token_file.display()),
        )
    })?;
    let token = AdminToken::new(&token_text).map_err(|r| {
        err(
            "admin.token_file".into(),
            format!("the token in {} {r}", token_file.display()),
        )
    })?;
    if let Ok(meta) = std::fs::metadata(&token_file) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o066 != 0 {
            warnings.push(format!(
                "{} holds the admin API's token, but other users can read or change it (mode {mode:04o}): chmod 600 {}",
                token_file.display(),
                token_file.display()
            ));
        }
    }
    Ok(Some(AdminConfig {
        listen,
        allow_remote,
        token_file,
        token,
    }))
}

/// Largest TUN MTU: the largest IP packet a datagram carries to a member (datagrams are
/// at most `wire::MAX_DATAGRAM` bytes, and a relayed one spends 71 of them on headers).
pub const MAX_MTU: u16 = linkpool_protocol::wire::MAX_TUNNEL_MTU;

/// Checks the TUN MTU against what a datagram carries and what the pools need (1280 with
/// an IPv6 pool, 576 without).
fn check_mtu(mtu: i64, ipv6: bool) -> Result<u16, String> {
    linkpool_protocol::wire::check_tunnel_mtu(mtu, ipv6.then_some("tunnel.ipv6_pool is on"), false)
}

pub(crate) fn resolve_relative(config_file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config_file.parent().unwrap_or(Path::new(".")).join(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: Option<Vec<String>>,
    endpoints: Vec<String>,
    private_key_file: String,
    /// Configurations written before mesh credentials have a co-op-wide hello key: read
    /// and ignored (each member's credential replaced it).
    #[serde(rename = "mesh_key")]
    _legacy_mesh_key: Option<toml::Value>,
    mesh_credential_lifetime_s: Option<i64>,
    log_level: Option<String>,
    control_socket: Option<String>,
    tunnel: Option<RawTunnel>,
    ledger: Option<RawLedger>,
    admin: Option<RawAdmin>,
    credits: Option<RawCredits>,
    // Modes are checked as they are read: an error has the value's line.
    spreading: Option<SpreadingTable>,
    #[serde(default)]
    member: Vec<RawMember>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredits {
    earn_per_gb: Option<f64>,
    spend_per_gb: Option<f64>,
    peak_hours: Option<String>,
    peak_earn_per_gb: Option<f64>,
    peak_spend_per_gb: Option<f64>,
    utc_offset: Option<String>,
    min_weight: Option<f64>,
    floor: Option<f64>,
    contention: Option<String>,
    reserve_per_gb: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token_file: Option<String>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    device: Option<String>,
    ipv4_pool: Option<String>,
    ipv6_pool: Option<String>,
    egress_device: Option<String>,
    // Wider than an MTU, so that `mtu = 9000` or `65536` gets the range in its error.
    mtu: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    public_key: String,
    address: Vec<String>,
    cipher: Option<String>,
    psk: Option<String>,
    spreading: Option<SpreadingTable>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The co-op's contention rule: shares by balance unless it says "auction", each
    /// mode's keys refused in the other, a reserve no bid could meet refused.
    #[test]
    fn contention_is_by_balance_or_by_auction() {
        let credits = |text: &str| credits_config(toml::from_str::<RawCredits>(text).unwrap());
        assert_eq!(
            credits("").unwrap().contention,
            Contention::ByBalance {
                min_weight: DEFAULT_MIN_WEIGHT
            }
        );
        assert_eq!(
            credits("contention = \"balance\"\nmin_weight = 2")
                .unwrap()
                .contention,
            Contention::ByBalance { min_weight: 2000 }
        );
        assert_eq!(
            credits("contention = \"auction\"\nreserve_per_gb = 0.5")
                .unwrap()
                .contention,
            Contention::Auction {
                reserve_per_gb: 500
            }
        );
        assert_eq!(
            credits("contention = \"auction\"").unwrap().contention,
            Contention::Auction { reserve_per_gb: 0 }
        );
        for (text, key, why) in [
            (
                "contention = \"lottery\"",
                "contention",
                "is not \"balance\"",
            ),
            ("reserve_per_gb = 1", "reserve_per_gb", "contention is not"),
            (
                "contention = \"auction\"\nmin_weight = 1",
                "min_weight",
                "is \"auction\"",
            ),
            (
                "contention = \"auction\"\nreserve_per_gb = 2000000",
                "reserve_per_gb",
                "above the highest bid",
            ),
            (
                "contention = \"auction\"\nreserve_per_gb = -1",
                "reserve_per_gb",
                "out of range",
            ),
        ] {
            let (k, reason) = credits(text).unwrap_err();
            assert_eq!(k, key, "{text}");
            assert!(reason.contains(why), "{text}: {reason}");
        }
    }

    #[test]
    fn pools() {
        let p: IpPool = "10.77.0.0/16".parse().unwrap();
        assert_eq!(p.proxy_address(), "10.77.0.1".parse::<IpAddr>().unwrap());
        assert!(p.contains("10.77.255.255".parse().unwrap()));
        assert!(!p.contains("10.78.0.0".parse().unwrap()));
        assert!(!p.contains("fd77::2".parse().unwrap()));
        assert!(!p.is_member_address("10.77.0.1".parse().unwrap()));
        assert!(!p.is_member_address("10.77.255.255".parse().unwrap()));
        assert!(p.is_member_address("10.77.0.2".parse().unwrap()));
        let used: Vec<IpAddr> = vec!["10.77.0.2".parse().unwrap(), "10.77.0.4".parse().unwrap()];
        assert_eq!(p.next_free(&used), Some("10.77.0.3".parse().unwrap()));
        let small: IpPool = "192.168.9.0/30".parse().unwrap();
        assert_eq!(small.next_free(&[]), Some("192.168.9.2".parse().unwrap()));
        assert_eq!(
            small.next_free(&["192.168.9.2".parse().unwrap()]),
            None,
            "full"
        );
        let v6: IpPool = "fd77::/64".parse().unwrap();
        assert_eq!(v6.next_free(&[]), Some("fd77::2".parse().unwrap()));
        assert!(v6.is_member_address("fd77::ffff:ffff:ffff:ffff".parse().unwrap()));
        for bad in [
            "10.77.0.1/16",
            "10.77.0.0",
            "10.77.0.0/33",
            "10.77.0.0/31",
            "x/16",
            "fd77::/127",
        ] {
            assert!(bad.parse::<IpPool>().is_err(), "{bad}");
        }
    }
}
