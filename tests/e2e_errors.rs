//! Bad input gets a precise error code and changes nothing: no journal
//! record, no event, no change to the book.

mod support;

use serde_json::{Value, json};
use support::*;

fn order(price: &str, qty: &str) -> Value {
    json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": price, "qty": qty})
}

#[test]
fn bad_input_is_refused_precisely_and_changes_nothing() {
    let dir = TempDir::new("errors");
    let host = Host::start_with(dir.path(), "body_bytes_max = 4096\n");
    let alice = host.new_trader();
    let bob = host.new_trader();
    let resting = host.signed(&alice, "POST", "/v1/orders", Some(order("27000.0", "0.005"))).ok();
    let resting_id = resting["order_id"].as_u64().unwrap();
    let before_seq = host.last_event_seq();
    let book_before = host.get("/v1/markets/BTC-PERP/book").ok();

    let signed_raw = |trader: &Trader, method: &str, path: &str, body: &[u8]| {
        let headers = trader.headers(method, path, body);
        host.request(method, path, &headers, Some(body))
    };
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        ("malformed JSON", signed_raw(&alice, "POST", "/v1/orders", b"{\"symbol\": \"BTC-PERP\","), 400, "bad_request"),
        ("missing qty", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "1"}))), 400, "bad_request"),
        ("unknown field", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "1", "qty": "1", "quantity": "2"}))), 400, "bad_request"),
        ("number not a string", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": 27000.5, "qty": "0.001"}))), 400, "bad_request"),
        ("bad side", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "long", "type": "limit", "price": "1", "qty": "1"}))), 400, "bad_request"),
        ("non-decimal price", host.signed(&alice, "POST", "/v1/orders", Some(order("27k", "0.001"))), 400, "invalid_price"),
        ("exponent price", host.signed(&alice, "POST", "/v1/orders", Some(order("2.7e4", "0.001"))), 400, "invalid_price"),
        ("negative price", host.signed(&alice, "POST", "/v1/orders", Some(order("-27000", "0.001"))), 400, "invalid_price"),
        ("zero price", host.signed(&alice, "POST", "/v1/orders", Some(order("0", "0.001"))), 400, "invalid_price"),
        ("over-precise price", host.signed(&alice, "POST", "/v1/orders", Some(order("27000.05", "0.001"))), 400, "invalid_price"),
        ("zero qty", host.signed(&alice, "POST", "/v1/orders", Some(order("27000", "0"))), 400, "invalid_quantity"),
        ("negative qty", host.signed(&alice, "POST", "/v1/orders", Some(order("27000", "-0.001"))), 400, "invalid_quantity"),
        ("over-precise qty", host.signed(&alice, "POST", "/v1/orders", Some(order("27000", "0.0005"))), 400, "invalid_quantity"),
        ("limit without price", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "qty": "1"}))), 400, "invalid_price"),
        ("unknown market", host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "DOGE-PERP", "side": "buy", "type": "limit", "price": "1", "qty": "1"}))), 404, "unknown_market"),
        ("oversized body", signed_raw(&alice, "POST", "/v1/orders", &vec![b' '; 5000]), 413, "payload_too_large"),
        ("no signature", host.request("POST", "/v1/orders", &[], Some(order("27000", "0.001").to_string().as_bytes())), 401, "unauthorized"),
        ("another user's order", host.signed(&bob, "DELETE", &format!("/v1/orders/{resting_id}"), None), 404, "not_found"),
        ("another user's amend", host.signed(&bob, "PATCH", &format!("/v1/orders/{resting_id}"), Some(json!({"qty": "0.001"}))), 404, "not_found"),
        ("unknown order", host.signed(&alice, "DELETE", "/v1/orders/999999", None), 404, "not_found"),
        ("not an order id", host.signed(&alice, "DELETE", "/v1/orders/abc", None), 404, "not_found"),
        ("empty amend", host.signed(&alice, "PATCH", &format!("/v1/orders/{resting_id}"), Some(json!({}))), 400, "bad_request"),
        ("admin without token", host.request("POST", "/admin/v1/users", &[], Some(b"{}")), 401, "unauthorized"),
        ("admin with a wrong token", host.request("POST", "/admin/v1/users", &[("Authorization", "Bearer nope".into())], Some(b"{}")), 403, "forbidden"),
        ("deposit of an unknown asset", host.admin("POST", "/admin/v1/deposits", json!({"user_id": alice.user_id, "asset": "XYZ", "amount": "1"})), 400, "unknown_asset"),
        ("deposit to nobody", host.admin("POST", "/admin/v1/deposits", json!({"user_id": 999, "asset": "USD", "amount": "1"})), 404, "not_found"),
        ("market with a bad module", host.admin("POST", "/admin/v1/markets", json!({"symbol": "ETH-PERP", "base": "ETH", "quote": "USD", "tick_size": "0.01", "lot_size": "0.01", "matching_module": "00".repeat(32)})), 404, "not_found"),
        ("duplicate market", host.admin("POST", "/admin/v1/markets", json!({"symbol": "BTC-PERP", "base": "BTC", "quote": "USD", "tick_size": "0.1", "lot_size": "0.001", "matching_module": host.get("/v1/markets").ok()[0]["matching_module"]})), 409, "market_exists"),
        ("unknown endpoint", host.get("/v1/nothing"), 404, "not_found"),
        ("book of an unknown market", host.get("/v1/markets/NOPE/book"), 404, "unknown_market"),
        ("book depth out of range", host.get("/v1/markets/BTC-PERP/book?depth=0"), 400, "bad_request"),
        ("book in the future", host.get("/v1/markets/BTC-PERP/book?at_seq=999999"), 400, "bad_request"),
    ];
    for (name, answer, status, code) in &cases {
        assert_eq!((answer.status, answer.code()), (*status, *code), "{name}: {}", answer.body);
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: a message");
    }

    // Signatures: wrong secret, stale timestamp, tampered body.
    let path = "/v1/orders";
    let body = order("27000", "0.001").to_string();
    let mut forged = alice.headers_v1("POST", path, body.as_bytes());
    forged[2].1 = exhost_server::auth::sign("not-the-secret", &forged[1].1, "POST", path, body.as_bytes());
    assert_eq!(host.request("POST", path, &forged, Some(body.as_bytes())).code(), "unauthorized");
    let stale_ts = (now_ms() - 60_000).to_string();
    let stale = vec![
        ("X-API-KEY", alice.api_key.clone()),
        ("X-TIMESTAMP", stale_ts.clone()),
        ("X-SIGNATURE", exhost_server::auth::sign(&alice.api_secret, &stale_ts, "POST", path, body.as_bytes())),
    ];
    let answer = host.request("POST", path, &stale, Some(body.as_bytes()));
    assert_eq!((answer.status, answer.code()), (401, "unauthorized"));
    assert!(answer.body["error"]["message"].as_str().unwrap().contains("X-TIMESTAMP"), "{}", answer.body);
    let signed = alice.headers("POST", path, body.as_bytes());
    let tampered = order("27000", "0.002").to_string();
    assert_eq!(host.request("POST", path, &signed, Some(tampered.as_bytes())).code(), "unauthorized");

    // Nothing was journaled, nothing changed.
    assert_eq!(host.last_event_seq(), before_seq, "refused requests must not reach the journal");
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok(), book_before);
    assert_eq!(host.get("/healthz").ok()["status"], "ok");

    // Domain refusals decided by the module are journaled and reported as data.
    host.signed(
        &bob,
        "POST",
        "/v1/orders",
        Some(json!({"symbol": "BTC-PERP", "side": "sell", "type": "limit", "price": "27100", "qty": "0.001"})),
    )
    .ok();
    let post_only = host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "27100", "qty": "0.001", "time_in_force": "post_only"}))).ok();
    assert_eq!(
        (post_only["status"].as_str(), post_only["reject_reason"].as_str()),
        (Some("rejected"), Some("would_cross"))
    );
    let fok = host.signed(&alice, "POST", "/v1/orders", Some(json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "27100", "qty": "0.002", "time_in_force": "fok"}))).ok();
    assert_eq!((fok["status"].as_str(), fok["reject_reason"].as_str()), (Some("rejected"), Some("not_fillable")));
    assert_eq!(fok["filled_qty"], "0.000");
    assert_eq!(host.last_event_seq(), fok["seq"].as_u64().unwrap());
    host.stop();
}

#[test]
fn every_documented_operation_is_routed() {
    let dir = TempDir::new("openapi");
    let host = Host::start(dir.path());
    let document = host.get("/openapi.json").ok();
    assert_eq!(document["info"]["title"], "exhost");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{symbol}", "BTC-PERP").replace("{order_id}", "1").replace("{user_id}", "1");
        for method in
            item.as_object().unwrap().keys().filter(|m| ["get", "post", "patch", "delete"].contains(&m.as_str()))
        {
            let answer = host.request(&method.to_uppercase(), &concrete, &[], None);
            assert_ne!(answer.status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(answer.status == 404 && answer.body["error"]["message"] == "no such endpoint"),
                "{method} {path} is documented but not routed"
            );
            operations += 1;
        }
    }
    assert!(operations >= 29, "{operations} operations");
    host.stop();
}
