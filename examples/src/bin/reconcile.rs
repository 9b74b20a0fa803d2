//! A reconciliation service: follows exhost's event stream from offset 0 over
//! WebSocket, rebuilds every user's positions and balances by itself (from
//! fills, deleveraging, deposits, funding, using the documented rules), and
//! checks them against the host's own answers.
//!
//! Run it beside a host (the operator token authenticates the event stream):
//!
//! ```sh
//! cargo run --release -p exhost-examples --bin reconcile -- http://127.0.0.1:8080 "$(cat exhost-data/admin.token)"
//! ```
//!
//! Beside a cluster, `--nats nats://HOST:PORT[,...]` (first) reads the events
//! from the `EXHOST_EVENTS` stream instead of the WebSocket.
//!
//! It prints one line per user and a summary, and exits non-zero on any mismatch.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let mut nats: Vec<String> = Vec::new();
    if args.peek().is_some_and(|arg| arg == "--nats") {
        args.next();
        let urls = args.next().ok_or_else(|| anyhow::anyhow!("--nats needs nats://HOST:PORT[,...]"))?;
        nats = urls.split(',').map(str::to_string).collect();
    }
    let base = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let token = match args.next() {
        Some(token) => token,
        None => std::env::var("EXHOST_ADMIN_TOKEN")
            .map_err(|_| anyhow::anyhow!("usage: reconcile BASE_URL OPERATOR_TOKEN (or set EXHOST_ADMIN_TOKEN)"))?,
    };
    let source = if nats.is_empty() {
        exhost_examples::reconcile::Source::WebSocket
    } else {
        exhost_examples::reconcile::Source::Nats(&nats)
    };
    let report = exhost_examples::reconcile::run_from(&base, &token, source)?;
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "reconciled {} users over {} events up to seq {}: {} mismatches",
        report.users,
        report.events,
        report.through_seq,
        report.mismatches.len()
    );
    for mismatch in &report.mismatches {
        eprintln!("MISMATCH {mismatch}");
    }
    if report.mismatches.is_empty() { Ok(()) } else { std::process::exit(1) }
}
