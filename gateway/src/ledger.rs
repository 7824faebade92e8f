//! This member's account as the proxy signs it: the `ledger` part of the status, and
//! `linkpool ledger`'s view of it.

use linkpool_protocol::client::Client;
use linkpool_protocol::statement::Rating;
use serde_json::{Value, json};

/// The `ledger` object of the status: the last statement the proxy sent, with whether its
/// signature verified, and this router's relay rating (verified); `null` before the first.
pub fn status_json(client: &Client) -> Value {
    let rating = client.rating().map(|r| rating_json(&r.rating));
    let Some(r) = client.statement() else {
        return json!({"statement": null, "rating": rating});
    };
    let s = &r.statement;
    json!({
        "rating": rating,
        "statement": {
            "verified": r.verified,
            "member": s.member,
            "period_start": s.period_start,
            "period_end": s.period_end,
            "consumed": {"up": s.consumed_up, "down": s.consumed_down},
            "carried": {"up": s.carried_up, "down": s.carried_down},
            "earned": s.earned,
            "spent": s.spent,
            "balance": s.balance,
            "issued_at": s.issued_at,
        }
    })
}

/// A relay rating in the status (this router's, or a neighbour's).
pub fn rating_json(r: &Rating) -> Value {
    json!({
        "window_start": r.window_start,
        "window_end": r.window_end,
        "offered_bytes": r.bytes_offered,
        "delivered_bytes": r.bytes_delivered,
        "delivered_permille": r.delivered_permille(),
        "uptime_permille": r.uptime_permille,
        "line_rate_bps": u64::from(r.line_rate) * 8,
        "issued_at": r.issued_at,
        "expires_at": r.expires_at,
    })
}

/// What `linkpool ledger` prints from a status document: the `ledger` object as JSON
/// (`json`), or for people.
pub fn render(status: &Value, json: bool) -> String {
    let ledger = &status["ledger"];
    if json {
        let doc = json!({
            "version": 1,
            "statement": ledger["statement"],
            "rating": ledger["rating"],
        });
        return serde_json::to_string_pretty(&doc).unwrap_or_default();
    }
    let s = &ledger["statement"];
    if s.is_null() {
        return "no statement from the proxy yet (it sends one within a minute of connecting)"
            .to_string();
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let credits = |v: &Value| {
        let m = v.as_i64().unwrap_or(0);
        format!(
            "{}{}.{:03}",
            if m < 0 { "-" } else { "" },
            m.abs() / 1000,
            m.abs() % 1000
        )
    };
    let bytes = |v: &Value| format!("{:.1} MB", n(v) as f64 / 1e6);
    format!(
        "statement for {} to {} (UTC), issued {}, signature {}\n\
         consumed      {} up, {} down\n\
         carried       {} up, {} down, for neighbours\n\
         credits       earned {}, spent {}, balance {}\n",
        date(n(&s["period_start"])),
        date(n(&s["period_end"])),
        time(n(&s["issued_at"])),
        if s["verified"] == true {
            "verified"
        } else {
            "NOT VERIFIED (do not trust these figures)"
        },
        bytes(&s["consumed"]["up"]),
        bytes(&s["consumed"]["down"]),
        bytes(&s["carried"]["up"]),
        bytes(&s["carried"]["down"]),
        credits(&s["earned"]),
        credits(&s["spent"]),
        credits(&s["balance"]),
    ) + &render_rating(&ledger["rating"])
}

/// The relay rating's line of `linkpool ledger`.
fn render_rating(r: &Value) -> String {
    if r.is_null() {
        return "relay rating  none yet (the proxy sends one within a minute)\n".to_string();
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let delivered = match r["delivered_permille"].as_u64() {
        Some(p) => format!(
            "delivered {}.{} % of {:.1} MB offered",
            p / 10,
            p % 10,
            n(&r["offered_bytes"]) as f64 / 1e6
        ),
        None => "nothing offered to it".to_string(),
    };
    let up = n(&r["uptime_permille"]);
    format!(
        "relay rating  {delivered}, up {}.{} %, line {:.1} Mbit/s, since {} (signed, until {})\n",
        up / 10,
        up % 10,
        n(&r["line_rate_bps"]) as f64 / 1e6,
        time(n(&r["window_start"])),
        time(n(&r["expires_at"])),
    )
}

fn date(unix_s: u64) -> String {
    let (y, m, d) = linkpool_protocol::calendar::civil_from_days((unix_s / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn time(unix_s: u64) -> String {
    let s = unix_s % 86_400;
    format!("{}T{:02}:{:02}Z", date(unix_s), s / 3600, s % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_reads_for_people_and_says_when_it_did_not_verify() {
        let mut status = json!({"ledger": {"statement": {
            "verified": true, "member": 2, "period_start": 1_796_083_200u64,
            "period_end": 1_798_761_600u64, "consumed": {"up": 1_500_000, "down": 25_000_000},
            "carried": {"up": 0, "down": 3_000_000}, "earned": 3, "spent": 1500,
            "balance": -1497, "issued_at": 1_796_668_215u64}}});
        let text = render(&status, false);
        assert!(
            text.starts_with("statement for 2026-12-01 to 2027-01-01 (UTC), issued 2026-12-07T18:30Z, signature verified"),
            "{text}"
        );
        assert!(text.contains("1.5 MB up, 25.0 MB down"), "{text}");
        assert!(
            text.contains("earned 0.003, spent 1.500, balance -1.497"),
            "{text}"
        );
        status["ledger"]["statement"]["verified"] = json!(false);
        assert!(render(&status, false).contains("NOT VERIFIED"));
        let doc: Value = serde_json::from_str(&render(&status, true)).unwrap();
        assert_eq!(doc["statement"]["balance"], -1497);
        assert!(render(&json!({"ledger": {"statement": null}}), false).contains("no statement"));
        assert!(text.contains("relay rating  none yet"), "{text}");
    }

    #[test]
    fn a_relay_rating_reads_for_people() {
        let rating = Rating {
            member: 2,
            window_start: 1_796_668_200,
            window_end: 1_796_668_800,
            bytes_offered: 40_000_000,
            bytes_delivered: 39_700_000,
            uptime_permille: 1000,
            line_rate: 2_000_000,
            issued_at: 1_796_668_800,
            expires_at: 1_796_670_600,
        };
        let mut status = json!({"ledger": {"statement": {"verified": true},
            "rating": rating_json(&rating)}});
        let text = render(&status, false);
        assert!(
            text.contains(
                "relay rating  delivered 99.2 % of 40.0 MB offered, up 100.0 %, line 16.0 Mbit/s, \
                 since 2026-12-07T18:30Z (signed, until 2026-12-07T19:10Z)"
            ),
            "{text}"
        );
        status["ledger"]["rating"]["delivered_permille"] = Value::Null;
        assert!(render(&status, false).contains("nothing offered to it"));
        let doc: Value = serde_json::from_str(&render(&status, true)).unwrap();
        assert_eq!(doc["rating"]["line_rate_bps"], 16_000_000);
    }
}
