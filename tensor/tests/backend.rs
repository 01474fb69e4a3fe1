//! The emulator backend (the `kernels` bodies under the thread-grid emulator) against the
//! reference backend through the conformance harness, plus direct checks: hand-computed values,
//! views with offsets, launch orders, errors that name the op, and a harness that catches a
//! wrong backend.

use std::sync::Arc;
use tensor::backend::conformance::{self, CaseResult, Cases};
use tensor::backend::emulator::{Emulator, Order};
use tensor::backend::reference::Reference;
use tensor::backend::{Backend, BinaryOp, DevTensor};
use tensor::ops::Activation;
use tensor::{DType, Error, Result, Tensor};

fn assert_all_passed(results: &[CaseResult]) {
    println!("{}", conformance::report(results));
    if let Err(e) = conformance::ensure_passed(results) {
        panic!("{e}");
    }
}

#[test]
fn emulator_conforms_f32() {
    assert_all_passed(&conformance::check_all(&Emulator::default(), DType::F32, Cases::Small, 7));
}

#[test]
fn emulator_conforms_bf16() {
    assert_all_passed(&conformance::check_all(&Emulator::default(), DType::BF16, Cases::Small, 11));
}

/// The kernels that cooperate (barriers, warps, tensor cores) under the other start orders.
#[test]
fn emulator_conforms_in_every_order() {
    let coop = |op: &str| {
        matches!(op, "linear" | "attention" | "attention_packed" | "softmax_rows" | "layer_norm" | "hyper_product")
    };
    for order in [Order::Forward, Order::Reverse, Order::Shuffled(99)] {
        for dtype in [DType::F32, DType::BF16] {
            assert_all_passed(&conformance::check_matching(&Emulator::new(order), dtype, Cases::Small, 3, coop));
        }
    }
}

fn host(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

/// `act(x wᵀ + b)` by hand: x = [[1, 2, 3], [4, 5, 6]], w = [[1, 0, -1], [0.5, 0.5, 0.5]],
/// b = [10, -10] -> [[8, -7], [8, -2.5]] (exact in bf16 too).
#[test]
fn linear_by_hand() {
    let em = Emulator::default();
    let x = host(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let w = host(&[1., 0., -1., 0.5, 0.5, 0.5], &[2, 3]);
    let b = host(&[10., -10.], &[2]);
    for dtype in [DType::F32, DType::BF16] {
        let (xd, wd, bd) =
            (em.upload(&x, dtype).unwrap(), em.upload(&w, dtype).unwrap(), em.upload(&b, DType::F32).unwrap());
        for (act, want) in [(Activation::None, [8., -7., 8., -2.5]), (Activation::Relu, [8., 0., 8., 0.])] {
            let y = em.linear(&xd, &wd, Some(&bd), act).unwrap();
            assert_eq!((y.shape(), y.dtype()), (&[2, 2][..], dtype));
            let got = em.download(&y).unwrap();
            assert_eq!(got.dtype(), dtype);
            assert_eq!(got.to_f32_vec().unwrap(), want, "{dtype:?} {act:?}");
        }
        // Without bias: [[-2, 3], [-2, 7.5]].
        let y = em.download(&em.linear(&xd, &wd, None, Activation::None).unwrap()).unwrap();
        assert_eq!(y.to_f32_vec().unwrap(), [-2., 3., -2., 7.5]);
    }
}

/// A permuted copy checked index by index: out[i, j, k] = x[j, k, i].
#[test]
fn permuted_copy() {
    let em = Emulator::default();
    let x = Tensor::arange(24, DType::F32).reshape(&[2, 3, 4]).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let y = em.permute(&em.upload(&x, dtype).unwrap(), &[2, 0, 1]).unwrap();
        assert_eq!(y.shape(), [4, 2, 3]);
        let got = em.download(&y).unwrap().to_f32_vec().unwrap();
        for i in 0..4 {
            for j in 0..2 {
                for k in 0..3 {
                    assert_eq!(got[(i * 2 + j) * 3 + k], (j * 12 + k * 4 + i) as f32, "{dtype:?} [{i}, {j}, {k}]");
                }
            }
        }
        // A rank-0 tensor is its own permutation.
        let s = em.permute(&em.upload(&Tensor::full(2.5, &[], DType::F32), dtype).unwrap(), &[]).unwrap();
        assert_eq!(em.download(&s).unwrap().to_f32_vec().unwrap(), [2.5]);
    }
}

/// Upload then download is exact (bf16: the values are bf16 already), and views keep offsets.
#[test]
fn upload_download_and_views() {
    let em = Emulator::default();
    let t = Tensor::rand_uniform(&[5, 3, 4], -2.0, 2.0, 5, DType::F32);
    for dtype in [DType::F32, DType::BF16] {
        let host = t.to_dtype(dtype);
        let d = em.upload(&host, dtype).unwrap();
        assert_eq!(em.download(&d).unwrap().to_f32_vec().unwrap(), host.to_f32_vec().unwrap());
        let rows = d.narrow0(1, 3).unwrap();
        let want = host.narrow(0, 1, 3).unwrap().to_f32_vec().unwrap();
        assert_eq!(em.download(&rows).unwrap().to_f32_vec().unwrap(), want);
        // An op on a view reads from the view's offset (odd: the GEMM's unaligned path in bf16).
        let x = d.select0(3).unwrap().reshape(&[3, 4]).unwrap();
        assert_eq!(x.offset(), 36);
        let y = em.activation(&x, Activation::Relu).unwrap();
        let want: Vec<f32> = host.narrow(0, 3, 1).unwrap().to_f32_vec().unwrap().iter().map(|v| v.max(0.0)).collect();
        assert_eq!(em.download(&y).unwrap().to_f32_vec().unwrap(), want);
        let w = em.upload(&Tensor::rand_uniform(&[6, 4], -1.0, 1.0, 9, DType::F32), dtype).unwrap();
        let view = d.reshape(&[15, 4]).unwrap().narrow0(1, 13).unwrap(); // offset 4 elements (8 bytes in bf16)
        let copy = em.upload(&em.download(&view).unwrap(), dtype).unwrap();
        let (a, b) = (
            em.linear(&view, &w, None, Activation::None).unwrap(),
            em.linear(&copy, &w, None, Activation::None).unwrap(),
        );
        assert_eq!(em.download(&a).unwrap().to_f32_vec().unwrap(), em.download(&b).unwrap().to_f32_vec().unwrap());
    }
}

/// Bad arguments are errors naming the op (checked before any launch), never panics.
#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let em = Emulator::default();
    let up = |shape: &[usize]| em.upload(&Tensor::zeros(shape, DType::F32), DType::F32).unwrap();
    let name = |r: Result<DevTensor<Emulator>>| r.unwrap_err().to_string();
    assert!(name(em.linear(&up(&[3, 4]), &up(&[5, 3]), None, Activation::None)).starts_with("linear:"));
    // Head dims above 128 (the widest attention instance) are refused with the reason.
    let wide = em.attention(&up(&[1, 2, 130]), &up(&[1, 3, 130]), &up(&[1, 3, 130]), 1, None, None, 1.0);
    assert!(matches!(wide, Err(Error::BadShape { op: "attention", .. })));
    let msg = name(em.attention_packed(&up(&[1, 4, 3 * 2 * 136]), 2, None, None, 1.0));
    assert!(msg.starts_with("attention_packed:") && msg.contains("above 128"), "{msg}");
    assert!(name(em.binary(&up(&[3, 4]), &up(&[3]), BinaryOp::Add)).starts_with("binary:"));
    assert!(name(em.window_partition(&up(&[1, 5, 5, 2]), 2, 0)).starts_with("window_partition:"));
    assert!(name(em.patch_merge(&up(&[1, 3, 4, 2]))).starts_with("patch_merge:"));
    assert!(name(em.permute(&up(&[2, 3]), &[1, 1])).starts_with("permute:"));
    assert!(name(em.hyper_product(&up(&[1, 33, 4]), &up(&[1, 4, 5]))).starts_with("hyper_product:"));
    assert!(name(em.upsample_sum_nhwc(&[], (4, 4))).starts_with("upsample_sum_nhwc:"));
    assert!(matches!(em.upload(&Tensor::zeros(&[2], DType::F32), DType::F16), Err(Error::UnsupportedDType { .. })));
    // A tensor that claims more than its buffer holds is refused, not read out of bounds.
    let small = up(&[4]);
    let liar = DevTensor::<Emulator>::from_parts(Arc::clone(small.buf()), 2, vec![4], DType::F32);
    assert!(matches!(em.activation(&liar, Activation::None), Err(Error::Device { op: "activation", .. })));
    let wrong_type = DevTensor::<Emulator>::from_parts(Arc::clone(small.buf()), 0, vec![4], DType::BF16);
    assert!(em.download(&wrong_type).is_err());
}

/// Empty tensors give empty outputs without a launch.
#[test]
fn empty_shapes() {
    let em = Emulator::default();
    let up = |shape: &[usize]| em.upload(&Tensor::zeros(shape, DType::F32), DType::F32).unwrap();
    let y = em.linear(&up(&[0, 4]), &up(&[3, 4]), None, Activation::None).unwrap();
    assert_eq!(y.shape(), [0, 3]);
    assert_eq!(em.softmax_rows(&up(&[0, 5])).unwrap().shape(), [0, 5]);
    assert_eq!(em.activation(&up(&[2, 0]), Activation::Gelu).unwrap().shape(), [2, 0]);
    // k = 0: the output is the bias alone.
    let bias = em.upload(&host(&[1.5, -2.0, 0.25], &[3]), DType::F32).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let x = em.upload(&Tensor::zeros(&[2, 0], DType::F32), dtype).unwrap();
        let w = em.upload(&Tensor::zeros(&[3, 0], DType::F32), dtype).unwrap();
        let y = em.download(&em.linear(&x, &w, Some(&bias), Activation::None).unwrap()).unwrap();
        assert_eq!(y.to_f32_vec().unwrap(), [1.5, -2.0, 0.25, 1.5, -2.0, 0.25], "{dtype:?}");
    }
}

/// The reference with one op skewed by `delta` on its output: the harness must flag exactly
/// that op's cases.
struct Skewed {
    op: &'static str,
    delta: f32,
}

type R = DevTensor<Reference>;
type S = DevTensor<Skewed>;

fn to_r(x: &S) -> R {
    DevTensor::from_parts(Arc::clone(x.buf()), x.offset(), x.shape().to_vec(), x.dtype())
}

impl Skewed {
    fn back(&self, op: &'static str, y: Result<R>) -> Result<S> {
        let y = y?;
        let y = if op == self.op {
            let t = Reference.download(&y)?.to_dtype(DType::F32).affine(1.0, self.delta as f64)?;
            Reference.upload(&t, y.dtype())?
        } else {
            y
        };
        Ok(DevTensor::from_parts(Arc::clone(y.buf()), y.offset(), y.shape().to_vec(), y.dtype()))
    }
}

impl Backend for Skewed {
    type Buf = Tensor;
    fn name(&self) -> String {
        format!("reference with {} skewed", self.op)
    }
    fn upload(&self, t: &Tensor, dtype: DType) -> Result<S> {
        self.back("upload", Reference.upload(t, dtype))
    }
    fn download(&self, x: &S) -> Result<Tensor> {
        Reference.download(&to_r(x))
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn permute(&self, x: &S, perm: &[usize]) -> Result<S> {
        self.back("permute", Reference.permute(&to_r(x), perm))
    }
    fn linear(&self, x: &S, w: &S, bias: Option<&S>, act: Activation) -> Result<S> {
        self.back("linear", Reference.linear(&to_r(x), &to_r(w), bias.map(to_r).as_ref(), act))
    }
    fn linear_add(&self, x: &S, w: &S, bias: Option<&S>, act: Activation, residual: &S) -> Result<S> {
        let r = Reference.linear_add(&to_r(x), &to_r(w), bias.map(to_r).as_ref(), act, &to_r(residual));
        self.back("linear_add", r)
    }
    fn window_reverse_add(&self, x: &S, hw: (usize, usize), window: usize, shift: usize, residual: &S) -> Result<S> {
        self.back("window_reverse_add", Reference.window_reverse_add(&to_r(x), hw, window, shift, &to_r(residual)))
    }
    fn binary(&self, a: &S, b: &S, op: BinaryOp) -> Result<S> {
        self.back("binary", Reference.binary(&to_r(a), &to_r(b), op))
    }
    fn activation(&self, x: &S, act: Activation) -> Result<S> {
        self.back("activation", Reference.activation(&to_r(x), act))
    }
    fn layer_norm(&self, x: &S, w: &S, b: &S, eps: f32) -> Result<S> {
        self.back("layer_norm", Reference.layer_norm(&to_r(x), &to_r(w), &to_r(b), eps))
    }
    fn layer_norm2d(&self, x: &S, w: &S, b: &S, eps: f32) -> Result<S> {
        self.back("layer_norm2d", Reference.layer_norm2d(&to_r(x), &to_r(w), &to_r(b), eps))
    }
    fn softmax_rows(&self, x: &S) -> Result<S> {
        self.back("softmax_rows", Reference.softmax_rows(&to_r(x)))
    }
    fn attention(
        &self,
        q: &S,
        k: &S,
        v: &S,
        heads: usize,
        bias: Option<&S>,
        mask: Option<&S>,
        scale: f32,
    ) -> Result<S> {
        let (bias, mask) = (bias.map(to_r), mask.map(to_r));
        let r = Reference.attention(&to_r(q), &to_r(k), &to_r(v), heads, bias.as_ref(), mask.as_ref(), scale);
        self.back("attention", r)
    }
    fn attention_packed(&self, qkv: &S, heads: usize, bias: Option<&S>, mask: Option<&S>, scale: f32) -> Result<S> {
        let (bias, mask) = (bias.map(to_r), mask.map(to_r));
        self.back(
            "attention_packed",
            Reference.attention_packed(&to_r(qkv), heads, bias.as_ref(), mask.as_ref(), scale),
        )
    }
    fn window_partition(&self, x: &S, window: usize, shift: usize) -> Result<S> {
        self.back("window_partition", Reference.window_partition(&to_r(x), window, shift))
    }
    fn window_reverse(&self, x: &S, hw: (usize, usize), window: usize, shift: usize) -> Result<S> {
        self.back("window_reverse", Reference.window_reverse(&to_r(x), hw, window, shift))
    }
    fn patch_merge(&self, x: &S) -> Result<S> {
        self.back("patch_merge", Reference.patch_merge(&to_r(x)))
    }
    fn upsample_bilinear(&self, x: &S, size: (usize, usize)) -> Result<S> {
        self.back("upsample_bilinear", Reference.upsample_bilinear(&to_r(x), size))
    }
    fn upsample_sum_nhwc(&self, maps: &[&S], size: (usize, usize)) -> Result<S> {
        let maps: Vec<R> = maps.iter().map(|m| to_r(m)).collect();
        self.back("upsample_sum_nhwc", Reference.upsample_sum_nhwc(&maps.iter().collect::<Vec<_>>(), size))
    }
    fn conv_transpose2x2(&self, x: &S, w: &S, bias: &S) -> Result<S> {
        self.back("conv_transpose2x2", Reference.conv_transpose2x2(&to_r(x), &to_r(w), &to_r(bias)))
    }
    fn hyper_product(&self, h: &S, u: &S) -> Result<S> {
        self.back("hyper_product", Reference.hyper_product(&to_r(h), &to_r(u)))
    }
}

#[test]
fn harness_flags_a_wrong_op() {
    let ops = [
        "permute",
        "linear",
        "linear_add",
        "softmax_rows",
        "attention",
        "attention_packed",
        "upsample_sum_nhwc",
        "hyper_product",
        "window_reverse",
        "window_reverse_add",
    ];
    for op in ops {
        // One bf16 step at 1 is 2^-7: a skew of 0.05 is beyond every tolerance, in both dtypes.
        let results = conformance::check_all(&Skewed { op, delta: 0.05 }, DType::F32, Cases::Small, 1);
        for r in &results {
            if r.op == op && !r.expect_error {
                assert!(!r.passed, "skewed {op} passed: {r:?}");
            } else {
                assert!(r.passed, "{op} skewed, but {} failed: {r:?}", r.op);
            }
        }
        assert!(results.iter().any(|r| r.op == op && !r.passed), "no {op} case failed");
    }
    // The unskewed reference passes everything, including every error case.
    assert_all_passed(&conformance::check_all(&Skewed { op: "none", delta: 0.0 }, DType::BF16, Cases::Small, 2));
}

/// The real Swin-B shapes (batch 1) under the emulator, f32 and bf16: under a minute on two
/// cores. The CUDA backend runs the same cases on a GPU.
#[test]
fn emulator_conforms_at_model_shapes() {
    for dtype in [DType::F32, DType::BF16] {
        let t = std::time::Instant::now();
        let results = conformance::check_all(&Emulator::default(), dtype, Cases::Model, 5);
        println!("{dtype:?}: {:.1} s", t.elapsed().as_secs_f64());
        assert_all_passed(&results);
    }
}
