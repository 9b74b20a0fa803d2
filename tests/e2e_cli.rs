//! The operator commands against a running host, on the real binary:
//! `exhost markets`, `users create`, `deposit`, `module list`, `snapshot
//! --host`, `cluster`, as tables and as `--json`, with the token from the
//! flag, the environment or a data directory, and errors that say what to do;
//! and `exhost config`, the configuration those layers give.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

/// Run `exhost ARGS` with no token in the environment.
fn run(args: &[&str]) -> Output {
    Command::new(EXHOST).args(args).env_remove("EXHOST_ADMIN_TOKEN").env_remove("EXHOST_URL").output().unwrap()
}

fn ok(output: Output, args: &[&str]) -> String {
    assert!(output.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn failed(output: Output, args: &[&str]) -> String {
    assert!(!output.status.success(), "{args:?} should have failed:\n{}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn an_operator_runs_the_exchange_from_the_command_line() {
    let dir = TempDir::new("cli");
    let host = Host::start(&dir.path().join("host"));
    let with_host = |args: &[&str]| -> Vec<String> {
        args.iter().map(|a| a.to_string()).chain(["--host".to_string(), host.base.clone()]).collect()
    };
    let operator = |args: &[&str]| -> String {
        let mut full = with_host(args);
        full.extend(["--token".to_string(), ADMIN_TOKEN.to_string()]);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        ok(run(&full), &full)
    };
    let json = |args: &[&str]| -> Value {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--json");
        serde_json::from_str(&operator(&full)).unwrap()
    };

    // Markets are public: no token needed, a table by default, the API's answer with --json.
    let args = with_host(&["markets"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let table = ok(run(&args), &args);
    assert!(table.contains("BTC-PERP") && table.contains("symbol") && table.contains("tick size"), "{table}");
    let markets = json(&["markets"]);
    assert_eq!(markets, host.get("/v1/markets").ok());
    let pricetime = markets[0]["matching_module"].as_str().unwrap().to_string();
    assert!(table.contains(&pricetime[..12]), "the table names the module by its hash's prefix:\n{table}");

    // A user, a deposit, and the deposit in the exchange's books.
    let user = json(&["users", "create"]);
    let user_id = user["user_id"].as_u64().unwrap();
    assert!(user["api_key"].as_str().is_some_and(|k| !k.is_empty()), "{user}");
    assert!(user["api_secret"].as_str().is_some_and(|s| !s.is_empty()), "{user}");
    let table = operator(&["users", "create"]);
    assert!(table.contains("api_secret") && table.contains("never shows it again"), "{table}");
    let deposit = json(&["deposit", &user_id.to_string(), "USD", "1250.5"]);
    assert!(deposit["seq"].as_u64().unwrap() > user["seq"].as_u64().unwrap(), "{deposit}");
    let said = operator(&["deposit", &user_id.to_string(), "USD", "0.5"]);
    assert!(said.starts_with(&format!("deposited 0.5 USD to user {user_id} at seq ")), "{said}");
    let ledger = host.admin("GET", "/admin/v1/ledger", Value::Null).ok();
    assert_eq!(ledger["USD"]["deposits"], "1251.000000", "{ledger}");

    // Modules: both embedded ones, what each is active for, and no activations yet.
    let modules = json(&["module", "list"]);
    assert_eq!(modules["modules"].as_array().unwrap().len(), 2, "{modules}");
    let table = operator(&["module", "list"]);
    assert!(table.contains(&pricetime[..12]) && table.contains("BTC-PERP"), "{table}");
    assert!(table.contains("positions") && table.contains("no activations yet"), "{table}");

    // A snapshot taken by the running host, and the cluster view of a single node.
    let snapshot = json(&["snapshot"]);
    assert_eq!(snapshot["seq"], deposit["seq"].as_u64().unwrap() + 1, "{snapshot}");
    assert_eq!(snapshot["digest"].as_str().unwrap().len(), 64, "{snapshot}");
    let cluster = json(&["cluster"]);
    assert_eq!(cluster["role"], "active", "{cluster}");
    assert_eq!(cluster["applied_seq"], cluster["log_seq"], "{cluster}");
    assert!(operator(&["cluster"]).contains("applied_seq"));

    // The token from a data directory's admin.token, and from the environment.
    let token_dir = dir.path().join("token-only");
    std::fs::create_dir_all(&token_dir).unwrap();
    std::fs::write(token_dir.join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let args = with_host(&["cluster", "--json", "--data-dir", token_dir.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(run(&args), &args);
    let args = with_host(&["cluster", "--json"]);
    let from_env = Command::new(EXHOST).args(&args).env("EXHOST_ADMIN_TOKEN", ADMIN_TOKEN).output().unwrap();
    assert!(from_env.status.success(), "{}", String::from_utf8_lossy(&from_env.stderr));

    // Errors that say what to do, and change nothing.
    let last = host.last_event_seq();
    let args = with_host(&["deposit", &user_id.to_string(), "USD", "5", "--token", "wrong"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = failed(run(&args), &args);
    assert!(said.contains("403 forbidden") && said.contains("did not accept the operator token"), "{said}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let args = with_host(&["module", "list", "--data-dir", empty.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = failed(run(&args), &args);
    assert!(said.contains("no operator token") && said.contains("--token"), "{said}");
    let args = ["markets", "--host", "http://127.0.0.1:1"];
    let said = failed(run(&args), &args);
    assert!(said.contains("could not reach the host") && said.contains("exhost serve"), "{said}");
    let refused = |args: &[&str]| {
        let mut full = with_host(args);
        full.extend(["--token".to_string(), ADMIN_TOKEN.to_string()]);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        failed(run(&full), &full)
    };
    let said = refused(&["deposit", "999999", "USD", "5"]);
    assert!(said.contains("404 not_found: no user 999999"), "the host's own error is passed on: {said}");
    let said = refused(&["deposit", &user_id.to_string(), "USD", "1.0000001"]);
    assert!(said.contains("400 invalid_amount"), "{said}");
    assert_eq!(host.last_event_seq(), last, "refused commands changed nothing");
    host.stop();
}

#[test]
fn exhost_config_prints_the_configuration_the_host_would_run_with() {
    let dir = TempDir::new("cli-config");
    let file = dir.path().join("exhost.toml");
    std::fs::write(&file, "snapshot_every_commands = 5000\nlisten = \"127.0.0.1:7000\"\n").unwrap();
    let printed = |command: &mut Command| {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().parse::<toml::Table>().unwrap()
    };
    // The file over the defaults.
    let config = printed(Command::new(EXHOST).args(["config", "--config"]).arg(&file).env_remove("EXHOST_LISTEN"));
    assert_eq!(config["snapshot_every_commands"].as_integer(), Some(5000));
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:7000"));
    assert_eq!(config["journal_sync"].as_bool(), Some(true), "what the file leaves out keeps its default");
    // Flags and environment over the file.
    let config = printed(
        Command::new(EXHOST)
            .args(["config", "--listen", "127.0.0.1:9999", "--config"])
            .arg(&file)
            .env("EXHOST_DATA_DIR", dir.path()),
    );
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(config["data_dir"].as_str(), dir.path().to_str());
    let config =
        printed(Command::new(EXHOST).args(["config", "--config"]).arg(&file).env("EXHOST_LISTEN", "0.0.0.0:81"));
    assert_eq!(config["listen"].as_str(), Some("0.0.0.0:81"));
    // The example file is the defaults, key for key.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/exhost.toml");
    let from_example = printed(
        Command::new(EXHOST)
            .args(["config", "--config"])
            .arg(&example)
            .env_remove("EXHOST_LISTEN")
            .env_remove("EXHOST_DATA_DIR"),
    );
    let defaults =
        printed(Command::new(EXHOST).arg("config").env_remove("EXHOST_LISTEN").env_remove("EXHOST_DATA_DIR"));
    assert_eq!(from_example, defaults);
    // A key the host does not know is refused, by name.
    std::fs::write(&file, "snapshot_every = 5\n").unwrap();
    let output = Command::new(EXHOST).args(["config", "--config"]).arg(&file).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("snapshot_every"), "{output:?}");
}

#[test]
fn logs_are_json_lines_with_a_flag_and_engine_lines_carry_their_seq() {
    let dir = TempDir::new("cli-log");
    let data = dir.path().join("host");
    let host = Host::start_args(&data, "", &["--log-format".into(), "json".into()]);
    let user = host.admin("POST", "/admin/v1/users", serde_json::json!({})).ok();
    host.stop();
    let log = std::fs::read_to_string(data.join("host.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    assert!(lines.iter().all(|line| line["level"].is_string() && line["fields"]["message"].is_string()), "{log}");
    // The snapshot the clean shutdown takes is an engine line, at the user's seq.
    let stored = lines.iter().find(|line| line["fields"]["message"] == "snapshot stored").expect("a snapshot line");
    assert_eq!(stored["fields"]["seq"], user["seq"], "{stored}");
    // And text is the default: the same host's lines without the flag are not JSON.
    let text_dir = dir.path().join("text");
    Host::start(&text_dir).stop();
    let text = std::fs::read_to_string(text_dir.join("host.log")).unwrap();
    assert!(text.lines().any(|line| line.contains("INFO")), "{text}");
    assert!(text.lines().all(|line| serde_json::from_str::<Value>(line).is_err()), "{text}");
}
