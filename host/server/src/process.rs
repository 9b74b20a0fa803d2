//! What a host process does around its work: the log, and how it exits.

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event (the default).
    Text,
    /// One JSON object per line, for log collectors: `timestamp`, `level`,
    /// `fields` (the message and every field, `seq` among them), `target`.
    Json,
}

impl LogFormat {
    /// `EXHOST_LOG_FORMAT` (`text` or `json`), text when unset or anything else.
    pub fn from_env() -> LogFormat {
        match std::env::var("EXHOST_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Start the log (`EXHOST_LOG`, default `info`, on stderr, in the format of
/// `EXHOST_LOG_FORMAT`), run `work`, and exit with its outcome: an error is
/// printed as one line, never a panic.
pub fn main_with(work: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    main_with_log(LogFormat::from_env(), work)
}

/// [`main_with`] with the log format given.
pub fn main_with_log(format: LogFormat, work: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // The story (finding 6): with the log on a full disk, a failed log write
        // made tracing report it with `eprintln!`, which panics when stderr
        // cannot be written, and every 5xx panicked its handler. Logging must
        // never fail a request: a line that cannot be written is dropped.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    match work() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
