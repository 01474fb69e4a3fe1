//! The engine: accumulation, no_grad, detach, freeing the graph, deep chains, and the harness.

mod common;

use autograd::{no_grad, Var};
use common::*;
use std::sync::Arc;
use tensor::{DType, Tensor};

fn leaf(v: &[f32]) -> Var {
    Var::leaf(Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap())
}

fn grad_of(g: &autograd::Grads, v: &Var) -> Vec<f32> {
    g.get(v).expect("gradient").to_vec::<f32>().unwrap()
}

#[test]
fn gradients_accumulate_when_a_var_is_used_twice() {
    let x = leaf(&[1.0, -2.0, 3.0]);
    // y = x*x + x  =>  dy/dx = 2x + 1 (x reaches the loss along three edges)
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![3.0, -3.0, 7.0]);
    // Two branches that meet again: z = exp(x) * sin(x)  =>  exp(x) (sin x + cos x)
    let x = leaf(&[0.3]);
    let z = x.exp().unwrap().mul(&x.sin().unwrap()).unwrap().sum_all().unwrap();
    let want = 0.3f64.exp() * (0.3f64.sin() + 0.3f64.cos());
    assert!((grad_of(&z.backward().unwrap(), &x)[0] as f64 - want).abs() < 1e-6);
}

#[test]
fn no_grad_records_nothing() {
    let x = leaf(&[1.0, 2.0]);
    let y = no_grad(|| x.mul(&x).unwrap().exp().unwrap());
    assert!(!y.is_recorded() && !y.requires_grad());
    assert!(y.sum_all().unwrap().backward().unwrap().is_empty());
    // Recording is back on afterwards.
    assert!(x.mul(&x).unwrap().is_recorded());
    // Constants never record either.
    let c = Var::constant(Tensor::ones(&[2], DType::F32));
    assert!(!c.mul(&c).unwrap().is_recorded());
}

#[test]
fn detach_cuts_the_graph() {
    let x = leaf(&[2.0, -1.0]);
    // d/dx (stop(x) * x) = stop(x) = x, not 2x
    let y = x.detach().mul(&x).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(grad_of(&g, &x), vec![2.0, -1.0]);
    assert!(!x.detach().requires_grad());
}

/// Only leaves come back, and dropping the loss frees every intermediate: memory does not grow
/// from one step to the next.
#[test]
fn graph_is_freed_after_backward() {
    let w = Var::param(Tensor::randn(&[4, 3], 1, DType::F32), "w");
    let x = Var::constant(Tensor::randn(&[2, 3], 2, DType::F32));
    let mut weak = Vec::new();
    for _ in 0..20 {
        let h = x.matmul(&w.t().unwrap()).unwrap().tanh().unwrap();
        weak.push(Arc::downgrade(h.value().storage()));
        let loss = h.sqr().unwrap().mean_all().unwrap();
        let g = loss.backward().unwrap();
        // Only the parameter's gradient is returned; intermediates were freed during the walk.
        assert_eq!(g.len(), 1);
        assert_eq!(g.get(&w).unwrap().shape(), &[4, 3]);
        assert!(g.get(&h).is_none());
        drop((h, loss));
    }
    assert!(weak.iter().all(|w| w.upgrade().is_none()), "an intermediate value outlived its step");
}

/// The walk takes each node as it passes it: afterwards the intermediates are gone although the
/// caller still holds the loss, whose node held them (before, the whole graph lived as long as
/// the loss did, and through the whole walk).
#[test]
fn backward_frees_each_intermediate_once_it_has_passed_it() {
    let w = Var::param(Tensor::randn(&[3, 3], 1, DType::F32), "w");
    let x = Var::constant(Tensor::randn(&[2, 3], 2, DType::F32));
    let first = x.matmul(&w).unwrap();
    let second = first.tanh().unwrap();
    let last = second.exp().unwrap();
    let (weak_second, weak_last) = (Arc::downgrade(second.value().storage()), Arc::downgrade(last.value().storage()));
    let loss = last.sum_all().unwrap();
    drop((second, last));
    // Both are alive before the walk: the graph holds them.
    assert!(weak_second.upgrade().is_some() && weak_last.upgrade().is_some());
    let g = loss.backward().unwrap();
    assert!(weak_second.upgrade().is_none() && weak_last.upgrade().is_none(), "an intermediate outlived the walk");
    // What the caller holds stays readable, and the gradient is right: d/dw sum(exp(tanh(x w))).
    assert_eq!(first.shape(), vec![2, 3]);
    let (xv, wv) = (x.value().to_f64_vec().unwrap(), w.value().to_f64_vec().unwrap());
    let gw = g.get(&w).unwrap().to_f64_vec().unwrap();
    for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
        let want: f64 = (0..2)
            .map(|r| {
                let z: f64 = (0..3).map(|p| xv[r * 3 + p] * wv[p * 3 + j]).sum();
                xv[r * 3 + i] * z.tanh().exp() * (1.0 - z.tanh().powi(2))
            })
            .sum();
        assert!((gw[i * 3 + j] - want).abs() < 1e-5 * (1.0 + want.abs()), "dw[{i},{j}] {} vs {want}", gw[i * 3 + j]);
    }
}

/// A graph gives one backward: the second is an error that names the Var, not wrong gradients.
#[test]
fn a_second_backward_through_a_freed_graph_is_an_error() {
    let x = leaf(&[1.0, 2.0]);
    let y = x.exp().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let e = y.backward().err().expect("an error").to_string();
    assert!(e.contains("backward") && e.contains("freed") && e.contains(&format!("Var#{}", y.id())), "{e}");
}

#[test]
fn a_chain_of_ten_thousand_ops_does_not_overflow() {
    let x = leaf(&[1.0, 2.0]);
    let mut y = x.clone();
    for i in 0..10_000 {
        // Alternate ops so nothing folds: every 2 steps multiply by 1.0001 * 1 = 1.0001.
        y = if i % 2 == 0 { y.affine(1.0001, 0.5).unwrap() } else { y.affine(1.0, -0.5).unwrap() };
    }
    let g = y.sum_all().unwrap().backward().unwrap();
    let want = 1.0001f64.powi(5000);
    for v in grad_of(&g, &x) {
        assert!((v as f64 - want).abs() < 1e-3 * want, "{v} vs {want}");
    }
    // Dropping the deep graph must not overflow either.
    drop(y);
}

#[test]
fn backward_needs_a_scalar_and_reports_the_shape() {
    let x = leaf(&[1.0, 2.0]);
    let e = x.exp().unwrap().backward().err().expect("an error").to_string();
    assert!(e.contains("backward") && e.contains("[2]"), "{e}");
    assert!(x.exp().unwrap().backward_with(Tensor::ones(&[3], DType::F32)).is_err());
}

/// f16 gradients come back in f16 and follow the f32 ones.
#[test]
fn f16_gradients_follow_f32() {
    let data = Tensor::randn(&[3, 5], 7, DType::F32);
    let run = |dt: DType| {
        let x = Var::leaf(data.to_dtype(dt));
        let y = x.tanh().unwrap().mul(&x).unwrap().softmax(-1).unwrap().sqr().unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        let gx = g.get(&x).unwrap();
        assert_eq!(gx.dtype(), dt);
        gx.to_f64_vec().unwrap()
    };
    let (a, b) = (run(DType::F32), run(DType::F16));
    let err = norm(&a.iter().zip(&b).map(|(p, q)| p - q).collect::<Vec<_>>());
    assert!(err <= 2e-2 * norm(&a) + 1e-3, "f16 gradient off by {err}");
}

/// The harness itself catches a wrong gradient: here x·stop(x) claims to be x² to the reference.
#[test]
#[should_panic(expected = "gradient of input 0")]
fn harness_rejects_a_wrong_gradient() {
    let x = Input::new(vec![0.5, -1.5, 2.0], &[3]);
    let mut rng = Gen::new(3);
    check_grads(
        "wrong",
        &[x],
        Mode::Contiguous,
        &mut rng,
        |d| d[0].iter().map(|v| v * v).collect(),
        |v| v[0].mul(&v[0].detach()),
    );
}

#[test]
fn dropping_a_very_long_graph_does_not_overflow() {
    // Recursive drops of 200k nested nodes would overflow the default 2 MiB test-thread stack.
    let x = leaf(&[1.0, 2.0]);
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.affine(1.0, 0.0).unwrap();
    }
    drop(y);
    assert_eq!(x.value().to_f32_vec().unwrap(), vec![1.0, 2.0]);
}

/// Freezing a leaf (torch's `requires_grad_(False)`): no gradient for it, the others unchanged bit
/// for bit, and ops whose inputs are all frozen record nothing. Linear and conv skip the frozen
/// inputs' products, so each of their inputs is frozen in turn.
#[test]
fn frozen_leaves_get_no_gradient_and_leave_the_others_unchanged() {
    let x = Var::leaf(Tensor::randn(&[2, 3, 6, 6], 1, DType::F32));
    let cw = Var::param(Tensor::randn(&[4, 3, 3, 3], 2, DType::F32), "conv.weight");
    let cb = Var::param(Tensor::randn(&[4], 3, DType::F32), "conv.bias");
    let lw = Var::param(Tensor::randn(&[5, 4], 4, DType::F32), "lin.weight");
    let lb = Var::param(Tensor::randn(&[5], 5, DType::F32), "lin.bias");
    let m = Var::param(Tensor::randn(&[5, 2], 6, DType::F32), "m");
    let all = [&x, &cw, &cb, &lw, &lb, &m];
    let loss = || {
        let h = x.conv2d(&cw, Some(&cb), (2, 2), (1, 1)).unwrap(); // [2, 4, 3, 3]
        let h = h.permute(&[0, 2, 3, 1]).unwrap(); // [2, 3, 3, 4]
        let h = h.linear_act(&lw, Some(&lb), tensor::ops::Activation::Gelu).unwrap();
        h.matmul(&m).unwrap().sqr().unwrap().sum_all().unwrap()
    };
    let full = loss().backward().unwrap();
    assert_eq!(full.len(), all.len());
    for frozen in 0..all.len() {
        all[frozen].set_requires_grad(false).unwrap();
        let g = loss().backward().unwrap();
        assert!(g.get(all[frozen]).is_none(), "frozen input {frozen} got a gradient");
        assert_eq!(g.len(), all.len() - 1);
        for (i, v) in all.iter().enumerate().filter(|&(i, _)| i != frozen) {
            assert_eq!(grad_of(&g, v), grad_of(&full, v), "input {i} with input {frozen} frozen");
        }
        all[frozen].set_requires_grad(true).unwrap();
    }
    // Everything upstream of the matmul frozen: the conv and linear record nothing.
    for v in &all[..5] {
        v.set_requires_grad(false).unwrap();
    }
    let h = x.conv2d(&cw, Some(&cb), (2, 2), (1, 1)).unwrap();
    assert!(!h.is_recorded() && !h.requires_grad());
    let g = loss().backward().unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(grad_of(&g, &m), grad_of(&full, &m));
}

#[test]
fn only_leaves_can_be_frozen() {
    let x = leaf(&[1.0, 2.0]);
    let y = x.exp().unwrap();
    let e = y.set_requires_grad(false).unwrap_err().to_string();
    assert!(e.contains("set_requires_grad") && e.contains("leaves"), "{e}");
    assert!(y.requires_grad());
}
