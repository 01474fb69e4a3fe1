//! `facex eval --weights W --dataset NAME --root DIR [--split S] ... [--json OUT]`: the paper's
//! metrics on datasets in their native layouts, each beside a trivial baseline.

use facex::checkpoint::{load_model_weights, load_weights};
use facex::engine::{parse_dtype, Engine};
use facex::eval::{evaluate_engine, EvalOptions, EvalReport};
use facex::model::{FaceXFormer, FacexConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Several datasets: repeat --dataset, with one --root each in the same order, and \
                        either no --split, one (for all) or one each. Without --split a dataset is read \
                        with `test` if its reader knows that split, else its first split.\n\
                        Datasets: lapa, celebamask_hq, 300w, wflw, 300w_lp, aflw2000, celeba, utkface, \
                        fairface, cofw.")]
pub struct Args {
    /// Weights: the official model.pt or a safetensors state dict.
    #[arg(long)]
    weights: PathBuf,
    /// Model config: `tiny`, `swin_b` or a config JSON (as `facex init` writes). Default:
    /// inferred from the weights' shapes, decoder heads from their metadata or a JSON beside them.
    #[arg(long)]
    config: Option<String>,
    /// Dataset reader name (repeatable).
    #[arg(long = "dataset", value_name = "NAME")]
    datasets: Vec<String>,
    /// Dataset root, one per --dataset, in the same order.
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// Split: none, one for every dataset, or one per --dataset.
    #[arg(long = "split", value_name = "SPLIT")]
    splits: Vec<String>,
    /// Write the reports (and the flat scalars) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Samples per forward.
    #[arg(long = "batch", default_value_t = 8)]
    batch: usize,
    /// Evaluate only the first N records of each dataset.
    #[arg(long)]
    limit: Option<usize>,
    /// Where the model runs: cpu, cuda, cuda:N, or reference (the GPU graph on CPU ops).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision: f32 or bf16 (on the CPU: bf16 products with f32 accumulation, where the CPU has AVX512-BF16).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Keep one copy of the weights: CPU inference packs each linear weight for the GEMM in
    /// every product instead of once (swin_b: ~350 MB less; batch 1 ~10% slower on a Zen 3 EPYC).
    #[arg(long)]
    low_memory: bool,
}

/// One dataset to evaluate. Other forms of `facex eval` (a training config) build these too.
struct DatasetSpec {
    name: String,
    root: PathBuf,
    split: String,
}

/// The datasets named by `--dataset/--root/--split`.
fn specs_from_flags(args: &Args) -> Result<Vec<DatasetSpec>, String> {
    let n = args.datasets.len();
    if n == 0 {
        return Err("no --dataset given".into());
    }
    if args.roots.len() != n {
        return Err(format!("{n} --dataset but {} --root: give one root per dataset, in order", args.roots.len()));
    }
    if !(args.splits.len() <= 1 || args.splits.len() == n) {
        return Err(format!("{n} --dataset but {} --split: give none, one, or one per dataset", args.splits.len()));
    }
    let mut specs = Vec::with_capacity(n);
    for (i, (name, root)) in args.datasets.iter().zip(&args.roots).enumerate() {
        let split = match args.splits.len() {
            0 => default_split(name)?,
            1 => args.splits[0].clone(),
            _ => args.splits[i].clone(),
        };
        specs.push(DatasetSpec { name: name.clone(), root: root.clone(), split });
    }
    Ok(specs)
}

fn default_split(name: &str) -> Result<String, String> {
    let (_, splits) = data::datasets::READERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let known: Vec<&str> = data::datasets::READERS.iter().map(|(n, _)| *n).collect();
        format!("unknown dataset {name:?} (known: {})", known.join(", "))
    })?;
    Ok(if splits.contains(&"test") { "test" } else { splits[0] }.to_string())
}

/// The weights, with the config named by `--config` or inferred from them.
fn load_model(weights: &Path, config: Option<&str>) -> Result<FaceXFormer, String> {
    let (sd, config) = match config {
        None => load_model_weights(weights).map_err(|e| e.to_string())?,
        Some(c) => {
            let config = match c {
                "tiny" => FacexConfig::tiny(),
                "swin_b" => FacexConfig::swin_b(),
                path => {
                    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                    FacexConfig::from_json(&text).map_err(|e| format!("{path}: {e}"))?
                }
            };
            (load_weights(weights).map_err(|e| e.to_string())?, config)
        }
    };
    FaceXFormer::from_state_dict(&config, &sd).map_err(|e| format!("{}: {e}", weights.display()))
}

fn eval(args: &Args) -> Result<(), String> {
    let specs = specs_from_flags(args)?;
    let dtype = parse_dtype(&args.dtype)?;
    if !args.weights.is_file() {
        return Err(format!("{}: weights file not found", args.weights.display()));
    }
    // Read every dataset before the model runs: a wrong root should fail in seconds, not after
    // the first dataset's evaluation.
    let mut datasets = Vec::with_capacity(specs.len());
    for s in &specs {
        let ds = data::datasets::open(&s.name, &s.root, &s.split).map_err(|e| format!("dataset {}: {e}", s.name))?;
        eprintln!("{} ({}): {} records, {} skipped by the reader", s.name, s.split, ds.records.len(), ds.bad.len());
        for bad in ds.bad.iter().take(5) {
            eprintln!("  skipped {}: {}", bad.source, bad.reason);
        }
        datasets.push(ds);
    }
    let model = load_model(&args.weights, args.config.as_deref())?;
    model.set_weight_packing(!args.low_memory);
    let engine = Engine::new(model, &args.device, dtype)?;
    let opts = EvalOptions { batch_size: args.batch, limit: args.limit };

    let mut reports: Vec<EvalReport> = Vec::with_capacity(datasets.len());
    for ds in &datasets {
        let report = evaluate_engine(&engine, ds, &opts).map_err(|e| format!("dataset {}: {e}", ds.name))?;
        for s in report.skipped.iter().take(5) {
            eprintln!("  skipped {}: {}", s.source, s.reason);
        }
        println!("{}", report.table());
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let scalars: serde_json::Map<String, serde_json::Value> =
            reports.iter().flat_map(|r| r.scalars()).map(|(k, v)| (k, serde_json::json!(v))).collect();
        let json = serde_json::json!({
            "weights": args.weights.display().to_string(),
            "device": engine.describe(),
            "reports": reports,
            "scalars": scalars,
        });
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let empty: Vec<&str> = reports.iter().filter(|r| r.evaluated == 0).map(|r| r.dataset.as_str()).collect();
    if !empty.is_empty() {
        return Err(format!("no sample could be evaluated in {}", empty.join(", ")));
    }
    Ok(())
}

pub fn run(args: Args) -> ExitCode {
    match eval(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facex eval: {e}");
            ExitCode::FAILURE
        }
    }
}
