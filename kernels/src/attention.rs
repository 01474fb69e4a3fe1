//! Fused attention with online softmax: `out = softmax(scale * q k^T + bias + mask) v`, without a
//! score matrix in global memory.
//!
//! Layouts are strided (element strides per batch item, head and row in [`AttnShape`]), so the
//! kernel reads heads straight out of a Linear's token-major output: `[B, n, heads·d]`, or Swin's
//! packed `[B, n, 3·heads·d]` qkv (q, k, v at column offsets 0, C, 2C, row stride 3C), and writes
//! `[B, nq, heads·d]` for the output projection, with no permuted copies. Head-major
//! `[batch, heads, n, d]` is the special case of [`AttnShape::head_major`].
//! `bias` (optional) is `[heads, nq, nk]` (Swin's relative-position bias, gathered); `mask`
//! (optional) is `[n_mask, nq, nk]` and batch item `b` uses mask `b % n_mask` (Swin's shifted
//! windows: batch = images x windows, windows innermost).
//!
//! One thread per query row (two for `D = 128`), 64 rows per block; grid (query blocks, heads,
//! batch). Keys and values pass through shared memory one tile of rows at a time; each thread keeps
//! its running max `m`, normaliser `l` and its `D` (or `D/2`) accumulators in registers and
//! rescales them when the max grows (online softmax). This covers Swin windows (49 x 49), the
//! decoder's 18 queries over 3136 keys and 3136 queries over 18 keys with one body.
//!
//! **Head dims.** The body is compiled for the instances `D` in [`INSTANCES`] (8, 16, 32, 64,
//! 128: the register arrays need a compile-time length) and takes the actual head dim `d <= D` at
//! run time ([`AttnShape::d`]). Any other `d` runs in the next instance up ([`instance`]) with the
//! lanes `d..D` zero: q and the staged K and V are zero there, so those lanes add nothing to a
//! score and accumulate nothing, and they are not written. The common dims (8, 16, 32, 64: the
//! model's Swin and decoder heads) fit an instance exactly and pay only a compare per staged
//! element; other dims pay for the padding (24 runs at the cost of 32, 96 at 128), which keeps one
//! readable body with everything in registers instead of a runtime-length loop over an array that
//! would live in local memory. `D = 128` splits each row over two threads ([`row_threads`]), each
//! holding every other dim of q and of the accumulators, with the two halves of a score summed by
//! one shuffle: 128 + 128 floats would not fit one thread's 255 registers.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{exp2, Elem, LOG2_E};

/// Query rows per block.
pub const THREADS: usize = 64;
/// The compiled head-dim instances; any head dim up to the last runs in one of them.
pub const INSTANCES: [usize; 5] = [8, 16, 32, 64, 128];
/// The largest supported head dim.
pub const MAX_D: usize = 128;

/// The instance that runs head dim `d`: the smallest of [`INSTANCES`] that holds it (`None` for 0
/// or above [`MAX_D`]).
pub fn instance(d: usize) -> Option<usize> {
    INSTANCES.into_iter().find(|&i| d > 0 && d <= i)
}

/// Threads per query row for instance `D`: 2 for 128 (see the module doc), else 1.
pub const fn row_threads(d: usize) -> usize {
    if d > 64 {
        d / 64
    } else {
        1
    }
}

/// Key rows per shared-memory tile for instance `D`: 64, or fewer for wide heads so that the K and
/// V tiles stay at 32 KB (under the 48 KB a launch gets without opting in).
pub const fn key_tile(d: usize) -> usize {
    let rows = 4096 / d;
    if rows < 64 {
        rows
    } else {
        64
    }
}

/// Per-launch sizes and element strides (`q_*` for q, `kv_*` for k and v, `o_*` for out: batch
/// item, head, row).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct AttnShape {
    pub heads: u32,
    /// The head dim: at most the instance's `D`; lanes past it are zero (see the module doc).
    pub d: u32,
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
            d,
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
            d,
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

/// The launch of instance `D` (one of [`INSTANCES`]).
pub fn config<const D: usize>(batch: usize, heads: usize, nq: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(nq.div_ceil(THREADS) as u32, heads as u32, batch as u32),
        block: Dim3::x((THREADS * row_threads(D)) as u32),
        shared_bytes: 2 * key_tile(D) * D * 4,
    }
}

/// Instance `D` (one of [`INSTANCES`]) of the kernel, for head dims `s.d <= D`.
///
/// # Safety
/// Buffers hold the shapes in the module doc; `bias`/`mask` are null or hold theirs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
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
    const { assert!(D == 8 || D == 16 || D == 32 || D == 64 || D == 128, "attention: D not an instance") };
    // The per-thread arrays are P long (P x G = D); stable Rust has no `D / G` array length, so
    // the split instance is spelled out.
    if D == 128 {
        body::<C, E, 64, 2>(c, q, k, v, bias, mask, out, s)
    } else {
        body::<C, E, D, 1>(c, q, k, v, bias, mask, out, s)
    }
}

/// The kernel with `G` threads per query row, each holding `P` of the `D = P·G` lanes: dims
/// `part, part + G, part + 2G, ..` (interleaved, so that the threads of a row read different
/// shared-memory banks).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn body<C: Ctx, E: Elem, const P: usize, const G: usize>(
    c: &C,
    q: *const E,
    k: *const E,
    v: *const E,
    bias: *const f32,
    mask: *const f32,
    out: *mut E,
    s: &AttnShape,
) {
    let dd = P * G;
    let kt = key_tile(dd);
    let dim = (s.d as usize).min(dd);
    let (nq, nk) = (s.nq as usize, s.nk as usize);
    let bid = c.block_idx();
    let (h, b) = (bid.y as usize, bid.z as usize);
    let t = c.thread_idx().x as usize;
    let (row, part) = (t / G, t % G);
    let i = bid.x as usize * THREADS + row;
    let active = i < nq;
    let k_sh: *mut f32 = c.shared();
    let v_sh = k_sh.add(kt * dd);

    // This query row's lanes, pre-scaled by scale * log2(e) so the softmax runs on exp2.
    let mut qr = [0.0f32; P];
    if active {
        let qp = q.add(b * s.q_bs as usize + h * s.q_hs as usize + i * s.q_rs as usize);
        for (j, qd) in qr.iter_mut().enumerate() {
            let d = j * G + part;
            if d < dim {
                *qd = (*qp.add(d)).to_f32() * s.scale * LOG2_E;
            }
        }
    }
    let bias_row = if bias.is_null() || !active { bias } else { bias.add((h * nq + i) * nk) };
    let mask_row = if mask.is_null() || !active { mask } else { mask.add(((b % s.n_mask as usize) * nq + i) * nk) };
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    let mut acc = [0.0f32; P];

    let mut j0 = 0;
    while j0 < nk {
        let rows = (nk - j0).min(kt);
        // Stage K and V rows j0.. (all threads; consecutive threads read consecutive elements of
        // a row, so a warp reads 32/D rows' head slices), zero in the lanes past the head dim.
        let base = b * s.kv_bs as usize + h * s.kv_hs as usize + j0 * s.kv_rs as usize;
        let mut e = t;
        while e < rows * dd {
            let (r, d) = (e / dd, e % dd);
            let (mut kx, mut vx) = (0.0, 0.0);
            if d < dim {
                let at = base + r * s.kv_rs as usize + d;
                (kx, vx) = ((*k.add(at)).to_f32(), (*v.add(at)).to_f32());
            }
            *k_sh.add(e) = kx;
            *v_sh.add(e) = vx;
            e += THREADS * G;
        }
        c.sync_threads();
        // With G > 1 every thread runs the loop: the shuffle needs the whole warp. An inactive
        // row computes on zeros (its bias and mask rows point at row 0) and writes nothing.
        if active || G > 1 {
            for jj in 0..rows {
                let mut sc = 0.0f32;
                for (j, qd) in qr.iter().enumerate() {
                    sc += qd * *k_sh.add(jj * dd + j * G + part);
                }
                // The row's G threads hold parts of the dot product (lanes t^1, t^2, ..).
                let mut lane = 1;
                while lane < G {
                    sc += c.shfl_xor_f32(sc, lane as u32);
                    lane *= 2;
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
                for (j, a) in acc.iter_mut().enumerate() {
                    *a += p * *v_sh.add(jj * dd + j * G + part);
                }
            }
        }
        // The next tile overwrites K and V.
        c.sync_threads();
        j0 += kt;
    }
    if active {
        let op = out.add(b * s.o_bs as usize + h * s.o_hs as usize + i * s.o_rs as usize);
        let inv = 1.0 / l;
        for (j, a) in acc.iter().enumerate() {
            let d = j * G + part;
            if d < dim {
                *op.add(d) = E::from_f32(a * inv);
            }
        }
    }
}
