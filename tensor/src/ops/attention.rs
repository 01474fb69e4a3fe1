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
        let (b, n, d, nw) = check(self, heads, bias, mask)?;
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

/// The forward's argument checks: (windows, tokens, head dim, windows per image).
fn check(
    qkv: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    mask: Option<&Tensor>,
) -> Result<(usize, usize, usize, usize)> {
    let op = "window_attention";
    let s = qkv.shape();
    if qkv.rank() != 3 || heads == 0 || !s[2].is_multiple_of(3 * heads) {
        let expected = format!("[B, n, 3·heads·d] with heads = {heads}");
        return Err(Error::BadShape { op, shape: s.to_vec(), expected });
    }
    if qkv.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType { op, dtype: qkv.dtype() });
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
    Ok((b, n, d, nw))
}

/// All windows, in parallel over windows (each writes its own output rows).
fn attend(qkv: &[f32], bias: Option<&[f32]>, mask: Option<&[f32]>, out: &mut [f32], dims: Dims) {
    let (n, c) = (dims.n, dims.c());
    out.par_chunks_mut(n * c).enumerate().for_each_init(
        || Scratch::new(n, dims.d),
        |s, (w, o)| {
            let qkv = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
            let mask = mask.map(|m| &m[(w % dims.nw) * n * n..][..n * n]);
            for h in 0..dims.h {
                let bias = bias.map(|b| &b[h * n * n..][..n * n]);
                probabilities(qkv, bias, mask, h, s, dims);
                let v = Rows { data: qkv, offset: 2 * c + h * dims.d, stride: 3 * c };
                weighted(&s.probs, v, RowsMut { data: o, offset: h * dims.d, stride: c }, dims);
            }
        },
    );
}

/// Per-thread buffers: one head's kᵀ (padded to 64 keys) and four n x n matrices.
struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    probs: Vec<f32>,
    grad: Vec<f32>,
    transposed: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, d: usize) -> Scratch {
        let nn = || vec![0.0; n * n];
        Scratch { kt: vec![0.0; d * 64], scores: nn(), probs: nn(), grad: nn(), transposed: nn() }
    }
}

/// n rows of d values, row i at `data[offset + i * stride..]`: one head's q, k, v (or their
/// gradients) inside a token-major buffer.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
}

struct RowsMut<'a> {
    data: &'a mut [f32],
    offset: usize,
    stride: usize,
}

/// The tiled AVX-512 path applies (and the CPU has it).
fn use_avx512(dims: Dims) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        dims.n <= 64 && dims.d.is_multiple_of(16) && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = dims;
        false
    }
}

/// out[i, j] = scale · a_i · b_j (n x n), for rows of d values.
fn dots(a: Rows, b: Rows, scale: f32, kt: &mut [f32], out: &mut [f32], dims: Dims) {
    let Dims { n, d, .. } = dims;
    assert!(a.offset + (n - 1) * a.stride + d <= a.data.len() && b.offset + (n - 1) * b.stride + d <= b.data.len());
    assert!(out.len() >= n * n && kt.len() >= d * 64);
    #[cfg(target_arch = "x86_64")]
    if use_avx512(dims) {
        // SAFETY: the CPU has AVX-512F; the asserts above keep every row in bounds.
        unsafe {
            return match n.div_ceil(16) {
                1 => avx512::dots::<1, 16>(a, b, scale, kt, out, dims),
                2 => avx512::dots::<2, 32>(a, b, scale, kt, out, dims),
                3 => avx512::dots::<3, 48>(a, b, scale, kt, out, dims),
                _ => avx512::dots::<4, 64>(a, b, scale, kt, out, dims),
            };
        }
    }
    for i in 0..n {
        let ai = &a.data[a.offset + i * a.stride..][..d];
        for j in 0..n {
            let bj = &b.data[b.offset + j * b.stride..][..d];
            out[i * n + j] = scale * ai.iter().zip(bj).map(|(x, y)| x * y).sum::<f32>();
        }
    }
}

/// out_i = Σ_j m[i, j] x_j (m is n x n, x and out rows of d values).
fn weighted(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
    let Dims { n, d, .. } = dims;
    assert!(m.len() >= n * n && x.offset + (n - 1) * x.stride + d <= x.data.len());
    assert!(out.offset + (n - 1) * out.stride + d <= out.data.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx512(dims) {
        // SAFETY: the CPU has AVX-512F; the asserts above keep every row in bounds.
        unsafe {
            return match d / 16 {
                1 => avx512::weighted::<1>(m, x, out, dims),
                2 => avx512::weighted::<2>(m, x, out, dims),
                _ => avx512::weighted_wide(m, x, out, dims),
            };
        }
    }
    for i in 0..n {
        let o = &mut out.data[out.offset + i * out.stride..][..d];
        o.fill(0.0);
        for j in 0..n {
            let (p, xj) = (m[i * n + j], &x.data[x.offset + j * x.stride..][..d]);
            o.iter_mut().zip(xj).for_each(|(o, v)| *o += p * v);
        }
    }
}

/// The probabilities of one window and head into `s.probs`: softmax(scale · q kᵀ + bias + mask).
fn probabilities(qkv: &[f32], bias: Option<&[f32]>, mask: Option<&[f32]>, h: usize, s: &mut Scratch, dims: Dims) {
    let (c, d) = (dims.c(), dims.d);
    let q = Rows { data: qkv, offset: h * d, stride: 3 * c };
    let k = Rows { data: qkv, offset: c + h * d, stride: 3 * c };
    dots(q, k, dims.scale, &mut s.kt, &mut s.scores, dims);
    add_bias_mask(&mut s.scores, bias, mask);
    softmax_rows(&s.scores, &mut s.probs, dims.n, false);
    // Swin's mask adds -100: those probabilities come out near e^-100, below f32's smallest
    // normal. Products with subnormal operands take a microcode assist on Intel cores (about
    // 100 cycles each), which made the weighted sums 10x slower there. They are set to zero,
    // a change below 1.2e-38 of the row's total of 1.
    s.probs.iter_mut().for_each(|p| *p = if *p < f32::MIN_POSITIVE { 0.0 } else { *p });
}

/// scores += bias + mask (each n x n), in the composite's order (bias first, then the mask).
fn add_bias_mask(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>) {
    match (bias, mask) {
        (Some(b), Some(m)) => scores.iter_mut().zip(b).zip(m).for_each(|((s, b), m)| *s = (*s + b) + m),
        (Some(t), None) | (None, Some(t)) => scores.iter_mut().zip(t).for_each(|(s, t)| *s += t),
        (None, None) => {}
    }
}

/// `dst = srcᵀ` for n x n.
fn transpose_into(src: &[f32], dst: &mut [f32], n: usize) {
    for i in 0..n {
        for j in 0..n {
            dst[j * n + i] = src[i * n + j];
        }
    }
}

/// Windows per gradient chunk: the bias gradient is summed per chunk, then over chunks in
/// order, so its bits do not depend on the thread count or on scheduling.
const BACKWARD_CHUNKS: usize = 32;

impl Tensor {
    /// The gradients of [`Tensor::window_attention`] (same arguments) for `grad_out`, dL/d(out)
    /// `[B, n, H·d]`: (dL/d(qkv) `[B, n, 3·H·d]`, dL/d(bias) `[H, n, n]`). The mask gets none.
    /// The probabilities are recomputed per window and head, nothing is saved by the forward.
    ///
    /// With P the probabilities, dO the output gradient: dV = Pᵀ dO, dP = dO Vᵀ,
    /// dS = P ∘ (dP − rowsum(P ∘ dP)), dBias = Σ_windows dS, dQ = scale · dS K, dK = scale · dSᵀ Q.
    pub fn window_attention_backward(
        &self,
        heads: usize,
        bias: Option<&Tensor>,
        mask: Option<&Tensor>,
        scale: f32,
        grad_out: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, n, d, nw) = check(self, heads, bias, mask)?;
        let s = self.shape().to_vec();
        if grad_out.shape() != [b, n, heads * d] {
            return Err(Error::ShapeMismatch {
                op: "window_attention_backward",
                lhs: s,
                rhs: grad_out.shape().to_vec(),
            });
        }
        if grad_out.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op: "window_attention_backward", dtype: grad_out.dtype() });
        }
        let dims = Dims { n, h: heads, d, nw, scale };
        let flops = 10.0 * (b * heads * n * n * d) as f64;
        let _prof = profile::op(profile::Kind::Attention, flops, profile::f32_traffic(b * n * 7 * heads * d, 1));
        let qkv = self.f32_slice()?;
        let bias_v = bias.map(|t| t.f32_slice()).transpose()?;
        let mask_v = mask.map(|t| t.f32_slice()).transpose()?;
        let go = grad_out.f32_slice()?;
        let c = heads * d;
        let mut dqkv = vec![0.0f32; b * n * 3 * c];
        let mut dbias = vec![0.0f32; heads * n * n];
        if b > 0 && n > 0 && d > 0 {
            let per_chunk = b.div_ceil(BACKWARD_CHUNKS);
            let partial: Vec<Vec<f32>> = dqkv
                .par_chunks_mut(per_chunk * n * 3 * c)
                .enumerate()
                .map(|(chunk, dq)| {
                    let mut s = Scratch::new(n, d);
                    let mut acc = vec![0.0f32; heads * n * n];
                    for (i, dq) in dq.chunks_mut(n * 3 * c).enumerate() {
                        let w = chunk * per_chunk + i;
                        let (x, g) = (&qkv[w * n * 3 * c..][..n * 3 * c], &go[w * n * c..][..n * c]);
                        let mask = mask_v.as_deref().map(|m| &m[(w % nw) * n * n..][..n * n]);
                        for h in 0..heads {
                            let bias = bias_v.as_deref().map(|t| &t[h * n * n..][..n * n]);
                            head_backward(x, g, bias, mask, h, dq, &mut acc[h * n * n..][..n * n], &mut s, dims);
                        }
                    }
                    acc
                })
                .collect();
            for p in &partial {
                dbias.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
        }
        Ok((Tensor::from_vec(dqkv, &s)?, Tensor::from_vec(dbias, &[heads, n, n])?))
    }
}

/// One window and head of the backward: writes the head's columns of dq, dk, dv into `dqkv`
/// and adds dS into `dbias`.
#[allow(clippy::too_many_arguments)]
fn head_backward(
    qkv: &[f32],
    grad_out: &[f32],
    bias: Option<&[f32]>,
    mask: Option<&[f32]>,
    h: usize,
    dqkv: &mut [f32],
    dbias: &mut [f32],
    s: &mut Scratch,
    dims: Dims,
) {
    let (n, d, c) = (dims.n, dims.d, dims.c());
    probabilities(qkv, bias, mask, h, s, dims);
    let part = |p: usize| Rows { data: qkv, offset: p * c + h * d, stride: 3 * c };
    let go = Rows { data: grad_out, offset: h * d, stride: c };
    // dV = Pᵀ dO.
    transpose_into(&s.probs, &mut s.transposed, n);
    weighted(&s.transposed, go, RowsMut { data: dqkv, offset: 2 * c + h * d, stride: 3 * c }, dims);
    // dP = dO Vᵀ, then dS = P ∘ (dP − rowsum(P ∘ dP)) in place; dbias += dS.
    dots(go, part(2), 1.0, &mut s.kt, &mut s.grad, dims);
    for i in 0..n {
        let (p, g) = (&s.probs[i * n..][..n], &mut s.grad[i * n..][..n]);
        let dot: f32 = p.iter().zip(g.iter()).map(|(p, g)| p * g).sum();
        g.iter_mut().zip(p).for_each(|(g, p)| *g = p * (*g - dot));
    }
    dbias.iter_mut().zip(&s.grad).for_each(|(a, g)| *a += g);
    // The scale of the scores, once: dQ = (scale dS) K, dK = (scale dS)ᵀ Q.
    s.grad.iter_mut().for_each(|g| *g *= dims.scale);
    weighted(&s.grad, part(1), RowsMut { data: dqkv, offset: h * d, stride: 3 * c }, dims);
    transpose_into(&s.grad, &mut s.transposed, n);
    weighted(&s.transposed, part(0), RowsMut { data: dqkv, offset: c + h * d, stride: 3 * c }, dims);
}

/// Register tiles: rows of an n x n result in C16 zmm (up to 64 columns), rows of d values in
/// D16 zmm.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Dims, Rows, RowsMut};
    use crate::cpu::gemm::pack::avx512::pack_transposed;
    use std::arch::x86_64::*;

    /// Rows per tile of [`dots`]: ROWS x C16 accumulators (24 at most).
    const ROWS: usize = 6;
    /// Rows per tile of [`weighted`] (with D16 <= 2: 24 accumulators).
    const OUT_ROWS: usize = 12;

    /// out[i, j] = scale · a_i · b_j. bᵀ is staged as [d][W] (W = 16·C16, zero past n) by the
    /// GEMM's transposing pack, so that a step over d loads C16 vectors of b and broadcasts one
    /// value of a per row.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; n <= W = 16·C16; rows in bounds (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots<const C16: usize, const W: usize>(
        a: Rows,
        b: Rows,
        scale: f32,
        kt: &mut [f32],
        out: &mut [f32],
        dims: Dims,
    ) {
        let Dims { n, d, .. } = dims;
        assert!(W == 16 * C16 && n <= W && out.len() >= n * n && kt.len() >= d * W);
        pack_transposed::<W>(n, d, b.data.as_ptr().add(b.offset), b.stride, kt.as_mut_ptr());
        let vscale = _mm512_set1_ps(scale);
        let tail = ((1u32 << (n - 16 * (C16 - 1))) - 1) as u16;
        for i0 in (0..n).step_by(ROWS) {
            let rows = ROWS.min(n - i0);
            let mut acc = [[_mm512_setzero_ps(); C16]; ROWS];
            let ap = a.data.as_ptr().add(a.offset + i0 * a.stride);
            for e in 0..d {
                let mut kv = [_mm512_setzero_ps(); C16];
                for (cc, v) in kv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(kt.as_ptr().add(e * W + 16 * cc));
                }
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    let av = _mm512_set1_ps(*ap.add(r * a.stride + e));
                    for (acc_rc, k) in acc_r.iter_mut().zip(&kv) {
                        *acc_rc = _mm512_fmadd_ps(av, *k, *acc_rc);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = out.as_mut_ptr().add((i0 + r) * n);
                for (cc, v) in acc_r.iter().enumerate() {
                    let m = if cc + 1 == C16 { tail } else { u16::MAX };
                    _mm512_mask_storeu_ps(dst.add(16 * cc), m, _mm512_mul_ps(*v, vscale));
                }
            }
        }
    }

    /// out_i = Σ_j m[i, j] x_j for d = 16·D16.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; d == 16·D16; rows in bounds (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted<const D16: usize>(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
        let n = dims.n;
        assert!(dims.d == 16 * D16 && m.len() >= n * n);
        let xp = x.data.as_ptr().add(x.offset);
        for i0 in (0..n).step_by(OUT_ROWS) {
            let rows = OUT_ROWS.min(n - i0);
            let mut acc = [[_mm512_setzero_ps(); D16]; OUT_ROWS];
            for j in 0..n {
                let mut xv = [_mm512_setzero_ps(); D16];
                for (dd, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(xp.add(j * x.stride + 16 * dd));
                }
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    let p = _mm512_set1_ps(*m.get_unchecked((i0 + r) * n + j));
                    for (a, v) in acc_r.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(p, *v, *a);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let dst = out.data.as_mut_ptr().add(out.offset + (i0 + r) * out.stride);
                for (dd, a) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(16 * dd), *a);
                }
            }
        }
    }

    /// Wider rows (d a multiple of 16 above 32): 16 columns at a time.
    ///
    /// # Safety
    /// As for [`weighted`], with d % 16 == 0.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_wide(m: &[f32], x: Rows, out: RowsMut, dims: Dims) {
        let (n, d) = (dims.n, dims.d);
        for d0 in (0..d).step_by(16) {
            let xs = Rows { offset: x.offset + d0, ..x };
            let outs = RowsMut { data: &mut *out.data, offset: out.offset + d0, stride: out.stride };
            weighted::<1>(m, xs, outs, Dims { d: 16, ..dims });
        }
        let _ = n;
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

    /// f64 gradients of Σ out ∘ g by the textbook rules, for (qkv, bias).
    fn reference_backward(
        qkv: &Tensor,
        heads: usize,
        bias: Option<&Tensor>,
        mask: Option<&Tensor>,
        scale: f32,
        g: &Tensor,
    ) -> (Vec<f64>, Vec<f64>) {
        let s = qkv.shape();
        let (b, n, d) = (s[0], s[1], s[2] / (3 * heads));
        let c = heads * d;
        let x: Vec<f64> = qkv.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        let g: Vec<f64> = g.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        let bias = bias.map(|t| t.to_vec::<f32>().unwrap());
        let mask = mask.map(|t| (t.shape()[0], t.to_vec::<f32>().unwrap()));
        let (mut dx, mut db) = (vec![0.0f64; x.len()], vec![0.0f64; heads * n * n]);
        let sc = scale as f64;
        for w in 0..b {
            for h in 0..heads {
                let at = |t: usize, part: usize| (w * n + t) * 3 * c + part * c + h * d;
                let dot = |i: usize, pi: usize, j: usize, pj: usize| {
                    (0..d).map(|e| x[at(i, pi) + e] * x[at(j, pj) + e]).sum::<f64>()
                };
                let mut p = vec![0.0f64; n * n];
                for i in 0..n {
                    for j in 0..n {
                        let bb = bias.as_ref().map_or(0.0, |bv| bv[(h * n + i) * n + j] as f64);
                        let mm = mask.as_ref().map_or(0.0, |(nw, mv)| mv[((w % nw) * n + i) * n + j] as f64);
                        p[i * n + j] = sc * dot(i, 0, j, 1) + bb + mm;
                    }
                    let mx = p[i * n..(i + 1) * n].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = p[i * n..(i + 1) * n].iter().map(|v| (v - mx).exp()).sum();
                    p[i * n..(i + 1) * n].iter_mut().for_each(|v| *v = (*v - mx).exp() / sum);
                }
                let go = |i: usize, e: usize| g[(w * n + i) * c + h * d + e];
                for i in 0..n {
                    // dP[i, j] = dO_i · v_j; dS = P (dP - Σ P dP).
                    let dp: Vec<f64> = (0..n).map(|j| (0..d).map(|e| go(i, e) * x[at(j, 2) + e]).sum()).collect();
                    let inner: f64 = (0..n).map(|j| p[i * n + j] * dp[j]).sum();
                    for j in 0..n {
                        let ds = p[i * n + j] * (dp[j] - inner);
                        db[(h * n + i) * n + j] += ds;
                        for e in 0..d {
                            dx[at(i, 0) + e] += sc * ds * x[at(j, 1) + e];
                            dx[at(j, 1) + e] += sc * ds * x[at(i, 0) + e];
                            dx[at(j, 2) + e] += p[i * n + j] * go(i, e);
                        }
                    }
                }
            }
        }
        (dx, db)
    }

    /// The f64 rules above against central differences of the f64 forward: checks the formulas.
    #[test]
    fn reference_backward_matches_finite_differences() {
        let (b, n, heads, d) = (2, 5, 2, 3);
        let qkv = rand(&[b, n, 3 * heads * d], 11, 1.0);
        let bias = rand(&[heads, n, n], 12, 1.0);
        let mask = rand(&[2, n, n], 13, 1.0);
        let g = rand(&[b, n, heads * d], 14, 1.0);
        let scale = 0.7;
        let (dx, db) = reference_backward(&qkv, heads, Some(&bias), Some(&mask), scale, &g);
        let gv: Vec<f64> = g.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        let loss = |x: &Tensor, bb: &Tensor| -> f64 {
            reference(x, heads, Some(bb), Some(&mask), scale).iter().zip(&gv).map(|(o, g)| o * g).sum()
        };
        let nudge = |t: &Tensor, i: usize, by: f32| {
            let mut v = t.to_vec::<f32>().unwrap();
            v[i] += by;
            Tensor::from_vec(v, t.shape()).unwrap()
        };
        let h = 1e-2f32;
        for i in (0..qkv.elem_count()).step_by(7) {
            let fd = (loss(&nudge(&qkv, i, h), &bias) - loss(&nudge(&qkv, i, -h), &bias)) / (2.0 * h as f64);
            assert!((fd - dx[i]).abs() < 2e-4 * (1.0 + fd.abs()), "dqkv[{i}]: rule {}, differences {fd}", dx[i]);
        }
        for i in (0..bias.elem_count()).step_by(5) {
            let fd = (loss(&qkv, &nudge(&bias, i, h)) - loss(&qkv, &nudge(&bias, i, -h))) / (2.0 * h as f64);
            assert!((fd - db[i]).abs() < 2e-4 * (1.0 + fd.abs()), "dbias[{i}]: rule {}, differences {fd}", db[i]);
        }
    }

    fn check_backward(b: usize, n: usize, heads: usize, d: usize, nw: Option<usize>, seed: u64) {
        let qkv = rand(&[b, n, 3 * heads * d], seed, 1.5);
        let bias = rand(&[heads, n, n], seed + 1, 2.0);
        let mask = nw.map(|nw| rand(&[nw, n, n], seed + 2, 3.0));
        let g = rand(&[b, n, heads * d], seed + 3, 1.0);
        let scale = (d as f32).powf(-0.5);
        let (dx, db) = qkv.window_attention_backward(heads, Some(&bias), mask.as_ref(), scale, &g).unwrap();
        assert_eq!((dx.shape(), db.shape()), (qkv.shape(), &[heads, n, n][..]));
        let (want_dx, want_db) = reference_backward(&qkv, heads, Some(&bias), mask.as_ref(), scale, &g);
        let scale_of = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (name, got, want) in [("dqkv", dx, want_dx), ("dbias", db, want_db)] {
            let tol = 1e-5 * (1.0 + scale_of(&want)) * (n as f64).sqrt();
            for (i, (&g, &w)) in got.to_vec::<f32>().unwrap().iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() <= tol, "b={b} n={n} heads={heads} d={d}: {name}[{i}] = {g}, want {w}");
            }
        }
    }

    /// The fused backward against the f64 rules: Swin's windows, tile edges, the plain loops, and
    /// more windows than gradient chunks.
    #[test]
    fn fused_backward_matches_f64() {
        check_backward(4, 49, 2, 32, Some(2), 21);
        check_backward(3, 49, 3, 32, None, 22);
        check_backward(70, 16, 1, 16, Some(5), 23);
        for (n, d) in [(1, 16), (17, 48), (33, 64), (64, 16), (20, 5), (70, 32)] {
            check_backward(2, n, 2, d, Some(1), n as u64 + d as u64);
        }
    }

    /// Same inputs, same bits, whatever the thread count.
    #[test]
    fn backward_is_deterministic_across_thread_counts() {
        let qkv = rand(&[96, 49, 3 * 2 * 32], 31, 1.0);
        let bias = rand(&[2, 49, 49], 32, 1.0);
        let g = rand(&[96, 49, 64], 33, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| qkv.window_attention_backward(2, Some(&bias), None, 0.2, &g).unwrap())
        };
        let ((a1, b1), (a3, b3)) = (run(1), run(3));
        assert_eq!(a1.to_vec::<f32>().unwrap(), a3.to_vec::<f32>().unwrap());
        assert_eq!(b1.to_vec::<f32>().unwrap(), b3.to_vec::<f32>().unwrap());
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
        let g = rand(&[2, 49, 63], 3, 1.0);
        let e = qkv.window_attention_backward(2, None, None, 1.0, &g).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("window_attention_backward") && e.contains("63"), "{e}");
    }
}
