//! The sampling rule: which record each draw of an epoch reads, as a pure function of
//! (seed, epoch), so a run is reproducible and can resume at any batch.
//!
//! With weights `w_i` and sizes `n_i`, an epoch draws `round(w_i * max_j n_j)` records from
//! source `i`: with all weights 1 every dataset contributes as many draws as the largest, the
//! small ones upsampled by repetition. A source is read in passes, each pass a fresh seeded
//! permutation of its records, so within a source every record is drawn `k` or `k + 1` times.
//! The draws of all sources are then shuffled together (seeded by (seed, epoch)) and cut into
//! batches by the loader. An explicit epoch size keeps the same proportions (`w_i`) and splits
//! the total by largest remainders, so the counts add up exactly.

/// One draw: a record of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    pub source: u32,
    pub record: u32,
}

/// Draws per source for one epoch (the same every epoch).
pub fn draws_per_source(sizes: &[usize], weights: &[f64], epoch_size: Option<usize>) -> Vec<usize> {
    let live = |i: usize| sizes[i] > 0 && weights[i] > 0.0;
    match epoch_size {
        None => {
            let largest = sizes.iter().copied().max().unwrap_or(0) as f64;
            (0..sizes.len()).map(|i| if live(i) { (weights[i] * largest).round() as usize } else { 0 }).collect()
        }
        Some(total) => {
            let sum: f64 = (0..sizes.len()).filter(|&i| live(i)).map(|i| weights[i]).sum();
            if sum <= 0.0 {
                return vec![0; sizes.len()];
            }
            let quota: Vec<f64> =
                (0..sizes.len()).map(|i| if live(i) { total as f64 * weights[i] / sum } else { 0.0 }).collect();
            let mut counts: Vec<usize> = quota.iter().map(|q| q.floor() as usize).collect();
            // Hand the rest out by largest fractional part, ties to the earlier source.
            let mut order: Vec<usize> = (0..sizes.len()).filter(|&i| live(i)).collect();
            order.sort_by(|&a, &b| {
                let (fa, fb) = (quota[a] - quota[a].floor(), quota[b] - quota[b].floor());
                fb.total_cmp(&fa).then(a.cmp(&b))
            });
            let rest = total.saturating_sub(counts.iter().sum());
            for &i in order.iter().cycle().take(rest) {
                counts[i] += 1;
            }
            counts
        }
    }
}

/// Every draw of `epoch`, in batch order.
pub fn epoch_draws(seed: u64, epoch: u64, sizes: &[usize], counts: &[usize]) -> Vec<Draw> {
    let mut draws = Vec::with_capacity(counts.iter().sum());
    for (s, (&n, &count)) in sizes.iter().zip(counts).enumerate() {
        let mut pass = 0u64;
        let mut left = count;
        while left > 0 && n > 0 {
            let mut order: Vec<u32> = (0..n as u32).collect();
            shuffle(&mut order, &mut Rng::new(&[seed, epoch, TAG_PASS, s as u64, pass]));
            let take = left.min(n);
            draws.extend(order[..take].iter().map(|&record| Draw { source: s as u32, record }));
            left -= take;
            pass += 1;
        }
    }
    shuffle(&mut draws, &mut Rng::new(&[seed, epoch, TAG_MIX]));
    draws
}

const TAG_PASS: u64 = 0x7061_7373; // "pass"
const TAG_MIX: u64 = 0x006d_6978; // "mix"

/// SplitMix64: tiny, fast and good enough to shuffle; seeded from a list of words so each
/// (seed, epoch, source, pass) gets an independent stream.
pub struct Rng(u64);

impl Rng {
    pub fn new(words: &[u64]) -> Rng {
        let mut state = 0x853c_49e6_748f_ea9b;
        for &w in words {
            state = splitmix(state ^ w);
        }
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }

    /// Uniform in `0..n` by the multiply-shift map (bias below n / 2^64, irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fisher-Yates.
pub fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_upsamples_to_the_largest() {
        // Largest is 10: weight 1 -> 10 draws, weight 0.5 -> 5, weight 0 or an empty source -> 0.
        assert_eq!(draws_per_source(&[10, 3, 7, 4, 0], &[1.0, 1.0, 0.5, 0.0, 1.0], None), vec![10, 10, 5, 0, 0]);
        // round(0.25 * 10) = round(2.5) = 3 (half away from zero).
        assert_eq!(draws_per_source(&[10, 2], &[1.0, 0.25], None), vec![10, 3]);
    }

    #[test]
    fn epoch_size_splits_by_largest_remainder() {
        // Quotas 10 * 1/3 = 3.33 each for weights 1, 1, 1: floors 3, 3, 3; the one left goes to the
        // first source (equal fractions, earlier wins).
        assert_eq!(draws_per_source(&[5, 1, 9], &[1.0, 1.0, 1.0], Some(10)), vec![4, 3, 3]);
        // Weights 1 and 3 of 7: quotas 1.75 and 5.25 -> floors 1, 5; the rest to the larger fraction.
        assert_eq!(draws_per_source(&[4, 4], &[1.0, 3.0], Some(7)), vec![2, 5]);
    }

    #[test]
    fn each_pass_is_a_permutation() {
        let draws = epoch_draws(7, 2, &[3], &[10]);
        let mut per_record = [0usize; 3];
        for d in &draws {
            per_record[d.record as usize] += 1;
        }
        per_record.sort();
        // 10 draws of 3 records: three full passes and one more record.
        assert_eq!(per_record, [3, 3, 4]);
    }

    #[test]
    fn shuffle_depends_on_seed_and_epoch_only() {
        let a = epoch_draws(1, 0, &[50, 20], &[50, 50]);
        assert_eq!(a, epoch_draws(1, 0, &[50, 20], &[50, 50]));
        assert_ne!(a, epoch_draws(1, 1, &[50, 20], &[50, 50]));
        assert_ne!(a, epoch_draws(2, 0, &[50, 20], &[50, 50]));
    }
}
