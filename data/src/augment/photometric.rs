//! Photometric changes: they touch the pixels only, never a label (except that points under an
//! occluder become occluded, see `augment`).

use crate::preprocess::RgbImage;

/// `255 * (v / 255)^gamma` through a 256-entry table.
pub fn gamma(img: &mut RgbImage, g: f64) {
    if g == 1.0 {
        return;
    }
    let mut lut = [0u8; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        *out = (255.0 * (v as f64 / 255.0).powf(g)).round() as u8;
    }
    for v in img.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// ITU-R 601 luma (PIL's `convert("L")` weights) copied to the three channels.
pub fn grayscale(img: &mut RgbImage) {
    for px in img.pixels_mut() {
        let [r, g, b] = px.0.map(u32::from);
        let l = ((r * 299 + g * 587 + b * 114 + 500) / 1000) as u8;
        px.0 = [l, l, l];
    }
}

/// Separable Gaussian blur, kernel radius `ceil(3 sigma)`, edges clamped.
pub fn blur(img: &mut RgbImage, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as i64;
    let mut kernel: Vec<f32> =
        (-radius..=radius).map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    // Horizontal pass into f32, vertical pass back to u8: two buffers per image, none per pixel.
    let mut tmp = vec![0f32; src.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut acc = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    let sx = (x + k as i64 - radius).clamp(0, w - 1);
                    acc += wgt * src[((y * w + sx) * 3) as usize + ch] as f32;
                }
                tmp[((y * w + x) * 3) as usize + ch] = acc;
            }
        }
    }
    let out = img.as_mut();
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let mut acc = 0.0;
                for (k, wgt) in kernel.iter().enumerate() {
                    let sy = (y + k as i64 - radius).clamp(0, h - 1);
                    acc += wgt * tmp[((sy * w + x) * 3) as usize + ch];
                }
                out[((y * w + x) * 3) as usize + ch] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Paint the pixel rectangle `[x0, x1) x [y0, y1)` black (clipped to the image).
pub fn occlude(img: &mut RgbImage, rect: [usize; 4]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [x0, y0, x1, y1] = [rect[0].min(w), rect[1].min(h), rect[2].min(w), rect[3].min(h)];
    let data = img.as_mut();
    for y in y0..y1 {
        data[(y * w + x0) * 3..(y * w + x1.max(x0)) * 3].fill(0);
    }
}
