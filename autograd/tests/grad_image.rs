//! max_pool2d (ceil mode), bilinear and area interpolation against finite differences.

mod common;

use autograd::Var;
use common::*;
use proptest::prelude::*;

/// PyTorch's pooled size: the last window must start inside the input or its left padding.
fn pool_out(h: usize, k: usize, s: usize, p: usize, ceil: bool) -> usize {
    let span = h + 2 * p - k;
    let mut o = if ceil { span.div_ceil(s) } else { span / s } + 1;
    if ceil && (o - 1) * s >= h + p {
        o -= 1;
    }
    o
}

/// (index, weight) taps of bilinear, align_corners=False.
fn bilinear_taps(n_in: usize, n_out: usize) -> Vec<[(usize, f64); 2]> {
    (0..n_out)
        .map(|d| {
            let src = ((d as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let l = src - i0 as f64;
            [(i0, 1.0 - l), (i1, l)]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn max_pool2d_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (n, c) = (1 + rng.below(2), 1 + rng.below(3));
        let (kh, kw) = (1 + rng.below(3), 1 + rng.below(3));
        let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
        let (ph, pw) = (rng.below(kh / 2 + 1), rng.below(kw / 2 + 1));
        let (h, w) = (kh + rng.below(5), kw + rng.below(5));
        let ceil = rng.coin();
        let (ho, wo) = (pool_out(h, kh, sh, ph, ceil), pool_out(w, kw, sw, pw, ceil));
        let x = Input::new(rng.distinct(n * c * h * w), &[n, c, h, w]);
        let reference = move |d: &[Vec<f64>]| {
            let mut out = Vec::new();
            for plane in d[0].chunks(h * w) {
                for i in 0..ho { for j in 0..wo {
                    let mut m = f64::NEG_INFINITY;
                    for a in 0..kh { for b in 0..kw {
                        let (y, x) = ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                        if y >= 0 && (y as usize) < h && x >= 0 && (x as usize) < w {
                            m = m.max(plane[y as usize * w + x as usize]);
                        }
                    }}
                    out.push(m);
                }}
            }
            out
        };
        let md = mode(rng.below(3));
        let what = format!("max_pool2d [{n},{c},{h},{w}] k ({kh},{kw}) s ({sh},{sw}) p ({ph},{pw}) ceil {ceil}");
        check_grads(&what, &[x], md, &mut rng, reference, |v| v[0].max_pool2d((kh, kw), (sh, sw), (ph, pw), ceil));
    }

    /// Up- and down-sampling, including to and from size 1.
    #[test]
    fn interpolate_bilinear_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (n, c, h, w) = (1 + rng.below(2), 1 + rng.below(2), 1 + rng.below(5), 1 + rng.below(5));
        let (ho, wo) = (1 + rng.below(7), 1 + rng.below(7));
        let (ty, tx) = (bilinear_taps(h, ho), bilinear_taps(w, wo));
        let x = Input::new(rng.vec(n * c * h * w, -2.0, 2.0), &[n, c, h, w]);
        let reference = move |d: &[Vec<f64>]| {
            let mut out = Vec::new();
            for plane in d[0].chunks(h * w) {
                for ry in &ty { for rx in &tx {
                    out.push(ry.iter().flat_map(|&(p, a)| rx.iter().map(move |&(q, b)| a * b * plane[p * w + q])).sum());
                }}
            }
            out
        };
        let md = mode(rng.below(3));
        check_grads(&format!("bilinear [{n},{c},{h},{w}] -> ({ho},{wo})"), &[x], md, &mut rng, reference,
            |v| v[0].interpolate_bilinear((ho, wo)));
    }

    /// Area interpolation (adaptive average pooling), also with sizes that do not divide.
    #[test]
    fn interpolate_area_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (n, c, h, w) = (1 + rng.below(2), 1 + rng.below(2), 1 + rng.below(7), 1 + rng.below(7));
        let (ho, wo) = (1 + rng.below(h), 1 + rng.below(w));
        let x = Input::new(rng.vec(n * c * h * w, -2.0, 2.0), &[n, c, h, w]);
        let win = |i: usize, a: usize, b: usize| (i * a / b, ((i + 1) * a).div_ceil(b));
        let reference = move |d: &[Vec<f64>]| {
            let mut out = Vec::new();
            for plane in d[0].chunks(h * w) {
                for i in 0..ho { for j in 0..wo {
                    let ((y0, y1), (x0, x1)) = (win(i, h, ho), win(j, w, wo));
                    let s: f64 = (y0..y1).flat_map(|y| (x0..x1).map(move |x| plane[y * w + x])).sum();
                    out.push(s / ((y1 - y0) * (x1 - x0)) as f64);
                }}
            }
            out
        };
        let md = mode(rng.below(3));
        check_grads(&format!("area [{n},{c},{h},{w}] -> ({ho},{wo})"), &[x], md, &mut rng, reference,
            |v: &[Var]| v[0].interpolate_area((ho, wo)));
    }
}
