//! `facex data` end to end on small datasets written in their native layouts: counts, bad
//! records named by file, `--dump` outputs, and clear errors for unknown datasets and roots.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facex-data-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Exit code, stdout, stderr.
fn facex_data(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facex")).arg("data").args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn face(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, 128]))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_counts_samples_and_names_bad_records() {
    let root = tempdir("utk");
    face(40, 40).save(root.join("25_0_1_20170116174525125.jpg.chip.jpg")).unwrap();
    face(48, 48).save(root.join("61_1_3_20170109150557335.jpg.chip.jpg")).unwrap();
    // A name with the race missing (as in real copies): a bad annotation.
    face(40, 40).save(root.join("39_1_20170116174525125.jpg.chip.jpg")).unwrap();
    // A truncated JPEG: found only when decoded.
    let whole = root.join("30_0_0_20170117190000000.jpg.chip.jpg");
    face(40, 40).save(&whole).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&whole, &bytes[..bytes.len() / 3]).unwrap();

    let (code, out, err) = facex_data(&["check", "--dataset", "utkface", "--root", s(&root)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "utkface all: 2 samples (age_gender_race 3), 2 bad records (1 in the annotations, 1 failed to load)"
        ),
        "{out}"
    );
    let bad: Vec<&str> = out.lines().filter(|l| l.starts_with("  bad ")).collect();
    assert_eq!(bad.len(), 2, "{out}");
    assert!(bad.iter().any(|l| l.contains("39_1_20170116174525125.jpg.chip.jpg") && l.contains("3 fields")), "{out}");
    assert!(bad.iter().any(|l| l.contains("30_0_0_20170117190000000.jpg.chip.jpg")), "{out}");
    assert!(out.contains("total: 2 samples, 2 bad records"), "{out}");
}

/// A 300W `train` split with one face: 68 points (1-based in the file) spanning x, y in
/// [31, 71], so the 0-based tight box is [30, 30, 70, 70].
fn write_300w(root: &Path) {
    for d in ["afw", "helen/trainset", "lfpw/trainset"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    face(100, 100).save(root.join("afw/a.jpg")).unwrap();
    let mut pts = String::from("version: 1\nn_points:  68\n{\n");
    for k in 0..68 {
        let (x, y) = if k == 67 { (71, 71) } else { (31 + (k % 9) * 5, 31 + (k / 9) * 5) };
        pts += &format!("{x} {y}\n");
    }
    pts += "}\n";
    std::fs::write(root.join("afw/a.pts"), pts).unwrap();
}

#[test]
fn dump_writes_the_crop_with_points_and_the_targets() {
    let root = tempdir("300w");
    write_300w(&root);
    let out_dir = root.join("dump");
    // No --split: train is read, the splits whose folders are missing are skipped.
    let (code, out, err) =
        facex_data(&["check", "--dataset", "300w", "--root", s(&root), "--dump", "5", "--out", s(&out_dir)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("300w train: 1 samples (landmarks 1), 0 bad records"), "{out}");
    assert!(out.contains("dumped 1 samples"), "{out}");
    assert!(err.contains("split challenge") && err.contains("ibug"), "{err}");

    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("0.json")).unwrap()).unwrap();
    for key in ["task", "dataset", "source", "raw", "targets"] {
        assert!(j.get(key).is_some(), "no {key} in {j}");
    }
    assert_eq!(j["task"], "landmarks");
    assert_eq!(j["dataset"], "300w");
    assert!(j["source"].as_str().unwrap().ends_with("a.pts"));
    // raw: 0-based source pixels.
    assert_eq!(j["raw"]["points"][0], serde_json::json!([30.0, 30.0]));
    // Box [30, 30, 70, 70] grown by 10 on each side: crop [20, 20, 80, 80], 60 px -> 224.
    // (30 - 20 + 0.5) * 224 / 60 - 0.5 = 38.7 crop px; (2 * 38.7 + 1) / 224 - 1 = -0.65.
    let lm = j["targets"]["landmarks"].as_array().unwrap();
    assert_eq!(lm.len(), 68);
    for v in lm[0].as_array().unwrap() {
        assert!((v.as_f64().unwrap() + 0.65).abs() < 1e-5, "{}", lm[0]);
    }
    assert_eq!(j["crop_box"], serde_json::json!([20, 20, 80, 80]));

    let png = image::open(out_dir.join("0.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (224, 224));
    // The first point (38.7, 38.7) is drawn as a green dot around (39, 39).
    assert_eq!(*png.get_pixel(39, 39), Rgb([0, 255, 0]));
    assert!(!out_dir.join("1.png").exists());
}

#[test]
fn unknown_dataset_and_missing_root_are_clear_errors() {
    let root = tempdir("errors");
    let (code, _, err) = facex_data(&["check", "--dataset", "nosuch", "--root", s(&root)]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown dataset \"nosuch\"") && err.contains("utkface"), "{err}");

    let missing = root.join("not-here");
    let (code, _, err) = facex_data(&["check", "--dataset", "300w", "--root", s(&missing)]);
    assert_ne!(code, 0);
    assert!(err.contains(s(&missing)) && err.contains("not found"), "{err}");

    // The root exists but the asked split's folder does not: the error names it.
    write_300w(&root);
    let (code, _, err) = facex_data(&["check", "--dataset", "300w", "--root", s(&root), "--split", "challenge"]);
    assert_ne!(code, 0);
    assert!(err.contains("ibug"), "{err}");

    // A root with nothing of the dataset in it.
    let empty = tempdir("empty");
    let (code, _, err) = facex_data(&["check", "--dataset", "utkface", "--root", s(&empty)]);
    assert_ne!(code, 0);
    assert!(err.contains(s(&empty)), "{err}");
}

#[test]
fn synthetic_faces_check_clean_and_feed_the_bench() {
    let out = tempdir("synth");
    let (code, text, err) = facex_data(&["synth", "--out", s(&out), "--count", "10", "--seed", "3"]);
    assert_eq!(code, 0, "{text}\n{err}");
    // 10 faces: 8 train, 2 test (the first 80%).
    assert!(text.lines().any(|l| l.starts_with("300w ") && l.ends_with("8      2")), "{text}");
    let (code, text, err) = facex_data(&["check", "--dataset", "300w", "--root", s(&out.join("300w"))]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("300w train: 8 samples (landmarks 8), 0 bad records"), "{text}");
    assert!(text.contains("300w test: 2 samples (landmarks 2), 0 bad records"), "{text}");
    let (code, text, err) = facex_data(&["check", "--dataset", "utkface", "--root", s(&out.join("utkface"))]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("total: 8 samples, 0 bad records"), "{text}");
    let (code, text, err) = facex_data(&["check", "--dataset", "utkface", "--root", s(&out.join("utkface_test"))]);
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("total: 2 samples, 0 bad records"), "{text}");

    let (code, text, err) =
        facex_data(&["bench", "--dataset", "utkface", "--root", s(&out.join("utkface")), "--samples", "8"]);
    assert_eq!(code, 0, "{text}\n{err}");
    let rows: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).collect();
    assert_eq!(rows.len(), 2, "{text}");
    // threads, seconds, samples/s, samples/s per core, ms per batch: all positive.
    for row in rows {
        let v: Vec<f64> = row.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 5, "{row}");
        assert!(v.iter().all(|x| *x > 0.0), "{row}");
        assert!((v[2] / v[0] - v[3]).abs() < 0.1 + 1e-3 * v[3], "{row}");
    }
}
