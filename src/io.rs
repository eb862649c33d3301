//! Crash-safe writes: temporary file, fsync, rename (and the same for whole directories).

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse to open directories for syncing.
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_sibling(path);
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Builds a directory under a temporary name with `fill`, then moves it to `dest`, replacing an
/// existing one only once the new one is complete.
pub fn write_dir_atomic(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_sibling(dest);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(&tmp);
    let old = dest.with_file_name(format!(
        "{}.old{}",
        dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let had_old = dest.exists();
    if had_old {
        fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
    }
    fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    if let Some(dir) = dest.parent() {
        sync_dir(dir);
    }
    Ok(())
}
