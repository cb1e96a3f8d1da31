//! Training runs logged to a fake W&B server on loopback: what arrives, with and without
//! faults, and that the API key never leaks.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use common::fake_wandb::{FakeWandb, Fault, operation_name};
use common::*;
use serde_json::Value;

const KEY: &str = "local-0123456789abcdef0123456789abcdef01234567";

fn train(server: &str, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = mnist();
    cmd.env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", server)
        .env_remove("WANDB_API_KEY")
        .env("HOME", out) // no ~/.netrc
        .args(["train", "--backend", "cpu", "--epochs", "1", "--config"])
        .arg(config("smoke.toml"))
        .arg("--output")
        .arg(out.join("model"))
        .arg("--wandb-key-file")
        .arg(out.join("no-such-key"));
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

/// Everything a finished run must have delivered, exactly once and in order.
fn assert_complete_run(server: &FakeWandb, output: &Output, exit_code: i64) {
    let log = stderr(output);
    let history = server.lines("wandb-history.jsonl");
    assert!(!history.is_empty(), "{log}");
    for (i, row) in history.iter().enumerate() {
        assert_eq!(row["_step"], i, "history row {i}: {row}");
    }
    // Steps 20, 40 and 57 (end of epoch), the epoch row, the test row.
    let steps: Vec<&Value> = history
        .iter()
        .filter_map(|r| r.get("trainer/step"))
        .collect();
    assert_eq!(steps, [20, 40, 57]);
    assert!(history.iter().any(|r| r.get("val/accuracy").is_some()));
    assert!(history.last().unwrap()["test/accuracy"].as_f64().unwrap() > 0.5);
    let state = server.state();
    assert!(state.gaps.is_empty(), "lost lines: {:?}", state.gaps);
    assert!(
        state.conflicts.is_empty(),
        "changed lines: {:?}",
        state.conflicts
    );
    assert_eq!(state.complete, Some((true, exit_code)));
    let summary: Value = serde_json::from_str(&state.files["wandb-summary.json"][&0]).unwrap();
    assert!(summary["test/accuracy"].as_f64().is_some(), "{summary}");
    assert!(summary["best/val_accuracy"].as_f64().is_some(), "{summary}");
    let output_log = &state.files["output.log"];
    assert!(
        output_log
            .values()
            .any(|l| l.contains("epoch 1: train loss")),
        "{output_log:?}"
    );
    assert!(output_log.values().all(|l| l.starts_with("ERROR 20")));
    // Basic auth `api:<key>` on every API call, the key nowhere else.
    let expected = format!("Basic {}", base64(&format!("api:{KEY}")));
    assert!(
        state.authorizations.iter().all(|a| *a == expected),
        "{:?}",
        state.authorizations
    );
    assert!(!String::from_utf8_lossy(&state.raw).contains(KEY));
    assert!(!log.contains(KEY) && !String::from_utf8_lossy(&output.stdout).contains(KEY));
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn a_run_delivers_config_history_summary_files_and_its_end() {
    let server = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let output = train(
        &server.url,
        out.path(),
        &[
            ("WANDB_API_KEY", KEY),
            ("WANDB_ENTITY", "team"),
            ("WANDB_PROJECT", "digits"),
            ("WANDB_RUN_ID", "abc123xy"),
            ("WANDB_NAME", "first"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "wandb: run {}/team/digits/runs/abc123xy",
            server.url
        )),
        "{log}"
    );
    assert!(log.contains("wandb: API key from WANDB_API_KEY"), "{log}");
    assert_complete_run(&server, &output, 0);

    let state = server.state();
    let upsert = &state.upserts[0];
    assert_eq!(upsert["entity"], "team");
    assert_eq!(upsert["project"], "digits");
    assert_eq!(upsert["name"], "abc123xy");
    assert_eq!(upsert["displayName"], "first");
    assert_eq!(upsert["jobType"], "train");
    let config: Value = serde_json::from_str(upsert["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["model"]["value"]["kind"], "cnn");
    assert_eq!(config["training"]["value"]["seed"], 7);
    assert_eq!(config["backend"]["value"]["name"], "cpu");
    assert_eq!(config["dataset"]["value"]["train"], 4000);
    assert!(config.get("wandb").is_none());
    let mut uploaded = state.uploaded.clone();
    uploaded.sort();
    assert_eq!(
        uploaded,
        ["metrics.json", "model.bpk", "model.json", "smoke.toml"]
    );
    let model = std::fs::read(out.path().join("model/model.bpk")).unwrap();
    assert_eq!(state.puts["/storage/run/model.bpk"], model);
    let operations: Vec<&str> = state
        .requests
        .iter()
        .filter_map(|r| r.2.as_deref())
        .collect();
    assert_eq!(operations, ["UpsertBucket", "CreateRunFiles"]);
    drop(state);
    let events = server.lines("wandb-events.jsonl");
    assert!(
        events[0]["system.proc.memory.rssMB"].as_f64().unwrap() > 0.0,
        "{events:?}"
    );
}

#[test]
fn a_run_stopped_in_wandb_ends_training_with_exit_code_3() {
    let server = FakeWandb::start(&[]);
    server.state().stop = true;
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("model");
    let output = mnist()
        .env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", &server.url)
        .env("WANDB_API_KEY", KEY)
        .args(["train", "--backend", "cpu", "--epochs", "100", "--config"])
        .arg(config("smoke.toml"))
        .arg("--output")
        .arg(&model)
        .output()
        .unwrap();
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{log}");
    assert!(log.contains("wandb: the run was stopped in W&B"), "{log}");
    assert!(log.contains("error: stopped from W&B after step"), "{log}");
    assert!(!model.join("model.json").exists());
    assert_eq!(server.state().complete, Some((true, 3)));
}

#[test]
fn faults_are_retried_and_nothing_is_lost_or_doubled() {
    let server = FakeWandb::start(&[
        Fault::Status(500),
        Fault::Status(503),
        Fault::TooManyRequests,
        Fault::Drop,
        Fault::Status(502),
        Fault::Slow(3_000),
    ]);
    let out = tempfile::tempdir().unwrap();
    let output = train(&server.url, out.path(), &[("WANDB_API_KEY", KEY)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_complete_run(&server, &output, 0);
    assert!(server.state().faults.is_empty());
}

#[test]
fn a_failed_run_ends_with_a_non_zero_exit_code() {
    let server = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    // A checkpoint of another network: --resume fails after the run has started.
    succeeds(
        mnist()
            .args(["train", "--backend", "cpu", "--epochs", "1", "--config"])
            .arg(config("mlp.toml"))
            .arg("--output")
            .arg(out.path().join("model")),
    );
    let output = mnist()
        .env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", &server.url)
        .env("WANDB_API_KEY", KEY)
        .args(["train", "--backend", "cpu", "--resume", "--config"])
        .arg(config("smoke.toml"))
        .arg("--output")
        .arg(out.path().join("model"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("trained with another model"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.state().complete.map(|c| c.1), Some(1));
}

#[test]
fn the_key_comes_from_a_file_or_netrc_and_never_shows() {
    for source in ["file", "netrc"] {
        let server = FakeWandb::start(&[]);
        let out = tempfile::tempdir().unwrap();
        let key_file = out.path().join("key");
        let netrc = out.path().join("netrc");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        std::fs::write(
            &netrc,
            format!("machine 127.0.0.1\n  login user\n  password {KEY}\n"),
        )
        .unwrap();
        let mut cmd = mnist();
        cmd.env("WANDB_MODE", "online")
            .env("WANDB_BASE_URL", &server.url)
            .env_remove("WANDB_API_KEY")
            .env("HOME", out.path())
            .args(["train", "--backend", "cpu", "--epochs", "1", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(out.path().join("model"));
        if source == "file" {
            cmd.arg("--wandb-key-file").arg(&key_file);
        } else {
            cmd.env("NETRC", &netrc)
                .arg("--wandb-key-file")
                .arg(out.path().join("none"));
        }
        let output = cmd.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let log = stderr(&output);
        let expected = if source == "file" {
            format!("key file {}", key_file.display())
        } else {
            netrc.display().to_string()
        };
        assert!(
            log.contains(&format!("wandb: API key from {expected}")),
            "{log}"
        );
        assert_complete_run(&server, &output, 0);
    }
}

#[test]
fn without_a_key_or_a_server_training_goes_on() {
    let out = tempfile::tempdir().unwrap();
    let output = train("http://127.0.0.1:9", out.path(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("wandb: warning: no API key (looked in: WANDB_API_KEY"),
        "{log}"
    );
    assert!(log.contains("netrc"), "{log}");

    // A server that is down for the whole run: training finishes, briefly delayed at most, and
    // the offline run holds everything, for `wandb sync`.
    let started = Instant::now();
    let output = train("http://127.0.0.1:9", out.path(), &[("WANDB_API_KEY", KEY)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("wandb: warning: could not create the run"),
        "{log}"
    );
    assert!(log.contains("wandb: the run is kept offline in"), "{log}");
    assert!(!log.contains(KEY));
    assert!(started.elapsed().as_secs() < 90, "{:?}", started.elapsed());
    let run_dir = std::fs::read_dir(out.path().join("model/wandb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let synced = FakeWandb::start(&[]);
    sync(&run_dir, &synced.url, out.path());
    let rows = synced.lines("wandb-history.jsonl");
    let steps: Vec<&Value> = rows.iter().filter_map(|r| r.get("trainer/step")).collect();
    assert_eq!(steps, [20, 40, 57]);
    assert!(rows.last().unwrap()["test/accuracy"].is_number());

    let output = train(
        "http://127.0.0.1:9",
        out.path(),
        &[("WANDB_API_KEY", KEY), ("WANDB_MODE", "disabled")],
    );
    assert!(stderr(&output).contains("wandb: disabled"));
}

/// The official SDK (`pip install wandb==0.31.0`) runs against the fake server: the fake
/// answers as the real one does.
#[test]
fn the_official_sdk_runs_against_the_fake_server() {
    let server = FakeWandb::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import wandb
run = wandb.init(entity="team", project="conformance", config={"lr": 0.1, "layers": [64, 32]},
                 tags=["t1"], group="g", job_type="train")
for i in range(3):
    run.log({"loss": 1.0 / (i + 1), "acc": i / 10})
run.summary["best_acc"] = 0.99
run.finish()
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("WANDB_BASE_URL", &server.url)
        .env("WANDB_API_KEY", KEY)
        .env("WANDB_DIR", dir.path())
        .env("HOME", dir.path())
        .env("WANDB_MODE", "online")
        .env("WANDB_DISABLE_GIT", "true")
        .current_dir(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official SDK failed against the fake server:\n{}",
        stderr(&output)
    );
    let history = server.lines("wandb-history.jsonl");
    let losses: Vec<f64> = history.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert_eq!(losses, [1.0, 0.5, 1.0 / 3.0]);
    let state = server.state();
    assert_eq!(state.complete, Some((true, 0)));
    let config: Value = serde_json::from_str(state.upserts[0]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["lr"]["value"], 0.1);
    let summary: Value = serde_json::from_str(&state.files["wandb-summary.json"][&0]).unwrap();
    assert_eq!(summary["best_acc"], 0.99);
}

/// Uploads an offline run with the official `wandb sync` to the server at `url`.
fn sync(run_dir: &Path, url: &str, home: &Path) {
    let sync = std::process::Command::new("python3")
        .args(["-m", "wandb", "sync"])
        .arg(run_dir)
        .env("WANDB_BASE_URL", url)
        .env("WANDB_API_KEY", KEY)
        .env("HOME", home)
        // wandb sync writes its logs under ./wandb: keep them out of the project.
        .current_dir(home)
        .output()
        .expect("python3 -m wandb sync runs (pip install wandb==0.31.0)");
    assert!(
        sync.status.success(),
        "wandb sync failed:\n{}{}",
        String::from_utf8_lossy(&sync.stdout),
        stderr(&sync)
    );
}

/// `value` with every number as a float: W&B's own client writes 0.0 as 0.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// History rows without the fields that depend on the clock, to compare two runs.
fn metrics_only(rows: Vec<Value>) -> Vec<Value> {
    const CLOCK: [&str; 5] = [
        "_runtime",
        "_timestamp",
        "train/samples_per_second",
        "epoch/seconds",
        "epoch/samples_per_second",
    ];
    rows.into_iter()
        .map(|mut row| {
            let map = row.as_object_mut().unwrap();
            map.retain(|key, _| !CLOCK.contains(&key.as_str()));
            row
        })
        .collect()
}

#[test]
fn wandb_sync_uploads_an_offline_run_as_an_online_run_delivers_it() {
    let online = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let output = train(&online.url, out.path(), &[("WANDB_API_KEY", KEY)]);
    assert!(output.status.success(), "{}", stderr(&output));

    let offline_out = tempfile::tempdir().unwrap();
    let output = train(
        "http://127.0.0.1:9",
        offline_out.path(),
        &[("WANDB_MODE", "offline"), ("WANDB_RUN_ID", "off1ine0")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let runs = offline_out.path().join("model/wandb");
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(run_dir.join("run-off1ine0.wandb").is_file());
    assert!(stderr(&output).contains(&format!("upload it with: wandb sync {}", run_dir.display())));

    let synced = FakeWandb::start(&[]);
    sync(&run_dir, &synced.url, offline_out.path());

    assert_eq!(
        metrics_only(synced.lines("wandb-history.jsonl")),
        metrics_only(online.lines("wandb-history.jsonl"))
    );
    let summary = |server: &FakeWandb| -> Value {
        let state = server.state();
        let mut summary: Value =
            serde_json::from_str(&state.files["wandb-summary.json"][&0]).unwrap();
        let map = summary.as_object_mut().unwrap();
        map.retain(|key, _| !key.starts_with('_'));
        summary
    };
    assert_eq!(summary(&synced), summary(&online));
    let config = |server: &FakeWandb| -> Value {
        let state = server.state();
        let upsert = state
            .upserts
            .iter()
            .find(|u| u["config"].is_string())
            .unwrap();
        serde_json::from_str(upsert["config"].as_str().unwrap()).unwrap()
    };
    let (synced_config, online_config) = (config(&synced), config(&online));
    for key in [
        "model",
        "preprocess",
        "training",
        "optimizer",
        "schedule",
        "backend",
        "dataset",
    ] {
        assert_eq!(
            numbers_as_floats(&synced_config[key]["value"]),
            numbers_as_floats(&online_config[key]["value"]),
            "config {key}"
        );
    }
    assert_eq!(synced.state().complete.map(|c| c.1), Some(0));
}

/// Whitespace and commas are insignificant in GraphQL.
fn graphql_tokens(query: &str) -> String {
    query
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect()
}

/// The sweep's configuration as the server reads it: YAML, parsed by the SDK's own parser.
fn yaml_as_json(text: &str) -> Value {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_sweep_is_created_as_the_official_sdk_creates_it_and_its_trials_join_it() {
    let server = FakeWandb::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let sweep_env = |cmd: &mut std::process::Command| {
        cmd.env("WANDB_BASE_URL", &server.url)
            .env("WANDB_API_KEY", KEY)
            .env("WANDB_ENTITY", "team")
            .env("WANDB_PROJECT", "sweeps")
            .env("WANDB_MODE", "online")
            .env("HOME", dir.path())
            .current_dir(dir.path());
    };

    // Ours: `mnist sweep` creates the sweep, then writes the trials with its id.
    let mut ours = mnist();
    sweep_env(&mut ours);
    succeeds(
        ours.args(["sweep", "--sweep"])
            .arg(config("sweeps/smoke-lr.toml"))
            .arg("--output")
            .arg(dir.path().join("sweep")),
    );
    let request = server.state().sweeps[0].clone();
    let variables = &request["variables"];
    let sweep_config: Value = serde_json::from_str(variables["config"].as_str().unwrap()).unwrap();
    assert_eq!(sweep_config["method"], "random");
    assert_eq!(sweep_config["controller"]["type"], "local");
    assert_eq!(
        sweep_config["parameters"]["optimizer.lr"]["distribution"],
        "log_uniform_values"
    );

    // The official SDK's own request for the same sweep configuration.
    let script = format!(
        "import json, wandb\nwandb.sweep(json.loads({:?}), entity='team', project='sweeps')",
        sweep_config.to_string()
    );
    let mut sdk = std::process::Command::new("python3");
    sweep_env(&mut sdk);
    let output = sdk
        .args(["-c", &script])
        .env("WANDB_DIR", dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the SDK failed:\n{}",
        stderr(&output)
    );
    let theirs = server.state().sweeps[1].clone();

    assert_eq!(operation_name(&request), operation_name(&theirs));
    assert_eq!(
        graphql_tokens(request["query"].as_str().unwrap()),
        graphql_tokens(theirs["query"].as_str().unwrap()),
    );
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(variables), keys(&theirs["variables"]));
    for (key, value) in variables.as_object().unwrap() {
        if key == "config" {
            let sdk_config = yaml_as_json(theirs["variables"]["config"].as_str().unwrap());
            assert_eq!(yaml_as_json(value.as_str().unwrap()), sdk_config);
        } else {
            assert_eq!(value, &theirs["variables"][key], "variable {key}");
        }
    }

    // A trial's run joins the sweep, its parameters at the top of its config.
    let trial = std::fs::read_dir(dir.path().join("sweep/configs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&trial).unwrap();
    assert!(text.contains("id = \"swp00001\""), "{text}");
    let mut train = mnist();
    sweep_env(&mut train);
    succeeds(
        train
            .args(["train", "--backend", "cpu", "--epochs", "1", "--config"])
            .arg(&trial)
            .arg("--models")
            .arg(dir.path().join("models")),
    );
    let state = server.state();
    let upsert = &state.upserts[0];
    assert_eq!(upsert["sweep"], "swp00001");
    assert_eq!(
        upsert["displayName"],
        trial.file_stem().unwrap().to_str().unwrap()
    );
    let config: Value = serde_json::from_str(upsert["config"].as_str().unwrap()).unwrap();
    assert!(config["optimizer.lr"]["value"].is_f64(), "{config}");
    assert!(config["training.batch_size"]["value"].is_u64(), "{config}");
}
