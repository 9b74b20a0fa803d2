//! Shadow runs on the real binary: the pro-rata module beside the live
//! price-time book reports its first divergence at the buy that meets three
//! makers, with both event lists; an identical rebuild reports none over a
//! varied flow; neither changes what anyone sees or journals anything; and
//! the refusals say why.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const SHADOW: &str = "/admin/v1/markets/BTC-PERP/shadow";

fn upload(host: &Host, bytes: &[u8]) -> String {
    let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}")), ("Content-Type", "application/wasm".into())];
    let uploaded = host.request("POST", "/admin/v1/modules", &headers, Some(bytes)).ok();
    uploaded["hash"].as_str().unwrap().to_string()
}

fn order(host: &Host, trader: &Trader, body: Value) -> Value {
    let mut body = body;
    body["symbol"] = json!("BTC-PERP");
    host.signed(trader, "POST", "/v1/orders", Some(body)).ok()
}

fn limit(host: &Host, trader: &Trader, side: &str, price: &str, qty: &str) -> Value {
    order(host, trader, json!({ "side": side, "type": "limit", "price": price, "qty": qty }))
}

/// The shadow's report once it has compared every command up to `seq`.
fn report_through(host: &Host, seq: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = host.admin("GET", SHADOW, Value::Null).ok();
        if report["last_seq"].as_u64().unwrap() >= seq {
            return report;
        }
        assert!(Instant::now() < deadline, "the shadow never compared seq {seq}: {report}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn trade_qtys(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "trade")
        .map(|event| event["qty"].as_str().unwrap())
        .collect()
}

#[test]
fn pro_rata_beside_price_time_reports_its_first_divergence_at_the_buy_that_meets_three_makers() {
    let dir = TempDir::new("shadow-prorata");
    let host = Host::start(dir.path());
    let t: Vec<Trader> = (0..4).map(|_| host.new_trader()).collect();
    let price_time = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    let prorata = upload(&host, exhost_embedded::PRORATA_WASM);
    assert_eq!(host.admin("GET", SHADOW, Value::Null).code(), "not_found", "no run before one starts");

    // The book the shadow starts from: 10, 10 and 40 lots at 27000, oldest first.
    limit(&host, &t[0], "sell", "27000", "0.010");
    limit(&host, &t[1], "sell", "27000", "0.010");
    limit(&host, &t[2], "sell", "27000", "0.040");
    let before = host.last_event_seq();
    let started = host.admin("POST", SHADOW, json!({ "hash": prorata })).ok();
    assert_eq!(host.last_event_seq(), before, "starting a shadow journals nothing");
    assert_eq!(
        (started["state"].as_str(), started["hash"].as_str(), started["live_hash"].as_str()),
        (Some("running"), Some(prorata.as_str()), Some(price_time.as_str()))
    );
    assert_eq!((started["from_seq"].as_u64(), started["commands"].as_u64()), (Some(before + 1), Some(0)));
    assert_eq!(started["first_divergence"], Value::Null);
    let again = host.admin("POST", SHADOW, json!({ "hash": prorata }));
    assert_eq!(again.code(), "shadow_running");

    // A resting bid does the same under both rules; the 30-lot buy does not:
    // 10/10/10 by time, 5/5/20 pro rata.
    let bid = limit(&host, &t[3], "buy", "26000", "0.001");
    let buy = limit(&host, &t[3], "buy", "27000", "0.030");
    let buy_seq = buy["order_id"].as_u64().unwrap();
    assert!(buy_seq > bid["order_id"].as_u64().unwrap());
    let live_fills: Vec<&str> = buy["fills"].as_array().unwrap().iter().map(|f| f["qty"].as_str().unwrap()).collect();
    assert_eq!(live_fills, ["0.010", "0.010", "0.010"], "the live market keeps its rules");

    let report = report_through(&host, buy_seq);
    let first = &report["first_divergence"];
    assert_eq!(first["seq"].as_u64(), Some(buy_seq), "{report}");
    assert_eq!(trade_qtys(&first["live_events"]), ["0.010", "0.010", "0.010"], "{first}");
    assert_eq!(trade_qtys(&first["shadow_events"]), ["0.005", "0.005", "0.020"], "{first}");
    assert_eq!(first["shadow_fault"], Value::Null);
    // The live events in the report are the ones the event log holds.
    let logged: Vec<Value> = host
        .all_events()
        .into_iter()
        .filter(|event| event["seq"].as_u64() == Some(buy_seq) && event["type"] == "trade")
        .collect();
    assert_eq!(logged.len(), 3);
    for (logged, reported) in
        logged.iter().zip(first["live_events"].as_array().unwrap().iter().filter(|e| e["type"] == "trade"))
    {
        assert_eq!(logged["trade_id"], reported["trade_id"]);
        assert_eq!(logged["maker_order_id"], reported["maker_order_id"]);
    }
    assert_eq!(report["divergences"].as_u64(), Some(1), "{report}");
    assert_eq!(report["commands"].as_u64(), Some(2), "the bid and the buy: {report}");
    assert_eq!(report["faults"].as_u64(), Some(0));
    assert!(report["live_fuel"].as_u64().unwrap() > 0 && report["shadow_fuel"].as_u64().unwrap() > 0, "{report}");

    // Nothing anyone sees changed: the live book is price-time's remainder.
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok()["asks"], json!([["27000.0", "0.030"]]));
    let stopped = host.admin("DELETE", SHADOW, Value::Null).ok();
    assert_eq!(stopped["state"].as_str(), Some("stopped"));
    assert_eq!(stopped["first_divergence"]["seq"].as_u64(), Some(buy_seq));
    assert_eq!(host.admin("GET", SHADOW, Value::Null).code(), "not_found");
    assert_eq!(host.admin("DELETE", SHADOW, Value::Null).code(), "not_found");
    let last = host.last_event_seq();
    assert_eq!(last, buy_seq, "no command came from the shadow");
    host.stop();
    let verify = exhost(&["verify"], dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn an_identical_rebuild_reports_no_divergence_over_a_varied_flow() {
    let dir = TempDir::new("shadow-rebuild");
    let host = Host::start(dir.path());
    let t: Vec<Trader> = (0..4).map(|_| host.new_trader()).collect();
    let rebuilt = upload(&host, &rebuild(exhost_embedded::PRICETIME_WASM, "shadow"));
    limit(&host, &t[0], "sell", "27100", "0.020");
    limit(&host, &t[1], "buy", "26900", "0.020");
    let started = host.admin("POST", SHADOW, json!({ "hash": rebuilt })).ok();
    let from_seq = started["from_seq"].as_u64().unwrap();

    // Limits that rest and cross, icebergs, IOC and market orders, amends,
    // cancels, a stop the mark triggers.
    let mut rng = Rng::new(17);
    println!("seed 17");
    let mut resting: Vec<(usize, u64)> = Vec::new();
    for step in 0..120 {
        let who = rng.below(4) as usize;
        let side = if rng.below(2) == 0 { "buy" } else { "sell" };
        let price = 26_950 + rng.below(100);
        let qty = format!("0.{:03}", 1 + rng.below(9));
        let answer = match rng.below(10) {
            0..=4 => limit(&host, &t[who], side, &price.to_string(), &qty),
            5 => order(
                &host,
                &t[who],
                json!({ "side": side, "type": "limit", "price": price.to_string(), "qty": "0.020", "display_qty": "0.005" }),
            ),
            6 => order(&host, &t[who], json!({ "side": side, "type": "market", "qty": qty })),
            7 => order(
                &host,
                &t[who],
                json!({ "side": side, "type": "limit", "price": price.to_string(), "qty": qty, "time_in_force": "ioc" }),
            ),
            _ if !resting.is_empty() => {
                let (owner, order_id) = resting.swap_remove(rng.below(resting.len() as u64) as usize);
                let path = format!("/v1/orders/{order_id}");
                if step % 2 == 0 {
                    host.signed(&t[owner], "DELETE", &path, None);
                } else {
                    host.signed(&t[owner], "PATCH", &path, Some(json!({ "price": (price - 30).to_string() })));
                }
                continue;
            }
            _ => continue,
        };
        if answer["status"] == "new" || answer["status"] == "partially_filled" {
            resting.push((who, answer["order_id"].as_u64().unwrap()));
        }
    }
    let stop = order(
        &host,
        &t[2],
        json!({ "side": "sell", "type": "stop_market", "qty": "0.002", "trigger_price": "26800", "trigger_by": "mark" }),
    );
    assert_eq!(stop["status"], "untriggered", "{stop}");
    host.admin("POST", "/admin/v1/mark-prices", json!({ "symbol": "BTC-PERP", "price": "26700" })).ok();
    let last = host.last_event_seq();
    let report = report_through(&host, last);
    assert_eq!(report["divergences"].as_u64(), Some(0), "{report}");
    assert_eq!(report["first_divergence"], Value::Null);
    assert_eq!(report["faults"].as_u64(), Some(0));
    assert_eq!(report["from_seq"].as_u64(), Some(from_seq));
    // Every command after the start that reached the book was compared.
    let book_seqs: std::collections::BTreeSet<u64> = host
        .all_events()
        .into_iter()
        .filter(|event| event["seq"].as_u64().unwrap() >= from_seq && event["symbol"] == "BTC-PERP")
        .filter(|event| {
            ["order_update", "trade", "level", "order_command_rejected"].contains(&event["type"].as_str().unwrap_or(""))
        })
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    assert!(book_seqs.len() > 60, "the flow reached the book: {}", book_seqs.len());
    assert!(report["commands"].as_u64().unwrap() >= book_seqs.len() as u64, "{report} against {}", book_seqs.len());
    assert!(report["live_fuel"].as_u64().unwrap() > 0 && report["shadow_fuel"].as_u64().unwrap() > 0);

    // Refusals: a position module, an unknown hash, an unknown market, a bad hash.
    host.admin("DELETE", SHADOW, Value::Null).ok();
    let positions = upload(&host, exhost_embedded::POSITIONS_WASM);
    let refused = host.admin("POST", SHADOW, json!({ "hash": positions }));
    assert_eq!(refused.code(), "module_rejected");
    assert_eq!(host.admin("POST", SHADOW, json!({ "hash": "ab".repeat(32) })).code(), "not_found");
    assert_eq!(
        host.admin("POST", "/admin/v1/markets/NOPE/shadow", json!({ "hash": rebuilt })).code(),
        "unknown_market"
    );
    assert_eq!(host.admin("POST", SHADOW, json!({ "hash": "xyz" })).code(), "bad_request");
    assert_eq!(host.admin("POST", SHADOW, json!({ "hash": rebuilt, "extra": 1 })).code(), "bad_request");
    // After a stop a new run can start.
    assert_eq!(host.admin("POST", SHADOW, json!({ "hash": rebuilt })).ok()["state"], "running");
    host.stop();
}
