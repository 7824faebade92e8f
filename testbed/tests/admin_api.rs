//! The proxy's admin HTTP API on the real daemon (docs/admin-api.md), asked with real curl
//! from the proxy's namespace in a one-member co-op: members, sessions, the ledger after a
//! download, the Prometheus metrics, and requests without the token refused and counted.
//! Run as root, with the daemons' debug builds (`cargo build --workspace --bins`).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use linkpool_testbed::Coop;
use linkpool_testbed::pool::Pool;
use serde_json::Value;

const TOKEN: &str = "testbed-admin-token-0123456789abcdef";
const LISTEN: &str = "127.0.0.1:7119";

/// `curl` from the proxy's namespace: status code and body.
fn curl(coop: &Coop, target: &str, token: Option<&str>) -> (u16, String) {
    let url = format!("http://{LISTEN}{target}");
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut argv = vec!["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"];
    if let Some(h) = &header {
        argv.extend(["-H", h.as_str()]);
    }
    argv.push(&url);
    let out = coop
        .proxy()
        .exec_ok(&argv)
        .unwrap_or_else(|e| panic!("{e}"));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status code from curl: {out}"));
    (code, body.to_string())
}

fn json(target: &str, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"))
}

/// The value of the metrics line that starts with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_admin_api_serves_members_sessions_ledger_and_metrics_to_the_token_only() {
    let coop = common::coop1();
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    let token_file = pool.dir.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conf = pool.proxy_config();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += &format!("\n[admin]\nlisten = \"{LISTEN}\"\ntoken_file = \"admin.token\"\n");
    std::fs::write(&conf, text).unwrap();
    pool.start_proxy(&coop).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = pool
        .proxy
        .as_mut()
        .unwrap()
        .wait_for_log("admin API listening", Duration::from_secs(5))
    {
        panic!(
            "the proxy does not serve its admin API (is admin_http::spawn wired into daemon::run?): {e}"
        );
    }
    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    pool.wait_connected(&coop, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    // Some traffic for the ledger and the counters: 1 MiB down to r1's client.
    let net = coop.internet();
    let file = net.serve_file("admin-api.bin", 1 << 20).unwrap();
    coop.client(1)
        .exec_ok(&[
            "curl",
            "-sS",
            "--fail",
            "-m",
            "60",
            "-o",
            "/dev/null",
            &net.url_v4(&file.path()),
        ])
        .unwrap_or_else(|e| panic!("download: {e}\n{}", pool.logs()));
    let member = Pool::member_name(1);

    // Without the token, or with another: 401, and nothing else said.
    let (code, body) = curl(&coop, "/api/v1/members", None);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains(&member), "{body}");
    let (code, _) = curl(&coop, "/metrics", Some("not-the-token-0123456789"));
    assert_eq!(code, 401);

    let (code, body) = curl(&coop, "/api/v1/members", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let v = json("members", &body);
    assert_eq!(v["version"], 1, "{v}");
    let m = &v["members"][0];
    assert_eq!(m["name"], member.as_str(), "{v}");
    assert_eq!(m["connected"], true, "{v}");
    assert!(m["session_age_s"].is_u64(), "{v}");
    assert!(!m["addresses"].as_array().unwrap().is_empty(), "{v}");

    let (code, body) = curl(&coop, "/api/v1/sessions", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let v = json("sessions", &body);
    assert_eq!(v["version"], 1);
    let paths = v["status"]["members"][0]["paths"].as_array().unwrap();
    assert!(!paths.is_empty(), "{v}");
    assert!(v["status"]["drops"].is_object(), "{v}");

    // The ledger, once the download's counts are written (once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let target = format!("/api/v1/ledger?member={member}&since=2020-01-01");
    let (code, body) = curl(&coop, &target, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let v = json("ledger", &body);
    assert_eq!(v["version"], 1);
    let rows = v["usage"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["member"] == member.as_str()), "{v}");
    let down: u64 = rows
        .iter()
        .map(|r| r["inner"]["down"].as_u64().unwrap())
        .sum();
    assert!(
        down >= 1 << 20,
        "the ledger has {down} bytes down for {member}: {v}"
    );
    let (code, body) = curl(&coop, "/api/v1/ledger?since=yesterday", Some(TOKEN));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("since: `yesterday` is not a time"), "{body}");
    let (code, _) = curl(&coop, "/api/v1/nothing", Some(TOKEN));
    assert_eq!(code, 404);

    let (code, text) = curl(&coop, "/metrics", Some(TOKEN));
    assert_eq!(code, 200, "{text}");
    let tx = metric(
        &text,
        &format!("linkpool_member_tx_bytes_total{{member=\"{member}\"}}"),
    );
    assert!(
        tx.is_some_and(|b| b >= f64::from(1 << 20)),
        "{tx:?}\n{text}"
    );
    assert_eq!(
        metric(&text, "linkpool_sessions_connected"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "linkpool_path_srtt_seconds{{member=\"{member}\",path=\""
        ))),
        "{text}"
    );
    assert_eq!(
        metric(&text, "linkpool_admin_responses_total{code=\"401\"}"),
        Some(2.0),
        "{text}"
    );
    if let Some(lag) = metric(&text, "linkpool_ledger_flush_lag_seconds") {
        assert!(lag < 5.0, "{text}");
    }
    eprintln!("{text}");
}
