//! `mnist stats --data` as a W&B run of job type `eval`: it uses the model's artifact, so that
//! W&B's lineage graph reads train → model → eval, and logs the figures, the confusion matrix as
//! W&B's confusion-matrix chart, the per-class figures as a table, and the most confident
//! mistakes as a table of images.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, json};

use crate::data::Labelled;
use crate::evaluate::Evaluation;
use crate::model_dir::ModelCard;
use crate::pachyderm::Provenance;
use crate::png_digit;
use crate::stats::ClassStats;
use crate::wandb::{self, Cell, NewRun, Png, Table};

/// The most confident mistakes shown, as the W&B UI pages a table.
const MISTAKES: usize = 64;
/// The chart's key; its table is logged under `<key>_table`.
const CONFUSION: &str = "confusion_matrix";

/// What the evaluation found.
pub struct Evaluated<'a> {
    pub card: &'a ModelCard,
    pub data: &'a Labelled,
    pub evaluation: &'a Evaluation,
    pub stats: &'a ClassStats,
}

/// Logs the evaluation as a W&B run, if the model's settings and the environment ask for one.
pub fn log(evaluated: &Evaluated, key_file: Option<&Path>, root: &Path) -> Result<()> {
    let Evaluated { card, stats, .. } = *evaluated;
    let classes: Vec<String> = (0..card.classes).map(|c| c.to_string()).collect();
    let title = format!("{}: {}", card.summary, stats.data);
    let (confusion, chart) = wandb::confusion_matrix(CONFUSION, &classes, &stats.confusion, &title);
    let provenance = Provenance::from_env();
    let mut config = Map::new();
    config.insert("model".into(), json!(card.summary));
    config.insert(
        "model_artifact".into(),
        json!(card.wandb_artifact.as_ref().map(|a| &a.name)),
    );
    config.insert("trained_by".into(), json!(card.wandb_run));
    config.insert("data".into(), json!(stats.data));
    config.insert("examples".into(), json!(stats.examples));
    if let Some(provenance) = &provenance {
        config.insert("pachyderm".into(), serde_json::to_value(provenance)?);
    }
    // Where W&B's UI finds the custom charts a run draws.
    config.insert("_wandb".into(), json!({"visualize": {CONFUSION: chart}}));
    let Some(mut run) = wandb::start(
        &card.config.wandb,
        key_file,
        &NewRun {
            job_type: "eval",
            command: "stats",
            config: &config,
            provenance: provenance.as_ref(),
            name: None,
            sweep_id: None,
            root,
        },
    )?
    else {
        return Ok(());
    };
    match &card.wandb_artifact {
        Some(artifact) => run.use_artifact(&artifact.name),
        None => eprintln!(
            "wandb: warning: the model card names no W&B artifact (trained offline or without W&B): the eval run is not linked to the model"
        ),
    }
    let row = Map::from_iter([
        ("eval/accuracy".to_string(), json!(stats.accuracy)),
        ("eval/loss".to_string(), json!(stats.loss)),
        ("eval/examples".to_string(), json!(stats.examples)),
        ("eval/worst_class".to_string(), json!(stats.worst_class)),
        (
            "eval/worst_class_error".to_string(),
            json!(stats.worst_class_error),
        ),
    ]);
    let confusion_key = format!("{CONFUSION}_table");
    let tables = vec![
        (confusion_key.as_str(), confusion),
        ("eval/per_class", per_class(stats)),
        ("eval/mistakes", mistakes(evaluated)?),
    ];
    let summary = run.log_tables(row, tables);
    let report = run.finish(0, summary, Vec::new(), wandb::FINAL_FLUSH);
    if let (true, Some(url)) = (report.completed, report.url) {
        eprintln!("wandb: eval run {url} delivered");
    }
    Ok(())
}

fn per_class(stats: &ClassStats) -> Table {
    let mut table = Table::new(&["class", "precision", "recall", "f1", "support"]);
    for c in &stats.per_class {
        table.rows.push(vec![
            Cell::Int(c.class as i64),
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
        data, evaluation, ..
    } = *evaluated;
    let mut wrong: Vec<usize> = (0..data.len())
        .filter(|&i| evaluation.predictions[i] != data.labels[i])
        .collect();
    wrong.sort_by(|&a, &b| evaluation.confidences[b].total_cmp(&evaluation.confidences[a]));
    let shape = data.images.shape;
    let mut table = Table::new(&["image", "true", "predicted", "confidence", "index"]);
    for &i in wrong.iter().take(MISTAKES) {
        let png = Png {
            bytes: png_digit::encode(data.images.image(i), shape)?,
            width: shape.width,
            height: shape.height,
        };
        table.rows.push(vec![
            Cell::Image(png),
            Cell::Int(i64::from(data.labels[i])),
            Cell::Int(i64::from(evaluation.predictions[i])),
            Cell::Number(f64::from(evaluation.confidences[i])),
            Cell::Int(i as i64),
        ]);
    }
    Ok(table)
}
