//! max_pool2d (NCHW) with PyTorch's ceil_mode rule, and its backward (the gradient routed to
//! each window's maximum). Padding counts as -inf.

use crate::ops::conv::{from_f32_vec, nchw_dims};
use crate::profile;
use crate::{bail, Error, Result, Tensor};
use rayon::prelude::*;

/// PyTorch's pooling output size. In ceil mode the last window may hang over the end, but
/// it must start inside the input or the left padding.
pub(crate) fn pool_out_len(len: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> Option<usize> {
    let span = (len + 2 * p).checked_sub(k)?;
    let mut out = if ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
    if ceil_mode && (out - 1) * s >= len + p {
        out -= 1;
    }
    (out > 0).then_some(out)
}

/// The input range [start, end) each output index reads, clipped to the input.
fn windows(len: usize, out: usize, k: usize, s: usize, p: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| ((i * s).saturating_sub(p), (i * s + k).saturating_sub(p).min(len))).collect()
}

/// max that lets NaN through, as PyTorch's max pooling does.
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

impl Tensor {
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        ceil_mode: bool,
    ) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        const OP: &str = "max_pool2d";
        let [n, c, h, w] = nchw_dims(OP, self)?;
        let ((kh, kw), (sh, sw), (ph, pw)) = (kernel, stride, padding);
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            bail!(OP, "kernel {kernel:?} and stride {stride:?} must be positive (input {:?})", self.shape());
        }
        // PyTorch's rule; it also guarantees every window holds at least one real element.
        if h == 0 || w == 0 {
            bail!(OP, "input {:?} has an empty spatial dimension", self.shape());
        }
        if ph > kh / 2 || pw > kw / 2 {
            bail!(OP, "padding {padding:?} must be at most half the kernel {kernel:?}");
        }
        let (Some(ho), Some(wo)) = (pool_out_len(h, kh, sh, ph, ceil_mode), pool_out_len(w, kw, sw, pw, ceil_mode))
        else {
            bail!(
                OP,
                "kernel {kernel:?} with padding {padding:?} does not fit input {:?} (ceil_mode {ceil_mode})",
                self.shape()
            );
        };
        let out_shape = [n, c, ho, wo];
        let x = self.f32_slice()?;
        let mut out = vec![0f32; n * c * ho * wo];
        let rows = windows(h, ho, kh, sh, ph);
        let cols = windows(w, wo, kw, sw, pw);
        if !out.is_empty() {
            // Separable: max over each column window for every input row, then over row windows
            // (a vectorisable elementwise max of whole rows). Windows are never empty.
            out.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each_init(
                || vec![0f32; h * wo],
                |buf, (y, plane)| {
                    for (b_row, src) in buf.chunks_exact_mut(wo).zip(plane.chunks_exact(w)) {
                        for (d, &(c0, c1)) in b_row.iter_mut().zip(&cols) {
                            *d = src[c0..c1].iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(m, v));
                        }
                    }
                    for (y_row, &(r0, r1)) in y.chunks_exact_mut(wo).zip(&rows) {
                        y_row.copy_from_slice(&buf[r0 * wo..(r0 + 1) * wo]);
                        for r in r0 + 1..r1 {
                            for (d, &v) in y_row.iter_mut().zip(&buf[r * wo..(r + 1) * wo]) {
                                *d = nan_max(*d, v);
                            }
                        }
                    }
                },
            );
        }
        Ok(from_f32_vec(out, &out_shape, self.dtype()))
    }

    /// The input gradient of [`Tensor::max_pool2d`]: `self` is the output gradient
    /// [N, C, Ho, Wo], `x` the forward's input [N, C, H, W]; every output gradient goes to the
    /// first maximum of its window (NaN counts as a maximum; ceil-mode windows are clipped to
    /// the input like PyTorch's; padding never wins). The result has `x`'s shape and `self`'s
    /// dtype.
    pub fn max_pool2d_backward(
        &self,
        x: &Tensor,
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        const OP: &str = "max_pool2d_backward";
        let [n, c, h, w] = nchw_dims(OP, x)?;
        let [gn, gc, ho, wo] = nchw_dims(OP, self)?;
        if (gn, gc) != (n, c) {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: x.shape().to_vec() });
        }
        if sh == 0 || sw == 0 {
            bail!(OP, "stride {:?} must be positive", (sh, sw));
        }
        let xv = x.to_f32_vec()?;
        let gv = self.to_f32_vec()?;
        let mut out = vec![0f32; xv.len()];
        if h * w == 0 || ho * wo == 0 {
            return Ok(from_f32_vec(out, x.shape(), self.dtype()));
        }
        out.par_chunks_exact_mut(h * w).zip(xv.par_chunks_exact(h * w)).zip(gv.par_chunks_exact(ho * wo)).for_each(
            |((dplane, plane), gplane)| {
                for i in 0..ho {
                    let (r0, r1) = ((i * sh).saturating_sub(ph), (i * sh + kh).saturating_sub(ph).min(h));
                    for j in 0..wo {
                        let (c0, c1) = ((j * sw).saturating_sub(pw), (j * sw + kw).saturating_sub(pw).min(w));
                        let mut best: Option<(usize, f32)> = None;
                        for r in r0..r1 {
                            for c in c0..c1 {
                                let v = plane[r * w + c];
                                // First maximum wins; NaN propagates like a maximum (PyTorch).
                                if best.is_none_or(|(_, b)| v > b || v.is_nan() && !b.is_nan()) {
                                    best = Some((r * w + c, v));
                                }
                            }
                        }
                        if let Some((at, _)) = best {
                            dplane[at] += gplane[i * wo + j];
                        }
                    }
                }
            },
        );
        Ok(from_f32_vec(out, x.shape(), self.dtype()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::test_util::{assert_close, nchw_input};
    use crate::DType;
    use proptest::prelude::*;

    /// Direct max pooling in f64 over the in-bounds part of each window.
    fn pool_ref(
        x: &[f64],
        [n, c, h, w]: [usize; 4],
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        (ho, wo): (usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![f64::NEG_INFINITY; n * c * ho * wo];
        for p in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    for a in 0..kh {
                        for b in 0..kw {
                            let (y, xx) = ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                            if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                                let v = x[(p * h + y as usize) * w + xx as usize];
                                let o = &mut out[(p * ho + i) * wo + j];
                                *o = o.max(v);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The output size straight from PyTorch's formula, in floating point.
    fn out_len_ref(len: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> usize {
        let q = (len + 2 * p - k) as f64 / s as f64;
        let mut out = if ceil_mode { q.ceil() } else { q.floor() } as usize + 1;
        if ceil_mode && (out - 1) * s >= len + p {
            out -= 1;
        }
        out
    }

    /// A pooling case PyTorch accepts: padding at most half the kernel, an input at least one
    /// window (after padding) plus `extra`. Returns the input and the clamped padding.
    fn pool_input(
        [n, c]: [usize; 2],
        (kh, kw): (usize, usize),
        (ph, pw): (usize, usize),
        (h_extra, w_extra): (usize, usize),
        seed: u64,
        kind: u8,
    ) -> (Tensor, (usize, usize)) {
        let (ph, pw) = (ph.min(kh / 2), pw.min(kw / 2));
        let h = kh.saturating_sub(2 * ph).max(1) + h_extra;
        let w = kw.saturating_sub(2 * pw).max(1) + w_extra;
        (nchw_input([n, c, h, w], seed, kind, DType::F32), (ph, pw))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn max_pool2d_matches_reference(
            (n, c, kh, kw, sh, sw) in (1usize..=2, 1usize..=3, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            (ph, pw, h_extra, w_extra) in (0usize..=2, 0usize..=2, 0usize..=7, 0usize..=7),
            ceil_mode: bool,
            kind in 0u8..4,
            seed: u64,
        ) {
            let (x, (ph, pw)) = pool_input([n, c], (kh, kw), (ph, pw), (h_extra, w_extra), seed, kind);
            let [h, w] = [x.shape()[2], x.shape()[3]];
            let got = x.max_pool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode).unwrap();
            let ho = out_len_ref(h, kh, sh, ph, ceil_mode);
            let wo = out_len_ref(w, kw, sw, pw, ceil_mode);
            let want = pool_ref(&x.to_f64_vec().unwrap(), [n, c, h, w], (kh, kw), (sh, sw), (ph, pw), (ho, wo));
            prop_assert!(want.iter().all(|v| v.is_finite()), "a window saw no input");
            assert_close("max_pool2d", &got, &want, &[n, c, ho, wo], 0.0);
        }
    }

    #[test]
    fn ceil_mode_output_sizes() {
        // 5 with k3 s2: (5-3)/2 = 1 exactly, so floor and ceil agree: 2.
        assert_eq!(pool_out_len(5, 3, 2, 0, true), Some(2));
        assert_eq!(pool_out_len(5, 3, 2, 0, false), Some(2));
        // 6 with k3 s2: 1.5 → ceil 2 + 1 = 3 (the last window [4, 7) hangs over), floor 2.
        assert_eq!(pool_out_len(6, 3, 2, 0, true), Some(3));
        assert_eq!(pool_out_len(6, 3, 2, 0, false), Some(2));
        // 5 with k3 s3 p1: ceil(4/3) + 1 = 3, but the third window would start at 3·2 - 1 = 5,
        // past the input, so it is dropped: 2.
        assert_eq!(pool_out_len(5, 3, 3, 1, true), Some(2));
        // MTCNN: RNet 22 → 11 → (conv) 9 → 4; ONet 46 → 23, 21 → 10, 8 → 4 (2x2/2); PNet 10 → 5.
        assert_eq!(pool_out_len(22, 3, 2, 0, true), Some(11));
        assert_eq!(pool_out_len(9, 3, 2, 0, true), Some(4));
        assert_eq!(pool_out_len(46, 3, 2, 0, true), Some(23));
        assert_eq!(pool_out_len(21, 3, 2, 0, true), Some(10));
        assert_eq!(pool_out_len(8, 2, 2, 0, true), Some(4));
        assert_eq!(pool_out_len(10, 2, 2, 0, true), Some(5));
        assert_eq!(pool_out_len(11, 2, 2, 0, true), Some(6));
        assert_eq!(pool_out_len(2, 3, 2, 0, true), None);
    }

    #[test]
    fn max_pool2d_known_values() {
        // 0..25 as 5x5 with 2x2/2 ceil mode: the 3x3 output's last row/column see one input row/column.
        let x = Tensor::arange(25, DType::F32).reshape(&[1, 1, 5, 5]).unwrap();
        let y = x.max_pool2d((2, 2), (2, 2), (0, 0), true).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![6., 8., 9., 16., 18., 19., 21., 23., 24.]);
        let y = x.max_pool2d((2, 2), (2, 2), (0, 0), false).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![6., 8., 16., 18.]);
        // Padding is -inf, not 0: an all-negative input keeps its own values.
        let x = Tensor::from_vec(vec![-3.0f32, -1.0, -2.0, -4.0], &[1, 1, 2, 2]).unwrap();
        let y = x.max_pool2d((3, 3), (1, 1), (1, 1), false).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![-1.0; 4]);
        // NaN propagates.
        let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 2.0, 3.0], &[1, 1, 2, 2]).unwrap();
        assert!(x.max_pool2d((2, 2), (2, 2), (0, 0), false).unwrap().item().unwrap().is_nan());
    }

    #[test]
    fn max_pool2d_f16_matches_reference() {
        let x = nchw_input([2, 3, 7, 6], 5, 1, DType::F16);
        let got = x.max_pool2d((3, 3), (2, 2), (1, 1), true).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let want = pool_ref(&x.to_f64_vec().unwrap(), [2, 3, 7, 6], (3, 3), (2, 2), (1, 1), (4, 4));
        // Max selects an input value, so it is exact even in f16.
        assert_close("max_pool2d", &got, &want, &[2, 3, 4, 4], 0.0);
    }

    #[test]
    fn max_pool2d_errors_name_the_op() {
        let x = Tensor::zeros(&[1, 2, 4, 4], DType::F32);
        for (k, s, p) in
            [((0, 2), (2, 2), (0, 0)), ((2, 2), (0, 2), (0, 0)), ((2, 2), (2, 2), (2, 0)), ((5, 2), (1, 1), (0, 0))]
        {
            let e = x.max_pool2d(k, s, p, false).unwrap_err().to_string();
            assert!(e.contains("max_pool2d"), "{e}");
        }
        let e = Tensor::zeros(&[2, 4, 4], DType::F32).max_pool2d((2, 2), (2, 2), (0, 0), false).unwrap_err();
        assert!(e.to_string().contains("max_pool2d") && e.to_string().contains("[2, 4, 4]"), "{e}");
        assert!(Tensor::zeros(&[1, 1, 4, 4], DType::U8).max_pool2d((2, 2), (2, 2), (0, 0), false).is_err());
    }

    /// The max-pool gradient in f64: each output gradient added at the first maximum of its
    /// window (the in-bounds part).
    #[allow(clippy::too_many_arguments)]
    fn pool_grad_ref(
        x: &[f64],
        g: &[f64],
        [n, c, h, w]: [usize; 4],
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        (ho, wo): (usize, usize),
    ) -> Vec<f64> {
        let mut dx = vec![0.0; n * c * h * w];
        for p in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    let mut best: Option<(usize, f64)> = None;
                    for a in 0..kh {
                        for b in 0..kw {
                            let (y, xx) = ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                            if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                                let at = (p * h + y as usize) * w + xx as usize;
                                if best.is_none_or(|(_, m)| x[at] > m) {
                                    best = Some((at, x[at]));
                                }
                            }
                        }
                    }
                    let (at, _) = best.expect("a window saw no input");
                    dx[at] += g[(p * ho + i) * wo + j];
                }
            }
        }
        dx
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn max_pool2d_backward_matches_reference(
            (n, c, kh, kw, sh, sw) in (1usize..=2, 1usize..=3, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            (ph, pw, h_extra, w_extra) in (0usize..=2, 0usize..=2, 0usize..=7, 0usize..=7),
            ceil_mode: bool,
            kind in 0u8..4,
            seed: u64,
        ) {
            let (x, (ph, pw)) = pool_input([n, c], (kh, kw), (ph, pw), (h_extra, w_extra), seed, kind);
            let [h, w] = [x.shape()[2], x.shape()[3]];
            let y = x.max_pool2d((kh, kw), (sh, sw), (ph, pw), ceil_mode).unwrap();
            let g = nchw_input([n, c, y.shape()[2], y.shape()[3]], seed ^ 5, kind + 1, DType::F32);
            let got = g.max_pool2d_backward(&x, (kh, kw), (sh, sw), (ph, pw)).unwrap();
            let (ho, wo) = (y.shape()[2], y.shape()[3]);
            let want = pool_grad_ref(
                &x.to_f64_vec().unwrap(), &g.to_f64_vec().unwrap(), [n, c, h, w], (kh, kw), (sh, sw), (ph, pw), (ho, wo),
            );
            // Sums of at most a few f32 gradients in window order: within a few ulp.
            assert_close("max_pool2d_backward", &got, &want, &[n, c, h, w], 1e-6);
        }
    }

    #[test]
    fn max_pool2d_backward_routes_to_the_first_maximum() {
        // Ties go to the first maximum in row-major order; NaN wins; overlapping windows add up.
        let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 0.0, 2.0, 5.0, f32::NAN, 3.0, 4.0], &[1, 1, 3, 3]).unwrap();
        let g = Tensor::from_vec(vec![1.0f32, 10.0, 100.0, 1000.0], &[1, 1, 2, 2]).unwrap();
        let dx = g.max_pool2d_backward(&x, (2, 2), (1, 1), (0, 0)).unwrap();
        assert_eq!(dx.to_vec::<f32>().unwrap(), [0.0, 11.0, 0.0, 0.0, 0.0, 1000.0, 100.0, 0.0, 0.0]);
        // The gradient's dtype, the input's shape.
        let dx = g.to_dtype(DType::BF16).max_pool2d_backward(&x, (2, 2), (1, 1), (0, 0)).unwrap();
        assert_eq!((dx.dtype(), dx.shape()), (DType::BF16, &[1, 1, 3, 3][..]));
        let e = g.max_pool2d_backward(&Tensor::zeros(&[1, 2, 3, 3], DType::F32), (2, 2), (1, 1), (0, 0)).unwrap_err();
        assert!(e.to_string().contains("max_pool2d_backward"), "{e}");
    }
}
