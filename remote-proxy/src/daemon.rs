//! The proxy's event loop: a thin shell of I/O around [`linkpool_protocol::server`].
//!
//! Datagrams from members go into the core, and the IP packets it gives back are written
//! to the TUN device, where the kernel NATs them to the Internet; packets read from the
//! TUN go into the core, which picks the member and the path. Whatever the core wants sent
//! leaves from the listening socket and local address its `Transmit` names. Buffers are
//! allocated once.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use linkpool_os::control::{self, Format};
use linkpool_os::event::{readable_any, sleep_until, woke_late};
use linkpool_os::log::LogHandle;
use linkpool_os::signal::{Signal, Signals};
use linkpool_os::socket::{try_recv_with_destination, try_send_from};
use linkpool_os::status;
use linkpool_protocol::path::PathState;
use linkpool_protocol::server::{
    Accepted, DEFAULT_QUEUE_SLOTS, HANDSHAKE_SHARE, MemberId, MemberKey, Server, ServerConfig,
    ServerEvent, handshake_budget,
};
use linkpool_protocol::session::Limits;
use linkpool_protocol::wire::MAX_DATAGRAM;
use linkpool_protocol::{DropReason, ip};
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};

use crate::config::ProxyConfig;
use crate::ledger::{self, FLUSH_INTERVAL, LedgerWriter, STATEMENT_INTERVAL};
use crate::setup::ProxyOs;
use linkpool_protocol::statement::Statement;

/// Handshakes timed at start to learn what one costs on this machine.
const CALIBRATION_HANDSHAKES: u32 = 16;
/// Packets taken from the TUN or a socket in one go before looking at the others again:
/// a wake-up of the event loop costs more than a packet.
const BATCH: usize = 32;
/// Batches read from each socket at most after a late wake before the timers run.
const CATCH_UP_BATCHES: usize = 32;
/// How often member status changes are logged.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

struct Proxy {
    started: Instant,
    config: ProxyConfig,
    server: Server,
    /// Multicast the proxy's kernel sends on the TUN by itself (MLD reports for the
    /// groups a forwarding IPv6 interface joins): for no member, and not a drop.
    local_multicast: u64,
    /// What one handshake costs on this machine, and the budget set from it.
    handshake_cost: Duration,
    handshake_budget: u32,
    /// The listening socket looked at first, moved on each turn so none starves the others.
    receive_cursor: usize,
    ledger: LedgerWriter,
    /// When members' statements were last sent.
    statements_at: Option<Instant>,
}

fn member_keys(config: &ProxyConfig) -> Vec<MemberKey> {
    config
        .members
        .iter()
        .map(|m| MemberKey {
            public_key: m.public_key,
            psk: m.psk.clone(),
            addresses: m.addresses.clone(),
        })
        .collect()
}

/// Tells the core how `config` spreads flows: proxy-wide, and per member (ids are indices
/// into `config.members`, as [`member_keys`] lists them).
fn set_spreading(server: &mut Server, config: &ProxyConfig) {
    server.set_spreading(config.spreading);
    for (i, m) in config.members.iter().enumerate() {
        server.set_member_spreading(MemberId(i as u32), m.spreading);
    }
    server.set_credit_rules(config.credits.contention, config.credits.floor);
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
                addresses: Vec::new(),
            }],
            limits: Limits::default(),
            handshakes_per_second: u32::MAX,
            mtu: 1280,
            queue_slots: 1,
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
            mtu: 1280,
            queue_slots: 1,
        },
        now,
        1,
        1,
    );
    let from: SocketAddr = ([192, 0, 2, 1], 1).into();
    client.open_path(now, from, Default::default());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut spent = Duration::ZERO;
    for _ in 0..CALIBRATION_HANDSHAKES {
        client.restart_handshake(now);
        let Some(t) = client.poll_transmit(now, &mut buf) else {
            return Err(io::Error::other("calibration: no initiation"));
        };
        let start = Instant::now();
        let answered = server.handle_datagram(now, from, None, &mut buf[..t.len]);
        spent += start.elapsed();
        while server.poll_transmit(now, &mut buf).is_some() {}
        if !matches!(answered, Ok(Accepted::Handshake { member: Some(_) })) {
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
    let (control_socket, mut requests) = control::serve(&config.control_socket)?;
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
    let mut server = Server::new(
        ServerConfig {
            static_key: config.private_key.clone(),
            members: member_keys(&config),
            limits: Limits::default(),
            handshakes_per_second: budget,
            mtu: config.tunnel.mtu,
            queue_slots: DEFAULT_QUEUE_SLOTS,
        },
        now,
        random_bytes()?,
    );
    // Members' mesh credentials expire in wall-clock time.
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    server.set_wall_clock(now, unix_s);
    server.set_credential_lifetime(config.mesh_credential_lifetime_s);
    set_spreading(&mut server, &config);
    let ledger = LedgerWriter::start(
        &config.ledger_file,
        config.credits.tariff,
        config.credits.utc_offset_s,
    )
    .map_err(io::Error::other)?;
    info!(file = %config.ledger_file.display(), "ledger open");
    // Dropped, it stops listening: kept for the daemon's life.
    let _admin = match &config.admin {
        Some(admin) => Some(crate::admin_http::spawn(
            admin,
            control_socket.requests(),
            config.ledger_file.clone(),
        )?),
        None => None,
    };
    let mut proxy = Proxy {
        ledger,
        statements_at: None,
        started: now,
        config,
        server,
        local_multicast: 0,
        handshake_cost,
        handshake_budget: budget,
        receive_cursor: 0,
    };
    let mut rx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut tx = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    let mut ledger_flush = tokio::time::interval(FLUSH_INTERVAL);
    loop {
        // Status first, whatever floods the sockets: `select!` alone gives it no priority,
        // and a busy socket branch would keep an operator waiting.
        while let Ok((format, reply)) = requests.try_recv() {
            let _ = reply.send(proxy.status(format));
        }
        let wake = proxy.server.poll_timeout();
        let first = proxy.receive_cursor;
        tokio::select! {
            i = readable_any(sockets.len(), first, |i| Some(&sockets[i].1)) => {
                proxy.receive_cursor = (i + 1) % sockets.len();
                proxy.receive(&sockets[i], &mut rx, &mut tx, tun).await;
            }
            read = tun.recv(&mut rx) => {
                match read {
                    Ok(n) => proxy.handle_packet(&rx[..n]),
                    Err(e) => warn!("reading the tunnel device: {e}"),
                }
                for _ in 0..BATCH {
                    match tun.try_recv(&mut rx) {
                        Ok(n) => proxy.handle_packet(&rx[..n]),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(wake) => {
                if woke_late(wake) {
                    // Everything that came while the proxy was not running (up to
                    // CATCH_UP_BATCHES each), so the timers judge the paths by what did
                    // arrive: acks left unread made a live path look silent.
                    for _ in 0..CATCH_UP_BATCHES {
                        let mut more = false;
                        for socket in sockets {
                            more |= proxy.receive(socket, &mut rx, &mut tx, tun).await;
                        }
                        if !more {
                            break;
                        }
                    }
                }
                proxy.server.handle_timeout(Instant::now());
            }
            _ = status.tick() => proxy.log_status(),
            _ = ledger_flush.tick() => {
                proxy.take_usage();
                proxy.ledger.hand_over();
                proxy.set_balances();
                proxy.send_statements(None);
            }
            Some((format, reply)) = requests.recv() => {
                let _ = reply.send(proxy.status(format));
            }
            signal = signals.recv() => match signal {
                Signal::Terminate => {
                    info!("stopping");
                    proxy.take_usage();
                    proxy.ledger.close();
                    return Ok(());
                }
                Signal::Reload => match ProxyConfig::load(&proxy.config.file) {
                    Ok(new) => {
                        log.set_level(new.log_level);
                        // The usage names members by their place in the old list.
                        proxy.take_usage();
                        proxy.ledger.set_tariff(new.credits.tariff, new.credits.utc_offset_s);
                        proxy
                            .server
                            .set_credit_rules(new.credits.contention, new.credits.floor);
                        proxy.server.set_members(member_keys(&new));
                        set_spreading(&mut proxy.server, &new);
                        info!(members = new.members.len(), "configuration re-read");
                        proxy.config = new;
                        proxy.set_balances();
                        // Fresh statements and ratings at the next flush, under the new
                        // member list and rates.
                        proxy.statements_at = None;
                    }
                    Err(e) => error!("configuration not reloaded: {e}"),
                },
            },
        }
        proxy.flush(sockets, &mut tx);
        proxy.note_events();
    }
}

impl Proxy {
    /// Moves what the core counted into the ledger's next batch, in the current hour.
    fn take_usage(&mut self) {
        let hour = ledger::hour_of(ledger::unix_now());
        let now = Instant::now();
        let members = &self.config.members;
        let name = |id: u32| {
            members
                .get(id as usize)
                .map_or_else(|| format!("?{id}"), |m| m.name.clone())
        };
        let batch = self.ledger.pending();
        self.server.take_usage(now, |id, usage| {
            batch.add(now, hour, &name(id.0), usage, name)
        });
    }

    /// Sends each member (or only `to`) the signed statement of its account this month,
    /// as of the ledger's last write, and its relay's rating: every
    /// [`STATEMENT_INTERVAL`], and to a member as it connects.
    fn send_statements(&mut self, to: Option<MemberId>) {
        let now = Instant::now();
        if to.is_none() {
            if self
                .statements_at
                .is_some_and(|t| now.duration_since(t) < STATEMENT_INTERVAL)
            {
                return;
            }
            self.statements_at = Some(now);
        }
        let accounts = self.ledger.accounts();
        let issued_at = ledger::unix_now();
        let (start, end) = ledger::month_of(issued_at);
        for (i, m) in self.config.members.iter().enumerate() {
            let id = MemberId(i as u32);
            if to.is_some_and(|t| t != id) {
                continue;
            }
            let a = accounts.iter().find(|a| a.member == m.name);
            let statement = Statement {
                member: id.0,
                period_start: start as u64,
                period_end: end as u64,
                consumed_up: a.map_or(0, |a| a.consumed.up),
                consumed_down: a.map_or(0, |a| a.consumed.down),
                carried_up: a.map_or(0, |a| a.carried.up),
                carried_down: a.map_or(0, |a| a.carried.down),
                earned: a.map_or(0, |a| a.earned.max(0)),
                spent: a.map_or(0, |a| a.spent.max(0)),
                balance: a.map_or(0, |a| a.balance),
                issued_at: issued_at as u64,
            };
            self.server.send_statement(now, id, &statement);
            // And its relay's rating, for its neighbours.
            if let Some(rating) = self.server.relay_rating(now, issued_at as u64, id) {
                self.server.send_rating(now, id, &rating);
            }
        }
    }

    /// Tells the core each member's balance, as of the ledger's last write.
    fn set_balances(&mut self) {
        let balances = self.ledger.balances();
        let by_name: std::collections::HashMap<&str, i64> = balances
            .iter()
            .map(|b| (b.member.as_str(), b.balance))
            .collect();
        for (i, m) in self.config.members.iter().enumerate() {
            let balance = by_name.get(m.name.as_str()).copied().unwrap_or(0);
            self.server.set_balance(MemberId(i as u32), balance);
        }
    }

    fn handle_datagram(
        &mut self,
        from: SocketAddr,
        local: Option<SocketAddr>,
        datagram: &mut [u8],
    ) {
        if let Err(reason) = self
            .server
            .handle_datagram(Instant::now(), from, local, datagram)
        {
            debug!(%from, "datagram dropped: {reason}");
        }
    }

    /// Reads a batch of datagrams from one listening socket before going round the loop
    /// again. Returns whether more may wait.
    async fn receive(
        &mut self,
        (listen, socket): &(SocketAddr, UdpSocket),
        rx: &mut [u8],
        tx: &mut [u8],
        tun: &linkpool_os::tun::AsyncTun,
    ) -> bool {
        for _ in 0..BATCH {
            match try_recv_with_destination(socket, rx) {
                Ok((n, from, to)) => {
                    let local = to.map(|ip| SocketAddr::new(ip, listen.port()));
                    self.handle_datagram(from, local, &mut rx[..n]);
                    self.deliver(tx, tun).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!("receive: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// Writes what the core has for the Internet to the TUN.
    async fn deliver(&mut self, buf: &mut [u8], tun: &linkpool_os::tun::AsyncTun) {
        while let Some(n) = self.server.poll_packet(buf) {
            if let Err(e) = tun.send(&buf[..n]).await {
                debug!("writing to the tunnel device: {e}");
            }
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) {
        if ip::destination(packet).is_some_and(|a| a.is_multicast()) {
            self.local_multicast += 1;
            return;
        }
        match self.server.handle_packet(Instant::now(), packet) {
            Ok(_) | Err(DropReason::NoMember | DropReason::MemberOffline) => {}
            Err(reason) => debug!("packet for a member dropped: {reason}"),
        }
    }

    /// Sends everything the core wants sent, from the socket and address it names.
    fn flush(&mut self, sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8]) {
        let now = Instant::now();
        while let Some(t) = self.server.poll_transmit(now, buf) {
            let from = t.local;
            // The socket the path's datagrams arrived on: same family and port, and the
            // same address unless it listens on the wildcard.
            let socket = sockets.iter().find(|(listen, _)| match from {
                Some(local) => {
                    listen.port() == local.port()
                        && listen.is_ipv4() == local.is_ipv4()
                        && (listen.ip().is_unspecified() || listen.ip() == local.ip())
                }
                None => listen.is_ipv4() == t.remote.is_ipv4(),
            });
            let Some((_, socket)) = socket else {
                continue;
            };
            let source = from.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
            if let Err(e) = try_send_from(socket, &buf[..t.len], t.remote, source) {
                if e.kind() != io::ErrorKind::WouldBlock {
                    debug!(to = %t.remote, "send: {e}");
                }
            }
        }
    }

    /// Logs what the core reports: members connecting and paths changing state.
    fn note_events(&mut self) {
        let mut connected = Vec::new();
        while let Some(event) = self.server.poll_event() {
            let name = |id: MemberId| {
                self.config
                    .members
                    .get(id.0 as usize)
                    .map_or("?", |m| m.name.as_str())
            };
            match event {
                ServerEvent::Connected(id) => {
                    info!(member = %name(id), "member connected");
                    connected.push(id);
                }
                ServerEvent::Disconnected(id) => info!(member = %name(id), "member disconnected"),
                ServerEvent::Path(id, e) => match e.state {
                    PathState::Dead => info!(member = %name(id), path = %e.path, "path down"),
                    state => {
                        debug!(member = %name(id), path = %e.path, state = state.name(), "path")
                    }
                },
            }
        }
        for id in connected {
            self.send_statements(Some(id));
        }
    }

    /// A snapshot for `linkpool-proxy status`.
    fn status(&self, format: Format) -> String {
        let now = Instant::now();
        let unix_now = ledger::unix_now() as u64;
        let ago = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs());
        let members: Vec<_> = self
            .config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let id = MemberId(i as u32);
                let s = self.server.member(id);
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                let all = s.as_ref().map_or(&[][..], |s| s.paths);
                let total_rate = status::total_send_rate(all, now);
                let total_tx = status::total_tx_bytes(all);
                let paths: Vec<_> = all
                    .iter()
                    .map(|p| {
                        let c = p.counters();
                        let mut entry = serde_json::json!({
                            "path": p.id().0,
                            "endpoint": p.endpoint().remote.to_string(),
                            "local": p.endpoint().local.map(|a| a.to_string()),
                            "state": p.state().name(),
                            "srtt_ms": p.srtt().map(ms),
                            "loss": p.loss(),
                            "delivery_rate_bps": p.delivery_rate() * 8,
                            "rx_packets": c.rx_packets,
                            "rx_bytes": c.rx_bytes,
                            "tx_packets": c.tx_packets,
                            "tx_bytes": c.tx_bytes,
                            "resent_elsewhere": c.resent_elsewhere,
                            "suspected": c.suspected,
                            "receipt_bytes": p.peer_receipt().map(|r| r.1),
                            "relay": p.endpoint().relay.map(|hop| serde_json::json!({
                                "member": self.config.members.get(hop.relay as usize).map(|m| m.name.clone()),
                                "slot": hop.slot,
                            })),
                            "rate_cap_bps": p.rate_cap().map(|c| c * 8),
                            "scavenger_share": p.scavenger_share(),
                            "scavenger_backoffs": c.scavenger_backoffs,
                        });
                        if let Some(entry) = entry.as_object_mut() {
                            entry.extend(status::path_fields(Some(p), now, total_rate, total_tx));
                        }
                        entry
                    })
                    .collect();
                let spread = s.as_ref().map_or_else(Default::default, |s| s.spread);
                serde_json::json!({
                    "name": m.name,
                    "addresses": m.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "connected": s.as_ref().is_some_and(|s| s.connected),
                    "session_age_s": ago(s.as_ref().and_then(|s| s.session_started)),
                    "last_received_s_ago": ago(s.as_ref().and_then(|s| s.last_received)),
                    "queued": s.as_ref().map_or(0, |s| s.queued),
                    "balance": s.as_ref().map(|s| s.balance),
                    "relay_rating": self.server.relay_rating(now, unix_now, id).map(|r| {
                        serde_json::json!({
                            "window_start": r.window_start,
                            "offered_bytes": r.bytes_offered,
                            "delivered_bytes": r.bytes_delivered,
                            "delivered_permille": r.delivered_permille(),
                            "uptime_permille": r.uptime_permille,
                            "line_rate_bps": u64::from(r.line_rate) * 8,
                        })
                    }),
                    "paths": paths,
                    "flows": status::flows_json(
                        s.as_ref().and_then(|s| s.flows),
                        &self.server.member_spreading(id),
                        now,
                        |_| None,
                    ),
                    "spread": status::spread_json(&spread),
                    "reorder": s.as_ref().and_then(|s| s.reorder).map(status::reorder_json),
                })
            })
            .collect();
        let stats = self.server.stats();
        let drops: serde_json::Map<String, serde_json::Value> = stats
            .drops
            .iter()
            .map(|(r, n)| (r.name().to_string(), n.into()))
            .collect();
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
            "ledger": {
                "file": self.config.ledger_file.display().to_string(),
                "flush_lag_ms": self.ledger.flush_lag().as_millis() as u64,
            },
        });
        match format {
            Format::Json => format!("{status}\n"),
            Format::Text => status_text(&status),
        }
    }

    fn log_status(&mut self) {
        debug!(protocol_drops = self.server.stats().drops.total(), "status");
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
        let balance = m["balance"].as_i64().map_or(String::new(), |b| {
            format!("  balance {}", ledger::credits(b))
        });
        let _ = writeln!(
            out,
            "member {} {state}{balance}",
            m["name"].as_str().unwrap_or("?")
        );
        for p in m["paths"].as_array().into_iter().flatten() {
            let rtt = p["srtt_ms"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.1} ms"));
            let _ = writeln!(
                out,
                "  path {} {} from {}  rtt {rtt}  received {} B / {} pkts  sent {} B / {} pkts",
                p["path"],
                p["state"].as_str().unwrap_or("?"),
                p["endpoint"].as_str().unwrap_or("?"),
                p["rx_bytes"],
                p["rx_packets"],
                p["tx_bytes"],
                p["tx_packets"],
            );
            if let Some(line) = status::path_text(p) {
                let _ = writeln!(out, "    {line}");
            }
        }
        if m["connected"] == true {
            let reorder = Some(&m["reorder"]).filter(|r| r.is_object());
            status::spreading_text(&mut out, "  ", &m["flows"], &m["spread"], reorder);
        }
    }
    if let Some(drops) = s["drops"].as_object().filter(|d| !d.is_empty()) {
        let list: Vec<String> = drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "dropped {}", list.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text status: per member, its paths with their share and congestion control,
    /// then its flows and spread counters, in the gateway's words.
    #[test]
    fn status_text_shows_each_members_paths_flows_and_spreading() {
        let s = serde_json::json!({
            "uptime_s": 60, "handshakes": 2, "cookies_sent": 0,
            "members": [
                {"name": "alice", "connected": true, "paths": [
                    {"path": 3, "state": "active", "endpoint": "198.51.100.7:40001",
                     "srtt_ms": 20.0, "rx_bytes": 6000, "rx_packets": 6,
                     "tx_bytes": 5000, "tx_packets": 5,
                     "send_rate_bps": 0, "send_share": null, "tx_share": 1.0,
                     "cc_state": "startup", "bandwidth_bps": 0,
                     "pacing_rate_bps": 1_000_000, "cwnd_bytes": 14000, "bytes_in_flight": 0},
                 ],
                 "flows": {
                    "live": 1,
                    "classes": {
                        "interactive": {"flows": 0, "mode": "redundant", "configured": "auto"},
                        "bulk": {"flows": 1, "mode": "packet", "configured": "auto"},
                        "default": {"flows": 0, "mode": "redundant", "configured": "redundant"},
                    },
                    "busiest": [
                        {"flow": "tcp 192.0.2.9:443 > 10.77.0.2:40000", "class": "bulk",
                         "mode": "packet", "rate_bps": 2_500_000, "path": null, "uplink": null},
                    ],
                 },
                 "spread": {"packets": 10, "duplicated_packets": 0, "duplicated_bytes": 0,
                            "redundancy_overhead_pct": 0.0, "repaired": 0},
                 "reorder": {"timeout_ms": 60.0, "skew_ms": 20.5, "held": 3,
                             "gaps_timed_out": 1, "late": 0}},
                {"name": "bob", "connected": false, "paths": [], "flows": {}, "spread": {}},
            ],
            "drops": {"no_member": 3},
        });
        assert_eq!(
            status_text(&s),
            "\
up 60 s  members 1/2 connected  handshakes 2  cookies sent 0
member alice connected
  path 3 active from 198.51.100.7:40001  rtt 20.0 ms  received 6000 B / 6 pkts  sent 5000 B / 5 pkts
    sends -, 100% in all  startup  bandwidth 0 kbit/s  pacing 1.0 Mbit/s  window 14000 B  in flight 0 B
  flows 1  interactive 0 redundant (auto)  bulk 1 packet (auto)  default 0 redundant
    tcp 192.0.2.9:443 > 10.77.0.2:40000  bulk packet  2.5 Mbit/s
  spread 10 pkts  duplicated 0 pkts / 0 B (0.0% overhead)  repaired 0
  reorder timeout 60 ms  skew 20.5 ms  held 3  gaps timed out 1  late 0
member bob offline
dropped no_member 3
"
        );
    }
}
