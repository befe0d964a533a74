//! The request/response helper.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::rpc::CallResult;

use super::links::CallError;
use super::{GatewayMsg, Transport};
use crate::NodeId;
use crate::wire::{self, Envelope, ErrorCode, PROTOCOL_VERSION, RemoteError, Reply, WireError};

/// Why a request got no answer. Each variant says whether the request may have run.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is larger than `max_message_bytes`. Nothing was sent; the session is intact.
    #[error(
        "request of {size} bytes exceeds the limit of {limit} bytes; nothing was sent (raise max_message_bytes or send less)"
    )]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The payload could not be encoded. Nothing was sent.
    #[error("request could not be encoded: {0}")]
    Encode(WireError),
    /// There is no session to the node (not up, or not connected yet). Nothing was sent; retry
    /// after the node appears up.
    #[error("no session to node {0}: it is not up or not connected yet")]
    NoSession(NodeId),
    /// The node runs no service of that name (or its gateway is not yet known here). Nothing
    /// was sent.
    #[error("node {node} runs no service named `{service}`")]
    UnknownService {
        /// The node asked.
        node: NodeId,
        /// The service named.
        service: String,
    },
    /// The node is cut off by the test fault filter. Nothing was sent.
    #[error("node {0} is unreachable (fault injection)")]
    Unreachable(NodeId),
    /// No answer within the timeout. The request may or may not have run.
    #[error("node {node} did not answer within {after:?}; the request may have run")]
    Timeout {
        /// The node asked.
        node: NodeId,
        /// The timeout.
        after: Duration,
    },
    /// The session closed before the answer came. The request may or may not have run.
    #[error("the session to node {0} closed before it answered; the request may have run")]
    Disconnected(NodeId),
    /// The answer could not be decoded.
    #[error("the answer from node {node} could not be decoded: {error}")]
    BadReply {
        /// The node asked.
        node: NodeId,
        /// The decoder's complaint.
        error: WireError,
    },
    /// The node answered with an error.
    #[error("node {node} refused the request: {error}")]
    Remote {
        /// The node asked.
        node: NodeId,
        /// Its error.
        error: RemoteError,
    },
}

impl Transport {
    /// Sends `payload` as a request of `kind` to `service` on `node` and waits for its answer.
    pub(crate) async fn request(
        &self,
        node: NodeId,
        service: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = self
            .request_inner(node, service, kind, payload, timeout)
            .await;
        if result.is_err() {
            self.inner
                .stats
                .request_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn request_inner(
        &self,
        node: NodeId,
        service: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let limit = self.max_message_bytes();
        let request_id = self.next_request_id();
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id,
            from: self.local(),
            kind: kind.to_owned(),
            payload,
        };
        let bytes = wire::encode(&envelope, limit).map_err(|e| match e {
            WireError::TooLarge { size, limit } => RequestError::TooLarge { size, limit },
            other => RequestError::Encode(other),
        })?;
        let timed_out = RequestError::Timeout {
            node,
            after: timeout,
        };
        let link = if node == self.local() {
            None
        } else {
            self.inner.links.get(node)
        };
        let answer = match link {
            Some(link) => {
                self.inner
                    .stats
                    .link_requests
                    .fetch_add(1, Ordering::Relaxed);
                link.call(service, &bytes, timeout).await
            }
            None => Err(CallError::Closed),
        };
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(CallError::Timeout) => return Err(timed_out),
            Err(CallError::Lost) => return Err(RequestError::Disconnected(node)),
            // Nothing was sent: the session carries it.
            Err(CallError::Closed) => {
                let gateway = self.gateway(service, node)?;
                let answer = ractor::rpc::call(
                    &gateway.get_cell(),
                    |port| GatewayMsg::Call(bytes, port),
                    Some(timeout),
                )
                .await;
                match answer {
                    Ok(CallResult::Success(bytes)) => bytes,
                    Ok(CallResult::Timeout) => return Err(timed_out),
                    Ok(CallResult::SenderError) | Err(_) => {
                        return Err(RequestError::Disconnected(node));
                    }
                }
            }
        };
        let reply: Reply =
            wire::decode(&bytes, limit).map_err(|error| RequestError::BadReply { node, error })?;
        if let Some(error) = reply.error {
            if error.code() == ErrorCode::UnknownService {
                return Err(RequestError::UnknownService {
                    node,
                    service: service.to_owned(),
                });
            }
            return Err(RequestError::Remote { node, error });
        }
        if reply.request_id != request_id {
            let error = WireError::Decode {
                what: "Reply",
                reason: format!("request id {} answered for {request_id}", reply.request_id),
            };
            return Err(RequestError::BadReply { node, error });
        }
        Ok(reply.ok.unwrap_or_default())
    }
}
