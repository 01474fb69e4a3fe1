//! `facex convert IN OUT.safetensors`: the official zip/pickle checkpoint (or any weights file
//! facex reads) to safetensors, keeping the names and order. The output is written through
//! `facex::atomic` (inside `save_safetensors`): a killed run leaves no partial file under its
//! name (tested in tests/cli.rs by SIGKILLing conversions at random moments).

use facex::checkpoint::{infer_config, load_weights_and_heads, save_model_weights, save_safetensors};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Input weights: a PyTorch checkpoint (model.pt) or safetensors.
    input: PathBuf,
    /// Output safetensors file.
    output: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    // Decoder heads that the input states (its metadata or a config beside it) go into the
    // output's metadata with the rest of the config; the default of 8 is a guess, not written.
    let (sd, stated) = match load_weights_and_heads(&args.input) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("facex convert: {e}");
            return ExitCode::from(2);
        }
    };
    let config = infer_config(&sd, stated);
    let saved = match (&config, stated) {
        (Ok(config), Some(_)) => save_model_weights(&args.output, &sd, config),
        _ => save_safetensors(&args.output, &sd),
    };
    if let Err(e) = saved {
        eprintln!("facex convert: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}: {} tensors, {} values", args.output.display(), sd.len(), sd.num_elements());
    match (config, stated) {
        (Ok(config), Some(_)) => println!("FaceXFormer config (stored in its metadata): {}", json(&config)),
        (Ok(config), None) => println!("FaceXFormer config (decoder heads: the official 8): {}", json(&config)),
        (Err(e), _) => println!("not a FaceXFormer state dict ({e})"),
    }
    ExitCode::SUCCESS
}

fn json(config: &facex::model::FacexConfig) -> String {
    serde_json::to_string(config).unwrap_or_default()
}
