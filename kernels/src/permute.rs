//! Strided gather into a contiguous output (rank <= 6): NCHW <-> NHWC, the head split
//! `[B, N, 3, H, D] -> [3, B, H, N, D]`, and the patch embedding's im2col
//! `[B, 3, 56, 4, 56, 4] -> [B, 56, 56, 3, 4, 4]` are all one launch of [`permute`].
//!
//! One grid-stride loop over the output; each output index is decomposed by the output dims from
//! the innermost outwards, with one [`FastDiv`] per dim (callers keep element counts below 2^31).

use crate::ctx::{grid_stride, Ctx};
use crate::fastdiv::FastDiv;
use crate::math::Elem;

pub const MAX_RANK: usize = 6;

/// The output is contiguous with dims `out_dims[..rank]`; output index `(i_0, .., i_{rank-1})`
/// reads `x[sum_d i_d * in_strides[d]]`. Entries past `rank` are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PermuteShape {
    pub rank: u32,
    pub out_dims: [u32; MAX_RANK],
    pub in_strides: [u32; MAX_RANK],
}

/// Grid-stride over the output elements.
pub use crate::ctx::grid_stride_config as config;

/// `out[o] = x[source offset of o]` for every `o < n` (`n` = product of `out_dims[..rank]`).
///
/// # Safety
/// `out` holds `n` elements and `x` every offset the strides reach.
#[inline(always)]
pub unsafe fn permute<C: Ctx, E: Elem>(c: &C, x: *const E, out: *mut E, n: u32, s: &PermuteShape) {
    // One divider per dim, made once per thread (see `fastdiv`).
    let mut divs = [FastDiv::new(1); MAX_RANK];
    for (d, div) in divs.iter_mut().enumerate() {
        if (d as u32) < s.rank {
            *div = FastDiv::new(s.out_dims[d]);
        }
    }
    grid_stride(c, n, |o| {
        let mut rem = o;
        let mut src = 0u32;
        // A fixed trip count, fully unrolled, so the shape arrays are read with constant indices
        // (a runtime index would copy them to local memory).
        for d in (0..MAX_RANK).rev() {
            if (d as u32) < s.rank {
                if d == 0 {
                    // What is left is the outermost index (o < n): no division needed.
                    src += rem * s.in_strides[0];
                } else {
                    let (q, r) = divs[d].divmod(rem);
                    src += r * s.in_strides[d];
                    rem = q;
                }
            }
        }
        *out.add(o as usize) = *x.add(src as usize);
    });
}
