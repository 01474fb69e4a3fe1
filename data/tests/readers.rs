//! The landmark and parsing readers (300W, WFLW, LaPa, CelebAMask-HQ) on tiny datasets written in
//! their native layouts: parsed values, conversions, bad records, and the crop `Record::load` makes.

mod common;

use common::*;
use data::datasets::{lapa, w300, wflw};
use data::{CropFrom, Label, MaskSource, Record, Target};

fn points(rec: &Record) -> &[[f32; 2]] {
    match &rec.label {
        Label::Landmarks { points } => points,
        other => panic!("not landmarks: {other:?}"),
    }
}

fn close(a: [f32; 2], b: [f32; 2]) -> bool {
    (a[0] - b[0]).abs() < 1e-4 && (a[1] - b[1]).abs() < 1e-4
}

/// 68 points, 1-based as in a `.pts`: `first` then a grid inside x 11..47, y 21..51.
fn pts68(first: [f32; 2]) -> Vec<[f32; 2]> {
    (0..68).map(|i| if i == 0 { first } else { [11.0 + (i % 10) as f32 * 4.0, 21.0 + (i / 10) as f32 * 5.0] }).collect()
}

#[test]
fn w300_splits_and_one_based_points() {
    let t = TempDir::new("300w");
    for (dir, name, ext) in [
        ("afw", "a", "jpg"),
        ("helen/trainset", "h", "jpg"),
        ("lfpw/trainset", "l", "png"),
        ("helen/testset", "ht", "jpg"),
        ("lfpw/testset", "lt", "png"),
        ("ibug", "i", "jpg"),
    ] {
        write(&t.join(&format!("{dir}/{name}.pts")), pts_text(&pts68([11.5, 20.0])));
        write_rgb(&t.join(&format!("{dir}/{name}.{ext}")), 80, 80);
    }
    let images = |split: &str| -> Vec<String> {
        let ds = w300::read(t.path(), split).unwrap();
        assert!(ds.bad.is_empty(), "{:?}", ds.bad);
        ds.records.iter().map(|r| r.raw["image"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(images("train"), ["afw/a.jpg", "helen/trainset/h.jpg", "lfpw/trainset/l.png"]);
    assert_eq!(images("common"), ["helen/testset/ht.jpg", "lfpw/testset/lt.png"]);
    assert_eq!(images("challenge"), ["ibug/i.jpg"]);
    assert_eq!(images("test"), ["helen/testset/ht.jpg", "lfpw/testset/lt.png", "ibug/i.jpg"]);

    let ds = w300::read(t.path(), "train").unwrap();
    let rec = &ds.records[0];
    // (11.5, 20) in the file is (10.5, 19) 0-based; point 67 is (39, 51) -> (38, 50).
    assert_eq!(points(rec).len(), 68);
    assert_eq!(points(rec)[0], [10.5, 19.0]);
    assert_eq!(points(rec)[67], [38.0, 50.0]);
    assert_eq!(rec.raw["points"][0], serde_json::json!([10.5, 19.0]));
    assert_eq!(rec.crop, CropFrom::Points);
    assert!(rec.source.ends_with("a.pts"));
}

#[test]
fn w300_bad_records_name_file_and_line() {
    let t = TempDir::new("300w-bad");
    let afw = |n: &str| t.join(&format!("afw/{n}"));
    write(&afw("a.pts"), pts_text(&pts68([11.5, 20.0])));
    write_rgb(&afw("a.jpg"), 60, 60);
    // The same file with Windows line ends still parses.
    write(&afw("crlf.pts"), pts_text(&pts68([11.5, 20.0])).replace('\n', "\r\n"));
    write_rgb(&afw("crlf.png"), 60, 60);
    write(&afw("short.pts"), pts_text(&pts68([11.5, 20.0])[..67]));
    write_rgb(&afw("short.jpg"), 60, 60);
    let mut lines: Vec<String> = pts_text(&pts68([11.5, 20.0])).lines().map(String::from).collect();
    lines[9] = "12.000 abc".into();
    write(&afw("malformed.pts"), lines.join("\n"));
    write_rgb(&afw("malformed.jpg"), 60, 60);
    write(&afw("noimage.pts"), pts_text(&pts68([11.5, 20.0])));
    for d in ["helen/trainset", "lfpw/trainset"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let ds = w300::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 2);
    assert_eq!(points(&ds.records[1])[0], [10.5, 19.0]);
    let bad: Vec<(&str, &str)> = ds.bad.iter().map(|b| (b.source.as_str(), b.reason.as_str())).collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].0.ends_with("malformed.pts:10") && bad[0].1.contains("abc"), "{bad:?}");
    assert!(bad[1].0.ends_with("noimage.pts") && bad[1].1.contains("no image"), "{bad:?}");
    // version, n_points, `{`, 67 points (lines 4..=70), `}` on line 71.
    assert!(bad[2].0.ends_with("short.pts:71") && bad[2].1.contains("67 points"), "{bad:?}");

    // A folder of the split that is not there is fatal, and named.
    let err = w300::read(t.path(), "challenge").unwrap_err().to_string();
    assert!(err.contains("ibug"), "{err}");
}

#[test]
fn w300_load_crops_around_the_points() {
    let t = TempDir::new("300w-load");
    // 0-based: tight box [10, 20, 50, 60], point 2 at the centre of the grown crop.
    let mut p: Vec<[f32; 2]> = (0..68).map(|i| [12.0 + (i % 10) as f32 * 3.0, 22.0 + (i / 10) as f32 * 5.0]).collect();
    p[0] = [10.0, 20.0];
    p[1] = [50.0, 60.0];
    p[2] = [29.5, 39.5];
    let one_based: Vec<[f32; 2]> = p.iter().map(|q| [q[0] + 1.0, q[1] + 1.0]).collect();
    for name in ["f", "t"] {
        write(&t.join(&format!("afw/{name}.pts")), pts_text(&one_based));
        write_rgb(&t.join(&format!("afw/{name}.png")), 80, 80);
    }
    truncate(&t.join("afw/t.png"), 40);
    for d in ["helen/trainset", "lfpw/trainset"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let ds = w300::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 2, "reading never decodes images");
    let s = ds.records[0].load().unwrap();
    // The box grows by 25% of 40 on each side: [0, 10, 60, 70]; 60 px -> 224.
    assert_eq!(s.crop_box, [0, 10, 60, 70]);
    assert_eq!(s.image.dimensions(), (224, 224));
    let Target::Landmarks { points } = &s.target else { panic!("{:?}", s.target) };
    assert!(close(points[2], [111.5, 111.5]), "{:?}", points[2]);
    // (10 + 0.5) * 224/60 - 0.5 and (50 + 0.5) * 224/60 - 0.5.
    assert!(close(points[0], [38.7, 38.7]), "{:?}", points[0]);
    assert!(close(points[1], [188.03333, 188.03333]), "{:?}", points[1]);

    let err = ds.records[1].load().unwrap_err().to_string();
    assert!(err.contains("t.png"), "{err}");
}

/// WFLW point k: (100.25 + k, 50.5 + 2k).
fn p98() -> Vec<[f32; 2]> {
    (0..98).map(|k| [100.25 + k as f32, 50.5 + 2.0 * k as f32]).collect()
}

#[test]
fn wflw_picks_68_of_98_and_keeps_the_box() {
    let t = TempDir::new("wflw");
    write_rgb(&t.join("WFLW_images/1--Handshaking/a.jpg"), 320, 320);
    let good = wflw_line(&p98(), [90, 40, 300, 300], [1, 0, 0, 1, 0, 1], "1--Handshaking/a.jpg");
    let short = good.replacen(" 1 0 0 1 0 1 ", " 1 0 0 1 0 ", 1);
    let nan = good.replacen("100.250000", "abc", 1);
    let missing = good.replace("a.jpg", "missing.jpg");
    let second = wflw_line(&p98(), [90, 40, 300, 300], [0, 1, 1, 0, 1, 0], "1--Handshaking/a.jpg");
    let list = t.join("WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt");
    write(&list, [good.clone(), short, nan, missing, second].concat());
    // The test list is accepted in the root too.
    write(&t.join("list_98pt_rect_attr_test.txt"), good);

    let ds = wflw::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 2);
    let bad: Vec<&str> = ds.bad.iter().map(|b| b.source.as_str()).collect();
    assert!(
        bad[0].ends_with("list_98pt_rect_attr_train.txt:2") && ds.bad[0].reason.contains("206 fields"),
        "{:?}",
        ds.bad
    );
    assert!(bad[1].ends_with(":3") && ds.bad[1].reason.contains("abc"), "{:?}", ds.bad);
    assert!(bad[2].ends_with(":4") && ds.bad[2].reason.contains("missing.jpg"), "{:?}", ds.bad);
    assert!(ds.records[1].source.ends_with(":5"));

    let rec = &ds.records[0];
    let p = points(rec);
    let src = p98();
    assert_eq!(p.len(), 68);
    // One check per part of the map: jaw, both brows, nose, both eyes (skipping 62/66, 70/74), mouth.
    for (i68, i98) in
        [(0, 0), (16, 32), (17, 33), (21, 37), (22, 42), (26, 46), (27, 51), (35, 59), (36, 60), (37, 61), (38, 63)]
            .into_iter()
            .chain([(39, 64), (40, 65), (41, 67), (42, 68), (43, 69), (44, 71), (45, 72), (46, 73), (47, 75)])
            .chain([(48, 76), (67, 95)])
    {
        assert_eq!(p[i68], src[i98], "68-pt {i68} should be 98-pt {i98}");
    }
    assert_eq!(p[41], [167.25, 184.5]);
    assert_eq!(rec.crop, CropFrom::Box([90.0, 40.0, 300.0, 300.0]));
    assert_eq!(rec.raw["points98"].as_array().unwrap().len(), 98);
    assert_eq!(rec.raw["points98"][97], serde_json::json!([197.25, 244.5]));
    assert_eq!(rec.raw["box"], serde_json::json!([90.0, 40.0, 300.0, 300.0]));
    let flags = &rec.raw["flags"];
    assert_eq!(
        (flags["pose"].as_u64(), flags["make_up"].as_u64(), flags["blur"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!((flags["expression"].as_u64(), flags["occlusion"].as_u64()), (Some(0), Some(0)));

    // The box [90, 40, 300, 300] grows by 52.5 / 65 and is clamped to the 320x320 image.
    let s = rec.load().unwrap();
    assert_eq!(s.crop_box, [37, 0, 320, 320]);

    assert_eq!(wflw::read(t.path(), "test").unwrap().records.len(), 1);
    let empty = TempDir::new("wflw-none");
    let err = wflw::read(empty.path(), "train").unwrap_err().to_string();
    assert!(err.contains("list_98pt_rect_attr_train.txt"), "{err}");
}

/// 106 LaPa points with the tight box [20, 10, 70, 60].
fn lapa_points() -> Vec<[f32; 2]> {
    let mut p: Vec<[f32; 2]> = (0..106).map(|i| [25.0 + (i % 10) as f32 * 4.0, 15.0 + (i / 10) as f32 * 4.0]).collect();
    p[0] = [20.0, 10.0];
    p[1] = [70.0, 60.0];
    p[2] = [45.25, 35.75];
    p
}

#[test]
fn lapa_masks_landmark_box_and_bad_records() {
    let t = TempDir::new("lapa");
    let f = |rel: &str| t.join(&format!("train/{rel}"));
    for n in ["a", "b", "c", "d", "e"] {
        write_rgb(&f(&format!("images/{n}.jpg")), 100, 80);
    }
    for n in ["a", "c", "d", "e"] {
        write_gray(&f(&format!("labels/{n}.png")), 100, 80, |x, _| if x < 50 { 1 } else { 10 });
    }
    write(&f("landmarks/a.txt"), lapa_landmarks_text(&lapa_points()));
    write(&f("landmarks/b.txt"), lapa_landmarks_text(&lapa_points()));
    write(&f("landmarks/c.txt"), lapa_landmarks_text(&lapa_points()[..105]));
    let mut e = lapa_landmarks_text(&lapa_points());
    e = e.replacen("\n37 15\n", "\n37 15 7\n", 1); // point 3, (37, 15), is on line 5
    write(&f("landmarks/e.txt"), e);

    let ds = lapa::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 1);
    let bad: Vec<(&str, &str)> = ds.bad.iter().map(|b| (b.source.as_str(), b.reason.as_str())).collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad[0].0.ends_with("b.jpg") && bad[0].1.contains("b.png"), "{bad:?}");
    assert!(bad[1].0.ends_with("c.txt:1") && bad[1].1.contains("105"), "{bad:?}");
    assert!(bad[2].0.ends_with("d.jpg") && bad[2].1.contains("d.txt"), "{bad:?}");
    assert!(bad[3].0.ends_with("e.txt:5"), "{bad:?}");

    let rec = &ds.records[0];
    assert_eq!(rec.crop, CropFrom::Box([20.0, 10.0, 70.0, 60.0]));
    assert_eq!(rec.raw["landmarks106"].as_array().unwrap().len(), 106);
    assert_eq!(rec.raw["landmarks106"][2], serde_json::json!([45.25, 35.75]));
    assert!(matches!(&rec.label, Label::Parsing(MaskSource::ClassPng(p)) if p.ends_with("labels/a.png")));

    // [20, 10, 70, 60] grows by 12.5 each side, clamped to 100x80: crop [7, 0, 82, 72].
    let s = rec.load().unwrap();
    assert_eq!(s.crop_box, [7, 0, 82, 72]);
    let Target::Parsing { mask } = &s.target else { panic!() };
    // Crop column c shows source column floor((c + 0.5) * 75/224 + 7): 50 from c = 128 on.
    assert_eq!((mask[100 * 224 + 127], mask[100 * 224 + 128]), (1, 10));
    assert_eq!(mask.iter().filter(|&&c| c == 10).count(), 96 * 224);
    assert_eq!(mask.iter().filter(|&&c| c == 1).count(), 128 * 224);

    let err = lapa::read(t.path(), "val").unwrap_err().to_string();
    assert!(err.contains("val/images"), "{err}");
}

#[test]
fn celebamask_hq_merges_parts_and_splits_by_celeba_partition() {
    use data::datasets::celebamask_hq;
    let t = TempDir::new("celebamask");
    let rows =
        [(0, 2, "000003.jpg"), (1, 0, "000001.jpg"), (2, 1, "000002.jpg"), (3, 99, "000100.jpg"), (4, 3, "000004.jpg")];
    write(&t.join("CelebA-HQ-to-CelebA-mapping.txt"), hq_mapping_text(&rows));
    let partition = [("000001.jpg", 0), ("000002.jpg", 1), ("000003.jpg", 0), ("000004.jpg", 0)];
    write(&t.join("Eval/list_eval_partition.txt"), celeba_partition_text(&partition));
    for n in 0..4 {
        write_rgb(&t.join(&format!("CelebA-HQ-img/{n}.jpg")), 64, 64);
    }
    let part = |idx: u32, name: &str, size: u32, rect: [u32; 4]| {
        write_part(&t.join(&format!("CelebAMask-HQ-mask-anno/0/{idx:05}_{name}.png")), size, rect)
    };
    for (name, rect) in [
        ("skin", [2, 0, 32, 32]),
        ("l_ear", [0, 10, 2, 14]),
        ("eye_g", [0, 0, 16, 8]),
        ("l_eye", [4, 2, 8, 6]),
        ("r_brow", [18, 2, 24, 4]),
        ("u_lip", [10, 20, 14, 22]),
        ("mouth", [10, 21, 14, 24]),
        ("l_lip", [10, 23, 14, 26]),
        ("hair", [0, 28, 32, 32]),
        ("neck", [28, 0, 32, 32]),
        ("hat", [24, 8, 32, 20]),
    ] {
        part(0, name, 32, rect);
    }
    // Image 2 (val): a nose mask of another size than the skin.
    part(2, "skin", 32, [0, 0, 32, 32]);
    part(2, "nose", 16, [4, 4, 8, 8]);

    let ds = celebamask_hq::read(t.path(), "train").unwrap();
    assert_eq!(ds.records.len(), 1);
    // Lines: header 1, then idx 0 on line 2; idx 1 has no parts, 3 no partition, 4 no image.
    let bad: Vec<&str> = ds.bad.iter().map(|b| b.source.as_str()).collect();
    assert_eq!(bad.len(), 3, "{:?}", ds.bad);
    assert!(bad[0].ends_with("mapping.txt:3") && ds.bad[0].reason.contains("no face part"), "{:?}", ds.bad);
    assert!(bad[1].ends_with(":5") && ds.bad[1].reason.contains("000100.jpg"), "{:?}", ds.bad);
    assert!(bad[2].ends_with(":6") && ds.bad[2].reason.contains("4.jpg"), "{:?}", ds.bad);

    let rec = &ds.records[0];
    assert_eq!(rec.crop, CropFrom::WholeImage);
    assert_eq!(rec.raw["celeba_file"], "000003.jpg");
    let listed: Vec<&str> = rec.raw["parts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(listed, ["eye_g", "hair", "hat", "l_ear", "l_eye", "l_lip", "mouth", "neck", "r_brow", "skin", "u_lip"]);
    let Label::Parsing(source @ MaskSource::Parts(parts)) = &rec.label else { panic!("{:?}", rec.label) };
    let classes: Vec<u8> = parts.iter().map(|(_, c)| *c).collect();
    assert_eq!(classes, [1, 1, 1, 2, 5, 7, 8, 9, 10]);
    assert!(parts[0].0.ends_with("0/00000_skin.png") && parts[8].0.ends_with("0/00000_hair.png"));

    let mask = source.decode().unwrap();
    let at = |x: u32, y: u32| mask.get_pixel(x, y).0[0];
    // (x, y, class): glasses and ears are skin, l_eye (person's left) is LaPa's right eye (5)
    // and wins over the glasses, mouth over upper lip, lower lip over mouth, hair over skin,
    // neck and hat are not painted.
    for (x, y, class) in [
        (0, 0, 1),
        (0, 11, 1),
        (0, 20, 0),
        (5, 3, 5),
        (12, 3, 1),
        (20, 3, 2),
        (30, 10, 1),
        (12, 20, 7),
        (12, 21, 8),
        (12, 22, 8),
        (12, 23, 9),
        (12, 25, 9),
        (5, 30, 10),
        (30, 30, 10),
    ] {
        assert_eq!(at(x, y), class, "pixel ({x}, {y})");
    }

    // The whole 64x64 image is the crop; the 32x32 mask is stretched over it.
    let s = rec.load().unwrap();
    assert_eq!(s.crop_box, [0, 0, 64, 64]);
    let Target::Parsing { mask } = &s.target else { panic!() };
    // Crop (36, 24) -> source (10, 6) -> mask (5, 3): eye; crop (112, 200) -> mask (16, 28): hair.
    assert_eq!((mask[24 * 224 + 36], mask[200 * 224 + 112]), (5, 10));

    let val = celebamask_hq::read(t.path(), "val").unwrap();
    assert_eq!(val.records.len(), 1);
    let err = val.records[0].load().unwrap_err().to_string();
    assert!(err.contains("00002_nose.png") && err.contains("16x16"), "{err}");

    std::fs::remove_file(t.join("CelebA-HQ-to-CelebA-mapping.txt")).unwrap();
    let err = celebamask_hq::read(t.path(), "train").unwrap_err().to_string();
    assert!(err.contains("CelebA-HQ-to-CelebA-mapping.txt"), "{err}");
}

#[path = "readers/labels.rs"]
mod labels;
