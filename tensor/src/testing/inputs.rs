//! Shared helpers for the op tests: random data, non-contiguous views, and (re-exported) the
//! crate's f64 references and tolerance checks. Compiled for this crate's own tests only (it
//! needs proptest).

use crate::{DType, SplitMix64, Tensor};
use proptest::prelude::*;

/// Shapes of rank 1..=max_rank with sizes 1..7.
pub fn arb_shape(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 1..=max_rank)
}

pub fn normal_data(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// A tensor with logical contents `data` (row-major over `shape`), rounded to `dtype`, laid out
/// according to `kind`: 0 contiguous, 1 a permuted view, 2 a narrowed view of a wider last dim,
/// 3 a step-2 slice along dim 0 (each non-contiguous when the shape allows).
pub fn view_of(data: &[f64], shape: &[usize], dtype: DType, kind: u8) -> Tensor {
    let t = Tensor::from_f64_vec(data, shape, dtype);
    let r = shape.len();
    match kind % 4 {
        1 if r >= 2 => {
            let rev: Vec<usize> = (0..r).rev().collect();
            t.permute(&rev).unwrap().contiguous().permute(&rev).unwrap()
        }
        2 if r >= 1 => embed(data, shape, dtype, r - 1, 2, 1),
        3 if r >= 1 => embed(data, shape, dtype, 0, 0, 2),
        _ => t,
    }
}

/// Places the logical data inside a larger tensor (along `dim`: starting at `start`, every
/// `step`-th, with filler elsewhere) and returns the view that selects it.
fn embed(data: &[f64], shape: &[usize], dtype: DType, dim: usize, start: usize, step: usize) -> Tensor {
    let mut big_shape = shape.to_vec();
    big_shape[dim] = start + (shape[dim] - 1) * step + 2;
    let big_n: usize = big_shape.iter().product();
    let mut big = vec![1234.5; big_n];
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    for o in 0..outer {
        for i in 0..shape[dim] {
            for j in 0..inner {
                let src = (o * shape[dim] + i) * inner + j;
                let dst = (o * big_shape[dim] + start + i * step) * inner + j;
                big[dst] = data[src];
            }
        }
    }
    let t = Tensor::from_f64_vec(&big, &big_shape, dtype);
    let end = start + (shape[dim] - 1) * step + 1;
    t.slice_step(dim as isize, start, end, step).unwrap()
}

/// Values rounded through `dtype` (what the op actually sees).
pub fn rounded(data: &[f64], dtype: DType) -> Vec<f64> {
    Tensor::from_f64_vec(data, &[data.len()], dtype).to_f64_vec().unwrap()
}

/// Relative tolerance suited to a dtype's mantissa.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        _ => 0.0,
    }
}

pub use super::*;
