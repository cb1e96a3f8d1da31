//! Creating a sweep in W&B as the official SDK does (`wandb.sweep`): the GraphQL mutation
//! `UpsertSweep` with the sweep's configuration. The sweep's controller is local (`mnist sweep`
//! chose the trials), so W&B waits for no agents; runs join it by its id.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::connection::{Connection, app_url, base_url, connect, entity, project};
use super::settings::WandbConfig;

/// The mutation with the variables and answer fields of the SDK's newest form of it (the
/// first it tries, in `wandb/apis/public/sweeps.py`).
const UPSERT_SWEEP: &str = "mutation UpsertSweep($id: ID, $config: String, $description: String, $entityName: String, $projectName: String, $controller: JSONString, $launchScheduler: JSONString, $templateVariableValues: JSONString, $scheduler: JSONString, $state: String, $priorRunsFilters: JSONString, $displayName: String) {
  upsertSweep(input: {id: $id, config: $config, description: $description, entityName: $entityName, projectName: $projectName, controller: $controller, launchScheduler: $launchScheduler, templateVariableValues: $templateVariableValues, scheduler: $scheduler, state: $state, priorRunsFilters: $priorRunsFilters, displayName: $displayName}) {
    sweep {
      name
      project {
        id
        name
        entity {
          id
          name
        }
      }
    }
    configValidationWarnings
  }
}";

const CREATE_FOR: Duration = Duration::from_secs(30);

/// Creates the sweep of `config` (W&B's sweep configuration), if the settings and the
/// environment put this process online, and returns its id; `None` when W&B is off or offline,
/// or (with a warning) unreachable, unless the settings say W&B is required.
pub fn create_sweep(
    settings: &WandbConfig,
    key_file: Option<&Path>,
    config: &Value,
) -> Result<Option<String>> {
    let client = match connect(settings, key_file)? {
        Connection::Online(client) => client,
        Connection::Offline => {
            eprintln!("wandb: offline: the trials' runs will not join a W&B sweep");
            return Ok(None);
        }
        Connection::Disabled => return Ok(None),
    };
    let variables = json!({
        "id": null,
        // JSON is YAML too: the server reads the configuration as YAML.
        "config": config.to_string(),
        "description": config.get("description"),
        "entityName": entity(settings),
        "projectName": project(settings).unwrap_or_else(|| "mnist".into()),
        "controller": null,
        "launchScheduler": null,
        "templateVariableValues": "null",
        "scheduler": null,
        "priorRunsFilters": null,
        "displayName": null,
    });
    let deadline = Instant::now() + CREATE_FOR;
    let data = match client.graphql(UPSERT_SWEEP, "UpsertSweep", variables, deadline) {
        Ok(data) => data,
        Err(err) if settings.required => return Err(err).context("creating the W&B sweep"),
        Err(err) => {
            eprintln!(
                "wandb: warning: could not create the sweep ({err}); the trials' runs will not join one"
            );
            return Ok(None);
        }
    };
    let sweep = &data["upsertSweep"]["sweep"];
    let id = sweep["name"]
        .as_str()
        .context("creating the W&B sweep: the answer names no sweep")?
        .to_owned();
    for warning in data["upsertSweep"]["configValidationWarnings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        eprintln!("wandb: warning: sweep configuration: {warning}");
    }
    let project = &sweep["project"];
    let url = format!(
        "{}/{}/{}/sweeps/{id}",
        app_url(&base_url()),
        project["entity"]["name"].as_str().unwrap_or_default(),
        project["name"].as_str().unwrap_or_default(),
    );
    eprintln!("wandb: sweep {url}");
    Ok(Some(id))
}
