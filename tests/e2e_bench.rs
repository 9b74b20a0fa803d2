//! The benchmark suite's smoke run: `exhost-bench all --quick` must run end
//! to end and print one well-formed JSON figure per line for every part of
//! the suite. Nothing here asserts on speed (speed belongs in the benchmarks,
//! not in tests); this keeps the suite from rotting.

use std::collections::BTreeSet;

use serde_json::Value;

const EXHOST_BENCH: &str = env!("CARGO_BIN_EXE_exhost-bench");

#[test]
fn the_benchmark_suite_runs_and_reports_every_figure() {
    let dir = std::env::temp_dir().join(format!("exhost-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(EXHOST_BENCH)
        .args(["all", "--quick", "--data-dir"])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("exhost-bench runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let figures: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect();
    let kinds: BTreeSet<&str> = figures.iter().filter_map(|f| f["bench"].as_str()).collect();
    for kind in ["engine", "journal", "write_path", "load", "memory", "swap", "fill", "startup"] {
        assert!(kinds.contains(kind), "no {kind} figure in:\n{stdout}");
    }
    for figure in &figures {
        for (name, value) in figure.as_object().unwrap() {
            if let Some(number) = value.as_f64() {
                assert!(number.is_finite() && number >= 0.0, "{name} = {number} in {figure}");
            }
        }
    }
    let engine_wasm = figures.iter().find(|f| f["bench"] == "engine" && f["impl"] == "wasm").unwrap();
    assert!(engine_wasm["commands_per_sec"].as_f64().unwrap() > 0.0);
    // The peer order book ran on the same flow, and the growth run spread it over 50 markets.
    assert!(figures.iter().any(|f| f["ratio"] == "wasm/peer"), "no peer ratio in:\n{stdout}");
    assert!(figures.iter().any(|f| f["bench"] == "engine" && f["markets"] == 50), "no 50-market run in:\n{stdout}");
    // Both order-entry paths answered requests through a real host.
    for protocol in ["http", "ws"] {
        let load = figures.iter().find(|f| f["bench"] == "load" && f["protocol"] == protocol).unwrap();
        assert!(load["answered"].as_u64().unwrap() > 0, "{load}");
    }
    let startups: Vec<&Value> = figures.iter().filter(|f| f["bench"] == "startup").collect();
    assert_eq!(startups.len(), 2, "from the journal and from a snapshot");
    assert_eq!(startups[1]["replayed"], 0, "the second start-up begins at the snapshot");
}
