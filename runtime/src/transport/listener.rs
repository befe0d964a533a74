//! The node's TCP port: one listener for both links and ractor_cluster sessions.
//!
//! A link opens with [`MAGIC`]; a ractor_cluster client opens with the `u64` big-endian length
//! of its first frame, whose first byte is zero for any frame the session would accept, so the
//! first eight bytes tell them apart. Sessions are handed to ractor_cluster's `NodeServer` as
//! external streams with those bytes put back in front; its own listener only listens on
//! loopback at a port nobody is told about.
//!
//! Every accepted connection needs a [`Permit`] until it authenticates (`admission`): the
//! listener refuses the connection when none is left, and closes it when it has not
//! authenticated within [`ACCEPT_DEADLINE`] of being accepted.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use super::admission::{ACCEPT_DEADLINE, Admission, Permit, PreAuth};
use super::links::{Links, MAGIC};

/// The largest ractor_cluster frame a session may send before it has authenticated. Its
/// handshake frames carry a name, an address and a digest: a few hundred bytes. Without this
/// cap, each unauthenticated session could make the node buffer a frame of
/// `max_message_bytes`.
const PRE_AUTH_FRAME: u64 = 64 * 1024;

/// Accepts connections until the returned task is aborted.
pub(crate) fn spawn(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
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
                        tokio::spawn(route(
                            stream,
                            peer,
                            permit,
                            server.clone(),
                            links.clone(),
                            admission.clone(),
                        ));
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

async fn route(
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    server: ActorRef<NodeServerMessage>,
    links: Arc<Links>,
    admission: Arc<Admission>,
) {
    let deadline = Instant::now() + ACCEPT_DEADLINE;
    let _ = stream.set_nodelay(true);
    let mut first = [0; MAGIC.len()];
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) if first == MAGIC => links.accept(stream, permit, deadline).await,
        Ok(Ok(_)) => {
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let session = Box::new(Accepted {
                first,
                stream,
                peer,
                local,
                held: admission.hold_for_session(peer, permit),
                deadline,
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
    held: Arc<PreAuth>,
    deadline: Instant,
}

impl ClusterBidiStream for Accepted {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = self.stream.into_split();
        let read = PreAuthRead {
            inner: std::io::Cursor::new(self.first).chain(read),
            held: Some(self.held),
            deadline: Box::pin(tokio::time::sleep_until(self.deadline)),
            frames: FrameSizes::default(),
        };
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}

/// A session's read half. Until ractor_cluster reports the session authenticated, it ends the
/// stream at the accept deadline and refuses frames over [`PRE_AUTH_FRAME`]; it holds the
/// session's permit, so a session that closes before authenticating frees its slot.
struct PreAuthRead<R> {
    inner: R,
    /// `None` once authenticated: from then on, bytes pass through untouched.
    held: Option<Arc<PreAuth>>,
    deadline: Pin<Box<Sleep>>,
    frames: FrameSizes,
}

impl<R: AsyncRead + Unpin> AsyncRead for PreAuthRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.held.as_ref().is_some_and(|h| h.is_authenticated()) {
            this.held = None;
        }
        if this.held.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("session did not authenticate within {ACCEPT_DEADLINE:?}"),
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.frames.scan(&buf.filled()[before..])?;
        Poll::Ready(Ok(()))
    }
}

/// Follows ractor_cluster's framing (a `u64` big-endian length, then that many bytes) to refuse
/// a frame over [`PRE_AUTH_FRAME`] as soon as its length is read.
#[derive(Default)]
struct FrameSizes {
    header: [u8; 8],
    have: usize,
    body_left: u64,
}

impl FrameSizes {
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (self.header.len() - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == self.header.len() {
                self.have = 0;
                self.body_left = u64::from_be_bytes(self.header);
                if self.body_left > PRE_AUTH_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "frame of {} bytes before authenticating (at most {PRE_AUTH_FRAME})",
                            self.body_left
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u64) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.resize(8 + len as usize, 7);
        out
    }

    #[test]
    fn small_frames_pass_in_any_split_and_a_large_one_is_refused_at_its_header() {
        let mut stream = [frame(3), frame(0), frame(PRE_AUTH_FRAME)].concat();
        let mut sizes = FrameSizes::default();
        for chunk in stream.chunks(5) {
            sizes.scan(chunk).unwrap();
        }
        stream = (PRE_AUTH_FRAME + 1).to_be_bytes().to_vec();
        let mut sizes = FrameSizes::default();
        sizes.scan(&stream[..3]).unwrap();
        let err = sizes.scan(&stream[3..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
