//! linkpool itself on a testbed co-op: the proxy and one gateway per router, configured
//! through the real command-line tools (`linkpool-proxy init`, `member add`) and run as
//! processes in their namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Coop, Error, Process, workspace_binary};

/// The proxy's UDP port in the testbed.
pub const PROXY_PORT: u16 = 7117;

/// Running daemons; killed when dropped (the co-op's teardown would too).
pub struct Pool {
    /// Where the configurations, bundles and control sockets are.
    pub dir: PathBuf,
    linkpool: PathBuf,
    proxy_bin: PathBuf,
    /// The proxy, while it runs.
    pub proxy: Option<Process>,
    /// One gateway per router, in router order.
    pub gateways: Vec<Process>,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn run(bin: &Path, args: &[&str]) -> Result<(), Error> {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| Error::new(format!("cannot run {}: {e}", bin.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{} {}: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether a gateway's `status --json` says `"connected": true`.
fn status_connected(json: &str) -> bool {
    json.split_once("\"connected\":")
        .is_some_and(|(_, rest)| rest.trim_start().starts_with("true"))
}

impl Pool {
    /// Configures and starts the proxy and every router's gateway, and waits until each
    /// gateway has a session with the proxy.
    pub fn start(coop: &Coop) -> Result<Pool, Error> {
        Pool::start_reporting(coop, |_| {})
    }

    /// [`Pool::start`], telling `say` what it started as it goes, one line each (the
    /// proxy's address, each gateway's time to its session and its uplinks); for the demo
    /// and `linkpool-testbed up --pool`. Returns once every gateway's status says it is
    /// connected.
    pub fn start_reporting(coop: &Coop, say: impl FnMut(&str)) -> Result<Pool, Error> {
        Pool::start_reporting_sharing(coop, false, say)
    }

    /// [`Pool::start_reporting`], every gateway on the mesh and lending its line to its
    /// neighbours when `sharing` says so.
    pub fn start_reporting_sharing(
        coop: &Coop,
        sharing: bool,
        say: impl FnMut(&str),
    ) -> Result<Pool, Error> {
        let all: Vec<usize> = coop.routers().iter().map(|r| r.index()).collect();
        let lenders = sharing.then_some(all.as_slice());
        let pool = Pool::configure_mesh(coop, lenders)?;
        pool.start_configured(coop, say)
    }

    /// [`Pool::start`] with every gateway on the mesh and the routers in `lenders` (by
    /// number) lending their lines; the others only borrow.
    pub fn start_lending(coop: &Coop, lenders: &[usize]) -> Result<Pool, Error> {
        Pool::configure_mesh(coop, Some(lenders))?.start_configured(coop, |_| {})
    }

    /// [`Pool::start_lending`] without starting anything: the configurations can be
    /// changed before [`Pool::start_all`].
    pub fn configure_lending(coop: &Coop, lenders: &[usize]) -> Result<Pool, Error> {
        Pool::configure_mesh(coop, Some(lenders))
    }

    /// Starts the proxy and every gateway of a configured pool, and waits until all are
    /// connected.
    pub fn start_all(self, coop: &Coop) -> Result<Pool, Error> {
        self.start_configured(coop, |_| {})
    }

    fn start_configured(self, coop: &Coop, mut say: impl FnMut(&str)) -> Result<Pool, Error> {
        let mut pool = self;
        pool.start_proxy(coop)?;
        say(&format!(
            "proxy up at {}:{PROXY_PORT} with {} member{} (pid {}; status: {} status -c {})",
            coop.proxy().addr_v4(),
            coop.routers().len(),
            if coop.routers().len() == 1 { "" } else { "s" },
            pool.proxy.as_ref().map_or(0, Process::pid),
            pool.proxy_bin.display(),
            pool.proxy_config().display()
        ));
        for r in coop.routers() {
            let n = r.index();
            let took = pool.start_gateway(coop, n)?;
            let uplinks: Vec<&str> = r.wans().iter().map(|w| w.device()).collect();
            say(&format!(
                "r{n}: session with the proxy after {:.0} ms (pid {}, uplinks {}; status: {} status --socket {})",
                took.as_secs_f64() * 1e3,
                pool.gateways.last().map_or(0, Process::pid),
                uplinks.join(", "),
                pool.linkpool.display(),
                pool.gateway_socket(n).display()
            ));
        }
        pool.wait_connected(coop, Duration::from_secs(10))?;
        Ok(pool)
    }

    /// Waits until the status of every running gateway says it is connected to the proxy.
    pub fn wait_connected(&self, coop: &Coop, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        for n in 1..=self.gateways.len() {
            loop {
                let status = self.gateway_status(coop, n, true);
                if let Ok(json) = &status {
                    if status_connected(json) {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::new(format!(
                        "r{n}'s gateway not connected after {timeout:?}; its status: {}",
                        match status {
                            Ok(json) => json,
                            Err(e) => e.to_string(),
                        }
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Writes the proxy configuration, one member per router and their gateway
    /// configurations, without starting anything.
    pub fn configure(coop: &Coop) -> Result<Pool, Error> {
        Pool::configure_sharing(coop, false)
    }

    /// [`Pool::start`] for a co-op whose members meet on the mesh and lend each other
    /// their lines: every gateway has the mesh device and shares its line.
    pub fn start_sharing(coop: &Coop) -> Result<Pool, Error> {
        Pool::start_reporting_sharing(coop, true, |_| {})
    }

    /// [`Pool::configure`], with every gateway on the mesh and sharing its line when
    /// `sharing` says so.
    pub fn configure_sharing(coop: &Coop, sharing: bool) -> Result<Pool, Error> {
        let all: Vec<usize> = coop.routers().iter().map(|r| r.index()).collect();
        Pool::configure_mesh(coop, sharing.then_some(all.as_slice()))
    }

    /// [`Pool::configure`]; with `lenders`, every gateway is on the mesh and those routers
    /// (by number) lend their lines.
    fn configure_mesh(coop: &Coop, lenders: Option<&[usize]>) -> Result<Pool, Error> {
        let dir = coop.run_dir().join("pool");
        std::fs::create_dir_all(&dir).map_err(|e| Error::new(format!("{}: {e}", dir.display())))?;
        let pool = Pool {
            linkpool: workspace_binary("linkpool")?,
            proxy_bin: workspace_binary("linkpool-proxy")?,
            dir,
            proxy: None,
            gateways: Vec::new(),
        };
        let conf = pool.proxy_config();
        let endpoint = format!("{}:{PROXY_PORT}", coop.proxy().addr_v4());
        run(
            &pool.proxy_bin,
            &["init", "-c", s(&conf), "--endpoint", &endpoint],
        )?;
        // Keep the control socket in the run directory, not the system's /var/run.
        let text = std::fs::read_to_string(&conf)
            .map_err(|e| Error::new(format!("{}: {e}", conf.display())))?
            .replace(
                "/var/run/linkpool-proxy.sock",
                s(&pool.dir.join("proxy.sock")),
            );
        std::fs::write(&conf, text).map_err(|e| Error::new(format!("{}: {e}", conf.display())))?;
        for r in coop.routers() {
            let name = Pool::member_name(r.index());
            let bundle = pool.dir.join(format!("{name}.bundle"));
            run(
                &pool.proxy_bin,
                &["member", "add", &name, "-c", s(&conf), "--out", s(&bundle)],
            )?;
            let mut gw = format!(
                "bundle_file = {bundle:?}\nlog_level = \"debug\"\ncontrol_socket = {sock:?}\n\
                 state_file = {state:?}\n\n\
                 [tunnel]\nlan_devices = [{lan:?}]\n",
                sock = pool.gateway_socket(r.index()),
                state = pool.dir.join(format!("{name}.state")),
                lan = r.lan_device(),
            );
            if let Some(lenders) = lenders {
                gw += &format!(
                    "mesh_devices = [{mesh:?}]\n\n[sharing]\nenabled = {lends}\n",
                    mesh = r.mesh_device(),
                    lends = lenders.contains(&r.index())
                );
            }
            // One uplink per WAN device, named after it (`wan`, `wan2`, ...).
            for w in r.wans() {
                gw += &format!(
                    "\n[[uplink]]\nname = {dev:?}\ndevice = {dev:?}\n",
                    dev = w.device()
                );
            }
            let path = pool.gateway_config(r.index());
            std::fs::write(&path, gw)
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        }
        Ok(pool)
    }

    /// `linkpool-proxy member add NAME` on the proxy's configuration, as an admin would
    /// while the proxy runs; returns the bundle's path (`NAME.bundle` in `dir`).
    pub fn add_member(&self, name: &str) -> Result<PathBuf, Error> {
        let bundle = self.dir.join(format!("{name}.bundle"));
        let conf = self.proxy_config();
        run(
            &self.proxy_bin,
            &["member", "add", name, "-c", s(&conf), "--out", s(&bundle)],
        )?;
        Ok(bundle)
    }

    /// `linkpool-proxy member remove NAME` on the proxy's configuration.
    pub fn remove_member(&self, name: &str) -> Result<(), Error> {
        let conf = self.proxy_config();
        run(&self.proxy_bin, &["member", "remove", name, "-c", s(&conf)])
    }

    /// Points router `n`'s gateway configuration at another bundle (takes effect when the
    /// gateway starts or reloads).
    pub fn give_bundle(&self, n: usize, bundle: &Path) -> Result<(), Error> {
        let conf = self.gateway_config(n);
        let text = std::fs::read_to_string(&conf)
            .map_err(|e| Error::new(format!("{}: {e}", conf.display())))?;
        let Some(line) = text.lines().find(|l| l.starts_with("bundle_file = ")) else {
            return Err(Error::new(format!("{}: no bundle_file", conf.display())));
        };
        let text = text.replacen(line, &format!("bundle_file = {bundle:?}"), 1);
        std::fs::write(&conf, text).map_err(|e| Error::new(format!("{}: {e}", conf.display())))
    }

    /// The member name of router `n`.
    pub fn member_name(n: usize) -> String {
        format!("member{n}")
    }

    /// The proxy's configuration file.
    pub fn proxy_config(&self) -> PathBuf {
        self.dir.join("proxy.toml")
    }

    /// Router `n`'s gateway configuration file.
    pub fn gateway_config(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.toml", Pool::member_name(n)))
    }

    /// Router `n`'s gateway control socket.
    pub fn gateway_socket(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", Pool::member_name(n)))
    }

    /// The `linkpool` binary in use.
    pub fn linkpool_bin(&self) -> &Path {
        &self.linkpool
    }

    /// The `linkpool-proxy` binary in use.
    pub fn proxy_bin(&self) -> &Path {
        &self.proxy_bin
    }

    /// Starts the proxy and waits until it listens.
    pub fn start_proxy(&mut self, coop: &Coop) -> Result<(), Error> {
        let conf = self.proxy_config();
        let mut p = coop
            .proxy()
            .spawn(&[s(&self.proxy_bin), "run", "-c", s(&conf)])?;
        p.wait_for_log("sockets set up", Duration::from_secs(10))?;
        self.proxy = Some(p);
        Ok(())
    }

    /// Starts router `n`'s gateway and waits for its session; returns how long that took.
    pub fn start_gateway(&mut self, coop: &Coop, n: usize) -> Result<Duration, Error> {
        let conf = self.gateway_config(n);
        let started = Instant::now();
        let mut gw = coop
            .router(n)
            .spawn(&[s(&self.linkpool), "run", "-c", s(&conf)])?;
        gw.wait_for_log(
            "session with the proxy established",
            Duration::from_secs(20),
        )?;
        self.gateways.push(gw);
        Ok(started.elapsed())
    }

    /// `linkpool status` of router `n`'s gateway (text, or JSON).
    pub fn gateway_status(&self, coop: &Coop, n: usize, json: bool) -> Result<String, Error> {
        let sock = self.gateway_socket(n);
        let mut argv = vec![s(&self.linkpool), "status", "--socket", s(&sock)];
        if json {
            argv.push("--json");
        }
        coop.router(n).exec_ok(&argv)
    }

    /// `linkpool-proxy status` (text, or JSON).
    pub fn proxy_status(&self, coop: &Coop, json: bool) -> Result<String, Error> {
        let conf = self.proxy_config();
        let mut argv = vec![s(&self.proxy_bin), "status", "-c", s(&conf)];
        if json {
            argv.push("--json");
        }
        coop.proxy().exec_ok(&argv)
    }

    /// The proxy's ledger (`linkpool-proxy ledger --json`, with `args` added), parsed.
    pub fn ledger(&self, coop: &Coop, args: &[&str]) -> Result<serde_json::Value, Error> {
        let conf = self.proxy_config();
        let mut argv = vec![s(&self.proxy_bin), "ledger", "-c", s(&conf), "--json"];
        argv.extend_from_slice(args);
        let text = coop.proxy().exec_ok(&argv)?;
        serde_json::from_str(&text).map_err(|e| Error::new(format!("ledger --json: {e}: {text}")))
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Some(p) = &self.proxy {
            all += &format!("--- proxy\n{}\n", p.log());
        }
        for (i, g) in self.gateways.iter().enumerate() {
            all += &format!("--- gateway {}\n{}\n", i + 1, g.log());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_connected_from_a_gateway_status() {
        assert!(status_connected(
            r#"{"member":"member1","connected":true,"proxy":"203.0.113.10:7117"}"#
        ));
        assert!(status_connected("{\"connected\": true}"));
        assert!(!status_connected(r#"{"member":"m","connected":false}"#));
        assert!(!status_connected(r#"{"member":"m"}"#));
    }
}
