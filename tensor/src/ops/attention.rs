//! Swin's window attention in one pass per window: for each window and head, the scores
//! `scale · q kᵀ + bias + mask`, their row softmax and the product with v, all on a few KiB of
//! scratch that stays in L1, instead of batched tiny GEMMs with the scores going through memory
//! between four ops.
//!
//! The inputs are read where the qkv Linear wrote them (`[B, n, 3·H·d]`: q, k, v, each
//! head-major), and the output is written token-major (`[B, n, H·d]`), ready for the projection:
//! no permute copies either side. Its composite twin is `matmul`, `add`, `softmax`, `matmul`
//! (what the autograd model records when gradients are needed); the tests compare the two.
//!
//! Paths: AVX-512 register tiles for windows of up to 64 tokens and head dims that are a
//! multiple of 16 (Swin: 49 tokens, 32 dims); plain loops otherwise. Both share the softmax of
//! `ops::softmax`, so the probabilities agree with the composite's to rounding of the scores.

use crate::ops::softmax::rows as softmax_rows;
use crate::profile;
use crate::{DType, Error, Result, Tensor};
use rayon::prelude::*;

/// What one call computes, in elements.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Tokens per window, heads, head dim.
    n: usize,
    h: usize,
    d: usize,
    /// Windows per image (the mask's first dim; 1 without a mask).
    nw: usize,
    scale: f32,
}

impl Dims {
    fn c(&self) -> usize {
        self.h * self.d
    }
}

impl Tensor {
    /// Window attention on a packed qkv `[B, n, 3·H·d]` -> `[B, n, H·d]`: for window `b` and
    /// head `h`, `softmax(scale · q kᵀ + bias[h] + mask[b % nW]) v`. `bias` is `[H, n, n]`,
    /// `mask` `[nW, n, n]` with B a multiple of nW (windows are image-major, as Swin orders them).
    /// f32 only (inference fast path; its autograd twin is the composite of the same ops).
    pub fn window_attention(
        &self,
        heads: usize,
        bias: Option<&Tensor>,
        mask: Option<&Tensor>,
        scale: f32,
    ) -> Result<Tensor> {
        let op = "window_attention";
        let s = self.shape();
        if self.rank() != 3 || heads == 0 || !s[2].is_multiple_of(3 * heads) {
            let expected = format!("[B, n, 3·heads·d] with heads = {heads}");
            return Err(Error::BadShape { op, shape: s.to_vec(), expected });
        }
        if self.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype() });
        }
        let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
        let check = |t: &Tensor, lead: usize, what: &str| -> Result<()> {
            if t.shape() != [lead, n, n] {
                let expected = format!("{what} [{lead}, {n}, {n}]");
                return Err(Error::BadShape { op, shape: t.shape().to_vec(), expected });
            }
            if t.dtype() != DType::F32 {
                return Err(Error::UnsupportedDType { op, dtype: t.dtype() });
            }
            Ok(())
        };
        if let Some(t) = bias {
            check(t, heads, "bias")?;
        }
        let nw = match mask {
            Some(m) => {
                let nw = m.shape().first().copied().unwrap_or(0);
                if nw == 0 || b % nw != 0 {
                    let expected = format!("mask [nW, {n}, {n}] with nW dividing the {b} windows");
                    return Err(Error::BadShape { op, shape: m.shape().to_vec(), expected });
                }
                check(m, nw, "mask")?;
                nw
            }
            None => 1,
        };
        let dims = Dims { n, h: heads, d, nw, scale };
        let flops = 4.0 * (b * heads * n * n * d) as f64;
        let _prof = profile::op(profile::Kind::Attention, flops, profile::f32_traffic(b * n * 4 * heads * d, 1));
        // Borrowed when contiguous, else one copy.
        let qkv = self.f32_slice()?;
        let bias = bias.map(|t| t.f32_slice()).transpose()?;
        let mask = mask.map(|t| t.f32_slice()).transpose()?;
        let mut out = vec![0.0f32; b * n * heads * d];
        if n > 0 && d > 0 {
            attend(&qkv, bias.as_deref(), mask.as_deref(), &mut out, dims);
        }
        Tensor::from_vec(out, &[b, n, heads * d])
    }
}

/// All windows, in parallel over windows (each writes its own output rows).
fn attend(qkv: &[f32], bias: Option<&[f32]>, mask: Option<&[f32]>, out: &mut [f32], dims: Dims) {
    let (n, c) = (dims.n, dims.c());
    out.par_chunks_mut(n * c).enumerate().for_each_init(
        || Scratch::new(n, dims.d),
        |scratch, (w, o)| {
            let qkv = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
            let mask = mask.map(|m| &m[(w % dims.nw) * n * n..][..n * n]);
            for h in 0..dims.h {
                let bias = bias.map(|b| &b[h * n * n..][..n * n]);
                one_head(qkv, bias, mask, h, o, scratch, dims);
            }
        },
    );
}

/// Per-thread buffers: one head's kᵀ (padded to 64 keys), scores and probabilities.
struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    probs: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, d: usize) -> Scratch {
        Scratch { kt: vec![0.0; d * 64], scores: vec![0.0; n * n], probs: vec![0.0; n * n] }
    }
}

/// One window and head: scores, softmax, product with v into the head's columns of `out`.
fn one_head(
    qkv: &[f32],
    bias: Option<&[f32]>,
    mask: Option<&[f32]>,
    h: usize,
    out: &mut [f32],
    s: &mut Scratch,
    dims: Dims,
) {
    let Dims { n, d, .. } = dims;
    #[cfg(target_arch = "x86_64")]
    if n <= 64 && d % 16 == 0 && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the slices cover the window (checked by the caller's
        // shapes and the asserts in the kernel).
        unsafe {
            match n.div_ceil(16) {
                1 => avx512::scores::<1, 16>(qkv, h, &mut s.kt, &mut s.scores, dims),
                2 => avx512::scores::<2, 32>(qkv, h, &mut s.kt, &mut s.scores, dims),
                3 => avx512::scores::<3, 48>(qkv, h, &mut s.kt, &mut s.scores, dims),
                _ => avx512::scores::<4, 64>(qkv, h, &mut s.kt, &mut s.scores, dims),
            }
            add_bias_mask(&mut s.scores, bias, mask);
            softmax_rows(&s.scores, &mut s.probs, n, false);
            match d / 16 {
                1 => avx512::weighted_sum::<1>(&s.probs, qkv, h, out, dims),
                2 => avx512::weighted_sum::<2>(&s.probs, qkv, h, out, dims),
                _ => avx512::weighted_sum_any(&s.probs, qkv, h, out, dims),
            }
        }
        return;
    }
    portable::scores(qkv, h, &mut s.scores, dims);
    add_bias_mask(&mut s.scores, bias, mask);
    softmax_rows(&s.scores, &mut s.probs, n, false);
    portable::weighted_sum(&s.probs, qkv, h, out, dims);
}

/// scores += bias + mask (each n x n), in the composite's order (bias first, then the mask).
fn add_bias_mask(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>) {
    match (bias, mask) {
        (Some(b), Some(m)) => scores.iter_mut().zip(b).zip(m).for_each(|((s, b), m)| *s = (*s + b) + m),
        (Some(t), None) | (None, Some(t)) => scores.iter_mut().zip(t).for_each(|(s, t)| *s += t),
        (None, None) => {}
    }
}

/// Plain loops: any n and d.
mod portable {
    use super::Dims;

    /// scores[i, j] = scale · q_i · k_j.
    pub fn scores(qkv: &[f32], h: usize, scores: &mut [f32], dims: Dims) {
        let Dims { n, d, scale, .. } = dims;
        let row = 3 * dims.c();
        for i in 0..n {
            let q = &qkv[i * row + h * d..][..d];
            for j in 0..n {
                let k = &qkv[j * row + dims.c() + h * d..][..d];
                let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                scores[i * n + j] = scale * dot;
            }
        }
    }

    /// out[i, head h] = Σ_j probs[i, j] v_j.
    pub fn weighted_sum(probs: &[f32], qkv: &[f32], h: usize, out: &mut [f32], dims: Dims) {
        let (Dims { n, d, .. }, c) = (dims, dims.c());
        for i in 0..n {
            let o = &mut out[i * c + h * d..][..d];
            o.fill(0.0);
            for j in 0..n {
                let (p, v) = (probs[i * n + j], &qkv[j * 3 * c + 2 * c + h * d..][..d]);
                o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
            }
        }
    }
}

/// Register tiles: rows of the scores in C16 zmm (up to 64 keys), output rows in D16 zmm.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Dims;
    use crate::cpu::gemm::pack::avx512::pack_transposed;
    use std::arch::x86_64::*;

    /// Rows of q per score tile: ROWS x C16 accumulators (24 at most).
    const ROWS: usize = 6;
    /// Rows of probabilities per output tile (with D16 <= 2: 24 accumulators).
    const OUT_ROWS: usize = 12;

    /// scores[i, j] = scale · q_i · k_j. kᵀ is staged as [d][W] (W = 16·C16 keys, zero past n)
    /// by the GEMM's transposing pack, so that a step over the head dim loads C16 vectors of
    /// keys and broadcasts one q value per row.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; n <= W = 16·C16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores<const C16: usize, const W: usize>(
        qkv: &[f32],
        h: usize,
        kt: &mut [f32],
        scores: &mut [f32],
        dims: Dims,
    ) {
        let Dims { n, d, scale, .. } = dims;
        let (c, row) = (dims.c(), 3 * dims.c());
        assert!(W == 16 * C16 && n <= W && qkv.len() >= n * row && scores.len() >= n * n && kt.len() >= d * W);
        pack_transposed::<W>(n, d, qkv.as_ptr().add(c + h * d), row, kt.as_mut_ptr());
        let vscale = _mm512_set1_ps(scale);
        let tail = ((1u32 << (n - 16 * (C16 - 1))) - 1) as u16;
        for i0 in (0..n).step_by(ROWS) {
            let rows = ROWS.min(n - i0);
            let mut acc = [[_mm512_setzero_ps(); C16]; ROWS];
            let q = qkv.as_ptr().add(i0 * row + h * d);
            for e in 0..d {
                let mut kv = [_mm512_setzero_ps(); C16];
                for (cc, v) in kv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(kt.as_ptr().add(e * W + 16 * cc));
                }
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    let qv = _mm512_set1_ps(*q.add(r * row + e));
                    for cc in 0..C16 {
                        acc_r[cc] = _mm512_fmadd_ps(qv, kv[cc], acc_r[cc]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = scores.as_mut_ptr().add((i0 + r) * n);
                for (cc, a) in acc_r.iter().enumerate() {
                    let v = _mm512_mul_ps(*a, vscale);
                    let m = if cc + 1 == C16 { tail } else { u16::MAX };
                    _mm512_mask_storeu_ps(dst.add(16 * cc), m, v);
                }
            }
        }
    }

    /// out[i, head h] = Σ_j probs[i, j] v_j for head dims of 16·D16.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; d == 16·D16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_sum<const D16: usize>(probs: &[f32], qkv: &[f32], h: usize, out: &mut [f32], dims: Dims) {
        let Dims { n, d, .. } = dims;
        let c = dims.c();
        assert!(d == 16 * D16 && probs.len() >= n * n && qkv.len() >= n * 3 * c && out.len() >= n * c);
        let v = qkv.as_ptr().add(2 * c + h * d);
        for i0 in (0..n).step_by(OUT_ROWS) {
            let rows = OUT_ROWS.min(n - i0);
            let mut acc = [[_mm512_setzero_ps(); D16]; OUT_ROWS];
            for j in 0..n {
                let mut vv = [_mm512_setzero_ps(); D16];
                for (dd, x) in vv.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(v.add(j * 3 * c + 16 * dd));
                }
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    let p = _mm512_set1_ps(*probs.get_unchecked((i0 + r) * n + j));
                    for dd in 0..D16 {
                        acc_r[dd] = _mm512_fmadd_ps(p, vv[dd], acc_r[dd]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = out.as_mut_ptr().add((i0 + r) * c + h * d);
                for (dd, a) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(16 * dd), *a);
                }
            }
        }
    }

    /// Wider heads (d a multiple of 16 above 32): 16 output columns at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; d % 16 == 0.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_sum_any(probs: &[f32], qkv: &[f32], h: usize, out: &mut [f32], dims: Dims) {
        let Dims { n, d, .. } = dims;
        let c = dims.c();
        assert!(d % 16 == 0 && probs.len() >= n * n && qkv.len() >= n * 3 * c && out.len() >= n * c);
        for d0 in (0..d).step_by(16) {
            let v = qkv.as_ptr().add(2 * c + h * d + d0);
            for i0 in (0..n).step_by(OUT_ROWS) {
                let rows = OUT_ROWS.min(n - i0);
                let mut acc = [_mm512_setzero_ps(); OUT_ROWS];
                for j in 0..n {
                    let vv = _mm512_loadu_ps(v.add(j * 3 * c));
                    for (r, a) in acc.iter_mut().enumerate().take(rows) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*probs.get_unchecked((i0 + r) * n + j)), vv, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate().take(rows) {
                    _mm512_storeu_ps(out.as_mut_ptr().add((i0 + r) * c + h * d + d0), *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    fn rand(shape: &[usize], seed: u64, amp: f32) -> Tensor {
        let mut rng = SplitMix64(seed);
        let len = shape.iter().product();
        Tensor::from_vec((0..len).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * amp).collect(), shape).unwrap()
    }

    /// The composite twin: the ops the autograd model records.
    fn composite(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, mask: Option<&Tensor>, scale: f32) -> Tensor {
        let s = qkv.shape();
        let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
        let parts = qkv.reshape(&[b, n, 3, heads, d]).unwrap().permute(&[2, 0, 3, 1, 4]).unwrap();
        let q = parts.select(0, 0).unwrap().affine(scale as f64, 0.0).unwrap();
        let k = parts.select(0, 1).unwrap();
        let v = parts.select(0, 2).unwrap();
        let mut att = q.matmul(&k.transpose(-2, -1).unwrap()).unwrap();
        if let Some(bias) = bias {
            att = att.add(bias).unwrap();
        }
        if let Some(m) = mask {
            let nw = m.shape()[0];
            let m = m.reshape(&[nw, 1, n, n]).unwrap();
            att = att.reshape(&[b / nw, nw, heads, n, n]).unwrap().add(&m).unwrap().reshape(&[b, heads, n, n]).unwrap();
        }
        let o = att.softmax(-1).unwrap().matmul(&v).unwrap();
        o.permute(&[0, 2, 1, 3]).unwrap().contiguous().reshape(&[b, n, heads * d]).unwrap()
    }

    /// f64 loops straight from the definition.
    fn reference(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, mask: Option<&Tensor>, scale: f32) -> Vec<f64> {
        let s = qkv.shape();
        let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
        let c = heads * d;
        let x = qkv.to_vec::<f32>().unwrap();
        let bias = bias.map(|t| t.to_vec::<f32>().unwrap());
        let mask = mask.map(|t| (t.shape()[0], t.to_vec::<f32>().unwrap()));
        let mut out = vec![0.0f64; b * n * c];
        for w in 0..b {
            for h in 0..heads {
                for i in 0..n {
                    let at = |t: usize, part: usize, e: usize| x[(w * n + t) * 3 * c + part * c + h * d + e] as f64;
                    let mut sc: Vec<f64> = (0..n)
                        .map(|j| {
                            let dot: f64 = (0..d).map(|e| at(i, 0, e) * at(j, 1, e)).sum();
                            let bb = bias.as_ref().map_or(0.0, |bv| bv[(h * n + i) * n + j] as f64);
                            let mm = mask.as_ref().map_or(0.0, |(nw, mv)| mv[((w % nw) * n + i) * n + j] as f64);
                            scale as f64 * dot + bb + mm
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    sc.iter_mut().for_each(|v| *v = (*v - mx).exp());
                    let sum: f64 = sc.iter().sum();
                    for e in 0..d {
                        out[(w * n + i) * c + h * d + e] = (0..n).map(|j| sc[j] / sum * at(j, 2, e)).sum();
                    }
                }
            }
        }
        out
    }

    fn check(b: usize, n: usize, heads: usize, d: usize, bias: bool, nw: Option<usize>, seed: u64) {
        let qkv = rand(&[b, n, 3 * heads * d], seed, 1.5);
        let bias = bias.then(|| rand(&[heads, n, n], seed + 1, 2.0));
        // A Swin-like mask: 0 or -100 (some rows see only part of the window).
        let mask = nw.map(|nw| {
            let m = rand(&[nw, n, n], seed + 2, 1.0);
            let v: Vec<f32> = m.to_vec::<f32>().unwrap().iter().map(|&x| if x > 0.3 { -100.0 } else { 0.0 }).collect();
            Tensor::from_vec(v, &[nw, n, n]).unwrap()
        });
        let scale = (d as f32).powf(-0.5);
        let got = qkv.window_attention(heads, bias.as_ref(), mask.as_ref(), scale).unwrap();
        assert_eq!(got.shape(), [b, n, heads * d]);
        let got = got.to_vec::<f32>().unwrap();
        let twin = composite(&qkv, heads, bias.as_ref(), mask.as_ref(), scale).to_vec::<f32>().unwrap();
        let want = reference(&qkv, heads, bias.as_ref(), mask.as_ref(), scale);
        for (idx, ((&g, &t), &w)) in got.iter().zip(&twin).zip(&want).enumerate() {
            let what = format!("b={b} n={n} heads={heads} d={d} nw={nw:?}: out[{idx}]");
            assert!((g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()), "{what} = {g}, f64 reference {w}");
            assert!((g - t).abs() <= 2e-5 * (1.0 + t.abs()), "{what} = {g}, composite twin {t}");
        }
    }

    /// Swin's windows (49 tokens, head dim 32) with the bias and with the shift mask, and the
    /// edges of the register tiles: token counts around 16, 32, 48 and 64, other head dims
    /// (16, 48, 64 on the tiled path; 5 and 24 on the plain loops), more than 64 tokens.
    #[test]
    fn fused_matches_composite_and_f64() {
        check(8, 49, 4, 32, true, Some(4), 1);
        check(3, 49, 2, 32, true, None, 2);
        check(4, 49, 2, 32, false, Some(2), 3);
        for (n, d) in [(1, 16), (15, 16), (16, 32), (17, 32), (33, 48), (48, 64), (64, 32), (20, 5), (30, 24), (70, 32)]
        {
            check(2, n, 3, d, true, Some(2), n as u64 * 7 + d as u64);
        }
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let qkv = rand(&[2, 49, 3 * 2 * 32], 1, 1.0);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(qkv.window_attention(5, None, None, 1.0)).contains("window_attention"));
        assert!(err(qkv.window_attention(2, Some(&rand(&[3, 49, 49], 2, 1.0)), None, 1.0)).contains("bias"));
        assert!(err(qkv.window_attention(2, None, Some(&rand(&[3, 49, 49], 2, 1.0)), 1.0)).contains("nW"));
        assert!(err(qkv.window_attention(2, None, Some(&rand(&[2, 48, 49], 2, 1.0)), 1.0)).contains("mask"));
        assert!(err(rand(&[49, 192], 1, 1.0).window_attention(2, None, None, 1.0)).contains("[B, n, 3·heads·d]"));
    }
}
