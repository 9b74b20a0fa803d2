//! kill -9 during a load of concurrent clients, then restart: every
//! acknowledged command is there with exactly the outcome it was acknowledged
//! with, the book equals a replay of the journal through the independent
//! model, and `exhost verify` passes.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exhost_book_model::ModelBook;
use exhost_engine::{Command, Scale};
use exhost_guest_sdk::*;
use serde_json::{Value, json};
use support::*;

const TICK: Scale = Scale { decimals: 1, step_units: 1 };
const LOT: Scale = Scale { decimals: 3, step_units: 1 };

/// What a client was told about one of its commands.
#[derive(Debug, Clone)]
struct Ack {
    seq: u64,
    order_id: u64,
    status: String,
    filled_qty: String,
    fill_trade_ids: Vec<u64>,
}

fn client(base: String, trader: Trader, seed: u64, acks: Arc<Mutex<Vec<Ack>>>, deadline: Instant) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut rng = Rng::new(seed);
    let mut mine: Vec<u64> = Vec::new();
    while Instant::now() < deadline {
        let (method, path, body) = if mine.is_empty() || rng.below(5) > 0 {
            let side = if rng.below(2) == 0 { "buy" } else { "sell" };
            let body = json!({
                "symbol": "BTC-PERP", "side": side, "type": "limit",
                "price": TICK.format_steps(273_500 + rng.below(10)),
                "qty": LOT.format_steps(1 + rng.below(5)),
                "stp": "cancel_maker",
            });
            ("POST", "/v1/orders".to_string(), body.to_string())
        } else {
            let order_id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            ("DELETE", format!("/v1/orders/{order_id}"), String::new())
        };
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{base}{path}"));
        for (name, value) in trader.headers(method, &path, body.as_bytes()) {
            request = request.header(name, value);
        }
        // A transport error means the host died: stop, like a client would.
        let Ok(mut response) = agent.run(request.body(body.into_bytes()).unwrap()) else { return };
        let status = response.status().as_u16();
        let Ok(text) = response.body_mut().read_to_string() else { return };
        if status != 200 {
            continue; // e.g. cancelling an order that filled meanwhile: 404, nothing journaled
        }
        let answer: Value = serde_json::from_str(&text).unwrap();
        let order_id = answer["order_id"].as_u64().unwrap();
        if method == "POST" && (answer["status"] == "new" || answer["status"] == "partially_filled") {
            mine.push(order_id);
        }
        acks.lock().unwrap().push(Ack {
            seq: answer["seq"].as_u64().unwrap(),
            order_id,
            status: answer["status"].as_str().unwrap().to_string(),
            filled_qty: answer["filled_qty"].as_str().unwrap().to_string(),
            fill_trade_ids: answer["fills"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["trade_id"].as_u64().unwrap())
                .collect(),
        });
    }
}

#[test]
fn kill_minus_nine_under_load_loses_no_acknowledged_command() {
    let dir = TempDir::new("crash");
    // Frequent snapshots, so recovery starts from one and replays a tail.
    let host = Host::start_with(dir.path(), "snapshot_every_commands = 300\n");
    let traders: Vec<Trader> = (0..8).map(|_| host.new_trader()).collect();

    let acks = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let clients: Vec<_> = traders
        .iter()
        .enumerate()
        .map(|(i, trader)| {
            let (base, trader, acks) = (host.base.clone(), trader.clone(), acks.clone());
            std::thread::spawn(move || client(base, trader, 1 + i as u64, acks, deadline))
        })
        .collect();
    // Let the load build up, then crash in the middle of it.
    let started = Instant::now();
    while acks.lock().unwrap().len() < 1_500 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    host.kill();
    for client in clients {
        client.join().unwrap();
    }
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() >= 500, "the load was too light to mean anything: {} acks", acks.len());

    let host = Host::start(dir.path());
    let events = host.all_events();
    // Every acknowledged command's outcome is in the event log exactly as acknowledged.
    let mut updates: BTreeMap<(u64, u64), &Value> = BTreeMap::new();
    let mut taker_trades: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for event in &events {
        let seq = event["seq"].as_u64().unwrap();
        if event["type"] == "order_update" {
            updates.insert((seq, event["order_id"].as_u64().unwrap()), event);
        }
        if event["type"] == "trade" {
            taker_trades
                .entry(event["taker_order_id"].as_u64().unwrap())
                .or_default()
                .push(event["trade_id"].as_u64().unwrap());
        }
    }
    for ack in &acks {
        let update = updates.get(&(ack.seq, ack.order_id)).unwrap_or_else(|| {
            panic!("acknowledged command {} (order {}) is missing after the crash", ack.seq, ack.order_id)
        });
        assert_eq!(update["status"], ack.status, "{ack:?}");
        assert_eq!(update["filled_qty"], ack.filled_qty, "{ack:?}");
        if ack.seq == ack.order_id {
            assert_eq!(taker_trades.get(&ack.order_id).cloned().unwrap_or_default(), ack.fill_trade_ids, "{ack:?}");
        }
    }
    let book = host.get("/v1/markets/BTC-PERP/book?depth=1000").ok();
    host.stop();

    // The book equals the journal replayed through the independent model.
    let journal = exhost(&["journal", "--json", "--limit", "100000000"], dir.path());
    assert!(journal.status.success(), "{}", String::from_utf8_lossy(&journal.stderr));
    let mut model = ModelBook::new();
    let mut journaled = 0;
    for line in String::from_utf8(journal.stdout).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let seq = record["seq"].as_u64().unwrap();
        let command: Command = serde_json::from_value(record["command"].clone()).unwrap();
        journaled = seq;
        let matching = match command {
            Command::PlaceOrder(o) => MatchingCommand::Place(PlaceOrder {
                order_id: OrderId(seq),
                user_id: o.user_id,
                side: o.side,
                order_type: o.order_type,
                price_ticks: o.price_ticks,
                qty_lots: o.qty_lots,
                time_in_force: o.time_in_force,
                self_trade_prevention: o.self_trade_prevention,
            }),
            Command::CancelOrder { user_id, order_id, .. } => MatchingCommand::Cancel { order_id, user_id },
            _ => continue,
        };
        model.apply(&matching);
    }
    let acked_max = acks.iter().map(|a| a.seq).max().unwrap();
    assert!(journaled >= acked_max, "journal ends at {journaled}, before acknowledged {acked_max}");
    let (bids, asks) = model.depth();
    let levels = |levels: &[Level]| -> Value {
        levels.iter().map(|l| json!([TICK.format_steps(l.price_ticks), LOT.format_steps(l.qty_lots)])).collect()
    };
    assert_eq!((&book["bids"], &book["asks"]), (&levels(&bids), &levels(&asks)), "book after recovery");

    let verify = exhost(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify failed:\n{stdout}\n{}", String::from_utf8_lossy(&verify.stderr));
    assert!(stdout.contains("verify ok"), "{stdout}");
    assert!(line_after(&stdout, "snapshot ").is_some(), "the run took snapshots to check: {stdout}");
}
