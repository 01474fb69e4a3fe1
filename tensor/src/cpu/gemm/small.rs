//! Small products straight from the operands: no packing, no scratch tiles (AVX-512, AVX2).
//!
//! The blocked loop is built for products whose packing is paid back many times. A product as
//! small as a window attention's 49 x 32 x 49 (a few thousand multiply-adds per row panel) pays
//! it and more: the rows past the last whole 14-row panel and the columns past the last whole
//! 32 were packed, and every edge tile was computed into a scratch tile and copied out by scalar
//! stores. Here each tile reads A's rows and B's rows where they are, and the columns past the
//! last whole vector are loaded and stored under a mask: on AVX-512, 49 x 49 is seven tiles of
//! 7 rows by 4 vectors, the fourth holding one column.
//!
//! Each value is the chain of fused multiply-adds from zero over the whole depth, then added to
//! C when accumulating: what the blocked kernels compute for a depth of one block (k <= KC), so
//! the two paths give the same bits and either may run.

use super::driver::{b_rows_share_l1_sets, finish_tile, read_a_in_place, Problem, KC};

/// Multiply-adds up to which a product takes this path (a window attention product has 76832).
/// Zen 4, one thread, 64 products in cache, GFLOP/s blocked -> here: 200 x 32 x 40 66 -> 75,
/// 1000 x 16 x 16 51 -> 82, 300 x 13 x 60 46 -> 69, 64 x 64 x 64 87 -> 86, 500 x 8 x 64 64 -> 62
/// (the last two within the noise); 4096 of 49 x 32 x 49 on two threads 54-63 -> 95-112. The
/// AVX2 tiles on the same machine: 66 -> 83, 75 -> 79, 55 -> 75, 88 -> 92, 55 -> 67; 4096 of 49 x
/// 32 x 49 66-68 -> 86-93.
pub(super) const SMALL_WORK: usize = 1 << 18;

/// Whether `p` takes this path: depth of one block, contiguous rows in A and B (read in place),
/// few enough multiply-adds, and rows whose strides the blocked loop would also read in place
/// (not a multiple of 1 KiB apart in B, 4 KiB in A: they would share L1 sets).
pub(super) fn applies(p: &Problem) -> bool {
    p.k > 0
        && p.k <= KC
        && p.a_cs == 1
        && p.b_cs == 1
        && p.m * p.n * p.k <= SMALL_WORK
        && !b_rows_share_l1_sets(p.b_rs)
        && read_a_in_place(p.a_rs)
}

/// One tile: `(k, a, a_rs, b, b_rs, c, ldc, tail, accumulate)`, where `tail` (1 to the vector
/// width) is how many lanes of the tile's last vector hold columns of C.
type TileFn = unsafe fn(usize, *const f32, usize, *const f32, usize, *mut f32, usize, usize, bool);

/// The whole product, one tile after the other: blocks of `W * VMAX` columns (W floats a
/// vector), and in each, tiles of `ROWS` rows by as many vectors as the block needs, picked by
/// `tile_fn(rows, vectors)`; the fused output pass runs on each tile as soon as it is stored.
///
/// # Safety
/// `p` must describe valid, in-bounds operands and satisfy [`applies`]; the CPU must run the
/// tiles.
unsafe fn each_tile<const W: usize, const VMAX: usize, const ROWS: usize>(
    p: &Problem,
    tile_fn: fn(usize, usize) -> TileFn,
) {
    for j0 in (0..p.n).step_by(W * VMAX) {
        let cols = (W * VMAX).min(p.n - j0);
        let vectors = cols.div_ceil(W);
        let tail = cols - W * (vectors - 1);
        for i0 in (0..p.m).step_by(ROWS) {
            let rows = ROWS.min(p.m - i0);
            let (a, b, c) = (p.a.add(i0 * p.a_rs), p.b.add(j0), p.c.add(i0 * p.ldc + j0));
            tile_fn(rows, vectors)(p.k, a, p.a_rs, b, p.b_rs, c, p.ldc, tail, p.accumulate);
            finish_tile(p, c, rows, cols, j0);
        }
    }
}

pub(super) mod avx512 {
    use super::TileFn;
    use crate::cpu::gemm::driver::Problem;
    use std::arch::x86_64::*;

    /// Rows of one tile: 7 rows by up to 4 vectors is 28 accumulators, 4 B vectors and a
    /// broadcast in the 32 zmm registers. Fewer vectors keep 7 rows (the loads, 2 a cycle, are
    /// not the limit).
    const ROWS: usize = 7;

    /// The product on AVX-512 tiles (49 x 49: seven tiles of 7 rows by 4 vectors).
    ///
    /// # Safety
    /// As for `each_tile`, on a CPU with AVX-512F.
    pub unsafe fn run(p: &Problem) {
        super::each_tile::<16, 4, ROWS>(p, tile_fn)
    }

    /// The tile of `rows` (1..=7) rows by `vectors` (1..=4) vectors.
    #[rustfmt::skip]
    fn tile_fn(rows: usize, vectors: usize) -> TileFn {
        fn by_rows<const V: usize>(rows: usize) -> TileFn {
            match rows {
                1 => tile::<1, V>, 2 => tile::<2, V>, 3 => tile::<3, V>, 4 => tile::<4, V>,
                5 => tile::<5, V>, 6 => tile::<6, V>, _ => tile::<7, V>,
            }
        }
        match vectors {
            1 => by_rows::<1>(rows), 2 => by_rows::<2>(rows), 3 => by_rows::<3>(rows), _ => by_rows::<4>(rows),
        }
    }

    /// R rows by V vectors of 16 columns of C: per depth, V loads of B's row (the last under a
    /// mask of `tail` lanes), R broadcasts from A's rows and R * V fused multiply-adds; then C
    /// is written (added to with `accumulate`), its last vector under the same mask.
    ///
    /// # Safety
    /// AVX-512F; A's R rows hold k values each (`a_rs` apart), B's k rows hold the tile's
    /// columns (`b_rs` apart), C covers R rows (`ldc` apart) of the tile's columns.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        tail: usize,
        accumulate: bool,
    ) {
        let last = (u32::MAX >> (32 - tail)) as __mmask16;
        let mask = |v: usize| if v + 1 == V { last } else { 0xffff };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..k {
            let row = b.add(p * b_rs);
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(mask(v), row.add(16 * v)));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i * a_rs + p));
                for (acc_v, &b_v) in acc_row.iter_mut().zip(&bv) {
                    *acc_v = _mm512_fmadd_ps(ai, b_v, *acc_v);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            for (v, &sum) in acc_row.iter().enumerate() {
                let at = c.add(i * ldc + 16 * v);
                let out = if accumulate { _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask(v), at)) } else { sum };
                _mm512_mask_storeu_ps(at, mask(v), out);
            }
        }
    }
}

pub(super) mod avx2 {
    use super::TileFn;
    use crate::cpu::gemm::driver::Problem;
    use std::arch::x86_64::*;

    /// Rows of one tile: 6 rows by 2 vectors is 12 accumulators, 2 B vectors and a broadcast in
    /// the 16 ymm registers (the blocked kernel's 6 x 16).
    const ROWS: usize = 6;

    /// The product on AVX2 + FMA tiles (49 x 49: nine row tiles by three of 16 columns and one
    /// of the last column).
    ///
    /// # Safety
    /// As for `each_tile`, on a CPU with AVX2 and FMA.
    pub unsafe fn run(p: &Problem) {
        super::each_tile::<8, 2, ROWS>(p, tile_fn)
    }

    /// The tile of `rows` (1..=6) rows by `vectors` (1..=2) vectors.
    #[rustfmt::skip]
    fn tile_fn(rows: usize, vectors: usize) -> TileFn {
        fn by_rows<const V: usize>(rows: usize) -> TileFn {
            match rows {
                1 => tile::<1, V>, 2 => tile::<2, V>, 3 => tile::<3, V>,
                4 => tile::<4, V>, 5 => tile::<5, V>, _ => tile::<6, V>,
            }
        }
        if vectors == 1 { by_rows::<1>(rows) } else { by_rows::<2>(rows) }
    }

    /// R rows by V vectors of 8 columns of C, as the AVX-512 tile: the last vector's B values
    /// are loaded under a mask of `tail` lanes; its C values go through a stack copy (a masked
    /// store, `vmaskmovps`, is slow on AMD's cores).
    ///
    /// # Safety
    /// AVX2 and FMA; A, B and C as for the AVX-512 tile.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        ldc: usize,
        tail: usize,
        accumulate: bool,
    ) {
        // Lane j of the mask is set (its sign bit) for j < tail.
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lanes);
        let load =
            |at: *const f32, v: usize| if v + 1 == V { _mm256_maskload_ps(at, last) } else { _mm256_loadu_ps(at) };
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for p in 0..k {
            let row = b.add(p * b_rs);
            let bv: [__m256; V] = std::array::from_fn(|v| load(row.add(8 * v), v));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i * a_rs + p));
                for (acc_v, &b_v) in acc_row.iter_mut().zip(&bv) {
                    *acc_v = _mm256_fmadd_ps(ai, b_v, *acc_v);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            for (v, &sum) in acc_row.iter().enumerate() {
                let at = c.add(i * ldc + 8 * v);
                let out = if accumulate { _mm256_add_ps(sum, load(at, v)) } else { sum };
                if v + 1 < V || tail == 8 {
                    _mm256_storeu_ps(at, out);
                } else {
                    let mut spill = [0.0f32; 8];
                    _mm256_storeu_ps(spill.as_mut_ptr(), out);
                    std::ptr::copy_nonoverlapping(spill.as_ptr(), at, tail);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{avx2, avx512};
    use super::super::{driver, Activation, Isa};
    use super::*;
    use crate::SplitMix64;

    /// The product m x k by k x n with A's rows `a_rs` apart (and its columns `a_cs`), B's rows
    /// `b_rs` apart and contiguous, C's rows `ldc` apart: no accumulation, no output pass.
    #[allow(clippy::too_many_arguments)]
    #[rustfmt::skip]
    fn problem(
        m: usize, n: usize, k: usize,
        a: *const f32, a_rs: usize, a_cs: usize,
        b: *const f32, b_rs: usize,
        c: *mut f32, ldc: usize,
    ) -> Problem {
        Problem {
            m, n, k, a, a_rs, a_cs, b, b_rs, b_cs: 1, c, ldc,
            accumulate: false,
            bias: None,
            act: Activation::None,
            act_grad: None,
            scale: None,
            residual: None,
            packed_b: None,
            packed_f32: None,
            col0: 0,
        }
    }

    /// A row-major product with padded rows (`pad` extra values per row of A, B and C), a bias,
    /// a residual, and C's starting values.
    struct Operands {
        m: usize,
        n: usize,
        k: usize,
        pad: usize,
        a: Vec<f32>,
        b: Vec<f32>,
        c: Vec<f32>,
        bias: Vec<f32>,
        residual: Vec<f32>,
    }

    impl Operands {
        fn new(m: usize, n: usize, k: usize, pad: usize, seed: u64) -> Operands {
            let mut rng = SplitMix64(seed);
            let mut rand = |len: usize| (0..len).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
            let (a, b, c) = (rand(m * (k + pad)), rand(k * (n + pad)), rand(m * (n + pad)));
            Operands { m, n, k, pad, a, b, c, bias: rand(n), residual: rand(m * (n + pad)) }
        }

        /// C after the product on `isa`'s small path (`small`) or its blocked loop.
        fn run(&self, isa: Isa, small: bool, accumulate: bool, epilogue: bool) -> Vec<f32> {
            let (m, n, k, pad) = (self.m, self.n, self.k, self.pad);
            let mut c = self.c.clone();
            let (a, b) = (self.a.as_ptr(), self.b.as_ptr());
            let p = Problem {
                accumulate,
                bias: epilogue.then_some(self.bias.as_ptr()),
                act: if epilogue { Activation::Gelu } else { Activation::None },
                residual: epilogue.then_some(self.residual.as_ptr()),
                ..problem(m, n, k, a, k + pad, 1, b, n + pad, c.as_mut_ptr(), n + pad)
            };
            assert!(applies(&p), "m={m} n={n} k={k} pad={pad} should take the small path");
            // SAFETY: the buffers hold the padded operands; the caller checked that the CPU
            // runs `isa`.
            unsafe {
                match (isa, small) {
                    (Isa::Avx512, true) => super::avx512::run(&p),
                    (Isa::Avx512, false) => {
                        use avx512::{KERNELS, MR, NR};
                        driver::run::<MR, NR>(KERNELS, &p, 1, true)
                    }
                    (_, true) => super::avx2::run(&p),
                    (_, false) => {
                        use avx2::{KERNELS, MR, NR};
                        driver::run::<MR, NR>(KERNELS, &p, 1, false)
                    }
                }
            }
            c
        }
    }

    /// Each ISA's small path gives its blocked loop's bits on every tile shape (every row count,
    /// one to all vectors, whole and partial last vectors, several column blocks), at depths 1
    /// to KC, with and without adding to C and the fused output pass; the padding between rows
    /// is kept.
    #[test]
    fn small_path_equals_the_blocked_loop_bit_for_bit() {
        let isas: Vec<Isa> = [Isa::Avx512, Isa::Avx2Fma].into_iter().filter(|i| i.available()).collect();
        if isas.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512F nor AVX2 + FMA");
            return;
        }
        let shapes = [
            (49, 49, 32),
            (7, 64, 5),
            (1, 1, 1),
            (8, 16, 256),
            (13, 17, 3),
            (6, 33, 40),
            (20, 130, 24),
            (3, 200, 100),
            (50, 48, 9),
            (30, 1, 70),
            (5, 23, 11),
            (9, 47, 64),
        ];
        for (seed, &(m, n, k)) in shapes.iter().enumerate() {
            for (pad, &isa) in [0, 3].into_iter().flat_map(|pad| isas.iter().map(move |isa| (pad, isa))) {
                let ops = Operands::new(m, n, k, pad, seed as u64);
                for (accumulate, epilogue) in [(false, false), (true, false), (false, true), (true, true)] {
                    let run = |small| ops.run(isa, small, accumulate, epilogue);
                    let (got, want) = (run(true), run(false));
                    for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            g.to_bits() == w.to_bits(),
                            "{isa:?} m={m} n={n} k={k} pad={pad} accumulate={accumulate} epilogue={epilogue}: \
                             C[{idx}] = {g}, blocked {w}"
                        );
                    }
                }
            }
        }
    }

    /// Which products take the path: small ones with contiguous rows, not a deep one, a large
    /// one, a transposed operand, or rows 1 KiB (B) or 4 KiB (A) apart.
    #[test]
    fn only_small_row_major_products_take_the_path() {
        let ops = Operands::new(2, 2, 2, 0, 1);
        let (a, b) = (ops.a.as_ptr(), ops.b.as_ptr());
        let problem = |m: usize, n: usize, k: usize, a_rs: usize, a_cs: usize, b_rs: usize| {
            problem(m, n, k, a, a_rs, a_cs, b, b_rs, std::ptr::null_mut(), n)
        };
        assert!(applies(&problem(49, 49, 32, 32, 1, 49)));
        assert!(applies(&problem(4, 256, 256, 256, 1, 257)));
        assert!(!applies(&problem(4, 49, KC + 1, KC + 1, 1, 49)), "two depth blocks");
        assert!(!applies(&problem(64, 64, 65, 65, 1, 64)), "more multiply-adds than SMALL_WORK");
        assert!(!applies(&problem(49, 49, 32, 1, 49, 49)), "A transposed");
        assert!(!applies(&problem(49, 49, 32, 32, 1, 256)), "B's rows 1 KiB apart");
        assert!(!applies(&problem(4, 49, 32, 1024, 1, 49)), "A's rows 4 KiB apart");
        assert!(!applies(&problem(4, 49, 0, 32, 1, 49)), "no depth");
    }
}
