//! The hypernetwork product `out[b, m, p] = sum_c h[b, m, c] u[b, c, p]` under the emulator vs
//! f64, over random (small, odd, size-1) shapes, f32 and bf16.

mod common;
use common::*;
use kernels::{hyper, Bf16, Elem};
use proptest::prelude::*;

fn check<E: Elem>(b: usize, m: usize, ch: usize, p: usize, seed: u64, atol: f64, rtol: f64) {
    let h: Vec<E> = rand_vec(b * m * ch, seed).iter().map(|&v| E::from_f32(v)).collect();
    let u: Vec<E> = rand_vec(b * ch * p, seed + 1).iter().map(|&v| E::from_f32(v)).collect();
    let mut want = vec![0f64; b * m * p];
    for bi in 0..b {
        for mi in 0..m {
            for px in 0..p {
                want[(bi * m + mi) * p + px] = (0..ch)
                    .map(|k| h[(bi * m + mi) * ch + k].to_f32() as f64 * u[(bi * ch + k) * p + px].to_f32() as f64)
                    .sum();
            }
        }
    }
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); b * m * p];
        let (ph, pu, po) = (h.as_ptr(), u.as_ptr(), out.as_mut_ptr());
        let cfg = hyper::config(b, m, ch, p);
        unsafe { run(cfg, order, |c| hyper::hyper_product(c, ph, pu, po, m as u32, ch as u32, p as u32)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        assert_close(&got, &want, atol, rtol, &format!("hyper_product b{b} m{m} ch{ch} p{p} {order:?}"));
    });
}

#[test]
fn parsing_head_like() {
    // 11 classes x 32 channels over two pixel blocks and a partial one.
    check::<f32>(2, 11, 32, 600, 1, 1e-5, 1e-5);
    check::<Bf16>(1, 11, 32, 300, 2, 2e-2, 2e-2);
}

#[test]
fn largest_allowed_and_single() {
    check::<f32>(1, 32, 64, 257, 3, 1e-5, 1e-5);
    check::<f32>(1, 1, 1, 1, 4, 1e-6, 1e-6);
}

#[test]
fn more_rows_than_one_chunk() {
    // m past 32 runs the accumulator chunks again (the host checks m <= 32; the body does not need it).
    check::<f32>(1, 45, 7, 70, 5, 1e-5, 1e-5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn random_shapes(b in 1usize..3, m in 1usize..33, ch in 1usize..65, p in 1usize..400, bf16: bool, seed: u64) {
        if bf16 {
            check::<Bf16>(b, m, ch, p, seed, 2e-2, 2e-2);
        } else {
            check::<f32>(b, m, ch, p, seed, 1e-5, 1e-5);
        }
    }
}
