//! Hostile modules, built from WAT: for every call the host makes into a
//! module, a module that loops, recurses without end, bombs its memory,
//! traps, or answers with a pointer outside its memory. Each must be
//! contained: the call fails with a typed fault within its bounds, the same
//! fault every time, and nothing else is touched. Plus what validation must
//! refuse outright (a start function, table and segment changes) and what it
//! allows (floats, whose NaNs come out canonical).

use std::sync::Arc;
use std::time::{Duration, Instant};

use exhost_engine::*;
use exhost_guest_sdk::*;
use exhost_runtime::{Rejection, Runtime, WasmLoader, WasmMatching};

/// The calls a module receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Init,
    Apply,
    Query,
    Snapshot,
    Restore,
    Migrate,
    Input,
    Output,
}

const CALLS: [Call; 8] =
    [Call::Init, Call::Apply, Call::Query, Call::Snapshot, Call::Restore, Call::Migrate, Call::Input, Call::Output];

/// The ways a module misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// An endless loop.
    Loop,
    /// Recursion without end.
    Recursion,
    /// Grow the memory a page at a time until refused, then trap.
    MemoryBomb,
    /// Fill the whole memory, again and again: one operator each, unmetered.
    FillBomb,
    /// `unreachable`.
    Trap,
    /// Point the host at bytes outside the memory.
    BadPointer,
}

const MISBEHAVIOURS: [Misbehaviour; 6] = [
    Misbehaviour::Loop,
    Misbehaviour::Recursion,
    Misbehaviour::MemoryBomb,
    Misbehaviour::FillBomb,
    Misbehaviour::Trap,
    Misbehaviour::BadPointer,
];

/// The body that misbehaves, ending in a value of the export's result type
/// (unreachable in practice).
fn misbehave(how: Misbehaviour, result: &str) -> String {
    let tail = if result == "i64" { "i64.const 0" } else { "i32.const 0" };
    match how {
        Misbehaviour::Loop => format!("(loop $spin (br $spin)) {tail}"),
        Misbehaviour::Recursion => format!("(call $deep) {tail}"),
        Misbehaviour::MemoryBomb => {
            "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable".to_string()
        }
        Misbehaviour::FillBomb => format!(
            "(loop $fill (memory.fill (i32.const 0) (i32.const 7) (i32.mul (memory.size) (i32.const 65536))) (br $fill)) {tail}"
        ),
        Misbehaviour::Trap => "unreachable".into(),
        // Calls returning a status report a frame (or text) longer than the memory;
        // `output` and `input` return addresses outside it.
        Misbehaviour::BadPointer => match result {
            "i64" => "i64.const 0xffff000000001000".into(),
            "ptr" => "i32.const 0xfffffff0".into(),
            _ => "(global.set $out_len (i32.const 0x7ffffff0)) i32.const 2".into(),
        },
    }
}

/// A complete matching module that behaves (an empty book), except `bad` in `call`.
fn module(bad: Option<(Call, Misbehaviour)>) -> Vec<u8> {
    let body = |call: Call, normal: &str, result: &str| match bad {
        Some((at, how)) if at == call => misbehave(how, result),
        _ => normal.to_string(),
    };
    // Output lives at 4096: an apply frame is a u32 length and an empty event
    // list (one byte, 0); a depth answer is three zero bytes.
    let apply = body(
        Call::Apply,
        "(i32.store (i32.const 4096) (i32.const 1)) (i32.store8 (i32.const 4100) (i32.const 0)) (global.set $out_len (i32.const 5)) i32.const 0",
        "i32",
    );
    let query = body(
        Call::Query,
        "(i32.store (i32.const 4096) (i32.const 0)) (global.set $out_len (i32.const 3)) i32.const 0",
        "i32",
    );
    let text = format!(
        r#"(module
            (memory (export "memory") 2 16384)
            (global $out_len (mut i32) (i32.const 0))
            (global $applied (mut i64) (i64.const 0))
            (func $deep (call $deep))
            (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "exhost_module_kind") (result i32) i32.const 1)
            (func (export "exhost_state_version") (result i32) i32.const 1)
            (func (export "exhost_input") (param i32) (result i32) (global.set $out_len (i32.const 0)) {input})
            (func (export "exhost_output") (result i64) {output})
            (func (export "exhost_init") (param i32) (result i32) {init})
            (func (export "exhost_apply") (param i32 i32) (result i32)
                (global.set $applied (i64.add (global.get $applied) (i64.const 1))) {apply})
            (func (export "exhost_query") (param i32) (result i32) {query})
            (func (export "exhost_snapshot") (result i32) {snapshot})
            (func (export "exhost_restore") (param i32) (result i32) {restore})
            (func (export "exhost_migrate") (param i32 i32) (result i32) {migrate})
            (func (export "exhost_panic_message") (result i64) i64.const 0)
        )"#,
        input = body(Call::Input, "i32.const 8192", "ptr"),
        output = body(
            Call::Output,
            "(i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.extend_i32_u (global.get $out_len)))",
            "i64"
        ),
        init = body(Call::Init, "i32.const 0", "i32"),
        snapshot = body(Call::Snapshot, "(global.set $out_len (i32.const 0)) i32.const 0", "i32"),
        restore = body(Call::Restore, "i32.const 0", "i32"),
        migrate = body(Call::Migrate, "i32.const 0", "i32"),
    );
    wat::parse_str(text).expect("the test module parses")
}

/// Small bounds, so every test runs fast; the factors are the real ones.
fn limits() -> ModuleLimits {
    ModuleLimits { fuel_per_command: 2_000_000, memory_bytes_max: 256 << 20 }
}

fn ctx() -> CommandContext {
    CommandContext { seq: 1, ts_ns: 1 }
}

fn cancel() -> MatchingCommand {
    MatchingCommand::Cancel { order_id: OrderId(1), user_id: UserId(1) }
}

/// Run the host operation that makes the given call, on a fresh instance of `bytes`.
fn exercise(runtime: &Runtime, bytes: &[u8], call: Call) -> Result<(), ModuleFault> {
    let compiled = runtime.compile(bytes).expect("hostile modules pass validation: they misbehave only at run time");
    let mut instance = WasmMatching::instantiate(runtime, &compiled, &limits())?;
    if call == Call::Init || call == Call::Input {
        return instance.init(&MarketConfig::default());
    }
    instance.init(&MarketConfig::default()).expect("init behaves");
    match call {
        Call::Apply | Call::Output => instance.apply(&ctx(), &cancel(), &mut Vec::new()),
        Call::Query => instance.query(&MatchingQuery::Depth { levels_max: 10 }).map(drop),
        Call::Snapshot => instance.snapshot(&mut Vec::new()),
        Call::Restore => instance.restore(1, b"state"),
        Call::Migrate => instance.restore(0, b"older state"),
        Call::Init | Call::Input => unreachable!(),
    }
}

/// The fault every (call, misbehaviour) pair must give: contained, typed, bounded.
fn expected(call: Call, how: Misbehaviour, fault: &ModuleFault) -> bool {
    match how {
        Misbehaviour::Loop | Misbehaviour::FillBomb => matches!(fault, ModuleFault::OutOfFuel { .. }),
        Misbehaviour::Recursion => {
            matches!(fault, ModuleFault::Trap { message } if message.contains("call stack exhausted"))
        }
        Misbehaviour::MemoryBomb => matches!(fault, ModuleFault::MemoryLimit { .. }),
        Misbehaviour::Trap => matches!(fault, ModuleFault::Trap { message } if message.contains("unreachable")),
        Misbehaviour::BadPointer => match call {
            // The frame's claimed length runs past the memory, or the address is outside it.
            Call::Input | Call::Output | Call::Apply | Call::Query => matches!(fault, ModuleFault::Protocol { .. }),
            // A failing status whose message points past the memory: the host cannot read it.
            _ => matches!(fault, ModuleFault::Protocol { .. }),
        },
    }
}

/// The longest a contained call may take here. Not a performance target: a
/// generous ceiling that an unbounded call (a loop of unmetered fills, a
/// module growing to a gigabyte and touching it) would blow through.
const CONTAINED_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn every_misbehaviour_in_every_call_is_a_typed_bounded_repeatable_fault() {
    let runtime = Runtime::new().unwrap();
    for call in CALLS {
        for how in MISBEHAVIOURS {
            let bytes = module(Some((call, how)));
            let started = Instant::now();
            let first = exercise(&runtime, &bytes, call);
            let took = started.elapsed();
            let fault = first.clone().expect_err(&format!("{call:?} with {how:?} must fault"));
            assert!(expected(call, how, &fault), "{call:?} with {how:?}: unexpected fault {fault}");
            assert!(took < CONTAINED_WITHIN, "{call:?} with {how:?} took {took:?}");
            // The same module, the same call: the same outcome, byte for byte.
            assert_eq!(exercise(&runtime, &bytes, call), first, "{call:?} with {how:?} is not repeatable");
        }
    }
    // The negative control: the same module behaving passes every call.
    let good = module(None);
    for call in CALLS {
        assert_eq!(exercise(&runtime, &good, call), Ok(()), "{call:?} on the well-behaved module");
    }
}

/// The story: fuel is counted per operator, and `memory.fill` of a whole
/// memory is one operator, so a loop of fills ran for as long as it liked.
/// Metered, a fill pays for its bytes.
#[test]
fn bulk_memory_pays_fuel_for_its_bytes() {
    let runtime = Runtime::new().unwrap();
    let fill = |bytes: u32| {
        let text = format!(
            r#"(module
                (memory (export "memory") 2 16384)
                (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
                (func (export "exhost_module_kind") (result i32) i32.const 1)
                (func (export "exhost_state_version") (result i32) i32.const 1)
                (func (export "exhost_input") (param i32) (result i32) i32.const 8192)
                (func (export "exhost_output") (result i64) i64.const 0)
                (func (export "exhost_init") (param i32) (result i32)
                    (drop (memory.grow (i32.const 512)))
                    (memory.fill (i32.const 0) (i32.const 1) (i32.const {bytes}))
                    (memory.copy (i32.const {bytes}) (i32.const 0) (i32.const {bytes}))
                    i32.const 0)
                (func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_query") (param i32) (result i32) i32.const 0)
                (func (export "exhost_snapshot") (result i32) i32.const 0)
                (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
                (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_panic_message") (result i64) i64.const 0)
            )"#
        );
        let compiled = runtime.compile(&wat::parse_str(text).unwrap()).unwrap();
        let mut instance = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default()).unwrap();
        instance.init(&MarketConfig::default()).unwrap();
        let image = instance.image();
        (instance.last_fuel_used(), image)
    };
    let (small, _) = fill(1 << 10);
    let (large, image) = fill(8 << 20);
    // 16 MiB moved in 128-byte pieces at about a dozen operators each.
    assert!(large > 1_000_000, "16 MiB of fill and copy cost only {large} fuel");
    assert!(large > 100 * small, "fuel does not grow with the bytes: {small} then {large}");
    // And the work was done: every byte of both halves is 1, and nothing past them.
    let bytes: Vec<u8> = image.runs().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    assert_eq!(bytes.iter().filter(|&&byte| byte == 1).count(), 16 << 20);
    assert!(bytes.iter().all(|&byte| byte == 1 || byte == 0));
}

/// Overlapping copies move like memmove in both directions, as the
/// instruction they replace does, and out-of-bounds ones still trap before
/// writing anything.
#[test]
fn metered_copies_keep_the_semantics_of_memory_copy() {
    let runtime = Runtime::new().unwrap();
    let run = |init_body: &str| -> Result<Vec<u8>, ModuleFault> {
        let text = format!(
            r#"(module
                (memory (export "memory") 1 1)
                (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
                (func (export "exhost_module_kind") (result i32) i32.const 1)
                (func (export "exhost_state_version") (result i32) i32.const 1)
                (func (export "exhost_input") (param i32) (result i32) i32.const 60000)
                (func (export "exhost_output") (result i64) i64.const 0)
                (func (export "exhost_init") (param i32) (result i32) (local $i i32)
                    (loop $l
                        (i32.store8 (local.get $i) (local.get $i))
                        (local.set $i (i32.add (local.get $i) (i32.const 1)))
                        (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
                    {init_body}
                    i32.const 0)
                (func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_query") (param i32) (result i32) i32.const 0)
                (func (export "exhost_snapshot") (result i32) i32.const 0)
                (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
                (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_panic_message") (result i64) i64.const 0)
            )"#
        );
        let compiled = runtime.compile(&wat::parse_str(text).unwrap()).unwrap();
        let mut instance = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default()).unwrap();
        instance.init(&MarketConfig::default())?;
        let image = instance.image();
        let mut memory = vec![0u8; image.size_bytes as usize];
        image.write_into(&mut memory).unwrap();
        Ok(memory[..2_000].to_vec())
    };
    let original: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let expect = |dst: usize, src: usize, len: usize| {
        let mut memory = original.clone();
        memory.resize(2_000, 0);
        memory.copy_within(src..src + len, dst);
        memory
    };
    // Up, down, overlapping by less and more than a piece, and not at all.
    for (dst, src, len) in [(10, 0, 900), (0, 10, 900), (300, 0, 700), (0, 300, 700), (1_200, 0, 700), (5, 5, 100)] {
        let body = format!("(memory.copy (i32.const {dst}) (i32.const {src}) (i32.const {len}))");
        assert_eq!(run(&body).unwrap(), expect(dst, src, len), "copy {len} bytes from {src} to {dst}");
    }
    // Out of bounds: a trap, and the memory untouched by it (the module is one page).
    let fault = run("(memory.copy (i32.const 65000) (i32.const 0) (i32.const 1000))").unwrap_err();
    assert!(matches!(fault, ModuleFault::Trap { .. }), "{fault}");
    let fault = run("(memory.fill (i32.const 65000) (i32.const 9) (i32.const 1000))").unwrap_err();
    assert!(matches!(fault, ModuleFault::Trap { .. }), "{fault}");
    // A zero-length operation at the very end is in bounds, as in the spec.
    assert!(run("(memory.fill (i32.const 65536) (i32.const 9) (i32.const 0))").is_ok());
}

#[test]
fn validation_refuses_what_the_host_could_not_bound_or_copy() {
    let runtime = Runtime::new().unwrap();
    let with = |extra: &str, init: &str| {
        let text = format!(
            r#"(module
                (memory (export "memory") 1 16)
                (table 4 funcref)
                (elem declare func $nothing)
                (data $bytes "abc")
                (func $nothing)
                {extra}
                (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
                (func (export "exhost_module_kind") (result i32) i32.const 1)
                (func (export "exhost_state_version") (result i32) i32.const 1)
                (func (export "exhost_input") (param i32) (result i32) i32.const 1024)
                (func (export "exhost_output") (result i64) i64.const 0)
                (func (export "exhost_init") (param i32) (result i32) {init} i32.const 0)
                (func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_query") (param i32) (result i32) i32.const 0)
                (func (export "exhost_snapshot") (result i32) i32.const 0)
                (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
                (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_panic_message") (result i64) i64.const 0)
            )"#
        );
        runtime.compile(&wat::parse_str(text).unwrap()).map(|compiled| compiled.info)
    };
    assert!(with("", "").is_ok(), "the template itself is fine");
    let unsafe_reason = |result: Result<exhost_runtime::ModuleInfo, Rejection>| match result {
        Err(Rejection::Unsafe(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let start = unsafe_reason(with("(start $nothing)", ""));
    assert!(start.contains("start function"), "{start}");
    for (instruction, name) in [
        ("(table.set (i32.const 0) (ref.func $nothing))", "table.set"),
        ("(drop (table.grow (ref.null func) (i32.const 1)))", "table.grow"),
        ("(table.fill (i32.const 0) (ref.null func) (i32.const 1))", "table.fill"),
        ("(table.copy (i32.const 0) (i32.const 1) (i32.const 1))", "table.copy"),
        ("(elem.drop 0)", "elem.drop"),
        ("(memory.init $bytes (i32.const 0) (i32.const 0) (i32.const 1))", "memory.init"),
        ("(data.drop $bytes)", "data.drop"),
    ] {
        let reason = unsafe_reason(with("", instruction));
        assert!(reason.contains(name), "{name}: {reason}");
    }
    let reserved = unsafe_reason(with(r#"(global (export "exhost:global:0") i32 (i32.const 0))"#, ""));
    assert!(reserved.contains("reserved"), "{reserved}");
}

/// Found by the `module_bytes` fuzzer: the instrumenter appended its metered
/// fill and copy (which name memory 0) to modules without a memory, turning a
/// valid module into an invalid one, refused as "unknown memory 0" instead of
/// for what is wrong with it.
#[test]
fn a_module_without_memory_is_refused_for_having_none() {
    let runtime = Runtime::new().unwrap();
    let bytes = wat::parse_str(r#"(module (func (export "exhost_abi_version") (result i32) i32.const 1))"#).unwrap();
    let instrumented = exhost_runtime::instrument::instrument(&bytes).unwrap();
    wasmparser::Validator::new().validate_all(&instrumented.bytes).expect("instrumented output is valid");
    assert!(matches!(runtime.compile(&bytes), Err(Rejection::NoMemory)), "{:?}", runtime.compile(&bytes).err());
}

/// Floats are allowed. wasm's float operations are IEEE 754 with one
/// rounding mode, so they are deterministic except for the bits of a NaN,
/// which the host's configuration canonicalises: whatever the hardware,
/// 0/0 is the one canonical NaN. A module may compute with floats (formatting
/// a panic message does); money in floats is its author's mistake, not a
/// determinism hole.
#[test]
fn floats_are_allowed_and_their_nans_are_canonical() {
    let runtime = Runtime::new().unwrap();
    let text = format!(
        r#"(module
            (memory (export "memory") 1 16)
            (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "exhost_module_kind") (result i32) i32.const 1)
            (func (export "exhost_state_version") (result i32) i32.const 1)
            (func (export "exhost_input") (param i32) (result i32) i32.const 8192)
            (func (export "exhost_output") (result i64) i64.const 0)
            (func (export "exhost_init") (param i32) (result i32)
                (i32.store (i32.const 0) (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
                (i64.store (i32.const 8) (i64.reinterpret_f64 (f64.sqrt (f64.const -1))))
                (i32.store (i32.const 16) (i32.reinterpret_f32 (f32.neg (f32.div (f32.const 0) (f32.const 0)))))
                (f64.store (i32.const 24) (f64.mul (f64.const 0.1) (f64.const 3)))
                i32.const 0)
            (func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)
            (func (export "exhost_query") (param i32) (result i32) i32.const 0)
            (func (export "exhost_snapshot") (result i32) i32.const 0)
            (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
            (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
            (func (export "exhost_panic_message") (result i64) i64.const 0)
        )"#
    );
    let compiled = runtime.compile(&wat::parse_str(text).unwrap()).unwrap();
    let mut instance = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default()).unwrap();
    instance.init(&MarketConfig::default()).unwrap();
    let image = instance.image();
    let first_run = image.runs().next().expect("the image holds the stored values").1;
    let word = |at: usize, len: usize| first_run[at..at + len].to_vec();
    assert_eq!(word(0, 4), 0x7fc0_0000u32.to_le_bytes(), "0/0 is the canonical f32 NaN");
    assert_eq!(word(8, 8), 0x7ff8_0000_0000_0000u64.to_le_bytes(), "sqrt(-1) is the canonical f64 NaN");
    // Negation is a sign-bit operation, not arithmetic: wasm defines its result bit for bit.
    assert_eq!(word(16, 4), 0xffc0_0000u32.to_le_bytes());
    assert_eq!(word(24, 8), (0.1f64 * 3.0).to_bits().to_le_bytes(), "IEEE rounding, as natively");
}

struct Bytes(Vec<(ModuleHash, Vec<u8>)>);

impl exhost_runtime::ModuleSource for Bytes {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        self.0.iter().find(|(h, _)| h == hash).map(|(_, bytes)| bytes.clone())
    }
}

fn market(symbol: &str, module_hash: ModuleHash) -> Command {
    Command::CreateMarket(MarketSpec {
        symbol: symbol.into(),
        base: "B".into(),
        quote: "USD".into(),
        quote_decimals: 6,
        price_scale: Scale { decimals: 0, step_units: 1 },
        qty_scale: Scale { decimals: 0, step_units: 1 },
        module_hash,
        limits: limits(),
        config: MarketConfig::default(),
        risk: RiskParams::default(),
    })
}

fn place(market: u32, seq: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        market: MarketId(market),
        user_id: UserId(1),
        client_order_id: None,
        side: if seq.is_multiple_of(2) { Side::Buy } else { Side::Sell },
        order_type: OrderType::Limit,
        price_ticks: if seq.is_multiple_of(2) { 90 + seq % 5 } else { 110 + seq % 5 },
        qty_lots: 1 + seq % 3,
        time_in_force: TimeInForce::Gtc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    })
}

/// The journal of an exchange with a good market and one hostile market per
/// misbehaviour of `apply`, orders to all of them, a query-bombing market and
/// swaps refused halfway: to modules that cannot snapshot or restore, and away
/// from one that cannot snapshot.
fn hostile_exchange() -> (Arc<WasmLoader>, Vec<Command>) {
    let good = exhost_embedded::PRICETIME_WASM.to_vec();
    let mut modules = vec![(ModuleHash::of(&good), good.clone())];
    let mut commands = vec![
        Command::CreateUser { api_key: "k".into(), api_secret: "s".into() },
        market("GOOD", ModuleHash::of(&good)),
    ];
    for how in MISBEHAVIOURS {
        let bytes = module(Some((Call::Apply, how)));
        modules.push((ModuleHash::of(&bytes), bytes.clone()));
        commands.push(market(&format!("{how:?}"), ModuleHash::of(&bytes)));
    }
    // A market whose module works but cannot snapshot: it trades, and cannot be swapped away from.
    let snapshot_traps = module(Some((Call::Snapshot, Misbehaviour::Trap)));
    modules.push((ModuleHash::of(&snapshot_traps), snapshot_traps.clone()));
    commands.push(market("SNAPSHOT-TRAPS", ModuleHash::of(&snapshot_traps)));
    // A market whose init loops is refused as a whole.
    let init_loops = module(Some((Call::Init, Misbehaviour::Loop)));
    modules.push((ModuleHash::of(&init_loops), init_loops.clone()));
    commands.push(market("INIT-LOOPS", ModuleHash::of(&init_loops)));
    let markets = 2 + MISBEHAVIOURS.len() as u32;
    let orders = |commands: &mut Vec<Command>, rounds: std::ops::Range<u64>| {
        for round in rounds {
            for market in 0..markets {
                commands.push(place(market, round * 10 + market as u64));
            }
        }
    };
    orders(&mut commands, 0..15);
    // Swaps refused halfway, with orders resting: to modules that cannot
    // take the state over (the reference book's state version is not
    // theirs, so they migrate it), or cannot snapshot what they took over,
    // and away from the module that cannot snapshot. Each live book must go
    // on as it was.
    for call in [Call::Snapshot, Call::Migrate] {
        let bytes = module(Some((call, Misbehaviour::Trap)));
        modules.push((ModuleHash::of(&bytes), bytes.clone()));
        commands.push(Command::ActivateModule {
            target: ModuleTarget::Market(MarketId(0)),
            module_hash: ModuleHash::of(&bytes),
        });
    }
    commands.push(Command::ActivateModule {
        target: ModuleTarget::Market(MarketId(markets - 1)),
        module_hash: ModuleHash::of(&good),
    });
    orders(&mut commands, 15..30);
    commands.push(Command::MassCancel { market: None, user_id: UserId(1) });
    let loader = Arc::new(WasmLoader::new(Runtime::new().unwrap(), Arc::new(Bytes(modules))));
    (loader, commands)
}

fn run(
    loader: Arc<WasmLoader>,
    commands: &[Command],
    snapshot_at: Option<usize>,
) -> (Vec<Vec<EventBody>>, StateDigest) {
    let mut engine = Engine::new(loader.clone());
    let mut events = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let seq = index as u64 + 1;
        events.push(engine.apply(seq, seq * 1_000, command).unwrap_or_else(|error| panic!("seq {seq}: {error}")));
        if snapshot_at == Some(index) {
            // Restart from a stored snapshot midway: it must change nothing that follows.
            let snapshot = EngineSnapshot::decode(&engine.snapshot().unwrap().encode()).unwrap();
            engine = Engine::restore(loader.clone(), snapshot).unwrap();
        }
    }
    let digest = EngineSnapshot::digest_of(&engine.snapshot().unwrap().encode());
    (events, digest)
}

#[test]
fn hostile_markets_are_rejected_deterministically_and_the_good_one_trades_on() {
    let (loader, commands) = hostile_exchange();
    let (events, digest) = run(loader.clone(), &commands, None);
    let rejections = |reason: Reason| {
        events
            .iter()
            .flatten()
            .filter(|event| {
                matches!(event, EventBody::Matching { event: MatchingEvent::Order(update), .. } if update.reason == Some(reason))
            })
            .count()
    };
    // Every order to a hostile market is refused with its own reason.
    assert_eq!(rejections(Reason::ModuleOutOfFuel), 60, "looping and fill-bombing markets");
    assert_eq!(rejections(Reason::ModuleMemoryLimit), 30, "the memory-bombing market");
    assert_eq!(rejections(Reason::ModuleTrap), 60, "the recursing and trapping markets");
    assert_eq!(rejections(Reason::ModuleProtocol), 30, "the market answering outside its memory");
    // The good market took every order and matched nothing (its prices do not cross).
    let good_rested = events
        .iter()
        .flatten()
        .filter(|event| {
            matches!(event, EventBody::Matching { market: MarketId(0), event: MatchingEvent::Order(update) }
                if update.status == OrderStatus::New)
        })
        .count();
    assert_eq!(good_rested, 30);
    // The market whose init loops was never created; the swaps were refused, the good module stayed.
    let created = events.iter().flatten().filter(|event| matches!(event, EventBody::MarketCreated { .. })).count();
    assert_eq!(created, 2 + MISBEHAVIOURS.len());
    let refused: Vec<&String> = events
        .iter()
        .flatten()
        .filter_map(|event| match event {
            EventBody::ModuleActivationRefused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|reason| reason.contains("trapped")), "{refused:?}");
    assert!(refused[2].contains("could not hand over its state"), "{refused:?}");
    // The mass cancel cancelled the good market's orders whatever the others
    // did, the 15 resting from before the refused swaps too: each refusal put
    // the live book back as it was.
    let mass_cancelled = events.last().unwrap().iter().filter(|event| {
        matches!(event, EventBody::Matching { market: MarketId(0), event: MatchingEvent::Order(update) }
            if update.status == OrderStatus::Cancelled)
    });
    assert_eq!(mass_cancelled.count(), 30);

    // Replayed from the start, and from a snapshot taken midway: the same events, the same state.
    let (again, again_digest) = run(loader.clone(), &commands, None);
    assert_eq!((&again, again_digest), (&events, digest));
    let (resumed, resumed_digest) = run(loader, &commands, Some(commands.len() / 2));
    assert_eq!((&resumed, resumed_digest), (&events, digest));
}
