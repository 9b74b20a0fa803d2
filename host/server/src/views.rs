//! JSON shapes of the public API, made from read-model views and events.
//! Prices, quantities and money are decimal strings; `seq`, ids and `ts` are integers.

use exhost_engine::{Event, EventBody, MarketSpec};
use exhost_guest_sdk::{
    AccountState, LedgerState, MarketId, MatchingEvent, OrderStatus, OrderType, PositionEvent, Reason, Side, Trigger,
};
use serde::Serialize;
use serde_json::{Value, json};

use exhost_node::Directory;
use exhost_node::readmodel::{OrderView, TradeView};

/// One fill of an order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FillJson {
    pub trade_id: u64,
    #[schema(value_type = crate::openapi::Decimal)]
    pub price: String,
    #[schema(value_type = crate::openapi::Decimal)]
    pub qty: String,
    /// In the quote asset; negative is a rebate.
    #[schema(value_type = crate::openapi::SignedDecimal)]
    pub fee: String,
    /// `maker` or `taker`.
    #[schema(pattern = "^(maker|taker)$")]
    pub liquidity: &'static str,
}

/// An order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OrderJson {
    pub seq: u64,
    pub order_id: u64,
    pub client_order_id: Option<String>,
    pub symbol: String,
    #[schema(value_type = crate::openapi::Side)]
    pub side: &'static str,
    #[serde(rename = "type")]
    #[schema(value_type = crate::openapi::OrderType)]
    pub order_type: &'static str,
    #[schema(value_type = crate::openapi::TimeInForce)]
    pub time_in_force: &'static str,
    #[schema(value_type = crate::openapi::Stp)]
    pub stp: &'static str,
    pub reduce_only: bool,
    /// `null` for market orders.
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub price: Option<String>,
    #[schema(value_type = crate::openapi::Decimal)]
    pub qty: String,
    /// `new`, `partially_filled`, `filled`, `cancelled`, `rejected`, ...
    pub status: &'static str,
    #[schema(value_type = crate::openapi::Decimal)]
    pub filled_qty: String,
    #[schema(value_type = crate::openapi::Decimal)]
    pub remaining_qty: String,
    pub fills: Vec<FillJson>,
    /// An iceberg's display quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub display_qty: Option<String>,
    /// A `gtd` order's expire time (ns since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<u64>,
    /// A stop or take-profit order's trigger price.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub trigger_price: Option<String>,
    /// The price it watches: `mark` or `last`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::TriggerBy>)]
    pub trigger_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<&'static str>,
}

/// The API name of an order's type: what it is, or, for a conditional
/// order, what it becomes and on which side of its trigger.
pub fn order_type_name(order_type: OrderType, side: Side, trigger: Option<&Trigger>) -> &'static str {
    let Some(trigger) = trigger else { return order_type.as_str() };
    let stop = trigger.rises == (side == Side::Buy);
    match (stop, order_type) {
        (true, OrderType::Market) => "stop_market",
        (true, OrderType::Limit) => "stop_limit",
        (false, OrderType::Market) => "take_profit_market",
        (false, OrderType::Limit) => "take_profit_limit",
    }
}

/// An order as the API shows it. `seq` is the command being answered (or the
/// order's last change); `fills_of_seq` keeps only the fills of that command.
pub fn order_json(view: &OrderView, spec: &MarketSpec, seq: u64, fills_of_seq: Option<u64>) -> OrderJson {
    let (price, qty) = (&spec.price_scale, &spec.qty_scale);
    let money = exhost_engine::Scale { decimals: spec.quote_decimals, step_units: 1 };
    let reason = view.reason;
    OrderJson {
        seq,
        order_id: view.order_id.0,
        client_order_id: view.client_order_id.clone(),
        symbol: spec.symbol.clone(),
        side: view.side.as_str(),
        order_type: order_type_name(view.order_type, view.side, view.trigger.as_ref()),
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
                fee: money.format_signed_units(fill.fee_units),
                liquidity: fill.liquidity.as_str(),
            })
            .collect(),
        display_qty: view.options.display_lots.map(|lots| qty.format_steps(lots)),
        expire_time: view.options.expire_time_ns,
        trigger_price: view.trigger.map(|trigger| price.format_steps(trigger.price_ticks)),
        trigger_by: view.trigger.map(|trigger| trigger.by.as_str()),
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

pub fn market_json(spec: &MarketSpec, terms: Option<&exhost_guest_sdk::MarketTerms>) -> Value {
    let rate = |rate: u64| rate_text(rate as i128);
    let mut value = json!({
        "symbol": spec.symbol,
        "base": spec.base,
        "quote": spec.quote,
        "tick_size": spec.price_scale.to_string(),
        "lot_size": spec.qty_scale.to_string(),
        "quote_decimals": spec.quote_decimals,
        "matching_module": spec.module_hash.to_hex(),
        "status": "active",
        "risk": {
            "initial_margin": rate(spec.risk.initial_margin_rate),
            "maintenance_margin": rate(spec.risk.maintenance_margin_rate),
            "maker_fee": rate(spec.risk.maker_fee_rate),
            "taker_fee": rate(spec.risk.taker_fee_rate),
            "liquidation_fee": rate(spec.risk.liquidation_fee_rate),
        },
    });
    if let Some(terms) = terms {
        let money = exhost_engine::Scale { decimals: spec.quote_decimals, step_units: 1 };
        let tiers: Vec<Value> = terms
            .tiers
            .iter()
            .map(|tier| {
                json!({
                    "notional_max": money.format_steps(tier.notional_max_units.min(u64::MAX as u128) as u64),
                    "initial_margin": rate(tier.initial_margin_rate),
                    "maintenance_margin": rate(tier.maintenance_margin_rate),
                })
            })
            .collect();
        let risk = &mut value["risk"];
        risk["tiers"] = json!(tiers);
        risk["funding_interval_hours"] = json!(terms.funding_interval_ns / 3_600_000_000_000);
        risk["funding_rate_cap"] = json!(rate(terms.funding_rate_cap));
    }
    value
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
        EventBody::PositionModuleInstalled { module_hash } => {
            json!({ "type": "position_module_installed", "module": module_hash.to_hex() })
        }
        EventBody::Position(event) => position_event_json(event, directory),
        EventBody::ModuleActivated { target, from, to, migrated } => json!({
            "type": "module_activated", "target": target_json(target, directory), "from": from.to_hex(),
            "to": to.to_hex(), "migrated": migrated,
        }),
        EventBody::ModuleActivationRefused { target, module_hash, reason } => json!({
            "type": "module_activation_refused", "target": target_json(target, directory),
            "module": module_hash.to_hex(), "reason": reason,
        }),
        EventBody::MarketCommandRejected { market, user_id, reason } => json!({
            "type": "market_command_rejected", "symbol": spec(*market).map(|s| s.symbol.clone()),
            "user_id": user_id.0, "reason": reason.as_str(),
        }),
        EventBody::MassCancelled { market, user_id, orders } => json!({
            "type": "mass_cancelled", "symbol": market.and_then(|m| spec(m).map(|s| s.symbol.clone())),
            "user_id": user_id.0, "orders": orders,
        }),
        EventBody::NoEffect => json!({ "type": "no_effect" }),
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
                MatchingEvent::Level { side, price_ticks, qty_lots } => json!({
                    "type": "level",
                    "symbol": symbol,
                    "side": side.as_str(),
                    "price": price(*price_ticks),
                    "qty": qty(*qty_lots),
                }),
                // The engine keeps wake times to itself; none reaches the log.
                MatchingEvent::Wake { at_ts_ns } => json!({ "type": "wake", "symbol": symbol, "at": at_ts_ns }),
            }
        }
        EventBody::OrderOptions { market, order_id, user_id, display_lots, expire_time_ns } => {
            let spec = spec(*market);
            json!({
                "type": "order_options",
                "symbol": spec.map(|s| s.symbol.clone()),
                "order_id": order_id.0,
                "user_id": user_id.0,
                "display_qty": display_lots.and_then(|lots| spec.map(|s| s.qty_scale.format_steps(lots))),
                "expire_time": expire_time_ns,
            })
        }
        EventBody::OrderTrigger { market, order_id, user_id, trigger } => {
            let spec = spec(*market);
            json!({
                "type": "order_trigger",
                "symbol": spec.map(|s| s.symbol.clone()),
                "order_id": order_id.0,
                "user_id": user_id.0,
                "trigger_price": spec.map(|s| s.price_scale.format_steps(trigger.price_ticks)),
                "trigger_by": trigger.by.as_str(),
                "rises": trigger.rises,
            })
        }
    };
    let object = value.as_object_mut().expect("every event renders as an object");
    object.insert("seq".into(), event.seq.into());
    object.insert("idx".into(), event.idx.into());
    object.insert("ts".into(), event.ts_ns.into());
    value
}

/// An event as one user may see it: their own side of a trade only. The
/// story (finding 10): trades on the user channel and in the account
/// history carried the other side's user id and order id, so a trader could
/// map who they traded with. The operator's event log keeps both sides.
pub fn user_event_json(event: &Event, directory: &Directory, user_id: exhost_guest_sdk::UserId) -> Value {
    let mut value = event_json(event, directory);
    match &event.body {
        EventBody::Matching { event: MatchingEvent::Trade(trade), .. } => {
            let object = value.as_object_mut().expect("every event renders as an object");
            for field in ["maker_order_id", "maker_user_id", "taker_order_id", "taker_user_id"] {
                object.remove(field);
            }
            let (order_id, liquidity, side) = if trade.taker_user_id == user_id {
                (trade.taker_order_id, "taker", trade.taker_side)
            } else {
                (trade.maker_order_id, "maker", trade.taker_side.opposite())
            };
            object.insert("order_id".into(), order_id.0.into());
            object.insert("liquidity".into(), liquidity.into());
            object.insert("side".into(), side.as_str().into());
        }
        EventBody::Position(PositionEvent::AutoDeleverage { liquidated_user_id, .. }) => {
            let object = value.as_object_mut().expect("every event renders as an object");
            object.remove("liquidated_user_id");
            object.remove("counterparty_user_id");
            let role = if *liquidated_user_id == user_id { "liquidated" } else { "counterparty" };
            object.insert("role".into(), role.into());
        }
        _ => {}
    }
    value
}

fn target_json(target: &exhost_engine::ModuleTarget, directory: &Directory) -> Value {
    match target {
        exhost_engine::ModuleTarget::Market(market) => {
            json!(directory.markets.get(market.0 as usize).map(|s| s.symbol.clone()))
        }
        exhost_engine::ModuleTarget::Position => json!("positions"),
    }
}

/// How money of the settlement asset is written.
pub fn money_scale(directory: &Directory) -> exhost_engine::Scale {
    let decimals = directory.position_asset().and_then(|asset| directory.assets.get(asset).copied()).unwrap_or(6);
    exhost_engine::Scale { decimals, step_units: 1 }
}

fn signed_lots(spec: Option<&MarketSpec>, size_lots: i64) -> Option<String> {
    spec.map(|s| {
        let text = s.qty_scale.format_steps(size_lots.unsigned_abs());
        if size_lots < 0 { format!("-{text}") } else { text }
    })
}

/// A rate in 1e-8 units as a decimal string.
pub fn rate_text(rate: i128) -> String {
    exhost_engine::Scale { decimals: 8, step_units: 1 }.format_signed_units(rate)
}

pub fn account_json(state: &AccountState, seq: u64, directory: &Directory) -> Value {
    let money = money_scale(directory);
    let asset = directory.position_asset().unwrap_or("USD").to_string();
    let available = state.available_units.min(state.balance_units).max(0);
    let positions: Vec<Value> = state
        .positions
        .iter()
        .filter(|p| p.size_lots != 0 || p.realized_pnl_units != 0)
        .map(|p| {
            let spec = directory.markets.get(p.market.0 as usize);
            json!({
                "symbol": spec.map(|s| s.symbol.clone()),
                "size": signed_lots(spec, p.size_lots),
                "entry_price": (p.size_lots != 0).then(|| spec.map(|s| s.price_scale.format_steps(p.entry_price_ticks))).flatten(),
                "mark_price": (p.size_lots != 0).then(|| spec.map(|s| s.price_scale.format_steps(p.mark_price_ticks))).flatten(),
                "unrealized_pnl": money.format_signed_units(p.unrealized_pnl_units),
                "realized_pnl": money.format_signed_units(p.realized_pnl_units),
                "liquidation_price": p.liquidation_price_ticks.and_then(|t| spec.map(|s| s.price_scale.format_steps(t))),
            })
        })
        .collect();
    json!({
        "user_id": state.user_id.0,
        "seq": seq,
        "balances": { asset: {
            "total": money.format_signed_units(state.balance_units),
            "available": money.format_signed_units(available),
            "reserved": money.format_signed_units(state.initial_margin_units),
        }},
        "positions": positions,
        "equity": money.format_signed_units(state.equity_units),
        "unrealized_pnl": money.format_signed_units(state.unrealized_pnl_units),
        "initial_margin": money.format_signed_units(state.initial_margin_units),
        "maintenance_margin": money.format_signed_units(state.maintenance_margin_units),
        "margin_ratio": state.margin_ratio.map(rate_text),
    })
}

pub fn ledger_json(ledger: &LedgerState, seq: u64, directory: &Directory) -> Value {
    let money = money_scale(directory);
    let asset = directory.position_asset().unwrap_or("USD").to_string();
    json!({
        "seq": seq,
        asset: {
            "deposits": money.format_signed_units(ledger.deposits_units),
            "withdrawals": money.format_signed_units(ledger.withdrawals_units),
            "fees": money.format_signed_units(ledger.fees_units),
            "insurance_fund": money.format_signed_units(ledger.insurance_fund_units),
            "user_balances": money.format_signed_units(ledger.user_balances_units),
            "unrealized_pnl": money.format_signed_units(ledger.unrealized_pnl_units),
            "imbalance": money.format_signed_units(ledger.imbalance()),
        }
    })
}

fn position_event_json(event: &PositionEvent, directory: &Directory) -> Value {
    let money = money_scale(directory);
    let spec = |market: MarketId| directory.markets.get(market.0 as usize);
    let symbol = |market: MarketId| spec(market).map(|s| s.symbol.clone());
    let price = |market: MarketId, ticks: u64| spec(market).map(|s| s.price_scale.format_steps(ticks));
    let qty = |market: MarketId, lots: u64| spec(market).map(|s| s.qty_scale.format_steps(lots));
    match event {
        PositionEvent::Balance { user_id, balance_units, delta_units, cause } => json!({
            "type": "balance", "user_id": user_id.0, "balance": money.format_signed_units(*balance_units),
            "delta": money.format_signed_units(*delta_units), "cause": cause.as_str(),
        }),
        PositionEvent::Position { user_id, market, size_lots, cost, realized_pnl_units } => {
            let entry = if *size_lots == 0 { 0 } else { (cost / *size_lots as i128).unsigned_abs() as u64 };
            json!({
                "type": "position", "user_id": user_id.0, "symbol": symbol(*market),
                "size": signed_lots(spec(*market), *size_lots), "entry_price": price(*market, entry),
                "cost": cost.to_string(), "realized_pnl": money.format_signed_units(*realized_pnl_units),
            })
        }
        PositionEvent::Account(state) => {
            let mut value = account_json(state, 0, directory);
            let object = value.as_object_mut().expect("an object");
            object.remove("seq");
            object.insert("type".into(), "account".into());
            value
        }
        PositionEvent::MarkPrice { market, price_ticks } => {
            json!({ "type": "mark_price", "symbol": symbol(*market), "price": price(*market, *price_ticks) })
        }
        PositionEvent::IndexPrice { market, index_ticks, mid_ticks, premium_rate, mark_price_ticks } => json!({
            "type": "index_price", "symbol": symbol(*market), "price": price(*market, *index_ticks),
            "mid_price": mid_ticks.and_then(|mid| price(*market, mid)),
            "premium": premium_rate.map(|rate| rate_text(rate as i128)),
            "mark_price": price(*market, *mark_price_ticks),
        }),
        PositionEvent::LiquidationStarted { user_id, equity_units, maintenance_margin_units } => json!({
            "type": "liquidation", "user_id": user_id.0, "equity": money.format_signed_units(*equity_units),
            "maintenance_margin": money.format_signed_units(*maintenance_margin_units),
        }),
        PositionEvent::LiquidationOrder { user_id, market, order_id, side, qty_lots, bankruptcy_price_ticks } => {
            json!({
                "type": "liquidation_order", "user_id": user_id.0, "symbol": symbol(*market), "order_id": order_id.0,
                "side": side.as_str(), "qty": qty(*market, *qty_lots), "bankruptcy_price": price(*market, *bankruptcy_price_ticks),
            })
        }
        PositionEvent::AutoDeleverage {
            market,
            liquidated_user_id,
            counterparty_user_id,
            liquidated_side,
            qty_lots,
            price_ticks,
        } => json!({
            "type": "auto_deleverage", "symbol": symbol(*market), "liquidated_user_id": liquidated_user_id.0,
            "counterparty_user_id": counterparty_user_id.0, "liquidated_side": liquidated_side.as_str(),
            "qty": qty(*market, *qty_lots), "price": price(*market, *price_ticks),
        }),
        PositionEvent::InsuranceFund { balance_units, delta_units, user_id } => json!({
            "type": "insurance_fund", "balance": money.format_signed_units(*balance_units),
            "delta": money.format_signed_units(*delta_units), "user_id": user_id.map(|u| u.0),
        }),
        PositionEvent::Funding { market, rate, mark_price_ticks, paid_units, received_units } => json!({
            "type": "funding", "symbol": symbol(*market), "rate": rate_text(*rate as i128),
            "mark_price": price(*market, *mark_price_ticks), "paid": money.format_signed_units(*paid_units),
            "received": money.format_signed_units(*received_units),
        }),
        PositionEvent::FundingIndex { market, rate, mark_price_ticks, index_delta, index } => json!({
            "type": "funding", "symbol": symbol(*market), "rate": rate_text(*rate as i128),
            "mark_price": price(*market, *mark_price_ticks), "index_delta": index_delta.to_string(),
            "index": index.to_string(),
        }),
        PositionEvent::FundingSettled { user_id, market, index, amount_units } => json!({
            "type": "funding_settled", "user_id": user_id.0, "symbol": symbol(*market), "index": index.to_string(),
            "amount": money.format_signed_units(*amount_units),
        }),
        PositionEvent::Exposure { user_id, market, exposure } => {
            let k = spec(*market).and_then(|spec| spec.units_per_tick_lot()).unwrap_or(0) as i128;
            json!({
                "type": "exposure", "user_id": user_id.0, "symbol": symbol(*market),
                "buy_qty": qty(*market, exposure.buy_lots),
                "buy_value": money.format_signed_units(exposure.buy_notional as i128 * k),
                "sell_qty": qty(*market, exposure.sell_lots),
                "sell_value": money.format_signed_units(exposure.sell_notional as i128 * k),
            })
        }
        PositionEvent::Ledger(ledger) => {
            let mut value = ledger_json(ledger, 0, directory);
            let object = value.as_object_mut().expect("an object");
            object.remove("seq");
            object.insert("type".into(), "ledger".into());
            value
        }
        PositionEvent::Fee { user_id, market, trade_id, fee_units } => json!({
            "type": "fee", "user_id": user_id.0, "symbol": symbol(*market), "trade_id": trade_id.0,
            "fee": money.format_signed_units(*fee_units),
        }),
        PositionEvent::Rejected { user_id, order_id, reason } => json!({
            "type": "position_rejected", "user_id": user_id.0, "order_id": order_id.map(|o| o.0), "reason": reason.as_str(),
        }),
    }
}
