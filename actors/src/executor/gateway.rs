//! The `executor` service: hand-overs from the previous owner of a slot.

use super::actor::{ExecHandle, ExecInput};
use super::msg::{ExecRequest, KIND};
use colony_runtime::consensus::SLOTS;
use colony_runtime::transport::{Request, Service, ServiceError, ServiceFuture};
use colony_runtime::wire;

pub(crate) struct ExecGateway {
    pub service: ExecHandle,
}

impl Service for ExecGateway {
    fn call(&self, request: Request) -> ServiceFuture {
        let service = self.service.clone();
        Box::pin(async move {
            if request.kind != KIND {
                return Err(ServiceError::UnknownKind(request.kind));
            }
            let ExecRequest::HandOver { slot, generation } =
                wire::decode_payload(&request.payload)?;
            if slot >= SLOTS {
                return Err(ServiceError::Failed(format!("no executor slot {slot}")));
            }
            let stopping = || ServiceError::Failed("the executor service is stopping".into());
            let (tx, rx) = tokio::sync::oneshot::channel();
            service
                .send(ExecInput::Received {
                    slot,
                    generation,
                    reply: tx,
                })
                .map_err(|_| stopping())?;
            let taken = rx.await.map_err(|_| stopping())?;
            Ok(wire::encode_payload(&taken)?)
        })
    }
}
