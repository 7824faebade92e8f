//! What both daemons' status shows of spreading: each path's share of the traffic and its
//! congestion control, flows by class with the mode each class is spread by, the busiest
//! flows, the spread counters and the reorder buffer.
//!
//! Each part is built as JSON from the protocol core's types (the `--json` snapshot), and
//! the text for a person is rendered from that JSON, so `linkpool status` and
//! `linkpool-proxy status` say the same things the same way. docs/status.md explains every
//! field.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use linkpool_protocol::PathId;
use linkpool_protocol::SpreadCounters;
use linkpool_protocol::flow::{Flow, FlowClass, FlowTable, Modes};
use linkpool_protocol::path::Path;
use linkpool_protocol::reorder::Reorder;
use serde_json::{Value, json};

/// How many flows status lists by name: the busiest.
pub const BUSIEST_FLOWS: usize = 5;

/// The flow classes in the order status lists them (and [`SpreadCounters::by_class`]
/// counts them).
pub const CLASSES: [FlowClass; 3] = [FlowClass::Interactive, FlowClass::Bulk, FlowClass::Default];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Data bytes per second all `paths` sent lately: what [`path_fields`] takes each path's
/// share of.
pub fn total_send_rate<'a>(paths: impl IntoIterator<Item = &'a Path>, now: Instant) -> u64 {
    paths.into_iter().map(|p| p.send_rate(now)).sum()
}

/// Inner bytes all `paths` sent since they opened: what [`path_fields`] takes each path's
/// cumulative share of.
pub fn total_tx_bytes<'a>(paths: impl IntoIterator<Item = &'a Path>) -> u64 {
    paths.into_iter().map(|p| p.counters().tx_bytes).sum()
}

/// A path's spreading fields, to add to its status entry (all `null` without a path):
/// `send_rate_bps` and `send_share` (of `total_send_rate`, the last fraction of a second;
/// `null` when no path sent anything lately), `tx_share` (of `total_tx_bytes`, since the
/// paths opened), `cc_state`, `bandwidth_bps`, `pacing_rate_bps`, `cwnd_bytes` and
/// `bytes_in_flight`.
pub fn path_fields(
    path: Option<&Path>,
    now: Instant,
    total_send_rate: u64,
    total_tx_bytes: u64,
) -> serde_json::Map<String, Value> {
    let share = |part: u64, total: u64| (total > 0).then(|| part as f64 / total as f64);
    let fields = match path {
        Some(p) => {
            let rate = p.send_rate(now);
            json!({
                "send_rate_bps": rate * 8,
                "send_share": share(rate, total_send_rate),
                "tx_share": share(p.counters().tx_bytes, total_tx_bytes),
                "cc_state": p.congestion_state().name(),
                "bandwidth_bps": p.bandwidth() * 8,
                "pacing_rate_bps": p.pacing_rate() * 8,
                "cwnd_bytes": p.congestion_window(),
                "bytes_in_flight": p.bytes_in_flight(),
            })
        }
        None => json!({
            "send_rate_bps": null,
            "send_share": null,
            "tx_share": null,
            "cc_state": null,
            "bandwidth_bps": null,
            "pacing_rate_bps": null,
            "cwnd_bytes": null,
            "bytes_in_flight": null,
        }),
    };
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

/// The flows of one direction: `live` (flows not idle), `capacity`, per class (in
/// [`CLASSES`] order, keyed by name) how many flows and the `mode` it resolves to, with
/// the `configured` one (`auto` or a mode set in the configuration), the
/// [`BUSIEST_FLOWS`] busiest flows, and the flow table's counters. `flows` is `None`
/// before a session (no flow yet). `path_name` names a path where the daemon has a better
/// name than its number (the gateway's uplinks); its answer goes in each flow's `uplink`.
pub fn flows_json(
    flows: Option<&FlowTable>,
    modes: &Modes,
    now: Instant,
    path_name: impl Fn(PathId) -> Option<String>,
) -> Value {
    let live: Vec<&Flow> = flows
        .into_iter()
        .flat_map(|t| t.iter())
        .map(|(_, f)| f)
        .filter(|f| !f.is_idle(now))
        .collect();
    let mut classes = serde_json::Map::new();
    for class in CLASSES {
        classes.insert(
            class.name().to_string(),
            json!({
                "flows": live.iter().filter(|f| f.class() == class).count(),
                "mode": modes.resolve(class).name(),
                "configured": configured(modes, class).name(),
            }),
        );
    }
    let mut busiest: Vec<(u64, &Flow)> = live.iter().map(|f| (f.rate_at(now), *f)).collect();
    // Busiest lately first; among the silent, the largest.
    busiest.sort_by(|(ra, a), (rb, b)| rb.cmp(ra).then(b.bytes().cmp(&a.bytes())));
    let busiest: Vec<Value> = busiest
        .into_iter()
        .take(BUSIEST_FLOWS)
        .map(|(rate, f)| {
            let k = f.key();
            let end = |ip, port| std::net::SocketAddr::new(ip, port).to_string();
            json!({
                "flow": k.to_string(),
                "protocol": k.protocol(),
                "src": end(k.src(), k.src_port()),
                "dst": end(k.dst(), k.dst_port()),
                "class": f.class().name(),
                "mode": modes.resolve(f.class()).name(),
                "rate_bps": rate * 8,
                "packets": f.packets(),
                "bytes": f.bytes(),
                "age_s": now.saturating_duration_since(f.since()).as_secs(),
                "path": f.path.map(|p| p.0),
                "uplink": f.path.and_then(&path_name),
            })
        })
        .collect();
    let c = flows.map(|t| t.counters()).unwrap_or_default();
    json!({
        "live": live.len(),
        "capacity": flows.map_or(0, |t| t.capacity()),
        "classes": classes,
        "busiest": busiest,
        "inserted": c.inserted,
        "evicted": c.evicted,
        "expired": c.expired,
        "reclassified": c.reclassified,
    })
}

fn configured(modes: &Modes, class: FlowClass) -> linkpool_protocol::flow::Mode {
    match class {
        FlowClass::Interactive => modes.interactive,
        FlowClass::Bulk => modes.bulk,
        FlowClass::Default => modes.default,
    }
}

/// What the scheduler did: packets and bytes sent once, duplicated for redundancy (and
/// that overhead in percent of the bytes sent once), repaired, and packets per class.
pub fn spread_json(c: &SpreadCounters) -> Value {
    let overhead = if c.bytes > 0 {
        c.duplicated_bytes as f64 * 100.0 / c.bytes as f64
    } else {
        0.0
    };
    let mut by_class = serde_json::Map::new();
    for (class, n) in CLASSES.into_iter().zip(c.by_class) {
        by_class.insert(class.name().to_string(), n.into());
    }
    json!({
        "packets": c.packets,
        "bytes": c.bytes,
        "duplicated_packets": c.duplicated_packets,
        "duplicated_bytes": c.duplicated_bytes,
        "redundancy_overhead_pct": overhead,
        "repaired": c.repaired,
        "by_class": by_class,
    })
}

/// The reorder buffer of the receiving side: its timeout and the skew it follows, what
/// it holds, and its counters.
pub fn reorder_json(r: &Reorder) -> Value {
    let c = r.counters();
    json!({
        "timeout_ms": ms(r.timeout()),
        "skew_ms": ms(r.skew()),
        "held": r.held(),
        "in_order": c.in_order,
        "released": c.released,
        "gaps_timed_out": c.gaps_timed_out,
        "late": c.late,
        "late_unchecked": c.late_unchecked,
        "duplicates": c.duplicates,
        "pool_exhausted": c.pool_exhausted,
        "delivered_ahead": c.delivered_ahead,
        "resyncs": c.resyncs,
    })
}

/// A rate for a person: Mbit/s, or kbit/s below one.
pub fn rate_text(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.1} Mbit/s", bps / 1e6)
    } else {
        format!("{:.0} kbit/s", bps / 1e3)
    }
}

fn percent(share: &Value) -> Option<String> {
    share.as_f64().map(|s| format!("{:.0}%", s * 100.0))
}

/// The spreading part of a path's line, from its [`path_fields`]: `None` without a path.
/// `sends 62% (6.1 Mbit/s), 55% in all  cruise  bandwidth ...  pacing ...  window ... B
/// in flight ... B`.
pub fn path_text(p: &Value) -> Option<String> {
    let state = p["cc_state"].as_str()?;
    let now = percent(&p["send_share"]).map_or("sends -".to_string(), |s| {
        format!(
            "sends {s} ({})",
            rate_text(p["send_rate_bps"].as_f64().unwrap_or(0.0))
        )
    });
    let all = percent(&p["tx_share"]).map_or(String::new(), |s| format!(", {s} in all"));
    // Packets re-sent on another path when this one stopped answering: each is a copy
    // the far end may refuse as a duplicate.
    let resent = match p["resent_elsewhere"].as_u64() {
        Some(n) if n > 0 => format!("  resent elsewhere {n}"),
        _ => String::new(),
    };
    Some(format!(
        "{now}{all}  {state}  bandwidth {}  pacing {}  window {} B  in flight {} B{resent}",
        rate_text(p["bandwidth_bps"].as_f64().unwrap_or(0.0)),
        rate_text(p["pacing_rate_bps"].as_f64().unwrap_or(0.0)),
        p["cwnd_bytes"],
        p["bytes_in_flight"],
    ))
}

/// Lines for [`flows_json`], [`spread_json`] and (when the daemon has one) [`reorder_json`],
/// each starting with `indent`; the busiest flows one step further in.
pub fn spreading_text(
    out: &mut String,
    indent: &str,
    flows: &Value,
    spread: &Value,
    reorder: Option<&Value>,
) {
    let classes: Vec<String> = CLASSES
        .iter()
        .map(|class| {
            let c = &flows["classes"][class.name()];
            let mode = c["mode"].as_str().unwrap_or("?");
            let how = if c["configured"] == "auto" {
                format!("{mode} (auto)")
            } else {
                mode.to_string()
            };
            format!("{} {} {how}", class.name(), c["flows"])
        })
        .collect();
    let _ = writeln!(
        out,
        "{indent}flows {}  {}",
        flows["live"],
        classes.join("  ")
    );
    for f in flows["busiest"].as_array().into_iter().flatten() {
        let via = match (f["uplink"].as_str(), f["path"].as_u64()) {
            (Some(name), _) => format!("  on {name}"),
            (None, Some(id)) => format!("  on path {id}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{indent}  {}  {} {}  {}{via}",
            f["flow"].as_str().unwrap_or("?"),
            f["class"].as_str().unwrap_or("?"),
            f["mode"].as_str().unwrap_or("?"),
            rate_text(f["rate_bps"].as_f64().unwrap_or(0.0)),
        );
    }
    let _ = writeln!(
        out,
        "{indent}spread {} pkts  duplicated {} pkts / {} B ({:.1}% overhead)  repaired {}",
        spread["packets"],
        spread["duplicated_packets"],
        spread["duplicated_bytes"],
        spread["redundancy_overhead_pct"].as_f64().unwrap_or(0.0),
        spread["repaired"],
    );
    if let Some(r) = reorder {
        let _ = writeln!(
            out,
            "{indent}reorder timeout {:.0} ms  skew {:.1} ms  held {}  gaps timed out {}  late {}",
            r["timeout_ms"].as_f64().unwrap_or(0.0),
            r["skew_ms"].as_f64().unwrap_or(0.0),
            r["held"],
            r["gaps_timed_out"],
            r["late"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkpool_protocol::flow::Mode;

    /// An IPv4 TCP packet of `len` bytes from `sport` to 192.0.2.9:`dport`.
    fn tcp(sport: u16, dport: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 77, 0, 2]);
        p[16..20].copy_from_slice(&[192, 0, 2, 9]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x10;
        p
    }

    #[test]
    fn flows_by_class_with_modes_and_the_busiest_first() {
        let start = Instant::now();
        let mut table = FlowTable::new(64, 7);
        // One flow sends 1400-byte packets fast (bulk within the classifier's window),
        // another a few small ones.
        let mut now = start;
        for i in 0..400u32 {
            now = start + Duration::from_micros(u64::from(i) * 500);
            table.on_packet(now, &tcp(40000, 443, 1400));
            if i % 100 == 0 {
                table.on_packet(now, &tcp(40001, 8080, 80));
            }
        }
        let slot = table
            .iter()
            .find(|(_, f)| f.key().src_port() == 40000)
            .unwrap()
            .0;
        table.get_mut(slot).unwrap().path = Some(PathId(3));
        let modes = Modes {
            interactive: Mode::Auto,
            bulk: Mode::Session,
            default: Mode::Auto,
        };
        let j = flows_json(Some(&table), &modes, now, |p| {
            (p == PathId(3)).then(|| "wan".to_string())
        });
        assert_eq!(j["live"], 2);
        assert_eq!(j["capacity"], 64);
        assert_eq!(j["classes"]["bulk"]["flows"], 1, "{j}");
        assert_eq!(j["classes"]["bulk"]["mode"], "session");
        assert_eq!(j["classes"]["bulk"]["configured"], "session");
        assert_eq!(j["classes"]["interactive"]["mode"], "redundant");
        assert_eq!(j["classes"]["interactive"]["configured"], "auto");
        assert_eq!(j["classes"]["default"]["mode"], "session");
        let busiest = j["busiest"].as_array().unwrap();
        assert_eq!(busiest.len(), 2);
        assert_eq!(busiest[0]["flow"], "tcp 10.77.0.2:40000 > 192.0.2.9:443");
        assert_eq!(busiest[0]["src"], "10.77.0.2:40000");
        assert_eq!(busiest[0]["dst"], "192.0.2.9:443");
        assert_eq!(busiest[0]["protocol"], 6);
        assert_eq!(busiest[0]["class"], "bulk");
        assert_eq!(busiest[0]["mode"], "session");
        assert_eq!(busiest[0]["path"], 3);
        assert_eq!(busiest[0]["uplink"], "wan");
        assert!(busiest[0]["rate_bps"].as_u64().unwrap() > 10_000_000, "{j}");
        assert_eq!(busiest[1]["path"], Value::Null);
        assert_eq!(j["inserted"], 2);

        let mut out = String::new();
        let spread = spread_json(&SpreadCounters::default());
        spreading_text(&mut out, "  ", &j, &spread, None);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "  flows 2  interactive 0 redundant (auto)  bulk 1 session  default 1 session (auto)"
        );
        assert!(
            lines[1].starts_with("    tcp 10.77.0.2:40000 > 192.0.2.9:443  bulk session  "),
            "{out}"
        );
        assert!(lines[1].ends_with("Mbit/s  on wan"), "{out}");
        assert!(lines[2].ends_with("kbit/s"), "unpinned: no path; {out}");
        assert_eq!(
            lines[3],
            "  spread 0 pkts  duplicated 0 pkts / 0 B (0.0% overhead)  repaired 0"
        );
        assert_eq!(lines.len(), 4, "no reorder line without a reorder buffer");

        // Idle flows are left out; no table at all (no session yet) is all zeros.
        let later = now + Duration::from_secs(120);
        assert_eq!(flows_json(Some(&table), &modes, later, |_| None)["live"], 0);
        let none = flows_json(None, &Modes::default(), now, |_| None);
        assert_eq!(none["live"], 0);
        assert_eq!(none["classes"]["bulk"]["mode"], "packet");
        assert_eq!(none["busiest"], json!([]));
    }

    #[test]
    fn spread_counters_and_redundancy_overhead() {
        let c = SpreadCounters {
            packets: 1000,
            bytes: 400_000,
            duplicated_packets: 50,
            duplicated_bytes: 10_000,
            repaired: 3,
            by_class: [60, 900, 40],
        };
        let j = spread_json(&c);
        assert_eq!(j["redundancy_overhead_pct"], 2.5);
        assert_eq!(
            j["by_class"],
            json!({"interactive": 60, "bulk": 900, "default": 40})
        );
        assert_eq!(j["repaired"], 3);
        let r = Reorder::new(16, 16, 1500);
        let rj = reorder_json(&r);
        assert_eq!(rj["gaps_timed_out"], 0);
        assert!(rj["timeout_ms"].as_f64().unwrap() > 0.0, "{rj}");
        let mut out = String::new();
        let flows = flows_json(None, &Modes::default(), Instant::now(), |_| None);
        spreading_text(&mut out, "", &flows, &j, Some(&rj));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "spread 1000 pkts  duplicated 50 pkts / 10000 B (2.5% overhead)  repaired 3"
        );
        assert!(lines[2].starts_with("reorder timeout "), "{out}");
        assert!(
            lines[2].ends_with("held 0  gaps timed out 0  late 0"),
            "{out}"
        );
    }

    #[test]
    fn path_text_reads_the_fields() {
        let p = json!({
            "send_rate_bps": 6_100_000,
            "send_share": 0.625,
            "tx_share": 0.55,
            "cc_state": "cruise",
            "bandwidth_bps": 9_800_000,
            "pacing_rate_bps": 10_200_000,
            "cwnd_bytes": 61440,
            "bytes_in_flight": 12000,
        });
        assert_eq!(
            path_text(&p).unwrap(),
            "sends 62% (6.1 Mbit/s), 55% in all  cruise  bandwidth 9.8 Mbit/s  pacing 10.2 Mbit/s  window 61440 B  in flight 12000 B"
        );
        let idle = json!({"send_share": null, "tx_share": null, "cc_state": "startup",
            "bandwidth_bps": 0, "pacing_rate_bps": 800_000, "cwnd_bytes": 14000, "bytes_in_flight": 0});
        assert_eq!(
            path_text(&idle).unwrap(),
            "sends -  startup  bandwidth 0 kbit/s  pacing 800 kbit/s  window 14000 B  in flight 0 B"
        );
        let no_path = path_fields(None, Instant::now(), 0, 0);
        assert_eq!(path_text(&Value::Object(no_path)), None);
    }
}
