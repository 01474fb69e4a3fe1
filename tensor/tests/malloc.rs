//! `keep_freed_memory`: a large block freed and allocated again comes back without page faults.
//! Its own test binary, because the setting is process-wide.

/// Minor page faults of this thread so far (Linux `getrusage(RUSAGE_THREAD)`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_minor_faults() -> i64 {
    // struct rusage on 64-bit Linux: two timevals (4 longs), then 14 longs; ru_minflt is the 5th.
    let mut usage = [0i64; 18];
    extern "C" {
        fn getrusage(who: i32, usage: *mut i64) -> i32;
    }
    const RUSAGE_THREAD: i32 = 1;
    // SAFETY: `usage` is as large as struct rusage and suitably aligned.
    assert_eq!(unsafe { getrusage(RUSAGE_THREAD, usage.as_mut_ptr()) }, 0);
    usage[8]
}

/// Faults taken while a 48 MiB buffer is allocated, written and dropped: above the 32 MiB up to
/// which glibc's adaptive threshold would keep it anyway, below the 64 MiB heap of a thread's
/// arena (a test runs off the main thread).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn faults_of_one_round() -> i64 {
    let before = thread_minor_faults();
    let mut v = vec![0u8; 48 << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&v);
    drop(v);
    thread_minor_faults() - before
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_memory_is_reused_without_page_faults() {
    // Plain glibc: each round maps fresh pages (12288 of 4 KiB).
    let plain = faults_of_one_round().min(faults_of_one_round());
    assert!(plain > 6000, "expected fresh pages to fault, got {plain} faults");
    assert!(tensor::cpu::malloc::keep_freed_memory());
    let first = faults_of_one_round();
    let second = faults_of_one_round();
    assert!(first > 6000, "the heap grows once: {first} faults");
    assert!(second < plain / 20, "reused block took {second} faults (plain glibc: {plain})");
}
