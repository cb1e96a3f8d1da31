//! What a run is: the names and config that `UpsertBucket` creates it with, and that an
//! offline run records.

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
}
