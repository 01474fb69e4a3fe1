//! The loader on in-memory records (no reader involved): determinism, resuming, the upsampling
//! rule's counts, mixed-task batches, bad records replaced and reported, bounded prefetch and
//! workers that stop with the iterator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use data::loader::{AugmentConfig, Loader, LoaderConfig, Position, Source};
use data::preprocess::image::{GrayImage, Luma, Rgb, RgbImage};
use data::{Batch, CropFrom, Dataset, ImageSource, Label, MaskSource, Record, Task};

/// A 32x32 gradient that differs per source and record, so rows can be told apart by pixels.
fn image(source: u8, index: usize) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(32, 32, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8 ^ index as u8, source * 60])))
}

/// Records named `<name>:<i>` with in-memory images, whole-image crops.
fn dataset(name: &'static str, source: u8, n: usize, label: impl Fn(usize) -> Label) -> Dataset {
    let records = (0..n)
        .map(|i| Record {
            dataset: name,
            image: ImageSource::Memory(image(source, i)),
            source: format!("{name}:{i}"),
            crop: CropFrom::WholeImage,
            label: label(i),
            raw: serde_json::json!({ "index": i }),
        })
        .collect();
    Dataset { name, split: "train".into(), records, bad: vec![] }
}

fn attributes(n: usize) -> Dataset {
    dataset("attr", 0, n, |i| Label::Attributes { values: [(i % 2) as u8; 40] })
}

fn ages(n: usize) -> Dataset {
    dataset("age", 1, n, |i| Label::AgeGenderRace { age_bin: (i % 8) as u8, gender: 0, race: 1 })
}

fn parsing(n: usize) -> Dataset {
    dataset("parse", 2, n, |i| {
        Label::Parsing(MaskSource::Memory(Arc::new(GrayImage::from_pixel(16, 16, Luma([(i % 11) as u8])))))
    })
}

fn config(batch_size: usize, seed: u64) -> LoaderConfig {
    LoaderConfig { batch_size, seed, augment: AugmentConfig::none(), prefetch: 2, epoch_size: None }
}

/// Sizes 10, 3, 7 with weights 1, 1, 0.5: the rule draws 10, 10 and 5 per epoch (25 = 5 batches of 5).
fn three_sources(seed: u64) -> Loader {
    let sources = vec![
        Source { dataset: attributes(10), weight: 1.0 },
        Source { dataset: ages(3), weight: 1.0 },
        Source { dataset: parsing(7), weight: 0.5 },
    ];
    Loader::new(sources, config(5, seed)).unwrap()
}

fn bits(batch: &Batch) -> Vec<u32> {
    batch.input.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("data-loader-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn same_seed_gives_bit_identical_batches() {
    let (a, b, c) = (three_sources(11), three_sources(11), three_sources(12));
    assert_eq!(a.steps_per_epoch(), 5);
    let mut differs = false;
    for epoch in 0..2 {
        for step in 0..5 {
            let pos = Position { epoch, step };
            let (x, y, z) = (a.batch_at(&pos).unwrap(), b.batch_at(&pos).unwrap(), c.batch_at(&pos).unwrap());
            assert_eq!(x.input.shape(), &[5, 3, 224, 224]);
            assert_eq!(x.sources, y.sources);
            assert_eq!(x.targets, y.targets);
            assert_eq!(bits(&x), bits(&y), "{pos:?}");
            differs |= x.sources != z.sources;
        }
    }
    assert!(differs, "another seed must give another order");
}

#[test]
fn resuming_mid_epoch_gives_the_batches_of_a_full_run() {
    let loader = three_sources(3);
    // From the start: 5 batches of epoch 0, then epoch 1 steps 0..=3.
    let from_start: Vec<_> = loader.iter_from(Position::default()).take(9).collect();
    let positions: Vec<Position> = from_start.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(positions[4], Position { epoch: 0, step: 4 });
    assert_eq!(positions[5], Position { epoch: 1, step: 0 });
    assert_eq!(loader.next_position(&positions[4]), positions[5]);
    let (pos, expected) = &from_start[8];
    assert_eq!(*pos, Position { epoch: 1, step: 3 });
    let expected = expected.as_ref().unwrap();

    let resumed = three_sources(3);
    let (pos, batch) = resumed.iter_from(Position { epoch: 1, step: 3 }).next().unwrap();
    assert_eq!(pos, Position { epoch: 1, step: 3 });
    let batch = batch.unwrap();
    assert_eq!(batch.sources, expected.sources);
    assert_eq!(bits(&batch), bits(expected));
    assert_eq!(bits(&resumed.batch_at(&pos).unwrap()), bits(expected));
    // A step past the end rolls over: (0, 7) is (1, 2).
    let (pos, _) = resumed.iter_from(Position { epoch: 0, step: 7 }).next().unwrap();
    assert_eq!(pos, Position { epoch: 1, step: 2 });
}

#[test]
fn draws_per_epoch_follow_the_upsampling_rule() {
    let loader = three_sources(5);
    assert_eq!(loader.draws_per_source(), &[10, 10, 5]);
    for epoch in 0..3 {
        let mut per_record: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_task: BTreeMap<Task, usize> = BTreeMap::new();
        for step in 0..5 {
            let batch = loader.batch_at(&Position { epoch, step }).unwrap();
            for (src, task) in batch.sources.iter().zip(batch.tasks()) {
                *per_record.entry(src.clone()).or_default() += 1;
                *per_task.entry(task).or_default() += 1;
            }
        }
        let count = |prefix: &str| -> Vec<usize> {
            let mut v: Vec<usize> = per_record.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, &c)| c).collect();
            v.sort();
            v
        };
        // attr: one pass of 10; age: 10 draws of 3 records = three passes and one more; parse: 5 of 7.
        assert_eq!(count("attr:"), vec![1; 10]);
        assert_eq!(count("age:"), vec![3, 3, 4]);
        assert_eq!(count("parse:"), vec![1; 5]);
        assert_eq!(per_task[&Task::Attributes], 10);
        assert_eq!(per_task[&Task::AgeGenderRace], 10);
        assert_eq!(per_task[&Task::Parsing], 5);
    }
}

#[test]
fn epoch_size_overrides_the_total() {
    let sources = vec![Source { dataset: attributes(10), weight: 1.0 }, Source { dataset: ages(3), weight: 3.0 }];
    let cfg = LoaderConfig { epoch_size: Some(8), ..config(4, 0) };
    let loader = Loader::new(sources, cfg).unwrap();
    // Quotas 8 * 1/4 = 2 and 8 * 3/4 = 6.
    assert_eq!(loader.draws_per_source(), &[2, 6]);
    assert_eq!(loader.steps_per_epoch(), 2);
}

#[test]
fn batches_mix_tasks() {
    let loader = three_sources(9);
    let mixed = (0..5)
        .filter(|&step| {
            let tasks: BTreeSet<Task> =
                loader.batch_at(&Position { epoch: 0, step }).unwrap().tasks().into_iter().collect();
            tasks.len() > 1
        })
        .count();
    assert!(mixed >= 3, "only {mixed} of 5 batches mix tasks");
}

#[test]
fn a_bad_record_is_replaced_by_the_next_and_reported_once() {
    let dir = tempdir("bad");
    // A truncated PNG: the header is there, the pixels are not.
    let mut png = Vec::new();
    image(0, 0).write_to(&mut std::io::Cursor::new(&mut png), data::preprocess::image::ImageFormat::Png).unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let mut ds = attributes(4);
    ds.records[1].image = ImageSource::File(truncated.clone());
    ds.records[1].source = "attr.txt:2".into();
    let loader = Loader::new(vec![Source { dataset: ds, weight: 1.0 }], config(2, 1)).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for epoch in 0..2 {
        for step in 0..2 {
            for s in loader.batch_at(&Position { epoch, step }).unwrap().sources {
                *seen.entry(s).or_default() += 1;
            }
        }
    }
    // Two epochs of one pass each: record 1's draws went to record 2.
    let expected: BTreeMap<String, usize> =
        [("attr:0", 2), ("attr:2", 4), ("attr:3", 2)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(seen, expected);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].source, "attr.txt:2");
    assert!(skipped[0].reason.contains("truncated.png"), "{}", skipped[0].reason);
}

#[test]
fn a_source_with_no_loadable_record_is_an_error_naming_it() {
    let mut ds = ages(2);
    for r in &mut ds.records {
        r.image = ImageSource::File(PathBuf::from("/nonexistent/face.jpg"));
    }
    let loader = Loader::new(vec![Source { dataset: ds, weight: 1.0 }], config(1, 0)).unwrap();
    let err = loader.batch_at(&Position::default()).unwrap_err().to_string();
    assert!(err.contains("age") && err.contains("none of the 2 records"), "{err}");
    assert_eq!(loader.skipped().len(), 2);
}

#[test]
fn bad_configs_are_refused() {
    let err = |sources: Vec<Source>, cfg: LoaderConfig| Loader::new(sources, cfg).err().unwrap().to_string();
    assert!(err(vec![Source { dataset: ages(3), weight: 1.0 }], config(0, 0)).contains("batch size 0"));
    assert!(err(vec![Source { dataset: ages(3), weight: -1.0 }], config(1, 0)).contains("weight -1"));
    assert!(err(vec![Source { dataset: ages(3), weight: f64::NAN }], config(1, 0)).contains("weight NaN"));
    assert!(err(vec![Source { dataset: ages(0), weight: 1.0 }], config(1, 0)).contains("every source is empty"));
    assert!(err(vec![Source { dataset: ages(3), weight: 1.0 }], config(4, 0)).contains("no batch of 4"));
}

#[test]
fn prefetch_is_bounded() {
    let sources = vec![Source { dataset: attributes(200), weight: 1.0 }];
    let (bs, prefetch, k) = (4, 3, 3);
    let loader = Loader::new(sources, LoaderConfig { prefetch, ..config(bs, 0) }).unwrap();
    let mut it = loader.iter_from(Position::default());
    for _ in 0..k {
        it.next().unwrap().1.unwrap();
    }
    // The producer runs ahead until it has `prefetch` batches made and unclaimed, then waits:
    // exactly (k + prefetch) batches loaded, never the 200 records.
    let settled = settle(&loader);
    assert_eq!(settled, (k + prefetch) * bs);
    drop(it);
    assert_eq!(loader.samples_loaded() as usize, settled);
}

/// The load count once it stops moving (fails after 10 s).
fn settle(loader: &Loader) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = loader.samples_loaded();
        std::thread::sleep(Duration::from_millis(300));
        if loader.samples_loaded() == n {
            return n as usize;
        }
        assert!(std::time::Instant::now() < deadline, "the loader is still loading after 10 s");
    }
}

#[test]
fn dropping_the_iterator_stops_the_workers() {
    // A batch much larger than the thread count: dropped right after the first batch, the
    // producer is early in the second one and must stop there, not finish it.
    let threads = rayon::current_num_threads();
    let bs = 4 * threads + 16;
    let sources = vec![Source { dataset: parsing(4 * bs), weight: 1.0 }];
    let loader = Loader::new(sources, LoaderConfig { prefetch: 1, ..config(bs, 0) }).unwrap();
    let mut it = loader.iter_from(Position::default());
    it.next().unwrap().1.unwrap();
    // Drop on another thread, so that a hang fails the test instead of stalling it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(it);
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(Duration::from_secs(10)).expect("dropping the iterator hung");
    // The drop joined the producer: nothing loads afterwards.
    let after_drop = loader.samples_loaded() as usize;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(loader.samples_loaded() as usize, after_drop);
    assert!(after_drop < 2 * bs, "{after_drop} samples loaded (batch {bs}): the second batch was finished");
}

#[test]
fn each_row_is_augmented_with_the_seed_epoch_and_draw_index() {
    let sources = vec![Source { dataset: attributes(6), weight: 1.0 }, Source { dataset: ages(4), weight: 1.0 }];
    let cfg = LoaderConfig { augment: AugmentConfig::default(), ..config(3, 21) };
    let loader = Loader::new(sources, cfg.clone()).unwrap();
    let (attr, age) = (attributes(6), ages(4));
    let pos = Position { epoch: 2, step: 1 };
    let batch = loader.batch_at(&pos).unwrap();
    let rows = batch.input.to_f32_vec().unwrap();
    let mut changed = 0;
    for (row, src) in batch.sources.iter().enumerate() {
        let (name, index) = src.split_once(':').unwrap();
        let ds = if name == "attr" { &attr } else { &age };
        let plain = ds.records[index.parse::<usize>().unwrap()].load().unwrap();
        // Draw index = step * batch_size + row.
        let expected = data::augment::augment(&plain, &cfg.augment, 21, 2, 3 + row as u64);
        let want = data::preprocess::to_normalized_tensor(&expected.image).unwrap().to_f32_vec().unwrap();
        let got = &rows[row * want.len()..(row + 1) * want.len()];
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "row {row} ({src})");
        assert_eq!(batch.targets[row], expected.target);
        changed += (expected.image != plain.image) as usize;
    }
    assert!(changed > 0, "the paper's recipe left every row unchanged");
}

#[test]
fn a_record_whose_load_panics_is_a_bad_record() {
    // A 0x0 mask makes the crop mapping index out of bounds: a panic inside Record::load.
    let mut ds = parsing(3);
    ds.records[0].label = Label::Parsing(MaskSource::Memory(Arc::new(GrayImage::new(0, 0))));
    let loader = Loader::new(vec![Source { dataset: ds, weight: 1.0 }], config(3, 4)).unwrap();
    let (_, batch) = loader.iter_from(Position::default()).next().unwrap();
    let mut sources = batch.unwrap().sources;
    sources.sort();
    // Record 0's draw went to record 1.
    assert_eq!(sources, ["parse:1", "parse:1", "parse:2"]);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].source, "parse:0");
    assert!(skipped[0].reason.contains("parse:0: loading panicked"), "{}", skipped[0].reason);
}
