//! The thread context that every kernel body is written against.
//!
//! On the device ([`crate::device::Gpu`]) each method is a special register read, an intrinsic or
//! one inline PTX instruction. On the host ([`crate::emu`]) each method is emulated with the same
//! semantics, so a kernel body is tested on the CPU exactly as it runs on the GPU.
//!
//! Warp-level methods (shuffles, votes, `ldmatrix`, `mma`) must be called by all 32 lanes of a
//! warp together (the `.sync.aligned` forms with a full mask); kernels that use them launch blocks
//! whose size is a multiple of 32.

/// A 3-component launch index or size, as CUDA's `dim3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub const fn new(x: u32, y: u32, z: u32) -> Self {
        Dim3 { x, y, z }
    }
    pub const fn x(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
    pub const fn count(&self) -> usize {
        self.x as usize * self.y as usize * self.z as usize
    }
}

/// Grid, block and dynamic shared memory of one launch. Each kernel module has a `config`
/// function giving the geometry it is written for; the emulator and the CUDA runtime both use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: Dim3,
    pub block: Dim3,
    pub shared_bytes: usize,
}

/// The geometry of a grid-stride kernel over `n` elements: 256 threads per block and enough
/// blocks for a few steps per thread on a large GPU (132 SMs x 16). Any grid is correct for
/// such a kernel; this one keeps every SM busy without launching millions of blocks.
pub fn grid_stride_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 132 * 16);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(256), shared_bytes: 0 }
}

/// Calls `f(i)` for every index `i < n` this thread owns in a grid-stride loop.
#[inline(always)]
pub fn grid_stride<C: Ctx>(c: &C, n: u32, mut f: impl FnMut(u32)) {
    let stride = c.block_dim().x * c.grid_dim().x;
    let mut i = c.block_idx().x * c.block_dim().x + c.thread_idx().x;
    while i < n {
        f(i);
        i += stride;
    }
}

pub trait Ctx {
    fn thread_idx(&self) -> Dim3;
    fn block_idx(&self) -> Dim3;
    fn block_dim(&self) -> Dim3;
    fn grid_dim(&self) -> Dim3;

    /// `__syncthreads()`: every thread of the block waits here; shared-memory writes before it are
    /// visible to every thread after it.
    fn sync_threads(&self);

    /// Base of the block's dynamic shared memory (size chosen at launch, 16-byte aligned).
    fn shared<T>(&self) -> *mut T;

    /// `shfl.sync.bfly`: the value of lane `lane ^ mask`.
    fn shfl_xor(&self, v: u32, mask: u32) -> u32;
    /// `shfl.sync.down`: the value of lane `lane + delta`, or this lane's own if that is past 31.
    fn shfl_down(&self, v: u32, delta: u32) -> u32;
    /// `shfl.sync.idx`: the value of lane `src`.
    fn shfl_idx(&self, v: u32, src: u32) -> u32;
    /// `vote.sync.ballot`: bit `i` is lane `i`'s predicate.
    fn ballot(&self, pred: bool) -> u32;

    /// `atom.global.add.f32`; returns the old value.
    ///
    /// # Safety
    /// `p` must be valid global memory.
    unsafe fn atomic_add_f32(&self, p: *mut f32, v: f32) -> f32;

    /// `ldmatrix.sync.aligned.m8n8.x4.shared.b16`: lanes 8j..8j+7 give the row addresses of matrix
    /// j; every lane gets register j = (row lane/4, columns 2*(lane%4) and +1) of matrix j.
    ///
    /// # Safety
    /// Each lane's `row` must point at 8 readable 16-bit values of shared memory, 16-byte aligned.
    unsafe fn ldmatrix_x4(&self, row: *const u16) -> [u32; 4];
    /// As [`Ctx::ldmatrix_x4`] with `.trans`: register j = (rows 2*(lane%4) and +1, column lane/4).
    ///
    /// # Safety
    /// As [`Ctx::ldmatrix_x4`].
    unsafe fn ldmatrix_x4_trans(&self, row: *const u16) -> [u32; 4];

    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`: D = A·B + C with the PTX fragment
    /// layouts (A 16x16 in 4 registers, B 16x8 in 2, C/D 16x8 in 4 floats per lane).
    fn mma_bf16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4];
    /// The same with f16 inputs.
    fn mma_f16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4];

    // ---- provided helpers, built on the methods above ----

    /// Lane index within the warp.
    #[inline(always)]
    fn lane(&self) -> u32 {
        self.thread_idx().x % 32
    }
    /// Linear thread index within the block.
    #[inline(always)]
    fn linear_tid(&self) -> u32 {
        let t = self.thread_idx();
        let d = self.block_dim();
        t.x + d.x * (t.y + d.y * t.z)
    }
    #[inline(always)]
    fn shfl_xor_f32(&self, v: f32, mask: u32) -> f32 {
        f32::from_bits(self.shfl_xor(v.to_bits(), mask))
    }
    #[inline(always)]
    fn shfl_idx_f32(&self, v: f32, src: u32) -> f32 {
        f32::from_bits(self.shfl_idx(v.to_bits(), src))
    }
    /// Sum over the warp, the result in every lane (butterfly).
    #[inline(always)]
    fn warp_sum(&self, mut v: f32) -> f32 {
        let mut m = 16;
        while m > 0 {
            v += self.shfl_xor_f32(v, m);
            m /= 2;
        }
        v
    }
    /// Maximum over the warp, the result in every lane.
    #[inline(always)]
    fn warp_max(&self, mut v: f32) -> f32 {
        let mut m = 16;
        while m > 0 {
            v = v.max(self.shfl_xor_f32(v, m));
            m /= 2;
        }
        v
    }
}
