//! Raft's election safety (Raft paper §5.2, figure 3): at most one leader per term.

use std::collections::BTreeMap;

use crate::sim::group::GroupHistory;

/// A line for every term that had two leaders.
pub fn check(history: &GroupHistory) -> Vec<String> {
    let mut leaders = BTreeMap::new();
    let mut out = Vec::new();
    for (term, replica, at) in &history.leaders {
        if let Some(first) = leaders.insert(*term, *replica)
            && first != *replica
        {
            out.push(format!(
                "[one leader per term] term {term} led by {first} and by {replica} (at {at:?})"
            ));
        }
    }
    out
}
