//! Training's reports as a W&B run's history: each report a row (and its console line), the
//! final and best figures kept for the run's summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::TestMetrics;
use crate::report::metrics::{MetricsSink, StepMetrics};
use crate::wandb::{
    Artifact, Entry, Report, Role, RunFile, RunIdentity, WandbRun, checkpoint_collection,
};

/// The files of a checkpoint directory, by name, read now: the next checkpoint may replace them
/// before the upload.
fn checkpoint_entries(dir: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            entries.insert(name.into_owned(), Entry::bytes(std::fs::read(&path)?));
        }
    }
    Ok(entries)
}

fn row(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect()
}

/// Where a row falls in a training's history: by epoch, an epoch's step rows in step order
/// and then its epoch row; the test figures last. A continued run sends only the rows that
/// fall after the last one its destination holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Training {
        epoch: u64,
        /// 0 for a step row, 1 for the epoch's row.
        row: u8,
        step: u64,
    },
    Test,
}

impl Place {
    fn step(m: &StepMetrics) -> Self {
        Self::Training {
            epoch: m.epoch as u64,
            row: 0,
            step: m.step as u64,
        }
    }

    fn epoch(m: &EpochMetrics) -> Self {
        Self::Training {
            epoch: m.epoch as u64,
            row: 1,
            step: 0,
        }
    }

    /// The place of a row as W&B holds it; `None` for no row.
    fn of(row: &Map<String, Value>) -> Option<Self> {
        if row.is_empty() {
            return None;
        }
        let number = |key: &str| row.get(key).and_then(Value::as_u64);
        Some(match (number("trainer/epoch"), number("trainer/step")) {
            (Some(epoch), Some(step)) => Self::Training {
                epoch,
                row: 0,
                step,
            },
            (Some(epoch), None) => Self::Training {
                epoch,
                row: 1,
                step: 0,
            },
            // The test figures, or a row this tool does not write: nothing goes after it.
            (None, _) => Self::Test,
        })
    }
}

/// A run as a metrics sink: logs each report as a history row (and its console line), and
/// keeps the summary (the final and best figures) for the end of the run.
pub struct WandbSink {
    run: WandbRun,
    summary: Map<String, Value>,
    /// The last row the run's destination held when this process started, where it is known.
    held: Option<Place>,
    /// Whether the destination could be asked what it holds.
    known: bool,
}

impl WandbSink {
    pub fn new(run: WandbRun) -> Self {
        let (held, known) = match run.last_held() {
            Some(row) => (Place::of(row), true),
            None => (None, false),
        };
        Self {
            run,
            summary: Map::new(),
            held,
            known,
        }
    }

    /// Whether the row at `place` is one the destination lacks.
    fn lacks(&self, place: Place) -> bool {
        self.held.is_none_or(|held| place > held)
    }

    fn log_step(&mut self, m: &StepMetrics) {
        if !self.lacks(Place::step(m)) {
            return;
        }
        self.run.log(row(&[
            ("trainer/step", json!(m.step)),
            ("trainer/epoch", json!(m.epoch)),
            ("train/loss", json!(m.loss)),
            ("train/accuracy", json!(m.accuracy)),
            ("train/lr", json!(m.lr)),
            ("train/samples_per_second", json!(m.samples_per_second)),
        ]));
        self.run.console(&m.line());
    }

    fn log_epoch(&mut self, m: &EpochMetrics) {
        self.summarize(m);
        if !self.lacks(Place::epoch(m)) {
            return;
        }
        self.run.log(row(&[
            ("trainer/epoch", json!(m.epoch)),
            ("epoch/train_loss", json!(m.train_loss)),
            ("epoch/train_accuracy", json!(m.train_accuracy)),
            ("val/loss", json!(m.validation_loss)),
            ("val/accuracy", json!(m.validation_accuracy)),
            ("epoch/seconds", json!(m.seconds)),
            ("epoch/samples_per_second", json!(m.samples_per_second)),
        ]));
        self.run.console(&m.line());
    }

    /// A step row of the checkpoint, where the destination is known to lack it.
    fn replay_step(&mut self, m: &StepMetrics) {
        if self.known {
            self.log_step(m);
        }
    }

    /// The final and best figures, with epoch `m`.
    fn summarize(&mut self, m: &EpochMetrics) {
        let figures = &mut self.summary;
        figures.insert("train/loss".into(), json!(m.train_loss));
        figures.insert("train/accuracy".into(), json!(m.train_accuracy));
        figures.insert("epoch".into(), json!(m.epoch));
        if let Some(accuracy) = m.validation_accuracy {
            let best = figures.get("best/val_accuracy").and_then(Value::as_f64);
            if best.is_none_or(|best| accuracy > best) {
                figures.insert("best/val_accuracy".into(), json!(accuracy));
                figures.insert("best/epoch".into(), json!(m.epoch));
            }
            figures.insert("val/accuracy".into(), json!(accuracy));
            figures.insert("val/loss".into(), json!(m.validation_loss));
        }
    }

    /// The run's page, once the server has created the run.
    pub fn url(&self) -> Option<String> {
        self.run.url()
    }

    /// Logs an artifact the run made or read; see [`WandbRun::log_artifact`].
    pub fn log_artifact(&mut self, artifact: Artifact, role: Role) {
        self.run.log_artifact(artifact, role);
    }

    /// Ends the run with its exit code and files; see [`WandbRun::finish`].
    pub fn finish(self, exit_code: i32, files: Vec<RunFile>, deadline: Duration) -> Report {
        self.run.finish(exit_code, self.summary, files, deadline)
    }
}

impl MetricsSink for WandbSink {
    fn stop_requested(&self) -> bool {
        self.run.stop_requested()
    }

    fn run_identity(&self) -> Option<RunIdentity> {
        Some(self.run.identity())
    }

    fn step(&mut self, _step: usize, metrics: Option<&StepMetrics>) {
        if let Some(m) = metrics {
            self.log_step(m);
        }
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        self.log_epoch(m);
    }

    /// Sends, in order, the checkpoint's rows that the destination lacks (those made after its
    /// last row and before the process that made them died), with the `_step`s they would
    /// have had; and takes the earlier epochs into the summary.
    fn resumed(&mut self, steps: &[StepMetrics], epochs: &[EpochMetrics]) {
        let mut steps = steps.iter().peekable();
        for epoch in epochs {
            while let Some(m) = steps.next_if(|m| Place::step(m) < Place::epoch(epoch)) {
                self.replay_step(m);
            }
            if self.known {
                self.log_epoch(epoch);
            } else {
                self.summarize(epoch);
            }
        }
        for m in steps {
            self.replay_step(m);
        }
    }

    /// Logs the checkpoint as the latest version of the run's `checkpoint` artifact, for a
    /// `--resume` on a node without it.
    fn checkpointed(&mut self, step: usize, dir: &Path) {
        if !self.run.online() {
            return;
        }
        let mut artifact =
            Artifact::new(checkpoint_collection(&self.run.identity().id), "checkpoint");
        artifact.metadata.insert("step".into(), json!(step));
        let entries = checkpoint_entries(dir);
        match entries {
            Ok(entries) => {
                artifact.entries = entries;
                self.run.log_checkpoint(artifact);
            }
            Err(err) => eprintln!(
                "wandb: warning: the checkpoint in {} is not logged: {err}",
                dir.display()
            ),
        }
    }

    fn finished(&mut self, test: &TestMetrics) {
        let mut figures = vec![
            ("test/accuracy", json!(test.test_accuracy)),
            ("test/loss", json!(test.test_loss)),
        ];
        if let Some(single) = test.test_accuracy_single_view {
            figures.push(("test/accuracy_single_view", json!(single)));
        }
        if let Some(worst) = &test.worst_class {
            figures.push(("test/worst_class", json!(worst.class)));
            figures.push(("test/worst_class_error", json!(worst.error)));
            if let Some(name) = &worst.name {
                figures.push(("test/worst_class_name", json!(name)));
            }
        }
        if self.lacks(Place::Test) {
            self.run.log(row(&figures));
        }
        for (key, value) in figures {
            self.summary.insert(key.into(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(epoch: usize, step: usize) -> Place {
        Place::step(&StepMetrics {
            epoch,
            step,
            total_steps: 100,
            loss: 0.5,
            accuracy: 0.5,
            lr: 0.1,
            samples_per_second: 1.0,
        })
    }

    fn epoch(epoch: usize) -> Place {
        Place::epoch(&EpochMetrics {
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.5,
            validation_loss: None,
            validation_accuracy: None,
            seconds: 1.0,
            samples_per_second: 1.0,
        })
    }

    #[test]
    fn rows_fall_in_the_order_training_logs_them() {
        let logged = [
            step(1, 20),
            step(1, 25),
            epoch(1),
            step(2, 40),
            step(2, 50),
            epoch(2),
            Place::Test,
        ];
        assert!(
            logged.windows(2).all(|pair| pair[0] < pair[1]),
            "{logged:?}"
        );
    }

    #[test]
    fn the_last_row_held_is_read_back_from_its_keys() {
        let held = |row: Value| match row {
            Value::Object(row) => Place::of(&row),
            _ => None,
        };
        let step_row =
            json!({"_step": 7, "trainer/step": 50, "trainer/epoch": 2, "train/loss": 0.3});
        assert_eq!(held(step_row), Some(step(2, 50)));
        let epoch_row = json!({"_step": 8, "trainer/epoch": 2, "epoch/train_loss": 0.3});
        assert_eq!(held(epoch_row), Some(epoch(2)));
        assert_eq!(
            held(json!({"_step": 9, "test/accuracy": 0.9})),
            Some(Place::Test)
        );
        assert_eq!(held(json!({})), None);
    }
}
