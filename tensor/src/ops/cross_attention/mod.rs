//! Plain scaled-dot-product attention without bias or mask, `softmax(q kᵀ) v`, in one pass per
//! batch and head: the FaceX decoder's attentions, where one side is a handful of tokens (18) and
//! the other the image (3136 positions) with 16-dim heads. As batched GEMMs those are thousands
//! of tiny products (10-15 GFLOP/s) with the scores going through memory; here every block of
//! query rows computes its scores, their softmax (`ops::softmax`'s row or column code, so the
//! probabilities match the composite's) and the weighted sum of v rows (vectorised along the
//! head dim), in cache. Many keys: k is transposed once per head and each row's scores vectorise
//! along the keys. Few keys (the image attending to 18 tokens): the block's q is transposed and
//! the scores, stored key-major, vectorise along the block's rows, softmax included.
//!
//! The backward (`backward`, [`Tensor::attention_backward`]) recomputes each head's
//! probabilities; the autograd model records this op in training too. The composite twin
//! `q.matmul(kᵀ).softmax(-1).matmul(v)` is tested against both (here and in autograd's
//! grad_linalg). Computes in f32 whatever the matmul precision (bf16 products are not used here).

mod backward;

use crate::cpu::parallel::new_vecs;
use crate::cpu::simd::dispatch;
use crate::ops::softmax::{rows as softmax_rows, softmax_column_block, COLUMN_BLOCK};
use crate::profile;
use crate::{CpuStorage, DType, Error, Result, Tensor};

/// Query rows whose scores are computed before one softmax call.
const ROW_BLOCK: usize = 32;
const _: () = assert!(ROW_BLOCK <= COLUMN_BLOCK);

/// Sizes of one head's problem.
#[derive(Clone, Copy)]
struct Head {
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    /// Row strides of q, k and v (their values within a row are contiguous).
    qs: usize,
    ks: usize,
    vs: usize,
}

/// Keys below this count take the column scheme (scores stored key-major, vectorised along a
/// block of query rows), since rows of a few scores vectorise poorly one at a time.
const FEW_KEYS: usize = 64;

/// `out[..] = Σ_j p(j) · v[j·vs ..][..out.len()]`, accumulated in fixed chunks of 16 and 8 lanes
/// (whole registers, the sum kept in them across j) and single lanes for the rest.
#[inline(always)]
fn weighted_sum(out: &mut [f32], nk: usize, p: impl Fn(usize) -> f32, v: &[f32], vs: usize) {
    #[inline(always)]
    fn chunk<const L: usize>(out: &mut [f32], c: usize, nk: usize, p: &impl Fn(usize) -> f32, v: &[f32], vs: usize) {
        let mut acc = [0.0f32; L];
        for j in 0..nk {
            let pj = p(j);
            let x: &[f32; L] = v[j * vs + c..][..L].try_into().expect("chunk of L values");
            for l in 0..L {
                acc[l] += pj * x[l];
            }
        }
        out[c..c + L].copy_from_slice(&acc);
    }
    let n = out.len();
    let mut c = 0;
    while c + 16 <= n {
        chunk::<16>(out, c, nk, &p, v, vs);
        c += 16;
    }
    while c + 8 <= n {
        chunk::<8>(out, c, nk, &p, v, vs);
        c += 8;
    }
    while c < n {
        chunk::<1>(out, c, nk, &p, v, vs);
        c += 1;
    }
}

/// One head: q [nq, d], k [nk, d], v [nk, dv] (rows `qs`, `ks`, `vs` apart) -> out [nq, dv]. `t` is
/// zeroed scratch of [`transposed_len`] values; `scores` of 2·ROW_BLOCK·nk (the scores, then the
/// probabilities).
fn head_attention(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], t: &mut [f32], scores: &mut [f32], s: Head) {
    #[inline(always)]
    fn body(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], t: &mut [f32], scores: &mut [f32], s: Head) {
        let Head { nq, nk, d, dv, qs, ks, vs } = s;
        let (scores, probs) = scores.split_at_mut(ROW_BLOCK * nk);
        if nk < FEW_KEYS {
            // Column scheme: q's block transposed to [d, rows]; scores and probabilities [nk, rows].
            for r0 in (0..nq).step_by(ROW_BLOCK) {
                let w = ROW_BLOCK.min(nq - r0);
                transpose_rows(&q[r0 * qs..], qs, w, d, t, ROW_BLOCK);
                // Scores of key j for the block's rows: Σ_c k[j][c] · qᵀ[c][..], like the weighted sum.
                for j in 0..nk {
                    let kj = &k[j * ks..][..d];
                    weighted_sum(&mut scores[j * ROW_BLOCK..][..w], d, |c| kj[c], t, ROW_BLOCK);
                }
                softmax_column_block(scores, probs, nk, w, ROW_BLOCK, false);
                for i in 0..w {
                    weighted_sum(&mut out[(r0 + i) * dv..][..dv], nk, |j| probs[j * ROW_BLOCK + i], v, vs);
                }
            }
            return;
        }
        // Row scheme: k transposed to [d, kp]; each query row's scores vectorise along the keys.
        let kp = nk.next_multiple_of(8);
        transpose_rows(k, ks, nk, d, t, kp);
        for r0 in (0..nq).step_by(ROW_BLOCK) {
            let rows = ROW_BLOCK.min(nq - r0);
            let (block, probs) = (&mut scores[..rows * nk], &mut probs[..rows * nk]);
            for (i, srow) in block.chunks_mut(nk).enumerate() {
                srow.fill(0.0);
                for (c, &qc) in q[(r0 + i) * qs..][..d].iter().enumerate() {
                    for (s, &kc) in srow.iter_mut().zip(&t[c * kp..][..nk]) {
                        *s += qc * kc;
                    }
                }
            }
            softmax_rows(block, probs, nk, false);
            for (i, prow) in probs.chunks(nk).enumerate() {
                weighted_sum(&mut out[(r0 + i) * dv..][..dv], nk, |j| prow[j], v, vs);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx2_tiles(s) {
        // SAFETY: the CPU has AVX2 + FMA (checked), and the operands' extents are checked there.
        return unsafe { avx2_tiles::head_attention(q, k, v, out, t, scores, s) };
    }
    dispatch!(body(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], t: &mut [f32], scores: &mut [f32], s: Head))
}

/// Values of scratch `t` one head needs: k transposed with its rows padded to 8 keys, or one
/// block of q transposed.
fn transposed_len(s: Head) -> usize {
    s.d * s.nk.next_multiple_of(8).max(ROW_BLOCK)
}

/// `dst[c * dst_rs + j] = src[j * src_rs + c]` for j < rows, c < cols: both schemes' staging
/// (the column scheme's block of q rows as [d, ROW_BLOCK], the row scheme's kᵀ as [d, kp], kp = nk
/// rounded up to 8, the columns past nk left as they are: zero in the caller's fresh scratch).
/// The AVX2 tiles' `transpose_into` runs it on the edges of its 8 x 8 blocks.
#[inline(always)]
fn transpose_rows(src: &[f32], src_rs: usize, rows: usize, cols: usize, dst: &mut [f32], dst_rs: usize) {
    for j in 0..rows {
        for c in 0..cols {
            dst[c * dst_rs + j] = src[j * src_rs + c];
        }
    }
}

/// The register tiles apply: a CPU with AVX2 + FMA (AVX-512 ones included: on a Zen 4 the
/// tiles took 0.55-0.7x the time of the loops above compiled for AVX-512), and value rows a
/// multiple of 8 wide (the tiles read whole vectors of v).
fn use_avx2_tiles(s: Head) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        s.dv.is_multiple_of(8) && crate::ops::attention::avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = s;
        false
    }
}

/// The same two schemes with both products of each block on the window attention's AVX2 tiles
/// (6 rows x 16 columns of 12 ymm accumulators). The loops above keep one running sum per output
/// vector, a chain of dependent adds over all 3136 keys; the tiles keep twelve independent ones.
#[cfg(target_arch = "x86_64")]
mod avx2_tiles {
    use super::{transpose_rows, transposed_len, Head, FEW_KEYS, ROW_BLOCK};
    use crate::cpu::gemm::pack::avx2::transpose8;
    use crate::ops::attention::avx2::{product, Product};
    use crate::ops::softmax::{rows as softmax_rows, softmax_column_block};
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps};

    /// [`transpose_rows`] (the stagings: kᵀ, a block of q transposed) through 8 x 8 register
    /// transposes where whole blocks fit, and `transpose_rows` itself at the edges. Element by
    /// element throughout, kᵀ of 3136 keys was a third of the t2i attention's time (a load and a
    /// scattered store each).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_into(
        src: &[f32],
        src_rs: usize,
        rows: usize,
        cols: usize,
        dst: &mut [f32],
        dst_rs: usize,
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(src.len() >= (rows - 1) * src_rs + cols && dst.len() >= (cols - 1) * dst_rs + rows);
        let (full_r, full_c) = (rows / 8 * 8, cols / 8 * 8);
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        for j0 in (0..full_r).step_by(8) {
            for c0 in (0..full_c).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, ri) in r.iter_mut().enumerate() {
                    // SAFETY: row j0 + i < rows, columns c0..c0 + 8 <= cols (asserted extents).
                    *ri = unsafe { _mm256_loadu_ps(sp.add((j0 + i) * src_rs + c0)) };
                }
                transpose8(&mut r);
                for (q, rq) in r.iter().enumerate() {
                    // SAFETY: row c0 + q < cols of dst, columns j0..j0 + 8 <= rows.
                    unsafe { _mm256_storeu_ps(dp.add((c0 + q) * dst_rs + j0), *rq) };
                }
            }
        }
        // The edges: the last cols % 8 columns of the whole blocks' rows, then the last rows % 8
        // rows in full.
        if full_c < cols {
            transpose_rows(&src[full_c..], src_rs, full_r, cols - full_c, &mut dst[full_c * dst_rs..], dst_rs);
        }
        if full_r < rows {
            transpose_rows(&src[full_r * src_rs..], src_rs, rows - full_r, cols, &mut dst[full_r..], dst_rs);
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn head_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        t: &mut [f32],
        scores: &mut [f32],
        s: Head,
    ) {
        let Head { nq, nk, d, dv, qs, ks, vs } = s;
        let extent = |rows: usize, stride: usize, width: usize| (rows - 1) * stride + width;
        assert!(q.len() >= extent(nq, qs, d) && k.len() >= extent(nk, ks, d) && v.len() >= extent(nk, vs, dv));
        assert!(out.len() >= nq * dv && t.len() >= transposed_len(s) && scores.len() >= 2 * ROW_BLOCK * nk);
        let (scores, probs) = scores.split_at_mut(ROW_BLOCK * nk);
        let gemm = |m, cols, depth, a: *const f32, a_rs, a_cs, b: *const f32, b_rs, out: *mut f32, out_rs| {
            #[rustfmt::skip]
            let p = Product { m, cols, depth, a, a_rs, a_cs, b, b_rs, out, out_rs, scale: 1.0 };
            // SAFETY: every call below stays inside the extents asserted above.
            unsafe { product(p) }
        };
        if nk < FEW_KEYS {
            // Column scheme: scoresᵀ [nk, rows] = k · (the block's q)ᵀ, then out = Pᵀ v.
            for r0 in (0..nq).step_by(ROW_BLOCK) {
                let w = ROW_BLOCK.min(nq - r0);
                transpose_into(&q[r0 * qs..], qs, w, d, t, ROW_BLOCK);
                gemm(nk, w, d, k.as_ptr(), ks, 1, t.as_ptr(), ROW_BLOCK, scores.as_mut_ptr(), ROW_BLOCK);
                softmax_column_block(scores, probs, nk, w, ROW_BLOCK, false);
                let o = out[r0 * dv..].as_mut_ptr();
                gemm(w, dv, nk, probs.as_ptr(), 1, ROW_BLOCK, v.as_ptr(), vs, o, dv);
            }
            return;
        }
        // Row scheme: kᵀ [d, kp] (zero past nk, so whole vectors can be read).
        let kp = nk.next_multiple_of(8);
        transpose_into(k, ks, nk, d, t, kp);
        for r0 in (0..nq).step_by(ROW_BLOCK) {
            let rows = ROW_BLOCK.min(nq - r0);
            let (block, probs) = (&mut scores[..rows * nk], &mut probs[..rows * nk]);
            gemm(rows, nk, d, q[r0 * qs..].as_ptr(), qs, 1, t.as_ptr(), kp, block.as_mut_ptr(), nk);
            softmax_rows(block, probs, nk, false);
            let o = out[r0 * dv..].as_mut_ptr();
            gemm(rows, dv, nk, probs.as_ptr(), nk, 1, v.as_ptr(), vs, o, dv);
        }
    }
}

/// The f32 storage of a tensor (checked by the caller).
fn f32_data(t: &Tensor) -> Result<&[f32]> {
    match t.cpu_storage()? {
        CpuStorage::F32(v) => Ok(v),
        _ => Err(Error::InvalidArgument { op: "attention", msg: "expected f32 storage".into() }),
    }
}

/// The checks of q `[B, H, Nq, D]`, k `[B, H, Nk, D]`, v `[B, H, Nk, Dv]` that the forward and
/// the backward share (`op` names the one called, `kv_op` it on k against v): ranks, matching
/// batch, heads and depths, float dtypes.
fn check_operands(op: &'static str, kv_op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
        return Err(Error::BadShape {
            op,
            shape: if qs.len() != 4 {
                qs.to_vec()
            } else if ks.len() != 4 {
                ks.to_vec()
            } else {
                vs.to_vec()
            },
            expected: "rank 4: [B, H, N, D]".into(),
        });
    }
    if qs[..2] != ks[..2] || qs[3] != ks[3] {
        return Err(Error::ShapeMismatch { op, lhs: qs.to_vec(), rhs: ks.to_vec() });
    }
    if vs[..3] != ks[..3] {
        return Err(Error::ShapeMismatch { op: kv_op, lhs: ks.to_vec(), rhs: vs.to_vec() });
    }
    for t in [q, k, v] {
        t.expect_float(op)?;
    }
    Ok(())
}

/// An operand as the heads read it: an f32 view whose last dim is contiguous (the decoder's
/// permuted heads) as it is, anything else copied to that form.
fn f32_rows(t: &Tensor) -> Tensor {
    if t.dtype() == DType::F32 && t.strides()[3] == 1 {
        t.clone()
    } else {
        t.to_dtype(DType::F32).contiguous()
    }
}

impl Head {
    /// The sizes and row strides of q, k and v as [`f32_rows`] gives them.
    fn of(q: &Tensor, k: &Tensor, v: &Tensor) -> Head {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        Head { nq: qs[2], nk: ks[2], d: qs[3], dv: vs[3], qs: q.strides()[2], ks: k.strides()[2], vs: v.strides()[2] }
    }
}

/// Offset of head i = (b, h) in a `[B, H, N, D]` view with `heads` heads.
fn head_offset(t: &Tensor, heads: usize, i: usize) -> usize {
    t.layout().offset + (i / heads) * t.strides()[0] + (i % heads) * t.strides()[1]
}

impl Tensor {
    /// `softmax(q kᵀ) v` per batch and head: q `[B, H, Nq, D]`, k `[B, H, Nk, D]`, v
    /// `[B, H, Nk, Dv]` (any strides: permuted views are read in place of a copy) ->
    /// `[B, H, Nq, Dv]`. Scale q beforehand. f16/bf16 go through f32.
    pub fn attention(&self, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        check_operands("attention", "attention (k, v)", self, k, v)?;
        let dtype = self.dtype();
        let qs = self.shape();
        let (q, k, v) = (f32_rows(self), f32_rows(k), f32_rows(v));
        let s = Head::of(&q, &k, &v);
        let (heads, bh) = (qs[1], qs[0] * qs[1]);
        let flops = 2.0 * (bh * s.nq * s.nk * (s.d + s.dv)) as f64;
        let _prof = profile::op(profile::Kind::Attention, flops, 0.0);
        let (qd, kd, vd) = (f32_data(&q)?, f32_data(&k)?, f32_data(&v)?);
        let at = |t: &Tensor, i: usize| head_offset(t, heads, i);
        let out = if s.nq > 0 && s.dv > 0 && s.nk > 0 {
            // One head per task, on the pool however small the output (each reads all the keys).
            let ([out], _) = new_vecs(bh * s.nq * s.dv, s.nq * s.dv, true, |start, [o]| {
                let i = start / (s.nq * s.dv);
                let mut t = vec![0.0f32; transposed_len(s)];
                let mut scores = vec![0.0f32; 2 * ROW_BLOCK * s.nk];
                head_attention(&qd[at(&q, i)..], &kd[at(&k, i)..], &vd[at(&v, i)..], o, &mut t, &mut scores, s);
            });
            out
        } else {
            vec![0.0f32; bh * s.nq * s.dv]
        };
        let out = Tensor::from_vec(out, &[qs[0], qs[1], s.nq, s.dv])?;
        Ok(if dtype == DType::F32 { out } else { out.to_dtype(dtype) })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::assert_close;
    use crate::{DType, Tensor};

    /// The composite twin: two matmuls and a softmax.
    fn composite(q: &Tensor, k: &Tensor, v: &Tensor) -> Vec<f64> {
        q.matmul(&k.transpose(2, 3).unwrap()).unwrap().softmax(-1).unwrap().matmul(v).unwrap().to_f64_vec().unwrap()
    }

    #[test]
    fn matches_the_composite_on_decoder_shapes_and_permuted_views() {
        // Tokens -> image and image -> tokens, heads of 16 (swin_b) and 8 (tiny), q/k/v as the
        // decoder passes them: [B, N, H, D] permuted to [B, H, N, D].
        for (b, h, nq, nk, d) in [(2, 8, 18, 200, 16), (2, 8, 200, 18, 16), (1, 4, 37, 5, 8), (1, 1, 1, 1, 3)] {
            let view = |n: usize, seed: u64| {
                Tensor::randn(&[b, n, h, d], seed, DType::F32).affine(2.0, 0.0).unwrap().permute(&[0, 2, 1, 3]).unwrap()
            };
            let (q, k, v) = (view(nq, 1), view(nk, 2), view(nk, 3));
            let got = q.attention(&k, &v).unwrap();
            assert_eq!(got.shape(), &[b, h, nq, d]);
            assert_close(
                &got.to_f64_vec().unwrap(),
                &composite(&q, &k, &v),
                1e-5,
                2e-5,
                &format!("{b}x{h}x{nq}x{nk}x{d}"),
            );
        }
    }

    /// The AVX2 tiles called directly (so they are checked on AVX-512 machines too, where the
    /// op keeps its loops), both schemes and the row/column tails, against the composite.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_tiles_match_the_composite() {
        if !crate::ops::attention::avx2::available() {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for (nq, nk, d, dv) in [(18, 200, 16, 16), (200, 18, 16, 16), (7, 67, 5, 8), (33, 1, 3, 24), (1, 64, 16, 8)] {
            let q = Tensor::randn(&[1, 1, nq, d], 1, DType::F32).affine(2.0, 0.0).unwrap();
            let k = Tensor::randn(&[1, 1, nk, d], 2, DType::F32).affine(2.0, 0.0).unwrap();
            let v = Tensor::randn(&[1, 1, nk, dv], 3, DType::F32);
            let s = super::Head { nq, nk, d, dv, qs: d, ks: d, vs: dv };
            let mut out = vec![0.0f32; nq * dv];
            let mut t = vec![0.0f32; super::transposed_len(s)];
            let mut scores = vec![0.0f32; 2 * super::ROW_BLOCK * nk];
            let (qv, kv, vv) = (q.to_vec::<f32>().unwrap(), k.to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
            // SAFETY: AVX2 + FMA checked above.
            unsafe { super::avx2_tiles::head_attention(&qv, &kv, &vv, &mut out, &mut t, &mut scores, s) };
            let got: Vec<f64> = out.iter().map(|&x| x as f64).collect();
            assert_close(&got, &composite(&q, &k, &v), 1e-5, 2e-5, &format!("tiles {nq}x{nk}x{d}x{dv}"));
        }
    }

    #[test]
    fn value_width_may_differ_and_half_types_round_back() {
        let q = Tensor::randn(&[1, 2, 5, 4], 4, DType::F32);
        let k = Tensor::randn(&[1, 2, 7, 4], 5, DType::F32);
        let v = Tensor::randn(&[1, 2, 7, 6], 6, DType::F32);
        let got = q.attention(&k, &v).unwrap();
        assert_close(&got.to_f64_vec().unwrap(), &composite(&q, &k, &v), 1e-5, 2e-5, "dv 6");
        // A q whose last dim is strided goes through a contiguous copy.
        let qt = Tensor::randn(&[1, 2, 4, 5], 7, DType::F32).transpose(2, 3).unwrap();
        let got = qt.attention(&k, &v).unwrap();
        assert_close(&got.to_f64_vec().unwrap(), &composite(&qt, &k, &v), 1e-5, 2e-5, "strided q");
        let half = |t: &Tensor| t.to_dtype(DType::BF16);
        let got = half(&q).attention(&half(&k), &half(&v)).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        let want =
            composite(&half(&q).to_dtype(DType::F32), &half(&k).to_dtype(DType::F32), &half(&v).to_dtype(DType::F32));
        assert_close(&got.to_f64_vec().unwrap(), &want, 1e-2, 1e-2, "bf16");
    }

    #[test]
    fn shape_errors_name_the_op() {
        let t = |s: &[usize]| Tensor::zeros(s, DType::F32);
        let e = t(&[1, 2, 3]).attention(&t(&[1, 2, 3, 4]), &t(&[1, 2, 3, 4])).unwrap_err().to_string();
        assert!(e.contains("attention") && e.contains("rank 4"), "{e}");
        let e = t(&[1, 2, 3, 4]).attention(&t(&[1, 2, 5, 3]), &t(&[1, 2, 5, 4])).unwrap_err().to_string();
        assert!(e.contains("attention"), "{e}");
        let e = t(&[1, 2, 3, 4]).attention(&t(&[1, 2, 5, 4]), &t(&[1, 2, 6, 4])).unwrap_err().to_string();
        assert!(e.contains("attention (k, v)"), "{e}");
        assert!(Tensor::zeros(&[1, 1, 2, 2], DType::I64).attention(&t(&[1, 1, 2, 2]), &t(&[1, 1, 2, 2])).is_err());
    }
}
