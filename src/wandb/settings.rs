//! Where a run goes and with which key: the environment W&B's own SDK reads, a key file (the
//! Pachyderm secret mounted with `mountPath`), `~/.netrc`, and the training config.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `wandb` section of a training config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WandbConfig {
    /// `online`, `offline` or `disabled`; `WANDB_MODE` overrides it.
    pub mode: Option<Mode>,
    pub entity: Option<String>,
    pub project: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub notes: Option<String>,
    /// Fail the run when W&B cannot be used, instead of training without it.
    #[serde(default)]
    pub required: bool,
    /// The artifact collection trained models are logged to [default: `mnist-<model kind>`].
    pub model_artifact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Online,
    Offline,
    Disabled,
}

/// An API key: shown as `***` everywhere it could be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Where the key was found, for the log (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    Netrc(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("WANDB_API_KEY"),
            Self::File(path) => write!(f, "key file {}", path.display()),
            Self::Netrc(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The default mount of the Pachyderm secret `wandb` (`mountPath: /secrets/wandb`).
pub const DEFAULT_KEY_FILE: &str = "/secrets/wandb/key";
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

/// Finds the API key: `WANDB_API_KEY`, then the key file, then the netrc entry for `base_url`'s
/// host. Returns the places looked at when there is none.
pub fn find_key(
    env: &dyn Fn(&str) -> Option<String>,
    key_file: Option<&Path>,
    base_url: &str,
) -> Result<(ApiKey, KeySource), Vec<String>> {
    let mut looked = vec!["WANDB_API_KEY".to_string()];
    if let Some(key) = env("WANDB_API_KEY").filter(|k| !k.trim().is_empty()) {
        return Ok((ApiKey(key.trim().to_owned()), KeySource::Env));
    }
    let key_file = key_file.map_or_else(|| PathBuf::from(DEFAULT_KEY_FILE), Path::to_owned);
    looked.push(key_file.display().to_string());
    if let Ok(text) = std::fs::read_to_string(&key_file)
        && !text.trim().is_empty()
    {
        return Ok((ApiKey(text.trim().to_owned()), KeySource::File(key_file)));
    }
    let netrc = env("NETRC")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".netrc")));
    if let Some(netrc) = netrc {
        looked.push(format!("{} (machine {})", netrc.display(), host(base_url)));
        if let Some(key) = std::fs::read_to_string(&netrc)
            .ok()
            .and_then(|text| netrc_password(&text, host(base_url)))
        {
            return Ok((ApiKey(key), KeySource::Netrc(netrc)));
        }
    }
    Err(looked)
}

/// The host part of a URL: `https://api.wandb.ai:443/x` → `api.wandb.ai`.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// The password of `machine` in a netrc file's text.
fn netrc_password(text: &str, machine: &str) -> Option<String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "machine" && tokens.get(i + 1) == Some(&machine) {
            let mut j = i + 2;
            while j + 1 < tokens.len() && tokens[j] != "machine" && tokens[j] != "default" {
                if tokens[j] == "password" {
                    return Some(tokens[j + 1].to_owned());
                }
                j += 2;
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_entries_by_host() {
        let text = "machine example.com login a password x\nmachine api.wandb.ai\n  login user\n  password secret-key\n";
        assert_eq!(
            netrc_password(text, "api.wandb.ai").as_deref(),
            Some("secret-key")
        );
        assert_eq!(netrc_password(text, "other"), None);
        assert_eq!(host("http://127.0.0.1:8080/graphql"), "127.0.0.1");
        assert_eq!(host("https://api.wandb.ai"), "api.wandb.ai");
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey("hunter2".into());
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }
}
