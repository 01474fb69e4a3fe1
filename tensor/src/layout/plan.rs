//! The strided-iteration plan shared by the elementwise, reduction and normalisation ops.

use crate::cpu::parallel::{new_vec, PAR_CHUNK};
use crate::Layout;
use std::ops::Range;

/// How to walk K operands that share one logical shape: size-1 dims dropped, adjacent dims merged
/// wherever every operand allows it, the innermost remaining dim being the "row".
#[derive(Debug, Clone)]
pub struct Plan<const K: usize> {
    /// Outer dims (all but the row), outermost first.
    pub outer_shape: Vec<usize>,
    pub outer_strides: Vec<[usize; K]>,
    /// Row length and each operand's stride along the row.
    pub len: usize,
    pub inner: [usize; K],
    /// Storage offset of each operand's first element.
    pub base: [usize; K],
    /// Total element count.
    pub count: usize,
}

impl<const K: usize> Plan<K> {
    /// All `layouts` must have the logical shape `shape`.
    pub fn new(shape: &[usize], layouts: [&Layout; K]) -> Self {
        debug_assert!(layouts.iter().all(|l| l.shape == shape));
        let count: usize = shape.iter().product();
        let base = layouts.map(|l| l.offset);
        // Dims innermost first, skipping size-1 dims, merging into the previous (inner) one when
        // contiguous for every operand.
        let mut dims: Vec<(usize, [usize; K])> = Vec::with_capacity(shape.len());
        for d in (0..shape.len()).rev() {
            let n = shape[d];
            if n == 1 {
                continue;
            }
            let st: [usize; K] = std::array::from_fn(|k| layouts[k].strides[d]);
            if let Some((ln, lst)) = dims.last_mut() {
                if (0..K).all(|k| st[k] == lst[k] * *ln) {
                    *ln *= n;
                    continue;
                }
            }
            dims.push((n, st));
        }
        if count == 0 {
            return Plan { outer_shape: vec![], outer_strides: vec![], len: 0, inner: [0; K], base, count };
        }
        let (len, inner) = if dims.is_empty() { (1, [0; K]) } else { dims.remove(0) };
        dims.reverse();
        Plan {
            outer_shape: dims.iter().map(|d| d.0).collect(),
            outer_strides: dims.iter().map(|d| d.1).collect(),
            len,
            inner,
            base,
            count,
        }
    }

    pub fn rows(&self) -> usize {
        self.count.checked_div(self.len).unwrap_or(0)
    }

    /// Offsets of the first element of row `r`.
    pub fn row_offsets(&self, r: usize) -> [usize; K] {
        let mut offs = self.base;
        let mut rem = r;
        for d in (0..self.outer_shape.len()).rev() {
            let i = rem % self.outer_shape[d];
            rem /= self.outer_shape[d];
            for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                *o += i * s;
            }
        }
        offs
    }

    /// Calls `f(first_logical_index, offsets, count)` for maximal runs of elements in `elems`
    /// (logical row-major indices) that lie within one row; element j of a run sits at
    /// `offsets[k] + j * inner[k]`.
    pub fn for_segments(&self, elems: Range<usize>, mut f: impl FnMut(usize, [usize; K], usize)) {
        if elems.is_empty() {
            return;
        }
        let mut row = elems.start / self.len;
        let mut col = elems.start % self.len;
        let mut offs = self.row_offsets(row);
        let mut idx = vec![0usize; self.outer_shape.len()];
        let mut rem = row;
        for d in (0..idx.len()).rev() {
            idx[d] = rem % self.outer_shape[d];
            rem /= self.outer_shape[d];
        }
        let mut pos = elems.start;
        while pos < elems.end {
            let cnt = (self.len - col).min(elems.end - pos);
            let start: [usize; K] = std::array::from_fn(|k| offs[k] + col * self.inner[k]);
            f(pos, start, cnt);
            pos += cnt;
            col = 0;
            row += 1;
            if pos >= elems.end {
                break;
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                    *o += s;
                }
                if idx[d] < self.outer_shape[d] {
                    break;
                }
                for (o, &s) in offs.iter_mut().zip(&self.outer_strides[d]) {
                    *o -= s * self.outer_shape[d];
                }
                idx[d] = 0;
            }
        }
        let _ = row;
    }

    /// A new contiguous vector of `count` values (logical order), filled run by run, in parallel
    /// chunks for large tensors (`cpu::parallel::new_vec`: each chunk zeroed by the worker that
    /// fills it, not the whole output on the calling thread first): `f(out_run, offsets)` where
    /// the run has the length of `out_run`.
    pub fn new_vec<T: bytemuck::Zeroable + Copy + Send>(&self, f: impl Fn(&mut [T], [usize; K]) + Sync) -> Vec<T> {
        new_vec(self.count, PAR_CHUNK, |s, chunk| {
            self.for_segments(s..s + chunk.len(), |pos, offs, cnt| f(&mut chunk[pos - s..pos - s + cnt], offs));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::inputs as testing;
    use crate::Tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn plan_visits_offsets_in_order(shape in testing::arb_shape(4), kind in 0u8..4, s in 0usize..10, e in 0usize..10) {
            let n: usize = shape.iter().product();
            let t = testing::view_of(&vec![0.0; n], &shape, crate::DType::F32, kind);
            let u = testing::view_of(&vec![0.0; n], &shape, crate::DType::F32, kind + 1);
            let plan = Plan::new(&shape, [t.layout(), u.layout()]);
            let want_t: Vec<usize> = t.layout().offsets().collect();
            let want_u: Vec<usize> = u.layout().offsets().collect();
            let (a, b) = ((s * n) / 10, (e * n) / 10);
            let (a, b) = (a.min(b), a.max(b));
            let mut got = vec![];
            plan.for_segments(a..b, |pos, offs, cnt| {
                for j in 0..cnt {
                    got.push((pos + j, offs[0] + j * plan.inner[0], offs[1] + j * plan.inner[1]));
                }
            });
            let want: Vec<_> = (a..b).map(|i| (i, want_t[i], want_u[i])).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// `new_vec` writes each value from its own offsets, on both paths (a transposed view, so
    /// runs break at every row).
    #[test]
    fn new_vec_writes_each_value_from_its_offsets() {
        for (rows, cols) in [(7, 9), (300, 257)] {
            let t = Tensor::from_vec((0..rows * cols).map(|i| i as f32).collect::<Vec<_>>(), &[rows, cols]).unwrap();
            let t = t.transpose(0, 1).unwrap();
            let plan = Plan::new(t.shape(), [t.layout()]);
            let f = |o: &mut [f32], [off]: [usize; 1]| {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = (off + j * plan.inner[0]) as f32;
                }
            };
            assert_eq!(plan.new_vec(f), t.layout().offsets().map(|o| o as f32).collect::<Vec<_>>());
        }
    }
}
