//! The reference matching module run as wasm: it must behave exactly like the
//! same code linked natively, and faults must be typed and contained.

use std::sync::Arc;

use exhost_engine::*;
use exhost_guest_sdk::*;
use exhost_pricetime::PriceTimeBook;
use exhost_runtime::{Rejection, Runtime, WasmMatching};

fn flow(count: u64) -> Vec<(CommandContext, MatchingCommand)> {
    let mut rng = exhost_seeded::Rng::from_state(0x9E37_79B9_7F4A_7C15);
    (1..=count)
        .map(|seq| {
            let r = rng.next_u64();
            let user_id = UserId(1 + r % 5);
            let command = match (r >> 8) % 10 {
                0..=6 => MatchingCommand::Place(PlaceOrder {
                    order_id: OrderId(seq),
                    user_id,
                    side: if (r >> 16).is_multiple_of(2) { Side::Buy } else { Side::Sell },
                    order_type: if (r >> 20).is_multiple_of(12) { OrderType::Market } else { OrderType::Limit },
                    price_ticks: 1_000 + (r >> 24) % 40,
                    qty_lots: 1 + (r >> 32) % 20,
                    time_in_force: TimeInForce::ALL[((r >> 40) % 4) as usize],
                    self_trade_prevention: SelfTradePrevention::ALL[((r >> 44) % 3) as usize],
                }),
                7..=8 => MatchingCommand::Cancel { order_id: OrderId(seq.saturating_sub(1 + (r >> 24) % 50)), user_id },
                _ => MatchingCommand::Amend {
                    order_id: OrderId(seq.saturating_sub(1 + (r >> 24) % 50)),
                    user_id,
                    price_ticks: Some(1_000 + (r >> 32) % 40),
                    qty_lots: Some(1 + (r >> 40) % 20),
                },
            };
            (CommandContext { seq, ts_ns: seq }, command)
        })
        .collect()
}

fn wasm_book() -> WasmMatching {
    let runtime = Runtime::new().unwrap();
    let compiled = runtime.compile(exhost_embedded::PRICETIME_WASM).unwrap();
    assert_eq!(compiled.info.kind, ModuleKind::Matching);
    let mut instance = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default()).unwrap();
    instance.init(&MarketConfig::default()).unwrap();
    instance
}

#[test]
fn wasm_and_native_builds_emit_the_same_events_and_snapshots() {
    let commands = flow(5_000);
    let mut wasm = wasm_book();
    let mut native = NativeMatching::new(PriceTimeBook::init(&MarketConfig::default()).unwrap());
    // One at a time on one side, batched on the other: batching must not change anything.
    let mut native_events = Vec::new();
    for (ctx, command) in &commands {
        let mut events = Vec::new();
        native.apply(ctx, command, &mut events).unwrap();
        native_events.push(events);
    }
    let mut wasm_events = Vec::new();
    for chunk in commands.chunks(333) {
        wasm.apply_batch(chunk, &mut wasm_events).unwrap();
    }
    assert_eq!(wasm_events, native_events);
    assert!(wasm_events.iter().flatten().any(|e| matches!(e, MatchingEvent::Trade(_))), "the flow trades");

    let (mut a, mut b) = (Vec::new(), Vec::new());
    wasm.snapshot(&mut a).unwrap();
    native.snapshot(&mut b).unwrap();
    assert_eq!(a, b);
    let depth = MatchingQuery::Depth { levels_max: 10 };
    assert_eq!(wasm.query(&depth).unwrap(), native.query(&depth).unwrap());
}

#[test]
fn restore_from_a_native_snapshot_continues_identically() {
    let commands = flow(2_000);
    let mut native = NativeMatching::new(PriceTimeBook::init(&MarketConfig::default()).unwrap());
    for (ctx, command) in &commands[..1_000] {
        native.apply(ctx, command, &mut Vec::new()).unwrap();
    }
    let mut bytes = Vec::new();
    native.snapshot(&mut bytes).unwrap();
    let mut wasm = wasm_book();
    wasm.restore(exhost_pricetime::STATE_VERSION, &bytes).unwrap();
    for (ctx, command) in &commands[1_000..] {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        native.apply(ctx, command, &mut x).unwrap();
        wasm.apply(ctx, command, &mut y).unwrap();
        assert_eq!(x, y);
    }
    // A corrupt snapshot is refused with the module's own message.
    let error = wasm.restore(exhost_pricetime::STATE_VERSION, &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(&error, ModuleFault::Refused { message } if message.contains("snapshot")), "{error}");
}

/// A complete-ABI module whose `apply` body is given.
fn module_with_apply(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1 4)
            (func (export "exhost_abi_version") (result i32) i32.const {ABI_VERSION})
            (func (export "exhost_module_kind") (result i32) i32.const 1)
            (func (export "exhost_state_version") (result i32) i32.const 1)
            (func (export "exhost_input") (param i32) (result i32) i32.const 1024)
            (func (export "exhost_output") (result i64) i64.const 0)
            (func (export "exhost_init") (param i32) (result i32) i32.const 0)
            (func (export "exhost_apply") (param i32 i32) (result i32) {body})
            (func (export "exhost_query") (param i32) (result i32) i32.const 0)
            (func (export "exhost_snapshot") (result i32) i32.const 0)
            (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
            (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
            (func (export "exhost_panic_message") (result i64) i64.const 0)
        )"#
    ))
    .unwrap()
}

fn instance_of(bytes: &[u8], limits: ModuleLimits) -> WasmMatching {
    let runtime = Runtime::new().unwrap();
    let compiled = runtime.compile(bytes).unwrap();
    WasmMatching::instantiate(&runtime, &compiled, &limits).unwrap()
}

#[test]
fn faults_are_typed_and_deterministic() {
    let (ctx, command) = flow(1).remove(0);
    let limits = ModuleLimits { fuel_per_command: 100_000, memory_bytes_max: 1 << 20 };

    let mut looping = instance_of(&module_with_apply("(loop br 0) i32.const 0"), limits);
    let fault = looping.apply(&ctx, &command, &mut Vec::new()).unwrap_err();
    assert_eq!(fault, ModuleFault::OutOfFuel { call: ModuleCall::Apply, fuel: 100_000 });

    let mut trapping = instance_of(&module_with_apply("unreachable"), limits);
    let fault = trapping.apply(&ctx, &command, &mut Vec::new()).unwrap_err();
    assert!(matches!(&fault, ModuleFault::Trap { message } if message.contains("unreachable")), "{fault}");

    // Growing past the limit fails inside the module (memory.grow gives -1),
    // which a module reports by trapping; here the module checks and traps
    // itself, and the host, having refused the growth, names the cause.
    let grow = "i32.const 10 memory.grow i32.const -1 i32.eq (if (then unreachable)) i32.const 0";
    let mut growing = instance_of(&module_with_apply(grow), limits);
    let fault = growing.apply(&ctx, &command, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(fault, ModuleFault::MemoryLimit { call: ModuleCall::Apply, requested_bytes, .. } if requested_bytes == 11 * 65_536),
        "{fault}"
    );

    // An ABI breach (a status of 0 but no output frame) is a protocol fault.
    let mut silent = instance_of(&module_with_apply("i32.const 0"), limits);
    assert!(matches!(silent.apply(&ctx, &command, &mut Vec::new()), Err(ModuleFault::Protocol { .. })));
}

#[test]
fn the_engine_rejects_a_looping_command_and_keeps_going() {
    struct Bytes(Vec<u8>);
    impl exhost_runtime::ModuleSource for Bytes {
        fn module_bytes(&self, _: &ModuleHash) -> Option<Vec<u8>> {
            Some(self.0.clone())
        }
    }
    let loader = Arc::new(exhost_runtime::WasmLoader::new(
        Runtime::new().unwrap(),
        Arc::new(Bytes(module_with_apply("(loop br 0) i32.const 0"))),
    ));
    let mut engine = Engine::new(loader);
    let spec = MarketSpec {
        symbol: "LOOP".into(),
        base: "B".into(),
        quote: "USD".into(),
        quote_decimals: 6,
        price_scale: Scale { decimals: 0, step_units: 1 },
        qty_scale: Scale { decimals: 0, step_units: 1 },
        module_hash: ModuleHash([1; 32]),
        limits: ModuleLimits { fuel_per_command: 10_000, memory_bytes_max: 1 << 20 },
        config: MarketConfig::default(),
        risk: RiskParams::default(),
    };
    engine.apply(1, 1, &Command::CreateMarket(spec)).unwrap();
    engine.apply(2, 2, &Command::CreateUser { api_key: "k".into(), api_secret: "s".into() }).unwrap();
    let cancel = Command::CancelOrder { market: MarketId(0), user_id: UserId(1), order_id: OrderId(1) };
    for seq in 3..6 {
        let events = engine.apply(seq, seq, &cancel).unwrap();
        assert_eq!(
            events,
            vec![EventBody::Matching {
                market: MarketId(0),
                event: MatchingEvent::Rejected {
                    order_id: OrderId(1),
                    user_id: UserId(1),
                    reason: Reason::ModuleOutOfFuel
                },
            }]
        );
    }
    // The rejection carries the reason code only; the host gets the details to log.
    let (faults, unreported) = engine.take_faults();
    assert_eq!(unreported, 0);
    assert_eq!(faults.iter().map(|report| report.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(
        faults.iter().all(|report| report.target == exhost_engine::ModuleTarget::Market(exhost_engine::MarketId(0))),
        "{faults:?}"
    );
    assert!(
        faults.iter().all(|report| matches!(report.fault, ModuleFault::OutOfFuel { fuel: 10_000, .. })),
        "{faults:?}"
    );
    assert!(engine.take_faults().0.is_empty(), "taking the reports empties them");
}

#[test]
fn the_embedded_module_passes_validation_and_garbage_does_not() {
    let runtime = Runtime::new().unwrap();
    let info = runtime.compile(exhost_embedded::PRICETIME_WASM).unwrap().info;
    assert_eq!(info.state_version, exhost_pricetime::STATE_VERSION);
    assert_eq!(info.memory_bytes_max, 1 << 30);
    assert!(matches!(runtime.compile(&[0, 97, 115, 109, 1, 0]), Err(Rejection::NotWasm(_))));
}

/// The story: the book kept its resting orders in one `Vec`, and the order
/// that made it grow paid, in fuel, for the whole book (1.8 million units at
/// 32,768 orders, doubling with each growth). Past about 2 million resting
/// orders that was more than a command may use, and from then on every order
/// needing a new slot was rejected as `module_out_of_fuel`. A command's cost
/// must not grow with the book: here no order of a 140,000-order book may use
/// more than a million units (the old slab needed 3.7 million at 65,536).
#[test]
fn an_order_costs_the_same_fuel_in_a_small_and_a_large_book() {
    let runtime = Runtime::new().unwrap();
    let compiled = runtime.compile(exhost_embedded::PRICETIME_WASM).unwrap();
    let limits = ModuleLimits { fuel_per_command: 1_000_000, ..ModuleLimits::default() };
    let mut book = WasmMatching::instantiate(&runtime, &compiled, &limits).unwrap();
    book.init(&MarketConfig::default()).unwrap();
    let orders: Vec<(CommandContext, MatchingCommand)> = (1..=140_000u64)
        .map(|seq| {
            let side = if seq % 2 == 0 { Side::Buy } else { Side::Sell };
            let price_ticks = if side == Side::Buy { 1_000 - seq % 500 } else { 2_000 + seq % 500 };
            let order = PlaceOrder {
                order_id: OrderId(seq),
                user_id: UserId(1 + seq % 7),
                side,
                order_type: OrderType::Limit,
                price_ticks,
                qty_lots: 1,
                time_in_force: TimeInForce::Gtc,
                self_trade_prevention: SelfTradePrevention::CancelTaker,
            };
            (CommandContext { seq, ts_ns: seq }, MatchingCommand::Place(order))
        })
        .collect();
    for chunk in orders.chunks(4_096) {
        let mut outputs = Vec::new();
        if let Err((at, fault)) = book.apply_batch(chunk, &mut outputs) {
            panic!("order {} failed: {fault}", chunk[at].0.seq);
        }
        for events in &outputs {
            assert!(
                events
                    .iter()
                    .any(|event| matches!(event, MatchingEvent::Order(update) if update.status == OrderStatus::New)),
                "every order rests: {events:?}"
            );
        }
    }
    let MatchingQueryResult::Depth { bids, asks } = book.query(&MatchingQuery::Depth { levels_max: u32::MAX }).unwrap()
    else {
        panic!("depth answers depth")
    };
    let resting: u64 = bids.iter().chain(&asks).map(|level| level.qty_lots).sum();
    assert_eq!(resting, 140_000);
}

/// The fuel question, raised when the performance work closed: a command's
/// fuel depends on the memory layout, and a book the module restores in bulk
/// from its own snapshot is laid out differently from one built order by
/// order. A command within a hair of its limit could then succeed live and
/// fail on a replay from a snapshot. So stored snapshots and rollbacks hold
/// images of the instance, which give the layout back exactly: every later
/// command costs the same fuel, unit for unit. The negative control shows the
/// difference the module's own restore makes is real.
#[test]
fn fuel_is_the_same_after_resuming_an_image_and_differs_after_a_restore() {
    let runtime = Runtime::new().unwrap();
    let compiled = runtime.compile(exhost_embedded::PRICETIME_WASM).unwrap();
    // A book over thousands of price levels, so its ordered maps have many nodes:
    // built order by order they split half full, restored in bulk they are packed.
    let commands: Vec<(CommandContext, MatchingCommand)> = (1..=22_000u64)
        .map(|seq| {
            let mix = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let side = if seq % 2 == 0 { Side::Buy } else { Side::Sell };
            let price_ticks = if side == Side::Buy { 100_000 - mix % 5_000 } else { 100_001 + mix % 5_000 };
            let order = PlaceOrder {
                order_id: OrderId(seq),
                user_id: UserId(1 + seq % 7),
                side,
                order_type: OrderType::Limit,
                price_ticks,
                qty_lots: 1 + seq % 5,
                time_in_force: TimeInForce::Gtc,
                self_trade_prevention: SelfTradePrevention::CancelTaker,
            };
            (CommandContext { seq, ts_ns: seq }, MatchingCommand::Place(order))
        })
        .collect();
    let (built, next) = commands.split_at(20_000);
    let mut live = wasm_book();
    for (ctx, command) in built {
        live.apply(ctx, command, &mut Vec::new()).unwrap();
    }
    let image = live.image();
    let mut resumed = WasmMatching::resume(&runtime, &compiled, &ModuleLimits::default(), &image).unwrap();
    let mut bytes = Vec::new();
    live.snapshot(&mut bytes).unwrap();
    // The snapshot call itself ran in `live`: image again so the resumed twin matches it.
    let mut resumed_after = WasmMatching::resume(&runtime, &compiled, &ModuleLimits::default(), &live.image()).unwrap();
    let mut restored = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default()).unwrap();
    restored.restore(exhost_pricetime::STATE_VERSION, &bytes).unwrap();
    let mut layout_differs = 0;
    for (ctx, command) in next {
        let mut outputs: Vec<Vec<MatchingEvent>> = vec![Vec::new(); 3];
        live.apply(ctx, command, &mut outputs[0]).unwrap();
        resumed_after.apply(ctx, command, &mut outputs[1]).unwrap();
        restored.apply(ctx, command, &mut outputs[2]).unwrap();
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(outputs[0], outputs[2], "the module's restore is semantically exact");
        assert_eq!(
            live.last_fuel_used(),
            resumed_after.last_fuel_used(),
            "seq {}: fuel after resuming an image",
            ctx.seq
        );
        layout_differs += usize::from(live.last_fuel_used() != restored.last_fuel_used());
    }
    assert!(layout_differs > 0, "the negative control: the restored layout never cost other fuel");
    // The image taken before the snapshot call resumes the state before it, exactly.
    let (ctx, command) = &next[0];
    resumed.apply(ctx, command, &mut Vec::new()).unwrap();
    assert!(resumed.last_fuel_used() > 0);
}
