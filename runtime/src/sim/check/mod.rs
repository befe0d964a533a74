//! Checkers: one promise each, as a pure function over a [`History`](super::History).
//!
//! Each checker returns every [`Violation`] it finds, so a test can print them all with the seed.
//! They read only the history (ground truth plus what nodes said), never a live world, so the
//! simulator and a multi-process test that records the same entries share them.
//!
//! | checker | promise |
//! |---|---|
//! | [`no_false_down`] | no running node is declared down while the network is healthy |
//! | [`down_within_bound`] | a killed node is seen down by every survivor within the bound |
//! | [`one_view_after_heal`] | once faults stop, every running node lists the same up set |
//! | [`quorum_on_one_side_only`] | during a partition, at most one side has a quorum |
//! | [`left_never_down`] | a node that leaves is seen as left, never down |
//! | [`restart_rejoins`] | a restarted node is seen as rejoined, replacing its old id |
//! | [`renewal_needs_down`] | a node renews its identity only after being declared down |
//! | [`strangers_never_listed`] | a node with another cookie is never listed |

use std::net::SocketAddr;
use std::time::Duration;

use crate::NodeId;
use crate::membership::MemberEvent;
use crate::sim::history::{History, Life};

pub mod down_within_bound;
pub mod left_never_down;
pub mod no_false_down;
pub mod one_view_after_heal;
pub mod quorum_on_one_side_only;
pub mod renewal_needs_down;
pub mod restart_rejoins;
pub mod strangers_never_listed;

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name.
    pub promise: &'static str,
    /// When it broke (time since the start of the run).
    pub at: Duration,
    /// The node that broke it, or saw it broken.
    pub node: Option<SocketAddr>,
    /// What happened.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] at {:?}", self.promise, self.at)?;
        if let Some(node) = self.node {
            write!(f, " on {node}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One line per violation, for an assertion message.
pub fn report(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which processes are not judged as observers of some news.
#[derive(Debug, Clone, Copy)]
enum Skip {
    /// Every process with this id.
    Id(NodeId),
    /// Every process at this address.
    Node(SocketAddr),
}

/// News about a subject that every process that knew the subject must hear in time.
struct News<'a, F> {
    /// Observers are judged only if they emitted an event about this id by `since`.
    subject: NodeId,
    /// Observers are judged only if they hold this cookie.
    cookie: &'a str,
    /// When the news happened.
    since: Duration,
    /// When it must have been heard by; observers are judged only if they ran unpaused from
    /// `since` to here.
    deadline: Duration,
    /// Events before this time do not count as hearing it.
    heard_from: Duration,
    /// Processes that are not judged.
    skip: Skip,
    /// Whether an event tells the news.
    tells: F,
}

/// The processes that knew the subject of `news`, ran unpaused throughout `[since, deadline]`
/// with its cookie, and emitted no event telling it between `heard_from` and `deadline`. None
/// when the deadline is past the end of the history (the news is not judged).
fn missed<'l>(
    history: &History,
    lives: &'l [Life],
    news: &News<'_, impl Fn(&MemberEvent) -> bool>,
) -> Vec<&'l Life> {
    if news.deadline > history.end() {
        return Vec::new();
    }
    lives
        .iter()
        .filter(|observer| {
            let skipped = match news.skip {
                Skip::Id(id) => observer.id == id,
                Skip::Node(node) => observer.node == node,
            };
            if skipped
                || observer.cookie != news.cookie
                || !observer.ran_throughout(news.since, news.deadline)
            {
                return false;
            }
            let (mut knew, mut heard) = (false, false);
            for (at, node, event) in history.events() {
                if node != observer.node || at < observer.start || at > news.deadline {
                    continue;
                }
                knew |= at <= news.since && event.member().id == news.subject;
                heard |= at >= news.heard_from && (news.tells)(event);
            }
            knew && !heard
        })
        .collect()
}
