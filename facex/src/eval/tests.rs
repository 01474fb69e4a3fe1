//! `evaluate` end to end on in-memory records of every task with a tiny random model: its
//! report equals the metrics computed directly from the same model's outputs.

use super::metrics as m;
use super::*;
use crate::model::FacexConfig;
use data::{CropFrom, ImageSource, Label, MaskSource, Record};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::sync::Arc;

fn image(seed: u32) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(96, 80, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) ^ (x * y + seed);
        Rgb([(v % 251) as u8, (v * 3 % 241) as u8, (v * 5 % 239) as u8])
    }))
}

fn record(seed: u32, crop: CropFrom, label: Label) -> Record {
    Record {
        dataset: "memory",
        image: ImageSource::Memory(image(seed)),
        source: format!("memory:{seed}"),
        crop,
        label,
        raw: serde_json::Value::Null,
    }
}

/// 68 points spread over the face box (10..86, 10..70), eye corners 36 and 45 apart.
fn shape(shift: f32) -> Vec<[f32; 2]> {
    (0..68).map(|i| [10.0 + (i % 12) as f32 * 6.5 + shift, 10.0 + (i / 12) as f32 * 11.0]).collect()
}

fn dataset() -> Dataset {
    let mask = GrayImage::from_fn(96, 80, |x, y| Luma([((x / 10 + y / 16) % 11) as u8]));
    let mut coincident = shape(0.0);
    coincident[45] = coincident[36];
    let records = vec![
        record(1, CropFrom::WholeImage, Label::Parsing(MaskSource::Memory(Arc::new(mask.clone())))),
        record(2, CropFrom::Points, Label::Landmarks { points: shape(0.0) }),
        record(3, CropFrom::Points, Label::Landmarks { points: shape(3.0) }),
        record(4, CropFrom::Points, Label::Landmarks { points: coincident }),
        record(5, CropFrom::WholeImage, Label::HeadPose { pitch_yaw_roll: [0.1, -0.4, 0.2], points: None }),
        // Yaw 2 rad = 114.6 degrees: dropped by the AFLW2000 rule.
        record(6, CropFrom::WholeImage, Label::HeadPose { pitch_yaw_roll: [0.0, 2.0, 0.0], points: None }),
        record(7, CropFrom::WholeImage, Label::Attributes { values: std::array::from_fn(|i| (i % 3 == 0) as u8) }),
        record(8, CropFrom::WholeImage, Label::AgeGenderRace { age_bin: 3, gender: 1, race: 4 }),
        record(9, CropFrom::WholeImage, Label::AgeGenderRace { age_bin: 6, gender: 0, race: 2 }),
        record(
            10,
            CropFrom::Box([20.0, 10.0, 80.0, 70.0]),
            Label::Visibility {
                points: shape(0.0)[..29].to_vec(),
                occluded: (0..29).map(|i| (i % 4 == 0) as u8).collect(),
            },
        ),
        Record {
            image: ImageSource::File("/nonexistent/eval-test.png".into()),
            source: "missing.txt:7".into(),
            ..record(11, CropFrom::WholeImage, Label::Attributes { values: [0; 40] })
        },
    ];
    Dataset { name: "memory", split: "test".into(), records, bad: vec![] }
}

#[test]
fn evaluate_matches_the_metrics_of_the_models_outputs() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 7).unwrap();
    let ds = dataset();
    // Batches of 4 with skips inside them: rows must still line up with their targets.
    let report = evaluate(&model, &ds, &EvalOptions { batch_size: 4, limit: None }).unwrap();

    // The same samples, one batch, scored here directly.
    let samples: Vec<_> = ds.records[..10].iter().map(|r| r.load().unwrap()).collect();
    let batch = data::Batch::collate(&samples).unwrap();
    let out = forward_heads(&model, &batch.input).unwrap();
    let t = |i: usize| &samples[i].target;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());

    assert_eq!((report.records, report.evaluated, report.reader_skipped), (11, 9, 0));
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(skipped, ["memory:4", "missing.txt:7"]);
    assert!(report.skipped[0].reason.contains("coincide"), "{}", report.skipped[0].reason);
    assert!(report.skipped[1].reason.contains("eval-test.png"), "{}", report.skipped[1].reason);

    // Parsing: one image, dataset-level counts of the argmax.
    let data::Target::Parsing { mask } = t(0) else { panic!() };
    let mut counts = m::ParsingCounts::default();
    counts.add(&m::argmax_classes(out.row(0).segmentation, 11, 224 * 224).unwrap(), mask).unwrap();
    let p = report.parsing.as_ref().unwrap();
    assert_eq!(p.per_class[3].tp, counts.tp[3]);
    assert!(close(p.mean_f1_fg.unwrap(), counts.mean_f1_fg().unwrap()));
    let mut skin = m::ParsingCounts::default();
    skin.add(&vec![1; mask.len()], mask).unwrap();
    assert!(close(p.baseline_mean_f1_fg.unwrap(), skin.mean_f1_fg().unwrap()));
    // Skin everywhere: only skin can score, so the mean over the 10 present classes is F1(skin)/10.
    assert!(close(p.baseline_mean_f1_fg.unwrap(), skin.f1(1).unwrap() / 10.0));

    // Landmarks: two images (the third was skipped).
    let gts: Vec<Vec<[f64; 2]>> = [1, 2]
        .map(|i| match t(i) {
            data::Target::Landmarks { points } => points.iter().map(|p| [p[0] as f64, p[1] as f64]).collect(),
            _ => panic!(),
        })
        .to_vec();
    let nme: Vec<f64> = [1, 2]
        .iter()
        .zip(&gts)
        .map(|(&i, g)| m::nme_interocular(&m::landmarks_from_output(out.row(i).landmarks), g).unwrap())
        .collect();
    let l = report.landmarks.as_ref().unwrap();
    assert_eq!(l.images, 2);
    assert!(close(l.nme_percent, 50.0 * (nme[0] + nme[1])));
    let ced = m::ced(&nme, 0.1).unwrap();
    assert!(close(l.failure_rate, ced.failure_rate) && close(l.auc, ced.auc));
    let mean = m::mean_shape(&gts).unwrap();
    let base = (m::nme_interocular(&mean, &gts[0]).unwrap() + m::nme_interocular(&mean, &gts[1]).unwrap()) * 50.0;
    assert!(close(l.baseline_nme_percent, base));

    // Pose: one kept, one dropped; the mean pose of one sample is exact: baseline 0.
    let hp = report.head_pose.as_ref().unwrap();
    assert_eq!((hp.images, hp.dropped_out_of_range), (2, 1));
    let pred = out.row(4).pose;
    let mae = hp.mae_deg.unwrap();
    assert!(close(mae.pitch, (pred[0] as f64 - 0.1f32 as f64).abs().to_degrees()));
    assert!(close(mae.yaw, (pred[1] as f64 + 0.4f32 as f64).abs().to_degrees()));
    assert!(close(mae.mean, (mae.pitch + mae.yaw + mae.roll) / 3.0));
    assert_eq!(hp.baseline_mae_deg.unwrap().mean, 0.0);

    // Attributes: one sample; the majority of one sample is itself: baseline 1.
    let data::Target::Attributes { values } = t(6) else { panic!() };
    let acc = m::attribute_accuracy(out.row(6).attributes, values, 40).unwrap().unwrap();
    let a = report.attributes.as_ref().unwrap();
    assert!(close(a.mean_accuracy, acc.iter().sum::<f64>() / 40.0));
    assert_eq!(a.per_attribute[5].accuracy, acc[5]);
    assert_eq!(a.baseline_mean_accuracy, 1.0);

    // Age, gender, race: two samples with different labels, majority baseline 1/2.
    let agr = report.age_gender_race.as_ref().unwrap();
    let gender = m::accuracy(&[m::argmax(out.row(7).gender), m::argmax(out.row(8).gender)], &[1, 0]).unwrap();
    assert_eq!(agr.gender.as_ref().unwrap().accuracy, gender.unwrap());
    let age = m::accuracy(&[m::argmax(out.row(7).age), m::argmax(out.row(8).age)], &[3, 6]).unwrap();
    assert_eq!(agr.age.as_ref().unwrap().accuracy, age.unwrap());
    assert_eq!(agr.race.as_ref().unwrap().baseline, 0.5);

    // Visibility: 29 points, 8 occluded (i % 4 == 0).
    let scores: Vec<f64> = out.row(9).visibility.iter().map(|&l| m::sigmoid(l)).collect();
    let flags: Vec<bool> = (0..29).map(|i| i % 4 == 0).collect();
    let r = m::recall_at_precision(&scores, &flags, 0.8).unwrap();
    let v = report.visibility.as_ref().unwrap();
    assert_eq!((v.result.recall, v.result.reached, v.result.positives), (r.recall, r.reached, 8));
    // A constant score: precision 8/29 < 0.8 -> not reached.
    assert!(!v.baseline.reached);

    // The flat scalars and the table carry the same numbers.
    let scalars = report.scalars();
    let get = |k: &str| scalars.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("memory/nme_percent"), Some(l.nme_percent));
    assert_eq!(get("memory/mae_mean_deg"), Some(mae.mean));
    assert_eq!(get("memory/gender_accuracy"), gender);
    assert!(scalars.iter().all(|(_, v)| v.is_finite()));
    let table = report.table();
    assert!(table.contains("nme_percent") && table.contains(&format!("{:.4}", l.nme_percent)), "{table}");
    assert!(table.contains("1 samples beyond +-99 degrees dropped"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["landmarks"]["images"], 2);
    assert_eq!(json["parsing"]["per_class"][0]["class"], "background");
}

#[test]
fn limit_and_bad_options() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 7).unwrap();
    let ds = dataset();
    let report = evaluate(&model, &ds, &EvalOptions { batch_size: 8, limit: Some(1) }).unwrap();
    assert_eq!((report.records, report.evaluated), (1, 1));
    assert!(report.parsing.is_some() && report.landmarks.is_none());
    assert!(report.table().contains("1 of 1 records evaluated"));
    let err = evaluate(&model, &ds, &EvalOptions { batch_size: 0, limit: None }).unwrap_err();
    assert!(err.to_string().contains("batch size 0"));
}
