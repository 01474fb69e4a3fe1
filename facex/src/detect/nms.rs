//! Non-maximum suppression with the two semantics facenet-pytorch's MTCNN mixes:
//! torchvision's `nms` (P- and R-Net stages) and its own NumPy `nms_numpy` (O-Net stage).
//!
//! Both run in f32 like their originals, so borderline overlaps resolve the same way.

/// How overlap is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// torchvision: `inter / (area_a + area_b - inter)`, areas `(x2-x1)*(y2-y1)`.
    Union,
    /// facenet's 'Min': `inter / min(area_a, area_b)`, areas `(x2-x1+1)*(y2-y1+1)`
    /// (pixel-inclusive boxes).
    Min,
}

/// Indices of the boxes kept, highest score first. `boxes[i] = [x1, y1, x2, y2]`.
///
/// `Overlap::Union` reproduces `torchvision.ops.nms`: stable sort by descending score; a box
/// is suppressed when its IoU with a kept box is `> threshold`.
/// `Overlap::Min` reproduces `nms_numpy(..., 'Min')`: a box survives a kept box only when the
/// overlap is `<= threshold` (so a NaN overlap drops it, unlike torchvision).
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32, overlap: Overlap) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "nms: one score per box");
    let plus = match overlap {
        Overlap::Union => 0.0,
        Overlap::Min => 1.0,
    };
    let area = |b: &[f32; 4]| (b[2] - b[0] + plus) * (b[3] - b[1] + plus);
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // Stable: equal scores keep their input order (torch's stable sort; NumPy's argsort ties
    // are unspecified, the stable choice is the natural one).
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        let area_i = area(bi);
        for &j in &order[pos + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + plus).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + plus).max(0.0);
            let inter = w * h;
            suppressed[j] = match overlap {
                Overlap::Union => inter / (area_i + area(bj) - inter) > threshold,
                // NumPy keeps `o <= threshold`; a NaN overlap is therefore dropped.
                Overlap::Min => (inter / area_i.min(area(bj))).partial_cmp(&threshold).is_none_or(|o| o.is_gt()),
            };
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_highest_and_drops_overlaps() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 5.0]];
        let scores = [0.8, 0.9, 0.7, 0.95];
        // IoU(0,1) = 81/119 = 0.68; IoU(3,1) = 36/(50+100-36) = 0.32; IoU(3,0) = 0.5.
        assert_eq!(nms(&boxes, &scores, 0.5, Overlap::Union), vec![3, 1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.7, Overlap::Union), vec![3, 1, 0, 2]);
        // Min: overlap(3,1) = (10*5)/min(55, 121) > 0.5 with +1 areas -> 1 dropped; (3,0) = 1.0.
        assert_eq!(nms(&boxes, &scores, 0.5, Overlap::Min), vec![3, 2]);
    }

    #[test]
    fn matches_brute_force_definition() {
        let mut rng = tensor::SplitMix64(7);
        for _ in 0..50 {
            let n = (rng.next_u64() % 30) as usize;
            let boxes: Vec<[f32; 4]> = (0..n)
                .map(|_| {
                    let x = (rng.uniform() * 50.0) as f32;
                    let y = (rng.uniform() * 50.0) as f32;
                    [x, y, x + 1.0 + (rng.uniform() * 30.0) as f32, y + 1.0 + (rng.uniform() * 30.0) as f32]
                })
                .collect();
            let scores: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
            for overlap in [Overlap::Union, Overlap::Min] {
                let keep = nms(&boxes, &scores, 0.5, overlap);
                // Kept boxes are in descending score order and pairwise below the threshold;
                // every dropped box overlaps some kept box with a higher score.
                let o = |a: &[f32; 4], b: &[f32; 4]| {
                    let p = if overlap == Overlap::Min { 1.0 } else { 0.0 };
                    let ar = |b: &[f32; 4]| (b[2] - b[0] + p) * (b[3] - b[1] + p);
                    let w = (a[2].min(b[2]) - a[0].max(b[0]) + p).max(0.0);
                    let h = (a[3].min(b[3]) - a[1].max(b[1]) + p).max(0.0);
                    match overlap {
                        Overlap::Union => w * h / (ar(a) + ar(b) - w * h),
                        Overlap::Min => w * h / ar(a).min(ar(b)),
                    }
                };
                for w in keep.windows(2) {
                    assert!(scores[w[0]] >= scores[w[1]]);
                }
                for (x, &a) in keep.iter().enumerate() {
                    for &b in &keep[x + 1..] {
                        assert!(o(&boxes[a], &boxes[b]) <= 0.5);
                    }
                }
                for d in (0..n).filter(|i| !keep.contains(i)) {
                    assert!(keep.iter().any(|&k| scores[k] >= scores[d] && o(&boxes[k], &boxes[d]) > 0.5));
                }
            }
        }
    }
}
