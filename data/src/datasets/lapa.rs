//! LaPa: face parsing masks in its own 11 classes (the model's classes), plus 106 landmarks.
//!
//! Layout, as distributed:
//!
//! ```text
//! root/{train,val,test}/images/NAME.jpg
//! root/{split}/labels/NAME.png      class ids 0..=10, already in the model's (LaPa's) order
//! root/{split}/landmarks/NAME.txt   `106`, then 106 lines `x y`
//! ```
//!
//! An image whose label or landmark file is missing or malformed is a bad record; a missing
//! `images/` folder is fatal. Label values are checked (0..=10) when the mask is decoded.
//!
//! Crop: the tight box of the 106 landmarks (`CropFrom::Box`, computed here since a parsing label
//! carries no points). LaPa's images are loose face crops of varying margin, so the whole image
//! would give faces of varying scale; the landmark box gives the same framing as the landmark
//! datasets. `raw` keeps the 106 points as written (0-based pixels) and the box.

use std::path::Path;

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, MaskSource, Record};

/// Landmarks per LaPa face.
pub const N_LANDMARKS: usize = 106;

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    if !["train", "val", "test"].contains(&split) {
        return Err(Error::Invalid(format!("lapa has no split {split:?} (train, val, test)")));
    }
    let dir = root.join(split);
    let mut ds = Dataset { name: "lapa", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    for image in super::list_files(&dir.join("images"), &["jpg", "jpeg", "png"])? {
        match read_one(root, &dir, &image) {
            Ok(rec) => ds.records.push(rec),
            Err(bad) => ds.bad.push(bad),
        }
    }
    Ok(ds)
}

fn read_one(root: &Path, dir: &Path, image: &Path) -> std::result::Result<Record, BadRecord> {
    let stem = image.file_stem().unwrap_or_default();
    let label = dir.join("labels").join(stem).with_extension("png");
    let marks = dir.join("landmarks").join(stem).with_extension("txt");
    let bad =
        |path: &Path, line: usize, reason: String| BadRecord { source: format!("{}:{line}", path.display()), reason };
    let missing = |reason: String| BadRecord { source: image.display().to_string(), reason };
    if !label.is_file() {
        return Err(missing(format!("no label mask {}", label.display())));
    }
    let text =
        std::fs::read_to_string(&marks).map_err(|e| missing(format!("no landmarks {}: {e}", marks.display())))?;
    let points = parse_landmarks(&text).map_err(|(line, reason)| bad(&marks, line, reason))?;
    let bbox = tight_box(&points);
    if bbox[2] <= bbox[0] || bbox[3] <= bbox[1] {
        return Err(bad(&marks, 1, format!("the landmarks span an empty box {bbox:?}")));
    }
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    Ok(Record {
        dataset: "lapa",
        image: ImageSource::File(image.to_path_buf()),
        source: label.display().to_string(),
        crop: CropFrom::Box(bbox),
        raw: json!({ "image": rel(image), "label": rel(&label), "landmarks106": points, "box": bbox }),
        label: Label::Parsing(MaskSource::ClassPng(label)),
    })
}

/// Parse a LaPa landmark file: a count line (106), then that many `x y` lines.
pub fn parse_landmarks(text: &str) -> std::result::Result<Vec<[f32; 2]>, (usize, String)> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
    let (no, first) = lines.next().ok_or((1, "empty landmark file".to_string()))?;
    let n: usize = first.parse().map_err(|_| (no, format!("count line {first:?} is not a number")))?;
    if n != N_LANDMARKS {
        return Err((no, format!("{n} landmarks, expected {N_LANDMARKS}")));
    }
    let mut points = Vec::with_capacity(n);
    let mut last = no;
    for (no, line) in lines {
        last = no;
        let mut it = line.split_whitespace().map(|v| v.parse::<f32>().ok().filter(|v| v.is_finite()));
        match (it.next(), it.next(), it.next()) {
            (Some(Some(x)), Some(Some(y)), None) => points.push([x, y]),
            _ => return Err((no, format!("malformed point line {line:?} (expected `x y`)"))),
        }
    }
    if points.len() != n {
        return Err((last, format!("{} point lines, the count line says {n}", points.len())));
    }
    Ok(points)
}

/// `[x_min, y_min, x_max, y_max]` of the points.
fn tight_box(points: &[[f32; 2]]) -> [f32; 4] {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in points {
        b = [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])];
    }
    b
}
