//! What a training run logs to W&B as artifacts: the data it read, by reference (each file's
//! URI and checksum, never its bytes), and the model it wrote, with the figures that decide
//! which version is `best` and the Pachyderm commits it came from.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::trainer::Trained;
use crate::formats::config::TrainConfig;
use crate::formats::data::Splits;
use crate::formats::dataset::{self, sample};
use crate::formats::exports;
use crate::pachyderm::Provenance;
use crate::wandb::{Artifact, Entry, artifact_name};

/// The metadata figure versions of a model are ranked by for the alias `best`.
pub const BEST_BY: &str = "val_accuracy";

/// The training data as a `dataset` artifact of references: `pfs://<input>@<commit>/<path>`
/// for a Pachyderm input, `file://<path>` for a local directory, and the built-in sample by
/// its name.
pub fn dataset(
    data: Option<&Path>,
    splits: &Splits,
    provenance: Option<&Provenance>,
) -> Result<Artifact> {
    let mut metadata = json!({
        "source": splits.source,
        "train": splits.train.len(),
        "test": splits.test.len(),
        "height": splits.train.images.shape.height,
        "width": splits.train.images.shape.width,
    });
    let Some(dir) = data else {
        let mut artifact = Artifact::new(sample_name(), "dataset");
        for (name, bytes) in sample::FILES {
            let uri = format!("builtin://mnist/{}/{name}", sample::DIR);
            artifact
                .entries
                .insert(name.to_owned(), Entry::reference(uri, bytes));
        }
        artifact.metadata = object(metadata);
        return Ok(artifact);
    };
    let dir = std::path::absolute(dir).with_context(|| dir.display().to_string())?;
    let mount = |input: &str| std::env::var_os(input).map(PathBuf::from);
    let pachyderm = provenance.and_then(|p| pfs_input(&dir, p, mount));
    let name = match &pachyderm {
        Some((input, _, _)) => input.clone(),
        None => dir
            .file_name()
            .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned()),
    };
    let mut artifact = Artifact::new(artifact_name(&name), "dataset");
    for path in dataset::files(&dir)? {
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let relative = path.strip_prefix(&dir).unwrap_or(&path);
        let relative = relative.to_string_lossy().into_owned();
        let uri = match &pachyderm {
            Some((input, commit, root)) => {
                let in_repo = path.strip_prefix(root).unwrap_or(&path);
                format!("pfs://{input}@{commit}/{}", in_repo.to_string_lossy())
            }
            None => format!("file://{}", path.display()),
        };
        artifact
            .entries
            .insert(relative, Entry::reference(uri, &bytes));
    }
    if let Some((input, commit, _)) = &pachyderm {
        metadata["pachyderm"] = json!({"input": input, "commit": commit});
    }
    artifact.metadata = object(metadata);
    Ok(artifact)
}

/// The model's `files` (the model directory and the config, by name) as a `model` artifact,
/// claiming `best` when its validation accuracy beats every earlier version's.
pub fn model(
    config: &TrainConfig,
    trained: &Trained,
    files: &[(String, PathBuf)],
) -> Result<Artifact> {
    let card = &trained.card;
    let mut artifact = Artifact::new(config.model_artifact(), "model");
    for (name, path) in files {
        let entry = Entry::file(path).with_context(|| path.display().to_string())?;
        artifact.entries.insert(name.clone(), entry);
    }
    let best_validation = trained
        .curves
        .epochs
        .iter()
        .filter_map(|epoch| epoch.validation_accuracy)
        .reduce(f64::max);
    let mut metadata = json!({
        "architecture": card.summary,
        "parameters": card.parameters,
        "input": card.input,
        "classes": card.classes,
        "class_names": card.class_names,
        "epochs": card.training.epochs,
        BEST_BY: best_validation,
        "test_accuracy": card.metrics.test_accuracy,
        "test_loss": card.metrics.test_loss,
        "dataset": card.dataset,
        "wandb_run": card.wandb_run,
        "crate_version": card.crate_version,
    });
    if let Some(provenance) = &card.provenance {
        metadata["pachyderm"] = serde_json::to_value(provenance)?;
    }
    if !config.export.is_empty() {
        metadata["exports"] = exports::describe(&card.about(), &config.export.formats);
    }
    artifact.metadata = object(metadata);
    artifact.best_by = Some(BEST_BY.into());
    Ok(artifact)
}

/// The Pachyderm input `dir` lies in, its commit and where it is mounted: Pachyderm names
/// each input's mount in a variable of the input's name (`mount`), `/pfs/<input>` by default.
fn pfs_input(
    dir: &Path,
    provenance: &Provenance,
    mount: impl Fn(&str) -> Option<PathBuf>,
) -> Option<(String, String, PathBuf)> {
    provenance.input_commits.iter().find_map(|(input, commit)| {
        let root = mount(input).unwrap_or_else(|| Path::new("/pfs").join(input));
        dir.starts_with(&root)
            .then(|| (input.clone(), commit.clone(), root))
    })
}

fn sample_name() -> String {
    let dir = Path::new(sample::DIR).file_name();
    artifact_name(&dir.map_or_else(|| "mnist-sample".into(), |n| n.to_string_lossy()))
}

/// Drops the null figures (no validation split, no W&B run) from the metadata.
fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pachyderm_inputs_are_named_by_commit() {
        let provenance = Provenance {
            input_commits: [("parse".to_string(), "abc123".to_string())].into(),
            ..Provenance::default()
        };
        let default = |_: &str| None;
        let (input, commit, root) =
            pfs_input(Path::new("/pfs/parse/out"), &provenance, default).unwrap();
        assert_eq!((input.as_str(), commit.as_str()), ("parse", "abc123"));
        assert_eq!(root, Path::new("/pfs/parse"));
        assert!(pfs_input(Path::new("/data/parse"), &provenance, default).is_none());
        let mounted = |_: &str| Some(PathBuf::from("/mnt/parse"));
        assert!(pfs_input(Path::new("/mnt/parse/x"), &provenance, mounted).is_some());
        assert_eq!(artifact_name("fashion mnist/x"), "fashion-mnist-x");
    }
}
