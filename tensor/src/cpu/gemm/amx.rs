//! The bf16 product on AMX tiles (Intel Xeon from Sapphire Rapids on): the same numbers as
//! [`super::bf16`] asks for (operands rounded to bf16, f32 accumulation), from `tdpbf16ps`,
//! which multiplies a 16x32 bf16 tile by a 32x16 one into a 16x16 f32 tile: 8192 multiply-adds
//! per instruction, 16x what one `vdpbf16ps` does.
//!
//! Tiles (8 registers of 16 rows x 64 bytes, all configured alike): C is 32x32 in tmm0..tmm3,
//! A is two 16-row tiles (tmm4, tmm5) of 32 depth values each, B two 16-column tiles (tmm6,
//! tmm7). B's tile layout is the bf16 kernel's packed panel of NR = 32 pairs (one depth pair of
//! 32 columns per 128 bytes), so [`super::bf16::PackedB`] and its packing serve both. A is
//! rounded into plain rows of pairs (row-major, depth contiguous).
//!
//! The depth must be a multiple of 32 (whole tiles; every Swin layer's is); other products take
//! the AVX512-BF16 kernel. Edge tiles (m or n not a multiple of 32) are computed into a scratch
//! tile from zero-padded A rows and B panels and copied out.
//!
//! Linux lends AMX's tile data state to a process only on request (`arch_prctl`), made once by
//! [`available`]. Inline assembly (`asm!`) is used because the AMX intrinsics are not stable Rust.

use super::bf16::{line_ptr, pack_pairs, pair, with_bufs, PackBufs, PackedB, NR};
use super::driver::{micro_tile, Problem, Tile};
use super::Isa;
use std::arch::asm;
use std::sync::OnceLock;

/// Rows of C per tile kernel call (two A tiles).
pub const MR: usize = 32;
/// Depth values per block (as the bf16 kernel, so its packed B blocks are ours).
const KC: usize = 512;
/// Rows of A rounded at once: 256 x (512 + 32) bf16 = 272 KiB, in L2.
const MC: usize = 256;
const NC: usize = 4096;
/// Extra pairs per A row: a row stride that is not a power of two keeps the 16 rows of a tile
/// load out of the same cache sets.
const A_PAD: usize = 16;

/// The CPU has AMX-BF16 and AMX-TILE (and AVX512-BF16, for the packing and the fallback), and
/// the kernel granted this process the tile data state.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !Isa::Avx512Bf16.available() {
            return false;
        }
        // cpuid leaf 7 (structured extended features) exists on every CPU with AVX-512.
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
        amx_bf16 && amx_tile && request_tile_data()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 when the kernel grants it.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let ret: i64;
    // SAFETY: a plain system call; it reads no memory of ours.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
             in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The 64-byte `ldtilecfg` operand: palette 1, every tile 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut colsb = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut t = 0;
    while t < 8 {
        colsb[t] = 64;
        rows[t] = 16;
        t += 1;
    }
    TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb, rows }
};

/// C[32, 32] (+)= A[32, 2 kp] · B[2 kp, 32]: `a` holds 32 rows of pairs `lda` u32s apart, `b` a
/// packed panel (32 pairs per depth pair), `c` f32 rows `ldc` floats apart; kp % 16 == 0.
///
/// # Safety
/// Tiles configured with [`CONFIG`] on this thread; every pointer covers its tile.
unsafe fn tile_32x32(kp: usize, a: *const u32, lda: usize, b: *const u32, c: *mut f32, ldc: usize, load_c: bool) {
    debug_assert!(kp > 0 && kp.is_multiple_of(16));
    let (sa, sc) = (lda * 4, ldc * 4);
    asm!(
        "test {load:e}, {load:e}",
        "jz 3f",
        "tileloadd tmm0, [{c} + {sc}*1]",
        "tileloadd tmm1, [{c} + {sc}*1 + 64]",
        "tileloadd tmm2, [{c2} + {sc}*1]",
        "tileloadd tmm3, [{c2} + {sc}*1 + 64]",
        "jmp 4f",
        "3:",
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "4:",
        // 16 depth pairs per step: A moves 64 bytes along its rows, B 16 pair rows of 128 bytes.
        "2:",
        "tileloadd tmm4, [{a} + {sa}*1]",
        "tileloadd tmm5, [{a2} + {sa}*1]",
        "tileloadd tmm6, [{b} + {sb}*1]",
        "tileloadd tmm7, [{b} + {sb}*1 + 64]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 64",
        "add {a2}, 64",
        "add {b}, 2048",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {sc}*1], tmm0",
        "tilestored [{c} + {sc}*1 + 64], tmm1",
        "tilestored [{c2} + {sc}*1], tmm2",
        "tilestored [{c2} + {sc}*1 + 64], tmm3",
        load = in(reg) load_c as u32,
        a = inout(reg) a => _,
        a2 = inout(reg) a.add(16 * lda) => _,
        b = inout(reg) b => _,
        n = inout(reg) kp / 16 => _,
        c = in(reg) c,
        c2 = in(reg) c.add(16 * ldc),
        sa = in(reg) sa,
        sb = in(reg) NR * 4,
        sc = in(reg) sc,
        options(nostack),
    );
}

/// Rounds rows [0, rows) x depth [0, kc) of A into `dst` (row i at `dst[i * lda..]`, pairs) and
/// zeroes rows [rows, rows_padded).
///
/// # Safety
/// Every addressed A element readable; `dst` holds `rows_padded * lda` u32s, lda >= kc / 2.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_rows(
    rows: usize,
    rows_padded: usize,
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    dst: *mut u32,
    lda: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(kc.is_multiple_of(32));
    for i in 0..rows_padded {
        let d = dst.add(i * lda);
        if i >= rows {
            std::ptr::write_bytes(d, 0, kc / 2);
        } else if a_cs == 1 {
            let src = a.add(i * a_rs);
            for k0 in (0..kc).step_by(32) {
                let (lo, hi) = (_mm512_loadu_ps(src.add(k0)), _mm512_loadu_ps(src.add(k0 + 16)));
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(d.add(k0 / 2) as *mut __m512i, v);
            }
        } else {
            for p in 0..kc / 2 {
                let at = |k: usize| *a.add(i * a_rs + k * a_cs);
                *d.add(p) = pair(at(2 * p), at(2 * p + 1));
            }
        }
    }
}

/// The single-threaded blocked product on AMX tiles (the thread split is the driver's).
///
/// # Safety
/// `p` must describe valid, in-bounds operands with k > 0 and k % 32 == 0, and [`available`]
/// must be true.
pub unsafe fn serial(p: &Problem) {
    debug_assert!(p.k > 0 && p.k.is_multiple_of(32));
    // SAFETY: loading a valid configuration; tilerelease returns the tile state to init.
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    with_bufs(|bufs| blocked(p, bufs));
    asm!("tilerelease", options(nostack, nomem));
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn blocked(p: &Problem, bufs: &mut PackBufs) {
    let kp_max = KC.min(p.k) / 2;
    let lda = kp_max + A_PAD;
    let nc_max = NC.min(p.n.div_ceil(NR) * NR);
    let abuf = line_ptr(&mut bufs.a, MC.min(p.m.div_ceil(MR) * MR) * lda);
    let bbuf = line_ptr(&mut bufs.b, nc_max * kp_max);
    let mut tmp = [0.0f32; MR * NR];
    let tmp = tmp.as_mut_ptr();
    let packed: Option<&PackedB> = p.packed_b.map(|pb| &*pb);
    for jc in (0..p.n).step_by(NC) {
        let nc = NC.min(p.n - jc);
        for pc in (0..p.k).step_by(KC) {
            let kc = KC.min(p.k - pc);
            let kp = kc / 2;
            let load_c = p.accumulate || pc > 0;
            let last = pc + kc == p.k;
            if packed.is_none() {
                pack_pairs::<NR>(nc, kc, p.b.add(pc * p.b_rs + jc * p.b_cs), p.b_cs, p.b_rs, bbuf);
            }
            for ic in (0..p.m).step_by(MC) {
                let mc = MC.min(p.m - ic);
                let a = p.a.add(ic * p.a_rs + pc * p.a_cs);
                round_rows(mc, mc.div_ceil(MR) * MR, kc, a, p.a_rs, p.a_cs, abuf, lda);
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bp = match packed {
                        Some(pb) => pb.panel(pc, p.col0 + jc + jr),
                        None => bbuf.add(jr * kp),
                    };
                    for ir in (0..mc).step_by(MR) {
                        let ap = abuf.add(ir * lda);
                        let cp = p.c.add((ic + ir) * p.ldc + jc + jr);
                        let tile = Tile { c: cp, mr: MR.min(mc - ir), nr, col: jc + jr, load_c, last };
                        micro_tile::<MR, NR>(p, tile, tmp, false, |c, ldc, load, _| {
                            tile_32x32(kp, ap, lda, bp, c, ldc, load)
                        });
                    }
                }
            }
        }
    }
}

/// Peak FLOP/s of one core on `tdpbf16ps`: four independent 16x16 accumulators fed by tile
/// registers only (no memory), `iters` x 4 instructions of 16 x 16 x 32 multiply-adds. NaN
/// without AMX.
pub fn peak_one_thread(iters: usize) -> f64 {
    if !available() || iters == 0 {
        return f64::NAN;
    }
    let t = std::time::Instant::now();
    // SAFETY: AMX is available and granted; the tiles are configured before use and released.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
        asm!(
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            "tilerelease",
            n = inout(reg) iters => _,
            options(nostack, nomem),
        );
    }
    (iters * 4 * 16 * 16 * 32 * 2) as f64 / t.elapsed().as_secs_f64()
}
