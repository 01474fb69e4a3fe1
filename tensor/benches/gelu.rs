//! GELU forward + backward on a [8, 3136, 128] f32 tensor (stage-1 MLP activations of a batch of
//! 8), with normal and with wide uniform inputs, now and as it was before the f32 erf (the f64
//! series forward and the autograd rule's per-element f64 backward, copied below), in ns per
//! element. Plain timing, no criterion: `cargo bench -p tensor --bench gelu`.
use rayon::prelude::*;
use std::time::Instant;
use tensor::{DType, Tensor};

fn main() {
    let shape = [8, 3136, 128];
    let n: usize = shape.iter().product();
    let g = Tensor::rand_uniform(&shape, -1.0, 1.0, 2, DType::F32);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("{cpu}, {} rayon threads, {n} elements", rayon::current_num_threads());
    // Activations are roughly normal; the uniform case puts 43% of the inputs in the tail
    // (|x| > 2 sqrt 2), where the old forward took its slow continued fraction.
    for (what, x) in [
        ("x ~ N(0, 1)", Tensor::randn(&shape, 1, DType::F32)),
        ("x ~ U(-5, 5)", Tensor::rand_uniform(&shape, -5.0, 5.0, 1, DType::F32)),
    ] {
        println!("{what}:");
        run(&x, &g, n);
    }
}

fn run(x: &Tensor, g: &Tensor, n: usize) {
    let time = |name: &str, f: &dyn Fn() -> Tensor| {
        f();
        let mut best = f64::INFINITY;
        for _ in 0..7 {
            let t = Instant::now();
            std::hint::black_box(f());
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name:<28} {:7.2} ns/element (best of 7)", best * 1e9 / n as f64);
        best
    };
    let f_new = time("forward  f32 erf", &|| x.gelu().unwrap());
    let b_new = time("backward f32 erf", &|| x.gelu_backward(g).unwrap());
    let f_old = time("forward  before (f64 series)", &|| old::forward(x));
    let b_old = time("backward before (f64, mul)", &|| old::backward(x, g));
    println!(
        "forward + backward: before {:.2} ns/element, now {:.2} ns/element ({:.1}x)",
        (f_old + b_old) * 1e9 / n as f64,
        (f_new + b_new) * 1e9 / n as f64,
        (f_old + b_old) / (f_new + b_new)
    );
}

/// The code this replaced, kept here only to measure against.
mod old {
    use super::*;
    const TERMS: usize = 33;
    const ERF_TAYLOR: [f64; TERMS] = {
        let mut c = [0.0; TERMS];
        let mut fact = 1.0f64;
        let mut n = 0;
        while n < TERMS {
            if n > 0 {
                fact *= n as f64;
            }
            let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
            c[n] = sign * std::f64::consts::FRAC_2_SQRT_PI / (fact * (2 * n + 1) as f64);
            n += 1;
        }
        c
    };
    fn erf_series(z: f64) -> f64 {
        let mut s = 0.0;
        for &c in ERF_TAYLOR.iter().rev() {
            s = s * z * z + c;
        }
        s * z
    }
    fn erfc_cf(z: f64) -> f64 {
        let mut t = z;
        for k in (1..=30).rev() {
            t = z + (k as f64 * 0.5) / t;
        }
        (-z * z).exp() / (std::f64::consts::PI.sqrt() * t)
    }
    fn gelu_f64(x: f64) -> f64 {
        let z = x * std::f64::consts::FRAC_1_SQRT_2;
        if x >= 0.0 {
            0.5 * x * (1.0 + if z < 2.0 { erf_series(z) } else { 1.0 - erfc_cf(z) })
        } else {
            0.5 * x * if -z < 2.0 { 1.0 + erf_series(z) } else { erfc_cf(-z) }
        }
    }
    fn gelu_slice(xs: &[f32], out: &mut [f32]) {
        for (xc, oc) in xs.chunks(8).zip(out.chunks_mut(8)) {
            let mut z = [0.0f64; 8];
            for (z, &x) in z.iter_mut().zip(xc) {
                *z = (x as f64 * std::f64::consts::FRAC_1_SQRT_2).clamp(-2.0, 2.0);
            }
            let mut s = [0.0f64; 8];
            for &c in ERF_TAYLOR.iter().rev() {
                for k in 0..8 {
                    s[k] = s[k] * (z[k] * z[k]) + c;
                }
            }
            for (k, (o, &x)) in oc.iter_mut().zip(xc).enumerate() {
                let x = x as f64;
                *o = if (x * std::f64::consts::FRAC_1_SQRT_2).abs() < 2.0 {
                    (0.5 * x * (1.0 + s[k] * z[k])) as f32
                } else {
                    gelu_f64(x) as f32
                };
            }
        }
    }
    pub fn forward(x: &Tensor) -> Tensor {
        let tensor::CpuStorage::F32(v) = x.cpu_storage().unwrap() else { unreachable!() };
        let src = &v[x.layout().contiguous_range().unwrap()];
        let mut out = vec![0.0f32; src.len()];
        out.par_chunks_mut(1 << 14).zip(src.par_chunks(1 << 14)).for_each(|(o, x)| gelu_slice(x, o));
        Tensor::from_vec(out, x.shape()).unwrap()
    }
    fn erf(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        const C: [f64; 10] = [
            -1.26551223,
            1.00002368,
            0.37409196,
            0.09678418,
            -0.18628806,
            0.27886807,
            -1.13520398,
            1.48851587,
            -0.82215223,
            0.17087277,
        ];
        let poly = C.iter().rev().fold(0.0, |acc, &c| acc * t + c);
        let erfc = t * (-z * z + poly).exp();
        if x >= 0.0 {
            1.0 - erfc
        } else {
            erfc - 1.0
        }
    }
    /// autograd's rule before: g * (Phi(x) + x phi(x)) with the derivative in f64 per element.
    pub fn backward(x: &Tensor, g: &Tensor) -> Tensor {
        let v: Vec<f32> = x
            .to_f32_vec()
            .unwrap()
            .into_iter()
            .map(|x| {
                let x = x as f64;
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (cdf + x * pdf) as f32
            })
            .collect();
        g.mul(&Tensor::from_vec(v, x.shape()).unwrap()).unwrap()
    }
}
