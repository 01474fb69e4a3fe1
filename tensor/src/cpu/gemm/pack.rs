//! Packing: copy a block of A (or B) into R-wide panels so the microkernel reads both operands
//! sequentially. Panel q of the output holds, for each k index p, the R values of the panel
//! dimension at `dst[q * R * kc + p * R ..]`, zero-padded past `len`.
//!
//! The source element (panel index i, k index p) is at `src[i * s_panel + p * s_k]`, so A packs
//! with (s_panel, s_k) = (a_rs, a_cs) and B with (b_cs, b_rs): transposed operands are just
//! other strides. Two layouts are common and get fast paths: the panel dimension contiguous
//! (a plain copy per p, of a size known at compile time for full panels) and the k dimension
//! contiguous (a transpose, done 16x16 with AVX-512, 8x8 with AVX2: a linear layer's weight is
//! B of this kind, a row-major A too).

/// Packs `len` x `kc` into panels of R. `fast` allows the AVX-512 transpose (the caller checked
/// the CPU has it).
///
/// # Safety
/// Every source element addressed as described above must be readable; `dst` must have room for
/// `len.div_ceil(R) * R * kc` floats.
pub unsafe fn pack<const R: usize>(
    len: usize,
    kc: usize,
    src: *const f32,
    s_panel: usize,
    s_k: usize,
    dst: *mut f32,
    fast: bool,
) {
    for (q, i0) in (0..len).step_by(R).enumerate() {
        let rows = R.min(len - i0);
        let s = src.add(i0 * s_panel);
        let d = dst.add(q * R * kc);
        #[cfg(target_arch = "x86_64")]
        if s_k == 1 && s_panel != 1 {
            if fast {
                avx512::pack_transposed::<R>(rows, kc, s, s_panel, d);
                continue;
            }
            if avx2::available() {
                avx2::pack_transposed::<R>(rows, kc, s, s_panel, d);
                continue;
            }
        }
        let _ = fast;
        if s_panel == 1 && rows == R {
            copy_full_panel::<R>(kc, s, s_k, d);
        } else {
            pack_panel_scalar::<R>(rows, kc, s, s_panel, s_k, d);
        }
    }
}

/// One full panel whose panel dimension is contiguous: R values per k index, copied with a
/// size the compiler knows (a few vector moves; [`pack_panel_scalar`]'s copy of a run-time
/// length is a call into libc's `memmove` per k index, a fifth of a 49x32x49 product's time).
///
/// # Safety
/// As for [`pack`], for a single panel of R rows with `s_panel == 1`.
pub unsafe fn copy_full_panel<const R: usize>(kc: usize, src: *const f32, s_k: usize, dst: *mut f32) {
    for p in 0..kc {
        let row = std::ptr::read_unaligned(src.add(p * s_k) as *const [f32; R]);
        std::ptr::write_unaligned(dst.add(p * R) as *mut [f32; R], row);
    }
}

/// One panel with plain loops, ordered so the reads run along the contiguous dimension.
///
/// # Safety
/// As for [`pack`], for a single panel of `rows` <= R.
pub unsafe fn pack_panel_scalar<const R: usize>(
    rows: usize,
    kc: usize,
    src: *const f32,
    s_panel: usize,
    s_k: usize,
    dst: *mut f32,
) {
    if s_panel == 1 {
        for p in 0..kc {
            let d = dst.add(p * R);
            std::ptr::copy_nonoverlapping(src.add(p * s_k), d, rows);
            std::ptr::write_bytes(d.add(rows), 0, R - rows);
        }
        return;
    }
    for i in 0..rows {
        let s = src.add(i * s_panel);
        for p in 0..kc {
            *dst.add(p * R + i) = *s.add(p * s_k);
        }
    }
    for i in rows..R {
        for p in 0..kc {
            *dst.add(p * R + i) = 0.0;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    /// In-register transpose: on return `r[j]` holds what was column j.
    ///
    /// # Safety
    /// The CPU must support AVX-512F (a safe target-feature fn, unsafe to call elsewhere).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn transpose16(r: &mut [__m512; 16]) {
        // Interleave 32-bit pairs, then 64-bit pairs: each 128-bit lane of u[4g + c] then holds
        // column (4 * lane + c) of rows 4g..4g+4.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let pd = |x: __m512| _mm512_castps_pd(x);
            let ps = |x: __m512d| _mm512_castpd_ps(x);
            let (t0, t1, t2, t3) = (pd(t[4 * g]), pd(t[4 * g + 1]), pd(t[4 * g + 2]), pd(t[4 * g + 3]));
            u[4 * g] = ps(_mm512_unpacklo_pd(t0, t2));
            u[4 * g + 1] = ps(_mm512_unpackhi_pd(t0, t2));
            u[4 * g + 2] = ps(_mm512_unpacklo_pd(t1, t3));
            u[4 * g + 3] = ps(_mm512_unpackhi_pd(t1, t3));
        }
        // Gather the 128-bit lanes of the four row groups.
        for c in 0..4 {
            let lo01 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
            let hi01 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
            let lo23 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
            let hi23 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
            r[c] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
            r[c + 4] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
            r[c + 8] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
            r[c + 12] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
        }
    }

    /// One panel whose source rows are contiguous along k: `dst[p * R + i] = src[i * s_row + p]`
    /// for i < rows, zero for rows <= i < R. Works in 16x16 blocks; masked loads and stores
    /// cover the tails without touching memory outside the block.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `src` rows 0..rows must have kc readable floats and `dst`
    /// room for R * kc floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_transposed<const R: usize>(
        rows: usize,
        kc: usize,
        src: *const f32,
        s_row: usize,
        dst: *mut f32,
    ) {
        for g in (0..R).step_by(16) {
            let group = 16.min(R - g);
            let valid = rows.saturating_sub(g).min(group);
            let store_mask = ((1u32 << group) - 1) as u16;
            for p0 in (0..kc).step_by(16) {
                let kt = 16.min(kc - p0);
                let load_mask = ((1u32 << kt) - 1) as u16;
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, ri) in r.iter_mut().enumerate().take(valid) {
                    *ri = _mm512_maskz_loadu_ps(load_mask, src.add((g + i) * s_row + p0));
                }
                transpose16(&mut r);
                for (q, rq) in r.iter().enumerate().take(kt) {
                    _mm512_mask_storeu_ps(dst.add((p0 + q) * R + g), store_mask, *rq);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    /// The CPU has AVX2 (cached by std after the first call).
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
    }

    /// In-register transpose: on return `r[j]` holds what was column j.
    ///
    /// # Safety
    /// The CPU must support AVX2 (a safe target-feature fn, unsafe to call elsewhere).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn transpose8(r: &mut [__m256; 8]) {
        // Interleave pairs of rows, then pairs of pairs: each 128-bit lane of s[c] (s[4 + c])
        // holds column c (c + 4) of rows 0..4 (4..8) in its low (high) lane.
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut s = [_mm256_setzero_ps(); 8];
        for h in 0..2 {
            let (a, b, c, d) = (t[4 * h], t[4 * h + 1], t[4 * h + 2], t[4 * h + 3]);
            s[4 * h] = _mm256_shuffle_ps::<0x44>(a, c);
            s[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
            s[4 * h + 2] = _mm256_shuffle_ps::<0x44>(b, d);
            s[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
        }
        for c in 0..4 {
            r[c] = _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c]);
            r[c + 4] = _mm256_permute2f128_ps::<0x31>(s[c], s[4 + c]);
        }
    }

    /// One panel whose source rows are contiguous along k: `dst[p * R + i] = src[i * s_row + p]`
    /// for i < rows, zero for rows <= i < R. Whole 8-deep blocks go through registers, in groups
    /// of 8 panel rows (the last group is R % 8 wide when R is not a multiple of 8: the 6-row A
    /// panels of the AVX2 kernel); the last kc % 8 depths take a scalar loop.
    ///
    /// # Safety
    /// The CPU must support AVX2; `src` rows 0..rows must have kc readable floats and `dst` room
    /// for R * kc floats.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pack_transposed<const R: usize>(
        rows: usize,
        kc: usize,
        src: *const f32,
        s_row: usize,
        dst: *mut f32,
    ) {
        let blocked = kc / 8 * 8;
        for g in (0..R).step_by(8) {
            let group = 8.min(R - g);
            let valid = rows.saturating_sub(g).min(group);
            for p0 in (0..blocked).step_by(8) {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, ri) in r.iter_mut().enumerate().take(valid) {
                    *ri = _mm256_loadu_ps(src.add((g + i) * s_row + p0));
                }
                transpose8(&mut r);
                for (q, rq) in r.iter().enumerate() {
                    store_lanes(dst.add((p0 + q) * R + g), *rq, group);
                }
            }
            for p in blocked..kc {
                for i in 0..group {
                    *dst.add(p * R + g + i) = if i < valid { *src.add((g + i) * s_row + p) } else { 0.0 };
                }
            }
        }
    }

    /// Stores the first `n` (at most 8) lanes of `v` at `dst`, touching nothing after them.
    ///
    /// # Safety
    /// The CPU must support AVX; `dst` must have room for n floats.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store_lanes(dst: *mut f32, v: __m256, n: usize) {
        if n == 8 {
            return _mm256_storeu_ps(dst, v);
        }
        let (mut part, mut dst, mut n) = (_mm256_castps256_ps128(v), dst, n);
        if n >= 4 {
            _mm_storeu_ps(dst, part);
            (part, dst, n) = (_mm256_extractf128_ps::<1>(v), dst.add(4), n - 4);
        }
        if n >= 2 {
            _mm_storel_pd(dst as *mut f64, _mm_castps_pd(part));
            (part, dst, n) = (_mm_movehl_ps(part, part), dst.add(2), n - 2);
        }
        if n == 1 {
            _mm_store_ss(dst, part);
        }
    }
}
