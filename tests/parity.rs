//! Forward parity with the official model: every `out.*` and `inter.*` tensor of the fixture
//! (float64 reference computed from the official code) within relative error 1e-4, or 3x
//! PyTorch's own float32 error where the fixture directory gives it (`float32_errors.json`).
//! The fixture directory is `$FACEX_FIXTURES` when set, else tests/fixtures/facexformer-tiny.

use facex::checkpoint::{load_weights, StateDict};
use facex::model::{FaceXFormer, FacexConfig};
use facex_suite::{allowed, fixture_dir, float32_errors, read_safetensors, rel_error};

fn check(weights: &str) {
    let dir = fixture_dir();
    let config = FacexConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let sd: StateDict = load_weights(dir.join(weights)).unwrap();
    let model = FaceXFormer::from_state_dict(&config, &sd).unwrap_or_else(|e| panic!("{e}"));
    let io = read_safetensors(&dir.join("io.safetensors"));
    let errors = float32_errors(&dir);
    let input = autograd::Var::constant(io["input"].clone());
    let out = autograd::no_grad(|| model.forward(&input)).unwrap();
    let mut failures = Vec::new();
    for (name, var) in out.named() {
        let want = &io[name];
        let got = var.value();
        assert_eq!(got.shape(), want.shape(), "{name}: shape");
        let err = rel_error(&got.to_f32_vec().unwrap(), &want.to_f32_vec().unwrap());
        let tol = allowed(&errors, name, 1e-4);
        println!("{weights} {name:<24} rel error {err:.3e} (allowed {tol:.1e})");
        if err.is_nan() || err >= tol {
            failures.push(format!("{name}: {err:.3e} >= {tol:.1e}"));
        }
    }
    assert!(failures.is_empty(), "{weights}: parity failures:\n{}", failures.join("\n"));
}

#[test]
fn parity_safetensors() {
    check("weights.safetensors");
}

#[test]
fn parity_model_pt() {
    check("model.pt");
}

#[test]
fn wrong_input_shape_is_an_error_naming_it() {
    let model = FaceXFormer::new_random(&FacexConfig::tiny(), 0).unwrap();
    let x = autograd::Var::constant(tensor::Tensor::zeros(&[1, 3, 200, 224], tensor::DType::F32));
    let err = autograd::no_grad(|| model.forward(&x)).expect_err("must fail").to_string();
    assert!(err.contains("[1, 3, 200, 224]") && err.contains("224"), "{err}");
}
