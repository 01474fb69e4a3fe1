//! The MLP-fusion sum (bilinear resize of NHWC maps, `align_corners=False`, added) under the
//! emulator: vs an f64 reference, and bit for bit vs the f32 composite that `tensor::ops::interp`
//! computes (its `lerp_table` and separable blend, maps added in order).

mod common;
use common::*;
use kernels::fusion::{self, UpsampleSumShape, MAX_MAPS};
use kernels::{Bf16, Elem};
use proptest::prelude::*;

/// `(i0, i1, l1)` of PyTorch's source index rule, in f64.
fn src64(d: usize, inp: usize, out: usize) -> (usize, usize, f64) {
    let real = ((d as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0);
    let i0 = (real.floor() as usize).min(inp - 1);
    (i0, (i0 + 1).min(inp - 1), real - i0 as f64)
}

/// `(i0, i1, l0, l1)` as `interp::lerp_table` computes them, in f32.
fn lerp32(d: usize, inp: usize, out: usize) -> (usize, usize, f32, f32) {
    let scale = inp as f32 / out as f32;
    let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(inp - 1);
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    (i0, if i0 + 1 < inp { i0 + 1 } else { i0 }, 1.0 - l1, l1)
}

/// Maps `[b, h, w, c]` of sizes `sizes`, summed at `(oh, ow)`: checks against f64 (`atol`, `rtol`)
/// and that the result equals the f32 composite exactly.
fn check<E: Elem>(b: usize, c: usize, (oh, ow): (usize, usize), sizes: &[(usize, usize)], seed: u64, tol: f64) {
    let maps: Vec<Vec<E>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(h, w))| rand_vec(b * h * w * c, seed + i as u64).iter().map(|&v| E::from_f32(v)).collect())
        .collect();
    let n = b * oh * ow * c;
    let (mut want, mut exact) = (vec![0f64; n], vec![0f32; n]);
    for (m, &(h, w)) in maps.iter().zip(sizes) {
        let at = |bi: usize, y: usize, x: usize, k: usize| m[((bi * h + y) * w + x) * c + k].to_f32();
        for bi in 0..b {
            for y in 0..oh {
                for x in 0..ow {
                    for k in 0..c {
                        let o = ((bi * oh + y) * ow + x) * c + k;
                        let (y0, y1, ly) = src64(y, h, oh);
                        let (x0, x1, lx) = src64(x, w, ow);
                        let a = |yy: usize, xx: usize| at(bi, yy, xx, k) as f64;
                        want[o] += (a(y0, x0) * (1.0 - lx) + a(y0, x1) * lx) * (1.0 - ly)
                            + (a(y1, x0) * (1.0 - lx) + a(y1, x1) * lx) * ly;
                        exact[o] += if (h, w) == (oh, ow) {
                            at(bi, y, x, k)
                        } else {
                            let (y0, y1, ly0, ly1) = lerp32(y, h, oh);
                            let (x0, x1, lx0, lx1) = lerp32(x, w, ow);
                            let top = lx0 * at(bi, y0, x0, k) + lx1 * at(bi, y0, x1, k);
                            let bottom = lx0 * at(bi, y1, x0, k) + lx1 * at(bi, y1, x1, k);
                            ly0 * top + ly1 * bottom
                        };
                    }
                }
            }
        }
    }
    let mut s = UpsampleSumShape {
        n_maps: sizes.len() as u32,
        b: b as u32,
        c: c as u32,
        oh: oh as u32,
        ow: ow as u32,
        h: [0; MAX_MAPS],
        w: [0; MAX_MAPS],
    };
    let mut ptrs = [std::ptr::null::<E>(); MAX_MAPS];
    for (i, &(h, w)) in sizes.iter().enumerate() {
        (s.h[i], s.w[i]) = (h as u32, w as u32);
        ptrs[i] = maps[i].as_ptr();
    }
    let what = format!("upsample_sum b{b} c{c} out {oh}x{ow} maps {sizes:?}");
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); n];
        // A small grid so the grid-stride loop runs several rounds.
        let mut cfg = fusion::config(n);
        cfg.grid.x = cfg.grid.x.min(2);
        let po = out.as_mut_ptr();
        unsafe { run(cfg, order, |cx| fusion::upsample_sum_nhwc(cx, ptrs[0], ptrs[1], ptrs[2], ptrs[3], po, &s)) };
        let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        assert_close(&got, &want, tol, tol, &format!("{what} {order:?}"));
        for (i, (g, e)) in out.iter().zip(&exact).enumerate() {
            let e = E::from_f32(*e);
            assert!(
                g.to_f32().to_bits() == e.to_f32().to_bits(),
                "{what}: element {i}: {} vs f32 composite {}",
                g.to_f32(),
                e.to_f32()
            );
        }
    });
}

#[test]
fn model_pyramid_to_the_largest_map() {
    // The decoder's four stages at 1x, 1/2, 1/4, 1/8 resolution summed at the largest.
    check::<f32>(2, 3, (16, 16), &[(16, 16), (8, 8), (4, 4), (2, 2)], 1, 1e-5);
    check::<Bf16>(1, 5, (16, 16), &[(16, 16), (8, 8), (4, 4), (2, 2)], 2, 2e-2);
}

#[test]
fn downsampling_and_odd_sizes() {
    check::<f32>(1, 1, (5, 7), &[(11, 3), (1, 1), (5, 7)], 3, 1e-5);
    check::<f32>(1, 2, (1, 1), &[(3, 4)], 4, 1e-5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_maps(b in 1usize..3, c in 1usize..6, oh in 1usize..10, ow in 1usize..10,
                   sizes in prop::collection::vec((1usize..12, 1usize..12, any::<bool>()), 1..=MAX_MAPS),
                   bf16: bool, seed: u64) {
        // Some maps already at the output size (read directly).
        let sizes: Vec<(usize, usize)> = sizes.iter().map(|&(h, w, same)| if same { (oh, ow) } else { (h, w) }).collect();
        if bf16 {
            check::<Bf16>(b, c, (oh, ow), &sizes, seed, 2e-2);
        } else {
            check::<f32>(b, c, (oh, ow), &sizes, seed, 1e-5);
        }
    }
}
