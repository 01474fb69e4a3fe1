//! WFLW: 98 landmarks, a face box and six attribute flags per face, one face per line.
//!
//! Layout, as distributed:
//!
//! ```text
//! root/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
//! root/WFLW_images/<event folder>/<name>.jpg
//! ```
//!
//! (the list file is also accepted directly in the root). Each line holds 196 floats (98 `x y`),
//! the box `x_min y_min x_max y_max` (ints), six flags `pose expression illumination make-up
//! occlusion blur`, and the image path relative to `WFLW_images/`: 207 fields. An image with
//! several faces has several lines. A line with another field count, a field that does not parse,
//! or an image that is missing is a bad record `file:line`.
//!
//! The model predicts 300W's 68 points, so the 98 are reduced with the commonly used map (68-pt
//! index <- 98-pt index; checked against public conversion scripts):
//!
//! | 68-pt | part | 98-pt |
//! |---|---|---|
//! | 0..=16 | jaw | 0, 2, 4, ..., 32 (every other contour point) |
//! | 17..=21 | brow (image left) | 33, 34, 35, 36, 37 (upper edge) |
//! | 22..=26 | brow (image right) | 42, 43, 44, 45, 46 (upper edge) |
//! | 27..=35 | nose | 51..=59 |
//! | 36..=41 | eye (image left) | 60, 61, 63, 64, 65, 67 |
//! | 42..=47 | eye (image right) | 68, 69, 71, 72, 73, 75 |
//! | 48..=67 | mouth | 76..=95 |
//!
//! The 98 points stay in `raw.points98` (with the box and the flags by name); coordinates are
//! taken as written (0-based pixels).
//!
//! Crop: the dataset's box (`CropFrom::Box`), the box WFLW's benchmarks crop with.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// For each of the 68 points, the WFLW point it is taken from.
pub const WFLW_98_TO_68: [usize; 68] = [
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, // jaw
    33, 34, 35, 36, 37, // brow
    42, 43, 44, 45, 46, // brow
    51, 52, 53, 54, 55, 56, 57, 58, 59, // nose
    60, 61, 63, 64, 65, 67, // eye
    68, 69, 71, 72, 73, 75, // eye
    76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, // mouth
];

/// The six flags, in the order of the list file.
pub const FLAGS: [&str; 6] = ["pose", "expression", "illumination", "make_up", "occlusion", "blur"];

const FIELDS: usize = 196 + 4 + 6 + 1;

/// Where the list file of a split is: the distributed folder, or the root.
fn list_file(root: &Path, split: &str) -> Result<PathBuf> {
    let name = format!("list_98pt_rect_attr_{split}.txt");
    let nested = root.join("WFLW_annotations").join("list_98pt_rect_attr_train_test").join(&name);
    let flat = root.join(&name);
    if nested.is_file() {
        return Ok(nested);
    }
    if flat.is_file() {
        return Ok(flat);
    }
    Err(Error::Io {
        path: nested,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("WFLW list file (nor {name} in the root)")),
    })
}

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    if split != "train" && split != "test" {
        return Err(Error::Invalid(format!("wflw has no split {split:?} (train, test)")));
    }
    let list = list_file(root, split)?;
    let text = crate::error::read_to_string(&list)?;
    let images = root.join("WFLW_images");
    let mut ds = Dataset { name: "wflw", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let source = format!("{}:{}", list.display(), i + 1);
        match parse_line(line, &images) {
            Ok(rec) => ds.records.push(Record { source, ..rec }),
            Err(reason) => ds.bad.push(BadRecord { source, reason }),
        }
    }
    Ok(ds)
}

/// One face: the record (its `source` is filled by the caller) or why the line is bad.
fn parse_line(line: &str, images: &Path) -> std::result::Result<Record, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != FIELDS {
        return Err(format!("{} fields, expected {FIELDS} (196 coordinates, 4 box, 6 flags, image)", fields.len()));
    }
    let num = |k: usize| -> std::result::Result<f32, String> {
        fields[k]
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("field {} {:?} is not a number", k + 1, fields[k]))
    };
    let mut points98 = Vec::with_capacity(98);
    for p in 0..98 {
        points98.push([num(2 * p)?, num(2 * p + 1)?]);
    }
    let mut bbox = [0f32; 4];
    for (d, v) in bbox.iter_mut().enumerate() {
        *v = num(196 + d)?;
    }
    if bbox[2] <= bbox[0] || bbox[3] <= bbox[1] {
        return Err(format!("empty face box {bbox:?}"));
    }
    let mut flags = serde_json::Map::new();
    for (k, name) in FLAGS.iter().enumerate() {
        let v = fields[200 + k];
        let flag: u8 = v.parse().ok().filter(|f| *f <= 1).ok_or_else(|| format!("flag {name} is {v:?}, not 0 or 1"))?;
        flags.insert(name.to_string(), flag.into());
    }
    let rel = fields[206];
    let image = images.join(rel);
    if !image.is_file() {
        return Err(format!("image {} not found", image.display()));
    }
    let points = WFLW_98_TO_68.iter().map(|&k| points98[k]).collect();
    Ok(Record {
        dataset: "wflw",
        image: ImageSource::File(image),
        source: String::new(),
        crop: CropFrom::Box(bbox),
        raw: json!({ "image": rel, "points98": points98, "box": bbox, "flags": flags }),
        label: Label::Landmarks { points },
    })
}
