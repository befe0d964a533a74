//! Size-checked, panic-free encoding and decoding of wire types.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be turned into a wire type, or a value into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The encoded message is larger than the configured limit. Nothing was sent.
    #[error(
        "message of {size} bytes exceeds the limit of {limit} bytes (raise max_message_bytes or send less)"
    )]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a valid message of the expected type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// The type expected.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// The value cannot be encoded (e.g. a map with non-string keys in a custom serializer).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// The type being encoded.
        what: &'static str,
        /// The encoder's explanation.
        reason: String,
    },
}

/// Encodes `value` as a MessagePack map with named fields, refusing results above `limit` bytes.
///
/// # Errors
/// [`WireError::Encode`] or [`WireError::TooLarge`].
///
/// # Examples
/// ```
/// use colony_runtime::wire::{decode, encode};
/// let bytes = encode(&("hello", 42u32), 1024).unwrap();
/// let back: (String, u32) = decode(&bytes, 1024).unwrap();
/// assert_eq!(back, ("hello".to_string(), 42));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T, limit: usize) -> Result<Vec<u8>, WireError> {
    // Room for a small message up front: growing from empty reallocates four or five times.
    let mut bytes = Vec::with_capacity(128);
    rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| WireError::Encode {
        what: std::any::type_name::<T>(),
        reason: e.to_string(),
    })?;
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes bytes produced by [`encode`], refusing inputs above `limit` bytes before parsing.
///
/// # Errors
/// [`WireError::TooLarge`] or [`WireError::Decode`]; never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| WireError::Decode {
        what: short_type_name::<T>(),
        reason: bounded(e.to_string()),
    })
}

/// The longest decoder complaint kept, in bytes.
const MAX_REASON: usize = 200;

/// Cuts a decoder's complaint to [`MAX_REASON`] bytes. serde quotes some offending values in
/// full (an unknown enum variant: "unknown variant `...`"), so without a cut one junk request
/// of `max_message_bytes` would be logged and echoed back whole.
fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
}

/// Encodes a service payload with no size limit of its own (the envelope's limit applies).
///
/// # Errors
/// [`WireError::Encode`].
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    encode(value, usize::MAX)
}

/// Decodes a service payload (its envelope was size-checked already).
///
/// # Errors
/// [`WireError::Decode`].
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode(bytes, usize::MAX)
}

/// Decodes a sequence field without trusting its length prefix for capacity: use it as
/// `#[serde(deserialize_with = "colony_runtime::wire::codec::seq_as_read")]` on every `Vec` a
/// peer sends. A prefix may claim four billion elements in five bytes, and serde's own `Vec`
/// reserves up to 1 MiB on such a claim before it reads one element; this reserves at most
/// [`SEQ_RESERVE`] elements and grows as elements really arrive, so what a decode holds stays
/// in proportion to the bytes it was given.
///
/// # Errors
/// The deserializer's, for a value that is not a sequence of `T`.
///
/// # Examples
/// ```
/// use serde::Deserialize;
/// use colony_runtime::wire::{decode_payload, encode_payload};
///
/// #[derive(Deserialize)]
/// struct Changes {
///     #[serde(deserialize_with = "colony_runtime::wire::codec::seq_as_read")]
///     ops: Vec<u64>,
/// }
/// let back: Changes = decode_payload(&encode_payload(&[[1u64, 2, 3]]).unwrap()).unwrap();
/// assert_eq!(back.ops, [1, 2, 3]);
/// // `{"ops": <array of 2^32 - 1>}` and nothing after: an error, and nothing reserved for it.
/// let claim = [0x81, 0xa3, b'o', b'p', b's', 0xdd, 0xff, 0xff, 0xff, 0xff];
/// assert!(decode_payload::<Changes>(&claim).is_err());
/// ```
pub fn seq_as_read<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct AsRead<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for AsRead<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(SEQ_RESERVE));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(AsRead(std::marker::PhantomData))
}

/// Elements [`seq_as_read`] reserves at most before it has read them.
pub const SEQ_RESERVE: usize = 16;

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::wire::{Envelope, PROTOCOL_VERSION, Reply};
    use proptest::prelude::*;
    use serde::Deserialize;

    fn envelope(payload: Vec<u8>) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            request_id: 7,
            from: NodeId::from_u128(1),
            kind: "echo".into(),
            payload,
        }
    }

    /// A later protocol version's envelope, with a field the current one lacks.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct EnvelopeV2 {
        version: u16,
        request_id: u64,
        from: NodeId,
        kind: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        deadline_ms: Option<u64>,
    }

    #[test]
    fn a_newer_envelope_with_an_added_field_decodes_as_the_current_one() {
        let newer = EnvelopeV2 {
            version: 2,
            request_id: 9,
            from: NodeId::from_u128(5),
            kind: "echo".into(),
            payload: b"hi".to_vec(),
            deadline_ms: Some(250),
        };
        let bytes = encode(&newer, 1 << 20).unwrap();
        let current: Envelope = decode(&bytes, 1 << 20).unwrap();
        assert_eq!(current.version, 2);
        assert_eq!(current.payload, b"hi");
    }

    #[test]
    fn a_current_envelope_decodes_as_the_newer_one_with_the_field_absent() {
        let bytes = encode(&envelope(b"x".to_vec()), 1 << 20).unwrap();
        let newer: EnvelopeV2 = decode(&bytes, 1 << 20).unwrap();
        assert_eq!(newer.deadline_ms, None);
        assert_eq!(newer.request_id, 7);
    }

    #[test]
    fn too_large_is_refused_before_sending_and_before_parsing() {
        let err = encode(&envelope(vec![0; 2000]), 1000).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { limit: 1000, .. }));
        let err = decode::<Envelope>(&[0; 2000], 1000).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { .. }));
    }

    #[test]
    fn reply_round_trips_both_outcomes() {
        for reply in [
            Reply::ok(3, vec![1, 2]),
            Reply::error(4, crate::wire::ErrorCode::Busy, "full"),
        ] {
            let back: Reply = decode(&encode(&reply, 1 << 20).unwrap(), 1 << 20).unwrap();
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn a_junk_value_is_not_echoed_whole_in_the_error() {
        #[derive(Debug, Deserialize)]
        enum Kind {
            Echo,
        }
        let bytes = encode(&"é".repeat(50_000), 1 << 20).unwrap();
        let WireError::Decode { reason, .. } = decode::<Kind>(&bytes, 1 << 20).unwrap_err() else {
            panic!("not a decode error");
        };
        assert!(reason.len() <= MAX_REASON + 3, "{} bytes", reason.len());
        assert!(reason.starts_with("unknown variant"), "{reason}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Envelope>(&bytes, 1 << 20);
            let _ = decode::<Reply>(&bytes, 1 << 20);
        }

        #[test]
        fn truncated_envelopes_are_errors(payload in proptest::collection::vec(any::<u8>(), 0..64), cut in 1usize..16) {
            let bytes = encode(&envelope(payload), 1 << 20).unwrap();
            let cut = cut.min(bytes.len());
            prop_assert!(decode::<Envelope>(&bytes[..bytes.len() - cut], 1 << 20).is_err());
        }

        #[test]
        fn envelopes_round_trip(id in any::<u64>(), kind in "[a-z.]{1,20}", payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let e = Envelope { request_id: id, kind, ..envelope(payload) };
            let back: Envelope = decode(&encode(&e, 1 << 20).unwrap(), 1 << 20).unwrap();
            prop_assert_eq!(back, e);
        }
    }
}
