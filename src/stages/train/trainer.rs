//! The training loop: a network trained on the training split, epoch after epoch, with a
//! checkpoint after each, then evaluated on the test split and described by its card.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use model::{InputShape, Network};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{checkpoint, optimizer};
use crate::device::backend::Selected;
use crate::formats::config::TrainConfig;
use crate::formats::curves::{Curves, EpochMetrics};
use crate::formats::data::{CLASSES, Labelled, Splits};
use crate::formats::model_dir::{DatasetInfo, ModelCard, TestMetrics, TrainingInfo};
use crate::report::console::Console;
use crate::report::evaluate::{self, DeviceData};
use crate::report::metrics::{MetricsSink, Sinks, StepMetrics};

/// Training ended early because its run was stopped in W&B.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped from W&B after step {step}; the checkpoint of the last complete epoch is kept for --resume"
)]
pub struct Stopped {
    step: usize,
}

impl Stopped {
    /// The exit code of a training stopped from W&B.
    pub const EXIT_CODE: u8 = 3;
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

/// Where the checkpoints of a run go.
pub struct Checkpoints {
    pub dir: PathBuf,
    /// Continue from the latest checkpoint in `dir`.
    pub resume: bool,
}

/// A trained network with what describes it: what a model directory holds.
pub struct Trained {
    pub network: Network,
    pub card: ModelCard,
    pub curves: Curves,
}

/// Trains `config` on `splits`, checkpoints on the way.
pub fn train(
    config: &TrainConfig,
    splits: &Splits,
    backend: &Selected,
    checkpoints: &Checkpoints,
    reporter: &mut dyn MetricsSink,
) -> Result<Trained> {
    let t = &config.training;
    let input = splits.train.images.shape;
    let (train, validation) = hold_out(&splits.train, t.validation_split, t.seed);
    anyhow::ensure!(!train.is_empty(), "{}: no training data", splits.source);

    let device = backend.device.clone().autodiff();
    device.seed(t.seed);
    let mut run = Run {
        network: config.model.init(input, CLASSES, &device),
        optimizer: optimizer::build(&config.optimizer),
        history: Vec::new(),
        seconds_before: 0.0,
        resumed_from_epoch: None,
        starting: Some(backend.chosen),
    };
    if checkpoints.resume {
        run.resume(config, &checkpoints.dir, input, &device)?;
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
    let mut console = Console::new(
        steps_per_epoch * t.epochs,
        steps_per_epoch,
        (first_epoch - 1) * steps_per_epoch,
    );
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
        checkpoint::save(&checkpoints.dir, &state, &run.network, &run.optimizer)?;
    }

    let network = run.network.valid();
    let test =
        DeviceData::new(&splits.test, &config.preprocess, &device).evaluate(&network, t.loss)?;
    sinks.finished(test.accuracy, test.loss);
    let seconds = run.seconds_before + started.elapsed().as_secs_f64();
    let epochs = run.history.len();
    let card = ModelCard {
        summary: config.model.describe(input, CLASSES),
        parameters: network.num_params(),
        input,
        classes: CLASSES,
        config: config.clone(),
        dataset: DatasetInfo {
            source: splits.source.clone(),
            train: train.len(),
            validation: validation.len(),
            test: splits.test.len(),
        },
        backend: backend.info.clone(),
        training: TrainingInfo {
            epochs,
            steps: epochs * steps_per_epoch,
            seconds,
            samples_per_second: (epochs * train.len()) as f64 / seconds.max(1e-9),
            resumed_from_epoch: run.resumed_from_epoch,
        },
        metrics: TestMetrics {
            test_loss: test.loss,
            test_accuracy: test.accuracy,
        },
        // What the run is part of (the Pachyderm job, the W&B run): the stage fills it in.
        provenance: None,
        wandb_run: None,
        wandb_artifact: None,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(Trained {
        network,
        card,
        curves: Curves {
            epochs: run.history,
        },
    })
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
