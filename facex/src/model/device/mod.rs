//! FaceXFormer inference on a device [`Backend`]: the same model as [`super::FaceXFormer`], as an
//! explicit sequence of device ops (GEMMs with fused epilogues, fused window attention, the
//! index-remapping kernels), with its weights uploaded once in f32 or bf16.
//!
//! It is written once over `tensor::backend::Backend`, so the very graph that runs on CUDA runs
//! on the reference backend (the tensor crate's CPU ops) in every `cargo test` and is checked
//! against the official outputs there; each kernel is checked against the reference separately.
//!
//! What differs from the autograd model, for speed:
//! - window partition and the cyclic shift are one gather kernel each way, and the shift mask
//!   and relative-position bias are added inside the attention kernel;
//! - the fusion module's four projections and its 1x1 fuse are composed into one [D, C_i]
//!   matrix per stage at load time (`W_i P_i`, both linear), so each stage is projected at its own
//!   resolution and the four maps are resized and summed by one kernel: the 4D-channel
//!   concatenation and its 56x56 GEMM never exist.

mod decoder;
mod encoder;

use super::schema::{LinearSpec, NormSpec};
use super::{FaceXFormer, FacexConfig, IMAGE_SIZE, NUM_TOKENS};
use crate::checkpoint::StateDict;
use decoder::{DevDecoder, DevHeads};
use encoder::DevEncoder;
use tensor::backend::{Backend, DevTensor};
use tensor::ops::Activation;
use tensor::{DType, Error, Result, Tensor};

type T<B> = DevTensor<B>;

/// nn.Linear on the device: weight [out, in] in the model dtype, bias f32.
pub(crate) struct DevLinear<B: Backend> {
    w: T<B>,
    b: Option<T<B>>,
}

impl<B: Backend> DevLinear<B> {
    fn forward(&self, be: &B, x: &T<B>, act: Activation) -> Result<T<B>> {
        be.linear(x, &self.w, self.b.as_ref(), act)
    }
    /// `residual + act(x wᵀ + b)` with the add in the GEMM's output pass.
    fn forward_add(&self, be: &B, x: &T<B>, act: Activation, residual: &T<B>) -> Result<T<B>> {
        be.linear_add(x, &self.w, self.b.as_ref(), act, residual)
    }
}

/// LayerNorm weight and bias (model dtype) and eps.
pub(crate) struct DevNorm<B: Backend> {
    w: T<B>,
    b: T<B>,
    eps: f32,
}

impl<B: Backend> DevNorm<B> {
    fn forward(&self, be: &B, x: &T<B>) -> Result<T<B>> {
        be.layer_norm(x, &self.w, &self.b, self.eps)
    }
    fn forward2d(&self, be: &B, x: &T<B>) -> Result<T<B>> {
        be.layer_norm2d(x, &self.w, &self.b, self.eps)
    }
}

/// Uploads weights by their state-dict key.
pub(crate) struct Loader<'a, B: Backend> {
    sd: &'a StateDict,
    be: &'a B,
    dtype: DType,
}

impl<B: Backend> Loader<'_, B> {
    fn host(&self, key: &str) -> Result<&Tensor> {
        self.sd
            .get(key)
            .ok_or_else(|| Error::InvalidArgument { op: "DeviceModel::new", msg: format!("no weight `{key}`") })
    }
    /// In the model dtype.
    fn weight(&self, key: &str) -> Result<T<B>> {
        self.be.upload(self.host(key)?, self.dtype)
    }
    /// Any host tensor, in the model dtype.
    fn tensor(&self, t: &Tensor) -> Result<T<B>> {
        self.be.upload(t, self.dtype)
    }
    fn f32(&self, t: &Tensor) -> Result<T<B>> {
        self.be.upload(t, DType::F32)
    }
    fn linear(&self, spec: &LinearSpec) -> Result<DevLinear<B>> {
        let b = if spec.bias { Some(self.f32(self.host(&spec.bias_key())?)?) } else { None };
        Ok(DevLinear { w: self.weight(&spec.weight_key())?, b })
    }
    fn norm(&self, spec: &NormSpec) -> Result<DevNorm<B>> {
        let (w, b) = (self.weight(&spec.weight_key())?, self.weight(&spec.bias_key())?);
        Ok(DevNorm { w, b, eps: spec.eps as f32 })
    }
}

/// Host copies of every output, under the fixture names (`out.*`, and `inter.*` when asked).
pub struct DeviceOutputs {
    pub tensors: Vec<(&'static str, Tensor)>,
}

impl DeviceOutputs {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }
}

/// The model's weights on a device, ready for inference.
pub struct DeviceModel<B: Backend> {
    be: B,
    dtype: DType,
    config: FacexConfig,
    encoder: DevEncoder<B>,
    decoder: DevDecoder<B>,
    heads: DevHeads<B>,
    /// The task and mask tokens [T, D] (host: broadcast over the batch at each call).
    tokens: Tensor,
}

impl<B: Backend> DeviceModel<B> {
    /// Uploads `model`'s weights to `backend` as `dtype` (F32 or BF16; biases and attention
    /// biases stay f32).
    pub fn new(backend: B, model: &FaceXFormer, dtype: DType) -> Result<Self> {
        tensor::backend::expect_device_dtype("DeviceModel::new", dtype)?;
        let sd = model.state_dict();
        let (config, schema) = (model.config().clone(), model.schema());
        let ld = Loader { sd: &sd, be: &backend, dtype };
        let encoder = DevEncoder::new(&ld, schema)?;
        let decoder = DevDecoder::new(&ld, schema)?;
        let heads = DevHeads::new(&ld, &schema.heads)?;
        let parts: Vec<Tensor> = schema.tokens.iter().map(|t| ld.host(&t.key).cloned()).collect::<Result<_>>()?;
        let tokens = Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)?.to_dtype(DType::F32);
        Ok(DeviceModel { be: backend, dtype, config, encoder, decoder, heads, tokens })
    }

    pub fn backend(&self) -> &B {
        &self.be
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn config(&self) -> &FacexConfig {
        &self.config
    }

    /// x: [N, 3, 224, 224] -> the eight heads (and the intermediates when `intermediates`), copied
    /// back as f32 host tensors.
    pub fn forward(&self, x: &Tensor, intermediates: bool) -> Result<DeviceOutputs> {
        let s = x.shape();
        if s.len() != 4 || s[0] == 0 || s[1] != 3 || s[2] != IMAGE_SIZE || s[3] != IMAGE_SIZE {
            return Err(Error::BadShape {
                op: "DeviceModel::forward",
                shape: s.to_vec(),
                expected: format!("[N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}] with N >= 1"),
            });
        }
        let be = &self.be;
        let run = self.run(&be.upload(x, self.dtype)?)?;
        let mut out = Vec::new();
        for (name, t) in &run.heads {
            out.push((*name, be.download(t)?));
        }
        if intermediates {
            let (b, d) = (s[0], self.config.decoder.dim);
            let side = IMAGE_SIZE / self.config.backbone.patch_size;
            let nchw = |t: &T<B>| -> Result<Tensor> { Ok(be.download(t)?.permute(&[0, 3, 1, 2])?.contiguous()) };
            for (name, t) in
                ["inter.stage1", "inter.stage2", "inter.stage3", "inter.stage4"].into_iter().zip(&run.stages)
            {
                out.push((name, nchw(t)?));
            }
            out.push(("inter.fused", nchw(&run.image.reshape(&[b, side, side, d])?)?));
            out.push(("inter.decoder_tokens", be.download(&run.tokens)?));
            out.push(("inter.decoder_image", be.download(&run.keys)?));
        }
        let tensors = out.into_iter().map(|(n, t)| (n, t.to_dtype(DType::F32))).collect();
        Ok(DeviceOutputs { tensors })
    }

    /// The whole pass on an uploaded batch [N, 3, 224, 224], leaving everything on the device
    /// (the benchmark times this: no copies back).
    pub fn run(&self, x: &T<B>) -> Result<DeviceRun<B>> {
        let (be, d) = (&self.be, self.config.decoder.dim);
        let b = x.shape()[0];
        // Upload the tokens before queueing any kernel: an upload waits for the queued work, so
        // doing it between encoder and decoder would stall the host until the encoder finished.
        let tokens = self.tokens.unsqueeze(0)?.broadcast_to(&[b, NUM_TOKENS, d])?;
        let tokens = be.upload(&tokens, self.dtype)?;
        let stages = self.encoder.forward(be, x)?;
        let image = self.encoder.fuse(be, &stages)?; // [B, HW, D]
        let (hs, keys) = self.decoder.forward(be, &tokens, &image)?;
        let heads = self.heads.forward(be, &hs, &keys)?;
        Ok(DeviceRun { heads, stages, image, tokens: hs, keys })
    }
}

/// Everything one pass leaves on the device.
pub struct DeviceRun<B: Backend> {
    /// The eight heads under their fixture names (`out.landmarks`, ...).
    pub heads: Vec<(&'static str, T<B>)>,
    /// The four stage outputs, NHWC.
    pub stages: Vec<T<B>>,
    /// The fused map as image tokens [B, HW, D].
    pub image: T<B>,
    /// The decoder's output tokens [B, 18, D] and image tokens [B, HW, D].
    pub tokens: T<B>,
    pub keys: T<B>,
}
