//! The quality recipe end to end on the sample: a batch-normalized CNN trained with
//! augmentation, label smoothing, a warm-up, a moving average of the weights, the best epoch
//! kept, early stopping and test-time augmentation; what it saves is what it evaluated, and a
//! resumed run reaches the same figures as an uninterrupted one.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Every recipe key on. The learning rate grows tenfold each epoch after the first, so that
/// later epochs validate worse and the best one is not the last.
const RECIPE: &str = r#"
[model]
kind = "cnn"
channels = [8, 16]
padding = 1
pool_after = [1, 2]
batch_norm = true
hidden = [32]
dropout = 0.2

[preprocess]
kind = "scale"

[training]
epochs = 4
batch_size = 64
seed = 5
validation_split = 0.1
log_every = 20
label_smoothing = 0.1
ema_decay = 0.9
patience = 2

[optimizer]
kind = "adam"
lr = 3e-3

[schedule]
kind = "step"
every_epochs = 1
gamma = 10.0

[augment]
shift = 2
erase = 0.5

[tta]
shift = 1
"#;

fn train(config: &Path, model: &Path, extra: &[&str]) -> String {
    let output = succeeds(
        mnist()
            .args(["train", "--backend", "cpu", "--threads", "2", "--config"])
            .arg(config)
            .arg("--output")
            .arg(model)
            .args(extra),
    );
    stderr(&output)
}

/// The figures of a model but for timings: its test metrics, what it kept, its curves.
fn figures(model: &Path) -> (Value, Value, Vec<Value>) {
    let card = json(&model.join("model.json"));
    let curves = json(&model.join("metrics.json"));
    let epochs = curves["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            Value::from(vec![
                e["train_loss"].clone(),
                e["validation_loss"].clone(),
                e["validation_accuracy"].clone(),
            ])
        })
        .collect();
    (
        card["metrics"].clone(),
        card["training"]["kept"].clone(),
        epochs,
    )
}

#[test]
fn the_best_epoch_of_the_average_is_kept_saved_and_resumed_exactly() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("recipe.toml");
    fs::write(&config, RECIPE).unwrap();

    let full = work.path().join("full");
    let log = train(&config, &full, &[]);
    assert!(log.contains("batchnorm"), "{log}");
    let (metrics, kept, epochs) = figures(&full);
    let accuracies: Vec<f64> = epochs.iter().map(|e| e[2].as_f64().unwrap()).collect();
    let best = accuracies.iter().enumerate().fold(
        0,
        |best, (i, &a)| if a >= accuracies[best] { i } else { best },
    );
    assert_eq!(kept["epoch"], best + 1, "{kept} for {accuracies:?}");
    assert_eq!(kept["validation_accuracy"], accuracies[best]);
    assert_eq!(kept["last_epoch"], accuracies.len());
    assert_eq!(kept["averaged"], true);
    assert!(
        kept["epoch"] != kept["last_epoch"],
        "the growing learning rate makes a later epoch worse: {accuracies:?}"
    );
    // Patience 2: training stops two epochs after the best, if that is before the fourth.
    assert_eq!(accuracies.len(), (best + 3).min(4), "{accuracies:?}");
    assert_eq!(kept["stopped_early"], accuracies.len() < 4);
    assert!(
        log.contains(&format!("keeping epoch {}", best + 1)),
        "{log}"
    );

    // model.bpk is the kept network, its running statistics included: evaluated again from
    // the file, with the card's 5 views, it gives the test figures the card reports; without
    // the views, the card's figure for each image's own view.
    let test_accuracy = |model: &Path| {
        let stats = model.with_extension("stats");
        succeeds(
            mnist()
                .args(["stats", "--backend", "cpu", "--model"])
                .arg(model)
                .arg("--data")
                .arg(sample_dir())
                .arg("--output")
                .arg(&stats),
        );
        json(&stats.join("stats.json"))["evaluation"]["accuracy"].clone()
    };
    assert_eq!(test_accuracy(&full), metrics["test_accuracy"]);
    assert!(log.contains("from each image's own view alone"), "{log}");
    let single = work.path().join("single-view");
    fs::create_dir(&single).unwrap();
    for file in ["model.bpk", "metrics.json"] {
        fs::copy(full.join(file), single.join(file)).unwrap();
    }
    let mut card = json(&full.join("model.json"));
    assert_eq!(
        card["config"]["tta"],
        serde_json::json!({"flip": false, "shift": 1})
    );
    card["config"].as_object_mut().unwrap().remove("tta");
    fs::write(single.join("model.json"), card.to_string()).unwrap();
    assert_eq!(test_accuracy(&single), metrics["test_accuracy_single_view"]);

    // The same seed again, and the same training stopped after an epoch and resumed: the
    // same figures.
    let again = work.path().join("again");
    train(&config, &again, &[]);
    assert_eq!(figures(&again), figures(&full));
    let resumed = work.path().join("resumed");
    train(&config, &resumed, &["--epochs", "1"]);
    let checkpoints = listing(&resumed.join("checkpoints"));
    let latest = resumed
        .join("checkpoints")
        .join(checkpoints.last().unwrap());
    assert_eq!(
        listing(&latest),
        [
            "best.bpk",
            "ema.bpk",
            "model.bpk",
            "optimizer.bpk",
            "state.json"
        ]
    );
    let log = train(&config, &resumed, &["--resume"]);
    assert!(log.contains("resuming after epoch 1"), "{log}");
    let (metrics_resumed, kept_resumed, epochs_resumed) = figures(&resumed);
    assert_eq!(epochs_resumed, epochs);
    assert_eq!(kept_resumed, kept);
    assert_eq!(metrics_resumed, metrics);
}

#[test]
fn the_shipped_best_configs_name_their_recipe() {
    for name in ["fashion-best.toml", "mnist-best.toml"] {
        let text = fs::read_to_string(config(name)).unwrap();
        let config: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            config["model"]["batch_norm"].as_bool(),
            Some(true),
            "{name}"
        );
        assert!(
            config["augment"]["shift"].as_integer().unwrap() > 0,
            "{name}"
        );
        assert!(
            text.starts_with("# "),
            "{name}: a comment says what it reached"
        );
    }
    // Mirroring suits clothing, not digits.
    let flip = |name: &str| {
        let config: toml::Value =
            toml::from_str(&fs::read_to_string(config(name)).unwrap()).unwrap();
        config["augment"]
            .get("flip")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    };
    assert!(flip("fashion-best.toml"));
    assert!(!flip("mnist-best.toml"));
}

#[test]
fn plain_epochs_train_on_the_images_as_they_are() {
    let work = tempfile::tempdir().unwrap();
    // RECIPE for two epochs, with `plain` of them unaugmented, or with no [augment] at all.
    let trained = |name: &str, augment: Option<usize>| {
        let recipe = RECIPE
            .replace("epochs = 4", "epochs = 2")
            .replace("patience = 2\n", "");
        let recipe = match augment {
            Some(plain) => recipe.replace(
                "erase = 0.5",
                &format!("erase = 0.5\nplain_epochs = {plain}"),
            ),
            None => recipe.replace("[augment]\nshift = 2\nerase = 0.5\n", ""),
        };
        let config = work.path().join(format!("{name}.toml"));
        fs::write(&config, recipe).unwrap();
        let model = work.path().join(name);
        train(&config, &model, &[]);
        let (metrics, _, epochs) = figures(&model);
        (metrics, epochs)
    };
    let (augmented, last_plain, all_plain, none) = (
        trained("augmented", Some(0)),
        trained("last-plain", Some(1)),
        trained("all-plain", Some(2)),
        trained("none", None),
    );
    assert_eq!(all_plain, none);
    // The first epoch is augmented's, the second is not.
    assert_eq!(last_plain.1[0], augmented.1[0]);
    assert_ne!(last_plain.1[0], none.1[0]);
    assert_ne!(last_plain.1[1], augmented.1[1]);
}
