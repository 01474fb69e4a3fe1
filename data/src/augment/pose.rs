//! Head pose under image flips and in-plane rotations, in the 300W-LP convention.
//!
//! 300W-LP (3DDFA) projects a model point `X` (x to the image right, y up, z toward the camera)
//! as `s * R * X + t` with `R = Rx(pitch) Ry(yaw) Rz(roll)` built from 3DDFA's matrices
//!
//! ```text
//! Rx(p) = [1 0 0; 0 cos p sin p; 0 -sin p cos p]
//! Ry(y) = [cos y 0 -sin y; 0 1 0; sin y 0 cos y]
//! Rz(r) = [cos r sin r 0; -sin r cos r 0; 0 0 1]
//! ```
//!
//! then flips y into image rows (`v = cy - y`). With these signs a positive pitch raises the
//! nose, a positive yaw turns the nose toward the image left, and a positive roll turns the face
//! clockwise on screen (the eye line's direction, in image coordinates with y down, is the angle
//! `roll` from the x axis).
//!
//! Mirroring the image (`x -> -x`) conjugates `R` by `diag(-1, 1, 1)`: pitch is unchanged, yaw and
//! roll are negated. Rotating the image clockwise on screen by `a` (the crop's rotation matrix
//! `[cos a -sin a; sin a cos a]` in y-down pixels) multiplies `R` on the left by `Rz(a)`; the new
//! angles come from decomposing that product, which at zero pitch and yaw is exactly
//! `roll + a`.

/// A 3x3 matrix, row-major.
pub type Mat3 = [[f64; 3]; 3];

fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

fn rx(p: f64) -> Mat3 {
    let (s, c) = p.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]]
}

fn ry(y: f64) -> Mat3 {
    let (s, c) = y.sin_cos();
    [[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]]
}

fn rz(r: f64) -> Mat3 {
    let (s, c) = r.sin_cos();
    [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// The 300W-LP rotation `Rx(pitch) Ry(yaw) Rz(roll)` (radians) applied to model points.
pub fn pose_matrix(pitch: f64, yaw: f64, roll: f64) -> Mat3 {
    mul(&mul(&rx(pitch), &ry(yaw)), &rz(roll))
}

/// The inverse of [`pose_matrix`] for |yaw| < 90 degrees: `[pitch, yaw, roll]`.
pub fn pose_from_matrix(r: &Mat3) -> [f64; 3] {
    // R = Rx Ry Rz gives R[0][2] = -sin(yaw), R[1][2] / R[2][2] = tan(pitch),
    // R[0][1] / R[0][0] = tan(roll).
    let yaw = (-r[0][2]).clamp(-1.0, 1.0).asin();
    let pitch = r[1][2].atan2(r[2][2]);
    let roll = r[0][1].atan2(r[0][0]);
    [pitch, yaw, roll]
}

/// The pose of a horizontally mirrored image.
pub fn flip_pose(pyr: [f32; 3]) -> [f32; 3] {
    [pyr[0], -pyr[1], -pyr[2]]
}

/// The pose after the image is rotated clockwise on screen by `angle` radians (see the module
/// comment).
pub fn rotate_pose(pyr: [f32; 3], angle: f64) -> [f32; 3] {
    if angle == 0.0 {
        return pyr;
    }
    let r = pose_matrix(pyr[0] as f64, pyr[1] as f64, pyr[2] as f64);
    pose_from_matrix(&mul(&rz(angle), &r)).map(|v| v as f32)
}
