//! Order entry over WebSocket on the real binary: the same checks and answers
//! as HTTP, requests pipelined without waiting, accepted commands journaled and
//! answered in the order sent, errors tagged with their request's id, and
//! every acknowledged order still there after a crash.

mod support;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(host: &Host) -> (Socket, String) {
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

fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).unwrap();
}

fn receive(socket: &mut Socket) -> Value {
    loop {
        match socket.read().expect("a message within the timeout") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(_) => panic!("the server closed the socket"),
            _ => continue,
        }
    }
}

fn authenticate(socket: &mut Socket, nonce: &str, trader: &Trader) {
    send(socket, trader.ws_auth(nonce));
    let answer = receive(socket);
    assert_eq!(answer["type"], "authenticated", "{answer}");
}

fn open_order_ids(host: &Host, trader: &Trader) -> BTreeSet<u64> {
    let open = host.signed(trader, "GET", "/v1/orders?symbol=BTC-PERP", None).ok();
    open.as_array().unwrap().iter().map(|order| order["order_id"].as_u64().unwrap()).collect()
}

#[test]
fn websocket_order_entry_is_pipelined_checked_and_durable() {
    let dir = TempDir::new("ws-orders");
    let host = Host::start(dir.path());
    let maker = host.new_trader();
    let taker = host.new_trader();

    // Before `auth`, order entry is refused, and the refusal names the request.
    let (mut socket, nonce) = connect(&host);
    send(
        &mut socket,
        json!({"op": "order", "id": "early", "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "1", "qty": "1"}),
    );
    let answer = receive(&mut socket);
    assert_eq!((answer["type"].as_str(), answer["id"].as_str()), (Some("error"), Some("early")), "{answer}");
    assert_eq!(answer["error"]["code"], "unauthorized");
    authenticate(&mut socket, &nonce, &maker);

    // Twenty bids sent without reading an answer, with two bad requests among them.
    let mut sent = Vec::new();
    for i in 0..22u64 {
        let order = match i {
            7 => {
                json!({"op": "order", "id": i, "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "49000.05", "qty": "0.01"})
            }
            15 => {
                json!({"op": "order", "id": i, "symbol": "NOPE-PERP", "side": "buy", "type": "limit", "price": "49000", "qty": "0.01"})
            }
            _ => {
                let price = format!("{}.{}", 49_000 + i, i % 10);
                json!({"op": "order", "id": i, "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": price, "qty": "0.010", "client_order_id": format!("bid-{i}")})
            }
        };
        send(&mut socket, order);
        sent.push(i);
    }
    let mut accepted: Vec<(u64, u64, u64)> = Vec::new(); // (id, seq, order_id)
    let mut errors = Vec::new();
    for _ in 0..sent.len() {
        let answer = receive(&mut socket);
        let id = answer["id"].as_u64().expect("every answer carries its request's id");
        match answer["type"].as_str() {
            Some("order") => {
                let order = &answer["order"];
                assert_eq!(order["status"], "new", "{answer}");
                assert_eq!(order["client_order_id"], format!("bid-{id}"));
                assert_eq!(order["remaining_qty"], "0.010");
                accepted.push((id, order["seq"].as_u64().unwrap(), order["order_id"].as_u64().unwrap()));
            }
            _ => errors.push((id, answer["error"]["code"].as_str().unwrap().to_string())),
        }
    }
    errors.sort();
    assert_eq!(errors, vec![(7, "invalid_price".to_string()), (15, "unknown_market".to_string())]);
    assert_eq!(accepted.len(), 20);
    // Accepted commands are journaled and answered in the order they were sent.
    let ids: Vec<u64> = accepted.iter().map(|a| a.0).collect();
    let mut in_order = ids.clone();
    in_order.sort();
    assert_eq!(ids, in_order, "answers out of order");
    assert!(accepted.windows(2).all(|w| w[0].1 < w[1].1), "sequence numbers not increasing: {accepted:?}");
    assert!(accepted.iter().all(|(_, seq, order_id)| seq == order_id));
    // The HTTP view agrees with what the socket acknowledged.
    let acknowledged: BTreeSet<u64> = accepted.iter().map(|a| a.2).collect();
    assert_eq!(open_order_ids(&host, &maker), acknowledged);

    // Cancel and amend: the same rules and answers as HTTP.
    let (_, _, first) = accepted[0];
    let (_, _, second) = accepted[1];
    send(&mut socket, json!({"op": "cancel", "id": 100, "order_id": first}));
    let answer = receive(&mut socket);
    assert_eq!(answer["id"], 100);
    assert_eq!(answer["order"]["status"], "cancelled", "{answer}");
    send(&mut socket, json!({"op": "cancel", "id": 101, "order_id": first.to_string()}));
    let answer = receive(&mut socket);
    assert_eq!((answer["id"].as_u64(), answer["error"]["code"].as_str()), (Some(101), Some("not_found")), "{answer}");
    send(&mut socket, json!({"op": "amend", "id": 102, "order_id": second, "qty": "0.004"}));
    let answer = receive(&mut socket);
    assert_eq!(answer["order"]["remaining_qty"], "0.004", "{answer}");
    send(&mut socket, json!({"op": "amend", "id": 103, "order_id": second}));
    assert_eq!(receive(&mut socket)["error"]["code"], "bad_request");
    send(&mut socket, json!({"op": "cancel", "id": 104, "order_id": second, "price": "1"}));
    let answer = receive(&mut socket);
    assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("price"), "{answer}");
    send(&mut socket, json!({"op": "order", "id": 105, "symbol": "BTC-PERP", "side": "up"}));
    assert_eq!(receive(&mut socket)["error"]["code"], "bad_request");

    // Another trader cannot cancel the maker's orders over their socket.
    let (mut other, other_nonce) = connect(&host);
    authenticate(&mut other, &other_nonce, &taker);
    send(&mut other, json!({"op": "cancel", "id": 1, "order_id": second}));
    assert_eq!(receive(&mut other)["error"]["code"], "not_found");

    // A taker's IOC over the socket fills against the best bid, the amended one
    // being at the back of its own price: the highest price is the last order sent.
    let best = accepted.last().unwrap().2;
    send(
        &mut other,
        json!({"op": "order", "id": 2, "symbol": "BTC-PERP", "side": "sell", "type": "limit", "price": "49021.1", "qty": "0.010", "time_in_force": "ioc"}),
    );
    let answer = receive(&mut other);
    let order = &answer["order"];
    assert_eq!(order["status"], "filled", "{answer}");
    assert_eq!(order["fills"][0]["price"], "49021.1");
    assert_eq!(order["fills"][0]["liquidity"], "taker");
    let mut expected: BTreeSet<u64> = acknowledged.clone();
    expected.remove(&first);
    expected.remove(&best);
    assert_eq!(open_order_ids(&host, &maker), expected);

    // A crash right after the answers: every acknowledged order is still there.
    for i in 0..50u64 {
        let price = format!("{}", 48_000 + i);
        send(
            &mut socket,
            json!({"op": "order", "id": 1_000 + i, "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": price, "qty": "0.001"}),
        );
    }
    for _ in 0..50 {
        let answer = receive(&mut socket);
        assert_eq!(answer["type"], "order", "{answer}");
        expected.insert(answer["order"]["order_id"].as_u64().unwrap());
    }
    host.kill();
    let host = Host::start(dir.path());
    assert_eq!(open_order_ids(&host, &maker), expected);
    host.stop();
}
