//! Dataset readers, one module per dataset, each for the layout the dataset is distributed in.
//!
//! A reader turns a dataset root and a split into a [`Dataset`]: the records it could parse and
//! the bad records it skipped, each named with its file and line. A reader fails as a whole
//! (an `Err`) only when the dataset cannot be read at all: a missing root or annotation file, or
//! an unknown split.

use std::path::Path;

use crate::error::{Error, Result};
use crate::sample::Record;

pub mod celeba;
pub mod celebamask_hq;
pub mod cofw;
pub mod fairface;
pub mod lapa;
pub mod utkface;
pub mod w300;
pub mod w300lp;
pub mod wflw;

/// The entries of `dir` whose extension is one of `extensions` (any case), sorted by name so
/// that record order is stable.
pub(crate) fn list_files(dir: &Path, extensions: &[&str]) -> Result<Vec<std::path::PathBuf>> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if ext.is_some_and(|e| extensions.contains(&e.as_str())) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// An annotation that was skipped, and why. Skips are counted and reported, never fatal.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRecord {
    /// The file, with `:line` where a line holds the record.
    pub source: String,
    pub reason: String,
}

/// The parsed records of one split of one dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: &'static str,
    pub split: String,
    pub records: Vec<Record>,
    pub bad: Vec<BadRecord>,
}

/// The reader names `open` accepts, with the splits each knows.
pub const READERS: &[(&str, &[&str])] = &[
    ("lapa", &["train", "val", "test"]),
    ("celebamask_hq", &["train", "val", "test"]),
    ("300w", &["train", "test", "common", "challenge"]),
    ("wflw", &["train", "test"]),
    ("300w_lp", &["train"]),
    ("aflw2000", &["test"]),
    ("celeba", &["train", "val", "test"]),
    ("utkface", &["all"]),
    ("fairface", &["train", "val"]),
    ("cofw", &["train", "test"]),
];

/// Read one split of a dataset by reader name.
pub fn open(name: &str, root: &Path, split: &str) -> Result<Dataset> {
    let Some((_, splits)) = READERS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = READERS.iter().map(|(n, _)| *n).collect();
        return Err(Error::Invalid(format!("unknown dataset {name:?} (known: {})", names.join(", "))));
    };
    if !splits.contains(&split) {
        return Err(Error::Invalid(format!("dataset {name} has no split {split:?} (known: {})", splits.join(", "))));
    }
    if !root.is_dir() {
        return Err(Error::Io {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("dataset root of {name} not found")),
        });
    }
    match name {
        "lapa" => lapa::read(root, split),
        "celebamask_hq" => celebamask_hq::read(root, split),
        "300w" => w300::read(root, split),
        "wflw" => wflw::read(root, split),
        "300w_lp" => w300lp::read(root, split, w300lp::Variant::W300Lp),
        "aflw2000" => w300lp::read(root, split, w300lp::Variant::Aflw2000),
        "celeba" => celeba::read(root, split),
        "utkface" => utkface::read(root, split),
        "fairface" => fairface::read(root, split),
        "cofw" => cofw::read(root, split),
        _ => unreachable!("READERS lists {name}"),
    }
}
