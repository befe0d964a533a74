//! Raft's state machine safety (Raft paper §5.4.3): no two nodes apply different commands at
//! the same place (index, and position in the entry's batch).

use std::collections::BTreeMap;

use crate::sim::group::GroupHistory;

/// A line for every index at which two nodes applied different commands.
pub fn check(history: &GroupHistory) -> Vec<String> {
    let mut at = BTreeMap::new();
    let mut out = Vec::new();
    for (replica, index, command) in &history.applied {
        match at.get(index) {
            None => {
                at.insert(*index, (*replica, command));
            }
            Some((first, theirs)) if *theirs != command => out.push(format!(
                "[logs agree] at {index:?}: {first} applied {theirs:?}, {replica} applied {command:?}"
            )),
            Some(_) => {}
        }
    }
    out
}
