//! The OpenAPI document (`GET /openapi.json`): every endpoint with its
//! parameters, request body and answers, built with utoipa's builders from
//! one table, so the document and the contract in API.md are read side by side.

use std::sync::OnceLock;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, Required, ResponseBuilder,
};

/// Who may call an endpoint.
#[derive(Clone, Copy)]
enum Auth {
    Public,
    Trader,
    Operator,
}

/// (name, type, description, required) of a body field or query parameter.
type Field = (&'static str, &'static str, &'static str, bool);

struct Endpoint {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    query: &'static [Field],
    body: &'static [Field],
    /// Content type of a non-JSON body.
    raw_body: Option<&'static str>,
    answer: &'static str,
}

const fn ep(
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    query: &'static [Field],
    body: &'static [Field],
    answer: &'static str,
) -> Endpoint {
    Endpoint { method, path, summary, auth, query, body, raw_body: None, answer }
}

const AS_OF: &[Field] = &[
    ("at_seq", "integer", "as of this sequence number", false),
    ("at_time", "integer", "as of this time (ns since the Unix epoch)", false),
];

const ENDPOINTS: &[Endpoint] = &[
    ep(HttpMethod::Get, "/healthz", "Whether the host takes commands", Auth::Public, &[], &[], "{status}"),
    ep(HttpMethod::Get, "/metrics", "Prometheus metrics (text)", Auth::Public, &[], &[], "text"),
    ep(HttpMethod::Get, "/openapi.json", "This document", Auth::Public, &[], &[], "OpenAPI 3.1"),
    ep(
        HttpMethod::Get,
        "/v1/markets",
        "Markets",
        Auth::Public,
        &[],
        &[],
        "[{symbol, base, quote, tick_size, lot_size, matching_module, status, risk}]",
    ),
    ep(
        HttpMethod::Get,
        "/v1/markets/{symbol}/book",
        "Order book, levels aggregated, best first; at_seq rebuilds it as of that sequence",
        Auth::Public,
        &[
            ("depth", "integer", "levels per side (1..1000, default 50)", false),
            ("at_seq", "integer", "sequence number", false),
        ],
        &[],
        "{symbol, seq, bids: [[price, qty]], asks: [[price, qty]]}",
    ),
    ep(
        HttpMethod::Get,
        "/v1/markets/{symbol}/trades",
        "Recent trades, newest first",
        Auth::Public,
        &[("limit", "integer", "1..1000, default 100", false)],
        &[],
        "[{seq, trade_id, price, qty, taker_side, ts}]",
    ),
    ep(
        HttpMethod::Post,
        "/v1/orders",
        "Place an order; answers with the order after matching",
        Auth::Trader,
        &[],
        &[
            ("symbol", "string", "market", true),
            ("side", "string", "buy | sell", true),
            ("type", "string", "limit | market", true),
            ("price", "string", "decimal, a multiple of the tick (limit only)", false),
            ("qty", "string", "decimal, a multiple of the lot", true),
            ("time_in_force", "string", "gtc (default) | ioc | fok | post_only", false),
            ("client_order_id", "string", "up to 64 printable ASCII characters", false),
            ("reduce_only", "boolean", "may only reduce the position", false),
            ("stp", "string", "cancel_taker (default) | cancel_maker | cancel_both", false),
        ],
        "{seq, order_id, client_order_id, symbol, side, type, price, qty, status, filled_qty, remaining_qty, fills: [{trade_id, price, qty, fee, liquidity}], reject_reason?, cancel_reason?}",
    ),
    ep(
        HttpMethod::Get,
        "/v1/orders",
        "The caller's open orders",
        Auth::Trader,
        &[("symbol", "string", "one market only", false)],
        &[],
        "[order]",
    ),
    ep(
        HttpMethod::Delete,
        "/v1/orders",
        "Cancel all the caller's open orders (of one market)",
        Auth::Trader,
        &[("symbol", "string", "one market only", false)],
        &[],
        "{seq, cancelled: [order_id]}",
    ),
    ep(
        HttpMethod::Delete,
        "/v1/orders/{order_id}",
        "Cancel an open order of the caller",
        Auth::Trader,
        &[],
        &[],
        "order",
    ),
    ep(
        HttpMethod::Get,
        "/v1/orders/by-client-id/{client_order_id}",
        "The caller's latest order that carried this client order id, open or not",
        Auth::Trader,
        &[],
        &[],
        "order",
    ),
    ep(
        HttpMethod::Patch,
        "/v1/orders/{order_id}",
        "Amend an open order: qty is the new total quantity",
        Auth::Trader,
        &[],
        &[("price", "string", "new price", false), ("qty", "string", "new total quantity", false)],
        "order",
    ),
    ep(
        HttpMethod::Get,
        "/v1/account",
        "The caller's account, now or as of a past point",
        Auth::Trader,
        AS_OF,
        &[],
        "{user_id, seq, balances: {asset: {total, available, reserved}}, positions: [...], equity, margin_ratio}",
    ),
    ep(
        HttpMethod::Get,
        "/v1/account/history",
        "The caller's change messages in sequence order",
        Auth::Trader,
        &[
            ("symbol", "string", "one market only", false),
            ("from_seq", "integer", "first sequence", false),
            ("limit", "integer", "1..1000", false),
        ],
        &[],
        "{events: [...], next_seq}",
    ),
    ep(
        HttpMethod::Post,
        "/v1/withdrawals",
        "Withdraw; refused if it would breach initial margin",
        Auth::Trader,
        &[],
        &[("asset", "string", "the settlement asset", true), ("amount", "string", "decimal", true)],
        "{seq, status, reject_reason?}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/users",
        "Create a user with trading credentials",
        Auth::Operator,
        &[],
        &[("public_key", "string", "an Ed25519 public key (64 hex digits); without it an HMAC secret is made", false)],
        "{seq, user_id, api_key, api_secret (HMAC users) or public_key (Ed25519 users)}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/deposits",
        "Record a deposit",
        Auth::Operator,
        &[],
        &[
            ("user_id", "integer", "user", true),
            ("asset", "string", "asset", true),
            ("amount", "string", "decimal", true),
        ],
        "{seq}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/markets",
        "Create a market",
        Auth::Operator,
        &[],
        &[
            ("symbol", "string", "A-Z, 0-9, '-', '_'", true),
            ("base", "string", "base asset", true),
            ("quote", "string", "quote asset (the settlement asset)", true),
            ("tick_size", "string", "decimal", true),
            ("lot_size", "string", "decimal", true),
            ("matching_module", "string", "module hash", true),
            ("params", "object", "module-specific parameters", false),
            ("quote_decimals", "integer", "decimals of the quote's minimal unit (default 6)", false),
            (
                "risk",
                "object",
                "initial_margin, maintenance_margin, maker_fee, taker_fee, liquidation_fee (fractions)",
                false,
            ),
            (
                "limits",
                "object",
                "fuel_per_command (default 50000000), memory_bytes_max (default 1 GiB): the module's bounds",
                false,
            ),
        ],
        "{seq, symbol}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/modules",
        "Every stored module and the activation history",
        Auth::Operator,
        &[],
        &[],
        "{modules: [...], activations: [{seq, target, from, to}]}",
    ),
    Endpoint {
        method: HttpMethod::Post,
        path: "/admin/v1/modules",
        summary: "Upload a module: validated, dry-run against the live state, stored by hash",
        auth: Auth::Operator,
        query: &[("market", "string", "dry-run against this market only, and refuse on failure", false)],
        body: &[],
        raw_body: Some("application/wasm"),
        answer: "{hash, kind, abi_version, state_version, size, dry_run}",
    },
    ep(
        HttpMethod::Post,
        "/admin/v1/markets/{symbol}/module",
        "Hot swap a market's matching module",
        Auth::Operator,
        &[],
        &[("hash", "string", "module hash", true)],
        "{seq, previous, current, migrated}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/position-module",
        "Hot swap the position module",
        Auth::Operator,
        &[],
        &[("hash", "string", "module hash", true)],
        "{seq, previous, current, migrated}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/mark-prices",
        "Set a mark price; liquidates accounts below maintenance margin",
        Auth::Operator,
        &[],
        &[("symbol", "string", "market", true), ("price", "string", "decimal", true)],
        "{seq, liquidations: [...]}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/funding",
        "Apply funding at the mark",
        Auth::Operator,
        &[],
        &[("symbol", "string", "market", true), ("rate", "string", "signed fraction, 8 decimals at most", true)],
        "{seq}",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/insurance-fund",
        "Money into the insurance fund",
        Auth::Operator,
        &[],
        &[("amount", "string", "decimal", true)],
        "{seq}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/ledger",
        "The exchange's books (they balance at every sequence)",
        Auth::Operator,
        AS_OF,
        &[],
        "{seq, asset: {deposits, withdrawals, fees, insurance_fund, user_balances, unrealized_pnl, imbalance}}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/accounts/{user_id}",
        "Any user's account; source=replay answers from the module rebuilt at that point",
        Auth::Operator,
        &[
            ("at_seq", "integer", "as of this sequence number", false),
            ("at_time", "integer", "as of this time (ns)", false),
            ("source", "string", "read_model (default) | replay", false),
        ],
        &[],
        "account",
    ),
    ep(
        HttpMethod::Post,
        "/admin/v1/snapshots",
        "Take a snapshot now",
        Auth::Operator,
        &[],
        &[],
        "{seq, digest, size_bytes}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/events",
        "The event log from a sequence number; whole commands per page",
        Auth::Operator,
        &[("from_seq", "integer", "first sequence (default 1)", false), ("limit", "integer", "1..10000", false)],
        &[],
        "{events: [{seq, idx, ts, type, ...}], next_seq}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/cluster",
        "This node's place in its cluster (exhost serve --cluster)",
        Auth::Operator,
        &[],
        &[],
        "{node, role: active|standby|replica, active_node, applied_seq, log_seq, term}",
    ),
    ep(
        HttpMethod::Get,
        "/admin/v1/checkpoint",
        "The node's whole database as of now, as a tar stream ending with a manifest of SHA-256s; what a new cluster node starts from when the command stream was trimmed (409 while another is being sent)",
        Auth::Operator,
        &[],
        &[],
        "application/x-tar",
    ),
    ep(
        HttpMethod::Get,
        "/ws",
        "WebSocket: trades, book (snapshot + diffs), user, events from any offset",
        Auth::Public,
        &[],
        &[],
        "upgrade",
    ),
];

fn schema_type(name: &str) -> Type {
    match name {
        "integer" => Type::Integer,
        "boolean" => Type::Boolean,
        "object" => Type::Object,
        _ => Type::String,
    }
}

fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for endpoint in ENDPOINTS {
        let mut operation = OperationBuilder::new()
            .summary(Some(endpoint.summary))
            .description(Some(format!("Answer: `{}`", endpoint.answer)));
        for segment in endpoint.path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        for (name, kind, description, required) in endpoint.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .description(Some(*description))
                    .required(if *required { Required::True } else { Required::False })
                    .schema(Some(ObjectBuilder::new().schema_type(schema_type(kind)))),
            );
        }
        if !endpoint.body.is_empty() {
            let mut object = ObjectBuilder::new().schema_type(Type::Object);
            for (name, kind, description, required) in endpoint.body {
                object = object.property(
                    *name,
                    ObjectBuilder::new().schema_type(schema_type(kind)).description(Some(*description)),
                );
                if *required {
                    object = object.required(*name);
                }
            }
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", ContentBuilder::new().schema(Some(object)).build())
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        if let Some(content_type) = endpoint.raw_body {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content(content_type, ContentBuilder::new().build())
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        operation = operation.response("200", ResponseBuilder::new().description(endpoint.answer).build()).response(
            "4XX",
            ResponseBuilder::new()
                .description("Refused; nothing changed")
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build())
                .build(),
        );
        match endpoint.auth {
            Auth::Public => {}
            Auth::Trader => {
                operation = operation.security(SecurityRequirement::new("trader_signature", Vec::<String>::new()))
            }
            Auth::Operator => {
                operation = operation.security(SecurityRequirement::new("operator_token", Vec::<String>::new()))
            }
        }
        paths = paths.path(endpoint.path, PathItem::new(endpoint.method.clone(), operation));
    }
    let error = ObjectBuilder::new().schema_type(Type::Object).property(
        "error",
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("code", ObjectBuilder::new().schema_type(Type::String).description(Some("snake_case error code")))
            .property("message", ObjectBuilder::new().schema_type(Type::String))
            .required("code")
            .required("message"),
    );
    let components = ComponentsBuilder::new()
        .schema("Error", error)
        .security_scheme("operator_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()))
        .security_scheme(
            "trader_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-KEY",
                "with X-TIMESTAMP (ms, within 5 s), X-SIGNATURE-VERSION: 2 and X-SIGNATURE = hex HMAC-SHA256(secret, timestamp \\n METHOD \\n path_with_query \\n body), or the hex Ed25519 signature of the same bytes for users made with a public_key; version 1 (no header, the parts run together) only with no body on GET and DELETE and one JSON object on POST and PATCH; a state-changing signature counts once",
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("exhost")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("A WebAssembly-plugin exchange host. Prices, quantities and money are decimal strings; seq, ids and ts are integers.")),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// The document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_value(build()).unwrap_or_default())
}
