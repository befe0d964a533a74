//! Checkers of a [`GroupHistory`](super::GroupHistory), one promise each. The hold checkers
//! are the ones the multi-process lock tests use ([`crate::check`]).
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

/// Every broken promise of the history, one line each (empty: none).
pub fn all(history: &GroupHistory) -> Vec<String> {
    let mut out: Vec<String> = one_leader_per_term::check(history);
    out.extend(logs_agree::check(history));
    for v in crate::check::no_two_holders(&history.holds)
        .into_iter()
        .chain(crate::check::tokens_increase(&history.holds))
    {
        out.push(format!("[{}] {:?} then {:?}", v.promise, v.first, v.second));
    }
    out
}
