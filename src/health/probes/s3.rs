//! The S3 endpoint: GET each configured URL (by default MinIO's `/minio/health/live` and
//! `/minio/health/ready`), which must answer one of the accepted statuses.
//!
//! * ok: every URL answers an accepted status;
//! * failed, a restart may help: a URL does not answer (refused, reset, timeout);
//! * failed, no restart: a URL answers a status that is not accepted (MinIO's `ready` answers
//!   503 while its drive, the zdbfs mount, is unusable: restarting MinIO does not fix that);
//! * unknown: the probe thread could not run.
//!
//! Requests use `ureq` (blocking) on a [`Lane`] per URL, all at once; no proxy from the
//! environment, no redirects followed.

use super::{Lane, LaneError};
use crate::health::{Outcome, Part, State};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// `[health.s3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Longest each request may take (`timeout_ms`, milliseconds). Default 2000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The URLs to GET; each must answer one of `accepted_statuses`. No credentials in URLs.
    /// Default (`None`): MinIO's `/minio/health/live` and `/minio/health/ready` at the
    /// `MINIO_ADDRESS` of the units' environment file ([`minio_health_urls`]).
    pub urls: Option<Vec<String>>,
    /// The HTTP statuses that count as healthy. Default `[200]`.
    pub accepted_statuses: Vec<u16>,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            timeout: Duration::from_millis(2000),
            urls: None,
            accepted_statuses: vec![200],
        }
    }
}

impl S3Settings {
    /// The checks that span several keys of the table.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.as_ref().is_some_and(Vec::is_empty) {
            return Err("urls must name at least one URL".into());
        }
        for url in self.urls.iter().flatten() {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                // The value is not repeated: it holds a credential.
                return Err("a URL holds credentials (user@host); the health URLs need none and a secret must not sit in qsfs.toml".into());
            }
            if authority.is_empty() {
                return Err(format!("`{url}` has no host"));
            }
        }
        if self.accepted_statuses.is_empty() {
            return Err("accepted_statuses must name at least one status".into());
        }
        if let Some(bad) = self
            .accepted_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!("{bad} is not an HTTP status (100 to 599)"));
        }
        Ok(())
    }
}

/// MinIO's health URLs for its `--address` (`MINIO_ADDRESS`: `:9000`, `IP:PORT`, `[IPv6]:PORT`,
/// `host:port`), as seen from this machine: a wildcard address is asked on loopback.
pub fn minio_health_urls(address: &str) -> Vec<String> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "9000"));
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        host => host,
    };
    ["live", "ready"]
        .iter()
        .map(|what| format!("http://{host}:{port}/minio/health/{what}"))
        .collect()
}

/// `MINIO_ADDRESS` from a systemd environment file (`KEY=VALUE` lines); `:9000` when the file
/// or the key is missing.
pub fn minio_address(env_file: &std::path::Path) -> String {
    std::fs::read_to_string(env_file)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find_map(|line| line.trim().strip_prefix("MINIO_ADDRESS="))
                .map(|value| value.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| ":9000".to_string())
}

/// The S3 probe with its HTTP agent (set up once: connections are reused between rounds).
pub struct S3Probe {
    agent: ureq::Agent,
    urls: Vec<(String, Lane)>,
    accepted: Vec<u16>,
    timeout: Duration,
}

/// What one URL answered.
enum Answer {
    Status(u16),
    NoAnswer(String),
}

impl S3Probe {
    /// Sets up the agent for `settings`; without explicit URLs it asks MinIO's health URLs at
    /// `minio_address`.
    pub fn new(settings: &S3Settings, minio_address: &str) -> Self {
        let timeout = settings.timeout;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("qsfs-health")
            .build()
            .into();
        S3Probe {
            agent,
            urls: settings
                .urls
                .clone()
                .unwrap_or_else(|| minio_health_urls(minio_address))
                .into_iter()
                .map(|u| (u, Lane::new()))
                .collect(),
            accepted: settings.accepted_statuses.clone(),
            timeout,
        }
    }

    /// GETs every URL concurrently.
    pub async fn probe(&self) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        let mut pending = Vec::new();
        for (url, lane) in &self.urls {
            let agent = self.agent.clone();
            let target = url.clone();
            pending.push((
                url,
                lane.start(move || match agent.get(&target).call() {
                    Ok(response) => Answer::Status(response.status().as_u16()),
                    Err(e) => Answer::NoAnswer(e.to_string()),
                }),
            ));
        }
        let mut parts = Vec::new();
        let mut no_answer = false;
        for (url, started) in pending {
            let answer = match started {
                Ok(call) => call.wait(deadline, self.timeout).await,
                Err(e) => Err(e),
            };
            let part = match answer {
                Ok(Answer::Status(status)) if self.accepted.contains(&status) => {
                    Part::new(url, State::Ok, format!("{status}"))
                }
                Ok(Answer::Status(status)) => Part::new(
                    url,
                    State::Failed,
                    format!("answered {status} (accepted: {})", list(&self.accepted)),
                ),
                Ok(Answer::NoAnswer(e)) => {
                    no_answer = true;
                    Part::new(url, State::Failed, format!("no answer: {e}"))
                }
                Err(e @ LaneError::Thread(_)) => Part::new(url, State::Unknown, e.to_string()),
                Err(e) => {
                    no_answer = true;
                    Part::new(url, State::Failed, e.to_string())
                }
            };
            parts.push(part);
        }
        let mut outcome =
            Outcome::from_parts(parts, |parts| format!("{} URLs answer", parts.len()));
        outcome.restart_may_help = no_answer;
        outcome
    }
}

fn list(statuses: &[u16]) -> String {
    statuses
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minio_health_urls_follow_its_address() {
        assert_eq!(
            minio_health_urls(":9000"),
            [
                "http://127.0.0.1:9000/minio/health/live",
                "http://127.0.0.1:9000/minio/health/ready"
            ]
        );
        assert_eq!(
            minio_health_urls("10.1.2.3:9100")[0],
            "http://10.1.2.3:9100/minio/health/live"
        );
        assert_eq!(
            minio_health_urls("[::]:9000")[1],
            "http://[::1]:9000/minio/health/ready"
        );
        assert_eq!(
            minio_health_urls("[2a02::1]:9000")[0],
            "http://[2a02::1]:9000/minio/health/live"
        );
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("qsfs.env");
        assert_eq!(minio_address(&env), ":9000");
        std::fs::write(
            &env,
            "ZDB_DATASIZE=67108864\nMINIO_ADDRESS=127.0.0.1:9100\n",
        )
        .unwrap();
        assert_eq!(minio_address(&env), "127.0.0.1:9100");
    }
}
