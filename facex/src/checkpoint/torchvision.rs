//! ImageNet initialisation: torchvision's `swin_b` state dict (`swin_b-68c6b09e.pth`, a plain
//! zip/pickle `OrderedDict` that our checkpoint reader reads) onto FaceXFormer's backbone.
//!
//! The official model builds its backbone as `nn.Sequential(*list(swin_b().children())[:-?])`
//! keeping `features` and `norm`, so the mapping is a rename: `features.*` -> `backbone.0.*`,
//! `norm.*` -> `backbone.1.*`; the classifier (`head.*`) is dropped. Every backbone key the model
//! expects must be present with its shape: a Swin-T or Swin-S file, or a file of another
//! architecture, is refused with the keys that do not fit.

use super::error::{CheckpointError, Result};
use super::state_dict::StateDict;
use crate::model::{FaceXFormer, FacexConfig};

/// The FaceXFormer key of a torchvision Swin key, or None for keys that have no place
/// (the ImageNet classifier).
pub fn map_key(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("features.") {
        Some(format!("backbone.0.{rest}"))
    } else {
        key.strip_prefix("norm.").map(|rest| format!("backbone.1.{rest}"))
    }
}

/// The backbone entries of a torchvision Swin state dict, under FaceXFormer's names, checked
/// against what `config` expects (every `backbone.*` key, with its shape).
pub fn backbone_from_torchvision(sd: &StateDict, config: &FacexConfig) -> Result<StateDict> {
    let expected = FaceXFormer::expected_keys(config).map_err(|e| CheckpointError::Config { msg: e.to_string() })?;
    let mut out = StateDict::new();
    let mut unexpected = Vec::new();
    for (k, t) in sd.iter() {
        match map_key(k) {
            Some(ours) => {
                out.insert(ours, t.clone());
            }
            None if k.starts_with("head.") => {}
            None => unexpected.push(k.to_string()),
        }
    }
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (k, shape) in expected.iter().filter(|(k, _)| k.starts_with("backbone.")) {
        match out.get(k) {
            None => missing.push(k.clone()),
            Some(t) if t.shape() != shape.as_slice() => misshaped.push((k.clone(), shape.clone(), t.shape().to_vec())),
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
        return Err(CheckpointError::Keys { missing, unexpected, misshaped });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_onto_the_backbone() {
        assert_eq!(map_key("features.0.0.weight").as_deref(), Some("backbone.0.0.0.weight"));
        assert_eq!(
            map_key("features.5.17.attn.relative_position_bias_table").as_deref(),
            Some("backbone.0.5.17.attn.relative_position_bias_table")
        );
        assert_eq!(map_key("features.6.reduction.weight").as_deref(), Some("backbone.0.6.reduction.weight"));
        assert_eq!(map_key("norm.bias").as_deref(), Some("backbone.1.bias"));
        assert_eq!(map_key("head.weight"), None);
    }
}
