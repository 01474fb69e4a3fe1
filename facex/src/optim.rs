//! Optimizers (AdamW, SGD with momentum), learning-rate schedules and gradient clipping, with
//! PyTorch's semantics. Updates run on f32 vectors in place of the parameter values.

use autograd::{Grads, Var};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use tensor::cpu::parallel::new_vec;
use tensor::profile::{self, Kind};
use tensor::{Result, Tensor};

/// The gradient of `p`, or None when it got none this step; a gradient whose size is not the
/// parameter's is an error naming the optimizer `op` and both shapes.
fn grad_of<'g>(op: &'static str, grads: &'g Grads, p: &Var) -> Result<Option<&'g Tensor>> {
    let Some(g) = grads.get(p) else { return Ok(None) };
    let shape = p.shape();
    if g.elem_count() != shape.iter().product::<usize>() {
        return Err(tensor::Error::ShapeMismatch { op, lhs: shape, rhs: g.shape().to_vec() });
    }
    Ok(Some(g))
}

fn write_back(p: &Var, values: Vec<f32>) -> Result<()> {
    let shape = p.shape();
    let t = Tensor::from_vec(values, &shape)?.to_dtype(p.dtype());
    p.set_value(t)
}

/// AdamW (Loshchilov & Hutter) as torch.optim.AdamW: decoupled weight decay applied first,
/// bias-corrected moments, eps added outside the square root.
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    step: u64,
    moments: HashMap<usize, (Vec<f32>, Vec<f32>)>,
    /// The parameters a step has updated (or a checkpoint restored): the ones whose moments a
    /// checkpoint holds, reserved ones not yet among them.
    stepped: HashSet<usize>,
    /// A parameter's learning rate is `lr` times its scale (1 when absent): torch's parameter
    /// groups, with the schedule applied to all of them alike.
    lr_scale: HashMap<usize, f64>,
}

impl AdamW {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            moments: HashMap::new(),
            stepped: HashSet::new(),
            lr_scale: HashMap::new(),
        }
    }

    /// Allocates zero moments now for each parameter that requires a gradient (the values a
    /// parameter's first step starts from, so the same steps follow), before any forward pass.
    /// Why: moments first allocated by a step land in the memory the step's activations just
    /// freed, so the next step's activations come from fresh pages (swin_b, batch 8, Zen 4:
    /// 196k page faults and 6.3 s in the step after the first, 5.3 s in the later ones; with
    /// the moments reserved, no faults and 5.2 s).
    pub fn reserve(&mut self, params: &[Var]) {
        for p in params.iter().filter(|p| p.requires_grad()) {
            let n = p.shape().iter().product::<usize>();
            self.moments.entry(p.id()).or_insert_with(|| zero_moments(n));
        }
    }

    /// Train `p` at `scale` x the learning rate (0 freezes it, weight decay included).
    pub fn set_lr_scale(&mut self, p: &Var, scale: f64) {
        self.lr_scale.insert(p.id(), scale);
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The first and second moments of each named parameter a step has updated, for a checkpoint.
    pub fn moments(&self, params: &[(String, Var)]) -> Vec<(String, &[f32], &[f32])> {
        params
            .iter()
            .filter(|(_, p)| self.stepped.contains(&p.id()))
            .filter_map(|(name, p)| self.moments.get(&p.id()).map(|(m, v)| (name.clone(), &m[..], &v[..])))
            .collect()
    }

    /// Restore the step count and the moments saved by [`AdamW::moments`]; each must match its
    /// parameter's size.
    pub fn restore(
        &mut self,
        step: u64,
        params: &[(String, Var)],
        moments: Vec<(String, Vec<f32>, Vec<f32>)>,
    ) -> Result<()> {
        self.step = step;
        self.moments.clear();
        self.stepped.clear();
        for (name, m, v) in moments {
            let Some((_, p)) = params.iter().find(|(n, _)| *n == name) else {
                return Err(tensor::Error::InvalidArgument {
                    op: "AdamW::restore",
                    msg: format!("no parameter {name}"),
                });
            };
            let n = p.shape().iter().product::<usize>();
            if m.len() != n || v.len() != n {
                return Err(tensor::Error::InvalidArgument {
                    op: "AdamW::restore",
                    msg: format!("{name}: moments of {} and {} values for {n} parameters", m.len(), v.len()),
                });
            }
            self.moments.insert(p.id(), (m, v));
            self.stepped.insert(p.id());
        }
        Ok(())
    }

    pub fn step(&mut self, params: &[Var], grads: &Grads) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for p in params {
            let Some(grad) = grad_of("AdamW::step", grads, p)? else { continue };
            let value = p.value();
            // The gradient read in place, the new value a parallel copy of the old (one thread
            // copying both was ~1.5% of a batch-8 step, the other core idle).
            let (old, g) = (value.f32_slice()?, grad.f32_slice()?);
            let mut x = new_vec(old.len(), CHUNK, |s, x| x.copy_from_slice(&old[s..s + x.len()]));
            let lr = self.lr * self.lr_scale.get(&p.id()).copied().unwrap_or(1.0);
            let (m, v) = self.moments.entry(p.id()).or_insert_with(|| zero_moments(x.len()));
            self.stepped.insert(p.id());
            let k = AdamWConstants {
                decay: (1.0 - lr * self.weight_decay) as f32,
                step_size: (lr / bc1) as f32,
                b1: b1 as f32,
                b2: b2 as f32,
                bc2_sqrt: bc2_sqrt as f32,
                eps: self.eps as f32,
            };
            // Elementwise, so splitting over threads gives the same bits as one loop.
            let _op = profile::op(Kind::Optimizer, 0.0, (16 * x.len()) as f64);
            x.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((x, m), v), g)| k.update(x, m, v, g));
            write_back(p, x)?;
        }
        Ok(())
    }
}

/// Elements per parallel task of an update.
const CHUNK: usize = 1 << 15;

/// The per-step constants of AdamW's update.
struct AdamWConstants {
    decay: f32,
    step_size: f32,
    b1: f32,
    b2: f32,
    bc2_sqrt: f32,
    eps: f32,
}

impl AdamWConstants {
    /// torch.optim.AdamW on one slice: decay, moments, bias-corrected step.
    fn update(&self, x: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for i in 0..x.len() {
            x[i] *= self.decay;
            m[i] = self.b1 * m[i] + (1.0 - self.b1) * g[i];
            v[i] = self.b2 * v[i] + (1.0 - self.b2) * g[i] * g[i];
            let denom = v[i].sqrt() / self.bc2_sqrt + self.eps;
            x[i] -= self.step_size * m[i] / denom;
        }
    }
}

/// SGD with momentum as torch.optim.SGD (dampening 0): g += wd*p; buf = momentum*buf + g
/// (buf = g on the first step); p -= lr * (nesterov ? g + momentum*buf : buf).
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    buffers: HashMap<usize, Vec<f32>>,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Sgd { lr, momentum, weight_decay, nesterov: false, buffers: HashMap::new() }
    }

    pub fn step(&mut self, params: &[Var], grads: &Grads) -> Result<()> {
        let (lr, mu, wd) = (self.lr as f32, self.momentum as f32, self.weight_decay as f32);
        for p in params {
            let Some(mut g) = grad_of("Sgd::step", grads, p)?.map(|g| g.to_f32_vec()).transpose()? else { continue };
            let mut x = p.value().to_f32_vec()?;
            for i in 0..x.len() {
                g[i] += wd * x[i];
            }
            if mu != 0.0 {
                let buf = match self.buffers.get_mut(&p.id()) {
                    Some(buf) => {
                        for i in 0..buf.len() {
                            buf[i] = mu * buf[i] + g[i];
                        }
                        buf
                    }
                    None => self.buffers.entry(p.id()).or_insert_with(|| g.clone()),
                };
                for i in 0..g.len() {
                    g[i] = if self.nesterov { g[i] + mu * buf[i] } else { buf[i] };
                }
            }
            for i in 0..x.len() {
                x[i] -= lr * g[i];
            }
            write_back(p, x)?;
        }
        Ok(())
    }
}

/// Scale all gradients so that their global L2 norm is at most `max_norm`, as
/// torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), capped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(params: &[Var], grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let present: Vec<&Tensor> = params.iter().filter_map(|p| grads.get(p)).collect();
    let norm = squared_norms(&present)?.iter().fold(0.0f64, |total, s| total + s).sqrt();
    clip_to_norm(params, grads, norm, max_norm)?;
    Ok(norm)
}

/// Each tensor's sum of squares (in f64, its values in order), read in place, tensors in
/// parallel: add them in the slice's order and the total has the bits of one loop over all.
pub fn squared_norms(grads: &[&Tensor]) -> Result<Vec<f64>> {
    grads.par_iter().map(|g| Ok(g.f32_slice()?.iter().map(|&x| x as f64 * x as f64).sum())).collect()
}

/// The scaling of [`clip_grad_norm`] for gradients whose global norm `norm` is already known.
pub fn clip_to_norm(params: &[Var], grads: &mut Grads, norm: f64, max_norm: f64) -> Result<()> {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(p) {
                grads.insert(p, g.affine(coef, 0.0)?);
            }
        }
    }
    Ok(())
}

/// Learning-rate schedules, evaluated per epoch (or per step: the unit is the caller's).
#[derive(Debug, Clone)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` at each milestone (torch's MultiStepLR): lr * gamma^(milestones passed).
    MultiStep {
        milestones: Vec<u64>,
        gamma: f64,
    },
    /// Linear warmup from 0 over `warmup` units, then cosine decay to `min_factor` at `total`.
    CosineWarmup {
        warmup: u64,
        total: u64,
        min_factor: f64,
    },
}

impl Schedule {
    /// The factor that multiplies the base learning rate at time `t`.
    pub fn factor(&self, t: u64) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::MultiStep { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| t >= m).count() as i32)
            }
            Schedule::CosineWarmup { warmup, total, min_factor } => {
                if t < *warmup {
                    return (t + 1) as f64 / *warmup as f64;
                }
                let span = total.saturating_sub(*warmup).max(1) as f64;
                let progress = ((t - warmup) as f64 / span).min(1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// The first and second moments of a parameter of `n` values before its first step.
fn zero_moments(n: usize) -> (Vec<f32>, Vec<f32>) {
    (vec![0.0; n], vec![0.0; n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Var with given values and a backward that yields the gradient `g`: loss = sum(p * g).
    fn param_and_grads(p0: &[f32], g: &[f32]) -> (Var, Grads) {
        let p = Var::param(Tensor::from_slice(p0, &[p0.len()]).unwrap(), "p");
        let gv = Var::constant(Tensor::from_slice(g, &[g.len()]).unwrap());
        let grads = p.mul(&gv).unwrap().sum_all().unwrap().backward().unwrap();
        (p, grads)
    }

    #[test]
    fn adamw_matches_formula_in_f64() {
        let p0 = [0.5f32, -1.25, 2.0];
        let gs = [[0.1f32, -0.3, 0.7], [0.2, 0.05, -0.4], [-0.6, 0.3, 0.1]];
        let (lr, wd, b1, b2, eps) = (1e-2, 0.1, 0.9, 0.999, 1e-8);
        let p = Var::param(Tensor::from_slice(&p0, &[3]).unwrap(), "p");
        let mut opt = AdamW::new(lr, wd);
        let (mut x, mut m, mut v) = (p0.map(|a| a as f64), [0.0f64; 3], [0.0f64; 3]);
        for (t, g) in gs.iter().enumerate() {
            let gv = Var::constant(Tensor::from_slice(g, &[3]).unwrap());
            let grads = p.mul(&gv).unwrap().sum_all().unwrap().backward().unwrap();
            opt.step(std::slice::from_ref(&p), &grads).unwrap();
            let t = (t + 1) as i32;
            for i in 0..3 {
                let gi = g[i] as f64;
                x[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let mhat = m[i] / (1.0 - b1.powi(t));
                let vhat = v[i] / (1.0 - b2.powi(t));
                x[i] -= lr * mhat / (vhat.sqrt() + eps);
            }
        }
        let got = p.value().to_f32_vec().unwrap();
        for i in 0..3 {
            assert!((got[i] as f64 - x[i]).abs() < 1e-6, "{i}: {} vs {}", got[i], x[i]);
        }
    }

    /// A parameter large enough for the parallel copy and update steps each value as a
    /// parameter of its own would (the same arithmetic per element: the same bits).
    #[test]
    fn adamw_large_parameter_equals_small_ones() {
        let n = tensor::cpu::parallel::PAR_MIN + 4097;
        let p0: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
        let g0: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.003).collect();
        let (p, grads) = param_and_grads(&p0, &g0);
        let mut opt = AdamW::new(1e-2, 0.1);
        for _ in 0..2 {
            opt.step(std::slice::from_ref(&p), &grads).unwrap();
        }
        let got = p.value().to_f32_vec().unwrap();
        for i in [0, 1, 4096, n / 2, n - 1] {
            let (q, gi) = param_and_grads(&p0[i..i + 1], &g0[i..i + 1]);
            let mut small = AdamW::new(1e-2, 0.1);
            for _ in 0..2 {
                small.step(std::slice::from_ref(&q), &gi).unwrap();
            }
            assert_eq!(got[i].to_bits(), q.value().to_f32_vec().unwrap()[0].to_bits(), "value {i}");
        }
        assert!(got.iter().zip(&p0).filter(|(_, &b)| b != 0.0).all(|(a, b)| a != b), "every nonzero value moved");
    }

    /// A gradient whose size is not the parameter's is an error naming the optimizer and both
    /// shapes, larger or smaller (SGD indexed past a short one before), and nothing moves.
    #[test]
    fn optimizers_reject_a_mismatched_gradient() {
        for (n_grad, shape) in [(3, "[3]"), (1, "[1]")] {
            let (p, _) = param_and_grads(&[1.0, 2.0], &[0.5, 0.5]);
            let (q, grads) = param_and_grads(&vec![1.0; n_grad], &vec![0.5; n_grad]);
            // q's gradient filed under p.
            let mut moved = Grads::default();
            moved.insert(&p, grads.get(&q).unwrap().clone());
            let err = AdamW::new(1e-2, 0.0).step(std::slice::from_ref(&p), &moved).unwrap_err().to_string();
            assert!(err.contains("AdamW::step") && err.contains("[2]") && err.contains(shape), "{err}");
            let err = Sgd::new(1e-2, 0.9, 0.0).step(std::slice::from_ref(&p), &moved).unwrap_err().to_string();
            assert!(err.contains("Sgd::step") && err.contains("[2]") && err.contains(shape), "{err}");
            assert_eq!(p.value().to_f32_vec().unwrap(), [1.0, 2.0]);
        }
    }

    /// Moments reserved before the first step give the same bits as moments a step creates,
    /// also for a parameter whose first gradient comes in a later step, and a checkpoint holds
    /// the moments of the parameters a step updated, reserved or not.
    #[test]
    fn adamw_reserved_moments_change_nothing() {
        let run = |reserve: bool| {
            let a = Var::param(Tensor::from_slice(&[0.5f32, -1.0], &[2]).unwrap(), "a");
            let b = Var::param(Tensor::from_slice(&[2.0f32, 0.25], &[2]).unwrap(), "b");
            let mut opt = AdamW::new(1e-2, 0.1);
            if reserve {
                opt.reserve(&[a.clone(), b.clone()]);
            }
            let named = [("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
            assert!(opt.moments(&named).is_empty(), "a checkpoint before any step holds no moments");
            for step in 0..3 {
                let g = Var::constant(Tensor::from_slice(&[0.3f32, -0.7 + step as f32], &[2]).unwrap());
                // b's gradient only from the second step on.
                let loss = if step == 0 { a.mul(&g).unwrap() } else { a.add(&b).unwrap().mul(&g).unwrap() };
                let grads = loss.sum_all().unwrap().backward().unwrap();
                opt.step(&[a.clone(), b.clone()], &grads).unwrap();
                // b's moments belong in a checkpoint only once a step has updated it.
                assert_eq!(opt.moments(&named).len(), if step == 0 { 1 } else { 2 }, "step {step}");
            }
            [a, b].map(|p| p.value().to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        let (plain, reserved) = (run(false), run(true));
        assert_eq!(plain, reserved);
        assert_ne!(plain[1], [2.0f32.to_bits(), 0.25f32.to_bits()], "b moved once it had gradients");
    }

    #[test]
    fn adamw_lr_scale_is_a_parameter_group() {
        // A parameter at scale s steps as an optimizer at lr x s would; one at 0 stays put.
        let gs = [[0.1f32, -0.3], [0.2, 0.05], [-0.6, 0.3]];
        let (a, b, c) = (
            Var::param(Tensor::from_slice(&[0.5f32, -1.0], &[2]).unwrap(), "a"),
            Var::param(Tensor::from_slice(&[0.5f32, -1.0], &[2]).unwrap(), "b"),
            Var::param(Tensor::from_slice(&[0.5f32, -1.0], &[2]).unwrap(), "c"),
        );
        let mut grouped = AdamW::new(1e-2, 0.1);
        grouped.set_lr_scale(&a, 0.25);
        grouped.set_lr_scale(&c, 0.0);
        let mut plain = AdamW::new(1e-2 * 0.25, 0.1);
        for g in &gs {
            let gv = Var::constant(Tensor::from_slice(g, &[2]).unwrap());
            let loss = |p: &Var| p.mul(&gv).unwrap().sum_all().unwrap();
            let grads = loss(&a).add(&loss(&c)).unwrap().backward().unwrap();
            grouped.step(&[a.clone(), c.clone()], &grads).unwrap();
            plain.step(std::slice::from_ref(&b), &loss(&b).backward().unwrap()).unwrap();
        }
        assert_eq!(a.value().to_f32_vec().unwrap(), b.value().to_f32_vec().unwrap());
        assert_ne!(a.value().to_f32_vec().unwrap(), vec![0.5, -1.0]);
        assert_eq!(c.value().to_f32_vec().unwrap(), vec![0.5, -1.0]);
    }

    #[test]
    fn sgd_momentum_matches_formula_in_f64() {
        let p0 = [1.0f32, -2.0];
        let gs = [[0.5f32, 0.25], [-1.0, 2.0], [0.125, -0.5]];
        let (lr, mu, wd) = (0.1, 0.9, 0.01);
        let p = Var::param(Tensor::from_slice(&p0, &[2]).unwrap(), "p");
        let mut opt = Sgd::new(lr, mu, wd);
        let (mut x, mut buf) = (p0.map(|a| a as f64), None::<[f64; 2]>);
        for g in &gs {
            let gv = Var::constant(Tensor::from_slice(g, &[2]).unwrap());
            let grads = p.mul(&gv).unwrap().sum_all().unwrap().backward().unwrap();
            opt.step(std::slice::from_ref(&p), &grads).unwrap();
            let d = [g[0] as f64 + wd * x[0], g[1] as f64 + wd * x[1]];
            let b = match buf {
                None => d,
                Some(b) => [mu * b[0] + d[0], mu * b[1] + d[1]],
            };
            buf = Some(b);
            x = [x[0] - lr * b[0], x[1] - lr * b[1]];
        }
        let got = p.value().to_f32_vec().unwrap();
        assert!((got[0] as f64 - x[0]).abs() < 1e-6 && (got[1] as f64 - x[1]).abs() < 1e-6, "{got:?} vs {x:?}");
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let (p, mut grads) = param_and_grads(&[0.0, 0.0], &[3.0, 4.0]);
        let norm = clip_grad_norm(std::slice::from_ref(&p), &mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let g = grads.get(&p).unwrap().to_f32_vec().unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
        // Below the limit nothing changes.
        let (p, mut grads) = param_and_grads(&[0.0], &[0.5]);
        clip_grad_norm(std::slice::from_ref(&p), &mut grads, 1.0).unwrap();
        assert_eq!(grads.get(&p).unwrap().to_f32_vec().unwrap(), vec![0.5]);
    }

    #[test]
    fn schedules() {
        let s = Schedule::MultiStep { milestones: vec![6, 10], gamma: 0.1 };
        let f: Vec<f64> = [0, 5, 6, 9, 10, 11].iter().map(|&t| s.factor(t)).collect();
        let want = [1.0, 1.0, 0.1, 0.1, 0.01, 0.01];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{f:?}");
        }
        let c = Schedule::CosineWarmup { warmup: 4, total: 14, min_factor: 0.0 };
        assert!((c.factor(0) - 0.25).abs() < 1e-12);
        assert!((c.factor(4) - 1.0).abs() < 1e-12);
        assert!((c.factor(9) - 0.5).abs() < 1e-12);
        assert!(c.factor(14).abs() < 1e-12);
    }
}
