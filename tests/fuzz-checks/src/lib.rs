//! The properties the fuzzers check, one function per target.
//!
//! Each takes the fuzzer's bytes and panics when a property fails, which is
//! what libFuzzer reports. Each also says what a well-behaved decoder owes
//! its input: bad bytes get a typed error, never a panic, and what decodes
//! encodes back to the same value. `tests/corpus.rs` runs the committed
//! corpora (`tests/fuzz/corpus/<target>/`) through the same functions in
//! every CI run, so a crash once found stays fixed.

use std::sync::OnceLock;

use exhost_engine::decimal::{DECIMALS_MAX, DecimalError, Scale};
use exhost_engine::module::ModuleHash;
use exhost_engine::{Command, EngineSnapshot, MarketId};
use exhost_guest_sdk::UserId;
use exhost_guest_sdk::codec;
use exhost_runtime::Runtime;
use exhost_store::journal::{decode_record, encode_record};

/// A fuzz target: its name and what it runs on one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name cargo fuzz and the corpus folders use. The
/// seventh, `module_smith`, builds modules with wasm-smith and checks them
/// with [`module_bytes`]; it lives in `tests/fuzz` alone, because wasm-smith's
/// derive would change the features (and so the build) of the whole workspace.
pub const TARGETS: &[Target] = &[
    ("journal_record", journal_record),
    ("command", command),
    ("engine_snapshot", engine_snapshot),
    ("decimal", decimal),
    ("order_json", order_json),
    ("module_bytes", module_bytes),
];

/// A journal record under a sequence number (first 8 bytes): checked and
/// split without panicking, and what passes re-encodes to the same bytes.
/// Its command, if it decodes, survives an encode/decode round trip.
pub fn journal_record(data: &[u8]) {
    let Some((seq, record)) = data.split_first_chunk::<8>() else { return };
    let seq = u64::from_le_bytes(*seq);
    if let Ok(decoded) = decode_record(seq, record) {
        let mut again = Vec::new();
        encode_record(decoded.seq, decoded.ts_ns, &decoded.command, &mut again);
        assert_eq!(again, record, "a record that decodes re-encodes to the same bytes");
        // A record is bound to its key: the same bytes under another seq fail.
        assert!(decode_record(seq.wrapping_add(1), record).is_err(), "the checksum covers the key");
        command(&decoded.command);
    }
    // And any command written as a record reads back as itself.
    let mut written = Vec::new();
    encode_record(seq, seq.rotate_left(17), record, &mut written);
    let read = decode_record(seq, &written).expect("a record the host wrote reads back");
    assert_eq!((read.seq, read.ts_ns, read.command.as_slice()), (seq, seq.rotate_left(17), record));
}

/// A command in the ABI codec: decoded or refused, and a decoded command is
/// a fixed point of encode then decode.
pub fn command(data: &[u8]) {
    if let Ok(command) = codec::decode::<Command>(data) {
        let encoded = codec::encode(&command);
        let again: Command = codec::decode(&encoded).expect("an encoded command decodes");
        assert_eq!(again, command);
    }
}

/// A snapshot file's contents: decoded or refused, never a panic.
pub fn engine_snapshot(data: &[u8]) {
    if let Ok(snapshot) = EngineSnapshot::decode(data) {
        let encoded = snapshot.encode();
        let again = EngineSnapshot::decode(&encoded).expect("an encoded snapshot decodes");
        assert_eq!(again.encode(), encoded);
    }
}

/// The decimal parser against a model that computes in u128 at 10^-18:
/// the same number or the same refusal, and accepted numbers format back.
/// The input is `step` and `text` separated by the first `|`.
pub fn decimal(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (step, text) = text.split_once('|').unwrap_or(("0.5", text));
    let scale = Scale::from_step(step);
    match (scale, model::parse(step)) {
        (Ok(scale), Some(units_e18)) => {
            let unit_e18 = 10u128.pow((DECIMALS_MAX - scale.decimals) as u32);
            assert_eq!(scale.step_units as u128 * unit_e18, units_e18, "the scale of {step:?} is {scale:?}");
            check_steps(&scale, text);
        }
        (Ok(scale), None) => panic!("{step:?} is no decimal, but it gave {scale:?}"),
        (Err(_), _) => {}
    }
}

fn check_steps(scale: &Scale, text: &str) {
    let unit_e18 = 10u128.pow((DECIMALS_MAX - scale.decimals) as u32);
    let step_e18 = scale.step_units as u128 * unit_e18;
    let expected = match model::parse(text) {
        None => Err(DecimalError::Malformed),
        Some(0) => Err(DecimalError::NotPositive),
        Some(value) if value % unit_e18 != 0 => Err(DecimalError::TooPrecise),
        Some(value) if value / unit_e18 > u64::MAX as u128 => Err(DecimalError::Overflow),
        Some(value) if value % step_e18 != 0 => Err(DecimalError::OffStep),
        Some(value) => Ok((value / step_e18) as u64),
    };
    let got = scale.parse_steps(text);
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let fraction = text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
    match (&got, &expected) {
        (a, b) if a == b => {}
        // The parser reads the digits into a u64 before scaling: a number
        // whose digit string alone is too long is refused as too large (or,
        // past 18 decimals, too precise) even where its value would fit.
        (Err(DecimalError::Overflow), Ok(_) | Err(_)) if digits > 19 || text.split('.').next().unwrap().len() > 20 => {}
        (Err(DecimalError::TooPrecise), _) if fraction > DECIMALS_MAX as usize => {}
        _ => panic!("{text:?} at {scale:?}: parser {got:?}, model {expected:?}"),
    }
    if let Ok(steps) = got {
        let formatted = scale.format_steps(steps);
        assert_eq!(scale.parse_steps(&formatted), Ok(steps), "{formatted:?} reads back as {steps} steps");
    }
}

mod model {
    /// The value of a strict decimal (digits, at most one '.', digits on both
    /// sides of it) in units of 10^-18, if it is one and fits.
    pub fn parse(text: &str) -> Option<u128> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
            return None;
        }
        let whole = whole.trim_start_matches('0');
        let fraction = fraction.trim_end_matches('0');
        if whole.len() > 20 || fraction.len() > 18 {
            // Past u64 or past 10^-18: out of every scale's range, which the
            // caller tells apart by the text itself.
            return Some(u128::MAX);
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let fraction_e18: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().ok()? * 10u128.pow(18 - fraction.len() as u32)
        };
        Some(whole * 10u128.pow(18) + fraction_e18)
    }
}

/// The JSON order parser of `POST /v1/orders` on a market with tick 0.5 and
/// lot 0.001: a clear 4xx error or an order, never a panic or a 5xx, and an
/// accepted order's numbers are the ones written.
pub fn order_json(data: &[u8]) {
    let spec = exhost_node::datadir::default_market(ModuleHash([7; 32]));
    let symbol = spec.symbol.clone();
    let market = |asked: &str| (asked == symbol).then(|| (MarketId(0), spec.clone()));
    match exhost_server::parse_place_order(data, UserId(9), market) {
        Ok((order, options, trigger)) => {
            assert_eq!((order.market, order.user_id), (MarketId(0), UserId(9)));
            let value: serde_json::Value = serde_json::from_slice(data).expect("an accepted body is JSON");
            // A trigger exactly when the type is conditional, at the price written.
            let conditional =
                value["type"].as_str().is_some_and(|t| t.starts_with("stop_") || t.starts_with("take_profit_"));
            assert_eq!(trigger.is_some(), conditional);
            if let Some(trigger) = trigger {
                let written = value["trigger_price"].as_str().expect("a trigger price is a string");
                assert_eq!(spec.price_scale.parse_steps(written), Ok(trigger.price_ticks));
                assert!(trigger.price_ticks > 0 && trigger.price_ticks <= spec.config.price_ticks_max);
            }
            if let Some(display_lots) = options.display_lots {
                assert!(display_lots > 0 && display_lots <= order.qty_lots, "a display quantity within the order");
            }
            assert_eq!(options.expire_time_ns.is_some(), order.time_in_force == exhost_guest_sdk::TimeInForce::Gtd);
            assert!(order.qty_lots > 0 && order.qty_lots <= spec.config.qty_lots_max);
            assert!(order.price_ticks <= spec.config.price_ticks_max);
            let qty = value["qty"].as_str().expect("qty is a string");
            assert_eq!(spec.qty_scale.parse_steps(qty), Ok(order.qty_lots));
            match value["price"].as_str() {
                Some(price) => assert_eq!(spec.price_scale.parse_steps(price), Ok(order.price_ticks)),
                None => assert_eq!(order.price_ticks, 0, "only a market order has no price"),
            }
        }
        Err(error) => {
            assert!(error.status.is_client_error(), "{} for bad input: {}", error.status, error.message);
            assert!(!error.code.is_empty() && !error.message.is_empty());
        }
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("the deterministic engine configuration"))
}

/// Upload bytes through the module validator: a precise rejection or a
/// compiled module, never a panic; and whatever the instrumenter accepts it
/// turns into a module that still validates.
pub fn module_bytes(bytes: &[u8]) {
    let _ = runtime().compile(bytes);
    let mut features = wasmparser::Validator::new();
    if features.validate_all(bytes).is_err() {
        return;
    }
    if let Ok(instrumented) = exhost_runtime::instrument::instrument(bytes)
        && let Err(error) = wasmparser::Validator::new().validate_all(&instrumented.bytes)
    {
        panic!("the instrumented module is invalid: {error}");
    }
}
