//! `facex train`: the loop around [`super::task_losses`]: datasets and loader from the config, the
//! model's initialisation, AdamW with the step schedule, logging, validation, checkpoints, resume.
//!
//! The output folder holds:
//! - `last.ckpt`: weights, AdamW moments and progress (see `state`), written atomically;
//! - `weights.safetensors` + `config.json`: the weights alone, loadable by `facex analyze --weights`;
//! - `train.toml`: the config used;
//! - `log.jsonl`: one JSON object per logged step (and per evaluation).
//!
//! A run is deterministic: sampling and augmentation are pure functions of (seed, epoch, index)
//! and every op is; N steps in one run and N/2 + `--resume` + N/2 give the same bits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use autograd::{Grads, Var};
use data::loader::{Loader, LoaderConfig, Position, Source};
use data::{Dataset, Task};
use serde_json::json;
use tensor::Tensor;

use super::config::TrainConfig;
use super::state::{self, Progress};
use super::{task_losses, weighted_total, Targets};
use crate::checkpoint::{self, torchvision};
use crate::model::FaceXFormer;
use crate::optim::AdamW;

/// What the command line adds to the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Stop once this many steps are done in all (default: the config's epochs).
    pub steps: Option<u64>,
    pub resume: bool,
    /// Show a progress bar (off in tests).
    pub progress: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub steps_done: u64,
    pub interrupted: bool,
    /// Mean of each task loss over the first and the last logged window, for the report.
    pub first_losses: Vec<(String, f64)>,
    pub last_losses: Vec<(String, f64)>,
}

/// The datasets of the config, opened (their records parsed), with their bad records reported.
pub fn open_datasets(entries: &[super::config::DatasetEntry]) -> Result<Vec<(Dataset, f64)>, String> {
    let mut out = Vec::new();
    for e in entries {
        let ds = data::datasets::open(&e.reader, &e.root, &e.split)
            .map_err(|err| format!("dataset {} ({}) at {}: {err}", e.reader, e.split, e.root.display()))?;
        if !ds.bad.is_empty() {
            eprintln!(
                "{} ({}): {} bad records skipped, first: {}: {}",
                e.reader,
                e.split,
                ds.bad.len(),
                ds.bad[0].source,
                ds.bad[0].reason
            );
        }
        if ds.records.is_empty() {
            return Err(format!("dataset {} ({}) at {} has no usable record", e.reader, e.split, e.root.display()));
        }
        out.push((ds, e.weight));
    }
    Ok(out)
}

/// The model of the config, initialised as `model.init` says.
pub fn build_model(cfg: &TrainConfig) -> Result<FaceXFormer, String> {
    let config = cfg.model_config()?;
    let random = || FaceXFormer::new_random(&config, cfg.model.seed).map_err(|e| e.to_string());
    let Some(path) = cfg.model.weights.as_deref() else { return random() };
    let fresh = |name: &str| cfg.model.reinit.iter().any(|p| name.starts_with(p.as_str()));
    let model = match cfg.model.init.as_str() {
        "imagenet" => {
            let model = random()?;
            let sd = checkpoint::load_pytorch(path, None).map_err(|e| e.to_string())?;
            let backbone =
                torchvision::backbone_from_torchvision(&sd, &config).map_err(|e| format!("{}: {e}", path.display()))?;
            set_parameters_except(&model, &backbone, fresh)?;
            model
        }
        "finetune" => {
            let (sd, found) = checkpoint::load_model_weights(path).map_err(|e| e.to_string())?;
            if found != config {
                return Err(format!(
                    "{}: its config {found:?} is not model.config {:?}",
                    path.display(),
                    cfg.model.config
                ));
            }
            // The whole state dict, buffers included: the decoder's positional encoding is
            // computed from the `pe_layer` buffer, which a parameters-only copy would leave at
            // the random model's (the fine-tuned model would then read positions wrongly).
            let loaded = FaceXFormer::from_state_dict(&config, &sd).map_err(|e| format!("{}: {e}", path.display()))?;
            if !cfg.model.reinit.is_empty() {
                let fresh_values = checkpoint::StateDict::from_iter(
                    random()?.named_parameters().into_iter().filter(|(n, _)| fresh(n)).map(|(n, p)| (n, p.value())),
                );
                set_parameters(&loaded, &fresh_values)?;
            }
            loaded
        }
        _ => random()?,
    };
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    if let Some(prefix) = super::config::prefix_of_no_name(&cfg.model.reinit, &names) {
        return Err(format!("model.reinit: {prefix:?} is the prefix of no parameter of the model"));
    }
    Ok(model)
}

/// Overwrite the model's parameters that `sd` names (shapes must match).
pub fn set_parameters(model: &FaceXFormer, sd: &checkpoint::StateDict) -> Result<usize, String> {
    set_parameters_except(model, sd, |_| false)
}

/// [`set_parameters`], leaving the parameters that `skip` names as they are.
fn set_parameters_except(
    model: &FaceXFormer,
    sd: &checkpoint::StateDict,
    skip: impl Fn(&str) -> bool,
) -> Result<usize, String> {
    let mut n = 0;
    for (name, p) in model.named_parameters() {
        if skip(&name) {
            continue;
        }
        if let Some(t) = sd.get(&name) {
            if t.shape() != p.shape().as_slice() {
                return Err(format!("{name}: shape {:?}, the model wants {:?}", t.shape(), p.shape()));
            }
            p.set_value(t.to_dtype(p.dtype())).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    Ok(n)
}

/// The learning rate of `step` (0-based) in `epoch`: base x gamma^(milestones passed) x warm-up.
pub fn learning_rate(cfg: &TrainConfig, step: u64, epoch: u64) -> f64 {
    let o = &cfg.optimizer;
    let passed = o.milestones.iter().filter(|&&m| epoch >= m).count() as i32;
    let warm = if o.warmup_steps > 0 { ((step + 1) as f64 / o.warmup_steps as f64).min(1.0) } else { 1.0 };
    o.lr * o.gamma.powi(passed) * warm
}

/// The global L2 norm of the gradients, and the first parameter whose gradient is not finite
/// (`optim::squared_norms`: parameters in parallel, the same bits as one loop).
fn grad_norm(params: &[(String, Var)], grads: &Grads) -> Result<(f64, Option<String>), String> {
    let (names, present): (Vec<&str>, Vec<&Tensor>) =
        params.iter().filter_map(|(name, p)| grads.get(p).map(|g| (name.as_str(), g))).unzip();
    let sums = crate::optim::squared_norms(&present).map_err(|e| e.to_string())?;
    let mut total = 0.0f64;
    for (name, s) in names.into_iter().zip(sums) {
        if !s.is_finite() {
            return Ok((f64::NAN, Some(name.to_string())));
        }
        total += s;
    }
    Ok((total.sqrt(), None))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// The validation sets, evaluated: one JSON object of `dataset/metric` -> value.
fn evaluate_all(model: &FaceXFormer, sets: &[(Dataset, f64)], cfg: &TrainConfig) -> Result<serde_json::Value, String> {
    let mut all = serde_json::Map::new();
    let opts = crate::eval::EvalOptions {
        batch_size: cfg.train.batch_size.clamp(1, 16),
        limit: (cfg.train.eval_limit > 0).then_some(cfg.train.eval_limit),
    };
    let reports: Result<Vec<_>, _> = sets.iter().map(|(ds, _)| crate::eval::evaluate(model, ds, &opts)).collect();
    // The next step replaces every weight: the copies packed for the evaluation would only
    // hold memory until the next one.
    model.release_packed_weights();
    for report in reports.map_err(|e| e.to_string())? {
        for (k, v) in report.scalars() {
            all.insert(k, json!(v));
        }
    }
    Ok(serde_json::Value::Object(all))
}

/// Keep the log lines of steps up to `step` (a resumed run rewrites what came after).
fn truncate_log(path: &Path, step: u64) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::atomic::write_bytes(path, body.as_bytes()).map_err(io_err(path))
}

/// Write the weights alone (with their model config beside them) for `facex analyze`.
fn write_weights(out: &Path, model: &FaceXFormer) -> Result<(), String> {
    checkpoint::save_model_weights(out.join("weights.safetensors"), &model.state_dict(), model.config())
        .map_err(|e| e.to_string())?;
    let cfg = serde_json::to_string_pretty(model.config()).map_err(|e| e.to_string())?;
    let path = out.join("config.json");
    crate::atomic::write_bytes(&path, cfg.as_bytes()).map_err(io_err(&path))
}

/// Train as `cfg` says until the step budget is spent or `stop` is raised (then the current step
/// finishes and a checkpoint is written).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, stop: &AtomicBool) -> Result<Summary, String> {
    cfg.check_files()?;
    let ckpt = opts.out.join("last.ckpt");
    if ckpt.exists() && !opts.resume {
        return Err(format!("{} already holds a run: pass --resume, or choose another --out", opts.out.display()));
    }
    if opts.resume && !ckpt.exists() {
        return Err(format!("--resume: no checkpoint at {}", ckpt.display()));
    }
    let train_sets = open_datasets(&cfg.datasets)?;
    let eval_sets = open_datasets(&cfg.evals)?;
    let sources = train_sets.into_iter().map(|(dataset, weight)| Source { dataset, weight }).collect();
    let loader = Loader::new(
        sources,
        LoaderConfig {
            batch_size: cfg.train.batch_size,
            seed: cfg.train.seed,
            augment: cfg.augment.clone(),
            prefetch: cfg.train.prefetch.max(1),
            epoch_size: (cfg.train.epoch_size > 0).then_some(cfg.train.epoch_size),
        },
    )
    .map_err(|e| e.to_string())?;
    let steps_per_epoch = loader.steps_per_epoch() as u64;
    let total_steps = opts.steps.unwrap_or(cfg.optimizer.epochs * steps_per_epoch);

    let model = build_model(cfg)?;
    let o = &cfg.optimizer;
    let mut opt = AdamW::new(o.lr, o.weight_decay);
    (opt.beta1, opt.beta2, opt.eps) = (o.beta1, o.beta2, o.eps);
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let mut progress = Progress::new(cfg.train.seed, cfg.to_toml());
    let log_path = opts.out.join("log.jsonl");
    if opts.resume {
        // The config first (the seed included), the tensors only when it matches.
        let saved = state::open(&ckpt)?;
        let changed = cfg.resume_differences(&saved.progress.config)?;
        if !changed.is_empty() {
            return Err(format!(
                "--resume: the config differs from the one {} was written with, so the run would not \
                 continue as it started (restore these, or train into a new --out with init = \"finetune\"):\n  {}",
                ckpt.display(),
                changed.join("\n  ")
            ));
        }
        progress = saved.restore(&model, &mut opt)?;
        truncate_log(&log_path, progress.step)?;
    } else {
        let _ = std::fs::remove_file(&log_path);
    }
    let cfg_path = opts.out.join("train.toml");
    crate::atomic::write_bytes(&cfg_path, cfg.to_toml().as_bytes()).map_err(io_err(&cfg_path))?;
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io_err(&log_path))?;

    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(total_steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_position(progress.step);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let params = model.named_parameters();
    let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    for ((_, p), scale) in params.iter().zip(cfg.lr_scales(&names)?) {
        opt.set_lr_scale(p, scale);
        // A frozen parameter gets no gradient at all: a frozen backbone costs its forward only.
        p.set_requires_grad(scale > 0.0).map_err(|e| e.to_string())?;
    }
    let plain: Vec<Var> = params.iter().map(|(_, p)| p.clone()).collect();
    // The moments before the first step's activations (resumed ones are there already).
    opt.reserve(&plain);
    let mut window: Vec<(String, f64, usize)> = Vec::new();
    let (mut first_losses, mut last_losses) = (Vec::new(), Vec::new());
    let mut interrupted = false;
    let mut since_log = Instant::now();
    let mut samples_since_log = 0usize;
    let start = Position { epoch: progress.epoch, step: progress.batch_in_epoch };
    let mut batches = loader.iter_from(start);
    while progress.step < total_steps {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let (pos, batch) = batches.next().ok_or("the loader stopped")?;
        let batch = batch.map_err(|e| format!("step {}: {e}", progress.step))?;
        let targets = Targets::from_batch(&batch).map_err(|e| e.to_string())?;
        let lr = learning_rate(cfg, progress.step, pos.epoch);
        opt.lr = lr;

        let parsing_rows = &targets.rows[Task::Parsing.id()];
        let out = model
            .forward_parsing_rows(&Var::constant(batch.input.clone()), Some(parsing_rows))
            .map_err(|e| e.to_string())?;
        let parts = task_losses(&out, &targets).map_err(|e| e.to_string())?;
        let mut values = Vec::new();
        for (name, l) in &parts {
            let v = l.value().item().map_err(|e| e.to_string())?;
            if !v.is_finite() {
                return Err(format!(
                    "step {}: the {name} loss is {v}; stopped, nothing saved (last checkpoint: step {} at {})",
                    progress.step,
                    saved_step(&ckpt),
                    ckpt.display()
                ));
            }
            values.push((name.to_string(), v));
        }
        let total = weighted_total(&parts, |n| cfg.loss_weight(n)).map_err(|e| e.to_string())?;
        let total_value = total.value().item().map_err(|e| e.to_string())?;
        let mut grads = total.backward().map_err(|e| e.to_string())?;
        drop(out);
        let (norm, bad) = grad_norm(&params, &grads)?;
        if let Some(name) = bad {
            return Err(format!(
                "step {}: the gradient of {name} is not finite (losses {values:?}); stopped, nothing saved (last checkpoint: step {})",
                progress.step,
                saved_step(&ckpt)
            ));
        }
        if o.clip_grad_norm > 0.0 {
            // The norm is the one just computed: clip without a second pass over the gradients.
            crate::optim::clip_to_norm(&plain, &mut grads, norm, o.clip_grad_norm).map_err(|e| e.to_string())?;
        }
        opt.step(&plain, &grads).map_err(|e| e.to_string())?;

        progress.step += 1;
        let next = loader.next_position(&pos);
        (progress.epoch, progress.batch_in_epoch) = (next.epoch, next.step);
        samples_since_log += batch.targets.len();
        for (name, v) in &values {
            match window.iter_mut().find(|(n, _, _)| n == name) {
                Some(w) => {
                    w.1 += v;
                    w.2 += 1;
                }
                None => window.push((name.clone(), *v, 1)),
            }
        }
        let log_now = progress.step.is_multiple_of(cfg.train.log_every.max(1)) || progress.step == total_steps;
        if log_now {
            let secs = since_log.elapsed().as_secs_f64();
            let means: Vec<(String, f64)> = window.iter().map(|(n, s, c)| (n.clone(), s / *c as f64)).collect();
            let line = json!({
                "step": progress.step,
                "epoch": pos.epoch,
                "lr": lr,
                "losses": means.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "total": total_value,
                "grad_norm": norm,
                "samples_per_s": samples_since_log as f64 / secs.max(1e-9),
                "tasks": task_counts(&batch.tasks()),
            });
            writeln!(log, "{line}").map_err(io_err(&log_path))?;
            log.flush().map_err(io_err(&log_path))?;
            let msg: Vec<String> = means.iter().map(|(n, v)| format!("{}={v:.3}", short(n))).collect();
            bar.set_message(format!(
                "ep {} {} {:.1}/s",
                pos.epoch,
                msg.join(" "),
                samples_since_log as f64 / secs.max(1e-9)
            ));
            if first_losses.is_empty() {
                first_losses = means.clone();
            }
            last_losses = means;
            window.clear();
            since_log = Instant::now();
            samples_since_log = 0;
        }
        bar.set_position(progress.step);
        let eval_now = cfg.train.eval_every > 0 && progress.step.is_multiple_of(cfg.train.eval_every);
        if eval_now && !eval_sets.is_empty() && progress.step < total_steps {
            let scores = evaluate_all(&model, &eval_sets, cfg)?;
            writeln!(log, "{}", json!({"step": progress.step, "eval": scores})).map_err(io_err(&log_path))?;
        }
        if progress.step.is_multiple_of(cfg.train.checkpoint_every.max(1)) && progress.step < total_steps {
            state::save(&ckpt, &model, &opt, &progress)?;
        }
    }
    drop(batches);
    if stop.load(Ordering::Relaxed) {
        interrupted = true;
    }
    state::save(&ckpt, &model, &opt, &progress)?;
    write_weights(&opts.out, &model)?;
    if !interrupted && !eval_sets.is_empty() {
        let scores = evaluate_all(&model, &eval_sets, cfg)?;
        writeln!(log, "{}", json!({"step": progress.step, "eval": scores})).map_err(io_err(&log_path))?;
    }
    bar.finish_and_clear();
    let skipped = loader.skipped();
    if !skipped.is_empty() {
        eprintln!(
            "{} records failed to load and were replaced; first: {}: {}",
            skipped.len(),
            skipped[0].source,
            skipped[0].reason
        );
    }
    Ok(Summary { steps_done: progress.step, interrupted, first_losses, last_losses })
}

fn task_counts(tasks: &[Task]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for t in Task::ALL {
        let n = tasks.iter().filter(|&&x| x == t).count();
        if n > 0 {
            m.insert(t.name().into(), json!(n));
        }
    }
    serde_json::Value::Object(m)
}

fn short(name: &str) -> &str {
    match name {
        "segmentation" => "seg",
        "landmarks" => "lnd",
        "attributes" => "attr",
        "visibility" => "vis",
        other => other,
    }
}

/// The step of the checkpoint on disk, for messages ("none" when there is none).
fn saved_step(ckpt: &Path) -> String {
    std::fs::read(ckpt)
        .ok()
        .and_then(|b| checkpoint::safetensors_metadata(&b, ckpt).ok())
        .and_then(|m| m.get("facex.train").cloned())
        .and_then(|s| serde_json::from_str::<Progress>(&s).ok())
        .map_or("none".into(), |p| p.step.to_string())
}
