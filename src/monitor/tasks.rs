//! The monitor's background work, tracked in one [`JoinSet`]: each task is labelled with the
//! [`Activity`] it belongs to, so "is a reconciliation running" and "how many uploads run" are
//! read from the set of running tasks instead of flags and counters kept by hand.

use std::collections::HashMap;
use std::future::Future;
use tokio::task::{Id, JoinSet};

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Activity {
    /// A `zstor store`.
    Upload,
    /// A `zstor check` after a store.
    Verify,
    /// A `zstor rebuild`.
    Rebuild,
    /// Reconciliation of the zdb roots with the state.
    Reconcile,
    /// Cache eviction.
    Evict,
    /// One round of backend checks.
    CheckBackends,
    /// A replacement request for this backend.
    AskVdc(String),
    /// zdbfs's snapshot ioctl.
    Flush,
    /// A pass publishing restore points.
    PublishCuts,
    /// zdb made to take a restore point.
    ForceCut,
}

/// Running tasks, each ending in an event `E`.
pub struct Tasks<E> {
    set: JoinSet<E>,
    running: HashMap<Id, Activity>,
}

impl<E: Send + 'static> Tasks<E> {
    /// No tasks.
    pub fn new() -> Self {
        Tasks {
            set: JoinSet::new(),
            running: HashMap::new(),
        }
    }

    /// Runs blocking `work` on tokio's blocking pool.
    pub fn spawn_blocking(
        &mut self,
        activity: Activity,
        work: impl FnOnce() -> E + Send + 'static,
    ) {
        let handle = self.set.spawn_blocking(work);
        self.running.insert(handle.id(), activity);
    }

    /// Runs `work` on the runtime.
    pub fn spawn(&mut self, activity: Activity, work: impl Future<Output = E> + Send + 'static) {
        let handle = self.set.spawn(work);
        self.running.insert(handle.id(), activity);
    }

    /// Whether a task of `activity` runs.
    pub fn busy(&self, activity: &Activity) -> bool {
        self.running.values().any(|a| a == activity)
    }

    /// How many tasks of `activity` run.
    pub fn count(&self, activity: &Activity) -> usize {
        self.running.values().filter(|a| *a == activity).count()
    }

    /// Whether nothing runs.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The event of the next task to end; pends forever while nothing runs (for `select!`).
    /// A task that panicked is logged and skipped.
    pub async fn next(&mut self) -> E {
        loop {
            match self.set.join_next_with_id().await {
                Some(Ok((id, event))) => {
                    self.running.remove(&id);
                    return event;
                }
                Some(Err(e)) => {
                    let activity = self.running.remove(&e.id());
                    tracing::error!("a monitor task ({activity:?}) failed: {e}");
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}

impl<E: Send + 'static> Default for Tasks<E> {
    fn default() -> Self {
        Tasks::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_are_counted_by_activity_until_they_end() {
        let mut tasks = Tasks::new();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        tasks.spawn_blocking(Activity::Upload, move || {
            wait.recv().unwrap();
            1
        });
        tasks.spawn(Activity::Reconcile, async { 2 });
        assert_eq!(tasks.count(&Activity::Upload), 1);
        assert!(tasks.busy(&Activity::Reconcile) && !tasks.busy(&Activity::Evict));
        assert_eq!(tasks.next().await, 2);
        assert!(!tasks.busy(&Activity::Reconcile));
        go.send(()).unwrap();
        assert_eq!(tasks.next().await, 1);
        assert!(tasks.is_empty() && tasks.count(&Activity::Upload) == 0);
    }

    #[tokio::test]
    async fn a_panicked_task_is_skipped() {
        let mut tasks = Tasks::new();
        tasks.spawn(Activity::Flush, async { panic!("boom") });
        // The panic yields no event: `next` skips it and then waits for a task that never comes.
        let waited = tokio::time::timeout(std::time::Duration::from_secs(2), tasks.next()).await;
        assert!(waited.is_err());
        assert!(tasks.is_empty() && !tasks.busy(&Activity::Flush));
        tasks.spawn_blocking(Activity::Evict, || 7);
        assert_eq!(tasks.next().await, 7);
    }
}
