//! Training progress for people and for log collectors: a progress bar when stderr is a
//! terminal, plain log lines otherwise (Pachyderm and CI collect those).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::TestMetrics;
use crate::report::metrics::{MetricsSink, StepMetrics};

pub struct Console {
    bar: Option<ProgressBar>,
    steps_per_epoch: usize,
}

impl Console {
    /// A progress bar over `total_steps` on a terminal (unless `CI` is set), log lines elsewhere.
    pub fn new(total_steps: usize, steps_per_epoch: usize, done: usize) -> Self {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = interactive.then(|| {
            let bar = ProgressBar::new(total_steps as u64).with_position(done as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            steps_per_epoch,
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn line(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }
}

impl MetricsSink for Console {
    fn step(&mut self, step: usize, metrics: Option<&StepMetrics>) {
        match (&self.bar, metrics) {
            (Some(bar), metrics) => {
                bar.set_position(step as u64);
                bar.set_prefix(((step - 1) / self.steps_per_epoch.max(1) + 1).to_string());
                if let Some(m) = metrics {
                    bar.set_message(format!(
                        "loss {:.4} acc {:.2}% {:.0} samples/s",
                        m.loss,
                        100.0 * m.accuracy,
                        m.samples_per_second
                    ));
                }
            }
            (None, Some(m)) => eprintln!("{}", m.line()),
            (None, None) => {}
        }
    }

    fn started(&mut self, seconds: f64) {
        self.line(&format!(
            "start-up: the first step finished {seconds:.2}s after the device was chosen"
        ));
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        self.line(&m.line());
    }

    fn finished(&mut self, test: &TestMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let worst = test
            .worst_class
            .as_ref()
            .map_or(String::new(), |worst| format!("; worst class {worst}"));
        let single = test.test_accuracy_single_view.map_or(String::new(), |a| {
            format!(" ({:.2}% from each image's own view alone)", 100.0 * a)
        });
        eprintln!(
            "test: loss {:.4}, accuracy {:.2}%{single}{worst}",
            test.test_loss,
            100.0 * test.test_accuracy
        );
    }
}
