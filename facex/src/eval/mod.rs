//! Evaluation with the paper's metrics: [`metrics`] (pure functions on slices) and
//! [`evaluate`] (a model over one split of a dataset, to an [`EvalReport`]).
//!
//! Each record is loaded with the inference crop (`Record::load`), batched, run through the
//! model without building a graph, and each sample's outputs are scored against its `Target`'s
//! task only. Records that fail to load or to score are counted and named, never fatal.

mod accumulate;
pub mod metrics;
mod report;

pub use accumulate::{Accumulator, HeadRow};
pub use report::*;

use crate::engine::Engine;
use crate::model::FaceXFormer;
use autograd::{no_grad, Var};
use data::Dataset;
use rayon::prelude::*;
use std::fmt;
use tensor::Tensor;

/// How to run an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Samples per forward.
    pub batch_size: usize,
    /// Evaluate only the first `limit` records.
    pub limit: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 8, limit: None }
    }
}

#[derive(Debug)]
pub enum EvalError {
    /// Options that cannot run (a zero batch size).
    Options(String),
    /// The forward failed, or returned heads of unexpected sizes.
    Model(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Options(m) => write!(f, "evaluation options: {m}"),
            EvalError::Model(m) => write!(f, "model: {m}"),
        }
    }
}

impl std::error::Error for EvalError {}

/// The eight heads of a batch as flat f32 host vectors.
#[derive(Clone, Debug)]
pub struct HeadValues {
    pub rows: usize,
    landmarks: Vec<f32>,
    pose: Vec<f32>,
    attributes: Vec<f32>,
    visibility: Vec<f32>,
    age: Vec<f32>,
    gender: Vec<f32>,
    race: Vec<f32>,
    segmentation: Vec<f32>,
}

impl HeadValues {
    /// From heads named as in the fixtures (`out.landmarks`, ...), as `Engine::forward` returns
    /// them; each must hold `rows` equal rows.
    pub fn from_named(rows: usize, heads: &[(&str, Tensor)]) -> Result<HeadValues, EvalError> {
        let get = |name: &str| -> Result<Vec<f32>, EvalError> {
            let t = heads
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| EvalError::Model(format!("the forward returned no `{name}`")))?;
            if t.shape().first() != Some(&rows) {
                return Err(EvalError::Model(format!("`{name}` has shape {:?}, expected {rows} rows", t.shape())));
            }
            t.contiguous().to_f32_vec().map_err(|e| EvalError::Model(format!("`{name}`: {e}")))
        };
        Ok(HeadValues {
            rows,
            landmarks: get("out.landmarks")?,
            pose: get("out.pose")?,
            attributes: get("out.attributes")?,
            visibility: get("out.visibility")?,
            age: get("out.age")?,
            gender: get("out.gender")?,
            race: get("out.race")?,
            segmentation: get("out.segmentation")?,
        })
    }

    /// Sample `i`'s outputs.
    pub fn row<'a>(&'a self, i: usize) -> HeadRow<'a> {
        let rows = self.rows;
        let r = |v: &'a [f32]| -> &'a [f32] {
            let w = v.len() / rows;
            &v[i * w..(i + 1) * w]
        };
        HeadRow {
            landmarks: r(&self.landmarks),
            pose: r(&self.pose),
            attributes: r(&self.attributes),
            visibility: r(&self.visibility),
            age: r(&self.age),
            gender: r(&self.gender),
            race: r(&self.race),
            segmentation: r(&self.segmentation),
        }
    }
}

/// The CPU model's heads for a batch, without recording a graph.
pub fn forward_heads(model: &FaceXFormer, x: &Tensor) -> Result<HeadValues, EvalError> {
    let out = no_grad(|| model.forward(&Var::constant(x.clone()))).map_err(|e| EvalError::Model(e.to_string()))?;
    let heads: Vec<(&str, Tensor)> = out.heads().into_iter().map(|(n, v)| (n, v.value())).collect();
    HeadValues::from_named(x.shape()[0], &heads)
}

/// Evaluate the CPU model on one split of a dataset.
pub fn evaluate(model: &FaceXFormer, dataset: &Dataset, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    evaluate_with(dataset, opts, |x| forward_heads(model, x))
}

/// Evaluate on whatever device `engine` runs.
pub fn evaluate_engine(engine: &Engine, dataset: &Dataset, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    evaluate_with(dataset, opts, |x| {
        let heads = engine.forward(x).map_err(|e| EvalError::Model(format!("{}: {e}", engine.describe())))?;
        HeadValues::from_named(x.shape()[0], &heads)
    })
}

/// Evaluate with any forward (input [N, 3, 224, 224] -> the heads of N rows).
pub fn evaluate_with(
    dataset: &Dataset,
    opts: &EvalOptions,
    mut forward: impl FnMut(&Tensor) -> Result<HeadValues, EvalError>,
) -> Result<EvalReport, EvalError> {
    if opts.batch_size == 0 {
        return Err(EvalError::Options("batch size 0".into()));
    }
    let records = &dataset.records[..opts.limit.unwrap_or(usize::MAX).min(dataset.records.len())];
    let mut acc = Accumulator::default();
    for chunk in records.chunks(opts.batch_size) {
        // Decoding and cropping are the slow part on the CPU: in parallel.
        let loaded: Vec<_> = chunk.par_iter().map(|r| r.load()).collect();
        let mut samples = Vec::with_capacity(chunk.len());
        for (record, sample) in chunk.iter().zip(loaded) {
            match sample {
                Ok(s) => samples.push(s),
                Err(e) => acc.skip(&record.source, e.to_string()),
            }
        }
        if samples.is_empty() {
            continue;
        }
        let batch = data::Batch::collate(&samples).map_err(|e| EvalError::Model(format!("collating a batch: {e}")))?;
        let heads = forward(&batch.input)?;
        for (i, (target, source)) in batch.targets.iter().zip(&batch.sources).enumerate() {
            acc.add(&heads.row(i), target, source);
        }
    }
    Ok(acc.finish(dataset.name, &dataset.split, records.len(), dataset.bad.len()))
}

#[cfg(test)]
mod tests;
