//! Services and the dispatcher: decoded requests in, encoded replies out.
//!
//! Decoding happens here, inside Colony, so that a bad payload is counted and answered instead
//! of being dropped silently. Requests from links and a node's requests to itself go through the
//! same [`Dispatcher`], so the checks and the in-flight cap are one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tokio::sync::Semaphore;

use crate::NodeId;
use crate::wire::{self, Envelope, ErrorCode, MIN_PROTOCOL_VERSION, Reply};

/// Requests of one service that may wait at once (a request answered as it arrives never
/// waits); while that many wait, callers get [`ErrorCode::Busy`].
const MAX_IN_FLIGHT: usize = 1024;

/// A decoded request handed to a [`Service`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The node that sent it, as the connection it came by authenticated it: the node a link's
    /// handshake named, or this node for its own requests. The envelope's own `from` claim is
    /// checked against it and the request refused when they differ, so a service may act on
    /// this field (for example, let a node act only for its own lock guards).
    ///
    /// Identity is as strong as the cluster cookie: any holder of the cookie can name itself
    /// any node in a handshake; what a link guarantees is that one connection speaks for one
    /// node.
    pub from: NodeId,
    /// The sender's protocol version.
    pub version: u16,
    /// What is asked.
    pub kind: String,
    /// The kind's payload.
    pub payload: Vec<u8>,
}

/// Why a service could not answer; sent back to the caller as a remote error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service has no such request kind.
    #[error("unknown request kind `{0}`")]
    UnknownKind(String),
    /// The payload did not decode as the kind's type.
    #[error("bad payload: {0}")]
    BadPayload(#[from] wire::WireError),
    /// The service tried and failed.
    #[error("{0}")]
    Failed(String),
}

/// A boxed future returned by [`Service::call`].
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ServiceError>> + Send>>;

/// What a node dispatches requests for one registered name to.
///
/// Implementors must answer every request (the future must complete) and must treat the payload
/// as untrusted: decode with [`wire::decode_payload`] and return [`ServiceError::BadPayload`]
/// on failure. Handlers should be idempotent: a caller that timed out may retry.
///
/// Who sent a request is [`Request::from`], which the transport has checked against the
/// connection it came by. A node id inside the payload is a
/// claim: a service that acts for a node must compare it with `from`, never trust it alone.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, request: Request) -> ServiceFuture;
}

/// Counters shared by every service of a node.
#[derive(Debug, Default)]
pub(crate) struct DispatchStats {
    pub handled: AtomicU64,
    pub bad_requests: AtomicU64,
    pub busy: AtomicU64,
    pub forged_senders: AtomicU64,
}

/// Who the connection a request came by says sent it: what the envelope's `from` must be.
#[derive(Clone, Copy)]
pub(crate) enum Sender {
    /// This node, calling its own service.
    Local(NodeId),
    /// The node a link's handshake authenticated.
    Link(NodeId),
}

impl Sender {
    /// The node the connection speaks for.
    fn id(self) -> NodeId {
        match self {
            Sender::Local(id) | Sender::Link(id) => id,
        }
    }

    /// The sender, if `claimed` agrees with the connection; else why not.
    fn check(self, claimed: NodeId) -> Result<NodeId, String> {
        match self {
            Sender::Local(me) | Sender::Link(me) if claimed == me => Ok(me),
            Sender::Local(me) => Err(format!(
                "a local request claims to come from node {claimed}, not this node {me}"
            )),
            Sender::Link(peer) => Err(format!(
                "the envelope claims to come from node {claimed} but its link authenticated node {peer}"
            )),
        }
    }
}

/// Turns encoded requests into encoded replies for one service, whichever way they came (a
/// link, or this node itself).
#[derive(Clone)]
pub(crate) struct Dispatcher {
    service_name: Arc<str>,
    service: Arc<dyn Service>,
    max_message_bytes: usize,
    stats: Arc<DispatchStats>,
    slots: Arc<Semaphore>,
}

/// What became of one request.
pub(crate) enum Answer {
    /// Answered at once (refused, or the service did not wait): the encoded reply.
    Now(Vec<u8>),
    /// Being handled: resolves to the encoded reply.
    Later(Pin<Box<dyn Future<Output = Vec<u8>> + Send>>),
}

impl Dispatcher {
    pub(crate) fn new(
        service_name: &str,
        service: Arc<dyn Service>,
        max_message_bytes: usize,
        stats: Arc<DispatchStats>,
    ) -> Dispatcher {
        Dispatcher {
            service_name: service_name.into(),
            service,
            max_message_bytes,
            stats,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The name the service is registered under.
    pub(crate) fn name(&self) -> &str {
        &self.service_name
    }

    /// Decodes and checks one request from `sender`, then hands it to the service.
    pub(crate) fn dispatch(&self, bytes: &[u8], sender: Sender) -> Answer {
        let limit = self.max_message_bytes;
        let envelope = match wire::decode::<Envelope>(bytes, limit) {
            Ok(e) => e,
            Err(e) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %self.service_name, peer = %sender.id(), error = %e, "undecodable request answered with an error");
                return Answer::Now(encode(
                    Reply::error(0, ErrorCode::BadRequest, e.to_string()),
                    limit,
                ));
            }
        };
        if envelope.version < MIN_PROTOCOL_VERSION {
            let msg = format!(
                "protocol version {} is older than the oldest this node answers ({MIN_PROTOCOL_VERSION})",
                envelope.version
            );
            return Answer::Now(encode(
                Reply::error(envelope.request_id, ErrorCode::UnsupportedVersion, msg),
                limit,
            ));
        }
        let from = match sender.check(envelope.from) {
            Ok(from) => from,
            Err(why) => {
                self.stats.forged_senders.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %self.service_name, "request refused: {why}");
                return Answer::Now(encode(
                    Reply::error(envelope.request_id, ErrorCode::BadRequest, why),
                    limit,
                ));
            }
        };
        if self.slots.available_permits() == 0 {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            let msg = format!("{MAX_IN_FLIGHT} requests already in flight");
            return Answer::Now(encode(
                Reply::error(envelope.request_id, ErrorCode::Busy, msg),
                limit,
            ));
        }
        self.stats.handled.fetch_add(1, Ordering::Relaxed);
        let id = envelope.request_id;
        let mut future = self.service.call(Request {
            from,
            version: envelope.version,
            kind: envelope.kind,
            payload: envelope.payload,
        });
        // Most services answer without waiting: polled once here, such an answer goes back
        // without a task, a slot, a second allocation or a second turn of the caller's loop. A
        // pending one keeps no state from this poll: whoever awaits it next registers its own
        // waker.
        match (&mut future).now_or_never() {
            Some(answer) => Answer::Now(encode(reply(id, answer), limit)),
            None => {
                // Taken after the check above: dispatches running at that same moment on other
                // threads may let as many requests past the bound, never more. A request that
                // already ran must not be dropped halfway for want of a slot.
                let slot = self.slots.clone().try_acquire_owned().ok();
                Answer::Later(Box::pin(async move {
                    let answer = future.await;
                    drop(slot);
                    encode(reply(id, answer), limit)
                }))
            }
        }
    }
}

/// The reply to request `id` carrying what its service answered.
fn reply(id: u64, answer: Result<Vec<u8>, ServiceError>) -> Reply {
    match answer {
        Ok(payload) => Reply::ok(id, payload),
        Err(ServiceError::UnknownKind(k)) => Reply::error(
            id,
            ErrorCode::UnknownKind,
            format!("unknown request kind `{k}`"),
        ),
        Err(e @ ServiceError::BadPayload(_)) => {
            Reply::error(id, ErrorCode::BadRequest, e.to_string())
        }
        Err(ServiceError::Failed(m)) => Reply::error(id, ErrorCode::Failed, m),
    }
}

/// Encodes a reply; an answer over the limit becomes a `TooLarge` error.
fn encode(reply: Reply, limit: usize) -> Vec<u8> {
    let id = reply.request_id;
    wire::encode(&reply, limit).unwrap_or_else(|e| {
        let fallback = Reply::error(id, ErrorCode::TooLarge, e.to_string());
        wire::encode(&fallback, usize::MAX).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Envelope, PROTOCOL_VERSION};

    /// Waits forever on `wait`, answers `now` at once.
    struct Waits;

    impl Service for Waits {
        fn call(&self, request: Request) -> ServiceFuture {
            match request.kind.as_str() {
                "wait" => Box::pin(std::future::pending()),
                _ => Box::pin(async { Ok(Vec::new()) }),
            }
        }
    }

    fn request(id: u64, kind: &str) -> Vec<u8> {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id: id,
            from: NodeId::from_u128(7),
            kind: kind.into(),
            payload: Vec::new(),
        };
        wire::encode(&envelope, 1024).unwrap()
    }

    fn error_of(answer: &Answer) -> Option<ErrorCode> {
        let Answer::Now(bytes) = answer else {
            return None;
        };
        let reply: Reply = wire::decode(bytes, 4096).unwrap();
        reply.error.map(|e| e.code())
    }

    #[test]
    fn only_requests_that_wait_hold_a_slot_and_past_the_bound_callers_are_told_busy() {
        let stats = Arc::new(DispatchStats::default());
        let dispatcher = Dispatcher::new("w", Arc::new(Waits), 4096, stats.clone());
        let sender = Sender::Link(NodeId::from_u128(7));
        // Answers given at once take no slot, however many.
        for id in 0..2 * MAX_IN_FLIGHT as u64 {
            let answer = dispatcher.dispatch(&request(id, "now"), sender);
            assert!(matches!(answer, Answer::Now(_)) && error_of(&answer).is_none());
        }
        let mut waiting: Vec<Answer> = (0..MAX_IN_FLIGHT as u64)
            .map(|id| dispatcher.dispatch(&request(id, "wait"), sender))
            .collect();
        assert!(waiting.iter().all(|a| matches!(a, Answer::Later(_))));
        for kind in ["wait", "now"] {
            let refused = dispatcher.dispatch(&request(9, kind), sender);
            assert_eq!(error_of(&refused), Some(ErrorCode::Busy), "{kind}");
        }
        assert_eq!(stats.busy.load(Ordering::Relaxed), 2);
        // A request that ends gives its slot back.
        waiting.pop();
        let answer = dispatcher.dispatch(&request(10, "now"), sender);
        assert!(error_of(&answer).is_none());
    }
}
