//! The FaceXFormer model, exactly as the released checkpoint needs it (see docs/facexformer.md).
//!
//! Written over `autograd::Var`: the same code serves inference (inside `autograd::no_grad`) and
//! training. Parameters are `Var::param`s named with the official state-dict keys.
pub mod config;
mod decoder;
pub mod device;
mod facexformer;
mod fusion;
mod heads;
mod layers;
mod params;
mod schema;
pub(crate) mod swin;

pub use config::{DecoderConfig, FacexConfig, SwinConfig};
pub use device::{DeviceModel, DeviceOutputs, DeviceRun};
pub use facexformer::{FaceXFormer, Intermediates, Outputs, IMAGE_SIZE};
pub use fusion::positional_encoding;
pub use heads::{NUM_MASKS, NUM_TOKENS, TASKS};
pub use params::Entry;
pub use swin::relative_position_index;

use std::fmt;
use tensor::DType;

/// Errors of building or loading the model.
#[derive(Debug)]
pub enum ModelError {
    /// The state dict does not fit the config: every problem at once.
    Keys {
        /// Key and expected shape.
        missing: Vec<(String, Vec<usize>)>,
        unexpected: Vec<String>,
        /// Key, expected shape, shape found.
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// Key, expected dtype, dtype found.
        wrong_dtype: Vec<(String, DType, DType)>,
    },
    /// The configuration cannot describe a working model.
    Config(String),
    Tensor(tensor::Error),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Keys { missing, unexpected, misshaped, wrong_dtype } => {
                write!(
                    f,
                    "the weights do not fit the FaceXFormer config: {} missing, {} unexpected, {} with the wrong \
                     shape, {} with the wrong dtype",
                    missing.len(),
                    unexpected.len(),
                    misshaped.len(),
                    wrong_dtype.len()
                )?;
                for (k, s) in missing {
                    write!(f, "\n  missing: {k} {s:?}")?;
                }
                for k in unexpected {
                    write!(f, "\n  unexpected: {k}")?;
                }
                for (k, want, got) in misshaped {
                    write!(f, "\n  wrong shape: {k}: expected {want:?}, got {got:?}")?;
                }
                for (k, want, got) in wrong_dtype {
                    write!(f, "\n  wrong dtype: {k}: expected {want:?}, got {got:?}")?;
                }
                Ok(())
            }
            ModelError::Config(msg) => write!(f, "invalid FaceXFormer config: {msg}"),
            ModelError::Tensor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<tensor::Error> for ModelError {
    fn from(e: tensor::Error) -> Self {
        ModelError::Tensor(e)
    }
}
