//! A minimal S3 client for `qsfs-image try`: create a bucket, PUT and GET objects, each request
//! signed with AWS Signature Version 4 (header form, signed payload hash).
//!
//! The signing is pure ([`authorization`]) and checked against AWS's published example; the
//! secret key never appears in an error or a log line.

use crate::config::Secret;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::{Duration, SystemTime};

/// The region the appliance's MinIO answers for (its default).
pub const REGION: &str = "us-east-1";

/// An access key and its secret.
pub struct Credentials {
    /// The access key (MinIO's root user).
    pub access_key: String,
    /// The secret key (MinIO's root password).
    pub secret_key: Secret,
}

/// One request to sign: `path` already URI-encoded, `query` canonical (sorted, encoded).
pub struct Request<'a> {
    /// `GET`, `PUT`…
    pub method: &'a str,
    /// The `Host` header (with the port when not the default).
    pub host: &'a str,
    /// The URI-encoded path (`/bucket/key`).
    pub path: &'a str,
    /// The canonical query string (empty when none).
    pub query: &'a str,
    /// Headers besides `host`, `x-amz-date` and `x-amz-content-sha256`: (name, value).
    pub headers: &'a [(&'a str, &'a str)],
    /// The hex sha256 of the payload.
    pub payload_sha256: &'a str,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The `Authorization` header of `request` at `amz_date` (`YYYYMMDD'T'HHMMSS'Z'`), for
/// `service` in `region`.
pub fn authorization(
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request,
) -> String {
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .chain([
            ("host".to_string(), request.host.to_string()),
            (
                "x-amz-content-sha256".to_string(),
                request.payload_sha256.to_string(),
            ),
            ("x-amz-date".to_string(), amz_date.to_string()),
        ])
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method, request.path, request.query, request.payload_sha256
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = [date, region, service, "aws4_request"].iter().fold(
        format!("AWS4{}", credentials.secret_key.expose()).into_bytes(),
        |key, part| hmac(&key, part),
    );
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
        credentials.access_key,
        hex(&hmac(&key, &string_to_sign))
    )
}

/// `YYYYMMDD'T'HHMMSS'Z'` of `time`.
pub fn amz_date(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// URI-encodes one path segment as SigV4 wants it (unreserved characters kept).
pub fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An S3 endpoint with its credentials.
pub struct Client {
    host: String,
    credentials: Credentials,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `host` (`ADDRESS:PORT`), over plain HTTP.
    pub fn new(host: &str, credentials: Credentials) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build();
        Client {
            host: host.to_string(),
            credentials,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one signed request; returns the status and the body.
    fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let payload = sha256_hex(body);
        let date = amz_date(SystemTime::now());
        let auth = authorization(
            &self.credentials,
            REGION,
            "s3",
            &date,
            &Request {
                method,
                host: &self.host,
                path,
                query: "",
                headers: &[],
                payload_sha256: &payload,
            },
        );
        let url = format!("http://{}{path}", self.host);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-amz-date", &date)
            .header("x-amz-content-sha256", &payload)
            .header("authorization", auth)
            .body(body.to_vec())
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let mut content = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut content)
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        Ok((response.status().as_u16(), content))
    }

    fn expect_ok(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        match self.send(method, path, body)? {
            (200, content) => Ok(content),
            (status, content) => Err(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&content[..content.len().min(300)]).trim()
            )),
        }
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        self.expect_ok("PUT", &format!("/{}", encode_segment(bucket)), &[])
            .map(drop)
    }

    /// PUTs `content` as `bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, content: &[u8]) -> Result<(), String> {
        self.expect_ok("PUT", &object_path(bucket, key), content)
            .map(drop)
    }

    /// GETs `bucket/key`.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        self.expect_ok("GET", &object_path(bucket, key), &[])
    }
}

fn object_path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode_segment(bucket), encode_segment(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's example "GET Object" of the S3 SigV4 documentation (header-based auth).
    #[test]
    fn signs_the_aws_get_object_example() {
        let credentials = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        };
        let auth = authorization(
            &credentials,
            "us-east-1",
            "s3",
            "20130524T000000Z",
            &Request {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: "",
                headers: &[("Range", "bytes=0-9")],
                payload_sha256: &sha256_hex(b""),
            },
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(!auth.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn dates_and_segments() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        assert_eq!(amz_date(time), "20130524T000000Z");
        assert_eq!(encode_segment("a b/c~_.-"), "a%20b%2Fc~_.-");
    }
}
