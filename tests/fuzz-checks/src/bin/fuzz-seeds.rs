//! Writes the seed corpora of the fuzz targets: real journal records,
//! commands and an engine snapshot made by the engine itself, decimal
//! strings at the edges of the grammar, order bodies, the embedded plugins
//! and small WAT modules. `cargo run -p exhost-fuzz-checks --bin fuzz-seeds
//! -- tests/fuzz/corpus` (files are named by content, so running it again
//! adds nothing twice).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use exhost_engine::*;
use exhost_guest_sdk::codec;
use exhost_guest_sdk::*;
use exhost_pricetime::PriceTimeBook;
use exhost_store::journal::encode_record;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tests/fuzz/corpus".into()));
    let commands = commands();
    for (seq, command) in commands.iter().enumerate() {
        let bytes = codec::encode(command);
        write(&root, "command", &bytes)?;
        let mut record = (seq as u64 + 1).to_le_bytes().to_vec();
        encode_record(seq as u64 + 1, 1_700_000_000_000_000_000 + seq as u64, &bytes, &mut record);
        write(&root, "journal_record", &record)?;
    }
    let mut engine = Engine::new(Arc::new(NativeLoader::<PriceTimeBook>::default()));
    for (seq, command) in commands.iter().enumerate() {
        let seq = seq as u64 + 1;
        engine.apply(seq, seq * 1_000, command).expect("the seed flow applies");
        if seq == 3 || seq as usize == commands.len() {
            write(&root, "engine_snapshot", &engine.snapshot().expect("a native snapshot").encode())?;
        }
    }
    for text in [
        "0.5|27350.5",
        "0.5|27350",
        "0.5|27350.50",
        "0.5|27350.25",
        "0.5|0",
        "0.5|0.0",
        "0.5|.5",
        "0.5|5.",
        "0.5|-1",
        "0.5|1e3",
        "0.5| 1",
        "0.001|0.001",
        "0.001|0.0005",
        "0.001|18446744073709551.615",
        "0.001|18446744073709551.616",
        "1|18446744073709551615",
        "1|18446744073709551616",
        "1|00000000000000000000001",
        "0.000000000000000001|0.000000000000000001",
        "0.000000000000000001|0.0000000000000000010",
        "25|75",
        "25|80",
        "0.50|1.5",
        "10|1.0",
        "0|1",
        "1.2.3|1",
    ] {
        write(&root, "decimal", text.as_bytes())?;
    }
    for body in [
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","price":"27350.5","qty":"0.010"}"#,
        r#"{"symbol":"BTC-PERP","side":"sell","type":"market","qty":"1","time_in_force":"ioc","reduce_only":true}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","price":"1","qty":"0.001","time_in_force":"post_only","stp":"cancel_both","client_order_id":"abc-1"}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","qty":"1"}"#,
        r#"{"symbol":"ETH-PERP","side":"buy","type":"limit","price":"1","qty":"1"}"#,
        r#"{"symbol":"BTC-PERP","side":"up","type":"limit","price":"1","qty":"1"}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","price":"1","qty":"1","extra":1}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","price":1,"qty":"1"}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"limit","price":"1","qty":"1","qty":"2"}"#,
        r#"{"symbol":"BTC-PERP","side":"buy","type":"market","price":"1","qty":"1","time_in_force":"post_only"}"#,
        "",
        "  ",
        "[]",
        "null",
        "{",
        "{\"symbol\":\"\u{0}\"}",
    ] {
        write(&root, "order_json", body.as_bytes())?;
    }
    for module in [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM] {
        write(&root, "module_bytes", module)?;
    }
    for text in [
        "(module (func (export \"f\") (result i32) i32.const 1))",
        "(module (memory 1) (func (export \"f\") (memory.fill (i32.const 0) (i32.const 0) (i32.const 65536))))",
        "(module (memory 1) (func (export \"f\") (memory.copy (i32.const 0) (i32.const 8) (i32.const 8))))",
        "(module (global (mut i64) (i64.const 0)) (func (export \"f\") (global.set 0 (i64.const 1))))",
        "(module (func $s) (start $s))",
        "(module (table 1 funcref) (func (export \"f\") (table.grow (ref.null func) (i32.const 1)) drop))",
        "(module (memory 1) (data \"x\") (func (export \"f\") (data.drop 0)))",
        "(module (func (export \"f\") (param f64) (result f64) (f64.sqrt (local.get 0))))",
        "(module (import \"env\" \"clock\" (func)) (func))",
    ] {
        write(&root, "module_bytes", &wat::parse_str(text).expect("seed WAT"))?;
    }
    // wasm-smith builds a module from any bytes; a few shapes of input suffice.
    for seed in [&[0u8; 64][..], &[0xff; 64][..], &(0..=255).collect::<Vec<u8>>()[..]] {
        write(&root, "module_smith", seed)?;
    }
    Ok(())
}

fn spec(symbol: &str) -> MarketSpec {
    let mut spec = exhost_node::datadir::default_market(ModuleHash([7; 32]));
    spec.symbol = symbol.into();
    spec
}

fn commands() -> Vec<Command> {
    let order = |user: u64, side, price_ticks, qty_lots| {
        Command::PlaceOrder(NewOrder {
            market: MarketId(0),
            user_id: UserId(user),
            client_order_id: Some(format!("c{user}-{price_ticks}")),
            side,
            order_type: OrderType::Limit,
            price_ticks,
            qty_lots,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
            reduce_only: false,
        })
    };
    vec![
        Command::CreateMarket(spec("BTC-PERP")),
        Command::CreateUser { api_key: "k1".into(), api_secret: "s1".into() },
        Command::CreateUser { api_key: "k2".into(), api_secret: "s2".into() },
        order(1, Side::Buy, 54_700, 10),
        order(2, Side::Sell, 54_701, 4),
        order(2, Side::Sell, 54_700, 3),
        Command::AmendOrder {
            market: MarketId(0),
            user_id: UserId(1),
            order_id: OrderId(4),
            price_ticks: None,
            qty_lots: Some(5),
        },
        Command::CancelOrder { market: MarketId(0), user_id: UserId(2), order_id: OrderId(5) },
    ]
}

fn write(root: &Path, target: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    let name = format!("seed-{:016x}", fnv1a(bytes));
    std::fs::write(dir.join(name), bytes)
}

/// A content name, stable across runs (no hasher seeds).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, byte| (hash ^ *byte as u64).wrapping_mul(0x100000001b3))
}
