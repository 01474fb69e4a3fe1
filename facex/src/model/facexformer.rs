//! FaceXFormer: Swin-B encoder, multi-scale fusion, two-way decoder, heads. One forward pass
//! returns all eight outputs for every sample (the official `tasks` argument only selects rows).

use super::decoder::TwoWayTransformer;
use super::fusion::{gaussian_matrix, positional_encoding, Fusion};
use super::heads::{Heads, Tokens, NUM_MASKS, NUM_TOKENS};
use super::layers::{LayerNorm, PackedSlot};
use super::params::{Builder, Entry, Source};
use super::schema::Schema;
use super::swin::SwinEncoder;
use super::{FacexConfig, ModelError};
use crate::checkpoint::StateDict;
use autograd::Var;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tensor::profile;
use tensor::{DType, Error, Result, Tensor};

/// The model's input side: inputs are [N, 3, 224, 224].
pub const IMAGE_SIZE: usize = 224;

/// Intermediate tensors, named as in the fixtures (`inter.*`).
#[derive(Clone, Debug)]
pub struct Intermediates {
    /// Raw stage outputs, NCHW (views of the NHWC activations).
    pub stage1: Var,
    pub stage2: Var,
    pub stage3: Var,
    pub stage4: Var,
    /// The fused map [B, D, 56, 56] (a view of the image tokens).
    pub fused: Var,
    /// [D, 56, 56].
    pub pos_encoding: Var,
    /// [B, 18, D]: the decoder's output tokens.
    pub decoder_tokens: Var,
    /// [B, 3136, D]: the decoder's output image tokens.
    pub decoder_image: Var,
}

/// Every head for every sample (`out.*` in the fixtures), plus the intermediates.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// [B, 136]: 68 (x, y) in [-1, 1].
    pub landmarks: Var,
    /// [B, 3]: pitch, yaw, roll in radians.
    pub pose: Var,
    /// [B, 40] CelebA attribute logits.
    pub attributes: Var,
    /// [B, 29] COFW occlusion logits (1 = occluded).
    pub visibility: Var,
    /// [B, 8] age-bin logits.
    pub age: Var,
    /// [B, 2] gender logits.
    pub gender: Var,
    /// [B, 5] race logits.
    pub race: Var,
    /// [B, 11, 224, 224] parsing logits; [k, 11, 224, 224] for the rows `segmentation_rows`
    /// lists when the forward was asked for only those (training on a mixed-task batch).
    pub segmentation: Var,
    pub segmentation_rows: Option<Vec<usize>>,
    pub inter: Intermediates,
}

impl Outputs {
    /// The eight heads under their fixture names (`out.landmarks`, ...).
    pub fn heads(&self) -> Vec<(&'static str, &Var)> {
        vec![
            ("out.landmarks", &self.landmarks),
            ("out.pose", &self.pose),
            ("out.attributes", &self.attributes),
            ("out.visibility", &self.visibility),
            ("out.age", &self.age),
            ("out.gender", &self.gender),
            ("out.race", &self.race),
            ("out.segmentation", &self.segmentation),
        ]
    }

    /// The intermediates under their fixture names (`inter.stage1`, ...).
    pub fn intermediates(&self) -> Vec<(&'static str, &Var)> {
        let i = &self.inter;
        vec![
            ("inter.stage1", &i.stage1),
            ("inter.stage2", &i.stage2),
            ("inter.stage3", &i.stage3),
            ("inter.stage4", &i.stage4),
            ("inter.fused", &i.fused),
            ("inter.pos_encoding", &i.pos_encoding),
            ("inter.decoder_tokens", &i.decoder_tokens),
            ("inter.decoder_image", &i.decoder_image),
        ]
    }

    /// Heads and intermediates.
    pub fn named(&self) -> Vec<(&'static str, &Var)> {
        let mut v = self.heads();
        v.extend(self.intermediates());
        v
    }
}

pub struct FaceXFormer {
    config: FacexConfig,
    /// What `entries` holds, by module (the device loader reads the same keys).
    schema: Schema,
    entries: Vec<(String, Entry)>,
    encoder: SwinEncoder,
    fusion: Fusion,
    tokens: Tokens,
    transformer: TwoWayTransformer,
    heads: Heads,
    /// [1, HW, D] (for the decoder) and [D, H, W] (the fixture's view), from the stored G.
    image_pe: Var,
    pe_chw: Var,
    /// The linear layers' packed-weight caches (inference packs each weight once).
    packed: Vec<PackedSlot>,
    /// Their switch: off, every product packs its weight (one copy of the weights in memory).
    packing: Arc<AtomicBool>,
}

impl FaceXFormer {
    fn build(config: &FacexConfig, source: Source) -> std::result::Result<FaceXFormer, ModelError> {
        let schema = Schema::new(config)?;
        let d = &config.decoder;
        let mut b = Builder::new(source);
        // Construction order = the official state-dict order.
        let encoder = SwinEncoder::new(&mut b, &schema.backbone);
        let _final_norm = LayerNorm::new(&mut b, &schema.final_norm); // unused by the model
        let gaussian = gaussian_matrix(&mut b, &schema.gaussian);
        let transformer = TwoWayTransformer::new(&mut b, &schema.transformer);
        let tokens = Tokens::new(&mut b, &schema.tokens);
        let heads = Heads::new(&mut b, &schema.heads);
        let fusion = Fusion::new(&mut b, &schema.fusion);

        let side = schema.pe_side;
        let pe = if b.is_spec() {
            Tensor::zeros(&[d.dim, side, side], DType::F32)
        } else {
            positional_encoding(&gaussian, side, side)?
        };
        let image_pe = pe.reshape(&[1, d.dim, side * side])?.transpose(1, 2)?.contiguous();
        let (packed, packing) = (b.take_packed_slots(), b.packing_switch());
        let entries = b.finish()?;
        Ok(FaceXFormer {
            config: config.clone(),
            schema,
            entries,
            encoder,
            fusion,
            tokens,
            transformer,
            heads,
            image_pe: Var::constant(image_pe),
            pe_chw: Var::constant(pe),
            packed,
            packing,
        })
    }

    /// Lets go of every weight packed for inference (the packed copies, and the weight values
    /// they were packed from). Inference packs each linear layer's weight once, which holds a
    /// second copy of the weights; a training run calls this after each evaluation, since its
    /// next step replaces every weight anyway.
    pub fn release_packed_weights(&self) {
        for slot in &self.packed {
            *slot.lock().expect("packed weight lock") = None;
        }
    }

    /// Whether inference packs each linear layer's weight once (the default: faster, a second
    /// copy of the weights in memory; swin_b: +350 MB in f32) or in every product (off: one
    /// copy; batch 1 ~10% slower on a Zen 3 EPYC). Turning it off lets the packed copies go.
    pub fn set_weight_packing(&self, on: bool) {
        self.packing.store(on, Ordering::Relaxed);
        if !on {
            self.release_packed_weights();
        }
    }

    /// How many linear layers hold a weight packed for inference now.
    pub fn packed_weights(&self) -> usize {
        self.packed.iter().filter(|slot| slot.lock().expect("packed weight lock").is_some()).count()
    }

    /// Random weights resembling PyTorch's initialisation (Swin: trunc-normal 0.02 linears;
    /// others U(±1/sqrt(fan_in)); LayerNorm 1/0; tokens and the PE matrix N(0, 1)).
    pub fn new_random(config: &FacexConfig, seed: u64) -> std::result::Result<FaceXFormer, ModelError> {
        FaceXFormer::build(config, Source::Random { seed })
    }

    /// Load from named tensors with the official keys (a state dict). Any problem (missing,
    /// unexpected, mis-shaped, non-float keys) gives one error listing all of them.
    pub fn from_tensors<'a, I>(config: &FacexConfig, tensors: I) -> std::result::Result<FaceXFormer, ModelError>
    where
        I: IntoIterator<Item = (&'a str, &'a Tensor)>,
    {
        let map: HashMap<&str, &Tensor> = tensors.into_iter().collect();
        FaceXFormer::build(config, Source::Load(map))
    }

    /// Load from a state dict (see [`FaceXFormer::from_tensors`]). `relative_position_index`
    /// buffers may be absent: they are recomputed.
    pub fn from_state_dict(config: &FacexConfig, sd: &StateDict) -> std::result::Result<FaceXFormer, ModelError> {
        FaceXFormer::from_tensors(config, sd.iter())
    }

    /// The official state-dict keys and shapes of a config, in the checkpoint's order (including
    /// the unused `backbone.1` norm and the int64 `relative_position_index` buffers).
    pub fn expected_keys(config: &FacexConfig) -> std::result::Result<Vec<(String, Vec<usize>)>, ModelError> {
        let m = FaceXFormer::build(config, Source::Spec)?;
        Ok(m.entries.iter().map(|(k, e)| (k.clone(), e.tensor().shape().to_vec())).collect())
    }

    pub fn config(&self) -> &FacexConfig {
        &self.config
    }

    pub(crate) fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Every trainable parameter (named with its key), in state-dict order. `backbone.1.*` is
    /// among them, as in PyTorch, though it never receives a gradient.
    pub fn parameters(&self) -> Vec<Var> {
        self.entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Param(v) => Some(v.clone()),
                Entry::Buffer(_) => None,
            })
            .collect()
    }

    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Param(v) => Some((k.clone(), v.clone())),
                Entry::Buffer(_) => None,
            })
            .collect()
    }

    /// Every entry of the official state dict (parameters' current values and buffers), in order.
    pub fn state_dict(&self) -> StateDict {
        self.entries.iter().map(|(k, e)| (k.clone(), e.tensor())).collect()
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|v| v.value().elem_count()).sum()
    }

    /// x: [N, 3, 224, 224] (float; converted to f32) -> all outputs and intermediates.
    /// Under `autograd::no_grad` nothing is recorded; otherwise the graph reaches every parameter.
    pub fn forward(&self, x: &Var) -> Result<Outputs> {
        self.forward_parsing_rows(x, None)
    }

    /// `forward`, with the parsing head (the upscaler to 224x224 and the hypernetwork product,
    /// the costliest head) run only on `rows` when given: in a mixed-task batch the other rows'
    /// parsing logits would be computed and thrown away. Every other output covers every row.
    pub fn forward_parsing_rows(&self, x: &Var, rows: Option<&[usize]>) -> Result<Outputs> {
        let s = x.shape();
        if s.len() != 4 || s[0] == 0 || s[1] != 3 || s[2] != IMAGE_SIZE || s[3] != IMAGE_SIZE {
            return Err(Error::BadShape {
                op: "FaceXFormer::forward",
                shape: s,
                expected: format!("[N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}] with N >= 1"),
            });
        }
        let x = match x.dtype() {
            DType::F32 => x.clone(),
            dt if dt.is_float() => x.to_dtype(DType::F32)?,
            dt => return Err(Error::UnsupportedDType { op: "FaceXFormer::forward", dtype: dt }),
        };
        let b = s[0];
        let d = self.config.decoder.dim;

        let stages = self.encoder.forward(&x)?;
        let image = {
            let _stage = profile::stage("fusion");
            self.fusion.forward(&stages)?
        }; // [B, HW, D]
        let hw = image.shape()[1];
        let side = (hw as f64).sqrt().round() as usize;
        let fused = image.reshape(&[b, side, side, d])?.permute(&[0, 3, 1, 2])?;

        let table = self.tokens.table()?; // [T, D]
        let tokens = table.unsqueeze(0)?.broadcast_to(&[b, NUM_TOKENS, d])?;
        let (hs, keys) = {
            let _stage = profile::stage("decoder");
            self.transformer.forward(&tokens, &image, &self.image_pe)?
        };

        let heads_stage = profile::stage("heads");
        let mut task = self.heads.tasks(&hs)?.into_iter();
        let mut next = || task.next().expect("seven task heads");
        let (landmarks, pose, attributes, visibility) = (next(), next(), next(), next());
        let (age, gender, race) = (next(), next(), next());
        drop(heads_stage);
        let _stage = profile::stage("upscaler");
        let segmentation = match rows {
            None => self.heads.segmentation(&hs, &keys)?,
            Some([]) => Var::constant(Tensor::zeros(&[0, NUM_MASKS, IMAGE_SIZE, IMAGE_SIZE], DType::F32)),
            Some(rows) => {
                if let Some(&bad) = rows.iter().find(|&&r| r >= b) {
                    return Err(Error::InvalidArgument {
                        op: "FaceXFormer::forward_parsing_rows",
                        msg: format!("row {bad} of a batch of {b}"),
                    });
                }
                let index = Tensor::from_vec(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), &[rows.len()])?;
                self.heads.segmentation(&hs.index_select(0, &index)?, &keys.index_select(0, &index)?)?
            }
        };

        let nchw = |v: &Var| v.permute(&[0, 3, 1, 2]);
        let inter = Intermediates {
            stage1: nchw(&stages[0])?,
            stage2: nchw(&stages[1])?,
            stage3: nchw(&stages[2])?,
            stage4: nchw(&stages[3])?,
            fused,
            pos_encoding: self.pe_chw.clone(),
            decoder_tokens: hs,
            decoder_image: keys,
        };
        let segmentation_rows = rows.map(<[usize]>::to_vec);
        Ok(Outputs {
            landmarks,
            pose,
            attributes,
            visibility,
            age,
            gender,
            race,
            segmentation,
            segmentation_rows,
            inter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_keys_match_the_official_checkpoint() {
        let text = include_str!("testdata/facexformer_state_dict_keys.txt");
        let official: Vec<(String, Vec<usize>)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let shape =
                    f[1].trim_matches(|c| c == '[' || c == ']').split(", ").map(|d| d.parse().unwrap()).collect();
                (f[0].to_string(), shape)
            })
            .collect();
        let ours = FaceXFormer::expected_keys(&FacexConfig::swin_b()).unwrap();
        assert_eq!(ours.len(), 505);
        for (a, b) in ours.iter().zip(&official) {
            assert_eq!(a, b);
        }
        assert_eq!(ours, official);
        let params: usize = text
            .lines()
            .filter(|l| l.contains("\tparam\t"))
            .zip(&ours)
            .map(|(_, (_, s))| s.iter().product::<usize>())
            .sum::<usize>();
        assert!(params > 0);
    }

    #[test]
    fn tiny_random_model_has_the_fixture_parameter_count() {
        let m = FaceXFormer::new_random(&FacexConfig::tiny(), 1).unwrap();
        // config.json of the tiny fixture: "params": 2526573.
        assert_eq!(m.num_parameters(), 2_526_573);
        assert_eq!(m.state_dict().len(), 281); // 8 Swin blocks instead of 24
        assert!(m.parameters().iter().all(|p| p.name().is_some() && p.requires_grad()));
        // Same seed, same weights; another seed, others.
        let again = FaceXFormer::new_random(&FacexConfig::tiny(), 1).unwrap();
        let other = FaceXFormer::new_random(&FacexConfig::tiny(), 2).unwrap();
        let key = "face_decoder.mask_tokens.weight";
        let get = |m: &FaceXFormer| m.state_dict().get(key).unwrap().to_f32_vec().unwrap();
        assert_eq!(get(&m), get(&again));
        assert_ne!(get(&m), get(&other));
    }

    #[test]
    fn loading_reports_every_problem_at_once() {
        let cfg = FacexConfig::tiny();
        let mut sd = FaceXFormer::new_random(&cfg, 3).unwrap().state_dict();
        sd.remove("linear_fuse.weight");
        sd.remove("backbone.0.1.0.attn.relative_position_index"); // recomputable: not an error
        sd.insert("module.extra", Tensor::zeros(&[1], DType::F32));
        sd.insert("backbone.1.weight", Tensor::zeros(&[3], DType::F32));
        sd.insert("face_decoder.pose_token.weight", Tensor::zeros(&[1, 64], DType::I64));
        let err = FaceXFormer::from_state_dict(&cfg, &sd).err().expect("must fail");
        match &err {
            ModelError::Keys { missing, unexpected, misshaped, wrong_dtype } => {
                assert_eq!(missing, &[("linear_fuse.weight".to_string(), vec![64, 256, 1, 1])]);
                assert_eq!(unexpected, &["module.extra".to_string()]);
                assert_eq!(misshaped, &[("backbone.1.weight".to_string(), vec![256], vec![3])]);
                assert_eq!(wrong_dtype.len(), 1);
            }
            other => panic!("unexpected error {other}"),
        }
        let text = err.to_string();
        assert!(text.contains("linear_fuse.weight") && text.contains("module.extra") && text.contains("[3]"));
    }

    #[test]
    fn loading_round_trips_the_state_dict() {
        let cfg = FacexConfig::tiny();
        let m = FaceXFormer::new_random(&cfg, 4).unwrap();
        let sd = m.state_dict();
        let n = FaceXFormer::from_state_dict(&cfg, &sd).unwrap();
        for ((ka, a), (kb, b)) in sd.iter().zip(n.state_dict().iter()) {
            assert_eq!(ka, kb);
            assert!(a.same_storage(b), "{ka} is shared, not copied");
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut cfg = FacexConfig::tiny();
        cfg.backbone.window_size = 5;
        assert!(matches!(FaceXFormer::new_random(&cfg, 0), Err(ModelError::Config(_))));
        let mut cfg = FacexConfig::tiny();
        cfg.decoder.heads = 3;
        assert!(matches!(FaceXFormer::expected_keys(&cfg), Err(ModelError::Config(_))));
        let mut cfg = FacexConfig::tiny();
        cfg.backbone.depths = vec![2, 2, 2];
        cfg.backbone.num_heads = vec![1, 2, 4];
        assert!(FaceXFormer::new_random(&cfg, 0).is_err());
    }
}
