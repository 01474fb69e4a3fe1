//! The kernels' own f16 conversions (no_std, no `half` crate on the device) against `half`.

use kernels::math::{f16_to_f32, f32_to_f16};

#[test]
fn f16_to_f32_is_exact_for_every_half() {
    for h in 0..=u16::MAX {
        let (got, want) = (f16_to_f32(h), half::f16::from_bits(h).to_f32());
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{h:#06x}: {got} vs {want}");
    }
}

#[test]
fn f32_to_f16_rounds_to_nearest_even_like_half() {
    // Every 4099th f32 bit pattern (all exponents, signs and rounding cases), plus the edges:
    // ties, the largest half, overflow, the subnormal range and its underflow.
    let edges = [
        0.0f32,
        -0.0,
        65504.0,
        65519.0,
        65520.0,
        1e9,
        f32::INFINITY,
        -f32::INFINITY,
        6.0e-8,
        2.98e-8,
        2.9802322e-8,
        5.9604645e-8,
        6.1035156e-5,
        6.1e-5,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        f32::MIN_POSITIVE,
    ];
    let strided = (0..=u32::MAX).step_by(4099).map(f32::from_bits);
    for x in strided.chain(edges) {
        let (got, want) = (f32_to_f16(x), half::f16::from_f32(x).to_bits());
        if x.is_nan() {
            assert_eq!(got & 0x7c00, 0x7c00, "{x}: not a NaN: {got:#06x}");
            assert_ne!(got & 0x3ff, 0, "{x}: not a NaN: {got:#06x}");
        } else {
            assert_eq!(got, want, "{x:e} ({:#010x}): {got:#06x} vs {want:#06x}", x.to_bits());
        }
    }
}
