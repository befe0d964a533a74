//! Strangers never listed: a node with another cookie never enters a member list or an event.
//!
//! Gossip is authenticated with a key derived from the cookie, so no view a process publishes and
//! no event it emits may name a process whose cookie differs from its own.

use super::Violation;
use crate::sim::history::{Happening, History};

/// Finds every view or event that names a process with another cookie.
pub fn check(history: &History) -> Vec<Violation> {
    let lives = history.lives();
    let cookie_of_id = |id| lives.iter().find(|l| l.id == id).map(|l| &l.cookie);
    let cookie_at = |node, at| {
        lives
            .iter()
            .rev()
            .find(|l| l.node == node && l.start <= at)
            .map(|l| &l.cookie)
    };
    let mut out = Vec::new();
    for e in history.entries() {
        let (node, ids) = match &e.what {
            Happening::View { node, members } => (*node, members.iter().map(|m| m.id).collect()),
            Happening::Event { node, event } => (*node, vec![event.member().id]),
            _ => continue,
        };
        let own = cookie_at(node, e.at);
        for id in ids {
            let theirs = cookie_of_id(id);
            if theirs.is_some() && own.is_some() && theirs != own {
                out.push(Violation {
                    promise: "strangers_never_listed",
                    at: e.at,
                    node: Some(node),
                    detail: format!("lists {id} whose cookie differs"),
                });
            }
        }
    }
    out
}
