//! SAM's last upscaling step and the hypernetwork product in one pass over blocks of rows:
//! `lhs · gelu(conv_transpose2d(x, w, b, stride 2))` for a 2x2 kernel, per image.
//!
//! Why: the composite writes the transposed product's columns (for the FaceX parsing head at
//! batch 8: 51 MB), scatters them into the upscaled map (51 MB more), runs the GELU over that
//! map and reads it again for the product with the mask tokens: four passes over memory for a
//! map that nothing else reads. A 2x2, stride-2 transposed conv maps each input pixel to its own
//! 2x2 output pixels, so a block of input rows gives whole output rows by itself: each block's
//! columns and upscaled rows are made and used while they are in the core's cache.
//!
//! Each value is the same arithmetic in the same order as in the composite (the GEMM sums over
//! the depth the same way whatever columns it is given; the bias is added and the GELU applied
//! to the same value), so the two give the same bits.

use super::conv_transpose::interleave_pairs;
use super::nchw_dims;
use crate::cpu::gemm::{sgemm_raw, GemmOpts};
use crate::ops::gelu::gelu_tile_in_place;
use crate::profile;
use crate::{DType, Result, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// Floats of one block's columns and upscaled rows together: 512 KiB, half of a Zen 4 core's L2
/// (1 MiB; 2 MiB on the Xeons).
const BLOCK_FLOATS: usize = 1 << 17;

thread_local! {
    /// One block's columns `[4 O, rows x W]` and upscaled rows `[O, 2 rows, 2 W]`.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The output, shared by the blocks; each writes only its own rows of each plane.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the blocks write disjoint rows (see `upscale_masks`), and nothing reads them meanwhile.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Through a method, so that closures capture the whole (Sync) wrapper, not its field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

impl Tensor {
    /// `lhs · gelu(conv_transpose2d(self, weight, bias, stride 2))`, per image: self `[N, C, H,
    /// W]`, weight `[C, O, 2, 2]`, bias `[O]`, lhs `[N, T, O]` -> `[N, T, 2H, 2W]` (SAM's mask
    /// tokens against its upscaled image; the FaceX parsing logits). Its composite twin is those
    /// three ops (conv_transpose2d, gelu, matmul over the flattened map): the same bits in f32.
    /// Other dtypes and kernels run the composite, which also names any shape that does not fit.
    pub fn upscale_masks(&self, weight: &Tensor, bias: &Tensor, lhs: &Tensor) -> Result<Tensor> {
        let composite = || {
            let up = self.conv_transpose2d(weight, Some(bias), (2, 2), (0, 0))?.gelu()?;
            let s = up.shape().to_vec();
            let masks = lhs.matmul(&up.reshape(&[s[0], s[1], s[2] * s[3]])?)?;
            let t = masks.shape()[1];
            masks.reshape(&[s[0], t, s[2], s[3]])
        };
        let all_f32 = [self, weight, bias, lhs].iter().all(|t| t.dtype() == DType::F32);
        let ([n, c, h, w], ws) = (nchw_dims("upscale_masks", self)?, weight.shape());
        let o = if ws.len() == 4 { ws[1] } else { 0 };
        let fits = all_f32
            && ws == [c, o, 2, 2]
            && bias.shape() == [o]
            && lhs.rank() == 3
            && lhs.shape()[0] == n
            && lhs.shape()[2] == o;
        if !fits || n == 0 || c == 0 || h == 0 || w == 0 || o == 0 || lhs.shape()[1] == 0 {
            return composite();
        }
        let t = lhs.shape()[1];
        let flops = 2.0 * (n * h * w) as f64 * (4 * o) as f64 * (c + t) as f64;
        let _prof = profile::op(profile::Kind::Conv, flops, 0.0);
        let (x, wt, b, hyper) = (self.f32_slice()?, weight.f32_slice()?, bias.f32_slice()?, lhs.f32_slice()?);
        let (hw, q, out_plane) = (h * w, 4 * o, 4 * h * w);
        // The weight transposed once, [4 O, C] (`Wᵀ` as the composite reads it): its rows are then
        // read in place by every block's product instead of packed again by each (the same
        // values, the same sums).
        let wt_t: Vec<f32> =
            (0..q).flat_map(|qi| (0..c).map(move |ci| (qi, ci))).map(|(qi, ci)| wt[ci * q + qi]).collect();
        // Input rows per block: columns (4 O x W a row) and upscaled rows (the same count) within
        // BLOCK_FLOATS, at least one row.
        let rows = (BLOCK_FLOATS / (2 * q * w)).clamp(1, h);
        let blocks = h.div_ceil(rows);
        let len = n * t * out_plane;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = Out(out.spare_capacity_mut().as_mut_ptr().cast());
        (0..n * blocks).into_par_iter().for_each(|unit| {
            let (img, i0) = (unit / blocks, unit % blocks * rows);
            let r = rows.min(h - i0);
            let npix = r * w;
            SCRATCH.with(|s| {
                let (col, up) = &mut *s.borrow_mut();
                col.resize(col.len().max(q * npix), 0.0);
                up.resize(up.len().max(4 * o * npix), 0.0);
                let serial = GemmOpts { parallel: false, ..GemmOpts::default() };
                // The transposed product on this block's pixels, as the composite computes it on
                // the whole image: col[q, p] = Σ_c W[c, q] x[c, p].
                let xb = &x[img * c * hw + i0 * w..];
                // SAFETY: every operand is in bounds (shapes checked above); with c > 0 the product
                // writes all of its q x npix values.
                unsafe { sgemm_raw(q, npix, c, &wt_t, c, 1, xb, hw, 1, col.as_mut_ptr(), q * npix, npix, &serial) };
                // Output row 2i + a of channel k interleaves columns (k, a, 0) and (k, a, 1) of input
                // row i; plus the bias, then the GELU (the composite: `bias + v`, then `gelu`).
                let up_rows = 2 * r;
                for k in 0..o {
                    for li in 0..r {
                        for a in 0..2 {
                            let qa = (k * 2 + a) * 2;
                            let s0 = &col[qa * npix + li * w..][..w];
                            let s1 = &col[(qa + 1) * npix + li * w..][..w];
                            interleave_pairs(&mut up[(k * up_rows + 2 * li + a) * 2 * w..][..2 * w], s0, s1, b[k]);
                        }
                    }
                }
                let up_len = o * up_rows * 2 * w;
                // SAFETY: `up` holds up_len values, read and written in place.
                unsafe { gelu_tile_in_place(up.as_mut_ptr(), up_len, 1, up_len) };
                // lhs[img] · this block's upscaled rows, into rows 2 i0.. of each of the T planes.
                let at = img * t * out_plane + 2 * i0 * 2 * w;
                // SAFETY: in bounds (rows 2 i0 .. 2 (i0 + r) of each plane); no other block writes
                // these rows, and with o > 0 the product writes all t x (2 r x 2 w) of them.
                unsafe {
                    let c_ptr = dst.ptr().add(at);
                    let c_len = (t - 1) * out_plane + up_rows * 2 * w;
                    let hy = &hyper[img * t * o..(img + 1) * t * o];
                    sgemm_raw(
                        t,
                        up_rows * 2 * w,
                        o,
                        hy,
                        o,
                        1,
                        up,
                        up_rows * 2 * w,
                        1,
                        c_ptr,
                        c_len,
                        out_plane,
                        &serial,
                    );
                }
            });
        });
        // SAFETY: the blocks cover every row of every plane of every image, each written whole.
        unsafe { out.set_len(len) };
        Tensor::from_vec(out, &[n, t, 2 * h, 2 * w])
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::nchw_input;
    use crate::testing::{assert_close, gelu_f64};
    use crate::{DType, Tensor};

    /// The three ops the fused pass replaces.
    fn composite(x: &Tensor, w: &Tensor, b: &Tensor, lhs: &Tensor) -> Tensor {
        let up = x.conv_transpose2d(w, Some(b), (2, 2), (0, 0)).unwrap().gelu().unwrap();
        let s = up.shape().to_vec();
        let m = lhs.matmul(&up.reshape(&[s[0], s[1], s[2] * s[3]]).unwrap()).unwrap();
        m.reshape(&[s[0], lhs.shape()[1], s[2], s[3]]).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Direct f64 definition: out[n, t, Y, X] = Σ_k lhs[n, t, k] gelu(b[k] + Σ_c x[n, c, Y/2, X/2]
    /// w[c, k, Y%2, X%2]).
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, lhs: &Tensor) -> Vec<f64> {
        let ([n, c, h, wd], o, t) = ([0, 1, 2, 3].map(|i| x.shape()[i]), w.shape()[1], lhs.shape()[1]);
        let (xv, wv, bv, lv) =
            (x.to_f64_vec().unwrap(), w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), lhs.to_f64_vec().unwrap());
        let mut out = vec![0.0; n * t * 4 * h * wd];
        for ni in 0..n {
            for y in 0..2 * h {
                for xx in 0..2 * wd {
                    let up: Vec<f64> = (0..o)
                        .map(|k| {
                            let s: f64 = (0..c)
                                .map(|ci| {
                                    let xi = xv[((ni * c + ci) * h + y / 2) * wd + xx / 2];
                                    xi * wv[((ci * o + k) * 2 + y % 2) * 2 + xx % 2]
                                })
                                .sum();
                            gelu_f64(bv[k] + s)
                        })
                        .collect();
                    for ti in 0..t {
                        let v: f64 = (0..o).map(|k| lv[(ni * t + ti) * o + k] * up[k]).sum();
                        out[((ni * t + ti) * 2 * h + y) * 2 * wd + xx] = v;
                    }
                }
            }
        }
        out
    }

    /// The same bits as the composite: one block per image and several with a short last one
    /// (o = 32 and w = 112 give 4 input rows a block; 10 rows: 4, 4, 2), a contiguous input and
    /// a channels-last map viewed as NCHW (the model's), a transposed lhs.
    #[test]
    fn equals_composite_bit_for_bit() {
        for (i, &(n, c, h, w, o, t)) in
            [(1, 3, 5, 7, 4, 2), (2, 8, 10, 112, 32, 11), (3, 16, 6, 9, 8, 1)].iter().enumerate()
        {
            for kind in [0, 1] {
                let seed = 10 * i as u64 + kind as u64;
                let x = nchw_input([n, c, h, w], seed, kind, DType::F32);
                let wt = Tensor::randn(&[c, o, 2, 2], seed + 1, DType::F32);
                let b = Tensor::randn(&[o], seed + 2, DType::F32);
                let lhs = if kind == 0 {
                    Tensor::randn(&[n, t, o], seed + 3, DType::F32)
                } else {
                    Tensor::randn(&[n, o, t], seed + 3, DType::F32).transpose(1, 2).unwrap()
                };
                let fused = x.upscale_masks(&wt, &b, &lhs).unwrap();
                assert_eq!(fused.shape(), [n, t, 2 * h, 2 * w]);
                assert_eq!(bits(&fused), bits(&composite(&x, &wt, &b, &lhs)), "case {i}, layout {kind}");
            }
        }
    }

    #[test]
    fn matches_f64_definition() {
        let x = Tensor::randn(&[2, 5, 3, 4], 1, DType::F32);
        let (w, b, lhs) = (
            Tensor::randn(&[5, 6, 2, 2], 2, DType::F32),
            Tensor::randn(&[6], 3, DType::F32),
            Tensor::randn(&[2, 3, 6], 4, DType::F32),
        );
        let got = x.upscale_masks(&w, &b, &lhs).unwrap().to_f64_vec().unwrap();
        assert_close(&got, &reference(&x, &w, &b, &lhs), 1e-5, 1e-5, "upscale_masks");
    }

    /// Other dtypes run the composite; shapes that do not fit are named by its ops.
    #[test]
    fn other_dtypes_and_bad_shapes_take_the_composite() {
        let x = Tensor::randn(&[1, 4, 3, 3], 5, DType::BF16);
        let (w, b, lhs) = (
            Tensor::randn(&[4, 2, 2, 2], 6, DType::BF16),
            Tensor::randn(&[2], 7, DType::BF16),
            Tensor::randn(&[1, 3, 2], 8, DType::BF16),
        );
        assert_eq!(
            bits(&x.upscale_masks(&w, &b, &lhs).unwrap().to_dtype(DType::F32)),
            bits(&composite(&x, &w, &b, &lhs).to_dtype(DType::F32))
        );

        let x = Tensor::randn(&[1, 4, 3, 3], 5, DType::F32);
        let (w, b) = (Tensor::randn(&[4, 2, 2, 2], 6, DType::F32), Tensor::randn(&[2], 7, DType::F32));
        let wrong_lhs = Tensor::randn(&[1, 3, 5], 8, DType::F32);
        let err = x.upscale_masks(&w, &b, &wrong_lhs).unwrap_err().to_string();
        assert!(err.contains("matmul") && err.contains("[1, 3, 5]"), "{err}");
        let wrong_w = Tensor::randn(&[3, 2, 2, 2], 6, DType::F32);
        let err = x.upscale_masks(&wrong_w, &b, &wrong_lhs).unwrap_err().to_string();
        assert!(err.contains("conv_transpose2d"), "{err}");
    }
}
