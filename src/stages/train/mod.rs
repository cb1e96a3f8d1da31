//! `mnist train`: a config and data in, a model directory out. The stage reads as it runs:
//! load the config and the data, choose the device, find the checkpoint to resume from, train
//! (tracked in W&B, continuing the checkpoint's run), write the model.

mod artifacts;
mod augment;
mod checkpoint;
mod ema;
mod optimizer;
mod tracking;
mod trainer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::device::backend::{self, BackendChoice, Workload};
use crate::formats::config::TrainConfig;
use crate::formats::data::Splits;
use crate::formats::dataset;
use crate::formats::model_dir::ModelDir;
use crate::pachyderm::Provenance;
use crate::stop;
use crate::wandb;
use checkpoint::Checkpoint;
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
    /// Continue from the latest checkpoint, and the W&B run it names.
    #[arg(long)]
    pub resume: bool,
    /// Where checkpoints (weights, optimizer state, where training stands) go [default:
    /// OUTPUT/checkpoints]. `{pipeline}` and `{datum}` stand for the Pachyderm pipeline and
    /// datum, so that a retried datum finds its own.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Override training.checkpoint_every_minutes: the longest time between two checkpoints
    /// within an epoch.
    #[arg(long, value_name = "MINUTES")]
    pub checkpoint_every: Option<f64>,
    /// Remove the checkpoints once the model is written.
    #[arg(long)]
    pub clean_checkpoints: bool,
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
        multiply_adds: config.model.multiply_adds(input, splits.classes.count),
        batch_size: config.training.batch_size,
    };
    let backend = backend::select(args.backend, Some(workload))?;

    let model_dir = args.model_dir(&config_path);
    let provenance = Provenance::from_env();
    let checkpoints = args.checkpoints(&model_dir, &config, provenance.as_ref())?;
    // Local checkpoints first; else the latest that the W&B run holds.
    let resumed = args.resume.then(|| {
        let found = resume_from(&checkpoints, &config, &splits, &backend).or_else(|| {
            let fetched = fetch_checkpoint(&config, args, provenance.as_ref(), &checkpoints)?;
            resume_from(&checkpoints, &config, &splits, &backend).filter(|c| c.path == fetched)
        });
        if found.is_none() {
            let dir = checkpoints.dir.display();
            eprintln!("no checkpoint in {dir} or in W&B: starting afresh");
        }
        found
    });
    let resumed = resumed.flatten();
    let inputs = Inputs {
        config_path: &config_path,
        data: args.data.as_deref(),
        splits: &splits,
        backend: &backend.info,
        provenance: provenance.as_ref(),
        key_file: args.wandb_key_file.as_deref(),
        continues: resumed.as_ref().and_then(|c| c.state.wandb.as_ref()),
    };
    let mut tracking = Tracking::start(&config, &inputs, &model_dir)?;
    let result = train(
        &config,
        &splits,
        &backend,
        &checkpoints,
        resumed,
        tracking.sink(),
    )
    .and_then(|mut trained| {
        trained.card.provenance = provenance;
        trained.card.wandb_run = tracking.url();
        model_dir.write(
            &trained.network,
            &trained.card,
            &trained.curves,
            &config.export.formats,
        )?;
        Ok(trained)
    });
    tracking.finish(&result, &model_dir)?;

    let trained = result.map_err(|mut err| {
        let hint = format!("\ncontinue with: {}", resume_command());
        if let Some(interrupted) = err.downcast_mut::<stop::Interrupted>() {
            interrupted.detail.push_str(&hint);
        } else if let Some(stopped) = err.downcast_mut::<Stopped>() {
            stopped.kept.push_str(&hint);
        }
        err
    })?;
    if args.clean_checkpoints {
        checkpoint::remove_all(&checkpoints.dir)?;
    }
    eprintln!(
        "wrote {} (test accuracy {:.2}%)",
        model_dir.path().display(),
        100.0 * trained.card.metrics.test_accuracy
    );
    Ok(())
}

/// The latest checkpoint under the checkpoint directory that reads whole, if any.
fn resume_from(
    checkpoints: &Checkpoints,
    config: &TrainConfig,
    splits: &Splits,
    backend: &backend::Selected,
) -> Option<Checkpoint> {
    let device = backend.device.clone().autodiff();
    let optimizer = optimizer::build(&config.optimizer);
    let input = splits.train.images.shape;
    let classes = splits.classes.count;
    checkpoint::latest(&checkpoints.dir, input, classes, &optimizer, &device)
}

/// The latest checkpoint of the W&B run this training continues, put into the checkpoint
/// directory: where a datum retried on another node finds where the first node got to. A
/// download that fails, or is not whole, is skipped with a warning.
fn fetch_checkpoint(
    config: &TrainConfig,
    args: &TrainArgs,
    provenance: Option<&Provenance>,
    checkpoints: &Checkpoints,
) -> Option<PathBuf> {
    let key_file = args.wandb_key_file.as_deref();
    let fetched = wandb::latest_checkpoint(&config.wandb, key_file, provenance).and_then(|found| {
        let Some(found) = found else {
            return Ok(None);
        };
        let step = (found.metadata.get("step").and_then(|step| step.as_u64()))
            .ok_or_else(|| anyhow::anyhow!("{}: no step in its metadata", found.version))?;
        let path = checkpoint::install(&checkpoints.dir, step as usize, &found.files)
            .with_context(|| found.version.clone())?;
        eprintln!(
            "fetched checkpoint {} from W&B into {}",
            found.version,
            path.display()
        );
        Ok(Some(path))
    });
    fetched.unwrap_or_else(|err| {
        eprintln!("warning: no checkpoint from W&B: {err:#}");
        None
    })
}

/// This command again, with `--resume`: what continues a stopped training.
fn resume_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|arg| arg == "--resume") {
        args.push("--resume".into());
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| {
            let plain = arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain && !arg.is_empty() {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect();
    quoted.join(" ")
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
        training.checkpoint_every_minutes = self
            .checkpoint_every
            .unwrap_or(training.checkpoint_every_minutes);
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

    /// Where checkpoints go: `--checkpoint-dir` with its placeholders filled in, or the model
    /// directory's `checkpoints`.
    fn checkpoints(
        &self,
        model_dir: &ModelDir,
        config: &TrainConfig,
        provenance: Option<&Provenance>,
    ) -> Result<Checkpoints> {
        let dir = match &self.checkpoint_dir {
            Some(dir) => fill_in(dir, provenance)?,
            None => model_dir.default_checkpoints(),
        };
        let minutes = config.training.checkpoint_every_minutes;
        Ok(Checkpoints {
            dir,
            every: Some(Duration::from_secs_f64(minutes * 60.0)),
        })
    }
}

/// `dir` with `{pipeline}` and `{datum}` replaced by the Pachyderm pipeline and datum.
fn fill_in(dir: &Path, provenance: Option<&Provenance>) -> Result<PathBuf> {
    let mut text = dir.to_string_lossy().into_owned();
    for (placeholder, value, variable) in [
        (
            "{pipeline}",
            provenance.and_then(|p| p.pipeline.as_deref()),
            "PPS_PIPELINE_NAME",
        ),
        (
            "{datum}",
            provenance.and_then(|p| p.datum_id.as_deref()),
            "PACH_DATUM_ID",
        ),
    ] {
        if !text.contains(placeholder) {
            continue;
        }
        let Some(value) = value else {
            bail!(
                "--checkpoint-dir {}: {placeholder} needs {variable}, which Pachyderm sets",
                dir.display()
            );
        };
        if value.is_empty() || value.contains(['/', '\\']) || value == "." || value == ".." {
            bail!(
                "--checkpoint-dir {}: {variable}={value:?} cannot be part of a path",
                dir.display()
            );
        }
        text = text.replace(placeholder, value);
    }
    Ok(PathBuf::from(text))
}

/// The data to train on (`dir`, or the built-in sample), checked to fit the config's model.
fn load_data(dir: Option<&Path>, config: &TrainConfig, config_path: &Path) -> Result<Splits> {
    let splits = match dir {
        Some(dir) => dataset::load(dir, config.class_names()?)?,
        None => dataset::bundled_sample(config.class_names()?)?,
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
