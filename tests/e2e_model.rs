//! A random order flow of several users, over HTTP against the real binary,
//! checked step by step against the independent book model: every answer's
//! status, quantities and fills, the open orders of every user, the live
//! book, and the book rebuilt `at_seq` for many past points.

mod support;

use std::collections::BTreeMap;

use exhost_book_model::ModelBook;
use exhost_engine::Scale;
use exhost_guest_sdk::*;
use serde_json::{Value, json};
use support::*;

const TICK: Scale = Scale { decimals: 1, step_units: 1 };
const LOT: Scale = Scale { decimals: 3, step_units: 1 };

fn depth_json(levels: &[Level]) -> Value {
    Value::Array(
        levels.iter().map(|l| json!([TICK.format_steps(l.price_ticks), LOT.format_steps(l.qty_lots)])).collect(),
    )
}

/// The default taker fee (0.05%) of a fill, in USD with 6 decimals, rounded up:
/// one tick × one lot is 0.0001 USD = 100 micro-dollars.
fn taker_fee(price_ticks: u64, qty_lots: u64) -> String {
    let notional_units = price_ticks as u128 * qty_lots as u128 * 100;
    let fee = (notional_units * 50_000).div_ceil(100_000_000);
    Scale { decimals: 6, step_units: 1 }.format_units(fee)
}

/// What the model says the answer to a place or amend must contain.
fn expect_order(events: &[MatchingEvent], order_id: u64, answer: &Value, context: &str) {
    let update = events
        .iter()
        .rev()
        .find_map(|e| match e {
            MatchingEvent::Order(u) if u.order_id.0 == order_id => Some(u),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{context}: the model has no update for order {order_id}"));
    assert_eq!(answer["status"], update.status.as_str(), "{context}: status; answer {answer}");
    assert_eq!(answer["filled_qty"], LOT.format_steps(update.filled_lots), "{context}: filled; answer {answer}");
    assert_eq!(answer["remaining_qty"], LOT.format_steps(update.remaining_lots()), "{context}: remaining");
    assert_eq!(answer["qty"], LOT.format_steps(update.qty_lots), "{context}: qty");
    match update.status {
        OrderStatus::Rejected => assert_eq!(answer["reject_reason"], update.reason.unwrap().as_str(), "{context}"),
        OrderStatus::Cancelled => assert_eq!(answer["cancel_reason"], update.reason.unwrap().as_str(), "{context}"),
        _ => assert!(answer.get("reject_reason").is_none(), "{context}: {answer}"),
    }
    let expected_fills: Vec<Value> = events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Trade(t) if t.taker_order_id.0 == order_id => Some(json!({
                "trade_id": t.trade_id.0,
                "price": TICK.format_steps(t.price_ticks),
                "qty": LOT.format_steps(t.qty_lots),
                "fee": taker_fee(t.price_ticks, t.qty_lots),
                "liquidity": "taker",
            })),
            _ => None,
        })
        .collect();
    assert_eq!(answer["fills"], Value::Array(expected_fills), "{context}: fills");
}

#[test]
fn random_flow_matches_the_model_step_by_step() {
    let (mut rng, seed) = Rng::from_env_or_time("E2E_MODEL_SEED");
    let steps: usize = std::env::var("E2E_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let dir = TempDir::new("model");
    let host = Host::start(dir.path());
    let traders: Vec<Trader> = (0..4).map(|_| host.new_trader()).collect();
    // Market orders are margined at the mark price, so the market needs one.
    host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "27350.5"})).ok();

    let mut model = ModelBook::new();
    let mut placed: Vec<u64> = Vec::new();
    // The model's book after every sequence number the flow consumed.
    let mut books: BTreeMap<u64, (Vec<Level>, Vec<Level>)> = BTreeMap::new();
    // Every trade the model made, oldest first, with the sequence that made it.
    let mut trades: Vec<Value> = Vec::new();
    let mut note_trades = |seq: u64, events: &[MatchingEvent]| {
        for event in events {
            if let MatchingEvent::Trade(t) = event {
                trades.push(json!({
                    "seq": seq, "trade_id": t.trade_id.0, "price": TICK.format_steps(t.price_ticks),
                    "qty": LOT.format_steps(t.qty_lots), "taker_side": t.taker_side.as_str(),
                }));
            }
        }
    };

    for step in 0..steps {
        let trader = &traders[rng.below(4) as usize];
        let user_id = UserId(trader.user_id);
        let context = format!("seed {seed} step {step}");
        let roll = rng.below(100);
        if roll < 62 || placed.is_empty() {
            let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
            let market = rng.below(10) == 0;
            let tif = TimeInForce::ALL[rng.below(4) as usize];
            let tif = if market && tif == TimeInForce::PostOnly { TimeInForce::Ioc } else { tif };
            let stp = SelfTradePrevention::ALL[rng.below(3) as usize];
            let price_ticks = 273_500 + rng.below(20);
            let qty_lots = 1 + rng.below(8);
            let mut body = json!({
                "symbol": "BTC-PERP",
                "side": side.as_str(),
                "type": if market { "market" } else { "limit" },
                "qty": LOT.format_steps(qty_lots),
                "time_in_force": tif.as_str(),
                "stp": stp.as_str(),
                "client_order_id": format!("c{step}"),
            });
            if !market {
                body["price"] = json!(TICK.format_steps(price_ticks));
            }
            let answer = host.signed(trader, "POST", "/v1/orders", Some(body)).ok();
            let seq = answer["seq"].as_u64().unwrap();
            assert_eq!(answer["order_id"], seq, "{context}");
            assert_eq!(answer["client_order_id"], format!("c{step}"), "{context}");
            let events = model.apply(&MatchingCommand::Place(PlaceOrder {
                order_id: OrderId(seq),
                user_id,
                side,
                order_type: if market { OrderType::Market } else { OrderType::Limit },
                price_ticks: if market { 0 } else { price_ticks },
                qty_lots,
                time_in_force: tif,
                self_trade_prevention: stp,
            }));
            expect_order(&events, seq, &answer, &context);
            note_trades(seq, &events);
            placed.push(seq);
            books.insert(seq, model.depth());
        } else if roll < 95 {
            let order_id = placed[rng.below(placed.len() as u64) as usize];
            let open = model.resting.iter().any(|o| o.order_id.0 == order_id && o.user_id == user_id);
            let amend = roll >= 78;
            let answer = if amend {
                let price = (rng.below(3) > 0).then(|| 273_500 + rng.below(20));
                let qty = if price.is_none() || rng.below(2) == 0 { Some(1 + rng.below(10)) } else { None };
                let mut body = json!({});
                if let Some(p) = price {
                    body["price"] = json!(TICK.format_steps(p));
                }
                if let Some(q) = qty {
                    body["qty"] = json!(LOT.format_steps(q));
                }
                let answer = host.signed(trader, "PATCH", &format!("/v1/orders/{order_id}"), Some(body));
                if open {
                    let events = model.apply(&MatchingCommand::Amend {
                        order_id: OrderId(order_id),
                        user_id,
                        price_ticks: price,
                        qty_lots: qty,
                    });
                    match &events[..] {
                        [MatchingEvent::Rejected { reason, .. }] => {
                            assert_eq!((answer.status, answer.code()), (400, reason.as_str()), "{context}")
                        }
                        _ => {
                            assert_eq!(answer.status, 200, "{context}: {answer:?}");
                            expect_order(&events, order_id, &answer.body, &context);
                            note_trades(answer.body["seq"].as_u64().unwrap(), &events);
                        }
                    }
                }
                answer
            } else {
                let answer = host.signed(trader, "DELETE", &format!("/v1/orders/{order_id}"), None);
                if open {
                    let events = model.apply(&MatchingCommand::Cancel { order_id: OrderId(order_id), user_id });
                    assert_eq!(answer.status, 200, "{context}: {answer:?}");
                    expect_order(&events, order_id, &answer.body, &context);
                }
                answer
            };
            if open {
                // Refused amends are journaled too, so every answer names its sequence
                // unless it was refused before the journal (404).
                let seq = answer.body["seq"].as_u64();
                if let Some(seq) = seq {
                    books.insert(seq, model.depth());
                }
            } else {
                assert_eq!(
                    (answer.status, answer.code()),
                    (404, "not_found"),
                    "{context}: not an open order of the caller"
                );
            }
        } else {
            let answer = host.signed(trader, "DELETE", "/v1/orders?symbol=BTC-PERP", None).ok();
            let events = model.apply(&MatchingCommand::MassCancel { user_id });
            let expected: Vec<u64> = events
                .iter()
                .filter_map(|e| match e {
                    MatchingEvent::Order(u) => Some(u.order_id.0),
                    MatchingEvent::Level { .. } => None,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(answer["cancelled"], json!(expected), "{context}");
            books.insert(answer["seq"].as_u64().unwrap(), model.depth());
        }
    }

    // The live book and every user's open orders equal the model's.
    let (bids, asks) = model.depth();
    let book = host.get("/v1/markets/BTC-PERP/book?depth=1000").ok();
    assert_eq!((&book["bids"], &book["asks"]), (&depth_json(&bids), &depth_json(&asks)), "seed {seed}: final book");
    for trader in &traders {
        let open = host.signed(trader, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
        let expected: Vec<Value> = model
            .open_orders(UserId(trader.user_id))
            .iter()
            .map(|o| json!([o.order_id.0, LOT.format_steps(o.qty_lots - o.filled_lots)]))
            .collect();
        let got: Vec<Value> =
            open.as_array().unwrap().iter().map(|o| json!([o["order_id"], o["remaining_qty"]])).collect();
        assert_eq!(got, expected, "seed {seed}: open orders of user {}", trader.user_id);
    }

    // The newest trades, newest first, as the model made them.
    let recent = host.get("/v1/markets/BTC-PERP/trades?limit=50").ok();
    let expected: Vec<Value> = trades.iter().rev().take(50).cloned().collect();
    let got: Vec<Value> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["ts"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000_000_000), "ts in ns: {t}");
            json!({"seq": t["seq"], "trade_id": t["trade_id"], "price": t["price"], "qty": t["qty"], "taker_side": t["taker_side"]})
        })
        .collect();
    assert!(!expected.is_empty(), "seed {seed}: the flow made no trades");
    assert_eq!(got, expected, "seed {seed}: recent trades");
    let metrics = host.request("GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    let journaled = metrics
        .text
        .lines()
        .find_map(|line| line.strip_prefix("exhost_journal_commands_total "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    let last_seq = *books.keys().next_back().unwrap();
    assert_eq!(journaled, Some(last_seq as f64), "metrics count every journaled command:\n{}", metrics.text);
    // Memory gauges: the book's and the position module's linear memory (at least
    // one 64 KiB wasm page each), and RocksDB's memtables, which hold this run's writes.
    let gauge = |name: &str| {
        metrics.text.lines().find_map(|line| line.strip_prefix(name)).and_then(|value| value.trim().parse::<f64>().ok())
    };
    for module in ["position", "market 0"] {
        let bytes = gauge(&format!("exhost_module_memory_bytes{{module=\"{module}\"}} "));
        assert!(bytes.is_some_and(|b| b >= 65_536.0), "{module} memory gauge: {bytes:?}\n{}", metrics.text);
        // What a fault in it would cost: a checkpoint (never empty) and the commands since.
        let checkpoint = gauge(&format!("exhost_module_checkpoint_bytes{{module=\"{module}\"}} "));
        assert!(checkpoint.is_some_and(|b| b > 0.0), "{module} checkpoint gauge: {checkpoint:?}\n{}", metrics.text);
        let retained = gauge(&format!("exhost_module_retained_commands{{module=\"{module}\"}} "));
        assert!(retained.is_some(), "{module} retained commands gauge\n{}", metrics.text);
    }
    let memtables = gauge("exhost_store_memory_bytes{part=\"memtables\"} ");
    assert!(memtables.is_some_and(|b| b > 0.0), "memtable gauge: {memtables:?}\n{}", metrics.text);

    // Books of the past, rebuilt from snapshot + journal, equal the model's then.
    let seqs: Vec<u64> = books.keys().copied().collect();
    for i in 0..12 {
        let seq = seqs[(i * seqs.len() / 12 + rng.below(3) as usize).min(seqs.len() - 1)];
        let (bids, asks) = &books[&seq];
        let past = host.get(&format!("/v1/markets/BTC-PERP/book?depth=1000&at_seq={seq}")).ok();
        assert_eq!(past["seq"], seq);
        assert_eq!(
            (&past["bids"], &past["asks"]),
            (&depth_json(bids), &depth_json(asks)),
            "seed {seed}: book at {seq}"
        );
    }
    host.stop();
}
