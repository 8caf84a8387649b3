//! Helpers shared by the integration tests. The contract stand-ins themselves are in `bin/`.

#![allow(dead_code)] // each test crate uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of an example binary (a stand-in or a test driver) in this profile's target dir.
/// Under cargo the examples are (re)built once first, because `cargo test --test NAME` does not
/// build them by itself.
pub fn example(name: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = PROFILE_DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "--examples", "--manifest-path"]);
            build.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
            build
                .arg("--target-dir")
                .arg(profile_dir.parent().expect("target dir"));
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("cannot run cargo to build the examples");
            assert!(status.success(), "building the examples failed");
        }
        profile_dir
    });
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples`",
        bin.display()
    );
    bin
}
