//! A fake W&B server on loopback that answers as the real one does (shapes from the official
//! SDK's recorded traffic), records what it receives by operation and file offset, and injects
//! faults into `file_stream` on request.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this HTTP status.
    Status(u16),
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// Close the connection without answering, the request unprocessed.
    Drop,
    /// Answer normally, but only after this many milliseconds.
    Slow(u64),
}

#[derive(Debug, Default)]
pub struct State {
    /// (method, path, operation name) of every request, in order.
    pub requests: Vec<(String, String, Option<String>)>,
    pub authorizations: Vec<String>,
    pub faults: VecDeque<Fault>,
    /// Lines of each streamed file by offset; a line sent twice to one offset must not differ.
    pub files: BTreeMap<String, BTreeMap<usize, String>>,
    /// Offsets that arrived past the end of what the file held: lost lines.
    pub gaps: Vec<(String, usize)>,
    /// Offsets sent twice with different lines.
    pub conflicts: Vec<(String, usize)>,
    pub upserts: Vec<Value>,
    /// `UpsertSweep` requests, whole (query and variables).
    pub sweeps: Vec<Value>,
    pub complete: Option<(bool, i64)>,
    /// The exit code of every `complete` request, in order: one per part of a resumed run.
    pub completions: Vec<i64>,
    pub uploaded: Vec<String>,
    pub puts: BTreeMap<String, Vec<u8>>,
    /// The `Content-MD5` header of each PUT that had one.
    pub put_md5s: BTreeMap<String, String>,
    /// Bodies of every request, to check what was (not) sent.
    pub raw: Vec<u8>,
    /// Answer `file_stream` with `{"stopped": true}`, as when the run is stopped in the web UI.
    pub stop: bool,
    /// Artifact versions, in the order created.
    pub artifacts: Vec<FakeArtifact>,
    /// (run, artifact id) of every `UseArtifact`.
    pub uses: Vec<(String, String)>,
    /// Every GraphQL request about artifacts, whole, in order.
    pub artifact_requests: Vec<Value>,
    /// Every path downloaded (GET), in order.
    pub downloads: Vec<String>,
    /// Serve artifact files with their last byte changed, as a broken store or transfer would.
    pub corrupt_downloads: bool,
}

/// An artifact version as the server keeps it.
#[derive(Debug, Clone)]
pub struct FakeArtifact {
    pub id: String,
    /// `CreateArtifact`'s input.
    pub input: Value,
    pub version: usize,
    pub aliases: Vec<String>,
    /// The aliases `CreateArtifact` asked for, which W&B gives a version when it is committed.
    requested: Vec<String>,
    pub committed: bool,
}

impl FakeArtifact {
    pub fn collection(&self) -> &str {
        self.input["artifactCollectionName"].as_str().unwrap_or("")
    }

    pub fn metadata(&self) -> Value {
        self.input["metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or(Value::Null)
    }

    /// The artifact as the SDK's `ArtifactFragment` reads it.
    fn node(&self) -> Value {
        let input = &self.input;
        let project = json!({"id": "UHJvamVjdA==", "internalId": "1", "name": input["projectName"],
                             "entity": {"name": input["entityName"]}});
        let collection = json!({"__typename": "ArtifactSequence", "name": self.collection(), "project": project});
        let aliases: Vec<Value> = self
            .aliases
            .iter()
            .map(|alias| json!({"__typename": "ArtifactAlias", "id": "QWxpYXM=", "alias": alias, "artifactCollection": collection}))
            .collect();
        json!({
            "__typename": "Artifact", "id": self.id, "artifactSequence": collection,
            "versionIndex": self.version, "artifactType": {"name": input["artifactTypeName"]},
            "description": null, "metadata": input["metadata"].as_str().unwrap_or("{}"),
            "ttlDurationSeconds": -1, "ttlIsInherited": true, "tags": [],
            "historyStep": input["historyStep"], "state": if self.committed { "COMMITTED" } else { "PENDING" },
            "size": 1, "digest": input["digest"], "commitHash": "0123456789ab", "fileCount": 1,
            "createdAt": "2026-11-26T00:00:00", "updatedAt": null, "aliases": aliases,
        })
    }
}

impl State {
    /// The version called `name`: `collection:alias` or `collection:vN`. As in W&B, only a
    /// committed version has a name: one still uploading has neither files nor aliases.
    pub fn artifact(&self, name: &str) -> Option<&FakeArtifact> {
        let (collection, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        self.artifacts.iter().find(|a| {
            a.committed
                && a.collection() == collection
                && (a.aliases.iter().any(|alias| alias == tag) || format!("v{}", a.version) == tag)
        })
    }

    /// `CreateArtifact` with this input: a new version, pending until committed, or the
    /// committed one of the same digest, which takes the aliases now. Its index.
    pub fn create_artifact(&mut self, input: Value) -> usize {
        let collection = input["artifactCollectionName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let aliases: Vec<String> = input["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["alias"].as_str().map(String::from))
            .collect();
        let same = self.artifacts.iter().position(|a| {
            a.committed && a.collection() == collection && a.input["digest"] == input["digest"]
        });
        let index = same.unwrap_or_else(|| {
            let version = (self.artifacts.iter())
                .filter(|a| a.collection() == collection)
                .count();
            let id = base64_text(&format!("Artifact:{}", self.artifacts.len() + 1));
            self.artifacts.push(FakeArtifact {
                id,
                input,
                version,
                aliases: Vec::new(),
                requested: Vec::new(),
                committed: false,
            });
            self.artifacts.len() - 1
        });
        self.artifacts[index].requested = aliases;
        if self.artifacts[index].committed {
            self.claim_aliases(index);
        }
        index
    }

    /// Gives the artifact at `index` its requested aliases. An alias names one version of a
    /// collection: claiming it moves it.
    fn claim_aliases(&mut self, index: usize) {
        let aliases = std::mem::take(&mut self.artifacts[index].requested);
        let collection = self.artifacts[index].collection().to_owned();
        for artifact in self.artifacts.iter_mut() {
            if artifact.collection() == collection {
                artifact.aliases.retain(|alias| !aliases.contains(alias));
            }
        }
        self.artifacts[index].aliases.extend(aliases);
    }

    fn artifact_by_id(&self, id: &str) -> Option<&FakeArtifact> {
        self.artifacts.iter().find(|a| a.id == id)
    }
}

pub struct FakeWandb {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeWandb {
    pub fn start(faults: &[Fault]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            faults: faults.iter().copied().collect(),
            ..State::default()
        }));
        let (shared, base) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(10_000) {
                let Ok(stream) = stream else { continue };
                let (state, base) = (shared.clone(), base.clone());
                std::thread::spawn(move || serve(stream, &state, &base));
            }
        });
        Self { url, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The streamed lines of `file`, in offset order.
    pub fn lines(&self, file: &str) -> Vec<Value> {
        self.state()
            .files
            .get(file)
            .map(|lines| {
                lines
                    .values()
                    .map(|l| serde_json::from_str(l).unwrap_or(json!(l)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A panicking test thread must not wedge the server for the client.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn serve(stream: TcpStream, state: &Mutex<State>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0;
        let (mut chunked, mut gzipped) = (false, false);
        let mut authorization = String::new();
        let mut content_md5 = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_string(),
                "content-md5" => content_md5 = value.trim().to_string(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-encoding" => gzipped = value.to_ascii_lowercase().contains("gzip"),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if chunked {
            body = match read_chunked(&mut reader) {
                Some(body) => body,
                None => return,
            };
        }
        if gzipped {
            let mut plain = Vec::new();
            if flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .is_err()
            {
                return;
            }
            body = plain;
        }
        let request = Request {
            method: &method,
            path: &path,
            authorization: &authorization,
            content_md5: &content_md5,
            body: &body,
        };
        let (status, extra, answer, kind) = match method.as_str() {
            "GET" => {
                let (status, bytes) = download(&mut lock(state), &path);
                (status, String::new(), bytes, "application/octet-stream")
            }
            _ => {
                let (status, extra, answer) = respond(state, base, &request);
                (
                    status,
                    extra,
                    answer.to_string().into_bytes(),
                    "application/json",
                )
            }
        };
        if status == 0 {
            return; // a dropped connection
        }
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{extra}\r\n",
            answer.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&answer).is_err() {
            return;
        }
    }
}

/// A GET: an uploaded manifest at the URL `FetchArtifactManifest` gave, or an artifact file at
/// `artifactsV2/<region>/<entity>/<project>/<collection>/<birth artifact>/<md5 hex>/<name>`,
/// as the SDK's storage policy downloads it.
fn download(state: &mut State, path: &str) -> (u16, Vec<u8>) {
    state.downloads.push(path.to_owned());
    if path.starts_with("/storage/manifest/") {
        return state
            .puts
            .get(path)
            .map_or((404, Vec::new()), |bytes| (200, bytes.clone()));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [
        "artifactsV2",
        _region,
        _entity,
        _project,
        _collection,
        birth,
        hex,
        name,
    ] = parts[..]
    else {
        return (404, Vec::new());
    };
    let birth = birth.replace("%3D", "=");
    let Some(bytes) = state.puts.get(&format!("/storage/artifact/{birth}/{name}")) else {
        return (404, Vec::new());
    };
    let digest = Md5::digest(bytes);
    if digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        != hex
    {
        return (404, Vec::new());
    }
    let mut bytes = bytes.clone();
    if state.corrupt_downloads
        && let Some(last) = bytes.last_mut()
    {
        *last ^= 0xff;
    }
    (200, bytes)
}

/// A chunked body: hex size lines, each followed by that many bytes, until a size of 0.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0; size + 2];
        if size == 0 {
            // The trailer section ends with an empty line.
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            return Some(body);
        }
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
    }
}

/// The operation a GraphQL request runs: its `operationName`, or as a server reads it from the
/// document (the SDK's Python API sends it empty).
pub fn operation_name(request: &Value) -> Option<String> {
    if let Some(name) = request["operationName"].as_str().filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    let document = request["query"].as_str()?;
    let mut words = document
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    words.find(|w| matches!(*w, "query" | "mutation"))?;
    words.next().map(String::from)
}

/// What the server reads of a request.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    authorization: &'a str,
    content_md5: &'a str,
    body: &'a [u8],
}

/// Status (0: drop the connection), extra headers and the JSON answer.
fn respond(state_mutex: &Mutex<State>, base: &str, request: &Request) -> (u16, String, Value) {
    let Request {
        method,
        path,
        authorization,
        content_md5,
        body,
    } = *request;
    if std::env::var_os("FAKE_WANDB_DEBUG").is_some() {
        eprintln!(
            "fake wandb: {method} {path} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    let mut state = lock(state_mutex);
    state.raw.extend_from_slice(body);
    state.raw.push(b'\n');
    if method == "PUT" {
        state.requests.push((method.into(), path.into(), None));
        state.puts.insert(path.into(), body.to_vec());
        if !content_md5.is_empty() {
            state.put_md5s.insert(path.into(), content_md5.into());
        }
        return (200, String::new(), json!({}));
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let operation = operation_name(&request);
    state
        .requests
        .push((method.into(), path.into(), operation.clone()));
    state.authorizations.push(authorization.into());
    if path.ends_with("/file_stream") {
        match state.faults.pop_front() {
            Some(Fault::Status(status)) => {
                return (status, String::new(), json!({"error": "injected"}));
            }
            Some(Fault::TooManyRequests) => {
                return (
                    429,
                    "Retry-After: 1\r\n".into(),
                    json!({"error": "slow down"}),
                );
            }
            Some(Fault::Drop) => return (0, String::new(), Value::Null),
            Some(Fault::Slow(millis)) => {
                drop(state);
                std::thread::sleep(std::time::Duration::from_millis(millis));
                state = lock(state_mutex);
            }
            None => {}
        }
        for (name, file) in request["files"].as_object().cloned().unwrap_or_default() {
            let offset = file["offset"].as_u64().unwrap_or(0) as usize;
            let lines = state.files.entry(name.clone()).or_default();
            if name != "wandb-summary.json" && offset > lines.len() {
                let gap = (name.clone(), offset);
                state.gaps.push(gap);
                continue;
            }
            let mut conflicts = Vec::new();
            let lines = state.files.entry(name.clone()).or_default();
            for (i, line) in file["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let line = line.as_str().unwrap_or_default().to_string();
                if let Some(previous) = lines.insert(offset + i, line.clone()) {
                    // A resent line must say the same, whatever the order of its keys.
                    let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap_or(json!(l));
                    if name != "wandb-summary.json" && parse(&previous) != parse(&line) {
                        conflicts.push((name.clone(), offset + i));
                    }
                }
            }
            state.conflicts.extend(conflicts);
        }
        if request["complete"].as_bool() == Some(true) {
            state.complete = Some((true, request["exitcode"].as_i64().unwrap_or(-1)));
            let code = request["exitcode"].as_i64().unwrap_or(-1);
            state.completions.push(code);
            state.uploaded = request["uploaded"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
        }
        if state.stop {
            return (
                200,
                String::new(),
                json!({"exitcode": null, "limits": {}, "stopped": true}),
            );
        }
        return (200, String::new(), json!({"exitcode": null, "limits": {}}));
    }
    let variables = &request["variables"];
    let data = match operation.as_deref() {
        Some("UpsertBucket") => {
            state.upserts.push(variables.clone());
            json!({"upsertBucket": {"bucket": {
                "id": "UnVuOnYx", "name": variables["name"], "displayName": variables["displayName"],
                "description": null, "config": variables["config"], "sweepName": null,
                "project": {"id": "UHJvamVjdA==", "name": variables["project"],
                            "entity": {"id": "RW50aXR5", "name": variables["entity"].as_str().unwrap_or("default-entity")}},
                "historyLineCount": 0}, "inserted": true}})
        }
        Some("RunResumeStatus") => resume_status(&state, variables),
        Some("UpsertSweep") => {
            state.sweeps.push(request.clone());
            json!({"upsertSweep": {"sweep": {
                "name": format!("swp{:05}", state.sweeps.len()),
                "project": {"id": "UHJvamVjdA==", "name": variables["projectName"].as_str().unwrap_or("uncategorized"),
                            "entity": {"id": "RW50aXR5", "name": variables["entityName"].as_str().unwrap_or("default-entity")}}},
                "configValidationWarnings": []}})
        }
        Some("CreateRunFiles") => {
            let files: Vec<Value> = variables["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|name| json!({"name": name, "uploadUrl": format!("{base}/storage/run/{}", name.as_str().unwrap_or(""))}))
                .collect();
            json!({"createRunFiles": {"runID": "UnVuOnYx", "uploadHeaders": [], "files": files}})
        }
        Some(
            "CreateArtifact"
            | "CreateArtifactManifest"
            | "CreateArtifactFiles"
            | "CommitArtifact"
            | "UseArtifact"
            | "ArtifactType"
            | "ArtifactByName"
            | "ArtifactByID"
            | "ArtifactVersion"
            | "ArtifactFiles",
        ) => {
            state.artifact_requests.push(request.clone());
            artifact_answer(
                &mut state,
                base,
                operation.as_deref().unwrap_or(""),
                variables,
            )
        }
        Some("ServerFeaturesQuery") => json!({"serverInfo": {"features": []}}),
        Some("Viewer") => {
            json!({"viewer": {"id": "VXNlcg==", "entity": "default-entity", "username": "tester", "email": "t@example.com", "flags": "{}", "teams": {"edges": []}}})
        }
        _ => {
            return (
                400,
                String::new(),
                json!({"errors": [{"message": "unknown operation"}]}),
            );
        }
    };
    (200, String::new(), json!({"data": data}))
}

/// `RunResumeStatus`: what the server holds of the run, as W&B answers it (line counts, the
/// history's last rows and the summary as JSON strings), or a null bucket for a run it has not
/// seen.
fn resume_status(state: &State, variables: &Value) -> Value {
    let name = variables["name"].as_str().unwrap_or_default();
    let project = json!({"id": "UHJvamVjdA==", "name": variables["project"],
                         "entity": {"id": "RW50aXR5", "name": variables["entity"].as_str().unwrap_or("default-entity")}});
    let Some(upsert) = state.upserts.iter().rev().find(|u| u["name"] == name) else {
        return json!({"model": {"bucket": null, "id": project["id"], "name": project["name"], "entity": project["entity"]}});
    };
    let lines = |file: &str| state.files.get(file).map_or(0, BTreeMap::len);
    let history: Vec<&String> = state
        .files
        .get("wandb-history.jsonl")
        .map(|lines| lines.values().collect())
        .unwrap_or_default();
    let tail: Vec<&&String> = history.iter().rev().take(10).rev().collect();
    let summary = state
        .files
        .get("wandb-summary.json")
        .and_then(|lines| lines.values().last().cloned())
        .unwrap_or_else(|| "{}".into());
    // `wandbConfig(keys: ["t"])`: the telemetry the SDK keeps in the config's `_wandb`.
    let config: Value = upsert["config"]
        .as_str()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null);
    let telemetry = &config["_wandb"]["value"]["t"];
    let wandb_config = if telemetry.is_null() {
        json!({})
    } else {
        json!({ "t": telemetry })
    };
    json!({"model": {"id": project["id"], "name": project["name"], "entity": project["entity"],
    "bucket": {
        "id": "UnVuOnYx", "name": name, "displayName": upsert["displayName"],
        "summaryMetrics": summary, "config": upsert["config"],
        "historyLineCount": history.len(), "eventsLineCount": lines("wandb-events.jsonl"),
        "logLineCount": lines("output.log"),
        "historyTail": serde_json::to_string(&tail).unwrap_or_default(), "eventsTail": "[]",
        "tags": upsert["tags"], "notes": upsert["notes"], "wandbConfig": wandb_config.to_string(),
    }}})
}

/// The answers to the artifact operations, from the server's artifact store.
fn artifact_answer(state: &mut State, base: &str, operation: &str, variables: &Value) -> Value {
    match operation {
        "CreateArtifact" => {
            let index = state.create_artifact(variables["input"].clone());
            let artifact = &state.artifacts[index];
            let state_name = if artifact.committed {
                "COMMITTED"
            } else {
                "PENDING"
            };
            json!({"createArtifact": {"artifact": {"id": artifact.id, "state": state_name,
                "artifactSequence": {"latestArtifact": null}}}})
        }
        "CreateArtifactManifest" => {
            let id = variables["artifactID"].as_str().unwrap_or("");
            json!({"createArtifactManifest": {"artifactManifest": {"id": "QXJ0aWZhY3RNYW5pZmVzdDox",
                "file": {"id": "RmlsZTox", "uploadUrl": format!("{base}/storage/manifest/{id}"), "uploadHeaders": []}}}})
        }
        "CreateArtifactFiles" => {
            let edges: Vec<Value> = variables["input"]["artifactFiles"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|file| {
                    let (id, name) = (file["artifactID"].as_str().unwrap_or(""), file["name"].as_str().unwrap_or(""));
                    json!({"node": {"storagePath": format!("wandb_artifacts/{id}/{name}"),
                        "uploadUrl": format!("{base}/storage/artifact/{id}/{name}"), "uploadHeaders": [],
                        "uploadMultipartUrls": null, "artifact": {"id": id}}})
                })
                .collect();
            json!({"createArtifactFiles": {"files": {"edges": edges}}})
        }
        "CommitArtifact" => {
            let id = variables["artifactID"].as_str().unwrap_or("");
            let index = state.artifacts.iter().position(|a| a.id == id);
            let digest = index.map(|index| {
                state.artifacts[index].committed = true;
                state.claim_aliases(index);
                state.artifacts[index].input["digest"].clone()
            });
            json!({"commitArtifact": {"artifact": {"id": id, "digest": digest}}})
        }
        "UseArtifact" => {
            // wandb-core sends `input`; the SDK's Python API, the fields themselves.
            let input = variables.get("input").unwrap_or(variables);
            let id = input["artifactID"].as_str().unwrap_or("").to_owned();
            let run = input["runName"].as_str().unwrap_or("").to_owned();
            let node = state.artifact_by_id(&id).map(FakeArtifact::node);
            state.uses.push((run, id));
            json!({"useArtifact": {"artifact": node}})
        }
        "ArtifactType" => {
            let found = state.artifact(variables["name"].as_str().unwrap_or(""));
            let artifact =
                found.map(|a| json!({"artifactType": {"name": a.input["artifactTypeName"]}}));
            json!({"project": {"artifact": artifact}})
        }
        "ArtifactByName" => {
            let found = state.artifact(variables["name"].as_str().unwrap_or(""));
            json!({"project": {"artifact": found.map(FakeArtifact::node)}})
        }
        "ArtifactFiles" => {
            let found = state.artifact(variables["name"].as_str().unwrap_or(""));
            let artifact = found.map(|a| {
                let mut node = a.node();
                node["currentManifest"] =
                    json!({"file": {"directUrl": format!("{base}/storage/manifest/{}", a.id)}});
                node
            });
            let entity = variables["entity"].as_str().unwrap_or("default-entity");
            json!({"project": {"entity": {"name": entity}, "artifact": artifact}})
        }
        _ => {
            let found = state.artifact_by_id(variables["id"].as_str().unwrap_or(""));
            json!({"artifact": found.map(FakeArtifact::node)})
        }
    }
}

fn base64_text(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
