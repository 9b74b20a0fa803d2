//! `exhost-powerloss`: mounts the power-loss filesystem and serves it, with
//! its control socket, until told to stop; or, with `--send`, is the client
//! of that socket. The model and the protocol are described in the library's
//! header (`src/lib.rs`).
//!
//! Stopping: SIGINT, SIGTERM and SIGHUP are blocked in every thread and
//! awaited by one, so each of them, an `unmount` command, or an external
//! `umount` ends in a clean unmount (which syncs everything) and exit 0.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use exhost_powerloss::control::{self, ControlError};
use exhost_powerloss::fs::PENDING_BYTES_MAX_DEFAULT;
use exhost_powerloss::{Options, mount};
use nix::sys::signal::{SigSet, Signal};

/// How often the main thread checks that the FUSE session is still alive.
const SESSION_POLL: Duration = Duration::from_millis(200);

#[derive(Parser)]
#[command(version, about = "A FUSE passthrough that simulates power loss: unsynced bytes and entries vanish on a cut")]
struct Cli {
    /// Where programs under test see the filesystem.
    #[arg(required_unless_present = "send")]
    mountpoint: Option<PathBuf>,
    /// The real directory underneath: it holds what a disk would keep.
    #[arg(required_unless_present = "send")]
    backing_dir: Option<PathBuf>,
    /// Unix socket to listen on for `cut`, `sync`, `stats` and `unmount`.
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// Writes fail with ENOSPC once this many unsynced bytes are held in memory.
    #[arg(long, default_value_t = PENDING_BYTES_MAX_DEFAULT)]
    pending_bytes_max: u64,
    /// Client: send COMMAND to the control SOCKET of a running instance and print the reply.
    #[arg(long, num_args = 2, value_names = ["SOCKET", "COMMAND"],
          conflicts_with_all = ["mountpoint", "backing_dir", "control"])]
    send: Option<Vec<String>>,
}

enum Stop {
    Signal(Signal),
    UnmountCommand,
    SessionEnded,
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(send) = &cli.send {
        let [socket, command] = send.as_slice() else { bail!("--send takes SOCKET COMMAND") };
        return match control::request(Path::new(socket), command) {
            Ok(reply) => {
                println!("{reply}");
                Ok(ExitCode::SUCCESS)
            }
            Err(ControlError::Refused(reply)) => {
                eprintln!("{reply}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        };
    }
    let (Some(mountpoint), Some(backing_dir)) = (&cli.mountpoint, &cli.backing_dir) else {
        bail!("MOUNTPOINT and BACKING_DIR are required");
    };

    // Blocked before any thread starts, so every thread inherits the mask
    // and only the waiting thread below ever receives these signals.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking termination signals")?;

    let mounted = mount(mountpoint, backing_dir, Options { pending_bytes_max: cli.pending_bytes_max })?;
    let (stop_tx, stop_rx) = mpsc::channel();

    if let Some(socket) = &cli.control {
        remove_stale_socket(socket)?;
        let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        let controller = mounted.controller().clone();
        let tx = stop_tx.clone();
        std::thread::Builder::new().name("powerloss-control".into()).spawn(move || {
            control::serve(&listener, &controller, || {
                let _ = tx.send(Stop::UnmountCommand);
            })
        })?;
    }
    let tx = stop_tx;
    std::thread::Builder::new().name("powerloss-signals".into()).spawn(move || {
        if let Ok(signal) = signals.wait() {
            let _ = tx.send(Stop::Signal(signal));
        }
    })?;

    eprintln!(
        "exhost-powerloss: serving {} over {} (control: {})",
        mountpoint.display(),
        backing_dir.display(),
        cli.control.as_deref().map_or("none".into(), |p| p.display().to_string())
    );
    let stop = loop {
        match stop_rx.recv_timeout(SESSION_POLL) {
            Ok(stop) => break stop,
            Err(_) if !mounted.is_serving() => break Stop::SessionEnded,
            Err(_) => {}
        }
    };
    match stop {
        Stop::Signal(s) => eprintln!("exhost-powerloss: {s}, unmounting"),
        Stop::UnmountCommand => eprintln!("exhost-powerloss: unmount requested"),
        Stop::SessionEnded => eprintln!("exhost-powerloss: unmounted from outside"),
    }
    let result = mounted.unmount();
    if let Some(socket) = &cli.control {
        let _ = std::fs::remove_file(socket);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// A socket left by a killed run would make `bind` fail; anything that is
/// not a socket is the user's file and is left alone.
fn remove_stale_socket(socket: &Path) -> Result<()> {
    match std::fs::symlink_metadata(socket) {
        Ok(md) if md.file_type().is_socket() => {
            std::fs::remove_file(socket).with_context(|| format!("removing stale {}", socket.display()))
        }
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(_) => Ok(()),
    }
}
