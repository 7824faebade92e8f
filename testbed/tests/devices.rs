//! Per-device limits on the owner's LAN, on the real daemons, real TUN and real curl in a
//! one-router co-op whose line is 20 Mbit/s (10 ms each way):
//!
//! * The LAN client is two devices: `kid` at its first address, given by address with a
//!   2 MB daily threshold and a 1 Mbit/s floor, and `laptop` at a second address, given by
//!   the client's MAC (found in the router's neighbour table), with no threshold.
//! * Before the threshold, the kid's download runs at the line's rate.
//! * Once over it, the kid's download runs at the floor (within 25 %, measured on the
//!   LAN with nftables counters: IP packet bytes) while the laptop's, at the same time,
//!   does not.
//! * Status shows both (addresses, bytes, limited, dropped), and what it counted down for
//!   each is, within 1 %, what crossed the LAN to it; a clean restart keeps the kid
//!   limited (the state file), and a stop removes the devices' nftables table.

mod common;

use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Process, Router, Topology};
use serde_json::Value;

const TOPOLOGY: &str = r#"
name = "devices"

[[router]]
isp = { rate = "20mbit", delay = "10ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

const TABLE: &str = "lpt_devices";
/// The kid's floor, bits per second.
const FLOOR_BPS: f64 = 1e6;
/// How long the rates are measured over.
const WINDOW: Duration = Duration::from_secs(8);

/// nftables counters on the router's LAN: IPv4 packets from the Internet host to each of
/// the client's two addresses (what the devices received, headers included).
struct Witness<'a> {
    router: &'a Router,
}

impl<'a> Witness<'a> {
    fn install(coop: &Coop, router: &'a Router, kid: &str, laptop: &str) -> Witness<'a> {
        let lan = router.lan_device();
        let internet = coop.internet().addr_v4();
        let ruleset = format!(
            "table inet {TABLE} {{
                counter kid_down {{ }}
                counter laptop_down {{ }}
                chain post {{
                    type filter hook postrouting priority 300; policy accept;
                    oifname \"{lan}\" ip saddr {internet} ip daddr {kid} counter name kid_down
                    oifname \"{lan}\" ip saddr {internet} ip daddr {laptop} counter name laptop_down
                }}
            }}"
        );
        common::nft_install(coop, router, "devices", &ruleset);
        Witness { router }
    }

    fn bytes(&self, name: &str) -> u64 {
        common::nft_counter(self.router, TABLE, name).1
    }

    /// Bits per second each counter grew at over `window`.
    fn rates(&self, names: [&str; 2], window: Duration) -> [f64; 2] {
        let (a, t) = (names.map(|n| self.bytes(n)), Instant::now());
        std::thread::sleep(window);
        let b = names.map(|n| self.bytes(n));
        let secs = t.elapsed().as_secs_f64();
        [0, 1].map(|i| (b[i] - a[i]) as f64 * 8.0 / secs)
    }
}

fn status(coop: &Coop, pool: &Pool) -> Value {
    pool.gateway_status(coop, 1, true)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

/// The entry of device `name` in the status's `devices[]`.
fn device(status: &Value, name: &str) -> Value {
    status["devices"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_until(what: &str, timeout: Duration, pool: &Pool, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "waited {timeout:?} for {what}\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A download by the client from `from`, in the background.
fn download(coop: &Coop, from: &str, name: &str, size: u64, max_s: u64) -> Process {
    let file = coop.internet().serve_file(name, size).unwrap();
    let url = coop.internet().url_v4(&file.path());
    coop.client(1)
        .spawn(&[
            "curl",
            "-sS",
            "--interface",
            from,
            "-m",
            &max_s.to_string(),
            "-o",
            "/dev/null",
            &url,
        ])
        .unwrap()
}

#[test]
fn a_device_over_its_threshold_gets_its_floor_and_the_others_do_not() {
    let topology = Topology::parse(TOPOLOGY, "devices.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let client = coop.client(1);
    let kid = client.addr_v4().to_string();
    let laptop = std::net::Ipv4Addr::from(u32::from(client.addr_v4()) + 1).to_string();
    client
        .exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{laptop}/24"),
            "dev",
            client.device(),
        ])
        .unwrap();
    let link: Value = serde_json::from_str(
        &client
            .exec_ok(&["ip", "-j", "link", "show", client.device()])
            .unwrap(),
    )
    .unwrap();
    let mac = link[0]["address"].as_str().unwrap().to_string();

    let mut pool = Pool::configure(&coop).unwrap();
    let conf = pool.gateway_config(1);
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += &format!(
        "\n[[device]]\nname = \"kid\"\naddresses = [\"{kid}\"]\ndaily_mb = 2\nfloor_mbit = 1\n\
         \n[[device]]\nname = \"laptop\"\nmac = \"{mac}\"\n"
    );
    std::fs::write(&conf, text).unwrap();
    pool.start_proxy(&coop).unwrap();
    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("{e}\n{}", pool.logs()));
    let router = coop.router(1);
    let witness = Witness::install(&coop, router, &kid, &laptop);
    let internet = coop.internet().addr_v4().to_string();

    // The laptop's address is found by its MAC once the router has seen it.
    client
        .exec_ok(&[
            "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-I", &laptop, &internet,
        ])
        .unwrap();
    wait_until(
        "the laptop's address to be found by its MAC",
        Duration::from_secs(15),
        &pool,
        || {
            device(&status(&coop, &pool), "laptop")["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == laptop.as_str()))
        },
    );

    // Before the threshold: the line's rate.
    let before = witness.bytes("kid_down");
    let started = Instant::now();
    let mut first = download(&coop, &kid, "small.bin", 1_500_000, 30);
    let ok = first.wait_timeout(Duration::from_secs(35)).unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        ok.is_some_and(|s| s.success()),
        "the first download: {}",
        first.log()
    );
    let fast = (witness.bytes("kid_down") - before) as f64 * 8.0 / took;
    let s = device(&status(&coop, &pool), "kid");
    eprintln!(
        "before the threshold: 1.5 MB in {took:.2} s, {:.1} Mbit/s (curl's whole time); kid today {} B, limited {}",
        fast / 1e6,
        s["today_bytes"],
        s["limited"]
    );
    assert_eq!(s["limited"], false, "{s}");
    assert!(
        fast > 4.0 * FLOOR_BPS,
        "before the threshold: {fast:.0} bit/s"
    );

    // Over it: the kid's download at the floor, the laptop's beside it not.
    let _kid_download = download(&coop, &kid, "big.bin", 20_000_000, 60);
    wait_until(
        "the kid to go over 2 MB today",
        Duration::from_secs(20),
        &pool,
        || device(&status(&coop, &pool), "kid")["limited"] == true,
    );
    let _laptop_download = download(&coop, &laptop, "other.bin", 40_000_000, 60);
    // TCP settles on the floor within a few round trips; the laptop's ramps up.
    std::thread::sleep(Duration::from_secs(3));
    let [kid_rate, laptop_rate] = witness.rates(["kid_down", "laptop_down"], WINDOW);
    let s = status(&coop, &pool);
    let (k, l) = (device(&s, "kid"), device(&s, "laptop"));
    eprintln!(
        "over the threshold, on the LAN over {WINDOW:?}: kid {:.3} Mbit/s (floor {:.1}, {:+.1} %), laptop {:.2} Mbit/s",
        kid_rate / 1e6,
        FLOOR_BPS / 1e6,
        (kid_rate / FLOOR_BPS - 1.0) * 100.0,
        laptop_rate / 1e6,
    );
    eprintln!("kid: {k}\nlaptop: {l}");
    eprintln!(
        "{}",
        pool.gateway_status(&coop, 1, false).unwrap_or_default()
    );
    assert!(
        (kid_rate / FLOOR_BPS - 1.0).abs() <= 0.25,
        "the kid's download ran at {kid_rate:.0} bit/s, its floor is {FLOOR_BPS:.0}"
    );
    assert!(
        laptop_rate > 5.0 * FLOOR_BPS,
        "the laptop's download ran at {laptop_rate:.0} bit/s beside the kid's"
    );
    assert_eq!(
        (k["limited"].clone(), k["why_limited"].clone()),
        (true.into(), "over_daily".into())
    );
    assert!(k["dropped_packets"].as_u64().unwrap() > 0, "{k}");
    assert!(k["today_bytes"].as_u64().unwrap() >= 2_000_000, "{k}");
    assert_eq!(k["addresses"], serde_json::json!([kid]));
    assert_eq!(l["limited"], false, "{l}");
    assert_eq!(l["dropped_packets"], 0, "{l}");
    assert!(
        l["today_bytes"].as_u64().unwrap() > 5_000_000,
        "the laptop's bytes are counted as its: {l}"
    );
    let text = pool.gateway_status(&coop, 1, false).unwrap();
    assert!(
        text.contains("device kid (") && text.contains("today's threshold reached"),
        "{text}"
    );
    drop(_kid_download);
    drop(_laptop_download);

    // What the core counted down for each is what crossed the LAN to it (the same IP
    // packets: masquerading does not change their length).
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&coop, &pool);
    for (name, counter) in [("kid", "kid_down"), ("laptop", "laptop_down")] {
        let counted = device(&s, name)["down_bytes"].as_u64().unwrap();
        let crossed = witness.bytes(counter);
        eprintln!(
            "{name}: counted down {counted} B, crossed the LAN {crossed} B ({:+.2} %)",
            (counted as f64 / crossed as f64 - 1.0) * 100.0
        );
        assert!(
            (counted as f64 / crossed as f64 - 1.0).abs() < 0.01,
            "{name}: the gateway counted {counted} B down, the LAN carried {crossed} B"
        );
    }

    // A clean restart: still over today (the state file), and the table gone at stop.
    let counted = k["today_bytes"].as_u64().unwrap();
    let status_code = pool.gateways[0].stop(Duration::from_secs(10)).unwrap();
    assert!(
        status_code.success(),
        "the gateway's clean stop: {status_code}"
    );
    assert!(
        router
            .exec(&["nft", "list", "table", "inet", "linkpool_devices"])
            .is_ok_and(|o| !o.status.success()),
        "the devices' nftables table is left after a stop"
    );
    pool.gateways.clear();
    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("{e}\n{}", pool.logs()));
    let k = device(&status(&coop, &pool), "kid");
    eprintln!("after a restart: kid {k}");
    assert_eq!(k["limited"], true, "{k}");
    assert!(k["today_bytes"].as_u64().unwrap() >= counted, "{k}");
}
