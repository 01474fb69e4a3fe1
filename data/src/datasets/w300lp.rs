//! (reader being written)

use std::path::Path;

use super::Dataset;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    W300Lp,
    Aflw2000,
}

pub fn read(_root: &Path, _split: &str, _variant: Variant) -> Result<Dataset> {
    Err(Error::Invalid("the 300w_lp / aflw2000 reader is not written yet".into()))
}
