//! UTKFace: age, gender and race in each file name.
//!
//! Layout, as distributed: the aligned and cropped faces, named
//! `age_gender_race_datetime.jpg.chip.jpg` (the "Aligned&Cropped" archive) or
//! `age_gender_race_datetime.jpg`, in one folder: the root if it holds such images, else
//! `UTKFace/`, else `crop_part1/` (the first found is read, since `crop_part1` is a subset of
//! the full set and reading both would repeat faces).
//!
//! Fields: age in years (0..=116), gender 0 male / 1 female, race in UTKFace's order 0 White,
//! 1 Black, 2 Asian, 3 Indian, 4 Others. The model's race order is 0 White, 1 Black, 2 Indian,
//! 3 Asian, 4 Others, so Asian and Indian swap; the age bin is `min(age / 10, 7)`. `raw` keeps
//! the fields as written (race in UTKFace's order). Real copies hold a few names with a field
//! missing (`39_1_20170116174525125.jpg.chip.jpg`): those, and any value out of range, are bad
//! records named by file.
//!
//! Split: `all`. UTKFace has no official split; callers hold out their own.
//!
//! Crop: the whole image (the faces are already aligned and cropped).

use std::path::Path;

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// UTKFace's race id -> the model's race id.
pub const RACE_TO_MODEL: [u8; 5] = [0, 1, 3, 2, 4];

/// The oldest age in UTKFace.
pub const MAX_AGE: u32 = 116;

/// The model's age class of an age in years: its decade, 70 and over in the last (8 bins).
pub fn age_bin(years: u32) -> u8 {
    (years / 10).min(7) as u8
}

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    if split != "all" {
        return Err(Error::Invalid(format!("utkface has no split {split:?} (all: it has no official split)")));
    }
    let mut ds = Dataset { name: "utkface", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("UTKFace"), root.join("crop_part1")] {
        if dir.is_dir() {
            files = super::list_files(&dir, &["jpg", "jpeg", "png"])?.into_iter().filter(|p| p.is_file()).collect();
            if !files.is_empty() {
                break;
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "no UTKFace images in {} (nor in UTKFace/ or crop_part1/)",
            root.display()
        )));
    }
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match parse_name(&name) {
            Ok(f) => ds.records.push(Record {
                dataset: "utkface",
                source: path.display().to_string(),
                image: ImageSource::File(path),
                crop: CropFrom::WholeImage,
                label: Label::AgeGenderRace {
                    age_bin: age_bin(f.age),
                    gender: f.gender,
                    race: RACE_TO_MODEL[f.race as usize],
                },
                raw: json!({ "file": name, "age": f.age, "gender": f.gender, "race": f.race, "datetime": f.datetime }),
            }),
            Err(reason) => ds.bad.push(BadRecord { source: path.display().to_string(), reason }),
        }
    }
    Ok(ds)
}

/// The fields of a UTKFace name, as written.
#[derive(Debug, PartialEq)]
pub struct Fields {
    pub age: u32,
    pub gender: u8,
    /// UTKFace's order.
    pub race: u8,
    pub datetime: String,
}

/// Parse `age_gender_race_datetime.jpg[.chip.jpg]`.
pub fn parse_name(name: &str) -> std::result::Result<Fields, String> {
    let stem = name.strip_suffix(".chip.jpg").unwrap_or(name);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    let f: Vec<&str> = stem.split('_').collect();
    if f.len() != 4 {
        return Err(format!("{} fields in the name, expected age_gender_race_datetime", f.len()));
    }
    let age =
        f[0].parse::<u32>().ok().filter(|a| *a <= MAX_AGE).ok_or(format!("age {:?} not in 0..={MAX_AGE}", f[0]))?;
    let gender = f[1].parse::<u8>().ok().filter(|g| *g <= 1).ok_or(format!("gender {:?} is not 0 or 1", f[1]))?;
    let race = f[2].parse::<u8>().ok().filter(|r| *r <= 4).ok_or(format!("race {:?} not in 0..=4", f[2]))?;
    if f[3].is_empty() || !f[3].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("date-time {:?} is not digits", f[3]));
    }
    Ok(Fields { age, gender, race, datetime: f[3].to_string() })
}
