//! `facex bench`: time the model with random weights (no download needed), on the CPU (f32, or
//! `--dtype bf16`: bf16 products with f32 accumulation, each head's error against f32 printed)
//! or, with `--device cuda`, the device graph on a GPU.
//! One mode per process, so that the reported peak memory belongs to that mode alone;
//! `scripts/bench-vs-pytorch.sh` runs it beside PyTorch's official model in the same run.

use autograd::{no_grad, Var};
use facex::engine::{parse_dtype, Engine};
use facex::model::{DeviceModel, FaceXFormer, FacexConfig};
use facex::optim::AdamW;
use facex::train::{train_step, Targets};
use std::process::ExitCode;
use std::time::Instant;
use tensor::backend::Backend;
use tensor::profile::{self, Kind, Record};
use tensor::{DType, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Model size: swin_b (the official model) or tiny.
    #[arg(long, default_value = "swin_b")]
    config: String,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed repetitions after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Time a training step (forward, backward, AdamW) instead of inference.
    #[arg(long)]
    train: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu (the autograd model), cuda, cuda:N or reference (inference only off the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision: f32 or bf16 (on the CPU: bf16 products, f32 accumulation).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also print where the time goes (CPU, f32 or bf16): per model stage and per op kind, with
    /// rates as a fraction of this machine's measured peak (FMA, or with bf16 products that of
    /// the bf16 instruction they run on) and copy bandwidth.
    #[arg(long)]
    profile: bool,
    /// Keep one copy of the weights: CPU inference packs each linear weight for the GEMM in
    /// every product instead of once (swin_b: ~350 MB less; batch 1 ~10% slower on a Zen 3 EPYC).
    #[arg(long)]
    low_memory: bool,
}

/// Seconds per pass of the device graph on an input already on the device: the outputs stay
/// there (no copies back), and the device is synchronised after each pass.
fn time_device<B: Backend>(dm: &DeviceModel<B>, input: &Tensor, iters: usize) -> Result<Vec<f64>, String> {
    let be = dm.backend();
    let x = be.upload(input, dm.dtype()).map_err(|e| e.to_string())?;
    time_passes(iters, false, || {
        dm.run(&x).map_err(|e| e.to_string())?;
        be.synchronize().map_err(|e| e.to_string())
    })
}

/// Seconds of each of `iters` passes after one warm-up pass. With `profile`, `tensor::profile`
/// accounts the timed passes (not the warm-up) and is off again on return.
fn time_passes(iters: usize, profile: bool, mut pass: impl FnMut() -> Result<(), String>) -> Result<Vec<f64>, String> {
    pass()?;
    profile::enable(profile); // clears the table
    let times = (0..iters)
        .map(|_| {
            let t = Instant::now();
            pass()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect();
    profile::enable(false);
    times
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: Args) -> ExitCode {
    if let Some(t) = args.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(t).build_global() {
            eprintln!("facex bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    let config = match args.config.as_str() {
        "swin_b" => FacexConfig::swin_b(),
        "tiny" => FacexConfig::tiny(),
        other => {
            eprintln!("facex bench: unknown config {other:?} (swin_b or tiny)");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> Result<Vec<f64>, String> {
        let model = FaceXFormer::new_random(&config, 0).map_err(|e| e.to_string())?;
        model.set_weight_packing(!args.low_memory);
        let input = Tensor::randn(&[args.batch, 3, 224, 224], 1, DType::F32);
        let dtype = parse_dtype(&args.dtype)?;
        if args.device == "cpu" && dtype == DType::BF16 && !args.train {
            print_bf16_errors(&model, &input)?;
        }
        if args.device != "cpu" {
            if args.train {
                return Err("training runs on the cpu device".into());
            }
            return match Engine::new(model, &args.device, dtype)? {
                Engine::Cpu(_) => unreachable!("the cpu is handled below"),
                Engine::Reference(dm) => time_device(&dm, &input, args.iters),
                #[cfg(feature = "cuda")]
                Engine::Cuda(dm) => time_device(&dm, &input, args.iters),
            };
        }
        // The CPU engine sets the process's product precision for `dtype`.
        let model = match Engine::new(model, "cpu", dtype)? {
            Engine::Cpu(m) => m,
            _ => unreachable!("the cpu engine is Engine::Cpu"),
        };
        if args.train {
            let targets = Targets::random(args.batch, 2);
            let mut opt = AdamW::new(1e-4, 1e-5);
            // As `facex train` does: the moments exist before the warm-up step (see AdamW::reserve).
            opt.reserve(&model.parameters());
            time_passes(args.iters, args.profile, || {
                train_step(&model, &mut opt, &input, &targets).map(drop).map_err(|e| e.to_string())
            })
        } else {
            let x = Var::constant(input);
            time_passes(args.iters, args.profile, || no_grad(|| model.forward(&x)).map(drop).map_err(|e| e.to_string()))
        }
    })();
    match result {
        Ok(mut times) => {
            times.sort_by(f64::total_cmp);
            let mode = if args.train { "train" } else { "forward" };
            let median = times[times.len() / 2];
            if args.device == "cpu" {
                println!(
                    "facex {mode} batch {}: median {median:.3} s, peak RSS {:.0} MiB ({} threads, {})",
                    args.batch,
                    peak_rss_mib().unwrap_or(f64::NAN),
                    rayon::current_num_threads(),
                    facex::engine::cpu_precision()
                );
                if args.profile {
                    let total: f64 = times.iter().sum();
                    print_profile(&profile::take(), &profile::take_gemm_shapes(), total, times.len());
                }
            } else {
                println!(
                    "facex {mode} {} {} batch {}: median {:.2} ms, {:.1} images/s",
                    args.device,
                    args.dtype,
                    args.batch,
                    median * 1e3,
                    args.batch as f64 / median
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("facex bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each head's largest error at bf16 products against the same model and input in f32, relative
/// to the head's largest f32 value. Leaves the product precision at bf16.
fn print_bf16_errors(model: &FaceXFormer, input: &Tensor) -> Result<(), String> {
    use tensor::cpu::gemm::{set_matmul_precision, MatmulPrecision};
    let x = Var::constant(input.clone());
    let heads = |p: MatmulPrecision| -> Result<Vec<(&'static str, Vec<f32>)>, String> {
        set_matmul_precision(p);
        let out = no_grad(|| model.forward(&x)).map_err(|e| e.to_string())?;
        out.heads().into_iter().map(|(n, v)| Ok((n, v.value().to_vec::<f32>().map_err(|e| e.to_string())?))).collect()
    };
    let (f32s, bf16s) = (heads(MatmulPrecision::F32)?, heads(MatmulPrecision::Bf16)?);
    println!("bf16 products against f32, same weights and input ({}):", facex::engine::cpu_precision());
    println!("{:<18} {:>12} {:>12} {:>14}", "head", "max |f32|", "max error", "error / scale");
    for ((name, want), (_, got)) in f32s.iter().zip(&bf16s) {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = want.iter().zip(got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{name:<18} {scale:>12.4} {err:>12.2e} {:>14.2e}", err / scale.max(f32::MIN_POSITIVE));
    }
    Ok(())
}

/// The GEMM calls by shape, slowest first (the 15 that take the most time), with each shape's
/// rate as a fraction of `peak`, the product peak [`print_profile`] measured.
fn print_gemm_shapes(shapes: &[profile::GemmRecord], passes: usize, peak: f64) {
    let total: f64 = shapes.iter().map(|r| r.seconds).sum();
    let mut rows: Vec<&profile::GemmRecord> = shapes.iter().collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    println!(
        "\nGEMM calls by shape (A, B layout: N rows contiguous, T transposed, S strided), top 15 of {}",
        rows.len()
    );
    println!(
        "{:>6} {:>6} {:>6} {:>4} {:>8} {:>9} {:>7} {:>12} {:>8}",
        "m", "n", "k", "A,B", "calls", "ms/pass", "share", "GFLOP/s", "of peak"
    );
    for r in rows.iter().take(15) {
        let rate = 2.0 * (r.m * r.n * r.k) as f64 * r.calls as f64 / r.seconds;
        println!(
            "{:>6} {:>6} {:>6} {:>4} {:>8} {:>9.1} {:>6.1}% {:>12.1} {:>7.0}%",
            r.m,
            r.n,
            r.k,
            format!("{},{}{}", r.layout[0], r.layout[1], if r.concurrent { "*" } else { "" }),
            r.calls / passes as u64,
            1e3 * r.seconds / passes as f64,
            100.0 * r.seconds / total,
            rate / 1e9,
            100.0 * rate / peak
        );
    }
    if rows.iter().take(15).any(|r| r.concurrent) {
        println!("  * called side by side on worker threads (a conv per image): the time is each call's wall time,");
        println!("    overlapping calls counted twice, so the rate understates the product's");
    }
}

/// The profile of the timed passes, per pass: one table per stage, one per op kind, and the
/// GEMM calls by shape. "outside ops" is the pass time no op accounts for (autograd bookkeeping,
/// allocation, freeing the graph).
fn print_profile(records: &[Record], shapes: &[profile::GemmRecord], total: f64, passes: usize) {
    let (fma_one, fma_all) = profile::peak::fma_peak();
    let bandwidth = profile::peak::copy_bandwidth();
    let per = |s: f64| 1e3 * s / passes as f64;
    println!(
        "peaks measured now: FMA {:.0} GFLOP/s on {} threads ({:.0} on one), copy {:.1} GB/s",
        fma_all / 1e9,
        rayon::current_num_threads(),
        fma_one / 1e9,
        bandwidth / 1e9
    );
    // With bf16 products on bf16 pairs, the GEMMs are measured against that instruction's own
    // peak (on the f32 kernel, `Bf16OnFma`, against the FMA's).
    let isa = tensor::cpu::gemm::Isa::for_precision(tensor::cpu::gemm::matmul_precision());
    let pairs = isa.multiplies_bf16_pairs();
    let gemm_peak = if pairs { profile::peak::bf16_peak().1 } else { fma_all };
    if pairs {
        println!(
            "bf16 product peak measured now ({isa:?}): {:.0} GFLOP/s (the gemm row's \"of peak\")",
            gemm_peak / 1e9
        );
    }
    let accounted: f64 = records.iter().map(|r| r.seconds).sum();

    let mut stages: Vec<&str> = Vec::new();
    for r in records {
        if !stages.contains(&r.stage) {
            stages.push(r.stage);
        }
    }
    println!("\n{:<16} {:>10} {:>7}  top kinds", "stage", "ms/pass", "share");
    for st in &stages {
        let mut cells: Vec<&Record> = records.iter().filter(|r| r.stage == *st).collect();
        cells.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let t: f64 = cells.iter().map(|r| r.seconds).sum();
        let top: Vec<String> =
            cells.iter().take(3).map(|r| format!("{} {:.0}%", r.kind.name(), 100.0 * r.seconds / t)).collect();
        println!("{st:<16} {:>10.1} {:>6.1}%  {}", per(t), 100.0 * t / total, top.join(", "));
    }
    println!("{:<16} {:>10.1} {:>6.1}%", "outside ops", per(total - accounted), 100.0 * (total - accounted) / total);

    println!("\n{:<12} {:>10} {:>7} {:>8} {:>14} {:>8}", "op kind", "ms/pass", "share", "calls", "rate", "of peak");
    for kind in Kind::ALL {
        let cells: Vec<&Record> = records.iter().filter(|r| r.kind == kind).collect();
        if cells.is_empty() {
            continue;
        }
        let t: f64 = cells.iter().map(|r| r.seconds).sum();
        let calls: u64 = cells.iter().map(|r| r.calls).sum();
        let (work, peak, unit) = if kind.compute_bound() {
            let peak = if kind == Kind::Gemm { gemm_peak } else { fma_all };
            (cells.iter().map(|r| r.flops).sum::<f64>(), peak, "GFLOP/s")
        } else {
            (cells.iter().map(|r| r.bytes).sum::<f64>(), bandwidth, "GB/s")
        };
        let (rate, share_of_peak) = if work > 0.0 {
            (format!("{:.1} {unit}", work / t / 1e9), format!("{:.0}%", 100.0 * work / t / peak))
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<12} {:>10.1} {:>6.1}% {:>8} {:>14} {:>8}",
            kind.name(),
            per(t),
            100.0 * t / total,
            calls / passes as u64,
            rate,
            share_of_peak
        );
    }
    print_gemm_shapes(shapes, passes, gemm_peak);
}
