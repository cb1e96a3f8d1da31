//! A W&B artifact as the SDK builds one: named files (uploaded) and references (recorded by URI
//! and checksum, never uploaded), a manifest listing them, and the manifest's digest, by which
//! the server versions the collection and deduplicates identical versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

/// Where an entry's bytes are.
#[derive(Debug, Clone)]
pub enum Content {
    File(PathBuf),
    Bytes(Vec<u8>),
    /// Not uploaded: the URI names where the bytes live.
    Reference(String),
}

impl Content {
    /// The bytes to upload; `None` for a reference.
    pub fn read(&self) -> Option<std::io::Result<Vec<u8>>> {
        match self {
            Self::File(path) => Some(std::fs::read(path)),
            Self::Bytes(bytes) => Some(Ok(bytes.clone())),
            Self::Reference(_) => None,
        }
    }
}

/// A file of a run, by its W&B name: a file on disk or bytes made for W&B.
pub type RunFile = (String, Content);

#[derive(Debug, Clone)]
pub struct Entry {
    /// MD5 of the bytes, base64, as W&B's manifests and `Content-MD5` carry it.
    pub digest: String,
    pub size: u64,
    pub content: Content,
}

impl Entry {
    pub fn bytes(bytes: Vec<u8>) -> Self {
        Self {
            digest: md5_base64(&bytes),
            size: bytes.len() as u64,
            content: Content::Bytes(bytes),
        }
    }

    /// The file at `path`, read once for its checksum.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        Ok(Self {
            digest: md5_base64(&bytes),
            size: bytes.len() as u64,
            content: Content::File(path.to_owned()),
        })
    }

    /// A reference to `uri`, whose bytes are `bytes` now.
    pub fn reference(uri: String, bytes: &[u8]) -> Self {
        Self {
            digest: md5_base64(bytes),
            size: bytes.len() as u64,
            content: Content::Reference(uri),
        }
    }
}

/// How the run relates to the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The run made it: logged at the run's current history step.
    Output,
    /// The run read it: created if new (without a producing run), then marked as used.
    Input,
}

#[derive(Debug, Clone)]
pub struct Artifact {
    /// The collection's name; W&B numbers its versions v0, v1, …
    pub name: String,
    /// `model`, `dataset`, `run_table`, …
    pub kind: String,
    pub metadata: Map<String, Value>,
    pub aliases: Vec<String>,
    /// Also claim the alias `best` when this metadata figure is higher than that of the
    /// version called `best` now (or no version is).
    pub best_by: Option<String>,
    pub entries: BTreeMap<String, Entry>,
    /// Names the artifact (and the collection) before the server has: history rows point at it
    /// as `wandb-client-artifact://<id>/<entry>`.
    pub client_id: String,
    pub sequence_client_id: String,
}

impl Artifact {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            metadata: Map::new(),
            aliases: vec!["latest".into()],
            best_by: None,
            entries: BTreeMap::new(),
            client_id: client_id(),
            sequence_client_id: client_id(),
        }
    }

    /// The metadata as the JSON text W&B stores; `None` when there is none.
    pub fn metadata_json(&self) -> Option<String> {
        (!self.metadata.is_empty()).then(|| Value::Object(self.metadata.clone()).to_string())
    }

    /// MD5 (hex) over the sorted entries' names and digests, as `MANIFEST_MD5` is defined.
    pub fn digest(&self) -> String {
        let mut hasher = Md5::new();
        hasher.update(b"wandb-artifact-manifest-v1\n");
        for (name, entry) in &self.entries {
            hasher.update(format!("{name}:{}\n", entry.digest).as_bytes());
        }
        hex(&hasher.finalize())
    }

    /// The manifest uploaded with the artifact (`wandb_manifest.json`); uploaded entries name
    /// the artifact version they were first stored with.
    pub fn manifest(&self, birth_artifact_id: &str) -> Value {
        let contents: Map<String, Value> = self
            .entries
            .iter()
            .map(|(name, entry)| {
                let value = match &entry.content {
                    Content::Reference(uri) => {
                        json!({"digest": entry.digest, "ref": uri, "size": entry.size})
                    }
                    Content::File(_) | Content::Bytes(_) => json!({
                        "digest": entry.digest, "size": entry.size,
                        "birthArtifactID": birth_artifact_id,
                    }),
                };
                (name.clone(), value)
            })
            .collect();
        json!({
            "version": 1,
            "storagePolicy": STORAGE_POLICY,
            "storagePolicyConfig": {"storageLayout": STORAGE_LAYOUT},
            "contents": contents,
        })
    }

    /// Where history rows find an entry of this version, and of the collection's latest.
    pub fn client_paths(&self, entry: &str) -> (String, String) {
        (
            format!("wandb-client-artifact://{}/{entry}", self.client_id),
            format!(
                "wandb-client-artifact://{}:latest/{entry}",
                self.sequence_client_id
            ),
        )
    }
}

/// `name` with what W&B does not allow in artifact (and file) names, anything but letters,
/// digits, `-`, `_` and `.`, replaced by `-`.
pub fn artifact_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub const STORAGE_POLICY: &str = "wandb-storage-policy-v1";
pub const STORAGE_LAYOUT: &str = "V2";

pub fn md5_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 characters of [a-z0-9], as the SDK's client ids.
fn client_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..128)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's own figures for the model artifact in `shared/wandb/online.jsonl`: one file,
    /// `model.bin`, 90 bytes, MD5 `WH/Aww1eTqwQEf0Y9JpWPw==`, manifest digest
    /// `bf7f165404e41287c2c587dddda28c8d`.
    #[test]
    fn the_digest_is_the_sdks() {
        let mut artifact = Artifact::new("mymodel", "model");
        let bytes = b"\x00\x01weights".repeat(10);
        let entry = Entry::bytes(bytes);
        assert_eq!(entry.digest, "WH/Aww1eTqwQEf0Y9JpWPw==");
        assert_eq!(entry.size, 90);
        artifact.entries.insert("model.bin".into(), entry);
        assert_eq!(artifact.digest(), "bf7f165404e41287c2c587dddda28c8d");
        let manifest = artifact.manifest("QXJ0aWZhY3Q61");
        assert_eq!(
            manifest["contents"]["model.bin"],
            json!({"digest": "WH/Aww1eTqwQEf0Y9JpWPw==", "size": 90, "birthArtifactID": "QXJ0aWZhY3Q61"})
        );
        assert_eq!(manifest["storagePolicyConfig"]["storageLayout"], "V2");
    }

    #[test]
    fn references_are_listed_not_uploaded() {
        let mut artifact = Artifact::new("digits", "dataset");
        let entry = Entry::reference("pfs://parse@abc123/train.csv".into(), b"0,0,0\n");
        assert!(entry.content.read().is_none());
        artifact.entries.insert("train.csv".into(), entry);
        let manifest = artifact.manifest("unused");
        assert_eq!(
            manifest["contents"]["train.csv"]["ref"],
            "pfs://parse@abc123/train.csv"
        );
        assert!(manifest["contents"]["train.csv"]["birthArtifactID"].is_null());
        assert_eq!(artifact.client_id.len(), 128);
        assert_ne!(artifact.client_id, artifact.sequence_client_id);
    }
}
