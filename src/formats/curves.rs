//! `metrics.json`: the training curves, one record of figures per finished epoch. Checkpoints
//! keep the curves so far in the same form.

use serde::{Deserialize, Serialize};

/// `metrics.json`: the figures of every epoch, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curves {
    pub epochs: Vec<EpochMetrics>,
}

/// The figures of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    /// `None` when the config holds no data out for validation.
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
}

impl EpochMetrics {
    /// The log line for these figures.
    pub fn line(&self) -> String {
        let validation = match (self.validation_loss, self.validation_accuracy) {
            (Some(loss), Some(acc)) => {
                format!(", validation loss {loss:.4}, accuracy {:.2}%", 100.0 * acc)
            }
            _ => String::new(),
        };
        format!(
            "epoch {}: train loss {:.4}, accuracy {:.2}%{validation}; {:.1}s, {:.0} samples/s",
            self.epoch,
            self.train_loss,
            100.0 * self.train_accuracy,
            self.seconds,
            self.samples_per_second
        )
    }
}
