//! Multi-task training: the targets of one mixed-task batch, the per-task losses, and one
//! optimizer step; `config`, `state` and `run` make it a resumable command (`facex train`).
//!
//! The losses are the gradient fixture's (fixtures README): cross entropy for parsing, age, gender
//! and race; wing loss (w 10, eps 2) on landmarks in [-1, 1]; the geodesic distance between
//! rotation matrices for pose; binary cross entropy for attributes and visibility. As in the
//! official forward, every head runs on every row and each loss sees only the rows of its task
//! (age, gender and race share task 4); the total is the weighted sum (all weights 1 by default,
//! the authors' choice per the spec).

pub mod config;
pub mod run;
pub mod state;

use crate::losses;
use crate::model::{FaceXFormer, Outputs};
use crate::optim::AdamW;
use autograd::Var;
use data::{Batch, Target, Task};
use tensor::{profile, DType, Error, Result, SplitMix64, Tensor};

/// The eight losses, by the name the logs and the gradient fixture use, with their task group.
pub const LOSSES: [(&str, Task); 8] = [
    ("segmentation", Task::Parsing),
    ("landmarks", Task::Landmarks),
    ("pose", Task::HeadPose),
    ("attributes", Task::Attributes),
    ("visibility", Task::Visibility),
    ("age", Task::AgeGenderRace),
    ("gender", Task::AgeGenderRace),
    ("race", Task::AgeGenderRace),
];

/// Targets of one batch. `rows[t]` lists the batch rows that carry task `t` (official ids), and
/// each target tensor holds exactly those rows, in that order (zero rows when the task is absent).
#[derive(Clone)]
pub struct Targets {
    pub rows: [Vec<usize>; 6],
    /// [n, 224, 224] i64 class ids.
    pub segmentation: Tensor,
    /// [n, 68, 2] in [-1, 1].
    pub landmarks: Tensor,
    /// [n, 3] radians.
    pub pose: Tensor,
    /// [n, 40] in {0, 1}.
    pub attributes: Tensor,
    /// [n, 29] in {0, 1}, 1 = occluded.
    pub visibility: Tensor,
    /// [n] i64 each.
    pub age: Tensor,
    pub gender: Tensor,
    pub race: Tensor,
}

impl Targets {
    /// Every task on every one of `n` rows (the gradient fixture labels all heads of all samples).
    pub fn every_row(n: usize) -> [Vec<usize>; 6] {
        std::array::from_fn(|_| (0..n).collect())
    }

    /// Random but valid targets for every task on every row, for benchmarks and smoke tests.
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
            rows: Targets::every_row(n),
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

    /// The targets of a mixed-task batch from the loader: each row's one task.
    pub fn from_batch(batch: &Batch) -> Result<Targets> {
        let mut rows: [Vec<usize>; 6] = Default::default();
        let (mut seg, mut lnd, mut pose, mut attr, mut vis) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut age, mut gender, mut race) = (vec![], vec![], vec![]);
        for (i, t) in batch.targets.iter().enumerate() {
            rows[t.task().id()].push(i);
            let bad = |what: String| Error::InvalidArgument {
                op: "Targets::from_batch",
                msg: format!("{}: {what}", batch.sources[i]),
            };
            match t {
                Target::Parsing { mask } => {
                    if mask.len() != 224 * 224 {
                        return Err(bad(format!("parsing mask of {} pixels, expected 224x224", mask.len())));
                    }
                    seg.extend(mask.iter().map(|&c| c as i64));
                }
                Target::Landmarks { points } => {
                    if points.len() != 68 {
                        return Err(bad(format!("{} landmarks, expected 68", points.len())));
                    }
                    lnd.extend(Target::normalized_points(points).into_iter().flatten());
                }
                Target::HeadPose { pitch_yaw_roll } => pose.extend_from_slice(pitch_yaw_roll),
                Target::Attributes { values } => attr.extend(values.iter().map(|&v| v as f32)),
                Target::AgeGenderRace { age_bin, gender: g, race: r } => {
                    age.push(*age_bin as i64);
                    gender.push(*g as i64);
                    race.push(*r as i64);
                }
                Target::Visibility { occluded, .. } => {
                    if occluded.len() != 29 {
                        return Err(bad(format!("{} visibility flags, expected 29", occluded.len())));
                    }
                    vis.extend(occluded.iter().map(|&v| v as f32));
                }
            }
        }
        let n = |t: Task| rows[t.id()].len();
        Ok(Targets {
            segmentation: Tensor::from_vec(seg, &[n(Task::Parsing), 224, 224])?,
            landmarks: Tensor::from_vec(lnd, &[n(Task::Landmarks), 68, 2])?,
            pose: Tensor::from_vec(pose, &[n(Task::HeadPose), 3])?,
            attributes: Tensor::from_vec(attr, &[n(Task::Attributes), 40])?,
            visibility: Tensor::from_vec(vis, &[n(Task::Visibility), 29])?,
            age: Tensor::from_vec(age, &[n(Task::AgeGenderRace)])?,
            gender: Tensor::from_vec(gender, &[n(Task::AgeGenderRace)])?,
            race: Tensor::from_vec(race, &[n(Task::AgeGenderRace)])?,
            rows,
        })
    }
}

/// The rows of `v` (dim 0) listed in `rows`; `v` itself when they are all of its rows in order.
fn select_rows(v: &Var, rows: &[usize]) -> Result<Var> {
    let n = v.shape()[0];
    if rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return Ok(v.clone());
    }
    let index = Tensor::from_vec(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), &[rows.len()])?;
    v.index_select(0, &index)
}

/// The task losses of the tasks present in the batch, named as the fixture's `loss.*`, each a
/// mean over its task's rows only. A task with no row gives no loss (and no gradient).
pub fn task_losses(out: &Outputs, t: &Targets) -> Result<Vec<(&'static str, Var)>> {
    let n = out.landmarks.shape()[0];
    let mut parts = Vec::new();
    for (name, task) in LOSSES {
        let rows = &t.rows[task.id()];
        if rows.is_empty() {
            continue;
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidArgument { op: "task_losses", msg: format!("row {bad} of a batch of {n}") });
        }
        let loss = match name {
            "segmentation" => {
                // The forward may already have run the parsing head on exactly these rows.
                let logits = match &out.segmentation_rows {
                    Some(done) if done == rows => out.segmentation.clone(),
                    Some(done) => {
                        return Err(Error::InvalidArgument {
                            op: "task_losses",
                            msg: format!("parsing logits of rows {done:?}, targets of rows {rows:?}"),
                        })
                    }
                    None => select_rows(&out.segmentation, rows)?,
                };
                losses::cross_entropy(&logits, &t.segmentation, None, None)?
            }
            "landmarks" => {
                let pred = select_rows(&out.landmarks, rows)?.reshape(&[rows.len(), 68, 2])?;
                losses::wing_loss(&pred, &t.landmarks, 10.0, 2.0)?
            }
            "pose" => losses::geodesic_loss(&select_rows(&out.pose, rows)?, &t.pose)?,
            "attributes" => losses::bce_with_logits(&select_rows(&out.attributes, rows)?, &t.attributes)?,
            "visibility" => losses::bce_with_logits(&select_rows(&out.visibility, rows)?, &t.visibility)?,
            "age" => losses::cross_entropy(&select_rows(&out.age, rows)?, &t.age, None, None)?,
            "gender" => losses::cross_entropy(&select_rows(&out.gender, rows)?, &t.gender, None, None)?,
            "race" => losses::cross_entropy(&select_rows(&out.race, rows)?, &t.race, None, None)?,
            _ => unreachable!("LOSSES names {name}"),
        };
        parts.push((name, loss));
    }
    Ok(parts)
}

/// The plain sum of the task losses.
pub fn total_loss(parts: &[(&'static str, Var)]) -> Result<Var> {
    weighted_total(parts, |_| 1.0)
}

/// `sum_i weight(name_i) * loss_i`.
pub fn weighted_total(parts: &[(&'static str, Var)], weight: impl Fn(&str) -> f64) -> Result<Var> {
    let mut total: Option<Var> = None;
    for (name, l) in parts {
        let w = weight(name);
        let term = if w == 1.0 { l.clone() } else { l.affine(w, 0.0)? };
        total = Some(match total {
            None => term,
            Some(t) => t.add(&term)?,
        });
    }
    total.ok_or_else(|| Error::InvalidArgument { op: "total_loss", msg: "no task loss in the batch".into() })
}

/// One optimisation step: forward, summed loss, backward, AdamW. Returns the loss value.
/// The stage labels are for `facex bench --profile` (`tensor::profile`; free when it is off).
pub fn train_step(model: &FaceXFormer, opt: &mut AdamW, input: &Tensor, targets: &Targets) -> Result<f64> {
    let out = model.forward(&Var::constant(input.clone()))?;
    let loss = {
        let _stage = profile::stage("loss");
        total_loss(&task_losses(&out, targets)?)?
    };
    let value = loss.value().item()?;
    let grads = {
        let _stage = profile::stage("backward");
        loss.backward()?
    };
    drop(out);
    let _stage = profile::stage("optimizer");
    opt.step(&model.parameters(), &grads)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FacexConfig;

    /// A mixed batch: parsing on row 1, landmarks on rows 0 and 2, age/gender/race on row 2.
    fn mixed_targets() -> Targets {
        let all = Targets::random(3, 4);
        let pick = |t: &Tensor, rows: &[i64]| {
            t.index_select(0, &Tensor::from_vec(rows.to_vec(), &[rows.len()]).unwrap()).unwrap()
        };
        Targets {
            rows: [vec![1], vec![0, 2], vec![], vec![], vec![2], vec![]],
            segmentation: pick(&all.segmentation, &[1]),
            landmarks: pick(&all.landmarks, &[0, 2]),
            pose: Tensor::zeros(&[0, 3], DType::F32),
            attributes: Tensor::zeros(&[0, 40], DType::F32),
            visibility: Tensor::zeros(&[0, 29], DType::F32),
            age: pick(&all.age, &[2]),
            gender: pick(&all.gender, &[2]),
            race: pick(&all.race, &[2]),
        }
    }

    #[test]
    fn parsing_head_on_its_rows_only_gives_the_same_losses_and_gradients() {
        let mut cfg = FacexConfig::tiny();
        cfg.backbone.depths = vec![1, 1, 1, 1];
        let model = FaceXFormer::new_random(&cfg, 5).unwrap();
        let x = Var::constant(Tensor::randn(&[3, 3, 224, 224], 6, DType::F32));
        let t = mixed_targets();
        let full = model.forward(&x).unwrap();
        let part = model.forward_parsing_rows(&x, Some(&t.rows[0])).unwrap();
        assert_eq!(part.segmentation.shape(), vec![1, 11, 224, 224]);
        let (lf, lp) = (task_losses(&full, &t).unwrap(), task_losses(&part, &t).unwrap());
        let names: Vec<&str> = lf.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["segmentation", "landmarks", "age", "gender", "race"]);
        for ((n, a), (_, b)) in lf.iter().zip(&lp) {
            let (a, b) = (a.value().item().unwrap(), b.value().item().unwrap());
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{n}: {a} vs {b}");
        }
        let (gf, gp) = (total_loss(&lf).unwrap().backward().unwrap(), total_loss(&lp).unwrap().backward().unwrap());
        for (name, p) in model.named_parameters() {
            let (a, b) = (gf.get(&p), gp.get(&p));
            assert_eq!(a.is_some(), b.is_some(), "{name}");
            if let (Some(a), Some(b)) = (a, b) {
                let (a, b) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
                let scale = a.iter().map(|v| v.abs()).fold(1e-6f32, f32::max);
                let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(diff <= 1e-4 * scale, "{name}: max diff {diff} at scale {scale}");
            }
        }
        // Parsing logits of other rows than the targets' are refused, not silently misused.
        let e = model.forward_parsing_rows(&x, Some(&[0])).unwrap();
        assert!(task_losses(&e, &t).is_err(), "logits of other rows than the targets' must be refused");
    }

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
