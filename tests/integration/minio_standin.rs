//! The MinIO stand-in (`tests/standins/src/minio_standin.rs`, binary `minio-standin`): MinIO's
//! command line and environment, real S3 (s3s-fs) over a directory, MinIO's health endpoints,
//! graceful SIGTERM/SIGINT and its exit statuses.
//!
//! S3 requests are made with curl's own SigV4 signing (`--aws-sigv4`), as an operator would.
//! curl 7.88 (Debian 12) sends no `x-amz-content-sha256` by itself: bodiless requests rely on
//! the stand-in taking that as an empty payload (as MinIO does); uploads declare
//! `UNSIGNED-PAYLOAD`, which curl then signs. Every test runs its own server on its own port
//! and directory.

use crate::support;

use crate::support::upstream::free_port;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use wait_timeout::ChildExt;

const USER: &str = "qsfs-tester";
const PASSWORD: &str = "pw-9f3c1e7a-never-printed";
const SIGV4: &str = "aws:amz:us-east-1:s3";
const UNSIGNED_PAYLOAD: &str = "x-amz-content-sha256: UNSIGNED-PAYLOAD";

/// The stand-in's command with only the credentials we give it.
fn standin() -> Command {
    let mut command = Command::new(support::bin("minio-standin"));
    for name in [
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "MINIO_ROOT_USER_FILE",
        "MINIO_ROOT_PASSWORD_FILE",
        "QSFS_LOG",
    ] {
        command.env_remove(name);
    }
    command
}

/// Deterministic bytes that do not compress or repeat in a way that could hide a mix-up.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A running stand-in.
struct Server {
    child: Child,
    /// Where it answers: `127.0.0.1` or `[::1]`, and the port.
    host: &'static str,
    port: u16,
    /// Holds `data/` (the served directory) and `stderr.log`.
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `minio server --address 127.0.0.1:PORT DIR` and waits until it is live.
    fn start() -> Server {
        let port = free_port();
        Server::start_with(
            "127.0.0.1",
            port,
            &["--address", &format!("127.0.0.1:{port}")],
        )
    }

    /// Starts `minio server FLAGS DIR` with our credentials, to answer on `host` and `port`.
    fn start_with(host: &'static str, port: u16, flags: &[&str]) -> Server {
        let env = [("MINIO_ROOT_USER", USER), ("MINIO_ROOT_PASSWORD", PASSWORD)];
        Server::start_env(host, port, flags, &env)
    }

    /// Starts `minio server FLAGS DIR` with the environment `env`.
    fn start_env(host: &'static str, port: u16, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = standin()
            .envs(env.iter().copied())
            .arg("server")
            .args(flags)
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            host,
            port,
            dir,
        };
        support::wait_for("the stand-in to answer /minio/health/live", || {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the stand-in exited with {status}: {}", server.log());
            }
            (server.health("live") == 200).then_some(())
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap()
    }

    /// GET `/minio/health/{which}` without credentials: the status, or 0 without an answer.
    fn health(&self, which: &str) -> u16 {
        curl(&[&self.url(&format!("/minio/health/{which}"))]).status
    }

    /// A request signed with `user:password`.
    fn s3_as(&self, user: &str, password: &str, args: &[&str], path: &str) -> Reply {
        let credentials = format!("{user}:{password}");
        let url = self.url(path);
        let mut all = vec!["--aws-sigv4", SIGV4, "--user", credentials.as_str()];
        all.extend_from_slice(args);
        all.push(url.as_str());
        curl(&all)
    }

    /// A request signed with the right credentials.
    fn s3(&self, args: &[&str], path: &str) -> Reply {
        self.s3_as(USER, PASSWORD, args, path)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit (within the tests' timeout).
    fn wait(&mut self) -> ExitStatus {
        self.child
            .wait_timeout(support::TIMEOUT)
            .unwrap()
            .expect("the stand-in did not exit in time")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What curl got: the HTTP status (0 when nothing answered) and the body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl -sS -o BODY -w %{http_code} ARGS`.
fn curl(args: &[&str]) -> Reply {
    let body = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "%{http_code}", "-o"])
        .arg(body.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run curl");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Reply {
        status,
        body: std::fs::read(body.path()).unwrap_or_default(),
    }
}

fn assert_status(reply: &Reply, expected: u16, what: &str) {
    assert_eq!(reply.status, expected, "{what}: {}", reply.text());
}

#[test]
fn s3_round_trip_over_the_directory() {
    let mut server = Server::start();
    let object = pattern(4 * 1024 * 1024 + 123);
    let upload = server.dir.path().join("upload.bin");
    std::fs::write(&upload, &object).unwrap();

    assert_status(&server.s3(&["-X", "PUT"], "/bucket"), 200, "create bucket");
    assert!(
        server.data().join("bucket").is_dir(),
        "the bucket is a directory"
    );

    let put = server.s3(
        &["-H", UNSIGNED_PAYLOAD, "-T", upload.to_str().unwrap()],
        "/bucket/dir/object.bin",
    );
    assert_status(&put, 200, "put object");
    assert_eq!(
        std::fs::read(server.data().join("bucket/dir/object.bin")).unwrap(),
        object,
        "the object is a file in the directory"
    );

    let get = server.s3(&[], "/bucket/dir/object.bin");
    assert_status(&get, 200, "get object");
    assert!(get.body == object, "the object comes back byte-identical");

    let head = server.s3(&["--head"], "/bucket/dir/object.bin");
    assert_status(&head, 200, "head object");

    let list = server.s3(&[], "/bucket?list-type=2");
    assert_status(&list, 200, "list objects");
    let text = list.text();
    assert!(text.contains("<Key>dir/object.bin</Key>"), "listed: {text}");
    assert!(
        text.contains(&format!("<Size>{}</Size>", object.len())),
        "listed: {text}"
    );

    let buckets = server.s3(&[], "/");
    assert_status(&buckets, 200, "list buckets");
    assert!(
        buckets.text().contains("<Name>bucket</Name>"),
        "{}",
        buckets.text()
    );

    assert_status(
        &server.s3(&["-X", "DELETE"], "/bucket/dir/object.bin"),
        204,
        "delete object",
    );
    assert_status(
        &server.s3(&[], "/bucket/dir/object.bin"),
        404,
        "get a deleted object",
    );
    assert!(!server.data().join("bucket/dir/object.bin").exists());
    assert_status(
        &server.s3(&["-X", "DELETE"], "/bucket"),
        204,
        "delete bucket",
    );
    assert!(!server.data().join("bucket").exists());

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    let log = server.log();
    assert!(log.contains("MinIO stand-in"), "start line: {log}");
    assert!(log.contains("stopped on SIGTERM"), "stop line: {log}");
    assert!(
        !log.contains(PASSWORD),
        "the password is never logged: {log}"
    );
    // No per-request noise: a start line, a stop line, nothing for the 404.
    assert_eq!(log.lines().count(), 2, "{log}");
}

#[test]
fn wrong_or_missing_signatures_get_403() {
    let server = Server::start();
    let wrong = server.s3_as(USER, "not-the-password", &["-X", "PUT"], "/bucket");
    assert_status(&wrong, 403, "create a bucket with a wrong password");
    assert!(
        !server.data().join("bucket").exists(),
        "nothing was created"
    );
    assert_status(
        &server.s3_as(USER, "not-the-password", &[], "/"),
        403,
        "list buckets with a wrong password",
    );
    assert_status(
        &server.s3_as("someone-else", PASSWORD, &[], "/"),
        403,
        "list buckets as an unknown user",
    );
    assert_status(&curl(&[&server.url("/")]), 403, "an unsigned request");
    assert_status(
        &curl(&["-X", "PUT", &server.url("/bucket")]),
        403,
        "an unsigned PUT",
    );
    assert!(
        !server.data().join("bucket").exists(),
        "nothing was created"
    );
    assert_status(&server.s3(&[], "/"), 200, "the right password");
}

#[test]
fn health_endpoints_answer_without_auth() {
    let server = Server::start();
    for which in ["live", "ready"] {
        let url = server.url(&format!("/minio/health/{which}"));
        let get = curl(&[&url]);
        assert_status(&get, 200, which);
        assert!(get.body.is_empty());
        assert_status(&curl(&["--head", &url]), 200, which);
    }

    // Ready only while the directory is usable; live regardless.
    let away = server.dir.path().join("away");
    std::fs::rename(server.data(), &away).unwrap();
    assert_eq!(server.health("ready"), 503, "ready without the directory");
    assert_eq!(server.health("live"), 200, "live without the directory");
    std::fs::write(server.data(), "not a directory").unwrap();
    assert_eq!(server.health("ready"), 503, "ready over a file");
    std::fs::remove_file(server.data()).unwrap();
    std::fs::rename(&away, server.data()).unwrap();
    assert_eq!(server.health("ready"), 200, "ready again");
    assert_status(&server.s3(&[], "/"), 200, "S3 again");

    let log = server.log();
    assert!(log.contains("not ready"), "{log}");
    assert!(log.contains("ready again"), "{log}");
    // Two unready answers in a row: logged once.
    assert_eq!(log.matches("not ready").count(), 1, "{log}");
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let mut server = Server::start();
    assert_status(&server.s3(&["-X", "PUT"], "/bucket"), 200, "create bucket");
    let object = pattern(3 * 1024 * 1024);
    let upload = server.dir.path().join("upload.bin");
    std::fs::write(&upload, &object).unwrap();

    // About 3 s at 1 MiB/s: well inside the 10 s the stand-in gives in-flight requests.
    let credentials = format!("{USER}:{PASSWORD}");
    let mut slow_put = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args([
            "--limit-rate",
            "1M",
            "--aws-sigv4",
            SIGV4,
            "--user",
            &credentials,
        ])
        .args(["-H", UNSIGNED_PAYLOAD, "-T"])
        .arg(&upload)
        .arg(server.url("/bucket/slow.bin"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // s3s-fs writes an upload to `.tmp.N.internal.part` in the root first: once that exists,
    // the request is being served.
    let data = server.data();
    support::wait_for("the upload to start", || {
        std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
            .then_some(())
    });

    server.signal(Signal::SIGTERM);
    // It stops accepting at once, while the upload goes on.
    let address = ("127.0.0.1", server.port);
    support::wait_for("the listener to close", || {
        TcpStream::connect(address).is_err().then_some(())
    });
    assert!(
        slow_put.try_wait().unwrap().is_none(),
        "the upload was still running when the listener closed"
    );

    let put = slow_put.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&put.stdout),
        "200",
        "the upload finished"
    );
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert_eq!(
        std::fs::read(server.data().join("bucket/slow.bin")).unwrap(),
        object
    );
    let log = server.log();
    assert!(log.contains("stopped on SIGTERM"), "{log}");
    assert!(log.contains("in-flight requests finished"), "{log}");
}

#[test]
fn sigint_exits_0() {
    let mut server = Server::start();
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped on SIGINT"));
}

/// Runs the stand-in to completion (it must not start serving).
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if child.wait_timeout(support::TIMEOUT).unwrap().is_none() {
        child.kill().unwrap();
        panic!("the stand-in kept running");
    }
    child.wait_with_output().unwrap()
}

fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn missing_credentials_exit_1_without_printing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let cases: [(&str, Option<&str>, Option<&str>, &str); 5] = [
        ("no user", None, Some(PASSWORD), "MINIO_ROOT_USER"),
        ("no password", Some(USER), None, "MINIO_ROOT_PASSWORD"),
        (
            "neither",
            None,
            None,
            "MINIO_ROOT_USER and MINIO_ROOT_PASSWORD",
        ),
        (
            "empty password",
            Some(USER),
            Some(""),
            "MINIO_ROOT_PASSWORD",
        ),
        (
            "short password",
            Some(USER),
            Some("pw-9f3c"),
            "MINIO_ROOT_PASSWORD is too short",
        ),
    ];
    for (case, user, password, expected) in cases {
        let mut command = standin();
        command
            .args(["server", "--address", &address])
            .arg(dir.path().join("data"));
        if let Some(user) = user {
            command.env("MINIO_ROOT_USER", user);
        }
        if let Some(password) = password {
            command.env("MINIO_ROOT_PASSWORD", password);
        }
        let output = run(&mut command);
        let text = all_output(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {text}");
        assert!(text.contains(expected), "{case}: {text}");
        if case != "short password" {
            assert!(text.contains("default credentials"), "{case}: {text}");
        }
        assert!(
            !text.contains(PASSWORD),
            "{case}: the password was printed: {text}"
        );
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            assert!(
                !text.contains(password),
                "{case}: the password was printed: {text}"
            );
        }
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["server", "--bogus", data], "--bogus"),
        (&["server", data, "--certs-dir", "/etc"], "--certs-dir"),
        (&["server"], "no directory"),
        (&["server", data, data], "exactly one"),
        (&["server", "--address", "9000", data], "invalid address"),
        (&["server", "--address"], "needs a value"),
        (&["gateway", "s3"], "unknown command"),
    ];
    for (args, expected) in cases {
        let output = run(standin()
            .env("MINIO_ROOT_USER", USER)
            .env("MINIO_ROOT_PASSWORD", PASSWORD)
            .args(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: minio server"), "{args:?}: {stderr}");
    }
    assert!(!Path::new(data).exists(), "nothing was created");
}

#[test]
fn version_names_the_standin() {
    let output = run(standin().arg("--version"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("qsfs MinIO stand-in"), "{stdout}");
    assert!(stdout.contains("s3s-fs 0.14.1"), "{stdout}");
}

#[test]
fn minio_address_forms() {
    // `:PORT` is every interface; flags may follow DIR and take `=VALUE`, and the console
    // address, --json and --quiet are accepted.
    let port = free_port();
    let console = free_port();
    let mut server = Server::start_with(
        "127.0.0.1",
        port,
        &[
            &format!("--address=:{port}"),
            "--console-address",
            &format!(":{console}"),
            "--json",
        ],
    );
    assert_status(&server.s3(&[], "/"), 200, "S3 on :PORT via 127.0.0.1");
    assert!(
        TcpStream::connect(("127.0.0.1", console)).is_err(),
        "no console"
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());

    let port = free_port();
    let mut server = Server::start_with(
        "127.0.0.1",
        port,
        &["--quiet", "--address", &format!("localhost:{port}")],
    );
    assert_status(&server.s3(&[], "/"), 200, "S3 on localhost:PORT");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    assert_eq!(server.log(), "", "--quiet leaves only warnings and errors");

    // [IPv6]:PORT, where this host has IPv6.
    if let Ok(v6) = TcpListener::bind("[::1]:0") {
        let port = v6.local_addr().unwrap().port();
        drop(v6);
        let mut server =
            Server::start_with("[::1]", port, &["--address", &format!("[::1]:{port}")]);
        assert_status(&server.s3(&[], "/"), 200, "S3 on [::1]:PORT");
        server.signal(Signal::SIGTERM);
        assert_eq!(server.wait().code(), Some(0), "{}", server.log());
    }
}

/// As MinIO does, `MINIO_ROOT_USER_FILE` and `MINIO_ROOT_PASSWORD_FILE` name files that hold
/// the credentials (systemd credentials: `%d/NAME`), trimmed of surrounding white space; they
/// win over the plain variables. An unreadable file exits 1, naming the variable.
#[test]
fn credentials_from_files() {
    let files = tempfile::tempdir().unwrap();
    let user_file = files.path().join("minio-root-user");
    let password_file = files.path().join("minio-root-password");
    std::fs::write(&user_file, format!("{USER}\n")).unwrap();
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let server = Server::start_env(
        "127.0.0.1",
        port,
        &["--address", &address],
        &[
            ("MINIO_ROOT_USER_FILE", user_file.to_str().unwrap()),
            ("MINIO_ROOT_PASSWORD_FILE", password_file.to_str().unwrap()),
            ("MINIO_ROOT_PASSWORD", "not-the-password"),
        ],
    );
    assert_status(&server.s3(&["-X", "PUT"], "/bucket"), 200, "create bucket");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let missing = files.path().join("nope");
    let output = run(standin()
        .args(["server", "--address", &address])
        .arg(dir.path().join("data"))
        .env("MINIO_ROOT_USER_FILE", &user_file)
        .env("MINIO_ROOT_PASSWORD_FILE", &missing));
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("MINIO_ROOT_PASSWORD_FILE") && text.contains(&missing.display().to_string()),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}
