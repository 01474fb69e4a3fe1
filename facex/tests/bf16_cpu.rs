//! bf16 products on the CPU (`--dtype bf16`): the process-wide precision is global state, so
//! this test has its own binary. Inference packs each linear weight once; the packed copy must
//! give the bits of packing per call (`set_weight_packing(false)`), and a changed weight must be
//! packed again.

use autograd::{no_grad, Var};
use facex::model::{FaceXFormer, FacexConfig};
use tensor::cpu::gemm::{set_matmul_precision, Isa, MatmulPrecision};
use tensor::{DType, Tensor};

/// Inference outputs, each linear's weight packed once (`packed`) or in every product.
fn heads(model: &FaceXFormer, x: &Var, packed: bool) -> Vec<f32> {
    model.set_weight_packing(packed);
    let out = no_grad(|| model.forward(x)).unwrap();
    out.heads().into_iter().flat_map(|(_, v)| v.value().to_vec::<f32>().unwrap()).collect()
}

#[test]
fn packed_weights_equal_per_call_packing_and_follow_weight_changes() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 3).unwrap();
    let x = Var::constant(Tensor::randn(&[2, 3, 224, 224], 4, DType::F32));
    let f32_out = heads(&model, &x, true);
    set_matmul_precision(MatmulPrecision::Bf16);
    let packed = heads(&model, &x, true);
    assert!(model.packed_weights() > 0, "inference packed no weight");
    assert_eq!(packed, heads(&model, &x, true), "the cached packing changed the result");
    assert_eq!(packed, heads(&model, &x, false), "packed once differs from packing per call");
    assert_eq!(model.packed_weights(), 0, "packing off kept packed weights");
    let rel = |a: &[f32], b: &[f32]| {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
        (num / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()).sqrt()
    };
    let err = rel(&packed, &f32_out);
    assert!(err < 0.1, "bf16 against f32: relative L2 {err}");
    if Isa::for_precision(MatmulPrecision::Bf16).is_bf16() {
        assert!(err > 0.0, "bf16 equals f32: the bf16 kernel did not run");
    }
    // An optimizer-like update of every parameter once they are packed: the next inference
    // packs the new weights.
    let _ = heads(&model, &x, true);
    for p in model.parameters() {
        p.set_value(p.value().affine(0.9, 0.001).unwrap()).unwrap();
    }
    let changed = heads(&model, &x, true);
    assert_ne!(changed, packed, "the update was ignored");
    assert_eq!(changed, heads(&model, &x, false), "a stale packed weight was used");
    set_matmul_precision(MatmulPrecision::F32);
}
