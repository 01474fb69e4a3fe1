//! conv2d and conv_transpose2d (NCHW), PyTorch semantics (zero padding, floor output size).
//!
//! Both lower to the one GEMM in `cpu::gemm`: conv2d through im2col (`W[O, C·kh·kw] · col`,
//! `conv2d.rs`), conv_transpose2d through the transposed product (`Wᵀ[O·kh·kw, C] · x`) followed
//! by col2im, a scatter-add into the output (`conv_transpose.rs`). The weight gradient of both is
//! one im2col GEMM (`weight_grad.rs`). Work is split over the batch with rayon; inside one image
//! im2col rows and col2im output channels are split too, and the GEMM does its own splitting.
//! `upscale_masks.rs` runs SAM's output upscaling (two 2x2 transposed convs, a LayerNorm2d, two
//! GELUs) and the product that reads its output (the parsing head at inference) per block of rows.
//! This file holds the shape checks, the geometry, and the NCHW helpers that pool.rs and
//! interp.rs share.

use crate::{bail, CpuStorage, DType, Error, Layout, Result, Tensor};
use half::{bf16, f16};

mod conv2d;
mod conv_transpose;
#[cfg(test)]
mod tests;
mod upscale_masks;
mod weight_grad;

pub use upscale_masks::UpscalerRef;

/// im2col is built in tiles of output rows so its buffer stays near this many floats (16 MiB),
/// whatever the image size (MTCNN's first conv on a large photo would otherwise need gigabytes).
const COL_BUDGET: usize = 1 << 22;

/// im2col / col2im work below this many floats per task stays on one thread.
const PAR_MIN_FLOATS: usize = 1 << 15;

/// The dims of a rank-4 float (NCHW) tensor, or an error naming `op`.
pub(crate) fn nchw_dims(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    x.expect_rank(op, 4)?;
    x.expect_float(op)?;
    let s = x.shape();
    Ok([s[0], s[1], s[2], s[3]])
}

/// f32 results as a contiguous tensor of the float `dtype` (f16/bf16 are rounded back).
pub(crate) fn from_f32_vec(v: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    debug_assert!(dtype.is_float());
    let storage = match dtype {
        DType::F16 => CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        _ => CpuStorage::F32(v),
    };
    Tensor::from_storage(storage, Layout::contiguous(shape))
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

/// A bias must be a [O] tensor of the input's dtype.
fn check_bias(op: &'static str, x: &Tensor, bias: Option<&Tensor>, o: usize) -> Result<()> {
    if let Some(b) = bias {
        same_dtype(op, x, b)?;
        if b.shape() != [o] {
            return Err(Error::BadShape { op, shape: b.shape().to_vec(), expected: format!("bias of shape [{o}]") });
        }
    }
    Ok(())
}

fn check_common(
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    stride: (usize, usize),
) -> Result<([usize; 4], [usize; 4])> {
    let xd = nchw_dims(op, x)?;
    let wd = nchw_dims(op, weight)?;
    same_dtype(op, x, weight)?;
    if xd[1] == 0 || xd[2] == 0 || xd[3] == 0 {
        bail!(op, "input {:?} has an empty channel or spatial dimension", x.shape());
    }
    if wd[2] == 0 || wd[3] == 0 {
        bail!(op, "weight {:?} has an empty kernel", weight.shape());
    }
    if stride.0 == 0 || stride.1 == 0 {
        bail!(op, "stride {stride:?} must be positive (input {:?}, weight {:?})", x.shape(), weight.shape());
    }
    Ok((xd, wd))
}

/// Geometry of one 2-D convolution (also read the other way round by the transposed conv).
#[derive(Clone, Copy, Debug)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    /// conv2d: output size; conv_transpose2d: its output size too (the big side).
    ho: usize,
    wo: usize,
}

/// The indices j in 0..count whose mapped index j·s + b - p lies in 0..target (im2col: output
/// column to input column; col2im: input column to output column).
fn index_range(count: usize, target: usize, s: usize, p: usize, b: usize) -> std::ops::Range<usize> {
    let hi = if target + p > b { ((target - 1 + p - b) / s + 1).min(count) } else { 0 };
    let lo = if p > b { (p - b).div_ceil(s).min(hi) } else { 0 };
    lo..hi
}

/// Helpers shared by the conv, pool and interp tests.
#[cfg(test)]
pub(crate) mod test_util {
    use crate::{DType, Tensor};

    /// A random NCHW tensor of `shape`, laid out as `kind` says: 0 contiguous, 1 a permuted
    /// NHWC buffer, 2 a narrowed view of a wider buffer, 3 every other column of a wider buffer.
    pub(crate) fn nchw_input(shape: [usize; 4], seed: u64, kind: u8, dtype: DType) -> Tensor {
        let [n, c, h, w] = shape;
        match kind % 4 {
            0 => Tensor::randn(&shape, seed, dtype),
            1 => Tensor::randn(&[n, h, w, c], seed, dtype).permute(&[0, 3, 1, 2]).unwrap(),
            2 => Tensor::randn(&[n, c + 1, h + 3, w], seed, dtype).narrow(2, 2, h).unwrap().narrow(1, 1, c).unwrap(),
            _ => Tensor::randn(&[n, c, h, 2 * w], seed, dtype).slice_step(3, 1, 2 * w, 2).unwrap(),
        }
    }

    /// Checks `got` against an f64 reference within `tol · (1 + |ref|)`.
    pub(crate) fn assert_close(op: &str, got: &Tensor, want: &[f64], shape: &[usize], tol: f64) {
        assert_eq!(got.shape(), shape, "{op}: shape");
        let g = got.to_f64_vec().unwrap();
        for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{op}: element {i}: got {a}, want {b}");
        }
    }
}
