//! Point-in-time answers: the engine rebuilt as it was right after a past
//! sequence (the nearest snapshot at or before it, then the journal), for
//! `GET /v1/markets/{symbol}/book?at_seq=` and `GET /v1/account?source=replay`.
//!
//! A rebuild costs a replay and a copy of the state, and anyone may ask for
//! a past book. The story (finding 11): three anonymous `at_seq` requests at
//! once took the host from 1.1 to 4.2 GB. So rebuilds run on blocking
//! threads, at most `point_in_time_concurrent_max` at once (more are told
//! `429 rate_limited`), each replaying at most
//! `point_in_time_replay_commands_max` commands past its snapshot (more is
//! a clear `400`), and each holding one engine's memory, which the modules'
//! own limits bound.

use axum::http::StatusCode;
use exhost_engine::Engine;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use exhost_node::recovery;

/// Run `answer` on the engine as it was right after `seq`.
pub(super) async fn at_seq<T: Send + 'static>(
    state: &AppState,
    seq: u64,
    answer: impl FnOnce(&mut Engine) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let permit = state.gate.point_in_time.try_acquire().map_err(|_| {
        ApiError::rate_limited("too many point-in-time rebuilds are running at once; retry in a moment")
    })?;
    let (store, loader) = (state.store.clone(), state.loader.clone());
    let replay_max = state.config.point_in_time_replay_commands_max;
    let answered = tokio::task::spawn_blocking(move || -> ApiResult<T> {
        let mut engine = recovery::engine_from_snapshot(&store, loader, seq);
        let distance = seq.saturating_sub(engine.last_seq());
        if distance > replay_max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "at_seq {seq} is {distance} commands past the nearest snapshot (at {}); a rebuild replays at most {replay_max}: ask the operator for a snapshot nearer to it",
                    engine.last_seq()
                ),
            ));
        }
        recovery::replay(&store, &mut engine, seq, &mut recovery::Progress::new("rebuild", 0, false), |_| Ok(()))?;
        answer(&mut engine)
    })
    .await
    .map_err(|error| ApiError::internal(error.to_string()))?;
    drop(permit);
    answered
}
