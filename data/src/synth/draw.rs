//! Drawing one face from its parameters: every part is a polygon filled into the image and the
//! mask together ([`Canvas`]), back to front.

use image::GrayImage;
use tensor::SplitMix64;

use super::points::{cofw_from_template, COFW_SOURCES};
use super::raster::{convex_hull, ellipse, Canvas, P2};
use super::template::{template, Camera, Shape, FOREHEAD, HEAD_CENTRE};
use super::Face;
use crate::datasets::utkface::age_bin;
use crate::preprocess::RgbImage;

/// Indices into CelebA's 40 attributes.
pub const BLACK_HAIR: usize = 8;
pub const BLOND_HAIR: usize = 9;
pub const BROWN_HAIR: usize = 11;
pub const EYEGLASSES: usize = 15;
pub const GRAY_HAIR: usize = 17;
pub const MALE: usize = 20;
pub const MOUTH_SLIGHTLY_OPEN: usize = 21;
pub const NO_BEARD: usize = 24;
pub const SMILING: usize = 31;
pub const YOUNG: usize = 39;

/// Skin tones per race (the model's order), before lighting.
const SKIN: [[f64; 3]; 5] =
    [[236.0, 200.0, 180.0], [96.0, 62.0, 42.0], [168.0, 116.0, 80.0], [228.0, 196.0, 138.0], [190.0, 150.0, 150.0]];
/// Hair colours: black, blond, brown, gray, with their attribute.
const HAIR: [([f64; 3], usize); 4] = [
    ([28.0, 22.0, 20.0], BLACK_HAIR),
    ([228.0, 196.0, 110.0], BLOND_HAIR),
    ([112.0, 70.0, 38.0], BROWN_HAIR),
    ([175.0, 175.0, 172.0], GRAY_HAIR),
];

const EYE_WHITE: [u8; 3] = [240, 240, 236];

/// Everything random about a face; [`FaceParams::random`] draws it from a seed.
#[derive(Clone, Debug)]
pub struct FaceParams {
    pub seed: u64,
    pub size: usize,
    /// Pitch, yaw, roll in radians.
    pub pose: [f64; 3],
    pub centre: [f64; 2],
    pub focal: f64,
    pub age_years: u32,
    pub gender: u8,
    pub race: u8,
    /// Index into the hair colours (3 = gray).
    pub hair: usize,
    pub smiling: bool,
    pub mouth_open: bool,
    pub glasses: bool,
    pub beard: bool,
    /// An occluder: centre (as a fraction of the way from the face centre to a landmark) and size.
    pub occluder: Option<(usize, f64)>,
}

impl FaceParams {
    pub fn random(seed: u64) -> FaceParams {
        let mut rng = SplitMix64(SplitMix64(seed ^ 0x5EED_FACE).next_u64());
        let mut u = || rng.uniform();
        let size = 256 + (u() * 65.0) as usize;
        let pose = [
            (u() * 2.0 - 1.0) * 40f64.to_radians(),
            (u() * 2.0 - 1.0) * 60f64.to_radians(),
            (u() * 2.0 - 1.0) * 30f64.to_radians(),
        ];
        let focal = size as f64 * (0.2 + 0.06 * u());
        let centre = [size as f64 * (0.44 + 0.12 * u()), size as f64 * (0.47 + 0.12 * u())];
        let age_years = ((u() * 8.0) as u32 * 10 + (u() * 10.0) as u32).max(1);
        let gender = (u() < 0.5) as u8;
        let race = (u() * 5.0) as u8;
        let hair = if age_years >= 60 { 3 } else { (u() * 3.0) as usize };
        let (smiling, mouth_open, glasses) = (u() < 0.5, u() < 0.4, u() < 0.3);
        let beard = gender == 0 && u() < 0.4;
        let occluder = (u() < 0.25).then(|| ((u() * 68.0) as usize, 0.3 + 0.3 * u()));
        FaceParams {
            seed,
            size,
            pose,
            centre,
            focal,
            age_years,
            gender,
            race,
            hair,
            smiling,
            mouth_open,
            glasses,
            beard,
            occluder,
        }
    }
}

fn shade(c: [f64; 3], k: f64) -> [u8; 3] {
    c.map(|v| (v * k).round().clamp(0.0, 255.0) as u8)
}

/// Draw the face of `p`.
pub fn render(p: &FaceParams) -> Face {
    let mut rng = SplitMix64(p.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1CE);
    let n = p.size;
    // The age class the labels give this face (UTKFace's bins): what each age mark keys on.
    let bin = age_bin(p.age_years);
    let shape = Shape {
        smile: if p.smiling { 0.08 } else { 0.0 },
        open: if p.mouth_open { 0.1 } else { 0.0 },
        eye: match bin {
            0 => 1.35,
            1 => 1.15,
            _ => 1.0,
        },
        jaw: 0.1 * (rng.uniform() - 0.5),
    };
    let cam = Camera { pose: p.pose, centre: p.centre, focal: p.focal };
    let model = template(&shape);
    let proj: Vec<[f64; 3]> = model.iter().map(|&q| cam.project(q)).collect();
    let pt = |i: usize| -> P2 { [proj[i][0], proj[i][1]] };
    let at = |q: [f64; 3]| -> P2 {
        let r = cam.project(q);
        [r[0], r[1]]
    };
    let f = p.focal;
    let mut cv = Canvas::new(n, n);

    // Lighting: a linear gradient across the face, one direction per face.
    let (la, strength) = (rng.uniform() * std::f64::consts::TAU, 0.1 + 0.15 * rng.uniform());
    let (lx, ly) = (la.cos() * strength / f, la.sin() * strength / f);
    let (cx, cy) = (p.centre[0], p.centre[1]);
    let light = move |x: usize, y: usize| (1.0 + (x as f64 - cx) * lx + (y as f64 - cy) * ly).clamp(0.6, 1.4);

    // Background: a colour with a gradient, far from any skin tone in brightness or hue.
    let bg = [rng.uniform() * 255.0, rng.uniform() * 255.0, rng.uniform() * 255.0];
    let (gx, gy) = ((rng.uniform() - 0.5) * 80.0 / n as f64, (rng.uniform() - 0.5) * 80.0 / n as f64);
    let full = [[-1.0, -1.0], [n as f64, -1.0], [n as f64, n as f64], [-1.0, n as f64]];
    cv.fill(&full, Some(0), |x, y, _| bg.map(|v| (v + gx * x as f64 + gy * y as f64).clamp(0.0, 255.0) as u8));

    let skin_jitter = [0, 1, 2].map(|_| (rng.uniform() - 0.5) * 16.0);
    let skin = [0, 1, 2].map(|c| SKIN[p.race as usize][c] + skin_jitter[c]);
    let hair = HAIR[p.hair].0;
    let hair_px = |x: usize, y: usize| shade(hair, light(x, y) * (0.9 + 0.1 * ((x + 2 * y) % 5) as f64 / 4.0));

    // Hair behind the head (long for women).
    let head = pt(HEAD_CENTRE);
    cv.fill(&ellipse(head, 1.2 * f, 1.25 * f, p.pose[2], 48), Some(10), |x, y, _| hair_px(x, y));
    if p.gender == 1 {
        let long = [[-1.25, 0.3, -0.6], [-1.3, -1.4, -0.6], [1.3, -1.4, -0.6], [1.25, 0.3, -0.6]].map(at);
        cv.fill(&long, Some(10), |x, y, _| hair_px(x, y));
    }

    // Skin: the convex outline of the jaw and the forehead.
    let outline: Vec<P2> = (0..17).chain(FOREHEAD).map(pt).collect();
    let hull = convex_hull(&outline);
    cv.fill(&hull, Some(1), |x, y, _| shade(skin, light(x, y)));

    // Hair over the forehead: the band between the forehead arc and a lower arc. The hairline
    // recedes 0.06 a decade from 30 (bald on top from 60 for men), so age moves the hair-skin
    // boundary that parsing teaches the encoder to find, over hundreds of pixels a decade.
    let fringe = (if p.gender == 1 { 0.52 } else { 0.62 } + 0.06 * bin.saturating_sub(2) as f64).min(0.85);
    let mut band: Vec<P2> = FOREHEAD.map(pt).collect();
    let nf = FOREHEAD.len();
    for k in (0..nf).rev() {
        let phi = std::f64::consts::PI * (k as f64 + 0.5) / nf as f64;
        let jaw = model[16][0].abs();
        band.push(at([0.97 * jaw * phi.cos(), 0.3 + fringe * phi.sin(), -0.55 + 0.95 * phi.sin()]));
    }
    cv.fill(&band, Some(10), |x, y, _| hair_px(x, y));

    // Forehead wrinkles: one per age bin from 30-39 (five at 70+), so every bin from 2 up
    // looks different (bins 0 and 1 by their eye size).
    for k in 0..bin.saturating_sub(2) {
        let y = 0.64 + 0.035 * k as f64;
        let line: Vec<P2> = (0..5).map(|i| at([-0.26 + 0.13 * i as f64, y + 0.012 * (i % 2) as f64, 0.75])).collect();
        cv.stroke(&line, (0.018 * f).max(1.0), None, shade(skin, 0.6));
    }

    if p.beard {
        let mut beard: Vec<P2> = (3..=13).map(pt).collect();
        beard.extend([[0.33, -0.33, 0.7], [0.0, -0.3, 0.85], [-0.33, -0.33, 0.7]].map(at));
        let dark = [0, 1, 2].map(|c| 0.5 * skin[c] + 0.5 * hair[c]);
        cv.fill(&beard, Some(1), |x, y, _| shade(dark, 0.75 * light(x, y)));
    }

    // Nose: darker than the skin, with nostrils.
    let mut nose: Vec<P2> = [27, 31, 32, 33, 34, 35].map(pt).to_vec();
    nose.extend([[-0.12, 0.38, 0.62], [0.12, 0.38, 0.62]].map(at));
    cv.fill(&convex_hull(&nose), Some(6), |x, y, _| shade(skin, 0.8 * light(x, y)));
    for (a, b) in [(31, 32), (34, 35)] {
        let c = [(pt(a)[0] + pt(b)[0]) / 2.0, (pt(a)[1] + pt(b)[1]) / 2.0];
        cv.fill(&ellipse(c, 0.035 * f, 0.022 * f, p.pose[2], 12), Some(6), |_, _, _| shade(skin, 0.35));
    }

    // Eyes (image-left = class 4) with an iris, brows (image-left = class 2).
    let iris = [[70.0, 45.0, 30.0], [60.0, 90.0, 140.0], [40.0, 30.0, 25.0]][(p.seed % 3) as usize];
    for (first, class) in [(36, 4), (42, 5)] {
        let eye: Vec<P2> = (first..first + 6).map(pt).collect();
        cv.fill(&eye, Some(class), |_, _, _| EYE_WHITE);
        let c = [eye.iter().map(|q| q[0]).sum::<f64>() / 6.0, eye.iter().map(|q| q[1]).sum::<f64>() / 6.0];
        let r = 0.065 * f * shape.eye;
        // Only over the eye white (exact: noise comes last), so the iris stays inside the eye.
        cv.fill(&ellipse(c, r, r, 0.0, 16), None, |_, _, old| if old == EYE_WHITE { shade(iris, 1.0) } else { old });
    }
    let brow_colour = shade(hair, if p.hair == 1 || p.hair == 3 { 0.6 } else { 1.0 });
    for (first, class) in [(17, 2), (22, 3)] {
        let brow: Vec<P2> = (first..first + 5).map(pt).collect();
        cv.stroke(&brow, 0.09 * f, Some(class), brow_colour);
    }

    // Lips and the inner mouth.
    let lip = if p.gender == 1 { [196.0, 42.0, 64.0] } else { [160.0, 78.0, 78.0] };
    let upper: Vec<P2> = [48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60].map(pt).to_vec();
    let lower: Vec<P2> = [54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64].map(pt).to_vec();
    cv.fill(&upper, Some(7), |x, y, _| shade(lip, light(x, y)));
    cv.fill(&lower, Some(9), |x, y, _| shade(lip, 1.1 * light(x, y)));
    if p.mouth_open {
        let inner: Vec<P2> = (60..68).map(pt).collect();
        cv.fill(&inner, Some(8), |_, _, _| [52, 16, 22]);
    }

    if p.glasses {
        for first in [36, 42] {
            let (x0, x1) =
                (model[first][0].min(model[first + 3][0]) - 0.1, model[first][0].max(model[first + 3][0]) + 0.1);
            let y = model[first][1];
            let frame = [
                [x0, y + 0.16, 0.62],
                [x1, y + 0.16, 0.62],
                [x1, y - 0.14, 0.62],
                [x0, y - 0.14, 0.62],
                [x0, y + 0.16, 0.62],
            ];
            cv.stroke(&frame.map(at), 0.04 * f, None, [18, 18, 22]);
        }
        cv.stroke(&[[-0.2, 0.42, 0.66], [0.2, 0.42, 0.66]].map(at), 0.04 * f, None, [18, 18, 22]);
    }

    // The occluder hides pixels and labels: background in the mask.
    let mut occluder_poly: Option<Vec<P2>> = None;
    if let Some((landmark, frac)) = p.occluder {
        let c = pt(landmark);
        let colour = [rng.uniform() * 255.0, rng.uniform() * 255.0, rng.uniform() * 255.0];
        let poly = ellipse(c, frac * f, 0.7 * frac * f, rng.uniform() * 3.0, 24);
        cv.fill(&poly, Some(0), |x, y, _| shade(colour, 0.9 + 0.1 * ((x / 4 + y / 4) % 2) as f64));
        occluder_poly = Some(poly);
    }

    // Sensor noise, modest.
    for v in cv.rgb.iter_mut() {
        let e = (rng.next_u64() % 13) as i32 - 6;
        *v = (*v as i32 + e).clamp(0, 255) as u8;
    }

    let landmarks: Vec<[f32; 2]> = (0..68).map(|i| pt(i).map(|v| v as f32)).collect();
    let all2: Vec<P2> = (0..proj.len()).map(pt).collect();
    let cofw = cofw_from_template(&all2);
    let yaw = p.pose[1];
    let cofw_occluded: Vec<u8> = COFW_SOURCES
        .iter()
        .zip(&cofw)
        .map(|(src, q)| {
            // Far side: model x of the opposite sign to yaw (positive yaw turns the image-left
            // half away).
            let x = src.iter().map(|&i| model[i][0]).sum::<f64>() / src.len() as f64;
            let far = x * yaw < 0.0
                && ((yaw.abs() > 35f64.to_radians() && x.abs() >= 0.2)
                    || (yaw.abs() > 50f64.to_radians() && x.abs() > 0.05));
            let hidden = occluder_poly.as_ref().is_some_and(|poly| inside(poly, *q));
            (far || hidden) as u8
        })
        .collect();
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for q in &outline {
        for d in 0..2 {
            lo[d] = lo[d].min(q[d]);
            hi[d] = hi[d].max(q[d]);
        }
    }
    let mut attributes = [0u8; 40];
    attributes[HAIR[p.hair].1] = 1;
    attributes[EYEGLASSES] = p.glasses as u8;
    attributes[MALE] = (p.gender == 0) as u8;
    attributes[MOUTH_SLIGHTLY_OPEN] = p.mouth_open as u8;
    attributes[NO_BEARD] = (!p.beard) as u8;
    attributes[SMILING] = p.smiling as u8;
    attributes[YOUNG] = (p.age_years < 30) as u8;

    Face {
        image: RgbImage::from_raw(n as u32, n as u32, cv.rgb).expect("n*n*3 bytes"),
        mask: GrayImage::from_raw(n as u32, n as u32, cv.mask).expect("n*n bytes"),
        landmarks,
        pose: p.pose.map(|v| v as f32),
        attributes,
        age_years: p.age_years,
        gender: p.gender,
        race: p.race,
        cofw_points: cofw.iter().map(|q| q.map(|v| v as f32)).collect(),
        cofw_occluded,
        face_box: [lo[0] as f32, lo[1] as f32, hi[0] as f32, hi[1] as f32],
    }
}

/// Even-odd point in polygon.
fn inside(poly: &[P2], q: [f64; 2]) -> bool {
    let mut odd = false;
    for (i, a) in poly.iter().enumerate() {
        let b = poly[(i + 1) % poly.len()];
        if (a[1] <= q[1]) != (b[1] <= q[1]) && q[0] < a[0] + (q[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]) {
            odd = !odd;
        }
    }
    odd
}
