//! JSON shapes of the public API, made from read-model views and events.
//! Prices, quantities and money are decimal strings; `seq`, ids and `ts` are integers.

use exhost_engine::{Event, EventBody, MarketSpec};
use exhost_guest_sdk::{MatchingEvent, OrderStatus, OrderType, Reason};
use serde::Serialize;
use serde_json::{Value, json};

use crate::node::Directory;
use crate::readmodel::{OrderView, TradeView};

#[derive(Serialize)]
pub struct FillJson {
    pub trade_id: u64,
    pub price: String,
    pub qty: String,
    pub fee: String,
    pub liquidity: &'static str,
}

#[derive(Serialize)]
pub struct OrderJson {
    pub seq: u64,
    pub order_id: u64,
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: &'static str,
    #[serde(rename = "type")]
    pub order_type: &'static str,
    pub time_in_force: &'static str,
    pub stp: &'static str,
    pub reduce_only: bool,
    /// `null` for market orders.
    pub price: Option<String>,
    pub qty: String,
    pub status: &'static str,
    pub filled_qty: String,
    pub remaining_qty: String,
    pub fills: Vec<FillJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<&'static str>,
}

/// An order as the API shows it. `seq` is the command being answered (or the
/// order's last change); `fills_of_seq` keeps only the fills of that command.
pub fn order_json(view: &OrderView, spec: &MarketSpec, seq: u64, fills_of_seq: Option<u64>) -> OrderJson {
    let (price, qty) = (&spec.price_scale, &spec.qty_scale);
    let reason = view.reason;
    OrderJson {
        seq,
        order_id: view.order_id.0,
        client_order_id: view.client_order_id.clone(),
        symbol: spec.symbol.clone(),
        side: view.side.as_str(),
        order_type: view.order_type.as_str(),
        time_in_force: view.time_in_force.as_str(),
        stp: view.self_trade_prevention.as_str(),
        reduce_only: view.reduce_only,
        price: (view.order_type == OrderType::Limit).then(|| price.format_steps(view.price_ticks)),
        qty: qty.format_steps(view.qty_lots),
        status: view.status.as_str(),
        filled_qty: qty.format_steps(view.filled_lots),
        remaining_qty: qty.format_steps(view.qty_lots - view.filled_lots),
        fills: view
            .fills
            .iter()
            .filter(|fill| fills_of_seq.is_none_or(|seq| fill.seq == seq))
            .map(|fill| FillJson {
                trade_id: fill.trade_id.0,
                price: price.format_steps(fill.price_ticks),
                qty: qty.format_steps(fill.qty_lots),
                // Fees are charged by the position module; without one, trading is free.
                fee: "0".into(),
                liquidity: fill.liquidity.as_str(),
            })
            .collect(),
        reject_reason: (view.status == OrderStatus::Rejected).then(|| reason.map_or("rejected", Reason::as_str)),
        cancel_reason: (view.status == OrderStatus::Cancelled).then(|| reason.map_or("cancelled", Reason::as_str)),
    }
}

pub fn trade_json(trade: &TradeView, spec: &MarketSpec) -> Value {
    json!({
        "seq": trade.seq,
        "trade_id": trade.trade_id.0,
        "price": spec.price_scale.format_steps(trade.price_ticks),
        "qty": spec.qty_scale.format_steps(trade.qty_lots),
        "taker_side": trade.taker_side.as_str(),
        "ts": trade.ts_ns,
    })
}

pub fn market_json(spec: &MarketSpec) -> Value {
    json!({
        "symbol": spec.symbol,
        "base": spec.base,
        "quote": spec.quote,
        "tick_size": spec.price_scale.to_string(),
        "lot_size": spec.qty_scale.to_string(),
        "matching_module": spec.module_hash.to_hex(),
        "status": "active",
    })
}

/// An event as a flat JSON object: `seq, idx, ts, type` and its fields.
pub fn event_json(event: &Event, directory: &Directory) -> Value {
    let spec = |market: exhost_engine::MarketId| directory.markets.get(market.0 as usize);
    let mut value = match &event.body {
        EventBody::UserCreated { user_id } => json!({ "type": "user_created", "user_id": user_id.0 }),
        EventBody::Deposited { user_id, asset, amount_units } => {
            let decimals = directory.assets.get(asset).copied().unwrap_or(0);
            let scale = exhost_engine::Scale { decimals, step_units: 1 };
            json!({ "type": "deposit", "user_id": user_id.0, "asset": asset, "amount": scale.format_steps(*amount_units) })
        }
        EventBody::MarketCreated { symbol, module_hash, .. } => {
            json!({ "type": "market_created", "symbol": symbol, "matching_module": module_hash.to_hex() })
        }
        EventBody::CommandRejected { reason } => json!({ "type": "command_rejected", "reason": reason.as_str() }),
        EventBody::OrderReceived {
            market,
            order_id,
            user_id,
            client_order_id,
            side,
            order_type,
            price_ticks,
            qty_lots,
            time_in_force,
            self_trade_prevention,
            reduce_only,
        } => {
            let spec = spec(*market);
            json!({
                "type": "order_received",
                "symbol": spec.map(|s| s.symbol.clone()),
                "order_id": order_id.0,
                "user_id": user_id.0,
                "client_order_id": client_order_id,
                "side": side.as_str(),
                "order_type": order_type.as_str(),
                "price": (*order_type == OrderType::Limit).then(|| spec.map(|s| s.price_scale.format_steps(*price_ticks))).flatten(),
                "qty": spec.map(|s| s.qty_scale.format_steps(*qty_lots)),
                "time_in_force": time_in_force.as_str(),
                "stp": self_trade_prevention.as_str(),
                "reduce_only": reduce_only,
            })
        }
        EventBody::Matching { market, event } => {
            let spec = spec(*market);
            let symbol = spec.map(|s| s.symbol.clone());
            let price = |ticks: u64| spec.map(|s| s.price_scale.format_steps(ticks));
            let qty = |lots: u64| spec.map(|s| s.qty_scale.format_steps(lots));
            match event {
                MatchingEvent::Order(update) => json!({
                    "type": "order_update",
                    "symbol": symbol,
                    "order_id": update.order_id.0,
                    "user_id": update.user_id.0,
                    "side": update.side.as_str(),
                    "price": (update.price_ticks > 0).then(|| price(update.price_ticks)).flatten(),
                    "qty": qty(update.qty_lots),
                    "filled_qty": qty(update.filled_lots),
                    "remaining_qty": qty(update.remaining_lots()),
                    "status": update.status.as_str(),
                    "reason": update.reason.map(Reason::as_str),
                }),
                MatchingEvent::Trade(trade) => json!({
                    "type": "trade",
                    "symbol": symbol,
                    "trade_id": trade.trade_id.0,
                    "price": price(trade.price_ticks),
                    "qty": qty(trade.qty_lots),
                    "taker_side": trade.taker_side.as_str(),
                    "maker_order_id": trade.maker_order_id.0,
                    "maker_user_id": trade.maker_user_id.0,
                    "taker_order_id": trade.taker_order_id.0,
                    "taker_user_id": trade.taker_user_id.0,
                }),
                MatchingEvent::Rejected { order_id, user_id, reason } => json!({
                    "type": "order_command_rejected",
                    "symbol": symbol,
                    "order_id": order_id.0,
                    "user_id": user_id.0,
                    "reason": reason.as_str(),
                }),
            }
        }
    };
    let object = value.as_object_mut().expect("every event renders as an object");
    object.insert("seq".into(), event.seq.into());
    object.insert("idx".into(), event.idx.into());
    object.insert("ts".into(), event.ts_ns.into());
    value
}
