//! The FaceXFormer model, exactly as the released checkpoint needs it (see docs/facexformer.md).
pub mod config;
pub use config::{DecoderConfig, FacexConfig, SwinConfig};
