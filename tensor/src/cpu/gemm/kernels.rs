//! Register-tiled microkernels: C[MR, NR] (+)= sum_p A[:, p] * B[p, :].
//!
//! All kernels share one signature. `a` is a packed A micro-panel (for each p, MR values);
//! `b` holds, for each p, NR contiguous values at `b + p * b_rs` (a packed B micro-panel with
//! `b_rs == NR`, or B itself when its rows are contiguous). C is row-major with leading dim
//! `ldc`; with `load_c` the product is added to C, else C is overwritten. Full tiles only: the
//! driver routes edge tiles through a scratch tile.

/// The microkernel signature shared by every ISA.
pub type KernelFn =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool);

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    pub const MR: usize = 14;
    pub const NR: usize = 32;

    /// 14x32 tile: 28 zmm accumulators, two B vectors and one broadcast fill the 32 registers.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; pointers must cover the tile as described in the module docs.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool) {
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a.add(i));
                acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            }
            a = a.add(MR);
            b = b.add(b_rs);
        }
        for i in 0..MR {
            let row = c.add(i * ldc);
            let (mut v0, mut v1) = (acc0[i], acc1[i]);
            if load_c {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(row));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(row.add(16)));
            }
            _mm512_storeu_ps(row, v0);
            _mm512_storeu_ps(row.add(16), v1);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    pub const MR: usize = 6;
    pub const NR: usize = 16;

    /// 6x16 tile: 12 ymm accumulators, two B vectors and one broadcast (15 of 16 registers).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; pointers must cover the tile as in the module docs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool) {
        // C is usually out of cache: ask for its lines now, so that the loads and stores at the
        // end do not wait for memory.
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
        }
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..MR {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
            }
            a = a.add(MR);
            b = b.add(b_rs);
        }
        for i in 0..MR {
            let row = c.add(i * ldc);
            let (mut v0, mut v1) = (acc0[i], acc1[i]);
            if load_c {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.add(8), v1);
        }
    }
}

/// Portable kernel in plain Rust; fixed-size arrays let the compiler keep the tile in
/// vector registers with whatever SIMD the target has.
pub mod generic {
    pub const MR: usize = 4;
    pub const NR: usize = 8;

    /// # Safety
    /// Pointers must cover the tile as described in the module docs.
    pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, b_rs: usize, c: *mut f32, ldc: usize, load_c: bool) {
        let mut acc = [[0.0f32; NR]; MR];
        for p in 0..kc {
            let ap: [f32; MR] = *(a.add(p * MR) as *const [f32; MR]);
            let bp: [f32; NR] = std::ptr::read_unaligned(b.add(p * b_rs) as *const [f32; NR]);
            for i in 0..MR {
                for j in 0..NR {
                    // Plain multiply-add: `mul_add` would call a slow libm fma without hardware FMA.
                    acc[i][j] += ap[i] * bp[j];
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate() {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
            for (cj, &v) in row.iter_mut().zip(acc_row) {
                *cj = if load_c { *cj + v } else { v };
            }
        }
    }
}
