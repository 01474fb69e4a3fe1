//! Fused attention under the emulator vs the composite (scores, bias, mask, softmax, weighted sum)
//! in f64.

mod common;
use common::*;
use kernels::attention::{self, AttnShape};
use kernels::{Bf16, Elem};
use proptest::prelude::*;

/// The slow composite twin: materialises the scores. Head-major, head dim `D`.
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    #[allow(non_snake_case)] D: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
    mask: Option<(&[f32], usize)>,
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0f64; batch * heads * nq * D];
    for b in 0..batch {
        for h in 0..heads {
            let bh = b * heads + h;
            for i in 0..nq {
                let scores: Vec<f64> = (0..nk)
                    .map(|j| {
                        let dot: f64 =
                            (0..D).map(|d| q[(bh * nq + i) * D + d] as f64 * k[(bh * nk + j) * D + d] as f64).sum();
                        let bb = bias.map_or(0.0, |bi| bi[(h * nq + i) * nk + j] as f64);
                        let mm = mask.map_or(0.0, |(ma, nm)| ma[((b % nm) * nq + i) * nk + j] as f64);
                        dot * scale + bb + mm
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
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

#[allow(clippy::too_many_arguments)]
fn check<E: Elem, const D: usize>(
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    with_bias: bool,
    n_mask: usize,
    seed: u64,
    tol: f64,
) {
    check_dim::<E, D>(D, batch, heads, nq, nk, with_bias, n_mask, seed, tol)
}

/// Head dim `D` run by instance `I >= D` (lanes `D..I` padded; see the kernel's module doc).
#[allow(clippy::too_many_arguments, non_snake_case)]
fn check_dim<E: Elem, const I: usize>(
    D: usize,
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    with_bias: bool,
    n_mask: usize,
    seed: u64,
    tol: f64,
) {
    let mk = |n: usize, s: u64| -> (Vec<E>, Vec<f32>) {
        let e: Vec<E> = rand_vec(n, s).iter().map(|&x| E::from_f32(x * 2.0)).collect();
        let f = e.iter().map(|x| x.to_f32()).collect();
        (e, f)
    };
    let (q, qf) = mk(batch * heads * nq * D, seed);
    let (k, kf) = mk(batch * heads * nk * D, seed + 1);
    let (v, vf) = mk(batch * heads * nk * D, seed + 2);
    let bias = rand_vec(heads * nq * nk, seed + 3);
    // A Swin-like mask: 0 or -100 in blocks.
    let mask: Vec<f32> = (0..n_mask.max(1) * nq * nk)
        .map(|e| if (e / nk + e % nk + e / (nq * nk)).is_multiple_of(3) { -100.0 } else { 0.0 })
        .collect();
    let scale = 1.0 / (D as f32).sqrt();
    let want = attention_ref(
        D,
        &qf,
        &kf,
        &vf,
        with_bias.then_some(&bias[..]),
        (n_mask > 0).then_some((&mask[..], n_mask)),
        batch,
        heads,
        nq,
        nk,
        scale as f64,
    );
    let shape = AttnShape::head_major(heads, nq, nk, n_mask.max(1), scale, D);
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); batch * heads * nq * D];
        let (pq, pk, pv, po) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), out.as_mut_ptr());
        let pb = if with_bias { bias.as_ptr() } else { std::ptr::null() };
        let pm = if n_mask > 0 { mask.as_ptr() } else { std::ptr::null() };
        let cfg = attention::config::<I>(batch, heads, nq);
        unsafe { run(cfg, order, |c| attention::attention::<_, E, I>(c, pq, pk, pv, pb, pm, po, &shape)) };
        let got: Vec<f32> = out.iter().map(|x| x.to_f32()).collect();
        assert_close(
            &got,
            &want,
            tol,
            tol,
            &format!(
                "attention d{D} (instance {I}) b{batch} h{heads} {nq}x{nk} bias {with_bias} masks {n_mask} {order:?}"
            ),
        );
    });
}

#[test]
fn swin_window_with_bias_and_shift_mask() {
    // 2 images x 4 windows of 49 tokens, 3 heads, relative-position bias and a shifted-window mask.
    check::<f32, 32>(8, 3, 49, 49, true, 4, 1, 2e-5);
}

#[test]
fn decoder_queries_over_many_keys_and_back() {
    // 18 task tokens over 200 image tokens (3136 in the model; several key tiles either way).
    check::<f32, 32>(1, 2, 18, 200, false, 0, 2, 2e-5);
    check::<f32, 32>(1, 2, 150, 18, false, 0, 3, 2e-5);
}

#[test]
fn swin_window_bf16() {
    check::<Bf16, 32>(2, 2, 49, 49, true, 2, 4, 2e-2);
}

#[test]
fn head_dims_16_and_8_decoder_shapes() {
    // The decoder's heads: 18 task tokens over ~100 image tokens (two key tiles) and back.
    check::<f32, 16>(1, 2, 18, 100, false, 0, 5, 2e-5);
    check::<f32, 16>(2, 1, 100, 18, false, 0, 6, 2e-5);
    check::<f32, 8>(1, 2, 18, 101, false, 0, 7, 2e-5);
    check::<f32, 8>(1, 2, 99, 18, false, 0, 8, 2e-5);
}

#[test]
fn head_dims_16_and_8_bf16() {
    check::<Bf16, 16>(1, 2, 18, 100, false, 0, 9, 2e-2);
    check::<Bf16, 16>(1, 1, 100, 18, false, 0, 10, 2e-2);
    check::<Bf16, 8>(1, 2, 18, 97, false, 0, 11, 2e-2);
    check::<Bf16, 8>(1, 1, 101, 18, false, 0, 12, 2e-2);
}

#[test]
fn head_dims_64_and_128() {
    // Swin windows with bias and mask, and decoder-like shapes over several key tiles (64 rows for
    // d 64, 32 for 128) with a second, partly filled query block.
    check::<f32, 64>(4, 2, 49, 49, true, 2, 13, 2e-5);
    check::<f32, 64>(1, 1, 70, 150, false, 0, 14, 2e-5);
    check::<f32, 128>(4, 2, 49, 49, true, 2, 15, 2e-5);
    check::<f32, 128>(1, 2, 67, 100, false, 1, 16, 2e-5);
    check::<f32, 128>(1, 1, 18, 130, true, 0, 17, 2e-5);
    check::<Bf16, 64>(1, 2, 49, 49, true, 1, 18, 2e-2);
    check::<Bf16, 128>(1, 2, 49, 49, true, 1, 19, 2e-2);
}

#[test]
fn other_head_dims_run_padded_in_the_next_instance() {
    for (d, seed) in [(24, 20), (12, 21), (5, 22), (33, 23), (48, 24), (63, 25)] {
        match attention::instance(d) {
            Some(8) => check_dim::<f32, 8>(d, 2, 2, 49, 49, true, 2, seed, 2e-5),
            Some(16) => check_dim::<f32, 16>(d, 2, 2, 49, 49, true, 2, seed, 2e-5),
            Some(32) => check_dim::<f32, 32>(d, 2, 2, 49, 49, true, 2, seed, 2e-5),
            Some(64) => check_dim::<f32, 64>(d, 1, 2, 70, 90, true, 1, seed, 2e-5),
            other => panic!("d {d}: instance {other:?}"),
        }
    }
    for (d, seed) in [(65, 26), (96, 27), (100, 28), (127, 29)] {
        assert_eq!(attention::instance(d), Some(128));
        check_dim::<f32, 128>(d, 1, 2, 67, 70, true, 1, seed, 2e-5);
    }
    check_dim::<Bf16, 32>(24, 2, 2, 49, 49, true, 2, 30, 2e-2);
    check_dim::<Bf16, 128>(96, 1, 2, 49, 49, true, 1, 31, 2e-2);
    assert_eq!((attention::instance(0), attention::instance(129)), (None, None));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn attention_shapes(batch in 1usize..3, heads in 1usize..3, nq in 1usize..90, nk in 1usize..140,
                        with_bias: bool, n_mask in 0usize..3, seed: u64) {
        check::<f32, 32>(batch, heads, nq, nk, with_bias, n_mask, seed, 2e-5);
    }

    #[test]
    fn attention_shapes_small_heads(batch in 1usize..3, heads in 1usize..3, nq in 1usize..70, nk in 1usize..100,
                                    with_bias: bool, n_mask in 0usize..3, d16: bool, seed: u64) {
        if d16 {
            check::<f32, 16>(batch, heads, nq, nk, with_bias, n_mask, seed, 2e-5);
        } else {
            check::<f32, 8>(batch, heads, nq, nk, with_bias, n_mask, seed, 2e-5);
        }
    }
}

/// Swin's packed qkv `[B, n, 3, heads, D]` read in place (q, k, v at column offsets 0, C, 2C of
/// rows of 3C) and the output written token-major `[B, n, heads·D]`: the same numbers as the
/// head-major reference.
#[test]
fn packed_qkv_in_and_token_major_out() {
    const D: usize = 32;
    let (batch, heads, n) = (3, 2, 49);
    let c = heads * D;
    let packed: Vec<f32> = rand_vec(batch * n * 3 * c, 21).iter().map(|x| x * 2.0).collect();
    // Head-major copies for the reference: part p of (b, token i, head h, d).
    let split = |p: usize| -> Vec<f32> {
        let mut v = vec![0f32; batch * heads * n * D];
        for b in 0..batch {
            for i in 0..n {
                for h in 0..heads {
                    for d in 0..D {
                        v[((b * heads + h) * n + i) * D + d] = packed[((b * n + i) * 3 + p) * c + h * D + d];
                    }
                }
            }
        }
        v
    };
    let bias = rand_vec(heads * n * n, 22);
    let scale = 1.0 / (D as f32).sqrt();
    let want_hm =
        attention_ref(D, &split(0), &split(1), &split(2), Some(&bias), None, batch, heads, n, n, scale as f64);
    // The reference is head-major; the kernel writes token-major.
    let mut want = vec![0f64; batch * n * c];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..n {
                for d in 0..D {
                    want[(b * n + i) * c + h * D + d] = want_hm[((b * heads + h) * n + i) * D + d];
                }
            }
        }
    }
    let shape = AttnShape::token_major(heads, n, n, 1, scale, D, (3 * c, 3 * c, c));
    for_each_order(|order| {
        let mut out = vec![f32::NAN; batch * n * c];
        let (pq, po, pb) = (packed.as_ptr(), out.as_mut_ptr(), bias.as_ptr());
        let (pk, pv) = unsafe { (pq.add(c), pq.add(2 * c)) };
        let cfg = attention::config::<D>(batch, heads, n);
        unsafe {
            run(cfg, order, |ctx| attention::attention::<_, f32, D>(ctx, pq, pk, pv, pb, std::ptr::null(), po, &shape))
        };
        assert_close(&out, &want, 2e-5, 2e-5, &format!("packed qkv {order:?}"));
    });
}

// ---- The tensor-core kernel (`attention_tc`): against the f64 composite and its CUDA-core twin ----

/// Head dim `D` in tensor-core instance `I`, 16-bit inputs `E` (bf16 or f16; values in [-2, 2)),
/// f64 reference on the same rounded inputs, and the CUDA-core twin ([`attention::attention`], the
/// same `E`) on the same inputs. Tolerance: P enters the tensor cores rounded to `E` and the
/// output is `E` (bf16: 2^-8 relative).
#[allow(clippy::too_many_arguments, non_snake_case)]
fn check_tc_in<E: Elem + kernels::gemm_tc::MmaInput, const I: usize>(
    D: usize,
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    with_bias: bool,
    n_mask: usize,
    seed: u64,
) {
    use kernels::attention_tc;
    let mk = |n: usize, s: u64| -> (Vec<E>, Vec<f32>) {
        let e: Vec<E> = rand_vec(n, s).iter().map(|&x| E::from_f32(x * 2.0)).collect();
        let f = e.iter().map(|x| x.to_f32()).collect();
        (e, f)
    };
    let (q, qf) = mk(batch * heads * nq * D, seed);
    let (k, kf) = mk(batch * heads * nk * D, seed + 1);
    let (v, vf) = mk(batch * heads * nk * D, seed + 2);
    let bias: Vec<f32> = rand_vec(heads * nq * nk, seed + 3).iter().map(|x| x * 3.0).collect();
    let mask: Vec<f32> = (0..n_mask.max(1) * nq * nk)
        .map(|e| if (e / nk + e % nk + e / (nq * nk)).is_multiple_of(3) { -100.0 } else { 0.0 })
        .collect();
    let scale = 1.0 / (D as f32).sqrt();
    let (pb, pm) = (
        if with_bias { bias.as_ptr() } else { std::ptr::null() },
        if n_mask > 0 { mask.as_ptr() } else { std::ptr::null() },
    );
    let want = attention_ref(
        D,
        &qf,
        &kf,
        &vf,
        with_bias.then_some(&bias[..]),
        (n_mask > 0).then_some((&mask[..], n_mask)),
        batch,
        heads,
        nq,
        nk,
        scale as f64,
    );
    let shape = AttnShape::head_major(heads, nq, nk, n_mask.max(1), scale, D);
    let (pq, pk, pv) = (q.as_ptr(), k.as_ptr(), v.as_ptr());
    let what = format!("attention_tc d{D} (instance {I}) b{batch} h{heads} {nq}x{nk} bias {with_bias} masks {n_mask}");
    // The twin, once (the default order).
    let mut twin = vec![E::from_f32(f32::NAN); want.len()];
    let po = twin.as_mut_ptr();
    macro_rules! twin {
        ($T:literal) => {
            unsafe {
                run(attention::config::<$T>(batch, heads, nq), kernels::emu::TEST_ORDERS[0], |c| {
                    attention::attention::<_, E, $T>(c, pq, pk, pv, pb, pm, po, &shape)
                })
            }
        };
    }
    match attention::instance(D) {
        Some(8) => twin!(8),
        Some(16) => twin!(16),
        Some(32) => twin!(32),
        Some(64) => twin!(64),
        _ => twin!(128),
    }
    let twin: Vec<f64> = twin.iter().map(|x| x.to_f32() as f64).collect();
    for_each_order(|order| {
        let mut out = vec![E::from_f32(f32::NAN); want.len()];
        let po = out.as_mut_ptr();
        let cfg = attention_tc::config::<I>(batch, heads, nq);
        unsafe { run(cfg, order, |c| attention_tc::attention_tc::<_, E, I>(c, pq, pk, pv, pb, pm, po, &shape)) };
        let got: Vec<f32> = out.iter().map(|x| x.to_f32()).collect();
        assert_close(&got, &want, 2e-2, 2e-2, &format!("{what} vs f64 {order:?}"));
        assert_close(&got, &twin, 2e-2, 2e-2, &format!("{what} vs the CUDA-core twin {order:?}"));
    });
}

/// [`check_tc_in`] with bf16, the model's half precision.
#[allow(clippy::too_many_arguments, non_snake_case)]
fn check_tc<const I: usize>(
    D: usize,
    batch: usize,
    heads: usize,
    nq: usize,
    nk: usize,
    with_bias: bool,
    n_mask: usize,
    seed: u64,
) {
    check_tc_in::<Bf16, I>(D, batch, heads, nq, nk, with_bias, n_mask, seed)
}

#[test]
fn tc_f16_inputs() {
    // f16 (10 mantissa bits) through the same body: the f16 mma and conversions.
    check_tc_in::<kernels::F16, 32>(32, 2, 2, 49, 49, true, 2, 60);
    check_tc_in::<kernels::F16, 16>(16, 1, 2, 18, 150, false, 0, 61);
    check_tc_in::<kernels::F16, 64>(48, 1, 1, 70, 90, true, 1, 62);
}

#[test]
fn tc_swin_windows_with_bias_and_shift_mask() {
    // Swin-B's heads are 32 wide; 2 images x 4 windows of 49 tokens, bias and a shifted-window mask.
    check_tc::<32>(32, 8, 3, 49, 49, true, 4, 40);
    check_tc::<32>(32, 2, 2, 49, 49, false, 0, 41);
}

#[test]
fn tc_decoder_shapes_over_several_key_tiles() {
    // The decoder's heads are 16 wide: 18 tokens over many image tokens (3 key tiles, the last
    // partial) and many image tokens over 18 tokens (2 query blocks, the last partial).
    check_tc::<16>(16, 1, 2, 18, 150, false, 0, 42);
    check_tc::<16>(16, 1, 2, 100, 18, false, 0, 43);
}

#[test]
fn tc_head_dim_64() {
    check_tc::<64>(64, 2, 2, 49, 49, true, 2, 44);
    check_tc::<64>(64, 1, 1, 70, 130, false, 1, 45);
}

#[test]
fn tc_other_head_dims_run_padded() {
    use kernels::attention_tc::instance;
    for (d, seed) in [(8, 50), (12, 51), (24, 52), (40, 53), (5, 55), (63, 56)] {
        match instance(d) {
            Some(16) => check_tc::<16>(d, 2, 2, 49, 49, true, 2, seed),
            Some(32) => check_tc::<32>(d, 2, 2, 49, 49, true, 2, seed),
            Some(64) => check_tc::<64>(d, 1, 2, 49, 70, true, 1, seed),
            other => panic!("d {d}: instance {other:?}"),
        }
    }
    // Wider heads run on the CUDA-core twin.
    assert_eq!((instance(0), instance(65), instance(128)), (None, None, None));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]
    #[test]
    fn tc_attention_shapes(batch in 1usize..3, heads in 1usize..3, nq in 1usize..80, nk in 1usize..140,
                           with_bias: bool, n_mask in 0usize..3, seed: u64) {
        check_tc::<32>(32, batch, heads, nq, nk, with_bias, n_mask, seed % 1000);
    }
}
