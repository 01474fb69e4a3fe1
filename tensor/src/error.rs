//! Errors returned for bad user input. Each names the op and the shapes or dtypes involved.

use crate::DType;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands whose shapes do not fit together (broadcasting, matmul, cat...).
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },
    /// One operand whose shape the op cannot take, with what it expected.
    BadShape { op: &'static str, shape: Vec<usize>, expected: String },
    /// Operands of different dtypes where one dtype is required.
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },
    /// The op is not defined for this dtype.
    UnsupportedDType { op: &'static str, dtype: DType },
    /// A dimension index outside the tensor's rank.
    DimOutOfRange { op: &'static str, dim: isize, rank: usize },
    /// Data length does not match the number of elements of the shape.
    ElementCount { op: &'static str, shape: Vec<usize>, len: usize },
    /// Any other invalid argument, described in words.
    InvalidArgument { op: &'static str, msg: String },
    /// An error from a device backend (CUDA driver, kernel launch).
    Device { op: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: shapes {lhs:?} and {rhs:?} do not match")
            }
            Error::BadShape { op, shape, expected } => {
                write!(f, "{op}: got shape {shape:?}, expected {expected}")
            }
            Error::DTypeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: dtypes {lhs:?} and {rhs:?} differ")
            }
            Error::UnsupportedDType { op, dtype } => write!(f, "{op}: dtype {dtype:?} is not supported"),
            Error::DimOutOfRange { op, dim, rank } => {
                write!(f, "{op}: dimension {dim} is out of range for rank {rank}")
            }
            Error::ElementCount { op, shape, len } => {
                write!(f, "{op}: shape {shape:?} needs {} elements, got {len}", shape.iter().product::<usize>())
            }
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::Device { op, msg } => write!(f, "{op}: device error: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for `Err(Error::InvalidArgument { .. })` with a formatted message.
#[macro_export]
macro_rules! bail {
    ($op:expr, $($arg:tt)*) => {
        return Err($crate::Error::InvalidArgument { op: $op, msg: format!($($arg)*) })
    };
}
