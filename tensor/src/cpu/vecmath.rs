//! Scalar math kernels (erf, GELU, a vectorisable exp) and the strided iteration plan shared by
//! the elementwise, reduction and normalisation ops.

use crate::Layout;
use rayon::prelude::*;
use std::ops::Range;

/// Element counts above this run on the rayon pool.
pub const PAR_MIN: usize = 1 << 16;
/// Work unit for parallel elementwise loops (elements).
pub const PAR_CHUNK: usize = 1 << 14;

// ---- erf / GELU ---------------------------------------------------------------------------

const ERF_TAYLOR_TERMS: usize = 33;

/// Maclaurin coefficients of erf(z)/z as a polynomial in z^2: 2/sqrt(pi) (-1)^n / (n! (2n+1)).
const ERF_TAYLOR: [f64; ERF_TAYLOR_TERMS] = {
    let mut c = [0.0; ERF_TAYLOR_TERMS];
    let mut fact = 1.0f64;
    let mut n = 0;
    while n < ERF_TAYLOR_TERMS {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = sign * std::f64::consts::FRAC_2_SQRT_PI / (fact * (2 * n + 1) as f64);
        n += 1;
    }
    c
};

/// erf by its Maclaurin series; accurate to ~1e-15 for |z| <= 2 (the cancellation is mild there).
#[inline]
fn erf_series(z: f64) -> f64 {
    let z2 = z * z;
    let mut s = 0.0;
    for &c in ERF_TAYLOR.iter().rev() {
        s = s * z2 + c;
    }
    s * z
}

/// erfc for z >= 2 by Laplace's continued fraction, evaluated bottom-up with a fixed depth
/// (30 levels give ~5e-12 relative at z = 2 and better beyond).
#[inline]
fn erfc_cf(z: f64) -> f64 {
    let mut t = z;
    for k in (1..=30).rev() {
        t = z + (k as f64 * 0.5) / t;
    }
    (-z * z).exp() / (std::f64::consts::PI.sqrt() * t)
}

/// The error function in f64, relative error ~1e-13 (far below one f32 ulp).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    if a < 2.0 {
        erf_series(x)
    } else if a.is_nan() {
        x
    } else {
        (1.0 - erfc_cf(a)).copysign(x)
    }
}

/// The complementary error function, accurate in relative terms also in the far tail.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x >= 2.0 {
        erfc_cf(x)
    } else if x > -2.0 {
        1.0 - erf_series(x)
    } else {
        2.0 - erfc_cf(-x)
    }
}

/// Exact GELU x * (1 + erf(x / sqrt 2)) / 2, computed in f64 so the f32 result is correctly
/// rounded but for rare ties; the negative side uses erfc to keep tiny outputs accurate.
#[inline]
pub fn gelu_f64(x: f64) -> f64 {
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    if x == f64::NEG_INFINITY {
        -0.0
    } else if x >= 0.0 {
        0.5 * x * (1.0 + erf(z))
    } else {
        0.5 * x * erfc(-z)
    }
}

#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    gelu_f64(x as f64) as f32
}

/// GELU over a slice, eight elements at a time: the series is evaluated branch-free on all lanes
/// (so it vectorises and the Horner latency overlaps), and the rare |x| > 2 sqrt 2 lanes are
/// redone with the continued fraction. Same results as `gelu_f32`.
pub fn gelu_slice(xs: &[f32], out: &mut [f32]) {
    for (xc, oc) in xs.chunks(8).zip(out.chunks_mut(8)) {
        let mut z = [0.0f64; 8];
        for (z, &x) in z.iter_mut().zip(xc) {
            *z = (x as f64 * std::f64::consts::FRAC_1_SQRT_2).clamp(-2.0, 2.0);
        }
        let mut s = [0.0f64; 8];
        for &c in ERF_TAYLOR.iter().rev() {
            for k in 0..8 {
                s[k] = s[k] * (z[k] * z[k]) + c;
            }
        }
        for (k, (o, &x)) in oc.iter_mut().zip(xc).enumerate() {
            let x = x as f64;
            *o = if (x * std::f64::consts::FRAC_1_SQRT_2).abs() < 2.0 {
                (0.5 * x * (1.0 + s[k] * z[k])) as f32
            } else {
                gelu_f64(x) as f32
            };
        }
    }
}

// ---- exp ----------------------------------------------------------------------------------

/// exp in f32 without a libm call, so loops over it vectorise. Cody-Waite reduction
/// x = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation error < 6e-9
/// relative); observed error is within 2 ulp. exp(-inf) = 0, NaN stays NaN, overflow gives inf.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in a short-mantissa head (exact products n * HI) and the remainder.
    const LN2_HI: f32 = 0.693_359_4; // 355 / 512
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits (no SSE4.1 `round`
    // needed, so this vectorises on baseline x86-64 too).
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(-104.0, 88.8);
    let t = xc * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^n as two factors so that subnormal results and n = 128 (overflow to inf) come out right.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    let y = p * s1 * s2;
    if x < -104.0 {
        0.0
    } else {
        y
    }
}

// ---- strided iteration --------------------------------------------------------------------

/// How to walk K operands that share one logical shape: size-1 dims dropped, adjacent dims merged
/// wherever every operand allows it, the innermost remaining dim being the "row".
#[derive(Debug, Clone)]
pub struct Plan<const K: usize> {
    /// Outer dims (all but the row), outermost first.
    pub outer_shape: Vec<usize>,
    pub outer_strides: Vec<[usize; K]>,
    /// Row length and each operand's stride along the row.
    pub len: usize,
    pub inner: [usize; K],
    /// Storage offset of each operand's first element.
    pub base: [usize; K],
    /// Total element count.
    pub count: usize,
}

impl<const K: usize> Plan<K> {
    /// All `layouts` must have the logical shape `shape`.
    pub fn new(shape: &[usize], layouts: [&Layout; K]) -> Self {
        debug_assert!(layouts.iter().all(|l| l.shape == shape));
        let count: usize = shape.iter().product();
        let base = layouts.map(|l| l.offset);
        // Dims innermost first, skipping size-1 dims, merging into the previous (inner) one when
        // contiguous for every operand.
        let mut dims: Vec<(usize, [usize; K])> = Vec::with_capacity(shape.len());
        for d in (0..shape.len()).rev() {
            let n = shape[d];
            if n == 1 {
                continue;
            }
            let st: [usize; K] = std::array::from_fn(|k| layouts[k].strides[d]);
            if let Some((ln, lst)) = dims.last_mut() {
                if (0..K).all(|k| st[k] == lst[k] * *ln) {
                    *ln *= n;
                    continue;
                }
            }
            dims.push((n, st));
        }
        if count == 0 {
            return Plan { outer_shape: vec![], outer_strides: vec![], len: 0, inner: [0; K], base, count };
        }
        let (len, inner) = if dims.is_empty() { (1, [0; K]) } else { dims.remove(0) };
        dims.reverse();
        Plan {
            outer_shape: dims.iter().map(|d| d.0).collect(),
            outer_strides: dims.iter().map(|d| d.1).collect(),
            len,
            inner,
            base,
            count,
        }
    }

    pub fn rows(&self) -> usize {
        self.count.checked_div(self.len).unwrap_or(0)
    }

    /// Offsets of the first element of row `r`.
    pub fn row_offsets(&self, r: usize) -> [usize; K] {
        let mut offs = self.base;
        let mut rem = r;
        for d in (0..self.outer_shape.len()).rev() {
            let i = rem % self.outer_shape[d];
            rem /= self.outer_shape[d];
            for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                *o += i * s;
            }
        }
        offs
    }

    /// Calls `f(first_logical_index, offsets, count)` for maximal runs of elements in `elems`
    /// (logical row-major indices) that lie within one row; element j of a run sits at
    /// `offsets[k] + j * inner[k]`.
    pub fn for_segments(&self, elems: Range<usize>, mut f: impl FnMut(usize, [usize; K], usize)) {
        if elems.is_empty() {
            return;
        }
        let mut row = elems.start / self.len;
        let mut col = elems.start % self.len;
        let mut offs = self.row_offsets(row);
        let mut idx = vec![0usize; self.outer_shape.len()];
        let mut rem = row;
        for d in (0..idx.len()).rev() {
            idx[d] = rem % self.outer_shape[d];
            rem /= self.outer_shape[d];
        }
        let mut pos = elems.start;
        while pos < elems.end {
            let cnt = (self.len - col).min(elems.end - pos);
            let start: [usize; K] = std::array::from_fn(|k| offs[k] + col * self.inner[k]);
            f(pos, start, cnt);
            pos += cnt;
            col = 0;
            row += 1;
            if pos >= elems.end {
                break;
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                    *o += s;
                }
                if idx[d] < self.outer_shape[d] {
                    break;
                }
                for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                    *o -= s * self.outer_shape[d];
                }
                idx[d] = 0;
            }
        }
        let _ = row;
    }

    /// Fills the contiguous `out` (logical order, `out.len() == count`) run by run, in parallel for
    /// large tensors: `f(out_run, offsets)` where the run has the length of `out_run`.
    pub fn fill<T: Send>(&self, out: &mut [T], f: impl Fn(&mut [T], [usize; K]) + Sync) {
        debug_assert_eq!(out.len(), self.count);
        if self.count < PAR_MIN {
            self.for_segments(0..self.count, |pos, offs, cnt| f(&mut out[pos..pos + cnt], offs));
        } else {
            out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(ci, chunk)| {
                let s = ci * PAR_CHUNK;
                self.for_segments(s..s + chunk.len(), |pos, offs, cnt| f(&mut chunk[pos - s..pos - s + cnt], offs));
            });
        }
    }
}

/// `out[i] = f(src[i])` over slices of equal length, in parallel chunks when large.
pub fn map_slice<S: Copy + Sync, T: Send>(src: &[S], out: &mut [T], f: impl Fn(S) -> T + Sync) {
    debug_assert_eq!(src.len(), out.len());
    if src.len() < PAR_MIN {
        for (o, &s) in out.iter_mut().zip(src) {
            *o = f(s);
        }
    } else {
        out.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = f(s);
            }
        });
    }
}

/// Shared helpers for the op tests: random data, non-contiguous views, tolerance checks.
#[cfg(test)]
pub mod testing {
    use crate::{DType, SplitMix64, Tensor};
    use proptest::prelude::*;

    /// Shapes of rank 1..=max_rank with sizes 1..7.
    pub fn arb_shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..7, 1..=max_rank)
    }

    pub fn normal_data(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64(seed);
        (0..n).map(|_| rng.normal()).collect()
    }

    /// A tensor with logical contents `data` (row-major over `shape`), rounded to `dtype`, laid out
    /// according to `kind`: 0 contiguous, 1 a permuted view, 2 a narrowed view of a wider last dim,
    /// 3 a step-2 slice along dim 0 (each non-contiguous when the shape allows).
    pub fn view_of(data: &[f64], shape: &[usize], dtype: DType, kind: u8) -> Tensor {
        let t = Tensor::from_f64_vec(data, shape, dtype);
        let r = shape.len();
        match kind % 4 {
            1 if r >= 2 => {
                let rev: Vec<usize> = (0..r).rev().collect();
                t.permute(&rev).unwrap().contiguous().permute(&rev).unwrap()
            }
            2 if r >= 1 => embed(data, shape, dtype, r - 1, 2, 1),
            3 if r >= 1 => embed(data, shape, dtype, 0, 0, 2),
            _ => t,
        }
    }

    /// Places the logical data inside a larger tensor (along `dim`: starting at `start`, every
    /// `step`-th, with filler elsewhere) and returns the view that selects it.
    fn embed(data: &[f64], shape: &[usize], dtype: DType, dim: usize, start: usize, step: usize) -> Tensor {
        let mut big_shape = shape.to_vec();
        big_shape[dim] = start + (shape[dim] - 1) * step + 2;
        let big_n: usize = big_shape.iter().product();
        let mut big = vec![1234.5; big_n];
        let outer: usize = shape[..dim].iter().product();
        let inner: usize = shape[dim + 1..].iter().product();
        for o in 0..outer {
            for i in 0..shape[dim] {
                for j in 0..inner {
                    let src = (o * shape[dim] + i) * inner + j;
                    let dst = (o * big_shape[dim] + start + i * step) * inner + j;
                    big[dst] = data[src];
                }
            }
        }
        let t = Tensor::from_f64_vec(&big, &big_shape, dtype);
        let end = start + (shape[dim] - 1) * step + 1;
        t.slice_step(dim as isize, start, end, step).unwrap()
    }

    /// Values rounded through `dtype` (what the op actually sees).
    pub fn rounded(data: &[f64], dtype: DType) -> Vec<f64> {
        Tensor::from_f64_vec(data, &[data.len()], dtype).to_f64_vec().unwrap()
    }

    /// Relative tolerance suited to a dtype's mantissa.
    pub fn tol(dtype: DType) -> f64 {
        match dtype {
            DType::F32 => 1e-5,
            DType::F16 => 2e-3,
            DType::BF16 => 1.6e-2,
            _ => 0.0,
        }
    }

    /// erfc(z) for z >= 0 by Simpson integration of 2/sqrt(pi) exp(-t^2) over [z, z + 6]:
    /// an independent reference, accurate in relative terms in the tail.
    pub fn erfc_ref(z: f64) -> f64 {
        let n = 20_000;
        let h = 6.0 / n as f64;
        let g = |t: f64| (-t * t).exp();
        let mut s = g(z) + g(z + 6.0);
        for i in 1..n {
            s += g(z + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI
    }

    /// Exact GELU from `erfc_ref`.
    pub fn gelu_ref(x: f64) -> f64 {
        let z = x / 2f64.sqrt();
        if x >= 0.0 {
            0.5 * x * (2.0 - erfc_ref(z))
        } else {
            0.5 * x * erfc_ref(-z)
        }
    }

    #[track_caller]
    pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs();
            assert!(ok, "{what}: element {i}: got {g}, want {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// erf by composite Simpson integration of 2/sqrt(pi) exp(-t^2): an independent reference.
    fn erf_ref(x: f64) -> f64 {
        let n = 20_000;
        let h = x / n as f64;
        let g = |t: f64| (-t * t).exp();
        let mut s = g(0.0) + g(x);
        for i in 1..n {
            s += g(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI
    }

    #[test]
    fn erf_matches_quadrature() {
        for i in -60..=60 {
            let x = i as f64 * 0.1 + 0.013;
            let (got, want) = (erf(x), erf_ref(x));
            assert!((got - want).abs() <= 1e-13 * want.abs().max(1e-3), "erf({x}) = {got}, want {want}");
        }
        // erfc tail against the asymptotic series 1/(x sqrt(pi)) exp(-x^2) (1 - 1/(2x^2) + 3/(4x^4) - ...).
        for &x in &[6.0f64, 8.0, 10.0] {
            let y = 1.0 / (2.0 * x * x);
            let series = 1.0 - y + 3.0 * y * y - 15.0 * y * y * y + 105.0 * y.powi(4);
            let want = (-x * x).exp() / (x * std::f64::consts::PI.sqrt()) * series;
            assert!((erfc(x) - want).abs() <= 1e-6 * want, "erfc({x})");
            assert!((erfc(-x) - (2.0 - want)).abs() < 1e-15);
        }
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::INFINITY), 1.0);
    }

    #[test]
    fn gelu_known_values() {
        // 0.5 x (1 + erf(x / sqrt 2)) from an independently integrated erfc.
        for &x in &[-6.0f64, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.0, 4.0] {
            let want = testing::gelu_ref(x);
            let got = gelu_f64(x);
            assert!((got - want).abs() <= 1e-10 * want.abs().max(1e-9), "gelu({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn gelu_slice_agrees_with_scalar() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.013).collect();
        let mut out = vec![0.0; xs.len()];
        gelu_slice(&xs, &mut out);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = gelu_f32(x);
            assert!((y - want).abs() <= f32::EPSILON * want.abs(), "gelu_slice({x}) = {y}, scalar {want}");
        }
    }

    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.7 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            if want > 1.2e-38 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                assert!((got - want).abs() <= 2e-45, "exp({x})");
            }
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn plan_visits_offsets_in_order(shape in testing::arb_shape(4), kind in 0u8..4, s in 0usize..10, e in 0usize..10) {
            let n: usize = shape.iter().product();
            let t = testing::view_of(&vec![0.0; n], &shape, crate::DType::F32, kind);
            let u = testing::view_of(&vec![0.0; n], &shape, crate::DType::F32, kind + 1);
            let plan = Plan::new(&shape, [t.layout(), u.layout()]);
            let want_t: Vec<usize> = t.layout().offsets().collect();
            let want_u: Vec<usize> = u.layout().offsets().collect();
            let (a, b) = ((s * n) / 10, (e * n) / 10);
            let (a, b) = (a.min(b), a.max(b));
            let mut got = vec![];
            plan.for_segments(a..b, |pos, offs, cnt| {
                for j in 0..cnt {
                    got.push((pos + j, offs[0] + j * plan.inner[0], offs[1] + j * plan.inner[1]));
                }
            });
            let want: Vec<_> = (a..b).map(|i| (i, want_t[i], want_u[i])).collect();
            prop_assert_eq!(got, want);
        }
    }
}
