//! Building the model's parameters from one of three sources: random initialisation, a loaded
//! state dict, or nothing at all (to list the expected keys). The same construction code runs for
//! all three, so the key names, their order and their shapes cannot drift apart.

use super::layers::PackedSlot;
use super::ModelError;
use autograd::Var;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tensor::cpu::parallel::new_vec;
use tensor::{DType, SplitMix64, Tensor};

/// One state-dict entry: a trainable parameter or a fixed buffer.
#[derive(Clone, Debug)]
pub enum Entry {
    Param(Var),
    Buffer(Tensor),
}

impl Entry {
    pub fn tensor(&self) -> Tensor {
        match self {
            Entry::Param(v) => v.value(),
            Entry::Buffer(t) => t.clone(),
        }
    }
}

/// How a parameter is initialised randomly (PyTorch's defaults for each layer type).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    /// N(0, std²) truncated at ±2 std (timm/torchvision `trunc_normal_` for Swin).
    TruncNormal(f64),
    /// N(0, 1): nn.Embedding and the positional Gaussian matrix.
    Normal,
    /// U(-b, b): PyTorch's default for Linear/Conv weights and biases, b = 1/sqrt(fan_in).
    Uniform(f64),
    Const(f64),
}

impl Init {
    /// `n` values drawn from `SplitMix64(seed)` in order, on rayon in pieces: the same values as
    /// [`Init::sample_in_order`], bit for bit (a swin_b's 88M values took 3.5 s on one thread).
    fn sample(self, shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let rng = SplitMix64(seed);
        let v: Vec<f32> = match self {
            Init::Const(c) => vec![c as f32; n],
            Init::Normal => in_pieces(n, &rng, 2, |r| r.normal() as f32),
            Init::Uniform(b) => in_pieces(n, &rng, 1, |r| ((r.uniform() * 2.0 - 1.0) * b) as f32),
            Init::TruncNormal(std) => trunc_normal(n, &rng, std, MAX_CANDIDATES),
        };
        Tensor::from_vec(v, shape).expect("init: element count matches shape")
    }

    /// The sequential draw that [`Init::sample`] reproduces: one generator, value after value
    /// (a truncated normal redraws until it is within ±2).
    #[cfg(test)]
    fn sample_in_order(self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        match self {
            Init::Const(c) => vec![c as f32; n],
            Init::Normal => (0..n).map(|_| rng.normal() as f32).collect(),
            Init::Uniform(b) => (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * b) as f32).collect(),
            Init::TruncNormal(std) => (0..n)
                .map(|_| loop {
                    let z = rng.normal();
                    if z.abs() <= 2.0 {
                        break (z * std) as f32;
                    }
                })
                .collect(),
        }
    }
}

/// Values a parallel piece draws.
const PIECE: usize = 1 << 15;
/// Most truncated-normal candidates drawn at once (8 MB of f64).
const MAX_CANDIDATES: usize = 1 << 20;

/// `n` values, value i from the generator `draws * i` draws after `start`: each piece (of the
/// engine's parallel `new_vec`) starts its own generator where the sequence is at its first value.
fn in_pieces<T: bytemuck::Zeroable + Copy + Send>(
    n: usize,
    start: &SplitMix64,
    draws: u64,
    value: impl Fn(&mut SplitMix64) -> T + Sync,
) -> Vec<T> {
    new_vec(n, PIECE, |first, piece| {
        let mut rng = start.skipped(first as u64 * draws);
        piece.iter_mut().for_each(|v| *v = value(&mut rng));
    })
}

/// N(0, std²) truncated at ±2 std: candidates (two draws each) made in parallel, at most
/// `max_candidates` a round, then kept in order while within ±2; the first n kept are the
/// sequential redraw loop's n values.
fn trunc_normal(n: usize, start: &SplitMix64, std: f64, max_candidates: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    let mut drawn = 0u64;
    while out.len() < n {
        let missing = n - out.len();
        // 95.4% of candidates are kept: a round usually finishes.
        let count = (missing + missing / 16 + 64).min(max_candidates);
        let z = in_pieces(count, &start.skipped(2 * drawn), 2, |r| r.normal());
        out.extend(z.into_iter().filter(|z| z.abs() <= 2.0).map(|z| (z * std) as f32).take(missing));
        drawn += count as u64;
    }
    out
}

/// FNV-1a of the key, mixed with the seed: each parameter's random draw depends only on its
/// name, so adding a layer does not change the others.
fn key_seed(seed: u64, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A zero-cost stand-in with the right shape (a broadcast scalar): used to list keys, and in
/// place of a missing or mis-shaped tensor while the loader collects every problem.
fn placeholder(shape: &[usize], dtype: DType) -> Tensor {
    let ones = vec![1usize; shape.len()];
    Tensor::zeros(&ones, dtype).broadcast_to(shape).expect("placeholder: broadcast of ones")
}

pub(crate) enum Source<'a> {
    Random { seed: u64 },
    Load(HashMap<&'a str, &'a Tensor>),
    Spec,
}

/// Collects the entries in construction order (= the official state-dict order).
pub(crate) struct Builder<'a> {
    source: Source<'a>,
    entries: Vec<(String, Entry)>,
    missing: Vec<(String, Vec<usize>)>,
    misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    wrong_dtype: Vec<(String, DType, DType)>,
    /// Every linear layer's packed-weight cache, so the model can empty them all.
    packed: Vec<PackedSlot>,
    /// Whether inference packs weights at all (one switch for the whole model).
    packing: Arc<AtomicBool>,
}

impl<'a> Builder<'a> {
    pub fn new(source: Source<'a>) -> Self {
        Builder {
            source,
            entries: Vec::new(),
            missing: Vec::new(),
            misshaped: Vec::new(),
            wrong_dtype: Vec::new(),
            packed: Vec::new(),
            packing: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A new, empty packed-weight cache for a linear layer, registered here.
    pub fn packed_slot(&mut self) -> PackedSlot {
        let slot = PackedSlot::default();
        self.packed.push(slot.clone());
        slot
    }

    /// The model-wide switch of those caches (on unless turned off).
    pub fn packing_switch(&self) -> Arc<AtomicBool> {
        self.packing.clone()
    }

    /// The caches handed out by [`Builder::packed_slot`].
    pub fn take_packed_slots(&mut self) -> Vec<PackedSlot> {
        std::mem::take(&mut self.packed)
    }

    /// Look up `key` in a loaded state dict and check it; on any problem, record it and return
    /// None (the caller then uses a placeholder so that construction goes on).
    fn lookup(&mut self, key: &str, shape: &[usize], dtype: DType) -> Option<Tensor> {
        let Source::Load(map) = &self.source else { return None };
        let Some(&t) = map.get(key) else {
            self.missing.push((key.to_string(), shape.to_vec()));
            return None;
        };
        if t.shape() != shape {
            self.misshaped.push((key.to_string(), shape.to_vec(), t.shape().to_vec()));
            return None;
        }
        // Floats of any width are accepted and widened (a half-precision export still loads).
        let ok = t.dtype() == dtype || (dtype.is_float() && t.dtype().is_float());
        if !ok {
            self.wrong_dtype.push((key.to_string(), dtype, t.dtype()));
            return None;
        }
        Some(if t.dtype() == dtype { t.clone() } else { t.to_dtype(dtype) })
    }

    /// A trainable f32 parameter named by its official state-dict key.
    pub fn param(&mut self, key: String, shape: &[usize], init: Init) -> Var {
        let t = match &self.source {
            Source::Random { seed } => init.sample(shape, key_seed(*seed, &key)),
            Source::Spec => placeholder(shape, DType::F32),
            Source::Load(_) => self.lookup(&key, shape, DType::F32).unwrap_or_else(|| placeholder(shape, DType::F32)),
        };
        let v = Var::param(t, key.clone());
        self.entries.push((key, Entry::Param(v.clone())));
        v
    }

    /// A fixed buffer; `make` computes its value when it is not loaded.
    pub fn buffer(&mut self, key: String, shape: &[usize], dtype: DType, make: impl FnOnce() -> Tensor) -> Tensor {
        let t = match &self.source {
            Source::Random { .. } => make(),
            Source::Spec => placeholder(shape, dtype),
            Source::Load(_) => self.lookup(&key, shape, dtype).unwrap_or_else(|| placeholder(shape, dtype)),
        };
        self.entries.push((key, Entry::Buffer(t.clone())));
        t
    }

    /// A buffer the model can recompute (`relative_position_index`): loaded and checked when
    /// present, computed by `make` when a loaded state dict lacks it.
    pub fn derived_buffer(
        &mut self,
        key: String,
        shape: &[usize],
        dtype: DType,
        make: impl FnOnce() -> Tensor,
    ) -> Tensor {
        let t = match &self.source {
            Source::Load(map) if !map.contains_key(key.as_str()) => make(),
            Source::Random { .. } => make(),
            Source::Spec => placeholder(shape, dtype),
            Source::Load(_) => self.lookup(&key, shape, dtype).unwrap_or_else(|| placeholder(shape, dtype)),
        };
        self.entries.push((key, Entry::Buffer(t.clone())));
        t
    }

    /// A buffer drawn like a parameter (the positional Gaussian matrix).
    pub fn random_buffer(&mut self, key: String, shape: &[usize], init: Init) -> Tensor {
        let seed = match &self.source {
            Source::Random { seed } => key_seed(*seed, &key),
            _ => 0,
        };
        self.buffer(key, shape, DType::F32, || init.sample(shape, seed))
    }

    pub fn is_spec(&self) -> bool {
        matches!(self.source, Source::Spec)
    }

    /// The entries, or one error listing every missing, unexpected, mis-shaped and mis-typed key.
    pub fn finish(self) -> Result<Vec<(String, Entry)>, ModelError> {
        let unexpected: Vec<String> = match &self.source {
            Source::Load(map) => {
                let known: HashSet<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
                let mut u: Vec<String> = map.keys().filter(|k| !known.contains(*k)).map(|k| k.to_string()).collect();
                u.sort();
                u
            }
            _ => Vec::new(),
        };
        if self.missing.is_empty() && self.misshaped.is_empty() && self.wrong_dtype.is_empty() && unexpected.is_empty()
        {
            return Ok(self.entries);
        }
        Err(ModelError::Keys {
            missing: self.missing,
            unexpected,
            misshaped: self.misshaped,
            wrong_dtype: self.wrong_dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel draw gives the sequential draw's values, bit for bit, for every kind of
    /// init, at sizes around the pieces' boundaries; the truncated normal also over several
    /// rounds of candidates (a round of 100, then of 1000).
    #[test]
    fn parallel_draws_are_the_sequential_draws() {
        let inits = [Init::Normal, Init::Uniform(0.3), Init::TruncNormal(0.02), Init::Const(1.5)];
        for (i, init) in inits.into_iter().enumerate() {
            for n in [0, 1, 5, PIECE - 1, PIECE, PIECE + 3, 3 * PIECE + 17] {
                let seed = 77 + i as u64 * 1000 + n as u64;
                let got = init.sample(&[n], seed).to_vec::<f32>().unwrap();
                let want = init.sample_in_order(n, seed);
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(got.len() == n && same, "{init:?}, {n} values");
            }
        }
        for (n, round) in [(1000, 100), (5000, 1000), (PIECE + 9, 700)] {
            let got = trunc_normal(n, &SplitMix64(9), 0.5, round);
            let want = Init::TruncNormal(0.5).sample_in_order(n, 9);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()) && got.len() == n, "{n}, {round}");
            assert!(got.iter().all(|v| v.abs() <= 1.0), "truncated at 2 std");
        }
    }
}
