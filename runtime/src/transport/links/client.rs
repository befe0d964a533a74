//! The dialling end of a link: callers write their own frames, one task reads the replies of
//! every link.
//!
//! A caller writes its request straight onto the socket from its own task (a non-blocking
//! write under a short lock), so an idle link costs no hand-off on the way out. Only when the
//! socket is full does the rest go to a backlog that a flusher task writes as the socket drains.
//!
//! Replies come back through [`Replies`], one task for all of a node's links. A task per link
//! would make two tasks runnable when the answers to a request sent to two peers arrive
//! together, and tokio then wakes a second worker thread to take one of them: on two CPUs that
//! wake-up cost a fan-out to two peers about a third more than reading both replies in one
//! task (see `docs/benchmarks.md`, "One task reads every link's replies").

use std::collections::HashMap;
use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{Instrument, Span};

use super::frame::{self, Frame, FrameReader};
use crate::transport::TransportStats;

/// Bytes queued behind a full socket before the link gives up on a peer that stopped reading.
const MAX_BACKLOG: usize = 64 * 1024 * 1024;

/// Why a call written on a link got no answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The link closed after the request was written: it may have run.
    Lost,
    /// No answer in time: it may have run.
    Timeout,
}

/// An outgoing link to one peer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    stats: Arc<TransportStats>,
    socket: OwnedWriteHalf,
    /// Bytes the socket did not take yet; writes happen under this lock, in order.
    backlog: Mutex<Vec<u8>>,
    flush: Notify,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    gone: Notify,
}

/// A request written on a link, waiting for its reply. Dropping it (an answer, a timeout, or
/// a caller that went away) forgets its slot.
pub(crate) struct Call {
    link: Link,
    id: u64,
    reply: oneshot::Receiver<Vec<u8>>,
    /// Whether the reply came: the reader took the slot then, and nothing is left to forget.
    answered: bool,
}

impl Future for Call {
    type Output = Result<Vec<u8>, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = std::task::ready!(Pin::new(&mut self.reply).poll(cx));
        self.answered = reply.is_ok();
        Poll::Ready(reply.map_err(|_| CallError::Lost))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.answered {
            let pending = &self.link.inner.pending;
            pending.lock().expect("pending lock").remove(&self.id);
        }
    }
}

/// A link's reading of its replies, run by [`Replies`].
type Reading = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The task that reads the replies of all of a node's outgoing links. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Replies {
    add: mpsc::UnboundedSender<Reading>,
}

impl Replies {
    /// Starts the task. It ends once every handle is dropped and every link it reads has closed.
    pub(crate) fn start() -> Replies {
        let (add, added) = mpsc::unbounded_channel();
        tokio::spawn(Replies::run(added));
        Replies { add }
    }

    async fn run(mut added: mpsc::UnboundedReceiver<Reading>) {
        let mut reading = quiet_set();
        loop {
            tokio::select! {
                biased;
                Some(()) = reading.next() => {}
                link = added.recv() => match link {
                    Some(link) => reading.push(link),
                    None => break,
                },
            }
        }
        while reading.len() > 1 {
            reading.next().await;
        }
    }
}

/// A set that polls each of its futures only when that future was woken, and never yields to
/// the runtime on its own. `FuturesUnordered` does yield (it wakes its task and returns
/// `Pending`) whenever one call has polled as many futures as it holds, which happens each
/// time every link has a reply, so with two peers on most fan-outs; tokio then wakes a second
/// worker thread for the yielded task. A member that never finishes keeps the count
/// unreachable. The runtime's own budget still bounds how long one call may run: a socket that
/// has used it up answers `Pending` and wakes its reader, and two such make the set yield.
fn quiet_set() -> FuturesUnordered<Reading> {
    let set = FuturesUnordered::new();
    set.push(Box::pin(std::future::pending()) as Reading);
    set
}

impl Link {
    /// Wraps an authenticated stream, hands its reading to `replies` and starts its flusher.
    pub(crate) fn start(
        stream: TcpStream,
        frame_limit: usize,
        stats: Arc<TransportStats>,
        replies: &Replies,
    ) -> Link {
        let (read, write) = stream.into_split();
        let link = Link {
            inner: Arc::new(Inner {
                stats,
                socket: write,
                backlog: Mutex::new(Vec::new()),
                flush: Notify::new(),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                gone: Notify::new(),
            }),
        };
        // Its lines go to the dialler's span, which names the peer. The span is not entered
        // around each poll: that cost a few hundred nanoseconds a reply on each side.
        let reading = link
            .clone()
            .read_replies(read, frame_limit, Span::current());
        if replies.add.send(Box::pin(reading)).is_err() {
            // The node is stopping: nothing will read this link.
            link.close();
        }
        tokio::spawn(link.clone().flush_backlog().in_current_span());
        link
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Resolves once the link is closed.
    pub(crate) async fn closed(&self) {
        let gone = self.inner.gone.notified();
        if !self.is_closed() {
            gone.await;
        }
    }

    /// Closes the link: pending calls fail with [`CallError::Lost`].
    pub(crate) fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropping the senders wakes every waiting caller.
        self.inner.pending.lock().expect("pending lock").clear();
        self.inner.backlog.lock().expect("backlog lock").clear();
        self.inner.flush.notify_one();
        self.inner.gone.notify_waiters();
    }

    /// Writes one request to `service` (or queues it behind a full socket) and returns the
    /// call that resolves to its reply; `None` if the link is closed and nothing was sent.
    /// Nothing is awaited: a caller can start calls on several links and wait for them together.
    pub(crate) fn send(&self, service: &str, envelope: &[u8]) -> Option<Call> {
        let inner = &*self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, reply) = oneshot::channel();
        inner.pending.lock().expect("pending lock").insert(id, tx);
        let call = Call {
            link: self.clone(),
            id,
            reply,
            answered: false,
        };
        let mut bytes = Vec::with_capacity(envelope.len() + service.len() + 16);
        frame::put_request(&mut bytes, id, service, envelope);
        let written = self.write(&bytes);
        if written {
            let n = bytes.len() as u64;
            inner.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
        written.then_some(call)
    }

    /// Writes `bytes` now if the socket takes them, else queues them for the flusher. `false`
    /// if the link is (or just got) closed: nothing of them was sent.
    fn write(&self, bytes: &[u8]) -> bool {
        let inner = &*self.inner;
        let mut backlog = inner.backlog.lock().expect("backlog lock");
        if self.is_closed() {
            return false;
        }
        if !backlog.is_empty() {
            if backlog.len() + bytes.len() > MAX_BACKLOG {
                drop(backlog);
                tracing::warn!("link backlog full: the peer stopped reading; closed");
                self.close();
                return false;
            }
            backlog.extend_from_slice(bytes);
            return true;
        }
        match inner.socket.try_write(bytes) {
            Ok(n) if n == bytes.len() => true,
            Ok(n) => {
                backlog.extend_from_slice(&bytes[n..]);
                inner.flush.notify_one();
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                backlog.extend_from_slice(bytes);
                inner.flush.notify_one();
                true
            }
            Err(e) => {
                drop(backlog);
                tracing::debug!(error = %e, "link write failed; closed");
                self.close();
                false
            }
        }
    }

    async fn flush_backlog(self) {
        let inner = &*self.inner;
        loop {
            inner.flush.notified().await;
            loop {
                if self.is_closed() {
                    return;
                }
                let result = {
                    let mut backlog = inner.backlog.lock().expect("backlog lock");
                    if backlog.is_empty() {
                        break;
                    }
                    inner.socket.try_write(&backlog).map(|n| {
                        backlog.drain(..n);
                    })
                };
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // A peer that stopped reading (paused, say) must not keep this task
                        // once the link is closed.
                        let writable = tokio::select! {
                            writable = inner.socket.writable() => writable,
                            () = self.closed() => return,
                        };
                        if writable.is_err() {
                            self.close();
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "link write failed; closed");
                        self.close();
                        return;
                    }
                }
            }
        }
    }

    async fn read_replies(self, read: OwnedReadHalf, frame_limit: usize, span: Span) {
        let mut reader = FrameReader::new(read, frame_limit).counted(self.inner.stats.clone());
        let closed = self.closed();
        tokio::pin!(closed);
        loop {
            let frame = tokio::select! {
                frame = reader.next() => frame,
                () = &mut closed => return,
            };
            match frame {
                Ok(Some(Frame::Reply { id, reply })) => {
                    let waiter = self.inner.pending.lock().expect("pending lock").remove(&id);
                    // A caller that timed out is gone; its late reply is dropped.
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(reply);
                    }
                }
                Ok(Some(Frame::Request { .. })) => {
                    tracing::warn!(parent: &span, "request frame on the dialling end of a link; closed");
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(parent: &span, error = %e, "link closed");
                    break;
                }
            }
        }
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// Counts how often the set asks to be polled again.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Why `quiet_set` exists: when every member was woken at once (each link had a reply),
    /// a bare `FuturesUnordered` wakes its own task, which tokio answers by waking a second
    /// worker thread. The quiet set polls them all and rests.
    #[test]
    fn a_quiet_set_polls_every_woken_member_without_waking_itself() {
        for quiet in [false, true] {
            let mut set = if quiet {
                quiet_set()
            } else {
                FuturesUnordered::new()
            };
            let mut senders = Vec::new();
            for _ in 0..2 {
                let (tx, rx) = oneshot::channel::<()>();
                senders.push(tx);
                set.push(Box::pin(async move {
                    let _ = rx.await;
                    std::future::pending::<()>().await;
                }) as Reading);
            }
            let counting = Arc::new(Counting(AtomicUsize::new(0)));
            let waker = std::task::Waker::from(counting.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(set.poll_next_unpin(&mut cx).is_pending());
            let before = counting.0.load(Ordering::Relaxed);
            for tx in senders {
                tx.send(()).unwrap();
            }
            let woken = counting.0.load(Ordering::Relaxed) - before;
            assert!(set.poll_next_unpin(&mut cx).is_pending());
            let asked_again = counting.0.load(Ordering::Relaxed) - before - woken;
            assert_eq!(asked_again, usize::from(!quiet), "quiet: {quiet}");
        }
    }
}
