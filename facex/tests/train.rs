//! `facex::train::run`: a run is reproducible and resumable bit for bit, refuses to overwrite a
//! run, stops on a non-finite loss without corrupting its checkpoint, and leaves weights that
//! `facex analyze --weights` loads.
//! The datasets are written by the test in their native layouts: 300W (`.pts`) for landmarks and
//! UTKFace (labels in the file name) for age, gender and race, so batches mix two task groups.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use facex::train::config::TrainConfig;
use facex::train::run::{build_model, train, RunOptions};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facex-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 96x96 image with a bright ellipse (the "face") and some texture.
fn face_image(seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(96, 96, |x, y| {
        let (dx, dy) = (x as f32 - 48.0, y as f32 - 50.0);
        let inside = (dx / 28.0).powi(2) + (dy / 36.0).powi(2) < 1.0;
        let t = ((x * 7 + y * 13 + seed * 31) % 50) as u8;
        if inside {
            image::Rgb([200 + t / 2, 160 + t / 3, 140])
        } else {
            image::Rgb([t, 40 + t, 90])
        }
    })
}

/// 68 points on the ellipse and inside it, 1-based as .pts files are.
fn pts_file(seed: u32) -> String {
    let mut s = String::from("version: 1\nn_points:  68\n{\n");
    for i in 0..68 {
        let a = i as f32 / 68.0 * std::f32::consts::TAU + seed as f32 * 0.01;
        let r = if i < 17 { 1.0 } else { 0.5 };
        s += &format!("{:.3} {:.3}\n", 49.0 + 28.0 * r * a.cos(), 51.0 + 36.0 * r * a.sin());
    }
    s + "}\n"
}

fn write_datasets(root: &Path) {
    for (k, dir) in ["afw", "helen/trainset", "lfpw/trainset"].iter().enumerate() {
        let d = root.join("300w").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..2 {
            let seed = (k * 2 + i) as u32;
            face_image(seed).save(d.join(format!("img{i}.png"))).unwrap();
            std::fs::write(d.join(format!("img{i}.pts")), pts_file(seed)).unwrap();
        }
    }
    let d = root.join("utkface");
    std::fs::create_dir_all(&d).unwrap();
    for (i, name) in
        ["25_1_2_20170116174525125", "61_0_0_20170117120000001", "8_1_3_20170109150557335"].iter().enumerate()
    {
        face_image(10 + i as u32).save(d.join(format!("{name}.jpg.chip.jpg"))).unwrap();
    }
}

fn config(root: &Path, extra: &str) -> TrainConfig {
    let text = format!(
        r#"
[model]
config = "tiny"
seed = 3

[optimizer]
lr = 1e-3
epochs = 1

[train]
batch_size = 2
seed = 11
log_every = 1
checkpoint_every = 100
eval_every = 0
{extra}

[[dataset]]
reader = "300w"
root = "300w"
split = "train"

[[dataset]]
reader = "utkface"
root = "utkface"
split = "all"
weight = 0.5
"#
    );
    let path = root.join("train.toml");
    std::fs::write(&path, text).unwrap();
    TrainConfig::from_file(&path).unwrap()
}

fn run(cfg: &TrainConfig, out: &Path, steps: u64, resume: bool) -> Result<facex::train::run::Summary, String> {
    let opts = RunOptions { out: out.to_path_buf(), steps: Some(steps), resume, progress: false };
    train(cfg, &opts, &AtomicBool::new(false))
}

#[test]
fn n_steps_equal_half_then_resume_then_half_bit_for_bit() {
    let root = temp_dir("resume");
    write_datasets(&root);
    let cfg = config(&root, "");
    let (one, two) = (root.join("one"), root.join("two"));
    let whole = run(&cfg, &one, 4, false).unwrap();
    assert_eq!(whole.steps_done, 4);
    assert_eq!(run(&cfg, &two, 2, false).unwrap().steps_done, 2);
    // Resuming with a config that would compute another run (a different batch size) is refused,
    // naming the key, before anything in the folder changes; a different checkpoint interval (it
    // changes when files are written, not what is computed) is fine.
    let saved = std::fs::read(two.join("last.ckpt")).unwrap();
    let mut other = cfg.clone();
    other.train.batch_size += 1;
    let e = run(&other, &two, 4, true).unwrap_err();
    assert!(e.contains("--resume") && e.contains("train.batch_size"), "{e}");
    assert_eq!(std::fs::read(two.join("last.ckpt")).unwrap(), saved);
    let mut every_step = cfg.clone();
    every_step.train.checkpoint_every = 1;
    assert_eq!(run(&every_step, &two, 4, true).unwrap().steps_done, 4);

    let a = std::fs::read(one.join("weights.safetensors")).unwrap();
    let b = std::fs::read(two.join("weights.safetensors")).unwrap();
    assert!(a == b, "weights differ after resume");
    let a = std::fs::read(one.join("last.ckpt")).unwrap();
    let b = std::fs::read(two.join("last.ckpt")).unwrap();
    assert!(a == b, "checkpoints (weights, moments, progress) differ after resume");
    // The logs agree too: one line per step, the same losses.
    let log = |d: &Path| std::fs::read_to_string(d.join("log.jsonl")).unwrap();
    let strip = |s: String| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("samples_per_s");
                v
            })
            .collect()
    };
    let (la, lb) = (strip(log(&one)), strip(log(&two)));
    assert_eq!(la.len(), 4);
    assert_eq!(la, lb);
    // Batches mix the two task groups; each logged step names its tasks and losses.
    let tasks: Vec<String> =
        la.iter().flat_map(|v| v["tasks"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()).collect();
    assert!(tasks.contains(&"landmarks".to_string()) && tasks.contains(&"age_gender_race".to_string()), "{tasks:?}");
    assert!(la.iter().all(|v| v["total"].as_f64().unwrap().is_finite() && v["lr"].as_f64() == Some(1e-3)));

    // The weights load as `facex analyze --weights` loads them (config from shapes + config.json),
    // and carry their config: copied alone, without config.json, they still load as the tiny
    // model (4 decoder heads, which no shape shows), not with the official default of 8.
    let (sd, found) = facex::checkpoint::load_model_weights(one.join("weights.safetensors")).unwrap();
    assert_eq!(found, cfg.model_config().unwrap());
    assert!(facex::model::FaceXFormer::from_state_dict(&found, &sd).is_ok());
    let alone = root.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(one.join("weights.safetensors"), alone.join("w.safetensors")).unwrap();
    let (_, found) = facex::checkpoint::load_model_weights(alone.join("w.safetensors")).unwrap();
    assert_eq!((found.decoder.heads, &found), (4, &cfg.model_config().unwrap()));

    // A second run into the same folder is refused rather than overwriting it.
    let e = run(&cfg, &one, 4, false).unwrap_err();
    assert!(e.contains("--resume"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_its_checkpoint() {
    let root = temp_dir("nan");
    write_datasets(&root);
    let out = root.join("out");
    // An absurd learning rate sends the weights to infinity after the first step, whose
    // checkpoint (written every step here) must survive the failure untouched.
    config(&root, "");
    let text = std::fs::read_to_string(root.join("train.toml"))
        .unwrap()
        .replace("lr = 1e-3", "lr = 1e30")
        .replace("checkpoint_every = 100", "checkpoint_every = 1");
    std::fs::write(root.join("train.toml"), text).unwrap();
    let cfg = TrainConfig::from_file(&root.join("train.toml")).unwrap();
    let e = run(&cfg, &out, 6, false).unwrap_err();
    assert!(e.contains("step") && (e.contains("loss is") || e.contains("gradient of")), "{e}");
    assert!(e.contains("nothing saved") && e.contains("last checkpoint: step 1"), "{e}");
    let ckpt = std::fs::read(out.join("last.ckpt")).unwrap();
    let meta = facex::checkpoint::safetensors_metadata(&ckpt, "last.ckpt").unwrap();
    assert!(meta.values().any(|v| v.contains("\"step\":1")), "{meta:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `lr_scale = 0` freezes: the backbone's weights stay the initial ones to the bit, it gets no
/// AdamW moments (no gradient was computed for it), and the rest of the model trains.
#[test]
fn a_frozen_backbone_keeps_its_weights_and_gets_no_gradient() {
    let root = temp_dir("frozen");
    write_datasets(&root);
    let cfg = config(&root, "[optimizer.lr_scale]\n\"backbone\" = 0");
    let (one, three) = (root.join("one"), root.join("three"));
    run(&cfg, &one, 1, false).unwrap();
    run(&cfg, &three, 3, false).unwrap();
    let load = |d: &Path| facex::checkpoint::load_safetensors(d.join("last.ckpt")).unwrap();
    let (a, b) = (load(&one), load(&three));
    let (mut frozen, mut trained, mut changed) = (0, 0, 0);
    for (key, t) in a.iter().filter(|(k, _)| k.starts_with("model.")) {
        let name = &key["model.".len()..];
        let same = t.to_f32_vec().unwrap() == b.get(key).unwrap().to_f32_vec().unwrap();
        if name.starts_with("backbone") {
            assert!(same, "{name} changed although frozen");
            assert!(!b.contains(&format!("adam.m.{name}")), "{name} has moments although frozen");
            frozen += 1;
        } else if b.contains(&format!("adam.m.{name}")) {
            trained += 1;
            changed += usize::from(!same);
        }
    }
    assert!(frozen > 20 && trained > 20, "{frozen} frozen, {trained} trained");
    assert!(changed * 10 > trained * 9, "only {changed} of {trained} trained parameters changed");
    let _ = std::fs::remove_dir_all(&root);
}

/// Fine-tuning loads every entry of the weights file, buffers included; `model.reinit` keeps the
/// named parameters at their random initialisation: the decoder equals a fresh model's,
/// everything else the loaded weights, bit for bit.
#[test]
fn reinit_keeps_a_fresh_decoder_and_loads_the_rest() {
    let root = temp_dir("reinit");
    write_datasets(&root);
    let trained = root.join("trained");
    run(&config(&root, ""), &trained, 2, false).unwrap();
    let weights = trained.join("weights.safetensors");
    let with_reinit = |reinit: &[&str]| {
        let mut cfg = config(&root, "");
        cfg.model.init = "finetune".into();
        cfg.model.weights = Some(weights.clone());
        cfg.model.seed = 5;
        cfg.model.reinit = reinit.iter().map(|s| s.to_string()).collect();
        cfg
    };
    let loaded = build_model(&with_reinit(&[])).unwrap();
    // Every entry of the file, buffers included (the decoder's positional-encoding matrix is one,
    // and the fine-tuned model's seed 5 would draw another), is what the fine-tuned model holds.
    let (file, _) = facex::checkpoint::load_model_weights(&weights).unwrap();
    let held = loaded.state_dict();
    for (name, t) in file.iter() {
        let h = held.get(name).unwrap_or_else(|| panic!("{name}: not in the model"));
        assert_eq!(h.to_f32_vec().unwrap(), t.to_f32_vec().unwrap(), "{name}: not the file's value");
    }
    assert!(file.contains("pe_layer.positional_encoding_gaussian_matrix"));
    let fresh_decoder = build_model(&with_reinit(&["face_decoder"])).unwrap();
    let scratch = facex::model::FaceXFormer::new_random(&facex::model::FacexConfig::tiny(), 5).unwrap();
    let values = |m: &facex::model::FaceXFormer| -> Vec<(String, Vec<f32>)> {
        m.named_parameters().into_iter().map(|(n, p)| (n, p.value().to_f32_vec().unwrap())).collect()
    };
    let (loaded, fresh_decoder, scratch) = (values(&loaded), values(&fresh_decoder), values(&scratch));
    let mut decoder = 0;
    for ((name, l), ((_, f), (_, s))) in loaded.iter().zip(fresh_decoder.iter().zip(&scratch)) {
        if name.starts_with("face_decoder") {
            assert_eq!(f, s, "{name}: not the fresh initialisation");
            decoder += usize::from(f != l);
        } else {
            assert_eq!(f, l, "{name}: not the loaded weights");
        }
    }
    assert!(decoder > 20, "only {decoder} decoder parameters differ from the loaded ones");
    let Err(bad) = build_model(&with_reinit(&["face_decoderr"])) else {
        panic!("a prefix of no parameter was accepted")
    };
    assert!(bad.contains("face_decoderr"), "{bad}");
    let _ = std::fs::remove_dir_all(&root);
}
