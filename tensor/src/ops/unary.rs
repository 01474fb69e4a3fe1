//! Elementwise unary ops and activations.
//!
//! Every op maps a (possibly strided) input into a new contiguous tensor of the same dtype.
//! Float math runs in f32 (f16/bf16 widened and rounded back); contiguous inputs take a straight
//! slice loop, strided ones walk rows through a `Plan`, both parallel when large.
use crate::cpu::parallel::map_vec;
use crate::cpu::vecmath;
use crate::layout::Plan;
use crate::profile;
use crate::{bf16, f16, CpuStorage, Element, Error, Layout, Result, Tensor};

/// `f` over the logical elements of `t` (whose storage slice is `data`), into a contiguous vector.
pub(crate) fn map_strided<S, U>(t: &Tensor, data: &[S], f: impl Fn(S) -> U + Sync) -> Vec<U>
where
    S: Copy + Sync,
    U: Copy + Send + bytemuck::Zeroable,
{
    if let Some(r) = t.layout().contiguous_range() {
        return map_vec(&data[r], f);
    }
    let plan = Plan::new(t.shape(), [t.layout()]);
    let st = plan.inner[0];
    plan.new_vec(|o, [off]| {
        if st == 1 {
            let n = o.len();
            for (o, &x) in o.iter_mut().zip(&data[off..off + n]) {
                *o = f(x);
            }
        } else {
            for (j, o) in o.iter_mut().enumerate() {
                *o = f(data[off + j * st]);
            }
        }
    })
}

impl Tensor {
    /// Applies `f` (in f32) to every element of a float tensor; output has the input's dtype.
    pub(crate) fn map_float(&self, op: &'static str, f: impl Fn(f32) -> f32 + Sync) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Elementwise, 0.0, profile::traffic(self.elem_count(), 1, self.dtype()));
        let storage = match self.cpu_storage()? {
            CpuStorage::F32(v) => CpuStorage::F32(map_strided(self, v, f)),
            CpuStorage::F16(v) => CpuStorage::F16(map_strided(self, v, |x: f16| f16::from_f32(f(x.to_f32())))),
            CpuStorage::BF16(v) => CpuStorage::BF16(map_strided(self, v, |x: bf16| bf16::from_f32(f(x.to_f32())))),
            _ => return Err(Error::UnsupportedDType { op, dtype: self.dtype() }),
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(self.shape())))
    }

    /// Float ops through `f`, i64 through `fi` (for the few ops that make sense on integers).
    fn map_float_or_i64(
        &self,
        op: &'static str,
        f: impl Fn(f32) -> f32 + Sync,
        fi: impl Fn(i64) -> i64 + Sync,
    ) -> Result<Tensor> {
        match self.cpu_storage()? {
            CpuStorage::I64(v) => {
                Ok(Tensor::from_storage(CpuStorage::I64(map_strided(self, v, fi)), Layout::contiguous(self.shape())))
            }
            _ => self.map_float(op, f),
        }
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.map_float_or_i64("neg", |x| -x, i64::wrapping_neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.map_float("exp", f32::exp)
    }
    pub fn log(&self) -> Result<Tensor> {
        self.map_float("log", f32::ln)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.map_float("sqrt", f32::sqrt)
    }
    pub fn sin(&self) -> Result<Tensor> {
        self.map_float("sin", f32::sin)
    }
    pub fn cos(&self) -> Result<Tensor> {
        self.map_float("cos", f32::cos)
    }
    pub fn acos(&self) -> Result<Tensor> {
        self.map_float("acos", f32::acos)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.map_float("tanh", f32::tanh)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.map_float_or_i64("abs", f32::abs, i64::wrapping_abs)
    }
    pub fn sqr(&self) -> Result<Tensor> {
        self.map_float_or_i64("sqr", |x| x * x, |x| x.wrapping_mul(x))
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.map_float("recip", |x| 1.0 / x)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        // exp(-x) overflows to inf for very negative x, giving the right limit 0.
        self.map_float("sigmoid", |x| 1.0 / (1.0 + vecmath::exp_f32(-x)))
    }
    pub fn relu(&self) -> Result<Tensor> {
        // Written so NaN passes through, as in PyTorch.
        self.map_float_or_i64("relu", |x| if x < 0.0 { 0.0 } else { x }, |x| x.max(0))
    }
    /// x * mul + add.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        let (m, a) = (mul as f32, add as f32);
        self.map_float("affine", move |x| x * m + a)
    }
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        let e32 = e as f32;
        if e == 2.0 {
            return self.map_float("powf", |x| x * x);
        }
        self.map_float("powf", move |x| x.powf(e32))
    }
    /// min(max(x, lo), hi), NaN kept (so lo > hi gives hi everywhere, as in PyTorch).
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        let (l, h) = (lo as f32, hi as f32);
        let (li, hi_i) = (lo.ceil() as i64, hi.floor() as i64);
        self.map_float_or_i64(
            "clamp",
            move |x| {
                let y = if x < l { l } else { x };
                if y > h {
                    h
                } else {
                    y
                }
            },
            move |x| x.max(li).min(hi_i),
        )
    }
    /// PReLU with one slope per channel (dim 1), or a single slope.
    pub fn prelu(&self, weight: &Tensor) -> Result<Tensor> {
        const OP: &str = "prelu";
        self.expect_float(OP)?;
        weight.expect_float(OP)?;
        let w = weight.to_f32_vec()?;
        if w.len() == 1 {
            let s = w[0];
            return self.map_float(OP, move |x| if x >= 0.0 { x } else { s * x });
        }
        if weight.rank() != 1 || self.rank() < 2 || self.shape()[1] != w.len() {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: weight.shape().to_vec() });
        }
        // The slopes as a broadcast view: stride 1 along dim 1, 0 elsewhere.
        let mut strides = vec![0; self.rank()];
        strides[1] = 1;
        let wl = Layout { shape: self.shape().to_vec(), strides, offset: 0 };
        let plan = Plan::new(self.shape(), [self.layout(), &wl]);
        fn run<T: Element>(plan: &Plan<2>, x: &[T], w: &[f32]) -> Vec<T> {
            let [sx, sw] = plan.inner;
            plan.new_vec(|o, [ox, ow]| {
                for (j, o) in o.iter_mut().enumerate() {
                    let v = x[ox + j * sx].to_f32();
                    *o = T::from_f32(if v >= 0.0 { v } else { w[ow + j * sw] * v });
                }
            })
        }
        let storage = match self.cpu_storage()? {
            CpuStorage::F32(v) => CpuStorage::F32(run(&plan, v, &w)),
            CpuStorage::F16(v) => CpuStorage::F16(run(&plan, v, &w)),
            CpuStorage::BF16(v) => CpuStorage::BF16(run(&plan, v, &w)),
            _ => return Err(Error::UnsupportedDType { op: OP, dtype: self.dtype() }),
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(self.shape())))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    type TOp = fn(&Tensor) -> crate::Result<Tensor>;
    /// (name, input preparation, op under test, f64 reference applied to the prepared input).
    type Op = (&'static str, TOp, TOp, fn(f64) -> f64);

    fn ops() -> Vec<Op> {
        let id: TOp = |t| Ok(t.clone());
        let pos: TOp = |t| t.abs()?.affine(1.0, 0.1);
        vec![
            ("neg", id, Tensor::neg, |x| -x),
            ("exp", id, Tensor::exp, f64::exp),
            ("log", pos, Tensor::log, f64::ln),
            ("sqrt", pos, Tensor::sqrt, f64::sqrt),
            ("sin", id, Tensor::sin, f64::sin),
            ("cos", id, Tensor::cos, f64::cos),
            ("acos", |t| t.affine(0.3, 0.0), Tensor::acos, f64::acos),
            ("tanh", id, Tensor::tanh, f64::tanh),
            ("abs", id, Tensor::abs, f64::abs),
            ("sqr", id, Tensor::sqr, |x| x * x),
            ("recip", id, Tensor::recip, |x| 1.0 / x),
            ("sigmoid", id, Tensor::sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
            ("relu", id, Tensor::relu, |x| x.max(0.0)),
            ("gelu", id, Tensor::gelu, gelu_f64),
            ("affine", id, |t| t.affine(-1.5, 0.25), |x| x * -1.5 + 0.25),
            ("powf", pos, |t| t.powf(1.7), |x| x.powf(1.7)),
            ("powf2", id, |t| t.powf(2.0), |x| x * x),
            ("clamp", id, |t| t.clamp(-0.5, 0.7), |x| x.clamp(-0.5, 0.7)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn unary_ops_match_f64(shape in arb_shape(4), kind in 0u8..4, seed in any::<u64>(), di in 0usize..3) {
            let dtype = [DType::F32, DType::F16, DType::BF16][di];
            let n: usize = shape.iter().product();
            let data = normal_data(n, seed);
            let x = view_of(&data, &shape, dtype, kind);
            for (name, pre, op, reference) in ops() {
                let x = pre(&x).unwrap();
                let xs = x.to_f64_vec().unwrap();
                let y = op(&x).unwrap();
                prop_assert_eq!(y.shape(), &shape[..]);
                prop_assert_eq!(y.dtype(), dtype);
                prop_assert!(y.is_contiguous());
                // The exact result rounded to the output dtype: an f16 op cannot give 1/7e-6
                // (f16's largest is 65504); it overflows to infinity as IEEE rounding says.
                let in_dtype = |w: f64| match dtype {
                    DType::F16 => half::f16::from_f64(w).to_f64(),
                    DType::BF16 => half::bf16::from_f64(w).to_f64(),
                    _ => w,
                };
                let want: Vec<f64> = xs.iter().map(|&v| in_dtype(reference(v))).collect();
                let rt = if dtype == DType::F32 { 2e-6 } else { tol(dtype) };
                assert_close(&y.to_f64_vec().unwrap(), &want, rt, 1e-7, &format!("{name} {dtype:?} {shape:?} kind {kind}"));
            }
        }

        #[test]
        fn prelu_per_channel(shape in prop::collection::vec(1usize..6, 2..=4), kind in 0u8..4, seed in any::<u64>()) {
            let n: usize = shape.iter().product();
            let data = normal_data(n, seed);
            let c = shape[1];
            let w: Vec<f64> = (0..c).map(|i| 0.1 * i as f64 - 0.2).collect();
            let x = view_of(&data, &shape, DType::F32, kind);
            let wt = Tensor::from_f64_vec(&w, &[c], DType::F32);
            let y = x.prelu(&wt).unwrap();
            let inner: usize = shape[2..].iter().product();
            let xs = rounded(&data, DType::F32);
            let want: Vec<f64> = xs.iter().enumerate()
                .map(|(i, &v)| if v >= 0.0 { v } else { rounded(&[w[(i / inner) % c]], DType::F32)[0] * v })
                .collect();
            assert_close(&y.to_f64_vec().unwrap(), &want, 1e-6, 0.0, "prelu");
            let single = x.prelu(&Tensor::from_f64_vec(&[0.25], &[1], DType::F32)).unwrap();
            let want: Vec<f64> = xs.iter().map(|&v| if v >= 0.0 { v } else { 0.25 * v }).collect();
            assert_close(&single.to_f64_vec().unwrap(), &want, 1e-6, 0.0, "prelu single");
        }
    }

    #[test]
    fn integer_ops_and_dtype_errors() {
        let x = Tensor::from_vec(vec![-3i64, 0, 5], &[3]).unwrap();
        assert_eq!(x.neg().unwrap().to_vec::<i64>().unwrap(), vec![3, 0, -5]);
        assert_eq!(x.abs().unwrap().to_vec::<i64>().unwrap(), vec![3, 0, 5]);
        assert_eq!(x.relu().unwrap().to_vec::<i64>().unwrap(), vec![0, 0, 5]);
        assert_eq!(x.clamp(-1.0, 2.0).unwrap().to_vec::<i64>().unwrap(), vec![-1, 0, 2]);
        let e = x.exp().unwrap_err().to_string();
        assert!(e.contains("exp") && e.contains("I64"), "{e}");
        let u = Tensor::from_vec(vec![1u8, 2], &[2]).unwrap();
        assert!(u.gelu().unwrap_err().to_string().contains("gelu"));
        assert!(u.neg().is_err());
        let t = Tensor::zeros(&[2, 3, 4], DType::F32);
        let e = t.prelu(&Tensor::zeros(&[4], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("prelu") && e.contains("[2, 3, 4]") && e.contains("[4]"), "{e}");
    }

    #[test]
    fn special_values() {
        let x = Tensor::from_vec(vec![f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -0.0], &[4]).unwrap();
        let r = x.relu().unwrap().to_vec::<f32>().unwrap();
        assert!(r[0].is_nan() && r[1] == 0.0 && r[2] == f32::INFINITY);
        let s = x.sigmoid().unwrap().to_vec::<f32>().unwrap();
        assert!(s[0].is_nan() && s[1] == 0.0 && s[2] == 1.0 && s[3] == 0.5);
        let g = x.gelu().unwrap().to_vec::<f32>().unwrap();
        assert!(g[0].is_nan() && g[2] == f32::INFINITY);
        let c = x.clamp(-1.0, 1.0).unwrap().to_vec::<f32>().unwrap();
        assert!(c[0].is_nan() && c[1] == -1.0 && c[2] == 1.0);
    }
}
