//! Training data for FaceXFormer: the ten datasets read in the layouts they are distributed in,
//! the official crop, label-consistent augmentation, synthetic faces and a rayon loader.
//!
//! The flow of one training sample:
//! 1. a reader (`datasets::*`) parses a dataset's annotation files into [`Record`]s: where the
//!    pixels are, the task, the label in source-image pixels, and the annotation as it was parsed;
//! 2. [`Record::load`] decodes the image and crops it with the inference geometry
//!    (`preprocess`: box with 25% margin, PIL-exact bicubic to 224x224), mapping the label into
//!    the crop: a [`Sample`];
//! 3. `augment` moves image, mask and points together (seeded by (seed, epoch, index));
//! 4. the loader batches samples of mixed tasks into a [`Batch`] for `facex::train`.

pub mod augment;
pub mod datasets;
pub mod error;
pub mod loader;
pub mod mat;
pub mod preprocess;
pub mod sample;
pub mod synth;

pub use datasets::{BadRecord, Dataset};
pub use error::{Error, Result};
pub use sample::{Batch, CropFrame, CropFrom, ImageSource, Label, MaskSource, Record, Sample, Target, Task};
