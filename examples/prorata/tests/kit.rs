//! The pro-rata module as wasm behaves exactly like its native build: same
//! events for every command, same final snapshot. Prints the wasm/native
//! speed ratio (`cargo test --release -p exhost-prorata --test kit -- --nocapture`).

use exhost_guest_sdk::MarketConfig;
use exhost_prorata::ProRataBook;
use exhost_testkit::{Fixture, compare_matching};

#[test]
fn wasm_and_native_agree_command_by_command() {
    let fixture = Fixture::random(MarketConfig::default(), 20_000, 11);
    let report = compare_matching::<ProRataBook>(exhost_embedded::PRORATA_WASM, &fixture).unwrap();
    assert_eq!(report.commands, 20_000);
    assert!(report.events > report.commands, "the flow trades and rests");
    println!("pro-rata: {report}");
}

#[test]
fn a_fixture_survives_a_save_and_load() {
    let fixture = Fixture::random(MarketConfig::default(), 100, 3);
    let path = std::env::temp_dir().join(format!("prorata-fixture-{}.json", std::process::id()));
    fixture.save(&path).unwrap();
    let loaded = Fixture::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let a = compare_matching::<ProRataBook>(exhost_embedded::PRORATA_WASM, &fixture).unwrap();
    let b = compare_matching::<ProRataBook>(exhost_embedded::PRORATA_WASM, &loaded).unwrap();
    assert_eq!(a.digest, b.digest);
}
