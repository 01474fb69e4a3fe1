//! Reductions over the last dimension (sum, mean, max): one warp per row.
//!
//! Each lane folds its strided part of the row in f32, the warp combines the partials with
//! butterfly shuffles, and lane 0 writes the row's value. One read of the input.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::Elem;

pub const REDUCE_SUM: u32 = 0;
pub const REDUCE_MEAN: u32 = 1;
pub const REDUCE_MAX: u32 = 2;

#[inline(always)]
fn fold(op: u32, a: f32, b: f32) -> f32 {
    if op == REDUCE_MAX {
        // NaN propagates, as in PyTorch's max.
        if a.is_nan() || b.is_nan() {
            f32::NAN
        } else {
            a.max(b)
        }
    } else {
        a + b
    }
}

/// `out[r] = op(x[r, 0..cols])`. Launch with blockDim.x a multiple of 32; warp w of block b
/// takes rows b*warps + w, then strides by the whole grid's warps.
///
/// # Safety
/// `x` holds `rows * cols` elements (`cols >= 1`), `out` holds `rows`.
#[inline(always)]
pub unsafe fn reduce_rows<C: Ctx, E: Elem>(c: &C, x: *const E, out: *mut E, rows: usize, cols: usize, op: u32) {
    let warps = (c.block_dim().x / 32) as usize;
    let lane = c.lane() as usize;
    let mut row = c.block_idx().x as usize * warps + (c.thread_idx().x / 32) as usize;
    let row_stride = warps * c.grid_dim().x as usize;
    let init = if op == REDUCE_MAX { f32::NEG_INFINITY } else { 0.0 };
    // The loop condition is the same for all lanes of a warp, so shuffles inside stay convergent.
    while row < rows {
        let xr = x.add(row * cols);
        let mut acc = init;
        let mut j = lane;
        while j < cols {
            acc = fold(op, acc, (*xr.add(j)).to_f32());
            j += 32;
        }
        let mut mask = 16;
        while mask > 0 {
            acc = fold(op, acc, c.shfl_xor_f32(acc, mask));
            mask /= 2;
        }
        if lane == 0 {
            let v = if op == REDUCE_MEAN { acc / cols as f32 } else { acc };
            *out.add(row) = E::from_f32(v);
        }
        row += row_stride;
    }
}

/// One warp per row, 4 warps per block.
pub fn config(rows: usize) -> LaunchConfig {
    let blocks = rows.div_ceil(4).clamp(1, 65535);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(128), shared_bytes: 0 }
}
