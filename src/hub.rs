//! Models where Hugging Face users keep them: a hub id (`openai-community/openai-gpt`) names
//! the snapshot that `huggingface-cli download` or transformers' `from_pretrained` left in
//! the local cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`):
//! `models--ORG--NAME/refs/main` holds a commit hash, `snapshots/HASH/` the files. Offline:
//! nothing is downloaded.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub cache folder the environment names.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if let Some(h) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&h).join("hub");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/huggingface/hub")
}

/// Whether `s` reads as a hub id: `ORG/NAME` (or `NAME`) of letters, digits, `-`, `_`, `.`,
/// with an optional `@REVISION`.
fn is_hub_id(s: &str) -> bool {
    let id = s.split('@').next().unwrap_or(s);
    let parts: Vec<&str> = id.split('/').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| ok(p))
}

/// `path` itself when it exists; else, when it reads as a hub id, its snapshot in the local
/// cache; else `path` (the loader then says it is missing).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    resolve_in(path, &cache_dir())
}

/// [`resolve`] with the cache folder given.
pub fn resolve_in(path: &Path, cache: &Path) -> Result<PathBuf> {
    let s = path.to_string_lossy();
    if path.exists() || !is_hub_id(&s) || !s.contains('/') {
        return Ok(path.to_path_buf());
    }
    let (id, rev) = match s.split_once('@') {
        Some((i, r)) => (i, r),
        None => (&*s, "main"),
    };
    // A ref's name or a commit: never a path out of the repository's folders.
    if rev.is_empty() || rev.starts_with('/') || rev.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(Error::invalid(
            path,
            format!("{rev:?} is not a revision: give a branch, a tag or a commit hash"),
        ));
    }
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let missing = |what: String| {
        Error::invalid(
            path,
            format!(
                "not a directory here, and {what} in the Hugging Face cache {}: download it \
                 with `huggingface-cli download {id}` (or transformers' from_pretrained), or \
                 set HF_HUB_CACHE / HF_HOME to the cache that holds it",
                cache.display()
            ),
        )
    };
    if !repo.is_dir() {
        return Err(missing(format!(
            "no {}",
            repo.file_name().unwrap_or_default().to_string_lossy()
        )));
    }
    // A revision is a ref's name (refs/NAME holds the hash) or a commit hash itself.
    let hash = match std::fs::read_to_string(repo.join("refs").join(rev)) {
        Ok(h) => h.trim().to_string(),
        Err(_) => rev.to_string(),
    };
    let snap = repo.join("snapshots").join(&hash);
    if !snap.is_dir() {
        return Err(missing(format!("revision {rev} ({hash}) has no snapshot")));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_find_their_snapshot_and_paths_stay_paths() {
        let cache = std::env::temp_dir().join(format!("gpt1-hub-test-{}", std::process::id()));
        let repo = cache.join("models--openai-community--openai-gpt");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let id = Path::new("openai-community/openai-gpt");
        assert_eq!(resolve_in(id, &cache).unwrap(), repo.join("snapshots/abc123"));
        let pinned = Path::new("openai-community/openai-gpt@abc123");
        assert_eq!(resolve_in(pinned, &cache).unwrap(), repo.join("snapshots/abc123"));
        let e = resolve_in(Path::new("openai-community/nope"), &cache).unwrap_err().to_string();
        assert!(e.contains("huggingface-cli download openai-community/nope"), "{e}");
        let e = resolve_in(Path::new("openai-community/openai-gpt@v2"), &cache).unwrap_err();
        assert!(e.to_string().contains("revision v2"), "{e}");
        for bad in ["openai-community/openai-gpt@", "openai-community/openai-gpt@../x"] {
            assert!(
                resolve_in(Path::new(bad), &cache)
                    .unwrap_err()
                    .to_string()
                    .contains("not a revision")
            );
        }
        // Paths (existing, absolute, relative with ./, or one word) are left to the loaders.
        assert_eq!(resolve_in(&cache, &cache).unwrap(), cache);
        assert_eq!(resolve_in(Path::new("./a/b"), &cache).unwrap(), Path::new("./a/b"));
        assert_eq!(resolve_in(Path::new("model"), &cache).unwrap(), Path::new("model"));
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
