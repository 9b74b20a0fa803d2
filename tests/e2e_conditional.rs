//! Stop and take-profit orders on the real binary: untriggered orders are
//! listed, margined and cancellable; one mark move triggers several, which
//! enter in trigger-price order inside the mark's command; a trade triggers
//! orders on the last price inside the command that traded; the gateway
//! refuses malformed ones; and the history replays and verifies.

mod support;

use serde_json::{Value, json};
use support::*;

fn order(host: &Host, trader: &Trader, body: Value) -> Value {
    host.signed(trader, "POST", "/v1/orders", Some(body)).ok()
}

fn reserved(host: &Host, trader: &Trader) -> String {
    host.signed(trader, "GET", "/v1/account", None).ok()["balances"]["USD"]["reserved"].as_str().unwrap().to_string()
}

/// Every event of one command.
fn events_of(host: &Host, seq: u64) -> Vec<Value> {
    host.all_events().into_iter().filter(|event| event["seq"] == seq).collect()
}

/// `order_id status` of the order updates, and `taker<-maker qty@price` of the trades, of one command.
fn story(host: &Host, seq: u64) -> Vec<String> {
    events_of(host, seq)
        .iter()
        .filter_map(|event| match event["type"].as_str()? {
            "order_update" => Some(format!("{} {}", event["order_id"], event["status"].as_str()?)),
            "trade" => Some(format!(
                "{}<-{} {}@{}",
                event["taker_order_id"],
                event["maker_order_id"],
                event["qty"].as_str()?,
                event["price"].as_str()?
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn stops_and_take_profits_trigger_in_order_on_the_mark_and_the_last_price() {
    let dir = TempDir::new("conditional");
    let host = Host::start(dir.path());
    let (maker, trader, other) = (host.new_trader(), host.new_trader(), host.new_trader());
    host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "27000"})).ok();
    let limit = |who: &Trader, side: &str, price: &str, qty: &str| {
        order(&host, who, json!({"symbol": "BTC-PERP", "side": side, "type": "limit", "price": price, "qty": qty}))
    };
    let bid = limit(&maker, "buy", "26000", "1.000");
    let ask = limit(&maker, "sell", "28000", "1.000");

    // What the gateway can see is refused before the journal.
    for (body, code) in [
        (json!({"type": "stop_market"}), "invalid_trigger_price"),
        (json!({"type": "limit", "price": "26000", "trigger_price": "26000"}), "invalid_trigger_price"),
        (json!({"type": "stop_market", "trigger_price": "0"}), "invalid_trigger_price"),
        (json!({"type": "stop_limit", "trigger_price": "26500"}), "invalid_price"),
        (json!({"type": "stop_market", "trigger_price": "26500", "trigger_by": "index"}), "bad_request"),
        (json!({"type": "stop_market", "trigger_price": "26500", "time_in_force": "fok"}), "bad_request"),
    ] {
        let mut request = json!({"symbol": "BTC-PERP", "side": "sell", "qty": "0.010"});
        request.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let refused = host.signed(&trader, "POST", "/v1/orders", Some(request.clone()));
        assert_eq!((refused.status, refused.code()), (400, code), "{request}");
    }

    // A stop sell at 26800 on the mark: untriggered, not in the book, margined
    // at its trigger price (10% of 0.100 x 26800), listed, no price of its own.
    let before = reserved(&host, &trader);
    assert_eq!(before, "0.000000");
    let stop = order(
        &host,
        &trader,
        json!({"symbol": "BTC-PERP", "side": "sell", "type": "stop_market", "qty": "0.100", "trigger_price": "26800"}),
    );
    assert_eq!(
        (stop["status"].as_str(), stop["type"].as_str(), stop["trigger_price"].as_str(), stop["trigger_by"].as_str()),
        (Some("untriggered"), Some("stop_market"), Some("26800.0"), Some("mark")),
        "{stop}"
    );
    assert_eq!(stop["price"], Value::Null);
    assert_eq!(reserved(&host, &trader), "268.000000");
    let book = host.get("/v1/markets/BTC-PERP/book").ok();
    assert_eq!(
        (book["bids"].clone(), book["asks"].clone()),
        (json!([["26000.0", "1.000"]]), json!([["28000.0", "1.000"]]))
    );
    // A take-profit buy at 26700 and a stop sell at 26500, both falling triggers.
    let take = order(
        &host,
        &trader,
        json!({"symbol": "BTC-PERP", "side": "buy", "type": "take_profit_market", "qty": "0.050", "trigger_price": "26700"}),
    );
    assert_eq!((take["status"].as_str(), take["type"].as_str()), (Some("untriggered"), Some("take_profit_market")));
    let far = order(
        &host,
        &trader,
        json!({"symbol": "BTC-PERP", "side": "sell", "type": "stop_limit", "price": "26400", "qty": "0.200", "trigger_price": "26500"}),
    );
    assert_eq!((far["status"].as_str(), far["price"].as_str()), (Some("untriggered"), Some("26400.0")));
    let open = host.signed(&trader, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
    assert_eq!(open.as_array().unwrap().len(), 3, "untriggered orders are open orders: {open}");

    // The mark falls to 26600: it meets 26800 and 26700, not 26500. They
    // enter in the mark's own command, by descending trigger price.
    let mark = host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "26600"})).ok();
    let seq = mark["seq"].as_u64().unwrap();
    let (stop_id, take_id, bid_id, ask_id) = (&stop["order_id"], &take["order_id"], &bid["order_id"], &ask["order_id"]);
    assert_eq!(
        story(&host, seq),
        [
            format!("{stop_id}<-{bid_id} 0.100@26000.0"),
            format!("{bid_id} partially_filled"),
            format!("{stop_id} filled"),
            format!("{take_id}<-{ask_id} 0.050@28000.0"),
            format!("{ask_id} partially_filled"),
            format!("{take_id} filled"),
        ],
        "{:#?}",
        events_of(&host, seq)
    );
    // The one left waits; cancelling it frees its margin.
    let cancelled = host.signed(&trader, "DELETE", &format!("/v1/orders/{}", far["order_id"]), None).ok();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // On the last price: the last trade was at 28000, so a stop buy at 27500
    // would trigger at once and is refused; one at 28500 waits.
    let stop_on_last = |trigger: &str| {
        order(
            &host,
            &trader,
            json!({"symbol": "BTC-PERP", "side": "buy", "type": "stop_market", "qty": "0.010",
                   "trigger_price": trigger, "trigger_by": "last"}),
        )
    };
    let met = stop_on_last("27500");
    assert_eq!((met["status"].as_str(), met["reject_reason"].as_str()), (Some("rejected"), Some("would_trigger")));
    let waiting = stop_on_last("28500");
    assert_eq!(waiting["status"], "untriggered");
    // The maker's ask at 28000 goes, so the next trade is at 28500.
    host.signed(&maker, "DELETE", &format!("/v1/orders/{}", ask["order_id"]), None).ok();
    let ask_28500 = limit(&maker, "sell", "28500", "0.100");
    // Another trader's buy at 28500 trades there and, in the same command, triggers the stop.
    let trade = limit(&other, "buy", "28500", "0.010");
    let seq = trade["seq"].as_u64().unwrap();
    let (trade_id, waiting_id, ask_id) = (&trade["order_id"], &waiting["order_id"], &ask_28500["order_id"]);
    assert!(story(&host, seq).contains(&format!("{waiting_id}<-{ask_id} 0.010@28500.0")), "{:#?}", story(&host, seq));
    assert_eq!(story(&host, seq)[0], format!("{trade_id}<-{ask_id} 0.010@28500.0"));
    let mine = host.signed(&trader, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
    assert_eq!(mine, json!([]), "nothing of the trader's is open");
    let account = host.signed(&trader, "GET", "/v1/account", None).ok();
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
    assert_eq!(host.signed(&trader, "GET", "/v1/account", None).ok(), account, "the same account after recovery");
    host.stop();
}
