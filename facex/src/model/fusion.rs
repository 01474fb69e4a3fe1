//! Multi-scale fusion ("MLP-Fusion") and the random-Fourier positional encoding.

use super::layers::{conv_params, Linear};
use super::params::{Builder, Init};
use super::schema::{FusionSpec, TensorSpec};
use autograd::Var;
use tensor::{Result, Tensor};

/// Per-stage Linear(C_i, D), bilinear resize to stage 1's size, concatenation in reverse stage
/// order and a 1×1 conv without bias (computed as composed per-stage projections; see `forward`).
pub(crate) struct Fusion {
    proj: Vec<Linear>,
    /// linear_fuse, [D, n·D, 1, 1].
    fuse: Var,
    dim: usize,
}

impl Fusion {
    pub fn new(b: &mut Builder, spec: &FusionSpec) -> Fusion {
        let proj = spec.proj.iter().map(|l| Linear::new(b, l)).collect();
        let (fuse, _) = conv_params(b, &spec.fuse);
        Fusion { proj, fuse, dim: spec.dim }
    }

    /// Stage outputs (NHWC) -> the fused map as image tokens [B, H1·W1, D] (row-major pixels),
    /// which is also the NHWC layout of the official (B, D, H1, W1) output.
    ///
    /// The official module projects each stage, resizes it, concatenates the four maps and runs
    /// the 1×1 fuse over all 4D channels at stage 1's size. The fuse, the resize and the
    /// projection are all linear, so `fuse · cat_i(up(P_i x_i + b_i)) = Σ_i up((W_i P_i) x_i +
    /// W_i b_i)`, with W_i the fuse's D columns of stage i: each stage is projected once, by the
    /// composed weight, at its own resolution, and the maps are summed. The concatenation and the
    /// 56x56 GEMM over 4D channels (13 GFLOP at batch 8 for Swin-B) never exist; gradients reach
    /// the fuse and the projections through the composition. (The device graph does the same.)
    pub fn forward(&self, stages: &[Var]) -> Result<Var> {
        let s1 = stages[0].shape();
        let (b, h1, w1) = (s1[0], s1[1], s1[2]);
        let (d, n) = (self.dim, stages.len());
        let fuse = self.fuse.reshape(&[d, d * n])?;
        let mut sum: Option<Var> = None;
        for (i, (x, proj)) in stages.iter().zip(&self.proj).enumerate().rev() {
            // The maps are concatenated in reverse stage order: stage i is block n - 1 - i.
            let w_i = fuse.narrow(1, (n - 1 - i) * d, d)?;
            let weight = w_i.matmul(&proj.weight)?;
            let bias = match &proj.bias {
                Some(bias) => Some(w_i.matmul(&bias.reshape(&[d, 1])?)?.reshape(&[d])?),
                None => None,
            };
            let s = x.shape();
            let (h, w, c) = (s[1], s[2], s[3]);
            let y = x.reshape(&[b, h * w, c])?.linear(&weight, bias.as_ref())?.reshape(&[b, h, w, d])?;
            let y = if (h, w) == (h1, w1) {
                y // bilinear to the same size is the identity
            } else {
                y.permute(&[0, 3, 1, 2])?.interpolate_bilinear((h1, w1))?.permute(&[0, 2, 3, 1])?
            };
            sum = Some(match sum {
                None => y,
                Some(acc) => acc.add(&y)?,
            });
        }
        sum.expect("the model has stages").reshape(&[b, h1 * w1, d])
    }
}

/// SAM's `PositionEmbeddingRandom`: for pixel (i, j) of an h×w grid, coordinates
/// x' = 2(j+0.5)/w - 1, y' = 2(i+0.5)/h - 1, v = 2π [x', y'] G, pe = [sin v, cos v].
/// Returns [2F, h, w] (channel-first). Computed in f64 and rounded once (the reference is f64;
/// PyTorch's float32 lands within ~4e-7 of it).
pub fn positional_encoding(gaussian: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let g = gaussian.to_f64_vec()?;
    let f = gaussian.shape()[1];
    let mut pe = vec![0f64; 2 * f * h * w];
    let two_pi = 2.0 * std::f64::consts::PI;
    for i in 0..h {
        let y = 2.0 * (i as f64 + 0.5) / h as f64 - 1.0;
        for j in 0..w {
            let x = 2.0 * (j as f64 + 0.5) / w as f64 - 1.0;
            for k in 0..f {
                let v = two_pi * (x * g[k] + y * g[f + k]);
                pe[(k * h + i) * w + j] = v.sin();
                pe[((f + k) * h + i) * w + j] = v.cos();
            }
        }
    }
    Ok(Tensor::from_f64_vec(&pe, &[2 * f, h, w], tensor::DType::F32))
}

/// The Gaussian matrix G [2, D/2]: a buffer, drawn N(0,1) at random initialisation.
pub(crate) fn gaussian_matrix(b: &mut Builder, spec: &TensorSpec) -> Tensor {
    b.random_buffer(spec.key.clone(), &spec.shape, Init::Normal)
}
