//! Every metric against arithmetic done by hand (written out beside each assertion).

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn parsing_f1_accumulates_counts_over_the_set() {
    let mut c = ParsingCounts::default();
    // Image A: gt [0,1,1,2], pred [0,1,2,2]: tp0, tp1, (pred 2, gt 1): fp2 fn1, tp2.
    c.add(&[0, 1, 2, 2], &[0, 1, 1, 2]).unwrap();
    // Image B: gt [1,1,0,0], pred [1,0,0,3]: tp1, (0 for 1): fp0 fn1, tp0, (3 for 0): fp3 fn0.
    // Class 2 is absent from B altogether: it still counts, with A's pixels (dataset-level).
    c.add(&[1, 0, 0, 3], &[1, 1, 0, 0]).unwrap();
    assert_eq!((c.tp[0], c.fp[0], c.fn_[0]), (2, 1, 1));
    assert_eq!((c.tp[1], c.fp[1], c.fn_[1]), (2, 0, 2));
    assert_eq!((c.tp[2], c.fp[2], c.fn_[2]), (1, 1, 0));
    assert_eq!((c.tp[3], c.fp[3], c.fn_[3]), (0, 1, 0));
    // F1 = 2TP / (2TP + FP + FN): class 0: 4/6, class 1: 4/6, class 2: 2/3, class 3: 0/1.
    assert!(close(c.f1(0).unwrap(), 4.0 / 6.0));
    assert!(close(c.f1(1).unwrap(), 4.0 / 6.0));
    assert!(close(c.f1(2).unwrap(), 2.0 / 3.0));
    assert_eq!(c.f1(3), Some(0.0)); // predicted but never true: a real 0, kept in the mean
                                    // Classes 4..=10 appear nowhere: excluded, not counted as 0 (or 1).
    assert!((4..11).all(|k| c.f1(k).is_none()));
    // Foreground mean over classes 1, 2, 3: (2/3 + 2/3 + 0) / 3 = 4/9.
    assert!(close(c.mean_f1_fg().unwrap(), 4.0 / 9.0));
    // All classes present: 0, 1, 2, 3: (2/3 * 3 + 0) / 4 = 1/2.
    assert!(close(c.mean_f1_all().unwrap(), 0.5));
}

#[test]
fn parsing_of_an_empty_set_has_no_mean_and_bad_masks_are_errors() {
    let mut c = ParsingCounts::default();
    assert_eq!(c.mean_f1_fg(), None);
    assert_eq!(
        c.add(&[0, 1], &[0]),
        Err(MetricError::Length { what: "parsing prediction vs ground truth", expected: 1, got: 2 })
    );
    assert_eq!(c.add(&[0], &[11]), Err(MetricError::Class { what: "ground-truth mask", id: 11 }));
    // Only background anywhere: background F1 is 1, the foreground mean is undefined.
    c.add(&[0, 0], &[0, 0]).unwrap();
    assert_eq!(c.f1(0), Some(1.0));
    assert_eq!(c.mean_f1_fg(), None);
}

#[test]
fn argmax_classes_picks_the_largest_logit_per_pixel() {
    // 3 classes x 2 pixels: pixel 0 has (1, 3, 2) -> class 1; pixel 1 has (5, 5, 4): a tie of
    // classes 0 and 1 goes to the lower one.
    let logits = [1.0, 5.0, 3.0, 5.0, 2.0, 4.0];
    assert_eq!(argmax_classes(&logits, 3, 2).unwrap(), vec![1, 0]);
    assert!(argmax_classes(&logits, 3, 3).is_err());
}

#[test]
fn model_coordinates_map_to_crop_pixels() {
    // p = ((n + 1) * 224 - 1) / 2: -1 -> -0.5 (the crop's left edge), 0 -> 111.5, 1 -> 223.5.
    assert_eq!(to_crop_pixels(-1.0), -0.5);
    assert_eq!(to_crop_pixels(0.0), 111.5);
    assert_eq!(to_crop_pixels(1.0), 223.5);
    // The inverse of the loss's n = (2p + 1) / 224 - 1.
    let n = data::Target::normalized_points(&[[10.0, 200.0]])[0];
    assert!((to_crop_pixels(n[0]) - 10.0).abs() < 1e-4 && (to_crop_pixels(n[1]) - 200.0).abs() < 1e-4);
    assert_eq!(landmarks_from_output(&[0.0, 1.0, -1.0, 0.0]), vec![[111.5, 223.5], [-0.5, 111.5]]);
}

/// 68 points on a line: point i at (i, 0), so the outer eye corners are 9 apart (36 to 45).
fn line_shape() -> Vec<[f64; 2]> {
    (0..68).map(|i| [i as f64, 0.0]).collect()
}

#[test]
fn nme_divides_the_mean_point_error_by_the_outer_eye_distance() {
    let gt = line_shape();
    // Every point off by (3, 4): distance 5, mean 5, NME = 5 / 9.
    let shifted: Vec<[f64; 2]> = gt.iter().map(|p| [p[0] + 3.0, p[1] + 4.0]).collect();
    assert!(close(nme_interocular(&shifted, &gt).unwrap(), 5.0 / 9.0));
    // One point off by 61.2 = 68 * 0.9: mean 0.9, NME = 0.9 / 9 = 0.1.
    let mut one = gt.clone();
    one[0][0] += 61.2;
    assert!((nme_interocular(&one, &gt).unwrap() - 0.1).abs() < 1e-12);
    assert_eq!(nme_interocular(&gt, &gt).unwrap(), 0.0);
}

#[test]
fn nme_with_coincident_eye_corners_or_wrong_counts_is_an_error() {
    let mut gt = line_shape();
    gt[45] = gt[36];
    assert_eq!(nme_interocular(&gt, &gt), Err(MetricError::ZeroInterocular));
    let short = &line_shape()[..67];
    assert!(matches!(nme_interocular(short, short), Err(MetricError::Length { expected: 68, got: 67, .. })));
    assert!(matches!(nme_interocular(short, &line_shape()), Err(MetricError::Length { expected: 68, got: 67, .. })));
}

#[test]
fn ced_failure_rate_and_exact_auc() {
    let errors = [0.02, 0.05, 0.1, 0.3];
    let c = ced(&errors, 0.1).unwrap();
    // Failures: NME > 0.1 strictly: only 0.3 -> 1/4.
    assert!(close(c.failure_rate, 0.25));
    // AUC = mean(max(0, 0.1 - e)) / 0.1 = (0.08 + 0.05 + 0 + 0) / 4 / 0.1 = 0.325.
    assert!((c.auc - 0.325).abs() < 1e-12);
    // The same area by the trapezoid rule on a fine grid of the step function CED(x).
    let steps = 100_000;
    let cdf = |x: f64| errors.iter().filter(|&&e| e <= x).count() as f64 / 4.0;
    let h = 0.1 / steps as f64;
    let trapz: f64 = (0..steps).map(|i| (cdf(i as f64 * h) + cdf((i + 1) as f64 * h)) * h / 2.0).sum::<f64>() / 0.1;
    assert!((trapz - 0.325).abs() < 1e-4, "{trapz}");
    // All perfect: AUC 1, no failure; all beyond: AUC 0, all fail; none: undefined.
    assert_eq!(ced(&[0.0, 0.0], 0.1).unwrap(), Ced { failure_rate: 0.0, auc: 1.0 });
    assert_eq!(ced(&[0.2], 0.1).unwrap(), Ced { failure_rate: 1.0, auc: 0.0 });
    assert_eq!(ced(&[], 0.1), None);
}

#[test]
fn mean_shape_averages_point_by_point() {
    // ((0,0)+(2,2))/2 = (1,1); ((2,4)+(4,0))/2 = (3,2).
    let shapes = vec![vec![[0.0, 0.0], [2.0, 4.0]], vec![[2.0, 2.0], [4.0, 0.0]]];
    assert_eq!(mean_shape(&shapes).unwrap(), vec![[1.0, 1.0], [3.0, 2.0]]);
    assert_eq!(mean_shape(&[]), None);
}

#[test]
fn pose_mae_per_angle_and_mean() {
    let pred = [[10.0, 20.0, 30.0], [0.0, 0.0, 0.0]];
    let gt = [[12.0, 17.0, 30.0], [-1.0, 5.0, 2.0]];
    // pitch (2 + 1)/2 = 1.5, yaw (3 + 5)/2 = 4, roll (0 + 2)/2 = 1, mean 6.5/3.
    let m = pose_mae(&pred, &gt).unwrap().unwrap();
    assert_eq!((m.pitch, m.yaw, m.roll), (1.5, 4.0, 1.0));
    assert!(close(m.mean, 6.5 / 3.0));
    assert_eq!(pose_mae(&[], &[]).unwrap(), None);
    assert!(pose_mae(&pred[..1], &gt).is_err());
    // AFLW2000: keep |angle| <= 99 on all three.
    assert!(pose_in_range([99.0, 0.0, -99.0]));
    assert!(!pose_in_range([99.5, 0.0, 0.0]));
    assert!(!pose_in_range([0.0, -120.0, 0.0]));
    // Mean pose: ((12 - 1)/2, (17 + 5)/2, (30 + 2)/2).
    assert_eq!(mean_pose(&gt).unwrap(), [5.5, 11.0, 16.0]);
}

#[test]
fn accuracies_and_the_majority_baseline() {
    assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1); // first of the tie
                                                   // 3 of 4 equal.
    assert_eq!(accuracy(&[0, 1, 2, 2], &[0, 1, 1, 2]).unwrap(), Some(0.75));
    assert_eq!(accuracy(&[], &[]).unwrap(), None);
    assert!(accuracy(&[0], &[]).is_err());
    // Label 1 occurs 2 times in 4.
    assert_eq!(majority_accuracy(&[0, 1, 1, 2]), Some(0.5));
    assert_eq!(majority_accuracy(&[]), None);
}

#[test]
fn attribute_accuracy_thresholds_logits_at_zero() {
    // Rows of 2 attributes: logits (1, -1), (0, 2), (-3, -0.5); labels (1, 0), (1, 1), (0, 0).
    // Attribute 0: present/1 yes, 0.0 is not > 0 so absent/1 no, absent/0 yes -> 2/3.
    // Attribute 1: absent/0 yes, present/1 yes, absent/0 yes -> 1.
    let acc = attribute_accuracy(&[1.0, -1.0, 0.0, 2.0, -3.0, -0.5], &[1, 0, 1, 1, 0, 0], 2).unwrap().unwrap();
    assert!(close(acc[0], 2.0 / 3.0) && acc[1] == 1.0);
    assert_eq!(attribute_accuracy(&[], &[], 40).unwrap(), None);
    assert!(attribute_accuracy(&[0.0; 3], &[0; 3], 2).is_err());
}

#[test]
fn recall_at_precision_takes_ties_together() {
    // Scores 0.9, 0.8, 0.8, 0.1 for positive, positive, negative, negative.
    // >= 0.9: tp 1 fp 0 -> P 1, R 1/2. >= 0.8 (both 0.8s at once): tp 2 fp 1 -> P 2/3 < 0.8.
    // >= 0.1: tp 2 fp 2 -> P 1/2. Best: R 1/2 at 0.9. (Splitting the tie, positive first,
    // would wrongly give R 1 at P 1.)
    let r = recall_at_precision(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false], 0.8).unwrap();
    assert_eq!((r.recall, r.precision, r.threshold, r.reached), (0.5, 1.0, Some(0.9), true));
    assert_eq!((r.positives, r.total), (2, 4));
}

#[test]
fn recall_at_precision_keeps_the_largest_recall_not_the_first() {
    // Labels by falling score: + + + + - +. Precision after each: 1,1,1,1, 4/5, 5/6; recall
    // 0.2 .. 0.8, 0.8, 1. Precision dips to 0.8 (still allowed) and recovers: R 1 at 0.4.
    let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
    let labels = [true, true, true, true, false, true];
    let r = recall_at_precision(&scores, &labels, 0.8).unwrap();
    assert_eq!((r.recall, r.threshold), (1.0, Some(0.4)));
    assert!(close(r.precision, 5.0 / 6.0));
}

#[test]
fn recall_at_precision_not_reached_is_zero_with_a_flag() {
    // >= 0.9: the negative alone, P 0; >= 0.1: P 1/2. Never 0.8.
    let r = recall_at_precision(&[0.9, 0.1], &[false, true], 0.8).unwrap();
    assert_eq!((r.recall, r.threshold, r.reached), (0.0, None, false));
    // No positives at all: undefined, reported as not reached.
    let r = recall_at_precision(&[0.3, 0.2], &[false, false], 0.8).unwrap();
    assert!(!r.reached && r.recall == 0.0);
    // A constant score (the trivial baseline): one block; 4 of 5 positive -> P 0.8, R 1.
    let r = recall_at_precision(&[0.5; 5], &[true, true, true, true, false], 0.8).unwrap();
    assert_eq!((r.recall, r.reached), (1.0, true));
    assert!(recall_at_precision(&[0.5], &[], 0.8).is_err());
    assert_eq!(sigmoid(0.0), 0.5);
}
