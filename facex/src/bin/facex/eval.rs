//! `facex eval` (being written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("facex eval: not written yet");
    ExitCode::FAILURE
}
