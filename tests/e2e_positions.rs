//! Positions and risk on the real binary: margin refusals, a liquidation
//! through the book, auto-deleveraging, an insurance-fund payout, funding,
//! withdrawals, point-in-time accounts that agree with a replay, a balanced
//! ledger at every sequence, and the event stream over WebSocket resumed from
//! an offset after a restart.

mod support;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

fn order(host: &Host, trader: &Trader, side: &str, price: &str, qty: &str) -> Value {
    host.signed(
        trader,
        "POST",
        "/v1/orders",
        Some(json!({
            "symbol": "BTC-PERP", "side": side, "type": "limit", "price": price, "qty": qty,
        })),
    )
    .ok()
}

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

fn account(host: &Host, user_id: u64, query: &str) -> Value {
    host.admin("GET", &format!("/admin/v1/accounts/{user_id}{query}"), Value::Null).ok()
}

fn size(account: &Value) -> String {
    account["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["symbol"] == "BTC-PERP")
        .map_or("0.000".into(), |p| p["size"].as_str().unwrap().to_string())
}

fn events_of<'a>(answer: &'a Value, kind: &str) -> Vec<&'a Value> {
    answer["liquidations"].as_array().unwrap().iter().filter(|e| e["type"] == kind).collect()
}

fn connect(host: &Host) -> (WebSocket<MaybeTlsStream<TcpStream>>, String) {
    let url = host.base.replace("http://", "ws://") + "/ws";
    let (mut socket, _) = tungstenite::connect(url).expect("the WebSocket connects");
    if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    // Every socket opens with its challenge, which an `auth` must sign.
    let challenge = loop {
        if let Message::Text(text) = socket.read().expect("the challenge") {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(challenge["type"], "challenge", "{challenge}");
    (socket, challenge["nonce"].as_str().unwrap().to_string())
}

fn send(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>, value: Value) {
    socket.send(Message::Text(value.to_string().into())).unwrap();
}

fn receive(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>) -> Value {
    loop {
        match socket.read().expect("a message within the timeout") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(_) => panic!("the server closed the socket"),
            _ => continue,
        }
    }
}

/// Read `events` channel messages until every event of command `seq` arrived;
/// returns each event's (seq, idx) in arrival order.
fn read_events_through(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>, host: &Host, seq: u64) -> Vec<(u64, u64)> {
    let page = host.admin("GET", &format!("/admin/v1/events?from_seq={seq}&limit=1"), Value::Null).ok();
    let last_idx = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["seq"] == seq)
        .map(|e| e["idx"].as_u64().unwrap())
        .max()
        .expect("the command has events");
    let mut seen = Vec::new();
    loop {
        let message = receive(socket);
        if message["channel"] != "events" || message.get("event").is_none() {
            continue;
        }
        let event = &message["event"];
        let at = (event["seq"].as_u64().unwrap(), event["idx"].as_u64().unwrap());
        seen.push(at);
        if at >= (seq, last_idx) {
            return seen;
        }
    }
}

#[test]
fn margin_liquidation_adl_insurance_funding_and_history() {
    let dir = TempDir::new("positions");
    let host = Host::start(dir.path());
    let victim = trader_with(&host, "3000");
    let short_big = trader_with(&host, "50000");
    let short_small = trader_with(&host, "50000");
    let bidder = trader_with(&host, "50000");

    // A margin refusal: 2 BTC at 27,000 needs 5,400 USD of initial margin.
    let refused = order(&host, &victim, "buy", "27000", "2");
    assert_eq!(
        (refused["status"].as_str(), refused["reject_reason"].as_str()),
        (Some("rejected"), Some("insufficient_margin"))
    );

    order(&host, &short_big, "sell", "27000", "0.6");
    order(&host, &short_small, "sell", "27000", "0.4");
    let bought = order(&host, &victim, "buy", "27000", "1");
    assert_eq!(bought["status"], "filled");
    assert_eq!(
        bought["fills"].as_array().unwrap().iter().map(|f| f["fee"].as_str().unwrap()).collect::<Vec<_>>(),
        ["8.100000", "5.400000"]
    );
    let before_liquidation = bought["seq"].as_u64().unwrap();
    let victim_account = host.signed(&victim, "GET", "/v1/account", None).ok();
    assert_eq!(size(&victim_account), "1.000");
    assert_eq!(victim_account["balances"]["USD"]["reserved"], "2700.000000");

    // Withdrawals: refused beyond what margin allows, accepted within it.
    let too_much =
        host.signed(&victim, "POST", "/v1/withdrawals", Some(json!({"asset": "USD", "amount": "2000"}))).ok();
    assert_eq!(
        (too_much["status"].as_str(), too_much["reject_reason"].as_str()),
        (Some("rejected"), Some("insufficient_margin"))
    );
    let fine = host.signed(&victim, "POST", "/v1/withdrawals", Some(json!({"asset": "USD", "amount": "100"}))).ok();
    assert_eq!(fine["status"], "accepted");

    // The book can take 0.3 BTC above the bankruptcy price.
    order(&host, &bidder, "buy", "25500", "0.3");
    let marked = host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "25000"})).ok();
    let liquidation_seq = marked["seq"].as_u64().unwrap();
    assert_eq!(events_of(&marked, "liquidation").len(), 1);
    let liquidation_order = events_of(&marked, "liquidation_order")[0];
    assert_eq!(
        (liquidation_order["user_id"].as_u64(), liquidation_order["qty"].as_str()),
        (Some(victim.user_id), Some("1.000"))
    );
    let bankruptcy: f64 = liquidation_order["bankruptcy_price"].as_str().unwrap().parse().unwrap();
    assert!(bankruptcy < 25_500.0 && bankruptcy > 23_000.0, "bankruptcy price {bankruptcy}");
    // 0.3 went through the book to the bidder; 0.7 was deleveraged: the larger,
    // more leveraged short first (0.6), then the other (0.1), at the mark.
    let adl: Vec<(u64, &str, &str)> = events_of(&marked, "auto_deleverage")
        .iter()
        .map(|e| {
            (e["counterparty_user_id"].as_u64().unwrap(), e["qty"].as_str().unwrap(), e["price"].as_str().unwrap())
        })
        .collect();
    assert_eq!(adl, vec![(short_big.user_id, "0.600", "25000.0"), (short_small.user_id, "0.100", "25000.0")]);
    assert_eq!(size(&account(&host, victim.user_id, "")), "0.000");
    assert_eq!(size(&account(&host, bidder.user_id, "")), "0.300");
    assert_eq!(size(&account(&host, short_small.user_id, "")), "-0.300");
    let fee_fund = events_of(&marked, "insurance_fund");
    assert_eq!(fee_fund[0]["delta"], "125.000000", "the fund takes the 0.5% liquidation fee");

    // An insurance-fund payout: a second account gaps through its bankruptcy price.
    host.admin("POST", "/admin/v1/insurance-fund", json!({"amount": "10000"})).ok();
    let gapper = trader_with(&host, "3000");
    order(&host, &short_big, "sell", "25000", "1");
    order(&host, &gapper, "buy", "25000", "1");
    let gap = host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "21000"})).ok();
    let payout = events_of(&gap, "insurance_fund");
    let delta: f64 = payout.last().unwrap()["delta"].as_str().unwrap().parse().unwrap();
    assert!(delta < -900.0, "the fund paid the deficit: {delta}");
    let gapper_account = account(&host, gapper.user_id, "");
    assert_eq!(
        (size(&gapper_account).as_str(), gapper_account["balances"]["USD"]["total"].as_str()),
        ("0.000", Some("0.000000"))
    );
    // Covered by the fund, the deleveraging happened at the mark.
    assert!(events_of(&gap, "auto_deleverage").iter().all(|e| e["price"] == "21000.0"));

    // Funding: longs pay shorts at a positive rate. It is one index move; each
    // account's next read shows what it owes (in its equity and unrealized
    // PnL), and its next change settles it to the unit (here a withdrawal).
    let units = |text: &Value| -> i128 { text.as_str().unwrap().replace('.', "").parse().unwrap() };
    let equity = |user: u64| units(&account(&host, user, "")["equity"]);
    let total = |user: u64| units(&account(&host, user, "")["balances"]["USD"]["total"]);
    let users = [bidder.user_id, short_small.user_id, short_big.user_id];
    let before: BTreeMap<u64, (i128, i128)> = users.iter().map(|u| (*u, (equity(*u), total(*u)))).collect();
    let funding = host.admin("POST", "/admin/v1/funding", json!({"symbol": "BTC-PERP", "rate": "0.001"})).ok();
    assert_eq!(funding["rate"], "0.00100000", "{funding}");
    let owed = |user: u64| equity(user) - before[&user].0;
    let bidder_owed = owed(bidder.user_id);
    assert!(bidder_owed < 0, "a long pays");
    assert!(owed(short_small.user_id) > 0, "a short receives");
    assert_eq!(total(bidder.user_id), before[&bidder.user_id].1, "nothing settles before the account changes");
    let withdrawn = host.signed(&bidder, "POST", "/v1/withdrawals", Some(json!({"asset": "USD", "amount": "1"}))).ok();
    assert_eq!(withdrawn["status"], "accepted", "{withdrawn}");
    let (equity_before, total_before) = before[&bidder.user_id];
    assert_eq!(total(bidder.user_id), total_before + bidder_owed - 1_000_000, "settled to the unit");
    assert_eq!(equity(bidder.user_id), equity_before + bidder_owed - 1_000_000);
    let funding_errors = host.admin("POST", "/admin/v1/funding", json!({"symbol": "BTC-PERP", "rate": "abc"}));
    assert_eq!(funding_errors.code(), "invalid_rate");

    // Point in time: the victim held 1 BTC right before its liquidation, and the
    // read model agrees with a replay of the position module to that sequence.
    let then = account(&host, victim.user_id, &format!("?at_seq={before_liquidation}"));
    assert_eq!(size(&then), "1.000");
    for seq in [before_liquidation, liquidation_seq, liquidation_seq + 3] {
        for user in [victim.user_id, short_big.user_id, bidder.user_id] {
            let read = account(&host, user, &format!("?at_seq={seq}"));
            let replayed = account(&host, user, &format!("?at_seq={seq}&source=replay"));
            assert_eq!(read, replayed, "user {user} at {seq}: read model vs replay");
        }
    }
    // Before anything was installed the replay has no position module to ask:
    // it answers as the read model does (an empty account, empty books).
    let origin = account(&host, victim.user_id, "?at_seq=0&source=replay");
    assert_eq!((origin["seq"].as_u64(), origin["positions"].as_array().map(Vec::len)), (Some(0), Some(0)), "{origin}");
    assert_eq!(origin, account(&host, victim.user_id, "?at_seq=0"));
    assert_eq!(
        host.admin("GET", "/admin/v1/ledger?at_seq=0&source=replay", Value::Null).ok(),
        host.admin("GET", "/admin/v1/ledger?at_seq=0", Value::Null).ok()
    );
    let by_time = host.admin("GET", "/admin/v1/events?from_seq=1&limit=10000", Value::Null).ok();
    let ts_before =
        by_time["events"].as_array().unwrap().iter().find(|e| e["seq"] == before_liquidation).unwrap()["ts"]
            .as_u64()
            .unwrap();
    assert_eq!(size(&account(&host, victim.user_id, &format!("?at_time={ts_before}"))), "1.000");

    // The books balance at every sequence.
    let last = host.last_event_seq();
    for seq in 1..=last {
        let ledger = host.admin("GET", &format!("/admin/v1/ledger?at_seq={seq}"), Value::Null).ok();
        assert_eq!(ledger["USD"]["imbalance"], "0.000000", "ledger at {seq}: {ledger}");
    }

    // The victim's history tells its story in order.
    let history = host.signed(&victim, "GET", "/v1/account/history?limit=1000", None).ok();
    let kinds: Vec<&str> = history["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in ["balance", "trade", "position", "fee", "liquidation", "liquidation_order", "auto_deleverage"] {
        assert!(kinds.contains(&kind), "history lacks {kind}: {kinds:?}");
    }
    let seqs: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "history is in sequence order");
    host.stop();
}

#[test]
fn the_event_stream_resumes_from_an_offset_across_a_restart() {
    let dir = TempDir::new("ws");
    let host = Host::start(dir.path());
    let alice = trader_with(&host, "10000");
    let bob = trader_with(&host, "10000");
    order(&host, &alice, "sell", "27000", "0.01");

    // Public channels: a book snapshot, then a diff carrying the seq that caused it.
    let (mut public, _) = connect(&host);
    send(&mut public, json!({"op": "subscribe", "channel": "book", "symbol": "BTC-PERP"}));
    let snapshot = receive(&mut public);
    assert_eq!(
        (snapshot["type"].as_str(), snapshot["asks"].clone()),
        (Some("snapshot"), json!([["27000.0", "0.010"]]))
    );
    send(&mut public, json!({"op": "subscribe", "channel": "trades", "symbol": "BTC-PERP"}));
    assert_eq!(receive(&mut public)["type"], "subscribed");

    // A user channel, authenticated by a signature over the socket's challenge.
    let (mut private, nonce) = connect(&host);
    send(&mut private, bob.ws_auth(&nonce));
    assert_eq!(receive(&mut private)["type"], "authenticated");
    send(&mut private, json!({"op": "subscribe", "channel": "user"}));
    assert_eq!(receive(&mut private)["type"], "subscribed");

    let filled = order(&host, &bob, "buy", "27000", "0.004");
    let seq = filled["seq"].as_u64().unwrap();
    let mut got_trade = false;
    let mut got_diff = false;
    while !(got_trade && got_diff) {
        let message = receive(&mut public);
        match message["channel"].as_str() {
            Some("trades") => {
                assert_eq!(
                    (message["data"]["seq"].as_u64(), message["data"]["qty"].as_str()),
                    (Some(seq), Some("0.004"))
                );
                got_trade = true;
            }
            Some("book") => {
                assert_eq!(
                    (message["seq"].as_u64(), message["asks"].clone()),
                    (Some(seq), json!([["27000.0", "0.006"]]))
                );
                got_diff = true;
            }
            _ => {}
        }
    }
    let mut mine = Vec::new();
    while mine.len() < 3 {
        let message = receive(&mut private);
        if message["channel"] == "user" {
            assert!(message["event"]["seq"].as_u64() == Some(seq));
            mine.push(message["event"]["type"].as_str().unwrap().to_string());
        }
    }
    assert!(mine.contains(&"order_received".to_string()), "{mine:?}");

    // An operator follows the whole log from the start.
    let (mut operator, _) = connect(&host);
    send(&mut operator, json!({"op": "auth_operator", "token": ADMIN_TOKEN}));
    assert_eq!(receive(&mut operator)["type"], "authenticated");
    send(&mut operator, json!({"op": "subscribe", "channel": "events", "from_seq": 1}));
    let mut seen = read_events_through(&mut operator, &host, seq);
    drop(operator);
    host.stop();

    // After a restart, resume right after the last event seen, then go live.
    let host = Host::start(dir.path());
    let resume_from = seen.last().unwrap().0 + 1;
    let (mut operator, _) = connect(&host);
    send(&mut operator, json!({"op": "auth_operator", "token": ADMIN_TOKEN}));
    receive(&mut operator);
    send(&mut operator, json!({"op": "subscribe", "channel": "events", "from_seq": resume_from}));
    assert_eq!(receive(&mut operator)["type"], "subscribed");
    let live =
        host.admin("POST", "/admin/v1/deposits", json!({"user_id": alice.user_id, "asset": "USD", "amount": "1"})).ok();
    seen.extend(read_events_through(&mut operator, &host, live["seq"].as_u64().unwrap()));

    // Exactly the stored log: no gap, no duplicate, across the hand-over and the restart.
    let stored: Vec<(u64, u64)> =
        host.all_events().iter().map(|e| (e["seq"].as_u64().unwrap(), e["idx"].as_u64().unwrap())).collect();
    let last_seen = *seen.last().unwrap();
    let expected: Vec<(u64, u64)> = stored.into_iter().filter(|at| *at <= last_seen).collect();
    assert_eq!(seen, expected);
    host.stop();
}
