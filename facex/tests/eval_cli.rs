//! `facex eval` end to end: random tiny weights from `facex init`, a small 300W set in its
//! native layout (`ibug/*.png` + `.pts`), the JSON report, and clear errors for bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facex-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn facex(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facex")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Tiny random weights (and the config JSON `init` writes beside them). The weights also carry
/// the config in their metadata: without the JSON they still load as the tiny model (4 decoder
/// heads, not the default 8).
fn weights(dir: &Path) -> PathBuf {
    let w = dir.join("tiny.safetensors");
    let (code, _, err) = facex(&["init", "--config", "tiny", "--seed", "3", s(&w)]);
    assert_eq!(code, 0, "{err}");
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&w, alone.join("w.safetensors")).unwrap();
    let (_, config) = facex::checkpoint::load_model_weights(alone.join("w.safetensors")).unwrap();
    assert_eq!(config, facex::model::FacexConfig::tiny());
    w
}

/// `root/ibug/face{i}.png` with a `.pts` of 68 points (1-based, as 300W writes them); one more
/// `.pts` with 67 points, which the reader must skip.
fn w300(root: &Path, faces: usize) {
    let dir = root.join("ibug");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..faces {
        let img = image::RgbImage::from_fn(120, 100, |x, y| image::Rgb([(x * 2) as u8, (y * 2) as u8, (i * 60) as u8]));
        img.save(dir.join(format!("face{i}.png"))).unwrap();
        let pts: Vec<String> = (0..68)
            .map(|k| format!("{} {}", 20.0 + (k % 12) as f32 * 7.0 + i as f32, 15.0 + (k / 12) as f32 * 12.0))
            .collect();
        let text = format!("version: 1\nn_points:  68\n{{\n{}\n}}\n", pts.join("\n"));
        std::fs::write(dir.join(format!("face{i}.pts")), text).unwrap();
    }
    let short: Vec<String> = (0..67).map(|k| format!("{k} {k}")).collect();
    std::fs::write(dir.join("short.pts"), format!("version: 1\nn_points: 67\n{{\n{}\n}}\n", short.join("\n"))).unwrap();
}

#[test]
fn eval_on_300w_writes_a_json_report() {
    let dir = tempdir("300w");
    let w = weights(&dir);
    let root = dir.join("300w");
    w300(&root, 3);
    let json_path = dir.join("report.json");
    let (code, out, err) = facex(&[
        "eval",
        "--weights",
        s(&w),
        "--dataset",
        "300w",
        "--root",
        s(&root),
        "--split",
        "challenge",
        "--json",
        s(&json_path),
        "--batch",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nme_percent") && out.contains("auc_0.1"), "{out}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let r = &j["reports"][0];
    assert_eq!(r["dataset"], "300w");
    assert_eq!(r["split"], "challenge");
    assert_eq!(
        (r["records"].as_u64(), r["evaluated"].as_u64(), r["reader_skipped"].as_u64()),
        (Some(3), Some(3), Some(1))
    );
    let lm = &r["landmarks"];
    assert_eq!(lm["images"], 3);
    for key in ["nme_percent", "failure_rate", "auc", "baseline_nme_percent"] {
        let v = lm[key].as_f64().unwrap_or_else(|| panic!("landmarks.{key} missing: {lm}"));
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    // A random model is far off: NME well above the 10% failure line, so every image fails.
    assert_eq!(lm["failure_rate"].as_f64(), Some(1.0));
    assert!(r.get("parsing").is_none());
    assert_eq!(j["scalars"]["300w/nme_percent"], lm["nme_percent"]);
    // --limit 1, and two datasets (the same one twice, one --split for both): two reports of
    // one record each, the second's scalars under the same names.
    let json2 = dir.join("two.json");
    let (code, out, err) = facex(&[
        "eval",
        "--weights",
        s(&w),
        "--dataset",
        "300w",
        "--root",
        s(&root),
        "--dataset",
        "300w",
        "--root",
        s(&root),
        "--split",
        "challenge",
        "--limit",
        "1",
        "--json",
        s(&json2),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("1 of 1 records evaluated").count(), 2, "{out}");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json2).unwrap()).unwrap();
    assert_eq!(j["reports"].as_array().unwrap().len(), 2);
    assert_eq!(j["reports"][1]["landmarks"]["images"], 1);
}

#[test]
fn eval_errors_name_what_is_wrong() {
    let dir = tempdir("errors");
    let w = weights(&dir);
    let root = dir.join("300w");
    w300(&root, 1);
    let check = |args: &[&str], needle: &str| {
        let (code, _, err) = facex(args);
        assert_ne!(code, 0, "{args:?} must fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let missing = dir.join("no-such-weights.safetensors");
    check(&["eval", "--weights", s(&missing), "--dataset", "300w", "--root", s(&root)], "no-such-weights.safetensors");
    let no_root = dir.join("no-such-root");
    check(&["eval", "--weights", s(&w), "--dataset", "300w", "--root", s(&no_root)], "no-such-root");
    check(&["eval", "--weights", s(&w), "--dataset", "300v", "--root", s(&root)], "300v");
    check(&["eval", "--weights", s(&w), "--dataset", "300w", "--root", s(&root), "--split", "val"], "val");
    check(&["eval", "--weights", s(&w)], "no --dataset");
    check(
        &["eval", "--weights", s(&w), "--dataset", "300w", "--dataset", "wflw", "--root", s(&root)],
        "one root per dataset",
    );
    // The test split needs helen/ and lfpw/ too: missing folders name themselves.
    check(&["eval", "--weights", s(&w), "--dataset", "300w", "--root", s(&root)], "helen");
}
