//! One view after heal: once the last fault is over, every running node lists the same up set.
//!
//! The quiet point is the last change to the ground truth (a start, kill, leave, pause, resume
//! or network change, heals included). From `quiet + settle` to the end of the history, each
//! process still running must list as up exactly the running processes with its cookie (itself
//! included), and keep doing so. Histories that end before `quiet + settle` are not judged, and
//! neither is a process that is alone with its cookie (a stranger with another cookie cannot
//! join anyone, so it stays joining).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::Violation;
use crate::NodeId;
use crate::sim::history::{Happening, History};

/// Finds every running node that has not settled on the common view.
pub fn check(history: &History, settle: Duration) -> Vec<Violation> {
    let quiet = history
        .entries()
        .iter()
        .rev()
        .find(|e| {
            !matches!(
                e.what,
                Happening::Event { .. }
                    | Happening::View { .. }
                    | Happening::Renewed { .. }
                    | Happening::Rejected { .. }
                    | Happening::RefusedBy { .. }
            )
        })
        .map_or(Duration::ZERO, |e| e.at);
    let due = quiet + settle;
    if due > history.end() {
        return Vec::new();
    }
    let lives = history.lives();
    let running: Vec<_> = lives.iter().filter(|l| l.running_at(due)).collect();
    // Each observer's up sets from `due` on: the one in force at `due`, then every later one.
    let mut views: BTreeMap<SocketAddr, Vec<(Duration, BTreeSet<NodeId>)>> = BTreeMap::new();
    for e in history.entries() {
        if let Happening::View { node, members } = &e.what {
            let up = members
                .iter()
                .filter(|m| m.state.is_up())
                .map(|m| m.id)
                .collect();
            let list = views.entry(*node).or_default();
            if e.at <= due {
                list.clear();
            }
            list.push((e.at.max(due), up));
        }
    }
    let mut out = Vec::new();
    for life in &running {
        let want: BTreeSet<NodeId> = running
            .iter()
            .filter(|l| l.cookie == life.cookie)
            .map(|l| l.id)
            .collect();
        if want.len() == 1 {
            continue;
        }
        let seen = views.get(&life.node).map(Vec::as_slice).unwrap_or(&[]);
        let wrong = if seen.is_empty() {
            Some((due, BTreeSet::new()))
        } else {
            seen.iter().find(|(_, up)| *up != want).cloned()
        };
        if let Some((at, up)) = wrong {
            out.push(Violation {
                promise: "one_view_after_heal",
                at,
                node: Some(life.node),
                detail: format!(
                    "lists {} up, not the {} running nodes, {settle:?} after the last change \
                     ({quiet:?})",
                    up.len(),
                    want.len()
                ),
            });
        }
    }
    out
}
