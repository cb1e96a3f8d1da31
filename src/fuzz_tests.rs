//! Bounded randomized tests of the loaders and the stages: real files (the bundled sample, the
//! digits, the configs, a trained model) mutated, truncated, grown and replaced by random bytes,
//! each loaded, or run through a whole stage, in-process. A loader may accept a case or refuse
//! it with an error; it may never panic. A stage that refuses a case leaves no file in its
//! output. Seeded, so a failure names the seed and case that reproduce it.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device::backend::{self, BackendChoice};
use crate::formats::classes::Classes;
use crate::formats::config::TrainConfig;
use crate::formats::dataset::{self, sample};
use crate::formats::model_dir::ModelDir;
use crate::formats::pixels_csv::{self, LabelColumn};
use crate::formats::png_digit;
use crate::report::metrics::Sinks;
use crate::stages::export::{self, ExportArgs, FormatChoice};
use crate::stages::image::{self, ImageArgs};
use crate::stages::infer::{self, InferArgs};
use crate::stages::parse::{self, ParseArgs};
use crate::stages::stats::{self, StatsArgs};
use crate::stages::train::{self, Checkpoints, TrainArgs};
use model::InputShape;

const SEED: u64 = 0x6d6e_6973;

/// One way of spoiling a file.
fn mutate(rng: &mut StdRng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match rng.random_range(0..7) {
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
        // A line dropped or doubled: text formats stay well formed more often.
        5 => {
            let ends: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect();
            if let Some(&end) = ends.get(rng.random_range(0..ends.len().max(1))) {
                let start = bytes[..end]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let line = bytes[start..=end].to_vec();
                if rng.random() {
                    bytes.drain(start..=end);
                } else {
                    bytes.splice(start..start, line);
                }
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

/// The sample's four IDX files, raw, cut to their first 16 records: names and bytes.
fn sample_idx() -> (Vec<&'static str>, Vec<Vec<u8>>) {
    [
        ("train-images-idx3-ubyte", sample::TRAIN_IMAGES),
        ("train-labels-idx1-ubyte", sample::TRAIN_LABELS),
        ("t10k-images-idx3-ubyte", sample::TEST_IMAGES),
        ("t10k-labels-idx1-ubyte", sample::TEST_LABELS),
    ]
    .into_iter()
    .map(|(name, gz)| (name, idx_head(&gunzip(gz), 16)))
    .unzip()
}

/// Writes a set of files into `dir`: `names` with their `originals`, the one at `spoilt` with
/// `bytes` instead.
fn write_spoilt(
    dir: &Path,
    names: &[impl AsRef<Path>],
    originals: &[Vec<u8>],
    spoilt: usize,
    bytes: &[u8],
) {
    for (i, (name, original)) in names.iter().zip(originals).enumerate() {
        std::fs::write(dir.join(name), if i == spoilt { bytes } else { original }).unwrap();
    }
}

#[test]
fn idx_files_raw_and_gzipped() {
    let (names, raw) = sample_idx();
    for gzipped in [false, true] {
        // Gzipped, the compressed bytes are spoilt: the gzip layer is fuzzed too.
        let (name, suffix) = if gzipped {
            ("idx.gz", ".gz")
        } else {
            ("idx", "")
        };
        let originals: Vec<Vec<u8>> = raw
            .iter()
            .map(|bytes| if gzipped { gzip(bytes) } else { bytes.clone() })
            .collect();
        let files: Vec<String> = names.iter().map(|n| format!("{n}{suffix}")).collect();
        fuzz(name, 800, &originals, |dir, spoilt, spoilt_bytes| {
            write_spoilt(dir, &files, &originals, spoilt, spoilt_bytes);
            let both = dataset::load(dir, None).is_ok();
            dataset::load_test(dir, &Classes::numbered(10)).is_ok() && both
        });
    }
}

/// The first `rows` images of the sample's test split as CSV: labelled as `mnist parse`
/// writes them, or unlabelled as `mnist infer` reads them.
fn sample_csv(rows: usize, label: Option<LabelColumn>) -> Vec<u8> {
    let test = dataset::bundled_sample(None).unwrap().test;
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
        dataset::load(dir, None).is_ok()
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

/// Runs a stage that writes under `out`, from an empty start: whether it accepted the case. A
/// refusal must leave no file under `out` (and an acceptance some).
fn stage(out: &Path, run: impl FnOnce() -> anyhow::Result<()>) -> bool {
    let _ = std::fs::remove_dir_all(out);
    let accepted = run().is_ok();
    let written = files_under(out);
    if accepted {
        assert!(!written.is_empty(), "an accepted case wrote nothing");
    } else {
        assert!(written.is_empty(), "a refused case left {written:?}");
    }
    accepted
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => files_under(&entry.path()),
            _ => vec![entry.path()],
        })
        .collect()
}

/// The smoke config for one epoch, W&B off, in `dir`.
fn smoke_config(dir: &Path) -> std::path::PathBuf {
    let smoke = project_files("configs", &["smoke.toml"]).remove(0);
    let mut text = String::from_utf8(smoke).unwrap();
    text.push_str("\n[wandb]\nmode = \"disabled\"\n");
    let path = dir.join("smoke.toml");
    std::fs::write(&path, text.replace("epochs = 2", "epochs = 1")).unwrap();
    path
}

/// A model directory trained on the sample (smoke config, one epoch, on the CPU).
fn trained_model(dir: &Path) -> ModelDir {
    let config = TrainConfig::load(&smoke_config(dir)).unwrap();
    let checkpoints = Checkpoints {
        dir: dir.join("checkpoints"),
        every: None,
    };
    let cpu = backend::select(BackendChoice::Cpu, None).unwrap();
    let splits = dataset::bundled_sample(None).unwrap();
    let model = train::train(
        &config,
        &splits,
        &cpu,
        &checkpoints,
        None,
        &mut Sinks::default(),
    )
    .unwrap();
    let model_dir = ModelDir::new(dir.join("model"));
    (model_dir.write(&model.network, &model.card, &model.curves, &[])).unwrap();
    model_dir
}

#[test]
fn model_directories_loaded_and_through_infer() {
    let trained = tempfile::tempdir().unwrap();
    let model = trained_model(trained.path());
    let files = [ModelDir::CARD, ModelDir::WEIGHTS];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|name| std::fs::read(model.path().join(name)).unwrap())
        .collect();
    let digits = trained.path().join("digits");
    std::fs::create_dir(&digits).unwrap();
    std::fs::write(digits.join("digits.csv"), sample_csv(4, None)).unwrap();
    let cpu = backend::select(BackendChoice::Cpu, None).unwrap();

    fuzz("model directory", 600, &originals, |dir, spoilt, bytes| {
        write_spoilt(dir, &files, &originals, spoilt, bytes);
        ModelDir::new(dir).load(&cpu.device).is_ok()
    });
    fuzz("infer, model", 150, &originals, |dir, spoilt, bytes| {
        let model = dir.join("model");
        std::fs::create_dir_all(&model).unwrap();
        write_spoilt(&model, &files, &originals, spoilt, bytes);
        let args = InferArgs {
            model,
            input: digits.clone(),
            output: dir.join("out"),
            backend: BackendChoice::Cpu,
            class_names: false,
            probabilities: false,
            wandb_key_file: None,
        };
        stage(&args.output, || infer::run(&args))
    });
    fuzz("export, model", 100, &originals, |dir, spoilt, bytes| {
        let model = dir.join("model");
        std::fs::create_dir_all(&model).unwrap();
        write_spoilt(&model, &files, &originals, spoilt, bytes);
        let args = ExportArgs {
            model,
            format: FormatChoice::All,
            output: Some(dir.join("out")),
        };
        stage(&dir.join("out"), || export::run(&args))
    });
}

#[test]
fn stages_refusing_input_leave_no_output() {
    let trained = tempfile::tempdir().unwrap();
    let model = trained_model(trained.path());

    // parse: one of the four IDX files spoilt.
    let (names, originals) = sample_idx();
    fuzz("parse", 300, &originals, |dir, spoilt, spoilt_bytes| {
        let input = dir.join("idx");
        std::fs::create_dir_all(&input).unwrap();
        write_spoilt(&input, &names, &originals, spoilt, spoilt_bytes);
        let args = ParseArgs {
            input,
            output: dir.join("out"),
        };
        stage(&args.output, || parse::run(&args))
    });

    // train: train.csv spoilt.
    let labelled = sample_csv(16, Some(LabelColumn::First));
    let config = smoke_config(trained.path());
    fuzz(
        "train",
        120,
        std::slice::from_ref(&labelled),
        |dir, _, bytes| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("train.csv"), bytes).unwrap();
            std::fs::write(data.join("test.csv"), &labelled).unwrap();
            let args = TrainArgs {
                config: config.clone(),
                data: Some(data),
                output: dir.join("out"),
                models: None,
                epochs: None,
                batch_size: None,
                lr: None,
                seed: None,
                resume: false,
                checkpoint_dir: None,
                checkpoint_every: None,
                clean_checkpoints: false,
                backend: BackendChoice::Cpu,
                wandb_key_file: None,
            };
            stage(&args.output, || train::run(&args))
        },
    );

    // stats: test.csv spoilt.
    fuzz(
        "stats",
        300,
        std::slice::from_ref(&labelled),
        |dir, _, bytes| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("test.csv"), bytes).unwrap();
            let args = StatsArgs {
                model: model.path().to_owned(),
                data: Some(data),
                output: dir.join("out"),
                backend: BackendChoice::Cpu,
                wandb_key_file: None,
            };
            stage(&args.output, || stats::run(&args))
        },
    );

    // infer: a CSV or a PNG spoilt, beside an intact one.
    let mut inputs = project_files("data/digits", &["digit-2.png"]);
    inputs.push(sample_csv(4, None));
    fuzz("infer", 300, &inputs, |dir, which, bytes| {
        let input = dir.join("digits");
        let _ = std::fs::remove_dir_all(&input);
        std::fs::create_dir_all(&input).unwrap();
        let (spoilt, intact) = if which == 0 {
            ("spoilt.png", "intact.csv")
        } else {
            ("spoilt.csv", "intact.png")
        };
        std::fs::write(input.join(spoilt), bytes).unwrap();
        std::fs::write(input.join(intact), &inputs[1 - which]).unwrap();
        let args = InferArgs {
            model: model.path().to_owned(),
            input,
            output: dir.join("out"),
            backend: BackendChoice::Cpu,
            class_names: false,
            probabilities: false,
            wandb_key_file: None,
        };
        stage(&args.output, || infer::run(&args))
    });

    // image: an inference output (label last) spoilt.
    let predicted = sample_csv(8, Some(LabelColumn::Last));
    fuzz(
        "image",
        300,
        std::slice::from_ref(&predicted),
        |dir, _, bytes| {
            let input = dir.join("inference");
            std::fs::create_dir_all(&input).unwrap();
            std::fs::write(input.join("digits.csv"), bytes).unwrap();
            let args = ImageArgs {
                input,
                output: dir.join("out"),
                grid: false,
                scale: 4,
                delay: 50,
                limit: 1000,
            };
            stage(&args.output, || image::run(&args))
        },
    );
}
