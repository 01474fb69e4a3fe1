//! Helpers shared by the emulator tests: deterministic random data, bf16 rounding, comparison.
#![allow(dead_code)]

use kernels::emu::{launch, EmuCtx, LaunchConfig, Order, TEST_ORDERS};
use kernels::{Bf16, Elem};

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

pub fn to_bf16(v: &[f32]) -> Vec<Bf16> {
    v.iter().map(|&x| Bf16::from_f32(x)).collect()
}
pub fn from_bf16(v: &[Bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}
/// Values as the bf16 kernel sees them (rounded to bf16).
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    from_bf16(&to_bf16(v))
}

/// Runs the launch under every test order; `body(order)` launches and checks one run, so each
/// order starts from freshly poisoned outputs.
pub fn for_each_order(mut body: impl FnMut(Order)) {
    for o in TEST_ORDERS {
        body(o);
    }
}

/// # Safety
/// As [`kernels::emu::launch`].
pub unsafe fn run<F: Fn(&EmuCtx)>(cfg: LaunchConfig, order: Order, f: F) {
    launch(cfg, order, f)
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise (NaN never passes).
pub fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= atol + rtol * w.abs(), "{what}: element {i}: got {g}, want {w} (err {err:e})");
    }
}

pub fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
}

/// erf in f64 by its series / continued fraction (enough for reference use, |err| < 1e-12).
pub fn erf64(x: f64) -> f64 {
    if x.abs() > 3.0 {
        // erfc by continued fraction
        let a = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = k as f64 / 2.0 / (a + f);
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
        return x.signum() * (1.0 - erfc);
    }
    let mut sum = x;
    let mut term = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let t = term / (2 * n + 1) as f64;
        sum += t;
        if t.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}
