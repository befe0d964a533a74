//! The `locks` service: requests from other nodes, handed to the lock actor.

use std::time::Duration;

use super::actor::{LockHandle, TableOp};
use super::msg::{AcquireMsg, CancelMsg, LeaseMsg};
use colony_runtime::transport::{Request, Service, ServiceError, ServiceFuture};
use colony_runtime::wire;

/// The longest an owner keeps one acquire waiting; callers re-send to wait longer.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct LockGateway {
    pub service: LockHandle,
}

impl Service for LockGateway {
    fn call(&self, request: Request) -> ServiceFuture {
        let service = self.service.clone();
        Box::pin(async move {
            let op = decode(&request)?;
            // A caller may only act for guards of its own node.
            let claimed = match &op {
                TableOp::Acquire { holder, .. }
                | TableOp::Renew { holder, .. }
                | TableOp::Release { holder, .. }
                | TableOp::Cancel { holder, .. } => holder.node,
            };
            if claimed != request.from {
                return Err(ServiceError::Failed(
                    "a node may only act for its own guards".into(),
                ));
            }
            let stopping = || ServiceError::Failed("the lock service is stopping".into());
            let answer = service
                .table(op)
                .map_err(|_| stopping())?
                .await
                .map_err(|_| stopping())?;
            Ok(wire::encode_payload(&answer)?)
        })
    }
}

fn decode(request: &Request) -> Result<TableOp, ServiceError> {
    let p = &request.payload;
    Ok(match request.kind.as_str() {
        "acquire" => {
            let m: AcquireMsg = wire::decode_payload(p)?;
            let wait = (m.wait_ms > 0).then(|| Duration::from_millis(m.wait_ms).min(MAX_WAIT));
            TableOp::Acquire {
                name: checked(m.name)?,
                holder: m.holder,
                wait,
            }
        }
        kind @ ("renew" | "release") => {
            let m: LeaseMsg = wire::decode_payload(p)?;
            let (name, holder, token) = (checked(m.name)?, m.holder, m.token);
            if kind == "renew" {
                TableOp::Renew {
                    name,
                    holder,
                    token,
                }
            } else {
                TableOp::Release {
                    name,
                    holder,
                    token,
                }
            }
        }
        "cancel" => {
            let m: CancelMsg = wire::decode_payload(p)?;
            TableOp::Cancel {
                name: checked(m.name)?,
                holder: m.holder,
            }
        }
        other => return Err(ServiceError::UnknownKind(other.to_owned())),
    })
}

/// Keys are names plus a short prefix; anything far longer did not come from Colony.
fn checked(name: String) -> Result<String, ServiceError> {
    if name.is_empty() || name.len() > 2 * super::name::MAX_NAME_BYTES + 8 {
        return Err(ServiceError::Failed(format!(
            "lock key of {} bytes refused",
            name.len()
        )));
    }
    Ok(name)
}
