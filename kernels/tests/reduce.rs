//! The row reduction kernel (sum, mean, max) under the emulator vs f64 references.

mod common;
use common::*;
use kernels::reduce::{self, REDUCE_MAX, REDUCE_MEAN, REDUCE_SUM};
use kernels::{Bf16, Elem};
use proptest::prelude::*;

fn reference(x: &[f32], rows: usize, cols: usize, op: u32) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            let row = x[r * cols..(r + 1) * cols].iter().map(|&v| v as f64);
            match op {
                REDUCE_MAX => row.fold(f64::NEG_INFINITY, f64::max),
                REDUCE_MEAN => row.sum::<f64>() / cols as f64,
                _ => row.sum(),
            }
        })
        .collect()
}

fn check<E: Elem + Send>(rows: usize, cols: usize, op: u32, seed: u64, tol: f64) {
    let x: Vec<E> = rand_vec(rows * cols, seed).iter().map(|&v| E::from_f32(v * 4.0)).collect();
    let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let want = reference(&x32, rows, cols, op);
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); rows];
        let (px, po) = (x.as_ptr(), out.as_mut_ptr());
        // A small grid so the row-stride loop takes several steps.
        let mut cfg = reduce::config(rows);
        cfg.grid.x = cfg.grid.x.min(2);
        unsafe { run(cfg, order, |c| reduce::reduce_rows(c, px, po, rows, cols, op)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        // Sums of `cols` values of size 4: the error scales with sqrt(cols).
        let atol = tol * 4.0 * (cols as f64).sqrt();
        assert_close(&got, &want, atol, tol, &format!("reduce op={op} [{rows}, {cols}] {order:?}"));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn reduce_rows_f32(rows in 1usize..20, cols in 1usize..300, op in 0u32..3, seed: u64) {
        check::<f32>(rows, cols, op, seed, 1e-6);
    }

    #[test]
    fn reduce_rows_bf16(rows in 1usize..12, cols in 1usize..200, op in 0u32..3, seed: u64) {
        // One bf16 rounding of the result.
        check::<Bf16>(rows, cols, op, seed, 8e-3);
    }
}

#[test]
fn max_of_a_row_with_nan_is_nan_and_sum_of_one_is_itself() {
    let x = [1.0f32, f32::NAN, 3.0, 2.0, 5.0, -1.0];
    let mut out = [0.0f32; 2];
    let (px, po) = (x.as_ptr(), out.as_mut_ptr());
    unsafe {
        run(reduce::config(2), kernels::emu::Order::Forward, |c| reduce::reduce_rows(c, px, po, 2, 3, REDUCE_MAX))
    };
    assert!(out[0].is_nan());
    assert_eq!(out[1], 5.0);
    let mut one = [0.0f32; 6];
    let po = one.as_mut_ptr();
    unsafe {
        run(reduce::config(6), kernels::emu::Order::Reverse, |c| reduce::reduce_rows(c, px, po, 6, 1, REDUCE_SUM))
    };
    assert_eq!(one[0], 1.0);
    assert!(one[1].is_nan());
    assert_eq!(one[2..], [3.0, 2.0, 5.0, -1.0]);
}
