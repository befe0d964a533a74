//! The gateway: the one remotable actor per service and node.
//!
//! Its only message carries encoded bytes: an [`Envelope`] in, a [`Reply`] out. Decoding happens
//! here, inside Colony, so that a bad payload is counted and answered instead of being dropped
//! silently by ractor's own decoder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::{Semaphore, watch};

use super::sessions::Session;
use crate::NodeId;
use crate::membership::View;
use crate::wire::{self, Envelope, ErrorCode, MIN_PROTOCOL_VERSION, Reply};

/// Requests one gateway handles at once; beyond that callers get [`ErrorCode::Busy`].
const MAX_IN_FLIGHT: usize = 1024;

/// The gateway's message: encoded envelope in, encoded reply out.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// One request.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// A decoded request handed to a [`Service`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The node that sent it, as the connection it came by authenticated it: the node a link's
    /// handshake named, or this node for its own requests. The envelope's own `from` claim is
    /// checked against it and the request refused when they differ, so a service may act on
    /// this field (for example, let a node act only for its own lock guards).
    ///
    /// The one weaker lane is a ractor_cluster session, used only while a peer has no open
    /// link: ractor_cluster does not say which session a call came through, so there the claim
    /// is only known to name a peer that holds a session with this node, or a member.
    /// Identity is as strong as the cluster cookie: any holder of the cookie can name itself
    /// any node in a handshake.
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

/// What a node's gateway dispatches requests to.
///
/// Implementors must answer every request (the future must complete) and must treat the payload
/// as untrusted: decode with [`wire::decode_payload`] and return [`ServiceError::BadPayload`]
/// on failure. Handlers should be idempotent: a caller that timed out may retry.
///
/// Who sent a request is [`Request::from`], which the transport has checked against the
/// connection (see there for what each lane guarantees). A node id inside the payload is a
/// claim: a service that acts for a node must compare it with `from`, never trust it alone.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, request: Request) -> ServiceFuture;
}

/// Counters shared by every gateway of a node.
#[derive(Debug, Default)]
pub(crate) struct GatewayStats {
    pub handled: AtomicU64,
    pub bad_requests: AtomicU64,
    pub busy: AtomicU64,
    pub forged_senders: AtomicU64,
}

/// Who the connection a request came by says sent it: what the envelope's `from` must be.
pub(crate) enum Sender<'a> {
    /// This node, calling its own service.
    Local(NodeId),
    /// The node a link's handshake authenticated.
    Link(NodeId),
    /// Some peer with a ractor_cluster session. ractor_cluster hands a remote call to the
    /// gateway actor without saying which session it came through, so all that can be checked
    /// is that the claim names a peer holding a ready session or, since the session task may
    /// not have seen it ready yet, a member this node lists and has not counted out.
    Session {
        sessions: &'a DashMap<NodeId, Session>,
        view: &'a View,
    },
}

impl Sender<'_> {
    /// The sender, if `claimed` agrees with the connection; else why not.
    fn check(&self, claimed: NodeId) -> Result<NodeId, String> {
        match *self {
            Sender::Local(me) | Sender::Link(me) if claimed == me => Ok(me),
            Sender::Local(me) => Err(format!(
                "a local request claims to come from node {claimed}, not this node {me}"
            )),
            Sender::Link(peer) => Err(format!(
                "the envelope claims to come from node {claimed} but its link authenticated node {peer}"
            )),
            Sender::Session { sessions, view } => {
                let member = || {
                    view.members
                        .iter()
                        .any(|m| m.id == claimed && !m.state.is_gone())
                };
                if sessions.contains_key(&claimed) || member() {
                    Ok(claimed)
                } else {
                    Err(format!(
                        "the envelope claims to come from node {claimed}, which holds no session with this node and is no member"
                    ))
                }
            }
        }
    }
}

/// Turns encoded requests into encoded replies for one service, whichever way they came (the
/// gateway actor, or a link). Shared by both so that the checks and the in-flight cap are one.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    service_name: Arc<str>,
    service: Arc<dyn Service>,
    max_message_bytes: usize,
    stats: Arc<GatewayStats>,
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
        stats: Arc<GatewayStats>,
    ) -> Dispatcher {
        Dispatcher {
            service_name: service_name.into(),
            service,
            max_message_bytes,
            stats,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Decodes and checks one request from `sender`, then hands it to the service.
    pub(crate) fn dispatch(&self, bytes: &[u8], sender: Sender<'_>) -> Answer {
        let limit = self.max_message_bytes;
        let envelope = match wire::decode::<Envelope>(bytes, limit) {
            Ok(e) => e,
            Err(e) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %self.service_name, error = %e, "undecodable request answered with an error");
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
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            let msg = format!("{MAX_IN_FLIGHT} requests already in flight");
            return Answer::Now(encode(
                Reply::error(envelope.request_id, ErrorCode::Busy, msg),
                limit,
            ));
        };
        self.stats.handled.fetch_add(1, Ordering::Relaxed);
        let id = envelope.request_id;
        let future = self.service.call(Request {
            from,
            version: envelope.version,
            kind: envelope.kind,
            payload: envelope.payload,
        });
        let mut answer: Pin<Box<dyn Future<Output = Vec<u8>> + Send>> = Box::pin(async move {
            let answer = match future.await {
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
            };
            drop(permit);
            encode(answer, limit)
        });
        // Most services answer without waiting: polled once here, such an answer goes back
        // without a task or a second turn of the caller's loop. A pending one keeps no state
        // from this poll: whoever awaits it next registers its own waker.
        match (&mut answer).now_or_never() {
            Some(reply) => Answer::Now(reply),
            None => Answer::Later(answer),
        }
    }
}

/// The gateway actor: requests that come through ractor_cluster sessions.
pub(crate) struct Gateway {
    pub dispatcher: Dispatcher,
    /// The peers with a ready session and the membership view: a request's claimed sender
    /// must be in one of them.
    pub sessions: Arc<DashMap<NodeId, Session>>,
    pub view: watch::Receiver<Arc<View>>,
}

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<GatewayMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<GatewayMsg>,
        message: GatewayMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Call(bytes, reply) = message;
        // A clone, taken apart: the service's first poll runs inside `dispatch` and must not
        // find the view borrowed.
        let view = self.view.borrow().clone();
        let sender = Sender::Session {
            sessions: &self.sessions,
            view: &view,
        };
        // The caller may have timed out and gone; nothing to do then.
        match self.dispatcher.dispatch(&bytes, sender) {
            Answer::Now(answer) => {
                let _ = reply.send(answer);
            }
            // Answer from a task so that one slow request does not hold up the others.
            Answer::Later(answer) => {
                tokio::spawn(async move {
                    let _ = reply.send(answer.await);
                });
            }
        }
        Ok(())
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
