//! Module lifecycle on the real binary: hot swaps under load and back, a
//! switch of matching rules mid-stream, refused uploads with their reasons,
//! a faulty module whose bad commands are rejected the same way on replay,
//! and a migration that survives a restart.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn upload(host: &Host, bytes: &[u8]) -> Answer {
    let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}")), ("Content-Type", "application/wasm".into())];
    host.request("POST", "/admin/v1/modules", &headers, Some(bytes))
}

fn activate(host: &Host, hash: &str) -> Answer {
    host.admin("POST", "/admin/v1/markets/BTC-PERP/module", json!({ "hash": hash }))
}

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

fn fills(answer: &Value) -> Vec<(u64, String)> {
    answer["fills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["trade_id"].as_u64().unwrap(), f["qty"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_swap_under_load_and_back_loses_and_reorders_nothing() {
    let dir = TempDir::new("swap");
    let host = Host::start_with(dir.path(), "snapshot_every_commands = 250\n");
    let traders: Vec<Trader> = (0..6).map(|_| host.new_trader()).collect();
    let original = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    let rebuilt = rebuild(exhost_embedded::PRICETIME_WASM, "1");
    let uploaded = upload(&host, &rebuilt).ok();
    let rebuilt_hash = uploaded["hash"].as_str().unwrap().to_string();
    assert_ne!(rebuilt_hash, original);
    assert_eq!(uploaded["dry_run"][0]["ok"], true);

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = traders
        .iter()
        .enumerate()
        .map(|(i, trader)| {
            let (base, trader, stop, acks) = (host.base.clone(), trader.clone(), stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut rng = Rng::new(100 + i as u64);
                while !stop.load(Ordering::SeqCst) {
                    let side = if rng.below(2) == 0 { "buy" } else { "sell" };
                    let body = json!({
                        "symbol": "BTC-PERP", "side": side, "type": "limit",
                        "price": format!("2700{}.{}", rng.below(3), rng.below(10)), "qty": format!("0.00{}", 1 + rng.below(9)),
                    })
                    .to_string();
                    let mut request = ureq::http::Request::builder().method("POST").uri(format!("{base}/v1/orders"));
                    for (name, value) in trader.headers("POST", "/v1/orders", body.as_bytes()) {
                        request = request.header(name, value);
                    }
                    let mut response = agent.run(request.body(body.into_bytes()).unwrap()).expect("the host answers");
                    let answer: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
                    assert!(answer["seq"].is_u64(), "{answer}");
                    acks.lock().unwrap().push((answer["seq"].as_u64().unwrap(), answer["order_id"].as_u64().unwrap()));
                }
            })
        })
        .collect();
    let wait_for = |count: usize| {
        let started = Instant::now();
        while acks.lock().unwrap().len() < count && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(300);
    let there = activate(&host, &rebuilt_hash).ok();
    assert_eq!(
        (there["previous"].as_str(), there["current"].as_str()),
        (Some(original.as_str()), Some(rebuilt_hash.as_str()))
    );
    wait_for(700);
    let back = activate(&host, &original).ok();
    assert_eq!(back["current"].as_str(), Some(original.as_str()));
    wait_for(1_100);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let (first_swap, second_swap) = (there["seq"].as_u64().unwrap(), back["seq"].as_u64().unwrap());
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.iter().any(|&(seq, _)| seq < first_swap)
            && acks.iter().any(|&(seq, _)| seq > first_swap && seq < second_swap)
    );
    assert!(acks.iter().any(|&(seq, _)| seq > second_swap));

    let modules = host.admin("GET", "/admin/v1/modules", Value::Null).ok();
    let history: Vec<(u64, String, String)> = modules["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["seq"].as_u64().unwrap(), a["from"].as_str().unwrap().into(), a["to"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        history,
        vec![
            (first_swap, original.clone(), rebuilt_hash.clone()),
            (second_swap, rebuilt_hash.clone(), original.clone())
        ]
    );
    host.stop();

    // Every acknowledged order is in the journal exactly once, at its sequence, and
    // the sequence numbers are contiguous across both swaps.
    let journal = exhost(&["journal", "--json", "--limit", "100000000"], dir.path());
    assert!(journal.status.success());
    let records: Vec<Value> =
        String::from_utf8(journal.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "contiguous sequence numbers");
    let places: BTreeSet<u64> =
        records.iter().filter(|r| r["kind"] == "place_order").map(|r| r["seq"].as_u64().unwrap()).collect();
    let acked: BTreeSet<u64> = acks
        .iter()
        .map(|&(seq, order_id)| {
            assert_eq!(seq, order_id);
            seq
        })
        .collect();
    assert_eq!(acked.len(), acks.len(), "no sequence acknowledged twice");
    assert!(acked.is_subset(&places), "every acknowledged order is journaled");
    assert_eq!(records[first_swap as usize - 1]["kind"], "activate_module");

    let verify = exhost(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&verify.stderr));
    let host = Host::start(dir.path());
    let activations = host.admin("GET", "/admin/v1/modules", Value::Null).ok()["activations"].as_array().unwrap().len();
    assert_eq!(activations, 2, "the history survives a restart");
    host.stop();
}

#[test]
fn switching_to_pro_rata_and_back_changes_the_rules_at_the_swap() {
    let dir = TempDir::new("prorata");
    let host = Host::start(dir.path());
    let t: Vec<Trader> = (0..4).map(|_| host.new_trader()).collect();
    let price_time = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();

    // Price-time: the oldest order at the level takes everything it can.
    order(&host, &t[0], "sell", "27000", "0.030");
    order(&host, &t[1], "sell", "27000", "0.010");
    let taker = order(&host, &t[3], "buy", "27000", "0.020");
    assert_eq!(fills(&taker).iter().map(|f| f.1.as_str()).collect::<Vec<_>>(), ["0.020"]);

    let uploaded = upload(&host, exhost_embedded::PRORATA_WASM).ok();
    let prorata = uploaded["hash"].as_str().unwrap().to_string();
    let swapped = activate(&host, &prorata).ok();
    assert_eq!(swapped["migrated"], true, "book v2 to pro-rata's book v1 goes through migrate");
    // The book carried over: 0.010 of t0 and 0.010 of t1 rest at 27000.
    let book = host.get("/v1/markets/BTC-PERP/book").ok();
    assert_eq!(book["asks"], json!([["27000.0", "0.020"]]));
    order(&host, &t[2], "sell", "27000", "0.040");
    // Pro-rata over 10, 10, 40 lots for 30: 5, 5, 20.
    let taker = order(&host, &t[3], "buy", "27000", "0.030");
    assert_eq!(fills(&taker).iter().map(|f| f.1.as_str()).collect::<Vec<_>>(), ["0.005", "0.005", "0.020"]);
    assert_eq!(exhost_prorata::allocate(30, &[Some(10), Some(10), Some(40)]), vec![5, 5, 20]);
    // Pro-rata has no icebergs: the order is refused precisely and nothing rests.
    let iceberg = json!({"symbol": "BTC-PERP", "side": "sell", "type": "limit", "price": "27100", "qty": "0.020", "display_qty": "0.010"});
    let refused = host.signed(&t[2], "POST", "/v1/orders", Some(iceberg)).ok();
    assert_eq!(
        (refused["status"].as_str(), refused["reject_reason"].as_str()),
        (Some("rejected"), Some("unsupported_order"))
    );
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok()["asks"], json!([["27000.0", "0.030"]]));

    // Rollback: price-time again, from the state pro-rata left.
    let rolled = activate(&host, &price_time).ok();
    assert_eq!(rolled["current"].as_str(), Some(price_time.as_str()));
    let taker = order(&host, &t[3], "buy", "27000", "0.006");
    // Oldest first again: t0's 0.005 then 0.001 of t1's.
    assert_eq!(fills(&taker).iter().map(|f| f.1.as_str()).collect::<Vec<_>>(), ["0.005", "0.001"]);
    host.stop();
    let verify = exhost(&["verify"], dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

fn wat_module(body: &str, abi_version: u32, memory: &str, imports: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            {imports}
            (memory (export "memory") {memory})
            (func (export "exhost_abi_version") (result i32) i32.const {abi_version})
            (func (export "exhost_module_kind") (result i32) i32.const 1)
            (func (export "exhost_state_version") (result i32) i32.const 1)
            (func (export "exhost_input") (param i32) (result i32) i32.const 1024)
            (func (export "exhost_output") (result i64) i64.const 0)
            (func (export "exhost_init") (param i32) (result i32) i32.const 0)
            {body}
            (func (export "exhost_query") (param i32) (result i32) i32.const 0)
            (func (export "exhost_snapshot") (result i32) i32.const 0)
            (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
            (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
            (func (export "exhost_panic_message") (result i64) i64.const 0)
        )"#
    ))
    .unwrap()
}

#[test]
fn bad_modules_are_refused_with_reasons_an_author_can_act_on() {
    let dir = TempDir::new("badmodules");
    let host = Host::start(dir.path());
    let apply = r#"(func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)"#;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an import",
            wat_module(apply, 1, "1 16", r#"(import "wasi_snapshot_preview1" "clock_time_get" (func))"#),
            "imports `wasi_snapshot_preview1::clock_time_get`",
        ),
        ("a missing export", wat_module("", 1, "1 16", ""), "does not export `exhost_apply`"),
        ("an unknown ABI version", wat_module(apply, 99, "1 16", ""), "ABI version 99"),
        ("unbounded memory", wat_module(apply, 1, "1", ""), "no declared maximum"),
        ("garbage", b"definitely not wasm".to_vec(), "magic number"),
        ("the text format", b"(module)".to_vec(), "magic number"),
        ("a truncated module", exhost_embedded::PRICETIME_WASM[..5_000].to_vec(), "not a WebAssembly binary module"),
    ];
    let before = host.admin("GET", "/admin/v1/modules", Value::Null).ok()["modules"].as_array().unwrap().len();
    for (name, bytes, expected) in cases {
        let answer = upload(&host, &bytes);
        assert_eq!((answer.status, answer.code()), (400, "module_rejected"), "{name}: {}", answer.body);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message:?} lacks {expected:?}");
    }
    // A position module cannot run a market, and an unknown hash cannot be activated.
    let positions = upload(&host, exhost_embedded::POSITIONS_WASM).ok();
    assert_eq!(activate(&host, positions["hash"].as_str().unwrap()).code(), "module_rejected");
    assert_eq!(activate(&host, &"ab".repeat(32)).code(), "not_found");
    let after = host.admin("GET", "/admin/v1/modules", Value::Null).ok()["modules"].as_array().unwrap().len();
    assert_eq!(after, before, "nothing refused was stored (the position module was already there)");
    host.stop();
}

#[test]
fn a_faulty_module_rejects_its_bad_commands_the_same_way_on_replay_and_its_migration_survives_a_restart() {
    let dir = TempDir::new("faulty");
    let host = Host::start(dir.path());
    let alice = host.new_trader();
    let bob = host.new_trader();
    order(&host, &alice, "sell", "27000", "0.050");
    let testbed = upload(&host, exhost_embedded::TESTBED_WASM).ok();
    assert_eq!(testbed["state_version"], 1000);
    let swapped = activate(&host, testbed["hash"].as_str().unwrap()).ok();
    assert_eq!(swapped["migrated"], true, "book v2 to testbed v1000 goes through migrate");

    let trapped = order(&host, &bob, "buy", "27000", "0.013");
    assert_eq!(
        (trapped["status"].as_str(), trapped["reject_reason"].as_str()),
        (Some("rejected"), Some("module_trap"))
    );
    let looped = order(&host, &bob, "buy", "27000", "0.017");
    assert_eq!(
        (looped["status"].as_str(), looped["reject_reason"].as_str()),
        (Some("rejected"), Some("module_out_of_fuel"))
    );
    // Nothing of either command happened: the book is as before, and the host goes on.
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok()["asks"], json!([["27000.0", "0.050"]]));
    let fine = order(&host, &bob, "buy", "27000", "0.005");
    assert_eq!(fine["status"], "filled");
    assert_eq!(host.get("/healthz").ok()["status"], "ok");
    let (trap_seq, loop_seq) = (trapped["seq"].as_u64().unwrap(), looped["seq"].as_u64().unwrap());
    host.stop();

    // Replayed from the start, the same commands fault the same way: same digest.
    let verify = exhost(&["verify"], dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let from_start = exhost(&["replay", "--from-start"], dir.path());
    let from_snapshot = exhost(&["replay"], dir.path());
    let digest = |out: &std::process::Output| {
        line_after(&String::from_utf8_lossy(&out.stdout), "state digest ").unwrap().to_string()
    };
    assert_eq!(digest(&from_start), digest(&from_snapshot));

    // The migrated state (v2) survives the restart, and trading goes on under the testbed.
    let host = Host::start(dir.path());
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok()["asks"], json!([["27000.0", "0.045"]]));
    let again = order(&host, &bob, "buy", "27000", "0.013");
    assert_eq!(again["reject_reason"], "module_trap");
    let events = host.all_events();
    for seq in [trap_seq, loop_seq] {
        assert!(events.iter().any(|e| e["seq"] == seq && e["type"] == "order_update" && e["status"] == "rejected"));
    }
    host.stop();
}
