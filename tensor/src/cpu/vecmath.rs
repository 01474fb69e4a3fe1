//! Scalar math kernels (an f32 erf and erfc, a vectorisable exp) and the strided iteration plan
//! shared by the elementwise, reduction and normalisation ops.

use crate::Layout;
use rayon::prelude::*;
use std::ops::Range;

/// Element counts above this run on the rayon pool.
pub const PAR_MIN: usize = 1 << 16;
/// Work unit for parallel elementwise loops (elements).
pub const PAR_CHUNK: usize = 1 << 14;

// ---- erf ----------------------------------------------------------------------------------

/// erf(z)/z as a polynomial in z^2 on |z| < ERF_SMALL (relative fit error 1.4e-9). The first
/// coefficient is the fit's, one ulp from 2/sqrt(pi) in f32.
#[allow(clippy::approx_constant)]
const ERF_SMALL_POLY: [f32; 6] =
    [1.128_379_1, -0.376_126_2, 0.112_833_77, -0.026_834_626, 0.005_114_345_3, -0.000_674_950_95];
/// erfcx(a) = exp(a^2) erfc(a) for a >= ERF_SMALL as t Q(t), t = 1 / (1 + a/2), Q of degree 9
/// (relative fit error 3e-9; Q(0) = 1/(2 sqrt pi) gives the 1/(a sqrt pi) tail).
const ERFCX_POLY: [f32; 10] = [
    0.282_094_78,
    0.282_094_78,
    0.246_839_12,
    0.176_114_04,
    0.086_341_456,
    -0.022_804_344,
    0.019_202_657,
    -0.238_603_3,
    0.243_843_17,
    -0.075_279_77,
];
/// Below this |z| erf comes from its odd polynomial, above from 1 - erfc (which then loses at
/// most a factor 2.5 to cancellation).
pub const ERF_SMALL: f32 = 0.75;

/// erf(z) for |z| < ERF_SMALL.
#[inline(always)]
pub fn erf_small(z: f32) -> f32 {
    let s = z * z;
    let c = &ERF_SMALL_POLY;
    let p = ((((c[5] * s + c[4]) * s + c[3]) * s + c[2]) * s + c[1]) * s + c[0];
    p * z
}

/// exp(a^2) erfc(a) for a >= ERF_SMALL (any a >= 0 gives a finite value; inf gives 0).
#[inline(always)]
pub fn erfcx_large(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * a);
    let c = &ERFCX_POLY;
    let mut p = c[9];
    p = p * t + c[8];
    p = p * t + c[7];
    p = p * t + c[6];
    p = p * t + c[5];
    p = p * t + c[4];
    p = p * t + c[3];
    p = p * t + c[2];
    p = p * t + c[1];
    p = p * t + c[0];
    p * t
}

/// exp(-s u^2) for u >= 0 and s a power of two, with u^2 split exactly (Veltkamp) into a head
/// whose product is exact and a small tail, so the large argument carries no rounding error:
/// relative error ~1e-7 also where exp(-u^2) is tiny (a rounded u^2 would lose ~u^2 * 6e-8).
/// NaN gives NaN; u >= 16 is treated as 16 (exp(-256 s) is 0 or far below every use).
#[inline(always)]
pub fn exp_neg_sq(u: f32, s: f32) -> f32 {
    let u = if u > 16.0 { 16.0 } else { u };
    let c = u * 4097.0;
    let uh = c - (c - u);
    let ul = u - uh;
    let hi = -(uh * uh) * s;
    let lo = -((uh + uh) * ul + ul * ul) * s;
    exp_hi_lo(hi, lo)
}

/// exp(hi + lo) for hi + lo <= 0, |lo| small against |hi|, without rounding hi + lo first: the
/// Cody-Waite reduction subtracts n ln2 from hi (exactly, by Sterbenz) before adding lo.
#[inline(always)]
fn exp_hi_lo(hi: f32, lo: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0;
    let x = hi + lo;
    let hc = if hi < -104.0 { -104.0 } else { hi };
    let t = (hc + lo) * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = ((hc - n * LN2_HI) + lo) - n * LN2_LO;
    let y = ldexp(exp_poly(r), (t.to_bits() as i32).wrapping_sub(0x4B40_0000));
    if x < -104.0 {
        0.0
    } else {
        y
    }
}

/// The error function in f32: max abs error 1.2e-7 (2 ulp near 1) over all f32, relative error
/// near 0 within 2 ulp; erf(+-inf) = +-1, NaN stays NaN. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let small = erf_small(x);
    let big = 1.0 - exp_neg_sq(a, 1.0) * erfcx_large(a);
    let big = if x < 0.0 { -big } else { big };
    if a < ERF_SMALL {
        small
    } else {
        big
    }
}

/// The complementary error function in f32, relative error ~4e-7 also in the far tail.
#[inline(always)]
pub fn erfc_f32(x: f32) -> f32 {
    let a = x.abs();
    let ec = exp_neg_sq(a, 1.0) * erfcx_large(a);
    let small = 1.0 - erf_small(x);
    let big = if x < 0.0 { 2.0 - ec } else { ec };
    if a < ERF_SMALL {
        small
    } else {
        big
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
    let y = ldexp(exp_poly(r), (t.to_bits() as i32).wrapping_sub(0x4B40_0000));
    if x < -104.0 {
        0.0
    } else {
        y
    }
}

/// e^r for |r| <= ln2 / 2 by its degree-7 Taylor polynomial (truncation error < 6e-9 relative).
#[inline(always)]
fn exp_poly(r: f32) -> f32 {
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p * r + 1.0
}

/// p 2^n for -150 <= n <= 128, with 2^n as two factors so that subnormal results and n = 128
/// (overflow to inf) come out right.
#[inline(always)]
fn ldexp(p: f32, n: i32) -> f32 {
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    p * s1 * s2
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

/// Shared helpers for the op tests: random data, non-contiguous views, and (re-exported) the
/// crate's f64 references and tolerance checks.
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

    pub use crate::testing::*;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// erf_f32 and erfc_f32 against the f64 reference on every 1e-3 in [-10, 10], a stride
    /// through all finite f32 (tiny, subnormal and huge included) and the special values.
    #[test]
    fn erf_f32_max_error() {
        let mut xs: Vec<f32> = (-10_000..=10_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend((0..0x7f80_0000u32).step_by(4099).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]));
        xs.extend([0.75, -0.75, f32::MIN_POSITIVE, f32::MAX, f32::MIN, 1e-30, -1e-40, 3.9, 10.5]);
        let (mut worst_abs, mut worst_rel_small, mut worst_erfc_rel) = (0.0f64, 0.0f64, 0.0f64);
        for &x in &xs {
            let (got, want) = (erf_f32(x) as f64, testing::erf_f64(x as f64));
            worst_abs = worst_abs.max((got - want).abs());
            if want != 0.0 && (x.abs() as f64) < 0.75 && x.abs() > 1e-37 {
                worst_rel_small = worst_rel_small.max(((got - want) / want).abs());
            }
            let (got, want) = (erfc_f32(x) as f64, testing::erfc_f64(x as f64));
            if want > 1e-36 {
                worst_erfc_rel = worst_erfc_rel.max(((got - want) / want).abs());
            }
        }
        // The brief's bound is 2e-7; observed 1.2e-7 (2 ulp just below 1).
        assert!(worst_abs <= 1.5e-7, "erf_f32 max abs error {worst_abs:e}");
        assert!(worst_rel_small <= 2.5e-7, "erf_f32 max rel error below 0.75: {worst_rel_small:e}");
        assert!(worst_erfc_rel <= 5e-7, "erfc_f32 max rel error: {worst_erfc_rel:e}");
        assert_eq!((erf_f32(f32::INFINITY), erf_f32(f32::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!((erfc_f32(f32::INFINITY), erfc_f32(f32::NEG_INFINITY)), (0.0, 2.0));
        assert!(erf_f32(f32::NAN).is_nan() && erfc_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0), 0.0);
        assert!(erf_f32(-0.0).is_sign_negative());
        println!("erf_f32: max abs error {worst_abs:e}, max rel error below 0.75 {worst_rel_small:e}");
        println!("erfc_f32: max rel error {worst_erfc_rel:e}");
    }

    #[test]
    fn exp_neg_sq_is_accurate_in_the_tail() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let u = i as f32 * 7e-5;
            for s in [1.0f32, 0.5] {
                let want = (-(s as f64) * (u as f64) * (u as f64)).exp();
                if want > 1.2e-38 {
                    worst = worst.max(((exp_neg_sq(u, s) as f64 - want) / want).abs());
                }
            }
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp_neg_sq(f32::INFINITY, 1.0), 0.0);
        assert!(exp_neg_sq(f32::NAN, 1.0).is_nan());
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
