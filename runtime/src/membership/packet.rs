//! Gossip packets: what travels over UDP, and the tag that proves it came from a cookie holder.
//!
//! ```text
//! packet  = magic "CO" | format 1 | kind | body | tag (16 bytes)
//! tag     = HMAC-SHA256(key, everything before the tag), first 16 bytes
//! key     = SHA-256("colony gossip v1" | cookie)
//! ```
//! `kind` is [`Kind::Gossip`] (a foca packet), [`Kind::Leave`] (a node says it is leaving) or
//! [`Kind::Refused`] (a receiver tells a sender its tag was wrong). A refusal carries no tag: the
//! receiver cannot sign for a sender it does not trust, and a forged refusal only causes a log line.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const MAGIC: [u8; 2] = *b"CO";
const FORMAT: u8 = 1;
const HEADER: usize = 4;
/// Bytes of tag at the end of an authenticated packet.
pub const TAG_LEN: usize = 16;
/// Bytes a packet adds around its body.
pub const OVERHEAD: usize = HEADER + TAG_LEN;

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SWIM message for foca.
    Gossip,
    /// The sender is leaving the cluster on purpose.
    Leave,
    /// The receiver refused the sender's packet (wrong cookie).
    Refused,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Gossip => 1,
            Kind::Leave => 2,
            Kind::Refused => 3,
        }
    }
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Too short, wrong magic or unknown format: not a Colony packet.
    #[error("not a Colony gossip packet")]
    Malformed,
    /// The tag does not match: the sender has another cookie, or the packet was altered.
    #[error("authentication tag mismatch (the sender's cookie differs from ours)")]
    BadTag,
}

/// The key that signs gossip, derived from the cookie.
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    /// Derives the key from the cluster cookie.
    pub fn from_cookie(cookie: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"colony gossip v1");
        h.update(cookie.as_bytes());
        GossipKey(h.finalize().into())
    }

    fn mac(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Wraps `body` into a signed packet of `kind`.
    pub fn seal(&self, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut packet = Vec::with_capacity(body.len() + OVERHEAD);
        packet.extend_from_slice(&MAGIC);
        packet.push(FORMAT);
        packet.push(kind.byte());
        packet.extend_from_slice(body);
        let tag = self.mac(&packet);
        packet.extend_from_slice(&tag);
        packet
    }

    /// Checks a packet and returns its kind and body.
    ///
    /// # Errors
    /// [`PacketError::Malformed`] or [`PacketError::BadTag`]. Never panics.
    pub fn open<'p>(&self, packet: &'p [u8]) -> Result<(Kind, &'p [u8]), PacketError> {
        if packet.len() < HEADER || packet[..2] != MAGIC || packet[2] != FORMAT {
            return Err(PacketError::Malformed);
        }
        let kind = match packet[3] {
            1 => Kind::Gossip,
            2 => Kind::Leave,
            3 => return Ok((Kind::Refused, &[])),
            _ => return Err(PacketError::Malformed),
        };
        if packet.len() < OVERHEAD {
            return Err(PacketError::Malformed);
        }
        let (signed, tag) = packet.split_at(packet.len() - TAG_LEN);
        // Constant-time comparison through the MAC API.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| PacketError::BadTag)?;
        Ok((kind, &signed[HEADER..]))
    }
}

/// The unsigned refusal packet.
pub fn refusal() -> Vec<u8> {
    vec![MAGIC[0], MAGIC[1], FORMAT, Kind::Refused.byte()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sealed_packet_opens_with_the_same_cookie_only() {
        let ours = GossipKey::from_cookie("right");
        let theirs = GossipKey::from_cookie("wrong");
        let packet = ours.seal(Kind::Gossip, b"swim");
        assert_eq!(ours.open(&packet), Ok((Kind::Gossip, &b"swim"[..])));
        assert_eq!(theirs.open(&packet), Err(PacketError::BadTag));
    }

    #[test]
    fn a_flipped_bit_is_caught() {
        let key = GossipKey::from_cookie("c");
        let mut packet = key.seal(Kind::Leave, b"bye");
        packet[5] ^= 1;
        assert_eq!(key.open(&packet), Err(PacketError::BadTag));
    }

    #[test]
    fn refusals_open_without_a_tag() {
        let key = GossipKey::from_cookie("c");
        assert_eq!(key.open(&refusal()), Ok((Kind::Refused, &[][..])));
    }

    proptest! {
        #[test]
        fn junk_never_opens_and_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = GossipKey::from_cookie("c");
            if let Ok((kind, _)) = key.open(&bytes) {
                prop_assert_eq!(kind, Kind::Refused);
            }
        }
    }
}
