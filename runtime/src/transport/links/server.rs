//! The accepting end of a link: requests in, replies out, all inside the connection's task.
//!
//! A request the service answers at once (most do) is answered before the next frame is read,
//! with no task spawned and no hand-off.
//! Requests that wait (a lock queued behind its holder, say) stay in flight in the same task
//! while later frames are read, so one slow request holds up no other.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::DashMap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::Cut;
use super::frame::{self, Frame, FrameReader};
use crate::NodeId;
use crate::shell::AbortOnDrop;
use crate::transport::TransportStats;
use crate::transport::dispatch::{Answer, Dispatcher, Sender};
use crate::wire::{self, ErrorCode, Reply};

type Pending = Pin<Box<dyn Future<Output = (u64, Vec<u8>)> + Send>>;

/// Serves one authenticated link from `peer` until it closes or `peer` is cut off.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: NodeId,
    services: Arc<DashMap<Arc<str>, Dispatcher>>,
    frame_limit: usize,
    cut: Cut,
    stats: Arc<TransportStats>,
) {
    // Lines about the link name the peer through this span. It is not entered around each
    // poll of the link (a few hundred nanoseconds a request); requests that wait run in it.
    let span = cut.span(peer);
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, frame_limit).counted(stats.clone());
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut out = Vec::new();
    let mut known = Known::default();
    // The link ends once the peer is cut off or counted out, or this node stops. A task of its
    // own watches for that: polled in this loop, the three watches would each lock their waiter
    // list, shared with every other link, on every request.
    let (end, mut ended) = oneshot::channel::<()>();
    let watcher = AbortOnDrop(
        tokio::spawn(async move {
            let mut cut = cut;
            cut.wait(peer).await;
            let _ = end.send(());
        })
        .abort_handle(),
    );
    loop {
        if !out.is_empty() {
            // Replies almost always fit the socket at once: written with no future to poll.
            let sent = match write.try_write(&out) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => {
                    tracing::debug!(parent: &span, error = %e, "link write failed");
                    break;
                }
            };
            if sent < out.len() {
                // A peer that stopped reading holds the rest up; being cut off ends it.
                let written = tokio::select! {
                    biased;
                    _ = &mut ended => break,
                    written = write.write_all(&out[sent..]) => written,
                };
                if let Err(e) = written {
                    tracing::debug!(parent: &span, error = %e, "link write failed");
                    break;
                }
            }
            stats
                .bytes_out
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            out.clear();
        }
        tokio::select! {
            biased;
            Some((id, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                frame::put_reply(&mut out, id, &reply);
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::Request { id, service, envelope })) => {
                    let dispatched = known
                        .find(&services, &service)
                        .map(|d| d.dispatch(&envelope, Sender::Link(peer)));
                    match dispatched {
                        Some(Answer::Now(reply)) => frame::put_reply(&mut out, id, &reply),
                        Some(Answer::Later(answer)) => {
                            let answer = async move { (id, answer.await) };
                            in_flight.push(Box::pin(answer.instrument(span.clone())));
                        }
                        None => frame::put_reply(&mut out, id, &unknown_service(&service)),
                    }
                }
                Ok(Some(Frame::Reply { .. })) => {
                    tracing::warn!(parent: &span, "reply frame on the serving end of a link; closed");
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(parent: &span, error = %e, "link closed");
                    break;
                }
            },
            _ = &mut ended => {
                tracing::debug!(parent: &span, "link closed: peer cut off by the fault filter");
                break;
            }
        }
    }
    drop(watcher);
    // Requests already accepted run to their end, as a local caller's would: a service
    // must not be cancelled halfway because its caller went away.
    if !in_flight.is_empty() {
        tokio::spawn(async move { while in_flight.next().await.is_some() {} }.instrument(span));
    }
}

/// The services this link has reached, kept by the link so that a request does not go through
/// the node's shared map. Services are only ever added, so what it keeps stays right; it holds
/// at most every service of the node, whatever the peer asks for.
#[derive(Default)]
struct Known(Vec<Dispatcher>);

impl Known {
    fn find(
        &mut self,
        services: &DashMap<Arc<str>, Dispatcher>,
        name: &str,
    ) -> Option<&Dispatcher> {
        let at = match self.0.iter().position(|d| d.name() == name) {
            Some(at) => at,
            None => {
                self.0.push(services.get(name)?.clone());
                self.0.len() - 1
            }
        };
        Some(&self.0[at])
    }
}

fn unknown_service(service: &str) -> Vec<u8> {
    let reply = Reply::error(
        0,
        ErrorCode::UnknownService,
        format!("no service named `{service}` on this node"),
    );
    wire::encode(&reply, usize::MAX).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::Ordering;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::*;
    use crate::membership::View;
    use crate::transport::dispatch::DispatchStats;
    use crate::transport::links::handshake::{self, LinkKey};
    use crate::transport::{Request, Service, ServiceFuture};
    use crate::wire::{Envelope, PROTOCOL_VERSION};

    /// Answers with the sender the transport handed it.
    struct WhoAsks;

    impl Service for WhoAsks {
        fn call(&self, request: Request) -> ServiceFuture {
            Box::pin(async move { Ok(request.from.as_bytes().to_vec()) })
        }
    }

    fn request(id: u64, from: NodeId) -> Vec<u8> {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id: id,
            from,
            kind: "who".into(),
            payload: Vec::new(),
        };
        let mut out = Vec::new();
        frame::put_request(&mut out, id, "who", &wire::encode(&envelope, 1024).unwrap());
        out
    }

    async fn answer<R: tokio::io::AsyncRead + Unpin>(replies: &mut FrameReader<R>) -> (u64, Reply) {
        match replies.next().await.unwrap() {
            Some(Frame::Reply { id, reply }) => (id, wire::decode(&reply, 4096).unwrap()),
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// DESIGN principle 3: "The serving side knows which peer its link authenticated and
    /// trusts no identity claimed inside a payload."
    #[tokio::test]
    async fn a_link_refuses_and_counts_an_envelope_from_another_node_than_it_authenticated() {
        let (server_id, client_id, other) = (
            NodeId::from_u128(1),
            NodeId::from_u128(2),
            NodeId::from_u128(3),
        );
        let key = LinkKey::from_cookie("k");
        let stats = Arc::new(DispatchStats::default());
        let services = Arc::new(DashMap::new());
        services.insert(
            Arc::from("who"),
            Dispatcher::new("who", Arc::new(WhoAsks), 1024, stats.clone()),
        );
        let view = View {
            members: Vec::new(),
            up: Vec::new(),
            stats: Default::default(),
        };
        let (_blocked, blocked) = watch::channel(HashSet::new());
        let (_view, view) = watch::channel(Arc::new(view));
        let (_stopping, stopping) = watch::channel(false);
        let link_stats = Arc::new(TransportStats::default());
        let counted = link_stats.clone();
        let cut = Cut {
            blocked,
            view,
            stopping,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_key = key.clone();
        let serving = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut magic = [0; handshake::MAGIC.len()];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic)
                .await
                .unwrap();
            let peer = handshake::server(&mut stream, &server_key, server_id)
                .await
                .unwrap();
            serve(stream, peer, services, 4096, cut, link_stats).await;
        });

        let mut stream = TcpStream::connect(addr).await.unwrap();
        handshake::client(&mut stream, &key, client_id, server_id)
            .await
            .unwrap();
        stream
            .write_all(&[request(1, other), request(2, client_id)].concat())
            .await
            .unwrap();
        let (read, _write) = stream.into_split();
        let mut replies = FrameReader::new(read, 4096);
        let (id, forged) = answer(&mut replies).await;
        assert_eq!((id, forged.request_id), (1, 1));
        let error = forged.error.expect("refused");
        assert_eq!(error.code(), ErrorCode::BadRequest);
        assert!(error.to_string().contains("authenticated node"), "{error}");
        let (id, honest) = answer(&mut replies).await;
        assert_eq!((id, honest.error), (2, None));
        assert_eq!(honest.ok.as_deref(), Some(&client_id.as_bytes()[..]));
        assert_eq!(stats.forged_senders.load(Ordering::Relaxed), 1);
        assert_eq!(stats.handled.load(Ordering::Relaxed), 1);
        // Both requests in, both replies out, each counted once.
        let sent = [request(1, other), request(2, client_id)].concat().len() as u64;
        assert_eq!(counted.bytes_in.load(Ordering::Relaxed), sent);
        assert!(counted.bytes_out.load(Ordering::Relaxed) > 0);
        drop(replies);
        serving.abort();
    }
}
