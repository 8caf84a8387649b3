//! System tests on real systemd: a fresh Debian rootfs booted with `systemd-nspawn --boot`.
//!
//! They need root, debootstrap and systemd-container, so plain `cargo test` skips them
//! (`#[ignore]`); `tests/run` (the README's test command) runs them with `--include-ignored`.

#[path = "../support/mod.rs"]
mod support;

mod appliance;
mod container;
mod dbus_client;
mod health;
mod logging;
mod loss;
mod preflight;
mod sandbox;
mod soak;
mod trial;
mod upgrade;
