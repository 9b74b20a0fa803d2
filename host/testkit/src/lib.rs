//! # exhost test kit
//!
//! For plugin authors: run a matching module natively (the rlib of your crate)
//! and as wasm (the `.wasm` you built) on the same commands, and check they
//! emit the same events after every command and end with the same snapshot
//! bytes. A difference means the wasm build does not do what your native tests
//! say, or the rules depend on something they must not (the platform, a hash
//! seed, memory addresses). It also times both, for the wasm/native ratio.
//!
//! Commands come from a [`Fixture`]: made up ([`Fixture::random`]) or recorded
//! from a host's journal with `exhost module fixture --market S --out f.json`.
//!
//! ```ignore
//! #[test]
//! fn wasm_matches_native() {
//!     let wasm = std::fs::read("target/wasm32-unknown-unknown/release/my_book.wasm").unwrap();
//!     let fixture = exhost_testkit::Fixture::random(MarketConfig::default(), 5_000, 7);
//!     let report = exhost_testkit::compare_matching::<my_book::Book>(&wasm, &fixture).unwrap();
//!     println!("{report}");
//! }
//! ```

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use exhost_engine::{Instance, ModuleLimits, Native};
use exhost_guest_sdk::abi::ApplyInput;
use exhost_guest_sdk::{
    CommandContext, MarketConfig, MatchingAbi, MatchingCommand, MatchingEvent, MatchingModule, OrderId, OrderType,
    PlaceOrder, SelfTradePrevention, Side, TimeInForce, UserId,
};
use exhost_runtime::{Runtime, WasmModule};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Commands for one market's module, with the config it starts from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fixture {
    #[serde(default)]
    pub symbol: Option<String>,
    pub config: MarketConfig,
    pub commands: Vec<ApplyInput<MatchingCommand>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    #[error("reading the fixture {path}: {message}")]
    Fixture { path: String, message: String },
    #[error("the wasm module was refused: {0}")]
    Rejected(String),
    #[error("the module failed: {0}")]
    Module(String),
    #[error(
        "command {index} (seq {seq}): native and wasm emitted different events\n native: {native:?}\n   wasm: {wasm:?}"
    )]
    Events { index: usize, seq: u64, native: Vec<MatchingEvent>, wasm: Vec<MatchingEvent> },
    #[error("after {commands} commands the snapshots differ ({native_bytes} native bytes, {wasm_bytes} wasm bytes)")]
    Snapshot { commands: usize, native_bytes: usize, wasm_bytes: usize },
}

/// What a comparison found.
#[derive(Clone, Debug)]
pub struct Report {
    pub commands: usize,
    pub events: usize,
    pub native: Duration,
    pub wasm: Duration,
    /// SHA-256 of the final snapshot (the same for both).
    pub digest: String,
}

impl Report {
    /// Wasm speed over native speed (1.0: as fast).
    pub fn ratio(&self) -> f64 {
        self.native.as_secs_f64() / self.wasm.as_secs_f64().max(1e-12)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} commands, {} events, identical; native {:.0} commands/s, wasm {:.0} commands/s (wasm/native {:.2}); digest {}",
            self.commands,
            self.events,
            self.commands as f64 / self.native.as_secs_f64().max(1e-12),
            self.commands as f64 / self.wasm.as_secs_f64().max(1e-12),
            self.ratio(),
            self.digest
        )
    }
}

impl Fixture {
    pub fn load(path: &Path) -> Result<Fixture, KitError> {
        let error = |message: String| KitError::Fixture { path: path.display().to_string(), message };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, serde_json::to_vec(self).map_err(std::io::Error::other)?)
    }

    /// A reproducible random flow around price 10,000 ticks: limit orders of
    /// every time in force, market orders, cancels and amends of earlier
    /// orders, mass cancels, from eight users.
    pub fn random(config: MarketConfig, count: usize, seed: u64) -> Fixture {
        let mut rng = exhost_seeded::Rng::new(seed);
        let mut next = move || rng.next_u64();
        let mut commands = Vec::with_capacity(count);
        for i in 0..count {
            let seq = i as u64 + 1;
            let r = next();
            let user_id = UserId(1 + r % 8);
            let earlier = OrderId(seq.saturating_sub(1 + (r >> 8) % 64).max(1));
            let command = match (r >> 16) % 100 {
                0..=69 => MatchingCommand::Place(PlaceOrder {
                    order_id: OrderId(seq),
                    user_id,
                    side: if (r >> 24) % 2 == 0 { Side::Buy } else { Side::Sell },
                    order_type: if (r >> 28) % 10 == 0 { OrderType::Market } else { OrderType::Limit },
                    price_ticks: 9_980 + (r >> 32) % 40,
                    qty_lots: 1 + (r >> 40) % 50,
                    time_in_force: [
                        TimeInForce::Gtc,
                        TimeInForce::Gtc,
                        TimeInForce::Ioc,
                        TimeInForce::Fok,
                        TimeInForce::PostOnly,
                    ][((r >> 44) % 5) as usize],
                    self_trade_prevention: SelfTradePrevention::CancelTaker,
                }),
                70..=84 => MatchingCommand::Cancel { order_id: earlier, user_id },
                85..=97 => MatchingCommand::Amend {
                    order_id: earlier,
                    user_id,
                    price_ticks: Some(9_980 + (r >> 32) % 40),
                    qty_lots: Some(1 + (r >> 40) % 50),
                },
                _ => MatchingCommand::MassCancel { user_id },
            };
            commands.push(ApplyInput { ctx: CommandContext { seq, ts_ns: seq * 1_000 }, command });
        }
        Fixture { symbol: None, config, commands }
    }
}

/// Run the fixture through `M` natively and through `wasm`, comparing the
/// events of every command and the final snapshot.
pub fn compare_matching<M: MatchingModule + Send + 'static>(
    wasm: &[u8],
    fixture: &Fixture,
) -> Result<Report, KitError> {
    let runtime = Runtime::new().map_err(|e| KitError::Module(e.to_string()))?;
    let compiled = runtime.compile(wasm).map_err(|rejection| KitError::Rejected(rejection.to_string()))?;
    let mut wasm_module = WasmModule::<MatchingAbi>::instantiate(&runtime, &compiled, &ModuleLimits::default())
        .map_err(|fault| KitError::Module(fault.to_string()))?;
    wasm_module.init(&fixture.config).map_err(|fault| KitError::Module(fault.to_string()))?;
    let mut native = Native::<MatchingAbi, M>::new(M::init(&fixture.config).map_err(|e| KitError::Module(e.message))?);

    let (mut native_out, mut wasm_out) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for input in &fixture.commands {
        let mut events = Vec::new();
        native.apply(&input.ctx, &input.command, &mut events).map_err(|f| KitError::Module(f.to_string()))?;
        native_out.push(events);
    }
    let native_time = started.elapsed();
    let started = Instant::now();
    for input in &fixture.commands {
        let mut events = Vec::new();
        wasm_module.apply(&input.ctx, &input.command, &mut events).map_err(|f| KitError::Module(f.to_string()))?;
        wasm_out.push(events);
    }
    let wasm_time = started.elapsed();
    for (index, (n, w)) in native_out.iter().zip(&wasm_out).enumerate() {
        if n != w {
            return Err(KitError::Events {
                index,
                seq: fixture.commands[index].ctx.seq,
                native: n.clone(),
                wasm: w.clone(),
            });
        }
    }
    let (mut native_bytes, mut wasm_bytes) = (Vec::new(), Vec::new());
    Instance::<MatchingAbi>::snapshot(&mut native, &mut native_bytes).map_err(|f| KitError::Module(f.to_string()))?;
    wasm_module.snapshot(&mut wasm_bytes).map_err(|f| KitError::Module(f.to_string()))?;
    if native_bytes != wasm_bytes {
        return Err(KitError::Snapshot {
            commands: fixture.commands.len(),
            native_bytes: native_bytes.len(),
            wasm_bytes: wasm_bytes.len(),
        });
    }
    Ok(Report {
        commands: fixture.commands.len(),
        events: native_out.iter().map(Vec::len).sum(),
        native: native_time,
        wasm: wasm_time,
        digest: hex::encode(Sha256::digest(&native_bytes)),
    })
}
