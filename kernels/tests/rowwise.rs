//! Elementwise, softmax and LayerNorm kernels under the emulator vs f64 references.

mod common;
use common::*;
use kernels::elementwise::{self, OP_ADD, OP_MUL};
use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};
use kernels::{layernorm, softmax, Bf16, Elem};
use proptest::prelude::*;

fn act64(x: f64, act: u32) -> f64 {
    match act {
        ACT_RELU => x.max(0.0),
        ACT_GELU => gelu64(x),
        _ => x,
    }
}

fn binary_ref(a: &[f32], b: Option<&[f32]>, op: u32, act: u32) -> Vec<f64> {
    (0..a.len())
        .map(|i| {
            let x = a[i] as f64;
            let y = match b {
                None => x,
                Some(b) if op == OP_MUL => x * b[i % b.len()] as f64,
                Some(b) => x + b[i % b.len()] as f64,
            };
            act64(y, act)
        })
        .collect()
}

fn check_binary<E: Elem + Send>(n: usize, nb: usize, op: u32, act: u32, with_b: bool, seed: u64, tol: f64) {
    let a32 = rand_vec(n, seed).iter().map(|x| x * 3.0).collect::<Vec<_>>();
    let b32 = rand_vec(nb, seed + 1);
    let a: Vec<E> = a32.iter().map(|&x| E::from_f32(x)).collect();
    let b: Vec<E> = b32.iter().map(|&x| E::from_f32(x)).collect();
    let (a32, b32): (Vec<f32>, Vec<f32>) =
        (a.iter().map(|x| x.to_f32()).collect(), b.iter().map(|x| x.to_f32()).collect());
    let want = binary_ref(&a32, with_b.then_some(&b32[..]), op, act);
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); n];
        let (pa, pb, po) = (a.as_ptr(), if with_b { b.as_ptr() } else { std::ptr::null() }, out.as_mut_ptr());
        // A small grid so the grid-stride loop takes several steps.
        let mut cfg = elementwise::config(n);
        cfg.grid.x = cfg.grid.x.min(3);
        unsafe { run(cfg, order, |c| elementwise::binary(c, pa, pb, po, n as u32, nb as u32, op, act)) };
        let got: Vec<f32> = out.iter().map(|x| x.to_f32()).collect();
        assert_close(&got, &want, tol, tol, &format!("binary n={n} nb={nb} op={op} act={act} {order:?}"));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn binary_f32(n in 1usize..2000, nb_div in 1usize..4, op in 0u32..2, act in 0u32..3, with_b: bool, seed: u64) {
        let nb = (n / nb_div).max(1);
        // Broadcast needs n to be a multiple of nb, as a bias over the last dim.
        let n = n / nb * nb;
        check_binary::<f32>(n, nb, op, act, with_b, seed, 2e-6);
    }
    #[test]
    fn binary_bf16(n in 1usize..2000, op in 0u32..2, act in 0u32..3, seed: u64) {
        check_binary::<Bf16>(n, 7.min(n), op, act, true, seed, 1e-2);
    }
}

#[test]
fn gelu_matches_erf_form() {
    let x: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 100.0).collect();
    let got: Vec<f32> = x.iter().map(|&v| kernels::math::gelu(v)).collect();
    let want: Vec<f64> = x.iter().map(|&v| gelu64(v as f64)).collect();
    assert_close(&got, &want, 1e-6, 1e-6, "gelu");
}

fn softmax_ref(x: &[f32], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
            r.iter().map(move |&v| (v as f64 - m).exp() / s)
        })
        .collect()
}

fn check_softmax<E: Elem>(rows: usize, cols: usize, seed: u64, tol: f64) {
    let x: Vec<E> = rand_vec(rows * cols, seed).iter().map(|&v| E::from_f32(v * 8.0)).collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let want = softmax_ref(&xf, cols);
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); rows * cols];
        let (px, po) = (x.as_ptr(), out.as_mut_ptr());
        let mut cfg = softmax::config(rows);
        cfg.grid.x = cfg.grid.x.min(2);
        unsafe { run(cfg, order, |c| softmax::softmax_rows(c, px, po, rows, cols)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        assert_close(&got, &want, tol, tol, &format!("softmax {rows}x{cols} {order:?}"));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    #[test]
    fn softmax_f32(rows in 1usize..20, cols in 1usize..200, seed: u64) {
        check_softmax::<f32>(rows, cols, seed, 1e-6);
    }
    #[test]
    fn softmax_bf16(rows in 1usize..12, cols in 1usize..100, seed: u64) {
        check_softmax::<Bf16>(rows, cols, seed, 8e-3);
    }
}

/// The f64 LayerNorm of rows of `cols` values, and what f32 rounding alone may cost each
/// element: x - mean carries an error of a few ulp of the row's largest |x|, and dividing by
/// sigma = sqrt(var + eps) scales it up. A row whose values nearly agree (two channels 2e-4 apart)
/// is that ill-conditioned, and no f32 LayerNorm gets it to a fixed tolerance.
fn ln_ref(x: &[f32], g: &[f32], b: &[f32], cols: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    x.chunks(cols)
        .flat_map(|r| {
            let mean = r.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
            let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (var + eps).sqrt();
            let max = r.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
            let allowance_per_unit_g = 8.0 * f32::EPSILON as f64 * max * inv;
            r.iter().enumerate().map(move |(j, &v)| {
                ((v as f64 - mean) * inv * g[j] as f64 + b[j] as f64, allowance_per_unit_g * (g[j] as f64).abs())
            })
        })
        .unzip()
}

/// `assert_close` with a per-element allowance added to the tolerance.
fn assert_close_allowing(got: &[f32], want: &[f64], tol: f64, allowance: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &a)) in got.iter().zip(want).zip(allowance).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol + tol * w.abs() + a,
            "{what}: element {i}: got {g}, want {w} (err {err:e}, allowed {a:e} for rounding)"
        );
    }
}

fn check_layernorm<E: Elem>(rows: usize, cols: usize, seed: u64, tol: f64) {
    let q = |v: Vec<f32>| -> (Vec<E>, Vec<f32>) {
        let e: Vec<E> = v.iter().map(|&x| E::from_f32(x)).collect();
        let f = e.iter().map(|x| x.to_f32()).collect();
        (e, f)
    };
    let (x, xf) = q(rand_vec(rows * cols, seed).iter().map(|v| v * 4.0 + 1.5).collect());
    let (g, gf) = q(rand_vec(cols, seed + 1));
    let (b, bf) = q(rand_vec(cols, seed + 2));
    let (want, allowance) = ln_ref(&xf, &gf, &bf, cols, 1e-5);
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); rows * cols];
        let (px, pg, pb, po) = (x.as_ptr(), g.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let mut cfg = layernorm::config_rows(rows);
        cfg.grid.x = cfg.grid.x.min(2);
        unsafe { run(cfg, order, |c| layernorm::layernorm_rows(c, px, pg, pb, po, rows, cols, 1e-5)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        assert_close_allowing(&got, &want, tol, &allowance, &format!("layernorm {rows}x{cols} {order:?}"));
    });
}

/// LayerNorm2d reference: NCHW, normalised over C at each pixel.
fn check_layernorm2d<E: Elem>(n: usize, ch: usize, hw: usize, seed: u64, tol: f64) {
    let x: Vec<E> = rand_vec(n * ch * hw, seed).iter().map(|&v| E::from_f32(v * 2.0 - 0.5)).collect();
    let g: Vec<E> = rand_vec(ch, seed + 1).iter().map(|&v| E::from_f32(v)).collect();
    let b: Vec<E> = rand_vec(ch, seed + 2).iter().map(|&v| E::from_f32(v)).collect();
    // Transpose to [n*hw, ch] rows and reuse the row reference.
    let mut rows = vec![0f32; n * ch * hw];
    for i in 0..n {
        for k in 0..ch {
            for p in 0..hw {
                rows[(i * hw + p) * ch + k] = x[(i * ch + k) * hw + p].to_f32();
            }
        }
    }
    let gf: Vec<f32> = g.iter().map(|v| v.to_f32()).collect();
    let bf: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
    let (r, ra) = ln_ref(&rows, &gf, &bf, ch, 1e-6);
    let (mut want, mut allowance) = (vec![0f64; n * ch * hw], vec![0f64; n * ch * hw]);
    for i in 0..n {
        for k in 0..ch {
            for p in 0..hw {
                want[(i * ch + k) * hw + p] = r[(i * hw + p) * ch + k];
                allowance[(i * ch + k) * hw + p] = ra[(i * hw + p) * ch + k];
            }
        }
    }
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); n * ch * hw];
        let (px, pg, pb, po) = (x.as_ptr(), g.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let mut cfg = layernorm::config_2d(n * hw);
        cfg.grid.x = cfg.grid.x.min(2);
        let (nn, cc, hh) = (n as u32, ch as u32, hw as u32);
        unsafe { run(cfg, order, |c| layernorm::layernorm2d(c, px, pg, pb, po, nn, cc, hh, 1e-6)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        assert_close_allowing(&got, &want, tol, &allowance, &format!("layernorm2d {n}x{ch}x{hw} {order:?}"));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    #[test]
    fn layernorm_f32(rows in 1usize..12, cols in 1usize..300, seed: u64) {
        check_layernorm::<f32>(rows, cols, seed, 2e-5);
    }
    /// Rows as wide as Swin-B's widest (1024) and beyond: each lane loops over many columns.
    #[test]
    fn layernorm_wide_rows(rows in 1usize..3, cols in 1000usize..1100, seed: u64) {
        check_layernorm::<f32>(rows, cols, seed, 2e-5);
    }
    #[test]
    fn layernorm_bf16(rows in 1usize..8, cols in 2usize..100, seed: u64) {
        check_layernorm::<Bf16>(rows, cols, seed, 3e-2);
    }
    #[test]
    fn layernorm2d_f32(n in 1usize..3, ch in 1usize..40, hw in 1usize..300, seed: u64) {
        check_layernorm2d::<f32>(n, ch, hw, seed, 2e-5);
    }
    #[test]
    fn layernorm2d_bf16(n in 1usize..3, ch in 2usize..20, hw in 1usize..200, seed: u64) {
        check_layernorm2d::<Bf16>(n, ch, hw, seed, 3e-2);
    }
}

#[test]
fn activations_without_bias() {
    check_binary::<f32>(777, 1, OP_ADD, ACT_GELU, false, 3, 2e-6);
    check_binary::<f32>(777, 1, OP_ADD, ACT_NONE, false, 4, 0.0);
}
