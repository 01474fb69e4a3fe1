//! Softmax over the last dimension: one warp per row.
//!
//! Each lane keeps an online (max, sum) pair over its strided part of the row; the warp combines the
//! pairs with butterfly shuffles; a second pass writes exp(x - max) / sum. Two reads, one write.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{exp2, Elem, LOG2_E};

/// Combine two online-softmax partials (m, s): the sum of exp(x - m) over both parts.
#[inline(always)]
pub fn combine(m1: f32, s1: f32, m2: f32, s2: f32) -> (f32, f32) {
    let m = m1.max(m2);
    if m == f32::NEG_INFINITY {
        return (m, 0.0);
    }
    (m, s1 * exp2((m1 - m) * LOG2_E) + s2 * exp2((m2 - m) * LOG2_E))
}

/// Rows are `cols` apart in memory. Launch with blockDim.x a multiple of 32; warp w of block b
/// takes rows b*warps + w, then strides by the whole grid's warps.
///
/// # Safety
/// `x` and `out` hold `rows * cols` elements.
#[inline(always)]
pub unsafe fn softmax_rows<C: Ctx, E: Elem>(c: &C, x: *const E, out: *mut E, rows: usize, cols: usize) {
    let warps = (c.block_dim().x / 32) as usize;
    let lane = c.lane() as usize;
    let mut row = c.block_idx().x as usize * warps + (c.thread_idx().x / 32) as usize;
    let row_stride = warps * c.grid_dim().x as usize;
    // The loop condition is the same for all lanes of a warp, so shuffles inside stay convergent.
    while row < rows {
        let xr = x.add(row * cols);
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        let mut j = lane;
        while j < cols {
            let v = (*xr.add(j)).to_f32();
            (m, s) = combine(m, s, v, 1.0);
            j += 32;
        }
        let mut mask = 16;
        while mask > 0 {
            let m2 = c.shfl_xor_f32(m, mask);
            let s2 = c.shfl_xor_f32(s, mask);
            (m, s) = combine(m, s, m2, s2);
            mask /= 2;
        }
        let inv = 1.0 / s;
        let orow = out.add(row * cols);
        let mut j = lane;
        while j < cols {
            let v = (*xr.add(j)).to_f32();
            *orow.add(j) = E::from_f32(exp2((v - m) * LOG2_E) * inv);
            j += 32;
        }
        row += row_stride;
    }
}

/// One warp per row, 4 warps per block.
pub fn config(rows: usize) -> LaunchConfig {
    let blocks = rows.div_ceil(4).clamp(1, 65535);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(128), shared_bytes: 0 }
}
