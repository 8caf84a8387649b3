//! qsfs: the parts that turn ThreeFold's quantum safe filesystem stack (0-db, 0-db-fs, zstor,
//! MinIO) into a systemd appliance.
//!
//! The binaries in `src/bin/` are thin: they parse arguments, load configuration and call into
//! the modules below, which are split by concern.
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod cuts;
pub mod exit;
pub mod fsutil;
pub mod health;
pub mod hook;
pub mod image;
pub mod lane;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod mountinfo;
pub mod notify;
pub mod restore_marks;
pub mod retry;
pub mod spool;
pub mod systemd;
pub mod wire;
pub mod zdb;
pub mod zdb_busy;
pub mod zdbfs;
pub mod zstor;
