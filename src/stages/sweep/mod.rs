//! `mnist sweep`: a sweep file in, one training config per trial out (`OUTPUT/configs/`), each
//! valid for `mnist train` and named by its index and parameters; the sweep is created in W&B
//! when W&B is on, so that the trials' runs join it. With `--run`, the trials are trained here
//! (`--jobs` at a time) and ranked in a leaderboard.

mod space;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::device::backend::BackendChoice;
use crate::stop;
use crate::{files::output, stages::select, wandb};
pub use space::{Method, Sweep, Trial};

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Sweep file (TOML): a base config and the parameter space, e.g. configs/sweeps/smoke-lr.toml.
    #[arg(long)]
    pub sweep: PathBuf,
    /// Directory to write into: `configs/` (one config per trial); with --run also `models/`,
    /// `logs/`, the leaderboard and `best/`.
    #[arg(long)]
    pub output: PathBuf,
    /// Train the trials here and rank them.
    #[arg(long)]
    pub run: bool,
    /// With --run: trials trained at a time, the CPU threads shared among them.
    #[arg(long, default_value_t = 1, requires = "run",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// With --run: training data, as for `mnist train` [default: the built-in sample].
    #[arg(long, requires = "run")]
    pub data: Option<PathBuf>,
    /// With --run: where to compute, as for `mnist train`.
    #[arg(long, value_enum, default_value = "auto", env = "MNIST_BACKEND")]
    pub backend: BackendChoice,
    /// File holding the W&B API key, when WANDB_API_KEY is not set.
    #[arg(long, value_name = "FILE", env = "MNIST_WANDB_KEY_FILE")]
    pub wandb_key_file: Option<PathBuf>,
}

pub fn run(args: &SweepArgs) -> Result<()> {
    let sweep = Sweep::load(&args.sweep)?;
    let mut trials = sweep.trials()?;
    let configs = args.output.join("configs");
    if configs
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        bail!(
            "{}: already holds trial configs; write the sweep to another --output",
            configs.display()
        );
    }
    let created = wandb::create_sweep(
        &sweep.base().wandb,
        args.wandb_key_file.as_deref(),
        &sweep.wandb_config(trials.len()),
    )?;
    for trial in &mut trials {
        if let Some(slot) = trial.config.sweep.as_mut() {
            slot.id.clone_from(&created);
        }
    }
    for trial in &trials {
        let text = toml::to_string(&trial.config)
            .with_context(|| format!("writing the config of {}", trial.name))?;
        output::write_file(&config_path(&configs, trial), text.as_bytes())?;
    }
    eprintln!(
        "sweep {}: {} trials ({}) written to {}",
        sweep.name,
        trials.len(),
        match sweep.method {
            Method::Grid => "grid".to_owned(),
            Method::Random => format!("random, seed {}", sweep.seed()),
        },
        configs.display()
    );
    if !args.run {
        return Ok(());
    }

    let trained = train_all(args, &trials, &configs)?;
    let best = args.output.join("best");
    let board = select::rank(&args.output.join("models"), &args.output, &best)?;
    eprintln!(
        "{trained} of {} trials trained; the best, {}, is copied to {}",
        trials.len(),
        board.best().name,
        best.display()
    );
    Ok(())
}

fn config_path(configs: &Path, trial: &Trial) -> PathBuf {
    configs.join(format!("{}.toml", trial.name))
}

/// Trains every trial in a child `mnist train`, `--jobs` at a time, each logging to
/// `logs/<trial>.log`; returns how many succeeded. A failed trial (a diverging learning rate,
/// say) is reported and the others go on; all failing is an error.
fn train_all(args: &SweepArgs, trials: &[Trial], configs: &Path) -> Result<usize> {
    let exe = std::env::current_exe().context("finding this program to run the trials")?;
    let logs = args.output.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let jobs = usize::from(args.jobs).min(trials.len());
    let threads = (rayon::current_num_threads() / jobs).max(1);
    let backend = args
        .backend
        .to_possible_value()
        .map_or_else(|| "auto".to_owned(), |value| value.get_name().to_owned());
    eprintln!(
        "training {} trials, {jobs} at a time with {threads} threads each",
        trials.len()
    );
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    // Whether the trial trained (`false`: it stopped on a signal, its checkpoint kept).
    let train = |trial: &Trial| -> Result<bool> {
        let log = logs.join(format!("{}.log", trial.name));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("--threads")
            .arg(threads.to_string())
            .arg("train")
            .arg("--config")
            .arg(config_path(configs, trial))
            .arg("--output")
            .arg(args.output.join("models").join(&trial.name))
            .args(["--backend", &backend])
            .stdout(Stdio::null())
            .stderr(file.try_clone()?);
        if let Some(data) = &args.data {
            command.arg("--data").arg(data);
        }
        if let Some(key_file) = &args.wandb_key_file {
            command.arg("--wandb-key-file").arg(key_file);
        }
        // A group of its own: a terminal's Ctrl-C reaches the trial once, through this process.
        command.process_group(0);
        let mut child = command.spawn().context("starting `mnist train`")?;
        let mut forwarded = false;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for `mnist train`")? {
                break status;
            }
            if let Some(signal) = stop::requested().filter(|_| !forwarded) {
                signal.send_to(child.id());
                forwarded = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if forwarded && !status.success() {
            return Ok(false);
        }
        anyhow::ensure!(status.success(), "{status}; see {}", log.display());
        Ok(true)
    };
    let finished = Mutex::new(Vec::new());
    let record = |list: &Mutex<Vec<String>>, trial: &Trial| {
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        list.push(trial.name.clone());
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(trial) = trials.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if stop::requested().is_some() {
                        break;
                    }
                    let started = Instant::now();
                    match train(trial) {
                        Ok(false) => eprintln!("trial {} stopped", trial.name),
                        Ok(true) => {
                            eprintln!(
                                "trial {} trained in {:.1}s",
                                trial.name,
                                started.elapsed().as_secs_f64()
                            );
                            record(&finished, trial);
                        }
                        Err(err) => {
                            eprintln!("trial {} failed: {err:#}", trial.name);
                            record(&failed, trial);
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(signal) = stop::requested() {
        let finished = finished.into_inner().unwrap_or_else(|p| p.into_inner());
        let list = |names: &[String]| match names {
            [] => "none".to_owned(),
            names => names.join(", "),
        };
        return Err(stop::Interrupted {
            signal,
            detail: format!(
                "trials finished: {}; stopped or not started: the others. A stopped trial \
                 continues with `mnist train --config {}/<trial>.toml --output {}/<trial> \
                 --resume`",
                list(&finished),
                configs.display(),
                args.output.join("models").display()
            ),
        }
        .into());
    }
    if failed.len() == trials.len() {
        bail!("every trial failed; their logs are in {}", logs.display());
    }
    Ok(trials.len() - failed.len())
}
