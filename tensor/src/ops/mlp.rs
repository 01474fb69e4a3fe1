//! A transformer block's MLP and the residual after it in one pass over blocks of rows:
//! `residual + (gelu(x · w1ᵀ + b1) · w2ᵀ + b2)`, each block's hidden rows made and used while
//! they are in the core's cache.
//!
//! Why: the composite (`linear_act_packed` with GELU, then `linear_add_packed`) writes the whole
//! hidden activation out and reads it back. At Swin's stage 1 at batch 8 that is 25088 x 512
//! values (51 MB) each way; per block of rows it stays in L2. Each output value is the same
//! multiply-adds in the same order as in the composite (the GEMM sums over the depth the same way
//! whatever rows it is given), so the two give the same bits.

use crate::cpu::gemm::{matmul_precision, sgemm_raw, GemmOpts, Isa};
use crate::ops::matmul::PackedWeight;
use crate::ops::Activation;
use crate::profile;
use crate::{DType, Error, Result, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// Hidden values per block of rows: 512 KiB, half of a Zen 4 core's L2 (2 MiB on the Xeons).
const HIDDEN_BLOCK: usize = 1 << 17;
/// Blocks per thread below which the composite runs instead: its products split over the
/// threads evenly, and its hidden activation is then small enough to stay in cache anyway.
const MIN_BLOCKS_PER_THREAD: usize = 4;

/// One linear layer's operands: weight `[out, in]`, bias `[out]`, and the weight packed for the
/// GEMM kernel where the caller keeps one ([`PackedWeight::new`]).
#[derive(Clone, Copy)]
pub struct LinearRef<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub packed: Option<&'a PackedWeight>,
}

thread_local! {
    static HIDDEN: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Tensor {
    /// `residual + fc2(gelu(fc1(self)))` for `self` `[..., in]`, fc1 `[hidden, in]`, fc2
    /// `[out, hidden]`, residual `[..., out]`. Its composite twin is
    /// `self.linear_act_packed(fc1, Gelu)` then `.linear_add_packed(fc2, residual)`: the same
    /// bits in f32 (other dtypes run that composite).
    pub fn mlp_add(&self, fc1: LinearRef, fc2: LinearRef, residual: &Tensor) -> Result<Tensor> {
        let composite = || {
            self.linear_act_packed(fc1.weight, fc1.bias, Activation::Gelu, fc1.packed)?
                .linear_add_packed(fc2.weight, fc2.bias, residual, fc2.packed)
        };
        let op = "mlp_add";
        let (w1, w2) = (fc1.weight, fc2.weight);
        // Two shapes that disagree are named together; a weight or bias that fits nothing before
        // it is named with what it should be.
        let mismatch =
            |lhs: &[usize], rhs: &[usize]| Err(Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec() });
        let bad = |shape: &[usize], expected: String| Err(Error::BadShape { op, shape: shape.to_vec(), expected });
        if self.rank() < 1 || w1.rank() != 2 || self.shape()[self.rank() - 1] != w1.shape()[1] {
            return mismatch(self.shape(), w1.shape());
        }
        let (hidden, inp) = (w1.shape()[0], w1.shape()[1]);
        if w2.rank() != 2 || w2.shape()[1] != hidden {
            return bad(
                w2.shape(),
                format!("fc2 weight [out, {hidden}] (fc1 {:?} gives {hidden} hidden values)", w1.shape()),
            );
        }
        let out = w2.shape()[0];
        let lead = &self.shape()[..self.rank() - 1];
        let mut out_shape = lead.to_vec();
        out_shape.push(out);
        for (l, name, n) in [(&fc1, "fc1", hidden), (&fc2, "fc2", out)] {
            if let Some(b) = l.bias.filter(|b| b.shape() != [n]) {
                return bad(b.shape(), format!("{name} bias [{n}]"));
            }
        }
        if residual.shape() != out_shape.as_slice() {
            return mismatch(&out_shape, residual.shape());
        }
        let m: usize = lead.iter().product();
        let all_f32 =
            [self, w1, w2, residual].into_iter().chain(fc1.bias).chain(fc2.bias).all(|t| t.dtype() == DType::F32);
        let Some(rows) =
            block_rows(m, inp, hidden, out, rayon::current_num_threads()).filter(|_| all_f32 && inp > 0 && out > 0)
        else {
            return composite();
        };
        let _prof = profile::op(profile::Kind::Gemm, 2.0 * (m * hidden * (inp + out)) as f64, 0.0);
        // Row-major values (borrowed when contiguous, else one copy).
        let (x, r) = (self.f32_slice()?, residual.f32_slice()?);
        let (w1v, w2v) = (w1.f32_slice()?, w2.f32_slice()?);
        let (b1, b2) = (fc1.bias.map(|b| b.f32_slice()).transpose()?, fc2.bias.map(|b| b.f32_slice()).transpose()?);
        let mut y: Vec<f32> = Vec::with_capacity(m * out);
        y.spare_capacity_mut().par_chunks_mut(rows * out).enumerate().for_each(|(i, yb)| {
            let (r0, n) = (i * rows, yb.len() / out);
            let xb = &x[r0 * inp..(r0 + n) * inp];
            let rb = &r[r0 * out..(r0 + n) * out];
            HIDDEN.with(|h| {
                let mut h = h.borrow_mut();
                if h.len() < n * hidden {
                    h.resize(n * hidden, 0.0);
                }
                let hb = &mut h[..n * hidden];
                // On this thread: the blocks are the parallel loop.
                let o1 =
                    GemmOpts { bias: b1.as_deref(), act: Activation::Gelu, parallel: false, ..GemmOpts::default() };
                let o1 = PackedWeight::attach(fc1.packed, o1);
                let o2 = GemmOpts { bias: b2.as_deref(), residual: Some(rb), parallel: false, ..GemmOpts::default() };
                let o2 = PackedWeight::attach(fc2.packed, o2);
                // SAFETY: every operand is in bounds (shapes checked above); with k > 0 and no
                // accumulation each product writes all of its C, here `hb`, then this block's
                // rows of y (uninitialised until then, and read by nothing before).
                unsafe {
                    sgemm_raw(n, hidden, inp, xb, inp, 1, &w1v, 1, inp, hb.as_mut_ptr(), n * hidden, hidden, &o1);
                    let yp = yb.as_mut_ptr() as *mut f32;
                    sgemm_raw(n, out, hidden, hb, hidden, 1, &w2v, 1, hidden, yp, n * out, out, &o2);
                }
            })
        });
        // SAFETY: the blocks cover all m rows, and each wrote all of its values.
        unsafe { y.set_len(m * out) };
        Tensor::from_vec(y, &out_shape)
    }
}

/// Rows per block: as many as keep the hidden block within [`HIDDEN_BLOCK`], whole row panels of
/// the kernel, and a number of blocks that is a multiple of the threads (so that no thread is
/// left a block behind the others). None where the composite runs instead:
/// - fewer than [`MIN_BLOCKS_PER_THREAD`] blocks per thread;
/// - where the weights cost more than the hidden activation saves: every block reads both
///   weights again (hidden x (in + out) values), where the composite writes and reads the hidden
///   activation once (2 x rows x hidden per block), so blocks pay only while 2 x rows >= in + out.
///   Swin-B at batch 8, 2-core Xeon (model 207), interleaved: stage 1 (128 -> 512 -> 128, 252
///   rows a block) 201-210 -> 163-179 ms a pass; stage 4 (1024 -> 4096 -> 1024, 28 rows, 16 MB
///   weights read 14 times) 118-135 -> 149-151 ms; stages 2 and 3 within the noise.
pub fn block_rows(m: usize, inp: usize, hidden: usize, out: usize, threads: usize) -> Option<usize> {
    if m == 0 || hidden == 0 {
        return None;
    }
    let mr = Isa::for_precision(matmul_precision()).tile().0;
    let cap = ((HIDDEN_BLOCK / hidden) / mr).max(1) * mr;
    let blocks = m.div_ceil(cap).div_ceil(threads) * threads;
    let rows = m.div_ceil(blocks).div_ceil(mr) * mr;
    (m.div_ceil(rows) >= MIN_BLOCKS_PER_THREAD * threads && 2 * rows >= inp + out).then_some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Runs `f` on a local pool of two threads (the CI machine's count, whatever this one has).
    fn on_two_threads<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(f)
    }

    #[test]
    fn the_fused_mlp_is_its_composite_bit_for_bit() {
        // Widths off the kernel's tile (20 in, 36 out), a hidden wide enough that a block is a
        // few row panels, rows that leave a short last block; weights packed and not, biases
        // and not, a residual given as a transposed view (copied) and a leading batch dim.
        for (lead, inp, hidden, out, packed, biases) in [
            (vec![250], 20, 4096, 36, true, true),
            (vec![2, 125], 20, 4096, 36, false, true),
            (vec![500], 48, 2048, 16, true, false),
            (vec![4, 250], 33, 1024, 33, true, true),
        ] {
            let m: usize = lead.iter().product();
            let shape = |last: usize| lead.iter().copied().chain([last]).collect::<Vec<_>>();
            let x = Tensor::randn(&shape(inp), 1, DType::F32);
            let w1 = Tensor::randn(&[hidden, inp], 2, DType::F32).affine(0.2, 0.0).unwrap();
            let w2 = Tensor::randn(&[out, hidden], 3, DType::F32).affine(0.05, 0.0).unwrap();
            let (b1, b2) = (Tensor::randn(&[hidden], 4, DType::F32), Tensor::randn(&[out], 5, DType::F32));
            let mut residual_shape = shape(out);
            residual_shape.reverse();
            let residual = Tensor::randn(&residual_shape, 6, DType::F32)
                .permute(&(0..lead.len() + 1).rev().collect::<Vec<_>>())
                .unwrap();
            let (p1, p2) = (PackedWeight::new(&w1).unwrap(), PackedWeight::new(&w2).unwrap());
            let fc1 = LinearRef { weight: &w1, bias: biases.then_some(&b1), packed: packed.then_some(&p1) };
            let fc2 = LinearRef { weight: &w2, bias: biases.then_some(&b2), packed: packed.then_some(&p2) };
            let (fused, composite, rows) = on_two_threads(|| {
                let fused = x.mlp_add(fc1, fc2, &residual).unwrap();
                let h = x.linear_act_packed(&w1, fc1.bias, Activation::Gelu, fc1.packed).unwrap();
                let composite = h.linear_add_packed(&w2, fc2.bias, &residual, fc2.packed).unwrap();
                (fused, composite, block_rows(m, inp, hidden, out, rayon::current_num_threads()))
            });
            let rows = rows.unwrap_or_else(|| panic!("{lead:?} x {hidden}: the fused path must run"));
            assert!(!m.is_multiple_of(rows) && m / rows >= 2, "{lead:?}: {rows} rows a block, a short last one");
            assert_eq!(fused.shape(), composite.shape());
            assert_eq!(bits(&fused), bits(&composite), "{lead:?} {inp} -> {hidden} -> {out}");
        }
    }

    #[test]
    fn small_products_and_other_dtypes_run_the_composite() {
        // Too few rows for four blocks per thread, and bf16 values: the composite's result.
        let (w1, w2) = (Tensor::randn(&[64, 16], 2, DType::F32), Tensor::randn(&[16, 64], 3, DType::F32));
        let fc = |weight| LinearRef { weight, bias: None, packed: None };
        let (fc1, fc2) = (fc(&w1), fc(&w2));
        assert_eq!(block_rows(10, 16, 64, 16, 2), None);
        // Swin-B's stage 4 at batch 8: the weights read per block would cost more than it saves.
        assert_eq!(block_rows(392, 1024, 4096, 1024, 2), None);
        assert!(block_rows(25088, 128, 512, 128, 2).is_some());
        let x = Tensor::randn(&[10, 16], 1, DType::F32);
        let r = Tensor::randn(&[10, 16], 4, DType::F32);
        let want = x.linear_act(&w1, None, Activation::Gelu).unwrap().linear_add(&w2, None, &r).unwrap();
        assert_eq!(bits(&x.mlp_add(fc1, fc2, &r).unwrap()), bits(&want));
        let (xb, rb) = (x.to_dtype(DType::BF16), r.to_dtype(DType::BF16));
        let (w1b, w2b) = (w1.to_dtype(DType::BF16), w2.to_dtype(DType::BF16));
        let got = xb.mlp_add(LinearRef { weight: &w1b, ..fc1 }, LinearRef { weight: &w2b, ..fc2 }, &rb).unwrap();
        let want = xb.linear_act(&w1b, None, Activation::Gelu).unwrap().linear_add(&w2b, None, &rb).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(got.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
        // Empty widths, at a row count that would otherwise run per block: the composite's
        // (empty, or the bias and residual alone).
        let x = Tensor::randn(&[2000, 16], 1, DType::F32);
        let w1 = Tensor::randn(&[4096, 16], 2, DType::F32);
        assert!(block_rows(2000, 16, 4096, 0, 2).is_some() && block_rows(2000, 0, 4096, 16, 2).is_some());
        let (w2, r) = (Tensor::zeros(&[0, 4096], DType::F32), Tensor::zeros(&[2000, 0], DType::F32));
        let got = x.mlp_add(fc(&w1), fc(&w2), &r).unwrap();
        assert_eq!(got.shape(), [2000, 0]);
        let (x0, w0) = (Tensor::zeros(&[2000, 0], DType::F32), Tensor::zeros(&[4096, 0], DType::F32));
        let w2 = Tensor::randn(&[16, 4096], 3, DType::F32);
        let r = Tensor::randn(&[2000, 16], 4, DType::F32);
        let want = x0.linear_act(&w0, None, Activation::Gelu).unwrap().linear_add(&w2, None, &r).unwrap();
        assert_eq!(bits(&x0.mlp_add(fc(&w0), fc(&w2), &r).unwrap()), bits(&want));
    }

    #[test]
    fn wrong_shapes_are_errors_naming_the_op() {
        let x = Tensor::randn(&[300, 16], 1, DType::F32);
        let (w1, w2) = (Tensor::randn(&[64, 16], 2, DType::F32), Tensor::randn(&[16, 64], 3, DType::F32));
        let r = Tensor::randn(&[300, 16], 4, DType::F32);
        let fc = |w| LinearRef { weight: w, bias: None, packed: None };
        let bad_w1 = Tensor::randn(&[64, 15], 2, DType::F32);
        let bad_bias = Tensor::randn(&[63], 2, DType::F32);
        let b1 = Tensor::randn(&[16], 2, DType::F32);
        let bad_r = Tensor::randn(&[300, 15], 4, DType::F32);
        // Each error names the op and the shapes at fault (with what was expected).
        for (fc1, fc2, r, named) in [
            (fc(&bad_w1), fc(&w2), &r, "[300, 16] and [64, 15]"),
            (LinearRef { bias: Some(&bad_bias), ..fc(&w1) }, fc(&w2), &r, "[63], expected fc1 bias [64]"),
            (fc(&w1), LinearRef { bias: Some(&bad_bias), ..fc(&w2) }, &r, "[63], expected fc2 bias [16]"),
            (fc(&w1), fc(&w1), &r, "[64, 16], expected fc2 weight [out, 64]"),
            (fc(&w1), fc(&b1), &r, "[16], expected fc2 weight [out, 64]"),
            (fc(&w1), fc(&w2), &bad_r, "[300, 16] and [300, 15]"),
        ] {
            let e = x.mlp_add(fc1, fc2, r).unwrap_err().to_string();
            assert!(e.contains("mlp_add") && e.contains(named), "{e}");
        }
    }
}
