//! Progress of long-running work (pre-training, fine-tuning): a bar on a terminal, and log
//! lines every so often when stderr is redirected (`nohup`, `> log`), where a bar shows nothing.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

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

/// The progress of a run: the bar, plus a log line at most every `every` when stderr is not a
/// terminal (and always at the last step).
pub struct Progress {
    pub bar: ProgressBar,
    log: bool,
    every: Duration,
    last: Instant,
    total: u64,
}

impl Progress {
    pub fn new(total: u64, visible: bool) -> Self {
        Progress {
            bar: bar(total, visible),
            log: visible && !std::io::stderr().is_terminal(),
            every: Duration::from_secs(30),
            last: Instant::now(),
            total,
        }
    }

    /// Step `pos` done, described by `msg`.
    pub fn step(&mut self, pos: u64, msg: String) {
        self.bar.set_position(pos);
        if self.log && (self.last.elapsed() >= self.every || pos == self.total) {
            self.last = Instant::now();
            eprintln!("step {pos}/{}  {msg}", self.total);
        }
        self.bar.set_message(msg);
    }

    /// A line that must be seen (an evaluation's result), above the bar or in the log.
    pub fn println(&self, line: String) {
        if self.log {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// "2 h 05 min", "3.4 days": a duration as a person reads it.
/// After a run's first step: how long the `left` steps will take at its pace.
pub fn first_step_line(secs: f64, left: u64) -> String {
    let total = secs * left as f64;
    let days = if total > 86_400.0 {
        " — days: consider a smaller model or --precision bf16"
    } else {
        ""
    };
    format!("first step {secs:.2} s: about {} for the {left} steps left{days}", human(total))
}

pub fn human(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 2.0 * 86400.0 {
        format!("{} h {:02} min", (secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64)
    } else {
        format!("{:.1} days", secs / 86400.0)
    }
}
