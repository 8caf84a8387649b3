//! Health of the remote backends: one NSINFO per backend and interval, folded into a state
//! machine with a grace period.
//!
//! * An answer makes a backend `healthy`, or `low_space` when its namespace has a limit
//!   (`data_limits_bytes` > 0) and is fuller than `zdb_namespace_fill_treshold`. Without a limit
//!   the backend counts as unlimited, as the seed's patched zstor did.
//! * A failure makes a healthy or low-space backend `unknown`; it stays `unknown` until it has
//!   failed for the whole grace period (default 15 min), then becomes `unreachable`, which
//!   lasts until the next answer.
//! * A namespace in the wrong mode (data backends must be `sequential`, metadata backends
//!   `userkey`) counts as a failure.

use crate::logging::message_id;
use crate::monitor::status::{BackendKind, BackendState};
use crate::zdb::{Client, Endpoint, Mode};
use crate::zstor::config::{Backend, ZstorConfig};
use std::time::Duration;

/// A backend's health and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The state.
    pub state: BackendState,
    /// When the backend entered it (for `unknown`: when it started failing), unix ms.
    pub since_unix_ms: u64,
    /// Fill of its namespace, when it has a limit and answered last.
    pub fill_percent: Option<f64>,
    /// Why it is not healthy.
    pub reason: Option<String>,
}

impl Health {
    /// The health of a backend not checked yet.
    pub fn unchecked(now_unix_ms: u64) -> Self {
        Health {
            state: BackendState::Unknown,
            since_unix_ms: now_unix_ms,
            fill_percent: None,
            reason: Some("not checked yet".into()),
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// The backend answered; `fill_percent` is `None` when its namespace has no limit.
    Answered {
        /// How full the namespace is, in percent of its limit.
        fill_percent: Option<f64>,
    },
    /// The check failed, for this reason.
    Failed(String),
}

/// The next health of a backend, given an observation made at `now_unix_ms`.
pub fn next(
    current: &Health,
    observation: &Observation,
    now_unix_ms: u64,
    grace: Duration,
    fill_threshold: f64,
) -> Health {
    match observation {
        Observation::Answered { fill_percent } => {
            let full = fill_percent.is_some_and(|fill| fill > fill_threshold);
            let state = if full {
                BackendState::LowSpace
            } else {
                BackendState::Healthy
            };
            let reason = full.then(|| {
                format!(
                    "namespace {:.1}% full (threshold {fill_threshold}%)",
                    fill_percent.unwrap_or_default()
                )
            });
            let since_unix_ms = if current.state == state {
                current.since_unix_ms
            } else {
                now_unix_ms
            };
            Health {
                state,
                since_unix_ms,
                fill_percent: *fill_percent,
                reason,
            }
        }
        Observation::Failed(reason) => {
            let (state, since_unix_ms) = match current.state {
                BackendState::Healthy | BackendState::LowSpace => {
                    (BackendState::Unknown, now_unix_ms)
                }
                BackendState::Unknown
                    if now_unix_ms.saturating_sub(current.since_unix_ms)
                        >= grace.as_millis() as u64 =>
                {
                    (BackendState::Unreachable, now_unix_ms)
                }
                state => (state, current.since_unix_ms),
            };
            Health {
                state,
                since_unix_ms,
                fill_percent: None,
                reason: Some(reason.clone()),
            }
        }
    }
}

/// Checks one backend: connect, `SELECT` its namespace, `NSINFO`. Blocking, bounded by
/// `timeout` as a whole (a backend that trickles its replies cannot hold it longer). Errors
/// never show the password.
pub fn check(backend: &Backend, kind: BackendKind, timeout: Duration) -> Observation {
    let namespace = backend.namespace.as_deref().unwrap_or("default");
    let result =
        Client::connect_within(&Endpoint::Tcp(backend.address), timeout).and_then(|mut client| {
            client.select(namespace, backend.password.as_ref())?;
            client.nsinfo(namespace)
        });
    match result {
        Ok(info) => {
            let expected = match kind {
                BackendKind::Data => Mode::Sequential,
                BackendKind::Meta => Mode::Userkey,
            };
            if info.mode != expected {
                return Observation::Failed(format!(
                    "namespace {namespace} is in {:?} mode, expected {expected:?}",
                    info.mode
                ));
            }
            Observation::Answered {
                fill_percent: info.fill_percent(),
            }
        }
        Err(e) => Observation::Failed(e.to_string()),
    }
}

/// One backend of the zstor config and its health.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The backend.
    pub backend: Backend,
    /// Data or metadata.
    pub kind: BackendKind,
    /// Its health.
    pub health: Health,
}

/// The backends of `config`, keeping the health of those already in `previous`.
pub fn entries(config: &ZstorConfig, previous: &[Entry], now_unix_ms: u64) -> Vec<Entry> {
    let data = config.data_backends().map(|b| (b, BackendKind::Data));
    let meta = config
        .meta_backends()
        .iter()
        .map(|b| (b, BackendKind::Meta));
    data.chain(meta)
        .map(|(backend, kind)| Entry {
            health: previous
                .iter()
                .find(|e| e.backend.label() == backend.label() && e.kind == kind)
                .map_or_else(|| Health::unchecked(now_unix_ms), |e| e.health.clone()),
            backend: backend.clone(),
            kind,
        })
        .collect()
}

/// The backend set a zstor command started at `now` writes to. In-process commands read the
/// config file: `current`. Commands through the daemon: `current` once the daemon was asked to
/// load it and had time to (`asked`: the set and from when it runs it), or, not asked since the
/// monitor started, when `current` is the `recorded` set (the set of the last finished
/// rebuild, which the daemon ran then); otherwise the `recorded` set, so the copy is rebuilt
/// and checked before the new set counts as current.
pub fn set_of_new_copies(
    current: u64,
    recorded: Option<u64>,
    through_daemon: bool,
    asked: Option<(u64, std::time::Instant)>,
    now: std::time::Instant,
) -> u64 {
    let runs_current = match asked {
        Some((set, settled)) => set == current && now >= settled,
        None => recorded == Some(current),
    };
    if !through_daemon || runs_current {
        current
    } else {
        recorded.unwrap_or(current)
    }
}

/// A stable hash of the backend set (addresses and namespaces, never passwords).
pub fn set_hash(config: &ZstorConfig) -> u64 {
    let mut labels: Vec<String> = config
        .data_backends()
        .chain(config.meta_backends())
        .map(Backend::label)
        .collect();
    labels.sort();
    let sum = crate::zstor::Checksum::of_bytes(labels.join("\n").as_bytes());
    u64::from_le_bytes(sum.0[..8].try_into().expect("8 bytes"))
}

/// Folds one round of check results into `entries`, logging every change of state. Returns
/// the labels of the backends that just became unreachable or low on space.
pub fn apply(
    entries: &mut [Entry],
    results: Vec<(String, Observation)>,
    now_unix_ms: u64,
    grace: Duration,
    fill_threshold: f64,
) -> Vec<String> {
    let mut lost = Vec::new();
    for (label, observation) in results {
        let Some(entry) = entries.iter_mut().find(|e| e.backend.label() == label) else {
            continue;
        };
        let next = next(
            &entry.health,
            &observation,
            now_unix_ms,
            grace,
            fill_threshold,
        );
        if next.state != entry.health.state {
            let reason = next
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let message = format!(
                "{} backend {label}: {} → {}{reason}",
                entry.kind, entry.health.state, next.state
            );
            let id = message_id::BACKEND_STATE_CHANGED;
            if next.state == BackendState::Healthy {
                tracing::info!(message_id = id, qsfs_backend = label, qsfs_backend_state = ?next.state, "{message}");
            } else {
                tracing::warn!(message_id = id, qsfs_backend = label, qsfs_backend_state = ?next.state, "{message}");
            }
            if matches!(
                next.state,
                BackendState::Unreachable | BackendState::LowSpace
            ) {
                lost.push(label.clone());
            }
        }
        entry.health = next;
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_that_trickles_its_replies_fails_its_check_at_the_deadline() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // OK to SELECT, then an NSINFO reply of 2000 bytes, one byte every 100 ms: each read
        // gets a byte well within the timeout, the whole reply takes 200 s.
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let reply = [b"+OK\r\n$2000\r\n".as_slice(), &[b'x'; 2000]].concat();
            for byte in reply {
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let backend = Backend {
            address,
            namespace: Some("ns".into()),
            password: None,
        };
        let started = std::time::Instant::now();
        let observation = check(&backend, BackendKind::Data, Duration::from_secs(1));
        let took = started.elapsed();
        assert!(
            matches!(&observation, Observation::Failed(why) if why.contains("did not answer within 1.0 s")),
            "{observation:?}"
        );
        assert!(
            took < Duration::from_secs(20),
            "bounded by its deadline: {took:?}"
        );
    }

    const GRACE: Duration = Duration::from_secs(900);

    #[test]
    fn new_copies_are_recorded_on_the_set_zstor_writes_to() {
        let now = std::time::Instant::now();
        let later = now + Duration::from_secs(2);
        let (old, new) = (1, 2);
        // In-process: the config file as it is now.
        assert_eq!(set_of_new_copies(new, Some(old), false, None, now), new);
        // Through a daemon asked to load `new`: once it had time to.
        assert_eq!(
            set_of_new_copies(new, Some(old), true, Some((new, later)), now),
            old
        );
        assert_eq!(
            set_of_new_copies(new, Some(old), true, Some((new, later)), later),
            new
        );
        // Asked for another set than the current one (the config changed again).
        assert_eq!(
            set_of_new_copies(new, Some(old), true, Some((3, now)), later),
            old
        );
        // Not asked since the monitor started: the recorded set, which it ran then.
        assert_eq!(set_of_new_copies(new, Some(old), true, None, now), old);
        assert_eq!(set_of_new_copies(new, Some(new), true, None, now), new);
        // A first start records the current set.
        assert_eq!(set_of_new_copies(new, None, true, None, now), new);
    }
    const MIN: u64 = 60_000;

    fn step(health: &Health, observation: Observation, at_min: u64) -> Health {
        next(health, &observation, at_min * MIN, GRACE, 95.0)
    }

    fn failed() -> Observation {
        Observation::Failed("connection refused".into())
    }

    #[test]
    fn every_transition_with_a_fake_clock() {
        let start = Health::unchecked(0);
        assert_eq!(start.state, BackendState::Unknown);
        let healthy = step(&start, Observation::Answered { fill_percent: None }, 1);
        assert_eq!(
            (healthy.state, healthy.since_unix_ms),
            (BackendState::Healthy, MIN)
        );
        // Staying healthy keeps the since-time.
        assert_eq!(
            step(
                &healthy,
                Observation::Answered {
                    fill_percent: Some(10.0)
                },
                2
            )
            .since_unix_ms,
            MIN
        );

        // A failure: unknown from then, for the whole grace period.
        let unknown = step(&healthy, failed(), 10);
        assert_eq!(
            (unknown.state, unknown.since_unix_ms),
            (BackendState::Unknown, 10 * MIN)
        );
        let still = step(&unknown, failed(), 24);
        assert_eq!(
            (still.state, still.since_unix_ms),
            (BackendState::Unknown, 10 * MIN)
        );
        let unreachable = step(&still, failed(), 25);
        assert_eq!(
            (unreachable.state, unreachable.since_unix_ms),
            (BackendState::Unreachable, 25 * MIN)
        );
        assert_eq!(
            step(&unreachable, failed(), 90).state,
            BackendState::Unreachable
        );
        assert_eq!(unreachable.reason.as_deref(), Some("connection refused"));

        // One answer brings it back.
        let back = step(
            &unreachable,
            Observation::Answered {
                fill_percent: Some(50.0),
            },
            91,
        );
        assert_eq!(
            (back.state, back.reason.clone()),
            (BackendState::Healthy, None)
        );

        // Low space, and its failure path.
        let low = step(
            &back,
            Observation::Answered {
                fill_percent: Some(96.0),
            },
            92,
        );
        assert_eq!(low.state, BackendState::LowSpace);
        assert!(low.reason.as_deref().unwrap().contains("96.0% full"));
        assert_eq!(step(&low, failed(), 93).state, BackendState::Unknown);
        assert_eq!(
            step(
                &low,
                Observation::Answered {
                    fill_percent: Some(80.0)
                },
                93
            )
            .state,
            BackendState::Healthy
        );

        // A backend failing since start becomes unreachable after the grace period too.
        assert_eq!(
            step(&step(&start, failed(), 1), failed(), 15).state,
            BackendState::Unreachable
        );
    }

    #[test]
    fn fill_counts_only_with_a_limit() {
        let start = Health::unchecked(0);
        // No limit: unlimited, healthy however much data it holds.
        assert_eq!(
            step(&start, Observation::Answered { fill_percent: None }, 1).state,
            BackendState::Healthy
        );
        // With a limit: the threshold decides (strictly above it is low).
        assert_eq!(
            step(
                &start,
                Observation::Answered {
                    fill_percent: Some(95.0)
                },
                1
            )
            .state,
            BackendState::Healthy
        );
        assert_eq!(
            step(
                &start,
                Observation::Answered {
                    fill_percent: Some(95.1)
                },
                1
            )
            .state,
            BackendState::LowSpace
        );
        assert_eq!(
            next(
                &start,
                &Observation::Answered {
                    fill_percent: Some(60.0)
                },
                0,
                GRACE,
                50.0
            )
            .state,
            BackendState::LowSpace
        );
    }
}
