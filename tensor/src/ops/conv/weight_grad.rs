//! The weight gradient of conv2d and conv_transpose2d: one primitive, an im2col GEMM.

use super::conv2d::im2col;
use super::{nchw_dims, Geom, COL_BUDGET};
use crate::cpu::gemm::sgemm;
use crate::profile;
use crate::{bail, Result, Tensor};

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
        let _prof = profile::op(profile::Kind::Conv, 0.0, 0.0);
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
