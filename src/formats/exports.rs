//! A trained model in other runtimes' formats: `model.onnx` for ONNX Runtime and TensorRT;
//! `model.safetensors` with `model.py`, the PyTorch module whose `state_dict` it is. Each reads
//! raw pixels 0..255 and applies the model's preprocessing itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use model::export::{self, Plan};
use model::{InputShape, Network, Preprocess, Views};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::files::output;

/// A format a model exports to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// `model.onnx`: opset 13, outputs `logits` and `probabilities`.
    Onnx,
    /// `model.safetensors` and `model.py`, the PyTorch module that loads it.
    Safetensors,
}

impl ExportFormat {
    pub const ALL: [Self; 2] = [Self::Onnx, Self::Safetensors];
    pub const ONNX_FILE: &str = "model.onnx";
    pub const SAFETENSORS_FILE: &str = "model.safetensors";
    pub const PYTORCH_FILE: &str = "model.py";

    /// The files it writes, by name.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            Self::Onnx => &[Self::ONNX_FILE],
            Self::Safetensors => &[Self::SAFETENSORS_FILE, Self::PYTORCH_FILE],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Onnx => "onnx",
            Self::Safetensors => "safetensors",
        }
    }
}

/// `[export]`: the formats training writes into the model directory beside `model.bpk`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    #[serde(default)]
    pub formats: Vec<ExportFormat>,
}

impl ExportConfig {
    pub fn is_empty(&self) -> bool {
        self.formats.is_empty()
    }
}

/// What the exports of a model say of it (from its card).
#[derive(Debug, Clone)]
pub struct About<'a> {
    pub summary: &'a str,
    pub input: InputShape,
    /// Every class's name (its number where it has none), in label order.
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    /// The views whose logits the model averages (test-time augmentation).
    pub views: Views,
    pub test_accuracy: f64,
    /// The version of `mnist` that trained it.
    pub trained_by: &'a str,
    pub wandb_run: Option<&'a str>,
}

/// Writes `network`, which `about` describes, in `formats` into `dir`: every file or, when one
/// fails, none. Returns the files written.
pub fn write(
    network: &Network,
    about: &About,
    formats: &[ExportFormat],
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let plan =
        Plan::of(network, about.input, about.classes.len()).context("exporting the model")?;
    let metadata = metadata(about);
    let mut contents: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for format in formats {
        match format {
            ExportFormat::Onnx => {
                let mut props = metadata.clone();
                props.push(("outputs".into(), ONNX_OUTPUTS.into()));
                let bytes = export::onnx(
                    &plan,
                    &about.preprocess,
                    &about.views,
                    about.summary,
                    &props,
                );
                contents.push((ExportFormat::ONNX_FILE, bytes));
            }
            ExportFormat::Safetensors => {
                let header: BTreeMap<String, String> = metadata.iter().cloned().collect();
                let bytes = export::safetensors(&plan, &header).context("exporting the model")?;
                contents.push((ExportFormat::SAFETENSORS_FILE, bytes));
                let source = export::pytorch_module(
                    &plan,
                    &about.preprocess,
                    &about.views,
                    about.summary,
                    &about.classes,
                );
                contents.push((ExportFormat::PYTORCH_FILE, source.into_bytes()));
            }
        }
    }
    let files: Vec<(PathBuf, Vec<u8>)> = (contents.into_iter())
        .map(|(name, bytes)| (dir.join(name), bytes))
        .collect();
    output::write_files(&files)?;
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

const ONNX_OUTPUTS: &str = "logits and probabilities (their softmax), float32 [batch, classes]";

/// What every export says of itself: the network, its input contract and its classes.
fn metadata(about: &About) -> Vec<(String, String)> {
    let classes = serde_json::to_string(&about.classes).unwrap_or_default();
    let preprocess = serde_json::to_string(&about.preprocess).unwrap_or_default();
    let mut props = vec![
        ("summary".to_owned(), about.summary.to_owned()),
        ("input".to_owned(), export::INPUT_DOC.to_owned()),
        ("preprocess".to_owned(), preprocess),
        ("classes".to_owned(), classes),
        ("test_accuracy".to_owned(), about.test_accuracy.to_string()),
        ("mnist_version".to_owned(), about.trained_by.to_owned()),
    ];
    if !about.views.is_single() {
        let views = serde_json::to_string(&about.views).unwrap_or_default();
        props.push(("tta".to_owned(), views));
    }
    if let Some(run) = about.wandb_run {
        props.push(("wandb_run".to_owned(), run.to_owned()));
    }
    props
}

/// The W&B model artifact's account of the exports in it: per format, its files, the input
/// shape and scaling, the outputs, and for ONNX the opset.
pub fn describe(about: &About, formats: &[ExportFormat]) -> Value {
    let InputShape { height, width } = about.input;
    let formats: serde_json::Map<String, Value> = formats
        .iter()
        .map(|&format| {
            let mut described = json!({
                "files": format.files(),
                "input": export::INPUT,
                "input_shape": ["batch", 1, height, width],
                "input_scaling": "raw pixels 0..255; the model applies its preprocessing",
                "preprocess": about.preprocess,
            });
            if !about.views.is_single() {
                described["tta"] = json!(about.views);
            }
            if format == ExportFormat::Onnx {
                described["opset"] = json!(export::OPSET);
                described["outputs"] = json!([export::LOGITS, export::PROBABILITIES]);
            } else {
                described["outputs"] = json!(["logits"]);
            }
            (format.name().to_owned(), described)
        })
        .collect();
    Value::Object(formats)
}
