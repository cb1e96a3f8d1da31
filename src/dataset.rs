//! In-memory datasets: images as row-major bytes, labels as class indices, and where they came
//! from (a directory of `train.csv`/`test.csv`, the IDX files, or the sample built into the
//! binary).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use model::InputShape;

use crate::idx::{self, IdxError, IdxReader, IdxSet};
use crate::pixels_csv::{self, LabelColumn};

/// MNIST-style datasets have ten classes, labelled 0..9.
pub const CLASSES: usize = 10;

/// Images of one shape, pixels 0..255 row-major, image after image.
#[derive(Debug, Clone)]
pub struct Images {
    pub shape: InputShape,
    pub count: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    pub fn image(&self, index: usize) -> &[u8] {
        let len = self.shape.pixels();
        &self.pixels[index * len..(index + 1) * len]
    }
}

/// Images with one label each.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Labelled {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * self.images.shape.pixels());
        for &i in indices {
            pixels.extend_from_slice(self.images.image(i));
        }
        Self {
            images: Images {
                shape: self.images.shape,
                count: indices.len(),
                pixels,
            },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// A dataset's training and test parts.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Where the data came from, for logs and provenance.
    pub source: String,
    pub train: Labelled,
    pub test: Labelled,
}

/// The 5,000-image MNIST sample in `data/mnist-sample`, built into the binary so that a first
/// run needs neither network nor files.
pub(crate) mod sample {
    pub const DIR: &str = "data/mnist-sample";
    pub const TRAIN_IMAGES: &[u8] =
        include_bytes!("../data/mnist-sample/train-images-idx3-ubyte.gz");
    pub const TRAIN_LABELS: &[u8] =
        include_bytes!("../data/mnist-sample/train-labels-idx1-ubyte.gz");
    pub const TEST_IMAGES: &[u8] = include_bytes!("../data/mnist-sample/t10k-images-idx3-ubyte.gz");
    pub const TEST_LABELS: &[u8] = include_bytes!("../data/mnist-sample/t10k-labels-idx1-ubyte.gz");
}

impl Splits {
    /// Loads `dir`: `train.csv` and `test.csv` if both are there (as `mnist parse` writes
    /// them), else the four IDX files found anywhere under it.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            anyhow::bail!("{}: not a directory", dir.display());
        }
        let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
        let splits = if train_csv.is_file() && test_csv.is_file() {
            let started = Instant::now();
            let splits = Self {
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
            Self {
                source: dir.display().to_string(),
                train: read_idx_pair(
                    IdxReader::images(&files.train_images)?,
                    IdxReader::labels(&files.train_labels)?,
                )?,
                test: read_idx_pair(
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
        Ok(read_idx_pair(
            IdxReader::images(&files.test_images)?,
            IdxReader::labels(&files.test_labels)?,
        )?)
    }

    /// The sample built into the binary.
    pub fn bundled_sample() -> Result<Self> {
        let open = |name: &str| PathBuf::from(sample::DIR).join(name);
        let pair = |images: (&str, &'static [u8]), labels: (&str, &'static [u8])| {
            read_idx_pair(
                IdxReader::images_from_bytes(&open(images.0), images.1)?,
                IdxReader::labels_from_bytes(&open(labels.0), labels.1)?,
            )
        };
        Ok(Self {
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

    fn check_shapes(&self) -> Result<()> {
        let (train, test) = (self.train.images.shape, self.test.images.shape);
        anyhow::ensure!(
            train == test,
            "{}: training images are {}x{} but test images are {}x{}",
            self.source,
            train.height,
            train.width,
            test.height,
            test.width
        );
        Ok(())
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Reads an images file and its labels file, checking they describe the same examples.
pub fn read_idx_pair(images: IdxReader, labels: IdxReader) -> Result<Labelled, IdxError> {
    images.check_labels_match(&labels)?;
    let shape = images.shape.unwrap_or(InputShape::MNIST);
    let count = images.count;
    let labels_path = labels.path().to_owned();
    let pixels = images.read_all()?;
    let labels = labels.read_all()?;
    for (record, &label) in labels.iter().enumerate() {
        idx::check_label(&labels_path, record + 1, label)?;
    }
    Ok(Labelled {
        images: Images {
            shape,
            count,
            pixels,
        },
        labels,
    })
}
