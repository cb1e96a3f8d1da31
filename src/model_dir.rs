//! The model directory that `mnist train` writes and the other stages read: the weights
//! (`model.bpk`), the card describing them (`model.json`) and the training curves
//! (`metrics.json`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::Device;
use model::{InputShape, Network};
use serde::{Deserialize, Serialize};

use crate::backend::BackendInfo;
use crate::config::TrainConfig;
use crate::metrics::EpochMetrics;
use crate::pachyderm::Provenance;

pub const WEIGHTS: &str = "model.bpk";
pub const CARD: &str = "model.json";
pub const METRICS: &str = "metrics.json";

/// `model.json`: everything needed to rebuild, use and trace a trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// e.g. `cnn conv3x3 1-32-64 pool2 fc 9216-128-10 relu`.
    pub summary: String,
    pub parameters: usize,
    pub input: InputShape,
    pub classes: usize,
    /// The full training config, architecture and preprocessing included.
    pub config: TrainConfig,
    pub dataset: DatasetInfo,
    pub backend: BackendInfo,
    pub training: TrainingInfo,
    pub metrics: FinalMetrics,
    /// The Pachyderm job, datum and input commits, when trained in a pipeline.
    pub provenance: Option<Provenance>,
    /// Version of the `mnist` tool that trained the model.
    pub crate_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub source: String,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub epochs: usize,
    pub steps: usize,
    pub seed: u64,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Epochs this run continued from a checkpoint, if it did.
    pub resumed_from_epoch: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

/// `metrics.json`: the per-epoch curves and the final test figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsFile {
    pub epochs: Vec<EpochMetrics>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub backend: BackendInfo,
}

/// A trained model read back from its directory.
pub struct LoadedModel {
    pub card: ModelCard,
    pub network: Network,
}

impl LoadedModel {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "{}: no such model directory (write one with `mnist train`)",
            dir.display()
        );
        let card_path = dir.join(CARD);
        let text = std::fs::read_to_string(&card_path).with_context(|| {
            format!(
                "{}: cannot read the model card (is {} a model directory written by `mnist train`?)",
                card_path.display(),
                dir.display()
            )
        })?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: invalid model card: {err}", card_path.display()))?;
        card.config.model.check(card.input).map_err(|err| {
            anyhow::anyhow!(
                "{}: invalid model card: config.{err} (input {}x{})",
                card_path.display(),
                card.input.height,
                card.input.width
            )
        })?;
        let weights_path = dir.join(WEIGHTS);
        let bytes = std::fs::read(&weights_path)
            .with_context(|| format!("{}: cannot read the weights", weights_path.display()))?;
        let network =
            model::load_weights(&card.config.model, card.input, card.classes, bytes, device)
                .with_context(|| weights_path.display().to_string())?;
        Ok(Self { card, network })
    }
}

/// Where checkpoints of a model directory go.
pub fn checkpoints_dir(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}
