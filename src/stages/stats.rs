//! `mnist stats`: what a trained model is made of (parameter statistics per layer) and, with
//! labelled data, how well it does per class, logged to W&B as an evaluation of the model.

use std::path::PathBuf;

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::Serialize;

use crate::device::backend::{self, BackendChoice};
use crate::formats::model_dir::ModelDir;
use crate::formats::{classes, dataset};
use crate::report::evaluate::{ClassFigures, ClassStats, DeviceData};
use crate::report::model_runs::{self, Evaluated, RunPlace};
use crate::stop::Interrupted;
use crate::{files::output, report::plots};

/// Weights closer to zero than this count as near-zero.
const NEAR_ZERO: f64 = 1e-3;

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Model directory written by `mnist train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled data (test.csv, or the IDX files) to measure accuracy on; its test part is used.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Directory to write stats.json to.
    #[arg(long)]
    pub output: PathBuf,
    /// Where to compute: a GPU through wgpu when present (auto), wgpu, or the CPU.
    #[arg(long, value_enum, default_value = "auto", env = "MNIST_BACKEND")]
    pub backend: BackendChoice,
    /// File holding the W&B API key, for the eval run that `--data` logs, when WANDB_API_KEY
    /// is not set [default: /secrets/wandb/key]. The model's `[wandb]` settings apply.
    #[arg(long, value_name = "FILE", env = "MNIST_WANDB_KEY_FILE")]
    pub wandb_key_file: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub model: String,
    pub parameters: usize,
    pub layers: Vec<LayerStats>,
    pub evaluation: Option<ClassStats>,
}

#[derive(Debug, Serialize)]
pub struct LayerStats {
    pub name: String,
    pub shape: Vec<usize>,
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub l2_norm: f64,
    pub near_zero_share: f64,
}

pub fn run(args: &StatsArgs) -> Result<()> {
    let backend = backend::select(args.backend, None)?;
    let model_dir = ModelDir::new(&args.model);
    let model = model_dir.load(&backend.device)?;
    let curves = model_dir.curves()?;
    let classes = model.card.classes();
    let (evaluated, evaluation) = match &args.data {
        Some(dir) => {
            let test = dataset::load_test(dir, &classes)?;
            Interrupted::check(|| "nothing was written".into())?;
            let eval = DeviceData::new(&test, &model.card.config.preprocess, &backend.device)
                .evaluate(
                    &model.network,
                    model.card.config.training.loss,
                    &model.card.config.tta,
                )?;
            let figures = ClassStats::of(dir.display().to_string(), &classes, &test.labels, &eval);
            (Some((test, eval)), Some(figures))
        }
        None => (None, None),
    };
    let stats = Stats {
        model: model.card.summary.clone(),
        parameters: model.network.num_params(),
        layers: layer_stats(&model.network)?,
        evaluation,
    };
    // The outputs go together or not at all.
    Interrupted::check(|| "nothing was written".into())?;
    output::write_json(&args.output.join("stats.json"), &stats)?;
    if let Some(eval) = &stats.evaluation {
        let title = format!(
            "{}: {:.2}% of {} images",
            stats.model,
            100.0 * eval.accuracy,
            eval.examples
        );
        plots::confusion(
            &eval.confusion,
            &classes.all_names(),
            &title,
            &args.output.join("confusion.png"),
        )?;
    }
    plots::curves(
        &curves.epochs,
        &stats.model,
        &args.output.join("curves.png"),
    )?;
    output::print(&table(&stats))?;
    if let (Some((data, evaluation)), Some(class_stats)) = (&evaluated, &stats.evaluation) {
        let evaluated = Evaluated {
            card: &model.card,
            data,
            evaluation,
            stats: class_stats,
        };
        let place = RunPlace {
            key_file: args.wandb_key_file.as_deref(),
            root: &args.output,
        };
        model_runs::log_evaluation(&evaluated, &place)?;
    }
    Ok(())
}

fn layer_stats(network: &impl Module) -> Result<Vec<LayerStats>> {
    struct Collector {
        path: Vec<String>,
        layers: Vec<(String, Vec<usize>, Result<Vec<f32>>)>,
    }
    impl ModuleVisitor for Collector {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            // Enum variants and the top-level struct add nothing a reader needs.
            if !container_type.starts_with("Enum") {
                self.path.push(name.to_owned());
            }
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            if !container_type.starts_with("Enum") {
                self.path.pop();
            }
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            let shape = tensor.dims().to_vec();
            let values = tensor
                .try_into_data()
                .map_err(anyhow::Error::from)
                .and_then(|data| {
                    data.try_into_vec::<f32>()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))
                });
            self.layers.push((self.path.join("."), shape, values));
        }
    }
    let mut collector = Collector {
        path: Vec::new(),
        layers: Vec::new(),
    };
    network.visit(&mut collector);
    collector
        .layers
        .into_iter()
        .map(|(name, shape, values)| {
            let values = values?;
            let count = values.len().max(1) as f64;
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
            let var = values
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / count;
            Ok(LayerStats {
                name,
                count: values.len(),
                shape,
                mean,
                std: var.sqrt(),
                min: values.iter().copied().fold(f32::INFINITY, f32::min).into(),
                max: values
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
                    .into(),
                l2_norm: values
                    .iter()
                    .map(|&v| f64::from(v).powi(2))
                    .sum::<f64>()
                    .sqrt(),
                near_zero_share: values
                    .iter()
                    .filter(|v| f64::from(v.abs()) < NEAR_ZERO)
                    .count() as f64
                    / count,
            })
        })
        .collect()
}

/// The summary printed on stdout.
fn table(stats: &Stats) -> String {
    let mut out = format!("{}: {} parameters\n\n", stats.model, stats.parameters);
    out += &format!(
        "{:<24} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "layer", "shape", "mean", "std", "min", "max", "l2", "near-0"
    );
    for l in &stats.layers {
        let shape: Vec<String> = l.shape.iter().map(|d| d.to_string()).collect();
        out += &format!(
            "{:<24} {:>14} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.3} {:>8.1}%\n",
            l.name,
            shape.join("x"),
            l.mean,
            l.std,
            l.min,
            l.max,
            l.l2_norm,
            100.0 * l.near_zero_share
        );
    }
    if let Some(e) = &stats.evaluation {
        out += &format!(
            "\n{} examples from {}: accuracy {:.2}%, loss {:.4}\n\n",
            e.examples,
            e.data,
            100.0 * e.accuracy,
            e.loss
        );
        let name = |c: &ClassFigures| classes::labelled(c.class, c.name.as_deref());
        let width = (e.per_class.iter())
            .map(|c| name(c).chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        out += &format!(
            "{:<width$} {:>8} {:>10} {:>8} {:>8}\n",
            "class", "support", "precision", "recall", "f1"
        );
        for c in &e.per_class {
            out += &format!(
                "{:<width$} {:>8} {:>9.2}% {:>7.2}% {:>8.3}\n",
                name(c),
                c.support,
                100.0 * c.precision,
                100.0 * c.recall,
                c.f1
            );
        }
        if let Some(worst) = e.worst() {
            out += &format!("\nworst class: {worst}\n");
        }
    }
    out
}
