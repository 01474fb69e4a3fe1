//! Model configuration from the shapes of a state dict (official key names, spec §8). Decoder
//! heads leave no trace in the shapes: they come from the weights file's own metadata (facex
//! writes its config there, [`CONFIG_METADATA_KEY`]), else a config file beside it, else 8.

use super::error::{CheckpointError, Result};
use super::state_dict::StateDict;
use crate::model::{DecoderConfig, FacexConfig, SwinConfig};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Decoder heads of the released model.
pub const DEFAULT_DECODER_HEADS: usize = 8;

/// The safetensors `__metadata__` entry in which facex stores a model's [`FacexConfig`] as
/// JSON, so that weights saved by `facex train` or `facex convert` describe themselves.
pub const CONFIG_METADATA_KEY: &str = "facex.config";

/// The stage modules of `backbone.0` that hold blocks (the others are the stem and patch merging).
const STAGES: [usize; 4] = [1, 3, 5, 7];

fn cfg_err(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Config { msg: msg.into() }
}

fn shape<'a>(sd: &'a StateDict, name: &str) -> Result<&'a [usize]> {
    sd.get(name).map(|t| t.shape()).ok_or_else(|| cfg_err(format!("key `{name}` is missing")))
}

fn shape_rank<'a>(sd: &'a StateDict, name: &str, rank: usize) -> Result<&'a [usize]> {
    let s = shape(sd, name)?;
    if s.len() != rank {
        return Err(cfg_err(format!("`{name}` has shape {s:?}, expected rank {rank}")));
    }
    Ok(s)
}

/// The indices `i` of keys `<prefix><i><suffix>`, which must be exactly 0..n; returns n.
fn count_indexed(sd: &StateDict, prefix: &str, suffix: &str) -> Result<usize> {
    let found: BTreeSet<usize> =
        sd.names().filter_map(|k| k.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()).collect();
    let n = found.len();
    if found.iter().copied().ne(0..n) {
        return Err(cfg_err(format!("`{prefix}<i>{suffix}` has indices {found:?}, not 0..{n}")));
    }
    Ok(n)
}

/// Window size w from a relative position bias table of (2w-1)^2 rows.
fn window_from_table(rows: usize, name: &str) -> Result<usize> {
    let side = (rows as f64).sqrt().round() as usize;
    if side * side != rows || side.is_multiple_of(2) {
        return Err(cfg_err(format!("`{name}` has {rows} rows, not (2w-1)^2 for a window w")));
    }
    Ok(side.div_ceil(2))
}

fn infer_backbone(sd: &StateDict) -> Result<SwinConfig> {
    let stem = shape_rank(sd, "backbone.0.0.0.weight", 4)?;
    let (embed_dim, patch) = (stem[0], stem[2]);
    if stem[1] != 3 || stem[3] != patch || patch == 0 {
        return Err(cfg_err(format!("`backbone.0.0.0.weight` has shape {stem:?}, expected [C, 3, p, p]")));
    }
    let mut depths = Vec::new();
    let mut num_heads = Vec::new();
    let mut window = None;
    for (i, s) in STAGES.into_iter().enumerate() {
        let depth = count_indexed(sd, &format!("backbone.0.{s}."), ".norm1.weight")?;
        if depth == 0 {
            return Err(cfg_err(format!("stage {} (`backbone.0.{s}`) has no blocks", i + 1)));
        }
        let dim = embed_dim << i;
        let mut heads = None;
        for k in 0..depth {
            let norm = format!("backbone.0.{s}.{k}.norm1.weight");
            if shape(sd, &norm)? != [dim] {
                return Err(cfg_err(format!("`{norm}` has shape {:?}, expected [{dim}]", shape(sd, &norm)?)));
            }
            let name = format!("backbone.0.{s}.{k}.attn.relative_position_bias_table");
            let table = shape_rank(sd, &name, 2)?;
            let w = window_from_table(table[0], &name)?;
            if *window.get_or_insert(w) != w || *heads.get_or_insert(table[1]) != table[1] {
                return Err(cfg_err(format!("`{name}` has shape {table:?}, unlike the blocks before it")));
            }
        }
        let heads = heads.unwrap_or(0);
        if heads == 0 || dim % heads != 0 {
            return Err(cfg_err(format!("stage {} has {heads} heads, which do not divide its width {dim}", i + 1)));
        }
        depths.push(depth);
        num_heads.push(heads);
    }
    Ok(SwinConfig { embed_dim, depths, num_heads, window_size: window.unwrap_or(0), patch_size: patch })
}

fn infer_decoder(sd: &StateDict, heads: usize) -> Result<DecoderConfig> {
    let mask = shape_rank(sd, "face_decoder.mask_tokens.weight", 2)?;
    let dim = mask[1];
    let depth = count_indexed(sd, "face_decoder.transformer.layers.", ".norm1.weight")?;
    if depth == 0 {
        return Err(cfg_err("the decoder has no layers (`face_decoder.transformer.layers.<i>`)"));
    }
    let lin1 = shape_rank(sd, "face_decoder.transformer.layers.0.mlp.lin1.weight", 2)?;
    let q = shape_rank(sd, "face_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight", 2)?;
    let internal = q[0];
    if lin1[1] != dim || q[1] != dim || internal == 0 || dim % internal != 0 {
        return Err(cfg_err(format!(
            "decoder width {dim} (mask tokens) does not fit mlp.lin1 {lin1:?} or cross-attention q_proj {q:?}"
        )));
    }
    if heads == 0 || dim % heads != 0 || internal % heads != 0 {
        return Err(cfg_err(format!(
            "{heads} decoder heads do not divide the decoder width {dim} and the cross-attention width {internal}"
        )));
    }
    Ok(DecoderConfig { dim, depth, heads, mlp_dim: lin1[0], cross_downsample: dim / internal })
}

/// Infers the model configuration from the state dict's shapes; `decoder_heads` defaults to 8.
pub fn infer_config(sd: &StateDict, decoder_heads: Option<usize>) -> Result<FacexConfig> {
    let backbone = infer_backbone(sd)?;
    let decoder = infer_decoder(sd, decoder_heads.unwrap_or(DEFAULT_DECODER_HEADS))?;
    Ok(FacexConfig { backbone, decoder })
}

/// Config files that may sit beside `weights`, most specific first: `<stem>.json`,
/// `<file name>.json`, then `config.json` in the same folder.
fn side_configs(weights: &Path) -> Vec<PathBuf> {
    let mut with_json = weights.as_os_str().to_owned();
    with_json.push(".json");
    let dir = weights.parent().unwrap_or(Path::new("."));
    let mut v = vec![weights.with_extension("json"), PathBuf::from(with_json), dir.join("config.json")];
    v.dedup();
    v
}

/// `decoder.heads` of a config in FacexConfig's JSON format (other fields are not needed);
/// `origin` names it in errors. `None` when it has no such field.
fn heads_in_json(text: &str, origin: &str) -> Result<Option<usize>> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| cfg_err(format!("{origin}: invalid JSON: {e}")))?;
    let Some(h) = json.get("decoder").and_then(|d| d.get("heads")) else { return Ok(None) };
    match h.as_u64().and_then(|h| usize::try_from(h).ok()).filter(|&h| h > 0) {
        Some(h) => Ok(Some(h)),
        None => Err(cfg_err(format!("{origin}: decoder.heads is {h}, not a positive integer"))),
    }
}

/// `decoder.heads` from the first config file beside `weights` that has it. A file that exists
/// but is malformed is an error.
pub fn decoder_heads_beside(weights: &Path) -> Result<Option<usize>> {
    for p in side_configs(weights) {
        if p == weights || !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(|e| CheckpointError::io(&p, e))?;
        if let Some(h) = heads_in_json(&text, &p.display().to_string())? {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// `decoder.heads` from a safetensors file's own metadata ([`CONFIG_METADATA_KEY`]); `None` for
/// a file without it.
pub fn decoder_heads_in_metadata(
    metadata: &std::collections::BTreeMap<String, String>,
    origin: &Path,
) -> Result<Option<usize>> {
    match metadata.get(CONFIG_METADATA_KEY) {
        Some(text) => heads_in_json(text, &format!("{} ({CONFIG_METADATA_KEY})", origin.display())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes_from_table_rows() {
        assert_eq!(window_from_table(169, "t").unwrap(), 7);
        assert_eq!(window_from_table(1, "t").unwrap(), 1);
        assert_eq!(window_from_table(529, "t").unwrap(), 12);
        assert!(window_from_table(170, "t").is_err());
        assert!(window_from_table(16, "t").is_err());
    }

    #[test]
    fn side_config_candidates() {
        let v = side_configs(Path::new("/m/model.pt"));
        assert_eq!(
            v,
            [PathBuf::from("/m/model.json"), PathBuf::from("/m/model.pt.json"), PathBuf::from("/m/config.json")]
        );
    }
}
