//! Register-tiled microkernels: C[MR, NR] (+)= sum_p A[:, p] * B[p, :].
//!
//! All kernels share one signature. `a` is a packed A micro-panel (for each p, MR values);
//! `b` holds, for each p, NR contiguous values at `b + p * b_rs` (a packed B micro-panel with
//! `b_rs == NR`, or B itself when its rows are contiguous). C is row-major with leading dim
//! `ldc`; with `load_c` the product is added to C, else C is overwritten. Full tiles only: the
//! driver routes edge tiles through a scratch tile, computed there by the ISA's edge kernel
//! ([`EdgeFn`], AVX2: just the edge's rows and vectors) or, without one, by the whole-tile
//! kernel on zero padding.

/// The microkernel signature shared by every ISA.
pub type KernelFn = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
    fused: Fused,
);

/// The first steps of the output pass, which a whole-tile kernel applies to its values before
/// it stores them (after adding C's values with `load_c`): a bias (one value per column, null
/// for none), then a scale (multiplied), then a residual (added; both laid out as C, rows `ldc`
/// apart, null for none). The same steps in the same order as the pass over the stored tile
/// ([`super::driver::finish_tile`]), so the same bits, without storing the tile, reading it
/// back and storing it again. On Zen 4 those two passes (bias; residual) were 2.4% of a batch-8
/// forward's samples, waiting on the kernel's stores; fused, the kernels' own share grew by 1.4
/// points.
#[derive(Clone, Copy)]
pub struct Fused {
    pub bias: *const f32,
    pub scale: *const f32,
    pub residual: *const f32,
}

impl Fused {
    pub const NONE: Fused = Fused { bias: std::ptr::null(), scale: std::ptr::null(), residual: std::ptr::null() };

    /// These steps for a tile `by` values further into C (further down the same columns): the
    /// bias is per column and stays, scale and residual move with C.
    ///
    /// # Safety
    /// The moved pointers must stay inside their buffers.
    #[inline(always)]
    pub unsafe fn down(self, by: usize) -> Fused {
        let mut moved = self;
        if !moved.scale.is_null() {
            moved.scale = moved.scale.add(by);
        }
        if !moved.residual.is_null() {
            moved.residual = moved.residual.add(by);
        }
        moved
    }
}

/// A column of whole tiles against one B panel: `tiles` MR x NR tiles, one below the other,
/// each computed as the ISA's whole-tile kernel ([`KernelFn`] on packed panels, or [`RowsFn`]
/// with `in_place`) computes it, so the same bits, in one call. Why: on AVX2 a 6 x 16 tile is
/// ~1500 cycles of multiply-adds at depth 256, and the driver's work around each one (its share
/// of the next panel's prefetch, the edge checks, an indirect call, the output pass's checks)
/// was ~3.5% of a batch-8 forward's samples on a Zen 3 EPYC.
#[derive(Clone, Copy)]
pub struct Column {
    /// Whole tiles, at least one.
    pub tiles: usize,
    pub kc: usize,
    /// The first tile's A: packed panels (MR x kc values a tile, one after the other) or, with
    /// `in_place`, its rows `a_rs` apart (the next tile's start MR rows further).
    pub a: *const f32,
    pub a_rs: usize,
    pub in_place: bool,
    /// The B panel: kc rows of NR values, `b_rs` apart.
    pub b: *const f32,
    pub b_rs: usize,
    /// The first tile's C, rows `ldc` apart; with `load_c` the products are added to C.
    pub c: *mut f32,
    pub ldc: usize,
    pub load_c: bool,
    /// The first tile's fused steps (see [`Fused::down`] for the others).
    pub fused: Fused,
    /// Inputs of the output pass laid out as C, from the first tile's place (null: none): each
    /// tile's rows are asked for into L1 before its multiply-adds, so that their loads overlap.
    pub inputs: [*const f32; 3],
    /// The next B panel (null: none) and its length in cache lines, asked for into L2 a share a
    /// tile (see `driver::next_panel`).
    pub next: *const f32,
    pub next_lines: usize,
}

/// A column kernel: runs a [`Column`].
pub type ColumnFn = unsafe fn(col: &Column);

/// Asks for cache lines `from..to` (of 64 bytes) at `p` into L2; reads nothing.
#[inline(always)]
pub(super) unsafe fn prefetch_lines_l2(p: *const f32, from: usize, to: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in from..to {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p.add(line * 16) as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, from, to);
}

/// Asks for `rows` rows of `cols` values at `p`, `ld` apart, into L1 (a line every 16 values
/// from each row's start); reads nothing.
#[inline(always)]
pub(super) unsafe fn prefetch_rows_l1(p: *const f32, ld: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..rows {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for j in (0..cols).step_by(16) {
            _mm_prefetch::<_MM_HINT_T0>(p.add(i * ld + j) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, ld, rows, cols);
}

/// An ISA's f32 kernels, as the blocked driver uses them: the whole-tile kernel, and where the
/// ISA has them, its edge, rows (A read in place) and column kernels.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub tile: KernelFn,
    pub edge: Option<EdgeFn>,
    pub rows: Option<RowsFn>,
    /// Runs whole tiles as `tile` (packed A) and `rows` (A in place) would: only an ISA with
    /// both has one.
    pub column: Option<ColumnFn>,
}

/// A whole-tile kernel that reads A in place, rows `a_rs` apart and contiguous along the depth
/// (a row-major activation), instead of from a packed panel: the same multiply-adds in the same
/// order as [`KernelFn`] on the packed panel, so the same bits, without the transposing pack.
/// Full row panels only (MR rows); `nr` (at most NR) columns are needed, and a kernel may
/// compute fewer than NR of them (the rest of its tile's values are then not written).
pub type RowsFn = unsafe fn(
    nr: usize,
    kc: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
    fused: Fused,
);

/// One monomorphised tile of an ISA's edge kernel (its rows and vectors fixed): A as a packed
/// panel (`a_rs` unused) or in rows `a_rs` apart, as the tile was compiled.
type TileFn = unsafe fn(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
    fused: Fused,
);

/// An edge-tile kernel: `mr` x `nr` (at most MR x NR) of the tile, into a scratch tile with room
/// for MR x NR values. Without one, edges run the whole-tile kernel on zero padding.
pub type EdgeFn = unsafe fn(
    mr: usize,
    nr: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    ldc: usize,
    load_c: bool,
);

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{Fused, Kernels, TileFn};
    use std::arch::x86_64::*;

    pub const MR: usize = 14;
    pub const NR: usize = 32;

    /// Every AVX-512 kernel (no column kernel: a 14 x 32 tile is 4.7 times AVX2's, so the
    /// driver's work around each is a smaller share; not measured on an AVX-512 CPU).
    pub const KERNELS: Kernels = Kernels { tile: kernel, edge: Some(edge), rows: Some(kernel_rows), column: None };

    /// 14x32 tile: 28 zmm accumulators, two B vectors and one broadcast fill the 32 registers.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; pointers must cover the tile as described in the module docs.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        prefetch_c(c, ldc, load_c);
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a.add(i));
                acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            }
            a = a.add(MR);
            b = b.add(b_rs);
        }
        for i in 0..MR {
            store_row([acc0[i], acc1[i]], c, i, ldc, load_c, fused);
        }
    }

    /// [`kernel`] with A read in place: row i of the tile at `a + i * a_rs`, its depth values
    /// contiguous (see [`super::RowsFn`]).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the MR rows of A must each hold kc readable values, and B
    /// and C cover the tile as in the module docs.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_rows(
        nr: usize,
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        prefetch_c(c, ldc, load_c);
        if nr <= 16 {
            // One vector of columns covers the edge: half the work of the whole tile.
            tile::<MR, 1, true>(kc, a, a_rs, b, b_rs, c, ldc, load_c, fused)
        } else {
            tile::<MR, 2, true>(kc, a, a_rs, b, b_rs, c, ldc, load_c, fused)
        }
    }

    /// Stores row `i` of a tile's sums (V vectors of 16 columns) into C (rows `ldc` apart): added
    /// to C's values with `load_c`, then the [`Fused`] steps, each vector as the kernel stored it
    /// before them (the f32 kernels and the bf16 kernel end here).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `c` and the fused operands cover the tile's row.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::cpu::gemm) unsafe fn store_row<const V: usize>(
        sums: [__m512; V],
        c: *mut f32,
        i: usize,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        for (v, &sum) in sums.iter().enumerate() {
            let at = i * ldc + 16 * v;
            let mut out = if load_c { _mm512_add_ps(sum, _mm512_loadu_ps(c.add(at))) } else { sum };
            if !fused.bias.is_null() {
                out = _mm512_add_ps(out, _mm512_loadu_ps(fused.bias.add(16 * v)));
            }
            if !fused.scale.is_null() {
                out = _mm512_mul_ps(out, _mm512_loadu_ps(fused.scale.add(at)));
            }
            if !fused.residual.is_null() {
                out = _mm512_add_ps(out, _mm512_loadu_ps(fused.residual.add(at)));
            }
            _mm512_storeu_ps(c.add(at), out);
        }
    }

    /// Asks for a whole tile's C lines before the multiply-adds, so that the 28 loads and
    /// stores at the end do not each wait for a line from memory. The first depth block
    /// (`load_c` false: C is only written) asks for them in the exclusive state: a large output
    /// is out of cache there (the stage-1 MLP's 25088 x 512 x 128 at batch 8 went from 165 to
    /// 172 GFLOP/s on Zen 4, 216-220 to 244-254 in the bf16 kernel, which calls this too). A
    /// later block (`load_c`) finds its rows where the previous block left them, often out of
    /// L2 (a weight gradient's 512 x 1024 C per thread is 2 MiB): it asks for them into L2, not
    /// L1, which the kernel's B panel fills. Zen 4, fresh C, interleaved: the products of
    /// depth 1568-2048 gained 3-6% (1568 x 512 x 2048 N,T 190-192 -> 200-203 GFLOP/s, 512 x 2048
    /// x 1568 T,N 187-190 -> 195-197), depth 512 and the forward at batch 8 (f32, bf16) within
    /// noise. Into L1 instead cost a few percent at depth 512.
    #[inline(always)]
    pub(in crate::cpu::gemm) unsafe fn prefetch_c(c: *mut f32, ldc: usize, load_c: bool) {
        for i in 0..MR {
            let row = c.add(i * ldc) as *const i8;
            if load_c {
                _mm_prefetch::<_MM_HINT_T1>(row);
                _mm_prefetch::<_MM_HINT_T1>(row.add(64));
            } else {
                _mm_prefetch::<_MM_HINT_ET0>(row);
                _mm_prefetch::<_MM_HINT_ET0>(row.add(64));
            }
        }
    }

    /// An edge tile of `mr` <= MR rows and `nr` <= NR columns of a packed A, computed as the
    /// smallest tile that covers it (mr rows, one or two vectors of 16 columns) into `c` (rows
    /// `ldc` apart, mr x 16V values written). Each value is the same chain of multiply-adds as in
    /// [`kernel`], so the bits are the same; the work saved is the padding (a 49 x 49 window
    /// product's last panel is 17 columns of 32, its last row panel 7 rows of 14).
    ///
    /// # Safety
    /// As for [`kernel`], with `c` covering mr rows of `nr.div_ceil(16) * 16` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[rustfmt::skip]
    pub unsafe fn edge(mr: usize, nr: usize, kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool) {
        debug_assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nr));
        let tile: TileFn = match (mr, nr > 16) {
            (1, false) => tile::<1, 1, false>, (2, false) => tile::<2, 1, false>,
            (3, false) => tile::<3, 1, false>, (4, false) => tile::<4, 1, false>,
            (5, false) => tile::<5, 1, false>, (6, false) => tile::<6, 1, false>,
            (7, false) => tile::<7, 1, false>, (8, false) => tile::<8, 1, false>,
            (9, false) => tile::<9, 1, false>, (10, false) => tile::<10, 1, false>,
            (11, false) => tile::<11, 1, false>, (12, false) => tile::<12, 1, false>,
            (13, false) => tile::<13, 1, false>, (_, false) => tile::<14, 1, false>,
            (1, true) => tile::<1, 2, false>, (2, true) => tile::<2, 2, false>,
            (3, true) => tile::<3, 2, false>, (4, true) => tile::<4, 2, false>,
            (5, true) => tile::<5, 2, false>, (6, true) => tile::<6, 2, false>,
            (7, true) => tile::<7, 2, false>, (8, true) => tile::<8, 2, false>,
            (9, true) => tile::<9, 2, false>, (10, true) => tile::<10, 2, false>,
            (11, true) => tile::<11, 2, false>, (12, true) => tile::<12, 2, false>,
            (13, true) => tile::<13, 2, false>, (_, true) => tile::<14, 2, false>,
        };
        tile(kc, a, MR, b, b_rs, c, ldc, load_c, Fused::NONE)
    }

    /// R rows x V vectors of 16 columns. A is a packed panel (`ROWS` = false: MR values per
    /// depth, `a_rs` unused) or rows `a_rs` apart (`ROWS` = true).
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize, const ROWS: bool>(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let (mut panel, mut b) = (a, b);
        for p in 0..kc {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(if ROWS { *a.add(i * a_rs + p) } else { *panel.add(i) });
                for (acc_v, &b_v) in acc_row.iter_mut().zip(&bv) {
                    *acc_v = _mm512_fmadd_ps(ai, b_v, *acc_v);
                }
            }
            panel = panel.add(MR);
            b = b.add(b_rs);
        }
        for (i, &acc_row) in acc.iter().enumerate() {
            store_row(acc_row, c, i, ldc, load_c, fused);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{prefetch_lines_l2, prefetch_rows_l1, Column, Fused, Kernels, TileFn};
    use std::arch::x86_64::*;

    pub const MR: usize = 6;
    pub const NR: usize = 16;

    /// Every AVX2 kernel.
    pub const KERNELS: Kernels =
        Kernels { tile: kernel, edge: Some(edge), rows: Some(kernel_rows), column: Some(column) };

    /// 6x16 tile: 12 ymm accumulators, two B vectors and one broadcast (15 of 16 registers).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; pointers must cover the tile as in the module docs.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        prefetch_c(c, ldc);
        tile::<MR, 2, false>(kc, a, MR, b, b_rs, c, ldc, load_c, fused)
    }

    /// C is usually out of cache: asks for a tile's lines before its multiply-adds, so that the
    /// loads and stores at the end do not wait for memory.
    #[inline(always)]
    unsafe fn prefetch_c(c: *mut f32, ldc: usize) {
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
        }
    }

    /// A [`Column`] of whole tiles: each tile as [`kernel`] (packed A) or [`kernel_rows`] (A in
    /// place) computes it, with the prefetches the driver asks for around each.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `col` must describe `col.tiles` whole tiles whose
    /// operands cover them as in the module docs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn column(col: &Column) {
        let Column { tiles, kc, a, a_rs, in_place, b, b_rs, c, ldc, load_c, fused, inputs, next, next_lines } = *col;
        let share = next_lines.div_ceil(tiles);
        for t in 0..tiles {
            if !next.is_null() {
                prefetch_lines_l2(next, t * share, ((t + 1) * share).min(next_lines));
            }
            let down = t * MR * ldc;
            let c = c.add(down);
            prefetch_c(c, ldc);
            for input in inputs {
                if !input.is_null() {
                    prefetch_rows_l1(input.add(down), ldc, MR, NR);
                }
            }
            let fused = fused.down(down);
            if in_place {
                tile::<MR, 2, true>(kc, a.add(t * MR * a_rs), a_rs, b, b_rs, c, ldc, load_c, fused)
            } else {
                tile::<MR, 2, false>(kc, a.add(t * MR * kc), MR, b, b_rs, c, ldc, load_c, fused)
            }
        }
    }

    /// An edge tile of `mr` <= MR rows and `nr` <= NR columns, computed as the smallest tile that
    /// covers it (R = mr rows, one or two vectors of 8 columns) into `c` (rows `ldc` apart, R x 8V
    /// values written). Each value is the same chain of multiply-adds as in [`kernel`], so the
    /// bits are the same; the work saved is the padding (a 49-wide product's last panel is one
    /// column of sixteen, its last row panel one row of six).
    ///
    /// # Safety
    /// As for [`kernel`], with `c` covering mr rows of `nr.div_ceil(8) * 8` values.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[rustfmt::skip]
    pub unsafe fn edge(mr: usize, nr: usize, kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool) {
        debug_assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nr));
        let tile: TileFn = match (mr, nr > 8) {
            (1, false) => tile::<1, 1, false>,
            (2, false) => tile::<2, 1, false>,
            (3, false) => tile::<3, 1, false>,
            (4, false) => tile::<4, 1, false>,
            (5, false) => tile::<5, 1, false>,
            (_, false) => tile::<6, 1, false>,
            (1, true) => tile::<1, 2, false>,
            (2, true) => tile::<2, 2, false>,
            (3, true) => tile::<3, 2, false>,
            (4, true) => tile::<4, 2, false>,
            (5, true) => tile::<5, 2, false>,
            (_, true) => tile::<6, 2, false>,
        };
        tile(kc, a, MR, b, b_rs, c, ldc, load_c, Fused::NONE)
    }

    /// [`kernel`] with A read in place: row i of the tile at `a + i * a_rs`, its depth values
    /// contiguous (see [`super::RowsFn`]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the MR rows of A must each hold kc readable values, and
    /// B and C cover the tile as in the module docs.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_rows(
        _nr: usize,
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        prefetch_c(c, ldc);
        tile::<MR, 2, true>(kc, a, a_rs, b, b_rs, c, ldc, load_c, fused)
    }

    /// Depth `p` of [`tile`]: V loads of B (its row at `b`), R broadcasts of A (packed: MR
    /// values a depth; `ROWS`: row i at `a + i * a_rs`) and R * V fused multiply-adds.
    #[inline(always)]
    unsafe fn depth<const R: usize, const V: usize, const ROWS: bool>(
        acc: &mut [[__m256; V]; R],
        p: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
    ) {
        let bv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(b.add(8 * v)));
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*if ROWS { a.add(i * a_rs + p) } else { a.add(p * MR + i) });
            for (acc_v, &b_v) in acc_row.iter_mut().zip(&bv) {
                *acc_v = _mm256_fmadd_ps(ai, b_v, *acc_v);
            }
        }
    }

    /// R rows x V vectors of 8 columns: per depth, V loads of B, R broadcasts of A and R * V
    /// fused multiply-adds. A is a packed panel (`ROWS` = false: it still steps MR values per
    /// depth, `a_rs` unused) or rows `a_rs` apart, read in place (`ROWS` = true).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize, const ROWS: bool>(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: Fused,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        // Four depths a loop step: the loop's own counting and branching is then a twentieth of
        // the instructions, not a sixth. The same multiply-adds in the same order, so the same
        // bits. Zen 3 (EPYC family 25 model 1), one thread, a 6 x 16 x 256 tile in L1: 73-75 ->
        // 79-84 GFLOP/s (two and eight depths a step: 74-75, 76-77).
        let whole = kc / 4 * 4;
        for p in (0..whole).step_by(4) {
            for p in p..p + 4 {
                depth::<R, V, ROWS>(&mut acc, p, a, a_rs, b.add(p * b_rs));
            }
        }
        for p in whole..kc {
            depth::<R, V, ROWS>(&mut acc, p, a, a_rs, b.add(p * b_rs));
        }
        for (i, acc_row) in acc.iter().enumerate() {
            for (v, &sum) in acc_row.iter().enumerate() {
                let at = c.add(i * ldc + 8 * v);
                let mut out = if load_c { _mm256_add_ps(sum, _mm256_loadu_ps(at)) } else { sum };
                if !fused.bias.is_null() {
                    out = _mm256_add_ps(out, _mm256_loadu_ps(fused.bias.add(8 * v)));
                }
                if !fused.scale.is_null() {
                    out = _mm256_mul_ps(out, _mm256_loadu_ps(fused.scale.add(i * ldc + 8 * v)));
                }
                if !fused.residual.is_null() {
                    out = _mm256_add_ps(out, _mm256_loadu_ps(fused.residual.add(i * ldc + 8 * v)));
                }
                _mm256_storeu_ps(at, out);
            }
        }
    }
}

/// Portable kernel in plain Rust; fixed-size arrays let the compiler keep the tile in
/// vector registers with whatever SIMD the target has.
pub mod generic {
    pub const MR: usize = 4;
    pub const NR: usize = 8;

    /// The one portable kernel.
    pub const KERNELS: super::Kernels = super::Kernels { tile: kernel, edge: None, rows: None, column: None };

    /// # Safety
    /// Pointers must cover the tile as described in the module docs.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
        fused: super::Fused,
    ) {
        let mut acc = [[0.0f32; NR]; MR];
        for p in 0..kc {
            let ap: [f32; MR] = *(a.add(p * MR) as *const [f32; MR]);
            let bp: [f32; NR] = std::ptr::read_unaligned(b.add(p * b_rs) as *const [f32; NR]);
            for i in 0..MR {
                for j in 0..NR {
                    // Plain multiply-add: `mul_add` would call a slow libm fma without hardware FMA.
                    acc[i][j] += ap[i] * bp[j];
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
            for (j, (cj, &v)) in row.iter_mut().zip(acc_row).enumerate() {
                let mut out = if load_c { *cj + v } else { v };
                if !fused.bias.is_null() {
                    out += *fused.bias.add(j);
                }
                if !fused.scale.is_null() {
                    out *= *fused.scale.add(i * ldc + j);
                }
                if !fused.residual.is_null() {
                    out += *fused.residual.add(i * ldc + j);
                }
                *cj = out;
            }
        }
    }
}
