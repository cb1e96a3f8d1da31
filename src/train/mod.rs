//! `mnist train`: a config and data in, a model directory out.

mod checkpoint;
mod optimizer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use model::{InputShape, Network};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::backend::{self, BackendChoice, BackendInfo, Selected, Workload};
use crate::config::TrainConfig;
use crate::console::Console;
use crate::data::{CLASSES, Labelled, Splits};
use crate::dataset;
use crate::evaluate::{self, DeviceData, Evaluation};
use crate::metrics::{EpochMetrics, MetricsSink, Sinks, StepMetrics};
use crate::model_dir::{self, DatasetInfo, FinalMetrics, MetricsFile, ModelCard, TrainingInfo};
use crate::output;
use crate::pachyderm::Provenance;
use crate::wandb::{self, WandbSink};

/// Training ended early because its run was stopped in W&B.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped from W&B after step {step}; the checkpoint of the last complete epoch is kept for --resume"
)]
pub struct Stopped {
    step: usize,
}

/// Training ended because the loss stopped being a number.
#[derive(Debug, thiserror::Error)]
#[error(
    "training diverged: the loss became {loss} by epoch {epoch}, step {step} (it is read every \
     {every} steps); the learning rate ({lr:e}) is likely too high for this model and data"
)]
pub struct Diverged {
    loss: f64,
    epoch: usize,
    step: usize,
    every: usize,
    lr: f64,
}

/// The exit code of a training stopped from W&B.
pub const STOPPED_EXIT_CODE: u8 = 3;

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

/// Where a run writes.
pub struct Destination<'a> {
    /// The model directory.
    pub model: &'a Path,
    pub checkpoints: PathBuf,
    /// Continue from the latest checkpoint.
    pub resume: bool,
}

impl TrainArgs {
    fn destination(&self) -> Destination<'_> {
        Destination {
            model: &self.output,
            checkpoints: self
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| model_dir::checkpoints_dir(&self.output)),
            resume: self.resume,
        }
    }

    /// The config with the command line's overrides, and the file it came from.
    fn config(&self) -> Result<(TrainConfig, PathBuf)> {
        let path = crate::config::resolve(&self.config)?;
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
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (config, config_path) = args.config()?;
    let splits = match &args.data {
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
    let workload = Workload {
        multiply_adds: config.model.multiply_adds(input, CLASSES),
        batch_size: config.training.batch_size,
    };
    let backend = backend::select(args.backend, Some(workload))?;
    let provenance = Provenance::from_env();
    let wandb_config = wandb_config(&config, &splits, &backend.info, provenance.as_ref())?;
    let mut wandb = wandb::start(
        &config.wandb,
        args.wandb_key_file.as_deref(),
        &wandb_config,
        provenance.as_ref(),
        &args.output,
    )?;

    let destination = args.destination();
    let mut summary = wandb::Summary::default();
    let result = match wandb.as_mut() {
        Some(run) => {
            let mut sink = WandbSink {
                run,
                summary: &mut summary,
            };
            train(&config, &splits, &backend, &destination, &mut sink)
        }
        None => train(
            &config,
            &splits,
            &backend,
            &destination,
            &mut Sinks::default(),
        ),
    };

    if let Some(run) = wandb {
        let files = match &result {
            Ok(_) => wandb::run_files(&args.output, &config_path),
            Err(_) => Vec::new(),
        };
        let exit_code = match &result {
            Ok(_) => 0,
            Err(err) if err.is::<Stopped>() => i32::from(STOPPED_EXIT_CODE),
            Err(_) => 1,
        };
        let finishing = Instant::now();
        let report = run.finish(exit_code, summary.into_map(), files, wandb::FINAL_FLUSH);
        let waited = finishing.elapsed().as_secs_f64();
        if report.completed {
            eprintln!(
                "wandb: {}{} history rows and {} files delivered; the final flush took {waited:.1}s",
                report.url.map(|url| format!("{url}: ")).unwrap_or_default(),
                report.rows_sent,
                report.files_uploaded,
            );
        } else if report.offline.is_none() {
            eprintln!(
                "wandb: warning: the run was not delivered ({} history rows sent, {} not); waited {waited:.1}s",
                report.rows_sent, report.rows_unsent
            );
        }
    }
    let card = result?;
    eprintln!(
        "wrote {} (test accuracy {:.2}%)",
        args.output.display(),
        100.0 * card.metrics.test_accuracy
    );
    Ok(())
}

/// The run's config as W&B shows it: the training config's sections, and what it ran on.
fn wandb_config(
    config: &TrainConfig,
    splits: &Splits,
    backend: &BackendInfo,
    provenance: Option<&Provenance>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let serde_json::Value::Object(mut map) = serde_json::to_value(config)? else {
        anyhow::bail!("the training config is not a JSON object");
    };
    map.remove("wandb");
    map.insert("backend".into(), serde_json::to_value(backend)?);
    map.insert(
        "dataset".into(),
        serde_json::json!({
            "source": splits.source,
            "train": splits.train.len(),
            "test": splits.test.len(),
        }),
    );
    if let Some(provenance) = provenance {
        map.insert("pachyderm".into(), serde_json::to_value(provenance)?);
    }
    Ok(map)
}

/// Trains `config` on `splits` and writes the model directory, checkpoints on the way.
pub fn train(
    config: &TrainConfig,
    splits: &Splits,
    backend: &Selected,
    destination: &Destination,
    reporter: &mut dyn MetricsSink,
) -> Result<ModelCard> {
    let t = &config.training;
    let input = splits.train.images.shape;
    let (train, validation) = hold_out(&splits.train, t.validation_split, t.seed);
    anyhow::ensure!(!train.is_empty(), "{}: no training data", splits.source);

    let device = backend.device.clone().autodiff();
    device.seed(t.seed);
    let checkpoints = &destination.checkpoints;
    let mut run = Run {
        network: config.model.init(input, CLASSES, &device),
        optimizer: optimizer::build(&config.optimizer),
        history: Vec::new(),
        seconds_before: 0.0,
        resumed_from_epoch: None,
        starting: Some(backend.chosen),
    };
    if destination.resume {
        run.resume(config, checkpoints, input, &device)?;
    }
    eprintln!(
        "training {} ({} parameters) on {} images from {} ({} held out for validation, {} test), seed {}",
        config.model.describe(input, CLASSES),
        run.network.num_params(),
        train.len(),
        splits.source,
        validation.len(),
        splits.test.len(),
        t.seed
    );

    let data = DeviceData::new(&train, &config.preprocess, &device);
    let held_out = DeviceData::new(&validation, &config.preprocess, &device);
    let steps_per_epoch = train.len().div_ceil(t.batch_size);
    let first_epoch = run.history.len() + 1;
    let console = Console::new(
        steps_per_epoch * t.epochs,
        steps_per_epoch,
        (first_epoch - 1) * steps_per_epoch,
    );
    let mut console = console;
    let mut sinks = Sinks(vec![&mut console, reporter]);
    let started = Instant::now();
    for epoch in first_epoch..=t.epochs {
        let epoch_started = Instant::now();
        let (loss, correct, samples) = run.epoch(config, &data, epoch, &device, &mut sinks)?;
        let training_seconds = epoch_started.elapsed().as_secs_f64();
        let validation = (!validation.is_empty())
            .then(|| held_out.evaluate(&run.network.valid(), t.loss))
            .transpose()?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss / samples as f64,
            train_accuracy: correct as f64 / samples as f64,
            validation_loss: validation.as_ref().map(|e| e.loss),
            validation_accuracy: validation.as_ref().map(|e| e.accuracy),
            seconds: epoch_started.elapsed().as_secs_f64(),
            samples_per_second: samples as f64 / training_seconds.max(1e-9),
        };
        sinks.epoch(&metrics);
        run.history.push(metrics);
        let state = checkpoint::CheckpointState {
            epoch,
            config: config.clone(),
            history: run.history.clone(),
            seconds: run.seconds_before + started.elapsed().as_secs_f64(),
        };
        checkpoint::save(checkpoints, &state, &run.network, &run.optimizer)?;
    }

    let network = run.network.valid();
    let test =
        DeviceData::new(&splits.test, &config.preprocess, &device).evaluate(&network, t.loss)?;
    sinks.finished(test.accuracy, test.loss);
    let seconds = run.seconds_before + started.elapsed().as_secs_f64();
    let card = card(
        config,
        splits,
        &train,
        &validation,
        &network,
        &backend.info,
        &run.history,
        &test,
        seconds,
        run.resumed_from_epoch,
    );
    write_model_dir(destination.model, &network, &card, &run.history, &test)?;
    Ok(card)
}

/// The state a run carries from epoch to epoch, and from a checkpoint.
struct Run {
    network: Network,
    optimizer: ModuleOptimizer,
    history: Vec<EpochMetrics>,
    /// Training time spent before a resume.
    seconds_before: f64,
    resumed_from_epoch: Option<usize>,
    /// When the device was chosen, until the first step has been reported.
    starting: Option<Instant>,
}

impl Run {
    /// Continues from the latest checkpoint under `checkpoints`, if there is one.
    fn resume(
        &mut self,
        config: &TrainConfig,
        checkpoints: &Path,
        input: InputShape,
        device: &Device,
    ) -> Result<()> {
        let latest =
            checkpoint::latest(checkpoints, input, CLASSES, self.optimizer.clone(), device)?;
        let Some(ckpt) = latest else {
            eprintln!(
                "no checkpoint in {}: starting afresh",
                checkpoints.display()
            );
            return Ok(());
        };
        anyhow::ensure!(
            ckpt.state.config.model == config.model
                && ckpt.state.config.preprocess == config.preprocess,
            "{}: the checkpoint was trained with another model or preprocessing",
            checkpoints.display()
        );
        eprintln!("resuming after epoch {}", ckpt.state.epoch);
        self.resumed_from_epoch = Some(ckpt.state.epoch);
        self.network = ckpt.network;
        self.optimizer = ckpt.optimizer;
        self.history = ckpt.state.history;
        self.seconds_before = ckpt.state.seconds;
        Ok(())
    }

    /// One pass over the shuffled training data; returns the summed loss, the correct
    /// predictions and the samples seen.
    fn epoch(
        &mut self,
        config: &TrainConfig,
        data: &DeviceData,
        epoch: usize,
        device: &Device,
        sinks: &mut impl MetricsSink,
    ) -> Result<(f64, usize, usize)> {
        let t = &config.training;
        let steps_per_epoch = data.len().div_ceil(t.batch_size);
        let total_steps = steps_per_epoch * t.epochs;
        // Data order and dropout depend on the seed and the epoch only, so a resumed run
        // continues as the uninterrupted one would have.
        device.seed(t.seed.wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(t.seed ^ ((epoch as u64) << 32)));

        let mut window = Window::new(device);
        let mut totals = (0.0, 0, 0);
        for (i, batch) in order.chunks(t.batch_size).enumerate() {
            let step = (epoch - 1) * steps_per_epoch + i + 1;
            let lr = (config.schedule).lr(
                config.optimizer.lr(),
                step - 1,
                steps_per_epoch,
                total_steps,
            );
            let indices = evaluate::index_tensor(batch, device);
            let x = data.inputs.clone().select(0, indices.clone());
            let y = data.targets.clone().select(0, indices);
            let outputs = self.network.forward(x);
            let loss = evaluate::loss(t.loss, outputs.clone(), y.clone());
            window.add(&loss, outputs.detach(), y, batch.len());
            let grads = GradientsParams::from_grads(loss.backward(), &self.network);
            self.network = self.optimizer.step(lr, self.network.clone(), grads);
            if let Some(chosen) = self.starting.take() {
                // Waits once for the device, so that the start-up (kernels compiled and tuned
                // unless the GPU cache held them) is measured, not just queued.
                window.sync()?;
                sinks.started(chosen.elapsed().as_secs_f64());
            }

            let metrics = if step.is_multiple_of(t.log_every) || i + 1 == steps_per_epoch {
                let (loss, correct, samples, seconds) = window.read()?;
                if !loss.is_finite() {
                    return Err(Diverged {
                        loss: loss / samples as f64,
                        epoch,
                        step,
                        every: t.log_every,
                        lr,
                    }
                    .into());
                }
                totals.0 += loss;
                totals.1 += correct;
                totals.2 += samples;
                Some(StepMetrics {
                    epoch,
                    step,
                    total_steps,
                    loss: loss / samples as f64,
                    accuracy: correct as f64 / samples as f64,
                    lr,
                    samples_per_second: samples as f64 / seconds.max(1e-9),
                })
            } else {
                None
            };
            sinks.step(step, metrics.as_ref());
            if sinks.stop_requested() {
                return Err(Stopped { step }.into());
            }
        }
        Ok(totals)
    }
}

/// Splits off a seeded random `share` of `data` for validation.
fn hold_out(data: &Labelled, share: f64, seed: u64) -> (Labelled, Labelled) {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let held = (data.len() as f64 * share).round() as usize;
    let (validation, train) = order.split_at(held);
    let mut train = train.to_vec();
    train.sort_unstable();
    (data.select(&train), data.select(validation))
}

/// Loss and correct predictions summed on the device between two reads, so that training
/// does not wait for the device at every step.
struct Window {
    loss: Tensor<1>,
    correct: Tensor<1, Int>,
    samples: usize,
    since: Instant,
}

impl Window {
    fn new(device: &Device) -> Self {
        Self {
            loss: Tensor::zeros([1], device),
            correct: Tensor::zeros([1], device),
            samples: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, loss: &Tensor<1>, outputs: Tensor<2>, targets: Tensor<1, Int>, len: usize) {
        self.loss = self.loss.clone() + loss.clone().detach() * len as f32;
        self.correct = self.correct.clone() + evaluate::correct(outputs, targets);
        self.samples += len;
    }

    /// Waits until the device has computed everything summed so far.
    fn sync(&self) -> Result<()> {
        self.loss.clone().try_into_scalar::<f32>()?;
        Ok(())
    }

    /// Summed loss, correct count, samples and seconds since the last read; then starts anew.
    fn read(&mut self) -> Result<(f64, usize, usize, f64)> {
        let loss = f64::from(self.loss.clone().try_into_scalar::<f32>()?);
        let correct = self.correct.clone().try_into_scalar::<i64>()? as usize;
        let read = (
            loss,
            correct,
            self.samples,
            self.since.elapsed().as_secs_f64(),
        );
        *self = Self::new(&self.loss.device());
        Ok(read)
    }
}

#[allow(clippy::too_many_arguments)]
fn card(
    config: &TrainConfig,
    splits: &Splits,
    train: &Labelled,
    validation: &Labelled,
    network: &Network,
    backend: &BackendInfo,
    history: &[EpochMetrics],
    test: &Evaluation,
    seconds: f64,
    resumed_from_epoch: Option<usize>,
) -> ModelCard {
    let last = history.last();
    let samples: usize = train.len() * history.len();
    ModelCard {
        summary: config.model.describe(train.images.shape, CLASSES),
        parameters: network.num_params(),
        input: train.images.shape,
        classes: CLASSES,
        config: config.clone(),
        dataset: DatasetInfo {
            source: splits.source.clone(),
            train: train.len(),
            validation: validation.len(),
            test: splits.test.len(),
        },
        backend: backend.clone(),
        training: TrainingInfo {
            epochs: history.len(),
            steps: history.len() * train.len().div_ceil(config.training.batch_size),
            seed: config.training.seed,
            seconds,
            samples_per_second: samples as f64 / seconds.max(1e-9),
            resumed_from_epoch,
        },
        metrics: FinalMetrics {
            train_loss: last.map_or(f64::NAN, |m| m.train_loss),
            train_accuracy: last.map_or(f64::NAN, |m| m.train_accuracy),
            validation_loss: last.and_then(|m| m.validation_loss),
            validation_accuracy: last.and_then(|m| m.validation_accuracy),
            test_loss: test.loss,
            test_accuracy: test.accuracy,
        },
        provenance: Provenance::from_env(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn write_model_dir(
    out: &Path,
    network: &Network,
    card: &ModelCard,
    history: &[EpochMetrics],
    test: &Evaluation,
) -> Result<()> {
    output::write_file(
        &out.join(model_dir::WEIGHTS),
        &model::save_weights(network)?,
    )?;
    output::write_json(
        &out.join(model_dir::METRICS),
        &MetricsFile {
            epochs: history.to_vec(),
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            backend: card.backend.clone(),
        },
    )?;
    // The card last: its presence marks a complete model directory.
    output::write_json(&out.join(model_dir::CARD), card)
}
