//! 300W (iBUG): 68 landmarks in a `.pts` file beside each image.
//!
//! Layout, as iBUG distributes the re-annotated sets (image extension `jpg` or `png`):
//!
//! ```text
//! root/afw/*.jpg + *.pts
//! root/helen/{trainset,testset}/*.jpg + *.pts
//! root/lfpw/{trainset,testset}/*.png + *.pts
//! root/ibug/*.jpg + *.pts
//! ```
//!
//! Splits (the common protocol): `train` = afw + helen/trainset + lfpw/trainset (3148 faces),
//! `common` = helen/testset + lfpw/testset (554), `challenge` = ibug (135), `test` = common +
//! challenge (689). A missing folder of the split is fatal (the split would be silently short).
//!
//! A `.pts` file is `version: 1`, `n_points:  68`, `{`, 68 lines `x y`, `}`. Its coordinates are
//! 1-based (Matlab's convention), so the reader subtracts 1: `raw.points` and the label are both
//! 0-based pixel centres. A wrong point count, a malformed line or a missing image is a bad record
//! named `file.pts:line`.
//!
//! Crop: the tight box of the 68 points (`CropFrom::Points`). 300W ships no face box of its own
//! beside the `.pts` (its separate bounding boxes are detector outputs), and the tight box of the
//! points is what the landmark benchmarks normalise by.

use std::path::Path;

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// Points in a 300W annotation.
pub const N_POINTS: usize = 68;

/// The folders of each split, relative to the root.
fn split_dirs(split: &str) -> Result<&'static [&'static str]> {
    Ok(match split {
        "train" => &["afw", "helen/trainset", "lfpw/trainset"],
        "common" => &["helen/testset", "lfpw/testset"],
        "challenge" => &["ibug"],
        "test" => &["helen/testset", "lfpw/testset", "ibug"],
        _ => return Err(Error::Invalid(format!("300w has no split {split:?} (train, common, challenge, test)"))),
    })
}

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    let mut ds = Dataset { name: "300w", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    for dir in split_dirs(split)? {
        let dir = root.join(dir);
        for pts in super::list_files(&dir, &["pts"])? {
            match read_one(root, &pts) {
                Ok(rec) => ds.records.push(rec),
                Err(bad) => ds.bad.push(bad),
            }
        }
    }
    Ok(ds)
}

fn read_one(root: &Path, pts: &Path) -> std::result::Result<Record, BadRecord> {
    let bad = |line: usize, reason: String| BadRecord { source: format!("{}:{line}", pts.display()), reason };
    let text = std::fs::read_to_string(pts).map_err(|e| bad(0, format!("cannot read: {e}")))?;
    let points = parse_pts(&text).map_err(|(line, reason)| bad(line, reason))?;
    let image =
        ["jpg", "png", "JPG", "PNG"].iter().map(|ext| pts.with_extension(ext)).find(|p| p.is_file()).ok_or_else(
            || BadRecord {
                source: pts.display().to_string(),
                reason: "no image (.jpg or .png) beside the annotation".into(),
            },
        )?;
    let rel = image.strip_prefix(root).unwrap_or(&image).display().to_string();
    Ok(Record {
        dataset: "300w",
        image: ImageSource::File(image),
        source: pts.display().to_string(),
        crop: CropFrom::Points,
        raw: json!({ "image": rel, "points": points }),
        label: Label::Landmarks { points },
    })
}

/// Parse a `.pts` file into 0-based points. Errors carry the 1-based line they are about.
pub fn parse_pts(text: &str) -> std::result::Result<Vec<[f32; 2]>, (usize, String)> {
    let mut n_points = None;
    let mut points = Vec::new();
    let mut in_body = false;
    let mut last = 0;
    for (i, line) in text.lines().enumerate() {
        let (no, line) = (i + 1, line.trim());
        last = no;
        if line.is_empty() {
            continue;
        }
        if !in_body {
            if line == "{" {
                in_body = true;
            } else if let Some(n) = line.strip_prefix("n_points:") {
                let n = n.trim().parse::<usize>().map_err(|_| (no, format!("bad point count {:?}", n.trim())))?;
                n_points = Some(n);
            } else if !line.starts_with("version:") {
                return Err((no, format!("unexpected header line {line:?}")));
            }
            continue;
        }
        if line == "}" {
            let declared = n_points.ok_or((no, "no n_points line before the points".to_string()))?;
            if declared != points.len() {
                return Err((no, format!("n_points says {declared}, the file has {}", points.len())));
            }
            if points.len() != N_POINTS {
                return Err((no, format!("{} points, expected {N_POINTS}", points.len())));
            }
            return Ok(points);
        }
        let mut it = line.split_whitespace().map(|v| v.parse::<f32>().ok().filter(|v| v.is_finite()));
        match (it.next(), it.next(), it.next()) {
            // 1-based to 0-based.
            (Some(Some(x)), Some(Some(y)), None) => points.push([x - 1.0, y - 1.0]),
            _ => return Err((no, format!("malformed point line {line:?} (expected `x y`)"))),
        }
    }
    Err((last, if in_body { "no closing `}`".into() } else { "no `{` opening the points".into() }))
}
