//! Credits on the real kernel: three members borrow one neighbour's line at once, and the
//! proxy shares it among them by their balances, as the co-op's rule says (weighted
//! max-min fair shares, the default). The admin grants the balances with
//! `linkpool-proxy credits grant`; the shares are read from the ledger's per-consumer
//! rows of what the lender's line carried (wire bytes, verified). Downloads are real curl
//! over real TUN devices and emulated links.

mod common;

use std::time::{Duration, Instant};

use common::mesh::{Download, active_path_via, status, wait_until};
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Topology};
use serde_json::Value;

/// Three members with slow lines of their own, and r4, whose fast line they borrow.
const BORROWERS: &str = r#"
name = "credits"

[[router]]
isp = { rate = "2mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "2mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "2mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[[router]]
isp = { rate = "21mbit", delay = "10ms" }
mesh = { delay = "1ms" }

[proxy]
link = { delay = "1ms" }

[internet]
link = { delay = "1ms" }
"#;

/// What r4's line carried down for member `n` so far (wire bytes, the ledger's): the
/// direction the proxy divides (upstream, r4's relay gives each neighbour the same).
fn carried_for(ledger: &Value, n: usize) -> u64 {
    let consumer = Pool::member_name(n);
    ledger["carried"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|r| r["relay"] == "member4" && r["consumer"] == consumer.as_str())
        .map(|r| r["down"].as_u64().unwrap())
        .sum()
}

fn balance(coop: &Coop, pool: &Pool, name: &str) -> i64 {
    let conf = pool.proxy_config();
    let text = coop
        .proxy()
        .exec_ok(&[
            pool.proxy_bin().to_str().unwrap(),
            "credits",
            "-c",
            conf.to_str().unwrap(),
            "--json",
        ])
        .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["member"] == name)
        .map_or(0, |b| b["balance"].as_i64().unwrap())
}

#[test]
fn a_contended_line_is_shared_by_balance() {
    let topology = Topology::parse(BORROWERS, "credits.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start_lending(&coop, &[4]).unwrap_or_else(|e| panic!("{e}"));
    for n in 1..=3 {
        wait_until(
            &coop,
            &pool,
            Duration::from_secs(20),
            &format!("r{n} to use r4's line"),
            || active_path_via(&coop, &status(&coop, &pool, n), 4),
        );
    }
    // Balances 1 : 2 : 4, granted by the admin, with reasons.
    let conf = pool.proxy_config();
    for (n, credits) in [(1, "1"), (2, "2"), (3, "4")] {
        let name = Pool::member_name(n);
        coop.proxy()
            .exec_ok(&[
                pool.proxy_bin().to_str().unwrap(),
                "credits",
                "grant",
                &name,
                credits,
                "--reason",
                "contention test",
                "-c",
                conf.to_str().unwrap(),
            ])
            .unwrap();
        assert_eq!(
            balance(&coop, &pool, &name),
            credits.parse::<i64>().unwrap() * 1000
        );
    }
    // The proxy learns the balances within a second.
    std::thread::sleep(Duration::from_secs(2));
    // Each wants more than it gets: several downloads each (one TCP flow alone may not
    // fill a share that moves).
    let downloads: Vec<Download> = (1..=3)
        .flat_map(|n| (0..3).map(move |k| (n, k)))
        .map(|(n, k)| Download::start(&coop, n, &format!("share{n}-{k}.bin"), 64 << 20))
        .collect();
    // Past slow start, for a window of ten seconds.
    std::thread::sleep(Duration::from_secs(6));
    let before = pool.ledger(&coop, &[]).unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    // The ledger has it all a second later.
    std::thread::sleep(Duration::from_millis(1500));
    let after = pool.ledger(&coop, &[]).unwrap();
    let took = start.elapsed();
    let proxy: Value = serde_json::from_str(&pool.proxy_status(&coop, true).unwrap()).unwrap();
    let caps: Vec<String> = proxy["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let relayed: Vec<String> = m["paths"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p["relay"].is_null())
                .map(|p| format!("cap {} bit/s", p["rate_cap_bps"]))
                .collect();
            format!(
                "{} balance {} {}",
                m["name"],
                m["balance"],
                relayed.join(", ")
            )
        })
        .collect();
    eprintln!("{}", caps.join("\n"));
    eprintln!("{}", pool.proxy_status(&coop, false).unwrap_or_default());
    let carried: Vec<u64> = (1..=3)
        .map(|n| carried_for(&after, n) - carried_for(&before, n))
        .collect();
    let total: u64 = carried.iter().sum();
    drop(downloads);
    let shares: Vec<f64> = carried.iter().map(|&c| c as f64 / total as f64).collect();
    eprintln!(
        "r4's line carried {:.1} Mbit/s down for the three borrowers over {:.0} s: shares {:.3} / \
         {:.3} / {:.3} (balances 1 : 2 : 4, the rule says {:.3} / {:.3} / {:.3})",
        total as f64 * 8e-6 / took.as_secs_f64(),
        took.as_secs_f64(),
        shares[0],
        shares[1],
        shares[2],
        1.0 / 7.0,
        2.0 / 7.0,
        4.0 / 7.0
    );
    for (i, (share, weight)) in shares.iter().zip([1.0, 2.0, 4.0]).enumerate() {
        let rule = weight / 7.0;
        assert!(
            (share - rule).abs() <= 0.1 * rule,
            "member{} got {share:.3} of r4's line, the rule says {rule:.3}: {:?}\n{}",
            i + 1,
            shares,
            pool.proxy_status(&coop, false).unwrap_or_default()
        );
    }
    // The borrowers paid for what they got, and r4 earned it (1 credit a GB each way,
    // the default): balances moved by what the ledger's rows say.
    let charged: i64 = (1..=3)
        .map(|n| {
            let name = Pool::member_name(n);
            after["usage"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["member"] == name.as_str())
                .map(|r| r["spent"].as_i64().unwrap())
                .sum::<i64>()
        })
        .sum();
    assert!(charged > 0, "nothing was charged");
    assert!(balance(&coop, &pool, "member4") > 0, "r4 earned nothing");
}
