//! The training loop: a network trained on the training split, epoch after epoch, with a
//! checkpoint after each, then evaluated on the test split and described by its card.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use model::{Network, Views};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::augment;
use super::checkpoint::{self, BestEpoch, Checkpoint, CheckpointState, Networks, Position, Sums};
use super::ema::Ema;
use super::optimizer;
use crate::device::backend::Selected;
use crate::formats::config::{Keep, TrainConfig};
use crate::formats::curves::{Curves, EpochMetrics};
use crate::formats::data::{Labelled, Splits};
use crate::formats::model_dir::{DatasetInfo, KeptEpoch, ModelCard, TestMetrics, TrainingInfo};
use crate::report::console::Console;
use crate::report::evaluate::{self, ClassStats, DeviceData};
use crate::report::metrics::{MetricsSink, Sinks, StepMetrics};
use crate::stop;

/// Training ended early because its run was stopped in W&B.
#[derive(Debug, thiserror::Error)]
#[error("stopped from W&B after step {step}; {kept}")]
pub struct Stopped {
    step: usize,
    /// Where training stands now, for `--resume`.
    pub kept: String,
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

/// Where the checkpoints of a run go, and how often within an epoch.
pub struct Checkpoints {
    pub dir: PathBuf,
    /// The longest time between two checkpoints within an epoch.
    pub every: Option<Duration>,
}

/// A trained network with what describes it: what a model directory holds.
pub struct Trained {
    pub network: Network,
    pub card: ModelCard,
    pub curves: Curves,
}

/// Trains `config` on `splits`, from `resumed` when given, checkpoints on the way.
pub fn train(
    config: &TrainConfig,
    splits: &Splits,
    backend: &Selected,
    checkpoints: &Checkpoints,
    resumed: Option<Checkpoint>,
    reporter: &mut dyn MetricsSink,
) -> Result<Trained> {
    let t = &config.training;
    let input = splits.train.images.shape;
    let classes = &splits.classes;
    let (train, validation) = hold_out(&splits.train, t.validation_split, t.seed);
    anyhow::ensure!(!train.is_empty(), "{}: no training data", splits.source);

    let device = backend.device.clone().autodiff();
    device.seed(t.seed);
    let mut run = match resumed {
        Some(checkpoint) => Run::resume(config, checkpoint, backend.chosen)?,
        None => {
            let network = config.model.init(input, classes.count, &device);
            Run {
                average: (t.ema_decay > 0.0).then(|| Ema::new(t.ema_decay, &network, None)),
                network,
                optimizer: optimizer::build(&config.optimizer),
                best: None,
                history: Vec::new(),
                reports: Vec::new(),
                seconds_before: 0.0,
                resumed_from: None,
                within: None,
                starting: Some(backend.chosen),
            }
        }
    };
    let mflop = |flops: u64| flops as f64 / 1e6;
    eprintln!(
        "training {} ({} parameters; {:.2} MFLOP to train on an image, {:.2} to classify one) on {} images of {} classes from {} ({} held out for validation, {} test), seed {}",
        config.model.describe(input, classes.count),
        run.network.num_params(),
        mflop(config.model.training_flops(input, classes.count)),
        mflop(2 * config.model.multiply_adds(input, classes.count)),
        train.len(),
        classes.count,
        splits.source,
        validation.len(),
        splits.test.len(),
        t.seed
    );

    let data = DeviceData::new(&train, &config.preprocess, &device);
    let held_out = DeviceData::new(&validation, &config.preprocess, &device);
    let steps_per_epoch = train.len().div_ceil(t.batch_size);
    let first_epoch = run.history.len() + 1;
    let done = (first_epoch - 1) * steps_per_epoch + run.within.map_or(0, |p| p.batches);
    let mut console = Console::new(steps_per_epoch * t.epochs, steps_per_epoch, done);
    let mut sinks = Sinks(vec![&mut console, reporter]);
    if run.resumed_from.is_some() {
        sinks.resumed(&run.reports, &run.history);
    }
    let mut clock = CheckpointClock {
        checkpoints,
        last: Instant::now(),
        started: Instant::now(),
    };
    let keep_best = t.keep == Keep::Best && !validation.is_empty();
    for epoch in first_epoch..=t.epochs {
        if run.patience_ran_out(t.patience) {
            break;
        }
        let epoch_started = Instant::now();
        let (trained, totals) = run.epoch(config, &data, epoch, &device, &mut sinks, &mut clock)?;
        run = trained;
        let training_seconds = epoch_started.elapsed().as_secs_f64();
        // The network the model would keep: the average of the weights when there is one.
        let network = run.evaluated();
        let validation = (!validation.is_empty())
            .then(|| held_out.evaluate(&network, t.loss, &Views::default()))
            .transpose()?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: totals.loss / totals.samples as f64,
            train_accuracy: totals.correct as f64 / totals.samples as f64,
            validation_loss: validation.as_ref().map(|e| e.loss),
            validation_accuracy: validation.as_ref().map(|e| e.accuracy),
            seconds: epoch_started.elapsed().as_secs_f64(),
            samples_per_second: totals.samples_now as f64 / training_seconds.max(1e-9),
        };
        sinks.epoch(&metrics);
        run.history.push(metrics);
        if let Some(accuracy) = validation.map(|v| v.accuracy).filter(|_| keep_best)
            // On a tie, the later epoch: as good on validation, and trained longer.
            && run.best.as_ref().is_none_or(|(best, _)| accuracy >= best.validation_accuracy)
        {
            let best = BestEpoch {
                epoch,
                validation_accuracy: accuracy,
            };
            run.best = Some((best, network));
        }
        clock.save(&run, config, epoch * steps_per_epoch, None, &mut sinks)?;
    }

    let last = run.history.last().map(|m| (m.epoch, m.validation_accuracy));
    let (last_epoch, last_accuracy) = last.unwrap_or((0, None));
    let stopped_early = last_epoch < t.epochs;
    let (network, kept) = match run.best.take() {
        Some((best, network)) => {
            eprintln!(
                "keeping epoch {} (validation accuracy {:.2}%; the last, epoch {last_epoch}: {})",
                best.epoch,
                best.validation_accuracy * 100.0,
                last_accuracy.map_or("-".into(), |a| format!("{:.2}%", a * 100.0))
            );
            (network, (best.epoch, Some(best.validation_accuracy)))
        }
        None => (run.evaluated(), (last_epoch, last_accuracy)),
    };
    let test = DeviceData::new(&splits.test, &config.preprocess, &device).evaluate(
        &network,
        t.loss,
        &config.tta,
    )?;
    let per_class = ClassStats::of(splits.source.clone(), classes, &splits.test.labels, &test);
    let metrics = TestMetrics {
        test_loss: test.loss,
        test_accuracy: test.accuracy,
        test_accuracy_single_view: test.single_view_accuracy,
        worst_class: per_class.worst(),
    };
    sinks.finished(&metrics);
    let seconds = run.seconds_before + clock.started.elapsed().as_secs_f64();
    let epochs = run.history.len();
    let card = ModelCard {
        summary: config.model.describe(input, classes.count),
        parameters: network.num_params(),
        input,
        classes: classes.count,
        class_names: classes.names.clone(),
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
            resumed_from_epoch: run.resumed_from,
            kept: Some(KeptEpoch {
                epoch: kept.0,
                validation_accuracy: kept.1,
                last_epoch,
                last_validation_accuracy: last_accuracy,
                averaged: run.average.is_some(),
                stopped_early,
            }),
        },
        metrics,
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
    /// The moving average of the weights, when training keeps one.
    average: Option<Ema>,
    /// The best epoch so far and its network, when training keeps the best.
    best: Option<(BestEpoch, Network)>,
    history: Vec<EpochMetrics>,
    /// Every step report so far.
    reports: Vec<StepMetrics>,
    /// Training time spent before a resume.
    seconds_before: f64,
    /// The epochs (and part of the next) done before a resume.
    resumed_from: Option<usize>,
    /// Where in its first epoch this run starts, when a checkpoint was taken within it.
    within: Option<Position>,
    /// When the device was chosen, until the first step has been reported.
    starting: Option<Instant>,
}

/// What an epoch summed: its loss, correct predictions and samples, and of those the samples
/// this process trained on (a resumed epoch's others came from the checkpoint).
struct Totals {
    loss: f64,
    correct: usize,
    samples: usize,
    samples_now: usize,
}

impl Run {
    /// Continues from `checkpoint`, which must be of the same model and preprocessing.
    fn resume(config: &TrainConfig, checkpoint: Checkpoint, chosen: Instant) -> Result<Self> {
        let Checkpoint {
            state,
            network,
            optimizer,
            average,
            best,
            path,
        } = checkpoint;
        anyhow::ensure!(
            state.config.model == config.model && state.config.preprocess == config.preprocess,
            "{}: the checkpoint was trained with another model or preprocessing",
            path.display()
        );
        let place = match state.within {
            Some(position) => format!("epoch {}, batch {}", state.epoch, position.batches),
            None => format!("epoch {}", state.epoch),
        };
        eprintln!("resuming after {place} ({})", path.display());
        let decay = config.training.ema_decay;
        Ok(Self {
            average: (decay > 0.0).then(|| Ema::new(decay, &network, average)),
            best: state.best.zip(best),
            network,
            optimizer,
            resumed_from: Some(state.history.len()),
            history: state.history,
            reports: state.reports,
            seconds_before: state.seconds,
            within: state.within,
            starting: Some(chosen),
        })
    }

    /// The network validation sees and the model keeps, on the device without autodiff: the
    /// moving average of the weights when there is one. A copy of its own: batch
    /// normalization's running statistics are shared by clones.
    fn evaluated(&self) -> Network {
        match &self.average {
            Some(average) => average.network.valid(),
            None => self.network.valid(),
        }
    }

    /// Whether `patience` epochs in a row have passed without a better validation accuracy.
    fn patience_ran_out(&self, patience: Option<usize>) -> bool {
        match (patience, &self.best) {
            (Some(patience), Some((best, _))) => self.history.len() - best.epoch >= patience,
            _ => false,
        }
    }

    /// One pass over the shuffled training data, from where a checkpoint left it. It takes the
    /// run by value so that each step hands the optimizer the only handle on the weights, which
    /// it then updates where they lie. Never inlined, so that `make profile` finds the training
    /// loop by its name.
    #[inline(never)]
    fn epoch(
        mut self,
        config: &TrainConfig,
        data: &DeviceData,
        epoch: usize,
        device: &Device,
        sinks: &mut Sinks,
        clock: &mut CheckpointClock,
    ) -> Result<(Self, Totals)> {
        let t = &config.training;
        let steps_per_epoch = data.len().div_ceil(t.batch_size);
        let total_steps = steps_per_epoch * t.epochs;
        // Data order and dropout depend on the seed, the epoch and the step only, so that a
        // resumed run continues as the uninterrupted one would have.
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(t.seed ^ ((epoch as u64) << 32)));
        let start = self.within.take().unwrap_or(Position {
            batches: 0,
            sums: Sums::default(),
            reported: Sums::default(),
        });
        let mut window = Window::new(&start, device);
        let batches = order.chunks(t.batch_size).enumerate().skip(start.batches);
        for (i, batch) in batches {
            let step = (epoch - 1) * steps_per_epoch + i + 1;
            let lr = (config.schedule).lr(
                config.optimizer.lr(),
                step - 1,
                steps_per_epoch,
                total_steps,
            );
            let seed = step_seed(t.seed, step);
            device.seed(seed);
            let indices = evaluate::index_tensor(batch, device);
            let x = match config.augment.applies(epoch, t.epochs) {
                true => augmented(config, data, batch, seed, device),
                false => data.inputs.clone().select(0, indices.clone()),
            };
            let y = data.targets.clone().select(0, indices);
            let outputs = self.network.forward(x);
            let loss = evaluate::loss(t.loss, t.label_smoothing, outputs.clone(), y.clone());
            window.add(&loss, outputs.detach(), y, batch.len());
            let grads = GradientsParams::from_grads(loss.backward(), &self.network);
            self.network = self.optimizer.step(lr, self.network, grads);
            self.average = self
                .average
                .take()
                .map(|average| average.update(&self.network, step));
            if let Some(chosen) = self.starting.take() {
                // Waits once for the device, so that the start-up (kernels compiled and tuned
                // unless the GPU cache held them) is measured, not just queued.
                window.sync()?;
                sinks.started(chosen.elapsed().as_secs_f64());
            }

            let stop = stop::requested();
            let stopped_in_wandb = sinks.stop_requested();
            let report = step.is_multiple_of(t.log_every) || i + 1 == steps_per_epoch;
            let checkpoint = stop.is_some() || stopped_in_wandb || clock.due();
            let sums = (report || checkpoint).then(|| window.read()).transpose()?;
            if let Some(sums) = sums.filter(|sums| !sums.loss.is_finite()) {
                return Err(Diverged {
                    loss: f64::from(sums.loss) / sums.samples as f64,
                    epoch,
                    step,
                    every: t.log_every,
                    lr,
                }
                .into());
            }
            // A window runs from report to report, whatever checkpoints fall within it.
            let metrics = sums.filter(|_| report).map(|sums| {
                let (loss, correct, samples, seconds) = window.report(sums);
                StepMetrics {
                    epoch,
                    step,
                    total_steps,
                    loss: loss / samples as f64,
                    accuracy: correct as f64 / samples as f64,
                    lr,
                    samples_per_second: samples as f64 / seconds.max(1e-9),
                }
            });
            sinks.step(step, metrics.as_ref());
            self.reports.extend(metrics);
            if let Some(sums) = sums.filter(|_| checkpoint) {
                let position = Position {
                    batches: i + 1,
                    sums,
                    reported: window.reported,
                };
                let path = clock.save(&self, config, step, Some((epoch, position)), sinks)?;
                let kept = format!(
                    "the checkpoint of epoch {epoch}, batch {} of {steps_per_epoch} is kept in {}",
                    i + 1,
                    path.display()
                );
                if let Some(signal) = stop {
                    return Err(stop::Interrupted {
                        signal,
                        detail: kept,
                    }
                    .into());
                }
                if stopped_in_wandb {
                    return Err(Stopped { step, kept }.into());
                }
            }
        }
        // The epoch's last batch is always reported: the sums are complete.
        let sums = window.reported;
        let totals = Totals {
            loss: f64::from(sums.loss),
            correct: sums.correct,
            samples: sums.samples,
            samples_now: sums.samples - start.sums.samples,
        };
        Ok((self, totals))
    }
}

/// When and where checkpoints are written.
struct CheckpointClock<'a> {
    checkpoints: &'a Checkpoints,
    /// The last checkpoint, or the start.
    last: Instant,
    /// When this process started training: its part of the training time.
    started: Instant,
}

impl CheckpointClock<'_> {
    /// Whether the longest time between checkpoints has passed.
    fn due(&self) -> bool {
        (self.checkpoints.every).is_some_and(|every| self.last.elapsed() >= every)
    }

    /// Writes a checkpoint of `run` at global step `step`: within an epoch at a position, or
    /// after the last epoch of its history.
    fn save(
        &mut self,
        run: &Run,
        config: &TrainConfig,
        step: usize,
        within: Option<(usize, Position)>,
        sinks: &mut Sinks,
    ) -> Result<PathBuf> {
        let (epoch, within) = match within {
            Some((epoch, position)) => (epoch, Some(position)),
            None => (run.history.len(), None),
        };
        let state = CheckpointState {
            epoch,
            within,
            config: config.clone(),
            history: run.history.clone(),
            reports: run.reports.clone(),
            seconds: run.seconds_before + self.started.elapsed().as_secs_f64(),
            wandb: sinks.run_identity(),
            best: run.best.as_ref().map(|(best, _)| *best),
        };
        let networks = Networks {
            network: &run.network,
            average: run.average.as_ref().map(|average| &average.network),
            best: run.best.as_ref().map(|(_, network)| network),
        };
        let path = checkpoint::save(
            &self.checkpoints.dir,
            step,
            &state,
            networks,
            &run.optimizer,
        )?;
        self.last = Instant::now();
        sinks.checkpointed(step, &path);
        Ok(path)
    }
}

/// The images at `batch`, changed by `[augment]` with the draws of `seed`, preprocessed, on
/// `device`.
fn augmented(
    config: &TrainConfig,
    data: &DeviceData,
    batch: &[usize],
    seed: u64,
    device: &Device,
) -> Tensor<2> {
    let images = &data.data.images;
    let pixels = augment::gather(&config.augment, &images.pixels, images.shape, batch, seed);
    let inputs = TensorData::new(
        config.preprocess.apply(&pixels),
        [batch.len(), images.shape.pixels()],
    );
    Tensor::from_data(inputs, device)
}

/// A seed for the dropout masks and augmentation of global step `step`: a resumed run draws what the
/// uninterrupted one would have, wherever it was stopped.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step as u64)
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
    /// The sums at the last report, and when it was.
    reported: Sums,
    since: Instant,
}

impl Window {
    /// Sums that go on from `start`'s: one chain of additions from the epoch's first batch
    /// however often it is read, so that an epoch resumed from a checkpoint sums to the very
    /// figures of one that was not.
    fn new(start: &Position, device: &Device) -> Self {
        Self {
            loss: Tensor::from_floats([start.sums.loss], device),
            correct: Tensor::from_ints([start.sums.correct as i64], device),
            samples: start.sums.samples,
            reported: start.reported,
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

    /// The epoch's sums so far.
    fn read(&self) -> Result<Sums> {
        Ok(Sums {
            loss: self.loss.clone().try_into_scalar::<f32>()?,
            correct: self.correct.clone().try_into_scalar::<i64>()? as usize,
            samples: self.samples,
        })
    }

    /// Loss, correct count, samples and seconds from the last report to `now`, which becomes
    /// the last report.
    fn report(&mut self, now: Sums) -> (f64, usize, usize, f64) {
        let since = (
            f64::from(now.loss) - f64::from(self.reported.loss),
            now.correct - self.reported.correct,
            now.samples - self.reported.samples,
            self.since.elapsed().as_secs_f64(),
        );
        self.reported = now;
        self.since = Instant::now();
        since
    }
}
