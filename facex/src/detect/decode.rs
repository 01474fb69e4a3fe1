//! Image files to RGB exactly as facenet-pytorch (PIL) and OpenCV see them.
//!
//! JPEG decoders disagree by a few grey levels on many pixels (IDCT rounding, chroma upsampling):
//! on real photos the `image` crate's decoder (zune-jpeg) differs from PIL's libjpeg-turbo on up
//! to 45% of the values by at most 4, which moved MTCNN's scores by 0.12 on a borderline face and
//! made another cross the 0.7 threshold. So JPEGs go through libjpeg-turbo's decoder (the
//! `mozjpeg` fork: the same integer IDCT and fancy upsampling, bit-exact with PIL on the photos
//! of `tests/detect.rs`); every other format, and JPEGs libjpeg cannot take to RGB (CMYK),
//! through `preprocess::decode_rgb`. A JPEG that stops before its end marker is refused first
//! (`preprocess::check_jpeg_complete`): PIL refuses it, and both decoders would pad it with grey.

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
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        preprocess::check_jpeg_complete(bytes)?;
        match decode_jpeg(bytes) {
            Ok(Some(img)) => return Ok(img),
            Ok(None) => {}
            Err(msg) => return Err(msg),
        }
    }
    preprocess::decode_rgb(bytes)
}

/// The largest decoded image, in bytes of RGB: the `image` crate's default allocation limit, so
/// that both decoders refuse the same headers (a JPEG header can claim 65535 x 65535 pixels in a
/// few hundred bytes; libjpeg pads missing data, so the claim alone would reserve 12 GB).
pub const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

/// libjpeg's defaults (integer slow IDCT, fancy upsampling), output RGB (grey replicated).
/// `Ok(None)` when libjpeg refuses the file (the caller then falls back); `Err` when the header
/// claims more than [`MAX_DECODED_BYTES`] of pixels, before anything of that size is reserved.
fn decode_jpeg(bytes: &[u8]) -> Result<Option<RgbImage>, String> {
    // libjpeg reports a fatal error (a colour conversion it cannot do, such as CMYK to RGB, or a
    // corrupt header) by unwinding out of the mozjpeg call (`resume_unwind`, no panic message):
    // caught here, it is a refusal, never an unwind out of the decoder.
    let decoded = std::panic::catch_unwind(|| -> Result<Option<RgbImage>, String> {
        let Ok(d) = mozjpeg::Decompress::new_mem(bytes) else { return Ok(None) };
        let (w, h) = (d.width(), d.height());
        let size = w as u64 * h as u64 * 3;
        if size > MAX_DECODED_BYTES {
            return Err(format!(
                "JPEG header claims {w}x{h} pixels ({size} bytes of RGB), more than the {MAX_DECODED_BYTES}-byte limit"
            ));
        }
        let Ok(mut d) = d.rgb() else { return Ok(None) };
        let Ok(pixels) = d.read_scanlines::<[u8; 3]>() else { return Ok(None) };
        if d.finish().is_err() {
            return Ok(None);
        }
        Ok(RgbImage::from_raw(w as u32, h as u32, pixels.concat()))
    });
    decoded.unwrap_or(Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Cut anywhere past its header: refused, naming the truncation, not padded with grey by
        // either decoder; bytes after the end marker (camera trailers, padding) are fine.
        for cut in [jpg.len() / 8, jpg.len() / 2, jpg.len() - 1] {
            let e = decode_rgb(&jpg[..cut]).unwrap_err();
            assert!(e.contains("truncated JPEG"), "cut at {cut} of {}: {e}", jpg.len());
        }
        let mut trailer = jpg.clone();
        trailer.extend([0, 0, 0x12, 0x34]);
        assert_eq!(decode_rgb(&trailer).unwrap(), rgb);
        assert!(decode_rgb(b"plain text").is_err());
    }

    /// Found by `fuzz/` (target `image`, the CMYK seed): libjpeg's "unsupported colour
    /// conversion" unwound out of `decode_rgb` (a crash of `facex analyze` without a message).
    /// Now libjpeg's refusal sends the file to the fallback decoder, which converts CMYK.
    #[test]
    fn cmyk_jpeg_is_decoded_not_unwound() {
        let cmyk = include_bytes!("testdata/cmyk.jpg");
        assert_eq!(preprocess::check_jpeg_complete(cmyk), Ok(()));
        let rgb = decode_rgb(cmyk).unwrap();
        assert_eq!(rgb.dimensions(), (32, 24));
        // Corrupt headers unwind out of libjpeg too: every truncation or byte flip is a result.
        for n in [4, 20, 100, 300] {
            let mut cut = cmyk[..n].to_vec();
            cut.extend([0xFF, 0xD9]);
            let _ = decode_rgb(&cut);
            let mut flipped = cmyk.to_vec();
            flipped[n] ^= 0x5A;
            let _ = decode_rgb(&flipped);
        }
    }

    /// A JPEG header claiming 65000 x 65000 pixels (12 GB of RGB) in a file of a few hundred
    /// bytes is refused from the header, before any pixel buffer is reserved.
    #[test]
    fn huge_jpeg_header_is_refused_before_allocation() {
        let img = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([x as u8 * 16]));
        let mut jpg = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).unwrap();
        // SOF0: FF C0, length (2), precision (1), height (2), width (2).
        let sof = jpg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpg[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
        let err = decode_rgb(&jpg).unwrap_err();
        assert!(err.contains("65000x65000") && err.contains("limit"), "{err}");
        // The fallback decoder (every other format) has the same limit: a PPM claiming 10^10 pixels.
        let ppm = b"P6\n100000 100000\n255\n\x01\x02\x03";
        assert!(decode_rgb(ppm).is_err());
    }
}
