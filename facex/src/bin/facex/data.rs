//! `facex data`: check a dataset in its native layout (and dump samples to look at), write
//! synthetic faces, and measure the loader's throughput.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use data::datasets::{self, BadRecord, Dataset, READERS};
use data::loader::{load_record, Loader, LoaderConfig, Position, Source};
use data::preprocess::image::Rgb;
use data::{Sample, Target};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Read a dataset, decode and crop every record, report samples per split and bad records.
    Check(CheckArgs),
    /// Write synthetic faces with known labels in every dataset's native layout.
    Synth(SynthArgs),
    /// Loader throughput (decode + crop + augment) with one thread and with all threads.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Reader name (lapa, celebamask_hq, 300w, wflw, 300w_lp, aflw2000, celeba, utkface, fairface, cofw).
    #[arg(long)]
    dataset: String,
    /// The dataset's root folder, as distributed.
    #[arg(long)]
    root: PathBuf,
    /// One split (default: every split the reader knows that exists under the root).
    #[arg(long)]
    split: Option<String>,
    /// Write the first N samples as `<i>.png` (the 224x224 crop, points drawn) and `<i>.json`.
    #[arg(long, requires = "out")]
    dump: Option<usize>,
    /// Folder for `--dump`.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct SynthArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    root: PathBuf,
    /// The split to read (default: the first that exists).
    #[arg(long)]
    split: Option<String>,
    /// Samples per timed pass.
    #[arg(long, default_value_t = 256)]
    samples: usize,
}

pub fn run(cmd: Command) -> ExitCode {
    let result = match cmd {
        Command::Check(args) => check(&args),
        Command::Synth(args) => synth(&args),
        Command::Bench(args) => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("facex data: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The splits of `args`, read; a split that is missing is an error only when it was asked for.
fn open_splits(name: &str, root: &Path, split: Option<&str>) -> Result<Vec<Dataset>, String> {
    let Some((_, known)) = READERS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = READERS.iter().map(|(n, _)| *n).collect();
        return Err(format!("unknown dataset {name:?} (known: {})", names.join(", ")));
    };
    if !root.is_dir() {
        return Err(format!("dataset root {} of {name} not found (not a folder)", root.display()));
    }
    if let Some(split) = split {
        return datasets::open(name, root, split).map(|d| vec![d]).map_err(|e| e.to_string());
    }
    let (mut read, mut failures) = (Vec::new(), Vec::new());
    for split in known.iter() {
        match datasets::open(name, root, split) {
            Ok(d) => read.push(d),
            Err(e) => failures.push(format!("{split}: {e}")),
        }
    }
    if read.is_empty() {
        return Err(format!("no split of {name} could be read under {}:\n  {}", root.display(), failures.join("\n  ")));
    }
    for f in &failures {
        eprintln!("facex data: {name} split {f} (skipped)");
    }
    Ok(read)
}

fn check(args: &CheckArgs) -> Result<(), String> {
    let splits = open_splits(&args.dataset, &args.root, args.split.as_deref())?;
    let (mut samples, mut bad_total) = (0usize, 0usize);
    for ds in &splits {
        let bad_loads = validate(ds);
        let loaded = ds.records.len() - bad_loads.len();
        let mut tasks = std::collections::BTreeMap::new();
        for r in &ds.records {
            *tasks.entry(r.task().name()).or_insert(0usize) += 1;
        }
        let tasks: Vec<String> = tasks.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!(
            "{} {}: {loaded} samples ({}), {} bad records ({} in the annotations, {} failed to load)",
            ds.name,
            ds.split,
            tasks.join(", "),
            ds.bad.len() + bad_loads.len(),
            ds.bad.len(),
            bad_loads.len()
        );
        for b in ds.bad.iter().chain(&bad_loads) {
            println!("  bad {}: {}", b.source, b.reason);
        }
        samples += loaded;
        bad_total += ds.bad.len() + bad_loads.len();
    }
    println!("total: {samples} samples, {bad_total} bad records");
    if let (Some(n), Some(out)) = (args.dump, &args.out) {
        let written = dump(&splits, n, out)?;
        println!("dumped {written} samples to {}", out.display());
    }
    Ok(())
}

/// Decode and crop every record in parallel (where truncated images and wrong masks show up).
fn validate(ds: &Dataset) -> Vec<BadRecord> {
    let bar = ProgressBar::new(ds.records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}").expect("valid progress template"),
    );
    bar.set_message(format!("{} {}", ds.name, ds.split));
    let bad: Vec<BadRecord> = ds
        .records
        .par_iter()
        .filter_map(|r| {
            let result = load_record(r);
            bar.inc(1);
            result.err().map(|e| BadRecord { source: r.source.clone(), reason: e.to_string() })
        })
        .collect();
    bar.finish_and_clear();
    bad
}

/// Write the first `n` loadable samples (in split, then record order).
fn dump(splits: &[Dataset], n: usize, out: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = 0;
    for ds in splits {
        for record in &ds.records {
            if written == n {
                return Ok(written);
            }
            let Ok(sample) = load_record(record) else { continue };
            let png = out.join(format!("{written}.png"));
            drawn(&sample).save(&png).map_err(|e| format!("{}: {e}", png.display()))?;
            let json = serde_json::json!({
                "task": sample.task().name(),
                "dataset": sample.dataset,
                "split": ds.split,
                "source": sample.source,
                "crop_box": sample.crop_box,
                "raw": sample.raw,
                "targets": sample.target.to_json(),
            });
            let path = out.join(format!("{written}.json"));
            let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// The crop with its points as 3x3 dots: green, or red where a visibility flag says occluded.
fn drawn(sample: &Sample) -> data::preprocess::RgbImage {
    let mut img = sample.image.clone();
    let (points, occluded): (&[[f32; 2]], &[u8]) = match &sample.target {
        Target::Landmarks { points } => (points, &[]),
        Target::Visibility { points, occluded } => (points, occluded),
        _ => (&[], &[]),
    };
    for (i, p) in points.iter().enumerate() {
        let colour = if occluded.get(i) == Some(&1) { Rgb([255, 0, 0]) } else { Rgb([0, 255, 0]) };
        let (cx, cy) = (p[0].round() as i64, p[1].round() as i64);
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
    img
}

fn synth(args: &SynthArgs) -> Result<(), String> {
    let sum = data::synth::write_dataset(&args.out, args.count, args.seed).map_err(|e| e.to_string())?;
    println!("{} synthetic faces (seed {}) in every layout under {}:", args.count, args.seed, args.out.display());
    println!("{:<10} {:<28} {:>6} {:>6}", "reader", "root", "train", "test");
    let rows: [(&str, &str, [usize; 2]); 8] = [
        ("lapa", "lapa", sum.lapa),
        ("300w", "300w", sum.w300),
        ("300w_lp", "300w_lp", [sum.w300lp_aflw2000[0], 0]),
        ("aflw2000", "aflw2000", [0, sum.w300lp_aflw2000[1]]),
        ("celeba", "celeba", sum.celeba),
        ("utkface", "utkface", [sum.utkface[0], 0]),
        ("utkface", "utkface_test", [0, sum.utkface[1]]),
        ("cofw", "cofw", sum.cofw),
    ];
    for (reader, dir, [train, test]) in rows {
        println!("{reader:<10} {:<28} {train:>6} {test:>6}", args.out.join(dir).display());
    }
    println!(
        "(utkface has one split, `all`: the held-out faces are a second root; check any of them with \
         `facex data check --dataset READER --root ROOT`)"
    );
    Ok(())
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let ds = open_splits(&args.dataset, &args.root, args.split.as_deref())?.swap_remove(0);
    if ds.records.is_empty() {
        return Err(format!("{} {} has no records", ds.name, ds.split));
    }
    let samples = args.samples.max(1);
    let batch = samples.min(32);
    let label = format!("{} {} ({} records)", ds.name, ds.split, ds.records.len());
    let cfg = LoaderConfig { epoch_size: Some(samples), ..LoaderConfig::new(batch, 0) };
    let loader = Loader::new(vec![Source { dataset: ds, weight: 1.0 }], cfg).map_err(|e| e.to_string())?;
    let steps = loader.steps_per_epoch();
    let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "loader bench: {label}, {} samples per pass in batches of {batch}: decode + crop + augment + normalise",
        steps * batch
    );
    println!("{:>8} {:>10} {:>10} {:>16} {:>12}", "threads", "seconds", "samples/s", "samples/s/core", "ms/batch");
    // One untimed batch first, so both passes find the files in the page cache.
    loader.batch_at(&Position::default()).map_err(|e| e.to_string())?;
    for threads in [1, all] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
        let t = Instant::now();
        pool.install(|| (0..steps as u64).try_for_each(|step| loader.batch_at(&Position { epoch: 0, step }).map(drop)))
            .map_err(|e| e.to_string())?;
        let secs = t.elapsed().as_secs_f64();
        let rate = (steps * batch) as f64 / secs;
        println!(
            "{threads:>8} {secs:>10.3} {rate:>10.1} {:>16.1} {:>12.1}",
            rate / threads as f64,
            1e3 * secs / steps as f64
        );
    }
    let skipped = loader.skipped();
    if !skipped.is_empty() {
        println!("{} records failed to load and were replaced", skipped.len());
    }
    Ok(())
}
