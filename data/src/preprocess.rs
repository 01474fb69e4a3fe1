//! The official preprocessing: crop with margin, PIL's bicubic resize, ImageNet normalisation.
//!
//! The official `inference.py` does `Image.open`, detects a face, grows the box with
//! `adjust_bbox(margin 50)`, crops with the box truncated to integers, resizes to 224x224 with
//! PIL's bicubic filter (torchvision `Resize` on a PIL image), then `ToTensor` and `Normalize`.
//! Every step here reproduces Pillow's 8-bit arithmetic so the model sees the same input bytes.

mod jpeg_end;
mod resample;

use std::fmt;
use std::path::{Path, PathBuf};

/// The image crate, re-exported so callers can build and save images without depending on it.
pub use image;
pub use image::{Rgb, RgbImage};
pub use jpeg_end::check_jpeg_complete;
pub use resample::resize_bicubic;
use tensor::Tensor;

/// Side of the square model input.
pub const INPUT_SIZE: usize = 224;
/// ImageNet mean and std of torchvision's `Normalize`, per RGB channel.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The margin the official script passes to `adjust_bbox`.
pub const MARGIN_PERCENT: f64 = 50.0;

/// Errors from loading or preprocessing an image. Each names the file or the sizes involved.
#[derive(Debug)]
pub enum Error {
    /// The file could not be read.
    Io { path: PathBuf, source: std::io::Error },
    /// The file was read but is not a decodable image (unknown format, truncated data...).
    Decode { path: PathBuf, msg: String },
    /// A crop or resize that cannot be done (empty box, zero-sized image).
    BadSize { op: &'static str, msg: String },
    /// A tensor op failed (only on internal shape bugs).
    Tensor(tensor::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "cannot read image file {}: {source}", path.display()),
            Error::Decode { path, msg } => write!(f, "{} is not a readable image: {msg}", path.display()),
            Error::BadSize { op, msg } => write!(f, "{op}: {msg}"),
            Error::Tensor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tensor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Load an image file as 8-bit RGB, as PIL's `Image.open(p).convert('RGB')` does:
/// grey is replicated to three channels, alpha is dropped (not composited).
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode_rgb(&bytes).map_err(|msg| Error::Decode { path: path.to_path_buf(), msg })
}

/// Decode an in-memory image file (format guessed from its bytes) to 8-bit RGB. A JPEG cut
/// short is refused, as PIL refuses it (the decoder would pad it with grey: [`check_jpeg_complete`]).
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let reader =
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    match reader.format() {
        None => return Err("unknown image format".into()),
        Some(image::ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        Some(_) => {}
    }
    let img = reader.decode().map_err(|e| e.to_string())?;
    Ok(img.to_rgb8())
}

/// The official `adjust_bbox`: each side moves out by `margin/2` percent of the box width
/// (left, right) or height (top, bottom), then is clamped to `[0, width]` / `[0, height]`.
/// Computed in f64 from the box as given, like NumPy does from float32 boxes.
pub fn adjust_bbox(bbox: [f32; 4], width: usize, height: usize, margin_percent: f64) -> [f64; 4] {
    let [x0, y0, x1, y1] = bbox.map(f64::from);
    let grow_w = (x1 - x0) * (margin_percent / 100.0) / 2.0;
    let grow_h = (y1 - y0) * (margin_percent / 100.0) / 2.0;
    [(x0 - grow_w).max(0.0), (y0 - grow_h).max(0.0), (x1 + grow_w).min(width as f64), (y1 + grow_h).min(height as f64)]
}

/// The integer box `image.crop((int(x0), int(y0), int(x1), int(y1)))` uses: truncation toward zero.
pub fn truncate_box(bbox: [f64; 4]) -> [i64; 4] {
    bbox.map(|v| v.trunc() as i64)
}

/// PIL's `crop`: the pixels in `[x0, x1) x [y0, y1)`; parts outside the image are black.
pub fn crop(img: &RgbImage, bbox: [i64; 4]) -> Result<RgbImage> {
    let [x0, y0, x1, y1] = bbox;
    if x1 <= x0 || y1 <= y0 {
        return Err(Error::BadSize { op: "crop", msg: format!("empty crop box {bbox:?}") });
    }
    let (w, h) = ((x1 - x0) as u32, (y1 - y0) as u32);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        let sy = y0 + y as i64;
        if sy < 0 || sy >= ih {
            continue;
        }
        for x in 0..w {
            let sx = x0 + x as i64;
            if sx >= 0 && sx < iw {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    Ok(out)
}

/// `ToTensor` then `Normalize(MEAN, STD)`: a [1, 3, H, W] f32 tensor.
pub fn to_normalized_tensor(img: &RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            // Same order of float ops as torchvision: (x / 255 - mean) / std.
            data[c * w * h + i] = (px.0[c] as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Ok(Tensor::from_vec(data, &[1, 3, h, w])?)
}

/// The whole official preprocessing of one face: grow `face_box` (an MTCNN box) by the 50%
/// margin, crop, resize to 224x224 with PIL's bicubic, normalise. Returns the model input
/// [1, 3, 224, 224] and the grown box (before truncation).
pub fn preprocess_face(img: &RgbImage, face_box: [f32; 4]) -> Result<(Tensor, [f64; 4])> {
    let crop_box = adjust_bbox(face_box, img.width() as usize, img.height() as usize, MARGIN_PERCENT);
    let input = preprocess_crop(img, crop_box)?;
    Ok((input, crop_box))
}

/// Crop at `crop_box` (truncated to integers), resize to 224x224 with PIL's bicubic, normalise.
pub fn preprocess_crop(img: &RgbImage, crop_box: [f64; 4]) -> Result<Tensor> {
    let cropped = crop(img, truncate_box(crop_box))?;
    let resized = resize_bicubic(&cropped, INPUT_SIZE, INPUT_SIZE)?;
    to_normalized_tensor(&resized)
}
