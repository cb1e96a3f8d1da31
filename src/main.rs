//! `mnist`: train and serve MNIST-style image classifiers, locally or as Pachyderm stages.

// Folders by layer; tests/architecture.rs lists them bottom first and keeps each to the ones
// below it.
mod device;
mod files;
mod formats;
mod pachyderm;
mod report;
mod stages;
mod stop;
mod wandb;

#[cfg(test)]
mod fuzz_tests;
mod panic_report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CPU threads to compute with [default: one per core].
    #[arg(long, global = true, env = "MNIST_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Where GPU kernels and autotune results are kept between runs [default:
    /// $XDG_CACHE_HOME/mnist or ~/.cache/mnist].
    #[arg(long, global = true, env = device::gpu_cache::DIR_ENV, value_name = "DIR")]
    cache_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert IDX files (raw or gzipped, found recursively) to train.csv and test.csv.
    Parse(stages::parse::ParseArgs),
    /// Train a network from a TOML config and write a model directory.
    Train(stages::train::TrainArgs),
    /// Write one training config per trial of a sweep file; with --run, train and rank them.
    Sweep(stages::sweep::SweepArgs),
    /// Rank the model directories under a directory and copy the best one out.
    Select(stages::select::SelectArgs),
    /// Classify CSV rows or PNG images with a trained model.
    Infer(stages::infer::InferArgs),
    /// Write a trained model as ONNX, or as safetensors with the PyTorch module that loads it.
    Export(stages::export::ExportArgs),
    /// Parameter statistics of a model and, with labelled data, its accuracy per class.
    Stats(stages::stats::StatsArgs),
    /// Render inference CSVs as GIFs: each image scaled up with its predicted label.
    Image(stages::image::ImageArgs),
    /// Download MNIST or Fashion-MNIST and verify the checksums.
    Fetch(stages::fetch::FetchArgs),
    /// List the GPU adapters wgpu sees and the device `--backend auto` would use.
    Devices,
}

fn main() -> ExitCode {
    panic_report::install();
    panic_report::exit_code_of(run)
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let (name, value) = device::backend::HEADLESS;
    let variables = device::gpu_cache::init(cli.cache_dir.clone())
        .into_iter()
        .chain([(name, value.into())]);
    for (name, value) in variables {
        if std::env::var_os(name).is_none() {
            // SAFETY: no other thread exists yet to read the environment concurrently. The GPU
            // drivers read these when they load, later.
            unsafe { std::env::set_var(name, value) };
        }
    }
    if let Some(provenance) = pachyderm::Provenance::from_env() {
        eprintln!("{}", provenance.describe());
    }
    if let Err(err) = stop::install() {
        eprintln!("warning: SIGINT and SIGTERM will end the process at once: {err}");
    }
    let result = device::cpu::run_on_pool(cli.threads, || match &cli.command {
        Command::Parse(args) => stages::parse::run(args),
        Command::Train(args) => stages::train::run(args),
        Command::Sweep(args) => stages::sweep::run(args),
        Command::Select(args) => stages::select::run(args),
        Command::Infer(args) => stages::infer::run(args),
        Command::Export(args) => stages::export::run(args),
        Command::Stats(args) => stages::stats::run(args),
        Command::Image(args) => stages::image::run(args),
        Command::Fetch(args) => stages::fetch::run(args),
        Command::Devices => stages::devices::run(),
    })
    .and_then(|result| result);
    if let Some(summary) = device::gpu_cache::summary() {
        eprintln!("{summary}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<stop::Interrupted>() {
            Some(interrupted) => {
                eprintln!("{interrupted}");
                ExitCode::from(interrupted.signal.exit_code())
            }
            None => {
                eprintln!("error: {err:#}");
                if err.is::<stages::train::Stopped>() {
                    ExitCode::from(stages::train::Stopped::EXIT_CODE)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
    }
}
