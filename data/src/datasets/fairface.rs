//! FairFace: age group, gender and race of face crops, from two CSV files.
//!
//! Layout, as distributed (the image archive unpacked beside the CSVs):
//!
//! ```text
//! root/fairface_label_{train,val}.csv   header `file,age,gender,race,service_test`
//! root/train/1.jpg, root/val/1.jpg      (`file` is relative to the root)
//! ```
//!
//! Columns are found by name (older copies lack `service_test`). A row with an unknown value or
//! a missing image is a bad record `file.csv:line`.
//!
//! Mapping to the model's labels (`raw` keeps the strings as written):
//!
//! | FairFace | model |
//! |---|---|
//! | age `0-2`, `3-9` | bin 0 (0-9) |
//! | `10-19` ... `60-69` | bins 1 ... 6 |
//! | `more than 70` | bin 7 (70+) |
//! | `Male` / `Female` | 0 / 1 |
//! | `White` | 0 White |
//! | `Black` | 1 Black |
//! | `Indian` | 2 Indian |
//! | `East Asian`, `Southeast Asian` | 3 Asian |
//! | `Latino_Hispanic`, `Middle Eastern` | 4 Others |
//!
//! The five races are UTKFace's, whose "Others" is defined as "like Hispanic, Latino, Middle
//! Eastern": FairFace's two extra groups go there, and its two Asian groups are UTKFace's Asian.
//!
//! Crop: the whole image. FairFace images are already face crops, with a margin (0.25 of the
//! face size in the `margin025` release, 1.25 in `margin125`); the crop keeps that margin as is.

use std::path::Path;

use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::sample::{CropFrom, ImageSource, Label, Record};

/// FairFace's age groups, in bin order (the first two share bin 0).
pub const AGE_GROUPS: [(&str, u8); 9] = [
    ("0-2", 0),
    ("3-9", 0),
    ("10-19", 1),
    ("20-29", 2),
    ("30-39", 3),
    ("40-49", 4),
    ("50-59", 5),
    ("60-69", 6),
    ("more than 70", 7),
];

/// FairFace's races and the model's race ids.
pub const RACES: [(&str, u8); 7] = [
    ("White", 0),
    ("Black", 1),
    ("Indian", 2),
    ("East Asian", 3),
    ("Southeast Asian", 3),
    ("Latino_Hispanic", 4),
    ("Middle Eastern", 4),
];

pub fn read(root: &Path, split: &str) -> Result<Dataset> {
    if split != "train" && split != "val" {
        return Err(Error::Invalid(format!("fairface has no split {split:?} (train, val)")));
    }
    let csv = root.join(format!("fairface_label_{split}.csv"));
    let text = crate::error::read_to_string(&csv)?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header: Vec<String> = lines.next().map(|(_, l)| split_row(l)).unwrap_or_default();
    let column = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| Error::Parse {
            path: csv.clone(),
            line: 1,
            msg: format!("no column {name:?} in the header {header:?}"),
        })
    };
    let (c_file, c_age, c_gender, c_race) = (column("file")?, column("age")?, column("gender")?, column("race")?);
    let c_service = header.iter().position(|h| h == "service_test");
    let mut ds = Dataset { name: "fairface", split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    for (no, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let source = format!("{}:{no}", csv.display());
        let row = split_row(line);
        let get = |c: usize| row.get(c).map(String::as_str).unwrap_or("");
        let parsed = (|| -> std::result::Result<Label, String> {
            let age_bin =
                lookup(&AGE_GROUPS, get(c_age)).ok_or_else(|| format!("unknown age group {:?}", get(c_age)))?;
            let gender = match get(c_gender) {
                "Male" => 0,
                "Female" => 1,
                g => return Err(format!("unknown gender {g:?}")),
            };
            let race = lookup(&RACES, get(c_race)).ok_or_else(|| format!("unknown race {:?}", get(c_race)))?;
            Ok(Label::AgeGenderRace { age_bin, gender, race })
        })();
        let image = root.join(get(c_file));
        let label = match parsed {
            Ok(_) if get(c_file).is_empty() || !image.is_file() => Err(format!("image {} not found", image.display())),
            other => other,
        };
        match label {
            Ok(label) => {
                let mut raw =
                    json!({ "file": get(c_file), "age": get(c_age), "gender": get(c_gender), "race": get(c_race) });
                if let Some(c) = c_service {
                    raw["service_test"] = json!(get(c));
                }
                ds.records.push(Record {
                    dataset: "fairface",
                    image: ImageSource::File(image),
                    source,
                    crop: CropFrom::WholeImage,
                    label,
                    raw,
                });
            }
            Err(reason) => ds.bad.push(BadRecord { source, reason }),
        }
    }
    Ok(ds)
}

fn lookup(table: &[(&str, u8)], key: &str) -> Option<u8> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A CSV row; FairFace's values have no commas, but quotes are stripped if a tool added them.
fn split_row(line: &str) -> Vec<String> {
    line.trim_end_matches('\r').split(',').map(|f| f.trim().trim_matches('"').to_string()).collect()
}
