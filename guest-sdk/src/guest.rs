//! The guest side of the ABI: the state a module instance keeps between calls
//! and the logic behind each export. It is ordinary Rust, compiled natively in
//! tests; only the thin `extern "C"` shims made by the export macro are wasm-only.

use std::cell::UnsafeCell;
use std::string::String;
use std::vec::Vec;

use core::marker::PhantomData;

use crate::abi::{Abi, ApplyInput, Rules, status};
use crate::codec::{decode, encode_into};

/// Everything a module instance keeps between calls.
pub struct Guest<A: Abi, M> {
    module: Option<M>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// What the command being applied produced; reused, so applying a
    /// command allocates nothing once the buffers have grown.
    produced: Option<A::Output>,
    _abi: PhantomData<A>,
}

impl<A: Abi, M: Rules<A>> Default for Guest<A, M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Abi, M: Rules<A>> Guest<A, M> {
    pub const fn new() -> Self {
        Guest { module: None, input: Vec::new(), output: Vec::new(), produced: None, _abi: PhantomData }
    }

    /// Make the input buffer `len` bytes long and clear the output.
    pub fn input(&mut self, len: u32) -> &mut [u8] {
        self.input.clear();
        self.input.resize(len as usize, 0);
        self.output.clear();
        &mut self.input
    }

    pub fn output(&self) -> &[u8] {
        &self.output
    }

    fn fail(&mut self, code: u32, message: impl core::fmt::Display) -> u32 {
        use core::fmt::Write;
        self.output.clear();
        let mut text = String::new();
        let _ = write!(text, "{message}");
        self.output.extend_from_slice(text.as_bytes());
        code
    }

    fn input_slice(&self, offset: u32, len: u32) -> Option<&[u8]> {
        let start = offset as usize;
        let end = start.checked_add(len as usize)?;
        self.input.get(start..end)
    }

    pub fn init(&mut self, len: u32) -> u32 {
        self.output.clear();
        let config: A::Config = match self.input_slice(0, len).map(decode) {
            Some(Ok(config)) => config,
            Some(Err(error)) => return self.fail(status::DECODE_ERROR, format_args!("config: {error}")),
            None => return self.fail(status::DECODE_ERROR, "config: length beyond the input buffer"),
        };
        match M::init(&config) {
            Ok(module) => {
                self.module = Some(module);
                status::OK
            }
            Err(error) => self.fail(status::MODULE_ERROR, error),
        }
    }

    pub fn apply(&mut self, offset: u32, len: u32) -> u32 {
        let input: ApplyInput<A::Command> = match self.input_slice(offset, len).map(decode) {
            Some(Ok(input)) => input,
            Some(Err(error)) => return self.fail(status::DECODE_ERROR, format_args!("command: {error}")),
            None => return self.fail(status::DECODE_ERROR, "command: range beyond the input buffer"),
        };
        let Some(module) = self.module.as_mut() else {
            return self.fail(status::MODULE_ERROR, "apply before init or restore");
        };
        let out = self.produced.get_or_insert_with(A::Output::default);
        A::clear_output(out);
        module.apply(&input.ctx, &input.command, out);
        // Reserve the frame's length prefix, encode, then fill the prefix in.
        let frame_start = self.output.len();
        self.output.extend_from_slice(&[0; 4]);
        encode_into(&*out, &mut self.output);
        let frame_len = (self.output.len() - frame_start - 4) as u32;
        self.output[frame_start..frame_start + 4].copy_from_slice(&frame_len.to_le_bytes());
        status::OK
    }

    pub fn query(&mut self, len: u32) -> u32 {
        let query: A::Query = match self.input_slice(0, len).map(decode) {
            Some(Ok(query)) => query,
            Some(Err(error)) => return self.fail(status::DECODE_ERROR, format_args!("query: {error}")),
            None => return self.fail(status::DECODE_ERROR, "query: length beyond the input buffer"),
        };
        let Some(module) = self.module.as_ref() else {
            return self.fail(status::MODULE_ERROR, "query before init or restore");
        };
        let answer = module.query(&query);
        self.output.clear();
        encode_into(&answer, &mut self.output);
        status::OK
    }

    pub fn snapshot(&mut self) -> u32 {
        self.output.clear();
        let Some(module) = self.module.as_ref() else {
            return self.fail(status::MODULE_ERROR, "snapshot before init or restore");
        };
        module.snapshot(&mut self.output);
        status::OK
    }

    pub fn restore(&mut self, len: u32) -> u32 {
        self.output.clear();
        let result = match self.input_slice(0, len) {
            Some(bytes) => M::restore(bytes),
            None => return self.fail(status::DECODE_ERROR, "snapshot: length beyond the input buffer"),
        };
        self.install(result)
    }

    pub fn migrate(&mut self, from_version: u32, len: u32) -> u32 {
        self.output.clear();
        let result = match self.input_slice(0, len) {
            Some(bytes) if from_version == M::STATE_VERSION => M::restore(bytes),
            Some(bytes) => M::migrate(from_version, bytes),
            None => return self.fail(status::DECODE_ERROR, "snapshot: length beyond the input buffer"),
        };
        self.install(result)
    }

    fn install(&mut self, result: Result<M, crate::matching::ModuleError>) -> u32 {
        match result {
            Ok(module) => {
                self.module = Some(module);
                status::OK
            }
            Err(error) => self.fail(status::MODULE_ERROR, error),
        }
    }
}

/// A cell for the one guest instance of a wasm module. WebAssembly guests built
/// by this SDK are single-threaded (the host enables no threads proposal), so
/// exclusive access is guaranteed by the host calling one export at a time.
pub struct GuestCell<T>(UnsafeCell<T>);

// SAFETY: a wasm32 guest has exactly one thread, and the host never re-enters it.
unsafe impl<T> Sync for GuestCell<T> {}

impl<T> GuestCell<T> {
    pub const fn new(value: T) -> Self {
        GuestCell(UnsafeCell::new(value))
    }

    /// # Safety
    /// The caller must not hold another reference obtained from this cell: true
    /// for the export shims, each of which is one non-reentrant host call.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: guaranteed by the caller, see above.
        unsafe { &mut *self.0.get() }
    }
}

/// The last panic message, kept so the host can report why a module trapped.
pub static PANIC_MESSAGE: GuestCell<String> = GuestCell::new(String::new());

/// Install the hook that records panic messages (idempotent).
pub fn install_panic_hook() {
    static INSTALLED: GuestCell<bool> = GuestCell::new(false);
    // SAFETY: single-threaded guest, no other reference is live.
    let installed = unsafe { INSTALLED.get() };
    if !*installed {
        *installed = true;
        std::panic::set_hook(std::boxed::Box::new(|info| {
            // SAFETY: the hook runs on the guest's only thread, outside any other borrow
            // of this cell (nothing else writes it).
            let message = unsafe { PANIC_MESSAGE.get() };
            message.clear();
            use core::fmt::Write;
            let _ = write!(message, "{info}");
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ApplyInput;
    use crate::codec::{decode, encode};
    use crate::matching::*;
    use crate::types::*;

    /// A module that counts commands, for exercising the wire logic natively.
    struct Counter {
        applied: u64,
    }

    impl MatchingModule for Counter {
        const STATE_VERSION: u32 = 2;
        fn init(config: &MarketConfig) -> Result<Self, ModuleError> {
            if config.params == b"refuse" {
                return Err(ModuleError::new("refused by params"));
            }
            Ok(Counter { applied: 0 })
        }
        fn apply(&mut self, ctx: &CommandContext, _: &MatchingCommand, events: &mut Vec<MatchingEvent>) {
            self.applied += 1;
            events.push(MatchingEvent::Trade(Trade {
                trade_id: TradeId(ctx.seq),
                price_ticks: self.applied,
                qty_lots: 1,
                taker_side: Side::Buy,
                maker_order_id: OrderId(1),
                maker_user_id: UserId(1),
                taker_order_id: OrderId(2),
                taker_user_id: UserId(2),
            }));
        }
        fn query(&self, _: &MatchingQuery) -> MatchingQueryResult {
            MatchingQueryResult::Orders(Vec::new())
        }
        fn snapshot(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.applied.to_le_bytes());
        }
        fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| ModuleError::new("want 8 bytes"))?;
            Ok(Counter { applied: u64::from_le_bytes(bytes) })
        }
        fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
            if from_version == 1 && bytes.len() == 4 {
                let old = u32::from_le_bytes(bytes.try_into().unwrap());
                return Ok(Counter { applied: old as u64 });
            }
            Err(ModuleError::new("no"))
        }
    }

    type MatchingGuest<M> = Guest<crate::abi::MatchingAbi, M>;

    fn write_input(guest: &mut MatchingGuest<Counter>, bytes: &[u8]) {
        guest.input(bytes.len() as u32).copy_from_slice(bytes);
    }

    fn cancel(seq: u64) -> Vec<u8> {
        encode(&ApplyInput {
            ctx: CommandContext { seq, ts_ns: seq * 10 },
            command: MatchingCommand::Cancel { order_id: OrderId(1), user_id: UserId(1) },
        })
    }

    #[test]
    fn apply_before_init_is_a_module_error_with_a_message() {
        let mut guest = MatchingGuest::<Counter>::new();
        let command = cancel(1);
        write_input(&mut guest, &command);
        assert_eq!(guest.apply(0, command.len() as u32), status::MODULE_ERROR);
        assert_eq!(guest.output(), b"apply before init or restore");
    }

    #[test]
    fn a_batch_appends_one_length_prefixed_frame_per_command() {
        let mut guest = MatchingGuest::<Counter>::new();
        let config = encode(&MarketConfig::default());
        write_input(&mut guest, &config);
        assert_eq!(guest.init(config.len() as u32), status::OK);

        let (first, second) = (cancel(5), cancel(6));
        let mut batch = first.clone();
        batch.extend_from_slice(&second);
        write_input(&mut guest, &batch);
        assert_eq!(guest.apply(0, first.len() as u32), status::OK);
        assert_eq!(guest.apply(first.len() as u32, second.len() as u32), status::OK);

        let mut output = guest.output();
        let mut seen = Vec::new();
        while !output.is_empty() {
            let len = u32::from_le_bytes(output[..4].try_into().unwrap()) as usize;
            let events: Vec<MatchingEvent> = decode(&output[4..4 + len]).unwrap();
            seen.push(events);
            output = &output[4 + len..];
        }
        assert_eq!(seen.len(), 2);
        let MatchingEvent::Trade(trade) = &seen[1][0] else { panic!("expected a trade") };
        assert_eq!((trade.trade_id, trade.price_ticks), (TradeId(6), 2));
    }

    #[test]
    fn out_of_range_and_garbage_input_are_decode_errors() {
        let mut guest = MatchingGuest::<Counter>::new();
        write_input(&mut guest, &[1, 2, 3]);
        assert_eq!(guest.apply(2, 5), status::DECODE_ERROR);
        assert_eq!(guest.apply(0, 3), status::DECODE_ERROR);
        assert!(!guest.output().is_empty());
        assert_eq!(guest.init(3), status::DECODE_ERROR);
    }

    #[test]
    fn init_refusal_carries_the_module_message() {
        let mut guest = MatchingGuest::<Counter>::new();
        let config = encode(&MarketConfig { params: b"refuse".to_vec(), ..MarketConfig::default() });
        write_input(&mut guest, &config);
        assert_eq!(guest.init(config.len() as u32), status::MODULE_ERROR);
        assert_eq!(guest.output(), b"refused by params");
    }

    #[test]
    fn snapshot_restore_and_migrate() {
        let mut guest = MatchingGuest::<Counter>::new();
        write_input(&mut guest, &7u64.to_le_bytes());
        assert_eq!(guest.restore(8), status::OK);
        assert_eq!(guest.snapshot(), status::OK);
        assert_eq!(guest.output(), &7u64.to_le_bytes());

        write_input(&mut guest, &9u32.to_le_bytes());
        assert_eq!(guest.migrate(1, 4), status::OK);
        assert_eq!(guest.snapshot(), status::OK);
        assert_eq!(guest.output(), &9u64.to_le_bytes());

        // Migrating from the module's own version is a plain restore.
        write_input(&mut guest, &3u64.to_le_bytes());
        assert_eq!(guest.migrate(2, 8), status::OK);
        write_input(&mut guest, &[0; 3]);
        assert_eq!(guest.migrate(5, 3), status::MODULE_ERROR);
        assert_eq!(guest.output(), b"no");
    }
}
