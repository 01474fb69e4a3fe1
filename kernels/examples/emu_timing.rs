//! The emulator's cost on one cooperative kernel: a tensor-core GEMM of the tiny model's size
//! (3136x128x32, 25 blocks of 256 threads), on fibers and on OS threads.
//!
//!     cargo run --release -p kernels --example emu_timing
//!     perf stat -e context-switches target/release/examples/emu_timing   # the switches

use kernels::emu::{launch, launch_os_threads, EmuCtx, Order};
use kernels::gemm_tc;
use kernels::math::f32_to_bf16;
use kernels::Bf16;

fn main() {
    let (m, n, k) = (3136usize, 128usize, 32usize);
    let a: Vec<u16> = (0..m * k).map(|i| f32_to_bf16((i % 7) as f32 * 0.1)).collect();
    let b: Vec<u16> = (0..n * k).map(|i| f32_to_bf16((i % 5) as f32 * 0.1)).collect();
    let s = gemm_tc::Strides { lda: k as u64, ldb: k as u64, ldc: n as u64, batch_a: 0, batch_b: 0, batch_c: 0 };
    let cfg = gemm_tc::config(m, n, 1);
    for os_threads in [false, true] {
        let mut out = vec![f32::NAN; m * n];
        let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let null = std::ptr::null();
        let body = |c: &EmuCtx| unsafe {
            gemm_tc::gemm_tc::<_, Bf16, f32>(
                c,
                pa.cast(),
                pb.cast(),
                null,
                null,
                po,
                m as u32,
                n as u32,
                k as u32,
                &s,
                1.0,
                0,
            )
        };
        let t = std::time::Instant::now();
        unsafe {
            if os_threads {
                launch_os_threads(cfg, Order::Forward, body)
            } else {
                launch(cfg, Order::Forward, body)
            }
        };
        let what = if os_threads { "OS threads" } else { "fibers" };
        assert!(out.iter().all(|v| v.is_finite()), "{what}: unwritten outputs");
        println!("gemm_tc {m}x{n}x{k} under the emulator on {what}: {:.3} s", t.elapsed().as_secs_f64());
    }
}
