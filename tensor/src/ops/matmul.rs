//! Batched matmul with broadcast batch dims, and linear layers with fused epilogues.
//!
//! Both go straight to `cpu::gemm`: operand views (transposes, narrows, broadcast batch dims)
//! are passed as strides, never copied. f16/bf16 operands are widened to f32, multiplied and
//! rounded back.
use crate::cpu::gemm::{matmul_precision, sgemm_new, sgemm_raw, GemmOpts, Isa, PackedF32};
use crate::layout::broadcast_shape;
use crate::ops::Activation;
use crate::profile;
use crate::{CpuStorage, DType, Error, Layout, Result, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Products smaller than this (multiply-adds) run one per rayon task over the batch, each
/// single-threaded; larger ones run one after the other, each split over the threads. This
/// keeps one level of parallelism (no nested splitting).
const SMALL_PRODUCT: usize = 1 << 19;
/// ...unless the batch alone gives every thread this many products: then each runs whole on one
/// thread. Splitting products as thin as the decoder's (18x3136x16, 64 of them at batch 8) over
/// threads cost more than it gave: the decoder took 191 ms split, 166 ms whole (2-core Xeon).
const BATCH_PER_THREAD: usize = 4;

impl Tensor {
    /// [..., m, k] @ [..., k, n] -> [..., m, n]; batch dims broadcast; transposed views need no copy.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Gemm, profile::matmul_flops(self.shape(), rhs.shape()), 0.0);
        let mismatch = || Error::ShapeMismatch { op: "matmul", lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() };
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 || self.shape()[ra - 1] != rhs.shape()[rb - 2] {
            return Err(mismatch());
        }
        let dtype = float_dtype("matmul", self, rhs)?;
        let batch =
            broadcast_shape("matmul", &self.shape()[..ra - 2], &rhs.shape()[..rb - 2]).map_err(|_| mismatch())?;
        let (m, k, n) = (self.shape()[ra - 2], self.shape()[ra - 1], rhs.shape()[rb - 1]);
        if dtype != DType::F32 {
            return Ok(self.to_dtype(DType::F32).matmul(&rhs.to_dtype(DType::F32))?.to_dtype(dtype));
        }
        let full = |d: &[usize]| batch.iter().chain(d).copied().collect::<Vec<_>>();
        let a = self.broadcast_to(&full(&[m, k]))?;
        let b = rhs.broadcast_to(&full(&[k, n]))?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let (av, bv) = (f32_storage(&a), f32_storage(&b));
        let (al, bl) = (a.layout(), b.layout());
        let r = al.rank();
        let (a_rs, a_cs, b_rs, b_cs) = (al.strides[r - 2], al.strides[r - 1], bl.strides[r - 2], bl.strides[r - 1]);
        let nbatch: usize = batch.iter().product();

        // One product (no batch, or one shared right operand and left rows that merge into one
        // matrix): straight into a new, unfilled output.
        let merged = if nbatch == 1 {
            Some((al.offset, a_rs, a_cs, bl.offset))
        } else if bl.strides[..r - 2].iter().all(|&s| s == 0) {
            al.reshape(&[nbatch * m, k]).map(|rows| (rows.offset, rows.strides[0], rows.strides[1], bl.offset))
        } else {
            None
        };
        if let Some((a_off, rs, cs, b_off)) = merged {
            #[rustfmt::skip]
            let out = sgemm_new(nbatch * m, n, k, &av[a_off..], rs, cs, &bv[b_off..], b_rs, b_cs, &GemmOpts::default());
            return Tensor::from_vec(out, &out_shape);
        }
        let len: usize = out_shape.iter().product();
        if k == 0 {
            return Tensor::from_vec(vec![0.0f32; len], &out_shape);
        }
        // Not zero-filled: with k > 0 every product writes all of its m x n values (as in
        // `sgemm_new`); a 4096 x 49 x 49 output is 39 MB, whose zeroing cost a third of the time
        // of its products.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let offsets = batch_offsets(al, bl, &batch);
        let one = |(i, c): (usize, &mut [MaybeUninit<f32>]), parallel: bool| {
            let (ao, bo) = offsets[i];
            let opts = GemmOpts { parallel, ..GemmOpts::default() };
            // SAFETY: `c` is this product's m x n block of `out`'s allocation, written, not read
            // (no accumulation).
            #[rustfmt::skip]
            unsafe { sgemm_raw(m, n, k, &av[ao..], a_rs, a_cs, &bv[bo..], b_rs, b_cs, c.as_mut_ptr().cast(), c.len(), n, &opts) };
        };
        let chunk = (m * n).max(1);
        let blocks = &mut out.spare_capacity_mut()[..len];
        if nbatch > 1 && (m * n * k < SMALL_PRODUCT || nbatch >= BATCH_PER_THREAD * rayon::current_num_threads()) {
            blocks.par_chunks_mut(chunk).enumerate().for_each(|item| one(item, false));
        } else {
            blocks.chunks_mut(chunk).enumerate().for_each(|item| one(item, true));
        }
        // SAFETY: the products above wrote all `len` values.
        unsafe { out.set_len(len) };
        Tensor::from_vec(out, &out_shape)
    }

    /// `(self · rhs) ⊙ scale` for matrices `[m, k] · [k, n]` and `scale` `[m, n]`, the multiply done
    /// in the GEMM's output pass, so the product is never stored: a backward's `(g w) ⊙ f'(z)`.
    /// Its composite twin is `matmul` then `mul`: the same bits in f32. Other dtypes, and other
    /// ranks (broadcast batches), are computed as that composite.
    pub fn matmul_scaled(&self, rhs: &Tensor, scale: &Tensor) -> Result<Tensor> {
        const OP: &str = "matmul_scaled";
        let all_f32 = [self, rhs, scale].iter().all(|t| t.dtype() == DType::F32);
        if !all_f32 || self.rank() != 2 || rhs.rank() != 2 {
            return self.matmul(rhs)?.mul(scale);
        }
        let (m, k, n) = (self.shape()[0], self.shape()[1], rhs.shape()[1]);
        if rhs.shape()[0] != k {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() });
        }
        if scale.shape() != [m, n] {
            return Err(Error::ShapeMismatch { op: OP, lhs: vec![m, n], rhs: scale.shape().to_vec() });
        }
        let _prof = profile::op(profile::Kind::Gemm, 2.0 * (m * k * n) as f64, 0.0);
        let (al, bl) = (self.layout(), rhs.layout());
        let (av, bv) = (f32_storage(self), f32_storage(rhs));
        // The scale in C's row-major order (copied only if it is a view).
        let scale_vals = scale.f32_slice()?;
        let opts = GemmOpts { scale: Some(&scale_vals), ..GemmOpts::default() };
        #[rustfmt::skip]
        let out = sgemm_new(m, n, k, &av[al.offset..], al.strides[0], al.strides[1],
            &bv[bl.offset..], bl.strides[0], bl.strides[1], &opts);
        Tensor::from_vec(out, &[m, n])
    }

    /// x [..., in] @ weight[out, in]^T + bias[out].
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_act(weight, bias, Activation::None)
    }

    /// linear followed by an activation, fused into the GEMM's output pass.
    pub fn linear_act(&self, weight: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        self.linear_act_packed(weight, bias, act, None)
    }

    /// [`Tensor::linear_act`] with the weight also given packed for the bf16 kernel
    /// ([`PackedWeight::new`]); the packed copy is used when that kernel runs.
    pub fn linear_act_packed(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        packed: Option<&PackedWeight>,
    ) -> Result<Tensor> {
        self.linear_impl("linear", weight, bias, act, packed, None, None)
    }

    /// The backward of [`Tensor::linear_act`] at the activation: `grad ⊙ act'(z)` with
    /// z = self · weightᵀ + bias recomputed by the GEMM and turned into the result tile by tile
    /// while in cache, never stored. Its composite twin is `linear` then `gelu_backward` (or the
    /// ReLU mask): the same bits in f32. Other dtypes are computed in f32 and rounded once.
    pub fn linear_act_grad(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        grad: &Tensor,
    ) -> Result<Tensor> {
        self.linear_impl("linear_act_grad", weight, bias, act, None, Some(grad), None)
    }

    /// `residual + (self · weightᵀ + bias)`: a linear layer and the residual connection after it,
    /// the add done in the GEMM's output pass (no separate pass, and the product is never stored
    /// on its own). Its composite twin is `linear` then `add`: the same bits in f32; other dtypes
    /// are computed as that composite.
    pub fn linear_add(&self, weight: &Tensor, bias: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
        self.linear_add_packed(weight, bias, residual, None)
    }

    /// [`Tensor::linear_add`] with the weight also given packed ([`PackedWeight::new`]), as
    /// [`Tensor::linear_act_packed`] takes it: a model's inference forward.
    pub fn linear_add_packed(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: &Tensor,
        packed: Option<&PackedWeight>,
    ) -> Result<Tensor> {
        if [self, weight, residual].iter().any(|t| t.dtype() != DType::F32)
            || bias.is_some_and(|b| b.dtype() != DType::F32)
        {
            return self.linear_act_packed(weight, bias, Activation::None, packed)?.add(residual);
        }
        self.linear_impl("linear_add", weight, bias, Activation::None, packed, None, Some(residual))
    }

    /// Every linear form: the output pass takes the bias, the activation (or its backward with
    /// `act_grad`) and the residual.
    #[allow(clippy::too_many_arguments)]
    fn linear_impl(
        &self,
        op: &'static str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        act: Activation,
        packed: Option<&PackedWeight>,
        act_grad: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let _prof = profile::op(
            profile::Kind::Gemm,
            2.0 * self.elem_count() as f64 * weight.shape().first().copied().unwrap_or(0) as f64,
            0.0,
        );
        let mismatch =
            |rhs: &Tensor| Error::ShapeMismatch { op, lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec() };
        if self.rank() < 1 || weight.rank() != 2 || self.shape()[self.rank() - 1] != weight.shape()[1] {
            return Err(mismatch(weight));
        }
        let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
        if let Some(bias) = bias {
            if bias.shape() != [out_f] {
                return Err(mismatch(bias));
            }
            float_dtype(op, self, bias)?;
        }
        let dtype = float_dtype(op, self, weight)?;
        let lead = &self.shape()[..self.rank() - 1];
        let mut out_shape = lead.to_vec();
        out_shape.push(out_f);
        for g in [act_grad, residual].into_iter().flatten() {
            if g.shape() != out_shape.as_slice() {
                return Err(Error::ShapeMismatch { op, lhs: out_shape, rhs: g.shape().to_vec() });
            }
            float_dtype(op, self, g)?;
        }
        if dtype != DType::F32 {
            let f32s = |t: &Tensor| t.to_dtype(DType::F32);
            let (x32, w32, b32, g32) = (f32s(self), f32s(weight), bias.map(f32s), act_grad.map(f32s));
            let r32 = residual.map(f32s);
            return Ok(x32.linear_impl(op, &w32, b32.as_ref(), act, None, g32.as_ref(), r32.as_ref())?.to_dtype(dtype));
        }
        let rows: usize = lead.iter().product();
        let x = self.reshape(&[rows, in_f])?;
        let (xl, wl) = (x.layout(), weight.layout());
        let (xv, wv) = (f32_storage(&x), f32_storage(weight));
        let bias_vals = bias.map(|b| b.f32_slice()).transpose()?;
        // The upstream gradient in the output's row-major order (copied only if it is a view).
        let grad_vals = act_grad.map(|g| g.f32_slice()).transpose()?;
        let residual_vals = residual.map(|r| r.f32_slice()).transpose()?;
        let opts = PackedWeight::attach(
            packed,
            GemmOpts {
                bias: bias_vals.as_deref(),
                act,
                act_grad: grad_vals.as_deref(),
                residual: residual_vals.as_deref(),
                ..GemmOpts::default()
            },
        );
        // weight^T is weight with its strides swapped.
        #[rustfmt::skip]
        let out = sgemm_new(rows, out_f, in_f, &xv[xl.offset..], xl.strides[0], xl.strides[1],
            &wv[wl.offset..], wl.strides[1], wl.strides[0], &opts);
        Tensor::from_vec(out, &out_shape)
    }
}

/// A linear layer's weight `[out, in]` packed once as the right operand (`Wᵀ`) of the kernel the
/// matmul precision picks on this CPU: bf16 pairs for the bf16 kernels, f32 panels of the
/// kernel's width otherwise (of the weight rounded to bf16 for [`Isa::Bf16OnFma`]). A product
/// on another kernel (the precision changed since) packs as always.
#[derive(Debug)]
pub struct PackedWeight {
    #[cfg(target_arch = "x86_64")]
    bf16: Option<crate::cpu::gemm::bf16::PackedB>,
    f32: Option<PackedF32>,
    isa: Isa,
}

impl PackedWeight {
    /// Packs `weight` (f32, `[out, in]`) for the kernel of the current matmul precision.
    pub fn new(weight: &Tensor) -> Result<PackedWeight> {
        if weight.rank() != 2 || weight.dtype() != DType::F32 {
            let expected = "an f32 [out, in] weight".to_string();
            return Err(Error::BadShape { op: "PackedWeight::new", shape: weight.shape().to_vec(), expected });
        }
        let (l, v) = (weight.layout(), f32_storage(weight));
        let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
        let (b, b_rs, b_cs) = (&v[l.offset..], l.strides[1], l.strides[0]);
        let isa = Isa::for_precision(matmul_precision());
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Bf16OnFma {
            let f32 = PackedF32::new_bf16_rounded(in_f, out_f, b, b_rs, b_cs);
            return Ok(PackedWeight { bf16: None, f32, isa });
        }
        #[cfg(target_arch = "x86_64")]
        if isa.is_bf16() {
            let bf16 = crate::cpu::gemm::bf16::PackedB::new(in_f, out_f, b, b_rs, b_cs);
            return Ok(PackedWeight { bf16, f32: None, isa });
        }
        let f32 = PackedF32::new(isa, in_f, out_f, b, b_rs, b_cs);
        #[cfg(target_arch = "x86_64")]
        return Ok(PackedWeight { bf16: None, f32, isa });
        #[cfg(not(target_arch = "x86_64"))]
        Ok(PackedWeight { f32, isa })
    }

    /// The kernel it was packed for (the one the matmul precision picked then).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `opts` with the weight's packed panels for whichever kernel runs (none without a packed
    /// weight): bf16 pairs for the bf16 kernels, f32 panels for the others.
    pub(crate) fn attach<'a>(packed: Option<&'a PackedWeight>, mut opts: GemmOpts<'a>) -> GemmOpts<'a> {
        #[cfg(target_arch = "x86_64")]
        {
            opts.packed_b = packed.and_then(|p| p.bf16.as_ref());
        }
        opts.packed_f32 = packed.and_then(|p| p.f32.as_ref());
        opts
    }
}

/// The common float dtype of two operands, or the error naming the op.
fn float_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<DType> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    a.expect_float(op)?;
    Ok(a.dtype())
}

/// The whole f32 buffer behind a tensor (the caller checked the dtype).
fn f32_storage(t: &Tensor) -> &[f32] {
    match t.cpu_storage() {
        Ok(CpuStorage::F32(v)) => v,
        _ => unreachable!("f32 storage checked by the caller"),
    }
}

/// Storage offsets of each batch's A and B matrices, in row-major batch order.
fn batch_offsets(a: &Layout, b: &Layout, batch: &[usize]) -> Vec<(usize, usize)> {
    let nbatch: usize = batch.iter().product();
    let mut idx = vec![0usize; batch.len()];
    let mut out = Vec::with_capacity(nbatch);
    for _ in 0..nbatch {
        let dot = |l: &Layout| l.offset + idx.iter().zip(&l.strides).map(|(i, s)| i * s).sum::<usize>();
        out.push((dot(a), dot(b)));
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::tests_support::act_ref;
    use proptest::prelude::*;

    const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// A tensor's values as f32 bits (for bit-for-bit comparisons with a composite twin).
    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Allowed |got - want| for a result of magnitude |want| in `dtype` after a length-k sum.
    fn tol(dtype: DType, k: usize, want: f64) -> f64 {
        match dtype {
            DType::F16 => 2e-3 * want.abs() + 1e-3,
            DType::BF16 => 1e-2 * want.abs() + 1e-2,
            _ => 1e-5 * (k as f64 + 1.0) * (1.0 + want.abs()),
        }
    }

    /// f64 matmul of the broadcast operands, from their logical values.
    fn matmul_ref(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
        let (ra, rb) = (a.rank(), b.rank());
        let batch = broadcast_shape("ref", &a.shape()[..ra - 2], &b.shape()[..rb - 2]).unwrap();
        let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
        let full = |d: [usize; 2]| batch.iter().copied().chain(d).collect::<Vec<_>>();
        let av = a.broadcast_to(&full([m, k])).unwrap().to_f64_vec().unwrap();
        let bv = b.broadcast_to(&full([k, n])).unwrap().to_f64_vec().unwrap();
        let nb: usize = batch.iter().product();
        let mut out = vec![0.0; nb * m * n];
        for t in 0..nb {
            for i in 0..m {
                for j in 0..n {
                    out[(t * m + i) * n + j] =
                        (0..k).map(|p| av[(t * m + i) * k + p] * bv[(t * k + p) * n + j]).sum::<f64>();
                }
            }
        }
        (full([m, n]), out)
    }

    fn assert_close(got: &Tensor, shape: &[usize], want: &[f64], dtype: DType, k: usize) {
        assert_eq!(got.shape(), shape);
        assert_eq!(got.dtype(), dtype);
        for (i, (g, w)) in got.to_f64_vec().unwrap().iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol(dtype, k, *w), "{dtype:?} [{i}]: got {g}, want {w}");
        }
    }

    /// A [..batch, rows, cols] operand, optionally built as a transposed view of [.., cols, rows].
    fn operand(batch: &[usize], rows: usize, cols: usize, transposed: bool, dtype: DType, seed: u64) -> Tensor {
        let dims = |a, b| batch.iter().copied().chain([a, b]).collect::<Vec<_>>();
        if transposed {
            Tensor::rand_uniform(&dims(cols, rows), -1.0, 1.0, seed, dtype).t().unwrap()
        } else {
            Tensor::rand_uniform(&dims(rows, cols), -1.0, 1.0, seed, dtype)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn matmul_broadcast_and_views(
            m in 1usize..20, k in 1usize..20, n in 1usize..20,
            b0 in 1usize..4, b1 in 1usize..3, pattern in 0usize..5,
            ta: bool, tb: bool, dt in 0usize..3, seed: u64,
        ) {
            // Batch shapes that broadcast: equal, size-1 on either side, missing dims.
            let (ba, bb): (Vec<usize>, Vec<usize>) = match pattern {
                0 => (vec![b0, b1], vec![b0, b1]),
                1 => (vec![b0, 1], vec![1, b1]),
                2 => (vec![b0, b1], vec![]),
                3 => (vec![], vec![b1]),
                _ => (vec![1], vec![b0, b1]),
            };
            let dtype = DTYPES[dt];
            let a = operand(&ba, m, k, ta, dtype, seed);
            let b = operand(&bb, k, n, tb, dtype, seed ^ 1);
            let (shape, want) = matmul_ref(&a, &b);
            assert_close(&a.matmul(&b).unwrap(), &shape, &want, dtype, k);
        }

        #[test]
        fn linear_act_matches_reference(
            rows in 1usize..12, lead in 1usize..4, in_f in 1usize..40, out_f in 1usize..40,
            with_bias: bool, act_pick in 0usize..3, wt: bool, xt: bool, dt in 0usize..3, seed: u64,
        ) {
            let dtype = DTYPES[dt];
            let act = [Activation::None, Activation::Relu, Activation::Gelu][act_pick];
            // x as [lead, rows, in], optionally a permuted view of [rows, lead, in].
            let x = if xt {
                Tensor::rand_uniform(&[rows, lead, in_f], -1.0, 1.0, seed, dtype).permute(&[1, 0, 2]).unwrap()
            } else {
                Tensor::rand_uniform(&[lead, rows, in_f], -1.0, 1.0, seed, dtype)
            };
            let w = operand(&[], out_f, in_f, wt, dtype, seed ^ 2);
            let bias = with_bias.then(|| Tensor::rand_uniform(&[out_f], -1.0, 1.0, seed ^ 3, dtype));
            let got = x.linear_act(&w, bias.as_ref(), act).unwrap();

            let (xv, wv) = (x.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
            let bv = bias.as_ref().map(|b| b.to_f64_vec().unwrap());
            let mut want = vec![0.0; lead * rows * out_f];
            for r in 0..lead * rows {
                for o in 0..out_f {
                    let dot = (0..in_f).map(|p| xv[r * in_f + p] * wv[o * in_f + p]).sum::<f64>();
                    want[r * out_f + o] = act_ref(act, dot + bv.as_ref().map_or(0.0, |b| b[o]));
                }
            }
            assert_close(&got, &[lead, rows, out_f], &want, dtype, in_f);
        }
    }

    /// The scale in the GEMM's output pass against its composite twin (matmul, then mul): the
    /// same bits in f32 with a transposed operand and scale; batched and bf16 operands take the
    /// composite. Wrong shapes are errors naming the op.
    #[test]
    fn matmul_scaled_equals_matmul_then_mul() {
        for (m, k, n) in [(1, 1, 1), (7, 5, 9), (70, 33, 130), (300, 64, 40)] {
            let a = Tensor::randn(&[m, k], 1, DType::F32);
            let bt = Tensor::randn(&[n, k], 2, DType::F32);
            let s = Tensor::randn(&[n, m], 3, DType::F32);
            // A transposed right operand and a transposed (strided) scale.
            let (b, s) = (bt.t().unwrap(), s.t().unwrap());
            let got = a.matmul_scaled(&b, &s).unwrap();
            assert_eq!(got.shape(), &[m, n]);
            assert_eq!(bits(&got), bits(&a.matmul(&b).unwrap().mul(&s).unwrap()), "{m}x{k}x{n}");
        }
        // bf16 and batched operands take the composite.
        let a = Tensor::randn(&[2, 3, 4], 4, DType::F32);
        let b = Tensor::randn(&[4, 5], 5, DType::F32);
        let s = Tensor::randn(&[2, 3, 5], 6, DType::F32);
        assert_eq!(bits(&a.matmul_scaled(&b, &s).unwrap()), bits(&a.matmul(&b).unwrap().mul(&s).unwrap()));
        let h = |t: &Tensor| t.to_dtype(DType::BF16);
        let got = h(&a).matmul_scaled(&h(&b), &h(&s)).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        let a0 = Tensor::randn(&[3, 4], 7, DType::F32);
        let err = a0.matmul_scaled(&b, &Tensor::zeros(&[3, 4], DType::F32)).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "matmul_scaled", lhs: vec![3, 5], rhs: vec![3, 4] });
        let err = a0.matmul_scaled(&b.t().unwrap(), &s).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "matmul_scaled", lhs: vec![3, 4], rhs: vec![5, 4] });
    }

    /// The residual add in the GEMM's output pass against its composite twin (linear, then add):
    /// the same bits in f32, with and without bias, a strided residual, a batched [b, t, c]
    /// input, edge tiles and sizes large enough for threads; f16 takes the composite. Wrong
    /// shapes are errors naming the op.
    #[test]
    fn linear_add_equals_linear_then_add() {
        for (lead, in_f, out_f, seed) in
            [(vec![1], 1, 1, 1), (vec![2, 7], 5, 9, 2), (vec![3, 70], 33, 130, 3), (vec![400], 64, 96, 4)]
        {
            let rows: usize = lead.iter().product();
            let mut x_shape = lead.clone();
            x_shape.push(in_f);
            let mut y_shape = lead.clone();
            y_shape.push(out_f);
            let x = Tensor::randn(&x_shape, seed, DType::F32);
            let w = Tensor::randn(&[out_f, in_f], seed ^ 1, DType::F32);
            let b = Tensor::randn(&[out_f], seed ^ 2, DType::F32);
            // A strided residual: the transpose of a contiguous [out_f, rows], reshaped.
            let r = Tensor::randn(&[out_f, rows], seed ^ 3, DType::F32).t().unwrap().reshape(&y_shape).unwrap();
            for bias in [None, Some(&b)] {
                let got = x.linear_add(&w, bias, &r).unwrap();
                assert_eq!(got.shape(), y_shape.as_slice());
                let want = x.linear(&w, bias).unwrap().add(&r).unwrap();
                assert_eq!(bits(&got), bits(&want), "{lead:?} {in_f}->{out_f} bias {}", bias.is_some());
            }
        }
        let h = |t: &Tensor| t.to_dtype(DType::F16);
        let (x, w, r) = (
            Tensor::randn(&[3, 4], 5, DType::F32),
            Tensor::randn(&[6, 4], 6, DType::F32),
            Tensor::randn(&[3, 6], 7, DType::F32),
        );
        let got = h(&x).linear_add(&h(&w), None, &h(&r)).unwrap();
        assert_eq!(
            (got.dtype(), bits(&got)),
            (DType::F16, bits(&h(&x).linear(&h(&w), None).unwrap().add(&h(&r)).unwrap()))
        );
        let err = x.linear_add(&w, None, &Tensor::zeros(&[3, 5], DType::F32)).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "linear_add", lhs: vec![3, 6], rhs: vec![3, 5] });
    }

    /// A weight packed once gives `linear_act`'s bits, and `linear_add`'s those of linear then
    /// add (f32: the kernel's panels; the packed copy is used, checked through its isa), on
    /// views, batched inputs, edge tiles and depths past one block; a weight that is not an f32
    /// matrix is an error naming the op.
    #[test]
    fn linear_act_packed_equals_packing_per_call() {
        for (lead, in_f, out_f, seed) in
            [(vec![1], 1, 1, 1), (vec![2, 7], 5, 9, 2), (vec![3, 70], 300, 130, 3), (vec![400], 64, 96, 4)]
        {
            let mut x_shape = lead.clone();
            x_shape.push(in_f);
            let x = Tensor::randn(&x_shape, seed, DType::F32);
            // A transposed view as the weight: packing reads it through its strides.
            let w = Tensor::randn(&[in_f, out_f], seed ^ 1, DType::F32).t().unwrap();
            let b = Tensor::randn(&[out_f], seed ^ 2, DType::F32);
            let packed = PackedWeight::new(&w).unwrap();
            assert_eq!(packed.isa(), Isa::for_precision(matmul_precision()));
            assert!(packed.f32.as_ref().is_some_and(|p| p.dims() == (in_f, out_f)), "nothing packed");
            for act in [Activation::None, Activation::Gelu] {
                let got = x.linear_act_packed(&w, Some(&b), act, Some(&packed)).unwrap();
                let want = x.linear_act(&w, Some(&b), act).unwrap();
                assert_eq!(bits(&got), bits(&want), "{lead:?} {in_f}->{out_f} {act:?}");
            }
            // The residual form: its composite twin, linear then add.
            let mut y_shape = lead.clone();
            y_shape.push(out_f);
            let r = Tensor::randn(&y_shape, seed ^ 3, DType::F32);
            let got = x.linear_add_packed(&w, Some(&b), &r, Some(&packed)).unwrap();
            let want = x.linear(&w, Some(&b)).unwrap().add(&r).unwrap();
            assert_eq!(bits(&got), bits(&want), "{lead:?} {in_f}->{out_f} + residual");
        }
        let err = PackedWeight::new(&Tensor::zeros(&[2, 3, 4], DType::F32)).unwrap_err();
        assert!(matches!(err, Error::BadShape { op: "PackedWeight::new", .. }), "{err:?}");
    }

    /// The fused activation backward against its composite twin (z = linear, then the rule on
    /// the stored z): the same bits in f32, for GELU and ReLU, with views as x and as the
    /// gradient, shapes with edge tiles and shapes large enough for threads; in bf16 (computed
    /// in f32, rounded once) the bits of the f32 product of the rounded operands, rounded once.
    /// Wrong shapes are errors.
    #[test]
    fn linear_act_grad_equals_linear_then_the_backward_rule() {
        for (rows, in_f, out_f, seed) in [(1, 1, 1, 1), (13, 7, 33, 2), (70, 96, 130, 3), (400, 128, 512, 4)] {
            let x = Tensor::rand_uniform(&[in_f, rows], -2.0, 2.0, seed, DType::F32).t().unwrap();
            let w = Tensor::rand_uniform(&[out_f, in_f], -0.5, 0.5, seed ^ 1, DType::F32);
            let b = Tensor::rand_uniform(&[out_f], -1.0, 1.0, seed ^ 2, DType::F32);
            let g = Tensor::rand_uniform(&[out_f, rows], -1.0, 1.0, seed ^ 3, DType::F32).t().unwrap();
            let z = x.linear(&w, Some(&b)).unwrap();
            let gelu = x.linear_act_grad(&w, Some(&b), Activation::Gelu, &g).unwrap();
            assert_eq!(
                gelu.to_vec::<f32>().unwrap(),
                z.gelu_backward(&g.contiguous()).unwrap().to_vec::<f32>().unwrap()
            );
            let relu = x.linear_act_grad(&w, None, Activation::Relu, &g).unwrap();
            let z0 = x.linear(&w, None).unwrap();
            let mask0 = z0.gt(&Tensor::full(0.0, &[], DType::F32)).unwrap().to_dtype(DType::F32);
            assert_eq!(relu.to_vec::<f32>().unwrap(), g.mul(&mask0).unwrap().to_vec::<f32>().unwrap());
            let half = |t: &Tensor| t.to_dtype(DType::BF16);
            let got = half(&x).linear_act_grad(&half(&w), Some(&half(&b)), Activation::Gelu, &half(&g)).unwrap();
            assert_eq!(got.dtype(), DType::BF16);
            let want = half(&x)
                .to_dtype(DType::F32)
                .linear_act_grad(
                    &half(&w).to_dtype(DType::F32),
                    Some(&half(&b).to_dtype(DType::F32)),
                    Activation::Gelu,
                    &half(&g).to_dtype(DType::F32),
                )
                .unwrap()
                .to_dtype(DType::BF16);
            assert_eq!(got.to_vec::<half::bf16>().unwrap(), want.to_vec::<half::bf16>().unwrap());
        }
        let t = |s: &[usize]| Tensor::zeros(s, DType::F32);
        let err = t(&[2, 3]).linear_act_grad(&t(&[4, 3]), None, Activation::Gelu, &t(&[2, 5])).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "linear_act_grad", lhs: vec![2, 4], rhs: vec![2, 5] });
        let err = t(&[2, 3]).linear_act_grad(&t(&[4, 2]), None, Activation::Gelu, &t(&[2, 4])).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "linear_act_grad", lhs: vec![2, 3], rhs: vec![4, 2] });
    }

    /// Many small products (the parallel-over-batch path) and a shared right operand (folded
    /// into one product), including a left operand whose batch cannot be folded.
    #[test]
    fn batched_paths() {
        let cases: [(Tensor, Tensor); 3] = [
            (operand(&[300], 9, 7, false, DType::F32, 1), operand(&[300], 7, 5, true, DType::F32, 2)),
            (operand(&[3, 4], 6, 5, false, DType::F32, 3), operand(&[], 5, 7, false, DType::F32, 4)),
            (operand(&[4], 6, 5, true, DType::F32, 5), operand(&[1], 5, 7, false, DType::F32, 6)),
        ];
        for (a, b) in &cases {
            let (shape, want) = matmul_ref(a, b);
            assert_close(&a.matmul(b).unwrap(), &shape, &want, DType::F32, a.shape()[a.rank() - 1]);
        }
        // Large products one after another, each split over threads.
        let (a, b) = (operand(&[2], 130, 70, false, DType::F32, 7), operand(&[2], 70, 90, true, DType::F32, 8));
        let (shape, want) = matmul_ref(&a, &b);
        assert_close(&a.matmul(&b).unwrap(), &shape, &want, DType::F32, 70);
        // Large products, but a batch that gives every thread several: whole products on the
        // rayon pool (a batch of 64 covers machines of up to 16 threads).
        let (a, b) = (operand(&[64], 20, 100, false, DType::F32, 9), operand(&[64], 100, 300, true, DType::F32, 10));
        let (shape, want) = matmul_ref(&a, &b);
        assert_close(&a.matmul(&b).unwrap(), &shape, &want, DType::F32, 100);
    }

    #[test]
    fn shape_errors_name_matmul_and_both_shapes() {
        let t = |s: &[usize]| Tensor::zeros(s, DType::F32);
        for (a, b) in
            [(vec![2, 3], vec![4, 5]), (vec![3], vec![3, 2]), (vec![2, 3], vec![3]), (vec![2, 2, 3], vec![3, 3, 4])]
        {
            let err = t(&a).matmul(&t(&b)).unwrap_err();
            assert_eq!(err, Error::ShapeMismatch { op: "matmul", lhs: a, rhs: b });
        }
        let err = t(&[2, 3]).linear(&t(&[4, 5]), None).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "linear", lhs: vec![2, 3], rhs: vec![4, 5] });
        let err = t(&[2, 3]).linear(&t(&[4, 3]), Some(&t(&[5]))).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "linear", lhs: vec![2, 3], rhs: vec![5] });
        let half = Tensor::zeros(&[3, 2], DType::F16);
        assert!(matches!(t(&[2, 3]).matmul(&half), Err(Error::DTypeMismatch { op: "matmul", .. })));
        let ints = Tensor::zeros(&[2, 2], DType::I64);
        assert!(matches!(ints.matmul(&ints), Err(Error::UnsupportedDType { op: "matmul", .. })));
    }

    #[test]
    fn empty_and_zero_depth() {
        let a = Tensor::zeros(&[2, 0, 3], DType::F32);
        let b = Tensor::ones(&[3, 4], DType::F32);
        assert_eq!(a.matmul(&b).unwrap().shape(), &[2, 0, 4]);
        let a = Tensor::ones(&[2, 3, 0], DType::F32);
        let b = Tensor::ones(&[2, 0, 4], DType::F32);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.to_f64_vec().unwrap(), vec![0.0; 24]);
    }
}
