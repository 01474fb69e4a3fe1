//! Image files to RGB exactly as facenet-pytorch (PIL) and OpenCV see them.
//!
//! JPEG decoders disagree by a few grey levels on many pixels (IDCT rounding, chroma upsampling):
//! on real photos the `image` crate's decoder (zune-jpeg) differs from PIL's libjpeg-turbo on up
//! to 45% of the values by at most 4, which moved MTCNN's scores by 0.12 on a borderline face and
//! made another cross the 0.7 threshold. So JPEGs go through libjpeg-turbo's decoder (the
//! `mozjpeg` fork: the same integer IDCT and fancy upsampling, bit-exact with PIL on the photos
//! of `tests/detect.rs`); every other format, and JPEGs libjpeg cannot take to RGB (CMYK) or
//! that lack their end marker (truncated: PIL refuses them, libjpeg would pad them with grey),
//! through `preprocess::decode_rgb`.

use crate::preprocess::{self, Error, RgbImage};
use std::path::Path;

/// `preprocess::load_rgb` with JPEGs decoded by libjpeg-turbo.
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode_rgb(&bytes).map_err(|msg| Error::Decode { path: path.to_path_buf(), msg })
}

/// `preprocess::decode_rgb` with JPEGs decoded by libjpeg-turbo.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    if is_complete_jpeg(bytes) {
        if let Some(img) = decode_jpeg(bytes) {
            return Ok(img);
        }
    }
    preprocess::decode_rgb(bytes)
}

/// Starts with SOI and ends with EOI (trailing zero padding allowed).
fn is_complete_jpeg(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// libjpeg's defaults (integer slow IDCT, fancy upsampling), output RGB (grey replicated).
/// `None` when libjpeg refuses the file; the caller then falls back.
fn decode_jpeg(bytes: &[u8]) -> Option<RgbImage> {
    let mut d = mozjpeg::Decompress::new_mem(bytes).ok()?.rgb().ok()?;
    let (w, h) = (d.width() as u32, d.height() as u32);
    let pixels = d.read_scanlines::<[u8; 3]>().ok()?;
    d.finish().ok()?;
    RgbImage::from_raw(w, h, pixels.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_decides_completeness() {
        assert!(is_complete_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 0xFF, 0xD9]));
        assert!(is_complete_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 0xFF, 0xD9, 0, 0]));
        assert!(!is_complete_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2]));
        assert!(!is_complete_jpeg(b"\x89PNG\r\n\x1a\n"));
        assert!(!is_complete_jpeg(&[]));
    }

    #[test]
    fn jpeg_round_trip_and_fallbacks() {
        // A grey 16x8 JPEG made by `image`: libjpeg decodes it to RGB with R = G = B.
        let img = image::GrayImage::from_fn(16, 8, |x, y| image::Luma([(x * 16 + y) as u8]));
        let mut jpg = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).unwrap();
        let rgb = decode_rgb(&jpg).unwrap();
        assert_eq!(rgb.dimensions(), (16, 8));
        assert!(rgb.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        // Close to the source (lossy), pixel for pixel.
        let err = rgb.pixels().zip(img.pixels()).map(|(a, b)| (a.0[0] as i32 - b.0[0] as i32).abs()).max();
        assert!(err.unwrap() <= 8, "{err:?}");
        // Truncated: not libjpeg's grey padding, the fallback decoder's verdict (an error here).
        assert!(decode_rgb(&jpg[..jpg.len() / 2]).is_err());
        assert!(decode_rgb(b"plain text").is_err());
    }
}
