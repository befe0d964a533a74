//! A link's frames: `u32` length (little-endian), then a kind byte, a `u64` id, and the body.
//!
//! ```text
//! request  1 | id | service length (u8) | service | envelope bytes
//! reply    2 | id | reply bytes
//! ```
//!
//! The envelope and reply bytes are the same a node's requests to itself go through: a link
//! only adds the way there.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::transport::TransportStats;

const REQUEST: u8 = 1;
const REPLY: u8 = 2;
const LEN: usize = 4;
const HEAD: usize = 1 + 8;

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Request {
        id: u64,
        service: String,
        envelope: Vec<u8>,
    },
    Reply {
        id: u64,
        reply: Vec<u8>,
    },
}

/// Why a link's byte stream was given up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("link read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("connection closed inside a frame")]
    Truncated,
}

/// Appends a request frame to `out`.
pub(crate) fn put_request(out: &mut Vec<u8>, id: u64, service: &str, envelope: &[u8]) {
    let service = &service.as_bytes()[..service.len().min(u8::MAX as usize)];
    let body = HEAD + 1 + service.len() + envelope.len();
    out.reserve(LEN + body);
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.push(REQUEST);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(service.len() as u8);
    out.extend_from_slice(service);
    out.extend_from_slice(envelope);
}

/// Appends a reply frame to `out`.
pub(crate) fn put_reply(out: &mut Vec<u8>, id: u64, reply: &[u8]) {
    let body = HEAD + reply.len();
    out.reserve(LEN + body);
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.push(REPLY);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(reply);
}

fn parse(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() < HEAD {
        return Err(FrameError::Malformed("shorter than its header"));
    }
    let id = u64::from_le_bytes(body[1..HEAD].try_into().expect("8 bytes"));
    let rest = &body[HEAD..];
    match body[0] {
        REQUEST => {
            let (&n, rest) = rest
                .split_first()
                .ok_or(FrameError::Malformed("no service name"))?;
            let n = n as usize;
            if rest.len() < n {
                return Err(FrameError::Malformed("service name cut short"));
            }
            let service = std::str::from_utf8(&rest[..n])
                .map_err(|_| FrameError::Malformed("service name is not UTF-8"))?;
            Ok(Frame::Request {
                id,
                service: service.to_owned(),
                envelope: rest[n..].to_vec(),
            })
        }
        REPLY => Ok(Frame::Reply {
            id,
            reply: rest.to_vec(),
        }),
        _ => Err(FrameError::Malformed("unknown frame kind")),
    }
}

/// Reads frames off a byte stream. [`next`](Self::next) is cancel-safe: bytes already read
/// stay in the buffer, so it can sit in a `select!`.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
    counted: Option<Arc<TransportStats>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `limit` bounds a frame's body: nothing larger is ever buffered.
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(16 * 1024),
            limit,
            counted: None,
        }
    }

    /// The same reader, adding every byte it reads to `stats.bytes_in`.
    pub(crate) fn counted(mut self, stats: Arc<TransportStats>) -> Self {
        self.counted = Some(stats);
        self
    }

    /// The next frame, or `None` when the peer closed cleanly between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Some(frame));
            }
            let want = self.wanted();
            self.buf.reserve(want.max(16 * 1024));
            let read = self.inner.read_buf(&mut self.buf).await?;
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            if let Some(stats) = &self.counted {
                stats.bytes_in.fetch_add(read as u64, Ordering::Relaxed);
            }
        }
    }

    /// Bytes still missing from the frame at the front.
    fn wanted(&self) -> usize {
        match self.buf.get(..LEN) {
            Some(len) => {
                let body = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                (LEN + body).saturating_sub(self.buf.len())
            }
            None => LEN - self.buf.len(),
        }
    }

    fn take(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(len) = self.buf.get(..LEN) else {
            return Ok(None);
        };
        let body = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if body > self.limit {
            return Err(FrameError::TooLarge {
                size: body,
                limit: self.limit,
            });
        }
        if self.buf.len() < LEN + body {
            return Ok(None);
        }
        let frame = parse(&self.buf[LEN..LEN + body]);
        self.buf.drain(..LEN + body);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    async fn read_all(bytes: Vec<u8>, limit: usize) -> Result<Vec<Frame>, FrameError> {
        let mut reader = FrameReader::new(&bytes[..], limit);
        let mut frames = Vec::new();
        while let Some(f) = reader.next().await? {
            frames.push(f);
        }
        Ok(frames)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn frames_come_back_as_written() {
        let mut out = Vec::new();
        put_request(&mut out, 7, "locks", b"env");
        put_reply(&mut out, 7, b"answer");
        put_reply(&mut out, 8, b"");
        let frames = block_on(read_all(out, 1024)).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Request {
                    id: 7,
                    service: "locks".into(),
                    envelope: b"env".to_vec()
                },
                Frame::Reply {
                    id: 7,
                    reply: b"answer".to_vec()
                },
                Frame::Reply {
                    id: 8,
                    reply: vec![]
                },
            ]
        );
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut out = Vec::new();
        put_reply(&mut out, 1, &[0; 100]);
        let err = block_on(read_all(out[..LEN].to_vec(), 50)).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    size: 109,
                    limit: 50
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated() {
        let mut out = Vec::new();
        put_reply(&mut out, 1, b"abc");
        out.pop();
        assert!(matches!(
            block_on(read_all(out, 64)),
            Err(FrameError::Truncated)
        ));
    }

    proptest! {
        /// Whatever arrives, the reader answers with frames or an error: never a panic, and
        /// never a buffer beyond the limit plus one read.
        #[test]
        fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = block_on(read_all(bytes, 256));
        }

        #[test]
        fn any_request_round_trips(id in any::<u64>(), service in "[a-z.]{0,40}", envelope in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            put_request(&mut out, id, &service, &envelope);
            let frames = block_on(read_all(out, 1024)).unwrap();
            prop_assert_eq!(frames, vec![Frame::Request { id, service, envelope }]);
        }
    }
}
