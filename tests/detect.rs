//! MTCNN face detection against facenet-pytorch's output on `tests/fixtures/detect/astronaut.png`
//! and on real multi-face, partial-face, grey and rotated photos
//! (`scripts/make-detect-fixtures.py`), and bad or unusual inputs.

use facex::detect::{Face, Mtcnn, MtcnnConfig};
use facex::preprocess::{self, image, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detect").join(name)
}

fn mtcnn() -> &'static Mtcnn {
    static M: OnceLock<Mtcnn> = OnceLock::new();
    M.get_or_init(|| Mtcnn::new_embedded().expect("embedded MTCNN weights load"))
}

fn nums(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn astronaut() -> RgbImage {
    preprocess::load_rgb(fixture("astronaut.png")).unwrap()
}

#[test]
fn astronaut_matches_facenet_pytorch() {
    let j =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(fixture("astronaut.detect.json")).unwrap())
            .unwrap();
    let img = astronaut();
    let faces = mtcnn().detect(&img).unwrap();
    let want_boxes = j["boxes"].as_array().unwrap();
    assert_eq!(faces.len(), want_boxes.len(), "{faces:?}");
    let (mut max_px, mut max_prob) = (0f64, 0f64);
    for (k, f) in faces.iter().enumerate() {
        let wb = nums(&want_boxes[k]);
        for (got, want) in f.bbox.iter().zip(&wb) {
            max_px = max_px.max((*got as f64 - want).abs());
        }
        let wl = j["landmarks5"].as_array().unwrap()[k].as_array().unwrap();
        for (p, wp) in f.landmarks.iter().zip(wl) {
            let wp = nums(wp);
            max_px = max_px.max((p[0] as f64 - wp[0]).abs()).max((p[1] as f64 - wp[1]).abs());
        }
        max_prob = max_prob.max((f.prob as f64 - j["probs"].as_array().unwrap()[k].as_f64().unwrap()).abs());
    }
    let crop = preprocess::adjust_bbox(faces[0].bbox, 512, 512, preprocess::MARGIN_PERCENT);
    let wc = nums(&j["crop_box"]);
    let crop_px = (0..4).map(|c| (crop[c] - wc[c]).abs()).fold(0.0, f64::max);
    eprintln!(
        "detect: max box/landmark diff {max_px:.3e} px, prob diff {max_prob:.3e}, crop_box diff {crop_px:.3e} px"
    );
    assert!(max_px <= 1.0, "box/landmark diff {max_px} px");
    assert!(max_prob <= 1e-3, "prob diff {max_prob}");
    assert!(crop_px <= 1.0, "crop_box diff {crop_px} px");
}

/// Largest errors of one photo against its facenet-pytorch fixture: (box/point px, prob).
/// Every expected face must be found (nearest box centre) and no face may be extra.
fn parity(name: &str, load: fn(&Path) -> RgbImage) -> (f64, f64) {
    let text = std::fs::read_to_string(fixture(&format!("{name}.detect.json"))).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let img = load(&fixture(j["image"].as_str().unwrap()));
    assert_eq!(
        (img.width() as u64, img.height() as u64),
        (j["width"].as_u64().unwrap(), j["height"].as_u64().unwrap())
    );
    let faces = mtcnn().detect(&img).unwrap();
    let want_boxes = j["boxes"].as_array().unwrap();
    let want_probs = nums(&j["probs"]);
    let want_points = j["landmarks5"].as_array().unwrap();
    if faces.len() != want_boxes.len() {
        eprintln!("{name}: {} faces, facenet-pytorch {}", faces.len(), want_boxes.len());
        return (f64::INFINITY, f64::INFINITY);
    }
    let (mut max_px, mut max_prob) = (0f64, 0f64);
    let mut used = vec![false; faces.len()];
    for (k, wb) in want_boxes.iter().enumerate() {
        let wb = nums(wb);
        let centre = |b: &[f64]| ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let (wx, wy) = centre(&wb);
        let dist = |f: &Face| {
            let (x, y) = centre(&f.bbox.map(f64::from));
            (x - wx).hypot(y - wy)
        };
        let i = (0..faces.len())
            .filter(|&i| !used[i])
            .min_by(|&a, &b| dist(&faces[a]).total_cmp(&dist(&faces[b])))
            .unwrap();
        used[i] = true;
        let f = &faces[i];
        for (got, want) in f.bbox.iter().zip(&wb) {
            max_px = max_px.max((*got as f64 - want).abs());
        }
        for (p, wp) in f.landmarks.iter().zip(want_points[k].as_array().unwrap()) {
            let wp = nums(wp);
            max_px = max_px.max((p[0] as f64 - wp[0]).abs()).max((p[1] as f64 - wp[1]).abs());
        }
        max_prob = max_prob.max((f.prob as f64 - want_probs[k]).abs());
    }
    eprintln!("{name}: {} faces, max box/point diff {max_px:.3e} px, prob diff {max_prob:.3e}", faces.len());
    (max_px, max_prob)
}

fn load_as_pil(path: &Path) -> RgbImage {
    facex::detect::load_rgb(path).unwrap()
}

/// The photos of `scripts/make-detect-fixtures.py`: six faces in a group, faces cut by the
/// left and right borders (one grey), a small face, a rotated face, two astronauts of which
/// facenet-pytorch finds only the uncut one, and two JPEGs as shipped (eight faces; a portrait
/// with a borderline second face).
#[test]
fn real_photos_match_facenet_pytorch() {
    let names = [
        "group",
        "partial-left",
        "partial-grey",
        "small-face",
        "rotated",
        "two-astronauts",
        "group-original",
        "portrait-second-face",
    ];
    let mut worst = Vec::new();
    for name in names {
        let (px, prob) = parity(name, load_as_pil);
        if px > 1.0 || prob > 1e-3 {
            worst.push(format!("{name}: {px:.3} px, prob {prob:.2e}"));
        }
    }
    assert!(worst.is_empty(), "beyond 1 px / 1e-3: {worst:?}");
}

/// JPEGs through the `image` crate's decoder (as `preprocess::load_rgb` reads them): printed,
/// not asserted, as the "before" of the libjpeg-turbo decoding (`facex::detect::load_rgb`).
#[test]
fn jpegs_through_the_image_crate_decoder_for_comparison() {
    for name in ["group-original", "portrait-second-face"] {
        let (px, prob) = parity(name, |p| preprocess::load_rgb(p).unwrap());
        eprintln!("  (image crate decoder) {name}: {px:.3} px, prob {prob:.2e}");
    }
}

#[test]
fn pnet_strips_give_the_same_faces() {
    // Tiny strips force the tiled PNet path on every pyramid level; it must change nothing.
    let img = astronaut();
    let whole = mtcnn().detect(&img).unwrap();
    let cfg = MtcnnConfig { pnet_tile_pixels: 4096, ..MtcnnConfig::default() };
    let tiled = Mtcnn::new_embedded().unwrap().with_config(cfg).detect(&img).unwrap();
    assert_eq!(whole, tiled);
}

#[test]
fn one_pixel_image_has_no_face() {
    let img = RgbImage::from_pixel(1, 1, image::Rgb([128, 128, 128]));
    assert!(mtcnn().detect(&img).unwrap().is_empty());
    let img = RgbImage::from_pixel(40, 7, image::Rgb([0, 0, 0]));
    assert!(mtcnn().detect(&img).unwrap().is_empty());
}

fn close(a: &[Face], b: &[Face], px: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.bbox.iter().zip(&b.bbox).all(|(x, y)| (x - y).abs() <= px))
}

#[test]
fn grey_and_rgba_files_work() {
    let dir = std::env::temp_dir().join(format!("facex-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = astronaut();
    // RGBA with an arbitrary alpha: alpha is dropped, so the faces are the RGB ones.
    let rgba = image::RgbaImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], (x % 256) as u8])
    });
    let p = dir.join("astronaut-rgba.png");
    rgba.save(&p).unwrap();
    let faces = mtcnn().detect_file(&p).unwrap();
    assert!(close(&faces, &mtcnn().detect(&img).unwrap(), 0.0));

    let grey = image::DynamicImage::ImageRgb8(img).to_luma8();
    let p = dir.join("astronaut-grey.png");
    grey.save(&p).unwrap();
    let faces = mtcnn().detect_file(&p).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(faces[0].prob > 0.9);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_image_file_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("facex-detect-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("notes.jpg");
    std::fs::write(&p, b"plain text, not a JPEG").unwrap();
    let e = mtcnn().detect_file(&p).unwrap_err().to_string();
    assert!(e.contains("notes.jpg"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A large image: the astronaut tiled onto a 2400x1800 canvas (smaller than a 8000x6000 photo,
/// to keep the suite fast; `huge_image_8000x6000` below runs the full size on request).
#[test]
fn large_image_runs_in_strips() {
    let faces = detect_on_canvas(2400, 1800);
    assert!(!faces.is_empty());
}

/// Peak resident memory of this test process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[test]
fn huge_image_8000x6000_in_bounded_memory() {
    // About 12 s and 1.3 GB on 2 cores: PNet runs in strips, so memory does not scale with
    // the first pyramid level's activations (10 x 4800 x 3600 floats per channel group).
    let faces = detect_on_canvas(8000, 6000);
    assert!(!faces.is_empty());
    let peak = peak_rss_mib();
    assert!(peak < 3072.0, "peak RSS {peak:.0} MiB (the other tests of this binary share it)");
}

fn detect_on_canvas(w: u32, h: u32) -> Vec<Face> {
    let face = astronaut();
    let mut canvas = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 7 % 256) as u8, (y / 5 % 256) as u8, 90]));
    image::imageops::replace(&mut canvas, &face, (w / 3) as i64, (h / 3) as i64);
    mtcnn().detect(&canvas).unwrap()
}

#[test]
fn from_dir_loads_the_same_weights() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("facex/models/mtcnn");
    let img = astronaut();
    let faces = Mtcnn::from_dir(&dir).unwrap().detect(&img).unwrap();
    assert_eq!(faces, mtcnn().detect(&img).unwrap());
    let e = Mtcnn::from_dir(dir.join("no-such-dir")).err().expect("missing weights are an error").to_string();
    assert!(e.contains("pnet.pt"), "{e}");
}
