//! A live module instance of either kind: one wasmtime store, the ABI's
//! functions looked up once as typed handles, and the memory protocol of
//! `exhost_guest_sdk::abi` on the host side, generic over the kind's [`Abi`].
//!
//! Every call into the module runs under its [`CallBudget`]: fuel, set afresh
//! before the call, and a bound on how far the call may grow the memory
//! (enforced by the store's resource limiter, which makes `memory.grow` return
//! -1 past it). Both are functions of the journaled [`ModuleLimits`] and of the
//! instance's own state, so a bound reached is the same outcome live and on
//! every replay.
//!
//! Commands are applied one call each, input written per command: the calls
//! an instance receives, and so every byte of its memory, depend only on the
//! commands, never on how the host happened to batch them. That is what makes
//! an image of the instance ([`WasmModule::image`]) the same live and on replay.

use std::marker::PhantomData;

use exhost_engine::{Instance, InstanceImage, MemoryImage, ModuleCall, ModuleFault, ModuleLimits};
use exhost_guest_sdk::abi::{ApplyInput, exports, status, unpack_region};
use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi};
use wasmtime::{Global, Memory, Store, Trap, TypedFunc, Val, ValType};

use crate::engine::Runtime;
use crate::limiter::StoreState;
use crate::validate::{CompiledModule, Rejection};

/// Fuel and memory growth one call into a module may use.
///
/// These factors are part of the determinism contract, like the wasmtime pin:
/// changing one changes which calls reach their bound, so it changes the
/// outcome of replaying an old journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallBudget {
    pub fuel: u64,
    pub memory_growth_bytes: u64,
}

/// `init`: a fresh state from a config, a small multiple of one command.
pub const INIT_FUEL_PER_COMMAND_FUEL: u64 = 10;
/// `query`: answered in a copy of the instance, off the engine thread; a full
/// depth of a large book is linear in the book.
pub const QUERY_FUEL_PER_COMMAND_FUEL: u64 = 40;
/// `snapshot`, `restore`, `migrate`: linear in the state. A snapshot of a
/// million resting orders takes about 300M fuel; 200 × the default 50M per
/// command is 10G, over thirty times that.
pub const STATE_FUEL_PER_COMMAND_FUEL: u64 = 200;
/// `restore`, `migrate`: fuel per byte of the snapshot, besides the state
/// budget, since decoding is linear in it and a state may be large by right
/// (a position state of a million holders is 70 MB and took 13.6G fuel, about
/// 200 per byte, to restore; measured by `exhost-bench holders`). The bytes are the same
/// live and on replay, so the bound is deterministic; a module that loops
/// still stops, after at most this much per byte it was given.
pub const RESTORE_FUEL_PER_INPUT_BYTE: u64 = 1_000;
/// Memory one command may grow by. A command that needs more is a command
/// whose cost grows with the state, which modules must not have (see
/// `guest-sdk/README.md`); capping it keeps one command from stalling every
/// market while it touches a gigabyte.
pub const APPLY_MEMORY_GROWTH_BYTES_MAX: u64 = 64 << 20;

impl CallBudget {
    /// The budget of one call of this kind; `input_bytes` is what the host
    /// hands the call (the input buffer's length), for the buffer call and
    /// for a restore or a migration.
    pub fn of(call: ModuleCall, limits: &ModuleLimits, input_bytes: u64) -> CallBudget {
        let per_command = limits.fuel_per_command;
        let whole_memory = limits.memory_bytes_max;
        match call {
            ModuleCall::Apply => CallBudget { fuel: per_command, memory_growth_bytes: APPLY_MEMORY_GROWTH_BYTES_MAX },
            ModuleCall::Init => CallBudget {
                fuel: per_command.saturating_mul(INIT_FUEL_PER_COMMAND_FUEL),
                memory_growth_bytes: APPLY_MEMORY_GROWTH_BYTES_MAX,
            },
            ModuleCall::Query => CallBudget {
                fuel: per_command.saturating_mul(QUERY_FUEL_PER_COMMAND_FUEL),
                memory_growth_bytes: whole_memory,
            },
            ModuleCall::Snapshot => CallBudget {
                fuel: per_command.saturating_mul(STATE_FUEL_PER_COMMAND_FUEL),
                memory_growth_bytes: whole_memory,
            },
            ModuleCall::Restore | ModuleCall::Migrate => CallBudget {
                fuel: per_command
                    .saturating_mul(STATE_FUEL_PER_COMMAND_FUEL)
                    .saturating_add(input_bytes.saturating_mul(RESTORE_FUEL_PER_INPUT_BYTE)),
                memory_growth_bytes: whole_memory,
            },
            // Making room for the input zeroes it, at about a unit of fuel per ten bytes.
            ModuleCall::Buffer => {
                CallBudget { fuel: per_command.saturating_add(input_bytes), memory_growth_bytes: whole_memory }
            }
        }
    }
}

struct Exports {
    memory: Memory,
    input: TypedFunc<u32, u32>,
    output: TypedFunc<(), u64>,
    init: TypedFunc<u32, u32>,
    apply: TypedFunc<(u32, u32), u32>,
    query: TypedFunc<u32, u32>,
    snapshot: TypedFunc<(), u32>,
    restore: TypedFunc<u32, u32>,
    migrate: TypedFunc<(u32, u32), u32>,
    panic_message: TypedFunc<(), u64>,
    /// The mutable globals, in the order of `ModuleInfo::mutable_globals`.
    globals: Vec<Global>,
}

/// A wasm module instance of the kind `A`.
pub struct WasmModule<A: Abi> {
    store: Store<StoreState>,
    exports: Exports,
    limits: ModuleLimits,
    state_version: u32,
    /// The SDK revision it was built with (`exhost_abi_revision`).
    abi_revision: u32,
    /// Reused encoding buffer: no allocation per command on the hot path.
    encoded: Vec<u8>,
    /// Fuel the last call other than the buffer calls used (for tests and benchmarks).
    last_fuel_used: u64,
    /// Fuel every `apply` call so far used, together (shadow runs compare it).
    apply_fuel_used: u64,
    _abi: PhantomData<fn() -> A>,
}

/// A wasm matching module instance.
pub type WasmMatching = WasmModule<MatchingAbi>;

const WASM_PAGE_BYTES: u64 = 65_536;
/// The most of a guest's panic message kept for the operator's log.
const PANIC_MESSAGE_BYTES_MAX: usize = 4_096;

impl<A: Abi> WasmModule<A> {
    /// A new instance with empty state (no `init` or `restore` yet).
    /// Instantiating runs no module code: validation refuses start functions.
    pub fn instantiate(runtime: &Runtime, module: &CompiledModule, limits: &ModuleLimits) -> Result<Self, ModuleFault> {
        if module.info.kind != A::KIND {
            return Err(ModuleFault::Protocol {
                message: format!(
                    "a {} module cannot serve as a {} module",
                    module.info.kind.as_str(),
                    A::KIND.as_str()
                ),
            });
        }
        let memory_bytes_max = limits.memory_bytes_max.min(module.info.memory_bytes_max);
        let mut store = Store::new(runtime.engine(), StoreState::new(memory_bytes_max));
        store.limiter(|state| state);
        store.set_fuel(0).map_err(protocol)?;
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|error| ModuleFault::Trap { message: format!("instantiation failed: {error:#}") })?;
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or_else(|| ModuleFault::Protocol { message: "no memory export".into() })?;
        macro_rules! func {
            ($name:expr) => {
                instance.get_typed_func(&mut store, $name).map_err(protocol)?
            };
        }
        let mut globals = Vec::with_capacity(module.info.mutable_globals.len());
        for name in &module.info.mutable_globals {
            globals.push(
                instance
                    .get_global(&mut store, name)
                    .ok_or_else(|| ModuleFault::Protocol { message: format!("no global export {name}") })?,
            );
        }
        let exports = Exports {
            memory,
            input: func!(exports::INPUT),
            output: func!(exports::OUTPUT),
            init: func!(exports::INIT),
            apply: func!(exports::APPLY),
            query: func!(exports::QUERY),
            snapshot: func!(exports::SNAPSHOT),
            restore: func!(exports::RESTORE),
            migrate: func!(exports::MIGRATE),
            panic_message: func!(exports::PANIC_MESSAGE),
            globals,
        };
        Ok(WasmModule {
            store,
            exports,
            limits: *limits,
            state_version: module.info.state_version,
            abi_revision: module.info.abi_revision,
            encoded: Vec::new(),
            last_fuel_used: 0,
            apply_fuel_used: 0,
            _abi: PhantomData,
        })
    }

    /// An instance exactly as `image` was taken: memory grown to its size and
    /// written, globals set. Runs no module code.
    pub fn resume(
        runtime: &Runtime,
        module: &CompiledModule,
        limits: &ModuleLimits,
        image: &MemoryImage,
    ) -> Result<Self, ModuleFault> {
        let mut resumed = Self::instantiate(runtime, module, limits)?;
        let bad = |message: String| ModuleFault::Protocol { message: format!("the image does not fit: {message}") };
        let current = resumed.exports.memory.data_size(&resumed.store) as u64;
        if image.size_bytes < current || !image.size_bytes.is_multiple_of(WASM_PAGE_BYTES) {
            return Err(bad(format!(
                "{} bytes of memory for an instance that starts with {current}",
                image.size_bytes
            )));
        }
        if image.globals.len() != resumed.exports.globals.len() {
            return Err(bad(format!("{} globals for {}", image.globals.len(), resumed.exports.globals.len())));
        }
        let store = &mut resumed.store;
        store.data_mut().begin_call(u64::MAX);
        resumed
            .exports
            .memory
            .grow(&mut *store, (image.size_bytes - current) / WASM_PAGE_BYTES)
            .map_err(|error| bad(format!("growing the memory to {} bytes: {error}", image.size_bytes)))?;
        image.write_into(resumed.exports.memory.data_mut(&mut *store)).map_err(bad)?;
        for (global, bits) in resumed.exports.globals.iter().zip(&image.globals) {
            let value = match global.ty(&*store).content() {
                ValType::I32 => Val::I32(*bits as u32 as i32),
                ValType::I64 => Val::I64(*bits as i64),
                ValType::F32 => Val::F32(*bits as u32),
                ValType::F64 => Val::F64(*bits),
                other => return Err(bad(format!("a global of type {other}"))),
            };
            global.set(&mut *store, value).map_err(|error| bad(error.to_string()))?;
        }
        Ok(resumed)
    }

    /// The instance's memory and globals, copied. Runs no module code.
    pub fn image(&mut self) -> MemoryImage {
        let globals = self.globals();
        MemoryImage::capture(self.exports.memory.data(&self.store), globals)
    }

    /// [`WasmModule::image`] copied into `image`'s buffers.
    pub fn image_into(&mut self, image: &mut MemoryImage) {
        let globals = self.globals();
        image.recapture(self.exports.memory.data(&self.store), globals);
    }

    fn globals(&mut self) -> Vec<u64> {
        let store = &mut self.store;
        self.exports
            .globals
            .iter()
            .map(|global| match global.get(&mut *store) {
                Val::I32(value) => value as u32 as u64,
                Val::I64(value) => value as u64,
                Val::F32(bits) => bits as u64,
                Val::F64(bits) => bits,
                // Validation admits numeric mutable globals only.
                _ => 0,
            })
            .collect()
    }

    /// The size of the instance's linear memory now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.exports.memory.data_size(&self.store)
    }

    /// Fuel the last call into the module used (`apply`, `snapshot`, ...; not
    /// the input and output calls around it).
    pub fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used
    }

    /// Initialise fresh state from a config.
    pub fn init(&mut self, config: &A::Config) -> Result<(), ModuleFault> {
        self.encoded.clear();
        encode_into(config, &mut self.encoded);
        let len = self.write_input()?;
        let code = self.call(ModuleCall::Init, 0, |e, store| e.init.call(store, len))?;
        self.check_status(code)
    }

    /// Load state from a snapshot of `state_version` (migrating if it is older).
    pub fn restore(&mut self, state_version: u32, bytes: &[u8]) -> Result<(), ModuleFault> {
        self.encoded.clear();
        self.encoded.extend_from_slice(bytes);
        let len = self.write_input()?;
        let code = if state_version == self.state_version {
            self.call(ModuleCall::Restore, len as u64, |e, store| e.restore.call(store, len))?
        } else {
            self.call(ModuleCall::Migrate, len as u64, |e, store| e.migrate.call(store, (state_version, len)))?
        };
        self.check_status(code)
    }

    /// Copy `self.encoded` into the guest's input buffer; returns its length.
    fn write_input(&mut self) -> Result<u32, ModuleFault> {
        let len = u32::try_from(self.encoded.len())
            .map_err(|_| ModuleFault::Protocol { message: "input larger than 4 GiB".into() })?;
        let ptr = self.call(ModuleCall::Buffer, len as u64, |e, store| e.input.call(store, len))?;
        self.exports.memory.write(&mut self.store, ptr as usize, &self.encoded).map_err(|_| ModuleFault::Protocol {
            message: format!("input buffer at {ptr} (+{len}) is outside memory"),
        })?;
        Ok(len)
    }

    /// One call into the module under its budget.
    fn call<R>(
        &mut self,
        kind: ModuleCall,
        input_bytes: u64,
        call: impl FnOnce(&Exports, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, ModuleFault> {
        let budget = CallBudget::of(kind, &self.limits, input_bytes);
        self.store.data_mut().begin_call(budget.memory_growth_bytes);
        self.store.set_fuel(budget.fuel).map_err(protocol)?;
        let result = call(&self.exports, &mut self.store);
        if kind != ModuleCall::Buffer {
            self.last_fuel_used = budget.fuel - self.store.get_fuel().unwrap_or(0);
            if kind == ModuleCall::Apply {
                self.apply_fuel_used += self.last_fuel_used;
            }
        }
        result.map_err(|error| self.fault(error, kind, budget.fuel))
    }

    /// The guest's output buffer.
    fn output(&mut self) -> Result<&[u8], ModuleFault> {
        let region = self.call(ModuleCall::Buffer, 0, |e, store| e.output.call(store, ()))?;
        let (ptr, len) = unpack_region(region);
        self.exports
            .memory
            .data(&self.store)
            .get(ptr as usize..ptr as usize + len as usize)
            .ok_or_else(|| ModuleFault::Protocol { message: format!("output region {ptr}+{len} is outside memory") })
    }

    fn check_status(&mut self, code: u32) -> Result<(), ModuleFault> {
        if code == status::OK {
            return Ok(());
        }
        let message = String::from_utf8_lossy(self.output()?).into_owned();
        Err(if code == status::MODULE_ERROR {
            ModuleFault::Refused { message }
        } else {
            ModuleFault::Protocol { message: format!("status {code}: {message}") }
        })
    }

    /// Turn a wasmtime error into a fault: out of fuel first, then a refused
    /// memory growth (the trap that followed it is its consequence), then a
    /// trap with the guest's panic message if it left one.
    fn fault(&mut self, error: wasmtime::Error, call: ModuleCall, fuel: u64) -> ModuleFault {
        let trap = error.downcast_ref::<Trap>().copied();
        let message = match trap {
            Some(Trap::OutOfFuel) => return ModuleFault::OutOfFuel { call, fuel },
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        let refused = self.store.data().refused_at_bytes;
        let message = match self.panic_message() {
            Some(panic) => format!("{panic} ({message})"),
            None => message,
        };
        match refused {
            Some(requested_bytes) => ModuleFault::MemoryLimit { call, requested_bytes, message },
            None => ModuleFault::Trap { message },
        }
    }

    fn panic_message(&mut self) -> Option<String> {
        let region = self.call(ModuleCall::Buffer, 0, |e, store| e.panic_message.call(store, ()));
        let (ptr, len) = unpack_region(region.ok()?);
        let bytes = self.exports.memory.data(&self.store).get(ptr as usize..ptr as usize + len as usize)?;
        (!bytes.is_empty())
            .then(|| String::from_utf8_lossy(&bytes[..bytes.len().min(PANIC_MESSAGE_BYTES_MAX)]).into_owned())
    }

    /// Decode the output's single frame into `out`.
    fn read_frame(&mut self, out: &mut A::Output) -> Result<(), ModuleFault> {
        let output = self.output()?;
        let truncated = || ModuleFault::Protocol { message: "output frame is truncated".into() };
        let (len, rest) = output.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = u32::from_le_bytes(*len) as usize;
        let frame = rest.get(..len).ok_or_else(truncated)?;
        if rest.len() != len {
            return Err(ModuleFault::Protocol { message: "output has bytes after the frame".into() });
        }
        *out = decode(frame).map_err(|error| ModuleFault::Protocol { message: format!("output: {error}") })?;
        Ok(())
    }
}

fn protocol(error: impl std::fmt::Display) -> ModuleFault {
    ModuleFault::Protocol { message: error.to_string() }
}

impl<A: Abi> Instance<A> for WasmModule<A> {
    fn apply(&mut self, ctx: &CommandContext, command: &A::Command, out: &mut A::Output) -> Result<(), ModuleFault> {
        self.encoded.clear();
        encode_into(&ApplyInput { ctx: *ctx, command }, &mut self.encoded);
        let len = self.write_input()?;
        let code = self.call(ModuleCall::Apply, 0, |e, store| e.apply.call(store, (0, len)))?;
        self.check_status(code)?;
        self.read_frame(out)
    }

    fn query(&mut self, query: &A::Query) -> Result<A::QueryResult, ModuleFault> {
        self.encoded.clear();
        encode_into(query, &mut self.encoded);
        let len = self.write_input()?;
        let code = self.call(ModuleCall::Query, 0, |e, store| e.query.call(store, len))?;
        self.check_status(code)?;
        decode(self.output()?).map_err(|error| ModuleFault::Protocol { message: format!("query result: {error}") })
    }

    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        let code = self.call(ModuleCall::Snapshot, 0, |e, store| e.snapshot.call(store, ()))?;
        self.check_status(code)?;
        out.extend_from_slice(self.output()?);
        Ok(())
    }

    fn state_version(&self) -> u32 {
        self.state_version
    }

    fn abi_revision(&self) -> u32 {
        self.abi_revision
    }

    fn memory_bytes(&self) -> Option<usize> {
        Some(WasmModule::memory_bytes(self))
    }

    fn apply_fuel_used(&self) -> Option<u64> {
        Some(self.apply_fuel_used)
    }

    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        Ok(InstanceImage::Memory(WasmModule::image(self)))
    }

    fn image_into(&mut self, image: &mut InstanceImage) -> Result<(), ModuleFault> {
        match image {
            InstanceImage::Memory(memory) => WasmModule::image_into(self, memory),
            InstanceImage::Snapshot { .. } => *image = InstanceImage::Memory(WasmModule::image(self)),
        }
        Ok(())
    }
}

impl From<Rejection> for ModuleFault {
    fn from(rejection: Rejection) -> ModuleFault {
        ModuleFault::Protocol { message: rejection.to_string() }
    }
}
