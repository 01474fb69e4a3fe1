//! The emulator itself: the independent (one-thread-at-a-time) launch gives what the threaded
//! launch gives for kernels whose threads do not cooperate, and refuses those that do; the fiber
//! path gives what the OS-thread path gives; a missing barrier and a panicking thread show.

mod common;
use common::*;
use kernels::elementwise;
use kernels::emu::{fiber, launch, launch_independent, launch_os_threads, EmuCtx, LaunchConfig, Order, TEST_ORDERS};
use kernels::math::{f32_to_bf16, ACT_GELU};
use kernels::{gemm_tc, softmax, Bf16, Ctx, Dim3};

#[test]
fn independent_launch_matches_the_threaded_launch() {
    let n = 1000;
    let (a, b) = (rand_vec(n, 1), rand_vec(10, 2));
    let mut threaded = vec![f32::NAN; n];
    let mut independent = vec![f32::NAN; n];
    let cfg = elementwise::config(n);
    for (out, order) in [(&mut threaded, Order::Shuffled(3)), (&mut independent, Order::Reverse)] {
        let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        unsafe {
            if order == Order::Reverse {
                launch_independent(cfg, order, |c| elementwise::binary(c, pa, pb, po, n as u32, 10, 0, ACT_GELU))
            } else {
                launch(cfg, order, |c| elementwise::binary(c, pa, pb, po, n as u32, 10, 0, ACT_GELU))
            }
        }
    }
    assert!(threaded.iter().all(|x| x.is_finite()));
    assert_eq!(threaded, independent);
}

#[test]
#[should_panic(expected = "launch_independent")]
fn independent_launch_refuses_warp_operations() {
    let x = rand_vec(64, 4);
    let mut out = vec![0f32; 64];
    let (px, po) = (x.as_ptr(), out.as_mut_ptr());
    unsafe { launch_independent(softmax::config(2), Order::Forward, |c| softmax::softmax_rows(c, px, po, 2, 32)) };
}

#[test]
#[should_panic(expected = "launch_independent")]
fn independent_launch_refuses_barriers() {
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(4), shared_bytes: 0 };
    unsafe { launch_independent(cfg, Order::Forward, |c| kernels::Ctx::sync_threads(c)) };
}

/// A tensor-core GEMM (barriers, `ldmatrix`, `mma`, several blocks) and a softmax (shuffles),
/// bit for bit the same on fibers and on OS threads.
#[test]
fn fiber_launch_matches_os_thread_launch() {
    let (m, n, k) = (150, 70, 72);
    let a: Vec<u16> = rand_vec(m * k, 5).into_iter().map(f32_to_bf16).collect();
    let b: Vec<u16> = rand_vec(n * k, 6).into_iter().map(f32_to_bf16).collect();
    let s = gemm_tc::Strides { lda: k as u64, ldb: k as u64, ldc: n as u64, batch_a: 0, batch_b: 0, batch_c: 0 };
    let x = rand_vec(40 * 96, 7);
    let mut outputs = Vec::new();
    for os_threads in [false, true] {
        let mut c = vec![f32::NAN; m * n];
        let mut y = vec![f32::NAN; x.len()];
        let (pa, pb, pc, px, py) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), x.as_ptr(), y.as_mut_ptr());
        let gemm = |ctx: &EmuCtx| unsafe {
            gemm_tc::gemm_tc::<_, Bf16, f32>(
                ctx,
                pa.cast(),
                pb.cast(),
                std::ptr::null(),
                std::ptr::null(),
                pc,
                m as u32,
                n as u32,
                k as u32,
                &s,
                1.0,
                0,
            )
        };
        let softmax = |ctx: &EmuCtx| unsafe { softmax::softmax_rows(ctx, px, py, 40, 96) };
        let order = Order::Shuffled(9);
        unsafe {
            if os_threads {
                launch_os_threads(gemm_tc::config(m, n, 1), order, gemm);
                launch_os_threads(softmax::config(40), order, softmax);
            } else {
                launch(gemm_tc::config(m, n, 1), order, gemm);
                launch(softmax::config(40), order, softmax);
            }
        }
        assert!(c.iter().chain(&y).all(|v| v.is_finite()), "os_threads {os_threads}: unwritten outputs");
        outputs.push((c, y));
    }
    assert_eq!(outputs[0], outputs[1]);
}

/// Each thread writes its slot of shared memory, then reads its neighbour's: with the barrier
/// between, every read sees a written value; without it, some thread reads the 0xff poison
/// (shared memory as the block starts), under every test order.
#[test]
fn a_missing_barrier_shows_as_poison() {
    let cfg = LaunchConfig { grid: Dim3::x(3), block: Dim3::x(64), shared_bytes: 64 * 4 };
    for with_barrier in [true, false] {
        for order in TEST_ORDERS {
            let mut out = vec![0f32; 3 * 64];
            let po = out.as_mut_ptr() as usize;
            unsafe {
                launch(cfg, order, |c| {
                    let (t, s) = (c.thread_idx().x as usize, c.shared::<f32>());
                    *s.add(t) = (c.block_idx().x * 64) as f32 + t as f32;
                    if with_barrier {
                        c.sync_threads();
                    }
                    let out = po as *mut f32;
                    *out.add(c.block_idx().x as usize * 64 + t) = *s.add((t + 1) % 64);
                })
            };
            let want: Vec<f32> = (0..3 * 64).map(|i| (i / 64 * 64 + (i % 64 + 1) % 64) as f32).collect();
            if with_barrier {
                assert_eq!(out, want, "{order:?}");
            } else {
                assert!(out.iter().any(|v| v.is_nan()), "{order:?}: the missing barrier went unseen");
            }
        }
    }
}

/// A panic in one emulated thread fails the launch with its message, while the other threads
/// wait at a barrier; the next launch on the same OS thread runs normally.
#[test]
fn a_panicking_thread_fails_the_launch_and_the_next_one_runs() {
    let cfg = LaunchConfig { grid: Dim3::x(2), block: Dim3::x(96), shared_bytes: 0 };
    let result = std::panic::catch_unwind(|| unsafe {
        launch(cfg, Order::Forward, |c| {
            c.sync_threads();
            assert!(!(c.block_idx().x == 1 && c.thread_idx().x == 40), "thread 40 of block 1 fails");
            c.sync_threads();
        })
    });
    let message = result.expect_err("the launch must fail");
    let message = panic_message(&*message);
    assert!(message.contains("thread 40 of block 1 fails"), "{message}");
    let mut out = vec![0u32; 2 * 96];
    let po = out.as_mut_ptr() as usize;
    unsafe {
        launch(cfg, Order::Reverse, |c| {
            c.sync_threads();
            let i = (c.block_idx().x * 96 + c.thread_idx().x) as usize;
            *(po as *mut u32).add(i) = c.shfl_xor(i as u32, 1);
        })
    };
    assert!(out.iter().enumerate().all(|(i, &v)| v == (i ^ 1) as u32), "{out:?}");
}

/// A thread that returns before a barrier the others wait at: on fibers the launch fails saying
/// the block deadlocked (OS threads would wait forever, so this runs only where fibers exist).
#[test]
fn a_deadlocked_block_is_an_error() {
    if !fiber::SUPPORTED {
        return;
    }
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(64), shared_bytes: 0 };
    let result = std::panic::catch_unwind(|| unsafe {
        launch(cfg, Order::Forward, |c| {
            if c.thread_idx().x != 7 {
                c.sync_threads();
            }
        })
    });
    let message = result.expect_err("the launch must fail");
    let message = panic_message(&*message);
    assert!(message.contains("deadlocked: 63 of 64 threads wait"), "{message}");
}
