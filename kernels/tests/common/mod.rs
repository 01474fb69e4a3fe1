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

/// The exact GELU in f64: the workspace's one reference (`tensor::testing`, a dev-dependency: the
/// tensor crate builds on this one, and cargo allows the cycle for tests).
#[allow(unused_imports)] // not every test file uses it
pub use tensor::testing::gelu_f64 as gelu64;

/// The message of a caught panic (`panic!` with arguments gives a `String`, without a `&str`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    let text = payload.downcast_ref::<&str>().copied();
    text.or(payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("(not a string)")
}
