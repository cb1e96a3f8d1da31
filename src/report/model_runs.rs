//! The W&B runs of a trained model's use: `mnist stats --data` logs an `eval` run, `mnist
//! infer` an `inference` run. Each uses the model's artifact, so that W&B's lineage graph reads
//! train → model → eval / inference. The eval run logs the figures, the confusion matrix as
//! W&B's confusion-matrix chart, the per-class figures as a table and the most confident
//! mistakes as a table of images; the inference run, the predicted classes and the least
//! confident predictions as a table of images.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::formats::data::{Images, Labelled};
use crate::formats::model_dir::ModelCard;
use crate::formats::png_digit;
use crate::pachyderm::Provenance;
use crate::report::evaluate::{ClassStats, Evaluation, Predicted};
use crate::wandb::{self, Cell, NewRun, Png, Table, WandbConfig, WandbRun};

/// Images shown in a table, as the W&B UI pages one.
const SHOWN: usize = 64;
/// The chart's key; its table is logged under `<key>_table`.
const CONFUSION: &str = "confusion_matrix";

/// What the evaluation found.
pub struct Evaluated<'a> {
    pub card: &'a ModelCard,
    pub data: &'a Labelled,
    pub evaluation: &'a Evaluation,
    pub stats: &'a ClassStats,
}

/// What inference predicted, image by image, and the input file of each image.
pub struct Inferred<'a> {
    pub card: &'a ModelCard,
    pub images: &'a Images,
    pub predicted: &'a Predicted,
    pub files: &'a [String],
}

/// Where a run's settings and files come from.
pub struct RunPlace<'a> {
    pub key_file: Option<&'a Path>,
    /// Where an offline run is written.
    pub root: &'a Path,
}

/// Logs the evaluation as an `eval` run, if the model's settings and the environment ask for
/// one.
pub fn log_evaluation(evaluated: &Evaluated, place: &RunPlace) -> Result<()> {
    let Evaluated { card, stats, .. } = *evaluated;
    let classes = card.classes().all_names();
    let title = format!("{}: {}", card.summary, stats.data);
    let (confusion, chart) = wandb::confusion_matrix(CONFUSION, &classes, &stats.confusion, &title);
    let config = Map::from_iter([
        ("data".to_string(), json!(stats.data)),
        ("examples".to_string(), json!(stats.examples)),
        // Where W&B's UI finds the custom charts a run draws.
        (
            "_wandb".to_string(),
            json!({"visualize": {CONFUSION: chart}}),
        ),
    ]);
    let Some(run) = start(card, ("eval", "stats"), config, place)? else {
        return Ok(());
    };
    let mut row = Map::from_iter([
        ("eval/accuracy".to_string(), json!(stats.accuracy)),
        ("eval/loss".to_string(), json!(stats.loss)),
        ("eval/examples".to_string(), json!(stats.examples)),
        ("eval/worst_class".to_string(), json!(stats.worst_class)),
        (
            "eval/worst_class_error".to_string(),
            json!(stats.worst_class_error),
        ),
    ]);
    if let Some(name) = &stats.worst_class_name {
        row.insert("eval/worst_class_name".to_string(), json!(name));
    }
    let confusion_key = format!("{CONFUSION}_table");
    let tables = vec![
        (confusion_key.as_str(), confusion),
        ("eval/per_class", per_class(stats)),
        ("eval/mistakes", mistakes(evaluated)?),
    ];
    finish(run, row, tables);
    Ok(())
}

/// Logs the predictions as an `inference` run, if the model's settings and the environment
/// ask for one.
pub fn log_inference(inferred: &Inferred, place: &RunPlace) -> Result<()> {
    let Inferred {
        card, predicted, ..
    } = *inferred;
    let count = predicted.classes.len();
    let config = Map::from_iter([
        ("images".to_string(), json!(count)),
        ("files".to_string(), json!(inferred.files.len())),
    ]);
    let Some(run) = start(card, ("inference", "infer"), config, place)? else {
        return Ok(());
    };
    let mean_confidence = (0..count)
        .map(|i| f64::from(predicted.confidence(i)))
        .sum::<f64>()
        / count.max(1) as f64;
    let row = Map::from_iter([
        ("inference/images".to_string(), json!(count)),
        (
            "inference/mean_confidence".to_string(),
            json!(mean_confidence),
        ),
    ]);
    // The network has an output per class: every prediction is one of them.
    let mut counts = vec![0usize; card.classes];
    for &class in &predicted.classes {
        counts[usize::from(class)] += 1;
    }
    let names = card.classes();
    let mut classes = Table::new(&["class", "name", "predictions"]);
    for (class, n) in counts.into_iter().enumerate() {
        classes.rows.push(vec![
            Cell::Int(class as i64),
            Cell::Text(names.name(class)),
            Cell::Int(n as i64),
        ]);
    }
    let tables = vec![
        ("inference/classes", classes),
        ("inference/least_confident", least_confident(inferred)?),
    ];
    finish(run, row, tables);
    Ok(())
}

/// Starts the run with the model's W&B settings and marks it as a user of the model's
/// artifact; `job` is the job type and the subcommand.
fn start(
    card: &ModelCard,
    (job_type, command): (&str, &str),
    mut config: Map<String, Value>,
    place: &RunPlace,
) -> Result<Option<WandbRun>> {
    let provenance = Provenance::from_env();
    config.insert("model".into(), json!(card.summary));
    config.insert(
        "model_artifact".into(),
        json!(card.wandb_artifact.as_ref().map(|a| &a.name)),
    );
    config.insert("trained_by".into(), json!(card.wandb_run));
    config.insert("classes".into(), json!(card.classes));
    if let Some(names) = &card.class_names {
        config.insert("class_names".into(), json!(names));
    }
    if let Some(provenance) = &provenance {
        config.insert("pachyderm".into(), serde_json::to_value(provenance)?);
    }
    let run = wandb::start(
        &settings_for(card),
        place.key_file,
        &NewRun {
            job_type,
            command,
            config: &config,
            provenance: provenance.as_ref(),
            name: None,
            sweep_id: None,
            root: place.root,
            continues: None,
        },
    )?;
    let Some(mut run) = run else {
        return Ok(None);
    };
    match &card.wandb_artifact {
        Some(artifact) => run.use_artifact(&artifact.name),
        None => eprintln!(
            "wandb: warning: the model card names no W&B artifact (trained offline or without W&B): the {job_type} run is not linked to the model"
        ),
    }
    Ok(Some(run))
}

/// The model's W&B settings; where neither they nor the environment name the entity or the
/// project, those of the model's artifact, so that the run lands beside the model.
fn settings_for(card: &ModelCard) -> WandbConfig {
    let mut settings = card.config.wandb.clone();
    let unset = |name: &str| std::env::var(name).map_or(true, |v| v.is_empty());
    let home = card
        .wandb_artifact
        .as_ref()
        .and_then(|a| wandb::split_artifact_path(&a.name));
    if let Some((entity, project, _)) = home {
        if settings.entity.is_none() && unset("WANDB_ENTITY") {
            settings.entity = Some(entity.to_owned());
        }
        if settings.project.is_none() && unset("WANDB_PROJECT") {
            settings.project = Some(project.to_owned());
        }
    }
    settings
}

/// Logs one row with its tables, which also make the summary, and ends the run.
fn finish(mut run: WandbRun, row: Map<String, Value>, tables: Vec<(&str, Table)>) {
    let summary = run.log_tables(row, tables);
    let report = run.finish(0, summary, Vec::new(), wandb::FINAL_FLUSH);
    if let (true, Some(url)) = (report.completed, report.url) {
        eprintln!("wandb: run {url} delivered");
    }
}

fn per_class(stats: &ClassStats) -> Table {
    let mut table = Table::new(&["class", "name", "precision", "recall", "f1", "support"]);
    for c in &stats.per_class {
        table.rows.push(vec![
            Cell::Int(c.class as i64),
            Cell::Text(c.name.clone().unwrap_or_else(|| c.class.to_string())),
            Cell::Number(c.precision),
            Cell::Number(c.recall),
            Cell::Number(c.f1),
            Cell::Int(c.support as i64),
        ]);
    }
    table
}

/// The wrong predictions made with the most confidence, most confident first.
fn mistakes(evaluated: &Evaluated) -> Result<Table> {
    let Evaluated {
        card,
        data,
        evaluation,
        ..
    } = *evaluated;
    let classes = card.classes();
    let mut wrong: Vec<usize> = (0..data.len())
        .filter(|&i| evaluation.predicted.classes[i] != data.labels[i])
        .collect();
    wrong.sort_by(|&a, &b| {
        evaluation
            .predicted
            .confidence(b)
            .total_cmp(&evaluation.predicted.confidence(a))
    });
    let mut table = Table::new(&["image", "true", "predicted", "confidence", "index"]);
    for &i in wrong.iter().take(SHOWN) {
        let (actual, predicted) = (data.labels[i], evaluation.predicted.classes[i]);
        let caption = format!(
            "{} taken for {}",
            classes.name(actual.into()),
            classes.name(predicted.into())
        );
        table.rows.push(vec![
            Cell::Image(png(&data.images, i, caption)?),
            Cell::Int(i64::from(actual)),
            Cell::Int(i64::from(predicted)),
            Cell::Number(f64::from(evaluation.predicted.confidence(i))),
            Cell::Int(i as i64),
        ]);
    }
    Ok(table)
}

/// The predictions made with the least confidence, least confident first.
fn least_confident(inferred: &Inferred) -> Result<Table> {
    let Inferred {
        card,
        images,
        predicted,
        files,
    } = *inferred;
    let classes = card.classes();
    let mut order: Vec<usize> = (0..predicted.classes.len()).collect();
    order.sort_by(|&a, &b| predicted.confidence(a).total_cmp(&predicted.confidence(b)));
    let mut table = Table::new(&["image", "predicted", "confidence", "file"]);
    for &i in order.iter().take(SHOWN) {
        let class = predicted.classes[i];
        table.rows.push(vec![
            Cell::Image(png(images, i, classes.name(class.into()))?),
            Cell::Int(i64::from(class)),
            Cell::Number(f64::from(predicted.confidence(i))),
            Cell::Text(files[i].clone()),
        ]);
    }
    Ok(table)
}

/// Image `index` of `images`, with `caption` under it.
fn png(images: &Images, index: usize, caption: String) -> Result<Png> {
    let shape = images.shape;
    Ok(Png {
        bytes: png_digit::encode(images.image(index), shape)?,
        width: shape.width,
        height: shape.height,
        caption: Some(caption),
    })
}
