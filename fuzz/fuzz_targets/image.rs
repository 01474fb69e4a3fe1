//! The image path of `facex analyze`: decode (libjpeg-turbo for JPEG, the `image` crate for the
//! rest), then the official crop and resize, both for a face box and for the whole image.
//! Input: 16 bytes of face box (four little-endian f32: x0 y0 x1 y1), then the image file.
#![no_main]
use facex::preprocess;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, file)) = data.split_at_checked(16) else { return };
    let face_box: [f32; 4] = std::array::from_fn(|i| f32::from_le_bytes(head[4 * i..4 * i + 4].try_into().unwrap()));
    let Ok(img) = facex::detect::decode_rgb(file) else { return };
    let _ = preprocess::preprocess_face(&img, face_box);
    let whole = [0.0, 0.0, img.width() as f64, img.height() as f64];
    let _ = preprocess::preprocess_crop(&img, whole);
});
