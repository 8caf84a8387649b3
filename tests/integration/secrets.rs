//! Secrets never reach any output: whatever our binaries print, at any log level and on any
//! error path, never contains a configured key or password.

use crate::support;

use crate::support::upstream::{Stack, BACKEND_PASSWORD};
use crate::support::Appliance;
use std::process::Command;

const KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
const PASSWORD: &str = "hunter2-backend-password";

fn assert_clean(what: &str, output: &std::process::Output) {
    for stream in [&output.stdout, &output.stderr] {
        assert_text_clean(what, &String::from_utf8_lossy(stream));
    }
}

fn assert_text_clean(what: &str, text: &str) {
    for secret in [KEY, PASSWORD, "metapass-secret", "datapass-secret"] {
        assert!(!text.contains(secret), "{what} printed a secret:\n{text}");
    }
}

/// On the stand-ins and on the real zdb and zstor: zstor 0.5 itself prints the whole config,
/// secrets and all, when it cannot parse it; the hook's output never repeats them.
#[test]
fn the_hook_never_prints_a_secret() {
    support::upstream::each_stack(check_the_hook_never_prints_a_secret);
}

fn check_the_hook_never_prints_a_secret(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let good = std::fs::read_to_string(&app.zstor_config)
        .unwrap()
        .replace(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            KEY,
        )
        .replace(BACKEND_PASSWORD, PASSWORD)
        .replace("datapass-secret", PASSWORD);
    let variants = [
        ("a valid config", good.clone()),
        (
            "a password of the wrong type",
            good.replacen(&format!("\"{PASSWORD}\""), "918273645", 1),
        ),
        ("a key that is too short", good.replacen(KEY, &KEY[..40], 1)),
        (
            "an unknown key next to the secrets",
            good.replacen(
                "[encryption]\n",
                &format!("[encryption]\nsecret = \"{PASSWORD}\"\n"),
                1,
            ),
        ),
    ];
    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::create_dir_all(app.index.join("zdbfs-data")).unwrap();
    std::fs::write(ns.join("d0"), b"sealed").unwrap();
    let d0 = ns.join("d0").display().to_string();
    let d1 = ns.join("d1").display().to_string();
    for (what, config) in variants {
        std::fs::write(&app.zstor_config, config).unwrap();
        for args in [
            vec!["jump-data", "unix:///z", &d0, &d1],
            vec!["missing-data", "unix:///z", &d1],
            vec![
                "namespaces-init",
                "unix:///z",
                app.index.to_str().unwrap(),
                app.data.to_str().unwrap(),
            ],
            vec!["ready", "unix:///z"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_zdb-hook"))
                .args(&args)
                .env("QSFS_CONFIG", &app.qsfs_config)
                .env("QSFS_LOG_TARGET", "stderr")
                .env("QSFS_LOG", "trace")
                .output()
                .unwrap();
            assert_clean(&format!("zdb-hook {} with {what}", args[0]), &out);
            if args[0] == "missing-data" {
                // The error path ran, and its message (with zstor's own error) was printed.
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.contains("missing-data failed"), "{stderr}");
            }
        }
        // The hook's zstor commands ran in its read lane, which logs too.
        assert_text_clean(&format!("the read lane with {what}"), &app.reads.log());
        // zstor's own answer to a config it cannot parse holds the secrets (zstor 0.5 prints
        // the config's text): the hook's output above is clean because the runner redacts it.
        if what != "a valid config" {
            let out = Command::new(&stack.zstor.path)
                .arg("-c")
                .arg(&app.zstor_config)
                .arg("--log_file")
                .arg(app.dir.path().join("zstor.log"))
                .args(["check", "--file", &d0])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(PASSWORD),
                "zstor with {what}: {out:?}"
            );
        }
    }
}
