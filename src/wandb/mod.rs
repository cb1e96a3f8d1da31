//! Weights & Biases logging over W&B's own HTTP API (there is no usable Rust SDK). Knows nothing
//! of Burn: training reports to it as to any other metrics sink.

mod artifact;
mod artifact_upload;
mod client;
mod clock;
mod connection;
mod offline;
mod run;
mod settings;
mod spec;
mod sweep;
mod system;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::pachyderm::Provenance;
pub use artifact::{Artifact, Content, Entry, Role, RunFile, artifact_name};
pub use artifact_upload::split_path as split_artifact_path;
use connection::{Connection, base_url, connect, entity, env, project};
pub use run::{Report, WandbRun};
pub use settings::WandbConfig;
pub use sweep::create_sweep;
pub use table::{Cell, Png, Table, confusion_matrix};

/// How long the end of a run may take to deliver.
pub const FINAL_FLUSH: Duration = Duration::from_secs(60);

/// A run to start, beyond the settings: its config and what names it.
pub struct NewRun<'a> {
    /// `train`, `eval`, `inference`: what W&B groups runs by in the lineage graph.
    pub job_type: &'a str,
    /// The `mnist` subcommand that runs, for the run's program.
    pub command: &'a str,
    /// Each top-level key becomes one W&B config entry.
    pub config: &'a Map<String, Value>,
    pub provenance: Option<&'a Provenance>,
    /// The run's name, when the environment (`WANDB_NAME`) does not give one.
    pub name: Option<&'a str>,
    /// The W&B sweep the run joins.
    pub sweep_id: Option<&'a str>,
    /// Where offline runs (and what an online run could not deliver) go, unless `WANDB_DIR`
    /// says otherwise.
    pub root: &'a Path,
}

/// Starts a run as the settings and the environment say, or explains why there is none.
pub fn start(
    settings: &WandbConfig,
    key_file: Option<&Path>,
    run: &NewRun,
) -> Result<Option<WandbRun>> {
    let client = match connect(settings, key_file)? {
        Connection::Disabled => return Ok(None),
        Connection::Offline => {
            eprintln!("wandb: offline: the run is written for `wandb sync`");
            None
        }
        Connection::Online(client) => Some(client),
    };
    let provenance = run.provenance;
    let pipeline = provenance.and_then(|p| p.pipeline.clone());
    let mut tags = settings.tags.clone();
    if let Some(extra) = env("WANDB_TAGS") {
        tags.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from),
        );
    }
    let spec = spec::RunSpec {
        entity: entity(settings),
        project: project(settings)
            .or_else(|| pipeline.clone())
            .unwrap_or_else(|| "mnist".into()),
        run_id: env("WANDB_RUN_ID").unwrap_or_else(new_run_id),
        display_name: env("WANDB_NAME")
            .or_else(|| run.name.map(String::from))
            .or_else(|| provenance.and_then(|p| p.job_id.clone())),
        group: env("WANDB_RUN_GROUP").or(pipeline),
        job_type: run.job_type.into(),
        tags,
        notes: settings.notes.clone(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .or_else(|| env("HOSTNAME")),
        program: format!("mnist {}", run.command),
        sweep: run.sweep_id.map(String::from),
        config: Value::Object(
            run.config
                .iter()
                .map(|(key, value)| (key.clone(), json!({ "value": value })))
                .collect(),
        ),
        base_url: base_url(),
    };
    let offline_root = env("WANDB_DIR").map_or_else(|| run.root.to_owned(), PathBuf::from);
    Ok(Some(WandbRun::start(client, spec, offline_root)))
}

/// Eight characters of [a-z0-9], as W&B's own run ids.
fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}
