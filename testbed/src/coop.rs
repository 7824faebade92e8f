//! A co-op built from a [`Topology`]: namespaces, links, addresses, routes, servers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::control::ControlServer;
use crate::emulator::{Emulator, Link};
use crate::params::LinkSpec;
use crate::process::Process;
use crate::servers::{self, HttpRequest, HttpServer, ServedFile};
use crate::topology::Topology;
use crate::{Error, netns};

/// Where run directories live (logs, served files, the control socket).
pub const RUN_ROOT: &str = "/run/linkpool-testbed";
/// Every namespace and run directory of the testbed starts with this.
pub const PREFIX_STEM: &str = "lpt";
/// Set to keep the run directory (logs) after teardown.
pub const KEEP_ENV: &str = "LINKPOOL_TESTBED_KEEP";
/// First iperf3 server port on the internet host (one server per router, plus one).
pub const IPERF3_PORT: u16 = 5201;

static NEXT_COOP: AtomicUsize = AtomicUsize::new(0);
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Prefixes of the co-ops alive in this process (for a panic hook that must clean up
/// even when unwinding is off).
pub fn live_prefixes() -> Vec<String> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// An interface with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// Device name inside the node's namespace.
    pub device: String,
    /// IPv4 address.
    pub v4: Ipv4Addr,
    /// IPv4 prefix length.
    pub v4_prefix: u8,
    /// IPv6 address.
    pub v6: Ipv6Addr,
    /// IPv6 prefix length.
    pub v6_prefix: u8,
}

impl Iface {
    fn new(device: &str, v4: &str, v4_prefix: u8, v6: &str, v6_prefix: u8) -> Iface {
        Iface {
            device: device.to_string(),
            v4: v4.parse().expect("address plan is valid"),
            v4_prefix,
            v6: v6.parse().expect("address plan is valid"),
            v6_prefix,
        }
    }
}

/// A node: a network namespace with a role.
#[derive(Clone, Debug)]
pub struct Node {
    role: String,
    ns: String,
    log_dir: PathBuf,
}

static NEXT_LOG: AtomicUsize = AtomicUsize::new(0);

impl Node {
    /// The role (`r1`, `c1`, `proxy`, `internet`, `core`, `mesh`, `emu`).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The namespace name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Runs `argv` in this node and waits for it.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, Error> {
        netns::ns_command(&self.ns, argv)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Error::new(format!(
                    "cannot run `{}` in {}: {e}",
                    argv.join(" "),
                    self.ns
                ))
            })
    }

    /// Runs `argv` in this node; returns stdout if it succeeded, else an error with stderr.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String, Error> {
        let out = self.exec(argv)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::new(format!(
                "`{}` in {} failed ({}): {}{}",
                argv.join(" "),
                self.role,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )))
        }
    }

    /// Starts `argv` in this node; output goes to a log file in the run directory. The
    /// process is killed when the handle is dropped (and at teardown in any case).
    pub fn spawn(&self, argv: &[&str]) -> Result<Process, Error> {
        let program = argv
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
        let log = self
            .log_dir
            .join(format!("{}-{program}-{n}.log", self.role));
        Process::spawn(&self.ns, argv, log)
    }
}

/// A member router: LAN bridge `br-lan` (with client port `lan1`), WAN `wan` (and `wan2`,
/// ... with several ISP links), mesh `mesh0`.
#[derive(Clone, Debug)]
pub struct Router {
    node: Node,
    index: usize,
    lan: Iface,
    /// Its WANs, one per ISP link, `wan` first.
    wans: Vec<Wan>,
    mesh: Iface,
}

/// One WAN of a router: its device (`wan`, `wan2`, ...) on its own emulated ISP link
/// (`rN-wan`, `rN-wan2`, ...) to its own device in the core (`rN`, `rNw2`, ...).
///
/// The first WAN holds the router's main default routes; WAN `k` ≥ 2 has default routes
/// of higher metric (so a socket bound to its device, `SO_BINDTODEVICE` or `ping -I wanK`,
/// goes out through it) and a policy route for its own source addresses (so a socket bound
/// to one of its addresses does too).
#[derive(Clone, Debug)]
pub struct Wan {
    number: usize,
    iface: Iface,
    gateway: (Ipv4Addr, Ipv6Addr),
    public: Option<(Ipv4Addr, Ipv6Addr)>,
    link: String,
    core_device: String,
}

impl Wan {
    /// Its number on the router (1 for `wan`, 2 for `wan2`, ...).
    pub fn number(&self) -> usize {
        self.number
    }
    /// Device name in the router (`wan`, `wan2`, ...).
    pub fn device(&self) -> &str {
        &self.iface.device
    }
    /// Its interface.
    pub fn iface(&self) -> &Iface {
        &self.iface
    }
    /// IPv4 address.
    pub fn addr_v4(&self) -> Ipv4Addr {
        self.iface.v4
    }
    /// IPv6 address.
    pub fn addr_v6(&self) -> Ipv6Addr {
        self.iface.v6
    }
    /// The ISP's next hop (the core) on this WAN, IPv4 and IPv6.
    pub fn gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.gateway
    }
    /// The addresses the Internet sees for this WAN (the carrier NAT's, behind one).
    pub fn public_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.public.unwrap_or((self.iface.v4, self.iface.v6))
    }
    /// Name of its emulated ISP link (`rN-wan`, `rN-wan2`, ...).
    pub fn link(&self) -> &str {
        &self.link
    }
    /// The core's device at the other end (`rN`, `rNw2`, ...).
    pub fn core_device(&self) -> &str {
        &self.core_device
    }
}

impl Deref for Router {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Router {
    /// Its number (1-based).
    pub fn index(&self) -> usize {
        self.index
    }
    /// Every WAN, one per ISP link: `wan` first, then `wan2`, ...
    pub fn wans(&self) -> &[Wan] {
        &self.wans
    }
    /// WAN `k` (1 for `wan`, 2 for `wan2`, ...). Panics if there is none (a bug in the test).
    pub fn wan_number(&self, k: usize) -> &Wan {
        assert!(
            k >= 1 && k <= self.wans.len(),
            "r{} has no WAN {k} (it has {})",
            self.index,
            self.wans.len()
        );
        &self.wans[k - 1]
    }
    fn first_wan(&self) -> &Wan {
        &self.wans[0]
    }
    /// (First) WAN device name (`wan`).
    pub fn wan_device(&self) -> &str {
        self.first_wan().device()
    }
    /// (First) WAN interface.
    pub fn wan(&self) -> &Iface {
        self.first_wan().iface()
    }
    /// (First) WAN IPv4 address.
    pub fn wan_addr_v4(&self) -> Ipv4Addr {
        self.first_wan().addr_v4()
    }
    /// (First) WAN IPv6 address.
    pub fn wan_addr_v6(&self) -> Ipv6Addr {
        self.first_wan().addr_v6()
    }
    /// The ISP's next hop (the core) on the (first) WAN, IPv4 and IPv6.
    pub fn wan_gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.first_wan().gateway()
    }
    /// The addresses the Internet sees for this router (through its first WAN): its WAN
    /// addresses, or the carrier NAT's when it is behind one.
    pub fn public_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.first_wan().public_addrs()
    }
    /// LAN bridge device name (`br-lan`).
    pub fn lan_device(&self) -> &str {
        &self.lan.device
    }
    /// LAN interface.
    pub fn lan(&self) -> &Iface {
        &self.lan
    }
    /// Mesh device name (`mesh0`).
    pub fn mesh_device(&self) -> &str {
        &self.mesh.device
    }
    /// Mesh interface.
    pub fn mesh(&self) -> &Iface {
        &self.mesh
    }
    /// Name of its (first) ISP link (`rN-wan`).
    pub fn wan_link(&self) -> String {
        self.first_wan().link.clone()
    }
    /// Names of all its ISP links (`rN-wan`, `rN-wan2`, ...).
    pub fn wan_links(&self) -> Vec<String> {
        self.wans.iter().map(|w| w.link.clone()).collect()
    }
    /// Name of its mesh link (`rN-mesh`).
    pub fn mesh_link(&self) -> String {
        format!("r{}-mesh", self.index)
    }
}

/// A host with one interface `eth0`: a LAN client, the proxy, or the internet host.
#[derive(Clone, Debug)]
pub struct Host {
    node: Node,
    iface: Iface,
    gateway: (Ipv4Addr, Ipv6Addr),
}

impl Deref for Host {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Host {
    /// Device name (`eth0`).
    pub fn device(&self) -> &str {
        &self.iface.device
    }
    /// Its interface.
    pub fn iface(&self) -> &Iface {
        &self.iface
    }
    /// IPv4 address.
    pub fn addr_v4(&self) -> Ipv4Addr {
        self.iface.v4
    }
    /// IPv6 address.
    pub fn addr_v6(&self) -> Ipv6Addr {
        self.iface.v6
    }
    /// Same as [`Host::device`], named for the proxy's point of view.
    pub fn wan_device(&self) -> &str {
        &self.iface.device
    }
    /// Same as [`Host::addr_v4`], named for the proxy's point of view.
    pub fn wan_addr_v4(&self) -> Ipv4Addr {
        self.iface.v4
    }
    /// Same as [`Host::addr_v6`], named for the proxy's point of view.
    pub fn wan_addr_v6(&self) -> Ipv6Addr {
        self.iface.v6
    }
    /// Its default gateways (IPv4, IPv6).
    pub fn gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.gateway
    }
}

/// The internet host with its servers.
pub struct Internet {
    host: Host,
    dns_name: String,
    iperf3_ports: Vec<u16>,
    www: PathBuf,
    http: Option<HttpServer>,
    processes: Vec<Process>,
}

impl Deref for Internet {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl Internet {
    /// Its DNS name (A and AAAA on its own DNS server, which listens on its addresses).
    pub fn dns_name(&self) -> &str {
        &self.dns_name
    }
    /// Ports of its iperf3 servers (one per router, plus one).
    pub fn iperf3_ports(&self) -> &[u16] {
        &self.iperf3_ports
    }
    /// Creates a file of `size` bytes of deterministic content for the HTTP server.
    pub fn serve_file(&self, name: &str, size: u64) -> Result<ServedFile, Error> {
        servers::generate_file(&self.www, name, size)
            .map_err(|e| Error::new(format!("serving file `{name}`: {e}")))
    }
    /// `http://ADDR/PATH` over IPv4.
    pub fn url_v4(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr_v4())
    }
    /// `http://[ADDR]/PATH` over IPv6.
    pub fn url_v6(&self, path: &str) -> String {
        format!("http://[{}]{path}", self.addr_v6())
    }
    /// `http://NAME/PATH` (needs the name resolved, e.g. through the node's resolv.conf).
    pub fn url_name(&self, path: &str) -> String {
        format!("http://{}{path}", self.dns_name)
    }
    /// Requests the HTTP server answered so far (who asked, what, how many bytes).
    pub fn http_requests(&self) -> Vec<HttpRequest> {
        self.http.as_ref().map(|h| h.requests()).unwrap_or_default()
    }
}

/// A running co-op. Everything it created is removed when it is dropped (also on panic).
pub struct Coop {
    prefix: String,
    run_dir: PathBuf,
    topology: Topology,
    namespaces: Vec<String>,
    routers: Vec<Router>,
    clients: Vec<Host>,
    proxy: Option<Host>,
    internet: Option<Internet>,
    attacker: Option<Host>,
    core: Option<Node>,
    mesh: Option<Node>,
    emu: Option<Node>,
    emulator: Option<Emulator>,
    links: BTreeMap<String, Link>,
    control: Option<ControlServer>,
    torn_down: bool,
}

/// Address plan; all inside our own namespaces (documentation and private ranges).
mod plan {
    use super::Iface;
    use std::net::{Ipv4Addr, Ipv6Addr};
    pub(super) fn lan_router(n: usize) -> Iface {
        Iface::new(
            "br-lan",
            &format!("192.168.{n}.1"),
            24,
            &format!("fd00:{n}::1"),
            64,
        )
    }
    pub(super) fn lan_client(n: usize) -> Iface {
        Iface::new(
            "eth0",
            &format!("192.168.{n}.100"),
            24,
            &format!("fd00:{n}::100"),
            64,
        )
    }
    /// WAN `k` (1-based) of router `n`: `wan`, `wan2`, ... in 100.(63+k).N.0/24 and
    /// 2001:db8:N:(k-1)::/64 (so the first WAN is 100.64.N.2, 2001:db8:N::2).
    pub(super) fn wan_router(n: usize, k: usize) -> Iface {
        let device = if k == 1 {
            "wan".to_string()
        } else {
            format!("wan{k}")
        };
        Iface::new(
            &device,
            &format!("100.{}.{n}.2", 63 + k),
            24,
            &format!("2001:db8:{n}:{:x}::2", k - 1),
            64,
        )
    }
    /// The core's end of WAN `k` of router `n`: `rN`, `rNw2`, ...
    pub(super) fn wan_core(n: usize, k: usize) -> Iface {
        let device = if k == 1 {
            format!("r{n}")
        } else {
            format!("r{n}w{k}")
        };
        Iface::new(
            &device,
            &format!("100.{}.{n}.1", 63 + k),
            24,
            &format!("2001:db8:{n}:{:x}::1", k - 1),
            64,
        )
    }
    /// Routing table and rule priority of the source policy route of WAN `k` ≥ 2 (below
    /// the gateway's own rules, which start at 7117).
    pub(super) fn wan_table(k: usize) -> u32 {
        1000 + k as u32
    }
    pub(super) fn mesh_router(n: usize) -> Iface {
        Iface::new(
            "mesh0",
            &format!("10.254.0.{n}"),
            24,
            &format!("fd00:fe::{n}"),
            64,
        )
    }
    /// The carrier NAT's public addresses for WAN `k` of router `n`; `generation` changes
    /// them. The first WAN's are 192.0.2.N (.N+100), later ones' 198.19.G.N.
    pub(super) fn nat_public(n: usize, k: usize, generation: usize) -> (Ipv4Addr, Ipv6Addr) {
        let g = generation % 2;
        let group = 2 * (k - 1) + g;
        let v4 = if k == 1 {
            format!("192.0.2.{}", n + 100 * g)
        } else {
            format!("198.19.{group}.{n}")
        };
        (
            v4.parse().expect("plan"),
            format!("2001:db8:ffff:{group:x}::{n}")
                .parse()
                .expect("plan"),
        )
    }
    pub(super) fn proxy() -> Iface {
        Iface::new("eth0", "203.0.113.10", 24, "2001:db8:ff00::10", 64)
    }
    pub(super) fn core_proxy() -> Iface {
        Iface::new("proxy", "203.0.113.1", 24, "2001:db8:ff00::1", 64)
    }
    pub(super) fn internet() -> Iface {
        Iface::new("eth0", "198.51.100.80", 24, "2001:db8:ff01::80", 64)
    }
    pub(super) fn core_internet() -> Iface {
        Iface::new("inet", "198.51.100.1", 24, "2001:db8:ff01::1", 64)
    }
    pub(super) fn attacker() -> Iface {
        Iface::new("eth0", "198.18.0.2", 24, "2001:db8:ff02::2", 64)
    }
    pub(super) fn proxy_attacker() -> Iface {
        Iface::new("atk0", "198.18.0.1", 24, "2001:db8:ff02::1", 64)
    }
}

const ROUTER_SYSCTLS: &[&str] = &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"];
const QUIET_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
];

impl Coop {
    /// Builds the co-op: namespaces `lpt<pid>-<n>-ROLE`, emulated links, addresses, routes,
    /// NAT, and the internet host's servers (HTTP, DNS, iperf3). Fails loudly when not root
    /// or when namespaces do not work; whatever was built is removed on failure.
    pub fn build(topology: &Topology) -> Result<Coop, Error> {
        netns::require_root()?;
        let prefix = format!(
            "{PREFIX_STEM}{}-{}",
            std::process::id(),
            NEXT_COOP.fetch_add(1, Ordering::Relaxed)
        );
        let run_dir = Path::new(RUN_ROOT).join(&prefix);
        for sub in ["logs", "www"] {
            std::fs::create_dir_all(run_dir.join(sub))
                .map_err(|e| Error::new(format!("{}: cannot create: {e}", run_dir.display())))?;
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.clone());
        let mut coop = Coop {
            prefix,
            run_dir,
            topology: topology.clone(),
            namespaces: Vec::new(),
            routers: Vec::new(),
            clients: Vec::new(),
            proxy: None,
            internet: None,
            attacker: None,
            core: None,
            mesh: None,
            emu: None,
            emulator: None,
            links: BTreeMap::new(),
            control: None,
            torn_down: false,
        };
        coop.construct()?;
        Ok(coop)
    }

    fn node(&mut self, role: &str, sysctls: &[&str]) -> Result<Node, Error> {
        let ns = format!("{}-{role}", self.prefix);
        netns::create(&ns).map_err(|e| {
            Error::new(format!(
                "cannot create network namespace {ns} (root? namespaces?): {e}"
            ))
        })?;
        self.namespaces.push(ns.clone());
        let mut args = vec![
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ];
        args.extend_from_slice(sysctls);
        netns::ns_run(&ns, &args)?;
        Ok(Node {
            role: role.to_string(),
            ns,
            log_dir: self.run_dir.join("logs"),
        })
    }

    fn construct(&mut self) -> Result<(), Error> {
        let topo = self.topology.clone();
        let emu = self.node("emu", QUIET_SYSCTLS)?;
        let core = self.node("core", ROUTER_SYSCTLS)?;
        let mesh = self.node("mesh", QUIET_SYSCTLS)?;
        let proxy = self.node("proxy", &[])?;
        let inet = self.node("internet", &[])?;
        self.emulator = Some(Emulator::new().map_err(|e| Error::new(format!("emulator: {e}")))?);
        self.emu = Some(emu.clone());

        ip(&[
            "-n",
            &mesh.ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &mesh.ns, "link", "set", "br0", "up"])?;

        let resolv = format!(
            "nameserver {}\nnameserver {}\n",
            plan::internet().v4,
            plan::internet().v6
        );
        for (i, spec) in topo.routers.iter().enumerate() {
            let n = i + 1;
            let r = self.node(&format!("r{n}"), ROUTER_SYSCTLS)?;
            let c = self.node(&format!("c{n}"), &[])?;
            // LAN: client eth0 <-> router lan1, enslaved to br-lan (as on OpenWrt).
            let (lan, client) = (plan::lan_router(n), plan::lan_client(n));
            ip(&["-n", &r.ns, "link", "add", "br-lan", "type", "bridge"])?;
            ip(&[
                "-n", &c.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "lan1",
                "netns", &r.ns,
            ])?;
            ip(&["-n", &r.ns, "link", "set", "lan1", "master", "br-lan", "up"])?;
            ip(&["-n", &r.ns, "link", "set", "br-lan", "up"])?;
            ip(&["-n", &c.ns, "link", "set", "eth0", "up"])?;
            add_addrs(&r.ns, &lan)?;
            add_addrs(&c.ns, &client)?;
            add_default_routes(&c.ns, (lan.v4, lan.v6))?;
            // WANs: router wan <-> emulator <-> core rN, wan2 <-> core rNw2, ...
            let mut wans = Vec::new();
            for (j, isp) in spec.isp_links().enumerate() {
                let k = j + 1;
                let (wan, core_side) = (plan::wan_router(n, k), plan::wan_core(n, k));
                let link = if k == 1 {
                    format!("r{n}-wan")
                } else {
                    format!("r{n}-wan{k}")
                };
                self.emulated_link(&link, (&r, &wan.device), (&core, &core_side.device), *isp)?;
                add_addrs(&r.ns, &wan)?;
                add_addrs(&core.ns, &core_side)?;
                let gateway = (core_side.v4, core_side.v6);
                if k == 1 {
                    add_default_routes(&r.ns, gateway)?;
                } else {
                    add_extra_wan_routes(&r.ns, k, &wan, gateway)?;
                }
                wans.push(Wan {
                    number: k,
                    iface: wan,
                    gateway,
                    public: None,
                    link,
                    core_device: core_side.device,
                });
            }
            // Mesh: router mesh0 <-> emulator <-> mesh bridge port rN.
            let mesh_if = plan::mesh_router(n);
            self.emulated_link(
                &format!("r{n}-mesh"),
                (&r, "mesh0"),
                (&mesh, &format!("r{n}")),
                spec.mesh,
            )?;
            ip(&[
                "-n",
                &mesh.ns,
                "link",
                "set",
                &format!("r{n}"),
                "master",
                "br0",
            ])?;
            add_addrs(&r.ns, &mesh_if)?;
            if spec.masquerade {
                let devices: Vec<String> =
                    wans.iter().map(|w| format!("\"{}\"", w.device())).collect();
                nft(
                    &r.ns,
                    &format!(
                        "table inet lpt_nat {{ chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; oifname {{ {} }} masquerade; }}; }}",
                        devices.join(", ")
                    ),
                )?;
            }
            if spec.nat {
                for w in &mut wans {
                    w.public = Some(plan::nat_public(n, w.number, 0));
                }
                set_carrier_nat(&core.ns, n, &wans)?;
            }
            for ns in [&r.ns, &c.ns] {
                write_resolv_conf(ns, &resolv)?;
            }
            self.routers.push(Router {
                node: r,
                index: n,
                lan,
                wans,
                mesh: mesh_if,
            });
            self.clients.push(Host {
                node: c,
                iface: client,
                gateway: (plan::lan_router(n).v4, plan::lan_router(n).v6),
            });
        }

        let (p, cp) = (plan::proxy(), plan::core_proxy());
        self.emulated_link(
            "proxy",
            (&proxy, &p.device),
            (&core, &cp.device),
            topo.proxy_link,
        )?;
        add_addrs(&proxy.ns, &p)?;
        add_addrs(&core.ns, &cp)?;
        add_default_routes(&proxy.ns, (cp.v4, cp.v6))?;
        write_resolv_conf(&proxy.ns, &resolv)?;
        self.proxy = Some(Host {
            node: proxy,
            iface: p,
            gateway: (cp.v4, cp.v6),
        });

        let (i, ci) = (plan::internet(), plan::core_internet());
        self.emulated_link(
            "internet",
            (&inet, &i.device),
            (&core, &ci.device),
            topo.internet_link,
        )?;
        add_addrs(&inet.ns, &i)?;
        add_addrs(&core.ns, &ci)?;
        add_default_routes(&inet.ns, (ci.v4, ci.v6))?;
        self.core = Some(core);
        self.mesh = Some(mesh);

        let www = self.run_dir.join("www");
        let http = HttpServer::start(&inet.ns, www.clone())
            .map_err(|e| Error::new(format!("HTTP server on the internet host: {e}")))?;
        let mut internet = Internet {
            host: Host {
                node: inet,
                iface: i.clone(),
                gateway: (ci.v4, ci.v6),
            },
            dns_name: topo.dns_name.clone(),
            iperf3_ports: (0..=topo.routers.len() as u16)
                .map(|k| IPERF3_PORT + k)
                .collect(),
            www,
            http: Some(http),
            processes: Vec::new(),
        };
        let host_record = format!("--host-record={},{},{}", topo.dns_name, i.v4, i.v6);
        let (listen4, listen6) = (
            format!("--listen-address={}", i.v4),
            format!("--listen-address={}", i.v6),
        );
        let dnsmasq = internet.spawn(&[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--group=root",
            "--pid-file",
            "--bind-interfaces",
            &listen4,
            &listen6,
            &host_record,
            "--log-facility=-",
            "--log-queries",
        ])?;
        internet.processes.push(dnsmasq);
        for port in internet.iperf3_ports.clone() {
            let p = internet.spawn(&["iperf3", "--server", "--port", &port.to_string()])?;
            internet.processes.push(p);
        }
        let mut wanted = vec![("tcp", 53), ("udp", 53), ("tcp", 80)];
        wanted.extend(internet.iperf3_ports.iter().map(|&p| ("tcp", p)));
        wait_listening(&internet, &wanted)?;
        self.internet = Some(internet);
        self.check_reachability()?;
        Ok(())
    }

    /// Creates `a.dev <-> emu <-> b.dev` with offloads off (whole frames, real checksums)
    /// and starts emulating it.
    fn emulated_link(
        &mut self,
        name: &str,
        a: (&Node, &str),
        b: (&Node, &str),
        spec: LinkSpec,
    ) -> Result<(), Error> {
        let emu = self.emu.as_ref().expect("emu namespace exists").ns.clone();
        let k = self.links.len();
        let (ea, eb) = (format!("e{k}a"), format!("e{k}b"));
        for ((node, dev), side) in [(a, &ea), (b, &eb)] {
            ip(&[
                "-n", &node.ns, "link", "add", dev, "mtu", "1500", "type", "veth", "peer", "name",
                side, "mtu", "1500", "netns", &emu,
            ])?;
            offloads_off(&node.ns, dev)?;
            offloads_off(&emu, side)?;
            ip(&["-n", &emu, "link", "set", side, "promisc", "on", "up"])?;
            ip(&["-n", &node.ns, "link", "set", dev, "up"])?;
        }
        let seed = name.bytes().fold(0x1234_5678u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(b as u64)
        });
        let link = self
            .emulator
            .as_mut()
            .expect("emulator exists")
            .add_link(name, &emu, &ea, &eb, spec, seed)
            .map_err(|e| Error::new(format!("emulating link {name}: {e}")))?;
        self.links.insert(name.to_string(), link);
        Ok(())
    }

    /// Pings the internet host from the proxy and every router (IPv4 and IPv6) over links
    /// that are up, so a broken build fails here rather than in a test.
    fn check_reachability(&self) -> Result<(), Error> {
        let inet = self.internet();
        let up = |name: &str| {
            self.links
                .get(name)
                .is_some_and(|l| l.spec().upstream.up && l.spec().downstream.up)
        };
        if !up("internet") {
            return Ok(());
        }
        // (node, the device to send from: the routes' choice, or one WAN of a router)
        let mut who: Vec<(&Node, Option<&str>)> = Vec::new();
        if up("proxy") {
            who.push((self.proxy(), None));
        }
        for r in &self.routers {
            for w in r.wans.iter().filter(|w| up(&w.link)) {
                who.push((r, Some(w.device())));
            }
        }
        for (node, device) in who {
            for addr in [inet.addr_v4().to_string(), inet.addr_v6().to_string()] {
                let mut argv = vec!["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "5"];
                if let Some(dev) = device {
                    argv.extend(["-I", dev]);
                }
                argv.push(&addr);
                node.exec_ok(&argv)
                    .map_err(|e| Error::new(format!("reachability check: {e}")))?;
            }
        }
        Ok(())
    }

    /// This run's prefix (`lpt<pid>-<n>`); every namespace name starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The run directory (logs, served files, control socket); removed at teardown unless
    /// `LINKPOOL_TESTBED_KEEP` is set.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    /// The topology it was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
    /// Router `n` (1-based). Panics if there is no such router (a bug in the test).
    pub fn router(&self, n: usize) -> &Router {
        assert!(
            n >= 1 && n <= self.routers.len(),
            "no router r{n} in this co-op"
        );
        &self.routers[n - 1]
    }
    /// All routers.
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }
    /// The LAN client of router `n` (1-based).
    pub fn client(&self, n: usize) -> &Host {
        assert!(
            n >= 1 && n <= self.clients.len(),
            "no client c{n} in this co-op"
        );
        &self.clients[n - 1]
    }
    /// The remote proxy's host.
    pub fn proxy(&self) -> &Host {
        self.proxy.as_ref().expect("built")
    }
    /// Adds (once) an attacker host for floods at the proxy (`linkpool_testbed::attack`):
    /// its `eth0` is wired straight to the proxy host's `atk0` by a plain veth pair, not
    /// an emulated link, so a flood costs the emulator nothing and meets the proxy, not
    /// the emulator's forwarding threads. Its default route leads to the proxy host only.
    pub fn add_attacker(&mut self) -> Result<&Host, Error> {
        if self.attacker.is_none() {
            let node = self.node("attacker", &[])?;
            let proxy = self.proxy().node.ns.clone();
            let (a, p) = (plan::attacker(), plan::proxy_attacker());
            ip(&[
                "-n", &node.ns, "link", "add", &a.device, "type", "veth", "peer", "name",
                &p.device, "netns", &proxy,
            ])?;
            for (ns, iface) in [(&node.ns, &a), (&proxy, &p)] {
                add_addrs(ns, iface)?;
                ip(&["-n", ns, "link", "set", &iface.device, "up"])?;
            }
            add_default_routes(&node.ns, (p.v4, p.v6))?;
            self.attacker = Some(Host {
                node,
                iface: a,
                gateway: (p.v4, p.v6),
            });
        }
        Ok(self.attacker.as_ref().expect("just added"))
    }
    /// The attacker host, if [`Coop::add_attacker`] added it.
    pub fn attacker(&self) -> Option<&Host> {
        self.attacker.as_ref()
    }
    /// The internet host.
    pub fn internet(&self) -> &Internet {
        self.internet.as_ref().expect("built")
    }
    /// The internet core that routes between the WANs, the proxy and the internet host.
    pub fn core(&self) -> &Node {
        self.core.as_ref().expect("built")
    }
    /// The namespace holding the mesh bridge `br0`.
    pub fn mesh_segment(&self) -> &Node {
        self.mesh.as_ref().expect("built")
    }
    /// An emulated link by name: `rN-wan`, `rN-mesh`, `proxy`, `internet`.
    pub fn link(&self, name: &str) -> Result<&Link, Error> {
        self.links.get(name).ok_or_else(|| {
            Error::new(format!(
                "no link `{name}` (links: {})",
                self.links.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
    /// All emulated links by name.
    pub fn links(&self) -> &BTreeMap<String, Link> {
        &self.links
    }
    /// A node by role: `rN`, `cN`, `proxy`, `internet`, `core`, `mesh`, `emu`.
    pub fn node_by_role(&self, role: &str) -> Option<&Node> {
        let role = match role {
            "inet" => "internet",
            other => other,
        };
        self.roles().into_iter().find(|n| n.role == role)
    }
    fn roles(&self) -> Vec<&Node> {
        let mut all: Vec<&Node> = Vec::new();
        for (r, c) in self.routers.iter().zip(&self.clients) {
            all.push(r);
            all.push(c);
        }
        all.extend(self.proxy.as_deref());
        all.extend(self.internet.as_ref().map(|i| &i.host.node));
        all.extend(self.attacker.as_deref());
        all.extend(self.core.as_ref());
        all.extend(self.mesh.as_ref());
        all.extend(self.emu.as_ref());
        all
    }

    /// Runs `argv` in namespace `ns` (any namespace name, e.g. `coop.client(1).ns()`).
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Result<Output, Error> {
        self.node_for_ns(ns)?.exec(argv)
    }

    /// Starts `argv` in namespace `ns`; see [`Node::spawn`].
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> Result<Process, Error> {
        self.node_for_ns(ns)?.spawn(argv)
    }

    fn node_for_ns(&self, ns: &str) -> Result<&Node, Error> {
        self.roles()
            .into_iter()
            .find(|n| n.ns == ns || n.role == ns)
            .ok_or_else(|| {
                Error::new(format!(
                    "no namespace or role `{ns}` in co-op {}",
                    self.prefix
                ))
            })
    }

    /// Writes `contents` to `RUN_DIR/relative` (creating directories) and returns the path;
    /// for configs and keys the daemons need.
    pub fn write_file(&self, relative: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf, Error> {
        if Path::new(relative)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::new(format!(
                "write_file: `{relative}` must be a plain relative path"
            )));
        }
        let path = self.run_dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::new(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        Ok(path)
    }

    /// Gives router `n`'s carrier NAT new public addresses (as when a CGNAT or mobile line
    /// is renumbered) and forgets its mappings, so the next packet of every flow, the
    /// tunnel's included, arrives from a new address: a roaming member. The router must be
    /// behind NAT (`nat = true`); every WAN it has is renumbered. Returns the new public
    /// addresses of its first WAN.
    pub fn rebind_nat(&mut self, n: usize) -> Result<(Ipv4Addr, Ipv6Addr), Error> {
        let mut router = self.router(n).clone();
        let Some(old) = router.first_wan().public else {
            return Err(Error::new(format!(
                "rebind_nat: r{n} is not behind a carrier NAT (set `nat = true`)"
            )));
        };
        let generation = if old == plan::nat_public(n, 1, 0) {
            1
        } else {
            0
        };
        for w in &mut router.wans {
            w.public = Some(plan::nat_public(n, w.number, generation));
        }
        let core = self.core().ns.clone();
        set_carrier_nat(&core, n, &router.wans)?;
        for w in &router.wans {
            for (family, addr) in [
                ("ipv4", w.iface.v4.to_string()),
                ("ipv6", w.iface.v6.to_string()),
            ] {
                // Exit status 1 just means there was no mapping to forget.
                let _ = self
                    .core()
                    .exec(&["conntrack", "-D", "-f", family, "-s", &addr]);
            }
        }
        let new = router.public_addrs();
        self.routers[n - 1] = router;
        Ok(new)
    }

    /// Starts the control socket (`RUN_DIR/control.sock`) that `linkpool-testbed link` and
    /// `exec` talk to.
    pub fn serve_control(&mut self) -> Result<PathBuf, Error> {
        let path = self.run_dir.join("control.sock");
        let roles = self
            .roles()
            .into_iter()
            .map(|n| (n.role.clone(), n.ns.clone()))
            .collect();
        self.control = Some(
            ControlServer::start(&path, self.links.clone(), roles, self.describe())
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?,
        );
        Ok(path)
    }

    /// A human-readable summary: nodes, devices, addresses, links.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "co-op `{}` (prefix {}, run dir {})",
            self.topology.name,
            self.prefix,
            self.run_dir.display()
        );
        let addr = |i: &Iface| {
            format!(
                "{} {}/{} {}/{}",
                i.device, i.v4, i.v4_prefix, i.v6, i.v6_prefix
            )
        };
        for (r, c) in self.routers.iter().zip(&self.clients) {
            let _ = writeln!(s, "  {:<9} ns {}", r.role, r.ns);
            for w in &r.wans {
                let _ = writeln!(
                    s,
                    "            {:<4} {}  via {} / {}  link {}",
                    if w.number == 1 {
                        "wan".to_string()
                    } else {
                        format!("wan{}", w.number)
                    },
                    addr(&w.iface),
                    w.gateway.0,
                    w.gateway.1,
                    w.link
                );
                if let Some((v4, v6)) = w.public {
                    let _ = writeln!(s, "            behind carrier NAT: seen as {v4} / {v6}");
                }
            }
            let _ = writeln!(s, "            lan  {}", addr(&r.lan));
            let _ = writeln!(s, "            mesh {}", addr(&r.mesh));
            let _ = writeln!(s, "  {:<9} ns {}  {}", c.role, c.ns, addr(&c.iface));
        }
        if let Some(p) = &self.proxy {
            let _ = writeln!(s, "  {:<9} ns {}  {}", "proxy", p.ns, addr(&p.iface));
        }
        if let Some(a) = &self.attacker {
            let _ = writeln!(s, "  {:<9} ns {}  {}", "attacker", a.ns, addr(&a.iface));
        }
        if let Some(i) = &self.internet {
            let _ = writeln!(s, "  {:<9} ns {}  {}", "internet", i.ns, addr(&i.iface));
            let _ = writeln!(
                s,
                "            http://{}/ (= {} / [{}]), /ip, /files/NAME; DNS {} (A, AAAA); iperf3 ports {:?}",
                i.dns_name,
                i.addr_v4(),
                i.addr_v6(),
                i.dns_name,
                i.iperf3_ports
            );
        }
        for n in [&self.core, &self.mesh, &self.emu].into_iter().flatten() {
            let _ = writeln!(s, "  {:<9} ns {}", n.role, n.ns);
        }
        let _ = writeln!(s, "links:");
        for (name, link) in &self.links {
            let _ = writeln!(s, "  {name:<9} {}", link.spec());
        }
        s
    }

    /// Removes everything now (also done on drop): processes in the namespaces, the
    /// emulator, the namespaces, and the run directory.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.control = None;
        if let Some(mut inet) = self.internet.take() {
            inet.http = None;
            for mut p in inet.processes.drain(..) {
                let _ = p.kill();
            }
        }
        for ns in &self.namespaces {
            netns::kill_all(ns);
        }
        if let Some(mut e) = self.emulator.take() {
            e.stop();
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = netns::destroy(ns) {
                eprintln!("linkpool-testbed: teardown: {e}");
            }
        }
        if std::env::var_os(KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.prefix);
    }
}

impl Drop for Coop {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn ip(args: &[&str]) -> Result<String, Error> {
    netns::ip(args)
}

fn add_addrs(ns: &str, iface: &Iface) -> Result<(), Error> {
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/{}", iface.v4, iface.v4_prefix),
        "dev",
        &iface.device,
    ])?;
    ip(&[
        "-n",
        ns,
        "-6",
        "addr",
        "add",
        &format!("{}/{}", iface.v6, iface.v6_prefix),
        "dev",
        &iface.device,
        "nodad",
    ])?;
    Ok(())
}

fn add_default_routes(ns: &str, via: (Ipv4Addr, Ipv6Addr)) -> Result<(), Error> {
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &via.0.to_string(),
    ])?;
    ip(&[
        "-n",
        ns,
        "-6",
        "route",
        "add",
        "default",
        "via",
        &via.1.to_string(),
    ])?;
    Ok(())
}

/// Routes of WAN `k` ≥ 2 of a router: default routes through it with a higher metric than
/// the first WAN's (a socket bound to the device uses them), and a policy route for its
/// own source addresses (a socket bound to one of them goes out through it too).
fn add_extra_wan_routes(
    ns: &str,
    k: usize,
    wan: &Iface,
    via: (Ipv4Addr, Ipv6Addr),
) -> Result<(), Error> {
    let metric4 = (100 * (k - 1)).to_string();
    let metric6 = (1024 + 100 * (k - 1)).to_string();
    let table = plan::wan_table(k).to_string();
    for (family, gateway, source, metric) in [
        ("-4", via.0.to_string(), wan.v4.to_string(), &metric4),
        ("-6", via.1.to_string(), wan.v6.to_string(), &metric6),
    ] {
        let dev = wan.device.as_str();
        ip(&[
            "-n", ns, family, "route", "add", "default", "via", &gateway, "dev", dev, "metric",
            metric,
        ])?;
        ip(&[
            "-n", ns, family, "route", "add", "default", "via", &gateway, "dev", dev, "table",
            &table,
        ])?;
        ip(&[
            "-n", ns, family, "rule", "add", "from", &source, "lookup", &table, "priority", &table,
        ])?;
    }
    Ok(())
}

fn offloads_off(ns: &str, dev: &str) -> Result<(), Error> {
    // Whole frames with real checksums: no GSO super-frames or partial checksums reach
    // the emulator's packet sockets.
    netns::ns_run(
        ns,
        &[
            "ethtool", "-K", dev, "rx", "off", "tx", "off", "tso", "off", "gso", "off", "gro",
            "off",
        ],
    )?;
    Ok(())
}

fn nft(ns: &str, ruleset: &str) -> Result<(), Error> {
    let out = netns::ns_command(ns, &["nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(ruleset.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| Error::new(format!("cannot run nft in {ns}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "nft in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Puts router `n` behind a carrier NAT in the core that rewrites each WAN's sources to
/// its `public` addresses (replacing an earlier one).
fn set_carrier_nat(core_ns: &str, n: usize, wans: &[Wan]) -> Result<(), Error> {
    let table = format!("lpt_cgnat_r{n}");
    // Deleting a table that does not exist yet fails; that is fine.
    let _ = netns::ns_run(core_ns, &["nft", "delete", "table", "inet", &table]);
    let mut rules = String::new();
    for w in wans {
        let (Some(public), dev) = (w.public, &w.core_device) else {
            continue;
        };
        let _ = write!(
            rules,
            "iifname \"{dev}\" oifname != \"{dev}\" ip saddr {} snat ip to {}; \
             iifname \"{dev}\" oifname != \"{dev}\" ip6 saddr {} snat ip6 to {}; ",
            w.iface.v4, public.0, w.iface.v6, public.1
        );
    }
    nft(
        core_ns,
        &format!(
            "table inet {table} {{ chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; \
             {rules}}}; }}"
        ),
    )
}

fn write_resolv_conf(ns: &str, text: &str) -> Result<(), Error> {
    let dir = Path::new(netns::NETNS_ETC_DIR).join(ns);
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("resolv.conf"), text))
        .map_err(|e| Error::new(format!("{}: {e}", dir.display())))
}

fn wait_listening(node: &Node, wanted: &[(&str, u16)]) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = node.exec_ok(&["ss", "-H", "-l", "-n", "-t", "-u"])?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(proto, port)| {
                !out.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first().is_some_and(|c| c == proto)
                        && cols
                            .get(4)
                            .is_some_and(|a| a.ends_with(&format!(":{port}")))
                })
            })
            .map(|(proto, port)| format!("{proto}/{port}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "servers on the internet host not listening after 10 s: {} (logs in {})",
                missing.join(", "),
                node.log_dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `cleanup` removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Processes killed inside them.
    pub processes: usize,
    /// Run directories removed.
    pub run_dirs: Vec<PathBuf>,
}

/// Removes testbed leftovers: namespaces, their processes, `/etc/netns` entries and run
/// directories of runs matching `prefix` (default `lpt`: all; `lpt<pid>`: that process's;
/// `lpt<pid>-<n>`: one run). Unless `include_live`, leftovers of a process that is still
/// running (this one included) are kept.
pub fn cleanup(prefix: Option<&str>, include_live: bool) -> Result<CleanupReport, Error> {
    netns::require_root()?;
    let prefix = prefix.unwrap_or(PREFIX_STEM);
    if !prefix.starts_with(PREFIX_STEM) {
        return Err(Error::new(format!(
            "cleanup: prefix `{prefix}` does not start with `{PREFIX_STEM}`"
        )));
    }
    // `lpt` matches every run; `lpt<pid>` or `lpt<pid>-<n>` match whole name components, so
    // `lpt12-1` does not take `lpt12-10` with it.
    let wanted = |name: &str| -> bool {
        let matches = if prefix == PREFIX_STEM {
            name.starts_with(prefix)
        } else {
            name == prefix || name.starts_with(&format!("{prefix}-"))
        };
        if !matches {
            return false;
        }
        if include_live {
            return true;
        }
        // lpt<pid>-<n>[-role]: keep it while <pid> runs.
        let pid: String = name[PREFIX_STEM.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        pid.is_empty() || !Path::new("/proc").join(&pid).exists()
    };
    let mut report = CleanupReport::default();
    let mut failures = Vec::new();
    for ns in netns::list().into_iter().filter(|n| wanted(n)) {
        report.processes += netns::pids(&ns).len();
        match netns::destroy(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(e) => failures.push(e.to_string()),
        }
    }
    for root in [Path::new(RUN_ROOT), Path::new(netns::NETNS_ETC_DIR)] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if wanted(&name)
                && std::fs::remove_dir_all(entry.path()).is_ok()
                && root == Path::new(RUN_ROOT)
            {
                report.run_dirs.push(entry.path());
            }
        }
    }
    report.namespaces.sort();
    if !failures.is_empty() {
        return Err(Error::new(format!("cleanup: {}", failures.join("; "))));
    }
    Ok(report)
}

/// Addresses of an interface as `IpAddr`s (v4 first).
pub fn addrs(iface: &Iface) -> [IpAddr; 2] {
    [IpAddr::V4(iface.v4), IpAddr::V6(iface.v6)]
}

#[cfg(test)]
mod tests {
    use super::plan;
    use std::collections::BTreeSet;

    #[test]
    fn the_first_wan_keeps_its_addresses_and_later_ones_get_their_own() {
        let wan = plan::wan_router(1, 1);
        assert_eq!(
            (wan.device.as_str(), wan.v4.to_string(), wan.v6.to_string()),
            ("wan", "100.64.1.2".into(), "2001:db8:1::2".into())
        );
        assert_eq!(plan::wan_core(1, 1).device, "r1");
        let wan2 = plan::wan_router(3, 2);
        assert_eq!(
            (
                wan2.device.as_str(),
                wan2.v4.to_string(),
                wan2.v6.to_string()
            ),
            ("wan2", "100.65.3.2".into(), "2001:db8:3:1::2".into())
        );
        let core2 = plan::wan_core(50, 8);
        assert_eq!(core2.device, "r50w8");
        assert!(core2.device.len() <= 15, "an interface name");
        assert_eq!(core2.v4.to_string(), "100.71.50.1");
        // Every WAN of every router, and every carrier-NAT address, is distinct.
        let max_k = crate::RouterSpec::MAX_ISP_LINKS;
        let mut seen = BTreeSet::new();
        for n in 1..=crate::MAX_ROUTERS {
            for k in 1..=max_k {
                for a in [plan::wan_router(n, k), plan::wan_core(n, k)] {
                    assert!(seen.insert(a.v4.to_string()) && seen.insert(a.v6.to_string()));
                }
                for g in 0..2 {
                    let (v4, v6) = plan::nat_public(n, k, g);
                    assert!(seen.insert(v4.to_string()) && seen.insert(v6.to_string()));
                }
            }
        }
        assert_eq!(plan::nat_public(7, 1, 0).0.to_string(), "192.0.2.7");
        assert_eq!(
            plan::nat_public(7, 1, 1).1.to_string(),
            "2001:db8:ffff:1::7"
        );
    }
}
