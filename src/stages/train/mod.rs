//! `mnist train`: a config and data in, a model directory out. The stage reads as it runs:
//! load the config and the data, choose the device, train (tracked in W&B), write the model.

mod artifacts;
mod checkpoint;
mod optimizer;
mod tracking;
mod trainer;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::device::backend::{self, BackendChoice, Workload};
use crate::formats::config::TrainConfig;
use crate::formats::data::{CLASSES, Splits};
use crate::formats::dataset;
use crate::formats::model_dir::ModelDir;
use crate::pachyderm::Provenance;
use tracking::{Inputs, Tracking};
pub use trainer::{Checkpoints, Stopped, train};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training config (TOML), e.g. configs/cnn.toml, or a directory holding exactly one.
    #[arg(long)]
    pub config: PathBuf,
    /// Directory with train.csv and test.csv, or the IDX files. Default: the built-in sample.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model directory to write.
    #[arg(long, default_value = "model")]
    pub output: PathBuf,
    /// Write the model directory into DIR, named after the config file (`DIR/<config name>`):
    /// one directory per config, as a sweep's trials are trained in Pachyderm.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    pub models: Option<PathBuf>,
    /// Override training.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override training.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override optimizer.lr.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override training.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from the latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Where each epoch's checkpoint (weights, optimizer state, curves) goes [default:
    /// OUTPUT/checkpoints]. In Pachyderm, scratch space: the model repo holds models only.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Where to compute: a GPU through wgpu when present (auto), wgpu, or the CPU.
    #[arg(long, value_enum, default_value = "auto", env = "MNIST_BACKEND")]
    pub backend: BackendChoice,
    /// File holding the W&B API key, when WANDB_API_KEY is not set [default: /secrets/wandb/key,
    /// where the Pachyderm secret `wandb` is mounted with `mountPath: /secrets/wandb`].
    #[arg(long, value_name = "FILE", env = "MNIST_WANDB_KEY_FILE")]
    pub wandb_key_file: Option<PathBuf>,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (config, config_path) = args.config()?;
    let splits = load_data(args.data.as_deref(), &config, &config_path)?;

    let input = splits.train.images.shape;
    let workload = Workload {
        multiply_adds: config.model.multiply_adds(input, CLASSES),
        batch_size: config.training.batch_size,
    };
    let backend = backend::select(args.backend, Some(workload))?;

    let model_dir = args.model_dir(&config_path);
    let provenance = Provenance::from_env();
    let inputs = Inputs {
        config_path: &config_path,
        data: args.data.as_deref(),
        splits: &splits,
        backend: &backend.info,
        provenance: provenance.as_ref(),
        key_file: args.wandb_key_file.as_deref(),
    };
    let mut tracking = Tracking::start(&config, &inputs, &model_dir)?;
    let result = train(
        &config,
        &splits,
        &backend,
        &args.checkpoints(&model_dir),
        tracking.sink(),
    )
    .and_then(|mut trained| {
        trained.card.provenance = provenance;
        trained.card.wandb_run = tracking.url();
        model_dir.write(&trained.network, &trained.card, &trained.curves)?;
        Ok(trained)
    });
    tracking.finish(&result, &model_dir)?;

    let trained = result?;
    eprintln!(
        "wrote {} (test accuracy {:.2}%)",
        model_dir.path().display(),
        100.0 * trained.card.metrics.test_accuracy
    );
    Ok(())
}

impl TrainArgs {
    /// The config with the command line's overrides, and the file it came from.
    fn config(&self) -> Result<(TrainConfig, PathBuf)> {
        let path = crate::formats::config::resolve(&self.config)?;
        let mut config = TrainConfig::load(&path)?;
        let training = &mut config.training;
        training.epochs = self.epochs.unwrap_or(training.epochs);
        training.batch_size = self.batch_size.unwrap_or(training.batch_size);
        training.seed = self.seed.unwrap_or(training.seed);
        if let Some(lr) = self.lr {
            config.optimizer.set_lr(lr);
        }
        config.validate().context("command-line override")?;
        Ok((config, path))
    }

    /// The model directory to write: `--output`, or the config's name under `--models`.
    fn model_dir(&self, config: &Path) -> ModelDir {
        match (&self.models, config.file_stem()) {
            (Some(models), Some(name)) => ModelDir::new(models.join(name)),
            _ => ModelDir::new(&self.output),
        }
    }

    fn checkpoints(&self, model_dir: &ModelDir) -> Checkpoints {
        Checkpoints {
            dir: self
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| model_dir.default_checkpoints()),
            resume: self.resume,
        }
    }
}

/// The data to train on (`dir`, or the built-in sample), checked to fit the config's model.
fn load_data(dir: Option<&Path>, config: &TrainConfig, config_path: &Path) -> Result<Splits> {
    let splits = match dir {
        Some(dir) => dataset::load(dir)?,
        None => dataset::bundled_sample()?,
    };
    let input = splits.train.images.shape;
    config.model.check(input).with_context(|| {
        format!(
            "{}: the model does not fit the {}x{} images of {}",
            config_path.display(),
            input.height,
            input.width,
            splits.source
        )
    })?;
    Ok(splits)
}
