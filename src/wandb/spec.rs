//! What a run is: the names and config that `UpsertBucket` creates it with, and that an
//! offline run records; and what continues an earlier run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `UpsertBucket` needs to create the run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub base_url: String,
    pub entity: Option<String>,
    pub project: String,
    pub run_id: String,
    pub display_name: Option<String>,
    pub group: Option<String>,
    pub job_type: String,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub host: Option<String>,
    pub program: String,
    /// The W&B sweep the run belongs to.
    pub sweep: Option<String>,
    /// The config in W&B's encoding, `{"key": {"value": ...}}`.
    pub config: Value,
    /// Where the run stood when it was last stopped, as its checkpoint recorded it: the rows
    /// and runtime to continue from when the server cannot say (offline).
    pub continues: Option<RunIdentity>,
}

/// W&B's `resume` setting (`WANDB_RESUME`): what to do when a run of the same id exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Continue it if it exists, else start it.
    Allow,
    /// Continue it; an error if it does not exist.
    Must,
    /// Start it; an error if it exists.
    Never,
}

impl Resume {
    /// `WANDB_RESUME`'s values, as the SDK reads them (`auto` continues the run this process's
    /// checkpoint names, as `allow` does).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "allow" | "auto" | "true" => Some(Self::Allow),
            "must" => Some(Self::Must),
            "never" | "false" => Some(Self::Never),
            _ => None,
        }
    }
}

/// What a checkpoint keeps of the W&B run logging the training, so that `--resume` continues
/// that run: its id, how many history rows it had logged and how long it had run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub id: String,
    pub rows: u64,
    pub runtime: f64,
}
