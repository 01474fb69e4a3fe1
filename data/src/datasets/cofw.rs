//! COFW (Caltech Occluded Faces in the Wild): 29 landmarks with occlusion flags, images stored
//! inside MATLAB files.
//!
//! Layout, as distributed:
//!
//! ```text
//! root/COFW_train_color.mat   MAT v7.3 (HDF5): IsTr (N x 1 cell of uint8 images), phisTr (N x 87),
//!                             bboxesTr (N x 4)
//! root/COFW_test_color.mat    the same with IsT, phisT, bboxesT
//! root/COFW.mat               the older Level 5 file: both splits in one, grey images
//! ```
//!
//! The colour files are read when present, else `COFW.mat` (they hold the same faces). A row of
//! `phis` is 29 x, 29 y (MATLAB 1-based pixels) and 29 flags (1 = occluded); points are shifted
//! by -1 into the crate's 0-based convention. A box is `[x, y, w, h]` with a 1-based corner:
//! `CropFrom::Box([x - 1, y - 1, x - 1 + w, y - 1 + h])`. Images (grey replicated to RGB) go
//! into `ImageSource::Memory`. The record's source is `FILE:INDEX` with the 1-based sample index;
//! `raw` keeps the 0-based points, the flags and the box as written.
//!
//! A file whose arrays disagree in count is fatal (the split cannot be read); a sample with a bad
//! image, a non-finite value or a flag other than 0/1 is a bad record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::mat;
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// COFW's landmarks per face.
pub const N_POINTS: usize = 29;

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    let (color, suffix) = match split {
        "train" => ("COFW_train_color.mat", "Tr"),
        "test" => ("COFW_test_color.mat", "T"),
        _ => return Err(Error::Invalid(format!("cofw has no split {split:?} (train, test)"))),
    };
    let file: PathBuf =
        [root.join(color), root.join("COFW.mat")].into_iter().find(|p| p.is_file()).ok_or_else(|| Error::Io {
            path: root.join(color),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "neither it nor COFW.mat exists"),
        })?;
    let m = mat::read(&file)?;
    let images = m.get(&format!("Is{suffix}"))?;
    let cells =
        images.cells().ok_or_else(|| m.error(format!("Is{suffix} is {}, expected a cell", images.class_name())))?;
    let n = cells.len();
    let phis = m.numeric(&format!("phis{suffix}"), &[n, 3 * N_POINTS])?;
    let boxes = m.numeric(&format!("bboxes{suffix}"), &[n, 4])?;
    let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut ds = Dataset { name: "cofw", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    for (i, cell) in cells.iter().enumerate() {
        // Column-major N x K: row i, column k is at k * n + i.
        let row = |k: usize| phis[k * n + i];
        let b = [0, 1, 2, 3].map(|k| boxes[k * n + i]);
        let source = format!("{name}:{}", i + 1);
        let sample = || -> std::result::Result<Record, String> {
            let image = cell.to_rgb_image().map_err(|e| format!("Is{suffix}{{{}}}: {e}", i + 1))?;
            let points: Vec<[f32; 2]> =
                (0..N_POINTS).map(|k| [(row(k) - 1.0) as f32, (row(N_POINTS + k) - 1.0) as f32]).collect();
            let flags: Vec<f64> = (0..N_POINTS).map(|k| row(2 * N_POINTS + k)).collect();
            if let Some(f) = flags.iter().find(|&&f| f != 0.0 && f != 1.0) {
                return Err(format!("occlusion flag {f} (expected 0 or 1)"));
            }
            if points.iter().flatten().any(|c| !c.is_finite())
                || b.iter().any(|c| !c.is_finite())
                || b[2] <= 0.0
                || b[3] <= 0.0
            {
                return Err(format!("non-finite point or empty box {b:?}"));
            }
            let (x0, y0) = (b[0] - 1.0, b[1] - 1.0);
            Ok(Record {
                dataset: "cofw",
                image: ImageSource::Memory(Arc::new(image)),
                source: source.clone(),
                crop: CropFrom::Box([x0 as f32, y0 as f32, (x0 + b[2]) as f32, (y0 + b[3]) as f32]),
                raw: json!({ "points": points, "occluded": flags, "bbox_xywh": b }),
                label: Label::Visibility { points, occluded: flags.iter().map(|&f| f as u8).collect() },
            })
        };
        match sample() {
            Ok(rec) => ds.records.push(rec),
            Err(reason) => ds.bad.push(BadRecord { source, reason }),
        }
    }
    Ok(ds)
}
