//! Blocking calls that may hang (a stat or an ioctl on a FUSE mount whose process stopped
//! answering, a network call) run on a [`Lane`]: a thread of their own whose result is awaited
//! with a timeout and abandoned when the timeout passes. A lane runs one call at a time: while
//! an abandoned call is still blocked, the next one reports that instead of piling up more
//! blocked threads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a call on a [`Lane`] gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneError {
    /// The call did not return within the timeout (it was abandoned).
    TimedOut(Duration),
    /// An earlier call, abandoned after its timeout, is still blocked since this long.
    StillBlocked(Duration),
    /// The thread could not be started, or it panicked.
    Thread(String),
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneError::TimedOut(t) => write!(f, "no answer within {}", crate::clock::human(*t)),
            LaneError::StillBlocked(t) => {
                write!(
                    f,
                    "an earlier call is still blocked after {}",
                    crate::clock::human(*t)
                )
            }
            LaneError::Thread(e) => write!(f, "lane thread: {e}"),
        }
    }
}

/// Runs blocking calls on their own thread, one at a time, with a timeout (see the module
/// documentation).
#[derive(Debug, Clone, Default)]
pub struct Lane {
    busy_since: Arc<Mutex<Option<Instant>>>,
}

/// Marks the lane idle when dropped: after the call returned, or while its thread unwinds
/// from a panic (or if the thread never started).
struct Idle(Arc<Mutex<Option<Instant>>>);

impl Drop for Idle {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A call started on a [`Lane`].
pub struct Pending<T> {
    receiver: tokio::sync::oneshot::Receiver<T>,
}

impl Lane {
    /// A new, idle lane.
    pub fn new() -> Self {
        Lane::default()
    }

    /// Starts `call` on a new thread, unless an earlier call is still blocked.
    pub fn start<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Pending<T>, LaneError> {
        {
            let mut busy = self.busy_since.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(since) = *busy {
                return Err(LaneError::StillBlocked(since.elapsed()));
            }
            *busy = Some(Instant::now());
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let idle_again = Idle(self.busy_since.clone());
        let spawned = std::thread::Builder::new()
            .name("qsfs-lane".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                let value = call();
                drop(idle_again);
                let _ = sender.send(value);
            });
        // On a spawn error the closure (and with it `idle_again`) is dropped: the lane is idle.
        if let Err(e) = spawned {
            return Err(LaneError::Thread(e.to_string()));
        }
        Ok(Pending { receiver })
    }

    /// Starts `call` and waits at most `timeout` for it.
    pub async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LaneError> {
        self.start(call)?
            .wait(Instant::now() + timeout, timeout)
            .await
    }
}

impl<T> Pending<T> {
    /// Waits until `deadline` for the result; `timeout` is only used in the error.
    pub async fn wait(self, deadline: Instant, timeout: Duration) -> Result<T, LaneError> {
        match tokio::time::timeout_at(deadline.into(), self.receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(LaneError::Thread("the lane thread panicked".into())),
            Err(_) => Err(LaneError::TimedOut(timeout)),
        }
    }
}
