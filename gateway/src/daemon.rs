//! The gateway's event loop: a thin shell of I/O around [`linkpool_protocol::client`].
//!
//! One current-thread loop moves packets between the TUN device and the uplink sockets
//! (one per WAN, bound to its device and marked so they never re-enter the tunnel), runs
//! the protocol's timers, and reacts to signals. Buffers are allocated once.
//!
//! Packets either way also pass the owner's per-device limits
//! ([`linkpool_protocol::devices`]) at the TUN: the daemon finds the addresses of devices
//! given by MAC in the kernel's neighbour table (a thread of its own reads it every few
//! seconds, so the loop never waits for `ip`), and masquerades each device into a block of
//! ports of its own with an nftables table of its own, [`DEVICE_NFT_TABLE`], so that the
//! core can tell whose a packet is after the LAN was masqueraded to the tunnel address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::ops::RangeInclusive;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linkpool_os::control::{self, Format};
use linkpool_os::event::{readable_any, sleep_until, woke_late};
use linkpool_os::log::LogHandle;
use linkpool_os::signal::{Signal, Signals};
use linkpool_os::status;
use linkpool_protocol::client::{
    Client, ClientConfig, DEFAULT_QUEUE_SLOTS, Event, HelloDestination, Liveness, MeshReceived,
    Received, Transmit,
};
use linkpool_protocol::devices::{
    DeviceId, DeviceLimits, DevicePolicy, MAX_ADDRESSES_PER_DEVICE, NAT_OTHER_PORTS, Verdict,
};
use linkpool_protocol::forecast::MeteredLine;
use linkpool_protocol::metered::MeteredUplink;
use linkpool_protocol::path::{PathSettings, PathState};
use linkpool_protocol::session::Limits;
use linkpool_protocol::sharing::{PosixTz, WallClock};
use linkpool_protocol::wire::{MAX_DATAGRAM, RELAY_HEADER_LEN};
use linkpool_protocol::{DropReason, PathId, ip};
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use crate::config::{
    ConfigSource, GatewayConfig, Loaded, MESH_GROUP_V6, MacAddr, RELAY_PORT, UplinkConfig,
};
use crate::proxy_target::{ProxyTarget, Step};
use crate::setup::GatewayOs;
use crate::state::{MeterState, StateFile, forecast_file, write_atomic};

/// How often missing uplink sockets and an unresolved proxy name are retried.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);
/// Packets taken from the TUN or a socket in one go before looking at the others again:
/// a wake-up of the event loop costs more than a packet.
const BATCH: usize = 32;
/// Batches read from each socket at most after a late wake before the timers run.
const CATCH_UP_BATCHES: usize = 32;
/// Handshakes unanswered this long get a log line (and again this often while it lasts).
const UNANSWERED_LOG_AFTER: Duration = Duration::from_secs(15);
const UNANSWERED_LOG_EVERY: Duration = Duration::from_secs(300);
/// The nftables table (family `inet`) that masquerades each device with limits into its
/// block of ports, and everyone else below them.
pub const DEVICE_NFT_TABLE: &str = "linkpool_devices";
/// How often the neighbour table is read for the addresses of devices given by MAC.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(3);
/// The most neighbour entries taken from one reading.
const MAX_NEIGHBOURS: usize = 4096;

/// One entry of the kernel's neighbour table: an address a MAC uses on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Neighbour {
    address: IpAddr,
    mac: MacAddr,
    device: String,
}

/// A device with limits: its slot, and the addresses found for its MAC (the most recently
/// seen last).
#[derive(Debug, Clone)]
struct Found {
    name: String,
    mac: Option<MacAddr>,
    configured: Vec<IpAddr>,
    id: DeviceId,
    learned: Vec<IpAddr>,
}

/// The owner's devices with limits of their own, and how their packets are told apart.
struct LanDevices {
    table: DeviceLimits,
    /// In configuration order.
    found: Vec<Found>,
    /// Readings of the neighbour table, while a device is given by MAC.
    neighbours: Option<mpsc::Receiver<Vec<Neighbour>>>,
    /// The ruleset of [`DEVICE_NFT_TABLE`] in place.
    nat: Option<String>,
    nat_error_logged: bool,
}

/// One mesh device: once it exists and has an address, its socket on the relay port
/// (hellos, relaying, and our paths through neighbours) and that address.
///
/// One family per device: IPv4 when the device has an IPv4 address (hellos broadcast to
/// 255.255.255.255), else IPv6 link-local when it has one (hellos to the link-local group
/// [`MESH_GROUP_V6`]; neighbours' addresses carry the device's index as their scope id,
/// as the kernel gives them, so the same address on two devices stays two neighbours).
struct MeshPort {
    device: String,
    socket: Option<UdpSocket>,
    /// Our address there and its prefix length (an IPv6 one: link-local, with the
    /// device's index as scope id).
    local: Option<(SocketAddr, u8)>,
}

impl MeshPort {
    /// Whether `to` is on this device's link: in its IPv4 subnet, or link-local with its
    /// index as scope id.
    fn reaches(&self, to: SocketAddr) -> bool {
        match (self.local, to) {
            (Some((SocketAddr::V6(l), _)), SocketAddr::V6(t)) => {
                linkpool_os::socket::is_link_local_v6(t.ip()) && t.scope_id() == l.scope_id()
            }
            (Some((SocketAddr::V4(l), prefix)), _) => match to.ip().to_canonical() {
                IpAddr::V4(t) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    u32::from(*l.ip()) & mask == u32::from(t) & mask
                }
                IpAddr::V6(_) => false,
            },
            _ => false,
        }
    }

    /// Where a discovery hello goes on this device: the IPv4 broadcast, or the link-local
    /// group with the device's scope id.
    fn everyone(&self) -> Option<SocketAddr> {
        Some(match self.local?.0 {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::BROADCAST, RELAY_PORT)),
            SocketAddr::V6(l) => {
                SocketAddrV6::new(MESH_GROUP_V6, RELAY_PORT, 0, l.scope_id()).into()
            }
        })
    }
}

/// Our address on mesh device `device`: its first IPv4 address (with its prefix length),
/// or, without one, its first IPv6 link-local address (scope id: the device's index).
fn mesh_address(device: &str) -> Option<(SocketAddr, u8)> {
    use linkpool_os::socket::{ifindex, ipv4_of, ipv6_link_local_of};
    if let Some((ip, prefix)) = ipv4_of(device) {
        return Some((SocketAddr::from((ip, RELAY_PORT)), prefix));
    }
    let ip = ipv6_link_local_of(device)?;
    let scope = ifindex(device)?;
    Some((SocketAddrV6::new(ip, RELAY_PORT, 0, scope).into(), 10))
}

/// One uplink: its configuration and, once its device exists, its socket and its path.
struct Uplink {
    config: UplinkConfig,
    socket: Option<UdpSocket>,
    /// Open while the socket is and the proxy's address is known.
    path: Option<PathId>,
    /// A metered line's forecaster while the uplink has no path (the core holds it while
    /// it has one).
    meter: Option<Box<MeteredUplink>>,
    /// Whether writing its forecaster state failed (logged once).
    meter_error_logged: bool,
}

struct Gateway {
    started: Instant,
    mtu: u16,
    config: GatewayConfig,
    client: Client,
    uplinks: Vec<Uplink>,
    mesh: Vec<MeshPort>,
    mesh_cursor: usize,
    /// The proxy's addresses, and the one in use.
    target: ProxyTarget,
    /// The session as last logged.
    liveness: Liveness,
    /// When unanswered handshakes were last logged.
    unanswered_logged: Option<Instant>,
    /// The floor under handshake timestamps and the sharing meter, kept across reboots.
    state: StateFile,
    state_error_logged: bool,
    /// The router's time zone, for the owner's lending schedule and allowances.
    tz: PosixTz,
    /// The wall clock the client's timestamps count from, at `started`.
    timestamp_base_us: u64,
    /// Packets from the TUN whose source is not our tunnel address: the proxy would
    /// refuse them anyway.
    foreign_source: u64,
    /// Multicast the router's kernel sends on the TUN by itself (MLD reports for the
    /// groups a forwarding IPv6 interface joins). Never for the Internet; not a drop.
    local_multicast: u64,
    /// The uplink socket looked at first, moved on each turn so none starves the others.
    receive_cursor: usize,
    /// The owner's devices with limits of their own.
    devices: LanDevices,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    config: GatewayConfig,
    os: GatewayOs,
    source: ConfigSource,
    log: LogHandle,
) -> io::Result<()> {
    let mut signals = Signals::new()?;
    let (_control, mut requests) = control::serve(&config.control_socket)?;
    let now = Instant::now();
    let (state, warning) = StateFile::load(&config.state_file);
    if let Some(w) = warning {
        warn!("{w}");
    }
    let tz = local_zone();
    // Timestamps start above anything a previous run used, whatever the clock says.
    let timestamp_base_us = wall_clock_us().max(state.floor_us());
    let mut gw = Gateway {
        started: now,
        mtu: os.mtu,
        client: new_client(&config, os.mtu, now, timestamp_base_us),
        uplinks: Vec::new(),
        mesh: Vec::new(),
        mesh_cursor: 0,
        target: ProxyTarget::default(),
        liveness: Liveness::Connecting,
        unanswered_logged: None,
        state,
        state_error_logged: false,
        tz,
        timestamp_base_us,
        foreign_source: 0,
        local_multicast: 0,
        receive_cursor: 0,
        devices: LanDevices {
            table: DeviceLimits::new(),
            found: Vec::new(),
            neighbours: None,
            nat: None,
            nat_error_logged: false,
        },
        config,
    };
    gw.set_devices();
    gw.tell_clock(now);
    gw.restore_meter(now);
    gw.restore_devices();
    gw.keep_state(now, true);
    gw.set_uplinks();
    gw.set_mesh(now);
    gw.maintain(now).await;

    let mut tx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut rx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        let wake = gw.client.poll_timeout();
        let first = gw.receive_cursor;
        tokio::select! {
            read = os.tun.recv(&mut rx) => {
                match read {
                    Ok(n) => gw.handle_packet(&rx[..n]),
                    Err(e) => warn!("reading the tunnel device: {e}"),
                }
                // Take what else is queued without going back to sleep.
                for _ in 0..BATCH {
                    match os.tun.try_recv(&mut rx) {
                        Ok(n) => gw.handle_packet(&rx[..n]),
                        Err(_) => break,
                    }
                }
            }
            i = readable_any(gw.uplinks.len(), first, |i| gw.uplinks[i].socket.as_ref()) => {
                gw.receive_cursor = (i + 1) % gw.uplinks.len().max(1);
                gw.receive(i, &mut rx, &mut tx, &os).await;
            }
            i = readable_any(gw.mesh.len(), gw.mesh_cursor, |i| gw.mesh[i].socket.as_ref()) => {
                gw.mesh_cursor = (i + 1) % gw.mesh.len().max(1);
                gw.receive_mesh(i, &mut rx, &mut tx, &os).await;
            }
            _ = sleep_until(wake) => {
                if woke_late(wake) {
                    gw.catch_up(&mut rx, &mut tx, &os).await;
                }
                gw.client.handle_timeout(Instant::now());
            }
            Some((format, reply)) = requests.recv() => {
                let _ = reply.send(gw.status(format));
            }
            _ = maintenance.tick() => {
                gw.maintain(Instant::now()).await;
            }
            signal = signals.recv() => match signal {
                Signal::Terminate => {
                    info!("stopping");
                    gw.save_at_stop(Instant::now());
                    gw.remove_device_nat();
                    return Ok(());
                }
                Signal::Reload => gw.reload(&source, &log),
            },
        }
        gw.flush(&mut tx);
        gw.note_events();
        gw.note_session(Instant::now());
    }
}

/// What the core is told about an uplink's path.
fn path_settings(uplink: &UplinkConfig) -> PathSettings {
    PathSettings {
        probe_interval: uplink.probe_interval,
    }
}

fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The router's time zone: the `TZ` variable, else `/etc/TZ` (where OpenWrt keeps the
/// zone set in `system.@system[0].timezone`, as a POSIX TZ string such as
/// `CET-1CEST,M3.5.0,M10.5.0/3`), else UTC. Daylight saving time is followed.
fn local_zone() -> PosixTz {
    let from_env = std::env::var("TZ").ok().filter(|v| !v.trim().is_empty());
    let (text, from) = match from_env {
        Some(v) => (v, "the TZ variable"),
        None => match std::fs::read_to_string("/etc/TZ") {
            Ok(v) if !v.trim().is_empty() => (v, "/etc/TZ"),
            _ => {
                debug!("no TZ variable nor /etc/TZ: sharing days and hours are in UTC");
                return PosixTz::UTC;
            }
        },
    };
    match PosixTz::parse(&text) {
        Some(tz) => {
            debug!(zone = text.trim(), from, "time zone");
            tz
        }
        None => {
            warn!(
                "{from} holds `{}`, not a POSIX TZ string (such as CET-1CEST,M3.5.0,M10.5.0/3): \
                 sharing days and hours are reckoned in UTC",
                text.trim()
            );
            PosixTz::UTC
        }
    }
}

/// Starts a thread that reads the kernel's neighbour table every [`NEIGHBOUR_REFRESH`]
/// (`ip -j neigh show`, else `/proc/net/arp` for IPv4 only) and hands each reading over;
/// it ends when the receiver is dropped.
fn watch_neighbours() -> io::Result<mpsc::Receiver<Vec<Neighbour>>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("neighbours".into())
        .spawn(move || {
            let mut fell_back = false;
            loop {
                let reading = match linkpool_os::cmd::run("ip", &["-j", "neigh", "show"], None) {
                    Ok(json) => parse_ip_neigh(&json),
                    Err(e) => {
                        if !fell_back {
                            fell_back = true;
                            warn!(
                                "cannot read the neighbour table with `ip -j neigh` ({e}); \
                                 reading /proc/net/arp instead: IPv6 addresses of devices given \
                                 by MAC are not found"
                            );
                        }
                        std::fs::read_to_string("/proc/net/arp")
                            .map(|t| parse_proc_arp(&t))
                            .unwrap_or_default()
                    }
                };
                if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(reading) {
                    return;
                }
                std::thread::sleep(NEIGHBOUR_REFRESH);
            }
        })?;
    Ok(rx)
}

/// Whether a neighbour's address can be a device's on the way to the Internet (not
/// link-local, multicast or unspecified).
fn usable_neighbour(a: IpAddr) -> bool {
    !(a.is_unspecified()
        || a.is_multicast()
        || match a {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => linkpool_os::socket::is_link_local_v6(&v6),
        })
}

/// `ip -j neigh show`: entries with a MAC, not failed or incomplete.
fn parse_ip_neigh(json: &str) -> Vec<Neighbour> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| {
            !e["state"].as_array().is_some_and(|states| {
                states
                    .iter()
                    .any(|s| matches!(s.as_str(), Some("FAILED" | "INCOMPLETE")))
            })
        })
        .filter_map(|e| {
            let address: IpAddr = e["dst"].as_str()?.parse().ok()?;
            Some(Neighbour {
                address: address.to_canonical(),
                mac: e["lladdr"].as_str()?.parse().ok()?,
                device: e["dev"].as_str()?.to_string(),
            })
        })
        .filter(|n| usable_neighbour(n.address))
        .take(MAX_NEIGHBOURS)
        .collect()
}

/// `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`, complete
/// entries (flags with 0x2).
fn parse_proc_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [address, _, flags, mac, _, device] = f.as_slice() else {
                return None;
            };
            let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
            (flags & 0x2 != 0).then_some(())?;
            Some(Neighbour {
                address: address.parse().ok()?,
                mac: mac.parse().ok()?,
                device: device.to_string(),
            })
        })
        .filter(|n| usable_neighbour(n.address))
        .take(MAX_NEIGHBOURS)
        .collect()
}

/// Takes what a reading of the neighbour table says of a device given by MAC: the
/// addresses its MAC has on a LAN device (the most recently seen last), less those now
/// another MAC's; an address it no longer shows stays its (a device asleep keeps its
/// DHCP lease), within [`MAX_ADDRESSES_PER_DEVICE`], the oldest seen going first.
fn learn(f: &mut Found, reading: &[Neighbour], lan: &[String]) {
    let Some(mac) = f.mac else {
        return;
    };
    for n in reading.iter().filter(|n| lan.contains(&n.device)) {
        let at = f.learned.iter().position(|a| *a == n.address);
        match at {
            Some(i) if n.mac != mac => {
                f.learned.remove(i);
            }
            Some(i) => {
                let a = f.learned.remove(i);
                f.learned.push(a);
            }
            None if n.mac == mac => f.learned.push(n.address),
            None => {}
        }
    }
    let over = f.learned.len().saturating_sub(MAX_ADDRESSES_PER_DEVICE);
    f.learned.drain(..over);
}

/// Removes nftables table `inet NAME` if it is there (`table` before `delete` makes the
/// delete succeed whether or not it existed).
fn remove_table_script(name: &str) -> String {
    format!("table inet {name}\ndelete table inet {name}\n")
}

/// The ruleset of [`DEVICE_NFT_TABLE`], replacing the one before in one transaction: ahead
/// of the gateway's own masquerading (priority srcnat − 1, so it is the one that maps a
/// connection), each device's addresses masquerade out of the TUN into its block of ports
/// (TCP, UDP, and ICMP echo identifiers), and everyone else into [`NAT_OTHER_PORTS`].
fn device_nat_ruleset(tun: &str, blocks: &[(RangeInclusive<u16>, Vec<IpAddr>)]) -> String {
    use std::fmt::Write as _;
    let mut rules = String::new();
    let list = |family: fn(&IpAddr) -> bool, addresses: &[IpAddr]| -> Option<String> {
        let set: Vec<String> = addresses
            .iter()
            .filter(|a| family(a))
            .map(ToString::to_string)
            .collect();
        (!set.is_empty()).then(|| set.join(", "))
    };
    for (ports, addresses) in blocks {
        let to = format!("{}-{}", ports.start(), ports.end());
        if let Some(v4) = list(IpAddr::is_ipv4, addresses) {
            let _ = writeln!(
                rules,
                "\t\toifname \"{tun}\" meta l4proto {{ tcp, udp, icmp }} ip saddr {{ {v4} }} masquerade to :{to}"
            );
        }
        if let Some(v6) = list(IpAddr::is_ipv6, addresses) {
            let _ = writeln!(
                rules,
                "\t\toifname \"{tun}\" meta l4proto {{ tcp, udp, ipv6-icmp }} ip6 saddr {{ {v6} }} masquerade to :{to}"
            );
        }
    }
    format!(
        "{remove}table inet {DEVICE_NFT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat - 1; policy accept;\n\
         {rules}\
         \t\toifname \"{tun}\" meta l4proto {{ tcp, udp, icmp, ipv6-icmp }} masquerade to :{}-{}\n\
         \t}}\n\
         }}\n",
        NAT_OTHER_PORTS.start(),
        NAT_OTHER_PORTS.end(),
        remove = remove_table_script(DEVICE_NFT_TABLE),
    )
}

/// A client whose handshake timestamps count up from `timestamp_base_us` at `now`,
/// spreading flows as configured.
fn new_client(config: &GatewayConfig, mtu: u16, now: Instant, timestamp_base_us: u64) -> Client {
    let b = &config.bundle;
    let mut client = Client::new(
        ClientConfig {
            static_key: b.private_key.clone(),
            proxy_key: b.proxy_public_key,
            psk: b.psk.clone(),
            suite: b.cipher,
            limits: Limits::default(),
            mtu,
            queue_slots: DEFAULT_QUEUE_SLOTS,
        },
        now,
        timestamp_base_us,
        random_seed(),
    );
    client.set_spreading(config.spreading);
    client.set_bid(now, config.max_price_per_gb);
    client
}

/// A seed for session indices; they only need to differ between runs.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        b = (std::process::id() as u64).to_le_bytes();
    }
    u64::from_le_bytes(b)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
}

/// Dual-stack sockets take IPv4 peers as IPv4-mapped IPv6 addresses.
fn peer_for(socket: &UdpSocket, to: SocketAddr) -> SocketAddr {
    match (socket.local_addr(), to) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => to,
    }
}

fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl Gateway {
    /// Makes the uplink list match the configuration. Unchanged uplinks keep their
    /// sockets and paths; sockets of the others are (re)opened by [`Gateway::maintain`],
    /// and a path exists only while its socket does.
    fn set_uplinks(&mut self) {
        let mut old: Vec<Option<Uplink>> = std::mem::take(&mut self.uplinks)
            .into_iter()
            .map(Some)
            .collect();
        for config in &self.config.uplinks {
            let kept = old.iter_mut().find_map(|u| {
                u.take_if(|u| u.config.name == config.name && u.config.device == config.device)
            });
            let uplink = match kept {
                Some(mut u) => {
                    // A new probing interval applies to the path as it is.
                    if let Some(path) = u.path.filter(|_| u.config != *config) {
                        self.client.set_path_settings(path, path_settings(config));
                    }
                    u.config = config.clone();
                    u
                }
                None => Uplink {
                    config: config.clone(),
                    socket: None,
                    path: None,
                    meter: None,
                    meter_error_logged: false,
                },
            };
            self.uplinks.push(uplink);
        }
        let clock = self.wall_clock();
        for u in old.into_iter().flatten() {
            // A metered line going away keeps what it learned and counted, on file.
            let meter = match u.path {
                Some(path) => self.client.unmeter_path(Instant::now(), path).map(Box::new),
                None => u.meter,
            };
            if let Some(m) = meter {
                let _ = self.write_meter(&u.config.name, &m);
            }
            if let Some(path) = u.path {
                self.client.close_path(path);
            }
        }
        for i in 0..self.uplinks.len() {
            self.set_meter(i, clock);
        }
    }

    /// The wall clock now, in the router's time zone.
    fn wall_clock(&self) -> WallClock {
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.tz.clock(unix_s)
    }

    /// Gives uplink `i` the metered line its configuration says: a new one is read back
    /// from its file (a damaged file is logged and the line starts afresh), one kept takes
    /// the new allowance, billing day and threshold.
    fn set_meter(&mut self, i: usize, clock: WallClock) {
        let u = &mut self.uplinks[i];
        let held = match u.path {
            Some(path) => self.client.unmeter_path(Instant::now(), path).map(Box::new),
            None => u.meter.take(),
        };
        let Some(line) = u.config.metered else {
            // No longer metered: what it learned stays on file, should it be again.
            if let Some(m) = held {
                let name = u.config.name.clone();
                let _ = self.write_meter(&name, &m);
            }
            return;
        };
        let meter = match held {
            Some(mut m) => {
                m.set_line(line);
                m
            }
            None => {
                let file = forecast_file(&self.config.state_file, &u.config.name);
                let read = match std::fs::read(&file) {
                    Ok(bytes) => {
                        MeteredUplink::restore(&bytes, line, clock).map_err(|e| e.to_string())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Err(String::new()),
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(m) => {
                        debug!(uplink = %u.config.name, file = %file.display(), "metered line's forecast restored");
                        Box::new(m)
                    }
                    Err(why) => {
                        if !why.is_empty() {
                            warn!(
                                uplink = %u.config.name,
                                "{}: {why}; the metered line starts learning afresh (nothing is lent \
                                 from it until a week of use is learned)",
                                file.display()
                            );
                        }
                        Box::new(MeteredUplink::new(line, clock))
                    }
                }
            }
        };
        match u.path {
            Some(path) => self.client.meter_path(Instant::now(), path, *meter),
            None => u.meter = Some(meter),
        }
    }

    /// Forecasts each metered line again, and writes the forecasters whose state is due
    /// (or all of them, at a clean stop).
    fn keep_meters(&mut self, force: bool) {
        let clock = self.wall_clock();
        self.client.handle_meter_tick(Instant::now(), clock);
        for u in &mut self.uplinks {
            let Some(m) = u
                .path
                .and_then(|p| self.client.metered(p))
                .or(u.meter.as_deref())
            else {
                continue;
            };
            if !force && !m.persist_due(clock) {
                continue;
            }
            match Self::write_meter_to(&self.config.state_file, &u.config.name, m) {
                Ok(()) => {
                    u.meter_error_logged = false;
                    match (u.path, u.meter.as_deref_mut()) {
                        (_, Some(m)) => m.persisted(clock),
                        (Some(p), None) => self.client.persisted_meter(p, clock),
                        _ => {}
                    }
                }
                Err(e) if !u.meter_error_logged => {
                    u.meter_error_logged = true;
                    warn!(
                        uplink = %u.config.name,
                        "{e}; after a restart the metered line's counts and learning go back \
                         to the last write"
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// Writes uplink `name`'s metered line to its file (a line no longer in use: once,
    /// logged if it fails).
    fn write_meter(&self, name: &str, m: &MeteredUplink) -> Result<(), String> {
        Self::write_meter_to(&self.config.state_file, name, m).inspect_err(
            |e| warn!(uplink = %name, "{e}: what its metered line learned and counted is lost"),
        )
    }

    /// Writes a metered line's state beside `state_file`, atomically.
    fn write_meter_to(
        state_file: &std::path::Path,
        name: &str,
        m: &MeteredUplink,
    ) -> Result<(), String> {
        let file = forecast_file(state_file, name);
        write_atomic(&file, &m.state())
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        debug!(uplink = %name, file = %file.display(), "metered line's forecast written");
        Ok(())
    }

    /// Takes the mesh devices and the owner's sharing policy from the configuration. With
    /// mesh devices, the core takes part in the mesh once the proxy grants a credential.
    fn set_mesh(&mut self, now: Instant) {
        self.client.relay_mut().set_policy(self.config.sharing);
        self.client
            .relay_mut()
            .lending_mut()
            .set_policy(self.config.share_policy);
        let devices = &self.config.tunnel.mesh_devices;
        self.mesh.retain(|m| devices.contains(&m.device));
        for d in devices {
            if !self.mesh.iter().any(|m| m.device == *d) {
                self.mesh.push(MeshPort {
                    device: d.clone(),
                    socket: None,
                    local: None,
                });
            }
        }
        if !self.mesh.is_empty() {
            self.client
                .enable_mesh(now, RELAY_PORT, PathSettings::default());
        }
    }

    /// Opens missing mesh sockets; follows each mesh device's address, and its family (a
    /// device that gains or loses its IPv4 address gets a socket of the other family).
    fn maintain_mesh(&mut self) {
        let fwmark = self.config.tunnel.fwmark;
        for m in &mut self.mesh {
            m.local = mesh_address(&m.device);
            if let Some(socket) = &m.socket {
                let same_family = match (m.local, socket.local_addr()) {
                    (Some((want, _)), Ok(have)) => want.is_ipv4() == have.is_ipv4(),
                    _ => true,
                };
                if same_family && linkpool_os::socket::bound_to(socket, &m.device) {
                    continue;
                }
                m.socket = None;
            }
            let opened = match m.local {
                None => continue,
                Some((SocketAddr::V4(_), _)) => {
                    linkpool_os::socket::mesh_socket(&m.device, RELAY_PORT, fwmark)
                }
                Some((SocketAddr::V6(_), _)) => linkpool_os::socket::mesh_socket_v6(
                    &m.device,
                    RELAY_PORT,
                    MESH_GROUP_V6,
                    fwmark,
                ),
            };
            match opened {
                Ok(s) => {
                    let family = if m.local.is_some_and(|(l, _)| l.is_ipv4()) {
                        "IPv4 broadcast"
                    } else {
                        "IPv6 link-local"
                    };
                    info!(device = %m.device, port = RELAY_PORT, family, "mesh ready");
                    m.socket = Some(s);
                }
                Err(e) => debug!(device = %m.device, "mesh not ready: {e}"),
            }
        }
    }

    /// The mesh socket that reaches `to`, and our address there.
    fn mesh_port_for(&self, to: SocketAddr) -> Option<(&UdpSocket, SocketAddr)> {
        self.mesh
            .iter()
            .find(|m| m.reaches(to))
            .and_then(|m| Some((m.socket.as_ref()?, m.local?.0)))
    }

    /// Reads a batch of datagrams from mesh socket `i`: hellos, neighbours' datagrams to
    /// relay, and replies on our paths through neighbours. Returns whether more may wait.
    async fn receive_mesh(
        &mut self,
        i: usize,
        rx: &mut [u8],
        tx: &mut [u8],
        os: &GatewayOs,
    ) -> bool {
        for _ in 0..BATCH {
            let (Some(socket), Some((local, _))) = (&self.mesh[i].socket, self.mesh[i].local)
            else {
                return false;
            };
            let (n, from) = match socket.try_recv_from(&mut rx[RELAY_HEADER_LEN..]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!(device = %self.mesh[i].device, "mesh receive: {e}");
                    return false;
                }
            };
            // Our own broadcasts come back (IPv4; IPv6 multicast loop is off).
            if from.ip() == local.ip() && from.port() == local.port() {
                continue;
            }
            match self
                .client
                .handle_mesh_datagram(Instant::now(), from, local, rx, n)
            {
                Ok(MeshReceived::Relay(t)) => self.send_on_path(&t, &rx[..t.len]),
                Ok(MeshReceived::Taken) => {}
                Err(reason) => debug!(%from, "mesh datagram dropped: {reason}"),
            }
            self.deliver(tx, os).await;
        }
        true
    }

    /// Sends a datagram of the core's on the socket of its path: an uplink's, or the mesh
    /// socket towards a neighbour's relay.
    fn send_on_path(&self, t: &Transmit, datagram: &[u8]) {
        let socket = match self.uplinks.iter().find(|u| u.path == Some(t.path)) {
            Some(u) => u.socket.as_ref(),
            None => self.mesh_port_for(t.remote).map(|(s, _)| s),
        };
        let Some(socket) = socket else {
            return;
        };
        // A full socket buffer or an unreachable network loses this datagram only:
        // the path's acks show it, and the core moves traffic off a path that stops.
        if let Err(e) = socket.try_send_to(datagram, peer_for(socket, t.remote)) {
            if e.kind() != io::ErrorKind::WouldBlock {
                debug!(path = %t.path, "send: {e}");
            }
        }
    }

    /// Opens missing uplink sockets, reopens those whose device was replaced, and picks
    /// the proxy address to talk to ([`ProxyTarget`]), resolving its names when needed.
    async fn maintain(&mut self, now: Instant) {
        self.tell_clock(now);
        self.learn_neighbours();
        self.maintain_mesh();
        for u in &mut self.uplinks {
            if let Some(socket) = &u.socket {
                if linkpool_os::socket::bound_to(socket, &u.config.device) {
                    continue;
                }
                info!(uplink = %u.config.name, device = %u.config.device, "uplink device went away; reopening when it is back");
                u.socket = None;
                if let Some(path) = u.path.take() {
                    if let Some(m) = self.client.unmeter_path(now, path) {
                        u.meter = Some(Box::new(m));
                    }
                    self.client.close_path(path);
                }
            }
            match linkpool_os::socket::uplink_socket(
                Some(&u.config.device),
                self.config.tunnel.fwmark,
            ) {
                Ok(s) => {
                    info!(uplink = %u.config.name, device = %u.config.device, "uplink ready");
                    u.socket = Some(s);
                }
                Err(e) => debug!(uplink = %u.config.name, "uplink not ready: {e}"),
            }
        }
        let sent = self.client.stats().handshakes_sent;
        let before = self.target.current();
        let step = if self.target.current().is_none() {
            Step::Resolve
        } else {
            self.target.on_tick(self.client.is_connected(), sent)
        };
        match step {
            Step::Stay | Step::Moved => {}
            Step::Resolve => {
                let addrs = self.resolve_endpoints().await;
                if addrs.is_empty() {
                    self.target.restart(sent);
                } else {
                    self.target.set_candidates(addrs, sent);
                }
            }
        }
        let moved = self.target.current().filter(|a| before != Some(*a));
        if let Some(a) = moved {
            match before {
                Some(old) => {
                    info!(from = %old, to = %a, "no answer from the proxy; trying its next address")
                }
                None => info!(address = %a, "proxy address"),
            }
            self.client.restart_handshake(now);
        }
        if let Some(proxy) = self.target.current() {
            // Every uplink with a socket has a path, all to the proxy address in use.
            for u in &mut self.uplinks {
                match (&u.socket, u.path) {
                    (Some(_), None) => {
                        let path = self.client.open_path(now, proxy, path_settings(&u.config));
                        debug!(uplink = %u.config.name, %path, "path opened");
                        u.path = Some(path);
                        if let Some(m) = u.meter.take() {
                            self.client.meter_path(now, path, *m);
                        }
                    }
                    (Some(_), Some(path)) if moved.is_some() => {
                        self.client.set_path_remote(path, proxy)
                    }
                    _ => {}
                }
            }
        }
        self.keep_state(now, false);
        self.keep_meters(false);
    }

    /// Gives the relay the wall clock (for the owner's schedule and allowances, in local
    /// time) and a measurement of this router's line (for the shares of it): the
    /// bottleneck estimate of its best active uplink, and what its uplinks received.
    fn tell_clock(&mut self, now: Instant) {
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let clock: WallClock = self.tz.clock(unix_s);
        let mut up_capacity = 0;
        let mut received = 0u64;
        for p in self
            .uplinks
            .iter()
            .filter_map(|u| u.path.and_then(|id| self.client.path(id)))
        {
            received = received.saturating_add(p.counters().rx_bytes);
            if p.state() == PathState::Active {
                up_capacity = up_capacity.max(p.line_bandwidth());
            }
        }
        let relay = self.client.relay_mut();
        relay.lending_mut().set_clock(now, clock);
        relay.observe_line(now, up_capacity, received);
        self.devices.table.set_clock(now, clock);
    }

    /// Takes up the sharing meter the state file held. One that cannot be read counts
    /// today's and this month's allowances as used up: it may have been lent already.
    fn restore_meter(&mut self, now: Instant) {
        let lending = self.client.relay_mut().lending_mut();
        match self.state.meter() {
            MeterState::None => {}
            MeterState::Record(r) => {
                lending.restore(r);
                debug!(meter = %r, "sharing meter restored");
            }
            MeterState::Garbled(why) => {
                lending.assume_used_up(now);
                warn!(
                    "{}: the sharing meter cannot be read ({why}); lending nothing more today \
                     (and, with a monthly allowance, this month), as what was lent is not \
                     known. Delete its `sharing_meter` line to start counting from zero",
                    self.state.path().display()
                );
            }
        }
    }

    /// Takes up the devices' counts the state file held; says which lines it could not.
    fn restore_devices(&mut self) {
        let taken = self.devices.table.restore(self.state.devices());
        if taken > 0 {
            debug!(devices = taken, "device counts restored");
        }
        for why in self.state.garbled_devices() {
            warn!(
                "{}: a device's counts cannot be read ({why}); that device counts from zero \
                 today and this month",
                self.state.path().display()
            );
        }
    }

    /// Writes the state file when the handshake timestamps' reservation, the sharing
    /// meter or the devices' counts need it (or at once), with all three.
    fn keep_state(&mut self, now: Instant, force: bool) {
        let used = self.timestamp_now(now);
        let meter_due = self.client.relay().lending().needs_save();
        let devices_due = self.devices.table.needs_save(now);
        if !force && !meter_due && !devices_due && !self.state.needs_reservation(used) {
            return;
        }
        if let Some(record) = self.client.relay_mut().lending_mut().checkpoint(now) {
            self.state.set_meter(record);
        }
        self.state.set_devices(self.devices.table.checkpoint(now));
        self.write_state(used);
    }

    /// At a clean stop: the meter and the devices' counts exactly as they are.
    fn save_at_stop(&mut self, now: Instant) {
        let used = self.timestamp_now(now);
        if let Some(record) = self.client.relay_mut().lending_mut().checkpoint_exact(now) {
            self.state.set_meter(record);
        }
        self.state.set_devices(self.devices.table.checkpoint(now));
        self.write_state(used);
        self.keep_meters(true);
    }

    /// Takes the devices with limits from the configuration: a device kept (same name)
    /// keeps its counts, its slot and, with the same MAC, the addresses found for it.
    /// Starts reading the neighbour table when a device is given by MAC.
    fn set_devices(&mut self) {
        let list: Vec<(String, DevicePolicy)> = self
            .config
            .devices
            .iter()
            .map(|d| (d.name.clone(), d.policy))
            .collect();
        self.devices.table.configure(&list);
        let old = std::mem::take(&mut self.devices.found);
        let table = &self.devices.table;
        self.devices.found = self
            .config
            .devices
            .iter()
            .filter_map(|d| {
                Some(Found {
                    name: d.name.clone(),
                    mac: d.mac,
                    configured: d.addresses.clone(),
                    id: table.find(&d.name)?,
                    learned: old
                        .iter()
                        .find(|o| o.name == d.name && o.mac == d.mac)
                        .map(|o| o.learned.clone())
                        .unwrap_or_default(),
                })
            })
            .collect();
        self.devices
            .table
            .set_nat_addresses(&self.config.bundle.addresses);
        let by_mac = self.devices.found.iter().any(|f| f.mac.is_some());
        if by_mac && self.devices.neighbours.is_none() {
            match watch_neighbours() {
                Ok(rx) => self.devices.neighbours = Some(rx),
                Err(e) => warn!(
                    "cannot start reading the neighbour table: {e}; devices given by MAC get \
                     only their configured addresses"
                ),
            }
        }
        self.update_device_addresses();
    }

    /// Takes in the latest reading of the neighbour table, if a new one came.
    fn learn_neighbours(&mut self) {
        let Some(rx) = &self.devices.neighbours else {
            return;
        };
        let mut latest = None;
        while let Ok(reading) = rx.try_recv() {
            latest = Some(reading);
        }
        let Some(reading) = latest else {
            return;
        };
        let lan = &self.config.tunnel.lan_devices;
        for f in &mut self.devices.found {
            learn(f, &reading, lan);
        }
        self.update_device_addresses();
    }

    /// Tells the device table each device's addresses, and puts the masquerading that
    /// follows in place when it changed.
    fn update_device_addresses(&mut self) {
        // All cleared first: an address that moved goes to its new device at once.
        for f in &self.devices.found {
            self.devices.table.set_addresses(f.id, &[]);
        }
        for f in &self.devices.found {
            let mut all = f.configured.clone();
            for a in f.learned.iter().rev() {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
            let taken = self.devices.table.set_addresses(f.id, &all);
            if taken < all.len() {
                debug!(device = %f.name, taken, of = all.len(), "device addresses left out");
            }
        }
        let blocks: Vec<(RangeInclusive<u16>, Vec<IpAddr>)> = self
            .devices
            .found
            .iter()
            .map(|f| {
                (
                    DeviceLimits::nat_ports(f.id),
                    self.devices.table.addresses(f.id).collect(),
                )
            })
            .collect();
        let ruleset = device_nat_ruleset(&self.config.tunnel.device, &blocks);
        if self.devices.nat.as_deref() == Some(ruleset.as_str()) {
            return;
        }
        match linkpool_os::cmd::nft_script(&ruleset) {
            Ok(()) => {
                debug!(table = DEVICE_NFT_TABLE, "device masquerading set up");
                self.devices.nat = Some(ruleset);
                self.devices.nat_error_logged = false;
            }
            Err(e) if !self.devices.nat_error_logged => {
                self.devices.nat_error_logged = true;
                warn!(
                    "cannot set up nftables table inet {DEVICE_NFT_TABLE}: {e}; devices with \
                     limits are told apart only by their own addresses, which masquerading hides"
                );
            }
            Err(_) => {}
        }
    }

    /// Removes the devices' masquerading (at stop).
    fn remove_device_nat(&mut self) {
        if self.devices.nat.take().is_some() {
            if let Err(e) = linkpool_os::cmd::nft_script(&remove_table_script(DEVICE_NFT_TABLE)) {
                warn!("removing nftables table inet {DEVICE_NFT_TABLE}: {e}");
            }
        }
    }

    /// The timestamp the client would put in a handshake now.
    fn timestamp_now(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_micros() as u64;
        (self.timestamp_base_us + elapsed).max(self.client.last_timestamp_us())
    }

    /// Writes the state file, reserving handshake timestamps ahead of `used`.
    fn write_state(&mut self, used: u64) {
        match self.state.reserve(used) {
            Ok(()) => debug!(file = %self.state.path().display(), "state written"),
            Err(e) if !self.state_error_logged => {
                self.state_error_logged = true;
                warn!(
                    "cannot write {}: {e}; after a reboot with the clock behind, the proxy \
                     may refuse this router's handshakes until the clock catches up, and \
                     what was lent to neighbours since the last write is forgotten",
                    self.state.path().display()
                );
            }
            Err(_) => {}
        }
    }

    /// Logs changes of the session's state, and handshakes that go unanswered.
    fn note_session(&mut self, now: Instant) {
        let liveness = self.client.liveness();
        if liveness != self.liveness {
            let was = std::mem::replace(&mut self.liveness, liveness);
            match liveness {
                Liveness::Up if was == Liveness::Suspect => debug!("the proxy answers again"),
                Liveness::Up if was == Liveness::Lost => info!("the proxy answers again"),
                Liveness::Up => info!("session with the proxy established"),
                Liveness::Suspect => debug!("a probe went unanswered; handshaking again"),
                Liveness::Lost => warn!(
                    "session with the proxy lost: nothing heard for {} s; reconnecting",
                    Limits::default().dead_after.as_secs()
                ),
                Liveness::Connecting if was != Liveness::Lost => {
                    warn!("session with the proxy lost: its keys expired; reconnecting")
                }
                Liveness::Connecting => {}
            }
        }
        match self.client.unanswered_handshakes(now) {
            Some((n, waited)) if waited >= UNANSWERED_LOG_AFTER => {
                if self
                    .unanswered_logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= UNANSWERED_LOG_EVERY)
                {
                    self.unanswered_logged = Some(now);
                    warn!(
                        "{n} handshakes to the proxy at {} unanswered in {} s: check that the \
                         proxy runs and its UDP port is reachable from this router, and that \
                         the bundle is current (the proxy never answers a bundle it does not \
                         know: a removed member's, or one altered in copying)",
                        self.target
                            .current()
                            .map_or("(unresolved)".to_string(), |a| a.to_string()),
                        waited.as_secs()
                    );
                }
            }
            Some(_) => {}
            None => self.unanswered_logged = None,
        }
    }

    /// Every address of every proxy endpoint in the bundle, in bundle order.
    async fn resolve_endpoints(&self) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for endpoint in &self.config.bundle.proxy_endpoints {
            match tokio::net::lookup_host(endpoint.as_str()).await {
                Ok(found) => {
                    let before = addrs.len();
                    addrs.extend(found);
                    debug!(%endpoint, addresses = ?&addrs[before..], "proxy endpoint resolved");
                }
                Err(e) => warn!(%endpoint, "cannot resolve the proxy: {e}"),
            }
        }
        addrs
    }

    /// A packet from the LAN: the core queues it for the best path.
    fn handle_packet(&mut self, packet: &[u8]) {
        if ip::destination(packet).is_some_and(|a| a.is_multicast()) {
            self.local_multicast += 1;
            return;
        }
        let source = ip::source(packet);
        if !source.is_some_and(|a| self.config.bundle.addresses.contains(&a)) {
            self.foreign_source += 1;
            debug!(
                ?source,
                "packet from the TUN not from our tunnel address: dropped"
            );
            return;
        }
        let now = Instant::now();
        if self.devices.table.handle_up(now, packet) == Verdict::Drop {
            return;
        }
        match self.client.handle_packet(now, packet) {
            Ok(()) | Err(DropReason::NoSession) => {}
            Err(reason) => debug!("packet from the LAN dropped: {reason}"),
        }
    }

    fn handle_datagram(&mut self, i: usize, from: SocketAddr, datagram: &mut [u8]) {
        // Only the proxy talks to our uplink sockets; anything else is not even parsed.
        if !self.target.current().is_some_and(|p| same_peer(p, from)) {
            return;
        }
        let Some(path) = self.uplinks[i].path else {
            return;
        };
        match self.client.handle_datagram(Instant::now(), path, datagram) {
            Ok(Received::Relay { to, start, len }) => {
                // For a neighbour: on over the mesh, untouched.
                if let Some((socket, _)) = self.mesh_port_for(to) {
                    let _ = socket.try_send_to(&datagram[start..start + len], to);
                }
            }
            Ok(_) => {}
            Err(reason) => {
                debug!(uplink = %self.uplinks[i].config.name, "datagram dropped: {reason}")
            }
        }
    }

    /// Reads a batch of datagrams from uplink `i`'s socket. Returns whether more may wait.
    async fn receive(&mut self, i: usize, rx: &mut [u8], tx: &mut [u8], os: &GatewayOs) -> bool {
        for _ in 0..BATCH {
            let Some(socket) = &self.uplinks[i].socket else {
                return false;
            };
            match socket.try_recv_from(rx) {
                Ok((n, from)) => self.handle_datagram(i, from, &mut rx[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!(uplink = %self.uplinks[i].config.name, "receive: {e}");
                    return false;
                }
            }
            self.deliver(tx, os).await;
        }
        true
    }

    /// Reads everything that came while the daemon was not running (a late wake: the
    /// router busy elsewhere), up to [`CATCH_UP_BATCHES`] per socket, so the timers that
    /// follow judge the paths by what did arrive. Acks left unread in the sockets made a
    /// live path look silent.
    async fn catch_up(&mut self, rx: &mut [u8], tx: &mut [u8], os: &GatewayOs) {
        for _ in 0..CATCH_UP_BATCHES {
            let mut more = false;
            for i in 0..self.uplinks.len() {
                more |= self.receive(i, rx, tx, os).await;
            }
            for i in 0..self.mesh.len() {
                more |= self.receive_mesh(i, rx, tx, os).await;
            }
            if !more {
                break;
            }
        }
    }

    /// Writes what the core has for the LAN to the TUN.
    async fn deliver(&mut self, buf: &mut [u8], os: &GatewayOs) {
        let now = Instant::now();
        while let Some(n) = self.client.poll_packet(buf) {
            // A device over its threshold and above its floor: policed here.
            if self.devices.table.handle_down(now, &buf[..n]) == Verdict::Drop {
                continue;
            }
            if let Err(e) = os.tun.send(&buf[..n]).await {
                debug!("writing to the tunnel device: {e}");
            }
        }
    }

    /// Sends everything the core wants sent, each on the uplink of its path.
    fn flush(&mut self, buf: &mut [u8]) {
        let now = Instant::now();
        while let Some(t) = self.client.poll_transmit(now, buf) {
            self.send_on_path(&t, &buf[..t.len]);
        }
        while let Some(h) = self.client.poll_mesh_transmit(now, buf) {
            match h.destination {
                HelloDestination::Mesh => {
                    for m in &self.mesh {
                        if let (Some(socket), Some(everyone)) = (&m.socket, m.everyone()) {
                            let _ = socket.try_send_to(&buf[..h.len], everyone);
                        }
                    }
                }
                HelloDestination::Neighbour { remote, .. } => {
                    if let Some((socket, _)) = self.mesh_port_for(remote) {
                        let _ = socket.try_send_to(&buf[..h.len], remote);
                    }
                }
            }
        }
    }

    /// Logs what the core reports: handshakes and paths changing state.
    fn note_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Handshake if self.liveness == Liveness::Up => debug!("session rekeyed"),
                Event::Handshake => {
                    // New keys after a start, an outage or a proxy restart.
                    self.liveness = Liveness::Up;
                    info!("session with the proxy established");
                }
                Event::Path(e) => {
                    let uplink = self
                        .uplinks
                        .iter()
                        .find(|u| u.path == Some(e.path))
                        .map_or("?", |u| u.config.name.as_str());
                    match e.state {
                        PathState::Active => info!(%uplink, "uplink carries traffic"),
                        PathState::Suspect => {
                            info!(%uplink, "uplink stopped answering; its traffic moves to the others")
                        }
                        PathState::Dead => warn!(%uplink, "uplink down (no answer from the proxy)"),
                        PathState::Probing => debug!(%uplink, "uplink answers again; confirming"),
                    }
                }
                Event::MeshGrant => debug!("mesh credential renewed by the proxy"),
                Event::Statement => debug!("statement of this member's account from the proxy"),
                Event::Rating => debug!("rating of this router's relay from the proxy"),
            }
        }
    }

    /// A snapshot for `linkpool status`.
    fn status(&self, format: Format) -> String {
        let now = Instant::now();
        let stats = self.client.stats();
        let paths = self.client.paths();
        let total_rate = status::total_send_rate(paths, now);
        let total_tx = status::total_tx_bytes(paths);
        let uplinks: Vec<_> = self
            .uplinks
            .iter()
            .map(|u| {
                let p = u.path.and_then(|id| self.client.path(id));
                let c = p.map(|p| *p.counters()).unwrap_or_default();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                let mut entry = serde_json::json!({
                    "name": u.config.name,
                    "device": u.config.device,
                    "ready": u.socket.is_some(),
                    "path": u.path.map(|p| p.0),
                    "state": p.map(|p| p.state().name()),
                    "state_for_s": p.map(|p| now.saturating_duration_since(p.state_since()).as_secs()),
                    "srtt_ms": p.and_then(|p| p.srtt()).map(ms),
                    "min_rtt_ms": p.and_then(|p| p.min_rtt()).map(ms),
                    "loss": p.map(|p| p.loss()),
                    "delivery_rate_bps": p.map(|p| p.delivery_rate() * 8),
                    "queue_delay_ms": p.map(|p| ms(p.queue_delay())),
                    "in_flight": p.map(|p| p.in_flight()),
                    "tx_packets": c.tx_packets,
                    "tx_bytes": c.tx_bytes,
                    "rx_packets": c.rx_packets,
                    "rx_bytes": c.rx_bytes,
                    "lost": c.lost,
                    "resent_elsewhere": c.resent_elsewhere,
                    "suspected": c.suspected,
                    "standby": p.map(|p| p.standby()),
                    "metered": metered_json(
                        u.path.and_then(|p| self.client.metered(p)).or(u.meter.as_deref()),
                        u.config.metered,
                    ),
                });
                if let Some(entry) = entry.as_object_mut() {
                    entry.extend(status::path_fields(p, now, total_rate, total_tx));
                }
                entry
            })
            .collect();
        let uplink_name = |id: PathId| {
            self.uplinks
                .iter()
                .find(|u| u.path == Some(id))
                .map(|u| u.config.name.clone())
        };
        let mut drops: serde_json::Map<String, serde_json::Value> = stats
            .drops
            .iter()
            .map(|(r, n)| (r.name().to_string(), n.into()))
            .collect();
        if self.foreign_source > 0 {
            drops.insert("foreign_source".into(), self.foreign_source.into());
        }
        let relayed: Vec<_> = paths
            .iter()
            .filter_map(|p| Some((p, p.endpoint().relay?)))
            .map(|(p, hop)| {
                let c = p.counters();
                let mut entry = serde_json::json!({
                    "via": hop.relay,
                    "relay": p.endpoint().remote.to_string(),
                    "path": p.id().0,
                    "state": p.state().name(),
                    "srtt_ms": p.srtt().map(|d| d.as_secs_f64() * 1e3),
                    "loss": p.loss(),
                    "tx_packets": c.tx_packets,
                    "tx_bytes": c.tx_bytes,
                    "rx_packets": c.rx_packets,
                    "rx_bytes": c.rx_bytes,
                    "rate_cap_bps": p.rate_cap().map(|b| b * 8),
                    "standby": p.standby(),
                                        "scavenger_share": p.scavenger_share(),
                    "scavenger_backoffs": c.scavenger_backoffs,
                    "resent_elsewhere": c.resent_elsewhere,
                });
                if let Some(entry) = entry.as_object_mut() {
                    entry.extend(status::path_fields(Some(p), now, total_rate, total_tx));
                }
                entry
            })
            .collect();
        let proxy_now = self.client.proxy_clock_s(now);
        let neighbours: Vec<_> = self
            .client
            .neighbours()
            .into_iter()
            .flat_map(|n| n.neighbours())
            .map(|n| {
                let offer = n.offer();
                serde_json::json!({
                    "member": n.member(),
                    "address": n.address().to_string(),
                    "usable": n.usable(),
                    "sharing": offer.sharing,
                    "offer_up_kbit": offer.up_kbit,
                    "offer_down_kbit": offer.down_kbit,
                    "hellos_accepted": n.hellos_accepted(),
                    "hellos_refused": n.hellos_refused(),
                    "rating": proxy_now.and_then(|t| n.rating(t)).map(crate::ledger::rating_json),
                })
            })
            .collect();
        let relay = self.client.relay();
        let relayed_for: Vec<_> = relay
            .neighbours()
            .map(|(address, c)| {
                serde_json::json!({
                    "address": address.to_string(),
                    "up_packets": c.up_packets,
                    "up_bytes": c.up_bytes,
                    "down_packets": c.down_packets,
                    "down_bytes": c.down_bytes,
                    "over_cap": c.over_cap,
                    "owner_first": c.owner_first,
                    "off_schedule": c.off_schedule,
                    "over_daily": c.over_daily,
                    "over_monthly": c.over_monthly,
                    "over_surplus": c.over_surplus,
                })
            })
            .collect();
        let lending = lending_json(relay, now);
        let mesh = serde_json::json!({
            "devices": self.mesh.iter().map(|m| serde_json::json!({
                "device": m.device,
                "ready": m.socket.is_some(),
                "address": m.local.map(|(a, _)| a.to_string()),
            })).collect::<Vec<_>>(),
            "granted": self.client.mesh_grant().is_some(),
            "credential_expires_in_s": self.client.mesh_grant().zip(self.client.proxy_clock_s(now))
                .map(|(g, clock)| g.credential.expires_at().saturating_sub(clock)),
            "neighbours": neighbours,
            "paths": relayed,
            "sharing": relay.policy().sharing,
            "lending": lending,
            "relayed_for": relayed_for,
        });
        let status = serde_json::json!({
            "member": self.config.bundle.member,
            "mesh": mesh,
            "ledger": crate::ledger::status_json(&self.client),
            "connected": self.client.is_connected(),
            "proxy": self.target.current().map(|p| p.to_string()),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "tunnel": { "device": self.config.tunnel.device, "mtu": self.mtu },
            "session": liveness_name(self.client.liveness()),
            "handshakes_sent": stats.handshakes_sent,
            "handshakes_completed": stats.handshakes_completed,
            "handshakes_unanswered": self.client.unanswered_handshakes(now).map_or(0, |(n, _)| n),
            "unanswered_for_s": self.client.unanswered_handshakes(now).map(|(_, d)| d.as_secs()),
            "sessions_lost": stats.sessions_lost,
            "queued": self.client.queued(),
            "uplinks": uplinks,
            "flows": status::flows_json(
                Some(self.client.flows()),
                self.client.spreading(),
                now,
                uplink_name
            ),
            "spread": status::spread_json(self.client.spread_counters()),
            "reorder": status::reorder_json(self.client.reorder()),
            "drops": drops,
            "local_multicast_ignored": self.local_multicast,
            "devices": self.devices_json(now),
        });
        match format {
            Format::Json => format!("{status}\n"),
            Format::Text => status_text(&status),
        }
    }

    /// The devices with limits: their addresses, counts against their thresholds, whether
    /// they are policed now and what was dropped.
    fn devices_json(&self, now: Instant) -> serde_json::Value {
        let t = &self.devices.table;
        let list: Vec<_> = self
            .devices
            .found
            .iter()
            .filter_map(|f| {
                let r = t.report(f.id, now)?;
                let p = t.policy(f.id)?;
                let ports = DeviceLimits::nat_ports(f.id);
                Some(serde_json::json!({
                    "name": f.name,
                    "mac": f.mac.map(|m| m.to_string()),
                    "addresses": t.addresses(f.id).map(|a| a.to_string()).collect::<Vec<_>>(),
                    "nat_ports": format!("{}-{}", ports.start(), ports.end()),
                    "today": r.today.map(|d| d.to_string()),
                    "today_bytes": r.today_bytes,
                    "daily_threshold_bytes": p.daily_bytes,
                    "month_start": r.month_start.map(|d| d.to_string()),
                    "month_bytes": r.month_bytes,
                    "monthly_threshold_bytes": p.monthly_bytes,
                    "monthly_reset_day": p.monthly_reset_day.day(),
                    "floor_bps": p.floor.saturating_mul(8),
                    "limited": r.over.is_some(),
                    "why_limited": r.over.map(|o| o.name()),
                    "up_packets": r.up.packets,
                    "up_bytes": r.up.bytes,
                    "down_packets": r.down.packets,
                    "down_bytes": r.down.bytes,
                    "dropped_packets": r.up.dropped_packets + r.down.dropped_packets,
                    "dropped_bytes": r.up.dropped_bytes + r.down.dropped_bytes,
                }))
            })
            .collect();
        serde_json::Value::Array(list)
    }

    fn reload(&mut self, source: &ConfigSource, log: &LogHandle) {
        let new = match source.load() {
            Ok(Loaded::Enabled(c)) => *c,
            Ok(Loaded::Disabled { reason }) => {
                warn!(
                    "configuration now disabled ({reason}); keeping the running one until stopped"
                );
                return;
            }
            Err(e) => {
                error!("configuration not reloaded: {e}");
                return;
            }
        };
        log.set_level(new.log_level);
        for w in &new.warnings {
            warn!("{w}");
        }
        if new.tunnel != self.config.tunnel {
            warn!("tunnel settings changed: they take effect on restart");
        }
        let now = Instant::now();
        let bundle_changed = new.bundle != self.config.bundle;
        let uplinks_changed = new.uplinks != self.config.uplinks;
        let tunnel = self.config.tunnel.clone();
        self.config = GatewayConfig { tunnel, ..new };
        if bundle_changed {
            info!(member = %self.config.bundle.member, "new member bundle: new session");
            // The new client's timestamps go on from the old one's.
            self.timestamp_base_us = self.timestamp_now(now);
            self.started = now;
            // What was lent today and this month stays counted.
            let lending = self.client.relay().lending().clone();
            self.client = new_client(&self.config, self.mtu, now, self.timestamp_base_us);
            *self.client.relay_mut().lending_mut() = lending;
            self.target.clear();
            for u in &mut self.uplinks {
                u.socket = None;
                u.path = None;
            }
            self.liveness = Liveness::Connecting;
        }
        if uplinks_changed {
            self.set_uplinks();
        }
        // The owner may have changed the router's time zone.
        self.tz = local_zone();
        self.tell_clock(now);
        // Sharing and mesh devices take effect at once (a new client above lost its mesh).
        self.set_mesh(now);
        // So do devices with limits: those kept keep their counts.
        self.set_devices();
        // And the owner's bid for auctioned lines.
        self.client.set_bid(now, self.config.max_price_per_gb);
        // A new client above took them from the configuration already.
        if *self.client.spreading() != self.config.spreading {
            let m = self.config.spreading;
            info!(
                interactive = %m.interactive,
                bulk = %m.bulk,
                default = %m.default,
                "spreading modes changed"
            );
            self.client.set_spreading(m);
        }
        info!("configuration re-read");
    }
}

/// The devices with limits in text, one line each: its addresses, today's and this
/// month's bytes against the thresholds, whether it is held to its floor now and what was
/// dropped over it.
fn devices_text(out: &mut String, devices: &serde_json::Value) {
    use std::fmt::Write as _;
    let mb = |v: &serde_json::Value| format!("{:.1} MB", v.as_u64().unwrap_or(0) as f64 / 1e6);
    for d in devices.as_array().into_iter().flatten() {
        let of = |count: &str, threshold: &str| match d[threshold].as_u64() {
            Some(_) => format!("{} of {}", mb(&d[count]), mb(&d[threshold])),
            None => mb(&d[count]),
        };
        let mut who: Vec<String> = d["mac"].as_str().map(str::to_string).into_iter().collect();
        let addresses: Vec<&str> = d["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        who.push(if addresses.is_empty() {
            "no address seen yet".to_string()
        } else {
            addresses.join(", ")
        });
        let floor = d["floor_bps"].as_f64().unwrap_or(0.0) / 1e6;
        let now = match d["why_limited"].as_str() {
            Some("over_daily") => {
                format!("limited to {floor:.1} Mbit/s (today's threshold reached)")
            }
            Some("over_monthly") => {
                format!("limited to {floor:.1} Mbit/s (this month's threshold reached)")
            }
            Some(other) => format!("limited to {floor:.1} Mbit/s ({other})"),
            None => format!("not limited (floor {floor:.1} Mbit/s)"),
        };
        let _ = writeln!(
            out,
            "device {} ({})  {} today, {} since {}  {now}  dropped {} pkts / {} B",
            d["name"].as_str().unwrap_or("?"),
            who.join(": "),
            of("today_bytes", "daily_threshold_bytes"),
            of("month_bytes", "monthly_threshold_bytes"),
            d["month_start"].as_str().unwrap_or("?"),
            d["dropped_packets"],
            d["dropped_bytes"],
        );
    }
}

/// The owner's lending now: whether and why not, the meter against the allowances, the
/// measured line and the caps that follow, and the refusals of each kind in all.
fn lending_json(relay: &linkpool_protocol::relay::Relay, now: Instant) -> serde_json::Value {
    let lending = relay.lending();
    let policy = lending.policy();
    let meter = lending.status(now);
    let known = |b: u64| (b != u64::MAX).then_some(b);
    let bps = |b: u64| (b < u64::MAX / 8).then(|| b * 8);
    let (cap_up, cap_down) = relay.caps();
    let t = relay.totals();
    let why_not = if !relay.policy().sharing {
        Some("not_sharing")
    } else {
        meter.why_not.map(|r| r.name())
    };
    serde_json::json!({
        "now": why_not.is_none(),
        "why_not": why_not,
        "today": meter.today.map(|d| d.to_string()),
        "lent_today_bytes": known(meter.lent_today),
        "daily_allowance_bytes": policy.daily_bytes,
        "month_start": meter.month_start.map(|d| d.to_string()),
        "lent_month_bytes": known(meter.lent_month),
        "monthly_allowance_bytes": policy.monthly_bytes,
        "monthly_reset_day": policy.monthly_reset_day.day(),
        "scheduled": !policy.schedule.is_always(),
        "in_schedule": meter.in_schedule,
        "up_share_pct": policy.up_share.map(|s| s.percent()),
        "down_share_pct": policy.down_share.map(|s| s.percent()),
        "line_up_bps": lending.line().up.saturating_mul(8),
        "line_down_bps": lending.line().down.saturating_mul(8),
        "cap_up_bps": bps(cap_up),
        "cap_down_bps": bps(cap_down),
        "refused": {
            "over_cap": t.over_cap,
            "owner_first": t.owner_first,
            "off_schedule": t.off_schedule,
            "over_daily": t.over_daily,
            "over_monthly": t.over_monthly,
            "over_surplus": t.over_surplus,
        },
    })
}

/// A metered line for status: `null` for one not metered, `{"allowance": ...}` alone
/// before its first forecast.
fn metered_json(m: Option<&MeteredUplink>, line: Option<MeteredLine>) -> serde_json::Value {
    let Some(line) = line else {
        return serde_json::Value::Null;
    };
    let Some(s) = m.and_then(MeteredUplink::status) else {
        return serde_json::json!({
            "allowance": line.allowance(),
            "billing_day": line.billing_day(),
            "threshold": line.threshold(),
        });
    };
    serde_json::json!({
        "allowance": s.allowance,
        "billing_day": s.billing_day,
        "threshold": s.threshold,
        "period_start": s.period_start,
        "period_end": s.period_end,
        "used": s.used,
        "remaining": s.remaining,
        "forecast_use": s.expected_more,
        "forecast_surplus": s.surplus,
        "forecast_error": s.error,
        "confident": s.confident,
        "lent": s.lent,
        "offered_bps": s.offer.saturating_mul(8),
        "moved_off": s.moved_off,
    })
}

/// A metered line in text, one line under its uplink.
fn metered_text(out: &mut String, m: &serde_json::Value) {
    use std::fmt::Write as _;
    if m.is_null() {
        return;
    }
    let gb = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / 1e9;
    if m["used"].is_null() {
        let _ = writeln!(
            out,
            "  metered: {:.2} GB a period from day {}, no forecast yet",
            gb(&m["allowance"]),
            m["billing_day"]
        );
        return;
    }
    let error = m["forecast_error"]
        .as_f64()
        .map_or("not measured yet".to_string(), |e| {
            format!("{:.0}%", e * 100.0)
        });
    let learning = if m["confident"] == true {
        ""
    } else {
        " (still learning: nothing lent)"
    };
    let moved = if m["moved_off"] == true {
        "  own traffic moved off (below its threshold)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  metered: used {:.2} of {:.2} GB, {:.2} GB left; forecast use {:.2} GB to period end, surplus {:.2} GB{learning}, error {error}; lent {:.2} GB, offering {:.2} Mbit/s{moved}",
        gb(&m["used"]),
        gb(&m["allowance"]),
        gb(&m["remaining"]),
        gb(&m["forecast_use"]),
        gb(&m["forecast_surplus"]),
        gb(&m["lent"]),
        m["offered_bps"].as_f64().unwrap_or(0.0) / 1e6,
    );
}

fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Connecting => "connecting",
        Liveness::Up => "up",
        Liveness::Suspect => "suspect",
        Liveness::Lost => "lost",
    }
}

/// The status for a person, from the same snapshot as the JSON.
/// The mesh part of the text status: our ports, the credential, each neighbour and what
/// it offers, our paths through neighbours, and what we relay for whom. Nothing without a
/// mesh device.
fn mesh_text(out: &mut String, m: &serde_json::Value) {
    use std::fmt::Write as _;
    let list = |key: &str| m[key].as_array().map_or(&[][..], Vec::as_slice);
    if list("devices").is_empty() {
        return;
    }
    let ports: Vec<String> = list("devices")
        .iter()
        .map(|d| {
            let at = d["address"].as_str().unwrap_or("no address");
            let ready = if d["ready"] == true {
                ""
            } else {
                ", not ready"
            };
            format!("{} {at}{ready}", d["device"].as_str().unwrap_or("?"))
        })
        .collect();
    let credential = match m["credential_expires_in_s"].as_u64() {
        Some(left) if m["granted"] == true => format!("credential for {left} s"),
        _ => "no credential yet (the proxy grants it through the tunnel)".to_string(),
    };
    let lending = if m["sharing"] == true {
        "lending our line"
    } else {
        "not lending"
    };
    let _ = writeln!(out, "mesh {}  {credential}  {lending}", ports.join(", "));
    lending_text(out, &m["lending"], m["sharing"] == true);
    for n in list("neighbours") {
        let kbit = |k: &str| match n[k].as_u64() {
            Some(v) if v < u64::from(u32::MAX) => format!("{:.1}", v as f64 / 1e3),
            _ => "any".to_string(),
        };
        let _ = writeln!(
            out,
            "  neighbour {} at {} {}  {}  hellos {} ok / {} refused",
            n["member"],
            n["address"].as_str().unwrap_or("?"),
            if n["usable"] == true {
                "usable"
            } else {
                "not usable"
            },
            if n["sharing"] == true {
                format!(
                    "offers {} / {} Mbit/s up / down",
                    kbit("offer_up_kbit"),
                    kbit("offer_down_kbit")
                )
            } else {
                "not lending".to_string()
            },
            n["hellos_accepted"],
            n["hellos_refused"],
        );
    }
    for p in list("paths") {
        let rtt = p["srtt_ms"]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let mut line = format!(
            "  path via {} ({}) {}  rtt {rtt}  loss {:.1}%  sent {} B  received {} B",
            p["via"],
            p["relay"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["loss"].as_f64().unwrap_or(0.0) * 100.0,
            p["tx_bytes"],
            p["rx_bytes"],
        );
        if let Some(cap) = p["rate_cap_bps"].as_f64() {
            let _ = write!(line, "  capped {:.1} Mbit/s", cap / 1e6);
        }
        if p["standby"] == true {
            line += "  standby (probes only)";
        }
        if let Some(share) = p["scavenger_share"].as_f64().filter(|&s| s < 1.0) {
            let _ = write!(line, "  giving way ({:.0}%)", share * 100.0);
        }
        // Each a copy the far end may refuse as a duplicate.
        if let Some(n) = p["resent_elsewhere"].as_u64().filter(|&n| n > 0) {
            let _ = write!(line, "  resent elsewhere {n}");
        }
        let _ = writeln!(out, "{line}");
        if let Some(more) = status::path_text(p) {
            let _ = writeln!(out, "    {more}");
        }
    }
    for r in list("relayed_for") {
        let _ = writeln!(
            out,
            "  relaying for {}: up {} B / {} pkts, down {} B / {} pkts, refused {} over cap, {} owner first, {} off schedule, {} over daily, {} over monthly, {} over surplus",
            r["address"].as_str().unwrap_or("?"),
            r["up_bytes"],
            r["up_packets"],
            r["down_bytes"],
            r["down_packets"],
            r["over_cap"],
            r["owner_first"],
            r["off_schedule"].as_u64().unwrap_or(0),
            r["over_daily"].as_u64().unwrap_or(0),
            r["over_monthly"].as_u64().unwrap_or(0),
            r["over_surplus"].as_u64().unwrap_or(0),
        );
    }
}

/// The owner's lending in text, one line while sharing: whether it lends now (and why
/// not), what it lent today and this month against the allowances, and with a share of
/// the line, the line as measured and the caps that follow.
fn lending_text(out: &mut String, l: &serde_json::Value, sharing: bool) {
    use std::fmt::Write as _;
    if !sharing || !l.is_object() {
        return;
    }
    let mb = |v: &serde_json::Value| match v.as_u64() {
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
        None => "unknown".to_string(),
    };
    let of = |lent: &str, allowance: &str| match l[allowance].as_u64() {
        Some(_) => format!("{} of {}", mb(&l[lent]), mb(&l[allowance])),
        None => mb(&l[lent]),
    };
    let now = match l["why_not"].as_str() {
        None => "lending now".to_string(),
        Some("off_schedule") => "not lending now: outside the owner's hours".to_string(),
        Some("over_daily") => "not lending now: today's allowance is used up".to_string(),
        Some("over_monthly") => "not lending now: this month's allowance is used up".to_string(),
        Some(other) => format!("not lending now: {other}"),
    };
    let mut line = format!(
        "  {now}  lent {} today, {} since {}",
        of("lent_today_bytes", "daily_allowance_bytes"),
        of("lent_month_bytes", "monthly_allowance_bytes"),
        l["month_start"].as_str().unwrap_or("?"),
    );
    let mbit = |k: &str| l[k].as_f64().map(|v| format!("{:.1}", v / 1e6));
    if l["up_share_pct"].is_number() || l["down_share_pct"].is_number() {
        let _ = write!(
            line,
            "  line measured {} / {} Mbit/s up / down, capped {} / {}",
            mbit("line_up_bps").unwrap_or_default(),
            mbit("line_down_bps").unwrap_or_default(),
            mbit("cap_up_bps").unwrap_or_else(|| "any".into()),
            mbit("cap_down_bps").unwrap_or_else(|| "any".into()),
        );
    }
    let _ = writeln!(out, "{line}");
}

fn status_text(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let state = match s["session"].as_str() {
        Some("up") => "connected",
        Some("suspect") => "connected (proxy slow to answer)",
        Some("lost") => "proxy unreachable",
        _ => "connecting",
    };
    let _ = writeln!(
        out,
        "member {}  {state} to {}  up {} s  handshakes {} of {} sent answered",
        s["member"].as_str().unwrap_or("?"),
        s["proxy"].as_str().unwrap_or("(unresolved)"),
        s["uptime_s"],
        s["handshakes_completed"],
        s["handshakes_sent"],
    );
    if let Some(waited) = s["unanswered_for_s"].as_u64() {
        let _ = writeln!(
            out,
            "{} handshakes unanswered for {waited} s",
            s["handshakes_unanswered"]
        );
    }
    let _ = writeln!(
        out,
        "tunnel {} mtu {}",
        s["tunnel"]["device"].as_str().unwrap_or("?"),
        s["tunnel"]["mtu"]
    );
    for u in s["uplinks"].as_array().into_iter().flatten() {
        let rtt = u["srtt_ms"]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let state = if u["ready"] == true {
            u["state"].as_str().unwrap_or("no path")
        } else {
            "not ready"
        };
        let _ = writeln!(
            out,
            "uplink {} ({}) {state}  rtt {rtt}  loss {:.1}%  rate {:.1} Mbit/s  sent {} B / {} pkts  received {} B / {} pkts",
            u["name"].as_str().unwrap_or("?"),
            u["device"].as_str().unwrap_or("?"),
            u["loss"].as_f64().unwrap_or(0.0) * 100.0,
            u["delivery_rate_bps"].as_f64().unwrap_or(0.0) / 1e6,
            u["tx_bytes"],
            u["tx_packets"],
            u["rx_bytes"],
            u["rx_packets"],
        );
        if let Some(line) = status::path_text(u) {
            let _ = writeln!(out, "  {line}");
        }
        metered_text(&mut out, &u["metered"]);
    }
    mesh_text(&mut out, &s["mesh"]);
    devices_text(&mut out, &s["devices"]);
    status::spreading_text(&mut out, "", &s["flows"], &s["spread"], Some(&s["reorder"]));
    if let Some(drops) = s["drops"].as_object().filter(|d| !d.is_empty()) {
        let list: Vec<String> = drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "dropped {}", list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(local: &str, prefix: u8) -> MeshPort {
        MeshPort {
            device: "mesh0".into(),
            socket: None,
            local: Some((local.parse().unwrap(), prefix)),
        }
    }

    /// An IPv4 mesh device reaches its subnet (plain or as a dual-stack socket shows it),
    /// an IPv6 link-local one reaches link-local addresses of its own scope only; hellos
    /// for everyone go to the broadcast or to the group on that scope.
    #[test]
    fn a_mesh_device_reaches_its_own_link_in_its_family() {
        let v4 = port("10.254.0.1:7118", 24);
        assert!(v4.reaches("10.254.0.2:7118".parse().unwrap()));
        assert!(v4.reaches("[::ffff:10.254.0.2]:7118".parse().unwrap()));
        assert!(!v4.reaches("10.254.1.2:7118".parse().unwrap()));
        assert!(!v4.reaches("[fe80::2%3]:7118".parse().unwrap()));
        assert_eq!(v4.everyone(), Some("255.255.255.255:7118".parse().unwrap()));

        let v6 = port("[fe80::1%3]:7118", 10);
        assert!(v6.reaches("[fe80::2%3]:7118".parse().unwrap()));
        assert!(v6.reaches("[febf::2%3]:7118".parse().unwrap()));
        assert!(
            !v6.reaches("[fe80::2%4]:7118".parse().unwrap()),
            "another device's link"
        );
        assert!(!v6.reaches("[fe80::2]:7118".parse().unwrap()), "no scope");
        assert!(
            !v6.reaches("[fd00:fe::2]:7118".parse().unwrap()),
            "not link-local"
        );
        assert!(!v6.reaches("10.254.0.2:7118".parse().unwrap()));
        assert_eq!(v6.everyone(), Some("[ff02::7118%3]:7118".parse().unwrap()));

        let none = MeshPort {
            device: "mesh0".into(),
            socket: None,
            local: None,
        };
        assert!(!none.reaches("10.254.0.2:7118".parse().unwrap()));
        assert_eq!(none.everyone(), None);
    }

    /// What a relay's lending shows in status: the meter against the allowances, why it
    /// does not lend, the refusals by reason.
    #[test]
    fn lending_status_json() {
        use linkpool_protocol::relay::{Relay, RelayPolicy};
        use linkpool_protocol::sharing::SharePolicy;
        let t0 = Instant::now();
        let mut relay = Relay::new(RelayPolicy {
            sharing: true,
            up_total: u64::MAX / 8,
            down_total: u64::MAX / 8,
            up_per_neighbour: u64::MAX / 8,
            down_per_neighbour: u64::MAX / 8,
        });
        relay.lending_mut().set_policy(SharePolicy {
            daily_bytes: Some(1_000_000),
            ..SharePolicy::UNLIMITED
        });
        // 2024-05-10 12:00 UTC.
        relay.lending_mut().set_clock(
            t0,
            WallClock {
                unix_s: 1_715_342_400,
                utc_offset_s: 0,
            },
        );
        let j = lending_json(&relay, t0);
        assert_eq!(j["now"], true);
        assert_eq!(j["today"], "2024-05-10");
        assert_eq!(j["month_start"], "2024-05-01");
        assert_eq!(j["lent_today_bytes"], 0);
        assert_eq!(j["daily_allowance_bytes"], 1_000_000);
        assert_eq!(j["cap_up_bps"], serde_json::Value::Null, "uncapped");
        assert_eq!(j["refused"]["over_daily"], 0);
        relay.lending_mut().assume_used_up(t0);
        let j = lending_json(&relay, t0);
        assert_eq!(
            (j["now"].clone(), j["why_not"].clone()),
            (false.into(), "over_daily".into())
        );
        assert_eq!(j["lent_today_bytes"], serde_json::Value::Null, "unknown");
        relay.set_policy(RelayPolicy::OFF);
        assert_eq!(lending_json(&relay, t0)["why_not"], "not_sharing");
    }

    /// The text status of a snapshot with traffic on two uplinks.
    #[test]
    fn status_text_shows_paths_mesh_flows_spreading_and_reordering() {
        let mut s = serde_json::json!({
            "member": "alice", "connected": true, "proxy": "203.0.113.10:7117",
            "uptime_s": 60, "tunnel": {"device": "linkpool0", "mtu": 1400},
            "session": "up", "handshakes_sent": 1, "handshakes_completed": 1,
            "handshakes_unanswered": 0, "unanswered_for_s": null,
            "uplinks": [
                {"name": "wan", "device": "eth1", "ready": true, "state": "active",
                 "srtt_ms": 20.0, "loss": 0.0, "delivery_rate_bps": 20_000_000,
                 "tx_bytes": 5000, "tx_packets": 5, "rx_bytes": 6000, "rx_packets": 6,
                 "send_rate_bps": 15_000_000, "send_share": 0.75, "tx_share": 0.7,
                 "cc_state": "cruise", "bandwidth_bps": 20_000_000,
                 "pacing_rate_bps": 20_000_000, "cwnd_bytes": 60000, "bytes_in_flight": 30000},
                {"name": "lte", "device": "wwan0", "ready": false, "state": null,
                 "srtt_ms": null, "loss": null, "delivery_rate_bps": null,
                 "tx_bytes": 0, "tx_packets": 0, "rx_bytes": 0, "rx_packets": 0,
                 "send_rate_bps": null, "send_share": null, "tx_share": null,
                 "cc_state": null, "bandwidth_bps": null, "pacing_rate_bps": null,
                 "cwnd_bytes": null, "bytes_in_flight": null},
            ],
            "flows": {
                "live": 2, "capacity": 1024,
                "classes": {
                    "interactive": {"flows": 1, "mode": "redundant", "configured": "auto"},
                    "bulk": {"flows": 1, "mode": "session", "configured": "session"},
                    "default": {"flows": 0, "mode": "session", "configured": "auto"},
                },
                "busiest": [
                    {"flow": "tcp 10.77.0.2:40000 > 192.0.2.9:443", "class": "bulk",
                     "mode": "session", "rate_bps": 15_000_000, "path": 7, "uplink": "wan"},
                    {"flow": "udp 10.77.0.2:5000 > 192.0.2.9:3478", "class": "interactive",
                     "mode": "redundant", "rate_bps": 64_000, "path": null, "uplink": null},
                ],
            },
            "spread": {"packets": 1000, "duplicated_packets": 20, "duplicated_bytes": 4000,
                       "redundancy_overhead_pct": 0.4, "repaired": 1},
            "reorder": {"timeout_ms": 40.0, "skew_ms": 5.5, "held": 0,
                        "gaps_timed_out": 2, "late": 1},
            "drops": {},
        });
        s["uplinks"][1]["metered"] = serde_json::json!({"allowance": 20_000_000_000u64, "billing_day": 5,
                    "threshold": 2_000_000_000u64, "period_start": 1_714_867_200,
                    "period_end": 1_717_545_600, "used": 3_360_000_000u64,
                    "remaining": 16_640_000_000u64, "forecast_use": 2_880_000_000u64,
                    "forecast_surplus": 11_200_000_000u64, "forecast_error": 0.04,
                    "confident": true, "lent": 850_000_000, "offered_bps": 1_600_000,
                    "moved_off": true});
        // Beside, for the macro's recursion limit.
        s["mesh"] = serde_json::json!({
            "devices": [{"device": "mesh0", "ready": true, "address": "10.254.0.1:7118"}],
            "granted": true, "credential_expires_in_s": 600, "sharing": true,
            "neighbours": [
                {"member": 2, "address": "10.254.0.2:7118", "usable": true, "sharing": true,
                 "offer_up_kbit": 4_294_967_295u64, "offer_down_kbit": 8000,
                 "hellos_accepted": 40, "hellos_refused": 1},
                {"member": 3, "address": "10.254.0.3:7118", "usable": false, "sharing": false,
                 "offer_up_kbit": 0, "offer_down_kbit": 0,
                 "hellos_accepted": 3, "hellos_refused": 0},
            ],
            "paths": [
                {"via": 2, "relay": "10.254.0.2:7118", "path": 9, "state": "active",
                 "srtt_ms": 31.0, "loss": 0.01, "tx_bytes": 700, "rx_bytes": 900,
                 "rate_cap_bps": 160_000, "standby": true, "scavenger_share": 0.5,
                 "scavenger_backoffs": 1, "send_rate_bps": null, "send_share": null,
                 "tx_share": null, "cc_state": null, "bandwidth_bps": null,
                 "pacing_rate_bps": null, "cwnd_bytes": null, "bytes_in_flight": null},
            ],
            "relayed_for": [
                {"address": "10.254.0.3:7118", "up_packets": 2, "up_bytes": 300,
                 "down_packets": 4, "down_bytes": 5000, "over_cap": 0, "owner_first": 1,
                 "off_schedule": 3, "over_daily": 0, "over_monthly": 0},
            ],
            "lending": {
                "now": false, "why_not": "over_daily", "today": "2024-05-10",
                "lent_today_bytes": 500_000_000u64, "daily_allowance_bytes": 500_000_000u64,
                "month_start": "2024-04-15", "lent_month_bytes": 2_100_000_000u64,
                "monthly_allowance_bytes": null, "monthly_reset_day": 15,
                "scheduled": true, "in_schedule": true,
                "up_share_pct": 30.0, "down_share_pct": null,
                "line_up_bps": 10_000_000, "line_down_bps": 50_000_000,
                "cap_up_bps": 3_000_000, "cap_down_bps": null,
                "refused": {"over_cap": 0, "owner_first": 1, "off_schedule": 3,
                            "over_daily": 0, "over_monthly": 0},
            },
        });
        assert_eq!(
            status_text(&s),
            "\
member alice  connected to 203.0.113.10:7117  up 60 s  handshakes 1 of 1 sent answered
tunnel linkpool0 mtu 1400
uplink wan (eth1) active  rtt 20.0 ms  loss 0.0%  rate 20.0 Mbit/s  sent 5000 B / 5 pkts  received 6000 B / 6 pkts
  sends 75% (15.0 Mbit/s), 70% in all  cruise  bandwidth 20.0 Mbit/s  pacing 20.0 Mbit/s  window 60000 B  in flight 30000 B
uplink lte (wwan0) not ready  rtt -  loss 0.0%  rate 0.0 Mbit/s  sent 0 B / 0 pkts  received 0 B / 0 pkts
  metered: used 3.36 of 20.00 GB, 16.64 GB left; forecast use 2.88 GB to period end, surplus 11.20 GB, error 4%; lent 0.85 GB, offering 1.60 Mbit/s  own traffic moved off (below its threshold)
mesh mesh0 10.254.0.1:7118  credential for 600 s  lending our line
  not lending now: today's allowance is used up  lent 500.0 MB of 500.0 MB today, 2100.0 MB since 2024-04-15  line measured 10.0 / 50.0 Mbit/s up / down, capped 3.0 / any
  neighbour 2 at 10.254.0.2:7118 usable  offers any / 8.0 Mbit/s up / down  hellos 40 ok / 1 refused
  neighbour 3 at 10.254.0.3:7118 not usable  not lending  hellos 3 ok / 0 refused
  path via 2 (10.254.0.2:7118) active  rtt 31.0 ms  loss 1.0%  sent 700 B  received 900 B  capped 0.2 Mbit/s  standby (probes only)  giving way (50%)
  relaying for 10.254.0.3:7118: up 300 B / 2 pkts, down 5000 B / 4 pkts, refused 0 over cap, 1 owner first, 3 off schedule, 0 over daily, 0 over monthly, 0 over surplus
flows 2  interactive 1 redundant (auto)  bulk 1 session  default 0 session (auto)
  tcp 10.77.0.2:40000 > 192.0.2.9:443  bulk session  15.0 Mbit/s  on wan
  udp 10.77.0.2:5000 > 192.0.2.9:3478  interactive redundant  64 kbit/s
spread 1000 pkts  duplicated 20 pkts / 4000 B (0.4% overhead)  repaired 1
reorder timeout 40 ms  skew 5.5 ms  held 0  gaps timed out 2  late 1
"
        );
    }

    /// `ip -j neigh show` as ip-full prints it: complete and stale entries with a MAC are
    /// taken (IPv4-mapped as IPv4), failed and incomplete ones and link-local or multicast
    /// addresses are not; `/proc/net/arp` the same for IPv4.
    #[test]
    fn neighbour_tables_are_read() {
        let json = r#"[
            {"dst":"192.168.1.100","dev":"br-lan","lladdr":"3c:22:fb:12:34:56","state":["REACHABLE"]},
            {"dst":"fd00:1::100","dev":"br-lan","lladdr":"3c:22:fb:12:34:56","router":null,"state":["STALE"]},
            {"dst":"fe80::3e22:fbff:fe12:3456","dev":"br-lan","lladdr":"3c:22:fb:12:34:56","state":["STALE"]},
            {"dst":"192.168.1.7","dev":"br-lan","state":["FAILED"]},
            {"dst":"192.168.1.8","dev":"br-lan","lladdr":"02:00:00:00:00:08","state":["INCOMPLETE"]},
            {"dst":"100.64.1.1","dev":"wan","lladdr":"02:00:00:00:00:01","state":["PERMANENT"]},
            {"dst":"ff02::16","dev":"br-lan","lladdr":"33:33:00:00:00:16","state":["NOARP"]}
        ]"#;
        let n = parse_ip_neigh(json);
        let mac: MacAddr = "3c:22:fb:12:34:56".parse().unwrap();
        let want = |a: &str, m: MacAddr, dev: &str| Neighbour {
            address: a.parse().unwrap(),
            mac: m,
            device: dev.into(),
        };
        assert_eq!(
            n,
            [
                want("192.168.1.100", mac, "br-lan"),
                want("fd00:1::100", mac, "br-lan"),
                want("100.64.1.1", "02:00:00:00:00:01".parse().unwrap(), "wan"),
            ]
        );
        assert!(parse_ip_neigh("Usage: ip neigh").is_empty());
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n\
                   192.168.1.100    0x1         0x2         3c:22:fb:12:34:56     *        br-lan\n\
                   192.168.1.7      0x1         0x0         00:00:00:00:00:00     *        br-lan\n\
                   169.254.1.1      0x1         0x2         02:00:00:00:00:09     *        br-lan\n";
        assert_eq!(parse_proc_arp(arp), [want("192.168.1.100", mac, "br-lan")]);
    }

    /// A device given by MAC gets the addresses its MAC has on the LAN, keeps them while
    /// it is away, loses one another MAC took, and holds at most its share.
    #[test]
    fn addresses_are_learned_by_mac() {
        let mac: MacAddr = "3c:22:fb:12:34:56".parse().unwrap();
        let other: MacAddr = "02:00:00:00:00:02".parse().unwrap();
        let n = |a: &str, m: MacAddr, dev: &str| Neighbour {
            address: a.parse().unwrap(),
            mac: m,
            device: dev.into(),
        };
        let lan = ["br-lan".to_string()];
        let mut f = Found {
            name: "kid".into(),
            mac: Some(mac),
            configured: vec![],
            id: DeviceLimits::new()
                .add("kid", DevicePolicy::default())
                .unwrap(),
            learned: vec![],
        };
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        learn(
            &mut f,
            &[
                n("192.168.1.100", mac, "br-lan"),
                n("fd00:1::100", mac, "br-lan"),
                n("192.168.1.5", other, "br-lan"),
                n("10.0.0.9", mac, "wan"),
            ],
            &lan,
        );
        assert_eq!(f.learned, [a("192.168.1.100"), a("fd00:1::100")]);
        learn(&mut f, &[n("192.168.1.5", other, "br-lan")], &lan);
        assert_eq!(f.learned.len(), 2, "away: kept");
        learn(&mut f, &[n("192.168.1.100", other, "br-lan")], &lan);
        assert_eq!(f.learned, [a("fd00:1::100")], "taken by another MAC");
        let many: Vec<Neighbour> = (0..40)
            .map(|i| n(&format!("fd00:1::{i:x}"), mac, "br-lan"))
            .collect();
        learn(&mut f, &many, &lan);
        assert_eq!(f.learned.len(), MAX_ADDRESSES_PER_DEVICE);
        assert_eq!(f.learned.last(), Some(&a("fd00:1::27")), "the newest kept");
        let mut by_address = f.clone();
        by_address.mac = None;
        learn(&mut by_address, &many, &lan);
        assert_eq!(by_address.learned, f.learned, "no MAC, nothing learned");
    }

    /// Each device's addresses masquerade into its block, per family; everyone else into
    /// the ports below; the table is replaced whole, ahead of the gateway's own NAT.
    #[test]
    fn the_devices_masquerading() {
        let blocks = vec![
            (
                32768..=33791,
                vec![
                    "192.168.1.100".parse().unwrap(),
                    "fd00:1::100".parse().unwrap(),
                ],
            ),
            (33792..=34815, vec!["192.168.1.60".parse().unwrap()]),
            (34816..=35839, vec![]),
        ];
        assert_eq!(
            device_nat_ruleset("linkpool0", &blocks),
            "table inet linkpool_devices
delete table inet linkpool_devices
table inet linkpool_devices {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat - 1; policy accept;
\t\toifname \"linkpool0\" meta l4proto { tcp, udp, icmp } ip saddr { 192.168.1.100 } masquerade to :32768-33791
\t\toifname \"linkpool0\" meta l4proto { tcp, udp, ipv6-icmp } ip6 saddr { fd00:1::100 } masquerade to :32768-33791
\t\toifname \"linkpool0\" meta l4proto { tcp, udp, icmp } ip saddr { 192.168.1.60 } masquerade to :33792-34815
\t\toifname \"linkpool0\" meta l4proto { tcp, udp, icmp, ipv6-icmp } masquerade to :1024-32767
\t}
}
"
        );
    }

    /// The devices section of the text status.
    #[test]
    fn devices_in_the_text_status() {
        let devices = serde_json::json!([
            {"name": "kid", "mac": "3c:22:fb:12:34:56", "addresses": ["192.168.1.100", "fd00:1::100"],
             "today_bytes": 2_100_000, "daily_threshold_bytes": 2_000_000,
             "month_bytes": 10_500_000, "monthly_threshold_bytes": null, "month_start": "2024-05-01",
             "floor_bps": 1_000_000, "limited": true, "why_limited": "over_daily",
             "dropped_packets": 120, "dropped_bytes": 170_000},
            {"name": "tv", "mac": null, "addresses": [],
             "today_bytes": 0, "daily_threshold_bytes": null,
             "month_bytes": 3_000_000, "monthly_threshold_bytes": 100_000_000, "month_start": "2024-04-15",
             "floor_bps": 500_000, "limited": false, "why_limited": null,
             "dropped_packets": 0, "dropped_bytes": 0},
        ]);
        let mut out = String::new();
        devices_text(&mut out, &devices);
        assert_eq!(
            out,
            "\
device kid (3c:22:fb:12:34:56: 192.168.1.100, fd00:1::100)  2.1 MB of 2.0 MB today, 10.5 MB since 2024-05-01  limited to 1.0 Mbit/s (today's threshold reached)  dropped 120 pkts / 170000 B
device tv (no address seen yet)  0.0 MB today, 3.0 MB of 100.0 MB since 2024-04-15  not limited (floor 0.5 Mbit/s)  dropped 0 pkts / 0 B
"
        );
    }
}
