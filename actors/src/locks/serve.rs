//! One request to this node's lock table, with no IO: what the `locks` gateway and the seeded
//! simulator both hand the table.

use std::time::{Duration, Instant};

use super::core::{Answer, LockTable, RequestId, Wait};
use super::gateway::MAX_WAIT;
use super::msg::LockRequest;

/// Feeds `request` to `table` as request `id` (the answer follows as an output with that id),
/// with an owner's wait capped at the gateway's ten seconds. A hand-over or a fetch is taken at once: its
/// answer is returned here.
pub fn serve(
    table: &mut LockTable,
    now: Instant,
    request: LockRequest,
    id: RequestId,
) -> Option<Answer> {
    match request {
        LockRequest::Acquire {
            name,
            holder,
            wait_ms,
            attempt,
        } => {
            let wait_ms = wait_ms.min(MAX_WAIT.as_millis() as u64);
            let wait = if wait_ms == 0 {
                Wait::No
            } else {
                Wait::Until(now + Duration::from_millis(wait_ms))
            };
            table.acquire_attempt(now, &name, holder, attempt, wait, id);
        }
        LockRequest::Renew {
            name,
            holder,
            token,
        } => table.renew(now, &name, holder, token, id),
        LockRequest::Release {
            name,
            holder,
            token,
        } => table.release(now, &name, holder, token, id),
        LockRequest::Cancel { name, holder } => table.cancel(now, &name, holder, id),
        LockRequest::HandOver { table: moved } => {
            table.received(now, moved);
            return Some(Answer::Received);
        }
        LockRequest::Fetch { slot, generation } => {
            table.fetch(now, slot, generation);
            return Some(Answer::Received);
        }
    }
    None
}
