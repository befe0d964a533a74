//! The request/response helper: every request to another node goes over its link.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use super::Transport;
use super::dispatch::{Answer, Sender};
use super::links::{Call, CallError};
use crate::NodeId;
use crate::wire::{self, Envelope, ErrorCode, PROTOCOL_VERSION, RemoteError, Reply, WireError};

/// Why a request got no answer. Each variant says whether the request may have run.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is larger than `max_message_bytes`. Nothing was sent; the link is intact.
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
    /// The node is no member this node lists, or one it counts out (declared down, or left).
    /// Nothing was sent: the request failed at once. Retry once the node is listed up.
    #[error(
        "node {0} is not a member this node can reach (unknown, down or left); nothing was sent"
    )]
    NotMember(NodeId),
    /// The node is a member, but no link to it opened within the timeout (it is still being
    /// dialled, or redialled after its link closed). Nothing was sent.
    #[error("no link to node {node} opened within {after:?}; nothing was sent")]
    NotConnected {
        /// The node asked.
        node: NodeId,
        /// The timeout.
        after: Duration,
    },
    /// This node is shutting down and has closed its links. Nothing was sent.
    #[error("this node is shutting down; nothing was sent")]
    ShuttingDown,
    /// The node runs no service of that name (or not yet: it registers its services before
    /// it joins). Nothing ran.
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
    /// The link closed before the answer came. The request may or may not have run.
    #[error("the link to node {0} closed before it answered; the request may have run")]
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
    /// Sends `payload` as a request of `kind` to `service` on `node` and waits for its answer,
    /// at most `timeout` in all (waiting for the link to open included).
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
            Ok((request_id, bytes)) => {
                let deadline = tokio::time::Instant::now() + timeout;
                match self.begin(node, service, &bytes) {
                    Ok(Started::Call(call)) => {
                        let answer = tokio::time::timeout_at(deadline, call)
                            .await
                            .unwrap_or(Err(CallError::Timeout));
                        self.answer(node, service, request_id, answer, timeout)
                    }
                    Ok(Started::Later) => {
                        self.later(node, service, request_id, &bytes, deadline, timeout)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        self.count_failure(&result);
        result
    }

    /// Sends the same request to each of `nodes` at once and waits for every answer, at most
    /// `timeout` in all. The envelope is encoded once and written to each open link from this
    /// task; one timer covers every node, those whose link is still opening included. Answers
    /// come back in the order of `nodes`.
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
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results: Vec<Option<Result<Vec<u8>, RequestError>>> =
            nodes.iter().map(|_| None).collect();
        let mut waits: Vec<Option<Wait<'_>>> = nodes
            .iter()
            .zip(&mut results)
            .map(|(&node, result)| match self.begin(node, service, &bytes) {
                Ok(Started::Call(call)) => Some(Wait::Link(call)),
                Ok(Started::Later) => Some(Wait::Later(Box::pin(
                    self.later(node, service, request_id, &bytes, deadline, timeout),
                ))),
                Err(e) => {
                    *result = Some(Err(e));
                    None
                }
            })
            .collect();
        let expired = tokio::time::sleep_until(deadline);
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
                    Wait::Later(answer) => answer.as_mut().poll(cx),
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

    /// Starts a request without waiting: written on the open link to `node`, refused at once
    /// when the fault filter cuts `node` off, or left for [`Self::later`] (this node, or no
    /// open link to `node`).
    fn begin(&self, node: NodeId, service: &str, bytes: &[u8]) -> Result<Started, RequestError> {
        if self.inner.links.cut.is_cut(node) {
            return Err(RequestError::Unreachable(node));
        }
        if node == self.local() {
            return Ok(Started::Later);
        }
        let call = self
            .inner
            .links
            .get(node)
            .and_then(|link| self.send(&link, service, bytes));
        Ok(call.map_or(Started::Later, Started::Call))
    }

    /// The rest of a request [`Self::begin`] could not write at once: to this node's own
    /// service through its `Dispatcher`, or on `node`'s link once it opens, by `deadline`. A
    /// node that is no member fails here at once, before anything is awaited.
    async fn later(
        &self,
        node: NodeId,
        service: &str,
        request_id: u64,
        bytes: &[u8],
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        let answer = if node == self.local() {
            self.inner
                .stats
                .local_requests
                .fetch_add(1, Ordering::Relaxed);
            let Some(dispatcher) = self.inner.services.get(service).map(|d| d.clone()) else {
                return Err(RequestError::UnknownService {
                    node,
                    service: service.to_owned(),
                });
            };
            match dispatcher.dispatch(bytes, Sender::Local(self.local())) {
                Answer::Now(reply) => Ok(reply),
                Answer::Later(reply) => tokio::time::timeout_at(deadline, reply)
                    .await
                    .map_err(|_| CallError::Timeout),
            }
        } else {
            let call = loop {
                let link = self.inner.links.wait_for(node, deadline, timeout).await?;
                if let Some(call) = self.send(&link, service, bytes) {
                    break call;
                }
                // The link closed before it took the request: nothing was sent; wait for the
                // redial (`wait_for` skips closed links, so this does not spin).
            };
            tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or(Err(CallError::Timeout))
        };
        self.answer(node, service, request_id, answer, timeout)
    }

    /// Writes the request on `link`; `None` (nothing sent) if the link closed.
    fn send(&self, link: &super::links::Link, service: &str, bytes: &[u8]) -> Option<Call> {
        let call = link.send(service, bytes)?;
        self.inner
            .stats
            .link_requests
            .fetch_add(1, Ordering::Relaxed);
        Some(call)
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

/// How [`Transport::begin`] left a request.
enum Started {
    /// Written on an open link: waiting for the reply.
    Call(Call),
    /// Not written yet: [`Transport::later`] carries it on.
    Later,
}

/// One node's part of [`Transport::request_each`].
enum Wait<'a> {
    Link(Call),
    Later(Pin<Box<dyn Future<Output = Result<Vec<u8>, RequestError>> + Send + 'a>>),
}
