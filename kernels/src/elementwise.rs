//! Elementwise and broadcast kernels: `out[i] = act(a[i] op b[i % nb])`.
//!
//! One body covers add, mul, bias + activation (b is a bias of `nb` = last-dim elements) and a bare
//! activation (`b` null). A grid-stride loop, so any grid size is correct.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{activate, Elem};

pub const OP_ADD: u32 = 0;
pub const OP_MUL: u32 = 1;

/// Sizes are u32 (callers keep `n < 2^31`) because 64-bit division is a long software routine on
/// the GPU and `i % nb` runs per element.
///
/// # Safety
/// `a` and `out` hold `n` elements, `b` is null or holds `nb >= 1` elements; `out` may alias `a`.
#[inline(always)]
pub unsafe fn binary<C: Ctx, E: Elem>(
    c: &C,
    a: *const E,
    b: *const E,
    out: *mut E,
    n: u32,
    nb: u32,
    op: u32,
    act: u32,
) {
    let stride = c.block_dim().x * c.grid_dim().x;
    let mut i = c.block_idx().x * c.block_dim().x + c.thread_idx().x;
    while i < n {
        let x = (*a.add(i as usize)).to_f32();
        let y = if b.is_null() {
            x
        } else {
            let bv = (*b.add((i % nb) as usize)).to_f32();
            if op == OP_MUL {
                x * bv
            } else {
                x + bv
            }
        };
        *out.add(i as usize) = E::from_f32(activate(y, act));
        i += stride;
    }
}

/// 256 threads per block; enough blocks for a few grid-stride steps per thread on a large GPU.
pub fn config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 132 * 16);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(256), shared_bytes: 0 }
}
