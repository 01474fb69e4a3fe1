//! The bounded fuzz run of CI: every fuzz target's body (`fuzz/bodies.rs`, the same functions
//! libFuzzer runs) on its committed seeds and on a fixed number of mutants of them.
//!
//! This is not coverage-guided (that needs nightly and an instrumented build, 5 to 8 minutes on
//! CI's 2 cores: `scripts/fuzz.sh` does it by hand). It is a cheap, deterministic net: the same
//! mutants every run, chosen from the classic libFuzzer moves (bit flips, interesting integers
//! over length and count fields, truncation, deletion, duplication, splicing two seeds). A panic
//! or an abort in a parser fails the test; the failing input is written under the system temp
//! folder, named in the message, ready for `fuzz/artifacts/` or a regression test.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tensor::SplitMix64;

/// Mutants for the fast targets and for the two that decode images or write dataset files: about
/// 3 s and 10 s per target on one core of a 2-core AMD EPYC (Zen 4) in the test profile.
const MUTANTS_FAST: usize = 200_000;
const MUTANTS_SLOW: usize = 20_000;

/// Integers that sit on parser edges: zero, sign bits, all ones, sizes just past u16/u32.
const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz seeds {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// One to four stacked mutations of `input`; `other` is a second seed for splicing.
fn mutate(rng: &mut SplitMix64, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut x = input.to_vec();
    let below = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    for _ in 0..1 + below(rng, 4) {
        let len = x.len();
        match below(rng, 7) {
            0 if len > 0 => {
                let i = below(rng, len);
                x[i] ^= 1 << below(rng, 8);
            }
            1 if len > 0 => {
                // An interesting integer over 1, 2, 4 or 8 bytes, either byte order.
                let width = 1 << below(rng, 4);
                let v = INTERESTING[below(rng, INTERESTING.len())];
                let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
                let src = if rng.next_u64().is_multiple_of(2) { &le[..width] } else { &be[8 - width..] };
                let at = below(rng, len);
                let end = (at + width).min(len);
                x[at..end].copy_from_slice(&src[..end - at]);
            }
            2 if len > 0 => x.truncate(below(rng, len)),
            3 if len > 0 => {
                let at = below(rng, len);
                let n = 1 + below(rng, (len - at).min(64));
                x.drain(at..(at + n).min(len));
            }
            4 if len > 0 => {
                let at = below(rng, len);
                let n = 1 + below(rng, (len - at).min(64));
                let chunk = x[at..(at + n).min(len)].to_vec();
                let to = below(rng, len + 1);
                x.splice(to..to, chunk);
            }
            5 => {
                let at = below(rng, len + 1);
                let cut = below(rng, other.len() + 1);
                x.truncate(at);
                x.extend_from_slice(&other[cut..]);
            }
            _ => {
                let at = below(rng, len + 1);
                let n = 1 + below(rng, 16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                x.splice(at..at, bytes);
            }
        }
    }
    x
}

/// Run `body` on `input`; on a panic, keep the input and fail naming it.
fn run_one(target: &str, body: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
        let keep = std::env::temp_dir().join(format!("facex-fuzz-crash-{target}-{}", std::process::id()));
        std::fs::write(&keep, input).unwrap();
        panic!("fuzz target {target}: {what} panicked; the input is in {}", keep.display());
    }
}

fn bounded_run(target: &str, mutants: usize) {
    let body = bodies::TARGETS.iter().find(|(name, _)| *name == target).expect("a target in bodies::TARGETS").1;
    let seeds = seeds(target);
    assert!(!seeds.is_empty(), "fuzz target {target}: no seeds in fuzz/corpus/{target}");
    let t = Instant::now();
    for (path, bytes) in &seeds {
        run_one(target, body, bytes, &format!("seed {}", path.display()));
    }
    // Seeded per target, so adding a target changes no other target's mutants.
    let mut rng = SplitMix64(target.bytes().fold(0xF022_u64, |h, b| h.wrapping_mul(31) ^ b as u64));
    for i in 0..mutants {
        let (path, a) = &seeds[i % seeds.len()];
        let b = &seeds[(rng.next_u64() % seeds.len() as u64) as usize].1;
        let x = mutate(&mut rng, a, b);
        run_one(target, body, &x, &format!("mutant {i} of {}", path.display()));
    }
    // The executions, for docs/fuzzing.md (seen with --nocapture).
    println!("{target}: {} seeds + {mutants} mutants in {:.1} s", seeds.len(), t.elapsed().as_secs_f64());
}

#[test]
fn checkpoint_zip_pickle() {
    bounded_run("checkpoint_zip_pickle", MUTANTS_FAST);
}

#[test]
fn safetensors() {
    bounded_run("safetensors", MUTANTS_FAST);
}

#[test]
fn image() {
    bounded_run("image", MUTANTS_SLOW);
}

#[test]
fn annotations() {
    bounded_run("annotations", MUTANTS_SLOW);
    let _ = std::fs::remove_dir_all(bodies::annotations_root());
}

#[test]
fn mat_v5() {
    bounded_run("mat_v5", MUTANTS_FAST);
}

#[test]
fn hdf5() {
    bounded_run("hdf5", MUTANTS_FAST);
}

/// The mutator itself: deterministic, and it does change its input.
#[test]
fn mutants_are_deterministic_and_differ_from_the_seed() {
    let seed: Vec<u8> = (0..=255).collect();
    let run = || {
        let mut rng = SplitMix64(7);
        (0..50).map(|_| mutate(&mut rng, &seed, b"other")).collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(a.iter().filter(|m| **m != seed).count() >= 45, "most mutants differ from the seed");
}
