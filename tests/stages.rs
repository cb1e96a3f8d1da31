//! The stages end to end on the sample: train, resume, infer (CSV and PNG), stats, image.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_writes_a_complete_model_directory_that_resumes() {
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("model");
    let output = succeeds(
        mnist()
            .args(["train", "--config"])
            .arg(config("smoke.toml"))
            .args(["--epochs", "1", "--output"])
            .arg(&model),
    );
    let log = stderr(&output);
    assert!(log.contains("backend: cpu"), "{log}");
    assert!(log.contains("seed 7"), "{log}");
    assert!(log.contains("epoch 1: train loss"), "{log}");
    assert_eq!(
        listing(&model),
        ["checkpoints", "metrics.json", "model.bpk", "model.json"]
    );
    assert_eq!(listing(&model.join("checkpoints")), ["step-000000057"]);

    let output = succeeds(
        mnist()
            .args(["train", "--config"])
            .arg(config("smoke.toml"))
            .args(["--epochs", "2", "--resume", "--output"])
            .arg(&model),
    );
    assert!(stderr(&output).contains("resuming after epoch 1"));
    let card = json(&model.join("model.json"));
    assert_eq!(card["training"]["resumed_from_epoch"], 1);
    assert_eq!(card["training"]["epochs"], 2);
    assert_eq!(card["dataset"]["train"], 3600);
    assert_eq!(card["dataset"]["validation"], 400);
    assert_eq!(card["dataset"]["test"], 1000);
    assert_eq!(card["input"]["height"], 28);
    assert_eq!(card["config"]["model"]["kind"], "cnn");
    assert_eq!(card["config"]["preprocess"]["kind"], "scale");
    assert_eq!(card["backend"]["name"], "cpu");
    assert_eq!(card["crate_version"], env!("CARGO_PKG_VERSION"));
    let accuracy = card["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "smoke model test accuracy {accuracy}");

    let metrics = json(&model.join("metrics.json"));
    let epochs = metrics["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(epochs[1]["validation_accuracy"].as_f64().unwrap() > 0.8);
    // Each figure in one file: the curves here, the test figures and the backend in the card.
    assert_eq!(
        metrics.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["epochs"]
    );
    assert!(card["training"].get("seed").is_none());
}

#[test]
fn training_is_reproducible_from_the_seed() {
    let out = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let model = out.path().join(name);
        succeeds(
            mnist()
                .args(["train", "--config"])
                .arg(config("mlp.toml"))
                .args(["--epochs", "1", "--output"])
                .arg(&model),
        );
        json(&model.join("metrics.json"))["epochs"][0]["train_loss"].clone()
    };
    assert_eq!(run("a"), run("b"));
}

#[test]
fn infer_stats_and_image_on_the_sample() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    train_smoke(&model);
    // Attribute files: the first 50 test images without their labels.
    let (digits, rows) = sample_attributes(work.path(), "batch.csv", 50);
    let csv = work.path().join("csv");
    let inferred = work.path().join("inferred");
    infer(&model, &digits, &inferred, "cpu");
    let out = fs::read_to_string(inferred.join("batch.csv")).unwrap();
    let mut correct = 0;
    for (line, (label, pixels)) in out.lines().zip(&rows) {
        let (px, predicted) = line.rsplit_once(',').unwrap();
        assert_eq!(px, pixels);
        correct += usize::from(predicted == label);
    }
    assert_eq!(out.lines().count(), 50);
    assert!(correct >= 35, "{correct}/50 correct");

    let stats_dir = work.path().join("stats");
    let output = succeeds(
        mnist()
            .args(["stats", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&csv)
            .arg("--output")
            .arg(&stats_dir),
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("worst class"), "{table}");
    let stats = json(&stats_dir.join("stats.json"));
    let card = json(&model.join("model.json"));
    assert_eq!(stats["parameters"], card["parameters"]);
    let layers = stats["layers"].as_array().unwrap();
    let counted: u64 = layers.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, card["parameters"].as_u64().unwrap());
    let eval = &stats["evaluation"];
    let confusion: u64 = eval["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 1000);
    assert!(
        (eval["accuracy"].as_f64().unwrap() - card["metrics"]["test_accuracy"].as_f64().unwrap())
            .abs()
            < 1e-9
    );
    assert_eq!(
        listing(&stats_dir),
        ["confusion.png", "curves.png", "stats.json"]
    );

    // The heatmap: shaded by each true class's share, so the well-learnt diagonal is dark.
    // 64-pixel cells for ten classes; the width follows the widest row label ("0".."9").
    let (size, pixels) = png_pixels(&stats_dir.join("confusion.png"));
    assert_eq!(size, (733, 778));
    let dark_blue = pixels
        .iter()
        .filter(|&&[r, g, b]| r < 60 && g < 90 && b > 100)
        .count();
    assert!(dark_blue > 8 * 40 * 40, "{dark_blue} dark cell pixels");
    let white = pixels.iter().filter(|&&p| p == [255, 255, 255]).count();
    assert!(
        white > pixels.len() / 4,
        "{white} of {} white",
        pixels.len()
    );
    // The curves: a train line and a validation line, in their colours.
    let (size, pixels) = png_pixels(&stats_dir.join("curves.png"));
    assert_eq!(size, (1000, 420));
    for (name, colour) in [("train", [31, 119, 180]), ("validation", [255, 127, 14])] {
        let count = pixels.iter().filter(|&&p| p == colour).count();
        assert!(count > 200, "{count} pixels of the {name} curves");
    }

    let gifs = work.path().join("gifs");
    succeeds(
        mnist()
            .args(["image", "--input"])
            .arg(&inferred)
            .arg("--output")
            .arg(&gifs),
    );
    let decoded = gif_frames(&gifs.join("batch.gif"));
    assert_eq!(decoded, (50, 112, 112));
    succeeds(
        mnist()
            .args(["image", "--grid", "--scale", "5", "--input"])
            .arg(inferred.join("batch.csv"))
            .arg("--output")
            .arg(&gifs),
    );
    let (frames, width, _) = gif_frames(&gifs.join("batch.gif"));
    assert_eq!(frames, 1);
    assert_eq!(width, 8 * (140 + 5) + 5);
}

/// Frame count, width and height of a GIF.
fn gif_frames(path: &Path) -> (usize, u16, u16) {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options.read_info(fs::File::open(path).unwrap()).unwrap();
    let (width, height) = (decoder.width(), decoder.height());
    let mut frames = 0;
    while decoder.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    (frames, width, height)
}

#[test]
fn infer_reads_pngs_of_any_size_colour_and_polarity() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    train_smoke(&model);
    let images = gunzip(&sample_dir().join("t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&sample_dir().join("t10k-labels-idx1-ubyte.gz"));
    let pngs = work.path().join("pngs");
    fs::create_dir_all(&pngs).unwrap();
    let count = 20;
    for i in 0..count {
        let digit = &images[16 + i * 784..16 + (i + 1) * 784];
        // Dark ink on white, three times larger, in a wider frame, alternately RGB and
        // gray+alpha.
        let (w, h) = (28 * 3 + 30, 28 * 3);
        let mut gray = vec![255u8; w * h];
        for y in 0..h {
            for x in 0..28 * 3 {
                gray[y * w + x + 15] = 255 - digit[(y / 3) * 28 + x / 3];
            }
        }
        let file = fs::File::create(pngs.join(format!("digit{i:02}.png"))).unwrap();
        let mut encoder = png::Encoder::new(file, w as u32, h as u32);
        let data: Vec<u8> = if i % 2 == 0 {
            encoder.set_color(png::ColorType::Rgb);
            gray.iter().flat_map(|&v| [v, v, v]).collect()
        } else {
            encoder.set_color(png::ColorType::GrayscaleAlpha);
            gray.iter().flat_map(|&v| [v, 255]).collect()
        };
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&data)
            .unwrap();
    }
    let out = work.path().join("out");
    succeeds(
        mnist()
            .args(["infer", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&pngs)
            .arg("--output")
            .arg(&out),
    );
    let mut correct = 0;
    for i in 0..count {
        let row = fs::read_to_string(out.join(format!("digit{i:02}.csv"))).unwrap();
        let fields: Vec<u8> = row.trim().split(',').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 785);
        // White ink on black after conversion: the corners are background.
        assert_eq!(fields[0], 0);
        correct += usize::from(fields[784] == labels[8 + i]);
    }
    assert!(
        correct >= 15,
        "{correct}/{count} PNG digits classified correctly"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    train_smoke(&model);
    // A pipe whose reading end is already closed, as `mnist stats ... | head -0` leaves it.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = mnist()
        .args(["stats", "--backend", "cpu", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(sample_dir())
        .arg("--output")
        .arg(work.path().join("stats"))
        .stdout(writer)
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(!log.contains("panicked") && !log.contains("error"), "{log}");
    assert!(work.path().join("stats/stats.json").is_file());
}

#[test]
fn a_local_sweep_trains_every_trial_and_ranks_them() {
    let out = tempfile::tempdir().unwrap();
    let sweep = out.path().join("sweep");
    let output = succeeds(
        mnist()
            .env("WANDB_MODE", "disabled")
            .args(["sweep", "--sweep"])
            .arg(config("sweeps/smoke-lr.toml"))
            .arg("--output")
            .arg(&sweep)
            .args(["--run", "--jobs", "2", "--backend", "cpu"]),
    );
    let log = stderr(&output);
    assert!(log.contains("4 trials (random, seed 1)"), "{log}");
    assert!(log.contains("4 of 4 trials trained"), "{log}");
    let configs = listing(&sweep.join("configs"));
    assert_eq!(configs.len(), 4);
    assert!(
        configs
            .iter()
            .all(|c| c.starts_with("trial-00") && c.contains("_lr="))
    );
    assert_eq!(listing(&sweep.join("logs")).len(), 4);

    let board = json(&sweep.join("leaderboard.json"));
    let entries = board["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let accuracies: Vec<f64> = entries
        .iter()
        .map(|e| e["validation_accuracy"].as_f64().unwrap())
        .collect();
    assert!(
        accuracies.windows(2).all(|w| w[0] >= w[1]),
        "{accuracies:?}"
    );
    for entry in entries {
        let lr = entry["parameters"]["optimizer.lr"].as_f64().unwrap();
        assert!((1e-3..1e-2).contains(&lr), "{entry}");
        let card = json(
            &sweep
                .join("models")
                .join(entry["name"].as_str().unwrap())
                .join("model.json"),
        );
        assert_eq!(card["config"]["optimizer"]["lr"].as_f64().unwrap(), lr);
        // The class each trial misses most, from its card.
        assert_eq!(entry["worst_class"], card["metrics"]["worst_class"]);
        assert!(entry["worst_class"]["error"].is_number(), "{entry}");
    }
    let best = entries[0]["name"].as_str().unwrap();
    assert_eq!(
        fs::read(sweep.join("best/model.json")).unwrap(),
        fs::read(sweep.join("models").join(best).join("model.json")).unwrap()
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("| rank | model | `optimizer.lr` | `training.batch_size` |"));
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(
        table.contains("| test loss | worst class | epochs |"),
        "{table}"
    );
    assert_eq!(
        fs::read_to_string(sweep.join("leaderboard.md")).unwrap(),
        table
    );

    // The same sweep into the same directory would mix two sweeps' trials.
    let message = fails(
        mnist()
            .env("WANDB_MODE", "disabled")
            .args(["sweep", "--sweep"])
            .arg(config("sweeps/smoke-lr.toml"))
            .arg("--output")
            .arg(&sweep),
    );
    assert!(message.contains("already holds trial configs"), "{message}");
}
