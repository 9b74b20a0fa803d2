//! Requests that must not do what their signer never meant, and clients that
//! must not take the host from everyone else: each finding of the review,
//! told as its story, against the real binary.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use exhost_server::auth::{SignatureVersion, signed_message};
use serde_json::{Value, json};
use support::*;

fn order_body(price: &str) -> Value {
    json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": price, "qty": "0.001"})
}

fn open_orders(host: &Host, trader: &Trader) -> Vec<u64> {
    let open = host.signed(trader, "GET", "/v1/orders", None).ok();
    open.as_array().unwrap().iter().map(|order| order["order_id"].as_u64().unwrap()).collect()
}

/// The story (finding 4): a signed `DELETE /v1/orders/40` with an empty body,
/// sent as `DELETE /v1/orders` with the body `/40`, verified (the signed
/// bytes, run together, were the same) and mass-cancelled the user's orders
/// in every market. Now a body where none belongs is refused before the
/// signature is looked at, and version 2 keeps the parts apart.
#[test]
fn a_signature_for_one_request_cannot_serve_another() {
    let dir = TempDir::new("moved-parts");
    let host = Host::start(dir.path());
    let alice = host.new_trader();
    let first = host.signed(&alice, "POST", "/v1/orders", Some(order_body("27000"))).ok()["order_id"].as_u64().unwrap();
    let second =
        host.signed(&alice, "POST", "/v1/orders", Some(order_body("26999"))).ok()["order_id"].as_u64().unwrap();

    // Version 1: the signature of a single cancel, moved onto a mass cancel.
    let single = format!("/v1/orders/{first}");
    let headers = alice.headers_v1("DELETE", &single, b"");
    let moved_body = single.trim_start_matches("/v1/orders").as_bytes();
    let moved = host.request("DELETE", "/v1/orders", &headers, Some(moved_body));
    assert_eq!((moved.status, moved.code()), (400, "bad_request"), "{}", moved.body);
    assert_eq!(open_orders(&host, &alice), vec![first, second], "nothing was cancelled");
    // The same moved parts under version 2: the signature does not match.
    let headers = alice.headers("DELETE", &single, b"");
    let moved = host.request("DELETE", "/v1/orders", &headers, Some(moved_body));
    assert_eq!(moved.status, 400, "a DELETE never takes a body: {}", moved.body);
    let mut v2_moved = alice.headers("DELETE", "/v1/orders", b"");
    let signature_of_single = alice.headers("DELETE", &single, b"");
    v2_moved[3].1 = signature_of_single[3].1.clone();
    v2_moved[1].1 = signature_of_single[1].1.clone();
    assert_eq!(host.request("DELETE", "/v1/orders", &v2_moved, None).status, 401);
    // Version 1 POST bodies must be one JSON object; version 2 takes the same request.
    let body = format!("[{}]", order_body("26998"));
    let headers = alice.headers_v1("POST", "/v1/orders", body.as_bytes());
    let refused = host.request("POST", "/v1/orders", &headers, Some(body.as_bytes()));
    assert_eq!((refused.status, refused.code()), (400, "bad_request"));
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("X-SIGNATURE-VERSION: 2"));
    // The legitimate requests still work, in both versions.
    let body = order_body("26997").to_string();
    let headers = alice.headers_v1("POST", "/v1/orders", body.as_bytes());
    assert_eq!(host.request("POST", "/v1/orders", &headers, Some(body.as_bytes())).ok()["status"], "new");
    let cancelled = host.signed(&alice, "DELETE", &single, None).ok();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(open_orders(&host, &alice).len(), 2);
}

/// The story (finding 5): the same signed `POST /v1/orders` sent twice
/// within the window created two orders, and a captured WebSocket `auth`
/// opened another socket that could trade indefinitely.
#[test]
fn a_request_or_a_socket_login_cannot_be_replayed() {
    let dir = TempDir::new("replays");
    let host = Host::start(dir.path());
    let alice = host.new_trader();
    let body = order_body("27000").to_string();
    let headers = alice.headers("POST", "/v1/orders", body.as_bytes());
    let first = host.request("POST", "/v1/orders", &headers, Some(body.as_bytes()));
    assert_eq!(first.status, 200, "{}", first.body);
    let again = host.request("POST", "/v1/orders", &headers, Some(body.as_bytes()));
    assert_eq!((again.status, again.code()), (401, "replayed_signature"), "{}", again.body);
    assert_eq!(open_orders(&host, &alice).len(), 1, "one order, not two");
    // Reads may be repeated: they change nothing.
    let headers = alice.headers("GET", "/v1/orders", b"");
    assert_eq!(host.request("GET", "/v1/orders", &headers, None).status, 200);
    assert_eq!(host.request("GET", "/v1/orders", &headers, None).status, 200);

    // A WebSocket auth signs its own socket's challenge: captured, it opens no other.
    let url = host.base.replace("http://", "ws://") + "/ws";
    let connect = || {
        let (mut socket, _) = tungstenite::connect(url.clone()).unwrap();
        let challenge = read_json(&mut socket);
        assert_eq!(challenge["type"], "challenge");
        (socket, challenge["nonce"].as_str().unwrap().to_string())
    };
    let (mut mine, nonce) = connect();
    let auth = alice.ws_auth(&nonce);
    send_json(&mut mine, &auth);
    assert_eq!(read_json(&mut mine)["type"], "authenticated");
    let (mut thief, _) = connect();
    send_json(&mut thief, &auth);
    let answer = read_json(&mut thief);
    assert_eq!((answer["type"].as_str(), answer["error"]["code"].as_str()), (Some("error"), Some("unauthorized")));
    send_json(
        &mut thief,
        &json!({"op": "order", "id": 1, "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "1", "qty": "0.001"}),
    );
    assert_eq!(read_json(&mut thief)["error"]["code"], "unauthorized", "the thief cannot trade");
    // The old form, without the nonce, is refused: it could be replayed.
    let mut old = auth.clone();
    old.as_object_mut().unwrap().remove("nonce");
    let (mut legacy, _) = connect();
    send_json(&mut legacy, &old);
    assert_eq!(read_json(&mut legacy)["error"]["code"], "unauthorized");
}

fn read_json(socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>) -> Value {
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn send_json(socket: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>, value: &Value) {
    socket.send(tungstenite::Message::Text(value.to_string().into())).unwrap();
}

/// A client that timed out must be able to learn whether its order exists
/// instead of sending it again: `client_order_id` is unique among the
/// user's open orders, and the order can be looked up by it.
#[test]
fn a_client_order_id_names_one_open_order_and_finds_it_afterwards() {
    let dir = TempDir::new("client-ids");
    let host = Host::start(dir.path());
    let alice = host.new_trader();
    let bob = host.new_trader();
    let mut body = order_body("27000");
    body["client_order_id"] = json!("my-order-1");
    let placed = host.signed(&alice, "POST", "/v1/orders", Some(body.clone())).ok();
    let duplicate = host.signed(&alice, "POST", "/v1/orders", Some(body.clone()));
    assert_eq!((duplicate.status, duplicate.code()), (400, "duplicate_client_order_id"), "{}", duplicate.body);
    assert_eq!(open_orders(&host, &alice).len(), 1);
    // Another user may use the same id.
    assert_eq!(host.signed(&bob, "POST", "/v1/orders", Some(body.clone())).ok()["status"], "new");
    let found = host.signed(&alice, "GET", "/v1/orders/by-client-id/my-order-1", None).ok();
    assert_eq!((found["order_id"].clone(), found["status"].clone()), (placed["order_id"].clone(), json!("new")));
    assert_eq!(host.signed(&alice, "GET", "/v1/orders/by-client-id/nothing-like-it", None).status, 404);
    // Closed, the order is still found, and its id is free again.
    let path = format!("/v1/orders/{}", placed["order_id"]);
    host.signed(&alice, "DELETE", &path, None).ok();
    let found = host.signed(&alice, "GET", "/v1/orders/by-client-id/my-order-1", None).ok();
    assert_eq!(found["status"], "cancelled");
    let reused = host.signed(&alice, "POST", "/v1/orders", Some(body)).ok();
    assert_ne!(reused["order_id"], placed["order_id"]);
    // Through a restart (the uniqueness is engine state, replayed), and verify agrees.
    host.stop();
    let host = Host::start(dir.path());
    let mut again = order_body("26000");
    again["client_order_id"] = json!("my-order-1");
    assert_eq!(host.signed(&alice, "POST", "/v1/orders", Some(again)).code(), "duplicate_client_order_id");
    host.stop();
    assert!(exhost(&["verify"], dir.path()).status.success());
}

/// Keys without shared secrets, and secrets never at rest in clear: the
/// review found API secrets in clear in the registry, the journal and
/// snapshots.
#[test]
fn ed25519_users_sign_without_a_secret_and_no_secret_is_stored_in_clear() {
    let dir = TempDir::new("keys");
    let host = Host::start(dir.path());
    let hmac_user = host.new_trader();
    let signing = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let public_key = hex::encode(signing.verifying_key().as_bytes());
    let made = host.admin("POST", "/admin/v1/users", json!({ "public_key": public_key })).ok();
    assert!(made.get("api_secret").is_none(), "{made}");
    let api_key = made["api_key"].as_str().unwrap().to_string();
    host.admin("POST", "/admin/v1/deposits", json!({"user_id": made["user_id"], "asset": "USD", "amount": "100000"}))
        .ok();
    let sign = |method: &str, path: &str, body: &str| {
        use ed25519_dalek::Signer;
        let timestamp = fresh_timestamp_ms(&api_key).to_string();
        let message = signed_message(SignatureVersion::V2, &timestamp, method, path, body.as_bytes());
        vec![
            ("X-API-KEY", api_key.clone()),
            ("X-TIMESTAMP", timestamp),
            ("X-SIGNATURE-VERSION", "2".into()),
            ("X-SIGNATURE", hex::encode(signing.sign(&message).to_bytes())),
        ]
    };
    let body = order_body("27000").to_string();
    let placed = host.request("POST", "/v1/orders", &sign("POST", "/v1/orders", &body), Some(body.as_bytes()));
    assert_eq!(placed.ok()["status"], "new");
    // Another key's signature is refused.
    let other = ed25519_dalek::SigningKey::from_bytes(&[43u8; 32]);
    let mut forged = sign("GET", "/v1/orders", "");
    use ed25519_dalek::Signer;
    let message = signed_message(SignatureVersion::V2, &forged[1].1, "GET", "/v1/orders", b"");
    forged[3].1 = hex::encode(other.sign(&message).to_bytes());
    assert_eq!(host.request("GET", "/v1/orders", &forged, None).status, 401);
    assert_eq!(host.admin("POST", "/admin/v1/users", json!({ "public_key": "zz" })).status, 400);

    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    host.stop();
    // The HMAC user's secret is nowhere in the database: not the journal, not a snapshot.
    let journal = exhost(&["journal", "--json"], dir.path());
    let journal = String::from_utf8_lossy(&journal.stdout);
    assert!(journal.contains(&hmac_user.api_key), "the negative control: the journal does hold the user's key");
    assert!(!journal.contains(&hmac_user.api_secret), "the journal holds the secret in clear");
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("db")).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(!stored.windows(hmac_user.api_secret.len()).any(|w| w == hmac_user.api_secret.as_bytes()));
    // And it still signs after a restart: the sealed secret opens with the key file.
    let host = Host::start(dir.path());
    assert_eq!(host.signed(&hmac_user, "GET", "/v1/orders", None).status, 200);
}

/// The story (finding 11): one key sent 5,000 orders in 4 s with nothing to
/// slow it down. Now each key has a bucket, and the others are served.
#[test]
fn one_key_is_limited_and_the_others_are_served() {
    let dir = TempDir::new("rate");
    let host = Host::start_with(dir.path(), "rate_limit_per_second = 20\nrate_limit_burst = 40\n");
    let greedy = host.new_trader();
    let polite = host.new_trader();
    let mut limited = 0;
    for _ in 0..120 {
        let answer = host.signed(&greedy, "GET", "/v1/orders", None);
        if answer.status == 429 {
            assert_eq!(answer.code(), "rate_limited");
            limited += 1;
        }
    }
    assert!(limited > 40, "only {limited} of 120 quick requests were limited");
    assert_eq!(host.signed(&polite, "GET", "/v1/orders", None).status, 200, "another key is served");
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(host.signed(&greedy, "GET", "/v1/orders", None).status, 200, "the bucket refills");
}

/// The story (finding 11): a connection could trickle its headers forever
/// (slowloris), and enough of them hold every connection the host has.
#[test]
fn a_client_that_trickles_its_headers_is_cut_off() {
    /// Trickle a request's headers a byte at a time for up to `for_how_long`;
    /// how long the connection lasted, and whether the host ended it.
    fn trickle(host: &Host, for_how_long: Duration) -> (Duration, bool) {
        let address = host.base.trim_start_matches("http://").to_string();
        let mut slow = TcpStream::connect(&address).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        let started = Instant::now();
        let headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in headers.iter().cycle() {
            if started.elapsed() > for_how_long {
                return (started.elapsed(), false);
            }
            if slow.write_all(&[*byte]).is_err() {
                return (started.elapsed(), true);
            }
            let mut buffer = [0u8; 512];
            match slow.read(&mut buffer) {
                // Closed, or answered (408) and then closed: ended by the host.
                Ok(_) => return (started.elapsed(), true),
                Err(error)
                    if error.kind() == std::io::ErrorKind::WouldBlock
                        || error.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return (started.elapsed(), true),
            }
        }
        unreachable!()
    }
    let dir = TempDir::new("slowloris");
    let host = Host::start_with(dir.path(), "header_read_timeout_ms = 1000\n");
    let (lasted, ended) = trickle(&host, Duration::from_secs(8));
    assert!(ended && lasted < Duration::from_secs(4), "the trickling connection lasted {lasted:?} (ended: {ended})");
    assert_eq!(host.get("/healthz").ok()["status"], "ok", "a prompt client on the same host is served");
    // The negative control: with a long timeout the same trickle is not cut off.
    let patient = TempDir::new("slowloris-patient");
    let patient_host = Host::start_with(patient.path(), "header_read_timeout_ms = 60000\n");
    let (lasted, ended) = trickle(&patient_host, Duration::from_secs(3));
    assert!(!ended, "the patient host cut the trickle off after {lasted:?}");
}

/// The story (finding 11): an anonymous `GET book?at_seq=` started a replay
/// with no cap. Now a rebuild replays at most a set number of commands past
/// its snapshot, and says so.
#[test]
fn a_point_in_time_rebuild_is_capped_and_says_why() {
    let dir = TempDir::new("pit-cap");
    let host = Host::start_with(dir.path(), "point_in_time_replay_commands_max = 5\nsnapshot_every_commands = 0\n");
    let alice = host.new_trader();
    for i in 0..10 {
        host.signed(&alice, "POST", "/v1/orders", Some(order_body(&format!("2700{i}")))).ok();
    }
    let last = host.last_event_seq();
    let far = host.get(&format!("/v1/markets/BTC-PERP/book?at_seq={last}"));
    assert_eq!((far.status, far.code()), (400, "bad_request"), "{}", far.body);
    assert!(far.body["error"]["message"].as_str().unwrap().contains("past the nearest snapshot"), "{}", far.body);
    // Near a snapshot it answers.
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    let near = host.get(&format!("/v1/markets/BTC-PERP/book?at_seq={last}")).ok();
    assert_eq!(near["bids"].as_array().unwrap().len(), 10);
}

/// Small ones (finding 12): a malformed query string got a plain-text 400,
/// and an unsigned request with one got 400 before 401.
#[test]
fn malformed_query_strings_get_json_errors_after_authentication() {
    let dir = TempDir::new("queries");
    let host = Host::start(dir.path());
    let alice = host.new_trader();
    for path in [
        "/v1/markets/BTC-PERP/book?at_seq=abc",
        "/v1/markets/BTC-PERP/book?depth=x",
        "/v1/markets/BTC-PERP/trades?limit=-1",
    ] {
        let answer = host.get(path);
        assert_eq!((answer.status, answer.code()), (400, "bad_request"), "{path}: {}", answer.text);
    }
    let unsigned = host.request("GET", "/v1/account?at_seq=abc", &[], None);
    assert_eq!((unsigned.status, unsigned.code()), (401, "unauthorized"));
    let signed = host.signed(&alice, "GET", "/v1/account?at_seq=abc", None);
    assert_eq!((signed.status, signed.code()), (400, "bad_request"));
    let admin = host.admin("GET", "/admin/v1/events?from_seq=x", Value::Null);
    assert_eq!((admin.status, admin.code()), (400, "bad_request"));
}

/// Small ones (finding 12) and finding 10: a mass cancel with nothing to
/// cancel took a seq no event carried; trades told a trader who the other
/// side was.
#[test]
fn every_seq_shows_in_the_log_and_a_trader_sees_only_its_own_side() {
    let dir = TempDir::new("privacy");
    let host = Host::start(dir.path());
    let maker = host.new_trader();
    let taker = host.new_trader();
    let nothing = host.signed(&taker, "DELETE", "/v1/orders", None).ok();
    let seq = nothing["seq"].as_u64().unwrap();
    let events = host.all_events();
    let of_seq: Vec<&Value> = events.iter().filter(|event| event["seq"] == seq).collect();
    assert_eq!(of_seq.len(), 1, "{of_seq:?}");
    assert_eq!((of_seq[0]["type"].as_str(), of_seq[0]["orders"].as_u64()), (Some("mass_cancelled"), Some(0)));
    let seqs: std::collections::BTreeSet<u64> = events.iter().map(|event| event["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len() as u64, host.last_event_seq(), "every seq has an event");

    let mut sell = order_body("27000");
    sell["side"] = json!("sell");
    let resting = host.signed(&maker, "POST", "/v1/orders", Some(sell)).ok();
    let filled = host.signed(&taker, "POST", "/v1/orders", Some(order_body("27000"))).ok();
    assert_eq!(filled["status"], "filled");
    let history = host.signed(&taker, "GET", "/v1/account/history", None).ok();
    let trades: Vec<&Value> = history["events"].as_array().unwrap().iter().filter(|e| e["type"] == "trade").collect();
    assert_eq!(trades.len(), 1);
    let text = trades[0].to_string();
    assert_eq!(trades[0]["order_id"], filled["order_id"]);
    assert_eq!((trades[0]["liquidity"].as_str(), trades[0]["side"].as_str()), (Some("taker"), Some("buy")));
    assert!(!text.contains("maker_user_id") && !text.contains("maker_order_id"), "{text}");
    assert!(!text.contains(&format!("\"{}\"", resting["order_id"])) && trades[0].get("taker_user_id").is_none());
    // The operator's log keeps both sides.
    let trade = host.all_events().into_iter().find(|e| e["type"] == "trade").unwrap();
    assert_eq!(trade["maker_user_id"].as_u64(), Some(maker.user_id));
}
