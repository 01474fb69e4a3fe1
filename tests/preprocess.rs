//! The official preprocessing against the reference input of `tests/fixtures/detect/`:
//! crop at the reference `crop_box`, PIL bicubic resize to 224x224, ImageNet normalisation.

use facex::preprocess::{self, image, RgbImage, MEAN, STD};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detect").join(name)
}

/// One F32 tensor from a safetensors file: (shape, data).
fn read_safetensors_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = &facex_suite::read_safetensors(path)[name];
    (t.shape().to_vec(), t.to_f32_vec().unwrap())
}

fn detect_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("astronaut.detect.json")).unwrap()).unwrap()
}

fn boxf64(v: &serde_json::Value) -> [f64; 4] {
    let a = v.as_array().unwrap();
    [a[0].as_f64().unwrap(), a[1].as_f64().unwrap(), a[2].as_f64().unwrap(), a[3].as_f64().unwrap()]
}

#[test]
fn reference_input_within_one_level() {
    let img = preprocess::load_rgb(fixture("astronaut.png")).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    let crop_box = boxf64(&detect_json()["crop_box"]);
    let ours = preprocess::preprocess_crop(&img, crop_box).unwrap();
    assert_eq!(ours.shape(), &[1, 3, 224, 224]);
    let ours = ours.to_f32_vec().unwrap();
    let (shape, reference) = read_safetensors_f32(&fixture("astronaut.input.safetensors"), "input");
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let plane = 224 * 224;
    let (mut max_levels, mut exact) = (0f64, 0usize);
    for (i, (&a, &b)) in ours.iter().zip(&reference).enumerate() {
        let c = i / plane;
        // Back to 8-bit levels: x = (v/255 - mean)/std.
        let levels = ((a - b) as f64 * STD[c] as f64 * 255.0).abs();
        max_levels = max_levels.max(levels);
        exact += (levels < 1e-3) as usize;
    }
    eprintln!("preprocess: max diff {max_levels:.4} levels, {exact}/{} exact", ours.len());
    assert!(max_levels <= 1.0 + 1e-3, "max diff {max_levels} levels");
}

#[test]
fn adjust_bbox_matches_reference_crop_box() {
    let j = detect_json();
    let b = boxf64(&j["boxes"].as_array().unwrap()[0]).map(|v| v as f32);
    let got = preprocess::adjust_bbox(b, 512, 512, preprocess::MARGIN_PERCENT);
    let want = boxf64(&j["crop_box"]);
    for k in 0..4 {
        assert!((got[k] - want[k]).abs() < 1e-4, "{got:?} vs {want:?}");
    }
}

#[test]
fn adjust_bbox_grows_by_a_quarter_and_clamps() {
    let got = preprocess::adjust_bbox([10.0, 20.0, 50.0, 100.0], 1000, 1000, 50.0);
    assert_eq!(got, [0.0, 0.0, 60.0, 120.0]);
    let got = preprocess::adjust_bbox([100.0, 100.0, 140.0, 180.0], 150, 1000, 50.0);
    assert_eq!(got, [90.0, 80.0, 150.0, 200.0]);
}

#[test]
fn crop_truncates_and_pads_black() {
    assert_eq!(preprocess::truncate_box([1.9, -0.5, 3.99, 2.0]), [1, 0, 3, 2]);
    let img = RgbImage::from_fn(4, 3, image_px);
    let c = preprocess::crop(&img, [2, 1, 6, 3]).unwrap();
    assert_eq!((c.width(), c.height()), (4, 2));
    assert_eq!(c.get_pixel(0, 0).0, image_px(2, 1).0);
    assert_eq!(c.get_pixel(1, 1).0, image_px(3, 2).0);
    assert_eq!(c.get_pixel(2, 0).0, [0, 0, 0]);
    assert!(preprocess::crop(&img, [2, 1, 2, 3]).is_err());
}

fn image_px(x: u32, y: u32) -> facex::preprocess::Rgb<u8> {
    facex::preprocess::Rgb([(x * 10 + 1) as u8, (y * 10 + 2) as u8, 3])
}

#[test]
fn normalisation_is_imagenet() {
    let img = RgbImage::from_pixel(2, 1, facex::preprocess::Rgb([0, 128, 255]));
    let t = preprocess::to_normalized_tensor(&img).unwrap();
    assert_eq!(t.shape(), &[1, 3, 1, 2]);
    let v = t.to_f32_vec().unwrap();
    let want = [(0.0 - MEAN[0]) / STD[0], (128.0 / 255.0 - MEAN[1]) / STD[1], (1.0 - MEAN[2]) / STD[2]];
    for c in 0..3 {
        assert!((v[2 * c] - want[c]).abs() < 1e-6 && v[2 * c + 1] == v[2 * c]);
    }
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("facex-preprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("not-an-image.png");
    std::fs::write(&text, b"hello, this is not a PNG").unwrap();
    let e = preprocess::load_rgb(&text).unwrap_err().to_string();
    assert!(e.contains("not-an-image.png"), "{e}");

    let png = std::fs::read(fixture("astronaut.png")).unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 3]).unwrap();
    let e = preprocess::load_rgb(&truncated).unwrap_err().to_string();
    assert!(e.contains("truncated.png"), "{e}");

    // A JPEG cut short: the decoder would pad it with grey and return an image (it did, for the
    // first tenth of this one); PIL refuses it, and so do we, naming the file.
    let mut jpg = Vec::new();
    let rgb = preprocess::load_rgb(fixture("astronaut.png")).unwrap();
    rgb.write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).unwrap();
    for (name, cut) in [("tenth.jpg", jpg.len() / 10), ("half.jpg", jpg.len() / 2)] {
        let path = dir.join(name);
        std::fs::write(&path, &jpg[..cut]).unwrap();
        let e = preprocess::load_rgb(&path).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("truncated JPEG"), "{e}");
    }

    let missing = dir.join("missing.png");
    let e = preprocess::load_rgb(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.png"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn grey_and_rgba_become_rgb_like_pil() {
    let dir = std::env::temp_dir().join(format!("facex-preprocess-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 40 + y) as u8]));
    let p = dir.join("grey.png");
    grey.save(&p).unwrap();
    let rgb = preprocess::load_rgb(&p).unwrap();
    assert_eq!(rgb.get_pixel(2, 1).0, [81, 81, 81]);

    let rgba = image::RgbaImage::from_fn(3, 2, |x, _| image::Rgba([10, 20, 30, (x * 100) as u8]));
    let p = dir.join("rgba.png");
    rgba.save(&p).unwrap();
    let rgb = preprocess::load_rgb(&p).unwrap();
    // PIL's convert('RGB') drops alpha; it does not blend with a background.
    assert!(rgb.pixels().all(|px| px.0 == [10, 20, 30]));
    std::fs::remove_dir_all(&dir).ok();
}
