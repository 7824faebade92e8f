//! Credits on the real kernel: three members borrow one neighbour's line at once, and the
//! proxy shares it among them by their balances, as the co-op's rule says (weighted
//! max-min fair shares, the default). The admin grants the balances with
//! `linkpool-proxy credits grant`; the shares are read from the ledger's per-consumer
//! rows of what the lender's line carried (wire bytes, verified). Downloads are real curl
//! over real TUN devices and emulated links.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::mesh::{Download, active_path_via, status, wait_until};
use linkpool_testbed::pool::Pool;
use linkpool_testbed::{Coop, Topology};
use serde_json::Value;

/// The shares are measurements: one test at a time (two at once on two cores starve the
/// link emulators: the line carried 15.7 Mbit/s of its 21 and shares drifted by 12 %).
static SERIAL: Mutex<()> = Mutex::new(());

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

/// Waits until r1, r2 and r3 each have a path through r4's line.
fn borrowing_from_r4(coop: &Coop, pool: &Pool) {
    for n in 1..=3 {
        wait_until(
            coop,
            pool,
            Duration::from_secs(20),
            &format!("r{n} to use r4's line"),
            || active_path_via(coop, &status(coop, pool, n), 4),
        );
    }
}

/// Three downloads for each of r1, r2 and r3 at once, each wanting more than it gets (one
/// TCP flow alone may not fill a share that moves): the ledger before and after a window
/// of ten seconds past their slow start, and how long the window took. The downloads
/// are still running when it returns.
fn contend(coop: &Coop, pool: &Pool, name: &str) -> (Value, Value, Duration, Vec<Download>) {
    let downloads: Vec<Download> = (1..=3)
        .flat_map(|n| (0..3).map(move |k| (n, k)))
        .map(|(n, k)| Download::start(coop, n, &format!("{name}{n}-{k}.bin"), 64 << 20))
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    let before = pool.ledger(coop, &[]).unwrap();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    // The ledger has it all a second later.
    std::thread::sleep(Duration::from_millis(1500));
    let after = pool.ledger(coop, &[]).unwrap();
    (before, after, start.elapsed(), downloads)
}

#[test]
fn a_contended_line_is_shared_by_balance() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topology = Topology::parse(BORROWERS, "credits.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::start_lending(&coop, &[4]).unwrap_or_else(|e| panic!("{e}"));
    borrowing_from_r4(&coop, &pool);
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
    let (before, after, took, downloads) = contend(&coop, &pool, "share");
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

/// The same line, auctioned (the co-op's other rule): each member's gateway bids its
/// owner's ceiling (1, 2 and 4 credits a GB), and the proxy sells the line every 10 ms
/// by sealed-bid second-price auction. The highest bidder gets the line, the others the
/// least rate a path keeps, and it pays for what it got the bids it displaced (at most 2
/// credits a GB), not its own nor the tariff (1), as the ledger's rows show.
#[test]
fn an_auctioned_line_goes_to_the_highest_bid_at_the_second_price() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topology = Topology::parse(BORROWERS, "credits.rs").unwrap();
    let coop = Coop::build(&topology).unwrap_or_else(|e| panic!("cannot build the testbed: {e}"));
    let pool = Pool::configure_lending(&coop, &[4]).unwrap_or_else(|e| panic!("{e}"));
    let append = |path: std::path::PathBuf, text: &str| {
        let mut conf = std::fs::read_to_string(&path).unwrap();
        conf += text;
        std::fs::write(&path, conf).unwrap();
    };
    append(
        pool.proxy_config(),
        "\n[credits]\ncontention = \"auction\"\n",
    );
    for (n, bid) in [(1, "1.0"), (2, "2.0"), (3, "4.0")] {
        append(
            pool.gateway_config(n),
            &format!("\n[borrowing]\nmax_price_per_gb = {bid}\n"),
        );
    }
    let pool = pool.start_all(&coop).unwrap_or_else(|e| panic!("{e}"));
    borrowing_from_r4(&coop, &pool);
    let (before, after, took, downloads) = contend(&coop, &pool, "bid");
    drop(downloads);
    let carried: Vec<u64> = (1..=3)
        .map(|n| carried_for(&after, n) - carried_for(&before, n))
        .collect();
    let total: u64 = carried.iter().sum();
    let shares: Vec<f64> = carried.iter().map(|&c| c as f64 / total as f64).collect();
    // What each spent over the window, per GB it borrowed.
    let spent = |ledger: &Value, n: usize| -> (i64, u64) {
        let name = Pool::member_name(n);
        ledger["usage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["member"] == name.as_str())
            .fold((0, 0), |(s, b), r| {
                (
                    s + r["spent"].as_i64().unwrap(),
                    b + r["borrowed"]["up"].as_u64().unwrap()
                        + r["borrowed"]["down"].as_u64().unwrap(),
                )
            })
    };
    let price = |n: usize| {
        let ((s0, b0), (s1, b1)) = (spent(&before, n), spent(&after, n));
        (s1 - s0) as f64 / ((b1 - b0) as f64 / 1e9) / 1000.0
    };
    eprintln!(
        "r4's line carried {:.1} Mbit/s down over {:.0} s: shares {:.3} / {:.3} / {:.3} for \
         bids 1 / 2 / 4 credits a GB; r3 paid {:.2} credits a GB (r1 {:.2}, r2 {:.2})",
        total as f64 * 8e-6 / took.as_secs_f64(),
        took.as_secs_f64(),
        shares[0],
        shares[1],
        shares[2],
        price(3),
        price(1),
        price(2),
    );
    let status = pool.proxy_status(&coop, false).unwrap_or_default();
    assert!(
        shares[2] >= 0.9,
        "the highest bid got {:.3} of the line: {shares:?}\n{status}",
        shares[2]
    );
    // Never its own bid, nor more than the one it displaced (2); more than the tariff (1),
    // as the others bid on for the line. Less than 2 on average: in the intervals when a
    // loser's flows backed off and wanted little, the line displaced little of its bid and
    // the rest went at the reserve (0), and the acknowledgements up go at the tariff
    // (measured: 1.75-1.77). (The losers' few hundred kB are too few to price: a row's
    // cost is rounded up to a milli-credit.)
    let p3 = price(3);
    assert!(
        (1.2..=2.05).contains(&p3),
        "r3 paid {p3:.3} credits a GB\n{status}"
    );
}
