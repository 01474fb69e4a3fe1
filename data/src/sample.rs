//! One training sample, from the annotation as a reader parsed it ([`Record`]) to the 224x224
//! crop the loss sees ([`Sample`]), and a batch of them ([`Batch`]).
//!
//! Conventions (the model's, see `docs/facexformer.md`):
//! - points are 0-based pixel coordinates, pixel centres at integers, in the frame named by the
//!   type (source image for [`Label`], 224x224 crop for [`Target`]); the loss wants them in
//!   [-1, 1] with `n = (2p + 1) / 224 - 1` ([`Target::normalized_points`]);
//! - pose is (pitch, yaw, roll) in radians;
//! - parsing classes are LaPa's 11 (0 background, 1 skin, 2 left eyebrow, 3 right eyebrow,
//!   4 left eye, 5 right eye, 6 nose, 7 upper lip, 8 inner mouth, 9 lower lip, 10 hair);
//! - age bins 0-9, 10-19, ..., 60-69, 70+ (8); gender 0 male, 1 female; race 0 White, 1 Black,
//!   2 Indian, 3 Asian, 4 Others; visibility 1 = occluded.

use std::path::PathBuf;
use std::sync::Arc;

use image::GrayImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::{self, RgbImage, INPUT_SIZE, MARGIN_PERCENT};

/// The task groups of the official forward's `tasks` vector, with the official ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Parsing = 0,
    Landmarks = 1,
    HeadPose = 2,
    Attributes = 3,
    AgeGenderRace = 4,
    Visibility = 5,
}

impl Task {
    pub const ALL: [Task; 6] =
        [Task::Parsing, Task::Landmarks, Task::HeadPose, Task::Attributes, Task::AgeGenderRace, Task::Visibility];

    /// The official task id.
    pub fn id(self) -> usize {
        self as usize
    }

    /// The name used in configs, logs and dumps.
    pub fn name(self) -> &'static str {
        match self {
            Task::Parsing => "parsing",
            Task::Landmarks => "landmarks",
            Task::HeadPose => "headpose",
            Task::Attributes => "attributes",
            Task::AgeGenderRace => "age_gender_race",
            Task::Visibility => "visibility",
        }
    }
}

/// Where a record's pixels are.
#[derive(Clone, Debug)]
pub enum ImageSource {
    File(PathBuf),
    /// Images stored inside an annotation file (COFW's `.mat`).
    Memory(Arc<RgbImage>),
}

/// A parsing mask in its own frame, which may be smaller than the image (CelebAMask-HQ: 512x512
/// masks for 1024x1024 images): it is stretched to cover the whole image.
#[derive(Clone, Debug)]
pub enum MaskSource {
    /// A PNG of class ids 0..=10 (LaPa's `labels/*.png`).
    ClassPng(PathBuf),
    /// Binary part masks (nonzero = part), painted in order onto background: later parts win.
    Parts(Vec<(PathBuf, u8)>),
    /// Class ids already decoded.
    Memory(Arc<GrayImage>),
}

impl MaskSource {
    /// Decode to one class-id image. Every part must have the same size.
    pub fn decode(&self) -> Result<Arc<GrayImage>> {
        match self {
            MaskSource::Memory(m) => Ok(m.clone()),
            MaskSource::ClassPng(path) => {
                let m = decode_gray(path)?;
                if let Some(bad) = m.pixels().find(|p| p.0[0] > 10) {
                    return Err(Error::Format {
                        path: path.clone(),
                        msg: format!("class id {} in a parsing mask (expected 0..=10)", bad.0[0]),
                    });
                }
                Ok(Arc::new(m))
            }
            MaskSource::Parts(parts) => {
                let mut out: Option<GrayImage> = None;
                for (path, class) in parts {
                    let part = decode_gray(path)?;
                    let canvas = out.get_or_insert_with(|| GrayImage::new(part.width(), part.height()));
                    if part.dimensions() != canvas.dimensions() {
                        return Err(Error::Format {
                            path: path.clone(),
                            msg: format!(
                                "part mask is {}x{}, the other parts are {}x{}",
                                part.width(),
                                part.height(),
                                canvas.width(),
                                canvas.height()
                            ),
                        });
                    }
                    for (dst, src) in canvas.pixels_mut().zip(part.pixels()) {
                        if src.0[0] != 0 {
                            dst.0[0] = *class;
                        }
                    }
                }
                out.map(Arc::new).ok_or_else(|| Error::Invalid("a parsing record with no mask parts".into()))
            }
        }
    }
}

fn decode_gray(path: &PathBuf) -> Result<GrayImage> {
    let bytes = crate::error::read(path)?;
    let img = image::load_from_memory(&bytes).map_err(|e| Error::Format { path: path.clone(), msg: e.to_string() })?;
    Ok(img.to_luma8())
}

/// A label in the source image's frame.
#[derive(Clone, Debug)]
pub enum Label {
    Parsing(MaskSource),
    /// 68 points (the 300W/iBUG order).
    Landmarks {
        points: Vec<[f32; 2]>,
    },
    /// Radians. `points` (68, 300W-LP's `pt2d`) only place the crop; they are not a target.
    HeadPose {
        pitch_yaw_roll: [f32; 3],
        points: Option<Vec<[f32; 2]>>,
    },
    /// The 40 CelebA attributes in CelebA's order, 1 = present.
    Attributes {
        values: [u8; 40],
    },
    AgeGenderRace {
        age_bin: u8,
        gender: u8,
        race: u8,
    },
    /// 29 points (COFW's order) and their occlusion flags, 1 = occluded.
    Visibility {
        points: Vec<[f32; 2]>,
        occluded: Vec<u8>,
    },
}

impl Label {
    pub fn task(&self) -> Task {
        match self {
            Label::Parsing(_) => Task::Parsing,
            Label::Landmarks { .. } => Task::Landmarks,
            Label::HeadPose { .. } => Task::HeadPose,
            Label::Attributes { .. } => Task::Attributes,
            Label::AgeGenderRace { .. } => Task::AgeGenderRace,
            Label::Visibility { .. } => Task::Visibility,
        }
    }

    /// The points that can place the crop when the dataset gives no box.
    pub fn points(&self) -> Option<&[[f32; 2]]> {
        match self {
            Label::Landmarks { points } | Label::Visibility { points, .. } => Some(points),
            Label::HeadPose { points: Some(points), .. } => Some(points),
            _ => None,
        }
    }
}

/// How a record's crop is placed, before the 25% margin of the inference crop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CropFrom {
    /// A face box `[x0, y0, x1, y1]` in source pixels (the dataset's, or a detector's).
    Box([f32; 4]),
    /// The tight box of the label's points.
    Points,
    /// The whole image, no margin (images that are already face crops: UTKFace, CelebA aligned).
    WholeImage,
}

/// One annotated image as a reader parsed it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The reader's name (`lapa`, `celebamask_hq`, `300w`, ...).
    pub dataset: &'static str,
    pub image: ImageSource,
    /// The annotation's file, with `:line` where a line holds it: for messages and dumps.
    pub source: String,
    pub crop: CropFrom,
    pub label: Label,
    /// The annotation as parsed, before conversion: points in source pixels (0-based), pose in
    /// degrees, age in years where the dataset gives years, flags as written.
    pub raw: serde_json::Value,
}

impl Record {
    pub fn task(&self) -> Task {
        self.label.task()
    }

    /// Decode the source image.
    pub fn decode_image(&self) -> Result<Arc<RgbImage>> {
        match &self.image {
            ImageSource::Memory(img) => Ok(img.clone()),
            ImageSource::File(path) => Ok(Arc::new(preprocess::load_rgb(path)?)),
        }
    }

    /// The crop box in source pixels, as `facex analyze` would place it: the face box grown by
    /// 25% of its size on each side, clamped to the image (the official `adjust_bbox`).
    pub fn crop_box(&self, width: usize, height: usize) -> Result<[f64; 4]> {
        let face = match self.crop {
            CropFrom::WholeImage => return Ok([0.0, 0.0, width as f64, height as f64]),
            CropFrom::Box(b) => b,
            CropFrom::Points => {
                let pts = self.label.points().filter(|p| !p.is_empty()).ok_or_else(|| {
                    Error::Invalid(format!("{}: the crop is placed by points, but the label has none", self.source))
                })?;
                let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
                for p in pts {
                    for d in 0..2 {
                        lo[d] = lo[d].min(p[d]);
                        hi[d] = hi[d].max(p[d]);
                    }
                }
                [lo[0], lo[1], hi[0], hi[1]]
            }
        };
        if !face.iter().all(|v| v.is_finite()) || face[2] <= face[0] || face[3] <= face[1] {
            return Err(Error::Invalid(format!("{}: empty or invalid face box {face:?}", self.source)));
        }
        Ok(preprocess::adjust_bbox(face, width, height, MARGIN_PERCENT))
    }

    /// Decode, crop and map the label into the 224x224 crop.
    pub fn load(&self) -> Result<Sample> {
        let img = self.decode_image()?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let crop_box = self.crop_box(w, h)?;
        let ibox = preprocess::truncate_box(crop_box);
        let cropped = preprocess::crop(&img, ibox)?;
        let image = preprocess::resize_bicubic(&cropped, INPUT_SIZE, INPUT_SIZE)?;
        let frame = CropFrame::new(ibox);
        let target = match &self.label {
            Label::Parsing(mask) => {
                let mask = mask.decode()?;
                Target::Parsing { mask: frame.map_mask(&mask, w, h) }
            }
            Label::Landmarks { points } => Target::Landmarks { points: frame.map_points(points) },
            Label::HeadPose { pitch_yaw_roll, .. } => Target::HeadPose { pitch_yaw_roll: *pitch_yaw_roll },
            Label::Attributes { values } => Target::Attributes { values: *values },
            Label::AgeGenderRace { age_bin, gender, race } => {
                Target::AgeGenderRace { age_bin: *age_bin, gender: *gender, race: *race }
            }
            Label::Visibility { points, occluded } => {
                Target::Visibility { points: frame.map_points(points), occluded: occluded.clone() }
            }
        };
        Ok(Sample {
            image,
            target,
            dataset: self.dataset,
            source: self.source.clone(),
            raw: self.raw.clone(),
            crop_box: ibox,
        })
    }
}

/// The map from source pixels to the 224x224 crop: crop at an integer box, then resize
/// (pixel centres map to pixel centres, as in PIL's resize).
#[derive(Clone, Copy, Debug)]
pub struct CropFrame {
    origin: [f64; 2],
    scale: [f64; 2],
}

impl CropFrame {
    pub fn new(ibox: [i64; 4]) -> CropFrame {
        let size = INPUT_SIZE as f64;
        CropFrame {
            origin: [ibox[0] as f64, ibox[1] as f64],
            scale: [size / (ibox[2] - ibox[0]) as f64, size / (ibox[3] - ibox[1]) as f64],
        }
    }

    /// Source pixel -> crop pixel.
    pub fn forward(&self, p: [f32; 2]) -> [f32; 2] {
        let f = |d: usize| ((p[d] as f64 - self.origin[d] + 0.5) * self.scale[d] - 0.5) as f32;
        [f(0), f(1)]
    }

    /// Crop pixel -> source pixel.
    pub fn inverse(&self, q: [f64; 2]) -> [f64; 2] {
        let f = |d: usize| (q[d] + 0.5) / self.scale[d] - 0.5 + self.origin[d];
        [f(0), f(1)]
    }

    pub fn map_points(&self, points: &[[f32; 2]]) -> Vec<[f32; 2]> {
        points.iter().map(|&p| self.forward(p)).collect()
    }

    /// Nearest-neighbour resampling of a class mask (stretched over an image of
    /// `img_w x img_h`) into the crop; outside the image is background.
    pub fn map_mask(&self, mask: &GrayImage, img_w: usize, img_h: usize) -> Vec<u8> {
        let n = INPUT_SIZE;
        let (mw, mh) = (mask.width() as f64, mask.height() as f64);
        let mut out = vec![0u8; n * n];
        for y in 0..n {
            for x in 0..n {
                let [sx, sy] = self.inverse([x as f64, y as f64]);
                // Which source pixel holds this centre, then which mask pixel covers it.
                let (px, py) = ((sx + 0.5).floor(), (sy + 0.5).floor());
                if px < 0.0 || py < 0.0 || px >= img_w as f64 || py >= img_h as f64 {
                    continue;
                }
                let mx = (((px + 0.5) * mw / img_w as f64) as u32).min(mask.width() - 1);
                let my = (((py + 0.5) * mh / img_h as f64) as u32).min(mask.height() - 1);
                out[y * n + x] = mask.get_pixel(mx, my).0[0];
            }
        }
        out
    }
}

/// A label in the 224x224 crop's frame, as the loss will see it (after augmentation).
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// 224*224 class ids, row-major.
    Parsing {
        mask: Vec<u8>,
    },
    /// 68 points in crop pixels.
    Landmarks {
        points: Vec<[f32; 2]>,
    },
    HeadPose {
        pitch_yaw_roll: [f32; 3],
    },
    Attributes {
        values: [u8; 40],
    },
    AgeGenderRace {
        age_bin: u8,
        gender: u8,
        race: u8,
    },
    /// 29 points in crop pixels (they move with augmentation; not a target) and the flags.
    Visibility {
        points: Vec<[f32; 2]>,
        occluded: Vec<u8>,
    },
}

impl Target {
    pub fn task(&self) -> Task {
        match self {
            Target::Parsing { .. } => Task::Parsing,
            Target::Landmarks { .. } => Task::Landmarks,
            Target::HeadPose { .. } => Task::HeadPose,
            Target::Attributes { .. } => Task::Attributes,
            Target::AgeGenderRace { .. } => Task::AgeGenderRace,
            Target::Visibility { .. } => Task::Visibility,
        }
    }

    /// Points in the loss's [-1, 1] convention, `n = (2p + 1) / 224 - 1`.
    pub fn normalized_points(points: &[[f32; 2]]) -> Vec<[f32; 2]> {
        let s = INPUT_SIZE as f32;
        points.iter().map(|p| [(2.0 * p[0] + 1.0) / s - 1.0, (2.0 * p[1] + 1.0) / s - 1.0]).collect()
    }

    /// The target as JSON, in the loss's conventions (for `facex data check --dump`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Target::Parsing { mask } => {
                let mut counts = [0usize; 11];
                for &c in mask {
                    counts[(c as usize).min(10)] += 1;
                }
                json!({ "segmentation_pixels_per_class": counts })
            }
            Target::Landmarks { points } => json!({ "landmarks": Target::normalized_points(points) }),
            Target::HeadPose { pitch_yaw_roll } => json!({ "pose_radians": pitch_yaw_roll }),
            Target::Attributes { values } => json!({ "attributes": values.to_vec() }),
            Target::AgeGenderRace { age_bin, gender, race } => {
                json!({ "age_bin": age_bin, "gender": gender, "race": race })
            }
            Target::Visibility { occluded, .. } => json!({ "visibility": occluded }),
        }
    }
}

/// One 224x224 face crop with its target.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: RgbImage,
    pub target: Target,
    pub dataset: &'static str,
    pub source: String,
    pub raw: serde_json::Value,
    /// The integer crop box in source pixels.
    pub crop_box: [i64; 4],
}

impl Sample {
    pub fn task(&self) -> Task {
        self.target.task()
    }
}

/// A mixed-task batch: the normalised input [N, 3, 224, 224] and one target per row.
#[derive(Clone, Debug)]
pub struct Batch {
    pub input: tensor::Tensor,
    pub targets: Vec<Target>,
    /// Each row's record, for messages.
    pub sources: Vec<String>,
}

impl Batch {
    /// Stack samples (all 224x224) into one batch.
    pub fn collate(samples: &[Sample]) -> Result<Batch> {
        if samples.is_empty() {
            return Err(Error::Invalid("an empty batch".into()));
        }
        let mut rows = Vec::with_capacity(samples.len());
        for s in samples {
            rows.push(preprocess::to_normalized_tensor(&s.image)?);
        }
        let refs: Vec<&tensor::Tensor> = rows.iter().collect();
        Ok(Batch {
            input: tensor::Tensor::cat(&refs, 0)?,
            targets: samples.iter().map(|s| s.target.clone()).collect(),
            sources: samples.iter().map(|s| s.source.clone()).collect(),
        })
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.targets.iter().map(Target::task).collect()
    }
}
