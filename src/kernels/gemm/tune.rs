//! The tuner: the [`Blocking`] each large bf16 product splits its output by, timed on this CPU
//! at first use and kept per CPU model.
//!
//! What it decides changes speed only. Every blocking sums each element of `c` over the same k
//! blocks in the same order (the drivers' tests check the bits for every candidate and thread
//! count), so results are bitwise the same whatever it picks, on whatever machine.
//!
//! - **When.** The first time a process multiplies a shape on the pool with at least
//!   [`MIN_FLOP`]. A shape is the version that runs it, `m`, `n` and `k` rounded up to powers of
//!   two, whether each operand is stored transposed, and the thread count. Smaller products cost
//!   little whatever their split, and a decode step's few rows keep the rule. Each candidate
//!   runs twice into a scratch output, in turn and then in reverse order, and the faster run
//!   counts. The fastest candidate replaces the rule only when it beats the rule by [`MARGIN`]:
//!   timings on a shared machine move by a few per cent.
//! - **At most [`BUDGET`] per process.** A shape whose trials would pass it keeps the rule and
//!   is tuned by a later run, so the first step of a run is at most that much slower.
//! - **Kept** in `tune-<cpu model>.json` under the user's cache folder (`$XDG_CACHE_HOME/gpt1`,
//!   else `~/.cache/gpt1`), read once per process. A file that cannot be read or parsed is
//!   ignored and replaced; one that cannot be written costs a re-tune next run.
//! - **`GPT1_TUNE`**: `on` (the default), `off` (every product keeps its rule; no file read or
//!   written), `redo` (this run's shapes are tuned again and their kept choices replaced).
//! - **Reported** by `gpt1 bench kernels` ([`tuner_report`]), which also times every candidate
//!   of a gpt1 step's products ([`tune_now`]).

use super::{Blocking, FEW_ROWS, Mat, Par, Version};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Products of fewer FLOPs (2·m·n·k) keep the rule.
pub const MIN_FLOP: f64 = 5e8;
/// The time a process spends timing candidates, at most.
pub const BUDGET: Duration = Duration::from_secs(2);
/// How much faster than the rule a candidate must run to replace it.
pub const MARGIN: f64 = 0.03;

/// What `GPT1_TUNE` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    On,
    Off,
    Redo,
}

/// `GPT1_TUNE`'s value as a mode; an error names the values it takes.
fn parse_mode(value: Option<&str>) -> Result<Mode, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "on" | "1") => Ok(Mode::On),
        Some("off" | "0") => Ok(Mode::Off),
        Some("redo") => Ok(Mode::Redo),
        Some(other) => Err(format!("GPT1_TUNE={other} is not on, off or redo; tuning stays on")),
    }
}

/// The process's mode, read once (a value it does not know is reported and taken as `on`).
fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        parse_mode(std::env::var("GPT1_TUNE").ok().as_deref()).unwrap_or_else(|why| {
            eprintln!("gpt1: {why}");
            Mode::On
        })
    })
}

/// One shape's choice and what each candidate measured (GFLOP/s) when it was made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TunedShape {
    /// `<version> <m>x<n>x<k> a[t] b[t] <threads>t`: the dimensions rounded up to powers of two,
    /// `t` for an operand stored transposed.
    pub shape: String,
    /// The product the candidates were timed on, `[m, n, k]`.
    pub timed_on: [usize; 3],
    pub choice: Blocking,
    /// The blocking used where none is chosen.
    pub rule: Blocking,
    pub gflops: Vec<(Blocking, f64)>,
}

/// What `gpt1 bench kernels` says of the tuner.
#[derive(Clone, Debug, Serialize)]
pub struct TunerReport {
    pub mode: Mode,
    pub cache_file: Option<String>,
    /// Why the file could not be read or written, if so.
    pub cache_error: Option<String>,
    /// Seconds this process spent timing candidates (here or at first use).
    pub seconds_spent: f64,
    /// The choices this process used, tuned now or read from the file.
    pub shapes: Vec<TunedShape>,
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    cpu: String,
    shapes: Vec<TunedShape>,
}

struct Table {
    loaded: bool,
    path: Option<PathBuf>,
    /// The file's choices (not looked up under `redo`, but kept when the file is rewritten).
    kept: HashMap<String, TunedShape>,
    /// This process's: `None` while a shape is being timed.
    now: HashMap<String, Option<TunedShape>>,
    spent: Duration,
    /// FLOP/s of the last shape timed ([`SLOW_RATE`] before any), to judge whether the next
    /// one's trials fit the budget before running them.
    rate: f64,
    error: Option<String>,
}

/// The rate assumed before any shape is timed (FLOP/s): slower than any CPU with a bf16
/// version, so the first shape's trials are over-estimated rather than under-estimated.
const SLOW_RATE: f64 = 5e10;

impl Default for Table {
    fn default() -> Self {
        Table {
            loaded: false,
            path: None,
            kept: HashMap::new(),
            now: HashMap::new(),
            spent: Duration::ZERO,
            rate: SLOW_RATE,
            error: None,
        }
    }
}

impl Table {
    fn load(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        let cpu = crate::sys::cpu_model();
        let slug: String = cpu
            .to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        self.path = crate::sys::cache_dir().map(|d| d.join(format!("tune-{slug}.json")));
        let Some(path) = &self.path else { return };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.error = Some(format!("{}: {e} (ignored)", path.display()));
                return;
            }
        };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(f) => self.kept = f.shapes.into_iter().map(|s| (s.shape.clone(), s)).collect(),
            Err(e) => {
                self.error = Some(format!("{}: {e} (ignored, to be replaced)", path.display()))
            }
        }
    }

    /// The choice for `key` if one is known or being made (`Some(None)`: keep the rule). A
    /// kept choice that is not one of `cands` (a file from another version of gpt1, or edited)
    /// is not used; one equal to the rule it was timed against is not forced on the class's
    /// other shapes, whose own rule may differ (the rule depends on the exact `m` and `n`).
    fn lookup(&mut self, key: &str, cands: &[Blocking]) -> Option<Option<Blocking>> {
        let used = |s: &TunedShape| (s.choice != s.rule).then_some(s.choice);
        if let Some(known) = self.now.get(key) {
            return Some(known.as_ref().and_then(used));
        }
        let kept =
            self.kept.get(key).filter(|s| mode() != Mode::Redo && cands.contains(&s.choice))?;
        let (kept, choice) = (kept.clone(), used(kept));
        self.now.insert(key.to_string(), Some(kept));
        Some(choice)
    }

    fn record(&mut self, shape: TunedShape) {
        self.now.insert(shape.shape.clone(), Some(shape.clone()));
        self.kept.insert(shape.shape.clone(), shape);
        let Some(path) = &self.path else { return };
        let mut shapes: Vec<TunedShape> = self.kept.values().cloned().collect();
        shapes.sort_by(|a, b| a.shape.cmp(&b.shape));
        let file = CacheFile { cpu: crate::sys::cpu_model(), shapes };
        let written =
            serde_json::to_vec_pretty(&file).map_err(|e| e.to_string()).and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                crate::io::write_atomic(path, &bytes).map_err(|e| e.to_string())
            });
        self.error = written.err();
    }
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
    // A panic while holding the lock leaves whole entries behind: the table stays usable.
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if mode() != Mode::Off {
        t.load();
    }
    t
}

#[cfg(target_arch = "x86_64")]
use super::{avx512, driver, fma};
#[cfg(target_arch = "x86_64")]
const BF16_DOT: [Blocking; 5] = driver::candidates::<avx512::Bf16Dot>();
#[cfg(target_arch = "x86_64")]
const FMA512: [Blocking; 5] = driver::candidates::<fma::Fma512>();
#[cfg(target_arch = "x86_64")]
const FMA256: [Blocking; 5] = driver::candidates::<fma::Fma256>();

/// The candidates a version's driver takes, and its rule for `m × n` on the pool.
fn candidates(driver: Version, m: usize, n: usize) -> (&'static [Blocking], Option<Blocking>) {
    match driver {
        #[cfg(target_arch = "x86_64")]
        Version::Avx512 => (&BF16_DOT, Some(driver::rule::<avx512::Bf16Dot>(m, n, Par::Pool))),
        #[cfg(target_arch = "x86_64")]
        Version::Fma512 => (&FMA512, Some(driver::rule::<fma::Fma512>(m, n, Par::Pool))),
        #[cfg(target_arch = "x86_64")]
        Version::Fma256 => (&FMA256, Some(driver::rule::<fma::Fma256>(m, n, Par::Pool))),
        #[cfg(target_arch = "x86_64")]
        Version::Amx => (&super::amx::CANDIDATES, Some(super::amx::RULE)),
        _ => {
            let _ = (m, n);
            (&[], None)
        }
    }
}

/// The shape's class: each dimension rounded up to a power of two (fine-tuning's batches of
/// every length, and the weight gradients they make, share a few classes, not one entry per
/// length), the operands' layouts and the thread count.
fn key(driver: Version, a: Mat, b: Mat, (m, n, k): (usize, usize, usize)) -> String {
    let t = |x: Mat| if x.cs == 1 { "" } else { "t" };
    let threads = rayon::current_num_threads();
    let (m, n, k) = (m.next_power_of_two(), n.next_power_of_two(), k.next_power_of_two());
    format!("{driver:?} {m}x{n}x{k} a{} b{} {threads}t", t(a), t(b))
}

/// The candidate to keep from their rates: the fastest, if it beats the rule by [`MARGIN`].
fn pick(rule: Blocking, gflops: &[(Blocking, f64)]) -> Blocking {
    let rate = |b: Blocking| gflops.iter().find(|(c, _)| *c == b).map_or(0.0, |x| x.1);
    let best = gflops.iter().max_by(|x, y| x.1.total_cmp(&y.1)).map_or(rule, |x| x.0);
    if rate(best) > rate(rule) * (1.0 + MARGIN) { best } else { rule }
}

/// Times every candidate of `driver` on this product (into a scratch output), unless the trials
/// would take longer than `budget`; the time it took.
///
/// # Safety
/// As [`super::matmul_bf16_ptr`] for `a` and `b`; `driver` runs on this CPU.
unsafe fn measure(
    driver: Version,
    key: String,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
    budget: Option<Duration>,
) -> (Option<TunedShape>, Duration) {
    let t0 = Instant::now();
    let (cands, Some(rule)) = candidates(driver, m, n) else { return (None, t0.elapsed()) };
    let mut scratch = vec![0.0f32; m * n];
    let mut once = |blocking| {
        let t = Instant::now();
        // SAFETY: the caller's contract for a and b; scratch holds [m, n] with stride n.
        unsafe {
            super::run(driver, scratch.as_mut_ptr(), n, a, b, (m, n, k), false, Par::Pool, blocking)
        };
        t.elapsed()
    };
    let warm = once(Some(rule));
    if budget.is_some_and(|b| warm * (2 * cands.len()) as u32 > b) {
        return (None, t0.elapsed());
    }
    let mut best = vec![Duration::MAX; cands.len()];
    let order: Vec<usize> = (0..cands.len()).chain((0..cands.len()).rev()).collect();
    for i in order {
        best[i] = best[i].min(once(Some(cands[i])));
    }
    let flop = 2.0 * (m * n * k) as f64;
    let gflops: Vec<(Blocking, f64)> =
        cands.iter().zip(&best).map(|(&c, t)| (c, flop / t.as_secs_f64() / 1e9)).collect();
    let choice = pick(rule, &gflops);
    (Some(TunedShape { shape: key, timed_on: [m, n, k], choice, rule, gflops }), t0.elapsed())
}

/// The blocking for a product about to run on `driver` (`None`: the driver's rule), timing the
/// candidates now if this is the shape's first large product on the pool.
pub(super) fn choose(
    driver: Version,
    a: Mat,
    b: Mat,
    dims: (usize, usize, usize),
    par: Par,
) -> Option<Blocking> {
    let (m, n, k) = dims;
    let flop = 2.0 * (m * n * k) as f64;
    if par != Par::Pool || m <= FEW_ROWS || flop < MIN_FLOP || mode() == Mode::Off {
        return None;
    }
    let cands = candidates(driver, m, n).0;
    if cands.is_empty() {
        return None;
    }
    let key = key(driver, a, b, dims);
    let (left, reserved) = {
        let mut t = table();
        if let Some(known) = t.lookup(&key, cands) {
            return known;
        }
        // Other threads asking meanwhile keep the rule; so does this process if the trials
        // (one warm run, two per candidate), at the rate measured last, would pass the budget.
        t.now.insert(key.clone(), None);
        let trials = Duration::from_secs_f64(flop / t.rate * (1 + 2 * cands.len()) as f64);
        if t.spent + trials > BUDGET {
            return None;
        }
        // Reserved while it runs, so that threads tuning other shapes see it spent.
        t.spent += trials;
        (BUDGET - t.spent + trials, trials)
    };
    // SAFETY: the caller's (matmul_bf16_ptr's) contract; `driver` came from `super::driver`.
    let (shape, took) = unsafe { measure(driver, key, a, b, dims, Some(left)) };
    let mut t = table();
    t.spent = t.spent.saturating_sub(reserved) + took;
    if let Some(best) = shape.as_ref().and_then(|s| s.gflops.iter().map(|x| x.1).reduce(f64::max)) {
        t.rate = best * 1e9;
    }
    // A shape whose trials did not fit the budget keeps its marker: the rule, this process.
    let s = shape?;
    let choice = (s.choice != s.rule).then_some(s.choice);
    t.record(s);
    choice
}

/// Times every candidate for `version`'s product of `a` (`[m, k]`) and `b` (`[k, n]`) now,
/// whatever the budget and the kept choice, and keeps the result (`gpt1 bench kernels`); None
/// under `GPT1_TUNE=off` or where the version has no candidates (the emulation, a few rows).
pub fn tune_now(
    version: Version,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
) -> Option<TunedShape> {
    let fits = |x: Mat, r, c| x.data.len() >= super::last_index(r, c, x.rs, x.cs);
    assert!(fits(a, m, k) && fits(b, k, n), "tune_now: an operand is too short");
    let driver = super::driver(version, m);
    if mode() == Mode::Off || m <= FEW_ROWS {
        return None;
    }
    let key = key(driver, a, b, (m, n, k));
    // SAFETY: the operands' bounds are asserted above; `driver` came from `super::driver`.
    let (shape, took) = unsafe { measure(driver, key, a, b, (m, n, k), None) };
    let mut t = table();
    t.spent += took;
    let shape = shape?;
    // Products `choose` never looks up are reported, not kept.
    if 2.0 * (m * n * k) as f64 >= MIN_FLOP {
        t.record(shape.clone());
    }
    Some(shape)
}

/// The tuner's mode, file and the choices this process used.
pub fn tuner_report() -> TunerReport {
    let t = table();
    let mut shapes: Vec<TunedShape> = t.now.values().flatten().cloned().collect();
    shapes.sort_by(|a, b| a.shape.cmp(&b.shape));
    TunerReport {
        mode: mode(),
        cache_file: t.path.as_ref().map(|p| p.display().to_string()),
        cache_error: t.error.clone(),
        seconds_spent: t.spent.as_secs_f64(),
        shapes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt1_tune_takes_on_off_and_redo_and_names_them_otherwise() {
        assert_eq!(parse_mode(None), Ok(Mode::On));
        assert_eq!(parse_mode(Some("OFF")), Ok(Mode::Off));
        assert_eq!(parse_mode(Some(" redo ")), Ok(Mode::Redo));
        assert!(parse_mode(Some("fast")).unwrap_err().contains("on, off or redo"));
    }

    #[test]
    fn a_candidate_replaces_the_rule_only_when_clearly_faster() {
        let (r, c) = (Blocking::Rows(48), Blocking::Columns);
        assert_eq!(pick(r, &[(r, 100.0), (c, 102.0)]), r);
        assert_eq!(pick(r, &[(r, 100.0), (c, 104.0)]), c);
        assert_eq!(pick(r, &[(r, 100.0), (c, 90.0)]), r);
    }

    #[test]
    fn a_kept_file_round_trips() {
        let s = TunedShape {
            shape: "Avx512 2048x4096x1024 a b 2t".into(),
            timed_on: [2048, 2304, 768],
            choice: Blocking::Columns,
            rule: Blocking::Rows(48),
            gflops: vec![(Blocking::Rows(48), 350.0), (Blocking::Columns, 370.0)],
        };
        let text = serde_json::to_string(&CacheFile { cpu: "x".into(), shapes: vec![s.clone()] });
        let back: CacheFile = serde_json::from_str(&text.unwrap()).unwrap();
        assert_eq!(back.shapes, vec![s]);
        assert!(text_has_names(), "blockings are written as their names");
    }

    #[test]
    fn a_kept_choice_is_used_only_if_the_driver_takes_it_and_it_is_not_the_rule() {
        let shape = |key: &str, choice, rule| TunedShape {
            shape: key.into(),
            timed_on: [512, 512, 512],
            choice,
            rule,
            gflops: vec![],
        };
        let cands = [Blocking::Rows(24), Blocking::Rows(48), Blocking::Columns];
        let mut t = Table { loaded: true, ..Table::default() };
        for s in [
            shape("faster", Blocking::Rows(24), Blocking::Rows(48)),
            shape("rule", Blocking::Columns, Blocking::Columns),
            shape("edited", Blocking::Rows(100_000), Blocking::Rows(48)),
        ] {
            t.kept.insert(s.shape.clone(), s);
        }
        assert_eq!(t.lookup("faster", &cands), Some(Some(Blocking::Rows(24))));
        // The class's other shapes keep their own rule, which may differ.
        assert_eq!(t.lookup("rule", &cands), Some(None));
        // Not a candidate: timed again.
        assert_eq!(t.lookup("edited", &cands), None);
        assert_eq!(t.lookup("unknown", &cands), None);
        t.now.insert("busy".into(), None);
        assert_eq!(t.lookup("busy", &cands), Some(None));
    }

    fn text_has_names() -> bool {
        let all = [Blocking::Rows(24), Blocking::Columns, Blocking::KOuter(16)];
        let json = serde_json::to_string(&all).unwrap();
        let back: Vec<Blocking> = serde_json::from_str(&json).unwrap();
        json == r#"["rows 24","columns","k-outer 16"]"# && back == all
    }
}
