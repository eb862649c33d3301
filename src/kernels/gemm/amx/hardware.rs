//! The AMX tile instructions ([`Hardware`]) and the checks that decide whether they run
//! ([`status`]): CPUID, the tile palette, the OS's permission, a self-check product.

use super::{Job, MA, Steps, TileOps, self_check};
use crate::kernels::gemm::driver::{KP, NR};
use crate::kernels::gemm::panels::{no_blocks, no_panels};
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// The tile instructions themselves.
pub(in crate::kernels::gemm) struct Hardware;

/// The tile configuration (palette 1): eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row, little-endian u16
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

// a's tile rows (KP pairs, 4·KP bytes) are 4 times b's (NR pairs): one stride register and
// a scale of 4 address both.
const _: () = assert!(KP == 4 * NR);

// The offsets the assembly reads `Job`'s and `Steps`' fields at.
const _: () = {
    assert!(std::mem::offset_of!(Job, a) == 0 && std::mem::offset_of!(Job, b) == 8);
    assert!(std::mem::offset_of!(Job, c) == 16 && std::mem::offset_of!(Job, ldc_bytes) == 24);
    assert!(std::mem::offset_of!(Job, load) == 32 && std::mem::size_of::<Job>() == 40);
    assert!(
        std::mem::offset_of!(Steps, whole) == 0 && std::mem::offset_of!(Steps, b_blk_bytes) == 8
    );
    assert!(std::mem::offset_of!(Steps, last) == 16);
};

impl TileOps for Hardware {
    unsafe fn run(&self, jobs: &[Job], steps: &Steps) {
        if jobs.is_empty() {
            return;
        }
        // SAFETY: `status` checked that the CPU has AMX and the OS granted its state; the jobs'
        // pointers and strides are the caller's contract. One asm block configures the tiles,
        // runs every job (its accumulators in tmm0–3 from its first step to its last), and
        // releases the tiles: Rust's inline-assembly rules leave registers that are not
        // operands (the tiles can only be clobbers) undefined on entry to a block, so no tile
        // state may outlive it.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{t}]",
                // One job: its c (row stride sc bytes) loaded into tmm0-3, or zeroed.
                "9:",
                "mov {c0}, [{jp} + 16]",
                "mov {sc}, [{jp} + 24]",
                "mov {t}, {sc}",
                "shl {t}, 4",
                "add {t}, {c0}",
                "cmp qword ptr [{jp} + 32], 0",
                "je 2f",
                "tileloadd tmm0, [{c0} + {sc}*1]",
                "tileloadd tmm1, [{c0} + {sc}*1 + 64]",
                "tileloadd tmm2, [{t} + {sc}*1]",
                "tileloadd tmm3, [{t} + {sc}*1 + 64]",
                "jmp 3f",
                "2:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "3:",
                "mov {a}, [{jp}]",
                "mov {b}, [{jp} + 8]",
                "mov {nb}, [{st}]",
                // Every block but the last: KP / 16 steps each.
                "6:",
                "test {nb}, {nb}",
                "jz 7f",
                "mov {n}, {full}",
                "mov {t}, {a}",
                "mov {pb}, {b}",
                "4:",
                "tileloadd tmm4, [{t} + {s}*4]",
                "tileloadd tmm6, [{pb} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{pb} + {s}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{t} + {s}*4 + {a_hi}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {t}, 64",
                "add {pb}, {b_step}",
                "dec {n}",
                "jnz 4b",
                "add {a}, {a_blk}",
                "add {b}, [{st} + 8]",
                "dec {nb}",
                "jmp 6b",
                // The last block: `last` steps.
                "7:",
                "mov {n}, [{st} + 16]",
                "test {n}, {n}",
                "jz 5f",
                "8:",
                "tileloadd tmm4, [{a} + {s}*4]",
                "tileloadd tmm6, [{b} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a} + {s}*4 + {a_hi}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 64",
                "add {b}, {b_step}",
                "dec {n}",
                "jnz 8b",
                // Store the job's c, then the next job.
                "5:",
                "mov {t}, {sc}",
                "shl {t}, 4",
                "add {t}, {c0}",
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c0} + {sc}*1 + 64], tmm1",
                "tilestored [{t} + {sc}*1], tmm2",
                "tilestored [{t} + {sc}*1 + 64], tmm3",
                "add {jp}, 40",
                "dec {jn}",
                "jnz 9b",
                "tilerelease",
                t = inout(reg) CONFIG.0.as_ptr() => _,
                jp = inout(reg) jobs.as_ptr() => _,
                jn = inout(reg) jobs.len() => _,
                st = in(reg) steps as *const Steps,
                c0 = out(reg) _,
                sc = out(reg) _,
                a = out(reg) _,
                b = out(reg) _,
                nb = out(reg) _,
                n = out(reg) _,
                pb = out(reg) _,
                s = in(reg) 4 * NR,
                full = const KP / 16,
                a_blk = const MA * KP * 4,
                a_hi = const 16 * KP * 4,
                b_step = const 16 * NR * 4,
                options(nostack),
            );
        }
    }
}

/// Why AMX is not used, or Ok: decided once per process. Checks, in order: AVX-512 BF16 (the
/// packing uses it), the CPU's AMX-BF16 and AMX-TILE bits, the OS's permission for the tile
/// state, and a self-check product (odd shapes, accumulation) against [`reference`], first in a
/// child process ([`isolated_check`]), then here.
pub fn status() -> &'static Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS.get_or_init(|| {
        if !crate::kernels::gemm::avx512_bf16() {
            return Err("no AVX-512 BF16".into());
        }
        if !has_amx() {
            return Err("no AMX on this CPU".into());
        }
        palette_fits()?;
        request_permission()?;
        isolated_check()?;
        self_check(&Hardware)
    })
}

/// The self-check first in a child process (`sys::in_child`): the tile kernel has run on
/// hardware only where this build was measured, so one that faults (an instruction or a
/// layout wrong on some CPU) must end the child, not the user's run. Err if the child died or
/// hung; Ok if it returned, whatever its verdict ([`status`] then runs the check here, which
/// cannot fault, to give its result and message); Ok where no child can be made.
fn isolated_check() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use crate::sys::{ChildCheck, in_child};
        let limit = std::time::Duration::from_secs(60);
        // SAFETY: the self-check runs on the calling thread (`Par::Single`: no pool, no pinned
        // panels' mutex, thread-local buffers and allocation only) and returns its failures
        // as values, without panicking.
        match unsafe { in_child(|| self_check(&Hardware).is_ok(), limit) } {
            ChildCheck::Signal(sig) => {
                return Err(format!("the AMX self-check crashed its test process (signal {sig})"));
            }
            ChildCheck::Lost => {
                return Err("the end of the AMX self-check's test process was lost (is SIGCHLD \
                            ignored?)"
                    .into());
            }
            ChildCheck::TimedOut => {
                return Err(format!(
                    "the AMX self-check did not finish in {} s in its test process",
                    limit.as_secs()
                ));
            }
            ChildCheck::Returned(_) | ChildCheck::NoChild => {}
        }
    }
    Ok(())
}

/// The CPU reports AMX-BF16 and AMX-TILE (CPUID leaf 7: EDX bits 22 and 24).
pub fn has_amx() -> bool {
    let r = __cpuid_count(7, 0);
    r.edx & (1 << 22) != 0 && r.edx & (1 << 24) != 0
}

/// The tile palette 1 (CPUID leaf 0x1D) holds the configuration used here: 8 tiles of 16 rows
/// of 64 bytes.
fn palette_fits() -> Result<(), String> {
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 0x1D || __cpuid_count(0x1D, 0).eax < 1 {
        return Err("the CPU reports no AMX tile palette".into());
    }
    let p = __cpuid_count(0x1D, 1);
    let (row_bytes, names, rows) = (p.ebx & 0xFFFF, p.ebx >> 16, p.ecx & 0xFFFF);
    if row_bytes < 64 || names < 8 || rows < 16 {
        return Err(format!(
            "the AMX palette has {names} tiles of {rows} rows of {row_bytes} bytes; 8 × 16 × 64 needed"
        ));
    }
    Ok(())
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux grants a process the tile
/// state only on request (kernel 5.16+).
fn request_permission() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a system call with integer arguments; it reads and writes no memory of ours.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret != 0 {
            return Err(format!("the OS refused the AMX tile state (arch_prctl: error {})", -ret));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err("AMX is enabled on Linux only".into())
}

/// The micro-kernel's own rate on one thread, FLOP/s: about `reps` k blocks of 32 × 32 blocks
/// of `c`, each through 24 k blocks (k = 6,144; `a` from L2, one L1-resident `b` panel read for
/// every block), run [`super::JOBS`] blocks at a time as a product's tasks run them: the tiles
/// configured once per run, each block's `c` loaded and stored once; timed after one untimed
/// pass, on operands aligned to cache lines as a product's are. Not comparable with the earlier
/// versions' rates: the first paid a configuration, a load and a store per k block, the second
/// (2026-12-06) configured the tiles per block of `c`, and before 2026-12-07 (evening) the
/// operands straddled cache lines and the first, slow milliseconds were timed (411 GFLOP/s on
/// 2 threads of an AMX Xeon against 4,100–4,300 now).
///
/// # Safety
/// [`status`] is Ok.
pub(in crate::kernels::gemm) unsafe fn kernel_rate(reps: usize) -> f64 {
    const BLOCKS: usize = 24;
    // Aligned as a product's operands (a tile row across two cache lines loads ~3x slower).
    let filled = |len, v| {
        let mut p = no_panels();
        p.resize(len, v);
        p
    };
    let (ap, bp) = (filled(BLOCKS * MA * KP, 0x3F80_3F80), filled(NR * KP, 0x3C00_3C00));
    // Each job its own block of c, as in a product (one shared block would make every job's
    // loads wait for the previous job's stores).
    let mut c = no_blocks();
    c.resize(super::JOBS * MA * NR, 0.0);
    let cp = c.as_mut_ptr();
    // SAFETY: job i's block lies at i·MA·NR inside c.
    let jobs: [Job; super::JOBS] = std::array::from_fn(|i| Job {
        a: ap.as_ptr(),
        b: bp.as_ptr(),
        c: unsafe { cp.add(i * MA * NR) },
        ldc_bytes: 4 * NR,
        load: 1,
    });
    // b's k blocks 0 apart: the same panel for every block.
    let steps = Steps { whole: BLOCKS - 1, b_blk_bytes: 0, last: KP / 16 };
    let runs = reps.div_ceil(BLOCKS * super::JOBS).max(1);
    // The tile units run slowly for their first milliseconds of use (3x on the first 5 ms
    // measured on a Xeon): one untimed pass first.
    for _ in 0..runs {
        // SAFETY: the caller's contract; the buffers hold the layout.
        unsafe { Hardware.run(&jobs, &steps) };
    }
    let t0 = std::time::Instant::now();
    for _ in 0..runs {
        // SAFETY: the caller's contract; the buffers hold the layout.
        unsafe { Hardware.run(&jobs, &steps) };
    }
    std::hint::black_box(&c);
    (2 * MA * NR * 2 * KP * BLOCKS * super::JOBS * runs) as f64 / t0.elapsed().as_secs_f64()
}
