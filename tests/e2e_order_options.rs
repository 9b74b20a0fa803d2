//! Order options on the real binary: an iceberg shows only its display
//! quantity in the public book and refills from the back of its level; a
//! `gtd` order expires in the first command at or after its expire time, of
//! any market and of any kind, also when that command comes after a restart
//! (the wake time is part of the snapshot); and the whole history replays
//! and verifies to the same digests.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn order(host: &Host, trader: &Trader, body: Value) -> Value {
    host.signed(trader, "POST", "/v1/orders", Some(body)).ok()
}

fn asks(host: &Host) -> Value {
    host.get("/v1/markets/BTC-PERP/book?depth=5").ok()["asks"].clone()
}

fn events_of(host: &Host, seq: u64) -> Vec<Value> {
    let page = host.admin("GET", &format!("/admin/v1/events?from_seq={seq}&limit=1"), Value::Null).ok();
    page["events"].as_array().unwrap().iter().filter(|event| event["seq"] == seq).cloned().collect()
}

fn now_ns() -> u64 {
    now_ms() * 1_000_000
}

#[test]
fn icebergs_and_gtd_orders_live_replay_and_verify() {
    let dir = TempDir::new("order-options");
    let host = Host::start(dir.path());
    let (maker, taker) = (host.new_trader(), host.new_trader());

    // An iceberg: 1.000 in all, 0.100 shown.
    let iceberg = order(
        &host,
        &maker,
        json!({"symbol": "BTC-PERP", "side": "sell", "type": "limit", "price": "27000", "qty": "1.000", "display_qty": "0.100"}),
    );
    assert_eq!(
        (iceberg["status"].as_str(), iceberg["display_qty"].as_str()),
        (Some("new"), Some("0.100")),
        "{iceberg}"
    );
    assert_eq!(asks(&host), json!([["27000.0", "0.100"]]), "the book shows the display quantity only");
    // 0.150 takes the shown 0.100, then 0.050 of the next part.
    let fill = order(
        &host,
        &taker,
        json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "27000", "qty": "0.150"}),
    );
    assert_eq!(fill["status"], "filled", "{fill}");
    let fills: Vec<&str> = fill["fills"].as_array().unwrap().iter().map(|f| f["qty"].as_str().unwrap()).collect();
    assert_eq!(fills, vec!["0.100", "0.050"]);
    assert_eq!(asks(&host), json!([["27000.0", "0.050"]]));
    let mine = host.signed(&maker, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
    assert_eq!((mine[0]["filled_qty"].as_str(), mine[0]["remaining_qty"].as_str()), (Some("0.150"), Some("0.850")));

    // What the gateway can see is refused before the journal; what only the
    // sequencer's clock decides is a rejected order.
    for (body, code) in [
        (json!({"time_in_force": "gtd"}), "invalid_expire_time"),
        (json!({"expire_time": now_ns() + 60_000_000_000u64}), "invalid_expire_time"),
        (json!({"display_qty": "0.020"}), "invalid_display_qty"),
        (json!({"display_qty": "0"}), "invalid_display_qty"),
        (json!({"display_qty": "0.005", "time_in_force": "ioc"}), "invalid_display_qty"),
    ] {
        let mut request =
            json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "26000", "qty": "0.010"});
        request.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let refused = host.signed(&maker, "POST", "/v1/orders", Some(request.clone()));
        assert_eq!((refused.status, refused.code()), (400, code), "{request}");
    }
    let past = order(
        &host,
        &maker,
        json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "26000", "qty": "0.010", "time_in_force": "gtd", "expire_time": 1}),
    );
    assert_eq!(
        (past["status"].as_str(), past["reject_reason"].as_str()),
        (Some("rejected"), Some("invalid_expire_time"))
    );

    // Two gtd orders: one about to expire, one far off.
    let soon_ns = now_ns() + 1_500_000_000;
    let gtd = |price: &str, expire_time: u64, client_order_id: &str| {
        order(
            &host,
            &maker,
            json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": price, "qty": "0.010",
                   "time_in_force": "gtd", "expire_time": expire_time, "client_order_id": client_order_id}),
        )
    };
    let soon = gtd("26000", soon_ns, "soon");
    let later = gtd("25900", soon_ns + 3_600_000_000_000, "later");
    assert_eq!((soon["status"].as_str(), soon["expire_time"].as_u64()), (Some("new"), Some(soon_ns)), "{soon}");
    assert_eq!(later["status"], "new");
    // A snapshot while both wait (so it carries the wake time), then a stop.
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    host.stop();
    while now_ns() < soon_ns + 200_000_000 {
        std::thread::sleep(Duration::from_millis(100));
    }

    // After the restart the first command, a deposit, is the one that expires it.
    let host = Host::start(dir.path());
    let open = host.signed(&maker, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
    assert_eq!(open.as_array().unwrap().len(), 3, "nothing expires without a command: {open}");
    let deposit =
        host.admin("POST", "/admin/v1/deposits", json!({"user_id": taker.user_id, "asset": "USD", "amount": "1"})).ok();
    let seq = deposit["seq"].as_u64().unwrap();
    let expired: Vec<Value> = events_of(&host, seq)
        .into_iter()
        .filter(|event| event["type"] == "order_update" && event["reason"] == "expired")
        .collect();
    assert_eq!(expired.len(), 1, "{:#?}", events_of(&host, seq));
    assert_eq!(expired[0]["order_id"], soon["order_id"]);
    let gone = host.signed(&maker, "GET", "/v1/orders/by-client-id/soon", None).ok();
    assert_eq!(
        (gone["status"].as_str(), gone["cancel_reason"].as_str()),
        (Some("cancelled"), Some("expired")),
        "{gone}"
    );
    let still = host.signed(&maker, "GET", "/v1/orders/by-client-id/later", None).ok();
    assert_eq!(still["status"], "new");
    let bids = host.get("/v1/markets/BTC-PERP/book?depth=5").ok()["bids"].clone();
    assert_eq!(bids, json!([["25900.0", "0.010"]]));
    let account = host.signed(&maker, "GET", "/v1/account", None).ok();
    assert!(!host.log().contains("panicked"), "{}", host.log());
    host.stop();

    // Replay from the start and from the snapshots agree, and verify passes.
    let verify = exhost(&["verify"], dir.path());
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && said.contains("verify ok"), "{said}");
    let digest = |args: &[&str]| {
        let output = exhost(args, dir.path());
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        line_after(&stdout, "state digest ").unwrap_or_else(|| panic!("no digest in: {stdout}")).to_string()
    };
    assert_eq!(digest(&["replay", "--from-start"]), digest(&["replay"]));
    let host = Host::start(dir.path());
    assert_eq!(host.signed(&maker, "GET", "/v1/account", None).ok(), account, "the same account after recovery");
    host.stop();
}
