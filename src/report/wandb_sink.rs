//! Training's reports as a W&B run's history: each report a row (and its console line), the
//! final and best figures kept for the run's summary.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::TestMetrics;
use crate::report::metrics::{MetricsSink, StepMetrics};
use crate::wandb::{Artifact, Report, Role, RunFile, RunIdentity, WandbRun};

fn row(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect()
}

/// A run as a metrics sink: logs each report as a history row (and its console line), and
/// keeps the summary (the final and best figures) for the end of the run.
pub struct WandbSink {
    run: WandbRun,
    summary: Map<String, Value>,
}

impl WandbSink {
    pub fn new(run: WandbRun) -> Self {
        Self {
            run,
            summary: Map::new(),
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

    fn step(&mut self, step: usize, metrics: Option<&StepMetrics>) {
        let Some(m) = metrics else { return };
        // A continued run that already holds this step (training went on past its last
        // checkpoint before it was killed) keeps the rows it has.
        let logged = self.run.last_logged("trainer/step").and_then(Value::as_u64);
        if logged.is_some_and(|logged| step as u64 <= logged) {
            return;
        }
        self.run.log(row(&[
            ("trainer/step", json!(step)),
            ("trainer/epoch", json!(m.epoch)),
            ("train/loss", json!(m.loss)),
            ("train/accuracy", json!(m.accuracy)),
            ("train/lr", json!(m.lr)),
            ("train/samples_per_second", json!(m.samples_per_second)),
        ]));
        self.run.console(&m.line());
    }

    fn epoch(&mut self, m: &EpochMetrics) {
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

    fn finished(&mut self, test: &TestMetrics) {
        let mut figures = vec![
            ("test/accuracy", json!(test.test_accuracy)),
            ("test/loss", json!(test.test_loss)),
        ];
        if let Some(worst) = &test.worst_class {
            figures.push(("test/worst_class", json!(worst.class)));
            figures.push(("test/worst_class_error", json!(worst.error)));
            if let Some(name) = &worst.name {
                figures.push(("test/worst_class_name", json!(name)));
            }
        }
        self.run.log(row(&figures));
        for (key, value) in figures {
            self.summary.insert(key.into(), value);
        }
    }
}
