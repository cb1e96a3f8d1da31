//! Data sets beyond ten digits: a generated IDX data set of 26 letters at 32x32, named in a
//! `classes.txt`, through every stage on the CPU and on the wgpu backend (lavapipe); and
//! Fashion-MNIST's class names in `stats.json`, in `confusion.png` and in the W&B eval run.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use common::fake_wandb::FakeWandb;
use common::*;
use serde_json::Value;

const SIDE: usize = 32;
const LETTERS: usize = 26;

/// An IDX file of `kind` (0x08 unsigned bytes, 0x0b shorts) and `rank`: the magic number, the
/// dimensions, the bytes.
fn idx(path: &Path, kind: u8, rank: u8, dims: &[u32], bytes: &[u8]) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&[0, 0, kind, rank]).unwrap();
    for dim in dims {
        file.write_all(&dim.to_be_bytes()).unwrap();
    }
    file.write_all(bytes).unwrap();
}

/// `count` images of each letter A..Z at 32x32, drawn with the project's built-in font at
/// varying sizes and places, with noise; in shuffled order.
fn letters(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let font_bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fonts/DejaVuSans.ttf"))
            .unwrap();
    let font = FontRef::try_from_slice(&font_bytes).unwrap();
    let mut state = seed;
    let mut random = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut examples: Vec<(u8, Vec<u8>)> = Vec::new();
    for i in 0..count * LETTERS {
        let letter = (i % LETTERS) as u8;
        let px = 18.0 + random(8) as f32;
        let scaled = font.as_scaled(PxScale::from(px));
        let glyph = scaled
            .glyph_id(char::from(b'A' + letter))
            .with_scale_and_position(
                px,
                ab_glyph::point(
                    4.0 + random(8) as f32,
                    scaled.ascent() + random(5) as f32 - 2.0,
                ),
            );
        let mut image = vec![0u8; SIDE * SIDE];
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                let (x, y) = (
                    bounds.min.x as i64 + i64::from(x),
                    bounds.min.y as i64 + i64::from(y),
                );
                if (0..SIDE as i64).contains(&x) && (0..SIDE as i64).contains(&y) {
                    image[y as usize * SIDE + x as usize] = (coverage * 255.0) as u8;
                }
            });
        }
        for pixel in &mut image {
            *pixel = pixel.saturating_add(random(40) as u8);
        }
        examples.push((letter, image));
    }
    for i in (1..examples.len()).rev() {
        examples.swap(i, random(i as u64 + 1) as usize);
    }
    let labels = examples.iter().map(|(label, _)| *label).collect();
    let pixels = examples.into_iter().flat_map(|(_, image)| image).collect();
    (labels, pixels)
}

/// The letters as the four IDX files, with a `classes.txt` naming them, under `dir/letters`.
fn letters_dataset(dir: &Path) -> PathBuf {
    let data = dir.join("letters");
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, count, seed) in [("train", 30, 1), ("t10k", 10, 2)] {
        let (labels, pixels) = letters(count, seed);
        let n = labels.len() as u32;
        idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            0x08,
            3,
            &[n, SIDE as u32, SIDE as u32],
            &pixels,
        );
        idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            0x08,
            1,
            &[n],
            &labels,
        );
    }
    let names: String = (b'A'..=b'Z')
        .map(|c| format!("Letter {}\n", char::from(c)))
        .collect();
    std::fs::write(data.join("classes.txt"), names).unwrap();
    data
}

/// A small CNN for the 32x32 letters.
fn letters_config(dir: &Path, epochs: usize) -> PathBuf {
    let path = dir.join("letters.toml");
    std::fs::write(
        &path,
        format!(
            "[model]\nkind = \"cnn\"\nchannels = [16]\nkernel_size = 3\npool = 2\nhidden = [64]\n\n\
             [preprocess]\nkind = \"scale\"\n\n\
             [training]\nepochs = {epochs}\nbatch_size = 32\nseed = 3\n\n\
             [optimizer]\nkind = \"adam\"\nlr = 3e-3\n"
        ),
    )
    .unwrap();
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// parse, train, stats, infer (with names) and image on `backend`; returns the stats.
fn every_stage(work: &Path, backend: &str, epochs: usize) -> Value {
    let data = letters_dataset(work);
    let csv = work.join("csv");
    succeeds(
        mnist()
            .args(["parse", "--input"])
            .arg(&data)
            .arg("--output")
            .arg(&csv),
    );
    assert_eq!(listing(&csv), ["classes.txt", "test.csv", "train.csv"]);

    let model = work.join("model");
    let mut train = mnist();
    if backend == "wgpu" {
        software_vulkan(&mut train);
    }
    let log = stderr(&succeeds(
        train
            .args(["train", "--backend", backend, "--config"])
            .arg(letters_config(work, epochs))
            .arg("--data")
            .arg(&csv)
            .arg("--output")
            .arg(&model),
    ));
    assert!(log.contains("images of 26 classes"), "{log}");
    let card = json(&model.join("model.json"));
    assert_eq!(card["classes"], LETTERS);
    assert_eq!(card["input"]["height"], SIDE);
    assert_eq!(card["class_names"][25], "Letter Z");
    assert!(
        card["summary"].as_str().unwrap().ends_with("-26 relu"),
        "{}",
        card["summary"]
    );

    let stats_dir = work.join("stats");
    let mut stats = mnist();
    if backend == "wgpu" {
        software_vulkan(&mut stats);
    }
    let table = String::from_utf8(
        succeeds(
            stats
                .args(["stats", "--backend", backend, "--model"])
                .arg(&model)
                .arg("--data")
                .arg(&csv)
                .arg("--output")
                .arg(&stats_dir),
        )
        .stdout,
    )
    .unwrap();
    assert!(table.contains("25 Letter Z"), "{table}");
    let stats = json(&stats_dir.join("stats.json"));
    assert_eq!(
        stats["evaluation"]["confusion"].as_array().unwrap().len(),
        LETTERS
    );
    assert_eq!(stats["evaluation"]["per_class"][0]["name"], "Letter A");

    // Unlabelled rows of the test images, classified with their names.
    let digits = work.join("digits");
    std::fs::create_dir_all(&digits).unwrap();
    let rows: String = std::fs::read_to_string(csv.join("test.csv"))
        .unwrap()
        .lines()
        .take(20)
        .map(|line| format!("{}\n", line.split_once(',').unwrap().1))
        .collect();
    std::fs::write(digits.join("letters.csv"), rows).unwrap();
    let inferred = work.join("inferred");
    let mut infer = mnist();
    if backend == "wgpu" {
        software_vulkan(&mut infer);
    }
    succeeds(
        infer
            .args(["infer", "--class-names", "--backend", backend, "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&digits)
            .arg("--output")
            .arg(&inferred),
    );
    let first = std::fs::read_to_string(inferred.join("letters.csv")).unwrap();
    let first = first.lines().next().unwrap();
    let fields: Vec<&str> = first.split(',').collect();
    assert_eq!(fields.len(), SIDE * SIDE + 2);
    let label: usize = fields[SIDE * SIDE].parse().unwrap();
    assert_eq!(
        fields[SIDE * SIDE + 1],
        format!("\"Letter {}\"", char::from(b'A' + label as u8))
    );
    let gifs = work.join("gifs");
    succeeds(
        mnist()
            .args(["image", "--input"])
            .arg(&inferred)
            .arg("--output")
            .arg(&gifs),
    );
    assert_eq!(listing(&gifs), ["letters.gif"]);
    stats
}

#[test]
fn twenty_six_letters_at_32x32_go_through_every_stage_on_the_cpu() {
    let work = tempfile::tempdir().unwrap();
    let stats = every_stage(work.path(), "cpu", 12);
    let accuracy = stats["evaluation"]["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.5,
        "26 letters learnt to {accuracy} (chance: 0.04)"
    );

    // Test data must name as many classes as the model has; names that differ are the model's.
    let (csv, model) = (work.path().join("csv"), work.path().join("model"));
    let names = csv.join("classes.txt");
    let stats = |out: &str| {
        let mut command = mnist();
        command
            .args(["stats", "--backend", "cpu", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&csv)
            .arg("--output")
            .arg(work.path().join(out));
        command
    };
    let lower: String = (b'a'..=b'z')
        .map(|c| format!("{}\n", char::from(c)))
        .collect();
    std::fs::write(&names, &lower).unwrap();
    let log = stderr(&succeeds(&mut stats("lower")));
    assert!(
        log.contains(&format!(
            "warning: {} and the model name class 0 differently (\"a\" and \"Letter A\"); the model's names are used",
            names.display()
        )),
        "{log}"
    );
    std::fs::write(&names, &lower[..lower.len() - 2]).unwrap();
    let err = fails(&mut stats("fewer"));
    assert!(
        err.contains(&format!(
            "{} names 25 classes; the model has 26",
            names.display()
        )),
        "{err}"
    );
    assert!(listing(&work.path().join("fewer")).is_empty());
}

#[test]
fn twenty_six_letters_at_32x32_go_through_every_stage_on_wgpu() {
    let work = tempfile::tempdir().unwrap();
    every_stage(work.path(), "wgpu", 1);
}

/// A data set of `classes` classes in IDX files with 16-bit labels, `per_class` training
/// images of each: class `c`'s images show `c`'s bits as bars, one row of bars per bit.
fn many_classes(dir: &Path, classes: u16, per_class: u16) -> PathBuf {
    let data = dir.join(format!("classes-{classes}"));
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, copies) in [("train", per_class), ("t10k", 1)] {
        let labels: Vec<u16> = (0..copies).flat_map(|_| 0..classes).collect();
        let mut pixels = Vec::new();
        for &label in &labels {
            let mut image = [0u8; 28 * 28];
            for bit in (0..10).filter(|bit| label >> bit & 1 == 1) {
                image[(2 + 2 * bit) * 28 + 4..(2 + 2 * bit) * 28 + 24].fill(255);
            }
            pixels.extend(image);
        }
        let n = labels.len() as u32;
        idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            0x08,
            3,
            &[n, 28, 28],
            &pixels,
        );
        let shorts: Vec<u8> = labels.iter().flat_map(|l| l.to_be_bytes()).collect();
        idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            0x0b,
            1,
            &[n],
            &shorts,
        );
    }
    data
}

/// Beyond a byte: 300 classes with 16-bit IDX labels train and are evaluated, the confusion
/// picture kept to a readable size; 1,001 classes are refused with the label that is one too
/// many.
#[test]
fn three_hundred_classes_from_16_bit_labels_and_no_more_than_a_thousand() {
    let work = tempfile::tempdir().unwrap();
    let data = many_classes(work.path(), 300, 3);
    let config = work.path().join("mlp.toml");
    std::fs::write(
        &config,
        "[model]\nkind = \"mlp\"\nhidden = [128]\n\n[preprocess]\nkind = \"scale\"\n\n\
         [training]\nepochs = 4\nbatch_size = 16\nseed = 5\n\n\
         [optimizer]\nkind = \"adam\"\nlr = 3e-3\n",
    )
    .unwrap();
    let (model, stats_dir) = (work.path().join("model"), work.path().join("stats"));
    succeeds(
        mnist()
            .args(["train", "--backend", "cpu", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(&model),
    );
    assert_eq!(json(&model.join("model.json"))["classes"], 300);
    succeeds(
        mnist()
            .args(["stats", "--backend", "cpu", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(&stats_dir),
    );
    let evaluation = &json(&stats_dir.join("stats.json"))["evaluation"];
    assert_eq!(evaluation["per_class"].as_array().unwrap().len(), 300);
    let accuracy = evaluation["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5, "300 classes learnt to {accuracy}");
    let (picture, _) = png_pixels(&stats_dir.join("confusion.png"));
    assert!(
        picture.0 <= 2200 && picture.1 <= 2200,
        "a confusion picture of {picture:?} pixels"
    );

    let too_many = many_classes(work.path(), 1001, 1);
    let output = mnist()
        .args(["parse", "--input"])
        .arg(&too_many)
        .arg("--output")
        .arg(work.path().join("csv"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains(
            "train-labels-idx1-ubyte: record 1001: label 1000 is beyond the 1000 classes a data \
             set may have"
        ),
        "{err}"
    );
    assert!(listing(&work.path().join("csv")).is_empty());
}

/// How wide the leftmost text of `png` is drawn on the rows `rows`: the first run of dark
/// pixels from the left, gaps of under 12 pixels bridged (a row's label, and the axis beside it).
fn label_ink(png: &Path, rows: std::ops::Range<usize>) -> usize {
    let ((width, _), pixels) = png_pixels(png);
    let width = width as usize;
    rows.map(|y| {
        let dark = (0..width).filter(|&x| pixels[y * width + x].iter().all(|&c| c < 100));
        let mut run: Option<(usize, usize)> = None;
        for x in dark {
            match run {
                None => run = Some((x, x)),
                Some((first, last)) if x - last < 12 => run = Some((first, x)),
                Some(_) => break,
            }
        }
        run.map_or(0, |(first, last)| last - first + 1)
    })
    .max()
    .unwrap_or(0)
}

/// Fashion-MNIST with its names from the config: `stats.json`, the confusion picture's row
/// labels (drawn as wide as the names, not as numbers) and the W&B eval run's chart table.
#[test]
fn fashion_names_reach_stats_the_confusion_picture_and_wandb() {
    let fashion = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        fashion.is_dir(),
        "apt-get install dataset-fashion-mnist (make setup does)"
    );
    let work = tempfile::tempdir().unwrap();
    let csv = work.path().join("csv");
    succeeds(
        mnist()
            .args(["parse", "--input"])
            .arg(fashion)
            .arg("--output")
            .arg(&csv),
    );
    let subset = work.path().join("subset");
    std::fs::create_dir_all(&subset).unwrap();
    let train: String = std::fs::read_to_string(csv.join("train.csv"))
        .unwrap()
        .lines()
        .take(3000)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(subset.join("train.csv"), train).unwrap();
    std::fs::copy(csv.join("test.csv"), subset.join("test.csv")).unwrap();

    let fashion_config = std::fs::read_to_string(config("fashion-cnn.toml")).unwrap();
    let names = fashion_config
        .lines()
        .find(|l| l.starts_with("classes = "))
        .unwrap();
    let smoke = std::fs::read_to_string(config("smoke.toml")).unwrap();
    let (named, numbered) = (
        work.path().join("named.toml"),
        work.path().join("numbered.toml"),
    );
    std::fs::write(&named, format!("{smoke}\n[data]\n{names}\n")).unwrap();
    std::fs::write(&numbered, &smoke).unwrap();

    let server = FakeWandb::start(&[]);
    // The named model's runs go to the fake server; the numbered one's nowhere.
    let with_wandb = |name: &str| {
        let mut command = mnist();
        command
            .env(
                "WANDB_MODE",
                if name == "named" {
                    "online"
                } else {
                    "disabled"
                },
            )
            .env("WANDB_BASE_URL", &server.url)
            .env(
                "WANDB_API_KEY",
                "local-0123456789abcdef0123456789abcdef01234567",
            )
            .env("HOME", work.path());
        command
    };
    let mut pictures = Vec::new();
    for (config, name) in [(&named, "named"), (&numbered, "numbered")] {
        let model = work.path().join(name).join("model");
        let out = work.path().join(name).join("stats");
        succeeds(
            with_wandb(name)
                .args(["train", "--epochs", "1", "--config"])
                .arg(config)
                .arg("--data")
                .arg(&subset)
                .arg("--output")
                .arg(&model),
        );
        succeeds(
            with_wandb(name)
                .args(["stats", "--model"])
                .arg(&model)
                .arg("--data")
                .arg(&subset)
                .arg("--output")
                .arg(&out),
        );
        pictures.push(out.join("confusion.png"));
        if name == "named" {
            let stats = json(&out.join("stats.json"));
            let evaluation = &stats["evaluation"];
            assert_eq!(evaluation["per_class"][0]["name"], "T-shirt/top");
            assert_eq!(evaluation["class_names"][9], "Ankle boot");
            assert_eq!(evaluation["per_class"][6]["name"], "Shirt");
        }
    }
    // Row 0's label, by the first cell's middle (under the title and a margin).
    let (named_ink, numbered_ink) = (
        label_ink(&pictures[0], 60..100),
        label_ink(&pictures[1], 60..100),
    );
    assert!(
        named_ink > numbered_ink + 40,
        "row 0's label drawn {named_ink} pixels wide with names, {numbered_ink} with numbers"
    );
    // The training run's config names the classes; the eval run's confusion chart too.
    let state = server.state();
    let config: Value = state
        .upserts
        .iter()
        .find(|u| u["jobType"] == "train" && u["config"].is_string())
        .map(|u| serde_json::from_str(u["config"].as_str().unwrap()).unwrap())
        .expect("the training run's config");
    let dataset = &config["dataset"]["value"];
    assert_eq!(dataset["classes"], 10);
    assert_eq!(dataset["class_names"][6], "Shirt");
    let eval_config: Value = state
        .upserts
        .iter()
        .find(|u| u["jobType"] == "eval" && u["config"].is_string())
        .map(|u| serde_json::from_str(u["config"].as_str().unwrap()).unwrap())
        .expect("the eval run's config");
    assert_eq!(eval_config["class_names"]["value"][9], "Ankle boot");
    drop(state);
    let worst = server
        .lines("wandb-history.jsonl")
        .into_iter()
        .find_map(|row| row.get("test/worst_class_name").cloned())
        .expect("the test figures' worst class, by name");
    assert!(names.contains(&format!("{worst}")), "{worst} among {names}");
    let state = server.state();
    let table = state
        .puts
        .iter()
        .find(|(path, _)| path.contains("confusion_matrix_table") && path.ends_with(".table.json"))
        .map(|(_, bytes)| serde_json::from_slice::<Value>(bytes).unwrap())
        .unwrap_or_else(|| panic!("no chart table among {:?}", state.puts.keys()));
    let actual: std::collections::BTreeSet<&str> = table["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap())
        .collect();
    assert!(
        actual.contains("T-shirt/top") && actual.contains("Ankle boot"),
        "{actual:?}"
    );
}
