//! Elementwise binary ops with NumPy broadcasting, comparisons and `where_cond`.
//!
//! Operands are broadcast as views (stride 0, no copy). Two contiguous operands of one shape take a
//! straight zipped loop; anything else walks rows through a `Plan`, with the inner loop specialised
//! for the common stride patterns (both unit, one broadcast). Large outputs are filled in parallel.
use crate::cpu::parallel::{new_vec_uninit, PAR_CHUNK, PAR_MIN};
use crate::layout::broadcast_shape;
use crate::layout::Plan;
use crate::profile;
use crate::{bf16, f16, CpuStorage, DType, Error, Layout, Result, Tensor};
use rayon::prelude::*;

/// `f(a[i], b[i])` over two views of logical shape `shape`, into a contiguous vector.
fn zip_typed<T, U>(shape: &[usize], a: &Tensor, av: &[T], b: &Tensor, bv: &[T], f: impl Fn(T, T) -> U + Sync) -> Vec<U>
where
    T: Copy + Sync,
    U: Copy + Send + bytemuck::Zeroable,
{
    let n: usize = shape.iter().product();
    if let (Some(ra), Some(rb)) = (a.layout().contiguous_range(), b.layout().contiguous_range()) {
        let (x, y) = (&av[ra], &bv[rb]);
        // SAFETY: both ranges hold n values, so the zip writes every value of each chunk.
        return unsafe {
            new_vec_uninit(n, PAR_CHUNK, |s, o| {
                for ((o, &p), &q) in o.iter_mut().zip(&x[s..]).zip(&y[s..]) {
                    o.write(f(p, q));
                }
            })
        };
    }
    let plan = Plan::new(shape, [a.layout(), b.layout()]);
    let [sa, sb] = plan.inner;
    plan.new_vec(|o, [oa, ob]| {
        let m = o.len();
        match (sa, sb) {
            (1, 1) => {
                for ((o, &p), &q) in o.iter_mut().zip(&av[oa..oa + m]).zip(&bv[ob..ob + m]) {
                    *o = f(p, q);
                }
            }
            (1, 0) => {
                let q = bv[ob];
                for (o, &p) in o.iter_mut().zip(&av[oa..oa + m]) {
                    *o = f(p, q);
                }
            }
            (0, 1) => {
                let p = av[oa];
                for (o, &q) in o.iter_mut().zip(&bv[ob..ob + m]) {
                    *o = f(p, q);
                }
            }
            _ => {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = f(av[oa + j * sa], bv[ob + j * sb]);
                }
            }
        }
    })
}

/// Checks dtypes, broadcasts both operands to their common shape.
fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor, Vec<usize>)> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    let shape = broadcast_shape(op, a.shape(), b.shape())?;
    Ok((a.broadcast_to(&shape)?, b.broadcast_to(&shape)?, shape))
}

/// Integer division needs nonzero divisors; report instead of panicking.
fn check_no_zero_divisor(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    let zero = match b.dtype() {
        DType::I64 => b.to_vec::<i64>()?.contains(&0),
        DType::U8 => b.to_vec::<u8>()?.contains(&0),
        _ => false,
    };
    if zero {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("integer division by zero ({:?} / {:?}, {})", a.shape(), b.shape(), b.dtype().name()),
        });
    }
    Ok(())
}

/// Comparison into a u8 tensor: `$cmp` is an expression over `a` and `b`, typed per dtype.
macro_rules! compare {
    ($lhs:expr, $rhs:expr, $op:expr, |$a:ident, $b:ident| $cmp:expr) => {{
        let (x, y, shape) = broadcast_pair($op, $lhs, $rhs)?;
        let out = match (x.cpu_storage()?, y.cpu_storage()?) {
            (CpuStorage::F32(p), CpuStorage::F32(q)) => zip_typed(&shape, &x, p, &y, q, |$a: f32, $b: f32| $cmp as u8),
            (CpuStorage::F16(p), CpuStorage::F16(q)) => zip_typed(&shape, &x, p, &y, q, |$a: f16, $b: f16| $cmp as u8),
            (CpuStorage::BF16(p), CpuStorage::BF16(q)) => {
                zip_typed(&shape, &x, p, &y, q, |$a: bf16, $b: bf16| $cmp as u8)
            }
            (CpuStorage::I64(p), CpuStorage::I64(q)) => zip_typed(&shape, &x, p, &y, q, |$a: i64, $b: i64| $cmp as u8),
            (CpuStorage::U8(p), CpuStorage::U8(q)) => zip_typed(&shape, &x, p, &y, q, |$a: u8, $b: u8| $cmp as u8),
            _ => unreachable!("dtypes checked by broadcast_pair"),
        };
        Ok(Tensor::from_storage(CpuStorage::U8(out), Layout::contiguous(&shape)))
    }};
}

impl Tensor {
    /// Elementwise arithmetic: floats through `ff` (f16/bf16 via f32), integers through `fi`/`fu`.
    fn arith(
        &self,
        rhs: &Tensor,
        op: &'static str,
        ff: impl Fn(f32, f32) -> f32 + Sync + Copy,
        fi: impl Fn(i64, i64) -> i64 + Sync,
        fu: impl Fn(u8, u8) -> u8 + Sync,
    ) -> Result<Tensor> {
        let (a, b, shape) = broadcast_pair(op, self, rhs)?;
        // Each operand read once (a broadcast one, a bias say, is small and stays in cache), the
        // output written once.
        let values = self.elem_count() + rhs.elem_count() + shape.iter().product::<usize>();
        let _prof = profile::op(profile::Kind::Elementwise, 0.0, (values * self.dtype().size_in_bytes()) as f64);
        let storage = match (a.cpu_storage()?, b.cpu_storage()?) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(zip_typed(&shape, &a, x, &b, y, ff)),
            (CpuStorage::F16(x), CpuStorage::F16(y)) => CpuStorage::F16(zip_typed(&shape, &a, x, &b, y, |p, q| {
                f16::from_f32(ff(f16::to_f32(p), f16::to_f32(q)))
            })),
            (CpuStorage::BF16(x), CpuStorage::BF16(y)) => CpuStorage::BF16(zip_typed(&shape, &a, x, &b, y, |p, q| {
                bf16::from_f32(ff(bf16::to_f32(p), bf16::to_f32(q)))
            })),
            (CpuStorage::I64(x), CpuStorage::I64(y)) => CpuStorage::I64(zip_typed(&shape, &a, x, &b, y, fi)),
            (CpuStorage::U8(x), CpuStorage::U8(y)) => CpuStorage::U8(zip_typed(&shape, &a, x, &b, y, fu)),
            _ => unreachable!("dtypes checked by broadcast_pair"),
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(&shape)))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.arith(rhs, "add", |a, b| a + b, i64::wrapping_add, u8::wrapping_add)
    }
    /// `self = self + rhs`, written into `self`'s buffer when it is an f32 tensor of rhs's shape
    /// that owns its storage alone (gradient accumulation: no new buffer, one pass); otherwise
    /// through [`Tensor::add`]. The same bits either way.
    pub fn add_assign(&mut self, rhs: &Tensor) -> Result<()> {
        if self.shape() == rhs.shape() && rhs.dtype() == DType::F32 {
            let n = self.elem_count();
            let rv = rhs.f32_slice()?;
            if let Some(dst) = self.f32_values_mut() {
                let _prof = profile::op(profile::Kind::Elementwise, 0.0, profile::f32_traffic(n, 2));
                let run = |d: &mut [f32], r: &[f32]| d.iter_mut().zip(r).for_each(|(d, &r)| *d += r);
                if n < PAR_MIN {
                    run(dst, &rv);
                } else {
                    dst.par_chunks_mut(PAR_CHUNK).zip(rv.par_chunks(PAR_CHUNK)).for_each(|(d, r)| run(d, r));
                }
                return Ok(());
            }
        }
        *self = self.add(rhs)?;
        Ok(())
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.arith(rhs, "sub", |a, b| a - b, i64::wrapping_sub, u8::wrapping_sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.arith(rhs, "mul", |a, b| a * b, i64::wrapping_mul, u8::wrapping_mul)
    }
    /// Float division is IEEE (x/0 = ±inf); integer division truncates and rejects zero divisors.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        if !self.dtype().is_float() && self.dtype() == rhs.dtype() {
            check_no_zero_divisor("div", self, rhs)?;
        }
        self.arith(rhs, "div", |a, b| a / b, i64::wrapping_div, |a, b| a / b)
    }
    /// Elementwise maximum; NaN in either operand gives NaN (as in PyTorch).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.arith(rhs, "maximum", |a, b| if a > b || a.is_nan() { a } else { b }, i64::max, u8::max)
    }
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.arith(rhs, "minimum", |a, b| if a < b || a.is_nan() { a } else { b }, i64::min, u8::min)
    }
    /// Comparisons return u8 tensors (1 where true).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "eq", |a, b| a == b)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "ne", |a, b| a != b)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "lt", |a, b| a < b)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "le", |a, b| a <= b)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "gt", |a, b| a > b)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        compare!(self, rhs, "ge", |a, b| a >= b)
    }
    /// `self` is a u8 condition; picks `on_true` where nonzero, else `on_false` (all broadcast).
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Elementwise, 0.0, profile::f32_traffic(self.elem_count(), 3));
        const OP: &str = "where_cond";
        if self.dtype() != DType::U8 {
            return Err(Error::UnsupportedDType { op: OP, dtype: self.dtype() });
        }
        if on_true.dtype() != on_false.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: on_true.dtype(), rhs: on_false.dtype() });
        }
        let shape = broadcast_shape(OP, self.shape(), on_true.shape())?;
        let shape = broadcast_shape(OP, &shape, on_false.shape())?;
        let (c, t, f) = (self.broadcast_to(&shape)?, on_true.broadcast_to(&shape)?, on_false.broadcast_to(&shape)?);
        let plan = Plan::new(&shape, [c.layout(), t.layout(), f.layout()]);
        let cv = match c.cpu_storage()? {
            CpuStorage::U8(v) => v,
            _ => unreachable!("checked u8"),
        };
        fn pick<T: Copy + Send + Sync + bytemuck::Zeroable>(plan: &Plan<3>, cv: &[u8], tv: &[T], fv: &[T]) -> Vec<T> {
            let [sc, st, sf] = plan.inner;
            plan.new_vec(|o, [oc, ot, of]| {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = if cv[oc + j * sc] != 0 { tv[ot + j * st] } else { fv[of + j * sf] };
                }
            })
        }
        let storage = match (t.cpu_storage()?, f.cpu_storage()?) {
            (CpuStorage::F32(p), CpuStorage::F32(q)) => CpuStorage::F32(pick(&plan, cv, p, q)),
            (CpuStorage::F16(p), CpuStorage::F16(q)) => CpuStorage::F16(pick(&plan, cv, p, q)),
            (CpuStorage::BF16(p), CpuStorage::BF16(q)) => CpuStorage::BF16(pick(&plan, cv, p, q)),
            (CpuStorage::I64(p), CpuStorage::I64(q)) => CpuStorage::I64(pick(&plan, cv, p, q)),
            (CpuStorage::U8(p), CpuStorage::U8(q)) => CpuStorage::U8(pick(&plan, cv, p, q)),
            _ => unreachable!("dtypes checked"),
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(&shape)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn add_assign_writes_in_place_only_into_a_buffer_it_owns() {
        let a = Tensor::randn(&[300, 301], 1, DType::F32); // large enough for the parallel path
        let b = Tensor::randn(&[300, 301], 2, DType::F32);
        let want = a.add(&b).unwrap().to_vec::<f32>().unwrap();
        // Owned alone: in place, same bits as add.
        let mut owned = a.add(&Tensor::zeros(&[300, 301], DType::F32)).unwrap();
        let buffer = owned.f32_slice().unwrap().as_ptr();
        owned.add_assign(&b).unwrap();
        assert_eq!(owned.f32_slice().unwrap().as_ptr(), buffer, "written in place");
        assert_eq!(owned.to_vec::<f32>().unwrap(), want);
        // Shared with a clone: the clone keeps its values.
        let a_values = a.to_vec::<f32>().unwrap();
        let mut shared = a.clone();
        shared.add_assign(&b).unwrap();
        assert_eq!(shared.to_vec::<f32>().unwrap(), want);
        assert_eq!(a.to_vec::<f32>().unwrap(), a_values);
        // A view of a larger buffer, a transposed view, a broadcast rhs: through add.
        let big = Tensor::randn(&[301, 301], 3, DType::F32);
        let mut view = big.narrow(0, 1, 300).unwrap();
        view.add_assign(&b).unwrap();
        assert_eq!(
            view.to_vec::<f32>().unwrap(),
            big.narrow(0, 1, 300).unwrap().add(&b).unwrap().to_vec::<f32>().unwrap()
        );
        let mut t = Tensor::randn(&[301, 300], 4, DType::F32).transpose(0, 1).unwrap();
        let t_want = t.add(&b).unwrap().to_vec::<f32>().unwrap();
        t.add_assign(&b).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), t_want);
        let row = Tensor::randn(&[301], 5, DType::F32);
        let mut m = a.add(&Tensor::zeros(&[300, 301], DType::F32)).unwrap();
        m.add_assign(&row).unwrap();
        assert_eq!(m.to_vec::<f32>().unwrap(), a.add(&row).unwrap().to_vec::<f32>().unwrap());
        // Mismatched dtypes or shapes: add's errors.
        let mut h = Tensor::zeros(&[2, 3], DType::F16);
        assert!(h.add_assign(&Tensor::zeros(&[2, 3], DType::F32)).unwrap_err().to_string().contains("add"));
        let mut s = Tensor::zeros(&[2, 3], DType::F32);
        assert!(s.add_assign(&Tensor::zeros(&[4], DType::F32)).is_err());
    }

    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// Two shapes that broadcast: a random output shape, each operand dropping leading dims
    /// and setting some dims to 1.
    fn arb_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        arb_shape(4).prop_flat_map(|out| {
            let r = out.len();
            (Just(out), 0..=r, 0..=r, prop::collection::vec(any::<bool>(), r), prop::collection::vec(any::<bool>(), r))
                .prop_map(|(out, da, db, ma, mb)| {
                    let a: Vec<usize> = (da..out.len()).map(|i| if ma[i] { 1 } else { out[i] }).collect();
                    let b: Vec<usize> = (db..out.len()).map(|i| if mb[i] { 1 } else { out[i] }).collect();
                    (a, b)
                })
        })
    }

    /// Row-major f64 broadcast of `data` (shape `s`) to `out`.
    fn bcast(data: &[f64], s: &[usize], out: &[usize]) -> Vec<f64> {
        let n: usize = out.iter().product();
        let lead = out.len() - s.len();
        (0..n)
            .map(|mut i| {
                let mut src = 0;
                let mut mul = 1;
                for d in (0..out.len()).rev() {
                    let k = i % out[d];
                    i /= out[d];
                    if d >= lead {
                        let sd = s[d - lead];
                        if sd != 1 {
                            src += k * mul;
                        }
                        mul *= sd;
                    }
                }
                data[src]
            })
            .collect()
    }

    fn out_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
        crate::layout::broadcast_shape("t", a, b).unwrap()
    }

    type BOp = (&'static str, fn(&Tensor, &Tensor) -> crate::Result<Tensor>, fn(f64, f64) -> f64);

    fn ops() -> Vec<BOp> {
        vec![
            ("add", Tensor::add, |a, b| a + b),
            ("sub", Tensor::sub, |a, b| a - b),
            ("mul", Tensor::mul, |a, b| a * b),
            ("div", Tensor::div, |a, b| a / b),
            ("maximum", Tensor::maximum, f64::max),
            ("minimum", Tensor::minimum, f64::min),
            ("eq", Tensor::eq, |a, b| (a == b) as u8 as f64),
            ("ne", Tensor::ne, |a, b| (a != b) as u8 as f64),
            ("lt", Tensor::lt, |a, b| (a < b) as u8 as f64),
            ("le", Tensor::le, |a, b| (a <= b) as u8 as f64),
            ("gt", Tensor::gt, |a, b| (a > b) as u8 as f64),
            ("ge", Tensor::ge, |a, b| (a >= b) as u8 as f64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn binary_ops_broadcast_and_match_f64(
            (sa, sb) in arb_pair(), ka in 0u8..4, kb in 0u8..4, seed in any::<u64>(), di in 0usize..3,
        ) {
            let dtype = [DType::F32, DType::F16, DType::BF16][di];
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            // Quantised values so comparisons see ties too.
            let da: Vec<f64> = normal_data(na, seed).iter().map(|v| (v * 4.0).round() / 4.0).collect();
            let db: Vec<f64> = normal_data(nb, seed ^ 1).iter().map(|v| (v * 4.0).round() / 4.0 + 0.125).collect();
            let (a, b) = (view_of(&da, &sa, dtype, ka), view_of(&db, &sb, dtype, kb));
            let out = out_shape(&sa, &sb);
            let (ra, rb) = (bcast(&rounded(&da, dtype), &sa, &out), bcast(&rounded(&db, dtype), &sb, &out));
            for (name, op, reference) in ops() {
                let y = op(&a, &b).unwrap();
                prop_assert_eq!(y.shape(), &out[..]);
                let want: Vec<f64> = ra.iter().zip(&rb).map(|(&p, &q)| reference(p, q)).collect();
                let rt = if dtype == DType::F32 { 1e-6 } else { tol(dtype) };
                assert_close(&y.to_f64_vec().unwrap(), &want, rt, 0.0, &format!("{name} {dtype:?} {sa:?} {sb:?}"));
            }
        }

        #[test]
        fn integer_arith_broadcasts((sa, sb) in arb_pair(), ka in 0u8..4, seed in any::<u64>()) {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let da: Vec<f64> = normal_data(na, seed).iter().map(|v| (v * 20.0).round()).collect();
            let db: Vec<f64> = normal_data(nb, seed ^ 3).iter().map(|v| { let r = (v * 5.0).round(); if r == 0.0 { 3.0 } else { r } }).collect();
            let (a, b) = (view_of(&da, &sa, DType::I64, ka), Tensor::from_f64_vec(&db, &sb, DType::I64));
            let out = out_shape(&sa, &sb);
            let (ra, rb) = (bcast(&da, &sa, &out), bcast(&db, &sb, &out));
            let check = |y: Tensor, f: fn(i64, i64) -> i64| {
                let want: Vec<i64> = ra.iter().zip(&rb).map(|(&p, &q)| f(p as i64, q as i64)).collect();
                assert_eq!(y.dtype(), DType::I64);
                assert_eq!(y.to_vec::<i64>().unwrap(), want);
            };
            check(a.add(&b).unwrap(), |p, q| p + q);
            check(a.sub(&b).unwrap(), |p, q| p - q);
            check(a.mul(&b).unwrap(), |p, q| p * q);
            check(a.div(&b).unwrap(), |p, q| p / q);
            check(a.maximum(&b).unwrap(), i64::max);
        }

        #[test]
        fn where_cond_broadcasts(s in arb_shape(3), mask in prop::collection::vec(any::<bool>(), 3), kc in 0u8..4, seed in any::<u64>()) {
            // cond has the full shape; on_true one with some dims 1; on_false a scalar.
            let st: Vec<usize> = s.iter().enumerate().map(|(i, &d)| if mask[i % 3] { 1 } else { d }).collect();
            let n: usize = s.iter().product();
            let c: Vec<f64> = normal_data(n, seed).iter().map(|v| (*v > 0.0) as u8 as f64).collect();
            let nt: usize = st.iter().product();
            let t = normal_data(nt, seed ^ 5);
            let cond = view_of(&c, &s, DType::U8, kc);
            let on_true = Tensor::from_f64_vec(&t, &st, DType::F32);
            let on_false = Tensor::from_f64_vec(&[-7.0], &[], DType::F32);
            let y = cond.where_cond(&on_true, &on_false).unwrap();
            let tb = bcast(&rounded(&t, DType::F32), &st, &s);
            let want: Vec<f64> = c.iter().zip(&tb).map(|(&c, &t)| if c != 0.0 { t } else { -7.0 }).collect();
            assert_close(&y.to_f64_vec().unwrap(), &want, 0.0, 0.0, "where_cond");
        }
    }

    #[test]
    fn large_tensors_take_parallel_paths() {
        let a = Tensor::randn(&[300, 257], 1, DType::F32);
        let b = Tensor::randn(&[300, 257], 2, DType::F32);
        let bias = Tensor::randn(&[257], 3, DType::F32);
        let (va, vb, vbias) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), bias.to_f64_vec().unwrap());
        let y = a.add(&b).unwrap().to_f64_vec().unwrap();
        let want: Vec<f64> = va.iter().zip(&vb).map(|(p, q)| ((*p as f32) + (*q as f32)) as f64).collect();
        assert_eq!(y, want);
        let y = a.t().unwrap().mul(&b.t().unwrap()).unwrap();
        assert_eq!(y.shape(), &[257, 300]);
        let yv = y.to_f64_vec().unwrap();
        assert_eq!(yv[5 * 300 + 7], ((va[7 * 257 + 5] as f32) * (vb[7 * 257 + 5] as f32)) as f64);
        let y = a.sub(&bias).unwrap().to_f64_vec().unwrap();
        for i in (0..y.len()).step_by(131) {
            assert_eq!(y[i], ((va[i] as f32) - (vbias[i % 257] as f32)) as f64);
        }
    }

    #[test]
    fn errors_name_op_shapes_and_dtypes() {
        let a = Tensor::zeros(&[2, 3], DType::F32);
        let e = a.add(&Tensor::zeros(&[4], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
        let e = a.mul(&Tensor::zeros(&[2, 3], DType::F16)).unwrap_err().to_string();
        assert!(e.contains("mul") && e.contains("F32") && e.contains("F16"), "{e}");
        let e = a.lt(&Tensor::zeros(&[3, 3], DType::F32)).unwrap_err().to_string();
        assert!(e.contains("lt") && e.contains("[3, 3]"), "{e}");
        let e = a.where_cond(&a, &a).unwrap_err().to_string();
        assert!(e.contains("where_cond") && e.contains("F32"), "{e}");
        let i = Tensor::from_vec(vec![4i64, 5], &[2]).unwrap();
        let e = i.div(&Tensor::from_vec(vec![1i64, 0], &[2]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("div") && e.contains("zero"), "{e}");
    }

    #[test]
    fn nan_propagates_through_maximum() {
        let a = Tensor::from_vec(vec![f32::NAN, 1.0, 2.0], &[3]).unwrap();
        let b = Tensor::from_vec(vec![0.0f32, f32::NAN, 1.0], &[3]).unwrap();
        let m = a.maximum(&b).unwrap().to_vec::<f32>().unwrap();
        assert!(m[0].is_nan() && m[1].is_nan() && m[2] == 2.0);
        let m = a.minimum(&b).unwrap().to_vec::<f32>().unwrap();
        assert!(m[0].is_nan() && m[1].is_nan() && m[2] == 1.0);
    }
}
