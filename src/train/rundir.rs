//! A training run's directory: what gpt1 may write there, a lock so that two runs never share
//! one, the run's specification (`run.json`) so that a resume continues exactly the run that
//! was started, clean-up of what killed runs left, and a bounded number of checkpoints.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::sys::{fnv_words, fnv1a};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The specification file of a run.
pub const SPEC_FILE: &str = "run.json";
const LOCK_FILE: &str = ".lock";

/// The step of a `checkpoint-N` name, written as gpt1 writes it (`checkpoint-05` is not one).
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let s = name.strip_prefix("checkpoint-")?;
    s.parse::<u64>().ok().filter(|n| n.to_string() == s)
}

/// Entries a training run writes in its directory before anything else of it (the figures
/// come last, so a directory holding only `curves.png` is not a run: it is the user's).
fn ours(name: &str) -> bool {
    let base = name.split(".tmp").next().unwrap_or(name);
    let base = base.split(".old").next().unwrap_or(base);
    matches!(base, "run.json" | ".lock" | "metrics.jsonl" | "final" | "best")
        || checkpoint_step(base).is_some()
        || name.starts_with(super::tensorboard::PREFIX)
        || (base != name && matches!(base, "curves.png" | "report.md"))
}

/// What identifies a token file without reading all of it: its length and a hash of its first
/// and last MiB (a changed, truncated or swapped file changes one of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub bytes: u64,
    pub hash: String,
}

impl FileId {
    pub fn of(path: &Path) -> Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes = f.metadata().map_err(|e| Error::io(path, e))?.len();
        const MIB: u64 = 1 << 20;
        let mut buf = Vec::new();
        (&mut f).take(MIB).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        if bytes > MIB {
            f.seek(SeekFrom::Start((bytes - MIB).max(MIB))).map_err(|e| Error::io(path, e))?;
            f.take(MIB).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        }
        Ok(FileId { path: path.to_path_buf(), bytes, hash: fnv1a(buf) })
    }

    /// Same contents (the path may differ: a moved file is the same data).
    pub fn same_data(&self, other: &FileId) -> bool {
        self.bytes == other.bytes && self.hash == other.hash
    }
}

/// The identity of a model's weights (a fine-tuning run's initial ones; the ranks' agreement).
pub fn weights_hash(params: &[f32]) -> String {
    fnv_words(params.iter().map(|x| x.to_bits() as u64))
}

/// What to do about a directory that already holds a run (its owner's command continues it).
pub const RESUME_HINT: &str = "pass --resume to continue it, or choose another --out";

/// Holds a run directory for one process: an exclusive lock on `DIR/.lock`, released when
/// dropped or when the process dies (kill -9 included: the kernel drops the lock). Dropping it
/// (the run finished, stopped with its checkpoint, or failed) also removes `.lock`, so a
/// finished run leaves only its results; a killed one leaves an unlocked `.lock`, which the
/// next run takes.
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (which exists), or says who holds it.
    pub fn take(dir: &Path) -> Result<Self> {
        let p = dir.join(LOCK_FILE);
        // A holder removes the file before it lets the lock go: a lock taken on a file that is
        // no longer `.lock` protects nothing, so take the new one instead.
        for _ in 0..100 {
            let file = Self::try_take(dir, &p)?;
            if same_file(&file, &p) {
                use std::io::{Seek, Write};
                let mut file = file;
                let _ = file.set_len(0);
                let _ = file.seek(std::io::SeekFrom::Start(0));
                let _ = write!(file, "{}", std::process::id());
                return Ok(RunLock { file, path: p });
            }
        }
        Err(Error::invalid(dir, "its .lock keeps being replaced; is another gpt1 starting here?"))
    }

    fn try_take(dir: &Path, p: &Path) -> Result<File> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(|e| Error::io(p, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(Error::invalid(
                    dir,
                    format!(
                        "another gpt1 process (pid {}) is running in this directory; wait for it \
                         or choose another --out",
                        pid.trim()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(p, e)),
        }
    }
}

/// Whether the open `file` is still the file at `path` (not removed or replaced since).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this), so no other process can
        // hold a lock on the path meanwhile; failing to remove it only leaves a stale lock.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes `dir` ready for a new run: creates it, or accepts it empty. A directory holding a run
/// (`run.json` or a checkpoint) is refused with a pointer to `--resume`, and one holding files
/// gpt1 does not write is refused naming them: nothing of the user's is ever overwritten.
pub fn claim_new(dir: &Path, held_hint: &str) -> Result<RunLock> {
    check_new(dir, held_hint)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock = RunLock::take(dir)?;
    // Checked again under the lock: another process may have started in between.
    check_new(dir, held_hint)?;
    clean_stale(dir)?;
    Ok(lock)
}

/// Refuses a directory that is not free for a new run (see [`claim_new`]); creates nothing.
/// `held_hint` says what to do about a directory that holds a run.
pub fn check_new(dir: &Path, held_hint: &str) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::invalid(dir, "is a file; --out needs a directory"));
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    let names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    let held_err = || Err(Error::invalid(dir, format!("already holds a run; {held_hint}")));
    if names.iter().any(|n| n == SPEC_FILE) {
        return held_err();
    }
    let marker = |n: &String| {
        matches!(n.as_str(), "final" | "best" | "metrics.jsonl") || checkpoint_step(n).is_some()
    };
    let held = names.iter().any(marker);
    // The figures are a run's only beside the rest of it.
    let run_file =
        |n: &&String| ours(n) || (held && matches!(n.as_str(), "curves.png" | "report.md"));
    let foreign: Vec<&String> = names.iter().filter(|n| !run_file(n)).collect();
    if !foreign.is_empty() {
        let mut list: Vec<&str> = foreign.iter().take(3).map(|s| s.as_str()).collect();
        if foreign.len() > 3 {
            list.push("…");
        }
        return Err(Error::invalid(
            dir,
            format!(
                "holds files gpt1 did not write for a run ({}); choose an empty or new --out",
                list.join(", ")
            ),
        ));
    }
    if held {
        return held_err();
    }
    Ok(())
}

/// Takes an existing run directory for a resume (the lock, then the clean-up).
pub fn claim_existing(dir: &Path) -> Result<RunLock> {
    if !dir.is_dir() {
        return Err(Error::invalid(dir, "--resume: no run here (the directory does not exist)"));
    }
    let lock = RunLock::take(dir)?;
    clean_stale(dir)?;
    Ok(lock)
}

/// Removes what killed runs left behind: `NAME.tmpPID` and `NAME.oldPID` entries of this
/// directory (only gpt1's own names). A `NAME.oldPID` whose `NAME` is gone is the last whole
/// copy (a kill between the two renames of a directory replacement): it is renamed back, not
/// removed. Called under the lock, before this process writes anything, so no live run owns them.
pub fn clean_stale(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let stale = |name: &str, sep: &str| -> Option<String> {
        let (base, pid) = name.rsplit_once(sep)?;
        (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && ours(name))
            .then(|| base.to_string())
    };
    for name in &names {
        if let Some(base) = stale(name, ".old")
            && !dir.join(&base).exists()
        {
            let (from, to) = (dir.join(name), dir.join(&base));
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    for name in &names {
        if stale(name, ".tmp").or_else(|| stale(name, ".old")).is_none() {
            continue;
        }
        let p = dir.join(name);
        if !p.exists() {
            continue; // renamed back above
        }
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| Error::io(&p, e))?;
        n += 1;
    }
    Ok(n)
}

/// Deletes the oldest `checkpoint-N/` directories of `dir` beyond the newest `keep` (never
/// `final/`; `keep` 0 keeps all).
pub fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .filter_map(|e| checkpoint_step(&e.file_name().to_string_lossy()))
        .collect();
    steps.sort_unstable();
    for s in steps.iter().rev().skip(keep) {
        let p = dir.join(format!("checkpoint-{s}"));
        std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Writes a run's specification (any serializable value) as `DIR/run.json`.
pub fn save_spec<T: Serialize>(dir: &Path, spec: &T) -> Result<()> {
    write_atomic(&dir.join(SPEC_FILE), json_text(spec)?.as_bytes())
}

/// `value` as pretty JSON; a record that holds a path that is not UTF-8 cannot be written (the
/// command line refuses such arguments; this is the library's error for them).
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Serialize(format!("JSON: {e}")))
}

/// Reads `DIR/run.json`, or `None` for a run from before specifications were recorded.
pub fn load_spec<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Option<T>> {
    let p = dir.join(SPEC_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::invalid(&p, format!("not a run specification ({e})")))
}

/// Keeps only the metric lines of steps `<= step` (after a resume).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

/// A run's `metrics.jsonl`, one JSON line per record, appended by the leading rank only (the
/// others hold no file); on a resume from step `s`, the lines after `s` are dropped first.
pub struct MetricsLog {
    path: PathBuf,
    file: Option<File>,
    /// The same numbers for TensorBoard, in an event file beside it.
    events: Option<super::tensorboard::EventWriter>,
}

impl MetricsLog {
    pub fn open(path: PathBuf, lead: bool, resume_at: Option<u64>) -> Result<Self> {
        if !lead {
            return Ok(MetricsLog { path, file: None, events: None });
        }
        if let Some(s) = resume_at {
            truncate_metrics(&path, s)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let events = Some(super::tensorboard::EventWriter::create(dir)?);
        Ok(MetricsLog { path, file: Some(file), events })
    }

    pub fn write(&mut self, v: serde_json::Value) -> Result<()> {
        use std::io::Write;
        if let Some(e) = &mut self.events {
            e.write(&v)?;
        }
        match &mut self.file {
            Some(f) => writeln!(f, "{v}").map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Records a step's failure to diverge (a NaN or infinite loss: its step and fix, as a
    /// `warning`, so the log and TensorBoard say it too) and flushes; other results pass
    /// through untouched.
    pub fn note_divergence<T>(&mut self, step: u64, lr: f32, r: &Result<T>) -> Result<()> {
        if let Err(e @ Error::Diverged { .. }) = r {
            self.write(serde_json::json!({"step": step, "lr": lr, "warning": e.to_string()}))?;
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes the lines to disk (before a stop or at the end); whether this rank writes.
    pub fn sync(&self) -> Result<bool> {
        if let Some(e) = &self.events {
            e.sync()?;
        }
        match &self.file {
            Some(f) => f.sync_all().map(|_| true).map_err(|e| Error::io(&self.path, e)),
            None => Ok(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_foreign_files_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
        let e = claim_new(d.path(), "").err().unwrap().to_string();
        assert!(e.contains("notes.txt"), "{e}");
        assert_eq!(std::fs::read_to_string(d.path().join("notes.txt")).unwrap(), "mine");
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held() {
        let d = tempfile::tempdir().unwrap();
        let first = RunLock::take(d.path()).unwrap();
        let e = RunLock::take(d.path()).err().unwrap().to_string();
        assert!(e.contains("another gpt1 process"), "{e}");
        assert!(d.path().join(".lock").is_file());
        drop(first);
        assert!(!d.path().join(".lock").exists(), "the lock's file goes with it");
        // A lock file left unlocked (a killed run's) is taken as it is.
        std::fs::write(d.path().join(".lock"), "123").unwrap();
        let again = RunLock::take(d.path()).unwrap();
        let pid = std::fs::read_to_string(d.path().join(".lock")).unwrap();
        assert_eq!(pid, std::process::id().to_string());
        drop(again);
    }

    /// A lock held on a file that was removed (its holder let it go) protects nothing: the
    /// next taker makes a new `.lock` instead of trusting the old file.
    #[test]
    fn a_lock_on_a_removed_file_is_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let old = std::fs::File::create(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(!same_file(&old, &p));
        let lock = RunLock::take(d.path()).unwrap();
        assert!(same_file(&lock.file, &p));
        assert!(RunLock::take(d.path()).is_err());
    }

    #[test]
    fn stale_temporaries_of_dead_runs_are_removed_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        for n in ["checkpoint-4.tmp99999", "best", "best.old123", "metrics.jsonl.tmp5", "keep.tmp7"]
        {
            std::fs::create_dir_all(d.path().join(n)).unwrap();
        }
        assert_eq!(clean_stale(d.path()).unwrap(), 3);
        assert!(d.path().join("keep.tmp7").exists() && d.path().join("best").exists());
    }

    #[test]
    fn the_last_whole_copy_left_between_two_renames_is_restored() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("best.old42")).unwrap();
        std::fs::write(d.path().join("best.old42/model.safetensors"), "w").unwrap();
        std::fs::create_dir_all(d.path().join("best.tmp42")).unwrap();
        clean_stale(d.path()).unwrap();
        assert!(d.path().join("best/model.safetensors").exists());
        assert!(!d.path().join("best.tmp42").exists() && !d.path().join("best.old42").exists());
    }

    #[test]
    fn only_canonical_checkpoint_names_are_gpt1s() {
        assert_eq!(checkpoint_step("checkpoint-5"), Some(5));
        assert_eq!(checkpoint_step("checkpoint-05"), None);
        assert_eq!(checkpoint_step("checkpoint-+5"), None);
        assert!(!ours("curves.png") && ours("curves.png.tmp3") && ours("final.old9"));
    }

    #[test]
    fn pruning_keeps_the_newest_checkpoints_and_final() {
        let d = tempfile::tempdir().unwrap();
        for n in ["checkpoint-10", "checkpoint-20", "checkpoint-30", "final"] {
            std::fs::create_dir_all(d.path().join(n)).unwrap();
        }
        prune_checkpoints(d.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint-20", "checkpoint-30", "final"]);
    }
}
