//! What the engine reports of its modules to the host, outside the
//! deterministic output.

use crate::command::ModuleTarget;
use crate::module::ModuleFault;

/// A module fault the engine turned into a rejection. The rejection event
/// carries only the reason code (it is part of the deterministic output); the
/// operator needs the rest: which command, which module, and its message.
#[derive(Clone, Debug)]
pub struct FaultReport {
    pub seq: u64,
    pub target: ModuleTarget,
    pub fault: ModuleFault,
}

/// One instance as the host sees it from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleReport {
    /// Which instance (labelled `position`, or `market N`, in metrics).
    pub module: ModuleTarget,
    /// Its linear memory, where the runtime can tell (not for native builds).
    pub memory_bytes: Option<usize>,
    /// Commands applied since its checkpoint, kept to rebuild it after a
    /// fault: a rebuild restores the checkpoint and applies them all again.
    pub retained_commands: usize,
    /// What the retained commands take, encoded.
    pub retained_bytes: usize,
    /// The checkpoint's size.
    pub checkpoint_bytes: usize,
}
