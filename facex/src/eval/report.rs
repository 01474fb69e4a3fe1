//! What an evaluation reports: per task, the metric beside its trivial baseline; as JSON
//! (`Serialize`), as a printed table and as flat `dataset/metric` scalars for a training log.

use super::metrics::{Ced, PoseMae, RecallAtPrecision};
use serde::Serialize;
use std::fmt::Write;

/// One split of one dataset, evaluated.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub split: String,
    /// Records considered (after `--limit`).
    pub records: usize,
    /// Samples that entered at least one metric.
    pub evaluated: usize,
    /// Records the reader skipped while parsing the annotations.
    pub reader_skipped: usize,
    /// Records that could not be loaded or scored, each with its reason.
    pub skipped: Vec<Skipped>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsing: Option<ParsingReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landmarks: Option<LandmarkReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_pose: Option<PoseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_gender_race: Option<AgeGenderRaceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<VisibilityReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

/// Dataset-level F1 (pixel counts summed over the set). `None`: the class (or every class of a
/// mean) appears in neither prediction nor ground truth anywhere in the set.
#[derive(Clone, Debug, Serialize)]
pub struct ParsingReport {
    pub images: usize,
    /// Mean over the 10 foreground classes: the number LaPa and CelebAMask-HQ papers report.
    pub mean_f1_fg: Option<f64>,
    /// Mean over all 11 classes, background included.
    pub mean_f1_all: Option<f64>,
    pub per_class: Vec<ClassF1>,
    /// "Skin everywhere": every pixel predicted as class 1.
    pub baseline_mean_f1_fg: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassF1 {
    pub class: &'static str,
    pub f1: Option<f64>,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// NME (inter-ocular, outer eye corners) in percent; failure rate and AUC at NME 0.1.
#[derive(Clone, Debug, Serialize)]
pub struct LandmarkReport {
    pub images: usize,
    pub nme_percent: f64,
    pub failure_rate: f64,
    pub auc: f64,
    /// The mean shape of the evaluated set, predicted for every image.
    pub baseline_nme_percent: f64,
    pub baseline: Ced,
}

/// MAE in degrees over the samples kept by the AFLW2000 rule (all |angle| <= 99).
#[derive(Clone, Debug, Serialize)]
pub struct PoseReport {
    pub images: usize,
    pub dropped_out_of_range: usize,
    pub mae_deg: Option<PoseMae>,
    /// The mean pose of the kept samples, predicted for every one.
    pub baseline_mae_deg: Option<PoseMae>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttributeReport {
    pub images: usize,
    pub mean_accuracy: f64,
    /// Each attribute's majority value.
    pub baseline_mean_accuracy: f64,
    pub per_attribute: Vec<AttributeAccuracy>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AttributeAccuracy {
    pub name: &'static str,
    pub accuracy: f64,
    pub baseline: f64,
}

/// Accuracy of an argmax over the samples that have the label; baseline: the majority class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassAccuracy {
    pub samples: usize,
    pub accuracy: f64,
    pub baseline: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgeGenderRaceReport {
    pub images: usize,
    pub age: Option<ClassAccuracy>,
    pub gender: Option<ClassAccuracy>,
    pub race: Option<ClassAccuracy>,
}

/// Recall of occluded points at 80% precision, over all points of all samples.
#[derive(Clone, Debug, Serialize)]
pub struct VisibilityReport {
    pub images: usize,
    pub result: RecallAtPrecision,
    /// One constant score for every point.
    pub baseline: RecallAtPrecision,
}

/// One row of the printed table and of the scalars.
struct Row {
    metric: String,
    value: Option<f64>,
    baseline: Option<f64>,
}

fn row(metric: impl Into<String>, value: Option<f64>, baseline: Option<f64>) -> Row {
    Row { metric: metric.into(), value, baseline }
}

impl EvalReport {
    /// The headline metrics with their baselines, task by task.
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        if let Some(p) = &self.parsing {
            rows.push(row("mean_f1_fg", p.mean_f1_fg, p.baseline_mean_f1_fg));
            rows.push(row("mean_f1_all", p.mean_f1_all, None));
            for c in p.per_class.iter().filter(|c| c.f1.is_some()) {
                rows.push(row(format!("f1_{}", c.class), c.f1, None));
            }
        }
        if let Some(l) = &self.landmarks {
            rows.push(row("nme_percent", Some(l.nme_percent), Some(l.baseline_nme_percent)));
            rows.push(row("failure_rate_0.1", Some(l.failure_rate), Some(l.baseline.failure_rate)));
            rows.push(row("auc_0.1", Some(l.auc), Some(l.baseline.auc)));
        }
        if let Some(p) = &self.head_pose {
            let (m, b) = (p.mae_deg, p.baseline_mae_deg);
            rows.push(row("mae_yaw_deg", m.map(|m| m.yaw), b.map(|b| b.yaw)));
            rows.push(row("mae_pitch_deg", m.map(|m| m.pitch), b.map(|b| b.pitch)));
            rows.push(row("mae_roll_deg", m.map(|m| m.roll), b.map(|b| b.roll)));
            rows.push(row("mae_mean_deg", m.map(|m| m.mean), b.map(|b| b.mean)));
        }
        if let Some(a) = &self.attributes {
            rows.push(row("attribute_accuracy", Some(a.mean_accuracy), Some(a.baseline_mean_accuracy)));
        }
        if let Some(agr) = &self.age_gender_race {
            for (name, acc) in [("age", &agr.age), ("gender", &agr.gender), ("race", &agr.race)] {
                if let Some(acc) = acc {
                    rows.push(row(format!("{name}_accuracy"), Some(acc.accuracy), Some(acc.baseline)));
                }
            }
        }
        if let Some(v) = &self.visibility {
            rows.push(row("visibility_recall_at_p80", Some(v.result.recall), Some(v.baseline.recall)));
        }
        rows
    }

    /// A printed table: metric, value, baseline.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}): {} of {} records evaluated, {} skipped, {} skipped by the reader",
            self.dataset,
            self.split,
            self.evaluated,
            self.records,
            self.skipped.len(),
            self.reader_skipped
        );
        if let Some(p) = &self.head_pose {
            if p.dropped_out_of_range > 0 {
                let _ = writeln!(s, "  head pose: {} samples beyond +-99 degrees dropped", p.dropped_out_of_range);
            }
        }
        if let Some(v) = &self.visibility {
            if !v.result.reached {
                let _ = writeln!(s, "  visibility: precision 0.8 is never reached (recall reported as 0)");
            }
        }
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "  {:<28} {:>10} {:>10}", "metric", "value", "baseline");
        for r in self.rows() {
            let _ = writeln!(s, "  {:<28} {:>10} {:>10}", r.metric, fmt(r.value), fmt(r.baseline));
        }
        s
    }

    /// The headline metrics as `dataset/metric` -> value (those that are defined).
    pub fn scalars(&self) -> Vec<(String, f64)> {
        self.rows().into_iter().filter_map(|r| r.value.map(|v| (format!("{}/{}", self.dataset, r.metric), v))).collect()
    }
}
