//! Element types. Floating ops compute in f32 (f16/bf16 are widened and rounded back);
//! integer tensors carry labels, indices and masks.

use crate::storage::CpuStorage;
use half::{bf16, f16};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I64,
    U8,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

/// A Rust type that can live in a tensor.
pub trait Element: Copy + Send + Sync + 'static + bytemuck::Pod + std::fmt::Debug + PartialOrd {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn into_storage(v: Vec<Self>) -> CpuStorage;
}

macro_rules! element {
    ($t:ty, $variant:ident, $to32:expr, $from32:expr, $to64:expr, $from64:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                ($to32)(self)
            }
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                ($from32)(v)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                ($to64)(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                ($from64)(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}

element!(f32, F32, |x| x, |x| x, |x: f32| x as f64, |x: f64| x as f32);
element!(f16, F16, f16::to_f32, f16::from_f32, |x: f16| x.to_f64(), f16::from_f64);
element!(bf16, BF16, bf16::to_f32, bf16::from_f32, |x: bf16| x.to_f64(), bf16::from_f64);
element!(i64, I64, |x: i64| x as f32, |x: f32| x as i64, |x: i64| x as f64, |x: f64| x as i64);
element!(u8, U8, |x: u8| x as f32, |x: f32| x as u8, |x: u8| x as f64, |x: f64| x as u8);
