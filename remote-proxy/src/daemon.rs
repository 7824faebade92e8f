//! The proxy's event loop: a thin shell of I/O around [`linkpool_protocol::server`].
//!
//! Datagrams from members are opened and their IP packets written to the TUN device, where
//! the kernel NATs them to the Internet; replies read from the TUN are routed to the member
//! that owns the destination tunnel address, sealed and sent back to where that member's
//! path was last heard from. Buffers are allocated once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use linkpool_os::control::{self, Format};
use linkpool_os::event::{recv_any, sleep_until};
use linkpool_os::log::LogHandle;
use linkpool_os::signal::{Signal, Signals};
use linkpool_protocol::client::SEAL_OFFSET;
use linkpool_protocol::server::{
    HANDSHAKE_SHARE, MemberId, MemberKey, Server, ServerConfig, ServerEvent, handshake_budget,
};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_protocol::{DropReason, ip};
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use crate::config::ProxyConfig;
use crate::setup::ProxyOs;

/// Handshakes timed at start to learn what one costs on this machine.
const CALIBRATION_HANDSHAKES: u32 = 16;
/// Packets taken from the TUN or a socket in one go before looking at the others again:
/// a wake-up of the event loop costs more than a packet.
const BATCH: usize = 32;
/// How often member status changes are logged.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Why the proxy itself dropped a packet the protocol accepted.
#[derive(Debug, Default)]
struct ProxyDrops {
    /// A member sent a packet whose source is not one of its tunnel addresses.
    spoofed_source: u64,
    /// A packet from the Internet for an address no member has.
    no_member: u64,
    /// A packet for a member without a session (or not heard from yet).
    member_offline: u64,
}

struct Proxy {
    started: Instant,
    config: ProxyConfig,
    server: Server,
    by_address: HashMap<IpAddr, MemberId>,
    drops: ProxyDrops,
    /// Multicast the proxy's kernel sends on the TUN by itself (MLD reports for the
    /// groups a forwarding IPv6 interface joins): for no member, and not a drop.
    local_multicast: u64,
    connected: Vec<bool>,
    /// What one handshake costs on this machine, and the budget set from it.
    handshake_cost: Duration,
    handshake_budget: u32,
}

fn member_keys(config: &ProxyConfig) -> Vec<MemberKey> {
    config
        .members
        .iter()
        .map(|m| MemberKey {
            public_key: m.public_key,
            psk: m.psk.clone(),
        })
        .collect()
}

fn address_map(config: &ProxyConfig) -> HashMap<IpAddr, MemberId> {
    let mut map = HashMap::new();
    for (i, m) in config.members.iter().enumerate() {
        for a in &m.addresses {
            map.insert(*a, MemberId(i as u32));
        }
    }
    map
}

fn random_bytes() -> io::Result<[u8; 32]> {
    // A fresh secret is 32 bytes from the OS random source.
    linkpool_protocol::keys::SharedSecret::generate()
        .map(|s| *s.as_bytes())
        .map_err(|e| io::Error::other(e.to_string()))
}

/// What answering one handshake costs on this machine: the proxy's own responder code on
/// throwaway keys, timed. Handshakes are bounded to a share of a core from it, so a flood
/// can never take the CPU the data path needs, on a small VPS or a big one.
fn measure_handshake_cost() -> io::Result<Duration> {
    use linkpool_protocol::client::{Client, ClientConfig};
    use linkpool_protocol::keys::SecretKey;
    let key = |r: Result<SecretKey, _>| r.map_err(|e| io::Error::other(format!("{e:?}")));
    let proxy = key(SecretKey::generate())?;
    let member = key(SecretKey::generate())?;
    let now = Instant::now();
    let mut server = Server::new(
        ServerConfig {
            static_key: proxy.clone(),
            members: vec![MemberKey {
                public_key: member.public_key(),
                psk: None,
            }],
            limits: Limits::default(),
            handshakes_per_second: u32::MAX,
        },
        now,
        random_bytes()?,
    );
    let mut client = Client::new(
        ClientConfig {
            static_key: member,
            proxy_key: proxy.public_key(),
            psk: None,
            suite: linkpool_protocol::CipherSuite::Aes256Gcm,
            limits: Limits::default(),
        },
        now,
        1,
        1,
    );
    client.add_path(linkpool_protocol::PathId(0), now);
    let from: SocketAddr = ([192, 0, 2, 1], 1).into();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut reply = vec![0u8; MAX_DATAGRAM];
    let mut spent = Duration::ZERO;
    for _ in 0..CALIBRATION_HANDSHAKES {
        client.restart_handshake(now);
        let Some(t) = client.poll_transmit(now, &mut buf) else {
            return Err(io::Error::other("calibration: no initiation"));
        };
        let start = Instant::now();
        let answered = server.handle_datagram(now, from, &mut buf[..t.len], &mut reply);
        spent += start.elapsed();
        if !matches!(answered, Ok(ServerEvent::Reply { .. })) {
            return Err(io::Error::other(format!(
                "calibration handshake refused: {answered:?}"
            )));
        }
    }
    Ok(spent / CALIBRATION_HANDSHAKES)
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ProxyConfig, os: ProxyOs, log: LogHandle) -> io::Result<()> {
    let mut signals = Signals::new()?;
    let (_control, mut requests) = control::serve(&config.control_socket)?;
    let tun = &os.tun;
    let sockets = &os.sockets;
    let handshake_cost = measure_handshake_cost()?;
    let budget = handshake_budget(handshake_cost);
    info!(
        cost_us = handshake_cost.as_micros() as u64,
        per_core = (1.0 / handshake_cost.as_secs_f64()) as u64,
        budget,
        "handshakes: cookies asked beyond {budget}/s (a {HANDSHAKE_SHARE}th of a core)"
    );
    let now = Instant::now();
    let server = Server::new(
        ServerConfig {
            static_key: config.private_key.clone(),
            members: member_keys(&config),
            limits: Limits::default(),
            handshakes_per_second: budget,
        },
        now,
        random_bytes()?,
    );
    let mut proxy = Proxy {
        started: now,
        by_address: address_map(&config),
        connected: vec![false; config.members.len()],
        config,
        server,
        drops: ProxyDrops::default(),
        local_multicast: 0,
        handshake_cost,
        handshake_budget: budget,
    };
    let mut rx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut reply = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut tx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    loop {
        // Status first, whatever floods the sockets: `select!` alone gives it no priority,
        // and a busy socket branch would keep an operator waiting.
        while let Ok((format, reply)) = requests.try_recv() {
            let _ = reply.send(proxy.status(format));
        }
        let wake = proxy.server.poll_timeout();
        tokio::select! {
            (i, result) = recv_any(sockets.len(), |i| Some(&sockets[i].1), &mut rx) => {
                let socket = &sockets[i].1;
                match result {
                    Ok((n, from)) => {
                        proxy.handle_datagram(socket, from, &mut rx[..n], &mut reply, tun).await
                    }
                    Err(e) => debug!("receive: {e}"),
                }
                // Drain what else that socket holds before going round the loop again.
                for _ in 0..BATCH {
                    match socket.try_recv_from(&mut rx) {
                        Ok((n, from)) => {
                            proxy.handle_datagram(socket, from, &mut rx[..n], &mut reply, tun).await
                        }
                        Err(_) => break,
                    }
                }
            }
            read = tun.recv(&mut tx[SEAL_OFFSET..]) => {
                match read {
                    Ok(n) => proxy.send_packet(sockets, &mut tx, n),
                    Err(e) => warn!("reading the tunnel device: {e}"),
                }
                for _ in 0..BATCH {
                    match tun.try_recv(&mut tx[SEAL_OFFSET..]) {
                        Ok(n) => proxy.send_packet(sockets, &mut tx, n),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(wake) => proxy.server.handle_timeout(Instant::now()),
            _ = status.tick() => proxy.log_status(),
            Some((format, reply)) = requests.recv() => {
                let _ = reply.send(proxy.status(format));
            }
            signal = signals.recv() => match signal {
                Signal::Terminate => {
                    info!("stopping");
                    return Ok(());
                }
                Signal::Reload => match ProxyConfig::load(&proxy.config.file) {
                    Ok(new) => {
                        log.set_level(new.log_level);
                        proxy.server.set_members(member_keys(&new));
                        proxy.by_address = address_map(&new);
                        proxy.connected = vec![false; new.members.len()];
                        info!(members = new.members.len(), "configuration re-read");
                        proxy.config = new;
                    }
                    Err(e) => error!("configuration not reloaded: {e}"),
                },
            },
        }
    }
}

impl Proxy {
    async fn handle_datagram(
        &mut self,
        socket: &UdpSocket,
        from: SocketAddr,
        datagram: &mut [u8],
        reply: &mut [u8],
        tun: &linkpool_os::tun::AsyncTun,
    ) {
        match self
            .server
            .handle_datagram(Instant::now(), from, datagram, reply)
        {
            Ok(ServerEvent::Packet { member, range }) => {
                let packet = &datagram[range];
                // A member may only speak from its own tunnel addresses: no spoofing other
                // members (or anyone) through the proxy.
                if ip::source(packet).and_then(|a| self.by_address.get(&a)) != Some(&member) {
                    self.drops.spoofed_source += 1;
                    return;
                }
                if let Err(e) = tun.send(packet).await {
                    debug!("writing to the tunnel device: {e}");
                }
            }
            Ok(ServerEvent::Reply { len, .. }) => {
                if let Err(e) = socket.try_send_to(&reply[..len], from) {
                    debug!(%from, "send: {e}");
                }
            }
            Ok(ServerEvent::Consumed) => {}
            Err(reason) => debug!(%from, "datagram dropped: {reason}"),
        }
    }

    fn send_packet(&mut self, sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8], n: usize) {
        let packet = &buf[SEAL_OFFSET..SEAL_OFFSET + n];
        let destination = ip::destination(packet);
        if destination.is_some_and(|a| a.is_multicast()) {
            self.local_multicast += 1;
            return;
        }
        let Some(&member) = destination.and_then(|a| self.by_address.get(&a)) else {
            self.drops.no_member += 1;
            return;
        };
        match self.server.seal_packet(Instant::now(), member, buf, n) {
            Ok((to, len)) => {
                // Answer from the socket of the member's address family.
                let socket = sockets
                    .iter()
                    .find(|(local, _)| local.is_ipv4() == to.is_ipv4())
                    .or_else(|| sockets.first());
                if let Some((_, s)) = socket {
                    if let Err(e) = s.try_send_to(&buf[..len], to) {
                        debug!(%to, "send: {e}");
                    }
                }
            }
            Err(DropReason::NoSession) => self.drops.member_offline += 1,
            Err(reason) => debug!("packet for member dropped: {reason}"),
        }
    }

    /// A snapshot for `linkpool-proxy status`.
    fn status(&self, format: Format) -> String {
        let now = Instant::now();
        let ago = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs());
        let members: Vec<_> = self
            .config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let s = self.server.member(MemberId(i as u32));
                let paths: Vec<_> = s
                    .iter()
                    .flat_map(|s| s.paths.iter())
                    .map(|p| {
                        serde_json::json!({
                            "path": p.id.0,
                            "endpoint": p.endpoint.to_string(),
                            "last_received_s_ago": now.saturating_duration_since(p.last_received).as_secs(),
                            "rx_packets": p.rx_packets,
                            "rx_bytes": p.rx_bytes,
                            "tx_packets": p.tx_packets,
                            "tx_bytes": p.tx_bytes,
                            "receipt_bytes": p.receipt.map(|r| r.1),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": m.name,
                    "addresses": m.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "connected": s.as_ref().is_some_and(|s| s.connected),
                    "session_age_s": ago(s.as_ref().and_then(|s| s.session_started)),
                    "last_received_s_ago": ago(s.as_ref().and_then(|s| s.last_received)),
                    "paths": paths,
                })
            })
            .collect();
        let stats = self.server.stats();
        let mut drops: serde_json::Map<String, serde_json::Value> = stats
            .drops
            .iter()
            .map(|(r, n)| (r.name().to_string(), n.into()))
            .collect();
        for (name, n) in [
            ("spoofed_source", self.drops.spoofed_source),
            ("no_member", self.drops.no_member),
            ("member_offline", self.drops.member_offline),
        ] {
            if n > 0 {
                drops.insert(name.to_string(), n.into());
            }
        }
        let status = serde_json::json!({
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "handshakes": stats.handshakes,
            "handshakes_processed": stats.handshakes_processed,
            "handshake_cost_us": self.handshake_cost.as_micros() as u64,
            "handshake_budget_per_s": self.handshake_budget,
            "cookies_sent": stats.cookies_sent,
            "members": members,
            "drops": drops,
            "local_multicast_ignored": self.local_multicast,
        });
        match format {
            Format::Json => format!("{status}\n"),
            Format::Text => status_text(&status),
        }
    }

    fn log_status(&mut self) {
        for (i, m) in self.config.members.iter().enumerate() {
            let connected = self
                .server
                .member(MemberId(i as u32))
                .is_some_and(|s| s.connected);
            if connected != self.connected[i] {
                self.connected[i] = connected;
                if connected {
                    info!(member = %m.name, "member connected");
                } else {
                    info!(member = %m.name, "member disconnected");
                }
            }
        }
        let d = &self.drops;
        debug!(
            spoofed = d.spoofed_source,
            no_member = d.no_member,
            offline = d.member_offline,
            protocol_drops = self.server.stats().drops.total(),
            "status"
        );
    }
}

/// The status for a person, from the same snapshot as the JSON.
fn status_text(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let members = s["members"].as_array().map_or(&[][..], |m| m.as_slice());
    let up = members.iter().filter(|m| m["connected"] == true).count();
    let _ = writeln!(
        out,
        "up {} s  members {up}/{} connected  handshakes {}  cookies sent {}",
        s["uptime_s"],
        members.len(),
        s["handshakes"],
        s["cookies_sent"]
    );
    for m in members {
        let state = if m["connected"] == true {
            "connected"
        } else {
            "offline"
        };
        let _ = writeln!(out, "member {} {state}", m["name"].as_str().unwrap_or("?"));
        for p in m["paths"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  path {} from {}  received {} B / {} pkts  sent {} B / {} pkts",
                p["path"],
                p["endpoint"].as_str().unwrap_or("?"),
                p["rx_bytes"],
                p["rx_packets"],
                p["tx_bytes"],
                p["tx_packets"],
            );
        }
    }
    if let Some(drops) = s["drops"].as_object().filter(|d| !d.is_empty()) {
        let list: Vec<String> = drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "dropped {}", list.join(", "));
    }
    out
}
