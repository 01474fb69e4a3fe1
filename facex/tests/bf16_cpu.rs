//! bf16 products on the CPU (`--dtype bf16`): the process-wide precision is global state, so
//! this test has its own binary. Inference packs each linear weight once; the packed copy must
//! give the bits of packing per call (`set_weight_packing(false)`), and a changed weight must be
//! packed again. It also checks the fused Swin MLP (`Tensor::mlp_add`) at this precision.

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

/// `Tensor::mlp_add` (per block of rows) at the bf16 precision against its two products, with
/// the weights packed for the bf16 kernel and not: the same bits, as in f32 (its own tests).
fn fused_mlp_is_its_composite() {
    use tensor::ops::matmul::PackedWeight;
    use tensor::ops::mlp::{block_rows, LinearRef};
    use tensor::ops::Activation;
    let x = Tensor::randn(&[1000, 48], 1, DType::F32);
    let (w1, w2) = (Tensor::randn(&[2048, 48], 2, DType::F32), Tensor::randn(&[40, 2048], 3, DType::F32));
    let (b1, b2) = (Tensor::randn(&[2048], 4, DType::F32), Tensor::randn(&[40], 5, DType::F32));
    let r = Tensor::randn(&[1000, 40], 6, DType::F32);
    let (p1, p2) = (PackedWeight::new(&w1).unwrap(), PackedWeight::new(&w2).unwrap());
    let bits = |t: Tensor| t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for packed in [true, false] {
        let fc1 = LinearRef { weight: &w1, bias: Some(&b1), packed: packed.then_some(&p1) };
        let fc2 = LinearRef { weight: &w2, bias: Some(&b2), packed: packed.then_some(&p2) };
        let (fused, composite) = pool.install(|| {
            assert!(block_rows(1000, 48, 2048, 40, 2).is_some(), "the blocks must run");
            let h = x.linear_act_packed(&w1, fc1.bias, Activation::Gelu, fc1.packed).unwrap();
            (x.mlp_add(fc1, fc2, &r).unwrap(), h.linear_add_packed(&w2, fc2.bias, &r, fc2.packed).unwrap())
        });
        assert_eq!(bits(fused), bits(composite), "bf16 products, packed {packed}");
    }
}

#[test]
fn packed_weights_equal_per_call_packing_and_follow_weight_changes() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 3).unwrap();
    let x = Var::constant(Tensor::randn(&[2, 3, 224, 224], 4, DType::F32));
    let f32_out = heads(&model, &x, true);
    set_matmul_precision(MatmulPrecision::Bf16);
    fused_mlp_is_its_composite();
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
