//! Where datasets come from: a directory of `train.csv`/`test.csv` (as `mnist parse` writes
//! them), the IDX files found under a directory, or the sample built into the binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::formats::data::{Labelled, Splits};
use crate::formats::idx::{self, IdxReader, IdxSet};
use crate::formats::pixels_csv::{self, LabelColumn};

/// The 5,000-image MNIST sample in `data/mnist-sample`, built into the binary so that a first
/// run needs neither network nor files.
pub(crate) mod sample {
    pub const DIR: &str = "data/mnist-sample";
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../../data/mnist-sample/train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../../data/mnist-sample/train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] =
        include_bytes!("../../data/mnist-sample/t10k-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] =
        include_bytes!("../../data/mnist-sample/t10k-labels-idx1-ubyte.gz");
    /// Every file, by name.
    pub const FILES: [(&str, &[u8]); 4] = [
        ("train-images-idx3-ubyte.gz", TRAIN_IMAGES),
        ("train-labels-idx1-ubyte.gz", TRAIN_LABELS),
        ("t10k-images-idx3-ubyte.gz", TEST_IMAGES),
        ("t10k-labels-idx1-ubyte.gz", TEST_LABELS),
    ];
}

/// The files [`load`] reads from `dir`.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
    if train_csv.is_file() && test_csv.is_file() {
        return Ok(vec![train_csv, test_csv]);
    }
    let files = IdxSet::find(dir)?;
    Ok(vec![
        files.train_images,
        files.train_labels,
        files.test_images,
        files.test_labels,
    ])
}

/// Loads `dir`: `train.csv` and `test.csv` if both are there, else the four IDX files found
/// anywhere under it.
pub fn load(dir: &Path) -> Result<Splits> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", dir.display());
    }
    let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
    let splits = if train_csv.is_file() && test_csv.is_file() {
        let started = Instant::now();
        let splits = Splits {
            source: dir.display().to_string(),
            train: pixels_csv::read_labelled(&train_csv, LabelColumn::First)?,
            test: pixels_csv::read_labelled(&test_csv, LabelColumn::First)?,
        };
        let seconds = started.elapsed().as_secs_f64();
        let megabytes = (file_len(&train_csv) + file_len(&test_csv)) as f64 / 1e6;
        eprintln!(
            "loaded {} images from {}: {megabytes:.1} MB of CSV in {seconds:.2}s, {:.0} MB/s",
            splits.train.len() + splits.test.len(),
            splits.source,
            megabytes / seconds.max(1e-9)
        );
        splits
    } else {
        let files = IdxSet::find(dir)?;
        Splits {
            source: dir.display().to_string(),
            train: idx::read_labelled(
                IdxReader::images(&files.train_images)?,
                IdxReader::labels(&files.train_labels)?,
            )?,
            test: idx::read_labelled(
                IdxReader::images(&files.test_images)?,
                IdxReader::labels(&files.test_labels)?,
            )?,
        }
    };
    splits.check_shapes()?;
    Ok(splits)
}

/// Only the test part of `dir`: `test.csv`, else the `t10k` IDX files (for `mnist stats`,
/// which needs no training data).
pub fn load_test(dir: &Path) -> Result<Labelled> {
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
    let test_csv = dir.join("test.csv");
    if test_csv.is_file() {
        return Ok(pixels_csv::read_labelled(&test_csv, LabelColumn::First)?);
    }
    let files = IdxSet::find(dir)?;
    Ok(idx::read_labelled(
        IdxReader::images(&files.test_images)?,
        IdxReader::labels(&files.test_labels)?,
    )?)
}

/// The sample built into the binary.
pub fn bundled_sample() -> Result<Splits> {
    let open = |name: &str| PathBuf::from(sample::DIR).join(name);
    let pair = |images: (&str, &'static [u8]), labels: (&str, &'static [u8])| {
        idx::read_labelled(
            IdxReader::images_from_bytes(&open(images.0), images.1)?,
            IdxReader::labels_from_bytes(&open(labels.0), labels.1)?,
        )
    };
    Ok(Splits {
        source: format!("{} (built in)", sample::DIR),
        train: pair(
            ("train-images-idx3-ubyte.gz", sample::TRAIN_IMAGES),
            ("train-labels-idx1-ubyte.gz", sample::TRAIN_LABELS),
        )
        .context("reading the built-in sample")?,
        test: pair(
            ("t10k-images-idx3-ubyte.gz", sample::TEST_IMAGES),
            ("t10k-labels-idx1-ubyte.gz", sample::TEST_LABELS),
        )
        .context("reading the built-in sample")?,
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
