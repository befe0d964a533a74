//! Checkers of a [`super::GroupHistory`], one promise each, and the shared hold
//! checkers ([`crate::check`], the ones the multi-process lock tests use) as report lines.
//!
//! | checker | promise |
//! |---|---|
//! | [`one_leader_per_term`] | raft's election safety: at most one leader per term |
//! | [`logs_agree`] | every node applies the same command at the same index |
//! | [`crate::check::no_two_holders`] | at most one valid holder per lock at any instant |
//! | [`crate::check::tokens_increase`] | fencing tokens of one lock strictly increase |

pub mod logs_agree;
pub mod one_leader_per_term;

use super::GroupHistory;
use crate::check::Hold;

/// Every broken promise of the group's history, one line each (empty: none).
pub fn all(history: &GroupHistory) -> Vec<String> {
    let mut out: Vec<String> = one_leader_per_term::check(history);
    out.extend(logs_agree::check(history));
    out
}

/// Every broken promise of exclusivity and fencing among `holds`, one line each.
pub fn holds(holds: &[Hold]) -> Vec<String> {
    crate::check::no_two_holders(holds)
        .into_iter()
        .chain(crate::check::tokens_increase(holds))
        .map(|v| format!("[{}] {:?} then {:?}", v.promise, v.first, v.second))
        .collect()
}
