//! The bf16 product: C (f32) (+)= A · B with both operands rounded to bf16 (round to nearest
//! even) and f32 accumulation, on AVX512-BF16's `vdpbf16ps`. One instruction multiplies 16
//! pairs of bf16 values per register and adds each pair's two products to an f32 lane, so the
//! depth runs in steps of two: twice the multiply-adds of an f32 FMA per instruction.
//!
//! The operands stay f32 in memory; packing rounds them. A packed panel holds, for each depth
//! pair p and each of its R rows (or columns), one u32: the bf16 of depth 2p in the low half and
//! of 2p + 1 in the high half (zero past the depth). The loop nest is the f32 driver's, with the
//! depth block counted in values (pairs = half of it) and B always packed.
//!
//! Rounding happens exactly where the f32 path would multiply, so the test reference is the f64
//! product of the rounded operands. The conversion instructions treat subnormal inputs as zero;
//! the scalar path of unusual strides uses `half`, which keeps them: the two differ only there.

use super::driver::{micro_tile, Problem, Tile};
use std::cell::RefCell;

pub const MR: usize = 14;
pub const NR: usize = 32;
/// Depth values per block: KC/2 pairs x NR u32 of B is the same 32 KiB as the f32 panel.
const KC: usize = 512;
const MC: usize = 336;
const NC: usize = 4096;
/// Whether the kernel reads A's rows as rows of pairs ([`simd::convert_rows`]) rather than a
/// transposed panel, for a block of `nc` columns and depth `kc`. The transposing pack is
/// amortised over the columns, so narrow products pay most for it: isolated, bf16 on Zen 4,
/// 25088x128x512 +20%, 25088x128x256 +24%, 25088x256x128 +7%, 6272x256x256 +2% with rows;
/// deeper or wider ones lost (6272x256x1024 -7%, 1568x512x2048 -5% in the model: a tile's 14
/// rows of up to 256 pairs beside a 32 KiB B panel cost more in L1 than the pack saved).
fn a_as_rows(nc: usize, kc: usize) -> bool {
    nc <= NR * 4 || (nc <= NR * 8 && kc <= 256)
}

/// One bf16 pair from two f32 values (scalar path).
#[inline]
pub fn pair(lo: f32, hi: f32) -> u32 {
    half::bf16::from_f32(lo).to_bits() as u32 | (half::bf16::from_f32(hi).to_bits() as u32) << 16
}

/// Packs `len` x `kc` into panels of R pairs: `dst[q * R * kp + p * R + i]` = pair (2p, 2p + 1)
/// of panel row `q * R + i`, with kp = kc.div_ceil(2). The source element (i, p) is at
/// `src[i * s_panel + p * s_k]`.
///
/// # Safety
/// The CPU must support AVX512-BF16; every addressed source element must be readable and `dst`
/// must hold `len.div_ceil(R) * R * kp` values.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn pack_pairs<const R: usize>(
    len: usize,
    kc: usize,
    src: *const f32,
    s_panel: usize,
    s_k: usize,
    dst: *mut u32,
) {
    let kp = kc.div_ceil(2);
    for (q, i0) in (0..len).step_by(R).enumerate() {
        let rows = R.min(len - i0);
        let (s, d) = (src.add(i0 * s_panel), dst.add(q * R * kp));
        if s_k == 1 {
            simd::pack_depth_contiguous::<R>(rows, kc, s, s_panel, d);
        } else if s_panel == 1 {
            simd::pack_panel_contiguous::<R>(rows, kc, s, s_k, d);
        } else {
            pack_scalar::<R>(rows, kc, s, s_panel, s_k, d);
        }
    }
}

/// One panel with plain loops (any strides): the reference the fast packs are tested against.
///
/// # Safety
/// As for [`pack_pairs`], for one panel of `rows` <= R.
pub unsafe fn pack_scalar<const R: usize>(
    rows: usize,
    kc: usize,
    src: *const f32,
    s_panel: usize,
    s_k: usize,
    dst: *mut u32,
) {
    for p in 0..kc.div_ceil(2) {
        for i in 0..R {
            let at = |k: usize| if i < rows && k < kc { *src.add(i * s_panel + k * s_k) } else { 0.0 };
            *dst.add(p * R + i) = pair(at(2 * p), at(2 * p + 1));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod simd {
    use super::super::pack::avx512::transpose16;
    use crate::cpu::gemm::kernels::Fused;
    use std::arch::x86_64::*;

    /// Mask of the first `n` (<= 16) lanes.
    #[inline]
    fn lanes(n: usize) -> u16 {
        ((1u32 << n) - 1) as u16
    }

    /// Values k0..k0 + 32 of a row of `kc` (zero past it) rounded to 16 pairs: pair j holds values
    /// (k0 + 2j, k0 + 2j + 1), the lower half of `vcvtne2ps2bf16`'s result coming from its
    /// second operand.
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16; the row's values k0..min(k0 + 32, kc) must be readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pairs16(row: *const f32, k0: usize, kc: usize) -> __m512i {
        let (m_lo, m_hi) = (lanes(16.min(kc - k0)), lanes(kc.saturating_sub(k0 + 16).min(16)));
        let lo = _mm512_maskz_loadu_ps(m_lo, row.add(k0));
        let hi = _mm512_maskz_loadu_ps(m_hi, row.add(k0 + 16));
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }

    /// Rows contiguous along the depth (activations, `x Wᵀ`'s weight): 16 rows x 16 pairs are
    /// loaded as 32 floats a row, rounded to 16 pairs, and transposed as 32-bit lanes.
    ///
    /// # Safety
    /// As for [`super::pack_pairs`], one panel.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pack_depth_contiguous<const R: usize>(
        rows: usize,
        kc: usize,
        src: *const f32,
        s_row: usize,
        dst: *mut u32,
    ) {
        let kp = kc.div_ceil(2);
        for g in (0..R).step_by(16) {
            let group = 16.min(R - g);
            let valid = rows.saturating_sub(g).min(group);
            for p0 in (0..kp).step_by(16) {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, ri) in r.iter_mut().enumerate().take(valid) {
                    *ri = _mm512_castsi512_ps(pairs16(src.add((g + i) * s_row), 2 * p0, kc));
                }
                transpose16(&mut r);
                for (q, rq) in r.iter().enumerate().take(16.min(kp - p0)) {
                    _mm512_mask_storeu_ps(dst.add((p0 + q) * R + g) as *mut f32, lanes(group), *rq);
                }
            }
        }
    }

    /// The panel dimension contiguous (a row-major right operand): depth rows 2p and 2p + 1 are
    /// rounded 16 values at a time and interleaved into pairs.
    ///
    /// # Safety
    /// As for [`super::pack_pairs`], one panel.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pack_panel_contiguous<const R: usize>(
        rows: usize,
        kc: usize,
        src: *const f32,
        s_k: usize,
        dst: *mut u32,
    ) {
        let half16 = |x: __m512| _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)));
        for p in 0..kc.div_ceil(2) {
            for g in (0..R).step_by(16) {
                let group = 16.min(R - g);
                let valid = lanes(rows.saturating_sub(g).min(group));
                let lo = _mm512_maskz_loadu_ps(valid, src.add(2 * p * s_k + g));
                let hi = if 2 * p + 1 < kc {
                    _mm512_maskz_loadu_ps(valid, src.add((2 * p + 1) * s_k + g))
                } else {
                    _mm512_setzero_ps()
                };
                let v = _mm512_or_si512(half16(lo), _mm512_slli_epi32::<16>(half16(hi)));
                _mm512_mask_storeu_epi32(dst.add(p * R + g) as *mut i32, lanes(group), v);
            }
        }
    }

    /// C[MR, NR] (+)= A · B over `kp` depth pairs: 28 zmm accumulators, two B vectors and one
    /// broadcast pair, as the f32 kernel. `b` is a packed panel (NR pairs per depth pair); `a` a
    /// packed panel (MR pairs per depth pair: pair p of row i at `a[p * MR + i]`, `a_rs` unused),
    /// or with ROWS, MR rows of pairs ([`convert_rows`]: pair p of row i at `a[i * a_rs + p]`,
    /// no transposing pack, the broadcasts read MR rows instead of one panel).
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16; the pointers must cover the tile.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel<const ROWS: bool>(
        kp: usize,
        a: *const u32,
        a_rs: usize,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        use super::{MR, NR};
        let bh = |x: __m512i| std::mem::transmute::<__m512i, __m512bh>(x);
        crate::cpu::gemm::kernels::avx512::prefetch_c(c, ldc, load_c);
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        let (mut panel, mut b) = (a, b);
        for p in 0..kp {
            let b0 = bh(_mm512_loadu_si512(b as *const __m512i));
            let b1 = bh(_mm512_loadu_si512(b.add(16) as *const __m512i));
            for i in 0..MR {
                let pair = if ROWS { *a.add(i * a_rs + p) } else { *panel.add(i) };
                let ai = bh(_mm512_set1_epi32(pair as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
            }
            panel = panel.add(MR);
            b = b.add(NR);
        }
        for i in 0..MR {
            crate::cpu::gemm::kernels::avx512::store_row([acc0[i], acc1[i]], c, i, ldc, load_c, fused);
        }
    }

    /// `rows` rows of `kc` values (rows `s_row` apart, values contiguous) rounded to rows of
    /// kc.div_ceil(2) pairs, `d_rs` u32 apart: the same pairs as [`super::pack_pairs`] writes,
    /// without its transpose (32 values a step: two loads, one conversion, one store).
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16; every source row must hold kc readable values and
    /// `dst` room for `rows` rows of `d_rs` >= kc.div_ceil(2) values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert_rows(rows: usize, kc: usize, src: *const f32, s_row: usize, dst: *mut u32, d_rs: usize) {
        let kp = kc.div_ceil(2);
        for i in 0..rows {
            let (row, out) = (src.add(i * s_row), dst.add(i * d_rs));
            for p0 in (0..kp).step_by(16) {
                _mm512_mask_storeu_epi32(out.add(p0) as *mut i32, lanes(16.min(kp - p0)), pairs16(row, 2 * p0, kc));
            }
        }
    }
}

/// A whole right operand (k x n) packed once, in the panels [`blocked`] would pack for each
/// product: for each depth block of KC, n.div_ceil(NR) panels of kp x NR pairs. A linear
/// layer's weight packed at its first bf16 inference call saves the conversion and transpose of
/// every later call (the GEMM's "weights packed once" path).
pub struct PackedB {
    k: usize,
    n: usize,
    /// Start of each depth block in `data`, in u32s.
    blocks: Vec<usize>,
    data: Vec<Line>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB {{ k: {}, n: {} }}", self.k, self.n)
    }
}

impl PackedB {
    /// Packs B (element (p, j) at `b[p * b_rs + j * b_cs]`); None without AVX512-BF16.
    ///
    /// Panics if `b` is too short for the sizes and strides (a caller bug).
    pub fn new(k: usize, n: usize, b: &[f32], b_rs: usize, b_cs: usize) -> Option<PackedB> {
        if !super::Isa::Avx512Bf16.available() || k == 0 || n == 0 {
            return None;
        }
        assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs, "PackedB: B too short");
        let panels = n.div_ceil(NR);
        let mut blocks = Vec::new();
        let mut total = 0;
        for pc in (0..k).step_by(KC) {
            blocks.push(total);
            total += panels * NR * KC.min(k - pc).div_ceil(2);
        }
        let mut data = Vec::new();
        let ptr = line_ptr(&mut data, total);
        for (i, pc) in (0..k).step_by(KC).enumerate() {
            // SAFETY: the CPU has AVX512-BF16 (checked above); the assert keeps B in bounds and
            // each block has room for its panels.
            unsafe { pack_pairs::<NR>(n, KC.min(k - pc), b.as_ptr().add(pc * b_rs), b_cs, b_rs, ptr.add(blocks[i])) };
        }
        Some(PackedB { k, n, blocks, data })
    }

    /// (k, n) of the packed operand.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The panel holding column `col` (a multiple of NR) of depth block `pc / KC`.
    pub(super) fn panel(&self, pc: usize, col: usize) -> *const u32 {
        let kp = KC.min(self.k - pc).div_ceil(2);
        // SAFETY: in bounds for pc < k and col < n (the panels of a block are contiguous).
        unsafe { (self.data.as_ptr() as *const u32).add(self.blocks[pc / KC] + col / NR * NR * kp) }
    }
}

/// 64-byte aligned storage for packed pairs.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Line([u32; 16]);

/// This thread's pack buffers (of this kernel and of the AMX loop).
#[derive(Default)]
pub(super) struct PackBufs {
    pub(super) a: Vec<Line>,
    pub(super) b: Vec<Line>,
    /// A's rows as pairs ([`simd::convert_rows`]).
    pub(super) a_rows: Vec<Line>,
}

/// `v` grown to hold at least `len` u32s, as a pointer to its start.
pub(super) fn line_ptr(v: &mut Vec<Line>, len: usize) -> *mut u32 {
    if v.len() * 16 < len {
        v.resize(len.div_ceil(16), Line([0; 16]));
    }
    v.as_mut_ptr() as *mut u32
}

thread_local! {
    static BUFS: RefCell<PackBufs> = RefCell::new(PackBufs::default());
}

/// The single-threaded blocked bf16 product (the thread split is the f32 driver's `run`).
///
/// # Safety
/// `p` must describe valid, in-bounds operands with k > 0; the CPU must support AVX512-BF16.
pub unsafe fn serial(p: &Problem) {
    with_bufs(|bufs| blocked(p, bufs))
}

/// Runs `f` on this thread's pack buffers (fresh ones if a caller re-entered from inside a
/// product).
pub(super) fn with_bufs<R>(f: impl FnOnce(&mut PackBufs) -> R) -> R {
    BUFS.with(|bufs| match bufs.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut PackBufs::default()),
    })
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn blocked(p: &Problem, bufs: &mut PackBufs) {
    let mc_max = MC / MR * MR;
    let kp_max = KC.min(p.k).div_ceil(2);
    let nc_max = NC.min(p.n.div_ceil(NR) * NR);
    let abuf = line_ptr(&mut bufs.a, mc_max.min(p.m.div_ceil(MR) * MR) * kp_max);
    let bbuf = line_ptr(&mut bufs.b, nc_max * kp_max);
    // Rows of pairs a line longer than a multiple of 16 pairs: rows 1-4 KiB apart would put
    // a tile's MR rows into a few L1 sets (the f32 driver's `read_a_in_place` says why).
    let rows_rs = kp_max.next_multiple_of(16) + 16;
    let arows = line_ptr(&mut bufs.a_rows, mc_max.min(p.m.div_ceil(MR) * MR) * rows_rs);
    let mut tmp = [0.0f32; MR * NR];
    let tmp = tmp.as_mut_ptr();
    for jc in (0..p.n).step_by(NC) {
        let nc = NC.min(p.n - jc);
        for pc in (0..p.k).step_by(KC) {
            let kc = KC.min(p.k - pc);
            let kp = kc.div_ceil(2);
            let load_c = p.accumulate || pc > 0;
            let last = pc + kc == p.k;
            // SAFETY (packed): a product with a packed B covers columns col0.. of it (checked by
            // sgemm_with), and sub-products start on panel boundaries.
            let packed = p.packed_b.map(|pb| &*pb);
            if packed.is_none() {
                pack_pairs::<NR>(nc, kc, p.b.add(pc * p.b_rs + jc * p.b_cs), p.b_cs, p.b_rs, bbuf);
            }
            for ic in (0..p.m).step_by(mc_max) {
                let mc = mc_max.min(p.m - ic);
                let a_block = p.a.add(ic * p.a_rs + pc * p.a_cs);
                // Whole row panels of a depth-contiguous A as rows of pairs in narrow products
                // (`a_as_rows`); the rest packed.
                let full_m = if p.a_cs == 1 && a_as_rows(nc, kc) { mc / MR * MR } else { 0 };
                if full_m > 0 {
                    simd::convert_rows(full_m, kc, a_block, p.a_rs, arows, rows_rs);
                }
                if full_m < mc {
                    pack_pairs::<MR>(mc - full_m, kc, a_block.add(full_m * p.a_rs), p.a_rs, p.a_cs, abuf);
                }
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bp = match packed {
                        Some(pb) => pb.panel(pc, p.col0 + jc + jr),
                        None => bbuf.add(jr * kp),
                    };
                    for ir in (0..mc).step_by(MR) {
                        let cp = p.c.add((ic + ir) * p.ldc + jc + jr);
                        let tile = Tile { c: cp, mr: MR.min(mc - ir), nr, col: jc + jr, load_c, last };
                        micro_tile::<MR, NR>(p, tile, tmp, true, |c, ldc, load, fused| {
                            if ir < full_m {
                                simd::kernel::<true>(kp, arows.add(ir * rows_rs), rows_rs, bp, c, ldc, load, fused)
                            } else {
                                simd::kernel::<false>(kp, abuf.add((ir - full_m) * kp), 0, bp, c, ldc, load, fused)
                            }
                        });
                    }
                }
            }
        }
    }
}
