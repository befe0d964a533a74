//! The node's TCP port: one listener for both links and ractor_cluster sessions.
//!
//! A link opens with [`MAGIC`]; a ractor_cluster client opens with the `u64` big-endian length
//! of its first frame, whose first byte is zero for any frame the session would accept, so the
//! first eight bytes tell them apart. Sessions are handed to ractor_cluster's `NodeServer` as
//! external streams with those bytes put back in front; its own listener only listens on
//! loopback at a port nobody is told about.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::links::{Links, MAGIC};
use super::sessions::HANDSHAKE_TIMEOUT;

/// Accepts connections until the returned task is aborted.
pub(crate) fn spawn(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    links: Arc<Links>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(route(stream, peer, server.clone(), links.clone()));
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

async fn route(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: ActorRef<NodeServerMessage>,
    links: Arc<Links>,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0; MAGIC.len()];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) if first == MAGIC => links.accept(stream).await,
        Ok(Ok(_)) => {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let session = Box::new(Accepted {
                first,
                stream,
                peer,
                local,
            });
            // The server is gone only while the node shuts down.
            let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal {
                stream: session,
                is_server: true,
            });
        }
        Ok(Err(_)) | Err(_) => {
            links
                .stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "connection closed or silent before saying what it is");
        }
    }
}

/// An accepted session's stream, with the bytes the listener read put back in front.
struct Accepted {
    first: [u8; MAGIC.len()],
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
}

impl ClusterBidiStream for Accepted {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.stream.into_split();
        let read = std::io::Cursor::new(self.first).chain(read);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}
