//! Layout: how a tensor's logical elements sit in its storage. Plain data: a shape,
//! strides in elements (0 for a broadcast dimension) and an offset. Every view op
//! (reshape of contiguous data, permute, narrow, step slicing, broadcast) only makes
//! a new Layout; no element moves. [`Plan`] walks several layouts of one shape together.

use crate::{Error, Result};

mod plan;
pub use plan::Plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

/// Row-major strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = s;
        s *= shape[i];
    }
    strides
}

/// Resolve a possibly negative dimension index.
pub fn resolve_dim(op: &'static str, dim: isize, rank: usize) -> Result<usize> {
    let d = if dim < 0 { dim + rank as isize } else { dim };
    if d < 0 || d as usize >= rank {
        return Err(Error::DimOutOfRange { op, dim, rank });
    }
    Ok(d as usize)
}

/// The shape two operands broadcast to (NumPy rules, aligned at the right).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::ShapeMismatch { op, lhs: a.to_vec(), rhs: b.to_vec() }),
        };
    }
    Ok(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (any offset). Size-1 dimensions may have any stride.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != expected {
                return false;
            }
            expected *= self.shape[i];
        }
        true
    }

    /// Storage range [offset, offset+n) when contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.elem_count())
    }

    /// One past the largest storage index this layout can touch (0 when empty).
    pub fn storage_extent(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }

    /// Reshape without copying, when the data allows it. Handles contiguous layouts and
    /// the general case of merging/splitting dimensions that are contiguous among themselves.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if shape.iter().product::<usize>() != self.elem_count() {
            return None;
        }
        if self.is_contiguous() {
            return Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        // General case: walk groups of old dims that multiply to groups of new dims.
        let old: Vec<(usize, usize)> =
            self.shape.iter().zip(&self.strides).filter(|(&n, _)| n != 1).map(|(&n, &s)| (n, s)).collect();
        let mut strides = vec![0usize; shape.len()];
        let (mut oi, mut ni) = (0usize, 0usize);
        while ni < shape.len() {
            if shape[ni] == 1 {
                strides[ni] = 0;
                ni += 1;
                continue;
            }
            // Collect one chunk of old dims that must be mutually contiguous.
            let start_new = ni;
            let mut new_prod = shape[ni];
            ni += 1;
            let start_old = oi;
            let mut old_prod = old.get(oi)?.0;
            oi += 1;
            while new_prod != old_prod {
                if new_prod < old_prod {
                    new_prod *= *shape.get(ni)?;
                    ni += 1;
                } else {
                    old_prod *= old.get(oi)?.0;
                    oi += 1;
                }
            }
            for k in start_old..oi - 1 {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 {
                    return None;
                }
            }
            let mut stride = old[oi - 1].1;
            for k in (start_new..ni).rev() {
                strides[k] = stride;
                stride *= shape[k];
            }
        }
        Some(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// Storage offsets of every element in row-major logical order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// Calls `f(storage_offset_of_row_start, row_len, row_stride)` for every innermost row,
    /// in row-major order: the building block for fast strided loops.
    pub fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let n = self.elem_count();
        if n == 0 {
            return;
        }
        if self.shape.is_empty() {
            f(self.offset, 1, 1);
            return;
        }
        let r = self.rank();
        let (len, stride) = (self.shape[r - 1], self.strides[r - 1]);
        let mut idx = vec![0usize; r - 1];
        let mut off = self.offset;
        for _ in 0..n / len {
            f(off, len, stride);
            for d in (0..r - 1).rev() {
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                off -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }
}

/// Iterator over storage offsets in logical row-major order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: usize,
    remaining: usize,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        StridedOffsets { layout, index: vec![0; layout.rank()], next: layout.offset, remaining: layout.elem_count() }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let cur = self.next;
        let l = self.layout;
        for d in (0..l.rank()).rev() {
            self.index[d] += 1;
            self.next += l.strides[d];
            if self.index[d] < l.shape[d] {
                break;
            }
            self.next -= l.strides[d] * l.shape[d];
            self.index[d] = 0;
        }
        Some(cur)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedOffsets<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_transpose() {
        let l = Layout { shape: vec![2, 3], strides: vec![1, 2], offset: 1 };
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![1, 3, 5, 2, 4, 6]);
        let mut rows = vec![];
        l.for_each_row(|o, n, s| rows.push((o, n, s)));
        assert_eq!(rows, vec![(1, 3, 2), (2, 3, 2)]);
    }

    #[test]
    fn reshape_noncontiguous_merge() {
        // A [4,6] tensor narrowed to columns 0..3 ([4,3], strides [6,1]); splitting rows is free,
        // merging rows and columns is not.
        let l = Layout { shape: vec![4, 3], strides: vec![6, 1], offset: 0 };
        assert_eq!(l.reshape(&[2, 2, 3]).unwrap().strides, vec![12, 6, 1]);
        assert!(l.reshape(&[12]).is_none());
        assert!(l.reshape(&[4, 3, 1]).is_some());
    }

    #[test]
    fn broadcasting_rules() {
        assert_eq!(broadcast_shape("t", &[3, 1, 5], &[4, 1]).unwrap(), vec![3, 4, 5]);
        assert!(broadcast_shape("t", &[3, 2], &[4, 2]).is_err());
    }
}
