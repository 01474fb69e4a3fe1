//! The three MTCNN networks, layer for layer as facenet-pytorch defines them.

use super::{Error, Result};
pub use crate::checkpoint::StateDict;
use tensor::Tensor;

fn param(sd: &StateDict, net: &'static str, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = sd.get(name).ok_or_else(|| Error::Weights { net, msg: format!("missing tensor {name}") })?;
    if t.shape() != shape {
        return Err(Error::Weights { net, msg: format!("{name} has shape {:?}, expected {shape:?}", t.shape()) });
    }
    Ok(t.to_dtype(tensor::DType::F32).contiguous())
}

/// Conv2d (stride 1, no padding) followed by PReLU with one slope per channel.
struct ConvPrelu {
    weight: Tensor,
    bias: Tensor,
    slope: Tensor,
}

impl ConvPrelu {
    fn load(sd: &StateDict, net: &'static str, conv: &str, prelu: &str, shape: [usize; 4]) -> Result<Self> {
        Ok(ConvPrelu {
            weight: param(sd, net, &format!("{conv}.weight"), &shape)?,
            bias: param(sd, net, &format!("{conv}.bias"), &shape[..1])?,
            slope: param(sd, net, &format!("{prelu}.weight"), &shape[..1])?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.conv2d(&self.weight, Some(&self.bias), (1, 1), (0, 0))?.prelu(&self.slope)?)
    }
}

struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(sd: &StateDict, net: &'static str, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Dense {
            weight: param(sd, net, &format!("{name}.weight"), &[out, inp])?,
            bias: param(sd, net, &format!("{name}.bias"), &[out])?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.linear(&self.weight, Some(&self.bias))?)
    }
}

fn pool(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    Ok(x.max_pool2d((k, k), (s, s), (0, 0), true)?)
}

/// Flatten [N,C,H,W] in facenet's order: `permute(0, 3, 2, 1)` (W, H, C), a legacy of the
/// Caffe weights.
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)?;
    Ok(x.permute(&[0, 3, 2, 1])?.contiguous().reshape(&[n, x.elem_count() / n.max(1)])?)
}

/// Proposal network: fully convolutional, 12x12 receptive field, stride 2.
pub struct PNet {
    c1: ConvPrelu,
    c2: ConvPrelu,
    c3: ConvPrelu,
    prob: Dense2d,
    reg: Dense2d,
}

/// A 1x1 convolution head.
struct Dense2d {
    weight: Tensor,
    bias: Tensor,
}

impl PNet {
    pub fn load(sd: &StateDict) -> Result<Self> {
        const N: &str = "pnet";
        Ok(PNet {
            c1: ConvPrelu::load(sd, N, "conv1", "prelu1", [10, 3, 3, 3])?,
            c2: ConvPrelu::load(sd, N, "conv2", "prelu2", [16, 10, 3, 3])?,
            c3: ConvPrelu::load(sd, N, "conv3", "prelu3", [32, 16, 3, 3])?,
            prob: Dense2d {
                weight: param(sd, N, "conv4_1.weight", &[2, 32, 1, 1])?,
                bias: param(sd, N, "conv4_1.bias", &[2])?,
            },
            reg: Dense2d {
                weight: param(sd, N, "conv4_2.weight", &[4, 32, 1, 1])?,
                bias: param(sd, N, "conv4_2.bias", &[4])?,
            },
        })
    }

    /// x [N,3,H,W] (H, W >= 12) -> (reg [N,4,h,w], face probability [N,h,w]).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = pool(&self.c1.forward(x)?, 2, 2)?;
        let x = self.c3.forward(&self.c2.forward(&x)?)?;
        let logits = x.conv2d(&self.prob.weight, Some(&self.prob.bias), (1, 1), (0, 0))?;
        let prob = logits.softmax(1)?.select(1, 1)?;
        let reg = x.conv2d(&self.reg.weight, Some(&self.reg.bias), (1, 1), (0, 0))?;
        Ok((reg, prob))
    }
}

/// Refinement network on 24x24 crops.
pub struct RNet {
    c1: ConvPrelu,
    c2: ConvPrelu,
    c3: ConvPrelu,
    d4: Dense,
    p4: Tensor,
    prob: Dense,
    reg: Dense,
}

impl RNet {
    pub fn load(sd: &StateDict) -> Result<Self> {
        const N: &str = "rnet";
        Ok(RNet {
            c1: ConvPrelu::load(sd, N, "conv1", "prelu1", [28, 3, 3, 3])?,
            c2: ConvPrelu::load(sd, N, "conv2", "prelu2", [48, 28, 3, 3])?,
            c3: ConvPrelu::load(sd, N, "conv3", "prelu3", [64, 48, 2, 2])?,
            d4: Dense::load(sd, N, "dense4", 128, 576)?,
            p4: param(sd, N, "prelu4.weight", &[128])?,
            prob: Dense::load(sd, N, "dense5_1", 2, 128)?,
            reg: Dense::load(sd, N, "dense5_2", 4, 128)?,
        })
    }

    /// x [N,3,24,24] -> (reg [N,4], face probability [N]).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = pool(&self.c1.forward(x)?, 3, 2)?;
        let x = pool(&self.c2.forward(&x)?, 3, 2)?;
        let x = flatten_whc(&self.c3.forward(&x)?)?;
        let x = self.d4.forward(&x)?.prelu(&self.p4)?;
        let prob = self.prob.forward(&x)?.softmax(1)?.select(1, 1)?;
        Ok((self.reg.forward(&x)?, prob))
    }
}

/// Output network on 48x48 crops, with the five landmarks.
pub struct ONet {
    c1: ConvPrelu,
    c2: ConvPrelu,
    c3: ConvPrelu,
    c4: ConvPrelu,
    d5: Dense,
    p5: Tensor,
    prob: Dense,
    reg: Dense,
    points: Dense,
}

impl ONet {
    pub fn load(sd: &StateDict) -> Result<Self> {
        const N: &str = "onet";
        Ok(ONet {
            c1: ConvPrelu::load(sd, N, "conv1", "prelu1", [32, 3, 3, 3])?,
            c2: ConvPrelu::load(sd, N, "conv2", "prelu2", [64, 32, 3, 3])?,
            c3: ConvPrelu::load(sd, N, "conv3", "prelu3", [64, 64, 3, 3])?,
            c4: ConvPrelu::load(sd, N, "conv4", "prelu4", [128, 64, 2, 2])?,
            d5: Dense::load(sd, N, "dense5", 256, 1152)?,
            p5: param(sd, N, "prelu5.weight", &[256])?,
            prob: Dense::load(sd, N, "dense6_1", 2, 256)?,
            reg: Dense::load(sd, N, "dense6_2", 4, 256)?,
            points: Dense::load(sd, N, "dense6_3", 10, 256)?,
        })
    }

    /// x [N,3,48,48] -> (reg [N,4], points [N,10] (5 x then 5 y, relative), probability [N]).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = pool(&self.c1.forward(x)?, 3, 2)?;
        let x = pool(&self.c2.forward(&x)?, 3, 2)?;
        let x = pool(&self.c3.forward(&x)?, 2, 2)?;
        let x = flatten_whc(&self.c4.forward(&x)?)?;
        let x = self.d5.forward(&x)?.prelu(&self.p5)?;
        let prob = self.prob.forward(&x)?.softmax(1)?.select(1, 1)?;
        Ok((self.reg.forward(&x)?, self.points.forward(&x)?, prob))
    }
}
