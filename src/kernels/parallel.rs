//! Sharing one output buffer between rayon tasks that write disjoint elements of it.

/// A raw pointer that tasks may share; each task writes only the elements it owns.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only to write disjoint elements from different tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
