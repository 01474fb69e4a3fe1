//! matmul, linear and the convolutions against finite differences of f64 references.

mod common;

use common::*;
use proptest::prelude::*;
use tensor::ops::Activation;
use tensor::testing::gelu_f64;

/// One of `a`'s and `b`'s batch shapes is the full `out`; the other broadcasts to it.
fn batch_shapes(rng: &mut Gen) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let rank = rng.below(3);
    let out = rng.shape(rank, 3);
    let other = broadcastable(rng, &out);
    if rng.coin() {
        (out.clone(), other, out)
    } else {
        (other, out.clone(), out)
    }
}

fn conv_out(h: usize, k: usize, s: usize, p: usize) -> usize {
    (h + 2 * p - k) / s + 1
}

/// A linear layer's random sizes: an input of rank 1 to 3 whose last dim is n_in, n_out
/// outputs, and whether it has a bias.
struct LinearDims {
    x_shape: Vec<usize>,
    n_in: usize,
    n_out: usize,
    rows: usize,
    has_bias: bool,
}

impl LinearDims {
    fn draw(rng: &mut Gen) -> LinearDims {
        let rank = 1 + rng.below(3);
        let mut x_shape = rng.shape(rank, 3);
        let (n_in, n_out) = (1 + rng.below(5), 1 + rng.below(5));
        x_shape[rank - 1] = n_in;
        let rows = x_shape[..rank - 1].iter().product();
        LinearDims { x_shape, n_in, n_out, rows, has_bias: rng.coin() }
    }

    /// x in [-x_max, x_max), the weight [n_out, n_in] and the bias in [-1, 1).
    fn inputs(&self, rng: &mut Gen, x_max: f64) -> Vec<Input> {
        let mut inputs = vec![
            Input::new(rng.vec(self.rows * self.n_in, -x_max, x_max), &self.x_shape),
            Input::new(rng.vec(self.n_out * self.n_in, -1.0, 1.0), &[self.n_out, self.n_in]),
        ];
        if self.has_bias {
            inputs.push(Input::new(rng.vec(self.n_out, -1.0, 1.0), &[self.n_out]));
        }
        inputs
    }

    /// b + Σ_i f(x_i) w_oi for every row and output, in f64.
    fn reference(&self, d: &[Vec<f64>], f: impl Fn(f64) -> f64) -> Vec<f64> {
        let (n_in, n_out) = (self.n_in, self.n_out);
        let mut y = Vec::with_capacity(self.rows * n_out);
        for r in 0..self.rows {
            for o in 0..n_out {
                let b = if self.has_bias { d[2][o] } else { 0.0 };
                y.push(b + (0..n_in).map(|i| f(d[0][r * n_in + i]) * d[1][o * n_in + i]).sum::<f64>());
            }
        }
        y
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// [..., m, k] @ [..., k, n] with broadcast batch dims and transposed/strided operands.
    #[test]
    fn matmul_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (ba, bb, bo) = batch_shapes(&mut rng);
        let (m, k, n) = (1 + rng.below(4), 1 + rng.below(4), 1 + rng.below(4));
        let sa: Vec<usize> = ba.iter().copied().chain([m, k]).collect();
        let sb: Vec<usize> = bb.iter().copied().chain([k, n]).collect();
        let a = Input::new(rng.vec(sa.iter().product(), -2.0, 2.0), &sa);
        let b = Input::new(rng.vec(sb.iter().product(), -2.0, 2.0), &sb);
        let nbo: usize = bo.iter().product();
        let (ba2, bb2, bo2) = (ba.clone(), bb.clone(), bo.clone());
        let reference = move |d: &[Vec<f64>]| {
            let mut out = Vec::with_capacity(nbo * m * n);
            for bi in 0..nbo {
                let idx = unravel(bi, &bo2);
                let (oa, ob) = (broadcast_index(&idx, &ba2) * m * k, broadcast_index(&idx, &bb2) * k * n);
                for i in 0..m {
                    for j in 0..n {
                        out.push((0..k).map(|t| d[0][oa + i * k + t] * d[1][ob + t * n + j]).sum());
                    }
                }
            }
            out
        };
        let md = mode(rng.below(3));
        check_grads(&format!("matmul {sa:?} {sb:?}"), &[a, b], md, &mut rng, reference, |v| v[0].matmul(&v[1]));
    }

    /// linear with and without bias, with each fused activation.
    #[test]
    fn linear_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let dims = LinearDims::draw(&mut rng);
        let act = [Activation::None, Activation::Relu, Activation::Gelu][rng.below(3)];
        // Redraw until no pre-activation sits on relu's kink.
        let inputs = loop {
            let inputs = dims.inputs(&mut rng, 2.0);
            let d: Vec<Vec<f64>> = inputs.iter().map(|i| i.data.clone()).collect();
            if dims.reference(&d, |x| x).iter().all(|z| z.abs() > 0.02) {
                break inputs;
            }
        };
        let (xs, n_out, has_bias) = (dims.x_shape.clone(), dims.n_out, dims.has_bias);
        let reference = move |d: &[Vec<f64>]| dims.reference(d, |x| x).into_iter().map(|z| match act {
            Activation::None => z,
            Activation::Relu => z.max(0.0),
            Activation::Gelu => gelu_f64(z),
        }).collect();
        let md = mode(rng.below(3));
        check_grads(&format!("linear {xs:?} -> {n_out} bias {has_bias} {act:?}"), &inputs, md, &mut rng, reference,
            |v| v[0].linear_act(&v[1], if has_bias { Some(&v[2]) } else { None }, act));
    }

    /// gelu(z) wᵀ + b, with and without bias.
    #[test]
    fn gelu_linear_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let dims = LinearDims::draw(&mut rng);
        let inputs = dims.inputs(&mut rng, 3.0);
        let (zs, n_out, has_bias) = (dims.x_shape.clone(), dims.n_out, dims.has_bias);
        let reference = move |d: &[Vec<f64>]| dims.reference(d, gelu_f64);
        let md = mode(rng.below(3));
        check_grads(&format!("gelu_linear {zs:?} -> {n_out} bias {has_bias}"), &inputs, md, &mut rng, reference,
            |v| v[0].gelu_linear(&v[1], if has_bias { Some(&v[2]) } else { None }));
    }

    /// r + (x wᵀ + b) and r + (gelu(x) wᵀ + b), with and without bias.
    #[test]
    fn linear_add_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let dims = LinearDims::draw(&mut rng);
        let gelu_input = rng.coin();
        let mut inputs = dims.inputs(&mut rng, 3.0);
        let mut y_shape = dims.x_shape.clone();
        *y_shape.last_mut().unwrap() = dims.n_out;
        inputs.push(Input::new(rng.vec(dims.rows * dims.n_out, -1.0, 1.0), &y_shape));
        let (xs, n_out, has_bias) = (dims.x_shape.clone(), dims.n_out, dims.has_bias);
        let reference = move |d: &[Vec<f64>]| {
            let layer = dims.reference(d, |x| if gelu_input { gelu_f64(x) } else { x });
            layer.iter().zip(d.last().unwrap()).map(|(y, r)| y + r).collect()
        };
        let md = mode(rng.below(3));
        check_grads(&format!("linear_add {xs:?} -> {n_out} bias {has_bias} gelu {gelu_input}"), &inputs, md, &mut rng, reference,
            |v| {
                let (bias, r) = (if has_bias { Some(&v[2]) } else { None }, v.last().unwrap());
                if gelu_input { v[0].gelu_linear_add(&v[1], bias, r) } else { v[0].linear_add(&v[1], bias, r) }
            });
    }

    /// conv2d over strides 1..=3, padding 0..=2, kernels 1..=3 (non-square), with and without bias.
    #[test]
    fn conv2d_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (n, c, o) = (1 + rng.below(2), 1 + rng.below(3), 1 + rng.below(3));
        let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
        let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
        let (ph, pw) = (rng.below(3), rng.below(3));
        let h = (kh.saturating_sub(2 * ph)).max(1) + rng.below(5);
        let w = (kw.saturating_sub(2 * pw)).max(1) + rng.below(5);
        let (ho, wo) = (conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw));
        let has_bias = rng.coin();
        let mut inputs = vec![
            Input::new(rng.vec(n * c * h * w, -2.0, 2.0), &[n, c, h, w]),
            Input::new(rng.vec(o * c * kh * kw, -1.0, 1.0), &[o, c, kh, kw]),
        ];
        if has_bias {
            inputs.push(Input::new(rng.vec(o, -1.0, 1.0), &[o]));
        }
        let reference = move |d: &[Vec<f64>]| {
            let mut out = vec![0.0; n * o * ho * wo];
            for b in 0..n { for oc in 0..o { for i in 0..ho { for j in 0..wo {
                let mut s = if has_bias { d[2][oc] } else { 0.0 };
                for ic in 0..c { for a in 0..kh { for bb in 0..kw {
                    let (y, x) = ((i * sh + a) as isize - ph as isize, (j * sw + bb) as isize - pw as isize);
                    if y >= 0 && (y as usize) < h && x >= 0 && (x as usize) < w {
                        s += d[0][((b * c + ic) * h + y as usize) * w + x as usize] * d[1][((oc * c + ic) * kh + a) * kw + bb];
                    }
                }}}
                out[((b * o + oc) * ho + i) * wo + j] = s;
            }}}}
            out
        };
        let md = mode(rng.below(3));
        let what = format!("conv2d x [{n},{c},{h},{w}] w [{o},{c},{kh},{kw}] s ({sh},{sw}) p ({ph},{pw}) bias {has_bias}");
        check_grads(&what, &inputs, md, &mut rng, reference,
            |v| v[0].conv2d(&v[1], if has_bias { Some(&v[2]) } else { None }, (sh, sw), (ph, pw)));
    }

    /// conv_transpose2d over strides 1..=3, padding and kernels 1..=3, with and without bias.
    #[test]
    fn conv_transpose2d_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (n, c, o) = (1 + rng.below(2), 1 + rng.below(3), 1 + rng.below(3));
        let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
        let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
        let (h, w) = (1 + rng.below(4), 1 + rng.below(4));
        // Padding that leaves a non-empty output.
        let (fh, fw) = ((h - 1) * sh + kh, (w - 1) * sw + kw);
        let (ph, pw) = (rng.below(3).min((fh - 1) / 2), rng.below(3).min((fw - 1) / 2));
        let (ho, wo) = (fh - 2 * ph, fw - 2 * pw);
        let has_bias = rng.coin();
        let mut inputs = vec![
            Input::new(rng.vec(n * c * h * w, -2.0, 2.0), &[n, c, h, w]),
            Input::new(rng.vec(c * o * kh * kw, -1.0, 1.0), &[c, o, kh, kw]),
        ];
        if has_bias {
            inputs.push(Input::new(rng.vec(o, -1.0, 1.0), &[o]));
        }
        let reference = move |d: &[Vec<f64>]| {
            let mut out = vec![0.0; n * o * ho * wo];
            for b in 0..n { for oc in 0..o {
                for i in 0..ho { for j in 0..wo {
                    out[((b * o + oc) * ho + i) * wo + j] = if has_bias { d[2][oc] } else { 0.0 };
                }}
                for ic in 0..c { for i in 0..h { for j in 0..w { for a in 0..kh { for bb in 0..kw {
                    let (y, x) = ((i * sh + a) as isize - ph as isize, (j * sw + bb) as isize - pw as isize);
                    if y >= 0 && (y as usize) < ho && x >= 0 && (x as usize) < wo {
                        out[((b * o + oc) * ho + y as usize) * wo + x as usize] +=
                            d[0][((b * c + ic) * h + i) * w + j] * d[1][((ic * o + oc) * kh + a) * kw + bb];
                    }
                }}}}}
            }}
            out
        };
        let md = mode(rng.below(3));
        let what = format!("conv_transpose2d x [{n},{c},{h},{w}] w [{c},{o},{kh},{kw}] s ({sh},{sw}) p ({ph},{pw}) bias {has_bias}");
        check_grads(&what, &inputs, md, &mut rng, reference,
            |v| v[0].conv_transpose2d(&v[1], if has_bias { Some(&v[2]) } else { None }, (sh, sw), (ph, pw)));
    }
}

/// The bits of `f()`'s output and, after a backward from `g`, of the gradient of each of `vars`
/// (`None` where none reached it): what the bit-for-bit twin tests below compare.
fn output_and_grad_bits(
    f: &dyn Fn() -> autograd::Var,
    g: &tensor::Tensor,
    vars: &[&autograd::Var],
) -> Vec<Option<Vec<u32>>> {
    let bits = |t: &tensor::Tensor| t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let y = f();
    let grads = y.backward_with(g.clone()).unwrap();
    let mut out = vec![Some(bits(&y.value()))];
    out.extend(vars.iter().map(|v| grads.get(v).map(bits)));
    out
}

/// A transformer MLP's input [3, 7, 24] and parameters (fc1 24 -> 40, fc2 40 -> 24): x, w1,
/// b1, w2, b2, drawn with seeds `seed` to `seed + 4`.
fn mlp_input_and_params(seed: u64) -> [autograd::Var; 5] {
    use autograd::Var;
    use tensor::{DType, Tensor};
    [
        Var::leaf(Tensor::randn(&[3, 7, 24], seed, DType::F32)),
        Var::param(Tensor::randn(&[40, 24], seed + 1, DType::F32).affine(0.3, 0.0).unwrap(), "fc1.weight"),
        Var::param(Tensor::randn(&[40], seed + 2, DType::F32), "fc1.bias"),
        Var::param(Tensor::randn(&[24, 40], seed + 3, DType::F32).affine(0.2, 0.0).unwrap(), "fc2.weight"),
        Var::param(Tensor::randn(&[24], seed + 4, DType::F32), "fc2.bias"),
    ]
}

/// A transformer MLP written three ways: fc1 with its fused GELU then fc2 (the inference path),
/// fc1 then `gelu` then fc2 (the composite), and fc1 then `gelu_linear` (the training path).
/// The outputs and every gradient agree bit for bit.
#[test]
fn gelu_linear_matches_its_composite_twins_bit_for_bit() {
    use autograd::Var;
    use tensor::{DType, Tensor};
    let [x, w1, b1, w2, b2] = mlp_input_and_params(1);
    let g = Tensor::randn(&[3, 7, 24], 6, DType::F32);
    let all = [&x, &w1, &b1, &w2, &b2];
    let run = |mlp: &dyn Fn() -> Var| output_and_grad_bits(mlp, &g, &all);
    let fused = run(&|| x.linear_act(&w1, Some(&b1), Activation::Gelu).unwrap().linear(&w2, Some(&b2)).unwrap());
    let composite = run(&|| x.linear(&w1, Some(&b1)).unwrap().gelu().unwrap().linear(&w2, Some(&b2)).unwrap());
    let split = run(&|| x.linear(&w1, Some(&b1)).unwrap().gelu_linear(&w2, Some(&b2)).unwrap());
    assert!([&fused, &composite, &split].iter().all(|run| run.iter().all(Option::is_some)), "a gradient is missing");
    let names = ["y", "dx", "dw1", "db1", "dw2", "db2"];
    for i in 0..names.len() {
        assert_eq!(split[i], composite[i], "{}: gelu_linear vs the composite", names[i]);
        assert_eq!(split[i], fused[i], "{}: gelu_linear vs the fused fc1", names[i]);
    }
}

/// A residual MLP, x + fc2(gelu(fc1(x))), with the residual add as its own op and with it in
/// fc2 (`gelu_linear_add`), and x + proj(x) with `linear_add`: the outputs and every gradient
/// agree bit for bit (x's gradient sums the residual's share and the layers' in the same order
/// either way).
#[test]
fn linear_add_matches_its_composite_twin_bit_for_bit() {
    use autograd::Var;
    use tensor::{DType, Tensor};
    let [x, w1, b1, w2, b2] = mlp_input_and_params(11);
    let wp = Var::param(Tensor::randn(&[24, 24], 16, DType::F32).affine(0.2, 0.0).unwrap(), "proj.weight");
    let g = Tensor::randn(&[3, 7, 24], 17, DType::F32);
    let all = [&x, &w1, &b1, &w2, &b2, &wp];
    let run = |block: &dyn Fn() -> Var| output_and_grad_bits(block, &g, &all);
    let z = || x.linear(&w1, Some(&b1)).unwrap();
    let pairs = [
        (
            run(&|| x.add(&z().gelu_linear(&w2, Some(&b2)).unwrap()).unwrap()),
            run(&|| z().gelu_linear_add(&w2, Some(&b2), &x).unwrap()),
        ),
        (run(&|| x.add(&x.linear(&wp, None).unwrap()).unwrap()), run(&|| x.linear_add(&wp, None, &x).unwrap())),
    ];
    let names = ["y", "dx", "dw1", "db1", "dw2", "db2", "dwp"];
    for (composite, fused) in &pairs {
        assert!(fused[1].is_some(), "no gradient reached x");
        for i in 0..names.len() {
            assert_eq!(fused[i], composite[i], "{}: linear_add vs linear then add", names[i]);
        }
    }
}

/// Swin's attention output path, proj in window order then the window reverse and the residual
/// add, written as the three ops and as `unpermute_linear_add`: the output and the gradients of
/// the input, the residual, the weight and the bias agree bit for bit, with zeros of both signs
/// in the upstream gradient. Permutations that are not inverses are an error naming the op.
#[test]
fn unpermute_linear_add_matches_its_composite_twin_bit_for_bit() {
    use autograd::Var;
    use tensor::{DType, Tensor};
    let (b, t, c) = (2, 13, 24);
    // A permutation of the tokens (a stride coprime to t) and its inverse.
    let perm: Vec<i64> = (0..t as i64).map(|i| (i * 5 + 3) % t as i64).collect();
    let mut inverse = vec![0i64; t];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p as usize] = i as i64;
    }
    let (perm, inverse) = (Tensor::from_vec(perm, &[t]).unwrap(), Tensor::from_vec(inverse, &[t]).unwrap());
    let o = Var::leaf(Tensor::randn(&[b, t, c], 21, DType::F32));
    let x = Var::leaf(Tensor::randn(&[b, t, c], 22, DType::F32));
    let w = Var::param(Tensor::randn(&[c, c], 23, DType::F32).affine(0.2, 0.0).unwrap(), "proj.weight");
    let bias = Var::param(Tensor::randn(&[c], 24, DType::F32), "proj.bias");
    // Some zero gradients, negative ones among them.
    let g = Tensor::randn(&[b, t, c], 25, DType::F32)
        .mul(
            &Tensor::randn(&[b, t, c], 26, DType::F32)
                .gt(&Tensor::zeros(&[1], DType::F32))
                .unwrap()
                .to_dtype(DType::F32),
        )
        .unwrap()
        .affine(-1.0, 0.0)
        .unwrap();
    let all = [&o, &x, &w, &bias];
    let run = |f: &dyn Fn() -> Var| output_and_grad_bits(f, &g, &all);
    let composite = run(&|| x.add(&o.linear(&w, Some(&bias)).unwrap().index_select(1, &inverse).unwrap()).unwrap());
    let fused = run(&|| o.unpermute_linear_add(&w, Some(&bias), &x, &perm, &inverse).unwrap());
    assert!([&composite, &fused].iter().all(|run| run.iter().all(Option::is_some)), "a gradient is missing");
    for (i, name) in ["y", "do", "dx", "dw", "db"].iter().enumerate() {
        assert_eq!(fused[i], composite[i], "{name}: unpermute_linear_add vs linear, index_select, add");
    }
    let e = o.unpermute_linear_add(&w, Some(&bias), &x, &perm, &perm).expect_err("an error").to_string();
    assert!(e.contains("unpermute_linear_add") && e.contains("inverse permutations"), "{e}");
}

/// The fused `attention` against its composite twin `q.matmul(kᵀ).softmax(-1).matmul(v)`, as the
/// decoder uses it (q, k, v linear outputs reshaped to heads and permuted; q scaled): the output
/// and the gradients of the three projections' inputs agree within f32 rounding, for tokens
/// attending to the image and the image attending to the tokens.
#[test]
fn attention_matches_its_composite_twin() {
    use autograd::Var;
    use tensor::{DType, Tensor};
    for (nq, nk) in [(5usize, 150usize), (150, 5)] {
        let (b, h, dh) = (2usize, 4usize, 8usize);
        let leaf = |n: usize, seed: u64| Var::leaf(Tensor::randn(&[b, n, h * dh], seed, DType::F32));
        let (xq, xk, xv) = (leaf(nq, 1), leaf(nk, 2), leaf(nk, 3));
        let heads = |x: &Var, n: usize| x.reshape(&[b, n, h, dh]).unwrap().permute(&[0, 2, 1, 3]).unwrap();
        let g = Tensor::randn(&[b, nq, h * dh], 4, DType::F32);
        let run = |fused: bool| {
            let q = heads(&xq.affine(0.5, 0.0).unwrap(), nq);
            let (k, v) = (heads(&xk, nk), heads(&xv, nk));
            let o = if fused {
                q.attention(&k, &v).unwrap()
            } else {
                q.matmul(&k.transpose(2, 3).unwrap()).unwrap().softmax(-1).unwrap().matmul(&v).unwrap()
            };
            let y = o.permute(&[0, 2, 1, 3]).unwrap().reshape(&[b, nq, h * dh]).unwrap();
            let grads = y.backward_with(g.clone()).unwrap();
            let mut out = vec![y.value().to_f64_vec().unwrap()];
            out.extend(
                [&xq, &xk, &xv].map(|x| grads.get(x).expect("a gradient reaches q, k and v").to_f64_vec().unwrap()),
            );
            out
        };
        let (fused, composite) = (run(true), run(false));
        for (name, (f, c)) in ["y", "dq", "dk", "dv"].iter().zip(fused.iter().zip(&composite)) {
            let scale = c.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            tensor::testing::assert_close(f, c, 1e-4, 1e-4 * scale, &format!("{nq}x{nk} {name}"));
        }
    }
}
