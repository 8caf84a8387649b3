//! The zbus implementation of [`UnitControl`].

use super::{JobResult, SystemdError, UnitControl, UnitStatus};
use futures_util::StreamExt;
use std::time::Duration;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

/// systemd's manager on the system bus.
#[derive(Clone)]
pub struct Systemd {
    connection: zbus::Connection,
    manager: ManagerProxy<'static>,
    job_timeout: Duration,
}

#[derive(Clone, Copy)]
enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
        }
    }
}

impl Systemd {
    /// Connects to the system bus. Jobs that take longer than `job_timeout` are reported as
    /// [`SystemdError::JobTimeout`] (the job itself goes on).
    pub async fn connect(job_timeout: Duration) -> Result<Self, SystemdError> {
        let connection = zbus::Connection::system().await?;
        let manager = ManagerProxy::new(&connection).await?;
        Ok(Systemd {
            connection,
            manager,
            job_timeout,
        })
    }

    /// Queues a job and waits for its `JobRemoved` signal. We subscribe and open the signal
    /// stream before queueing, so the signal cannot be missed.
    async fn run_job(&self, verb: Verb, unit: &str) -> Result<JobResult, SystemdError> {
        // Subscribe() fails only if this connection is already subscribed, which is fine.
        let _ = self.manager.subscribe().await;
        let mut removed = self.manager.receive_job_removed().await?;
        let (name, mode) = (unit.to_string(), "replace".to_string());
        let job = match verb {
            Verb::Start => self.manager.start_unit(name, mode).await?,
            Verb::Stop => self.manager.stop_unit(name, mode).await?,
            Verb::Restart => self.manager.restart_unit(name, mode).await?,
        };
        let wait = async {
            while let Some(signal) = removed.next().await {
                let args = signal.args()?;
                if *args.job == *job {
                    return Ok(JobResult::from(args.result.as_str()));
                }
            }
            Err(SystemdError::Bus(zbus::Error::Failure(
                "JobRemoved stream ended".into(),
            )))
        };
        tokio::time::timeout(self.job_timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(SystemdError::JobTimeout {
                    verb: verb.name(),
                    unit: unit.to_string(),
                    seconds: self.job_timeout.as_secs(),
                })
            })
    }
}

impl UnitControl for Systemd {
    async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        // LoadUnit (unlike GetUnit) also answers for units that are not loaded right now.
        let path = self.manager.load_unit(unit.to_string()).await?;
        let unit_proxy = UnitProxy::builder(&self.connection)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let (result, n_restarts) = if unit.ends_with(".service") {
            let service = ServiceProxy::builder(&self.connection)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            (
                Some(service.result().await?),
                Some(service.n_restarts().await?),
            )
        } else {
            (None, None)
        };
        Ok(UnitStatus {
            name: unit.to_string(),
            load_state: unit_proxy.load_state().await?,
            active_state: unit_proxy.active_state().await?.as_str().into(),
            sub_state: unit_proxy.sub_state().await?,
            result,
            n_restarts,
        })
    }

    async fn start(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.run_job(Verb::Start, unit).await
    }

    async fn stop(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.run_job(Verb::Stop, unit).await
    }

    async fn restart(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.run_job(Verb::Restart, unit).await
    }
}
