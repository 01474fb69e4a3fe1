//! Interpolation of NCHW images: bilinear (align_corners=False, no antialias) and area,
//! matching PyTorch's `F.interpolate` when called with `size`.
//!
//! Both are separable: per output row and column the source indices and weights are computed
//! once, then every N·C plane is filled in parallel. Bilinear on a channels-last view (NHWC
//! memory) runs on whole pixels instead and stays channels-last (`channels_last.rs`).

mod channels_last;

use crate::cpu::parallel::{new_vecs, PAR_CHUNK};
use crate::ops::conv::{from_f32_vec, nchw_dims};
use crate::profile;
use crate::{bail, Result, Tensor};
use rayon::prelude::*;

/// One output coordinate of a linear interpolation: `l0 · in[i0] + l1 · in[i1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Lerp {
    i0: usize,
    i1: usize,
    l0: f32,
    l1: f32,
}

/// PyTorch's half-pixel source coordinates, in f32 as PyTorch computes them for f32:
/// src = (dst + 0.5) · in/out - 0.5 clamped at 0; the upper neighbour is clamped to in - 1.
fn lerp_table(len_in: usize, len_out: usize) -> Vec<Lerp> {
    let scale = len_in as f32 / len_out as f32;
    (0..len_out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(len_in - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 + 1 < len_in { i0 + 1 } else { i0 };
            Lerp { i0, i1, l0: 1.0 - l1, l1 }
        })
        .collect()
}

/// Adaptive-average windows: output i averages input [floor(i·in/out), ceil((i+1)·in/out)).
fn area_windows(len_in: usize, len_out: usize) -> Vec<(usize, usize)> {
    (0..len_out).map(|i| (i * len_in / len_out, ((i + 1) * len_in).div_ceil(len_out))).collect()
}

/// Shared checks; returns the input dims.
fn check(op: &'static str, x: &Tensor, size: (usize, usize)) -> Result<[usize; 4]> {
    let d = nchw_dims(op, x)?;
    if d[2] == 0 || d[3] == 0 || size.0 == 0 || size.1 == 0 {
        bail!(op, "input {:?} and output size {size:?} must have nonzero height and width", x.shape());
    }
    Ok(d)
}

/// The backward's checks: nonzero sizes on both sides.
fn check_sizes(op: &'static str, g: &Tensor, in_hw: (usize, usize)) -> Result<()> {
    let s = g.shape();
    if in_hw.0 == 0 || in_hw.1 == 0 || s[2] == 0 || s[3] == 0 {
        bail!(op, "gradient {s:?} and input size {in_hw:?} must have nonzero height and width");
    }
    Ok(())
}

/// Runs `f(input_plane, output_plane)` over every N·C plane in parallel and wraps the result.
fn per_plane(
    x: &Tensor,
    [n, c, h, w]: [usize; 4],
    (ho, wo): (usize, usize),
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Result<Tensor> {
    let xs = x.f32_slice()?;
    let ([out], _) =
        new_vecs(n * c * ho * wo, ho * wo, true, |start, [y]| f(&xs[start / (ho * wo) * h * w..][..h * w], y));
    Ok(from_f32_vec(out, &[n, c, ho, wo], x.dtype()))
}

/// Input taps (index, weight) of each output index along one axis: the forward's weights.
type Taps = Vec<Vec<(usize, f32)>>;

fn bilinear_taps(len_in: usize, len_out: usize) -> Taps {
    lerp_table(len_in, len_out).into_iter().map(|l| vec![(l.i0, l.l0), (l.i1, l.l1)]).collect()
}

fn area_taps(len_in: usize, len_out: usize) -> Taps {
    area_windows(len_in, len_out)
        .into_iter()
        .map(|(a, b)| {
            let wt = 1.0 / (b - a) as f32;
            (a..b).map(|p| (p, wt)).collect()
        })
        .collect()
}

/// The adjoint of a separable resampling: dx[p, q] = sum over the taps of wy wx g[i, j], for
/// g [N, C, Ho, Wo] and input planes `in_hw`; first along the width (into [Ho, W]), then along
/// the height, every N·C plane in parallel.
fn separable_adjoint(op: &'static str, g: &Tensor, in_hw: (usize, usize), ty: &Taps, tx: &Taps) -> Result<Tensor> {
    let [n, c, ho, wo] = nchw_dims(op, g)?;
    let (h, w) = in_hw;
    let gs = g.f32_slice()?;
    let mut out = vec![0f32; n * c * h * w];
    if h * w > 0 && ho * wo > 0 {
        out.par_chunks_mut(h * w).zip(gs.par_chunks(ho * wo)).for_each_init(
            || vec![0f32; ho * w],
            |rows, (dx, gp)| {
                rows.fill(0.0);
                for (row, g_row) in rows.chunks_exact_mut(w).zip(gp.chunks_exact(wo)) {
                    for (taps, &gv) in tx.iter().zip(g_row) {
                        for &(q, wx) in taps {
                            row[q] += wx * gv;
                        }
                    }
                }
                for (taps, row) in ty.iter().zip(rows.chunks_exact(w)) {
                    for &(p, wy) in taps {
                        for (d, &v) in dx[p * w..(p + 1) * w].iter_mut().zip(row) {
                            *d += wy * v;
                        }
                    }
                }
            },
        );
    }
    Ok(from_f32_vec(out, &[n, c, h, w], g.dtype()))
}

impl Tensor {
    /// `F.interpolate(x, size, mode='bilinear', align_corners=False)`. A channels-last `self`
    /// (an [N, C, H, W] view of NHWC memory) gives a channels-last result.
    pub fn interpolate_bilinear(&self, size: (usize, usize)) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        let dims @ [_, _, h, w] = check("interpolate_bilinear", self, size)?;
        if channels_last::is_channels_last(self) {
            return channels_last::bilinear(self, dims, size);
        }
        let wo = size.1;
        let rows = lerp_table(h, size.0);
        let cols = lerp_table(w, wo);
        // Separable: each input row that some output row reads is interpolated along the width
        // once (into its slot), then output rows blend two slots. The sums are the same as
        // the direct form l0·(top) + l1·(bottom), in the same order.
        let mut slot_of = vec![usize::MAX; h];
        let mut needed = Vec::new();
        for r in &rows {
            for i in [r.i0, r.i1] {
                if slot_of[i] == usize::MAX {
                    slot_of[i] = needed.len();
                    needed.push(i);
                }
            }
        }
        let xs = self.f32_slice()?;
        let (plane_in, plane_out) = (h * w, size.0 * wo);
        // Whole planes per task (about PAR_CHUNK values), one buffer each.
        let per_task = (PAR_CHUNK / plane_out.max(1)).max(1);
        let ([out], _) = new_vecs(dims[0] * dims[1] * plane_out, per_task * plane_out, true, |start, [ys]| {
            let mut buf = vec![0f32; needed.len() * wo];
            for (k, y) in ys.chunks_exact_mut(plane_out).enumerate() {
                let plane = &xs[(start / plane_out + k) * plane_in..][..plane_in];
                for (slot, &i) in buf.chunks_exact_mut(wo).zip(&needed) {
                    let src = &plane[i * w..(i + 1) * w];
                    for (d, cx) in slot.iter_mut().zip(&cols) {
                        *d = cx.l0 * src[cx.i0] + cx.l1 * src[cx.i1];
                    }
                }
                for (y_row, ry) in y.chunks_exact_mut(wo).zip(&rows) {
                    let top = &buf[slot_of[ry.i0] * wo..][..wo];
                    let bottom = &buf[slot_of[ry.i1] * wo..][..wo];
                    for ((d, &t), &b) in y_row.iter_mut().zip(top).zip(bottom) {
                        *d = ry.l0 * t + ry.l1 * b;
                    }
                }
            }
        });
        Ok(from_f32_vec(out, &[dims[0], dims[1], size.0, wo], self.dtype()))
    }

    /// PyTorch's mode='area' (adaptive average pooling).
    pub fn interpolate_area(&self, size: (usize, usize)) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        let dims @ [_, _, h, w] = check("interpolate_area", self, size)?;
        let rows = area_windows(h, size.0);
        let cols = area_windows(w, size.1);
        per_plane(self, dims, size, |plane, y| {
            for (y_row, &(r0, r1)) in y.chunks_exact_mut(size.1).zip(&rows) {
                for (d, &(c0, c1)) in y_row.iter_mut().zip(&cols) {
                    let sum: f32 = (r0..r1).map(|r| plane[r * w + c0..r * w + c1].iter().sum::<f32>()).sum();
                    *d = sum / ((r1 - r0) * (c1 - c0)) as f32;
                }
            }
        })
    }

    /// The backward of `interpolate_bilinear` to an input of spatial size `in_hw`: `self` is the
    /// output gradient [N, C, Ho, Wo]; each input gathers it with the forward's weights. A
    /// channels-last `self` gives a channels-last gradient.
    pub fn interpolate_bilinear_backward(&self, in_hw: (usize, usize)) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        const OP: &str = "interpolate_bilinear_backward";
        let dims @ [_, _, ho, wo] = nchw_dims(OP, self)?;
        check_sizes(OP, self, in_hw)?;
        let (ty, tx) = (bilinear_taps(in_hw.0, ho), bilinear_taps(in_hw.1, wo));
        if channels_last::is_channels_last(self) {
            return channels_last::adjoint(self, dims, in_hw, &ty, &tx);
        }
        separable_adjoint(OP, self, in_hw, &ty, &tx)
    }

    /// The backward of `interpolate_area` (adaptive average pooling) to an input of size `in_hw`.
    pub fn interpolate_area_backward(&self, in_hw: (usize, usize)) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Resample, 0.0, 0.0);
        const OP: &str = "interpolate_area_backward";
        let [_, _, ho, wo] = nchw_dims(OP, self)?;
        check_sizes(OP, self, in_hw)?;
        separable_adjoint(OP, self, in_hw, &area_taps(in_hw.0, ho), &area_taps(in_hw.1, wo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::test_util::{assert_close, nchw_input};
    use crate::DType;
    use proptest::prelude::*;

    /// Source index and weight of the upper neighbour for output `d`, straight from the formula, in f64.
    fn src_ref(d: usize, len_in: usize, len_out: usize) -> (usize, usize, f64) {
        let src = ((d as f64 + 0.5) * (len_in as f64 / len_out as f64) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(len_in - 1);
        (i0, (i0 + 1).min(len_in - 1), src - i0 as f64)
    }

    fn bilinear_ref(x: &[f64], [n, c, h, w]: [usize; 4], (ho, wo): (usize, usize)) -> Vec<f64> {
        let mut out = Vec::with_capacity(n * c * ho * wo);
        for p in 0..n * c {
            let at = |y: usize, xx: usize| x[(p * h + y) * w + xx];
            for i in 0..ho {
                let (y0, y1, ly) = src_ref(i, h, ho);
                for j in 0..wo {
                    let (x0, x1, lx) = src_ref(j, w, wo);
                    let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
                    let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
                    out.push((1.0 - ly) * top + ly * bottom);
                }
            }
        }
        out
    }

    fn area_ref(x: &[f64], [n, c, h, w]: [usize; 4], (ho, wo): (usize, usize)) -> Vec<f64> {
        let win = |i: usize, len_in: usize, len_out: usize| {
            let start = (i as f64 * len_in as f64 / len_out as f64).floor() as usize;
            let end = ((i + 1) as f64 * len_in as f64 / len_out as f64).ceil() as usize;
            start..end
        };
        let mut out = Vec::with_capacity(n * c * ho * wo);
        for p in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    let (rs, cs) = (win(i, h, ho), win(j, w, wo));
                    let count = (rs.len() * cs.len()) as f64;
                    let sum: f64 =
                        rs.flat_map(|y| cs.clone().map(move |xx| (y, xx))).map(|(y, xx)| x[(p * h + y) * w + xx]).sum();
                    out.push(sum / count);
                }
            }
        }
        out
    }

    fn shapes() -> impl Strategy<Value = ([usize; 4], (usize, usize))> {
        (1usize..=2, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=13, 1usize..=13)
            .prop_map(|(n, c, h, w, ho, wo)| ([n, c, h, w], (ho, wo)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn bilinear_matches_reference((xs, size) in shapes(), kind in 0u8..4, seed: u64) {
            let x = nchw_input(xs, seed, kind, DType::F32);
            let got = x.interpolate_bilinear(size).unwrap();
            let want = bilinear_ref(&x.to_f64_vec().unwrap(), xs, size);
            assert_close("interpolate_bilinear", &got, &want, &[xs[0], xs[1], size.0, size.1], 1e-5);
        }

        #[test]
        fn area_matches_reference((xs, size) in shapes(), kind in 0u8..4, seed: u64) {
            let x = nchw_input(xs, seed, kind, DType::F32);
            let got = x.interpolate_area(size).unwrap();
            let want = area_ref(&x.to_f64_vec().unwrap(), xs, size);
            assert_close("interpolate_area", &got, &want, &[xs[0], xs[1], size.0, size.1], 1e-5);
        }

        #[test]
        fn bilinear_half_precision_matches_reference((xs, size) in shapes(), kind in 0u8..4, bf: bool, seed: u64) {
            let dtype = if bf { DType::BF16 } else { DType::F16 };
            let x = nchw_input(xs, seed, kind, dtype);
            let got = x.interpolate_bilinear(size).unwrap();
            assert_eq!(got.dtype(), dtype);
            let want = bilinear_ref(&x.to_f64_vec().unwrap(), xs, size);
            assert_close("interpolate_bilinear", &got, &want, &[xs[0], xs[1], size.0, size.1], 1e-2);
        }
    }

    /// Channels-last views (NHWC memory) take their own path: the same bits as the planar path
    /// on the same values, forward and backward, and the results stay channels-last.
    #[test]
    fn channels_last_is_the_planar_path_bit_for_bit() {
        let bits = |t: &Tensor| -> Vec<u32> { t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect() };
        let is_nhwc = |t: &Tensor| t.permute(&[0, 2, 3, 1]).unwrap().is_contiguous();
        // Up and down, odd sizes, clamped edges (1 -> 3), a channel count off the vector width,
        // and bf16 values.
        for (i, ([n, c, h, w], (ho, wo), dtype)) in [
            ([2, 5, 7, 7], (56, 56), DType::F32),
            ([1, 19, 4, 6], (9, 5), DType::F32),
            ([2, 3, 9, 8], (4, 3), DType::F32),
            ([1, 33, 1, 3], (3, 7), DType::F32),
            ([2, 16, 3, 5], (6, 10), DType::BF16),
        ]
        .into_iter()
        .enumerate()
        {
            let view = Tensor::randn(&[n, h, w, c], 10 + i as u64, dtype).permute(&[0, 3, 1, 2]).unwrap();
            let planar = view.contiguous();
            assert!(channels_last::is_channels_last(&view) && !channels_last::is_channels_last(&planar));
            let (y, want) =
                (view.interpolate_bilinear((ho, wo)).unwrap(), planar.interpolate_bilinear((ho, wo)).unwrap());
            assert_eq!((y.shape(), y.dtype()), (want.shape(), want.dtype()));
            assert!(is_nhwc(&y) && want.is_contiguous());
            assert_eq!(bits(&y), bits(&want), "forward {:?} -> {:?}", [n, c, h, w], (ho, wo));
            let g = Tensor::randn(&[n, ho, wo, c], 20 + i as u64, dtype).permute(&[0, 3, 1, 2]).unwrap();
            let dx = g.interpolate_bilinear_backward((h, w)).unwrap();
            let want = g.contiguous().interpolate_bilinear_backward((h, w)).unwrap();
            assert_eq!((dx.shape(), dx.dtype()), (want.shape(), want.dtype()));
            assert!(is_nhwc(&dx));
            assert_eq!(bits(&dx), bits(&want), "backward {:?} -> {:?}", [n, c, ho, wo], (h, w));
        }
    }

    /// The backward is the forward's adjoint: <interp(x), g> = <x, backward(g)>.
    #[test]
    fn backward_is_the_adjoint_of_the_forward() {
        for (i, (h, w, ho, wo)) in
            [(5, 7, 9, 4), (6, 6, 3, 3), (1, 4, 3, 8), (8, 5, 8, 5), (3, 3, 7, 2)].into_iter().enumerate()
        {
            let x = nchw_input([2, 3, h, w], i as u64, 0, DType::F32);
            let g = nchw_input([2, 3, ho, wo], 100 + i as u64, 0, DType::F32);
            let dot = |a: &Tensor, b: &Tensor| -> f64 {
                a.to_f64_vec().unwrap().iter().zip(b.to_f64_vec().unwrap()).map(|(p, q)| p * q).sum()
            };
            for (y, dx) in [
                (x.interpolate_bilinear((ho, wo)), g.interpolate_bilinear_backward((h, w))),
                (x.interpolate_area((ho, wo)), g.interpolate_area_backward((h, w))),
            ] {
                let (y, dx) = (y.unwrap(), dx.unwrap());
                assert_eq!(dx.shape(), &[2, 3, h, w]);
                let (lhs, rhs) = (dot(&y, &g), dot(&x, &dx));
                assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "{h}x{w} -> {ho}x{wo}: {lhs} vs {rhs}");
            }
        }
        let e = Tensor::zeros(&[1, 1, 2, 2], DType::F32).interpolate_area_backward((0, 3)).unwrap_err().to_string();
        assert!(e.contains("interpolate_area_backward"), "{e}");
    }

    #[test]
    fn bilinear_known_values() {
        // 2 → 4: scale 0.5, sources -0.25→0, 0.25, 0.75, 1.25 (upper neighbour clamped to 1), so
        // a row [a, b] becomes [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
        let y = x.interpolate_bilinear((4, 4)).unwrap();
        #[rustfmt::skip]
        let want = vec![
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(y.to_vec::<f32>().unwrap(), want);
        // 4 → 2: scale 2, sources 0.5 and 2.5; x = 4r + c is linear so it is sampled exactly.
        let x = Tensor::arange(16, DType::F32).reshape(&[1, 1, 4, 4]).unwrap();
        let y = x.interpolate_bilinear((2, 2)).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
        // Same size is the identity.
        assert_eq!(x.interpolate_bilinear((4, 4)).unwrap().to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
        // The table itself: 3 → 2 (scale 1.5) samples 0.25 and 1.75.
        let t = lerp_table(3, 2);
        assert_eq!((t[0].i0, t[0].i1, t[0].l1), (0, 1, 0.25));
        assert_eq!((t[1].i0, t[1].i1, t[1].l1), (1, 2, 0.75));
    }

    #[test]
    fn area_known_values() {
        // 5 → 3: windows [0,2), [1,4), [3,5) (they overlap, as adaptive pooling does).
        assert_eq!(area_windows(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
        let x = Tensor::arange(5, DType::F32).reshape(&[1, 1, 1, 5]).unwrap();
        assert_eq!(x.interpolate_area((1, 3)).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 2.0, 3.5]);
        // 4x4 → 2x2 is the 2x2 block mean.
        let x = Tensor::arange(16, DType::F32).reshape(&[1, 1, 4, 4]).unwrap();
        assert_eq!(x.interpolate_area((2, 2)).unwrap().to_vec::<f32>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
        // Upsampling 2 → 3 repeats: windows [0,1), [0,2), [1,2).
        let x = Tensor::from_vec(vec![1.0f32, 3.0], &[1, 1, 1, 2]).unwrap();
        assert_eq!(x.interpolate_area((1, 3)).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn interp_errors_name_the_op() {
        let x = Tensor::zeros(&[1, 2, 4, 4], DType::F32);
        let e = x.interpolate_bilinear((0, 3)).unwrap_err().to_string();
        assert!(e.contains("interpolate_bilinear") && e.contains("[1, 2, 4, 4]"), "{e}");
        let e = x.interpolate_area((3, 0)).unwrap_err().to_string();
        assert!(e.contains("interpolate_area"), "{e}");
        let e = Tensor::zeros(&[2, 4, 4], DType::F32).interpolate_bilinear((2, 2)).unwrap_err().to_string();
        assert!(e.contains("interpolate_bilinear") && e.contains("rank 4"), "{e}");
        assert!(Tensor::zeros(&[1, 1, 2, 2], DType::I64).interpolate_area((1, 1)).is_err());
        assert!(Tensor::zeros(&[1, 1, 0, 2], DType::F32).interpolate_area((1, 1)).is_err());
    }
}
