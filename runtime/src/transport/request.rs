//! The request/response helper.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use ractor::rpc::CallResult;

use super::gateway::{Answer, Sender};
use super::links::{Call, CallError};
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
        let result = match self.envelope(kind, payload).map_err(unsent) {
            // Cut off by the test fault filter: nothing is sent.
            _ if self.inner.links.cut.is_cut(node) => Err(RequestError::Unreachable(node)),
            Ok((request_id, bytes)) => match self.start_on_link(node, service, &bytes) {
                Some(call) => {
                    let answer = tokio::time::timeout(timeout, call)
                        .await
                        .unwrap_or(Err(CallError::Timeout));
                    self.answer(node, service, request_id, answer, timeout)
                }
                // Nothing was sent: the session carries it.
                None => {
                    self.over_session(node, service, request_id, bytes, timeout)
                        .await
                }
            },
            Err(e) => Err(e),
        };
        self.count_failure(&result);
        result
    }

    /// Sends the same request to each of `nodes` at once and waits for every answer, at most
    /// `timeout` in all. The envelope is encoded once and written to each open link from this
    /// task; one timer covers the links (a request that falls back to a session keeps its own).
    /// Answers come back in the order of `nodes`.
    pub(crate) async fn request_each(
        &self,
        nodes: &[NodeId],
        service: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Vec<Result<Vec<u8>, RequestError>> {
        let stats = &self.inner.stats;
        stats
            .requests
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        let (request_id, bytes) = match self.envelope(kind, payload) {
            Ok(encoded) => encoded,
            Err(e) => {
                stats
                    .request_failures
                    .fetch_add(nodes.len() as u64, Ordering::Relaxed);
                return nodes.iter().map(|_| Err(unsent(e.clone()))).collect();
            }
        };
        let mut results: Vec<Option<Result<Vec<u8>, RequestError>>> =
            nodes.iter().map(|_| None).collect();
        let mut waits: Vec<Option<Wait<'_>>> = nodes
            .iter()
            .zip(&mut results)
            .map(|(&node, result)| {
                if self.inner.links.cut.is_cut(node) {
                    *result = Some(Err(RequestError::Unreachable(node)));
                    return None;
                }
                Some(match self.start_on_link(node, service, &bytes) {
                    Some(call) => Wait::Link(call),
                    None => Wait::Session(Box::pin(self.over_session(
                        node,
                        service,
                        request_id,
                        bytes.clone(),
                        timeout,
                    ))),
                })
            })
            .collect();
        let expired = tokio::time::sleep(timeout);
        tokio::pin!(expired);
        std::future::poll_fn(|cx| {
            let mut waiting = false;
            for (i, wait) in waits.iter_mut().enumerate() {
                let Some(wait) = wait.as_mut().filter(|_| results[i].is_none()) else {
                    continue;
                };
                let node = nodes[i];
                let done = match wait {
                    Wait::Link(call) => Pin::new(call)
                        .poll(cx)
                        .map(|answer| self.answer(node, service, request_id, answer, timeout)),
                    Wait::Session(answer) => answer.as_mut().poll(cx),
                };
                match done {
                    Poll::Ready(result) => results[i] = Some(result),
                    Poll::Pending => waiting = true,
                }
            }
            if !waiting || expired.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        // Dropping the waits forgets the calls that did not answer in time.
        drop(waits);
        let results: Vec<_> = results
            .into_iter()
            .zip(nodes)
            .map(|(result, &node)| {
                result.unwrap_or(Err(RequestError::Timeout {
                    node,
                    after: timeout,
                }))
            })
            .collect();
        for result in &results {
            self.count_failure(result);
        }
        results
    }

    fn count_failure<T>(&self, result: &Result<T, RequestError>) {
        if result.is_err() {
            self.inner
                .stats
                .request_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The encoded envelope of a request, and its id.
    fn envelope(&self, kind: &str, payload: Vec<u8>) -> Result<(u64, Vec<u8>), WireError> {
        let request_id = self.next_request_id();
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id,
            from: self.local(),
            kind: kind.to_owned(),
            payload,
        };
        let bytes = wire::encode(&envelope, self.max_message_bytes())?;
        Ok((request_id, bytes))
    }

    /// Writes the request on the open link to `node`; `None` (nothing sent) for this node, or
    /// without an open link.
    fn start_on_link(&self, node: NodeId, service: &str, bytes: &[u8]) -> Option<Call> {
        if node == self.local() {
            return None;
        }
        let call = self.inner.links.get(node)?.send(service, bytes)?;
        self.inner
            .stats
            .link_requests
            .fetch_add(1, Ordering::Relaxed);
        Some(call)
    }

    /// Sends the request another way than a link: to this node's own service through its
    /// `Dispatcher`, or over the session to `node`'s gateway actor.
    async fn over_session(
        &self,
        node: NodeId,
        service: &str,
        request_id: u64,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let answer = if node == self.local() {
            let Some(dispatcher) = self.inner.services.get(service).map(|d| d.clone()) else {
                return Err(RequestError::UnknownService {
                    node,
                    service: service.to_owned(),
                });
            };
            match dispatcher.dispatch(&bytes, Sender::Local(self.local())) {
                Answer::Now(reply) => Ok(reply),
                Answer::Later(reply) => tokio::time::timeout(timeout, reply)
                    .await
                    .map_err(|_| CallError::Timeout),
            }
        } else {
            let gateway = self.gateway(service, node)?;
            let answer = ractor::rpc::call(
                &gateway.get_cell(),
                |port| GatewayMsg::Call(bytes, port),
                Some(timeout),
            )
            .await;
            match answer {
                Ok(CallResult::Success(bytes)) => Ok(bytes),
                Ok(CallResult::Timeout) => Err(CallError::Timeout),
                Ok(CallResult::SenderError) | Err(_) => Err(CallError::Lost),
            }
        };
        self.answer(node, service, request_id, answer, timeout)
    }

    /// Turns what came back for a request into its answer payload or the matching error.
    fn answer(
        &self,
        node: NodeId,
        service: &str,
        request_id: u64,
        answer: Result<Vec<u8>, CallError>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(CallError::Timeout) => {
                return Err(RequestError::Timeout {
                    node,
                    after: timeout,
                });
            }
            Err(CallError::Lost) => return Err(RequestError::Disconnected(node)),
        };
        let reply: Reply = wire::decode(&bytes, self.max_message_bytes())
            .map_err(|error| RequestError::BadReply { node, error })?;
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

/// A request that could not be encoded: nothing was sent.
fn unsent(error: WireError) -> RequestError {
    match error {
        WireError::TooLarge { size, limit } => RequestError::TooLarge { size, limit },
        other => RequestError::Encode(other),
    }
}

/// One node's part of [`Transport::request_each`].
enum Wait<'a> {
    Link(Call),
    Session(Pin<Box<dyn Future<Output = Result<Vec<u8>, RequestError>> + Send + 'a>>),
}
