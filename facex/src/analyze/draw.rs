//! The overlay picture: a 50/50 blend of the parsing palette, then boxes, points and pose axes.

use super::{ImageResult, PARSING_PALETTE};
use crate::preprocess::{Rgb, RgbImage};

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// A line by DDA, `thick` pixels wide.
fn line(img: &mut RgbImage, a: [f32; 2], b: [f32; 2], c: [u8; 3], thick: i64) {
    let steps = (b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (x, y) = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]));
        for dy in -(thick / 2)..=(thick / 2) {
            for dx in -(thick / 2)..=(thick / 2) {
                put(img, x.round() as i64 + dx, y.round() as i64 + dy, c);
            }
        }
    }
}

fn dot(img: &mut RgbImage, p: [f32; 2], r: i64, c: [u8; 3]) {
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                put(img, p[0].round() as i64 + dx, p[1].round() as i64 + dy, c);
            }
        }
    }
}

/// The usual head-pose axes (x red, y green, z blue) from (pitch, yaw, roll) in degrees.
fn pose_axes(img: &mut RgbImage, pitch: f32, yaw: f32, roll: f32, centre: [f32; 2], size: f32) {
    let (p, y, r) = (pitch.to_radians(), -yaw.to_radians(), roll.to_radians());
    let x_axis = [size * (y.cos() * r.cos()), size * (p.cos() * r.sin() + r.cos() * p.sin() * y.sin())];
    let y_axis = [size * (-y.cos() * r.sin()), size * (p.cos() * r.cos() - p.sin() * y.sin() * r.sin())];
    let z_axis = [size * y.sin(), size * (-y.cos() * p.sin())];
    let thick = (size / 40.0).max(1.0) as i64;
    for (axis, colour) in [(x_axis, [255, 0, 0]), (y_axis, [0, 255, 0]), (z_axis, [0, 0, 255])] {
        line(img, centre, [centre[0] + axis[0], centre[1] + axis[1]], colour, thick);
    }
}

pub fn overlay(img: &RgbImage, result: &ImageResult) -> RgbImage {
    let mut out = img.clone();
    if let Some(mask) = &result.parsing {
        for (px, m) in out.pixels_mut().zip(mask.pixels()) {
            let class = m.0[0] as usize;
            if class != 0 {
                let c = PARSING_PALETTE[class.min(10)];
                for (v, c) in px.0.iter_mut().zip(c) {
                    *v = ((*v as u16 + c as u16) / 2) as u8;
                }
            }
        }
    }
    let scale = (img.width().max(img.height()) as f32 / 500.0).max(1.0);
    for face in &result.faces {
        let [x0, y0, x1, y1] = face.bbox;
        let t = scale.round() as i64;
        for (a, b) in [([x0, y0], [x1, y0]), ([x1, y0], [x1, y1]), ([x1, y1], [x0, y1]), ([x0, y1], [x0, y0])] {
            line(&mut out, a, b, [255, 255, 0], t);
        }
        // Without detection (`--no-detect`) there are no detector points.
        for p in face.landmarks5.iter().filter(|p| p.iter().all(|v| v.is_finite())) {
            dot(&mut out, *p, (2.0 * scale) as i64, [255, 0, 255]);
        }
        if let Some(m) = &face.model {
            for &p in &m.landmarks68 {
                dot(&mut out, p, scale as i64, [0, 255, 0]);
            }
            let centre = [(x0 + x1) / 2.0, (y0 + y1) / 2.0];
            let pd = m.pose_degrees;
            pose_axes(&mut out, pd.pitch, pd.yaw, pd.roll, centre, (x1 - x0) / 2.0);
        }
    }
    out
}
