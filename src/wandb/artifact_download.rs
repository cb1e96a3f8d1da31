//! Fetching an artifact version's files, as the SDK's `Artifact.download` does: the version by
//! name with its manifest's direct URL, the manifest (a signed URL), then each stored file from
//! `artifactsV2/<region>/<entity>/<project>/<collection>/<birth artifact>/<md5 hex>/<name>`
//! with the key, each checked against the manifest's MD5 and size.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::artifact::md5_base64;
use super::client::{ApiError, Client};
use super::connection::base_url;

const ARTIFACT_FILES: &str = "
query ArtifactFiles ($entity: String, $project: String!, $name: String!) {
	project(name: $project, entityName: $entity) {
		entity {
			name
		}
		artifact(name: $name) {
			id
			versionIndex
			metadata
			currentManifest {
				file {
					directUrl
				}
			}
		}
	}
}
";

/// A version's files, as downloaded and checked.
#[derive(Debug)]
pub struct Downloaded {
    /// `collection:vN`.
    pub version: String,
    pub metadata: Map<String, Value>,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a version could not be had whole.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{version}: {problem}")]
    Invalid { version: String, problem: String },
}

/// The files of the version called `name` (`collection:alias`) in `project`, or `None` when
/// there is no such version.
pub fn download(
    client: &Client,
    entity: Option<&str>,
    project: &str,
    name: &str,
    deadline: Instant,
) -> Result<Option<Downloaded>, DownloadError> {
    let variables = json!({"entity": entity, "project": project, "name": name});
    let data = client.graphql(ARTIFACT_FILES, "ArtifactFiles", variables, deadline)?;
    let found = &data["project"]["artifact"];
    if found.is_null() {
        return Ok(None);
    }
    let collection = name
        .split_once(':')
        .map_or(name, |(collection, _)| collection);
    let version = match found["versionIndex"].as_u64() {
        Some(index) => format!("{collection}:v{index}"),
        None => name.to_owned(),
    };
    let invalid = |problem: String| DownloadError::Invalid {
        version: version.clone(),
        problem,
    };
    let entity = (data["project"]["entity"]["name"].as_str())
        .or(entity)
        .ok_or_else(|| invalid("the server named no entity".into()))?;
    let manifest_url = found["currentManifest"]["file"]["directUrl"]
        .as_str()
        .ok_or_else(|| invalid("the server gave no manifest".into()))?;
    let manifest: Value = serde_json::from_slice(&client.get(manifest_url, false, deadline)?)
        .map_err(|err| invalid(format!("the manifest is not JSON: {err}")))?;
    let region = manifest["storagePolicyConfig"]["storageRegion"]
        .as_str()
        .unwrap_or("default");
    let contents = manifest["contents"]
        .as_object()
        .ok_or_else(|| invalid("the manifest lists no contents".into()))?;

    let mut files = BTreeMap::new();
    for (file, entry) in contents {
        let (Some(digest), Some(size)) = (entry["digest"].as_str(), entry["size"].as_u64()) else {
            return Err(invalid(format!(
                "{file}: no digest or size in the manifest"
            )));
        };
        let birth = entry["birthArtifactID"].as_str().unwrap_or_default();
        let url = format!(
            "{}/artifactsV2/{region}/{}/{}/{}/{}/{}/{}",
            base_url(),
            segment(entity),
            segment(project),
            segment(collection),
            segment(birth),
            hex_of_base64(digest).ok_or_else(|| invalid(format!("{file}: digest {digest}")))?,
            segment(file),
        );
        let bytes = client.get(&url, true, deadline)?;
        if bytes.len() as u64 != size || md5_base64(&bytes) != digest {
            return Err(invalid(format!(
                "{file}: {} bytes with MD5 {} downloaded, the manifest says {size} with {digest}",
                bytes.len(),
                md5_base64(&bytes)
            )));
        }
        files.insert(file.clone(), bytes);
    }
    let metadata = match &found["metadata"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    Ok(Some(Downloaded {
        version,
        metadata,
        files,
    }))
}

/// `text` as one URL path segment: unreserved characters as they are, the rest percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An MD5 digest in base64, as manifests carry it, in hex, as storage paths do.
fn hex_of_base64(digest: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(digest)
        .ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_paths_are_as_the_sdk_writes_them() {
        // The SDK's `b64_to_hex_id` of the model artifact's file in shared/wandb/online.jsonl.
        assert_eq!(
            hex_of_base64("WH/Aww1eTqwQEf0Y9JpWPw==").as_deref(),
            Some("587fc0c30d5e4eac1011fd18f49a563f")
        );
        assert_eq!(segment("QXJ0aWZhY3Q6MQ=="), "QXJ0aWZhY3Q6MQ%3D%3D");
        assert_eq!(segment("state.json"), "state.json");
    }
}
