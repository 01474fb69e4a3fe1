//! ImageNet initialisation (`model.init = "imagenet"`): a torchvision Swin state dict saved by
//! PyTorch (scripts/make-torchvision-fixture.py: torchvision's SwinTransformer at a small width,
//! random weights) maps onto FaceXFormer's backbone, and the backbone then computes what
//! torchvision computes: every stage output within 1e-4 relative error of PyTorch's.

use facex::checkpoint::{load_pytorch, torchvision, CheckpointError};
use facex::model::{DecoderConfig, FaceXFormer, FacexConfig, SwinConfig};
use facex::train::run::set_parameters;
use facex_suite::{read_safetensors, rel_error};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision").join(name)
}

fn config(embed_dim: usize) -> FacexConfig {
    FacexConfig {
        backbone: SwinConfig {
            embed_dim,
            depths: vec![1, 1, 1, 1],
            num_heads: vec![1, 2, 4, 8],
            window_size: 7,
            patch_size: 4,
        },
        decoder: DecoderConfig { dim: 64, depth: 1, heads: 4, mlp_dim: 128, cross_downsample: 2 },
    }
}

#[test]
fn torchvision_swin_initialises_the_backbone_exactly() {
    let sd = load_pytorch(fixture("swin_random.pth"), None).unwrap();
    let cfg = config(16);
    let backbone = torchvision::backbone_from_torchvision(&sd, &cfg).unwrap();
    // Everything but the classifier (head.weight, head.bias) and the buffers is a parameter.
    assert_eq!(backbone.len(), sd.len() - 2);
    let model = FaceXFormer::new_random(&cfg, 7).unwrap();
    let set = set_parameters(&model, &backbone).unwrap();
    let buffers = backbone.names().filter(|k| k.ends_with("relative_position_index")).count();
    assert_eq!(set, backbone.len() - buffers);

    let io = read_safetensors(&fixture("swin_random.io.safetensors"));
    let input = autograd::Var::constant(io["input"].clone());
    let out = autograd::no_grad(|| model.forward(&input)).unwrap();
    let inter = &out.inter;
    for (name, got) in
        [("stage1", &inter.stage1), ("stage2", &inter.stage2), ("stage3", &inter.stage3), ("stage4", &inter.stage4)]
    {
        let want = &io[name];
        assert_eq!(got.shape(), want.shape(), "{name}");
        let err = rel_error(&got.value().to_f32_vec().unwrap(), &want.to_f32_vec().unwrap());
        println!("{name}: rel error {err:.2e} against torchvision");
        assert!(err < 1e-4, "{name}: rel error {err}");
    }
}

#[test]
fn a_swin_of_another_width_is_refused_with_the_keys() {
    let sd = load_pytorch(fixture("swin_random.pth"), None).unwrap();
    match torchvision::backbone_from_torchvision(&sd, &config(32)) {
        Err(CheckpointError::Keys { misshaped, .. }) => {
            assert!(misshaped
                .iter()
                .any(|(k, want, got)| k == "backbone.0.0.0.weight" && want[0] == 32 && got[0] == 16));
        }
        other => panic!("expected a key/shape error, got {:?}", other.map(|s| s.len())),
    }
}
