//! Training progress for people and for log collectors: a progress bar when stderr is a
//! terminal, plain log lines otherwise (Pachyderm and CI collect those).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::metrics::{EpochMetrics, MetricsSink, StepMetrics};

pub struct Console {
    bar: Option<ProgressBar>,
    total_steps: usize,
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
            total_steps,
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
            (None, Some(m)) => eprintln!(
                "epoch {} step {}/{}: loss {:.4}, accuracy {:.2}%, lr {:.3e}, {:.0} samples/s",
                m.epoch,
                step,
                self.total_steps,
                m.loss,
                100.0 * m.accuracy,
                m.lr,
                m.samples_per_second
            ),
            (None, None) => {}
        }
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        let validation = match (m.validation_loss, m.validation_accuracy) {
            (Some(loss), Some(acc)) => {
                format!(", validation loss {loss:.4}, accuracy {:.2}%", 100.0 * acc)
            }
            _ => String::new(),
        };
        self.line(&format!(
            "epoch {}: train loss {:.4}, accuracy {:.2}%{validation}; {:.1}s, {:.0} samples/s",
            m.epoch,
            m.train_loss,
            100.0 * m.train_accuracy,
            m.seconds,
            m.samples_per_second
        ));
    }

    fn finished(&mut self, test_accuracy: f64, test_loss: f64) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "test: loss {test_loss:.4}, accuracy {:.2}%",
            100.0 * test_accuracy
        );
    }
}
