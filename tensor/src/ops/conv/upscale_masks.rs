//! SAM's output upscaling and the hypernetwork product in one pass over blocks of rows:
//! `lhs · gelu(convT₁(gelu(LayerNorm2d(convT₀(x)))))` for two 2x2, stride-2 transposed convs,
//! per image.
//!
//! Why: the composite writes each transposed product's columns, scatters them into an upscaled
//! map, normalises that map and runs a GELU over it, and then does it all again at twice the size
//! (for the FaceX parsing head at batch 8: maps of 26 and 51 MB), only for the product with the
//! mask tokens to read the last one: about a dozen passes over memory for maps that nothing else
//! reads. Every step is local to a pixel (a 2x2, stride-2 transposed conv maps each input pixel to
//! its own 2x2 output pixels; LayerNorm2d normalises each pixel over its channels), so a block of
//! input rows gives whole output rows by itself, each block's maps made and used while they are
//! in the core's cache.
//!
//! Each value is the same arithmetic in the same order as in the composite (the GEMM sums over
//! the depth the same way whatever columns it is given; the bias, the normalisation and the GELU
//! are the same functions on the same values), so the two give the same bits.

use super::conv_transpose::interleave_pairs;
use super::nchw_dims;
use crate::cpu::gemm::{sgemm_raw, GemmOpts};
use crate::cpu::parallel::SendPtr;
use crate::ops::gelu::gelu_tile_in_place;
use crate::ops::norm::{normalize_row, pixel_stats};
use crate::profile;
use crate::{CpuStorage, DType, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;

/// Floats of one block's maps together (1 MiB): the L2 of a Zen 4 core (2 MiB on the Xeons).
const BLOCK_FLOATS: usize = 1 << 18;

/// The weights of SAM's `output_upscaling`: ConvTranspose2d(C, O₀, 2, 2), LayerNorm2d(O₀),
/// GELU, ConvTranspose2d(O₀, O₁, 2, 2), GELU (conv weights in PyTorch's `[in, out, 2, 2]`).
#[derive(Clone, Copy)]
pub struct UpscalerRef<'a> {
    pub conv0_weight: &'a Tensor,
    pub conv0_bias: &'a Tensor,
    pub norm_weight: &'a Tensor,
    pub norm_bias: &'a Tensor,
    pub norm_eps: f64,
    pub conv1_weight: &'a Tensor,
    pub conv1_bias: &'a Tensor,
}

impl UpscalerRef<'_> {
    /// The composite: the six ops one after the other.
    pub fn composite(&self, x: &Tensor, lhs: &Tensor) -> Result<Tensor> {
        let y = x.conv_transpose2d(self.conv0_weight, Some(self.conv0_bias), (2, 2), (0, 0))?;
        let y = y.layer_norm2d(Some(self.norm_weight), Some(self.norm_bias), self.norm_eps)?.gelu()?;
        let up = y.conv_transpose2d(self.conv1_weight, Some(self.conv1_bias), (2, 2), (0, 0))?.gelu()?;
        let s = up.shape().to_vec();
        let masks = lhs.matmul(&up.reshape(&[s[0], s[1], s[2] * s[3]])?)?;
        let t = masks.shape()[1];
        masks.reshape(&[s[0], t, s[2], s[3]])
    }
}

/// One block's maps, kept per thread between calls.
#[derive(Default)]
struct Scratch {
    /// The columns of a transposed product.
    col: Vec<f32>,
    /// The map they scatter into.
    map: Vec<f32>,
    /// The first map normalised.
    norm: Vec<f32>,
    /// Per-pixel means (f64, as layer_norm2d keeps them) and 1/std.
    mean: Vec<f64>,
    rstd: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A 2x2, stride-2 transposed conv's product on a block of `npix` pixels, then its scatter:
/// `col[q, p] = Σ_c Wᵀ[q, c] x[c, p]` (x's channel c of pixel p at `x[c * cs + p * ps]`, `wt_t`
/// the weight transposed, `[4 O, C]`), then output row 2i + a of channel k interleaves columns
/// (k, a, 0) and (k, a, 1) of input row i, plus the bias, into `map` (`[O, 2 rows, 2 w]`).
#[allow(clippy::too_many_arguments)]
fn conv2x2_block(
    x: &[f32],
    (cs, ps): (usize, usize),
    c: usize,
    wt_t: &[f32],
    bias: &[f32],
    rows: usize,
    w: usize,
    col: &mut [f32],
    map: &mut [f32],
) {
    let (o, npix) = (bias.len(), rows * w);
    let q = 4 * o;
    let serial = GemmOpts { parallel: false, ..GemmOpts::default() };
    // SAFETY: the caller passes operands that cover the block (x: c channels of npix pixels
    // at these strides; col: q x npix values); with c > 0 the product writes all of col.
    unsafe { sgemm_raw(q, npix, c, wt_t, c, 1, x, cs, ps, col.as_mut_ptr(), q * npix, npix, &serial) };
    for k in 0..o {
        for i in 0..rows {
            for a in 0..2 {
                let qa = (k * 2 + a) * 2;
                let (s0, s1) = (&col[qa * npix + i * w..][..w], &col[(qa + 1) * npix + i * w..][..w]);
                interleave_pairs(&mut map[(k * 2 * rows + 2 * i + a) * 2 * w..][..2 * w], s0, s1, bias[k]);
            }
        }
    }
}

/// `[C, O, 2, 2]` read as `[C, 4 O]`, transposed once to `[4 O, C]` (`Wᵀ` as the composite reads
/// it): its rows are then read in place by every block's product instead of packed again by
/// each (the same values, the same sums).
fn transposed(w: &[f32], c: usize, q: usize) -> Vec<f32> {
    (0..q).flat_map(|qi| (0..c).map(move |ci| w[ci * q + qi])).collect()
}

impl Tensor {
    /// `lhs · up(self)` per image, `up` the [`UpscalerRef`]: self `[N, C, H, W]`, lhs `[N, T, O₁]`
    /// -> `[N, T, 4H, 4W]` (SAM's mask tokens against its upscaled image: the FaceX parsing
    /// logits). Its composite twin is [`UpscalerRef::composite`]: the same bits in f32. Other
    /// dtypes run the composite, which also names any shape that does not fit.
    pub fn upscale_masks(&self, up: &UpscalerRef, lhs: &Tensor) -> Result<Tensor> {
        let ([n, c, h, w], w0, w1) =
            (nchw_dims("upscale_masks", self)?, up.conv0_weight.shape(), up.conv1_weight.shape());
        let (o0, o1) = (if w0.len() == 4 { w0[1] } else { 0 }, if w1.len() == 4 { w1[1] } else { 0 });
        let params = [up.conv0_weight, up.conv0_bias, up.norm_weight, up.norm_bias, up.conv1_weight, up.conv1_bias];
        let fits = params.iter().chain([&self, &lhs]).all(|t| t.dtype() == DType::F32)
            && w0 == [c, o0, 2, 2]
            && [up.conv0_bias, up.norm_weight, up.norm_bias].iter().all(|t| t.shape() == [o0])
            && w1 == [o0, o1, 2, 2]
            && up.conv1_bias.shape() == [o1]
            && lhs.rank() == 3
            && lhs.shape()[0] == n
            && lhs.shape()[2] == o1;
        if !fits || [n, c, h, w, o0, o1, lhs.shape()[1]].contains(&0) {
            return up.composite(self, lhs);
        }
        let t = lhs.shape()[1];
        let flops = 2.0 * (n * h * w) as f64 * (4 * o0 * c + 16 * o1 * (o0 + t)) as f64;
        let _prof = profile::op(profile::Kind::Conv, flops, 0.0);
        // The input in place where its rows merge into one pixel index (as conv_transpose2d reads
        // it: the model's channels-last map viewed as NCHW), else a contiguous copy.
        let (l, st) = (self.layout(), &self.layout().strides);
        let (x, x_at, [x_ns, x_cs, x_ps]) = match self.cpu_storage() {
            Ok(CpuStorage::F32(v)) if h == 1 || st[2] == w * st[3] => {
                (Cow::Borrowed(&v[..]), l.offset, [st[0], st[1], st[3]])
            }
            _ => (self.f32_slice()?, 0, [c * h * w, h * w, 1]),
        };
        let (b0, gamma, beta, b1) = (
            up.conv0_bias.f32_slice()?,
            up.norm_weight.f32_slice()?,
            up.norm_bias.f32_slice()?,
            up.conv1_bias.f32_slice()?,
        );
        let (wt0, wt1) = (
            transposed(&up.conv0_weight.f32_slice()?, c, 4 * o0),
            transposed(&up.conv1_weight.f32_slice()?, o0, 4 * o1),
        );
        let hyper = lhs.f32_slice()?;
        let out_plane = 16 * h * w;
        // Input rows per block: each input pixel needs 4 O₀ columns, then 4 pixels of O₀ channels
        // twice (scattered and normalised), then 4 O₁ columns and 4 O₁ channels for each of those 4.
        let per_pixel = 12 * o0 + 32 * o1;
        let rows = (BLOCK_FLOATS / (per_pixel * w)).clamp(1, h);
        let blocks = h.div_ceil(rows);
        let len = n * t * out_plane;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        // Shared by the blocks; each writes only its own rows of each plane.
        let dst = SendPtr(out.spare_capacity_mut().as_mut_ptr());
        (0..n * blocks).into_par_iter().for_each(|unit| {
            let (img, i0) = (unit / blocks, unit % blocks * rows);
            let r = rows.min(h - i0);
            let (npix, npix1) = (r * w, 4 * r * w);
            SCRATCH.with(|s| {
                let Scratch { col, map, norm, mean, rstd } = &mut *s.borrow_mut();
                let grow = |v: &mut Vec<f32>, len: usize| v.resize(v.len().max(len), 0.0);
                grow(col, (4 * o0 * npix).max(4 * o1 * npix1));
                grow(map, (o0 * npix1).max(o1 * 4 * npix1));
                grow(norm, o0 * npix1);
                grow(rstd, npix1);
                mean.resize(mean.len().max(npix1), 0.0);
                // convT₀ on the block: O₀ channels of 2r rows of 2w pixels.
                let xb = &x[x_at + img * x_ns + i0 * w * x_ps..];
                conv2x2_block(xb, (x_cs, x_ps), c, &wt0, &b0, r, w, col, map);
                // LayerNorm2d over the O₀ channels of each pixel, then the GELU.
                let plane = &map[..o0 * npix1];
                pixel_stats(plane, o0, npix1, up.norm_eps, &mut mean[..npix1], &mut rstd[..npix1]);
                for k in 0..o0 {
                    let (src, dst) = (&plane[k * npix1..][..npix1], &mut norm[k * npix1..][..npix1]);
                    normalize_row(src, &mean[..npix1], &rstd[..npix1], gamma[k], beta[k], dst);
                }
                // SAFETY: `norm` holds o0 * npix1 values, read and written in place.
                unsafe { gelu_tile_in_place(norm.as_mut_ptr(), o0 * npix1, 1, o0 * npix1) };
                // convT₁ on that: O₁ channels of 4r rows of 4w pixels, then the GELU.
                conv2x2_block(norm, (npix1, 1), o0, &wt1, &b1, 2 * r, 2 * w, col, map);
                let up_len = o1 * 4 * npix1;
                // SAFETY: `map` holds up_len values, read and written in place.
                unsafe { gelu_tile_in_place(map.as_mut_ptr(), up_len, 1, up_len) };
                // lhs[img] · this block's upscaled rows, into rows 4 i0.. of each of the T planes.
                let serial = GemmOpts { parallel: false, ..GemmOpts::default() };
                let cols = 4 * npix1;
                // SAFETY: in bounds (rows 4 i0 .. 4 (i0 + r) of each plane); no other block writes
                // these rows, and with o1 > 0 the product writes all t x cols of them.
                unsafe {
                    let c_ptr = dst.ptr().add(img * t * out_plane + 4 * i0 * 4 * w).cast::<f32>();
                    let c_len = (t - 1) * out_plane + cols;
                    let hy = &hyper[img * t * o1..(img + 1) * t * o1];
                    sgemm_raw(t, cols, o1, hy, o1, 1, map, cols, 1, c_ptr, c_len, out_plane, &serial);
                }
            });
        });
        // SAFETY: the blocks cover every row of every plane of every image, each written whole.
        unsafe { out.set_len(len) };
        Tensor::from_vec(out, &[n, t, 4 * h, 4 * w])
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::nchw_input;
    use super::UpscalerRef;
    use crate::testing::{assert_close, gelu_f64};
    use crate::{DType, Tensor};

    /// Random upscaler weights: C -> O₀ -> O₁ channels, in `dtype`.
    fn weights(c: usize, o0: usize, o1: usize, seed: u64, dtype: DType) -> Vec<Tensor> {
        let shapes = [vec![c, o0, 2, 2], vec![o0], vec![o0], vec![o0], vec![o0, o1, 2, 2], vec![o1]];
        shapes.iter().enumerate().map(|(i, s)| Tensor::randn(s, seed + i as u64, dtype)).collect()
    }

    fn upscaler(w: &[Tensor], norm_eps: f64) -> UpscalerRef<'_> {
        UpscalerRef {
            conv0_weight: &w[0],
            conv0_bias: &w[1],
            norm_weight: &w[2],
            norm_bias: &w[3],
            norm_eps,
            conv1_weight: &w[4],
            conv1_bias: &w[5],
        }
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_dtype(DType::F32).to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Direct f64 definition, one output pixel at a time: its input pixel (Y/4, X/4), the 2x2
    /// position of the first conv's output pixel in it, LayerNorm over that pixel's channels,
    /// GELU, the second conv's 2x2 position, GELU, and the product with lhs.
    fn reference(x: &Tensor, w: &[Tensor], eps: f64, lhs: &Tensor) -> Vec<f64> {
        let [n, c, h, wd] = [0, 1, 2, 3].map(|i| x.shape()[i]);
        let (o0, o1, t) = (w[0].shape()[1], w[4].shape()[1], lhs.shape()[1]);
        let v: Vec<Vec<f64>> = w.iter().map(|t| t.to_f64_vec().unwrap()).collect();
        let (xv, lv) = (x.to_f64_vec().unwrap(), lhs.to_f64_vec().unwrap());
        let mut out = vec![0.0; n * t * 16 * h * wd];
        for ni in 0..n {
            for y in 0..4 * h {
                for xx in 0..4 * wd {
                    let (y1, x1) = (y / 2, xx / 2);
                    let z0: Vec<f64> = (0..o0)
                        .map(|k| {
                            let s: f64 = (0..c)
                                .map(|ci| {
                                    xv[((ni * c + ci) * h + y1 / 2) * wd + x1 / 2]
                                        * v[0][((ci * o0 + k) * 2 + y1 % 2) * 2 + x1 % 2]
                                })
                                .sum();
                            v[1][k] + s
                        })
                        .collect();
                    let mean = z0.iter().sum::<f64>() / o0 as f64;
                    let var = z0.iter().map(|z| (z - mean) * (z - mean)).sum::<f64>() / o0 as f64;
                    let z1: Vec<f64> =
                        (0..o0).map(|k| gelu_f64((z0[k] - mean) / (var + eps).sqrt() * v[2][k] + v[3][k])).collect();
                    let up: Vec<f64> = (0..o1)
                        .map(|k| {
                            let s: f64 =
                                (0..o0).map(|ci| z1[ci] * v[4][((ci * o1 + k) * 2 + y % 2) * 2 + xx % 2]).sum();
                            gelu_f64(v[5][k] + s)
                        })
                        .collect();
                    for ti in 0..t {
                        let m: f64 = (0..o1).map(|k| lv[(ni * t + ti) * o1 + k] * up[k]).sum();
                        out[((ni * t + ti) * 4 * h + y) * 4 * wd + xx] = m;
                    }
                }
            }
        }
        out
    }

    /// The same bits as the composite: one block per image, and several with a short last one
    /// (swin_b's widths, O₀ = 64 and O₁ = 32, at w = 56 give 2 input rows a block; 5 rows: 2, 2,
    /// 1); a contiguous input and a channels-last map viewed as NCHW (the model's); a transposed
    /// lhs.
    #[test]
    fn equals_composite_bit_for_bit() {
        let cases = [(1, 3, 2, 3, 4, 2, 2), (2, 16, 5, 56, 64, 32, 11), (3, 8, 3, 5, 6, 4, 1)];
        for (i, &(n, c, h, w, o0, o1, t)) in cases.iter().enumerate() {
            for kind in [0, 1] {
                let seed = 100 * i as u64 + 10 * kind as u64;
                let x = nchw_input([n, c, h, w], seed, kind, DType::F32);
                let ws = weights(c, o0, o1, seed + 1, DType::F32);
                let lhs = if kind == 0 {
                    Tensor::randn(&[n, t, o1], seed + 9, DType::F32)
                } else {
                    Tensor::randn(&[n, o1, t], seed + 9, DType::F32).transpose(1, 2).unwrap()
                };
                let up = upscaler(&ws, 1e-6);
                let fused = x.upscale_masks(&up, &lhs).unwrap();
                assert_eq!(fused.shape(), [n, t, 4 * h, 4 * w]);
                assert_eq!(bits(&fused), bits(&up.composite(&x, &lhs).unwrap()), "case {i}, layout {kind}");
            }
        }
    }

    #[test]
    fn matches_f64_definition() {
        let x = Tensor::randn(&[2, 5, 2, 3], 1, DType::F32);
        let ws = weights(5, 6, 4, 2, DType::F32);
        let lhs = Tensor::randn(&[2, 3, 4], 9, DType::F32);
        let got = x.upscale_masks(&upscaler(&ws, 1e-5), &lhs).unwrap().to_f64_vec().unwrap();
        assert_close(&got, &reference(&x, &ws, 1e-5, &lhs), 1e-4, 1e-4, "upscale_masks");
    }

    /// Other dtypes run the composite; shapes that do not fit are named by its ops.
    #[test]
    fn other_dtypes_and_bad_shapes_take_the_composite() {
        let x = Tensor::randn(&[1, 4, 3, 3], 5, DType::BF16);
        let ws = weights(4, 6, 2, 6, DType::BF16);
        let lhs = Tensor::randn(&[1, 3, 2], 8, DType::BF16);
        let up = upscaler(&ws, 1e-6);
        assert_eq!(bits(&x.upscale_masks(&up, &lhs).unwrap()), bits(&up.composite(&x, &lhs).unwrap()));

        let x = Tensor::randn(&[1, 4, 3, 3], 5, DType::F32);
        let ws = weights(4, 6, 2, 6, DType::F32);
        let err = x.upscale_masks(&upscaler(&ws, 1e-6), &Tensor::randn(&[1, 3, 5], 8, DType::F32)).unwrap_err();
        assert!(err.to_string().contains("matmul") && err.to_string().contains("[1, 3, 5]"), "{err}");
        let ws = weights(3, 6, 2, 6, DType::F32);
        let err = x.upscale_masks(&upscaler(&ws, 1e-6), &Tensor::randn(&[1, 3, 2], 8, DType::F32)).unwrap_err();
        assert!(err.to_string().contains("conv_transpose2d"), "{err}");
    }
}
