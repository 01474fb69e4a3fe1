//! A procedural 3D face: the 68 iBUG points and a few helper points, in model units (the face's
//! half-width is about 1), x to the image right, y up, z toward the camera (300W-LP's frame).
//!
//! Only the image-left half and the midline are written by hand; the image-right half is its
//! mirror through [`FLIP_68`] (point `i` = mirror of point `FLIP_68[i]`), so the template is
//! symmetric by construction and a flipped face is the same template at the flipped pose.

use crate::augment::pose::pose_matrix;
use crate::augment::FLIP_68;

pub type P3 = [f64; 3];

/// Expression and shape knobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    /// Mouth corners up (and out), model units.
    pub smile: f64,
    /// Lower lip down, model units (0 = closed).
    pub open: f64,
    /// Eye size factor (children's eyes are larger).
    pub eye: f64,
    /// Jaw width factor.
    pub jaw: f64,
}

/// Helper points after the 68: brow top/bottom centres (image-left brow, then image-right brow),
/// the forehead arc (for the skin outline) and the head centre (for the hair).
pub const BROW_TOP_L: usize = 68;
pub const BROW_BOTTOM_L: usize = 69;
pub const BROW_TOP_R: usize = 70;
pub const BROW_BOTTOM_R: usize = 71;
pub const FOREHEAD: std::ops::Range<usize> = 72..81;
pub const HEAD_CENTRE: usize = 81;
pub const N_TEMPLATE: usize = 82;

fn mirror(p: P3) -> P3 {
    [-p[0], p[1], p[2]]
}

/// The template's points for a shape.
pub fn template(shape: &Shape) -> Vec<P3> {
    let mut p = vec![[f64::NAN; 3]; N_TEMPLATE];
    let jaw = 1.0 + shape.jaw;
    // Jaw 0..=8: from the image-left ear down to the chin, on an ellipse that curves back.
    for (i, q) in p.iter_mut().take(9).enumerate() {
        let phi = std::f64::consts::FRAC_PI_2 * i as f64 / 8.0;
        *q = [-jaw * phi.cos(), 0.3 - 1.45 * phi.sin(), -0.55 + 0.95 * phi.sin()];
    }
    // Brow 17..=21, outer to inner, arched.
    for i in 0..5 {
        let t = i as f64 / 4.0;
        let x = -0.82 + 0.66 * t;
        p[17 + i] = [x, 0.58 + 0.1 * (std::f64::consts::PI * (0.2 + 0.6 * t)).sin(), 0.3 + 0.35 * t];
    }
    // Nose bridge 27..=30 (tip last) and the nostril line 31..=33.
    for i in 0..4 {
        let t = i as f64 / 3.0;
        p[27 + i] = [0.0, 0.45 - 0.5 * t, 0.62 + 0.4 * t];
    }
    p[31] = [-0.24, -0.16, 0.68];
    p[32] = [-0.12, -0.2, 0.8];
    p[33] = [0.0, -0.22, 0.86];
    // Image-left eye 36..=41: outer corner, upper lid, inner corner, lower lid.
    let (ex, ey, ew, eh) = (-0.42, 0.32, 0.2 * shape.eye, 0.085 * shape.eye);
    let eye = [(-1.0, 0.0), (-0.4, 1.0), (0.4, 1.0), (1.0, 0.0), (0.4, -0.9), (-0.4, -0.9)];
    for (i, (dx, dy)) in eye.iter().enumerate() {
        p[36 + i] = [ex + dx * ew, ey + dy * eh, 0.5 - 0.1 * dx.abs()];
    }
    // Lips: outer 48..=51 and 57..=59, inner 60..=62 and 66..=67.
    let (s, o) = (shape.smile, shape.open);
    p[48] = [-0.4 - 0.3 * s, -0.52 + s, 0.55];
    p[49] = [-0.25, -0.45, 0.7];
    p[50] = [-0.1, -0.42, 0.78];
    p[51] = [0.0, -0.44, 0.8];
    p[57] = [0.0, -0.68 - o, 0.76];
    p[58] = [-0.13, -0.66 - o, 0.72];
    p[59] = [-0.27, -0.61 - o + 0.5 * s, 0.65];
    p[60] = [-0.34 - 0.3 * s, -0.53 + s, 0.6];
    p[61] = [-0.11, -0.51, 0.74];
    p[62] = [0.0, -0.52, 0.76];
    p[66] = [0.0, -0.55 - o, 0.75];
    p[67] = [-0.11, -0.55 - o, 0.73];
    for i in 0..68 {
        if p[i][0].is_nan() {
            p[i] = mirror(p[FLIP_68[i]]);
        }
    }
    p[BROW_TOP_L] = [p[19][0], p[19][1] + 0.045, p[19][2]];
    p[BROW_BOTTOM_L] = [p[19][0], p[19][1] - 0.045, p[19][2]];
    p[BROW_TOP_R] = mirror(p[BROW_TOP_L]);
    p[BROW_BOTTOM_R] = mirror(p[BROW_BOTTOM_L]);
    // Forehead arc from the image-right temple over the top to the image-left temple.
    for (k, i) in FOREHEAD.enumerate() {
        let phi = std::f64::consts::PI * (k as f64 + 0.5) / FOREHEAD.len() as f64;
        p[i] = [jaw * phi.cos(), 0.3 + 0.85 * phi.sin(), -0.55 + 0.85 * phi.sin()];
    }
    p[HEAD_CENTRE] = [0.0, 0.35, -0.4];
    p
}

/// Where a template lands: 300W-LP's weak perspective, `u = cx + f x'`, `v = cy - f y'` with
/// `[x', y', z'] = R(pitch, yaw, roll) X`.
#[derive(Clone, Copy, Debug)]
pub struct Camera {
    pub pose: [f64; 3],
    pub centre: [f64; 2],
    /// Pixels per model unit.
    pub focal: f64,
}

impl Camera {
    /// Image position and depth (larger = nearer the camera, in pixels).
    pub fn project(&self, p: P3) -> [f64; 3] {
        let r = pose_matrix(self.pose[0], self.pose[1], self.pose[2]);
        let q = [0, 1, 2].map(|i| r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2]);
        [self.centre[0] + self.focal * q[0], self.centre[1] - self.focal * q[1], self.focal * q[2]]
    }

    /// The z of a direction after rotation: > 0 faces the camera.
    pub fn facing(&self, n: P3) -> f64 {
        let r = pose_matrix(self.pose[0], self.pose[1], self.pose[2]);
        r[2][0] * n[0] + r[2][1] * n[1] + r[2][2] * n[2]
    }
}
