//! `facex convert IN OUT.safetensors`: the official zip/pickle checkpoint (or any weights file
//! facex reads) to safetensors, keeping the names and order. The output is written through
//! `facex::atomic` (inside `save_safetensors`): a killed run leaves no partial file under its
//! name (tested in tests/cli.rs by SIGKILLing conversions at random moments).

use facex::checkpoint::{decoder_heads_beside, infer_config, load_weights, save_safetensors};
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
    let sd = match load_weights(&args.input) {
        Ok(sd) => sd,
        Err(e) => {
            eprintln!("facex convert: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = save_safetensors(&args.output, &sd) {
        eprintln!("facex convert: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}: {} tensors, {} values", args.output.display(), sd.len(), sd.num_elements());
    let heads = decoder_heads_beside(&args.input).ok().flatten();
    match infer_config(&sd, heads) {
        Ok(config) => println!("FaceXFormer config: {}", serde_json::to_string(&config).unwrap_or_default()),
        Err(e) => println!("not a FaceXFormer state dict ({e})"),
    }
    ExitCode::SUCCESS
}
