//! LayerNorm over the last dimension, and per pixel over channels (LayerNorm2d, NCHW).
//!
//! Statistics are two-pass (mean, then mean squared deviation) accumulated in f64, so large
//! offsets do not cancel; the normalisation itself runs in f32 over contiguous rows, in parallel.
use std::mem::MaybeUninit;

use crate::cpu::parallel::{new_vec, new_vec_uninit, new_vecs, PAR_CHUNK, PAR_MIN};
use crate::cpu::simd::dispatch;
use crate::profile;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;

/// Affine parameters as f32 vectors of length `n`, checked against the input shape.
fn param(op: &'static str, x: &Tensor, p: Option<&Tensor>, n: usize) -> Result<Option<Vec<f32>>> {
    let Some(p) = p else { return Ok(None) };
    p.expect_float(op)?;
    if p.shape() != [n] {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().to_vec(), rhs: p.shape().to_vec() });
    }
    Ok(Some(p.to_f32_vec()?))
}

/// Independent f64 partial sums per row statistic: two 512-bit (four 256-bit) vectors of them,
/// so that the additions of a row are not one chain of dependent adds (with 4 lanes, a row of
/// 128 values was 32 adds in a row each 3-4 cycles; LayerNorm ran at 40% of the copy rate).
const STAT_LANES: usize = 16;

/// Mean and 1/sqrt(var + eps) of one row (two passes in f64 with independent lanes).
#[inline(always)]
fn row_stats(x: &[f32], eps: f64) -> (f64, f32) {
    let n = x.len() as f64;
    let mut lanes = [0.0f64; STAT_LANES];
    let (chunks, rest) = x.as_chunks::<STAT_LANES>();
    for c in chunks {
        for k in 0..STAT_LANES {
            lanes[k] += c[k] as f64;
        }
    }
    let mean = (rest.iter().map(|&v| v as f64).sum::<f64>() + lanes.iter().sum::<f64>()) / n;
    let mut lanes = [0.0f64; STAT_LANES];
    for c in chunks {
        for k in 0..STAT_LANES {
            let d = c[k] as f64 - mean;
            lanes[k] += d * d;
        }
    }
    let ss = rest.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() + lanes.iter().sum::<f64>();
    (mean, (1.0 / (ss / n + eps).sqrt()) as f32)
}

/// One row, each output written once: `(x - mean) · rstd`, then `· w`, then `+ b`, each rounded
/// to f32 as three separate passes would round it (Rust does not fuse them into an FMA). The
/// output is uninitialised memory ([`Tensor::layer_norm`] skips zeroing it first).
#[inline(always)]
fn layer_norm_row(x: &[f32], out: &mut [MaybeUninit<f32>], w: Option<&[f32]>, b: Option<&[f32]>, eps: f64) {
    let (mean, rstd) = row_stats(x, eps);
    // The deviation in f64: a mean rounded to f32 would cost precision when |mean| >> std.
    let xhat = |v: f32| (v as f64 - mean) as f32 * rstd;
    match (w, b) {
        (Some(w), Some(b)) => {
            for ((o, &v), (&w, &b)) in out.iter_mut().zip(x).zip(w.iter().zip(b)) {
                o.write(xhat(v) * w + b);
            }
        }
        (Some(w), None) => {
            for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
                o.write(xhat(v) * w);
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &b) in out.iter_mut().zip(x).zip(b) {
                o.write(xhat(v) + b);
            }
        }
        (None, None) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(xhat(v));
            }
        }
    }
}

/// One row of the LayerNorm backward (llm.c's layernorm_backward, with the statistics
/// recomputed as the forward computes them). With xhat = (x - mean) rstd and dxhat = g w:
///   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat));
/// and into the parameter sums: dw += g xhat, db += g. Without a weight `w` is ones (g * 1 is
/// g exactly). The two row means are sums in `STAT_LANES` independent f64 lanes, as in
/// [`row_stats`], so the loop vectorises instead of waiting on one chain of adds.
#[inline(always)]
fn layer_norm_backward_row(x: &[f32], g: &[f32], w: &[f32], eps: f64, dx: &mut [f32], dw: &mut [f64], db: &mut [f64]) {
    let (mean, rstd) = row_stats(x, eps);
    let d = x.len();
    // Every slice cut to the row's length, so the loops below carry no bounds checks.
    let (g, w, dx, dw, db) = (&g[..d], &w[..d], &mut dx[..d], &mut dw[..d], &mut db[..d]);
    let n = d as f64;
    let full = d / STAT_LANES * STAT_LANES;
    // Pass 1: xhat into dx (scratch), the parameter sums, the two row sums.
    #[inline(always)]
    fn pass1<const L: usize>(
        (x, g, w): (&[f32; L], &[f32; L], &[f32; L]),
        (dx, dw, db): (&mut [f32; L], &mut [f64; L], &mut [f64; L]),
        (mean, rstd): (f64, f32),
        (s1, s2): (&mut [f64; L], &mut [f64; L]),
    ) {
        for k in 0..L {
            let xhat = (x[k] as f64 - mean) as f32 * rstd;
            dx[k] = xhat;
            dw[k] += (g[k] * xhat) as f64;
            db[k] += g[k] as f64;
            let dxhat = g[k] * w[k];
            s1[k] += dxhat as f64;
            s2[k] += (dxhat * xhat) as f64;
        }
    }
    let (mut l1, mut l2) = ([0.0f64; STAT_LANES], [0.0f64; STAT_LANES]);
    let (x16, g16, w16) = (x.as_chunks::<STAT_LANES>().0, g.as_chunks::<STAT_LANES>().0, w.as_chunks::<STAT_LANES>().0);
    let (dx16, dx1) = dx.as_chunks_mut::<STAT_LANES>();
    let (dw16, dw1) = dw.as_chunks_mut::<STAT_LANES>();
    let (db16, db1) = db.as_chunks_mut::<STAT_LANES>();
    for i in 0..x16.len() {
        pass1(
            (&x16[i], &g16[i], &w16[i]),
            (&mut dx16[i], &mut dw16[i], &mut db16[i]),
            (mean, rstd),
            (&mut l1, &mut l2),
        );
    }
    // The rest of the row (none when d is a multiple of STAT_LANES), one value at a time.
    let (mut r1, mut r2) = (0.0f64, 0.0f64);
    for (k, i) in (full..d).enumerate() {
        use std::array::{from_mut, from_ref};
        pass1(
            (from_ref(&x[i]), from_ref(&g[i]), from_ref(&w[i])),
            (from_mut(&mut dx1[k]), from_mut(&mut dw1[k]), from_mut(&mut db1[k])),
            (mean, rstd),
            (from_mut(&mut r1), from_mut(&mut r2)),
        );
    }
    let m1 = ((r1 + l1.iter().sum::<f64>()) / n) as f32;
    let m2 = ((r2 + l2.iter().sum::<f64>()) / n) as f32;
    // Pass 2: dx from xhat, in place.
    for i in 0..d {
        dx[i] = rstd * (g[i] * w[i] - m1 - dx[i] * m2);
    }
}

/// [`layer_norm_backward_row`] over rows of `d` values, on the best vector extension this CPU
/// has (`cpu::simd`; the same bits on every path). On a 2-core AMD EPYC Zen 4, rows of 128:
/// 2.4 ms for 25088 of them against 4.2 with the one-chain baseline loop (best of 20, three
/// interleaved rounds); rows of 1024 0.24 against 0.48 ms.
fn layer_norm_backward_rows(x: &[f32], g: &[f32], w: &[f32], eps: f64, dx: &mut [f32], dw: &mut [f64], db: &mut [f64]) {
    #[inline(always)]
    fn body(x: &[f32], g: &[f32], w: &[f32], eps: f64, dx: &mut [f32], dw: &mut [f64], db: &mut [f64]) {
        let d = w.len();
        for (o, (x, g)) in dx.chunks_mut(d).zip(x.chunks(d).zip(g.chunks(d))) {
            layer_norm_backward_row(x, g, w, eps, o, dw, db);
        }
    }
    dispatch!(body(x: &[f32], g: &[f32], w: &[f32], eps: f64, dx: &mut [f32], dw: &mut [f64], db: &mut [f64]))
}

/// Rows of `d` values, each normalised, on the best vector extension this CPU has (baseline
/// x86-64 runs the f64 statistics 2 wide; `cpu::simd`). Same bits on every path. On a 2-core AMD
/// EPYC (AVX2) the AVX2 build ran 25088 rows of 128 in 3.3 against 3.5 ms (best of 15, interleaved).
fn layer_norm_rows(x: &[f32], out: &mut [MaybeUninit<f32>], d: usize, w: Option<&[f32]>, b: Option<&[f32]>, eps: f64) {
    #[inline(always)]
    fn body(x: &[f32], out: &mut [MaybeUninit<f32>], d: usize, w: Option<&[f32]>, b: Option<&[f32]>, eps: f64) {
        for (o, x) in out.chunks_mut(d).zip(x.chunks(d)) {
            layer_norm_row(x, o, w, b, eps);
        }
    }
    dispatch!(body(x: &[f32], out: &mut [MaybeUninit<f32>], d: usize, w: Option<&[f32]>, b: Option<&[f32]>, eps: f64))
}

impl Tensor {
    /// Normalise over the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance).
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::LayerNorm, 0.0, profile::f32_traffic(self.elem_count(), 1));
        const OP: &str = "layer_norm";
        self.expect_float(OP)?;
        if self.rank() == 0 {
            return Err(Error::BadShape { op: OP, shape: vec![], expected: "rank >= 1".into() });
        }
        let d = self.shape()[self.rank() - 1];
        let w = param(OP, self, weight, d)?;
        let b = param(OP, self, bias, d)?;
        let src = self.f32_slice()?;
        let (w, b) = (w.as_deref(), b.as_deref());
        // d = 0 leaves no values (and no rows).
        let step = PAR_CHUNK.div_ceil(d.max(1)) * d.max(1);
        // SAFETY: each chunk is whole rows (`step` is a multiple of d), and layer_norm_rows writes
        // every value of every row it is given (its zips run the row's d values: `param` checked
        // that w and b have d each); no value is read before it is written.
        let out =
            unsafe { new_vec_uninit(src.len(), step, |s, o| layer_norm_rows(&src[s..s + o.len()], o, d, w, b, eps)) };
        Ok(Tensor::from_vec(out, self.shape())?.to_dtype(self.dtype()))
    }

    /// The backward of [`Tensor::layer_norm`] (self is its input x, `grad` the output's
    /// gradient): (dx, dweight, dbias) in one pass per row instead of a dozen tensor ops. dweight
    /// is `sum g xhat` and dbias `sum g` over the rows whatever `weight` is; the caller keeps what
    /// it needs. The rows are split into fixed chunks whose parameter sums (f64) are added in
    /// order, so the result does not depend on the thread count. Its composite twin is the
    /// autograd rule written with tensor ops (tested against each other there).
    pub fn layer_norm_backward(
        &self,
        weight: Option<&Tensor>,
        grad: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let _prof = profile::op(profile::Kind::LayerNorm, 0.0, profile::f32_traffic(self.elem_count(), 2));
        const OP: &str = "layer_norm_backward";
        self.expect_float(OP)?;
        if self.rank() == 0 {
            return Err(Error::BadShape { op: OP, shape: vec![], expected: "rank >= 1".into() });
        }
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
        }
        let d = self.shape()[self.rank() - 1];
        let w = param(OP, self, weight, d)?;
        let (src, g) = (self.f32_slice()?, grad.f32_slice()?);
        let w = w.unwrap_or_else(|| vec![1.0; d]);
        // Fixed chunks of whole rows, whose parameter sums are added in chunk order below.
        let step = PAR_CHUNK.div_ceil(d.max(1)) * d.max(1);
        let ([dx], partials) = new_vecs(src.len(), step, src.len() >= PAR_MIN, |s, [o]| {
            let (x, g) = (&src[s..s + o.len()], &g[s..s + o.len()]);
            let (mut cw, mut cb) = (vec![0.0f64; d], vec![0.0f64; d]);
            layer_norm_backward_rows(x, g, &w, eps, o, &mut cw, &mut cb);
            (cw, cb)
        });
        let (mut dw, mut db) = (vec![0.0f64; d], vec![0.0f64; d]);
        for (cw, cb) in partials {
            dw.iter_mut().zip(cw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(cb).for_each(|(a, b)| *a += b);
        }
        let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let dtype = self.dtype();
        Ok((
            Tensor::from_vec(dx, self.shape())?.to_dtype(dtype),
            Tensor::from_vec(to_f32(dw), &[d])?.to_dtype(weight.map_or(dtype, |w| w.dtype())),
            Tensor::from_vec(to_f32(db), &[d])?.to_dtype(dtype),
        ))
    }

    /// Normalise NCHW over C for each pixel; weight and bias have shape [C].
    pub fn layer_norm2d(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::LayerNorm, 0.0, profile::f32_traffic(self.elem_count(), 1));
        const OP: &str = "layer_norm2d";
        self.expect_float(OP)?;
        if self.rank() != 4 {
            return Err(Error::BadShape { op: OP, shape: self.shape().to_vec(), expected: "[N, C, H, W]".into() });
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let hw = self.shape()[2] * self.shape()[3];
        let w = param(OP, self, weight, c)?;
        let b = param(OP, self, bias, c)?;
        let src = self.f32_slice()?;
        if src.is_empty() {
            return Ok(Tensor::from_vec(Vec::<f32>::new(), self.shape())?.to_dtype(self.dtype()));
        }
        // Pass 1: per-pixel mean and rstd, [N, HW], accumulating channel rows in f64.
        const PIX: usize = 512;
        let mut mean = vec![0.0f64; n * hw];
        let mut rstd = vec![0.0f32; n * hw];
        mean.par_chunks_mut(hw).zip(rstd.par_chunks_mut(hw)).enumerate().for_each(|(ni, (m, r))| {
            let plane = &src[ni * c * hw..(ni + 1) * c * hw];
            m.par_chunks_mut(PIX).zip(r.par_chunks_mut(PIX)).enumerate().for_each(|(pi, (m, r))| {
                pixel_stats(&plane[pi * PIX..], c, hw, eps, m, r);
            });
        });
        // Pass 2: one (n, c) plane row at a time.
        let (w, b) = (w.as_deref(), b.as_deref());
        let rows_per = PAR_CHUNK.div_ceil(hw).max(1);
        let out = new_vec(src.len(), rows_per * hw, |start, o| {
            let x = &src[start..start + o.len()];
            for (k, (o, x)) in o.chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
                let row = start / hw + k;
                let (ni, ch) = (row / c, row % c);
                let (m, r) = (&mean[ni * hw..(ni + 1) * hw], &rstd[ni * hw..(ni + 1) * hw]);
                let (wc, bc) = (w.map_or(1.0, |w| w[ch]), b.map_or(0.0, |b| b[ch]));
                normalize_row(x, m, r, wc, bc, o);
            }
        });
        Ok(Tensor::from_vec(out, self.shape())?.to_dtype(self.dtype()))
    }
}

/// The mean (f64) and 1/std (f32) over `c` channels of `m.len()` pixels: channel `ch` of pixel
/// `i` at `x[ch * stride + i]`; each channel row added in order, in f64. Also the fused
/// upscaler's normalisation (`ops::conv::upscale_masks`), which must give the same bits.
pub(crate) fn pixel_stats(x: &[f32], c: usize, stride: usize, eps: f64, m: &mut [f64], r: &mut [f32]) {
    let len = m.len();
    m.fill(0.0);
    for ch in 0..c {
        for (a, &v) in m.iter_mut().zip(&x[ch * stride..ch * stride + len]) {
            *a += v as f64;
        }
    }
    m.iter_mut().for_each(|a| *a /= c as f64);
    let mut ss = vec![0.0f64; len];
    for ch in 0..c {
        for ((s, &v), &mu) in ss.iter_mut().zip(&x[ch * stride..ch * stride + len]).zip(&*m) {
            let d = v as f64 - mu;
            *s += d * d;
        }
    }
    for (r, s) in r.iter_mut().zip(&ss) {
        *r = (1.0 / (s / c as f64 + eps).sqrt()) as f32;
    }
}

/// One channel's row of pixels normalised by their [`pixel_stats`], then scaled and shifted.
pub(crate) fn normalize_row(x: &[f32], mean: &[f64], rstd: &[f32], weight: f32, bias: f32, out: &mut [f32]) {
    for (((o, &v), &m), &r) in out.iter_mut().zip(x).zip(mean).zip(rstd) {
        *o = (v as f64 - m) as f32 * r * weight + bias;
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// f64 normalisation of groups: element (o, k, i) of a row-major [outer, n, inner] array is
    /// normalised over k, with weight/bias indexed by k.
    fn reference(data: &[f64], outer: usize, n: usize, inner: usize, w: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
        let mut out = vec![0.0; data.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * n + k) * inner + i;
                let mean = (0..n).map(|k| data[at(k)]).sum::<f64>() / n as f64;
                let var = (0..n).map(|k| (data[at(k)] - mean).powi(2)).sum::<f64>() / n as f64;
                for k in 0..n {
                    out[at(k)] = (data[at(k)] - mean) / (var + eps).sqrt() * w[k] + b[k];
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn layer_norm_matches_f64(shape in arb_shape(4), kind in 0u8..4, seed in any::<u64>(), di in 0usize..3, affine in any::<bool>()) {
            let dtype = [DType::F32, DType::F16, DType::BF16][di];
            let n: usize = shape.iter().product();
            let d = *shape.last().unwrap();
            // An offset far from zero checks that the statistics do not cancel.
            let data: Vec<f64> = normal_data(n, seed).iter().map(|v| v * 2.0 + 30.0).collect();
            let x = view_of(&data, &shape, dtype, kind);
            let wv: Vec<f64> = normal_data(d, seed ^ 7);
            let bv: Vec<f64> = normal_data(d, seed ^ 8);
            let (wt, bt) = (Tensor::from_f64_vec(&wv, &[d], dtype), Tensor::from_f64_vec(&bv, &[d], dtype));
            let y = if affine { x.layer_norm(Some(&wt), Some(&bt), 1e-5) } else { x.layer_norm(None, None, 1e-5) }.unwrap();
            prop_assert_eq!(y.dtype(), dtype);
            let (w, b) = if affine { (rounded(&wv, dtype), rounded(&bv, dtype)) } else { (vec![1.0; d], vec![0.0; d]) };
            let want = reference(&rounded(&data, dtype), n / d, d, 1, &w, &b, 1e-5);
            let (rt, at) = if dtype == DType::F32 { (1e-5, 2e-5) } else { (tol(dtype), 4.0 * tol(dtype)) };
            assert_close(&y.to_f64_vec().unwrap(), &want, rt, at, &format!("layer_norm {dtype:?} {shape:?}"));
        }

        #[test]
        fn layer_norm2d_matches_f64(shape in prop::collection::vec(1usize..6, 4), kind in 0u8..4, seed in any::<u64>(), affine in any::<bool>()) {
            let n: usize = shape.iter().product();
            let c = shape[1];
            let data: Vec<f64> = normal_data(n, seed).iter().map(|v| v - 5.0).collect();
            let x = view_of(&data, &shape, DType::F32, kind);
            let wv = normal_data(c, seed ^ 7);
            let bv = normal_data(c, seed ^ 8);
            let (wt, bt) = (Tensor::from_f64_vec(&wv, &[c], DType::F32), Tensor::from_f64_vec(&bv, &[c], DType::F32));
            let y = if affine { x.layer_norm2d(Some(&wt), Some(&bt), 1e-6) } else { x.layer_norm2d(None, None, 1e-6) }.unwrap();
            let (w, b) = if affine { (rounded(&wv, DType::F32), rounded(&bv, DType::F32)) } else { (vec![1.0; c], vec![0.0; c]) };
            let want = reference(&rounded(&data, DType::F32), shape[0], c, shape[2] * shape[3], &w, &b, 1e-6);
            assert_close(&y.to_f64_vec().unwrap(), &want, 1e-5, 2e-5, &format!("layer_norm2d {shape:?}"));
        }
    }

    /// The forward row loop runs on the best vector extension (`dispatch!`) and writes each value
    /// once; it must give the bits of the plain definition, three passes each rounded to f32
    /// (normalise, times w, plus b), with and without each parameter.
    #[test]
    fn vector_paths_equal_the_three_pass_definition_bit_for_bit() {
        use std::mem::MaybeUninit;
        let d = 131;
        let x = Tensor::rand_uniform(&[7, d], -3.0, 5.0, 1, DType::F32).to_vec::<f32>().unwrap();
        let w = Tensor::rand_uniform(&[d], 0.5, 1.5, 3, DType::F32).to_vec::<f32>().unwrap();
        let b = Tensor::rand_uniform(&[d], -0.5, 0.5, 4, DType::F32).to_vec::<f32>().unwrap();
        for (w, b) in [(Some(&w[..]), Some(&b[..])), (Some(&w[..]), None), (None, Some(&b[..])), (None, None)] {
            let mut fast = vec![MaybeUninit::new(f32::NAN); x.len()];
            super::layer_norm_rows(&x, &mut fast, d, w, b, 1e-5);
            let mut slow = Vec::new();
            for r in x.chunks(d) {
                let (mean, rstd) = super::row_stats(r, 1e-5);
                let mut o: Vec<f32> = r.iter().map(|&v| (v as f64 - mean) as f32 * rstd).collect();
                if let Some(w) = w {
                    o.iter_mut().zip(w).for_each(|(o, &w)| *o *= w);
                }
                if let Some(b) = b {
                    o.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
                }
                slow.extend(o);
            }
            // SAFETY: initialised above (NaN), then written by the row loop.
            let fast: Vec<f32> = fast.iter().map(|v| unsafe { v.assume_init() }).collect();
            let same = fast.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "w {} b {}", w.is_some(), b.is_some());
        }
    }

    /// The same for the backward's row loop: dx and both parameter sums, a row of 16 lanes and
    /// a rest (d = 131), accumulated over 7 rows.
    #[test]
    fn backward_vector_paths_equal_the_baseline_bit_for_bit() {
        let d = 131;
        let x = Tensor::rand_uniform(&[7, d], -3.0, 5.0, 1, DType::F32).to_vec::<f32>().unwrap();
        let g = Tensor::rand_uniform(&[7, d], -1.0, 1.0, 2, DType::F32).to_vec::<f32>().unwrap();
        let w = Tensor::rand_uniform(&[d], 0.5, 1.5, 3, DType::F32).to_vec::<f32>().unwrap();
        let (mut fast, mut fw, mut fb) = (vec![0.0f32; x.len()], vec![0.0f64; d], vec![0.0f64; d]);
        super::layer_norm_backward_rows(&x, &g, &w, 1e-5, &mut fast, &mut fw, &mut fb);
        let (mut slow, mut sw, mut sb) = (vec![0.0f32; x.len()], vec![0.0f64; d], vec![0.0f64; d]);
        for (o, (r, gr)) in slow.chunks_mut(d).zip(x.chunks(d).zip(g.chunks(d))) {
            super::layer_norm_backward_row(r, gr, &w, 1e-5, o, &mut sw, &mut sb);
        }
        assert!(fast.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()), "dx");
        assert!(fw.iter().zip(&sw).all(|(a, b)| a.to_bits() == b.to_bits()), "dw");
        assert!(fb.iter().zip(&sb).all(|(a, b)| a.to_bits() == b.to_bits()), "db");
    }

    #[test]
    fn swin_sized_inputs_take_parallel_paths() {
        let x = Tensor::randn(&[600, 128], 1, DType::F32);
        let w = Tensor::randn(&[128], 2, DType::F32);
        let b = Tensor::randn(&[128], 3, DType::F32);
        let y = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap().to_f64_vec().unwrap();
        let (xv, wv, bv) = (x.to_f64_vec().unwrap(), w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        assert_close(&y, &reference(&xv, 600, 128, 1, &wv, &bv, 1e-5), 1e-5, 2e-5, "layer_norm rows");
        let x = Tensor::randn(&[2, 32, 40, 41], 4, DType::F32);
        let w = Tensor::randn(&[32], 5, DType::F32);
        let y = x.layer_norm2d(Some(&w), None, 1e-6).unwrap().to_f64_vec().unwrap();
        let want = reference(&x.to_f64_vec().unwrap(), 2, 32, 40 * 41, &w.to_f64_vec().unwrap(), &[0.0; 32], 1e-6);
        assert_close(&y, &want, 1e-5, 2e-5, "layer_norm2d");
    }

    /// f64 LayerNorm backward over rows of length d: (dx, dw, db).
    fn backward_reference(x: &[f64], g: &[f64], w: &[f64], d: usize, eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; d], vec![0.0; d]);
        for r in 0..x.len() / d {
            let (x, g) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            let mean = x.iter().sum::<f64>() / d as f64;
            let rstd = 1.0 / (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64 + eps).sqrt();
            let xhat: Vec<f64> = x.iter().map(|v| (v - mean) * rstd).collect();
            let dxhat: Vec<f64> = (0..d).map(|i| g[i] * w[i]).collect();
            let m1 = dxhat.iter().sum::<f64>() / d as f64;
            let m2 = (0..d).map(|i| dxhat[i] * xhat[i]).sum::<f64>() / d as f64;
            for i in 0..d {
                dx[r * d + i] = rstd * (dxhat[i] - m1 - xhat[i] * m2);
                dw[i] += g[i] * xhat[i];
                db[i] += g[i];
            }
        }
        (dx, dw, db)
    }

    /// The fused backward against the f64 formula: small and swin-sized rows (the parallel
    /// path), with and without weight, an input far from zero, a view as the gradient, the
    /// same bits on one thread and on many; shape errors name the op.
    #[test]
    fn layer_norm_backward_matches_f64() {
        for (rows, d, seed) in [(1, 1, 1), (3, 7, 2), (50, 96, 3), (600, 128, 4), (40, 1024, 5)] {
            let x = Tensor::from_f64_vec(
                &normal_data(rows * d, seed).iter().map(|v| v * 2.0 + 30.0).collect::<Vec<_>>(),
                &[rows, d],
                DType::F32,
            );
            let g = Tensor::randn(&[d, rows], seed ^ 9, DType::F32).t().unwrap();
            let w = Tensor::randn(&[d], seed ^ 7, DType::F32);
            for weight in [Some(&w), None] {
                let (dx, dw, db) = x.layer_norm_backward(weight, &g, 1e-5).unwrap();
                let ones = vec![1.0; d];
                let wv = weight.map_or(ones, |w| w.to_f64_vec().unwrap());
                let (rx, rw, rb) = backward_reference(&x.to_f64_vec().unwrap(), &g.to_f64_vec().unwrap(), &wv, d, 1e-5);
                let what = format!("layer_norm_backward [{rows}, {d}] weight {}", weight.is_some());
                assert_close(&dx.to_f64_vec().unwrap(), &rx, 1e-4, 1e-4, &format!("{what}: dx"));
                assert_close(&dw.to_f64_vec().unwrap(), &rw, 1e-4, 1e-4, &format!("{what}: dw"));
                assert_close(&db.to_f64_vec().unwrap(), &rb, 1e-5, 1e-5, &format!("{what}: db"));
                let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                let (dx1, dw1, db1) = one.install(|| x.layer_norm_backward(weight, &g, 1e-5)).unwrap();
                assert_eq!(dx1.to_vec::<f32>().unwrap(), dx.to_vec::<f32>().unwrap(), "{what}: threads");
                assert_eq!(dw1.to_vec::<f32>().unwrap(), dw.to_vec::<f32>().unwrap(), "{what}: threads");
                assert_eq!(db1.to_vec::<f32>().unwrap(), db.to_vec::<f32>().unwrap(), "{what}: threads");
            }
        }
        let x = Tensor::zeros(&[2, 3], DType::F32);
        let e = x.layer_norm_backward(None, &Tensor::zeros(&[3, 2], DType::F32), 1e-5).unwrap_err().to_string();
        assert!(e.contains("layer_norm_backward") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = x.layer_norm_backward(Some(&Tensor::ones(&[2], DType::F32)), &x, 1e-5).unwrap_err().to_string();
        assert!(e.contains("layer_norm_backward") && e.contains("[2]"), "{e}");
    }

    #[test]
    fn errors_name_op_and_shapes() {
        let x = Tensor::zeros(&[2, 3, 4], DType::F32);
        let e = x.layer_norm(Some(&Tensor::ones(&[3], DType::F32)), None, 1e-5).unwrap_err().to_string();
        assert!(e.contains("layer_norm") && e.contains("[2, 3, 4]") && e.contains("[3]"), "{e}");
        let e = x.layer_norm2d(None, None, 1e-5).unwrap_err().to_string();
        assert!(e.contains("layer_norm2d") && e.contains("[2, 3, 4]"), "{e}");
        let x4 = Tensor::zeros(&[1, 3, 2, 2], DType::F32);
        let e = x4.layer_norm2d(None, Some(&Tensor::ones(&[4], DType::F32)), 1e-5).unwrap_err().to_string();
        assert!(e.contains("layer_norm2d") && e.contains("[4]"), "{e}");
        assert!(Tensor::zeros(&[3], DType::I64).layer_norm(None, None, 1e-5).is_err());
        // A constant row normalises to zero (plus bias), not NaN.
        let y = Tensor::full(3.0, &[2, 5], DType::F32).layer_norm(None, None, 1e-5).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 10]);
    }
}
