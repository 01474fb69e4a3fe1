//! Index-remapping kernels under the emulator vs straightforward references.

mod common;
use common::*;
use kernels::emu::LaunchConfig;
use kernels::{remap, Bf16, Elem};
use proptest::prelude::*;

/// Runs `body` over a poisoned output of `n` elements under each order; returns the last output.
fn launch_out<E: Elem>(n: usize, body: impl Fn(LaunchConfig, kernels::emu::Order, *mut E)) -> Vec<f32> {
    let mut last = vec![];
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); n];
        // A small grid so the grid-stride loop runs several rounds.
        let mut cfg = remap::config(n);
        cfg.grid.x = cfg.grid.x.min(3);
        body(cfg, order, out.as_mut_ptr());
        last = out.iter().map(|v| v.to_f32()).collect();
        assert!(last.iter().all(|v| !v.is_nan()), "unwritten output under {order:?}");
    });
    last
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn window_partition_and_reverse(b in 1usize..3, nwh in 1usize..4, nww in 1usize..4, ws in 1usize..8,
                                    ch in 1usize..5, shift_on: bool, seed: u64) {
        let (h, w) = (nwh * ws, nww * ws);
        let shift = if shift_on { ws / 2 } else { 0 };
        let x = rand_vec(b * h * w * ch, seed);
        // Reference: roll by -shift, then cut windows.
        let mut want = Vec::with_capacity(x.len());
        for bi in 0..b { for wh in 0..nwh { for ww in 0..nww { for ih in 0..ws { for iw in 0..ws { for k in 0..ch {
            let (sh, sw) = ((wh * ws + ih + shift) % h, (ww * ws + iw + shift) % w);
            want.push(x[((bi * h + sh) * w + sw) * ch + k] as f64);
        }}}}}}
        let args = (b as u32, h as u32, w as u32, ch as u32, ws as u32, shift as u32);
        let px = x.as_ptr();
        let got = launch_out::<f32>(x.len(), |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::window_partition(c, px, po, args.0, args.1, args.2, args.3, args.4, args.5))
        });
        assert_close(&got, &want, 0.0, 0.0, "window_partition");
        let pg = got.as_ptr();
        let back = launch_out::<f32>(x.len(), |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::window_reverse(c, pg, std::ptr::null(), po, args.0, args.1, args.2, args.3, args.4, args.5))
        });
        let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        assert_close(&back, &xs, 0.0, 0.0, "window_reverse(window_partition(x)) = x");
        // With a residual: r + x, exactly (one f32 add per element).
        let r = rand_vec(x.len(), seed + 1);
        let pr = r.as_ptr();
        let summed = launch_out::<f32>(x.len(), |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::window_reverse(c, pg, pr, po, args.0, args.1, args.2, args.3, args.4, args.5))
        });
        let want: Vec<f64> = x.iter().zip(&r).map(|(&v, &r)| (r + v) as f64).collect();
        assert_close(&summed, &want, 0.0, 0.0, "window_reverse(window_partition(x)) + r = x + r");
    }

    #[test]
    fn patch_merge_order(b in 1usize..3, h2 in 1usize..5, w2 in 1usize..5, ch in 1usize..6, seed: u64) {
        let (h, w) = (2 * h2, 2 * w2);
        let x = to_bf16(&rand_vec(b * h * w * ch, seed));
        let mut want = vec![];
        for bi in 0..b { for i in 0..h2 { for j in 0..w2 { for (dh, dw) in [(0, 0), (1, 0), (0, 1), (1, 1)] { for k in 0..ch {
            want.push(x[((bi * h + 2 * i + dh) * w + 2 * j + dw) * ch + k].to_f32() as f64);
        }}}}}
        let px = x.as_ptr();
        let got = launch_out::<Bf16>(x.len(), |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::patch_merge(c, px, po, b as u32, h as u32, w as u32, ch as u32))
        });
        assert_close(&got, &want, 0.0, 0.0, "patch_merge");
    }

    #[test]
    fn bilinear_align_corners_false(nc in 1usize..3, h in 1usize..9, w in 1usize..9, oh in 1usize..20, ow in 1usize..20, seed: u64) {
        let x = rand_vec(nc * h * w, seed);
        let src = |d: usize, inp: usize, out: usize| -> (usize, usize, f64) {
            let real = ((d as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(inp - 1);
            (i0, (i0 + 1).min(inp - 1), real - i0 as f64)
        };
        let mut want = vec![];
        for p in 0..nc { for y in 0..oh { for xx in 0..ow {
            let (y0, y1, ly) = src(y, h, oh);
            let (x0, x1, lx) = src(xx, w, ow);
            let at = |a: usize, b: usize| x[(p * h + a) * w + b] as f64;
            want.push((at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx) * (1.0 - ly) + (at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx) * ly);
        }}}
        let px = x.as_ptr();
        let got = launch_out::<f32>(nc * oh * ow, |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::upsample_bilinear(c, px, po, nc as u32, h as u32, w as u32, oh as u32, ow as u32))
        });
        assert_close(&got, &want, 1e-6, 1e-6, "upsample_bilinear");
    }

    #[test]
    fn conv_transpose_2x2_stride2(n in 1usize..3, cin in 1usize..6, cout in 1usize..5, h in 1usize..6, w in 1usize..6, bias_on: bool, seed: u64) {
        let x = rand_vec(n * cin * h * w, seed);
        let wt = rand_vec(cin * cout * 4, seed + 1);
        let bias = rand_vec(cout, seed + 2);
        let (oh, ow) = (2 * h, 2 * w);
        let mut want = vec![];
        for ni in 0..n { for co in 0..cout { for y in 0..oh { for xx in 0..ow {
            let mut s = if bias_on { bias[co] as f64 } else { 0.0 };
            for ci in 0..cin {
                s += x[((ni * cin + ci) * h + y / 2) * w + xx / 2] as f64 * wt[((ci * cout + co) * 2 + y % 2) * 2 + xx % 2] as f64;
            }
            want.push(s);
        }}}}
        let (px, pw) = (x.as_ptr(), wt.as_ptr());
        let pb = if bias_on { bias.as_ptr() } else { std::ptr::null() };
        let got = launch_out::<f32>(n * cout * oh * ow, |cfg, order, po| unsafe {
            run(cfg, order, |c| remap::conv_transpose2x2(c, px, pw, pb, po, n as u32, cin as u32, cout as u32, h as u32, w as u32))
        });
        assert_close(&got, &want, 1e-5, 1e-5, "conv_transpose2x2");
    }
}
