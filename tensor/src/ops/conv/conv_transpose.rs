//! conv_transpose2d: the transposed product `Wᵀ · x`, then col2im (a scatter-add).

use super::{check_bias, check_common, from_f32_vec, index_range, Geom, PAR_MIN_FLOATS};
use crate::cpu::gemm::{sgemm_new, GemmOpts};
use crate::cpu::parallel::new_vecs;
use crate::cpu::simd::dispatch;
use crate::profile;
use crate::{bail, CpuStorage, DType, Error, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

impl Tensor {
    /// x [N,C,H,W], weight [C,O,kh,kw] (PyTorch layout), bias [O].
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Conv, 0.0, 0.0);
        self.conv_transpose2d_ext(weight, bias, stride, padding, (0, 0))
    }

    /// conv_transpose2d with PyTorch's `output_padding` (extra rows/columns at the bottom/right,
    /// each < stride): the input gradient of a conv2d whose output size was floored.
    pub fn conv_transpose2d_ext(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
        output_padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "conv_transpose2d";
        let ([n, c, h, w], [wc, o, kh, kw]) = check_common(OP, self, weight, stride)?;
        if wc != c {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() });
        }
        check_bias(OP, self, bias, o)?;
        if output_padding.0 >= stride.0 || output_padding.1 >= stride.1 {
            bail!(OP, "output_padding {output_padding:?} must be smaller than stride {stride:?}");
        }
        let full_h = (h - 1) * stride.0 + kh + output_padding.0;
        let full_w = (w - 1) * stride.1 + kw + output_padding.1;
        if full_h <= 2 * padding.0 || full_w <= 2 * padding.1 {
            bail!(
                OP,
                "padding {padding:?} leaves no output for input {:?} and weight {:?} with stride {stride:?}",
                self.shape(),
                weight.shape()
            );
        }
        let g = Geom {
            c,
            h,
            w,
            kh,
            kw,
            sh: stride.0,
            sw: stride.1,
            ph: padding.0,
            pw: padding.1,
            ho: full_h - 2 * padding.0,
            wo: full_w - 2 * padding.1,
        };
        let out_shape = [n, o, g.ho, g.wo];
        if n == 0 || o == 0 {
            return Ok(Tensor::zeros(&out_shape, self.dtype()));
        }
        let wt = weight.f32_slice()?;
        let b = bias.map(|b| b.f32_slice()).transpose()?;
        let image_out = o * g.ho * g.wo;
        // The input in place when its rows and columns merge into one pixel index (a
        // channels-last map viewed as NCHW, as the model's [B, HW, D] image): the product reads
        // it through its strides instead of a transposed copy (1.2 of 3.7 ms of the first
        // upscaler conv at batch 1 on Zen 4). Otherwise a contiguous copy.
        let l = self.layout();
        let st = &l.strides;
        let (x, x_offset, [x_ns, x_cs, x_ps]) = match self.cpu_storage() {
            Ok(CpuStorage::F32(v)) if self.dtype() == DType::F32 && (h == 1 || st[2] == w * st[3]) => {
                (Cow::Borrowed(&v[..]), l.offset, [st[0], st[1], st[3]])
            }
            _ => (self.f32_slice()?, 0, [c * h * w, h * w, 1]),
        };
        let ([out], _) = new_vecs(n * image_out, image_out, true, |start, [y]| {
            let xi = &x[x_offset + start / image_out * x_ns..];
            conv_transpose2d_image(&g, (xi, x_cs, x_ps), &wt, b.as_deref(), o, y)
        });
        Ok(from_f32_vec(out, &out_shape, self.dtype()))
    }
}

/// One image of the transposed conv: col[O·kh·kw, H·W] = Wᵀ · x, then every column entry is
/// added at its output pixel (i·s + a - p, j·s + b - p). `x` is (values, channel stride, pixel
/// stride): channel c of pixel i·W + j at c·cs + (i·W + j)·ps.
fn conv_transpose2d_image(
    g: &Geom,
    (x, cs, ps): (&[f32], usize, usize),
    wt: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    y: &mut [f32],
) {
    let hw = g.h * g.w;
    let okk = o * g.kh * g.kw;
    let lo = g.ho * g.wo;
    // weight [C, O·kh·kw] read transposed: element (q, c) at c·okk + q. (Every value written:
    // no zero-fill.)
    let col = sgemm_new(okk, hw, g.c, wt, 1, okk, x, cs, ps, &GemmOpts::default());

    // kernel == stride, no padding: output pixels are hit exactly once, so assign, no bounds.
    let exact = g.kh == g.sh && g.kw == g.sw && g.ph == 0 && g.pw == 0 && g.ho == g.h * g.kh && g.wo == g.w * g.kw;
    let min_planes = (PAR_MIN_FLOATS / lo).max(1);
    if exact {
        y.par_chunks_exact_mut(lo).with_min_len(min_planes).enumerate().for_each(|(oi, plane)| {
            let bo = bias.map_or(0.0, |b| b[oi]);
            for (r, out_row) in plane.chunks_exact_mut(g.wo).enumerate() {
                let (i, a) = (r / g.kh, r % g.kh);
                if g.kw == 2 {
                    // The upscaler's case: two source rows interleaved, written as pairs (the
                    // compiler's shuffles instead of one strided store per value).
                    let q = (oi * g.kh + a) * 2;
                    let s0 = &col[q * hw + i * g.w..][..g.w];
                    let s1 = &col[(q + 1) * hw + i * g.w..][..g.w];
                    interleave_pairs(out_row, s0, s1, bo);
                    continue;
                }
                for b in 0..g.kw {
                    let q = (oi * g.kh + a) * g.kw + b;
                    let src = &col[q * hw + i * g.w..q * hw + (i + 1) * g.w];
                    for (d, &v) in out_row[b..].iter_mut().step_by(g.kw).zip(src) {
                        *d = bo + v;
                    }
                }
            }
        });
        return;
    }

    y.par_chunks_exact_mut(lo).with_min_len(min_planes).enumerate().for_each(|(oi, plane)| {
        plane.fill(bias.map_or(0.0, |b| b[oi]));
        for a in 0..g.kh {
            for b in 0..g.kw {
                let q = (oi * g.kh + a) * g.kw + b;
                // Input columns j whose output column j·sw + b - pw falls inside 0..wo.
                let js = index_range(g.w, g.wo, g.sw, g.pw, b);
                for i in 0..g.h {
                    let oh = i * g.sh + a;
                    if oh < g.ph || oh - g.ph >= g.ho {
                        continue;
                    }
                    let out_row = &mut plane[(oh - g.ph) * g.wo..(oh - g.ph + 1) * g.wo];
                    let src = &col[q * hw + i * g.w..q * hw + (i + 1) * g.w];
                    for j in js.clone() {
                        out_row[j * g.sw + b - g.pw] += src[j];
                    }
                }
            }
        }
    });
}

/// `out[2j] = bias + s0[j]`, `out[2j + 1] = bias + s1[j]`, on the CPU's widest vectors.
pub(super) fn interleave_pairs(out: &mut [f32], s0: &[f32], s1: &[f32], bias: f32) {
    #[inline(always)]
    fn body(out: &mut [f32], s0: &[f32], s1: &[f32], bias: f32) {
        for ((d, &v0), &v1) in out.as_chunks_mut::<2>().0.iter_mut().zip(s0).zip(s1) {
            d[0] = bias + v0;
            d[1] = bias + v1;
        }
    }
    dispatch!(body(out: &mut [f32], s0: &[f32], s1: &[f32], bias: f32))
}
