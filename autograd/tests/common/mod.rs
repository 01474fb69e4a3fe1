//! Shared harness of the gradient tests: inputs with chosen layouts, plain f64 references and
//! central finite differences of sum(w * f(x)) compared with the autograd gradient at f32.
#![allow(dead_code)]

use autograd::Var;
use tensor::{DType, SplitMix64, Tensor};

/// A deterministic generator seeded by proptest.
pub struct Gen(SplitMix64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(SplitMix64(seed))
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.uniform()
    }
    /// An integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    pub fn coin(&mut self) -> bool {
        self.below(2) == 1
    }
    /// Values in [lo, hi) at least `gap` away from every kink (where the op is not smooth).
    pub fn vec_avoiding(&mut self, n: usize, lo: f64, hi: f64, kinks: &[f64], gap: f64) -> Vec<f64> {
        (0..n)
            .map(|_| loop {
                let v = self.uniform(lo, hi);
                if kinks.iter().all(|k| (v - k).abs() > gap) {
                    break v;
                }
            })
            .collect()
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        self.vec_avoiding(n, lo, hi, &[], 0.0)
    }
    /// n values, pairwise at least 0.01 apart (no near-ties for max/min and pooling), in [-2, 2).
    pub fn distinct(&mut self, n: usize) -> Vec<f64> {
        let mut grid: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            grid.swap(i, self.below(i + 1));
        }
        let step = 4.0 / n.max(1) as f64;
        grid.into_iter().map(|k| -2.0 + step * (k as f64 + 0.25 + 0.5 * self.uniform(0.0, 1.0))).collect()
    }
    /// A shape of the given rank with dims in 1..=max.
    pub fn shape(&mut self, rank: usize, max: usize) -> Vec<usize> {
        (0..rank).map(|_| 1 + self.below(max)).collect()
    }
}

/// Round to the f32 the tensor will hold, so the reference sees the same inputs.
pub fn round_f32(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

/// How a leaf's storage is laid out: its logical values are the same in every mode.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Contiguous,
    /// Storage in reversed-dim order, seen through a permutation (rank >= 2).
    Permuted,
    /// Every other element of a buffer twice as long in the last dim (a step slice).
    Strided,
}

pub fn mode(i: usize) -> Mode {
    [Mode::Contiguous, Mode::Permuted, Mode::Strided][i % 3]
}

/// A tensor holding `data` (row-major for `shape`) with the layout `mode` asks for.
pub fn make_tensor(data: &[f64], shape: &[usize], mode: Mode) -> Tensor {
    let t = Tensor::from_f64_vec(data, shape, DType::F32);
    let rank = shape.len();
    match mode {
        Mode::Permuted if rank >= 2 => {
            let rev: Vec<usize> = (0..rank).rev().collect();
            let p = t.permute(&rev).unwrap().contiguous().permute(&rev).unwrap();
            assert!(!p.is_contiguous() || shape.iter().filter(|&&d| d > 1).count() < 2);
            p
        }
        Mode::Strided if rank >= 1 => {
            let last = shape[rank - 1];
            let mut wide = Vec::with_capacity(data.len() * 2);
            for row in data.chunks(last.max(1)) {
                for &v in row {
                    // The skipped elements hold garbage that a wrong stride would read.
                    wide.extend([v, 1.0e3]);
                }
            }
            let mut wshape = shape.to_vec();
            wshape[rank - 1] = 2 * last;
            let s = Tensor::from_f64_vec(&wide, &wshape, DType::F32).slice_step(-1, 0, 2 * last, 2).unwrap();
            assert_eq!(s.to_f64_vec().unwrap(), data);
            s
        }
        _ => t,
    }
}

/// One differentiable input: values (rounded to f32 here) and shape.
#[derive(Clone, Debug)]
pub struct Input {
    pub data: Vec<f64>,
    pub shape: Vec<usize>,
}

impl Input {
    pub fn new(data: Vec<f64>, shape: &[usize]) -> Input {
        assert_eq!(data.len(), shape.iter().product::<usize>());
        Input { data: round_f32(&data), shape: shape.to_vec() }
    }
}

pub fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Check the autograd gradient of sum(w * forward(x)) for every input against central finite
/// differences of sum(w * reference(x)) in f64 (eps 1e-4), within 1e-3 of the gradient norm.
/// Also checks the forward value against the reference. Panics with a description on mismatch.
pub fn check_grads(
    what: &str,
    inputs: &[Input],
    mode: Mode,
    rng: &mut Gen,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    forward: impl Fn(&[Var]) -> tensor::Result<Var>,
) {
    let leaves: Vec<Var> = inputs.iter().map(|i| Var::leaf(make_tensor(&i.data, &i.shape, mode))).collect();
    let y = forward(&leaves).unwrap_or_else(|e| panic!("{what}: forward failed: {e}"));
    let yv = y.value().to_f64_vec().unwrap();
    let data: Vec<Vec<f64>> = inputs.iter().map(|i| i.data.clone()).collect();
    let yref = reference(&data);
    assert_eq!(yv.len(), yref.len(), "{what}: output sizes differ");
    let ferr = norm(&yv.iter().zip(&yref).map(|(a, b)| a - b).collect::<Vec<_>>());
    assert!(ferr <= 1e-4 * norm(&yref) + 1e-4, "{what}: forward differs from the reference by {ferr}");

    let w = round_f32(&rng.vec(yv.len(), -1.0, 1.0));
    let grads = y.backward_with(Tensor::from_f64_vec(&w, y.value().shape(), DType::F32)).unwrap();
    let loss = |d: &[Vec<f64>]| reference(d).iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
    const EPS: f64 = 1e-4;
    for (k, (inp, leaf)) in inputs.iter().zip(&leaves).enumerate() {
        let got = match grads.get(leaf) {
            Some(g) => {
                assert_eq!(g.shape(), &inp.shape[..], "{what}: gradient {k} has the wrong shape");
                g.to_f64_vec().unwrap()
            }
            None => vec![0.0; inp.data.len()],
        };
        let mut d = data.clone();
        let fd: Vec<f64> = (0..inp.data.len())
            .map(|j| {
                let x0 = d[k][j];
                d[k][j] = x0 + EPS;
                let lp = loss(&d);
                d[k][j] = x0 - EPS;
                let lm = loss(&d);
                d[k][j] = x0;
                (lp - lm) / (2.0 * EPS)
            })
            .collect();
        let err = norm(&got.iter().zip(&fd).map(|(a, b)| a - b).collect::<Vec<_>>());
        assert!(
            err <= 1e-3 * norm(&fd) + 1e-4,
            "{what}: gradient of input {k} (shape {:?}, {mode:?}) off by {err} (norm {})\n got {got:?}\n fd  {fd:?}",
            inp.shape,
            norm(&fd)
        );
    }
}

// ---- index helpers for the references ---------------------------------------------------------

pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        idx[i] = flat % shape[i];
        flat /= shape[i];
    }
    idx
}

pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// out[i] = f(a[bcast(i)], b[bcast(i)]) with NumPy broadcasting to `out_shape`.
pub fn broadcast_index(out_idx: &[usize], shape: &[usize]) -> usize {
    let lead = out_idx.len() - shape.len();
    let idx: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if n == 1 { 0 } else { out_idx[lead + i] }).collect();
    ravel(&idx, shape)
}

/// A random shape that broadcasts to `out`: some dims set to 1, some leading dims dropped.
pub fn broadcastable(rng: &mut Gen, out: &[usize]) -> Vec<usize> {
    let drop = rng.below(out.len() + 1);
    out[drop..].iter().map(|&d| if rng.below(3) == 0 { 1 } else { d }).collect()
}

/// out[o] = x[src(o)] for every position o of `out_shape` (the reference of any view or copy).
pub fn pick(x: &[f64], out_shape: &[usize], src: impl Fn(&[usize]) -> usize) -> Vec<f64> {
    let n: usize = out_shape.iter().product();
    (0..n).map(|i| x[src(&unravel(i, out_shape))]).collect()
}
