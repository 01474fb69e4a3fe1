//! softmax and log_softmax along one dimension.
//!
//! The kernel works on contiguous f32 rows along the last dim: row max, `exp(x - max)` with the
//! vectorisable `exp_f32`, an f64 sum, then one scale (or, for log_softmax, one shift). Rows run in
//! parallel. Another dim runs as columns: the data is seen as [outer, n, inner] and each block of
//! `inner` columns is reduced over the n rows with the same steps, vectorised along `inner` (no
//! transposing copies; the class dim of the parsing loss is the case that matters).
//! f16/bf16 go through f32.
use crate::cpu::parallel::{new_vec, new_vecs, PAR_CHUNK, PAR_MIN};
use crate::cpu::simd::dispatch;
use crate::cpu::vecmath::exp_f32;
use crate::layout::resolve_dim;
use crate::profile;
use crate::{Result, Tensor};

/// Max of a row with independent lanes (vectorises); NaN is ignored here and propagates through
/// the sum instead.
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (chunks, rest) = x.as_chunks::<8>();
    for c in chunks {
        for k in 0..8 {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    rest.iter().chain(&lanes).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

#[inline(always)]
fn sum_f64(x: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let (chunks, rest) = x.as_chunks::<4>();
    for c in chunks {
        for k in 0..4 {
            lanes[k] += c[k] as f64;
        }
    }
    rest.iter().map(|&v| v as f64).sum::<f64>() + lanes.iter().sum::<f64>()
}

/// Softmax (or log-softmax) of one row into `out`.
#[inline(always)]
fn softmax_row(x: &[f32], out: &mut [f32], log: bool) {
    let m = row_max(x);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp_f32(v - m);
    }
    let s = sum_f64(out);
    if log {
        // (v - m) first: exact near the max, where log-probabilities are tiny.
        let ls = s.ln() as f32;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m) - ls;
        }
    } else {
        let inv = (1.0 / s) as f32;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Softmax of whole rows of length `len`, on the best vector extension this CPU has (baseline
/// x86-64 runs `exp_f32` 4 wide; `cpu::simd`).
pub(crate) fn rows(src: &[f32], out: &mut [f32], len: usize, log: bool) {
    #[inline(always)]
    fn body(src: &[f32], out: &mut [f32], len: usize, log: bool) {
        for (o, x) in out.chunks_mut(len).zip(src.chunks(len)) {
            softmax_row(x, o, log);
        }
    }
    dispatch!(body(src: &[f32], out: &mut [f32], len: usize, log: bool))
}

/// Row-wise softmax of contiguous rows of length `len`.
fn softmax_rows(src: &[f32], len: usize, log: bool) -> Vec<f32> {
    if len == 0 {
        return vec![0.0f32; src.len()];
    }
    let step = PAR_CHUNK.div_ceil(len) * len;
    new_vec(src.len(), step, |s, o| rows(&src[s..s + o.len()], o, len, log))
}

/// Columns per block of the column softmax: the block's maxima and sums stay in L1.
pub(crate) const COLUMN_BLOCK: usize = 256;

/// Softmax (or log-softmax) over the n rows of one block of columns: `x` and `out` hold n rows of
/// `w <= COLUMN_BLOCK` values, `stride` apart. The same steps as [`softmax_row`], per column.
#[inline(always)]
pub(crate) fn softmax_column_block(x: &[f32], out: &mut [f32], n: usize, w: usize, stride: usize, log: bool) {
    let mut max = [f32::NEG_INFINITY; COLUMN_BLOCK];
    let mut sum = [0.0f64; COLUMN_BLOCK];
    let (max, sum) = (&mut max[..w], &mut sum[..w]);
    for k in 0..n {
        for (m, &v) in max.iter_mut().zip(&x[k * stride..][..w]) {
            *m = m.max(v);
        }
    }
    for k in 0..n {
        let (xr, or) = (&x[k * stride..][..w], &mut out[k * stride..][..w]);
        for j in 0..w {
            let e = exp_f32(xr[j] - max[j]);
            or[j] = e;
            sum[j] += e as f64;
        }
    }
    if log {
        let mut ls = [0.0f32; COLUMN_BLOCK];
        for (l, s) in ls.iter_mut().zip(sum.iter()) {
            *l = s.ln() as f32;
        }
        for k in 0..n {
            let (xr, or) = (&x[k * stride..][..w], &mut out[k * stride..][..w]);
            for j in 0..w {
                or[j] = (xr[j] - max[j]) - ls[j];
            }
        }
    } else {
        let mut inv = [0.0f32; COLUMN_BLOCK];
        for (i, s) in inv.iter_mut().zip(sum.iter()) {
            *i = (1.0 / s) as f32;
        }
        for k in 0..n {
            for (o, i) in out[k * stride..][..w].iter_mut().zip(&inv) {
                *o *= i;
            }
        }
    }
}

/// Softmax along the middle dim of one contiguous [n, inner] slab, block of columns by block.
fn softmax_slab(x: &[f32], out: &mut [f32], n: usize, inner: usize, log: bool) {
    #[inline(always)]
    fn body(x: &[f32], out: &mut [f32], n: usize, inner: usize, log: bool) {
        for j0 in (0..inner).step_by(COLUMN_BLOCK) {
            let w = COLUMN_BLOCK.min(inner - j0);
            softmax_column_block(&x[j0..], &mut out[j0..], n, w, inner, log);
        }
    }
    dispatch!(body(x: &[f32], out: &mut [f32], n: usize, inner: usize, log: bool))
}

/// Softmax along the middle dim of contiguous [outer, n, inner] data; slabs run in parallel.
fn softmax_columns(src: &[f32], n: usize, inner: usize, log: bool) -> Vec<f32> {
    let slab = n * inner;
    if slab == 0 {
        return vec![0.0f32; src.len()];
    }
    let ([out], _) =
        new_vecs(src.len(), slab, src.len() >= PAR_MIN, |s, [o]| softmax_slab(&src[s..s + slab], o, n, inner, log));
    out
}

impl Tensor {
    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        self.expect_float(op)?;
        let d = resolve_dim(op, dim, self.rank())?;
        let shape = self.shape();
        let inner: usize = shape[d + 1..].iter().product();
        let y = if inner == 1 {
            softmax_rows(&self.f32_slice()?, shape[d], log)
        } else {
            softmax_columns(&self.f32_slice()?, shape[d], inner, log)
        };
        Ok(Tensor::from_vec(y, shape)?.to_dtype(self.dtype()))
    }

    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Softmax, 0.0, profile::f32_traffic(self.elem_count(), 1));
        self.softmax_impl(dim, false)
    }
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Softmax, 0.0, profile::f32_traffic(self.elem_count(), 1));
        self.softmax_impl(dim, true)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// f64 softmax / log-softmax along `d` of row-major data.
    fn reference(data: &[f64], shape: &[usize], d: usize, log: bool) -> Vec<f64> {
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let n = shape[d];
        let mut out = vec![0.0; data.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * n + k) * inner + i;
                let m = (0..n).map(|k| data[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..n).map(|k| (data[at(k)] - m).exp()).sum();
                for k in 0..n {
                    let v = data[at(k)] - m;
                    out[at(k)] = if log { v - s.ln() } else { v.exp() / s };
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn softmax_matches_f64(shape in arb_shape(4), kind in 0u8..4, d in 0usize..4, seed in any::<u64>(), di in 0usize..3) {
            let dtype = [DType::F32, DType::F16, DType::BF16][di];
            let d = d % shape.len();
            let n: usize = shape.iter().product();
            let data: Vec<f64> = normal_data(n, seed).iter().map(|v| v * 3.0).collect();
            let x = view_of(&data, &shape, dtype, kind);
            let xs = rounded(&data, dtype);
            for log in [false, true] {
                let y = if log { x.log_softmax(d as isize - shape.len() as isize) } else { x.softmax(d as isize) }.unwrap();
                prop_assert_eq!(y.shape(), &shape[..]);
                prop_assert_eq!(y.dtype(), dtype);
                let want = reference(&xs, &shape, d, log);
                let (rt, at) = if dtype == DType::F32 { (2e-6, 1e-7) } else { (tol(dtype), tol(dtype)) };
                assert_close(&y.to_f64_vec().unwrap(), &want, rt, at, &format!("log {log} {dtype:?} {shape:?} dim {d}"));
            }
        }
    }

    #[test]
    fn attention_sized_rows_in_parallel() {
        // Swin-like scores [windows*heads, 49, 49], big enough for the parallel path.
        let x = Tensor::randn(&[64, 49, 49], 4, DType::F32).affine(4.0, 0.0).unwrap();
        let xs = x.to_f64_vec().unwrap();
        let y = x.softmax(-1).unwrap().to_f64_vec().unwrap();
        let want = reference(&xs, &[64, 49, 49], 2, false);
        assert_close(&y, &want, 2e-6, 1e-8, "softmax rows");
        for r in 0..64 * 49 {
            let s: f64 = y[r * 49..(r + 1) * 49].iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
        let y = x.log_softmax(1).unwrap().to_f64_vec().unwrap();
        assert_close(&y, &reference(&xs, &[64, 49, 49], 1, true), 2e-6, 1e-6, "log_softmax dim 1");
    }

    #[test]
    fn class_dim_of_a_parsing_map_in_column_blocks() {
        // [B, classes, H, W] over the class dim: column blocks with a partial last block, and
        // enough slabs for the parallel path.
        let shape = [3, 11, 37, 41];
        let x = Tensor::randn(&shape, 7, DType::F32).affine(5.0, 0.0).unwrap();
        let xs = x.to_f64_vec().unwrap();
        for log in [false, true] {
            let y = if log { x.log_softmax(1) } else { x.softmax(1) }.unwrap().to_f64_vec().unwrap();
            assert_close(&y, &reference(&xs, &shape, 1, log), 2e-6, 1e-7, &format!("log {log}"));
        }
        let t = Tensor::from_vec(vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 1.0, 0.0, 1.0], &[1, 2, 3]).unwrap();
        assert_eq!(t.softmax(1).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.5, 0.0, 1.0, 0.5, 1.0]);
    }

    #[test]
    fn masked_and_extreme_rows() {
        let x = Tensor::from_vec(vec![0.0f32, f32::NEG_INFINITY, 1000.0, -1000.0], &[2, 2]).unwrap();
        let y = x.softmax(-1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, vec![1.0, 0.0, 1.0, 0.0]);
        let l = x.log_softmax(-1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!((l[0], l[1], l[2], l[3]), (0.0, f32::NEG_INFINITY, 0.0, -2000.0));
    }

    #[test]
    fn errors_name_the_op() {
        let i = Tensor::zeros(&[2, 3], DType::I64);
        assert!(i.softmax(0).unwrap_err().to_string().contains("softmax"));
        let e = Tensor::zeros(&[2, 3], DType::F32).log_softmax(2).unwrap_err().to_string();
        assert!(e.contains("log_softmax") && e.contains("rank 2"), "{e}");
    }
}
