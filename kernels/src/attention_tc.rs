//! Attention on tensor cores: FlashAttention-2's scheme on `mma.sync.m16n8k16`, bf16 or f16 q, k, v
//! in, f32 scores, softmax and accumulation, out in the input format. The same operation, shapes and strides as the
//! CUDA-core kernel in [`crate::attention`] (its twin and reference): `out = softmax(scale · q kᵀ
//! + bias + mask) v`, with Swin's relative-position bias and shift mask fused.
//!
//! A block is 4 warps and 64 query rows, one slab of 16 rows per warp; grid (query blocks, heads,
//! batch). Per tile of 64 keys:
//! 1. all threads stage the K and V rows (head slice, zero past the head dim `d` and past `nk`)
//!    in shared memory as 16-bit words, rows padded by 8 elements so that the 8 row addresses of
//!    an `ldmatrix` fall in different banks;
//! 2. each warp computes its 16 x 64 scores `S = Q Kᵀ` (8 n-tiles of 8 keys, `D/16` k-steps; K
//!    rows are the `[n, k]` B operand as in [`crate::gemm_tc`]), then in f32 the scale, bias and
//!    mask, in log2 units so that the softmax runs on `exp2`;
//! 3. online softmax: the running row max `m` grows, what was accumulated is rescaled by
//!    `exp2(m_old - m_new)`, and `P = exp2(S - m)`;
//! 4. `O += P V`: a score tile's accumulator layout is exactly the A-operand layout of the next
//!    `mma` (two 16x8 C tiles = one 16x16 A tile), so P goes from registers to the tensor cores
//!    rounded to bf16 and never touches shared memory; V (`[k = key, n = dim]`, dims contiguous)
//!    is loaded with `ldmatrix.trans`.
//!
//! Lane layout (PTX "Matrix fragments for mma.m16n8k16"): with `g = lane / 4`, `t = lane % 4`, a
//! lane holds rows `g` and `g + 8` of its slab and, in each n-tile, columns `2t` and `2t + 1`.
//! The 4 lanes of a group share rows: row maxima combine with two shuffles; row sums stay
//! per-lane partial sums until the end (all four see the same rescale factors).
//!
//! Head dims: instances `D` in [`INSTANCES`] (16, 32, 64: the model's heads are 16 and 32 wide); a
//! head dim `d < D` runs with lanes `d..D` zero (q, K and V are zero there, so they add nothing),
//! as in the twin. Wider heads run on the twin: at `D = 128` q's fragments, the 64 accumulators
//! and the scores do not fit in 255 registers (ptxas spilled on sm_80 or sm_90 in every variant
//! tried: scores over 32 or 16 keys per step, q re-read per step). Shared memory is
//! 2 x 64 x (D + 8) x 2 bytes: 18 KB at D = 64.

use crate::attention::AttnShape;
use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::gemm_tc::MmaInput;
use crate::math::{exp2, Elem, LOG2_E};

/// Query rows per block (4 warps x 16).
pub const ROWS: usize = 64;
/// Threads per block.
pub const THREADS: usize = 128;
/// Keys per shared-memory tile.
pub const KEYS: usize = 64;
/// The compiled head-dim instances; any head dim up to the last runs in one of them.
pub const INSTANCES: [usize; 3] = [16, 32, 64];

/// The instance that runs head dim `d`: the smallest of [`INSTANCES`] that holds it.
pub fn instance(d: usize) -> Option<usize> {
    INSTANCES.into_iter().find(|&i| d > 0 && d <= i)
}

/// Shared row length in 16-bit elements for instance `D`.
const fn lds(d: usize) -> usize {
    d + 8
}

/// The launch of instance `D` (one of [`INSTANCES`]).
pub fn config<const D: usize>(batch: usize, heads: usize, nq: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(nq.div_ceil(ROWS) as u32, heads as u32, batch as u32),
        block: Dim3::x(THREADS as u32),
        shared_bytes: 2 * KEYS * lds(D) * 2,
    }
}

/// Instance `D` of the kernel, for head dims `s.d <= D`.
///
/// # Safety
/// As [`crate::attention::attention`]: the buffers hold what `s` describes; `bias`/`mask` are null
/// or hold `[heads, nq, nk]` / `[n_mask, nq, nk]` f32.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_tc<C: Ctx, I: MmaInput + Elem, const D: usize>(
    c: &C,
    q: *const I,
    k: *const I,
    v: *const I,
    bias: *const f32,
    mask: *const f32,
    out: *mut I,
    s: &AttnShape,
) {
    const { assert!(D == 16 || D == 32 || D == 64, "attention_tc: D not an instance") };
    const { assert!(core::mem::size_of::<I>() == 2, "attention_tc: a 16-bit input type") };
    // Register arrays need compile-time lengths (D/16 k-steps of q, D/8 output n-tiles); stable
    // Rust has no `D / 16` array length, so the instances are spelled out.
    if D == 16 {
        body::<C, I, 1, 2>(c, q, k, v, bias, mask, out, s)
    } else if D == 32 {
        body::<C, I, 2, 4>(c, q, k, v, bias, mask, out, s)
    } else {
        body::<C, I, 4, 8>(c, q, k, v, bias, mask, out, s)
    }
}

/// Two 16-bit values in one register, the first in the low half (the fragment convention).
#[inline(always)]
fn pack2<I: Elem>(lo: f32, hi: f32) -> u32 {
    let bits = |x: f32| -> u32 {
        let e = I::from_f32(x);
        // SAFETY: I is a 16-bit bit pattern (Bf16 or F16, `repr(transparent)` over u16).
        unsafe { *(&e as *const I as *const u16) as u32 }
    };
    bits(lo) | bits(hi) << 16
}

/// Element `at` of a 16-bit operand as a number.
#[inline(always)]
unsafe fn load<I: Elem>(p: *const I, at: usize) -> f32 {
    (*p.add(at)).to_f32()
}

/// 16 bytes, so that a load or store of it is one vector instruction.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct V4([u32; 4]);

/// Dims `c8..c8 + 8` of the row at `row` as raw 16-bit words, zero from `dim` on; one vector load
/// when `vec_ok` and the chunk is whole.
#[inline(always)]
unsafe fn load8<I>(p: *const I, row: usize, c8: usize, dim: usize, vec_ok: bool) -> V4 {
    let src = p.add(row + c8) as *const u16;
    if vec_ok && c8 + 8 <= dim {
        return *(src as *const V4);
    }
    let mut w = [0u32; 4];
    for (i, wi) in w.iter_mut().enumerate() {
        let lo = if c8 + 2 * i < dim { *src.add(2 * i) as u32 } else { 0 };
        let hi = if c8 + 2 * i + 1 < dim { *src.add(2 * i + 1) as u32 } else { 0 };
        *wi = lo | hi << 16;
    }
    V4(w)
}

/// The kernel with `KS = D/16` k-steps and `NT = D/8` output n-tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn body<C: Ctx, I: MmaInput + Elem, const KS: usize, const NT: usize>(
    c: &C,
    q: *const I,
    k: *const I,
    v: *const I,
    bias: *const f32,
    mask: *const f32,
    out: *mut I,
    s: &AttnShape,
) {
    let dd = KS * 16;
    let ld = lds(dd);
    let dim = (s.d as usize).min(dd);
    let (nq, nk) = (s.nq as usize, s.nk as usize);
    let bid = c.block_idx();
    let (h, b) = (bid.y as usize, bid.z as usize);
    let tid = c.thread_idx().x as usize;
    let (warp, lane) = (tid / 32, tid % 32);
    let (g, t) = (lane / 4, lane % 4);
    // This lane's two query rows (g and g + 8 of the warp's slab); rows past nq compute on zeros
    // and write nothing.
    let row0 = bid.x as usize * ROWS + warp * 16 + g;
    let rows = [row0, row0 + 8];
    let k_sh: *mut u16 = c.shared();
    let v_sh = k_sh.add(KEYS * ld);

    // Q fragments, straight from global memory (read once): A tile kk holds dims 16kk..16kk+16;
    // register r is row g + 8 (r % 2), dims 2t, 2t + 1 (+ 8 for r >= 2).
    let qbase = b * s.q_bs as usize + h * s.q_hs as usize;
    let q_at = |row: usize, d: usize| -> f32 {
        if row < nq && d < dim {
            load(q, qbase + row * s.q_rs as usize + d)
        } else {
            0.0
        }
    };
    let mut qf = [[0u32; 4]; KS];
    for (kk, f) in qf.iter_mut().enumerate() {
        for (r, reg) in f.iter_mut().enumerate() {
            let (row, d) = (rows[r % 2], kk * 16 + 2 * t + 8 * (r / 2));
            *reg = pack2::<I>(q_at(row, d), q_at(row, d + 1));
        }
    }
    // Bias and mask rows (natural-log units), null for rows past nq.
    let extra_row = |p: *const f32, first: usize, row: usize| -> *const f32 {
        if p.is_null() || row >= nq {
            core::ptr::null()
        } else {
            p.add((first * nq + row) * nk)
        }
    };
    let bias_rows = [extra_row(bias, h, rows[0]), extra_row(bias, h, rows[1])];
    let m_first = b % (s.n_mask.max(1) as usize);
    let mask_rows = [extra_row(mask, m_first, rows[0]), extra_row(mask, m_first, rows[1])];
    let log2_scale = s.scale * LOG2_E;

    // Running max and partial sum of rows g and g + 8, and the output accumulators.
    let mut m = [f32::NEG_INFINITY; 2];
    let mut l = [0.0f32; 2];
    let mut acc = [[0.0f32; 4]; NT];

    let kvbase = b * s.kv_bs as usize + h * s.kv_hs as usize;
    let chunks = dd / 8;
    // 16-byte loads need every row start 16-byte aligned and whole chunks inside the head.
    let vec_ok = dim.is_multiple_of(8)
        && (s.kv_bs | s.kv_hs | s.kv_rs).is_multiple_of(8)
        && (k as usize).is_multiple_of(16)
        && (v as usize).is_multiple_of(16);
    let mut j0 = 0;
    while j0 < nk {
        // 1. Stage K and V rows j0..j0 + 64 in chunks of 8 dims (16 bytes), zeros past nk and
        // past the head dim.
        let mut e = tid;
        while e < KEYS * chunks {
            let (r, c8) = (e / chunks, (e % chunks) * 8);
            let (mut kx, mut vx) = (V4([0; 4]), V4([0; 4]));
            if j0 + r < nk {
                let row = kvbase + (j0 + r) * s.kv_rs as usize;
                kx = load8(k, row, c8, dim, vec_ok);
                vx = load8(v, row, c8, dim, vec_ok);
            }
            *(k_sh.add(r * ld + c8) as *mut V4) = kx;
            *(v_sh.add(r * ld + c8) as *mut V4) = vx;
            e += THREADS;
        }
        c.sync_threads();

        // 2. S = Q Kᵀ for the tile's 64 keys: n-tile j covers keys 8j..8j+8; one ldmatrix.x4
        // loads two n-tiles x 16 dims (lane l addresses key row l%8 + 8 (l/16), dim half (l/8) % 2).
        let mut sc = [[0.0f32; 4]; 8];
        for (kk, qk) in qf.iter().enumerate() {
            for p in 0..4 {
                let key = p * 16 + lane % 8 + 8 * (lane / 16);
                let r = c.ldmatrix_x4(k_sh.add(key * ld + kk * 16 + ((lane / 8) % 2) * 8));
                sc[2 * p] = I::mma(c, *qk, [r[0], r[1]], sc[2 * p]);
                sc[2 * p + 1] = I::mma(c, *qk, [r[2], r[3]], sc[2 * p + 1]);
            }
        }
        // Scale, bias and mask in log2 units; keys past nk are -inf.
        let mut tile_max = [f32::NEG_INFINITY; 2];
        for (j, tile) in sc.iter_mut().enumerate() {
            for (e, x) in tile.iter_mut().enumerate() {
                let (r, key) = (e / 2, j0 + 8 * j + 2 * t + e % 2);
                if key >= nk {
                    *x = f32::NEG_INFINITY;
                    continue;
                }
                let mut y = *x * log2_scale;
                if !bias_rows[r].is_null() {
                    y += *bias_rows[r].add(key) * LOG2_E;
                }
                if !mask_rows[r].is_null() {
                    y += *mask_rows[r].add(key) * LOG2_E;
                }
                *x = y;
                tile_max[r] = tile_max[r].max(y);
            }
        }
        // 3. Online softmax: the group's 4 lanes (xor 1, 2) share each row.
        let mut scale_old = [0.0f32; 2];
        for r in 0..2 {
            let mut mx = tile_max[r];
            mx = mx.max(c.shfl_xor_f32(mx, 1));
            mx = mx.max(c.shfl_xor_f32(mx, 2));
            let m_new = m[r].max(mx);
            // The first step always holds a key (nk >= 1), so m_new is finite from then on.
            scale_old[r] = exp2(m[r] - m_new);
            m[r] = m_new;
            l[r] *= scale_old[r];
        }
        for tile in acc.iter_mut() {
            for (e, a) in tile.iter_mut().enumerate() {
                *a *= scale_old[e / 2];
            }
        }
        for tile in sc.iter_mut() {
            for (e, x) in tile.iter_mut().enumerate() {
                *x = exp2(*x - m[e / 2]);
                l[e / 2] += *x;
            }
        }

        // 4. O += P V, 16 keys per k-step: P's A tile is score tiles 2p and 2p + 1. V's B
        // tiles come from ldmatrix.trans: lane l addresses key row 16p + l%8 + 8 ((l/8) % 2)
        // at dim 16 n2 + 8 (l/16), giving n-tiles 2 n2 and 2 n2 + 1.
        for p in 0..4 {
            let pa = [
                pack2::<I>(sc[2 * p][0], sc[2 * p][1]),
                pack2::<I>(sc[2 * p][2], sc[2 * p][3]),
                pack2::<I>(sc[2 * p + 1][0], sc[2 * p + 1][1]),
                pack2::<I>(sc[2 * p + 1][2], sc[2 * p + 1][3]),
            ];
            let key = 16 * p + lane % 8 + 8 * ((lane / 8) % 2);
            for n2 in 0..NT / 2 {
                let r = c.ldmatrix_x4_trans(v_sh.add(key * ld + 16 * n2 + 8 * (lane / 16)));
                acc[2 * n2] = I::mma(c, pa, [r[0], r[1]], acc[2 * n2]);
                acc[2 * n2 + 1] = I::mma(c, pa, [r[2], r[3]], acc[2 * n2 + 1]);
            }
        }
        // The next tile overwrites K and V.
        c.sync_threads();
        j0 += KEYS;
    }

    // Normalise by the row sums (summed over the group's 4 lanes) and write rows < nq, dims < d.
    let mut inv = [0.0f32; 2];
    for r in 0..2 {
        let mut sum = l[r];
        sum += c.shfl_xor_f32(sum, 1);
        sum += c.shfl_xor_f32(sum, 2);
        inv[r] = 1.0 / sum;
    }
    let obase = b * s.o_bs as usize + h * s.o_hs as usize;
    for (j, tile) in acc.iter().enumerate() {
        for (e, a) in tile.iter().enumerate() {
            let (row, d) = (rows[e / 2], 8 * j + 2 * t + e % 2);
            if row < nq && d < dim {
                *out.add(obase + row * s.o_rs as usize + d) = I::from_f32(a * inv[e / 2]);
            }
        }
    }
}
