//! Policy routing and nftables set-up of both daemons, and its complete removal.
//!
//! Each set-up first runs its own teardown (so the leftovers of a crash are cleared),
//! then adds what it needs. Teardown removes only what is ours: the ip rules at our
//! priorities, our routing table, our nftables table, and sysctls we changed ourselves.

use crate::cmd::{OsError, ip, nft_script};
use std::net::{Ipv4Addr, Ipv6Addr};
use tracing::warn;

/// Name of the gateway's nftables table (family `inet`).
pub const GATEWAY_NFT_TABLE: &str = "linkpool";
/// Name of the proxy's nftables table (family `inet`).
pub const PROXY_NFT_TABLE: &str = "linkpool_proxy";
/// How many consecutive ip rule priorities the gateway uses, from `rule_priority` on.
pub const GATEWAY_RULE_COUNT: u32 = 3;

/// TCP MSS that fits a packet of `mtu` bytes (IPv4: 20 + 20 header bytes; IPv6: 40 + 20).
fn mss(mtu: u16, ipv6: bool) -> u16 {
    mtu.saturating_sub(if ipv6 { 60 } else { 40 })
}

/// The forward chain both daemons use: SYNs into the tunnel get the route's MSS, SYNs out
/// of it at most what fits the tunnel MTU. (Path MTU discovery alone is not enough: ICMP
/// does not always get through.)
fn mss_clamp_chain(tun: &str, mtu: u16) -> String {
    let (m4, m6) = (mss(mtu, false), mss(mtu, true));
    format!(
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority mangle; policy accept;\n\
         \t\toifname \"{tun}\" tcp flags syn tcp option maxseg size set rt mtu\n\
         \t\tiifname \"{tun}\" meta nfproto ipv4 tcp flags syn tcp option maxseg size > {m4} tcp option maxseg size set {m4}\n\
         \t\tiifname \"{tun}\" meta nfproto ipv6 tcp flags syn tcp option maxseg size > {m6} tcp option maxseg size set {m6}\n\
         \t}}\n"
    )
}

/// Replaces the whole nftables table `name` with `body` in one transaction, or only removes
/// it when `body` is `None`. (`table X` before `delete table X` makes the delete succeed
/// whether or not the table existed.)
fn replace_nft_table(name: &str, body: Option<&str>) -> Result<(), OsError> {
    let mut script = format!("table inet {name}\ndelete table inet {name}\n");
    if let Some(body) = body {
        script.push_str(&format!("table inet {name} {{\n{body}}}\n"));
    }
    nft_script(&script)
}

/// Removes every ip rule at priority `pref` for one family (there is one per LAN device).
fn delete_rules_at(family: &str, pref: u32) -> Result<(), OsError> {
    let p = pref.to_string();
    // A bounded loop: `ip rule del pref N` removes one rule at a time.
    for _ in 0..256 {
        let listed = ip(&[family, "rule", "show", "pref", &p])?;
        if listed.trim().is_empty() {
            return Ok(());
        }
        ip(&[family, "rule", "del", "pref", &p])?;
    }
    Err(OsError::Command {
        command: format!("ip {family} rule del pref {p}"),
        message: "rules keep reappearing".into(),
    })
}

/// What the gateway steers into its TUN device, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRouting {
    /// The TUN device.
    pub tun_device: String,
    /// The tunnel MTU (for MSS clamping of packets coming out of the tunnel).
    pub mtu: u16,
    /// Routing table holding the default routes via the TUN.
    pub table: u32,
    /// First of [`GATEWAY_RULE_COUNT`] consecutive rule priorities.
    pub rule_priority: u32,
    /// Mark of our own uplink sockets.
    pub fwmark: u32,
    /// Devices whose incoming traffic goes into the pool.
    pub lan_devices: Vec<String>,
    /// Whether to steer IPv6 too (the member has a tunnel IPv6 address).
    pub ipv6: bool,
}

impl GatewayRouting {
    /// The nftables table body: masquerade out of the TUN to the tunnel address, and clamp
    /// TCP MSS to the tunnel MTU in both directions.
    pub fn nft_body(&self) -> String {
        let tun = &self.tun_device;
        let clamp = mss_clamp_chain(tun, self.mtu);
        format!(
            "\tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"{tun}\" masquerade\n\
             \t}}\n\
             {clamp}"
        )
    }

    fn families(&self) -> &'static [&'static str] {
        if self.ipv6 { &["-4", "-6"] } else { &["-4"] }
    }

    /// Sets everything up (after clearing leftovers). The TUN device must exist and be up.
    /// On error, whatever was added is removed again. A leftover nftables table is replaced
    /// in one transaction, never removed first on its own (see [`ProxyNat::apply`]: a
    /// namespace left without NAT switches connection tracking off, and established flows
    /// lose their state).
    pub fn apply(&self) -> Result<(), OsError> {
        self.remove_rules_and_routes()?;
        let result = self.add();
        if result.is_err() {
            if let Err(e) = self.teardown() {
                warn!("cleaning up after a failed routing set-up: {e}");
            }
        }
        result
    }

    fn add(&self) -> Result<(), OsError> {
        let table = self.table.to_string();
        let mark = format!("{:#x}", self.fwmark);
        let p = |i: u32| (self.rule_priority + i).to_string();
        for &fam in self.families() {
            ip(&[
                fam,
                "route",
                "replace",
                "default",
                "dev",
                &self.tun_device,
                "table",
                &table,
            ])?;
            // (a) Our own sockets never re-enter the tunnel.
            ip(&[
                fam,
                "rule",
                "add",
                "pref",
                &p(0),
                "fwmark",
                &mark,
                "lookup",
                "main",
            ])?;
            for lan in &self.lan_devices {
                // (b) LAN, mesh and local routes of the main table win over the pool...
                ip(&[
                    fam,
                    "rule",
                    "add",
                    "pref",
                    &p(1),
                    "iif",
                    lan,
                    "lookup",
                    "main",
                    "suppress_prefixlength",
                    "0",
                ])?;
                // (c) ...and everything else from the LAN goes into the pool.
                ip(&[
                    fam,
                    "rule",
                    "add",
                    "pref",
                    &p(2),
                    "iif",
                    lan,
                    "lookup",
                    &table,
                ])?;
            }
        }
        replace_nft_table(GATEWAY_NFT_TABLE, Some(&self.nft_body()))
    }

    /// Removes our rules, table and nftables table. Idempotent; IPv6 is cleared even when
    /// this configuration does not use it (a previous one may have).
    pub fn teardown(&self) -> Result<(), OsError> {
        self.remove_rules_and_routes()?;
        replace_nft_table(GATEWAY_NFT_TABLE, None)
    }

    fn remove_rules_and_routes(&self) -> Result<(), OsError> {
        let table = self.table.to_string();
        for fam in ["-4", "-6"] {
            if fam == "-6" && !ipv6_available() {
                continue;
            }
            for i in 0..GATEWAY_RULE_COUNT {
                delete_rules_at(fam, self.rule_priority + i)?;
            }
            match ip(&[fam, "route", "flush", "table", &table]) {
                // The kernel drops an empty table; nothing to flush then.
                Err(OsError::Command { message, .. })
                    if message.contains("table does not exist") => {}
                r => drop(r?),
            }
        }
        Ok(())
    }
}

fn ipv6_available() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

/// The proxy's NAT: traffic from the member pools leaves for the world masqueraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyNat {
    /// The TUN device (its addresses route the pools).
    pub tun_device: String,
    /// The tunnel MTU (for MSS clamping of packets coming out of the tunnel).
    pub mtu: u16,
    /// The member IPv4 pool.
    pub ipv4_pool: (Ipv4Addr, u8),
    /// The member IPv6 pool, if any.
    pub ipv6_pool: Option<(Ipv6Addr, u8)>,
    /// Masquerade only out of this device; `None` = any device but the TUN.
    pub egress_device: Option<String>,
}

/// Sysctls the proxy turns on, and what they were before.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ForwardingState {
    changed: Vec<(&'static str, String)>,
}

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

impl ProxyNat {
    /// The nftables table body.
    pub fn nft_body(&self) -> String {
        let tun = &self.tun_device;
        let out = match &self.egress_device {
            Some(dev) => format!("oifname \"{dev}\""),
            None => format!("oifname != \"{tun}\""),
        };
        let (v4, p4) = self.ipv4_pool;
        let mut nat = format!("\t\tip saddr {v4}/{p4} {out} masquerade\n");
        if let Some((v6, p6)) = self.ipv6_pool {
            nat.push_str(&format!("\t\tip6 saddr {v6}/{p6} {out} masquerade\n"));
        }
        // Replies for the pools go only into the tunnel: while the proxy is down (a crash,
        // this table left in place) they would otherwise follow the default route out,
        // addressed to private tunnel addresses.
        let mut guard = format!("\t\tip daddr {v4}/{p4} oifname != \"{tun}\" counter drop\n");
        if let Some((v6, p6)) = self.ipv6_pool {
            guard.push_str(&format!(
                "\t\tip6 daddr {v6}/{p6} oifname != \"{tun}\" counter drop\n"
            ));
        }
        let clamp = mss_clamp_chain(tun, self.mtu);
        format!(
            "\tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             {nat}\
             \t}}\n\
             \tchain pool_guard {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             {guard}\
             \t}}\n\
             {clamp}"
        )
    }

    /// Turns forwarding on and installs the NAT table, replacing a leftover one (a crash)
    /// in the same transaction. Returns what forwarding was before, for
    /// [`ProxyNat::teardown`].
    ///
    /// The leftover table is never removed first on its own: with no NAT chain between two
    /// transactions, nothing in the namespace may need connection tracking, the kernel
    /// switches it off, and flows that were established across the gap lose their TCP
    /// window state. The members' next ACKs are then out of window for conntrack
    /// ("ACKed data not seen yet"), INVALID, leave without masquerade, and the flows never
    /// resume (a download through a proxy killed and restarted stayed at 0 bit/s).
    pub fn apply(&self) -> Result<ForwardingState, OsError> {
        let mut state = ForwardingState::default();
        let mut sysctls = vec![IPV4_FORWARD];
        if self.ipv6_pool.is_some() {
            sysctls.push(IPV6_FORWARD);
        }
        for path in sysctls {
            let before = std::fs::read_to_string(path)
                .map_err(|e| OsError::io(format!("reading {path}"), e))?;
            if before.trim() != "1" {
                std::fs::write(path, "1\n")
                    .map_err(|e| OsError::io(format!("writing {path}"), e))?;
                state.changed.push((path, before.trim().to_string()));
            }
        }
        if let Err(e) = replace_nft_table(PROXY_NFT_TABLE, Some(&self.nft_body())) {
            let _ = self.teardown(&state);
            return Err(e);
        }
        Ok(state)
    }

    /// Removes the NAT table and restores the forwarding sysctls we changed. Idempotent.
    pub fn teardown(&self, state: &ForwardingState) -> Result<(), OsError> {
        for (path, before) in &state.changed {
            std::fs::write(path, format!("{before}\n"))
                .map_err(|e| OsError::io(format!("restoring {path}"), e))?;
        }
        replace_nft_table(PROXY_NFT_TABLE, None)
    }
}
