//! Checkers of recorded histories: pure functions, one file per promise, shared by the
//! simulator and the multi-process tests.

mod buckets;
mod coherence;
mod entitled;
mod holds;

pub use buckets::{
    Accepted, BatchRun, BucketViolation, TaskRef, every_accepted_processed, exclusive_batches,
    fifo_per_submitter, max_in_process,
};
pub use coherence::{Read, StaleRead, Write, no_stale_reads, reads_never_go_back};
pub use entitled::{Block, Entitled, Grant, Unentitled, granted_with_entitlement};
pub use holds::{Hold, Violation, no_two_holders, tokens_increase};
