//! `zstor_monitor`: durable, verified uploads of sealed zdb files; cache eviction; backend
//! health; repair.
//!
//! The logic is in pure state machines, unit-tested without processes or a real clock; the
//! daemon is the I/O actor that drives them:
//!
//! * [`queue`]: which files wait for an upload, when each runs next, which spool jobs wait.
//! * [`rebuild`]: files to rebuild onto a changed backend set, attempts, progress.
//! * [`backends`]: NSINFO checks and the healthy / low space / unknown / unreachable machine.
//! * [`daemon`]: the event loop (timers, signals, systemd notifications), one file per lane
//!   (`uploads`, `repair`, `upkeep`); its background work is tracked by [`tasks`].
//! * [`upload`]: store one file through zstor and verify it with `zstor check`.
//! * [`reconcile`]: every sealed file is verified remote or queued.
//! * [`evict`]: keep the cache under `max_zdb_data_dir_size` with verified, sealed files only;
//!   chosen under the state lock, deleted without it, recorded in batches.
//! * [`flush`]: zdbfs's snapshot ioctl on a lane of its own.
//! * [`cuts`]: publishing restore points, and forcing them on an interval.
//! * [`vdc`]: asking the eVDC controller for a replacement backend.
//! * [`state`]: the durable state (redb); [`files`]: naming and scanning zdb's files.
//! * [`status`]: what is published for `zstor_monitor status` and `qsfs-health`;
//!   [`metrics`]: the same as Prometheus metrics.

pub mod backends;
pub mod cuts;
pub mod daemon;
pub mod damaged;
pub mod evict;
pub mod files;
pub mod flush;
pub mod metrics;
pub mod queue;
pub mod rebuild;
pub mod reconcile;
pub mod replace;
pub mod state;
pub mod status;
pub mod tasks;
pub mod upload;
pub mod vdc;
