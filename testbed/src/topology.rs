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
//!
//! A router with several ISP links (a second line, an LTE stick) gives an array of link
//! tables; each is emulated on its own and has its own WAN device (`wan`, `wan2`, ...) and
//! link name (`rN-wan`, `rN-wan2`, ...):
//!
//! ```toml
//! [[router]]
//! isp = [ { rate = "20mbit", delay = "10ms" }, { rate = "10mbit", delay = "30ms" } ]
//! ```

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
    /// Its (first) ISP link: WAN device `wan` to the core, link `rN-wan`.
    pub isp: LinkSpec,
    /// Its further ISP links, if any: WAN devices `wan2`, `wan3`, ..., links `rN-wan2`, ...
    /// (at most [`RouterSpec::MAX_ISP_LINKS`] links in all).
    pub extra_isp: Vec<LinkSpec>,
    /// Its port on the community mesh segment.
    pub mesh: LinkSpec,
    /// Behind a carrier NAT: the core rewrites the router's WAN source addresses.
    pub nat: bool,
    /// The router masquerades its LAN out of its WAN (OpenWrt's default).
    pub masquerade: bool,
}

impl RouterSpec {
    /// Most ISP links a router may have (each gets its own address range).
    pub const MAX_ISP_LINKS: usize = 8;

    /// Every ISP link, `wan`'s first.
    pub fn isp_links(&self) -> impl Iterator<Item = &LinkSpec> {
        std::iter::once(&self.isp).chain(&self.extra_isp)
    }
}

impl Default for RouterSpec {
    fn default() -> Self {
        RouterSpec {
            isp: LinkSpec::default(),
            extra_isp: Vec::new(),
            mesh: LinkSpec::default(),
            nat: false,
            masquerade: true,
        }
    }
}

pub(crate) type LinkTable = BTreeMap<String, toml::Value>;

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
    /// One link table, or an array of them.
    isp: Option<toml::Value>,
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
            link_spec(table.as_ref(), &key, origin)
        };
        let mut routers = Vec::new();
        for (i, r) in file.router.iter().enumerate() {
            let key = format!("router[{i}].isp");
            // One table, or an array of tables (`router[0].isp[1]` in errors).
            let tables: Vec<(Option<LinkTable>, String)> = match &r.isp {
                None => vec![(None, key)],
                Some(toml::Value::Table(t)) => vec![(Some(t.clone().into_iter().collect()), key)],
                Some(toml::Value::Array(items)) => {
                    if items.is_empty() || items.len() > RouterSpec::MAX_ISP_LINKS {
                        return Err(Error::new(format!(
                            "{origin}: `{key}`: need 1 to {} ISP links, found {}",
                            RouterSpec::MAX_ISP_LINKS,
                            items.len()
                        )));
                    }
                    let mut tables = Vec::new();
                    for (k, item) in items.iter().enumerate() {
                        let toml::Value::Table(t) = item else {
                            return Err(Error::new(format!(
                                "{origin}: `{key}[{k}]`: expected a link table, found {}",
                                item.type_str()
                            )));
                        };
                        tables.push((Some(t.clone().into_iter().collect()), format!("{key}[{k}]")));
                    }
                    tables
                }
                Some(other) => {
                    return Err(Error::new(format!(
                        "{origin}: `{key}`: expected a link table or an array of them, found {}",
                        other.type_str()
                    )));
                }
            };
            let mut isps = tables
                .into_iter()
                .map(|(table, key)| link(&table, key))
                .collect::<Result<Vec<_>, Error>>()?;
            let isp = isps.remove(0);
            routers.push(RouterSpec {
                isp,
                extra_isp: isps,
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

/// A link table (`{ rate = "20mbit", delay = "10ms", upstream = { rate = "2mbit" } }`, or
/// none: an ideal link) as a [`LinkSpec`]; errors name `origin` and `key` (for scenario
/// files too, [`crate::scenario`]).
pub(crate) fn link_spec(
    table: Option<&LinkTable>,
    key: &str,
    origin: &str,
) -> Result<LinkSpec, Error> {
    let base = link_params(
        table.into_iter().flatten(),
        LinkParams::default(),
        key,
        origin,
    )?;
    let mut spec = LinkSpec::both(base);
    for (direction, params) in [
        ("upstream", &mut spec.upstream),
        ("downstream", &mut spec.downstream),
    ] {
        if let Some(value) = table.and_then(|t| t.get(direction)) {
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
        params.set(name, &text).map_err(|e| {
            // `delay`: no unit ... -> `router[0].isp[1].delay`: no unit ...
            match e.strip_prefix(&format!("`{name}`: ")) {
                Some(why) => Error::new(format!("{origin}: `{key}.{name}`: {why}")),
                None => Error::new(format!("{origin}: `{key}`: {e}")),
            }
        })?;
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
        // r2 also has an LTE line, for the demo's pooling.
        let extra: Vec<usize> = t.routers.iter().map(|r| r.extra_isp.len()).collect();
        assert_eq!(extra, [0, 1, 0]);
        assert_eq!(
            t.routers[1].extra_isp[0].downstream.rate_bps,
            Some(10_000_000)
        );
    }

    #[test]
    fn parses_the_shipped_twowan() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/twowan.toml");
        let t = Topology::from_file(&path).unwrap();
        assert_eq!(t.routers.len(), 1);
        let links: Vec<&LinkSpec> = t.routers[0].isp_links().collect();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].upstream.rate_bps, Some(20_000_000));
        assert_eq!(links[0].downstream.delay, Duration::from_millis(10));
        assert_eq!(links[1].downstream.rate_bps, Some(10_000_000));
        assert_eq!(links[1].upstream.delay, Duration::from_millis(30));
    }

    #[test]
    fn isp_is_one_table_or_an_array_of_them() {
        let one = Topology::parse("[[router]]\nisp = { delay = \"7ms\" }\n", "t.toml").unwrap();
        assert_eq!(one.routers[0].isp.upstream.delay, Duration::from_millis(7));
        assert!(one.routers[0].extra_isp.is_empty());

        let none = Topology::parse("[[router]]\n", "t.toml").unwrap();
        assert_eq!(none.routers[0].isp, LinkSpec::default());
        assert!(none.routers[0].extra_isp.is_empty());

        let text = "[[router]]\n\
                    isp = [ { delay = \"10ms\", rate = \"20mbit\" },\n\
                    \x20       { delay = \"30ms\", upstream = { rate = \"1mbit\" }, up = false },\n\
                    \x20       {} ]\n\
                    [[router]]\n\
                    isp = [ { delay = \"5ms\" } ]\n";
        let t = Topology::parse(text, "t.toml").unwrap();
        let r1 = &t.routers[0];
        assert_eq!(r1.isp.downstream.delay, Duration::from_millis(10));
        assert_eq!(r1.isp.upstream.rate_bps, Some(20_000_000));
        assert_eq!(r1.extra_isp.len(), 2);
        let wan2 = r1.extra_isp[0];
        assert_eq!(wan2.downstream.delay, Duration::from_millis(30));
        assert_eq!(wan2.downstream.rate_bps, None);
        assert_eq!(wan2.upstream.rate_bps, Some(1_000_000));
        assert_eq!(wan2.upstream.delay, Duration::from_millis(30));
        assert!(!wan2.upstream.up && !wan2.downstream.up);
        assert_eq!(r1.extra_isp[1], LinkSpec::default());
        // A one-element array is the single table.
        assert_eq!(t.routers[1].isp.upstream.delay, Duration::from_millis(5));
        assert!(t.routers[1].extra_isp.is_empty());
    }

    #[test]
    fn isp_array_errors_name_the_link() {
        let err = |text: &str| Topology::parse(text, "t.toml").unwrap_err().to_string();

        let msg = err("[[router]]\nisp = [ { delay = \"1ms\" }, { delay = \"20\" } ]\n");
        assert!(
            msg.starts_with("t.toml: `router[0].isp[1].delay`:") && msg.contains("no unit"),
            "{msg}"
        );

        let msg = err("[[router]]\nisp = [ {}, { loss = [1] } ]\n");
        assert!(
            msg.contains("t.toml: `router[0].isp[1].loss`") && msg.contains("array"),
            "{msg}"
        );

        let msg = err("[[router]]\n[[router]]\nisp = [ {}, { upstream = { rate = \"fast\" } } ]\n");
        assert!(msg.contains("`router[1].isp[1].upstream.rate`"), "{msg}");

        let msg = err("[[router]]\nisp = [ {}, { colour = \"red\" } ]\n");
        assert!(
            msg.contains("`router[0].isp[1]`") && msg.contains("colour"),
            "{msg}"
        );

        let msg = err("[[router]]\nisp = [ {}, \"10ms\" ]\n");
        assert!(
            msg.contains("`router[0].isp[1]`") && msg.contains("expected a link table"),
            "{msg}"
        );

        let msg = err("[[router]]\nisp = []\n");
        assert!(
            msg.contains("`router[0].isp`") && msg.contains("need 1 to 8 ISP links, found 0"),
            "{msg}"
        );

        let nine = ["{}"; 9].join(", ");
        let msg = err(&format!("[[router]]\nisp = [ {nine} ]\n"));
        assert!(msg.contains("found 9"), "{msg}");

        let msg = err("[[router]]\nisp = \"20mbit\"\n");
        assert!(
            msg.contains("`router[0].isp`") && msg.contains("a link table or an array"),
            "{msg}"
        );
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
