//! Synthetic faces: determinism, labels that agree with the pixels, the pose convention, and
//! every layout read back by its reader.

use std::path::PathBuf;

use data::augment::pose::pose_from_matrix;
use data::synth::template::{template, Shape};
use data::synth::{render, render_face, write_dataset, FaceParams};
use data::{Label, MaskSource};

fn frontal(seed: u64) -> FaceParams {
    let mut p = FaceParams::random(seed);
    p.pose = [0.0, 0.0, 0.0];
    p.occluder = None;
    p.age_years = p.age_years.max(20);
    p
}

fn class_at(face: &data::synth::Face, p: [f32; 2]) -> u8 {
    face.mask.get_pixel(p[0].round() as u32, p[1].round() as u32).0[0]
}

fn mean(face: &data::synth::Face, idx: std::ops::Range<usize>) -> [f32; 2] {
    let n = idx.len() as f32;
    let s = idx.fold([0.0, 0.0], |a, i| [a[0] + face.landmarks[i][0], a[1] + face.landmarks[i][1]]);
    [s[0] / n, s[1] / n]
}

#[test]
fn the_same_seed_renders_the_same_bytes() {
    let (a, b, c) = (render_face(12), render_face(12), render_face(13));
    assert_eq!(a.image, b.image);
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.landmarks, b.landmarks);
    assert_eq!((a.attributes, a.cofw_occluded.clone()), (b.attributes, b.cofw_occluded.clone()));
    assert_ne!(a.image.as_raw(), c.image.as_raw());
    assert_eq!(a.landmarks.len(), 68);
    assert_eq!((a.cofw_points.len(), a.cofw_occluded.len()), (29, 29));
    assert!((256..=320).contains(&a.image.width()) && a.image.width() == a.mask.width());
}

#[test]
fn frontal_landmarks_lie_on_their_parts() {
    for seed in 0..20 {
        let face = render(&frontal(seed));
        assert_eq!(class_at(&face, mean(&face, 36..42)), 4, "seed {seed}: image-left eye centre");
        assert_eq!(class_at(&face, mean(&face, 42..48)), 5, "seed {seed}: image-right eye centre");
        assert_eq!(class_at(&face, face.landmarks[19]), 2, "seed {seed}: image-left brow");
        assert_eq!(class_at(&face, face.landmarks[24]), 3, "seed {seed}: image-right brow");
        assert_eq!(class_at(&face, face.landmarks[29]), 6, "seed {seed}: nose");
        // Between the outer lip top (51) and the inner lip (62): the upper lip.
        let upper = [
            (face.landmarks[51][0] + face.landmarks[62][0]) / 2.0,
            (face.landmarks[51][1] + face.landmarks[62][1]) / 2.0,
        ];
        assert_eq!(class_at(&face, upper), 7, "seed {seed}: upper lip");
        let lower = [
            (face.landmarks[57][0] + face.landmarks[66][0]) / 2.0,
            (face.landmarks[57][1] + face.landmarks[66][1]) / 2.0,
        ];
        assert_eq!(class_at(&face, lower), 9, "seed {seed}: lower lip");
        // Every inner point is on the face (skin or a part), never background or hair.
        for (i, p) in face.landmarks.iter().enumerate().skip(17) {
            let c = class_at(&face, *p);
            assert!((1..=9).contains(&c), "seed {seed}: point {i} on class {c}");
        }
        let mouth_open = face.attributes[21] == 1;
        let inner = face.mask.pixels().filter(|p| p.0[0] == 8).count();
        assert_eq!(inner > 20, mouth_open, "seed {seed}: {inner} inner-mouth pixels");
    }
}

/// Least-squares rows of R from model points and their projection (known centre and focal).
fn recover_pose(p: &FaceParams, landmarks: &[[f32; 2]]) -> [f64; 3] {
    let model = template(&Shape { eye: 1.0, ..Default::default() });
    let idx: Vec<usize> = (17..48).collect();
    let mut ata = [[0.0f64; 3]; 3];
    let mut atb = [[0.0f64; 3]; 2];
    for &i in &idx {
        let x = model[i];
        let t = [(landmarks[i][0] as f64 - p.centre[0]) / p.focal, (p.centre[1] - landmarks[i][1] as f64) / p.focal];
        for a in 0..3 {
            for b in 0..3 {
                ata[a][b] += x[a] * x[b];
            }
            for r in 0..2 {
                atb[r][a] += x[a] * t[r];
            }
        }
    }
    let solve = |rhs: [f64; 3]| -> [f64; 3] {
        // Cramer's rule on the 3x3 normal equations.
        let det = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let d = det(ata);
        [0, 1, 2].map(|c| {
            let mut m = ata;
            for r in 0..3 {
                m[r][c] = rhs[r];
            }
            det(m) / d
        })
    };
    let (r0, r1) = (solve(atb[0]), solve(atb[1]));
    let r2 = [r0[1] * r1[2] - r0[2] * r1[1], r0[2] * r1[0] - r0[0] * r1[2], r0[0] * r1[1] - r0[1] * r1[0]];
    pose_from_matrix(&[r0, r1, r2])
}

#[test]
fn the_pose_round_trips_through_the_projection() {
    for (k, pyr) in [[0.3, 0.6, -0.2], [-0.4, -0.8, 0.3], [0.1, 0.0, 0.5], [0.0, -0.3, 0.0]].iter().enumerate() {
        let mut p = frontal(100 + k as u64);
        p.pose = *pyr;
        let face = render(&p);
        assert_eq!(face.pose, pyr.map(|v| v as f32));
        let got = recover_pose(&p, &face.landmarks);
        for d in 0..3 {
            assert!((got[d] - pyr[d]).abs() < 1e-6, "{pyr:?} recovered as {got:?}");
        }
        // Positive yaw turns the nose toward the image left: the image-right cheek is wider.
        let nose = face.landmarks[30][0];
        let (left, right) = (nose - face.landmarks[0][0], face.landmarks[16][0] - nose);
        if pyr[1].abs() > 0.1 && pyr[2].abs() < 0.35 {
            assert_eq!(right > left, pyr[1] > 0.0, "{pyr:?}: cheeks {left} / {right}");
        }
    }
}

#[test]
fn far_side_points_are_self_occluded_at_large_yaw() {
    let mut p = frontal(7);
    p.pose = [0.0, 55f64.to_radians(), 0.0];
    let face = render(&p);
    // Positive yaw turns the image-left half away: COFW 0 (image-left brow corner), 8 (image-left
    // eye corner), 22 (image-left mouth corner) hidden; their mirrors 1, 9, 23 and the chin seen.
    assert_eq!([0, 8, 22].map(|k| face.cofw_occluded[k]), [1, 1, 1]);
    assert_eq!([1, 9, 23, 28].map(|k| face.cofw_occluded[k]), [0, 0, 0, 0]);
    p.pose = [0.0, 0.0, 0.0];
    assert!(render(&p).cofw_occluded.iter().all(|&f| f == 0));
}

fn index_in(source: &str, prefix: &str) -> usize {
    let at = source.find(prefix).unwrap_or_else(|| panic!("{source} has no {prefix}")) + prefix.len();
    source[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
}

#[test]
fn every_layout_reads_back_with_its_labels() {
    let out: PathBuf = std::env::temp_dir().join(format!("facex-synth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (count, seed) = (10, 77);
    let summary = write_dataset(&out, count, seed).unwrap();
    assert_eq!(summary.lapa, [8, 2]);
    assert_eq!(summary.utkface, [8, 2]);
    let faces: Vec<_> = (0..count).map(|i| render_face(seed + i as u64)).collect();
    let open = |name: &str, dir: &str, split: &str| {
        let ds = data::datasets::open(name, &out.join(dir), split).unwrap_or_else(|e| panic!("{name} {split}: {e}"));
        assert!(ds.bad.is_empty(), "{name} {split}: {:?}", ds.bad);
        ds
    };
    let close = |a: &[[f32; 2]], b: &[[f32; 2]], tol: f32| {
        a.iter().zip(b).all(|(p, q)| (p[0] - q[0]).abs() <= tol && (p[1] - q[1]).abs() <= tol)
    };

    for (split, n) in [("train", 8), ("test", 2)] {
        let ds = open("lapa", "lapa", split);
        assert_eq!(ds.records.len(), n);
        let r = &ds.records[0];
        let Label::Parsing(mask) = &r.label else { panic!() };
        let i = index_in(&r.source, "synth_");
        assert_eq!(*mask.decode().unwrap(), faces[i].mask, "lapa {split} face {i}");
        assert!(matches!(mask, MaskSource::ClassPng(_)));

        let ds = open("300w", "300w", split);
        assert_eq!(ds.records.len(), n);
        for r in &ds.records {
            let Label::Landmarks { points } = &r.label else { panic!() };
            let i = index_in(&r.source, "synth_");
            assert!(close(points, &faces[i].landmarks, 1e-3), "300w face {i}");
        }

        let ds = open("celeba", "celeba", split);
        assert_eq!(ds.records.len(), n);
        for r in &ds.records {
            let Label::Attributes { values } = &r.label else { panic!() };
            let i = index_in(r.raw["image"].as_str().unwrap(), "img_align_celeba/") - 1;
            assert_eq!(*values, faces[i].attributes, "celeba {}", r.source);
        }

        let ds = open("cofw", "cofw", split);
        assert_eq!(ds.records.len(), n);
        for (k, r) in ds.records.iter().enumerate() {
            let Label::Visibility { points, occluded } = &r.label else { panic!() };
            let i = if split == "train" { k } else { 8 + k };
            assert!(close(points, &faces[i].cofw_points, 1e-4), "cofw face {i}");
            assert_eq!(occluded, &faces[i].cofw_occluded);
            assert_eq!(r.load().unwrap().image.width(), 224);
        }
    }
    for (name, split, n) in [("300w_lp", "train", 8), ("aflw2000", "test", 2)] {
        let ds = open(name, if name == "300w_lp" { "300w_lp" } else { "aflw2000" }, split);
        assert_eq!(ds.records.len(), n);
        for r in &ds.records {
            let Label::HeadPose { pitch_yaw_roll, points } = &r.label else { panic!() };
            let i = index_in(&r.source, "synth_");
            assert_eq!(*pitch_yaw_roll, faces[i].pose, "{name} face {i}");
            assert!(close(points.as_ref().unwrap(), &faces[i].landmarks, 1e-5));
        }
    }
    let n_train = (count * 4).div_ceil(5);
    let train = open("utkface", "utkface", "all");
    let test = open("utkface", "utkface_test", "all");
    assert_eq!((train.records.len(), test.records.len()), (n_train, count - n_train));
    for r in train.records.iter().chain(&test.records) {
        let Label::AgeGenderRace { age_bin, gender, race } = r.label else { panic!() };
        let i = index_in(&r.source, "_2017");
        let f = &faces[i];
        assert_eq!(
            (age_bin, gender, race),
            (data::datasets::utkface::age_bin(f.age_years), f.gender, f.race),
            "utkface {}",
            r.source
        );
    }
    assert!(train.records.iter().all(|r| index_in(&r.source, "_2017") < n_train), "a held-out face in utkface/");
    assert!(test.records.iter().all(|r| index_in(&r.source, "_2017") >= n_train), "a training face in utkface_test/");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn augmented_pose_matches_augmented_landmarks() {
    // Flip and rotate a rendered face; the pose recovered from the moved (and re-indexed)
    // landmarks must be the pose target `augment` computed: the roll sign, end to end.
    use data::augment::{augment, AugmentConfig};
    use data::{Sample, Target};
    let cfg = AugmentConfig { flip: 0.5, rotate_deg: 30.0, scale: [1.0, 1.0], ..AugmentConfig::none() };
    let mut flips = 0;
    for index in 0..12u64 {
        let mut p = frontal(200 + index);
        p.pose = [0.3 - 0.05 * index as f64, 0.5 - 0.09 * index as f64, 0.2 - 0.03 * index as f64];
        let face = render(&p);
        let sample = |target: Target| Sample {
            image: face.image.clone(),
            target,
            dataset: "synth",
            source: String::new(),
            raw: serde_json::Value::Null,
            crop_box: [0, 0, 1, 1],
        };
        let run = |t: Target| augment(&sample(t), &cfg, 9, 0, index).target;
        let Target::Landmarks { points } = run(Target::Landmarks { points: face.landmarks.clone() }) else { panic!() };
        let centre = [p.centre[0] as f32, p.centre[1] as f32];
        let Target::Landmarks { points: c } = run(Target::Landmarks { points: vec![centre; 68] }) else { panic!() };
        let Target::HeadPose { pitch_yaw_roll } = run(Target::HeadPose { pitch_yaw_roll: face.pose }) else { panic!() };
        flips += (pitch_yaw_roll[1].signum() != face.pose[1].signum()) as usize;
        let moved = FaceParams { centre: [c[0][0] as f64, c[0][1] as f64], ..p.clone() };
        let got = recover_pose(&moved, &points);
        for d in 0..3 {
            assert!((got[d] - pitch_yaw_roll[d] as f64).abs() < 1e-4, "index {index}: {got:?} vs {pitch_yaw_roll:?}");
        }
    }
    assert!(flips > 0 && flips < 12, "{flips} flips of 12");
}

#[test]
fn polygons_fill_pixel_centres_inside() {
    use data::synth::raster::{convex_hull, Canvas};
    let mut cv = Canvas::new(8, 8);
    // Centres 2, 3, 4 lie inside [1.5, 4.5] on both axes: 9 pixels.
    cv.fill(&[[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]], Some(7), |_, _, _| [1, 2, 3]);
    let set: Vec<usize> = (0..64).filter(|&i| cv.mask[i] == 7).collect();
    assert_eq!(set, vec![18, 19, 20, 26, 27, 28, 34, 35, 36]);
    assert_eq!(&cv.rgb[3 * 18..3 * 18 + 3], &[1, 2, 3]);
    assert_eq!(cv.rgb.iter().filter(|&&v| v == 3).count(), 9);
    // A triangle half of a 4x4 box: x >= y (pixel centres on the diagonal included).
    let mut cv = Canvas::new(4, 4);
    cv.fill(&[[-0.5, -0.5], [3.5, -0.5], [3.5, 3.5]], Some(1), |_, _, old| old);
    assert_eq!(cv.mask.iter().filter(|&&c| c == 1).count(), 4 + 3 + 2 + 1);
    let hull = convex_hull(&[[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 2.0], [1.0, 0.0]]);
    assert_eq!(hull, vec![[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]]);
}

#[test]
fn derived_point_sets_follow_their_tables() {
    use data::synth::points::{cofw_from_template, lapa106_from_68};
    let face = render_face(3);
    let p: Vec<[f64; 2]> = face.landmarks.iter().map(|q| q.map(f64::from)).collect();
    let lapa = lapa106_from_68(&p);
    assert_eq!(lapa.len(), 106);
    assert_eq!((lapa[0], lapa[32], lapa[16]), (p[0], p[16], p[8]));
    assert_eq!(lapa[1], [(p[0][0] + p[1][0]) / 2.0, (p[0][1] + p[1][1]) / 2.0]);
    assert_eq!((lapa[84], lapa[103]), (p[48], p[67]));
    let c = &face.cofw_points;
    let at = |i: usize| face.landmarks[i];
    assert_eq!((c[0], c[1], c[8], c[9], c[22], c[23], c[28]), (at(17), at(26), at(36), at(45), at(48), at(54), at(8)));
    assert_eq!((c[20], c[21], c[24], c[27]), (at(30), at(33), at(51), at(57)));
    let pupil = c[16];
    let eye = mean(&face, 36..42);
    assert!((pupil[0] - eye[0]).abs() < 1e-3 && (pupil[1] - eye[1]).abs() < 1e-3);
    // The helper-point version agrees on the 68-derived points.
    let mut with_helpers = p.clone();
    with_helpers.resize(data::synth::template::N_TEMPLATE, [0.0, 0.0]);
    assert_eq!(cofw_from_template(&with_helpers)[28], p[8]);
}

#[test]
fn the_hairline_recedes_with_age() {
    // The same frontal face at each decade: from 30 the fringe gives way to forehead skin (mask
    // class 10 -> 1), a few hundred pixels a decade, bald on top for men from 60; under 30 the
    // hairline does not move (eye size marks those bins).
    for seed in [3u64, 4, 5, 6] {
        let p = frontal(seed);
        let hair_px = |age: u32| {
            let face = render(&FaceParams { age_years: age, hair: 0, ..p.clone() });
            face.mask.as_raw().iter().filter(|&&c| c == 10).count()
        };
        let counts: Vec<usize> = [5, 15, 25, 35, 45, 55, 65, 75].map(hair_px).to_vec();
        assert_eq!((counts[0], counts[1]), (counts[2], counts[2]), "seed {seed}: {counts:?}");
        for d in 2..6 {
            assert!(counts[d] > counts[d + 1] + 100, "seed {seed}, decade {d}: {counts:?}");
        }
        // Women's fringe rises through 70+; men's reaches the crown at 60.
        let last = if p.gender == 1 { counts[6] > counts[7] + 100 } else { counts[6] == counts[7] };
        assert!(last, "seed {seed}, gender {}: {counts:?}", p.gender);
    }
}
