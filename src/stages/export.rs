//! `mnist export`: a trained model for other runtimes. `model.onnx` for ONNX Runtime and
//! TensorRT; `model.safetensors` with `model.py`, the PyTorch module that loads it. Both read
//! raw pixels 0..255 and apply the model's preprocessing themselves.

use std::path::PathBuf;

use anyhow::Result;

use crate::device::backend::{self, BackendChoice};
use crate::formats::exports::{self, ExportFormat};
use crate::formats::model_dir::ModelDir;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Model directory written by `mnist train`.
    #[arg(long)]
    pub model: PathBuf,
    /// What to write: onnx (model.onnx), safetensors (model.safetensors and model.py), or all.
    #[arg(long, value_enum, default_value = "all")]
    pub format: FormatChoice,
    /// Directory to write the files to (created when missing) [default: the model directory].
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatChoice {
    Onnx,
    Safetensors,
    All,
}

impl FormatChoice {
    fn formats(self) -> &'static [ExportFormat] {
        match self {
            Self::Onnx => &[ExportFormat::Onnx],
            Self::Safetensors => &[ExportFormat::Safetensors],
            Self::All => &ExportFormat::ALL,
        }
    }
}

pub fn run(args: &ExportArgs) -> Result<()> {
    // The weights are read off the device whole: the CPU holds them where they are needed.
    let backend = backend::select(BackendChoice::Cpu, None)?;
    let model = ModelDir::new(&args.model).load(&backend.device)?;
    let output = args.output.as_ref().unwrap_or(&args.model);
    let about = model.card.about();
    let written = exports::write(&model.network, &about, args.format.formats(), output)?;
    for path in written {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        eprintln!("wrote {} ({bytes} bytes)", path.display());
    }
    Ok(())
}
