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
use crate::health::config::S3Settings;
use crate::health::{Outcome, Part, State};
use std::time::{Duration, Instant};

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
        let timeout = Duration::from_millis(settings.timeout_ms);
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
                .unwrap_or_else(|| crate::health::config::minio_health_urls(minio_address))
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
