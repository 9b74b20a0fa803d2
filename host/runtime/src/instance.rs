//! A live module instance of either kind: one wasmtime store, the ABI's
//! functions looked up once as typed handles, and the memory protocol of
//! `exhost_guest_sdk::abi` on the host side, generic over the kind's [`Abi`].
//!
//! Fuel is set before every `exhost_apply` call, so a command's fuel budget
//! does not depend on how many commands share a batch: the out-of-fuel outcome
//! of a command is the same live and on every replay.

use std::marker::PhantomData;

use exhost_engine::{Instance, ModuleFault, ModuleLimits};
use exhost_guest_sdk::abi::{ApplyInput, exports, status, unpack_region};
use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi};
use wasmtime::{Memory, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc};

use crate::validate::CompiledModule;
use crate::{Rejection, Runtime};

/// What each store carries: its resource limiter.
pub struct StoreState {
    pub(crate) limits: StoreLimits,
}

/// Fuel for calls other than `apply` (input, output, snapshot, restore, query):
/// generous, since they are linear in the state size, but still bounded.
const MAINTENANCE_FUEL: u64 = u64::MAX / 4;

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
}

/// A wasm module instance of the kind `A`.
pub struct WasmModule<A: Abi> {
    store: Store<StoreState>,
    exports: Exports,
    fuel_per_command: u64,
    state_version: u32,
    /// Reused encoding buffer: no allocation per command on the hot path.
    encoded: Vec<u8>,
    /// Byte ranges of each command within `encoded`, for batches.
    ranges: Vec<(u32, u32)>,
    _abi: PhantomData<fn() -> A>,
}

/// A wasm matching module instance.
pub type WasmMatching = WasmModule<MatchingAbi>;

impl<A: Abi> WasmModule<A> {
    /// A new instance with empty state (no `init` or `restore` yet).
    pub fn instantiate(runtime: &Runtime, module: &CompiledModule, limits: &ModuleLimits) -> Result<Self, ModuleFault> {
        let memory_bytes_max = limits.memory_bytes_max.min(module.info.memory_bytes_max);
        let store_limits = StoreLimitsBuilder::new().memory_size(memory_bytes_max as usize).instances(1).build();
        let mut store = Store::new(runtime.engine(), StoreState { limits: store_limits });
        store.limiter(|state| &mut state.limits);
        store.set_fuel(MAINTENANCE_FUEL).map_err(protocol)?;
        let instance = module.pre.instantiate(&mut store).map_err(|error| fault(error, limits.fuel_per_command))?;
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or_else(|| ModuleFault::Protocol { message: "no memory export".into() })?;
        macro_rules! func {
            ($name:expr) => {
                instance.get_typed_func(&mut store, $name).map_err(protocol)?
            };
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
        };
        if module.info.kind != A::KIND {
            return Err(ModuleFault::Protocol {
                message: format!(
                    "a {} module cannot serve as a {} module",
                    module.info.kind.as_str(),
                    A::KIND.as_str()
                ),
            });
        }
        Ok(WasmModule {
            store,
            exports,
            fuel_per_command: limits.fuel_per_command,
            state_version: module.info.state_version,
            encoded: Vec::new(),
            ranges: Vec::new(),
            _abi: PhantomData,
        })
    }

    /// The size of the instance's linear memory now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.exports.memory.data_size(&self.store)
    }

    /// Initialise fresh state from a config.
    pub fn init(&mut self, config: &A::Config) -> Result<(), ModuleFault> {
        self.encoded.clear();
        encode_into(config, &mut self.encoded);
        let len = self.write_input()?;
        let code = self.call_maintenance(|e, store| e.init.call(store, len))?;
        self.check_status(code)
    }

    /// Load state from a snapshot of `state_version` (migrating if it is older).
    pub fn restore(&mut self, state_version: u32, bytes: &[u8]) -> Result<(), ModuleFault> {
        self.encoded.clear();
        self.encoded.extend_from_slice(bytes);
        let len = self.write_input()?;
        let code = if state_version == self.state_version {
            self.call_maintenance(|e, store| e.restore.call(store, len))?
        } else {
            self.call_maintenance(|e, store| e.migrate.call(store, (state_version, len)))?
        };
        self.check_status(code)
    }

    /// Copy `self.encoded` into the guest's input buffer; returns its length.
    fn write_input(&mut self) -> Result<u32, ModuleFault> {
        let len = u32::try_from(self.encoded.len())
            .map_err(|_| ModuleFault::Protocol { message: "input larger than 4 GiB".into() })?;
        let ptr = self.call_maintenance(|e, store| e.input.call(store, len))?;
        self.exports.memory.write(&mut self.store, ptr as usize, &self.encoded).map_err(|_| ModuleFault::Protocol {
            message: format!("input buffer at {ptr} (+{len}) is outside memory"),
        })?;
        Ok(len)
    }

    fn call_maintenance<R>(
        &mut self,
        call: impl FnOnce(&Exports, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, ModuleFault> {
        self.store.set_fuel(MAINTENANCE_FUEL).map_err(protocol)?;
        let result = call(&self.exports, &mut self.store);
        result.map_err(|error| self.trap_fault(error, MAINTENANCE_FUEL))
    }

    /// The guest's output buffer.
    fn output(&mut self) -> Result<&[u8], ModuleFault> {
        self.store.set_fuel(MAINTENANCE_FUEL).map_err(protocol)?;
        let region = self.exports.output.call(&mut self.store, ()).map_err(|error| fault(error, MAINTENANCE_FUEL))?;
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

    /// Turn a wasmtime error into a fault, adding the guest's panic message if it left one.
    fn trap_fault(&mut self, error: wasmtime::Error, fuel: u64) -> ModuleFault {
        let mut fault = fault(error, fuel);
        if let ModuleFault::Trap { message } = &mut fault
            && let Some(panic) = self.panic_message()
        {
            *message = format!("{panic} ({message})");
        }
        fault
    }

    fn panic_message(&mut self) -> Option<String> {
        self.store.set_fuel(MAINTENANCE_FUEL).ok()?;
        let region = self.exports.panic_message.call(&mut self.store, ()).ok()?;
        let (ptr, len) = unpack_region(region);
        let bytes = self.exports.memory.data(&self.store).get(ptr as usize..ptr as usize + len as usize)?;
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
    }

    /// Decode the output's frames, one per applied command, into `outputs`.
    fn read_frames(&mut self, count: usize, outputs: &mut Vec<A::Output>) -> Result<(), ModuleFault> {
        let mut output = self.output()?;
        for _ in 0..count {
            let (len, rest) = output
                .split_first_chunk::<4>()
                .ok_or_else(|| ModuleFault::Protocol { message: "output frame is truncated".into() })?;
            let len = u32::from_le_bytes(*len) as usize;
            let frame =
                rest.get(..len).ok_or_else(|| ModuleFault::Protocol { message: "output frame is truncated".into() })?;
            let decoded: A::Output =
                decode(frame).map_err(|error| ModuleFault::Protocol { message: format!("output: {error}") })?;
            outputs.push(decoded);
            output = &rest[len..];
        }
        if !output.is_empty() {
            return Err(ModuleFault::Protocol { message: "output has bytes after the last frame".into() });
        }
        Ok(())
    }
}

fn protocol(error: impl std::fmt::Display) -> ModuleFault {
    ModuleFault::Protocol { message: error.to_string() }
}

fn fault(error: wasmtime::Error, fuel: u64) -> ModuleFault {
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ModuleFault::OutOfFuel { fuel },
        Some(trap) => ModuleFault::Trap { message: trap.to_string() },
        None => ModuleFault::Trap { message: format!("{error:#}") },
    }
}

impl<A: Abi> Instance<A> for WasmModule<A> {
    fn apply(&mut self, ctx: &CommandContext, command: &A::Command, out: &mut A::Output) -> Result<(), ModuleFault> {
        self.encoded.clear();
        encode_into(&ApplyInput { ctx: *ctx, command }, &mut self.encoded);
        let len = self.write_input()?;
        self.store.set_fuel(self.fuel_per_command).map_err(protocol)?;
        let code = match self.exports.apply.call(&mut self.store, (0, len)) {
            Ok(code) => code,
            Err(error) => return Err(self.trap_fault(error, self.fuel_per_command)),
        };
        self.check_status(code)?;
        let mut frames = Vec::with_capacity(1);
        self.read_frames(1, &mut frames)?;
        *out = frames.pop().expect("one frame was read");
        Ok(())
    }

    fn apply_batch(
        &mut self,
        commands: &[(CommandContext, A::Command)],
        outputs: &mut Vec<A::Output>,
    ) -> Result<(), (usize, ModuleFault)> {
        self.encoded.clear();
        self.ranges.clear();
        for (ctx, command) in commands {
            let start = self.encoded.len();
            encode_into(&ApplyInput { ctx: *ctx, command }, &mut self.encoded);
            self.ranges.push((start as u32, (self.encoded.len() - start) as u32));
        }
        self.write_input().map_err(|fault| (0, fault))?;
        for i in 0..self.ranges.len() {
            let (offset, len) = self.ranges[i];
            self.store.set_fuel(self.fuel_per_command).map_err(|error| (i, protocol(error)))?;
            let code = match self.exports.apply.call(&mut self.store, (offset, len)) {
                Ok(code) => code,
                Err(error) => return Err((i, self.trap_fault(error, self.fuel_per_command))),
            };
            self.check_status(code).map_err(|fault| (i, fault))?;
        }
        self.read_frames(commands.len(), outputs).map_err(|fault| (0, fault))
    }

    fn query(&mut self, query: &A::Query) -> Result<A::QueryResult, ModuleFault> {
        self.encoded.clear();
        encode_into(query, &mut self.encoded);
        let len = self.write_input()?;
        let code = self.call_maintenance(|e, store| e.query.call(store, len))?;
        self.check_status(code)?;
        decode(self.output()?).map_err(|error| ModuleFault::Protocol { message: format!("query result: {error}") })
    }

    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        let code = self.call_maintenance(|e, store| e.snapshot.call(store, ()))?;
        self.check_status(code)?;
        out.extend_from_slice(self.output()?);
        Ok(())
    }

    fn state_version(&self) -> u32 {
        self.state_version
    }

    fn memory_bytes(&self) -> Option<usize> {
        Some(WasmModule::memory_bytes(self))
    }
}

impl From<Rejection> for ModuleFault {
    fn from(rejection: Rejection) -> ModuleFault {
        ModuleFault::Protocol { message: rejection.to_string() }
    }
}
