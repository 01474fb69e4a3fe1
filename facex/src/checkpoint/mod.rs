//! Checkpoints: the PyTorch zip/pickle reader, safetensors, and config inference from shapes.
//!
//! - [`load_weights`]: any supported file, by content (PyTorch zip, legacy PyTorch, safetensors).
//! - [`load_model_weights`]: the same, plus the [`FacexConfig`] inferred from the shapes;
//!   [`save_model_weights`] writes safetensors that carry their config.
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
pub use infer::{
    decoder_heads_beside, decoder_heads_in_metadata, infer_config, CONFIG_METADATA_KEY, DEFAULT_DECODER_HEADS,
};
pub use pytorch::{load_pytorch, load_pytorch_from_bytes, OFFICIAL_KEY};
pub use safetensors_io::{
    load_safetensors, load_safetensors_from_bytes, safetensors_metadata, save_safetensors,
    save_safetensors_with_metadata,
};
pub use state_dict::StateDict;
pub use validate::validate;

use crate::model::FacexConfig;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Loads a state dict from a PyTorch checkpoint (zip or legacy, by its first bytes) or a
/// safetensors file (anything else).
pub fn load_weights(path: impl AsRef<Path>) -> Result<StateDict> {
    load_with_metadata(path.as_ref()).map(|(sd, _)| sd)
}

/// [`load_weights`], with the safetensors `__metadata__` read from the same mapping (empty for
/// PyTorch files).
fn load_with_metadata(path: &Path) -> Result<(StateDict, BTreeMap<String, String>)> {
    let mut head = Vec::with_capacity(pytorch::LEGACY_MAGIC.len());
    std::fs::File::open(path)
        .and_then(|f| f.take(pytorch::LEGACY_MAGIC.len() as u64).read_to_end(&mut head))
        .map_err(|e| CheckpointError::io(path, e))?;
    if head.starts_with(&pytorch::ZIP_MAGIC[..2]) || head.starts_with(&pytorch::LEGACY_MAGIC[..4]) {
        Ok((load_pytorch(path, None)?, BTreeMap::new()))
    } else {
        let mapped = pytorch::Mapped::open(path)?;
        Ok((load_safetensors_from_bytes(mapped.bytes(), path)?, safetensors_metadata(mapped.bytes(), path)?))
    }
}

/// Loads weights and infers the model configuration from their shapes; decoder heads come from
/// the file's own metadata (safetensors written by facex), else a config file beside the weights
/// (see [`decoder_heads_beside`]), else the official 8.
pub fn load_model_weights(path: impl AsRef<Path>) -> Result<(StateDict, FacexConfig)> {
    let (sd, heads) = load_weights_and_heads(path)?;
    let config = infer_config(&sd, heads)?;
    Ok((sd, config))
}

/// [`load_weights`], and the decoder heads the weights state: in their own metadata
/// (safetensors written by facex), else in a config file beside them; `None` when neither says.
pub fn load_weights_and_heads(path: impl AsRef<Path>) -> Result<(StateDict, Option<usize>)> {
    let path = path.as_ref();
    let (sd, meta) = load_with_metadata(path)?;
    let heads = match decoder_heads_in_metadata(&meta, path)? {
        Some(h) => Some(h),
        None => decoder_heads_beside(path)?,
    };
    Ok((sd, heads))
}

/// Saves weights as safetensors (atomically) with `config` in their metadata
/// ([`CONFIG_METADATA_KEY`]), so that [`load_model_weights`] finds every field of it, the
/// decoder heads included, without a config file beside them.
pub fn save_model_weights(path: impl AsRef<Path>, sd: &StateDict, config: &FacexConfig) -> Result<()> {
    let path = path.as_ref();
    let json = serde_json::to_string(config)
        .map_err(|e| CheckpointError::Config { msg: format!("{}: the config as JSON: {e}", path.display()) })?;
    save_safetensors_with_metadata(path, sd, &[(CONFIG_METADATA_KEY.to_string(), json)].into())
}
