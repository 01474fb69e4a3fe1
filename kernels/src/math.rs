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
/// An IEEE half value as its bit pattern (a tensor-core GEMM input; no arithmetic here).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(transparent)]
pub struct F16(pub u16);
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
