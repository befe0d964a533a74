//! Renewal needs a down: a node renews its identity only after some node declared it down.
//!
//! Renewing (a higher incarnation, `NodeRejoined` on every peer) is the cure for having been
//! declared down, which cannot be refuted. A node whose suspicion was refuted in time must keep
//! its identity. So every `Renewed` must follow a `NodeDown` about an older incarnation of the
//! same id, emitted by some node.

use super::Violation;
use crate::membership::MemberEvent;
use crate::sim::history::History;

/// Finds every renewal that no down verdict called for.
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for (renewed_at, node, identity) in history.renewals() {
        let called_for = history.events().any(|(at, _, event)| {
            at <= renewed_at
                && matches!(event, MemberEvent::NodeDown(m)
                    if m.id == identity.id && m.incarnation < identity.incarnation)
        });
        if !called_for {
            out.push(Violation {
                promise: "renewal_needs_down",
                at: renewed_at,
                node: Some(node),
                detail: format!(
                    "renewed to incarnation {} though no node declared it down",
                    identity.incarnation
                ),
            });
        }
    }
    out
}
