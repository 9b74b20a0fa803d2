//! The store's resource limiter: the memory an instance may have, and what
//! the current call may still grow it by.

use wasmtime::ResourceLimiter;

/// What each store carries: its resource limits and what the current call may still grow.
pub struct StoreState {
    memory_bytes_max: u64,
    growth_allowed_bytes: u64,
    /// The size a growth was refused at during the current call, if one was.
    pub(crate) refused_at_bytes: Option<u64>,
}

impl StoreState {
    pub(crate) fn new(memory_bytes_max: u64) -> StoreState {
        StoreState { memory_bytes_max, growth_allowed_bytes: memory_bytes_max, refused_at_bytes: None }
    }

    pub(crate) fn begin_call(&mut self, growth_allowed_bytes: u64) {
        self.growth_allowed_bytes = growth_allowed_bytes;
        self.refused_at_bytes = None;
    }
}

/// Tables and instances are fixed by validation; only memory grows at run time.
const TABLE_ELEMENTS_MAX: usize = 1 << 20;

impl ResourceLimiter for StoreState {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let within = desired as u64 <= self.memory_bytes_max
            && maximum.is_none_or(|maximum| desired <= maximum)
            && growth <= self.growth_allowed_bytes;
        if within {
            self.growth_allowed_bytes -= growth;
        } else {
            self.refused_at_bytes = Some(desired as u64);
        }
        Ok(within)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX && maximum.is_none_or(|maximum| desired <= maximum))
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}
