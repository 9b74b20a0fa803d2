//! The shape of the workspace, enforced: dependencies point inward (guest
//! SDK, then engine, then runtime and store, then node, then server, then the
//! binary), nothing a plugin author depends on reaches into the host, the
//! `exhost` binary links no benchmark-only crate, and no crate's modules
//! import each other in a circle. Each rule reads `cargo tree` or the
//! sources, so breaking one fails the build's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ sits in the workspace").to_path_buf()
}

/// The packages `package` depends on, as `cargo tree` lists them (names only).
fn tree(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "-p", package, "--prefix", "none", "--offline"])
        .args(extra)
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    let names: BTreeSet<String> =
        tree.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect();
    assert!(names.contains(package), "sanity: the tree of {package} lists {package}:\n{tree}");
    names
}

/// Every crate `package` links, directly or not (normal dependencies).
fn linked(package: &str) -> BTreeSet<String> {
    tree(package, &["-e", "normal"])
}

/// The crates `package` names in its own `[dependencies]`.
fn direct(package: &str) -> BTreeSet<String> {
    let mut names = tree(package, &["-e", "normal", "--depth", "1"]);
    names.remove(package);
    names
}

fn assert_none(package: &str, found: &BTreeSet<String>, forbidden: &[&str], why: &str) {
    let present: Vec<&&str> = forbidden.iter().filter(|name| found.contains(**name)).collect();
    assert!(present.is_empty(), "{package} depends on {present:?}: {why}");
}

const HOST_CRATES: [&str; 9] = [
    "exhost-engine",
    "exhost-runtime",
    "exhost-store",
    "exhost-node",
    "exhost-server",
    "exhost-cluster",
    "exhost-testkit",
    "exhost-bench",
    "exhost",
];

#[test]
fn dependencies_point_inward() {
    let rules: [(&str, &[&str], &str); 7] = [
        (
            "exhost-engine",
            &["tokio", "rocksdb", "wasmtime", "axum", "exhost-runtime", "exhost-store"],
            "the engine is pure",
        ),
        (
            "exhost-runtime",
            &["rocksdb", "tokio", "axum", "exhost-store", "exhost-node"],
            "the runtime knows only wasmtime",
        ),
        (
            "exhost-store",
            &["wasmtime", "axum", "tokio", "exhost-engine", "exhost-runtime"],
            "the store knows only storage",
        ),
        ("exhost-node", &["axum", "clap", "hyper", "exhost-server"], "the write path has no HTTP and no command line"),
        (
            "exhost-server",
            &["clap", "exhost", "exhost-bench", "async-nats", "exhost-cluster"],
            "the server sits below the binary and knows no NATS",
        ),
        ("exhost-cluster", &["clap", "exhost", "exhost-bench"], "the cluster sits below the binary"),
        (
            "exhost-testkit",
            &["rocksdb", "tokio", "axum", "exhost-node", "exhost-server"],
            "the test kit runs modules, nothing more",
        ),
    ];
    for (package, forbidden, why) in rules {
        assert_none(package, &linked(package), forbidden, why);
    }
    // Libraries return typed errors; anyhow is for the edges (the binaries, the server's start-up).
    for package in ["exhost-guest-sdk", "exhost-engine", "exhost-runtime", "exhost-store", "exhost-node"] {
        assert_none(package, &direct(package), &["anyhow"], "a library's errors are typed (thiserror)");
    }
    assert!(direct("exhost-server").contains("anyhow"), "sanity: a direct dependency on anyhow is seen");
    // The server reaches storage and modules through the node and the store's seam.
    assert_none("exhost-server", &direct("exhost-server"), &["rocksdb", "librocksdb-sys", "wasmtime"], "not directly");
}

#[test]
fn nothing_a_plugin_author_depends_on_reaches_into_the_host() {
    for package in ["exhost-guest-sdk", "exhost-pricetime", "exhost-positions", "exhost-book-model", "exhost-prorata"] {
        assert_none(package, &linked(package), &HOST_CRATES, "a plugin builds against the SDK alone");
    }
}

#[test]
fn the_exhost_binary_links_no_benchmark_only_crate() {
    assert_none(
        "exhost",
        &linked("exhost"),
        &["orderbook-rs", "pricelevel", "hdrhistogram", "exhost-bench", "exhost-pricetime", "exhost-positions"],
        "benchmarks live in exhost-bench",
    );
    // hyper's client half is linked, for a cluster node forwarding writes to
    // the active node (exhost-server forward.rs); the load generator's own
    // clients and histograms stay in exhost-bench (the list above).
    // Sanity: the same questions see the benchmark crates where they are.
    assert!(linked("exhost-bench").contains("orderbook-rs"), "sanity: the benchmark crate links its peer");
}

/// The top-level modules of the crate whose sources are under `src`, and for
/// each the modules it imports (`crate::x`, or `super::x` from a top-level
/// module); an item named straight from the crate root counts as an import of
/// the root. Test modules (after `#[cfg(test)]`) are left out.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    const ROOT: &str = "<root>";
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the source directory reads") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name() != Some("bin".as_ref()) {
                    stack.push(path);
                }
                continue;
            }
            if path.extension() != Some("rs".as_ref()) {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let first = relative.components().next().expect("a file").as_os_str().to_string_lossy();
            let first = first.trim_end_matches(".rs");
            let module = if matches!(first, "lib" | "main") { ROOT.to_string() } else { first.to_string() };
            let text = std::fs::read_to_string(&path).expect("a source file reads");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            sources.entry(module).or_default().push_str(&code);
        }
    }
    let modules: BTreeSet<String> = sources.keys().filter(|name| *name != ROOT).cloned().collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &sources {
        let found = imports.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|line| !line.starts_with("//")) {
            if module == ROOT {
                if line.starts_with("mod ") || line.starts_with("pub mod ") || line.starts_with("pub(crate) mod ") {
                    continue;
                }
                for name in identifiers_before_path_separator(line) {
                    if modules.contains(name) {
                        found.insert(name.to_string());
                    }
                }
                continue;
            }
            for prefix in ["crate::", "super::"] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group
                            .split('}')
                            .next()
                            .unwrap_or_default()
                            .split(',')
                            .filter_map(|part| part.trim().split("::").next())
                            .collect(),
                        None => rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().into_iter().collect(),
                    };
                    for name in names.into_iter().map(str::trim).filter(|name| !name.is_empty()) {
                        let target = if modules.contains(name) { name.to_string() } else { ROOT.to_string() };
                        if &target != module {
                            found.insert(target);
                        }
                    }
                }
            }
        }
    }
    imports
}

fn identifiers_before_path_separator(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("::").filter_map(move |(at, _)| {
        let before = &line[..at];
        let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let name = &before[start..];
        (!name.is_empty()).then_some(name)
    })
}

/// A circle of imports, if there is one.
fn circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut found = path[start..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, imports, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    imports.keys().find_map(|module| visit(module, imports, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_imports_its_own_modules_in_a_circle() {
    let root = workspace_root();
    for crate_dir in [
        "guest-sdk",
        "host",
        "host/engine",
        "host/runtime",
        "host/store",
        "host/node",
        "host/server",
        "host/bench",
        "host/testkit",
        "host/embedded",
    ] {
        let imports = module_imports(&root.join(crate_dir).join("src"));
        assert!(!imports.is_empty(), "sanity: {crate_dir} has modules");
        assert_eq!(circle(&imports), None, "{crate_dir}: modules import each other in a circle");
    }
}

#[test]
fn the_circle_finder_sees_a_circle() {
    // Negative control: two modules naming each other, and a root item named from a module.
    let dir = std::env::temp_dir().join(format!("exhost-architecture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\npub use a::A;\npub struct Root;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(dir.join("b.rs"), "use super::{a::A, Root};\npub struct B;\n").unwrap();
    let imports = module_imports(&dir);
    assert_eq!(imports["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(imports["b"], BTreeSet::from(["a".to_string(), "<root>".to_string()]));
    let found = circle(&imports).expect("a and b import each other");
    assert!(found.contains(&"a".to_string()) && found.contains(&"b".to_string()), "{found:?}");
    std::fs::write(dir.join("b.rs"), "pub struct B;\n").unwrap();
    assert_eq!(circle(&module_imports(&dir)), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What an operator copies to a server: the release binary, without debug
/// information (see `[profile.release]`; the `profiling` profile keeps line tables).
#[test]
fn the_exhost_binary_is_deployable() {
    const BYTES_MAX: u64 = 100 * 1024 * 1024;
    let binary = env!("CARGO_BIN_EXE_exhost");
    let bytes = std::fs::metadata(binary).expect("the binary is built").len();
    assert!(bytes > 1024 * 1024, "sanity: {binary} is a real binary ({bytes} bytes)");
    if cfg!(debug_assertions) {
        return; // A debug build carries its debug information by design.
    }
    assert!(bytes < BYTES_MAX, "{binary} is {} MB; a deployable binary is under {} MB", bytes >> 20, BYTES_MAX >> 20);
}

/// The OpenAPI document is derived from the router's declarations: every
/// route is registered through `utoipa_axum::routes!` (which reads the
/// handler's `#[utoipa::path]`), so a route cannot be served without being in
/// the document. `/docs` (Swagger UI, a page for people) is the one thing
/// merged in otherwise. `host/server/tests/handlers.rs` checks the other
/// direction: every documented operation is served.
#[test]
fn every_route_is_declared_where_the_document_reads_it() {
    let routes = std::fs::read_to_string(workspace_root().join("host/server/src/routes.rs")).unwrap();
    let code: String =
        routes.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    for registration in [".route(", ".nest(", ".route_service(", ".nest_service("] {
        assert!(!code.contains(registration), "routes.rs registers a route with {registration}, outside the document");
    }
    assert_eq!(code.matches(".merge(").count(), 1, "only /docs is merged in");
    assert!(code.contains(".merge(docs())"), "the merge is /docs");
    // The rest of the crate registers no routes either.
    for entry in std::fs::read_dir(workspace_root().join("host/server/src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.ends_with("routes.rs") {
            continue;
        }
        assert!(!text.contains("Router::new()") && !text.contains(".route(\""), "{} builds routes", path.display());
    }
}
