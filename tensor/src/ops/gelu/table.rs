//! The GELU and its derivative from piecewise polynomials, on CPUs with fused multiply-adds.
//!
//! For a = |x| < 6: Phi(x) = Q(a) for x < 0 and 1 - Q(a) for x >= 0, with Q(a) = Phi(-a), and
//! gelu'(x) = D(a) for x < 0 and 1 - D(a) for x >= 0, with D(a) = Q(a) - a phi(a). Q and D are
//! degree-7 polynomials on 24 intervals of width 1/4 (`coeffs.rs`, written by
//! `scripts/make-gelu-table.py`): the interval i = floor(4a) picks the coefficients, v =
//! (4a - i) - 1/2 (exact) is the polynomial's variable. For a >= 6, Q and D are 0 in f32's terms
//! (Q(6) = 1e-9, 6 phi(6) = 4e-8: Phi rounds to 1, gelu' to 1 or 0 within 4e-8). Where
//! x <= -6 (and for NaN) the values are tiny and must keep their relative accuracy, so those
//! elements take the pieces form (`super::pieces`: exp and erfcx), one element at a time.
//!
//! Why: the pieces form evaluates an erf polynomial, an exp with an exact argument and an erfcx
//! polynomial after a division, for every element (both branches, to stay branch-free): 0.92 ns
//! an element on a Zen 4 core. Here one table lookup per coefficient (one `vpermt2ps` on
//! AVX-512) and seven FMAs: 0.36 ns, within 2.3e-7 of Phi relative (the pieces form: 5e-7).
//!
//! The scalar functions here are the definition; the AVX-512 and AVX2 loops compute each element
//! with the same operations in the same order, so all three give the same bits (tested).

use super::coeffs::{D, Q};
use super::pieces;

/// Where the polynomials end: |x| >= TABLE_END gives Q = D = 0, and x <= -TABLE_END the pieces.
pub(super) const TABLE_END: f32 = 6.0;
/// Intervals per unit of |x| (a power of two, so that 4a and its split are exact).
const PER_UNIT: f32 = 4.0;
/// The last interval (24 of them up to TABLE_END).
const LAST: i32 = 23;
const DEGREE: usize = 7;

/// Whether x needs the pieces form (x <= -TABLE_END, or NaN).
#[inline(always)]
pub(super) fn needs_pieces(x: f32) -> bool {
    x.is_nan() || x <= -TABLE_END
}

/// A table's polynomial at a = |x| (0 for a >= TABLE_END).
#[inline(always)]
fn poly(c: &[[f32; 32]; DEGREE + 1], a: f32) -> f32 {
    if a.is_nan() || a >= TABLE_END {
        return 0.0;
    }
    let s = a * PER_UNIT;
    let i = (s as i32).min(LAST);
    let v = (s - i as f32) - 0.5;
    let i = i as usize;
    let mut p = c[DEGREE][i];
    for ck in c[..DEGREE].iter().rev() {
        p = p.mul_add(v, ck[i]);
    }
    p
}

/// gelu(x) = x Phi(x) for x > -TABLE_END.
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
    let q = poly(&Q, x.abs());
    x * if x < 0.0 { q } else { 1.0 - q }
}

/// gelu'(x) = Phi(x) + x phi(x) for x > -TABLE_END.
#[inline(always)]
pub(super) fn gelu_grad(x: f32) -> f32 {
    let d = poly(&D, x.abs());
    if x < 0.0 {
        d
    } else {
        1.0 - d
    }
}

/// The three loops (forward, backward, both) on AVX-512: 16 elements a step, the last step
/// masked, and the rare elements that need the pieces form redone one by one.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Each lane's interval (as the lookup's index) and polynomial variable, |x| < TABLE_END
    /// as a mask, and x < 0 as a mask.
    struct Reduced {
        idx: __m512i,
        v: __m512,
        inside: __mmask16,
        negative: __mmask16,
    }

    #[inline(always)]
    unsafe fn reduce(x: __m512) -> Reduced {
        let a = _mm512_abs_ps(x);
        let s = _mm512_mul_ps(a, _mm512_set1_ps(PER_UNIT));
        // Out-of-range lanes (a >= TABLE_END, NaN) get some index; `inside` zeroes their result.
        let idx = _mm512_min_epi32(_mm512_cvttps_epi32(s), _mm512_set1_epi32(LAST));
        let v = _mm512_sub_ps(_mm512_sub_ps(s, _mm512_cvtepi32_ps(idx)), _mm512_set1_ps(0.5));
        let inside = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(TABLE_END));
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
        Reduced { idx, v, inside, negative }
    }

    /// The table's polynomial per lane: coefficient k of every lane's interval by one two-source
    /// permute of the 32-entry row `c[k]`.
    #[inline(always)]
    unsafe fn poly(c: &[[f32; 32]; DEGREE + 1], r: &Reduced) -> __m512 {
        let coeff = |k: usize| {
            let row = c[k].as_ptr();
            _mm512_permutex2var_ps(_mm512_loadu_ps(row), r.idx, _mm512_loadu_ps(row.add(16)))
        };
        let mut p = coeff(DEGREE);
        for k in (0..DEGREE).rev() {
            p = _mm512_fmadd_ps(p, r.v, coeff(k));
        }
        _mm512_maskz_mov_ps(r.inside, p)
    }

    /// q for x < 0, 1 - q otherwise.
    #[inline(always)]
    unsafe fn by_sign(q: __m512, r: &Reduced) -> __m512 {
        _mm512_mask_mov_ps(_mm512_sub_ps(_mm512_set1_ps(1.0), q), r.negative, q)
    }

    /// The lanes of `valid` that need the pieces form.
    #[inline(always)]
    unsafe fn pieces_lanes(x: __m512, valid: __mmask16) -> __mmask16 {
        _mm512_mask_cmp_ps_mask::<_CMP_NGT_UQ>(valid, x, _mm512_set1_ps(-TABLE_END))
    }

    /// Lane l of `out` replaced by f(l) for each l in `lanes`.
    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn patch(out: __m512, lanes: __mmask16, f: impl Fn(usize) -> f32) -> __m512 {
        let mut v = [0.0f32; 16];
        _mm512_storeu_ps(v.as_mut_ptr(), out);
        for (l, o) in v.iter_mut().enumerate() {
            if lanes & (1 << l) != 0 {
                *o = f(l);
            }
        }
        _mm512_loadu_ps(v.as_ptr())
    }

    /// The first min(n, 16) lanes as a mask.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            u16::MAX
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        if m == u16::MAX {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, m: __mmask16, v: __m512) {
        if m == u16::MAX {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, m, v)
        }
    }

    /// `y[i] = gelu(x[i])` on `rows` rows of `cols` elements, `ld` apart in both (y may be x).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; each row of x readable and of y writable.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn forward(x: *const f32, y: *mut f32, ld: usize, rows: usize, cols: usize) {
        for row in 0..rows {
            let (x, y) = (x.add(row * ld), y.add(row * ld));
            for i in (0..cols).step_by(16) {
                let m = lanes(cols - i);
                let xv = load(x.add(i), m);
                let r = reduce(xv);
                let mut out = _mm512_mul_ps(xv, by_sign(poly(&Q, &r), &r));
                let rare = pieces_lanes(xv, m);
                if rare != 0 {
                    out = patch(out, rare, |l| pieces::gelu::<true>(*x.add(i + l)));
                }
                store(y.add(i), m, out);
            }
        }
    }

    /// `out[i] = g[i] gelu'(x[i])` on `rows` rows of `cols` elements, `ld` apart in all three
    /// (out may be x).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; each row of x and g readable and of out writable.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn backward(x: *const f32, g: *const f32, out: *mut f32, ld: usize, rows: usize, cols: usize) {
        for row in 0..rows {
            let (x, g, out) = (x.add(row * ld), g.add(row * ld), out.add(row * ld));
            for i in (0..cols).step_by(16) {
                let m = lanes(cols - i);
                let (xv, gv) = (load(x.add(i), m), load(g.add(i), m));
                let r = reduce(xv);
                let mut o = _mm512_mul_ps(gv, by_sign(poly(&D, &r), &r));
                let rare = pieces_lanes(xv, m);
                if rare != 0 {
                    o = patch(o, rare, |l| *g.add(i + l) * pieces::gelu_grad::<true>(*x.add(i + l)));
                }
                store(out.add(i), m, o);
            }
        }
    }

    /// `y[i] = gelu(x[i])`, `d[i] = gelu'(x[i])` for n elements.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; x readable and y, d writable for n elements.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn both(x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
        for i in (0..n).step_by(16) {
            let m = lanes(n - i);
            let xv = load(x.add(i), m);
            let r = reduce(xv);
            let mut yv = _mm512_mul_ps(xv, by_sign(poly(&Q, &r), &r));
            let mut dv = by_sign(poly(&D, &r), &r);
            let rare = pieces_lanes(xv, m);
            if rare != 0 {
                yv = patch(yv, rare, |l| pieces::gelu::<true>(*x.add(i + l)));
                dv = patch(dv, rare, |l| pieces::gelu_grad::<true>(*x.add(i + l)));
            }
            store(y.add(i), m, yv);
            store(d.add(i), m, dv);
        }
    }
}

/// The same three loops on AVX2 + FMA: 8 elements a step; the lookup reads each lane's row of
/// a table transposed by interval.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    struct Reduced {
        idx: __m256i,
        v: __m256,
        inside: __m256,
        negative: __m256,
    }

    #[inline(always)]
    unsafe fn reduce(x: __m256) -> Reduced {
        let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        let s = _mm256_mul_ps(a, _mm256_set1_ps(PER_UNIT));
        let idx = _mm256_min_epi32(_mm256_cvttps_epi32(s), _mm256_set1_epi32(LAST));
        let v = _mm256_sub_ps(_mm256_sub_ps(s, _mm256_cvtepi32_ps(idx)), _mm256_set1_ps(0.5));
        let inside = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(TABLE_END));
        let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
        Reduced { idx, v, inside, negative }
    }

    /// A table by interval: row i holds the DEGREE + 1 coefficients of interval i, one 32-byte
    /// row (half a cache line) each.
    #[repr(C, align(32))]
    struct ByInterval([[f32; DEGREE + 1]; 32]);
    // `poly` transposes two halves of four coefficients.
    const _: () = assert!(DEGREE + 1 == 8);

    /// `c` transposed: `[k][i]` becomes `[i][k]`.
    const fn by_interval(c: &[[f32; 32]; DEGREE + 1]) -> ByInterval {
        let mut t = [[0.0; DEGREE + 1]; 32];
        let mut i = 0;
        while i < 32 {
            let mut k = 0;
            while k <= DEGREE {
                t[i][k] = c[k][i];
                k += 1;
            }
            i += 1;
        }
        ByInterval(t)
    }

    static Q_ROWS: ByInterval = by_interval(&Q);
    static D_ROWS: ByInterval = by_interval(&D);

    /// The table's polynomial per lane. Each lane's interval row (its eight coefficients) is
    /// loaded as two 4-value halves, lane l's beside lane l + 4's in one register, and a 4 x 4
    /// transpose within each 128-bit half turns those rows into the coefficient vectors: 8 index
    /// extracts, 16 loads and 16 shuffles, where picking each coefficient from the `[k][i]` rows
    /// took 24 permutes and 16 blends. The same coefficients into the same FMAs: the same bits.
    /// Zen 3 (EPYC family 25 model 1), one thread, L1-resident input: forward 2.2-3.2 -> 1.6-1.7
    /// ns an element, forward and derivative together 4.2-4.9 -> 2.5-2.6 ns; in a batch-8
    /// forward, where it is the output pass of fc1's 6 x 16 tiles, 4.9% -> 4.1% of the samples.
    #[inline(always)]
    unsafe fn poly(c: &ByInterval, r: &Reduced) -> __m256 {
        // Lanes outside the table (NaN, huge) convert to i32::MIN; any row will do for them
        // (`inside` zeroes their result), so they read row 0.
        let mut at = [0i32; 8];
        _mm256_storeu_si256(at.as_mut_ptr().cast(), _mm256_max_epi32(r.idx, _mm256_setzero_si256()));
        let rows: [*const f32; 8] = std::array::from_fn(|l| c.0[at[l] as usize].as_ptr());
        let [c0, c1, c2, c3] = transpose_half(&rows, 0);
        let [c4, c5, c6, c7] = transpose_half(&rows, 4);
        let mut p = c7;
        for ck in [c6, c5, c4, c3, c2, c1, c0] {
            p = _mm256_fmadd_ps(p, r.v, ck);
        }
        _mm256_and_ps(p, r.inside)
    }

    /// Coefficients `from..from + 4` of the eight lanes' rows, as four vectors: each 128-bit half
    /// of a register holds four values of one row (lane l's low, lane l + 4's high), and a 4 x 4
    /// transpose within the halves turns four such registers into coefficient vectors.
    #[inline(always)]
    unsafe fn transpose_half(rows: &[*const f32; 8], from: usize) -> [__m256; 4] {
        let pair = |l: usize| -> __m256 {
            let low = _mm256_castps128_ps256(_mm_loadu_ps(rows[l].add(from)));
            _mm256_insertf128_ps::<1>(low, _mm_loadu_ps(rows[l + 4].add(from)))
        };
        let (p0, p1, p2, p3) = (pair(0), pair(1), pair(2), pair(3));
        let (t0, t1) = (_mm256_unpacklo_ps(p0, p1), _mm256_unpackhi_ps(p0, p1));
        let (t2, t3) = (_mm256_unpacklo_ps(p2, p3), _mm256_unpackhi_ps(p2, p3));
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xee>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xee>(t1, t3),
        ]
    }

    #[inline(always)]
    unsafe fn by_sign(q: __m256, r: &Reduced) -> __m256 {
        _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0), q), q, r.negative)
    }

    /// The lanes among the first n that need the pieces form, as bits.
    #[inline(always)]
    unsafe fn pieces_lanes(x: __m256, n: usize) -> u32 {
        let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NGT_UQ>(x, _mm256_set1_ps(-TABLE_END))) as u32;
        m & if n >= 8 { 0xff } else { (1 << n) - 1 }
    }

    #[cold]
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn patch(out: __m256, lanes: u32, f: impl Fn(usize) -> f32) -> __m256 {
        let mut v = [0.0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), out);
        for (l, o) in v.iter_mut().enumerate() {
            if lanes & (1 << l) != 0 {
                *o = f(l);
            }
        }
        _mm256_loadu_ps(v.as_ptr())
    }

    /// Lane mask for the first min(n, 8) lanes (maskload and maskstore read the sign bits).
    #[inline(always)]
    unsafe fn lanes(n: usize) -> __m256i {
        let k = n.min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> __m256 {
        if n >= 8 {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, lanes(n))
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, n: usize, v: __m256) {
        if n >= 8 {
            _mm256_storeu_ps(p, v)
        } else {
            _mm256_maskstore_ps(p, lanes(n), v)
        }
    }

    /// As [`super::avx512::forward`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; each row of x readable and of y writable.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(x: *const f32, y: *mut f32, ld: usize, rows: usize, cols: usize) {
        for row in 0..rows {
            let (x, y) = (x.add(row * ld), y.add(row * ld));
            for i in (0..cols).step_by(8) {
                let left = cols - i;
                let xv = load(x.add(i), left);
                let r = reduce(xv);
                let mut out = _mm256_mul_ps(xv, by_sign(poly(&Q_ROWS, &r), &r));
                let rare = pieces_lanes(xv, left);
                if rare != 0 {
                    out = patch(out, rare, |l| pieces::gelu::<true>(*x.add(i + l)));
                }
                store(y.add(i), left, out);
            }
        }
    }

    /// As [`super::avx512::backward`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; each row of x and g readable and of out writable.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn backward(x: *const f32, g: *const f32, out: *mut f32, ld: usize, rows: usize, cols: usize) {
        for row in 0..rows {
            let (x, g, out) = (x.add(row * ld), g.add(row * ld), out.add(row * ld));
            for i in (0..cols).step_by(8) {
                let left = cols - i;
                let (xv, gv) = (load(x.add(i), left), load(g.add(i), left));
                let r = reduce(xv);
                let mut o = _mm256_mul_ps(gv, by_sign(poly(&D_ROWS, &r), &r));
                let rare = pieces_lanes(xv, left);
                if rare != 0 {
                    o = patch(o, rare, |l| *g.add(i + l) * pieces::gelu_grad::<true>(*x.add(i + l)));
                }
                store(out.add(i), left, o);
            }
        }
    }

    /// As [`super::avx512::both`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; x readable and y, d writable for n elements.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn both(x: *const f32, y: *mut f32, d: *mut f32, n: usize) {
        for i in (0..n).step_by(8) {
            let left = n - i;
            let xv = load(x.add(i), left);
            let r = reduce(xv);
            let mut yv = _mm256_mul_ps(xv, by_sign(poly(&Q_ROWS, &r), &r));
            let mut dv = by_sign(poly(&D_ROWS, &r), &r);
            let rare = pieces_lanes(xv, left);
            if rare != 0 {
                yv = patch(yv, rare, |l| pieces::gelu::<true>(*x.add(i + l)));
                dv = patch(dv, rare, |l| pieces::gelu_grad::<true>(*x.add(i + l)));
            }
            store(y.add(i), left, yv);
            store(d.add(i), left, dv);
        }
    }
}
