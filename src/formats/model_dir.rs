//! The model directory that `mnist train` writes and the other stages read: the weights
//! (`model.bpk`), the card describing them and the test figures (`model.json`), and the training
//! curves (`metrics.json`). Each figure is stored in one of them only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::Device;
use model::{InputShape, Network};
use serde::{Deserialize, Serialize};

use super::classes::{self, Classes};
use super::curves::Curves;
use super::exports::{self, About, ExportFormat};
use crate::device::backend::BackendInfo;
use crate::files::output;
use crate::formats::config::TrainConfig;
use crate::pachyderm::Provenance;

/// A model directory, named by its path; it alone knows the names of the files in it.
#[derive(Debug, Clone)]
pub struct ModelDir {
    path: PathBuf,
}

/// `model.json`: everything needed to rebuild, use and trace a trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// e.g. `cnn conv3x3 1-32-64-pool2 fc 9216-128-10 relu`.
    pub summary: String,
    pub parameters: usize,
    pub input: InputShape,
    pub classes: usize,
    /// The classes' names, in label order, when the data named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// The full training config, architecture and preprocessing included.
    pub config: TrainConfig,
    pub dataset: DatasetInfo,
    pub backend: BackendInfo,
    pub training: TrainingInfo,
    /// The trained network on the test split; the per-epoch figures are in `metrics.json`.
    pub metrics: TestMetrics,
    /// The Pachyderm job, datum and input commits, when trained in a pipeline.
    pub provenance: Option<Provenance>,
    /// The W&B run that trained the model, when it was logged online.
    #[serde(default)]
    pub wandb_run: Option<String>,
    /// The W&B artifact version the model was logged as, once the server has numbered it.
    #[serde(default)]
    pub wandb_artifact: Option<ArtifactLink>,
    /// Version of the `mnist` tool that trained the model.
    pub crate_version: String,
}

impl ModelCard {
    /// The classes the model tells apart.
    pub fn classes(&self) -> Classes {
        Classes {
            count: self.classes,
            names: self.class_names.clone(),
        }
    }

    /// What the model's exports say of it.
    pub fn about(&self) -> About<'_> {
        About {
            summary: &self.summary,
            input: self.input,
            classes: self.classes().all_names(),
            preprocess: self.config.preprocess,
            views: self.config.tta,
            test_accuracy: self.metrics.test_accuracy,
            trained_by: &self.crate_version,
            wandb_run: self.wandb_run.as_deref(),
        }
    }
}

/// A W&B artifact version: the name the SDK and `mnist stats` use it by, and its page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactLink {
    /// `entity/project/collection:vN`.
    pub name: String,
    pub url: String,
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
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Epochs this run continued from a checkpoint, if it did.
    pub resumed_from_epoch: Option<usize>,
    /// Which epoch's network the model is, and why; absent from cards written before it was
    /// recorded (which kept the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<KeptEpoch>,
}

/// The epoch whose network a model keeps, beside the last one trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEpoch {
    pub epoch: usize,
    /// Its validation accuracy, where there was validation data.
    pub validation_accuracy: Option<f64>,
    pub last_epoch: usize,
    pub last_validation_accuracy: Option<f64>,
    /// Whether the weights are the moving average (`training.ema_decay`).
    pub averaged: bool,
    /// Whether training stopped before `training.epochs` (`training.patience`).
    pub stopped_early: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestMetrics {
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// With test-time augmentation (`[tta]`), the accuracy of each image's own view alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy_single_view: Option<f64>,
    /// The class most often missed on the test set; absent from cards written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_class: Option<WorstClass>,
}

/// The class with the lowest recall: its number, its name where the classes have names, and
/// its error rate (1 - recall).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstClass {
    pub class: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub error: f64,
}

impl std::fmt::Display for WorstClass {
    /// `6 Shirt (33.80% error)`, or `6 (33.80% error)` without a name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = classes::labelled(self.class, self.name.as_deref());
        write!(f, "{class} ({:.2}% error)", 100.0 * self.error)
    }
}

/// A trained model read back from its directory.
pub struct LoadedModel {
    pub card: ModelCard,
    pub network: Network,
}

impl ModelDir {
    pub const WEIGHTS: &str = "model.bpk";
    pub const CARD: &str = "model.json";
    pub const CURVES: &str = "metrics.json";

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where checkpoints go unless told otherwise.
    pub fn default_checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// The files of a complete model directory, by name, the card last (as they are written):
    /// the exports among them where they are present.
    pub fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let exports = ExportFormat::ALL.iter().flat_map(|format| format.files());
        let exports = exports.filter(|name| self.path.join(name).is_file());
        [Self::WEIGHTS, Self::CURVES]
            .into_iter()
            .chain(exports.copied())
            .chain([Self::CARD])
            .map(|name| (name, self.path.join(name)))
            .collect()
    }

    /// Writes a trained model and its `exports`. The card goes last: its presence marks a
    /// complete directory.
    pub fn write(
        &self,
        network: &Network,
        card: &ModelCard,
        curves: &Curves,
        exports: &[ExportFormat],
    ) -> Result<()> {
        output::write_file(
            &self.path.join(Self::WEIGHTS),
            &model::save_weights(network)?,
        )?;
        output::write_json(&self.path.join(Self::CURVES), curves)?;
        exports::write(network, &card.about(), exports, &self.path)?;
        // Exports of an earlier model trained into the same directory would not be this one's.
        let stale = ExportFormat::ALL
            .iter()
            .filter(|format| !exports.contains(format));
        for name in stale.flat_map(|format| format.files()) {
            output::remove_file(&self.path.join(name))?;
        }
        self.write_card(card)
    }

    /// Replaces the card of a written model.
    pub fn write_card(&self, card: &ModelCard) -> Result<()> {
        output::write_json(&self.path.join(Self::CARD), card)
    }

    /// Copies the model to `to`, the card last.
    pub fn copy_to(&self, to: &ModelDir) -> Result<()> {
        for (name, path) in self.files() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            output::write_file(&to.path.join(name), &bytes)?;
        }
        Ok(())
    }

    /// Reads the model back, its card checked against itself before the weights are loaded.
    pub fn load(&self, device: &Device) -> Result<LoadedModel> {
        let card = self.card()?;
        let dir = &self.path;
        let weights_path = dir.join(Self::WEIGHTS);
        let bytes = std::fs::read(&weights_path)
            .with_context(|| format!("{}: cannot read the weights", weights_path.display()))?;
        let network =
            model::load_weights(&card.config.model, card.input, card.classes, bytes, device)
                .with_context(|| weights_path.display().to_string())?;
        Ok(LoadedModel { card, network })
    }

    /// The card alone, checked against itself.
    pub fn card(&self) -> Result<ModelCard> {
        let dir = &self.path;
        anyhow::ensure!(
            dir.is_dir(),
            "{}: no such model directory (write one with `mnist train`)",
            dir.display()
        );
        let card_path = dir.join(Self::CARD);
        let text = std::fs::read_to_string(&card_path).with_context(|| {
            format!(
                "{}: cannot read the model card (is {} a model directory written by `mnist train`?)",
                card_path.display(),
                dir.display()
            )
        })?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: invalid model card: {err}", card_path.display()))?;
        if let Some(names) = &card.class_names {
            anyhow::ensure!(
                names.len() == card.classes,
                "{}: invalid model card: {} class names for {} classes",
                card_path.display(),
                names.len(),
                card.classes
            );
        }
        card.config.model.check(card.input).map_err(|err| {
            anyhow::anyhow!(
                "{}: invalid model card: config.{err} (input {}x{})",
                card_path.display(),
                card.input.height,
                card.input.width
            )
        })?;
        Ok(card)
    }

    /// The training curves.
    pub fn curves(&self) -> Result<Curves> {
        let path = self.path.join(Self::CURVES);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read the curves", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: invalid curves: {err}", path.display()))
    }
}
