//! Shared harness for the end-to-end tests: start the real `exhost` binary on
//! 127.0.0.1 with a temporary data directory, talk HTTP to it, sign trader
//! requests, run the offline CLI.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "e2e-operator-token";
pub const EXHOST: &str = env!("CARGO_BIN_EXE_exhost");

/// A scratch directory removed on drop (kept if the test failed, for a look).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "exhost-e2e-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept data directory {} for inspection", self.0.display());
        }
    }
}

/// A running `exhost serve`.
pub struct Host {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    agent: ureq::Agent,
}

/// An HTTP answer: status and JSON body (`Value::Null` if the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<no error code>")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {} {}", self.status, self.body);
        self.body
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Host {
    /// Start the binary on a free loopback port with `data_dir`, plus extra config lines.
    pub fn start(data_dir: &Path) -> Host {
        Self::start_with(data_dir, "")
    }

    pub fn start_with(data_dir: &Path, config_toml: &str) -> Host {
        Self::start_args(data_dir, config_toml, &[])
    }

    /// Start with extra `exhost serve` arguments (a cluster node's, say).
    pub fn start_args(data_dir: &Path, config_toml: &str, extra: &[String]) -> Host {
        Self::start_program(Path::new(EXHOST), data_dir, config_toml, extra)
    }

    /// Start another build of `exhost` (an older release, to write a data
    /// directory the way it did).
    pub fn start_program(program: &Path, data_dir: &Path, config_toml: &str, extra: &[String]) -> Host {
        let config_path = data_dir.join("exhost.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&config_path, config_toml).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("host.log")).unwrap();
        let mut child = Command::new(program)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .env("EXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the exhost binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("exhost listening on ") {
                    let _ = tx.send(address.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.join("host.log")).unwrap_or_default();
                panic!("exhost did not start listening; its log:\n{log}");
            }
        };
        Host { child: Some(child), base, data_dir: data_dir.to_path_buf(), agent: agent() }
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The host's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("host.log")).unwrap_or_default()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, String)], body: Option<&[u8]>) -> Answer {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default()).unwrap();
        let mut response = match self.agent.run(request.clone()) {
            Ok(response) => response,
            // A pooled connection the server closed meanwhile: reads are retried once
            // on a fresh one (never writes, which could then be applied twice).
            Err(ureq::Error::Io(_)) if method == "GET" => {
                self.agent.run(request).unwrap_or_else(|error| panic!("{method} {path}: {error}"))
            }
            Err(error) => panic!("{method} {path}: {error}"),
        };
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], None)
    }

    /// An operator request; a `Null` body sends no body at all.
    pub fn admin(&self, method: &str, path: &str, body: Value) -> Answer {
        let headers = [("Authorization", format!("Bearer {ADMIN_TOKEN}"))];
        if body.is_null() {
            return self.request(method, path, &headers, None);
        }
        let body = body.to_string();
        self.request(method, path, &headers, Some(body.as_bytes()))
    }

    /// A new user with some money.
    pub fn new_trader(&self) -> Trader {
        let user = self.admin("POST", "/admin/v1/users", json!({})).ok();
        let trader = Trader {
            user_id: user["user_id"].as_u64().unwrap(),
            api_key: user["api_key"].as_str().unwrap().to_string(),
            api_secret: user["api_secret"].as_str().unwrap().to_string(),
        };
        self.admin(
            "POST",
            "/admin/v1/deposits",
            json!({"user_id": trader.user_id, "asset": "USD", "amount": "1000000"}),
        )
        .ok();
        trader
    }

    /// A signed trader request.
    pub fn signed(&self, trader: &Trader, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = trader.headers(method, path, body.as_bytes());
        self.request(method, path, &headers, Some(body.as_bytes()))
    }

    /// The last sequence number with events, as the event log shows it.
    pub fn last_event_seq(&self) -> u64 {
        let mut from = 1;
        loop {
            let page = self.admin("GET", &format!("/admin/v1/events?from_seq={from}&limit=10000"), Value::Null).ok();
            let next = page["next_seq"].as_u64().unwrap();
            if page["events"].as_array().unwrap().is_empty() {
                return next.saturating_sub(1);
            }
            from = next;
        }
    }

    /// Every event, in order.
    pub fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let page = self.admin("GET", &format!("/admin/v1/events?from_seq={from}&limit=10000"), Value::Null).ok();
            let events = page["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return out;
            }
            out.extend(events);
            from = page["next_seq"].as_u64().unwrap();
        }
    }

    /// Stop with SIGTERM and wait (a clean shutdown takes a snapshot).
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            panic!("exhost did not stop within 60 s of SIGTERM");
        }
    }

    /// Kill with SIGKILL: a crash.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("exhost had already exited: {status}; its log:\n{}", self.log());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Debug)]
pub struct Trader {
    pub user_id: u64,
    pub api_key: String,
    pub api_secret: String,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A timestamp for a new signature by `api_key`: the clock, but never the
/// same millisecond twice for one key, since a state-changing signature
/// counts once (two identical orders in one millisecond would be one replay).
/// Kept per key: one clock for the whole process ran ahead of the real one
/// under a crash loop's load (over a thousand signatures a second), until
/// other tests' requests were refused as 13 s in the future.
pub fn fresh_timestamp_ms(api_key: &str) -> u64 {
    static LAST: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());
    let now = now_ms();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let entry = last.entry(api_key.to_string()).or_insert(0);
    *entry = if *entry < now { now } else { *entry + 1 };
    *entry
}

impl Trader {
    /// Headers of a request signed with signature version 2.
    pub fn headers(&self, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = fresh_timestamp_ms(&self.api_key).to_string();
        let signature = exhost_server::auth::sign_v2(&self.api_secret, &timestamp, method, path, body);
        vec![
            ("X-API-KEY", self.api_key.clone()),
            ("X-TIMESTAMP", timestamp),
            ("X-SIGNATURE-VERSION", "2".into()),
            ("X-SIGNATURE", signature),
        ]
    }

    /// Headers of a request signed with the original version 1 (no version header).
    pub fn headers_v1(&self, method: &str, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = fresh_timestamp_ms(&self.api_key).to_string();
        let signature = exhost_server::auth::sign(&self.api_secret, &timestamp, method, path, body);
        vec![("X-API-KEY", self.api_key.clone()), ("X-TIMESTAMP", timestamp), ("X-SIGNATURE", signature)]
    }

    /// The WebSocket `auth` message for a socket whose challenge is `nonce`.
    pub fn ws_auth(&self, nonce: &str) -> Value {
        let timestamp = fresh_timestamp_ms(&self.api_key).to_string();
        let signature = exhost_server::auth::sign_ws(&self.api_secret, &timestamp, nonce);
        json!({"op": "auth", "api_key": self.api_key, "timestamp": timestamp, "signature": signature, "nonce": nonce})
    }
}

/// Run the CLI on a data directory.
pub fn exhost(args: &[&str], data_dir: &Path) -> Output {
    exhost_program(Path::new(EXHOST), args, data_dir)
}

/// Run another build's CLI on a data directory.
pub fn exhost_program(program: &Path, args: &[&str], data_dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("the exhost binary runs")
}

/// The line of `output` that starts with `prefix`, without it.
pub fn line_after<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|line| line.strip_prefix(prefix))
}

/// The seeded generator of every test (one copy, in `exhost-seeded`).
#[allow(unused_imports)]
pub use exhost_seeded::Rng;

/// The same module under another hash: a custom section changes the bytes, not the code.
pub fn rebuild(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb("exhost-build".len(), &mut payload);
    payload.extend_from_slice(b"exhost-build");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}
