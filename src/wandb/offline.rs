//! Offline runs in W&B's transaction-log format, which `wandb sync` uploads: a 7-byte header
//! (`:W&B`, magic 0xBEE1, version 0), then LevelDB-log blocks of 32 KiB holding records framed
//! with a CRC-32 (IEEE, over the chunk type and data), each record a `wandb_internal.Record`
//! protobuf (wandb/proto/wandb_internal.proto).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::run::RunSpec;

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

/// `ConfigItem`, `HistoryItem` and `SummaryItem` share their layout: key 1, value_json 16.
fn items(field: u32, values: &Map<String, Value>) -> Message {
    values
        .iter()
        .fold(Message::default(), |message, (key, value)| {
            message.message(
                field,
                Message::default()
                    .string(1, key)
                    .string(16, &value.to_string()),
            )
        })
}

/// Record field numbers of `wandb_internal.Record`.
mod record {
    pub const NUM: u32 = 1;
    pub const HISTORY: u32 = 2;
    pub const SUMMARY: u32 = 3;
    pub const CONFIG_IN_RUN: u32 = 4;
    pub const FILES: u32 = 6;
    pub const RUN: u32 = 17;
    pub const EXIT: u32 = 18;
    pub const FINAL: u32 = 20;
    pub const HEADER: u32 = 21;
}

/// Everything a finished run holds, to write as one offline run.
pub struct OfflineRun<'a> {
    pub spec: &'a RunSpec,
    pub history: &'a [String],
    pub summary: &'a Map<String, Value>,
    pub files: &'a [(String, PathBuf)],
    pub exit_code: i32,
    pub runtime_seconds: f64,
    pub started: SystemTime,
}

impl OfflineRun<'_> {
    /// Writes `<root>/wandb/offline-run-<time>-<id>/run-<id>.wandb` and the run's files beside
    /// it; returns the run directory.
    pub fn write(&self, root: &Path) -> std::io::Result<PathBuf> {
        let spec = self.spec;
        let dir = root.join("wandb").join(format!(
            "offline-run-{}-{}",
            stamp(self.started),
            spec.run_id
        ));
        let files_dir = dir.join("files");
        std::fs::create_dir_all(&files_dir)?;

        let mut log = LogWriter::new();
        let mut num = 0;
        let mut record = |body: Message| {
            num += 1;
            log.record(&body.int(record::NUM, num).0);
        };
        let version = Message::default().string(1, concat!("mnist ", env!("CARGO_PKG_VERSION")));
        record(Message::default().message(record::HEADER, Message::default().message(1, version)));

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
        let mut run = Message::default()
            .string(1, &spec.run_id)
            .string(2, spec.entity.as_deref().unwrap_or(""))
            .string(3, &spec.project)
            .message(record::CONFIG_IN_RUN, items(1, &config))
            .string(6, spec.group.as_deref().unwrap_or(""))
            .string(7, &spec.job_type)
            .string(8, spec.display_name.as_deref().unwrap_or(""))
            .string(9, spec.notes.as_deref().unwrap_or(""));
        for tag in &spec.tags {
            run = run.string(10, tag);
        }
        let timestamp = Message::default()
            .int(1, started.as_secs() as i64)
            .int(2, i64::from(started.subsec_nanos()));
        let run = run
            .string(13, spec.host.as_deref().unwrap_or(""))
            .message(17, timestamp);
        record(Message::default().message(record::RUN, run));

        for line in self.history {
            let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let step = row.get("_step").and_then(Value::as_i64).unwrap_or(0);
            let history = items(1, &row).message(2, Message::default().int(1, step));
            record(Message::default().message(record::HISTORY, history));
        }
        record(Message::default().message(record::SUMMARY, items(1, self.summary)));

        let mut files = Message::default();
        for (name, path) in self.files {
            std::fs::copy(path, files_dir.join(name))?;
            // Policy END: upload once the run is over.
            files = files.message(1, Message::default().string(1, name).int(2, 1));
        }
        record(Message::default().message(record::FILES, files));

        let exit = Message::default()
            .int(1, i64::from(self.exit_code))
            .int(2, self.runtime_seconds.round() as i64);
        record(Message::default().message(record::EXIT, exit));
        record(Message::default().message(record::FINAL, Message::default()));

        let path = dir.join(format!("run-{}.wandb", spec.run_id));
        crate::output::write_file(&path, &log.finish())
            .map_err(|err| std::io::Error::other(format!("{err:#}")))?;
        Ok(dir)
    }
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
    let iso = super::run::utc_timestamp_of(time);
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
}
