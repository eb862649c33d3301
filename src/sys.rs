//! What the rest of the library asks of the system and of plain data, below every layer:
//! content hashes (the identity of files, weights and compiled kernels), the host's memory and
//! CPU, and the user's cache folder.

/// FNV-1a over `bytes`, 64 bits, as hex: the identity of data and weights in a run's
/// specification (a check against changed inputs, not a security one).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> String {
    let h = bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{h:016x}")
}

/// [`fnv1a`] over 64-bit words (little-endian).
pub fn fnv_words(words: impl Iterator<Item = u64>) -> String {
    fnv1a(words.flat_map(u64::to_le_bytes))
}

/// `MemAvailable` of /proc/meminfo in bytes (None where unreadable).
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// gpt1's folder in the user's cache, for what is worth keeping between runs on this machine
/// (compiled CUDA kernels, the product tuner's choices): `$XDG_CACHE_HOME/gpt1`, else
/// `~/.cache/gpt1`; None when neither variable is set.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("gpt1"))
}

/// The CPU's model name (`model name` of /proc/cpuinfo), else the architecture's name.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo_field(&info, "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The first `key : value` line of /proc/cpuinfo's text named `key`, its value trimmed.
pub fn cpuinfo_field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}
