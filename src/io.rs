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

/// The text of a file the user named (a prompt, a document), at most `max` bytes: a device or
/// another special file is refused by name (`/dev/zero` would never end), a longer file is
/// refused before it fills the memory, and invalid UTF-8 is an error naming its byte offset.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    let md = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if md.is_dir() {
        return Err(Error::invalid(path, "is a directory, not a text file"));
    }
    if !md.is_file() {
        return Err(Error::invalid(path, "is a device or special file, not a text file"));
    }
    let mut bytes = Vec::new();
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(f, max + 1), &mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::invalid(path, format!("is over {} MiB, the most read here", max >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::invalid(path, format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
    })
}

/// Where a file that the user named (`--out`) is written: the one rule every command follows
/// (docs/reliability.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `-`: standard output.
    Stdout,
    /// A regular file, new or (with `--force`) replaced whole by [`write_atomic`]: the target
    /// of a symbolic link when the user named one, so the link stays a link.
    File(PathBuf),
    /// A device or a FIFO (`/dev/stdout`, a named pipe): written in place, never replaced.
    Special(PathBuf),
}

impl Output {
    /// The output at `path`: `-` is standard output; a symbolic link is followed to the file it
    /// names; a device or FIFO is written in place; a directory is refused; an existing file is
    /// refused unless `force` (gpt1 never replaces a file it did not write without being told).
    pub fn new(path: &Path, force: bool) -> Result<Output> {
        if path == Path::new("-") {
            return Ok(Output::Stdout);
        }
        // Devices and the process's own streams (/dev/stdout, /proc/self/fd/1) are written in
        // place, whatever they lead to.
        if path.starts_with("/dev") || path.starts_with("/proc") {
            return Ok(Output::Special(path.to_path_buf()));
        }
        let target = follow_links(path)?;
        match fs::metadata(&target) {
            Ok(md) if md.is_dir() => {
                Err(Error::invalid(path, "is a directory: name a file to write (or - for stdout)"))
            }
            Ok(md) if !md.is_file() => Ok(Output::Special(target)),
            Ok(_) if !force => Err(Error::invalid(
                path,
                "exists: gpt1 does not replace a file it did not write; choose another --out, or \
                 pass --force to replace it",
            )),
            Ok(_) => Ok(Output::File(target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Output::File(target)),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Refuses an output that is one of the command's `inputs` (even with `--force`): writing
    /// it would destroy what is being read.
    pub fn check_not_input<P: AsRef<Path>>(&self, inputs: &[P]) -> Result<()> {
        let (Output::File(p) | Output::Special(p)) = self else { return Ok(()) };
        match inputs.iter().find(|i| same_file(i.as_ref(), p)) {
            Some(i) => Err(Error::invalid(
                p,
                format!(
                    "is also this command's input ({}): writing it would destroy what is read; \
                     choose another --out",
                    i.as_ref().display()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Writes `bytes` there: atomically for a file, in place for a device, then flushed.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        match self {
            Output::File(p) => write_atomic(p, bytes),
            Output::Special(p) => fs::OpenOptions::new()
                .write(true)
                .open(p)
                .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()))
                .map_err(|e| Error::io(p, e)),
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(|e| Error::io("<stdout>", e))
            }
        }
    }

    /// The path written, `-` for standard output (for messages).
    pub fn display(&self) -> String {
        match self {
            Output::Stdout => "-".into(),
            Output::File(p) | Output::Special(p) => p.display().to_string(),
        }
    }
}

/// The rule for an output directory (`--out DIR`): it may be new, empty, or hold the same
/// command's earlier output; anything else holds files gpt1 did not write and is refused,
/// naming some, unless `force` is `Some(true)`. `own(name)` says which names are the command's
/// (its files, once it knows the directory is its earlier output, and its temporaries).
/// `force`: None where the command has no `--force` (its output replaces a directory whole, so
/// it never writes beside foreign files).
pub fn check_out_dir(dir: &Path, own: impl Fn(&str) -> bool, force: Option<bool>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::invalid(dir, "is a file: --out names a directory"));
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    let names: Vec<String> =
        rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if force == Some(true) {
        return Ok(());
    }
    let mut foreign: Vec<&String> = names.iter().filter(|n| !own(n)).collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let shown: Vec<&str> = foreign.iter().take(3).map(|s| s.as_str()).collect();
    let way = match force {
        Some(_) => {
            "choose a new or empty --out, or pass --force to write beside them (files of the \
             same names are replaced)"
        }
        None => "choose a new or empty --out",
    };
    Err(Error::invalid(
        dir,
        format!(
            "holds files gpt1 did not write ({}{}): {way}",
            shown.join(", "),
            if foreign.len() > 3 {
                format!(" and {} more", foreign.len() - 3)
            } else {
                String::new()
            }
        ),
    ))
}

/// `dir` with the symbolic links along its last component followed: a command that replaces
/// an output directory whole replaces the directory a link names, never the link.
pub fn resolve_out_dir(dir: &Path) -> Result<PathBuf> {
    follow_links(dir)
}

/// `path` with every symbolic link along its last component followed (at most 40, as the
/// kernel does); a dangling link gives the path it names.
fn follow_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                let t = fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = match p.parent() {
                    Some(dir) if t.is_relative() => dir.join(t),
                    _ => t,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::invalid(path, "too many levels of symbolic links"))
}

/// Whether `a` and `b` are the same file (device and inode; by canonical path elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_rule() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("mine.tsv");
        fs::write(&f, "the user's").unwrap();
        // An existing file is refused, then replaced with --force; a new one is taken.
        assert!(Output::new(&f, false).unwrap_err().to_string().contains("--force"));
        assert_eq!(Output::new(&f, true).unwrap(), Output::File(f.clone()));
        let new = d.path().join("new.tsv");
        assert_eq!(Output::new(&new, false).unwrap(), Output::File(new.clone()));
        assert_eq!(Output::new(Path::new("-"), false).unwrap(), Output::Stdout);
        assert!(Output::new(d.path(), true).is_err(), "a directory");
        // A link is followed: its target is written and the link stays a link.
        #[cfg(unix)]
        {
            let link = d.path().join("link.tsv");
            std::os::unix::fs::symlink("new.tsv", &link).unwrap();
            let o = Output::new(&link, false).unwrap();
            assert_eq!(o, Output::File(d.path().join("new.tsv")));
            o.write(b"x").unwrap();
            assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
            assert_eq!(fs::read(&new).unwrap(), b"x");
            // An input is refused even with --force, also through the link.
            let o = Output::new(&link, true).unwrap();
            assert!(o.check_not_input(&[&new]).unwrap_err().to_string().contains("input"));
            assert!(o.check_not_input(&[&f]).is_ok());
        }
        assert_eq!(fs::read(&f).unwrap(), b"the user's");
    }
}
