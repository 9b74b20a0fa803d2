//! Handlers in process: the whole router over the write path on the
//! in-memory store, no port, no binary. Mostly the error paths, each answer
//! checked for the status, the API's error shape and its code, and that
//! nothing was journaled for it; and the write path's halt on a failing
//! journal, which only a failing disk shows otherwise.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use exhost_node::secrets::Sealer;
use exhost_server::serve::{Parts, assemble};
use exhost_server::{AppState, Config, router};
use exhost_store::memory::{Fault, MemoryBackend};
use exhost_store::{CommandLog, Store};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "operator-token-for-tests";

struct Host {
    state: AppState,
    backend: Arc<MemoryBackend>,
}

impl Host {
    async fn new() -> Host {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::with_backend(backend.clone());
        let parts = Parts {
            store,
            admin_token: TOKEN.into(),
            sealer: Arc::new(Sealer::from_key([7; 32])),
            watermark: None,
            metrics: None,
            log: None,
            cluster: None,
        };
        let state = assemble(Config::default(), parts).await.expect("a host over the in-memory store");
        Host { state, backend }
    }

    fn journal_last_seq(&self) -> u64 {
        self.state.store.last_seq().expect("the journal reads").unwrap_or(0)
    }

    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_string())).expect("a well-formed request");
        let response = router(self.state.clone()).oneshot(request).await.expect("the router answers");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("the body reads").to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
        (status, value)
    }

    async fn operator(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let bearer = format!("Bearer {TOKEN}");
        self.call(method, uri, &[("authorization", &bearer), ("content-type", "application/json")], &body.to_string())
            .await
    }
}

/// The API's error shape, and its code.
fn error_code(status: StatusCode, body: &Value, expected_status: StatusCode) -> &str {
    assert_eq!(status, expected_status, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error says what went wrong: {body}");
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_host_is_healthy_and_lists_its_default_market() {
    let host = Host::new().await;
    let (status, body) = host.call("GET", "/healthz", &[], "").await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = host.call("GET", "/v1/markets", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains("BTC-PERP"), "{body}");
    // The position module's install and the market's creation.
    assert_eq!(host.journal_last_seq(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_mean_nothing_are_refused_and_journal_nothing() {
    let host = Host::new().await;
    let before = host.journal_last_seq();
    let (status, body) = host.call("GET", "/v1/no-such-thing", &[], "").await;
    assert_eq!(error_code(status, &body, StatusCode::NOT_FOUND), "not_found");
    let (status, body) = host.call("PUT", "/v1/markets", &[], "").await;
    assert_eq!(error_code(status, &body, StatusCode::METHOD_NOT_ALLOWED), "method_not_allowed");
    let (status, body) = host.call("GET", "/v1/markets/NOPE-PERP/book", &[], "").await;
    assert_eq!(error_code(status, &body, StatusCode::NOT_FOUND), "unknown_market");
    // A trader endpoint without a signature, and an operator endpoint without, and with a wrong, token.
    let order = json!({ "symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "100", "quantity": "1" });
    let (status, body) =
        host.call("POST", "/v1/orders", &[("content-type", "application/json")], &order.to_string()).await;
    assert_eq!(error_code(status, &body, StatusCode::UNAUTHORIZED), "unauthorized");
    let (status, body) = host.call("POST", "/admin/v1/deposits", &[], "{}").await;
    assert_eq!(error_code(status, &body, StatusCode::UNAUTHORIZED), "unauthorized");
    let (status, body) =
        host.call("POST", "/admin/v1/deposits", &[("authorization", "Bearer not-the-token")], "{}").await;
    assert!(matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), "{status} {body}");
    // The operator, with bodies that do not parse or do not fit.
    let (status, body) = host
        .call(
            "POST",
            "/admin/v1/users",
            &[("authorization", &format!("Bearer {TOKEN}")), ("content-type", "application/json")],
            "{not json",
        )
        .await;
    assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "bad_request");
    let (status, body) = host.operator("POST", "/admin/v1/deposits", json!({ "user_id": 1 })).await;
    assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "bad_request");
    let (status, body) = host.operator("POST", "/admin/v1/markets/NOPE-PERP/module", json!({ "hash": "00" })).await;
    assert_eq!(status.as_u16() / 100, 4, "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(host.journal_last_seq(), before, "nothing refused reached the journal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_journal_halts_the_write_path_and_says_the_outcome_is_unknown() {
    let host = Host::new().await;
    // Negative control: the same request succeeds while the journal works.
    let (status, body) = host.operator("POST", "/admin/v1/users", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let journaled = host.journal_last_seq();
    assert_eq!(journaled, 3);

    host.backend.inject(Fault::FailSync);
    let (status, body) = host.operator("POST", "/admin/v1/users", json!({})).await;
    assert_eq!(error_code(status, &body, StatusCode::SERVICE_UNAVAILABLE), "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown"), "a failed journal write leaves the outcome unknown: {message}");

    // Halted: health says so, and the next command is refused before the journal.
    let (status, body) = host.call("GET", "/healthz", &[], "").await;
    assert_eq!(error_code(status, &body, StatusCode::SERVICE_UNAVAILABLE), "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("journal write failed"), "{body}");
    let (status, body) = host.operator("POST", "/admin/v1/users", json!({})).await;
    assert_eq!(error_code(status, &body, StatusCode::SERVICE_UNAVAILABLE), "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("not recorded"), "{body}");
    let (writes, _) = host.backend.counts();
    let (status, _) = host.operator("POST", "/admin/v1/users", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(host.backend.counts().0, writes, "a halted node writes nothing more");
}

/// A documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{symbol}", "BTC-PERP")
        .replace("{order_id}", "1")
        .replace("{client_order_id}", "c-1")
        .replace("{user_id}", "1")
        .replace("{file}", "index.js")
}

/// The fallback's answers: a route the router does not serve.
fn is_fallback(status: StatusCode, body: &Value) -> bool {
    (status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such endpoint")
        || status == StatusCode::METHOD_NOT_ALLOWED
}

/// The router is built with `utoipa_axum::routes!` only (`tests/architecture.rs`
/// keeps it so), so every route it serves is in the document. This checks the
/// rest: every documented operation is served (it does not fall through to the
/// fallback), and a documented path answers 405 to every method the document
/// does not give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_router_serve_the_same_operations() {
    let host = Host::new().await;
    let (status, document) = host.call("GET", "/openapi.json", &[], "").await;
    assert_eq!(status, StatusCode::OK, "{document}");
    let paths = document["paths"].as_object().expect("the document has paths");
    assert!(paths.len() >= 30, "every endpoint is documented: {:?}", paths.keys());
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut served = 0;
    for (path, item) in paths {
        let uri = concrete(path);
        assert!(!uri.contains('{'), "a parameter the test does not fill: {path}");
        for method in methods {
            let (status, body) = host.call(&method.to_uppercase(), &uri, &[], "").await;
            if item.get(method).is_some() {
                assert!(!is_fallback(status, &body), "{method} {path} is documented but not served: {status} {body}");
                served += 1;
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is served but not documented");
            }
        }
    }
    assert!(served >= 34, "{served} operations");
    // Negative control: a path nobody declared falls through, so the check above can fail.
    let (status, body) = host.call("GET", "/v1/undocumented", &[], "").await;
    assert!(is_fallback(status, &body), "{status} {body}");
}

/// What the document says of parameters is what the server does: a bound in
/// the document is a bound of the server, and every error is the `ErrorBody`
/// shape in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_the_bounds_the_server_keeps() {
    let host = Host::new().await;
    let (_, document) = host.call("GET", "/openapi.json", &[], "").await;
    let parameter = |path: &str, name: &str| -> Value {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|parameters| parameters.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{path} documents {name}"))
    };
    for (path, name, uri) in [
        ("/v1/markets/{symbol}/book", "depth", "/v1/markets/BTC-PERP/book?depth="),
        ("/v1/markets/{symbol}/trades", "limit", "/v1/markets/BTC-PERP/trades?limit="),
    ] {
        let schema = &parameter(path, name)["schema"];
        let (minimum, maximum) = (schema["minimum"].as_i64().unwrap(), schema["maximum"].as_i64().unwrap());
        for (value, accepted) in [(minimum, true), (maximum, true), (minimum - 1, false), (maximum + 1, false)] {
            let (status, body) = host.call("GET", &format!("{uri}{value}"), &[], "").await;
            assert_eq!(status == StatusCode::OK, accepted, "{name}={value}: {status} {body}");
        }
    }
    // Negative numbers are outside every integer parameter the document gives.
    let at_seq = parameter("/admin/v1/ledger", "at_time");
    assert_eq!(at_seq["schema"]["minimum"], 0, "{at_seq}");
    let (status, body) = host.call("GET", "/v1/markets/BTC-PERP/trades?limit=-1", &[], "").await;
    assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "bad_request");
    // Every error answer names the one error schema.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (code, response) in operation["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
}
