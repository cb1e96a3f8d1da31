//! What training reports while it runs, and the trait of the sinks that receive it: the
//! console (`console`) and the W&B run (`wandb_sink`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::TestMetrics;
use crate::wandb::RunIdentity;

/// Running training figures over the last `log_every` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub epoch: usize,
    /// Global step, 1-based, of `total_steps`.
    pub step: usize,
    pub total_steps: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub samples_per_second: f64,
}

impl StepMetrics {
    /// The log line for these figures.
    pub fn line(&self) -> String {
        format!(
            "epoch {} step {}/{}: loss {:.4}, accuracy {:.2}%, lr {:.3e}, {:.0} samples/s",
            self.epoch,
            self.step,
            self.total_steps,
            self.loss,
            100.0 * self.accuracy,
            self.lr,
            self.samples_per_second
        )
    }
}

/// Receives what training reports. Every method has a default, so a sink takes only what it
/// needs.
pub trait MetricsSink {
    /// A new step count is reached; `metrics` is `Some` every `log_every` steps, when the
    /// running figures are read from the device.
    fn step(&mut self, _step: usize, _metrics: Option<&StepMetrics>) {}
    /// The first step of this process is done, `seconds` after the device was chosen: the
    /// start-up (on a GPU, kernel compilation and autotuning unless they were cached).
    fn started(&mut self, _seconds: f64) {}
    fn epoch(&mut self, _metrics: &EpochMetrics) {}
    fn finished(&mut self, _test: &TestMetrics) {}
    /// Training continues from a checkpoint, which holds every report made before it: the step
    /// reports (`steps`) and the complete epochs (`epochs`), in order.
    fn resumed(&mut self, _steps: &[StepMetrics], _epochs: &[EpochMetrics]) {}
    /// A checkpoint of global step `step` was written to `dir`.
    fn checkpointed(&mut self, _step: usize, _dir: &Path) {}
    /// Whether training should stop now (a W&B run stopped from its web page).
    fn stop_requested(&self) -> bool {
        false
    }
    /// The W&B run the sink logs to, for a checkpoint to continue it.
    fn run_identity(&self) -> Option<RunIdentity> {
        None
    }
}

/// Hands everything to each of several sinks.
#[derive(Default)]
pub struct Sinks<'a>(pub Vec<&'a mut dyn MetricsSink>);

impl MetricsSink for Sinks<'_> {
    fn step(&mut self, step: usize, metrics: Option<&StepMetrics>) {
        self.0.iter_mut().for_each(|s| s.step(step, metrics));
    }

    fn started(&mut self, seconds: f64) {
        self.0.iter_mut().for_each(|s| s.started(seconds));
    }

    fn epoch(&mut self, metrics: &EpochMetrics) {
        self.0.iter_mut().for_each(|s| s.epoch(metrics));
    }

    fn finished(&mut self, test: &TestMetrics) {
        self.0.iter_mut().for_each(|s| s.finished(test));
    }

    fn resumed(&mut self, steps: &[StepMetrics], epochs: &[EpochMetrics]) {
        self.0.iter_mut().for_each(|s| s.resumed(steps, epochs));
    }

    fn checkpointed(&mut self, step: usize, dir: &Path) {
        self.0.iter_mut().for_each(|s| s.checkpointed(step, dir));
    }

    fn stop_requested(&self) -> bool {
        self.0.iter().any(|s| s.stop_requested())
    }

    fn run_identity(&self) -> Option<RunIdentity> {
        self.0.iter().find_map(|s| s.run_identity())
    }
}

/// An absent sink takes nothing.
impl<S: MetricsSink> MetricsSink for Option<S> {
    fn step(&mut self, step: usize, metrics: Option<&StepMetrics>) {
        if let Some(sink) = self {
            sink.step(step, metrics);
        }
    }

    fn started(&mut self, seconds: f64) {
        if let Some(sink) = self {
            sink.started(seconds);
        }
    }

    fn epoch(&mut self, metrics: &EpochMetrics) {
        if let Some(sink) = self {
            sink.epoch(metrics);
        }
    }

    fn finished(&mut self, test: &TestMetrics) {
        if let Some(sink) = self {
            sink.finished(test);
        }
    }

    fn resumed(&mut self, steps: &[StepMetrics], epochs: &[EpochMetrics]) {
        if let Some(sink) = self {
            sink.resumed(steps, epochs);
        }
    }

    fn checkpointed(&mut self, step: usize, dir: &Path) {
        if let Some(sink) = self {
            sink.checkpointed(step, dir);
        }
    }

    fn stop_requested(&self) -> bool {
        self.as_ref().is_some_and(MetricsSink::stop_requested)
    }

    fn run_identity(&self) -> Option<RunIdentity> {
        self.as_ref().and_then(MetricsSink::run_identity)
    }
}
