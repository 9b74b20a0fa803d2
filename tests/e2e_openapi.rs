//! The OpenAPI document against the live host, by a property-based tester
//! that knows only the document: schemathesis generates requests from it
//! (valid ones and ones that break it), and checks every answer against it:
//! no 5xx, every status and content type documented, bodies in their
//! schemas, requests outside the schemas refused, credentials enforced.
//! Trader requests are signed by `tests/openapi/exhost_hooks.py`.
//!
//! schemathesis comes from PyPI into a venv made by `.ci/setup`
//! (`/var/tmp/exhost-venv`); `EXHOST_SCHEMATHESIS` names another `st`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use support::*;

fn schemathesis() -> PathBuf {
    let st = std::env::var("EXHOST_SCHEMATHESIS").map(PathBuf::from).unwrap_or("/var/tmp/exhost-venv/bin/st".into());
    assert!(st.exists(), "no schemathesis at {}: run .ci/setup", st.display());
    st
}

/// `st run` on `location` with the hooks and credentials for `host`.
fn st_run(host: &Host, trader: &Trader, location: &str, extra: &[&str]) -> Output {
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openapi");
    let report = TempDir::new("schemathesis");
    Command::new(schemathesis())
        .args(["run", location, "--url", &host.base, "--request-timeout", "20", "--workers", "2"])
        .args(extra)
        .arg("--report-dir")
        .arg(report.path())
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "exhost_hooks")
        .env("EXHOST_TRADER_KEY", &trader.api_key)
        .env("EXHOST_TRADER_SECRET", &trader.api_secret)
        .env("EXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .current_dir(report.path())
        .output()
        .expect("schemathesis runs")
}

fn said(output: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn a_property_based_tester_finds_no_mismatch_with_the_document_and_no_server_error() {
    let dir = TempDir::new("openapi");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    // Something to find: a resting order of the trader, a trade, a snapshot.
    let order = json!({"symbol": "BTC-PERP", "side": "buy", "type": "limit", "price": "25000", "qty": "0.010"});
    host.signed(&trader, "POST", "/v1/orders", Some(order)).ok();
    let seed = std::env::var("EXHOST_API_FUZZ_SEED").unwrap_or_else(|_| (now_ms() % 1_000_000).to_string());
    eprintln!("schemathesis seed {seed} (EXHOST_API_FUZZ_SEED={seed} repeats this run)");
    let output = st_run(
        &host,
        &trader,
        &format!("{}/openapi.json", host.base),
        &[
            "--checks",
            "all",
            // The document cannot say that a price must be a multiple of the
            // tick, or which user ids exist: valid-looking requests may be refused.
            "--exclude-checks",
            "positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            &seed,
        ],
    );
    let report = said(&output);
    assert!(output.status.success(), "schemathesis found a mismatch (seed {seed}):\n{report}");
    assert!(report.contains("passed"), "{report}");
    // The host is still whole after everything it was sent.
    assert_eq!(host.get("/healthz").ok()["status"], "ok");
    let ledger = host.admin("GET", "/admin/v1/ledger", json!({})).ok();
    assert_eq!(ledger["USD"]["imbalance"], "0.000000", "{ledger}");
    assert!(!host.log().contains("panicked"), "{}", host.log());
    host.stop();
}

/// Negative control: the same tester, given the document without the 400
/// answer of one endpoint, sees the server's 400 as undocumented.
#[test]
fn the_tester_sees_an_answer_the_document_does_not_give() {
    let dir = TempDir::new("openapi-control");
    let host = Host::start(dir.path());
    let trader = host.new_trader();
    let mut document = host.get("/openapi.json").ok();
    let operation = &mut document["paths"]["/v1/markets/{symbol}/trades"]["get"];
    let responses = operation["responses"].as_object_mut().unwrap();
    assert!(responses.remove("400").is_some(), "the document gives the 400 of a bad limit");
    // Only the market that exists, so the bad limits reach the limit check
    // instead of stopping at 404 for an unknown symbol.
    for parameter in operation["parameters"].as_array_mut().unwrap() {
        if parameter["name"] == "symbol" {
            parameter["schema"] = json!({"type": "string", "enum": ["BTC-PERP"]});
        }
    }
    let file = dir.path().join("openapi-without-400.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let output = st_run(
        &host,
        &trader,
        file.to_str().unwrap(),
        &[
            "--checks",
            "status_code_conformance",
            "--phases",
            "coverage",
            "--include-path",
            "/v1/markets/{symbol}/trades",
        ],
    );
    let report = said(&output);
    assert!(!output.status.success(), "the tester missed the undocumented 400:\n{report}");
    assert!(report.contains("Undocumented status code") && report.contains("Received: 400"), "{report}");
    host.stop();
}
