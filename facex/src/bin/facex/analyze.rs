//! `facex analyze IMAGE_OR_DIR... --weights W [--out DIR] [--largest]`

use facex::analyze::Analyzer;
use facex::detect::Mtcnn;
use facex::engine::{parse_dtype, Engine};
use facex::model::FaceXFormer;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Image files or directories of images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// FaceXFormer weights: the official model.pt or a safetensors file. Without them only
    /// detection runs.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Output directory (created if needed).
    #[arg(long, default_value = "facex-out")]
    out: PathBuf,
    /// Analyse only the largest face of each image, as the official script does.
    #[arg(long)]
    largest: bool,
    /// Where the model runs: cpu, cuda, cuda:N, or reference (the GPU graph on CPU ops).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Model precision on a device: f32 or bf16 (the CPU model is f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// The images named on the command line: files as given, directories' image files sorted.
fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut images = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| format!("{}: {e}", input.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            if found.is_empty() {
                eprintln!("facex analyze: no images in directory {}", input.display());
            }
            found.sort();
            images.extend(found);
        } else if input.exists() {
            images.push(input.clone());
        } else {
            return Err(format!("{}: no such file or directory", input.display()));
        }
    }
    Ok(images)
}

fn load_model(path: &Path, device: &str, dtype: &str) -> Result<Engine, String> {
    let dtype = parse_dtype(dtype)?;
    let (sd, config) = facex::checkpoint::load_model_weights(path).map_err(|e| e.to_string())?;
    let model = FaceXFormer::from_tensors(&config, sd.iter()).map_err(|e| format!("{}: {e}", path.display()))?;
    Engine::new(model, device, dtype)
}

/// Analyse one image and write its JSON, parsing mask and overlay.
fn process(analyzer: &Analyzer, path: &Path, out: &Path) -> Result<usize, String> {
    let img = facex::preprocess::load_rgb(path).map_err(|e| e.to_string())?;
    let name = path.to_string_lossy();
    let result = analyzer.analyze(&name, &img).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let write_err = |p: &Path, e: &dyn std::fmt::Display| format!("writing {}: {e}", p.display());
    let json_path = out.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(&result).map_err(|e| write_err(&json_path, &e))?;
    std::fs::write(&json_path, json).map_err(|e| write_err(&json_path, &e))?;
    if let Some(mask) = &result.parsing {
        let p = out.join(format!("{stem}.parsing.png"));
        mask.save(&p).map_err(|e| write_err(&p, &e))?;
    }
    let p = out.join(format!("{stem}.overlay.png"));
    analyzer.overlay(&img, &result).save(&p).map_err(|e| write_err(&p, &e))?;
    Ok(result.faces.len())
}

pub fn run(args: Args) -> ExitCode {
    let images = match collect_images(&args.inputs) {
        Ok(images) if images.is_empty() => {
            eprintln!("facex analyze: no images to analyse");
            return ExitCode::from(2);
        }
        Ok(images) => images,
        Err(e) => {
            eprintln!("facex analyze: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("facex analyze: cannot create {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    let model = match &args.weights {
        Some(w) => match load_model(w, &args.device, &args.dtype) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("facex analyze: cannot load weights: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            eprintln!("facex analyze: {}", facex::analyze::WEIGHTS_HINT);
            None
        }
    };
    let detector = match Mtcnn::new_embedded() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("facex analyze: face detector: {e}");
            return ExitCode::FAILURE;
        }
    };
    let analyzer = Analyzer { detector, model, largest: args.largest };
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}").expect("valid progress template"),
    );
    let (mut failed, mut faces) = (0usize, 0usize);
    for path in &images {
        bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        match process(&analyzer, path, &args.out) {
            Ok(n) => faces += n,
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("facex analyze: skipped {e}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "facex analyze: {} images, {faces} faces, {failed} skipped; results in {}",
        images.len() - failed,
        args.out.display()
    );
    if failed == images.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
