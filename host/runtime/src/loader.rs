//! Makes instances for the engine from module bytes found by hash, compiling
//! each module once and keeping it for every later instance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use exhost_engine::{LoadError, MatchingInstance, ModuleHash, ModuleLimits, ModuleLoader};
use exhost_guest_sdk::{MarketConfig, ModuleKind};

use crate::validate::CompiledModule;
use crate::{Runtime, WasmMatching};

/// Where module bytes come from (the host's module store).
pub trait ModuleSource: Send + Sync {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>>;
}

pub struct WasmLoader {
    runtime: Runtime,
    source: Arc<dyn ModuleSource>,
    compiled: Mutex<BTreeMap<ModuleHash, Arc<CompiledModule>>>,
}

impl WasmLoader {
    pub fn new(runtime: Runtime, source: Arc<dyn ModuleSource>) -> WasmLoader {
        WasmLoader { runtime, source, compiled: Mutex::new(BTreeMap::new()) }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The compiled module for a hash, compiling (and validating) it on first use.
    pub fn compiled(&self, hash: &ModuleHash) -> Result<Arc<CompiledModule>, LoadError> {
        if let Some(compiled) = self.lock().get(hash) {
            return Ok(compiled.clone());
        }
        let bytes = self.source.module_bytes(hash).ok_or(LoadError::UnknownModule(*hash))?;
        let compiled = self
            .runtime
            .compile(&bytes)
            .map_err(|rejection| LoadError::Invalid { hash: *hash, reason: rejection.to_string() })?;
        let compiled = Arc::new(compiled);
        self.lock().insert(*hash, compiled.clone());
        Ok(compiled)
    }

    /// Keep an already validated module, so its first use does not compile again.
    pub fn insert(&self, compiled: CompiledModule) -> Arc<CompiledModule> {
        let compiled = Arc::new(compiled);
        self.lock().insert(compiled.info.hash, compiled.clone());
        compiled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ModuleHash, Arc<CompiledModule>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn matching_instance(&self, hash: &ModuleHash, limits: &ModuleLimits) -> Result<WasmMatching, LoadError> {
        let compiled = self.compiled(hash)?;
        if compiled.info.kind != ModuleKind::Matching {
            return Err(LoadError::Invalid {
                hash: *hash,
                reason: format!("it is a {} module, a market needs a matching module", compiled.info.kind.as_str()),
            });
        }
        WasmMatching::instantiate(&self.runtime, &compiled, limits)
            .map_err(|fault| LoadError::Fault { hash: *hash, fault })
    }
}

impl ModuleLoader for WasmLoader {
    fn new_matching(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn MatchingInstance>, LoadError> {
        let mut instance = self.matching_instance(hash, limits)?;
        instance.init(config).map_err(|fault| LoadError::Fault { hash: *hash, fault })?;
        Ok(Box::new(instance))
    }

    fn restore_matching(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn MatchingInstance>, LoadError> {
        let mut instance = self.matching_instance(hash, limits)?;
        instance.restore(state_version, bytes).map_err(|fault| LoadError::Fault { hash: *hash, fault })?;
        Ok(Box::new(instance))
    }
}
