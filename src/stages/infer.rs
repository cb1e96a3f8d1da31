//! `mnist infer`: classify attribute files (CSV rows of pixels, or PNG images) and write one
//! inference CSV per input file: the pixels, then the predicted label; logged to W&B as an
//! inference run of the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::device::backend::{self, BackendChoice};
use crate::files::input_files;
use crate::files::output::AtomicFile;
use crate::formats::data::Images;
use crate::formats::model_dir::ModelDir;
use crate::formats::pixels_csv::{self, RowWriter};
use crate::formats::png_digit;
use crate::report::evaluate;
use crate::report::model_runs::{self, Inferred, RunPlace};
use crate::stop::Interrupted;

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// Model directory written by `mnist train`.
    #[arg(long)]
    pub model: PathBuf,
    /// A .csv or .png file, or a directory of them (searched recursively).
    #[arg(long)]
    pub input: PathBuf,
    /// Directory to write one inference CSV per input file to.
    #[arg(long)]
    pub output: PathBuf,
    /// Where to compute: a GPU through wgpu when present (auto), wgpu, or the CPU.
    #[arg(long, value_enum, default_value = "auto", env = "MNIST_BACKEND")]
    pub backend: BackendChoice,
    /// Add each prediction's class name (the model's, or its number) after the label, quoted.
    #[arg(long)]
    pub class_names: bool,
    /// Add the probability of every class, in label order, at the end of each row.
    #[arg(long)]
    pub probabilities: bool,
    /// File holding the W&B API key, for the inference run, when WANDB_API_KEY is not set
    /// [default: /secrets/wandb/key]. The model's `[wandb]` settings apply.
    #[arg(long, value_name = "FILE", env = "MNIST_WANDB_KEY_FILE")]
    pub wandb_key_file: Option<PathBuf>,
}

pub fn run(args: &InferArgs) -> Result<()> {
    let backend = backend::select(args.backend, None)?;
    let model = ModelDir::new(&args.model).load(&backend.device)?;
    let shape = model.card.input;
    let classes = model.card.classes();
    let inputs = input_files::find(&args.input, &["csv", "png"])?;

    // Read everything first: a bad input file fails the stage before any output is written.
    let mut outputs: Vec<(PathBuf, usize)> = Vec::with_capacity(inputs.len());
    let mut writers_of: HashMap<PathBuf, &Path> = HashMap::new();
    let mut images = Images::empty(shape);
    for path in &inputs {
        let read = if input_files::has_extension(path, "png") {
            png_digit::load(path, shape)?
        } else {
            pixels_csv::read_unlabelled(path, shape)?
        };
        let rows = read.count;
        images.append(read);
        let name = path.file_stem().unwrap_or_default();
        let out = args.output.join(name).with_extension("csv");
        if let Some(other) = writers_of.insert(out.clone(), path) {
            bail!(
                "{} and {} would both write {}",
                other.display(),
                path.display(),
                out.display()
            );
        }
        outputs.push((out, rows));
    }

    Interrupted::check(|| "nothing was written".into())?;
    let started = Instant::now();
    let predicted = evaluate::predict(
        &model.network,
        &images,
        &model.card.config.preprocess,
        &model.card.config.tta,
        &backend.device,
    )?;
    let seconds = started.elapsed().as_secs_f64();

    // The input file of each image, for the W&B run.
    let files: Vec<String> = inputs
        .iter()
        .zip(&outputs)
        .flat_map(|(path, (_, rows))| std::iter::repeat_n(path.display().to_string(), *rows))
        .collect();
    // The outputs go together or not at all.
    Interrupted::check(|| "nothing was written".into())?;
    // Outputs in input order: each input's rows are consecutive in `images`.
    let mut first = 0;
    for (out, rows) in outputs {
        let mut writer = RowWriter::new(AtomicFile::create(&out)?);
        for i in first..first + rows {
            let label = predicted.classes[i];
            let name = args.class_names.then(|| classes.name(label.into()));
            let probabilities = match args.probabilities {
                true => predicted.probabilities(i),
                false => &[],
            };
            writer.write_inference(images.image(i), label, name.as_deref(), probabilities)?;
        }
        writer.into_inner().commit()?;
        first += rows;
    }
    eprintln!(
        "classified {} images from {} files into {} in {seconds:.3}s ({:.0} images/s)",
        images.count,
        inputs.len(),
        args.output.display(),
        images.count as f64 / seconds.max(1e-9)
    );
    let inferred = Inferred {
        card: &model.card,
        images: &images,
        predicted: &predicted,
        files: &files,
    };
    let place = RunPlace {
        key_file: args.wandb_key_file.as_deref(),
        root: &args.output,
    };
    model_runs::log_inference(&inferred, &place)
}
