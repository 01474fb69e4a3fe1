//! `facex data` (being written).

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Read a dataset and report its samples and bad records.
    Check,
}

pub fn run(_cmd: Command) -> ExitCode {
    eprintln!("facex data: not written yet");
    ExitCode::FAILURE
}
