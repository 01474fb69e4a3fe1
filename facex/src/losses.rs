//! Training losses, over autograd Vars. Definitions follow the fixture README (which states the
//! exact formulas of the gradient-parity fixture) and PyTorch's conventions.

use autograd::Var;
use tensor::{DType, Error, Result, Tensor};

/// Cross entropy over class dim 1: logits [N,C,...], target i64 [N,...].
/// Mean over the targets that are not `ignore_index`, weighted by `class_weight[target]` when given
/// (PyTorch's weighted mean: sum(w_t * nll) / sum(w_t)).
pub fn cross_entropy(
    logits: &Var,
    target: &Tensor,
    ignore_index: Option<i64>,
    class_weight: Option<&Tensor>,
) -> Result<Var> {
    let shape = logits.shape();
    if shape.len() < 2 || target.dtype() != DType::I64 {
        return Err(Error::BadShape {
            op: "cross_entropy",
            shape,
            expected: "logits [N,C,...] with i64 targets".into(),
        });
    }
    let mut want = vec![shape[0]];
    want.extend_from_slice(&shape[2..]);
    target.expect_shape("cross_entropy target", &want)?;
    let classes = shape[1] as i64;
    let t = target.to_vec::<i64>()?;
    if let Some(&bad) = t.iter().find(|&&c| (c < 0 || c >= classes) && Some(c) != ignore_index) {
        return Err(Error::InvalidArgument { op: "cross_entropy", msg: format!("target {bad} outside 0..{classes}") });
    }
    // Per-element weight: 0 where ignored, class_weight[t] (or 1) elsewhere.
    let cw = class_weight.map(|w| w.to_f32_vec()).transpose()?;
    if let Some(cw) = &cw {
        if cw.len() != classes as usize {
            return Err(Error::ShapeMismatch {
                op: "cross_entropy weight",
                lhs: vec![cw.len()],
                rhs: vec![classes as usize],
            });
        }
    }
    let weights: Vec<f32> = t
        .iter()
        .map(|&c| if Some(c) == ignore_index { 0.0 } else { cw.as_ref().map_or(1.0, |w| w[c as usize]) })
        .collect();
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    let safe: Vec<i64> = t.iter().map(|&c| if Some(c) == ignore_index { 0 } else { c }).collect();
    let index = Tensor::from_vec(safe, target.shape())?.unsqueeze(1)?;
    let picked = logits.log_softmax(1)?.gather(1, &index)?.squeeze(1)?;
    let w = Var::constant(Tensor::from_vec(weights, target.shape())?);
    picked.mul(&w)?.sum_all()?.affine(-1.0 / total.max(f64::MIN_POSITIVE), 0.0)
}

/// Soft Dice loss for segmentation: 1 - mean over classes of (2|P∩T| + s) / (|P| + |T| + s),
/// with P = softmax(logits) over dim 1 and T the one-hot target, summed over batch and pixels.
pub fn dice_loss(logits: &Var, target: &Tensor, smooth: f64) -> Result<Var> {
    let shape = logits.shape();
    let classes = shape[1];
    let t = target.to_vec::<i64>()?;
    let mut one_hot = vec![0.0f32; shape.iter().product()];
    let pixels: usize = shape[2..].iter().product();
    for (i, &c) in t.iter().enumerate() {
        if c < 0 || c as usize >= classes {
            return Err(Error::InvalidArgument { op: "dice_loss", msg: format!("target {c} outside 0..{classes}") });
        }
        let (n, p) = (i / pixels, i % pixels);
        one_hot[(n * classes + c as usize) * pixels + p] = 1.0;
    }
    let onehot = Var::constant(Tensor::from_vec(one_hot, &shape)?);
    let probs = logits.softmax(1)?;
    let mut dims: Vec<isize> = vec![0];
    dims.extend((2..shape.len() as isize).collect::<Vec<_>>());
    let inter = probs.mul(&onehot)?.sum(&dims, false)?;
    let denom = probs.sum(&dims, false)?.add(&onehot.sum(&dims, false)?)?.affine(1.0, smooth)?;
    let dice = inter.affine(2.0, smooth)?.div(&denom)?;
    dice.mean_all()?.affine(-1.0, 1.0)
}

/// Mean binary cross entropy with logits, in the stable form max(x,0) - x*t + log(1 + e^-|x|).
pub fn bce_with_logits(logits: &Var, target: &Tensor) -> Result<Var> {
    target.expect_shape("bce_with_logits target", &logits.shape())?;
    let t = Var::constant(target.clone());
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    logits.relu()?.sub(&logits.mul(&t)?)?.add(&softplus)?.mean_all()
}

/// Wing loss (Feng et al. 2018), mean over all coordinates:
/// d < w: w ln(1 + d/eps); else d - (w - w ln(1 + w/eps)), with d = |pred - target|.
pub fn wing_loss(pred: &Var, target: &Tensor, w: f64, eps: f64) -> Result<Var> {
    target.expect_shape("wing_loss target", &pred.shape())?;
    let d = pred.sub(&Var::constant(target.clone()))?.abs()?;
    let small = d.affine(1.0 / eps, 1.0)?.log()?.affine(w, 0.0)?;
    let c = w - w * (1.0 + w / eps).ln();
    let large = d.affine(1.0, -c)?;
    let cond = d.value().lt(&Tensor::full(w, &[], d.dtype()))?;
    Var::where_cond(&cond, &small, &large)?.mean_all()
}

/// Mean absolute error.
pub fn l1_loss(pred: &Var, target: &Tensor) -> Result<Var> {
    target.expect_shape("l1_loss target", &pred.shape())?;
    pred.sub(&Var::constant(target.clone()))?.abs()?.mean_all()
}

/// Smooth L1 (PyTorch): 0.5 d^2 / beta where d < beta, else d - 0.5 beta; mean.
pub fn smooth_l1_loss(pred: &Var, target: &Tensor, beta: f64) -> Result<Var> {
    target.expect_shape("smooth_l1_loss target", &pred.shape())?;
    let d = pred.sub(&Var::constant(target.clone()))?.abs()?;
    let quad = d.sqr()?.affine(0.5 / beta, 0.0)?;
    let lin = d.affine(1.0, -0.5 * beta)?;
    let cond = d.value().lt(&Tensor::full(beta, &[], d.dtype()))?;
    Var::where_cond(&cond, &quad, &lin)?.mean_all()
}

/// Rotation matrices [N,3,3] = Rx(pitch) Ry(yaw) Rz(roll) from angles [N,3] in radians.
pub fn rotation_matrices(angles: &Var) -> Result<Var> {
    let shape = angles.shape();
    if shape.len() != 2 || shape[1] != 3 {
        return Err(Error::BadShape { op: "rotation_matrices", shape, expected: "[N, 3] (pitch, yaw, roll)".into() });
    }
    let n = shape[0];
    let zero = Var::constant(Tensor::zeros(&[n], angles.dtype()));
    let one = Var::constant(Tensor::ones(&[n], angles.dtype()));
    let matrix = |e: [&Var; 9]| -> Result<Var> { Var::stack(&e, 1)?.reshape(&[n, 3, 3]) };
    let (p, y, r) = (angles.select(1, 0)?, angles.select(1, 1)?, angles.select(1, 2)?);
    let (sp, cp, sy, cy, sr, cr) = (p.sin()?, p.cos()?, y.sin()?, y.cos()?, r.sin()?, r.cos()?);
    let (nsp, nsy, nsr) = (sp.neg()?, sy.neg()?, sr.neg()?);
    let rx = matrix([&one, &zero, &zero, &zero, &cp, &nsp, &zero, &sp, &cp])?;
    let ry = matrix([&cy, &zero, &sy, &zero, &one, &zero, &nsy, &zero, &cy])?;
    let rz = matrix([&cr, &nsr, &zero, &sr, &cr, &zero, &zero, &zero, &one])?;
    rx.matmul(&ry)?.matmul(&rz)
}

/// Geodesic distance between predicted and target rotations, mean over the batch:
/// acos(clamp((trace(Rp^T Rt) - 1) / 2, -1+1e-6, 1-1e-6)).
pub fn geodesic_loss(pred_angles: &Var, target_angles: &Tensor) -> Result<Var> {
    target_angles.expect_shape("geodesic_loss target", &pred_angles.shape())?;
    let rp = rotation_matrices(pred_angles)?;
    let rt = rotation_matrices(&Var::constant(target_angles.clone()))?;
    // trace(A^T B) is the sum of the elementwise product.
    let trace = rp.mul(&rt)?.sum(&[1, 2], false)?;
    trace.affine(0.5, -0.5)?.clamp(-1.0 + 1e-6, 1.0 - 1e-6)?.acos()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::SplitMix64;

    fn randv(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| scale * r.normal()).collect()
    }
    fn var(v: &[f64], shape: &[usize]) -> Var {
        Var::leaf(Tensor::from_f64_vec(v, shape, DType::F32))
    }
    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1e-3), "{a} vs {b}");
    }
    /// Gradient of `loss` at `x` by central differences of the f64 reference `f`.
    fn fd_grad(f: &dyn Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
        let h = 1e-6;
        (0..x.len())
            .map(|i| {
                let (mut a, mut b) = (x.to_vec(), x.to_vec());
                a[i] += h;
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h)
            })
            .collect()
    }
    fn assert_grad(got: &Tensor, want: &[f64]) {
        let g = got.to_f64_vec().unwrap();
        let num: f64 = g.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt().max(1e-8);
        assert!(num / den < 1e-3, "gradient error {} ({g:?} vs {want:?})", num / den);
    }

    /// Reference cross entropy over [N,C,P] in f64.
    fn ce_ref(x: &[f64], n: usize, c: usize, p: usize, t: &[i64], ignore: Option<i64>, w: Option<&[f64]>) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..n {
            for k in 0..p {
                let tk = t[i * p + k];
                if Some(tk) == ignore {
                    continue;
                }
                let logits: Vec<f64> = (0..c).map(|j| x[(i * c + j) * p + k]).collect();
                let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                let wt = w.map_or(1.0, |w| w[tk as usize]);
                num += wt * (lse - logits[tk as usize]);
                den += wt;
            }
        }
        num / den
    }

    #[test]
    fn cross_entropy_matches_reference_with_ignore_and_weights() {
        let (n, c, p) = (2, 4, 3);
        let x = randv(n * c * p, 1, 2.0);
        let t = vec![0i64, 3, -100, 2, 1, 1];
        let w = [0.5, 1.0, 2.0, 1.5];
        let xv = var(&x, &[n, c, p]);
        let tt = Tensor::from_vec(t.clone(), &[n, p]).unwrap();
        let wt = Tensor::from_f64_vec(&w, &[c], DType::F32);
        let loss = cross_entropy(&xv, &tt, Some(-100), Some(&wt)).unwrap();
        close(loss.value().item().unwrap(), ce_ref(&x, n, c, p, &t, Some(-100), Some(&w)), 1e-5);
        let g = loss.backward().unwrap();
        let want = fd_grad(&|x| ce_ref(x, n, c, p, &t, Some(-100), Some(&w)), &x);
        assert_grad(g.get(&xv).unwrap(), &want);
        // A class outside 0..C is an error, not a panic.
        let bad = Tensor::from_vec(vec![0i64, 4, 0, 0, 0, 0], &[n, p]).unwrap();
        assert!(cross_entropy(&xv, &bad, None, None).is_err());
    }

    #[test]
    fn bce_with_logits_matches_reference() {
        let x = randv(10, 2, 3.0);
        let t: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
        let f = |x: &[f64]| {
            x.iter()
                .zip(&t)
                .map(|(&x, &t)| -(t * (1.0 / (1.0 + (-x).exp())).ln() + (1.0 - t) * (1.0 / (1.0 + x.exp())).ln()))
                .sum::<f64>()
                / x.len() as f64
        };
        let xv = var(&x, &[2, 5]);
        let loss = bce_with_logits(&xv, &Tensor::from_f64_vec(&t, &[2, 5], DType::F32)).unwrap();
        close(loss.value().item().unwrap(), f(&x), 1e-5);
        assert_grad(loss.backward().unwrap().get(&xv).unwrap(), &fd_grad(&f, &x));
    }

    #[test]
    fn wing_and_smooth_l1_match_reference() {
        // Differences on both sides of the wing threshold w = 10 (and of beta = 1).
        let x = vec![0.3, -4.0, 12.5, -15.0, 0.9, 2.2];
        let t = vec![0.0, 1.0, -0.5, 0.0, 0.1, 0.0];
        let (w, eps) = (10.0, 2.0);
        let c = w - w * (1.0f64 + w / eps).ln();
        let wing = |x: &[f64]| {
            x.iter()
                .zip(&t)
                .map(|(a, b)| {
                    let d = (a - b).abs();
                    if d < w {
                        w * (1.0 + d / eps).ln()
                    } else {
                        d - c
                    }
                })
                .sum::<f64>()
                / x.len() as f64
        };
        let xv = var(&x, &[3, 2]);
        let tt = Tensor::from_f64_vec(&t, &[3, 2], DType::F32);
        let loss = wing_loss(&xv, &tt, w, eps).unwrap();
        close(loss.value().item().unwrap(), wing(&x), 1e-5);
        assert_grad(loss.backward().unwrap().get(&xv).unwrap(), &fd_grad(&wing, &x));

        let sl1 = |x: &[f64]| {
            x.iter()
                .zip(&t)
                .map(|(a, b)| {
                    let d = (a - b).abs();
                    if d < 1.0 {
                        0.5 * d * d
                    } else {
                        d - 0.5
                    }
                })
                .sum::<f64>()
                / x.len() as f64
        };
        let loss = smooth_l1_loss(&xv, &tt, 1.0).unwrap();
        close(loss.value().item().unwrap(), sl1(&x), 1e-5);
        let l1 = l1_loss(&xv, &tt).unwrap().value().item().unwrap();
        close(l1, x.iter().zip(&t).map(|(a, b)| (a - b).abs()).sum::<f64>() / 6.0, 1e-5);
    }

    fn rot_ref(a: &[f64]) -> [[f64; 3]; 3] {
        let (sp, cp, sy, cy, sr, cr) = (a[0].sin(), a[0].cos(), a[1].sin(), a[1].cos(), a[2].sin(), a[2].cos());
        let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
        let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
        let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
        let mm = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
            let mut c = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            c
        };
        mm(mm(rx, ry), rz)
    }

    #[test]
    fn geodesic_loss_matches_reference() {
        let x = randv(9, 3, 0.8);
        let t = randv(9, 4, 0.8);
        let f = |x: &[f64]| {
            (0..3)
                .map(|i| {
                    let (rp, rt) = (rot_ref(&x[3 * i..3 * i + 3]), rot_ref(&t[3 * i..3 * i + 3]));
                    let tr: f64 =
                        (0..3).flat_map(|a| (0..3).map(move |b| (a, b))).map(|(a, b)| rp[a][b] * rt[a][b]).sum();
                    ((tr - 1.0) / 2.0).clamp(-1.0 + 1e-6, 1.0 - 1e-6).acos()
                })
                .sum::<f64>()
                / 3.0
        };
        let xv = var(&x, &[3, 3]);
        let loss = geodesic_loss(&xv, &Tensor::from_f64_vec(&t, &[3, 3], DType::F32)).unwrap();
        close(loss.value().item().unwrap(), f(&x), 1e-5);
        assert_grad(loss.backward().unwrap().get(&xv).unwrap(), &fd_grad(&f, &x));
        // Identical rotations give (almost) zero distance.
        let same = geodesic_loss(&var(&t, &[3, 3]), &Tensor::from_f64_vec(&t, &[3, 3], DType::F32)).unwrap();
        assert!(same.value().item().unwrap() < 3e-3);
    }

    #[test]
    fn dice_is_zero_for_perfect_and_positive_otherwise() {
        // Confident logits matching the target give a loss near 0; random logits do not.
        let t = vec![0i64, 1, 2, 1];
        let mut x = vec![-20.0; 3 * 4];
        for (p, &c) in t.iter().enumerate() {
            x[c as usize * 4 + p] = 20.0;
        }
        let tt = Tensor::from_vec(t.clone(), &[1, 2, 2]).unwrap();
        let perfect = dice_loss(&var(&x, &[1, 3, 2, 2]), &tt, 1.0).unwrap().value().item().unwrap();
        assert!(perfect.abs() < 1e-5, "{perfect}");
        let r = randv(12, 5, 1.0);
        let f = |x: &[f64]| {
            let mut dice = 0.0;
            for c in 0..3 {
                let (mut inter, mut ps, mut ts) = (0.0, 0.0, 0.0);
                for p in 0..4 {
                    let m = (0..3).map(|k| x[k * 4 + p]).fold(f64::MIN, f64::max);
                    let z: f64 = (0..3).map(|k| (x[k * 4 + p] - m).exp()).sum();
                    let prob = (x[c * 4 + p] - m).exp() / z;
                    let tv = if t[p] == c as i64 { 1.0 } else { 0.0 };
                    inter += prob * tv;
                    ps += prob;
                    ts += tv;
                }
                dice += (2.0 * inter + 1.0) / (ps + ts + 1.0);
            }
            1.0 - dice / 3.0
        };
        let rv = var(&r, &[1, 3, 2, 2]);
        let loss = dice_loss(&rv, &tt, 1.0).unwrap();
        close(loss.value().item().unwrap(), f(&r), 1e-5);
        assert_grad(loss.backward().unwrap().get(&rv).unwrap(), &fd_grad(&f, &r));
    }
}
