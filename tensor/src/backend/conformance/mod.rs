//! One conformance harness for every backend (in the spirit of ggml's `test-backend-ops`): each
//! op of [`Backend`] on seeded random inputs, compared with [`Reference`].
//!
//! The same host tensors are uploaded to both backends (op-dtype inputs are rounded to the op's
//! dtype on the host first, so both sides see identical bf16 values); the outputs are downloaded
//! and compared as f32. The error measure is the largest absolute difference divided by the
//! output's scale (its largest magnitude), against a tolerance per op and dtype:
//!
//! - gathers (permute, windows, patch merging) and single-rounding elementwise ops (add, mul,
//!   ReLU): exact;
//! - f32: `1e-5` for reductions and interpolation, `2e-5` for dot products (GEMM, attention,
//!   transposed convolution), `2e-6` for the erf-form GELU (the kernels' erf is a rational
//!   approximation within 2e-7);
//! - bf16: `1e-2`: both sides compute in f32 and round once, and two f32 values a hair apart can
//!   round to neighbouring bf16 values, one bf16 step (at most 2^-7 of the value) apart. Attention
//!   with heads up to 64 wide runs on the tensor cores (`kernels::attention_tc`), which also round
//!   the softmax weights to bf16 before `P·V`, as FlashAttention does: measured 4-6e-3 here.
//!
//! Each op is also called with wrong shapes or dtypes: both backends must refuse with the same
//! [`Error`] variant naming the same op.
//!
//! ```no_run
//! use tensor::backend::conformance::{check_all, ensure_passed, report, Cases};
//! use tensor::backend::emulator::Emulator;
//! use tensor::DType;
//!
//! let results = check_all(&Emulator::default(), DType::BF16, Cases::Small, 1);
//! println!("{}", report(&results));
//! ensure_passed(&results).unwrap();
//! ```

//!
//! The pieces: `ops.rs` is the op table (each op's name, parameters, tolerance and call),
//! `cases.rs` the cases (small odd shapes, the model's shapes, and the calls that must be refused),
//! and this file the runner that compares a backend with the reference and reports.

use super::reference::Reference;
use super::{Backend, DevTensor};
use crate::{DType, Error, Result, Tensor};
use cases::{error_cases, model_cases, small_cases, Case, Gen};
use ops::Kind;
use std::fmt::Write as _;

mod cases;
mod ops;

/// Which shapes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cases {
    /// Tiny shapes with odd sizes (fast enough for the emulator in CI).
    Small,
    /// The real FaceXFormer (Swin-B) shapes at batch 1 (for a GPU backend).
    Model,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub op: &'static str,
    /// Shapes and parameters (or, for an error case, what is wrong).
    pub case: String,
    /// An error case: the arguments are wrong and both backends must refuse them alike.
    pub expect_error: bool,
    pub dtype: DType,
    /// Largest |backend - reference| (infinite where the backend gave NaN or infinity).
    pub max_abs_err: f64,
    /// Largest |reference| (the output's scale).
    pub scale: f64,
    /// `max_abs_err / scale` (0 when both are 0).
    pub rel_err: f64,
    /// The bound on `rel_err`.
    pub tol: f64,
    pub passed: bool,
    /// Why it failed, or which error both backends returned for an error case.
    pub note: String,
}

fn upload_all<B: Backend>(b: &B, inputs: &[(Tensor, Kind)], dtype: DType) -> Result<Vec<DevTensor<B>>> {
    let other = if dtype == DType::F32 { DType::BF16 } else { DType::F32 };
    inputs
        .iter()
        .map(|(t, kind)| {
            let dt = match kind {
                Kind::Elem => dtype,
                Kind::F32 => DType::F32,
                Kind::Other => other,
                Kind::Bf16 => DType::BF16,
            };
            // Round on the host, so both backends get the same values whatever their conversion.
            b.upload(&t.to_dtype(dt), dt)
        })
        .collect()
}

/// Runs the op on `b` and downloads the result.
fn run_on<B: Backend>(b: &B, c: &Case, dtype: DType) -> Result<Tensor> {
    let ins = upload_all(b, &c.inputs, dtype)?;
    let out = c.op.run(b, &ins)?;
    if out.dtype() != dtype {
        return Err(Error::Device {
            op: c.op.name(),
            msg: format!("output dtype {:?}, expected {dtype:?}", out.dtype()),
        });
    }
    b.download(&out)
}

/// The variant and op of an error, the part two backends must agree on.
fn error_kind(e: &Error) -> (&'static str, &'static str) {
    match e {
        Error::ShapeMismatch { op, .. } => ("ShapeMismatch", op),
        Error::BadShape { op, .. } => ("BadShape", op),
        Error::DTypeMismatch { op, .. } => ("DTypeMismatch", op),
        Error::UnsupportedDType { op, .. } => ("UnsupportedDType", op),
        Error::DimOutOfRange { op, .. } => ("DimOutOfRange", op),
        Error::ElementCount { op, .. } => ("ElementCount", op),
        Error::InvalidArgument { op, .. } => ("InvalidArgument", op),
        Error::Device { op, .. } => ("Device", op),
    }
}

/// Compares the backend's output with the reference's.
fn compare(got: &Tensor, want: &Tensor) -> (f64, f64, String) {
    if got.shape() != want.shape() {
        return (f64::INFINITY, 0.0, format!("shape {:?}, reference {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (got.to_f64_vec().expect("host tensor"), want.to_f64_vec().expect("host tensor"));
    let (mut max_err, mut scale, mut worst) = (0.0f64, 0.0f64, None);
    for (i, (&gi, &wi)) in g.iter().zip(&w).enumerate() {
        let err = if gi.is_finite() && wi.is_finite() { (gi - wi).abs() } else { f64::INFINITY };
        scale = scale.max(if wi.is_finite() { wi.abs() } else { 0.0 });
        if err > max_err || (err.is_infinite() && worst.is_none()) {
            max_err = err;
            worst = Some((i, gi, wi));
        }
    }
    let note = match worst {
        Some((i, gi, wi)) if max_err > 0.0 => format!("worst at element {i}: {gi} vs {wi}"),
        _ => String::new(),
    };
    (max_err, scale, note)
}

fn check_case<B: Backend>(backend: &B, c: &Case, dtype: DType) -> CaseResult {
    let mut r = CaseResult {
        op: c.op.name(),
        case: c.describe(),
        expect_error: c.bad.is_some(),
        dtype,
        max_abs_err: 0.0,
        scale: 0.0,
        rel_err: 0.0,
        tol: c.op.tol(dtype),
        passed: false,
        note: String::new(),
    };
    let (got, want) = (run_on(backend, c, dtype), run_on(&Reference, c, dtype));
    match (c.bad, got, want) {
        (None, Ok(got), Ok(want)) => {
            let (err, scale, note) = compare(&got, &want);
            r.max_abs_err = err;
            r.scale = scale;
            r.rel_err = if err == 0.0 { 0.0 } else { err / scale };
            r.passed = r.rel_err <= r.tol;
            r.note = note;
        }
        (None, got, want) => {
            r.max_abs_err = f64::INFINITY;
            r.rel_err = f64::INFINITY;
            r.note = match (got, want) {
                (Err(e), Ok(_)) => format!("backend error: {e}"),
                (Ok(_), Err(e)) => format!("reference error: {e}"),
                (Err(e), Err(f)) => format!("backend error: {e}; reference error: {f}"),
                (Ok(_), Ok(_)) => unreachable!("handled above"),
            };
        }
        (Some(_), Err(e), Err(f)) => {
            r.passed = error_kind(&e) == error_kind(&f);
            r.note = if r.passed { format!("{e}") } else { format!("backend: {e}; reference: {f}") };
        }
        (Some(_), got, want) => {
            r.note = format!(
                "must be refused: backend {}, reference {}",
                got.map_or_else(|e| e.to_string(), |_| "accepted it".into()),
                want.map_or_else(|e| e.to_string(), |_| "accepted it".into()),
            );
        }
    }
    r
}

/// Runs every case of `cases` in `dtype` (F32 or BF16) on `backend` and on [`Reference`] with
/// inputs drawn from `seed`, then the error cases; one result per case.
pub fn check_all<B: Backend>(backend: &B, dtype: DType, cases: Cases, seed: u64) -> Vec<CaseResult> {
    check_matching(backend, dtype, cases, seed, |_| true)
}

/// As [`check_all`], only the cases of the ops for which `want(op name)` holds.
pub fn check_matching<B: Backend>(
    backend: &B,
    dtype: DType,
    cases: Cases,
    seed: u64,
    want: impl Fn(&str) -> bool,
) -> Vec<CaseResult> {
    let mut g = Gen { seed };
    let mut all = match cases {
        Cases::Small => small_cases(&mut g),
        Cases::Model => model_cases(&mut g),
    };
    all.extend(error_cases());
    all.iter().filter(|c| want(c.op.name())).map(|c| check_case(backend, c, dtype)).collect()
}

/// A table of the results, one line per case, failures marked.
pub fn report(results: &[CaseResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<18} {:<5} {:>10} {:>10} {:>9}  {:<4} case", "op", "dtype", "max abs", "rel", "tol", "ok");
    for r in results {
        let dt = if r.dtype == DType::F32 { "f32" } else { "bf16" };
        let ok = if r.passed { "ok" } else { "FAIL" };
        if r.expect_error {
            let _ = write!(s, "{:<18} {dt:<5} {:>32}  {ok:<4} {}", r.op, "refused", r.case);
        } else {
            let _ = write!(
                s,
                "{:<18} {dt:<5} {:>10.3e} {:>10.3e} {:>9.1e}  {ok:<4} {}",
                r.op, r.max_abs_err, r.rel_err, r.tol, r.case
            );
        }
        if !r.note.is_empty() && (!r.passed || r.expect_error) {
            let _ = write!(s, " -- {}", r.note);
        }
        s.push('\n');
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let _ = writeln!(s, "{} cases, {failed} failed", results.len());
    s
}

/// `Ok` when every case passed, else an error carrying the report's failing lines.
pub fn ensure_passed(results: &[CaseResult]) -> Result<()> {
    let failed: Vec<CaseResult> = results.iter().filter(|r| !r.passed).cloned().collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Device {
        op: "conformance",
        msg: format!("{} of {} cases failed:\n{}", failed.len(), results.len(), report(&failed)),
    })
}
