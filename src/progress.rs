//! The progress bar of long-running steps (pre-training, fine-tuning).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` steps (hidden when `visible` is false): elapsed, bar, position, the
/// caller's message, ETA.
pub fn bar(total: u64, visible: bool) -> ProgressBar {
    let bar = if visible { ProgressBar::new(total) } else { ProgressBar::hidden() };
    let style =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar
}
