//! The envelope and reply types.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build still answers.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// One request from one node's service to another node's service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's protocol version.
    pub version: u16,
    /// Chosen by the sender, unique among its requests in flight; echoed in the reply.
    pub request_id: u64,
    /// The sending node, as the sender claims it. The serving side checks the claim against the
    /// node its connection authenticated and refuses a request whose claim differs; services
    /// read the checked sender, `transport::Request::from`.
    pub from: NodeId,
    /// What is asked, e.g. `echo`; each service defines its kinds.
    pub kind: String,
    /// The kind's payload, MessagePack with named fields.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The answer to one [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The answering node's protocol version.
    pub version: u16,
    /// The request's id; 0 when the request was too damaged to read one.
    pub request_id: u64,
    /// The answer's payload when the request succeeded.
    #[serde(default, with = "serde_bytes")]
    pub ok: Option<Vec<u8>>,
    /// Why the request failed.
    #[serde(default)]
    pub error: Option<RemoteError>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(request_id: u64, payload: Vec<u8>) -> Self {
        Reply {
            version: PROTOCOL_VERSION,
            request_id,
            ok: Some(payload),
            error: None,
        }
    }

    /// A failed reply.
    pub fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Reply {
            version: PROTOCOL_VERSION,
            request_id,
            ok: None,
            error: Some(RemoteError {
                code: code.into(),
                message: message.into(),
            }),
        }
    }
}

/// An error reported by the node that handled a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{} ({})", message, ErrorCode::from(*code))]
pub struct RemoteError {
    /// An [`ErrorCode`] as a number, so that codes added later still decode.
    pub code: u16,
    /// A human-readable explanation; never holds a secret.
    pub message: String,
}

/// What kind of failure a [`RemoteError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request could not be decoded.
    BadRequest,
    /// The request's protocol version is older than the node answers.
    UnsupportedVersion,
    /// No service of that name runs on the node.
    UnknownService,
    /// The service does not know the request's kind.
    UnknownKind,
    /// The node has too many requests in flight; retry later.
    Busy,
    /// The request or its answer exceeds the size limit.
    TooLarge,
    /// The service tried and failed.
    Failed,
    /// A code this build does not know (sent by a newer node).
    Other(u16),
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::UnknownService => 3,
            ErrorCode::UnknownKind => 4,
            ErrorCode::Busy => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::Failed => 7,
            ErrorCode::Other(n) => n,
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> ErrorCode {
        match n {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::UnknownService,
            4 => ErrorCode::UnknownKind,
            5 => ErrorCode::Busy,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::Failed,
            n => ErrorCode::Other(n),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "error code {n}"),
            known => write!(f, "{}", format!("{known:?}").to_lowercase()),
        }
    }
}

impl RemoteError {
    /// The code as an enum.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from(self.code)
    }
}
