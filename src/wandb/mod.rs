//! Weights & Biases logging over W&B's own HTTP API (there is no usable Rust SDK). Knows nothing
//! of Burn: training reports to it as to any other metrics sink.

mod artifact;
mod artifact_download;
mod artifact_upload;
mod client;
mod clock;
mod connection;
mod names;
mod offline;
mod resume;
mod run;
mod settings;
mod spec;
mod sweep;
mod system;
mod table;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::pachyderm::Provenance;
pub use artifact::{Artifact, Content, Entry, Role, RunFile, artifact_name};
pub use artifact_download::Downloaded;
pub use artifact_upload::split_path as split_artifact_path;
use connection::{Connection, base_url, connect, entity, env, project};
pub use names::check as check_name;
use resume::Resumed;
pub use run::{Report, WandbRun};
pub use settings::WandbConfig;
use spec::Resume;
pub use spec::RunIdentity;
pub use sweep::create_sweep;
pub use table::{Cell, Png, Table, confusion_matrix};

/// How long the end of a run may take to deliver.
pub const FINAL_FLUSH: Duration = Duration::from_secs(60);
/// How long the end of a run may take when a signal stopped it: Kubernetes kills a pod 30
/// seconds after its SIGTERM.
pub const STOP_FLUSH: Duration = Duration::from_secs(10);
/// How long to wait for the server's word on a run to continue.
const RESUME_LOOKUP: Duration = Duration::from_secs(30);

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
    /// The run this one continues, as a checkpoint recorded it.
    pub continues: Option<&'a RunIdentity>,
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
    let (run_id, resume) = identity(run)?;
    let spec = spec::RunSpec {
        entity: entity(settings),
        project: run_project(settings, provenance),
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
        config: encoded_config(run.config),
        base_url: base_url(),
        continues: run.continues.filter(|c| c.id == run_id).cloned(),
        run_id,
    };
    names::check("the W&B project", &spec.project)?;
    if let Some(entity) = &spec.entity {
        names::check("the W&B entity", entity)?;
    }
    let mut spec = spec;
    let resumed = match (&client, resume) {
        (Some(client), Some(mode)) => match lookup(client, &spec, mode)? {
            Lookup::Found(resumed) => Some(resumed),
            // The server is the authority on its runs: a run it does not hold starts afresh.
            Lookup::Absent => {
                spec.continues = None;
                None
            }
            Lookup::Unknown => None,
        },
        _ => None,
    };
    let offline_root = env("WANDB_DIR").map_or_else(|| run.root.to_owned(), PathBuf::from);
    // Offline, a run killed before it could write its part left nothing to continue: this part
    // is the whole run, made whole from its checkpoint's reports.
    if client.is_none()
        && spec.continues.is_some()
        && offline::earlier_part(&offline_root, &spec.run_id).is_none()
    {
        spec.continues = None;
    }
    Ok(Some(WandbRun::start(client, spec, offline_root, resumed)))
}

/// `config` in W&B's encoding, `{"key": {"value": ...}}`, with what the SDK keeps under
/// `_wandb` beside what the stage put there: `t`, its telemetry (of which `13` is the platform,
/// as Python names it), and `m`, the metric definitions (none). W&B's `wandbConfig` holding `t`
/// is what marks a run as started.
fn encoded_config(config: &Map<String, Value>) -> Value {
    let mut encoded: Map<String, Value> = config
        .iter()
        .map(|(key, value)| (key.clone(), json!({ "value": value })))
        .collect();
    let internal = &mut encoded
        .entry("_wandb")
        .or_insert_with(|| json!({"value": {}}))["value"];
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    internal["t"] = json!({"13": platform});
    internal["m"] = json!([]);
    Value::Object(encoded)
}

/// The project a run goes to: the settings', else the Pachyderm pipeline's name, else `mnist`.
fn run_project(settings: &WandbConfig, provenance: Option<&Provenance>) -> String {
    let pipeline = provenance.and_then(|p| p.pipeline.clone());
    project(settings)
        .or(pipeline)
        .unwrap_or_else(|| "mnist".into())
}

/// The artifact collection of run `run_id`'s checkpoints (type `checkpoint`; the newest is
/// `latest`).
pub fn checkpoint_collection(run_id: &str) -> String {
    artifact_name(&format!("checkpoint-{run_id}"))
}

/// The latest checkpoint W&B holds of the run this training would continue, for `--resume`
/// where no local checkpoint is: the run `WANDB_RUN_ID` names, or the one of Pachyderm's
/// pipeline, job and datum. `None` offline, without such a run id, or when the run logged none.
pub fn latest_checkpoint(
    settings: &WandbConfig,
    key_file: Option<&Path>,
    provenance: Option<&Provenance>,
) -> Result<Option<Downloaded>> {
    let Some(run_id) = env("WANDB_RUN_ID").or_else(|| provenance.and_then(pachyderm_run_id)) else {
        return Ok(None);
    };
    let Connection::Online(client) = connect(settings, key_file)? else {
        return Ok(None);
    };
    names::check("WANDB_RUN_ID", &run_id)?;
    let project = run_project(settings, provenance);
    let name = format!("{}:latest", checkpoint_collection(&run_id));
    let deadline = Instant::now() + RESUME_LOOKUP;
    let found = artifact_download::download(
        &client,
        entity(settings).as_deref(),
        &project,
        &name,
        deadline,
    );
    found.with_context(|| format!("fetching {name} from W&B"))
}

/// The run's id, and whether it continues a run of that id: `WANDB_RUN_ID` and `WANDB_RESUME`
/// as the SDK reads them; else the run the checkpoint names; in Pachyderm, one id per job and
/// datum, so that a retried datum continues its run; else a new id.
fn identity(run: &NewRun) -> Result<(String, Option<Resume>)> {
    let mode = env("WANDB_RESUME")
        .map(|value| {
            Resume::parse(&value)
                .ok_or_else(|| anyhow!("WANDB_RESUME={value}: expected allow, must, never or auto"))
        })
        .transpose()?;
    let (id, what, continues) = if let Some(id) = env("WANDB_RUN_ID") {
        (id, "WANDB_RUN_ID", false)
    } else if let Some(continues) = run.continues {
        (continues.id.clone(), "the checkpoint's W&B run id", true)
    } else if let Some(id) = run.provenance.and_then(pachyderm_run_id) {
        (id, "the W&B run id", true)
    } else {
        (new_run_id(), "the W&B run id", false)
    };
    names::check(what, &id)?;
    Ok((id, mode.or(continues.then_some(Resume::Allow))))
}

/// What the server holds of a run to continue.
enum Lookup {
    Found(Resumed),
    /// No such run, or one that never logged.
    Absent,
    /// The server could not be asked: the run continues from its checkpoint's figures (and, if
    /// it cannot be created either, is kept offline).
    Unknown,
}

/// What the server holds of the run to continue, checked against `mode`.
fn lookup(client: &client::Client, spec: &spec::RunSpec, mode: Resume) -> Result<Lookup> {
    let id = &spec.run_id;
    let deadline = Instant::now() + RESUME_LOOKUP;
    match resume::status(client, spec.entity.as_deref(), &spec.project, id, deadline) {
        Ok(Some(_)) if mode == Resume::Never => {
            bail!("W&B run {id} exists, and WANDB_RESUME=never: set another WANDB_RUN_ID")
        }
        Ok(None) if mode == Resume::Must => {
            bail!("W&B run {id} does not exist, and WANDB_RESUME=must asks to continue it")
        }
        Ok(Some(resumed)) => {
            eprintln!(
                "wandb: continuing run {id} from step {}",
                resumed.starting_step
            );
            Ok(Lookup::Found(resumed))
        }
        Ok(None) => Ok(Lookup::Absent),
        Err(err) if mode == Resume::Must => {
            bail!("cannot ask W&B whether run {id} exists (WANDB_RESUME=must): {err}")
        }
        Err(err) => {
            eprintln!("wandb: warning: cannot ask W&B about run {id}: {err}");
            Ok(Lookup::Unknown)
        }
    }
}

/// A run id of 8 characters of [a-z0-9] for a Pachyderm datum: the same for every try of the
/// datum within its job.
fn pachyderm_run_id(provenance: &Provenance) -> Option<String> {
    let (pipeline, job, datum) = (
        provenance.pipeline.as_deref()?,
        provenance.job_id.as_deref()?,
        provenance.datum_id.as_deref()?,
    );
    let digest = Sha256::digest(format!("{pipeline}/{job}/{datum}"));
    Some(
        digest
            .iter()
            .take(8)
            .map(|byte| id_char(*byte as usize))
            .collect(),
    )
}

fn id_char(index: usize) -> char {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    char::from(ALPHABET[index % ALPHABET.len()])
}

/// Eight characters of [a-z0-9], as W&B's own run ids.
fn new_run_id() -> String {
    (0..8).map(|_| id_char(rand::random_range(0..36))).collect()
}
