//! Gradient parity with the official model (issue 4's acceptance test): with the fixture's
//! weights, input and targets, every loss and every parameter gradient (and the input gradient)
//! must match the float64 reference of the official code within the fixture README's tolerances.
//! Reads `$FACEX_FIXTURES` when set, else the in-repo tiny fixture.

use autograd::Var;
use facex::model::{FaceXFormer, FacexConfig};
use facex::train::{task_losses, Targets};
use facex_suite::{allowed, diff_norms, fixture_dir, float32_errors, read_safetensors, rel_error};
use std::collections::HashMap;

#[test]
fn losses_and_gradients_match_the_official_model() {
    let dir = fixture_dir();
    let config = FacexConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let weights = read_safetensors(&dir.join("weights.safetensors"));
    let io = read_safetensors(&dir.join("io.safetensors"));
    let want_grads = read_safetensors(&dir.join("grads.safetensors"));
    let f32_err = float32_errors(&dir);

    let model = FaceXFormer::from_tensors(&config, weights.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
    let input = Var::leaf(io["input"].clone());
    let out = model.forward(&input).unwrap();

    // Losses: relative error under 1e-5 each.
    let target = |k: &str| io.get(&format!("target.{k}")).unwrap_or_else(|| panic!("missing target.{k}")).clone();
    let targets = Targets {
        rows: Targets::every_row(2),
        segmentation: target("segmentation"),
        landmarks: target("landmarks"),
        pose: target("pose"),
        attributes: target("attributes"),
        visibility: target("visibility"),
        age: target("age"),
        gender: target("gender"),
        race: target("race"),
    };
    let parts = task_losses(&out, &targets).unwrap();
    let mut failures = Vec::new();
    let mut total: Option<Var> = None;
    for (name, loss) in &parts {
        let key = format!("loss.{name}");
        let (got, want) = (loss.value().to_f32_vec().unwrap(), io[&key].to_f32_vec().unwrap());
        let err = rel_error(&got, &want);
        let tol = allowed(&f32_err, &key, 1e-5);
        println!("{key:<20} ours {:>12.7} official {:>12.7} rel err {err:.2e} (tol {tol:.0e})", got[0], want[0]);
        if err.is_nan() || err >= tol {
            failures.push(format!("{key}: {err:.3e}"));
        }
        total = Some(match total {
            None => loss.clone(),
            Some(t) => t.add(loss).unwrap(),
        });
    }
    let total = total.unwrap();
    let err = rel_error(&total.value().to_f32_vec().unwrap(), &io["loss.total"].to_f32_vec().unwrap());
    println!("loss.total rel err {err:.2e}");
    assert!(err < 1e-5, "loss.total rel err {err}");

    let grads = total.backward().unwrap();

    // Parameter gradients: ||a-b|| <= 5e-3 * max(||b||, 1e-4 * G), G the norm of all of them.
    let g_norm = want_grads
        .values()
        .map(|g| g.to_f32_vec().unwrap().iter().map(|&x| (x as f64).powi(2)).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    let params: HashMap<String, Var> = model.named_parameters().into_iter().collect();
    let (mut worst, mut worst_name, mut checked) = (0.0f64, String::new(), 0);
    for (name, want) in &want_grads {
        let p = params.get(name).unwrap_or_else(|| panic!("fixture gradient for unknown parameter {name}"));
        let want = want.to_f32_vec().unwrap();
        let got = match grads.get(p) {
            Some(g) => g.to_f32_vec().unwrap(),
            None => vec![0.0; want.len()],
        };
        let (diff, norm) = diff_norms(&got, &want);
        let scale = norm.max(1e-4 * g_norm);
        let ratio = diff / scale;
        let tol = allowed(&f32_err, &format!("grad.{name}"), 5e-3);
        if ratio > worst {
            worst = ratio;
            worst_name = name.clone();
        }
        if ratio.is_nan() || ratio > tol {
            failures.push(format!("grad {name}: {ratio:.3e} of its scale (tol {tol:.0e})"));
        }
        checked += 1;
    }
    println!("{checked} parameter gradients; worst {worst_name} at {worst:.2e} of max(||g||, 1e-4 G)");

    // The input gradient, same rule with its own norm.
    let want = io["grad.input"].to_f32_vec().unwrap();
    let got = grads.get(&input).expect("input gradient").to_f32_vec().unwrap();
    let (diff, norm) = diff_norms(&got, &want);
    let ratio = diff / norm.max(1e-4 * g_norm);
    println!("grad.input: {ratio:.2e}");
    if ratio.is_nan() || ratio > 5e-3 {
        failures.push(format!("grad.input: {ratio:.3e}"));
    }
    assert!(failures.is_empty(), "gradient parity failures:\n{}", failures.join("\n"));
}
