//! A newcomer's path, on the real binary: `exhost module new`, build to wasm,
//! upload and activate with the CLI against a running host, trade on it, roll
//! back; and record a fixture from the journal for the test kit.

mod support;

use std::process::Command;

use exhost_guest_sdk::MatchingCommand;
use serde_json::{Value, json};
use support::*;

#[test]
fn a_new_plugin_builds_uploads_activates_and_rolls_back() {
    let dir = TempDir::new("authoring");
    let host = Host::start(dir.path());
    let plugin = dir.path().join("my-book");
    let created = Command::new(EXHOST).args(["module", "new", "my-book", "--dir"]).arg(&plugin).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    // Offline: the template's dependencies are the SDK's, already in the cargo cache.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--offline", "--release", "--target", "wasm32-unknown-unknown"])
        .current_dir(&plugin)
        .env("CARGO_TARGET_DIR", plugin.join("target"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "the template must build on the first try:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = plugin.join("target/wasm32-unknown-unknown/release/my_book.wasm");

    let cli = |args: &[&str]| {
        let output =
            Command::new(EXHOST).args(args).args(["--url", &host.base, "--token", ADMIN_TOKEN]).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let original = host.get("/v1/markets").ok()[0]["matching_module"].as_str().unwrap().to_string();
    let uploaded = cli(&["module", "upload", wasm.to_str().unwrap(), "--market", "BTC-PERP"]);
    let hash = uploaded["hash"].as_str().unwrap().to_string();
    assert_eq!(uploaded["kind"], "matching");
    let activated = cli(&["module", "activate", &hash, "--market", "BTC-PERP"]);
    assert_eq!(activated["current"], hash.as_str());

    let alice = host.new_trader();
    let bob = host.new_trader();
    let order = |trader: &Trader, side: &str, qty: &str| {
        host.signed(
            trader,
            "POST",
            "/v1/orders",
            Some(json!({
                "symbol": "BTC-PERP", "side": side, "type": "limit", "price": "27000", "qty": qty,
            })),
        )
        .ok()
    };
    order(&alice, "sell", "0.010");
    let bought = order(&bob, "buy", "0.004");
    assert_eq!((bought["status"].as_str(), bought["filled_qty"].as_str()), (Some("filled"), Some("0.004")));
    assert_eq!(host.get("/v1/markets").ok()[0]["matching_module"], hash.as_str());

    // Roll back to the reference module; the book carries over.
    let rolled = cli(&["module", "activate", &original, "--market", "BTC-PERP"]);
    assert_eq!(rolled["previous"], hash.as_str());
    assert_eq!(host.get("/v1/markets/BTC-PERP/book").ok()["asks"], json!([["27000.0", "0.006"]]));
    host.stop();

    // A fixture recorded from the journal feeds the test kit.
    let fixture = dir.path().join("fixture.json");
    let recorded =
        exhost(&["module", "fixture", "--market", "BTC-PERP", "--out", fixture.to_str().unwrap()], dir.path());
    assert!(recorded.status.success(), "{}", String::from_utf8_lossy(&recorded.stderr));
    // Both orders reached the uploaded module, which was active for both.
    let raw: Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
    assert_eq!(raw["modules"], json!([{ "from_command": 0, "module_hash": hash }]));
    let fixture = exhost_testkit::Fixture::load(&fixture).unwrap();
    // The two orders, then the mark their trade set, which the host hands to the book.
    let commands: Vec<&MatchingCommand> = fixture.commands.iter().map(|input| &input.command).collect();
    assert!(
        matches!(
            commands[..],
            [MatchingCommand::Place(_), MatchingCommand::Place(_), MatchingCommand::Mark { price_ticks: 270_000 }]
        ),
        "{commands:?}"
    );
    let report =
        exhost_testkit::compare_matching::<exhost_pricetime::PriceTimeBook>(exhost_embedded::PRICETIME_WASM, &fixture)
            .unwrap();
    assert_eq!(report.commands, 3);
}
