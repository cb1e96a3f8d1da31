//! A training run's W&B lifecycle in one type: started (or not, as the settings and the
//! environment say) before training, using the data as an artifact, fed every report while it
//! runs, finished with the exit code and, when the model was written, its files and the model
//! artifact, whose version then goes into the model card.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::artifacts;
use super::trainer::{Stopped, Trained};
use crate::device::backend::BackendInfo;
use crate::formats::config::TrainConfig;
use crate::formats::data::Splits;
use crate::formats::model_dir::{ArtifactLink, ModelDir};
use crate::pachyderm::Provenance;
use crate::report::metrics::MetricsSink;
use crate::report::wandb_sink::WandbSink;
use crate::stop;
use crate::wandb::{self, Content, NewRun, Role, RunIdentity};

/// The W&B run of one training, if there is one.
pub struct Tracking {
    sink: Option<WandbSink>,
    config: TrainConfig,
    config_path: PathBuf,
}

/// What the run is made of, besides the training config.
pub struct Inputs<'a> {
    pub config_path: &'a Path,
    /// The data directory; `None` for the built-in sample.
    pub data: Option<&'a Path>,
    pub splits: &'a Splits,
    pub backend: &'a BackendInfo,
    pub provenance: Option<&'a Provenance>,
    pub key_file: Option<&'a Path>,
    /// The W&B run of the checkpoint training resumes from.
    pub continues: Option<&'a RunIdentity>,
}

impl Tracking {
    pub fn start(config: &TrainConfig, inputs: &Inputs, model_dir: &ModelDir) -> Result<Self> {
        let Inputs {
            splits,
            backend,
            provenance,
            key_file,
            ..
        } = *inputs;
        let run_config = run_config(config, splits, backend, provenance)?;
        let trial = config.sweep.as_ref();
        let run = wandb::start(
            &config.wandb,
            key_file,
            &NewRun {
                job_type: "train",
                command: "train",
                config: &run_config,
                provenance,
                name: trial.map(|trial| trial.trial.as_str()),
                sweep_id: trial.and_then(|trial| trial.id.as_deref()),
                root: model_dir.path(),
                continues: inputs.continues,
            },
        )?;
        let mut sink = run.map(WandbSink::new);
        if let Some(sink) = &mut sink {
            let data = artifacts::dataset(inputs.data, splits, provenance)?;
            sink.log_artifact(data, Role::Input);
        }
        Ok(Self {
            sink,
            config: config.clone(),
            config_path: inputs.config_path.to_owned(),
        })
    }

    /// The run's page in W&B, once the server has created it.
    pub fn url(&self) -> Option<String> {
        self.sink.as_ref().and_then(WandbSink::url)
    }

    /// Where training reports to.
    pub fn sink(&mut self) -> &mut dyn MetricsSink {
        &mut self.sink
    }

    /// Ends the run with the outcome of training; when the model was written, uploads its
    /// files, logs it as an artifact and records the artifact's version in its card.
    pub fn finish(self, outcome: &Result<Trained>, model_dir: &ModelDir) -> Result<()> {
        let Some(mut sink) = self.sink else {
            return Ok(());
        };
        let (exit_code, files) = match outcome {
            Ok(trained) => {
                let files = model_files(model_dir, &self.config_path);
                sink.log_artifact(
                    artifacts::model(&self.config, trained, &files)?,
                    Role::Output,
                );
                let files = files
                    .into_iter()
                    .map(|(name, path)| (name, Content::File(path)));
                (0, files.collect())
            }
            Err(err) if err.is::<Stopped>() => (i32::from(Stopped::EXIT_CODE), Vec::new()),
            Err(err) => match err.downcast_ref::<stop::Interrupted>() {
                Some(interrupted) => (i32::from(interrupted.signal.exit_code()), Vec::new()),
                None => (1, Vec::new()),
            },
        };
        // A signal's sender waits for the process's end, Kubernetes 30 seconds at most.
        let deadline = match outcome {
            Err(err) if err.is::<stop::Interrupted>() => wandb::STOP_FLUSH,
            _ => wandb::FINAL_FLUSH,
        };
        let finishing = Instant::now();
        let report = sink.finish(exit_code, files, deadline);
        let waited = finishing.elapsed().as_secs_f64();
        if report.completed {
            eprintln!(
                "wandb: {}{} history rows and {} files delivered; the final flush took {waited:.1}s",
                report.url.map(|url| format!("{url}: ")).unwrap_or_default(),
                report.rows_sent,
                report.files_uploaded,
            );
        } else if report.offline.is_none() {
            eprintln!(
                "wandb: warning: the run was not delivered ({} history rows sent, {} not); waited {waited:.1}s",
                report.rows_sent, report.rows_unsent
            );
        }
        let logged = report.artifacts.iter().find(|v| v.kind == "model");
        if let (Ok(trained), Some(version)) = (outcome, logged) {
            let mut card = trained.card.clone();
            card.wandb_artifact = Some(ArtifactLink {
                name: version.path(),
                url: version.url(),
            });
            model_dir.write_card(&card)?;
        }
        Ok(())
    }
}

/// The run's config as W&B shows it: the training config's sections, what it ran on, and for a
/// sweep's trial the parameters it set at the top level, where W&B's sweep views look.
fn run_config(
    config: &TrainConfig,
    splits: &Splits,
    backend: &BackendInfo,
    provenance: Option<&Provenance>,
) -> Result<Map<String, Value>> {
    let Value::Object(mut map) = serde_json::to_value(config)? else {
        anyhow::bail!("the training config is not a JSON object");
    };
    map.remove("wandb");
    map.insert("backend".into(), serde_json::to_value(backend)?);
    map.insert(
        "dataset".into(),
        json!({
            "source": splits.source,
            "train": splits.train.len(),
            "test": splits.test.len(),
            "classes": splits.classes.count,
            "class_names": splits.classes.names,
        }),
    );
    if let Some(provenance) = provenance {
        map.insert("pachyderm".into(), serde_json::to_value(provenance)?);
    }
    if let Some(trial) = &config.sweep {
        map.extend(trial.parameters.clone());
    }
    Ok(map)
}

/// The model directory's files and the config, by their W&B names: what a finished run uploads
/// and the model artifact holds.
fn model_files(model_dir: &ModelDir, config: &Path) -> Vec<(String, PathBuf)> {
    let config_name = config.file_name().map_or("config.toml".into(), |name| {
        name.to_string_lossy().into_owned()
    });
    model_dir
        .files()
        .into_iter()
        .map(|(name, path)| (name.to_owned(), path))
        .chain([(config_name, config.to_owned())])
        .filter(|(_, path)| path.is_file())
        .collect()
}
