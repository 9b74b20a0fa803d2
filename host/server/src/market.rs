//! Public market data: markets, order book (live or as of a past sequence), trades.

use axum::Json;
use axum::extract::{Path, State};
use exhost_guest_sdk::{Level, MatchingQuery, MatchingQueryResult};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
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

pub(super) async fn list_markets(State(state): State<AppState>) -> Json<Vec<Value>> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Json(directory.markets.iter().map(market_json).collect())
}

#[derive(Deserialize)]
pub(super) struct BookQuery {
    depth: Option<u32>,
    at_seq: Option<u64>,
}

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

#[derive(Deserialize)]
pub(super) struct TradesQuery {
    limit: Option<usize>,
}

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
