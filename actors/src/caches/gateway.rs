//! The `caches` service: changes, lease questions and flushes from other nodes.
//!
//! The sender of every request is the peer its link authenticated (`Request::from`); no payload
//! carries an identity claim to trust instead.

use std::sync::Arc;

use colony_runtime::transport::{Request, Service, ServiceError, ServiceFuture};
use colony_runtime::wire;

use super::msg::{Batch, Flush, FlushCache, SyncRequest};
use super::registry::Shared;

pub(crate) struct CacheGateway {
    pub shared: Arc<Shared>,
}

impl Service for CacheGateway {
    fn call(&self, request: Request) -> ServiceFuture {
        let from = request.from;
        let answer = match request.kind.as_str() {
            "apply" => wire::decode_payload::<Batch>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|batch| {
                    let n = batch.ops.len();
                    // Applied before the answer leaves: the acknowledgement means applied.
                    self.shared
                        .input(|core, now, wall| core.handle_batch(now, wall, from, batch));
                    wire::encode_payload(&n).map_err(ServiceError::from)
                }),
            "sync" => wire::decode_payload::<SyncRequest>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|ask| {
                    let reply = self
                        .shared
                        .input(|core, now, _| core.handle_sync_request(now, from, ask));
                    wire::encode_payload(&reply).map_err(ServiceError::from)
                }),
            "flush" => wire::decode_payload::<Flush>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|_| {
                    wire::encode_payload(&self.shared.flush_local()).map_err(ServiceError::from)
                }),
            "flush_cache" => wire::decode_payload::<FlushCache>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|f| {
                    let flushed = self.shared.flush_local_named(&f.name);
                    wire::encode_payload(&flushed).map_err(ServiceError::from)
                }),
            other => Err(ServiceError::UnknownKind(other.to_owned())),
        };
        Box::pin(async move { answer })
    }
}
