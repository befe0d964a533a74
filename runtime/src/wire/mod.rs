//! The wire: one versioned envelope for every request between nodes.
//!
//! A request is an [`Envelope`] (protocol version, request id, sender, kind, payload); its answer
//! is a [`Reply`] with the same request id. Both are MessagePack maps with named fields, so a
//! newer node may add fields and an older one ignores them. Payloads are themselves
//! MessagePack-encoded serde types chosen by each service.
//!
//! [`codec`] checks sizes before it parses and never panics on bad input.

pub mod codec;
mod envelope;

pub use codec::{WireError, decode, decode_payload, encode, encode_payload};
pub use envelope::{
    Envelope, ErrorCode, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RemoteError, Reply,
};
