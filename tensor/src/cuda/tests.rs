//! Every kernel on the real GPU against a plain CPU reference (f64), and (ignored by default) the
//! timing table that `scripts/gpu-check.sh` prints. Without a GPU each test says it was skipped.

use super::launch::*;
use super::{CudaDevice, CudaError};
use half::bf16;
use std::sync::Arc;

fn device() -> Option<Arc<CudaDevice>> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(CudaError::Unavailable(why)) => {
            eprintln!("skipped: no CUDA device ({why})");
            None
        }
        Err(e) => panic!("CUDA device present but unusable: {e}"),
    }
}

/// Values in [-1, 1) from the crate's SplitMix64 (the same stream as the kernels' tests).
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = crate::SplitMix64(seed);
    (0..n).map(|_| (r.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
}

fn gelu64(x: f64) -> f64 {
    // erf by its Taylor series is enough for |x| < 6 in f64 at these magnitudes.
    let z = x / std::f64::consts::SQRT_2;
    let erf = if z.abs() > 5.0 {
        z.signum()
    } else {
        let (mut sum, mut term) = (z, z);
        for n in 1..120 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    };
    0.5 * x * (1.0 + erf)
}

/// ‖got − want‖ / ‖want‖, with NaN failing.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output (unwritten element?)");
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn cuda_binary_bias_gelu() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (1000, 384);
    let a = rand_vec(rows * cols, 1).iter().map(|x| x * 3.0).collect::<Vec<_>>();
    let b = rand_vec(cols, 2);
    let want: Vec<f64> = (0..rows * cols).map(|i| gelu64(a[i] as f64 + b[i % cols] as f64)).collect();
    let (da, db) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
    let out = dev.alloc::<f32>(rows * cols).unwrap();
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.binary(&da, Some(&db), &out, OP_ADD, ACT_GELU).unwrap();
    let e = rel_err(&dev.download(&out).unwrap(), &want);
    assert!(e < 1e-6, "f32 bias+gelu rel err {e}");
    // bf16 in/out
    let ab: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let bb: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let want: Vec<f64> = (0..rows * cols).map(|i| (ab[i].to_f64() * bb[i % cols].to_f64()).max(0.0)).collect();
    let (da, db) = (dev.upload(&ab).unwrap(), dev.upload(&bb).unwrap());
    let out = dev.alloc::<bf16>(rows * cols).unwrap();
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.binary(&da, Some(&db), &out, OP_MUL, ACT_RELU).unwrap();
    let got: Vec<f32> = dev.download(&out).unwrap().iter().map(|x| x.to_f32()).collect();
    let e = rel_err(&got, &want);
    assert!(e < 5e-3, "bf16 mul+relu rel err {e}");
}

#[test]
fn cuda_softmax_and_layernorm() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (777, 211);
    let x: Vec<f32> = rand_vec(rows * cols, 3).iter().map(|v| v * 6.0).collect();
    let dx = dev.upload(&x).unwrap();
    let out = dev.alloc::<f32>(rows * cols).unwrap();
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.softmax_rows(&dx, &out, rows, cols).unwrap();
    let want: Vec<f64> = x
        .chunks(cols)
        .flat_map(|r| {
            let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
            r.iter().map(move |&v| (v as f64 - m).exp() / s)
        })
        .collect();
    let e = rel_err(&dev.download(&out).unwrap(), &want);
    assert!(e < 1e-5, "softmax rel err {e}");

    let g = rand_vec(cols, 4);
    let b = rand_vec(cols, 5);
    let (dg, db) = (dev.upload(&g).unwrap(), dev.upload(&b).unwrap());
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.layernorm_rows(&dx, Some(&dg), Some(&db), &out, rows, cols, 1e-5).unwrap();
    let ln = |x: &[f32], n: usize, gi: &dyn Fn(usize) -> usize| -> Vec<f64> {
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        x.iter()
            .enumerate()
            .map(|(j, &v)| (v as f64 - mean) / (var + 1e-5).sqrt() * g[gi(j)] as f64 + b[gi(j)] as f64)
            .collect()
    };
    let want: Vec<f64> = x.chunks(cols).flat_map(|r| ln(r, cols, &|j| j)).collect();
    let e = rel_err(&dev.download(&out).unwrap(), &want);
    assert!(e < 1e-5, "layernorm rel err {e}");

    // LayerNorm2d: [n=3, ch=cols, hw=rows/3 rounded] over channels.
    let (n, ch, hw) = (3, cols, rows / 3);
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.layernorm2d(&dx, Some(&dg), Some(&db), &out, n, ch, hw, 1e-5).unwrap();
    let got = dev.download(&out).unwrap();
    let mut want = vec![0f64; n * ch * hw];
    for i in 0..n {
        for p in 0..hw {
            let col: Vec<f32> = (0..ch).map(|k| x[(i * ch + k) * hw + p]).collect();
            for (k, v) in ln(&col, ch, &|j| j).into_iter().enumerate() {
                want[(i * ch + k) * hw + p] = v;
            }
        }
    }
    let e = rel_err(&got[..n * ch * hw], &want);
    assert!(e < 1e-5, "layernorm2d rel err {e}");
}

fn gemm_ref(a: &[f32], b_nk: &[f32], bias: &[f32], m: usize, n: usize, k: usize, act: u32) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|kk| a[i * k + kk] as f64 * b_nk[j * k + kk] as f64).sum::<f64>() + bias[j] as f64;
            out[i * n + j] = if act == ACT_GELU { gelu64(s) } else { s };
        }
    }
    out
}

#[test]
fn cuda_gemm_tc_and_f32() {
    let Some(dev) = device() else { return };
    for &(m, n, k) in &[(300, 200, 136), (3136 / 4, 384, 96), (129, 131, 61)] {
        let a: Vec<bf16> = rand_vec(m * k, 6).iter().map(|&x| bf16::from_f32(x)).collect();
        let b: Vec<bf16> = rand_vec(n * k, 7).iter().map(|&x| bf16::from_f32(x)).collect();
        let bias = rand_vec(n, 8);
        let af: Vec<f32> = a.iter().map(|x| x.to_f32()).collect();
        let bf: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
        let want = gemm_ref(&af, &bf, &bias, m, n, k, ACT_GELU);
        let (da, db, dbias) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap(), dev.upload(&bias).unwrap());
        let s = TcStrides { lda: k as u64, ldb: k as u64, ldc: n as u64, batch_a: 0, batch_b: 0, batch_c: 0 };
        let out = dev.alloc::<f32>(m * n).unwrap();
        dev.fill_bytes(&out, 0xff).unwrap();
        dev.gemm_tc(&da, &db, Some(&dbias), &out, (1, m, n, k), s, 1.0, ACT_GELU).unwrap();
        let e = rel_err(&dev.download(&out).unwrap(), &want);
        assert!(e < 1e-5, "gemm_tc bf16->f32 {m}x{n}x{k} rel err {e}");
        let outb = dev.alloc::<bf16>(m * n).unwrap();
        dev.fill_bytes(&outb, 0xff).unwrap();
        dev.gemm_tc(&da, &db, Some(&dbias), &outb, (1, m, n, k), s, 1.0, ACT_GELU).unwrap();
        let got: Vec<f32> = dev.download(&outb).unwrap().iter().map(|x| x.to_f32()).collect();
        let e = rel_err(&got, &want);
        assert!(e < 5e-3, "gemm_tc bf16->bf16 {m}x{n}x{k} rel err {e}");

        // f32 SIMT path on the same numbers, B read transposed through strides.
        let (da, db) = (dev.upload(&af).unwrap(), dev.upload(&bf).unwrap());
        let s = GemmStrides {
            a_rs: k as u64,
            a_cs: 1,
            b_rs: 1,
            b_cs: k as u64,
            c_rs: n as u64,
            batch_a: 0,
            batch_b: 0,
            batch_c: 0,
        };
        dev.fill_bytes(&out, 0xff).unwrap();
        dev.gemm_f32(&da, &db, Some(&dbias), &out, (1, m, n, k), s, 1.0, ACT_GELU).unwrap();
        let e = rel_err(&dev.download(&out).unwrap(), &want);
        assert!(e < 1e-5, "gemm_f32 {m}x{n}x{k} rel err {e}");
    }
}

/// Composite reference for attention with head dim 32 (scores materialised, f64).
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    mask: &[f32],
    n_mask: usize,
    bhs: (usize, usize),
    nq: usize,
    nk: usize,
) -> Vec<f64> {
    const D: usize = 32;
    let (batch, heads) = bhs;
    let scale = 1.0 / (D as f64).sqrt();
    let mut out = vec![0f64; batch * heads * nq * D];
    for b in 0..batch {
        for h in 0..heads {
            let bh = b * heads + h;
            for i in 0..nq {
                let sc: Vec<f64> = (0..nk)
                    .map(|j| {
                        let dot: f64 =
                            (0..D).map(|d| q[(bh * nq + i) * D + d] as f64 * k[(bh * nk + j) * D + d] as f64).sum();
                        dot * scale + bias[(h * nq + i) * nk + j] as f64 + mask[((b % n_mask) * nq + i) * nk + j] as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let sum: f64 = p.iter().sum();
                for d in 0..D {
                    out[(bh * nq + i) * D + d] =
                        (0..nk).map(|j| p[j] * v[(bh * nk + j) * D + d] as f64).sum::<f64>() / sum;
                }
            }
        }
    }
    out
}

#[test]
fn cuda_attention_window_and_decoder() {
    let Some(dev) = device() else { return };
    // Swin windows (49 x 49, bias and shift mask) and the decoder's 18 queries over 3136 keys.
    for &(batch, heads, nq, nk, n_mask) in &[(16, 3, 49, 49, 4), (2, 2, 18, 3136, 1), (1, 2, 3136, 18, 1)] {
        let q = rand_vec(batch * heads * nq * 32, 11);
        let k = rand_vec(batch * heads * nk * 32, 12);
        let v = rand_vec(batch * heads * nk * 32, 13);
        let bias = rand_vec(heads * nq * nk, 14);
        let mask: Vec<f32> = (0..n_mask * nq * nk).map(|e| if e % 7 == 0 { -100.0 } else { 0.0 }).collect();
        let want = attention_ref(&q, &k, &v, &bias, &mask, n_mask, (batch, heads), nq, nk);
        let (dq, dk, dv) = (dev.upload(&q).unwrap(), dev.upload(&k).unwrap(), dev.upload(&v).unwrap());
        let (db, dm) = (dev.upload(&bias).unwrap(), dev.upload(&mask).unwrap());
        let out = dev.alloc::<f32>(q.len()).unwrap();
        dev.fill_bytes(&out, 0xff).unwrap();
        let s = AttnShape::head_major(heads, nq, nk, n_mask, 1.0 / 32f32.sqrt(), 32);
        dev.attention(&dq, &dk, &dv, Some(&db), Some(&dm), &out, batch, s).unwrap();
        let e = rel_err(&dev.download(&out).unwrap(), &want);
        assert!(e < 1e-5, "attention {batch}x{heads}x{nq}x{nk} rel err {e}");
    }
}

/// The tensor-core attention on the device against the f64 reference on the inputs as bf16 sees
/// them, at the Swin window and decoder shapes.
#[test]
fn cuda_attention_tc_window_and_decoder() {
    let Some(dev) = device() else { return };
    for &(batch, heads, nq, nk, n_mask) in &[(16, 3, 49, 49, 4), (2, 2, 18, 3136, 1), (1, 2, 3136, 18, 1)] {
        let round = |v: Vec<f32>| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
        let (q, k, v) = (
            round(rand_vec(batch * heads * nq * 32, 21)),
            round(rand_vec(batch * heads * nk * 32, 22)),
            round(rand_vec(batch * heads * nk * 32, 23)),
        );
        let wide = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
        let bias = rand_vec(heads * nq * nk, 24);
        let mask: Vec<f32> = (0..n_mask * nq * nk).map(|e| if e % 7 == 0 { -100.0 } else { 0.0 }).collect();
        let want = attention_ref(&wide(&q), &wide(&k), &wide(&v), &bias, &mask, n_mask, (batch, heads), nq, nk);
        let (dq, dk, dv) = (dev.upload(&q).unwrap(), dev.upload(&k).unwrap(), dev.upload(&v).unwrap());
        let (db, dm) = (dev.upload(&bias).unwrap(), dev.upload(&mask).unwrap());
        let out = dev.alloc::<bf16>(q.len()).unwrap();
        dev.fill_bytes(&out, 0xff).unwrap();
        let s = AttnShape::head_major(heads, nq, nk, n_mask, 1.0 / 32f32.sqrt(), 32);
        dev.attention_tc(&dq, &dk, &dv, Some(&db), Some(&dm), &out, batch, s).unwrap();
        let e = rel_err(&wide(&dev.download(&out).unwrap()), &want);
        // P enters the tensor cores as bf16 and the output is bf16.
        assert!(e < 1e-2, "attention_tc {batch}x{heads}x{nq}x{nk} rel err {e}");
    }
}

/// The remapping kernels on the device against the same bodies under the CPU emulator (which the
/// kernels crate tests against plain references): the results must be bit-identical for the pure
/// gathers and within rounding for the arithmetic ones.
#[test]
fn cuda_remap_kernels_match_emulator() {
    use kernels::abi::{ConvTranspose2x2, PatchMerge, UpsampleBilinear, WindowPartition};
    use kernels::emu::{launch_args, Order};
    use kernels::remap;
    let Some(dev) = device() else { return };
    let emu = |n: usize, f: &dyn Fn(kernels::emu::LaunchConfig, *mut f32)| -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        f(remap::config(n), out.as_mut_ptr());
        out
    };
    // Window partition with shift 3 on [2, 56, 56, 8] (7x7 windows), then reverse.
    let (b, h, w, ch, ws, sh) = (2usize, 56usize, 56usize, 8usize, 7usize, 3usize);
    let x = rand_vec(b * h * w * ch, 21);
    let dx = dev.upload(&x).unwrap();
    let out = dev.alloc::<f32>(x.len()).unwrap();
    dev.fill_bytes(&out, 0xff).unwrap();
    dev.window_partition(&dx, &out, (b, h, w, ch), ws, sh, false).unwrap();
    let got = dev.download(&out).unwrap();
    let px = x.as_ptr();
    let [b32, h32, w32, ch32, ws32, sh32] = [b, h, w, ch, ws, sh].map(|v| v as u32);
    let want = emu(x.len(), &|cfg, out| unsafe {
        let args = WindowPartition { x: px, out, b: b32, h: h32, w: w32, ch: ch32, ws: ws32, shift: sh32 };
        launch_args(cfg, Order::Forward, &args)
    });
    assert_eq!(got, want, "window_partition");
    let back = dev.alloc::<f32>(x.len()).unwrap();
    dev.window_partition(&out, &back, (b, h, w, ch), ws, sh, true).unwrap();
    assert_eq!(dev.download(&back).unwrap(), x, "window_reverse");

    // Patch merging [2, 56, 56, 8] -> [2, 28, 28, 32].
    dev.patch_merge(&dx, &out, (b, h, w, ch)).unwrap();
    let want = emu(x.len(), &|cfg, out| unsafe {
        launch_args(cfg, Order::Forward, &PatchMerge { x: px, out, b: b32, h: h32, w: w32, ch: ch32 })
    });
    assert_eq!(dev.download(&out).unwrap(), want, "patch_merge");

    // Bilinear 14x14 -> 56x56 on 16 planes.
    let (nc, ih, iw, oh, ow) = (16usize, 14usize, 14usize, 56usize, 56usize);
    let xi = rand_vec(nc * ih * iw, 22);
    let dxi = dev.upload(&xi).unwrap();
    let up = dev.alloc::<f32>(nc * oh * ow).unwrap();
    dev.fill_bytes(&up, 0xff).unwrap();
    dev.upsample_bilinear(&dxi, &up, (nc, ih, iw), (oh, ow)).unwrap();
    let pxi = xi.as_ptr();
    let want = emu(nc * oh * ow, &|cfg, out| unsafe {
        let [nc, h, w, oh, ow] = [nc, ih, iw, oh, ow].map(|v| v as u32);
        launch_args(cfg, Order::Forward, &UpsampleBilinear { x: pxi, out, nc, h, w, oh, ow })
    });
    let e = rel_err(&dev.download(&up).unwrap(), &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert!(e < 1e-6, "upsample_bilinear rel err {e}");

    // Transposed conv 2x2 s2: [2, 32, 14, 14] -> [2, 16, 28, 28].
    let (n, cin, cout, hh, ww) = (2usize, 32usize, 16usize, 14usize, 14usize);
    let xc = rand_vec(n * cin * hh * ww, 23);
    let wt = rand_vec(cin * cout * 4, 24);
    let bias = rand_vec(cout, 25);
    let (dxc, dwt, db) = (dev.upload(&xc).unwrap(), dev.upload(&wt).unwrap(), dev.upload(&bias).unwrap());
    let oc = dev.alloc::<f32>(n * cout * 4 * hh * ww).unwrap();
    dev.fill_bytes(&oc, 0xff).unwrap();
    dev.conv_transpose2x2(&dxc, &dwt, Some(&db), &oc, (n, cin, hh, ww), cout).unwrap();
    let (pxc, pwt, pb) = (xc.as_ptr(), wt.as_ptr(), bias.as_ptr());
    let want = emu(n * cout * 4 * hh * ww, &|cfg, out| unsafe {
        let [n, cin, cout, h, w] = [n, cin, cout, hh, ww].map(|v| v as u32);
        launch_args(cfg, Order::Forward, &ConvTranspose2x2 { x: pxc, wt: pwt, bias: pb, out, n, cin, cout, h, w })
    });
    let e = rel_err(&dev.download(&oc).unwrap(), &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert!(e < 1e-6, "conv_transpose2x2 rel err {e}");
}

#[test]
fn cuda_rejects_bad_shapes() {
    let Some(dev) = device() else { return };
    let a = dev.alloc::<f32>(10).unwrap();
    let b = dev.alloc::<f32>(3).unwrap();
    let err = dev.binary(&a, Some(&b), &a, OP_ADD, ACT_NONE).unwrap_err();
    let name = <kernels::abi::EwBinary<f32> as kernels::Kernel>::NAME;
    assert!(matches!(err, CudaError::Invalid { kernel, .. } if kernel == name), "{err}");
}

/// The timing table: each kernel at model-sized shapes, as CSV lines `name,ms,bytes,flops` (to
/// `$BENCH_OUT` when set). Run by scripts/gpu-check.sh with `--ignored`.
#[test]
#[ignore]
fn cuda_bench() {
    let Some(dev) = device() else { return };
    let mut lines = vec![];
    let mut rec = |name: String, ms: f32, bytes: f64, flops: f64| {
        println!("{name:<44} {:>9.1} us", ms * 1000.0);
        lines.push(format!("{name},{ms},{bytes},{flops}"));
    };
    // Memory ceiling: a 1 GiB device-to-device copy (bytes read + written).
    let n = 1 << 28;
    let (x, y) = (dev.alloc::<f32>(n).unwrap(), dev.alloc::<f32>(n).unwrap());
    let ms = dev.time_ms(10, || dev.copy_bytes(&y, &x, n * 4)).unwrap();
    rec("memcpy_dtod_1GiB".into(), ms, 2.0 * n as f64 * 4.0, 0.0);
    drop((x, y));

    // Elementwise bias + GELU, bf16, [64*3136, 512] (the stage-1 MLP hidden of Swin-B).
    let (rows, cols) = (64 * 3136, 512);
    let a = dev.upload(&rand_vec(rows * cols, 1).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
    let bias = dev.upload(&rand_vec(cols, 2).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
    let out = dev.alloc::<bf16>(rows * cols).unwrap();
    let ms = dev.time_ms(20, || dev.binary(&a, Some(&bias), &out, OP_ADD, ACT_GELU)).unwrap();
    rec(format!("bias_gelu_bf16 {rows}x{cols}"), ms, 2.0 * (rows * cols * 2) as f64, 0.0);
    drop((a, out));

    // Softmax over rows of window-attention scores: [64*64*3*49, 49] f32.
    let (rows, cols) = (64 * 64 * 3 * 49, 49);
    let x = dev.upload(&rand_vec(rows * cols, 3)).unwrap();
    let out = dev.alloc::<f32>(rows * cols).unwrap();
    let ms = dev.time_ms(20, || dev.softmax_rows(&x, &out, rows, cols)).unwrap();
    rec(format!("softmax_f32 {rows}x{cols}"), ms, 2.0 * (rows * cols * 4) as f64, 0.0);
    drop((x, out));

    // LayerNorm over C=128 of [64*3136, 128], bf16 (Swin-B stage 1).
    let (rows, cols) = (64 * 3136, 128);
    let x = dev.upload(&rand_vec(rows * cols, 4).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
    let out = dev.alloc::<bf16>(rows * cols).unwrap();
    let ms = dev.time_ms(20, || dev.layernorm_rows(&x, None, None, &out, rows, cols, 1e-5)).unwrap();
    rec(format!("layernorm_bf16 {rows}x{cols}"), ms, 2.0 * (rows * cols * 2) as f64, 0.0);
    drop((x, out));

    // LayerNorm2d over 256 channels at 56x56, batch 64, f32.
    let (n, ch, hw) = (64, 256, 56 * 56);
    let x = dev.upload(&rand_vec(n * ch * hw, 5)).unwrap();
    let out = dev.alloc::<f32>(n * ch * hw).unwrap();
    let ms = dev.time_ms(20, || dev.layernorm2d(&x, None, None, &out, n, ch, hw, 1e-6)).unwrap();
    rec(format!("layernorm2d_f32 {n}x{ch}x{hw}"), ms, 2.0 * (n * ch * hw * 4) as f64, 0.0);
    drop((x, out));

    // Swin window attention, stage 1 at batch 64: 64 images x 64 windows, 4 heads, 49 tokens,
    // head dim 32, bf16, with relative-position bias and the shifted-window mask.
    let (batch, heads, t) = (64 * 64, 4, 49);
    let qkv_len = batch * heads * t * 32;
    let mk =
        |seed| dev.upload(&rand_vec(qkv_len, seed).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
    let (q, k, v) = (mk(9), mk(10), mk(11));
    let bias = dev.upload(&rand_vec(heads * t * t, 12)).unwrap();
    let mask = dev.upload(&vec![0f32; 64 * t * t]).unwrap();
    let out = dev.alloc::<bf16>(qkv_len).unwrap();
    let s = AttnShape::head_major(heads, t, t, 64, 1.0 / 32f32.sqrt(), 32);
    let ms = dev.time_ms(20, || dev.attention(&q, &k, &v, Some(&bias), Some(&mask), &out, batch, s)).unwrap();
    let bytes = 4.0 * (qkv_len * 2) as f64 + ((heads + 64) * t * t * 4) as f64;
    let flops = 4.0 * (batch * heads * t * t * 32) as f64;
    rec(format!("window_attention_bf16 {batch}x{heads}x{t}"), ms, bytes, flops);
    let ms = dev.time_ms(20, || dev.attention_tc(&q, &k, &v, Some(&bias), Some(&mask), &out, batch, s)).unwrap();
    rec(format!("window_attention_tc_bf16 {batch}x{heads}x{t}"), ms, bytes, flops);
    drop((q, k, v, out));

    // GEMMs, bf16 in, bf16 out, f32 accumulate: C[m,n] = A[m,k] B[n,k]^T (+ bias for the MLP).
    for &(m, n, k) in &[
        (3136, 384, 128),
        (64 * 3136, 384, 128),
        (64 * 3136, 512, 128),
        (64 * 3136, 128, 512),
        (64 * 196, 2048, 512),
        (64 * 196, 512, 2048),
        (64 * 49, 3072, 1024),
        (4096, 4096, 4096),
    ] {
        let a = dev.upload(&rand_vec(m * k, 6).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
        let b = dev.upload(&rand_vec(n * k, 7).iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>()).unwrap();
        let out = dev.alloc::<bf16>(m * n).unwrap();
        let s = TcStrides { lda: k as u64, ldb: k as u64, ldc: n as u64, batch_a: 0, batch_b: 0, batch_c: 0 };
        let ms = dev.time_ms(20, || dev.gemm_tc(&a, &b, None, &out, (1, m, n, k), s, 1.0, ACT_NONE)).unwrap();
        let bytes = 2.0 * (m * k + n * k + m * n) as f64;
        rec(format!("gemm_tc_bf16 {m}x{n}x{k}"), ms, bytes, 2.0 * (m * n * k) as f64);
    }
    // The f32 SIMT GEMM at 4096^3 for reference (CUDA cores, not tensor cores).
    let m = 4096;
    let a = dev.upload(&rand_vec(m * m, 8)).unwrap();
    let out = dev.alloc::<f32>(m * m).unwrap();
    let s = GemmStrides {
        a_rs: m as u64,
        a_cs: 1,
        b_rs: m as u64,
        b_cs: 1,
        c_rs: m as u64,
        batch_a: 0,
        batch_b: 0,
        batch_c: 0,
    };
    let ms = dev.time_ms(5, || dev.gemm_f32(&a, &a, None, &out, (1, m, m, m), s, 1.0, ACT_NONE)).unwrap();
    rec(format!("gemm_f32 {m}x{m}x{m}"), ms, 3.0 * (m * m * 4) as f64, 2.0 * (m * m * m) as f64);

    // The device ops added for the model, through the backend (bf16, batch 64, Swin-B shapes).
    {
        use crate::backend::cuda::Cuda;
        use crate::backend::{Backend, DevTensor};
        use crate::{DType, Tensor};
        let gpu = Cuda::from_device(dev.clone());
        let up = |shape: &[usize], seed: u64| -> DevTensor<Cuda> {
            gpu.upload(&Tensor::rand_uniform(shape, -1.0, 1.0, seed, DType::F32), DType::BF16).unwrap()
        };
        let mut time = |name: String, bytes: f64, flops: f64, f: &dyn Fn() -> crate::Result<DevTensor<Cuda>>| {
            let ms = dev
                .time_ms(20, || {
                    f().map(|_| ()).map_err(|e| CudaError::Invalid { kernel: "bench", reason: e.to_string() })
                })
                .unwrap();
            rec(name, ms, bytes, flops);
        };
        let qkv = up(&[64 * 64, 49, 3, 4, 32], 20);
        let n = qkv.elem_count() as f64;
        time("permute_bf16 qkv split 4096x49x3x4x32".into(), 4.0 * n, 0.0, &|| gpu.permute(&qkv, &[2, 0, 3, 1, 4]));
        let maps = [
            up(&[64, 56, 56, 256], 21),
            up(&[64, 28, 28, 256], 22),
            up(&[64, 14, 14, 256], 23),
            up(&[64, 7, 7, 256], 24),
        ];
        let read: usize = maps.iter().map(|m| m.elem_count()).sum();
        time(
            "upsample_sum_nhwc_bf16 64x56x56x256 from 4 maps".into(),
            2.0 * (read + 64 * 3136 * 256) as f64,
            0.0,
            &|| gpu.upsample_sum_nhwc(&maps.iter().collect::<Vec<_>>(), (56, 56)),
        );
        let (h, u) = (up(&[64, 11, 32], 25), up(&[64, 32, 224 * 224], 26));
        let p = 224 * 224;
        time(
            "hyper_product_bf16 64x11x32 . 64x32x50176".into(),
            2.0 * (u.elem_count() + 64 * 11 * p) as f64,
            2.0 * (64usize * 11 * 32 * p) as f64,
            &|| gpu.hyper_product(&h, &u),
        );
        let x = up(&[64, 256, 56, 56], 27);
        let w = up(&[256, 64, 2, 2], 28);
        let b = gpu.upload(&Tensor::rand_uniform(&[64], -1.0, 1.0, 29, DType::F32), DType::F32).unwrap();
        time(
            "conv_transpose2x2_bf16 (GEMM over taps) 64x256x56x56 -> 64".into(),
            2.0 * (x.elem_count() + 64 * 64 * 112 * 112) as f64,
            2.0 * (64usize * 64 * 112 * 112 * 256) as f64,
            &|| gpu.conv_transpose2x2(&x, &w, &b),
        );
        // Swin's window attention on the packed qkv in place (stage 1, shifted: bias + mask).
        let qkv = up(&[64 * 64, 49, 3 * 128], 32);
        let bias = gpu.upload(&Tensor::rand_uniform(&[4, 49, 49], -1.0, 1.0, 33, DType::F32), DType::F32).unwrap();
        let mask = gpu.upload(&Tensor::zeros(&[64, 49, 49], DType::F32), DType::F32).unwrap();
        let bytes = 2.0 * (qkv.elem_count() + qkv.elem_count() / 3) as f64 + ((4 + 64) * 49 * 49 * 4) as f64;
        time(
            "attention_packed_bf16 4096x49x(3x4x32)".into(),
            bytes,
            4.0 * (4096usize * 4 * 49 * 49 * 32) as f64,
            &|| gpu.attention_packed(&qkv, 4, Some(&bias), Some(&mask), 1.0 / 32f32.sqrt()),
        );
        // The decoder's cross-attention both ways, 8 heads of 16 (internal width 128), token-major.
        let (tq, tk) = (up(&[64, 18, 128], 30), up(&[64, 3136, 128], 31));
        let bytes = 2.0 * (2 * tq.elem_count() + 2 * tk.elem_count()) as f64;
        let flops = 4.0 * (64usize * 8 * 18 * 3136 * 16) as f64;
        time("attention_d16_bf16 tokens->image 64x8x18x3136".into(), bytes, flops, &|| {
            gpu.attention(&tq, &tk, &tk, 8, None, None, 0.25)
        });
        let bytes = 2.0 * (2 * tk.elem_count() + 2 * tq.elem_count()) as f64;
        time("attention_d16_bf16 image->tokens 64x8x3136x18".into(), bytes, flops, &|| {
            gpu.attention(&tk, &tq, &tq, 8, None, None, 0.25)
        });
    }

    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }
}

/// The device backend (`backend::cuda::Cuda`) against the reference backend, every op, at small
/// odd shapes and at the model's shapes, f32 and bf16 (the harness of `backend::conformance`).
#[test]
fn cuda_backend_conforms() {
    use crate::backend::conformance::{check_all, ensure_passed, report, Cases};
    use crate::backend::cuda::Cuda;
    let Some(dev) = device() else { return };
    let gpu = Cuda::from_device(dev);
    for dtype in [crate::DType::F32, crate::DType::BF16] {
        for cases in [Cases::Small, Cases::Model] {
            let results = check_all(&gpu, dtype, cases, 7);
            println!("{}", report(&results));
            ensure_passed(&results).unwrap_or_else(|e| panic!("{dtype:?} {cases:?}: {e}"));
        }
    }
}
