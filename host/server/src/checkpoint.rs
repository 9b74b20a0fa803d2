//! `GET /admin/v1/checkpoint`: this node's whole database, as of now, as a
//! tar stream (`exhost_node::checkpoint`'s format, manifest last). A node
//! of a cluster whose command stream was trimmed past its start fetches one
//! from the active node; an operator may fetch one as an off-machine copy.
//!
//! The copy is a RocksDB checkpoint in `<data-dir>/checkpoint-out` (hard
//! links, so it costs little disk while it is sent), removed once sent. One
//! is sent at a time.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use exhost_node::checkpoint::{OUTGOING_DIR, write_archive};
use tokio::sync::mpsc;

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Pieces of the stream buffered between the archive writer and the socket.
const PIECES_IN_FLIGHT: usize = 8;
const PIECE_BYTES: usize = 256 << 10;

/// The node's whole database as of now, as a tar stream ending with a manifest
/// of SHA-256s: what a new cluster node starts from when the command stream was trimmed.
#[utoipa::path(get, path = "/admin/v1/checkpoint", tag = crate::openapi::OPERATOR,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "A tar stream", body = Vec<u8>, content_type = "application/x-tar"),
        (status = 409, description = "Another checkpoint is being sent", body = crate::error::ErrorBody),
    ))]
pub(super) async fn send(State(state): State<AppState>, _: Operator) -> ApiResult<Response> {
    let Ok(slot) = state.checkpoint_slot.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "checkpoint_in_progress",
            "a checkpoint is being sent already; ask again when it is done",
        ));
    };
    let dir = state.config.data_dir.join(OUTGOING_DIR);
    let store = state.store.clone();
    let made = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error.to_string()),
                _ => {}
            }
            store.checkpoint(&dir).map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
    };
    if let Err(problem) = made {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(ApiError::internal(format!("making the checkpoint: {problem}")));
    }
    let (pieces, received) = mpsc::channel(PIECES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let started = std::time::Instant::now();
        let sent = write_archive(&dir, Pieces { pieces: pieces.clone(), buffer: Vec::with_capacity(PIECE_BYTES) });
        let _ = std::fs::remove_dir_all(&dir);
        match sent {
            Ok(stats) => tracing::info!(
                files = stats.files,
                bytes = stats.bytes,
                seconds = started.elapsed().as_secs_f64(),
                "sent a checkpoint"
            ),
            Err(error) => {
                tracing::warn!(%error, "a checkpoint was not sent whole (the receiver refuses what it got)");
                let _ = pieces.blocking_send(Err(error));
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(received));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// Hands the archive to the response body a piece at a time; fails once the
/// receiver is gone, which ends the archive writer.
struct Pieces {
    pieces: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Pieces {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIECE_BYTES));
        self.pieces
            .blocking_send(Ok(Bytes::from(piece)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the receiver hung up"))
    }
}

impl Write for Pieces {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
