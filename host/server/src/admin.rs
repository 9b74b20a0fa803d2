//! Operator endpoints: users, deposits, markets, modules, snapshots, the event log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use exhost_engine::{Command, Credential, EventBody, MarketSpec, ModuleHash, ModuleLimits, RiskParams, Scale};
use exhost_guest_sdk::{MarketConfig, MarketTerms, ModuleKind, RiskTier, UserId};
use exhost_node::secrets::Verifier;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Body, Operator, parse_json};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi;
use crate::params::Params;
use crate::state::AppState;
use crate::views::event_json;
use exhost_node::readmodel;

/// Most events one page of the event log may hold.
const EVENTS_LIMIT_MAX: usize = 10_000;

fn random_hex(bytes: usize) -> ApiResult<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| ApiError::internal(format!("no randomness: {error}")))?;
    Ok(hex::encode(buffer))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserRequest {
    /// An Ed25519 public key (64 hex digits): the user signs with its private
    /// key and the host holds no secret. Without it, the host makes an HMAC secret.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    public_key: Option<String>,
}

/// Create a user with trading credentials.
#[utoipa::path(post, path = "/admin/v1/users", tag = openapi::OPERATOR, request_body = Option<UserRequest>,
    security(("operator_token" = [])),
    responses((status = 200, description = "`{seq, user_id, api_key}` and `api_secret` (HMAC users: shown only here) or `public_key` (Ed25519 users)", body = Object)))]
pub(super) async fn create_user(
    State(state): State<AppState>,
    _: Operator,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let request: UserRequest = parse_json(&body)?;
    let api_key = random_hex(16)?;
    let (credential, api_secret) = match &request.public_key {
        Some(text) => {
            let mut public_key = [0u8; 32];
            hex::decode_to_slice(text, &mut public_key)
                .map_err(|_| ApiError::bad_request("public_key must be 64 hex digits (an Ed25519 public key)"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&public_key)
                .map_err(|_| ApiError::bad_request("public_key is not a valid Ed25519 public key"))?;
            (Credential::Ed25519(public_key), None)
        }
        None => {
            let api_secret = random_hex(32)?;
            // Sealed before it is journaled: the secret is in clear only in this answer and in memory.
            let sealed = state.sealer.seal(&api_key, &api_secret)?;
            (Credential::SealedSecret(sealed), Some(api_secret))
        }
    };
    let applied = state.node.submit(Command::RegisterUser { api_key: api_key.clone(), credential }).await?;
    let user_id = applied
        .events
        .iter()
        .find_map(|event| match event.body {
            EventBody::UserCreated { user_id } => Some(user_id.0),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("the engine created no user"))?;
    let mut answer = json!({ "seq": applied.seq, "user_id": user_id, "api_key": api_key });
    match api_secret {
        Some(secret) => answer["api_secret"] = json!(secret),
        None => answer["public_key"] = json!(request.public_key),
    }
    Ok(Json(answer))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DepositRequest {
    user_id: u64,
    #[schema(example = "USDT")]
    asset: String,
    #[schema(value_type = openapi::Decimal)]
    amount: String,
}

/// The users, with how they sign.
#[utoipa::path(get, path = "/admin/v1/users", tag = openapi::OPERATOR,
    security(("operator_token" = [])),
    responses((status = 200, description = "`[{user_id, api_key, signs_with: hmac|ed25519|unusable}]`, by user id", body = [Object])))]
pub(super) async fn list_users(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Vec<Value>>> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Ok(Json(
        directory
            .user_ids
            .iter()
            .map(|(user_id, api_key)| {
                let signs_with = match directory.users.get(api_key).map(|(_, verifier)| verifier) {
                    Some(Verifier::Hmac(_)) => "hmac",
                    Some(Verifier::Ed25519(_)) => "ed25519",
                    Some(Verifier::Unusable(_)) | None => "unusable",
                };
                json!({ "user_id": user_id.0, "api_key": api_key, "signs_with": signs_with })
            })
            .collect(),
    ))
}

/// Record a deposit.
#[utoipa::path(post, path = "/admin/v1/deposits", tag = openapi::OPERATOR, request_body = DepositRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq}`", body = Object),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub(super) async fn deposit(State(state): State<AppState>, _: Operator, Body(body): Body) -> ApiResult<Json<Value>> {
    let request: DepositRequest = parse_json(&body)?;
    let decimals = {
        let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
        if !directory.user_ids.contains_key(&UserId(request.user_id)) {
            return Err(ApiError::not_found(format!("no user {}", request.user_id)));
        }
        *directory.assets.get(&request.asset).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "unknown_asset", format!("no asset {:?}", request.asset))
        })?
    };
    let scale = Scale { decimals, step_units: 1 };
    let amount_units = scale
        .parse_steps(&request.amount)
        .map_err(|error| ApiError::decimal("invalid_amount", "amount", &request.amount, &scale.to_string(), error))?;
    let applied = state
        .node
        .submit(Command::Deposit { user_id: UserId(request.user_id), asset: request.asset, amount_units })
        .await?;
    if let Some(EventBody::CommandRejected { reason }) = applied.events.first().map(|event| &event.body) {
        return Err(ApiError::refused(*reason));
    }
    Ok(Json(json!({ "seq": applied.seq })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MarketRequest {
    /// A-Z, 0-9, `-` and `_`.
    #[schema(example = "ETH-PERP")]
    symbol: String,
    #[schema(example = "ETH")]
    base: String,
    /// The settlement asset.
    #[schema(example = "USDT")]
    quote: String,
    #[schema(value_type = openapi::Decimal)]
    tick_size: String,
    #[schema(value_type = openapi::Decimal)]
    lot_size: String,
    /// The hash of a stored matching module.
    #[schema(value_type = openapi::ModuleHashHex)]
    matching_module: String,
    /// Module-specific parameters, given to the module as JSON.
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
    /// Decimals of the quote's smallest unit (6 when not given).
    quote_decimals: Option<u8>,
    risk: Option<RiskRequest>,
    limits: Option<LimitsRequest>,
}

/// The module's bounds for this market; defaults in `ModuleLimits`. Journaled
/// with the market: an out-of-fuel outcome is only deterministic if the fuel is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsRequest {
    /// Fuel per command (50000000 when not given).
    #[schema(minimum = 100_000, maximum = 100_000_000_000_u64)]
    fuel_per_command: Option<u64>,
    /// The module's memory limit (1 GiB when not given).
    #[schema(minimum = 1_048_576, maximum = 4_294_967_296_u64)]
    memory_bytes_max: Option<u64>,
}

/// The range an operator may set a market's fuel per command in. Below, even
/// an empty book cannot place an order; above, one command could hold the
/// engine for minutes (other calls' budgets are multiples of it).
const FUEL_PER_COMMAND_RANGE: std::ops::RangeInclusive<u64> = 100_000..=100_000_000_000;
/// The range of a market module's memory limit: at least 1 MiB, at most all of wasm32.
const MEMORY_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 32);

fn module_limits(request: Option<&LimitsRequest>) -> ApiResult<ModuleLimits> {
    let defaults = ModuleLimits::default();
    let Some(request) = request else { return Ok(defaults) };
    let limits = ModuleLimits {
        fuel_per_command: request.fuel_per_command.unwrap_or(defaults.fuel_per_command),
        memory_bytes_max: request.memory_bytes_max.unwrap_or(defaults.memory_bytes_max),
    };
    if !FUEL_PER_COMMAND_RANGE.contains(&limits.fuel_per_command) {
        return Err(ApiError::bad_request(format!(
            "limits.fuel_per_command must be between {} and {}",
            FUEL_PER_COMMAND_RANGE.start(),
            FUEL_PER_COMMAND_RANGE.end()
        )));
    }
    if !MEMORY_BYTES_RANGE.contains(&limits.memory_bytes_max) {
        return Err(ApiError::bad_request(format!(
            "limits.memory_bytes_max must be between {} and {}",
            MEMORY_BYTES_RANGE.start(),
            MEMORY_BYTES_RANGE.end()
        )));
    }
    Ok(limits)
}

/// Margin and fee rates as decimal fractions ("0.1" is 10%); defaults in `RiskParams`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RiskRequest {
    #[schema(value_type = Option<openapi::Fraction>)]
    initial_margin: Option<String>,
    #[schema(value_type = Option<openapi::Fraction>)]
    maintenance_margin: Option<String>,
    #[schema(value_type = Option<openapi::Fraction>)]
    maker_fee: Option<String>,
    #[schema(value_type = Option<openapi::Fraction>)]
    taker_fee: Option<String>,
    #[schema(value_type = Option<openapi::Fraction>)]
    liquidation_fee: Option<String>,
    /// Margin tiers, ascending by `notional_max`: a position's (or an
    /// exposure's) margins are those of the tier its notional falls in, less
    /// the amount that keeps them continuous at the bounds. Replace
    /// `initial_margin` and `maintenance_margin`.
    tiers: Option<Vec<TierRequest>>,
    /// Hours between fundings (default 8): fundings fall on multiples of it since the epoch.
    funding_interval_hours: Option<u32>,
    /// The largest funding rate either way, per interval (default 0.0075).
    #[schema(value_type = Option<openapi::Fraction>)]
    funding_rate_cap: Option<String>,
}

/// One margin tier.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TierRequest {
    /// The tier's upper bound of notional, in the quote asset, inclusive.
    #[schema(value_type = openapi::Decimal)]
    notional_max: String,
    #[schema(value_type = openapi::Fraction)]
    initial_margin: String,
    #[schema(value_type = openapi::Fraction)]
    maintenance_margin: String,
}

/// The market's terms beyond flat rates, when the request gives any.
fn market_terms(request: Option<&RiskRequest>, quote_decimals: u8) -> ApiResult<Option<MarketTerms>> {
    let Some(request) = request else { return Ok(None) };
    if request.tiers.is_none() && request.funding_interval_hours.is_none() && request.funding_rate_cap.is_none() {
        return Ok(None);
    }
    if request.tiers.is_some() && (request.initial_margin.is_some() || request.maintenance_margin.is_some()) {
        return Err(ApiError::bad_request(
            "give either tiers or initial_margin and maintenance_margin: tiers carry their own margins",
        ));
    }
    let mut terms = MarketTerms::standard(exhost_engine::MarketId(0));
    let money = Scale { decimals: quote_decimals, step_units: 1 };
    for (index, tier) in request.tiers.iter().flatten().enumerate() {
        let notional_max_units = money.parse_units(&tier.notional_max).map_err(|error| {
            ApiError::bad_request(format!("tiers[{index}].notional_max {:?} {error}", tier.notional_max))
        })?;
        terms.tiers.push(RiskTier {
            notional_max_units: notional_max_units as u128,
            initial_margin_rate: parse_fraction(
                &format!("tiers[{index}].initial_margin"),
                &Some(tier.initial_margin.clone()),
                0,
            )?,
            maintenance_margin_rate: parse_fraction(
                &format!("tiers[{index}].maintenance_margin"),
                &Some(tier.maintenance_margin.clone()),
                0,
            )?,
        });
    }
    if request.tiers.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::bad_request("tiers must hold at least one tier"));
    }
    if let Some(hours) = request.funding_interval_hours {
        if !(1..=24 * 7).contains(&hours) {
            return Err(ApiError::bad_request("funding_interval_hours must be between 1 and 168"));
        }
        terms.funding_interval_ns = hours as u64 * 3_600 * 1_000_000_000;
    }
    terms.funding_rate_cap = parse_fraction("funding_rate_cap", &request.funding_rate_cap, terms.funding_rate_cap)?;
    if let Some(problem) = terms.problem() {
        return Err(ApiError::bad_request(format!("risk: {problem}")));
    }
    Ok(Some(terms))
}

fn parse_fraction(field: &str, text: &Option<String>, default: u64) -> ApiResult<u64> {
    let Some(text) = text else { return Ok(default) };
    let rate = Scale { decimals: 8, step_units: 1 }.parse_units(text).map_err(|error| {
        ApiError::bad_request(format!("{field} {text:?} {error} (a fraction with at most 8 decimals)"))
    })?;
    if rate > 100_000_000 {
        return Err(ApiError::bad_request(format!("{field} must be at most 1")));
    }
    Ok(rate)
}

fn risk_params(request: Option<&RiskRequest>) -> ApiResult<RiskParams> {
    let defaults = RiskParams::default();
    let Some(request) = request else { return Ok(defaults) };
    let risk = RiskParams {
        initial_margin_rate: parse_fraction("initial_margin", &request.initial_margin, defaults.initial_margin_rate)?,
        maintenance_margin_rate: parse_fraction(
            "maintenance_margin",
            &request.maintenance_margin,
            defaults.maintenance_margin_rate,
        )?,
        maker_fee_rate: parse_fraction("maker_fee", &request.maker_fee, defaults.maker_fee_rate)?,
        taker_fee_rate: parse_fraction("taker_fee", &request.taker_fee, defaults.taker_fee_rate)?,
        liquidation_fee_rate: parse_fraction(
            "liquidation_fee",
            &request.liquidation_fee,
            defaults.liquidation_fee_rate,
        )?,
    };
    if risk.maintenance_margin_rate == 0 || risk.maintenance_margin_rate >= risk.initial_margin_rate {
        return Err(ApiError::bad_request("maintenance_margin must be above 0 and below initial_margin"));
    }
    Ok(risk)
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Create a market.
#[utoipa::path(post, path = "/admin/v1/markets", tag = openapi::OPERATOR, request_body = MarketRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, symbol}`", body = Object),
        (status = 404, description = "No such module is stored", body = ErrorBody),
        (status = 409, description = "The market exists (`market_exists`)", body = ErrorBody),
        (status = 422, description = "The module was refused (`module_rejected`)", body = ErrorBody),
    ))]
pub(super) async fn create_market(
    State(state): State<AppState>,
    _: Operator,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let request: MarketRequest = parse_json(&body)?;
    for (field, value) in [("symbol", &request.symbol), ("base", &request.base), ("quote", &request.quote)] {
        if !valid_name(value) {
            return Err(ApiError::bad_request(format!("{field} must be 1 to 32 of A-Z, 0-9, '-', '_'")));
        }
    }
    let price_scale = Scale::from_step(&request.tick_size)
        .map_err(|error| ApiError::bad_request(format!("tick_size {:?} {error}", request.tick_size)))?;
    let qty_scale = Scale::from_step(&request.lot_size)
        .map_err(|error| ApiError::bad_request(format!("lot_size {:?} {error}", request.lot_size)))?;
    if state.node.directory.read().unwrap_or_else(|p| p.into_inner()).symbols.contains_key(&request.symbol) {
        return Err(ApiError::refused(exhost_guest_sdk::Reason::MarketExists));
    }
    let module_hash = ModuleHash::from_hex(&request.matching_module)
        .ok_or_else(|| ApiError::bad_request("matching_module must be a module hash (64 hex digits)"))?;
    let compiled = state.loader.compiled(&module_hash).map_err(|error| match error {
        exhost_engine::LoadError::UnknownModule(_) => ApiError::not_found(format!("no module {module_hash} is stored")),
        other => ApiError::new(StatusCode::BAD_REQUEST, "module_rejected", other.to_string()),
    })?;
    if compiled.info.kind != ModuleKind::Matching {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "module_rejected", "a market needs a matching module"));
    }
    let quote_decimals = request.quote_decimals.unwrap_or(6);
    if quote_decimals > exhost_engine::decimal::DECIMALS_MAX {
        return Err(ApiError::bad_request("quote_decimals is at most 18"));
    }
    let mut risk = risk_params(request.risk.as_ref())?;
    let terms = market_terms(request.risk.as_ref(), quote_decimals)?;
    if let Some(first) = terms.as_ref().and_then(|terms| terms.tiers.first()) {
        // The flat rates are the first tier's: what a reader of them alone should assume.
        risk.initial_margin_rate = first.initial_margin_rate;
        risk.maintenance_margin_rate = first.maintenance_margin_rate;
    }
    let limits = module_limits(request.limits.as_ref())?;
    let spec = MarketSpec {
        symbol: request.symbol,
        base: request.base,
        quote: request.quote,
        quote_decimals,
        price_scale,
        qty_scale,
        module_hash,
        limits,
        config: MarketConfig {
            params: request.params.map(|params| params.to_string().into_bytes()).unwrap_or_default(),
            ..MarketConfig::default()
        },
        risk,
    };
    let settlement = state.node.directory.read().unwrap_or_else(|p| p.into_inner()).settlement_asset.clone();
    if let Some(asset) = settlement {
        if spec.quote != asset {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_asset", format!("markets settle in {asset}")));
        }
        if spec.units_per_tick_lot().is_none() {
            return Err(ApiError::bad_request(format!(
                "tick_size x lot_size must be a whole number of the quote's minimal units (10^-{quote_decimals})"
            )));
        }
    }
    let symbol = spec.symbol.clone();
    let command = match terms {
        Some(terms) => Command::CreateMarketWith { spec, terms },
        None => Command::CreateMarket(spec),
    };
    let applied = state.node.submit(command).await?;
    if let Some(reason) = applied.events.iter().find_map(|event| match &event.body {
        EventBody::CommandRejected { reason } => Some(*reason),
        _ => None,
    }) {
        return Err(ApiError::refused(reason));
    }
    Ok(Json(json!({ "seq": applied.seq, "symbol": symbol })))
}

/// Take a snapshot now.
#[utoipa::path(post, path = "/admin/v1/snapshots", tag = openapi::OPERATOR,
    security(("operator_token" = [])),
    responses((status = 200, description = "`{seq, digest, size_bytes}`", body = Object)))]
pub(super) async fn snapshot(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Value>> {
    let taken = state.node.snapshot().await?;
    Ok(Json(json!({ "seq": taken.seq, "digest": taken.digest_hex, "size_bytes": taken.size_bytes })))
}

/// The journal, the snapshots and the module faults, for the operator.
#[utoipa::path(get, path = "/admin/v1/status", tag = openapi::OPERATOR,
    security(("operator_token" = [])),
    responses((status = 200, description = "`{seq, health, journal: {last_seq, size_bytes}, snapshot: {seq, digest, size_bytes} | null, \
        snapshots, module_faults: {total, recent: [{seq, module, fault}]}}`: `seq` is the last applied, `health` is `ok` or \
        why the host takes no commands, sizes are RocksDB's estimates, `recent` holds the newest 50 faults since start", body = Object)))]
pub(super) async fn status(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Value>> {
    let health = &state.node.health;
    let problem = health.problem().map(|halt| halt.to_string()).or_else(|| health.stall());
    let snapshots = state.store.snapshot_infos()?;
    let faults = health.faults();
    Ok(Json(json!({
        "seq": health.applied_seq(),
        "health": problem.as_deref().unwrap_or("ok"),
        "journal": {
            "last_seq": state.store.journal_last_seq()?.unwrap_or(0),
            "size_bytes": state.store.size_bytes(exhost_store::Family::Journal)?,
        },
        "snapshot": snapshots.last().map(|info| json!({
            "seq": info.seq, "digest": hex::encode(info.digest), "size_bytes": info.size_bytes,
        })),
        "snapshots": snapshots.len(),
        "module_faults": {
            "total": faults.total,
            "recent": faults.recent.iter().rev().map(|fault| json!({
                "seq": fault.seq, "module": fault.module, "fault": fault.fault,
            })).collect::<Vec<_>>(),
        },
    })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// The first sequence number.
    #[param(default = 1)]
    #[serde(default, deserialize_with = "crate::params::int64")]
    from_seq: Option<u64>,
    /// At least this many events, rounded up to whole commands.
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<usize>,
}

/// The event log from a sequence number; whole commands per page.
#[utoipa::path(get, path = "/admin/v1/events", tag = openapi::OPERATOR, params(EventsQuery),
    security(("operator_token" = [])),
    responses((status = 200, description = "`{events: [{seq, idx, ts, type, ...}], next_seq}`", body = Object)))]
pub(super) async fn events(
    State(state): State<AppState>,
    _: Operator,
    Params(query): Params<EventsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(1_000);
    if limit == 0 || limit > EVENTS_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {EVENTS_LIMIT_MAX}")));
    }
    let from_seq = query.from_seq.unwrap_or(1);
    let (events, next_seq) = readmodel::events_from(&state.store, from_seq, limit)?;
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    let events: Vec<Value> = events.iter().map(|event| event_json(event, &directory)).collect();
    Ok(Json(json!({ "events": events, "next_seq": next_seq })))
}
