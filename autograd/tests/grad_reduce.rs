//! Reductions, softmax and layer norms against finite differences of f64 references.

mod common;

use autograd::Var;
use common::*;
use proptest::prelude::*;

/// A random shape, a random set of dims to reduce (sometimes empty = all) and keepdim.
fn reduce_case(rng: &mut Gen) -> (Vec<usize>, Vec<isize>, bool) {
    let rank = 1 + rng.below(4);
    let shape = rng.shape(rank, 4);
    let mut dims: Vec<isize> = Vec::new();
    if rng.below(4) != 0 {
        for d in 0..rank {
            if rng.coin() {
                // Negative half of the time.
                dims.push(if rng.coin() { d as isize } else { d as isize - rank as isize });
            }
        }
    }
    (shape, dims, rng.coin())
}

/// For each input element, the flat index of its output element.
fn reduce_map(shape: &[usize], dims: &[isize]) -> (Vec<usize>, usize) {
    let rank = shape.len();
    let red: Vec<usize> = if dims.is_empty() {
        (0..rank).collect()
    } else {
        dims.iter().map(|&d| d.rem_euclid(rank as isize) as usize).collect()
    };
    let mut keep = shape.to_vec();
    for &d in &red {
        keep[d] = 1;
    }
    let n: usize = shape.iter().product();
    let map = (0..n)
        .map(|i| {
            let mut idx = unravel(i, shape);
            for &d in &red {
                idx[d] = 0;
            }
            ravel(&idx, &keep)
        })
        .collect();
    (map, keep.iter().product())
}

fn reduce_ref(d: &[f64], map: &[usize], n_out: usize, kind: &str) -> Vec<f64> {
    let init = match kind {
        "max" => f64::NEG_INFINITY,
        "min" => f64::INFINITY,
        _ => 0.0,
    };
    let mut out = vec![init; n_out];
    let mut count = vec![0.0; n_out];
    for (&v, &o) in d.iter().zip(map) {
        count[o] += 1.0;
        out[o] = match kind {
            "max" => out[o].max(v),
            "min" => out[o].min(v),
            _ => out[o] + v,
        };
    }
    if kind == "mean" {
        out.iter_mut().zip(&count).for_each(|(o, c)| *o /= c);
    }
    out
}

/// Apply `f` to every line of `d` along `dim` of `shape`.
fn along_dim(d: &[f64], shape: &[usize], dim: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let st = strides(shape);
    let mut out = vec![0.0; d.len()];
    for i in 0..d.len() {
        if unravel(i, shape)[dim] != 0 {
            continue;
        }
        let line: Vec<f64> = (0..shape[dim]).map(|k| d[i + k * st[dim]]).collect();
        for (k, v) in f(&line).into_iter().enumerate() {
            out[i + k * st[dim]] = v;
        }
    }
    out
}

fn softmax(v: &[f64]) -> Vec<f64> {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn normalize(v: &[f64], eps: f64) -> Vec<f64> {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    v.iter().map(|x| (x - mean) / (var + eps).sqrt()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn sum_mean_max_min_grads(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (shape, dims, keepdim) = reduce_case(&mut rng);
        let (map, n_out) = reduce_map(&shape, &dims);
        type Op = fn(&Var, &[isize], bool) -> tensor::Result<Var>;
        let ops: [(&str, Op); 4] =
            [("sum", Var::sum), ("mean", Var::mean), ("max", Var::max), ("min", Var::min)];
        for (name, op) in ops {
            // Distinct values: no near-ties for max/min.
            let x = Input::new(rng.distinct(map.len()), &shape);
            let m = mode(rng.below(3));
            let what = format!("{name} {shape:?} dims {dims:?} keepdim {keepdim}");
            check_grads(&what, &[x], m, &mut rng, |d| reduce_ref(&d[0], &map, n_out, name), |v| op(&v[0], &dims, keepdim));
        }
    }

    #[test]
    fn softmax_and_log_softmax_grads(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(4);
        let shape = rng.shape(rank, 5);
        let dim = rng.below(rank);
        let n = shape.iter().product();
        for log in [false, true] {
            let x = Input::new(rng.vec(n, -3.0, 3.0), &shape);
            let m = mode(rng.below(3));
            let sh = shape.clone();
            let reference = move |d: &[Vec<f64>]| along_dim(&d[0], &sh, dim, |l| {
                let s = softmax(l);
                if log { s.iter().map(|v| v.ln()).collect() } else { s }
            });
            let di = dim as isize - if rng.coin() { rank as isize } else { 0 };
            let what = format!("softmax(log={log}) {shape:?} dim {di}");
            check_grads(&what, &[x], m, &mut rng, reference, |v| if log { v[0].log_softmax(di) } else { v[0].softmax(di) });
        }
    }

    /// layer_norm over the last dim, with and without weight and bias.
    #[test]
    fn layer_norm_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let mut shape = rng.shape(rank, 4);
        shape[rank - 1] = 2 + rng.below(6);
        let d_last = shape[rank - 1];
        let n: usize = shape.iter().product();
        let (has_w, has_b) = (rng.coin(), rng.coin());
        let mut inputs = vec![Input::new(rng.distinct(n), &shape)];
        if has_w { inputs.push(Input::new(rng.vec(d_last, 0.5, 1.5), &[d_last])); }
        if has_b { inputs.push(Input::new(rng.vec(d_last, -1.0, 1.0), &[d_last])); }
        let eps = 1e-5;
        let sh = shape.clone();
        let reference = move |d: &[Vec<f64>]| {
            let xh = along_dim(&d[0], &sh, sh.len() - 1, |l| normalize(l, eps));
            xh.iter().enumerate().map(|(i, &v)| {
                let c = i % d_last;
                let w = if has_w { d[1][c] } else { 1.0 };
                let b = if has_b { d[d.len() - 1][c] } else { 0.0 };
                v * w + b
            }).collect()
        };
        let m = mode(rng.below(3));
        let what = format!("layer_norm {shape:?} weight {has_w} bias {has_b}");
        check_grads(&what, &inputs, m, &mut rng, reference, |v| {
            let w = if has_w { Some(&v[1]) } else { None };
            let b = if has_b { Some(&v[v.len() - 1]) } else { None };
            v[0].layer_norm(w, b, eps)
        });
    }

    /// layer_norm2d: per pixel over the channels of NCHW.
    #[test]
    fn layer_norm2d_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let shape = vec![1 + rng.below(2), 2 + rng.below(4), 1 + rng.below(3), 1 + rng.below(3)];
        let c = shape[1];
        let n: usize = shape.iter().product();
        let (has_w, has_b) = (rng.coin(), rng.coin());
        let mut inputs = vec![Input::new(rng.distinct(n), &shape)];
        if has_w { inputs.push(Input::new(rng.vec(c, 0.5, 1.5), &[c])); }
        if has_b { inputs.push(Input::new(rng.vec(c, -1.0, 1.0), &[c])); }
        let eps = 1e-6;
        let sh = shape.clone();
        let hw = shape[2] * shape[3];
        let reference = move |d: &[Vec<f64>]| {
            let xh = along_dim(&d[0], &sh, 1, |l| normalize(l, eps));
            xh.iter().enumerate().map(|(i, &v)| {
                let ch = (i / hw) % c;
                let w = if has_w { d[1][ch] } else { 1.0 };
                let b = if has_b { d[d.len() - 1][ch] } else { 0.0 };
                v * w + b
            }).collect()
        };
        let m = mode(rng.below(3));
        let what = format!("layer_norm2d {shape:?} weight {has_w} bias {has_b}");
        check_grads(&what, &inputs, m, &mut rng, reference, |v| {
            let w = if has_w { Some(&v[1]) } else { None };
            let b = if has_b { Some(&v[v.len() - 1]) } else { None };
            v[0].layer_norm2d(w, b, eps)
        });
    }
}

/// Tied maxima share the gradient evenly.
#[test]
fn max_ties_split_gradient() {
    use tensor::Tensor;
    let x = Var::leaf(Tensor::from_vec(vec![3f32, 1.0, 3.0, 2.0, 2.0, 0.0], &[2, 3]).unwrap());
    let g = x.max(&[1], false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f32>().unwrap(), vec![0.5, 0.0, 0.5, 0.5, 0.5, 0.0]);
}
