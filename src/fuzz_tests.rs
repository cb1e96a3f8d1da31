//! Bounded randomized tests of the loaders: real files (the bundled sample, the digits, the
//! configs) mutated, truncated, grown and replaced by random bytes, each loaded in-process. A
//! loader may accept a case or refuse it with an error; it may never panic. Seeded, so a
//! failure names the seed and case that reproduce it.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::TrainConfig;
use crate::dataset::{self, sample};
use crate::pixels_csv::{self, LabelColumn};
use crate::png_digit;
use model::InputShape;

const SEED: u64 = 0x6d6e_6973;

/// One way of spoiling a file.
fn mutate(rng: &mut StdRng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match rng.random_range(0..6) {
        // A few bytes set at random: the most common corruption.
        0 => {
            for _ in 0..rng.random_range(1..=8) {
                if !bytes.is_empty() {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
        }
        // Truncated anywhere, the header included.
        1 => bytes.truncate(rng.random_range(0..=bytes.len())),
        // Random bytes appended.
        2 => bytes.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
        // A range repeated.
        3 if !bytes.is_empty() => {
            let start = rng.random_range(0..bytes.len());
            let end = rng.random_range(start..=bytes.len().min(start + 256));
            let copy = bytes[start..end].to_vec();
            let at = rng.random_range(0..=bytes.len());
            bytes.splice(at..at, copy);
        }
        // The first bytes (a header) set to extremes.
        4 => {
            let extreme = if rng.random() { 0xff } else { 0x00 };
            for byte in bytes.iter_mut().take(rng.random_range(1..=16)) {
                *byte = extreme;
            }
        }
        // Nothing of the original.
        _ => {
            bytes = (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect()
        }
    }
    bytes
}

/// Runs `case(scratch directory, which original, its mutation)`, which says whether the loader
/// accepted the case, for `count` mutations of `originals` in turn. Fails (after all cases)
/// naming every case that panicked, and unless the cases were both accepted and refused.
fn fuzz(
    name: &str,
    count: usize,
    originals: &[Vec<u8>],
    case: impl Fn(&Path, usize, &[u8]) -> bool,
) {
    let mut rng = StdRng::seed_from_u64(SEED ^ name.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    let (mut panicked, mut accepted) = (Vec::new(), 0);
    for i in 0..count {
        let which = i % originals.len();
        let bytes = mutate(&mut rng, &originals[which]);
        match catch_unwind(AssertUnwindSafe(|| case(dir.path(), which, &bytes))) {
            Ok(ok) => accepted += usize::from(ok),
            Err(_) => panicked.push(i),
        }
    }
    eprintln!(
        "{name}: {count} cases, {accepted} accepted, {} panicked",
        panicked.len()
    );
    assert!(
        panicked.is_empty(),
        "{name}: cases {panicked:?} of seed {SEED:#x} panicked"
    );
    assert!(
        0 < accepted && accepted < count,
        "{name}: {accepted} of {count} cases accepted: the mutations miss the loader"
    );
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The first `count` records of an IDX file, with its header's count set to match.
fn idx_head(idx: &[u8], count: u32) -> Vec<u8> {
    let dims = usize::from(idx[3]);
    let record: usize = (1..dims)
        .map(|d| u32::from_be_bytes(idx[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .product();
    let header = 4 + 4 * dims;
    let mut head = idx[..header + record * count as usize].to_vec();
    head[4..8].copy_from_slice(&count.to_be_bytes());
    head
}

#[test]
fn idx_files_raw_and_gzipped() {
    let small = |gz: &[u8]| idx_head(&gunzip(gz), 16);
    let files = [
        ("train-images-idx3-ubyte", small(sample::TRAIN_IMAGES)),
        ("train-labels-idx1-ubyte", small(sample::TRAIN_LABELS)),
        ("t10k-images-idx3-ubyte", small(sample::TEST_IMAGES)),
        ("t10k-labels-idx1-ubyte", small(sample::TEST_LABELS)),
    ];
    for gzipped in [false, true] {
        // Gzipped, the compressed bytes are spoilt: the gzip layer is fuzzed too.
        let (name, suffix) = if gzipped {
            ("idx.gz", ".gz")
        } else {
            ("idx", "")
        };
        let originals: Vec<Vec<u8>> = files
            .iter()
            .map(|(_, bytes)| if gzipped { gzip(bytes) } else { bytes.clone() })
            .collect();
        fuzz(name, 800, &originals, |dir, spoilt, spoilt_bytes| {
            for (i, ((file, _), original)) in files.iter().zip(&originals).enumerate() {
                let bytes = if i == spoilt { spoilt_bytes } else { original };
                std::fs::write(dir.join(format!("{file}{suffix}")), bytes).unwrap();
            }
            let both = dataset::load(dir).is_ok();
            dataset::load_test(dir).is_ok() && both
        });
    }
}

/// The first `rows` images of the sample's test split as CSV: labelled as `mnist parse`
/// writes them, or unlabelled as `mnist infer` reads them.
fn sample_csv(rows: usize, label: Option<LabelColumn>) -> Vec<u8> {
    let test = dataset::bundled_sample().unwrap().test;
    let mut writer = pixels_csv::RowWriter::new(Vec::new());
    for i in 0..rows {
        writer
            .write(
                test.images.image(i),
                label.map(|column| (column, test.labels[i])),
            )
            .unwrap();
    }
    writer.into_inner()
}

/// The contents of `names` in the project's directory `dir`.
fn project_files(dir: &str, names: &[&str]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    names
        .iter()
        .map(|name| std::fs::read(root.join(name)).unwrap())
        .collect()
}

#[test]
fn training_csv() {
    let csv = sample_csv(16, Some(LabelColumn::First));
    fuzz("csv", 1500, std::slice::from_ref(&csv), |dir, _, bytes| {
        std::fs::write(dir.join("train.csv"), bytes).unwrap();
        std::fs::write(dir.join("test.csv"), &csv).unwrap();
        dataset::load(dir).is_ok()
    });
}

#[test]
fn inference_csv() {
    let unlabelled = sample_csv(16, None);
    fuzz("inference csv", 1500, &[unlabelled], |dir, _, bytes| {
        let path = dir.join("digits.csv");
        std::fs::write(&path, bytes).unwrap();
        pixels_csv::read_unlabelled(&path, InputShape::MNIST).is_ok()
    });
}

#[test]
fn png_images() {
    let originals = project_files("data/digits", &["digit-2.png", "digit-9.png"]);
    fuzz("png", 1000, &originals, |dir, _, bytes| {
        let path = dir.join("digit.png");
        std::fs::write(&path, bytes).unwrap();
        png_digit::load(&path, InputShape::MNIST).is_ok()
    });
}

#[test]
fn toml_configs() {
    let originals = project_files(
        "configs",
        &[
            "cnn.toml",
            "fashion-cnn.toml",
            "mlp.toml",
            "seed-mlp.toml",
            "smoke.toml",
        ],
    );
    fuzz("toml", 2000, &originals, |dir, _, bytes| {
        let path = dir.join("config.toml");
        std::fs::write(&path, bytes).unwrap();
        TrainConfig::load(&path).is_ok_and(|config| {
            config.validate().is_ok() && config.model.check(InputShape::MNIST).is_ok()
        })
    });
}

#[test]
fn model_directories() {
    use crate::backend::{self, BackendChoice};
    use crate::metrics::Sinks;
    use crate::model_dir::{CARD, LoadedModel, WEIGHTS};
    use crate::train::{self, Destination};

    // A real model directory: the smoke config, one epoch on the sample, on the CPU.
    let trained = tempfile::tempdir().unwrap();
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/smoke.toml");
    let mut config = TrainConfig::load(&config_path).unwrap();
    config.training.epochs = 1;
    let cpu = backend::select(BackendChoice::Cpu, None).unwrap();
    let destination = Destination {
        model: trained.path(),
        checkpoints: trained.path().join("checkpoints"),
        resume: false,
    };
    let splits = dataset::bundled_sample().unwrap();
    train::train(&config, &splits, &cpu, &destination, &mut Sinks::default()).unwrap();
    let files = [CARD, WEIGHTS];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|name| std::fs::read(trained.path().join(name)).unwrap())
        .collect();

    fuzz(
        "model directory",
        600,
        &originals,
        |dir, spoilt, spoilt_bytes| {
            for (i, (name, original)) in files.iter().zip(&originals).enumerate() {
                let bytes = if i == spoilt { spoilt_bytes } else { original };
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            LoadedModel::load(dir, &cpu.device).is_ok()
        },
    );
}
