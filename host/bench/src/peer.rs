//! The peer of `exhost bench engine`: the same order flow through
//! `orderbook-rs` (crates.io `orderbook-rs`, github.com/joaquinbejar/OrderBook-rs),
//! the most widely used and most actively released Rust limit order book on
//! crates.io: price-time priority, limit/market/IOC/FOK, cancel and amend,
//! integer prices and quantities, as ours.
//!
//! The flow is translated before the clock starts, so the figure is the
//! peer's own work. What differs, and in whose favour:
//! - the peer has no owners: a cancel ours refuses (the sender does not own
//!   the order) is skipped for the peer (in its favour), and it runs without
//!   self-trade prevention (ours runs `cancel_maker`);
//! - the peer emits no events and journals nothing, as ours here;
//! - the peer is built for concurrent access (lock-free levels, atomics, a
//!   clock read per order), ours is single-threaded inside wasm: that is a
//!   design difference the figure measures, not a handicap added here.

use std::collections::HashMap;
use std::time::Instant;

use exhost_engine::Command;
use exhost_guest_sdk::{OrderType, Side, TimeInForce};
use orderbook_rs::{Id, OrderBook};

enum PeerOp {
    Limit { id: u64, price: u128, qty: u64, side: orderbook_rs::Side, tif: orderbook_rs::TimeInForce },
    Market { id: u64, qty: u64, side: orderbook_rs::Side },
    Cancel { id: u64 },
}

fn side(side: Side) -> orderbook_rs::Side {
    match side {
        Side::Buy => orderbook_rs::Side::Buy,
        Side::Sell => orderbook_rs::Side::Sell,
    }
}

/// Commands (sequence numbers from `first_seq`) as peer operations; commands
/// the peer has no counterpart for (users, markets, deposits) are left out.
/// `owners` carries who placed which order from one call to the next.
fn translate(commands: &[Command], first_seq: u64, owners: &mut HashMap<u64, u64>) -> Vec<PeerOp> {
    let mut ops = Vec::with_capacity(commands.len());
    for (index, command) in commands.iter().enumerate() {
        let seq = first_seq + index as u64;
        match command {
            Command::PlaceOrder(order) => {
                owners.insert(seq, order.user_id.0);
                ops.push(match order.order_type {
                    OrderType::Market => PeerOp::Market { id: seq, qty: order.qty_lots, side: side(order.side) },
                    OrderType::Limit => PeerOp::Limit {
                        id: seq,
                        price: order.price_ticks as u128,
                        qty: order.qty_lots,
                        side: side(order.side),
                        tif: match order.time_in_force {
                            TimeInForce::Ioc => orderbook_rs::TimeInForce::Ioc,
                            TimeInForce::Fok => orderbook_rs::TimeInForce::Fok,
                            _ => orderbook_rs::TimeInForce::Gtc,
                        },
                    },
                });
            }
            Command::CancelOrder { user_id, order_id, .. } if owners.get(&order_id.0) == Some(&user_id.0) => {
                ops.push(PeerOp::Cancel { id: order_id.0 })
            }
            _ => {}
        }
    }
    ops
}

/// Seconds the peer takes for the measured flow after the set-up, and the
/// operations it refused (a market order meeting an empty side, say).
pub fn run(setup: &[Command], measured: &[Command]) -> (f64, u64) {
    let mut owners = HashMap::new();
    let setup_ops = translate(setup, 1, &mut owners);
    let measured_ops = translate(measured, setup.len() as u64 + 1, &mut owners);
    let book: OrderBook<()> = OrderBook::new("BENCH");
    let apply = |op: &PeerOp| -> bool {
        match *op {
            PeerOp::Limit { id, price, qty, side, tif } => {
                book.add_limit_order(Id::from_u64(id), price, qty, side, tif, None).is_ok()
            }
            PeerOp::Market { id, qty, side } => book.submit_market_order(Id::from_u64(id), qty, side).is_ok(),
            PeerOp::Cancel { id } => book.cancel_order(Id::from_u64(id)).is_ok(),
        }
    };
    for op in &setup_ops {
        apply(op);
    }
    let started = Instant::now();
    let mut refused = 0u64;
    for op in &measured_ops {
        if !apply(op) {
            refused += 1;
        }
    }
    (started.elapsed().as_secs_f64(), refused)
}
