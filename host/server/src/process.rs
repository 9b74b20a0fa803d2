//! What a host process does around its work: the log, and how it exits.

/// Start the log (`EXHOST_LOG`, default `info`, on stderr), run `work`, and
/// exit with its outcome: an error is printed as one line, never a panic.
pub fn main_with(work: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // The story (finding 6): with the log on a full disk, a failed log write
        // made tracing report it with `eprintln!`, which panics when stderr
        // cannot be written, and every 5xx panicked its handler. Logging must
        // never fail a request: a line that cannot be written is dropped.
        .log_internal_errors(false)
        .init();
    match work() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
