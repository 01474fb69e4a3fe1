//! The device side: [`Gpu`], the zero-sized thread context whose methods are special registers and
//! inline PTX. The `extern "ptx-kernel"` entry points that the host launches are declared in
//! [`crate::abi`], from the same description the host launches with.

use crate::ctx::{Ctx, Dim3};
use core::arch::asm;
use core::arch::nvptx::*;

/// The real thread context on an NVIDIA GPU. Zero-sized: every call compiles to one instruction.
#[derive(Clone, Copy)]
pub struct Gpu;

impl Ctx for Gpu {
    #[inline(always)]
    fn thread_idx(&self) -> Dim3 {
        unsafe { Dim3::new(_thread_idx_x(), _thread_idx_y(), _thread_idx_z()) }
    }
    #[inline(always)]
    fn block_idx(&self) -> Dim3 {
        unsafe { Dim3::new(_block_idx_x(), _block_idx_y(), _block_idx_z()) }
    }
    #[inline(always)]
    fn block_dim(&self) -> Dim3 {
        unsafe { Dim3::new(_block_dim_x(), _block_dim_y(), _block_dim_z()) }
    }
    #[inline(always)]
    fn grid_dim(&self) -> Dim3 {
        unsafe { Dim3::new(_grid_dim_x(), _grid_dim_y(), _grid_dim_z()) }
    }
    #[inline(always)]
    fn sync_threads(&self) {
        unsafe { _syncthreads() }
    }
    #[inline(always)]
    fn shared<T>(&self) -> *mut T {
        core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<T>()
    }
    #[inline(always)]
    fn shfl_xor(&self, v: u32, mask: u32) -> u32 {
        let r: u32;
        unsafe {
            asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 31, -1;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask)
        };
        r
    }
    #[inline(always)]
    fn shfl_down(&self, v: u32, delta: u32) -> u32 {
        let r: u32;
        unsafe {
            asm!("shfl.sync.down.b32 {r}, {v}, {d}, 31, -1;", r = out(reg32) r, v = in(reg32) v, d = in(reg32) delta)
        };
        r
    }
    #[inline(always)]
    fn shfl_idx(&self, v: u32, src: u32) -> u32 {
        let r: u32;
        unsafe {
            asm!("shfl.sync.idx.b32 {r}, {v}, {s}, 31, -1;", r = out(reg32) r, v = in(reg32) v, s = in(reg32) src)
        };
        r
    }
    #[inline(always)]
    fn ballot(&self, pred: bool) -> u32 {
        let r: u32;
        unsafe {
            asm!(
                "{{ .reg .pred p; setp.ne.u32 p, {x}, 0; vote.sync.ballot.b32 {r}, p, -1; }}",
                r = out(reg32) r,
                x = in(reg32) pred as u32
            )
        };
        r
    }
    #[inline(always)]
    unsafe fn atomic_add_f32(&self, p: *mut f32, v: f32) -> f32 {
        let r: f32;
        asm!("atom.global.add.f32 {r}, [{p}], {v};", r = out(reg32) r, p = in(reg64) p, v = in(reg32) v);
        r
    }
    #[inline(always)]
    unsafe fn ldmatrix_x4(&self, row: *const u16) -> [u32; 4] {
        let (a, b, c, d): (u32, u32, u32, u32);
        asm!(
            "{{ .reg .u64 s; cvta.to.shared.u64 s, {p}; ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{a}, {b}, {c}, {d}}}, [s]; }}",
            p = in(reg64) row, a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d
        );
        [a, b, c, d]
    }
    #[inline(always)]
    unsafe fn ldmatrix_x4_trans(&self, row: *const u16) -> [u32; 4] {
        let (a, b, c, d): (u32, u32, u32, u32);
        asm!(
            "{{ .reg .u64 s; cvta.to.shared.u64 s, {p}; ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{a}, {b}, {c}, {d}}}, [s]; }}",
            p = in(reg64) row, a = out(reg32) a, b = out(reg32) b, c = out(reg32) c, d = out(reg32) d
        );
        [a, b, c, d]
    }
    #[inline(always)]
    fn mma_bf16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
        let (d0, d1, d2, d3): (f32, f32, f32, f32);
        unsafe {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{c0}, {c1}, {c2}, {c3}}};",
                d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                b0 = in(reg32) b[0], b1 = in(reg32) b[1],
                c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2], c3 = in(reg32) c[3],
            )
        };
        [d0, d1, d2, d3]
    }
    #[inline(always)]
    fn mma_f16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
        let (d0, d1, d2, d3): (f32, f32, f32, f32);
        unsafe {
            asm!(
                "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{c0}, {c1}, {c2}, {c3}}};",
                d0 = out(reg32) d0, d1 = out(reg32) d1, d2 = out(reg32) d2, d3 = out(reg32) d3,
                a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                b0 = in(reg32) b[0], b1 = in(reg32) b[1],
                c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2], c3 = in(reg32) c[3],
            )
        };
        [d0, d1, d2, d3]
    }
}
