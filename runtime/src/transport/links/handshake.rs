//! Mutual challenge-response on the cookie, before a link carries anything.
//!
//! ```text
//! client -> server   MAGIC, client id, client nonce
//! server -> client   server id, server nonce, tag("server", client nonce, server nonce, ids)
//! client -> server   tag("client", server nonce, client nonce, ids)
//! ```
//!
//! Each side proves it holds the cookie on the other's fresh nonce, so a recorded handshake
//! cannot be replayed, and the role in each tag stops one side's answer being reflected back as
//! the other's. The client also checks that it reached the node it meant to dial.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::NodeId;

/// The first bytes of a link; a connection that opens with anything else is junk (see
/// `listener`).
pub(crate) const MAGIC: [u8; 8] = *b"COLONYL1";
const NONCE: usize = 16;
const TAG: usize = 32;
const ID: usize = 16;

/// Why a handshake failed. None of them says anything about the cookie itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("connection failed during the link handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer does not hold this cluster's cookie")]
    BadTag,
    #[error("reached node {found} instead of {expected}")]
    WrongPeer { expected: NodeId, found: NodeId },
}

/// The links' key, derived from the cookie apart from the gossip key.
#[derive(Clone)]
pub(crate) struct LinkKey([u8; 32]);

impl LinkKey {
    pub(crate) fn from_cookie(cookie: &str) -> LinkKey {
        let mut h = Sha256::new();
        h.update(b"colony link v1");
        h.update(cookie.as_bytes());
        LinkKey(h.finalize().into())
    }

    fn mac(
        &self,
        role: &[u8],
        first: &[u8],
        second: &[u8],
        client: NodeId,
        server: NodeId,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [role, first, second, client.as_bytes(), server.as_bytes()] {
            mac.update(part);
        }
        mac
    }
}

fn node_id(bytes: &[u8]) -> NodeId {
    let mut b = [0; ID];
    b.copy_from_slice(bytes);
    NodeId::from_u128(u128::from_be_bytes(b))
}

fn nonce() -> [u8; NONCE] {
    rand::random()
}

/// The dialling side. Returns once both sides are proven.
pub(crate) async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &LinkKey,
    local: NodeId,
    expected: NodeId,
) -> Result<(), HandshakeError> {
    let mine = nonce();
    let mut hello = Vec::with_capacity(MAGIC.len() + ID + NONCE);
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(local.as_bytes());
    hello.extend_from_slice(&mine);
    stream.write_all(&hello).await?;
    let mut answer = [0; ID + NONCE + TAG];
    stream.read_exact(&mut answer).await?;
    let server = node_id(&answer[..ID]);
    if server != expected {
        return Err(HandshakeError::WrongPeer {
            expected,
            found: server,
        });
    }
    let theirs = &answer[ID..ID + NONCE];
    key.mac(b"server", &mine, theirs, local, server)
        .verify_slice(&answer[ID + NONCE..])
        .map_err(|_| HandshakeError::BadTag)?;
    let proof = key.mac(b"client", theirs, &mine, local, server).finalize();
    stream.write_all(&proof.into_bytes()).await?;
    Ok(())
}

/// The accepting side, after the listener has read [`MAGIC`]. Returns the client's id.
pub(crate) async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &LinkKey,
    local: NodeId,
) -> Result<NodeId, HandshakeError> {
    let mut hello = [0; ID + NONCE];
    stream.read_exact(&mut hello).await?;
    let client = node_id(&hello[..ID]);
    let theirs = &hello[ID..];
    let mine = nonce();
    let tag = key.mac(b"server", theirs, &mine, client, local).finalize();
    let mut answer = Vec::with_capacity(ID + NONCE + TAG);
    answer.extend_from_slice(local.as_bytes());
    answer.extend_from_slice(&mine);
    answer.extend_from_slice(&tag.into_bytes());
    stream.write_all(&answer).await?;
    let mut proof = [0; TAG];
    stream.read_exact(&mut proof).await?;
    key.mac(b"client", &mine, theirs, client, local)
        .verify_slice(&proof)
        .map_err(|_| HandshakeError::BadTag)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        client_cookie: &str,
        server_cookie: &str,
        expected: NodeId,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (ck, sk) = (
            LinkKey::from_cookie(client_cookie),
            LinkKey::from_cookie(server_cookie),
        );
        let server_side = async {
            let mut magic = [0; MAGIC.len()];
            b.read_exact(&mut magic).await?;
            assert_eq!(magic, MAGIC);
            let r = server(&mut b, &sk, NodeId::from_u128(2)).await;
            drop(b);
            r
        };
        let client_side = async {
            let r = client(&mut a, &ck, NodeId::from_u128(1), expected).await;
            drop(a);
            r
        };
        tokio::join!(client_side, server_side)
    }

    #[tokio::test]
    async fn the_same_cookie_proves_both_sides() {
        let (c, s) = run("k", "k", NodeId::from_u128(2)).await;
        c.unwrap();
        assert_eq!(s.unwrap(), NodeId::from_u128(1));
    }

    #[tokio::test]
    async fn another_cookie_is_refused_by_the_client() {
        let (c, s) = run("k", "other", NodeId::from_u128(2)).await;
        assert!(matches!(c, Err(HandshakeError::BadTag)), "{c:?}");
        // The client hangs up without a proof: the server never accepts it.
        assert!(s.is_err());
    }

    #[tokio::test]
    async fn the_wrong_node_at_an_address_is_refused() {
        let (c, s) = run("k", "k", NodeId::from_u128(3)).await;
        assert!(matches!(c, Err(HandshakeError::WrongPeer { .. })), "{c:?}");
        assert!(s.is_err());
    }
}
