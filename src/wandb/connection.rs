//! How this process reaches W&B: online with a key, offline, or not at all, as the settings and
//! the environment (`WANDB_MODE`, `WANDB_BASE_URL`, `WANDB_PROJECT`, …) say.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, bail};

use super::client::Client;
use super::settings::{self, Mode, WandbConfig};

/// How this process reaches W&B, as the settings and the environment say.
pub enum Connection {
    Disabled,
    Offline,
    Online(Client),
}

/// A variable of the environment, unset when empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn base_url() -> String {
    env("WANDB_BASE_URL").unwrap_or_else(|| settings::DEFAULT_BASE_URL.into())
}

pub fn connect(settings: &WandbConfig, key_file: Option<&Path>) -> Result<Connection> {
    let mode = match env("WANDB_MODE").as_deref() {
        Some("online" | "run") => Mode::Online,
        Some("offline") => Mode::Offline,
        Some("disabled" | "dryrun") => Mode::Disabled,
        Some(other) => bail!("WANDB_MODE={other}: expected online, offline or disabled"),
        None => settings.mode.unwrap_or(Mode::Online),
    };
    match mode {
        Mode::Disabled => {
            announce(|| eprintln!("wandb: disabled"));
            return Ok(Connection::Disabled);
        }
        Mode::Offline => return Ok(Connection::Offline),
        Mode::Online => {}
    }
    let base_url = base_url();
    let (key, source) = match settings::find_key(&env, key_file, &base_url) {
        Ok(found) => found,
        Err(looked) if settings.required => bail!(
            "W&B is required (wandb.required) but no API key was found; looked in: {}",
            looked.join(", ")
        ),
        Err(looked) => {
            announce(|| {
                eprintln!(
                    "wandb: warning: no API key (looked in: {}); going on without W&B",
                    looked.join(", ")
                )
            });
            return Ok(Connection::Disabled);
        }
    };
    announce(|| eprintln!("wandb: API key from {source}, server {base_url}"));
    Ok(Connection::Online(Client::new(&base_url, &key, &source)))
}

/// Says once per process how W&B is reached: a stage may connect twice (a checkpoint fetch, then
/// the run), always with the same settings and environment.
fn announce(say: impl FnOnce()) {
    static ANNOUNCED: Once = Once::new();
    ANNOUNCED.call_once(say);
}

/// The entity runs go to: the settings', else `WANDB_ENTITY` (else the server's default).
pub fn entity(settings: &WandbConfig) -> Option<String> {
    settings.entity.clone().or_else(|| env("WANDB_ENTITY"))
}

/// The project runs go to: the settings', else `WANDB_PROJECT`.
pub fn project(settings: &WandbConfig) -> Option<String> {
    settings.project.clone().or_else(|| env("WANDB_PROJECT"))
}

/// The web app's address for an API address: `https://api.wandb.ai` → `https://wandb.ai`.
pub fn app_url(base: &str) -> String {
    base.trim_end_matches('/').replacen("://api.", "://", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_urls() {
        assert_eq!(app_url("https://api.wandb.ai"), "https://wandb.ai");
        assert_eq!(app_url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
    }
}
