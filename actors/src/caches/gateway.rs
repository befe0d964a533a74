//! The `caches` service: changes and flushes from other nodes.

use std::sync::Arc;

use colony_runtime::transport::{Request, Service, ServiceError, ServiceFuture};
use colony_runtime::wire;

use super::msg::{Batch, Flush};
use super::registry::Shared;

pub(crate) struct CacheGateway {
    pub shared: Arc<Shared>,
}

impl Service for CacheGateway {
    fn call(&self, request: Request) -> ServiceFuture {
        let answer = match request.kind.as_str() {
            "apply" => wire::decode_payload::<Batch>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|batch| {
                    for (name, op) in &batch.ops {
                        // A cache this node never created has nothing to change.
                        if let Some(replica) = self.shared.replica(name) {
                            replica.apply(op).map_err(ServiceError::Failed)?;
                        }
                    }
                    wire::encode_payload(&batch.ops.len()).map_err(ServiceError::from)
                }),
            "hello" => {
                self.shared.greetings.greeter(request.from);
                wire::encode_payload(&0usize).map_err(ServiceError::from)
            }
            "flush" => wire::decode_payload::<Flush>(&request.payload)
                .map_err(ServiceError::from)
                .and_then(|_| {
                    wire::encode_payload(&self.shared.flush_local()).map_err(ServiceError::from)
                }),
            other => Err(ServiceError::UnknownKind(other.to_owned())),
        };
        Box::pin(async move { answer })
    }
}
