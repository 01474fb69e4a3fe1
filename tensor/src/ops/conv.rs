//! conv2d and conv_transpose2d (NCHW), PyTorch semantics (zero padding, floor output size).
//!
//! Both lower to the one GEMM in `cpu::gemm`: conv2d through im2col (`W[O, C·kh·kw] · col`),
//! conv_transpose2d through the transposed product (`Wᵀ[O·kh·kw, C] · x`) followed by col2im,
//! a scatter-add into the output. Work is split over the batch with rayon; inside one image
//! im2col rows and col2im output channels are split too, and the GEMM does its own splitting. Also home of the NCHW helpers that pool.rs and interp.rs share.

use crate::cpu::gemm::sgemm;
use crate::{bail, CpuStorage, DType, Error, Layout, Result, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// im2col is built in tiles of output rows so its buffer stays near this many floats (16 MiB),
/// whatever the image size (MTCNN's first conv on a large photo would otherwise need gigabytes).
const COL_BUDGET: usize = 1 << 22;

/// im2col / col2im work below this many floats per task stays on one thread.
const PAR_MIN_FLOATS: usize = 1 << 15;

/// The dims of a rank-4 float (NCHW) tensor, or an error naming `op`.
pub(crate) fn nchw_dims(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    x.expect_rank(op, 4)?;
    x.expect_float(op)?;
    let s = x.shape();
    Ok([s[0], s[1], s[2], s[3]])
}

/// f32 results as a contiguous tensor of the float `dtype` (f16/bf16 are rounded back).
pub(crate) fn from_f32_vec(v: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    debug_assert!(dtype.is_float());
    let storage = match dtype {
        DType::F16 => CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        _ => CpuStorage::F32(v),
    };
    Tensor::from_storage(storage, Layout::contiguous(shape))
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

/// A bias must be a [O] tensor of the input's dtype.
fn check_bias(op: &'static str, x: &Tensor, bias: Option<&Tensor>, o: usize) -> Result<()> {
    if let Some(b) = bias {
        same_dtype(op, x, b)?;
        if b.shape() != [o] {
            return Err(Error::BadShape { op, shape: b.shape().to_vec(), expected: format!("bias of shape [{o}]") });
        }
    }
    Ok(())
}

fn check_common(
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    stride: (usize, usize),
) -> Result<([usize; 4], [usize; 4])> {
    let xd = nchw_dims(op, x)?;
    let wd = nchw_dims(op, weight)?;
    same_dtype(op, x, weight)?;
    if xd[1] == 0 || xd[2] == 0 || xd[3] == 0 {
        bail!(op, "input {:?} has an empty channel or spatial dimension", x.shape());
    }
    if wd[2] == 0 || wd[3] == 0 {
        bail!(op, "weight {:?} has an empty kernel", weight.shape());
    }
    if stride.0 == 0 || stride.1 == 0 {
        bail!(op, "stride {stride:?} must be positive (input {:?}, weight {:?})", x.shape(), weight.shape());
    }
    Ok((xd, wd))
}

/// Geometry of one 2-D convolution (also read the other way round by the transposed conv).
#[derive(Clone, Copy, Debug)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    /// conv2d: output size; conv_transpose2d: its output size too (the big side).
    ho: usize,
    wo: usize,
}

impl Tensor {
    /// x [N,C,H,W], weight [O,C,kh,kw], bias [O].
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        conv2d_impl(self, weight, bias, stride, padding, COL_BUDGET)
    }

    /// x [N,C,H,W], weight [C,O,kh,kw] (PyTorch layout), bias [O].
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
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
        let x = self.f32_slice()?;
        let wt = weight.f32_slice()?;
        let b = bias.map(|b| b.f32_slice()).transpose()?;
        let mut out = vec![0f32; n * o * g.ho * g.wo];
        out.par_chunks_mut(o * g.ho * g.wo)
            .zip(x.par_chunks(c * h * w))
            .for_each(|(y, xi)| conv_transpose2d_image(&g, xi, &wt, b.as_deref(), o, y));
        Ok(from_f32_vec(out, &out_shape, self.dtype()))
    }
}

impl Tensor {
    /// The weight gradient of both convolutions as one primitive, `self` [N, R, Ho, Wo] against
    /// the im2col of `src` [N, C, H, W] at the output positions Ho x Wo:
    /// out[r, (c·kh + a)·kw + b] = sum over n, i, j of self[n, r, i, j] · src[n, c, i·sh + a - ph,
    /// j·sw + b - pw] (0 outside), an f32 [R, C·kh·kw]. conv2d's dW is `grad.conv2d_weight_grad(x)`
    /// (with Ho x Wo its output), conv_transpose2d's is `x.conv2d_weight_grad(grad)`.
    pub fn conv2d_weight_grad(
        &self,
        src: &Tensor,
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_weight_grad";
        let [n, r, ho, wo] = nchw_dims(OP, self)?;
        let [ns, c, h, w] = nchw_dims(OP, src)?;
        if ns != n || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            bail!(
                OP,
                "left {:?} and source {:?} need the same batch, kernel {:?} and stride {:?} nonzero",
                self.shape(),
                src.shape(),
                (kh, kw),
                (sh, sw)
            );
        }
        let g = Geom { c, h, w, kh, kw, sh, sw, ph, pw, ho, wo };
        let (k, l) = (c * kh * kw, ho * wo);
        let mut acc = vec![0f32; r * k];
        if n * l * k * r == 0 {
            return Tensor::from_vec(acc, &[r, k]);
        }
        let left = self.f32_slice()?;
        let xs = src.f32_slice()?;
        let one_by_one = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && (h, w) == (ho, wo);
        let rows_per_tile = (COL_BUDGET / (k * wo)).clamp(1, ho);
        let mut col = if one_by_one { vec![] } else { vec![0f32; k * rows_per_tile * wo] };
        for (li, xi) in left.chunks_exact(r * l).zip(xs.chunks_exact(c * h * w)) {
            if one_by_one {
                // The image itself is the column matrix [C, H·W]: acc += left_n · x_nᵀ.
                sgemm(r, k, l, li, l, 1, xi, 1, l, &mut acc, k, true);
                continue;
            }
            for r0 in (0..ho).step_by(rows_per_tile) {
                let rows = rows_per_tile.min(ho - r0);
                let nl = rows * wo;
                im2col(&g, xi, r0, rows, &mut col[..k * nl]);
                // acc [R, K] += left_n[:, tile] [R, nl] · colᵀ [nl, K]
                sgemm(r, k, nl, &li[r0 * wo..], l, 1, &col, 1, nl, &mut acc, k, true);
            }
        }
        Tensor::from_vec(acc, &[r, k])
    }
}

/// conv2d with an explicit im2col tile budget (tests force tiny tiles through it).
fn conv2d_impl(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    col_budget: usize,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let ([n, c, h, w], [o, wc, kh, kw]) = check_common(OP, x, weight, stride)?;
    if wc != c {
        return Err(Error::ShapeMismatch { op: OP, lhs: x.shape().to_vec(), rhs: weight.shape().to_vec() });
    }
    check_bias(OP, x, bias, o)?;
    let (ph, pw) = padding;
    if h + 2 * ph < kh || w + 2 * pw < kw {
        bail!(
            OP,
            "kernel {kh}x{kw} is larger than the padded input {}x{} (input {:?}, weight {:?}, padding {padding:?})",
            h + 2 * ph,
            w + 2 * pw,
            x.shape(),
            weight.shape()
        );
    }
    let (sh, sw) = stride;
    let g = Geom { c, h, w, kh, kw, sh, sw, ph, pw, ho: (h + 2 * ph - kh) / sh + 1, wo: (w + 2 * pw - kw) / sw + 1 };
    let out_shape = [n, o, g.ho, g.wo];
    if n == 0 || o == 0 {
        return Ok(Tensor::zeros(&out_shape, x.dtype()));
    }
    let xs = x.f32_slice()?;
    let wt = weight.f32_slice()?;
    let b = bias.map(|b| b.f32_slice()).transpose()?;
    let mut out = vec![0f32; n * o * g.ho * g.wo];
    out.par_chunks_mut(o * g.ho * g.wo)
        .zip(xs.par_chunks(c * h * w))
        .for_each(|(y, xi)| conv2d_image(&g, xi, &wt, b.as_deref(), o, y, col_budget));
    Ok(from_f32_vec(out, &out_shape, x.dtype()))
}

/// One image: y[O, Ho·Wo] = bias + W[O, K] · col[K, Ho·Wo], K = C·kh·kw.
fn conv2d_image(g: &Geom, x: &[f32], wt: &[f32], bias: Option<&[f32]>, o: usize, y: &mut [f32], col_budget: usize) {
    let l = g.ho * g.wo;
    let k = g.c * g.kh * g.kw;
    for (oi, row) in y.chunks_mut(l).enumerate() {
        row.fill(bias.map_or(0.0, |b| b[oi]));
    }
    // 1x1, stride 1, no padding: the image itself is the column matrix [C, H·W].
    if g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 {
        sgemm(o, l, k, wt, k, 1, x, l, 1, y, l, true);
        return;
    }
    let rows_per_tile = (col_budget / (k * g.wo)).clamp(1, g.ho);
    let mut col = vec![0f32; k * rows_per_tile * g.wo];
    for r0 in (0..g.ho).step_by(rows_per_tile) {
        let rows = rows_per_tile.min(g.ho - r0);
        let nl = rows * g.wo;
        im2col(g, x, r0, rows, &mut col[..k * nl]);
        // The tile's product lands in columns r0·Wo.. of every output channel row.
        sgemm(o, nl, k, wt, k, 1, &col, nl, 1, &mut y[r0 * g.wo..], l, true);
    }
}

/// col[(c·kh + a)·kw + b, (i - r0)·Wo + j] = x[c, i·sh + a - ph, j·sw + b - pw] (0 outside),
/// for output rows i in r0..r0+rows. With kernel == stride and no padding (patch embedding)
/// this is a pure strided gather: no zero fill, no bounds work per element.
fn im2col(g: &Geom, x: &[f32], r0: usize, rows: usize, col: &mut [f32]) {
    let nl = rows * g.wo;
    let kk = g.kh * g.kw;
    // Rows of col are independent: split them over threads when there is enough to copy
    // (a batch of one image gets no parallelism from the batch loop).
    let min_rows = (PAR_MIN_FLOATS / nl.max(1)).max(1);
    col.par_chunks_mut(nl).with_min_len(min_rows).enumerate().for_each(|(q, dst_row)| {
        let (ci, a, b) = (q / kk, q % kk / g.kw, q % g.kw);
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        let js = index_range(g.wo, g.w, g.sw, g.pw, b);
        for (i, dst) in dst_row.chunks_exact_mut(g.wo).enumerate() {
            let ih = (r0 + i) * g.sh + a;
            if ih < g.ph || ih - g.ph >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[(ih - g.ph) * g.w..(ih - g.ph + 1) * g.w];
            dst[..js.start].fill(0.0);
            dst[js.end..].fill(0.0);
            // Input column of output column j is j·sw + b - pw; js keeps it in range.
            let first = js.start * g.sw + b - g.pw;
            if g.sw == 1 {
                dst[js.clone()].copy_from_slice(&src[first..first + js.len()]);
            } else {
                for (t, d) in dst[js.clone()].iter_mut().enumerate() {
                    *d = src[first + t * g.sw];
                }
            }
        }
    });
}

/// One image of the transposed conv: col[O·kh·kw, H·W] = Wᵀ · x, then every column entry is
/// added at its output pixel (i·s + a - p, j·s + b - p).
fn conv_transpose2d_image(g: &Geom, x: &[f32], wt: &[f32], bias: Option<&[f32]>, o: usize, y: &mut [f32]) {
    let hw = g.h * g.w;
    let okk = o * g.kh * g.kw;
    let lo = g.ho * g.wo;
    let mut col = vec![0f32; okk * hw];
    // weight [C, O·kh·kw] read transposed: element (q, c) at c·okk + q.
    sgemm(okk, hw, g.c, wt, 1, okk, x, hw, 1, &mut col, hw, false);

    // kernel == stride, no padding: output pixels are hit exactly once, so assign, no bounds.
    let exact = g.kh == g.sh && g.kw == g.sw && g.ph == 0 && g.pw == 0 && g.ho == g.h * g.kh && g.wo == g.w * g.kw;
    let min_planes = (PAR_MIN_FLOATS / lo).max(1);
    if exact {
        y.par_chunks_exact_mut(lo).with_min_len(min_planes).enumerate().for_each(|(oi, plane)| {
            let bo = bias.map_or(0.0, |b| b[oi]);
            for (r, out_row) in plane.chunks_exact_mut(g.wo).enumerate() {
                let (i, a) = (r / g.kh, r % g.kh);
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

/// The indices j in 0..count whose mapped index j·s + b - p lies in 0..target (im2col: output
/// column to input column; col2im: input column to output column).
fn index_range(count: usize, target: usize, s: usize, p: usize, b: usize) -> std::ops::Range<usize> {
    let hi = if target + p > b { ((target - 1 + p - b) / s + 1).min(count) } else { 0 };
    let lo = if p > b { (p - b).div_ceil(s).min(hi) } else { 0 };
    lo..hi
}

/// Helpers shared by the conv, pool and interp tests.
#[cfg(test)]
pub(crate) mod test_util {
    use crate::{DType, Tensor};

    /// A random NCHW tensor of `shape`, laid out as `kind` says: 0 contiguous, 1 a permuted
    /// NHWC buffer, 2 a narrowed view of a wider buffer, 3 every other column of a wider buffer.
    pub(crate) fn nchw_input(shape: [usize; 4], seed: u64, kind: u8, dtype: DType) -> Tensor {
        let [n, c, h, w] = shape;
        match kind % 4 {
            0 => Tensor::randn(&shape, seed, dtype),
            1 => Tensor::randn(&[n, h, w, c], seed, dtype).permute(&[0, 3, 1, 2]).unwrap(),
            2 => Tensor::randn(&[n, c + 1, h + 3, w], seed, dtype).narrow(2, 2, h).unwrap().narrow(1, 1, c).unwrap(),
            _ => Tensor::randn(&[n, c, h, 2 * w], seed, dtype).slice_step(3, 1, 2 * w, 2).unwrap(),
        }
    }

    /// Checks `got` against an f64 reference within `tol · (1 + |ref|)`.
    pub(crate) fn assert_close(op: &str, got: &Tensor, want: &[f64], shape: &[usize], tol: f64) {
        assert_eq!(got.shape(), shape, "{op}: shape");
        let g = got.to_f64_vec().unwrap();
        for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{op}: element {i}: got {a}, want {b}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{assert_close, nchw_input};
    use super::*;
    use proptest::prelude::*;

    /// Direct conv2d in f64: out[n,o,i,j] = b[o] + Σ x[n,c,i·s+a-p, j·s+b-p] · w[o,c,a,b].
    #[allow(clippy::too_many_arguments)]
    fn conv_ref(
        x: &[f64],
        [n, c, h, w]: [usize; 4],
        wt: &[f64],
        [o, _, kh, kw]: [usize; 4],
        bias: Option<&[f64]>,
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> (Vec<f64>, Vec<usize>) {
        let ho = (h + 2 * ph - kh) / sh + 1;
        let wo = (w + 2 * pw - kw) / sw + 1;
        let mut out = vec![0.0; n * o * ho * wo];
        for ni in 0..n {
            for oi in 0..o {
                for i in 0..ho {
                    for j in 0..wo {
                        let mut acc = bias.map_or(0.0, |b| b[oi]);
                        for ci in 0..c {
                            for a in 0..kh {
                                for b in 0..kw {
                                    let (y, xx) =
                                        ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                        continue;
                                    }
                                    let xv = x[((ni * c + ci) * h + y as usize) * w + xx as usize];
                                    acc += xv * wt[((oi * c + ci) * kh + a) * kw + b];
                                }
                            }
                        }
                        out[((ni * o + oi) * ho + i) * wo + j] = acc;
                    }
                }
            }
        }
        (out, vec![n, o, ho, wo])
    }

    /// Direct transposed conv in f64: x[n,c,i,j] · w[c,o,a,b] lands at (i·s+a-p, j·s+b-p).
    #[allow(clippy::too_many_arguments)]
    fn conv_t_ref(
        x: &[f64],
        [n, c, h, w]: [usize; 4],
        wt: &[f64],
        [_, o, kh, kw]: [usize; 4],
        bias: Option<&[f64]>,
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        (oph, opw): (usize, usize),
    ) -> (Vec<f64>, Vec<usize>) {
        let ho = (h - 1) * sh + kh + oph - 2 * ph;
        let wo = (w - 1) * sw + kw + opw - 2 * pw;
        let mut out = vec![0.0; n * o * ho * wo];
        for ni in 0..n {
            for oi in 0..o {
                for v in &mut out[(ni * o + oi) * ho * wo..(ni * o + oi + 1) * ho * wo] {
                    *v = bias.map_or(0.0, |b| b[oi]);
                }
                for ci in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            for a in 0..kh {
                                for b in 0..kw {
                                    let (y, xx) =
                                        ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                    if y < 0 || xx < 0 || y >= ho as isize || xx >= wo as isize {
                                        continue;
                                    }
                                    out[((ni * o + oi) * ho + y as usize) * wo + xx as usize] +=
                                        x[((ni * c + ci) * h + i) * w + j] * wt[((ci * o + oi) * kh + a) * kw + b];
                                }
                            }
                        }
                    }
                }
            }
        }
        (out, vec![n, o, ho, wo])
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }

    /// Runs conv2d (with the given im2col budget) against the reference.
    #[allow(clippy::too_many_arguments)]
    fn check_conv(
        xs: [usize; 4],
        ws: [usize; 4],
        stride: (usize, usize),
        padding: (usize, usize),
        with_bias: bool,
        kind: u8,
        seed: u64,
        dtype: DType,
        budget: usize,
        tol: f64,
    ) {
        let x = nchw_input(xs, seed, kind, dtype);
        // Weight kind 1 is a permuted [C,O,kh,kw] buffer, so the weight is non-contiguous too.
        let wt = if kind % 2 == 1 {
            Tensor::randn(&[ws[1], ws[0], ws[2], ws[3]], seed ^ 7, dtype).permute(&[1, 0, 2, 3]).unwrap()
        } else {
            Tensor::randn(&ws, seed ^ 7, dtype)
        };
        let b = with_bias.then(|| Tensor::randn(&[ws[0]], seed ^ 9, dtype));
        let got = conv2d_impl(&x, &wt, b.as_ref(), stride, padding, budget).unwrap();
        assert_eq!(got.dtype(), dtype);
        let bv = b.as_ref().map(vals);
        let (want, shape) = conv_ref(&vals(&x), xs, &vals(&wt), ws, bv.as_deref(), stride, padding);
        assert_close("conv2d", &got, &want, &shape, tol);
    }

    /// (input shape, weight shape, stride, padding) with a kernel that fits the padded input.
    /// (input shape, weight shape, stride, padding).
    type ConvCase = ([usize; 4], [usize; 4], (usize, usize), (usize, usize));

    fn conv_case() -> impl Strategy<Value = ConvCase> {
        (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 0usize..=2, 0usize..=2)
            .prop_flat_map(|(n, c, o, kh, kw, sh, sw, ph, pw)| {
                let h_min = kh.saturating_sub(2 * ph).max(1);
                let w_min = kw.saturating_sub(2 * pw).max(1);
                (h_min..=9usize, w_min..=9usize)
                    .prop_map(move |(h, w)| ([n, c, h, w], [o, c, kh, kw], (sh, sw), (ph, pw)))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn conv2d_matches_reference(
            (xs, ws, stride, padding) in conv_case(),
            with_bias: bool,
            kind in 0u8..4,
            tiny_tiles: bool,
            seed: u64,
        ) {
            let budget = if tiny_tiles { 1 } else { COL_BUDGET };
            check_conv(xs, ws, stride, padding, with_bias, kind, seed, DType::F32, budget, 1e-4);
        }

        #[test]
        fn conv_transpose2d_matches_reference(
            (n, c, o, h, w) in (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=6, 1usize..=6),
            (kh, kw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            (ph, pw, oph, opw) in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
            with_bias: bool,
            kind in 0u8..4,
            seed: u64,
        ) {
            let (oph, opw) = (oph % sh, opw % sw);
            prop_assume!((h - 1) * sh + kh + oph > 2 * ph && (w - 1) * sw + kw + opw > 2 * pw);
            let x = nchw_input([n, c, h, w], seed, kind, DType::F32);
            let wt = nchw_input([c, o, kh, kw], seed ^ 3, kind / 2, DType::F32);
            let b = with_bias.then(|| Tensor::randn(&[o], seed ^ 5, DType::F32));
            let got = x.conv_transpose2d_ext(&wt, b.as_ref(), (sh, sw), (ph, pw), (oph, opw)).unwrap();
            let bv = b.as_ref().map(vals);
            let (want, shape) = conv_t_ref(
                &vals(&x), [n, c, h, w], &vals(&wt), [c, o, kh, kw], bv.as_deref(), (sh, sw), (ph, pw), (oph, opw),
            );
            assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
        }

        #[test]
        fn conv2d_half_precision_matches_reference(
            (xs, ws, stride, padding) in conv_case(),
            kind in 0u8..4,
            bf: bool,
            seed: u64,
        ) {
            let dtype = if bf { DType::BF16 } else { DType::F16 };
            check_conv(xs, ws, stride, padding, true, kind, seed, dtype, COL_BUDGET, 1e-2);
        }
    }

    #[test]
    fn conv2d_fast_paths_match_reference() {
        // 1x1 stride 1 (plain GEMM), 4x4/4 patch embedding (pure gather), MTCNN's 3x3 and 2x2.
        let cases = [
            ([2, 6, 5, 7], [4, 6, 1, 1], (1, 1), (0, 0)),
            ([2, 3, 16, 12], [5, 3, 4, 4], (4, 4), (0, 0)),
            ([2, 3, 18, 17], [5, 3, 4, 4], (4, 4), (0, 0)),
            ([1, 3, 12, 12], [10, 3, 3, 3], (1, 1), (0, 0)),
            ([1, 8, 5, 5], [6, 8, 2, 2], (1, 1), (0, 0)),
            ([2, 5, 7, 6], [3, 5, 1, 1], (2, 2), (0, 0)),
            // Big enough for im2col to split its rows over threads.
            ([1, 4, 64, 64], [3, 4, 3, 3], (1, 1), (1, 1)),
        ];
        for (i, (xs, ws, s, p)) in cases.into_iter().enumerate() {
            for kind in 0..4 {
                check_conv(xs, ws, s, p, true, kind, 100 + i as u64, DType::F32, COL_BUDGET, 1e-4);
            }
        }
    }

    #[test]
    fn conv_transpose2d_kernel_equals_stride_matches_reference() {
        // The parsing head's 2x2 stride-2 upsampling, and a non-square 3x2 one.
        // The last one is big enough for col2im to split output channels over threads.
        let cases = [
            ([2, 5, 3, 4], [5, 3, 2, 2], (2, 2)),
            ([1, 4, 3, 5], [4, 2, 3, 2], (3, 2)),
            ([1, 3, 40, 40], [3, 12, 2, 2], (2, 2)),
        ];
        for (xs, ws, s) in cases {
            let x = nchw_input(xs, 11, 1, DType::F32);
            let wt = Tensor::randn(&ws, 12, DType::F32);
            let b = Tensor::randn(&[ws[1]], 13, DType::F32);
            let got = x.conv_transpose2d(&wt, Some(&b), s, (0, 0)).unwrap();
            let (want, shape) = conv_t_ref(&vals(&x), xs, &vals(&wt), ws, Some(&vals(&b)), s, (0, 0), (0, 0));
            assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
        }
    }

    /// The weight-gradient primitive against its definition, in f64, for both convolutions'
    /// uses (the gradient of conv2d and of conv_transpose2d) and strided operands.
    #[test]
    fn weight_grad_matches_definition() {
        // (n, c, r, h, w, kh, kw, sh, sw, ph, pw, ho, wo): ho x wo output positions.
        let cases = [
            (2, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, 7, 6),
            (1, 2, 3, 9, 8, 3, 2, 2, 3, 1, 0, 5, 3),
            (2, 3, 5, 8, 8, 4, 4, 4, 4, 0, 0, 2, 2),
            (2, 4, 3, 5, 5, 1, 1, 1, 1, 0, 0, 5, 5),
            // conv_transpose2d's use: left is the input, the source its (larger) output gradient.
            (2, 3, 2, 9, 11, 3, 3, 2, 2, 1, 1, 5, 6),
        ];
        for (case, &(n, c, r, h, w, kh, kw, sh, sw, ph, pw, ho, wo)) in cases.iter().enumerate() {
            let left = nchw_input([n, r, ho, wo], case as u64, case as u8, DType::F32);
            let src = nchw_input([n, c, h, w], 50 + case as u64, case as u8 + 1, DType::F32);
            let got = left.conv2d_weight_grad(&src, (kh, kw), (sh, sw), (ph, pw)).unwrap();
            let (lv, sv) = (vals(&left), vals(&src));
            let mut want = vec![0.0; r * c * kh * kw];
            for ni in 0..n {
                for ri in 0..r {
                    for ci in 0..c {
                        for a in 0..kh {
                            for b in 0..kw {
                                for i in 0..ho {
                                    for j in 0..wo {
                                        let (y, x) =
                                            ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                            continue;
                                        }
                                        want[ri * c * kh * kw + (ci * kh + a) * kw + b] += lv
                                            [((ni * r + ri) * ho + i) * wo + j]
                                            * sv[((ni * c + ci) * h + y as usize) * w + x as usize];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert_close(&format!("weight grad case {case}"), &got, &want, &[r, c * kh * kw], 1e-5);
        }
        let e = Tensor::zeros(&[2, 1, 3, 3], DType::F32)
            .conv2d_weight_grad(&Tensor::zeros(&[1, 1, 3, 3], DType::F32), (1, 1), (1, 1), (0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv2d_weight_grad") && e.contains("[2, 1, 3, 3]"), "{e}");
    }

    #[test]
    fn conv2d_known_values() {
        // 3x3 box filter over 1..=9 with padding 1: corners sum their 2x2 neighbourhood.
        let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
        let wt = Tensor::ones(&[1, 1, 3, 3], DType::F32);
        let b = Tensor::from_vec(vec![0.5f32], &[1]).unwrap();
        let y = x.conv2d(&wt, Some(&b), (1, 1), (1, 1)).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5]);
        // Stride 2: only the corners and the centre... of a 3x3 output grid → 2x2.
        let y = x.conv2d(&wt, None, (2, 2), (1, 1)).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.0, 16.0, 24.0, 28.0]);
        // convT 2x2/2 of a single pixel 2 with weight [1,2;3,4] and bias 1.
        let x = Tensor::from_vec(vec![2.0f32], &[1, 1, 1, 1]).unwrap();
        let wt = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        let y = x.conv_transpose2d(&wt, Some(&b), (2, 2), (0, 0)).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.0, 5.0, 7.0, 9.0]);
    }

    #[test]
    fn conv_transpose2d_large_overlapping_matches_reference() {
        // Overlapping windows with padding, big enough for col2im to run over several threads.
        let x = nchw_input([1, 3, 30, 30], 31, 3, DType::F32);
        let wt = Tensor::randn(&[3, 12, 3, 3], 32, DType::F32);
        let got = x.conv_transpose2d(&wt, None, (2, 2), (1, 1)).unwrap();
        let (want, shape) =
            conv_t_ref(&vals(&x), [1, 3, 30, 30], &vals(&wt), [3, 12, 3, 3], None, (2, 2), (1, 1), (0, 0));
        assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
    }

    #[test]
    fn conv_transpose2d_bf16_matches_reference() {
        let x = nchw_input([2, 3, 4, 5], 21, 2, DType::BF16);
        let wt = Tensor::randn(&[3, 4, 3, 3], 22, DType::BF16);
        let b = Tensor::randn(&[4], 23, DType::BF16);
        let got = x.conv_transpose2d(&wt, Some(&b), (2, 2), (1, 1)).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        let (want, shape) =
            conv_t_ref(&vals(&x), [2, 3, 4, 5], &vals(&wt), [3, 4, 3, 3], Some(&vals(&b)), (2, 2), (1, 1), (0, 0));
        assert_close("conv_transpose2d", &got, &want, &shape, 1e-2);
    }

    #[test]
    fn conv_errors_name_op_and_shapes() {
        let x = Tensor::zeros(&[1, 3, 5, 5], DType::F32);
        let e = x.conv2d(&Tensor::zeros(&[4, 2, 3, 3], DType::F32), None, (1, 1), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("[1, 3, 5, 5]") && e.contains("[4, 2, 3, 3]"), "{e}");
        let w = Tensor::zeros(&[4, 3, 3, 3], DType::F32);
        let e = x.conv2d(&w, None, (0, 1), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("stride"), "{e}");
        let big = Tensor::zeros(&[4, 3, 7, 3], DType::F32);
        let e = x.conv2d(&big, None, (1, 1), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("larger") && e.contains("[4, 3, 7, 3]"), "{e}");
        assert!(x.conv2d(&big, None, (1, 1), (1, 0)).is_ok());
        let e = x.conv2d(&w, Some(&Tensor::zeros(&[3], DType::F32)), (1, 1), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("bias"), "{e}");
        let e = Tensor::zeros(&[3, 5, 5], DType::F32).conv2d(&w, None, (1, 1), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv2d") && e.contains("rank 4"), "{e}");
        assert!(matches!(
            Tensor::zeros(&[1, 3, 5, 5], DType::I64).conv2d(&w, None, (1, 1), (0, 0)),
            Err(Error::UnsupportedDType { op: "conv2d", .. })
        ));
        assert!(matches!(
            x.conv2d(&w.to_dtype(DType::F16), None, (1, 1), (0, 0)),
            Err(Error::DTypeMismatch { op: "conv2d", .. })
        ));
        let wt = Tensor::zeros(&[2, 4, 2, 2], DType::F32);
        let e = x.conv_transpose2d(&wt, None, (2, 2), (0, 0)).unwrap_err().to_string();
        assert!(e.contains("conv_transpose2d") && e.contains("[2, 4, 2, 2]"), "{e}");
        let one = Tensor::zeros(&[1, 2, 1, 1], DType::F32);
        let e = one.conv_transpose2d(&wt, None, (1, 1), (1, 1)).unwrap_err().to_string();
        assert!(e.contains("conv_transpose2d") && e.contains("padding"), "{e}");
        assert!(one.conv_transpose2d_ext(&wt, None, (2, 2), (0, 0), (2, 0)).is_err());
    }

    #[test]
    fn empty_batch_gives_empty_output() {
        let x = Tensor::zeros(&[0, 3, 5, 5], DType::F32);
        let y = x.conv2d(&Tensor::zeros(&[4, 3, 3, 3], DType::F32), None, (1, 1), (0, 0)).unwrap();
        assert_eq!(y.shape(), &[0, 4, 3, 3]);
    }
}
