//! Label-consistent augmentation: identities, exact maps, a drawn dot that must follow its
//! landmark, mask/point consistency, determinism and the pose under flips and rotations.

use data::augment::pose::{flip_pose, pose_from_matrix, pose_matrix, rotate_pose};
use data::augment::warp::Affine;
use data::augment::{augment, AugmentConfig, FLIP_68, FLIP_COFW, FLIP_PARSING};
use data::preprocess::RgbImage;
use data::{Sample, Target};
use tensor::SplitMix64;

const N: usize = 224;

fn sample(target: Target, image: RgbImage) -> Sample {
    Sample {
        image,
        target,
        dataset: "test",
        source: "test:1".into(),
        raw: serde_json::Value::Null,
        crop_box: [0, 0, 224, 224],
    }
}

fn noise_image(seed: u64) -> RgbImage {
    let mut rng = SplitMix64(seed);
    RgbImage::from_fn(N as u32, N as u32, |_, _| image::Rgb([0, 0, 0].map(|_: u8| (rng.next_u64() % 256) as u8)))
}

fn random_points(seed: u64, n: usize) -> Vec<[f32; 2]> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| [20.0 + 180.0 * rng.uniform() as f32, 20.0 + 180.0 * rng.uniform() as f32]).collect()
}

fn all_targets() -> Vec<Target> {
    let mut rng = SplitMix64(7);
    vec![
        Target::Parsing { mask: (0..N * N).map(|_| (rng.next_u64() % 11) as u8).collect() },
        Target::Landmarks { points: random_points(1, 68) },
        Target::HeadPose { pitch_yaw_roll: [0.2, -0.4, 0.1] },
        Target::Attributes { values: [1; 40] },
        Target::AgeGenderRace { age_bin: 3, gender: 1, race: 2 },
        Target::Visibility { points: random_points(2, 29), occluded: (0..29).map(|i| (i % 3 == 0) as u8).collect() },
    ]
}

fn only_flip() -> AugmentConfig {
    AugmentConfig { flip: 1.0, ..AugmentConfig::none() }
}

#[test]
fn none_is_the_identity() {
    for (i, t) in all_targets().into_iter().enumerate() {
        let s = sample(t, noise_image(i as u64));
        let out = augment(&s, &AugmentConfig::none(), 1, 2, i as u64);
        assert_eq!(out.image, s.image);
        assert_eq!(out.target, s.target);
    }
}

#[test]
fn flip_twice_is_the_identity_exactly() {
    for (i, t) in all_targets().into_iter().enumerate() {
        let s = sample(t, noise_image(10 + i as u64));
        let once = augment(&s, &only_flip(), 3, 0, i as u64);
        assert_ne!(once.image, s.image, "target {i}: one flip must change the image");
        let twice = augment(&once, &only_flip(), 4, 1, 99);
        assert_eq!(twice.image, s.image, "target {i}");
        // Points: `223 - x` is not always an f32 (x in [64, 128) has a finer step than the
        // result in [128, 256)), so random points come back within one f32 step at 256 ...
        match (&twice.target, &s.target) {
            (Target::Landmarks { points: a }, Target::Landmarks { points: b })
            | (Target::Visibility { points: a, .. }, Target::Visibility { points: b, .. }) => {
                for (p, q) in a.iter().zip(b) {
                    assert!((p[0] - q[0]).abs() <= 1.0 / 65536.0 && p[1] == q[1], "target {i}: {p:?} vs {q:?}");
                }
            }
            (a, b) => assert_eq!(a, b, "target {i}"),
        }
        if let (Target::Visibility { occluded: a, .. }, Target::Visibility { occluded: b, .. }) =
            (&twice.target, &s.target)
        {
            assert_eq!(a, b);
        }
    }
    // ... and points on a 1/64 grid (every f32 of a 2^-16 grid maps exactly) come back exactly.
    let grid: Vec<[f32; 2]> = random_points(5, 68).iter().map(|p| p.map(|v| (v * 64.0).round() / 64.0)).collect();
    let s = sample(Target::Landmarks { points: grid }, noise_image(9));
    let twice = augment(&augment(&s, &only_flip(), 1, 1, 1), &only_flip(), 2, 2, 2);
    assert_eq!(twice.target, s.target);
}

#[test]
fn flip_maps_x_to_223_minus_x_and_relabels() {
    let mut points = vec![[50.0f32, 60.0]; 68];
    points[36] = [80.25, 90.5]; // the image-left eye's outer corner
    let s = sample(Target::Landmarks { points }, noise_image(3));
    let out = augment(&s, &only_flip(), 0, 0, 0);
    let Target::Landmarks { points } = out.target else { panic!("landmarks expected") };
    assert_eq!(points[45], [223.0 - 80.25, 90.5]);
    assert_eq!(points[0], [173.0, 60.0]);
    // The pixel (10, 20) moved to (213, 20).
    assert_eq!(out.image.get_pixel(213, 20), s.image.get_pixel(10, 20));

    let mut mask = vec![0u8; N * N];
    mask[20 * N + 10] = 2; // left eyebrow at (10, 20)
    mask[30 * N + 100] = 5; // right eye at (100, 30)
    let out = augment(&sample(Target::Parsing { mask }, noise_image(4)), &only_flip(), 0, 0, 0);
    let Target::Parsing { mask } = out.target else { panic!("parsing expected") };
    assert_eq!(mask[20 * N + 213], 3);
    assert_eq!(mask[30 * N + 123], 4);
    assert_eq!(mask.iter().filter(|&&c| c != 0).count(), 2);

    let pose =
        augment(&sample(Target::HeadPose { pitch_yaw_roll: [0.1, 0.2, 0.3] }, noise_image(5)), &only_flip(), 0, 0, 0);
    assert_eq!(pose.target, Target::HeadPose { pitch_yaw_roll: [0.1, -0.2, -0.3] });
}

#[test]
fn permutations_are_involutions_with_the_ibug_pairs() {
    for (i, &j) in FLIP_68.iter().enumerate() {
        assert_eq!(FLIP_68[j], i);
    }
    for (i, &j) in FLIP_COFW.iter().enumerate() {
        assert_eq!(FLIP_COFW[j], i);
    }
    for (i, &j) in FLIP_PARSING.iter().enumerate() {
        assert_eq!(FLIP_PARSING[j as usize] as usize, i);
    }
    let pairs = [(0, 16), (8, 8), (17, 26), (21, 22), (27, 27), (30, 30), (31, 35), (33, 33), (36, 45), (37, 44)];
    let more = [(38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58)];
    let last = [(57, 57), (60, 64), (61, 63), (62, 62), (65, 67), (66, 66)];
    for (a, b) in pairs.iter().chain(&more).chain(&last) {
        assert_eq!(FLIP_68[*a], *b, "68-point mirror of {a}");
    }
    // COFW: outer brow corners, pupils, mouth corners swap; chin stays.
    assert_eq!((FLIP_COFW[0], FLIP_COFW[16], FLIP_COFW[22], FLIP_COFW[28]), (1, 17, 23, 28));
}

#[test]
fn scale_about_the_centre_is_exact() {
    let cfg = AugmentConfig { scale: [2.0, 2.0], ..AugmentConfig::none() };
    let s = sample(Target::Landmarks { points: vec![[121.5, 111.5], [111.5, 101.5]] }, noise_image(6));
    let Target::Landmarks { points } = augment(&s, &cfg, 0, 0, 0).target else { panic!() };
    assert_eq!(points, vec![[131.5, 111.5], [111.5, 91.5]]);
}

/// A Gaussian dot at `p` on black.
fn dot_image(p: [f32; 2]) -> RgbImage {
    RgbImage::from_fn(N as u32, N as u32, |x, y| {
        let d2 = (x as f32 - p[0]).powi(2) + (y as f32 - p[1]).powi(2);
        let v = (255.0 * (-d2 / (2.0 * 1.5 * 1.5)).exp()).round() as u8;
        image::Rgb([v, v, v])
    })
}

fn centroid(img: &RgbImage) -> [f64; 2] {
    let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
    for (x, y, px) in img.enumerate_pixels() {
        let w = px.0[0] as f64;
        sx += w * x as f64;
        sy += w * y as f64;
        sw += w;
    }
    [sx / sw, sy / sw]
}

#[test]
fn a_drawn_dot_follows_its_landmark_under_every_geometric_transform() {
    let geometric =
        AugmentConfig { gamma: [1.0, 1.0], grayscale: 0.0, blur: 0.0, occlusion: 0.0, ..Default::default() };
    let configs = [
        only_flip(),
        AugmentConfig { rotate_deg: 18.0, ..AugmentConfig::none() },
        AugmentConfig { scale: [0.9, 1.1], ..AugmentConfig::none() },
        AugmentConfig { translate: 0.05, ..AugmentConfig::none() },
        geometric,
    ];
    let spots = [[60.3f32, 70.8], [150.0, 90.25], [111.5, 160.7]];
    let mut worst = 0.0f64;
    for (c, cfg) in configs.iter().enumerate() {
        for (k, &p) in spots.iter().enumerate() {
            for index in 0..4 {
                // Every point at the dot: the permutation cannot hide a wrong map.
                let s = sample(Target::Landmarks { points: vec![p; 68] }, dot_image(p));
                let out = augment(&s, cfg, 11, c as u64, (k * 4 + index) as u64);
                let Target::Landmarks { points } = &out.target else { panic!() };
                let [cx, cy] = centroid(&out.image);
                let err = ((cx - points[0][0] as f64).powi(2) + (cy - points[0][1] as f64).powi(2)).sqrt();
                worst = worst.max(err);
                assert!(err < 0.5, "config {c}, spot {k}: dot at ({cx:.2}, {cy:.2}), point {:?}", points[0]);
            }
        }
    }
    eprintln!("worst dot-to-point distance: {worst:.3} px");
    assert!(worst > 0.0);
}

#[test]
fn mask_and_points_move_together() {
    // A left-eye square around a point; the same (seed, epoch, index) draws the same map for
    // both samples, so the moved point must land on the moved (and relabelled) square.
    let p = [70.0f32, 90.0];
    let mut mask = vec![0u8; N * N];
    for y in 86..=94 {
        for x in 66..=74 {
            mask[y * N + x] = 4;
        }
    }
    let cfg = AugmentConfig { gamma: [1.0, 1.0], ..Default::default() };
    let mut flipped = 0;
    for index in 0..20 {
        let m = augment(&sample(Target::Parsing { mask: mask.clone() }, noise_image(1)), &cfg, 5, 1, index);
        let l = augment(&sample(Target::Landmarks { points: vec![p; 68] }, noise_image(1)), &cfg, 5, 1, index);
        let (Target::Parsing { mask: m }, Target::Landmarks { points }) = (m.target, l.target) else { panic!() };
        let q = points[0];
        let class = m[(q[1].round() as usize) * N + q[0].round() as usize];
        assert!(class == 4 || class == 5, "index {index}: class {class} under the moved point {q:?}");
        flipped += (class == 5) as usize;
        let area = m.iter().filter(|&&c| c != 0).count() as f64;
        assert!((40.0..120.0).contains(&area), "index {index}: area {area}");
    }
    assert!(flipped > 0 && flipped < 20, "flips: {flipped} of 20");
}

#[test]
fn the_same_draw_gives_the_same_output_and_another_index_another() {
    let s = sample(Target::Landmarks { points: random_points(3, 68) }, noise_image(8));
    let cfg = AugmentConfig::default();
    let a = augment(&s, &cfg, 42, 3, 17);
    let b = augment(&s, &cfg, 42, 3, 17);
    assert_eq!(a.image, b.image);
    assert_eq!(a.target, b.target);
    for (seed, epoch, index) in [(42, 3, 18), (42, 4, 17), (43, 3, 17)] {
        let c = augment(&s, &cfg, seed, epoch, index);
        assert_ne!(c.target, a.target, "({seed}, {epoch}, {index})");
        assert_ne!(c.image, a.image);
    }
}

#[test]
fn points_under_the_occluder_become_occluded() {
    let cfg = AugmentConfig { occlusion: 1.0, ..AugmentConfig::none() };
    let grid: Vec<[f32; 2]> = (0..29).map(|i| [8.0 + 7.5 * i as f32, 8.0 + 7.5 * ((i * 7) % 29) as f32]).collect();
    let white = RgbImage::from_pixel(N as u32, N as u32, image::Rgb([255, 255, 255]));
    let mut hidden = 0;
    for index in 0..10 {
        let s = sample(Target::Visibility { points: grid.clone(), occluded: vec![0; 29] }, white.clone());
        let out = augment(&s, &cfg, 1, 1, index);
        let Target::Visibility { points, occluded } = &out.target else { panic!() };
        let black = out.image.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert!(black >= (0.15f64 * 224.0).floor().powi(2) as usize, "occluder of {black} px");
        for (p, &f) in points.iter().zip(occluded) {
            let dark = out.image.get_pixel(p[0].round() as u32, p[1].round() as u32).0 == [0, 0, 0];
            assert_eq!(f, dark as u8, "point {p:?}");
            hidden += f as usize;
        }
    }
    assert!(hidden > 0);
}

#[test]
fn pose_matrix_round_trips_and_flips() {
    for pyr in [[0.3, -0.7, 0.2], [-0.5, 1.0, -0.4], [0.0, 0.0, 0.0]] {
        let back = pose_from_matrix(&pose_matrix(pyr[0], pyr[1], pyr[2]));
        for d in 0..3 {
            assert!((back[d] - pyr[d]).abs() < 1e-12, "{pyr:?} -> {back:?}");
        }
    }
    assert_eq!(flip_pose([0.1, 0.2, 0.3]), [0.1, -0.2, -0.3]);
    let r = rotate_pose([0.0, 0.0, 0.1], 0.25);
    assert!((r[2] - 0.35).abs() < 1e-6 && r[0].abs() < 1e-6 && r[1].abs() < 1e-6, "{r:?}");
}

/// Project model points (x right, y up, z to the camera) the 300W-LP way into a 224 crop.
fn project(pyr: [f32; 3], model: &[[f64; 3]]) -> Vec<[f32; 2]> {
    let r = pose_matrix(pyr[0] as f64, pyr[1] as f64, pyr[2] as f64);
    model
        .iter()
        .map(|v| {
            let x = r[0][0] * v[0] + r[0][1] * v[1] + r[0][2] * v[2];
            let y = r[1][0] * v[0] + r[1][1] * v[1] + r[1][2] * v[2];
            [(111.5 + x) as f32, (111.5 - y) as f32]
        })
        .collect()
}

#[test]
fn rotating_the_image_turns_the_projected_pose() {
    // Points of a head: rotate their projection in the image; the new pose must project onto
    // the rotated points.
    let model = [[-40.0, 30.0, 10.0], [40.0, 30.0, 10.0], [0.0, 0.0, 45.0], [0.0, -50.0, 15.0], [-60.0, 0.0, -30.0]];
    for (pyr, angle) in [([0.3f32, -0.5, 0.2], 0.3), ([-0.2, 0.8, -0.4], -0.25), ([0.0, 0.0, 0.0], 0.1)] {
        let map = Affine::about_centre(N, N, false, angle, 1.0, [0.0, 0.0]);
        let rotated = map.map_points(&project(pyr, &model));
        let turned = project(rotate_pose(pyr, angle), &model);
        for (a, b) in rotated.iter().zip(&turned) {
            assert!((a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3, "{pyr:?} by {angle}: {a:?} vs {b:?}");
        }
        // And a flip: the mirrored projection of the mirrored model.
        let flip = Affine::about_centre(N, N, true, 0.0, 1.0, [0.0, 0.0]);
        let mirrored_model: Vec<[f64; 3]> = model.iter().map(|v| [-v[0], v[1], v[2]]).collect();
        let flipped = flip.map_points(&project(pyr, &model));
        for (a, b) in flipped.iter().zip(&project(flip_pose(pyr), &mirrored_model)) {
            assert!((a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3, "flip {pyr:?}: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn the_config_reads_from_toml_like_json_with_defaults() {
    let cfg: AugmentConfig = serde_json::from_str(r#"{"flip": 0.0, "rotate_deg": 10}"#).unwrap();
    assert_eq!(cfg.flip, 0.0);
    assert_eq!(cfg.rotate_deg, 10.0);
    assert_eq!(cfg.scale, [0.9, 1.1]);
    assert!(serde_json::from_str::<AugmentConfig>(r#"{"flop": 1}"#).is_err());
}

#[test]
fn an_empty_image_comes_back_unchanged() {
    let s = sample(Target::Parsing { mask: vec![] }, RgbImage::new(0, 0));
    let out = augment(&s, &AugmentConfig { flip: 1.0, blur: 1.0, occlusion: 1.0, ..Default::default() }, 1, 1, 1);
    assert_eq!(out.target, s.target);
    assert_eq!(out.image.dimensions(), (0, 0));
    // A mask shorter than the image reads as background where it is missing, without a panic.
    let s = sample(Target::Parsing { mask: vec![3; 10] }, noise_image(1));
    let Target::Parsing { mask } = augment(&s, &only_flip(), 1, 1, 1).target else { panic!() };
    assert_eq!(mask.len(), N * N);
    // Pixels 0..10 of row 0 (class 3) land on x = 214..=223 as class 2.
    assert_eq!((mask[213], mask[214], mask[223]), (0, 2, 2));
    assert_eq!(mask.iter().filter(|&&c| c != 0).count(), 10);
}
