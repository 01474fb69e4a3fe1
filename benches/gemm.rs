//! f32 GEMM at FaceXFormer's shapes: ours against the `gemm` and `matrixmultiply` crates, in
//! the same run, plus the machine's FMA peak measured by a register-only microbenchmark.
//!
//! `cargo bench --bench gemm` runs criterion (short windows) and then prints a table of
//! GFLOP/s, fraction of the measured peak and the ratios against both peers; where the CPU has
//! AVX512-BF16, also our bf16 product (operands rounded to bf16, f32 accumulation; on AMX tiles
//! where the CPU has them) against its own measured peak.
//!
//! "ours" packs both operands in every call, as the peers do. The model packs each linear
//! layer's weight once at load (`PackedF32`), so "packed" is ours with B packed once beforehand:
//! the rate the model's products run at. The batch-8 rows of stage 3 (1568 = 8 x 196) are the
//! shapes that dominate a batch-8 forward and a training step.

use criterion::{black_box, Criterion};
use rayon::prelude::*;
use std::time::{Duration, Instant};
use tensor::cpu::gemm::{set_matmul_precision, sgemm, sgemm_with, GemmOpts, Isa, MatmulPrecision, PackedF32};
use tensor::profile::peak::{bf16_peak, fma_lanes, fma_peak};
use tensor::{DType, Tensor};

/// [batch] x (m x k) @ (k x n), all row-major.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

const SHAPES: [Shape; 9] = [
    Shape { name: "3136x128x384", batch: 1, m: 3136, k: 128, n: 384 },
    Shape { name: "784x256x768", batch: 1, m: 784, k: 256, n: 768 },
    Shape { name: "196x512x2048", batch: 1, m: 196, k: 512, n: 2048 },
    Shape { name: "49x1024x4096", batch: 1, m: 49, k: 1024, n: 4096 },
    Shape { name: "4096x[49x32x49]", batch: 4096, m: 49, k: 32, n: 49 },
    Shape { name: "1024^3", batch: 1, m: 1024, k: 1024, n: 1024 },
    Shape { name: "2048^3", batch: 1, m: 2048, k: 2048, n: 2048 },
    Shape { name: "1568x512x2048", batch: 1, m: 1568, k: 512, n: 2048 },
    Shape { name: "1568x2048x512", batch: 1, m: 1568, k: 2048, n: 512 },
];

impl Shape {
    fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

/// Operands for one shape, with our batched path going through `Tensor::matmul`.
struct Operands {
    s: Shape,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    ta: Tensor,
    tb: Tensor,
    /// B packed once for our f32 kernel (batch 1 only), as the model packs its weights.
    packed: Option<PackedF32>,
}

impl Operands {
    fn new(s: Shape) -> Operands {
        let ta = Tensor::randn(&[s.batch, s.m, s.k], 1, DType::F32);
        let tb = Tensor::randn(&[s.batch, s.k, s.n], 2, DType::F32);
        let (a, b) = (ta.to_vec::<f32>().unwrap(), tb.to_vec::<f32>().unwrap());
        let packed = if s.batch == 1 { PackedF32::new(Isa::detect(), s.k, s.n, &b, s.n, 1) } else { None };
        Operands { s, a, b, c: vec![0.0; s.batch * s.m * s.n], ta, tb, packed }
    }

    fn ours(&mut self) {
        let s = self.s;
        if s.batch == 1 {
            sgemm(s.m, s.n, s.k, &self.a, s.k, 1, &self.b, s.n, 1, &mut self.c, s.n, false);
        } else {
            black_box(self.ta.matmul(&self.tb).unwrap());
        }
    }

    /// Ours with B packed once beforehand (the model's weights); only where B is packed
    /// ([`runs`]).
    fn ours_packed(&mut self) {
        let s = self.s;
        let packed = self.packed.as_ref().expect("ours_packed runs only where B is packed");
        let opts = GemmOpts { packed_f32: Some(packed), ..GemmOpts::default() };
        sgemm_with(s.m, s.n, s.k, &self.a, s.k, 1, &self.b, s.n, 1, &mut self.c, s.n, &opts);
    }

    fn gemm_crate(&mut self) {
        let s = self.s;
        let one = |a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism| unsafe {
            #[rustfmt::skip]
            gemm::gemm(s.m, s.n, s.k, c.as_mut_ptr(), 1, s.n as isize, false,
                a.as_ptr(), 1, s.k as isize, b.as_ptr(), 1, s.n as isize,
                0.0f32, 1.0f32, false, false, false, par);
        };
        if s.batch == 1 {
            one(&self.a, &self.b, &mut self.c, gemm::Parallelism::Rayon(0));
        } else {
            let (a, b) = (&self.a, &self.b);
            self.c
                .par_chunks_mut(s.m * s.n)
                .enumerate()
                .for_each(|(i, c)| one(&a[i * s.m * s.k..], &b[i * s.k * s.n..], c, gemm::Parallelism::None));
        }
    }

    fn matrixmultiply(&mut self) {
        let s = self.s;
        let one = |a: &[f32], b: &[f32], c: &mut [f32]| unsafe {
            #[rustfmt::skip]
            matrixmultiply::sgemm(s.m, s.k, s.n, 1.0, a.as_ptr(), s.k as isize, 1,
                b.as_ptr(), s.n as isize, 1, 0.0, c.as_mut_ptr(), s.n as isize, 1);
        };
        if s.batch == 1 {
            one(&self.a, &self.b, &mut self.c);
        } else {
            let (a, b) = (&self.a, &self.b);
            self.c
                .par_chunks_mut(s.m * s.n)
                .enumerate()
                .for_each(|(i, c)| one(&a[i * s.m * s.k..], &b[i * s.k * s.n..], c));
        }
    }
}

const IMPLS: [&str; 5] = ["ours", "ours_packed", "gemm", "matrixmultiply", "ours_bf16"];

fn run_impl(ops: &mut Operands, which: usize) {
    match which {
        0 => ops.ours(),
        1 => ops.ours_packed(),
        2 => ops.gemm_crate(),
        3 => ops.matrixmultiply(),
        _ => {
            set_matmul_precision(MatmulPrecision::Bf16);
            ops.ours();
            set_matmul_precision(MatmulPrecision::F32);
        }
    }
}

/// Whether implementation `which` runs on these operands: "packed" only where B was packed
/// (not the batched shape), our bf16 product only where the CPU has AVX512-BF16.
fn runs(ops: &Operands, which: usize) -> bool {
    match which {
        1 => ops.packed.is_some(),
        4 => Isa::Avx512Bf16.available(),
        _ => true,
    }
}

/// Median seconds per call over a short window (after one warm-up call).
fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let (start, mut times) = (Instant::now(), Vec::new());
    while times.len() < 5 || (start.elapsed() < Duration::from_millis(700) && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn criterion_benches(c: &mut Criterion, operands: &mut [Operands]) {
    for ops in operands.iter_mut() {
        let mut group = c.benchmark_group(format!("sgemm/{}", ops.s.name));
        group.throughput(criterion::Throughput::Elements(ops.s.flops() as u64));
        for (which, name) in IMPLS.iter().enumerate() {
            if runs(ops, which) {
                group.bench_function(*name, |bench| bench.iter(|| run_impl(ops, which)));
            }
        }
        group.finish();
    }
}

fn print_table(operands: &mut [Operands]) {
    let (single, peak) = fma_peak();
    let threads = rayon::current_num_threads();
    println!();
    println!(
        "FMA peak (measured, f32, {}-wide): {:.1} GFLOP/s on 1 thread, {:.1} GFLOP/s on {threads} threads",
        fma_lanes(),
        single / 1e9,
        peak / 1e9
    );
    // The bf16 products' peak is that of the instruction they run on: on Intel cores without
    // AMX that is the f32 FMA (`Isa::Bf16OnFma`), not `vdpbf16ps` (which would read > 100%).
    let bf16_isa = Isa::for_precision(MatmulPrecision::Bf16);
    let (bf16_single, bf16_all) = if bf16_isa == Isa::Bf16OnFma { (single, peak) } else { bf16_peak() };
    if Isa::Avx512Bf16.available() {
        let instruction = match bf16_isa {
            Isa::Amx => "AMX tdpbf16ps",
            Isa::Bf16OnFma => "the f32 FMA: this CPU's vdpbf16ps is slower",
            _ => "vdpbf16ps",
        };
        println!(
            "bf16 product peak (measured, {instruction}): {:.1} GFLOP/s on 1 thread, {:.1} GFLOP/s on {threads} threads",
            bf16_single / 1e9,
            bf16_all / 1e9
        );
    }
    println!("kernel: {:?}; times are medians of repeated calls", Isa::detect());
    println!(
        "{:<18} {:>10} {:>8} {:>11} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "shape (m x k x n)",
        "ours GF/s",
        "% peak",
        "packed GF/s",
        "% peak",
        "gemm GF/s",
        "mm GF/s",
        "ours/gemm",
        "ours/mm",
        "bf16 GF/s",
        "bf16/ours",
        "% bf16 pk"
    );
    for ops in operands.iter_mut() {
        let mut gflops = [f64::NAN; 5];
        for (which, g) in gflops.iter_mut().enumerate() {
            if runs(ops, which) {
                *g = ops.s.flops() / median_secs(|| run_impl(ops, which)) / 1e9;
            }
        }
        // What did not run prints NaN.
        let [ours, packed, gemm, mm, bf16] = gflops;
        println!(
            "{:<18} {:>10.1} {:>7.1}% {:>11.1} {:>7.1}% {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>10.1} {:>10.2} {:>8.1}%",
            ops.s.name,
            ours,
            100.0 * ours * 1e9 / peak,
            packed,
            100.0 * packed * 1e9 / peak,
            gemm,
            mm,
            ours / gemm,
            ours / mm,
            bf16,
            bf16 / ours,
            100.0 * bf16 * 1e9 / bf16_all
        );
    }
}

fn main() {
    // As `facex` does: freed memory stays in the process, so a product's new output (39 MB for
    // the batched window products) is not a fresh mmap whose every page faults.
    tensor::cpu::malloc::keep_freed_memory();
    let mut operands: Vec<Operands> = SHAPES.iter().map(|&s| Operands::new(s)).collect();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    criterion_benches(&mut c, &mut operands);
    c.final_summary();
    // Only under `cargo bench` (criterion's test mode runs each bench once and should stay quick).
    if std::env::args().any(|a| a == "--bench") {
        print_table(&mut operands);
    }
}
