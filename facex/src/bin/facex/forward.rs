//! `facex forward`: run the model on a preprocessed tensor file and write every head.

use facex::checkpoint::{load_model_weights, load_safetensors, save_safetensors, StateDict};
use facex::engine::{parse_dtype, Engine};
use facex::model::FaceXFormer;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Weights: the official model.pt or a safetensors state dict (config inferred from shapes;
    /// decoder heads from their metadata or a config JSON beside them, else 8).
    #[arg(long)]
    weights: PathBuf,
    /// safetensors file with key `input` [N, 3, 224, 224] (preprocessed, normalised).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write: out.landmarks, out.pose, ..., out.segmentation.
    #[arg(long)]
    output: PathBuf,
    /// Where the model runs: cpu, cuda, cuda:N, or reference (the GPU graph on CPU ops).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision: f32 or bf16 (on the CPU: bf16 products with f32 accumulation, where the CPU has AVX512-BF16). Outputs are f32.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Keep one copy of the weights: CPU inference packs each linear weight for the GEMM in
    /// every product instead of once (swin_b: ~350 MB less; batch 1 ~10% slower on a Zen 3 EPYC).
    #[arg(long)]
    low_memory: bool,
}

fn forward(args: &Args) -> Result<(), String> {
    let dtype = parse_dtype(&args.dtype)?;
    let (sd, config) = load_model_weights(&args.weights).map_err(|e| e.to_string())?;
    let model = FaceXFormer::from_state_dict(&config, &sd).map_err(|e| format!("{}: {e}", args.weights.display()))?;
    model.set_weight_packing(!args.low_memory);
    let engine = Engine::new(model, &args.device, dtype)?;
    let inputs = load_safetensors(&args.input).map_err(|e| e.to_string())?;
    let x = inputs.get("input").ok_or_else(|| format!("{}: no tensor named `input`", args.input.display()))?;
    let out = engine.forward(x).map_err(|e| format!("{} on {}: {e}", args.input.display(), engine.describe()))?;
    let sd: StateDict = out.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    save_safetensors(&args.output, &sd).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> ExitCode {
    match forward(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facex forward: {e}");
            ExitCode::FAILURE
        }
    }
}
