//! Public market data: markets, order book (live or as of a past sequence), trades.

use axum::Json;
use axum::extract::{Path, State};
use exhost_guest_sdk::{Level, MarketId, MatchingQuery, MatchingQueryResult};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::openapi;
use crate::params::Params;
use crate::state::AppState;
use crate::trading::market_of;
use crate::views::{market_json, trade_json};
use exhost_node::readmodel;

/// Most levels per side a book request may ask for.
const DEPTH_MAX: u32 = 1_000;
const DEPTH_DEFAULT: u32 = 50;
/// Most trades a trades request may ask for.
const TRADES_LIMIT_MAX: usize = 1_000;

/// The markets, with their steps, module and risk parameters.
#[utoipa::path(get, path = "/v1/markets", tag = openapi::MARKET_DATA, responses(
    (status = 200, description = "`[{symbol, base, quote, tick_size, lot_size, quote_decimals, matching_module, status, risk: {initial_margin, maintenance_margin, maker_fee, taker_fee, liquidation_fee}}]`", body = [Object]),
    (status = 500, description = "The host could not answer", body = crate::error::ErrorBody),
))]
pub(super) async fn list_markets(State(state): State<AppState>) -> Json<Vec<Value>> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Json(
        directory
            .markets
            .iter()
            .enumerate()
            .map(|(index, spec)| market_json(spec, directory.market_terms.get(&MarketId(index as u32))))
            .collect(),
    )
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BookQuery {
    /// Levels per side.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    depth: Option<u32>,
    /// Rebuild the book as of this sequence number (at most the last one).
    #[serde(default, deserialize_with = "crate::params::int64")]
    at_seq: Option<u64>,
}

/// A market's symbol, as in `/v1/markets`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct SymbolPath {
    #[allow(dead_code)]
    #[param(min_length = 1, example = "BTC-PERP")]
    pub symbol: String,
}

/// The order book, levels aggregated, best first; live, or as of a past sequence.
#[utoipa::path(get, path = "/v1/markets/{symbol}/book", tag = openapi::MARKET_DATA, params(SymbolPath, BookQuery),
    responses(
        (status = 200, description = "`{symbol, seq, bids: [[price, qty]], asks: [[price, qty]]}`, decimal strings", body = Object),
        (status = 422, description = "The market's module could not answer for that point (`module_rejected`)", body = crate::error::ErrorBody),
    ))]
pub(super) async fn book(
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Params(query): Params<BookQuery>,
) -> ApiResult<Json<Value>> {
    let (market, spec) = market_of(&state, &symbol)?;
    let depth = query.depth.unwrap_or(DEPTH_DEFAULT);
    if depth == 0 || depth > DEPTH_MAX {
        return Err(ApiError::bad_request(format!("depth must be between 1 and {DEPTH_MAX}")));
    }
    let request = MatchingQuery::Depth { levels_max: depth };
    let (seq, answer) = match query.at_seq {
        None => {
            let books = state.node.books.read().unwrap_or_else(|p| p.into_inner());
            let (bids, asks) = books.market(market).map(|book| book.top(depth as usize)).unwrap_or_default();
            (books.seq, MatchingQueryResult::Depth { bids, asks })
        }
        Some(at_seq) => {
            let last = state.store.journal_last_seq()?.unwrap_or(0);
            if at_seq > last {
                return Err(ApiError::bad_request(format!("at_seq {at_seq} is beyond the last sequence {last}")));
            }
            crate::pit::at_seq(&state, at_seq, move |engine| {
                if engine.registry().market(market).is_none() {
                    return Err(ApiError::unknown_market(&symbol));
                }
                let answer = engine.query(market, &request).map_err(|error| match error {
                    // The market's module could not answer: its fault, told as such.
                    exhost_engine::EngineError::Detached { fault, .. } => ApiError::new(
                        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                        "module_rejected",
                        format!("the market's module could not answer: {fault}"),
                    ),
                    other => ApiError::internal(other.to_string()),
                })?;
                Ok((at_seq, answer))
            })
            .await?
        }
    };
    let MatchingQueryResult::Depth { bids, asks } = answer else {
        return Err(ApiError::internal("the module answered a depth query with something else"));
    };
    let levels = |levels: &[Level]| -> Vec<[String; 2]> {
        levels
            .iter()
            .map(|level| {
                [spec.price_scale.format_steps(level.price_ticks), spec.qty_scale.format_steps(level.qty_lots)]
            })
            .collect()
    };
    Ok(Json(json!({ "symbol": spec.symbol, "seq": seq, "bids": levels(&bids), "asks": levels(&asks) })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TradesQuery {
    /// How many trades.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// Recent trades, newest first.
#[utoipa::path(get, path = "/v1/markets/{symbol}/trades", tag = openapi::MARKET_DATA, params(SymbolPath, TradesQuery),
    responses((status = 200, description = "`[{seq, trade_id, price, qty, taker_side, ts}]`", body = [Object])))]
pub(super) async fn trades(
    State(state): State<AppState>,
    Path(symbol): Path<String>,
    Params(query): Params<TradesQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let (market, spec) = market_of(&state, &symbol)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > TRADES_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {TRADES_LIMIT_MAX}")));
    }
    let trades = readmodel::recent_trades(&state.store, market, limit)?;
    Ok(Json(trades.iter().map(|trade| trade_json(trade, &spec)).collect()))
}

/// Trades read at most for one ticker; past it the figures cover the newest
/// this many trades and say so (`partial`).
const TICKER_TRADES_MAX: usize = 100_000;
const DAY_NS: u64 = 24 * 3600 * 1_000_000_000;

/// The last 24 hours of a market, by the host's clock: last price, volume,
/// high and low (the figures of the big venues' 24 h tickers).
#[utoipa::path(get, path = "/v1/markets/{symbol}/ticker", tag = openapi::MARKET_DATA, params(SymbolPath),
    responses((status = 200, description = "`{symbol, last_price, volume_24h, high_24h, low_24h, trades_24h, partial}`: \
        prices and volume (in the base asset) as decimal strings, null without a trade; `partial` when more than \
        100000 trades were made in the window and the figures cover the newest 100000", body = Object)))]
pub(super) async fn ticker(State(state): State<AppState>, Path(symbol): Path<String>) -> ApiResult<Json<Value>> {
    let (market, spec) = market_of(&state, &symbol)?;
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let last = readmodel::recent_trades(&state.store, market, 1)?;
    let (trades, partial) =
        readmodel::trades_since(&state.store, market, now_ns.saturating_sub(DAY_NS), TICKER_TRADES_MAX)?;
    let volume_lots = trades.iter().map(|trade| trade.qty_lots).fold(0u64, u64::saturating_add);
    let price = |ticks: Option<u64>| ticks.map(|ticks| spec.price_scale.format_steps(ticks));
    Ok(Json(json!({
        "symbol": spec.symbol,
        "last_price": price(last.first().map(|trade| trade.price_ticks)),
        "volume_24h": spec.qty_scale.format_steps(volume_lots),
        "high_24h": price(trades.iter().map(|trade| trade.price_ticks).max()),
        "low_24h": price(trades.iter().map(|trade| trade.price_ticks).min()),
        "trades_24h": trades.len(),
        "partial": partial,
    })))
}
