//! Resolving OpenWrt's logical networks (`lan`, `wan`) to Linux devices the way the init
//! script does, for commands run by hand (`linkpool check-config --uci FILE` without
//! `--resolve`): OpenWrt's own `network_get_device` from `/lib/functions/network.sh`,
//! which asks netifd for the network's layer-3 device.

use crate::uci::{self, UciValue};
use std::io;
use std::path::Path;
use std::process::Command;

/// OpenWrt's shell library the init script resolves networks with.
pub const NETWORK_SH: &str = "/lib/functions/network.sh";

/// The logical networks a UCI file names, as the init script collects them: the gateway
/// section's `lan_network` and `mesh_network` lists, then every uplink's `network`. A file
/// that does not parse names none (loading it reports the error).
pub fn uci_networks(text: &str) -> Vec<String> {
    let Ok(pkg) = uci::parse(text) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &UciValue| {
        let words: Vec<&str> = match v {
            UciValue::Single(s) => s.split_whitespace().collect(),
            UciValue::List(l) => l.iter().map(String::as_str).collect(),
        };
        for w in words {
            if !w.is_empty() && !out.iter().any(|o| o == w) {
                out.push(w.to_string());
            }
        }
    };
    if let Some(gw) = pkg.sections.iter().find(|s| s.kind == "gateway") {
        for name in ["lan_network", "mesh_network"] {
            if let Some(o) = gw.get(name) {
                add(&o.value);
            }
        }
    }
    for s in pkg.sections.iter().filter(|s| s.kind == "uplink") {
        if let Some(o) = s.get("network") {
            add(&o.value);
        }
    }
    out
}

/// Resolves `networks` with `network_get_device` from the shell library `script`
/// ([`NETWORK_SH`] on a router). Returns `(network, device)` for those that have a
/// device now; a network that is down is left out, as the init script leaves it out.
pub fn resolve_with(script: &Path, networks: &[String]) -> io::Result<Vec<(String, String)>> {
    if networks.is_empty() {
        return Ok(Vec::new());
    }
    // The names go in as arguments, never into the script text.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(
            r#". "$0" || exit 1
for n in "$@"; do
	d=""
	network_get_device d "$n" && [ -n "$d" ] && printf '%s=%s\n' "$n" "$d"
done
exit 0"#,
        )
        .arg(script)
        .args(networks)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} could not be loaded: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(n, d)| networks.iter().any(|x| x == n) && !d.is_empty())
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect())
}
