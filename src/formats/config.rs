//! Training configuration: one TOML file naming the network, the preprocessing, the training
//! schedule and the optimizer. Unknown keys are errors, so a typo never silently falls back to
//! a default.

use std::path::Path;

use anyhow::{Context, Result, bail};
use model::Architecture;

use crate::formats::classes::Names;
use crate::wandb::WandbConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: Architecture,
    pub preprocess: Preprocess,
    pub training: Training,
    pub optimizer: Optimizer,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub wandb: WandbConfig,
    #[serde(default, skip_serializing_if = "DataConfig::is_empty")]
    pub data: DataConfig,
    /// Set in the configs `mnist sweep` writes: which sweep and trial this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepTrial>,
}

/// `[data]`: what the data's labels stand for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The classes' names, in label order; else a `classes.txt` beside the data names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

impl DataConfig {
    fn is_empty(&self) -> bool {
        self.classes.is_none()
    }
}

/// A trial of a sweep: the sweep, the trial's name, and the parameters it set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepTrial {
    /// The sweep's name.
    pub sweep: String,
    /// The W&B sweep the trial's run joins, when the sweep was created in W&B.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The trial's name (`trial-003_lr=0.001`), which also names its config and model.
    pub trial: String,
    /// Dotted keys (`optimizer.lr`) and the values this trial gave them.
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
}

/// How pixels 0..255 become network inputs. (Variants without data are written as empty
/// structs: serde ignores unknown keys beside the tag of a unit variant.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// Any ink is 1, background 0 (the older Go example).
    Binarize {},
    /// `pixel / 255`.
    Scale {},
    /// `(pixel / 255 - mean) / std`.
    Standardize { mean: f32, std: f32 },
}

impl Preprocess {
    /// The network input for each pixel value, as a lookup table.
    pub fn table(&self) -> [f32; 256] {
        std::array::from_fn(|pixel| {
            let value = pixel as f32 / 255.0;
            match *self {
                Self::Binarize {} => f32::from(u8::from(pixel > 0)),
                Self::Scale {} => value,
                Self::Standardize { mean, std } => (value - mean) / std,
            }
        })
    }

    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        let table = self.table();
        pixels.iter().map(|&p| table[usize::from(p)]).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    pub epochs: usize,
    pub batch_size: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub loss: Loss,
    /// Share of the training data held out for per-epoch validation.
    #[serde(default)]
    pub validation_split: f64,
    /// Log (and report to the metrics sinks) the running figures every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// The longest time between two checkpoints within an epoch, in minutes.
    #[serde(default = "default_checkpoint_every_minutes")]
    pub checkpoint_every_minutes: f64,
}

fn default_seed() -> u64 {
    42
}

fn default_log_every() -> usize {
    50
}

fn default_checkpoint_every_minutes() -> f64 {
    10.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy on the class scores.
    #[default]
    CrossEntropy,
    /// Mean squared error between the outputs and the one-hot labels (the older Go example).
    SquaredError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
        #[serde(default)]
        weight_decay: f64,
    },
    Adamw {
        lr: f64,
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_epsilon")]
        epsilon: f32,
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
}

fn default_beta1() -> f32 {
    0.9
}

fn default_beta2() -> f32 {
    0.999
}

fn default_epsilon() -> f32 {
    1e-8
}

fn default_adamw_decay() -> f64 {
    1e-2
}

impl Optimizer {
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } | Self::Adamw { lr, .. } => lr,
        }
    }

    pub fn set_lr(&mut self, value: f64) {
        match self {
            Self::Sgd { lr, .. } | Self::Adam { lr, .. } | Self::Adamw { lr, .. } => *lr = value,
        }
    }
}

/// The learning rate over the run, from the optimizer's `lr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {},
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        every_epochs: usize,
        gamma: f64,
    },
    /// Cosine decay from `lr` to `min_lr` over the whole run.
    Cosine {
        #[serde(default)]
        min_lr: f64,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        Self::Constant {}
    }
}

impl Schedule {
    /// The learning rate at `step` (0-based) of `total` steps, `steps_per_epoch` per epoch.
    pub fn lr(&self, base: f64, step: usize, steps_per_epoch: usize, total: usize) -> f64 {
        match *self {
            Self::Constant {} => base,
            Self::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / steps_per_epoch.max(1);
                base * gamma.powi((epoch / every_epochs.max(1)) as i32)
            }
            Self::Cosine { min_lr } => {
                let progress = step as f64 / total.max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// Bounds on what a config may ask for: far beyond any real run, and small enough that step
/// counts and batch buffers cannot overflow.
const MAX_EPOCHS: usize = 1_000_000;
const MAX_BATCH_SIZE: usize = 1 << 20;

impl TrainConfig {
    /// Loads `path`, or the one `.toml` file in it if it is a directory (a Pachyderm input
    /// repo holding the config).
    pub fn load(path: &Path) -> Result<Self> {
        let path = resolve(path)?;
        let path = path.as_path();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        config
            .validate()
            .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(config)
    }

    /// The W&B artifact collection models trained with this config are versions of.
    pub fn model_artifact(&self) -> String {
        self.wandb.model_artifact.clone().unwrap_or_else(|| {
            let kind = match self.model {
                Architecture::Mlp(_) => "mlp",
                Architecture::Cnn(_) => "cnn",
            };
            format!("mnist-{kind}")
        })
    }

    /// Checks the values that parse but cannot train; each error names its key.
    /// The class names `data.classes` gives, checked.
    pub fn class_names(&self) -> Result<Option<Names>> {
        self.data
            .classes
            .clone()
            .map(|names| Names::new(names, "data.classes"))
            .transpose()
    }

    pub fn validate(&self) -> Result<()> {
        self.class_names()?;
        let t = &self.training;
        if !(1..=MAX_EPOCHS).contains(&t.epochs) {
            bail!("training.epochs: {} is not in 1..={MAX_EPOCHS}", t.epochs);
        }
        if !(1..=MAX_BATCH_SIZE).contains(&t.batch_size) {
            bail!(
                "training.batch_size: {} is not in 1..={MAX_BATCH_SIZE}",
                t.batch_size
            );
        }
        if !(t.checkpoint_every_minutes > 0.0 && t.checkpoint_every_minutes.is_finite()) {
            bail!(
                "training.checkpoint_every_minutes: {} is not a positive number of minutes",
                t.checkpoint_every_minutes
            );
        }
        if t.log_every == 0 {
            bail!("training.log_every: must be at least 1");
        }
        if !(0.0..1.0).contains(&t.validation_split) {
            bail!(
                "training.validation_split: {} is not in [0, 1)",
                t.validation_split
            );
        }
        if !(self.optimizer.lr() > 0.0 && self.optimizer.lr().is_finite()) {
            bail!(
                "optimizer.lr: {} is not a positive number",
                self.optimizer.lr()
            );
        }
        if let Preprocess::Standardize { std, .. } = self.preprocess
            && (std.is_nan() || std <= 0.0)
        {
            bail!("preprocess.std: {std} is not a positive number");
        }
        if let Schedule::Step {
            every_epochs: 0, ..
        } = self.schedule
        {
            bail!("schedule.every_epochs: must be at least 1");
        }
        let (widths, dropouts): (Vec<usize>, Vec<(&str, f64)>) = match &self.model {
            Architecture::Mlp(mlp) => (mlp.hidden.clone(), vec![("model.dropout", mlp.dropout)]),
            Architecture::Cnn(cnn) => {
                if cnn.channels.is_empty() {
                    bail!("model.channels: at least one convolution is needed");
                }
                if cnn.kernel_size == 0 || cnn.pool == 0 {
                    bail!("model.kernel_size and model.pool: must be at least 1");
                }
                let widths = cnn.channels.iter().chain(&cnn.hidden).copied().collect();
                (
                    widths,
                    vec![
                        ("model.dropout", cnn.dropout),
                        ("model.conv_dropout", cnn.conv_dropout),
                    ],
                )
            }
        };
        if let Some(name) = &self.wandb.model_artifact
            && (name.is_empty()
                || *name != crate::wandb::artifact_name(name)
                || crate::wandb::check_name("wandb.model_artifact", name).is_err())
        {
            bail!(
                "wandb.model_artifact: {name:?} is not an artifact name (letters, digits, '-', '_' and '.', no \"..\")"
            );
        }
        if widths.contains(&0) {
            bail!("model: layer widths and channel counts must be at least 1");
        }
        for (key, p) in dropouts {
            if !(0.0..1.0).contains(&p) {
                bail!("{key}: {p} is not a probability in [0, 1)");
            }
        }
        Ok(())
    }
}

/// `path` itself, or the one `.toml` file in it if it is a directory.
pub fn resolve(path: &Path) -> Result<std::path::PathBuf> {
    if path.is_dir() {
        single_toml(path)
    } else {
        Ok(path.to_owned())
    }
}

fn single_toml(dir: &Path) -> Result<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no .toml config in the directory", dir.display()),
        several => bail!(
            "{}: {} .toml configs, expected one: {}",
            dir.display(),
            several.len(),
            several
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrainConfig, toml::de::Error> {
        toml::from_str(text)
    }

    const BASE: &str = r#"
        [model]
        kind = "mlp"
        hidden = [16]
        [preprocess]
        kind = "scale"
        [training]
        epochs = 1
        batch_size = 8
        [optimizer]
        kind = "sgd"
        lr = 0.1
    "#;

    #[test]
    fn every_shipped_config_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // configs/sweeps/ holds sweep files, checked with the sweeps.
            if path.is_file() {
                TrainConfig::load(&path).unwrap();
                count += 1;
            }
        }
        assert_eq!(count, 5);
    }

    #[test]
    fn unknown_keys_inside_tagged_sections_are_rejected() {
        assert!(parse(BASE).is_ok());
        let err = parse(&BASE.replace("hidden = [16]", "hidden = [16]\nhiden = 3")).unwrap_err();
        assert!(err.to_string().contains("unknown field `hiden`"), "{err}");
        let err = parse(&BASE.replace("lr = 0.1", "lr = 0.1\nmomentun = 0.9")).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `momentun`"),
            "{err}"
        );
        let err =
            parse(&BASE.replace("kind = \"scale\"", "kind = \"scale\"\nmean = 1")).unwrap_err();
        assert!(err.to_string().contains("unknown field `mean`"), "{err}");
    }

    #[test]
    fn preprocessing_tables() {
        assert_eq!(Preprocess::Binarize {}.apply(&[0, 1, 255]), [0.0, 1.0, 1.0]);
        assert_eq!(Preprocess::Scale {}.apply(&[0, 255]), [0.0, 1.0]);
        let standardize = Preprocess::Standardize {
            mean: 0.5,
            std: 0.25,
        };
        assert_eq!(standardize.apply(&[0, 255]), [-2.0, 2.0]);
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant {}.lr(0.1, 99, 10, 100), 0.1);
        let step = Schedule::Step {
            every_epochs: 2,
            gamma: 0.5,
        };
        assert_eq!(step.lr(0.1, 19, 10, 100), 0.1);
        assert_eq!(step.lr(0.1, 20, 10, 100), 0.05);
        assert_eq!(step.lr(0.1, 45, 10, 100), 0.025);
        let cosine = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(cosine.lr(0.1, 0, 10, 100), 0.1);
        assert!((cosine.lr(0.1, 50, 10, 100) - 0.05).abs() < 1e-12);
        assert!(cosine.lr(0.1, 99, 10, 100) < 1e-3);
    }
}
