//! Views, copies, concatenation and indexing against finite differences of f64 references.

mod common;

use autograd::Var;
use common::*;
use proptest::prelude::*;
use tensor::{DType, Tensor};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// cat of 1..=3 inputs that differ along `dim`.
    #[test]
    fn cat_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let base = rng.shape(rank, 3);
        let dim = rng.below(rank);
        let k = 1 + rng.below(3);
        let shapes: Vec<Vec<usize>> = (0..k).map(|_| { let mut s = base.clone(); s[dim] = 1 + rng.below(3); s }).collect();
        let inputs: Vec<Input> = shapes.iter().map(|s| Input::new(rng.vec(s.iter().product(), -2.0, 2.0), s)).collect();
        let mut out = base.clone();
        out[dim] = shapes.iter().map(|s| s[dim]).sum();
        let sh = shapes.clone();
        let reference = move |d: &[Vec<f64>]| {
            let n: usize = out.iter().product();
            (0..n).map(|i| {
                let mut idx = unravel(i, &out);
                let mut t = 0;
                while idx[dim] >= sh[t][dim] { idx[dim] -= sh[t][dim]; t += 1; }
                d[t][ravel(&idx, &sh[t])]
            }).collect()
        };
        let m = mode(rng.below(3));
        check_grads(&format!("cat {shapes:?} dim {dim}"), &inputs, m, &mut rng, reference,
            |v| Var::cat(&v.iter().collect::<Vec<_>>(), dim as isize));
    }

    /// stack of 1..=3 inputs at any dim (including the new last one).
    #[test]
    fn stack_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = rng.below(3);
        let shape = rng.shape(rank, 3);
        let dim = rng.below(rank + 1);
        let k = 1 + rng.below(3);
        let n: usize = shape.iter().product();
        let inputs: Vec<Input> = (0..k).map(|_| Input::new(rng.vec(n, -2.0, 2.0), &shape)).collect();
        let mut out = shape.clone();
        out.insert(dim, k);
        let sh = shape.clone();
        let reference = move |d: &[Vec<f64>]| {
            let no: usize = out.iter().product();
            (0..no).map(|i| {
                let mut idx = unravel(i, &out);
                let t = idx.remove(dim);
                d[t][ravel(&idx, &sh)]
            }).collect()
        };
        let m = mode(rng.below(3));
        check_grads(&format!("stack {k} x {shape:?} dim {dim}"), &inputs, m, &mut rng, reference,
            |v| Var::stack(&v.iter().collect::<Vec<_>>(), dim as isize));
    }

    /// roll over one or two dims, shifts of any sign and size.
    #[test]
    fn roll_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let shape = rng.shape(rank, 4);
        let nd = 1 + rng.below(rank.min(2));
        let dims: Vec<isize> = (0..nd).map(|k| (k * (rank - 1)) as isize).collect::<Vec<_>>();
        let dims: Vec<isize> = if nd == 2 && dims[0] == dims[1] { vec![dims[0]] } else { dims };
        let shifts: Vec<isize> = dims.iter().map(|_| rng.below(11) as isize - 5).collect();
        let x = Input::new(rng.vec(shape.iter().product(), -2.0, 2.0), &shape);
        let (sh, ds, ss) = (shape.clone(), dims.clone(), shifts.clone());
        let reference = move |d: &[Vec<f64>]| pick(&d[0], &sh, |o| {
            let mut idx = o.to_vec();
            for (&dm, &s) in ds.iter().zip(&ss) {
                let n = sh[dm as usize] as isize;
                idx[dm as usize] = (o[dm as usize] as isize - s).rem_euclid(n) as usize;
            }
            ravel(&idx, &sh)
        });
        let m = mode(rng.below(3));
        check_grads(&format!("roll {shape:?} {shifts:?} {dims:?}"), &[x], m, &mut rng, reference, |v| v[0].roll(&shifts, &dims));
    }

    /// index_select with repeated and skipped indices: repeats accumulate.
    #[test]
    fn index_select_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let shape = rng.shape(rank, 4);
        let dim = rng.below(rank);
        let k = 1 + rng.below(5);
        let idx: Vec<usize> = (0..k).map(|_| rng.below(shape[dim])).collect();
        let index = Tensor::from_f64_vec(&idx.iter().map(|&i| i as f64).collect::<Vec<_>>(), &[k], DType::I64);
        let x = Input::new(rng.vec(shape.iter().product(), -2.0, 2.0), &shape);
        let mut out = shape.clone();
        out[dim] = k;
        let (sh, ix) = (shape.clone(), idx.clone());
        let reference = move |d: &[Vec<f64>]| pick(&d[0], &out, |o| {
            let mut s = o.to_vec();
            s[dim] = ix[o[dim]];
            ravel(&s, &sh)
        });
        let m = mode(rng.below(3));
        check_grads(&format!("index_select {shape:?} dim {dim} {idx:?}"), &[x], m, &mut rng, reference,
            |v| v[0].index_select(dim as isize, &index));
    }

    /// gather with an index no larger than the input in any dim.
    #[test]
    fn gather_grad(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let shape = rng.shape(rank, 4);
        let dim = rng.below(rank);
        let ishape: Vec<usize> = shape.iter().enumerate()
            .map(|(k, &n)| if k == dim { 1 + rng.below(4) } else { 1 + rng.below(n) }).collect();
        let ni: usize = ishape.iter().product();
        let idx: Vec<usize> = (0..ni).map(|_| rng.below(shape[dim])).collect();
        let index = Tensor::from_f64_vec(&idx.iter().map(|&i| i as f64).collect::<Vec<_>>(), &ishape, DType::I64);
        let x = Input::new(rng.vec(shape.iter().product(), -2.0, 2.0), &shape);
        let (sh, ish, ix) = (shape.clone(), ishape.clone(), idx.clone());
        let reference = move |d: &[Vec<f64>]| pick(&d[0], &ish, |o| {
            let mut s = o.to_vec();
            s[dim] = ix[ravel(o, &ish)];
            ravel(&s, &sh)
        });
        let m = mode(rng.below(3));
        check_grads(&format!("gather {shape:?} dim {dim} index {ishape:?}"), &[x], m, &mut rng, reference,
            |v| v[0].gather(dim as isize, &index));
    }

    /// Every view: reshape, flatten, permute, transpose, narrow, select, slice_step,
    /// broadcast_to, unsqueeze, squeeze, contiguous.
    #[test]
    fn view_grads(seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let rank = 1 + rng.below(3);
        let shape = rng.shape(rank, 4);
        let n: usize = shape.iter().product();
        let sh = shape.clone();
        let case = |rng: &mut Gen, what: String, out: Vec<usize>, src: &dyn Fn(&[usize]) -> usize, op: &dyn Fn(&Var) -> tensor::Result<Var>| {
            let x = Input::new(rng.vec(n, -2.0, 2.0), &sh);
            let m = mode(rng.below(3));
            let mut r = Gen::new(rng.below(1 << 30) as u64);
            check_grads(&what, &[x], m, &mut r, |d| pick(&d[0], &out, src), |v| op(&v[0]));
        };
        let flat = |o: &[usize]| o.iter().zip(strides(&shape)).map(|(a, b)| a * b).sum::<usize>();

        // reshape to [n] then to a 2-D split: element order is unchanged.
        let f = n / shape[0];
        case(&mut rng, format!("reshape {shape:?}"), vec![shape[0], f], &|o| o[0] * f + o[1], &|v| v.reshape(&[n])?.reshape(&[shape[0], f]));
        case(&mut rng, format!("flatten {shape:?}"), vec![n], &|o| o[0], &|v| v.flatten(0, -1));

        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() { perm.swap(i, rng.below(i + 1)); }
        let pout: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let p2 = perm.clone();
        case(&mut rng, format!("permute {shape:?} {perm:?}"), pout, &|o| {
            let mut idx = vec![0; rank];
            for (k, &p) in p2.iter().enumerate() { idx[p] = o[k]; }
            flat(&idx)
        }, &|v| v.permute(&perm));
        if rank >= 2 {
            let mut tout = shape.clone();
            tout.swap(0, rank - 1);
            case(&mut rng, format!("transpose {shape:?}"), tout, &|o| {
                let mut idx = o.to_vec();
                idx.swap(0, rank - 1);
                flat(&idx)
            }, &|v| v.transpose(0, -1));
        }

        let dim = rng.below(rank);
        let start = rng.below(shape[dim]);
        let len = 1 + rng.below(shape[dim] - start);
        let mut nout = shape.clone();
        nout[dim] = len;
        case(&mut rng, format!("narrow {shape:?} {dim} {start} {len}"), nout, &|o| {
            let mut idx = o.to_vec();
            idx[dim] += start;
            flat(&idx)
        }, &|v| v.narrow(dim as isize, start, len));
        let mut sout = shape.clone();
        sout.remove(dim);
        case(&mut rng, format!("select {shape:?} {dim} {start}"), sout, &|o| {
            let mut idx = o.to_vec();
            idx.insert(dim, start);
            flat(&idx)
        }, &|v| v.select(dim as isize, start));

        let end = start + rng.below(shape[dim] - start + 1);
        let step = 1 + rng.below(3);
        let mut stout = shape.clone();
        stout[dim] = (end - start).div_ceil(step);
        if stout[dim] > 0 {
            case(&mut rng, format!("slice_step {shape:?} {dim} {start}:{end}:{step}"), stout, &|o| {
                let mut idx = o.to_vec();
                idx[dim] = start + o[dim] * step;
                flat(&idx)
            }, &|v| v.slice_step(dim as isize, start, end, step));
        }

        // broadcast: a size-1 dim grows and a leading dim appears.
        let mut bshape = vec![2];
        bshape.extend(shape.iter().map(|&d| if d == 1 { 3 } else { d }));
        case(&mut rng, format!("broadcast_to {shape:?} {bshape:?}"), bshape.clone(), &|o| broadcast_index(o, &shape), &|v| v.broadcast_to(&bshape));

        let ud = rng.below(rank + 1);
        let mut uout = shape.clone();
        uout.insert(ud, 1);
        case(&mut rng, format!("unsqueeze {shape:?} {ud}"), uout.clone(), &|o| {
            let mut idx = o.to_vec();
            idx.remove(ud);
            flat(&idx)
        }, &|v| v.unsqueeze(ud as isize));
        case(&mut rng, format!("squeeze {uout:?} {ud}"), shape.clone(), &flat, &|v| v.unsqueeze(ud as isize)?.squeeze(ud as isize));
        case(&mut rng, format!("contiguous {shape:?}"), shape.clone(), &flat, &|v| v.contiguous());
    }
}

/// The gradient through a cast comes back in the source dtype (rounded through the target).
#[test]
fn to_dtype_grad_is_cast_back() {
    let x = Var::leaf(Tensor::from_vec(vec![1f32, -2.0, 0.5], &[3]).unwrap());
    let y = x.to_dtype(DType::F16).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    let w = Tensor::from_vec(vec![0.1f32, 1.0 / 3.0, -7.25], &[3]).unwrap().to_dtype(DType::F16);
    let g = y.backward_with(w.clone()).unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F32);
    assert_eq!(gx.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
}

/// index_select's gradient with nothing selected, or from an input with an empty dim: zeros of
/// the input's shape.
#[test]
fn index_select_grad_of_empty_selections() {
    let cases: [(Vec<usize>, isize, Vec<i64>); 3] =
        [(vec![2, 3, 4], 1, vec![]), (vec![2, 3, 0], 1, vec![2, 0]), (vec![2, 0, 4], 2, vec![3])];
    for (shape, dim, idx) in cases {
        let n: usize = shape.iter().product();
        let x = Var::param(Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), &shape).unwrap(), "x");
        let index = Tensor::from_vec(idx.clone(), &[idx.len()]).unwrap();
        let y = x.index_select(dim, &index).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(&x).unwrap();
        assert_eq!(gx.shape(), &shape[..], "{shape:?} dim {dim} {idx:?}");
        assert!(gx.to_f64_vec().unwrap().iter().all(|&v| v == 0.0), "{shape:?} dim {dim} {idx:?}");
    }
}
