//! # Testbed matching module (tests only)
//!
//! The reference price-time book, with two differences the host's tests need:
//! - its state format is version 1000 (a `b"TB"` marker, then the reference
//!   book's snapshot), far from the reference book's versions, and it migrates
//!   from every version the reference book reads, so a hot swap from the
//!   reference module goes through `migrate`;
//! - it misbehaves on purpose: an order of exactly 13 lots panics (a trap),
//!   an order of exactly 17 lots loops forever (fuel exhaustion). Both after
//!   changing the book, as a real bug would.

use exhost_guest_sdk::{
    CommandContext, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery, MatchingQueryResult,
    ModuleError, export_matching_module,
};
use exhost_pricetime::PriceTimeBook;

const MARKER: &[u8] = b"TB";

pub struct Testbed(PriceTimeBook);

impl MatchingModule for Testbed {
    const STATE_VERSION: u32 = 1000;

    fn init(config: &MarketConfig) -> Result<Self, ModuleError> {
        Ok(Testbed(PriceTimeBook::init(config)?))
    }

    fn apply(&mut self, ctx: &CommandContext, command: &MatchingCommand, events: &mut Vec<MatchingEvent>) {
        self.0.apply(ctx, command, events);
        if let MatchingCommand::Place(order) = command {
            match order.qty_lots {
                13 => panic!("testbed: order {} has the unlucky size 13", order.order_id),
                17 => {
                    let mut spin = 0u64;
                    loop {
                        spin = core::hint::black_box(spin.wrapping_add(1));
                    }
                }
                _ => {}
            }
        }
    }

    fn query(&self, query: &MatchingQuery) -> MatchingQueryResult {
        self.0.query(query)
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MARKER);
        self.0.snapshot(out);
    }

    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        let rest = bytes.strip_prefix(MARKER).ok_or_else(|| ModuleError::new("testbed state must start with TB"))?;
        Ok(Testbed(PriceTimeBook::restore(rest)?))
    }

    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        match from_version {
            exhost_pricetime::STATE_VERSION => Ok(Testbed(PriceTimeBook::restore(bytes)?)),
            older => Ok(Testbed(PriceTimeBook::migrate(older, bytes)?)),
        }
    }
}

export_matching_module!(Testbed);
