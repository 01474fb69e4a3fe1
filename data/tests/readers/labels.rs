//! The label readers (CelebA, UTKFace, FairFace): parsed values, mappings, bad records, crops.

use crate::common::*;
use data::datasets::{celeba, fairface, utkface};
use data::{CropFrom, Label, Record};

fn attributes(rec: &Record) -> [u8; 40] {
    match &rec.label {
        Label::Attributes { values } => *values,
        other => panic!("not attributes: {other:?}"),
    }
}

fn agr(rec: &Record) -> (u8, u8, u8) {
    match &rec.label {
        Label::AgeGenderRace { age_bin, gender, race } => (*age_bin, *gender, *race),
        other => panic!("not age/gender/race: {other:?}"),
    }
}

#[test]
fn celeba_aligned_attributes_partition_and_bad_rows() {
    let t = TempDir::new("celeba");
    let every_third: Vec<i32> = (0..40).map(|k| if k % 3 == 0 { 1 } else { -1 }).collect();
    let male: Vec<i32> = (0..40).map(|k| if k == 20 { 1 } else { -1 }).collect();
    let mut zero = male.clone();
    zero[5] = 0;
    let rows = [
        ("000001.jpg", every_third.clone()),
        ("000002.jpg", male),
        ("000003.jpg", every_third[..39].to_vec()),
        ("000004.jpg", zero),
        ("000005.jpg", every_third.clone()),
        ("000006.jpg", every_third),
    ];
    write(&t.join("Anno/list_attr_celeba.txt"), celeba_attr_text(CELEBA_ATTRIBUTES, &rows));
    let part = [("000001.jpg", 0), ("000002.jpg", 2), ("000003.jpg", 0), ("000004.jpg", 0), ("000005.jpg", 0)];
    write(&t.join("Eval/list_eval_partition.txt"), celeba_partition_text(&part));
    let marks = [("000001.jpg", [69, 109, 106, 113, 77, 142, 73, 152, 108, 154])];
    write(&t.join("Anno/list_landmarks_align_celeba.txt"), celeba_landmarks_text(&marks));
    for n in 1..=4 {
        write_rgb(&t.join(&format!("img_align_celeba/{n:06}.jpg")), 36, 44);
    }

    let ds = celeba::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 1);
    let rec = &ds.records[0];
    let v = attributes(rec);
    assert_eq!((v[0], v[1], v[2], v[3], v[39]), (1, 0, 0, 1, 1));
    assert_eq!(v.iter().map(|&x| x as u32).sum::<u32>(), 14);
    assert_eq!(rec.raw["attributes"][0], 1);
    assert_eq!(rec.raw["attributes"][1], -1);
    assert_eq!(rec.raw["landmarks"][2], serde_json::json!([77, 142]));
    assert_eq!(rec.raw["image"], "img_align_celeba/000001.jpg");
    assert_eq!(rec.crop, CropFrom::WholeImage);
    assert!(rec.source.ends_with("list_attr_celeba.txt:3"), "{}", rec.source);
    // Count line 1, names line 2, rows from line 3: 000003 on 5 ... 000006 on 8.
    let bad: Vec<(&str, &str)> = ds.bad.iter().map(|b| (b.source.as_str(), b.reason.as_str())).collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad[0].0.ends_with(":5") && bad[0].1.contains("40 integers"), "{bad:?}");
    assert!(bad[1].0.ends_with(":6") && bad[1].1.contains("-1/1"), "{bad:?}");
    assert!(bad[2].0.ends_with(":7") && bad[2].1.contains("000005.jpg"), "{bad:?}");
    assert!(bad[3].0.ends_with(":8") && bad[3].1.contains("list_eval_partition.txt"), "{bad:?}");

    let test = celeba::read(t.path(), "test").unwrap();
    assert_eq!(test.records.len(), 1);
    let v = attributes(&test.records[0]);
    assert_eq!((v[20], v.iter().map(|&x| x as u32).sum::<u32>()), (1, 1));
    let s = test.records[0].load().unwrap();
    assert_eq!((s.crop_box, s.image.dimensions()), ([0, 0, 36, 44], (224, 224)));

    // Names out of CelebA's order are fatal, naming the line.
    let swapped = CELEBA_ATTRIBUTES.replace("Male ", "TMP ").replace("Young", "Male").replace("TMP ", "Young ");
    write(&t.join("Anno/list_attr_celeba.txt"), celeba_attr_text(&swapped, &rows));
    let err = celeba::read(t.path(), "train").unwrap_err().to_string();
    assert!(err.contains("list_attr_celeba.txt:2") && err.contains("\"Young\""), "{err}");
    std::fs::remove_file(t.join("Anno/list_attr_celeba.txt")).unwrap();
    let err = celeba::read(t.path(), "train").unwrap_err().to_string();
    assert!(err.contains("list_attr_celeba.txt"), "{err}");
}

#[test]
fn celeba_in_the_wild_crops_at_the_box() {
    let t = TempDir::new("celeba-wild");
    let ones = vec![1; 40];
    write(
        &t.join("list_attr_celeba.txt"),
        celeba_attr_text(CELEBA_ATTRIBUTES, &[("000001.jpg", ones.clone()), ("000002.jpg", ones)]),
    );
    write(&t.join("list_eval_partition.txt"), celeba_partition_text(&[("000001.jpg", 0), ("000002.jpg", 0)]));
    write(&t.join("list_bbox_celeba.txt"), celeba_bbox_text(&[("000001.jpg", [95, 71, 226, 313])]));
    write_rgb(&t.join("Img/img_celeba/000001.jpg"), 400, 400);
    write_rgb(&t.join("Img/img_celeba/000002.jpg"), 400, 400);
    let ds = celeba::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 1);
    let rec = &ds.records[0];
    assert_eq!(rec.crop, CropFrom::Box([95.0, 71.0, 321.0, 384.0]));
    assert_eq!(rec.raw["bbox"], serde_json::json!([95, 71, 226, 313]));
    assert!(rec.raw.get("landmarks").is_none());
    assert!(ds.bad.len() == 1 && ds.bad[0].reason.contains("no usable box for 000002.jpg"), "{:?}", ds.bad);
    // Grown by 56.5 / 78.25 and clamped to 400x400.
    assert_eq!(rec.load().unwrap().crop_box, [38, 0, 377, 400]);
}

#[test]
fn utkface_names_to_bins_and_model_races() {
    let t = TempDir::new("utkface");
    let good = [
        ("25_1_2_20170116174525125.jpg.chip.jpg", (2, 1, 3), 2),
        ("75_0_3_20170109150557335.jpg.chip.jpg", (7, 0, 2), 3),
        ("9_0_0_20170110224238891.jpg", (0, 0, 0), 0),
        ("116_1_4_20170110224238891.jpg.chip.jpg", (7, 1, 4), 4),
        ("61_1_1_20170110224238891.jpg.chip.jpg", (6, 1, 1), 1),
    ];
    let bad = [
        "39_1_20170116174525125.jpg.chip.jpg",
        "130_0_0_20170110224238891.jpg.chip.jpg",
        "20_2_0_20170110224238891.jpg.chip.jpg",
        "20_0_5_20170110224238891.jpg.chip.jpg",
    ];
    for name in good.iter().map(|g| g.0).chain(bad) {
        write_rgb(&t.join(&format!("UTKFace/{name}")), 40, 50);
    }
    write(&t.join("UTKFace/notes.txt"), "not an image");
    truncate(&t.join("UTKFace/61_1_1_20170110224238891.jpg.chip.jpg"), 20);

    let ds = utkface::read(t.path(), "all").unwrap();
    assert_eq!(ds.records.len(), 5);
    for (name, labels, race_as_written) in good {
        let rec = ds.records.iter().find(|r| r.raw["file"] == name).unwrap();
        assert_eq!(agr(rec), labels, "{name}");
        assert_eq!(rec.raw["race"], race_as_written, "{name}");
        assert_eq!(rec.crop, CropFrom::WholeImage);
    }
    let rec = ds.records.iter().find(|r| r.raw["file"] == good[0].0).unwrap();
    assert_eq!((rec.raw["age"].as_u64(), rec.raw["gender"].as_u64()), (Some(25), Some(1)));
    let mut reasons: Vec<String> = ds.bad.iter().map(|b| b.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("3 fields"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("age \"130\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("gender \"2\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("race \"5\"")), "{reasons:?}");
    assert!(ds.bad.iter().any(|b| b.source.ends_with("39_1_20170116174525125.jpg.chip.jpg")));

    let s = rec.load().unwrap();
    assert_eq!((s.crop_box, s.image.dimensions()), ([0, 0, 40, 50], (224, 224)));
    let truncated = ds.records.iter().find(|r| r.raw["file"] == good[4].0).unwrap();
    let err = truncated.load().unwrap_err().to_string();
    assert!(err.contains("61_1_1_20170110224238891.jpg.chip.jpg"), "{err}");

    assert!(utkface::read(t.path(), "train").is_err());
}

#[test]
fn fairface_groups_and_races_to_model_bins() {
    let t = TempDir::new("fairface");
    let csv = "file,age,gender,race,service_test\n\
        train/1.jpg,50-59,Male,East Asian,True\n\
        train/2.jpg,0-2,Female,Southeast Asian,False\n\
        train/3.jpg,3-9,Male,Latino_Hispanic,True\n\
        train/4.jpg,more than 70,Female,Middle Eastern,False\n\
        train/5.jpg,10-19,Male,Indian,True\n\
        train/6.jpg,20-29,Female,White,True\n\
        train/7.jpg,60-69,Male,Black,False\n\
        train/8.jpg,30-39,Male,Martian,True\n\
        train/9.jpg,40-49,Other,White,True\n\
        train/missing.jpg,40-49,Male,White,True\n";
    write(&t.join("fairface_label_train.csv"), csv);
    for n in 1..=9 {
        write_rgb(&t.join(&format!("train/{n}.jpg")), 60, 60);
    }
    // An older copy without the service_test column.
    write(&t.join("fairface_label_val.csv"), "file,age,gender,race\nval/1.jpg,40-49,Female,Black\n");
    write_rgb(&t.join("val/1.jpg"), 60, 60);

    let ds = fairface::read(t.path(), "train").unwrap();
    let got: Vec<(u8, u8, u8)> = ds.records.iter().map(agr).collect();
    assert_eq!(got, [(5, 0, 3), (0, 1, 3), (0, 0, 4), (7, 1, 4), (1, 0, 2), (2, 1, 0), (6, 0, 1)]);
    let rec = &ds.records[3];
    assert_eq!((rec.raw["age"].as_str(), rec.raw["race"].as_str()), (Some("more than 70"), Some("Middle Eastern")));
    assert_eq!(rec.raw["service_test"], "False");
    assert!(rec.source.ends_with("fairface_label_train.csv:5"), "{}", rec.source);
    let bad: Vec<(&str, &str)> = ds.bad.iter().map(|b| (b.source.as_str(), b.reason.as_str())).collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].0.ends_with(":9") && bad[0].1.contains("Martian"), "{bad:?}");
    assert!(bad[1].0.ends_with(":10") && bad[1].1.contains("Other"), "{bad:?}");
    assert!(bad[2].0.ends_with(":11") && bad[2].1.contains("missing.jpg"), "{bad:?}");
    assert_eq!(rec.load().unwrap().crop_box, [0, 0, 60, 60]);

    let val = fairface::read(t.path(), "val").unwrap();
    assert_eq!(val.records.iter().map(agr).collect::<Vec<_>>(), [(4, 1, 1)]);
    assert!(val.records[0].raw.get("service_test").is_none());

    std::fs::remove_file(t.join("fairface_label_val.csv")).unwrap();
    let err = fairface::read(t.path(), "val").unwrap_err().to_string();
    assert!(err.contains("fairface_label_val.csv"), "{err}");
}
