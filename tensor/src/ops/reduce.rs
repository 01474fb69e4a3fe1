//! Reductions over any set of axes.
//!
//! Floats accumulate in f64 (sums stay accurate over millions of elements; max/min are exact
//! either way), integers in i64. A contiguous tensor reduced over trailing dims reduces rows with
//! eight independent accumulators (vectorisable), rows in parallel; one reduced over leading dims
//! with many kept values (a bias gradient) sums blocks of columns in parallel; other layouts walk
//! the input in storage-friendly row order and scatter into the accumulators.
use crate::cpu::parallel::{PAR_CHUNK, PAR_MIN};
use crate::layout::Plan;
use crate::layout::{contiguous_strides, resolve_dim};
use crate::profile;
use crate::{CpuStorage, Element, Error, Layout, Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sum => "sum",
            Kind::Mean => "mean",
            Kind::Max => "max",
            Kind::Min => "min",
        }
    }
}

/// Which dims are reduced (empty list = all), rejecting out-of-range and repeated dims.
fn reduced_mask(op: &'static str, rank: usize, dims: &[isize]) -> Result<Vec<bool>> {
    if dims.is_empty() {
        return Ok(vec![true; rank]);
    }
    let mut mask = vec![false; rank];
    for &d in dims {
        let r = resolve_dim(op, d, rank)?;
        if std::mem::replace(&mut mask[r], true) {
            return Err(Error::InvalidArgument { op, msg: format!("dimension {d} repeated in {dims:?}") });
        }
    }
    Ok(mask)
}

/// Folds a slice with `LANES` independent accumulators so the loop vectorises.
#[inline]
fn fold_lanes<T: Copy, A: Copy>(xs: &[T], init: A, conv: &impl Fn(T) -> A, comb: &impl Fn(A, A) -> A) -> A {
    const LANES: usize = 8;
    let mut lanes = [init; LANES];
    let (chunks, rest) = xs.as_chunks::<LANES>();
    for c in chunks {
        for k in 0..LANES {
            lanes[k] = comb(lanes[k], conv(c[k]));
        }
    }
    let mut acc = init;
    for &x in rest {
        acc = comb(acc, conv(x));
    }
    lanes.iter().fold(acc, |a, &b| comb(a, b))
}

/// Reduces `x` (storage slice `data`) over the dims set in `mask` into one accumulator per output
/// element (output in row-major order of the kept dims).
fn reduce_acc<T, A>(
    x: &Tensor,
    data: &[T],
    mask: &[bool],
    init: A,
    conv: impl Fn(T) -> A + Sync,
    comb: impl Fn(A, A) -> A + Sync,
) -> Vec<A>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
{
    let shape = x.shape();
    let out_count: usize = shape.iter().zip(mask).filter(|(_, &m)| !m).map(|(&n, _)| n).product();
    let n = x.elem_count();
    if n == 0 {
        return vec![init; out_count];
    }
    // Trailing-dims reduction of contiguous data: independent rows.
    let first_reduced = mask.iter().position(|&m| m).unwrap_or(mask.len());
    let suffix = mask[first_reduced..].iter().all(|&m| m);
    if let (true, Some(r)) = (suffix, x.layout().contiguous_range()) {
        let src = &data[r];
        let len = n / out_count;
        let mut out = vec![init; out_count];
        if len >= PAR_MIN {
            for (o, row) in out.iter_mut().zip(src.chunks(len)) {
                let parts: Vec<A> = row.par_chunks(PAR_CHUNK).map(|c| fold_lanes(c, init, &conv, &comb)).collect();
                *o = parts.into_iter().fold(init, &comb);
            }
        } else if n >= PAR_MIN {
            let rows_per = PAR_CHUNK.div_ceil(len);
            out.par_chunks_mut(rows_per).zip(src.par_chunks(rows_per * len)).for_each(|(o, s)| {
                for (o, row) in o.iter_mut().zip(s.chunks(len)) {
                    *o = fold_lanes(row, init, &conv, &comb);
                }
            });
        } else {
            for (o, row) in out.iter_mut().zip(src.chunks(len)) {
                *o = fold_lanes(row, init, &conv, &comb);
            }
        }
        return out;
    }
    // Large general reductions (a bias gradient: [rows, C] summed over rows): split dim 0 into
    // chunks fixed by the size alone (not the thread count, so every machine gets the same bits),
    // reduce the chunks in parallel, then combine them in order.
    let chunked = n >= 2 * PAR_MIN && shape[0] > 1;
    let per = if chunked { shape[0].div_ceil((n / PAR_MIN).min(shape[0]).min(64)) } else { shape[0] };
    // Leading dims reduced, trailing kept, and a wide kept part: the same sums over column blocks.
    let first_kept = mask.iter().position(|&m| !m).unwrap_or(mask.len());
    let leading = first_kept > 0 && mask[first_kept..].iter().all(|&m| !m);
    if let (true, true, Some(r)) = (leading, out_count >= 2 * COLUMN_BLOCK, x.layout().contiguous_range()) {
        let chunk_rows = per * (n / out_count / shape[0]);
        return reduce_columns(&data[r], out_count, chunk_rows, init, &conv, &comb);
    }
    if chunked {
        let starts: Vec<usize> = (0..shape[0]).step_by(per).collect();
        let parts: Vec<Vec<A>> = starts
            .par_iter()
            .map(|&s| {
                let chunk = x.narrow(0, s, per.min(shape[0] - s)).expect("chunk within dim 0");
                reduce_strided(&chunk, data, mask, init, &conv, &comb)
            })
            .collect();
        if !mask[0] {
            return parts.concat(); // dim 0 kept: each chunk owns its slice of the output
        }
        let mut parts = parts.into_iter();
        let mut acc = parts.next().expect("at least one chunk");
        for p in parts {
            acc.iter_mut().zip(p).for_each(|(a, b)| *a = comb(*a, b));
        }
        return acc;
    }
    reduce_strided(x, data, mask, init, &conv, &comb)
}

/// Columns of one block of [`reduce_columns`]: wide enough for whole vectors and long runs of
/// each row, narrow enough for the block's partial and total sums to stay in L1.
const COLUMN_BLOCK: usize = 1024;

/// `src` as [rows, cols] (row-major) reduced down its columns, with the general path's bits: rows
/// in chunks of `chunk_rows`, each chunk's partial the sequential fold of its rows from `init`,
/// the partials combined in chunk order. That path splits dim 0 and gives every chunk its own
/// `cols`-long partial, then combines them on one thread: with few rows and wide columns (the
/// decoder's positional-encoding gradient, [8, 3136, 256] summed over the batch, 51 MB of
/// partials) it ran at 2.8 GB/s on a 2-core Xeon (family 6 model 207). Here blocks of columns
/// run in parallel, each keeping its partial and total in cache.
fn reduce_columns<T, A>(
    src: &[T],
    cols: usize,
    chunk_rows: usize,
    init: A,
    conv: &(impl Fn(T) -> A + Sync),
    comb: &(impl Fn(A, A) -> A + Sync),
) -> Vec<A>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
{
    let rows = src.len() / cols;
    let block = |partial: &mut Vec<A>, (b, total): (usize, &mut [A])| {
        let c0 = b * COLUMN_BLOCK;
        partial.resize(total.len(), init);
        for (chunk, r0) in (0..rows).step_by(chunk_rows).enumerate() {
            partial.fill(init);
            for row in r0..(r0 + chunk_rows).min(rows) {
                fold_columns(partial, &src[row * cols + c0..][..total.len()], conv, comb);
            }
            if chunk == 0 {
                total.copy_from_slice(partial);
            } else {
                fold_columns(total, partial, &|a| a, comb);
            }
        }
    };
    let mut out = vec![init; cols];
    if src.len() >= PAR_MIN {
        out.par_chunks_mut(COLUMN_BLOCK).enumerate().for_each_init(Vec::new, block);
    } else {
        let mut partial = Vec::new();
        out.chunks_mut(COLUMN_BLOCK).enumerate().for_each(|bt| block(&mut partial, bt));
    }
    out
}

/// The general path on one thread: any layout, any set of reduced dims.
fn reduce_strided<T: Copy, A: Copy>(
    x: &Tensor,
    data: &[T],
    mask: &[bool],
    init: A,
    conv: &impl Fn(T) -> A,
    comb: &impl Fn(A, A) -> A,
) -> Vec<A> {
    let shape = x.shape();
    let out_count: usize = shape.iter().zip(mask).filter(|(_, &m)| !m).map(|(&n, _)| n).product();
    let n = x.elem_count();
    // The output as a broadcast view over the input's shape (stride 0 on reduced dims).
    let kept: Vec<usize> = shape.iter().zip(mask).map(|(&d, &m)| if m { 1 } else { d }).collect();
    let mut ostrides = contiguous_strides(&kept);
    for (s, &m) in ostrides.iter_mut().zip(mask) {
        if m {
            *s = 0;
        }
    }
    let ol = Layout { shape: shape.to_vec(), strides: ostrides, offset: 0 };
    let plan = Plan::new(shape, [x.layout(), &ol]);
    let [sx, so] = plan.inner;
    let mut acc = vec![init; out_count];
    plan.for_segments(0..n, |_, [ox, oo], cnt| {
        if so == 0 {
            let a = &mut acc[oo];
            if sx == 1 {
                *a = comb(*a, fold_lanes(&data[ox..ox + cnt], init, conv, comb));
            } else {
                for j in 0..cnt {
                    *a = comb(*a, conv(data[ox + j * sx]));
                }
            }
        } else if so == 1 && sx == 1 {
            // Kept dim innermost in both (a bias gradient's columns): unit strides vectorise.
            fold_columns(&mut acc[oo..oo + cnt], &data[ox..ox + cnt], conv, comb);
        } else {
            for j in 0..cnt {
                let a = &mut acc[oo + j * so];
                *a = comb(*a, conv(data[ox + j * sx]));
            }
        }
    });
    acc
}

/// `acc[j] = comb(acc[j], conv(xs[j]))` for every j, on the CPU's widest vectors: this module is
/// compiled for baseline x86-64, where f32 values summed into f64 went two at a time (a training
/// step's bias gradients, [rows, C] summed over rows, ran at 13-20 GB/s on a 2-core Xeon). Each
/// element is the same operation, so the bits do not depend on the width.
fn fold_columns<T: Copy, A: Copy>(acc: &mut [A], xs: &[T], conv: &impl Fn(T) -> A, comb: &impl Fn(A, A) -> A) {
    #[inline(always)]
    fn body<T: Copy, A: Copy>(acc: &mut [A], xs: &[T], conv: &impl Fn(T) -> A, comb: &impl Fn(A, A) -> A) {
        for (a, &v) in acc.iter_mut().zip(xs) {
            *a = comb(*a, conv(v));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<T: Copy, A: Copy>(acc: &mut [A], xs: &[T], conv: &impl Fn(T) -> A, comb: &impl Fn(A, A) -> A) {
            body(acc, xs, conv, comb)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<T: Copy, A: Copy>(acc: &mut [A], xs: &[T], conv: &impl Fn(T) -> A, comb: &impl Fn(A, A) -> A) {
            body(acc, xs, conv, comb)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { avx512(acc, xs, conv, comb) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { avx2(acc, xs, conv, comb) };
        }
    }
    body(acc, xs, conv, comb)
}

fn max_f64(a: f64, b: f64) -> f64 {
    // NaN wins, as in PyTorch.
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

fn min_f64(a: f64, b: f64) -> f64 {
    if b < a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Float reduction finished into the input's dtype.
fn reduce_float<T: Element>(x: &Tensor, data: &[T], mask: &[bool], kind: Kind) -> Vec<T> {
    let count: usize = x.shape().iter().zip(mask).filter(|(_, &m)| m).map(|(&n, _)| n).product();
    let acc = match kind {
        Kind::Sum | Kind::Mean => reduce_acc(x, data, mask, 0.0f64, |v: T| v.to_f64(), |a, b| a + b),
        Kind::Max => reduce_acc(x, data, mask, f64::NEG_INFINITY, |v: T| v.to_f64(), max_f64),
        Kind::Min => reduce_acc(x, data, mask, f64::INFINITY, |v: T| v.to_f64(), min_f64),
    };
    let scale = if kind == Kind::Mean { 1.0 / count as f64 } else { 1.0 };
    acc.into_iter().map(|a| T::from_f64(a * scale)).collect()
}

fn reduce_int<T: Element>(
    x: &Tensor,
    data: &[T],
    mask: &[bool],
    kind: Kind,
    conv: impl Fn(T) -> i64 + Sync,
) -> Vec<i64> {
    match kind {
        Kind::Max => reduce_acc(x, data, mask, i64::MIN, conv, i64::max),
        Kind::Min => reduce_acc(x, data, mask, i64::MAX, conv, i64::min),
        _ => reduce_acc(x, data, mask, 0i64, conv, i64::wrapping_add),
    }
}

impl Tensor {
    fn reduce(&self, dims: &[isize], keepdim: bool, kind: Kind) -> Result<Tensor> {
        let op = kind.name();
        let mask = reduced_mask(op, self.rank(), dims)?;
        let count: usize = self.shape().iter().zip(&mask).filter(|(_, &m)| m).map(|(&n, _)| n).product();
        if count == 0 && matches!(kind, Kind::Max | Kind::Min) {
            return Err(Error::BadShape {
                op,
                shape: self.shape().to_vec(),
                expected: format!("nonempty reduced dims {dims:?}"),
            });
        }
        let out_shape: Vec<usize> = self
            .shape()
            .iter()
            .zip(&mask)
            .filter_map(|(&n, &m)| match (m, keepdim) {
                (false, _) => Some(n),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let storage = match self.cpu_storage()? {
            CpuStorage::F32(v) => CpuStorage::F32(reduce_float(self, v, &mask, kind)),
            CpuStorage::F16(v) => CpuStorage::F16(reduce_float(self, v, &mask, kind)),
            CpuStorage::BF16(v) => CpuStorage::BF16(reduce_float(self, v, &mask, kind)),
            CpuStorage::I64(_) | CpuStorage::U8(_) if kind == Kind::Mean => {
                return Err(Error::UnsupportedDType { op, dtype: self.dtype() })
            }
            CpuStorage::I64(v) => CpuStorage::I64(reduce_int(self, v, &mask, kind, |x| x)),
            // u8 sums widen to i64 (as PyTorch); max/min stay u8.
            CpuStorage::U8(v) => {
                let r = reduce_int(self, v, &mask, kind, |x| x as i64);
                if kind == Kind::Sum {
                    CpuStorage::I64(r)
                } else {
                    CpuStorage::U8(r.into_iter().map(|x| x as u8).collect())
                }
            }
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(&out_shape)))
    }

    /// Sum over `dims` (negative allowed; empty = all dims).
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Reduce, 0.0, 4.0 * self.elem_count() as f64);
        self.reduce(dims, keepdim, Kind::Sum)
    }
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let _prof = profile::op(profile::Kind::Reduce, 0.0, 4.0 * self.elem_count() as f64);
        self.reduce(dims, keepdim, Kind::Mean)
    }
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(dims, keepdim, Kind::Max)
    }
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(dims, keepdim, Kind::Min)
    }
    /// Index of the first maximum along `dim`, as i64 (a NaN counts as the maximum).
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        const OP: &str = "argmax";
        let d = resolve_dim(OP, dim, self.rank())?;
        let n = self.shape()[d];
        if n == 0 {
            return Err(Error::BadShape {
                op: OP,
                shape: self.shape().to_vec(),
                expected: format!("nonempty dim {d}"),
            });
        }
        let l = self.layout();
        let step = l.strides[d];
        let mut outer = l.clone();
        outer.shape.remove(d);
        outer.strides.remove(d);
        let plan = Plan::new(&outer.shape, [&outer]);
        let si = plan.inner[0];
        fn scan<T: Element>(plan: &Plan<1>, data: &[T], n: usize, step: usize, si: usize) -> Vec<i64> {
            plan.new_vec(|o, [base]| {
                for (j, o) in o.iter_mut().enumerate() {
                    let start = base + j * si;
                    let (mut best, mut idx) = (data[start].to_f64(), 0);
                    for i in 1..n {
                        let v = data[start + i * step].to_f64();
                        if v > best || (v.is_nan() && !best.is_nan()) {
                            best = v;
                            idx = i;
                        }
                    }
                    *o = idx as i64;
                }
            })
        }
        let out = crate::with_slice!(self.cpu_storage()?, v => scan(&plan, v, n, step, si));
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[d] = 1;
        } else {
            shape.remove(d);
        }
        Ok(Tensor::from_storage(CpuStorage::I64(out), Layout::contiguous(&shape)))
    }
    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&[], false)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::inputs::*;
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// Plain reference: fold over every input index into the output index of the kept dims.
    fn reference(data: &[f64], shape: &[usize], mask: &[bool], kind: &str) -> Vec<f64> {
        let out_n: usize = shape.iter().zip(mask).filter(|(_, &m)| !m).map(|(&n, _)| n).product();
        let cnt: usize = shape.iter().zip(mask).filter(|(_, &m)| m).map(|(&n, _)| n).product();
        let init = match kind {
            "max" => f64::NEG_INFINITY,
            "min" => f64::INFINITY,
            _ => 0.0,
        };
        let mut out = vec![init; out_n];
        for (i, &v) in data.iter().enumerate() {
            let (mut rem, mut o, mut mul) = (i, 0, 1);
            for d in (0..shape.len()).rev() {
                let k = rem % shape[d];
                rem /= shape[d];
                if !mask[d] {
                    o += k * mul;
                    mul *= shape[d];
                }
            }
            out[o] = match kind {
                "max" => out[o].max(v),
                "min" => out[o].min(v),
                _ => out[o] + v,
            };
        }
        if kind == "mean" {
            out.iter_mut().for_each(|x| *x /= cnt as f64);
        }
        out
    }

    fn dims_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<bool>)> {
        arb_shape(4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), prop::collection::vec(any::<bool>(), r))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn reductions_match_f64((shape, mask) in dims_strategy(), kind in 0u8..4, keep in any::<bool>(),
                                neg in any::<bool>(), seed in any::<u64>(), di in 0usize..3) {
            let dtype = [DType::F32, DType::F16, DType::BF16][di];
            let n: usize = shape.iter().product();
            let data = normal_data(n, seed);
            let x = view_of(&data, &shape, dtype, kind);
            let r = shape.len() as isize;
            let dims: Vec<isize> = mask.iter().enumerate().filter(|(_, &m)| m)
                .map(|(i, _)| if neg { i as isize - r } else { i as isize }).collect();
            // An empty list means all dims.
            let eff: Vec<bool> = if dims.is_empty() { vec![true; shape.len()] } else { mask.clone() };
            let xs = rounded(&data, dtype);
            for (name, y) in [("sum", x.sum(&dims, keep)), ("mean", x.mean(&dims, keep)),
                              ("max", x.max(&dims, keep)), ("min", x.min(&dims, keep))] {
                let y = y.unwrap();
                let want_shape: Vec<usize> = shape.iter().zip(&eff)
                    .filter_map(|(&d, &m)| if !m { Some(d) } else if keep { Some(1) } else { None }).collect();
                prop_assert_eq!(y.shape(), &want_shape[..]);
                prop_assert_eq!(y.dtype(), dtype);
                let want = reference(&xs, &shape, &eff, name);
                assert_close(&y.to_f64_vec().unwrap(), &want, tol(dtype), tol(dtype), &format!("{name} {shape:?} {dims:?}"));
            }
        }

        #[test]
        fn argmax_matches_first_max(shape in arb_shape(4), kind in 0u8..4, d in 0usize..4, keep in any::<bool>(), seed in any::<u64>()) {
            let d = d % shape.len();
            let n: usize = shape.iter().product();
            // Few distinct values so ties happen: the first index must win.
            let data: Vec<f64> = normal_data(n, seed).iter().map(|v| v.round()).collect();
            let x = view_of(&data, &shape, DType::F32, kind);
            let y = x.argmax(d as isize, keep).unwrap();
            prop_assert_eq!(y.dtype(), DType::I64);
            let outer: usize = shape[..d].iter().product();
            let inner: usize = shape[d + 1..].iter().product();
            let mut want = vec![];
            for o in 0..outer {
                for i in 0..inner {
                    let vals: Vec<f64> = (0..shape[d]).map(|k| data[(o * shape[d] + k) * inner + i]).collect();
                    let m = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    want.push(vals.iter().position(|&v| v == m).unwrap() as i64);
                }
            }
            prop_assert_eq!(y.to_vec::<i64>().unwrap(), want);
            let mut ws = shape.clone();
            if keep { ws[d] = 1 } else { ws.remove(d); }
            prop_assert_eq!(y.shape(), &ws[..]);
        }
    }

    #[test]
    fn large_sums_are_accurate() {
        // 3 million values of 0.1: a naive f32 running sum drifts by percent-level amounts.
        let n = 3_000_000;
        let x = Tensor::full(0.1, &[n], DType::F32);
        let s = x.sum_all().unwrap().item().unwrap();
        let want = 0.1f32 as f64 * n as f64;
        assert!((s - want).abs() / want < 1e-7, "{s} vs {want}");
        // Row reductions in parallel, and a column reduction through the general path.
        let m = Tensor::randn(&[1000, 131], 9, DType::F32);
        let v = m.to_f64_vec().unwrap();
        let rows = m.mean(&[-1], false).unwrap().to_f64_vec().unwrap();
        let cols = m.sum(&[0], true).unwrap();
        assert_eq!(cols.shape(), &[1, 131]);
        let cols = cols.to_f64_vec().unwrap();
        for r in (0..1000).step_by(97) {
            let want: f64 = v[r * 131..(r + 1) * 131].iter().sum::<f64>() / 131.0;
            assert!((rows[r] - want).abs() < 1e-6);
        }
        for c in (0..131).step_by(13) {
            let want: f64 = (0..1000).map(|r| v[r * 131 + c]).sum();
            assert!((cols[c] - want).abs() < 1e-4 * want.abs().max(1.0));
        }
    }

    #[test]
    fn wide_column_reductions_keep_the_general_paths_bits() {
        // Leading dims reduced over a wide kept part take the column blocks; the same values
        // as a strided view (a narrowed wider tensor) take the general path. Values of 1e20
        // with alternating signs beside small ones make the result depend on where the row
        // chunks end and in which order they are combined, so a change of chunking shows.
        for (shape, dims) in [
            (vec![300usize, 2048], vec![0isize]), // 9 chunks of 34 rows, the last of 28
            (vec![4, 3, 1100], vec![0, 1]),       // one chunk of 12 rows
            (vec![10, 7, 2050], vec![0, 1]),      // chunked by dim 0: 35 rows a chunk
            (vec![3, 4100], vec![0]),             // several column blocks, a partial one
        ] {
            let n: usize = shape.iter().product();
            let cols = *shape.last().unwrap();
            let small = normal_data(n, 11);
            let data: Vec<f64> =
                (0..n)
                    .map(|i| {
                        if (i / cols) % 3 == 0 {
                            1e20 * if (i / cols) % 2 == 0 { 1.0 } else { -1.0 }
                        } else {
                            small[i]
                        }
                    })
                    .collect();
            let x = Tensor::from_f64_vec(&data, &shape, DType::F32);
            let mut wide_shape = shape.clone();
            *wide_shape.last_mut().unwrap() += 5;
            let mut pad_shape = shape.clone();
            *pad_shape.last_mut().unwrap() = 5;
            let wide = Tensor::cat(&[&x, &Tensor::zeros(&pad_shape, DType::F32)], -1).unwrap();
            assert_eq!(wide.shape(), &wide_shape[..]);
            let strided = wide.narrow(-1, 0, cols).unwrap();
            assert!(strided.layout().contiguous_range().is_none());
            for kind in ["sum", "mean", "max"] {
                let run = |t: &Tensor| match kind {
                    "sum" => t.sum(&dims, false),
                    "mean" => t.mean(&dims, false),
                    _ => t.max(&dims, false),
                };
                let (fast, general) =
                    (run(&x).unwrap().to_vec::<f32>().unwrap(), run(&strided).unwrap().to_vec::<f32>().unwrap());
                let differ = fast.iter().zip(&general).position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(differ, None, "{kind} {shape:?} over {dims:?}: first differing column");
            }
            // And the values themselves: sums of the small values where no 1e20 enters.
            let mask: Vec<bool> = (0..shape.len()).map(|d| dims.contains(&(d as isize))).collect();
            let want = reference(&rounded(&data, DType::F32), &shape, &mask, "max");
            assert_close(&x.max(&dims, false).unwrap().to_f64_vec().unwrap(), &want, 0.0, 0.0, "max");
        }
    }

    #[test]
    fn large_general_reductions_split_over_dim0_match_the_reference() {
        // Big enough for the parallel split of the general path: reduced dim 0 (partials
        // combined), kept dim 0 (outputs concatenated), and a transposed (strided) input.
        let shape = [37usize, 64, 70];
        let data = normal_data(shape.iter().product(), 5);
        let x = Tensor::from_f64_vec(&data, &shape, DType::F32);
        let xs = rounded(&data, DType::F32);
        for (dims, mask) in [(vec![0isize, 1], [true, true, false]), (vec![1], [false, true, false])] {
            for (name, y) in [("sum", x.sum(&dims, false)), ("max", x.max(&dims, false))] {
                let want = reference(&xs, &shape, &mask, name);
                assert_close(&y.unwrap().to_f64_vec().unwrap(), &want, 1e-5, 1e-5, &format!("{name} {dims:?}"));
            }
        }
        let t = x.transpose(0, 2).unwrap(); // [70, 64, 37], strided
        let tdata = t.contiguous().to_f64_vec().unwrap();
        let want = reference(&tdata, &[70, 64, 37], &[true, false, true], "sum");
        assert_close(&t.sum(&[0, 2], false).unwrap().to_f64_vec().unwrap(), &want, 1e-5, 1e-5, "transposed sum");
    }

    #[test]
    fn integer_reductions_and_errors() {
        let x = Tensor::from_vec(vec![3i64, -1, 7, 2, 2, 9], &[2, 3]).unwrap();
        assert_eq!(x.sum(&[1], false).unwrap().to_vec::<i64>().unwrap(), vec![9, 13]);
        assert_eq!(x.max(&[0], false).unwrap().to_vec::<i64>().unwrap(), vec![3, 2, 9]);
        assert_eq!(x.argmax(1, false).unwrap().to_vec::<i64>().unwrap(), vec![2, 2]);
        let u = Tensor::from_vec(vec![200u8, 100, 7], &[3]).unwrap();
        let s = u.sum_all().unwrap();
        assert_eq!((s.dtype(), s.to_vec::<i64>().unwrap()), (DType::I64, vec![307]));
        assert_eq!(u.min(&[0], false).unwrap().to_vec::<u8>().unwrap(), vec![7]);
        let e = x.mean(&[0], false).unwrap_err().to_string();
        assert!(e.contains("mean") && e.contains("I64"), "{e}");
        let e = x.sum(&[2], false).unwrap_err().to_string();
        assert!(e.contains("sum") && e.contains("2") && e.contains("rank 2"), "{e}");
        assert!(x.sum(&[1, -1], false).unwrap_err().to_string().contains("repeated"));
        assert!(x.argmax(-3, false).unwrap_err().to_string().contains("argmax"));
        let nan = Tensor::from_vec(vec![1.0f32, f32::NAN, 5.0], &[3]).unwrap();
        assert!(nan.max(&[], false).unwrap().item().unwrap().is_nan());
        assert_eq!(nan.argmax(0, false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
        let empty = Tensor::zeros(&[0, 3], DType::F32);
        assert_eq!(empty.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
        assert!(empty.max(&[0], false).unwrap_err().to_string().contains("max"));
    }
}
