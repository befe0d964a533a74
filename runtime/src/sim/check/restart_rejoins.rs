//! Restart rejoins: a process restarted at the same address replaces its old id everywhere.
//!
//! For each process started at an address where an earlier process with the same cookie ran,
//! every other process with that cookie that knew the earlier one (had emitted an event about its
//! id before the restart) and ran unpaused for `bound` after the restart emits
//! `NodeRejoined { member, previous }` with the new id as `member` and the old id as `previous`
//! by `restart + bound`. Restarts whose bound reaches past the end of the history are not judged.

use std::time::Duration;

use super::Violation;
use crate::membership::MemberEvent;
use crate::sim::history::History;

/// Finds every process that missed a restart.
pub fn check(history: &History, bound: Duration) -> Vec<Violation> {
    let lives = history.lives();
    let mut out = Vec::new();
    for (k, new) in lives.iter().enumerate() {
        let Some(old) = lives[..k]
            .iter()
            .rev()
            .find(|l| l.node == new.node && l.cookie == new.cookie)
        else {
            continue;
        };
        let deadline = new.start + bound;
        if deadline > history.end() {
            continue;
        }
        for observer in &lives {
            if observer.node == new.node
                || observer.cookie != new.cookie
                || !observer.ran_throughout(new.start, deadline)
            {
                continue;
            }
            let mine = history.events().filter(|(at, node, _)| {
                *node == observer.node && *at >= observer.start && *at <= deadline
            });
            let (mut knew, mut saw) = (false, false);
            for (at, _, event) in mine {
                knew |= at <= new.start && event.member().id == old.id;
                saw |= matches!(
                    event,
                    MemberEvent::NodeRejoined { member, previous }
                        if member.id == new.id && *previous == old.id
                );
            }
            if knew && !saw {
                out.push(Violation {
                    promise: "restart_rejoins",
                    at: deadline,
                    node: Some(observer.node),
                    detail: format!(
                        "did not see {} rejoin (restarted at {:?}) within {bound:?}",
                        new.node, new.start
                    ),
                });
            }
        }
    }
    out
}
