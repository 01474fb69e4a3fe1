//! GEMM kernels (f32 SIMT and bf16/f16 tensor-core) under the emulator vs an f64 reference.

mod common;
use common::*;
use kernels::gemm::{self, Strides};
use kernels::gemm_tc;
use kernels::math::{ACT_GELU, ACT_NONE, ACT_RELU};
use kernels::{Bf16, Elem};
use proptest::prelude::*;

fn act64(x: f64, act: u32) -> f64 {
    match act {
        ACT_RELU => x.max(0.0),
        ACT_GELU => gelu64(x),
        _ => x,
    }
}

/// `C[b][i][j] = act(alpha * sum_k A(b,i,k) * B(b,k,j) + bias[j])`, accessors give f32 elements.
#[allow(clippy::too_many_arguments)]
fn gemm_ref(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: impl Fn(usize, usize, usize) -> f32,
    b: impl Fn(usize, usize, usize) -> f32,
    bias: Option<&[f32]>,
    alpha: f32,
    act: u32,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(batch * m * n);
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|kk| a(z, i, kk) as f64 * b(z, kk, j) as f64).sum();
                out.push(act64(alpha as f64 * s + bias.map_or(0.0, |b| b[j] as f64), act));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// f32 path with arbitrary strides: A transposed or not, B transposed or not, B broadcast over
    /// the batch, padded C rows.
    #[test]
    fn gemm_f32_strided(m in 1usize..80, n in 1usize..80, k in 1usize..40, batch in 1usize..3,
                        a_t: bool, b_t: bool, b_bcast: bool, bias_on: bool, act in 0u32..3, res_on: bool,
                        seed: u64) {
        let a = rand_vec(batch * m * k, seed);
        let b = rand_vec(batch * k * n, seed + 1);
        let bias = rand_vec(n, seed + 2);
        let ldc = n + 3;
        let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
        let s = Strides {
            a_rs: a_rs as u64, a_cs: a_cs as u64, b_rs: b_rs as u64, b_cs: b_cs as u64, c_rs: ldc as u64,
            batch_a: (m * k) as u64, batch_b: if b_bcast { 0 } else { (k * n) as u64 }, batch_c: (m * ldc) as u64,
        };
        // The residual has C's layout (padded rows); added after the activation.
        let res = rand_vec(batch * m * ldc, seed + 3);
        let mut want = gemm_ref(batch, m, n, k,
            |z, i, kk| a[z * m * k + i * a_rs + kk * a_cs],
            |z, kk, j| b[z * s.batch_b as usize + kk * b_rs + j * b_cs],
            bias_on.then_some(&bias[..]), 0.5, act);
        if res_on {
            for (e, w) in want.iter_mut().enumerate() { *w += res[(e / n) * ldc + e % n] as f64; }
        }
        for_each_order(|order| {
            let mut out = vec![f32::NAN; batch * m * ldc];
            let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
            let pbias = if bias_on { bias.as_ptr() } else { std::ptr::null() };
            let pres = if res_on { res.as_ptr() } else { std::ptr::null() };
            let cfg = gemm::config(m, n, batch);
            unsafe {
                run(cfg, order, |c| gemm::gemm_f32(c, pa, pb, pbias, pres, po, m as u32, n as u32, k as u32, &s, 0.5, act))
            };
            let got: Vec<f32> = (0..batch * m * n).map(|e| out[(e / n) * ldc + e % n]).collect();
            assert_close(&got, &want, 1e-5, 1e-5, &format!("gemm_f32 {batch}x{m}x{n}x{k} {order:?}"));
            // The padding between C rows is untouched.
            for (e, v) in out.iter().enumerate() {
                if e % ldc >= n { assert!(v.is_nan(), "gemm_f32 wrote padding at {e}"); }
            }
        });
    }
}

/// Runs the tensor-core GEMM (inputs as 16-bit patterns) and compares with the f64 reference.
#[allow(clippy::too_many_arguments)]
fn check_tc<O: Elem>(
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    pad: usize,
    f16: bool,
    bias_on: bool,
    act: u32,
    res_on: bool,
    seed: u64,
    tol: f64,
    aligned_c: bool,
) {
    // C's rows 16-byte aligned (the epilogue's vector path) or not (its element-wise path).
    let ldc = if aligned_c { n.next_multiple_of(8) } else { n + 1 };
    let (lda, ldb) = (k + pad, k + pad);
    let enc = |v: f32| if f16 { half::f16::from_f32(v).to_bits() } else { Bf16::from_f32(v).0 };
    let dec = |h: u16| if f16 { half::f16::from_bits(h).to_f32() } else { Bf16(h).to_f32() };
    let a: Vec<u16> = rand_vec(batch * m * lda, seed).into_iter().map(enc).collect();
    let b: Vec<u16> = rand_vec(n * ldb, seed + 1).into_iter().map(enc).collect();
    let bias = rand_vec(n, seed + 2);
    // B ([n, k], a weight) is shared by the whole batch: batch stride 0.
    let s = gemm_tc::Strides {
        lda: lda as u64,
        ldb: ldb as u64,
        ldc: ldc as u64,
        batch_a: (m * lda) as u64,
        batch_b: 0,
        batch_c: (m * ldc) as u64,
    };
    let mut want = gemm_ref(
        batch,
        m,
        n,
        k,
        |z, i, kk| dec(a[z * m * lda + i * lda + kk]),
        |_, kk, j| dec(b[j * ldb + kk]),
        bias_on.then_some(&bias[..]),
        1.0,
        act,
    );
    // The residual in the output type and C's layout (padded rows), added after the activation.
    let res: Vec<O> = rand_vec(batch * m * ldc, seed + 3).into_iter().map(O::from_f32).collect();
    if res_on {
        for (e, w) in want.iter_mut().enumerate() {
            *w += res[(e / n) * ldc + e % n].to_f32() as f64;
        }
    }
    for_each_order(|order| {
        let mut out = vec![O::from_f32(f32::NAN); batch * m * ldc];
        let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        let pbias = if bias_on { bias.as_ptr() } else { std::ptr::null() };
        let pres = if res_on { res.as_ptr() } else { std::ptr::null() };
        let cfg = gemm_tc::config(m, n, batch);
        let (mm, nn, kk) = (m as u32, n as u32, k as u32);
        unsafe {
            if f16 {
                run(cfg, order, |c| {
                    gemm_tc::gemm_tc::<_, kernels::F16, O>(
                        c,
                        pa.cast(),
                        pb.cast(),
                        pbias,
                        pres,
                        po,
                        mm,
                        nn,
                        kk,
                        &s,
                        1.0,
                        act,
                    )
                })
            } else {
                run(cfg, order, |c| {
                    gemm_tc::gemm_tc::<_, Bf16, O>(c, pa.cast(), pb.cast(), pbias, pres, po, mm, nn, kk, &s, 1.0, act)
                })
            }
        };
        // The vector path needs 16-byte aligned buffers, which the allocator gives these.
        assert!(!aligned_c || ((po as usize).is_multiple_of(16) && (res.as_ptr() as usize).is_multiple_of(16)));
        let got: Vec<f32> = (0..batch * m * n).map(|e| out[(e / n) * ldc + e % n].to_f32()).collect();
        let what = format!("gemm_tc {batch}x{m}x{n}x{k} pad {pad} ldc {ldc} f16 {f16} {order:?}");
        assert_close(&got, &want, tol, tol, &what);
        for (e, v) in out.iter().enumerate() {
            assert!(e % ldc < n || v.to_f32().is_nan(), "{what}: wrote row padding at {e}");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5))]
    /// Edge tiles in m and n, k not a multiple of 8 or 32, unaligned rows (pad), f16 and bf16.
    #[test]
    fn gemm_tc_bf16_f32out(m in 1usize..140, n in 1usize..140, k in 1usize..70, pad in 0usize..9,
                           f16: bool, bias_on: bool, act in 0u32..3, res_on: bool, seed: u64, aligned_c: bool) {
        check_tc::<f32>(m, n, k, 1, pad, f16, bias_on, act, res_on, seed, 2e-5, aligned_c);
    }

    /// bf16 outputs, both epilogue paths: 16-byte runs where C's rows are aligned (a run that
    /// crosses n falls back to element stores), element stores where they are not.
    #[test]
    fn gemm_tc_bf16_out(m in 1usize..140, n in 1usize..140, k in 1usize..40, bias_on: bool, act in 0u32..3,
                        res_on: bool, seed: u64, aligned_c: bool) {
        check_tc::<Bf16>(m, n, k, 1, 0, false, bias_on, act, res_on, seed, 1e-2, aligned_c);
    }
}

#[test]
fn gemm_tc_batched_bf16_out() {
    check_tc::<Bf16>(70, 40, 64, 2, 0, false, true, ACT_GELU, false, 11, 1e-2, false);
    check_tc::<Bf16>(70, 40, 64, 2, 0, false, true, ACT_GELU, false, 11, 1e-2, true);
}

#[test]
fn gemm_tc_residual_epilogue() {
    // A Swin MLP's `x + fc2(h)`: bias, no activation, bf16 residual and output; and with GELU.
    check_tc::<Bf16>(70, 40, 64, 2, 0, false, true, ACT_NONE, true, 13, 1e-2, true);
    check_tc::<f32>(130, 70, 40, 1, 3, false, true, ACT_GELU, true, 14, 2e-5, false);
    check_tc::<f32>(130, 72, 40, 1, 3, false, true, ACT_GELU, true, 14, 2e-5, true);
}

#[test]
fn gemm_tc_full_tiles_several_k_steps() {
    check_tc::<f32>(128, 128, 96, 1, 0, false, false, ACT_NONE, false, 12, 2e-5, true);
}
