//! Fused attention with online softmax: `out = softmax(scale * q k^T + bias + mask) v`, without a
//! score matrix in global memory.
//!
//! Layouts are strided (element strides per batch item, head and row in [`AttnShape`]), so the
//! kernel reads heads straight out of a Linear's token-major output: `[B, n, heads·D]`, or Swin's
//! packed `[B, n, 3·heads·D]` qkv (q, k, v at column offsets 0, C, 2C, row stride 3C), and writes
//! `[B, nq, heads·D]` for the output projection, with no permuted copies. Head-major
//! `[batch, heads, n, D]` is the special case of [`AttnShape::head_major`].
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

/// Per-launch sizes and element strides (`q_*` for q, `kv_*` for k and v, `o_*` for out: batch
/// item, head, row).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct AttnShape {
    pub heads: u32,
    pub nq: u32,
    pub nk: u32,
    pub n_mask: u32,
    pub scale: f32,
    pub q_bs: u32,
    pub q_hs: u32,
    pub q_rs: u32,
    pub kv_bs: u32,
    pub kv_hs: u32,
    pub kv_rs: u32,
    pub o_bs: u32,
    pub o_hs: u32,
    pub o_rs: u32,
}

impl AttnShape {
    /// Contiguous `[batch, heads, n, d]` q, k, v and out.
    pub fn head_major(heads: usize, nq: usize, nk: usize, n_mask: usize, scale: f32, d: usize) -> AttnShape {
        let (h, q, k, d) = (heads as u32, nq as u32, nk as u32, d as u32);
        AttnShape {
            heads: h,
            nq: q,
            nk: k,
            n_mask: n_mask as u32,
            scale,
            q_bs: h * q * d,
            q_hs: q * d,
            q_rs: d,
            kv_bs: h * k * d,
            kv_hs: k * d,
            kv_rs: d,
            o_bs: h * q * d,
            o_hs: q * d,
            o_rs: d,
        }
    }

    /// Token-major operands: rows of `q_row`, `kv_row` and `o_row` elements (q `[B, nq, q_row]`,
    /// k and v `[B, nk, kv_row]`, out `[B, nq, o_row]`), head `h` at columns `h·d..(h+1)·d` of a
    /// row (after each operand's own start pointer).
    #[allow(clippy::too_many_arguments)]
    pub fn token_major(
        heads: usize,
        nq: usize,
        nk: usize,
        n_mask: usize,
        scale: f32,
        d: usize,
        (q_row, kv_row, o_row): (usize, usize, usize),
    ) -> AttnShape {
        let (q, k, d) = (nq as u32, nk as u32, d as u32);
        let (qr, kr, or) = (q_row as u32, kv_row as u32, o_row as u32);
        AttnShape {
            heads: heads as u32,
            nq: q,
            nk: k,
            n_mask: n_mask as u32,
            scale,
            q_bs: q * qr,
            q_hs: d,
            q_rs: qr,
            kv_bs: k * kr,
            kv_hs: d,
            kv_rs: kr,
            o_bs: q * or,
            o_hs: d,
            o_rs: or,
        }
    }
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
    let t = c.thread_idx().x as usize;
    let i = bid.x as usize * THREADS + t;
    let active = i < nq;
    let k_sh: *mut f32 = c.shared();
    let v_sh = k_sh.add(KT * D);

    // This query row, pre-scaled by scale * log2(e) so the softmax runs on exp2.
    let mut qr = [0.0f32; D];
    if active {
        let qp = q.add(b * s.q_bs as usize + h * s.q_hs as usize + i * s.q_rs as usize);
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
        // Stage K and V rows j0.. (all threads; consecutive threads read consecutive elements of
        // a row, D of them, so a warp reads 32·4/D rows' head slices).
        let base = b * s.kv_bs as usize + h * s.kv_hs as usize + j0 * s.kv_rs as usize;
        let mut e = t;
        while e < rows * D {
            let at = base + (e / D) * s.kv_rs as usize + e % D;
            *k_sh.add(e) = (*k.add(at)).to_f32();
            *v_sh.add(e) = (*v.add(at)).to_f32();
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
        let op = out.add(b * s.o_bs as usize + h * s.o_hs as usize + i * s.o_rs as usize);
        let inv = 1.0 / l;
        for (d, a) in acc.iter().enumerate() {
            *op.add(d) = E::from_f32(a * inv);
        }
    }
}
