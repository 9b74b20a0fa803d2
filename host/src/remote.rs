//! Operator commands against a running host: `exhost markets`, `users
//! create`, `deposit`, `module list`, `snapshot --host`, `cluster`. Readable
//! tables by default, `--json` (the host's answer as it came) for scripts,
//! and errors that say what to do next.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use exhost_server::Config;
use serde_json::{Value, json};

/// A running host and its operator token.
#[derive(Args, Clone)]
pub struct HostArgs {
    /// The running host.
    #[arg(long = "host", visible_alias = "url", default_value = "http://127.0.0.1:8080", env = "EXHOST_URL")]
    pub url: String,
    /// The operator token (default: EXHOST_ADMIN_TOKEN, then DATA_DIR/admin.token).
    #[arg(long)]
    pub token: Option<String>,
    /// The host's data directory, where its admin.token is (default: ./exhost-data).
    #[arg(long = "data-dir", env = "EXHOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl HostArgs {
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Ok(token) = std::env::var("EXHOST_ADMIN_TOKEN") {
            return Ok(token);
        }
        let mut config = Config::default();
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        let path = config.token_path();
        match std::fs::read_to_string(&path) {
            Ok(token) => Ok(token.trim().to_string()),
            Err(error) => bail!(
                "no operator token: pass --token TOKEN, set EXHOST_ADMIN_TOKEN, or give the host's --data-dir \
                 (could not read {}: {error})",
                path.display()
            ),
        }
    }
}

/// `exhost users ...`.
#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user and its API key; the secret is shown once.
    Create {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Whether a call carries the operator token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Operator,
    Public,
}

/// One call to the host's API; the answer's JSON, or an error that says what to do.
pub fn call(
    host: &HostArgs,
    auth: Auth,
    method: &str,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = host.url.trim_end_matches('/');
    let mut request = ureq::http::Request::builder().method(method).uri(format!("{base}{path}"));
    if auth == Auth::Operator {
        request = request.header("Authorization", format!("Bearer {}", host.token()?));
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            request = request.header("Content-Type", content_type);
            bytes
        }
        None => Vec::new(),
    };
    let mut response = agent.run(request.body(bytes)?).with_context(|| {
        format!(
            "could not reach the host at {base}: is `exhost serve` running there? (point --host or EXHOST_URL at it)"
        )
    })?;
    let status = response.status();
    let text = response.body_mut().read_to_string().context("reading the host's answer")?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    let code = answer["error"]["code"].as_str().unwrap_or("error");
    let message = answer["error"]["message"].as_str().unwrap_or(text.trim());
    if status.as_u16() == 401 || status.as_u16() == 403 {
        bail!(
            "{} {code}: {message}\nthe host did not accept the operator token: pass the token it was started with \
             (--token, EXHOST_ADMIN_TOKEN, or --data-dir of the host to read its admin.token)",
            status.as_u16()
        );
    }
    bail!("{} {code}: {message}", status.as_u16())
}

fn post_json(host: &HostArgs, path: &str, body: Value) -> anyhow::Result<Value> {
    call(host, Auth::Operator, "POST", path, Some(("application/json", serde_json::to_vec(&body)?)))
}

fn print_json(answer: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(answer)?);
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

/// A JSON value as a table cell: strings without quotes, null as "-".
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A module hash, short enough for a table (the first 12 hex digits; `--json` has it whole).
fn short_hash(value: &Value) -> String {
    value.as_str().map_or_else(|| cell(value), |hash| hash.chars().take(12).collect())
}

/// Two columns, one row per field, in the order given.
fn fields(answer: &Value, names: &[&str]) -> Table {
    let mut out = table(&["field", "value"]);
    for name in names {
        out.add_row(vec![name.to_string(), cell(&answer[*name])]);
    }
    out
}

/// Align the numeric columns right, as prices and sizes are read.
fn right_align(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

pub fn markets(host: &HostArgs, as_json: bool) -> anyhow::Result<()> {
    let answer = call(host, Auth::Public, "GET", "/v1/markets", None)?;
    if as_json {
        return print_json(&answer);
    }
    let mut out = table(&["symbol", "base", "quote", "tick size", "lot size", "matching module", "status"]);
    for market in answer.as_array().into_iter().flatten() {
        out.add_row(vec![
            cell(&market["symbol"]),
            cell(&market["base"]),
            cell(&market["quote"]),
            cell(&market["tick_size"]),
            cell(&market["lot_size"]),
            short_hash(&market["matching_module"]),
            cell(&market["status"]),
        ]);
    }
    right_align(&mut out, &[3, 4]);
    println!("{out}");
    Ok(())
}

pub fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create { host, json: as_json } => {
            let answer = post_json(&host, "/admin/v1/users", json!({}))?;
            if as_json {
                return print_json(&answer);
            }
            println!("{}", fields(&answer, &["user_id", "api_key", "api_secret", "seq"]));
            println!("Keep the API secret now: the host stores it sealed and never shows it again.");
            Ok(())
        }
    }
}

pub fn deposit(host: &HostArgs, user_id: u64, asset: &str, amount: &str, as_json: bool) -> anyhow::Result<()> {
    let answer =
        post_json(host, "/admin/v1/deposits", json!({ "user_id": user_id, "asset": asset, "amount": amount }))?;
    if as_json {
        return print_json(&answer);
    }
    println!("deposited {amount} {asset} to user {user_id} at seq {}", cell(&answer["seq"]));
    Ok(())
}

pub fn module_list(host: &HostArgs, as_json: bool) -> anyhow::Result<()> {
    let answer = call(host, Auth::Operator, "GET", "/admin/v1/modules", None)?;
    if as_json {
        return print_json(&answer);
    }
    let mut modules = table(&["hash", "kind", "abi", "state version", "bytes", "active for"]);
    for module in answer["modules"].as_array().into_iter().flatten() {
        let kind = match &module["error"] {
            Value::Null => cell(&module["kind"]),
            error => format!("unloadable: {}", cell(error)),
        };
        modules.add_row(vec![
            short_hash(&module["hash"]),
            kind,
            cell(&module["abi_version"]),
            cell(&module["state_version"]),
            cell(&module["size"]),
            cell(&module["active_for"]),
        ]);
    }
    right_align(&mut modules, &[2, 3, 4]);
    println!("{modules}");
    let activations = answer["activations"].as_array().map_or(&[][..], |a| a.as_slice());
    if activations.is_empty() {
        println!("no activations yet");
        return Ok(());
    }
    let mut history = table(&["seq", "target", "from", "to", "state versions"]);
    for activation in activations {
        history.add_row(vec![
            cell(&activation["seq"]),
            cell(&activation["target"]),
            short_hash(&activation["from"]),
            short_hash(&activation["to"]),
            format!("{} -> {}", cell(&activation["from_state_version"]), cell(&activation["to_state_version"])),
        ]);
    }
    right_align(&mut history, &[0]);
    println!("{history}");
    Ok(())
}

pub fn snapshot(host: &HostArgs, as_json: bool) -> anyhow::Result<()> {
    let answer = post_json(host, "/admin/v1/snapshots", json!({}))?;
    if as_json {
        return print_json(&answer);
    }
    println!("{}", fields(&answer, &["seq", "digest", "size_bytes"]));
    Ok(())
}

pub fn cluster(host: &HostArgs, as_json: bool) -> anyhow::Result<()> {
    let answer = call(host, Auth::Operator, "GET", "/admin/v1/cluster", None)?;
    if as_json {
        return print_json(&answer);
    }
    println!("{}", fields(&answer, &["node", "role", "active_node", "applied_seq", "log_seq", "term"]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_values_as_an_operator_reads_them() {
        assert_eq!(cell(&json!("27000.5")), "27000.5");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(42)), "42");
        assert_eq!(cell(&json!(["BTC-PERP", "positions"])), "BTC-PERP, positions");
        assert_eq!(short_hash(&json!("255a71d84f08040172696c5d88d98b26")), "255a71d84f08");
        assert_eq!(short_hash(&json!(null)), "-");
    }
}
