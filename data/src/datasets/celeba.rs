//! CelebA: 40 binary attributes per image.
//!
//! Layout, as distributed (the list files in the root or in `Anno/` / `Eval/`, the image folder
//! in the root or in `Img/`):
//!
//! ```text
//! list_attr_celeba.txt               count; the 40 names; `000001.jpg -1  1 ...` (40 values)
//! list_eval_partition.txt            `000001.jpg 0` (0 train, 1 val, 2 test)
//! list_bbox_celeba.txt               count; `image_id x_1 y_1 width height`; rows
//! list_landmarks_celeba.txt          count; 10 names; rows of 10 ints (in-the-wild images)
//! list_landmarks_align_celeba.txt    the same for the aligned images
//! img_align_celeba/000001.jpg        aligned 178x218 crops (preferred when present)
//! img_celeba/000001.jpg              in-the-wild images
//! ```
//!
//! Columns are separated by runs of spaces. The 40 names must be CelebA's list in CelebA's order
//! ([`ATTRIBUTES`], the model's order); anything else is a fatal error naming the line. Values
//! `-1` -> 0, `1` -> 1; `raw.attributes` keeps them as written.
//!
//! Crop: the whole image for `img_align_celeba` (already aligned face crops, and the model was
//! trained on them); for `img_celeba` the dataset's box from `list_bbox_celeba.txt`
//! (`[x_1, y_1, x_1 + width, y_1 + height]`), which is then required. The five landmarks of the
//! matching landmark file go to `raw.landmarks` when the file is present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// The 40 attributes, in `list_attr_celeba.txt` order (the model's order).
pub const ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// A CelebA list file in the root, `Anno/` or `Eval/` (the order they are tried in).
pub(crate) fn find_list(root: &Path, name: &str) -> Option<PathBuf> {
    ["", "Anno", "Eval"].iter().map(|d| root.join(d).join(name)).find(|p| p.is_file())
}

fn require_list(root: &Path, name: &str) -> Result<PathBuf> {
    find_list(root, name).ok_or_else(|| Error::Io {
        path: root.join(name),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the root, Anno/ or Eval/"),
    })
}

/// `list_eval_partition.txt`: the file it was read from, and image number -> 0/1/2.
/// Keyed by the number of the file name, so `119614.jpg` and `119614.png` both match.
pub(crate) fn read_partition(root: &Path) -> Result<(PathBuf, HashMap<u32, u8>)> {
    let path = require_list(root, "list_eval_partition.txt")?;
    let text = crate::error::read_to_string(&path)?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let parsed = (f.len() == 2).then(|| (image_number(f[0]), f[1].parse::<u8>().ok().filter(|p| *p <= 2)));
        match parsed {
            Some((Some(n), Some(p))) => {
                out.insert(n, p);
            }
            _ => {
                let msg = format!("expected `NNNNNN.jpg 0|1|2`, found {line:?}");
                return Err(Error::Parse { path, line: i + 1, msg });
            }
        }
    }
    Ok((path, out))
}

/// `000123.jpg` -> 123.
pub(crate) fn image_number(name: &str) -> Option<u32> {
    name.split('.').next()?.parse().ok()
}

/// The split's partition number.
fn partition_id(split: &str) -> Result<u8> {
    match split {
        "train" => Ok(0),
        "val" => Ok(1),
        "test" => Ok(2),
        _ => Err(Error::Invalid(format!("celeba has no split {split:?} (train, val, test)"))),
    }
}

/// A list file of CelebA's shape: a count line, a header of names, rows `file v1 v2 ...`.
struct ListFile {
    path: PathBuf,
    names: Vec<String>,
    /// file name -> (1-based line, values).
    rows: HashMap<String, (usize, Vec<i32>)>,
    /// Rows in file order.
    order: Vec<String>,
    bad: Vec<BadRecord>,
}

fn read_list(path: PathBuf, n_values: usize) -> Result<ListFile> {
    let text = crate::error::read_to_string(&path)?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let count = lines.next().map(|(_, l)| l.trim().parse::<usize>());
    if !matches!(count, Some(Ok(_))) {
        return Err(Error::Parse { path, line: 1, msg: "the first line should be the image count".into() });
    }
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    // The box file's header names its first column (`image_id`), the others do not.
    let names: Vec<String> = header.split_whitespace().filter(|n| *n != "image_id").map(String::from).collect();
    if names.len() != n_values {
        let msg = format!("the header names {} columns, expected {n_values}", names.len());
        return Err(Error::Parse { path, line: 2, msg });
    }
    let (mut rows, mut order, mut bad) = (HashMap::new(), Vec::new(), Vec::new());
    for (no, line) in lines {
        let mut f = line.split_whitespace();
        let Some(file) = f.next() else { continue };
        let values: Vec<Option<i32>> = f.map(|v| v.parse().ok()).collect();
        if values.len() != n_values || values.iter().any(Option::is_none) {
            let reason = format!("expected a file name and {n_values} integers, found {line:?}");
            bad.push(BadRecord { source: format!("{}:{no}", path.display()), reason });
            continue;
        }
        order.push(file.to_string());
        rows.insert(file.to_string(), (no, values.into_iter().flatten().collect()));
    }
    Ok(ListFile { path, names, rows, order, bad })
}

/// Which image folder is present: (folder, aligned?). Kaggle's copy nests the folder in itself.
fn image_dir(root: &Path) -> Result<(PathBuf, bool)> {
    for (name, aligned) in [("img_align_celeba", true), ("img_celeba", false)] {
        for base in [root.to_path_buf(), root.join("Img")] {
            let dir = base.join(name);
            if dir.join(name).is_dir() {
                return Ok((dir.join(name), aligned));
            }
            if dir.is_dir() {
                return Ok((dir, aligned));
            }
        }
    }
    Err(Error::Io {
        path: root.join("img_align_celeba"),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no img_align_celeba/ or img_celeba/ folder"),
    })
}

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    let part = partition_id(split)?;
    let attrs = read_list(require_list(root, "list_attr_celeba.txt")?, 40)?;
    if let Some(k) = (0..40).find(|&k| attrs.names[k] != ATTRIBUTES[k]) {
        let msg = format!("attribute {} is {:?}, CelebA's list has {:?} there", k + 1, attrs.names[k], ATTRIBUTES[k]);
        return Err(Error::Parse { path: attrs.path, line: 2, msg });
    }
    let (partition_path, partition) = read_partition(root)?;
    let (images, aligned) = image_dir(root)?;
    let bbox = if aligned { None } else { Some(read_list(require_list(root, "list_bbox_celeba.txt")?, 4)?) };
    let marks_name = if aligned { "list_landmarks_align_celeba.txt" } else { "list_landmarks_celeba.txt" };
    let marks = find_list(root, marks_name).map(|p| read_list(p, 10)).transpose()?;

    let mut ds = Dataset { name: "celeba", split: split.to_string(), records: Vec::new(), bad: attrs.bad.clone() };
    ds.bad.extend(bbox.iter().chain(marks.iter()).flat_map(|l| l.bad.iter().cloned()));
    let folder = images.strip_prefix(root).unwrap_or(&images).display().to_string();
    for file in &attrs.order {
        let (no, values) = &attrs.rows[file];
        let source = format!("{}:{no}", attrs.path.display());
        let bad = |reason: String| BadRecord { source: source.clone(), reason };
        match image_number(file).and_then(|n| partition.get(&n)) {
            Some(p) if *p == part => {}
            Some(_) => continue,
            None => {
                ds.bad.push(bad(format!("{file} is not in {}", partition_path.display())));
                continue;
            }
        }
        let Some(label) = attribute_values(values) else {
            ds.bad.push(bad(format!("attribute values other than -1/1: {values:?}")));
            continue;
        };
        let image = images.join(file);
        if !image.is_file() {
            ds.bad.push(bad(format!("image {} not found", image.display())));
            continue;
        }
        let mut raw = json!({ "image": format!("{folder}/{file}"), "partition": part, "attributes": values });
        let crop = match &bbox {
            None => CropFrom::WholeImage,
            Some(list) => match list.rows.get(file) {
                Some((_, b)) if b[2] > 0 && b[3] > 0 => {
                    raw["bbox"] = json!(b);
                    let [x, y, w, h] = [b[0], b[1], b[2], b[3]].map(|v| v as f32);
                    CropFrom::Box([x, y, x + w, y + h])
                }
                _ => {
                    ds.bad.push(bad(format!("no usable box for {file} in {}", list.path.display())));
                    continue;
                }
            },
        };
        if let Some((_, m)) = marks.as_ref().and_then(|l| l.rows.get(file)) {
            raw["landmarks"] = json!(m.chunks(2).collect::<Vec<_>>());
        }
        ds.records.push(Record {
            dataset: "celeba",
            image: ImageSource::File(image),
            source,
            crop,
            label: Label::Attributes { values: label },
            raw,
        });
    }
    Ok(ds)
}

/// `-1`/`1` -> 0/1; `None` for any other value.
fn attribute_values(values: &[i32]) -> Option<[u8; 40]> {
    let mut out = [0u8; 40];
    for (o, &v) in out.iter_mut().zip(values) {
        *o = match v {
            -1 => 0,
            1 => 1,
            _ => return None,
        };
    }
    Some(out)
}
