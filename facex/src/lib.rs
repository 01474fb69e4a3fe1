//! FaceXFormer in Rust: the model (Swin-B encoder, multi-scale fusion, two-way decoder, heads),
//! checkpoint loading (PyTorch zip/pickle and safetensors), MTCNN face detection, the official
//! preprocessing, analysis output, losses and optimizers.

pub mod analyze;
pub mod atomic;
pub mod checkpoint;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod losses;
pub mod model;
pub mod optim;
/// The official preprocessing lives in the `data` crate (training crops use the same geometry).
pub use data::preprocess;
pub mod train;
