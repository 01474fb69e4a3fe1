//! Opt-in time accounting for `facex bench --profile`: where a forward pass or a training step
//! spends its time, per model stage and per op kind, with the work done (FLOPs, bytes) so that
//! the bench can print rates as a fraction of the machine's measured peak ([`peak`]).
//!
//! Off by default; then [`op`] costs one relaxed atomic load and returns an empty guard. When on,
//! the outermost op in flight is timed and its time added to the (stage, kind) cell of the
//! current stage, a label the model sets with [`stage`]. An op that calls other ops (conv2d's
//! GEMM, an attention made of matmuls and a softmax) counts once, as itself, and so do ops that
//! rayon workers run inside it. This assumes ops are issued from one thread at a time, which is
//! how the model and the trainer run them; it is meant for benches, not for a server.

pub mod peak;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What an op is, for the profile's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Matrix products (matmul, linear); their FLOPs are 2·m·n·k.
    Gemm,
    /// conv2d and its transpose (im2col + GEMM) and their gradients.
    Conv,
    /// The fused window attention (scores, softmax and weighted sum in one pass); 4·n²·d FLOPs
    /// per window and head.
    Attention,
    Softmax,
    LayerNorm,
    Gelu,
    /// Unary and binary elementwise ops (add, mul, exp, ...).
    Elementwise,
    /// Sums, means and other reductions.
    Reduce,
    /// Data movement: contiguous copies, cat, gather, index_select, window shuffles.
    Copy,
    /// Resizing (bilinear, area) and pooling.
    Resample,
    /// The optimizer's parameter update.
    Optimizer,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Gemm,
        Kind::Conv,
        Kind::Attention,
        Kind::Softmax,
        Kind::LayerNorm,
        Kind::Gelu,
        Kind::Elementwise,
        Kind::Reduce,
        Kind::Copy,
        Kind::Resample,
        Kind::Optimizer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gemm => "gemm",
            Kind::Conv => "conv",
            Kind::Attention => "attention",
            Kind::Softmax => "softmax",
            Kind::LayerNorm => "layernorm",
            Kind::Gelu => "gelu",
            Kind::Elementwise => "elementwise",
            Kind::Reduce => "reduce",
            Kind::Copy => "copy",
            Kind::Resample => "resample",
            Kind::Optimizer => "optimizer",
        }
    }

    /// Whether the kind is bound by arithmetic (rate in FLOP/s) rather than memory (bytes/s).
    pub fn compute_bound(self) -> bool {
        matches!(self, Kind::Gemm | Kind::Conv | Kind::Attention)
    }
}

/// One cell of the profile: the time of every outermost op of `kind` run while `stage` was set.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub stage: &'static str,
    pub kind: Kind,
    pub seconds: f64,
    pub calls: u64,
    pub flops: f64,
    pub bytes: f64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Ops in flight (any thread): only the outermost one is timed.
static DEPTH: AtomicU32 = AtomicU32::new(0);
static STAGE: Mutex<&'static str> = Mutex::new("other");
static TABLE: Mutex<Vec<Record>> = Mutex::new(Vec::new());
static GEMM_SHAPES: Mutex<Vec<GemmRecord>> = Mutex::new(Vec::new());

/// Every f32/bf16 GEMM call of one shape and operand layout (nested ones included: the GEMM
/// inside a conv counts here too), for the bench's table of products by shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmRecord {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// How A [m, k] and B [k, n] are laid out: 'N' rows contiguous, 'T' columns contiguous
    /// (a transposed view), 'S' neither.
    pub layout: [char; 2],
    /// Called from a rayon worker, inside an op that runs such calls side by side (a conv per
    /// image): `seconds` sums each call's wall time, so overlapping calls count twice and the
    /// rate computed from it understates the product's.
    pub concurrent: bool,
    pub calls: u64,
    pub seconds: f64,
}

/// Adds one GEMM call to the shape table (the caller checks [`enabled`]).
pub fn gemm_call(m: usize, n: usize, k: usize, layout: [char; 2], seconds: f64) {
    let concurrent = rayon::current_thread_index().is_some();
    let mut table = GEMM_SHAPES.lock().unwrap();
    let key = (m, n, k, layout, concurrent);
    match table.iter_mut().find(|r| (r.m, r.n, r.k, r.layout, r.concurrent) == key) {
        Some(r) => {
            r.calls += 1;
            r.seconds += seconds;
        }
        None => table.push(GemmRecord { m, n, k, layout, concurrent, calls: 1, seconds }),
    }
}

/// The GEMM shape table so far; it is cleared.
pub fn take_gemm_shapes() -> Vec<GemmRecord> {
    std::mem::take(&mut *GEMM_SHAPES.lock().unwrap())
}

/// Turn accounting on or off (it starts off). Turning it on clears the table.
pub fn enable(on: bool) {
    if on {
        TABLE.lock().unwrap().clear();
        GEMM_SHAPES.lock().unwrap().clear();
    }
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The records so far, in the order their cells first appeared; the table is cleared.
pub fn take() -> Vec<Record> {
    std::mem::take(&mut *TABLE.lock().unwrap())
}

/// Times one op while alive (see the module doc). Build it with [`op`].
#[must_use = "the op is timed until the guard is dropped"]
pub enum OpGuard {
    /// Accounting was off when the op started.
    Off,
    /// Inside another timed op: its time belongs to that op.
    Nested,
    Timed {
        kind: Kind,
        start: Instant,
        flops: f64,
        bytes: f64,
    },
}

/// Start timing an op of `kind` doing `flops` arithmetic and moving `bytes` of memory (either
/// may be 0 when it does not apply). A no-op when accounting is off or an op is already timed.
#[inline]
pub fn op(kind: Kind, flops: f64, bytes: f64) -> OpGuard {
    if !ENABLED.load(Ordering::Relaxed) {
        return OpGuard::Off;
    }
    if DEPTH.fetch_add(1, Ordering::AcqRel) > 0 {
        return OpGuard::Nested;
    }
    OpGuard::Timed { kind, start: Instant::now(), flops, bytes }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        let (kind, start, flops, bytes) = match *self {
            OpGuard::Off => return,
            OpGuard::Nested => {
                DEPTH.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            OpGuard::Timed { kind, start, flops, bytes } => (kind, start, flops, bytes),
        };
        DEPTH.fetch_sub(1, Ordering::AcqRel);
        let seconds = start.elapsed().as_secs_f64();
        let stage = *STAGE.lock().unwrap();
        let mut table = TABLE.lock().unwrap();
        match table.iter_mut().find(|r| r.stage == stage && r.kind == kind) {
            Some(r) => {
                r.seconds += seconds;
                r.calls += 1;
                r.flops += flops;
                r.bytes += bytes;
            }
            None => table.push(Record { stage, kind, seconds, calls: 1, flops, bytes }),
        }
    }
}

/// Sets the current stage while alive and restores the previous one when dropped.
#[must_use = "the stage holds until the guard is dropped"]
pub struct StageGuard {
    previous: Option<&'static str>,
}

/// Label the ops that follow with `name` until the guard drops (stages nest: the innermost wins).
pub fn stage(name: &'static str) -> StageGuard {
    if !ENABLED.load(Ordering::Relaxed) {
        return StageGuard { previous: None };
    }
    let mut s = STAGE.lock().unwrap();
    let previous = std::mem::replace(&mut *s, name);
    StageGuard { previous: Some(previous) }
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if let Some(p) = self.previous {
            *STAGE.lock().unwrap() = p;
        }
    }
}

/// FLOPs of `[.., m, k] @ [.., k, n]` with broadcast batch dims: 2·m·k·n per batch item (0 for
/// shapes matmul refuses).
pub fn matmul_flops(a: &[usize], b: &[usize]) -> f64 {
    if a.len() < 2 || b.len() < 2 {
        return 0.0;
    }
    let (m, k, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
    let batch_a: usize = a[..a.len() - 2].iter().product();
    let batch_b: usize = b[..b.len() - 2].iter().product();
    2.0 * (batch_a.max(batch_b) * m * k * n) as f64
}

/// Bytes of `n` elements of `dtype` read `reads` times and written once: the memory floor of an
/// elementwise op with `reads` inputs of the output's size (a copy: one).
pub fn traffic(n: usize, reads: usize, dtype: crate::DType) -> f64 {
    (n * (reads + 1) * dtype.size_in_bytes()) as f64
}

/// [`traffic`] of f32 values.
pub fn f32_traffic(n: usize, reads: usize) -> f64 {
    traffic(n, reads, crate::DType::F32)
}

// The accounting's test is `tensor/tests/profile.rs`: the table is process-wide, and any other
// test's op running at the same time would nest under or beside its ops.
