//! `facex train` (being written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("facex train: not written yet");
    ExitCode::FAILURE
}
