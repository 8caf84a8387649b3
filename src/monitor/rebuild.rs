//! Rebuilding verified files onto a changed backend set, as a pure state machine: what waits,
//! how many attempts each had, progress. The daemon runs the `zstor rebuild`s it hands out.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

/// A file that failed this often is left for the next start.
pub const ATTEMPTS: u32 = 3;

/// One rebuild to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The file's key.
    pub key: String,
    /// Failed attempts before this one.
    pub attempts: u32,
}

/// What [`Rebuild::finish`] decided for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Rebuilt: record the file as on the new backend set.
    Done,
    /// Failed; queued again.
    Retry,
    /// Failed [`ATTEMPTS`] times: left for the next start.
    GaveUp,
}

/// The rebuild in progress (empty when none is).
#[derive(Debug, Default)]
pub struct Rebuild {
    queue: VecDeque<Task>,
    /// The files queued or running (a file is in a rebuild once).
    pending: HashSet<String>,
    /// Files finished (rebuilt or given up).
    pub done: u64,
    /// Files in this rebuild.
    pub total: u64,
    /// Files given up on.
    pub failed: u64,
    /// Nothing starts before this instant (the zstor daemon is reloading its config).
    not_before: Option<Instant>,
}

impl Rebuild {
    /// Adds files to rebuild (those not in it already); a new rebuild starts when none runs.
    pub fn add(&mut self, keys: impl IntoIterator<Item = String>) {
        if self.pending.is_empty() {
            *self = Rebuild::default();
        }
        for key in keys {
            if !self.pending.insert(key.clone()) {
                continue;
            }
            self.total += 1;
            self.queue.push_back(Task { key, attempts: 0 });
        }
    }

    /// Starts nothing before `instant`.
    pub fn hold_until(&mut self, instant: Instant) {
        self.not_before = Some(instant);
    }

    /// The next rebuild to run at `now`, if fewer than `concurrency` run.
    pub fn start_next(&mut self, concurrency: usize, now: Instant) -> Option<Task> {
        if self.running() >= concurrency || self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        self.queue.pop_front()
    }

    /// A rebuild handed out by [`Rebuild::start_next`] ended.
    pub fn finish(&mut self, task: Task, ok: bool) -> Step {
        if ok {
            self.pending.remove(&task.key);
            self.done += 1;
            Step::Done
        } else if task.attempts + 1 < ATTEMPTS {
            self.queue.push_back(Task {
                key: task.key,
                attempts: task.attempts + 1,
            });
            Step::Retry
        } else {
            self.pending.remove(&task.key);
            self.failed += 1;
            self.done += 1;
            Step::GaveUp
        }
    }

    /// Rebuilds running now.
    pub fn running(&self) -> usize {
        self.pending.len() - self.queue.len()
    }

    /// Whether a rebuild is in progress.
    pub fn active(&self) -> bool {
        self.total > 0
    }

    /// Every file of the rebuild is on the new set (also when it had none): the set can be
    /// recorded as current.
    pub fn succeeded(&self) -> bool {
        self.pending.is_empty() && self.failed == 0
    }

    /// Whether progress is worth a journal line (about every tenth, and the last).
    pub fn report_progress(&self) -> bool {
        let total = self.total.max(1);
        self.done == total || self.done.is_multiple_of((total / 10).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_starts_while_held() {
        let mut r = Rebuild::default();
        r.add(["a".to_string()]);
        let now = Instant::now();
        r.hold_until(now + Duration::from_secs(2));
        assert_eq!(r.start_next(1, now + Duration::from_secs(1)), None);
        assert_eq!(
            r.start_next(1, now + Duration::from_secs(2)).unwrap().key,
            "a"
        );
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("data/ns/d{i}")).collect()
    }

    #[test]
    fn a_rebuild_succeeds_when_every_file_is_done() {
        let mut r = Rebuild::default();
        assert!(!r.active() && r.succeeded(), "nothing to rebuild");
        r.add(keys(3));
        let a = r.start_next(2, Instant::now()).unwrap();
        let b = r.start_next(2, Instant::now()).unwrap();
        assert!(
            r.start_next(2, Instant::now()).is_none(),
            "at most `concurrency` at once"
        );
        assert_eq!(r.finish(a, true), Step::Done);
        let c = r.start_next(2, Instant::now()).unwrap();
        assert_eq!(r.finish(b, true), Step::Done);
        assert!(!r.succeeded());
        assert_eq!(r.finish(c, true), Step::Done);
        assert!(r.succeeded() && r.done == 3 && r.total == 3);
    }

    #[test]
    fn a_failing_file_is_retried_then_given_up() {
        let mut r = Rebuild::default();
        r.add(keys(1));
        for attempt in 0..ATTEMPTS {
            let task = r.start_next(1, Instant::now()).unwrap();
            assert_eq!(task.attempts, attempt);
            let step = r.finish(task, false);
            assert_eq!(
                step,
                if attempt + 1 < ATTEMPTS {
                    Step::Retry
                } else {
                    Step::GaveUp
                }
            );
        }
        assert!(r.start_next(1, Instant::now()).is_none());
        assert!(!r.succeeded(), "a given-up file keeps the old set recorded");
        assert_eq!((r.done, r.failed), (1, 1));
    }

    #[test]
    fn files_added_while_running_join_the_rebuild() {
        let mut r = Rebuild::default();
        r.add(keys(1));
        let task = r.start_next(1, Instant::now()).unwrap();
        r.add(vec!["data/ns/d9".to_string()]);
        assert_eq!(r.total, 2);
        r.finish(task, true);
        let next = r.start_next(1, Instant::now()).unwrap();
        r.finish(next, true);
        assert!(r.succeeded());
        // A later change starts a new rebuild.
        r.add(keys(4));
        assert_eq!((r.done, r.total), (0, 4));
    }

    #[test]
    fn a_file_added_again_while_queued_or_running_is_rebuilt_once() {
        let mut r = Rebuild::default();
        r.add(keys(2));
        let running = r.start_next(1, Instant::now()).unwrap();
        // A second change notice (SIGHUP after the config's mtime was seen) names them again.
        r.add(keys(2));
        assert_eq!(r.total, 2);
        r.finish(running, true);
        let next = r.start_next(1, Instant::now()).unwrap();
        r.finish(next, true);
        assert!(r.start_next(1, Instant::now()).is_none() && r.succeeded() && r.done == 2);
    }

    #[test]
    fn progress_is_reported_about_every_tenth() {
        let mut r = Rebuild::default();
        r.add(keys(100));
        let mut reported = 0;
        while let Some(task) = r.start_next(1, Instant::now()) {
            r.finish(task, true);
            reported += r.report_progress() as u32;
        }
        assert_eq!(reported, 10);
    }
}
