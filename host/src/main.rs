//! The `exhost` binary: a thin shell over the server and the write path
//! (`exhost serve`), and the offline tools on a data directory.

mod args;
mod cli;
mod modules_cli;
mod remote;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    exhost_server::process::main_with_log(cli.log_format(), || cli::run(cli))
}
