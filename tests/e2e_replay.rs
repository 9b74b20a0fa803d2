//! Replay equality on the real binary's data: the same journal replayed twice,
//! and replayed from a snapshot versus from the first record, gives the same
//! digests; `verify` agrees with every stored snapshot; a damaged journal
//! record is reported with its sequence at start-up.

mod support;

use serde_json::json;
use support::*;

fn trade_some(host: &Host, traders: &[Trader], rng: &mut Rng, orders: usize) {
    for _ in 0..orders {
        let trader = &traders[rng.below(traders.len() as u64) as usize];
        let side = if rng.below(2) == 0 { "buy" } else { "sell" };
        let price = format!("{}.{}", 27_350 + rng.below(3), rng.below(10));
        let qty = format!("0.00{}", 1 + rng.below(9));
        host.signed(
            trader,
            "POST",
            "/v1/orders",
            Some(json!({
                "symbol": "BTC-PERP", "side": side, "type": "limit", "price": price, "qty": qty,
            })),
        )
        .ok();
    }
}

fn digest_of(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    line_after(&stdout, "state digest ").unwrap_or_else(|| panic!("no digest in: {stdout}")).to_string()
}

#[test]
fn replays_agree_with_each_other_and_with_snapshots() {
    let dir = TempDir::new("replay");
    let mut rng = Rng::new(11);
    let host = Host::start(dir.path());
    let traders: Vec<Trader> = (0..3).map(|_| host.new_trader()).collect();
    trade_some(&host, &traders, &mut rng, 150);
    let snapshot = host.admin("POST", "/admin/v1/snapshots", json!({})).ok();
    let snapshot_seq = snapshot["seq"].as_u64().unwrap();
    trade_some(&host, &traders, &mut rng, 150);
    host.stop(); // a clean stop stores one more snapshot, at the last sequence

    // Same journal twice: same digest.
    let first = digest_of(&exhost(&["replay", "--from-start"], dir.path()));
    let second = digest_of(&exhost(&["replay", "--from-start"], dir.path()));
    assert_eq!(first, second);
    // From the newest snapshot (no tail) and from the first record: same digest.
    assert_eq!(digest_of(&exhost(&["replay"], dir.path())), first);
    // To the on-demand snapshot's sequence: from the start, and from that snapshot.
    let to = snapshot_seq.to_string();
    let from_start = digest_of(&exhost(&["replay", "--from-start", "--to-seq", &to], dir.path()));
    let from_snapshot = digest_of(&exhost(&["replay", "--to-seq", &to], dir.path()));
    assert_eq!(from_start, from_snapshot);
    assert_eq!(from_start, snapshot["digest"].as_str().unwrap(), "the stored digest is the replayed one");
    // And a different point in history has a different digest.
    let earlier = (snapshot_seq - 10).to_string();
    assert_ne!(digest_of(&exhost(&["replay", "--to-seq", &earlier], dir.path())), from_start);

    let verify = exhost(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("snapshot {snapshot_seq} digest")), "{stdout}");
    assert!(stdout.contains("verify ok: 2 snapshots match"), "{stdout}");

    // A restart after the clean stop replays nothing and serves the same book.
    let host = Host::start(dir.path());
    assert!(host.log().contains("replayed=0"), "{}", host.log());
    host.stop();
}

#[test]
fn a_corrupt_journal_record_stops_start_up_and_names_its_sequence() {
    let dir = TempDir::new("corrupt");
    let host = Host::start(dir.path());
    let traders: Vec<Trader> = (0..2).map(|_| host.new_trader()).collect();
    trade_some(&host, &traders, &mut Rng::new(5), 20);
    host.kill();

    let store = exhost_store::Store::open(&dir.path().join("db")).unwrap();
    let last = store.journal_last_seq().unwrap().unwrap();
    let mut record = store.get(exhost_store::Family::Journal, &exhost_store::seq_key(last)).unwrap().unwrap();
    let middle = record.len() / 2;
    record[middle] ^= 0x5a;
    let mut batch = exhost_store::Batch::default();
    batch.put(exhost_store::Family::Journal, exhost_store::seq_key(last).to_vec(), record);
    store.write(batch, exhost_store::Durability::Synced).unwrap();
    drop(store);

    let output = std::process::Command::new(EXHOST)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("EXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a corrupt journal must stop start-up");
    assert!(stderr.contains(&format!("journal record {last} is corrupt")), "{stderr}");
    let verify = exhost(&["verify"], dir.path());
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stderr).contains(&format!("journal record {last} is corrupt")));
}
