//! The Tensor type: shared storage plus a layout. Cloning a tensor is cheap (an `Arc` bump).

use crate::layout::{contiguous_strides, resolve_dim, Layout};
use crate::storage::CpuStorage;
use crate::{DType, Element, Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::Arc;

#[derive(Clone)]
pub struct Tensor {
    storage: Arc<CpuStorage>,
    layout: Layout,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}]", self.shape(), self.dtype().name())
    }
}

/// Apply `$body` with `$v` bound to the typed storage slice, whatever the dtype.
#[macro_export]
macro_rules! with_slice {
    ($storage:expr, $v:ident => $body:expr) => {
        match $storage {
            $crate::CpuStorage::F32($v) => $body,
            $crate::CpuStorage::F16($v) => $body,
            $crate::CpuStorage::BF16($v) => $body,
            $crate::CpuStorage::I64($v) => $body,
            $crate::CpuStorage::U8($v) => $body,
        }
    };
}

impl Tensor {
    // ---- construction -------------------------------------------------------------------

    pub fn from_storage(storage: CpuStorage, layout: Layout) -> Tensor {
        debug_assert!(layout.storage_extent() <= storage.len(), "layout exceeds storage");
        Tensor { storage: Arc::new(storage), layout }
    }

    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::ElementCount { op: "from_vec", shape: shape.to_vec(), len: data.len() });
        }
        Ok(Tensor::from_storage(T::into_storage(data), Layout::contiguous(shape)))
    }

    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_storage(T::into_storage(vec![v]), Layout::contiguous(&[]))
    }

    pub fn full(value: f64, shape: &[usize], dtype: DType) -> Tensor {
        let n = shape.iter().product();
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F16 => CpuStorage::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
        };
        Tensor::from_storage(storage, Layout::contiguous(shape))
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(0.0, shape, dtype)
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(1.0, shape, dtype)
    }

    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape(), self.dtype())
    }

    /// 0, 1, ..., n-1.
    pub fn arange(n: usize, dtype: DType) -> Tensor {
        let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Tensor::from_f64_vec(&v, &[n], dtype)
    }

    /// Build from f64 values, rounding to `dtype`.
    pub fn from_f64_vec(v: &[f64], shape: &[usize], dtype: DType) -> Tensor {
        assert_eq!(v.len(), shape.iter().product::<usize>(), "from_f64_vec: element count");
        fn conv<T: Element>(v: &[f64]) -> CpuStorage {
            T::into_storage(v.iter().map(|&x| T::from_f64(x)).collect())
        }
        let storage = match dtype {
            DType::F32 => conv::<f32>(v),
            DType::F16 => conv::<f16>(v),
            DType::BF16 => conv::<bf16>(v),
            DType::I64 => conv::<i64>(v),
            DType::U8 => conv::<u8>(v),
        };
        Tensor::from_storage(storage, Layout::contiguous(shape))
    }

    /// Deterministic standard normal samples (splitmix64 + Box-Muller), for tests and `facex init`.
    pub fn randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        let mut rng = SplitMix64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        Tensor::from_f64_vec(&v, shape, dtype)
    }

    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(shape: &[usize], lo: f64, hi: f64, seed: u64, dtype: DType) -> Tensor {
        let mut rng = SplitMix64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Tensor::from_f64_vec(&v, shape, dtype)
    }

    // ---- accessors ----------------------------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }
    pub fn dims(&self) -> &[usize] {
        &self.layout.shape
    }
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn strides(&self) -> &[usize] {
        &self.layout.strides
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn storage(&self) -> &Arc<CpuStorage> {
        &self.storage
    }
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
    /// The size of dimension `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[resolve_dim("dim", dim, self.rank())?])
    }
    /// True when both tensors are views of the same buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The storage. (A `Result` for its many callers' sake; tensors are always on the CPU.)
    pub fn cpu_storage(&self) -> Result<&CpuStorage> {
        Ok(&self.storage)
    }

    /// A new tensor over the same storage with another layout (the primitive behind views).
    /// The f32 values to write in place, when this tensor is the only owner of its storage and
    /// covers all of it in row-major order (a fresh op output); `None` otherwise.
    pub(crate) fn f32_values_mut(&mut self) -> Option<&mut [f32]> {
        let whole = self.layout.contiguous_range() == Some(0..self.storage.len());
        match Arc::get_mut(&mut self.storage) {
            Some(CpuStorage::F32(v)) if whole => Some(v),
            _ => None,
        }
    }

    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor { storage: self.storage.clone(), layout }
    }

    // ---- data out -----------------------------------------------------------------------

    /// The elements in logical order, as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let s = self.cpu_storage()?;
        let data = T::slice(s).ok_or(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE })?;
        Ok(gather_strided(data, &self.layout))
    }

    /// The elements in logical order, converted to f32 from any dtype.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let s = self.cpu_storage()?;
        if let CpuStorage::F32(v) = s {
            return Ok(gather_strided(v, &self.layout));
        }
        Ok(with_slice!(s, v => self.layout.offsets().map(|o| v[o].to_f32()).collect()))
    }

    /// The elements in logical order, converted to f64 from any dtype (test references).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let s = self.cpu_storage()?;
        Ok(with_slice!(s, v => self.layout.offsets().map(|o| v[o].to_f64()).collect()))
    }

    /// A contiguous f32 slice of the data without copying when possible.
    pub fn f32_slice(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        if let (CpuStorage::F32(v), Some(r)) = (self.cpu_storage()?, self.layout.contiguous_range()) {
            return Ok(std::borrow::Cow::Borrowed(&v[r]));
        }
        Ok(std::borrow::Cow::Owned(self.to_f32_vec()?))
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::BadShape { op: "item", shape: self.shape().to_vec(), expected: "one element".into() });
        }
        Ok(self.to_f64_vec()?[0])
    }

    // ---- copies -------------------------------------------------------------------------

    /// Row-major contiguous with offset 0: self when already so, else a copy.
    pub fn contiguous(&self) -> Tensor {
        if self.layout.is_contiguous() && self.layout.offset == 0 {
            return self.clone();
        }
        let _prof = crate::profile::op(
            crate::profile::Kind::Copy,
            0.0,
            crate::profile::traffic(self.elem_count(), 1, self.dtype()),
        );
        let s = self.cpu_storage().expect("contiguous: cpu tensor");
        let storage = with_slice!(s, v => Element::into_storage(gather_strided(v, &self.layout)));
        Tensor::from_storage(storage, Layout::contiguous(self.shape()))
    }

    /// Convert to another dtype (rounding to nearest for floats, truncation toward zero for ints).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let s = self.cpu_storage().expect("to_dtype: cpu tensor");
        fn conv<S: Element, D: Element>(v: &[S], l: &Layout) -> Vec<D> {
            l.offsets().map(|o| D::from_f32(v[o].to_f32())).collect()
        }
        fn conv_i<S: Element>(v: &[S], l: &Layout) -> Vec<i64> {
            l.offsets().map(|o| v[o].to_f64() as i64).collect()
        }
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(with_slice!(s, v => conv(v, &self.layout))),
            DType::F16 => CpuStorage::F16(with_slice!(s, v => conv(v, &self.layout))),
            DType::BF16 => CpuStorage::BF16(with_slice!(s, v => conv(v, &self.layout))),
            DType::I64 => CpuStorage::I64(with_slice!(s, v => conv_i(v, &self.layout))),
            DType::U8 => CpuStorage::U8(with_slice!(s, v => conv(v, &self.layout))),
        };
        Tensor::from_storage(storage, Layout::contiguous(self.shape()))
    }

    /// Checks that the shape is exactly `expected`.
    pub fn expect_shape(&self, op: &'static str, expected: &[usize]) -> Result<()> {
        if self.shape() != expected {
            return Err(Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: expected.to_vec() });
        }
        Ok(())
    }

    /// Checks that the rank is `rank`.
    pub fn expect_rank(&self, op: &'static str, rank: usize) -> Result<()> {
        if self.rank() != rank {
            return Err(Error::BadShape { op, shape: self.shape().to_vec(), expected: format!("rank {rank}") });
        }
        Ok(())
    }

    /// Checks that the dtype is floating point.
    pub fn expect_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype() });
        }
        Ok(())
    }

    /// Strides of a contiguous tensor of this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        contiguous_strides(self.shape())
    }
}

/// Copy the elements a layout selects into a new contiguous vector.
pub fn gather_strided<T: Copy + Send + Sync>(data: &[T], layout: &Layout) -> Vec<T> {
    if let Some(r) = layout.contiguous_range() {
        return data[r].to_vec();
    }
    let n = layout.elem_count();
    let mut out = Vec::with_capacity(n);
    if n < crate::cpu::parallel::PAR_MIN || layout.rank() < 2 || layout.shape[0] < 2 {
        layout.for_each_row(|off, len, s| {
            if s == 1 {
                out.extend_from_slice(&data[off..off + len]);
            } else {
                out.extend((0..len).map(|i| data[off + i * s]));
            }
        });
        return out;
    }
    // Large copies (a transpose before a GEMM): slabs of dim 0 in parallel, each written into its
    // own part of the output.
    let slab = n / layout.shape[0];
    let per = layout.shape[0].div_ceil((n / crate::cpu::parallel::PAR_CHUNK).clamp(1, layout.shape[0]));
    out.spare_capacity_mut()[..n].par_chunks_mut(per * slab).enumerate().for_each(|(c, dst)| {
        let mut sub = layout.clone();
        sub.shape[0] = dst.len() / slab;
        sub.offset += c * per * layout.strides[0];
        let mut w = 0;
        sub.for_each_row(|off, len, s| {
            if len == 0 {
                return;
            }
            let (src, out) = (&data[off..off + (len - 1) * s + 1], &mut dst[w..w + len]);
            if s == 1 {
                // Rows of contiguous elements (a window shuffle's channel rows): one memcpy each.
                // SAFETY: both slices hold len elements (checked by the indexing above).
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr() as *mut T, len) };
            } else {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(src[i * s]);
                }
            }
            w += len;
        });
    });
    // SAFETY: the chunks above cover 0..n and every element of each was written.
    unsafe { out.set_len(n) };
    out
}

/// A small deterministic generator: the same seed gives the same numbers on every machine.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// What the state moves by each draw.
    const GAMMA: u64 = 0x9E3779B97F4A7C15;

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// N(0, 1) by Box-Muller: two draws.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// This generator `draws` draws (of `next_u64`) further on, at once: the state only counts,
    /// so a long sequence can be made in parallel pieces, each the sequence's own values.
    pub fn skipped(&self, draws: u64) -> SplitMix64 {
        SplitMix64(self.0.wrapping_add(draws.wrapping_mul(Self::GAMMA)))
    }
}

#[cfg(test)]
mod split_mix_tests {
    use super::SplitMix64;

    /// Skipping n draws lands where n draws do (0, 1, many, and across the state's wrap).
    #[test]
    fn skipped_equals_drawing() {
        for (seed, n) in [(3u64, 0u64), (3, 1), (3, 1000), (u64::MAX - 5, 17)] {
            let mut drawn = SplitMix64(seed);
            (0..n).for_each(|_| {
                drawn.next_u64();
            });
            let mut skipped = SplitMix64(seed).skipped(n);
            assert_eq!(skipped.0, drawn.0, "seed {seed}, {n} draws");
            assert_eq!(skipped.next_u64(), drawn.next_u64());
        }
    }
}
