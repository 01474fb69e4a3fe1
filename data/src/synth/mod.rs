//! Synthetic labelled faces that need no download: a procedural 3D face ([`template`]) projected
//! at a random pose, drawn with its 11 parsing classes in the same polygons as the pixels, with
//! attributes, age, gender and race visible by construction, and written in the native layouts
//! of the dataset readers ([`write_dataset`]).
//!
//! What each label looks like (so a small model can learn it):
//! - parsing: skin (convex hull of jaw and forehead), brows, eyes (white with an iris), nose
//!   (darker), lips (red), inner mouth (dark), hair (behind the head and over the forehead);
//!   class 2/4 is the brow/eye on the image left (the 68 points 17..=21 / 36..=41);
//! - Smiling: mouth corners up; Mouth_Slightly_Open: a dark inner mouth; Eyeglasses: dark frames;
//!   hair colour: Black/Blond/Brown/Gray_Hair; Male: short hair, sometimes a beard (No_Beard
//!   otherwise); Young: age under 30; every other CelebA attribute is 0;
//! - age: every bin looks different: larger eyes under 10, slightly larger under 20, plain at
//!   20-29, one forehead wrinkle per bin from 30-39 (five at 70+), a hairline receding from 30,
//!   grey hair from 60; gender: hair length (long for 1 female); race: skin tone per race (model
//!   order);
//! - visibility: far-side points are self-occluded beyond 35 degrees of yaw (all far-side points
//!   beyond 50), and points under the drawn occluder are occluded (the occluder is background in
//!   the mask).

mod draw;
pub mod points;
pub mod raster;
pub mod template;
mod write;

pub use draw::{render, FaceParams};
pub use write::{write_dataset, SynthSummary};

use image::GrayImage;

use crate::preprocess::RgbImage;

/// One rendered face and every label of it.
#[derive(Clone, Debug)]
pub struct Face {
    pub image: RgbImage,
    /// Class ids 0..=10 (LaPa's order), the image's size.
    pub mask: GrayImage,
    /// The 68 iBUG points, 0-based pixels.
    pub landmarks: Vec<[f32; 2]>,
    /// Pitch, yaw, roll in radians, 300W-LP's convention `R = Rx(pitch) Ry(yaw) Rz(roll)`.
    pub pose: [f32; 3],
    /// The 40 CelebA attributes in CelebA's order, 1 = present.
    pub attributes: [u8; 40],
    pub age_years: u32,
    /// 0 male, 1 female.
    pub gender: u8,
    /// The model's order: 0 White, 1 Black, 2 Indian, 3 Asian, 4 Others.
    pub race: u8,
    /// The 29 COFW points ([`points`]) and their flags, 1 = occluded.
    pub cofw_points: Vec<[f32; 2]>,
    pub cofw_occluded: Vec<u8>,
    /// `[x0, y0, x1, y1]`: the box of the skin outline (jaw and forehead).
    pub face_box: [f32; 4],
}

/// The face of a seed: `render(&FaceParams::random(seed))`.
pub fn render_face(seed: u64) -> Face {
    render(&FaceParams::random(seed))
}
