//! The emulator itself: the independent (one-thread-at-a-time) launch gives what the threaded
//! launch gives for kernels whose threads do not cooperate, and refuses those that do.

mod common;
use common::*;
use kernels::elementwise;
use kernels::emu::{launch, launch_independent, LaunchConfig, Order};
use kernels::math::ACT_GELU;
use kernels::{softmax, Dim3};

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
