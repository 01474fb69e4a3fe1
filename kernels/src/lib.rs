//! GPU kernels written in Rust.
//!
//! One crate, two targets:
//! - on `nvptx64-nvidia-cuda` (built by `scripts/ptx.sh`) it is `no_std` and every kernel gets an
//!   `extern "ptx-kernel"` entry point; the result is committed as `ptx/kernels.ptx`;
//! - on the host the same kernel bodies run under [`emu`], an emulator of the thread grid, so every
//!   `cargo test` checks them against plain CPU references; [`PTX`] embeds the committed PTX for
//!   the CUDA runtime in `tensor::cuda`.
//!
//! [`abi`] describes each kernel once (parameters, body, entry names): the entry points, the
//! emulator launch and the CUDA launch all come from that description.
//!
//! Kernel bodies are generic over [`Ctx`], the thread context (indices, barrier, shared memory,
//! warp shuffles, tensor-core ops). On the device its methods are intrinsics or one inline PTX
//! instruction each; on the host they are emulated with the real semantics.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(
        abi_ptx,
        stdarch_nvptx,
        asm_experimental_arch,
        core_intrinsics,
        gpu_intrinsics,
        gpu_launch_sized_workgroup_mem
    )
)]
#![cfg_attr(target_arch = "nvptx64", allow(internal_features))]
// Kernel bodies take their buffers and sizes as plain arguments, as the entry points do.
#![allow(clippy::too_many_arguments)]

pub mod abi;
pub mod attention;
pub mod attention_tc;
pub mod ctx;
pub mod elementwise;
pub mod fastdiv;
pub mod fusion;
pub mod gemm;
pub mod gemm_tc;
pub mod hyper;
pub mod layernorm;
pub mod math;
pub mod permute;
pub mod reduce;
pub mod remap;
pub mod softmax;

#[cfg(target_arch = "nvptx64")]
pub mod device;
#[cfg(not(target_arch = "nvptx64"))]
pub mod emu;

pub use abi::{Args, Kernel};
pub use ctx::{Ctx, Dim3};
pub use math::{Bf16, Elem, F16};

/// The committed PTX of every kernel in this crate (regenerate with `scripts/ptx.sh`).
#[cfg(not(target_arch = "nvptx64"))]
pub const PTX: &str = include_str!("../ptx/kernels.ptx");

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Kernels are written so that they cannot panic; should one slip through, trap the launch.
    unsafe { core::arch::nvptx::trap() }
}
