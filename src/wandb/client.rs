//! W&B's HTTP API as its own SDK speaks it: GraphQL at `{base}/graphql` and the run's
//! `file_stream`, with HTTP basic auth `api:<key>`, and signed-URL uploads (no auth header).
//! Every call retries with exponential backoff and jitter on network errors, 429 (honouring
//! `Retry-After`), 409 and 5xx, until its deadline; other 4xx answers are final.

use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::settings::{ApiKey, KeySource};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: GraphQL error: {message}")]
    GraphQl { url: String, message: String },
    #[error(
        "{url}: HTTP {status}: W&B rejected the API key from {key_source} (check it, or log in again)"
    )]
    KeyRejected {
        url: String,
        status: u16,
        /// Where the key came from: `WANDB_API_KEY`, a key file, a netrc file.
        key_source: String,
    },
}

const USER_AGENT: &str = concat!("mnist/", env!("CARGO_PKG_VERSION"));

pub struct Client {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    /// Where the key came from, for the error when the server rejects it.
    key_source: String,
}

/// One attempt's outcome: the answer, or whether and when to try again.
enum Attempt {
    Done(Result<Vec<u8>, ApiError>),
    Retry(ApiError, Option<Duration>),
}

impl Client {
    pub fn new(base: &str, key: &ApiKey, source: &KeySource) -> Self {
        let credentials = format!("api:{}", key.expose());
        Self {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            key_source: source.to_string(),
        }
    }

    /// Runs the GraphQL operation `name` and returns its `data`.
    pub fn graphql(
        &self,
        document: &str,
        name: &str,
        variables: Value,
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/graphql", self.base);
        let body = json!({"query": document, "variables": variables, "operationName": name});
        let text = self.post(&url, &body, deadline)?;
        let mut answer: Value = serde_json::from_slice(&text).map_err(|err| ApiError::GraphQl {
            url: url.clone(),
            message: format!("invalid JSON answer: {err}"),
        })?;
        if let Some(errors) = answer.get("errors").filter(|e| !e.is_null()) {
            return Err(ApiError::GraphQl {
                url,
                message: errors.to_string(),
            });
        }
        Ok(answer["data"].take())
    }

    /// Posts one `file_stream` request for a run and returns the server's answer.
    pub fn file_stream(
        &self,
        (entity, project, run): (&str, &str, &str),
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/files/{entity}/{project}/{run}/file_stream", self.base);
        let text = self.post(&url, body, deadline)?;
        Ok(serde_json::from_slice(&text).unwrap_or(Value::Null))
    }

    /// Uploads `bytes` to a signed URL with `headers`; signed URLs carry their own
    /// authorisation.
    pub fn put(
        &self,
        url: &str,
        bytes: &[u8],
        headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<(), ApiError> {
        self.retrying(url, deadline, || {
            headers
                .iter()
                .fold(self.agent.put(url), |request, (name, value)| {
                    request.header(name, value)
                })
                .send(bytes)
        })
        .map(|_| ())
    }

    /// Downloads `url`: with the key where `authorized` (W&B's own file URLs), else as a
    /// signed URL, which carries its own authorisation.
    pub fn get(&self, url: &str, authorized: bool, deadline: Instant) -> Result<Vec<u8>, ApiError> {
        self.retrying(url, deadline, || {
            let request = self.agent.get(url).header("User-Agent", USER_AGENT);
            match authorized {
                true => request.header("Authorization", &self.authorization).call(),
                false => request.call(),
            }
        })
        .map_err(|err| self.rejected(err))
    }

    /// Posts with the key.
    fn post(&self, url: &str, body: &Value, deadline: Instant) -> Result<Vec<u8>, ApiError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.retrying(url, deadline, || {
            self.agent
                .post(url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json")
                .header("User-Agent", USER_AGENT)
                .send(&bytes[..])
        })
        .map_err(|err| self.rejected(err))
    }

    /// A 401 or 403 answer to a request with the key says the key was rejected, and where it
    /// came from.
    fn rejected(&self, err: ApiError) -> ApiError {
        match err {
            ApiError::Status {
                url,
                status: status @ (401 | 403),
                ..
            } => ApiError::KeyRejected {
                url,
                status,
                key_source: self.key_source.clone(),
            },
            other => other,
        }
    }

    fn retrying(
        &self,
        url: &str,
        deadline: Instant,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut delay = Duration::from_millis(250);
        loop {
            let (error, wait) = match attempt(url, send()) {
                Attempt::Done(result) => return result,
                Attempt::Retry(error, retry_after) => (error, retry_after.unwrap_or(delay)),
            };
            let jittered = wait.mul_f64(0.75 + rand::random::<f64>() * 0.5);
            if Instant::now() + jittered > deadline {
                return Err(error);
            }
            std::thread::sleep(jittered);
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

fn attempt(url: &str, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Attempt {
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            return Attempt::Retry(
                ApiError::Network {
                    url: url.to_owned(),
                    message: err.to_string(),
                },
                None,
            );
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    if let Err(err) = response.body_mut().as_reader().read_to_end(&mut body) {
        return Attempt::Retry(
            ApiError::Network {
                url: url.to_owned(),
                message: format!("reading the answer: {err}"),
            },
            None,
        );
    }
    let error = || ApiError::Status {
        url: url.to_owned(),
        status,
        body: String::from_utf8_lossy(&body).chars().take(300).collect(),
    };
    match status {
        200..=299 => Attempt::Done(Ok(body)),
        409 | 429 | 500..=599 => Attempt::Retry(error(), retry_after),
        _ => Attempt::Done(Err(error())),
    }
}
