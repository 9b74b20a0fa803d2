//! A long random run on the real binary with orders, mark-price moves (and so
//! liquidations and deleveraging), funding and withdrawals. After every step
//! the invariants of the position system hold, and at the end an independent
//! downstream consumer, rebuilding everything from the event stream, agrees
//! with the host.

mod support;

use serde_json::{Value, json};
use support::*;

fn account(host: &Host, user_id: u64, query: &str) -> Value {
    host.admin("GET", &format!("/admin/v1/accounts/{user_id}{query}"), Value::Null).ok()
}

fn units(text: &Value) -> i128 {
    exhost_examples::decimal::parse(text.as_str().unwrap(), 6).unwrap()
}

fn size_lots(account: &Value) -> i128 {
    account["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| exhost_examples::decimal::parse(p["size"].as_str().unwrap(), 3).unwrap())
        .sum()
}

#[test]
fn invariants_hold_over_a_long_random_run_and_a_consumer_agrees() {
    let (mut rng, seed) = Rng::from_env_or_time("E2E_INVARIANTS_SEED");
    let steps: usize = std::env::var("E2E_INVARIANTS_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let dir = TempDir::new("invariants");
    let host = Host::start(dir.path());
    host.admin("POST", "/admin/v1/insurance-fund", json!({"amount": "2000"})).ok();
    let mut traders = Vec::new();
    for i in 0..6 {
        let user = host.admin("POST", "/admin/v1/users", json!({})).ok();
        let trader = Trader {
            user_id: user["user_id"].as_u64().unwrap(),
            api_key: user["api_key"].as_str().unwrap().into(),
            api_secret: user["api_secret"].as_str().unwrap().into(),
        };
        let usd = if i == 0 { "200000" } else { &format!("{}", 1_500 + 1_000 * i) };
        host.admin("POST", "/admin/v1/deposits", json!({"user_id": trader.user_id, "asset": "USD", "amount": usd}))
            .ok();
        traders.push(trader);
    }
    let mut mark: i64 = 270_000; // ticks of 0.1
    host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "27000.0"})).ok();
    let mut liquidations = 0;
    let mut deleveraged = 0;
    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        let roll = rng.below(100);
        let trader = &traders[rng.below(traders.len() as u64) as usize];
        if roll < 60 {
            let side = if rng.below(2) == 0 { "buy" } else { "sell" };
            let offset = rng.below(600) as i64 - 300;
            let price = format!("{:.1}", (mark + offset) as f64 / 10.0);
            let qty = format!("{:.3}", (1 + rng.below(600)) as f64 / 1000.0);
            let mut body = json!({"symbol": "BTC-PERP", "side": side, "qty": qty});
            if rng.below(6) == 0 {
                body["type"] = json!("market");
            } else {
                body["type"] = json!("limit");
                body["price"] = json!(price);
            }
            let answer = host.signed(trader, "POST", "/v1/orders", Some(body));
            assert_eq!(answer.status, 200, "{context}: {}", answer.body);
        } else if roll < 70 {
            let open = host.signed(trader, "GET", "/v1/orders", None).ok();
            if let Some(order) = open.as_array().unwrap().first() {
                let id = order["order_id"].as_u64().unwrap();
                host.signed(trader, "DELETE", &format!("/v1/orders/{id}"), None);
            }
        } else if roll < 88 {
            // A random walk, with the occasional gap.
            let move_ticks = if rng.below(8) == 0 { 20_000 } else { 4_000 };
            mark = (mark + rng.below(2 * move_ticks + 1) as i64 - move_ticks as i64).clamp(150_000, 400_000);
            let answer = host
                .admin(
                    "POST",
                    "/admin/v1/mark-prices",
                    json!({"symbol": "BTC-PERP", "price": format!("{:.1}", mark as f64 / 10.0)}),
                )
                .ok();
            let events = answer["liquidations"].as_array().unwrap();
            liquidations += events.iter().filter(|e| e["type"] == "liquidation").count();
            deleveraged += events.iter().filter(|e| e["type"] == "auto_deleverage").count();
            // Nobody is left holding a position below maintenance margin.
            for t in &traders {
                let state = account(&host, t.user_id, "");
                if size_lots(&state) != 0 {
                    assert!(
                        units(&state["equity"]) >= units(&state["maintenance_margin"]),
                        "{context}: user {} holds a position below maintenance margin: {state}",
                        t.user_id
                    );
                }
            }
        } else if roll < 91 {
            // Fresh money, so liquidated traders come back and take risk again.
            host.admin(
                "POST",
                "/admin/v1/deposits",
                json!({"user_id": trader.user_id, "asset": "USD", "amount": "2500"}),
            )
            .ok();
        } else if roll < 95 {
            let rate = format!("{:.6}", (rng.below(1_001) as f64 - 500.0) / 1_000_000.0);
            let answer = host.admin("POST", "/admin/v1/funding", json!({"symbol": "BTC-PERP", "rate": rate}));
            assert!(answer.status == 200, "{context}: {}", answer.body);
        } else {
            let amount = format!("{}", 1 + rng.below(500));
            let answer =
                host.signed(trader, "POST", "/v1/withdrawals", Some(json!({"asset": "USD", "amount": amount})));
            assert_eq!(answer.status, 200, "{context}: {}", answer.body);
        }
        // Sizes sum to zero and the books balance, after every step.
        let sizes: i128 = traders.iter().map(|t| size_lots(&account(&host, t.user_id, ""))).sum();
        assert_eq!(sizes, 0, "{context}: positions do not net out");
        let ledger = host.admin("GET", "/admin/v1/ledger", Value::Null).ok();
        assert_eq!(ledger["USD"]["imbalance"], "0.000000", "{context}: {ledger}");
    }
    eprintln!("seed {seed}: {liquidations} liquidations, {deleveraged} deleveraging fills over {steps} steps");

    // The ledger balanced at every sequence, not just after each step.
    let last = host.last_event_seq();
    for seq in (1..=last).step_by(7) {
        let ledger = host.admin("GET", &format!("/admin/v1/ledger?at_seq={seq}"), Value::Null).ok();
        assert_eq!(ledger["USD"]["imbalance"], "0.000000", "seed {seed}: ledger at {seq}");
    }
    // The read model's accounts and ledger equal the position module replayed to the same point.
    for i in 1..=4 {
        let seq = last * i / 4;
        assert_eq!(
            host.admin("GET", &format!("/admin/v1/ledger?at_seq={seq}"), Value::Null).ok(),
            host.admin("GET", &format!("/admin/v1/ledger?at_seq={seq}&source=replay"), Value::Null).ok(),
            "seed {seed}: ledger at {seq}"
        );
        for t in &traders {
            assert_eq!(
                account(&host, t.user_id, &format!("?at_seq={seq}")),
                account(&host, t.user_id, &format!("?at_seq={seq}&source=replay")),
                "seed {seed}: user {} at {seq}",
                t.user_id
            );
        }
    }
    // An independent consumer of the event stream rebuilds the same books.
    let report = exhost_examples::reconcile::run(&host.base, ADMIN_TOKEN).unwrap();
    assert!(report.mismatches.is_empty(), "seed {seed}: reconciliation found {:#?}", report.mismatches);
    assert_eq!(report.users, traders.len());
    assert!(report.events > steps as u64);
    host.stop();
}
