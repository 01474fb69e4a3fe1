//! Where the model runs: the autograd model on the CPU, or the device graph
//! ([`DeviceModel`]) on CUDA (or on the reference backend, which runs that graph with the CPU
//! ops: slow, for checking the device path on a machine without a GPU).

use crate::model::{DeviceModel, FaceXFormer};
use autograd::{no_grad, Var};
use tensor::backend::reference::Reference;
use tensor::cpu::gemm::{matmul_precision, set_matmul_precision, Isa, MatmulPrecision};
use tensor::{DType, Result, Tensor};

/// `--device` values.
pub const DEVICES: &str = "cpu, cuda, cuda:N, reference";

pub enum Engine {
    /// The autograd model on the CPU: f32, or with `--dtype bf16` f32 tensors whose products
    /// (linear layers, attention, convolutions) round their operands to bf16 and accumulate in
    /// f32, as PyTorch's CPU autocast does (the process-wide `cpu::gemm` precision).
    Cpu(FaceXFormer),
    /// The device graph on the tensor crate's CPU ops.
    Reference(DeviceModel<Reference>),
    /// The device graph on an NVIDIA GPU with our kernels.
    #[cfg(feature = "cuda")]
    Cuda(DeviceModel<tensor::backend::cuda::Cuda>),
}

/// Parses `--dtype`: f32 or bf16.
pub fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(format!("dtype `{s}`: expected f32 or bf16")),
    }
}

/// The CPU model's precision in words: f32, bf16 products (on AMX tiles, AVX512-BF16, or the
/// f32 FMA on Intel cores without AMX), or bf16 asked for on a CPU without AVX512-BF16 (the f32
/// kernels then run, unrounded).
pub fn cpu_precision() -> String {
    match (matmul_precision(), Isa::for_precision(matmul_precision())) {
        (MatmulPrecision::F32, _) => "cpu (f32)".into(),
        (MatmulPrecision::Bf16, Isa::Amx) => "cpu (bf16 products, f32 accumulation, AMX)".into(),
        (MatmulPrecision::Bf16, Isa::Avx512Bf16) => "cpu (bf16 products, f32 accumulation, AVX512-BF16)".into(),
        (MatmulPrecision::Bf16, Isa::Bf16OnFma) => {
            "cpu (bf16 products, f32 accumulation, on the f32 FMA: this CPU's vdpbf16ps is slower)".into()
        }
        (MatmulPrecision::Bf16, isa) => format!("cpu (bf16 asked for; this CPU lacks AVX512-BF16: f32 on {isa:?})"),
    }
}

impl Engine {
    /// Puts `model` on `device` (see [`DEVICES`]) in `dtype`. On the CPU, bf16 sets the
    /// process-wide product precision (see [`Engine::Cpu`]); f32 resets it.
    pub fn new(model: FaceXFormer, device: &str, dtype: DType) -> std::result::Result<Engine, String> {
        let device_err = |e: tensor::Error| format!("device {device}: {e}");
        match device {
            "cpu" => {
                let precision = match dtype {
                    DType::BF16 => MatmulPrecision::Bf16,
                    _ => MatmulPrecision::F32,
                };
                set_matmul_precision(precision);
                Ok(Engine::Cpu(model))
            }
            "reference" => Ok(Engine::Reference(DeviceModel::new(Reference, &model, dtype).map_err(device_err)?)),
            d if d == "cuda" || d.starts_with("cuda:") => Self::cuda(model, d, dtype),
            other => Err(format!("unknown device `{other}`: expected one of {DEVICES}")),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(model: FaceXFormer, device: &str, dtype: DType) -> std::result::Result<Engine, String> {
        let ordinal = match device.strip_prefix("cuda:") {
            Some(n) => n.parse::<usize>().map_err(|_| format!("device `{device}`: expected cuda:N"))?,
            None => 0,
        };
        let gpu = tensor::backend::cuda::Cuda::new(ordinal).map_err(|e| format!("device {device}: {e}"))?;
        let dm = DeviceModel::new(gpu, &model, dtype).map_err(|e| format!("device {device}: {e}"))?;
        Ok(Engine::Cuda(dm))
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(_: FaceXFormer, device: &str, _: DType) -> std::result::Result<Engine, String> {
        Err(format!("device {device}: this facex was built without the `cuda` feature"))
    }

    /// What runs the model, for messages.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu(_) => cpu_precision(),
            Engine::Reference(m) => format!("reference ({:?})", m.dtype()),
            #[cfg(feature = "cuda")]
            Engine::Cuda(m) => format!("{} ({:?})", tensor::backend::Backend::name(m.backend()), m.dtype()),
        }
    }

    /// x [N, 3, 224, 224] -> the eight heads as f32 host tensors, named `out.landmarks`, ...
    pub fn forward(&self, x: &Tensor) -> Result<Vec<(&'static str, Tensor)>> {
        let heads = |t: Vec<(&'static str, Tensor)>| t.into_iter().filter(|(n, _)| n.starts_with("out.")).collect();
        match self {
            Engine::Cpu(m) => {
                let out = no_grad(|| m.forward(&Var::constant(x.clone())))?;
                Ok(out.heads().into_iter().map(|(n, v)| (n, v.value().contiguous())).collect())
            }
            Engine::Reference(m) => Ok(heads(m.forward(x, false)?.tensors)),
            #[cfg(feature = "cuda")]
            Engine::Cuda(m) => Ok(heads(m.forward(x, false)?.tensors)),
        }
    }
}
