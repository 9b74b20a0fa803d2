//! Makes instances for the engine from module bytes found by hash, compiling
//! each module once and keeping it for every later instance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use exhost_engine::{Instance, InstanceImage, LoadError, Loader, ModuleHash, ModuleLimits, ModuleTarget};
use exhost_guest_sdk::{Abi, MarketConfig, MatchingAbi, PositionAbi, PositionConfig};

use crate::engine::Runtime;
use crate::instance::WasmModule;
use crate::validate::{ArtifactCache, CompiledModule, Rejection};

/// Where module bytes come from (the host's module store).
pub trait ModuleSource: Send + Sync {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>>;
}

pub struct WasmLoader {
    runtime: Runtime,
    source: Arc<dyn ModuleSource>,
    artifacts: Option<Arc<dyn ArtifactCache>>,
    compiled: Mutex<BTreeMap<ModuleHash, Arc<CompiledModule>>>,
}

impl WasmLoader {
    pub fn new(runtime: Runtime, source: Arc<dyn ModuleSource>) -> WasmLoader {
        WasmLoader { runtime, source, artifacts: None, compiled: Mutex::new(BTreeMap::new()) }
    }

    /// Keep compiled code in `cache`, so a restart does not compile again.
    pub fn with_artifact_cache(mut self, cache: Arc<dyn ArtifactCache>) -> WasmLoader {
        self.artifacts = Some(cache);
        self
    }

    /// Validate and compile bytes, through the artifact cache if there is one.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, Rejection> {
        let hash = ModuleHash::of(bytes);
        match &self.artifacts {
            Some(cache) => crate::validate::compile_cached(&self.runtime, hash, bytes, cache.as_ref()),
            None => self.runtime.compile(bytes),
        }
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
        let started = std::time::Instant::now();
        let compiled = self
            .compile(&bytes)
            .map_err(|rejection| LoadError::Invalid { hash: *hash, reason: rejection.to_string() })?;
        tracing::info!(module = %hash, ms = started.elapsed().as_millis() as u64, "module ready");
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

    fn compiled_of_kind<A: Abi>(&self, hash: &ModuleHash) -> Result<Arc<CompiledModule>, LoadError> {
        let compiled = self.compiled(hash)?;
        if compiled.info.kind != A::KIND {
            return Err(LoadError::Invalid {
                hash: *hash,
                reason: format!("it is a {} module, not a {} module", compiled.info.kind.as_str(), A::KIND.as_str()),
            });
        }
        Ok(compiled)
    }

    fn instance<A: Abi>(&self, hash: &ModuleHash, limits: &ModuleLimits) -> Result<WasmModule<A>, LoadError> {
        let compiled = self.compiled_of_kind::<A>(hash)?;
        WasmModule::<A>::instantiate(&self.runtime, &compiled, limits)
            .map_err(|fault| LoadError::Fault { hash: *hash, fault })
    }

    fn create_instance<A: Abi>(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &A::Config,
    ) -> Result<Box<dyn Instance<A>>, LoadError> {
        let mut instance = self.instance::<A>(hash, limits)?;
        instance.init(config).map_err(|fault| LoadError::Fault { hash: *hash, fault })?;
        Ok(Box::new(instance))
    }

    fn restore_instance<A: Abi>(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<A>>, LoadError> {
        let mut instance = self.instance::<A>(hash, limits)?;
        instance.restore(state_version, bytes).map_err(|fault| LoadError::Fault { hash: *hash, fault })?;
        Ok(Box::new(instance))
    }

    fn resume_instance<A: Abi>(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<A>>, LoadError> {
        match image {
            InstanceImage::Memory(memory) => {
                let compiled = self.compiled_of_kind::<A>(hash)?;
                let instance = WasmModule::<A>::resume(&self.runtime, &compiled, limits, memory)
                    .map_err(|fault| LoadError::Fault { hash: *hash, fault })?;
                Ok(Box::new(instance))
            }
            InstanceImage::Snapshot { state_version, bytes } => {
                self.restore_instance::<A>(hash, limits, *state_version, bytes)
            }
        }
    }
}

impl Loader<MatchingAbi> for WasmLoader {
    fn create(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        self.create_instance::<MatchingAbi>(hash, limits, config)
    }

    fn restore(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        self.restore_instance::<MatchingAbi>(hash, limits, state_version, bytes)
    }

    fn resume(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        self.resume_instance::<MatchingAbi>(hash, limits, image)
    }
}

impl Loader<PositionAbi> for WasmLoader {
    fn create(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.create_instance::<PositionAbi>(hash, limits, config)
    }

    fn restore(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.restore_instance::<PositionAbi>(hash, limits, state_version, bytes)
    }

    fn resume(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.resume_instance::<PositionAbi>(hash, limits, image)
    }
}
