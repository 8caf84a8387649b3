//! Asking the eVDC controller for a replacement backend (`[vdc_config]`, as upstream's
//! monitor did): `POST {url}/api/controller/zdb/add` with `{"password": …, "capacity": new_size}`.
//! The monitor asks once per unreachable or full backend and remembers it across restarts; it
//! never edits the zstor config itself (the controller does, then a reload rebuilds).

use crate::config::monitor::VdcConfig;
use std::time::Duration;

/// The state key under which a request for `backend` is remembered.
pub fn state_key(backend_label: &str) -> String {
    format!("vdc_requested/{backend_label}")
}

/// Why a replacement request failed. It names the URL, never the password.
#[derive(Debug, thiserror::Error)]
pub enum VdcError {
    /// The controller answered with an error status.
    #[error("{url} answered HTTP {code}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        code: u16,
    },
    /// No answer (connection, timeout, TLS).
    #[error("{url}: {source}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// The transport error.
        source: ureq::Error,
    },
}

/// Sends the request (blocking).
pub fn request_replacement(vdc: &VdcConfig, timeout: Duration) -> Result<(), VdcError> {
    let url = format!("{}/api/controller/zdb/add", vdc.url.trim_end_matches('/'));
    let body = serde_json::json!({ "password": vdc.password.expose(), "capacity": vdc.new_size });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    match agent.post(&url).send_json(&body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::StatusCode(code)) => Err(VdcError::Status { url, code }),
        Err(source) => Err(VdcError::Unreachable { url, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A one-request HTTP server answering `status`; returns the request line and body.
    fn serve_once(status: u16) -> (String, std::thread::JoinHandle<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            (
                request_line.trim().to_string(),
                String::from_utf8(body).unwrap(),
            )
        });
        (url, handle)
    }

    #[test]
    fn posts_the_request_and_reports_failures_without_the_password() {
        let (url, server) = serve_once(200);
        let vdc = VdcConfig {
            url: format!("{url}/"),
            password: Secret::new("vdc-secret"),
            new_size: 100,
        };
        request_replacement(&vdc, Duration::from_secs(5)).unwrap();
        let (line, body) = server.join().unwrap();
        assert_eq!(line, "POST /api/controller/zdb/add HTTP/1.1");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"password": "vdc-secret", "capacity": 100})
        );

        let (url, server) = serve_once(503);
        let vdc = VdcConfig { url, ..vdc };
        let err = request_replacement(&vdc, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(
            err.contains("HTTP 503") && !err.contains("vdc-secret"),
            "{err}"
        );
    }
}
