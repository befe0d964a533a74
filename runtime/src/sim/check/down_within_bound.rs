//! Down within the bound: every survivor sees a killed node down within `bound`.
//!
//! For each process that was killed, every other process with the same cookie that knew it (had
//! emitted an event about its id before the kill) and ran unpaused for the whole `bound` after the
//! kill must emit `NodeDown` for that id, or `NodeRejoined` naming it as `previous` (a quick
//! restart replaces a dead id without a down), by `kill + bound`. Kills whose bound reaches past
//! the end of the history are not judged. The bound to use is
//! [`MembershipTimings::detection_bound`](crate::config::MembershipTimings::detection_bound).

use std::time::Duration;

use super::{News, Skip, Violation, missed};
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
        let news = News {
            subject: dead.id,
            cookie: &dead.cookie,
            since: killed,
            deadline,
            // A down before the kill (a false one, since renewed) is not this death.
            heard_from: killed,
            skip: Skip::Id(dead.id),
            tells: |event: &MemberEvent| match event {
                MemberEvent::NodeDown(m) => m.id == dead.id,
                MemberEvent::NodeRejoined { previous, .. } => *previous == dead.id,
                _ => false,
            },
        };
        for observer in missed(history, &lives, &news) {
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
    out
}
