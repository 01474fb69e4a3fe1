//! The training config (TOML). Every field has the paper's default; an unknown key, a missing
//! dataset root or an impossible value is an error naming it before any work starts.
//!
//! ```toml
//! [model]
//! config = "swin_b"              # or "tiny"
//! init = "imagenet"              # "scratch", "imagenet" (torchvision swin_b .pth) or "finetune" (model.pt)
//! weights = "swin_b-68c6b09e.pth"
//!
//! [optimizer]                    # AdamW, lr x gamma at each milestone epoch
//! lr = 1e-4
//! weight_decay = 1e-5
//! epochs = 12
//! milestones = [6, 10]
//!
//! [[dataset]]
//! reader = "lapa"
//! root = "/data/LaPa"            # relative paths are relative to the config file
//! split = "train"
//! weight = 1.0
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use data::augment::AugmentConfig;
use serde::{Deserialize, Serialize};

use crate::model::FacexConfig;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub optimizer: OptimizerSection,
    pub train: RunSection,
    /// Weight of each task loss in the total (names as in `train::LOSSES`); missing = 1.
    pub loss_weights: BTreeMap<String, f64>,
    pub augment: AugmentConfig,
    #[serde(rename = "dataset")]
    pub datasets: Vec<DatasetEntry>,
    /// Validation sets, evaluated every `train.eval_every` steps.
    #[serde(rename = "eval")]
    pub evals: Vec<DatasetEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// "swin_b" (the official model) or "tiny".
    pub config: String,
    /// "scratch", "imagenet" (torchvision's swin_b state dict onto the backbone) or "finetune"
    /// (a FaceXFormer checkpoint: the official model.pt or our safetensors).
    pub init: String,
    /// The file `init` reads (not used from scratch).
    pub weights: Option<PathBuf>,
    /// Seed of the random initialisation.
    pub seed: u64,
    /// Parameter-name prefixes that keep their random initialisation when `weights` are loaded
    /// (fine-tuning with fresh heads, torch's re-initialised modules): `["face_decoder"]`.
    pub reinit: Vec<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection { config: "swin_b".into(), init: "scratch".into(), weights: None, seed: 0, reinit: Vec::new() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSection {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub epochs: u64,
    /// Epochs at which the learning rate is multiplied by `gamma`.
    pub milestones: Vec<u64>,
    pub gamma: f64,
    /// Linear warm-up over this many steps (0: none).
    pub warmup_steps: u64,
    /// Global-norm gradient clipping (0: off).
    pub clip_grad_norm: f64,
    /// Learning-rate multiplier by parameter-name prefix (torch's parameter groups): the longest
    /// matching prefix wins, 1 where none matches, 0 freezes. Each prefix must name a parameter.
    pub lr_scale: BTreeMap<String, f64>,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        OptimizerSection {
            lr: 1e-4,
            weight_decay: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            epochs: 12,
            milestones: vec![6, 10],
            gamma: 0.1,
            warmup_steps: 0,
            clip_grad_norm: 0.0,
            lr_scale: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// The paper's total batch (8 GPUs x 48).
    pub batch_size: usize,
    /// Seed of sampling and augmentation.
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
    /// Only "cpu" trains today (the GPU path is inference only).
    pub device: String,
    /// Draws per epoch (0: the loader's rule, every dataset as often as the largest).
    pub epoch_size: usize,
    /// Batches decoded ahead of the step.
    pub prefetch: usize,
    pub log_every: u64,
    /// Evaluate on the `[[eval]]` sets every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Samples per eval set (0: all).
    pub eval_limit: usize,
    pub checkpoint_every: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            batch_size: 384,
            seed: 0,
            threads: 0,
            device: "cpu".into(),
            epoch_size: 0,
            prefetch: 2,
            log_every: 10,
            eval_every: 1000,
            eval_limit: 0,
            checkpoint_every: 500,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// A reader of `data::datasets::READERS` (lapa, celebamask_hq, 300w, ...).
    pub reader: String,
    pub root: PathBuf,
    pub split: String,
    #[serde(default = "one")]
    pub weight: f64,
}

/// The dotted keys (`train.batch_size`, `dataset[1].weight`) where `a` and `b` differ, with both
/// values; arrays of different lengths are one difference.
fn diff_values(key: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    use toml::Value::{Array, Table};
    let join = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
    match (a, b) {
        (Table(x), Table(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff_values(&join(k), p, q, out),
                    (p, q) => out.push(format!("{}: {} -> {}", join(k), show(p), show(q))),
                }
            }
        }
        (Array(x), Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{key}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(format!("{key}: {} -> {}", show(Some(a)), show(Some(b)))),
        _ => {}
    }
}

fn show(v: Option<&toml::Value>) -> String {
    v.map_or("(absent)".to_string(), |v| v.to_string())
}

fn one() -> f64 {
    1.0
}

/// The first of `prefixes` that starts none of `names` (a config key that names nothing).
pub(crate) fn prefix_of_no_name<'a>(
    prefixes: impl IntoIterator<Item = &'a String>,
    names: &[String],
) -> Option<&'a String> {
    prefixes.into_iter().find(|p| !names.iter().any(|n| n.starts_with(p.as_str())))
}

impl TrainConfig {
    /// Parse a config file; dataset roots and weights are resolved relative to its folder.
    pub fn from_file(path: &Path) -> Result<TrainConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg = TrainConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for d in cfg.datasets.iter_mut().chain(cfg.evals.iter_mut()) {
            resolve(&mut d.root);
        }
        if let Some(w) = cfg.model.weights.as_mut() {
            resolve(w);
        }
        Ok(cfg)
    }

    /// Parse and check the values (not the files: see [`TrainConfig::check_files`]).
    pub fn from_toml(text: &str) -> Result<TrainConfig, String> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.check_values()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises")
    }

    /// Where `self` differs from `saved` (the config a checkpoint was written with, as
    /// [`TrainConfig::to_toml`] wrote it) in anything that changes what a resumed run computes, as
    /// `key: saved -> now` lines. Free to change: where and how the run reports and checks
    /// (threads, device, prefetch, log, evaluation and checkpoint intervals, the eval sets) and
    /// where files live (dataset roots, the initial weights' path); a different batch size,
    /// schedule, dataset, weight or augmentation would continue another run than the one saved.
    pub fn resume_differences(&self, saved: &str) -> Result<Vec<String>, String> {
        let mut then: TrainConfig = toml::from_str(saved).map_err(|e| format!("the checkpoint's config: {e}"))?;
        let (t, now) = (&mut then.train, &self.train);
        (t.threads, t.device, t.prefetch) = (now.threads, now.device.clone(), now.prefetch);
        (t.log_every, t.eval_every, t.eval_limit, t.checkpoint_every) =
            (now.log_every, now.eval_every, now.eval_limit, now.checkpoint_every);
        then.evals = self.evals.clone();
        then.model.weights = self.model.weights.clone();
        if then.datasets.len() == self.datasets.len() {
            for (a, b) in then.datasets.iter_mut().zip(&self.datasets) {
                a.root = b.root.clone();
            }
        }
        let as_value = |c: &TrainConfig| toml::Value::try_from(c).expect("a TrainConfig always serialises");
        let mut out = Vec::new();
        diff_values("", &as_value(&then), &as_value(self), &mut out);
        Ok(out)
    }

    pub fn model_config(&self) -> Result<FacexConfig, String> {
        match self.model.config.as_str() {
            "swin_b" => Ok(FacexConfig::swin_b()),
            "tiny" => Ok(FacexConfig::tiny()),
            other => Err(format!("model.config: unknown config {other:?} (swin_b or tiny)")),
        }
    }

    /// The learning-rate multiplier of each named parameter (`optimizer.lr_scale`), or an error
    /// naming a prefix that matches no parameter.
    pub fn lr_scales(&self, names: &[String]) -> Result<Vec<f64>, String> {
        let table = &self.optimizer.lr_scale;
        if let Some(prefix) = prefix_of_no_name(table.keys(), names) {
            return Err(format!("optimizer.lr_scale: {prefix:?} is the prefix of no parameter of the model"));
        }
        let scale = |name: &String| {
            table
                .iter()
                .filter(|(p, _)| name.starts_with(p.as_str()))
                .max_by_key(|(p, _)| p.len())
                .map_or(1.0, |(_, s)| *s)
        };
        Ok(names.iter().map(scale).collect())
    }

    /// The weight of a task loss (1 unless the config says otherwise).
    pub fn loss_weight(&self, name: &str) -> f64 {
        self.loss_weights.get(name).copied().unwrap_or(1.0)
    }

    fn check_values(&self) -> Result<(), String> {
        self.model_config()?;
        match self.model.init.as_str() {
            "scratch" => {}
            "imagenet" | "finetune" if self.model.weights.is_some() => {}
            "imagenet" | "finetune" => return Err(format!("model.init = {:?} needs model.weights", self.model.init)),
            other => return Err(format!("model.init: unknown {other:?} (scratch, imagenet or finetune)")),
        }
        if !self.model.reinit.is_empty() && self.model.init == "scratch" {
            return Err("model.reinit needs weights to load (model.init = \"finetune\" or \"imagenet\")".into());
        }
        let o = &self.optimizer;
        let positive = [("optimizer.lr", o.lr), ("optimizer.gamma", o.gamma)];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, not {v}"));
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) || o.clip_grad_norm.is_nan() || o.clip_grad_norm < 0.0
        {
            return Err("optimizer.weight_decay and optimizer.clip_grad_norm must be >= 0".into());
        }
        for (prefix, scale) in &o.lr_scale {
            if !(scale.is_finite() && *scale >= 0.0) {
                return Err(format!("optimizer.lr_scale.{prefix:?} must be >= 0, not {scale}"));
            }
        }
        if o.epochs == 0 {
            return Err("optimizer.epochs must be at least 1".into());
        }
        if self.train.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if self.train.device != "cpu" {
            return Err(format!("train.device {:?}: training runs on the cpu today", self.train.device));
        }
        for (name, w) in &self.loss_weights {
            if !super::LOSSES.iter().any(|(n, _)| n == name) {
                let names: Vec<&str> = super::LOSSES.iter().map(|(n, _)| *n).collect();
                return Err(format!("loss_weights: unknown task loss {name:?} (known: {})", names.join(", ")));
            }
            if !(w.is_finite() && *w >= 0.0) {
                return Err(format!("loss_weights.{name} must be >= 0, not {w}"));
            }
        }
        if self.datasets.is_empty() {
            return Err("no [[dataset]] to train on".into());
        }
        for d in self.datasets.iter().chain(&self.evals) {
            if !data::datasets::READERS.iter().any(|(n, _)| *n == d.reader) {
                let names: Vec<&str> = data::datasets::READERS.iter().map(|(n, _)| *n).collect();
                return Err(format!("dataset reader {:?} is unknown (known: {})", d.reader, names.join(", ")));
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                return Err(format!("dataset {} weight must be >= 0, not {}", d.reader, d.weight));
            }
        }
        Ok(())
    }

    /// Every dataset root and weights file exists (checked before any work starts).
    pub fn check_files(&self) -> Result<(), String> {
        for d in self.datasets.iter().chain(&self.evals) {
            if !d.root.is_dir() {
                return Err(format!("dataset {} ({}): root {} not found", d.reader, d.split, d.root.display()));
            }
        }
        if let Some(w) = &self.model.weights {
            if self.model.init != "scratch" && !w.is_file() {
                return Err(format!("model.weights: {} not found", w.display()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[dataset]]\nreader = \"300w\"\nroot = \"x\"\nsplit = \"train\"\n";

    /// A resumed run may change where and how it reports, not what it computes: the changes that
    /// would make another run are each named with both values.
    #[test]
    fn resume_differences_allow_run_control_and_name_the_rest() {
        let cfg =
            TrainConfig::from_toml(&format!("{MINIMAL}[[eval]]\nreader = \"300w\"\nroot = \"y\"\nsplit = \"test\"\n"))
                .unwrap();
        let saved = cfg.to_toml();
        assert_eq!(cfg.resume_differences(&saved).unwrap(), Vec::<String>::new());
        let mut free = cfg.clone();
        (free.train.threads, free.train.log_every, free.train.checkpoint_every) = (3, 1, 7);
        free.datasets[0].root = "moved".into();
        free.model.weights = Some("w.safetensors".into());
        free.evals.clear();
        assert_eq!(free.resume_differences(&saved).unwrap(), Vec::<String>::new());
        let mut other = cfg.clone();
        (other.train.batch_size, other.optimizer.lr, other.datasets[0].weight) = (4, 2e-3, 2.0);
        let d = other.resume_differences(&saved).unwrap();
        assert_eq!(d, ["dataset[0].weight: 1.0 -> 2.0", "optimizer.lr: 0.0001 -> 0.002", "train.batch_size: 384 -> 4"]);
        let mut more = cfg.clone();
        more.datasets.push(cfg.datasets[0].clone());
        let d = more.resume_differences(&saved).unwrap();
        assert!(d.len() == 1 && d[0].starts_with("dataset: "), "{d:?}");
        assert!(cfg.resume_differences("not toml [").unwrap_err().contains("the checkpoint's config"));
    }

    #[test]
    fn defaults_are_the_papers_recipe() {
        let cfg = TrainConfig::from_toml(MINIMAL).unwrap();
        let o = &cfg.optimizer;
        assert_eq!((o.lr, o.weight_decay, o.epochs, o.gamma), (1e-4, 1e-5, 12, 0.1));
        assert_eq!(o.milestones, vec![6, 10]);
        assert_eq!(cfg.model.config, "swin_b");
        assert_eq!(cfg.datasets[0].weight, 1.0);
        assert_eq!(cfg.loss_weight("landmarks"), 1.0);
        // What is written back parses to the same config.
        let again = TrainConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(again.to_toml(), cfg.to_toml());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = TrainConfig::from_toml(&format!("[optimizer]\nlearning_rate = 1\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("learning_rate"), "{e}");
        let e = TrainConfig::from_toml(&MINIMAL.replace("300w", "imagenet1k")).unwrap_err();
        assert!(e.contains("imagenet1k"), "{e}");
        let e = TrainConfig::from_toml(&format!("[loss_weights]\nlandmark = 2.0\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("landmark"), "{e}");
        let e = TrainConfig::from_toml(&format!("[model]\ninit = \"imagenet\"\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("model.weights"), "{e}");
        let e = TrainConfig::from_toml(&format!("[model]\nreinit = [\"face_decoder\"]\n{MINIMAL}")).unwrap_err();
        assert!(e.contains("model.reinit"), "{e}");
        let e = TrainConfig::from_toml("").unwrap_err();
        assert!(e.contains("[[dataset]]"), "{e}");
    }

    #[test]
    fn lr_scale_takes_the_longest_prefix() {
        let text = format!(
            "[optimizer.lr_scale]\n\"face_decoder\" = 0.1\n\"face_decoder.landmarks\" = 2.0\n\"backbone.\" = 0\n{MINIMAL}"
        );
        let cfg = TrainConfig::from_toml(&text).unwrap();
        let names: Vec<String> =
            ["backbone.a", "face_decoder.x", "face_decoder.landmarks_head.w", "linear_fuse.weight"]
                .map(String::from)
                .into();
        assert_eq!(cfg.lr_scales(&names).unwrap(), vec![0.0, 0.1, 2.0, 1.0]);
        let e = cfg.lr_scales(&names[1..]).unwrap_err();
        assert!(e.contains("\"backbone.\"") && e.contains("no parameter"), "{e}");
        let bad = TrainConfig::from_toml(&format!("[optimizer.lr_scale]\nbackbone = -1\n{MINIMAL}")).unwrap_err();
        assert!(bad.contains("lr_scale") && bad.contains("backbone"), "{bad}");
    }

    #[test]
    fn the_shipped_configs_parse() {
        for text in [
            include_str!("../../../configs/paper.toml"),
            include_str!("../../../configs/demo-synthetic.toml"),
            include_str!("../../../configs/demo-decoder.toml"),
            include_str!("../../../configs/demo-utkface.toml"),
            include_str!("../../../configs/demo-finish.toml"),
        ] {
            let cfg = TrainConfig::from_toml(text).unwrap();
            assert!(!cfg.datasets.is_empty() && !cfg.evals.is_empty());
        }
        let paper = TrainConfig::from_toml(include_str!("../../../configs/paper.toml")).unwrap();
        assert_eq!(paper.datasets.len(), 8);
        assert_eq!((paper.optimizer.lr, paper.train.batch_size, paper.model.init.as_str()), (1e-4, 384, "imagenet"));
    }

    #[test]
    fn missing_roots_are_named_before_work_starts() {
        let dir = std::env::temp_dir().join(format!("facex-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.toml");
        std::fs::write(&path, MINIMAL.replace("\"x\"", "\"no-such-root\"")).unwrap();
        let cfg = TrainConfig::from_file(&path).unwrap();
        assert_eq!(cfg.datasets[0].root, dir.join("no-such-root"));
        let e = cfg.check_files().unwrap_err();
        assert!(e.contains("no-such-root") && e.contains("300w"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
