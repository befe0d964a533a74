//! Checkers of recorded histories: pure functions, one file per promise, shared by the
//! simulator and the multi-process tests.

mod holds;

pub use holds::{Hold, Violation, no_two_holders, tokens_increase};
