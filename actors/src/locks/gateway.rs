//! The `locks` service: requests from any node (this one included), handed to the lock table.

use std::time::Duration;

use super::actor::{LockHandle, LockInput};
use super::msg::{KIND, LockRequest, REPORT};
use colony_runtime::transport::{Request, Service, ServiceError, ServiceFuture};
use colony_runtime::wire;

/// The longest an owner keeps one acquire waiting ([`serve`](super::serve::serve) caps it);
/// callers re-send to wait longer.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct LockGateway {
    pub service: LockHandle,
}

impl Service for LockGateway {
    fn call(&self, request: Request) -> ServiceFuture {
        let service = self.service.clone();
        Box::pin(async move {
            if request.kind == REPORT {
                let report = service.with(|d| d.report(std::time::Instant::now()));
                return Ok(wire::encode_payload(&report.served)?);
            }
            if request.kind != KIND {
                return Err(ServiceError::UnknownKind(request.kind));
            }
            let op: LockRequest = wire::decode_payload(&request.payload)?;
            // A caller may only act for guards of its own node (the sender its link
            // authenticated).
            if op.holder().is_some_and(|h| h.node != request.from) {
                return Err(ServiceError::Failed(
                    "a node may only act for its own guards".into(),
                ));
            }
            if let Some(name) = op.name() {
                checked(name)?;
            }
            let stopping = || {
                tracing::warn!("a lock request found the lock service stopped");
                ServiceError::Failed("the lock service is stopping".into())
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            service
                .send(LockInput::Table(op, tx))
                .map_err(|_| stopping())?;
            let answer = rx.await.map_err(|_| stopping())?;
            Ok(wire::encode_payload(&answer)?)
        })
    }
}

/// Keys are names plus a short prefix; anything far longer did not come from Colony.
fn checked(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 2 * super::name::MAX_NAME_BYTES + 16 {
        return Err(ServiceError::Failed(format!(
            "lock key of {} bytes refused",
            name.len()
        )));
    }
    Ok(())
}
