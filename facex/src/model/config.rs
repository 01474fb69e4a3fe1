//! Model configuration. Widths and depths; the full (official) model is the default.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwinConfig {
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub patch_size: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub cross_downsample: usize,
}

/// Field names follow the fixtures' `config.json` (`backbone`, `decoder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FacexConfig {
    pub backbone: SwinConfig,
    pub decoder: DecoderConfig,
}

impl FacexConfig {
    /// The released model: Swin-B v1 and a 256-wide decoder.
    pub fn swin_b() -> Self {
        FacexConfig {
            backbone: SwinConfig {
                embed_dim: 128,
                depths: vec![2, 2, 18, 2],
                num_heads: vec![4, 8, 16, 32],
                window_size: 7,
                patch_size: 4,
            },
            decoder: DecoderConfig { dim: 256, depth: 2, heads: 8, mlp_dim: 2048, cross_downsample: 2 },
        }
    }

    /// The small configuration of the test fixtures.
    pub fn tiny() -> Self {
        FacexConfig {
            backbone: SwinConfig {
                embed_dim: 32,
                depths: vec![2, 2, 2, 2],
                num_heads: vec![1, 2, 4, 8],
                window_size: 7,
                patch_size: 4,
            },
            decoder: DecoderConfig { dim: 64, depth: 2, heads: 4, mlp_dim: 128, cross_downsample: 2 },
        }
    }

    /// Parse a config JSON (extra fields, such as the fixtures' `seed`, are ignored).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl Default for FacexConfig {
    fn default() -> Self {
        FacexConfig::swin_b()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_config_parses_to_tiny() {
        let text = include_str!("../../../tests/fixtures/facexformer-tiny/config.json");
        assert_eq!(FacexConfig::from_json(text).unwrap(), FacexConfig::tiny());
    }
}
