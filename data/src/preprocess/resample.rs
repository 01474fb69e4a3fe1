//! Pillow's antialiased bicubic resize of 8-bit RGB (`ImagingResample` with `BICUBIC`), bit-exact.
//!
//! Pillow resamples in two separable passes, horizontal first, each a weighted sum with a
//! bicubic kernel (a = -0.5) stretched by the downscale factor (so it antialiases). Weights are
//! normalised per output pixel in f64, then turned into 22-bit fixed point; each pass rounds and
//! clips to 0..=255, so the intermediate image is 8-bit too. Matching this (not a float resize)
//! is what makes the model input equal to the official script's.

use super::{Error, Result, RgbImage};

/// Fractional bits of the fixed-point weights: 32 bits minus 8 for the pixel, minus 2 headroom
/// for kernels whose partial sums leave 0..1.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Support of the bicubic kernel at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index, the number of taps, and `ksize` fixed-point
/// weights (unused ones are 0).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the input span `[in0, in1)`.
fn precompute_coeffs(in_size: usize, in0: f32, in1: f32, out_size: usize) -> Coeffs {
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        // `(int)` in C truncates toward zero; the clamp at 0 makes that a plain rounding here.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * inv_filterscale);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, out) in row.iter_mut().enumerate().take(xmax) {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            // Round half away from zero, as Pillow's `(int)(x +- 0.5)`.
            *out = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, weights }
}

/// Pillow's `clip8`: drop the fraction (arithmetic shift, i.e. floor) and clamp to a byte.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize to `out_w` x `out_h` exactly as Pillow's `Image.resize(size, Image.BICUBIC)` does
/// for an RGB image (box = the whole image, no reducing gap).
pub fn resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> Result<RgbImage> {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return Err(Error::BadSize {
            op: "resize_bicubic",
            msg: format!("cannot resize {in_w}x{in_h} to {out_w}x{out_h}: sizes must be positive"),
        });
    }
    if out_w > u32::MAX as usize || out_h > u32::MAX as usize {
        return Err(Error::BadSize { op: "resize_bicubic", msg: format!("output {out_w}x{out_h} is too large") });
    }
    let src = img.as_raw();
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;

    let vert = precompute_coeffs(in_h, 0.0, in_h as f32, out_h);
    // The horizontal pass only produces the rows the vertical pass reads.
    let row_first = vert.bounds[0].0;
    let row_last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;

    let (mid, mid_w, mid_row0) = if need_horizontal {
        let horiz = precompute_coeffs(in_w, 0.0, in_w as f32, out_w);
        let rows = row_last - row_first;
        let mut mid = vec![0u8; rows * out_w * 3];
        for r in 0..rows {
            let line = &src[(row_first + r) * in_w * 3..(row_first + r + 1) * in_w * 3];
            let out_line = &mut mid[r * out_w * 3..(r + 1) * out_w * 3];
            for (xx, &(xmin, xlen)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + xlen];
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = &line[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c] as i32 * w;
                    }
                }
                for c in 0..3 {
                    out_line[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        (mid, out_w, row_first)
    } else {
        (src.to_vec(), in_w, 0)
    };

    let out = if need_vertical {
        let mut out = vec![0u8; out_h * mid_w * 3];
        for (yy, &(ymin, ylen)) in vert.bounds.iter().enumerate() {
            let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + ylen];
            let out_line = &mut out[yy * mid_w * 3..(yy + 1) * mid_w * 3];
            for (i, o) in out_line.iter_mut().enumerate() {
                let mut acc = 1i32 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    acc += mid[(ymin - mid_row0 + y) * mid_w * 3 + i] as i32 * w;
                }
                *o = clip8(acc);
            }
        }
        out
    } else {
        mid
    };
    Ok(RgbImage::from_raw(out_w as u32, out_h as u32, out).expect("buffer size matches the image size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for &(inn, out) in &[(130usize, 224usize), (512, 224), (7, 3), (1, 5), (224, 224)] {
            let c = precompute_coeffs(inn, 0.0, inn as f32, out);
            for (xx, &(xmin, len)) in c.bounds.iter().enumerate() {
                assert!(len >= 1 && xmin + len <= inn);
                let s: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize].iter().map(|&w| w as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64, "{inn}->{out} at {xx}: {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 19, image::Rgb([10, 200, 255]));
        for &(w, h) in &[(224, 224), (5, 3), (37, 40), (1, 1)] {
            let out = resize_bicubic(&img, w, h).unwrap();
            assert!(out.pixels().all(|p| p.0 == [10, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = RgbImage::from_fn(9, 4, |x, y| image::Rgb([(x * 20) as u8, (y * 50) as u8, 7]));
        assert_eq!(resize_bicubic(&img, 9, 4).unwrap(), img);
    }

    #[test]
    fn matches_float_reference_within_rounding() {
        // Plain float separable bicubic (no fixed point, no intermediate rounding) lands within
        // two levels of Pillow's integer path.
        let img =
            RgbImage::from_fn(31, 23, |x, y| image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, ((x ^ y) * 9) as u8]));
        let (ow, oh) = (13usize, 40usize);
        let out = resize_bicubic(&img, ow, oh).unwrap();
        let taps = |inn: usize, out: usize| -> Vec<Vec<(usize, f64)>> {
            let scale = inn as f64 / out as f64;
            let fs = scale.max(1.0);
            (0..out)
                .map(|o| {
                    let center = (o as f64 + 0.5) * scale;
                    let v: Vec<(usize, f64)> =
                        (0..inn).map(|i| (i, bicubic((i as f64 + 0.5 - center) / fs))).filter(|t| t.1 != 0.0).collect();
                    let s: f64 = v.iter().map(|t| t.1).sum();
                    v.into_iter().map(|(i, w)| (i, w / s)).collect()
                })
                .collect()
        };
        let (hx, vy) = (taps(31, ow), taps(23, oh));
        for (y, vrow) in vy.iter().enumerate() {
            for (x, hrow) in hx.iter().enumerate() {
                for c in 0..3 {
                    let mut v = 0.0;
                    for &(iy, wy) in vrow {
                        for &(ix, wx) in hrow {
                            v += wy * wx * img.get_pixel(ix as u32, iy as u32).0[c] as f64;
                        }
                    }
                    let got = out.get_pixel(x as u32, y as u32).0[c] as f64;
                    assert!((got - v.clamp(0.0, 255.0)).abs() <= 2.0, "({x},{y},{c}): {got} vs {v}");
                }
            }
        }
    }
}
