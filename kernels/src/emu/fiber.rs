//! Fibers: the GPU threads of a block as user-space threads on the calling OS thread.
//!
//! An emulated block of 256 threads meets at a barrier for every `__syncthreads` and at a warp
//! rendezvous for every shuffle, `ldmatrix` and `mma`. As OS threads, each meeting costs every
//! thread a trip through the kernel scheduler (a `sched_yield` and a context switch, about 2 µs):
//! those switches were the emulator's whole cost (80% of its time in the kernel). As fibers, a
//! switch is six register pushes, a stack-pointer swap and six pops.
//!
//! [`run`] starts `n` fibers. A fiber runs until it must [`wait`] for a barrier to open (or
//! returns); then the first fiber in the caller's order that can run, runs. So the schedule is
//! deterministic and adversarial: the first warp in the order (the emulator starts threads warp by
//! warp) runs ahead until it waits for the others at `__syncthreads`, and every lane runs its code
//! between two warp operations before the next lane starts. A kernel that reads shared memory
//! before another warp has written it, or overwrites it before another warp has read it (a missing
//! barrier), sees poison or the wrong values, under one test order or the other. A fiber that
//! waits costs nothing until the barrier it waits on opens.
//!
//! When no fiber can run and some have not finished, the block is deadlocked (a thread returned
//! or diverged before a barrier the others wait at): [`run`] panics saying so, where OS threads
//! would wait forever.
//!
//! A fiber that panics ends the run: the others are abandoned where they stand (their stacks are
//! reclaimed without unwinding them, which leaks whatever they own, as `mem::forget` would) and the
//! panic resumes on the calling thread.
//!
//! Only x86-64 Linux has the switch (see [`SUPPORTED`]); elsewhere the emulator uses one OS thread
//! per GPU thread ([`super::launch_os_threads`]), which is slower and otherwise the same.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether this target has the fiber switch.
pub const SUPPORTED: bool = cfg!(all(target_arch = "x86_64", target_os = "linux"));

/// Bytes of stack per fiber (the OS-thread path gives its threads the same).
pub const STACK_BYTES: usize = 256 << 10;

/// Returns once `generation` differs from `seen` (a barrier has opened): on a fiber, the
/// scheduler runs others meanwhile; on an OS thread, the thread yields until then.
pub fn wait(generation: &AtomicUsize, seen: usize) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if imp::wait_fiber(generation, seen) {
        return;
    }
    while generation.load(Ordering::Acquire) == seen {
        std::thread::yield_now();
    }
}

/// Called by a barrier's last arrival: fibers waiting on it can run again.
pub fn opened() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    imp::opened();
}

/// Runs `body(i)` for every `i` in `order`, each on its own fiber, until all have returned;
/// `order` is also the fibers' priority. Panics (resuming the fiber's panic) if one of them
/// panics, and panics if they deadlock.
///
/// # Panics
/// Where [`SUPPORTED`] is false, or when called from inside a fiber.
pub fn run(order: &[usize], body: &(dyn Fn(usize) + Sync)) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    return imp::run(order, body);
    #[allow(unreachable_code)]
    {
        let _ = (order, body);
        panic!("emu::fiber::run: no fiber switch on this target (emu::fiber::SUPPORTED is false)")
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::STACK_BYTES;
    use std::alloc::{alloc, dealloc, Layout};
    use std::any::Any;
    use std::cell::{Cell, RefCell};
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};

    // `fiber_switch(save, to)`: pushes the callee-saved registers (System V: rbx, rbp, r12-r15),
    // stores the stack pointer in `*save`, loads `to` and pops the registers saved there. The
    // compiler sees an ordinary call, so it keeps nothing else in registers across it.
    //
    // `fiber_start` is where a new fiber's first switch returns to: r12 holds the fiber, r13 the
    // function to call with it (which never returns). `.cfi_undefined rip` marks the bottom of
    // the fiber's stack for unwinders and backtraces.
    std::arch::global_asm!(
        ".text",
        ".globl facex_emu_fiber_switch",
        ".type facex_emu_fiber_switch, @function",
        "facex_emu_fiber_switch:",
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        ".size facex_emu_fiber_switch, . - facex_emu_fiber_switch",
        ".globl facex_emu_fiber_start",
        ".type facex_emu_fiber_start, @function",
        "facex_emu_fiber_start:",
        ".cfi_startproc",
        ".cfi_undefined rip",
        "mov rdi, r12",
        "and rsp, -16",
        "call r13",
        "ud2",
        ".cfi_endproc",
        ".size facex_emu_fiber_start, . - facex_emu_fiber_start",
    );

    extern "C" {
        fn facex_emu_fiber_switch(save: *mut *mut u8, to: *mut u8);
        fn facex_emu_fiber_start();
    }

    /// Written at the low end of every stack and checked each time its fiber switches back to the
    /// scheduler: a stack that grew past its end has overwritten it (there is no guard page).
    const CANARY: u64 = 0x5afe_57ac_cafe_f00d;
    const CANARY_WORDS: usize = 8;

    struct Stack(*mut u8);

    impl Stack {
        fn layout() -> Layout {
            Layout::from_size_align(STACK_BYTES, 16).unwrap()
        }
        fn new() -> Stack {
            // Uninitialised: the OS maps pages as a fiber first touches them.
            let p = unsafe { alloc(Stack::layout()) };
            assert!(!p.is_null(), "emu::fiber: out of memory for a {STACK_BYTES}-byte stack");
            Stack(p)
        }
        fn arm_canary(&self) {
            let words = self.0 as *mut u64;
            (0..CANARY_WORDS).for_each(|i| unsafe { words.add(i).write(CANARY) });
        }
        fn canary_intact(&self) -> bool {
            let words = self.0 as *const u64;
            (0..CANARY_WORDS).all(|i| unsafe { words.add(i).read() } == CANARY)
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            unsafe { dealloc(self.0, Stack::layout()) }
        }
    }

    struct Fiber {
        sp: *mut u8,
        stack: Stack,
        index: usize,
        done: bool,
        panic: Option<Box<dyn Any + Send>>,
        /// The barrier generation this fiber last waited on, and the value it saw (null: it never
        /// waited). It can run when the generation differs.
        waits_on: *const AtomicUsize,
        seen: usize,
    }

    impl Fiber {
        fn runnable(&self) -> bool {
            !self.done && (self.waits_on.is_null() || unsafe { &*self.waits_on }.load(Ordering::Acquire) != self.seen)
        }
    }

    /// The fibers of one [`run`] and the calling thread's saved stack pointer.
    struct Scheduler<'a> {
        main_sp: *mut u8,
        current: usize,
        /// A barrier opened since the scheduler last chose: fibers before `current` may run again.
        opened: bool,
        fibers: Vec<Fiber>,
        body: &'a (dyn Fn(usize) + Sync),
    }

    thread_local! {
        /// The scheduler this OS thread is running, while it runs one.
        static CURRENT: Cell<*mut Scheduler<'static>> = const { Cell::new(std::ptr::null_mut()) };
        /// Stacks kept between runs: a launch of many blocks starts its fibers once, but a test
        /// makes hundreds of launches.
        static POOL: RefCell<Vec<Stack>> = const { RefCell::new(Vec::new()) };
    }

    /// The first frame of every fiber: runs the body, records how it ended and switches back to
    /// the scheduler for good.
    extern "C" fn fiber_main(sched: *mut Scheduler<'static>) -> ! {
        unsafe {
            let (body, index) = {
                let s = &*sched;
                (s.body, s.fibers[s.current].index)
            };
            let result = catch_unwind(AssertUnwindSafe(|| body(index)));
            let s = &mut *sched;
            let f = &mut s.fibers[s.current];
            f.done = true;
            f.panic = result.err();
            let (save, to) = (&raw mut f.sp, s.main_sp);
            facex_emu_fiber_switch(save, to);
        }
        unreachable!("a finished fiber was resumed")
    }

    pub(super) fn wait_fiber(generation: &AtomicUsize, seen: usize) -> bool {
        let sched = CURRENT.with(|c| c.get());
        if sched.is_null() {
            return false;
        }
        unsafe {
            let s = &mut *sched;
            let f = &mut s.fibers[s.current];
            (f.waits_on, f.seen) = (generation, seen);
            let (save, to) = (&raw mut f.sp, s.main_sp);
            // The scheduler resumes this fiber only once the generation has changed; the next wait
            // overwrites the fields, so they need no clearing.
            facex_emu_fiber_switch(save, to);
        }
        true
    }

    pub(super) fn opened() {
        let sched = CURRENT.with(|c| c.get());
        if !sched.is_null() {
            unsafe { (*sched).opened = true };
        }
    }

    pub(super) fn run(order: &[usize], body: &(dyn Fn(usize) + Sync)) {
        assert!(CURRENT.with(|c| c.get().is_null()), "emu::fiber::run called from inside a fiber");
        let mut stacks: Vec<Stack> = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let keep = p.len().saturating_sub(order.len());
            p.split_off(keep)
        });
        stacks.resize_with(order.len(), Stack::new);
        // The scheduler outlives every fiber's use of it: `run` returns only after all of them
        // have finished or been abandoned.
        let body: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(body) };
        // A raw pointer, not a Box in use: the fibers reach the scheduler through CURRENT while
        // this frame is suspended in a switch.
        let sched = Box::into_raw(Box::new(Scheduler {
            main_sp: std::ptr::null_mut(),
            current: 0,
            opened: false,
            fibers: Vec::with_capacity(order.len()),
            body,
        }));
        for (&index, stack) in order.iter().zip(stacks) {
            stack.arm_canary();
            // The first switch into the fiber pops r15, r14, r13 (fiber_main), r12 (the
            // scheduler), rbx, rbp and returns to fiber_start.
            let frame: [usize; 7] = [
                0,
                0,
                fiber_main as *const () as usize,
                sched as usize,
                0,
                0,
                facex_emu_fiber_start as *const () as usize,
            ];
            let sp = unsafe {
                let sp = (stack.0.add(STACK_BYTES) as *mut usize).sub(8);
                std::ptr::copy_nonoverlapping(frame.as_ptr(), sp, frame.len());
                sp as *mut u8
            };
            let fiber = Fiber { sp, stack, index, done: false, panic: None, waits_on: std::ptr::null(), seen: 0 };
            unsafe { (*sched).fibers.push(fiber) };
        }
        CURRENT.with(|c| c.set(sched));
        let mut live = order.len();
        let mut failure = None;
        // Every fiber before `from` is waiting (or done): the first that can run is at or after it,
        // unless a barrier has opened since.
        let mut from = 0;
        while live > 0 {
            let next = unsafe {
                let s = &mut *sched;
                if std::mem::take(&mut s.opened) {
                    from = 0;
                }
                (from..s.fibers.len()).find(|&i| s.fibers[i].runnable())
            };
            let Some(i) = next else {
                failure = Some(Box::new(format!(
                    "emulated block deadlocked: {live} of {} threads wait at a barrier that cannot open \
                     (a thread returned before a __syncthreads, or a warp diverged before a warp operation)",
                    order.len()
                )) as Box<dyn Any + Send>);
                break;
            };
            unsafe {
                let to = {
                    let s = &mut *sched;
                    s.current = i;
                    s.fibers[i].sp
                };
                facex_emu_fiber_switch(&raw mut (*sched).main_sp, to);
                let f = &mut (&mut *sched).fibers[i];
                if !f.stack.canary_intact() {
                    // What lies below the stack may be corrupt too: stop before anything reads it.
                    eprintln!("emu::fiber: an emulated GPU thread overflowed its {STACK_BYTES}-byte stack");
                    std::process::abort();
                }
                if f.done {
                    live -= 1;
                    if let Some(p) = f.panic.take() {
                        failure = Some(p);
                        break;
                    }
                }
            }
            from = i + 1;
        }
        CURRENT.with(|c| c.set(std::ptr::null_mut()));
        let sched = unsafe { Box::from_raw(sched) };
        POOL.with(|p| p.borrow_mut().extend(sched.fibers.into_iter().map(|f| f.stack)));
        if let Some(p) = failure {
            resume_unwind(p);
        }
    }
}
