//! The control socket: how another process cuts the power, syncs everything,
//! reads the counters or asks for an unmount.
//!
//! One Unix stream connection carries one command: the client writes a line
//! (`cut`, `sync`, `stats` or `unmount`), the server answers one line that
//! starts with `ok ` or `error ` and closes. The reply is sent only after the
//! command is complete, which is why this is a socket and not a signal: a
//! test knows the cut has happened before it restarts the program under test.
//!
//! Connections are served one at a time; a client that sends nothing is
//! dropped after [`CLIENT_TIMEOUT`], and a line longer than
//! [`COMMAND_BYTES_MAX`] is refused, so a stuck or hostile client cannot wedge
//! the control thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fs::Controller;

/// The longest command line accepted, newline included.
pub const COMMAND_BYTES_MAX: u64 = 64;

/// How long a client may take to send its command or read the reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`request`] waits for a reply; a cut of many files can take a while.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Cut,
    Sync,
    Stats,
    Unmount,
}

impl Command {
    pub const ALL: [Command; 4] = [Command::Cut, Command::Sync, Command::Stats, Command::Unmount];

    pub fn name(self) -> &'static str {
        match self {
            Command::Cut => "cut",
            Command::Sync => "sync",
            Command::Stats => "stats",
            Command::Unmount => "unmount",
        }
    }

    pub fn parse(line: &str) -> Result<Command, ControlError> {
        let word = line.trim();
        Command::ALL.into_iter().find(|c| c.name() == word).ok_or_else(|| ControlError::UnknownCommand(word.into()))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("unknown command {0:?} (expected cut, sync, stats or unmount)")]
    UnknownCommand(String),
    #[error("command longer than {COMMAND_BYTES_MAX} bytes")]
    CommandTooLong,
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the filesystem refused: {0}")]
    Refused(String),
}

/// Carries out `command` and returns the reply line (without newline).
/// `Unmount` only answers; the caller then unmounts.
pub fn execute(controller: &Controller, command: Command) -> String {
    match command {
        Command::Cut => format!("ok cut {}", controller.cut()),
        Command::Sync => format!("ok sync {}", controller.sync_all()),
        Command::Stats => format!("ok stats {}", controller.stats()),
        Command::Unmount => "ok unmount".into(),
    }
}

/// Serves connections on `listener` until it fails; calls `on_unmount` after
/// answering an `unmount` command.
pub fn serve(listener: &UnixListener, controller: &Controller, on_unmount: impl Fn()) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // A failed exchange concerns that client only.
        if let Ok(Command::Unmount) = serve_one(stream, controller) {
            on_unmount();
        }
    }
}

fn serve_one(mut stream: UnixStream, controller: &Controller) -> io::Result<Command> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(COMMAND_BYTES_MAX)).read_line(&mut line)?;
    let parsed = if line.ends_with('\n') || (line.len() as u64) < COMMAND_BYTES_MAX {
        Command::parse(&line)
    } else {
        Err(ControlError::CommandTooLong)
    };
    let (reply, result) = match parsed {
        Ok(command) => (execute(controller, command), Ok(command)),
        Err(e) => (format!("error {e}"), Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))),
    };
    stream.write_all(format!("{reply}\n").as_bytes())?;
    result
}

/// Sends one command to the control socket at `socket` and returns the
/// reply line; an `error ...` reply is [`ControlError::Refused`].
pub fn request(socket: &Path, command: &str) -> Result<String, ControlError> {
    let io_err = |source| ControlError::Io { path: socket.to_path_buf(), source };
    if command.len() as u64 >= COMMAND_BYTES_MAX {
        return Err(ControlError::CommandTooLong);
    }
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io_err)?;
    stream.write_all(format!("{}\n", command.trim()).as_bytes()).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io_err)?;
    let reply = reply.trim_end().to_string();
    if reply.starts_with("ok") { Ok(reply) } else { Err(ControlError::Refused(reply)) }
}

/// Reads `key=N` from a reply line such as the one `stats` gives.
pub fn field(reply: &str, key: &str) -> Option<u64> {
    reply.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}
