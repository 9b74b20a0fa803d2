//! The commands that set the exchange up: a new market, with its book
//! instance, and the position module, once. Both run inside the engine's
//! command pipeline, so they are journaled, atomic and replayed like any other.

use exhost_guest_sdk::{CommandContext, MarketRisk, MarketTerms, MatchingAbi, PositionAbi, PositionCommand, Reason};

use crate::command::{MarketId, MarketSpec, ModuleLimits, ModuleTarget};
use crate::engine::Engine;
use crate::error::{Abort, EngineError};
use crate::event::EventBody;
use crate::module::{LoadError, Loader, ModuleHash};
use crate::registry::PositionInstall;
use crate::slot::Slot;

impl Engine {
    /// Why a module could not start, as the rejection of the command that
    /// started it. Without its bytes nothing after the command can be replayed,
    /// so that alone stops the engine; whatever the module itself did is an outcome.
    fn start_failed(&mut self, ctx: CommandContext, target: ModuleTarget, error: LoadError) -> Result<Reason, Abort> {
        match error {
            LoadError::UnknownModule(_) => Err(EngineError::Load { target, source: error }.into()),
            LoadError::Fault { fault, .. } => {
                let reason = crate::error::fault_reason(&fault);
                self.report_fault(ctx, target, fault);
                Ok(reason)
            }
            LoadError::Invalid { hash, reason } => {
                self.report_fault(
                    ctx,
                    target,
                    crate::module::ModuleFault::Refused { message: format!("{hash}: {reason}") },
                );
                Ok(Reason::ModuleProtocol)
            }
        }
    }

    pub(crate) fn create_market(
        &mut self,
        ctx: CommandContext,
        spec: &MarketSpec,
        terms: Option<&MarketTerms>,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        if self.registry.market_id(&spec.symbol).is_some() {
            events.push(EventBody::CommandRejected { reason: Reason::MarketExists });
            return Ok(());
        }
        let terms = terms.map(|terms| MarketTerms { market: MarketId(self.markets.len() as u32), ..terms.clone() });
        if let Some(terms) = &terms {
            // Terms are the position module's: one must be installed that reads them.
            let reason = if terms.problem().is_some() {
                Some(Reason::InvalidQuantity)
            } else if self.position.is_none() {
                Some(Reason::NoModule)
            } else if !self.position_reads(&PositionCommand::MarketTerms(terms.clone())) {
                Some(Reason::UnsupportedByModule)
            } else {
                None
            };
            if let Some(reason) = reason {
                events.push(EventBody::CommandRejected { reason });
                return Ok(());
            }
        }
        if self.registry.assets.get(&spec.quote).is_some_and(|&decimals| decimals != spec.quote_decimals) {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownAsset });
            return Ok(());
        }
        let market = MarketId(self.markets.len() as u32);
        let risk = spec.position_risk(market);
        if let Some(install) = &self.registry.position
            && (install.config.settlement_asset != spec.quote || risk.is_none())
        {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownAsset });
            return Ok(());
        }
        let made = Loader::<MatchingAbi>::create(
            &*self.loader,
            ModuleTarget::Market(market),
            &spec.module_hash,
            &spec.limits,
            &spec.config,
        )
        .and_then(|instance| {
            Slot::new(instance, spec.module_hash, spec.limits)
                .map_err(|fault| LoadError::Fault { hash: spec.module_hash, fault })
        });
        let slot = match made {
            Ok(slot) => slot,
            Err(error) => {
                // Refused or faulted at start: deterministic, so a rejection of the whole creation.
                let reason =
                    self.start_failed(ctx, ModuleTarget::Market(MarketId(self.registry.markets.len() as u32)), error)?;
                events.push(EventBody::CommandRejected { reason });
                return Ok(());
            }
        };
        if self.position.is_some()
            && let Some(risk) = risk
        {
            // Before the market exists, so a position-module fault leaves no half-made market.
            self.run_position(ctx, PositionCommand::AddMarket(risk), events)?;
            if let Some(terms) = &terms {
                self.run_position(ctx, PositionCommand::MarketTerms(terms.clone()), events)?;
                self.registry.market_terms.insert(market, terms.clone());
            }
        }
        self.markets.push(slot);
        self.registry.add_market(spec.clone());
        events.push(EventBody::MarketCreated { market, symbol: spec.symbol.clone(), module_hash: spec.module_hash });
        Ok(())
    }

    pub(crate) fn install_position(
        &mut self,
        ctx: CommandContext,
        module_hash: ModuleHash,
        limits: ModuleLimits,
        config: &exhost_guest_sdk::PositionConfig,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        if self.position.is_some() {
            events.push(EventBody::CommandRejected { reason: Reason::AlreadyInstalled });
            return Ok(());
        }
        let risks: Option<Vec<MarketRisk>> = self
            .registry
            .markets
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                (spec.quote == config.settlement_asset).then(|| spec.position_risk(MarketId(index as u32))).flatten()
            })
            .collect();
        let Some(risks) = risks else {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownAsset });
            return Ok(());
        };
        let made = Loader::<PositionAbi>::create(&*self.loader, ModuleTarget::Position, &module_hash, &limits, config)
            .and_then(|instance| {
                Slot::new(instance, module_hash, limits).map_err(|fault| LoadError::Fault { hash: module_hash, fault })
            });
        let slot = match made {
            Ok(slot) => slot,
            Err(error) => {
                let reason = self.start_failed(ctx, ModuleTarget::Position, error)?;
                events.push(EventBody::CommandRejected { reason });
                return Ok(());
            }
        };
        self.position = Some(slot);
        for risk in risks {
            let market = risk.market;
            self.run_position(ctx, PositionCommand::AddMarket(risk), events)?;
            if let Some(terms) = self.registry.market_terms.get(&market).cloned() {
                self.run_position(ctx, PositionCommand::MarketTerms(terms), events)?;
            }
        }
        self.registry.position = Some(PositionInstall { module_hash, limits, config: config.clone() });
        self.registry.assets.entry(config.settlement_asset.clone()).or_insert(6);
        events.push(EventBody::PositionModuleInstalled { module_hash });
        Ok(())
    }
}
