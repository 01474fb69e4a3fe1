//! The `facex` command. One module per subcommand; each has `Args` and `run(Args) -> ExitCode`.

mod analyze;
mod bench;
mod convert;
mod data;
mod eval;
mod forward;
mod init;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "facex",
    version,
    about = "FaceXFormer face analysis: detection, parsing, landmarks, pose, attributes, age, gender, race, visibility"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect faces in images and run the model on them: JSON, parsing masks and overlays.
    Analyze(analyze::Args),
    /// Time the model (random weights) for inference or a training step.
    Bench(bench::Args),
    /// Read a dataset in its native layout and report it; write synthetic faces.
    #[command(subcommand)]
    Data(data::Command),
    /// Evaluate weights on datasets with the paper's metrics.
    Eval(eval::Args),
    /// Convert weights (the official model.pt) to safetensors.
    Convert(convert::Args),
    /// Run the model on a preprocessed tensor file (key `input`) and write every head.
    Forward(forward::Args),
    /// Write random weights of a config (official key names).
    Init(init::Args),
    /// Train the model from a TOML config; resumable.
    Train(train::Args),
}

fn main() -> ExitCode {
    // Training frees and reallocates the same large buffers every step: keep them in the
    // process rather than faulting in fresh pages each time (see tensor::cpu::malloc).
    tensor::cpu::malloc::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Eval(args) => eval::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Init(args) => init::run(args),
        Command::Train(args) => train::run(args),
    }
}
