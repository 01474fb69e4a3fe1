//! The training loader: mixed-task batches from several datasets, reproducible and resumable.
//!
//! Which record each row of each batch reads is a pure function of (seed, epoch, step): see
//! [`plan`] for the sampling rule (small datasets upsampled to the largest, all draws shuffled
//! together). Decoding, cropping and augmenting run in parallel on rayon; the iterator keeps at
//! most `prefetch` batches in flight, so memory does not grow with the dataset. A record that
//! fails to load is replaced by the next loadable record of its source and reported once in
//! [`Loader::skipped`]; only a source with no loadable record at all is an error.

pub mod plan;

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::datasets::{BadRecord, Dataset};
use crate::error::{Error, Result};
use crate::preprocess::{INPUT_SIZE, MEAN, STD};
use crate::sample::{Batch, Record, Sample, Target};
use plan::Draw;
use tensor::Tensor;

pub use crate::augment::AugmentConfig;

/// One dataset split and its sampling weight (1 = as many draws per epoch as the largest source).
#[derive(Clone, Debug)]
pub struct Source {
    pub dataset: Dataset,
    pub weight: f64,
}

/// Where a run is: `step` batches of `epoch` are done. Saved in checkpoints to resume.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Position {
    pub epoch: u64,
    /// Batches done in this epoch.
    pub step: u64,
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Batches decoded ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Draws per epoch; `None` follows the sampling rule (see [`plan`]).
    pub epoch_size: Option<usize>,
}

impl LoaderConfig {
    /// The paper's augmentation, two batches of prefetch, the rule's epoch size.
    pub fn new(batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig { batch_size, seed, augment: AugmentConfig::default(), prefetch: 2, epoch_size: None }
    }
}

pub struct Loader {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Vec<Source>,
    cfg: LoaderConfig,
    /// Draws per source per epoch.
    counts: Vec<usize>,
    steps: usize,
    /// The draws of the last epochs asked for (two: prefetch straddles an epoch boundary).
    plans: Mutex<VecDeque<(u64, Arc<Vec<Draw>>)>>,
    bad: Mutex<BTreeMap<(u32, u32), BadRecord>>,
    loads: AtomicU64,
}

impl Loader {
    pub fn new(sources: Vec<Source>, cfg: LoaderConfig) -> Result<Loader> {
        if cfg.batch_size == 0 {
            return Err(Error::Invalid("loader: batch size 0".into()));
        }
        for s in &sources {
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                return Err(Error::Invalid(format!(
                    "loader: source {} ({}) has weight {} (expected a finite number >= 0)",
                    s.dataset.name, s.dataset.split, s.weight
                )));
            }
            if s.dataset.records.len() > u32::MAX as usize {
                return Err(Error::Invalid(format!("loader: source {} has too many records", s.dataset.name)));
            }
        }
        if sources.iter().all(|s| s.dataset.records.is_empty()) {
            let names: Vec<String> =
                sources.iter().map(|s| format!("{} ({})", s.dataset.name, s.dataset.split)).collect();
            return Err(Error::Invalid(format!("loader: every source is empty: [{}]", names.join(", "))));
        }
        let sizes: Vec<usize> = sources.iter().map(|s| s.dataset.records.len()).collect();
        let weights: Vec<f64> = sources.iter().map(|s| s.weight).collect();
        let counts = plan::draws_per_source(&sizes, &weights, cfg.epoch_size);
        let total: usize = counts.iter().sum();
        let steps = total / cfg.batch_size;
        if steps == 0 {
            return Err(Error::Invalid(format!(
                "loader: an epoch of {total} draws (per source {counts:?}) holds no batch of {}",
                cfg.batch_size
            )));
        }
        Ok(Loader {
            inner: Arc::new(Inner {
                sources,
                cfg,
                counts,
                steps,
                plans: Mutex::new(VecDeque::new()),
                bad: Mutex::new(BTreeMap::new()),
                loads: AtomicU64::new(0),
            }),
        })
    }

    /// Full batches per epoch (the incomplete last one is dropped).
    pub fn steps_per_epoch(&self) -> usize {
        self.inner.steps
    }

    /// Draws per source per epoch, in the order of the sources.
    pub fn draws_per_source(&self) -> &[usize] {
        &self.inner.counts
    }

    /// The position after the batch at `pos` (where to resume once it is trained on).
    pub fn next_position(&self, pos: &Position) -> Position {
        self.inner.normalize(Position { epoch: pos.epoch, step: pos.step + 1 })
    }

    /// The batch at `pos`, decoded on the current rayon pool.
    pub fn batch_at(&self, pos: &Position) -> Result<Batch> {
        self.inner.batch(pos, None)
    }

    /// Batches from `start` on, forever (epochs roll over), each with its position, made ahead
    /// by a producer thread (see [`Batches`]). Dropping the iterator stops and joins it.
    pub fn iter_from(&self, start: Position) -> Batches {
        Batches::start(self.inner.clone(), start)
    }

    /// Records that failed to load, each once, in source then record order.
    pub fn skipped(&self) -> Vec<BadRecord> {
        self.inner.bad.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Records decoded so far (every attempt, bad ones included): for benchmarks and tests.
    pub fn samples_loaded(&self) -> u64 {
        self.inner.loads.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn normalize(&self, pos: Position) -> Position {
        let steps = self.steps as u64;
        Position { epoch: pos.epoch + pos.step / steps, step: pos.step % steps }
    }

    fn plan(&self, epoch: u64) -> Arc<Vec<Draw>> {
        let lock = || self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, draws)) = lock().iter().find(|(e, _)| *e == epoch) {
            return draws.clone();
        }
        let sizes: Vec<usize> = self.sources.iter().map(|s| s.dataset.records.len()).collect();
        let draws = Arc::new(plan::epoch_draws(self.cfg.seed, epoch, &sizes, &self.counts));
        let mut plans = lock();
        if !plans.iter().any(|(e, _)| *e == epoch) {
            plans.push_back((epoch, draws.clone()));
            if plans.len() > 2 {
                plans.pop_front();
            }
        }
        draws
    }

    fn batch(&self, pos: &Position, cancel: Option<&AtomicBool>) -> Result<Batch> {
        if pos.step >= self.steps as u64 {
            return Err(Error::Invalid(format!(
                "loader: step {} of epoch {} is past the epoch's {} batches",
                pos.step, pos.epoch, self.steps
            )));
        }
        let draws = self.plan(pos.epoch);
        let bs = self.cfg.batch_size;
        let start = pos.step as usize * bs;
        // Each row is decoded, augmented and normalised by one task straight into its slice of
        // the batch: no per-sample tensors, no sequential copy after the parallel part.
        let mut input = vec![0f32; bs * ROW];
        let rows = input
            .par_chunks_mut(ROW)
            .enumerate()
            .map(|(row, out)| {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(Error::Invalid("loader: stopped".into()));
                }
                let i = start + row;
                let sample = self.load(draws[i])?;
                let sample = crate::augment::augment(&sample, &self.cfg.augment, self.cfg.seed, pos.epoch, i as u64);
                normalize_into(&sample, out)?;
                Ok((sample.target, sample.source))
            })
            .collect::<Result<Vec<(Target, String)>>>()?;
        let (targets, sources) = rows.into_iter().unzip();
        Ok(Batch { input: Tensor::from_vec(input, &[bs, 3, INPUT_SIZE, INPUT_SIZE])?, targets, sources })
    }

    /// Load a draw's record, or the next loadable record of its source.
    fn load(&self, draw: Draw) -> Result<Sample> {
        let dataset = &self.sources[draw.source as usize].dataset;
        let n = dataset.records.len();
        for k in 0..n {
            let r = ((draw.record as usize + k) % n) as u32;
            if self.is_bad(draw.source, r) {
                continue;
            }
            self.loads.fetch_add(1, Ordering::Relaxed);
            let record = &dataset.records[r as usize];
            match load_record(record) {
                Ok(sample) => return Ok(sample),
                Err(e) => {
                    let bad = BadRecord { source: record.source.clone(), reason: e.to_string() };
                    self.bad.lock().unwrap_or_else(|e| e.into_inner()).entry((draw.source, r)).or_insert(bad);
                }
            }
        }
        let first = self.bad.lock().unwrap_or_else(|e| e.into_inner()).get(&(draw.source, 0)).cloned();
        let example = first.map(|b| format!("; the first: {}: {}", b.source, b.reason)).unwrap_or_default();
        Err(Error::Invalid(format!(
            "loader: none of the {n} records of {} ({}) loads{example}",
            dataset.name, dataset.split
        )))
    }

    fn is_bad(&self, source: u32, record: u32) -> bool {
        self.bad.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&(source, record))
    }
}

/// [`Record::load`], with a panic (a reader or decoder bug on one odd file) turned into an error
/// naming the record, so that one record cannot take a training run down.
pub fn load_record(record: &Record) -> Result<Sample> {
    std::panic::catch_unwind(AssertUnwindSafe(|| record.load())).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Error::Invalid(format!("{}: loading panicked: {msg}", record.source)))
    })
}

/// Floats in one row of a batch.
const ROW: usize = 3 * INPUT_SIZE * INPUT_SIZE;

/// `preprocess::to_normalized_tensor` into a slice: the same arithmetic, so the same bits (tested).
fn normalize_into(sample: &Sample, out: &mut [f32]) -> Result<()> {
    let img = &sample.image;
    if (img.width() as usize, img.height() as usize) != (INPUT_SIZE, INPUT_SIZE) {
        return Err(Error::Invalid(format!(
            "loader: {}: a {}x{} sample (expected {INPUT_SIZE}x{INPUT_SIZE})",
            sample.source,
            img.width(),
            img.height()
        )));
    }
    let plane = INPUT_SIZE * INPUT_SIZE;
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px.0[c] as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Ok(())
}

/// The prefetching iterator of [`Loader::iter_from`].
///
/// One producer thread makes the batches in order, each decoded in parallel on rayon, and hands
/// them over a channel of `prefetch - 1` places: it is at most `prefetch` batches ahead of the
/// consumer (the queued ones and the one it is making). One batch at a time keeps them in order:
/// with one rayon task per batch, a worker waiting inside the oldest batch would steal and run
/// younger ones, and the consumer would wait behind them.
pub struct Batches {
    rx: Option<mpsc::Receiver<(Position, Result<Batch>)>>,
    cancel: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Batches {
    fn start(inner: Arc<Inner>, start: Position) -> Batches {
        let (tx, rx) = mpsc::sync_channel(inner.cfg.prefetch.max(1) - 1);
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let worker = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                let mut pos = inner.normalize(start);
                while !stop.load(Ordering::Relaxed) {
                    // A panic outside a record's load (a bug) is this batch's error, not the end.
                    let batch = std::panic::catch_unwind(AssertUnwindSafe(|| inner.batch(&pos, Some(&stop))))
                        .unwrap_or_else(|_| Err(Error::Invalid(format!("loader: the batch at {pos:?} panicked"))));
                    let next = inner.normalize(Position { epoch: pos.epoch, step: pos.step + 1 });
                    if tx.send((pos, batch)).is_err() {
                        break;
                    }
                    pos = next;
                }
            })
            .ok();
        Batches { rx: Some(rx), cancel, worker }
    }
}

impl Iterator for Batches {
    type Item = (Position, Result<Batch>);

    /// Blocks until the next batch is made; `None` only if the producer thread could not start.
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // The producer checks the flag before each sample, and its send fails once the receiver
        // is gone; joining it means no load happens after the drop.
        self.cancel.store(true, Ordering::Relaxed);
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
