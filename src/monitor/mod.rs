//! `zstor_monitor`: durable, verified uploads of sealed zdb files; cache eviction; backend
//! health; repair.
//!
//! * [`daemon`]: the event loop (spool, uploads, timers, signals, systemd notifications).
//! * [`upload`]: store one file through zstor and verify it with `zstor check`.
//! * [`reconcile`]: every sealed file is verified remote or queued.
//! * [`evict`]: keep the cache under `max_zdb_data_dir_size` with verified, sealed files only.
//! * [`backends`]: NSINFO checks and the healthy / low space / unknown / unreachable machine.
//! * [`vdc`]: asking the eVDC controller for a replacement backend.
//! * [`state`]: the durable state (redb); [`files`]: naming and scanning zdb's files.
//! * [`status`]: what is published for `zstor_monitor status` and `qsfs-health`;
//!   [`metrics`]: the same as Prometheus metrics.

pub mod backends;
pub mod daemon;
pub mod evict;
pub mod files;
pub mod flush;
pub mod metrics;
pub mod queue;
pub mod rebuild;
pub mod reconcile;
pub mod state;
pub mod status;
pub mod tasks;
pub mod upload;
pub mod vdc;
