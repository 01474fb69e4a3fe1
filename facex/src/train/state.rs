//! The training checkpoint `last.ckpt`: one safetensors file with the model's state dict
//! (`model.<key>`), AdamW's moments (`adam.m.<name>`, `adam.v.<name>`) and, in its metadata, the
//! progress (`facex.train`: step, epoch, loader position, the config used). Sampling and
//! augmentation are pure functions of (seed, epoch, index), so the position is the whole RNG state.
//! Written atomically: killing the process at any moment leaves the previous checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tensor::Tensor;

use crate::checkpoint::{load_safetensors_from_bytes, safetensors_metadata, save_safetensors_with_metadata, StateDict};
use crate::model::FaceXFormer;
use crate::optim::AdamW;

const META_KEY: &str = "facex.train";
const VERSION: u32 = 1;

/// Where a run stands: what a resumed run needs beside the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub version: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// The loader position of the next batch: epoch and batches done in it.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// The seed of sampling and augmentation (also `train.seed` in the config, where a resume checks it).
    pub seed: u64,
    /// The config the run was started with (TOML).
    pub config: String,
}

impl Progress {
    pub fn new(seed: u64, config: String) -> Progress {
        Progress { version: VERSION, step: 0, epoch: 0, batch_in_epoch: 0, seed, config }
    }
}

/// Save model, optimizer and progress to `path`, atomically.
pub fn save(path: &Path, model: &FaceXFormer, opt: &AdamW, progress: &Progress) -> Result<(), String> {
    let mut sd = StateDict::new();
    for (k, t) in model.state_dict().iter() {
        sd.insert(format!("model.{k}"), t.clone());
    }
    for (name, m, v) in opt.moments(&model.named_parameters()) {
        let shape = [m.len()];
        sd.insert(format!("adam.m.{name}"), Tensor::from_slice(m, &shape).map_err(|e| e.to_string())?);
        sd.insert(format!("adam.v.{name}"), Tensor::from_slice(v, &shape).map_err(|e| e.to_string())?);
    }
    let mut meta = BTreeMap::new();
    meta.insert(META_KEY.to_string(), serde_json::to_string(progress).map_err(|e| e.to_string())?);
    meta.insert("facex.adam_step".to_string(), opt.step_count().to_string());
    save_safetensors_with_metadata(path, &sd, &meta).map_err(|e| e.to_string())
}

/// A checkpoint read from disk, its progress parsed, its tensors not yet restored: a resumed run
/// checks the progress (the config it was started with) before it touches the model.
pub struct Opened<'p> {
    path: &'p Path,
    bytes: Vec<u8>,
    pub progress: Progress,
    adam_step: u64,
}

/// Read `path` and its progress.
pub fn open(path: &Path) -> Result<Opened<'_>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = safetensors_metadata(&bytes, path).map_err(|e| e.to_string())?;
    let bad = |msg: String| format!("{}: {msg}", path.display());
    let progress: Progress = meta
        .get(META_KEY)
        .ok_or_else(|| bad("not a facex training checkpoint (no facex.train metadata)".into()))
        .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("facex.train metadata: {e}"))))?;
    if progress.version != VERSION {
        return Err(bad(format!("checkpoint version {} (this facex reads {VERSION})", progress.version)));
    }
    let adam_step: u64 = meta
        .get("facex.adam_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("missing facex.adam_step metadata".into()))?;
    Ok(Opened { path, bytes, progress, adam_step })
}

impl Opened<'_> {
    /// Load the checkpoint's tensors into `model` and `opt` (the model must have its config).
    pub fn restore(self, model: &FaceXFormer, opt: &mut AdamW) -> Result<Progress, String> {
        let Opened { path, bytes, progress, adam_step } = self;
        restore(path, &bytes, adam_step, model, opt)?;
        Ok(progress)
    }
}

fn restore(path: &Path, bytes: &[u8], adam_step: u64, model: &FaceXFormer, opt: &mut AdamW) -> Result<(), String> {
    let bad = |msg: String| format!("{}: {msg}", path.display());
    let sd = load_safetensors_from_bytes(bytes, path).map_err(|e| e.to_string())?;
    let params = model.named_parameters();
    for (name, p) in &params {
        let t = sd.get(&format!("model.{name}")).ok_or_else(|| bad(format!("no tensor model.{name}")))?;
        if t.shape() != p.shape().as_slice() {
            return Err(bad(format!("model.{name} has shape {:?}, the model wants {:?}", t.shape(), p.shape())));
        }
        p.set_value(t.to_dtype(p.dtype())).map_err(|e| bad(e.to_string()))?;
    }
    let mut moments = Vec::new();
    for (name, _) in &params {
        let (m, v) = (sd.get(&format!("adam.m.{name}")), sd.get(&format!("adam.v.{name}")));
        if let (Some(m), Some(v)) = (m, v) {
            let f = |t: &Tensor| t.to_f32_vec().map_err(|e| bad(e.to_string()));
            moments.push((name.clone(), f(m)?, f(v)?));
        }
    }
    opt.restore(adam_step, &params, moments).map_err(|e| bad(e.to_string()))
}
