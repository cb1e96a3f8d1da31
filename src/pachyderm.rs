//! The Pachyderm environment a stage runs in, read once into one place: which job, datum and
//! output commit this is, and which commit of each input it read. `model.json` records it (and
//! the W&B run's metadata is built from it), so every model links back to the data and the
//! spec that made it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub pipeline: Option<String>,
    pub project: Option<String>,
    pub job_id: Option<String>,
    pub datum_id: Option<String>,
    pub output_commit_id: Option<String>,
    pub spec_commit: Option<String>,
    /// `<input>_COMMIT` for each input, by input name.
    pub input_commits: BTreeMap<String, String>,
}

impl Provenance {
    /// Reads the variables Pachyderm sets; `None` outside a pipeline.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(std::env::vars())
    }

    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Option<Self> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let provenance = Self {
            pipeline: get("PPS_PIPELINE_NAME"),
            project: get("PPS_PROJECT_NAME"),
            job_id: get("PACH_JOB_ID"),
            datum_id: get("PACH_DATUM_ID"),
            output_commit_id: get("PACH_OUTPUT_COMMIT_ID"),
            spec_commit: get("PPS_SPEC_COMMIT"),
            input_commits: vars
                .iter()
                .filter_map(|(name, value)| {
                    let input = name.strip_suffix("_COMMIT")?;
                    // PACH_OUTPUT_COMMIT_ID and PPS_SPEC_COMMIT are not inputs.
                    (!input.is_empty() && !matches!(input, "PPS_SPEC" | "PACH_OUTPUT"))
                        .then(|| (input.to_owned(), value.clone()))
                })
                .collect(),
        };
        (provenance.job_id.is_some() || provenance.pipeline.is_some()).then_some(provenance)
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let inputs: Vec<String> = self
            .input_commits
            .iter()
            .map(|(input, commit)| format!("{input}@{commit}"))
            .collect();
        format!(
            "pachyderm: pipeline {}, job {}, datum {}, output commit {}, inputs {}",
            self.pipeline.as_deref().unwrap_or("?"),
            self.job_id.as_deref().unwrap_or("?"),
            self.datum_id.as_deref().unwrap_or("?"),
            self.output_commit_id.as_deref().unwrap_or("?"),
            if inputs.is_empty() {
                "none".into()
            } else {
                inputs.join(" ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn outside_pachyderm_there_is_no_provenance() {
        assert_eq!(Provenance::from_vars(vars(&[("HOME", "/root")])), None);
    }

    #[test]
    fn reads_the_job_and_every_input_commit() {
        let p = Provenance::from_vars(vars(&[
            ("PPS_PIPELINE_NAME", "model"),
            ("PPS_PROJECT_NAME", "default"),
            ("PACH_JOB_ID", "j1"),
            ("PACH_DATUM_ID", "d1"),
            ("PACH_OUTPUT_COMMIT_ID", "o1"),
            ("PPS_SPEC_COMMIT", "s1"),
            ("mnist-csv_COMMIT", "c1"),
            ("training-config_COMMIT", "c2"),
        ]))
        .unwrap();
        assert_eq!(p.pipeline.as_deref(), Some("model"));
        assert_eq!(p.spec_commit.as_deref(), Some("s1"));
        assert_eq!(
            p.input_commits,
            BTreeMap::from([
                ("mnist-csv".to_string(), "c1".to_string()),
                ("training-config".to_string(), "c2".to_string())
            ])
        );
        assert!(p.describe().contains("mnist-csv@c1 training-config@c2"));
    }
}
