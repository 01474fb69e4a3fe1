//! `facex train CONFIG --out DIR [--steps N] [--resume]`: see `facex::train::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use facex::train::config::TrainConfig;
use facex::train::run::{train, RunOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The training config (TOML): datasets, model, optimizer, schedule, augmentation.
    config: PathBuf,
    /// Output folder: last.ckpt, weights.safetensors + config.json, train.toml, log.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Stop once this many steps are done in all (default: the config's epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Continue the run in --out from its last.ckpt.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> ExitCode {
    let cfg = match TrainConfig::from_file(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("facex train: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.train.threads > 0 {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(cfg.train.threads).build_global() {
            eprintln!("facex train: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint and exits 0; a second
    // one exits at once (the previous checkpoint stays intact: files are written atomically).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handler = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nfacex train: stopping after this step (press Ctrl-C again to quit at once)");
    });
    if let Err(e) = handler {
        eprintln!("facex train: cannot install the Ctrl-C handler: {e}");
    }
    let opts = RunOptions { out: args.out.clone(), steps: args.steps, resume: args.resume, progress: !args.quiet };
    match train(&cfg, &opts, &stop) {
        Ok(s) => {
            let fmt = |v: &[(String, f64)]| v.iter().map(|(n, x)| format!("{n} {x:.4}")).collect::<Vec<_>>().join(", ");
            let how = if s.interrupted { "interrupted" } else { "done" };
            println!("facex train: {how} at step {} (checkpoint in {})", s.steps_done, args.out.display());
            if !s.first_losses.is_empty() {
                println!("  first logged losses: {}", fmt(&s.first_losses));
                println!("  last logged losses:  {}", fmt(&s.last_losses));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("facex train: {e}");
            ExitCode::FAILURE
        }
    }
}
