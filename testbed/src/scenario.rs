//! Scenario files for `linkpool-testbed bench`: the uplinks of one member router and what
//! happens to them while each transfer runs.
//!
//! ```toml
//! name = "path-cut"                   # a label for the table and the JSON
//! description = "20 + 10 Mbit/s, path 1 down from 4 s to 8 s"   # optional
//! seconds = 12                        # length of each measured transfer (1 to 600)
//!
//! [[path]]                            # path 1: r1's `wan`, link `r1-wan`
//! rate = "20mbit"                     # the topology file's link keys: rate, delay (one-way),
//! delay = "10ms"                      # jitter, loss, queue, up, and `upstream = {...}` /
//!                                     # `downstream = {...}` overrides for one direction
//! [[path]]                            # path 2: `wan2`, link `r1-wan2`; at most 8 paths
//! rate = "10mbit"
//! delay = "30ms"
//! downstream = { rate = "16mbit" }
//!
//! [[event]]                           # during every transfer, from its first byte
//! at = "4s"                           # within `seconds`
//! path = 1                            # paths count from 1
//! set = "down"                        # `down`, `up`, or link settings ("loss=5% delay=80ms"),
//!                                     # optionally for one direction ("downstream rate=2mbit")
//! [[event]]
//! at = "8s"
//! path = 1
//! set = "up"
//! ```
//!
//! A path may be a neighbour's line, reached over the community mesh:
//!
//! ```toml
//! owners_busy = true                  # the neighbours' owners download meanwhile
//!
//! [[path]]                            # path 2: r2's `wan`, link `r2-wan`
//! via = "r2"                          # neighbours are r2, r3, ... (one path each)
//! rate = "10mbit"                     # the neighbour's WAN
//! delay = "15ms"
//! mesh = { delay = "1ms", loss = "1%" }   # the mesh hop to it (link `r2-mesh`)
//!
//! [[event]]
//! at = "4s"
//! path = 2
//! set = "mesh down"                   # `mesh ...`: the event is on the mesh hop
//! ```
//!
//! Path 1 is always the member's own line. Every member shares its line on the mesh.
//!
//! Unknown keys are refused; every error names the file, the key and what is wrong. A
//! scenario becomes a one-router [`Topology`] ([`Scenario::topology`]): r1 with one ISP
//! link per path, one LAN client, the proxy and the internet host behind ideal links (no
//! delay, no rate limit), so the paths are the only thing that differs.
//!
//! The built-in scenarios ([`BUILTIN`]) are the files in `testbed/scenarios/`, compiled in.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::topology::{LinkTable, link_spec};
use crate::{Direction, Error, LinkParams, LinkSpec, RouterSpec, Topology, parse_duration};

/// Longest transfer a scenario may ask for.
pub const MAX_SECONDS: f64 = 600.0;

/// The built-in scenarios: (file name, text), in the order `bench` runs them.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "three-uplinks.toml",
        include_str!("../scenarios/three-uplinks.toml"),
    ),
    (
        "equal-pair.toml",
        include_str!("../scenarios/equal-pair.toml"),
    ),
    (
        "fibre-lte.toml",
        include_str!("../scenarios/fibre-lte.toml"),
    ),
    (
        "lossy-path.toml",
        include_str!("../scenarios/lossy-path.toml"),
    ),
    (
        "jittery-path.toml",
        include_str!("../scenarios/jittery-path.toml"),
    ),
    ("path-cut.toml", include_str!("../scenarios/path-cut.toml")),
    (
        "neighbours.toml",
        include_str!("../scenarios/neighbours.toml"),
    ),
    (
        "neighbours-busy.toml",
        include_str!("../scenarios/neighbours-busy.toml"),
    ),
    (
        "neighbour-killed.toml",
        include_str!("../scenarios/neighbour-killed.toml"),
    ),
    (
        "lossy-mesh.toml",
        include_str!("../scenarios/lossy-mesh.toml"),
    ),
];

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its label.
    pub name: String,
    /// One line for reports (may be empty).
    pub description: String,
    /// Where it came from (a file name), for messages.
    pub origin: String,
    /// Length of each measured transfer.
    pub seconds: Duration,
    /// Each path's line, path 1 first: the member's own uplinks are `wan` (`r1-wan`),
    /// `wan2` (`r1-wan2`), ... in file order; a neighbour's line is its `wan` (`rN-wan`).
    pub paths: Vec<LinkSpec>,
    /// Per path: the neighbour whose line it is, or `None` for an own uplink.
    pub via: Vec<Option<Via>>,
    /// The neighbours' owners download through their own lines during the measured
    /// transfers.
    pub owners_busy: bool,
    /// What happens to the paths during every transfer, in time order.
    pub events: Vec<Event>,
}

/// One change of a path during a transfer.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// From the transfer's first byte.
    pub at: Duration,
    /// Which path, counting from 0 (the file counts from 1).
    pub path: usize,
    /// One direction only, or both.
    pub direction: Option<Direction>,
    /// Settings as [`LinkParams::apply`] takes them: `down`, `up`, `loss=5%`, ...
    pub settings: Vec<String>,
    /// On the mesh hop of a path through a neighbour, not on its line.
    pub mesh: bool,
}

/// A path through a neighbour: its router and the mesh hop to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Via {
    /// The neighbour's router number (2 for `r2`).
    pub router: usize,
    /// The neighbour's port on the mesh segment (link `rN-mesh`).
    pub mesh: LinkSpec,
}

impl Event {
    /// The event as the file says it (`path 1 down at 4s`).
    pub fn describe(&self) -> String {
        let direction = match self.direction {
            Some(Direction::Upstream) => "upstream ",
            Some(Direction::Downstream) => "downstream ",
            None => "",
        };
        format!(
            "path {} {}{direction}{} at {}",
            self.path + 1,
            if self.mesh { "mesh " } else { "" },
            self.settings.join(" "),
            format_seconds(self.at)
        )
    }
}

/// `4s`, `1.333s`, `250ms` (to the millisecond).
pub fn format_seconds(d: Duration) -> String {
    let ms = (d.as_secs_f64() * 1e3).round() as u64;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    description: Option<String>,
    seconds: Option<toml::Value>,
    owners_busy: Option<bool>,
    #[serde(default)]
    path: Vec<LinkTable>,
    #[serde(default)]
    event: Vec<EventFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    at: Option<toml::Value>,
    path: Option<toml::Value>,
    set: Option<toml::Value>,
}

impl Scenario {
    /// Reads a scenario file; errors name the file, the key and the reason.
    pub fn from_file(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(format!("{}: cannot read: {e}", path.display())))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Every built-in scenario, parsed.
    pub fn builtin() -> Result<Vec<Scenario>, Error> {
        BUILTIN
            .iter()
            .map(|(file, text)| Scenario::parse(text, &format!("scenarios/{file}")))
            .collect()
    }

    /// A built-in scenario by name (`path-cut`) or file name (`path-cut.toml`).
    pub fn builtin_named(name: &str) -> Option<Result<Scenario, Error>> {
        let file = name.strip_suffix(".toml").unwrap_or(name);
        BUILTIN
            .iter()
            .find(|(f, _)| f.strip_suffix(".toml") == Some(file))
            .map(|(f, text)| Scenario::parse(text, &format!("scenarios/{f}")))
    }

    /// Parses scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, Error> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| Error::new(format!("{origin}: {e}")))?;
        let name = match file.name {
            Some(n) if !n.trim().is_empty() => n,
            Some(_) => return Err(Error::new(format!("{origin}: `name`: is empty"))),
            None => return Err(Error::new(format!("{origin}: `name`: missing"))),
        };
        let seconds = match &file.seconds {
            None => return Err(Error::new(format!("{origin}: `seconds`: missing"))),
            Some(value) => seconds_value(value)
                .map_err(|why| Error::new(format!("{origin}: `seconds`: {why}")))?,
        };
        if file.path.is_empty() || file.path.len() > RouterSpec::MAX_ISP_LINKS {
            return Err(Error::new(format!(
                "{origin}: `path`: need 1 to {} [[path]] entries, found {}",
                RouterSpec::MAX_ISP_LINKS,
                file.path.len()
            )));
        }
        let mut paths = Vec::new();
        let mut via = Vec::new();
        for (i, table) in file.path.iter().enumerate() {
            let (line, neighbour) = path_spec(table, i, origin)?;
            paths.push(line);
            via.push(neighbour);
        }
        check_neighbours(&via, origin)?;
        let owners_busy = file.owners_busy.unwrap_or(false);
        if owners_busy && via.iter().all(Option::is_none) {
            return Err(Error::new(format!(
                "{origin}: `owners_busy`: no path goes through a neighbour (`via`)"
            )));
        }
        let mut events = Vec::new();
        for (i, e) in file.event.iter().enumerate() {
            let key = |k: &str| format!("{origin}: `event[{i}].{k}`");
            let at = match &e.at {
                None => return Err(Error::new(format!("{}: missing", key("at")))),
                Some(toml::Value::String(s)) => {
                    parse_duration(s).map_err(|why| Error::new(format!("{}: {why}", key("at"))))?
                }
                Some(other) => {
                    return Err(Error::new(format!(
                        "{}: expected a duration such as \"6s\", found {}",
                        key("at"),
                        other.type_str()
                    )));
                }
            };
            if at >= seconds {
                return Err(Error::new(format!(
                    "{}: {} is not within the {} transfers (`seconds`)",
                    key("at"),
                    format_seconds(at),
                    format_seconds(seconds)
                )));
            }
            let path = match &e.path {
                None => return Err(Error::new(format!("{}: missing", key("path")))),
                Some(toml::Value::Integer(n)) if (1..=paths.len() as i64).contains(n) => {
                    *n as usize - 1
                }
                Some(toml::Value::Integer(n)) => {
                    return Err(Error::new(format!(
                        "{}: there is no path {n}: paths count from 1 and this scenario has {} \
                         ([[path]] entries)",
                        key("path"),
                        paths.len()
                    )));
                }
                Some(other) => {
                    return Err(Error::new(format!(
                        "{}: expected a path number from 1 to {}, found {}",
                        key("path"),
                        paths.len(),
                        other.type_str()
                    )));
                }
            };
            let (mesh, direction, settings) = match &e.set {
                None => return Err(Error::new(format!("{}: missing", key("set")))),
                Some(toml::Value::String(s)) => {
                    let (mesh, rest) = match s.trim_start().strip_prefix("mesh ") {
                        Some(rest) => (true, rest),
                        None => (false, s.as_str()),
                    };
                    if mesh && via[path].is_none() {
                        return Err(Error::new(format!(
                            "{}: `mesh ...` is for a path through a neighbour (`via`); path {} \
                             is the member's own line",
                            key("set"),
                            path + 1
                        )));
                    }
                    let (direction, settings) = parse_set(rest)
                        .map_err(|why| Error::new(format!("{}: {why}", key("set"))))?;
                    (mesh, direction, settings)
                }
                Some(other) => {
                    return Err(Error::new(format!(
                        "{}: expected a string such as \"down\" or \"loss=5% delay=80ms\", found {}",
                        key("set"),
                        other.type_str()
                    )));
                }
            };
            events.push(Event {
                at,
                path,
                direction,
                settings,
                mesh,
            });
        }
        // In time order; events at the same time keep the file's order.
        events.sort_by_key(|e| e.at);
        Ok(Scenario {
            name,
            description: file.description.unwrap_or_default(),
            origin: origin.to_string(),
            seconds,
            paths,
            via,
            owners_busy,
            events,
        })
    }

    /// The scenario with transfers of `seconds` instead: event times are scaled with it, so
    /// each keeps its place in the transfer (a cut at 4 s of 12 s is at 1 s of 3 s).
    pub fn with_seconds(&self, seconds: Duration) -> Scenario {
        let scale = seconds.as_secs_f64() / self.seconds.as_secs_f64();
        let mut s = self.clone();
        s.seconds = seconds;
        for e in &mut s.events {
            e.at = Duration::from_secs_f64(e.at.as_secs_f64() * scale);
        }
        s
    }

    /// The co-op it runs on: r1 with one ISP link per own path, one neighbour router per
    /// path through a neighbour (its WAN that path's line, its mesh port the mesh hop), the
    /// rest ideal.
    pub fn topology(&self) -> Topology {
        let neighbours = self.neighbours().count();
        let mut t = Topology::coop(1 + neighbours);
        t.name = format!("bench-{}", self.name);
        let own: Vec<LinkSpec> = self.own_paths().map(|k| self.paths[k]).collect();
        t.routers[0].isp = own[0];
        t.routers[0].extra_isp = own[1..].to_vec();
        for (k, v) in self.neighbours() {
            let r = &mut t.routers[v.router - 1];
            r.isp = self.paths[k];
            r.mesh = v.mesh;
        }
        t
    }

    /// The paths that are the member's own uplinks, in order (path 1 first).
    pub fn own_paths(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.paths.len()).filter(|&k| self.via[k].is_none())
    }

    /// The paths through neighbours, with their neighbour.
    pub fn neighbours(&self) -> impl Iterator<Item = (usize, Via)> + '_ {
        self.via
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// The sum of the paths' downstream rates in bits per second (`None` when one is
    /// unlimited).
    pub fn sum_rate_bps(&self) -> Option<u64> {
        self.paths.iter().map(|p| p.downstream.rate_bps).sum()
    }
}

/// Path `i`'s line and, with `via`, its neighbour.
fn path_spec(table: &LinkTable, i: usize, origin: &str) -> Result<(LinkSpec, Option<Via>), Error> {
    let key = |k: &str| format!("{origin}: `path[{i}].{k}`");
    let mut line = table.clone();
    let via = line.remove("via");
    let mesh = line.remove("mesh");
    let spec = link_spec(Some(&line), &format!("path[{i}]"), origin)?;
    let router = match via {
        None => {
            if mesh.is_some() {
                return Err(Error::new(format!(
                    "{}: only a path through a neighbour (`via`) has a mesh hop",
                    key("mesh")
                )));
            }
            return Ok((spec, None));
        }
        Some(_) if i == 0 => {
            return Err(Error::new(format!(
                "{}: path 1 is the member's own line; put neighbours' lines after it",
                key("via")
            )));
        }
        Some(toml::Value::String(name)) => name
            .strip_prefix('r')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 2)
            .ok_or_else(|| {
                Error::new(format!(
                    "{}: expected a neighbour router such as \"r2\" (r1 is the member), found \
                     {name:?}",
                    key("via")
                ))
            })?,
        Some(other) => {
            return Err(Error::new(format!(
                "{}: expected a neighbour router such as \"r2\", found {}",
                key("via"),
                other.type_str()
            )));
        }
    };
    let mesh = match mesh {
        None => LinkSpec::default(),
        Some(toml::Value::Table(t)) => link_spec(
            Some(&t.into_iter().collect()),
            &format!("path[{i}].mesh"),
            origin,
        )?,
        Some(other) => {
            return Err(Error::new(format!(
                "{}: expected a table of link keys such as {{ delay = \"1ms\" }}, found {}",
                key("mesh"),
                other.type_str()
            )));
        }
    };
    Ok((spec, Some(Via { router, mesh })))
}

/// Neighbours are r2, r3, ... with one path each, none left out (each is a router in the
/// co-op).
fn check_neighbours(via: &[Option<Via>], origin: &str) -> Result<(), Error> {
    let count = via.iter().flatten().count();
    for (i, v) in via.iter().enumerate() {
        let Some(v) = v else { continue };
        if v.router > count + 1 {
            return Err(Error::new(format!(
                "{origin}: `path[{i}].via`: r{} but this scenario has {count} neighbour{}: \
                 name them r2 to r{}",
                v.router,
                if count == 1 { "" } else { "s" },
                count + 1
            )));
        }
        if via[..i].iter().flatten().any(|w| w.router == v.router) {
            return Err(Error::new(format!(
                "{origin}: `path[{i}].via`: r{} already has a path (one path per neighbour)",
                v.router
            )));
        }
    }
    Ok(())
}

/// Seconds from an integer or a float (`10`, `2.5`).
fn seconds_value(value: &toml::Value) -> Result<Duration, String> {
    let s = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(format!(
                "expected a number of seconds such as 10, found {}",
                other.type_str()
            ));
        }
    };
    if !(1.0..=MAX_SECONDS).contains(&s) {
        return Err(format!("{s} is out of range (1 to {MAX_SECONDS} s)"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `down`, `up`, `loss=5% delay=80ms`, `downstream rate=2mbit`: the direction (if one is
/// named first) and the settings, checked.
fn parse_set(text: &str) -> Result<(Option<Direction>, Vec<String>), String> {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let direction = match words.first() {
        Some(&"upstream") => Some(Direction::Upstream),
        Some(&"downstream") => Some(Direction::Downstream),
        _ => None,
    };
    if direction.is_some() {
        words.remove(0);
    }
    if words.is_empty() {
        return Err(
            "no settings: give `down`, `up` or settings such as \"loss=5% delay=80ms\"".to_string(),
        );
    }
    LinkParams::default().apply(words.iter().copied())?;
    Ok((direction, words.into_iter().map(String::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Scenario::parse(text, "s.toml").unwrap_err().to_string()
    }

    const TWO: &str = "name = \"t\"\nseconds = 10\n\
                       [[path]]\nrate = \"20mbit\"\ndelay = \"10ms\"\n\
                       [[path]]\nrate = \"10mbit\"\ndelay = \"30ms\"\n";

    #[test]
    fn parses_paths_and_events() {
        let text = format!(
            "{TWO}[[path]]\nrate = \"5mbit\"\ndelay = \"60ms\"\njitter = \"2ms\"\nloss = \"1%\"\n\
             queue = \"50ms\"\nupstream = {{ rate = \"1mbit\" }}\n\
             [[event]]\nat = \"8s\"\npath = 1\nset = \"up\"\n\
             [[event]]\nat = \"4s\"\npath = 1\nset = \"down\"\n\
             [[event]]\nat = \"6s\"\npath = 3\nset = \"downstream loss=5% delay=80ms\"\n"
        );
        let s = Scenario::parse(&text, "s.toml").unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.seconds, Duration::from_secs(10));
        assert_eq!(s.paths.len(), 3);
        assert_eq!(s.paths[0].downstream.rate_bps, Some(20_000_000));
        assert_eq!(s.paths[1].upstream.delay, Duration::from_millis(30));
        let p3 = s.paths[2];
        assert_eq!(p3.downstream.rate_bps, Some(5_000_000));
        assert_eq!(p3.upstream.rate_bps, Some(1_000_000));
        assert_eq!(p3.upstream.delay, Duration::from_millis(60));
        assert_eq!(p3.downstream.jitter, Duration::from_millis(2));
        assert_eq!(p3.downstream.queue, Duration::from_millis(50));
        assert!((p3.downstream.loss - 0.01).abs() < 1e-12);
        assert_eq!(s.sum_rate_bps(), Some(35_000_000));
        // Sorted by time.
        let at: Vec<u64> = s.events.iter().map(|e| e.at.as_secs()).collect();
        assert_eq!(at, [4, 6, 8]);
        assert_eq!(s.events[0].path, 0);
        assert_eq!(s.events[0].settings, ["down"]);
        assert_eq!(s.events[0].direction, None);
        assert_eq!(s.events[1].path, 2);
        assert_eq!(s.events[1].direction, Some(Direction::Downstream));
        assert_eq!(s.events[1].settings, ["loss=5%", "delay=80ms"]);
        assert_eq!(
            s.events[1].describe(),
            "path 3 downstream loss=5% delay=80ms at 6s"
        );

        let t = s.topology();
        assert_eq!(t.routers.len(), 1);
        assert_eq!(t.routers[0].isp_links().count(), 3);
        assert_eq!(t.routers[0].extra_isp[1], p3);
        assert_eq!(t.proxy_link, LinkSpec::default());
        assert_eq!(t.internet_link, LinkSpec::default());

        // Fractional seconds; no events; a path without a rate.
        let s = Scenario::parse("name = \"x\"\nseconds = 2.5\n[[path]]\n", "s.toml").unwrap();
        assert_eq!(s.seconds, Duration::from_millis(2500));
        assert!(s.events.is_empty());
        assert_eq!(s.sum_rate_bps(), None);
    }

    #[test]
    fn formats_times_to_the_millisecond() {
        assert_eq!(format_seconds(Duration::from_secs(4)), "4s");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_seconds(Duration::from_secs_f64(4.0 / 3.0)), "1.333s");
        assert_eq!(format_seconds(Duration::from_millis(250)), "250ms");
        assert_eq!(format_seconds(Duration::ZERO), "0ms");
    }

    #[test]
    fn shorter_transfers_keep_the_events_in_place() {
        let text = format!("{TWO}[[event]]\nat = \"4s\"\npath = 2\nset = \"down\"\n");
        let s = Scenario::parse(&text, "s.toml")
            .unwrap()
            .with_seconds(Duration::from_secs(5));
        assert_eq!(s.seconds, Duration::from_secs(5));
        assert_eq!(s.events[0].at, Duration::from_secs(2));
    }

    #[test]
    fn every_builtin_scenario_parses_and_every_file_is_built_in() {
        let all = Scenario::builtin().unwrap();
        assert_eq!(all.len(), BUILTIN.len());
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate names");
        for s in &all {
            assert!(s.paths.len() >= 2, "{}: fewer than two paths", s.name);
            assert!(s.sum_rate_bps().is_some(), "{}: a path has no rate", s.name);
            assert!(!s.description.is_empty(), "{}: no description", s.name);
            // The file name is the scenario's name.
            assert!(
                s.origin.ends_with(&format!("/{}.toml", s.name)),
                "{}",
                s.origin
            );
        }
        // Files in testbed/scenarios/ that are not compiled in would never run.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".toml"))
            .collect();
        files.sort();
        let mut builtin: Vec<String> = BUILTIN.iter().map(|(f, _)| f.to_string()).collect();
        builtin.sort();
        assert_eq!(files, builtin);
        // And each file on disk is what is compiled in.
        for (file, text) in BUILTIN {
            let on_disk = Scenario::from_file(&dir.join(file)).unwrap();
            assert_eq!(on_disk.paths, Scenario::parse(text, file).unwrap().paths);
        }

        let three = &all[0];
        assert_eq!(three.name, "three-uplinks");
        let rates: Vec<_> = three.paths.iter().map(|p| p.downstream.rate_bps).collect();
        assert_eq!(rates, [Some(10_000_000), Some(20_000_000), Some(5_000_000)]);
        let cut = Scenario::builtin_named("path-cut").unwrap().unwrap();
        assert_eq!(cut.events.len(), 2);
        assert_eq!(cut.events[0].settings, ["down"]);
        assert!(Scenario::builtin_named("fibre-lte.toml").is_some());
        assert!(Scenario::builtin_named("nope").is_none());
    }

    const NEIGHBOURS: &str = "name = \"n\"\nseconds = 10\nowners_busy = true\n\
                              [[path]]\nrate = \"10mbit\"\n\
                              [[path]]\nvia = \"r3\"\nrate = \"20mbit\"\nmesh = { delay = \"2ms\", loss = \"5%\" }\n\
                              [[path]]\nrate = \"5mbit\"\n\
                              [[path]]\nvia = \"r2\"\nrate = \"30mbit\"\n\
                              [[event]]\nat = \"4s\"\npath = 2\nset = \"mesh down\"\n";

    #[test]
    fn paths_through_neighbours_become_their_routers_lines_and_mesh_hops() {
        let s = Scenario::parse(NEIGHBOURS, "n.toml").unwrap();
        assert!(s.owners_busy);
        let routers: Vec<Option<usize>> = s.via.iter().map(|v| v.map(|v| v.router)).collect();
        assert_eq!(routers, [None, Some(3), None, Some(2)]);
        assert_eq!(s.own_paths().collect::<Vec<_>>(), [0, 2]);
        let mesh = s.via[1].unwrap().mesh;
        assert_eq!(mesh.upstream.delay, Duration::from_millis(2));
        assert!(mesh.downstream.loss > 0.049 && mesh.downstream.loss < 0.051);
        // No `mesh` table: an ideal hop.
        assert_eq!(s.via[3].unwrap().mesh, LinkSpec::default());
        assert!(s.events[0].mesh);
        assert_eq!(s.events[0].describe(), "path 2 mesh down at 4s");

        let t = s.topology();
        assert_eq!(t.routers.len(), 3);
        // r1 has the own lines in file order; each neighbour its path's line and hop.
        assert_eq!(t.routers[0].isp.downstream.rate_bps, Some(10_000_000));
        let extra: Vec<_> = t.routers[0]
            .extra_isp
            .iter()
            .map(|l| l.downstream.rate_bps)
            .collect();
        assert_eq!(extra, [Some(5_000_000)]);
        assert_eq!(t.routers[1].isp.downstream.rate_bps, Some(30_000_000));
        assert_eq!(t.routers[2].isp.downstream.rate_bps, Some(20_000_000));
        assert_eq!(t.routers[2].mesh, mesh);
        assert_eq!(t.routers[1].mesh, LinkSpec::default());
    }

    #[test]
    fn bad_neighbours_name_the_key_and_the_reason() {
        let one = |path: &str| format!("name = \"t\"\nseconds = 10\n[[path]]\n{path}");
        let cases: &[(String, &str)] = &[
            (
                "name = \"t\"\nseconds = 10\n[[path]]\nvia = \"r2\"\n".to_string(),
                "`path[0].via`: path 1 is the member's own line",
            ),
            (
                one("[[path]]\nvia = \"r1\"\n"),
                "`path[1].via`: expected a neighbour router such as \"r2\"",
            ),
            (one("[[path]]\nvia = \"x\"\n"), "found \"x\""),
            (
                one("[[path]]\nvia = 2\n"),
                "`path[1].via`: expected a neighbour router such as \"r2\", found integer",
            ),
            (
                one("[[path]]\nvia = \"r3\"\n"),
                "`path[1].via`: r3 but this scenario has 1 neighbour: name them r2 to r2",
            ),
            (
                one("[[path]]\nvia = \"r2\"\n[[path]]\nvia = \"r2\"\n"),
                "`path[2].via`: r2 already has a path",
            ),
            (
                one("[[path]]\nmesh = { delay = \"1ms\" }\n"),
                "`path[1].mesh`: only a path through a neighbour",
            ),
            (
                one("[[path]]\nvia = \"r2\"\nmesh = \"1ms\"\n"),
                "`path[1].mesh`: expected a table of link keys",
            ),
            (
                one("[[path]]\nvia = \"r2\"\nmesh = { speed = 1 }\n"),
                "path[1].mesh",
            ),
            (
                "name = \"t\"\nseconds = 10\nowners_busy = true\n[[path]]\n".to_string(),
                "`owners_busy`: no path goes through a neighbour",
            ),
            (
                format!("{TWO}[[event]]\nat = \"1s\"\npath = 2\nset = \"mesh down\"\n"),
                "`event[0].set`: `mesh ...` is for a path through a neighbour (`via`); path 2 is the member's own line",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{e}\n  wanted: {want}");
            assert!(e.starts_with("s.toml: "), "{e}");
        }
    }

    #[test]
    fn an_event_on_a_path_that_does_not_exist_is_refused() {
        let three = format!("{TWO}[[path]]\n");
        let msg = err(&format!(
            "{three}[[event]]\nat = \"6s\"\npath = 4\nset = \"down\"\n"
        ));
        assert!(
            msg.starts_with("s.toml: `event[0].path`:")
                && msg.contains("no path 4")
                && msg.contains("has 3"),
            "{msg}"
        );
        let msg = err(&format!(
            "{TWO}[[event]]\nat = \"1s\"\npath = 1\nset = \"up\"\n\
             [[event]]\nat = \"6s\"\npath = 0\nset = \"down\"\n"
        ));
        assert!(
            msg.contains("`event[1].path`") && msg.contains("count from 1"),
            "{msg}"
        );
        let msg = err(&format!(
            "{TWO}[[event]]\nat = \"6s\"\npath = \"wan\"\nset = \"down\"\n"
        ));
        assert!(
            msg.contains("`event[0].path`") && msg.contains("found string"),
            "{msg}"
        );
    }

    #[test]
    fn bad_events_name_the_key_and_the_reason() {
        let event = |body: &str| err(&format!("{TWO}[[event]]\n{body}"));
        let msg = event("at = \"6\"\npath = 1\nset = \"down\"\n");
        assert!(
            msg.starts_with("s.toml: `event[0].at`:") && msg.contains("no unit"),
            "{msg}"
        );
        let msg = event("at = 6\npath = 1\nset = \"down\"\n");
        assert!(
            msg.contains("`event[0].at`") && msg.contains("found integer"),
            "{msg}"
        );
        let msg = event("at = \"12s\"\npath = 1\nset = \"down\"\n");
        assert!(
            msg.contains("`event[0].at`") && msg.contains("not within the 10s transfers"),
            "{msg}"
        );
        let msg = event("path = 1\nset = \"down\"\n");
        assert!(msg.contains("`event[0].at`: missing"), "{msg}");
        let msg = event("at = \"1s\"\nset = \"down\"\n");
        assert!(msg.contains("`event[0].path`: missing"), "{msg}");
        let msg = event("at = \"1s\"\npath = 1\n");
        assert!(msg.contains("`event[0].set`: missing"), "{msg}");
        let msg = event("at = \"1s\"\npath = 1\nset = \"sideways\"\n");
        assert!(
            msg.contains("`event[0].set`") && msg.contains("sideways"),
            "{msg}"
        );
        let msg = event("at = \"1s\"\npath = 1\nset = \"colour=red\"\n");
        assert!(
            msg.contains("`event[0].set`") && msg.contains("unknown link parameter `colour`"),
            "{msg}"
        );
        let msg = event("at = \"1s\"\npath = 1\nset = \"loss=200%\"\n");
        assert!(
            msg.contains("`event[0].set`") && msg.contains("loss"),
            "{msg}"
        );
        let msg = event("at = \"1s\"\npath = 1\nset = \"downstream\"\n");
        assert!(
            msg.contains("`event[0].set`") && msg.contains("no settings"),
            "{msg}"
        );
        let msg = event("at = \"1s\"\npath = 1\nset = [\"down\"]\n");
        assert!(
            msg.contains("`event[0].set`") && msg.contains("found array"),
            "{msg}"
        );
        let msg = event("at = \"1s\"\npath = 1\nset = \"down\"\nvia = \"r2\"\n");
        assert!(msg.contains("s.toml") && msg.contains("via"), "{msg}");
    }

    #[test]
    fn bad_files_name_the_key_and_the_reason() {
        let msg = err("seconds = 10\n[[path]]\n");
        assert_eq!(msg, "s.toml: `name`: missing");
        let msg = err("name = \"\"\nseconds = 10\n[[path]]\n");
        assert!(msg.contains("`name`: is empty"), "{msg}");
        let msg = err("name = \"t\"\n[[path]]\n");
        assert_eq!(msg, "s.toml: `seconds`: missing");
        let msg = err("name = \"t\"\nseconds = \"10s\"\n[[path]]\n");
        assert!(
            msg.contains("`seconds`") && msg.contains("found string"),
            "{msg}"
        );
        let msg = err("name = \"t\"\nseconds = 0\n[[path]]\n");
        assert!(
            msg.contains("`seconds`") && msg.contains("out of range"),
            "{msg}"
        );
        let msg = err("name = \"t\"\nseconds = 10\n");
        assert!(
            msg.contains("`path`") && msg.contains("need 1 to 8") && msg.contains("found 0"),
            "{msg}"
        );
        let nine = "[[path]]\n".repeat(9);
        let msg = err(&format!("name = \"t\"\nseconds = 10\n{nine}"));
        assert!(msg.contains("found 9"), "{msg}");
        // Link keys: the topology file's, with its messages.
        let msg = err("name = \"t\"\nseconds = 10\n[[path]]\n[[path]]\ndelay = \"20\"\n");
        assert!(
            msg.starts_with("s.toml: `path[1].delay`:") && msg.contains("no unit"),
            "{msg}"
        );
        let msg = err("name = \"t\"\nseconds = 10\n[[path]]\ncolour = \"red\"\n");
        assert!(
            msg.contains("`path[0]`") && msg.contains("unknown link parameter `colour`"),
            "{msg}"
        );
        let msg = err("name = \"t\"\nseconds = 10\n[[path]]\nupstream = { rate = \"fast\" }\n");
        assert!(msg.contains("`path[0].upstream.rate`"), "{msg}");
        let msg = err("name = \"t\"\nseconds = 10\n[[path]]\ndownstream = \"x\"\n");
        assert!(
            msg.contains("`path[0].downstream`") && msg.contains("expected a table"),
            "{msg}"
        );
        // Unknown top-level keys and tables.
        let msg = err("name = \"t\"\nseconds = 10\nrounds = 3\n[[path]]\n");
        assert!(msg.contains("s.toml") && msg.contains("rounds"), "{msg}");
        let msg = err("name = \"t\"\nseconds = 10\n[[path]]\n[proxy]\nlink = {}\n");
        assert!(msg.contains("proxy"), "{msg}");
        // Not TOML at all.
        let msg = err("name = \n");
        assert!(msg.starts_with("s.toml: "), "{msg}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let msg = Scenario::from_file(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/nonexistent/x.toml: cannot read"), "{msg}");
    }
}
