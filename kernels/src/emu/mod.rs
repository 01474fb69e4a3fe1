//! A CPU emulator of the CUDA thread grid, so kernel bodies are tested on machines without a GPU.
//!
//! Semantics kept from the hardware:
//! - every thread of a block is alive at once (a fiber per GPU thread, [`fiber`], or on targets
//!   without fibers an OS thread; either reused for the launch's blocks in turn), so
//!   [`Ctx::sync_threads`] is a real barrier ([`barrier::YieldBarrier`]);
//! - threads are grouped into 32-lane warps; shuffles, votes, `ldmatrix` and `mma` are a rendezvous
//!   of the warp's lanes (see [`warp`]), with the PTX ISA's fragment layouts ([`tensor_core`]);
//! - each block gets its own dynamic shared memory, filled with NaN bytes (0xff) at block start, so
//!   a read of shared memory that nothing wrote shows up in the result;
//! - blocks run one after another in a chosen [`Order`], and the threads are started in that
//!   order too, warp by warp; on fibers the first warp runs ahead of the others until it waits
//!   for them at a barrier. Tests run with the reversed and shuffled orders, so code that depends
//!   on a lucky schedule (a missing barrier) fails.
//!
//! Output buffers should be filled with NaN before a launch ([`poisoned`]) so that an element no
//! thread wrote fails the comparison.

pub mod barrier;
pub mod fiber;
pub mod tensor_core;
pub mod warp;

use crate::abi::{Args, Threads};
use crate::ctx::{Ctx, Dim3};
use barrier::YieldBarrier as Barrier;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};
use warp::Warp;

pub use crate::ctx::LaunchConfig;

/// The order in which blocks, and threads within a block, are started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Forward,
    Reverse,
    /// A permutation drawn from this seed.
    Shuffled(u64),
}

/// The orders every kernel test should pass under.
pub const TEST_ORDERS: [Order; 2] = [Order::Reverse, Order::Shuffled(0x5eed)];

/// What all threads of one block share: the barrier, the shared memory and the warps.
struct Block {
    /// Set by [`launch_independent`]: the threads run one after another, so a barrier or a warp
    /// operation cannot be honoured and panics instead of deadlocking.
    independent: bool,
    barrier: Barrier,
    shared: Box<[UnsafeCell<u128>]>,
    warps: Vec<Warp>,
}

// Shared memory is accessed through raw pointers by the block's threads, as on the GPU; the
// kernel's barriers order those accesses.
unsafe impl Sync for Block {}

/// The thread context of one emulated GPU thread.
pub struct EmuCtx<'a> {
    tid: Dim3,
    bid: Dim3,
    bdim: Dim3,
    gdim: Dim3,
    lane: u32,
    block: &'a Block,
    warp: &'a Warp,
}

impl Ctx for EmuCtx<'_> {
    fn thread_idx(&self) -> Dim3 {
        self.tid
    }
    fn block_idx(&self) -> Dim3 {
        self.bid
    }
    fn block_dim(&self) -> Dim3 {
        self.bdim
    }
    fn grid_dim(&self) -> Dim3 {
        self.gdim
    }
    fn sync_threads(&self) {
        assert!(!self.block.independent, "sync_threads in a launch_independent launch: use emu::launch");
        self.block.barrier.wait();
    }
    fn shared<T>(&self) -> *mut T {
        self.block.shared.as_ptr() as *mut u128 as *mut T
    }
    fn shfl_xor(&self, v: u32, mask: u32) -> u32 {
        let all = self.warp.exchange(self.lane, [v]);
        all[((self.lane ^ mask) & 31) as usize][0]
    }
    fn shfl_down(&self, v: u32, delta: u32) -> u32 {
        let all = self.warp.exchange(self.lane, [v]);
        let src = self.lane + delta;
        if src > 31 {
            v
        } else {
            all[src as usize][0]
        }
    }
    fn shfl_idx(&self, v: u32, src: u32) -> u32 {
        let all = self.warp.exchange(self.lane, [v]);
        all[(src & 31) as usize][0]
    }
    fn ballot(&self, pred: bool) -> u32 {
        let all = self.warp.exchange(self.lane, [pred as u32]);
        all.iter().enumerate().fold(0, |acc, (i, p)| acc | (p[0] << i))
    }
    unsafe fn atomic_add_f32(&self, p: *mut f32, v: f32) -> f32 {
        let a = &*(p as *const AtomicU32);
        let mut old = a.load(Ordering::Acquire);
        loop {
            let new = (f32::from_bits(old) + v).to_bits();
            match a.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return f32::from_bits(old),
                Err(cur) => old = cur,
            }
        }
    }
    unsafe fn ldmatrix_x4(&self, row: *const u16) -> [u32; 4] {
        tensor_core::ldmatrix_x4(
            self.lane,
            &self.warp.exchange(self.lane, [row as usize as u32, (row as usize >> 32) as u32]),
            false,
        )
    }
    unsafe fn ldmatrix_x4_trans(&self, row: *const u16) -> [u32; 4] {
        tensor_core::ldmatrix_x4(
            self.lane,
            &self.warp.exchange(self.lane, [row as usize as u32, (row as usize >> 32) as u32]),
            true,
        )
    }
    fn mma_bf16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
        let all = self.warp.exchange(self.lane, [a[0], a[1], a[2], a[3], b[0], b[1]]);
        tensor_core::mma_m16n8k16(self.lane, &all, c, crate::math::bf16_to_f32)
    }
    fn mma_f16(&self, a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
        let all = self.warp.exchange(self.lane, [a[0], a[1], a[2], a[3], b[0], b[1]]);
        tensor_core::mma_m16n8k16(self.lane, &all, c, tensor_core::f16_to_f32)
    }
}

/// A buffer of `len` elements all set to `poison` (use NaN for outputs).
pub fn poisoned<T: Copy>(len: usize, poison: T) -> Vec<T> {
    vec![poison; len]
}

/// The order in which a block's threads start (and, on fibers, their priority): warp by warp,
/// the warps in `order` and each warp's lanes in `order` (shuffled: each warp draws its own).
fn thread_start_order(nthreads: usize, order: Order) -> Vec<usize> {
    let warps = permutation(nthreads.div_ceil(32), order);
    warps
        .into_iter()
        .flat_map(|w| {
            let lane_order = match order {
                Order::Shuffled(seed) => Order::Shuffled(seed ^ (w as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
                o => o,
            };
            permutation((nthreads - 32 * w).min(32), lane_order).into_iter().map(move |l| 32 * w + l)
        })
        .collect()
}

/// A small deterministic generator for the shuffled order (no dependency in the kernels crate).
fn permutation(n: usize, order: Order) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    match order {
        Order::Forward => {}
        Order::Reverse => p.reverse(),
        Order::Shuffled(seed) => {
            let mut s = seed ^ 0x9e37_79b9_7f4a_7c15 ^ n as u64;
            for i in (1..n).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                p.swap(i, (s % (i as u64 + 1)) as usize);
            }
        }
    }
    p
}

/// A block's shared state, shared memory poisoned with 0xff bytes.
fn new_block(cfg: LaunchConfig, independent: bool) -> Block {
    let nthreads = cfg.block.count();
    Block {
        independent,
        barrier: Barrier::new(nthreads),
        shared: (0..cfg.shared_bytes.div_ceil(16)).map(|_| UnsafeCell::new(u128::MAX)).collect(),
        warps: (0..nthreads.div_ceil(32))
            .map(|w| if independent { Warp::independent() } else { Warp::new((nthreads - 32 * w).min(32)) })
            .collect(),
    }
}

/// Runs `kernel` once per GPU thread, one thread after another on the calling thread (blocks and
/// threads in `order`). For kernels whose threads never cooperate (elementwise, gathers, one
/// thread per output): a barrier or a warp operation panics. Much faster than [`launch`], which
/// gives every GPU thread its own fiber (or OS thread).
///
/// # Safety
/// As [`launch`].
pub unsafe fn launch_independent<F: Fn(&EmuCtx)>(cfg: LaunchConfig, order: Order, kernel: F) {
    let nthreads = cfg.block.count();
    assert!(nthreads > 0 && cfg.grid.count() > 0, "empty launch {cfg:?}");
    assert!(nthreads <= 1024, "more than 1024 threads per block: {cfg:?}");
    let (g, d) = (cfg.grid, cfg.block);
    for b in permutation(cfg.grid.count(), order) {
        let bid = Dim3::new(b as u32 % g.x, (b as u32 / g.x) % g.y, b as u32 / (g.x * g.y));
        let block = new_block(cfg, true);
        for t in permutation(nthreads, order) {
            let tid = Dim3::new(t as u32 % d.x, (t as u32 / d.x) % d.y, t as u32 / (d.x * d.y));
            let ctx =
                EmuCtx { tid, bid, bdim: d, gdim: g, lane: t as u32 % 32, block: &block, warp: &block.warps[t / 32] };
            kernel(&ctx);
        }
    }
}

/// Runs the kernel described by `args` ([`crate::abi`]): with [`launch`] when its threads
/// cooperate, with [`launch_independent`] when they do not (which panics on a barrier or warp op,
/// so a kernel described as independent by mistake cannot pass silently).
///
/// # Safety
/// As [`launch`], for the pointers in `args`.
pub unsafe fn launch_args<K: Args>(cfg: LaunchConfig, order: Order, args: &K) {
    match K::THREADS {
        Threads::Cooperative => launch(cfg, order, |c| args.run(c)),
        Threads::Independent => launch_independent(cfg, order, |c| args.run(c)),
    }
}

struct AssertSync<T>(T);
unsafe impl<T> Sync for AssertSync<T> {}

impl<F: Fn(&EmuCtx)> AssertSync<F> {
    // A method, so that closures capture the wrapper (Sync), not the field.
    fn run(&self, ctx: &EmuCtx) {
        (self.0)(ctx)
    }
}

/// Runs `kernel` once per GPU thread of the launch: as fibers on the calling thread where this
/// target has them ([`fiber::SUPPORTED`]), else as OS threads ([`launch_os_threads`]).
///
/// # Safety
/// As for a real launch: every pointer the kernel dereferences must be valid for the accesses the
/// kernel makes, and different threads' writes must not race (unless through atomics).
pub unsafe fn launch<F: Fn(&EmuCtx)>(cfg: LaunchConfig, order: Order, kernel: F) {
    if fiber::SUPPORTED {
        launch_with(cfg, order, kernel, |threads, body| fiber::run(threads, body))
    } else {
        launch_os_threads(cfg, order, kernel)
    }
}

/// [`launch`] with one OS thread per GPU thread, on every target: the portable path, and the
/// check that the fiber path changes nothing but the speed.
///
/// # Safety
/// As [`launch`].
pub unsafe fn launch_os_threads<F: Fn(&EmuCtx)>(cfg: LaunchConfig, order: Order, kernel: F) {
    launch_with(cfg, order, kernel, |threads, body| {
        std::thread::scope(|s| {
            for &t in threads {
                std::thread::Builder::new()
                    .stack_size(fiber::STACK_BYTES)
                    .spawn_scoped(s, move || body(t))
                    .expect("spawn emulated GPU thread");
            }
        })
    })
}

/// Runs the block's threads (`start(thread ids in start order, body)` runs `body(t)` for each,
/// all alive at once), each of them running every block of the launch in turn: between blocks
/// all threads meet, and one re-poisons the shared memory before the next block starts.
unsafe fn launch_with<F: Fn(&EmuCtx)>(
    cfg: LaunchConfig,
    order: Order,
    kernel: F,
    start: impl FnOnce(&[usize], &(dyn Fn(usize) + Sync)),
) {
    let nthreads = cfg.block.count();
    assert!(nthreads > 0 && cfg.grid.count() > 0, "empty launch {cfg:?}");
    assert!(nthreads <= 1024, "more than 1024 threads per block: {cfg:?}");
    let kernel = AssertSync(kernel);
    let (g, d) = (cfg.grid, cfg.block);
    let blocks = permutation(cfg.grid.count(), order);
    let block = new_block(cfg, false);
    let between = Barrier::new(nthreads);
    let thread = |t: usize| {
        let tid = Dim3::new(t as u32 % d.x, (t as u32 / d.x) % d.y, t as u32 / (d.x * d.y));
        for (i, &b) in blocks.iter().enumerate() {
            if i > 0 {
                if between.wait() {
                    for cell in block.shared.iter() {
                        *cell.get() = u128::MAX;
                    }
                }
                between.wait();
            }
            let bid = Dim3::new(b as u32 % g.x, (b as u32 / g.x) % g.y, b as u32 / (g.x * g.y));
            let ctx =
                EmuCtx { tid, bid, bdim: d, gdim: g, lane: t as u32 % 32, block: &block, warp: &block.warps[t / 32] };
            kernel.run(&ctx)
        }
    };
    start(&thread_start_order(nthreads, order), &thread);
}
