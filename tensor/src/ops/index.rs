//! Concatenate, stack, cyclic roll, index_select and gather.
//!
//! All of them copy strided source views straight into regions of a new contiguous output (a
//! `Plan` walks both; runs that are contiguous on both sides become `copy_from_slice`), so no
//! intermediate contiguous copies are made.
use crate::cpu::parallel::{new_vec, PAR_CHUNK};
use crate::layout::Plan;
use crate::layout::{contiguous_strides, resolve_dim};
use crate::profile;
use crate::{bf16, f16, CpuStorage, DType, Element, Error, Layout, Result, Tensor};

/// Copies the elements `src_layout` selects in `src` to the positions `dst_layout` selects in
/// `dst` (both layouts of one shape).
fn copy_into<T: Copy>(dst: &mut [T], dst_layout: &Layout, src: &[T], src_layout: &Layout) {
    let plan = Plan::new(&src_layout.shape, [src_layout, dst_layout]);
    let [ss, sd] = plan.inner;
    plan.for_segments(0..plan.count, |_, [os, od], cnt| {
        if ss == 1 && sd == 1 {
            dst[od..od + cnt].copy_from_slice(&src[os..os + cnt]);
        } else {
            for j in 0..cnt {
                dst[od + j * sd] = src[os + j * ss];
            }
        }
    });
}

/// The typed storage slice of `t` (whose dtype was checked to be `T`'s).
fn typed<T: Element>(t: &Tensor) -> Result<&[T]> {
    T::slice(t.cpu_storage()?).ok_or(Error::DTypeMismatch { op: "index", lhs: t.dtype(), rhs: T::DTYPE })
}

/// Runs the generic `$f::<T>(args)` for the element type of `$dtype`, wrapping the Vec<T> it
/// returns as storage.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident($($arg:expr),*)) => {
        match $dtype {
            DType::F32 => CpuStorage::F32($f::<f32>($($arg),*)?),
            DType::F16 => CpuStorage::F16($f::<f16>($($arg),*)?),
            DType::BF16 => CpuStorage::BF16($f::<bf16>($($arg),*)?),
            DType::I64 => CpuStorage::I64($f::<i64>($($arg),*)?),
            DType::U8 => CpuStorage::U8($f::<u8>($($arg),*)?),
        }
    };
}

fn cat_typed<T: Element>(tensors: &[&Tensor], out_shape: &[usize], d: usize) -> Result<Vec<T>> {
    let mut out = vec![T::zeroed(); out_shape.iter().product()];
    let ostrides = contiguous_strides(out_shape);
    let mut at = 0;
    for t in tensors {
        let region = Layout { shape: t.shape().to_vec(), strides: ostrides.clone(), offset: at * ostrides[d] };
        copy_into(&mut out, &region, typed::<T>(t)?, t.layout());
        at += t.shape()[d];
    }
    Ok(out)
}

/// Checks a 1-D (or any-rank, for gather) i64 index tensor and that every entry is in 0..size.
fn checked_indices(op: &'static str, x: &Tensor, index: &Tensor, d: usize) -> Result<Vec<i64>> {
    if index.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType { op, dtype: index.dtype() });
    }
    let idx = index.to_vec::<i64>()?;
    let size = x.shape()[d];
    if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= size) {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("index {bad} is out of range for dim {d} (size {size}) of shape {:?}", x.shape()),
        });
    }
    Ok(idx)
}

fn index_select_typed<T: Element>(x: &Tensor, d: usize, idx: &[i64], out_shape: &[usize]) -> Result<Vec<T>> {
    let src = typed::<T>(x)?;
    // A contiguous source (Swin's window gathers): each selected slab is `inner` consecutive
    // elements, copied whole (no per-index plan), slabs split over the pool when large (one
    // thread copying a 12 MB stage-1 gather left the other idle).
    if let Some(r) = x.layout().contiguous_range() {
        let src = &src[r];
        let (n_d, inner) = (x.shape()[d], x.shape()[d + 1..].iter().product::<usize>());
        let outer: usize = x.shape()[..d].iter().product();
        let slabs_per_chunk = (PAR_CHUNK / inner.max(1)).max(1);
        return Ok(new_vec(outer * idx.len() * inner, slabs_per_chunk * inner, |start, out| {
            for (k, slab) in out.chunks_exact_mut(inner).enumerate() {
                let j = start / inner + k;
                let at = (j / idx.len() * n_d + idx[j % idx.len()] as usize) * inner;
                slab.copy_from_slice(&src[at..at + inner]);
            }
        }));
    }
    let mut out = vec![T::zeroed(); out_shape.iter().product()];
    let ostrides = contiguous_strides(out_shape);
    let mut slab = x.layout().clone();
    slab.shape[d] = 1;
    let mut region = Layout { shape: slab.shape.clone(), strides: ostrides.clone(), offset: 0 };
    for (j, &i) in idx.iter().enumerate() {
        let mut s = slab.clone();
        s.offset += i as usize * x.layout().strides[d];
        region.offset = j * ostrides[d];
        copy_into(&mut out, &region, src, &s);
    }
    Ok(out)
}

fn gather_typed<T: Element>(x: &Tensor, d: usize, index: &Tensor, idx: &[i64]) -> Result<Vec<T>> {
    let src = typed::<T>(x)?;
    // The source restricted to the index's extent, with the gathered dim's stride zeroed: its
    // offsets plus idx * stride[d] address every output element.
    let mut strides = x.layout().strides.clone();
    let step = strides[d];
    strides[d] = 0;
    let base = Layout { shape: index.shape().to_vec(), strides, offset: x.layout().offset };
    let flat = Layout::contiguous(index.shape());
    let plan = Plan::new(index.shape(), [&base, &flat]);
    let [sb, si] = plan.inner;
    Ok(plan.new_vec(|o, [ob, oi]| {
        for (j, o) in o.iter_mut().enumerate() {
            *o = src[ob + j * sb + idx[oi + j * si] as usize * step];
        }
    }))
}

impl Tensor {
    /// Concatenate along `dim`; shapes must agree on every other dim, dtypes must match.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let _prof = profile::op(
            profile::Kind::Copy,
            0.0,
            tensors.iter().map(|t| profile::traffic(t.elem_count(), 1, t.dtype())).sum(),
        );
        const OP: &str = "cat";
        let Some(first) = tensors.first() else {
            return Err(Error::InvalidArgument { op: OP, msg: "no tensors to concatenate".into() });
        };
        let d = resolve_dim(OP, dim, first.rank())?;
        let mut out_shape = first.shape().to_vec();
        for t in &tensors[1..] {
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: OP, lhs: first.dtype(), rhs: t.dtype() });
            }
            let fits = t.rank() == first.rank() && (0..t.rank()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            if !fits {
                return Err(Error::ShapeMismatch { op: OP, lhs: first.shape().to_vec(), rhs: t.shape().to_vec() });
            }
            out_shape[d] += t.shape()[d];
        }
        let storage = by_dtype!(first.dtype(), cat_typed(tensors, &out_shape, d));
        Ok(Tensor::from_storage(storage, Layout::contiguous(&out_shape)))
    }

    /// Stack equal-shaped tensors along a new dim `dim` (which may equal the rank).
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        const OP: &str = "stack";
        let Some(first) = tensors.first() else {
            return Err(Error::InvalidArgument { op: OP, msg: "no tensors to stack".into() });
        };
        let d = resolve_dim(OP, dim, first.rank() + 1)?;
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            return Err(Error::ShapeMismatch { op: OP, lhs: first.shape().to_vec(), rhs: t.shape().to_vec() });
        }
        let views = tensors.iter().map(|t| t.unsqueeze(d as isize)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&views.iter().collect::<Vec<_>>(), d as isize)
    }

    /// torch.roll: element i moves to (i + shift) mod n along each dim. With no dims, the
    /// tensor is rolled as if flattened (one shift).
    pub fn roll(&self, shifts: &[isize], dims: &[isize]) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Copy, 0.0, profile::traffic(self.elem_count(), 1, self.dtype()));
        const OP: &str = "roll";
        if dims.is_empty() {
            if shifts.len() != 1 {
                return Err(Error::InvalidArgument {
                    op: OP,
                    msg: format!("shifts {shifts:?} without dims need one shift"),
                });
            }
            return self.flatten(0, -1)?.roll(shifts, &[0])?.reshape(self.shape());
        }
        if shifts.len() != dims.len() {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: format!("{} shifts {shifts:?} for {} dims {dims:?}", shifts.len(), dims.len()),
            });
        }
        let mut x = self.clone();
        for (&s, &dim) in shifts.iter().zip(dims) {
            let d = resolve_dim(OP, dim, self.rank())?;
            let n = self.shape()[d];
            if n == 0 {
                continue;
            }
            let k = s.rem_euclid(n as isize) as usize;
            if k != 0 {
                // The last k elements come first.
                x = Tensor::cat(&[&x.narrow(d as isize, n - k, k)?, &x.narrow(d as isize, 0, n - k)?], d as isize)?;
            }
        }
        Ok(x)
    }

    /// Pick slices along `dim` at the i64 indices of the 1-D `index`.
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let d = resolve_dim(OP, dim, self.rank())?;
        // Each picked slice read and written once (the index itself is negligible).
        let picked = (self.elem_count() / self.shape()[d].max(1)) * index.elem_count();
        let _prof = profile::op(profile::Kind::Copy, 0.0, profile::traffic(picked, 1, self.dtype()));
        if index.rank() != 1 {
            return Err(Error::BadShape { op: OP, shape: index.shape().to_vec(), expected: "a 1-D index".into() });
        }
        let idx = checked_indices(OP, self, index, d)?;
        let mut out_shape = self.shape().to_vec();
        out_shape[d] = idx.len();
        let storage = by_dtype!(self.dtype(), index_select_typed(self, d, &idx, &out_shape));
        Ok(Tensor::from_storage(storage, Layout::contiguous(&out_shape)))
    }

    /// torch.gather: out[..i..] = self[..index[..i..]..] along `dim`. The index has the rank
    /// of `self` and no larger extent on the other dims; the output has the index's shape.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        // Each output value read and written once, and its i64 index read.
        let _prof = profile::op(
            profile::Kind::Copy,
            0.0,
            profile::traffic(index.elem_count(), 1, self.dtype()) + 8.0 * index.elem_count() as f64,
        );
        const OP: &str = "gather";
        let d = resolve_dim(OP, dim, self.rank())?;
        let fits =
            index.rank() == self.rank() && (0..self.rank()).all(|i| i == d || index.shape()[i] <= self.shape()[i]);
        if !fits {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: index.shape().to_vec() });
        }
        let idx = checked_indices(OP, self, index, d)?;
        let storage = by_dtype!(self.dtype(), gather_typed(self, d, index, &idx));
        Ok(Tensor::from_storage(storage, Layout::contiguous(index.shape())))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// Row-major index -> coordinates.
    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut c = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            c[d] = i % shape[d];
            i /= shape[d];
        }
        c
    }

    fn ravel(c: &[usize], shape: &[usize]) -> usize {
        c.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn cat_and_stack_match_reference(shape in arb_shape(4), d in 0usize..4, sizes in prop::collection::vec(1usize..4, 1..4),
                                         kinds in prop::collection::vec(0u8..4, 3), seed in any::<u64>(), di in 0usize..3) {
            let dtype = [DType::F32, DType::BF16, DType::I64][di];
            let d = d % shape.len();
            let parts: Vec<(Vec<usize>, Vec<f64>)> = sizes.iter().enumerate().map(|(i, &s)| {
                let mut sh = shape.clone();
                sh[d] = s;
                let n: usize = sh.iter().product();
                let v = normal_data(n, seed + i as u64).iter().map(|x| (x * 8.0).round()).collect();
                (sh, v)
            }).collect();
            let ts: Vec<Tensor> = parts.iter().enumerate().map(|(i, (sh, v))| view_of(v, sh, dtype, kinds[i % 3])).collect();
            let y = Tensor::cat(&ts.iter().collect::<Vec<_>>(), d as isize - shape.len() as isize).unwrap();
            let mut out_shape = shape.clone();
            out_shape[d] = sizes.iter().sum();
            prop_assert_eq!(y.shape(), &out_shape[..]);
            let yv = y.to_f64_vec().unwrap();
            for (i, &got) in yv.iter().enumerate() {
                let mut c = unravel(i, &out_shape);
                let mut p = 0;
                while c[d] >= parts[p].0[d] { c[d] -= parts[p].0[d]; p += 1; }
                prop_assert_eq!(got, parts[p].1[ravel(&c, &parts[p].0)]);
            }
            // stack of equal shapes along every possible new dim
            let (sh0, v0) = &parts[0];
            let a = view_of(v0, sh0, dtype, kinds[1]);
            let b = a.neg().unwrap_or_else(|_| a.clone());
            let s = Tensor::stack(&[&a, &b], d as isize).unwrap();
            let mut ss = sh0.clone();
            ss.insert(d, 2);
            prop_assert_eq!(s.shape(), &ss[..]);
            prop_assert_eq!(s.select(d as isize, 0).unwrap().to_f64_vec().unwrap(), v0.clone());
        }

        #[test]
        fn roll_matches_reference(shape in arb_shape(4), kind in 0u8..4, shifts in prop::collection::vec(-9isize..9, 1..3), dsel in prop::collection::vec(0usize..4, 2), seed in any::<u64>()) {
            let n: usize = shape.iter().product();
            let data = normal_data(n, seed);
            let x = view_of(&data, &shape, DType::F32, kind);
            let mut dims: Vec<usize> = dsel.iter().map(|&d| d % shape.len()).take(shifts.len()).collect();
            dims.dedup();
            let shifts = &shifts[..dims.len()];
            let y = x.roll(shifts, &dims.iter().map(|&d| d as isize).collect::<Vec<_>>()).unwrap();
            let yv = y.to_f64_vec().unwrap();
            let xs = rounded(&data, DType::F32);
            for (i, &v) in xs.iter().enumerate() {
                let mut c = unravel(i, &shape);
                for (&s, &d) in shifts.iter().zip(&dims) {
                    c[d] = (c[d] as isize + s).rem_euclid(shape[d] as isize) as usize;
                }
                prop_assert_eq!(yv[ravel(&c, &shape)], v);
            }
            // Flattened roll.
            let f = x.roll(&[shifts[0]], &[]).unwrap().to_f64_vec().unwrap();
            for (i, &v) in xs.iter().enumerate() {
                prop_assert_eq!(f[(i as isize + shifts[0]).rem_euclid(n as isize) as usize], v);
            }
        }

        #[test]
        fn index_select_and_gather_match_reference(shape in arb_shape(4), kind in 0u8..4, d in 0usize..4, k in 1usize..6, seed in any::<u64>()) {
            let d = d % shape.len();
            let n: usize = shape.iter().product();
            let data = normal_data(n, seed);
            let x = view_of(&data, &shape, DType::F32, kind);
            let xs = rounded(&data, DType::F32);
            let idx: Vec<i64> = normal_data(k, seed ^ 2).iter().map(|v| ((v.abs() * 7.0) as usize % shape[d]) as i64).collect();
            let y = x.index_select(d as isize, &Tensor::from_vec(idx.clone(), &[k]).unwrap()).unwrap();
            let mut os = shape.clone();
            os[d] = k;
            prop_assert_eq!(y.shape(), &os[..]);
            for (i, &got) in y.to_f64_vec().unwrap().iter().enumerate() {
                let mut c = unravel(i, &os);
                c[d] = idx[c[d]] as usize;
                prop_assert_eq!(got, xs[ravel(&c, &shape)]);
            }
            // gather with an index no larger than the input on the other dims.
            let mut gs: Vec<usize> = shape.iter().map(|&s| s.div_ceil(2)).collect();
            gs[d] = k;
            let gn: usize = gs.iter().product();
            let gidx: Vec<f64> = normal_data(gn, seed ^ 3).iter().map(|v| ((v.abs() * 7.0) as usize % shape[d]) as f64).collect();
            let it = view_of(&gidx, &gs, DType::I64, kind + 1);
            let g = x.gather(d as isize, &it).unwrap();
            prop_assert_eq!(g.shape(), &gs[..]);
            for (i, &got) in g.to_f64_vec().unwrap().iter().enumerate() {
                let mut c = unravel(i, &gs);
                c[d] = gidx[i] as usize;
                prop_assert_eq!(got, xs[ravel(&c, &shape)]);
            }
        }
    }

    #[test]
    fn errors_name_op_shapes_and_index() {
        let a = Tensor::zeros(&[2, 3], DType::F32);
        let b = Tensor::zeros(&[3, 3], DType::F32);
        let e = Tensor::cat(&[&a, &b], 1).unwrap_err().to_string();
        assert!(e.contains("cat") && e.contains("[2, 3]") && e.contains("[3, 3]"), "{e}");
        assert!(Tensor::cat(&[&a, &b], 0).is_ok());
        let e = Tensor::cat(&[&a, &a.to_dtype(DType::F16)], 0).unwrap_err().to_string();
        assert!(e.contains("cat") && e.contains("F16"), "{e}");
        assert!(Tensor::cat(&[], 0).unwrap_err().to_string().contains("cat"));
        let e = Tensor::stack(&[&a, &b], 0).unwrap_err().to_string();
        assert!(e.contains("stack") && e.contains("[3, 3]"), "{e}");
        let e = a.index_select(1, &Tensor::from_vec(vec![0i64, 3], &[2]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("index_select") && e.contains("index 3") && e.contains("[2, 3]"), "{e}");
        let e = a.index_select(1, &Tensor::from_vec(vec![-1i64], &[1]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("index -1"), "{e}");
        assert!(a.index_select(0, &Tensor::zeros(&[1], DType::F32)).is_err());
        let e = a.gather(0, &Tensor::zeros(&[2, 4], DType::I64)).unwrap_err().to_string();
        assert!(e.contains("gather") && e.contains("[2, 4]"), "{e}");
        let e = a.gather(0, &Tensor::from_vec(vec![2i64], &[1, 1]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("gather") && e.contains("index 2"), "{e}");
        assert!(a.roll(&[1, 2], &[0]).unwrap_err().to_string().contains("roll"));
        assert!(a.roll(&[1], &[2]).unwrap_err().to_string().contains("roll"));
    }

    #[test]
    fn swin_shift_roundtrip() {
        // Swin's cyclic shift and its inverse restore the input.
        let x = Tensor::randn(&[2, 8, 8, 3], 5, DType::F32);
        let y = x.roll(&[-3, -3], &[1, 2]).unwrap().roll(&[3, 3], &[1, 2]).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    }

    /// A contiguous source large enough for the parallel copy (a stage-1 window gather's
    /// shape class): every slab lands where the indices say, repeats and reversals included.
    #[test]
    fn large_contiguous_index_select_copies_every_slab() {
        let (outer, n, inner) = (2, 3000, 40);
        let x =
            Tensor::from_vec((0..outer * n * inner).map(|i| i as f32).collect::<Vec<_>>(), &[outer, n, inner]).unwrap();
        let idx: Vec<i64> = (0..2500).map(|j| ((j * 7919) % n) as i64).chain([0, 0, n as i64 - 1]).collect();
        let y = x.index_select(1, &Tensor::from_vec(idx.clone(), &[idx.len()]).unwrap()).unwrap();
        assert_eq!(y.shape(), [outer, idx.len(), inner]);
        let want: Vec<f32> = (0..outer)
            .flat_map(|o| {
                idx.iter().flat_map(move |&i| (0..inner).map(move |e| ((o * n + i as usize) * inner + e) as f32))
            })
            .collect();
        assert_eq!(y.to_vec::<f32>().unwrap(), want);
    }
}
