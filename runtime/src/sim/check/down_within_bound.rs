//! Down within the bound: every survivor sees a killed node down within `bound`.
//!
//! For each process that was killed, every other process with the same cookie that knew it (had
//! emitted an event about its id before the kill) and ran unpaused for the whole `bound` after the
//! kill must emit `NodeDown` for that id, or `NodeRejoined` naming it as `previous` (a quick
//! restart replaces a dead id without a down), by `kill + bound`. Kills whose bound reaches past
//! the end of the history are not judged. The bound to use is
//! [`MembershipTimings::detection_bound`](crate::config::MembershipTimings::detection_bound).

use std::time::Duration;

use super::Violation;
use crate::membership::MemberEvent;
use crate::sim::history::{End, History};

/// Finds every survivor that missed a death.
pub fn check(history: &History, bound: Duration) -> Vec<Violation> {
    let lives = history.lives();
    let mut out = Vec::new();
    for dead in &lives {
        let Some((killed, End::Killed)) = dead.end else {
            continue;
        };
        let deadline = killed + bound;
        if deadline > history.end() {
            continue;
        }
        for observer in &lives {
            if observer.id == dead.id
                || observer.cookie != dead.cookie
                || !observer.ran_throughout(killed, deadline)
            {
                continue;
            }
            let mut knew = false;
            let mut saw = false;
            for (at, node, event) in history.events() {
                if node != observer.node || at < observer.start || at > deadline {
                    continue;
                }
                if at <= killed && event.member().id == dead.id {
                    knew = true;
                }
                saw |= at >= killed
                    && match event {
                        MemberEvent::NodeDown(m) => m.id == dead.id,
                        MemberEvent::NodeRejoined { previous, .. } => *previous == dead.id,
                        _ => false,
                    };
            }
            if knew && !saw {
                out.push(Violation {
                    promise: "down_within_bound",
                    at: deadline,
                    node: Some(observer.node),
                    detail: format!(
                        "did not see {} (killed at {killed:?}) down within {bound:?}",
                        dead.node
                    ),
                });
            }
        }
    }
    out
}
