//! The accepting end of a link: requests in, replies out, all inside the connection's task.
//!
//! A request the service answers at once (most do) is answered before the next frame is read,
//! with no task spawned and no hand-off.
//! Requests that wait (a lock queued behind its holder, say) stay in flight in the same task
//! while later frames are read, so one slow request holds up no other.

use std::pin::Pin;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Cut;
use super::frame::{self, Frame, FrameReader};
use crate::NodeId;
use crate::transport::gateway::{Answer, Dispatcher};
use crate::wire::{self, ErrorCode, Reply};

type Pending = Pin<Box<dyn Future<Output = (u64, Vec<u8>)> + Send>>;

/// Serves one authenticated link from `peer` until it closes or `peer` is cut off.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: NodeId,
    services: Arc<DashMap<Arc<str>, Dispatcher>>,
    frame_limit: usize,
    mut cut: Cut,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, frame_limit);
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut out = Vec::new();
    // One future for the whole connection: it looks at membership only when that changes, not
    // once per frame.
    let ended = cut.wait(peer);
    tokio::pin!(ended);
    loop {
        if !out.is_empty() {
            // A peer that stopped reading holds this write up; being cut off ends it.
            let written = tokio::select! {
                written = write.write_all(&out) => written,
                () = &mut ended => break,
            };
            if let Err(e) = written {
                tracing::debug!(%peer, error = %e, "link write failed");
                break;
            }
            out.clear();
        }
        tokio::select! {
            biased;
            Some((id, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                frame::put_reply(&mut out, id, &reply);
            }
            frame = reader.next() => match frame {
                Ok(Some(Frame::Request { id, service, envelope })) => {
                    match services.get(service.as_str()).map(|d| d.dispatch(&envelope)) {
                        Some(Answer::Now(reply)) => frame::put_reply(&mut out, id, &reply),
                        Some(Answer::Later(answer)) => {
                            in_flight.push(Box::pin(async move { (id, answer.await) }));
                        }
                        None => frame::put_reply(&mut out, id, &unknown_service(&service)),
                    }
                }
                Ok(Some(Frame::Reply { .. })) => {
                    tracing::warn!(%peer, "reply frame on the serving end of a link; closed");
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "link closed");
                    break;
                }
            },
            () = &mut ended => {
                tracing::debug!(%peer, "link closed: peer cut off by the fault filter");
                break;
            }
        }
    }
    // Requests already accepted run to their end, as they would behind a gateway: a service
    // must not be cancelled halfway because its caller went away.
    if !in_flight.is_empty() {
        tokio::spawn(async move { while in_flight.next().await.is_some() {} });
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
