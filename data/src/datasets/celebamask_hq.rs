//! CelebAMask-HQ: 30000 aligned 1024x1024 faces with 512x512 binary masks of 18 parts, merged
//! into LaPa's 11 classes.
//!
//! Layout, as distributed:
//!
//! ```text
//! root/CelebA-HQ-img/N.jpg                              N = 0..29999
//! root/CelebAMask-HQ-mask-anno/K/NNNNN_<part>.png      K = N / 2000, NNNNN = N zero-padded to 5
//! root/CelebA-HQ-to-CelebA-mapping.txt                 `idx orig_idx orig_file`, rows `0 119613 119614.jpg`
//! list_eval_partition.txt                              CelebA's, in the root, Anno/ or Eval/
//! ```
//!
//! Splits follow CelebA's partition of each image's original (`orig_file`), as the dataset's
//! own `g_partition.py` does: 24183 train, 2993 val, 2824 test. CelebA's
//! `list_eval_partition.txt` does not ship with CelebAMask-HQ: copy it into the root (or an
//! `Anno/` / `Eval/` folder there). Only parts that exist are used (an absent part was not
//! visible); an image with no part file, or no partition entry, or a missing image is a bad record.
//!
//! Merge ([`MaskSource::Parts`]: painted in this order onto background, later wins):
//!
//! | order | parts | LaPa class | why |
//! |---|---|---|---|
//! | 1 | `skin`, `l_ear`, `r_ear` | 1 skin | LaPa's skin takes in visible ears |
//! | 2 | `eye_g` | 1 skin | LaPa has no glasses class; the part annotated under the frame and lenses is face |
//! | 3 | `nose` | 6 nose | |
//! | 4 | `r_brow`, `l_brow` | 2, 3 | CelebAMask-HQ's l_/r_ are the person's, LaPa's the image's: swapped |
//! | 5 | `r_eye`, `l_eye` | 4, 5 | swapped likewise; painted after `eye_g`, so an eye seen through glasses stays eye |
//! | 6 | `u_lip`, `mouth`, `l_lip` | 7, 8, 9 | |
//! | 7 | `hair` | 10 hair | on top, as in the dataset's own merge order |
//! | - | `hat`, `ear_r`, `neck_l`, `neck`, `cloth` | 0 background | LaPa labels neither accessories, neck nor clothes; not painted |
//!
//! Parts are annotated as their visible residue, so overlaps are thin; the order matters at
//! borders and for glasses. Masks are checked when decoded: every part of an image must have the
//! same size (512x512 in the real dataset), else an error names the part file.
//!
//! Crop: the whole image (CelebA-HQ images are already aligned face crops).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::celeba::{image_number, read_partition};
use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, MaskSource, Record};

/// The painted parts in painting order, with their LaPa class (later wins).
pub const PAINT_ORDER: [(&str, u8); 13] = [
    ("skin", 1),
    ("l_ear", 1),
    ("r_ear", 1),
    ("eye_g", 1),
    ("nose", 6),
    ("r_brow", 2),
    ("l_brow", 3),
    ("r_eye", 4),
    ("l_eye", 5),
    ("u_lip", 7),
    ("mouth", 8),
    ("l_lip", 9),
    ("hair", 10),
];

/// The parts that stay background (not painted).
pub const BACKGROUND_PARTS: [&str; 5] = ["hat", "ear_r", "neck_l", "neck", "cloth"];

/// Images per mask folder.
const PER_FOLDER: u32 = 2000;

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    let part = match split {
        "train" => 0,
        "val" => 1,
        "test" => 2,
        _ => return Err(Error::Invalid(format!("celebamask_hq has no split {split:?} (train, val, test)"))),
    };
    let mapping = root.join("CelebA-HQ-to-CelebA-mapping.txt");
    let text = crate::error::read_to_string(&mapping)?;
    let (partition_path, partition) = read_partition(root)?;
    let masks = root.join("CelebAMask-HQ-mask-anno");
    if !masks.is_dir() {
        return Err(Error::Io { path: masks, source: std::io::ErrorKind::NotFound.into() });
    }
    let mut ds = Dataset { name: "celebamask_hq", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    // Mask folders are listed once each, on first use: statting 18 names per image is slower.
    let mut folders: HashMap<u32, HashMap<u32, Vec<String>>> = HashMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let source = format!("{}:{}", mapping.display(), i + 1);
        let bad = |reason: String| BadRecord { source: source.clone(), reason };
        let (Some(idx), Some(orig)) =
            (f.first().and_then(|v| v.parse::<u32>().ok()), f.get(2).and_then(|v| image_number(v)))
        else {
            ds.bad.push(bad(format!("expected `idx orig_idx orig_file`, found {line:?}")));
            continue;
        };
        match partition.get(&orig) {
            Some(p) if *p == part => {}
            Some(_) => continue,
            None => {
                ds.bad.push(bad(format!("{} is not in {}", f[2], partition_path.display())));
                continue;
            }
        }
        let image = root.join("CelebA-HQ-img").join(format!("{idx}.jpg"));
        if !image.is_file() {
            ds.bad.push(bad(format!("image {} not found", image.display())));
            continue;
        }
        let k = idx / PER_FOLDER;
        if let std::collections::hash_map::Entry::Vacant(e) = folders.entry(k) {
            e.insert(list_parts(&masks.join(k.to_string()))?);
        }
        let present = folders[&k].get(&idx).cloned().unwrap_or_default();
        let dir = masks.join(k.to_string());
        let parts: Vec<(PathBuf, u8)> = PAINT_ORDER
            .iter()
            .filter(|(name, _)| present.iter().any(|p| p == name))
            .map(|(name, class)| (dir.join(format!("{idx:05}_{name}.png")), *class))
            .collect();
        if parts.is_empty() {
            ds.bad.push(bad(format!("no face part masks for image {idx} in {}", dir.display())));
            continue;
        }
        let mut listed = present.clone();
        listed.sort();
        ds.records.push(Record {
            dataset: "celebamask_hq",
            image: ImageSource::File(image),
            source,
            crop: CropFrom::WholeImage,
            label: Label::Parsing(MaskSource::Parts(parts)),
            raw: json!({ "image": format!("CelebA-HQ-img/{idx}.jpg"), "celeba_file": f[2], "parts": listed }),
        });
    }
    Ok(ds)
}

/// The part names present in one mask folder, by image index (`00012_l_eye.png` -> 12: l_eye).
/// A folder that is absent holds no parts (its images become bad records).
fn list_parts(dir: &Path) -> Result<HashMap<u32, Vec<String>>> {
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(Error::Io { path: dir.to_path_buf(), source }),
    };
    for entry in entries {
        let name = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".png")) else { continue };
        if let Some((idx, part)) = stem.split_once('_').and_then(|(i, p)| Some((i.parse::<u32>().ok()?, p))) {
            out.entry(idx).or_default().push(part.to_string());
        }
    }
    Ok(out)
}
