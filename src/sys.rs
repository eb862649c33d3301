//! What the rest of the library asks of the system and of plain data, below every layer:
//! content hashes (the identity of files, weights and compiled kernels), the host's memory and
//! CPU, the user's cache folder, and a check run in a child process.

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

/// How a check run in a child process ([`in_child`]) ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildCheck {
    /// The child returned this verdict.
    Returned(bool),
    /// A signal ended the child (a fault: `SIGILL`, `SIGSEGV`, ...).
    Signal(i32),
    /// The child overran the time limit and was killed.
    TimedOut,
    /// The child ran but its end could not be learned (`waitpid` failed: SIGCHLD ignored, so
    /// the kernel reaped it): it may have faulted.
    Lost,
    /// No child could be made (`fork` refused, e.g. in a sandbox): the caller decides.
    NoChild,
}

/// Runs `check` in a forked child process and reports how it ended, so that code which may
/// fault on a CPU it has never run on (AMX's tile instructions: `kernels::gemm`'s self-check)
/// costs the child, not this process. The child runs `check` on its only thread and leaves
/// with `_exit`, running no destructor, handler or buffered write of this process.
///
/// # Safety
/// `check` must not take a lock another thread may hold at the fork (the child has no other
/// thread to release it): no thread pool, no shared mutex, and no panic (the panic hook takes
/// std's locks). Allocation is fine on glibc, which resets its locks in the child.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn in_child(
    check: impl FnOnce() -> bool,
    limit: std::time::Duration,
) -> ChildCheck {
    // SAFETY: after the fork the child only runs `check` (the caller's contract) and
    // `_exit`s; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return ChildCheck::NoChild;
    }
    if pid == 0 {
        let ok = check();
        // SAFETY: leaving the child at once, as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    let t0 = std::time::Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; writes only `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Reaped by someone else (SIGCHLD ignored, or a handler): the verdict is lost.
            return ChildCheck::Lost;
        }
        if t0.elapsed() > limit {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return ChildCheck::TimedOut;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if libc::WIFSIGNALED(status) {
        ChildCheck::Signal(libc::WTERMSIG(status))
    } else {
        ChildCheck::Returned(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::{ChildCheck, in_child};
    use std::time::Duration;

    #[test]
    fn a_check_in_a_child_reports_its_verdict_a_fault_or_a_hang() {
        let limit = Duration::from_secs(20);
        // SAFETY (every call): the checks take no lock and do not panic.
        unsafe {
            assert_eq!(in_child(|| true, limit), ChildCheck::Returned(true));
            assert_eq!(in_child(|| false, limit), ChildCheck::Returned(false));
            // An instruction the CPU refuses, as an unsupported tile instruction would be:
            // `ud2` raises SIGILL in the child, which ends it.
            let fault = || {
                std::arch::asm!("ud2");
                true
            };
            assert_eq!(in_child(fault, limit), ChildCheck::Signal(libc::SIGILL));
            let hang = || loop {
                // A raw sleep: std's takes no lock either, but this is plainly lock-free.
                libc::usleep(50_000);
            };
            assert_eq!(in_child(hang, Duration::from_millis(300)), ChildCheck::TimedOut);
        }
    }
}
