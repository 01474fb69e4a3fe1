//! A warp's rendezvous: every lane publishes some registers, waits for the others and reads them
//! all. Shuffles, votes, `ldmatrix` and `mma` are all built on [`Warp::exchange`].
//!
//! The slots are double-buffered: exchange k writes set k % 2. A lane can write set k % 2 again
//! only in exchange k + 2, after passing exchange k + 1's barrier, which every lane reaches only
//! after reading exchange k's values. So one barrier per exchange suffices, not two: each barrier
//! costs a context switch per lane, the emulator's main cost.

use super::barrier::YieldBarrier as Barrier;
use std::cell::UnsafeCell;

/// Registers one lane can publish at once (`mma` publishes A's 4 and B's 2).
const SLOTS: usize = 6;

pub struct Warp {
    lanes: usize,
    /// A warp of an independent launch (threads run one by one): exchanges cannot happen.
    independent: bool,
    barrier: Barrier,
    slots: UnsafeCell<[[[u32; SLOTS]; 32]; 2]>,
}

// Each lane writes only its own slot of the current set; the barrier orders the reads (module doc).
unsafe impl Sync for Warp {}

impl Warp {
    pub fn new(lanes: usize) -> Self {
        Warp { lanes, independent: false, barrier: Barrier::new(lanes), slots: UnsafeCell::new([[[0; SLOTS]; 32]; 2]) }
    }

    /// The warp of a launch whose threads run one after another.
    pub fn independent() -> Self {
        Warp { lanes: 32, independent: true, barrier: Barrier::new(1), slots: UnsafeCell::new([[[0; SLOTS]; 32]; 2]) }
    }

    /// Publishes `vals` for `lane` and returns every lane's values.
    ///
    /// All 32 lanes must call it together (`.sync.aligned` semantics); a partial warp is a kernel
    /// bug for warp-level operations, so it panics with a clear message.
    pub fn exchange<const N: usize>(&self, lane: u32, vals: [u32; N]) -> [[u32; N]; 32] {
        assert!(!self.independent, "warp-level op in a launch_independent launch: use emu::launch");
        assert!(self.lanes == 32, "warp-level op in a partial warp ({} lanes): use blocks of 32k threads", self.lanes);
        let lane = lane as usize;
        // This lane has not arrived, so the barrier cannot open before the read.
        let set = self.barrier.generation() % 2;
        unsafe {
            let slots = &mut (*self.slots.get())[set];
            slots[lane][..N].copy_from_slice(&vals);
        }
        self.barrier.wait();
        let mut out = [[0u32; N]; 32];
        unsafe {
            let slots = &(*self.slots.get())[set];
            for (o, s) in out.iter_mut().zip(slots.iter()) {
                o.copy_from_slice(&s[..N]);
            }
        }
        out
    }
}
