//! Per-epoch checkpoints (network, optimizer state, curves so far) that `--resume` continues
//! from. Each is written to a temporary directory and renamed, so a checkpoint either exists
//! whole or not at all.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::optim::ModuleOptimizer;
use burn::prelude::Device;
use burn::tensor::Bytes;
use model::{InputShape, Network};
use serde::{Deserialize, Serialize};

use crate::files::output;
use crate::formats::config::TrainConfig;
use crate::formats::curves::EpochMetrics;
use crate::formats::model_dir::ModelDir;

const STATE: &str = "state.json";
/// The network's weights, in the same file as in a model directory.
const WEIGHTS: &str = ModelDir::WEIGHTS;
const OPTIMIZER: &str = "optimizer.bpk";

#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub epoch: usize,
    pub config: TrainConfig,
    pub history: Vec<EpochMetrics>,
    pub seconds: f64,
}

pub struct Checkpoint {
    pub state: CheckpointState,
    pub network: Network,
    pub optimizer: ModuleOptimizer,
}

fn epoch_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}"))
}

pub fn save(
    dir: &Path,
    state: &CheckpointState,
    network: &Network,
    optimizer: &ModuleOptimizer,
) -> Result<()> {
    let target = epoch_dir(dir, state.epoch);
    let temp = dir.join(format!(".epoch-{:04}.partial", state.epoch));
    let _ = fs::remove_dir_all(&temp);
    fs::create_dir_all(&temp).with_context(|| format!("creating {}", temp.display()))?;
    output::write_file(&temp.join(WEIGHTS), &model::save_weights(network)?)?;
    let optimizer_bytes = optimizer
        .into_bytes()
        .map_err(|err| anyhow::anyhow!("serialising the optimizer state: {err}"))?;
    output::write_file(&temp.join(OPTIMIZER), &optimizer_bytes)?;
    output::write_json(&temp.join(STATE), state)?;
    let _ = fs::remove_dir_all(&target);
    fs::rename(&temp, &target).with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

/// The latest complete checkpoint under `dir`, if any.
pub fn latest(
    dir: &Path,
    input: InputShape,
    classes: usize,
    optimizer: ModuleOptimizer,
    device: &Device,
) -> Result<Option<Checkpoint>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let latest = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_prefix("epoch-")?.parse::<usize>().ok()?;
            Some((epoch, entry.path()))
        })
        .max_by_key(|(epoch, _)| *epoch);
    let Some((_, path)) = latest else {
        return Ok(None);
    };
    let read = |name: &str| {
        let file = path.join(name);
        fs::read(&file).with_context(|| format!("reading checkpoint file {}", file.display()))
    };
    let state_path = path.join(STATE);
    let state: CheckpointState = serde_json::from_slice(&read(STATE)?)
        .with_context(|| format!("{}: invalid checkpoint state", state_path.display()))?;
    let network = model::load_weights(&state.config.model, input, classes, read(WEIGHTS)?, device)
        .with_context(|| path.join(WEIGHTS).display().to_string())?;
    let optimizer = optimizer
        .from_bytes(Bytes::from_bytes_vec(read(OPTIMIZER)?))
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.join(OPTIMIZER).display()))?;
    Ok(Some(Checkpoint {
        state,
        network,
        optimizer,
    }))
}
