//! The `facex` command. One module per subcommand.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "facex", version, about = "FaceXFormer face analysis: detection, parsing, landmarks, pose, attributes, age, gender, race, visibility")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    match cli.command {}
}
