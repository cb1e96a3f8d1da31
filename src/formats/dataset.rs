//! Where datasets come from: a directory of `train.csv`/`test.csv` (as `mnist parse` writes
//! them), the IDX files found under a directory, or the sample built into the binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::formats::classes::{self, Classes, Names, Place};
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

/// The files [`load`] reads from `dir`, the `classes.txt` naming the classes last if there is
/// one.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
    let mut files = if train_csv.is_file() && test_csv.is_file() {
        vec![train_csv, test_csv]
    } else {
        let files = IdxSet::find(dir)?;
        vec![
            files.train_images,
            files.train_labels,
            files.test_images,
            files.test_labels,
        ]
    };
    files.extend(classes::file_of(dir, &files[1]));
    Ok(files)
}

/// Loads `dir`: `train.csv` and `test.csv` if both are there, else the four IDX files found
/// anywhere under it. The classes are named by `names` (the config's), else by a
/// `classes.txt` beside the data, else numbered up to the largest label.
pub fn load(dir: &Path, names: Option<Names>) -> Result<Splits> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", dir.display());
    }
    let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
    let (train, test, files, place) = if train_csv.is_file() && test_csv.is_file() {
        let started = Instant::now();
        let train = pixels_csv::read_labelled(&train_csv, LabelColumn::First)?;
        let test = pixels_csv::read_labelled(&test_csv, LabelColumn::First)?;
        let seconds = started.elapsed().as_secs_f64();
        let megabytes = (file_len(&train_csv) + file_len(&test_csv)) as f64 / 1e6;
        eprintln!(
            "loaded {} images from {}: {megabytes:.1} MB of CSV in {seconds:.2}s, {:.0} MB/s",
            train.len() + test.len(),
            dir.display(),
            megabytes / seconds.max(1e-9)
        );
        (train, test, [train_csv, test_csv], Place::Line)
    } else {
        let files = IdxSet::find(dir)?;
        let train = idx::read_files(&files.train_images, &files.train_labels)?;
        let test = idx::read_files(&files.test_images, &files.test_labels)?;
        (
            train,
            test,
            [files.train_labels, files.test_labels],
            Place::Record,
        )
    };
    let names = classes::chosen(names, Names::of_data(dir, &files[0])?)?;
    let classes = classes::of_labels(
        &[
            (&train.labels, &files[0], place),
            (&test.labels, &files[1], place),
        ],
        names,
    )?;
    let splits = Splits {
        source: dir.display().to_string(),
        train,
        test,
        classes,
    };
    splits.check_shapes()?;
    Ok(splits)
}

/// Only the test part of `dir`: `test.csv`, else the `t10k` IDX files (for `mnist stats`,
/// which needs no training data); every label one of `classes`, and the classes named as
/// `classes` names them where the data names them.
pub fn load_test(dir: &Path, classes: &Classes) -> Result<Labelled> {
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
    let test_csv = dir.join("test.csv");
    let (test, path, place) = if test_csv.is_file() {
        let test = pixels_csv::read_labelled(&test_csv, LabelColumn::First)?;
        (test, test_csv, Place::Line)
    } else {
        let files = IdxSet::find(dir)?;
        let test = idx::read_files(&files.test_images, &files.test_labels)?;
        (test, files.test_labels, Place::Record)
    };
    classes::check_same(Names::of_data(dir, &path)?.as_ref(), classes)?;
    classes::check_labels(&test.labels, &path, place, classes, "of the model")?;
    Ok(test)
}

/// The sample built into the binary, its classes named by `names` if given.
pub fn bundled_sample(names: Option<Names>) -> Result<Splits> {
    let open = |name: &str| PathBuf::from(sample::DIR).join(name);
    let pair = |images: (&str, &'static [u8]), labels: (&str, &'static [u8])| {
        idx::read_labelled(
            IdxReader::images_from_bytes(&open(images.0), images.1)?,
            IdxReader::labels_from_bytes(&open(labels.0), labels.1)?,
        )
    };
    let train = pair(
        ("train-images-idx3-ubyte.gz", sample::TRAIN_IMAGES),
        ("train-labels-idx1-ubyte.gz", sample::TRAIN_LABELS),
    )
    .context("reading the built-in sample")?;
    let test = pair(
        ("t10k-images-idx3-ubyte.gz", sample::TEST_IMAGES),
        ("t10k-labels-idx1-ubyte.gz", sample::TEST_LABELS),
    )
    .context("reading the built-in sample")?;
    let classes = classes::of_labels(
        &[
            (
                &train.labels,
                &open("train-labels-idx1-ubyte.gz"),
                Place::Record,
            ),
            (
                &test.labels,
                &open("t10k-labels-idx1-ubyte.gz"),
                Place::Record,
            ),
        ],
        names,
    )?;
    Ok(Splits {
        source: format!("{} (built in)", sample::DIR),
        train,
        test,
        classes,
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
