//! Risk tiers, partial liquidation, the index feed and premium funding on
//! the real binary, with the figures of `plugins/positions` unit tests
//! computed by hand (`docs/positions.md`): a tier-3 long is cut back to
//! tier 2 through the book and left healthy; an index price samples the
//! premium against the book's mid and derives the mark; funding without a
//! rate is computed from that premium; the reconcile example agrees; and the
//! history replays and verifies.

mod support;

use serde_json::{Value, json};
use support::*;

fn trader_with(host: &Host, usd: &str) -> Trader {
    let user = host.admin("POST", "/admin/v1/users", json!({})).ok();
    let trader = Trader {
        user_id: user["user_id"].as_u64().unwrap(),
        api_key: user["api_key"].as_str().unwrap().to_string(),
        api_secret: user["api_secret"].as_str().unwrap().to_string(),
    };
    host.admin("POST", "/admin/v1/deposits", json!({"user_id": trader.user_id, "asset": "USD", "amount": usd})).ok();
    trader
}

fn account(host: &Host, user_id: u64) -> Value {
    host.admin("GET", &format!("/admin/v1/accounts/{user_id}"), Value::Null).ok()
}

fn tiered_market(host: &Host, symbol: &str, risk: Value) -> Answer {
    let module = host.get("/v1/markets").ok()[0]["matching_module"].clone();
    host.admin(
        "POST",
        "/admin/v1/markets",
        json!({"symbol": symbol, "base": "BTC", "quote": "USD", "tick_size": "0.1", "lot_size": "0.001",
               "matching_module": module, "risk": risk}),
    )
}

#[test]
fn tiers_partial_liquidation_index_marks_and_premium_funding() {
    let dir = TempDir::new("risk");
    let host = Host::start(dir.path());
    let tiers = json!([
        {"notional_max": "50000", "initial_margin": "0.02", "maintenance_margin": "0.01"},
        {"notional_max": "250000", "initial_margin": "0.05", "maintenance_margin": "0.025"},
        {"notional_max": "1000000", "initial_margin": "0.1", "maintenance_margin": "0.05"},
    ]);
    // Malformed terms are refused before the journal, and change nothing.
    let last = host.last_event_seq();
    for (risk, why) in [
        (
            json!({"tiers": [{"notional_max": "10", "initial_margin": "0.01", "maintenance_margin": "0.02"}]}),
            "maintenance",
        ),
        (json!({"tiers": [tiers[1], tiers[0]]}), "rise"),
        (json!({"tiers": tiers, "initial_margin": "0.1"}), "either"),
        (json!({"tiers": []}), "at least one"),
        (json!({"funding_interval_hours": 0}), "funding_interval_hours"),
    ] {
        let refused = tiered_market(&host, "BAD-PERP", risk.clone());
        assert_eq!((refused.status, refused.code()), (400, "bad_request"), "{risk}");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains(why), "{risk}: {}", refused.body);
    }
    assert_eq!(host.last_event_seq(), last);
    tiered_market(&host, "TIER-PERP", json!({"tiers": tiers, "funding_interval_hours": 8})).ok();
    let markets = host.get("/v1/markets").ok();
    let market = markets.as_array().unwrap().iter().find(|m| m["symbol"] == "TIER-PERP").unwrap().clone();
    assert_eq!(market["risk"]["tiers"][1]["notional_max"], "250000.000000");
    assert_eq!(market["risk"]["tiers"][2]["maintenance_margin"], "0.05000000");
    assert_eq!(
        (market["risk"]["initial_margin"].as_str(), market["risk"]["funding_rate_cap"].as_str()),
        (Some("0.02000000"), Some("0.00750000"))
    );

    let (maker, bidder) = (host.new_trader(), host.new_trader());
    let victim = trader_with(&host, "15835");
    let limit = |who: &Trader, side: &str, price: &str, qty: &str| {
        host.signed(
            who,
            "POST",
            "/v1/orders",
            Some(json!({"symbol": "TIER-PERP", "side": side, "type": "limit", "price": price, "qty": qty})),
        )
        .ok()
    };
    limit(&maker, "sell", "27000", "10.000");
    // Long 10 BTC at 27,000 (tier 3): the taker fee is 135 USD.
    assert_eq!(limit(&victim, "buy", "27000", "10.000")["status"], "filled");
    let before = account(&host, victim.user_id);
    // Maintenance 270,000 × 5% − 7,000; initial 270,000 × 10% − 14,000.
    assert_eq!(
        (before["maintenance_margin"].as_str(), before["initial_margin"].as_str()),
        (Some("6500.000000"), Some("13000.000000"))
    );
    limit(&bidder, "buy", "26000", "10.000");

    // Mark 26,000: equity 5,700 < maintenance 6,000. One step, to tier 2's
    // bound: 0.385 BTC sold to the bid at 26,000, and the account is healthy.
    let moved = host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "TIER-PERP", "price": "26000"})).ok();
    let orders: Vec<&str> = moved["liquidations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "liquidation_order")
        .map(|e| e["qty"].as_str().unwrap())
        .collect();
    assert_eq!(orders, vec!["0.385"]);
    let after = account(&host, victim.user_id);
    assert_eq!(after["positions"][0]["size"], "9.615");
    // 249,990 × 2.5% − 750; equity 5,700 − 5.005 taker fee − 50.05 liquidation fee.
    assert_eq!(
        (after["maintenance_margin"].as_str(), after["equity"].as_str()),
        (Some("5499.750000"), Some("5644.945000"))
    );
    let ledger = host.admin("GET", "/admin/v1/ledger", Value::Null).ok();
    assert_eq!(
        (ledger["USD"]["imbalance"].as_str(), ledger["USD"]["insurance_fund"].as_str()),
        (Some("0.000000"), Some("50.050000"))
    );

    // The index at 26,000 with the book at 26,000 / 26,100: mid 26,050, premium
    // 50 / 26,000 = 0.00192307 (floored); the mark is the median of 26,000
    // (no funding yet), 26,050 (index + basis) and 26,000 (last trade).
    limit(&maker, "sell", "26100", "1.000");
    let index = host.admin("POST", "/admin/v1/index-prices", json!({"symbol": "TIER-PERP", "price": "26000"})).ok();
    assert_eq!(
        (index["mid_price"].as_str(), index["premium"].as_str(), index["mark_price"].as_str()),
        (Some("26050.0"), Some("0.00192307"), Some("26000.0"))
    );
    let bad = host.admin("POST", "/admin/v1/index-prices", json!({"symbol": "TIER-PERP", "price": "0"}));
    assert_eq!((bad.status, bad.code()), (400, "invalid_price"));
    // Funding without a rate: 0.00192307 + clamp(0.0001 − 0.00192307, ±0.0005) = 0.00142307.
    let funding = host.admin("POST", "/admin/v1/funding", json!({"symbol": "TIER-PERP"})).ok();
    assert_eq!(funding["rate"], "0.00142307");
    // Sampled afresh: the interest alone next time; an explicit rate still overrides.
    assert_eq!(host.admin("POST", "/admin/v1/funding", json!({"symbol": "TIER-PERP"})).ok()["rate"], "0.00010000");
    assert_eq!(
        host.admin("POST", "/admin/v1/funding", json!({"symbol": "TIER-PERP", "rate": "-0.0002"})).ok()["rate"],
        "-0.00020000"
    );
    let kinds: Vec<String> = host.all_events().iter().filter_map(|e| e["type"].as_str().map(String::from)).collect();
    assert!(kinds.iter().any(|k| k == "index_price"), "the index is an event");
    let account_before = account(&host, victim.user_id);
    // The reconcile example follows all of it from the event stream alone,
    // tiered maintenance margins included, and agrees with the host to the unit.
    let report = exhost_examples::reconcile::run(&host.base, ADMIN_TOKEN).unwrap();
    assert_eq!(report.mismatches, Vec::<String>::new(), "{:#?}", report.lines);
    assert!(report.lines.iter().any(|line| line.contains("maintenance 5499750000")), "{:#?}", report.lines);
    assert!(!host.log().contains("panicked"), "{}", host.log());
    host.stop();

    let verify = exhost(&["verify"], dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let digest = |args: &[&str]| {
        let stdout = String::from_utf8_lossy(&exhost(args, dir.path()).stdout).to_string();
        line_after(&stdout, "state digest ").unwrap_or_else(|| panic!("no digest in: {stdout}")).to_string()
    };
    assert_eq!(digest(&["replay", "--from-start"]), digest(&["replay"]));
    let host = Host::start(dir.path());
    assert_eq!(account(&host, victim.user_id), account_before, "the same account after recovery");
    let markets = host.get("/v1/markets").ok();
    assert!(
        markets.as_array().unwrap().iter().any(|m| m["symbol"] == "TIER-PERP" && m["risk"]["tiers"].is_array()),
        "terms survive a restart"
    );
    host.stop();
}
