//! Continuing a run that exists, as the SDK's `wandb-core` does
//! (`core/internal/runbranch/resume.go`): the `RunResumeStatus` query, whose line counts become
//! the `file_stream` offsets, whose last history row's `_step` + 1 is the next step, and whose
//! summary, config and runtime are carried over.

use std::time::Instant;

use serde_json::{Map, Value};

use super::client::{ApiError, Client};

const RUN_RESUME_STATUS: &str =
    "query RunResumeStatus($project: String, $entity: String, $name: String!) {
	model(name: $project, entityName: $entity) {
		id
		name
		entity {
			id
			name
		}
		bucket(name: $name, missingOk: true) {
			id
			name
			summaryMetrics
			displayName
			logLineCount
			historyLineCount
			eventsLineCount
			historyTail
			eventsTail
			config
			tags
			notes
			wandbConfig(keys: [\"t\"])
		}
	}
}";

/// What the server holds of a run that this one continues.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resumed {
    /// The `_step` of the next history row.
    pub starting_step: u64,
    /// Lines of `wandb-history.jsonl`, `wandb-events.jsonl` and `output.log` already held: where
    /// `file_stream` goes on.
    pub history: usize,
    pub events: usize,
    pub output: usize,
    pub summary: Map<String, Value>,
    /// In W&B's encoding, `{"key": {"value": ...}}`.
    pub config: Map<String, Value>,
    /// Seconds the run has run.
    pub runtime: f64,
    /// The last history row held.
    pub last_row: Map<String, Value>,
}

/// What the server holds of run `run_id`, or `None` when it has no such run (or one that never
/// started: created, but nothing logged).
pub fn status(
    client: &Client,
    entity: Option<&str>,
    project: &str,
    run_id: &str,
    deadline: Instant,
) -> Result<Option<Resumed>, ApiError> {
    let variables = serde_json::json!({"project": project, "entity": entity, "name": run_id});
    let data = client.graphql(RUN_RESUME_STATUS, "RunResumeStatus", variables, deadline)?;
    Ok(read(&data["model"]["bucket"]))
}

/// The resume state of a `bucket` as the server answers it.
fn read(bucket: &Value) -> Option<Resumed> {
    if bucket.is_null() {
        return None;
    }
    let count = |key: &str| bucket[key].as_u64().unwrap_or(0) as usize;
    let summary = json_object(&bucket["summaryMetrics"]);
    let started = json_object(&bucket["wandbConfig"]).contains_key("t")
        || count("historyLineCount") > 0
        || !summary.is_empty();
    if !started {
        return None;
    }
    let tail: Vec<Map<String, Value>> = json_array(&bucket["historyTail"])
        .iter()
        .map(json_object)
        .collect();
    let last_row = tail.last().cloned().unwrap_or_default();
    let step = |row: &Map<String, Value>| row.get("_step").and_then(Value::as_u64);
    let history = count("historyLineCount");
    let last_step = step(&last_row).or_else(|| step(&summary)).unwrap_or(0);
    let runtime = [&last_row, &summary]
        .iter()
        .filter_map(|row| row.get("_runtime").and_then(Value::as_f64))
        .chain(summary.get("_wandb").and_then(|w| w["runtime"].as_f64()))
        .fold(0.0, f64::max);
    Some(Resumed {
        starting_step: if history > 0 {
            last_step + 1
        } else {
            last_step
        },
        history,
        events: count("eventsLineCount"),
        output: count("logLineCount"),
        summary,
        config: json_object(&bucket["config"]),
        runtime,
        last_row,
    })
}

/// A JSON value the server sends as a string of JSON (or as the value itself).
fn parsed(value: &Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn json_object(value: &Value) -> Map<String, Value> {
    match parsed(value) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn json_array(value: &Value) -> Vec<Value> {
    match parsed(value) {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_run_that_logged_continues_after_its_last_row() {
        let bucket = json!({
            "historyLineCount": 12, "eventsLineCount": 3, "logLineCount": 40,
            "historyTail": "[\"{\\\"_step\\\": 10, \\\"_runtime\\\": 30.5}\", \"{\\\"_step\\\": 11, \\\"_runtime\\\": 31.5, \\\"trainer/step\\\": 200}\"]",
            "summaryMetrics": "{\"val/accuracy\": 0.9, \"_step\": 11, \"_wandb\": {\"runtime\": 32}}",
            "config": "{\"optimizer\": {\"value\": {\"lr\": 0.001}}}",
            "wandbConfig": "{}",
        });
        let resumed = read(&bucket).expect("a run that started");
        assert_eq!(resumed.starting_step, 12);
        assert_eq!(
            (resumed.history, resumed.events, resumed.output),
            (12, 3, 40)
        );
        assert_eq!(resumed.runtime, 32.0);
        assert_eq!(resumed.last_row["trainer/step"], 200);
        assert_eq!(resumed.summary["val/accuracy"], 0.9);
        assert_eq!(resumed.config["optimizer"]["value"]["lr"], 0.001);
    }

    #[test]
    fn a_missing_or_unstarted_run_is_none() {
        assert_eq!(read(&Value::Null), None);
        let created = json!({"historyLineCount": 0, "summaryMetrics": "{}", "wandbConfig": "{}"});
        assert_eq!(read(&created), None);
        let started = json!({"historyLineCount": 0, "wandbConfig": "{\"t\": {}}"});
        assert_eq!(read(&started).map(|r| r.starting_step), Some(0));
    }
}
