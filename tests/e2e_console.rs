//! The web console, in a real browser, against the real binary: Debian's
//! chromium driven by playwright-core (`host/server/console/tests/console.test.mjs`).
//! The script places orders through the API, sees them in the console's book
//! and trades, cancels one and sees it leave, and signs in as the operator to
//! see the modules and the ledger; it saves screenshots beside the build
//! (`<target>/release/test-artifacts/console/`). The committed build
//! (`console/dist`, which the binary embeds) must be what its sources build.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use support::*;

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/server/console")
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?} does not start: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `npm ci` once per test process (both tests use the same node_modules).
fn install() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = console_dir();
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir));
        dir
    })
}

/// Every file under `dir`, by its path relative to it.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

#[test]
fn the_committed_console_is_what_its_sources_build() {
    let dir = install();
    let out = TempDir::new("console-build");
    run(Command::new("npm")
        .args(["run", "build", "--", "--outDir"])
        .arg(out.path())
        .arg("--emptyOutDir")
        .current_dir(dir));
    let built = files(out.path());
    let committed = files(&dir.join("dist"));
    assert!(built.contains_key("index.html"), "{:?}", built.keys());
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "rebuild the console (cd host/server/console && npm ci && npm run build) and commit dist/"
    );
    for (name, bytes) in &built {
        assert!(committed[name] == *bytes, "{name} differs from the committed dist/: rebuild and commit it");
    }
}

#[test]
fn the_console_shows_orders_placed_through_the_api_in_a_real_browser() {
    let dir = install();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "no chromium at {chromium}: run .ci/setup (apt-get install chromium)");
    let data = TempDir::new("console");
    let host = Host::start(data.path());
    // The embedded page itself, as a browser first asks for it.
    let page = host.get("/console/");
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/console/assets/"), "{}", page.text);
    let shots = Path::new(EXHOST).parent().unwrap().join("test-artifacts/console");
    let _ = std::fs::remove_dir_all(&shots);
    let started = Instant::now();
    let output = Command::new("node")
        .arg("tests/console.test.mjs")
        .current_dir(dir)
        .env("EXHOST_URL", &host.base)
        .env("EXHOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EXHOST_SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env_remove("EXHOST_CONSOLE_URL")
        .output()
        .expect("node runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}\nhost log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        host.log()
    );
    for shot in
        ["01-markets.png", "02-book.png", "03-after-cancel.png", "04-operator-modules.png", "05-operator-ledger.png"]
    {
        let bytes = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(bytes > 10_000, "screenshot {shot} was saved ({bytes} bytes)");
    }
    eprintln!("browser test took {:.1} s; screenshots in {}", took.as_secs_f64(), shots.display());
    // What the browser did went through the API: its orders are in the journal.
    let events = host.all_events();
    assert!(events.iter().any(|event| event["type"] == "trade"), "the script's crossing order traded");
    host.stop();
}
