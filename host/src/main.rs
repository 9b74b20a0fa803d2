//! The `exhost` binary: a thin shell over the server and the write path
//! (`exhost serve`), and the offline tools on a data directory.

mod args;
mod cli;
mod modules_cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    exhost_server::process::main_with(|| cli::run(cli::Cli::parse()))
}
