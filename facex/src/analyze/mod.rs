//! `facex analyze`: faces in a photo to everything the model says about them, in the photo's own
//! coordinates. Detection (MTCNN) -> the official crop and resize -> one batched forward pass
//! over all faces of the image -> per-face results, a parsing mask and an overlay picture.

mod draw;
mod labels;

pub use labels::{AGE_BINS, ATTRIBUTES, GENDERS, PARSING_CLASSES, PARSING_PALETTE, RACES};

use crate::detect::{Face, Mtcnn};
use crate::engine::Engine;
use crate::eval::{HeadRow, HeadValues};
use crate::model::NUM_MASKS;
use crate::preprocess::{self, RgbImage};
use image::GrayImage;
use serde::Serialize;
use std::fmt;
use tensor::Tensor;

/// Where the official checkpoint can be downloaded (the JSON says so when weights are missing).
pub const WEIGHTS_HINT: &str = "FaceXFormer weights not loaded: download ckpts/model.pt from the Hugging Face \
     repository kartiknarayan/facexformer and pass it with --weights (or convert it first with `facex convert`)";

#[derive(Debug)]
pub enum Error {
    Detect(crate::detect::Error),
    Preprocess(crate::preprocess::Error),
    Tensor(tensor::Error),
    /// The model ran but did not give the heads of every face.
    Model(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Detect(e) => write!(f, "face detection: {e}"),
            Error::Preprocess(e) => write!(f, "preprocessing: {e}"),
            Error::Tensor(e) => write!(f, "model: {e}"),
            Error::Model(msg) => write!(f, "model: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

/// A probability for a named label.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub label: &'static str,
    pub probability: f32,
}

/// The model's outputs for one face, mapped to the original image.
#[derive(Debug, Clone, Serialize)]
pub struct FaceModelOutput {
    /// 68 (x, y) points in original image pixels.
    pub landmarks68: Vec<[f32; 2]>,
    /// Degrees: (pitch, yaw, roll) as the model outputs them (radians) times 180/pi.
    pub pose_degrees: PoseDegrees,
    /// The 40 CelebA attributes, in CelebA order, with sigmoid probabilities.
    pub attributes: Vec<Scored>,
    /// The most likely age bin and every bin's probability.
    pub age: Classified,
    pub gender: Classified,
    /// Label order 0 White, 1 Black, 2 Indian, 3 Asian, 4 Others (the author's, issue #5).
    pub race: Classified,
    /// The 29 COFW points: probability that each is occluded (1 = occluded).
    pub occlusion_probabilities: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PoseDegrees {
    pub pitch: f32,
    pub yaw: f32,
    pub roll: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    pub label: &'static str,
    pub probabilities: Vec<Scored>,
}

/// Everything about one face.
#[derive(Debug, Clone, Serialize)]
pub struct FaceResult {
    /// [x0, y0, x1, y1] in original image pixels.
    pub bbox: [f32; 4],
    pub detector_score: f32,
    /// Left eye, right eye, nose, mouth left, mouth right.
    pub landmarks5: [[f32; 2]; 5],
    /// The official crop: the box grown by 25% per side and clamped, before integer truncation.
    pub crop_box: [f64; 4],
    /// None when no model weights were given.
    #[serde(flatten)]
    pub model: Option<FaceModelOutput>,
}

/// The result for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub width: u32,
    pub height: u32,
    /// Set when the model did not run (no weights), saying where to get them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_weights_missing: Option<&'static str>,
    pub parsing_classes: &'static [&'static str],
    pub faces: Vec<FaceResult>,
    #[serde(skip)]
    pub parsing: Option<GrayImage>,
}

pub struct Analyzer {
    pub detector: Mtcnn,
    pub model: Option<Engine>,
    /// Keep only the largest face, as the official script does.
    pub largest: bool,
    /// Skip detection: each image is one face crop, used whole (no margin added), as the
    /// training crops of already-cropped datasets (CelebA aligned, UTKFace) are. For images the
    /// detector was not trained on, such as the synthetic faces.
    pub whole_image: bool,
}

impl Analyzer {
    /// Detect, crop, run the model on all faces as one batch, and map results back.
    pub fn analyze(&self, name: &str, img: &RgbImage) -> Result<ImageResult, Error> {
        let (w, h) = (img.width(), img.height());
        let mut crops = Vec::new();
        let mut inputs = Vec::new();
        let faces = if self.whole_image {
            let whole = [0.0, 0.0, w as f64, h as f64];
            inputs.push(preprocess::preprocess_crop(img, whole).map_err(Error::Preprocess)?);
            crops.push(whole);
            vec![Face { bbox: [0.0, 0.0, w as f32, h as f32], prob: 1.0, landmarks: [[f32::NAN; 2]; 5] }]
        } else {
            let mut faces = self.detector.detect(img).map_err(Error::Detect)?;
            // MTCNN returns faces largest first (select_largest), like facenet-pytorch.
            if self.largest {
                faces.truncate(1);
            }
            for face in &faces {
                let (input, crop_box) = preprocess::preprocess_face(img, face.bbox).map_err(Error::Preprocess)?;
                crops.push(crop_box);
                inputs.push(input);
            }
            faces
        };
        let outputs = match (&self.model, inputs.is_empty()) {
            (Some(model), false) => Some(run_model(model, &inputs)?),
            _ => None,
        };
        let mut results = Vec::with_capacity(faces.len());
        let mut parsing = self.model.as_ref().map(|_| GrayImage::new(w, h));
        // Paint smaller faces last so that a face inside another's crop keeps its own labels.
        for (i, face) in faces.iter().enumerate().rev() {
            let model = match &outputs {
                Some(out) => {
                    let crop = preprocess::truncate_box(crops[i]);
                    let row = out.row(i);
                    if let Some(mask) = parsing.as_mut() {
                        paste_parsing(mask, row.segmentation, crop)?;
                    }
                    Some(face_output(&row, crop))
                }
                None => None,
            };
            results.push(face_result(face, crops[i], model));
        }
        results.reverse();
        Ok(ImageResult {
            image: name.to_string(),
            width: w,
            height: h,
            model_weights_missing: self.model.is_none().then_some(WEIGHTS_HINT),
            parsing_classes: &PARSING_CLASSES,
            faces: results,
            parsing,
        })
    }

    /// The overlay picture: parsing in the LaPa palette, boxes, landmarks, pose axes.
    pub fn overlay(&self, img: &RgbImage, result: &ImageResult) -> RgbImage {
        draw::overlay(img, result)
    }
}

fn face_result(face: &Face, crop_box: [f64; 4], model: Option<FaceModelOutput>) -> FaceResult {
    FaceResult { bbox: face.bbox, detector_score: face.prob, landmarks5: face.landmarks, crop_box, model }
}

/// The model's heads for a batch (one row per face), as the evaluation reads them.
fn run_model(model: &Engine, inputs: &[Tensor]) -> Result<HeadValues, Error> {
    let batch = Tensor::cat(&inputs.iter().collect::<Vec<_>>(), 0)?;
    let out = model.forward(&batch)?;
    HeadValues::from_named(inputs.len(), &out).map_err(|e| Error::Model(e.to_string()))
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn classify(logits: &[f32], labels: &'static [&'static str]) -> Classified {
    let p = softmax(logits);
    let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    Classified {
        label: labels[best],
        probabilities: labels.iter().zip(&p).map(|(&label, &probability)| Scored { label, probability }).collect(),
    }
}

/// Model landmarks in [-1, 1] to original image pixels. The official `denorm_points` gives the
/// point in the 224x224 crop (`((p + 1) * 224 - 1) / 2`); the crop was resized from the integer
/// box, so pixel centres map linearly back into it.
pub fn landmarks_to_image(norm: &[f32], crop: [i64; 4]) -> Vec<[f32; 2]> {
    let size = crate::preprocess::INPUT_SIZE as f32;
    let sx = (crop[2] - crop[0]) as f32 / size;
    let sy = (crop[3] - crop[1]) as f32 / size;
    norm.as_chunks::<2>()
        .0
        .iter()
        .map(|p| {
            let (cx, cy) = (((p[0] + 1.0) * size - 1.0) / 2.0, ((p[1] + 1.0) * size - 1.0) / 2.0);
            [crop[0] as f32 + (cx + 0.5) * sx - 0.5, crop[1] as f32 + (cy + 0.5) * sy - 0.5]
        })
        .collect()
}

fn face_output(out: &HeadRow, crop: [i64; 4]) -> FaceModelOutput {
    let deg = 180.0 / std::f32::consts::PI;
    let pose = out.pose;
    FaceModelOutput {
        landmarks68: landmarks_to_image(out.landmarks, crop),
        pose_degrees: PoseDegrees { pitch: pose[0] * deg, yaw: pose[1] * deg, roll: pose[2] * deg },
        attributes: ATTRIBUTES
            .iter()
            .zip(out.attributes)
            .map(|(&label, &x)| Scored { label, probability: sigmoid(x) })
            .collect(),
        age: classify(out.age, &AGE_BINS),
        gender: classify(out.gender, &GENDERS),
        race: classify(out.race, &RACES),
        occlusion_probabilities: out.visibility.iter().copied().map(sigmoid).collect(),
    }
}

/// Resize a face's logits [11, 224, 224] to its crop's size (bilinear, as the crop was resized
/// the other way), take the argmax per pixel, and paint the non-background classes into `mask`.
fn paste_parsing(mask: &mut GrayImage, seg: &[f32], crop: [i64; 4]) -> Result<(), Error> {
    let (cw, ch) = ((crop[2] - crop[0]) as usize, (crop[3] - crop[1]) as usize);
    let size = preprocess::INPUT_SIZE;
    let logits = Tensor::from_slice(seg, &[1, NUM_MASKS, size, size])?.interpolate_bilinear((ch, cw))?;
    let classes = logits.argmax(1, false)?.to_vec::<i64>()?;
    for y in 0..ch {
        for x in 0..cw {
            let (ix, iy) = (crop[0] + x as i64, crop[1] + y as i64);
            let c = classes[y * cw + x];
            if c != 0 && ix >= 0 && iy >= 0 && (ix as u32) < mask.width() && (iy as u32) < mask.height() {
                mask.put_pixel(ix as u32, iy as u32, image::Luma([c as u8]));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmarks_map_back_through_the_crop() {
        // The crop's corners: -1 + 1/224 is the centre of the first pixel of the 224 crop.
        let crop = [100, 50, 324, 498]; // 224 wide, 448 tall: x scale 1, y scale 2
        let first = -1.0 + 1.0 / 224.0;
        let pts = landmarks_to_image(&[first, first, 0.0, 0.0], crop);
        assert!((pts[0][0] - 100.0).abs() < 1e-3 && (pts[0][1] - 50.5).abs() < 1e-3, "{pts:?}");
        // The centre of the normalised square is the centre of the crop.
        assert!((pts[1][0] - 211.5).abs() < 1e-3 && (pts[1][1] - 273.5).abs() < 1e-3, "{pts:?}");
    }

    #[test]
    fn classify_picks_the_most_likely_label() {
        let c = classify(&[0.1, 2.0, -1.0, 0.0, 0.5], &RACES);
        assert_eq!(c.label, "Black");
        let total: f32 = c.probabilities.iter().map(|s| s.probability).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
