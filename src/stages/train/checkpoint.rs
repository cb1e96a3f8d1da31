//! Checkpoints that `--resume` continues from: the network, the optimizer state, the moving
//! average of the weights and the best epoch's network where training keeps them, and where
//! training stands (the epoch, the batches of it done and their running totals, the curves so
//! far, the W&B run), written after each epoch, every few minutes, and when a signal stops
//! training. Each is written to a temporary directory and renamed, so a checkpoint exists whole
//! or not at all. The two latest are kept: a latest one that cannot be read is skipped, with a
//! warning, for the one before it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::Device;
use burn::tensor::Bytes;
use model::{InputShape, Network};
use serde::{Deserialize, Serialize};

use crate::files::output;
use crate::formats::config::TrainConfig;
use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::ModelDir;
use crate::report::metrics::StepMetrics;
use crate::wandb::RunIdentity;

const STATE: &str = "state.json";
/// The network's weights, in the same file as in a model directory.
const WEIGHTS: &str = ModelDir::WEIGHTS;
const OPTIMIZER: &str = "optimizer.bpk";
/// The moving average of the weights (`training.ema_decay`).
const AVERAGE: &str = "ema.bpk";
/// The network of the best epoch so far (`training.keep = "best"`).
const BEST: &str = "best.bpk";
/// Checkpoints kept: the latest, and the one before in case the latest cannot be read.
const KEEP: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The epoch being trained, from 1.
    pub epoch: usize,
    /// How far into `epoch` training is; `None` once the epoch is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Position>,
    pub config: TrainConfig,
    /// The figures of the complete epochs.
    pub history: Vec<EpochMetrics>,
    /// Every step report so far: a resumed run sends its W&B run those it lacks.
    #[serde(default)]
    pub reports: Vec<StepMetrics>,
    /// Training time so far.
    pub seconds: f64,
    /// The W&B run that logs the training, for `--resume` to continue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wandb: Option<RunIdentity>,
    /// The epoch with the best validation accuracy so far, whose network is kept beside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestEpoch>,
}

/// The epoch with the best validation accuracy so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestEpoch {
    pub epoch: usize,
    pub validation_accuracy: f64,
}

/// The networks a checkpoint holds.
pub struct Networks<'a> {
    pub network: &'a Network,
    pub average: Option<&'a Network>,
    pub best: Option<&'a Network>,
}

/// A point within an epoch: the batches done, what they summed to, and the sums at the last
/// report (where the next report's window starts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub batches: usize,
    #[serde(flatten)]
    pub sums: Sums,
    /// Absent from checkpoints written before it was kept: the window then starts at the epoch's.
    #[serde(default)]
    pub reported: Sums,
}

/// Running totals of an epoch: summed loss, correct predictions, samples. The loss is the
/// device's `f32` sum and is kept as one: written as an `f64`, serde_json read it back up to
/// an `f64` ulp off (its fast float parser), so a resumed epoch's loss could differ from an
/// uninterrupted one's in the last digit; rounded to `f32` on reading, it is the sum again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sums {
    pub loss: f32,
    pub correct: usize,
    pub samples: usize,
}

impl CheckpointState {
    /// Complete epochs and batches of the next: the order checkpoints are made in.
    fn progress(&self) -> (usize, usize) {
        match self.within {
            Some(position) => (self.epoch - 1, position.batches),
            None => (self.epoch, 0),
        }
    }
}

pub struct Checkpoint {
    pub state: CheckpointState,
    pub network: Network,
    pub optimizer: ModuleOptimizer,
    /// The moving average of the weights, when the run kept one.
    pub average: Option<Network>,
    /// The best epoch's network, when `state.best` names one.
    pub best: Option<Network>,
    /// The checkpoint's directory.
    pub path: PathBuf,
}

/// Writes a checkpoint for global step `step` into `dir`, then removes all but the latest
/// [`KEEP`].
pub fn save(
    dir: &Path,
    step: usize,
    state: &CheckpointState,
    networks: Networks,
    optimizer: &ModuleOptimizer,
) -> Result<PathBuf> {
    place(dir, step, |temp| {
        output::write_file(&temp.join(WEIGHTS), &model::save_weights(networks.network)?)?;
        for (name, network) in [(AVERAGE, networks.average), (BEST, networks.best)] {
            if let Some(network) = network {
                output::write_file(&temp.join(name), &model::save_weights(network)?)?;
            }
        }
        let optimizer_bytes = optimizer
            .into_bytes()
            .map_err(|err| anyhow::anyhow!("serialising the optimizer state: {err}"))?;
        output::write_file(&temp.join(OPTIMIZER), &optimizer_bytes)?;
        output::write_json(&temp.join(STATE), state)
    })
}

/// Puts a checkpoint of global step `step` made elsewhere (its files by name: a W&B artifact's)
/// under `dir`, as [`save`] would have. Reading it is left to [`latest`], which skips it if it
/// does not read whole.
pub fn install(dir: &Path, step: usize, files: &BTreeMap<String, Vec<u8>>) -> Result<PathBuf> {
    let known = [STATE, WEIGHTS, OPTIMIZER, AVERAGE, BEST];
    if let Some(name) = files.keys().find(|name| !known.contains(&name.as_str())) {
        anyhow::bail!("{name:?} is not a file of a checkpoint");
    }
    place(dir, step, |temp| {
        files
            .iter()
            .try_for_each(|(name, bytes)| output::write_file(&temp.join(name), bytes))
    })
}

/// Writes checkpoint `step` with `write` into a temporary directory under `dir`, renames it
/// into place, and removes the checkpoints beyond the latest [`KEEP`].
fn place(dir: &Path, step: usize, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let name = format!("step-{step:09}");
    let target = dir.join(&name);
    let temp = dir.join(format!(".{name}.partial"));
    let _ = fs::remove_dir_all(&temp);
    fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
    write(&temp)?;
    let _ = fs::remove_dir_all(&target);
    fs::rename(&temp, &target).with_context(|| format!("renaming into {}", target.display()))?;
    for (_, older) in candidates(dir).into_iter().skip(KEEP) {
        let _ = fs::remove_dir_all(older);
    }
    Ok(target)
}

/// The checkpoint directories under `dir` with their states, latest first. A directory whose
/// state cannot be read is left out with a warning.
fn candidates(dir: &Path) -> Vec<(CheckpointState, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(CheckpointState, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("step-") || name.starts_with("epoch-"))
        })
        .filter_map(|path| match read_state(&path) {
            Ok(state) => Some((state, path)),
            Err(err) => {
                eprintln!("warning: skipping checkpoint {}: {err:#}", path.display());
                None
            }
        })
        .collect();
    found.sort_by_key(|(state, _)| std::cmp::Reverse(state.progress()));
    found
}

/// Removes every checkpoint under `dir`, and `dir` itself if nothing else is left in it: once
/// the model is written, they are of no more use.
pub fn remove_all(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["step-", "epoch-", ".step-"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    // Left when something else is in it.
    let _ = fs::remove_dir(dir);
    Ok(())
}

fn read_state(path: &Path) -> Result<CheckpointState> {
    let file = path.join(STATE);
    let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: invalid checkpoint state", file.display()))
}

/// The latest checkpoint under `dir` that reads whole, if any; `optimizer` is the configured
/// optimizer, which the saved state is loaded into.
pub fn latest(
    dir: &Path,
    input: InputShape,
    classes: usize,
    optimizer: &ModuleOptimizer,
    device: &Device,
) -> Option<Checkpoint> {
    candidates(dir).into_iter().find_map(|(state, path)| {
        match load(&path, &state, input, classes, optimizer.clone(), device) {
            Ok(Loaded {
                network,
                optimizer,
                average,
                best,
            }) => Some(Checkpoint {
                state,
                network,
                optimizer,
                average,
                best,
                path,
            }),
            Err(err) => {
                eprintln!("warning: skipping checkpoint {}: {err:#}", path.display());
                None
            }
        }
    })
}

fn load(
    path: &Path,
    state: &CheckpointState,
    input: InputShape,
    classes: usize,
    optimizer: ModuleOptimizer,
    device: &Device,
) -> Result<Loaded> {
    let read = |name: &str| {
        let file = path.join(name);
        fs::read(&file).with_context(|| format!("reading {}", file.display()))
    };
    let weights = |name: &str| {
        model::load_weights(&state.config.model, input, classes, read(name)?, device)
            .with_context(|| path.join(name).display().to_string())
    };
    let network = weights(WEIGHTS)?;
    let optimizer = optimizer
        .from_bytes(Bytes::from_bytes_vec(read(OPTIMIZER)?))
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.join(OPTIMIZER).display()))?;
    // A checkpoint of a run without an average has none; one that names a best epoch must
    // hold its network.
    let average = match path.join(AVERAGE).exists() {
        true => Some(weights(AVERAGE)?.valid()),
        false => None,
    };
    let best = match state.best {
        Some(_) => Some(weights(BEST)?.valid()),
        None => None,
    };
    Ok(Loaded {
        network,
        optimizer,
        average,
        best,
    })
}

struct Loaded {
    network: Network,
    optimizer: ModuleOptimizer,
    average: Option<Network>,
    best: Option<Network>,
}
