//! MTCNN face detection (P-, R-, O-Net) as facenet-pytorch implements it.
//!
//! `Mtcnn::new_embedded()` uses the facenet-pytorch weights compiled into the binary (MIT, see
//! `facex/models/mtcnn/LICENSE-facenet-pytorch.md`), so detection works offline;
//! `Mtcnn::from_dir` reads `pnet.pt`, `rnet.pt`, `onet.pt` from a folder.

mod decode;
mod mtcnn;
pub mod nets;
pub mod nms;

pub use decode::{decode_rgb, load_rgb};
pub use mtcnn::{Mtcnn, MtcnnConfig};

use std::fmt;
use std::path::PathBuf;

/// One detected face, in pixel coordinates of the input image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// O-Net's face probability.
    pub prob: f32,
    /// `(x, y)` of the left eye, right eye, nose, mouth left, mouth right.
    pub landmarks: [[f32; 2]; 5],
}

/// Errors of detection: weights that cannot be loaded or do not fit, or a bad image.
#[derive(Debug)]
pub enum Error {
    /// A weight file could not be read as a PyTorch state dict.
    Checkpoint { path: PathBuf, source: crate::checkpoint::CheckpointError },
    /// A network's state dict lacks a tensor or has one of the wrong shape.
    Weights { net: &'static str, msg: String },
    /// The image could not be loaded.
    Image(crate::preprocess::Error),
    /// A tensor op failed (an internal shape bug).
    Tensor(tensor::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Checkpoint { path, source } => write!(f, "MTCNN weights {}: {source}", path.display()),
            Error::Weights { net, msg } => write!(f, "MTCNN {net} weights: {msg}"),
            Error::Image(e) => write!(f, "{e}"),
            Error::Tensor(e) => write!(f, "MTCNN: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Checkpoint { source, .. } => Some(source),
            Error::Image(e) => Some(e),
            Error::Tensor(e) => Some(e),
            Error::Weights { .. } => None,
        }
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

impl From<crate::preprocess::Error> for Error {
    fn from(e: crate::preprocess::Error) -> Self {
        Error::Image(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
