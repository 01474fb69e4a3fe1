//! Views: new layouts over the same storage. None of these copy, except `reshape` of a
//! layout that cannot be reshaped in place (it then copies once, like PyTorch's `reshape`).

use crate::layout::{resolve_dim, Layout};
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Reshape; one dimension may be `usize::MAX` to be inferred (like PyTorch's -1).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = self.elem_count();
        let mut shape = shape.to_vec();
        if let Some(pos) = shape.iter().position(|&d| d == usize::MAX) {
            let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
            if known == 0 || !n.is_multiple_of(known) {
                return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().to_vec(), rhs: shape });
            }
            shape[pos] = n / known;
        }
        if shape.iter().product::<usize>() != n {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().to_vec(), rhs: shape });
        }
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.with_layout(l)),
            None => Ok(self.contiguous().with_layout(Layout::contiguous(&shape))),
        }
    }

    /// Reorder dimensions: `out.shape[i] = self.shape[dims[i]]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if dims.len() != r || dims.iter().any(|&d| d >= r || std::mem::replace(&mut seen[d], true)) {
            return Err(Error::InvalidArgument {
                op: "permute",
                msg: format!("{dims:?} is not a permutation of the dims of shape {:?}", self.shape()),
            });
        }
        let l = self.layout();
        Ok(self.with_layout(Layout {
            shape: dims.iter().map(|&d| l.shape[d]).collect(),
            strides: dims.iter().map(|&d| l.strides[d]).collect(),
            offset: l.offset,
        }))
    }

    /// Swap two dimensions.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = resolve_dim("transpose", a, self.rank())?;
        let b = resolve_dim("transpose", b, self.rank())?;
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// Elements `start..start+len` along `dim`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = resolve_dim("narrow", dim, self.rank())?;
        if start + len > self.shape()[d] {
            return Err(Error::InvalidArgument {
                op: "narrow",
                msg: format!("range {start}..{} exceeds dim {d} of shape {:?}", start + len, self.shape()),
            });
        }
        let mut l = self.layout().clone();
        l.offset += start * l.strides[d];
        l.shape[d] = len;
        Ok(self.with_layout(l))
    }

    /// Python's `x[start:end:step]` along `dim` (step >= 1), e.g. Swin's `x[0::2]`.
    pub fn slice_step(&self, dim: isize, start: usize, end: usize, step: usize) -> Result<Tensor> {
        let d = resolve_dim("slice_step", dim, self.rank())?;
        let size = self.shape()[d];
        if step == 0 || start > end || end > size {
            return Err(Error::InvalidArgument {
                op: "slice_step",
                msg: format!("slice {start}:{end}:{step} is invalid for dim {d} of shape {:?}", self.shape()),
            });
        }
        let mut l = self.layout().clone();
        l.offset += start * l.strides[d];
        l.shape[d] = (end - start).div_ceil(step);
        l.strides[d] *= step;
        Ok(self.with_layout(l))
    }

    /// Element `index` along `dim`, removing that dimension.
    pub fn select(&self, dim: isize, index: usize) -> Result<Tensor> {
        let d = resolve_dim("select", dim, self.rank())?;
        self.narrow(d as isize, index, 1)?.squeeze(d as isize)
    }

    /// Broadcast to `shape` (NumPy rules): size-1 or missing leading dims get stride 0.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let err = || Error::ShapeMismatch { op: "broadcast_to", lhs: self.shape().to_vec(), rhs: shape.to_vec() };
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let l = self.layout();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            if l.shape[i] == shape[lead + i] {
                strides[lead + i] = l.strides[i];
            } else if l.shape[i] != 1 {
                return Err(err());
            }
        }
        Ok(self.with_layout(Layout { shape: shape.to_vec(), strides, offset: l.offset }))
    }

    /// Alias of `broadcast_to` (PyTorch's `expand`).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Insert a size-1 dimension at `dim` (which may equal the rank).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = resolve_dim("unsqueeze", dim, self.rank() + 1)?;
        let mut l = self.layout().clone();
        let stride = if d < l.rank() { l.strides[d] * l.shape[d] } else { 1 };
        l.shape.insert(d, 1);
        l.strides.insert(d, stride);
        Ok(self.with_layout(l))
    }

    /// Remove a size-1 dimension.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = resolve_dim("squeeze", dim, self.rank())?;
        if self.shape()[d] != 1 {
            return Err(Error::BadShape {
                op: "squeeze",
                shape: self.shape().to_vec(),
                expected: format!("size 1 at dim {d}"),
            });
        }
        let mut l = self.layout().clone();
        l.shape.remove(d);
        l.strides.remove(d);
        Ok(self.with_layout(l))
    }

    /// Merge dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = resolve_dim("flatten", start, self.rank())?;
        let e = resolve_dim("flatten", end, self.rank())?;
        if s > e {
            return Err(Error::InvalidArgument { op: "flatten", msg: format!("start {s} > end {e}") });
        }
        let sh = self.shape();
        let mut shape = sh[..s].to_vec();
        shape.push(sh[s..=e].iter().product());
        shape.extend_from_slice(&sh[e + 1..]);
        self.reshape(&shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};

    fn t234() -> Tensor {
        Tensor::arange(24, DType::F32).reshape(&[2, 3, 4]).unwrap()
    }

    #[test]
    fn views_share_storage_and_index_right() {
        let x = t234();
        let p = x.permute(&[2, 0, 1]).unwrap();
        assert!(p.same_storage(&x));
        assert_eq!(p.shape(), &[4, 2, 3]);
        // p[i,j,k] = x[j,k,i] = 12j + 4k + i
        let v = p.to_vec::<f32>().unwrap();
        assert_eq!(v[6 + 3 + 2], (12 + 8 + 1) as f32);
        let s = x.slice_step(2, 1, 4, 2).unwrap();
        assert_eq!(s.to_vec::<f32>().unwrap(), vec![1., 3., 5., 7., 9., 11., 13., 15., 17., 19., 21., 23.]);
        let n = x.narrow(1, 1, 2).unwrap();
        assert_eq!(n.to_vec::<f32>().unwrap()[0], 4.0);
        let b = Tensor::arange(3, DType::F32).reshape(&[3, 1]).unwrap().broadcast_to(&[2, 3, 2]).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![0., 0., 1., 1., 2., 2., 0., 0., 1., 1., 2., 2.]);
    }

    #[test]
    fn large_strided_copies_match_the_index_formula() {
        // Above the parallel threshold: a permute, a narrowed slice with an offset, a broadcast,
        // and a dim 0 that does not divide into equal slabs.
        let x = Tensor::arange(67 * 40 * 30, DType::F32).reshape(&[67, 40, 30]).unwrap();
        let p = x.permute(&[2, 0, 1]).unwrap().contiguous(); // p[i,j,k] = x[j,k,i]
        let v = p.to_vec::<f32>().unwrap();
        for (i, j, k) in [(0, 0, 0), (29, 66, 39), (7, 13, 21), (15, 66, 0)] {
            assert_eq!(v[(i * 67 + j) * 40 + k], ((j * 40 + k) * 30 + i) as f32, "permute at {i},{j},{k}");
        }
        let n = x.narrow(0, 3, 61).unwrap().narrow(2, 5, 20).unwrap();
        let v = n.to_vec::<f32>().unwrap();
        assert_eq!(v.len(), 61 * 40 * 20);
        // Rows of 20 contiguous elements (copied whole): every element checked.
        for (j, k, i) in (0..61).flat_map(|j| (0..40).flat_map(move |k| (0..20).map(move |i| (j, k, i)))) {
            assert_eq!(v[(j * 40 + k) * 20 + i], (((j + 3) * 40 + k) * 30 + i + 5) as f32, "narrow at {j},{k},{i}");
        }
        let b = Tensor::arange(70, DType::F32).reshape(&[1, 70]).unwrap().broadcast_to(&[1000, 70]).unwrap();
        let v = b.to_vec::<f32>().unwrap();
        assert!(v.chunks(70).all(|r| r.iter().enumerate().all(|(c, &e)| e == c as f32)));
    }

    #[test]
    fn view_errors_name_the_op() {
        let x = t234();
        let e = x.reshape(&[5, 5]).unwrap_err().to_string();
        assert!(e.contains("reshape") && e.contains("[2, 3, 4]") && e.contains("[5, 5]"), "{e}");
        assert!(x.narrow(0, 1, 2).is_err());
        assert!(x.permute(&[0, 0, 1]).is_err());
        assert!(x.broadcast_to(&[3, 3, 4]).is_err());
        assert!(x.squeeze(0).is_err());
    }

    #[test]
    fn reshape_of_transposed_copies() {
        let x = t234().transpose(1, 2).unwrap();
        let y = x.reshape(&[2, 12]).unwrap();
        assert_eq!(&y.to_vec::<f32>().unwrap()[..4], &[0., 4., 8., 1.]);
        let z = x.flatten(0, 1).unwrap();
        assert_eq!(z.shape(), &[8, 3]);
    }
}
