//! Pooling a router's own uplinks, on the real daemons, real TUN and real curl in a
//! namespace co-op: one download from a LAN client over a router with three ISP links
//! (the bench's `three-uplinks`: 10, 20 and 5 Mbit/s at 10, 30 and 60 ms one way) uses all
//! three, each carrying a real share of it, counted on the emulated links, and arrives
//! whole. How fast it was against each line alone is the benchmark's affair (printed with
//! `--nocapture`, not asserted).

mod common;

use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Direction, Topology};

const THREE_UPLINKS: &str = r#"
name = "threewan"

[[router]]
isp = [
    { rate = "10mbit", delay = "10ms" },    # wan  (r1-wan)
    { rate = "20mbit", delay = "30ms" },    # wan2 (r1-wan2)
    { rate = "5mbit", delay = "60ms" },     # wan3 (r1-wan3)
]
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

#[test]
fn a_download_over_three_uplinks_uses_all_three() {
    let topology = Topology::parse(THREE_UPLINKS, "pooling.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start(&coop).unwrap_or_else(|e| panic!("{e}"));
    let links = coop.router(1).wan_links();
    assert_eq!(links.len(), 3);
    let down = |name: &String| {
        coop.link(name)
            .unwrap()
            .stats(Direction::Downstream)
            .bytes_out
    };
    let file = coop.internet().serve_file("three.bin", 24 << 20).unwrap();
    let out = coop.run_dir().join("three.download");
    let before: Vec<u64> = links.iter().map(down).collect();
    let client = coop.client(1);
    let speed = client
        .exec_ok(&[
            "curl",
            "-sS",
            "--fail",
            "-m",
            "120",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{speed_download}",
            &coop.internet().url_v4(&file.path()),
        ])
        .unwrap_or_else(|e| panic!("the download failed: {e}\n{}", pool.logs()));
    let got = client
        .exec_ok(&["sha256sum", out.to_str().unwrap()])
        .unwrap();
    assert_eq!(
        got.split_whitespace().next().unwrap_or_default(),
        file.sha256,
        "wrong bytes"
    );
    let carried: Vec<u64> = links
        .iter()
        .zip(&before)
        .map(|(l, b)| down(l) - b)
        .collect();
    let total: u64 = carried.iter().sum();
    let shares: Vec<String> = links
        .iter()
        .zip(&carried)
        .map(|(l, c)| format!("{l} {:.1} %", *c as f64 * 100.0 / total as f64))
        .collect();
    eprintln!(
        "24 MiB through the pool at {:.1} Mbit/s; downstream shares {} (the links' rates: 29, \
         57, 14 %)",
        speed.trim().parse::<f64>().unwrap_or(f64::NAN) * 8.0 / 1e6,
        shares.join(", ")
    );
    // A real share each: not probes (a few kB/s: ~0.05 % of this download), a part of the
    // download. The slow, distant line gets only what it delivers sooner than waiting for
    // the others (ECF): 3.4-11.5 % of the bytes over 8 runs, so the bar is 2 %.
    assert!(
        total >= file.size,
        "the links carried {total} bytes of a {} byte file",
        file.size
    );
    for (link, &c) in links.iter().zip(&carried) {
        assert!(
            c as f64 >= 0.02 * total as f64,
            "{link} carried {c} of {total} bytes: {}\n{}",
            shares.join(", "),
            pool.gateway_status(&coop, 1, false).unwrap_or_default()
        );
    }
}
