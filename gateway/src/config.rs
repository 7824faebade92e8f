//! The gateway's configuration, from TOML (`linkpool run -c FILE`) or straight from the
//! OpenWrt UCI file (`linkpool run --uci /etc/config/linkpool --resolve lan=br-lan ...`).
//!
//! Both are read into the same [`GatewayConfig`], through one validation step, so a
//! mistake gives the same kind of error either way: the file, the line where known, the
//! key and the reason.

use crate::uci::{self, UciPackage, UciValue};
use linkpool_os::config_file::{
    ConfigError, SpreadingTable, parse_toml, read_config_file, toml_key_line,
};
use linkpool_os::log::parse_level;
use linkpool_os::routing::{GATEWAY_RULE_COUNT, GatewayRouting};
use linkpool_os::tun::check_ifname;
use linkpool_protocol::bundle::MemberBundle;
use linkpool_protocol::credits::MilliCredits;
use linkpool_protocol::devices::{
    DEFAULT_FLOOR, DevicePolicy, MAX_ADDRESSES_PER_DEVICE, MAX_DEVICES, is_device_name,
};
use linkpool_protocol::flow::{FlowClass, Mode, Modes};
use linkpool_protocol::forecast::MeteredLine;
use linkpool_protocol::relay::RelayPolicy;
use linkpool_protocol::sharing::{ResetDay, Schedule, ScheduleError, Share, SharePolicy};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::level_filters::LevelFilter;

/// Where the control socket lives unless configured.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/linkpool.sock";
/// Default state file: what must survive a reboot (the handshake timestamp floor). On
/// flash, so it is written rarely.
pub const DEFAULT_STATE_FILE: &str = "/etc/linkpool/linkpool.state";
/// Default TUN device name.
pub const DEFAULT_DEVICE: &str = "linkpool0";
/// Default routing table, first rule priority and socket mark (0x7117).
pub const DEFAULT_TABLE: u32 = 7117;
/// Default first ip rule priority.
pub const DEFAULT_RULE_PRIORITY: u32 = 7117;
/// Default mark of our uplink sockets.
pub const DEFAULT_FWMARK: u32 = 0x7117;
/// Default LAN device.
pub const DEFAULT_LAN_DEVICE: &str = "br-lan";
/// Largest tunnel MTU: the largest IP packet a datagram carries. Datagrams are at most
/// `wire::MAX_DATAGRAM` (2048) bytes, and a relayed one spends 71 of them on headers.
pub const MAX_MTU: u16 = linkpool_protocol::wire::MAX_TUNNEL_MTU;

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// The member bundle (keys, proxy endpoints, tunnel addresses).
    pub bundle: MemberBundle,
    /// Log level.
    pub log_level: LevelFilter,
    /// Unix socket for `linkpool status`.
    pub control_socket: PathBuf,
    /// What survives reboots (the handshake timestamp floor).
    pub state_file: PathBuf,
    /// TUN device and policy routing.
    pub tunnel: TunnelConfig,
    /// The uplinks (at least one).
    pub uplinks: Vec<UplinkConfig>,
    /// How each class of flow is spread over the uplinks (`[spreading]`; all `auto`
    /// unless set).
    pub spreading: Modes,
    /// What this router's owner lets neighbours on the mesh use of its line: whether, and
    /// its rate caps.
    pub sharing: RelayPolicy,
    /// The rest of the owner's policy: shares of the measured line, byte allowances per
    /// day and month, and when lending is allowed.
    pub share_policy: SharePolicy,
    /// The most the owner pays per GB (milli-credits) for a neighbour's line when the
    /// co-op auctions contended lines (`[borrowing] max_price_per_gb`, in credits; 0 by
    /// default: only what goes at the co-op's reserve price).
    pub max_price_per_gb: MilliCredits,
    /// Devices of the owner's LAN with limits of their own (`[[device]]`, `config
    /// device`), in file order.
    pub devices: Vec<DeviceConfig>,
    /// Things worth a log line that did not stop the configuration (uplinks skipped because
    /// their network is down, ...).
    pub warnings: Vec<String>,
}

/// The UDP port a gateway's relay listens on, on the mesh (hellos and relaying alike).
pub const RELAY_PORT: u16 = 7118;
/// The IPv6 link-local multicast group discovery hellos go to (port [`RELAY_PORT`]) on a
/// mesh device with no IPv4 address: `ff02::7118`, named after the port; not an address
/// of IANA's link-local scope multicast registry (so no other protocol's group).
pub const MESH_GROUP_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x7118);
/// The most a sharing cap may say, in Mbit/s.
pub const MAX_SHARE_MBIT: f64 = 100_000.0;
/// The most a sharing allowance may say, in MB (a petabyte).
pub const MAX_ALLOWANCE_MB: f64 = 1e9;

/// The least a device's floor may be, in Mbit/s (below, TCP hardly works at all).
pub const MIN_FLOOR_MBIT: f64 = 0.1;
/// The most a device's floor may be, in Mbit/s.
pub const MAX_FLOOR_MBIT: f64 = 1000.0;

/// One device of the owner's LAN with limits of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Its name in status, logs and the state file.
    pub name: String,
    /// Its MAC address: the addresses it uses are found in the kernel's neighbour table.
    pub mac: Option<MacAddr>,
    /// Addresses it uses, given by the owner (beside those found for its MAC).
    pub addresses: Vec<IpAddr>,
    /// Its thresholds and floor.
    pub policy: DevicePolicy,
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (or with `-`, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<MacAddr, String> {
        let bad = || {
            format!(
                "`{s}` is not a MAC address (six pairs of hex digits, such as 3c:22:fb:12:34:56)"
            )
        };
        let t = s.trim();
        let sep = if t.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = t.split(sep);
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if out == [0; 6] {
            return Err(format!("`{s}` is the all-zero MAC address, no device's"));
        }
        if out[0] & 1 == 1 {
            return Err(format!(
                "`{s}` is a multicast MAC address (its first byte is odd), no device's"
            ));
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Checks an address a device uses: one the LAN can send to the Internet from.
fn device_address(text: &str) -> Result<IpAddr, String> {
    let a: IpAddr = text.trim().parse().map_err(|_| {
        format!(
            "`{text}` is not an IP address (such as 192.168.1.50 or fd00::50; no prefix length)"
        )
    })?;
    let a = a.to_canonical();
    let why_not = match a {
        _ if a.is_unspecified() => Some("unspecified"),
        _ if a.is_loopback() => Some("a loopback address"),
        _ if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("link-local (169.254.0.0/16): it never reaches the Internet")
        }
        IpAddr::V6(v6) if linkpool_os::socket::is_link_local_v6(&v6) => {
            Some("link-local (fe80::/10): it never reaches the Internet")
        }
        _ => None,
    };
    match why_not {
        Some(w) => Err(format!("`{text}` is {w}")),
        None => Ok(a),
    }
}

/// The `[tunnel]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// TUN device name.
    pub device: String,
    /// Tunnel MTU; `None` = automatic from the uplinks.
    pub mtu: Option<u16>,
    /// Policy routing table for LAN traffic.
    pub table: u32,
    /// First of the consecutive ip rule priorities we use.
    pub rule_priority: u32,
    /// Mark on our own uplink sockets.
    pub fwmark: u32,
    /// Devices whose traffic goes into the pool.
    pub lan_devices: Vec<String>,
    /// Devices of the community mesh, where neighbours' gateways are found (may also be
    /// LAN devices). Empty: this router only uses its own uplinks.
    pub mesh_devices: Vec<String>,
}

/// One `[[uplink]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Label in status and logs.
    pub name: String,
    /// Device the uplink socket is bound to.
    pub device: String,
    /// How often the path over it is pinged while idle (a metered line wants it slower).
    pub probe_interval: Duration,
    /// The carrier's allowance, billing day and the owner's threshold, when the line is
    /// paid per byte.
    pub metered: Option<MeteredLine>,
}

/// The highest price per GB an owner may set, in credits (the core's bid limit).
const MAX_PRICE_PER_GB: f64 = (linkpool_protocol::credits::MAX_BID_PER_GB / 1000) as f64;

/// Idle probing interval bounds, in milliseconds: faster is pointless, slower than a
/// minute would take a dead line that long to notice.
pub const PROBE_INTERVAL_MS: std::ops::RangeInclusive<i64> = 100..=60_000;

/// What loading a UCI file can give: the init script should not even start the daemon
/// when it is disabled, but if it does, the daemon exits 0 saying so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A configuration to run.
    Enabled(Box<GatewayConfig>),
    /// `enabled '0'` or no member bundle yet.
    Disabled {
        /// Why, for the log line.
        reason: String,
    },
}

/// Where a configuration comes from, so that SIGHUP can read it again the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    Toml(PathBuf),
    /// A UCI file and the logical networks resolved to devices by the init script.
    Uci {
        /// The UCI file.
        path: PathBuf,
        /// `(network, device)` pairs from `--resolve NETWORK=DEVICE`.
        resolve: Vec<(String, String)>,
    },
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        match self {
            ConfigSource::Toml(path) => {
                GatewayConfig::load_toml(path).map(|c| Loaded::Enabled(Box::new(c)))
            }
            ConfigSource::Uci { path, resolve } => GatewayConfig::load_uci(path, resolve),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            ConfigSource::Toml(p) | ConfigSource::Uci { path: p, .. } => p,
        }
    }
}

impl GatewayConfig {
    /// Reads and validates a TOML file.
    pub fn load_toml(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = read_config_file(path)?;
        Self::from_toml_str(path, &text)
    }

    /// Validates TOML text read from `path` (relative `bundle_file`s are resolved against
    /// `path`'s directory).
    pub fn from_toml_str(path: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
        let raw: RawToml = parse_toml(path, text)?;
        let tunnel = raw.tunnel.unwrap_or_default();
        let settings = Settings {
            bundle: raw.bundle,
            bundle_file: raw.bundle_file,
            log_level: raw.log_level,
            control_socket: raw.control_socket,
            state_file: raw.state_file,
            device: tunnel.device,
            mtu: tunnel.mtu,
            table: tunnel.table,
            rule_priority: tunnel.rule_priority,
            fwmark: tunnel.fwmark,
            lan_devices: tunnel.lan_devices,
            mesh_devices: tunnel.mesh_devices,
            uplinks: raw
                .uplink
                .into_iter()
                .map(|u| UplinkSettings {
                    name: u.name,
                    device: u.device,
                    probe_interval_ms: u.probe_interval_ms,
                    metered: u.metered,
                    allowance_mb: u.allowance_mb,
                    billing_day: u.billing_day,
                    threshold_mb: u.threshold_mb,
                })
                .collect(),
            spreading: raw.spreading.unwrap_or_default().over(Modes::default()),
            share: raw.sharing.as_ref().and_then(|s| s.enabled),
            share_up_mbit: raw.sharing.as_ref().and_then(|s| s.up_mbit),
            share_down_mbit: raw.sharing.as_ref().and_then(|s| s.down_mbit),
            share_up_percent: raw.sharing.as_ref().and_then(|s| s.up_percent),
            share_down_percent: raw.sharing.as_ref().and_then(|s| s.down_percent),
            share_daily_mb: raw.sharing.as_ref().and_then(|s| s.daily_mb),
            share_monthly_mb: raw.sharing.as_ref().and_then(|s| s.monthly_mb),
            share_reset_day: raw.sharing.as_ref().and_then(|s| s.monthly_reset_day),
            share_days: raw.sharing.as_ref().and_then(|s| s.days.clone()),
            share_hours: raw.sharing.as_ref().and_then(|s| s.hours.clone()),
            max_price_per_gb: raw.borrowing.as_ref().and_then(|b| b.max_price_per_gb),
            devices: raw
                .device
                .into_iter()
                .map(|d| DeviceSettings {
                    name: d.name,
                    mac: d.mac,
                    addresses: d.addresses.unwrap_or_default(),
                    daily_mb: d.daily_mb,
                    monthly_mb: d.monthly_mb,
                    monthly_reset_day: d.monthly_reset_day,
                    floor_mbit: d.floor_mbit,
                })
                .collect(),
            warnings: Vec::new(),
            unresolved_lan: Vec::new(),
        };
        let locate = |field: Field| {
            let key = match field {
                Field::Bundle => "bundle".to_string(),
                Field::BundleFile => "bundle_file".to_string(),
                Field::LogLevel => "log_level".to_string(),
                Field::ControlSocket => "control_socket".to_string(),
                Field::StateFile => "state_file".to_string(),
                Field::Device => "tunnel.device".to_string(),
                Field::Mtu => "tunnel.mtu".to_string(),
                Field::Table => "tunnel.table".to_string(),
                Field::RulePriority => "tunnel.rule_priority".to_string(),
                Field::Fwmark => "tunnel.fwmark".to_string(),
                Field::LanDevices => "tunnel.lan_devices".to_string(),
                Field::MeshDevices => "tunnel.mesh_devices".to_string(),
                Field::ShareUp => "sharing.up_mbit".to_string(),
                Field::ShareDown => "sharing.down_mbit".to_string(),
                Field::ShareUpPercent => "sharing.up_percent".to_string(),
                Field::ShareDownPercent => "sharing.down_percent".to_string(),
                Field::ShareDaily => "sharing.daily_mb".to_string(),
                Field::ShareMonthly => "sharing.monthly_mb".to_string(),
                Field::ShareResetDay => "sharing.monthly_reset_day".to_string(),
                Field::ShareDays => "sharing.days".to_string(),
                Field::ShareHours => "sharing.hours".to_string(),
                Field::MaxPrice => "borrowing.max_price_per_gb".to_string(),
                Field::Uplinks => "uplink".to_string(),
                Field::Uplink(i) => format!("uplink[{i}]"),
                Field::UplinkName(i) => format!("uplink[{i}].name"),
                Field::UplinkDevice(i) => format!("uplink[{i}].device"),
                Field::UplinkProbeInterval(i) => format!("uplink[{i}].probe_interval_ms"),
                Field::UplinkMetered(i) => format!("uplink[{i}].metered"),
                Field::UplinkAllowance(i) => format!("uplink[{i}].allowance_mb"),
                Field::UplinkBillingDay(i) => format!("uplink[{i}].billing_day"),
                Field::UplinkThreshold(i) => format!("uplink[{i}].threshold_mb"),
                Field::Devices => "device".to_string(),
                Field::DeviceEntry(i) => format!("device[{i}]"),
                Field::DeviceName(i) => format!("device[{i}].name"),
                Field::DeviceMac(i) => format!("device[{i}].mac"),
                Field::DeviceAddress(i) => format!("device[{i}].addresses"),
                Field::DeviceDaily(i) => format!("device[{i}].daily_mb"),
                Field::DeviceMonthly(i) => format!("device[{i}].monthly_mb"),
                Field::DeviceResetDay(i) => format!("device[{i}].monthly_reset_day"),
                Field::DeviceFloor(i) => format!("device[{i}].floor_mbit"),
            };
            // A missing key: point at the header of its table instead; the first
            // `[[device]]` when there are too many.
            let line = toml_key_line(text, &key)
                .or_else(|| {
                    key.rsplit_once('.')
                        .and_then(|(table, _)| toml_key_line(text, table))
                })
                .or_else(|| {
                    (field == Field::Devices)
                        .then(|| toml_key_line(text, "device[0]"))
                        .flatten()
                });
            (key, line)
        };
        settings.validate(path, &locate)
    }

    /// Reads a UCI file (`/etc/config/linkpool`). `resolve` maps the logical OpenWrt
    /// networks it names to devices.
    pub fn load_uci(path: &Path, resolve: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let text = read_config_file(path)?;
        Self::from_uci_str(path, &text, resolve)
    }

    /// Validates UCI text read from `path`.
    pub fn from_uci_str(
        path: &Path,
        text: &str,
        resolve: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let pkg = uci::parse(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: Some(e.line),
            key: None,
            reason: e.reason,
        })?;
        from_uci(path, &pkg, resolve)
    }

    /// The routing set-up for this configuration with the tunnel MTU in use.
    pub fn routing(&self, mtu: u16) -> GatewayRouting {
        GatewayRouting {
            tun_device: self.tunnel.device.clone(),
            mtu,
            table: self.tunnel.table,
            rule_priority: self.tunnel.rule_priority,
            fwmark: self.tunnel.fwmark,
            lan_devices: self.tunnel.lan_devices.clone(),
            ipv6: self.bundle.addresses.iter().any(|a| a.is_ipv6()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToml {
    bundle: Option<String>,
    bundle_file: Option<String>,
    log_level: Option<String>,
    control_socket: Option<String>,
    state_file: Option<String>,
    tunnel: Option<RawTunnel>,
    #[serde(default)]
    uplink: Vec<RawUplink>,
    // Modes are checked as they are read: an error has the value's line.
    spreading: Option<SpreadingTable>,
    sharing: Option<RawSharing>,
    borrowing: Option<RawBorrowing>,
    #[serde(default)]
    device: Vec<RawDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: Option<String>,
    mac: Option<String>,
    addresses: Option<Vec<String>>,
    daily_mb: Option<f64>,
    monthly_mb: Option<f64>,
    // Wider than a day, so that `31` gets the range in its error.
    monthly_reset_day: Option<i64>,
    floor_mbit: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSharing {
    enabled: Option<bool>,
    up_mbit: Option<f64>,
    down_mbit: Option<f64>,
    up_percent: Option<f64>,
    down_percent: Option<f64>,
    daily_mb: Option<f64>,
    monthly_mb: Option<f64>,
    // Wider than a day, so that `31` gets the range in its error.
    monthly_reset_day: Option<i64>,
    days: Option<String>,
    hours: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBorrowing {
    max_price_per_gb: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    device: Option<String>,
    // Wider than an MTU, so that `mtu = 9000` or `65536` gets the range in its error.
    mtu: Option<i64>,
    table: Option<u32>,
    rule_priority: Option<u32>,
    fwmark: Option<u32>,
    lan_devices: Option<Vec<String>>,
    mesh_devices: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    name: Option<String>,
    device: Option<String>,
    probe_interval_ms: Option<i64>,
    metered: Option<bool>,
    allowance_mb: Option<f64>,
    // Wider than a day, so that `31` gets the range in its error.
    billing_day: Option<i64>,
    threshold_mb: Option<f64>,
}

/// The settings as read, before validation, whatever the file format.
#[derive(Default)]
struct Settings {
    bundle: Option<String>,
    bundle_file: Option<String>,
    log_level: Option<String>,
    control_socket: Option<String>,
    state_file: Option<String>,
    device: Option<String>,
    mtu: Option<i64>,
    table: Option<u32>,
    rule_priority: Option<u32>,
    fwmark: Option<u32>,
    lan_devices: Option<Vec<String>>,
    mesh_devices: Option<Vec<String>>,
    uplinks: Vec<UplinkSettings>,
    /// Checked already (a mode is a word: nothing to check against the rest).
    spreading: Modes,
    share: Option<bool>,
    share_up_mbit: Option<f64>,
    share_down_mbit: Option<f64>,
    share_up_percent: Option<f64>,
    share_down_percent: Option<f64>,
    share_daily_mb: Option<f64>,
    share_monthly_mb: Option<f64>,
    share_reset_day: Option<i64>,
    share_days: Option<String>,
    share_hours: Option<String>,
    max_price_per_gb: Option<f64>,
    devices: Vec<DeviceSettings>,
    warnings: Vec<String>,
    /// LAN networks named but not resolved to a device (UCI only).
    unresolved_lan: Vec<String>,
}

/// One device as read, before validation.
#[derive(Default)]
struct DeviceSettings {
    name: Option<String>,
    mac: Option<String>,
    addresses: Vec<String>,
    daily_mb: Option<f64>,
    monthly_mb: Option<f64>,
    monthly_reset_day: Option<i64>,
    floor_mbit: Option<f64>,
}

#[derive(Default)]
struct UplinkSettings {
    name: Option<String>,
    device: Option<String>,
    probe_interval_ms: Option<i64>,
    metered: Option<bool>,
    allowance_mb: Option<f64>,
    billing_day: Option<i64>,
    threshold_mb: Option<f64>,
}

/// A setting, so that each file format can say what it is called there and on which line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Bundle,
    BundleFile,
    LogLevel,
    ControlSocket,
    StateFile,
    Device,
    Mtu,
    Table,
    RulePriority,
    Fwmark,
    LanDevices,
    MeshDevices,
    Uplinks,
    Uplink(usize),
    UplinkName(usize),
    UplinkDevice(usize),
    UplinkProbeInterval(usize),
    UplinkMetered(usize),
    UplinkAllowance(usize),
    UplinkBillingDay(usize),
    UplinkThreshold(usize),
    ShareUp,
    ShareDown,
    ShareUpPercent,
    ShareDownPercent,
    ShareDaily,
    ShareMonthly,
    ShareResetDay,
    ShareDays,
    ShareHours,
    MaxPrice,
    Devices,
    DeviceEntry(usize),
    DeviceName(usize),
    DeviceMac(usize),
    DeviceAddress(usize),
    DeviceDaily(usize),
    DeviceMonthly(usize),
    DeviceResetDay(usize),
    DeviceFloor(usize),
}

type Locate<'a> = dyn Fn(Field) -> (String, Option<usize>) + 'a;

impl Settings {
    fn validate(mut self, file: &Path, locate: &Locate<'_>) -> Result<GatewayConfig, ConfigError> {
        let err = |field: Field, reason: String| {
            let (key, line) = locate(field);
            ConfigError::key(file, key, line, reason)
        };

        let bundle = match (&self.bundle, &self.bundle_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    Field::BundleFile,
                    "give either bundle or bundle_file, not both".into(),
                ));
            }
            (None, None) => return Err(err(Field::Bundle, "missing (or set bundle_file)".into())),
            (Some(text), None) => {
                let (bundle, format) = MemberBundle::parse_with_format(text)
                    .map_err(|e| err(Field::Bundle, e.to_string()))?;
                let (key, _) = locate(Field::Bundle);
                if let Some(w) = format.warning() {
                    self.warnings
                        .push(format!("`{key}` in {}: {w}", file.display()));
                }
                if let Some(mode) = open_to_others(file) {
                    self.warnings.push(format!(
                        "`{key}` holds the member's private key, but {} can be read by other users (mode {mode:04o}): put the bundle in a bundle_file only root can read (chmod 600)",
                        file.display()
                    ));
                }
                bundle
            }
            (None, Some(bundle_path)) => {
                let p = resolve_relative(file, bundle_path);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    err(
                        Field::BundleFile,
                        format!("cannot read bundle file {}: {e}", p.display()),
                    )
                })?;
                let (bundle, format) = MemberBundle::parse_with_format(&text)
                    .map_err(|e| err(Field::BundleFile, format!("in {}: {e}", p.display())))?;
                if let Some(w) = format.warning() {
                    self.warnings.push(format!("{}: {w}", p.display()));
                }
                if let Some(mode) = open_to_others(&p) {
                    self.warnings.push(format!(
                        "{} holds the member's private key, but other users can read or change it (mode {mode:04o}): chmod 600 {}",
                        p.display(),
                        p.display()
                    ));
                }
                bundle
            }
        };
        let has_v6 = bundle.addresses.iter().any(|a| a.is_ipv6());

        let log_level = match &self.log_level {
            None => LevelFilter::INFO,
            Some(l) => parse_level(l).map_err(|r| err(Field::LogLevel, r))?,
        };
        let control_socket = match self.control_socket.as_deref() {
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
            Some("") => return Err(err(Field::ControlSocket, "is empty".into())),
            Some(p) => PathBuf::from(p),
        };
        let state_file = match self.state_file.as_deref() {
            None => PathBuf::from(DEFAULT_STATE_FILE),
            Some("") => return Err(err(Field::StateFile, "is empty".into())),
            Some(p) => resolve_relative(file, p),
        };

        let device = self.device.unwrap_or_else(|| DEFAULT_DEVICE.into());
        check_ifname(&device).map_err(|r| err(Field::Device, r))?;

        let mtu = match self.mtu {
            None | Some(0) => None,
            Some(m) => Some(check_mtu(m, has_v6).map_err(|r| err(Field::Mtu, r))?),
        };

        let table = self.table.unwrap_or(DEFAULT_TABLE);
        if matches!(table, 0 | 253..=255) {
            return Err(err(
                Field::Table,
                format!("{table} is reserved (0 unspec, 253 default, 254 main, 255 local)"),
            ));
        }
        let rule_priority = self.rule_priority.unwrap_or(DEFAULT_RULE_PRIORITY);
        let last_priority = 32765 - (GATEWAY_RULE_COUNT - 1);
        if !(1..=last_priority).contains(&rule_priority) {
            return Err(err(
                Field::RulePriority,
                format!(
                    "{rule_priority} is out of range: we use {GATEWAY_RULE_COUNT} priorities from it, which must lie between 1 and 32765 (before the main table's rule)"
                ),
            ));
        }
        let fwmark = self.fwmark.unwrap_or(DEFAULT_FWMARK);
        if fwmark == 0 {
            return Err(err(
                Field::Fwmark,
                "must not be 0 (0 means unmarked)".into(),
            ));
        }

        let lan_devices = self
            .lan_devices
            .unwrap_or_else(|| vec![DEFAULT_LAN_DEVICE.into()]);
        if lan_devices.is_empty() {
            let reason = match self.unresolved_lan.as_slice() {
                [] => "is empty: no traffic would enter the pool".to_string(),
                nets => format!(
                    "no LAN device: {} not resolved to a device, so no traffic would enter the pool. Give {} (the init script passes them; on OpenWrt `check-config` asks netifd itself), or check that the network is up",
                    match nets {
                        [one] => format!("network `{one}` is"),
                        more => format!("networks `{}` are", more.join("`, `")),
                    },
                    nets.iter()
                        .map(|n| format!("--resolve {n}=DEVICE"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            return Err(err(Field::LanDevices, reason));
        }
        for (i, lan) in lan_devices.iter().enumerate() {
            check_ifname(lan).map_err(|r| err(Field::LanDevices, r))?;
            if *lan == device {
                return Err(err(
                    Field::LanDevices,
                    format!("`{lan}` is the tunnel device itself"),
                ));
            }
            if lan_devices[..i].contains(lan) {
                return Err(err(Field::LanDevices, format!("`{lan}` is listed twice")));
            }
        }

        let mesh_devices = self.mesh_devices.unwrap_or_default();
        for (i, mesh) in mesh_devices.iter().enumerate() {
            check_ifname(mesh).map_err(|r| err(Field::MeshDevices, r))?;
            if *mesh == device {
                return Err(err(
                    Field::MeshDevices,
                    format!("`{mesh}` is the tunnel device itself"),
                ));
            }
            if mesh_devices[..i].contains(mesh) {
                return Err(err(Field::MeshDevices, format!("`{mesh}` is listed twice")));
            }
        }

        if self.uplinks.is_empty() {
            let mut reason = "missing: at least one uplink is needed".to_string();
            for w in &self.warnings {
                reason.push_str("; ");
                reason.push_str(w);
            }
            return Err(err(Field::Uplinks, reason));
        }
        let mut uplinks: Vec<UplinkConfig> = Vec::new();
        for (i, u) in self.uplinks.into_iter().enumerate() {
            let Some(dev) = u.device.clone() else {
                return Err(err(Field::UplinkDevice(i), "missing".into()));
            };
            check_ifname(&dev).map_err(|r| err(Field::UplinkDevice(i), r))?;
            let name = u.name.clone().unwrap_or_else(|| dev.clone());
            if name.is_empty()
                || name.len() > 32
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(err(
                    Field::UplinkName(i),
                    format!("`{name}` is not a usable label (1 to 32 characters, no spaces)"),
                ));
            }
            if dev == device || lan_devices.contains(&dev) || mesh_devices.contains(&dev) {
                return Err(err(
                    Field::UplinkDevice(i),
                    format!("`{dev}` is the tunnel device, a LAN or a mesh device, not an uplink"),
                ));
            }
            if let Some(other) = uplinks.iter().find(|o| o.name == name) {
                return Err(err(
                    Field::UplinkName(i),
                    format!("uplink name `{}` is used twice", other.name),
                ));
            }
            if let Some(other) = uplinks.iter().find(|o| o.device == dev) {
                return Err(err(
                    Field::UplinkDevice(i),
                    format!("device `{dev}` is already uplink `{}`", other.name),
                ));
            }
            let ms = u
                .probe_interval_ms
                .unwrap_or(linkpool_protocol::path::DEFAULT_PROBE_INTERVAL.as_millis() as i64);
            if !PROBE_INTERVAL_MS.contains(&ms) {
                return Err(err(
                    Field::UplinkProbeInterval(i),
                    format!(
                        "{ms} is out of range: use {} to {} (milliseconds between pings of an idle \
                         uplink; see docs/status.md for what each costs a month)",
                        PROBE_INTERVAL_MS.start(),
                        PROBE_INTERVAL_MS.end()
                    ),
                ));
            }
            let metered = metered_line(i, &u, &err)?;
            uplinks.push(UplinkConfig {
                name,
                device: dev,
                probe_interval: Duration::from_millis(ms as u64),
                metered,
            });
        }

        // Sharing: off unless the owner turns it on; a cap in Mbit/s each way, else the
        // whole line (the owner's own traffic always comes first on it).
        let cap = |field: Field, mbit: Option<f64>| -> Result<u64, ConfigError> {
            match mbit {
                None => Ok(u64::MAX / 8),
                Some(m) if m > 0.0 && m <= MAX_SHARE_MBIT => Ok((m * 125_000.0) as u64),
                Some(m) => Err(err(
                    field,
                    format!(
                        "{m} is out of range: a rate in Mbit/s above 0 and up to {MAX_SHARE_MBIT}"
                    ),
                )),
            }
        };
        let (up, down) = (
            cap(Field::ShareUp, self.share_up_mbit)?,
            cap(Field::ShareDown, self.share_down_mbit)?,
        );
        let sharing = RelayPolicy {
            sharing: self.share.unwrap_or(false),
            up_total: up,
            down_total: down,
            up_per_neighbour: up,
            down_per_neighbour: down,
        };
        // The rest of the owner's policy: each limit unset is no limit.
        let percent = |field: Field, p: Option<f64>| -> Result<Option<Share>, ConfigError> {
            let Some(p) = p else { return Ok(None) };
            Share::from_percent(p).map(Some).ok_or_else(|| {
                err(
                    field,
                    format!(
                        "{p} is out of range: a share of the line's measured capacity in percent, above 0 and up to 100"
                    ),
                )
            })
        };
        let megabytes = |field: Field, mb: Option<f64>| -> Result<Option<u64>, ConfigError> {
            match mb {
                None => Ok(None),
                Some(m) if m > 0.0 && m <= MAX_ALLOWANCE_MB => Ok(Some((m * 1e6) as u64)),
                Some(m) => Err(err(
                    field,
                    format!(
                        "{m} is out of range: megabytes (1 MB = 1000000 bytes, up and down together) above 0 and up to {MAX_ALLOWANCE_MB}"
                    ),
                )),
            }
        };
        let monthly_reset_day = match self.share_reset_day {
            None => ResetDay::FIRST,
            Some(d) => u8::try_from(d).ok().and_then(ResetDay::new).ok_or_else(|| {
                err(
                    Field::ShareResetDay,
                    format!(
                        "{d} is out of range: a day of the month from 1 to 28 (so that every month has it)"
                    ),
                )
            })?,
        };
        let schedule = Schedule::parse(self.share_days.as_deref(), self.share_hours.as_deref())
            .map_err(|e| match e {
                ScheduleError::Days(r) => err(Field::ShareDays, r),
                ScheduleError::Hours(r) => err(Field::ShareHours, r),
            })?;
        let share_policy = SharePolicy {
            up_share: percent(Field::ShareUpPercent, self.share_up_percent)?,
            down_share: percent(Field::ShareDownPercent, self.share_down_percent)?,
            daily_bytes: megabytes(Field::ShareDaily, self.share_daily_mb)?,
            monthly_bytes: megabytes(Field::ShareMonthly, self.share_monthly_mb)?,
            monthly_reset_day,
            schedule,
        };
        if let (Some(day), Some(month)) = (share_policy.daily_bytes, share_policy.monthly_bytes) {
            if day > month {
                let (key, _) = locate(Field::ShareDaily);
                self.warnings.push(format!(
                    "`{key}` in {}: the daily allowance is more than the monthly one, which holds first",
                    file.display()
                ));
            }
        }

        let devices = validate_devices(self.devices, &err, &megabytes)?;
        let max_price_per_gb = match self.max_price_per_gb {
            None => 0,
            Some(p) if (0.0..=MAX_PRICE_PER_GB).contains(&p) => (p * 1000.0).round() as i64,
            Some(p) => {
                return Err(err(
                    Field::MaxPrice,
                    format!("{p} is out of range: credits per GB from 0 to {MAX_PRICE_PER_GB}"),
                ));
            }
        };

        Ok(GatewayConfig {
            file: file.to_path_buf(),
            bundle,
            log_level,
            control_socket,
            state_file,
            tunnel: TunnelConfig {
                device,
                mtu,
                table,
                rule_priority,
                fwmark,
                lan_devices,
                mesh_devices,
            },
            uplinks,
            spreading: self.spreading,
            sharing,
            share_policy,
            max_price_per_gb,
            devices,
            warnings: self.warnings,
        })
    }
}

/// An uplink's metered line: `metered` on with its allowance, a billing day (the 1st
/// unless set) and a threshold (0 unless set) no more than the allowance. Any of them
/// without `metered` on is a mistake, not something to ignore.
fn metered_line(
    i: usize,
    u: &UplinkSettings,
    err: &dyn Fn(Field, String) -> ConfigError,
) -> Result<Option<MeteredLine>, ConfigError> {
    let given = [
        (Field::UplinkAllowance(i), u.allowance_mb.is_some()),
        (Field::UplinkBillingDay(i), u.billing_day.is_some()),
        (Field::UplinkThreshold(i), u.threshold_mb.is_some()),
    ];
    if u.metered != Some(true) {
        return match given.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(err(
                *field,
                "is set but the uplink is not metered: set `metered` on as well (or remove it)"
                    .into(),
            )),
            None => Ok(None),
        };
    }
    // The allowance above 0; the threshold may be 0 (the owner never moves off).
    let mb = |field: Field, v: f64, zero: bool| -> Result<u64, ConfigError> {
        if (v > 0.0 || (zero && v == 0.0)) && v <= MAX_ALLOWANCE_MB {
            Ok((v * 1e6) as u64)
        } else {
            let from = if zero { "from 0" } else { "above 0" };
            Err(err(
                field,
                format!(
                    "{v} is out of range: megabytes (1 MB = 1000000 bytes, up and down together) {from} and up to {MAX_ALLOWANCE_MB}"
                ),
            ))
        }
    };
    let Some(allowance_mb) = u.allowance_mb else {
        return Err(err(
            Field::UplinkAllowance(i),
            "missing: a metered uplink needs the allowance its carrier gives per billing period"
                .into(),
        ));
    };
    let allowance = mb(Field::UplinkAllowance(i), allowance_mb, false)?;
    let threshold = match u.threshold_mb {
        None => 0,
        Some(t) => mb(Field::UplinkThreshold(i), t, true)?,
    };
    if threshold > allowance {
        return Err(err(
            Field::UplinkThreshold(i),
            format!(
                "{} MB is more than the allowance ({allowance_mb} MB): the owner's traffic would never use the line",
                threshold as f64 / 1e6
            ),
        ));
    }
    let day = match u.billing_day {
        None => 1,
        Some(d) => u8::try_from(d).ok().filter(|d| (1..=28).contains(d)).ok_or_else(|| {
            err(
                Field::UplinkBillingDay(i),
                format!(
                    "{d} is out of range: the day of the month the allowance renews, from 1 to 28 (so that every month has it)"
                ),
            )
        })?,
    };
    MeteredLine::new(allowance, day, threshold)
        .map(Some)
        .map_err(|e| err(Field::UplinkBillingDay(i), e.to_string()))
}

/// The devices with limits of their own: each named once, by a MAC and/or addresses no
/// other device has, its thresholds and floor in range.
fn validate_devices(
    settings: Vec<DeviceSettings>,
    err: &dyn Fn(Field, String) -> ConfigError,
    megabytes: &dyn Fn(Field, Option<f64>) -> Result<Option<u64>, ConfigError>,
) -> Result<Vec<DeviceConfig>, ConfigError> {
    if settings.len() > MAX_DEVICES {
        return Err(err(
            Field::Devices,
            format!(
                "{} devices: at most {MAX_DEVICES} may have limits of their own",
                settings.len()
            ),
        ));
    }
    let mut devices: Vec<DeviceConfig> = Vec::new();
    for (i, d) in settings.into_iter().enumerate() {
        let name = d
            .name
            .ok_or_else(|| err(Field::DeviceName(i), "missing".into()))?;
        if !is_device_name(&name) {
            return Err(err(
                Field::DeviceName(i),
                format!("`{name}` is not a usable name (1 to 32 letters, digits, `-`, `_` or `.`)"),
            ));
        }
        if devices.iter().any(|o| o.name == name) {
            return Err(err(
                Field::DeviceName(i),
                format!("device `{name}` is given twice"),
            ));
        }
        let mac = match d.mac.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(m) => {
                let mac: MacAddr = m.parse().map_err(|r| err(Field::DeviceMac(i), r))?;
                if let Some(o) = devices.iter().find(|o| o.mac == Some(mac)) {
                    return Err(err(
                        Field::DeviceMac(i),
                        format!("MAC address {mac} is already device `{}`'s", o.name),
                    ));
                }
                Some(mac)
            }
        };
        let mut addresses: Vec<IpAddr> = Vec::new();
        for text in d.addresses.iter().filter(|a| !a.trim().is_empty()) {
            let a = device_address(text).map_err(|r| err(Field::DeviceAddress(i), r))?;
            if addresses.contains(&a) {
                return Err(err(
                    Field::DeviceAddress(i),
                    format!("`{text}` is listed twice"),
                ));
            }
            if let Some(o) = devices.iter().find(|o| o.addresses.contains(&a)) {
                return Err(err(
                    Field::DeviceAddress(i),
                    format!("`{text}` is already device `{}`'s", o.name),
                ));
            }
            addresses.push(a);
        }
        if addresses.len() > MAX_ADDRESSES_PER_DEVICE {
            return Err(err(
                Field::DeviceAddress(i),
                format!(
                    "{} addresses: a device has at most {MAX_ADDRESSES_PER_DEVICE}",
                    addresses.len()
                ),
            ));
        }
        if mac.is_none() && addresses.is_empty() {
            return Err(err(
                Field::DeviceEntry(i),
                format!(
                    "device `{name}` has neither a MAC address nor an address: give `mac` (its addresses are then found by themselves) or its addresses"
                ),
            ));
        }
        let monthly_reset_day = match d.monthly_reset_day {
                None => ResetDay::FIRST,
                Some(day) => u8::try_from(day).ok().and_then(ResetDay::new).ok_or_else(|| {
                    err(
                        Field::DeviceResetDay(i),
                        format!(
                            "{day} is out of range: a day of the month from 1 to 28 (so that every month has it)"
                        ),
                    )
                })?,
            };
        let floor = match d.floor_mbit {
            None => DEFAULT_FLOOR,
            Some(m) if (MIN_FLOOR_MBIT..=MAX_FLOOR_MBIT).contains(&m) => (m * 125_000.0) as u64,
            Some(m) => {
                return Err(err(
                    Field::DeviceFloor(i),
                    format!(
                        "{m} is out of range: the rate in Mbit/s each way the device keeps over its thresholds, from {MIN_FLOOR_MBIT} to {MAX_FLOOR_MBIT}"
                    ),
                ));
            }
        };
        devices.push(DeviceConfig {
            name,
            mac,
            addresses,
            policy: DevicePolicy {
                daily_bytes: megabytes(Field::DeviceDaily(i), d.daily_mb)?,
                monthly_bytes: megabytes(Field::DeviceMonthly(i), d.monthly_mb)?,
                monthly_reset_day,
                floor,
            },
        });
    }
    Ok(devices)
}

/// Checks a tunnel MTU (not 0) against what a datagram can carry and what the tunnel's
/// address families need.
pub fn check_mtu(mtu: i64, ipv6: bool) -> Result<u16, String> {
    linkpool_protocol::wire::check_tunnel_mtu(
        mtu,
        ipv6.then_some("the bundle has an IPv6 address"),
        true,
    )
}

/// The permission bits of `path` when users other than its owner may read or write it.
fn open_to_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o066 != 0).then_some(mode)
}

fn resolve_relative(config_file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config_file.parent().unwrap_or(Path::new(".")).join(p)
}

/// UCI booleans as `config_get_bool` reads them.
fn uci_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "yes" | "on" | "true" | "enabled" => Some(true),
        "0" | "no" | "off" | "false" | "disabled" => Some(false),
        _ => None,
    }
}

/// An integer as UCI users write it: decimal or `0x` hex.
fn uci_int(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

const GATEWAY_OPTIONS: &[&str] = &[
    "enabled",
    "bundle",
    "bundle_file",
    "log_level",
    "control_socket",
    "state_file",
    "device",
    "mtu",
    "table",
    "rule_priority",
    "fwmark",
    "lan_network",
    "lan_device",
    "mesh_network",
    "mesh_device",
    "spread_interactive",
    "spread_bulk",
    "spread_default",
    "share",
    "share_up_mbit",
    "share_down_mbit",
    "share_up_percent",
    "share_down_percent",
    "share_daily_mb",
    "share_monthly_mb",
    "share_monthly_reset_day",
    "share_days",
    "share_hours",
    "max_price_per_gb",
];
const UPLINK_OPTIONS: &[&str] = &[
    "enabled",
    "name",
    "network",
    "device",
    "probe_interval_ms",
    "metered",
    "allowance_mb",
    "billing_day",
    "threshold_mb",
];
const DEVICE_OPTIONS: &[&str] = &[
    "enabled",
    "name",
    "mac",
    "address",
    "daily_mb",
    "monthly_mb",
    "monthly_reset_day",
    "floor_mbit",
];

fn from_uci(
    file: &Path,
    pkg: &UciPackage,
    resolve: &[(String, String)],
) -> Result<Loaded, ConfigError> {
    // Keys are named as `uci show linkpool` names them, whatever the file is called.
    let package = "linkpool";
    let mut keys: Vec<(Field, String, Option<usize>)> = Vec::new();
    let mut settings = Settings::default();
    let mut gateway = None;
    let mut uplink_index = 0;
    let mut device_index = 0;
    let resolve_net = |net: &str| {
        resolve
            .iter()
            .find(|(n, _)| n == net)
            .map(|(_, d)| d.clone())
    };

    // Pass 1: section types, option names and value shapes; a typo is an error even when
    // the service is disabled.
    for s in &pkg.sections {
        let (allowed, label) = match s.kind.as_str() {
            "gateway" => {
                if let Some(first) = gateway.replace(s) {
                    return Err(ConfigError::key(
                        file,
                        format!("{package}.{}", s.label(1)),
                        Some(s.line),
                        format!(
                            "a second `config gateway` section (the first is on line {})",
                            first.line
                        ),
                    ));
                }
                (GATEWAY_OPTIONS, s.label(0))
            }
            "uplink" => {
                uplink_index += 1;
                (UPLINK_OPTIONS, s.label(uplink_index - 1))
            }
            "device" => {
                device_index += 1;
                (DEVICE_OPTIONS, s.label(device_index - 1))
            }
            other => {
                return Err(ConfigError::key(
                    file,
                    format!("{package}.{}", s.label(0)),
                    Some(s.line),
                    format!("unknown section type `{other}` (known: gateway, uplink, device)"),
                ));
            }
        };
        for o in &s.options {
            let key = format!("{package}.{label}.{}", o.name);
            if !allowed.contains(&o.name.as_str()) {
                return Err(ConfigError::key(
                    file,
                    key,
                    Some(o.line),
                    format!("unknown option (known: {})", allowed.join(", ")),
                ));
            }
            let is_list_option = match s.kind.as_str() {
                "device" => o.name == "address",
                _ => matches!(
                    o.name.as_str(),
                    "lan_network" | "lan_device" | "mesh_network" | "mesh_device"
                ),
            };
            if matches!(o.value, UciValue::List(_)) && !is_list_option {
                return Err(ConfigError::key(
                    file,
                    key,
                    Some(o.line),
                    "is a list; expected a single `option`",
                ));
            }
        }
    }
    let Some(gw) = gateway else {
        return Err(ConfigError::file(
            file,
            "no `config gateway` section (see the example in /etc/config/linkpool)",
        ));
    };
    let gw_label = gw.label(0);
    let gw_key = |name: &str| format!("{package}.{gw_label}.{name}");
    let single = |name: &str| -> Option<(&str, usize)> {
        gw.get(name).and_then(|o| match &o.value {
            UciValue::Single(v) => Some((v.as_str(), o.line)),
            UciValue::List(_) => None,
        })
    };

    if let Some((v, line)) = single("enabled") {
        match uci_bool(v) {
            Some(false) => {
                return Ok(Loaded::Disabled {
                    reason: format!("{} is '{v}'", gw_key("enabled")),
                });
            }
            Some(true) => {}
            None => {
                return Err(ConfigError::key(
                    file,
                    gw_key("enabled"),
                    Some(line),
                    format!("expected 0 or 1, got `{v}`"),
                ));
            }
        }
    }
    let bundle = single("bundle").filter(|(v, _)| !v.trim().is_empty());
    let bundle_file = single("bundle_file").filter(|(v, _)| !v.trim().is_empty());
    if bundle.is_none() && bundle_file.is_none() {
        return Ok(Loaded::Disabled {
            reason: format!("no member bundle set ({})", gw_key("bundle")),
        });
    }

    let mut text_opt = |field: Field, name: &str| -> Option<String> {
        let (v, line) = single(name)?;
        keys.push((field, gw_key(name), Some(line)));
        Some(v.to_string())
    };
    settings.bundle = bundle.map(|(v, _)| v.to_string());
    settings.bundle_file = bundle_file.map(|(v, _)| v.to_string());
    text_opt(Field::Bundle, "bundle");
    text_opt(Field::BundleFile, "bundle_file");
    settings.log_level = text_opt(Field::LogLevel, "log_level");
    settings.control_socket = text_opt(Field::ControlSocket, "control_socket");
    settings.state_file = text_opt(Field::StateFile, "state_file");
    settings.device = text_opt(Field::Device, "device");
    let mut int_opt = |field: Field, name: &str, max: u64| -> Result<Option<u64>, ConfigError> {
        let Some((v, line)) = single(name) else {
            return Ok(None);
        };
        keys.push((field, gw_key(name), Some(line)));
        match uci_int(v) {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(ConfigError::key(
                file,
                gw_key(name),
                Some(line),
                if name == "mtu" {
                    format!(
                        "expected an integer (0 for automatic, or a size up to {MAX_MTU}), got `{v}`"
                    )
                } else {
                    format!("expected an integer from 0 to {max}, got `{v}`")
                },
            )),
        }
    };
    // Any integer: out of range, the error gives the range.
    settings.mtu = int_opt(Field::Mtu, "mtu", i64::MAX as u64)?.map(|n| n as i64);
    settings.table = int_opt(Field::Table, "table", u32::MAX.into())?.map(|n| n as u32);
    settings.rule_priority =
        int_opt(Field::RulePriority, "rule_priority", u32::MAX.into())?.map(|n| n as u32);
    settings.fwmark = int_opt(Field::Fwmark, "fwmark", u32::MAX.into())?.map(|n| n as u32);

    // Sharing: `option share '1'`, caps in Mbit/s.
    if let Some((v, line)) = single("share").filter(|(v, _)| !v.is_empty()) {
        settings.share = Some(uci_bool(v).ok_or_else(|| {
            ConfigError::key(
                file,
                gw_key("share"),
                Some(line),
                format!("expected 0 or 1, got `{v}`"),
            )
        })?);
    }
    for (field, name) in [
        (Field::ShareUp, "share_up_mbit"),
        (Field::ShareDown, "share_down_mbit"),
    ] {
        let Some((v, line)) = single(name).filter(|(v, _)| !v.is_empty()) else {
            continue;
        };
        keys.push((field, gw_key(name), Some(line)));
        let mbit: f64 = v.parse().map_err(|_| {
            ConfigError::key(
                file,
                gw_key(name),
                Some(line),
                format!("expected a rate in Mbit/s, got `{v}`"),
            )
        })?;
        match field {
            Field::ShareUp => settings.share_up_mbit = Some(mbit),
            _ => settings.share_down_mbit = Some(mbit),
        }
    }
    // The rest of the owner's policy: shares of the line, allowances, schedule.
    for (field, name) in [
        (Field::ShareUpPercent, "share_up_percent"),
        (Field::ShareDownPercent, "share_down_percent"),
        (Field::ShareDaily, "share_daily_mb"),
        (Field::ShareMonthly, "share_monthly_mb"),
        (Field::ShareResetDay, "share_monthly_reset_day"),
        (Field::ShareDays, "share_days"),
        (Field::ShareHours, "share_hours"),
    ] {
        let Some((v, line)) = single(name).filter(|(v, _)| !v.trim().is_empty()) else {
            continue;
        };
        keys.push((field, gw_key(name), Some(line)));
        let bad = |what: &str| {
            ConfigError::key(
                file,
                gw_key(name),
                Some(line),
                format!("expected {what}, got `{v}`"),
            )
        };
        let number = |what: &str| v.trim().parse::<f64>().map_err(|_| bad(what));
        match field {
            Field::ShareUpPercent | Field::ShareDownPercent => {
                let what = "a share of the line in percent (such as 30 or 30%)";
                let p = v
                    .trim()
                    .strip_suffix('%')
                    .unwrap_or(v.trim())
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| bad(what))?;
                match field {
                    Field::ShareUpPercent => settings.share_up_percent = Some(p),
                    _ => settings.share_down_percent = Some(p),
                }
            }
            Field::ShareDaily => {
                settings.share_daily_mb = Some(number("a size in MB (1 MB = 1000000 bytes)")?)
            }
            Field::ShareMonthly => {
                settings.share_monthly_mb = Some(number("a size in MB (1 MB = 1000000 bytes)")?)
            }
            Field::ShareResetDay => {
                // Any integer: out of range, the error gives the range.
                let day = uci_int(v).ok_or_else(|| bad("a day of the month from 1 to 28"))?;
                settings.share_reset_day = Some(i64::try_from(day).unwrap_or(i64::MAX));
            }
            Field::ShareDays => settings.share_days = Some(v.to_string()),
            _ => settings.share_hours = Some(v.to_string()),
        }
    }
    if let Some((v, line)) = single("max_price_per_gb").filter(|(v, _)| !v.trim().is_empty()) {
        keys.push((Field::MaxPrice, gw_key("max_price_per_gb"), Some(line)));
        let price = v.trim().parse::<f64>().map_err(|_| {
            ConfigError::key(
                file,
                gw_key("max_price_per_gb"),
                Some(line),
                format!("expected credits per GB (such as 2.5), got `{v}`"),
            )
        })?;
        settings.max_price_per_gb = Some(price);
    }

    // Spreading: `option spread_bulk 'session'`; empty is the default, as `uci set
    // linkpool.main.spread_bulk=''` leaves it.
    for class in [FlowClass::Interactive, FlowClass::Bulk, FlowClass::Default] {
        let name = format!("spread_{}", class.name());
        let Some((v, line)) = single(&name).filter(|(v, _)| !v.is_empty()) else {
            continue;
        };
        let mode: Mode = v
            .parse()
            .map_err(|e: linkpool_protocol::flow::UnknownMode| {
                ConfigError::key(file, gw_key(&name), Some(line), e.to_string())
            })?;
        match class {
            FlowClass::Interactive => settings.spreading.interactive = mode,
            FlowClass::Bulk => settings.spreading.bulk = mode,
            FlowClass::Default => settings.spreading.default = mode,
        }
    }

    // LAN: logical networks (resolved by the init script) and/or devices.
    let words = |name: &str| -> Vec<String> {
        match gw.get(name).map(|o| &o.value) {
            None => Vec::new(),
            // `option lan_network 'lan guest'` is the older way to write a list.
            Some(UciValue::Single(v)) => v.split_whitespace().map(str::to_string).collect(),
            Some(UciValue::List(v)) => v.iter().filter(|s| !s.is_empty()).cloned().collect(),
        }
    };
    let lan_networks = words("lan_network");
    let lan_devices = words("lan_device");
    if gw.get("lan_network").is_some() || gw.get("lan_device").is_some() {
        let line = gw
            .get("lan_network")
            .or_else(|| gw.get("lan_device"))
            .map(|o| o.line);
        let name = if gw.get("lan_network").is_some() {
            "lan_network"
        } else {
            "lan_device"
        };
        keys.push((Field::LanDevices, gw_key(name), line));
        let mut devices = lan_devices;
        for net in &lan_networks {
            match resolve_net(net) {
                Some(dev) => {
                    if !devices.contains(&dev) {
                        devices.push(dev)
                    }
                }
                None => {
                    settings.warnings.push(format!(
                        "LAN network `{net}` was not resolved to a device (no --resolve {net}=DEVICE; is it up?); its traffic stays out of the pool"
                    ));
                    settings.unresolved_lan.push(net.clone());
                }
            }
        }
        settings.lan_devices = Some(devices);
    }

    // Mesh: the same two ways; absent means no mesh.
    let mesh_networks = words("mesh_network");
    let mut mesh_devices = words("mesh_device");
    if let Some(o) = gw.get("mesh_network").or_else(|| gw.get("mesh_device")) {
        keys.push((Field::MeshDevices, gw_key(&o.name), Some(o.line)));
    }
    for net in &mesh_networks {
        match resolve_net(net) {
            Some(dev) => {
                if !mesh_devices.contains(&dev) {
                    mesh_devices.push(dev)
                }
            }
            None => settings.warnings.push(format!(
                "mesh network `{net}` was not resolved to a device (no --resolve {net}=DEVICE; is it up?)"
            )),
        }
    }
    settings.mesh_devices = Some(mesh_devices);

    // Uplinks.
    let mut index = 0;
    for s in pkg.sections.iter().filter(|s| s.kind == "uplink") {
        let label = s.label(index);
        index += 1;
        let get = |name: &str| match s.get(name).map(|o| &o.value) {
            Some(UciValue::Single(v)) if !v.is_empty() => Some(v.clone()),
            _ => None,
        };
        let okey = |name: &str| format!("{package}.{label}.{name}");
        if let Some(v) = get("enabled") {
            match uci_bool(&v) {
                Some(false) => continue,
                Some(true) => {}
                None => {
                    return Err(ConfigError::key(
                        file,
                        okey("enabled"),
                        s.get("enabled").map(|o| o.line),
                        format!("expected 0 or 1, got `{v}`"),
                    ));
                }
            }
        }
        let i = settings.uplinks.len();
        let name = get("name")
            .or_else(|| s.name.clone())
            .or_else(|| get("network"));
        let name_line = s.get("name").map_or(s.line, |o| o.line);
        keys.push((Field::UplinkName(i), okey("name"), Some(name_line)));
        keys.push((Field::Uplink(i), format!("{package}.{label}"), Some(s.line)));
        let device = match (get("device"), get("network")) {
            (Some(dev), _) => {
                keys.push((
                    Field::UplinkDevice(i),
                    okey("device"),
                    s.get("device").map(|o| o.line),
                ));
                Some(dev)
            }
            (None, Some(net)) => {
                keys.push((
                    Field::UplinkDevice(i),
                    okey("network"),
                    s.get("network").map(|o| o.line),
                ));
                match resolve_net(&net) {
                    Some(dev) => Some(dev),
                    None => {
                        settings.warnings.push(format!(
                            "uplink `{}` skipped: network `{net}` was not resolved to a device (no --resolve {net}=DEVICE; is it up?)",
                            name.as_deref().unwrap_or(&label)
                        ));
                        continue;
                    }
                }
            }
            (None, None) => {
                return Err(ConfigError::key(
                    file,
                    okey("network"),
                    Some(s.line),
                    "missing (set `option network` or `option device`)",
                ));
            }
        };
        let probe_interval_ms = match get("probe_interval_ms") {
            None => None,
            Some(v) => {
                let line = s.get("probe_interval_ms").map(|o| o.line);
                keys.push((
                    Field::UplinkProbeInterval(i),
                    okey("probe_interval_ms"),
                    line,
                ));
                // Any integer: out of range, the error gives the range.
                match uci_int(&v) {
                    Some(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                    None => {
                        return Err(ConfigError::key(
                            file,
                            okey("probe_interval_ms"),
                            line,
                            format!("expected an integer (milliseconds), got `{v}`"),
                        ));
                    }
                }
            }
        };
        let mut uplink = UplinkSettings {
            name,
            device,
            probe_interval_ms,
            ..UplinkSettings::default()
        };
        for (field, option) in [
            (Field::UplinkMetered(i), "metered"),
            (Field::UplinkAllowance(i), "allowance_mb"),
            (Field::UplinkBillingDay(i), "billing_day"),
            (Field::UplinkThreshold(i), "threshold_mb"),
        ] {
            let Some(v) = get(option) else {
                continue;
            };
            let line = s.get(option).map(|o| o.line);
            keys.push((field, okey(option), line));
            let bad = |what: &str| {
                ConfigError::key(
                    file,
                    okey(option),
                    line,
                    format!("expected {what}, got `{v}`"),
                )
            };
            let size = || {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| bad("a size in MB (1 MB = 1000000 bytes)"))
            };
            match field {
                Field::UplinkMetered(_) => {
                    uplink.metered = Some(uci_bool(v.trim()).ok_or_else(|| bad("0 or 1"))?)
                }
                Field::UplinkAllowance(_) => uplink.allowance_mb = Some(size()?),
                Field::UplinkThreshold(_) => uplink.threshold_mb = Some(size()?),
                _ => {
                    // Any integer: out of range, the error gives the range.
                    let day = uci_int(&v).ok_or_else(|| bad("a day of the month from 1 to 28"))?;
                    uplink.billing_day = Some(i64::try_from(day).unwrap_or(i64::MAX));
                }
            }
        }
        // A missing one (the allowance of a metered uplink) is named on the section's line.
        for (field, option) in [
            (Field::UplinkAllowance(i), "allowance_mb"),
            (Field::UplinkMetered(i), "metered"),
        ] {
            keys.push((field, okey(option), Some(s.line)));
        }
        settings.uplinks.push(uplink);
    }

    // Devices with limits of their own.
    for (index, s) in pkg
        .sections
        .iter()
        .filter(|s| s.kind == "device")
        .enumerate()
    {
        let label = s.label(index);
        let okey = |name: &str| format!("{package}.{label}.{name}");
        let get = |name: &str| match s.get(name).map(|o| &o.value) {
            Some(UciValue::Single(v)) if !v.trim().is_empty() => {
                Some((v.trim(), s.get(name).map(|o| o.line)))
            }
            _ => None,
        };
        if let Some((v, line)) = get("enabled") {
            match uci_bool(v) {
                Some(false) => continue,
                Some(true) => {}
                None => {
                    return Err(ConfigError::key(
                        file,
                        okey("enabled"),
                        line,
                        format!("expected 0 or 1, got `{v}`"),
                    ));
                }
            }
        }
        let i = settings.devices.len();
        let mut device = DeviceSettings::default();
        keys.push((
            Field::DeviceEntry(i),
            format!("{package}.{label}"),
            Some(s.line),
        ));
        device.name = match get("name") {
            Some((v, line)) => {
                keys.push((Field::DeviceName(i), okey("name"), line));
                Some(v.to_string())
            }
            None => {
                keys.push((Field::DeviceName(i), okey("name"), Some(s.line)));
                s.name.clone()
            }
        };
        if let Some((v, line)) = get("mac") {
            keys.push((Field::DeviceMac(i), okey("mac"), line));
            device.mac = Some(v.to_string());
        }
        if let Some(o) = s.get("address") {
            keys.push((Field::DeviceAddress(i), okey("address"), Some(o.line)));
            device.addresses = match &o.value {
                // `option address '192.168.1.50 fd00::50'` is the older way to write a list.
                UciValue::Single(v) => v.split_whitespace().map(str::to_string).collect(),
                UciValue::List(v) => v.clone(),
            };
        }
        for (field, name) in [
            (Field::DeviceDaily(i), "daily_mb"),
            (Field::DeviceMonthly(i), "monthly_mb"),
            (Field::DeviceResetDay(i), "monthly_reset_day"),
            (Field::DeviceFloor(i), "floor_mbit"),
        ] {
            let Some((v, line)) = get(name) else {
                continue;
            };
            keys.push((field, okey(name), line));
            let bad = |what: &str| {
                ConfigError::key(
                    file,
                    okey(name),
                    line,
                    format!("expected {what}, got `{v}`"),
                )
            };
            match field {
                Field::DeviceDaily(_) | Field::DeviceMonthly(_) => {
                    let mb = v
                        .parse::<f64>()
                        .map_err(|_| bad("a size in MB (1 MB = 1000000 bytes)"))?;
                    match field {
                        Field::DeviceDaily(_) => device.daily_mb = Some(mb),
                        _ => device.monthly_mb = Some(mb),
                    }
                }
                Field::DeviceResetDay(_) => {
                    // Any integer: out of range, the error gives the range.
                    let day = uci_int(v).ok_or_else(|| bad("a day of the month from 1 to 28"))?;
                    device.monthly_reset_day = Some(i64::try_from(day).unwrap_or(i64::MAX));
                }
                _ => {
                    let mbit = v
                        .parse::<f64>()
                        .map_err(|_| bad("a rate in Mbit/s (such as 1 or 0.5)"))?;
                    device.floor_mbit = Some(mbit);
                }
            }
        }
        settings.devices.push(device);
    }
    let devices_line = pkg
        .sections
        .iter()
        .find(|s| s.kind == "device")
        .map(|s| s.line);

    let fallback = format!("{package}.{gw_label}");
    let uplinks_line = gw.line;
    let skipped_all = index > 0;
    let locate = move |field: Field| -> (String, Option<usize>) {
        if let Some((_, k, l)) = keys.iter().find(|(f, _, _)| *f == field) {
            return (k.clone(), *l);
        }
        match field {
            Field::Uplinks => (
                format!("{package}.@uplink"),
                (!skipped_all).then_some(uplinks_line),
            ),
            Field::Bundle => (format!("{fallback}.bundle"), Some(uplinks_line)),
            Field::Devices => (format!("{package}.@device"), devices_line),
            _ => (fallback.clone(), Some(uplinks_line)),
        }
    };
    settings
        .validate(file, &locate)
        .map(|c| Loaded::Enabled(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uci_numbers_and_booleans() {
        assert_eq!(uci_int("0x7117"), Some(0x7117));
        assert_eq!(uci_int("7117"), Some(7117));
        assert_eq!(uci_int("seven"), None);
        assert_eq!(uci_bool("yes"), Some(true));
        assert_eq!(uci_bool("0"), Some(false));
        assert_eq!(uci_bool("maybe"), None);
    }

    fn bundle() -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/member.bundle");
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    /// A TOML configuration with `sharing` as its `[sharing]` table.
    fn toml(sharing: &str) -> Result<GatewayConfig, ConfigError> {
        toml_devices(&format!("[sharing]\nenabled = true\n{sharing}"))
    }

    /// A UCI configuration with `options` in its gateway section (from line 3 on).
    fn uci(options: &str) -> Result<GatewayConfig, ConfigError> {
        uci_text(&format!(
            "config gateway 'main'\n\toption bundle '{}'\n{options}\nconfig uplink 'wan'\n\toption device 'eth1'\n",
            bundle()
        ))
    }

    fn uci_text(text: &str) -> Result<GatewayConfig, ConfigError> {
        match GatewayConfig::from_uci_str(Path::new("/etc/config/linkpool"), text, &[])? {
            Loaded::Enabled(c) => Ok(*c),
            Loaded::Disabled { reason } => panic!("disabled: {reason}"),
        }
    }

    /// The owner's bid for auctioned lines, in TOML and UCI: credits per GB to
    /// milli-credits, 0 unless set, a bad value named by file, key and line.
    #[test]
    fn the_owners_bid_in_both_formats() {
        let bid = |c: GatewayConfig| c.max_price_per_gb;
        assert_eq!(bid(toml("").unwrap()), 0);
        let borrowing = |v: &str| toml_devices(&format!("[borrowing]\nmax_price_per_gb = {v}\n"));
        assert_eq!(bid(borrowing("2.5").unwrap()), 2_500);
        assert_eq!(bid(uci("\toption max_price_per_gb '2.5'").unwrap()), 2_500);
        assert_eq!(bid(uci("\toption max_price_per_gb ''").unwrap()), 0);
        let e = borrowing("-1").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("borrowing.max_price_per_gb"), "{e}");
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.reason.contains("-1 is out of range"), "{e}");
        let e = uci("\toption max_price_per_gb 'cheap'").unwrap_err();
        assert_eq!(
            e.key.as_deref(),
            Some("linkpool.main.max_price_per_gb"),
            "{e}"
        );
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.reason.contains("expected credits per GB"), "{e}");
        let e = uci("\toption max_price_per_gb '2000000'").unwrap_err();
        assert!(e.reason.contains("out of range"), "{e}");
    }

    /// A TOML configuration whose one uplink has `options` (from line 6 on).
    fn toml_uplink(options: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "bundle = \"{}\"\n\n[[uplink]]\nname = \"lte\"\ndevice = \"wwan0\"\n{options}\n",
            bundle()
        );
        GatewayConfig::from_toml_str(Path::new("/etc/linkpool/gateway.toml"), &text)
    }

    /// A UCI configuration whose one uplink has `options` (from line 5 on).
    fn uci_uplink(options: &str) -> Result<GatewayConfig, ConfigError> {
        uci_text(&format!(
            "config gateway 'main'\n\toption bundle '{}'\nconfig uplink 'lte'\n\toption device 'wwan0'\n{options}\n",
            bundle()
        ))
    }

    #[test]
    fn metered_uplinks_in_both_formats() {
        let line = MeteredLine::new(20_500_000_000, 5, 2_000_000_000).unwrap();
        let c = toml_uplink(
            "metered = true\nallowance_mb = 20500\nbilling_day = 5\nthreshold_mb = 2000",
        )
        .unwrap();
        assert_eq!(c.uplinks[0].metered, Some(line));
        let c = uci_uplink(
            "\toption metered '1'\n\toption allowance_mb '20500'\n\toption billing_day '5'\n\toption threshold_mb '2000'",
        )
        .unwrap();
        assert_eq!(c.uplinks[0].metered, Some(line));
        // Billing day the 1st and no threshold unless set; not metered unless said.
        let c = toml_uplink("metered = true\nallowance_mb = 1000").unwrap();
        assert_eq!(
            c.uplinks[0].metered,
            Some(MeteredLine::new(1_000_000_000, 1, 0).unwrap())
        );
        assert_eq!(toml_uplink("").unwrap().uplinks[0].metered, None);
        assert_eq!(
            toml_uplink("metered = false").unwrap().uplinks[0].metered,
            None
        );
        assert_eq!(
            uci_uplink("\toption metered '0'").unwrap().uplinks[0].metered,
            None
        );
    }

    #[test]
    fn bad_metered_values_name_file_key_and_line() {
        let cases = [
            ("metered = true", "allowance_mb", "missing"),
            (
                "metered = true\nallowance_mb = 0",
                "allowance_mb",
                "0 is out of range",
            ),
            (
                "metered = true\nallowance_mb = -3",
                "allowance_mb",
                "-3 is out of range",
            ),
            (
                "metered = true\nallowance_mb = 1000\nbilling_day = 29",
                "billing_day",
                "29 is out of range: the day of the month the allowance renews, from 1 to 28",
            ),
            (
                "metered = true\nallowance_mb = 1000\nbilling_day = 0",
                "billing_day",
                "0 is out of range",
            ),
            (
                "metered = true\nallowance_mb = 1000\nthreshold_mb = 1500",
                "threshold_mb",
                "more than the allowance",
            ),
            (
                "metered = true\nallowance_mb = 1000\nthreshold_mb = -1",
                "threshold_mb",
                "-1 is out of range",
            ),
            ("allowance_mb = 1000", "allowance_mb", "not metered"),
            (
                "metered = false\nthreshold_mb = 10",
                "threshold_mb",
                "not metered",
            ),
        ];
        for (options, option, why) in cases {
            let e = toml_uplink(options).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/linkpool/gateway.toml"));
            let key = format!("uplink[0].{option}");
            assert_eq!(e.key.as_deref(), Some(key.as_str()), "{options}: {e}");
            assert!(e.line.is_some(), "{options}: {e}");
            assert!(e.reason.contains(why), "{options}: {e}");
            // The same in UCI, `key = value` as `option key 'value'`.
            let uci_options: String = options
                .lines()
                .map(|l| {
                    let (k, v) = l.split_once(" = ").unwrap();
                    let v = match v {
                        "true" => "1",
                        "false" => "0",
                        v => v,
                    };
                    format!("\toption {k} '{v}'\n")
                })
                .collect();
            let e = uci_uplink(&uci_options).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/config/linkpool"));
            let key = format!("linkpool.lte.{option}");
            assert_eq!(e.key.as_deref(), Some(key.as_str()), "{uci_options}: {e}");
            assert!(e.reason.contains(why), "{uci_options}: {e}");
            let want = uci_options
                .lines()
                .position(|l| l.contains(&format!("option {option} ")))
                .map(|i| i + 5);
            if let Some(want) = want {
                assert_eq!(e.line, Some(want), "{uci_options}: {e}");
            }
        }
        // UCI shapes: not a number, not a boolean.
        let e = uci_uplink("\toption metered 'maybe'").unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("linkpool.lte.metered"), Some(5))
        );
        assert!(e.reason.contains("expected 0 or 1, got `maybe`"), "{e}");
        let e = uci_uplink("\toption metered '1'\n\toption allowance_mb '20GB'").unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("linkpool.lte.allowance_mb"), Some(6))
        );
        assert!(e.reason.contains("a size in MB"), "{e}");
    }

    #[test]
    fn the_owners_policy_is_unlimited_unless_set() {
        let c = toml("").unwrap();
        assert_eq!(c.share_policy, SharePolicy::UNLIMITED);
        let c = uci("\toption share '1'").unwrap();
        assert_eq!(c.share_policy, SharePolicy::UNLIMITED);
        // Empty options are unset, as `uci set linkpool.main.share_days=''` leaves them.
        let c = uci("\toption share_days ''\n\toption share_daily_mb ''").unwrap();
        assert_eq!(c.share_policy, SharePolicy::UNLIMITED);
    }

    /// Every option of the owner's policy, read the same from TOML and from UCI.
    #[test]
    fn the_owners_policy_in_both_formats() {
        let expect = SharePolicy {
            up_share: Share::from_percent(30.0),
            down_share: Share::from_percent(12.5),
            daily_bytes: Some(500_000_000),
            monthly_bytes: Some(20_500_000_000),
            monthly_reset_day: ResetDay::new(15).unwrap(),
            schedule: Schedule::parse(Some("mon-fri,sun"), Some("08:00-23:00; sat 22:00-02:00"))
                .unwrap(),
        };
        let c = toml(
            "up_percent = 30\ndown_percent = 12.5\ndaily_mb = 500\nmonthly_mb = 20500\n\
             monthly_reset_day = 15\ndays = \"mon-fri,sun\"\nhours = \"08:00-23:00; sat 22:00-02:00\"\n",
        )
        .unwrap();
        assert_eq!(c.share_policy, expect);
        assert!(c.warnings.iter().all(|w| !w.contains("allowance")));
        let c = uci(
            "\toption share_up_percent '30%'\n\toption share_down_percent '12.5'\n\
             \toption share_daily_mb '500'\n\toption share_monthly_mb '20500'\n\
             \toption share_monthly_reset_day '15'\n\toption share_days 'mon-fri,sun'\n\
             \toption share_hours '08:00-23:00; sat 22:00-02:00'",
        )
        .unwrap();
        assert_eq!(c.share_policy, expect);
        // Both kinds of cap at once: the lesser holds (in the relay).
        let c = toml("up_mbit = 4\nup_percent = 50\n").unwrap();
        assert_eq!(c.sharing.up_total, 500_000);
        assert_eq!(c.share_policy.up_share, Share::from_percent(50.0));
        // A daily allowance above the monthly one is allowed, with a warning.
        let c = toml("daily_mb = 100\nmonthly_mb = 50\n").unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("`sharing.daily_mb`") && w.contains("more than the monthly")),
            "{:?}",
            c.warnings
        );
    }

    /// A bad value names the file, the key, its line and what is wrong, in either format.
    #[test]
    fn bad_policy_values_name_their_key() {
        let toml_cases = [
            ("up_percent = 0", "sharing.up_percent", "0 is out of range"),
            (
                "down_percent = 150",
                "sharing.down_percent",
                "150 is out of range",
            ),
            ("daily_mb = -5", "sharing.daily_mb", "-5 is out of range"),
            ("monthly_mb = 0", "sharing.monthly_mb", "0 is out of range"),
            (
                "monthly_reset_day = 31",
                "sharing.monthly_reset_day",
                "31 is out of range: a day of the month from 1 to 28",
            ),
            (
                "monthly_reset_day = 0",
                "sharing.monthly_reset_day",
                "0 is out of range",
            ),
            ("days = \"mo-fr\"", "sharing.days", "unknown day `mo`"),
            (
                "hours = \"8-23\"",
                "sharing.hours",
                "`8-23` is not a time range",
            ),
            ("hours = \"10:00-10:00\"", "sharing.hours", "is empty"),
            (
                "hours = \"xmas 10:00-12:00\"",
                "sharing.hours",
                "unknown day `xmas`",
            ),
        ];
        for (line, key, why) in toml_cases {
            let e = toml(&format!("{line}\n")).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/linkpool/gateway.toml"));
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(9)),
                "{line}: {e}"
            );
            assert!(e.reason.contains(why), "{line}: {e}");
        }
        let e = toml("days = [\"mon\"]\n").unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        let uci_cases = [
            (
                "share_up_percent",
                "lots",
                "linkpool.main.share_up_percent",
                "expected a share of the line in percent",
            ),
            (
                "share_up_percent",
                "0%",
                "linkpool.main.share_up_percent",
                "0 is out of range",
            ),
            (
                "share_down_percent",
                "101",
                "linkpool.main.share_down_percent",
                "101 is out of range",
            ),
            (
                "share_daily_mb",
                "1GB",
                "linkpool.main.share_daily_mb",
                "expected a size in MB",
            ),
            (
                "share_daily_mb",
                "nan",
                "linkpool.main.share_daily_mb",
                "NaN is out of range",
            ),
            (
                "share_monthly_mb",
                "-1",
                "linkpool.main.share_monthly_mb",
                "-1 is out of range",
            ),
            (
                "share_monthly_reset_day",
                "last",
                "linkpool.main.share_monthly_reset_day",
                "expected a day of the month from 1 to 28",
            ),
            (
                "share_monthly_reset_day",
                "29",
                "linkpool.main.share_monthly_reset_day",
                "29 is out of range",
            ),
            (
                "share_days",
                "weekends",
                "linkpool.main.share_days",
                "unknown day `weekends`",
            ),
            (
                "share_hours",
                "08:00-24:30",
                "linkpool.main.share_hours",
                "not a time range",
            ),
        ];
        for (name, value, key, why) in uci_cases {
            let e = uci(&format!("\toption {name} '{value}'")).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/config/linkpool"));
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(3)),
                "{name}: {e}"
            );
            assert!(e.reason.contains(why), "{name} '{value}': {e}");
        }
        let e = uci("\tlist share_days 'mon'").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("linkpool.main.share_days"), "{e}");
        assert!(e.reason.contains("is a list"), "{e}");
    }

    /// A TOML configuration with `devices` after its uplink (from line 7 on).
    fn toml_devices(devices: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "bundle = \"{}\"\n\n[[uplink]]\nname = \"wan\"\ndevice = \"eth1\"\n\n{devices}",
            bundle()
        );
        GatewayConfig::from_toml_str(Path::new("/etc/linkpool/gateway.toml"), &text)
    }

    /// A UCI configuration with `sections` after its uplink (from line 5 on).
    fn uci_devices(sections: &str) -> Result<GatewayConfig, ConfigError> {
        uci_text(&format!(
            "config gateway 'main'\n\toption bundle '{}'\nconfig uplink 'wan'\n\toption device 'eth1'\n{sections}",
            bundle()
        ))
    }

    /// Every device option, read the same from TOML and from UCI.
    #[test]
    fn devices_in_both_formats() {
        use linkpool_protocol::devices::DEFAULT_FLOOR;
        let expect = vec![
            DeviceConfig {
                name: "kids-tablet".into(),
                mac: Some(MacAddr([0x3c, 0x22, 0xfb, 0x12, 0x34, 0x56])),
                addresses: vec!["192.168.1.50".parse().unwrap(), "fd00::50".parse().unwrap()],
                policy: DevicePolicy {
                    daily_bytes: Some(2_000_000),
                    monthly_bytes: Some(30_500_000_000),
                    monthly_reset_day: ResetDay::new(15).unwrap(),
                    floor: 62_500,
                },
            },
            DeviceConfig {
                name: "console".into(),
                mac: Some(MacAddr([0x02, 0, 0, 0, 0, 0x0a])),
                addresses: vec![],
                policy: DevicePolicy {
                    daily_bytes: None,
                    monthly_bytes: Some(100_000_000),
                    monthly_reset_day: ResetDay::FIRST,
                    floor: DEFAULT_FLOOR,
                },
            },
            DeviceConfig {
                name: "tv".into(),
                mac: None,
                addresses: vec!["192.168.1.60".parse().unwrap()],
                policy: DevicePolicy::default(),
            },
        ];
        let c = toml_devices(
            "[[device]]\nname = \"kids-tablet\"\nmac = \"3C:22:FB:12:34:56\"\n\
             addresses = [\"192.168.1.50\", \"fd00::50\"]\ndaily_mb = 2\nmonthly_mb = 30500\n\
             monthly_reset_day = 15\nfloor_mbit = 0.5\n\n\
             [[device]]\nname = \"console\"\nmac = \"02-00-00-00-00-0a\"\nmonthly_mb = 100\n\n\
             [[device]]\nname = \"tv\"\naddresses = [\"::ffff:192.168.1.60\"]\n",
        )
        .unwrap();
        assert_eq!(c.devices, expect);
        let c = uci_devices(
            "config device 'kids_tablet'\n\toption name 'kids-tablet'\n\
             \toption mac '3c:22:fb:12:34:56'\n\tlist address '192.168.1.50'\n\
             \tlist address 'fd00::50'\n\toption daily_mb '2'\n\toption monthly_mb '30500'\n\
             \toption monthly_reset_day '15'\n\toption floor_mbit '0.5'\n\
             config device 'console'\n\toption mac '02:00:00:00:00:0a'\n\
             \toption monthly_mb '100'\n\
             config device\n\toption name 'tv'\n\toption address '192.168.1.60'\n\
             config device 'gone'\n\toption enabled '0'\n\toption mac 'nonsense'\n",
        )
        .unwrap();
        assert_eq!(c.devices, expect, "the section name is the default name");
        assert!(toml_devices("").unwrap().devices.is_empty());
        assert_eq!(
            MacAddr([0x3c, 0x22, 0xfb, 0x12, 0x34, 0x56]).to_string(),
            "3c:22:fb:12:34:56"
        );
    }

    /// A bad device names the file, the key, its line and what is wrong, in either format.
    #[test]
    fn bad_devices_name_their_key() {
        let one = |body: &str| format!("[[device]]\nname = \"kid\"\n{body}\n");
        let toml_cases = [
            (
                one("mac = \"3c:22:fb:12:34\""),
                "device[0].mac",
                9,
                "is not a MAC address",
            ),
            (
                one("mac = \"3c:22:fb:12:34:zz\""),
                "device[0].mac",
                9,
                "is not a MAC address",
            ),
            (
                one("mac = \"01:00:5e:00:00:01\""),
                "device[0].mac",
                9,
                "multicast",
            ),
            (
                one("mac = \"00:00:00:00:00:00\""),
                "device[0].mac",
                9,
                "all-zero",
            ),
            (
                one("addresses = [\"192.168.1.300\"]"),
                "device[0].addresses",
                9,
                "is not an IP address",
            ),
            (
                one("addresses = [\"192.168.1.0/24\"]"),
                "device[0].addresses",
                9,
                "no prefix length",
            ),
            (
                one("addresses = [\"fe80::1\"]"),
                "device[0].addresses",
                9,
                "link-local",
            ),
            (
                one("addresses = [\"224.0.0.1\"]"),
                "device[0].addresses",
                9,
                "multicast",
            ),
            (
                one("addresses = [\"192.168.1.5\", \"192.168.1.5\"]"),
                "device[0].addresses",
                9,
                "listed twice",
            ),
            (
                one("daily_mb = 5"),
                "device[0]",
                7,
                "neither a MAC address nor an address",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"\nfloor_mbit = 0"),
                "device[0].floor_mbit",
                10,
                "0 is out of range",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"\nfloor_mbit = 5000"),
                "device[0].floor_mbit",
                10,
                "5000 is out of range: the rate in Mbit/s each way",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"\ndaily_mb = -1"),
                "device[0].daily_mb",
                10,
                "-1 is out of range",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"\nmonthly_mb = 0"),
                "device[0].monthly_mb",
                10,
                "0 is out of range",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"\nmonthly_reset_day = 31"),
                "device[0].monthly_reset_day",
                10,
                "31 is out of range: a day of the month from 1 to 28",
            ),
            (
                "[[device]]\nmac = \"02:00:00:00:00:01\"\n".into(),
                "device[0].name",
                7,
                "missing",
            ),
            (
                "[[device]]\nname = \"my tablet\"\nmac = \"02:00:00:00:00:01\"\n".into(),
                "device[0].name",
                8,
                "not a usable name",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"")
                    + "[[device]]\nname = \"kid\"\nmac = \"02:00:00:00:00:02\"\n",
                "device[1].name",
                11,
                "device `kid` is given twice",
            ),
            (
                one("mac = \"02:00:00:00:00:01\"")
                    + "[[device]]\nname = \"tv\"\nmac = \"02:00:00:00:00:01\"\n",
                "device[1].mac",
                12,
                "is already device `kid`'s",
            ),
            (
                one("addresses = [\"fd00::5\"]")
                    + "[[device]]\nname = \"tv\"\naddresses = [\"fd00:0::5\"]\n",
                "device[1].addresses",
                12,
                "is already device `kid`'s",
            ),
        ];
        for (text, key, line, why) in toml_cases {
            let e = toml_devices(&text).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/linkpool/gateway.toml"));
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(line)),
                "{text}: {e}"
            );
            assert!(e.reason.contains(why), "{text}: {e}");
        }
        let e = toml_devices("[[device]]\nname = \"kid\"\nmac_address = \"x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("device[0].mac_address"), "{e}");
        assert!(e.reason.contains("unknown key"), "{e}");
        assert_eq!(e.line, Some(9), "{e}");
        let many: String = (0..=MAX_DEVICES)
            .map(|i| format!("[[device]]\nname = \"d{i}\"\nmac = \"02:00:00:00:00:{i:02x}\"\n"))
            .collect();
        let e = toml_devices(&many).unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("device"), Some(7)), "{e}");
        assert!(e.reason.contains("at most 32"), "{e}");

        let uci_cases = [
            (
                "\toption mac 'aa:bb'",
                "linkpool.kid.mac",
                6,
                "is not a MAC address",
            ),
            (
                "\tlist address 'fd00::1'\n\tlist address 'nowhere'",
                "linkpool.kid.address",
                7,
                "is not an IP address",
            ),
            (
                "\toption address '10.0.0.5 10.0.0.5'",
                "linkpool.kid.address",
                6,
                "listed twice",
            ),
            ("\toption daily_mb '5'", "linkpool.kid", 5, "neither a MAC"),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption daily_mb 'lots'",
                "linkpool.kid.daily_mb",
                7,
                "expected a size in MB",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption floor_mbit 'fast'",
                "linkpool.kid.floor_mbit",
                7,
                "expected a rate in Mbit/s",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption floor_mbit '0.01'",
                "linkpool.kid.floor_mbit",
                7,
                "0.01 is out of range",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption monthly_reset_day 'last'",
                "linkpool.kid.monthly_reset_day",
                7,
                "expected a day of the month",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption monthly_reset_day '29'",
                "linkpool.kid.monthly_reset_day",
                7,
                "29 is out of range",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption enabled 'maybe'",
                "linkpool.kid.enabled",
                7,
                "expected 0 or 1",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\toption speed '1'",
                "linkpool.kid.speed",
                7,
                "unknown option",
            ),
            (
                "\toption mac '02:00:00:00:00:01'\n\tlist floor_mbit '1'",
                "linkpool.kid.floor_mbit",
                7,
                "is a list",
            ),
            (
                "\toption name 'a b'\n\toption mac '02:00:00:00:00:01'",
                "linkpool.kid.name",
                6,
                "not a usable name",
            ),
        ];
        for (options, key, line, why) in uci_cases {
            let e = uci_devices(&format!("config device 'kid'\n{options}\n")).unwrap_err();
            assert_eq!(e.file, Path::new("/etc/config/linkpool"));
            assert_eq!(
                (e.key.as_deref(), e.line),
                (Some(key), Some(line)),
                "{options}: {e}"
            );
            assert!(e.reason.contains(why), "{options}: {e}");
        }
        let e = uci_devices(
            "config device\n\toption mac '02:00:00:00:00:01'\n\
             config device 'kid'\n\toption mac '02:00:00:00:00:02'\n\toption address '10.0.0.1'\n\
             config device\n\toption name 'kid'\n\toption mac '02:00:00:00:00:03'\n",
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("linkpool.@device[0].name"), "{e}");
        assert!(e.reason.contains("missing"), "{e}");
        let e = uci_devices(
            "config device 'kid'\n\toption mac '02:00:00:00:00:02'\n\
             config device\n\toption name 'kid'\n\toption mac '02:00:00:00:00:03'\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("linkpool.@device[1].name"), Some(8)),
            "{e}"
        );
        assert!(e.reason.contains("given twice"), "{e}");
    }

    /// The commented `[[device]]` of the example configuration and `config device` of the
    /// shipped UCI file, uncommented, are valid and say the same.
    #[test]
    fn the_example_devices_are_valid() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let example = std::fs::read_to_string(repo.join("gateway/linkpool.example.toml")).unwrap();
        let block: String = example
            .lines()
            .skip_while(|l| *l != "#[[device]]")
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# ") && *l != "#")
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        assert!(
            block.contains("[[device]]\nname = \"kids-tablet\""),
            "{block}"
        );
        let c = toml_devices(&block).unwrap();
        let shipped =
            std::fs::read_to_string(repo.join("openwrt/linkpool/files/linkpool.config")).unwrap();
        let section: String = shipped
            .lines()
            .skip_while(|l| !l.starts_with("#config device"))
            .filter(|l| !l.starts_with("#\t#"))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let u = uci_devices(&section).unwrap();
        assert_eq!(c.devices.len(), 1);
        assert_eq!(u.devices.len(), 1);
        assert_eq!(c.devices[0].mac, u.devices[0].mac);
        assert_eq!(c.devices[0].policy.daily_bytes, Some(2_000_000_000));
        assert_eq!(
            u.devices[0].policy,
            DevicePolicy {
                monthly_bytes: None,
                ..c.devices[0].policy
            }
        );
        assert_eq!(u.devices[0].name, "kids_tablet");
    }
}
