//! Inference packs each linear layer's weight once for the f32 kernel (the transpose a GEMM
//! would otherwise do every call). The cache must be reused, follow weight changes, and go
//! when the model lets it go.

use autograd::{no_grad, Var};
use facex::model::{FaceXFormer, FacexConfig};
use tensor::{DType, Tensor};

fn heads(model: &FaceXFormer, x: &Var) -> Vec<f32> {
    let out = no_grad(|| model.forward(x)).unwrap();
    out.heads().into_iter().flat_map(|(_, v)| v.value().to_vec::<f32>().unwrap()).collect()
}

/// The same weights in a new model, whose layers have packed nothing yet.
fn fresh_copy(model: &FaceXFormer) -> FaceXFormer {
    FaceXFormer::from_state_dict(model.config(), &model.state_dict()).unwrap()
}

/// That packed panels give the bits of packing per call is the GEMM's test
/// (`prepacked_f32_b_equals_packing_per_call`) and `linear_act_packed`'s; this is the cache.
#[test]
fn f32_packed_weights_are_reused_follow_changes_and_are_released() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 5).unwrap();
    let x = Var::constant(Tensor::randn(&[1, 3, 224, 224], 6, DType::F32));
    assert_eq!(model.packed_weights(), 0, "packed before any inference");
    model.forward(&x).unwrap();
    assert_eq!(model.packed_weights(), 0, "a pass recording gradients packed weights");
    let packed = heads(&model, &x);
    // Every linear layer that ran packed its weight: at least one per Swin block.
    let layers = model.packed_weights();
    assert!(layers >= 8, "only {layers} linear layers packed their weight");
    assert_eq!(packed, heads(&model, &x), "the cached packing changed the result");
    // An optimizer-like update of every parameter: the next inference packs the new weights,
    // as a new model with those weights does.
    for p in model.parameters() {
        p.set_value(p.value().affine(0.9, 0.001).unwrap()).unwrap();
    }
    let changed = heads(&model, &x);
    assert_ne!(changed, packed, "the update was ignored");
    assert_eq!(changed, heads(&fresh_copy(&model), &x), "a stale packed weight was used");
    model.release_packed_weights();
    assert_eq!(model.packed_weights(), 0, "release kept packed weights");
    assert_eq!(changed, heads(&model, &x), "packing again after the release differs");
    assert_eq!(model.packed_weights(), layers);
}

/// With packing off (`--low-memory`) nothing is kept and the outputs are the same bits; turning
/// it off lets the packed copies go, turning it on packs again.
#[test]
fn weight_packing_can_be_turned_off() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 7).unwrap();
    let x = Var::constant(Tensor::randn(&[1, 3, 224, 224], 8, DType::F32));
    let packed = heads(&model, &x);
    assert!(model.packed_weights() > 0);
    model.set_weight_packing(false);
    assert_eq!(model.packed_weights(), 0, "turning packing off kept the packed weights");
    assert_eq!(heads(&model, &x), packed, "per-call packing gives other bits");
    assert_eq!(model.packed_weights(), 0, "inference packed with packing off");
    model.set_weight_packing(true);
    assert_eq!(heads(&model, &x), packed);
    assert!(model.packed_weights() > 0, "packing on again packed nothing");
}
