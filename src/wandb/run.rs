//! A W&B run beside training. A background thread owns the network: training hands it history
//! rows and console lines through a bounded queue and never waits for it, except for the bounded
//! final flush. The thread creates the run, streams `wandb-history.jsonl` and `output.log`
//! through `file_stream` every few seconds (a heartbeat when idle), and at the end uploads the
//! files and sends the summary, the list of uploaded files, `complete` and the exit code.
//! Artifacts go out in the order the run logs them, between the rows they were logged after.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::artifact::{Artifact, Content, Role, RunFile};
use super::artifact_upload::{self, RunNames, Version};
use super::client::{ApiError, Client};
use super::clock::{unix_seconds, utc_timestamp};
use super::connection::app_url;
use super::offline::{self, OfflineRun};
use super::resume::Resumed;
use super::spec::{RunIdentity, RunSpec};
use super::system::SystemSampler;
use super::table::Table;

/// How often pending lines go out, how long silence may last before a heartbeat, and how
/// often system metrics are sampled.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How long one request may keep retrying while training runs; creating the run gives up
/// sooner, so that a server down from the start costs training nothing.
const RETRY_FOR: Duration = Duration::from_secs(120);
const CREATE_FOR: Duration = Duration::from_secs(30);

const HISTORY: &str = "wandb-history.jsonl";
const SUMMARY: &str = "wandb-summary.json";
const OUTPUT: &str = "output.log";
const EVENTS: &str = "wandb-events.jsonl";

const UPSERT_BUCKET: &str = "mutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String, $groupName: String, $description: String, $displayName: String, $notes: String, $commit: String, $config: JSONString, $host: String, $debug: Boolean, $program: String, $repo: String, $jobType: String, $state: String, $sweep: String, $tags: [String!], $summaryMetrics: JSONString) {
	upsertBucket(input: {id:$id,name:$name,groupName:$groupName,modelName:$project,entityName:$entity,description:$description,displayName:$displayName,notes:$notes,config:$config,commit:$commit,host:$host,debug:$debug,jobProgram:$program,jobRepo:$repo,jobType:$jobType,state:$state,sweep:$sweep,tags:$tags,summaryMetrics:$summaryMetrics}) {
		bucket {
			id
			name
			displayName
			description
			config
			sweepName
			project {
				id
				name
				entity {
					id
					name
				}
			}
			historyLineCount
		}
		inserted
	}
}";

const CREATE_RUN_FILES: &str = "mutation CreateRunFiles ($entity: String!, $project: String!, $run: String!, $files: [String!]!) {
	createRunFiles(input: {entityName:$entity,projectName:$project,runName:$run,files:$files}) {
		runID
		uploadHeaders
		files {
			name
			uploadUrl
		}
	}
}";

enum Message {
    History(String),
    Console(String),
    Artifact {
        artifact: Box<Artifact>,
        role: Role,
        step: u64,
    },
    /// Use the version called this (`collection:vN`) in the run's project.
    Use(String),
    Finish {
        exit_code: i32,
        summary: Map<String, Value>,
        files: Vec<RunFile>,
        deadline: Instant,
    },
}

/// What the run delivered, for the last log line.
#[derive(Debug, Default)]
pub struct Report {
    pub url: Option<String>,
    pub rows_sent: usize,
    pub rows_unsent: usize,
    pub files_uploaded: usize,
    /// Whether the end of the run was delivered before the deadline.
    pub completed: bool,
    /// The offline run holding what was not delivered (or everything, offline).
    pub offline: Option<PathBuf>,
    /// The artifact versions the run logged or used, as the server numbered them.
    pub artifacts: Vec<Version>,
}

pub struct WandbRun {
    sender: SyncSender<Message>,
    /// Set when the server answers `{"stopped": true}`: someone stopped the run in W&B.
    stopped: Arc<AtomicBool>,
    /// The run's page, once the server has created it.
    url: Arc<OnceLock<String>>,
    /// Messages the full queue could not take yet; training never blocks on it.
    backlog: VecDeque<Message>,
    /// Where the thread's report arrives when it is done.
    report: Receiver<Report>,
    started: Instant,
    /// Seconds the run had run before this process: `_runtime` goes on from there.
    runtime_before: f64,
    next_step: u64,
    run_id: String,
    /// The last history row that the run's destination (the server, or the offline part this
    /// one continues) holds: an empty row when it holds none, `None` when it could not be asked.
    held: Option<Map<String, Value>>,
    /// Files made for W&B (logged tables), uploaded with the run's files.
    media: Vec<RunFile>,
    /// Whether the run has a server to log to.
    online: bool,
    /// The latest checkpoint not logged yet, at its step.
    checkpoint: CheckpointSlot,
}

/// The latest checkpoint for the W&B thread to log when it gets to it: a newer one replaces
/// one it has not got to, so that training never waits on the uploads and W&B gets the newest.
type CheckpointSlot = Arc<Mutex<Option<(Artifact, u64)>>>;

impl WandbRun {
    /// Starts the run: online through `client`, or, without one, offline under `offline_root`
    /// (which also keeps what an online run could not deliver). A run that continues another
    /// goes on from what the server holds of it (`resumed`), else from its checkpoint's figures.
    pub fn start(
        client: Option<Client>,
        spec: RunSpec,
        offline_root: PathBuf,
        resumed: Option<Resumed>,
    ) -> Self {
        let (sender, receiver) = sync_channel(1024);
        let (report_sender, report) = sync_channel(1);
        let started = Instant::now();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let url = Arc::new(OnceLock::new());
        let created = url.clone();
        let run_id = spec.run_id.clone();
        let online = client.is_some();
        let checkpoint = CheckpointSlot::default();
        let slot = checkpoint.clone();
        let (next_step, runtime_before, held) = match (&resumed, &spec.continues) {
            (Some(resumed), _) => (
                resumed.starting_step,
                resumed.runtime,
                Some(resumed.last_row.clone()),
            ),
            (None, Some(continues)) => {
                // Offline, the earlier part is what `wandb sync` will hold of the run; online,
                // the server could not be asked, and the checkpoint's count of rows stands.
                let earlier = (client.is_none())
                    .then(|| offline::earlier_part(&offline_root, &spec.run_id))
                    .flatten();
                match earlier {
                    Some(earlier) => (
                        earlier.history.len() as u64,
                        continues.runtime,
                        Some(earlier.last_row()),
                    ),
                    None => (continues.rows, continues.runtime, None),
                }
            }
            (None, None) => (0, 0.0, Some(Map::new())),
        };
        // Detached: if the server holds the end of the run past its deadline, the process
        // ends without it.
        std::thread::Builder::new()
            .name("wandb".into())
            .spawn(move || {
                let worker = Worker::new(
                    client,
                    spec,
                    resumed,
                    (flag, created, slot),
                    started,
                    offline_root,
                );
                let _ = report_sender.send(worker.run(receiver));
            })
            .expect("spawning the W&B thread");
        Self {
            sender,
            stopped,
            url,
            backlog: VecDeque::new(),
            report,
            started,
            runtime_before,
            next_step,
            run_id,
            held,
            media: Vec::new(),
            online,
            checkpoint,
        }
    }

    /// What a checkpoint keeps to continue this run: its id, rows and runtime so far.
    pub fn identity(&self) -> RunIdentity {
        RunIdentity {
            id: self.run_id.clone(),
            rows: self.next_step,
            runtime: self.runtime(),
        }
    }

    /// The last history row the run's destination holds (an empty one when it holds none),
    /// unless it could not be asked: where a resumed training left off in W&B.
    pub fn last_held(&self) -> Option<&Map<String, Value>> {
        self.held.as_ref()
    }

    fn runtime(&self) -> f64 {
        self.runtime_before + self.started.elapsed().as_secs_f64()
    }

    /// The run's page in W&B, if the server has created the run by now.
    pub fn url(&self) -> Option<String> {
        self.url.get().cloned()
    }

    /// Whether the run was stopped from W&B.
    pub fn stop_requested(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Adds a history row; `_step`, `_runtime` and `_timestamp` are filled in.
    pub fn log(&mut self, mut row: Map<String, Value>) {
        row.insert("_step".into(), json!(self.next_step));
        row.insert("_runtime".into(), json!(self.runtime()));
        row.insert("_timestamp".into(), json!(unix_seconds()));
        self.next_step += 1;
        self.send(Message::History(Value::Object(row).to_string()));
    }

    /// Logs an artifact the run made (at the current step) or read.
    pub fn log_artifact(&mut self, artifact: Artifact, role: Role) {
        let step = self.next_step;
        self.send(Message::Artifact {
            artifact: Box::new(artifact),
            role,
            step,
        });
    }

    /// Whether the run has a server to log to.
    pub fn online(&self) -> bool {
        self.online
    }

    /// Logs `artifact`, a checkpoint, at the current step when the run is online (an offline
    /// run cannot be resumed from W&B); a newer checkpoint replaces it if it has not gone yet.
    pub fn log_checkpoint(&mut self, artifact: Artifact) {
        if self.online {
            let mut slot = self
                .checkpoint
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *slot = Some((artifact, self.next_step));
        }
    }

    /// Marks the run as a user of the version called `name` (`collection:vN`).
    pub fn use_artifact(&mut self, name: &str) {
        self.send(Message::Use(name.to_owned()));
    }

    /// Adds a history row holding `row` and each table under its key; returns the row, tables
    /// as W&B refers to them, for the summary.
    pub fn log_tables(
        &mut self,
        mut row: Map<String, Value>,
        tables: Vec<(&str, Table)>,
    ) -> Map<String, Value> {
        for (key, table) in tables {
            let logged = table.log(key, &self.run_id, self.next_step);
            row.insert(key.to_owned(), logged.value);
            self.log_artifact(logged.artifact, Role::Output);
            let (name, bytes) = logged.run_file;
            self.media.push((name, Content::Bytes(bytes)));
        }
        self.log(row.clone());
        row
    }

    /// Adds a line of the console log (marked as stderr, where this tool writes its log).
    pub fn console(&mut self, line: &str) {
        self.send(Message::Console(format!(
            "ERROR {} {line}",
            utc_timestamp()
        )));
    }

    fn send(&mut self, message: Message) {
        self.backlog.push_back(message);
        while let Some(message) = self.backlog.pop_front() {
            match self.sender.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    self.backlog.push_front(message);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Ends the run: the summary, the files (W&B name, path) and the exit code go out, waiting
    /// at most `wait`.
    pub fn finish(
        mut self,
        exit_code: i32,
        mut summary: Map<String, Value>,
        mut files: Vec<RunFile>,
        wait: Duration,
    ) -> Report {
        files.append(&mut self.media);
        let runtime = self.runtime();
        summary.insert("_runtime".into(), json!(runtime));
        summary.insert("_timestamp".into(), json!(unix_seconds()));
        summary.insert("_step".into(), json!(self.next_step.saturating_sub(1)));
        summary.insert("_wandb".into(), json!({"runtime": runtime.round() as u64}));
        let deadline = Instant::now() + wait;
        let finish = Message::Finish {
            exit_code,
            summary,
            files,
            deadline,
        };
        for message in self.backlog.drain(..).chain(std::iter::once(finish)) {
            if self.sender.send(message).is_err() {
                break;
            }
        }
        drop(self.sender);
        self.report
            .recv_timeout(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            )
            .unwrap_or_default()
    }
}

/// The thread's side: the created run's names and what is still to send.
struct Worker {
    /// `None` for an offline run.
    client: Option<Client>,
    spec: RunSpec,
    /// What the server holds of the run this one continues: its summary and config are kept.
    resumed: Option<Resumed>,
    offline_root: PathBuf,
    started_at: SystemTime,
    /// Every history row, for an offline run if the server does not take them all.
    history: Vec<String>,
    /// (entity, project, run) as the server named them.
    names: Option<(String, String, String)>,
    offsets: BTreeMap<&'static str, usize>,
    pending: BTreeMap<&'static str, Vec<String>>,
    report: Report,
    last_sent: Instant,
    stopped: Arc<AtomicBool>,
    created: Arc<OnceLock<String>>,
    system: SystemSampler,
    last_sample: Option<Instant>,
    /// Every artifact logged, for an offline run.
    artifacts: Vec<(Artifact, Role)>,
    /// Whether an artifact or a use was not delivered.
    artifacts_failed: bool,
    checkpoint: CheckpointSlot,
}

impl Worker {
    fn new(
        client: Option<Client>,
        spec: RunSpec,
        resumed: Option<Resumed>,
        (stopped, created, checkpoint): (Arc<AtomicBool>, Arc<OnceLock<String>>, CheckpointSlot),
        started: Instant,
        offline_root: PathBuf,
    ) -> Self {
        // A continued run's files go on where the server's end.
        let offsets = resumed.as_ref().map_or_else(BTreeMap::new, |r| {
            BTreeMap::from([(HISTORY, r.history), (EVENTS, r.events), (OUTPUT, r.output)])
        });
        Self {
            client,
            spec,
            resumed,
            offline_root,
            started_at: SystemTime::now(),
            history: Vec::new(),
            stopped,
            created,
            system: SystemSampler::new(started),
            last_sample: None,
            artifacts: Vec::new(),
            artifacts_failed: false,
            checkpoint,
            names: None,
            offsets,
            pending: BTreeMap::new(),
            report: Report::default(),
            last_sent: Instant::now(),
        }
    }

    fn run(mut self, receiver: Receiver<Message>) -> Report {
        if self.client.is_some()
            && let Err(err) = self.create(Instant::now() + CREATE_FOR)
        {
            eprintln!("wandb: warning: could not create the run ({err}); it will be kept offline");
        }
        loop {
            let wait = FLUSH_EVERY.saturating_sub(self.last_sent.elapsed());
            match receiver.recv_timeout(wait) {
                Ok(Message::History(line)) => {
                    self.history.push(line.clone());
                    self.pending.entry(HISTORY).or_default().push(line);
                }
                Ok(Message::Console(line)) => self.pending.entry(OUTPUT).or_default().push(line),
                Ok(Message::Artifact {
                    artifact,
                    role,
                    step,
                }) => self.artifact(*artifact, role, step),
                Ok(Message::Use(name)) => self.use_by_name(&name),
                Ok(Message::Finish {
                    exit_code,
                    summary,
                    files,
                    deadline,
                }) => {
                    // A run stopped by a signal ends with the checkpoint to continue from.
                    self.log_checkpoint();
                    self.finish(exit_code, summary, files, deadline);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Training ended without finishing the run: it failed.
                Err(RecvTimeoutError::Disconnected) => {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    self.finish(1, Map::new(), Vec::new(), deadline);
                    break;
                }
            }
            self.log_checkpoint();
            if self.last_sample.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
                self.last_sample = Some(Instant::now());
                let sample = self.system.sample();
                self.pending.entry(EVENTS).or_default().push(sample);
            }
            let due = self.last_sent.elapsed() >= FLUSH_EVERY;
            let idle = self.last_sent.elapsed() >= HEARTBEAT_EVERY;
            if due && (self.has_pending() || idle) {
                let _ = self.stream(Map::new(), Instant::now() + RETRY_FOR);
            }
        }
        self.report.rows_unsent = self.pending.get(HISTORY).map_or(0, Vec::len);
        self.report
    }

    /// Logs an artifact now when the run is online; keeps it for an offline run either way.
    fn artifact(&mut self, artifact: Artifact, role: Role, step: u64) {
        if let (Some(client), Some((entity, project, run))) = (&self.client, &self.names) {
            let names = RunNames {
                entity,
                project,
                run,
            };
            let deadline = Instant::now() + RETRY_FOR;
            match artifact_upload::log(client, &names, &artifact, role, step, deadline) {
                Ok(version) => {
                    if artifact.kind != "run_table" {
                        eprintln!(
                            "wandb: artifact {} ({}, {})",
                            version.label(),
                            version.kind,
                            version.aliases.join(", ")
                        );
                    }
                    self.report.artifacts.push(version);
                }
                Err(err) => {
                    eprintln!(
                        "wandb: warning: artifact {} not logged: {err}",
                        artifact.name
                    );
                    self.artifacts_failed = true;
                }
            }
        }
        self.artifacts.push((artifact, role));
    }

    /// Logs the checkpoint in the slot, if there is one. Not kept for an offline run, and a
    /// failure does not keep the run offline: the next checkpoint goes on.
    fn log_checkpoint(&mut self) {
        let Some((artifact, step)) = (self.checkpoint.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let (Some(client), Some((entity, project, run))) = (&self.client, &self.names) else {
            return;
        };
        let names = RunNames {
            entity,
            project,
            run,
        };
        let deadline = Instant::now() + RETRY_FOR;
        match artifact_upload::log(client, &names, &artifact, Role::Output, step, deadline) {
            Ok(version) => eprintln!("wandb: checkpoint {}", version.label()),
            Err(err) => eprintln!(
                "wandb: warning: checkpoint {} not logged: {err}",
                artifact.name
            ),
        }
    }

    /// Finds the version called `name` (`[entity/project/]collection:vN`) and marks the run
    /// as its user.
    fn use_by_name(&mut self, name: &str) {
        let (Some(client), Some((entity, project, run))) = (&self.client, &self.names) else {
            eprintln!(
                "wandb: warning: {name} is not marked as used: an offline run cannot look it up"
            );
            return;
        };
        let names = RunNames {
            entity,
            project,
            run,
        };
        let (entity, project, version) =
            artifact_upload::split_path(name).unwrap_or((entity, project, name));
        let home = RunNames {
            entity,
            project,
            run,
        };
        let deadline = Instant::now() + RETRY_FOR;
        let used = artifact_upload::find(client, &home, version, deadline).and_then(|found| {
            let Some(version) = found else {
                return Ok(None);
            };
            artifact_upload::mark_used(client, &names, &version.id, deadline)?;
            Ok(Some(version))
        });
        match used {
            Ok(Some(version)) => {
                eprintln!("wandb: uses artifact {}", version.label());
                self.report.artifacts.push(version);
            }
            Ok(None) => eprintln!("wandb: warning: no artifact {name}"),
            Err(err) => eprintln!("wandb: warning: {name} is not marked as used: {err}"),
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.values().any(|lines| !lines.is_empty())
    }

    fn create(&mut self, deadline: Instant) -> Result<(), ApiError> {
        let s = &self.spec;
        // A continued run keeps its config; what this process sets is newer.
        let mut config = self
            .resumed
            .as_ref()
            .map(|r| r.config.clone())
            .unwrap_or_default();
        if let Value::Object(ours) = &s.config {
            config.extend(ours.clone());
        }
        let variables = json!({
            "id": null, "name": s.run_id, "project": s.project, "entity": s.entity,
            "groupName": s.group, "description": null, "displayName": s.display_name,
            "notes": s.notes, "commit": null, "config": Value::Object(config).to_string(), "host": s.host,
            "debug": null, "program": s.program, "repo": null, "jobType": s.job_type,
            "state": null, "sweep": s.sweep, "tags": s.tags, "summaryMetrics": null,
        });
        let Some(client) = &self.client else {
            return Ok(());
        };
        let data = client.graphql(UPSERT_BUCKET, "UpsertBucket", variables, deadline)?;
        let bucket = &data["upsertBucket"]["bucket"];
        let project = &bucket["project"];
        let names = (
            project["entity"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            project["name"].as_str().unwrap_or(&s.project).to_owned(),
            bucket["name"].as_str().unwrap_or(&s.run_id).to_owned(),
        );
        let url = format!(
            "{}/{}/{}/runs/{}",
            app_url(&s.base_url),
            names.0,
            names.1,
            names.2
        );
        eprintln!("wandb: run {url}");
        let _ = self.created.set(url.clone());
        self.report.url = Some(url);
        self.names = Some(names);
        Ok(())
    }

    /// Sends the pending lines (and `extra` fields); on success they are gone and the offsets
    /// move on, on failure they stay for the next request.
    fn stream(&mut self, extra: Map<String, Value>, deadline: Instant) -> Result<Value, ApiError> {
        let (Some(client), Some((entity, project, run))) = (&self.client, &self.names) else {
            return Ok(Value::Null);
        };
        let mut files = Map::new();
        for (name, lines) in &self.pending {
            if !lines.is_empty() {
                let offset = self.offsets.get(name).copied().unwrap_or(0);
                files.insert((*name).into(), json!({"offset": offset, "content": lines}));
            }
        }
        let mut body = Map::from_iter([("files".to_string(), Value::Object(files))]);
        body.extend(extra);
        self.last_sent = Instant::now();
        let answer = client.file_stream((entity, project, run), &Value::Object(body), deadline)?;
        if answer["stopped"].as_bool() == Some(true) && !self.stopped.swap(true, Ordering::Relaxed)
        {
            eprintln!("wandb: the run was stopped in W&B");
        }
        for (name, lines) in std::mem::take(&mut self.pending) {
            *self.offsets.entry(name).or_default() += lines.len();
            if name == HISTORY {
                self.report.rows_sent += lines.len();
            }
        }
        Ok(answer)
    }

    fn finish(
        &mut self,
        exit_code: i32,
        ours: Map<String, Value>,
        files: Vec<RunFile>,
        deadline: Instant,
    ) {
        // A continued run keeps its summary; this process's figures are newer.
        let mut summary = self
            .resumed
            .as_ref()
            .map(|r| r.summary.clone())
            .unwrap_or_default();
        summary.extend(ours);
        if self.names.is_some() {
            let uploaded = self.upload(&files, deadline);
            self.pending
                .insert(SUMMARY, vec![Value::Object(summary.clone()).to_string()]);
            // The summary is replaced, not appended: always at offset 0.
            self.offsets.insert(SUMMARY, 0);
            let extra = Map::from_iter([
                ("uploaded".to_string(), json!(uploaded)),
                ("complete".to_string(), json!(true)),
                ("exitcode".to_string(), json!(exit_code)),
            ]);
            match self.stream(extra, deadline) {
                Ok(_) => self.report.completed = true,
                Err(err) => {
                    eprintln!("wandb: warning: the end of the run was not delivered: {err}")
                }
            }
        }
        if !self.report.completed || self.artifacts_failed {
            self.keep_offline(exit_code, &summary, &files);
        }
    }

    /// Writes the whole run as an offline run that `wandb sync` uploads. A run that continues
    /// one kept offline takes that part in (its rows first, its summary under this one's) and
    /// replaces it: one run, one directory.
    fn keep_offline(&mut self, exit_code: i32, summary: &Map<String, Value>, files: &[RunFile]) {
        let runtime = self.started_at.elapsed().unwrap_or_default().as_secs_f64();
        let earlier = match (&self.resumed, &self.spec.continues) {
            (None, Some(_)) => offline::earlier_part(&self.offline_root, &self.spec.run_id),
            _ => None,
        };
        let (history, summary, continues) = match &earlier {
            Some(earlier) => {
                let mut history = earlier.history.clone();
                history.extend(self.history.iter().cloned());
                let mut merged = earlier.summary.clone();
                merged.extend(summary.clone());
                (history, merged, None)
            }
            // A part whose run the server holds goes on from there: `wandb sync` resumes it.
            None => (
                self.history.clone(),
                summary.clone(),
                match (&self.resumed, &self.spec.continues) {
                    (Some(resumed), _) => Some((resumed.starting_step, resumed.runtime)),
                    (None, Some(continues)) => Some((continues.rows, continues.runtime)),
                    (None, None) => None,
                },
            ),
        };
        let before = self.spec.continues.as_ref().map_or(0.0, |c| c.runtime);
        let run = OfflineRun {
            spec: &self.spec,
            history: &history,
            summary: &summary,
            files,
            artifacts: &self.artifacts,
            exit_code,
            runtime_seconds: before + runtime,
            started: self.started_at,
            continues,
        };
        match run.write(&self.offline_root) {
            Ok(dir) => {
                let mut taken = String::new();
                if let Some(earlier) = earlier {
                    let _ = std::fs::remove_dir_all(&earlier.dir);
                    taken = format!(
                        " (with the {} rows of its earlier part, {})",
                        earlier.history.len(),
                        earlier.dir.display()
                    );
                }
                let resume = if continues.is_some() {
                    "WANDB_RESUME=allow "
                } else {
                    ""
                };
                eprintln!(
                    "wandb: the run is kept offline in {}{taken}; upload it with: {resume}wandb sync {}",
                    dir.display(),
                    dir.display()
                );
                self.report.offline = Some(dir);
            }
            Err(err) => eprintln!(
                "wandb: warning: could not write the offline run under {}: {err}",
                self.offline_root.display()
            ),
        }
    }

    /// `CreateRunFiles`, then a PUT of each file to its signed URL; returns the names uploaded.
    fn upload(&mut self, files: &[RunFile], deadline: Instant) -> Vec<String> {
        let (Some(client), Some((entity, project, run))) = (&self.client, self.names.clone())
        else {
            return Vec::new();
        };
        if files.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        let variables = json!({"entity": entity, "project": project, "run": run, "files": names});
        let urls = match client.graphql(CREATE_RUN_FILES, "CreateRunFiles", variables, deadline) {
            Ok(data) => data["createRunFiles"]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            Err(err) => {
                eprintln!("wandb: warning: files not uploaded: {err}");
                return Vec::new();
            }
        };
        let mut uploaded = Vec::new();
        for (name, content) in files {
            let url = urls
                .iter()
                .find(|f| f["name"].as_str() == Some(name.as_str()))
                .and_then(|f| f["uploadUrl"].as_str());
            let (Some(url), Some(Ok(bytes))) = (url, content.read()) else {
                eprintln!("wandb: warning: {name} not uploaded");
                continue;
            };
            match client.put(url, &bytes, &[], deadline) {
                Ok(()) => uploaded.push(name.clone()),
                Err(err) => eprintln!("wandb: warning: {name} not uploaded: {err}"),
            }
        }
        self.report.files_uploaded = uploaded.len();
        uploaded
    }
}
