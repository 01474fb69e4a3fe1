//! The paper's evaluation metrics, as pure functions on plain slices (no tensors, no I/O), so
//! each can be checked against arithmetic done by hand.
//!
//! Conventions: points are crop pixels (0-based, pixel centres at integers, the 224x224 crop of
//! `data::Target`); model landmarks in [-1, 1] map there with [`to_crop_pixels`]; pose angles are
//! (pitch, yaw, roll) in degrees; parsing classes are LaPa's 11, background = 0.

use serde::Serialize;
use std::fmt;

/// Parsing classes (LaPa order, background first).
pub const NUM_CLASSES: usize = 11;
/// The crop side the model's [-1, 1] landmarks refer to.
pub const CROP_SIZE: f64 = 224.0;
/// Outer eye corners of the 68-point (300W/iBUG) scheme, 0-based: the inter-ocular distance.
pub const LEFT_EYE_OUTER: usize = 36;
pub const RIGHT_EYE_OUTER: usize = 45;
/// NME threshold of the failure rate and of the CED's AUC (300W/WFLW protocol).
pub const NME_THRESHOLD: f64 = 0.1;
/// AFLW2000 protocol: samples with a ground-truth angle beyond this many degrees are dropped.
pub const POSE_LIMIT_DEG: f64 = 99.0;
/// The precision at which visibility recall is read (COFW occlusion protocol).
pub const MIN_PRECISION: f64 = 0.8;

/// A sample that a metric cannot score. The caller names the sample and counts it as a skip.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricError {
    /// Two inputs that must have the same length do not.
    Length { what: &'static str, expected: usize, got: usize },
    /// A parsing class id outside 0..=10.
    Class { what: &'static str, id: u8 },
    /// The ground-truth outer eye corners coincide: NME would divide by zero.
    ZeroInterocular,
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::Length { what, expected, got } => write!(f, "{what}: expected {expected} values, got {got}"),
            MetricError::Class { what, id } => write!(f, "{what}: class id {id} (expected 0..=10)"),
            MetricError::ZeroInterocular => {
                write!(f, "the ground-truth outer eye corners (points 36 and 45) coincide: no inter-ocular distance")
            }
        }
    }
}

impl std::error::Error for MetricError {}

fn same_len(what: &'static str, expected: usize, got: usize) -> Result<(), MetricError> {
    if expected == got {
        Ok(())
    } else {
        Err(MetricError::Length { what, expected, got })
    }
}

// ---------------------------------------------------------------------------------------------
// Face parsing

/// Per-class pixel counts accumulated over a whole set: the dataset-level F1 of LaPa and
/// CelebAMask-HQ (counts are summed over images before the F1, not F1s averaged per image).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ParsingCounts {
    pub tp: [u64; NUM_CLASSES],
    pub fp: [u64; NUM_CLASSES],
    pub fn_: [u64; NUM_CLASSES],
}

impl ParsingCounts {
    /// Add one image: predicted and ground-truth class ids, same length.
    pub fn add(&mut self, pred: &[u8], gt: &[u8]) -> Result<(), MetricError> {
        same_len("parsing prediction vs ground truth", gt.len(), pred.len())?;
        for (&p, &g) in pred.iter().zip(gt) {
            if p as usize >= NUM_CLASSES {
                return Err(MetricError::Class { what: "predicted mask", id: p });
            }
            if g as usize >= NUM_CLASSES {
                return Err(MetricError::Class { what: "ground-truth mask", id: g });
            }
            if p == g {
                self.tp[p as usize] += 1;
            } else {
                self.fp[p as usize] += 1;
                self.fn_[g as usize] += 1;
            }
        }
        Ok(())
    }

    /// F1 = 2TP / (2TP + FP + FN); `None` when the class is in neither prediction nor ground
    /// truth anywhere in the set (0/0).
    pub fn f1(&self, class: usize) -> Option<f64> {
        let den = 2 * self.tp[class] + self.fp[class] + self.fn_[class];
        (den > 0).then(|| 2.0 * self.tp[class] as f64 / den as f64)
    }

    /// Mean F1 over `classes`, leaving out those absent from the whole set; `None` if all are.
    pub fn mean_f1(&self, classes: impl IntoIterator<Item = usize>) -> Option<f64> {
        let f1s: Vec<f64> = classes.into_iter().filter_map(|c| self.f1(c)).collect();
        (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64)
    }

    /// The papers' mean: the 10 foreground classes (background excluded).
    pub fn mean_f1_fg(&self) -> Option<f64> {
        self.mean_f1(1..NUM_CLASSES)
    }

    /// All 11 classes, background included.
    pub fn mean_f1_all(&self) -> Option<f64> {
        self.mean_f1(0..NUM_CLASSES)
    }
}

/// Per-pixel argmax of class logits laid out [classes, pixels] (one image of the [N, 11, H, W]
/// output). Ties go to the lowest class, as `torch.argmax` does on the CPU.
pub fn argmax_classes(logits: &[f32], classes: usize, pixels: usize) -> Result<Vec<u8>, MetricError> {
    same_len("parsing logits", classes * pixels, logits.len())?;
    let mut best = vec![0u8; pixels];
    let mut best_v = logits[..pixels].to_vec();
    for c in 1..classes {
        for (i, &v) in logits[c * pixels..(c + 1) * pixels].iter().enumerate() {
            if v > best_v[i] {
                best_v[i] = v;
                best[i] = c as u8;
            }
        }
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------
// Landmarks

/// A model coordinate in [-1, 1] to crop pixels: the inverse of `n = (2p + 1) / 224 - 1`.
pub fn to_crop_pixels(n: f32) -> f64 {
    ((n as f64 + 1.0) * CROP_SIZE - 1.0) / 2.0
}

/// One row of the landmark head ([136] = 68 (x, y) in [-1, 1]) as crop-pixel points.
pub fn landmarks_from_output(row: &[f32]) -> Vec<[f64; 2]> {
    row.as_chunks::<2>().0.iter().map(|&[x, y]| [to_crop_pixels(x), to_crop_pixels(y)]).collect()
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// NME of one image: the mean point-to-point distance over the 68 points divided by the
/// ground truth's outer-eye-corner distance (points 36 and 45). A fraction (x100 for percent).
pub fn nme_interocular(pred: &[[f64; 2]], gt: &[[f64; 2]]) -> Result<f64, MetricError> {
    same_len("landmark points", 68, gt.len())?;
    same_len("predicted landmark points", gt.len(), pred.len())?;
    let iod = dist(gt[LEFT_EYE_OUTER], gt[RIGHT_EYE_OUTER]);
    if iod <= 0.0 || !iod.is_finite() {
        return Err(MetricError::ZeroInterocular);
    }
    let sum: f64 = pred.iter().zip(gt).map(|(&p, &g)| dist(p, g)).sum();
    Ok(sum / gt.len() as f64 / iod)
}

/// The cumulative-error-distribution summary of per-image errors at a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ced {
    /// Fraction of images whose error is above the threshold (strictly).
    pub failure_rate: f64,
    /// Area under CED(x) = #{e <= x} / n from 0 to the threshold, divided by the threshold.
    pub auc: f64,
}

/// Failure rate and AUC at `threshold`. The AUC is exact, not sampled on a grid: CED is a step
/// function, and `∫0^t [e_i <= x] dx = max(0, t - e_i)`, so `AUC = mean_i max(0, t - e_i) / t`.
/// `None` for no images.
pub fn ced(errors: &[f64], threshold: f64) -> Option<Ced> {
    if errors.is_empty() {
        return None;
    }
    let n = errors.len() as f64;
    let failures = errors.iter().filter(|&&e| e > threshold).count() as f64;
    let area: f64 = errors.iter().map(|&e| (threshold - e).max(0.0)).sum();
    Some(Ced { failure_rate: failures / n, auc: area / n / threshold })
}

/// The mean of a set of shapes, point by point (the trivial "mean shape" predictor).
pub fn mean_shape(shapes: &[Vec<[f64; 2]>]) -> Option<Vec<[f64; 2]>> {
    let first = shapes.first()?;
    let mut mean = vec![[0.0; 2]; first.len()];
    for s in shapes {
        for (m, p) in mean.iter_mut().zip(s) {
            m[0] += p[0];
            m[1] += p[1];
        }
    }
    let n = shapes.len() as f64;
    Some(mean.into_iter().map(|m| [m[0] / n, m[1] / n]).collect())
}

// ---------------------------------------------------------------------------------------------
// Head pose

/// Mean absolute errors in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PoseMae {
    pub pitch: f64,
    pub yaw: f64,
    pub roll: f64,
    /// (pitch + yaw + roll) / 3, the papers' "MAE".
    pub mean: f64,
}

/// Whether a ground-truth pose (degrees) is kept by the AFLW2000 protocol: all |angle| <= 99.
pub fn pose_in_range(gt_deg: [f64; 3]) -> bool {
    gt_deg.iter().all(|a| a.abs() <= POSE_LIMIT_DEG)
}

/// MAE of (pitch, yaw, roll) in degrees over pairs; the caller drops out-of-range samples first
/// ([`pose_in_range`]). `None` for no samples.
pub fn pose_mae(pred_deg: &[[f64; 3]], gt_deg: &[[f64; 3]]) -> Result<Option<PoseMae>, MetricError> {
    same_len("pose predictions vs ground truth", gt_deg.len(), pred_deg.len())?;
    if gt_deg.is_empty() {
        return Ok(None);
    }
    let mut sum = [0.0; 3];
    for (p, g) in pred_deg.iter().zip(gt_deg) {
        for d in 0..3 {
            sum[d] += (p[d] - g[d]).abs();
        }
    }
    let n = gt_deg.len() as f64;
    let [pitch, yaw, roll] = sum.map(|s| s / n);
    Ok(Some(PoseMae { pitch, yaw, roll, mean: (pitch + yaw + roll) / 3.0 }))
}

/// The mean of the ground-truth poses (the trivial "mean pose" predictor).
pub fn mean_pose(gt_deg: &[[f64; 3]]) -> Option<[f64; 3]> {
    if gt_deg.is_empty() {
        return None;
    }
    let n = gt_deg.len() as f64;
    let mut m = [0.0; 3];
    for g in gt_deg {
        for d in 0..3 {
            m[d] += g[d] / n;
        }
    }
    Some(m)
}

// ---------------------------------------------------------------------------------------------
// Classification: attributes, age, gender, race

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Fraction of equal labels; `None` for no samples.
pub fn accuracy(pred: &[usize], gt: &[usize]) -> Result<Option<f64>, MetricError> {
    same_len("predicted vs ground-truth labels", gt.len(), pred.len())?;
    if gt.is_empty() {
        return Ok(None);
    }
    let hits = pred.iter().zip(gt).filter(|(p, g)| p == g).count();
    Ok(Some(hits as f64 / gt.len() as f64))
}

/// Accuracy of always answering the most frequent ground-truth label; `None` for no samples.
pub fn majority_accuracy(gt: &[usize]) -> Option<f64> {
    let mut counts = std::collections::HashMap::new();
    for &g in gt {
        *counts.entry(g).or_insert(0usize) += 1;
    }
    let top = counts.into_values().max()?;
    Some(top as f64 / gt.len() as f64)
}

/// Per-attribute accuracy of logits against 0/1 labels, rows of `k` (logit > 0 = present).
/// `None` for no rows.
pub fn attribute_accuracy(logits: &[f32], gt: &[u8], k: usize) -> Result<Option<Vec<f64>>, MetricError> {
    same_len("attribute logits vs labels", gt.len(), logits.len())?;
    if k == 0 || !gt.len().is_multiple_of(k) {
        return Err(MetricError::Length { what: "attribute labels (rows)", expected: k, got: gt.len() });
    }
    let rows = gt.len() / k;
    if rows == 0 {
        return Ok(None);
    }
    let mut hits = vec![0usize; k];
    for (l, g) in logits.chunks_exact(k).zip(gt.chunks_exact(k)) {
        for a in 0..k {
            if (l[a] > 0.0) == (g[a] != 0) {
                hits[a] += 1;
            }
        }
    }
    Ok(Some(hits.into_iter().map(|h| h as f64 / rows as f64).collect()))
}

// ---------------------------------------------------------------------------------------------
// Visibility

/// Recall at a minimum precision, over scored binary decisions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RecallAtPrecision {
    /// The largest recall whose precision reaches the minimum; 0 when none does.
    pub recall: f64,
    /// The precision at that threshold (0 when not reached).
    pub precision: f64,
    /// Decide "positive" for score >= threshold; `None` when not reached.
    pub threshold: Option<f64>,
    /// Whether any threshold reached the minimum precision.
    pub reached: bool,
    pub positives: usize,
    pub total: usize,
}

/// Sweep every threshold (each distinct score, highest first): points with equal scores are
/// always on the same side, so a tie enters as one block. Keep the largest recall whose
/// precision is >= `min_precision`. With no positives recall is undefined: not reached.
pub fn recall_at_precision(
    scores: &[f64],
    positive: &[bool],
    min_precision: f64,
) -> Result<RecallAtPrecision, MetricError> {
    same_len("visibility scores vs labels", positive.len(), scores.len())?;
    let positives = positive.iter().filter(|&&p| p).count();
    let mut best = RecallAtPrecision {
        recall: 0.0,
        precision: 0.0,
        threshold: None,
        reached: false,
        positives,
        total: scores.len(),
    };
    if positives == 0 {
        return Ok(best);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut i) = (0usize, 0usize, 0usize);
    while i < order.len() {
        let s = scores[order[i]];
        // The whole block of equal scores crosses the threshold together.
        while i < order.len() && scores[order[i]] == s {
            if positive[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / positives as f64;
        if precision >= min_precision && (!best.reached || recall > best.recall) {
            best = RecallAtPrecision { recall, precision, threshold: Some(s), reached: true, ..best };
        }
    }
    Ok(best)
}

pub fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
