//! A training run's W&B lifecycle in one type: started (or not, as the settings and the
//! environment say) before training, fed every report while it runs, finished with the exit
//! code and, when the model was written, its files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::trainer::{Stopped, Trained};
use crate::backend::BackendInfo;
use crate::config::TrainConfig;
use crate::data::Splits;
use crate::metrics::MetricsSink;
use crate::model_dir::ModelDir;
use crate::pachyderm::Provenance;
use crate::wandb::{self, NewRun, WandbSink};

/// The W&B run of one training, if there is one.
pub struct Tracking {
    sink: Option<WandbSink>,
}

impl Tracking {
    pub fn start(
        config: &TrainConfig,
        splits: &Splits,
        backend: &BackendInfo,
        provenance: Option<&Provenance>,
        key_file: Option<&Path>,
        model_dir: &ModelDir,
    ) -> Result<Self> {
        let run_config = run_config(config, splits, backend, provenance)?;
        let trial = config.sweep.as_ref();
        let run = wandb::start(
            &config.wandb,
            key_file,
            &NewRun {
                config: &run_config,
                provenance,
                name: trial.map(|trial| trial.trial.as_str()),
                sweep_id: trial.and_then(|trial| trial.id.as_deref()),
                root: model_dir.path(),
            },
        )?;
        Ok(Self {
            sink: run.map(WandbSink::new),
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

    /// Ends the run with the outcome of training; uploads the model's files if it was written.
    pub fn finish(self, outcome: &Result<Trained>, model_dir: &ModelDir, config: &Path) {
        let Some(sink) = self.sink else {
            return;
        };
        let (exit_code, files) = match outcome {
            Ok(_) => (0, run_files(model_dir, config)),
            Err(err) if err.is::<Stopped>() => (i32::from(Stopped::EXIT_CODE), Vec::new()),
            Err(_) => (1, Vec::new()),
        };
        let finishing = Instant::now();
        let report = sink.finish(exit_code, files, wandb::FINAL_FLUSH);
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

/// What a finished run uploads, by its W&B names: the model directory and the config.
fn run_files(model_dir: &ModelDir, config: &Path) -> Vec<(String, PathBuf)> {
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
