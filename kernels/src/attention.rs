//! Fused attention with online softmax: `out = softmax(scale * q k^T + bias + mask) v`, without a
//! score matrix in global memory.
//!
//! Layouts (contiguous): `q`, `out` are `[batch, heads, nq, D]`, `k`, `v` are `[batch, heads, nk, D]`;
//! `bias` (optional) is `[heads, nq, nk]` (Swin's relative-position bias, gathered); `mask`
//! (optional) is `[n_mask, nq, nk]` and batch item `b` uses mask `b % n_mask` (Swin's shifted
//! windows: batch = images x windows, windows innermost).
//!
//! One thread per query row, 64 per block; grid (query blocks, heads, batch). Keys and values pass
//! through shared memory 64 rows at a time; each thread keeps its running max `m`, normaliser `l`
//! and the `D` accumulators in registers and rescales them when the max grows (online softmax).
//! This covers Swin windows (49 x 49), the decoder's 18 queries over 3136 keys and 3136 queries
//! over 18 keys with one body.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{exp2, Elem, LOG2_E};

pub const THREADS: usize = 64;
/// Keys per shared-memory tile.
pub const KT: usize = 64;

/// Per-launch sizes.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct AttnShape {
    pub heads: u32,
    pub nq: u32,
    pub nk: u32,
    pub n_mask: u32,
    pub scale: f32,
}

pub fn config<const D: usize>(batch: usize, heads: usize, nq: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(nq.div_ceil(THREADS) as u32, heads as u32, batch as u32),
        block: Dim3::x(THREADS as u32),
        shared_bytes: 2 * KT * D * 4,
    }
}

/// # Safety
/// Buffers hold the shapes in the module doc; `bias`/`mask` are null or hold theirs.
#[inline(always)]
pub unsafe fn attention<C: Ctx, E: Elem, const D: usize>(
    c: &C,
    q: *const E,
    k: *const E,
    v: *const E,
    bias: *const f32,
    mask: *const f32,
    out: *mut E,
    s: &AttnShape,
) {
    let (nq, nk) = (s.nq as usize, s.nk as usize);
    let bid = c.block_idx();
    let (h, b) = (bid.y as usize, bid.z as usize);
    let bh = b * s.heads as usize + h;
    let t = c.thread_idx().x as usize;
    let i = bid.x as usize * THREADS + t;
    let active = i < nq;
    let k_sh: *mut f32 = c.shared();
    let v_sh = k_sh.add(KT * D);

    // This query row, pre-scaled by scale * log2(e) so the softmax runs on exp2.
    let mut qr = [0.0f32; D];
    if active {
        let qp = q.add((bh * nq + i) * D);
        for (d, qd) in qr.iter_mut().enumerate() {
            *qd = (*qp.add(d)).to_f32() * s.scale * LOG2_E;
        }
    }
    let bias_row = if bias.is_null() || !active { bias } else { bias.add((h * nq + i) * nk) };
    let mask_row = if mask.is_null() || !active { mask } else { mask.add(((b % s.n_mask as usize) * nq + i) * nk) };
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut acc = [0.0f32; D];

    let mut j0 = 0;
    while j0 < nk {
        let rows = (nk - j0).min(KT);
        // Stage K and V rows j0.. (all threads, coalesced: consecutive threads, consecutive elements).
        let base = (bh * nk + j0) * D;
        let mut e = t;
        while e < rows * D {
            *k_sh.add(e) = (*k.add(base + e)).to_f32();
            *v_sh.add(e) = (*v.add(base + e)).to_f32();
            e += THREADS;
        }
        c.sync_threads();
        if active {
            for jj in 0..rows {
                let mut sc = 0.0f32;
                for (d, qd) in qr.iter().enumerate() {
                    sc += qd * *k_sh.add(jj * D + d);
                }
                // bias and mask are in natural-log units: bring them to log2 units too.
                if !bias_row.is_null() {
                    sc += *bias_row.add(j0 + jj) * LOG2_E;
                }
                if !mask_row.is_null() {
                    sc += *mask_row.add(j0 + jj) * LOG2_E;
                }
                if sc > m {
                    // New running max: rescale what was accumulated so far.
                    let r = exp2(m - sc);
                    l *= r;
                    for a in acc.iter_mut() {
                        *a *= r;
                    }
                    m = sc;
                }
                let p = exp2(sc - m);
                l += p;
                for (d, a) in acc.iter_mut().enumerate() {
                    *a += p * *v_sh.add(jj * D + d);
                }
            }
        }
        // The next tile overwrites K and V.
        c.sync_threads();
        j0 += KT;
    }
    if active {
        let op = out.add((bh * nq + i) * D);
        let inv = 1.0 / l;
        for (d, a) in acc.iter().enumerate() {
            *op.add(d) = E::from_f32(a * inv);
        }
    }
}
