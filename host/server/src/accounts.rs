//! Accounts and risk: withdrawals, account state (now or as of a past point),
//! account history, the ledger, mark prices, funding, the insurance fund.
//! Reads come from the read model, which is built only from events.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use exhost_engine::{Command, EngineError, EventBody, Scale};
use exhost_guest_sdk::{PositionEvent, PositionQuery, PositionQueryResult, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Body, Operator, Trader, parse_json};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi;
use crate::params::{Params, parse_query};
use crate::state::AppState;
use crate::trading::market_of;
use crate::views::{account_json, event_json, ledger_json, money_scale, user_event_json};
use exhost_node::readmodel;

/// Most events one page of account history may hold.
const HISTORY_LIMIT_MAX: usize = 1_000;

/// The settlement asset and its scale, or 409 when no position module is installed.
fn settlement(state: &AppState) -> ApiResult<(String, Scale)> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    let asset = directory
        .position_asset()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "no_module", "no position module is installed"))?
        .to_string();
    Ok((asset, money_scale(&directory)))
}

fn parse_amount(scale: &Scale, text: &str) -> ApiResult<u64> {
    scale
        .parse_steps(text)
        .map_err(|error| ApiError::decimal("invalid_amount", "amount", text, &scale.to_string(), error))
}

/// Money out of the caller's account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawalRequest {
    /// The settlement asset.
    #[schema(example = "USDT")]
    asset: String,
    #[schema(value_type = openapi::Decimal)]
    amount: String,
}

/// Withdraw; refused if it would breach the initial margin.
#[utoipa::path(post, path = "/v1/withdrawals", tag = openapi::ACCOUNTS, request_body = WithdrawalRequest,
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "`{seq, status: accepted|rejected, reject_reason?}`", body = Object),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn withdraw(State(state): State<AppState>, trader: Trader) -> ApiResult<Json<Value>> {
    let request: WithdrawalRequest = parse_json(&trader.body)?;
    let (asset, scale) = settlement(&state)?;
    if request.asset != asset {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_asset", format!("balances are kept in {asset}")));
    }
    let amount_units = parse_amount(&scale, &request.amount)?;
    let applied =
        state.node.submit(Command::Withdraw { user_id: trader.user_id, asset: request.asset, amount_units }).await?;
    let refusal = applied.events.iter().find_map(|event| match &event.body {
        EventBody::Position(PositionEvent::Rejected { reason, .. }) | EventBody::CommandRejected { reason } => {
            Some(*reason)
        }
        _ => None,
    });
    Ok(Json(match refusal {
        None => json!({ "seq": applied.seq, "status": "accepted", "amount": request.amount }),
        Some(reason) => json!({ "seq": applied.seq, "status": "rejected", "reject_reason": reason.as_str() }),
    }))
}

/// A point in the past: at most one of `at_seq` and `at_time`; the newest without either.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AsOf {
    /// As of this sequence number (at most the last one).
    #[serde(default, deserialize_with = "crate::params::int64")]
    at_seq: Option<u64>,
    /// As of the last command at or before this time (ns since the Unix epoch).
    #[serde(default, deserialize_with = "crate::params::int64")]
    at_time: Option<u64>,
    /// `replay`: answer from the position module rebuilt at that point (snapshot
    /// plus journal) instead of the read model, to cross-check the two.
    #[param(pattern = "^(read_model|replay)$")]
    source: Option<String>,
}

impl AsOf {
    /// The sequence number asked for: `at_seq`, the last one at or before
    /// `at_time` (ns), or the newest.
    fn resolve(&self, state: &AppState) -> ApiResult<u64> {
        let last = state.store.journal_last_seq()?.unwrap_or(0);
        match (self.at_seq, self.at_time) {
            (Some(_), Some(_)) => Err(ApiError::bad_request("give at_seq or at_time, not both")),
            (Some(seq), None) if seq > last => {
                Err(ApiError::bad_request(format!("at_seq {seq} is beyond the last sequence {last}")))
            }
            (Some(seq), None) => Ok(seq),
            (None, Some(ts)) => state.store.journal_seq_at_time(ts).map_err(ApiError::from),
            (None, None) => Ok(last),
        }
    }

    /// Whether to answer from a replay instead of the read model.
    fn replay(&self) -> ApiResult<bool> {
        match self.source.as_deref() {
            None | Some("read_model") => Ok(false),
            Some("replay") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("source must be read_model or replay, not {other:?}"))),
        }
    }
}

/// The position module's answer to `query` as of `seq`, rebuilt from the
/// snapshot before it and the journal; `None` before a position module was
/// installed, where the read model has no accounts either.
async fn replayed(state: &AppState, seq: u64, query: PositionQuery) -> ApiResult<Option<PositionQueryResult>> {
    crate::pit::at_seq(state, seq, move |engine| match engine.query_position(&query) {
        Ok(answer) => Ok(Some(answer)),
        Err(EngineError::NoPositionModule) => Ok(None),
        Err(error) => Err(error.into()),
    })
    .await
}

async fn account_answer(state: &AppState, user_id: UserId, as_of: &AsOf) -> ApiResult<Json<Value>> {
    settlement(state)?;
    let replay = as_of.replay()?;
    let seq = as_of.resolve(state)?;
    let found = if replay {
        match replayed(state, seq, PositionQuery::Account { user_id }).await? {
            Some(PositionQueryResult::Account(account)) => account,
            _ => None,
        }
    } else {
        let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
        readmodel::account_at(&state.store, &directory, user_id, seq)?
    };
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    let account = found.unwrap_or_else(|| exhost_guest_sdk::AccountState {
        user_id,
        balance_units: 0,
        unrealized_pnl_units: 0,
        equity_units: 0,
        initial_margin_units: 0,
        maintenance_margin_units: 0,
        available_units: 0,
        margin_ratio: None,
        positions: Vec::new(),
    });
    Ok(Json(account_json(&account, seq, &directory)))
}

/// The caller's account, now or as of a past point.
#[utoipa::path(get, path = "/v1/account", tag = openapi::ACCOUNTS, params(AsOf),
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "`{user_id, seq, balance, unrealized_pnl, equity, initial_margin, maintenance_margin, available, margin_ratio, positions: [...]}`", body = Object),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn account(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    trader: Trader,
) -> ApiResult<Json<Value>> {
    let as_of: AsOf = parse_query(raw.as_deref())?;
    account_answer(&state, trader.user_id, &as_of).await
}

/// Any user's account, now or as of a past point.
#[utoipa::path(get, path = "/admin/v1/accounts/{user_id}", tag = openapi::OPERATOR, params(UserPath, AsOf),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The account, as `GET /v1/account` shows it", body = Object),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn admin_account(
    State(state): State<AppState>,
    _: Operator,
    Path(user_id): Path<String>,
    Params(as_of): Params<AsOf>,
) -> ApiResult<Json<Value>> {
    let user_id: u64 = user_id.parse().map_err(|_| ApiError::not_found(format!("no user {user_id}")))?;
    if !state.node.directory.read().unwrap_or_else(|p| p.into_inner()).user_ids.contains_key(&UserId(user_id)) {
        return Err(ApiError::not_found(format!("no user {user_id}")));
    }
    account_answer(&state, UserId(user_id), &as_of).await
}

/// A user id.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct UserPath {
    #[allow(dead_code)]
    user_id: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// One market only.
    #[param(example = "BTC-PERP")]
    symbol: Option<String>,
    /// From this sequence number on.
    #[param(default = 1)]
    #[serde(default, deserialize_with = "crate::params::int64")]
    from_seq: Option<u64>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// The caller's change messages in sequence order, a page at a time.
#[utoipa::path(get, path = "/v1/account/history", tag = openapi::ACCOUNTS, params(HistoryQuery),
    security(("trader_signature" = [])),
    responses(
        (status = 200, description = "`{events: [...], next_seq}`", body = Object),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
    ))]
pub(super) async fn history(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    trader: Trader,
) -> ApiResult<Json<Value>> {
    let query: HistoryQuery = parse_query(raw.as_deref())?;
    let market = query.symbol.as_deref().map(|symbol| market_of(&state, symbol)).transpose()?.map(|(id, _)| id);
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {HISTORY_LIMIT_MAX}")));
    }
    let events = readmodel::history(&state.store, trader.user_id, market, query.from_seq.unwrap_or(1), limit)?;
    let next_seq = events.last().map(|event| event.seq + 1);
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    let events: Vec<Value> = events.iter().map(|event| user_event_json(event, &directory, trader.user_id)).collect();
    Ok(Json(json!({ "events": events, "next_seq": next_seq })))
}

/// The exchange's books per asset; `imbalance` is 0 at every sequence. Now or as of a past point.
#[utoipa::path(get, path = "/admin/v1/ledger", tag = openapi::OPERATOR, params(AsOf),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, <asset>: {deposits, withdrawals, fees, insurance_fund, user_balances, unrealized_pnl, imbalance}}`", body = Object),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn ledger(
    State(state): State<AppState>,
    _: Operator,
    Params(as_of): Params<AsOf>,
) -> ApiResult<Json<Value>> {
    settlement(&state)?;
    let replay = as_of.replay()?;
    let seq = as_of.resolve(&state)?;
    let ledger = if replay {
        match replayed(&state, seq, PositionQuery::Ledger).await? {
            Some(PositionQueryResult::Ledger(ledger)) => ledger,
            _ => Default::default(),
        }
    } else {
        readmodel::ledger_at(&state.store, seq)?.map(|(_, ledger)| ledger).unwrap_or_default()
    };
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(ledger_json(&ledger, seq, &directory)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkRequest {
    #[schema(example = "BTC-PERP")]
    symbol: String,
    /// A multiple of the market's tick.
    #[schema(value_type = openapi::Decimal)]
    price: String,
}

/// Set a market's mark price; accounts below maintenance margin are liquidated in the same command.
#[utoipa::path(post, path = "/admin/v1/mark-prices", tag = openapi::OPERATOR, request_body = MarkRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, liquidations: [...]}`", body = Object),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn mark_price(State(state): State<AppState>, _: Operator, Body(body): Body) -> ApiResult<Json<Value>> {
    let request: MarkRequest = parse_json(&body)?;
    settlement(&state)?;
    let (market, spec) = market_of(&state, &request.symbol)?;
    let price_ticks = spec.price_scale.parse_steps(&request.price).map_err(|error| {
        ApiError::decimal("invalid_price", "price", &request.price, &format!("the tick {}", spec.price_scale), error)
    })?;
    if price_ticks > spec.config.price_ticks_max {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_price", "price is above the market's maximum"));
    }
    let applied = state.node.submit(Command::MarkPrice { market, price_ticks }).await?;
    if let Some(reason) = applied.events.iter().find_map(|e| match &e.body {
        EventBody::CommandRejected { reason } => Some(*reason),
        _ => None,
    }) {
        return Err(ApiError::refused(reason));
    }
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(json!({ "seq": applied.seq, "liquidations": liquidations(&applied.events, &directory) })))
}

/// The liquidation events of a command that moved a mark, as JSON.
fn liquidations(events: &[exhost_engine::Event], directory: &exhost_node::Directory) -> Vec<Value> {
    events
        .iter()
        .filter(|event| {
            matches!(
                event.body,
                EventBody::Position(
                    PositionEvent::LiquidationStarted { .. }
                        | PositionEvent::LiquidationOrder { .. }
                        | PositionEvent::AutoDeleverage { .. }
                        | PositionEvent::InsuranceFund { .. }
                )
            )
        })
        .map(|event| event_json(event, directory))
        .collect()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IndexRequest {
    #[schema(example = "BTC-PERP")]
    symbol: String,
    /// The index price: a multiple of the market's tick.
    #[schema(value_type = openapi::Decimal)]
    price: String,
}

/// Feed a market's index price. The position module samples the premium
/// against the book's mid price (the host's view of the book when the
/// request arrives, journaled with it) and derives the mark: the median of
/// the index carried to the next funding, the index plus the moving average
/// of the basis, and the last trade. Accounts below maintenance margin are
/// liquidated in the same command.
#[utoipa::path(post, path = "/admin/v1/index-prices", tag = openapi::OPERATOR, request_body = IndexRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, index_price, mid_price, premium, mark_price, liquidations: [...]}`", body = Object),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
        (status = 409, description = "The position module predates index prices (`unsupported_by_module`)", body = ErrorBody),
    ))]
pub(super) async fn index_price(
    State(state): State<AppState>,
    _: Operator,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let request: IndexRequest = parse_json(&body)?;
    settlement(&state)?;
    let (market, spec) = market_of(&state, &request.symbol)?;
    let index_ticks = spec.price_scale.parse_steps(&request.price).map_err(|error| {
        ApiError::decimal("invalid_price", "price", &request.price, &format!("the tick {}", spec.price_scale), error)
    })?;
    if index_ticks == 0 || index_ticks > spec.config.price_ticks_max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_price",
            "price must be above 0 and at most the market's maximum",
        ));
    }
    let mid_ticks = {
        let books = state.node.books.read().unwrap_or_else(|p| p.into_inner());
        books.market(market).and_then(|book| {
            let (bids, asks) = book.top(1);
            // The mid of the best bid and ask, rounded down; none with a side empty.
            Some((bids.first()?.price_ticks + asks.first()?.price_ticks) / 2)
        })
    };
    let applied = state.node.submit(Command::IndexPrice { market, index_ticks, mid_ticks }).await?;
    if let Some(reason) = applied.events.iter().find_map(|e| match &e.body {
        EventBody::CommandRejected { reason } | EventBody::Position(PositionEvent::Rejected { reason, .. }) => {
            Some(*reason)
        }
        _ => None,
    }) {
        return Err(ApiError::refused(reason));
    }
    let sampled = applied.events.iter().find_map(|e| match &e.body {
        EventBody::Position(PositionEvent::IndexPrice { mid_ticks, premium_rate, mark_price_ticks, .. }) => {
            Some((*mid_ticks, *premium_rate, *mark_price_ticks))
        }
        _ => None,
    });
    let Some((mid_ticks, premium_rate, mark_ticks)) = sampled else {
        return Err(ApiError::internal("the position module did not answer the index price"));
    };
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    let price = |ticks: u64| spec.price_scale.format_steps(ticks);
    Ok(Json(json!({
        "seq": applied.seq,
        "index_price": price(index_ticks),
        "mid_price": mid_ticks.map(price),
        "premium": premium_rate.map(|rate| crate::views::rate_text(rate as i128)),
        "mark_price": price(mark_ticks),
        "liquidations": liquidations(&applied.events, &directory),
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FundingRequest {
    #[schema(example = "BTC-PERP")]
    symbol: String,
    /// A signed fraction with at most 8 decimals, at most 1 either way;
    /// longs pay shorts when positive. Without it the position module
    /// computes the rate from the premium index sampled since the last funding.
    #[schema(value_type = Option<openapi::SignedDecimal>)]
    rate: Option<String>,
}

/// A signed rate with at most 8 decimals, as 1e-8 units.
fn parse_rate(text: &str) -> ApiResult<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let units = Scale { decimals: 8, step_units: 1 }
        .parse_units(digits)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rate", format!("rate {text:?} {error}")))?;
    let units = i64::try_from(units)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rate", "rate is too large"))?;
    if units > 100_000_000 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_rate", "a funding rate above 100% is refused"));
    }
    Ok(if negative { -units } else { units })
}

/// Apply funding at the mark, at the given rate or at the one the premium index gives.
#[utoipa::path(post, path = "/admin/v1/funding", tag = openapi::OPERATOR, request_body = FundingRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, rate}`", body = Object),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn funding(State(state): State<AppState>, _: Operator, Body(body): Body) -> ApiResult<Json<Value>> {
    let request: FundingRequest = parse_json(&body)?;
    settlement(&state)?;
    let (market, _) = market_of(&state, &request.symbol)?;
    let command = match &request.rate {
        Some(rate) => Command::Funding { market, rate: parse_rate(rate)? },
        None => Command::PremiumFunding { market },
    };
    let applied = state.node.submit(command).await?;
    let refusal = applied.events.iter().find_map(|e| match &e.body {
        EventBody::CommandRejected { reason } | EventBody::Position(PositionEvent::Rejected { reason, .. }) => {
            Some(*reason)
        }
        _ => None,
    });
    if let Some(reason) = refusal {
        return Err(ApiError::refused(reason));
    }
    let rate = applied.events.iter().find_map(|e| match &e.body {
        EventBody::Position(PositionEvent::FundingIndex { rate, .. } | PositionEvent::Funding { rate, .. }) => {
            Some(crate::views::rate_text(*rate as i128))
        }
        _ => None,
    });
    Ok(Json(json!({ "seq": applied.seq, "rate": rate })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FundRequest {
    /// In the settlement asset.
    #[schema(value_type = openapi::Decimal)]
    amount: String,
}

/// Money into the insurance fund.
#[utoipa::path(post, path = "/admin/v1/insurance-fund", tag = openapi::OPERATOR, request_body = FundRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq}`", body = Object),
        (status = 409, description = "No position module is installed (`no_module`)", body = ErrorBody),
    ))]
pub(super) async fn insurance_fund(
    State(state): State<AppState>,
    _: Operator,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let request: FundRequest = parse_json(&body)?;
    let (_, scale) = settlement(&state)?;
    let amount_units = parse_amount(&scale, &request.amount)?;
    let applied = state.node.submit(Command::FundInsurance { amount_units }).await?;
    Ok(Json(json!({ "seq": applied.seq })))
}
