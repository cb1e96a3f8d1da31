//! Training configuration: one TOML file naming the network, the preprocessing, the training
//! schedule and the optimizer. Unknown keys are errors, so a typo never silently falls back to
//! a default.

use std::path::Path;

use anyhow::{Context, Result, bail};
use model::Architecture;
pub use model::{Preprocess, Views};

use crate::formats::classes::Names;
use crate::formats::exports::ExportConfig;
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
    pub augment: Augment,
    /// Test-time augmentation: the views of an image every stage averages the logits of.
    #[serde(default, skip_serializing_if = "Views::is_single")]
    pub tta: Views,
    #[serde(default)]
    pub wandb: WandbConfig,
    #[serde(default, skip_serializing_if = "ExportConfig::is_empty")]
    pub export: ExportConfig,
    #[serde(default, skip_serializing_if = "DataConfig::is_empty")]
    pub data: DataConfig,
    /// Set in the configs `mnist sweep` writes: which sweep and trial this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepTrial>,
}

/// `[augment]`: random changes to each training image, drawn afresh at every step (from the
/// seed and the step, so that a run repeats and resumes exactly). Validation and test images
/// are never changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Largest shift, in pixels, in each direction: a random crop of the image padded by this
    /// much with background. Nothing wraps around.
    #[serde(default)]
    pub shift: usize,
    /// Mirror half of the images left to right (for clothing; not for digits).
    #[serde(default)]
    pub flip: bool,
    /// Probability of erasing a random rectangle (2% to 25% of the image, aspect 0.3 to 3.3)
    /// to background: random erasing (Zhong et al., 2017).
    #[serde(default)]
    pub erase: f64,
    /// The last this many epochs train on the images as they are: the network ends on the
    /// distribution it is tested on.
    #[serde(default)]
    pub plain_epochs: usize,
}

impl Augment {
    /// Whether epoch `epoch` (from 1) of `epochs` trains on changed images.
    pub fn applies(&self, epoch: usize, epochs: usize) -> bool {
        let changes = self.shift > 0 || self.flip || self.erase > 0.0;
        changes && epoch + self.plain_epochs <= epochs
    }
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
    /// Share of each target's probability spread over all classes (cross-entropy only).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Decay of an exponential moving average of the weights, updated after every step; when
    /// set (0.999, say), the average is what is validated, kept and saved. 0 turns it off.
    #[serde(default)]
    pub ema_decay: f64,
    /// Which epoch's network the model keeps: the one with the best validation accuracy (the
    /// later of equals), or the last. Without validation data, the last.
    #[serde(default)]
    pub keep: Keep,
    /// Stop once this many epochs in a row have not improved the best validation accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    #[default]
    Best,
    Last,
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
    /// Cosine decay from `lr` to `min_lr` over the whole run, after a linear warm-up from 0
    /// over the first `warmup_epochs`.
    Cosine {
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        warmup_epochs: f64,
    },
    /// PyTorch's `OneCycleLR` (cosine annealing): from `lr / div_factor` up to `lr` over the
    /// first `pct_start` of the run, then down to `lr / div_factor / final_div_factor`.
    OneCycle {
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
    },
}

fn default_pct_start() -> f64 {
    0.3
}

fn default_div_factor() -> f64 {
    25.0
}

fn default_final_div_factor() -> f64 {
    1e4
}

/// From `from` to `to` along half a cosine, at `progress` in [0, 1].
fn cosine_between(from: f64, to: f64, progress: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
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
            Self::Cosine {
                min_lr,
                warmup_epochs,
            } => {
                let warmup = (warmup_epochs * steps_per_epoch as f64).round() as usize;
                if step < warmup {
                    return base * (step + 1) as f64 / warmup as f64;
                }
                let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
                cosine_between(base, min_lr, progress)
            }
            Self::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                // PyTorch's phase ends: step `pct_start * total - 1`, and the last step.
                let (initial, last) = (base / div_factor, base / div_factor / final_div_factor);
                let peak = (pct_start * total as f64 - 1.0).max(1.0);
                let end = (total as f64 - 1.0).max(peak + 1.0);
                let step = step as f64;
                if step <= peak {
                    cosine_between(initial, base, step / peak)
                } else {
                    cosine_between(base, last, ((step - peak) / (end - peak)).min(1.0))
                }
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
        match self.schedule {
            Schedule::Cosine { warmup_epochs, .. }
                if !(warmup_epochs >= 0.0 && warmup_epochs <= t.epochs as f64) =>
            {
                bail!(
                    "schedule.warmup_epochs: {warmup_epochs} is not in 0..={}",
                    t.epochs
                )
            }
            Schedule::OneCycle { pct_start, .. } if !(pct_start > 0.0 && pct_start < 1.0) => {
                bail!("schedule.pct_start: {pct_start} is not in (0, 1)")
            }
            Schedule::OneCycle {
                div_factor,
                final_div_factor,
                ..
            } if !(div_factor >= 1.0 && final_div_factor >= 1.0) => {
                bail!(
                    "schedule.div_factor and schedule.final_div_factor: must be at least 1 \
                     ({div_factor} and {final_div_factor} given)"
                )
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!(
                "training.label_smoothing: {} is not in [0, 1)",
                t.label_smoothing
            );
        }
        if t.label_smoothing > 0.0 && t.loss != Loss::CrossEntropy {
            bail!("training.label_smoothing: applies to the cross_entropy loss only");
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            bail!("training.ema_decay: {} is not in [0, 1)", t.ema_decay);
        }
        if t.patience == Some(0) {
            bail!("training.patience: must be at least 1 epoch");
        }
        if t.patience.is_some() && t.validation_split == 0.0 {
            bail!(
                "training.patience: early stopping needs validation data (training.validation_split)"
            );
        }
        if !(0.0..=1.0).contains(&self.augment.erase) {
            bail!(
                "augment.erase: {} is not a probability in [0, 1]",
                self.augment.erase
            );
        }
        if self.augment.plain_epochs > t.epochs {
            bail!(
                "augment.plain_epochs: {} is more than training.epochs ({})",
                self.augment.plain_epochs,
                t.epochs
            );
        }
        for (key, shift) in [
            ("augment.shift", self.augment.shift),
            ("tta.shift", self.tta.shift),
        ] {
            if shift > 64 {
                bail!("{key}: {shift} pixels is more than 64");
            }
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
        assert_eq!(count, 7);
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
        let tta = |keys: &str| parse(&format!("{BASE}\n[tta]\n{keys}"));
        assert_eq!(
            tta("flip = true\nshift = 1").unwrap().tta,
            Views {
                flip: true,
                shift: 1
            }
        );
        let err = tta("flip = true\nshfit = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field `shfit`"), "{err}");
        let err = tta("shift = 65").unwrap().validate().unwrap_err();
        assert_eq!(err.to_string(), "tta.shift: 65 pixels is more than 64");
        let augment = |keys: &str| parse(&format!("{BASE}\n[augment]\n{keys}"));
        let config = augment("shift = 2\nplain_epochs = 1").unwrap();
        assert!(!config.augment.applies(1, 1));
        assert!(config.augment.applies(1, 2) && !config.augment.applies(2, 2));
        assert!(!augment("plain_epochs = 0").unwrap().augment.applies(1, 2));
        let err = augment("plain_epochs = 2").unwrap().validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "augment.plain_epochs: 2 is more than training.epochs (1)"
        );
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
        let cosine = Schedule::Cosine {
            min_lr: 0.0,
            warmup_epochs: 0.0,
        };
        assert_eq!(cosine.lr(0.1, 0, 10, 100), 0.1);
        assert!((cosine.lr(0.1, 50, 10, 100) - 0.05).abs() < 1e-12);
        assert!(cosine.lr(0.1, 99, 10, 100) < 1e-3);
        let warm = Schedule::Cosine {
            min_lr: 0.0,
            warmup_epochs: 2.0,
        };
        assert!((warm.lr(0.1, 0, 10, 100) - 0.005).abs() < 1e-12);
        assert!((warm.lr(0.1, 19, 10, 100) - 0.1).abs() < 1e-12);
        assert_eq!(warm.lr(0.1, 20, 10, 100), 0.1);
        assert!((warm.lr(0.1, 60, 10, 100) - 0.05).abs() < 1e-12);
        // PyTorch's OneCycleLR(max_lr=0.1, total_steps=100) at steps 0, 29, 99.
        let one_cycle = Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        };
        assert!((one_cycle.lr(0.1, 0, 10, 100) - 0.004).abs() < 1e-12);
        assert!((one_cycle.lr(0.1, 29, 10, 100) - 0.1).abs() < 1e-12);
        assert!((one_cycle.lr(0.1, 99, 10, 100) - 4e-7).abs() < 1e-12);
        assert!(one_cycle.lr(0.1, 60, 10, 100) < 0.1);
    }
}
