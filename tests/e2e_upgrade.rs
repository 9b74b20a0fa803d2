//! An upgrade crosses a data directory written by an older release: the
//! fixture in `tests/fixtures/upgrade-420aece/` is a data directory written by
//! `exhost` at commit 420aece (before order options, book v1), with what that
//! binary answered recorded beside it. Today's binary must replay it to the
//! same digest, verify it, serve the same accounts, books and orders, swap
//! the market to today's reference book (a migration from book v1), trade
//! with the new order types, and still replay and verify across the swap.
//!
//! To write the fixture again from another release (only when the formats it
//! pins are meant to be tested from a newer starting point):
//!
//! ```sh
//! git worktree add /var/tmp/exhost-old <commit> && (cd /var/tmp/exhost-old && cargo build --release --workspace --all-targets)
//! EXHOST_OLD_BINARY=$CARGO_TARGET_DIR/release/exhost EXHOST_FIXTURE=upgrade-<commit> \
//!     cargo test --release --test e2e_upgrade -- --ignored --exact write_the_fixture
//! ```
//!
//! The fixture in `tests/fixtures/upgrade-288dd27/` was written so by the
//! last release with position state v2 (funding paid to every holder at
//! once, whole account messages): today's binary replays it, then swaps in
//! today's position module (a migration to state v3), and every account
//! answer, from the read model and from a replay, agrees at every sequence
//! number across the swap.
//!
//! (build the old binary into its own copy, since one target directory holds
//! one build of each crate.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A fixture's recorded answers and its data directory, unpacked.
fn unpack(name: &str) -> (Value, TempDir) {
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("recorded.json")).unwrap()).unwrap();
    let dir = TempDir::new("upgrade");
    std::fs::create_dir_all(dir.path()).unwrap();
    let untar =
        Command::new("tar").arg("-xzf").arg(fixture(name).join("data.tar.gz")).arg("-C").arg(dir.path()).status();
    assert!(untar.unwrap().success());
    (recorded, dir)
}

fn trader_of(recorded: &Value) -> Trader {
    Trader {
        user_id: recorded["user_id"].as_u64().unwrap(),
        api_key: recorded["api_key"].as_str().unwrap().to_string(),
        api_secret: recorded["api_secret"].as_str().unwrap().to_string(),
    }
}

fn trader_json(trader: &Trader) -> Value {
    json!({"user_id": trader.user_id, "api_key": trader.api_key, "api_secret": trader.api_secret})
}

fn limit(host: &Host, trader: &Trader, side: &str, price: &str, qty: &str) -> Value {
    let body = json!({"symbol": "BTC-PERP", "side": side, "type": "limit", "price": price, "qty": qty});
    host.signed(trader, "POST", "/v1/orders", Some(body)).ok()
}

/// What a host answers that the upgrade must keep.
fn observed(host: &Host, maker: &Trader, taker: &Trader) -> Value {
    json!({
        "maker_account": host.signed(maker, "GET", "/v1/account", None).ok(),
        "taker_account": host.signed(taker, "GET", "/v1/account", None).ok(),
        "maker_orders": host.signed(maker, "GET", "/v1/orders?symbol=BTC-PERP", None).ok(),
        "book": host.get("/v1/markets/BTC-PERP/book?depth=20").ok(),
        "trades": host.get("/v1/markets/BTC-PERP/trades?limit=20").ok(),
        "ledger": host.admin("GET", "/admin/v1/ledger", Value::Null).ok(),
        "events": host.all_events(),
    })
}

fn digest_with(program: &Path, args: &[&str], dir: &Path) -> String {
    let output = exhost_program(program, args, dir);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    line_after(&stdout, "state digest ").unwrap_or_else(|| panic!("no digest in: {stdout}")).to_string()
}

fn verify(dir: &Path) {
    let output = exhost(&["verify"], dir);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && said.contains("verify ok"), "{said}{}", String::from_utf8_lossy(&output.stderr));
}

/// Drive the old binary through a session with every kind of state the
/// formats hold (users, money, resting and filled orders, an amend, a cancel,
/// a mark price, funding, a snapshot midway and journal after it), and
/// record what it answered.
#[test]
#[ignore = "writes the fixture; run by hand with EXHOST_OLD_BINARY"]
fn write_the_fixture() {
    let program = PathBuf::from(std::env::var("EXHOST_OLD_BINARY").expect("EXHOST_OLD_BINARY names the old exhost"));
    let dir = TempDir::new("upgrade-fixture");
    let data = dir.path().join("data");
    let host = Host::start_program(&program, &data, "", &[]);
    let (maker, taker) = (host.new_trader(), host.new_trader());
    for (side, price, qty) in [("sell", "27000", "0.100"), ("sell", "27100", "0.200"), ("buy", "26500", "0.300")] {
        limit(&host, &maker, side, price, qty);
    }
    let bid = limit(&host, &maker, "buy", "26000", "0.050");
    assert_eq!(limit(&host, &taker, "buy", "27000", "0.040")["status"], "filled");
    host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "27050"})).ok();
    host.admin("POST", "/admin/v1/funding", json!({"symbol": "BTC-PERP", "rate": "0.0001"})).ok();
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    // Journal after the snapshot: an amend that keeps its place, a cancel, a partial fill.
    let path = format!("/v1/orders/{}", bid["order_id"]);
    host.signed(&maker, "PATCH", &path, Some(json!({"qty": "0.030"}))).ok();
    let gone = limit(&host, &taker, "buy", "26400", "0.010");
    host.signed(&taker, "DELETE", &format!("/v1/orders/{}", gone["order_id"]), None).ok();
    assert_eq!(limit(&host, &taker, "sell", "26500", "0.100")["status"], "filled");
    let mut recorded = observed(&host, &maker, &taker);
    host.stop();
    recorded["maker"] = trader_json(&maker);
    recorded["taker"] = trader_json(&taker);
    recorded["digest"] = json!(digest_with(&program, &["replay", "--from-start"], &data));
    recorded["market_module"] = json!(host_market_module_of(&program, &data));

    let out = fixture(&std::env::var("EXHOST_FIXTURE").unwrap_or_else(|_| "upgrade-420aece".into()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("recorded.json"), serde_json::to_string_pretty(&recorded).unwrap() + "\n").unwrap();
    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--exclude=host.log",
            "--exclude=exhost.toml",
        ])
        .args(["--exclude=LOG*", "-czf"])
        .arg(out.join("data.tar.gz"))
        .arg("-C")
        .arg(&data)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
}

/// The matching module the market runs, as a host of that build says.
fn host_market_module_of(program: &Path, data: &Path) -> String {
    let host = Host::start_program(program, data, "", &[]);
    let module = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    host.stop();
    module
}

/// The opening every fixture must pass on today's binary: the old journal
/// through the old modules gives the digest the old binary printed (from
/// the start and from its snapshot), `verify` agrees, and a host started
/// on it gives the recorded answers. Returns that host and the traders.
fn replays_and_answers_as_recorded(recorded: &Value, dir: &Path) -> (Host, Trader, Trader) {
    let (maker, taker) = (trader_of(&recorded["maker"]), trader_of(&recorded["taker"]));
    let program = Path::new(EXHOST);
    assert_eq!(digest_with(program, &["replay", "--from-start"], dir), recorded["digest"]);
    assert_eq!(digest_with(program, &["replay"], dir), recorded["digest"], "from the old snapshot");
    verify(dir);
    let host = Host::start(dir);
    let now = observed(&host, &maker, &taker);
    for key in ["maker_account", "taker_account", "maker_orders", "book", "trades", "ledger", "events"] {
        assert_eq!(now[key], recorded[key], "{key} on today's host");
    }
    (host, maker, taker)
}

#[test]
fn a_data_directory_of_the_older_release_replays_verifies_and_upgrades() {
    let (recorded, dir) = unpack("upgrade-420aece");
    let program = Path::new(EXHOST);
    // The same answers, and the market still on the module it had.
    let (host, maker, taker) = replays_and_answers_as_recorded(&recorded, dir.path());
    let market = host.get("/v1/markets").ok()[0].clone();
    assert_eq!(market["matching_module"], recorded["market_module"]);
    let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}")), ("Content-Type", "application/wasm".into())];
    let today = host.request("POST", "/admin/v1/modules", &headers, Some(exhost_embedded::PRICETIME_WASM)).ok();
    let today_hash = today["hash"].as_str().unwrap().to_string();
    assert_ne!(market["matching_module"].as_str(), Some(today_hash.as_str()), "the fixture runs an older book");

    // The older book cannot decode an order with options (it exports no
    // `exhost_abi_revision`): the host refuses it for the book, precisely.
    let iceberg = json!({"symbol": "BTC-PERP", "side": "sell", "type": "limit", "price": "27200", "qty": "0.300", "display_qty": "0.100"});
    let refused = host.signed(&maker, "POST", "/v1/orders", Some(iceberg.clone())).ok();
    let reason = (refused["status"].as_str(), refused["reject_reason"].as_str());
    assert_eq!(reason, (Some("rejected"), Some("unsupported_order")), "{refused}");

    // The swap migrates book v1 to v2: the same book.
    let swap = host.admin("POST", "/admin/v1/markets/BTC-PERP/module", json!({ "hash": today_hash })).ok();
    assert_eq!(swap["current"].as_str(), Some(today_hash.as_str()), "{swap}");
    assert_eq!(host.get("/v1/markets/BTC-PERP/book?depth=20").ok()["asks"], recorded["book"]["asks"]);
    assert_eq!(host.get("/v1/markets/BTC-PERP/book?depth=20").ok()["bids"], recorded["book"]["bids"]);
    // The old position module could not read what the new book says of such
    // orders (an expiry's reason): still refused, until it is upgraded too.
    let refused = host.signed(&maker, "POST", "/v1/orders", Some(iceberg.clone())).ok();
    assert_eq!(refused["reject_reason"], "unsupported_order", "{refused}");
    let positions = host.request("POST", "/admin/v1/modules", &headers, Some(exhost_embedded::POSITIONS_WASM)).ok();
    let swap = host.admin("POST", "/admin/v1/position-module", json!({ "hash": positions["hash"] })).ok();
    assert_eq!(swap["current"], positions["hash"], "{swap}");
    let placed = host.signed(&maker, "POST", "/v1/orders", Some(iceberg)).ok();
    assert_eq!((placed["status"].as_str(), placed["display_qty"].as_str()), (Some("new"), Some("0.100")), "{placed}");
    // 0.060 left at 27000 (migrated), 0.200 at 27100, then the iceberg's shown 0.100.
    let sweep = limit(&host, &taker, "buy", "27200", "0.300");
    let fills: Vec<(&str, &str)> = sweep["fills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fill| (fill["price"].as_str().unwrap(), fill["qty"].as_str().unwrap()))
        .collect();
    assert_eq!(fills, vec![("27000.0", "0.060"), ("27100.0", "0.200"), ("27200.0", "0.040")], "{sweep}");
    assert_eq!(host.get("/v1/markets/BTC-PERP/book?depth=20").ok()["asks"], json!([["27200.0", "0.060"]]));
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    limit(&host, &taker, "buy", "27200", "0.080");
    let account = host.signed(&maker, "GET", "/v1/account", None).ok();
    assert!(!host.log().contains("panicked"), "{}", host.log());
    host.stop();

    // Replay from the start crosses the migration, and agrees with the snapshots.
    verify(dir.path());
    assert_eq!(
        digest_with(program, &["replay", "--from-start"], dir.path()),
        digest_with(program, &["replay"], dir.path())
    );
    let host = Host::start(dir.path());
    assert_eq!(host.signed(&maker, "GET", "/v1/account", None).ok(), account);
    assert_eq!(host.get("/v1/markets/BTC-PERP/book?depth=20").ok()["asks"], json!([["27200.0", "0.080"]]));
    host.stop();
}

/// Both traders' accounts at `seq`, from the read model and from a replay
/// (status and body: before a trader existed both refuse alike).
fn accounts_at(host: &Host, traders: [&Trader; 2], seq: u64) -> [(Value, Value); 2] {
    traders.map(|trader| {
        let path = format!("/v1/account?at_seq={seq}");
        let read = host.signed(trader, "GET", &path, None);
        let replayed = host.signed(trader, "GET", &format!("{path}&source=replay"), None);
        (json!([read.status, read.body]), json!([replayed.status, replayed.body]))
    })
}

#[test]
fn a_position_state_v2_directory_upgrades_to_v3_and_every_account_answer_agrees() {
    let (recorded, dir) = unpack("upgrade-288dd27");
    let program = Path::new(EXHOST);
    // Today's host on the old directory: the old answers, its whole account
    // messages indexed once into today's account records.
    let (host, maker, taker) = replays_and_answers_as_recorded(&recorded, dir.path());

    // The swap migrates v2 to v3: every figure the same to the unit.
    let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}")), ("Content-Type", "application/wasm".into())];
    let positions = host.request("POST", "/admin/v1/modules", &headers, Some(exhost_embedded::POSITIONS_WASM)).ok();
    let swap = host.admin("POST", "/admin/v1/position-module", json!({ "hash": positions["hash"] })).ok();
    assert_eq!(swap["current"], positions["hash"], "{swap}");
    let strip = |mut account: Value| {
        account.as_object_mut().unwrap().remove("seq");
        account
    };
    for (trader, key) in [(&maker, "maker_account"), (&taker, "taker_account")] {
        let account = host.signed(trader, "GET", "/v1/account", None).ok();
        assert_eq!(strip(account), strip(recorded[key].clone()), "{key} after the migration");
    }

    // State v3 at work: a fill, a funding by the index, a mark move.
    assert_eq!(limit(&host, &taker, "buy", "27100", "0.050")["status"], "filled");
    host.admin("POST", "/admin/v1/funding", json!({"symbol": "BTC-PERP", "rate": "0.0002"})).ok();
    host.admin("POST", "/admin/v1/mark-prices", json!({"symbol": "BTC-PERP", "price": "26900"})).ok();
    host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    limit(&host, &maker, "sell", "27300", "0.010");
    let ledger = host.admin("GET", "/admin/v1/ledger", Value::Null).ok();
    let imbalance = ledger["USD"]["imbalance"].as_str().unwrap_or("?").parse::<f64>();
    assert_eq!(imbalance, Ok(0.0), "{ledger}");

    // Every account answer, at every sequence number across the swap: the
    // read model's (lean records valued when read) and a replay's agree.
    let last = host.signed(&maker, "GET", "/v1/account", None).ok()["seq"].as_u64().unwrap();
    let mut answered = 0;
    for seq in 1..=last {
        for (read, replayed) in accounts_at(&host, [&maker, &taker], seq) {
            assert_eq!(read, replayed, "account at seq {seq}");
            answered += usize::from(read[0] == 200);
        }
    }
    assert!(answered >= 20, "{answered} accounts answered in {last} sequence numbers");
    let account = host.signed(&taker, "GET", "/v1/account", None).ok();
    assert!(!host.log().contains("panicked"), "{}", host.log());
    host.stop();

    verify(dir.path());
    assert_eq!(
        digest_with(program, &["replay", "--from-start"], dir.path()),
        digest_with(program, &["replay"], dir.path())
    );
    let host = Host::start(dir.path());
    assert_eq!(host.signed(&taker, "GET", "/v1/account", None).ok(), account);
    host.stop();
}
