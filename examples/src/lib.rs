//! Programs that use exhost only through its public API (HTTP, WebSocket),
//! as a separate service would. Each binary in `src/bin/` is a thin wrapper;
//! the logic lives here so the end-to-end tests can run it too.

pub mod decimal;
pub mod reconcile;
