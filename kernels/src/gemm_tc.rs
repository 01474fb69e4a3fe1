//! GEMM on tensor cores: bf16 or f16 inputs, f32 accumulation (`mma.sync.m16n8k16`), batched, with
//! a fused `alpha`, bias, activation and residual epilogue:
//!
//! `C[b][i][j] = act(alpha * sum_k A[b][i][k] * B[b][j][k] + bias[j]) + R[b][i][j]`
//!
//! `R` (null: none) has C's layout, so a Swin MLP's `x + fc2(h)` is one pass: the sum is rounded
//! once, where the unfused pair rounds the product and then the sum.
//!
//! B is given as `[n, k]` (k contiguous): the layout of a linear layer's weight, so `x @ W^T` needs
//! no transpose; `A` is `[m, k]`, `C` is `[m, n]`, each with its own row stride and batch stride.
//!
//! A block of 256 threads (8 warps, 2 x 4) computes a 128x128 tile of C; each warp a 64x32 tile,
//! i.e. 4 x 4 `mma` tiles of 16x8. Tiles of A and B (128 x 32) are staged in shared memory, double
//! buffered: the next tile's global loads are issued before the current tile's math, and stored to
//! the other buffer after it, so one barrier per K step suffices. Shared rows are padded by 16
//! bytes so the 8 row addresses of an `ldmatrix` fall in different banks.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{activate, Bf16, Elem, F16};
use core::mem::size_of;

pub const BM: usize = 128;
pub const BN: usize = 128;
pub const BK: usize = 32;
/// Shared row length in 16-bit elements (BK + 8 of padding).
const LDS: usize = BK + 8;
const TILE_ELEMS: usize = BM * LDS;

/// A 16-bit input format (its element type, [`Bf16`] or [`F16`]): selects the `mma` variant.
pub trait MmaInput: Copy {
    fn mma<C: Ctx>(c: &C, a: [u32; 4], b: [u32; 2], acc: [f32; 4]) -> [f32; 4];
}
impl MmaInput for Bf16 {
    #[inline(always)]
    fn mma<C: Ctx>(c: &C, a: [u32; 4], b: [u32; 2], acc: [f32; 4]) -> [f32; 4] {
        c.mma_bf16(a, b, acc)
    }
}
impl MmaInput for F16 {
    #[inline(always)]
    fn mma<C: Ctx>(c: &C, a: [u32; 4], b: [u32; 2], acc: [f32; 4]) -> [f32; 4] {
        c.mma_f16(a, b, acc)
    }
}

/// Shapes and strides in elements (see the module doc).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Strides {
    pub lda: u64,
    pub ldb: u64,
    pub ldc: u64,
    pub batch_a: u64,
    pub batch_b: u64,
    pub batch_c: u64,
}

pub fn config(m: usize, n: usize, batch: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(n.div_ceil(BN) as u32, m.div_ceil(BM) as u32, batch as u32),
        block: Dim3::x(256),
        shared_bytes: 2 * 2 * TILE_ELEMS * 2,
    }
}

/// 16 bytes, so that a load or store of it is one vector instruction.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct V4([u32; 4]);

/// Loads 8 consecutive k-elements of row `row` (< rows) starting at `k0`, zero past `k`.
#[inline(always)]
unsafe fn load8(p: *const u16, ld: usize, row: usize, rows: usize, k0: usize, k: usize, vec_ok: bool) -> V4 {
    if row >= rows {
        return V4([0; 4]);
    }
    let src = p.add(row * ld + k0);
    if vec_ok && k0 + 8 <= k {
        return *(src as *const V4);
    }
    let mut h = [0u16; 8];
    for (e, he) in h.iter_mut().enumerate() {
        if k0 + e < k {
            *he = *src.add(e);
        }
    }
    V4([
        h[0] as u32 | (h[1] as u32) << 16,
        h[2] as u32 | (h[3] as u32) << 16,
        h[4] as u32 | (h[5] as u32) << 16,
        h[6] as u32 | (h[7] as u32) << 16,
    ])
}

/// The epilogue stages each warp's results through shared memory, 16 rows x 32 columns at a time,
/// as f32 (so the residual is still added before the one rounding). Rows are padded to 36 words:
/// 16-byte aligned for the vector reads.
const STAGE_LD: usize = 32 + 4;
const STAGE_WARP: usize = 16 * STAGE_LD;

/// Eight consecutive outputs of one row: `src` (shared, 16-byte aligned) holds `alpha * acc +
/// bias`; this applies the activation, adds the residual, converts and stores. With `vec_ok` and
/// all eight columns inside C, the residual load and the store are 16-byte vector accesses (one
/// for 16-bit outputs, two for f32), so a warp writes whole 32-byte sectors; the scalar stores of
/// the mma fragment layout wrote 8 bytes of each, which made the output pass L2-bound (Nsight
/// Compute on an H200: 69% L2 throughput, 10% DRAM at 200704x384x128). Kept out of line: inlined
/// 8 times (GELU is ~30 instructions) it stops LLVM from unrolling the epilogue, and then the
/// accumulators are indexed at run time and live in local memory instead of registers.
#[inline(never)]
unsafe fn store8<O: Elem>(out: *mut O, residual: *const O, src: *const f32, cols: usize, act: u32, vec_ok: bool) {
    let lo = *(src as *const V4);
    let hi = *(src.add(4) as *const V4);
    let mut v = [0.0f32; 8];
    for e in 0..4 {
        v[e] = activate(f32::from_bits(lo.0[e]), act);
        v[e + 4] = activate(f32::from_bits(hi.0[e]), act);
    }
    let wide = size_of::<O>() == 2 || size_of::<O>() == 4;
    if vec_ok && wide && cols >= 8 {
        if !residual.is_null() {
            let r = load_elems::<O>(residual);
            for e in 0..8 {
                v[e] += r[e];
            }
        }
        store_elems::<O>(out, v);
    } else {
        // A bound test per element rather than `take(cols)`: the loop then unrolls and `v` stays
        // in registers (a run-time index would put it on the stack).
        for (e, &x) in v.iter().enumerate() {
            if e < cols {
                let r = if residual.is_null() { 0.0 } else { (*residual.add(e)).to_f32() };
                *out.add(e) = O::from_f32(x + r);
            }
        }
    }
}

/// Eight elements of a 16- or 32-bit type from a 16-byte aligned address, as f32.
#[inline(always)]
unsafe fn load_elems<O: Elem>(p: *const O) -> [f32; 8] {
    let mut r = [0.0f32; 8];
    if size_of::<O>() == 2 {
        let q = *(p as *const V4);
        for (e, re) in r.iter_mut().enumerate() {
            let bits = (q.0[e / 2] >> (16 * (e % 2))) as u16;
            *re = core::mem::transmute_copy::<u16, O>(&bits).to_f32();
        }
    } else {
        let (q0, q1) = (*(p as *const V4), *(p.add(4) as *const V4));
        for e in 0..4 {
            r[e] = core::mem::transmute_copy::<u32, O>(&q0.0[e]).to_f32();
            r[e + 4] = core::mem::transmute_copy::<u32, O>(&q1.0[e]).to_f32();
        }
    }
    r
}

/// Eight f32 values converted to a 16- or 32-bit type and stored at a 16-byte aligned address.
#[inline(always)]
unsafe fn store_elems<O: Elem>(p: *mut O, v: [f32; 8]) {
    if size_of::<O>() == 2 {
        let mut q = [0u32; 4];
        for e in 0..8 {
            let bits = core::mem::transmute_copy::<O, u16>(&O::from_f32(v[e]));
            q[e / 2] |= (bits as u32) << (16 * (e % 2));
        }
        *(p as *mut V4) = V4(q);
    } else {
        let bits = |e: usize| core::mem::transmute_copy::<O, u32>(&O::from_f32(v[e]));
        *(p as *mut V4) = V4([bits(0), bits(1), bits(2), bits(3)]);
        *(p.add(4) as *mut V4) = V4([bits(4), bits(5), bits(6), bits(7)]);
    }
}

/// # Safety
/// `a` holds `m x k` (row stride `lda`), `b` holds `n x k` (row stride `ldb`), `out` holds `m x n`
/// (row stride `ldc`), each per batch; `bias` is null or holds `n`; `residual` is null or laid out
/// as `out`. Launch with [`config`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn gemm_tc<C: Ctx, I: MmaInput, O: Elem>(
    c: &C,
    a: *const I,
    b: *const I,
    bias: *const f32,
    residual: *const O,
    out: *mut O,
    m: u32,
    n: u32,
    k: u32,
    s: &Strides,
    alpha: f32,
    act: u32,
) {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let bid = c.block_idx();
    let (m0, n0) = (bid.y as usize * BM, bid.x as usize * BN);
    // Both formats are moved as raw 16-bit words; only the `mma` reads them as numbers.
    let a = a.cast::<u16>().add(bid.z as usize * s.batch_a as usize);
    let b = b.cast::<u16>().add(bid.z as usize * s.batch_b as usize);
    let out = out.add(bid.z as usize * s.batch_c as usize);
    let (lda, ldb) = (s.lda as usize, s.ldb as usize);
    // 16-byte loads need 16-byte aligned rows; otherwise the element-wise path is used.
    let vec_a = lda.is_multiple_of(8) && s.batch_a.is_multiple_of(8) && (a as usize).is_multiple_of(16);
    let vec_b = ldb.is_multiple_of(8) && s.batch_b.is_multiple_of(8) && (b as usize).is_multiple_of(16);

    // Shared: [buffer][A | B][BM rows][LDS].
    let sh: *mut u16 = c.shared();
    let a_tile = |buf: usize| sh.add(buf * 2 * TILE_ELEMS);
    let b_tile = |buf: usize| sh.add(buf * 2 * TILE_ELEMS + TILE_ELEMS);

    let t = c.thread_idx().x as usize;
    let (warp, lane) = (t / 32, t % 32);
    // Warp (wm, wn) owns rows wm*64.. and columns wn*32.. of the block tile.
    let (wm, wn) = (warp / 4, warp % 4);

    // Staging: each tile is 128 rows x 4 chunks of 8; thread t moves chunks t and t + 256.
    let chunk = |e: usize| (e / 4, (e % 4) * 8);
    let fetch = |k0: usize| -> [V4; 4] {
        let (r0, c0) = chunk(t);
        let (r1, c1) = chunk(t + 256);
        [
            load8(a, lda, m0 + r0, m, k0 + c0, k, vec_a),
            load8(a, lda, m0 + r1, m, k0 + c1, k, vec_a),
            load8(b, ldb, n0 + r0, n, k0 + c0, k, vec_b),
            load8(b, ldb, n0 + r1, n, k0 + c1, k, vec_b),
        ]
    };
    let stash = |buf: usize, v: [V4; 4]| {
        let (r0, c0) = chunk(t);
        let (r1, c1) = chunk(t + 256);
        *(a_tile(buf).add(r0 * LDS + c0) as *mut V4) = v[0];
        *(a_tile(buf).add(r1 * LDS + c1) as *mut V4) = v[1];
        *(b_tile(buf).add(r0 * LDS + c0) as *mut V4) = v[2];
        *(b_tile(buf).add(r1 * LDS + c1) as *mut V4) = v[3];
    };

    let mut acc = [[[0.0f32; 4]; 4]; 4];
    stash(0, fetch(0));
    c.sync_threads();
    let ktiles = k.div_ceil(BK);
    for kt in 0..ktiles {
        let buf = kt % 2;
        let next = if kt + 1 < ktiles { Some(fetch((kt + 1) * BK)) } else { None };
        for kh in 0..BK / 16 {
            let kk = kh * 16;
            // A fragments: ldmatrix.x4 gives a 16x16 tile; lane l addresses row l%16, k-half l/16.
            let mut af = [[0u32; 4]; 4];
            for (i, f) in af.iter_mut().enumerate() {
                let row = wm * 64 + i * 16 + lane % 16;
                *f = c.ldmatrix_x4(a_tile(buf).add(row * LDS + kk + (lane / 16) * 8));
            }
            // B fragments: one ldmatrix.x4 covers two n8 tiles x k16; lane l addresses
            // n-row l%8 + 8*(l/16), k-half (l/8)%2.
            let mut bf = [[0u32; 2]; 4];
            for p in 0..2 {
                let row = wn * 32 + p * 16 + lane % 8 + 8 * (lane / 16);
                let r = c.ldmatrix_x4(b_tile(buf).add(row * LDS + kk + ((lane / 8) % 2) * 8));
                bf[2 * p] = [r[0], r[1]];
                bf[2 * p + 1] = [r[2], r[3]];
            }
            for i in 0..4 {
                for j in 0..4 {
                    acc[i][j] = I::mma(c, af[i], bf[j], acc[i][j]);
                }
            }
        }
        if let Some(v) = next {
            // Buffer buf^1 was last read in iteration kt-1, which every warp has finished (barrier).
            stash(buf ^ 1, v);
        }
        c.sync_threads();
    }

    // Epilogue, per 16-row slice i of each warp's 64x32 tile: the fragments (element e of tile
    // (i, j) is at row g + 8*(e/2), column 8*j + 2*(lane%4) + e%2) go to the warp's staging area
    // in shared memory (the A/B tiles are free: the loop ended on a barrier), then each lane
    // writes two runs of 8 columns. The barriers are block-wide (all warps run the same slices).
    let (g, tq) = (lane / 4, lane % 4);
    // `out` is already at this batch item; so is the residual, here.
    let residual = if residual.is_null() { residual } else { residual.add(bid.z as usize * s.batch_c as usize) };
    let ldc = s.ldc as usize;
    let aligned = |p: usize| p.is_multiple_of(16);
    let vec_c = ldc.is_multiple_of(8)
        && s.batch_c.is_multiple_of(8)
        && aligned(out as usize)
        && (residual.is_null() || aligned(residual as usize));
    let stage: *mut f32 = c.shared::<f32>().add(warp * STAGE_WARP);
    // A macro, written out per i rather than a loop or a closure: LLVM would not unroll a loop
    // over i here (a run-time index into `acc` moves it to local memory).
    macro_rules! store {
        ($i:literal) => {
            for (j, frag) in acc[$i].iter().enumerate() {
                for (e, v) in frag.iter().enumerate() {
                    let (r, cl) = (g + 8 * (e / 2), j * 8 + 2 * tq + e % 2);
                    let col = n0 + wn * 32 + cl;
                    let bj = if bias.is_null() || col >= n { 0.0 } else { *bias.add(col) };
                    *stage.add(r * STAGE_LD + cl) = alpha * v + bj;
                }
            }
            c.sync_threads();
            for half in 0..2 {
                let run = lane + 32 * half; // 16 rows x 4 runs of 8 columns
                let (r, c8) = (run / 4, (run % 4) * 8);
                let (row, col) = (m0 + wm * 64 + $i * 16 + r, n0 + wn * 32 + c8);
                if row < m && col < n {
                    let at = row * ldc + col;
                    let res = if residual.is_null() { residual } else { residual.add(at) };
                    store8(out.add(at), res, stage.add(r * STAGE_LD + c8), n - col, act, vec_c);
                }
            }
            c.sync_threads();
        };
    }
    store!(0);
    store!(1);
    store!(2);
    store!(3);
}
