//! Stops and restarts: a signal mid-epoch stops training at the next step with a checkpoint,
//! the W&B run flushed and finished with the signal's exit code, and `--resume` continues the
//! same W&B run to the figures an uninterrupted run reaches; a killed run resumes from its last
//! checkpoint; a corrupt latest checkpoint is skipped; names that would become bad paths and a
//! rejected key are reported.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fake_wandb::{FakeWandb, Fault};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const KEY: &str = "local-0123456789abcdef0123456789abcdef01234567";
/// 900 steps an epoch on the sample, each quick: a signal lands mid-epoch.
const SMALL_BATCHES: [&str; 4] = ["--batch-size", "4", "--epochs", "2"];

/// `mnist train` of the smoke config into `out/model`, W&B at `server` (online with `KEY`, unless
/// `env` says otherwise).
fn training(server: &str, out: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = mnist();
    cmd.env("WANDB_MODE", "online")
        .env("WANDB_BASE_URL", server)
        .env("WANDB_API_KEY", KEY)
        .env("HOME", out)
        .args(["train", "--backend", "cpu", "--threads", "2"])
        .args(args)
        .arg("--config")
        .arg(config("smoke.toml"))
        .arg("--output")
        .arg(out.join("model"));
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd
}

/// Runs `cmd` until a line of its log starts with `when`, then sends it `signal`; returns its
/// output.
fn signalled(mut cmd: Command, when: &str, signal: i32) -> Output {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("mnist starts");
    let mut log = String::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.starts_with(when) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            break;
        }
        line.clear();
    }
    let sent = Instant::now();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    log.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "it took {:?} to stop:\n{log}",
        sent.elapsed()
    );
    Output {
        status,
        stdout: Vec::new(),
        stderr: log.into_bytes(),
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The figures of a finished model: its test figures exactly, and its curves but for timings.
fn figures(model: &Path) -> (Value, Vec<(Value, Value, Value)>) {
    let card = json(&model.join("model.json"));
    let curves = json(&model.join("metrics.json"));
    let epochs = curves["epochs"].as_array().unwrap();
    let per_epoch = epochs
        .iter()
        .map(|e| {
            (
                e["train_loss"].clone(),
                e["validation_loss"].clone(),
                e["validation_accuracy"].clone(),
            )
        })
        .collect();
    (card["metrics"].clone(), per_epoch)
}

/// History rows without the figures that depend on the clock.
fn untimed(rows: &[Value]) -> Vec<Value> {
    let clock = [
        "_runtime",
        "_timestamp",
        "train/samples_per_second",
        "epoch/seconds",
        "epoch/samples_per_second",
    ];
    (rows.iter())
        .map(|row| {
            let mut row = row.clone();
            if let Some(row) = row.as_object_mut() {
                row.retain(|key, _| !clock.contains(&key.as_str()));
            }
            row
        })
        .collect()
}

/// The figures the same training reaches uninterrupted.
fn uninterrupted(args: &[&str]) -> (Value, Vec<(Value, Value, Value)>) {
    let out = tempfile::tempdir().unwrap();
    succeeds(&mut training(
        "http://127.0.0.1:9",
        out.path(),
        &[("WANDB_MODE", "disabled")],
        args,
    ));
    figures(&out.path().join("model"))
}

/// Every history row once, steps contiguous, and training steps only ever increasing.
fn assert_one_history(server: &FakeWandb) {
    let history = server.lines("wandb-history.jsonl");
    for (i, row) in history.iter().enumerate() {
        assert_eq!(row["_step"], i, "history row {i}: {row}");
    }
    let steps: Vec<u64> = history
        .iter()
        .filter_map(|r| r.get("trainer/step").and_then(Value::as_u64))
        .collect();
    assert!(
        steps.windows(2).all(|pair| pair[0] < pair[1]),
        "training steps logged twice or out of order: {steps:?}"
    );
    let state = server.state();
    assert!(state.gaps.is_empty(), "lost lines: {:?}", state.gaps);
    assert!(
        state.conflicts.is_empty(),
        "conflicts: {:?}",
        state.conflicts
    );
    let names: Vec<&Value> = state.upserts.iter().map(|u| &u["name"]).collect();
    assert!(
        names.windows(2).all(|pair| pair[0] == pair[1]),
        "runs: {names:?}"
    );
}

#[test]
fn a_signal_stops_at_the_next_step_and_resume_continues_the_same_run() {
    let expected = uninterrupted(&SMALL_BATCHES);
    for (signal, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let server = FakeWandb::start(&[]);
        let out = tempfile::tempdir().unwrap();
        let model = out.path().join("model");
        let stopped = signalled(
            training(&server.url, out.path(), &[], &SMALL_BATCHES),
            "epoch 1 step 100/",
            signal,
        );
        let log = stderr(&stopped);
        assert_eq!(stopped.status.code().map(i64::from), Some(code), "{log}");
        assert!(
            log.contains(&format!(
                "stopped by {name}: the checkpoint of epoch 1, batch"
            )),
            "{log}"
        );
        assert!(
            log.contains("continue with: ") && log.contains(" --resume"),
            "{log}"
        );
        assert!(
            !model.join("model.json").exists(),
            "a stopped training wrote a model"
        );
        assert_eq!(server.state().completions, [code]);
        let rows = server.lines("wandb-history.jsonl").len();
        assert!(rows > 0, "{log}");

        let resumed = succeeds(&mut training(
            &server.url,
            out.path(),
            &[],
            &[&SMALL_BATCHES[..], &["--resume"]].concat(),
        ));
        let log = stderr(&resumed);
        assert!(log.contains("resuming after epoch 1, batch"), "{log}");
        assert!(
            log.contains(&format!("from step {rows}")),
            "the run goes on after its {rows} rows:\n{log}"
        );
        assert_eq!(server.state().completions, [code, 0]);
        assert_one_history(&server);
        assert_eq!(figures(&model), expected, "{name}");
    }
}

#[test]
fn a_killed_training_resumes_from_its_last_checkpoint_without_logging_a_step_twice() {
    // A checkpoint every 6 ms: several are written before the kill, however fast the machine.
    let args = [&SMALL_BATCHES[..], &["--checkpoint-every", "0.0001"]].concat();
    let expected = uninterrupted(&args);
    let server = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let killed = signalled(
        training(&server.url, out.path(), &[], &args),
        "epoch 1 step 600/",
        libc::SIGKILL,
    );
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    let resumed = succeeds(&mut training(
        &server.url,
        out.path(),
        &[],
        &[&args[..], &["--resume"]].concat(),
    ));
    let log = stderr(&resumed);
    assert!(log.contains("resuming after epoch 1, batch"), "{log}");
    assert_one_history(&server);
    assert_eq!(figures(&out.path().join("model")), expected);
}

#[test]
fn killed_at_twenty_moments_and_resumed_the_run_logs_every_row_once() {
    // 4 epochs of 57 steps, a row every 20 steps, a checkpoint every 6 ms; one run id as a
    // retried job has it, so that a run killed before its first checkpoint continues too.
    let args = ["--epochs", "4", "--checkpoint-every", "0.0001"];
    let env = [("WANDB_RUN_ID", "killed1"), ("WANDB_RESUME", "allow")];
    let expected = uninterrupted(&args);
    let clean = FakeWandb::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    succeeds(&mut training(&clean.url, out.path(), &env, &args));
    let whole = started.elapsed();
    let rows = clean.lines("wandb-history.jsonl");
    let mut rng = StdRng::seed_from_u64(29);
    let mut from_checkpoints = 0;
    for trial in 0..20 {
        let server = FakeWandb::start(&[]);
        let out = tempfile::tempdir().unwrap();
        let moment = whole.mul_f64(rng.random_range(0.05..1.0));
        let mut child = training(&server.url, out.path(), &env, &args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(moment);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let resumed = training(
            &server.url,
            out.path(),
            &env,
            &[&args[..], &["--resume"]].concat(),
        )
        .output()
        .unwrap();
        let log = stderr(&resumed);
        let at = format!("trial {trial}, killed after {moment:?}");
        assert!(resumed.status.success(), "{at}:\n{log}");
        from_checkpoints += usize::from(log.contains("resuming after"));
        assert_one_history(&server);
        let history = server.lines("wandb-history.jsonl");
        let epochs: Vec<&Value> = (history.iter())
            .filter(|row| row.get("epoch/train_loss").is_some())
            .map(|row| &row["trainer/epoch"])
            .collect();
        assert_eq!(epochs, [1, 2, 3, 4], "{at}:\n{log}");
        // The same rows as the run that was not killed, but for timings.
        assert_eq!(untimed(&history), untimed(&rows), "{at}:\n{log}");
        assert_eq!(server.state().completions.last(), Some(&0), "{at}");
        assert_eq!(figures(&out.path().join("model")), expected, "{at}");
    }
    // Enough moments fall after the first checkpoint for resumes from one to be tried.
    eprintln!("{from_checkpoints} of 20 trials resumed from a checkpoint");
    assert!(
        from_checkpoints >= 5,
        "{from_checkpoints} of 20 resumed from a checkpoint"
    );
}

#[test]
fn a_corrupt_latest_checkpoint_is_skipped_for_the_one_before() {
    let out = tempfile::tempdir().unwrap();
    let offline = [("WANDB_MODE", "disabled")];
    succeeds(&mut training(
        "http://127.0.0.1:9",
        out.path(),
        &offline,
        &["--epochs", "2"],
    ));
    let checkpoints = out.path().join("model/checkpoints");
    assert_eq!(listing(&checkpoints), ["step-000000057", "step-000000114"]);
    std::fs::write(checkpoints.join("step-000000114/model.bpk"), b"not weights").unwrap();
    let resumed = succeeds(&mut training(
        "http://127.0.0.1:9",
        out.path(),
        &offline,
        &["--epochs", "3", "--resume"],
    ));
    let log = stderr(&resumed);
    assert!(
        log.contains(&format!(
            "warning: skipping checkpoint {}",
            checkpoints.join("step-000000114").display()
        )),
        "{log}"
    );
    assert!(log.contains("resuming after epoch 1 ("), "{log}");
    assert_eq!(
        json(&out.path().join("model/model.json"))["training"]["epochs"],
        3
    );
}

#[test]
fn names_that_would_become_bad_paths_are_refused() {
    for (variable, value) in [
        ("WANDB_RUN_ID", "../../x"),
        ("WANDB_RUN_ID", "a/b"),
        ("WANDB_PROJECT", "team,x"),
        ("WANDB_ENTITY", "a:b"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let wandb_dir = out.path().join("wandb-dir");
        let err = fails(&mut training(
            "http://127.0.0.1:9",
            out.path(),
            &[
                ("WANDB_MODE", "offline"),
                ("WANDB_DIR", wandb_dir.to_str().unwrap()),
                (variable, value),
            ],
            &["--epochs", "1"],
        ));
        assert!(
            err.contains(&format!("{value:?} is not a valid W&B name")),
            "{err}"
        );
        assert_eq!(
            listing(out.path()),
            Vec::<String>::new(),
            "{variable}={value} wrote files"
        );
    }
}

#[test]
fn a_rejected_key_says_so_and_where_it_came_from() {
    let server = FakeWandb::start(&[Fault::Status(401)]);
    let out = tempfile::tempdir().unwrap();
    let output = succeeds(&mut training(
        &server.url,
        out.path(),
        &[],
        &["--epochs", "1"],
    ));
    let log = stderr(&output);
    assert!(
        log.contains("HTTP 401: W&B rejected the API key from WANDB_API_KEY"),
        "{log}"
    );
    assert!(log.contains("wandb: the run is kept offline in "), "{log}");
    assert!(!log.contains(KEY), "the key leaked into the log");
}

/// The offline run directories written under `root`, oldest first.
fn offline_runs(root: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    runs.sort();
    runs
}

#[test]
fn an_offline_run_stopped_and_resumed_syncs_as_one_run() {
    let out = tempfile::tempdir().unwrap();
    let offline = [("WANDB_MODE", "offline")];
    let stopped = signalled(
        training("http://127.0.0.1:9", out.path(), &offline, &SMALL_BATCHES),
        "epoch 1 step 100/",
        libc::SIGTERM,
    );
    assert_eq!(stopped.status.code(), Some(143), "{}", stderr(&stopped));
    let resumed = succeeds(&mut training(
        "http://127.0.0.1:9",
        out.path(),
        &offline,
        &[&SMALL_BATCHES[..], &["--resume"]].concat(),
    ));
    // One offline run, the stopped part taken in: `wandb sync` uploads it as one run.
    let runs = offline_runs(&out.path().join("model/wandb"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    let log = stderr(&resumed);
    assert!(log.contains("rows of its earlier part"), "{log}");
    assert!(
        log.contains(&format!("upload it with: wandb sync {}", runs[0].display())),
        "{log}"
    );

    let server = FakeWandb::start(&[]);
    wandb_sync(&[&runs[0]], &server.url, out.path(), KEY);
    assert_one_history(&server);
    assert_eq!(server.state().completions, [0]);
    let history = server.lines("wandb-history.jsonl");
    assert!(history.last().unwrap()["test/accuracy"].as_f64().unwrap() > 0.5);
}

#[test]
fn an_offline_run_killed_and_resumed_syncs_every_epoch_once() {
    let out = tempfile::tempdir().unwrap();
    let offline = [("WANDB_MODE", "offline")];
    let args = [&SMALL_BATCHES[..], &["--checkpoint-every", "0.0001"]].concat();
    let killed = signalled(
        training("http://127.0.0.1:9", out.path(), &offline, &args),
        "epoch 2 step 1000/",
        libc::SIGKILL,
    );
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    // A killed offline run leaves no part of its own: the resumed part is the whole run.
    assert!(!out.path().join("model/wandb").exists());
    let resumed = succeeds(&mut training(
        "http://127.0.0.1:9",
        out.path(),
        &offline,
        &[&args[..], &["--resume"]].concat(),
    ));
    assert!(stderr(&resumed).contains("resuming after epoch 2, batch"));
    let runs = offline_runs(&out.path().join("model/wandb"));
    assert_eq!(runs.len(), 1, "{runs:?}");

    let server = FakeWandb::start(&[]);
    wandb_sync(&[&runs[0]], &server.url, out.path(), KEY);
    assert_one_history(&server);
    let history = server.lines("wandb-history.jsonl");
    let epochs: Vec<&Value> = (history.iter())
        .filter(|row| row.get("epoch/train_loss").is_some())
        .map(|row| &row["trainer/epoch"])
        .collect();
    assert_eq!(epochs, [1, 2]);
    let steps: Vec<u64> = (history.iter())
        .filter_map(|row| row.get("trainer/step").and_then(Value::as_u64))
        .collect();
    // Every report, the killed part's too: one every 20 steps and at each epoch's end.
    assert_eq!(steps.len(), 2 * 45, "{steps:?}");
}

/// Trains online under run id `id` until its first checkpoint has been logged to W&B, kills
/// it, and returns the server and the arguments; the local checkpoints go with the node.
fn killed_after_its_first_checkpoint_artifact(id: &str) -> (FakeWandb, [(&str, &str); 2]) {
    let server = FakeWandb::start(&[]);
    let env = [("WANDB_RUN_ID", id), ("WANDB_RESUME", "allow")];
    let node = tempfile::tempdir().unwrap();
    let killed = signalled(
        training(&server.url, node.path(), &env, &SMALL_BATCHES),
        "wandb: checkpoint ",
        libc::SIGKILL,
    );
    let log = stderr(&killed);
    assert!(
        log.contains(&format!("wandb: checkpoint checkpoint-{id}:v0")),
        "{log}"
    );
    (server, env)
}

#[test]
fn a_run_resumed_on_another_node_continues_from_its_checkpoint_artifact() {
    let expected = uninterrupted(&SMALL_BATCHES);
    let (server, env) = killed_after_its_first_checkpoint_artifact("moved01");
    // The newest checkpoint committed is `latest`: the first epoch's, unless the kill came late.
    let latest = (server.state().artifacts.iter())
        .filter(|a| a.input["artifactTypeName"] == "checkpoint")
        .find(|a| a.aliases.contains(&"latest".to_owned()))
        .cloned()
        .unwrap();
    assert!(latest.committed);
    assert_eq!(latest.collection(), "checkpoint-moved01");
    let epochs = latest.metadata()["step"].as_u64().unwrap() / 900;
    assert!(epochs >= 1, "{}", latest.metadata());
    // And a newer one whose upload the kill cut short, created but never committed, as a kill
    // during the next upload leaves it: it has no files to resume from.
    let mut cut_short = latest.input.clone();
    cut_short["digest"] = "cut short".into();
    let pending = server.state().create_artifact(cut_short);
    assert!(!server.state().artifacts[pending].committed);

    let other = tempfile::tempdir().unwrap();
    let resumed = succeeds(&mut training(
        &server.url,
        other.path(),
        &env,
        &[&SMALL_BATCHES[..], &["--resume"]].concat(),
    ));
    let log = stderr(&resumed);
    let fetched = format!(
        "fetched checkpoint checkpoint-moved01:v{} from W&B into ",
        latest.version
    );
    assert!(log.contains(&fetched), "{log}");
    assert_eq!(log.matches("wandb: API key from ").count(), 1, "{log}");
    assert!(
        log.contains(&format!("resuming after epoch {epochs} (")),
        "{log}"
    );
    let model = other.path().join("model");
    assert_eq!(
        json(&model.join("model.json"))["training"]["resumed_from_epoch"],
        epochs
    );
    assert_eq!(figures(&model), expected);
    assert_one_history(&server);
    let downloads = server.state().downloads.clone();
    assert!(
        downloads.iter().any(|path| path.ends_with("/state.json")),
        "{downloads:?}"
    );
}

#[test]
fn a_checkpoint_artifact_that_downloads_corrupt_is_never_loaded() {
    let expected = uninterrupted(&SMALL_BATCHES);
    let (server, env) = killed_after_its_first_checkpoint_artifact("broken01");
    server.state().corrupt_downloads = true;
    let other = tempfile::tempdir().unwrap();
    let resumed = succeeds(&mut training(
        &server.url,
        other.path(),
        &env,
        &[&SMALL_BATCHES[..], &["--resume"]].concat(),
    ));
    let log = stderr(&resumed);
    assert!(log.contains("warning: no checkpoint from W&B: "), "{log}");
    assert!(log.contains("downloaded, the manifest says"), "{log}");
    assert!(log.contains("or in W&B: starting afresh"), "{log}");
    let model = other.path().join("model");
    assert!(json(&model.join("model.json"))["training"]["resumed_from_epoch"].is_null());
    // Afresh with the same seed: the same figures, and no row of the first part twice.
    assert_eq!(figures(&model), expected);
    assert_one_history(&server);
}
