//! Scalar math kernels: an f32 erf and erfc, and a vectorisable exp.
//!
//! The pieces GELU is built from take `const FMA: bool`: with it every multiply-add is fused
//! (one rounding), which the vector paths of CPUs with FMA use (fewer instructions, and a Horner
//! step's latency drops from a multiply plus an add to one FMA); without it, two roundings, as
//! the portable path must (there `mul_add` would be a libm call). The two give different bits;
//! each path is tested against the f64 reference.

/// a * b + c, rounded once when `FMA`, twice otherwise.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

// ---- erf ----------------------------------------------------------------------------------

/// erf(z)/z as a polynomial in z^2 on |z| < ERF_SMALL (relative fit error 1.4e-9). The first
/// coefficient is the fit's, one ulp from 2/sqrt(pi) in f32.
#[allow(clippy::approx_constant)]
const ERF_SMALL_POLY: [f32; 6] =
    [1.128_379_1, -0.376_126_2, 0.112_833_77, -0.026_834_626, 0.005_114_345_3, -0.000_674_950_95];
/// erfcx(a) = exp(a^2) erfc(a) for a >= ERF_SMALL as t Q(t), t = 1 / (1 + a/2), Q of degree 9
/// (relative fit error 3e-9; Q(0) = 1/(2 sqrt pi) gives the 1/(a sqrt pi) tail).
const ERFCX_POLY: [f32; 10] = [
    0.282_094_78,
    0.282_094_78,
    0.246_839_12,
    0.176_114_04,
    0.086_341_456,
    -0.022_804_344,
    0.019_202_657,
    -0.238_603_3,
    0.243_843_17,
    -0.075_279_77,
];
/// Below this |z| erf comes from its odd polynomial, above from 1 - erfc (which then loses at
/// most a factor 2.5 to cancellation).
pub const ERF_SMALL: f32 = 0.75;

/// erf(z) for |z| < ERF_SMALL.
#[inline(always)]
pub fn erf_small<const FMA: bool>(z: f32) -> f32 {
    let s = z * z;
    let c = &ERF_SMALL_POLY;
    let mut p = c[5];
    for &ci in c[..5].iter().rev() {
        p = madd::<FMA>(p, s, ci);
    }
    p * z
}

/// exp(a^2) erfc(a) for a >= ERF_SMALL (any a >= 0 gives a finite value; inf gives 0).
#[inline(always)]
pub fn erfcx_large<const FMA: bool>(a: f32) -> f32 {
    let t = 1.0 / madd::<FMA>(0.5, a, 1.0);
    let c = &ERFCX_POLY;
    let mut p = c[9];
    for &ci in c[..9].iter().rev() {
        p = madd::<FMA>(p, t, ci);
    }
    p * t
}

/// exp(-s u^2) for u >= 0 and s a power of two, with u^2 split exactly into a rounded head and
/// its small error (with FMA: u u - head; without: Veltkamp's split of u), so the large argument
/// carries no rounding error: relative error ~1e-7 also where exp(-u^2) is tiny (a rounded u^2
/// would lose ~u^2 * 6e-8). NaN gives NaN; u >= 16 is treated as 16 (exp(-256 s) is 0 or far
/// below every use).
#[inline(always)]
pub fn exp_neg_sq<const FMA: bool>(u: f32, s: f32) -> f32 {
    let u = if u > 16.0 { 16.0 } else { u };
    let (hi, lo) = if FMA {
        let head = u * u;
        (-head * s, -u.mul_add(u, -head) * s)
    } else {
        let c = u * 4097.0;
        let uh = c - (c - u);
        let ul = u - uh;
        (-(uh * uh) * s, -((uh + uh) * ul + ul * ul) * s)
    };
    exp_hi_lo::<FMA>(hi, lo)
}

/// exp(hi + lo) for hi + lo <= 0, |lo| small against |hi|, without rounding hi + lo first: the
/// Cody-Waite reduction subtracts n ln2 from hi (exactly, by Sterbenz) before adding lo.
#[inline(always)]
fn exp_hi_lo<const FMA: bool>(hi: f32, lo: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0;
    let x = hi + lo;
    let hc = if hi < -104.0 { -104.0 } else { hi };
    let t = madd::<FMA>(hc + lo, std::f32::consts::LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    // n LN2_HI is exact (LN2_HI has a short mantissa), so fusing it changes nothing.
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, hc) + lo);
    let y = ldexp(exp_poly::<FMA>(r), (t.to_bits() as i32).wrapping_sub(0x4B40_0000));
    if x < -104.0 {
        0.0
    } else {
        y
    }
}

/// The error function in f32: max abs error 1.2e-7 (2 ulp near 1) over all f32, relative error
/// near 0 within 2 ulp; erf(+-inf) = +-1, NaN stays NaN. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let small = erf_small::<false>(x);
    let big = 1.0 - exp_neg_sq::<false>(a, 1.0) * erfcx_large::<false>(a);
    let big = if x < 0.0 { -big } else { big };
    if a < ERF_SMALL {
        small
    } else {
        big
    }
}

/// The complementary error function in f32, relative error ~4e-7 also in the far tail.
#[inline(always)]
pub fn erfc_f32(x: f32) -> f32 {
    let a = x.abs();
    let ec = exp_neg_sq::<false>(a, 1.0) * erfcx_large::<false>(a);
    let small = 1.0 - erf_small::<false>(x);
    let big = if x < 0.0 { 2.0 - ec } else { ec };
    if a < ERF_SMALL {
        small
    } else {
        big
    }
}

// ---- exp ----------------------------------------------------------------------------------

/// exp in f32 without a libm call, so loops over it vectorise. Cody-Waite reduction
/// x = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor polynomial (truncation error < 6e-9
/// relative); observed error is within 2 ulp. exp(-inf) = 0, NaN stays NaN, overflow gives inf.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_f32_with::<false>(x)
}

/// [`exp_f32`] with its multiply-adds fused when `FMA` (other bits, the same accuracy): half the
/// polynomial's instructions and latency, for loops compiled with FMA (elsewhere `mul_add` is
/// a libm call). AVX2 + FMA and AVX-512 give the same bits.
#[inline(always)]
pub fn exp_f32_with<const FMA: bool>(x: f32) -> f32 {
    let (p, n) = exp_parts::<FMA>(x);
    let y = ldexp(p, n);
    if x < -104.0 {
        0.0
    } else {
        y
    }
}

/// [`exp_f32_with`], but 0 where that result is below f32's smallest normal (x below about
/// -87.3), the subnormal never formed. Multiplies that produce or read subnormals take a
/// microcode assist on Intel cores: Swin's shifted-window mask adds -100 to a score, so the
/// window softmax's exps of masked pairs were subnormal, and the op ran 3.3x slower with the
/// mask than without (1.6 -> 5.2 ms for 32 windows x 16 heads, 2-core Xeon, family 6 model 207).
/// Elsewhere the same bits as [`exp_f32_with`] (tested), NaN included.
#[inline(always)]
pub fn exp_f32_normal_or_zero<const FMA: bool>(x: f32) -> f32 {
    // p 2^n is normal for n >= -125 (p >= 1/sqrt 2); at n = -126 only for p >= 1.
    const MIN_N: i32 = -125;
    let (p, n) = exp_parts::<FMA>(x);
    // Scaled by at least 2^-125: a normal result, the same as exp_f32_with's where n >= -125;
    // at n = -126 halved (exact) where that stays normal.
    let y = ldexp(p, n.max(MIN_N));
    let y = if n >= MIN_N {
        y
    } else if n == MIN_N - 1 && p >= 1.0 {
        y * 0.5
    } else {
        0.0
    };
    if x.is_nan() {
        x
    } else if x < -104.0 {
        0.0
    } else {
        y
    }
}

/// The reduction both exps share: e^x = p 2^n with p = e^r, x clamped to [-104, 88.8].
#[inline(always)]
fn exp_parts<const FMA: bool>(x: f32) -> (f32, i32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in a short-mantissa head (exact products n * HI) and the remainder.
    const LN2_HI: f32 = 0.693_359_4; // 355 / 512
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits (no SSE4.1 `round`
    // needed, so this vectorises on baseline x86-64 too).
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(-104.0, 88.8);
    let t = madd::<FMA>(xc, LOG2E, SHIFTER);
    let n = t - SHIFTER;
    // Unfused: (xc - n HI) - n LO, as -n HI + xc is the same value.
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, xc));
    (exp_poly::<FMA>(r), (t.to_bits() as i32).wrapping_sub(0x4B40_0000))
}

/// e^r for |r| <= ln2 / 2 by its degree-7 Taylor polynomial (truncation error < 6e-9 relative).
#[inline(always)]
fn exp_poly<const FMA: bool>(r: f32) -> f32 {
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(p, r, c);
    }
    p
}

/// p 2^n for -150 <= n <= 128, with 2^n as two factors so that subnormal results and n = 128
/// (overflow to inf) come out right.
#[inline(always)]
fn ldexp(p: f32, n: i32) -> f32 {
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    p * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// erf_f32 and erfc_f32 against the f64 reference on every 1e-3 in [-10, 10], a stride
    /// through all finite f32 (tiny, subnormal and huge included) and the special values.
    #[test]
    fn erf_f32_max_error() {
        let mut xs: Vec<f32> = (-10_000..=10_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend((0..0x7f80_0000u32).step_by(4099).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]));
        xs.extend([0.75, -0.75, f32::MIN_POSITIVE, f32::MAX, f32::MIN, 1e-30, -1e-40, 3.9, 10.5]);
        let (mut worst_abs, mut worst_rel_small, mut worst_erfc_rel) = (0.0f64, 0.0f64, 0.0f64);
        for &x in &xs {
            let (got, want) = (erf_f32(x) as f64, testing::erf_f64(x as f64));
            worst_abs = worst_abs.max((got - want).abs());
            if want != 0.0 && (x.abs() as f64) < 0.75 && x.abs() > 1e-37 {
                worst_rel_small = worst_rel_small.max(((got - want) / want).abs());
            }
            let (got, want) = (erfc_f32(x) as f64, testing::erfc_f64(x as f64));
            if want > 1e-36 {
                worst_erfc_rel = worst_erfc_rel.max(((got - want) / want).abs());
            }
        }
        // The brief's bound is 2e-7; observed 1.2e-7 (2 ulp just below 1).
        assert!(worst_abs <= 1.5e-7, "erf_f32 max abs error {worst_abs:e}");
        assert!(worst_rel_small <= 2.5e-7, "erf_f32 max rel error below 0.75: {worst_rel_small:e}");
        assert!(worst_erfc_rel <= 5e-7, "erfc_f32 max rel error: {worst_erfc_rel:e}");
        assert_eq!((erf_f32(f32::INFINITY), erf_f32(f32::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!((erfc_f32(f32::INFINITY), erfc_f32(f32::NEG_INFINITY)), (0.0, 2.0));
        assert!(erf_f32(f32::NAN).is_nan() && erfc_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0), 0.0);
        assert!(erf_f32(-0.0).is_sign_negative());
        println!("erf_f32: max abs error {worst_abs:e}, max rel error below 0.75 {worst_rel_small:e}");
        println!("erfc_f32: max rel error {worst_erfc_rel:e}");
    }

    #[test]
    fn exp_neg_sq_is_accurate_in_the_tail() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let u = i as f32 * 7e-5;
            for s in [1.0f32, 0.5] {
                let want = (-(s as f64) * (u as f64) * (u as f64)).exp();
                if want > 1.2e-38 {
                    for got in [exp_neg_sq::<false>(u, s), exp_neg_sq::<true>(u, s)] {
                        worst = worst.max(((got as f64 - want) / want).abs());
                    }
                }
            }
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!((exp_neg_sq::<false>(f32::INFINITY, 1.0), exp_neg_sq::<true>(f32::INFINITY, 1.0)), (0.0, 0.0));
        assert!(exp_neg_sq::<false>(f32::NAN, 1.0).is_nan() && exp_neg_sq::<true>(f32::NAN, 1.0).is_nan());
    }

    #[test]
    fn exp_f32_is_accurate() {
        check_exp(exp_f32);
        check_exp(exp_f32_with::<true>);
        // Fusing changes bits somewhere (else the fused twin would be pointless to keep).
        let mut x = -10.0f32;
        let mut differ = 0;
        while x < 10.0 {
            differ += (exp_f32(x) != exp_f32_with::<true>(x)) as usize;
            x += 0.001;
        }
        assert!(differ > 0);
    }

    /// The flushing exp is `exp_f32_with`'s bits wherever those are normal, NaN and infinities
    /// included, and 0 exactly where they are subnormal: every f32 around the boundary (-87.5 to
    /// -87.2), every 4099th from -110 to 1, and values beyond the clamps; fused and not.
    #[test]
    fn exp_normal_or_zero_flushes_exactly_the_subnormals() {
        fn check<const FMA: bool>(x: f32, flushed: &mut usize, normal: &mut usize) {
            let (got, want) = (exp_f32_normal_or_zero::<FMA>(x), exp_f32_with::<FMA>(x));
            if want != 0.0 && want < f32::MIN_POSITIVE {
                assert_eq!(got, 0.0, "exp({x}) = {want:e} is subnormal");
                *flushed += 1;
            } else {
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "exp({x}): {got} vs {want}"
                );
                *normal += (f32::MIN_POSITIVE..1e-37).contains(&want) as usize;
            }
        }
        // Walks the negative floats from `from` up towards `to` (both negative), every `step`th.
        let walk = |from: f32, to: f32, step: u32| {
            let (mut bits, end) = (from.to_bits(), to.to_bits());
            std::iter::from_fn(move || {
                let x = f32::from_bits(bits);
                bits = bits.checked_sub(step).filter(|&b| b >= end)?;
                Some(x)
            })
        };
        let specials =
            [f32::NAN, -f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 0.0, 0.5, 88.0, 88.8, 89.0, -103.99, -104.0, -1e30];
        for fused in [false, true] {
            let (mut flushed, mut normal) = (0, 0);
            for x in walk(-87.5, -87.2, 1).chain(walk(-110.0, -1e-30, 4099)).chain(specials) {
                if fused {
                    check::<true>(x, &mut flushed, &mut normal);
                } else {
                    check::<false>(x, &mut flushed, &mut normal);
                }
            }
            // Both sides of the boundary were reached.
            assert!(flushed > 10_000 && normal > 10_000, "fused {fused}: {flushed} flushed, {normal} small normals");
        }
    }

    fn check_exp(exp_f32: fn(f32) -> f32) {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x < 88.7 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            if want > 1.2e-38 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                assert!((got - want).abs() <= 2e-45, "exp({x})");
            }
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
