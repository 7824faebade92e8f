//! Topology descriptions: how many member routers, and what their links do.
//!
//! The shape of a co-op is fixed (see the crate docs); a topology file only says how many
//! routers there are and sets the parameters of each emulated link:
//!
//! ```toml
//! name = "coop3"
//!
//! [[router]]                      # r1; routers are numbered in file order
//! isp = { rate = "50mbit", delay = "10ms", jitter = "1ms", loss = "0%" }
//! mesh = { delay = "1ms" }        # its port on the community mesh segment
//! nat = false                     # true: behind a carrier NAT (the core rewrites its WAN addresses)
//! masquerade = true               # the router NATs its LAN out of its WAN, as OpenWrt does
//!
//! [proxy]
//! link = { delay = "5ms" }
//!
//! [internet]
//! link = { delay = "5ms" }
//! dns_name = "files.test"        # the internet host's name, with A and AAAA records
//! ```
//!
//! Link keys are those of [`LinkParams::set`] plus `up = false` for a link that starts down.
//! Sub-tables `upstream` and `downstream` override keys for one direction:
//! `isp = { rate = "16mbit", delay = "20ms", upstream = { rate = "2mbit" } }`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::Error;
use crate::params::{LinkParams, LinkSpec};

/// Most routers a topology may have (addresses are derived from the router's number).
pub const MAX_ROUTERS: usize = 50;

/// A parsed topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// A label for reports.
    pub name: String,
    /// Member routers, r1 first.
    pub routers: Vec<RouterSpec>,
    /// The proxy's link to the core.
    pub proxy_link: LinkSpec,
    /// The internet host's link to the core.
    pub internet_link: LinkSpec,
    /// DNS name of the internet host (A and AAAA records on its DNS server).
    pub dns_name: String,
}

/// One member router.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterSpec {
    /// Its ISP link (WAN to the core).
    pub isp: LinkSpec,
    /// Its port on the community mesh segment.
    pub mesh: LinkSpec,
    /// Behind a carrier NAT: the core rewrites the router's WAN source addresses.
    pub nat: bool,
    /// The router masquerades its LAN out of its WAN (OpenWrt's default).
    pub masquerade: bool,
}

impl Default for RouterSpec {
    fn default() -> Self {
        RouterSpec {
            isp: LinkSpec::default(),
            mesh: LinkSpec::default(),
            nat: false,
            masquerade: true,
        }
    }
}

type LinkTable = BTreeMap<String, toml::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    name: Option<String>,
    #[serde(default)]
    router: Vec<RouterFile>,
    proxy: Option<NodeFile>,
    internet: Option<InternetFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterFile {
    isp: Option<LinkTable>,
    mesh: Option<LinkTable>,
    #[serde(default)]
    nat: bool,
    #[serde(default = "yes")]
    masquerade: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    link: Option<LinkTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InternetFile {
    link: Option<LinkTable>,
    dns_name: Option<String>,
}

impl Topology {
    /// A co-op of `routers` members with ideal links (no delay, loss or rate limit).
    pub fn coop(routers: usize) -> Topology {
        Topology {
            name: format!("coop{routers}"),
            routers: vec![RouterSpec::default(); routers.clamp(1, MAX_ROUTERS)],
            proxy_link: LinkSpec::default(),
            internet_link: LinkSpec::default(),
            dns_name: "files.test".to_string(),
        }
    }

    /// Reads a topology file; errors name the file, the key and the reason.
    pub fn from_file(path: &Path) -> Result<Topology, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
        Topology::parse(&text, &path.display().to_string())
    }

    /// Parses topology text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, Error> {
        let file: TopologyFile =
            toml::from_str(text).map_err(|e| Error::new(format!("{origin}: {e}")))?;
        if file.router.is_empty() || file.router.len() > MAX_ROUTERS {
            return Err(Error::new(format!(
                "{origin}: `router`: need 1 to {MAX_ROUTERS} [[router]] entries, found {}",
                file.router.len()
            )));
        }
        let link = |table: &Option<LinkTable>, key: String| -> Result<LinkSpec, Error> {
            let base = link_params(table.iter().flatten(), LinkParams::default(), &key, origin)?;
            let mut spec = LinkSpec::both(base);
            for (direction, params) in [
                ("upstream", &mut spec.upstream),
                ("downstream", &mut spec.downstream),
            ] {
                if let Some(value) = table.as_ref().and_then(|t| t.get(direction)) {
                    let toml::Value::Table(sub) = value else {
                        return Err(Error::new(format!(
                            "{origin}: `{key}.{direction}`: expected a table, found {}",
                            value.type_str()
                        )));
                    };
                    *params = link_params(sub.iter(), base, &format!("{key}.{direction}"), origin)?;
                }
            }
            Ok(spec)
        };
        let mut routers = Vec::new();
        for (i, r) in file.router.iter().enumerate() {
            routers.push(RouterSpec {
                isp: link(&r.isp, format!("router[{i}].isp"))?,
                mesh: link(&r.mesh, format!("router[{i}].mesh"))?,
                nat: r.nat,
                masquerade: r.masquerade,
            });
        }
        let dns_name = file
            .internet
            .as_ref()
            .and_then(|i| i.dns_name.clone())
            .unwrap_or_else(|| "files.test".to_string());
        if dns_name.is_empty()
            || !dns_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(Error::new(format!(
                "{origin}: `internet.dns_name`: `{dns_name}` is not a DNS name"
            )));
        }
        Ok(Topology {
            name: file
                .name
                .unwrap_or_else(|| format!("coop{}", routers.len())),
            routers,
            proxy_link: link(&file.proxy.and_then(|p| p.link), "proxy.link".into())?,
            internet_link: link(&file.internet.and_then(|i| i.link), "internet.link".into())?,
            dns_name,
        })
    }
}

/// Applies the keys of a link table (except the direction sub-tables) to `params`.
fn link_params<'a>(
    entries: impl Iterator<Item = (&'a String, &'a toml::Value)>,
    mut params: LinkParams,
    key: &str,
    origin: &str,
) -> Result<LinkParams, Error> {
    for (name, value) in entries {
        let text = match value {
            // Direction sub-tables are read (and their type checked) by the caller.
            _ if name == "upstream" || name == "downstream" => continue,
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if name == "up" => {
                params.up = *b;
                continue;
            }
            other => {
                return Err(Error::new(format!(
                    "{origin}: `{key}.{name}`: expected a string, found {}",
                    other.type_str()
                )));
            }
        };
        params
            .set(name, &text)
            .map_err(|e| Error::new(format!("{origin}: `{key}`: {e}")))?;
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_the_shipped_coop3() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/coop3.toml");
        let t = Topology::from_file(&path).unwrap();
        assert_eq!(t.routers.len(), 3);
        assert_eq!(t.routers[0].isp.upstream.rate_bps, Some(50_000_000));
        assert_eq!(t.routers[0].isp.downstream.delay, Duration::from_millis(10));
        // r2 is an asymmetric DSL line.
        assert_eq!(t.routers[1].isp.downstream.rate_bps, Some(16_000_000));
        assert_eq!(t.routers[1].isp.upstream.rate_bps, Some(2_000_000));
        assert_eq!(t.routers[1].isp.upstream.delay, Duration::from_millis(20));
        assert!(!t.routers[2].nat && t.routers[2].masquerade);
    }

    #[test]
    fn errors_name_origin_key_and_reason() {
        let err = Topology::parse("[[router]]\nisp = { delay = \"20\" }\n", "t.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.toml") && msg.contains("router[0].isp") && msg.contains("no unit"),
            "{msg}"
        );

        let err = Topology::parse("[[router]]\ncolour = 1\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        let err = Topology::parse("name = \"x\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("router"), "{err}");

        let err =
            Topology::parse("[[router]]\nisp = { upstream = \"x\" }\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("isp.upstream") && err.to_string().contains("table"),
            "{err}"
        );

        let err = Topology::parse(
            "[[router]]\nisp = { upstream = { loss = \"2\" } }\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("router[0].isp.upstream"), "{err}");

        let err = Topology::parse("[[router]]\nisp = { delay = [1] }\n", "t.toml").unwrap_err();
        assert!(
            err.to_string().contains("isp.delay") && err.to_string().contains("array"),
            "{err}"
        );
    }
}
