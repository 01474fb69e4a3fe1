//! conv2d, conv_transpose2d and the weight gradient against direct f64 loops.

use super::conv2d::conv2d_impl;
use super::test_util::{assert_close, nchw_input};
use super::*;
use proptest::prelude::*;

/// Direct conv2d in f64: out[n,o,i,j] = b[o] + Σ x[n,c,i·s+a-p, j·s+b-p] · w[o,c,a,b].
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    wt: &[f64],
    [o, _, kh, kw]: [usize; 4],
    bias: Option<&[f64]>,
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
) -> (Vec<f64>, Vec<usize>) {
    let ho = (h + 2 * ph - kh) / sh + 1;
    let wo = (w + 2 * pw - kw) / sw + 1;
    let mut out = vec![0.0; n * o * ho * wo];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = bias.map_or(0.0, |b| b[oi]);
                    for ci in 0..c {
                        for a in 0..kh {
                            for b in 0..kw {
                                let (y, xx) =
                                    ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                    continue;
                                }
                                let xv = x[((ni * c + ci) * h + y as usize) * w + xx as usize];
                                acc += xv * wt[((oi * c + ci) * kh + a) * kw + b];
                            }
                        }
                    }
                    out[((ni * o + oi) * ho + i) * wo + j] = acc;
                }
            }
        }
    }
    (out, vec![n, o, ho, wo])
}

/// Direct transposed conv in f64: x[n,c,i,j] · w[c,o,a,b] lands at (i·s+a-p, j·s+b-p).
#[allow(clippy::too_many_arguments)]
fn conv_t_ref(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    wt: &[f64],
    [_, o, kh, kw]: [usize; 4],
    bias: Option<&[f64]>,
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (oph, opw): (usize, usize),
) -> (Vec<f64>, Vec<usize>) {
    let ho = (h - 1) * sh + kh + oph - 2 * ph;
    let wo = (w - 1) * sw + kw + opw - 2 * pw;
    let mut out = vec![0.0; n * o * ho * wo];
    for ni in 0..n {
        for oi in 0..o {
            for v in &mut out[(ni * o + oi) * ho * wo..(ni * o + oi + 1) * ho * wo] {
                *v = bias.map_or(0.0, |b| b[oi]);
            }
            for ci in 0..c {
                for i in 0..h {
                    for j in 0..w {
                        for a in 0..kh {
                            for b in 0..kw {
                                let (y, xx) =
                                    ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                if y < 0 || xx < 0 || y >= ho as isize || xx >= wo as isize {
                                    continue;
                                }
                                out[((ni * o + oi) * ho + y as usize) * wo + xx as usize] +=
                                    x[((ni * c + ci) * h + i) * w + j] * wt[((ci * o + oi) * kh + a) * kw + b];
                            }
                        }
                    }
                }
            }
        }
    }
    (out, vec![n, o, ho, wo])
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// Runs conv2d (with the given im2col budget) against the reference.
#[allow(clippy::too_many_arguments)]
fn check_conv(
    xs: [usize; 4],
    ws: [usize; 4],
    stride: (usize, usize),
    padding: (usize, usize),
    with_bias: bool,
    kind: u8,
    seed: u64,
    dtype: DType,
    budget: usize,
    tol: f64,
) {
    let x = nchw_input(xs, seed, kind, dtype);
    // Weight kind 1 is a permuted [C,O,kh,kw] buffer, so the weight is non-contiguous too.
    let wt = if kind % 2 == 1 {
        Tensor::randn(&[ws[1], ws[0], ws[2], ws[3]], seed ^ 7, dtype).permute(&[1, 0, 2, 3]).unwrap()
    } else {
        Tensor::randn(&ws, seed ^ 7, dtype)
    };
    let b = with_bias.then(|| Tensor::randn(&[ws[0]], seed ^ 9, dtype));
    let got = conv2d_impl(&x, &wt, b.as_ref(), stride, padding, budget).unwrap();
    assert_eq!(got.dtype(), dtype);
    let bv = b.as_ref().map(vals);
    let (want, shape) = conv_ref(&vals(&x), xs, &vals(&wt), ws, bv.as_deref(), stride, padding);
    assert_close("conv2d", &got, &want, &shape, tol);
}

/// (input shape, weight shape, stride, padding) with a kernel that fits the padded input.
/// (input shape, weight shape, stride, padding).
type ConvCase = ([usize; 4], [usize; 4], (usize, usize), (usize, usize));

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 0usize..=2, 0usize..=2)
        .prop_flat_map(|(n, c, o, kh, kw, sh, sw, ph, pw)| {
            let h_min = kh.saturating_sub(2 * ph).max(1);
            let w_min = kw.saturating_sub(2 * pw).max(1);
            (h_min..=9usize, w_min..=9usize).prop_map(move |(h, w)| ([n, c, h, w], [o, c, kh, kw], (sh, sw), (ph, pw)))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv2d_matches_reference(
        (xs, ws, stride, padding) in conv_case(),
        with_bias: bool,
        kind in 0u8..4,
        tiny_tiles: bool,
        seed: u64,
    ) {
        let budget = if tiny_tiles { 1 } else { COL_BUDGET };
        check_conv(xs, ws, stride, padding, with_bias, kind, seed, DType::F32, budget, 1e-4);
    }

    #[test]
    fn conv_transpose2d_matches_reference(
        (n, c, o, h, w) in (1usize..=2, 1usize..=4, 1usize..=4, 1usize..=6, 1usize..=6),
        (kh, kw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (ph, pw, oph, opw) in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        with_bias: bool,
        kind in 0u8..4,
        seed: u64,
    ) {
        let (oph, opw) = (oph % sh, opw % sw);
        prop_assume!((h - 1) * sh + kh + oph > 2 * ph && (w - 1) * sw + kw + opw > 2 * pw);
        let x = nchw_input([n, c, h, w], seed, kind, DType::F32);
        let wt = nchw_input([c, o, kh, kw], seed ^ 3, kind / 2, DType::F32);
        let b = with_bias.then(|| Tensor::randn(&[o], seed ^ 5, DType::F32));
        let got = x.conv_transpose2d_ext(&wt, b.as_ref(), (sh, sw), (ph, pw), (oph, opw)).unwrap();
        let bv = b.as_ref().map(vals);
        let (want, shape) = conv_t_ref(
            &vals(&x), [n, c, h, w], &vals(&wt), [c, o, kh, kw], bv.as_deref(), (sh, sw), (ph, pw), (oph, opw),
        );
        assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
    }

    #[test]
    fn conv2d_half_precision_matches_reference(
        (xs, ws, stride, padding) in conv_case(),
        kind in 0u8..4,
        bf: bool,
        seed: u64,
    ) {
        let dtype = if bf { DType::BF16 } else { DType::F16 };
        check_conv(xs, ws, stride, padding, true, kind, seed, dtype, COL_BUDGET, 1e-2);
    }
}

#[test]
fn conv2d_fast_paths_match_reference() {
    // 1x1 stride 1 (plain GEMM), 4x4/4 patch embedding (pure gather), MTCNN's 3x3 and 2x2.
    let cases = [
        ([2, 6, 5, 7], [4, 6, 1, 1], (1, 1), (0, 0)),
        ([2, 3, 16, 12], [5, 3, 4, 4], (4, 4), (0, 0)),
        ([2, 3, 18, 17], [5, 3, 4, 4], (4, 4), (0, 0)),
        ([1, 3, 12, 12], [10, 3, 3, 3], (1, 1), (0, 0)),
        ([1, 8, 5, 5], [6, 8, 2, 2], (1, 1), (0, 0)),
        ([2, 5, 7, 6], [3, 5, 1, 1], (2, 2), (0, 0)),
        // Big enough for im2col to split its rows over threads.
        ([1, 4, 64, 64], [3, 4, 3, 3], (1, 1), (1, 1)),
    ];
    for (i, (xs, ws, s, p)) in cases.into_iter().enumerate() {
        for kind in 0..4 {
            check_conv(xs, ws, s, p, true, kind, 100 + i as u64, DType::F32, COL_BUDGET, 1e-4);
        }
    }
}

#[test]
fn conv_transpose2d_kernel_equals_stride_matches_reference() {
    // The parsing head's 2x2 stride-2 upsampling, and a non-square 3x2 one, on a channels-last
    // view (as the model's). The last one is big enough for col2im to split output channels
    // over threads.
    let cases = [
        ([2, 5, 3, 4], [5, 3, 2, 2], (2, 2)),
        ([1, 4, 3, 5], [4, 2, 3, 2], (3, 2)),
        ([1, 3, 40, 40], [3, 12, 2, 2], (2, 2)),
    ];
    for (xs, ws, s) in cases {
        let x = nchw_input(xs, 11, 1, DType::F32);
        let wt = Tensor::randn(&ws, 12, DType::F32);
        let b = Tensor::randn(&[ws[1]], 13, DType::F32);
        let got = x.conv_transpose2d(&wt, Some(&b), s, (0, 0)).unwrap();
        let (want, shape) = conv_t_ref(&vals(&x), xs, &vals(&wt), ws, Some(&vals(&b)), s, (0, 0), (0, 0));
        assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
        // The channels-last view is read in place: the bits of its contiguous copy.
        let copy = x.contiguous().conv_transpose2d(&wt, Some(&b), s, (0, 0)).unwrap();
        assert_eq!(got.to_f32_vec().unwrap(), copy.to_f32_vec().unwrap(), "{xs:?} {ws:?}");
    }
}

/// The weight-gradient primitive against its definition, in f64, for both convolutions'
/// uses (the gradient of conv2d and of conv_transpose2d) and strided operands.
#[test]
fn weight_grad_matches_definition() {
    // (n, c, r, h, w, kh, kw, sh, sw, ph, pw, ho, wo): ho x wo output positions.
    let cases = [
        (2, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, 7, 6),
        (1, 2, 3, 9, 8, 3, 2, 2, 3, 1, 0, 5, 3),
        (2, 3, 5, 8, 8, 4, 4, 4, 4, 0, 0, 2, 2),
        (2, 4, 3, 5, 5, 1, 1, 1, 1, 0, 0, 5, 5),
        // conv_transpose2d's use: left is the input, the source its (larger) output gradient.
        (2, 3, 2, 9, 11, 3, 3, 2, 2, 1, 1, 5, 6),
    ];
    for (case, &(n, c, r, h, w, kh, kw, sh, sw, ph, pw, ho, wo)) in cases.iter().enumerate() {
        let left = nchw_input([n, r, ho, wo], case as u64, case as u8, DType::F32);
        let src = nchw_input([n, c, h, w], 50 + case as u64, case as u8 + 1, DType::F32);
        let got = left.conv2d_weight_grad(&src, (kh, kw), (sh, sw), (ph, pw)).unwrap();
        let (lv, sv) = (vals(&left), vals(&src));
        let mut want = vec![0.0; r * c * kh * kw];
        for ni in 0..n {
            for ri in 0..r {
                for ci in 0..c {
                    for a in 0..kh {
                        for b in 0..kw {
                            for i in 0..ho {
                                for j in 0..wo {
                                    let (y, x) =
                                        ((i * sh + a) as isize - ph as isize, (j * sw + b) as isize - pw as isize);
                                    if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                        continue;
                                    }
                                    want[ri * c * kh * kw + (ci * kh + a) * kw + b] += lv
                                        [((ni * r + ri) * ho + i) * wo + j]
                                        * sv[((ni * c + ci) * h + y as usize) * w + x as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_close(&format!("weight grad case {case}"), &got, &want, &[r, c * kh * kw], 1e-5);
    }
    let e = Tensor::zeros(&[2, 1, 3, 3], DType::F32)
        .conv2d_weight_grad(&Tensor::zeros(&[1, 1, 3, 3], DType::F32), (1, 1), (1, 1), (0, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d_weight_grad") && e.contains("[2, 1, 3, 3]"), "{e}");
}

#[test]
fn conv2d_known_values() {
    // 3x3 box filter over 1..=9 with padding 1: corners sum their 2x2 neighbourhood.
    let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), &[1, 1, 3, 3]).unwrap();
    let wt = Tensor::ones(&[1, 1, 3, 3], DType::F32);
    let b = Tensor::from_vec(vec![0.5f32], &[1]).unwrap();
    let y = x.conv2d(&wt, Some(&b), (1, 1), (1, 1)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5]);
    // Stride 2: only the corners and the centre... of a 3x3 output grid → 2x2.
    let y = x.conv2d(&wt, None, (2, 2), (1, 1)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.0, 16.0, 24.0, 28.0]);
    // convT 2x2/2 of a single pixel 2 with weight [1,2;3,4] and bias 1.
    let x = Tensor::from_vec(vec![2.0f32], &[1, 1, 1, 1]).unwrap();
    let wt = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    let b = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
    let y = x.conv_transpose2d(&wt, Some(&b), (2, 2), (0, 0)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.0, 5.0, 7.0, 9.0]);
}

#[test]
fn conv_transpose2d_large_overlapping_matches_reference() {
    // Overlapping windows with padding, big enough for col2im to run over several threads.
    let x = nchw_input([1, 3, 30, 30], 31, 3, DType::F32);
    let wt = Tensor::randn(&[3, 12, 3, 3], 32, DType::F32);
    let got = x.conv_transpose2d(&wt, None, (2, 2), (1, 1)).unwrap();
    let (want, shape) = conv_t_ref(&vals(&x), [1, 3, 30, 30], &vals(&wt), [3, 12, 3, 3], None, (2, 2), (1, 1), (0, 0));
    assert_close("conv_transpose2d", &got, &want, &shape, 1e-4);
}

#[test]
fn conv_transpose2d_bf16_matches_reference() {
    let x = nchw_input([2, 3, 4, 5], 21, 2, DType::BF16);
    let wt = Tensor::randn(&[3, 4, 3, 3], 22, DType::BF16);
    let b = Tensor::randn(&[4], 23, DType::BF16);
    let got = x.conv_transpose2d(&wt, Some(&b), (2, 2), (1, 1)).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    let (want, shape) =
        conv_t_ref(&vals(&x), [2, 3, 4, 5], &vals(&wt), [3, 4, 3, 3], Some(&vals(&b)), (2, 2), (1, 1), (0, 0));
    assert_close("conv_transpose2d", &got, &want, &shape, 1e-2);
}

#[test]
fn conv_errors_name_op_and_shapes() {
    let x = Tensor::zeros(&[1, 3, 5, 5], DType::F32);
    let e = x.conv2d(&Tensor::zeros(&[4, 2, 3, 3], DType::F32), None, (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("[1, 3, 5, 5]") && e.contains("[4, 2, 3, 3]"), "{e}");
    let w = Tensor::zeros(&[4, 3, 3, 3], DType::F32);
    let e = x.conv2d(&w, None, (0, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("stride"), "{e}");
    let big = Tensor::zeros(&[4, 3, 7, 3], DType::F32);
    let e = x.conv2d(&big, None, (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("larger") && e.contains("[4, 3, 7, 3]"), "{e}");
    assert!(x.conv2d(&big, None, (1, 1), (1, 0)).is_ok());
    let e = x.conv2d(&w, Some(&Tensor::zeros(&[3], DType::F32)), (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("bias"), "{e}");
    let e = Tensor::zeros(&[3, 5, 5], DType::F32).conv2d(&w, None, (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("rank 4"), "{e}");
    assert!(matches!(
        Tensor::zeros(&[1, 3, 5, 5], DType::I64).conv2d(&w, None, (1, 1), (0, 0)),
        Err(Error::UnsupportedDType { op: "conv2d", .. })
    ));
    assert!(matches!(
        x.conv2d(&w.to_dtype(DType::F16), None, (1, 1), (0, 0)),
        Err(Error::DTypeMismatch { op: "conv2d", .. })
    ));
    let wt = Tensor::zeros(&[2, 4, 2, 2], DType::F32);
    let e = x.conv_transpose2d(&wt, None, (2, 2), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv_transpose2d") && e.contains("[2, 4, 2, 2]"), "{e}");
    let one = Tensor::zeros(&[1, 2, 1, 1], DType::F32);
    let e = one.conv_transpose2d(&wt, None, (1, 1), (1, 1)).unwrap_err().to_string();
    assert!(e.contains("conv_transpose2d") && e.contains("padding"), "{e}");
    assert!(one.conv_transpose2d_ext(&wt, None, (2, 2), (0, 0), (2, 0)).is_err());
}

#[test]
fn empty_batch_gives_empty_output() {
    let x = Tensor::zeros(&[0, 3, 5, 5], DType::F32);
    let y = x.conv2d(&Tensor::zeros(&[4, 3, 3, 3], DType::F32), None, (1, 1), (0, 0)).unwrap();
    assert_eq!(y.shape(), &[0, 4, 3, 3]);
}
