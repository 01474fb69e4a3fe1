//! Multi-task training: the targets of one batch, the summed task losses, and one optimizer step.
//!
//! The loss is the gradient fixture's (fixtures README): cross entropy for parsing, age, gender
//! and race; wing loss (w 10, eps 2) on landmarks in [-1, 1]; the geodesic distance between
//! rotation matrices for pose; binary cross entropy for attributes and visibility; all weights 1
//! (the authors' choice, per the spec).

use crate::losses;
use crate::model::{FaceXFormer, Outputs};
use crate::optim::AdamW;
use autograd::Var;
use tensor::{DType, Result, SplitMix64, Tensor};

/// Targets for every head of every sample.
#[derive(Clone)]
pub struct Targets {
    /// [N, 224, 224] i64 class ids.
    pub segmentation: Tensor,
    /// [N, 68, 2] in [-1, 1].
    pub landmarks: Tensor,
    /// [N, 3] radians.
    pub pose: Tensor,
    /// [N, 40] in {0, 1}.
    pub attributes: Tensor,
    /// [N, 29] in {0, 1}, 1 = occluded.
    pub visibility: Tensor,
    /// [N] i64 each.
    pub age: Tensor,
    pub gender: Tensor,
    pub race: Tensor,
}

impl Targets {
    /// Random but valid targets, for benchmarks and smoke tests.
    pub fn random(n: usize, seed: u64) -> Targets {
        let mut r = SplitMix64(seed);
        let mut ints =
            |len: usize, classes: u64| -> Vec<i64> { (0..len).map(|_| (r.next_u64() % classes) as i64).collect() };
        let seg = ints(n * 224 * 224, 11);
        let (age, gender, race) = (ints(n, 8), ints(n, 2), ints(n, 5));
        let bits = |len: usize, seed: u64| {
            let mut r = SplitMix64(seed);
            let v: Vec<f64> = (0..len).map(|_| (r.next_u64() % 2) as f64).collect();
            v
        };
        Targets {
            segmentation: Tensor::from_vec(seg, &[n, 224, 224]).expect("shape"),
            landmarks: Tensor::rand_uniform(&[n, 68, 2], -1.0, 1.0, seed + 1, DType::F32),
            pose: Tensor::randn(&[n, 3], seed + 2, DType::F32).affine(0.3, 0.0).expect("affine"),
            attributes: Tensor::from_f64_vec(&bits(n * 40, seed + 3), &[n, 40], DType::F32),
            visibility: Tensor::from_f64_vec(&bits(n * 29, seed + 4), &[n, 29], DType::F32),
            age: Tensor::from_vec(age, &[n]).expect("shape"),
            gender: Tensor::from_vec(gender, &[n]).expect("shape"),
            race: Tensor::from_vec(race, &[n]).expect("shape"),
        }
    }
}

/// The eight task losses, named as the fixture's `loss.*`.
pub fn task_losses(out: &Outputs, t: &Targets) -> Result<Vec<(&'static str, Var)>> {
    let n = out.landmarks.shape()[0];
    let landmarks = out.landmarks.reshape(&[n, 68, 2])?;
    Ok(vec![
        ("segmentation", losses::cross_entropy(&out.segmentation, &t.segmentation, None, None)?),
        ("landmarks", losses::wing_loss(&landmarks, &t.landmarks, 10.0, 2.0)?),
        ("pose", losses::geodesic_loss(&out.pose, &t.pose)?),
        ("attributes", losses::bce_with_logits(&out.attributes, &t.attributes)?),
        ("visibility", losses::bce_with_logits(&out.visibility, &t.visibility)?),
        ("age", losses::cross_entropy(&out.age, &t.age, None, None)?),
        ("gender", losses::cross_entropy(&out.gender, &t.gender, None, None)?),
        ("race", losses::cross_entropy(&out.race, &t.race, None, None)?),
    ])
}

/// The plain sum of the task losses.
pub fn total_loss(parts: &[(&'static str, Var)]) -> Result<Var> {
    let mut total = parts[0].1.clone();
    for (_, l) in &parts[1..] {
        total = total.add(l)?;
    }
    Ok(total)
}

/// One optimisation step: forward, summed loss, backward, AdamW. Returns the loss value.
pub fn train_step(model: &FaceXFormer, opt: &mut AdamW, input: &Tensor, targets: &Targets) -> Result<f64> {
    let out = model.forward(&Var::constant(input.clone()))?;
    let loss = total_loss(&task_losses(&out, targets)?)?;
    let value = loss.value().item()?;
    let grads = loss.backward()?;
    drop(out);
    opt.step(&model.parameters(), &grads)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FacexConfig;

    #[test]
    fn training_steps_reduce_the_loss_on_a_fixed_batch() {
        // A tiny model must fit one fixed batch: the loss after a few AdamW steps is lower.
        let mut cfg = FacexConfig::tiny();
        cfg.backbone.depths = vec![1, 1, 1, 1];
        let model = FaceXFormer::new_random(&cfg, 3).unwrap();
        let input = Tensor::randn(&[1, 3, 224, 224], 5, DType::F32);
        let targets = Targets::random(1, 9);
        let mut opt = AdamW::new(1e-3, 0.0);
        let first = train_step(&model, &mut opt, &input, &targets).unwrap();
        let mut last = first;
        for _ in 0..4 {
            last = train_step(&model, &mut opt, &input, &targets).unwrap();
        }
        assert!(last.is_finite() && last < first * 0.95, "loss {first} -> {last}");
    }
}
