//! Logging an artifact online, in the order and with the GraphQL documents of the SDK's own
//! `wandb-core` (shared/wandb/online.jsonl): `CreateArtifact`, `CreateArtifactManifest` (to get
//! the manifest's id), `CreateArtifactFiles` and a PUT of each file not stored yet (with its
//! `Content-MD5`), `CreateArtifactManifest` again (to upload the manifest), `CommitArtifact`;
//! and `UseArtifact` to mark a run's input.

use std::time::Instant;

use serde_json::{Map, Value, json};

use super::artifact::{Artifact, Role, STORAGE_LAYOUT, md5_base64};
use super::client::{ApiError, Client};
use super::connection::{app_url, base_url};

const CREATE_ARTIFACT: &str = "
mutation CreateArtifact ($input: CreateArtifactInput!) {
	createArtifact(input: $input) {
		... CreatedArtifact
	}
}
fragment CreatedArtifact on CreateArtifactPayload {
	artifact {
		id
		state
		artifactSequence {
			latestArtifact {
				id
			}
		}
	}
}
";

const CREATE_ARTIFACT_MANIFEST: &str = "
mutation CreateArtifactManifest ($artifactID: ID!, $baseArtifactID: ID, $name: String!, $digest: String!, $entityName: String!, $projectName: String!, $runName: String!, $manifestType: ArtifactManifestType!, $includeUpload: Boolean!) {
	createArtifactManifest(input: {artifactID:$artifactID,baseArtifactID:$baseArtifactID,name:$name,digest:$digest,entityName:$entityName,projectName:$projectName,runName:$runName,type:$manifestType}) {
		artifactManifest {
			id
			file {
				id
				uploadUrl @include(if: $includeUpload)
				uploadHeaders @include(if: $includeUpload)
			}
		}
	}
}
";

const CREATE_ARTIFACT_FILES: &str = "
mutation CreateArtifactFiles ($input: CreateArtifactFilesInput!) {
	createArtifactFiles(input: $input) {
		files {
			edges {
				node {
					storagePath
					uploadUrl
					uploadHeaders
					uploadMultipartUrls {
						uploadID
						uploadUrlParts {
							partNumber
							uploadUrl
						}
					}
					artifact {
						id
					}
				}
			}
		}
	}
}
";

const COMMIT_ARTIFACT: &str = "
mutation CommitArtifact ($artifactID: ID!) {
	commitArtifact(input: {artifactID:$artifactID}) {
		artifact {
			id
			digest
		}
	}
}
";

const USE_ARTIFACT: &str = "
mutation UseArtifact ($input: UseArtifactInput!) {
	useArtifact(input: $input) {
		artifact {
			id
		}
	}
}
";

/// A version by name (`collection:alias` or `collection:vN`): what deciding `best` and using a
/// model by name need.
const ARTIFACT_BY_NAME: &str = "
query ArtifactByName ($entity: String, $project: String!, $name: String!) {
	project(name: $project, entityName: $entity) {
		artifact(name: $name) {
			id
			versionIndex
			metadata
			artifactType {
				name
			}
		}
	}
}
";

/// The version number the server gave a committed artifact.
const ARTIFACT_VERSION: &str = "
query ArtifactVersion ($id: ID!) {
	artifact(id: $id) {
		versionIndex
		aliases {
			alias
		}
	}
}
";

/// The run an artifact is logged by, as the server named it.
pub struct RunNames<'a> {
    pub entity: &'a str,
    pub project: &'a str,
    pub run: &'a str,
}

/// An artifact version the server holds.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: String,
    pub entity: String,
    pub project: String,
    pub name: String,
    pub kind: String,
    pub index: Option<u64>,
    pub aliases: Vec<String>,
    pub metadata: Map<String, Value>,
}

impl Version {
    /// `collection:v3`, or the collection's name while the version is unknown.
    pub fn label(&self) -> String {
        match self.index {
            Some(index) => format!("{}:v{index}", self.name),
            None => self.name.clone(),
        }
    }

    /// `entity/project/collection:v3`, as the SDK's `use_artifact` and `Api().artifact` take it.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.entity, self.project, self.label())
    }

    /// The version's page in the web app.
    pub fn url(&self) -> String {
        let version = self
            .index
            .map_or_else(|| "latest".into(), |i| format!("v{i}"));
        format!(
            "{}/{}/{}/artifacts/{}/{}/{version}",
            app_url(&base_url()),
            self.entity,
            self.project,
            self.kind,
            self.name
        )
    }
}

/// `entity/project/collection:vN`, as [`Version::path`] writes it, split into its three parts.
pub fn split_path(path: &str) -> Option<(&str, &str, &str)> {
    let mut parts = path.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Logs `artifact` for the run, an output at history `step`; for an input, also marks the run
/// as its user.
pub fn log(
    client: &Client,
    run: &RunNames,
    artifact: &Artifact,
    role: Role,
    step: u64,
    deadline: Instant,
) -> Result<Version, ApiError> {
    let mut aliases = artifact.aliases.clone();
    if let Some(figure) = &artifact.best_by
        && beats_best(client, run, artifact, figure, deadline)?
    {
        aliases.push("best".into());
    }
    let alias_inputs: Vec<Value> = aliases
        .iter()
        .map(|alias| json!({"alias": alias, "artifactCollectionName": artifact.name}))
        .collect();
    let output = role == Role::Output;
    let input = json!({
        "aliases": alias_inputs,
        "artifactCollectionName": artifact.name,
        "artifactCollectionNames": null,
        "artifactTypeName": artifact.kind,
        "clientID": artifact.client_id,
        "clientMutationId": null,
        "description": null,
        "digest": artifact.digest(),
        "digestAlgorithm": "MANIFEST_MD5",
        "distributedID": null,
        "enableDigestDeduplication": true,
        "entityName": run.entity,
        "historyStep": if output { json!(step) } else { Value::Null },
        "labels": null,
        "metadata": artifact.metadata_json(),
        "projectName": run.project,
        "runName": if output { json!(run.run) } else { Value::Null },
        "sequenceClientID": artifact.sequence_client_id,
        "storageRegion": null,
        "ttlDurationSeconds": null,
    });
    let data = client.graphql(
        CREATE_ARTIFACT,
        "CreateArtifact",
        json!({ "input": input }),
        deadline,
    )?;
    let created = &data["createArtifact"]["artifact"];
    let id = text(created, "id", "CreateArtifact")?;
    // An identical version exists already: the server keeps it and applies the aliases.
    if created["state"].as_str() != Some("COMMITTED") {
        upload(client, run, artifact, &id, deadline)?;
        client.graphql(
            COMMIT_ARTIFACT,
            "CommitArtifact",
            json!({"artifactID": id}),
            deadline,
        )?;
    }
    if role == Role::Input {
        mark_used(client, run, &id, deadline)?;
    }
    let data = client.graphql(
        ARTIFACT_VERSION,
        "ArtifactVersion",
        json!({"id": id}),
        deadline,
    )?;
    let found = &data["artifact"];
    Ok(Version {
        index: found["versionIndex"].as_u64(),
        aliases: found["aliases"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|a| a["alias"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or(aliases),
        id,
        entity: run.entity.to_owned(),
        project: run.project.to_owned(),
        name: artifact.name.clone(),
        kind: artifact.kind.clone(),
        metadata: artifact.metadata.clone(),
    })
}

/// The files and the manifest of a created, uncommitted artifact.
fn upload(
    client: &Client,
    run: &RunNames,
    artifact: &Artifact,
    id: &str,
    deadline: Instant,
) -> Result<(), ApiError> {
    let manifest_variables = |digest: &str, include_upload: bool| {
        json!({
            "artifactID": id, "baseArtifactID": null, "name": "wandb_manifest.json",
            "digest": digest, "entityName": run.entity, "projectName": run.project,
            "runName": run.run, "manifestType": "FULL", "includeUpload": include_upload,
        })
    };
    let data = client.graphql(
        CREATE_ARTIFACT_MANIFEST,
        "CreateArtifactManifest",
        manifest_variables("", false),
        deadline,
    )?;
    let manifest_id = text(
        &data["createArtifactManifest"]["artifactManifest"],
        "id",
        "CreateArtifactManifest",
    )?;

    let stored: Vec<(&String, Vec<u8>, &str)> = artifact
        .entries
        .iter()
        .filter_map(|(name, entry)| {
            let bytes = entry.content.read()?;
            Some(bytes.map(|bytes| (name, bytes, entry.digest.as_str())))
        })
        .collect::<Result<_, _>>()
        .map_err(|err| ApiError::Network {
            url: artifact.name.clone(),
            message: format!("reading a file of the artifact: {err}"),
        })?;
    if !stored.is_empty() {
        let files: Vec<Value> = stored
            .iter()
            .map(|(name, _, digest)| {
                json!({
                    "artifactID": id, "artifactManifestID": manifest_id, "md5": digest,
                    "mimetype": null, "name": name, "uploadPartsInput": null,
                })
            })
            .collect();
        let input = json!({
            "artifactFiles": files, "clientMutationId": null, "cloudRegionID": null,
            "storageLayout": STORAGE_LAYOUT,
        });
        let data = client.graphql(
            CREATE_ARTIFACT_FILES,
            "CreateArtifactFiles",
            json!({ "input": input }),
            deadline,
        )?;
        let edges = data["createArtifactFiles"]["files"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The answer lists the files in the order asked; no upload URL: stored already.
        for ((_, bytes, digest), edge) in stored.iter().zip(&edges) {
            let node = &edge["node"];
            if let Some(url) = node["uploadUrl"].as_str() {
                let mut headers = upload_headers(&node["uploadHeaders"]);
                headers.push(("Content-MD5".into(), (*digest).to_owned()));
                client.put(url, bytes, &headers, deadline)?;
            }
        }
    }

    let manifest = serde_json::to_vec(&artifact.manifest(id)).unwrap_or_default();
    let data = client.graphql(
        CREATE_ARTIFACT_MANIFEST,
        "CreateArtifactManifest",
        manifest_variables(&md5_base64(&manifest), true),
        deadline,
    )?;
    let file = &data["createArtifactManifest"]["artifactManifest"]["file"];
    let url = text(file, "uploadUrl", "CreateArtifactManifest")?;
    client.put(
        &url,
        &manifest,
        &upload_headers(&file["uploadHeaders"]),
        deadline,
    )
}

/// Marks the run as a user of the artifact `id`.
pub fn mark_used(
    client: &Client,
    run: &RunNames,
    id: &str,
    deadline: Instant,
) -> Result<(), ApiError> {
    let input = json!({
        "artifactID": id, "clientMutationId": null, "entityName": run.entity,
        "projectName": run.project, "runName": run.run, "usedAs": null,
    });
    client.graphql(
        USE_ARTIFACT,
        "UseArtifact",
        json!({ "input": input }),
        deadline,
    )?;
    Ok(())
}

/// The version called `name` (`collection:alias` or `collection:vN`) in the run's project.
pub fn find(
    client: &Client,
    run: &RunNames,
    name: &str,
    deadline: Instant,
) -> Result<Option<Version>, ApiError> {
    let variables = json!({"entity": run.entity, "project": run.project, "name": name});
    let data = client.graphql(ARTIFACT_BY_NAME, "ArtifactByName", variables, deadline)?;
    let found = &data["project"]["artifact"];
    let Some(id) = found["id"].as_str() else {
        return Ok(None);
    };
    let (collection, alias) = name.split_once(':').unwrap_or((name, "latest"));
    Ok(Some(Version {
        id: id.to_owned(),
        entity: run.entity.to_owned(),
        project: run.project.to_owned(),
        name: collection.to_owned(),
        kind: found["artifactType"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        index: found["versionIndex"].as_u64(),
        aliases: vec![alias.to_owned()],
        metadata: match &found["metadata"] {
            Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        },
    }))
}

/// Whether the artifact's `figure` beats that of the version called `best` now.
fn beats_best(
    client: &Client,
    run: &RunNames,
    artifact: &Artifact,
    figure: &str,
    deadline: Instant,
) -> Result<bool, ApiError> {
    let Some(ours) = artifact.metadata.get(figure).and_then(Value::as_f64) else {
        return Ok(false);
    };
    let best = find(client, run, &format!("{}:best", artifact.name), deadline)?;
    Ok(best
        .and_then(|best| best.metadata.get(figure).and_then(Value::as_f64))
        .is_none_or(|theirs| ours > theirs))
}

/// `["Content-Type:application/json", …]`, as signed-URL uploads list their headers.
fn upload_headers(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            let (name, value) = h.as_str()?.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn text(value: &Value, field: &str, operation: &str) -> Result<String, ApiError> {
    value[field]
        .as_str()
        .map(String::from)
        .ok_or_else(|| ApiError::GraphQl {
            url: operation.into(),
            message: format!("the answer has no {field}"),
        })
}
