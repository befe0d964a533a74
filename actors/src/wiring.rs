//! What every primitive's shell needs from its node: the group's status fed in as an input,
//! and the members by replica id.

use std::collections::HashMap;
use std::sync::Arc;

use colony_runtime::consensus::{GroupStatus, ReplicaId};
use colony_runtime::membership::View;
use colony_runtime::shell::{Driven, Shell};
use colony_runtime::{Node, NodeId};

/// Feeds every change of the group's status to `shell` as `input(status)`, the current status
/// first, until the shell or the group stops.
pub(crate) fn feed_group<D: Driven>(
    node: &Node,
    shell: &Shell<D>,
    input: fn(Arc<GroupStatus>) -> D::Input,
) {
    let mut status = node.group().watch();
    let feed = shell.clone();
    tokio::spawn(async move {
        loop {
            let s = status.borrow_and_update().clone();
            if feed.send(input(s)).is_err() || status.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The members of `view` that joined the group and are not gone, by replica id.
pub(crate) fn members_by_replica(view: &View) -> HashMap<ReplicaId, NodeId> {
    view.members
        .iter()
        .filter(|m| m.replica != 0 && !m.state.is_gone())
        .map(|m| (ReplicaId(m.replica), m.id))
        .collect()
}
