//! matmul, linear and the convolutions. Weight gradients of the convolutions are one GEMM over
//! an im2col buffer (built here, in chunks of images); input gradients are the adjoint conv.

use super::{mask, no_rule, scalar, sum_to_shape, InputGrads};
use crate::op::Op;
use tensor::ops::Activation;
use tensor::{DType, Result, Tensor};

/// im2col chunks hold about this many floats (64 MiB), whatever the batch and image size.
const COL_BUDGET: usize = 1 << 24;

pub(super) fn backward(op: &Op, xs: &[Tensor], y: &Tensor, g: &Tensor) -> Result<InputGrads> {
    let (x, w) = (&xs[0], &xs[1]);
    match op {
        // y = a b:  da = g bᵀ,  db = aᵀ g  (summed over broadcast batch dims)
        Op::Matmul => Ok(vec![
            Some(sum_to_shape(&g.matmul(&w.t()?)?, x.shape())?),
            Some(sum_to_shape(&x.t()?.matmul(g)?, w.shape())?),
        ]),
        // y = act(x wᵀ + b):  gz = g act'(z),  dx = gz w,  dw = gzᵀ x,  db = sum gz
        Op::Linear { act, has_bias } => {
            let gz = match act {
                Activation::None => g.clone(),
                // relu'(z) = [z > 0] = [y > 0]
                Activation::Relu => g.mul(&mask(y.gt(&scalar(0.0, y.dtype())), y.dtype())?)?,
                // gelu'(z) with z recomputed
                Activation::Gelu => x.linear(w, xs.get(2).filter(|_| *has_bias))?.gelu_backward(g)?,
            };
            let (n_in, n_out) = (w.shape()[1], w.shape()[0]);
            let x2 = x.reshape(&[usize::MAX, n_in])?;
            let gz2 = gz.reshape(&[x2.shape()[0], n_out])?;
            let mut out = vec![Some(gz2.matmul(w)?.reshape(x.shape())?), Some(gz2.t()?.matmul(&x2)?)];
            if *has_bias {
                out.push(Some(gz2.sum(&[0], false)?));
            }
            Ok(out)
        }
        // dx = conv_transpose2d(g, w) (output padding restores the floored rows),
        // dw[o, c, a, b] = sum g[n, o, i, j] x[n, c, i s + a - p, j s + b - p],  db = sum g
        Op::Conv2d { stride, padding, has_bias } => {
            let [_, _, h, wd] = dims4(x)?;
            let [_, _, kh, kw] = dims4(w)?;
            let [_, _, ho, wo] = dims4(g)?;
            let out_pad =
                (h + 2 * padding.0 - ((ho - 1) * stride.0 + kh), wd + 2 * padding.1 - ((wo - 1) * stride.1 + kw));
            let dx = g.conv_transpose2d_ext(w, None, *stride, *padding, out_pad)?;
            // dw [O, C·kh·kw] = g [O, N·L] · col(x)ᵀ
            let dw = weight_grad(g, x, (kh, kw), *stride, *padding, (ho, wo))?.reshape(w.shape())?;
            Ok(with_bias(vec![Some(dx), Some(dw.to_dtype(w.dtype()))], g, *has_bias)?)
        }
        // dx = conv2d(g, w) (same weight layout read as [C, O, kh, kw]),
        // dw[c, o, a, b] = sum x[n, c, i, j] g[n, o, i s + a - p, j s + b - p],  db = sum g
        Op::ConvTranspose2d { stride, padding, has_bias } => {
            let [_, _, h, wd] = dims4(x)?;
            let [_, _, kh, kw] = dims4(w)?;
            let dx = g.conv2d(w, None, *stride, *padding)?;
            // dw [C, O·kh·kw] = x [C, N·H·W] · col(g)ᵀ
            let dw = weight_grad(x, g, (kh, kw), *stride, *padding, (h, wd))?.reshape(w.shape())?;
            Ok(with_bias(vec![Some(dx), Some(dw.to_dtype(w.dtype()))], g, *has_bias)?)
        }
        other => Err(no_rule(other)),
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    t.expect_rank("conv backward", 4)?;
    let s = t.shape();
    Ok([s[0], s[1], s[2], s[3]])
}

fn with_bias(mut out: InputGrads, g: &Tensor, has_bias: bool) -> Result<InputGrads> {
    if has_bias {
        out.push(Some(g.sum(&[0, 2, 3], false)?));
    }
    Ok(out)
}

/// sum over n, i, j of left[n, r, i, j] · src[n, c, i·s + a - p, j·s + b - p], as [R, C·kh·kw]:
/// left [N, R, oh, ow] against im2col of src [N, C, H, W] for output positions oh × ow.
/// Computed in f32, over chunks of images so the im2col buffer stays bounded.
fn weight_grad(
    left: &Tensor,
    src: &Tensor,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    out_hw: (usize, usize),
) -> Result<Tensor> {
    let [n, r, _, _] = dims4(left)?;
    let [_, c, _, _] = dims4(src)?;
    let kk = c * k.0 * k.1;
    let l = out_hw.0 * out_hw.1;
    let per_chunk = (COL_BUDGET / (kk * l).max(1)).clamp(1, n.max(1));
    let left = left.to_dtype(DType::F32);
    let src = src.to_dtype(DType::F32);
    let mut acc = Tensor::zeros(&[r, kk], DType::F32);
    for n0 in (0..n).step_by(per_chunk) {
        let nb = per_chunk.min(n - n0);
        let lm = left.narrow(0, n0, nb)?.permute(&[1, 0, 2, 3])?.reshape(&[r, nb * l])?;
        let sv = src.narrow(0, n0, nb)?.to_f32_vec()?;
        let col = im2col(&sv, nb, src.shape(), k, stride, pad, out_hw);
        let col = Tensor::from_vec(col, &[kk, nb * l])?;
        acc = acc.add(&lm.matmul(&col.t()?)?)?;
    }
    Ok(acc)
}

/// col[(c·kh + a)·kw + b, n·L + i·ow + j] = src[n, c, i·sh + a - ph, j·sw + b - pw] (0 outside),
/// for src [nb, C, H, W] (contiguous) and output positions i < oh, j < ow (L = oh·ow).
fn im2col(
    src: &[f32],
    nb: usize,
    shape: &[usize],
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let l = oh * ow;
    let row_len = nb * l;
    let mut col = vec![0f32; c * kh * kw * row_len];
    for ci in 0..c {
        for a in 0..kh {
            for b in 0..kw {
                let row = &mut col[((ci * kh + a) * kw + b) * row_len..][..row_len];
                for n in 0..nb {
                    let plane = &src[(n * c + ci) * h * w..][..h * w];
                    for i in 0..oh {
                        let Some(ih) = (i * sh + a).checked_sub(ph).filter(|&v| v < h) else { continue };
                        let dst = &mut row[n * l + i * ow..][..ow];
                        for (j, d) in dst.iter_mut().enumerate() {
                            if let Some(iw) = (j * sw + b).checked_sub(pw).filter(|&v| v < w) {
                                *d = plane[ih * w + iw];
                            }
                        }
                    }
                }
            }
        }
    }
    col
}
