//! `facex analyze IMAGE_OR_DIR... --weights W [--out DIR] [--largest]`

use facex::analyze::Analyzer;
use facex::atomic::write_bytes;
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
    /// No detection: each image is one face crop, used whole (e.g. CelebA's aligned crops, or
    /// the synthetic faces, which the detector does not find).
    #[arg(long)]
    no_detect: bool,
    /// Where the model runs: cpu, cuda, cuda:N, or reference (the GPU graph on CPU ops).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision: f32 or bf16 (on the CPU: bf16 products with f32 accumulation, where the CPU has AVX512-BF16).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Keep one copy of the weights: CPU inference packs each linear weight for the GEMM in
    /// every product instead of once (swin_b: ~350 MB less; batch 1 ~10% slower on a Zen 3 EPYC).
    #[arg(long)]
    low_memory: bool,
}

/// What `collect_images` found: the images to analyse and the files of a directory it leaves
/// out, each with the reason (named on stderr and counted in the summary).
struct Inputs {
    images: Vec<PathBuf>,
    skipped: Vec<(PathBuf, String)>,
}

/// Whether a directory entry is an image the decoder reads: its extension names a format
/// compiled into this binary (`image`'s features in facex/Cargo.toml: png, jpeg, bmp, gif, webp,
/// tiff, pnm, tga, ico). Anything else is a named skip, never a silent one.
fn image_kind(path: &Path) -> Result<(), String> {
    match image::ImageFormat::from_path(path) {
        Ok(f) if f.reading_enabled() => Ok(()),
        Ok(f) => Err(format!("{f:?} images are not supported by this build")),
        Err(_) => Err("not an image file facex reads".into()),
    }
}

/// The images named on the command line: files as given (their content decides), directories'
/// image files sorted; a directory's other entries are reported as skipped.
fn collect_images(inputs: &[PathBuf]) -> Result<Inputs, String> {
    let mut found = Inputs { images: Vec::new(), skipped: Vec::new() };
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| format!("{}: {e}", input.display()))?;
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            let before = found.images.len();
            for p in paths {
                if !p.is_file() {
                    let what = if p.is_dir() { "a directory (not searched)" } else { "not a regular file" };
                    found.skipped.push((p, what.into()));
                } else {
                    match image_kind(&p) {
                        Ok(()) => found.images.push(p),
                        Err(why) => found.skipped.push((p, why)),
                    }
                }
            }
            if found.images.len() == before {
                eprintln!("facex analyze: no images in directory {}", input.display());
            }
        } else if input.exists() {
            found.images.push(input.clone());
        } else {
            return Err(format!("{}: no such file or directory", input.display()));
        }
    }
    Ok(found)
}

fn load_model(path: &Path, device: &str, dtype: &str, low_memory: bool) -> Result<Engine, String> {
    let dtype = parse_dtype(dtype)?;
    let (sd, config) = facex::checkpoint::load_model_weights(path).map_err(|e| e.to_string())?;
    let model = FaceXFormer::from_tensors(&config, sd.iter()).map_err(|e| format!("{}: {e}", path.display()))?;
    model.set_weight_packing(!low_memory);
    Engine::new(model, device, dtype)
}

/// An image encoded as PNG in memory, for `write_bytes`.
fn png_bytes<P>(img: &image::ImageBuffer<P, Vec<u8>>) -> image::ImageResult<Vec<u8>>
where
    P: image::PixelWithColorType<Subpixel = u8>,
{
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    Ok(bytes)
}

/// Analyse one image and write its JSON, parsing mask and overlay.
fn process(analyzer: &Analyzer, path: &Path, out: &Path) -> Result<usize, String> {
    let img = facex::detect::load_rgb(path).map_err(|e| e.to_string())?;
    let name = path.to_string_lossy();
    let result = analyzer.analyze(&name, &img).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let write_err = |p: &Path, e: &dyn std::fmt::Display| format!("writing {}: {e}", p.display());
    // Every file goes to a temporary name and is renamed when complete (facex::atomic), so an
    // interrupted run never leaves half a JSON or PNG where a whole one is expected.
    let json_path = out.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(&result).map_err(|e| write_err(&json_path, &e))?;
    write_bytes(&json_path, json.as_bytes()).map_err(|e| write_err(&json_path, &e))?;
    if let Some(mask) = &result.parsing {
        let p = out.join(format!("{stem}.parsing.png"));
        write_bytes(&p, &png_bytes(mask).map_err(|e| write_err(&p, &e))?).map_err(|e| write_err(&p, &e))?;
    }
    let p = out.join(format!("{stem}.overlay.png"));
    let overlay = analyzer.overlay(&img, &result);
    write_bytes(&p, &png_bytes(&overlay).map_err(|e| write_err(&p, &e))?).map_err(|e| write_err(&p, &e))?;
    Ok(result.faces.len())
}

pub fn run(args: Args) -> ExitCode {
    let (images, not_images) = match collect_images(&args.inputs) {
        Ok(found) => {
            for (p, why) in &found.skipped {
                eprintln!("facex analyze: skipped {}: {why}", p.display());
            }
            if found.images.is_empty() {
                eprintln!("facex analyze: no images to analyse");
                return ExitCode::from(2);
            }
            (found.images, found.skipped.len())
        }
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
        Some(w) => match load_model(w, &args.device, &args.dtype, args.low_memory) {
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
    let analyzer = Analyzer { detector, model, largest: args.largest, whole_image: args.no_detect };
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
        "facex analyze: {} images, {faces} faces, {} skipped ({failed} unreadable, {not_images} not images); results in {}",
        images.len() - failed,
        failed + not_images,
        args.out.display()
    );
    if failed == images.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
