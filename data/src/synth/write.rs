//! Synthetic faces written in the native layouts the readers load (see `docs/data.md`):
//! LaPa, 300W, 300W-LP + AFLW2000, CelebA, UTKFace and COFW. Faces `0..count` are rendered once
//! and written to every layout; about the first 80% go to training splits, the rest to held-out.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;
use serde::Serialize;

use super::{render_face, Face};
use crate::datasets::utkface::RACE_TO_MODEL;
use crate::error::{Error, Result};
use crate::mat::{write_v5, MatArray};
use crate::preprocess::{self, RgbImage, MARGIN_PERCENT};

/// How many faces each layout received, per split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    pub lapa: [usize; 2],
    pub w300: [usize; 2],
    /// 300W-LP (train), AFLW2000 (test).
    pub w300lp_aflw2000: [usize; 2],
    pub celeba: [usize; 2],
    /// Under `utkface` and `utkface_test` (each read as split `all`).
    pub utkface: [usize; 2],
    pub cofw: [usize; 2],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(io(path))
}

fn save_jpg(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(img)
        .map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })?;
    fs::write(path, bytes).map_err(io(path))
}

fn save_png<P: image::PixelWithColorType, C>(img: &image::ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    C: std::ops::Deref<Target = [P::Subpixel]>,
    [P::Subpixel]: image::EncodableLayout,
{
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Format { path: path.to_path_buf(), msg: e.to_string() })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io(path))
}

/// The face cropped the way the official pipeline crops (box + 25% margin each side), for the
/// datasets distributed as face crops (CelebA aligned, UTKFace).
fn face_crop(face: &Face) -> Result<RgbImage> {
    let (w, h) = (face.image.width() as usize, face.image.height() as usize);
    let b = preprocess::truncate_box(preprocess::adjust_bbox(face.face_box, w, h, MARGIN_PERCENT));
    Ok(preprocess::crop(&face.image, b)?)
}

/// `count` faces from `seed`, written in every layout under `out`.
pub fn write_dataset(out: &Path, count: usize, seed: u64) -> Result<SynthSummary> {
    let n_train = (count * 4).div_ceil(5).min(count);
    let is_train = |i: usize| i < n_train;
    let w300_train = ["afw", "helen/trainset", "lfpw/trainset"];
    let w300_test = ["helen/testset", "lfpw/testset", "ibug"];
    let mut dirs: Vec<PathBuf> = Vec::new();
    for split in ["train", "test"] {
        for sub in ["images", "labels", "landmarks"] {
            dirs.push(out.join("lapa").join(split).join(sub));
        }
    }
    dirs.extend(w300_train.iter().chain(&w300_test).map(|d| out.join("300w").join(d)));
    dirs.extend([out.join("300w_lp/AFW"), out.join("aflw2000"), out.join("celeba/img_align_celeba")]);
    // UTKFace has one split (`all`): the held-out faces get a root of their own.
    dirs.extend([out.join("utkface"), out.join("utkface_test"), out.join("cofw")]);
    for d in &dirs {
        mkdir(d)?;
    }

    let faces: Vec<Face> = (0..count).into_par_iter().map(|i| render_face(seed.wrapping_add(i as u64))).collect();
    faces.par_iter().enumerate().try_for_each(|(i, face)| -> Result<()> {
        let split = if is_train(i) { "train" } else { "test" };
        let name = format!("synth_{i:06}");
        write_lapa(&out.join("lapa").join(split), &name, face)?;
        let folder = if is_train(i) { w300_train[i % 3] } else { w300_test[i % 3] };
        let ext = if folder.starts_with("lfpw") { "png" } else { "jpg" };
        write_pts(&out.join("300w").join(folder), &name, ext, face)?;
        write_pose(out, &name, is_train(i), face)?;
        let crop = face_crop(face)?;
        save_jpg(&crop, &out.join(format!("celeba/img_align_celeba/{:06}.jpg", i + 1)))?;
        let utk = format!("{}_{}_{}_2017{:010}.jpg.chip.jpg", face.age_years, face.gender, utk_race(face.race), i);
        let utk_root = if is_train(i) { "utkface" } else { "utkface_test" };
        save_jpg(&crop, &out.join(utk_root).join(utk))
    })?;
    write_celeba_lists(&out.join("celeba"), &faces, n_train)?;
    write_cofw(&out.join("cofw/COFW.mat"), &faces, n_train)?;

    let (tr, te) = (n_train, count - n_train);
    Ok(SynthSummary {
        lapa: [tr, te],
        w300: [tr, te],
        w300lp_aflw2000: [tr, te],
        celeba: [tr, te],
        utkface: [tr, te],
        cofw: [tr, te],
    })
}

/// The model's race id -> UTKFace's (the inverse of the reader's map; it is an involution).
fn utk_race(model: u8) -> u8 {
    RACE_TO_MODEL.iter().position(|&m| m == model).unwrap_or(4) as u8
}

fn write_lapa(dir: &Path, name: &str, face: &Face) -> Result<()> {
    save_jpg(&face.image, &dir.join(format!("images/{name}.jpg")))?;
    save_png(&face.mask, &dir.join(format!("labels/{name}.png")))?;
    let p68: Vec<[f64; 2]> = face.landmarks.iter().map(|p| p.map(f64::from)).collect();
    let mut text = String::from("106\n");
    for p in super::points::lapa106_from_68(&p68) {
        let _ = writeln!(text, "{:.4} {:.4}", p[0], p[1]);
    }
    write_text(&dir.join(format!("landmarks/{name}.txt")), &text)
}

/// A 300W `.pts`: 1-based coordinates.
fn write_pts(dir: &Path, name: &str, ext: &str, face: &Face) -> Result<()> {
    let path = dir.join(format!("{name}.{ext}"));
    if ext == "png" {
        save_png(&face.image, &path)?;
    } else {
        save_jpg(&face.image, &path)?;
    }
    let mut text = String::from("version: 1\nn_points:  68\n{\n");
    for p in &face.landmarks {
        let _ = writeln!(text, "{:.4} {:.4}", p[0] + 1.0, p[1] + 1.0);
    }
    text.push_str("}\n");
    write_text(&dir.join(format!("{name}.pts")), &text)
}

/// 300W-LP (training) or AFLW2000 (held out): the image and a `.mat` with points (0-based, as
/// the reader takes them) and `Pose_Para = [pitch, yaw, roll, 0, 0, 0, scale]`.
fn write_pose(out: &Path, name: &str, train: bool, face: &Face) -> Result<()> {
    let dir = if train { out.join("300w_lp/AFW") } else { out.join("aflw2000") };
    save_jpg(&face.image, &dir.join(format!("{name}.jpg")))?;
    let pose = [face.pose[0] as f64, face.pose[1] as f64, face.pose[2] as f64, 0.0, 0.0, 0.0, 1.0];
    let pose = MatArray::double(&[1, 7], pose.to_vec());
    // Column-major 2x68 / 3x68: point i is values k*i .. k*i+k.
    let points = if train {
        ("pt2d", MatArray::double(&[2, 68], face.landmarks.iter().flat_map(|p| [p[0] as f64, p[1] as f64]).collect()))
    } else {
        (
            "pt3d_68",
            MatArray::double(&[3, 68], face.landmarks.iter().flat_map(|p| [p[0] as f64, p[1] as f64, 0.0]).collect()),
        )
    };
    write_v5(&dir.join(format!("{name}.mat")), &[points, ("Pose_Para", pose)])
}

fn write_celeba_lists(dir: &Path, faces: &[Face], n_train: usize) -> Result<()> {
    let mut attr = format!("{}\n{}\n", faces.len(), crate::datasets::celeba::ATTRIBUTES.join(" "));
    let mut part = String::new();
    for (i, face) in faces.iter().enumerate() {
        let _ = write!(attr, "{:06}.jpg", i + 1);
        for &a in &face.attributes {
            let _ = write!(attr, " {:>2}", if a == 1 { 1 } else { -1 });
        }
        attr.push('\n');
        let _ = writeln!(part, "{:06}.jpg {}", i + 1, if i < n_train { 0 } else { 2 });
    }
    write_text(&dir.join("list_attr_celeba.txt"), &attr)?;
    write_text(&dir.join("list_eval_partition.txt"), &part)
}

/// COFW's Level 5 `COFW.mat`: `IsTr`/`IsT` (cells of H x W x 3 uint8), `phisTr`/`phisT` (N x 87:
/// 29 x, 29 y 1-based, 29 flags), `bboxesTr`/`bboxesT` (N x 4, `[x y w h]` with a 1-based corner).
fn write_cofw(path: &Path, faces: &[Face], n_train: usize) -> Result<()> {
    let mut vars: Vec<(&str, MatArray)> = Vec::new();
    for (suffix, part) in [("Tr", &faces[..n_train]), ("T", &faces[n_train..])] {
        let n = part.len();
        let images = part.iter().map(|f| image_array(&f.image)).collect();
        let mut phis = vec![0.0; n * 87];
        let mut boxes = vec![0.0; n * 4];
        for (i, f) in part.iter().enumerate() {
            for k in 0..29 {
                phis[k * n + i] = f.cofw_points[k][0] as f64 + 1.0;
                phis[(29 + k) * n + i] = f.cofw_points[k][1] as f64 + 1.0;
                phis[(58 + k) * n + i] = f.cofw_occluded[k] as f64;
            }
            let b = f.face_box;
            let xywh = [b[0] as f64 + 1.0, b[1] as f64 + 1.0, (b[2] - b[0]) as f64, (b[3] - b[1]) as f64];
            for (k, v) in xywh.iter().enumerate() {
                boxes[k * n + i] = *v;
            }
        }
        let names: [&'static str; 3] = match suffix {
            "Tr" => ["IsTr", "phisTr", "bboxesTr"],
            _ => ["IsT", "phisT", "bboxesT"],
        };
        vars.push((names[0], MatArray::cell(&[n, 1], images)));
        vars.push((names[1], MatArray::double(&[n, 87], phis)));
        vars.push((names[2], MatArray::double(&[n, 4], boxes)));
    }
    write_v5(path, &vars)
}

/// An RGB image as MATLAB's H x W x 3 uint8, column-major.
fn image_array(img: &RgbImage) -> MatArray {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut v = vec![0u8; w * h * 3];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            v[c * w * h + x as usize * h + y as usize] = px.0[c];
        }
    }
    MatArray::uint8(&[h, w, 3], v)
}
