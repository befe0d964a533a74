//! Restart rejoins: a process restarted at the same address replaces its old id everywhere.
//!
//! For each process started at an address where an earlier process with the same cookie ran,
//! every other process with that cookie that knew the earlier one (had emitted an event about its
//! id before the restart) and ran unpaused for `bound` after the restart emits
//! `NodeRejoined { member, previous }` with the new id as `member` and the old id as `previous`
//! by `restart + bound`. Restarts whose bound reaches past the end of the history are not judged.

use std::time::Duration;

use super::{News, Skip, Violation, missed};
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
        let news = News {
            subject: old.id,
            cookie: &new.cookie,
            since: new.start,
            deadline,
            heard_from: Duration::ZERO,
            skip: Skip::Node(new.node),
            tells: |event: &MemberEvent| {
                matches!(
                    event,
                    MemberEvent::NodeRejoined { member, previous, .. }
                        if member.id == new.id && *previous == old.id
                )
            },
        };
        for observer in missed(history, &lives, &news) {
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
    out
}
