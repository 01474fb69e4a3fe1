//! The model's weight schema: one typed, plain-data description of every parameter and buffer of
//! FaceXFormer for a [`FacexConfig`] (its state-dict key, shape, LayerNorm eps, random-init
//! family, and the per-layer facts the forwards need: heads, windows, shifts, resolutions).
//!
//! It is the single place where key strings and epsilons are spelled. Both model
//! implementations read it: the autograd builders (`swin`, `fusion`, `decoder`, `heads`,
//! `facexformer`) construct their `Var`s from these specs, and the device loader
//! (`device::{encoder, decoder}`) uploads the same keys into its kernel layouts. A renamed key or
//! a new config is therefore one change here. [`Schema::keys`] lists the entries in the official
//! state-dict order; a test checks it against the autograd model's construction order.

use super::heads::{NUM_MASKS, TASKS};
use super::{FacexConfig, ModelError, IMAGE_SIZE};

#[cfg(test)]
mod keys;

/// How a Linear's weight is drawn at random initialisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LinearInit {
    /// PyTorch's default: weight and bias U(±1/sqrt(in)).
    Default,
    /// torchvision Swin: weight trunc-normal(0.02), bias 0.
    Swin,
}

/// A named tensor of a fixed shape (tokens, the bias table, buffers).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorSpec {
    pub key: String,
    pub shape: Vec<usize>,
}

/// nn.Linear: `{key}.weight` [out, inp] and, with `bias`, `{key}.bias` [out].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LinearSpec {
    pub key: String,
    pub inp: usize,
    pub out: usize,
    pub bias: bool,
    pub init: LinearInit,
}

/// nn.LayerNorm (or LayerNorm2d): `{key}.weight` and `{key}.bias`, both [dim].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NormSpec {
    pub key: String,
    pub dim: usize,
    pub eps: f64,
}

/// nn.Conv2d ([out, inp, k, k]) or nn.ConvTranspose2d ([inp, out, k, k]), optional bias [out];
/// initialised U(±1/sqrt(fan_in)) with PyTorch's fan_in (`weight.size(1)·k·k`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConvSpec {
    pub key: String,
    pub inp: usize,
    pub out: usize,
    pub kernel: usize,
    pub bias: bool,
    pub transposed: bool,
}

fn weight_key(key: &str) -> String {
    format!("{key}.weight")
}

fn bias_key(key: &str) -> String {
    format!("{key}.bias")
}

impl LinearSpec {
    fn new(key: String, inp: usize, out: usize, init: LinearInit) -> LinearSpec {
        LinearSpec { key, inp, out, bias: true, init }
    }
    pub fn weight_key(&self) -> String {
        weight_key(&self.key)
    }
    pub fn bias_key(&self) -> String {
        bias_key(&self.key)
    }
}

impl NormSpec {
    fn new(key: String, dim: usize, eps: f64) -> NormSpec {
        NormSpec { key, dim, eps }
    }
    pub fn weight_key(&self) -> String {
        weight_key(&self.key)
    }
    pub fn bias_key(&self) -> String {
        bias_key(&self.key)
    }
}

impl ConvSpec {
    pub fn weight_key(&self) -> String {
        weight_key(&self.key)
    }
    pub fn bias_key(&self) -> String {
        bias_key(&self.key)
    }
    pub fn weight_shape(&self) -> Vec<usize> {
        let (a, b) = if self.transposed { (self.inp, self.out) } else { (self.out, self.inp) };
        vec![a, b, self.kernel, self.kernel]
    }
    /// 1/sqrt(fan_in), the bound of PyTorch's default uniform init of weight and bias.
    pub fn init_bound(&self) -> f64 {
        let w = self.weight_shape();
        1.0 / ((w[1] * self.kernel * self.kernel) as f64).sqrt()
    }
}

/// LayerNorm eps of the Swin backbone and the two-way transformer (PyTorch's default).
const EPS: f64 = 1e-5;
/// LayerNorm2d eps of SAM's upscaler.
const EPS_2D: f64 = 1e-6;

/// The patch embedding: a k = s = patch conv, then LayerNorm.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PatchEmbedSpec {
    pub conv: ConvSpec,
    pub norm: NormSpec,
}

/// PatchMerging before a stage: Linear(4C, 2C) without bias (listed first), LayerNorm(4C).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PatchMergeSpec {
    pub reduction: LinearSpec,
    pub norm: NormSpec,
}

/// One Swin v1 block.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SwinBlockSpec {
    pub norm1: NormSpec,
    /// [(2w-1)², heads], trunc-normal(0.02).
    pub bias_table: TensorSpec,
    /// The i64 buffer [w⁴]; recomputable (`relative_position_index`).
    pub index: TensorSpec,
    pub qkv: LinearSpec,
    pub proj: LinearSpec,
    pub norm2: NormSpec,
    pub fc1: LinearSpec,
    pub fc2: LinearSpec,
    pub heads: usize,
    pub window: usize,
    /// The cyclic shift of this block: the stage's shift for odd blocks, else 0.
    pub shift: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StageSpec {
    /// None for the first stage.
    pub merge: Option<PatchMergeSpec>,
    pub blocks: Vec<SwinBlockSpec>,
    pub dim: usize,
    /// The square map side at this stage.
    pub res: usize,
    /// The shift of odd blocks: window / 2, or 0 when the window covers the map (torchvision).
    pub shift: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SwinSpec {
    pub patch_embed: PatchEmbedSpec,
    pub stages: Vec<StageSpec>,
    pub patch: usize,
    pub window: usize,
}

/// The fusion module: `linear_c.{i}.proj` per stage and the 1×1 `linear_fuse` conv.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FusionSpec {
    pub proj: Vec<LinearSpec>,
    pub fuse: ConvSpec,
    pub dim: usize,
}

/// SAM's Attention: q/k/v projections to `internal` = dim / downsample, out projection back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttentionSpec {
    pub q: LinearSpec,
    pub k: LinearSpec,
    pub v: LinearSpec,
    pub out: LinearSpec,
    pub heads: usize,
    pub internal: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TwoWayBlockSpec {
    pub self_attn: AttentionSpec,
    pub norm1: NormSpec,
    pub cross_t2i: AttentionSpec,
    pub norm2: NormSpec,
    pub lin1: LinearSpec,
    pub lin2: LinearSpec,
    pub norm3: NormSpec,
    pub norm4: NormSpec,
    pub cross_i2t: AttentionSpec,
    pub skip_first_layer_pe: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TransformerSpec {
    pub layers: Vec<TwoWayBlockSpec>,
    pub final_attn: AttentionSpec,
    pub norm_final: NormSpec,
}

/// SAM's `MLP(in, hidden, out, 3)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mlp3Spec {
    pub layers: [LinearSpec; 3],
}

/// ConvTranspose2d(D, D/4, 2, 2), LayerNorm2d, GELU, ConvTranspose2d(D/4, D/8, 2, 2), GELU.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UpscalerSpec {
    pub up0: ConvSpec,
    pub norm: NormSpec,
    pub up1: ConvSpec,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeadsSpec {
    pub upscaler: UpscalerSpec,
    pub hyper: Mlp3Spec,
    /// The seven task heads, in [`TASKS`] order.
    pub tasks: Vec<Mlp3Spec>,
}

/// Every parameter and buffer of the model, grouped by module.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Schema {
    pub backbone: SwinSpec,
    /// The backbone's final LayerNorm (`backbone.1`): in the checkpoint, unused by the model.
    pub final_norm: NormSpec,
    /// The positional encoding's Gaussian matrix [2, D/2], a buffer drawn N(0, 1).
    pub gaussian: TensorSpec,
    pub transformer: TransformerSpec,
    /// The seven task tokens [1, D] and the mask tokens [11, D], in output order; N(0, 1).
    pub tokens: Vec<TensorSpec>,
    pub heads: HeadsSpec,
    pub fusion: FusionSpec,
    /// The decoder width D.
    pub dim: usize,
    /// The side of the fused map and of the positional encoding.
    pub pe_side: usize,
}

fn config_error(msg: String) -> ModelError {
    ModelError::Config(msg)
}

/// Checks the model-level constraints (before any per-stage one, as errors are reported in order).
fn check_model(cfg: &FacexConfig) -> Result<(), ModelError> {
    let d = &cfg.decoder;
    if cfg.backbone.depths.len() != 4 {
        return Err(config_error(format!(
            "the backbone has {} stages ({:?}); FaceXFormer fuses exactly 4",
            cfg.backbone.depths.len(),
            cfg.backbone.depths
        )));
    }
    if d.dim == 0 || !d.dim.is_multiple_of(8) || d.heads == 0 || d.cross_downsample == 0 {
        return Err(config_error(format!(
            "decoder dim {} must be a positive multiple of 8, heads {} and cross_downsample {} positive",
            d.dim, d.heads, d.cross_downsample
        )));
    }
    let internal = d.dim / d.cross_downsample;
    if !d.dim.is_multiple_of(d.heads) || !internal.is_multiple_of(d.heads) || internal * d.cross_downsample != d.dim {
        return Err(config_error(format!(
            "decoder dim {} with {} heads and cross_downsample {}: every attention width must split evenly",
            d.dim, d.heads, d.cross_downsample
        )));
    }
    Ok(())
}

/// Swin block `k` of stage `stage` (0-based) at width `dim`.
pub(crate) fn swin_block(
    dim: usize,
    heads: usize,
    window: usize,
    shift: usize,
    stage: usize,
    k: usize,
) -> SwinBlockSpec {
    let p = format!("backbone.0.{}.{k}", 2 * stage + 1);
    let lin = |name: &str, inp, out| LinearSpec::new(format!("{p}.{name}"), inp, out, LinearInit::Swin);
    let t = (2 * window - 1) * (2 * window - 1);
    let n = window * window;
    SwinBlockSpec {
        norm1: NormSpec::new(format!("{p}.norm1"), dim, EPS),
        bias_table: TensorSpec { key: format!("{p}.attn.relative_position_bias_table"), shape: vec![t, heads] },
        index: TensorSpec { key: format!("{p}.attn.relative_position_index"), shape: vec![n * n] },
        qkv: lin("attn.qkv", dim, 3 * dim),
        proj: lin("attn.proj", dim, dim),
        norm2: NormSpec::new(format!("{p}.norm2"), dim, EPS),
        fc1: lin("mlp.0", dim, 4 * dim),
        fc2: lin("mlp.3", 4 * dim, dim),
        heads,
        window,
        shift: if k % 2 == 1 { shift } else { 0 },
    }
}

/// The Swin encoder for an `image`×`image` input, or the first config problem found.
pub(crate) fn swin(cfg: &super::SwinConfig, image: usize) -> Result<SwinSpec, ModelError> {
    let (p, c, win) = (cfg.patch_size, cfg.embed_dim, cfg.window_size);
    if cfg.depths.len() != cfg.num_heads.len() || cfg.depths.is_empty() {
        return Err(config_error(format!(
            "backbone depths {:?} and num_heads {:?} must be non-empty and of the same length",
            cfg.depths, cfg.num_heads
        )));
    }
    if p == 0 || win == 0 || c == 0 {
        return Err(config_error(format!("backbone patch {p}, window {win}, width {c} must be positive")));
    }
    let patch_embed = PatchEmbedSpec {
        conv: ConvSpec { key: "backbone.0.0.0".into(), inp: 3, out: c, kernel: p, bias: true, transposed: false },
        norm: NormSpec::new("backbone.0.0.2".into(), c, EPS),
    };
    let mut stages = Vec::new();
    let mut res = image / p;
    for (i, (&depth, &heads)) in cfg.depths.iter().zip(&cfg.num_heads).enumerate() {
        let dim = c << i;
        let merge = (i > 0).then(|| {
            let (pre, half) = (format!("backbone.0.{}", 2 * i), dim / 2);
            let mut reduction = LinearSpec::new(format!("{pre}.reduction"), 4 * half, 2 * half, LinearInit::Swin);
            reduction.bias = false;
            PatchMergeSpec { reduction, norm: NormSpec::new(format!("{pre}.norm"), 4 * half, EPS) }
        });
        if i > 0 {
            res /= 2;
        }
        if res == 0 || !res.is_multiple_of(win) || heads == 0 || dim % heads != 0 {
            return Err(config_error(format!(
                "stage {} has a {res}x{res} map, window {win}, width {dim} and {heads} heads: the map must be a \
                 positive multiple of the window and the width a multiple of the heads",
                i + 1
            )));
        }
        // torchvision uses no shift when the window covers the whole map.
        let shift = if win < res { win / 2 } else { 0 };
        let blocks = (0..depth).map(|k| swin_block(dim, heads, win, shift, i, k)).collect();
        stages.push(StageSpec { merge, blocks, dim, res, shift });
    }
    Ok(SwinSpec { patch_embed, stages, patch: p, window: win })
}

/// The fusion of stages of `widths` into `dim` channels.
pub(crate) fn fusion(widths: &[usize], dim: usize) -> FusionSpec {
    let proj = widths
        .iter()
        .enumerate()
        .map(|(i, &c)| LinearSpec::new(format!("linear_c.{i}.proj"), c, dim, LinearInit::Default))
        .collect();
    let cin = dim * widths.len();
    let fuse = ConvSpec { key: "linear_fuse".into(), inp: cin, out: dim, kernel: 1, bias: false, transposed: false };
    FusionSpec { proj, fuse, dim }
}

fn attention(p: String, dim: usize, heads: usize, downsample: usize) -> AttentionSpec {
    let internal = dim / downsample;
    let lin = |name: &str, i, o| LinearSpec::new(format!("{p}.{name}"), i, o, LinearInit::Default);
    AttentionSpec {
        q: lin("q_proj", dim, internal),
        k: lin("k_proj", dim, internal),
        v: lin("v_proj", dim, internal),
        out: lin("out_proj", internal, dim),
        heads,
        internal,
    }
}

/// SAM's TwoWayTransformer (`face_decoder.transformer`).
pub(crate) fn transformer(cfg: &super::DecoderConfig) -> TransformerSpec {
    let (p, d, h, ds) = ("face_decoder.transformer", cfg.dim, cfg.heads, cfg.cross_downsample);
    let layers = (0..cfg.depth)
        .map(|l| {
            let q = format!("{p}.layers.{l}");
            let norm = |name: &str| NormSpec::new(format!("{q}.{name}"), d, EPS);
            let lin = |name: &str, i, o| LinearSpec::new(format!("{q}.mlp.{name}"), i, o, LinearInit::Default);
            TwoWayBlockSpec {
                self_attn: attention(format!("{q}.self_attn"), d, h, 1),
                norm1: norm("norm1"),
                cross_t2i: attention(format!("{q}.cross_attn_token_to_image"), d, h, ds),
                norm2: norm("norm2"),
                lin1: lin("lin1", d, cfg.mlp_dim),
                lin2: lin("lin2", cfg.mlp_dim, d),
                norm3: norm("norm3"),
                norm4: norm("norm4"),
                cross_i2t: attention(format!("{q}.cross_attn_image_to_token"), d, h, ds),
                skip_first_layer_pe: l == 0,
            }
        })
        .collect();
    TransformerSpec {
        layers,
        final_attn: attention(format!("{p}.final_attn_token_to_image"), d, h, ds),
        norm_final: NormSpec::new(format!("{p}.norm_final_attn"), d, EPS),
    }
}

fn mlp3(p: &str, inp: usize, hidden: usize, out: usize) -> Mlp3Spec {
    let lin = |i: usize, a, b| LinearSpec::new(format!("{p}.layers.{i}"), a, b, LinearInit::Default);
    Mlp3Spec { layers: [lin(0, inp, hidden), lin(1, hidden, hidden), lin(2, hidden, out)] }
}

/// The task tokens, then the mask tokens.
pub(crate) fn tokens(dim: usize) -> Vec<TensorSpec> {
    let mut t: Vec<TensorSpec> = TASKS
        .iter()
        .map(|(name, _)| TensorSpec { key: format!("face_decoder.{name}_token.weight"), shape: vec![1, dim] })
        .collect();
    t.push(TensorSpec { key: "face_decoder.mask_tokens.weight".into(), shape: vec![NUM_MASKS, dim] });
    t
}

/// The upscaler, the hypernetwork MLP and the seven task heads.
pub(crate) fn heads(dim: usize) -> HeadsSpec {
    let p = "face_decoder.output_upscaling";
    let (c1, c2) = (dim / 4, dim / 8);
    let up =
        |i: usize, inp, out| ConvSpec { key: format!("{p}.{i}"), inp, out, kernel: 2, bias: true, transposed: true };
    HeadsSpec {
        upscaler: UpscalerSpec {
            up0: up(0, dim, c1),
            norm: NormSpec::new(format!("{p}.1"), c1, EPS_2D),
            up1: up(3, c1, c2),
        },
        hyper: mlp3("face_decoder.output_hypernetwork_mlps", dim, dim, c2),
        tasks: TASKS
            .iter()
            .map(|(name, out)| mlp3(&format!("face_decoder.{name}_prediction_head"), dim, dim, *out))
            .collect(),
    }
}

impl Schema {
    /// The schema of `cfg`, or the first problem that keeps it from describing a working model.
    pub fn new(cfg: &FacexConfig) -> Result<Schema, ModelError> {
        check_model(cfg)?;
        let backbone = swin(&cfg.backbone, IMAGE_SIZE)?;
        let d = cfg.decoder.dim;
        let top = backbone.stages.last().expect("four stages").dim;
        let widths: Vec<usize> = backbone.stages.iter().map(|s| s.dim).collect();
        Ok(Schema {
            dim: d,
            pe_side: IMAGE_SIZE / cfg.backbone.patch_size,
            backbone,
            final_norm: NormSpec::new("backbone.1".into(), top, EPS),
            gaussian: TensorSpec { key: "pe_layer.positional_encoding_gaussian_matrix".into(), shape: vec![2, d / 2] },
            transformer: transformer(&cfg.decoder),
            tokens: tokens(d),
            heads: heads(d),
            fusion: fusion(&widths, d),
        })
    }
}
