//! Training runs logged to a fake W&B server on loopback: what arrives, with and without
//! faults, and that the API key never leaks.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use common::fake_wandb::{FakeWandb, Fault, operation_name};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "local-0123456789abcdef0123456789abcdef01234567";

fn train(server: &str, out: &Path, env: &[(&str, &str)]) -> Output {
    train_with(server, out, env, &["--epochs", "1"])
}

/// `train` with its own command-line overrides.
fn train_with(server: &str, out: &Path, env: &[(&str, &str)], overrides: &[&str]) -> Output {
    train_config(server, out, env, &config("smoke.toml"), overrides)
}

/// `train_with` of another config.
fn train_config(
    server: &str,
    out: &Path,
    env: &[(&str, &str)],
    config: &Path,
    overrides: &[&str],
) -> Output {
    let mut cmd = mnist();
    cmd.env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", server)
        .env_remove("WANDB_API_KEY")
        .env("HOME", out) // no ~/.netrc
        .args(["train", "--backend", "cpu"])
        .args(overrides)
        .arg("--config")
        .arg(config)
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
    assert_eq!(config["_wandb"]["value"]["t"]["13"], "linux-x86_64");
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
    // The data, used by reference (no files); the epoch's checkpoint; the model, uploaded,
    // `best` decided first.
    assert_eq!(
        operations,
        [
            "UpsertBucket",
            "CreateArtifact",
            "CreateArtifactManifest",
            "CreateArtifactManifest",
            "CommitArtifact",
            "UseArtifact",
            "ArtifactVersion",
            "CreateArtifact",
            "CreateArtifactManifest",
            "CreateArtifactFiles",
            "CreateArtifactManifest",
            "CommitArtifact",
            "ArtifactVersion",
            "ArtifactByName",
            "CreateArtifact",
            "CreateArtifactManifest",
            "CreateArtifactFiles",
            "CreateArtifactManifest",
            "CommitArtifact",
            "ArtifactVersion",
            "CreateRunFiles"
        ]
    );
    drop(state);
    let events = server.lines("wandb-events.jsonl");
    assert!(
        events[0]["system.proc.memory.rssMB"].as_f64().unwrap() > 0.0,
        "{events:?}"
    );
}

#[test]
fn the_model_artifact_carries_the_exports_the_config_asks_for() {
    let server = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("exported.toml");
    let smoke = std::fs::read_to_string(config("smoke.toml")).unwrap();
    std::fs::write(
        &exported,
        format!("{smoke}\n[export]\nformats = [\"onnx\", \"safetensors\"]\n"),
    )
    .unwrap();
    let output = train_config(
        &server.url,
        out.path(),
        &[("WANDB_API_KEY", KEY)],
        &exported,
        &["--epochs", "1"],
    );
    assert!(output.status.success(), "{}", stderr(&output));

    let model_input = artifact_requests(&server, "CreateArtifact")
        .into_iter()
        .map(|r| r["variables"]["input"].clone())
        .find(|i| i["artifactTypeName"] == "model")
        .unwrap();
    let metadata: Value = serde_json::from_str(model_input["metadata"].as_str().unwrap()).unwrap();
    let exports = &metadata["exports"];
    assert_eq!(exports["onnx"]["opset"], 13, "{metadata}");
    assert_eq!(exports["onnx"]["files"], json!(["model.onnx"]));
    assert_eq!(exports["onnx"]["input_shape"], json!(["batch", 1, 28, 28]));
    assert_eq!(exports["onnx"]["preprocess"]["kind"], "scale");
    assert_eq!(
        exports["safetensors"]["files"],
        json!(["model.safetensors", "model.py"])
    );
    let state = server.state();
    let version = state
        .artifacts
        .iter()
        .find(|a| a.collection() == "mnist-cnn")
        .unwrap();
    let manifest: Value =
        serde_json::from_slice(&state.puts[&format!("/storage/manifest/{}", version.id)]).unwrap();
    for name in ["model.onnx", "model.safetensors", "model.py"] {
        let bytes = std::fs::read(out.path().join("model").join(name)).unwrap();
        assert!(bytes.len() > 1000, "{name}: {} bytes", bytes.len());
        assert_eq!(
            manifest["contents"][name]["digest"],
            md5_base64(&bytes).as_str(),
            "{name}"
        );
        assert_eq!(state.puts[&format!("/storage/run/{name}")], bytes, "{name}");
    }
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
    run_sdk(script, &server, dir.path());
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

/// Runs `script` with the official SDK (`pip install wandb==0.31.0`) against `server`, in `dir`.
fn run_sdk(script: &str, server: &FakeWandb, dir: &Path) {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("WANDB_BASE_URL", &server.url)
        .env("WANDB_API_KEY", KEY)
        .env("WANDB_DIR", dir)
        .env("HOME", dir)
        .env("WANDB_MODE", "online")
        .env("WANDB_DISABLE_GIT", "true")
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official SDK failed against the fake server:\n{}",
        stderr(&output)
    );
}

/// Uploads an offline run with the official `wandb sync` to the server at `url`.
fn sync(run_dir: &Path, url: &str, home: &Path) {
    wandb_sync(&[run_dir], url, home, KEY);
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

/// `mnist stats --data` on the sample's test split, logged as an eval run to `server`.
fn evaluate(server: &str, model: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = mnist();
    cmd.env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", server)
        .env("WANDB_API_KEY", KEY)
        .env("HOME", out)
        .args(["stats", "--backend", "cpu", "--model"])
        .arg(model)
        .arg("--data")
        .arg(sample_dir())
        .arg("--output")
        .arg(out.join("stats"));
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().unwrap()
}

/// The artifact requests of one kind of operation, whole.
fn artifact_requests(server: &FakeWandb, operation: &str) -> Vec<Value> {
    server
        .state()
        .artifact_requests
        .iter()
        .filter(|r| operation_name(r).as_deref() == Some(operation))
        .cloned()
        .collect()
}

/// The keys of a JSON object, and of each object under it, as `a`, `a.b`, … (list items
/// are described by their first item).
fn shape(value: &Value) -> Vec<String> {
    fn walk(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    let path = format!("{prefix}{key}");
                    out.push(path.clone());
                    walk(item, &format!("{path}."), out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    walk(first, &format!("{prefix}[]."), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out
}

/// The run's history rows that hold `key`.
fn rows_with(server: &FakeWandb, key: &str) -> Vec<Value> {
    server
        .lines("wandb-history.jsonl")
        .into_iter()
        .filter(|row| row.get(key).is_some())
        .collect()
}

/// A run_table artifact's table file, as uploaded.
fn uploaded_table(server: &FakeWandb, entry_suffix: &str) -> Value {
    let state = server.state();
    let (_, bytes) = state
        .puts
        .iter()
        .find(|(path, _)| path.starts_with("/storage/artifact/") && path.ends_with(entry_suffix))
        .unwrap_or_else(|| panic!("no upload of {entry_suffix}: {:?}", state.puts.keys()));
    serde_json::from_slice(bytes).unwrap()
}

/// The official SDK logs, against the fake server, what `mnist train` and `mnist stats` log:
/// a dataset by reference that the run uses, a model file with aliases, a table with an image
/// and a confusion matrix. Ours must send the same GraphQL documents with the same variables,
/// upload files with their `Content-MD5`, and write tables and the chart in the SDK's shapes.
#[test]
fn artifacts_tables_and_the_chart_are_sent_as_the_official_sdk_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), "5,0,0,0\n").unwrap();
    std::fs::write(dir.path().join("model.bpk"), b"\x00\x01weights".repeat(10)).unwrap();
    let script = r#"
import os, numpy as np, wandb
run = wandb.init(entity="team", project="digits", job_type="train")
data = wandb.Artifact("mnist-sample", type="dataset", metadata={"train": 1})
data.add_reference("file://" + os.path.abspath("train.csv"), name="train.csv")
run.use_artifact(data)
run.log({"loss": 0.5})
model = wandb.Artifact("mnist-cnn", type="model", metadata={"val_accuracy": 0.9})
model.add_file("model.bpk")
run.log_artifact(model, aliases=["latest", "best"])
image = np.zeros((28, 28), dtype=np.uint8)
image[5:20, 10:12] = 255
mistakes = wandb.Table(columns=["image", "true", "predicted", "confidence", "index"],
                       data=[[wandb.Image(image, caption="1 taken for 7"), 1, 7, 0.93, 12]])
chart = wandb.plot.confusion_matrix(y_true=[0, 1, 1], preds=[0, 1, 0], class_names=["0", "1"])
run.log({"eval/mistakes": mistakes, "confusion_matrix": chart})
run.finish()
"#;
    let sdk = FakeWandb::start(&[]);
    run_sdk(script, &sdk, dir.path());

    let ours = FakeWandb::start(&[]);
    let env = [
        ("WANDB_API_KEY", KEY),
        ("WANDB_ENTITY", "team"),
        ("WANDB_PROJECT", "digits"),
    ];
    let output = train_with(&ours.url, dir.path(), &env, &["--epochs", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let model = dir.path().join("model");
    let output = evaluate(&ours.url, &model, dir.path(), &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let eval_log = stderr(&output);

    // The same documents, and the same variables, for every operation both sent.
    for operation in [
        "CreateArtifact",
        "CreateArtifactManifest",
        "CreateArtifactFiles",
        "CommitArtifact",
        "UseArtifact",
    ] {
        let (theirs, mine) = (
            artifact_requests(&sdk, operation),
            artifact_requests(&ours, operation),
        );
        assert!(!theirs.is_empty() && !mine.is_empty(), "{operation}");
        // The SDK's Python API uses artifacts by name with its own document; wandb-core's
        // `UseArtifact` is the one that marks a logged artifact as used.
        let theirs: Vec<&Value> = theirs
            .iter()
            .filter(|r| r["variables"].get("input").is_some() || operation != "UseArtifact")
            .collect();
        let (t, m) = (&theirs[0], &mine[0]);
        assert_eq!(
            graphql_tokens(t["query"].as_str().unwrap()),
            graphql_tokens(m["query"].as_str().unwrap()),
            "{operation}: the documents differ"
        );
        assert_eq!(
            shape(&t["variables"]),
            shape(&m["variables"]),
            "{operation}: the variables differ"
        );
        eprintln!(
            "{operation}: same document (sha256 of its tokens {}), variables {:?}",
            &sha256_hex(graphql_tokens(m["query"].as_str().unwrap()).as_bytes())[..16],
            shape(&m["variables"])
        );
    }
    // The model: its version's inputs as the SDK sets them, each file with its checksum.
    let created = artifact_requests(&ours, "CreateArtifact");
    let model_input = created
        .iter()
        .map(|r| &r["variables"]["input"])
        .find(|i| i["artifactTypeName"] == "model")
        .unwrap();
    assert_eq!(model_input["artifactCollectionName"], "mnist-cnn");
    assert_eq!(model_input["digestAlgorithm"], "MANIFEST_MD5");
    assert!(model_input["runName"].is_string() && model_input["historyStep"].is_number());
    let metadata: Value = serde_json::from_str(model_input["metadata"].as_str().unwrap()).unwrap();
    assert!(
        metadata["val_accuracy"].as_f64().unwrap() > 0.5,
        "{metadata}"
    );
    assert!(metadata["parameters"].as_u64().unwrap() > 0, "{metadata}");
    assert!(
        metadata["architecture"]
            .as_str()
            .unwrap()
            .starts_with("cnn"),
        "{metadata}"
    );
    let data_input = created
        .iter()
        .map(|r| &r["variables"]["input"])
        .find(|i| i["artifactTypeName"] == "dataset")
        .unwrap();
    // Used, not made, by the run: no producing run, as the SDK's `use_artifact`.
    assert!(data_input["runName"].is_null() && data_input["historyStep"].is_null());
    let state = ours.state();
    let model_version = state
        .artifacts
        .iter()
        .find(|a| a.collection() == "mnist-cnn")
        .unwrap();
    assert!(model_version.committed);
    assert_eq!(model_version.aliases, ["latest", "best"]);
    let weights = std::fs::read(model.join("model.bpk")).unwrap();
    let path = format!("/storage/artifact/{}/model.bpk", model_version.id);
    assert_eq!(state.puts[&path], weights);
    assert_eq!(state.put_md5s[&path], md5_base64(&weights));
    let manifest: Value =
        serde_json::from_slice(&state.puts[&format!("/storage/manifest/{}", model_version.id)])
            .unwrap();
    assert_eq!(
        manifest["contents"]["model.bpk"]["digest"],
        md5_base64(&weights).as_str()
    );
    let dataset = state
        .artifacts
        .iter()
        .find(|a| a.input["artifactTypeName"] == "dataset")
        .unwrap();
    let manifest: Value =
        serde_json::from_slice(&state.puts[&format!("/storage/manifest/{}", dataset.id)]).unwrap();
    let reference = manifest["contents"]["train-images-idx3-ubyte.gz"]["ref"]
        .as_str()
        .unwrap();
    assert!(reference.starts_with("builtin://mnist/"), "{manifest}");
    // The eval run used the model's version; the training run, the data.
    let runs: Vec<String> = state
        .upserts
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        state
            .uses
            .iter()
            .any(|(run, id)| *id == model_version.id && run != &runs[0]),
        "{:?}\n{eval_log}",
        state.uses
    );
    assert!(
        state
            .uses
            .iter()
            .any(|(run, id)| *id == dataset.id && run == &runs[0]),
        "{:?}",
        state.uses
    );
    let card: Value =
        serde_json::from_slice(&std::fs::read(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["wandb_artifact"]["name"], "team/digits/mnist-cnn:v0");
    assert_eq!(
        card["wandb_artifact"]["url"],
        format!("{}/team/digits/artifacts/model/mnist-cnn/v0", ours.url)
    );
    drop(state);

    // Tables: the history value, the table file and the chart, in the SDK's shapes.
    let (their_row, our_row) = (
        &rows_with(&sdk, "eval/mistakes")[0],
        &rows_with(&ours, "eval/mistakes")[0],
    );
    assert_eq!(
        shape(&their_row["eval/mistakes"]),
        shape(&our_row["eval/mistakes"])
    );
    assert_eq!(
        shape(&their_row["confusion_matrix_table"]),
        shape(&our_row["confusion_matrix_table"])
    );
    let (theirs, mine) = (
        uploaded_table(&sdk, "mistakes.table.json"),
        uploaded_table(&ours, "mistakes.table.json"),
    );
    assert_eq!(shape(&theirs), shape(&mine));
    assert_eq!(theirs["column_types"], mine["column_types"]);
    assert_eq!(
        mine["nrows"].as_u64().unwrap(),
        mine["data"].as_array().unwrap().len() as u64
    );
    assert!(mine["nrows"].as_u64().unwrap() > 0);
    let image = &mine["data"][0][0];
    assert_eq!(image["_type"], "image-file");
    let png = ours
        .state()
        .puts
        .iter()
        .find(|(p, _)| p.ends_with(image["path"].as_str().unwrap()))
        .map(|(_, b)| b.clone())
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let (theirs, mine) = (
        uploaded_table(&sdk, "confusion_matrix_table.table.json"),
        uploaded_table(&ours, "confusion_matrix_table.table.json"),
    );
    assert_eq!(theirs["column_types"], mine["column_types"]);
    assert_eq!(mine["nrows"], 100);
    let summary: Value =
        serde_json::from_str(&ours.state().files["wandb-summary.json"][&0]).unwrap();
    assert_eq!(summary["confusion_matrix_table"]["_type"], "table-file");
    assert!(summary["eval/accuracy"].as_f64().unwrap() > 0.5);
    let chart = |server: &FakeWandb| -> Value {
        let state = server.state();
        let upsert = state
            .upserts
            .iter()
            .rev()
            .find(|u| u["config"].as_str().unwrap_or("").contains("visualize"))
            .expect("the chart in the config");
        let config: Value = serde_json::from_str(upsert["config"].as_str().unwrap()).unwrap();
        let mut chart = config["_wandb"]["value"]["visualize"]["confusion_matrix"].clone();
        chart["panel_config"]["stringSettings"]["title"] = Value::Null;
        chart
    };
    assert_eq!(chart(&sdk), chart(&ours));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn md5_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

/// Three trainings into one collection: each a new version, `latest` on the last, `best` on the
/// one with the highest validation accuracy, whatever order they came in; the data, unchanged,
/// one version used by all three.
#[test]
fn latest_and_best_aliases_follow_three_runs() {
    let server = FakeWandb::start(&[]);
    let env = [
        ("WANDB_API_KEY", KEY),
        ("WANDB_ENTITY", "team"),
        ("WANDB_PROJECT", "digits"),
    ];
    // Four epochs beat one; a learning rate of 1e-6 learns next to nothing.
    let runs: [&[&str]; 3] = [
        &["--epochs", "1"],
        &["--epochs", "4"],
        &["--epochs", "1", "--lr", "1e-6"],
    ];
    let mut cards = Vec::new();
    for (i, overrides) in runs.iter().enumerate() {
        let out = tempfile::tempdir().unwrap();
        let output = train_with(&server.url, out.path(), &env, overrides);
        assert!(output.status.success(), "run {i}: {}", stderr(&output));
        let card: Value =
            serde_json::from_slice(&std::fs::read(out.path().join("model/model.json")).unwrap())
                .unwrap();
        assert_eq!(
            card["wandb_artifact"]["name"],
            format!("team/digits/mnist-cnn:v{i}")
        );
        cards.push(card);
    }
    let state = server.state();
    let models: Vec<&common::fake_wandb::FakeArtifact> = state
        .artifacts
        .iter()
        .filter(|a| a.collection() == "mnist-cnn")
        .collect();
    assert_eq!(models.len(), 3);
    let accuracy =
        |a: &common::fake_wandb::FakeArtifact| a.metadata()["val_accuracy"].as_f64().unwrap();
    let accuracies: Vec<f64> = models.iter().map(|a| accuracy(a)).collect();
    assert!(
        accuracies[1] > accuracies[0] && accuracies[0] > accuracies[2],
        "{accuracies:?}"
    );
    let with = |alias: &str| -> Vec<usize> {
        models
            .iter()
            .filter(|a| a.aliases.iter().any(|x| x == alias))
            .map(|a| a.version)
            .collect()
    };
    assert_eq!(with("latest"), [2]);
    assert_eq!(with("best"), [1]);
    let data: Vec<&common::fake_wandb::FakeArtifact> = state
        .artifacts
        .iter()
        .filter(|a| a.input["artifactTypeName"] == "dataset")
        .collect();
    assert_eq!(data.len(), 1, "the same data is one version");
    assert_eq!(
        state
            .uses
            .iter()
            .filter(|(_, id)| *id == data[0].id)
            .count(),
        3
    );
}

/// An offline run keeps its artifacts (the files beside it) and `wandb sync` uploads them as
/// the online run would have: the data used by reference, the model with its files.
#[test]
fn wandb_sync_uploads_an_offline_runs_artifacts() {
    let out = tempfile::tempdir().unwrap();
    let output = train(
        "http://127.0.0.1:9",
        out.path(),
        &[("WANDB_MODE", "offline"), ("WANDB_RUN_ID", "art1fact")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let card: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("model/model.json")).unwrap())
            .unwrap();
    assert!(
        card["wandb_artifact"].is_null(),
        "offline, the version is not known yet"
    );
    let run_dir = std::fs::read_dir(out.path().join("model/wandb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let server = FakeWandb::start(&[]);
    sync(&run_dir, &server.url, out.path());
    let state = server.state();
    let model = state
        .artifacts
        .iter()
        .find(|a| a.input["artifactTypeName"] == "model")
        .expect("the model artifact synced");
    assert!(model.committed);
    assert_eq!(model.collection(), "mnist-cnn");
    assert!(
        model.aliases.contains(&"latest".to_string()),
        "{:?}",
        model.aliases
    );
    assert!(model.metadata()["val_accuracy"].as_f64().unwrap() > 0.5);
    let weights = std::fs::read(out.path().join("model/model.bpk")).unwrap();
    assert!(
        state
            .puts
            .iter()
            .any(|(path, body)| path.starts_with("/storage/artifact/")
                && path.ends_with("/model.bpk")
                && *body == weights),
        "{:?}",
        state.puts.keys()
    );
    let data = state
        .artifacts
        .iter()
        .find(|a| a.input["artifactTypeName"] == "dataset")
        .expect("the data artifact synced");
    assert!(data.committed);
    assert!(
        state
            .uses
            .iter()
            .any(|(run, id)| *id == data.id && run == "art1fact"),
        "{:?}",
        state.uses
    );
}

/// `mnist infer` logs an inference run that uses the model's version, with the predicted
/// classes and the least confident predictions as a table of images naming their files.
#[test]
fn inference_is_logged_as_a_run_using_the_model() {
    let server = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let env = [
        ("WANDB_API_KEY", KEY),
        ("WANDB_ENTITY", "team"),
        ("WANDB_PROJECT", "digits"),
    ];
    let output = train(&server.url, out.path(), &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    let mut cmd = mnist();
    cmd.env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", &server.url)
        .env("HOME", out.path())
        .args(["infer", "--backend", "cpu", "--model"])
        .arg(out.path().join("model"))
        .arg("--input")
        .arg(&digits)
        .arg("--output")
        .arg(out.path().join("inferred"));
    // No entity or project given: the run lands beside the model's artifact.
    cmd.env("WANDB_API_KEY", KEY);
    let output = succeeds(&mut cmd);
    let log = stderr(&output);
    assert!(log.contains("wandb: uses artifact mnist-cnn:v0"), "{log}");
    assert!(log.contains("/team/digits/runs/"), "{log}");
    let state = server.state();
    let runs: Vec<(&str, &str)> = state
        .upserts
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["jobType"].as_str().unwrap()))
        .collect();
    let [(_, "train"), (inference, "inference")] = runs[..] else {
        panic!("{runs:?}")
    };
    let model = state.artifact("mnist-cnn:v0").unwrap();
    assert!(
        state
            .uses
            .contains(&(inference.to_owned(), model.id.clone())),
        "{:?}",
        state.uses
    );
    let tables: Vec<&str> = state
        .artifacts
        .iter()
        .filter(|a| a.input["artifactTypeName"] == "run_table")
        .map(|a| a.collection())
        .collect();
    assert_eq!(tables.len(), 2, "{tables:?}");
    drop(state);
    let table = uploaded_table(&server, "least_confident.table.json");
    assert_eq!(
        table["columns"],
        serde_json::json!(["image", "predicted", "confidence", "file"])
    );
    let rows = table["data"].as_array().unwrap();
    // batch.csv's rows and the two PNGs, least confident first.
    assert!(rows.len() > 2, "{table}");
    assert_eq!(rows[0][0]["_type"], "image-file");
    let confidences: Vec<f64> = rows.iter().map(|r| r[2].as_f64().unwrap()).collect();
    assert!(
        confidences.windows(2).all(|w| w[0] <= w[1]),
        "{confidences:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[3].as_str().unwrap().ends_with("digit-9.png"))
    );
    let summary: Value =
        serde_json::from_str(&server.state().files["wandb-summary.json"][&0]).unwrap();
    assert_eq!(
        summary["inference/images"],
        rows.len()
            .max(summary["inference/images"].as_u64().unwrap() as usize)
    );
    assert_eq!(summary["inference/classes"]["_type"], "table-file");
}
