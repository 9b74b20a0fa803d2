//! What the gateway knows of users and markets without asking the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use exhost_engine::{MarketId, MarketSpec, Registry};
use exhost_guest_sdk::UserId;

use crate::secrets::{Sealer, Verifier};

/// What the gateway needs to know about users and markets without asking the
/// engine thread: kept in step with the engine's registry after every command
/// that changes it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// API key to (user, what checks its signatures).
    pub users: HashMap<String, (UserId, Verifier)>,
    pub user_ids: BTreeMap<UserId, String>,
    pub markets: Vec<MarketSpec>,
    pub symbols: HashMap<String, MarketId>,
    pub assets: BTreeMap<String, u8>,
    pub settlement_asset: Option<String>,
    pub position_module: Option<exhost_engine::ModuleHash>,
    pub activations: Vec<exhost_engine::Activation>,
    /// Tiers and funding terms of the markets created with them.
    pub market_terms: BTreeMap<MarketId, exhost_guest_sdk::MarketTerms>,
    /// Opens the sealed secrets of new users.
    sealer: Option<Arc<Sealer>>,
}

impl Directory {
    pub fn from_registry(registry: &Registry, sealer: Option<Arc<Sealer>>) -> Directory {
        let mut directory = Directory { sealer, ..Directory::default() };
        directory.refresh(registry);
        let unusable = directory.users.values().filter(|(_, verifier)| matches!(verifier, Verifier::Unusable(_)));
        let unusable = unusable.count();
        if unusable > 0 {
            tracing::error!(
                users = unusable,
                "some users cannot sign requests: their secrets do not open with this host's secrets key (is secrets_key_file the key this data directory was made with?)"
            );
        }
        directory
    }

    pub(crate) fn refresh(&mut self, registry: &Registry) {
        for (user_id, record) in
            registry.users.range(self.user_ids.keys().next_back().map_or(UserId(0), |id| UserId(id.0 + 1))..)
        {
            let verifier = Verifier::of(&record.api_key, &record.credential, self.sealer.as_deref());
            self.users.insert(record.api_key.clone(), (*user_id, verifier));
            self.user_ids.insert(*user_id, record.api_key.clone());
        }
        for (index, spec) in registry.markets.iter().enumerate().skip(self.markets.len()) {
            self.symbols.insert(spec.symbol.clone(), MarketId(index as u32));
            self.markets.push(spec.clone());
        }
        self.assets.clone_from(&registry.assets);
        self.settlement_asset = registry.position.as_ref().map(|p| p.config.settlement_asset.clone());
        self.position_module = registry.position.as_ref().map(|p| p.module_hash);
        // Hot swaps change a market's module.
        for (spec, live) in self.markets.iter_mut().zip(&registry.markets) {
            spec.module_hash = live.module_hash;
        }
        self.activations.clone_from(&registry.activations);
        if self.market_terms.len() != registry.market_terms.len() {
            self.market_terms.clone_from(&registry.market_terms);
        }
    }

    /// The settlement asset, if a position module is installed.
    pub fn position_asset(&self) -> Option<&str> {
        self.settlement_asset.as_deref()
    }

    pub fn market(&self, symbol: &str) -> Option<(MarketId, &MarketSpec)> {
        let id = *self.symbols.get(symbol)?;
        Some((id, &self.markets[id.0 as usize]))
    }
}
