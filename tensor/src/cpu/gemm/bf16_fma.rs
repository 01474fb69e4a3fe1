//! bf16 products on the f32 kernel ([`super::Isa::Bf16OnFma`]): the operands rounded to bf16
//! (nearest even, as the bf16 kernel's packing rounds them) and kept as f32, so that the f32
//! AVX-512 kernel multiplies them. A product of two bf16 values has at most 16 significant bits
//! and is exact in f32, so each multiply-add is the sum's one rounding, as in `vdpbf16ps`; only
//! the order of the sum differs from the bf16 kernel's (pairs of depths there).
//!
//! Why: Intel cores issue `vdpbf16ps` on one port and the f32 FMA on two, so the bf16 kernel,
//! at 88% of its own peak in the model, ran a batch-8 forward at 2.07-2.23 s where f32 took
//! 1.40-1.67 s (2-core Xeon, family 6 model 207, no AMX).
//!
//! The cost is one rounded copy of A per product (and of B, unless a linear layer's weight was
//! packed rounded once, [`super::PackedF32::new_bf16_rounded`]).

use crate::cpu::parallel::{new_vec_uninit, PAR_CHUNK};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The `rows x cols` operand (element (i, j) at `src[i * rs + j * cs]`) rounded to bf16 values,
/// row-major in a new vector (`rows * cols` values; rows and columns non-zero).
///
/// Panics if the CPU lacks AVX512-BF16 (the caller picked [`super::Isa::Bf16OnFma`], which
/// needs it) or `src` is too short (a caller bug).
pub(super) fn rounded(rows: usize, cols: usize, src: &[f32], rs: usize, cs: usize) -> Vec<f32> {
    assert!(super::Isa::Bf16OnFma.available(), "bf16 rounding needs AVX512-BF16");
    assert!(src.len() > (rows - 1) * rs + (cols - 1) * cs, "bf16 rounding: operand too short");
    // Whole rows per chunk: each row is one run of the vector loop.
    let chunk = cols * (PAR_CHUNK / cols).max(1);
    let fill = |start: usize, out: &mut [MaybeUninit<f32>]| {
        for (r, row) in out.chunks_mut(cols).enumerate() {
            let i = start / cols + r;
            let dst = row.as_mut_ptr() as *mut f32;
            // SAFETY: AVX512-BF16 checked above; row i of the operand is in `src` (checked above),
            // and `dst` holds `cols` values. The strided case writes every value before rounding
            // them in place.
            unsafe {
                if cs == 1 {
                    round_into(src.as_ptr().add(i * rs), dst, cols);
                } else {
                    for (j, v) in row.iter_mut().enumerate() {
                        v.write(src[i * rs + j * cs]);
                    }
                    round_into(dst, dst, cols);
                }
            }
        }
    };
    // SAFETY: `fill` writes every value of its chunk (each row, whole rows per chunk).
    unsafe { new_vec_uninit(rows * cols, chunk, fill) }
}

/// `len` values from `src` rounded to bf16 (nearest even; `vcvtneps2bf16`) and widened back to
/// f32 into `dst` (which may be `src`).
///
/// # Safety
/// The CPU must support AVX-512F and AVX512-BF16; `src` readable and `dst` writable for `len`.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_into(src: *const f32, dst: *mut f32, len: usize) {
    for i in (0..len).step_by(16) {
        let mask: __mmask16 = if len - i >= 16 { 0xffff } else { (1u16 << (len - i)) - 1 };
        let v = _mm512_maskz_loadu_ps(mask, src.add(i));
        let halves = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
        let widened = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves));
        _mm512_mask_storeu_ps(dst.add(i), mask, _mm512_castsi512_ps(widened));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector rounding against `half`'s (nearest even), on ties, a row tail, strides, and
    /// values at the edges of bf16's range.
    #[test]
    fn rounding_matches_half() {
        if !super::super::Isa::Bf16OnFma.available() {
            return;
        }
        let mut vals = vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5, 0.0, -0.0, 3.0e38, f32::INFINITY, 1.0e-30];
        vals.extend((0..61).map(|i| ((i * 7919) % 1000) as f32 * 0.01234 - 6.0));
        let (rows, cols) = (3, 23);
        // Row-major with padding, then the same values transposed.
        let padded: Vec<f32> = (0..rows * 25).map(|i| vals[i % vals.len()]).collect();
        let got = rounded(rows, cols, &padded, 25, 1);
        let transposed: Vec<f32> = (0..cols * rows).map(|i| padded[(i % rows) * 25 + i / rows]).collect();
        let got_t = rounded(rows, cols, &transposed, 1, rows);
        for i in 0..rows {
            for j in 0..cols {
                let want = half::bf16::from_f32(padded[i * 25 + j]).to_f32();
                assert_eq!(got[i * cols + j].to_bits(), want.to_bits(), "({i}, {j}) of {}", padded[i * 25 + j]);
                assert_eq!(got_t[i * cols + j].to_bits(), want.to_bits(), "strided ({i}, {j})");
            }
        }
        assert_eq!(got[0], 1.0, "a tie rounds to even");
        assert_eq!(got[1], 1.0 + 4.0 / 256.0, "a tie rounds to even");
    }
}
