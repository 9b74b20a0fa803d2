//! Whether the node takes commands, and whether its engine thread is moving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Halt;
use crate::pipeline::now_ns;

/// Whether the node can take commands, and whether its engine is moving.
#[derive(Default)]
pub struct Health {
    halted: AtomicBool,
    reason: Mutex<Option<Arc<Halt>>>,
    /// When the engine thread started its current piece of work (ns since the
    /// epoch), 0 while it waits for work.
    engine_busy_since_ns: AtomicU64,
    /// The last sequence number the engine applied.
    engine_seq: AtomicU64,
    faults: Mutex<Faults>,
}

/// Module faults seen since the node started: how many, and the newest few.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub total: u64,
    /// Newest last, at most [`RECENT_FAULTS_KEPT`].
    pub recent: std::collections::VecDeque<FaultSeen>,
}

/// One module fault: the command it made the engine reject, which module, what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSeen {
    pub seq: u64,
    pub module: String,
    pub fault: String,
}

/// Faults kept for the operator's status; the count goes on past it.
pub const RECENT_FAULTS_KEPT: usize = 50;

/// Engine work longer than this is reported as a stall by `/healthz`. Bounds
/// on module calls make every piece of work finish; this says when one is
/// taking long enough that the operator should know.
pub const ENGINE_STALL_REPORT_AFTER: Duration = Duration::from_secs(5);

impl Health {
    /// Stop taking commands, for `halt`'s reason; returns the reason, to tell
    /// those waiting.
    pub fn halt(&self, halt: Halt) -> Arc<Halt> {
        let halt = Arc::new(halt);
        tracing::error!(reason = %halt, "node halted: no further commands are accepted until restart");
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(halt.clone());
        self.halted.store(true, Ordering::SeqCst);
        halt
    }

    /// `None` while the node takes commands, otherwise why not.
    pub fn problem(&self) -> Option<Arc<Halt>> {
        if self.halted.load(Ordering::SeqCst) {
            self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            None
        }
    }

    /// How long the engine has been on its current piece of work (zero while idle).
    pub fn engine_busy(&self) -> Duration {
        let since = self.engine_busy_since_ns.load(Ordering::SeqCst);
        if since == 0 { Duration::ZERO } else { Duration::from_nanos(now_ns().saturating_sub(since)) }
    }

    /// `Some` while the engine has been busy past [`ENGINE_STALL_REPORT_AFTER`]: what it is stuck on.
    pub fn stall(&self) -> Option<String> {
        let busy = self.engine_busy();
        (busy > ENGINE_STALL_REPORT_AFTER).then(|| {
            format!(
                "the engine has been busy for {:.1} s on the work after seq {}",
                busy.as_secs_f64(),
                self.engine_seq.load(Ordering::SeqCst)
            )
        })
    }

    /// The last sequence number the engine applied (as of its last finished piece of work).
    pub fn applied_seq(&self) -> u64 {
        self.engine_seq.load(Ordering::SeqCst)
    }

    /// Module faults since the node started.
    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `count` faults more, of which `seen` are told in detail (the engine
    /// reports only the first few of a batch).
    pub(crate) fn record_faults(&self, seen: impl IntoIterator<Item = FaultSeen>, count: u64) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.total += count;
        for fault in seen {
            if faults.recent.len() == RECENT_FAULTS_KEPT {
                faults.recent.pop_front();
            }
            faults.recent.push_back(fault);
        }
    }

    pub(crate) fn engine_started(&self) {
        self.engine_busy_since_ns.store(now_ns().max(1), Ordering::SeqCst);
    }

    /// The engine applied everything up to `seq` (its answers are about to go out).
    pub(crate) fn applied(&self, seq: u64) {
        self.engine_seq.store(seq, Ordering::SeqCst);
    }

    pub(crate) fn engine_finished(&self, seq: u64) {
        self.engine_seq.store(seq, Ordering::SeqCst);
        self.engine_busy_since_ns.store(0, Ordering::SeqCst);
    }
}
