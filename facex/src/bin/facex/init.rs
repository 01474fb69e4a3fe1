//! `facex init`: write random weights of a config with the official key names, so the full
//! model can be run and benchmarked without the download. The weights carry their config in
//! their metadata (decoder heads cannot be inferred from shapes); it is also written beside them
//! (`<stem>.json`), for `--config` and for readers of other tools.

use facex::checkpoint::save_model_weights;
use facex::model::{FaceXFormer, FacexConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// tiny or swin_b (the official size).
    #[arg(long, default_value = "swin_b")]
    config: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output safetensors file.
    output: PathBuf,
}

fn init(args: &Args) -> Result<(), String> {
    let config = match args.config.as_str() {
        "tiny" => FacexConfig::tiny(),
        "swin_b" => FacexConfig::swin_b(),
        other => return Err(format!("unknown config `{other}` (tiny or swin_b)")),
    };
    let model = FaceXFormer::new_random(&config, args.seed).map_err(|e| e.to_string())?;
    save_model_weights(&args.output, &model.state_dict(), &config).map_err(|e| e.to_string())?;
    let side = args.output.with_extension("json");
    let json = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(&side, json).map_err(|e| format!("{}: {e}", side.display()))
}

pub fn run(args: Args) -> ExitCode {
    match init(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facex init: {e}");
            ExitCode::FAILURE
        }
    }
}
