//! Elementwise and broadcast kernels: `out[i] = act(a[i] op b[i % nb])`.
//!
//! One body covers add, mul, bias + activation (b is a bias of `nb` = last-dim elements) and a bare
//! activation (`b` null). A grid-stride loop, so any grid size is correct.

use crate::ctx::{grid_stride, Ctx};
use crate::fastdiv::FastDiv;
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
    let by_nb = FastDiv::new(nb);
    grid_stride(c, n, |i| {
        let x = (*a.add(i as usize)).to_f32();
        let y = if b.is_null() {
            x
        } else {
            let bv = (*b.add(by_nb.divmod(i).1 as usize)).to_f32();
            if op == OP_MUL {
                x * bv
            } else {
                x + bv
            }
        };
        *out.add(i as usize) = E::from_f32(activate(y, act));
    });
}

/// Grid-stride over the elements.
pub use crate::ctx::grid_stride_config as config;
