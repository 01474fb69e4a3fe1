//! `facex forward`: run the model on a preprocessed tensor file and write every head.

use autograd::{no_grad, Var};
use facex::checkpoint::{load_model_weights, load_safetensors, save_safetensors, StateDict};
use facex::model::FaceXFormer;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Weights: the official model.pt or a safetensors state dict (config inferred from shapes;
    /// decoder heads from a config JSON beside the weights, else 8).
    #[arg(long)]
    weights: PathBuf,
    /// safetensors file with key `input` [N, 3, 224, 224] (preprocessed, normalised).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write: out.landmarks, out.pose, ..., out.segmentation.
    #[arg(long)]
    output: PathBuf,
    /// Only `cpu` is supported here.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn forward(args: &Args) -> Result<(), String> {
    if args.device != "cpu" {
        return Err(format!("device `{}` is not supported by `facex forward` (use cpu)", args.device));
    }
    let (sd, config) = load_model_weights(&args.weights).map_err(|e| e.to_string())?;
    let model = FaceXFormer::from_state_dict(&config, &sd).map_err(|e| format!("{}: {e}", args.weights.display()))?;
    let inputs = load_safetensors(&args.input).map_err(|e| e.to_string())?;
    let x = inputs.get("input").ok_or_else(|| format!("{}: no tensor named `input`", args.input.display()))?;
    let out = no_grad(|| model.forward(&Var::constant(x.clone()))).map_err(|e| e.to_string())?;
    let sd: StateDict = out.heads().into_iter().map(|(k, v)| (k.to_string(), v.value().contiguous())).collect();
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
