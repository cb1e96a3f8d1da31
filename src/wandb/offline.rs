//! Offline runs in W&B's transaction-log format, which `wandb sync` uploads: a 7-byte header
//! (`:W&B`, magic 0xBEE1, version 0), then LevelDB-log blocks of 32 KiB holding records framed
//! with a CRC-32 (IEEE, over the chunk type and data), each record a `wandb_internal.Record`
//! protobuf (wandb/proto/wandb_internal.proto).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::artifact::{Artifact, Content, Role, RunFile, STORAGE_LAYOUT, STORAGE_POLICY};
use super::clock;
use super::spec::RunSpec;

const BLOCK: usize = 32 * 1024;
const CHUNK_HEADER: usize = 7;

/// A protobuf message being encoded; fields at their default value are left out, as protobuf
/// does.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn int(mut self, field: u32, value: i64) -> Self {
        if value != 0 {
            self.tag(field, 0);
            self.varint(value as u64);
        }
        self
    }

    fn bytes(mut self, field: u32, bytes: &[u8]) -> Self {
        self.tag(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    fn string(self, field: u32, value: &str) -> Self {
        if value.is_empty() {
            self
        } else {
            self.bytes(field, value.as_bytes())
        }
    }

    fn message(self, field: u32, message: Message) -> Self {
        self.bytes(field, &message.0)
    }
}

/// `ConfigItem`, `HistoryItem` and `SummaryItem` share their layout: a key and a JSON value.
fn items(field: u32, values: &Map<String, Value>) -> Message {
    values
        .iter()
        .fold(Message::default(), |message, (key, value)| {
            message.message(
                field,
                Message::default()
                    .string(item::KEY, key)
                    .string(item::VALUE_JSON, &value.to_string()),
            )
        })
}

// Field numbers of the messages written, from `wandb/proto/wandb_internal.proto` as the wandb
// SDK 0.31.0 ships it (and `google.protobuf.Timestamp`). The test `field_numbers_match_the_sdk`
// checks each against the installed SDK's own descriptors.

/// `Record`, the message each log entry holds.
mod record {
    pub const NUM: u32 = 1;
    pub const HISTORY: u32 = 2;
    pub const SUMMARY: u32 = 3;
    pub const FILES: u32 = 6;
    pub const ARTIFACT: u32 = 8;
    pub const RUN: u32 = 17;
    pub const EXIT: u32 = 18;
    pub const FINAL: u32 = 20;
    pub const HEADER: u32 = 21;
}

/// `HeaderRecord` and its `VersionInfo`.
mod header {
    pub const VERSION_INFO: u32 = 1;
    pub const PRODUCER: u32 = 1;
}

/// `RunRecord`.
mod run {
    pub const RUN_ID: u32 = 1;
    pub const ENTITY: u32 = 2;
    pub const PROJECT: u32 = 3;
    pub const CONFIG: u32 = 4;
    pub const RUN_GROUP: u32 = 6;
    pub const JOB_TYPE: u32 = 7;
    pub const DISPLAY_NAME: u32 = 8;
    pub const NOTES: u32 = 9;
    pub const TAGS: u32 = 10;
    pub const SWEEP_ID: u32 = 12;
    pub const HOST: u32 = 13;
    pub const STARTING_STEP: u32 = 14;
    pub const START_TIME: u32 = 17;
    pub const RESUMED: u32 = 18;
    pub const RUNTIME: u32 = 20;
}

/// `google.protobuf.Timestamp`.
mod timestamp {
    pub const SECONDS: u32 = 1;
    pub const NANOS: u32 = 2;
}

/// `ConfigRecord.update`, `SummaryRecord.update` and `HistoryRecord.item`: the repeated items.
const ITEMS: u32 = 1;

/// `ConfigItem`, `HistoryItem`, `SummaryItem`.
mod item {
    pub const KEY: u32 = 1;
    pub const VALUE_JSON: u32 = 16;
}

/// `HistoryRecord.step` and its `HistoryStep`.
mod history {
    pub const STEP: u32 = 2;
    pub const STEP_NUM: u32 = 1;
}

/// `FilesRecord` and its `FilesItem`.
mod files {
    pub const FILES: u32 = 1;
    pub const PATH: u32 = 1;
    pub const POLICY: u32 = 2;
    /// `FilesItem.PolicyType.END`: upload once the run is over.
    pub const POLICY_END: i64 = 1;
}

/// `ArtifactRecord`.
mod artifact {
    pub const RUN_ID: u32 = 1;
    pub const PROJECT: u32 = 2;
    pub const ENTITY: u32 = 3;
    pub const TYPE: u32 = 4;
    pub const NAME: u32 = 5;
    pub const DIGEST: u32 = 6;
    pub const METADATA: u32 = 8;
    pub const USE_AFTER_COMMIT: u32 = 10;
    pub const ALIASES: u32 = 11;
    pub const MANIFEST: u32 = 12;
    pub const FINALIZE: u32 = 14;
    pub const CLIENT_ID: u32 = 15;
    pub const SEQUENCE_CLIENT_ID: u32 = 16;
    pub const DIGEST_ALGORITHM: u32 = 20;
}

/// `ArtifactManifest`, its `StoragePolicyConfigItem` and its `ArtifactManifestEntry`.
mod manifest {
    pub const VERSION: u32 = 1;
    pub const STORAGE_POLICY: u32 = 2;
    pub const STORAGE_POLICY_CONFIG: u32 = 3;
    pub const CONTENTS: u32 = 4;
    pub const CONFIG_KEY: u32 = 1;
    pub const CONFIG_VALUE_JSON: u32 = 2;
    pub const ENTRY_PATH: u32 = 1;
    pub const ENTRY_DIGEST: u32 = 2;
    pub const ENTRY_REF: u32 = 3;
    pub const ENTRY_SIZE: u32 = 4;
    pub const ENTRY_LOCAL_PATH: u32 = 6;
}

/// `RunExitRecord`.
mod exit {
    pub const EXIT_CODE: u32 = 1;
    pub const RUNTIME: u32 = 2;
}

/// Everything a finished run holds, to write as one offline run.
pub struct OfflineRun<'a> {
    pub spec: &'a RunSpec,
    pub history: &'a [String],
    pub summary: &'a Map<String, Value>,
    pub files: &'a [RunFile],
    /// Logged in this order; their files are kept beside the run, for `wandb sync` to upload.
    pub artifacts: &'a [(Artifact, Role)],
    pub exit_code: i32,
    pub runtime_seconds: f64,
    pub started: SystemTime,
    /// For a run that continues an earlier one of its id: the step of its first row, and the
    /// seconds the earlier one ran.
    pub continues: Option<(u64, f64)>,
}

impl OfflineRun<'_> {
    /// Writes `<root>/wandb/offline-run-<time>-<id>/run-<id>.wandb` and the run's files beside
    /// it; returns the run directory.
    pub fn write(&self, root: &Path) -> std::io::Result<PathBuf> {
        let spec = self.spec;
        // The part of a continued run may start within the second its first part did: the
        // stamp moves on until the name is free, so that each part keeps its own directory.
        let dir = (0..)
            .map(|later| {
                let started = self.started + Duration::from_secs(later);
                let name = format!("offline-run-{}-{}", stamp(started), spec.run_id);
                root.join("wandb").join(name)
            })
            .find(|dir| !dir.exists())
            .expect("a free name");
        let files_dir = dir.join("files");
        std::fs::create_dir_all(&files_dir)?;

        let mut log = LogWriter::new();
        let mut num = 0;
        let mut record = |body: Message| {
            num += 1;
            log.record(&body.int(record::NUM, num).0);
        };
        let version = Message::default().string(
            header::PRODUCER,
            concat!("mnist ", env!("CARGO_PKG_VERSION")),
        );
        let header = Message::default().message(header::VERSION_INFO, version);
        record(Message::default().message(record::HEADER, header));

        let config: Map<String, Value> = spec
            .config
            .as_object()
            .map(|config| {
                config
                    .iter()
                    .map(|(key, value)| (key.clone(), value["value"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        let start_time = Message::default()
            .int(timestamp::SECONDS, started.as_secs() as i64)
            .int(timestamp::NANOS, i64::from(started.subsec_nanos()));
        let mut run = Message::default()
            .string(run::RUN_ID, &spec.run_id)
            .string(run::ENTITY, spec.entity.as_deref().unwrap_or(""))
            .string(run::PROJECT, &spec.project)
            .message(run::CONFIG, items(ITEMS, &config))
            .string(run::RUN_GROUP, spec.group.as_deref().unwrap_or(""))
            .string(run::JOB_TYPE, &spec.job_type)
            .string(
                run::DISPLAY_NAME,
                spec.display_name.as_deref().unwrap_or(""),
            )
            .string(run::NOTES, spec.notes.as_deref().unwrap_or(""));
        for tag in &spec.tags {
            run = run.string(run::TAGS, tag);
        }
        let mut run = run
            .string(run::SWEEP_ID, spec.sweep.as_deref().unwrap_or(""))
            .string(run::HOST, spec.host.as_deref().unwrap_or(""))
            .message(run::START_TIME, start_time);
        if let Some((step, runtime)) = self.continues {
            run = run
                .int(run::STARTING_STEP, step as i64)
                .int(run::RESUMED, 1)
                .int(run::RUNTIME, runtime.round() as i64);
        }
        record(Message::default().message(record::RUN, run));

        for line in self.history {
            let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let step = row.get("_step").and_then(Value::as_i64).unwrap_or(0);
            let step = Message::default().int(history::STEP_NUM, step);
            let history = items(ITEMS, &row).message(history::STEP, step);
            record(Message::default().message(record::HISTORY, history));
        }
        for (index, (artifact, role)) in self.artifacts.iter().enumerate() {
            let store = dir
                .join("artifacts")
                .join(format!("{index}-{}", artifact.name));
            let body = artifact_record(spec, artifact, *role, &store)?;
            record(Message::default().message(record::ARTIFACT, body));
        }
        record(Message::default().message(record::SUMMARY, items(ITEMS, self.summary)));

        let mut list = Message::default();
        for (name, content) in self.files {
            keep(content, &files_dir.join(name))?;
            let item = Message::default()
                .string(files::PATH, name)
                .int(files::POLICY, files::POLICY_END);
            list = list.message(files::FILES, item);
        }
        record(Message::default().message(record::FILES, list));

        let exit = Message::default()
            .int(exit::EXIT_CODE, i64::from(self.exit_code))
            .int(exit::RUNTIME, self.runtime_seconds.round() as i64);
        record(Message::default().message(record::EXIT, exit));
        record(Message::default().message(record::FINAL, Message::default()));

        let path = dir.join(format!("run-{}.wandb", spec.run_id));
        let write = |path: &Path, bytes: &[u8]| {
            crate::files::output::write_file(path, bytes)
                .map_err(|err| std::io::Error::other(format!("{err:#}")))
        };
        write(&path, &log.finish())?;
        // Beside the log, in plain JSON: what a later part of the run takes over.
        let rows: String = self.history.iter().map(|row| format!("{row}\n")).collect();
        write(&dir.join(HISTORY), rows.as_bytes())?;
        write(
            &dir.join(SUMMARY),
            Value::Object(self.summary.clone()).to_string().as_bytes(),
        )?;
        Ok(dir)
    }
}

/// What an earlier offline part of a run holds, for the part that continues it to take over.
pub struct EarlierPart {
    pub dir: PathBuf,
    pub history: Vec<String>,
    pub summary: Map<String, Value>,
}

impl EarlierPart {
    /// Its last history row; an empty one when it has none.
    pub fn last_row(&self) -> Map<String, Value> {
        let last = self.history.last().map(|row| serde_json::from_str(row));
        match last {
            Some(Ok(Value::Object(row))) => row,
            _ => Map::new(),
        }
    }
}

/// The latest offline part of run `run_id` under `root`, if one was written.
pub fn earlier_part(root: &Path, run_id: &str) -> Option<EarlierPart> {
    let suffix = format!("-{run_id}");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("wandb"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| {
            dir.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("offline-run-") && name.ends_with(&suffix))
        })
        .collect();
    dirs.sort();
    let dir = dirs.pop()?;
    let history = std::fs::read_to_string(dir.join(HISTORY)).ok()?;
    let summary = std::fs::read_to_string(dir.join(SUMMARY)).ok()?;
    let Ok(Value::Object(summary)) = serde_json::from_str(&summary) else {
        return None;
    };
    Some(EarlierPart {
        history: history.lines().map(String::from).collect(),
        summary,
        dir,
    })
}

/// The rows and summary of an offline run, beside its log.
const HISTORY: &str = "history.jsonl";
const SUMMARY: &str = "summary.json";

/// Writes a file's content at `to`, making its directory; references have no bytes to keep.
fn keep(content: &Content, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match content {
        Content::File(path) => std::fs::copy(path, to).map(|_| ()),
        Content::Bytes(bytes) => std::fs::write(to, bytes),
        Content::Reference(_) => Ok(()),
    }
}

/// An `ArtifactRecord` whose entries' bytes are kept under `store`, where the manifest's
/// `local_path` points.
fn artifact_record(
    spec: &RunSpec,
    artifact: &Artifact,
    role: Role,
    store: &Path,
) -> std::io::Result<Message> {
    let policy = Message::default()
        .string(manifest::CONFIG_KEY, "storageLayout")
        .string(
            manifest::CONFIG_VALUE_JSON,
            &Value::from(STORAGE_LAYOUT).to_string(),
        );
    let mut contents = Message::default()
        .int(manifest::VERSION, 1)
        .string(manifest::STORAGE_POLICY, STORAGE_POLICY)
        .message(manifest::STORAGE_POLICY_CONFIG, policy);
    for (name, entry) in &artifact.entries {
        let mut item = Message::default()
            .string(manifest::ENTRY_PATH, name)
            .string(manifest::ENTRY_DIGEST, &entry.digest)
            .int(manifest::ENTRY_SIZE, entry.size as i64);
        if let Content::Reference(uri) = &entry.content {
            item = item.string(manifest::ENTRY_REF, uri);
        } else {
            let local = store.join(name);
            keep(&entry.content, &local)?;
            let local = std::path::absolute(&local)?;
            item = item.string(manifest::ENTRY_LOCAL_PATH, &local.to_string_lossy());
        }
        contents = contents.message(manifest::CONTENTS, item);
    }
    let mut body = Message::default()
        .string(artifact::RUN_ID, &spec.run_id)
        .string(artifact::PROJECT, &spec.project)
        .string(artifact::ENTITY, spec.entity.as_deref().unwrap_or(""))
        .string(artifact::TYPE, &artifact.kind)
        .string(artifact::NAME, &artifact.name)
        .string(artifact::DIGEST, &artifact.digest())
        .string(
            artifact::METADATA,
            &artifact.metadata_json().unwrap_or_default(),
        )
        .int(artifact::USE_AFTER_COMMIT, i64::from(role == Role::Input));
    for alias in &artifact.aliases {
        body = body.string(artifact::ALIASES, alias);
    }
    Ok(body
        .message(artifact::MANIFEST, contents)
        .int(artifact::FINALIZE, 1)
        .string(artifact::CLIENT_ID, &artifact.client_id)
        .string(artifact::SEQUENCE_CLIENT_ID, &artifact.sequence_client_id)
        .string(artifact::DIGEST_ALGORITHM, "MANIFEST_MD5"))
}

/// LevelDB's log format with W&B's header.
struct LogWriter {
    out: Vec<u8>,
    block_offset: usize,
}

impl LogWriter {
    fn new() -> Self {
        let mut out = b":W&B".to_vec();
        out.extend_from_slice(&0xBEE1u16.to_le_bytes());
        out.push(0); // version
        Self {
            block_offset: out.len(),
            out,
        }
    }

    fn record(&mut self, mut data: &[u8]) {
        let mut first = true;
        loop {
            let left_in_block = BLOCK - self.block_offset;
            if left_in_block < CHUNK_HEADER {
                self.out.extend(std::iter::repeat_n(0, left_in_block));
                self.block_offset = 0;
            }
            let room = BLOCK - self.block_offset - CHUNK_HEADER;
            let (chunk, rest) = data.split_at(data.len().min(room));
            let last = rest.is_empty();
            let kind: u8 = match (first, last) {
                (true, true) => 1,   // FULL
                (true, false) => 2,  // FIRST
                (false, false) => 3, // MIDDLE
                (false, true) => 4,  // LAST
            };
            let mut crc = crc32fast::Hasher::new();
            crc.update(&[kind]);
            crc.update(chunk);
            self.out.extend_from_slice(&crc.finalize().to_le_bytes());
            self.out
                .extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            self.out.push(kind);
            self.out.extend_from_slice(chunk);
            self.block_offset += CHUNK_HEADER + chunk.len();
            data = rest;
            first = false;
            if last {
                return;
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// `20261125_161605`, UTC, as W&B names run directories.
fn stamp(time: SystemTime) -> String {
    let iso = clock::utc_timestamp_of(time);
    format!(
        "{}{}{}_{}{}{}",
        &iso[0..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..13],
        &iso[14..16],
        &iso[17..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields() {
        let m = Message::default().int(1, 300).string(2, "hi");
        assert_eq!(m.0, [0x08, 0xac, 0x02, 0x12, 2, b'h', b'i']);
    }

    #[test]
    fn records_span_blocks_in_fragments() {
        let mut log = LogWriter::new();
        log.record(&vec![7; BLOCK]);
        let out = log.finish();
        assert_eq!(&out[..7], b":W&B\xe1\xbe\x00");
        // FIRST fills the first block; LAST holds the rest.
        assert_eq!(out[7 + 6], 2);
        let first_len = BLOCK - 7 - CHUNK_HEADER;
        assert_eq!(u16::from_le_bytes([out[11], out[12]]) as usize, first_len);
        assert_eq!(out[BLOCK + 6], 4);
        assert_eq!(out.len(), BLOCK + CHUNK_HEADER + (BLOCK - first_len));
    }

    /// Every field number above against the descriptors of the installed wandb SDK (the one
    /// `wandb sync` reads our files with): `message.field` -> number.
    #[test]
    fn field_numbers_match_the_sdk() {
        let ours: &[(&str, i64)] = &[
            ("Record.num", record::NUM.into()),
            ("Record.history", record::HISTORY.into()),
            ("Record.summary", record::SUMMARY.into()),
            ("Record.files", record::FILES.into()),
            ("Record.run", record::RUN.into()),
            ("Record.exit", record::EXIT.into()),
            ("Record.final", record::FINAL.into()),
            ("Record.header", record::HEADER.into()),
            ("HeaderRecord.version_info", header::VERSION_INFO.into()),
            ("VersionInfo.producer", header::PRODUCER.into()),
            ("RunRecord.run_id", run::RUN_ID.into()),
            ("RunRecord.entity", run::ENTITY.into()),
            ("RunRecord.project", run::PROJECT.into()),
            ("RunRecord.config", run::CONFIG.into()),
            ("RunRecord.run_group", run::RUN_GROUP.into()),
            ("RunRecord.job_type", run::JOB_TYPE.into()),
            ("RunRecord.display_name", run::DISPLAY_NAME.into()),
            ("RunRecord.notes", run::NOTES.into()),
            ("RunRecord.tags", run::TAGS.into()),
            ("RunRecord.sweep_id", run::SWEEP_ID.into()),
            ("RunRecord.host", run::HOST.into()),
            ("RunRecord.start_time", run::START_TIME.into()),
            ("RunRecord.starting_step", run::STARTING_STEP.into()),
            ("RunRecord.resumed", run::RESUMED.into()),
            ("RunRecord.runtime", run::RUNTIME.into()),
            ("Timestamp.seconds", timestamp::SECONDS.into()),
            ("Timestamp.nanos", timestamp::NANOS.into()),
            ("ConfigRecord.update", ITEMS.into()),
            ("SummaryRecord.update", ITEMS.into()),
            ("HistoryRecord.item", ITEMS.into()),
            ("ConfigItem.key", item::KEY.into()),
            ("ConfigItem.value_json", item::VALUE_JSON.into()),
            ("HistoryItem.key", item::KEY.into()),
            ("HistoryItem.value_json", item::VALUE_JSON.into()),
            ("SummaryItem.key", item::KEY.into()),
            ("SummaryItem.value_json", item::VALUE_JSON.into()),
            ("HistoryRecord.step", history::STEP.into()),
            ("HistoryStep.num", history::STEP_NUM.into()),
            ("FilesRecord.files", files::FILES.into()),
            ("FilesItem.path", files::PATH.into()),
            ("FilesItem.policy", files::POLICY.into()),
            ("FilesItem.PolicyType.END", files::POLICY_END),
            ("Record.artifact", record::ARTIFACT.into()),
            ("ArtifactRecord.run_id", artifact::RUN_ID.into()),
            ("ArtifactRecord.project", artifact::PROJECT.into()),
            ("ArtifactRecord.entity", artifact::ENTITY.into()),
            ("ArtifactRecord.type", artifact::TYPE.into()),
            ("ArtifactRecord.name", artifact::NAME.into()),
            ("ArtifactRecord.digest", artifact::DIGEST.into()),
            ("ArtifactRecord.metadata", artifact::METADATA.into()),
            (
                "ArtifactRecord.use_after_commit",
                artifact::USE_AFTER_COMMIT.into(),
            ),
            ("ArtifactRecord.aliases", artifact::ALIASES.into()),
            ("ArtifactRecord.manifest", artifact::MANIFEST.into()),
            ("ArtifactRecord.finalize", artifact::FINALIZE.into()),
            ("ArtifactRecord.client_id", artifact::CLIENT_ID.into()),
            (
                "ArtifactRecord.sequence_client_id",
                artifact::SEQUENCE_CLIENT_ID.into(),
            ),
            (
                "ArtifactRecord.digest_algorithm",
                artifact::DIGEST_ALGORITHM.into(),
            ),
            ("ArtifactManifest.version", manifest::VERSION.into()),
            (
                "ArtifactManifest.storage_policy",
                manifest::STORAGE_POLICY.into(),
            ),
            (
                "ArtifactManifest.storage_policy_config",
                manifest::STORAGE_POLICY_CONFIG.into(),
            ),
            ("ArtifactManifest.contents", manifest::CONTENTS.into()),
            ("StoragePolicyConfigItem.key", manifest::CONFIG_KEY.into()),
            (
                "StoragePolicyConfigItem.value_json",
                manifest::CONFIG_VALUE_JSON.into(),
            ),
            ("ArtifactManifestEntry.path", manifest::ENTRY_PATH.into()),
            (
                "ArtifactManifestEntry.digest",
                manifest::ENTRY_DIGEST.into(),
            ),
            ("ArtifactManifestEntry.ref", manifest::ENTRY_REF.into()),
            ("ArtifactManifestEntry.size", manifest::ENTRY_SIZE.into()),
            (
                "ArtifactManifestEntry.local_path",
                manifest::ENTRY_LOCAL_PATH.into(),
            ),
            ("RunExitRecord.exit_code", exit::EXIT_CODE.into()),
            ("RunExitRecord.runtime", exit::RUNTIME.into()),
        ];
        let script = r#"
import json, wandb
from wandb.proto import wandb_internal_pb2 as p
from google.protobuf import timestamp_pb2
numbers = {}
for message in list(p.DESCRIPTOR.message_types_by_name.values()) + [timestamp_pb2.Timestamp.DESCRIPTOR]:
    for field in message.fields:
        numbers[f"{message.name}.{field.name}"] = field.number
numbers["FilesItem.PolicyType.END"] = p.FilesItem.PolicyType.Value("END")
print(json.dumps({"version": wandb.__version__, "numbers": numbers}))
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .output()
            .expect("python3 runs (make setup installs wandb)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sdk: Value = serde_json::from_slice(&out.stdout).unwrap();
        let wrong: Vec<String> = ours
            .iter()
            .filter(|(name, number)| sdk["numbers"][name].as_i64() != Some(*number))
            .map(|(name, number)| format!("{name}: ours {number}, SDK {}", sdk["numbers"][name]))
            .collect();
        assert!(wrong.is_empty(), "wandb {}: {wrong:#?}", sdk["version"]);
    }
}
