//! Other datasets' point sets derived from the synthetic face's 68 points (and the template's
//! helper points, already projected).
//!
//! COFW's 29 (the LFPW-derived order of RCPR/COFW, whose mirror pairs are HRNet's
//! `MATCHED_PARTS["COFW"]`), "left" = image left, 0-based 68 indices:
//!
//! | COFW | meaning | from |
//! |---|---|---|
//! | 0, 1 | brow outer corners | 17, 26 |
//! | 2, 3 | brow inner corners | 21, 22 |
//! | 4, 5 / 6, 7 | left / right brow centre top, bottom | helper points above/below 19 / 24 |
//! | 8, 9 | eye outer corners | 36, 45 |
//! | 10, 11 | eye inner corners | 39, 42 |
//! | 12, 13 / 14, 15 | left / right eye top, bottom | mean(37, 38), mean(40, 41) / mean(43, 44), mean(46, 47) |
//! | 16, 17 | pupils | mean(36..=41), mean(42..=47) |
//! | 18, 19 | nostril wings | 31, 35 |
//! | 20, 21 | nose tip, nose bottom | 30, 33 |
//! | 22, 23 | mouth corners | 48, 54 |
//! | 24..=27 | upper lip top, upper lip bottom, lower lip top, lower lip bottom | 51, 62, 66, 57 |
//! | 28 | chin | 8 |
//!
//! LaPa's 106 (the JD-106 layout, approximately): contour 0..=32 at half steps along the jaw,
//! upper brows 33..=42 (17..=26), nose bridge 43..=46 (27..=30), nostril line 47..=51 (31..=35),
//! eyes 52..=63 (36..=47), lower brows 64..=71 (midpoints of consecutive brow points), eye
//! top/bottom/centre 72..=77, nose sides 78..=83 (midpoints), outer lips 84..=95 (48..=59), inner
//! lips 96..=103 (60..=67), pupils 104, 105. The LaPa reader only places its crop with them.

use super::template::{BROW_BOTTOM_L, BROW_BOTTOM_R, BROW_TOP_L, BROW_TOP_R};

type P = [f64; 2];

fn mean(p: &[P], idx: &[usize]) -> P {
    let n = idx.len() as f64;
    [idx.iter().map(|&i| p[i][0]).sum::<f64>() / n, idx.iter().map(|&i| p[i][1]).sum::<f64>() / n]
}

/// The 29 COFW points from the projected template (68 points and the helpers).
pub fn cofw_from_template(p: &[P]) -> Vec<P> {
    let one = |i: usize| p[i];
    vec![
        one(17),
        one(26),
        one(21),
        one(22),
        one(BROW_TOP_L),
        one(BROW_BOTTOM_L),
        one(BROW_TOP_R),
        one(BROW_BOTTOM_R),
        one(36),
        one(45),
        one(39),
        one(42),
        mean(p, &[37, 38]),
        mean(p, &[40, 41]),
        mean(p, &[43, 44]),
        mean(p, &[46, 47]),
        mean(p, &[36, 37, 38, 39, 40, 41]),
        mean(p, &[42, 43, 44, 45, 46, 47]),
        one(31),
        one(35),
        one(30),
        one(33),
        one(48),
        one(54),
        one(51),
        one(62),
        one(66),
        one(57),
        one(8),
    ]
}

/// Which of the 68 points (or helpers) each COFW point is made from, for visibility.
pub const COFW_SOURCES: [&[usize]; 29] = [
    &[17],
    &[26],
    &[21],
    &[22],
    &[19],
    &[19],
    &[24],
    &[24],
    &[36],
    &[45],
    &[39],
    &[42],
    &[37, 38],
    &[40, 41],
    &[43, 44],
    &[46, 47],
    &[36, 37, 38, 39, 40, 41],
    &[42, 43, 44, 45, 46, 47],
    &[31],
    &[35],
    &[30],
    &[33],
    &[48],
    &[54],
    &[51],
    &[62],
    &[66],
    &[57],
    &[8],
];

/// LaPa's 106 points from the 68.
pub fn lapa106_from_68(p: &[P]) -> Vec<P> {
    let mid = |a: usize, b: usize| mean(p, &[a, b]);
    let mut out: Vec<P> = (0..33).map(|k| if k % 2 == 0 { p[k / 2] } else { mid(k / 2, k / 2 + 1) }).collect();
    out.extend((17..=26).map(|i| p[i]));
    out.extend((27..=35).map(|i| p[i]));
    out.extend((36..=47).map(|i| p[i]));
    out.extend((17..21).map(|i| mid(i, i + 1)));
    out.extend((22..26).map(|i| mid(i, i + 1)));
    out.extend([mid(37, 38), mid(40, 41), mean(p, &[36, 37, 38, 39, 40, 41])]);
    out.extend([mid(43, 44), mid(46, 47), mean(p, &[42, 43, 44, 45, 46, 47])]);
    out.extend([mid(28, 31), mid(28, 35), mid(31, 32), mid(34, 35), mid(32, 33), mid(33, 34)]);
    out.extend((48..=67).map(|i| p[i]));
    out.extend([mean(p, &[36, 37, 38, 39, 40, 41]), mean(p, &[42, 43, 44, 45, 46, 47])]);
    out
}
