//! Left, never down: a node that leaves on purpose is seen as left by the others, not as failed.
//!
//! For each process that left, no other process emits `NodeDown` for its id after it started
//! leaving, and every process with the same cookie that knew it (had emitted an event about it
//! before the leave) and ran unpaused for `bound` after the leave emits `NodeLeft` for it by then
//! (or `NodeRejoined` naming it as `previous`, when it restarted before the news arrived).
//! Leaves whose bound reaches past the end of the history are only checked for downs.

use std::time::Duration;

use super::{News, Skip, Violation, missed};
use crate::membership::MemberEvent;
use crate::sim::history::{End, History};

/// Finds every down reported for a leaver, and every node that missed a leave.
pub fn check(history: &History, bound: Duration) -> Vec<Violation> {
    let lives = history.lives();
    let mut out = Vec::new();
    for leaver in &lives {
        let Some((left, End::Left)) = leaver.end else {
            continue;
        };
        for (at, node, event) in history.events() {
            if let MemberEvent::NodeDown(m) = event
                && m.id == leaver.id
                && at >= left
            {
                out.push(Violation {
                    promise: "left_never_down",
                    at,
                    node: Some(node),
                    detail: format!("saw {} down after it left at {left:?}", leaver.node),
                });
            }
        }
        let deadline = left + bound;
        let news = News {
            subject: leaver.id,
            cookie: &leaver.cookie,
            since: left,
            deadline,
            heard_from: Duration::ZERO,
            skip: Skip::Id(leaver.id),
            tells: |event: &MemberEvent| match event {
                MemberEvent::NodeLeft(m) => m.id == leaver.id,
                MemberEvent::NodeRejoined { previous, .. } => *previous == leaver.id,
                _ => false,
            },
        };
        for observer in missed(history, &lives, &news) {
            out.push(Violation {
                promise: "left_never_down",
                at: deadline,
                node: Some(observer.node),
                detail: format!(
                    "did not see {} (left at {left:?}) leave within {bound:?}",
                    leaver.node
                ),
            });
        }
    }
    out
}
