//! Scalar math that is the same function on both targets (up to the device's approximate
//! instructions): `exp` through `ex2.approx`, `rsqrt`, `erf` by a rational approximation.
//!
//! rustc's `expf32`/`logf32` intrinsics do not lower on nvptx, so the device uses PTX instructions
//! by inline asm, and the host the equivalent `std` functions.

#[cfg(target_arch = "nvptx64")]
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let y: f32;
    unsafe { core::arch::asm!("ex2.approx.ftz.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x) };
    y
}
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    x.exp2()
}

/// 1/sqrt(x).
#[cfg(target_arch = "nvptx64")]
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    let y: f32;
    unsafe { core::arch::asm!("rsqrt.approx.ftz.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x) };
    y
}
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / x.sqrt()
}

/// Fused multiply-add, one rounding (both targets).
#[cfg(target_arch = "nvptx64")]
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let y: f32;
    unsafe {
        core::arch::asm!("fma.rn.f32 {y}, {a}, {b}, {c};", y = out(reg32) y, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c)
    };
    y
}
#[cfg(not(target_arch = "nvptx64"))]
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

pub const LOG2_E: f32 = core::f32::consts::LOG2_E;

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp2(x * LOG2_E)
}

/// erf(x), absolute error below 2e-7 (Abramowitz & Stegun 7.1.26 is 1.5e-7 in exact arithmetic).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / fma(0.327_591_1, a, 1.0);
    let p = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let r = 1.0 - p * exp(-a * a);
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// GELU, the exact (erf) form used by the model.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Activation codes shared by every kernel with an epilogue (a plain u32 so it crosses the
/// kernel-parameter boundary).
pub const ACT_NONE: u32 = 0;
pub const ACT_RELU: u32 = 1;
pub const ACT_GELU: u32 = 2;

#[inline(always)]
pub fn activate(x: f32, act: u32) -> f32 {
    match act {
        ACT_RELU => relu(x),
        ACT_GELU => gelu(x),
        _ => x,
    }
}

/// bf16 <-> f32 without the `half` crate (no_std device side): round to nearest even.
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return 0x7fc0;
    }
    let round = 0x7fff + ((u >> 16) & 1);
    ((u + round) >> 16) as u16
}

/// Element types a kernel can load and store (f32 and bf16; f32 math inside).
pub trait Elem: Copy {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}
impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}
/// IEEE half <-> f32 without the `half` crate. f16 -> f32 is exact; f32 -> f16 rounds to
/// nearest even, overflows to infinity, keeps subnormals and turns every NaN into a quiet NaN.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let (exp, man) = ((h >> 10) & 0x1f, (h & 0x3ff) as u32);
    match exp {
        // Subnormal (or zero): man x 2^-24, exact in f32.
        0 => sign * man as f32 * (1.0 / 16_777_216.0),
        0x1f => f32::from_bits(((h as u32 & 0x8000) << 16) | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(((h as u32 & 0x8000) << 16) | ((exp as u32 + 112) << 23) | (man << 13)),
    }
}
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let u = x.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let (exp, man) = (((u >> 23) & 0xff) as i32, u & 0x7f_ffff);
    if exp == 0xff {
        return sign | if man != 0 { 0x7e00 } else { 0x7c00 };
    }
    // The exponent in half's bias.
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // A half subnormal: the 24-bit significand shifted right by 14 - e, rounded to even.
        if e < -10 {
            return sign;
        }
        let (m, shift) = (man | 0x80_0000, (14 - e) as u32);
        return sign | ((m + (1 << (shift - 1)) - 1 + ((m >> shift) & 1)) >> shift) as u16;
    }
    // Drop 13 mantissa bits, rounded to even; a carry moves into the exponent by the addition.
    let rounded = man + 0xfff + ((man >> 13) & 1);
    let bits = ((e as u32) << 10) + (rounded >> 13);
    sign | if bits >= 0x7c00 { 0x7c00 } else { bits as u16 }
}

/// An IEEE half value as its bit pattern.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(transparent)]
pub struct F16(pub u16);
impl Elem for F16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self.0)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        F16(f32_to_f16(x))
    }
}
/// A bf16 value as its bit pattern.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(transparent)]
pub struct Bf16(pub u16);
impl Elem for Bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16_to_f32(self.0)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        Bf16(f32_to_bf16(x))
    }
}
