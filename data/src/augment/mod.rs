//! Label-consistent augmentation of a 224x224 [`Sample`].
//!
//! Every sample's augmentation is a pure function of `(seed, epoch, index)`: the three are hashed
//! into one SplitMix64 stream, and every random number is drawn in a fixed order whether or not
//! its transform fires, so changing one probability never reshuffles the others.
//!
//! Geometry: flip, rotation, scale and translation are composed into ONE affine map about the
//! crop centre ([`warp::Affine::about_centre`]), applied to the image (bilinear, outside black),
//! the parsing mask (nearest) and the points (exactly), with pixel centres at integers (the
//! convention of [`crate::CropFrame`]). A flip also relabels what "left" and "right" name:
//! the 68 points ([`FLIP_68`]), the 29 COFW points and their flags ([`FLIP_COFW`]), the parsing
//! classes ([`FLIP_PARSING`]), and the pose ([`pose`]): yaw and roll negate under a flip; a
//! rotation of the image clockwise on screen by `a` turns the pose by `Rz(a)` (roll + a at zero
//! pitch and yaw). Attributes, age, gender and race are unchanged.
//!
//! Photometric (pixels only), in this order: gamma, grayscale, Gaussian blur, one black
//! occluding rectangle. The occluder hides pixels, so COFW points under it become occluded
//! (flag 1); other labels keep what the face is, not what is visible.

pub mod photometric;
pub mod pose;
pub mod warp;

use serde::{Deserialize, Serialize};
use tensor::SplitMix64;

use crate::sample::{Sample, Target};
use warp::Affine;

/// The augmentation recipe. Probabilities are in [0, 1]; ranges are `[lo, hi]`, drawn uniformly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// Rotation uniform in `[-rotate_deg, rotate_deg]` degrees.
    pub rotate_deg: f64,
    /// Isotropic scale about the crop centre.
    pub scale: [f64; 2],
    /// Translation per axis, uniform in `[-translate, translate]` times the crop side.
    pub translate: f64,
    /// Probability of converting to grey.
    pub grayscale: f64,
    /// Probability of a Gaussian blur (sigma uniform in [0.5, 1.5] px).
    pub blur: f64,
    /// Gamma exponent range (`255 (v/255)^g`).
    pub gamma: [f64; 2],
    /// Probability of one black rectangle (15-40% of each side).
    pub occlusion: f64,
}

impl Default for AugmentConfig {
    /// The paper's recipe: flip, rotation +-18 degrees, scale 0.9-1.1, translation 5%, gamma
    /// 0.7-1.3, with grayscale, blur and occlusion (their probabilities are not stated; ours).
    fn default() -> Self {
        AugmentConfig {
            flip: 0.5,
            rotate_deg: 18.0,
            scale: [0.9, 1.1],
            translate: 0.05,
            grayscale: 0.1,
            blur: 0.2,
            gamma: [0.7, 1.3],
            occlusion: 0.2,
        }
    }
}

impl AugmentConfig {
    /// No augmentation: [`augment`] returns the sample unchanged.
    pub fn none() -> Self {
        AugmentConfig {
            flip: 0.0,
            rotate_deg: 0.0,
            scale: [1.0, 1.0],
            translate: 0.0,
            grayscale: 0.0,
            blur: 0.0,
            gamma: [1.0, 1.0],
            occlusion: 0.0,
        }
    }
}

/// The 68-point (iBUG/300W) mirror: after a flip, point `i` is the old point `FLIP_68[i]`.
pub const FLIP_68: [usize; 68] = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, // jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17, // brows
    27, 28, 29, 30, 35, 34, 33, 32, 31, // nose
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, // eyes
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, // outer lips
    64, 63, 62, 61, 60, 67, 66, 65, // inner lips
];

/// The COFW 29-point mirror (the pairs of HRNet's `MATCHED_PARTS["COFW"]`, 0-based): brow
/// outer/inner corners, brow top/bottom centres, eye corners, eye top/bottom, pupils, nostrils,
/// mouth corners swap; nose top/bottom, the four lip centres and the chin stay.
pub const FLIP_COFW: [usize; 29] =
    [1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27, 28];

/// LaPa classes under a flip: left/right eyebrow (2, 3) and eye (4, 5) swap.
pub const FLIP_PARSING: [u8; 11] = [0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10];

/// The draws of one sample, in the order they are taken from the stream.
#[derive(Clone, Copy, Debug)]
struct Draws {
    flip: bool,
    angle: f64,
    scale: f64,
    shift: [f64; 2],
    gamma: f64,
    grayscale: bool,
    blur: Option<f64>,
    occluder: Option<[f64; 4]>,
}

/// One stream per sample: SplitMix64's finaliser chained over (seed, epoch, index).
fn sample_rng(seed: u64, epoch: u64, index: u64) -> SplitMix64 {
    let mix = |v: u64| SplitMix64(v).next_u64();
    SplitMix64(mix(mix(mix(seed) ^ epoch) ^ index))
}

fn draw(cfg: &AugmentConfig, rng: &mut SplitMix64) -> Draws {
    let mut range = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    let flip = range(0.0, 1.0) < cfg.flip;
    let angle = range(-cfg.rotate_deg, cfg.rotate_deg).to_radians();
    let scale = range(cfg.scale[0], cfg.scale[1]);
    let shift = [range(-cfg.translate, cfg.translate), range(-cfg.translate, cfg.translate)];
    let gamma = range(cfg.gamma[0], cfg.gamma[1]);
    let grayscale = range(0.0, 1.0) < cfg.grayscale;
    let (blur_on, sigma) = (range(0.0, 1.0) < cfg.blur, range(0.5, 1.5));
    let occ_on = range(0.0, 1.0) < cfg.occlusion;
    // Occluder as fractions of the side: size 15-40%, placed inside the crop.
    let (ow, oh) = (range(0.15, 0.4), range(0.15, 0.4));
    let (ox, oy) = (range(0.0, 1.0 - ow), range(0.0, 1.0 - oh));
    Draws {
        flip,
        angle,
        scale,
        shift,
        gamma,
        grayscale,
        blur: blur_on.then_some(sigma),
        occluder: occ_on.then_some([ox, oy, ox + ow, oy + oh]),
    }
}

/// `out[i] = items[perm[i]]`.
fn permute<T: Copy>(items: &[T], perm: &[usize]) -> Vec<T> {
    if items.len() != perm.len() {
        // Not a layout we know how to mirror (a reader's bug): keep the order.
        return items.to_vec();
    }
    perm.iter().map(|&j| items[j]).collect()
}

/// Augment one sample; a pure function of its arguments.
///
/// The sample is expected as [`crate::Sample`]s come from `Record::load`: a `w x h` image
/// (224x224) and, for parsing, a row-major `w * h` mask. Points may leave the crop.
pub fn augment(sample: &Sample, cfg: &AugmentConfig, seed: u64, epoch: u64, index: u64) -> Sample {
    let d = draw(cfg, &mut sample_rng(seed, epoch, index));
    let (w, h) = (sample.image.width() as usize, sample.image.height() as usize);
    if w == 0 || h == 0 {
        // Nothing to move or recolour (and no centre to turn about).
        return sample.clone();
    }
    let side = w.max(h) as f64;
    let map = Affine::about_centre(w, h, d.flip, d.angle, d.scale, [d.shift[0] * side, d.shift[1] * side]);
    let moves = map != Affine::IDENTITY;

    let mut image = if moves { warp::warp_rgb(&sample.image, &map) } else { sample.image.clone() };
    let mut target = match &sample.target {
        Target::Parsing { mask } if moves => {
            let mut mask = warp::warp_mask(mask, w, h, &map);
            if d.flip {
                mask.iter_mut().for_each(|c| *c = FLIP_PARSING.get(*c as usize).copied().unwrap_or(*c));
            }
            Target::Parsing { mask }
        }
        Target::Landmarks { points } if moves => {
            let points = map.map_points(points);
            Target::Landmarks { points: if d.flip { permute(&points, &FLIP_68) } else { points } }
        }
        Target::Visibility { points, occluded } if moves => {
            let points = map.map_points(points);
            if d.flip {
                Target::Visibility { points: permute(&points, &FLIP_COFW), occluded: permute(occluded, &FLIP_COFW) }
            } else {
                Target::Visibility { points, occluded: occluded.clone() }
            }
        }
        Target::HeadPose { pitch_yaw_roll } => {
            let pyr = if d.flip { pose::flip_pose(*pitch_yaw_roll) } else { *pitch_yaw_roll };
            Target::HeadPose { pitch_yaw_roll: pose::rotate_pose(pyr, d.angle) }
        }
        other => other.clone(),
    };

    photometric::gamma(&mut image, d.gamma);
    if d.grayscale {
        photometric::grayscale(&mut image);
    }
    if let Some(sigma) = d.blur {
        photometric::blur(&mut image, sigma);
    }
    if let Some([x0, y0, x1, y1]) = d.occluder {
        let rect =
            [(x0 * w as f64) as usize, (y0 * h as f64) as usize, (x1 * w as f64) as usize, (y1 * h as f64) as usize];
        photometric::occlude(&mut image, rect);
        if let Target::Visibility { points, occluded } = &mut target {
            for (p, flag) in points.iter().zip(occluded.iter_mut()) {
                // The pixel holding the point is black.
                let (px, py) = ((p[0] + 0.5).floor() as f64, (p[1] + 0.5).floor() as f64);
                if px >= rect[0] as f64 && px < rect[2] as f64 && py >= rect[1] as f64 && py < rect[3] as f64 {
                    *flag = 1;
                }
            }
        }
    }

    Sample {
        image,
        target,
        dataset: sample.dataset,
        source: sample.source.clone(),
        raw: sample.raw.clone(),
        crop_box: sample.crop_box,
    }
}
