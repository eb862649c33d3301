//! What the rest of the library asks of the system and of plain data, below every layer:
//! content hashes (the identity of files, weights and compiled kernels) and the host's memory.

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
