//! Unary and binary (broadcasting) rules against finite differences of f64 references.

mod common;

use autograd::Var;
use common::*;
use proptest::prelude::*;
use tensor::testing::gelu_f64 as gelu;
use tensor::{DType, Tensor};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A unary op on a random shape (rank 0..=4) and layout, with values in [lo, hi) away from kinks.
fn check_unary(
    what: &str,
    seed: u64,
    (lo, hi, kinks): (f64, f64, &[f64]),
    f: impl Fn(f64) -> f64,
    op: impl Fn(&Var) -> tensor::Result<Var>,
) {
    let mut rng = Gen::new(seed);
    let rank = rng.below(5);
    let shape = rng.shape(rank, 4);
    let n = shape.iter().product();
    let x = Input::new(rng.vec_avoiding(n, lo, hi, kinks, 0.02), &shape);
    let m = mode(rng.below(3));
    check_grads(what, &[x], m, &mut rng, |d| d[0].iter().map(|&v| f(v)).collect(), |v| op(&v[0]));
}

const ANY: (f64, f64, &[f64]) = (-2.0, 2.0, &[]);
const POSITIVE: (f64, f64, &[f64]) = (0.3, 2.5, &[]);
const KINK0: (f64, f64, &[f64]) = (-2.0, 2.0, &[0.0]);

macro_rules! unary_tests {
    ($($name:ident: $dom:expr, $f:expr, $op:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            $(#[test]
            fn $name(seed in any::<u64>()) {
                check_unary(stringify!($name), seed, $dom, $f, $op);
            })*
        }
    };
}

unary_tests! {
    neg_grad: ANY, |x| -x, |v| v.neg();
    exp_grad: ANY, |x| x.exp(), |v| v.exp();
    log_grad: POSITIVE, |x| x.ln(), |v| v.log();
    sqrt_grad: POSITIVE, |x| x.sqrt(), |v| v.sqrt();
    sin_grad: (-4.0, 4.0, &[]), |x| x.sin(), |v| v.sin();
    cos_grad: (-4.0, 4.0, &[]), |x| x.cos(), |v| v.cos();
    acos_grad: (-0.9, 0.9, &[]), |x| x.acos(), |v| v.acos();
    tanh_grad: ANY, |x| x.tanh(), |v| v.tanh();
    abs_grad: KINK0, |x| x.abs(), |v| v.abs();
    sqr_grad: ANY, |x| x * x, |v| v.sqr();
    recip_grad: POSITIVE, |x| 1.0 / x, |v| v.recip();
    sigmoid_grad: (-4.0, 4.0, &[]), sigmoid, |v| v.sigmoid();
    relu_grad: KINK0, |x| x.max(0.0), |v| v.relu();
    gelu_grad: (-4.0, 4.0, &[]), gelu, |v| v.gelu();
    affine_grad: ANY, |x| -1.5 * x + 0.25, |v| v.affine(-1.5, 0.25);
    powf_grad: POSITIVE, |x| x.powf(2.7), |v| v.powf(2.7);
    powf_negative_exponent_grad: POSITIVE, |x| x.powf(-0.5), |v| v.powf(-0.5);
    clamp_grad: (-2.0, 2.0, &[-0.5, 1.0]), |x| x.clamp(-0.5, 1.0), |v| v.clamp(-0.5, 1.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// PReLU with one slope per channel (dim 1) or a single slope.
    #[test]
    fn prelu_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 2 + rng.below(3);
        let shape = rng.shape(rank, 4);
        let c = if rng.coin() { shape[1] } else { 1 };
        let n: usize = shape.iter().product();
        let x = Input::new(rng.vec_avoiding(n, -2.0, 2.0, &[0.0], 0.02), &shape);
        let w = Input::new(rng.vec(c, -0.5, 0.5), &[c]);
        let st = strides(&shape);
        let reference = |d: &[Vec<f64>]| {
            (0..n).map(|i| {
                let v = d[0][i];
                let ch = if c == 1 { 0 } else { (i / st[1]) % shape[1] };
                if v > 0.0 { v } else { d[1][ch] * v }
            }).collect()
        };
        let m = mode(rng.below(3));
        check_grads("prelu", &[x, w], m, &mut rng, reference, |v| v[0].prelu(&v[1]));
    }

    /// Binary ops with broadcasting in both directions and non-contiguous operands.
    #[test]
    fn binary_grads(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(4);
        let out = rng.shape(rank, 4);
        let (sa, sb) = (broadcastable(&mut rng, &out), broadcastable(&mut rng, &out));
        // Make sure the broadcast result is exactly `out`: give a the full shape half of the time.
        let sa = if rng.coin() { out.clone() } else { sa };
        let sb = if sa.len() < out.len() || sa.iter().zip(&out[out.len() - sa.len()..]).any(|(a, o)| a != o) {
            out.clone()
        } else {
            sb
        };
        let (na, nb): (usize, usize) = (sa.iter().product(), sb.iter().product());
        let n_out: usize = out.iter().product();
        type F = fn(f64, f64) -> f64;
        type Op = fn(&Var, &Var) -> tensor::Result<Var>;
        let ops: [(&str, F, Op); 6] = [
            ("add", |a, b| a + b, |a, b| a.add(b)),
            ("sub", |a, b| a - b, |a, b| a.sub(b)),
            ("mul", |a, b| a * b, |a, b| a.mul(b)),
            ("div", |a, b| a / b, |a, b| a.div(b)),
            ("maximum", f64::max, |a, b| a.maximum(b)),
            ("minimum", f64::min, |a, b| a.minimum(b)),
        ];
        for (name, f, op) in ops {
            // Distinct values keep maximum/minimum away from ties; b stays away from 0 for div.
            let all = rng.distinct(na + nb);
            let a = Input::new(all[..na].to_vec(), &sa);
            let b: Vec<f64> = all[na..].iter().map(|&v| if name == "div" { v.signum() * (0.5 + v.abs()) } else { v }).collect();
            let b = Input::new(b, &sb);
            let (sa2, sb2, out2) = (sa.clone(), sb.clone(), out.clone());
            let reference = move |d: &[Vec<f64>]| {
                (0..n_out).map(|i| {
                    let idx = unravel(i, &out2);
                    f(d[0][broadcast_index(&idx, &sa2)], d[1][broadcast_index(&idx, &sb2)])
                }).collect()
            };
            let m = mode(rng.below(3));
            check_grads(&format!("{name} {sa:?} {sb:?}"), &[a, b], m, &mut rng, reference, |v| op(&v[0], &v[1]));
        }
    }

    /// where_cond with a broadcast condition: each branch gets the gradient where it was picked.
    #[test]
    fn where_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let out = rng.shape(rank, 4);
        let sc = broadcastable(&mut rng, &out);
        let sb = broadcastable(&mut rng, &out);
        let nc: usize = sc.iter().product();
        let n_out: usize = out.iter().product();
        let cond: Vec<f64> = (0..nc).map(|_| rng.below(2) as f64).collect();
        let ct = Tensor::from_f64_vec(&cond, &sc, DType::U8);
        let a = Input::new(rng.vec(n_out, -2.0, 2.0), &out);
        let b = Input::new(rng.vec(sb.iter().product(), -2.0, 2.0), &sb);
        let (sc2, sb2, out2) = (sc.clone(), sb.clone(), out.clone());
        let reference = move |d: &[Vec<f64>]| {
            (0..n_out).map(|i| {
                let idx = unravel(i, &out2);
                if cond[broadcast_index(&idx, &sc2)] != 0.0 { d[0][i] } else { d[1][broadcast_index(&idx, &sb2)] }
            }).collect()
        };
        let m = mode(rng.below(3));
        check_grads("where_cond", &[a, b], m, &mut rng, reference, |v| Var::where_cond(&ct, &v[0], &v[1]));
    }
}

/// Ties of maximum/minimum split the gradient in half (PyTorch's rule).
#[test]
fn maximum_tie_splits_gradient() {
    let a = Var::leaf(Tensor::from_vec(vec![1f32, 2.0, 3.0], &[3]).unwrap());
    let b = Var::leaf(Tensor::from_vec(vec![1f32, 5.0, 0.0], &[3]).unwrap());
    let g = a.maximum(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&a).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 0.0, 1.0]);
    assert_eq!(g.get(&b).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 1.0, 0.0]);
}
