//! The upload queue as a pure state machine: which files wait for an upload, when each may run
//! next, which are running, and which spool jobs wait for which files. No I/O and no clock of
//! its own: every transition takes `now`, so the tests drive it with a fake clock.
//!
//! A file is *waiting* (with a due time) or *running*. New content arriving for a running file
//! (a newer spool job) marks it *superseded*: when the run ends it is queued again at once, and
//! the jobs that arrived meanwhile wait for that second run. A spool job is finished when every
//! file it lists has had a run that ended in [`Outcome::Done`] after the job arrived.

use super::files::Kind;
use super::upload::Source;
use crate::retry::Backoff;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One upload to run, as [`Queue::start_next`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The file's key (its path relative to the zdb roots).
    pub key: String,
    /// The file's real path.
    pub path: PathBuf,
    /// What the file is.
    pub kind: Kind,
    /// Where its bytes come from.
    pub source: Source,
    /// The spool jobs this run satisfies when it succeeds.
    pub jobs: BTreeSet<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified remote, or nothing to upload (the file is gone).
    Done,
    /// Try again after the backoff.
    Failed,
}

/// What [`Queue::finish`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Spool jobs with nothing left to wait for (their files can be removed).
    pub jobs: Vec<String>,
    /// After a failure: the attempt number and the delay before the next one.
    pub retry: Option<(u32, Duration)>,
}

#[derive(Debug)]
enum Run {
    Waiting { due: Instant, sequence: u64 },
    Running { superseded: bool },
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    kind: Kind,
    source: Source,
    /// The spool jobs that wait for this file.
    jobs: BTreeSet<String>,
    /// Failed attempts since the last new content.
    attempts: u32,
    run: Run,
    queued_unix_ms: u64,
}

/// The upload queue.
#[derive(Debug)]
pub struct Queue {
    files: HashMap<String, Entry>,
    /// Waiting files by due time (and arrival, for ties).
    due: BTreeSet<(Instant, u64, String)>,
    sequence: u64,
    /// Spool job id → how many files it still waits for.
    jobs: HashMap<String, usize>,
    retry: Backoff,
}

impl Queue {
    /// An empty queue.
    pub fn new(retry: Backoff) -> Self {
        Queue {
            files: HashMap::new(),
            due: BTreeSet::new(),
            sequence: 0,
            jobs: HashMap::new(),
            retry,
        }
    }

    /// Applies a reloaded configuration: later failures use the new delays.
    pub fn set_retry(&mut self, retry: Backoff) {
        self.retry = retry;
    }

    /// Whether the spool job `id` is known (registered and not finished).
    pub fn has_job(&self, id: &str) -> bool {
        self.jobs.contains_key(id)
    }

    /// Registers spool job `id`, which asks for the upload of `files` (key, path, kind,
    /// source). Returns `true` when the job waits for nothing (no files): it is finished.
    pub fn add_job(
        &mut self,
        id: &str,
        files: Vec<(String, PathBuf, Kind, Source)>,
        now: Instant,
        now_unix_ms: u64,
    ) -> bool {
        let mut waits_for = 0;
        for (key, path, kind, source) in files {
            self.add_file(&key, path, kind, now, now_unix_ms);
            let entry = self.files.get_mut(&key).expect("inserted");
            if !entry.jobs.insert(id.to_string()) {
                continue;
            }
            waits_for += 1;
            entry.source = source;
            // New content: a previous failure's backoff no longer applies.
            entry.attempts = 0;
            match &mut entry.run {
                Run::Running { superseded } => *superseded = true,
                Run::Waiting { .. } => self.schedule(&key, now),
            }
        }
        if waits_for > 0 {
            self.jobs.insert(id.to_string(), waits_for);
        }
        waits_for == 0
    }

    /// Queues `key` without a job (as reconciliation does for a file not verified remote), due
    /// at `now`. Returns `false` when it was queued already.
    pub fn add_file(
        &mut self,
        key: &str,
        path: PathBuf,
        kind: Kind,
        now: Instant,
        now_unix_ms: u64,
    ) -> bool {
        if self.files.contains_key(key) {
            return false;
        }
        self.sequence += 1;
        self.due.insert((now, self.sequence, key.to_string()));
        self.files.insert(
            key.to_string(),
            Entry {
                path,
                kind,
                source: Source::Live,
                jobs: BTreeSet::new(),
                attempts: 0,
                run: Run::Waiting {
                    due: now,
                    sequence: self.sequence,
                },
                queued_unix_ms: now_unix_ms,
            },
        );
        true
    }

    /// Makes `key` due at `at` (it must be in the queue).
    fn schedule(&mut self, key: &str, at: Instant) {
        let entry = self.files.get_mut(key).expect("scheduled file is queued");
        if let Run::Waiting { due, sequence } = entry.run {
            self.due.remove(&(due, sequence, key.to_string()));
        }
        self.sequence += 1;
        entry.run = Run::Waiting {
            due: at,
            sequence: self.sequence,
        };
        self.due.insert((at, self.sequence, key.to_string()));
    }

    /// When the next waiting file is due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(due, _, _)| *due)
    }

    /// Takes the first file due at `now` and marks it running.
    pub fn start_next(&mut self, now: Instant) -> Option<Upload> {
        let first = self.due.first()?;
        if first.0 > now {
            return None;
        }
        let (_, _, key) = self.due.pop_first().expect("not empty");
        let entry = self.files.get_mut(&key).expect("due file is queued");
        entry.run = Run::Running { superseded: false };
        Some(Upload {
            key,
            path: entry.path.clone(),
            kind: entry.kind,
            source: entry.source.clone(),
            jobs: entry.jobs.clone(),
        })
    }

    /// The run of `key` that carried `jobs` ended with `outcome`.
    pub fn finish(
        &mut self,
        key: &str,
        jobs: &BTreeSet<String>,
        outcome: Outcome,
        now: Instant,
    ) -> Finished {
        let Some(entry) = self.files.get_mut(key) else {
            return Finished::default();
        };
        let Run::Running { superseded } = entry.run else {
            // Not running: a stale result; nothing to decide.
            return Finished::default();
        };
        if outcome == Outcome::Failed {
            entry.attempts += 1;
            let attempts = entry.attempts;
            let delay = if superseded {
                Duration::ZERO
            } else {
                self.retry.delay(attempts)
            };
            self.schedule(key, now + delay);
            return Finished {
                jobs: Vec::new(),
                retry: Some((attempts, delay)),
            };
        }
        entry.jobs.retain(|id| !jobs.contains(id));
        let mut finished = Vec::new();
        for id in jobs {
            if let Some(left) = self.jobs.get_mut(id) {
                *left -= 1;
                if *left == 0 {
                    self.jobs.remove(id);
                    finished.push(id.clone());
                }
            }
        }
        if superseded {
            self.schedule(key, now);
        } else {
            self.files.remove(key);
        }
        Finished {
            jobs: finished,
            retry: None,
        }
    }

    /// Files in the queue (waiting or running).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Files whose upload runs now.
    pub fn running(&self) -> usize {
        let running = |e: &&Entry| matches!(e.run, Run::Running { .. });
        self.files.values().filter(running).count()
    }

    /// Spool jobs that still wait for an upload.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// When the longest-waiting file was queued (unix ms).
    pub fn oldest_queued_unix_ms(&self) -> Option<u64> {
        self.files.values().map(|e| e.queued_unix_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn file(key: &str) -> (String, PathBuf, Kind, Source) {
        (
            key.to_string(),
            PathBuf::from("/zdb").join(key),
            Kind::Data(0),
            Source::Live,
        )
    }

    fn jobs(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_job_finishes_when_all_its_files_are_done() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        assert!(!q.add_job("j1", vec![file("ns/d0"), file("ns/i0")], t0, 0));
        assert!(q.has_job("j1"));
        assert_eq!((q.len(), q.jobs(), q.running()), (2, 1, 0));
        let a = q.start_next(t0).unwrap();
        let b = q.start_next(t0).unwrap();
        assert_eq!((a.key.as_str(), b.key.as_str()), ("ns/d0", "ns/i0"));
        assert_eq!(a.jobs, jobs(&["j1"]));
        assert!(q.start_next(t0).is_none());
        assert_eq!(q.running(), 2);
        let first = q.finish(&a.key, &a.jobs, Outcome::Done, t0);
        assert!(first.jobs.is_empty());
        let second = q.finish(&b.key, &b.jobs, Outcome::Done, t0);
        assert_eq!(second.jobs, ["j1"]);
        assert!(q.is_empty() && !q.has_job("j1") && q.running() == 0);
    }

    #[test]
    fn a_job_without_files_is_finished_at_once() {
        let mut q = Queue::new(RETRY);
        assert!(q.add_job("empty", Vec::new(), Instant::now(), 0));
        assert!(!q.has_job("empty") && q.is_empty());
    }

    #[test]
    fn a_failure_retries_after_a_doubling_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job("j1", vec![file("ns/d0")], t0, 0);
        let mut now = t0;
        for (attempt, delay) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (6, 60)] {
            let run = q.start_next(now).unwrap();
            let done = q.finish(&run.key, &run.jobs, Outcome::Failed, now);
            assert_eq!(done.retry, Some((attempt, secs(delay))));
            assert!(done.jobs.is_empty());
            assert_eq!(q.next_due(), Some(now + secs(delay)));
            assert!(q
                .start_next(now + secs(delay) - Duration::from_millis(1))
                .is_none());
            now += secs(delay);
        }
        let run = q.start_next(now).unwrap();
        assert_eq!(
            q.finish(&run.key, &run.jobs, Outcome::Done, now).jobs,
            ["j1"]
        );
    }

    #[test]
    fn new_content_cancels_the_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job("j1", vec![file("ns/i0")], t0, 0);
        let run = q.start_next(t0).unwrap();
        q.finish(&run.key, &run.jobs, Outcome::Failed, t0);
        assert_eq!(q.next_due(), Some(t0 + secs(5)));
        q.add_job("j2", vec![file("ns/i0")], t0 + secs(1), 0);
        assert_eq!(q.next_due(), Some(t0 + secs(1)));
        let run = q.start_next(t0 + secs(1)).unwrap();
        assert_eq!(run.jobs, jobs(&["j1", "j2"]));
        let done = q.finish(&run.key, &run.jobs, Outcome::Done, t0 + secs(1));
        assert_eq!(done.jobs, ["j1", "j2"]);
    }

    #[test]
    fn content_arriving_during_a_run_supersedes_it() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job("old", vec![file("ns/i0")], t0, 0);
        let run = q.start_next(t0).unwrap();
        let newer = (
            "ns/i0".to_string(),
            PathBuf::from("/zdb/ns/i0"),
            Kind::Index(0),
            Source::Snapshot(PathBuf::from("/spool/snap")),
        );
        q.add_job("new", vec![newer], t0 + secs(1), 0);
        assert!(
            q.next_due().is_none(),
            "a running file is not scheduled twice"
        );
        // The first run satisfies only the job it carried, and the file runs again at once.
        let done = q.finish(&run.key, &run.jobs, Outcome::Done, t0 + secs(2));
        assert_eq!(done.jobs, ["old"]);
        assert_eq!(q.next_due(), Some(t0 + secs(2)));
        let again = q.start_next(t0 + secs(2)).unwrap();
        assert_eq!(again.jobs, jobs(&["new"]));
        assert_eq!(again.source, Source::Snapshot(PathBuf::from("/spool/snap")));
        assert_eq!(
            q.finish(&again.key, &again.jobs, Outcome::Done, t0 + secs(3))
                .jobs,
            ["new"]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_superseded_run_that_failed_runs_again_without_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job("old", vec![file("ns/i0")], t0, 0);
        let run = q.start_next(t0).unwrap();
        q.add_job("new", vec![file("ns/i0")], t0, 0);
        let failed = q.finish(&run.key, &run.jobs, Outcome::Failed, t0 + secs(1));
        assert_eq!(failed.retry, Some((1, Duration::ZERO)));
        let again = q.start_next(t0 + secs(1)).unwrap();
        assert_eq!(again.jobs, jobs(&["old", "new"]));
    }

    #[test]
    fn reconciliation_queues_a_file_once_and_no_job_waits() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        assert!(q.add_file("ns/d1", PathBuf::from("/zdb/ns/d1"), Kind::Data(1), t0, 7));
        assert!(!q.add_file("ns/d1", PathBuf::from("/zdb/ns/d1"), Kind::Data(1), t0, 8));
        assert_eq!(q.oldest_queued_unix_ms(), Some(7));
        let run = q.start_next(t0).unwrap();
        assert!(run.jobs.is_empty());
        assert_eq!(
            q.finish(&run.key, &run.jobs, Outcome::Done, t0),
            Finished::default()
        );
        assert!(q.is_empty());
    }

    #[test]
    fn files_run_in_due_order_then_arrival_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job(
            "j",
            vec![file("ns/d2"), file("ns/d0"), file("ns/d1")],
            t0,
            0,
        );
        let order: Vec<String> = std::iter::from_fn(|| q.start_next(t0).map(|u| u.key)).collect();
        assert_eq!(order, ["ns/d2", "ns/d0", "ns/d1"], "in the job's order");
        let mut q = Queue::new(RETRY);
        q.add_file("ns/d9", PathBuf::from("/x"), Kind::Data(9), t0, 0);
        q.add_file("ns/d3", PathBuf::from("/x"), Kind::Data(3), t0, 0);
        let order: Vec<String> = std::iter::from_fn(|| q.start_next(t0).map(|u| u.key)).collect();
        assert_eq!(order, ["ns/d9", "ns/d3"]);
    }

    #[test]
    fn a_reload_changes_later_delays_only() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        q.add_job("j", vec![file("ns/d0")], t0, 0);
        let run = q.start_next(t0).unwrap();
        q.finish(&run.key, &run.jobs, Outcome::Failed, t0);
        q.set_retry(Backoff::new(secs(1), secs(2)));
        assert_eq!(
            q.next_due(),
            Some(t0 + secs(5)),
            "the scheduled retry keeps its time"
        );
        let run = q.start_next(t0 + secs(5)).unwrap();
        let failed = q.finish(&run.key, &run.jobs, Outcome::Failed, t0 + secs(5));
        assert_eq!(failed.retry, Some((2, secs(2))));
    }

    #[test]
    fn a_stale_or_unknown_result_changes_nothing() {
        let t0 = Instant::now();
        let mut q = Queue::new(RETRY);
        assert_eq!(
            q.finish("nope", &jobs(&[]), Outcome::Done, t0),
            Finished::default()
        );
        q.add_job("j", vec![file("ns/d0")], t0, 0);
        // Waiting, not running: a result for it is stale.
        assert_eq!(
            q.finish("ns/d0", &jobs(&["j"]), Outcome::Done, t0),
            Finished::default()
        );
        assert!(q.has_job("j") && q.len() == 1);
    }
}
