//! Trader endpoints: place, cancel, amend, mass cancel, open orders.
//!
//! Everything the gateway can check without the engine is checked here, so
//! malformed requests never reach the journal: numbers must be positive
//! multiples of the market's tick and lot, the market must exist, an order id
//! must be one of the caller's open orders. What only the engine can know
//! (does a post-only order cross?) is decided there, journaled, and reported.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use exhost_engine::{Command, MarketId, MarketSpec, NewOrder};
use exhost_guest_sdk::{
    MatchingEvent, OrderId, OrderOptions, OrderStatus, OrderType, Reason, SelfTradePrevention, Side, TimeInForce,
    Trigger, TriggerBy, UserId,
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Trader, parse_json};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi;
use crate::params::parse_query;
use crate::state::AppState;
use crate::views::{OrderJson, order_json};
use exhost_engine::EventBody;
use exhost_node::Applied;
use exhost_node::readmodel::{self, OrderView};

/// Longest accepted `client_order_id`.
const CLIENT_ORDER_ID_CHARS_MAX: usize = 64;

/// A new order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PlaceRequest {
    #[schema(example = "BTC-PERP")]
    symbol: String,
    #[schema(value_type = openapi::Side)]
    side: String,
    #[serde(rename = "type")]
    #[schema(value_type = openapi::OrderType)]
    order_type: String,
    /// A multiple of the tick; limit orders only (and required there).
    #[schema(value_type = Option<openapi::Decimal>)]
    price: Option<String>,
    /// A multiple of the lot, above 0.
    #[schema(value_type = openapi::Decimal)]
    qty: String,
    /// `gtc` when not given.
    #[schema(value_type = Option<openapi::TimeInForce>)]
    time_in_force: Option<String>,
    /// The client's own id for the order, unique among its open orders.
    #[schema(pattern = "^[!-~]{1,64}$")]
    client_order_id: Option<String>,
    /// The order may only reduce the position.
    reduce_only: Option<bool>,
    /// `cancel_taker` when not given.
    #[schema(value_type = Option<openapi::Stp>)]
    stp: Option<String>,
    /// Iceberg: the book shows at most this much of the order at once (a
    /// multiple of the lot, above 0, at most `qty`); each time the shown part
    /// fills, the next part joins the back of its price level. Resting limit
    /// orders only (`gtc`, `gtd`, `post_only`).
    #[schema(value_type = Option<openapi::Decimal>)]
    display_qty: Option<String>,
    /// With `time_in_force: "gtd"` (and only then): nanoseconds since the
    /// epoch. The order is cancelled (`expired`) by the first command at or
    /// after it; one not after the time the order is sequenced is rejected.
    #[schema(minimum = 1, format = Int64)]
    expire_time: Option<u64>,
    /// With a conditional `type` (and only then): the price that makes it
    /// enter the book, a multiple of the tick. A stop buy and a take-profit
    /// sell trigger when the watched price reaches it or rises above, a stop
    /// sell and a take-profit buy when it reaches it or falls below.
    #[schema(value_type = Option<openapi::Decimal>)]
    trigger_price: Option<String>,
    /// The watched price: `mark` (when not given) or `last` (trade price).
    #[schema(value_type = Option<openapi::TriggerBy>)]
    trigger_by: Option<String>,
}

/// An order id, as the API gives it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct OrderPath {
    #[allow(dead_code)]
    order_id: u64,
}

/// A client order id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ClientIdPath {
    #[allow(dead_code)]
    #[param(pattern = "^[!-~]{1,64}$")]
    client_order_id: String,
}

fn enum_field<T>(field: &str, value: &str, parse: impl Fn(&str) -> Option<T>, allowed: &str) -> ApiResult<T> {
    parse(value).ok_or_else(|| ApiError::bad_request(format!("{field} must be one of {allowed}, not {value:?}")))
}

pub(super) fn market_of(state: &AppState, symbol: &str) -> ApiResult<(MarketId, MarketSpec)> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    directory.market(symbol).map(|(id, spec)| (id, spec.clone())).ok_or_else(|| ApiError::unknown_market(symbol))
}

fn parse_price(spec: &MarketSpec, price: &str) -> ApiResult<u64> {
    spec.price_scale.parse_steps(price).map_err(|error| {
        ApiError::decimal("invalid_price", "price", price, &format!("the tick {}", spec.price_scale), error)
    })
}

fn parse_qty(spec: &MarketSpec, qty: &str) -> ApiResult<u64> {
    spec.qty_scale.parse_steps(qty).map_err(|error| {
        ApiError::decimal("invalid_quantity", "qty", qty, &format!("the lot {}", spec.qty_scale), error)
    })
}

/// The order's state right after a command, with that command's fills, made
/// from the command's own events: the read model may already show later
/// commands of the same batch. `base` supplies what events do not repeat
/// (client order id, type); a place brings its own in `OrderReceived`.
fn order_after(
    applied: &Applied,
    order_id: OrderId,
    spec: &MarketSpec,
    base: Option<OrderView>,
) -> ApiResult<OrderJson> {
    let mut view = base
        .or_else(|| applied.events.iter().find_map(readmodel::received_view))
        .ok_or_else(|| ApiError::internal(format!("no state for order {order_id} in command {}", applied.seq)))?;
    view.fills.clear();
    for event in &applied.events {
        readmodel::apply_to_order(&mut view, event);
    }
    Ok(order_json(&view, spec, applied.seq, None))
}

/// A refusal among a command's events, if the command was refused outright.
fn refusal(applied: &Applied) -> Option<Reason> {
    applied.events.iter().find_map(|event| match &event.body {
        EventBody::CommandRejected { reason } => Some(*reason),
        EventBody::Matching { event: MatchingEvent::Rejected { reason, .. }, .. } => Some(*reason),
        _ => None,
    })
}

/// A checked order entry: the command to submit, and how to answer once it is applied.
pub(super) struct OrderEntry {
    pub command: Command,
    pub answer: Answer,
}

/// What turns an applied order command into the order's state for the client.
pub(super) struct Answer {
    spec: MarketSpec,
    /// The order before the command, for cancel and amend; a place brings its own.
    existing: Option<OrderView>,
}

impl Answer {
    /// The order after the command, or the refusal the command met.
    pub(super) fn order(self, applied: &Applied) -> ApiResult<OrderJson> {
        if let Some(reason) = refusal(applied) {
            return Err(ApiError::refused(reason));
        }
        let order_id = self.existing.as_ref().map_or(OrderId(applied.seq), |view| view.order_id);
        order_after(applied, order_id, &self.spec, self.existing)
    }
}

/// Place an order; the answer is the order after matching.
#[utoipa::path(post, path = "/v1/orders", tag = openapi::TRADING, request_body = PlaceRequest,
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "The order after matching, with this command's fills", body = OrderJson),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
        (status = 422, description = "The market's module faulted on it (`module_rejected`); nothing changed", body = ErrorBody),
    ))]
pub(super) async fn place(State(state): State<AppState>, trader: Trader) -> ApiResult<Json<OrderJson>> {
    let request: PlaceRequest = parse_json(&trader.body)?;
    let entry = place_entry(&state, trader.user_id, request)?;
    let applied = state.node.submit(entry.command).await?;
    charge_faults(&state, &trader.api_key, &applied);
    Ok(Json(entry.answer.order(&applied)?))
}

/// A command that made a module fault cost the engine a rollback: charge
/// its key many requests' worth, so a key that keeps sending them is slowed
/// down long before it can hold the engine.
pub(super) fn charge_faults(state: &AppState, api_key: &str, applied: &Applied) {
    let faulted = applied.events.iter().any(|event| {
        let reason = match &event.body {
            EventBody::CommandRejected { reason } | EventBody::MarketCommandRejected { reason, .. } => Some(*reason),
            EventBody::Matching { event: MatchingEvent::Rejected { reason, .. }, .. } => Some(*reason),
            EventBody::Matching { event: MatchingEvent::Order(update), .. } => update.reason,
            _ => None,
        };
        matches!(
            reason,
            Some(Reason::ModuleTrap | Reason::ModuleOutOfFuel | Reason::ModuleProtocol | Reason::ModuleMemoryLimit)
        )
    });
    if faulted {
        state.gate.limits.charge_fault(api_key);
    }
}

/// `GET /v1/orders/by-client-id/{client_order_id}`: the caller's latest order
/// that carried this id, open or not, so a client that timed out (or heard
/// that the outcome is unknown) can learn whether its order exists before
/// sending it again.
#[utoipa::path(get, path = "/v1/orders/by-client-id/{client_order_id}", tag = openapi::TRADING, params(ClientIdPath),
    security(("trader_signature" = [])),
    responses((status = 200, description = "The order", body = OrderJson)))]
pub(super) async fn by_client_id(
    State(state): State<AppState>,
    Path(client_order_id): Path<String>,
    trader: Trader,
) -> ApiResult<Json<OrderJson>> {
    let not_found = || ApiError::not_found(format!("no order of yours carried client_order_id {client_order_id:?}"));
    let view = readmodel::order_by_client_id(&state.store, trader.user_id, &client_order_id)?.ok_or_else(not_found)?;
    let spec = spec_of(&state, view.market)?;
    Ok(Json(order_json(&view, &spec, view.updated_seq, None)))
}

/// Check a new order against the market without the engine.
pub(super) fn place_entry(state: &AppState, user_id: UserId, request: PlaceRequest) -> ApiResult<OrderEntry> {
    let (market, spec) = market_of(state, &request.symbol)?;
    let (order, options, trigger) = new_order(market, &spec, user_id, request)?;
    let command = match trigger {
        Some(trigger) => Command::PlaceConditional { order, options, trigger },
        None if options.is_plain() => Command::PlaceOrder(order),
        None => Command::PlaceOrderWith { order, options },
    };
    Ok(OrderEntry { command, answer: Answer { spec, existing: None } })
}

/// The order a `POST /v1/orders` body asks for, checked the way the gateway
/// checks it, with `market` to look up the symbol: the whole JSON order
/// parser, apart from the server, for the fuzzer and the tests.
pub fn parse_place_order(
    body: &[u8],
    user_id: UserId,
    market: impl FnOnce(&str) -> Option<(MarketId, MarketSpec)>,
) -> ApiResult<(NewOrder, OrderOptions, Option<Trigger>)> {
    let request: PlaceRequest = parse_json(body)?;
    let (id, spec) = market(&request.symbol).ok_or_else(|| ApiError::unknown_market(&request.symbol))?;
    new_order(id, &spec, user_id, request)
}

fn new_order(
    market: MarketId,
    spec: &MarketSpec,
    user_id: UserId,
    request: PlaceRequest,
) -> ApiResult<(NewOrder, OrderOptions, Option<Trigger>)> {
    let side = enum_field("side", &request.side, Side::from_str_name, "\"buy\", \"sell\"")?;
    // A conditional type: what it becomes, and whether it is a stop.
    let conditional = |name: &str| match name {
        "stop_market" => Some((OrderType::Market, true)),
        "stop_limit" => Some((OrderType::Limit, true)),
        "take_profit_market" => Some((OrderType::Market, false)),
        "take_profit_limit" => Some((OrderType::Limit, false)),
        _ => None,
    };
    let types = "\"limit\", \"market\", \"stop_market\", \"stop_limit\", \"take_profit_market\", \"take_profit_limit\"";
    let (order_type, stop) = match conditional(&request.order_type) {
        Some((order_type, stop)) => (order_type, Some(stop)),
        None => (enum_field("type", &request.order_type, OrderType::from_str_name, types)?, None),
    };
    let invalid_trigger = |message: &str| {
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_trigger_price", message.to_string())
    };
    let trigger = match (stop, &request.trigger_price) {
        (None, Some(_)) => return Err(invalid_trigger("trigger_price goes with a stop or take-profit type only")),
        (None, None) if request.trigger_by.is_some() => {
            return Err(ApiError::bad_request("trigger_by goes with a stop or take-profit type only"));
        }
        (None, None) => None,
        (Some(_), None) => return Err(invalid_trigger("stop and take-profit orders need a trigger_price")),
        (Some(stop), Some(price)) => {
            let price_ticks = spec.price_scale.parse_steps(price).map_err(|error| {
                ApiError::decimal(
                    "invalid_trigger_price",
                    "trigger_price",
                    price,
                    &format!("the tick {}", spec.price_scale),
                    error,
                )
            })?;
            if price_ticks == 0 || price_ticks > spec.config.price_ticks_max {
                return Err(invalid_trigger("trigger_price must be above 0 and at most the market's maximum price"));
            }
            let by = match &request.trigger_by {
                None => TriggerBy::Mark,
                Some(value) => enum_field("trigger_by", value, TriggerBy::from_str_name, "\"mark\", \"last\"")?,
            };
            Some(Trigger { price_ticks, by, rises: stop == (side == Side::Buy) })
        }
    };
    let time_in_force = match &request.time_in_force {
        None => TimeInForce::Gtc,
        Some(value) => {
            let allowed = "\"gtc\", \"gtd\", \"ioc\", \"fok\", \"post_only\"";
            enum_field("time_in_force", value, TimeInForce::from_str_name, allowed)?
        }
    };
    let self_trade_prevention = match &request.stp {
        None => SelfTradePrevention::CancelTaker,
        Some(value) => enum_field(
            "stp",
            value,
            SelfTradePrevention::from_str_name,
            "\"cancel_taker\", \"cancel_maker\", \"cancel_both\"",
        )?,
    };
    let price_ticks = match (order_type, &request.price) {
        (OrderType::Limit, Some(price)) => parse_price(spec, price)?,
        (OrderType::Limit, None) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_price",
                "limit orders need a price",
            ));
        }
        (OrderType::Market, Some(_)) => return Err(ApiError::bad_request("market orders take no price")),
        (OrderType::Market, None) => 0,
    };
    if order_type == OrderType::Market && time_in_force == TimeInForce::PostOnly {
        return Err(ApiError::bad_request("a market order cannot be post_only"));
    }
    let qty_lots = parse_qty(spec, &request.qty)?;
    if price_ticks > spec.config.price_ticks_max {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_price",
            "price is above the market's maximum",
        ));
    }
    if qty_lots > spec.config.qty_lots_max {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_quantity",
            "qty is above the market's maximum",
        ));
    }
    if let Some(id) = &request.client_order_id
        && (id.is_empty()
            || id.chars().count() > CLIENT_ORDER_ID_CHARS_MAX
            || !id.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(ApiError::bad_request(format!(
            "client_order_id must be 1 to {CLIENT_ORDER_ID_CHARS_MAX} printable ASCII characters"
        )));
    }
    let rests = order_type == OrderType::Limit
        && matches!(time_in_force, TimeInForce::Gtc | TimeInForce::Gtd | TimeInForce::PostOnly);
    let invalid_display =
        |message: &str| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_display_qty", message.to_string());
    let display_lots = match &request.display_qty {
        None => None,
        Some(_) if !rests => {
            return Err(invalid_display("display_qty is for limit orders that rest (gtc, gtd, post_only)"));
        }
        Some(display) => {
            let lots = spec.qty_scale.parse_steps(display).map_err(|error| {
                ApiError::decimal(
                    "invalid_display_qty",
                    "display_qty",
                    display,
                    &format!("the lot {}", spec.qty_scale),
                    error,
                )
            })?;
            if lots == 0 || lots > qty_lots {
                return Err(invalid_display("display_qty must be above 0 and at most qty"));
            }
            Some(lots)
        }
    };
    let invalid_expiry =
        |message: &str| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_expire_time", message.to_string());
    match (time_in_force, request.expire_time) {
        (TimeInForce::Gtd, None) => return Err(invalid_expiry("time_in_force gtd needs expire_time")),
        (TimeInForce::Gtd, Some(_)) if order_type != OrderType::Limit => {
            return Err(invalid_expiry("time_in_force gtd is for limit orders"));
        }
        (TimeInForce::Gtd, Some(0)) => return Err(invalid_expiry("expire_time must be above 0")),
        (TimeInForce::Gtd, Some(expire_time)) if expire_time > i64::MAX as u64 => {
            return Err(invalid_expiry("expire_time must be at most 9223372036854775807"));
        }
        (_, Some(_)) if time_in_force != TimeInForce::Gtd => {
            return Err(invalid_expiry("expire_time goes with time_in_force gtd only"));
        }
        _ => {}
    }
    if trigger.is_some() && matches!(time_in_force, TimeInForce::Fok | TimeInForce::PostOnly) {
        return Err(ApiError::bad_request(
            "a stop or take-profit order enters the book later, so it cannot be fok or post_only",
        ));
    }
    let options = OrderOptions { display_lots, expire_time_ns: request.expire_time };
    let order = NewOrder {
        market,
        user_id,
        client_order_id: request.client_order_id,
        side,
        order_type,
        price_ticks,
        qty_lots,
        time_in_force,
        self_trade_prevention,
        reduce_only: request.reduce_only.unwrap_or(false),
    };
    Ok((order, options, trigger))
}

/// The spec of the market an order in the read model belongs to.
fn spec_of(state: &AppState, market: MarketId) -> ApiResult<MarketSpec> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    directory.markets.get(market.0 as usize).cloned().ok_or_else(|| ApiError::internal("order of an unknown market"))
}

/// The caller's open order with this id, or 404 without saying whether it exists.
fn own_open_order(state: &AppState, user_id: UserId, order_id: &str) -> ApiResult<(OrderView, MarketSpec)> {
    let not_found = || ApiError::not_found(format!("no open order {order_id} of yours"));
    let order_id: u64 = order_id.parse().map_err(|_| not_found())?;
    let view = readmodel::order(&state.store, OrderId(order_id))?
        .filter(|view| view.user_id == user_id && view.status.is_open())
        .ok_or_else(not_found)?;
    let spec = spec_of(state, view.market)?;
    Ok((view, spec))
}

/// Cancel an open order of the caller.
#[utoipa::path(delete, path = "/v1/orders/{order_id}", tag = openapi::TRADING, params(OrderPath),
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "The order, cancelled", body = OrderJson),
        (status = 422, description = "The market's module faulted on it (`module_rejected`); nothing changed", body = ErrorBody),
    ))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    trader: Trader,
) -> ApiResult<Json<OrderJson>> {
    let entry = cancel_entry(&state, trader.user_id, &order_id)?;
    let applied = state.node.submit(entry.command).await?;
    charge_faults(&state, &trader.api_key, &applied);
    Ok(Json(entry.answer.order(&applied)?))
}

pub(super) fn cancel_entry(state: &AppState, user_id: UserId, order_id: &str) -> ApiResult<OrderEntry> {
    let (view, spec) = own_open_order(state, user_id, order_id)?;
    let command = Command::CancelOrder { market: view.market, user_id, order_id: view.order_id };
    Ok(OrderEntry { command, answer: Answer { spec, existing: Some(view) } })
}

/// A new price, a new total quantity, or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AmendRequest {
    #[schema(value_type = Option<openapi::Decimal>)]
    price: Option<String>,
    /// The new total quantity (filled included).
    #[schema(value_type = Option<openapi::Decimal>)]
    qty: Option<String>,
}

/// Amend an open order; a higher quantity or a new price loses time priority.
#[utoipa::path(patch, path = "/v1/orders/{order_id}", tag = openapi::TRADING, params(OrderPath), request_body = AmendRequest,
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "The order after the amend", body = OrderJson),
        (status = 422, description = "The market's module faulted on it (`module_rejected`); nothing changed", body = ErrorBody),
    ))]
pub(super) async fn amend(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    trader: Trader,
) -> ApiResult<Json<OrderJson>> {
    let request: AmendRequest = parse_json(&trader.body)?;
    let entry = amend_entry(&state, trader.user_id, &order_id, request)?;
    let applied = state.node.submit(entry.command).await?;
    charge_faults(&state, &trader.api_key, &applied);
    Ok(Json(entry.answer.order(&applied)?))
}

pub(super) fn amend_entry(
    state: &AppState,
    user_id: UserId,
    order_id: &str,
    request: AmendRequest,
) -> ApiResult<OrderEntry> {
    let (view, spec) = own_open_order(state, user_id, order_id)?;
    if request.price.is_none() && request.qty.is_none() {
        return Err(ApiError::bad_request("give a new price, a new qty, or both"));
    }
    let price_ticks = request.price.as_deref().map(|price| parse_price(&spec, price)).transpose()?;
    let qty_lots = request.qty.as_deref().map(|qty| parse_qty(&spec, qty)).transpose()?;
    let command = Command::AmendOrder { market: view.market, user_id, order_id: view.order_id, price_ticks, qty_lots };
    Ok(OrderEntry { command, answer: Answer { spec, existing: Some(view) } })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SymbolQuery {
    /// One market only.
    #[param(example = "BTC-PERP")]
    symbol: Option<String>,
}

/// Cancel all the caller's open orders, of one market or of all.
#[utoipa::path(delete, path = "/v1/orders", tag = openapi::TRADING, params(SymbolQuery),
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "`{seq, cancelled: [order_id], failed: [{symbol, reason}]}`: `failed` names the markets whose module faulted and kept their orders", body = Object),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
    ))]
pub(super) async fn mass_cancel(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    trader: Trader,
) -> ApiResult<Json<Value>> {
    let query: SymbolQuery = parse_query(raw.as_deref())?;
    let market = query.symbol.as_deref().map(|symbol| market_of(&state, symbol)).transpose()?.map(|(id, _)| id);
    let applied = state.node.submit(Command::MassCancel { market, user_id: trader.user_id }).await?;
    charge_faults(&state, &trader.api_key, &applied);
    if let Some(reason) = refusal(&applied) {
        return Err(ApiError::refused(reason));
    }
    let cancelled: Vec<u64> = applied
        .events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Matching { event: MatchingEvent::Order(update), .. }
                if update.status == OrderStatus::Cancelled =>
            {
                Some(update.order_id.0)
            }
            _ => None,
        })
        .collect();
    // Markets whose module faulted kept their orders; the caller must know which.
    let failed: Vec<Value> = {
        let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
        applied
            .events
            .iter()
            .filter_map(|event| match &event.body {
                EventBody::MarketCommandRejected { market, reason, .. } => Some(json!({
                    "symbol": directory.markets.get(market.0 as usize).map(|spec| spec.symbol.clone()),
                    "reason": reason.as_str(),
                })),
                _ => None,
            })
            .collect()
    };
    Ok(Json(json!({ "seq": applied.seq, "cancelled": cancelled, "failed": failed })))
}

/// The caller's open orders.
#[utoipa::path(get, path = "/v1/orders", tag = openapi::TRADING, params(SymbolQuery),
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "The open orders", body = [OrderJson]),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
    ))]
pub(super) async fn open_orders(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    trader: Trader,
) -> ApiResult<Json<Vec<OrderJson>>> {
    let query: SymbolQuery = parse_query(raw.as_deref())?;
    let market = query.symbol.as_deref().map(|symbol| market_of(&state, symbol)).transpose()?.map(|(id, _)| id);
    let views = readmodel::open_orders(&state.store, trader.user_id, market)?;
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        views
            .iter()
            .filter_map(|view| {
                let spec = directory.markets.get(view.market.0 as usize)?;
                Some(order_json(view, spec, view.updated_seq, None))
            })
            .collect(),
    ))
}
