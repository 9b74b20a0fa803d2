//! The client examples in `examples/`, run as the README shows against the
//! real binary: each signs requests, places and cancels orders, follows the
//! book over the WebSocket, and must end with the host agreeing with it.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::*;

/// Run a client example against a fresh host: it must say each step of its
/// session, and end with its followed book at the host's last seq. Returns
/// the host's book afterwards, for what the example left resting.
fn run_client(name: &str, command: &mut Command) -> serde_json::Value {
    let dir = TempDir::new(name);
    let host = Host::start(dir.path());
    let output =
        command.args(["--host", &host.base, "--token", ADMIN_TOKEN]).env_remove("EXHOST_URL").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the example failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for said in
        ["created user", "placed order", "cancelled order", "refused as expected: invalid_price", "book in step"]
    {
        assert!(stdout.contains(said), "no {said:?} in:\n{stdout}");
    }
    let book = host.get("/v1/markets/BTC-PERP/book").ok();
    let line = stdout.lines().find(|line| line.starts_with("book in step at seq ")).unwrap();
    let seq: u64 = line["book in step at seq ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert_eq!(seq, book["seq"].as_u64().unwrap(), "the followed book reached the host's last seq: {line}");
    host.stop();
    book
}

#[test]
fn the_python_client_trades_and_follows_the_book() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/exhost_client.py");
    let book = run_client("client-python", Command::new("python3").arg(&script));
    // What the example did is what the host holds: the second buy rests, the first is gone.
    assert_eq!(book["bids"], json!([["25900.0", "0.020"]]), "{book}");
    assert_eq!(book["asks"], json!([]), "{book}");
}

/// `npm ci` (from the lock file) and `tsc`, as the README's steps do.
fn build_typescript_example(dir: &Path) {
    for args in [&["ci", "--no-audit", "--no-fund"][..], &["run", "build"][..]] {
        let output = Command::new("npm").args(args).current_dir(dir).output().expect("npm runs");
        assert!(
            output.status.success(),
            "npm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_typescript_client_trades_and_follows_the_book() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/typescript");
    build_typescript_example(&example);
    let book = run_client(
        "client-typescript",
        Command::new("node")
            .args(["--experimental-websocket", "--no-warnings", "dist/exhost_client.js"])
            .current_dir(&example),
    );
    // The second sell rests, the first is gone.
    assert_eq!(book["asks"], json!([["28100.0", "0.030"]]), "{book}");
    assert_eq!(book["bids"], json!([]), "{book}");
}
