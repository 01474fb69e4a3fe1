//! Storage: the host buffer a tensor's layout indexes into, shared by views through an `Arc`.
//! Tensors live on the CPU only; device memory is a separate type (`backend::DevTensor`).

use crate::{DType, Element};
use half::{bf16, f16};

#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::I64(v) => bytemuck::cast_slice(v),
            CpuStorage::U8(v) => v,
        }
    }

    /// Build from little-endian bytes (checkpoints, safetensors).
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<CpuStorage> {
        fn conv<T: Element>(bytes: &[u8]) -> Option<Vec<T>> {
            let n = std::mem::size_of::<T>();
            if !bytes.len().is_multiple_of(n) {
                return None;
            }
            let mut v = vec![T::zeroed(); bytes.len() / n];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            Some(v)
        }
        Some(match dtype {
            DType::F32 => CpuStorage::F32(conv(bytes)?),
            DType::F16 => CpuStorage::F16(conv(bytes)?),
            DType::BF16 => CpuStorage::BF16(conv(bytes)?),
            DType::I64 => CpuStorage::I64(conv(bytes)?),
            DType::U8 => CpuStorage::U8(bytes.to_vec()),
        })
    }
}
