//! Checkpoints: the PyTorch zip/pickle reader, safetensors, and config inference from shapes.
//!
//! - [`load_weights`]: any supported file, by content (PyTorch zip, legacy PyTorch, safetensors).
//! - [`load_model_weights`]: the same, plus the [`FacexConfig`] inferred from the shapes.
//! - [`validate`]: compare a state dict with the keys and shapes a model expects.
//!
//! PyTorch files are read with our own restricted pickle reader (see `pickle.rs`): it executes
//! nothing and rejects any global outside a short allow-list.

mod error;
mod infer;
mod pickle;
mod pytorch;
mod safetensors_io;
mod state_dict;
#[cfg(test)]
mod test_archive;
#[cfg(test)]
mod tests;
pub mod torchvision;
mod validate;

pub use error::{CheckpointError, Result};
pub use infer::{decoder_heads_beside, infer_config, DEFAULT_DECODER_HEADS};
pub use pytorch::{load_pytorch, load_pytorch_from_bytes, OFFICIAL_KEY};
pub use safetensors_io::{
    load_safetensors, load_safetensors_from_bytes, safetensors_metadata, save_safetensors,
    save_safetensors_with_metadata,
};
pub use state_dict::StateDict;
pub use validate::validate;

use crate::model::FacexConfig;
use std::io::Read;
use std::path::Path;

/// Loads a state dict from a PyTorch checkpoint (zip or legacy, by its first bytes) or a
/// safetensors file (anything else).
pub fn load_weights(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let mut head = Vec::with_capacity(pytorch::LEGACY_MAGIC.len());
    std::fs::File::open(path)
        .and_then(|f| f.take(pytorch::LEGACY_MAGIC.len() as u64).read_to_end(&mut head))
        .map_err(|e| CheckpointError::io(path, e))?;
    if head.starts_with(&pytorch::ZIP_MAGIC[..2]) || head.starts_with(&pytorch::LEGACY_MAGIC[..4]) {
        load_pytorch(path, None)
    } else {
        load_safetensors(path)
    }
}

/// Loads weights and infers the model configuration from their shapes; decoder heads come from a
/// config file beside the weights (see [`decoder_heads_beside`]), else the official 8.
pub fn load_model_weights(path: impl AsRef<Path>) -> Result<(StateDict, FacexConfig)> {
    let path = path.as_ref();
    let sd = load_weights(path)?;
    let heads = decoder_heads_beside(path)?;
    let config = infer_config(&sd, heads)?;
    Ok((sd, config))
}
