//! Collects, sample by sample, what each metric needs (the model's row of outputs against the
//! sample's `Target`), then turns it into an [`EvalReport`].

use super::metrics::{self as m, MetricError, ParsingCounts};
use super::report::*;
use crate::analyze::{ATTRIBUTES, PARSING_CLASSES};
use data::Target;

/// The eight heads of one sample, flat f32 (the layouts of `model::Outputs`).
#[derive(Clone, Copy, Debug)]
pub struct HeadRow<'a> {
    /// [136]: 68 (x, y) in [-1, 1].
    pub landmarks: &'a [f32],
    /// [3]: pitch, yaw, roll in radians.
    pub pose: &'a [f32],
    /// [40] logits.
    pub attributes: &'a [f32],
    /// [29] logits, 1 = occluded.
    pub visibility: &'a [f32],
    pub age: &'a [f32],
    pub gender: &'a [f32],
    pub race: &'a [f32],
    /// [11, 224, 224] logits.
    pub segmentation: &'a [f32],
}

/// Everything the metrics need, gathered over a set.
#[derive(Default)]
pub struct Accumulator {
    evaluated: usize,
    skipped: Vec<Skipped>,
    parsing: ParsingCounts,
    parsing_skin: ParsingCounts,
    parsing_images: usize,
    nme: Vec<f64>,
    landmark_gt: Vec<Vec<[f64; 2]>>,
    pose_pred: Vec<[f64; 3]>,
    pose_gt: Vec<[f64; 3]>,
    pose_dropped: usize,
    attr_logits: Vec<f32>,
    attr_gt: Vec<u8>,
    agr_images: usize,
    /// (prediction, ground truth) per label; absent labels are not pushed.
    age: (Vec<usize>, Vec<usize>),
    gender: (Vec<usize>, Vec<usize>),
    race: (Vec<usize>, Vec<usize>),
    vis_images: usize,
    vis_scores: Vec<f64>,
    vis_gt: Vec<bool>,
}

impl Accumulator {
    /// A record that never reached the model (it did not load).
    pub fn skip(&mut self, source: &str, reason: String) {
        self.skipped.push(Skipped { source: source.to_string(), reason });
    }

    /// Score one sample; a sample no metric can use is recorded as skipped, with the reason.
    pub fn add(&mut self, out: &HeadRow, target: &Target, source: &str) {
        match self.try_add(out, target) {
            Ok(()) => self.evaluated += 1,
            Err(e) => self.skip(source, e.to_string()),
        }
    }

    fn try_add(&mut self, out: &HeadRow, target: &Target) -> Result<(), MetricError> {
        match target {
            Target::Parsing { mask } => {
                let pixels = mask.len();
                let pred = m::argmax_classes(out.segmentation, m::NUM_CLASSES, pixels)?;
                self.parsing.add(&pred, mask)?;
                self.parsing_skin.add(&vec![1; pixels], mask)?;
                self.parsing_images += 1;
            }
            Target::Landmarks { points } => {
                let gt: Vec<[f64; 2]> = points.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
                let nme = m::nme_interocular(&m::landmarks_from_output(out.landmarks), &gt)?;
                self.nme.push(nme);
                self.landmark_gt.push(gt);
            }
            Target::HeadPose { pitch_yaw_roll } => {
                let gt = pitch_yaw_roll.map(|a| (a as f64).to_degrees());
                if !m::pose_in_range(gt) {
                    self.pose_dropped += 1; // the protocol's drop, not a failure: still evaluated
                    return Ok(());
                }
                let pred: [f64; 3] = std::array::from_fn(|d| (out.pose[d] as f64).to_degrees());
                self.pose_pred.push(pred);
                self.pose_gt.push(gt);
            }
            Target::Attributes { values } => {
                if out.attributes.len() != values.len() {
                    return Err(MetricError::Length {
                        what: "attribute logits",
                        expected: values.len(),
                        got: out.attributes.len(),
                    });
                }
                self.attr_logits.extend_from_slice(out.attributes);
                self.attr_gt.extend_from_slice(values);
            }
            Target::AgeGenderRace { age_bin, gender, race } => {
                // A label beyond its head's classes marks "not annotated" for that sample.
                for (logits, label, acc) in [
                    (out.age, *age_bin, &mut self.age),
                    (out.gender, *gender, &mut self.gender),
                    (out.race, *race, &mut self.race),
                ] {
                    if (label as usize) < logits.len() {
                        acc.0.push(m::argmax(logits));
                        acc.1.push(label as usize);
                    }
                }
                self.agr_images += 1;
            }
            Target::Visibility { occluded, .. } => {
                if occluded.len() != out.visibility.len() {
                    return Err(MetricError::Length {
                        what: "visibility flags",
                        expected: out.visibility.len(),
                        got: occluded.len(),
                    });
                }
                self.vis_scores.extend(out.visibility.iter().map(|&l| m::sigmoid(l)));
                self.vis_gt.extend(occluded.iter().map(|&o| o != 0));
                self.vis_images += 1;
            }
        }
        Ok(())
    }

    /// The metrics and their baselines.
    pub fn finish(self, dataset: &str, split: &str, records: usize, reader_skipped: usize) -> EvalReport {
        EvalReport {
            dataset: dataset.to_string(),
            split: split.to_string(),
            records,
            evaluated: self.evaluated,
            reader_skipped,
            parsing: self.parsing_report(),
            landmarks: self.landmark_report(),
            head_pose: self.pose_report(),
            attributes: self.attribute_report(),
            age_gender_race: self.agr_report(),
            visibility: self.visibility_report(),
            skipped: self.skipped,
        }
    }

    fn parsing_report(&self) -> Option<ParsingReport> {
        (self.parsing_images > 0).then(|| ParsingReport {
            images: self.parsing_images,
            mean_f1_fg: self.parsing.mean_f1_fg(),
            mean_f1_all: self.parsing.mean_f1_all(),
            per_class: (0..m::NUM_CLASSES)
                .map(|c| ClassF1 {
                    class: PARSING_CLASSES[c],
                    f1: self.parsing.f1(c),
                    tp: self.parsing.tp[c],
                    fp: self.parsing.fp[c],
                    fn_: self.parsing.fn_[c],
                })
                .collect(),
            baseline_mean_f1_fg: self.parsing_skin.mean_f1_fg(),
        })
    }

    fn landmark_report(&self) -> Option<LandmarkReport> {
        let ced = m::ced(&self.nme, m::NME_THRESHOLD)?;
        let mean = m::mean_shape(&self.landmark_gt)?;
        // Every gt here has a nonzero inter-ocular distance (checked when it was added).
        let base: Vec<f64> = self.landmark_gt.iter().filter_map(|gt| m::nme_interocular(&mean, gt).ok()).collect();
        let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        Some(LandmarkReport {
            images: self.nme.len(),
            nme_percent: 100.0 * mean_of(&self.nme),
            failure_rate: ced.failure_rate,
            auc: ced.auc,
            baseline_nme_percent: 100.0 * mean_of(&base),
            baseline: m::ced(&base, m::NME_THRESHOLD)?,
        })
    }

    fn pose_report(&self) -> Option<PoseReport> {
        let images = self.pose_gt.len() + self.pose_dropped;
        let mean = m::mean_pose(&self.pose_gt);
        let baseline = mean.map(|mp| vec![mp; self.pose_gt.len()]);
        (images > 0).then(|| PoseReport {
            images,
            dropped_out_of_range: self.pose_dropped,
            mae_deg: m::pose_mae(&self.pose_pred, &self.pose_gt).ok().flatten(),
            baseline_mae_deg: baseline.and_then(|b| m::pose_mae(&b, &self.pose_gt).ok().flatten()),
        })
    }

    fn attribute_report(&self) -> Option<AttributeReport> {
        let k = ATTRIBUTES.len();
        let acc = m::attribute_accuracy(&self.attr_logits, &self.attr_gt, k).ok().flatten()?;
        let rows = self.attr_gt.len() / k;
        let base: Vec<f64> = (0..k)
            .map(|a| {
                let col: Vec<usize> = (0..rows).map(|r| self.attr_gt[r * k + a] as usize).collect();
                m::majority_accuracy(&col).unwrap_or(0.0)
            })
            .collect();
        Some(AttributeReport {
            images: rows,
            mean_accuracy: acc.iter().sum::<f64>() / k as f64,
            baseline_mean_accuracy: base.iter().sum::<f64>() / k as f64,
            per_attribute: (0..k)
                .map(|a| AttributeAccuracy { name: ATTRIBUTES[a], accuracy: acc[a], baseline: base[a] })
                .collect(),
        })
    }

    fn agr_report(&self) -> Option<AgeGenderRaceReport> {
        let one = |(pred, gt): &(Vec<usize>, Vec<usize>)| {
            Some(ClassAccuracy {
                samples: gt.len(),
                accuracy: m::accuracy(pred, gt).ok().flatten()?,
                baseline: m::majority_accuracy(gt)?,
            })
        };
        (self.agr_images > 0).then(|| AgeGenderRaceReport {
            images: self.agr_images,
            age: one(&self.age),
            gender: one(&self.gender),
            race: one(&self.race),
        })
    }

    fn visibility_report(&self) -> Option<VisibilityReport> {
        if self.vis_images == 0 {
            return None;
        }
        let result = m::recall_at_precision(&self.vis_scores, &self.vis_gt, m::MIN_PRECISION).ok()?;
        let constant = vec![0.5; self.vis_gt.len()];
        let baseline = m::recall_at_precision(&constant, &self.vis_gt, m::MIN_PRECISION).ok()?;
        Some(VisibilityReport { images: self.vis_images, result, baseline })
    }
}
