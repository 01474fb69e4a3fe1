//! f32 GEMM on the CUDA cores (SIMT), any strides, batched, with a fused bias + activation +
//! residual epilogue:
//!
//! `C[b][i][j] = act(alpha * sum_k A[b][i][k] * B[b][k][j] + bias[j]) + R[b][i][j]`
//!
//! `R` (null: none) has C's layout; it may be C itself (an in-place residual add).
//!
//! Element (i, k) of A is at `a + b*batch_a + i*a_rs + k*a_cs` (likewise B, C), so transposed and
//! broadcast (stride 0) operands need no copy. A block computes a 64x64 tile of C with 256 threads,
//! each owning a 4x4 patch; tiles of A and B pass through shared memory 16 deep in K.

use crate::ctx::{Ctx, Dim3, LaunchConfig};
use crate::math::{activate, Elem};

pub const BM: usize = 64;
pub const BN: usize = 64;
pub const BK: usize = 16;

/// The shapes and strides of one (batched) product, in elements.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Strides {
    pub a_rs: u64,
    pub a_cs: u64,
    pub b_rs: u64,
    pub b_cs: u64,
    pub c_rs: u64,
    pub batch_a: u64,
    pub batch_b: u64,
    pub batch_c: u64,
}

pub fn config(m: usize, n: usize, batch: usize) -> LaunchConfig {
    LaunchConfig {
        grid: Dim3::new(n.div_ceil(BN) as u32, m.div_ceil(BM) as u32, batch as u32),
        block: Dim3::x(256),
        shared_bytes: 2 * BK * BM * 4,
    }
}

/// # Safety
/// The operands hold every element the strides address for `m x k`, `k x n` and `m x n` (per
/// batch); `bias` is null or holds `n`; `residual` is null or laid out as `out`. Launch with
/// [`config`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn gemm_f32<C: Ctx, O: Elem>(
    c: &C,
    a: *const f32,
    b: *const f32,
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
    let a = a.add(bid.z as usize * s.batch_a as usize);
    let b = b.add(bid.z as usize * s.batch_b as usize);
    let out = out.add(bid.z as usize * s.batch_c as usize);
    let residual = if residual.is_null() { residual } else { residual.add(bid.z as usize * s.batch_c as usize) };
    // Shared: As[BK][BM] (A transposed, so each thread reads 4 consecutive rows), Bs[BK][BN].
    let a_sh: *mut f32 = c.shared();
    let b_sh = a_sh.add(BK * BM);
    let t = c.thread_idx().x as usize;
    // This thread's 4x4 patch: rows ty*4.., cols tx*4.. of the tile.
    let (ty, tx) = (t / 16, t % 16);
    let mut acc = [[0.0f32; 4]; 4];
    let mut k0 = 0;
    while k0 < k {
        // Each thread stages 4 elements of each tile (1024 = 64 x 16 per tile); out-of-range is 0.
        for r in 0..4 {
            let e = t + 256 * r;
            let (i, kk) = (e / BK, e % BK);
            let (gi, gk) = (m0 + i, k0 + kk);
            let v = if gi < m && gk < k { *a.add(gi * s.a_rs as usize + gk * s.a_cs as usize) } else { 0.0 };
            *a_sh.add(kk * BM + i) = v;
            let (kk, j) = (e / BN, e % BN);
            let (gk, gj) = (k0 + kk, n0 + j);
            let v = if gk < k && gj < n { *b.add(gk * s.b_rs as usize + gj * s.b_cs as usize) } else { 0.0 };
            *b_sh.add(kk * BN + j) = v;
        }
        c.sync_threads();
        for kk in 0..BK {
            let mut av = [0.0f32; 4];
            let mut bv = [0.0f32; 4];
            for r in 0..4 {
                av[r] = *a_sh.add(kk * BM + ty * 4 + r);
                bv[r] = *b_sh.add(kk * BN + tx * 4 + r);
            }
            for i in 0..4 {
                for j in 0..4 {
                    acc[i][j] += av[i] * bv[j];
                }
            }
        }
        // The next iteration overwrites the tiles: everyone must be done reading them.
        c.sync_threads();
        k0 += BK;
    }
    for (i, row) in acc.iter().enumerate() {
        let gi = m0 + ty * 4 + i;
        for (j, v) in row.iter().enumerate() {
            let gj = n0 + tx * 4 + j;
            if gi < m && gj < n {
                let bj = if bias.is_null() { 0.0 } else { *bias.add(gj) };
                let at = gi * s.c_rs as usize + gj;
                let r = if residual.is_null() { 0.0 } else { (*residual.add(at)).to_f32() };
                *out.add(at) = O::from_f32(activate(alpha * v + bj, act) + r);
            }
        }
    }
}
