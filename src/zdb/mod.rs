//! A small synchronous 0-db client: RESP over a unix socket or TCP, with connect and I/O
//! timeouts, and typed replies for the commands the appliance uses.
//!
//! It is synchronous on purpose: the hook runs it without an async runtime, and async callers
//! (the monitor, the health checker) run it in `spawn_blocking`, bounded by its timeouts.

mod client;
pub mod info;
pub mod resp;

pub use client::{secure_hash, Client, Endpoint};
pub use info::{Info, Mode, NsInfo};

use std::fmt;

/// An error answered by 0-db (`-message`), mapped to the cases callers act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerError {
    /// `Namespace not found`
    NamespaceNotFound,
    /// `Access denied`, `Permission denied`, `Namespace protected and private`
    AccessDenied(String),
    /// `No space left on this namespace`, `Namespace definitely full`
    NoSpace,
    /// `Namespace is temporarily locked (read-only)`
    Locked,
    /// `Namespace is temporarily frozen (read-write disabled)`
    Frozen,
    /// `This namespace is not available` (NSNEW of an existing namespace)
    NamespaceExists,
    /// Any other error text.
    Other(String),
}

impl ServerError {
    /// Maps the text of an error reply.
    pub fn from_message(message: &str) -> Self {
        match message {
            "Namespace not found" => ServerError::NamespaceNotFound,
            "Access denied" | "Permission denied" | "Namespace protected and private" => {
                ServerError::AccessDenied(message.to_string())
            }
            "No space left on this namespace" | "Namespace definitely full" => ServerError::NoSpace,
            "This namespace is not available" => ServerError::NamespaceExists,
            // 0-db adds a reason in parentheses, as in "… locked (read-only)".
            m if m.starts_with("Namespace is temporarily locked") => ServerError::Locked,
            m if m.starts_with("Namespace is temporarily frozen") => ServerError::Frozen,
            other => ServerError::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::NamespaceNotFound => f.write_str("namespace not found"),
            ServerError::AccessDenied(m) | ServerError::Other(m) => f.write_str(m),
            ServerError::NoSpace => f.write_str("no space left on the namespace"),
            ServerError::Locked => f.write_str("namespace is locked"),
            ServerError::Frozen => f.write_str("namespace is frozen"),
            ServerError::NamespaceExists => f.write_str("namespace already exists"),
        }
    }
}

/// Any failure talking to 0-db.
#[derive(Debug, thiserror::Error)]
pub enum ZdbError {
    /// Connecting failed.
    #[error("cannot connect to zdb at {endpoint}: {source}")]
    Connect {
        /// Where we tried to connect.
        endpoint: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("zdb at {endpoint} did not answer within {seconds:.1} s")]
    Timeout {
        /// The server.
        endpoint: String,
        /// The timeout that passed.
        seconds: f64,
    },
    /// Reading or writing the connection failed.
    #[error("I/O error with zdb at {endpoint}: {source}")]
    Io {
        /// The server.
        endpoint: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server sent bytes that are not RESP.
    #[error("zdb at {endpoint}: {source}")]
    Protocol {
        /// The server.
        endpoint: String,
        /// The error.
        source: resp::ProtocolError,
    },
    /// zdb refused the answer to its challenge for `SELECT … SECURE`: the password is wrong.
    #[error("zdb at {endpoint}: wrong password for namespace {namespace} (refused by the secure challenge)")]
    WrongPassword {
        /// The server.
        endpoint: String,
        /// The namespace selected.
        namespace: String,
    },
    /// The server answered with an error.
    #[error("zdb error: {0}")]
    Server(ServerError),
    /// The reply has an unexpected shape or field.
    #[error("unexpected zdb reply to {command}: {detail}")]
    UnexpectedReply {
        /// The command sent.
        command: String,
        /// What was wrong.
        detail: String,
    },
}

impl From<info::FieldError> for ZdbError {
    fn from(e: info::FieldError) -> Self {
        ZdbError::UnexpectedReply {
            command: e.reply.to_string(),
            detail: e.to_string(),
        }
    }
}
