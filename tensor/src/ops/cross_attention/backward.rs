//! The backward of [`Tensor::attention`], `o = softmax(q kᵀ) v`, one pass per batch and head
//! with the probabilities recomputed (the forward keeps nothing but its output):
//!
//! P = softmax(q kᵀ), dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = dS k,
//! dK = dSᵀ q.
//!
//! The composite twin `q.matmul(kᵀ).softmax(-1).matmul(v)` records three ops whose backward
//! runs six batched products of thousands of tiny heads and keeps the [B, H, Nq, Nk]
//! probabilities alive from the forward; here each head's P and dS ([18, 3136] in the decoder:
//! 220 KiB each) stay in L2 and every product runs on the window attention's register tiles.
//! The same two layouts as the forward: many keys store P query-major and the softmax runs
//! along rows; few keys (the image attending to 18 tokens) store it key-major, the softmax and
//! the row sums of dS vectorised along the queries.
//!
//! `Var::attention` records this op: the decoder trains on it.

use super::{check_operands, f32_data, f32_rows, head_offset, Head, FEW_KEYS};
use crate::cpu::simd::dispatch;
use crate::ops::attention::Product;
use crate::ops::softmax::{rows as softmax_rows, softmax_column_block, COLUMN_BLOCK};
use crate::profile;
use crate::{DType, Result, Tensor};
use rayon::prelude::*;

/// One product of a head ([`Product`], scale 1): on the AVX2 tiles with `tiles`, which read b
/// rows up to `cols` rounded up to 8 (staged operands are padded; q, k, v and dO rows are a
/// multiple of 8 wide there), else in plain loops.
///
/// # Safety
/// Every element addressed as described at [`Product`] is readable (a, b) or writable (out);
/// with `tiles`, the CPU has AVX2 and FMA.
unsafe fn product(p: Product, tiles: bool) {
    #[cfg(target_arch = "x86_64")]
    if tiles {
        return crate::ops::attention::avx2::product(p);
    }
    let _ = tiles;
    for i in 0..p.m {
        let out = std::slice::from_raw_parts_mut(p.out.add(i * p.out_rs), p.cols);
        out.fill(0.0);
        for e in 0..p.depth {
            let a = *p.a.add(i * p.a_rs + e * p.a_cs);
            let b = std::slice::from_raw_parts(p.b.add(e * p.b_rs), p.cols);
            out.iter_mut().zip(b).for_each(|(o, &b)| *o += a * b);
        }
        out.iter_mut().for_each(|o| *o *= p.scale);
    }
}

/// `dst[c * dst_rs + j] = src[j * src_rs + c]` for j < rows, c < cols (columns past `rows` in dst
/// are left as they are: zero padding in fresh scratch).
fn transpose(src: &[f32], src_rs: usize, rows: usize, cols: usize, dst: &mut [f32], dst_rs: usize, tiles: bool) {
    #[cfg(target_arch = "x86_64")]
    if tiles {
        // SAFETY: tiles are only chosen where the CPU has AVX2 (`use_avx2_tiles`).
        return unsafe { super::avx2_tiles::transpose_into(src, src_rs, rows, cols, dst, dst_rs) };
    }
    let _ = tiles;
    super::transpose_rows(src, src_rs, rows, cols, dst, dst_rs)
}

/// The softmax over keys of key-major scores `s` ([n keys, rows], rows `rows` apart) into `p`,
/// a block of queries at a time (`softmax_column_block`, inlined here for the widest vectors).
fn softmax_columns(s: &[f32], p: &mut [f32], n: usize, rows: usize) {
    #[inline(always)]
    fn body(s: &[f32], p: &mut [f32], n: usize, rows: usize) {
        for c0 in (0..rows).step_by(COLUMN_BLOCK) {
            softmax_column_block(&s[c0..], &mut p[c0..], n, COLUMN_BLOCK.min(rows - c0), rows, false);
        }
    }
    dispatch!(body(s: &[f32], p: &mut [f32], n: usize, rows: usize))
}

/// dS = P ∘ (dP − rowsum(P ∘ dP)) in place of dP, P and dP [rows, n] query-major (row sums
/// in f64 over eight interleaved lanes, as the composite's f64 sum, in vectors).
fn score_grads_rows(p: &[f32], dp: &mut [f32], n: usize) {
    #[inline(always)]
    fn body(p: &[f32], dp: &mut [f32], n: usize) {
        for (pr, dr) in p.chunks(n).zip(dp.chunks_mut(n)) {
            let mut lanes = [0.0f64; 8];
            let (pc, prest) = pr.as_chunks::<8>();
            let (dc, drest) = dr.as_chunks::<8>();
            for (a, b) in pc.iter().zip(dc) {
                for l in 0..8 {
                    lanes[l] += a[l] as f64 * b[l] as f64;
                }
            }
            let tail: f64 = prest.iter().zip(drest).map(|(&a, &b)| a as f64 * b as f64).sum();
            let dot = (lanes.iter().sum::<f64>() + tail) as f32;
            dr.iter_mut().zip(pr).for_each(|(d, &p)| *d = p * (*d - dot));
        }
    }
    dispatch!(body(p: &[f32], dp: &mut [f32], n: usize))
}

/// The same with P and dP key-major ([n keys, rows] rows `rows` apart): the sums run down the
/// columns, a block of queries at a time.
fn score_grads_columns(p: &[f32], dp: &mut [f32], n: usize, rows: usize) {
    #[inline(always)]
    fn body(p: &[f32], dp: &mut [f32], n: usize, rows: usize) {
        let mut dot = [0.0f64; COLUMN_BLOCK];
        for c0 in (0..rows).step_by(COLUMN_BLOCK) {
            let w = COLUMN_BLOCK.min(rows - c0);
            let dot = &mut dot[..w];
            dot.fill(0.0);
            for j in 0..n {
                let (pr, dr) = (&p[j * rows + c0..][..w], &dp[j * rows + c0..][..w]);
                dot.iter_mut().zip(pr.iter().zip(dr)).for_each(|(s, (&a, &b))| *s += a as f64 * b as f64);
            }
            for j in 0..n {
                let (pr, dr) = (&p[j * rows + c0..][..w], &mut dp[j * rows + c0..][..w]);
                for ((d, &p), &s) in dr.iter_mut().zip(pr).zip(dot.iter()) {
                    *d = p * (*d - s as f32);
                }
            }
        }
    }
    dispatch!(body(p: &[f32], dp: &mut [f32], n: usize, rows: usize))
}

/// An output shared by the heads, each writing its own range.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// The range is in bounds and written by one thread only.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// Scratch of one head: two staged operands and two [nq, nk] matrices.
struct Scratch {
    stage_a: Vec<f32>,
    stage_b: Vec<f32>,
    probs: Vec<f32>,
    grads: Vec<f32>,
}

/// One head's gradients into dq [nq, d], dk [nk, d], dv [nk, dv] (contiguous rows). `g` is dO
/// [nq, dv] with rows `gs` apart.
#[allow(clippy::too_many_arguments)]
fn head_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    gs: usize,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    s: Head,
    tiles: bool,
    w: &mut Scratch,
) {
    let Head { nq, nk, d, dv: dvw, qs, ks, vs } = s;
    let extent = |rows: usize, stride: usize, width: usize| (rows - 1) * stride + width;
    assert!(q.len() >= extent(nq, qs, d) && k.len() >= extent(nk, ks, d) && v.len() >= extent(nk, vs, dvw));
    assert!(g.len() >= extent(nq, gs, dvw) && dq.len() >= nq * d && dk.len() >= nk * d && dv.len() >= nk * dvw);
    // P[i][j] at probs[i·pr + j·pc]: query-major with many keys, key-major with few.
    let few = nk < FEW_KEYS;
    let (pr, pc) = if few { (1, nq) } else { (nk, 1) };
    let (probs, grads) = (&mut w.probs[..nq * nk], &mut w.grads[..nq * nk]);
    #[rustfmt::skip]
    let mat = |m, cols, depth, a: *const f32, a_rs, a_cs, b: *const f32, b_rs, out: *mut f32, out_rs| Product {
        m, cols, depth, a, a_rs, a_cs, b, b_rs, out, out_rs, scale: 1.0,
    };
    // SAFETY (every product below): the extents of q, k, v, g, dq, dk and dv are asserted
    // above, the scratch holds nq·nk values and the staged operands their padded rows.
    unsafe {
        if few {
            // Sᵀ = k qᵀ and dPᵀ = v dOᵀ, through qᵀ [d, nqp] and dOᵀ [dv, nqp].
            let nqp = nq.next_multiple_of(8);
            transpose(q, qs, nq, d, &mut w.stage_a, nqp, tiles);
            transpose(g, gs, nq, dvw, &mut w.stage_b, nqp, tiles);
            product(mat(nk, nq, d, k.as_ptr(), ks, 1, w.stage_a.as_ptr(), nqp, grads.as_mut_ptr(), nq), tiles);
            softmax_columns(grads, probs, nk, nq);
            product(mat(nk, nq, dvw, v.as_ptr(), vs, 1, w.stage_b.as_ptr(), nqp, grads.as_mut_ptr(), nq), tiles);
            score_grads_columns(probs, grads, nk, nq);
        } else {
            // S = q kᵀ and dP = dO vᵀ, through kᵀ [d, kp] and vᵀ [dv, kp].
            let kp = nk.next_multiple_of(8);
            transpose(k, ks, nk, d, &mut w.stage_a, kp, tiles);
            transpose(v, vs, nk, dvw, &mut w.stage_b, kp, tiles);
            product(mat(nq, nk, d, q.as_ptr(), qs, 1, w.stage_a.as_ptr(), kp, grads.as_mut_ptr(), nk), tiles);
            softmax_rows(grads, probs, nk, false);
            product(mat(nq, nk, dvw, g.as_ptr(), gs, 1, w.stage_b.as_ptr(), kp, grads.as_mut_ptr(), nk), tiles);
            score_grads_rows(probs, grads, nk);
        }
        // dV = Pᵀ dO, dQ = dS k, dK = dSᵀ q.
        product(mat(nk, dvw, nq, probs.as_ptr(), pc, pr, g.as_ptr(), gs, dv.as_mut_ptr(), dvw), tiles);
        product(mat(nq, d, nk, grads.as_ptr(), pr, pc, k.as_ptr(), ks, dq.as_mut_ptr(), d), tiles);
        product(mat(nk, d, nq, grads.as_ptr(), pc, pr, q.as_ptr(), qs, dk.as_mut_ptr(), d), tiles);
    }
}

impl Tensor {
    /// Gradients of [`Tensor::attention`] (`self` = q `[B, H, Nq, D]`, k `[B, H, Nk, D]`, v
    /// `[B, H, Nk, Dv]`) for the output gradient `g` `[B, H, Nq, Dv]`: `(dq, dk, dv)`, each
    /// contiguous in its input's dtype.
    pub fn attention_backward(&self, k: &Tensor, v: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "attention_backward";
        check_operands(OP, "attention_backward (k, v)", self, k, v)?;
        let (qs, vs) = (self.shape(), v.shape());
        g.expect_shape(OP, &[qs[0], qs[1], qs[2], vs[3]])?;
        g.expect_float(OP)?;
        let (q32, k32, v32, g32) = (f32_rows(self), f32_rows(k), f32_rows(v), f32_rows(g));
        let s = Head::of(&q32, &k32, &v32);
        let gs = g32.strides()[2];
        let (heads, bh) = (qs[1], qs[0] * qs[1]);
        // Recomputed scores, then dV, dP, dQ, dK: five products of the forward's size and a half.
        let _prof = profile::op(profile::Kind::Attention, 2.0 * (bh * s.nq * s.nk * (3 * s.d + 2 * s.dv)) as f64, 0.0);
        let (qd, kd, vd, gd) = (f32_data(&q32)?, f32_data(&k32)?, f32_data(&v32)?, f32_data(&g32)?);
        let at = |t: &Tensor, i: usize| head_offset(t, heads, i);
        let mut dq = vec![0.0f32; bh * s.nq * s.d];
        let mut dk = vec![0.0f32; bh * s.nk * s.d];
        let mut dv = vec![0.0f32; bh * s.nk * s.dv];
        if s.nq > 0 && s.nk > 0 {
            // The tiles read whole vectors of 8 from the rows of q, k, v and dO.
            let tiles = super::use_avx2_tiles(s) && s.d.is_multiple_of(8);
            let stage_len = s.d.max(s.dv) * s.nq.max(s.nk).next_multiple_of(8);
            let scratch = || Scratch {
                stage_a: vec![0.0; stage_len],
                stage_b: vec![0.0; stage_len],
                probs: vec![0.0; s.nq * s.nk],
                grads: vec![0.0; s.nq * s.nk],
            };
            let outs = [dq.as_mut_ptr(), dk.as_mut_ptr(), dv.as_mut_ptr()].map(SharedOut);
            let (lq, lk, lv) = (s.nq * s.d, s.nk * s.d, s.nk * s.dv);
            // Contiguous runs of heads, one scratch each (zeroing one per head cost more than
            // the softmax).
            let parts = rayon::current_num_threads().min(bh);
            (0..parts).into_par_iter().for_each(|t| {
                let mut w = scratch();
                for i in t * bh / parts..(t + 1) * bh / parts {
                    let (q, k, v, g) = (&qd[at(&q32, i)..], &kd[at(&k32, i)..], &vd[at(&v32, i)..], &gd[at(&g32, i)..]);
                    // SAFETY: head i writes only its own ranges of the three outputs.
                    let (dq, dk, dv) =
                        unsafe { (outs[0].slice(i * lq, lq), outs[1].slice(i * lk, lk), outs[2].slice(i * lv, lv)) };
                    head_backward(q, k, v, g, gs, dq, dk, dv, s, tiles, &mut w);
                }
            });
        }
        let shaped = |data: Vec<f32>, shape: [usize; 4], dtype: DType| -> Result<Tensor> {
            let t = Tensor::from_vec(data, &shape)?;
            Ok(if dtype == DType::F32 { t } else { t.to_dtype(dtype) })
        };
        Ok((
            shaped(dq, [qs[0], qs[1], s.nq, s.d], self.dtype())?,
            shaped(dk, [qs[0], qs[1], s.nk, s.d], k.dtype())?,
            shaped(dv, [qs[0], qs[1], s.nk, s.dv], v.dtype())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{head_backward, Scratch};
    use crate::ops::cross_attention::Head;
    use crate::testing::assert_close;
    use crate::{DType, Tensor};

    /// Plain f64 gradients of softmax(q kᵀ) v for the output gradient g: (dq, dk, dv).
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor) -> [Vec<f64>; 3] {
        let (qs, ks, vs) = (q.shape().to_vec(), k.shape().to_vec(), v.shape().to_vec());
        let (bh, nq, nk, d, dv) = (qs[0] * qs[1], qs[2], ks[2], qs[3], vs[3]);
        let [qd, kd, vd, gd] = [q, k, v, g].map(|t| t.contiguous().to_f64_vec().unwrap());
        let (mut dq, mut dk, mut dvv) = (vec![0.0; bh * nq * d], vec![0.0; bh * nk * d], vec![0.0; bh * nk * dv]);
        for h in 0..bh {
            let (q, k, v, g) = (&qd[h * nq * d..], &kd[h * nk * d..], &vd[h * nk * dv..], &gd[h * nq * dv..]);
            for i in 0..nq {
                let s: Vec<f64> = (0..nk).map(|j| (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum()).collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let p: Vec<f64> = e.iter().map(|x| x / e.iter().sum::<f64>()).collect();
                let dp: Vec<f64> = (0..nk).map(|j| (0..dv).map(|c| g[i * dv + c] * v[j * dv + c]).sum()).collect();
                let dot: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..nk {
                    let ds = p[j] * (dp[j] - dot);
                    for c in 0..dv {
                        dvv[(h * nk + j) * dv + c] += p[j] * g[i * dv + c];
                    }
                    for c in 0..d {
                        dq[(h * nq + i) * d + c] += ds * k[j * d + c];
                        dk[(h * nk + j) * d + c] += ds * q[i * d + c];
                    }
                }
            }
        }
        [dq, dk, dvv]
    }

    /// Within `tol` of each value and `tol` of the gradient's largest value: the scores of
    /// these inputs reach ±50, so dS = P ∘ (dP − rowsum) cancels, and its f32 rounding shows.
    fn check(got: (Tensor, Tensor, Tensor), want: [Vec<f64>; 3], tol: f64, what: &str) {
        for (name, (t, w)) in ["dq", "dk", "dv"].iter().zip([got.0, got.1, got.2].iter().zip(&want)) {
            let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_close(&t.to_f64_vec().unwrap(), w, tol, tol * scale, &format!("{what} {name}"));
        }
    }

    #[test]
    fn matches_the_reference_on_decoder_shapes_and_views() {
        // Tokens -> image and image -> tokens with q, k, v and dO as the decoder has them
        // ([B, N, H, D] permuted to [B, H, N, D]); small and odd head dims (the plain loops),
        // one key, one query.
        for (b, h, nq, nk, d, dv) in [
            (2, 8, 18, 200, 16, 16),
            (2, 8, 200, 18, 16, 16),
            (1, 4, 37, 5, 8, 8),
            (1, 2, 7, 67, 5, 8),
            (1, 2, 33, 1, 3, 24),
            (1, 1, 1, 1, 3, 3),
        ] {
            let view = |n: usize, w: usize, seed: u64| {
                Tensor::randn(&[b, n, h, w], seed, DType::F32).affine(2.0, 0.0).unwrap().permute(&[0, 2, 1, 3]).unwrap()
            };
            let (q, k, v, g) = (view(nq, d, 1), view(nk, d, 2), view(nk, dv, 3), view(nq, dv, 4));
            let got = q.attention_backward(&k, &v, &g).unwrap();
            assert_eq!(got.0.shape(), &[b, h, nq, d]);
            assert_eq!(got.1.shape(), &[b, h, nk, d]);
            assert_eq!(got.2.shape(), &[b, h, nk, dv]);
            check(got, reference(&q, &k, &v, &g), 1e-4, &format!("{b}x{h}x{nq}x{nk}x{d}x{dv}"));
        }
    }

    /// The plain products beside the tiles on one head of each layout, against the reference
    /// (the op picks the tiles wherever the CPU has AVX2).
    #[test]
    fn plain_loops_and_tiles_agree() {
        for (nq, nk) in [(18, 131), (131, 18)] {
            let (d, dv) = (16, 8);
            let t = |n: usize, w: usize, seed: u64| {
                Tensor::randn(&[1, 1, n, w], seed, DType::F32).affine(2.0, 0.0).unwrap()
            };
            let (q, k, v, g) = (t(nq, d, 1), t(nk, d, 2), t(nk, dv, 3), t(nq, dv, 4));
            let want = reference(&q, &k, &v, &g);
            let [qv, kv, vv, gv] = [&q, &k, &v, &g].map(|t| t.to_vec::<f32>().unwrap());
            let s = Head { nq, nk, d, dv, qs: d, ks: d, vs: dv };
            #[cfg(target_arch = "x86_64")]
            let paths = if crate::ops::attention::avx2::available() { vec![false, true] } else { vec![false] };
            #[cfg(not(target_arch = "x86_64"))]
            let paths = vec![false];
            for tiles in paths {
                let len = 16 * nq.max(nk).next_multiple_of(8);
                let mut w = Scratch {
                    stage_a: vec![0.0; len],
                    stage_b: vec![0.0; len],
                    probs: vec![0.0; nq * nk],
                    grads: vec![0.0; nq * nk],
                };
                let (mut dq, mut dk, mut dvv) = (vec![0.0; nq * d], vec![0.0; nk * d], vec![0.0; nk * dv]);
                head_backward(&qv, &kv, &vv, &gv, dv, &mut dq, &mut dk, &mut dvv, s, tiles, &mut w);
                let f = |x: Vec<f32>, shape: [usize; 4]| Tensor::from_vec(x, &shape).unwrap();
                let got = (f(dq, [1, 1, nq, d]), f(dk, [1, 1, nk, d]), f(dvv, [1, 1, nk, dv]));
                check(got, want.clone(), 1e-4, &format!("tiles {tiles} {nq}x{nk}"));
            }
        }
    }

    #[test]
    fn half_types_round_back_and_bad_shapes_are_errors() {
        let t = |s: &[usize], seed: u64| Tensor::randn(s, seed, DType::F32);
        let (q, k, v, g) = (t(&[1, 2, 5, 4], 1), t(&[1, 2, 7, 4], 2), t(&[1, 2, 7, 6], 3), t(&[1, 2, 5, 6], 4));
        let half = |t: &Tensor| t.to_dtype(DType::BF16);
        let got = half(&q).attention_backward(&half(&k), &half(&v), &half(&g)).unwrap();
        assert_eq!([got.0.dtype(), got.1.dtype(), got.2.dtype()], [DType::BF16; 3]);
        let up = |t: &Tensor| half(t).to_dtype(DType::F32);
        check(got, reference(&up(&q), &up(&k), &up(&v), &up(&g)), 2e-2, "bf16");
        let e = q.attention_backward(&k, &v, &t(&[1, 2, 5, 5], 5)).unwrap_err().to_string();
        assert!(e.contains("attention_backward") && e.contains("[1, 2, 5, 5]"), "{e}");
        let e = q.attention_backward(&t(&[1, 2, 7, 3], 6), &v, &g).unwrap_err().to_string();
        assert!(e.contains("attention_backward"), "{e}");
    }
}
