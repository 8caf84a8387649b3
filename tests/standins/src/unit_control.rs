//! Test helper: drives `qsfs::systemd::Systemd` from the command line, so the system tests can
//! exercise the real D-Bus client against the real systemd inside their container.
//!
//! Usage: `unit-control status|start|stop|restart UNIT`. Prints one JSON value: the unit
//! status, or `{"job": <result>}`; on error `{"error": "…"}` and exit code 1.

use qsfs::systemd::{Systemd, UnitControl};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [verb, unit] = args.as_slice() else {
        eprintln!("usage: unit-control status|start|stop|restart UNIT");
        std::process::exit(2);
    };
    let result = async {
        let systemd = Systemd::connect(Duration::from_secs(60)).await?;
        Ok::<_, qsfs::systemd::SystemdError>(match verb.as_str() {
            "status" => serde_json::to_value(systemd.status(unit).await?).unwrap(),
            "start" => serde_json::json!({ "job": systemd.start(unit).await? }),
            "stop" => serde_json::json!({ "job": systemd.stop(unit).await? }),
            "restart" => serde_json::json!({ "job": systemd.restart(unit).await? }),
            other => {
                eprintln!("unknown verb {other}");
                std::process::exit(2);
            }
        })
    }
    .await;
    match result {
        Ok(value) => println!("{value}"),
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            std::process::exit(1);
        }
    }
}
