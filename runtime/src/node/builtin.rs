//! The `node` service every node runs: `echo` (round-trip checks and benchmarks) and `info`.

use crate::membership::driver::MembershipHandle;
use crate::transport::{Request, Service, ServiceError, ServiceFuture};
use crate::wire;

/// The built-in service's name.
pub(crate) const SERVICE: &str = "node";

pub(crate) struct NodeService {
    membership: MembershipHandle,
}

impl NodeService {
    pub(crate) fn new(membership: MembershipHandle) -> Self {
        NodeService { membership }
    }
}

impl Service for NodeService {
    fn call(&self, request: Request) -> ServiceFuture {
        let answer = match request.kind.as_str() {
            // The payload goes back untouched: the cost measured is the transport's alone.
            "echo" => Ok(request.payload),
            "info" => {
                wire::encode_payload(self.membership.view().local()).map_err(ServiceError::from)
            }
            other => Err(ServiceError::UnknownKind(other.to_owned())),
        };
        Box::pin(async move { answer })
    }
}
