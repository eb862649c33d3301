//! Ctrl-C and SIGTERM during training: the command line's handler calls [`request`]; the
//! training loops check [`requested`] after each step, save a checkpoint and return
//! [`crate::Error::Interrupted`]. A flag, not a signal handler, so the library stays free of
//! process-wide state it does not own.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks running training loops to stop after their current step.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forgets a request (a process that trains again after an interrupted run, as a Python
/// session does).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
