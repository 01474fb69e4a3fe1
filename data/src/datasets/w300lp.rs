//! 300W-LP (head pose training) and AFLW2000-3D (its test set): one `.mat` per image.
//!
//! Layout, as distributed:
//!
//! ```text
//! 300W_LP/{AFW,HELEN,IBUG,LFPW}[_Flip]/NAME.jpg + NAME.mat   pt2d 2x68, Pose_Para 1x7
//! 300W_LP/landmarks/{AFW,HELEN,IBUG,LFPW}/NAME_pts.mat       pts_2d 68x2 (optional)
//! AFLW2000/image00002.jpg + image00002.mat                    pt3d_68 3x68, Pose_Para 1x7
//! ```
//!
//! (`aflw2000` accepts the folder that holds `AFLW2000/` or `AFLW2000/` itself.)
//! `Pose_Para` is `[pitch, yaw, roll, tx, ty, tz, scale]` with the angles in radians; the label
//! takes them as given. Points: `pt2d` (300W-LP) or the first two rows of `pt3d_68` (AFLW2000),
//! used as 0-based pixel coordinates without a shift. They come from 3DDFA's model fitting, not
//! from clicks on MATLAB's 1-based grid, and the official pipeline (Hopenet's loader, which
//! FaceXFormer's follows) crops with them as given; they only place the crop
//! (`CropFrom::Points`), never a loss. A 300W-LP file without `pt2d` falls back to `pts_2d` of
//! `landmarks/FOLDER/NAME_pts.mat` when that exists.
//!
//! AFLW2000 keeps every sample; `raw.out_of_range` records whether an angle lies outside +-99
//! degrees, the samples the standard protocol drops at evaluation. `raw.pose_degrees` is
//! (pitch, yaw, roll) in degrees. A `.mat` without its `.jpg`, unreadable, or with a variable of
//! the wrong shape is a bad record naming the file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::json;

use super::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::mat;
use crate::sample::{CropFrom, ImageSource, Label, Record};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    W300Lp,
    Aflw2000,
}

/// The 300W-LP image folders (each also as `NAME_Flip`).
pub const FOLDERS: [&str; 4] = ["AFW", "HELEN", "IBUG", "LFPW"];
/// The standard AFLW2000 protocol evaluates only faces with every angle within this (degrees).
pub const AFLW2000_MAX_DEGREES: f64 = 99.0;
const N_POINTS: usize = 68;

pub fn read(root: &Path, split: &str, variant: Variant) -> Result<Dataset> {
    let (name, want_split) = match variant {
        Variant::W300Lp => ("300w_lp", "train"),
        Variant::Aflw2000 => ("aflw2000", "test"),
    };
    if split != want_split {
        return Err(Error::Invalid(format!("{name} has no split {split:?} (only {want_split})")));
    }
    let dirs: Vec<PathBuf> = match variant {
        Variant::W300Lp => {
            FOLDERS.iter().flat_map(|f| [root.join(f), root.join(format!("{f}_Flip"))]).filter(|d| d.is_dir()).collect()
        }
        Variant::Aflw2000 => vec![if root.join("AFLW2000").is_dir() { root.join("AFLW2000") } else { root.into() }],
    };
    if dirs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no 300W-LP image folder ({} or their _Flip)",
            root.display(),
            FOLDERS.join(", ")
        )));
    }
    let mut ds = Dataset { name, split: split.to_string(), records: Vec::new(), bad: Vec::new() };
    let mut files = Vec::new();
    for dir in dirs {
        files.extend(super::list_files(&dir, &["mat"])?);
    }
    // 122k small files in 300W-LP: parsed in parallel, kept in file order.
    let parsed: Vec<_> = files.par_iter().map(|file| (file, read_one(root, file, variant))).collect();
    for (file, result) in parsed {
        match result {
            Ok(rec) => ds.records.push(rec),
            Err(reason) => ds.bad.push(BadRecord { source: file.display().to_string(), reason }),
        }
    }
    if ds.records.is_empty() && ds.bad.is_empty() {
        return Err(Error::Invalid(format!("{}: no .mat annotations for {name}", root.display())));
    }
    Ok(ds)
}

fn read_one(root: &Path, file: &Path, variant: Variant) -> std::result::Result<Record, String> {
    let image = file.with_extension("jpg");
    if !image.is_file() {
        return Err(format!("no image {}", image.display()));
    }
    let m = mat::read(file).map_err(|e| e.to_string())?;
    let pose = m.numeric("Pose_Para", &[1, 7]).map_err(|e| e.to_string())?;
    let points = match variant {
        Variant::W300Lp => w300lp_points(root, file, &m)?,
        Variant::Aflw2000 => {
            // pt3d_68 is 3x68, column-major: point i is values 3i..3i+3 (x, y, z).
            let v = m.numeric("pt3d_68", &[3, N_POINTS]).map_err(|e| e.to_string())?;
            v.as_chunks::<3>().0.iter().map(|p| [p[0] as f32, p[1] as f32]).collect()
        }
    };
    if points.iter().flatten().any(|c| !c.is_finite()) || pose[..3].iter().any(|a| !a.is_finite()) {
        return Err(format!("{}: a point or an angle is not finite", file.display()));
    }
    let degrees: Vec<f64> = pose[..3].iter().map(|a| a.to_degrees()).collect();
    let mut raw = json!({
        "pose_degrees": degrees,
        "pose_para": pose,
        "points": points,
    });
    if variant == Variant::Aflw2000 {
        raw["out_of_range"] = json!(degrees.iter().any(|d| d.abs() > AFLW2000_MAX_DEGREES));
    }
    Ok(Record {
        dataset: if variant == Variant::W300Lp { "300w_lp" } else { "aflw2000" },
        image: ImageSource::File(image),
        source: file.strip_prefix(root).unwrap_or(file).display().to_string(),
        crop: CropFrom::Points,
        label: Label::HeadPose {
            pitch_yaw_roll: [pose[0] as f32, pose[1] as f32, pose[2] as f32],
            points: Some(points),
        },
        raw,
    })
}

/// `pt2d` (2x68, point i = values 2i, 2i+1), or `pts_2d` (68x2, point i = values i, 68 + i) of
/// the landmarks file when the image's file has no `pt2d`.
fn w300lp_points(root: &Path, file: &Path, m: &mat::MatFile) -> std::result::Result<Vec<[f32; 2]>, String> {
    if m.get("pt2d").is_ok() {
        let v = m.numeric("pt2d", &[2, N_POINTS]).map_err(|e| e.to_string())?;
        return Ok(v.as_chunks::<2>().0.iter().map(|p| [p[0] as f32, p[1] as f32]).collect());
    }
    let folder = file.parent().and_then(Path::file_name).unwrap_or_default();
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let pts = root.join("landmarks").join(folder).join(format!("{stem}_pts.mat"));
    if !pts.is_file() {
        return Err(format!("{}: no variable pt2d and no {}", file.display(), pts.display()));
    }
    let lm = mat::read(&pts).map_err(|e| e.to_string())?;
    let v = lm.numeric("pts_2d", &[N_POINTS, 2]).map_err(|e| e.to_string())?;
    Ok((0..N_POINTS).map(|i| [v[i] as f32, v[N_POINTS + i] as f32]).collect())
}
