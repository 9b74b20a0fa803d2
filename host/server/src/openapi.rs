//! The OpenAPI document (`GET /openapi.json`, rendered at `/docs`), derived
//! from the code: each handler's `#[utoipa::path]`, the request types'
//! `ToSchema`/`IntoParams`, and the error body the server writes. The router
//! registers routes only through `utoipa_axum::routes!`, so a route and its
//! description are one declaration (`routes::api`).
//!
//! What every endpoint of a kind can answer besides its own cases (the
//! signature refused, the rate limit, the host failing) is added here once,
//! by [`Errors`], from how the endpoint is declared: who may call it, whether
//! it has path parameters and a body.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, ToSchema};

/// Tags of the document, one per part of API.md.
pub const MARKET_DATA: &str = "market data";
pub const TRADING: &str = "trading";
pub const ACCOUNTS: &str = "accounts";
pub const OPERATOR: &str = "operator";
pub const HOST: &str = "host";

/// Security scheme names, as handlers' `security(...)` give them.
pub const TRADER: &str = "trader_signature";
pub const OPERATOR_TOKEN: &str = "operator_token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "exhost",
        description = "A WebAssembly-plugin exchange host. Prices, quantities and money are decimal strings \
                       exactly as given (never floats); seq, ids and ts (ns since the Unix epoch) are integers. \
                       Every error answer is `application/json` with the shape `Error`; a refused request \
                       changed nothing, and a 503 says whether the command's outcome is known."
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "market data", description = "Public: markets, books, trades"),
        (name = "trading", description = "Signed by a trader (X-API-KEY, X-TIMESTAMP, X-SIGNATURE)"),
        (name = "accounts", description = "Balances, positions, history, withdrawals"),
        (name = "operator", description = "The operator's bearer token"),
        (name = "host", description = "Liveness, metrics, this document, the WebSocket"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            OPERATOR_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator token (`<data-dir>/admin.token` or EXHOST_ADMIN_TOKEN)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            TRADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-KEY",
                "with X-TIMESTAMP (ms, within 5 s), X-SIGNATURE-VERSION: 2 and X-SIGNATURE = hex \
                 HMAC-SHA256(secret, timestamp \\n METHOD \\n path_with_query \\n body), or the hex Ed25519 \
                 signature of the same bytes for users made with a public_key; version 1 (no header, the parts \
                 run together) only with no body on GET and DELETE and one JSON object on POST and PATCH; a \
                 state-changing signature counts once",
            ))),
        );
    }
}

/// The error answers every endpoint of a kind can give, added to each operation.
struct Errors;

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build(),
    )
}

/// Who may call an operation, from its security requirement.
fn secured_by(operation: &Operation, scheme: &str) -> bool {
    let json = serde_json::to_value(&operation.security).unwrap_or_default();
    json.as_array().is_some_and(|requirements| requirements.iter().any(|r| r.get(scheme).is_some()))
}

impl Modify for Errors {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let has_path =
                    operation.parameters.iter().flatten().any(
                        |parameter| matches!(parameter, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path)),
                    );
                let has_input =
                    operation.request_body.is_some() || operation.parameters.iter().flatten().next().is_some();
                let trader = secured_by(operation, TRADER);
                let operator = secured_by(operation, OPERATOR_TOKEN);
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(description));
                };
                if has_input || trader {
                    add("400", "The request is malformed or refused by a rule; nothing changed");
                }
                if trader || operator {
                    add("401", "No valid signature or token; nothing changed");
                }
                if operator {
                    add("403", "A token that is not the operator's (`forbidden`); nothing changed");
                }
                if has_path {
                    add("404", "No such market, order, user or module");
                }
                if operation.request_body.is_some() || trader {
                    add("413", "The body is larger than the host takes (`payload_too_large`)");
                }
                if trader {
                    add("429", "This API key sent too much (`rate_limited`), or the engine's queue is full");
                }
                add("500", "The host could not answer; the message has an error id that is in its log");
                add(
                    "503",
                    "The host does not take this now (halted, shutting down, not the active node); the message says \
                     whether a command's outcome is known",
                );
            }
        }
    }
}

/// A non-negative decimal as a string: digits, then optionally a point and
/// more digits (no sign, exponent or float). It must also be a multiple of the
/// market's step where the field says so.
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]+(\\.[0-9]+)?$", example = "26000.5")]
pub struct Decimal(#[allow(dead_code)] String);

/// A decimal that may be negative (PnL, funding rates).
#[derive(ToSchema)]
#[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$", example = "-0.0001")]
pub struct SignedDecimal(#[allow(dead_code)] String);

/// A rate as a decimal fraction, at most 1 with at most 8 decimals ("0.1" is 10%).
#[derive(ToSchema)]
#[schema(pattern = "^[0-9]+(\\.[0-9]+)?$", example = "0.05")]
pub struct Fraction(#[allow(dead_code)] String);

/// 64 hex digits: a module's SHA-256.
#[derive(ToSchema)]
#[schema(pattern = "^[0-9a-fA-F]{64}$")]
pub struct ModuleHashHex(#[allow(dead_code)] String);

/// A WebAssembly module's bytes, as the file `cargo build --target
/// wasm32-unknown-unknown` writes.
#[derive(ToSchema)]
#[schema(format = Binary)]
pub struct WasmBytes(#[allow(dead_code)] String);

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OrderType {
    Limit,
    Market,
    StopMarket,
    StopLimit,
    TakeProfitMarket,
    TakeProfitLimit,
}

/// The price a conditional order watches.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TriggerBy {
    Mark,
    Last,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TimeInForce {
    Gtc,
    Gtd,
    Ioc,
    Fok,
    PostOnly,
}

/// Self-trade prevention.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Stp {
    CancelTaker,
    CancelMaker,
    CancelBoth,
}

/// Add the error answers every operation of a kind can give (see [`Errors`]);
/// called once the router has added every path.
pub fn add_common_errors(openapi: &mut OpenApi) {
    Errors.modify(openapi);
}

/// The document of the whole API.
pub fn document(api: &OpenApi) -> serde_json::Value {
    serde_json::to_value(api).unwrap_or_default()
}
