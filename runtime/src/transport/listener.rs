//! The node's TCP port: links only.
//!
//! A link opens with [`MAGIC`]; a connection whose first eight bytes are anything else is junk
//! (a port scanner, or a node of a Colony that still spoke ractor_cluster sessions): it is
//! counted in `handshake_failures` and closed.
//!
//! Every accepted connection needs a [`Permit`] until it authenticates (`admission`): the
//! listener refuses the connection when none is left, and closes it when it has not
//! authenticated within [`ACCEPT_DEADLINE`] of being accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::admission::{ACCEPT_DEADLINE, Admission, Permit};
use super::links::{Links, MAGIC};

/// Accepts connections until the returned task is aborted.
pub(crate) fn spawn(
    listener: TcpListener,
    links: Arc<Links>,
    admission: Arc<Admission>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let member = links.cut.hosts_member(peer.ip());
                    // Over a cap: dropping the stream closes it at once, with no task.
                    if let Some(permit) = admission.admit(peer.ip(), member) {
                        tokio::spawn(route(stream, peer, permit, links.clone()));
                    }
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

async fn route(mut stream: TcpStream, peer: SocketAddr, permit: Permit, links: Arc<Links>) {
    let deadline = Instant::now() + ACCEPT_DEADLINE;
    let _ = stream.set_nodelay(true);
    let mut first = [0; MAGIC.len()];
    let why = match tokio::time::timeout_at(deadline, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) if first == MAGIC => return links.accept(stream, permit, deadline).await,
        Ok(Ok(_)) => "did not open with a link handshake",
        Ok(Err(_)) | Err(_) => "closed or silent before saying what it is",
    };
    links
        .stats
        .handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%peer, "connection {why}; closed");
}
