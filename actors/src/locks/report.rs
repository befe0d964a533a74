//! The body of the admin endpoint's `GET /locks`: the names every node serves, with their
//! holders, fencing tokens, lease ends and waiters. The node asked collects the others' names
//! over the `locks` service ([`REPORT`](super::msg::REPORT)), so one request shows the cluster.
//!
//! Fencing tokens and guard ids are 64-bit and sent as decimal strings: JavaScript numbers hold
//! integers exactly only up to 2^53.

use std::collections::HashMap;
use std::time::Instant;

use colony_runtime::NodeId;
use serde::{Deserialize, Serialize};

use super::core::{Holder, LockTable};

/// `GET /locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocksReport {
    /// The names with a holder or a waiter, by name: this node's and those of every up node
    /// that answered.
    pub served: Vec<ServedLock>,
    /// How many there are (`served.len()`).
    pub names_with_state: usize,
    /// Guards on this node that hold a lock (served here or elsewhere).
    pub held_by_this_node: usize,
    /// Up nodes that did not answer in time (their names): the names they serve are missing.
    #[serde(default)]
    pub unanswered: Vec<String>,
}

/// One served name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedLock {
    /// The lock's name (`n:<name>` for named locks, `e:<namespace>:<key>` for entity locks).
    pub name: String,
    /// Who holds it, if anyone.
    pub holder: Option<LockHolder>,
    /// The holder's fencing token, a decimal string.
    pub token: Option<String>,
    /// Milliseconds until the lease ends unless renewed.
    pub lease_ends_in_ms: Option<u64>,
    /// The guards waiting, first in line first.
    pub waiters: Vec<LockHolder>,
    /// The node serving the name (its name).
    #[serde(default)]
    pub served_by: Option<String>,
}

/// A guard holding or awaiting a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The guard's node id.
    pub node: String,
    /// The node's name, if it is a known member.
    pub node_name: Option<String>,
    /// The guard's id on its node, a decimal string.
    pub guard: String,
}

impl LocksReport {
    /// The report of `table`, served by the node named `me`, at `now`; `names` maps node ids to
    /// member names.
    pub(crate) fn of(
        table: &LockTable,
        held_by_this_node: usize,
        me: &str,
        names: &HashMap<NodeId, String>,
        now: Instant,
    ) -> Self {
        let holder = |h: Holder| LockHolder {
            node: h.node.to_string(),
            node_name: names.get(&h.node).cloned(),
            guard: h.guard.to_string(),
        };
        let mut served: Vec<ServedLock> = table
            .names()
            .map(|n| ServedLock {
                name: n.name.to_owned(),
                holder: n.hold.map(|(h, ..)| holder(h)),
                token: n.hold.map(|(_, token, _)| token.to_string()),
                lease_ends_in_ms: n
                    .hold
                    .map(|(.., ends)| ends.saturating_duration_since(now).as_millis() as u64),
                waiters: n.waiters.into_iter().map(holder).collect(),
                served_by: Some(me.to_owned()),
            })
            .collect();
        served.sort_by(|a, b| a.name.cmp(&b.name));
        LocksReport {
            names_with_state: served.len(),
            served,
            held_by_this_node,
            unanswered: Vec::new(),
        }
    }

    /// Adds the names the other nodes serve. A name two nodes list (its slot moved between
    /// their answers) is listed once for each, so that a move in progress shows.
    pub(crate) fn add(&mut self, served: Vec<ServedLock>) {
        self.served.extend(served);
        self.served
            .sort_by(|a, b| (&a.name, &a.served_by).cmp(&(&b.name, &b.served_by)));
        self.names_with_state = self.served.len();
    }
}
