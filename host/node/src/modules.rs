//! Modules from the store: the wasm loader reads module bytes and keeps
//! compiled machine code in the data directory.

use std::sync::Arc;

use exhost_engine::ModuleHash;
use exhost_runtime::{ArtifactCache, ModuleSource, Runtime, WasmLoader};
use exhost_store::{Batch, Durability, Family, Store};

use crate::error::DataDirError;

/// Module bytes, by hash, from the store.
pub struct StoreModules(pub Store);

impl ModuleSource for StoreModules {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        match self.0.module(&hash.0) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, %hash, "reading module bytes failed");
                None
            }
        }
    }
}

/// Compiled machine code, kept beside the modules.
pub struct StoreArtifacts(pub Store);

impl ArtifactCache for StoreArtifacts {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(Family::Artifacts, key).ok().flatten()
    }

    fn put(&self, key: &[u8], artifact: &[u8]) {
        let mut batch = Batch::default();
        batch.put(Family::Artifacts, key.to_vec(), artifact.to_vec());
        // A cache: losing a write only costs a compile at the next start.
        if let Err(error) = self.0.write(batch, Durability::None) {
            tracing::warn!(%error, "could not keep a compiled module");
        }
    }
}

/// The loader of a data directory: modules and compiled code from `store`.
pub fn loader_for(store: &Store) -> Result<Arc<WasmLoader>, DataDirError> {
    let runtime = Runtime::new().map_err(DataDirError::Runtime)?;
    Ok(Arc::new(
        WasmLoader::new(runtime, Arc::new(StoreModules(store.clone())))
            .with_artifact_cache(Arc::new(StoreArtifacts(store.clone()))),
    ))
}
