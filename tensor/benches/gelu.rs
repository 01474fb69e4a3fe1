//! GELU forward + backward on a [8, 3136, 128] f32 tensor (stage-1 MLP activations of a batch of
//! 8), with normal and with wide uniform inputs, beside the per-element f64 references of
//! `tensor::testing`, in ns per element. Plain timing, no criterion:
//! `cargo bench -p tensor --features testing --bench gelu`.
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
    let f_old = time("forward  f64 reference", &|| reference::forward(x));
    let b_old = time("backward f64 reference", &|| reference::backward(x, g));
    println!(
        "forward + backward: f64 reference {:.2} ns/element, f32 erf {:.2} ns/element ({:.1}x)",
        (f_old + b_old) * 1e9 / n as f64,
        (f_new + b_new) * 1e9 / n as f64,
        (f_old + b_old) / (f_new + b_new)
    );
}

/// The f64 references of `tensor::testing`, one element at a time in parallel chunks: the slow
/// twin the fast GELU is tested against, and the shape of the code it replaced (an f64 erf per
/// element; that code measured 23.7-27.3 ns/element here, the f32 path 3.2-3.9).
mod reference {
    use super::*;
    use tensor::testing::{gelu_f64, gelu_grad_f64};

    fn map(x: &Tensor, f: fn(f64) -> f64) -> Tensor {
        let v = x.to_f32_vec().unwrap();
        let mut out = vec![0.0f32; v.len()];
        out.par_chunks_mut(1 << 14).zip(v.par_chunks(1 << 14)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = f(x as f64) as f32;
            }
        });
        Tensor::from_vec(out, x.shape()).unwrap()
    }

    pub fn forward(x: &Tensor) -> Tensor {
        map(x, gelu_f64)
    }

    pub fn backward(x: &Tensor, g: &Tensor) -> Tensor {
        g.mul(&map(x, gelu_grad_f64)).unwrap()
    }
}
