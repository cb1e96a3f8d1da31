//! Every kind of bad input gets a message naming the file and the place in it, a non-zero
//! exit and no output.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;

/// A directory with the four sample IDX files, raw, with `edit` applied to one of them.
fn idx_dir(file: &str, edit: impl Fn(&mut Vec<u8>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let mut bytes = gunzip(&sample_dir().join(format!("{name}.gz")));
        if name == file {
            edit(&mut bytes);
        }
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn parse_fails(input: &Path) -> (String, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        mnist()
            .args(["parse", "--input"])
            .arg(input)
            .arg("--output")
            .arg(out.path()),
    );
    (err, listing(out.path()))
}

#[test]
fn truncated_idx_names_the_file_and_the_byte_offset() {
    let dir = idx_dir("t10k-images-idx3-ubyte", |b| {
        b.truncate(16 + 784 * 500 + 100)
    });
    let (err, outputs) = parse_fails(dir.path());
    assert!(
        err.contains("t10k-images-idx3-ubyte: truncated at byte 392116"),
        "{err}"
    );
    assert!(err.contains("record 501 of 1000"), "{err}");
    assert!(outputs.is_empty(), "left behind {outputs:?}");
}

#[test]
fn wrong_magic_is_reported_with_both_numbers() {
    let dir = idx_dir("train-labels-idx1-ubyte", |b| b[3] = 0x03);
    let (err, outputs) = parse_fails(dir.path());
    assert!(
        err.contains(
            "train-labels-idx1-ubyte: wrong magic number 0x00000803 at byte 0, expected 0x00000801"
        ),
        "{err}"
    );
    assert!(outputs.is_empty());
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = idx_dir("t10k-labels-idx1-ubyte", |b| {
        b[4..8].copy_from_slice(&999u32.to_be_bytes());
        b.pop();
    });
    let (err, outputs) = parse_fails(dir.path());
    assert!(err.contains("holds 1000 images but"), "{err}");
    assert!(
        err.contains("t10k-labels-idx1-ubyte holds 999 labels"),
        "{err}"
    );
    assert!(outputs.is_empty());
}

#[test]
fn trailing_bytes_are_an_error() {
    let dir = idx_dir("train-labels-idx1-ubyte", |b| b.push(7));
    let (err, _) = parse_fails(dir.path());
    assert!(
        err.contains(
            "train-labels-idx1-ubyte: unexpected data after the last record, at byte 4008"
        ),
        "{err}"
    );
}

#[test]
fn corrupt_gzip_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(sample_dir()).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let target = dir.path().join("train-images-idx3-ubyte.gz");
    let mut bytes = fs::read(&target).unwrap();
    for b in &mut bytes[2000..2100] {
        *b ^= 0x5a;
    }
    fs::write(&target, bytes).unwrap();
    let (err, outputs) = parse_fails(dir.path());
    assert!(
        err.contains("train-images-idx3-ubyte.gz: corrupt gzip data after"),
        "{err}"
    );
    assert!(outputs.is_empty());
}

#[test]
fn empty_and_missing_input_directories() {
    let empty = tempfile::tempdir().unwrap();
    let (err, _) = parse_fails(empty.path());
    assert!(err.contains("no train-images file found"), "{err}");
    let (err, _) = parse_fails(&empty.path().join("nowhere"));
    assert!(err.contains("nowhere"), "{err}");
}

/// A data directory with a train.csv of the given text (and a valid test.csv).
fn csv_data(train: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("train.csv"), train).unwrap();
    let row = std::iter::once("3".to_string())
        .chain((0..784).map(|i| (i % 256).to_string()))
        .collect::<Vec<_>>()
        .join(",");
    fs::write(dir.path().join("test.csv"), format!("{row}\n")).unwrap();
    dir
}

fn row(label: &str, pixels: usize, bad: Option<(usize, &str)>) -> String {
    let mut fields: Vec<String> = std::iter::once(label.to_string())
        .chain((0..pixels).map(|i| (i % 200).to_string()))
        .collect();
    if let Some((at, value)) = bad {
        fields[at] = value.to_string();
    }
    fields.join(",") + "\n"
}

fn train_fails(data: &Path) -> (String, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("model");
    let err = fails(
        mnist()
            .args(["train", "--config"])
            .arg(config("smoke.toml"))
            .arg("--data")
            .arg(data)
            .arg("--output")
            .arg(&model),
    );
    (err, listing(&model))
}

#[test]
fn csv_with_wrong_column_count() {
    let data = csv_data(&(row("1", 784, None) + &row("2", 780, None)));
    let (err, outputs) = train_fails(data.path());
    assert!(
        err.contains("train.csv:2: expected 785 fields (a label and 784 pixels), found 781"),
        "{err}"
    );
    assert!(outputs.is_empty());
}

#[test]
fn csv_rows_of_labels_only() {
    let data = csv_data("1\n2\n");
    let (err, outputs) = train_fails(data.path());
    assert!(
        err.contains(
            "train.csv:1: expected a label and the pixels of an image, found only a label"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(outputs.is_empty());
}

#[test]
fn csv_with_a_non_integer() {
    let data = csv_data(&(row("1", 784, None).repeat(2) + &row("2", 784, Some((17, "12.5")))));
    let (err, _) = train_fails(data.path());
    assert!(
        err.contains("train.csv:3: field 18: expected an integer 0..255, found \"12.5\""),
        "{err}"
    );
}

#[test]
fn csv_with_a_pixel_out_of_range() {
    let data = csv_data(&row("1", 784, Some((5, "256"))));
    let (err, _) = train_fails(data.path());
    assert!(
        err.contains("train.csv:1: field 6: expected an integer 0..255, found \"256\""),
        "{err}"
    );
}

/// Ten names, `data/classes.txt`, and a label beyond them; names that are no names.
#[test]
fn class_names_that_do_not_fit_the_labels_or_are_not_names() {
    let ten: String = (0..10).map(|i| format!("class {i}\n")).collect();
    let data = csv_data(&(row("1", 784, None) + &row("10", 784, None)));
    let names = data.path().join("classes.txt");
    fs::write(&names, &ten).unwrap();
    let (err, left) = train_fails(data.path());
    let train = data.path().join("train.csv");
    assert!(
        err.contains(&format!(
            "{}: line 2: label 10 is beyond the 10 classes named in {}",
            train.display(),
            names.display()
        )),
        "{err}"
    );
    assert!(left.is_empty(), "{left:?}");
    for (text, problem) in [
        ("a\nb\na\n", "classes 0 and 2 are both named \"a\""),
        ("a\n\nb\n", "class 1 has an empty name"),
        ("", "no class names"),
    ] {
        fs::write(&names, text).unwrap();
        let (err, _) = train_fails(data.path());
        assert!(
            err.contains(&format!("{}: {problem}", names.display())),
            "{err}"
        );
    }
    let many: String = (0..1001).map(|i| format!("c{i}\n")).collect();
    fs::write(&names, many).unwrap();
    let (err, _) = train_fails(data.path());
    assert!(
        err.contains(&format!("{}: 1001 classes; at most 1000", names.display())),
        "{err}"
    );

    // The config names nine classes, the file ten.
    fs::write(&names, &ten).unwrap();
    let nine = smoke_with(
        "[optimizer]",
        "[data]\nclasses = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\"]\n\n[optimizer]",
    );
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        mnist()
            .args(["train", "--config"])
            .arg(nine.path())
            .arg("--data")
            .arg(data.path())
            .arg("--output")
            .arg(out.path().join("model")),
    );
    assert!(
        err.contains(&format!(
            "{} names 10 classes, but data.classes names 9",
            names.display()
        )),
        "{err}"
    );
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn smoke_with(from: &str, to: &str) -> tempfile::NamedTempFile {
    let text = fs::read_to_string(config("smoke.toml")).unwrap();
    assert!(text.contains(from));
    write_config(&text.replace(from, to))
}

fn train_with_config(config: &Path) -> (String, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        mnist()
            .args(["train", "--config"])
            .arg(config)
            .arg("--output")
            .arg(out.path()),
    );
    (err, listing(out.path()))
}

#[test]
fn unknown_config_key_names_the_key_and_line() {
    let config = smoke_with("batch_size = 64", "batch_size = 64\nbatch_sise = 32");
    let (err, outputs) = train_with_config(config.path());
    assert!(err.contains(&config.path().display().to_string()), "{err}");
    assert!(err.contains("unknown field `batch_sise`"), "{err}");
    assert!(err.contains("line 17"), "{err}");
    assert!(outputs.is_empty());

    let config = smoke_with("channels = [8]", "channels = [8]\nchanels = [4]");
    let (err, _) = train_with_config(config.path());
    assert!(err.contains("unknown field `chanels`"), "{err}");
}

#[test]
fn invalid_config_values_name_the_key() {
    let config = smoke_with("batch_size = 64", "batch_size = 0");
    let (err, _) = train_with_config(config.path());
    assert!(
        err.contains("training.batch_size: 0 is not in 1..=1048576"),
        "{err}"
    );

    let config = smoke_with("epochs = 2", "epochs = 18446744073709551615");
    let (err, _) = train_with_config(config.path());
    assert!(
        err.contains("training.epochs: 18446744073709551615 is not in 1..=1000000"),
        "{err}"
    );

    let config = smoke_with("kind = \"adam\"", "kind = \"adagrad\"");
    let (err, _) = train_with_config(config.path());
    assert!(err.contains("unknown variant `adagrad`"), "{err}");

    let config = smoke_with("batch_size = 64", "batch_size = \"64\"");
    let (err, _) = train_with_config(config.path());
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn layers_that_do_not_fit_the_images_name_the_key_and_the_sizes() {
    let config = smoke_with("kernel_size = 3", "kernel_size = 29");
    let (err, outputs) = train_with_config(config.path());
    assert!(
        err.contains("the model does not fit the 28x28 images")
            && err.contains(
                "model.kernel_size: the 29x29 kernel of convolution 1 is larger than its 28x28 input"
            ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(outputs.is_empty());

    let config = smoke_with("kernel_size = 3", "kernel_size = 3\npadding = 3");
    let (err, outputs) = train_with_config(config.path());
    assert!(
        err.contains("model.padding: padding of 3 is as wide as the 3x3 kernel or wider"),
        "{err}"
    );
    assert!(outputs.is_empty());

    let config = smoke_with("pool = 2", "pool = 27");
    let (err, outputs) = train_with_config(config.path());
    assert!(
        err.contains("model.pool: the 27x27 pool after convolution 1 is larger than the 26x26 feature maps it \
             pools"),
        "{err}"
    );
    assert!(outputs.is_empty());
}

#[test]
fn a_diverging_loss_ends_training_with_the_step_and_no_model() {
    let config = smoke_with("lr = 3e-3", "lr = 1e12");
    let (err, outputs) = train_with_config(config.path());
    assert!(
        err.contains("training diverged: the loss became")
            && err.contains("by epoch 1, step 20 (it is read every 20 steps)")
            && err.contains("the learning rate (1e12) is likely too high"),
        "{err}"
    );
    assert!(!outputs.contains(&"model.json".to_string()), "{outputs:?}");
}

#[test]
fn missing_and_corrupt_model_directories() {
    let out = tempfile::tempdir().unwrap();
    let input = sample_dir();
    let infer = |model: &Path| {
        fails(
            mnist()
                .args(["stats", "--model"])
                .arg(model)
                .arg("--data")
                .arg(&input)
                .arg("--output")
                .arg(out.path()),
        )
    };
    let err = infer(&out.path().join("missing"));
    assert!(err.contains("missing: no such model directory"), "{err}");

    let model = tempfile::tempdir().unwrap();
    train_smoke(model.path());
    let card = model.path().join("model.json");
    let text = fs::read_to_string(&card).unwrap();
    fs::write(&card, &text[..text.len() / 2]).unwrap();
    let err = infer(model.path());
    assert!(
        err.contains("model.json: invalid model card: EOF while parsing"),
        "{err}"
    );

    // A card whose network does not fit its own input.
    assert!(text.contains("\"pool\": 2"));
    fs::write(&card, text.replace("\"pool\": 2", "\"pool\": 40")).unwrap();
    let err = infer(model.path());
    assert!(
        err.contains("model.json: invalid model card: config.model.pool: the 40x40 pool"),
        "{err}"
    );

    // A card describing another architecture than its weights.
    fs::write(
        &card,
        text.replace(
            "\"hidden\": [\n        32\n      ]",
            "\"hidden\": [\n        33\n      ]",
        ),
    )
    .unwrap();
    let err = infer(model.path());
    assert!(
        err.contains("model.bpk: weights do not fit the cnn"),
        "{err}"
    );
    assert!(listing(out.path()).is_empty());
}

#[test]
fn a_png_that_is_not_a_png() {
    let model = tempfile::tempdir().unwrap();
    train_smoke(model.path());
    let input = tempfile::tempdir().unwrap();
    fs::write(input.path().join("seven.png"), b"GIF89a not a png").unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = fails(
        mnist()
            .args(["infer", "--model"])
            .arg(model.path())
            .arg("--input")
            .arg(input.path())
            .arg("--output")
            .arg(out.path()),
    );
    assert!(err.contains("seven.png: not a valid PNG image"), "{err}");
    assert!(listing(out.path()).is_empty());
}

#[test]
fn gifs_too_large_for_the_format_or_memory_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("many.csv");
    let row = vec!["0"; 784].join(",") + ",3\n";
    fs::write(&input, row.repeat(5000)).unwrap();
    let image = |extra: &[&str]| {
        fails(
            mnist()
                .args(["image", "--scale", "32", "--limit", "5000", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(work.path().join("gifs"))
                .args(extra),
        )
    };
    // 71 x 71 cells of 896 pixels and their gaps.
    let err = image(&["--grid"]);
    assert!(
        err.contains(
            "many.gif: a 65920x65920 image is larger than GIF allows (65535 pixels a side)"
        ),
        "{err}"
    );
    let err = image(&[]);
    assert!(
        err.contains("many.gif: 5000 frames of 896x896 are 4014080000 pixels, more than the"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(listing(&work.path().join("gifs")).is_empty());
}

#[test]
fn sweep_files_and_model_sets_that_cannot_be_used() {
    let work = tempfile::tempdir().unwrap();
    let sweep = work.path().join("bad.toml");
    let base = config("smoke.toml");
    fs::write(
        &sweep,
        format!(
            "method = \"random\"\ncount = 2\nbase = {base:?}\n[parameters.\"optimizer.lr\"]\nmin = 0.5\nmax = 0.1\n"
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let err = fails(
        mnist()
            .args(["sweep", "--sweep"])
            .arg(&sweep)
            .arg("--output")
            .arg(&out),
    );
    assert!(
        err.contains("bad.toml: parameters.\"optimizer.lr\": min 0.5 and max 0.1"),
        "{err}"
    );
    assert!(!out.exists());

    // select: no model directories, or a broken one among them.
    let models = work.path().join("models");
    let select = || {
        fails(
            mnist()
                .args(["select", "--models"])
                .arg(&models)
                .arg("--output")
                .arg(&out),
        )
    };
    fs::create_dir_all(models.join("not-a-model")).unwrap();
    let err = select();
    assert!(err.contains("no model directories in it"), "{err}");
    fs::create_dir_all(models.join("broken")).unwrap();
    fs::write(models.join("broken/model.json"), "{\"summary\": 1}").unwrap();
    let err = select();
    assert!(
        err.contains("broken/model.json: invalid model card"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn exports_of_no_model_in_an_unknown_format_or_to_where_files_cannot_go() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("exports");
    let export = |model: &Path, format: &str, out: &Path| {
        fails(
            mnist()
                .args(["export", "--format", format, "--model"])
                .arg(model)
                .arg("--output")
                .arg(out),
        )
    };
    let err = export(&work.path().join("missing"), "all", &out);
    assert!(err.contains("missing: no such model directory"), "{err}");
    assert!(!out.exists());

    let model = work.path().join("model");
    train_smoke(&model);
    let err = export(&model, "pickle", &out);
    assert!(
        err.contains("invalid value 'pickle'") && err.contains("onnx, safetensors, all"),
        "{err}"
    );
    assert!(!out.exists());

    // A file where the output directory would go.
    fs::write(&out, b"not a directory").unwrap();
    let err = export(&model, "all", &out);
    assert!(
        err.contains(&format!("creating directory {}", out.display())),
        "{err}"
    );
    fs::remove_file(&out).unwrap();

    // The last file cannot take its name: the two renamed before it are taken back.
    fs::create_dir_all(out.join("model.py")).unwrap();
    let err = export(&model, "all", &out);
    assert!(err.contains("model.py"), "{err}");
    assert_eq!(listing(&out), ["model.py"]);
    assert!(listing(&out.join("model.py")).is_empty());
}
