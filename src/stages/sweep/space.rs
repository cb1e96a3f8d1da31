//! A sweep file: a base training config and a parameter space, with W&B's sweep meanings
//! (`values`, `value`, and the `uniform`, `int_uniform`, `log_uniform_values` and `log_uniform`
//! distributions; `grid` or `random` search). Its trials are training configs, each the base with
//! one point of the space set by dotted keys (`optimizer.lr`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use model::InputShape;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use toml::Value;

use crate::formats::config::{SweepTrial, TrainConfig};

/// More trials than this is a mistake (a grid with one list too many), not a sweep.
pub const MAX_TRIALS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every combination of the parameters' values.
    Grid,
    /// `count` points drawn at random, reproducibly from `seed`.
    Random,
}

/// What the sweep optimises, as W&B's sweep views show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub goal: Goal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Maximize,
    Minimize,
}

impl Default for Metric {
    fn default() -> Self {
        Self {
            name: "val/accuracy".into(),
            goal: Goal::Maximize,
        }
    }
}

/// One parameter's space, as in W&B's sweep configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    Values(Vec<Value>),
    Value(Value),
    Range {
        distribution: Distribution,
        min: Value,
        max: Value,
    },
}

/// A parameter as written: which keys make which kind is checked in [`Parameter::from_spec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterSpec {
    values: Option<Vec<Value>>,
    value: Option<Value>,
    distribution: Option<Distribution>,
    min: Option<Value>,
    max: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Any number in [min, max).
    Uniform,
    /// Any integer in [min, max].
    IntUniform,
    /// `exp(x)` for `x` uniform in [ln min, ln max): as likely in each decade.
    LogUniformValues,
    /// `exp(x)` for `x` uniform in [min, max) (W&B's bounds are exponents here).
    LogUniform,
}

/// The sweep file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: Option<String>,
    method: Method,
    count: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    metric: Metric,
    /// A training config: a table, or a file's path relative to the sweep file.
    base: Value,
    parameters: BTreeMap<String, ParameterSpec>,
}

/// A checked sweep, ready to give its trials.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    pub method: Method,
    pub metric: Metric,
    pub parameters: BTreeMap<String, Parameter>,
    base: TrainConfig,
    count: usize,
    seed: u64,
}

/// One point of the space, as a training config with its name.
#[derive(Debug, Clone)]
pub struct Trial {
    pub name: String,
    pub config: TrainConfig,
}

impl Sweep {
    /// Reads and checks `path`; every error names the key at fault.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading sweep file {}", path.display()))?;
        Self::parse(&text, path).map_err(|err| anyhow::anyhow!("{}: {err:#}", path.display()))
    }

    /// `text`, read from `path` (which names the sweep and places a relative `base`).
    fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: SweepFile = toml::from_str(text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let base = match file.base {
            Value::String(relative) => TrainConfig::load(&dir.join(relative)).context("base")?,
            table @ Value::Table(_) => {
                let config: TrainConfig = table.try_into().context("base")?;
                config.validate().context("base")?;
                config
            }
            _ => bail!("base: expected a table (a training config) or a config file's path"),
        };
        if file.parameters.is_empty() {
            bail!("parameters: the sweep varies nothing");
        }
        let count = match (file.method, file.count) {
            (Method::Random, Some(count)) if (1..=MAX_TRIALS).contains(&count) => count,
            (Method::Random, Some(count)) => bail!("count: {count} is not in 1..={MAX_TRIALS}"),
            (Method::Random, None) => bail!("count: a random sweep needs a trial count"),
            (Method::Grid, Some(_)) => bail!("count: a grid has as many trials as combinations"),
            (Method::Grid, None) => 0,
        };
        let base_table = Value::try_from(&base)?;
        let mut parameters = BTreeMap::new();
        for (key, spec) in file.parameters {
            let at = format!("parameters.\"{key}\"");
            if lookup(&base_table, &key).is_none() {
                bail!("{at}: no such key in the training config");
            }
            if key.starts_with("sweep.") || key.starts_with("wandb.") {
                bail!("{at}: only training settings can be swept");
            }
            let parameter = Parameter::from_spec(spec, file.method).with_context(|| at.clone())?;
            parameters.insert(key, parameter);
        }
        let name = file.name.unwrap_or_else(|| {
            path.file_stem()
                .map_or("sweep".into(), |stem| stem.to_string_lossy().into_owned())
        });
        let sweep = Self {
            name,
            method: file.method,
            metric: file.metric,
            parameters,
            base,
            count,
            seed: file.seed,
        };
        if sweep.method == Method::Grid {
            let size = sweep.grid_size();
            if size > MAX_TRIALS {
                bail!("parameters: the grid has {size} combinations, more than {MAX_TRIALS}");
            }
        }
        Ok(sweep)
    }

    /// The config every trial starts from.
    pub fn base(&self) -> &TrainConfig {
        &self.base
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every trial, in order: the grid's combinations (the last key varying fastest), or the
    /// random draws.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        let points = match self.method {
            Method::Grid => self.grid(),
            Method::Random => {
                let mut rng = StdRng::seed_from_u64(self.seed);
                (0..self.count)
                    .map(|_| {
                        self.parameters
                            .iter()
                            .map(|(key, parameter)| (key.clone(), draw(parameter, &mut rng)))
                            .collect()
                    })
                    .collect()
            }
        };
        points
            .into_iter()
            .enumerate()
            .map(|(index, point)| self.trial(index + 1, point))
            .collect()
    }

    /// The sweep in W&B's sweep configuration: its method, metric and parameters, with a
    /// local controller (the trials are chosen here) and as many runs as trials.
    pub fn wandb_config(&self, trials: usize) -> serde_json::Value {
        let parameters: serde_json::Map<String, serde_json::Value> = self
            .parameters
            .iter()
            .map(|(key, parameter)| (key.clone(), parameter.to_wandb()))
            .collect();
        json!({
            "name": self.name,
            "method": self.method,
            "metric": self.metric,
            "parameters": parameters,
            "run_cap": trials,
            "controller": {"type": "local"},
        })
    }

    fn grid_size(&self) -> usize {
        self.parameters
            .values()
            .map(|parameter| grid_values(parameter).len())
            .fold(1, usize::saturating_mul)
    }

    fn grid(&self) -> Vec<BTreeMap<String, Value>> {
        self.parameters
            .iter()
            .fold(vec![BTreeMap::new()], |points, (key, parameter)| {
                points
                    .iter()
                    .flat_map(|point| {
                        grid_values(parameter).into_iter().map(move |value| {
                            let mut point = point.clone();
                            point.insert(key.clone(), value);
                            point
                        })
                    })
                    .collect()
            })
    }

    fn trial(&self, index: usize, point: BTreeMap<String, Value>) -> Result<Trial> {
        let name = trial_name(index, &point);
        let mut table = Value::try_from(&self.base)?;
        for (key, value) in &point {
            if let Some(slot) = lookup_mut(&mut table, key) {
                *slot = value.clone();
            }
        }
        let at = || format!("trial {name}");
        let mut config: TrainConfig = table.try_into().with_context(at)?;
        config.validate().with_context(at)?;
        config
            .model
            .check(InputShape::MNIST)
            .map_err(|err| anyhow::anyhow!("{}: model.{err} (28x28 images)", at()))?;
        config.sweep = Some(SweepTrial {
            sweep: self.name.clone(),
            id: None,
            trial: name.clone(),
            parameters: point
                .into_iter()
                .map(|(key, value)| Ok((key, serde_json::to_value(value)?)))
                .collect::<Result<_>>()?,
        });
        Ok(Trial { name, config })
    }
}

impl Parameter {
    fn from_spec(spec: ParameterSpec, method: Method) -> Result<Self> {
        let parameter = match spec {
            ParameterSpec {
                values: Some(values),
                value: None,
                distribution: None,
                min: None,
                max: None,
            } => {
                if values.is_empty() {
                    bail!("values: the list is empty");
                }
                Self::Values(values)
            }
            ParameterSpec {
                values: None,
                value: Some(value),
                distribution: None,
                min: None,
                max: None,
            } => Self::Value(value),
            ParameterSpec {
                values: None,
                value: None,
                distribution,
                min: Some(min),
                max: Some(max),
            } => {
                // W&B's inference when the distribution is left out.
                let distribution = distribution.unwrap_or(match (&min, &max) {
                    (Value::Integer(_), Value::Integer(_)) => Distribution::IntUniform,
                    _ => Distribution::Uniform,
                });
                let range = Self::Range {
                    distribution,
                    min,
                    max,
                };
                range.check_range(method)?;
                range
            }
            _ => bail!("give `values`, or `value`, or `min` and `max` (and a `distribution`)"),
        };
        Ok(parameter)
    }

    fn check_range(&self, method: Method) -> Result<()> {
        let Self::Range {
            distribution,
            min,
            max,
        } = self
        else {
            return Ok(());
        };
        let integers = matches!((min, max), (Value::Integer(_), Value::Integer(_)));
        if *distribution == Distribution::IntUniform && !integers {
            bail!("int_uniform needs integer bounds, not {min} and {max}");
        }
        let (lo, hi) = self.bounds();
        let empty = match distribution {
            Distribution::IntUniform => lo > hi,
            _ => lo >= hi,
        };
        if empty || !lo.is_finite() || !hi.is_finite() {
            bail!("min {min} and max {max}: the range is empty or not numbers");
        }
        if *distribution == Distribution::LogUniformValues && lo <= 0.0 {
            bail!("min: log_uniform_values needs positive bounds, not {min}");
        }
        if method == Method::Grid && *distribution != Distribution::IntUniform {
            bail!("a grid needs `values` (or an int_uniform range), not a continuous range");
        }
        Ok(())
    }

    /// A range's bounds as numbers (NaN for what is not one: refused by `check_range`).
    fn bounds(&self) -> (f64, f64) {
        let number = |value: &Value| match value {
            Value::Integer(i) => *i as f64,
            Value::Float(f) => *f,
            _ => f64::NAN,
        };
        match self {
            Self::Range { min, max, .. } => (number(min), number(max)),
            _ => (f64::NAN, f64::NAN),
        }
    }

    /// The parameter in W&B's sweep configuration, the distribution always spelled out.
    pub fn to_wandb(&self) -> serde_json::Value {
        match self {
            Self::Values(values) => json!({ "values": values }),
            Self::Value(value) => json!({ "value": value }),
            Self::Range {
                distribution,
                min,
                max,
            } => json!({ "distribution": distribution, "min": min, "max": max }),
        }
    }
}

/// The values a grid takes for `parameter` (checked: discrete).
fn grid_values(parameter: &Parameter) -> Vec<Value> {
    match parameter {
        Parameter::Values(values) => values.clone(),
        Parameter::Value(value) => vec![value.clone()],
        Parameter::Range { min, max, .. } => match (min, max) {
            (Value::Integer(min), Value::Integer(max)) => {
                (*min..=*max).map(Value::Integer).collect()
            }
            _ => Vec::new(),
        },
    }
}

fn draw(parameter: &Parameter, rng: &mut StdRng) -> Value {
    match parameter {
        Parameter::Values(values) => values[rng.random_range(0..values.len())].clone(),
        Parameter::Value(value) => value.clone(),
        Parameter::Range { distribution, .. } => {
            // Checked at load: finite numbers, a non-empty range.
            let (min, max) = parameter.bounds();
            match distribution {
                Distribution::IntUniform => {
                    Value::Integer(rng.random_range(min as i64..=max as i64))
                }
                Distribution::Uniform => Value::Float(rng.random_range(min..max)),
                Distribution::LogUniformValues => {
                    Value::Float(rng.random_range(min.ln()..max.ln()).exp())
                }
                Distribution::LogUniform => Value::Float(rng.random_range(min..max).exp()),
            }
        }
    }
}

fn lookup<'a>(table: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.')
        .try_fold(table, |value, part| value.get(part))
}

fn lookup_mut<'a>(table: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    key.split('.')
        .try_fold(table, |value, part| value.get_mut(part))
}

/// `trial-003_lr=0.00123_batch_size=64`: the index, then each parameter by its last key part
/// (the whole key where two share one), values shortened for reading.
fn trial_name(index: usize, point: &BTreeMap<String, Value>) -> String {
    let last = |key: &str| key.rsplit('.').next().unwrap_or(key).to_owned();
    let mut name = format!("trial-{index:03}");
    for (key, value) in point {
        let shared = point
            .keys()
            .filter(|other| last(other) == last(key))
            .count()
            > 1;
        let label = if shared { key.clone() } else { last(key) };
        name.push_str(&format!("_{label}={}", short(value)));
    }
    name
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::Float(f) => format!("{}", crate::report::leaderboard::significant(*f, 3)),
        Value::Integer(i) => i.to_string(),
        Value::String(s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Array(items) => items.iter().map(short).collect::<Vec<_>>().join("x"),
        other => other.to_string(),
    };
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+x".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep file over the smoke config (found beside the sweep file, in `configs/`).
    fn sweep(text: &str) -> Result<Sweep> {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let text = format!("base = \"smoke.toml\"\n{text}");
        Sweep::parse(&text, &configs.join("test-sweep.toml"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", sweep(text).unwrap_err())
    }

    fn values(trials: &[Trial], key: &str) -> Vec<Value> {
        trials
            .iter()
            .map(|t| Value::try_from(&t.config.sweep.as_ref().unwrap().parameters[key]).unwrap())
            .collect()
    }

    #[test]
    fn every_shipped_sweep_gives_valid_trials() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let trials = Sweep::load(&path).unwrap().trials().unwrap();
            assert!(!trials.is_empty(), "{}", path.display());
        }
    }

    #[test]
    fn a_grid_is_every_combination_the_last_key_fastest() {
        let trials = sweep(
            r#"method = "grid"
            [parameters."optimizer.lr"]
            values = [0.001, 0.01]
            [parameters."training.batch_size"]
            values = [16, 32, 64]"#,
        )
        .unwrap()
        .trials()
        .unwrap();
        assert_eq!(trials.len(), 6);
        let names: Vec<&str> = trials.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names[0], "trial-001_lr=0.001_batch_size=16");
        assert_eq!(names[5], "trial-006_lr=0.01_batch_size=64");
        let batches: Vec<usize> = trials
            .iter()
            .map(|t| t.config.training.batch_size)
            .collect();
        assert_eq!(batches, [16, 32, 64, 16, 32, 64]);
        let lrs: Vec<f64> = trials.iter().map(|t| t.config.optimizer.lr()).collect();
        assert_eq!(lrs, [0.001, 0.001, 0.001, 0.01, 0.01, 0.01]);
    }

    #[test]
    fn a_grid_enumerates_integer_ranges_and_constants() {
        let trials = sweep(
            r#"method = "grid"
            [parameters."training.epochs"]
            min = 1
            max = 3
            [parameters."training.seed"]
            value = 5"#,
        )
        .unwrap()
        .trials()
        .unwrap();
        let epochs: Vec<usize> = trials.iter().map(|t| t.config.training.epochs).collect();
        assert_eq!(epochs, [1, 2, 3]);
        assert!(trials.iter().all(|t| t.config.training.seed == 5));
    }

    const RANDOM: &str = r#"method = "random"
        count = 50
        seed = 9
        [parameters."optimizer.lr"]
        distribution = "log_uniform_values"
        min = 1e-4
        max = 1e-1
        [parameters."training.validation_split"]
        distribution = "uniform"
        min = 0.1
        max = 0.2
        [parameters."training.epochs"]
        min = 1
        max = 4
        [parameters."model.hidden"]
        values = [[16], [32, 16]]"#;

    #[test]
    fn random_trials_stay_in_their_ranges_and_repeat_by_seed() {
        let trials = sweep(RANDOM).unwrap().trials().unwrap();
        assert_eq!(trials.len(), 50);
        let lrs: Vec<f64> = trials.iter().map(|t| t.config.optimizer.lr()).collect();
        assert!(lrs.iter().all(|lr| (1e-4..1e-1).contains(lr)), "{lrs:?}");
        // Log-uniform: each decade about as likely; a uniform draw would put ~90% above 1e-2.
        let below = lrs.iter().filter(|&&lr| lr < 1e-2).count();
        assert!((20..=48).contains(&below), "{below} of 50 below 1e-2");
        let splits: Vec<f64> = trials
            .iter()
            .map(|t| t.config.training.validation_split)
            .collect();
        assert!(splits.iter().all(|s| (0.1..0.2).contains(s)));
        let epochs: Vec<usize> = trials.iter().map(|t| t.config.training.epochs).collect();
        assert!(epochs.iter().all(|e| (1..=4).contains(e)));
        assert!(
            [1, 4].iter().all(|bound| epochs.contains(bound)),
            "{epochs:?}"
        );
        let hidden: std::collections::BTreeSet<String> = values(&trials, "model.hidden")
            .iter()
            .map(Value::to_string)
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}");

        let again = sweep(RANDOM).unwrap().trials().unwrap();
        assert_eq!(
            trials.iter().map(|t| &t.config).collect::<Vec<_>>(),
            again.iter().map(|t| &t.config).collect::<Vec<_>>()
        );
        let other = sweep(&RANDOM.replace("seed = 9", "seed = 10"))
            .unwrap()
            .trials()
            .unwrap();
        assert_ne!(lrs[0], other[0].config.optimizer.lr());
    }

    #[test]
    fn every_trial_reads_back_as_a_valid_training_config() {
        let trials = sweep(RANDOM).unwrap().trials().unwrap();
        for trial in &trials {
            let text = toml::to_string(&trial.config).unwrap();
            let back: TrainConfig = toml::from_str(&text).unwrap();
            back.validate().unwrap();
            assert_eq!(back, trial.config, "{}", trial.name);
            let sweep = back.sweep.unwrap();
            assert_eq!(sweep.sweep, "test-sweep");
            assert_eq!(sweep.trial, trial.name);
        }
    }

    #[test]
    fn invalid_spaces_name_the_key() {
        let cases = [
            (
                "method = \"grid\"\n[parameters.\"optimizer.momentum_x\"]\nvalues = [1]",
                "parameters.\"optimizer.momentum_x\": no such key",
            ),
            (
                "method = \"grid\"\n[parameters.\"training.batch_size\"]\nvalues = []",
                "parameters.\"training.batch_size\": values: the list is empty",
            ),
            (
                "method = \"random\"\ncount = 3\n[parameters.\"optimizer.lr\"]\nmin = 0.1\nmax = 0.1",
                "parameters.\"optimizer.lr\": min 0.1 and max 0.1: the range is empty",
            ),
            (
                "method = \"grid\"\n[parameters.\"optimizer.lr\"]\nmin = 0.1\nmax = 0.2",
                "parameters.\"optimizer.lr\": a grid needs `values`",
            ),
            (
                "method = \"random\"\n[parameters.\"optimizer.lr\"]\nvalues = [0.1]",
                "count: a random sweep needs a trial count",
            ),
            (
                "method = \"random\"\ncount = 2\n[parameters.\"optimizer.lr\"]\ndistribution = \"log_uniform_values\"\nmin = 0.0\nmax = 1.0",
                "parameters.\"optimizer.lr\": min: log_uniform_values needs positive bounds",
            ),
            (
                "method = \"random\"\ncount = 2\n[parameters.\"optimizer.lr\"]\nvalues = [1]\nmin = 1",
                "parameters.\"optimizer.lr\": give `values`, or `value`",
            ),
            (
                "method = \"grid\"\n[parameters.\"wandb.project\"]\nvalues = [\"a\"]",
                "no such key",
            ),
            (
                "method = \"grid\"\nparameters = {}",
                "parameters: the sweep varies nothing",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{text}\n=> {message}");
        }
        let big: String = (0..4)
            .map(|i| {
                let key = [
                    "training.epochs",
                    "training.seed",
                    "training.batch_size",
                    "training.log_every",
                ][i];
                format!("[parameters.\"{key}\"]\nmin = 1\nmax = 10\n")
            })
            .collect();
        let message = error(&format!("method = \"grid\"\n{big}"));
        assert!(
            message.contains("the grid has 10000 combinations, more than 1000"),
            "{message}"
        );
    }

    #[test]
    fn a_trial_that_cannot_train_names_itself_and_the_key() {
        let message = format!(
            "{:#}",
            sweep("method = \"grid\"\n[parameters.\"training.batch_size\"]\nvalues = [64, 0]")
                .unwrap()
                .trials()
                .unwrap_err()
        );
        assert!(
            message.contains("trial trial-002_batch_size=0"),
            "{message}"
        );
        assert!(
            message.contains("training.batch_size: 0 is not in"),
            "{message}"
        );
    }
}
