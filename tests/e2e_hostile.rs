//! Hostile modules against the real binary: each finding of the reliability
//! review that a module could cause, told as its story, then shown contained.
//! The modules are built from WAT here; `host/runtime/tests/hostile.rs` runs
//! every misbehaviour in every call, this file shows the exchange going on.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const ABI_VERSION: u32 = exhost_guest_sdk::ABI_VERSION;

/// A matching module with an empty book that works, except where `tweaks`
/// replace an export's body. `$applied` counts applied commands and
/// `$restored` is set by a restore or a migration of a non-empty state, so a module can
/// misbehave only once it holds something (which an upload's check on a
/// fresh instance does not see).
fn module(tweaks: &[(&str, &str)]) -> Vec<u8> {
    let body = |name: &str, normal: &str| {
        tweaks.iter().find(|(export, _)| *export == name).map_or(normal.to_string(), |(_, body)| body.to_string())
    };
    let text = format!(
        r#"(module
            (memory (export "memory") 2 1024)
            (global $out_len (mut i32) (i32.const 0))
            (global $applied (mut i32) (i32.const 0))
            (global $restored (mut i32) (i32.const 0))
            (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "exhost_module_kind") (result i32) i32.const 1)
            (func (export "exhost_state_version") (result i32) i32.const 1)
            (func (export "exhost_input") (param i32) (result i32) (global.set $out_len (i32.const 0)) i32.const 8192)
            (func (export "exhost_output") (result i64)
                (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.extend_i32_u (global.get $out_len))))
            (func (export "exhost_init") (param i32) (result i32) {init})
            (func (export "exhost_apply") (param i32 i32) (result i32)
                (global.set $applied (i32.add (global.get $applied) (i32.const 1)))
                {apply})
            (func (export "exhost_query") (param i32) (result i32) {query})
            (func (export "exhost_snapshot") (result i32) {snapshot})
            (func (export "exhost_restore") (param i32) (result i32)
                (global.set $restored (i32.ne (local.get 0) (i32.const 0)))
                {restore})
            (func (export "exhost_migrate") (param i32 i32) (result i32)
                (global.set $restored (i32.ne (local.get 1) (i32.const 0)))
                i32.const 0)
            (func (export "exhost_panic_message") (result i64) i64.const 0)
        )"#,
        init = body("init", "i32.const 0"),
        apply = body(
            "apply",
            "(i32.store (i32.const 4096) (i32.const 1)) (i32.store8 (i32.const 4100) (i32.const 0)) (global.set $out_len (i32.const 5)) i32.const 0"
        ),
        query =
            body("query", "(i32.store (i32.const 4096) (i32.const 0)) (global.set $out_len (i32.const 3)) i32.const 0"),
        snapshot = body("snapshot", "(global.set $out_len (i32.const 0)) i32.const 0"),
        restore = body("restore", "i32.const 0"),
    );
    wat::parse_str(text).expect("the test module parses")
}

/// Loop forever once the module holds state; before, snapshot an empty state.
const LOOP_ONCE_APPLIED: &str = "(if (i32.gt_u (global.get $applied) (i32.const 0)) (then (loop $spin (br $spin)))) (global.set $out_len (i32.const 0)) i32.const 0";
/// Loop forever once the module holds state; before, answer an empty depth.
const QUERY_LOOPS_ONCE_APPLIED: &str = "(if (i32.gt_u (global.get $applied) (i32.const 0)) (then (loop $spin (br $spin)))) (i32.store (i32.const 4096) (i32.const 0)) (global.set $out_len (i32.const 3)) i32.const 0";

fn upload(host: &Host, bytes: &[u8], market: Option<&str>) -> Answer {
    let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}")), ("Content-Type", "application/wasm".into())];
    let path = match market {
        Some(symbol) => format!("/admin/v1/modules?market={symbol}"),
        None => "/admin/v1/modules".to_string(),
    };
    host.request("POST", &path, &headers, Some(bytes))
}

fn create_market(host: &Host, symbol: &str, hash: &str, limits: Option<Value>) -> Answer {
    let mut body = json!({
        "symbol": symbol, "base": symbol, "quote": "USD", "tick_size": "1", "lot_size": "1", "matching_module": hash,
    });
    if let Some(limits) = limits {
        body["limits"] = limits;
    }
    host.admin("POST", "/admin/v1/markets", body)
}

fn btc_order(host: &Host, trader: &Trader, side: &str, price: &str) -> Answer {
    let body = json!({"symbol": "BTC-PERP", "side": side, "type": "limit", "price": price, "qty": "0.001"});
    host.signed(trader, "POST", "/v1/orders", Some(body))
}

fn order(host: &Host, trader: &Trader, symbol: &str) -> Answer {
    let body = json!({"symbol": symbol, "side": "buy", "type": "limit", "price": "10", "qty": "1"});
    host.signed(trader, "POST", "/v1/orders", Some(body))
}

fn verify(dir: &std::path::Path) {
    let output = exhost(&["verify"], dir);
    assert!(output.status.success(), "verify failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

/// The story (finding 1): a module whose `restore` traps was accepted at
/// upload though its own dry run failed for every market, and a market could
/// be created with it. Its first order halted the node ("module for market N
/// could not be loaded": the rollback after the fault went through
/// `restore`), every restart failed replaying that order, and `verify`
/// failed: a data directory bricked by a module. Now the module is refused
/// at upload, and rolling back never runs a module's `restore` anyway.
#[test]
fn a_module_whose_restore_traps_is_refused_before_anything_can_depend_on_it() {
    let dir = TempDir::new("restore-traps");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    let bytes = module(&[("restore", "unreachable")]);
    let refused = upload(&host, &bytes, None);
    assert_eq!((refused.status, refused.code()), (400, "module_rejected"), "{}", refused.body);
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("restoring its own snapshot failed") && message.contains("trapped"), "{message}");
    // Never stored, so no market can be made with it.
    let hash = exhost_engine::ModuleHash::of(&bytes).to_hex();
    assert_eq!(create_market(&host, "BAD", &hash, None).status, 404);
    let listed = host.admin("GET", "/admin/v1/modules", Value::Null).ok();
    assert!(!listed["modules"].as_array().unwrap().iter().any(|m| m["hash"] == hash.as_str()));
    // The exchange trades on, through a restart, and its journal verifies.
    assert_eq!(btc_order(&host, &trader, "buy", "27000").ok()["status"], "new");
    host.stop();
    let host = Host::start(dir.path());
    assert_eq!(btc_order(&host, &trader, "sell", "27100").ok()["status"], "new");
    host.stop();
    verify(dir.path());
}

/// The story (finding 2): calls other than `apply` ran with effectively
/// unbounded fuel, and the public book asked the live module. A module whose
/// `query` loops, asked by an anonymous `GET /v1/markets/{symbol}/book`,
/// froze every market; a `snapshot` that loops froze the engine while
/// `/healthz` said ok, and every restart hung. Now the public book comes from
/// the events, snapshots copy memory without calling the module, and every
/// call a module does get is bounded.
#[test]
fn a_module_that_loops_in_query_and_snapshot_freezes_nothing() {
    let dir = TempDir::new("query-loops");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    let bytes = module(&[("query", QUERY_LOOPS_ONCE_APPLIED), ("snapshot", LOOP_ONCE_APPLIED)]);
    let uploaded = upload(&host, &bytes, None).ok();
    let hash = uploaded["hash"].as_str().unwrap().to_string();
    create_market(&host, "LOOPY", &hash, None).ok();
    let placed = order(&host, &trader, "LOOPY").ok();
    let after = placed["seq"].as_u64().unwrap();

    // Anonymous book requests never reach the module: answered at once, however often.
    for _ in 0..20 {
        let book = host.get("/v1/markets/LOOPY/book").ok();
        assert!(book["seq"].as_u64().unwrap() >= after, "{book}");
    }
    // A past book runs the module's query in a copy, off the engine: a bounded, clear refusal.
    let started = Instant::now();
    let past = host.get(&format!("/v1/markets/LOOPY/book?at_seq={after}"));
    assert_eq!((past.status, past.code()), (422, "module_rejected"), "{}", past.body);
    assert!(past.body["error"]["message"].as_str().unwrap().contains("out of fuel"), "{}", past.body);
    assert!(started.elapsed() < Duration::from_secs(30), "the past book took {:?}", started.elapsed());
    // Snapshots copy the instance's memory: the looping snapshot export is never called.
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    // Swapping away needs the module's own snapshot: refused, with the reason, before anything is journaled.
    let pricetime = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    let swap = host.admin("POST", "/admin/v1/markets/LOOPY/module", json!({ "hash": pricetime }));
    assert_eq!((swap.status, swap.code()), (400, "module_rejected"), "{}", swap.body);
    assert!(swap.body["error"]["message"].as_str().unwrap().contains("could not snapshot"), "{}", swap.body);
    // All the while the other market trades and the host says it is healthy.
    assert_eq!(btc_order(&host, &trader, "buy", "27000").ok()["status"], "new");
    assert_eq!(host.get("/healthz").ok()["status"], "ok");
    // A restart resumes the stored snapshot (no module code) and replays the rest.
    host.stop();
    let host = Host::start(dir.path());
    assert_eq!(order(&host, &trader, "LOOPY").status, 200);
    assert_eq!(host.get("/v1/markets/LOOPY/book").status, 200);
    host.stop();
    verify(dir.path());
}

/// The story (finding 2, the watchdog): a stuck engine left `/healthz`
/// saying ok. Every call is bounded now, but a bound can be large (an
/// operator may give a market a lot of fuel): while the engine works on one
/// piece for longer than the report threshold, `/healthz` and `/metrics` say
/// so, and both recover when it is done.
#[test]
fn a_long_stall_of_the_engine_is_reported_and_clears() {
    let dir = TempDir::new("stall");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    let bytes = module(&[("apply", "(loop $spin (br $spin)) i32.const 0")]);
    let hash = upload(&host, &bytes, None).ok()["hash"].as_str().unwrap().to_string();
    // Forty billion units of fuel: tens of seconds of looping in one command.
    create_market(&host, "SLOW", &hash, Some(json!({ "fuel_per_command": 40_000_000_000u64 }))).ok();
    assert_eq!(host.get("/healthz").ok()["status"], "ok", "the negative control: healthy before");

    let (base, stuck) = (host.base.clone(), trader.clone());
    let placed = std::thread::spawn(move || {
        let body = json!({"symbol": "SLOW", "side": "buy", "type": "limit", "price": "10", "qty": "1"}).to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder().method("POST").uri(format!("{base}/v1/orders"));
        for (name, value) in stuck.headers("POST", "/v1/orders", body.as_bytes()) {
            request = request.header(name, value);
        }
        let mut response = agent.run(request.body(body.into_bytes()).unwrap()).unwrap();
        serde_json::from_str::<Value>(&response.body_mut().read_to_string().unwrap()).unwrap()
    });
    let started = Instant::now();
    let stalled = loop {
        let health = host.get("/healthz");
        if health.status == 503 {
            break health;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no stall was reported");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stalled.code(), "unavailable");
    assert!(stalled.body["error"]["message"].as_str().unwrap().contains("busy"), "{}", stalled.body);
    let metrics = host.get("/metrics").text;
    let busy: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("exhost_engine_busy_seconds "))
        .expect("the busy gauge is exported")
        .parse()
        .unwrap();
    assert!(busy > 5.0, "busy for {busy} s by the gauge:\n{metrics}");
    assert!(metrics.contains("exhost_engine_stalled 1"), "{metrics}");
    // The command ends at its bound, rejected; then all is well again.
    let answer = placed.join().unwrap();
    assert_eq!(
        (answer["status"].as_str(), answer["reject_reason"].as_str()),
        (Some("rejected"), Some("module_out_of_fuel"))
    );
    assert_eq!(host.get("/healthz").ok()["status"], "ok");
    assert!(host.get("/metrics").text.contains("exhost_engine_stalled 0"));
}

/// The story (finding 3): a hot swap to a module whose `snapshot` traps was
/// accepted (the state version was unchanged, so the swap never asked it for
/// a snapshot). From then on snapshots failed with 500, uploads with 503,
/// swapping back was refused and `verify` failed. Now the swap is checked on
/// a copy of the live state before it is journaled, including the new
/// module's snapshot and the old module taking that snapshot back.
#[test]
fn a_swap_to_a_module_that_cannot_snapshot_is_refused_and_rollback_stays_possible() {
    let dir = TempDir::new("snapshot-traps");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    btc_order(&host, &trader, "buy", "27000").ok();
    // It snapshots an empty state, so it passes on its own; holding a real state, it traps.
    let bytes = module(&[(
        "snapshot",
        "(if (global.get $restored) (then unreachable)) (global.set $out_len (i32.const 0)) i32.const 0",
    )]);
    let uploaded = upload(&host, &bytes, None).ok();
    let dry_run = &uploaded["dry_run"][0];
    assert_eq!((dry_run["target"].as_str(), dry_run["ok"].as_bool()), (Some("BTC-PERP"), Some(false)), "{uploaded}");
    assert!(dry_run["error"].as_str().unwrap().contains("snapshot failed"), "{dry_run}");
    let hash = uploaded["hash"].as_str().unwrap();
    // The same module named as the target of the upload is refused outright.
    let focused = upload(&host, &bytes, Some("BTC-PERP"));
    assert_eq!((focused.status, focused.code()), (400, "module_rejected"));
    let swap = host.admin("POST", "/admin/v1/markets/BTC-PERP/module", json!({ "hash": hash }));
    assert_eq!((swap.status, swap.code()), (400, "module_rejected"), "{}", swap.body);
    assert!(swap.body["error"]["message"].as_str().unwrap().contains("snapshot failed"), "{}", swap.body);
    // Nothing was journaled, the old module runs on, and a real swap and its rollback still work.
    let modules = host.admin("GET", "/admin/v1/modules", Value::Null).ok();
    assert!(modules["activations"].as_array().unwrap().is_empty(), "{modules}");
    let original = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    let mut twin = exhost_embedded::PRICETIME_WASM.to_vec();
    twin.extend_from_slice(&[0, 5, 4, b't', b'w', b'i', b'n']);
    let twin_hash = upload(&host, &twin, Some("BTC-PERP")).ok()["hash"].as_str().unwrap().to_string();
    let there = host.admin("POST", "/admin/v1/markets/BTC-PERP/module", json!({ "hash": twin_hash })).ok();
    assert_eq!(there["rollback_checked"], true, "{there}");
    let back = host.admin("POST", "/admin/v1/markets/BTC-PERP/module", json!({ "hash": original })).ok();
    assert_eq!(back["current"].as_str(), Some(original.as_str()));
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    assert_eq!(btc_order(&host, &trader, "sell", "27100").ok()["status"], "new");
    host.stop();
    verify(dir.path());
}

/// The story: a market whose module's `init` loops made the upload hang with
/// a core pinned. Now `init` is bounded: the upload is refused, quickly, with
/// the reason.
#[test]
fn a_module_whose_init_loops_is_refused_within_its_bound() {
    let dir = TempDir::new("init-loops");
    let host = Host::start(dir.path());
    let started = Instant::now();
    let refused = upload(&host, &module(&[("init", "(loop $spin (br $spin)) i32.const 0")]), None);
    assert_eq!((refused.status, refused.code()), (400, "module_rejected"), "{}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("init failed"), "{}", refused.body);
    assert!(started.elapsed() < Duration::from_secs(30), "the upload took {:?}", started.elapsed());
    assert_eq!(host.get("/healthz").ok()["status"], "ok");
}
