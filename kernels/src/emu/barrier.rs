//! A reusable barrier for emulated threads. A waiting fiber ([`super::fiber`]) is not run again
//! until the barrier opens; a waiting OS thread yields instead of sleeping (hundreds of threads
//! on a few cores, and every warp operation is a rendezvous: waking a herd through a mutex and a
//! condition variable dominated the run time).

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct YieldBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl YieldBarrier {
    pub fn new(n: usize) -> Self {
        YieldBarrier { n, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0) }
    }

    /// How many times the barrier has opened. A thread that has not yet arrived reads the count
    /// of the round it is about to join.
    pub fn generation(&self) -> usize {
        self.generation.load(Ordering::Acquire)
    }

    /// Blocks until `n` threads have called `wait`; returns true for exactly one of them (the
    /// last to arrive).
    pub fn wait(&self) -> bool {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            // Release: everything written before the barrier is visible to the waiters.
            self.generation.store(gen.wrapping_add(1), Ordering::Release);
            super::fiber::opened();
            return true;
        }
        super::fiber::wait(&self.generation, gen);
        false
    }
}
