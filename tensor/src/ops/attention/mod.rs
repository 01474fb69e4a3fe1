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
//! Paths: AVX-512 register tiles (`avx512.rs`) for windows of up to 64 tokens and head dims that
//! are a multiple of 16 (Swin: 49 tokens, 32 dims); AVX2 + FMA tiles (`avx2.rs`) for the same
//! windows and head dims that are a multiple of 8 where the CPU has no AVX-512; plain loops
//! otherwise. Rows of up to 64 scores take a softmax on whole vectors (`softmax_flushed`: an f32
//! sum, exp with FMA), the same bits on AVX-512 and AVX2 + FMA and within 1e-6 of the
//! composite's (`ops::softmax`, f64 sums), which the plain path uses.

use crate::cpu::parallel::new_vecs;
use crate::cpu::simd::dispatch;
use crate::ops::softmax::rows as softmax_rows;
use crate::profile;
use crate::{DType, Error, Result, Tensor};

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
        let out = attend(&qkv, bias.as_deref(), mask.as_deref(), b, dims);
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

/// All `b` windows, in parallel over chunks of windows (each writes its own output rows).
fn attend(qkv: &[f32], bias: Option<&[f32]>, mask: Option<&[f32]>, b: usize, dims: Dims) -> Vec<f32> {
    let (n, c) = (dims.n, dims.c());
    // Up to 64 tasks of whole windows (enough to balance the threads), one scratch each.
    let per_task = b.div_ceil(64).max(1);
    let ([out], _) = new_vecs(b * n * c, per_task * n * c, true, |start, [out]| {
        let mut s = Scratch::new(n, dims.d);
        for (i, o) in out.chunks_mut(n * c).enumerate() {
            let w = start / (n * c) + i;
            let all = qkv;
            let qkv = &qkv[w * n * 3 * c..(w + 1) * n * 3 * c];
            let mask = mask.map(|m| &m[(w % dims.nw) * n * n..][..n * n]);
            for h in 0..dims.h {
                // The next head's rows (the next window's first head after the last).
                let (nw, nh) = if h + 1 < dims.h { (w, h + 1) } else { (w + 1, 0) };
                if nw < b {
                    prefetch_head(&all[nw * n * 3 * c..(nw + 1) * n * 3 * c], nh, dims);
                }
                let bias = bias.map(|b| &b[h * n * n..][..n * n]);
                probabilities(qkv, bias, mask, h, &mut s, dims);
                let v = Rows { data: qkv, offset: 2 * c + h * dims.d, stride: 3 * c };
                weighted(&s.probs, false, v, RowsMut { data: o, offset: h * dims.d, stride: c }, dims);
            }
        }
    });
    out
}

/// Asks for head `h`'s q, k and v row pieces of one window (`qkv`, n rows of 3·c) ahead of their
/// use: 3n pieces of d values, 3c apart (6 KiB in stage 3), usually in L3 and too scattered for
/// the hardware prefetchers. Loaded on demand they stalled the kᵀ staging (a quarter of the
/// score products' samples).
fn prefetch_head(qkv: &[f32], h: usize, dims: Dims) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (n, c, d) = (dims.n, dims.c(), dims.d);
        for i in 0..n {
            for part in 0..3 {
                let piece = &qkv[i * 3 * c + part * c + h * d..][..d];
                for line in piece.chunks(16) {
                    // SAFETY: a prefetch of an address inside a live slice; it reads nothing.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8) };
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (qkv, h, dims);
}

/// One task's buffers: one head's kᵀ (padded to 64 keys) and three n x n matrices.
struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    probs: Vec<f32>,
    grad: Vec<f32>,
}

impl Scratch {
    fn new(n: usize, d: usize) -> Scratch {
        let nn = || vec![0.0; n * n];
        Scratch { kt: vec![0.0; d * 64], scores: nn(), probs: nn(), grad: nn() }
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

/// The AVX2 tiles apply (and the CPU has AVX2 + FMA but not AVX-512).
fn use_avx2(dims: Dims) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        dims.n <= 64 && dims.d.is_multiple_of(8) && !use_avx512(dims) && avx2::available()
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
    #[cfg(target_arch = "x86_64")]
    if use_avx2(dims) {
        // SAFETY: the CPU has AVX2 and FMA; the asserts above keep every row in bounds.
        unsafe { return avx2::dots(a, b, scale, kt, out, dims) }
    }
    dots_plain(a, b, scale, out, dims);
}

/// [`dots`] as plain loops: the fallback and the tiles' reference.
fn dots_plain(a: Rows, b: Rows, scale: f32, out: &mut [f32], dims: Dims) {
    let Dims { n, d, .. } = dims;
    for i in 0..n {
        let ai = &a.data[a.offset + i * a.stride..][..d];
        for j in 0..n {
            let bj = &b.data[b.offset + j * b.stride..][..d];
            out[i * n + j] = scale * ai.iter().zip(bj).map(|(x, y)| x * y).sum::<f32>();
        }
    }
}

/// out_i = Σ_j m[i, j] x_j (m is n x n, x and out rows of d values); with `transposed`, m[j, i]
/// (the backward's Pᵀ dO and dSᵀ Q, read in place instead of transposed first: the same
/// products summed in the same order).
fn weighted(m: &[f32], transposed: bool, x: Rows, out: RowsMut, dims: Dims) {
    let Dims { n, d, .. } = dims;
    assert!(m.len() >= n * n && x.offset + (n - 1) * x.stride + d <= x.data.len());
    assert!(out.offset + (n - 1) * out.stride + d <= out.data.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx512(dims) {
        // SAFETY: the CPU has AVX-512F; the asserts above keep every row in bounds.
        unsafe {
            return match (d / 16, transposed) {
                (1, false) => avx512::weighted::<1, false>(m, x, out, dims),
                (1, true) => avx512::weighted::<1, true>(m, x, out, dims),
                (2, false) => avx512::weighted::<2, false>(m, x, out, dims),
                (2, true) => avx512::weighted::<2, true>(m, x, out, dims),
                (_, false) => avx512::weighted_wide::<false>(m, x, out, dims),
                (_, true) => avx512::weighted_wide::<true>(m, x, out, dims),
            };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx2(dims) {
        // SAFETY: the CPU has AVX2 and FMA; the asserts above keep every row in bounds.
        unsafe { return avx2::weighted(m, transposed, x, out, dims) }
    }
    weighted_plain(m, transposed, x, out, dims);
}

/// [`weighted`] as plain loops: the fallback and the tiles' reference.
fn weighted_plain(m: &[f32], transposed: bool, x: Rows, out: RowsMut, dims: Dims) {
    let Dims { n, d, .. } = dims;
    let (m_rs, m_cs) = if transposed { (1, n) } else { (n, 1) };
    for i in 0..n {
        let o = &mut out.data[out.offset + i * out.stride..][..d];
        o.fill(0.0);
        for j in 0..n {
            let (p, xj) = (m[i * m_rs + j * m_cs], &x.data[x.offset + j * x.stride..][..d]);
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
    softmax_flushed(&s.scores, &mut s.probs, dims);
}

/// Row softmax of the n x n scores into `probs`, then probabilities below f32's smallest normal
/// set to zero. Swin's mask adds -100: those probabilities come out near e^-100, below f32's
/// smallest normal. Products with subnormal operands take a microcode assist on Intel cores
/// (about 100 cycles each), which made the weighted sums 10x slower there. They are set to zero,
/// a change below 1.2e-38 of the row's total of 1. The vector paths also never form them in
/// the exps (`exp_f32_normal_or_zero`): a subnormal term cannot change a row sum that holds
/// e^0 = 1, so the sums, and the probabilities, keep their bits.
fn softmax_flushed(scores: &[f32], probs: &mut [f32], dims: Dims) {
    let n = dims.n;
    #[cfg(target_arch = "x86_64")]
    if (1..=64).contains(&n) {
        // SAFETY: the CPU has the ISA checked; 1 <= n <= 64; the functions check the lengths.
        unsafe {
            if use_avx512(dims) {
                return avx512::softmax_rows(scores, probs, n);
            }
            if avx2::available() {
                return avx2::softmax_rows(scores, probs, n);
            }
        }
    }
    softmax_flushed_plain(scores, probs, n);
}

/// [`softmax_flushed`] with `ops::softmax`'s rows (the composite's bits before the flush).
fn softmax_flushed_plain(scores: &[f32], probs: &mut [f32], n: usize) {
    softmax_rows(&scores[..n * n], &mut probs[..n * n], n, false);
    probs[..n * n].iter_mut().for_each(|p| *p = if *p < f32::MIN_POSITIVE { 0.0 } else { *p });
}

/// scores += bias + mask (each n x n), in the composite's order (bias first, then the mask).
/// On the CPU's widest vectors (`dispatch!`): this module is compiled for baseline x86-64.
fn add_bias_mask(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>) {
    #[inline(always)]
    fn body(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>) {
        match (bias, mask) {
            (Some(b), Some(m)) => scores.iter_mut().zip(b).zip(m).for_each(|((s, b), m)| *s = (*s + b) + m),
            (Some(t), None) | (None, Some(t)) => scores.iter_mut().zip(t).for_each(|(s, t)| *s += t),
            (None, None) => {}
        }
    }
    dispatch!(body(scores: &mut [f32], bias: Option<&[f32]>, mask: Option<&[f32]>))
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
        // Fixed chunks of windows (no chunks at all when there is nothing to compute).
        let per_chunk = b.div_ceil(BACKWARD_CHUNKS);
        let ([dqkv], partial) = new_vecs(b * n * 3 * c, per_chunk * n * 3 * c, true, |start, [dq]| {
            let chunk = start / (per_chunk * n * 3 * c);
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
        });
        let mut dbias = vec![0.0f32; heads * n * n];
        for p in &partial {
            dbias.iter_mut().zip(p).for_each(|(a, v)| *a += v);
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
    weighted(&s.probs, true, go, RowsMut { data: dqkv, offset: 2 * c + h * d, stride: 3 * c }, dims);
    // dP = dO Vᵀ, then dS = P ∘ (dP − rowsum(P ∘ dP)) in place, dbias += dS, and dS scaled.
    dots(go, part(2), 1.0, &mut s.kt, &mut s.grad, dims);
    score_grads(&s.probs, &mut s.grad, dbias, dims.scale, n);
    // dQ = (scale dS) K, dK = (scale dS)ᵀ Q.
    weighted(&s.grad, false, part(1), RowsMut { data: dqkv, offset: h * d, stride: 3 * c }, dims);
    weighted(&s.grad, true, part(0), RowsMut { data: dqkv, offset: c + h * d, stride: 3 * c }, dims);
}

/// Rows of [`score_grads`] whose dot products run side by side.
const DOT_ROWS: usize = 8;

/// The scores' gradient from the probabilities' (`g`, n x n, in place): for each row,
/// dS = P ∘ (dP − Σ_j P dP); `dbias += dS`; then `g = scale · dS`. Each row's sum is the plain
/// sequential f32 sum, but DOT_ROWS rows run side by side (one chain of 49 dependent adds per
/// row kept the core waiting); the elementwise steps are one pass on the CPU's widest vectors
/// (this module is compiled for baseline x86-64).
fn score_grads(p: &[f32], g: &mut [f32], dbias: &mut [f32], scale: f32, n: usize) {
    #[inline(always)]
    fn body(p: &[f32], g: &mut [f32], dbias: &mut [f32], scale: f32, n: usize) {
        let (p, g, dbias) = (&p[..n * n], &mut g[..n * n], &mut dbias[..n * n]);
        for i0 in (0..n).step_by(DOT_ROWS) {
            let rows = DOT_ROWS.min(n - i0);
            let dot = match rows {
                DOT_ROWS => row_dots::<DOT_ROWS>(p, g, n, i0),
                _ => std::array::from_fn(|r| if r < rows { row_dots::<1>(p, g, n, i0 + r)[0] } else { 0.0 }),
            };
            for (r, &dot) in dot.iter().enumerate().take(rows) {
                let at = (i0 + r) * n..(i0 + r + 1) * n;
                for ((g, &p), b) in g[at.clone()].iter_mut().zip(&p[at.clone()]).zip(&mut dbias[at]) {
                    let ds = p * (*g - dot);
                    *b += ds;
                    *g = ds * scale;
                }
            }
        }
    }
    /// Σ_j p[i, j] g[i, j] for rows i0..i0 + R, each a sequential sum from -0.0 (std's f32
    /// sum), the R sums interleaved.
    #[inline(always)]
    fn row_dots<const R: usize>(p: &[f32], g: &[f32], n: usize, i0: usize) -> [f32; R] {
        assert!((i0 + R) * n <= p.len().min(g.len()));
        let at: [usize; R] = std::array::from_fn(|r| (i0 + r) * n);
        let mut dot = [-0.0f32; R];
        for j in 0..n {
            for r in 0..R {
                // SAFETY: at[r] + j < (i0 + R) * n, within both (asserted above).
                unsafe { dot[r] += p.get_unchecked(at[r] + j) * g.get_unchecked(at[r] + j) };
            }
        }
        dot
    }
    dispatch!(body(p: &[f32], g: &mut [f32], dbias: &mut [f32], scale: f32, n: usize))
}

/// One small product, out[i][c] = scale · Σ_e a[i·a_rs + e·a_cs] · b[e·b_rs + c] for i < m,
/// c < cols. On the AVX2 tiles (`avx2::product`) each b row may be read up to `cols` rounded up
/// to 8 (kᵀ is padded, v's head dims are a multiple of 8). Also the decoder's cross-attention
/// products (`ops::cross_attention`, whose backward also runs them in plain loops).
#[derive(Clone, Copy)]
pub(crate) struct Product {
    pub m: usize,
    pub cols: usize,
    pub depth: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub out: *mut f32,
    pub out_rs: usize,
    pub scale: f32,
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
