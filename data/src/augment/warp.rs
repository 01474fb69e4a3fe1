//! One affine map about the crop centre, applied to pixels (bilinear), class masks (nearest) and
//! points (exactly), all in the crate's pixel convention: pixel centres at integer coordinates.

use crate::preprocess::RgbImage;

/// `q = m * [p, 1]`: a point of the source image to the augmented image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub m: [[f64; 3]; 2],
}

impl Affine {
    pub const IDENTITY: Affine = Affine { m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] };

    /// Mirror (optional), then rotate by `angle` radians (clockwise on screen, y down), scale,
    /// all about the centre of a `w x h` image, then translate by `shift` pixels.
    pub fn about_centre(w: usize, h: usize, flip: bool, angle: f64, scale: f64, shift: [f64; 2]) -> Affine {
        let c = [(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0];
        let (s, co) = angle.sin_cos();
        let f = if flip { -1.0 } else { 1.0 };
        // A = scale * Rot(angle) * diag(f, 1).
        let a = [[scale * co * f, -scale * s], [scale * s * f, scale * co]];
        let t = [c[0] + shift[0] - a[0][0] * c[0] - a[0][1] * c[1], c[1] + shift[1] - a[1][0] * c[0] - a[1][1] * c[1]];
        Affine { m: [[a[0][0], a[0][1], t[0]], [a[1][0], a[1][1], t[1]]] }
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.m;
        [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]]
    }

    pub fn map_points(&self, points: &[[f32; 2]]) -> Vec<[f32; 2]> {
        points.iter().map(|p| self.apply([p[0] as f64, p[1] as f64]).map(|v| v as f32)).collect()
    }

    /// The inverse map (augmented image -> source). Our maps are never singular (scale > 0).
    pub fn inverse(&self) -> Affine {
        let m = &self.m;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let (a, b, c, d) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
        Affine { m: [[a, b, -(a * m[0][2] + b * m[1][2])], [c, d, -(c * m[0][2] + d * m[1][2])]] }
    }
}

/// Bilinear resampling of `src` through `map` (source -> output); outside the source is black.
pub fn warp_rgb(src: &RgbImage, map: &Affine) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let inv = map.inverse().m;
    let data = src.as_raw();
    let mut out = vec![0u8; w * h * 3];
    let texel = |x: i64, y: i64, ch: usize| -> f32 {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            0.0
        } else {
            data[(y as usize * w + x as usize) * 3 + ch] as f32
        }
    };
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        let (yf, mut sx, mut sy) = (y as f64, 0.0, 0.0);
        sx += inv[0][1] * yf + inv[0][2];
        sy += inv[1][1] * yf + inv[1][2];
        for (x, px) in row.as_chunks_mut::<3>().0.iter_mut().enumerate() {
            let (px_x, px_y) = (sx + inv[0][0] * x as f64, sy + inv[1][0] * x as f64);
            let (x0, y0) = (px_x.floor(), px_y.floor());
            let (fx, fy) = ((px_x - x0) as f32, (px_y - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            if x0 < -1 || y0 < -1 || x0 >= w as i64 || y0 >= h as i64 {
                continue;
            }
            // Weights once per pixel; with fx == fy == 0 they are (1, 0, 0, 0) and the sum is
            // the source byte exactly: integer maps (flips) copy pixels.
            let (gx, gy) = (1.0 - fx, 1.0 - fy);
            let wt = [gx * gy, fx * gy, gx * fy, fx * fy];
            let inside = x0 >= 0 && y0 >= 0 && x0 + 1 < w as i64 && y0 + 1 < h as i64;
            for (ch, v) in px.iter_mut().enumerate() {
                let t = if inside {
                    let i = (y0 as usize * w + x0 as usize) * 3 + ch;
                    [data[i], data[i + 3], data[i + w * 3], data[i + w * 3 + 3]].map(f32::from)
                } else {
                    [texel(x0, y0, ch), texel(x0 + 1, y0, ch), texel(x0, y0 + 1, ch), texel(x0 + 1, y0 + 1, ch)]
                };
                let sum = t[0] * wt[0] + t[1] * wt[1] + t[2] * wt[2] + t[3] * wt[3];
                *v = (sum + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer sized w*h*3")
}

/// Nearest-neighbour resampling of a `w x h` row-major class mask; outside is background (0).
pub fn warp_mask(src: &[u8], w: usize, h: usize, map: &Affine) -> Vec<u8> {
    let inv = map.inverse().m;
    let mut out = vec![0u8; w * h];
    for (y, row) in out.chunks_exact_mut(w).enumerate() {
        for (x, v) in row.iter_mut().enumerate() {
            let (qx, qy) = (x as f64, y as f64);
            let sx = (inv[0][0] * qx + inv[0][1] * qy + inv[0][2] + 0.5).floor();
            let sy = (inv[1][0] * qx + inv[1][1] * qy + inv[1][2] + 0.5).floor();
            if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                // `get`: a mask shorter than w*h reads as background rather than panicking.
                *v = src.get(sy as usize * w + sx as usize).copied().unwrap_or(0);
            }
        }
    }
    out
}
