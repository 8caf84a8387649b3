//! The product's integration tests, one module per area, in one test binary (the library is
//! linked once). The contract tests (`*_standin`, `zdbfs_flush`) run the stand-ins of the
//! `qsfs-standins` crate and, with `QSFS_UPSTREAM_BIN`, the real programs. Filter by module:
//! `cargo test --test integration monitor::`.

#[path = "../support/mod.rs"]
mod support;

mod health;
mod hook;
mod image;
mod minio_standin;
mod monitor;
mod restore_points;
mod secrets;
mod zdb_standin;
mod zdbfs_flush;
mod zdbfs_standin;
mod zstor_lanes;
mod zstor_metadata;
mod zstor_standin;
