//! Builds the reference plugins to `wasm32-unknown-unknown` from source, so the
//! host binary embeds exactly the plugin code in this checkout. Module binaries
//! are never committed.
//!
//! The nested cargo uses its own target directory (inside the outer one), so it
//! never waits on the outer build's lock, and the `wasm-plugin` profile of the
//! workspace manifest (LTO, one codegen unit, abort on panic).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins to embed: (package, wasm file stem).
const PLUGINS: &[(&str, &str)] = &[("exhost-pricetime", "exhost_pricetime"), ("exhost-positions", "exhost_positions")];

/// Built only with the `test-plugins` feature, each group by its own cargo run:
/// the testbed links the reference book without its exports, and features are
/// unified within one run.
const TEST_PLUGINS: &[&[(&str, &str)]] =
    &[&[("exhost-prorata", "exhost_prorata")], &[("exhost-testbed", "exhost_testbed")]];

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.ancestors().nth(2).expect("host/embedded sits two levels below the workspace");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut groups: Vec<&[(&str, &str)]> = vec![PLUGINS];
    if env::var_os("CARGO_FEATURE_TEST_PLUGINS").is_some() {
        groups.extend_from_slice(TEST_PLUGINS);
    }
    for watched in ["guest-sdk", "plugins", "examples/prorata", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }

    check_wasm_target();
    for (index, plugins) in groups.into_iter().enumerate() {
        // A target directory per group: the same crate built with other features in
        // another group must never replace this group's artifacts.
        let target_dir = outer_target_dir(&out_dir).join(format!("wasm-plugins-{index}"));
        build(workspace, &target_dir, plugins);
        for (_, stem) in plugins {
            let built = target_dir.join(TARGET).join("wasm-plugin").join(format!("{stem}.wasm"));
            let embedded = out_dir.join(format!("{stem}.wasm"));
            std::fs::copy(&built, &embedded)
                .unwrap_or_else(|error| panic!("copy {} to {}: {error}", built.display(), embedded.display()));
        }
    }
}

/// One nested `cargo build` of some plugins for wasm32.
fn build(workspace: &Path, target_dir: &Path, plugins: &[(&str, &str)]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--target", TARGET, "--profile", "wasm-plugin", "--target-dir"])
        .arg(target_dir);
    for (package, _) in plugins {
        command.args(["-p", package]);
    }
    // The outer build's flags are for the host; the wasm build takes its own from
    // .cargo/config.toml, which CARGO_ENCODED_RUSTFLAGS would silently override.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_FEATURE_") {
            command.env_remove(key);
        }
    }
    let status = command.status().expect("cargo can be started for the wasm plugins");
    if !status.success() {
        panic!("building the plugins {plugins:?} for {TARGET} failed (see the output above)");
    }
}

/// Fail early, with the fix, when the wasm32 standard library is missing.
fn check_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc).args(["--print", "target-libdir", "--target", TARGET]).output();
    let present = matches!(&libdir, Ok(output) if output.status.success()
        && Path::new(String::from_utf8_lossy(&output.stdout).trim()).is_dir());
    if !present {
        panic!("the {TARGET} target is not installed; run `rustup target add {TARGET}` (the README's set-up does it)");
    }
}

/// The outer build's target directory: the nearest ancestor of OUT_DIR holding
/// cargo's CACHEDIR.TAG, or OUT_DIR itself if there is none.
fn outer_target_dir(out_dir: &Path) -> PathBuf {
    out_dir.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).unwrap_or(out_dir).to_path_buf()
}
