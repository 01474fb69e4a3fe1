//! The parsing head's hypernetwork product: `out[b, m, p] = sum_c h[b, m, c] * u[b, c, p]` with
//! small `m` (<= 32 classes) and `ch` (<= 64 channels) over many pixels `p`.
//!
//! Block = 256 threads, one pixel each; grid (pixel blocks, batch). The block stages `h[b]` in
//! shared memory as f32 (every thread then reads the same address: a broadcast), and each thread
//! reads its `u` column once (coalesced across the block) while keeping up to 32 accumulators in
//! registers.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{fma, Elem};

pub const THREADS: usize = 256;
/// Accumulators per thread: `m` is processed in chunks of this many rows.
pub const M_CHUNK: usize = 32;

pub fn config(batch: usize, m: usize, ch: usize, p: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(p.div_ceil(THREADS).max(1) as u32, batch as u32, 1),
        block: Dim3::x(THREADS as u32),
        shared_bytes: m * ch * 4,
    }
}

/// # Safety
/// `h` holds `B * m * ch`, `u` holds `B * ch * p`, `out` holds `B * m * p` elements (`B` the
/// grid's y size); the launch's shared memory holds `m * ch` f32 ([`config`]).
#[inline(always)]
pub unsafe fn hyper_product<C: Ctx, E: Elem>(c: &C, h: *const E, u: *const E, out: *mut E, m: u32, ch: u32, p: u32) {
    let b = c.block_idx().y as usize;
    let t = c.thread_idx().x;
    let hs: *mut f32 = c.shared();
    let hb = h.add(b * (m * ch) as usize);
    let mut e = t;
    while e < m * ch {
        *hs.add(e as usize) = (*hb.add(e as usize)).to_f32();
        e += THREADS as u32;
    }
    c.sync_threads();

    let px = c.block_idx().x * THREADS as u32 + t;
    if px >= p {
        return;
    }
    let ub = u.add(b * (ch * p) as usize + px as usize);
    let ob = out.add(b * (m * p) as usize + px as usize);
    let mut m0 = 0;
    while m0 < m {
        let rows = (m - m0).min(M_CHUNK as u32);
        // Fixed-size loops with a guard (fully unrolled): the accumulators stay in registers.
        let mut acc = [0.0f32; M_CHUNK];
        for k in 0..ch {
            let uv = (*ub.add((k * p) as usize)).to_f32();
            let hrow = hs.add((m0 * ch + k) as usize);
            for (r, a) in acc.iter_mut().enumerate() {
                if (r as u32) < rows {
                    *a = fma(*hrow.add(r * ch as usize), uv, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            if (r as u32) < rows {
                *ob.add(((m0 + r as u32) * p) as usize) = E::from_f32(*a);
            }
        }
        m0 += M_CHUNK as u32;
    }
}
