//! The trained models of a sweep side by side, best first: by validation accuracy, ties by
//! test loss. Written as `leaderboard.json` (for tools) and `leaderboard.md` (for people).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::files::output;
use crate::formats::model_dir::{ModelDir, WorstClass};

/// One trained model's line.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub rank: usize,
    /// The model directory's name: the trial's.
    pub name: String,
    /// What the sweep varied, by dotted key; empty for a model outside a sweep.
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub validation_accuracy: Option<f64>,
    pub validation_loss: Option<f64>,
    pub test_accuracy: f64,
    pub test_loss: f64,
    /// The class the model misses most on the test set, by name where it has one.
    pub worst_class: Option<WorstClass>,
    pub epochs: usize,
    pub seconds: f64,
    pub wandb_run: Option<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    pub entries: Vec<Entry>,
}

impl Leaderboard {
    /// Ranks every model directory directly under `models`.
    pub fn of(models: &Path) -> Result<Self> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(models)
            .with_context(|| format!("listing {}", models.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.join(ModelDir::CARD).is_file())
            .collect();
        dirs.sort();
        anyhow::ensure!(
            !dirs.is_empty(),
            "{}: no model directories in it (each a directory holding {})",
            models.display(),
            ModelDir::CARD
        );
        let mut entries = dirs.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        entries.sort_by(|a, b| {
            let accuracy = |e: &Entry| e.validation_accuracy.unwrap_or(f64::NEG_INFINITY);
            accuracy(b)
                .total_cmp(&accuracy(a))
                .then(a.test_loss.total_cmp(&b.test_loss))
                .then_with(|| a.name.cmp(&b.name))
        });
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.rank = i + 1;
        }
        Ok(Self { entries })
    }

    pub fn best(&self) -> &Entry {
        &self.entries[0]
    }

    /// Writes `leaderboard.json` and `leaderboard.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        output::write_json(&dir.join("leaderboard.json"), self)?;
        output::write_file(&dir.join("leaderboard.md"), self.markdown().as_bytes())
    }

    /// The table as Markdown, the varied parameters one column each.
    pub fn markdown(&self) -> String {
        let keys: Vec<&String> = self
            .entries
            .iter()
            .flat_map(|e| e.parameters.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let percent = |x: Option<f64>| x.map_or("–".into(), |x| format!("{:.2}%", 100.0 * x));
        let loss = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.4}"));
        let mut header = vec!["rank".to_owned(), "model".to_owned()];
        header.extend(keys.iter().map(|k| format!("`{k}`")));
        header.extend(
            [
                "val accuracy",
                "val loss",
                "test accuracy",
                "test loss",
                "worst class",
                "epochs",
                "seconds",
                "W&B run",
            ]
            .map(String::from),
        );
        let mut lines = vec![row(&header), row(&vec!["---".to_owned(); header.len()])];
        for e in &self.entries {
            let mut cells = vec![e.rank.to_string(), e.name.clone()];
            cells.extend(
                keys.iter()
                    .map(|k| e.parameters.get(*k).map_or("–".into(), cell)),
            );
            cells.extend([
                percent(e.validation_accuracy),
                loss(e.validation_loss),
                percent(Some(e.test_accuracy)),
                loss(Some(e.test_loss)),
                // A name may hold the table's separator.
                e.worst_class
                    .as_ref()
                    .map_or("–".into(), |w| w.to_string().replace('|', "\\|")),
                e.epochs.to_string(),
                format!("{:.1}", e.seconds),
                e.wandb_run
                    .as_ref()
                    .map_or("–".into(), |url| format!("[run]({url})")),
            ]);
            lines.push(row(&cells));
        }
        lines.join("\n") + "\n"
    }
}

/// `x` to `digits` significant digits, as the shortest decimal that reads back to that.
pub fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A parameter's value for people: floats to 4 significant digits.
fn cell(value: &serde_json::Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() => significant(x, 4).to_string(),
        _ => value.to_string(),
    }
}

fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

fn entry(dir: PathBuf) -> Result<Entry> {
    let model = ModelDir::new(&dir);
    let card = model.card()?;
    let last = model.curves()?.epochs.pop();
    Ok(Entry {
        rank: 0,
        name: dir
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
        parameters: card
            .config
            .sweep
            .map(|trial| trial.parameters)
            .unwrap_or_default(),
        validation_accuracy: last.as_ref().and_then(|m| m.validation_accuracy),
        validation_loss: last.as_ref().and_then(|m| m.validation_loss),
        test_accuracy: card.metrics.test_accuracy,
        test_loss: card.metrics.test_loss,
        worst_class: card.metrics.worst_class,
        epochs: card.training.epochs,
        seconds: card.training.seconds,
        wandb_run: card.wandb_run,
        dir,
    })
}
