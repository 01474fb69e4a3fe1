//! The MLP-fusion sum of the decoder: NHWC maps of different sizes, each bilinearly resized to a
//! common `(oh, ow)` (`align_corners=False`) and added, in one pass without materialising the
//! resized maps or a concatenation.
//!
//! The interpolation weights are computed in f32 exactly as `tensor::ops::interp` does
//! (`lerp_table` and the separable blend), and the maps are added in order starting from map 0, so
//! f32 results equal the CPU composite bit for bit. Consecutive threads handle consecutive
//! channels (coalesced NHWC loads and stores).

use crate::ctx::{grid_stride, Ctx};
use crate::math::Elem;

pub const MAX_MAPS: usize = 4;

/// Map `i < n_maps` is `[b, h[i], w[i], c]`; the output is `[b, oh, ow, c]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UpsampleSumShape {
    pub n_maps: u32,
    pub b: u32,
    pub c: u32,
    pub oh: u32,
    pub ow: u32,
    pub h: [u32; MAX_MAPS],
    pub w: [u32; MAX_MAPS],
}

/// Grid-stride over the output elements.
pub use crate::ctx::grid_stride_config as config;

/// PyTorch's `align_corners=False` source for output index `dst` along an axis of `len_in`
/// inputs (`scale = len_in / len_out`): `(i0, i1, l0, l1)`, as `interp::lerp_table` in f32.
#[inline(always)]
fn lerp(dst: u32, scale: f32, len_in: u32) -> (u32, u32, f32, f32) {
    let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    // src >= 0, so the conversion is the floor.
    let i0 = (src as u32).min(len_in - 1);
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 + 1 < len_in { i0 + 1 } else { i0 };
    (i0, i1, 1.0 - l1, l1)
}

/// `out[b, y, x, k] = sum_i resize(map_i)[b, y, x, k]`; f32 accumulation, one rounding on store.
///
/// # Safety
/// `m_i` for `i < n_maps` hold `b * h[i] * w[i] * c` elements (the rest may be null), `out` holds
/// `b * oh * ow * c`; `1 <= n_maps <= 4`, every size nonzero.
#[inline(always)]
pub unsafe fn upsample_sum_nhwc<C: Ctx, E: Elem>(
    c: &C,
    m0: *const E,
    m1: *const E,
    m2: *const E,
    m3: *const E,
    out: *mut E,
    s: &UpsampleSumShape,
) {
    let maps = [m0, m1, m2, m3];
    let (ch, oh, ow) = (s.c, s.oh, s.ow);
    let n = s.b * oh * ow * ch;
    // Per-map scales once per thread (an IEEE division is a long instruction sequence).
    let mut scale = [(0.0f32, 0.0f32); MAX_MAPS];
    for (i, sc) in scale.iter_mut().enumerate() {
        *sc = (s.h[i] as f32 / oh as f32, s.w[i] as f32 / ow as f32);
    }
    grid_stride(c, n, |o| {
        let k = o % ch;
        let p = o / ch;
        let (ox, rest) = (p % ow, p / ow);
        let (oy, bi) = (rest % oh, rest / oh);
        let mut acc = 0.0f32;
        // Unrolled over the 4 map slots (constant indices keep the shape in parameter space).
        for (i, &m) in maps.iter().enumerate() {
            if (i as u32) >= s.n_maps {
                break;
            }
            let (h, w) = (s.h[i], s.w[i]);
            let plane = m.add((bi * h * w) as usize * ch as usize);
            let at = |y: u32, xx: u32| (*plane.add(((y * w + xx) * ch + k) as usize)).to_f32();
            acc += if h == oh && w == ow {
                at(oy, ox)
            } else {
                let (y0, y1, ly0, ly1) = lerp(oy, scale[i].0, h);
                let (x0, x1, lx0, lx1) = lerp(ox, scale[i].1, w);
                // Along the width first, then blend the two rows (interp's separable order).
                let top = lx0 * at(y0, x0) + lx1 * at(y0, x1);
                let bottom = lx0 * at(y1, x0) + lx1 * at(y1, x1);
                ly0 * top + ly1 * bottom
            };
        }
        *out.add(o as usize) = E::from_f32(acc);
    });
}
